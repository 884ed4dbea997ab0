//! `/webhooks`: the firm's outbound webhook endpoints and their deliveries
//! (see [`crate::outbound`]). Every change is audited; secrets are shown once.
use super::auth::Caller;
use super::changes::refuse_unknown;
use super::params::{Id, Limit};
use super::problem::{ApiError, ApiResult, Code};
use super::types::{Optional, Text};
use crate::auth::Permission;
use crate::clock::{micros_to_datetime, rfc3339};
use crate::outbound::{self, Attempt, Delivery, Endpoint, Event, Settings, State};
use crate::records::Kind;
use crate::state::AppState;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, Tags};
use std::sync::Arc;

#[derive(Tags)]
enum Tag {
    /// Outbound webhooks: docket POSTs the firm's record changes to your HTTPS endpoints.
    Webhooks,
}

pub struct WebhooksApi {
    pub state: Arc<AppState>,
}

/// A record kind.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename = "RecordKind", rename_all = "snake_case")]
pub enum KindView {
    Matter,
    Contact,
    Activity,
    Bill,
    User,
    Task,
    CalendarEntry,
    Note,
}

impl KindView {
    fn kind(self) -> Kind {
        match self {
            KindView::Matter => Kind::Matter,
            KindView::Contact => Kind::Contact,
            KindView::Activity => Kind::Activity,
            KindView::Bill => Kind::Bill,
            KindView::User => Kind::User,
            KindView::Task => Kind::Task,
            KindView::CalendarEntry => Kind::CalendarEntry,
            KindView::Note => Kind::Note,
        }
    }

    pub fn of(kind: Kind) -> KindView {
        match kind {
            Kind::Matter => KindView::Matter,
            Kind::Contact => KindView::Contact,
            Kind::Activity => KindView::Activity,
            Kind::Bill => KindView::Bill,
            Kind::User => KindView::User,
            Kind::Task => KindView::Task,
            Kind::CalendarEntry => KindView::CalendarEntry,
            Kind::Note => KindView::Note,
        }
    }
}

/// A change event.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename = "WebhookEvent", rename_all = "snake_case")]
pub enum EventView {
    /// A record was created or changed.
    Upsert,
    /// A record was deleted.
    Delete,
}

impl EventView {
    fn event(self) -> Event {
        match self {
            EventView::Upsert => Event::Upsert,
            EventView::Delete => Event::Delete,
        }
    }

    fn of(event: Event) -> EventView {
        match event {
            Event::Upsert => EventView::Upsert,
            Event::Delete => EventView::Delete,
        }
    }
}

/// A delivery's state.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename = "DeliveryState", rename_all = "snake_case")]
pub enum StateView {
    /// Waiting for its first or next attempt.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Every attempt failed (8).
    Failed,
}

/// An endpoint.
#[derive(Object)]
#[oai(rename = "WebhookEndpoint", skip_serializing_if_is_none)]
pub struct EndpointView {
    /// e.g. `whk_1a2b3c4d5e6f`.
    pub id: String,
    /// Where deliveries are POSTed (https).
    pub url: String,
    /// Kinds delivered; empty means all.
    pub kinds: Vec<KindView>,
    /// Events delivered; empty means all.
    pub events: Vec<EventView>,
    pub description: String,
    /// Whether deliveries are queued and sent (a disabled endpoint keeps its place and catches up when enabled).
    pub enabled: bool,
    /// RFC 3339 UTC.
    pub created_at: String,
    pub created_by: String,
    /// RFC 3339 UTC.
    pub updated_at: String,
    /// Set when the endpoint fell more than the feed's window behind and
    /// skipped changes (resynchronise from the change feed), RFC 3339 UTC.
    pub missed_changes_at: Option<String>,
    /// The signing secret: only in the answer that created or rotated it.
    pub secret: Option<String>,
}

fn time(micros: i64) -> String {
    rfc3339(micros_to_datetime(micros))
}

