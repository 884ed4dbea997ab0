//! `/audit`: the org's tamper-evident audit trail, for auditors and admins.
use super::auth::Caller;
use super::page::{self, Page, PageLimit};
use super::params::{Cursor, DateTime};
use super::problem::{ApiError, ApiResult};
use crate::audit::{self, Event, Filter, Outcome};
use crate::auth::{Permission, Principal};
use crate::clock::{micros_to_datetime, rfc3339};
use crate::state::AppState;
use poem::Request;
use poem_openapi::param::Query;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, Tags};
use std::sync::Arc;

/// Most events one export returns.
const EXPORT_MAX: usize = 100_000;

#[derive(Tags)]
enum Tag {
    /// The tamper-evident audit trail.
    Audit,
}

pub struct AuditApi {
    pub state: Arc<AppState>,
}

/// Outcome of an audited action.
#[derive(Enum, Clone, Copy)]
#[oai(rename_all = "lowercase")]
pub enum OutcomeParam {
    Success,
    Failure,
    Denied,
}

impl From<OutcomeParam> for Outcome {
    fn from(o: OutcomeParam) -> Self {
        match o {
            OutcomeParam::Success => Outcome::Success,
            OutcomeParam::Failure => Outcome::Failure,
            OutcomeParam::Denied => Outcome::Denied,
        }
    }
}

/// One audit event.
#[derive(Object)]
#[oai(rename = "AuditEvent", skip_serializing_if_is_none)]
pub struct AuditEventView {
    /// Position in the org's chain, from 1.
    pub seq: u64,
    /// RFC 3339.
    pub time: String,
    /// `token:…`, `user:…` or `system:…`.
    pub actor: String,
    /// Dotted verb, e.g. `org.update`.
    pub action: String,
    pub target: String,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// Extra facts about the event.
    pub details: serde_json::Value,
    /// SHA-256 of the previous event (hex).
    pub prev_hash: String,
    /// SHA-256 over `prev_hash` and this event (hex).
    pub hash: String,
}

impl From<Event> for AuditEventView {
    fn from(e: Event) -> Self {
        AuditEventView {
            seq: e.seq,
            time: rfc3339(micros_to_datetime(e.time)),
            actor: e.actor,
            action: e.action,
            target: e.target,
            outcome: e.outcome.as_str().into(),
            ip: e.ip,
            user_agent: e.user_agent,
            request_id: e.request_id,
            details: e.details,
            prev_hash: e.prev_hash,
            hash: e.hash,
        }
    }
}

