//! Clio webhooks (optional per firm): changes arrive within seconds instead
//! of at the next scheduled sync, which keeps running as the fallback.
//!
//! Each subscription (one per model) has its own endpoint,
//! `https://<public host>/hooks/clio/<endpoint>`, whose last segment is 32
//! random bytes: an unguessable capability known only to docket, Clio and
//! callers holding `clio:manage`. The rules that keep a stranger out:
//!
//! - **Handshake** (`X-Hook-Secret`): accepted only for a subscription docket
//!   itself asked Clio for within the last [`HANDSHAKE_WINDOW_MICROS`], only
//!   once, and only if the webhook id it names is the one Clio answered with
//!   (when the handshake beats Clio's answer, the id is checked when the
//!   answer arrives and a mismatch discards the secret). The check and the
//!   write are one store transaction, and the accepted handshake is audited.
//! - **Delivery** (`X-Hook-Signature`, lowercase-hex HMAC-SHA256 of the raw
//!   body, checked in constant time): applied only to an active subscription,
//!   only if it names that subscription's webhook id, and audited in the
//!   transaction that applies it.
//! - At most one secret per model and firm is stored, so no request can grow
//!   the store: a refused handshake writes nothing.
//!
//! Lifecycle ([`upkeep`], after every scheduled sync): each subscription's
//! status and expiry are read from Clio; one Clio suspended (after failed
//! deliveries, e.g. while docket was down), let expire or no longer has (404)
//! is dropped and made again; one expiring within three days is renewed; a
//! failure is recorded in that model's [`Health`] and the others go on.
use super::client::{ClioClient, ClioError};
use super::sync::{self, Pushed, SyncScope};
use crate::audit::{self, Outcome};
use crate::records::{Kind, Record};
use crate::secrets::{Keyring, SharedKeyring};
use crate::store::{CLIO, HOOKS, OrgId, OrgScope, OrgTask, OrgTaskContext, Reader, SECRETS, Store, StoreError, Tx};
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
/// Clio's handshake must arrive this soon after docket asks for a subscription.
pub const HANDSHAKE_WINDOW_MICROS: i64 = 10 * 60 * 1_000_000;
/// The longest shared secret a handshake may carry (it is echoed in a header).
pub const MAX_SECRET_LEN: usize = 256;
const KEY: &[u8] = b"webhooks";
const CTX: OrgTaskContext = OrgTaskContext::new(OrgTask::ClioWebhooks);

/// One subscription at Clio.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub kind: Kind,
    /// Clio's webhook id; empty until Clio answers the subscription request.
    #[serde(default)]
    pub id: String,
    /// The last path segment of this subscription's URL (a capability).
    #[serde(default)]
    pub endpoint: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// When docket asked Clio for it (Unix microseconds): the handshake window opens.
    #[serde(default)]
    pub requested_at: i64,
    /// Whether a handshake was accepted (only one ever is).
    #[serde(default)]
    pub handshaken: bool,
    /// The webhook id the handshake named, while Clio's answer is outstanding.
    #[serde(default)]
    pub handshake_id: Option<String>,
    /// Whether deliveries are applied: handshake accepted and ids agree.
    pub active: bool,
}

/// A firm's webhook subscriptions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhooks {
    /// The one endpoint all subscriptions shared before endpoints were per
    /// subscription; retired (its deliveries get 410) at the next upkeep.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hook_id: String,
    pub subscriptions: Vec<Subscription>,
    /// Per model, kept across replacements of its subscription.
    #[serde(default)]
    pub health: Vec<Health>,
}

impl Webhooks {
    /// The health record of `kind`, made if missing.
    fn health_mut(&mut self, kind: Kind) -> &mut Health {
        match self.health.iter().position(|h| h.kind == kind) {
            Some(i) => &mut self.health[i],
            None => {
                self.health.push(Health { kind, ..Health::default() });
                let last = self.health.len() - 1;
                &mut self.health[last]
            }
        }
    }

    /// The health of `kind` (default when nothing happened yet).
    pub fn health(&self, kind: Kind) -> Health {
        self.health.iter().find(|h| h.kind == kind).cloned().unwrap_or(Health { kind, ..Health::default() })
    }

    pub fn subscription(&self, kind: Kind) -> Option<&Subscription> {
        self.subscriptions.iter().find(|s| s.kind == kind)
    }
}

/// How one model's webhooks fare: what Clio last said, deliveries and failures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Health {
    pub kind: Kind,
    /// Clio's `status` at the last upkeep: `pending`, `enabled` or `suspended`.
    pub clio_status: Option<String>,
    /// Unix microseconds of the last delivery applied.
    pub last_delivery_at: Option<i64>,
    /// The last failure of the upkeep for this model (cleared when it succeeds).
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    /// Subscriptions replaced because Clio suspended, expired or forgot them.
    pub replaced: u64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            kind: Kind::Matter,
            clio_status: None,
            last_delivery_at: None,
            last_error: None,
            last_error_at: None,
            replaced: 0,
        }
    }
}

