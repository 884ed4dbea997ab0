//! The `/api/v1` contract: poem-openapi operations, one file per resource group.
//!
//! Operations are thin: authenticate (the [`auth::Caller`] extractor: API token or session), check the
//! one permission they declare, call one service, map the result. Every
//! operation has an `operation_id` (used as the metrics route label) and says in
//! its description which permission it needs.
pub mod audit;
pub mod auth;
pub mod changes;
pub mod clio;
pub mod data;
pub mod export;
pub mod failures;
pub mod lifecycle;
pub mod me;
pub mod members;
pub mod org;
pub mod page;
pub mod params;
pub mod problem;
pub mod roles;
pub mod search;
pub mod signin;
pub mod spec;
pub mod system;
pub mod tokens;
pub mod types;
pub mod walls;
pub mod webhooks;

use crate::state::AppState;
use poem::Request;
use poem_openapi::OpenApiService;
use std::sync::Arc;

/// The client's address as the HTTP edge determined it (trusted proxies only).
#[derive(Clone, Debug)]
pub struct ClientIp(pub String);

/// This site's origin (`https://host[:port]`) as the browser sees it, set by the HTTP edge.
#[derive(Clone, Debug)]
pub struct SiteOrigin(pub String);

/// The site origin of a request (for redirect URIs).
pub fn site_origin(req: &Request) -> String {
    req.data::<SiteOrigin>().map_or_else(|| "https://localhost".to_string(), |o| o.0.clone())
}

/// Runs `change` and records `action` on `target` for the caller, in one transaction.
pub fn audited<T>(
    state: &AppState,
    req: &Request,
    principal: &crate::auth::Principal,
    action: &str,
    target: &str,
    details: serde_json::Value,
    change: impl FnOnce(&mut crate::store::Tx) -> Result<T, crate::store::StoreError>,
) -> problem::ApiResult<T> {
    crate::audit::audited(&state.store, principal.scope(), &audit_context(req), action, target, details, change)
        .map_err(problem::ApiError::from)
}

/// The audit context of an API request: client address, user agent, request id.
pub fn audit_context(req: &Request) -> crate::audit::Context {
    crate::audit::Context {
        ip: req.data::<ClientIp>().map(|c| c.0.clone()).filter(|ip| !ip.is_empty()),
        user_agent: req.headers().get("user-agent").and_then(|v| v.to_str().ok()).map(str::to_owned),
        request_id: Some(problem::current_request_id()),
    }
}

/// Runs `read` on the blocking pool, never on an async worker: a read that
/// can scan (a selective list over a large firm) must not stall the server.
/// Every read in `api/` that can scan (records, counts, sync status, the audit
/// trail) goes through here.
pub async fn off_worker<R: Send + 'static>(
    store: &Arc<crate::store::Store>,
    read: impl FnOnce(&crate::store::Store) -> problem::ApiResult<R> + Send + 'static,
) -> problem::ApiResult<R> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || read(&store)).await.map_err(|e| {
        tracing::error!(error = %e, "a store read on the blocking pool failed");
        problem::ApiError::new(
            problem::Code::Internal,
            "an internal error occurred; quote the request id to your administrator",
        )
    })?
}

/// Where the API is mounted.
pub const BASE: &str = "/api/v1";

/// Every API group, in the order the spec lists them.
pub type Apis = (
    system::SystemApi,
    signin::SignInApi,
    me::MeApi,
    org::OrgApi,
    members::MembersApi,
    roles::RolesApi,
    tokens::TokensApi,
    walls::WallsApi,
    clio::ClioApi,
    data::DataApi,
    audit::AuditApi,
    search::SearchApi,
    changes::ChangesApi,
    webhooks::WebhooksApi,
    export::ExportApi,
    lifecycle::LifecycleApi,
);

