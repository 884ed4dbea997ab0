//! One org's connection to Clio: the app credentials an admin configures
//! (the client secret sealed), the OAuth grant (tokens sealed), and
//! disconnection (deauthorize at Clio, delete the tokens at once, record when
//! the cached data becomes due for purge).
use super::client::{ClioClient, ClioError, Endpoints, OnRefresh, RetryPolicy, Tokens, token_request};
use crate::secrets::{Keyring, Secret, SharedKeyring};
use crate::store::{CLIO, OrgScope, Reader, SECRETS, Store, StoreError, Tx};
use crate::telemetry::Metrics;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const CLIENT_SECRET: &str = "clio.client_secret";
const TOKENS: &str = "clio.tokens";
const KEY: &[u8] = b"connection";

/// Where a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Credentials saved; no grant yet.
    Configured,
    Connected,
    Disconnected,
}

/// The stored connection (no secrets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// `us`, `ca`, `eu`, `au`, or `custom` (a proxy or the fake Clio).
    pub region: String,
    pub api_base: String,
    pub oauth_base: String,
    pub client_id: String,
    pub state: State,
    pub configured_at: i64,
    #[serde(default)]
    pub connected_at: Option<i64>,
    #[serde(default)]
    pub connected_by: Option<String>,
    #[serde(default)]
    pub disconnected_at: Option<i64>,
    /// Microseconds since the epoch; set on disconnect.
    #[serde(default)]
    pub purge_due_at: Option<i64>,
    /// With webhooks on: docket's public origin that Clio delivers to.
    #[serde(default)]
    pub webhook_origin: Option<String>,
    /// Set on a disconnect whose revocation Clio did not confirm: what went
    /// wrong, and that docket must be revoked in Clio's settings by hand.
    #[serde(default)]
    pub revocation_warning: Option<String>,
    /// Set when the firm's data was erased: no sync or webhook writes until
    /// someone starts a sync again (microseconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_stopped_at: Option<i64>,
}