#[derive(ApiResponse)]
pub enum CsvExport {
    /// The matching events as CSV (header row first).
    #[oai(status = 200, content_type = "text/csv; charset=utf-8")]
    Csv(PlainText<String>, #[oai(header = "content-disposition")] String),
}

#[derive(ApiResponse)]
pub enum JsonExport {
    /// The matching events, oldest first, as a page (`next_cursor` when more than 100,000 match).
    #[oai(status = 200)]
    Json(Json<Page<AuditEventView>>, #[oai(header = "content-disposition")] String),
}

fn filter(
    since: Option<DateTime>,
    until: Option<DateTime>,
    action: Option<String>,
    actor: Option<String>,
    outcome: Option<OutcomeParam>,
) -> Filter {
    Filter {
        since: since.map(|t| t.0.micros()),
        until: until.map(|t| t.0.micros()),
        action,
        actor,
        outcome: outcome.map(Outcome::from),
        ..Default::default()
    }
}

/// The sequence number a cursor continues after (0 for the first page).
fn after_seq(context: &page::Context, cursor: Option<Cursor>) -> ApiResult<u64> {
    match context.decode(cursor)? {
        None => Ok(0),
        Some(seq) => seq.parse().map_err(|_| {
            ApiError::field(
                super::problem::Code::InvalidCursor,
                "cursor",
                "`cursor` is not a cursor this API gave; pass the `next_cursor` of the previous page unchanged",
            )
        }),
    }
}

/// Trims `events` (fetched one past `limit`) to the page, and the cursor of the next.
fn next_after(context: &page::Context, events: &mut Vec<Event>, limit: usize) -> Option<String> {
    let more = events.len() > limit;
    events.truncate(limit);
    more.then(|| events.last().map(|e| context.encode(&e.seq.to_string()))).flatten()
}

impl AuditApi {
    async fn export(&self, req: &Request, p: &Principal, filter: Filter, format: &str) -> ApiResult<Vec<Event>> {
        let store = &self.state.store;
        let scope = p.scope().clone();
        let f = Filter { limit: EXPORT_MAX.max(filter.limit), ..filter };
        let events = super::off_worker(store, move |store| Ok(audit::query(store, &scope, &f)?)).await?;
        let details = serde_json::json!({"format": format, "count": events.len()});
        let target = format!("org:{}", p.scope().org());
        audit::audited(store, p.scope(), &super::audit_context(req), "audit.export", &target, details, |_| Ok(()))
            .map_err(ApiError::from)?;
        Ok(events)
    }
}

#[OpenApi(prefix_path = "/audit", tag = "Tag::Audit")]
impl AuditApi {
    /// List audit events
    ///
    /// Oldest first; page with `cursor`. Requires permission `audit:read`.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/events", method = "get", operation_id = "audit.list")]
    async fn list(
        &self,
        req: &Request,
        auth: Caller,
        /// The `next_cursor` of the previous page; leave out for the first page.
        cursor: Query<Option<Cursor>>,
        /// Only events at or after this time (RFC 3339).
        since: Query<Option<DateTime>>,
        /// Only events before this time (RFC 3339).
        until: Query<Option<DateTime>>,
        /// Only this action, or actions under it (`token` matches `token.create`).
        #[oai(validator(max_length = 100))]
        action: Query<Option<String>>,
        /// Only this actor, e.g. `token:tok_ab12cd34ef56`.
        #[oai(validator(max_length = 200))]
        actor: Query<Option<String>>,
        outcome: Query<Option<OutcomeParam>>,
        /// Events per page, 1 to 500 (default 100).
        limit: Query<Option<PageLimit>>,
    ) -> ApiResult<Json<Page<AuditEventView>>> {
        let p = auth.require(Permission::AuditRead)?;
        let limit = page::limit(limit.0);
        let context = page::Context::of(req, "audit.list", &p.scope().org().to_string());
        let f = Filter {
            after: after_seq(&context, cursor.0)?,
            limit: limit + 1,
            ..filter(since.0, until.0, action.0, actor.0, outcome.0)
        };
        let scope = p.scope().clone();
        let mut events =
            super::off_worker(&self.state.store, move |store| Ok(audit::query(store, &scope, &f)?)).await?;
        let next_cursor = next_after(&context, &mut events, limit);
        Ok(Json(Page::new(events.into_iter().map(Into::into).collect(), next_cursor)))
    }

    /// Export audit events as CSV
    ///
    /// Up to 100,000 events; the export itself is audited. Requires permission `audit:read`.
    #[oai(path = "/export/csv", method = "get", operation_id = "audit.export_csv")]
    async fn export_csv(
        &self,
        req: &Request,
        auth: Caller,
        since: Query<Option<DateTime>>,
        until: Query<Option<DateTime>>,
        #[oai(validator(max_length = 100))] action: Query<Option<String>>,
    ) -> ApiResult<CsvExport> {
        let p = auth.require(Permission::AuditRead)?;
        let events = self.export(req, p, filter(since.0, until.0, action.0, None, None), "csv").await?;
        Ok(CsvExport::Csv(PlainText(audit::to_csv(&events)), "attachment; filename=\"audit.csv\"".into()))
    }

    /// Export audit events as JSON
    ///
    /// Up to 100,000 events; the export itself is audited. Requires permission `audit:read`.
    #[oai(path = "/export/json", method = "get", operation_id = "audit.export_json")]
    async fn export_json(
        &self,
        req: &Request,
        auth: Caller,
        /// Only events at or after this time (RFC 3339).
        since: Query<Option<DateTime>>,
        /// Only events before this time (RFC 3339).
        until: Query<Option<DateTime>>,
        /// Only this action, or actions under it.
        #[oai(validator(max_length = 100))]
        action: Query<Option<String>>,
        /// The `next_cursor` of the previous export; leave out for the first.
        cursor: Query<Option<Cursor>>,
    ) -> ApiResult<JsonExport> {
        let p = auth.require(Permission::AuditRead)?;
        let context = page::Context::of(req, "audit.export_json", &p.scope().org().to_string());
        let f = Filter {
            after: after_seq(&context, cursor.0)?,
            limit: EXPORT_MAX + 1,
            ..filter(since.0, until.0, action.0, None, None)
        };
        let mut events = self.export(req, p, f, "json").await?;
        let next_cursor = next_after(&context, &mut events, EXPORT_MAX);
        let body = Page::new(events.into_iter().map(Into::into).collect(), next_cursor);
        Ok(JsonExport::Json(Json(body), "attachment; filename=\"audit.json\"".into()))
    }
}
