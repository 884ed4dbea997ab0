//! `/clio`: the firm's connection to Clio and its sync.
use super::auth::Caller;
use super::problem::{ApiError, ApiResult, Code};
use super::types::{Optional, Text};
use crate::auth::Permission;
use crate::clio::connection::{self, Connection, ConnectionError, State};
use crate::clio::{sync, webhooks};
use crate::clock::{micros_to_datetime, rfc3339};
use crate::data::{self, Viewer};
use crate::records::Kind;
use crate::secrets::Secret;
use crate::state::AppState;
use crate::timestamp::Timestamp;
use poem::Request;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use std::sync::Arc;

#[derive(Tags)]
enum Tag {
    /// The connection to Clio and its sync.
    Clio,
}

pub struct ClioApi {
    pub state: Arc<AppState>,
}

/// The Clio app docket connects as (from Clio's developer portal).
#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct ConnectionSettings {
    /// The Clio region, `us`, `ca`, `eu` or `au` (it picks the host), or the
    /// origin of a proxy serving `/oauth` and `/api/v4` (https, or http on loopback).
    #[oai(validator(
        max_length = 200,
        pattern = r"^(us|ca|eu|au|https://[A-Za-z0-9.-]+(:[0-9]{1,5})?|http://(127\.0\.0\.1|localhost)(:[0-9]{1,5})?)$"
    ))]
    pub location: Text,
    #[oai(validator(min_length = 1, max_length = 200, pattern = r"^[\x21-\x7e]+$"))]
    pub client_id: Text,
    /// Have Clio push changes to docket within seconds (needs docket reachable
    /// from Clio at its public address); the schedule keeps polling either way.
    pub webhooks: Optional<bool>,
    /// Sealed at rest; never shown again.
    #[oai(validator(min_length = 1, max_length = 500, pattern = r"^[\x21-\x7e]+$"))]
    pub client_secret: Text,
}

/// The connection as the API shows it.
#[derive(Object)]
#[oai(rename = "ClioConnection", skip_serializing_if_is_none)]
pub struct ConnectionView {
    /// `not_configured`, `configured`, `connected` or `disconnected`.
    pub state: String,
    pub region: Option<String>,
    pub api_base: Option<String>,
    pub client_id: Option<String>,
    /// RFC 3339.
    pub connected_at: Option<String>,
    pub connected_by: Option<String>,
    pub disconnected_at: Option<String>,
    /// When the cached Clio data is due for purge after a disconnect.
    pub purge_due_at: Option<String>,
    /// Whether a sync is running now.
    pub syncing: bool,
    /// A problem worth knowing, e.g. Clio's deauthorize failed.
    pub warning: Option<String>,
    /// With webhooks on: the URL Clio delivers each subscription to. Each is a
    /// capability, shown only to callers with `clio:manage`.
    pub webhook_urls: Option<Vec<String>>,
    /// With webhooks on: how many subscriptions completed their handshake.
    pub webhooks_active: Option<u32>,
    /// After a disconnect: whether Clio confirmed that docket's grant was revoked.
    pub revocation_confirmed: Option<bool>,
}

/// Where the sync of one kind stands.
#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct KindStatus {
    pub kind: String,
    /// Records held now.
    pub records: u64,
    pub pages_fetched: u64,
    pub records_written: u64,
    pub records_skipped: u64,
    pub records_deleted: u64,
    /// Whether a pass is part-way (it resumes where it stopped).
    pub in_progress: bool,
    pub full_sync_done: bool,
    /// RFC 3339.
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// RFC 3339: every change Clio made before this (less a 5-minute overlap) is synced.
    pub synced_through: Option<String>,
    /// Deletions the last listing found but held back: more than
    /// `clio.max_delete_share` of the kind. They go ahead when a second
    /// listing agrees, or after `POST /clio/sync/confirm-deletions`.
    pub held_deletions: Option<u64>,
    /// RFC 3339: when the listing that found the held deletions began.
    pub held_since: Option<String>,
    /// Whether an admin confirmed the held deletions (the next listing applies them).
    pub held_confirmed: Option<bool>,
    /// Times Clio refused a saved page link (its page token expired) and the
    /// listing started again from its watermark; the latest time and why.
    pub listing_restarts: u64,
    pub last_restart_at: Option<String>,
    pub last_restart_reason: Option<String>,
    /// Records the reconcile fetched because Clio lists them and the store
    /// lacked them (restored in Clio) or held another etag (an edit stamped
    /// behind the watermark).
    pub records_refetched: u64,
}

