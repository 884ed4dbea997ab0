//! Clio webhooks (optional per firm): changes arrive within seconds instead
//! of at the next scheduled sync, which keeps running as the fallback.
//!
//! docket registers a subscription per model at
//! `https://<public host>/hooks/clio/<hook id>` (the hook id is a
//! random name of the firm's endpoint), answers Clio's `X-Hook-Secret`
//! handshake (the secret is sealed at rest), verifies `X-Hook-Signature`
//! (lowercase-hex HMAC-SHA256 of the raw body) in constant time, applies the
//! event to the store, and renews subscriptions before they expire.
use super::client::{ClioClient, ClioError};
use super::sync::{self, SyncError, SyncScope};
use crate::records::{Kind, Record};
use crate::secrets::{Keyring, SharedKeyring};
use crate::store::{CLIO, HOOKS, OrgId, OrgScope, Reader, Store, StoreError, SystemContext, Tx};
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The models docket subscribes to (Clio has no webhooks for users and notes;
/// the scheduled sync covers them).
pub const MODELS: [(Kind, &str); 6] = [
    (Kind::Matter, "matter"),
    (Kind::Contact, "contact"),
    (Kind::Activity, "activity"),
    (Kind::Bill, "bill"),
    (Kind::Task, "task"),
    (Kind::CalendarEntry, "calendar_entry"),
];
/// Subscriptions last this long (Clio's maximum is 31 days).
const LIFETIME_DAYS: i64 = 30;
/// Renewed when less than this is left.
const RENEW_WITHIN_DAYS: i64 = 3;
const KEY: &[u8] = b"webhooks";
const CTX: SystemContext = SystemContext::new("clio-webhooks");

/// One subscription at Clio.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub kind: Kind,
    /// Clio's webhook id.
    pub id: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Whether the handshake completed.
    pub active: bool,
}

/// A firm's webhook endpoint and subscriptions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhooks {
    pub hook_id: String,
    pub subscriptions: Vec<Subscription>,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no webhook endpoint has this name")]
    UnknownHook,
    #[error("the signature does not match the body")]
    BadSignature,
    #[error("the delivery is malformed: {0}")]
    Malformed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Clio(#[from] ClioError),
}

fn secret_name(webhook: &str) -> String {
    format!("clio.webhook.{webhook}")
}

pub fn get(r: &impl Reader, scope: &OrgScope) -> Result<Option<Webhooks>, StoreError> {
    r.get_json(scope, &CLIO, KEY)
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn rfc3339(unix: i64) -> String {
    super::generator::datetime(unix)
}

/// The path under which every firm's webhook endpoint lives (`<base>/<hook id>`).
pub const PATH: &str = "/hooks/clio";

/// Subscribes to every model at Clio, pointing at `<public_origin>/hooks/clio/<hook id>`.
/// Clio's handshakes arrive while this runs; each completes the subscription it names.
pub async fn register(
    store: &Store,
    scope: &OrgScope,
    client: &ClioClient,
    public_origin: &str,
) -> Result<Webhooks, WebhookError> {
    let mut state = store.read(|r| get(r, scope))?.unwrap_or_default();
    if state.hook_id.is_empty() {
        state.hook_id = crate::auth::random_token(24);
        let index = state.hook_id.clone();
        store.write(|w| {
            w.put_system_json(&CTX, &HOOKS, index.as_bytes(), &scope.org())?;
            w.put_json(scope, &CLIO, KEY, &state)
        })?;
    }
    let target = format!("{public_origin}{PATH}/{}", state.hook_id);
    for (kind, model) in MODELS {
        if state.subscriptions.iter().any(|s| s.kind == kind) {
            continue;
        }
        let expires_at = now_unix() + LIFETIME_DAYS * 86_400;
        // Saved before the request: Clio's handshake names this id and may arrive first.
        let body = json!({"data": {
            "url": target, "model": model, "events": ["created", "updated", "deleted"],
            "fields": kind.fields(), "expires_at": rfc3339(expires_at),
        }});
        let made = client.send(reqwest::Method::POST, "/webhooks.json", &body, kind).await?;
        let id = made.pointer("/data/id").map(|v| v.to_string().trim_matches('"').to_string()).unwrap_or_default();
        if id.is_empty() {
            return Err(WebhookError::Malformed("Clio's answer to the subscription has no id".into()));
        }
        let sub = Subscription { kind, id, expires_at, active: false };
        store.write(|w| {
            let mut current = get(w, scope)?.unwrap_or_default();
            let handshaken = w.get(scope, &crate::store::SECRETS, secret_name(&sub.id).as_bytes())?.is_some();
            current.subscriptions.push(Subscription { active: handshaken, ..sub.clone() });
            w.put_json(scope, &CLIO, KEY, &current)
        })?;
    }
    Ok(store.read(|r| get(r, scope))?.unwrap_or_default())
}

/// Forgets the firm's webhook endpoint, subscriptions and secrets (on
/// disconnect): later deliveries get 410, which tells Clio to stop.
pub fn forget(w: &mut Tx, scope: &OrgScope) -> Result<(), StoreError> {
    let Some(state) = get(w, scope)? else { return Ok(()) };
    for sub in &state.subscriptions {
        w.delete(scope, &crate::store::SECRETS, secret_name(&sub.id).as_bytes())?;
    }
    if !state.hook_id.is_empty() {
        w.delete_system(&CTX, &HOOKS, state.hook_id.as_bytes())?;
    }
    w.delete(scope, &CLIO, KEY)?;
    Ok(())
}

/// Extends subscriptions that expire within three days.
pub async fn renew(store: &Store, scope: &OrgScope, client: &ClioClient) -> Result<usize, WebhookError> {
    let Some(state) = store.read(|r| get(r, scope))? else { return Ok(0) };
    let mut renewed = 0;
    for sub in state.subscriptions.iter().filter(|s| s.expires_at - now_unix() < RENEW_WITHIN_DAYS * 86_400) {
        let expires_at = now_unix() + LIFETIME_DAYS * 86_400;
        let body = json!({"data": {"expires_at": rfc3339(expires_at)}});
        client.send(reqwest::Method::PATCH, &format!("/webhooks/{}.json", sub.id), &body, sub.kind).await?;
        store.write(|w| {
            let mut current = get(w, scope)?.unwrap_or_default();
            current.subscriptions.iter_mut().filter(|s| s.id == sub.id).for_each(|s| s.expires_at = expires_at);
            w.put_json(scope, &CLIO, KEY, &current)
        })?;
        renewed += 1;
    }
    Ok(renewed)
}

/// The org whose endpoint is named `hook_id`.
pub fn org_of(store: &Store, hook_id: &str) -> Result<OrgId, WebhookError> {
    store.read(|r| r.get_system_record::<OrgId>(&HOOKS, hook_id.as_bytes()))?.ok_or(WebhookError::UnknownHook)
}

fn webhook_id(body: &Value) -> Option<String> {
    body.pointer("/data/webhook_id")
        .or_else(|| body.pointer("/meta/webhook_id"))
        .map(|v| v.to_string().trim_matches('"').to_string())
}

/// Clio's handshake: keeps the shared secret (sealed) and activates the subscription.
pub fn handshake(
    store: &Store,
    keys: &SharedKeyring,
    org: OrgId,
    body: &[u8],
    secret: &str,
) -> Result<(), WebhookError> {
    let scope = CTX.org_scope(org);
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let id = webhook_id(&parsed);
    store.write(|w| {
        let mut state = get(w, &scope)?.unwrap_or_default();
        // The handshake may arrive before docket saved Clio's answer: then the
        // secret waits under its id and `register` activates the subscription.
        let name = id.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(StoreError::Invalid { field: "webhook_id", problem: "is missing from the handshake".into() });
        }
        w.put_secret(&scope, keys, &secret_name(&name), secret.as_bytes())?;
        state.subscriptions.iter_mut().filter(|s| s.id == name).for_each(|s| s.active = true);
        w.put_json(&scope, &CLIO, KEY, &state)
    })?;
    Ok(())
}