/// What the endpoint index says about one endpoint name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Endpoint {
    org: OrgId,
    kind: Kind,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no webhook endpoint has this name")]
    UnknownHook,
    #[error("the signature does not match the body")]
    BadSignature,
    #[error("refused: {0}")]
    Refused(String),
    #[error("the request is malformed: {0}")]
    Malformed(String),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Clio(#[from] ClioError),
}

impl From<StoreError> for WebhookError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused { problem } => WebhookError::Refused(problem),
            other => WebhookError::Store(other),
        }
    }
}

fn refused(problem: &str) -> StoreError {
    StoreError::Refused { problem: problem.into() }
}

/// The sealed shared secret of a firm's subscription to `kind` (one per model).
fn secret_name(kind: Kind) -> String {
    format!("clio.webhook.{}", kind.as_str())
}

pub fn get(r: &impl Reader, scope: &OrgScope) -> Result<Option<Webhooks>, StoreError> {
    r.get_json(scope, &CLIO, KEY)
}

fn rfc3339(unix: i64) -> String {
    super::generator::datetime(unix)
}

/// The path under which every webhook endpoint lives (`<base>/<endpoint>`).
pub const PATH: &str = "/hooks/clio";

/// The URL Clio delivers a subscription to.
pub fn url(public_origin: &str, sub: &Subscription) -> String {
    format!("{public_origin}{PATH}/{}", sub.endpoint)
}

fn now_unix(store: &Store) -> i64 {
    store.clock().now_micros().div_euclid(1_000_000)
}

fn pending_within_window(sub: &Subscription, now_micros: i64) -> bool {
    !sub.active && now_micros.saturating_sub(sub.requested_at) <= HANDSHAKE_WINDOW_MICROS
}

/// Subscribes to every model at Clio that has no live subscription: the
/// models subscribed, and those that failed (recorded in their health; the
/// others go on). Clio's handshakes arrive while this runs; each completes
/// the subscription it names.
async fn register(
    store: &Store,
    scope: &OrgScope,
    client: &ClioClient,
    public_origin: &str,
) -> Result<(Vec<Kind>, Vec<(Kind, String)>), WebhookError> {
    if store.read(|r| Ok(get(r, scope)?.as_ref().is_some_and(has_shared_endpoint)))? {
        store.write(|w| retire_shared_endpoint(w, scope))?;
    }
    let (mut subscribed, mut failed) = (vec![], vec![]);
    for (kind, model) in MODELS {
        match subscribe(store, scope, client, public_origin, kind, model).await {
            Ok(false) => {}
            Ok(true) => subscribed.push(kind),
            Err(WebhookError::Store(e)) => return Err(WebhookError::Store(e)),
            Err(e) => {
                tracing::warn!(org = %scope.org(), kind = kind.as_str(), error = %e, "a Clio webhook could not be subscribed");
                note_error(store, scope, kind, &e.to_string())?;
                failed.push((kind, e.to_string()));
            }
        }
    }
    Ok((subscribed, failed))
}

/// Subscribes to `kind` unless it has a live (or pending) subscription; whether it asked Clio.
async fn subscribe(
    store: &Store,
    scope: &OrgScope,
    client: &ClioClient,
    public_origin: &str,
    kind: Kind,
    model: &str,
) -> Result<bool, WebhookError> {
    let state = store.read(|r| get(r, scope))?.unwrap_or_default();
    let now = store.clock().now_micros();
    let existing = state.subscription(kind);
    if existing.is_some_and(|s| s.active || pending_within_window(s, now)) {
        return Ok(false);
    }
    if let Some(stale) = existing.filter(|s| !s.id.is_empty()) {
        // Never completed its handshake: ask Clio to drop it before asking again.
        let path = format!("/webhooks/{}.json", stale.id);
        if let Err(e) = client.send(reqwest::Method::DELETE, &path, &Value::Null, kind).await {
            tracing::warn!(org = %scope.org(), kind = kind.as_str(), error = %e, "a stale Clio webhook could not be deleted");
        }
    }
    let sub = Subscription {
        kind,
        id: String::new(),
        endpoint: crate::auth::random_token(32),
        expires_at: now_unix(store) + LIFETIME_DAYS * 86_400,
        requested_at: now,
        handshaken: false,
        handshake_id: None,
        active: false,
    };
    // Saved before the request: Clio's handshake may arrive before its answer.
    store.write(|w| replace_subscription(w, scope, sub.clone()))?;
    let body = json!({"data": {
        "url": url(public_origin, &sub), "model": model, "events": ["created", "updated", "deleted"],
        "fields": kind.fields(), "expires_at": rfc3339(sub.expires_at),
    }});
    let made = client.send(reqwest::Method::POST, "/webhooks.json", &body, kind).await;
    match made.map(|m| m.pointer("/data/id").map(id_text).unwrap_or_default()) {
        Ok(id) if !id.is_empty() => {
            store.write(|w| bind_clio_id(w, scope, &sub.endpoint, &id))?;
            Ok(true)
        }
        Ok(_) => {
            store.write(|w| remove_subscription(w, scope, kind))?;
            Err(WebhookError::Malformed("Clio's answer to the subscription has no id".into()))
        }
        Err(e) => {
            store.write(|w| remove_subscription(w, scope, kind))?;
            Err(e.into())
        }
    }
}

