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

use crate::data::Viewer;
use crate::store::{OrgId, Store};
use crate::telemetry::Metrics;
use index::Opened;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

pub use cursor::Sort;
pub use indexer::{rebuild_all, reindex_offline};
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

#[cfg(test)]
mod tests {
    // The engine end to end on a real store: analysis as users meet it, walls
    // inside totals and facets, cursors, following the journal, crash
    // consistency, corrupt indexes and reindex.
    use super::indexer::Indexer;
    use super::*;
    use crate::clio::sync::{Pushed, SyncScope, apply_pushed, store_one};
    use crate::clock::Clock;
    use crate::records::{Kind, Record};
    use crate::store::{OrgTask, OrgTaskContext};
    use serde_json::{Value, json};

    struct Firm {
        _dir: tempfile::TempDir,
        data: PathBuf,
        store: Arc<Store>,
        engine: Arc<Engine>,
        org: OrgId,
        sync: SyncScope,
    }

    const CTX: OrgTaskContext = OrgTaskContext::new(OrgTask::Test);

    fn firm() -> Firm {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        let store = Arc::new(Store::open(&data.join("s.redb"), Clock::system()).unwrap());
        let org = crate::control::create_org(&store, &CTX, "firm", "Firm").unwrap().id;
        let sync = SyncScope::begin(&store, &CTX, org).unwrap();
        let engine = Engine::new(&data, store.clone(), Arc::new(Metrics::default()));
        Firm { _dir: dir, data, store, engine, org, sync }
    }

    impl Firm {
        fn put(&self, kind: Kind, raw: Value) {
            store_one(&self.store, &self.sync, Record::from_clio(kind, raw).unwrap()).unwrap();
        }

        fn delete(&self, kind: Kind, id: &str) {
            self.store.write(|w| apply_pushed(w, &self.sync, Pushed::Delete(kind, id.into()))).unwrap();
        }

        /// A fresh indexer (as at a start), opened and caught up.
        fn indexer(&self) -> Indexer {
            let mut i = Indexer::new(self.engine.clone());
            i.open_all().unwrap();
            catch_up(&mut i);
            i
        }

        fn search_as(&self, hidden: &[&str], req: Request) -> Results {
            let hidden = hidden.iter().map(|s| s.to_string()).collect();
            self.engine.search_in(self.org, &hidden, &Request { limit: req.limit.max(1), ..req }).unwrap()
        }

        fn q(&self, q: &str) -> Vec<String> {
            let r = self.search_as(&[], Request { q: q.into(), limit: 50, ..Request::default() });
            r.hits.into_iter().map(|h| format!("{}:{}", h.kind, h.id)).collect()
        }
    }