/// Whether `signature` (lowercase hex) is the HMAC-SHA256 of `body` under `secret`, in constant time.
pub fn verify(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Ok(expected) = hex::decode(signature.trim()) else { return false };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else { return false };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// What a delivery did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Stored,
    Unchanged,
    Deleted,
}

/// Verifies and applies one delivery.
pub fn deliver(
    store: &Store,
    keys: &Keyring,
    org: OrgId,
    body: &[u8],
    signature: &str,
) -> Result<Applied, WebhookError> {
    let scope = CTX.org_scope(org);
    let parsed: Value = serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    let id = webhook_id(&parsed).ok_or_else(|| WebhookError::Malformed("no webhook_id".into()))?;
    let state = store.read(|r| get(r, &scope))?.unwrap_or_default();
    let sub = state.subscriptions.iter().find(|s| s.id == id).ok_or(WebhookError::UnknownHook)?;
    let secret = store.read(|r| r.get_secret(&scope, keys, &secret_name(&id)))?.ok_or(WebhookError::BadSignature)?;
    if !verify(secret.expose(), body, signature) {
        return Err(WebhookError::BadSignature);
    }
    let event = parsed.pointer("/meta/event").and_then(Value::as_str).unwrap_or("updated");
    let data = parsed.get("data").cloned().unwrap_or(Value::Null);
    let kind = sub.kind;
    let sync = SyncScope::begin(store, &CTX, org)?;
    if event == "deleted" {
        let rid = data.get("id").map(|v| v.to_string().trim_matches('"').to_string()).unwrap_or_default();
        sync::delete_one(store, &sync, kind, &rid).map_err(from_sync)?;
        return Ok(Applied::Deleted);
    }
    let record = Record::from_clio(kind, data).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    let stored = sync::store_one(store, &sync, record).map_err(from_sync)?;
    Ok(if stored { Applied::Stored } else { Applied::Unchanged })
}

fn from_sync(e: SyncError) -> WebhookError {
    match e {
        SyncError::Clio(e) => WebhookError::Clio(e),
        SyncError::Store(e) => WebhookError::Store(e),
        // The firm disconnected while the delivery was in flight: as if the endpoint were gone.
        SyncError::Fenced => WebhookError::UnknownHook,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let sig = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert!(verify(b"Jefe", b"what do ya want for nothing?", sig));
        assert!(!verify(b"Jefe", b"what do ya want for nothing!", sig));
        assert!(!verify(b"Jefe", b"what do ya want for nothing?", "not hex"));
        assert!(!verify(b"other", b"what do ya want for nothing?", sig));
    }
}
