//! `POST /hooks/clio/<hook id>`: where Clio delivers a firm's webhooks. Not
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
    let org = match webhooks::org_of(&state.store, &hook) {
        Ok(org) => org,
        // 410 tells Clio to stop delivering to an endpoint that no longer exists.
        Err(_) => return problem(Code::Gone, "no webhook endpoint has this name"),
    };
    if let Some(secret) = secret {
        return match webhooks::handshake(&state.store, &state.keys, org, &body, &secret) {
            Ok(()) => {
                let mut resp = StatusCode::OK.into_response();
                if let Ok(v) = HeaderValue::from_str(&secret) {
                    resp.headers_mut().insert("x-hook-secret", v);
                }
                resp
            }
            Err(e) => problem(Code::BadRequest, &e.to_string()),
        };
    }
    let Some(signature) = signature else {
        return problem(Code::Unauthenticated, "a delivery needs the X-Hook-Signature header");
    };
    let keys = state.keys.current();
    match webhooks::deliver(&state.store, &keys, org, &body, &signature) {
        Ok(applied) => {
            state.metrics.count(
                "docket_clio_webhook_deliveries_total",
                "Clio webhook deliveries applied.",
                vec![("result", format!("{applied:?}").to_lowercase())],
                1,
            );
            StatusCode::OK.into_response()
        }
        Err(WebhookError::BadSignature) => problem(Code::Unauthenticated, "the signature does not match the body"),
        Err(WebhookError::UnknownHook) => problem(Code::Gone, "this webhook subscription is unknown"),
        Err(WebhookError::Malformed(m)) => problem(Code::BadRequest, &format!("malformed delivery: {m}")),
        Err(WebhookError::Store(e)) => ApiError::from(e).into_response(),
        Err(WebhookError::Clio(e)) => problem(Code::Internal, &e.to_string()),
    }
}