fn view(e: Endpoint, missed_at: Option<i64>, secret: Option<String>) -> EndpointView {
    EndpointView {
        id: e.id,
        url: e.url,
        kinds: e.kinds.into_iter().map(KindView::of).collect(),
        events: e.events.into_iter().map(EventView::of).collect(),
        description: e.description,
        enabled: e.enabled,
        created_at: time(e.created_at),
        created_by: e.created_by,
        updated_at: time(e.updated_at),
        missed_changes_at: missed_at.map(time),
        secret,
    }
}

/// A new endpoint.
#[derive(Object)]
#[oai(rename = "WebhookCreate", deny_unknown_fields)]
pub struct CreateBody {
    /// `https://…`, at most 2048 characters, without credentials.
    #[oai(validator(max_length = 2048))]
    pub url: Text,
    /// Kinds to deliver (default all).
    #[oai(validator(max_items = 8))]
    pub kinds: Optional<Vec<KindView>>,
    /// Events to deliver (default all).
    #[oai(validator(max_items = 2))]
    pub events: Optional<Vec<EventView>>,
    #[oai(validator(max_length = 200))]
    pub description: Optional<Text>,
    /// Default true.
    pub enabled: Optional<bool>,
}

/// Changes to an endpoint (absent fields are unchanged).
#[derive(Object)]
#[oai(rename = "WebhookUpdate", deny_unknown_fields)]
pub struct UpdateBody {
    #[oai(validator(max_length = 2048))]
    pub url: Optional<Text>,
    #[oai(validator(max_items = 8))]
    pub kinds: Optional<Vec<KindView>>,
    #[oai(validator(max_items = 2))]
    pub events: Optional<Vec<EventView>>,
    #[oai(validator(max_length = 200))]
    pub description: Optional<Text>,
    pub enabled: Optional<bool>,
}

/// The firm's endpoints.
#[derive(Object)]
#[oai(rename = "WebhookEndpointList", skip_serializing_if_is_none)]
pub struct EndpointList {
    pub items: Vec<EndpointView>,
    /// Always absent: every endpoint (at most 20) is on one page.
    pub next_cursor: Option<String>,
}

