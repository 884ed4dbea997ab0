//! Operational endpoints: `/healthz` (alive), `/readyz` (ready to serve),
//! `/metrics` (Prometheus text; loopback-only unless a token is configured).
use crate::api::problem::{ApiError, Code};
use crate::state::AppState;
use poem::http::header;
use poem::web::Json;
use poem::{IntoResponse, Request, Response};
use std::sync::Arc;

fn state(req: &Request) -> poem::Result<Arc<AppState>> {
    req.data::<Arc<AppState>>().cloned().ok_or_else(|| ApiError::new(Code::Internal, "state missing").into())
}

/// Alive: the process answers.
pub fn healthz(_req: Request) -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// Ready: the store answers a read. Also says whether search is usable:
/// `search` is `ready`, or `building` with each firm's progress (its searches
/// answer 503 meanwhile; the rest of the appliance serves).
pub fn readyz(req: Request) -> poem::Result<Response> {
    let state = state(&req)?;
    match state.store.journal_head() {
        Ok(seq) => {
            let (search, building) = crate::search::readiness(&state.search);
            let shipping = crate::lifecycle::shipping::readiness(&state.config, state.store.clock().now_micros());
            Ok(Json(serde_json::json!({
                "status": "ready", "store": "ok", "journal_seq": seq,
                "search": search, "search_building": building, "shipping": shipping,
            }))
            .into_response())
        }
        Err(e) => {
            tracing::error!(error = %e, "readiness check failed");
            Err(ApiError::new(Code::StorageUnavailable, "the store is not answering; see the service log").into())
        }
    }
}

/// Whether the caller may read metrics: the configured bearer token, or a
/// direct loopback connection when no token is configured.
fn may_read_metrics(req: &Request, state: &AppState) -> bool {
    if let Some(token) = &state.config.metrics.token {
        let sent = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        return sent.is_some_and(|s| constant_time_eq(s.as_bytes(), token.expose().as_bytes()));
    }
    let loopback = req.remote_addr().as_socket_addr().is_some_and(|a| a.ip().is_loopback());
    loopback && !req.headers().contains_key("x-forwarded-for")
}

/// Compares without leaking where the first difference is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn metrics(req: Request) -> poem::Result<Response> {
    let state = state(&req)?;
    if !may_read_metrics(&req, &state) {
        return Err(ApiError::new(
            Code::Unauthenticated,
            "metrics need `Authorization: Bearer <metrics.token>`, or a direct loopback connection when no token is configured",
        )
        .with_header("www-authenticate", "Bearer".into())
        .into());
    }
    let m = &state.metrics;
    m.gauge("docket_up", "1 while the appliance runs.", vec![], 1.0);
    m.gauge("docket_uptime_seconds", "Seconds since start.", vec![], state.started.elapsed().as_secs_f64());
    if let Ok(seq) = state.store.journal_head() {
        m.gauge("docket_journal_seq", "Newest journal sequence number.", vec![], seq as f64);
    }
    Ok(Response::builder().header(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8").body(m.render()))
}