fn id_text(v: &Value) -> String {
    v.to_string().trim_matches('"').to_string()
}

/// Puts `sub` in place of any earlier subscription to its model (index and secret included).
fn replace_subscription(w: &mut Tx, scope: &OrgScope, sub: Subscription) -> Result<(), StoreError> {
    remove_subscription(w, scope, sub.kind)?;
    let mut state = get(w, scope)?.unwrap_or_default();
    w.put_index_json(
        &CTX,
        &HOOKS,
        scope.org(),
        sub.endpoint.as_bytes(),
        &Endpoint { org: scope.org(), kind: sub.kind },
    )?;
    state.subscriptions.push(sub);
    w.put_json(scope, &CLIO, KEY, &state)
}

fn remove_subscription(w: &mut Tx, scope: &OrgScope, kind: Kind) -> Result<(), StoreError> {
    let Some(mut state) = get(w, scope)? else { return Ok(()) };
    for old in state.subscriptions.iter().filter(|s| s.kind == kind && !s.endpoint.is_empty()) {
        w.delete_index(&CTX, &HOOKS, scope.org(), old.endpoint.as_bytes())?;
    }
    state.subscriptions.retain(|s| s.kind != kind);
    w.delete(scope, &SECRETS, secret_name(kind).as_bytes())?;
    w.put_json(scope, &CLIO, KEY, &state)
}

/// Records Clio's id for the subscription at `endpoint`. A handshake that came
/// first must have named the same id; otherwise its secret is discarded.
fn bind_clio_id(w: &mut Tx, scope: &OrgScope, endpoint: &str, id: &str) -> Result<(), StoreError> {
    let Some(mut state) = get(w, scope)? else { return Ok(()) };
    let Some(sub) = state.subscriptions.iter_mut().find(|s| s.endpoint == endpoint) else { return Ok(()) };
    sub.id = id.to_string();
    match sub.handshake_id.take() {
        Some(named) if named == id => sub.active = true,
        Some(named) => {
            tracing::warn!(org = %scope.org(), kind = sub.kind.as_str(), named, id, "a webhook handshake named another subscription; its secret is discarded");
            sub.handshaken = false;
            let kind = sub.kind;
            w.delete(scope, &SECRETS, secret_name(kind).as_bytes())?;
        }
        None => {}
    }
    w.put_json(scope, &CLIO, KEY, &state)
}

/// Drops the endpoint shared by all subscriptions in earlier versions, and the
/// subscriptions made under it: their deliveries now get 410, which tells Clio
/// to stop, and [`register`] subscribes again with an endpoint each.
fn retire_shared_endpoint(w: &mut Tx, scope: &OrgScope) -> Result<(), StoreError> {
    let Some(mut state) = get(w, scope)?.filter(has_shared_endpoint) else { return Ok(()) };
    if !state.hook_id.is_empty() {
        w.delete_index(&CTX, &HOOKS, scope.org(), std::mem::take(&mut state.hook_id).as_bytes())?;
    }
    for old in state.subscriptions.iter().filter(|s| s.endpoint.is_empty()) {
        w.delete(scope, &SECRETS, format!("clio.webhook.{}", old.id).as_bytes())?;
    }
    state.subscriptions.retain(|s| !s.endpoint.is_empty());
    w.put_json(scope, &CLIO, KEY, &state)
}

/// Whether `state` still has the shared endpoint or subscriptions made under it.
fn has_shared_endpoint(state: &Webhooks) -> bool {
    !state.hook_id.is_empty() || state.subscriptions.iter().any(|s| s.endpoint.is_empty())
}

/// Forgets the firm's webhook endpoints, subscriptions and secrets (on
/// disconnect): later deliveries get 410, which tells Clio to stop.
pub fn forget(w: &mut Tx, scope: &OrgScope) -> Result<(), StoreError> {
    retire_shared_endpoint(w, scope)?;
    for (kind, _) in MODELS {
        remove_subscription(w, scope, kind)?;
    }
    w.delete(scope, &CLIO, KEY)?;
    Ok(())
}

