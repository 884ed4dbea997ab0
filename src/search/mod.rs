//! Full-text search over the firm's records (tantivy), one index per org
//! under `<data_dir>/search/<org id>/`.
//!
//! The [`Engine`] holds each org's index for queries and is fed by the
//! indexer ([`indexer`]), which follows the store's journal and stores the
//! seq it applied inside each index commit. Queries go through a
//! [`Viewer`]: the org picks the index (another org's is never opened), and
//! the caller's walled matters are must-not clauses inside the query.
//! While an org's index is missing, corrupt, of an older format or being
//! built for the first time, its searches answer [`SearchError::Unavailable`]
//! (a 503 with `Retry-After`), never partial results.
//!
//! Rooms: `schema` (fields, analyzers), `document` (record → document),
//! `index` (directories, generations, payload, atomic swap), `indexer`
//! (journal follower, rebuilds), `query` (syntax, limits), `collect`
//! (page, facets, time budget), `cursor`, `run` (a search), `suggest`.
pub mod collect;
pub mod cursor;
pub mod document;
pub mod index;
pub mod indexer;
pub mod query;
pub mod run;
pub mod schema;
pub mod suggest;
#[cfg(test)]
mod tests;

use crate::data::Viewer;
use crate::store::{OrgId, Store};
use crate::telemetry::Metrics;
use index::Opened;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

pub use cursor::Sort;
pub use run::{Facet, Hit, Request, Results};
pub use suggest::Suggestion;

/// Seconds a caller is told to wait while an index is being built.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// Why a search was not answered.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The caller's input; a 400 naming the parameter.
    #[error("{detail}")]
    Bad { param: &'static str, detail: String },
    /// The org's index is not usable yet; a 503 with `Retry-After`.
    #[error("{0}")]
    Unavailable(String),
    /// The index failed (logged); a 500.
    #[error("the search index failed: {0}")]
    Failed(String),
}

/// Where an org's index stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Answering queries, having applied the journal through `seq`.
    Ready { seq: u64 },
    /// Being built (first build, or replacing one that could not be used).
    Building { done: u64, total: u64, reason: String },
}

/// One org's slot: the index queries read (if any) and how it stands.
struct Slot {
    opened: Option<Arc<Opened>>,
    status: Status,
}

/// The search engine: every org's index, for queries, readiness and the indexer.
pub struct Engine {
    root: PathBuf,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    slots: RwLock<BTreeMap<OrgId, Slot>>,
    /// Orgs whose index `docket reindex` asked to rebuild (beside the old one).
    reindex: Mutex<BTreeSet<OrgId>>,
    wake: tokio::sync::Notify,
    /// Bumped after each rebuild finishes (reindex callers wait on it).
    rebuilt: tokio::sync::watch::Sender<u64>,
}

