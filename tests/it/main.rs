//! docket's integration tests: one binary (link time on 2 cores), modules by area.
mod acme;
mod api;
mod audit;
mod cli;
mod clio;
mod crash;
mod data;
mod identity;
mod matrix;
mod oidc;
mod openapi;
mod ops;
mod schemathesis;
mod support;
mod sync;
mod tls;
mod web;