/// One attempt.
#[derive(Object)]
#[oai(rename = "DeliveryAttempt", skip_serializing_if_is_none)]
pub struct AttemptView {
    /// RFC 3339 UTC.
    pub at: String,
    /// The HTTP status the endpoint answered.
    pub status: Option<u16>,
    /// Why the attempt failed.
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// One change sent (or to send) to one endpoint.
#[derive(Object)]
#[oai(rename = "Delivery", skip_serializing_if_is_none)]
pub struct DeliveryView {
    /// The id in the payload and in the `Docket-Delivery` header.
    pub id: String,
    /// The change's commit sequence number.
    pub seq: u64,
    pub kind: KindView,
    pub record_id: String,
    pub event: EventView,
    pub state: StateView,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// When the next attempt is due (pending only), RFC 3339 UTC.
    pub next_attempt_at: Option<String>,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptView>,
}

fn delivery_view(d: Delivery) -> DeliveryView {
    DeliveryView {
        id: d.id,
        seq: d.seq,
        kind: KindView::of(d.kind),
        record_id: d.record_id,
        event: EventView::of(d.event),
        state: match d.state {
            State::Pending => StateView::Pending,
            State::Delivered => StateView::Delivered,
            State::Failed => StateView::Failed,
        },
        created_at: time(d.created_at),
        next_attempt_at: d.next_attempt_at.map(time),
        attempts: d
            .attempts
            .into_iter()
            .map(|a: Attempt| AttemptView {
                at: time(a.at),
                status: a.status,
                error: a.error,
                duration_ms: a.duration_ms,
            })
            .collect(),
    }
}

/// A page of deliveries, newest first.
#[derive(Object)]
#[oai(rename = "DeliveryPage", skip_serializing_if_is_none)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryView>,
    /// Pass as `cursor` for older deliveries; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
enum Created {
    /// Registered; it receives changes committed from now on. `secret` is shown this once.
    #[oai(status = 201)]
    Created(Json<EndpointView>),
}

#[derive(ApiResponse)]
enum Deleted {
    /// Removed, with its queue, history and secret.
    #[oai(status = 204)]
    NoContent,
}

fn settings(
    url: Option<Text>,
    kinds: Optional<Vec<KindView>>,
    events: Optional<Vec<EventView>>,
    description: Optional<Text>,
    enabled: Optional<bool>,
) -> Settings {
    Settings {
        url: url.map(|t| t.0),
        kinds: kinds.0.map(|k| k.into_iter().map(KindView::kind).collect()),
        events: events.0.map(|e| e.into_iter().map(EventView::event).collect()),
        description: description.0.map(|t| t.0),
        enabled: enabled.0,
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(Code::NotFound, format!("webhook endpoint `{id}` was not found"))
}

/// The delivery cursor: the seq the previous page ended at, as digits.
fn parse_before(cursor: Option<String>) -> ApiResult<Option<u64>> {
    cursor
        .map(|c| {
            c.strip_prefix("d").and_then(|n| n.parse::<u64>().ok()).ok_or_else(|| {
                ApiError::field(
                    Code::BadRequest,
                    "cursor",
                    "`cursor` is not a cursor this API gave; pass the `next_cursor` of the previous page unchanged",
                )
            })
        })
        .transpose()
}

#[OpenApi(prefix_path = "/webhooks", tag = "Tag::Webhooks")]
impl WebhooksApi {
    /// List webhook endpoints
    ///
    /// Requires permission `webhooks:manage`.
    #[oai(path = "/", method = "get", operation_id = "webhooks.list")]
    async fn list(&self, req: &Request, auth: Caller) -> ApiResult<Json<EndpointList>> {
        let p = auth.require(Permission::WebhooksManage)?;
        refuse_unknown(req, &[])?;
        let items = self.state.store.read(|r| {
            outbound::list(r, p.scope())?
                .into_iter()
                .map(|e| {
                    let missed = outbound::progress(r, p.scope(), &e.id)?.missed_at;
                    Ok(view(e, missed, None))
                })
                .collect::<Result<Vec<_>, _>>()
        })?;
        Ok(Json(EndpointList { items, next_cursor: None }))
    }

    /// Register a webhook endpoint
    ///
    /// docket POSTs each matching change committed from now on to `url`,
    /// signed with the returned `secret` (shown only here): header
    /// `Docket-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
    /// Deliveries act for the firm: ethical walls do not apply. At most 20 per firm.
    ///
    /// Requires permission `webhooks:manage`.
    #[oai(path = "/", method = "post", operation_id = "webhooks.create")]
    async fn create(&self, req: &Request, auth: Caller, body: Json<CreateBody>) -> ApiResult<Created> {
        let p = auth.require(Permission::WebhooksManage)?;
        let b = body.0;
        let new = settings(Some(b.url), b.kinds, b.events, b.description, b.enabled);
        let details = serde_json::json!({"url": new.url});
        let keys = self.state.keys.current();
        let private = self.state.config.webhooks.allow_private_networks;
        let head = self.state.store.journal_head()?;
        let by = p.actor().to_string();
        let (endpoint, secret) = super::audited(&self.state, req, p, "webhook.create", "webhooks", details, |w| {
            outbound::create(w, p.scope(), keys.as_ref(), &new, &by, private, head)
        })?;
        Ok(Created::Created(Json(view(endpoint, None, Some(secret)))))
    }

    /// Get a webhook endpoint
    ///
    /// Requires permission `webhooks:manage`.
    #[oai(path = "/:id", method = "get", operation_id = "webhooks.get")]
    async fn get(&self, req: &Request, auth: Caller, id: Path<Id>) -> ApiResult<Json<EndpointView>> {
        let p = auth.require(Permission::WebhooksManage)?;
        refuse_unknown(req, &[])?;
        let found = self.state.store.read(|r| {
            let Some(e) = outbound::get(r, p.scope(), &id.0)? else { return Ok(None) };
            Ok(Some((e, outbound::progress(r, p.scope(), &id.0)?.missed_at)))
        })?;
        let (e, missed) = found.ok_or_else(|| not_found(&id.0))?;
        Ok(Json(view(e, missed, None)))
    }

    /// Change a webhook endpoint
    ///
    /// Requires permission `webhooks:manage`.
    #[oai(path = "/:id", method = "patch", operation_id = "webhooks.update")]
    async fn update(
        &self,
        req: &Request,
        auth: Caller,
        id: Path<Id>,
        body: Json<UpdateBody>,
    ) -> ApiResult<Json<EndpointView>> {
        let p = auth.require(Permission::WebhooksManage)?;
        let b = body.0;
        let change = settings(b.url.0, b.kinds, b.events, b.description, b.enabled);
        let private = self.state.config.webhooks.allow_private_networks;
        let details = serde_json::json!({"url": change.url, "enabled": change.enabled});
        let target = format!("webhook:{}", id.0);
        let e = super::audited(&self.state, req, p, "webhook.update", &target, details, |w| {
            outbound::update(w, p.scope(), &id.0, &change, private)
        })?;
        Ok(Json(view(e, None, None)))
    }

    /// Remove a webhook endpoint
    ///
    /// Its queued deliveries are dropped with it.
    ///
    /// Requires permission `webhooks:manage`.
    #[oai(path = "/:id", method = "delete", operation_id = "webhooks.delete")]
    async fn delete(&self, req: &Request, auth: Caller, id: Path<Id>) -> ApiResult<Deleted> {
        let p = auth.require(Permission::WebhooksManage)?;
        let target = format!("webhook:{}", id.0);
        super::audited(&self.state, req, p, "webhook.delete", &target, serde_json::json!({}), |w| {
            outbound::delete(w, p.scope(), &id.0)
        })?;
        Ok(Deleted::NoContent)
    }

    /// Rotate a webhook endpoint's secret
    ///
    /// The old secret stops signing at once; the answer shows the new one this once.
    ///
    /// Requires permission `webhooks:manage`.
    #[oai(path = "/:id/rotate-secret", method = "post", operation_id = "webhooks.rotate_secret")]
    async fn rotate(&self, req: &Request, auth: Caller, id: Path<Id>) -> ApiResult<Json<EndpointView>> {
        let p = auth.require(Permission::WebhooksManage)?;
        let keys = self.state.keys.current();
        let target = format!("webhook:{}", id.0);
        let (e, secret) =
            super::audited(&self.state, req, p, "webhook.rotate_secret", &target, serde_json::json!({}), |w| {
                let secret = outbound::rotate_secret(w, p.scope(), keys.as_ref(), &id.0)?;
                let e = outbound::get(w, p.scope(), &id.0)?.ok_or_else(|| crate::store::StoreError::NotFound {
                    what: format!("webhook endpoint `{}`", id.0),
                })?;
                Ok((e, secret))
            })?;
        Ok(Json(view(e, None, Some(secret))))
    }

    /// List a webhook endpoint's deliveries
    ///
    /// Queued and finished deliveries, newest first, each with its attempts
    /// (the last 1000 finished ones are kept).
    ///
    /// Requires permission `webhooks:manage`.
    #[oai(path = "/:id/deliveries", method = "get", operation_id = "webhooks.deliveries")]
    async fn deliveries(
        &self,
        req: &Request,
        auth: Caller,
        id: Path<Id>,
        /// The `next_cursor` of the previous page.
        #[oai(validator(max_length = 20, pattern = r"^d[0-9]{1,19}$"))]
        cursor: Query<Option<String>>,
        /// Deliveries per page, 1 to 500 (default 100).
        limit: Query<Option<Limit<500>>>,
    ) -> ApiResult<Json<DeliveryPage>> {
        let p = auth.require(Permission::WebhooksManage)?.clone();
        refuse_unknown(req, &["cursor", "limit"])?;
        let before = parse_before(cursor.0)?;
        let limit = Limit::or(limit.0, 100);
        let id = id.0.0;
        let (page, next) = super::off_worker(&self.state.store, move |store| {
            let found = store.read(|r| outbound::deliveries(r, p.scope(), &id, before, limit));
            match found {
                Err(crate::store::StoreError::NotFound { .. }) => Err(not_found(&id)),
                other => Ok(other?),
            }
        })
        .await?;
        Ok(Json(DeliveryPage {
            items: page.into_iter().map(delivery_view).collect(),
            next_cursor: next.map(|seq| format!("d{seq}")),
        }))
    }
}