/// What one upkeep did to the firm's subscriptions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Upkeep {
    /// Subscriptions Clio suspended, let expire or forgot, dropped to be made again.
    pub replaced: Vec<Kind>,
    pub renewed: Vec<Kind>,
    pub subscribed: Vec<Kind>,
    /// Models whose upkeep failed, and why (the others went on).
    pub failed: Vec<(Kind, String)>,
}

/// Follows each subscription's lifecycle at Clio and keeps one live per model:
/// reads its status and expiry (`GET /webhooks/{id}`); drops (and deletes at
/// Clio) what is suspended, expired or gone; renews what expires within
/// [`RENEW_WITHIN_DAYS`] (a 404 means it expired meanwhile: dropped too);
/// then subscribes every model without a live subscription. One model's
/// failure is recorded in its health and the others go on.
pub async fn upkeep(
    store: &Store,
    scope: &OrgScope,
    client: &ClioClient,
    public_origin: &str,
) -> Result<Upkeep, WebhookError> {
    let mut done = Upkeep::default();
    let state = store.read(|r| get(r, scope))?.unwrap_or_default();
    for sub in state.subscriptions.iter().filter(|s| s.active && !s.id.is_empty()) {
        match check(store, scope, client, sub).await {
            Ok(Checked::Live) => {}
            Ok(Checked::Renewed) => done.renewed.push(sub.kind),
            Ok(Checked::Dropped(why)) => {
                tracing::warn!(org = %scope.org(), kind = sub.kind.as_str(), %why, "a Clio webhook is replaced");
                done.replaced.push(sub.kind);
            }
            Err(e) => {
                note_error(store, scope, sub.kind, &e.to_string())?;
                done.failed.push((sub.kind, e.to_string()));
            }
        }
    }
    let (subscribed, failed) = register(store, scope, client, public_origin).await?;
    done.subscribed = subscribed;
    done.failed.extend(failed);
    Ok(done)
}

enum Checked {
    Live,
    Renewed,
    Dropped(String),
}

