//! The `/api/v1` contract: poem-openapi operations, one file per resource group.
//!
//! Operations are thin: authenticate (the [`auth::TokenAuth`] scheme), check the
//! one permission they declare, call one service, map the result. Every
//! operation has an `operation_id` (used as the metrics route label) and says in
//! its description which permission it needs.
pub mod auth;
pub mod org;
pub mod problem;
pub mod system;
pub mod types;

use crate::state::AppState;
use poem_openapi::OpenApiService;
use std::sync::Arc;

/// Where the API is mounted.
pub const BASE: &str = "/api/v1";

/// The API service with its spec; `server_url` goes into the spec's `servers`.
pub fn service(state: Arc<AppState>) -> OpenApiService<(system::SystemApi, org::OrgApi), ()> {
    OpenApiService::new(
        (
            system::SystemApi {
                state: state.clone(),
            },
            org::OrgApi { state },
        ),
        "docket",
        crate::VERSION,
    )
    .description(
        "The REST API of a docket appliance: a firm's encrypted local copy of its Clio data.\n\n\
         Authenticate with `Authorization: Bearer dkt_…` (an API token). Errors are RFC 9457 \
         `application/problem+json` documents with a stable `code`. Each operation states the \
         permission it requires.",
    )
    .server(BASE)
}

/// The spec as served at `/api/v1/openapi.json`, pretty-printed with a final newline
/// (the form committed under `openapi/`).
pub fn spec_json(state: Arc<AppState>) -> String {
    let mut s = service(state).spec();
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}
