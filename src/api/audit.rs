//! `/audit`: the org's tamper-evident audit trail, for auditors and admins.
use super::auth::Caller;
use super::params::{DateTime, Limit, Number};
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

/// A page of events.
#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AuditPage {
    pub events: Vec<AuditEventView>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_cursor: Option<u64>,
}

#[derive(ApiResponse)]
pub enum CsvExport {
    /// The matching events as CSV (header row first).
    #[oai(status = 200, content_type = "text/csv; charset=utf-8")]
    Csv(PlainText<String>, #[oai(header = "content-disposition")] String),
}

#[derive(ApiResponse)]
pub enum JsonExport {
    /// The matching events as a JSON array.
    #[oai(status = 200)]
    Json(Json<Vec<AuditEventView>>, #[oai(header = "content-disposition")] String),
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

impl AuditApi {
    async fn export(&self, req: &Request, p: &Principal, filter: Filter, format: &str) -> ApiResult<Vec<Event>> {
        let store = &self.state.store;
        let scope = p.scope().clone();
        let f = Filter { limit: EXPORT_MAX, ..filter };
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
    /// Oldest first; page with `after`. Requires permission `audit:read`.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/events", method = "get", operation_id = "audit.list")]
    async fn list(
        &self,
        auth: Caller,
        /// Return events after this sequence number (the `next_cursor` of the previous page).
        after: Query<Option<Number<0, 1_000_000_000_000>>>,
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
        /// Page size, 1 to 1000 (default 100).
        limit: Query<Option<Limit<1000>>>,
    ) -> ApiResult<Json<AuditPage>> {
        let p = auth.require(Permission::AuditRead)?;
        let limit = Limit::or(limit.0, 100);
        let f = Filter {
            after: after.0.map_or(0, |n| n.0),
            limit,
            ..filter(since.0, until.0, action.0, actor.0, outcome.0)
        };
        let scope = p.scope().clone();
        let events = super::off_worker(&self.state.store, move |store| Ok(audit::query(store, &scope, &f)?)).await?;
        let next_cursor = (events.len() == limit).then(|| events.last().map(|e| e.seq)).flatten();
        Ok(Json(AuditPage { events: events.into_iter().map(Into::into).collect(), next_cursor }))
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
        since: Query<Option<DateTime>>,
        until: Query<Option<DateTime>>,
        #[oai(validator(max_length = 100))] action: Query<Option<String>>,
    ) -> ApiResult<JsonExport> {
        let p = auth.require(Permission::AuditRead)?;
        let events = self.export(req, p, filter(since.0, until.0, action.0, None, None), "json").await?;
        let body = events.into_iter().map(Into::into).collect();
        Ok(JsonExport::Json(Json(body), "attachment; filename=\"audit.json\"".into()))
    }
}
