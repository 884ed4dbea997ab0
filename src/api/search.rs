//! `/search` and `/search/suggest`: full-text search and type-ahead over the
//! firm's records as the caller may see them (walls inside the query), run
//! on the blocking pool. docs/search.md has the syntax and the limits.
use super::auth::Caller;
use super::params::{Cursor, Day, Flag, Id, Limit, opt};
use super::problem::{ApiError, ApiResult, Code};
use crate::auth::Permission;
use crate::data::Viewer;
use crate::search::{self, Engine, Facet, SearchError, Sort};
use crate::state::AppState;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi, Tags};
use std::sync::Arc;

#[derive(Tags)]
enum Tag {
    /// Full-text search over the firm's data.
    Search,
}

pub struct SearchApi {
    pub state: Arc<AppState>,
}

/// The order of results.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum SearchSort {
    Relevance,
    DateDesc,
    DateAsc,
}

/// One hit.
#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SearchHit {
    /// `matter`, `contact`, `activity`, `bill`, `user`, `task`, `calendar_entry` or `note`.
    pub kind: String,
    /// The Clio id.
    pub id: String,
    /// Relevance (higher is better; comparable within one search only).
    pub score: f32,
    pub title: String,
    pub subtitle: Option<String>,
    /// The kind's main date (matter opened, activity date, bill issued, task due, ...), RFC 3339 UTC.
    pub date: Option<String>,
    /// The matter the record belongs to (not for matters themselves).
    pub matter_id: Option<String>,
    /// HTML-escaped text around the matched words, which are wrapped in `<mark>`.
    pub snippet: Option<String>,
}

/// A facet value and how many hits have it.
#[derive(Object)]
pub struct FacetValue {
    pub value: String,
    pub count: u64,
}

/// Counts of the facets asked for (only those).
#[derive(Object, Default)]
#[oai(skip_serializing_if_is_none)]
pub struct SearchFacets {
    pub kind: Option<Vec<FacetValue>>,
    pub status: Option<Vec<FacetValue>>,
    pub practice_area: Option<Vec<FacetValue>>,
    pub responsible_attorney: Option<Vec<FacetValue>>,
    pub billed: Option<Vec<FacetValue>>,
}

/// A page of search results.
#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SearchResults {
    /// How many records match in all (that the caller may see).
    pub total: u64,
    /// The hits of this page, best first (or in the order `sort` asks).
    pub items: Vec<SearchHit>,
    pub facets: SearchFacets,
    /// Pass as `cursor` (with the same other parameters) for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// A type-ahead suggestion.
#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SuggestionView {
    /// `matter`, `contact` or `user`.
    pub kind: String,
    pub id: String,
    pub label: String,
    pub detail: Option<String>,
}

/// Type-ahead suggestions, best first.
#[derive(Object)]
pub struct Suggestions {
    pub suggestions: Vec<SuggestionView>,
}

fn bad(param: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::field(Code::BadRequest, param, detail)
}

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::Bad { param, detail } => bad(param, detail),
            SearchError::Unavailable(detail) => ApiError::new(Code::StorageUnavailable, detail)
                .with_header("retry-after", search::RETRY_AFTER_SECONDS.to_string()),
            SearchError::Failed(_) => {
                ApiError::new(Code::Internal, "the search failed; quote the request id to your administrator")
            }
        }
    }
}

/// A comma list, each item parsed by `parse`; an unknown item is a 400 naming `param`.
fn list<T>(
    param: &'static str,
    value: Option<String>,
    parse: impl Fn(&str) -> Option<T>,
    known: &str,
) -> ApiResult<Vec<T>> {
    let Some(value) = value else { return Ok(vec![]) };
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| parse(v).ok_or_else(|| bad(param, format!("`{param}` has `{v}`, which is not one of {known}"))))
        .collect()
}

