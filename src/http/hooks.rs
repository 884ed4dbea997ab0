//! `POST /hooks/clio/<endpoint>`: where Clio delivers a firm's webhooks. Not
//! part of the integrators' API: Clio is the only caller, authenticated by
//! the `X-Hook-Signature` HMAC of each delivery (see `clio::webhooks`).
use crate::api::problem::{ApiError, Code};
use crate::clio::webhooks::{self, WebhookError};
use crate::state::AppState;
use poem::http::{HeaderValue, StatusCode};
use poem::{IntoResponse, Request, Response};
use std::sync::Arc;

fn problem(code: Code, detail: &str) -> Response {
    ApiError::new(code, detail).into_response()
}

/// Handles one request from Clio: the handshake or a delivery.
pub async fn receive(mut req: Request) -> Response {
    let Some(state) = req.data::<Arc<AppState>>().cloned() else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let hook = req.uri().path().rsplit('/').next().unwrap_or_default().to_string();
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (secret, signature) = (header("x-hook-secret"), header("x-hook-signature"));
    let body = match req.take_body().into_bytes_limit(1024 * 1024).await {
        Ok(b) => b,
        Err(_) => return problem(Code::PayloadTooLarge, "a webhook body is at most 1 MiB"),
    };
    let ctx = crate::api::audit_context(&req);
    if let Some(secret) = secret {
        return match webhooks::handshake(&state.store, &state.keys, &hook, &body, &secret, &ctx) {
            Ok(()) => {
                count(&state, "handshake", "accepted");
                let mut resp = StatusCode::OK.into_response();
                if let Ok(v) = HeaderValue::from_str(&secret) {
                    resp.headers_mut().insert("x-hook-secret", v);
                }
                resp
            }
            Err(e) => refusal(&state, "handshake", e),
        };
    }
    let Some(signature) = signature else {
        return problem(Code::Unauthenticated, "a delivery needs the X-Hook-Signature header");
    };
    let keys = state.keys.current();
    match webhooks::deliver(&state.store, &keys, &hook, &body, &signature, &ctx) {
        Ok(applied) => {
            count(&state, "delivery", applied.as_str());
            StatusCode::OK.into_response()
        }
        Err(e) => refusal(&state, "delivery", e),
    }
}

/// Counts a handshake or delivery by a fixed-set result label.
fn count(state: &AppState, what: &'static str, result: &'static str) {
    state.metrics.count(
        "docket_clio_webhook_requests_total",
        "Requests to Clio webhook endpoints, by kind and result.",
        vec![("request", what.to_string()), ("result", result.to_string())],
        1,
    );
}

/// The answer to a refused handshake or delivery; logged and counted, never stored.
fn refusal(state: &AppState, what: &'static str, e: WebhookError) -> Response {
    let (label, code, detail) = match &e {
        // 410 tells Clio to stop delivering to an endpoint that no longer exists.
        WebhookError::UnknownHook => ("unknown", Code::Gone, e.to_string()),
        WebhookError::BadSignature => ("bad_signature", Code::Unauthenticated, e.to_string()),
        WebhookError::Refused(_) => ("refused", Code::Forbidden, e.to_string()),
        WebhookError::Malformed(_) => ("malformed", Code::BadRequest, e.to_string()),
        WebhookError::Store(_) => ("error", Code::Internal, "the webhook could not be stored".to_string()),
        WebhookError::Clio(_) => ("error", Code::Internal, "the webhook could not be processed".to_string()),
    };
    count(state, what, label);
    if !matches!(e, WebhookError::UnknownHook) {
        tracing::warn!(request = what, result = label, error = %e, "a Clio webhook request was refused");
    }
    problem(code, &detail)
}