    fn catch_up(i: &mut Indexer) {
        for _ in 0..1000 {
            if i.step().unwrap() && !i.is_building() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("the indexer did not catch up");
    }

    fn sample(f: &Firm) {
        f.put(
            Kind::Matter,
            json!({"id": 1, "display_number": "00042-Smith", "description": "Smith v. Jones, breach of contract",
            "status": "Open", "open_date": "2024-01-10", "client": {"id": 10, "name": "Jane Smith"},
            "practice_area": {"id": 1, "name": "Litigation"}, "responsible_attorney": {"id": 100, "name": "Ann Lawyer"}}),
        );
        f.put(
            Kind::Matter,
            json!({"id": 2, "display_number": "00043-Müller", "description": "Estate of Renée Müller",
            "status": "Closed", "open_date": "2023-05-01", "client": {"id": 11, "name": "Renée Müller"},
            "practice_area": {"id": 2, "name": "Estates"}, "responsible_attorney": {"id": 101, "name": "Bob Counsel"}}),
        );
        f.put(
            Kind::Contact,
            json!({"id": 10, "name": "Jane Smith", "primary_email_address": "Jane.Smith@Example.com",
            "primary_phone_number": "(555) 010-2233"}),
        );
        f.put(
            Kind::Activity,
            json!({"id": 500, "note": "Running late on the deposition summary", "date": "2024-02-01",
            "billed": false, "matter": {"id": 1, "display_number": "00042-Smith"}}),
        );
        f.put(
            Kind::Activity,
            json!({"id": 501, "note": "She runs the filing", "date": "2024-02-02", "billed": true,
            "matter": {"id": 2, "display_number": "00043-Müller"}}),
        );
        f.put(
            Kind::Note,
            json!({"id": 700, "subject": "Call", "detail": "<script>alert(1)</script> contract review for Smith",
            "date": "2024-03-01", "matter": {"id": 1}}),
        );
    }

    #[test]
    fn legal_analysis_finds_what_people_type() {
        let f = firm();
        sample(&f);
        let _i = f.indexer();
        for q in ["00042-Smith", "00042", "42", "00042-sm*", "000*", "number:00042-smith"] {
            assert!(f.q(q).contains(&"matter:1".to_string()), "{q}: {:?}", f.q(q));
        }
        for q in ["(555) 010-2233", "555.010.2233", "+15550102233", "phone:5550102233", "010-2233"] {
            assert_eq!(f.q(q), ["contact:10"], "{q}");
        }
        assert!(!f.q("00043").contains(&"matter:1".to_string()), "a number is not a typo of its neighbour");
        assert!(f.q("00043").contains(&"matter:2".to_string()));
        assert_eq!(f.q("email:jane.smith@example.com"), ["contact:10"]);
        assert!(f.q("jane.smith@example.com").contains(&"contact:10".to_string()));
        assert!(f.q("renee muller").contains(&"matter:2".to_string()), "accents and case fold");
        assert!(f.q("RENÉE").contains(&"matter:2".to_string()));
        assert!(f.q("smitth").contains(&"contact:10".to_string()), "one typo in a word of 6");
        assert!(f.q("smi*").contains(&"contact:10".to_string()), "prefix");
        assert!(f.q("\"breach of contract\"").contains(&"matter:1".to_string()), "phrase");
        assert!(!f.q("\"contract of breach\"").contains(&"matter:1".to_string()), "a phrase keeps its order");
        assert_eq!(f.q("client:\"jane smith\" status:open"), ["matter:1"]);
        assert!(!f.q("smith NOT jones").contains(&"matter:1".to_string()));
        assert!(f.q("jones OR müller").contains(&"matter:2".to_string()));
        // Stemming matches both, the exact form ranks first.
        assert_eq!(f.q("running"), ["activity:500", "activity:501"]);
        assert_eq!(f.q("runs"), ["activity:501", "activity:500"]);
        // Names outrank free text: "Smith" is a name on the contact and matter, text on the note.
        let smith = f.q("smith");
        assert!(smith.iter().position(|h| h == "contact:10") < smith.iter().position(|h| h == "note:700"), "{smith:?}");
    }

    #[test]
    fn snippets_are_escaped_and_marked() {
        let f = firm();
        sample(&f);
        let _i = f.indexer();
        let r = f.search_as(
            &[],
            Request { q: "contract review".into(), kinds: vec![Kind::Note], limit: 5, ..Request::default() },
        );
        let snippet = r.hits[0].snippet.clone().unwrap();
        assert!(snippet.contains("&lt;script&gt;"), "{snippet}");
        assert!(snippet.contains("<mark>contract</mark>") && snippet.contains("<mark>review</mark>"), "{snippet}");
        assert!(!snippet.contains("<script>"));
    }

    #[test]
    fn walls_are_inside_totals_facets_and_suggestions() {
        let f = firm();
        sample(&f);
        let _i = f.indexer();
        let facets = vec![Facet::Kind, Facet::Status, Facet::Billed, Facet::PracticeArea, Facet::ResponsibleAttorney];
        let req = || Request {
            kinds: vec![Kind::Matter, Kind::Activity, Kind::Note],
            facets: facets.clone(),
            limit: 1,
            ..Request::default()
        };
        let admin = f.search_as(&[], req());
        let walled = f.search_as(&["1"], req());
        assert_eq!((admin.total, walled.total), (5, 2), "matter 1, its activity and its note are gone");
        let count = |r: &Results, facet: Facet, value: &str| {
            r.facets
                .iter()
                .find(|(f, _)| *f == facet)
                .and_then(|(_, v)| v.iter().find(|(x, _)| x == value))
                .map(|(_, n)| *n)
        };
        assert_eq!(count(&admin, Facet::Kind, "activity"), Some(2));
        assert_eq!(count(&walled, Facet::Kind, "activity"), Some(1));
        assert_eq!(count(&walled, Facet::Status, "open"), None, "the walled open matter is not counted");
        assert_eq!(count(&admin, Facet::Status, "open"), Some(1));
        assert_eq!(count(&walled, Facet::Billed, "false"), None);
        assert_eq!(count(&walled, Facet::PracticeArea, "Litigation"), None);
        assert_eq!(count(&walled, Facet::ResponsibleAttorney, "101"), Some(1));
        assert_eq!(walled.hits.len(), 1, "pages stay full");
        let suggested = |hidden: &BTreeSet<String>| {
            f.engine.suggest_in(f.org, hidden, "0004", 8).unwrap().into_iter().map(|s| s.id).collect::<Vec<_>>()
        };
        assert_eq!(suggested(&BTreeSet::new()).len(), 2);
        assert_eq!(suggested(&["1".to_string()].into()), ["2"]);
    }

    #[test]
    fn filters_and_dates_narrow() {
        let f = firm();
        sample(&f);
        let _i = f.indexer();
        let ids = |req: Request| {
            f.search_as(&[], Request { limit: 50, ..req }).hits.into_iter().map(|h| h.id).collect::<Vec<_>>()
        };
        assert_eq!(ids(Request { status: Some("OPEN".into()), ..Request::default() }), ["1"]);
        assert_eq!(ids(Request { billed: Some(true), ..Request::default() }), ["501"]);
        assert_eq!(ids(Request { client_id: Some("11".into()), ..Request::default() }), ["2"]);
        assert_eq!(ids(Request { responsible_attorney_id: Some("100".into()), ..Request::default() }), ["1"]);
        let mut under = ids(Request { matter_id: Some("1".into()), ..Request::default() });
        under.sort();
        assert_eq!(under, ["1", "500", "700"]);
        let day = |s| Some(crate::data::Date::parse(s).unwrap());
        let feb = ids(Request { from: day("2024-02-01"), to: day("2024-02-01"), ..Request::default() });
        assert_eq!(feb, ["500"], "inclusive day bounds");
        let by_date =
            ids(Request { kinds: vec![Kind::Activity, Kind::Note], sort: Sort::DateDesc, ..Request::default() });
        assert_eq!(by_date, ["700", "501", "500"]);
        let e = f.engine.search_in(f.org, &BTreeSet::new(), &Request { limit: 5, ..Request::default() }).unwrap_err();
        assert!(matches!(e, SearchError::Bad { param: "q", .. }), "{e}");
    }

    #[test]
    fn cursors_page_through_everything_once() {
        let f = firm();
        for id in 0..57 {
            f.put(Kind::Contact, json!({"id": id, "name": format!("Client {id}"), "title": if id % 3 == 0 { "vip client" } else { "client" }}));
        }
        let _i = f.indexer();
        for sort in [Sort::Relevance, Sort::DateAsc] {
            let mut seen = vec![];
            let mut cursor = None;
            loop {
                let req = Request { q: "client".into(), sort, limit: 10, cursor: cursor.clone(), ..Request::default() };
                let r = f.search_as(&[], req);
                assert_eq!(r.total, 57);
                seen.extend(r.hits.iter().map(|h| h.id.clone()));
                match r.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            let unique: BTreeSet<_> = seen.iter().collect();
            assert_eq!((seen.len(), unique.len()), (57, 57), "{sort:?}: every hit once");
        }
        let first = f.search_as(&[], Request { q: "client".into(), limit: 10, ..Request::default() });
        let foreign = Request { q: "vip".into(), limit: 10, cursor: first.next_cursor.clone(), ..Request::default() };
        let e = f.engine.search_in(f.org, &BTreeSet::new(), &foreign).unwrap_err();
        assert!(matches!(e, SearchError::Bad { param: "cursor", .. }), "{e}");
    }

    #[test]
    fn the_index_follows_changes_deletes_and_restarts_without_loss_or_doubles() {
        let f = firm();
        sample(&f);
        let mut i = f.indexer();
        f.put(Kind::Contact, json!({"id": 20, "name": "Zed Newcomer"}));
        f.put(Kind::Contact, json!({"id": 10, "name": "Jane Smith-Doe"}));
        f.delete(Kind::Note, "700");
        catch_up(&mut i);
        assert_eq!(f.q("newcomer"), ["contact:20"]);
        assert_eq!(f.q("doe"), ["contact:10"]);
        assert_eq!(f.q("kind:contact").len(), 2, "an update replaces, never doubles");
        assert!(f.q("review").is_empty(), "a delete removes");
        let applied = f.engine.applied_seq(f.org).unwrap();
        assert_eq!(applied, f.store.journal_head().unwrap());
        assert_eq!(f.store.applied_floor(), Some(applied));
        // A crash after the store commits, before the index does: changes the index never saw.
        drop(i);
        f.put(Kind::Contact, json!({"id": 21, "name": "Yara Latecomer"}));
        f.put(Kind::Contact, json!({"id": 20, "name": "Zed Renamed"}));
        let _i = f.indexer();
        assert_eq!(f.q("latecomer"), ["contact:21"], "caught up at start");
        assert_eq!(f.q("kind:contact").len(), 3, "nothing applied twice");
        assert!(f.q("newcomer").is_empty());
    }

    #[test]
    fn a_corrupt_or_old_index_is_rebuilt_and_meanwhile_unavailable() {
        let f = firm();
        sample(&f);
        let i = f.indexer();
        let generation = match f.status() {
            Status::Ready { .. } => index::open(f.engine.root(), f.org).unwrap().generation,
            other => panic!("{other:?}"),
        };
        drop(i);
        let dir = index::org_dir(f.engine.root(), f.org).join(&generation);
        std::fs::write(dir.join("meta.json"), b"{garbage").unwrap();
        let engine = Engine::new(&f.data, f.store.clone(), Arc::new(Metrics::default()));
        engine.building(f.org, 0, 0, "test", false);
        let e =
            engine.search_in(f.org, &BTreeSet::new(), &Request { q: "smith".into(), limit: 5, ..Request::default() });
        assert!(matches!(e, Err(SearchError::Unavailable(_))), "503 while building, never partial results");
        let mut i = Indexer::new(engine.clone());
        i.open_all().unwrap();
        let r =
            engine.search_in(f.org, &BTreeSet::new(), &Request { q: "smith".into(), limit: 5, ..Request::default() });
        assert!(r.unwrap().total >= 2, "rebuilt from the store");
    }

    impl Firm {
        fn status(&self) -> Status {
            self.engine.status(self.org).unwrap()
        }
    }

    #[test]
    fn reindex_swaps_while_the_old_index_serves() {
        let f = firm();
        sample(&f);
        let mut i = f.indexer();
        let before = index::open(f.engine.root(), f.org).unwrap().generation;
        f.engine.request_reindex([f.org]);
        assert!(f.engine.reindex_pending(f.org));
        assert!(!f.q("smith").is_empty(), "the old index serves until the swap");
        catch_up(&mut i);
        assert!(!f.engine.reindex_pending(f.org));
        let after = index::open(f.engine.root(), f.org).unwrap().generation;
        assert_ne!(before, after);
        assert!(!index::org_dir(f.engine.root(), f.org).join(&before).exists(), "the old generation is gone");
        assert_eq!(f.q("kind:matter").len(), 2);
        f.put(Kind::Matter, json!({"id": 3, "display_number": "00099-New"}));
        catch_up(&mut i);
        assert_eq!(f.q("kind:matter").len(), 3, "the new index follows the journal");
    }

    #[test]
    fn a_firm_created_later_gets_its_own_index_and_sees_only_its_records() {
        let f = firm();
        sample(&f);
        let mut i = f.indexer();
        let other = crate::control::create_org(&f.store, &CTX, "later", "Later LLP").unwrap().id;
        let sync = SyncScope::begin(&f.store, &CTX, other).unwrap();
        let record = Record::from_clio(Kind::Contact, json!({"id": 10, "name": "Jane Smith of Later"})).unwrap();
        store_one(&f.store, &sync, record).unwrap();
        catch_up(&mut i);
        let req = || Request { q: "smith".into(), limit: 50, ..Request::default() };
        let theirs = f.engine.search_in(other, &BTreeSet::new(), &req()).unwrap();
        assert_eq!(theirs.hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["10"]);
        assert_eq!(theirs.total, 1, "none of the first firm's records");
        assert!(f.search_as(&[], req()).hits.iter().all(|h| h.title != "Jane Smith of Later"));
        assert!(index::org_dir(f.engine.root(), other).join("CURRENT").exists());
    }

    #[test]
    fn a_pruned_journal_means_a_rebuild() {
        let f = firm();
        sample(&f);
        let i = f.indexer();
        drop(i);
        f.put(Kind::Contact, json!({"id": 30, "name": "Pruned Person"}));
        let head = f.store.journal_head().unwrap();
        f.store.prune_journal_before(&crate::store::SystemContext::new(crate::store::Task::Test), head + 1).unwrap();
        f.put(Kind::Contact, json!({"id": 31, "name": "After Prune"}));
        let _i = f.indexer();
        assert_eq!(f.q("pruned")[0], "contact:30", "the exact form first, then the stem");
        assert_eq!(f.q("after prune"), ["contact:31"]);
    }
}