/// One model's webhook subscription and how it fares.
#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct WebhookStatus {
    pub model: String,
    /// Whether deliveries are applied now (handshake done, not suspended or expired).
    pub active: bool,
    /// Clio's status at the last check: `pending`, `enabled` or `suspended`.
    pub clio_status: Option<String>,
    /// RFC 3339: when the subscription expires (renewed three days before).
    pub expires_at: Option<String>,
    /// RFC 3339: when the last delivery was applied.
    pub last_delivery_at: Option<String>,
    /// The last problem of this model's webhook (a failed renewal, a
    /// replacement because Clio suspended or forgot it); cleared when a check succeeds.
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// Subscriptions replaced because Clio suspended, expired or forgot them.
    pub replaced: u64,
}

/// Held deletions an admin confirmed, per kind.
#[derive(Object)]
pub struct ConfirmedKind {
    pub kind: String,
    pub deletions: u64,
}

/// What `confirm-deletions` confirmed; a deletion reconcile starts in the background.
#[derive(Object)]
pub struct DeletionsConfirmed {
    pub confirmed: Vec<ConfirmedKind>,
}

/// The sync of every kind.
#[derive(Object)]
pub struct SyncStatus {
    pub running: bool,
    pub kinds: Vec<KindStatus>,
    /// Per webhook model, when the firm's connection uses webhooks (else empty).
    pub webhooks: Vec<WebhookStatus>,
}

/// A sync was asked for.
#[derive(Object)]
pub struct SyncStarted {
    pub started: bool,
}

#[derive(ApiResponse)]
enum Redirect {
    /// Go on at `Location`.
    #[oai(status = 303)]
    SeeOther(#[oai(header = "location")] String),
}

#[derive(ApiResponse)]
enum ConfirmAccepted {
    /// The next listing of each kind applies the deletions; follow it at `GET /clio/sync`.
    #[oai(status = 202)]
    Accepted(Json<DeletionsConfirmed>),
}

#[derive(ApiResponse)]
enum Accepted {
    /// The sync starts in the background; follow it at `GET /clio/sync`.
    #[oai(status = 202)]
    Accepted(Json<SyncStarted>),
}

fn time(micros: i64) -> String {
    rfc3339(micros_to_datetime(micros))
}

fn view(c: Option<Connection>, syncing: bool, warning: Option<String>) -> ConnectionView {
    let Some(c) = c else {
        return ConnectionView {
            state: "not_configured".into(),
            region: None,
            api_base: None,
            client_id: None,
            connected_at: None,
            connected_by: None,
            disconnected_at: None,
            purge_due_at: None,
            syncing,
            warning,
            webhook_urls: None,
            webhooks_active: None,
            revocation_confirmed: None,
        };
    };
    let state = match c.state {
        State::Configured => "configured",
        State::Connected => "connected",
        State::Disconnected => "disconnected",
    };
    ConnectionView {
        state: state.into(),
        region: Some(c.region),
        api_base: Some(c.api_base),
        client_id: Some(c.client_id),
        connected_at: c.connected_at.map(time),
        connected_by: c.connected_by,
        disconnected_at: c.disconnected_at.map(time),
        purge_due_at: c.purge_due_at.map(time),
        syncing,
        warning: warning.or(c.revocation_warning.clone()),
        revocation_confirmed: c.disconnected_at.map(|_| c.revocation_warning.is_none()),
        webhook_urls: None,
        webhooks_active: None,
    }
}

/// Adds the webhook figures; the endpoint URLs only for `show_urls` (`clio:manage`).
fn with_webhooks(
    mut v: ConnectionView,
    origin: Option<&str>,
    hooks: Option<webhooks::Webhooks>,
    show_urls: bool,
) -> ConnectionView {
    if let (Some(origin), Some(h)) = (origin, hooks) {
        let live = h.subscriptions.iter().filter(|s| s.active);
        v.webhooks_active = Some(live.clone().count() as u32);
        v.webhook_urls = show_urls.then(|| live.map(|s| webhooks::url(origin, s)).collect());
    }
    v
}

impl From<ConnectionError> for ApiError {
    fn from(e: ConnectionError) -> Self {
        match e {
            ConnectionError::NotConnected => ApiError::new(Code::Conflict, e.to_string()),
            ConnectionError::Clio(c) => ApiError::new(Code::UpstreamUnavailable, c.to_string()),
            ConnectionError::Store(s) => s.into(),
        }
    }
}

const CALLBACK: &str = "/clio/callback";

#[OpenApi(prefix_path = "/clio", tag = "Tag::Clio")]
impl ClioApi {
    /// The Clio connection
    ///
    /// Requires permission `org:read`.
    #[oai(path = "/connection", method = "get", operation_id = "clio.connection")]
    async fn connection(&self, auth: Caller) -> ApiResult<Json<ConnectionView>> {
        let p = auth.require(Permission::OrgRead)?;
        let (c, hooks) = self
            .state
            .store
            .read(|r| Ok((connection::get(r, p.scope())?, webhooks::get(r, p.scope())?)))
            .map_err(ApiError::from)?;
        let origin = c.as_ref().and_then(|c| c.webhook_origin.clone());
        let show_urls = p.can(Permission::ClioManage);
        let v = view(c, self.state.sync.is_running(p.scope().org()), None);
        Ok(Json(with_webhooks(v, origin.as_deref(), hooks, show_urls)))
    }

