//! `/changes` and `/changes/head`: the change feed (record upserts and
//! deletions in commit order, walled like every read) for mirrors. The
//! feed's rules are in [`crate::changes`]; docs/integrators.md shows a mirror.
use super::auth::Caller;
use super::data::RecordView;
use super::params::{Limit, Number};
use super::problem::{ApiError, ApiResult, Code, Problem};
use crate::auth::Permission;
use crate::changes::{self, ChangeOp, FeedError, Position, cursor};
use crate::data::Viewer;
use crate::records::Kind;
use crate::state::AppState;
use poem::Request;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, Tags};
use std::collections::BTreeSet;
use std::sync::Arc;

#[derive(Tags)]
enum Tag {
    /// Record changes in commit order, for mirrors.
    Changes,
}

pub struct ChangesApi {
    pub state: Arc<AppState>,
}

/// What happened to the record.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename = "ChangeOp", rename_all = "snake_case")]
pub enum ChangeOpView {
    /// The record was created or changed: `record` holds it as stored now.
    Upsert,
    /// The record is gone (deleted in Clio, purged, or moved behind a wall that screens you).
    Delete,
}

/// One change to one record.
#[derive(Object)]
#[oai(rename = "Change", skip_serializing_if_is_none)]
pub struct ChangeView {
    /// docket's commit sequence number of the change: the feed's order (grows, with gaps).
    pub seq: u64,
    pub op: ChangeOpView,
    pub kind: super::webhooks::KindView,
    /// The Clio id.
    pub id: String,
    /// When docket committed the change, RFC 3339 UTC.
    #[oai(read_only)]
    pub committed_at: String,
    /// The record as stored by this change (upserts only).
    pub record: Option<RecordView>,
}

/// A page of the change feed.
#[derive(Object)]
#[oai(rename = "ChangePage")]
pub struct ChangePage {
    /// Changes, oldest first.
    pub items: Vec<ChangeView>,
    /// Where to read from next. Always present: the feed has no last page;
    /// keep it (durably, after applying `items`) and pass it as `cursor`.
    pub next_cursor: String,
    /// Whether this page reached the newest change; when false, call again at once.
    pub caught_up: bool,
}

/// The feed's current head.
#[derive(Object)]
#[oai(rename = "ChangeHead")]
pub struct ChangeHead {
    /// Read the feed from here to get only changes committed from now on.
    pub cursor: String,
    /// The newest commit sequence number.
    pub seq: u64,
}

/// `changes.list`'s answers besides the common errors.
#[derive(ApiResponse)]
pub enum FeedResponse {
    /// A page of changes.
    #[oai(status = 200)]
    Page(Json<ChangePage>),
    /// The cursor is older than what the appliance keeps (or ahead of a
    /// restored store): resynchronise from `GET /changes/head`, a full list, then the feed.
    #[oai(status = 410, content_type = "application/problem+json")]
    Gone(Json<Problem>),
}

/// The query parameters `changes.list` takes; any other is refused.
const PARAMS: [&str; 4] = ["cursor", "kinds", "limit", "wait"];

/// A 400 naming query parameters the operation does not take (a client
/// that sends `after` or `page` would otherwise loop on the first page).
pub fn refuse_unknown(req: &Request, known: &[&str]) -> ApiResult<()> {
    let query = req.uri().query().unwrap_or_default();
    let unknown: BTreeSet<String> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(name, _)| name.into_owned())
        .filter(|name| !known.contains(&name.as_str()))
        .collect();
    let Some(first) = unknown.first() else { return Ok(()) };
    let names: Vec<String> = unknown.iter().map(|n| format!("`{n}`")).collect();
    Err(ApiError::field(
        Code::BadRequest,
        first.clone(),
        format!(
            "unknown query parameter {}; this operation takes {}",
            names.join(", "),
            if known.is_empty() { "none".to_string() } else { listed(known) }
        ),
    ))
}

/// `a`, `b` as a detail lists parameter names.
fn listed(known: &[&str]) -> String {
    known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
}

/// The kinds of a `kinds` comma list; an unknown one is a 400 naming the allowed values.
fn parse_kinds(value: Option<String>) -> ApiResult<BTreeSet<Kind>> {
    let Some(value) = value else { return Ok(BTreeSet::new()) };
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| {
            Kind::ALL.into_iter().find(|k| k.as_str() == v).ok_or_else(|| {
                let all: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                ApiError::field(
                    Code::BadRequest,
                    "kinds",
                    format!("`kinds` has `{v}`, which is not one of {}", all.join(", ")),
                )
            })
        })
        .collect()
}

fn view(change: changes::Change) -> ChangeView {
    let (op, record) = match change.op {
        ChangeOp::Upsert(record) => (ChangeOpView::Upsert, Some(RecordView::from(*record))),
        ChangeOp::Delete => (ChangeOpView::Delete, None),
    };
    ChangeView {
        seq: change.seq,
        op,
        kind: super::webhooks::KindView::of(change.kind),
        id: change.id,
        committed_at: change.committed_at.to_rfc3339(),
        record,
    }
}