/// Every value of a multi-value parameter, whether sent as a comma list
/// (`kind=matter,contact`, the spec's `explode: false`) or repeated
/// (`kind=matter&kind=contact`, as some generated clients send arrays).
fn every_value(req: &poem::Request, name: &str) -> Option<String> {
    let values: Vec<String> = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// Runs `work` on the blocking pool as the caller's viewer (`data:read`).
async fn as_viewer<R: Send + 'static>(
    state: &AppState,
    auth: &Caller,
    work: impl FnOnce(&Engine, &Viewer) -> Result<R, SearchError> + Send + 'static,
) -> ApiResult<R> {
    let principal = auth.require(Permission::DataRead)?.clone();
    let engine = state.search.clone();
    super::off_worker(&state.store, move |store| {
        let viewer = Viewer::of(store, &principal)?;
        Ok(work(&engine, &viewer)?)
    })
    .await
}

fn facet_values(values: Vec<(String, u64)>) -> Vec<FacetValue> {
    values.into_iter().map(|(value, count)| FacetValue { value, count }).collect()
}

fn results(r: search::Results) -> SearchResults {
    let mut facets = SearchFacets::default();
    for (facet, values) in r.facets {
        let slot = match facet {
            Facet::Kind => &mut facets.kind,
            Facet::Status => &mut facets.status,
            Facet::PracticeArea => &mut facets.practice_area,
            Facet::ResponsibleAttorney => &mut facets.responsible_attorney,
            Facet::Billed => &mut facets.billed,
        };
        *slot = Some(facet_values(values));
    }
    let hits = r
        .hits
        .into_iter()
        .map(|h| SearchHit {
            kind: h.kind,
            id: h.id,
            score: h.score,
            title: h.title,
            subtitle: h.subtitle,
            date: h.date,
            matter_id: h.matter_id,
            snippet: h.snippet,
        })
        .collect();
    SearchResults { total: r.total, items: hits, facets, next_cursor: r.next_cursor }
}