/// One active subscription: what Clio says of it, acted on.
async fn check(
    store: &Store,
    scope: &OrgScope,
    client: &ClioClient,
    sub: &Subscription,
) -> Result<Checked, WebhookError> {
    let path = format!("/webhooks/{}.json?fields=id,status,expires_at", sub.id);
    let url = format!("{}{path}", client.endpoints().api_base);
    let now = now_unix(store);
    let seen = match client.get(&url, sub.kind).await {
        Ok(body) => body,
        Err(ClioError::Refused { status: 404, .. }) => {
            return Ok(drop_gone(store, scope, sub, "Clio no longer has it (expired or deleted)")?);
        }
        Err(e) => return Err(e.into()),
    };
    let status = seen.pointer("/data/status").and_then(Value::as_str).unwrap_or("enabled").to_string();
    let expires_at = seen
        .pointer("/data/expires_at")
        .and_then(Value::as_str)
        .and_then(|t| crate::timestamp::Timestamp::parse(t).ok())
        .map_or(sub.expires_at, |t| t.micros().div_euclid(1_000_000));
    record_seen(store, scope, sub, &status, expires_at)?;
    if status == "suspended" || expires_at <= now {
        // Best effort: a suspended subscription would otherwise linger at Clio.
        let path = format!("/webhooks/{}.json", sub.id);
        if let Err(e) = client.send(reqwest::Method::DELETE, &path, &Value::Null, sub.kind).await {
            tracing::warn!(org = %scope.org(), kind = sub.kind.as_str(), error = %e, "a dead Clio webhook could not be deleted");
        }
        let why = if status == "suspended" { "Clio suspended it (deliveries failed)" } else { "it expired" };
        return Ok(drop_gone(store, scope, sub, why)?);
    }
    if expires_at - now >= RENEW_WITHIN_DAYS * 86_400 {
        return Ok(Checked::Live);
    }
    let renewed_to = now + LIFETIME_DAYS * 86_400;
    let body = json!({"data": {"expires_at": rfc3339(renewed_to)}});
    match client.send(reqwest::Method::PATCH, &format!("/webhooks/{}.json", sub.id), &body, sub.kind).await {
        Ok(_) => {
            record_seen(store, scope, sub, &status, renewed_to)?;
            Ok(Checked::Renewed)
        }
        Err(ClioError::Refused { status: 404, .. }) => {
            Ok(drop_gone(store, scope, sub, "it expired before it was renewed")?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Keeps what Clio said of `sub` (if it is still the model's subscription), and clears the model's error.
fn record_seen(
    store: &Store,
    scope: &OrgScope,
    sub: &Subscription,
    status: &str,
    expires_at: i64,
) -> Result<(), StoreError> {
    store.write(|w| {
        let Some(mut state) = get(w, scope)? else { return Ok(()) };
        let Some(current) = state.subscriptions.iter_mut().find(|s| s.endpoint == sub.endpoint) else { return Ok(()) };
        current.expires_at = expires_at;
        let health = state.health_mut(sub.kind);
        health.clio_status = Some(status.to_string());
        health.last_error = None;
        w.put_json(scope, &CLIO, KEY, &state)
    })
}

/// Drops `sub` (if it is still the model's subscription) so the upkeep subscribes again.
fn drop_gone(store: &Store, scope: &OrgScope, sub: &Subscription, why: &str) -> Result<Checked, StoreError> {
    let now = store.clock().now_micros();
    store.write(|w| {
        let Some(state) = get(w, scope)? else { return Ok(()) };
        if !state.subscriptions.iter().any(|s| s.endpoint == sub.endpoint) {
            return Ok(());
        }
        remove_subscription(w, scope, sub.kind)?;
        let mut state = get(w, scope)?.unwrap_or_default();
        let health = state.health_mut(sub.kind);
        health.replaced += 1;
        health.clio_status = None;
        health.last_error = Some(format!("replaced: {why}"));
        health.last_error_at = Some(now);
        w.put_json(scope, &CLIO, KEY, &state)
    })?;
    Ok(Checked::Dropped(why.to_string()))
}

/// Records the upkeep's failure for `kind` in its health.
fn note_error(store: &Store, scope: &OrgScope, kind: Kind, error: &str) -> Result<(), StoreError> {
    let now = store.clock().now_micros();
    store.write(|w| {
        let mut state = get(w, scope)?.unwrap_or_default();
        let health = state.health_mut(kind);
        health.last_error = Some(error.to_string());
        health.last_error_at = Some(now);
        w.put_json(scope, &CLIO, KEY, &state)
    })
}

/// The org and model behind an endpoint name.
fn endpoint(r: &impl Reader, name: &str) -> Result<Endpoint, StoreError> {
    if name.is_empty() || name.len() > 64 {
        return Err(StoreError::NotFound { what: "webhook endpoint".into() });
    }
    // An index row of an older shape (a bare org id) is an endpoint that no longer exists.
    r.get_system(&HOOKS, name.as_bytes())?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(StoreError::NotFound { what: "webhook endpoint".into() })
}

fn lookup(store: &Store, name: &str) -> Result<(Endpoint, OrgScope), WebhookError> {
    match store.read(|r| endpoint(r, name)) {
        Ok(ep) => Ok((ep, CTX.org_scope(ep.org))),
        Err(StoreError::NotFound { .. }) => Err(WebhookError::UnknownHook),
        Err(e) => Err(e.into()),
    }
}

fn webhook_id(body: &Value) -> Option<String> {
    body.pointer("/data/webhook_id").or_else(|| body.pointer("/meta/webhook_id")).map(id_text)
}

/// Whether a handshake's secret is one docket can keep and echo: 1 to
/// [`MAX_SECRET_LEN`] visible ASCII characters.
fn acceptable_secret(secret: &str) -> bool {
    (1..=MAX_SECRET_LEN).contains(&secret.len()) && secret.bytes().all(|b| b.is_ascii_graphic())
}

/// Clio's handshake at `endpoint_name`: keeps the shared secret (sealed) and
/// activates the subscription, under the rules in the module docs.
pub fn handshake(
    store: &Store,
    keys: &SharedKeyring,
    endpoint_name: &str,
    body: &[u8],
    secret: &str,
    ctx: &audit::Context,
) -> Result<(), WebhookError> {
    let (ep, scope) = lookup(store, endpoint_name)?;
    if !acceptable_secret(secret) {
        return Err(WebhookError::Malformed(format!(
            "X-Hook-Secret must be 1 to {MAX_SECRET_LEN} visible ASCII characters"
        )));
    }
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let named = webhook_id(&parsed)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| WebhookError::Malformed("the handshake names no webhook_id".into()))?;
    store
        .write(|w| {
            let mut state = get(w, &scope)?.unwrap_or_default();
            let now = w.time();
            let sub = state
                .subscriptions
                .iter_mut()
                .find(|s| s.endpoint == endpoint_name)
                .ok_or(StoreError::NotFound { what: "webhook endpoint".into() })?;
            if sub.handshaken {
                return Err(refused("this subscription's handshake was already completed"));
            }
            if !pending_within_window(sub, now) {
                return Err(refused("no subscription is awaiting a handshake here"));
            }
            if !sub.id.is_empty() && sub.id != named {
                return Err(refused("the handshake names another webhook"));
            }
            sub.handshaken = true;
            if sub.id.is_empty() {
                sub.handshake_id = Some(named.clone());
            } else {
                sub.active = true;
            }
            w.put_secret(&scope, keys, &secret_name(ep.kind), secret.as_bytes())?;
            w.put_json(&scope, &CLIO, KEY, &state)?;
            let details = json!({"model": ep.kind.as_str(), "webhook_id": named});
            audit::record(
                w,
                &scope,
                ctx,
                "clio.webhook.handshake",
                &format!("webhook:{}", ep.kind.as_str()),
                Outcome::Success,
                details,
            )
        })
        .map_err(|e| match e {
            StoreError::NotFound { .. } => WebhookError::UnknownHook,
            other => other.into(),
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Stored,
    Unchanged,
    Deleted,
}

impl Applied {
    pub fn as_str(self) -> &'static str {
        match self {
            Applied::Stored => "stored",
            Applied::Unchanged => "unchanged",
            Applied::Deleted => "deleted",
        }
    }
}

/// Verifies and applies one delivery to `endpoint_name`, audited in the same transaction.
pub fn deliver(
    store: &Store,
    keys: &Keyring,
    endpoint_name: &str,
    body: &[u8],
    signature: &str,
    ctx: &audit::Context,
) -> Result<Applied, WebhookError> {
    let (ep, scope) = lookup(store, endpoint_name)?;
    let (state, secret) = store
        .read(|r| Ok((get(r, &scope)?.unwrap_or_default(), r.get_secret(&scope, keys, &secret_name(ep.kind))?)))?;
    let sub = state.subscriptions.iter().find(|s| s.endpoint == endpoint_name).ok_or(WebhookError::UnknownHook)?;
    let secret = secret.filter(|_| sub.active).ok_or(WebhookError::BadSignature)?;
    if !verify(secret.expose(), body, signature) {
        return Err(WebhookError::BadSignature);
    }
    let parsed: Value = serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    if webhook_id(&parsed).as_deref() != Some(sub.id.as_str()) {
        return Err(WebhookError::Malformed("the delivery names another webhook".into()));
    }
    let event = parsed.pointer("/meta/event").and_then(Value::as_str).unwrap_or("updated").to_string();
    let data = parsed.get("data").cloned().unwrap_or(Value::Null);
    let kind = ep.kind;
    let (change, record_id) = if event == "deleted" {
        let rid = data.get("id").map(id_text).unwrap_or_default();
        (Pushed::Delete(kind, rid.clone()), rid)
    } else {
        let record = Record::from_clio(kind, data).map_err(|e| WebhookError::Malformed(e.to_string()))?;
        let id = record.id.clone();
        (Pushed::Upsert(record), id)
    };
    let deleting = matches!(change, Pushed::Delete(..));
    let sync = SyncScope::begin(store, &CTX, ep.org)?;
    let result = store.write(|w| {
        let Some(changed) = sync::apply_pushed(w, &sync, change)? else { return Ok(None) };
        let mut state = get(w, &scope)?.unwrap_or_default();
        state.health_mut(kind).last_delivery_at = Some(w.time());
        w.put_json(&scope, &CLIO, KEY, &state)?;
        let result = match (deleting, changed) {
            (true, _) => Applied::Deleted,
            (false, true) => Applied::Stored,
            (false, false) => Applied::Unchanged,
        };
        let details = json!({"event": event, "result": result.as_str()});
        let target = format!("{}:{record_id}", kind.as_str());
        audit::record(w, &scope, ctx, "clio.webhook.deliver", &target, Outcome::Success, details)?;
        Ok(Some(result))
    })?;
    // None: the firm disconnected while the delivery was in flight, as if the endpoint were gone.
    result.ok_or(WebhookError::UnknownHook)
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

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        keys: SharedKeyring,
        clock: crate::clock::Clock,
        scope: OrgScope,
    }

    /// A store with one pending subscription to matters at endpoint `ep`.
    fn pending(clio_id: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = crate::clock::Clock::fixed(time::macros::datetime!(2026-11-30 12:00 UTC));
        let store = Store::open(&dir.path().join("s.redb"), clock.clone()).unwrap();
        let keys = SharedKeyring::new(Keyring::generate(&dir.path().join("k.key")).unwrap());
        let scope = CTX.org_scope(OrgId(7));
        let sub = Subscription {
            kind: Kind::Matter,
            id: clio_id.into(),
            endpoint: "ep".into(),
            expires_at: 0,
            requested_at: clock.now_micros(),
            handshaken: false,
            handshake_id: None,
            active: false,
        };
        store.write(|w| replace_subscription(w, &scope, sub)).unwrap();
        Fixture { _dir: dir, store, keys, clock, scope }
    }

    fn shake(f: &Fixture, id: &str, secret: &str) -> Result<(), WebhookError> {
        let body = json!({"data": {"webhook_id": id}}).to_string();
        handshake(&f.store, &f.keys, "ep", body.as_bytes(), secret, &audit::Context::default())
    }

    fn active(f: &Fixture) -> bool {
        f.store.read(|r| get(r, &f.scope)).unwrap().unwrap().subscriptions[0].active
    }

    fn stored_secret(f: &Fixture) -> Option<Vec<u8>> {
        let keys = f.keys.current();
        f.store
            .read(|r| r.get_secret(&f.scope, &keys, &secret_name(Kind::Matter)))
            .unwrap()
            .map(|s| s.expose().to_vec())
    }

    #[test]
    fn a_handshake_is_accepted_once_within_the_window() {
        let f = pending("41");
        shake(&f, "41", "first").unwrap();
        assert!(active(&f));
        let again = shake(&f, "41", "attacker").unwrap_err();
        assert!(matches!(again, WebhookError::Refused(_)), "{again}");
        assert_eq!(stored_secret(&f).unwrap(), b"first", "a second handshake replaces nothing");
        let audited = audit::query(&f.store, &f.scope, &audit::Filter { limit: 10, ..Default::default() }).unwrap();
        assert_eq!(audited.iter().filter(|e| e.action == "clio.webhook.handshake").count(), 1);
    }

    #[test]
    fn twenty_parallel_handshakes_make_one_secret() {
        let f = std::sync::Arc::new(pending("41"));
        let threads: Vec<_> = (0..20)
            .map(|i| {
                let f = f.clone();
                std::thread::spawn(move || shake(&f, "41", &format!("secret-{i}")).map(|()| format!("secret-{i}")))
            })
            .collect();
        let accepted: Vec<String> = threads.into_iter().filter_map(|t| t.join().unwrap().ok()).collect();
        assert_eq!(accepted.len(), 1, "exactly one handshake wins: {accepted:?}");
        assert_eq!(stored_secret(&f).unwrap(), accepted[0].as_bytes(), "and its secret is the one kept");
        let audited = audit::query(&f.store, &f.scope, &audit::Filter { limit: 50, ..Default::default() }).unwrap();
        assert_eq!(audited.iter().filter(|e| e.action == "clio.webhook.handshake").count(), 1);
    }

    #[test]
    fn a_late_or_misnamed_handshake_is_refused() {
        let f = pending("41");
        assert!(matches!(shake(&f, "42", "s").unwrap_err(), WebhookError::Refused(_)), "another webhook's id");
        f.clock.advance(std::time::Duration::from_micros(HANDSHAKE_WINDOW_MICROS as u64 + 1));
        assert!(matches!(shake(&f, "41", "s").unwrap_err(), WebhookError::Refused(_)), "after the window");
        assert!(!active(&f));
        assert_eq!(stored_secret(&f), None);
        let unknown = handshake(&f.store, &f.keys, "nope", b"{}", "s", &audit::Context::default()).unwrap_err();
        assert!(matches!(unknown, WebhookError::UnknownHook), "{unknown}");
    }

    #[test]
    fn an_early_handshake_counts_only_if_clio_answers_with_its_id() {
        let f = pending("");
        shake(&f, "41", "early").unwrap();
        assert!(!active(&f), "not active before Clio's answer");
        f.store.write(|w| bind_clio_id(w, &f.scope, "ep", "99")).unwrap();
        assert!(!active(&f), "the handshake named another webhook");
        assert_eq!(stored_secret(&f), None, "its secret is discarded");
        shake(&f, "99", "genuine").unwrap();
        assert!(active(&f));
        assert_eq!(stored_secret(&f).unwrap(), b"genuine");
    }

    fn signed(secret: &str, body: &str) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn deliveries_need_an_active_subscription_and_its_id() {
        let f = pending("41");
        let body =
            json!({"data": {"id": 5, "etag": "\"e\""}, "meta": {"event": "created", "webhook_id": 41}}).to_string();
        let sign = |secret: &str| signed(secret, &body);
        let ctx = audit::Context::default();
        let keys = f.keys.current();
        let before = deliver(&f.store, &keys, "ep", body.as_bytes(), &sign("s"), &ctx).unwrap_err();
        assert!(matches!(before, WebhookError::BadSignature), "no handshake yet: {before}");
        shake(&f, "41", "s").unwrap();
        assert_eq!(deliver(&f.store, &keys, "ep", body.as_bytes(), &sign("s"), &ctx).unwrap(), Applied::Stored);
        assert!(deliver(&f.store, &keys, "ep", body.as_bytes(), &sign("x"), &ctx).is_err());
        let other = body.replace("41", "40");
        let e = deliver(&f.store, &keys, "ep", other.as_bytes(), &signed("s", &other), &ctx).unwrap_err();
        assert!(matches!(e, WebhookError::Malformed(_)), "{e}");
        let audited = audit::query(&f.store, &f.scope, &audit::Filter { limit: 10, ..Default::default() }).unwrap();
        assert_eq!(audited.iter().filter(|e| e.action == "clio.webhook.deliver").count(), 1);
    }

    /// A store and a fake Clio on one fixed clock, and a client of the fake.
    async fn with_fake() -> (Fixture, super::super::fake::FakeClio, ClioClient) {
        let f = pending("");
        let fake = super::super::fake::FakeClio::start_with_clock(3, 200, f.clock.clone()).await.unwrap();
        let http = super::super::client::http_client(std::time::Duration::from_secs(5)).unwrap();
        let tokens = fake.grant(&http).await.unwrap();
        let client = ClioClient::new(
            http,
            super::super::client::Endpoints::at(&fake.base_url()),
            fake.client_id.clone(),
            crate::secrets::Secret::new(fake.client_secret.clone()),
            tokens,
            std::sync::Arc::new(|_: &super::super::client::Tokens| Ok(())),
            std::sync::Arc::new(crate::telemetry::Metrics::default()),
            super::super::client::RetryPolicy::default(),
        );
        (f, fake, client)
    }

    /// Marks the model's subscription active (as if its handshake had come) with Clio's `id`.
    fn activate(f: &Fixture, kind: Kind, id: &str, expires_at: i64) {
        f.store
            .write(|w| {
                let mut state = get(w, &f.scope)?.unwrap_or_default();
                let sub = state.subscriptions.iter_mut().find(|s| s.kind == kind).unwrap();
                (sub.id, sub.active, sub.expires_at) = (id.to_string(), true, expires_at);
                w.put_json(&f.scope, &CLIO, KEY, &state)
            })
            .unwrap();
    }

    #[tokio::test]
    async fn upkeep_renews_replaces_what_clio_expired_and_goes_on_past_a_refusal() {
        // Loopback, port 1: the fake's handshakes go nowhere, so subscriptions stay pending until marked.
        let origin = "https://127.0.0.1:1";
        let (f, fake, client) = with_fake().await;
        f.store.write(|w| forget(w, &f.scope)).unwrap();
        fake.set_faults(|x| x.refuse_webhooks = vec![Kind::Bill]);
        let first = upkeep(&f.store, &f.scope, &client, origin).await.unwrap();
        assert_eq!(first.subscribed.len(), 5, "every model but the refused one: {first:?}");
        assert_eq!(first.failed.len(), 1);
        assert_eq!(first.failed[0].0, Kind::Bill);
        let health = f.store.read(|r| get(r, &f.scope)).unwrap().unwrap().health(Kind::Bill);
        assert!(health.last_error.unwrap_or_default().contains("403"));

        // Matters' subscription is live and expires in two days: renewed to 30.
        let matter_id =
            f.store.read(|r| get(r, &f.scope)).unwrap().unwrap().subscription(Kind::Matter).unwrap().id.clone();
        let now = f.clock.now_micros() / 1_000_000;
        activate(&f, Kind::Matter, &matter_id, now + 2 * 86_400);
        let soon = json!({"data": {"expires_at": rfc3339(now + 2 * 86_400)}});
        client.send(reqwest::Method::PATCH, &format!("/webhooks/{matter_id}.json"), &soon, Kind::Matter).await.unwrap();
        let second = upkeep(&f.store, &f.scope, &client, origin).await.unwrap();
        assert_eq!(second.renewed, [Kind::Matter]);
        let renewed = f.store.read(|r| get(r, &f.scope)).unwrap().unwrap();
        assert_eq!(renewed.subscription(Kind::Matter).unwrap().expires_at, now + LIFETIME_DAYS * 86_400);

        // Clio lets it expire: the upkeep finds it gone (404) and subscribes again.
        fake.expire_webhooks(Kind::Matter);
        let third = upkeep(&f.store, &f.scope, &client, origin).await.unwrap();
        assert_eq!(third.replaced, [Kind::Matter]);
        assert!(third.subscribed.contains(&Kind::Matter), "{third:?}");
        let health = f.store.read(|r| get(r, &f.scope)).unwrap().unwrap().health(Kind::Matter);
        assert_eq!(health.replaced, 1);
        assert!(health.last_error.unwrap_or_default().contains("no longer has it"));
    }

    #[test]
    fn secrets_are_bounded_visible_ascii() {
        assert!(acceptable_secret("abc123"));
        assert!(!acceptable_secret(""));
        assert!(!acceptable_secret(&"a".repeat(MAX_SECRET_LEN + 1)));
        assert!(!acceptable_secret("has space"));
        assert!(!acceptable_secret("naïve"));
    }
}