/// One read of the feed, as the caller's viewer, off the async workers.
async fn read_page(
    state: &AppState,
    auth: &Caller,
    cursor: Option<String>,
    kinds: BTreeSet<Kind>,
    limit: usize,
) -> ApiResult<Result<(changes::FeedPage, String), String>> {
    let principal = auth.require(Permission::DataRead)?.clone();
    let keys = state.keys.current();
    super::off_worker(&state.store, move |store| {
        let viewer = Viewer::of(store, &principal)?;
        let org = viewer.org();
        let key = cursor::key(store, principal.scope(), &keys)?;
        let from = match cursor {
            Some(c) => key.decode(org, &c).map_err(|e| ApiError::field(Code::BadRequest, "cursor", e.to_string()))?,
            None => Position::default(),
        };
        match changes::read(store, &viewer, from, &kinds, limit) {
            Ok(page) => {
                let next = key.encode(org, page.next);
                Ok(Ok((page, next)))
            }
            Err(FeedError::Behind(detail)) => Ok(Err(detail)),
            Err(FeedError::Store(e)) => Err(e.into()),
        }
    })
    .await
}

#[OpenApi(tag = "Tag::Changes")]
impl ChangesApi {
    /// Read the change feed
    ///
    /// Upserts and deletions of the firm's records in docket's commit order,
    /// with the record as stored for upserts. Start without `cursor` (from
    /// the first change) or from `GET /changes/head`; pass each page's
    /// `next_cursor` to the next call. With `wait`, an empty caught-up page
    /// waits up to that many seconds for the next commit (long polling).
    /// Walled matters, and everything under them, are left out for the
    /// members they screen (a record moved behind a wall is a `delete`).
    /// 410 when the cursor is older than what the appliance keeps (72 hours
    /// of commits at least): resynchronise as the problem says.
    ///
    /// Requires permission `data:read`.
    #[oai(path = "/changes", method = "get", operation_id = "changes.list")]
    async fn list(
        &self,
        req: &Request,
        auth: Caller,
        /// The `next_cursor` of the previous page, or the `cursor` of `GET /changes/head`.
        #[oai(validator(max_length = 128, pattern = r"^[a-z0-9.]+$"))]
        cursor: Query<Option<String>>,
        /// Comma list of kinds to include (default all): matter, contact, activity, bill, user, task, calendar_entry, note.
        #[oai(validator(
            max_length = 256,
            pattern = r"^(matter|contact|activity|bill|user|task|calendar_entry|note)(,(matter|contact|activity|bill|user|task|calendar_entry|note))*$"
        ))]
        kinds: Query<Option<String>>,
        /// Changes per page, 1 to 1000 (default 100).
        limit: Query<Option<Limit<1000>>>,
        /// Seconds to wait for a change when caught up, 0 to 30 (default 0).
        wait: Query<Option<Number<0, 30>>>,
    ) -> ApiResult<FeedResponse> {
        auth.require(Permission::DataRead)?;
        refuse_unknown(req, &PARAMS)?;
        let kinds = parse_kinds(kinds.0)?;
        let (limit, wait) = (Limit::or(limit.0, 100), Number::or(wait.0, 0));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait as u64);
        let mut from = cursor.0;
        let answer = loop {
            let answer = read_page(&self.state, &auth, from.clone(), kinds.clone(), limit).await?;
            let Ok((page, next)) = &answer else { break answer };
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !page.changes.is_empty() || !page.caught_up || left.is_zero() {
                break answer;
            }
            // Caught up with nothing: wait for the next commit (any firm's), then look again.
            if !changes::wait_for_commit(&self.state.store, page.next.after, left).await {
                break answer;
            }
            from = Some(next.clone());
        };
        Ok(match answer {
            Ok((page, next_cursor)) => FeedResponse::Page(Json(ChangePage {
                items: page.changes.into_iter().map(view).collect(),
                next_cursor,
                caught_up: page.caught_up,
            })),
            Err(detail) => FeedResponse::Gone(Json(ApiError::new(Code::Gone, detail).problem())),
        })
    }

    /// The change feed's head
    ///
    /// A cursor from which the feed returns only changes committed after
    /// this call: take it before a full list when (re)building a mirror.
    ///
    /// Requires permission `data:read`.
    #[oai(path = "/changes/head", method = "get", operation_id = "changes.head")]
    async fn head(&self, req: &Request, auth: Caller) -> ApiResult<Json<ChangeHead>> {
        let principal = auth.require(Permission::DataRead)?.clone();
        refuse_unknown(req, &[])?;
        let keys = self.state.keys.current();
        super::off_worker(&self.state.store, move |store| {
            let key = cursor::key(store, principal.scope(), &keys)?;
            let head = changes::head(store)?;
            Ok(Json(ChangeHead { cursor: key.encode(principal.scope().org(), head), seq: head.after }))
        })
        .await
    }
}