impl Engine {
    /// An engine over the indexes under `data_dir` (nothing opened yet: the
    /// indexer opens or rebuilds each org's index when it starts).
    pub fn new(data_dir: &Path, store: Arc<Store>, metrics: Arc<Metrics>) -> Arc<Engine> {
        Arc::new(Engine {
            root: index::root(data_dir),
            store,
            metrics,
            slots: RwLock::new(BTreeMap::new()),
            reindex: Mutex::new(BTreeSet::new()),
            wake: tokio::sync::Notify::new(),
            rebuilt: tokio::sync::watch::channel(0).0,
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How `org`'s index stands; `None` before the indexer has looked at it.
    pub fn status(&self, org: OrgId) -> Option<Status> {
        self.slots.read().unwrap_or_else(PoisonError::into_inner).get(&org).map(|s| s.status.clone())
    }

    /// Every org's status (for `/readyz` and metrics).
    pub fn statuses(&self) -> BTreeMap<OrgId, Status> {
        self.slots.read().unwrap_or_else(PoisonError::into_inner).iter().map(|(o, s)| (*o, s.status.clone())).collect()
    }

    /// The journal seq `org`'s index holds (for lag and pruning decisions).
    pub fn applied_seq(&self, org: OrgId) -> Option<u64> {
        match self.status(org)? {
            Status::Ready { seq } => Some(seq),
            Status::Building { .. } => None,
        }
    }

    fn set(&self, org: OrgId, opened: Option<Arc<Opened>>, status: Status) {
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        let slot = slots.entry(org).or_insert(Slot { opened: None, status: status.clone() });
        if opened.is_some() {
            slot.opened = opened;
        }
        slot.status = status;
    }

    /// Marks `org` as building: queries answer 503 unless an old index keeps serving (`keep`).
    fn building(&self, org: OrgId, done: u64, total: u64, reason: &str, keep: bool) {
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        let slot = slots.entry(org).or_insert(Slot { opened: None, status: Status::Ready { seq: 0 } });
        if keep && slot.opened.is_some() {
            return;
        }
        slot.opened = None;
        slot.status = Status::Building { done, total, reason: reason.to_string() };
    }

    /// Records that `org`'s index now holds the journal through `seq`.
    fn applied(&self, org: OrgId, seq: u64) {
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get_mut(&org)
            && slot.opened.is_some()
        {
            slot.status = Status::Ready { seq };
        }
    }

    /// The index a query of `org` reads, or why there is none.
    fn usable(&self, org: OrgId) -> Result<Arc<Opened>, SearchError> {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        match slots.get(&org) {
            Some(Slot { opened: Some(o), .. }) => Ok(o.clone()),
            Some(Slot { status: Status::Building { done, total, reason }, .. }) => Err(SearchError::Unavailable(
                format!("this firm's search index is being built ({reason}; {done} of {total} records); retry shortly"),
            )),
            _ => Err(SearchError::Unavailable(
                "this firm's search index is not ready yet (the indexer is starting); retry shortly".into(),
            )),
        }
    }

    /// A search as the viewer: their org's index, their walls inside the query.
    pub fn search(&self, viewer: &Viewer, req: &Request) -> Result<Results, SearchError> {
        self.search_in(viewer.org(), viewer.hidden_matters(), req)
    }

    /// Type-ahead suggestions as the viewer.
    pub fn suggest(&self, viewer: &Viewer, q: &str, limit: usize) -> Result<Vec<Suggestion>, SearchError> {
        self.suggest_in(viewer.org(), viewer.hidden_matters(), q, limit)
    }

    /// A search of `org`'s index with `hidden` matters screened off.
    fn search_in(&self, org: OrgId, hidden: &BTreeSet<String>, req: &Request) -> Result<Results, SearchError> {
        let started = Instant::now();
        let opened = self.usable(org)?;
        let result = run::run(&opened, org.0, req, hidden).map_err(|e| match e {
            run::RunError::Bad { param, detail } => SearchError::Bad { param, detail },
            run::RunError::Index(e) => failed(e),
        });
        self.observe("search", started);
        result
    }

    fn suggest_in(
        &self,
        org: OrgId,
        hidden: &BTreeSet<String>,
        q: &str,
        limit: usize,
    ) -> Result<Vec<Suggestion>, SearchError> {
        let started = Instant::now();
        let opened = self.usable(org)?;
        let result = suggest::suggest(&opened, q, limit, hidden).map_err(|e| match e {
            suggest::SuggestError::Bad(detail) => SearchError::Bad { param: "q", detail },
            suggest::SuggestError::Index(e) => failed(e),
        });
        self.observe("suggest", started);
        result
    }

    fn observe(&self, operation: &str, started: Instant) {
        self.metrics.observe(
            "docket_search_query_duration_seconds",
            "Search and type-ahead latency inside the engine.",
            vec![("operation", operation.to_string())],
            started.elapsed().as_secs_f64(),
        );
    }

    /// Asks the indexer to rebuild `orgs` beside their current index (which
    /// keeps serving) and swap atomically; returns at once.
    pub fn request_reindex(&self, orgs: impl IntoIterator<Item = OrgId>) {
        self.reindex.lock().unwrap_or_else(PoisonError::into_inner).extend(orgs);
        self.wake.notify_one();
    }

    /// A receiver bumped after every finished rebuild.
    pub fn rebuilds(&self) -> tokio::sync::watch::Receiver<u64> {
        self.rebuilt.subscribe()
    }

    /// Whether a reindex of `org` is still waiting or running.
    pub fn reindex_pending(&self, org: OrgId) -> bool {
        self.reindex.lock().unwrap_or_else(PoisonError::into_inner).contains(&org)
    }
}

/// Whether search is usable, for `/readyz`: `"ready"` or `"building"`, and
/// the orgs being built with their progress.
pub fn readiness(engine: &Engine) -> (&'static str, Vec<serde_json::Value>) {
    let building: Vec<serde_json::Value> = engine
        .statuses()
        .into_iter()
        .filter_map(|(org, status)| match status {
            Status::Building { done, total, reason } => {
                Some(serde_json::json!({"org": org.0, "done": done, "total": total, "reason": reason}))
            }
            Status::Ready { .. } => None,
        })
        .collect();
    (if building.is_empty() { "ready" } else { "building" }, building)
}

fn failed(e: impl std::fmt::Display) -> SearchError {
    tracing::error!(error = %e, "search failed");
    SearchError::Failed(e.to_string())
}
