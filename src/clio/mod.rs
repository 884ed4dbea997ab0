//! Clio: the connection per org (OAuth), the API client, and the sync that
//! keeps the store's copy of the firm's data equal to Clio's; plus the fake
//! Clio the tests, the demo and the benchmark run against.
pub mod client;
pub mod connection;
pub mod fake;
pub mod generator;
pub mod purge;
pub mod runner;
pub mod sync;
pub mod webhooks;