/// The API service with its spec.
pub fn service(state: Arc<AppState>) -> OpenApiService<Apis, ()> {
    let apis = (
        system::SystemApi { state: state.clone() },
        signin::SignInApi { state: state.clone() },
        me::MeApi { state: state.clone() },
        org::OrgApi { state: state.clone() },
        members::MembersApi { state: state.clone() },
        roles::RolesApi { state: state.clone() },
        tokens::TokensApi { state: state.clone() },
        walls::WallsApi { state: state.clone() },
        clio::ClioApi { state: state.clone() },
        data::DataApi { state: state.clone() },
        audit::AuditApi { state: state.clone() },
        search::SearchApi { state: state.clone() },
        changes::ChangesApi { state: state.clone() },
        webhooks::WebhooksApi { state: state.clone() },
        export::ExportApi { state: state.clone() },
        lifecycle::LifecycleApi { state },
    );
    OpenApiService::new(apis, "docket", crate::VERSION)
        .description(
            "The REST API of a docket appliance: a firm's encrypted local copy of its Clio data.\n\n\
         Authenticate with `Authorization: Bearer dkt_…` (an API token), or from a browser with the \
         session cookie set by sign-in (state-changing requests then also need `Origin` and \
         `X-Docket-CSRF: 1`). Errors are RFC 9457 \
         `application/problem+json` documents with a stable `code` (enumerated in `Problem`) and, \
         when one field or parameter is at fault, its name in `field`. Each operation states the \
         permission it requires.\n\n\
         **Lists** answer `{\"items\": [...], \"next_cursor\": \"...\"}`: pass `next_cursor` back \
         unchanged as `cursor` (with the same other parameters) for the next page; it is absent on \
         the last page. `limit` is at most 500 (search: 100). A cursor of another list, other \
         filters or another firm is a 400 `invalid-cursor`; a query parameter an operation does \
         not take is a 400 `unknown-parameter`.\n\n\
         **Caching**: successful reads carry an `ETag`; send it as `If-None-Match` to get a 304 \
         while nothing changed. **Rate limits**: every response carries `RateLimit-Limit`, \
         `RateLimit-Remaining` and `RateLimit-Reset`; a 429 or 503 says when to retry in \
         `Retry-After`. **Retries**: send `Idempotency-Key` (for example a UUID) with a `POST`; a \
         retry with the same key and body within 24 hours gets the first response again (marked \
         `Idempotent-Replayed: true`), the same key with another body is a 422. Keys are kept in \
         memory, per credential: a retry after the appliance restarted runs again.",
        )
        .server(BASE)
}

/// The statuses an operation can answer whatever its handler does, because
/// the edge or the framework produces them: bad parameters (400), an unknown
/// method (405), an oversized head (431), a rate limit (429), internal and
/// storage failures (500, 503); with a credential, 401 and 403; with a path
/// parameter, 404; on unsafe methods, CSRF refusals (403) and the body limit
/// (413); with a request body, its content type (415).
pub fn edge_statuses(method: &str, op: &serde_json::Value) -> Vec<u16> {
    let mut statuses = vec![400, 405, 429, 431, 500, 503];
    let secured = op.get("security").and_then(|s| s.as_array()).is_some_and(|s| !s.is_empty());
    let unsafe_method = !matches!(method, "get" | "head" | "options");
    if secured {
        statuses.push(401);
    }
    if secured || unsafe_method {
        statuses.push(403);
    }
    let path_params = op.get("parameters").and_then(|p| p.as_array()).into_iter().flatten();
    if path_params.into_iter().any(|p| p.get("in").and_then(|i| i.as_str()) == Some("path")) {
        statuses.push(404);
    }
    if unsafe_method {
        statuses.push(413);
    }
    if op.get("requestBody").is_some() {
        statuses.push(415);
    }
    statuses
}

/// Adds [`edge_statuses`] to every operation that does not declare them.
fn declare_edge_statuses(spec: &mut serde_json::Value) {
    let problem = serde_json::json!({"schema": {"$ref": "#/components/schemas/Problem"}});
    for ops in spec["paths"].as_object_mut().into_iter().flat_map(|p| p.values_mut()) {
        for (method, op) in ops.as_object_mut().into_iter().flat_map(|o| o.iter_mut()) {
            let statuses = edge_statuses(method, op);
            let Some(responses) = op.get_mut("responses").and_then(|r| r.as_object_mut()) else { continue };
            for status in statuses {
                responses.entry(status.to_string()).or_insert_with(|| {
                    serde_json::json!({
                        "description": problem::Code::for_status(status).title(),
                        "content": {problem::CONTENT_TYPE: problem.clone()},
                    })
                });
            }
        }
    }
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
    declare_edge_statuses(&mut spec);
    spec::refine(&mut spec);
    let mut out = serde_json::to_string_pretty(&spec).unwrap_or(raw);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use problem::{ApiError, Code};
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn reads_run_off_the_async_worker() {
        // One async worker: a read that waits for another task's answer would
        // wait in vain if it ran inline on it; on the blocking pool it gets it.
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.redb"), crate::clock::Clock::system()).unwrap());
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let read = off_worker(&store, move |_| {
            rx.recv_timeout(Duration::from_secs(10))
                .map_err(|_| ApiError::new(Code::Internal, "the read ran on the async worker: the answer never came"))
        });
        let answer = async move { tx.send(()).unwrap() };
        let (read, ()) = tokio::join!(read, answer);
        assert!(read.is_ok(), "{:?}", read.err());
    }
}