impl Connection {
    pub fn endpoints(&self) -> Endpoints {
        Endpoints { api_base: self.api_base.clone(), oauth_base: self.oauth_base.clone() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("this firm is not connected to Clio; an admin connects it first")]
    NotConnected,
    #[error(transparent)]
    Clio(#[from] ClioError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Serialize, Deserialize)]
struct StoredTokens {
    access: String,
    refresh: String,
    expires_at: i64,
}

pub fn get(r: &impl Reader, scope: &OrgScope) -> Result<Option<Connection>, StoreError> {
    r.get_json(scope, &CLIO, KEY)
}

fn invalid(field: &'static str, problem: &str) -> StoreError {
    StoreError::Invalid { field, problem: problem.into() }
}

/// Saves the Clio app's credentials and region (or custom base URL), and
/// whether Clio should deliver webhooks to `webhook_origin`.
#[allow(clippy::too_many_arguments)] // the settings of a connection, named
pub fn configure(
    w: &mut Tx,
    scope: &OrgScope,
    keys: &SharedKeyring,
    region: &str,
    base_url: Option<&str>,
    client_id: &str,
    client_secret: &Secret,
    webhook_origin: Option<String>,
) -> Result<Connection, StoreError> {
    if get(w, scope)?.is_some_and(|c| c.state == State::Connected) {
        return Err(StoreError::Refused {
            problem: "the firm is connected to Clio; disconnect before changing the app".into(),
        });
    }
    let endpoints = match (region, base_url) {
        ("custom", Some(url))
            if url.starts_with("https://")
                || url.starts_with("http://127.0.0.1")
                || url.starts_with("http://localhost") =>
        {
            Endpoints::at(url)
        }
        ("custom", _) => {
            return Err(invalid(
                "base_url",
                "must be an https:// URL (plain http on loopback only) for region `custom`",
            ));
        }
        (r, None) => Endpoints::region(r).ok_or_else(|| invalid("region", "must be us, ca, eu, au or custom"))?,
        (_, Some(_)) => return Err(invalid("base_url", "is only for region `custom`")),
    };
    if client_id.trim().is_empty() || client_secret.expose().trim().is_empty() {
        return Err(invalid("client_id", "and `client_secret` are required (from the Clio developer portal)"));
    }
    let connection = Connection {
        region: region.into(),
        api_base: endpoints.api_base,
        oauth_base: endpoints.oauth_base,
        client_id: client_id.trim().into(),
        state: State::Configured,
        configured_at: w.time(),
        connected_at: None,
        connected_by: None,
        disconnected_at: None,
        purge_due_at: None,
        webhook_origin,
        revocation_warning: None,
        sync_stopped_at: None,
    };
    w.put_secret(scope, keys, CLIENT_SECRET, client_secret.expose().as_bytes())?;
    w.put_json(scope, &CLIO, KEY, &connection)?;
    Ok(connection)
}

fn client_secret(store: &Store, scope: &OrgScope, keys: &Keyring) -> Result<Secret, StoreError> {
    let bytes = store
        .read(|r| r.get_secret(scope, keys, CLIENT_SECRET))?
        .ok_or(StoreError::NotFound { what: "the Clio client secret".into() })?;
    Ok(Secret::new(String::from_utf8_lossy(bytes.expose()).into_owned()))
}

fn seal_tokens(w: &mut Tx, scope: &OrgScope, keys: &SharedKeyring, t: &Tokens) -> Result<(), StoreError> {
    let stored =
        StoredTokens { access: t.access.expose().into(), refresh: t.refresh.expose().into(), expires_at: t.expires_at };
    let json = serde_json::to_vec(&stored).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    w.put_secret(scope, keys, TOKENS, &json)
}

/// Forgets the connection and its tokens without calling Clio (the demo
/// re-points the demo firm at a freshly started fake Clio this way).
pub fn forget(w: &mut Tx, scope: &OrgScope) -> Result<(), StoreError> {
    w.delete(scope, &SECRETS, TOKENS.as_bytes())?;
    w.delete(scope, &SECRETS, CLIENT_SECRET.as_bytes())?;
    w.delete(scope, &CLIO, KEY)?;
    Ok(())
}

/// Redeems the authorization code Clio sent to `redirect_uri` and connects.
pub async fn complete(
    store: &Store,
    keys: &SharedKeyring,
    scope: &OrgScope,
    http: &reqwest::Client,
    code: &str,
    redirect_uri: &str,
) -> Result<Connection, ConnectionError> {
    let connection = store.read(|r| get(r, scope))?.ok_or(ConnectionError::NotConnected)?;
    let secret = client_secret(store, scope, &keys.current())?;
    let grant = [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect_uri)];
    let tokens = token_request(http, &connection.endpoints(), &connection.client_id, &secret, &grant, None).await?;
    let actor = scope.actor().to_string();
    Ok(store.write(|w| {
        seal_tokens(w, scope, keys, &tokens)?;
        let connected = Connection {
            state: State::Connected,
            connected_at: Some(w.time()),
            connected_by: Some(actor.clone()),
            disconnected_at: None,
            purge_due_at: None,
            revocation_warning: None,
            sync_stopped_at: None,
            ..connection.clone()
        };
        w.put_json(scope, &CLIO, KEY, &connected)?;
        Ok(connected)
    })?)
}

/// A client for the org's Clio account; refreshed tokens are sealed back into the store.
pub fn client(
    store: &Arc<Store>,
    keys: &SharedKeyring,
    scope: &OrgScope,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    policy: RetryPolicy,
) -> Result<ClioClient, ConnectionError> {
    let connection =
        store.read(|r| get(r, scope))?.filter(|c| c.state == State::Connected).ok_or(ConnectionError::NotConnected)?;
    let keyring = keys.current();
    let sealed = store.read(|r| r.get_secret(scope, &keyring, TOKENS))?.ok_or(ConnectionError::NotConnected)?;
    let t: StoredTokens =
        serde_json::from_slice(sealed.expose()).map_err(|e| StoreError::Corrupt(format!("clio tokens: {e}")))?;
    let tokens = Tokens { access: Secret::new(t.access), refresh: Secret::new(t.refresh), expires_at: t.expires_at };
    let secret = client_secret(store, scope, &keyring)?;
    let (store2, keys2, scope2) = (store.clone(), keys.clone(), scope.clone());
    let on_refresh: OnRefresh = Arc::new(move |fresh: &Tokens| {
        store2.write(|w| seal_tokens(w, &scope2, &keys2, fresh)).map_err(|e| e.to_string())
    });
    Ok(ClioClient::new(http, connection.endpoints(), connection.client_id, secret, tokens, on_refresh, metrics, policy))
}

/// Disconnects: deauthorizes at Clio (best effort; the tokens go either way),
/// deletes the tokens at once and records when the cached data is due for purge.
pub async fn disconnect(
    store: &Arc<Store>,
    keys: &SharedKeyring,
    scope: &OrgScope,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    purge_after_days: u32,
) -> Result<(Connection, Option<String>), ConnectionError> {
    let mut warning = None;
    if let Ok(c) = client(store, keys, scope, http, metrics, RetryPolicy::default())
        && let Err(e) = c.deauthorize().await
    {
        warning = Some(format!(
            "Clio did not confirm that docket's access was revoked ({e}); revoke docket in Clio's settings (Settings > Apps) to be sure"
        ));
    }
    let connection = store.write(|w| {
        let mut c = get(w, scope)?.ok_or(StoreError::NotFound { what: "a Clio connection".into() })?;
        w.delete(scope, &SECRETS, TOKENS.as_bytes())?;
        super::webhooks::forget(w, scope)?;
        super::sync::bump_generation(w, scope)?;
        let now = w.time();
        c.state = State::Disconnected;
        c.disconnected_at = Some(now);
        c.purge_due_at = Some(now + i64::from(purge_after_days) * 86_400_000_000);
        c.revocation_warning = warning.clone();
        w.put_json(scope, &CLIO, KEY, &c)?;
        Ok(c)
    })?;
    Ok((connection, warning))
}

/// Records that a disconnected firm's cached data was purged (`clio::purge`):
/// nothing is due for purge any more.
pub fn mark_purged(w: &mut Tx, scope: &OrgScope) -> Result<(), StoreError> {
    if let Some(mut c) = get(w, scope)? {
        c.purge_due_at = None;
        w.put_json(scope, &CLIO, KEY, &c)?;
    }
    Ok(())
}

/// Stops the firm's sync for good (an erasure): fences writes in flight and
/// keeps the scheduled sync and webhooks from writing until [`resume_sync`].
pub fn stop_sync(w: &mut Tx, scope: &OrgScope) -> Result<(), StoreError> {
    super::sync::bump_generation(w, scope)?;
    if let Some(mut c) = get(w, scope)? {
        c.sync_stopped_at = Some(w.time());
        w.put_json(scope, &CLIO, KEY, &c)?;
    }
    Ok(())
}

/// Whether the firm's sync was stopped by an erasure and not started since.
pub fn sync_stopped(r: &impl Reader, scope: &OrgScope) -> Result<bool, StoreError> {
    Ok(get(r, scope)?.is_some_and(|c| c.sync_stopped_at.is_some()))
}

/// Someone started the sync again after an erasure.
pub fn resume_sync(w: &mut Tx, scope: &OrgScope) -> Result<(), StoreError> {
    if let Some(mut c) = get(w, scope)?.filter(|c| c.sync_stopped_at.is_some()) {
        c.sync_stopped_at = None;
        w.put_json(scope, &CLIO, KEY, &c)?;
    }
    Ok(())
}

/// Connections started in a browser and not yet completed, by OAuth `state`.
#[derive(Default)]
pub struct PendingGrants(
    std::sync::Mutex<std::collections::HashMap<String, (crate::store::OrgId, String, std::time::Instant)>>,
);

/// How long the admin has to approve docket at Clio.
pub const GRANT_TTL: std::time::Duration = std::time::Duration::from_secs(600);

impl PendingGrants {
    /// Remembers a grant started for `org` with `redirect_uri`; returns its `state`.
    pub fn start(&self, org: crate::store::OrgId, redirect_uri: &str) -> String {
        let state = crate::auth::random_token(24);
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, (_, _, at)| at.elapsed() < GRANT_TTL);
        all.insert(state.clone(), (org, redirect_uri.to_string(), std::time::Instant::now()));
        state
    }

    /// The org and redirect URI of `state`, once; `None` if unknown, used or expired.
    pub fn take(&self, state: &str) -> Option<(crate::store::OrgId, String)> {
        let found = self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(state)?;
        (found.2.elapsed() < GRANT_TTL).then_some((found.0, found.1))
    }
}