    /// Set the Clio app
    ///
    /// Saves the Clio app's id and secret (sealed) and the region. Then
    /// `GET /clio/connect` in a browser grants docket access.
    ///
    /// Requires permission `clio:manage`.
    #[oai(path = "/connection", method = "put", operation_id = "clio.configure")]
    async fn configure(
        &self,
        req: &Request,
        auth: Caller,
        body: Json<ConnectionSettings>,
    ) -> ApiResult<Json<ConnectionView>> {
        let p = auth.require(Permission::ClioManage)?;
        let b = body.0;
        let (region, base_url) = match b.location.0.as_str() {
            r @ ("us" | "ca" | "eu" | "au") => (r.to_string(), None),
            url => ("custom".to_string(), Some(url.to_string())),
        };
        let region = region.as_str();
        let secret = Secret::new(b.client_secret.0);
        let details = serde_json::json!({"region": region, "base_url": base_url, "client_id": b.client_id.0});
        let keys = self.state.keys.clone();
        let webhook_origin = b.webhooks.0.unwrap_or(false).then(|| super::site_origin(req));
        let c = super::audited(&self.state, req, p, "clio.configure", "clio", details, |w| {
            connection::configure(
                w,
                p.scope(),
                &keys,
                region,
                base_url.as_deref(),
                &b.client_id.0,
                &secret,
                webhook_origin,
            )
        })?;
        Ok(Json(view(Some(c), false, None)))
    }

    /// Connect to Clio
    ///
    /// Sends the browser to Clio to approve docket; Clio sends it back to the callback.
    ///
    /// Requires permission `clio:manage`.
    #[oai(path = "/connect", method = "get", operation_id = "clio.connect")]
    async fn connect(&self, req: &Request, auth: Caller) -> ApiResult<Redirect> {
        let p = auth.require(Permission::ClioManage)?;
        let c = self.state.store.read(|r| connection::get(r, p.scope())).map_err(ApiError::from)?;
        let c =
            c.ok_or_else(|| ApiError::new(Code::Conflict, "set the Clio app first (PUT /api/v1/clio/connection)"))?;
        let redirect_uri = format!("{}{}{CALLBACK}", super::site_origin(req), super::BASE);
        let state = self.state.clio_grants.start(p.scope().org(), &redirect_uri);
        let mut url = url::Url::parse(&format!("{}/oauth/authorize", c.oauth_base))
            .map_err(|e| ApiError::new(Code::Conflict, format!("the Clio URL is unusable: {e}")))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &c.client_id)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("state", &state)
            .append_pair("redirect_on_decline", "true");
        Ok(Redirect::SeeOther(url.to_string()))
    }