#[OpenApi(tag = "Tag::Search")]
impl SearchApi {
    /// Search the firm's data
    ///
    /// Free text with phrases (`"breach of contract"`), prefixes (`smi*`),
    /// typo tolerance, `AND`/`OR`/`NOT` (or `-word`), parentheses and fields
    /// (`client:`, `status:`, `number:`, `email:`, `phone:`, `name:`, `kind:`,
    /// `practice_area:`, `attorney:`, `text:`), plus filters, facet counts,
    /// sorting and cursor pages. Walled matters, and everything under them,
    /// are left out of hits, totals and facets for the members they screen.
    /// 503 with `Retry-After` while the firm's index is being built.
    /// Limits (query size, terms, prefixes, time) are in docs/search.md.
    ///
    /// Requires permission `data:read`.
    #[oai(path = "/search", method = "get", operation_id = "search.query")]
    #[allow(clippy::too_many_arguments)]
    async fn query(
        &self,
        req: &poem::Request,
        auth: Caller,
        /// What to search for (may be empty when a filter is given); no control characters.
        #[oai(validator(max_length = 512, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"))]
        q: Query<Option<String>>,
        /// Comma list of kinds: matter, contact, activity, bill, user, task, calendar_entry, note.
        #[oai(validator(
            max_length = 256,
            pattern = r"^(matter|contact|activity|bill|user|task|calendar_entry|note)(,(matter|contact|activity|bill|user|task|calendar_entry|note))*$"
        ))]
        kind: Query<Option<String>>,
        /// Matter or task status, or bill state (any case).
        #[oai(validator(max_length = 64))]
        status: Query<Option<String>>,
        /// A matter's practice area, as the `practice_area` facet shows it.
        #[oai(validator(max_length = 128))]
        practice_area: Query<Option<String>>,
        /// The responsible attorney (user) id of matters.
        responsible_attorney_id: Query<Option<Id>>,
        /// The client (contact) id of matters and bills.
        client_id: Query<Option<Id>>,
        /// Records of this matter (the matter itself included).
        matter_id: Query<Option<Id>>,
        /// On or after this day (the kind's main date).
        from: Query<Option<Day>>,
        /// On or before this day (the kind's main date).
        to: Query<Option<Day>>,
        /// Only billed (true) or unbilled (false) activities.
        billed: Query<Option<Flag>>,
        /// `relevance` (default), `date_desc` or `date_asc`.
        sort: Query<Option<SearchSort>>,
        /// Comma list of facets to count: kind, status, practice_area, responsible_attorney, billed.
        #[oai(validator(
            max_length = 256,
            pattern = r"^(kind|status|practice_area|responsible_attorney|billed)(,(kind|status|practice_area|responsible_attorney|billed))*$"
        ))]
        facets: Query<Option<String>>,
        /// Hits per page, 1 to 100 (default 20).
        limit: Query<Option<Limit<100>>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<Cursor>>,
    ) -> ApiResult<Json<SearchResults>> {
        auth.require(Permission::DataRead)?;
        let kinds = list(
            "kind",
            every_value(req, "kind").or(kind.0),
            |k| search::query::parse_kind(k).ok(),
            "matter, contact, activity, bill, user, task, calendar_entry, note",
        )?;
        let facets = list(
            "facets",
            every_value(req, "facets").or(facets.0),
            Facet::parse,
            "kind, status, practice_area, responsible_attorney, billed",
        )?;
        let req = search::Request {
            q: q.0.unwrap_or_default(),
            kinds,
            status: status.0,
            practice_area: practice_area.0,
            responsible_attorney_id: opt(responsible_attorney_id.0),
            client_id: opt(client_id.0),
            matter_id: opt(matter_id.0),
            from: opt(from.0),
            to: opt(to.0),
            billed: opt(billed.0),
            sort: match sort.0 {
                None | Some(SearchSort::Relevance) => Sort::Relevance,
                Some(SearchSort::DateDesc) => Sort::DateDesc,
                Some(SearchSort::DateAsc) => Sort::DateAsc,
            },
            facets,
            limit: Limit::or(limit.0, 20),
            cursor: opt(cursor.0),
        };
        let found = as_viewer(&self.state, &auth, move |engine, viewer| engine.search(viewer, &req)).await?;
        Ok(Json(results(found)))
    }

    /// Type-ahead suggestions
    ///
    /// The top matters, contacts and people whose names, numbers or emails
    /// start with what is typed (every word must match, the last as a
    /// prefix). Walls apply as in search.
    ///
    /// Requires permission `data:read`.
    #[oai(path = "/search/suggest", method = "get", operation_id = "search.suggest")]
    async fn suggest(
        &self,
        auth: Caller,
        /// What the user has typed so far; no control characters.
        #[oai(validator(max_length = 128, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"))]
        q: Query<Option<String>>,
        /// Suggestions, 1 to 10 (default 8).
        limit: Query<Option<Limit<10>>>,
    ) -> ApiResult<Json<Suggestions>> {
        let q = q.0.unwrap_or_default();
        let limit = Limit::or(limit.0, 8);
        let found = as_viewer(&self.state, &auth, move |engine, viewer| engine.suggest(viewer, &q, limit)).await?;
        let suggestions = found
            .into_iter()
            .map(|s| SuggestionView { kind: s.kind, id: s.id, label: s.label, detail: s.detail })
            .collect();
        Ok(Json(Suggestions { suggestions }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_value_parameters_as_comma_lists_or_repeated() {
        let req = |q: &str| poem::Request::builder().uri(format!("/search?{q}").parse().unwrap()).finish();
        assert_eq!(every_value(&req("kind=matter,note"), "kind").as_deref(), Some("matter,note"));
        assert_eq!(every_value(&req("kind=matter&q=x&kind=note"), "kind").as_deref(), Some("matter,note"));
        assert_eq!(every_value(&req("q=x"), "kind"), None);
    }
}
