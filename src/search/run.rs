//! Running a search on one org's index: the caller's text, the filters and
//! the caller's walls all become one tantivy query (walls as must-not clauses
//! on `matters`), so totals, facets and pages count only what the caller may
//! see; then the page after the cursor, facet counts and snippets.
use super::collect::{Budget, Facets, Page};
use super::cursor::{self, CursorError, Position, Sort};
use super::index::Opened;
use super::query::{self, BadQuery, Builder, keyword};
use crate::data::Date;
use crate::records::Kind;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::time::{Duration, Instant};
use tantivy::collector::Count;
use tantivy::query::{AllQuery, BooleanQuery, BoostQuery, Occur, Query, RangeQuery};
use tantivy::schema::document::Value as _;
use tantivy::snippet::SnippetGenerator;
use tantivy::{TantivyDocument, Term};

/// How long one query may run before it is refused.
pub const TIME_BUDGET: Duration = Duration::from_secs(2);
/// Values listed per facet (the most frequent).
pub const FACET_VALUES: usize = 20;
/// Characters of a snippet.
const SNIPPET_CHARS: usize = 160;

/// A facet the caller may ask counts of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Facet {
    Kind,
    Status,
    PracticeArea,
    ResponsibleAttorney,
    Billed,
}

impl Facet {
    pub const ALL: [Facet; 5] =
        [Facet::Kind, Facet::Status, Facet::PracticeArea, Facet::ResponsibleAttorney, Facet::Billed];

    pub fn name(self) -> &'static str {
        match self {
            Facet::Kind => "kind",
            Facet::Status => "status",
            Facet::PracticeArea => "practice_area",
            Facet::ResponsibleAttorney => "responsible_attorney",
            Facet::Billed => "billed",
        }
    }

    pub fn parse(text: &str) -> Option<Facet> {
        Facet::ALL.into_iter().find(|f| f.name() == text)
    }

    /// The index field counted.
    fn field(self) -> &'static str {
        match self {
            Facet::ResponsibleAttorney => "responsible_attorney",
            other => other.name(),
        }
    }
}

/// What the caller asked.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub q: String,
    pub kinds: Vec<Kind>,
    pub status: Option<String>,
    pub practice_area: Option<String>,
    pub responsible_attorney_id: Option<String>,
    pub client_id: Option<String>,
    pub matter_id: Option<String>,
    pub from: Option<Date>,
    pub to: Option<Date>,
    pub billed: Option<bool>,
    pub sort: Sort,
    pub facets: Vec<Facet>,
    pub limit: usize,
    pub cursor: Option<String>,
}

impl Request {
    fn has_filters(&self) -> bool {
        !self.kinds.is_empty()
            || self.status.is_some()
            || self.practice_area.is_some()
            || self.responsible_attorney_id.is_some()
            || self.client_id.is_some()
            || self.matter_id.is_some()
            || self.from.is_some()
            || self.to.is_some()
            || self.billed.is_some()
    }

    /// What defines this search for its cursors: everything but the page.
    fn tag(&self, org: u64) -> u32 {
        let kinds: Vec<&str> = self.kinds.iter().map(|k| k.as_str()).collect();
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let day = |d: Option<Date>| d.map(|d| d.to_string()).unwrap_or_default();
        cursor::tag(&[
            &org.to_string(),
            &self.q,
            &kinds.join(","),
            &opt(&self.status),
            &opt(&self.practice_area),
            &opt(&self.responsible_attorney_id),
            &opt(&self.client_id),
            &opt(&self.matter_id),
            &day(self.from),
            &day(self.to),
            &self.billed.map(|b| b.to_string()).unwrap_or_default(),
        ])
    }
}

/// One hit.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub kind: String,
    pub id: String,
    pub score: f32,
    pub title: String,
    pub subtitle: Option<String>,
    /// The kind's main date, RFC 3339 UTC.
    pub date: Option<String>,
    pub matter_id: Option<String>,
    /// HTML-escaped text with `<mark>` around matched words.
    pub snippet: Option<String>,
}

/// A page of results.
#[derive(Clone, Debug, PartialEq)]
pub struct Results {
    pub total: u64,
    pub hits: Vec<Hit>,
    /// Per facet asked, `(value, count)` most frequent first.
    pub facets: Vec<(Facet, Vec<(String, u64)>)>,
    pub next_cursor: Option<String>,
}