    /// Finish connecting to Clio
    ///
    /// Clio redirects the browser here after the admin approved (or declined).
    ///
    /// Requires permission `clio:manage`.
    #[oai(path = "/callback", method = "get", operation_id = "clio.callback")]
    async fn callback(
        &self,
        req: &Request,
        auth: Caller,
        code: Query<Option<String>>,
        state: Query<Option<String>>,
        error: Query<Option<String>>,
    ) -> ApiResult<Redirect> {
        let p = auth.require(Permission::ClioManage)?;
        let pending = state.0.as_deref().and_then(|s| self.state.clio_grants.take(s));
        let Some((org, redirect_uri)) = pending.filter(|(org, _)| *org == p.scope().org()) else {
            return Err(ApiError::new(
                Code::NotFound,
                "no connection was started with this `state` (unknown, used or expired); start again at GET /api/v1/clio/connect",
            ));
        };
        if let Some(error) = error.0 {
            return Err(ApiError::new(
                Code::Conflict,
                format!(
                    "Clio answered `{error}`: the connection was not approved; start again at GET /api/v1/clio/connect"
                ),
            ));
        }
        let code = code.0.ok_or_else(|| ApiError::new(Code::BadRequest, "the `code` parameter is missing"))?;
        let http = self.state.sync.http().clone();
        let connected =
            connection::complete(&self.state.store, &self.state.keys, p.scope(), &http, &code, &redirect_uri).await?;
        let details = serde_json::json!({"api_base": connected.api_base});
        super::audited(&self.state, req, p, "clio.connect", "clio", details, |_| Ok(()))?;
        self.state.sync.ensure(org);
        Ok(Redirect::SeeOther("/".into()))
    }

    /// Disconnect from Clio
    ///
    /// Revokes docket at Clio, deletes the tokens at once, stops the sync, and
    /// sets the date the cached data becomes due for purge.
    ///
    /// Requires permission `clio:manage`.
    #[oai(path = "/connection", method = "delete", operation_id = "clio.disconnect")]
    async fn disconnect(&self, req: &Request, auth: Caller) -> ApiResult<Json<ConnectionView>> {
        let p = auth.require(Permission::ClioManage)?;
        self.state.sync.stop(p.scope().org()).await;
        let http = self.state.sync.http().clone();
        let days = self.state.config.clio.purge_after_days;
        let (c, warning) = connection::disconnect(
            &self.state.store,
            &self.state.keys,
            p.scope(),
            http,
            self.state.metrics.clone(),
            days,
        )
        .await?;
        let details = serde_json::json!({"purge_due_at": c.purge_due_at, "warning": warning});
        super::audited(&self.state, req, p, "clio.disconnect", "clio", details, |_| Ok(()))?;
        Ok(Json(view(Some(c), false, warning)))
    }

    /// Sync now
    ///
    /// Requires permission `clio:manage`.
    #[oai(path = "/sync", method = "post", operation_id = "clio.sync_now")]
    async fn sync_now(&self, auth: Caller) -> ApiResult<Accepted> {
        let p = auth.require(Permission::ClioManage)?;
        let connected = self
            .state
            .store
            .read(|r| connection::get(r, p.scope()))
            .map_err(ApiError::from)?
            .is_some_and(|c| c.state == State::Connected);
        if !connected {
            return Err(ConnectionError::NotConnected.into());
        }
        // Starting a sync by hand is what ends the stop an erasure left.
        self.state.store.write(|w| connection::resume_sync(w, p.scope())).map_err(ApiError::from)?;
        Ok(Accepted::Accepted(Json(SyncStarted { started: self.state.sync.sync_now(p.scope().org()) })))
    }

