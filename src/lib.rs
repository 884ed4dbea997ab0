//! docket: a self-hosted data appliance for law firms that use Clio.
//!
//! The crate is a library so the integration tests can run the whole server
//! in-process; `main.rs` is a thin entry point. ARCHITECTURE.md has the code
//! map and the invariants the rooms below keep.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo))]

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod certfile;
pub mod changes;
pub mod cli;
pub mod clio;
pub mod clock;
pub mod config;
pub mod control;
pub mod data;
pub mod demo;
pub mod http;
pub mod lifecycle;
pub mod outbound;
pub mod records;
pub mod runtime;
pub mod search;
pub mod secrets;
pub mod state;
pub mod store;
pub mod swap;
pub mod telemetry;
pub mod timestamp;

/// The version printed by `--version` and reported by the API.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
