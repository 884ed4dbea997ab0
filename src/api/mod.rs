//! The `/api/v1` contract: poem-openapi operations, one file per resource group.
//!
//! Operations are thin: authenticate (the [`auth::TokenAuth`] scheme), check the
//! one permission they declare, call one service, map the result. Every
//! operation has an `operation_id` (used as the metrics route label) and says in
//! its description which permission it needs.
pub mod audit;
pub mod auth;
pub mod org;
pub mod problem;
pub mod system;
pub mod types;

use crate::state::AppState;
use poem::Request;
use poem_openapi::OpenApiService;
use std::sync::Arc;

/// The client's address as the HTTP edge determined it (trusted proxies only).
#[derive(Clone, Debug)]
pub struct ClientIp(pub String);

/// The audit context of an API request: client address, user agent, request id.
pub fn audit_context(req: &Request) -> crate::audit::Context {
    crate::audit::Context {
        ip: req.data::<ClientIp>().map(|c| c.0.clone()).filter(|ip| !ip.is_empty()),
        user_agent: req.headers().get("user-agent").and_then(|v| v.to_str().ok()).map(str::to_owned),
        request_id: Some(problem::current_request_id()),
    }
}

/// Where the API is mounted.
pub const BASE: &str = "/api/v1";

/// Every API group, in the order the spec lists them.
pub type Apis = (system::SystemApi, org::OrgApi, audit::AuditApi);

/// The API service with its spec.
pub fn service(state: Arc<AppState>) -> OpenApiService<Apis, ()> {
    let apis =
        (system::SystemApi { state: state.clone() }, org::OrgApi { state: state.clone() }, audit::AuditApi { state });
    OpenApiService::new(apis, "docket", crate::VERSION)
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
///
/// Every request body object refuses unknown fields (`deny_unknown_fields`),
/// which poem-openapi does not write into the schema; this adds
/// `additionalProperties: false` to those schemas so the contract says so.
pub fn spec_json(service: &OpenApiService<Apis, ()>) -> String {
    let raw = service.spec();
    let Ok(mut spec) = serde_json::from_str::<serde_json::Value>(&raw) else {
        return raw;
    };
    let mut bodies = vec![];
    for ops in spec["paths"].as_object().into_iter().flat_map(|p| p.values()) {
        for op in ops.as_object().into_iter().flat_map(|o| o.values()) {
            for media in
                op.pointer("/requestBody/content").and_then(|c| c.as_object()).into_iter().flat_map(|c| c.values())
            {
                if let Some(name) = media.pointer("/schema/$ref").and_then(|r| r.as_str()) {
                    bodies.push(name.trim_start_matches("#/components/schemas/").to_string());
                }
            }
        }
    }
    for name in bodies {
        if let Some(schema) = spec.pointer_mut(&format!("/components/schemas/{name}")).and_then(|s| s.as_object_mut()) {
            schema.insert("additionalProperties".into(), serde_json::Value::Bool(false));
        }
    }
    let mut out = serde_json::to_string_pretty(&spec).unwrap_or(raw);
    out.push('\n');
    out
}