/// Why a search was refused.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The caller's input: a 400 naming the parameter.
    #[error("{detail}")]
    Bad { param: &'static str, detail: String },
    /// The index failed: logged, a 500.
    #[error("the search index failed: {0}")]
    Index(#[from] tantivy::TantivyError),
}

impl RunError {
    fn q(e: BadQuery) -> RunError {
        RunError::Bad { param: "q", detail: e.0 }
    }
}

impl From<CursorError> for RunError {
    fn from(e: CursorError) -> Self {
        RunError::Bad { param: "cursor", detail: e.to_string() }
    }
}

fn filter(q: Box<dyn Query>) -> (Occur, Box<dyn Query>) {
    (Occur::Must, Box::new(BoostQuery::new(q, 0.0)))
}

/// The filter clauses (no score) and the walls (must-not) of a request.
fn clauses(o: &Opened, req: &Request, hidden: &BTreeSet<String>) -> Vec<(Occur, Box<dyn Query>)> {
    let f = o.fields;
    let mut out = vec![];
    if !req.kinds.is_empty() {
        let kinds = req.kinds.iter().map(|k| (Occur::Should, keyword(f.kind, k.as_str()))).collect();
        out.push(filter(Box::new(BooleanQuery::new(kinds))));
    }
    let exact = [
        (f.status, req.status.as_ref().map(|s| s.trim().to_lowercase())),
        (f.practice_area, req.practice_area.clone()),
        (f.attorney, req.responsible_attorney_id.clone()),
        (f.client_id, req.client_id.clone()),
        (f.matters, req.matter_id.clone()),
        (f.billed, req.billed.map(|b| b.to_string())),
    ];
    for (field, value) in exact {
        if let Some(v) = value {
            out.push(filter(keyword(field, &v)));
        }
    }
    if req.from.is_some() || req.to.is_some() {
        let lower = req
            .from
            .map_or(Bound::Unbounded, |d| Bound::Included(Term::from_field_i64(f.date, d.first_instant().micros())));
        let upper = req
            .to
            .map_or(Bound::Unbounded, |d| Bound::Included(Term::from_field_i64(f.date, d.last_instant().micros())));
        out.push(filter(Box::new(RangeQuery::new(lower, upper))));
    }
    for matter in hidden {
        out.push((Occur::MustNot, keyword(f.matters, matter)));
    }
    out
}

/// Runs `req` on the org's index as a caller from whom `hidden` matters are screened.
pub fn run(o: &Opened, org: u64, req: &Request, hidden: &BTreeSet<String>) -> Result<Results, RunError> {
    let started = Instant::now();
    let parsed = query::parse(&req.q).map_err(RunError::q)?;
    if parsed.is_none() && !req.has_filters() {
        return Err(RunError::Bad {
            param: "q",
            detail: "`q` is empty; type what to search for, or give a filter such as `kind=matter`".into(),
        });
    }
    if let (Some(from), Some(to)) = (req.from, req.to)
        && from > to
    {
        return Err(RunError::Bad {
            param: "from",
            detail: format!("`from` ({from}) is after `to` ({to}); swap them"),
        });
    }
    let tag = req.tag(org);
    let after: Option<Position> = req.cursor.as_deref().map(|c| cursor::decode(c, req.sort, tag)).transpose()?;
    let searcher = o.reader.searcher();
    let builder = Builder::new(&searcher, o.fields);
    let text: Box<dyn Query> = match &parsed {
        Some(node) => builder.build(node).map_err(RunError::q)?,
        None => Box::new(AllQuery),
    };
    let mut all = vec![(Occur::Must, text.box_clone())];
    all.extend(clauses(o, req, hidden));
    let full = BooleanQuery::new(all);
    let budget = Budget::until(started + TIME_BUDGET);
    let page = Page { sort: req.sort, after, limit: req.limit, budget: budget.clone() };
    let facets = Facets { fields: req.facets.iter().map(|f| f.field()).collect(), budget: budget.clone() };
    let (total, mut ranked, counts) = searcher.search(&full, &(Count, page, facets))?;
    if budget.exceeded() {
        return Err(RunError::Bad {
            param: "q",
            detail: format!(
                "the search took longer than its {} s budget; narrow it (longer words or prefixes, fewer `OR`s, a filter)",
                TIME_BUDGET.as_secs()
            ),
        });
    }
    let next_cursor = (ranked.len() > req.limit).then(|| {
        ranked.truncate(req.limit);
        ranked.last().map(|last| cursor::encode(req.sort, last.position, tag))
    });
    let mut snippets = SnippetGenerator::create(&searcher, &*text, o.fields.body).ok();
    if let Some(s) = snippets.as_mut() {
        s.set_max_num_chars(SNIPPET_CHARS);
    }
    let mut hits = Vec::with_capacity(ranked.len());
    for r in &ranked {
        let doc: TantivyDocument = searcher.doc(r.doc())?;
        hits.push(hit(o, &doc, r.score(), snippets.as_ref()));
    }
    let facets = req
        .facets
        .iter()
        .zip(counts)
        .map(|(facet, counts)| {
            let mut values: Vec<(String, u64)> = counts.into_iter().collect();
            values.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            values.truncate(FACET_VALUES);
            (*facet, values)
        })
        .collect();
    Ok(Results { total: total as u64, hits, facets, next_cursor: next_cursor.flatten() })
}

fn first_text(doc: &TantivyDocument, field: tantivy::schema::Field) -> Option<String> {
    doc.get_first(field).and_then(|v| v.as_str().map(str::to_string))
}

fn hit(o: &Opened, doc: &TantivyDocument, score: f32, snippets: Option<&SnippetGenerator>) -> Hit {
    let f = o.fields;
    let kind = first_text(doc, f.kind).unwrap_or_default();
    let snippet = snippets.map(|g| {
        let mut s = g.snippet_from_doc(doc);
        s.set_snippet_prefix_postfix("<mark>", "</mark>");
        s
    });
    Hit {
        matter_id: if kind == "matter" { None } else { first_text(doc, f.matters) },
        kind,
        id: first_text(doc, f.id).unwrap_or_default(),
        score,
        title: first_text(doc, f.title).unwrap_or_default(),
        subtitle: first_text(doc, f.subtitle),
        date: doc
            .get_first(f.date)
            .and_then(|v| v.as_i64())
            .map(|m| crate::timestamp::Timestamp::from_micros(m).to_rfc3339()),
        snippet: snippet.filter(|s| !s.is_empty() && !s.highlighted().is_empty()).map(|s| s.to_html()),
    }
}