    /// Sync status
    ///
    /// Record counts are what the caller may see: records walled off from them are not counted.
    ///
    /// Requires permission `org:read`.
    #[oai(path = "/sync", method = "get", operation_id = "clio.sync_status")]
    async fn sync_status(&self, auth: Caller) -> ApiResult<Json<SyncStatus>> {
        let p = auth.require(Permission::OrgRead)?.clone();
        let kinds = super::off_worker(&self.state.store, move |store| {
            let viewer = Viewer::of(store, &p)?;
            // One snapshot: every kind's progress and count agree with each other.
            Ok(store.read(|r| {
                let status =
                    |kind| Ok(kind_status(kind, data::count(r, &viewer, kind)?, sync::progress(r, p.scope(), kind)?));
                let kinds = Kind::ALL.into_iter().map(status).collect::<Result<Vec<_>, crate::store::StoreError>>()?;
                Ok((kinds, webhook_statuses(webhooks::get(r, p.scope())?)))
            })?)
        })
        .await?;
        let (kinds, webhooks) = kinds;
        Ok(Json(SyncStatus { running: self.state.sync.is_running(auth.0.scope().org()), kinds, webhooks }))
    }

    /// Confirm held deletions
    ///
    /// A deletion reconcile that would delete more than `clio.max_delete_share`
    /// of a kind keeps the records and reports `held_deletions`. Confirming lets
    /// the next listing of each such kind delete them (if it finds no more than
    /// were held plus the usual allowance); that listing starts now. Audited.
    ///
    /// Requires permission `clio:manage`.
    #[oai(path = "/sync/confirm-deletions", method = "post", operation_id = "clio.confirm_deletions")]
    async fn confirm_deletions(&self, req: &Request, auth: Caller) -> ApiResult<ConfirmAccepted> {
        let p = auth.require(Permission::ClioManage)?;
        let by = p.scope().actor().to_string();
        let confirmed =
            super::audited(&self.state, req, p, "clio.confirm_deletions", "clio", serde_json::json!({}), |w| {
                let confirmed = sync::confirm_held(w, p.scope(), &by)?;
                if confirmed.is_empty() {
                    return Err(crate::store::StoreError::Refused {
                        problem: "no deletions are held; GET /api/v1/clio/sync shows `held_deletions` when there are"
                            .into(),
                    });
                }
                Ok(confirmed)
            })?;
        self.state.sync.reconcile_now(p.scope().org());
        let confirmed =
            confirmed.into_iter().map(|(k, n)| ConfirmedKind { kind: k.as_str().into(), deletions: n }).collect();
        Ok(ConfirmAccepted::Accepted(Json(DeletionsConfirmed { confirmed })))
    }
}

fn kind_status(kind: Kind, records: u64, p: sync::Progress) -> KindStatus {
    KindStatus {
        kind: kind.as_str().into(),
        records,
        pages_fetched: p.pages,
        records_written: p.stored,
        records_skipped: p.skipped,
        records_deleted: p.deleted,
        in_progress: p.in_progress,
        full_sync_done: p.full_done,
        last_success_at: p.last_success_at.map(time),
        last_error: p.last_error,
        last_error_at: p.last_error_at.map(time),
        synced_through: p.synced_through.map(Timestamp::to_rfc3339),
        held_deletions: p.held.as_ref().map(|h| h.count),
        held_since: p.held.as_ref().map(|h| h.listed_at.to_rfc3339()),
        held_confirmed: p.held.as_ref().map(|h| h.confirmed_by.is_some()),
        listing_restarts: p.restarts,
        last_restart_at: p.last_restart_at.map(time),
        last_restart_reason: p.last_restart_reason,
        records_refetched: p.refetched,
    }
}

fn webhook_statuses(state: Option<webhooks::Webhooks>) -> Vec<WebhookStatus> {
    let Some(state) = state else { return vec![] };
    let status = |(kind, model): (Kind, &str)| {
        let sub = state.subscription(kind);
        let health = state.health(kind);
        WebhookStatus {
            model: model.into(),
            active: sub.is_some_and(|s| s.active),
            clio_status: health.clio_status,
            expires_at: sub.map(|s| time(s.expires_at.saturating_mul(1_000_000))),
            last_delivery_at: health.last_delivery_at.map(time),
            last_error: health.last_error,
            last_error_at: health.last_error_at.map(time),
            replaced: health.replaced,
        }
    };
    webhooks::MODELS.into_iter().map(status).collect()
}
