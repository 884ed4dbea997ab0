//! The indexer: follows the store's journal into every org's index.
//!
//! At start each org's index is opened, or (missing, corrupt, older format)
//! rebuilt from one read snapshot and that snapshot's journal head. Then it
//! applies, per org, the record entries after the seq its index holds:
//! delete the document by key, add the record's new document; deletes and
//! purges only delete. Each index commit stores the seq it holds in its
//! payload, so a crash between a store commit and an index commit is caught
//! up at the next start, neither lost nor doubled. It wakes on the store's
//! commit notifications (no polling), gathers what arrived within
//! [`GATHER`] into one commit, and reports the slowest org's seq to the
//! store ([`Store::mark_applied`]) so pruning never overtakes it; a journal
//! pruned past it anyway means a rebuild.
use super::document::{self, document};
use super::index::{self, Opened, Unusable};
use super::{Engine, Status};
use crate::data::{self, RecordChange};
use crate::store::{Follower, OrgId, OrgTask, OrgTaskContext, Store, StoreError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tantivy::{IndexWriter, Term};

const CTX: OrgTaskContext = OrgTaskContext::new(OrgTask::SearchIndex);
/// Journal bytes read per batch.
const BATCH_BYTES: usize = 8 * 1024 * 1024;
/// How long after a commit notification the indexer waits for more, to commit once.
pub const GATHER: Duration = Duration::from_millis(50);
/// An org whose index lags the journal by this many entries (of other orgs)
/// gets an empty commit, so a restart need not re-read them.
const IDLE_COMMIT: u64 = 50_000;
/// Records between progress reports of a rebuild.
const PROGRESS_EVERY: u64 = 2_000;

/// Why the indexer could not go on (logged; it retries).
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("search index files: {0}")]
    Io(#[from] std::io::Error),
}

/// How long an org's writer may go unused before it is released (its
/// threads end and its heap goes back); the next change opens a new one.
pub const WRITER_IDLE: Duration = Duration::from_secs(30);

/// One org's writer (while in use) and the seq its last commit holds.
struct OrgWriter {
    /// `None` while released: every change it took is committed.
    writer: Option<IndexWriter>,
    opened: Arc<Opened>,
    /// Durable: the payload of the last commit.
    seq: u64,
    /// When the writer last took a change or a commit.
    used: Instant,
}

impl OrgWriter {
    fn new(writer: IndexWriter, opened: Arc<Opened>, seq: u64) -> OrgWriter {
        OrgWriter { writer: Some(writer), opened, seq, used: Instant::now() }
    }

    /// The writer, opened again if it was released.
    fn writer(&mut self) -> Result<&mut IndexWriter, IndexError> {
        self.used = Instant::now();
        let writer = match self.writer.take() {
            Some(writer) => writer,
            None => index::writer(&self.opened.index)?,
        };
        Ok(self.writer.insert(writer))
    }

    /// Releases the writer when it has been idle for [`WRITER_IDLE`],
    /// after its merges finish.
    fn release_if_idle(&mut self, org: OrgId) {
        if self.used.elapsed() < WRITER_IDLE {
            return;
        }
        if let Some(writer) = self.writer.take()
            && let Err(e) = writer.wait_merging_threads()
        {
            tracing::warn!(org = %org, error = %e, "a search index merge failed while its writer was released");
        }
    }
}

/// The follower's state (moved onto the blocking pool for each step).
pub struct Indexer {
    engine: Arc<Engine>,
    orgs: BTreeMap<OrgId, OrgWriter>,
    /// Every entry up to here is applied (or was in a rebuild) for every org.
    position: u64,
    /// Orgs whose index must be rebuilt (found unusable at start, or a failed rebuild).
    pending: Vec<(OrgId, String)>,
    /// Rebuilds running on their own threads.
    building: BTreeMap<OrgId, Building>,
}

/// Called with `(done, total)` as a rebuild goes.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// A new generation of an org's index, built from one snapshot, not yet in use.
struct Built {
    generation: String,
    index: tantivy::Index,
    writer: IndexWriter,
    /// The journal head of the snapshot it was built from.
    head: u64,
}

/// Builds a new generation of `org`'s index beside the one in use from one
/// read snapshot, committed with that snapshot's journal head.
fn build(root: &std::path::Path, store: &Store, org: OrgId, progress: Progress<'_>) -> Result<Built, IndexError> {
    let (generation, index) = index::create_next(root, org)?;
    let mut writer = index::writer(&index)?;
    let (_, fields) = super::schema::Fields::schema();
    let scope = CTX.org_scope(org);
    let head = store.read(|r| {
        let head = r.journal_head()?;
        let total = data::count_records(r, &scope)?;
        let mut done = 0u64;
        progress(0, total);
        data::visit_records(r, &scope, |record| {
            if let Some(doc) = document(&fields, &record) {
                writer.add_document(doc).map_err(|e| StoreError::Io(format!("search index: {e}")))?;
            }
            done += 1;
            if done.is_multiple_of(PROGRESS_EVERY) {
                progress(done, total);
            }
            Ok(true)
        })?;
        progress(done, total);
        Ok(head)
    })?;
    index::commit(&mut writer, head)?;
    Ok(Built { generation, index, writer, head })
}

/// Builds `org`'s index and puts it in use at once (no server follows the journal).
fn rebuild_now(root: &std::path::Path, store: &Store, org: OrgId, progress: Progress<'_>) -> Result<u64, IndexError> {
    let built = build(root, store, org, progress)?;
    drop(built.writer);
    index::swap(root, org, &built.generation)?;
    Ok(built.head)
}

/// Rebuilds every org's index under `data_dir` from `store` (restore calls
/// this after replacing a store, with no server running: the indexes must
/// match the restored data). Returns the orgs rebuilt and their journal heads.
pub fn rebuild_all(data_dir: &std::path::Path, store: &Store) -> Result<Vec<(OrgId, u64)>, IndexError> {
    let root = index::root(data_dir);
    let mut out = vec![];
    for org in store.list_orgs()? {
        out.push((org.id, rebuild_now(&root, store, org.id, &mut |_, _| {})?));
    }
    Ok(out)
}

/// Rebuilds one org's index beside the one in use and swaps it in; for
/// `docket reindex` when no server runs (the server's indexer does it
/// otherwise). `progress` sees `(done, total)`.
pub fn reindex_offline(
    data_dir: &std::path::Path,
    store: &Store,
    org: OrgId,
    progress: Progress<'_>,
) -> Result<u64, IndexError> {
    rebuild_now(&index::root(data_dir), store, org, progress)
}

/// A rebuild running on a thread of its own while the indexer follows the journal for the others.
struct Building {
    /// Whether the old index serves (and is followed) until the new one is in use.
    keep: bool,
    reason: String,
    /// The follower's position when it began: its snapshot holds at least this (the pruning floor).
    from: u64,
    result: Arc<std::sync::Mutex<Option<Result<Built, IndexError>>>>,
}

/// Reports a rebuild's progress: the org's status, metrics, a log line per tenth.
fn reporter(engine: &Arc<Engine>, org: OrgId, reason: &str, keep: bool) -> impl FnMut(u64, u64) + use<> {
    let (engine, reason) = (engine.clone(), reason.to_string());
    let mut logged = 0u64;
    move |done: u64, total: u64| {
        engine.building(org, done, total, &reason, keep);
        let tenth = (done * 10).checked_div(total).unwrap_or(10);
        if tenth > logged {
            logged = tenth;
            tracing::info!(org = %org, done, total, reason, "building the search index");
        }
        let labels = vec![("org", org.to_string())];
        let m = &engine.metrics;
        m.gauge("docket_search_reindex_done", "Records written by the running rebuild.", labels.clone(), done as f64);
        m.gauge("docket_search_reindex_total", "Records the running rebuild will write.", labels, total as f64);
    }
}

impl Indexer {
    pub fn new(engine: Arc<Engine>) -> Indexer {
        engine.store.register_follower(Follower::Search);
        Indexer { engine, orgs: BTreeMap::new(), position: 0, pending: vec![], building: BTreeMap::new() }
    }

    /// Opens every org's index, rebuilding those that cannot be used, and
    /// returns once they are all in use (tests; the server uses [`start`]).
    pub fn open_all(&mut self) -> Result<(), IndexError> {
        self.open_existing()?;
        while !self.step()? || self.is_building() {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Whether a rebuild is waiting or running (reindex requests included).
    pub fn is_building(&self) -> bool {
        let requested = !self.engine.reindex.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty();
        requested || !self.building.is_empty() || !self.pending.is_empty()
    }

    /// Opens every org's usable index; an unusable one of an org without
    /// records is rebuilt at once (it is empty), the others are marked
    /// building and rebuilt in the background.
    pub fn open_existing(&mut self) -> Result<(), IndexError> {
        let orgs = self.engine.store.list_orgs()?;
        for org in &orgs {
            match index::open(&self.engine.root, org.id) {
                Ok(opened) => {
                    index::remove_leftovers(&index::org_dir(&self.engine.root, org.id), &opened.generation);
                    let writer = index::writer(&opened.index)?;
                    let seq = opened.seq;
                    let opened = Arc::new(opened);
                    self.engine.set(org.id, Some(opened.clone()), Status::Ready { seq });
                    self.orgs.insert(org.id, OrgWriter::new(writer, opened, seq));
                }
                Err(why) => {
                    if why != Unusable::Missing {
                        tracing::warn!(org = %org.id, problem = %why, "the search index cannot be used; rebuilding it");
                    }
                    let scope = CTX.org_scope(org.id);
                    if self.engine.store.read(|r| data::count_records(r, &scope))? == 0 {
                        let mut progress = reporter(&self.engine, org.id, &why.to_string(), false);
                        let built = build(&self.engine.root, &self.engine.store, org.id, &mut progress)?;
                        self.install(org.id, built)?;
                    } else {
                        self.engine.building(org.id, 0, 0, &why.to_string(), false);
                        self.pending.push((org.id, why.to_string()));
                    }
                }
            }
        }
        self.position = self.orgs.values().map(|w| w.seq).min().unwrap_or(0);
        self.announce();
        Ok(())
    }

    /// Starts rebuilding `org` on a thread of its own (unless it already is).
    fn start_rebuild(&mut self, org: OrgId, reason: &str, keep: bool) {
        if self.building.contains_key(&org) {
            return;
        }
        self.engine.building(org, 0, 0, reason, keep);
        let result = Arc::new(std::sync::Mutex::new(None));
        let (engine, slot) = (self.engine.clone(), result.clone());
        let mut progress = reporter(&self.engine, org, reason, keep);
        let spawned = std::thread::Builder::new().name(format!("search-rebuild-{org}")).spawn(move || {
            let built = build(&engine.root, &engine.store, org, &mut progress);
            *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(built);
            engine.wake.notify_one();
        });
        if let Err(e) = spawned {
            *result.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Err(IndexError::Io(e)));
        }
        let from = self.position;
        self.building.insert(org, Building { keep, reason: reason.to_string(), from, result });
    }

    /// Puts a finished rebuild in use: applies what the journal holds after its
    /// snapshot up to the follower's position, commits, swaps it in atomically.
    fn install(&mut self, org: OrgId, mut built: Built) -> Result<(), IndexError> {
        let (_, fields) = super::schema::Fields::schema();
        let mut at = built.head;
        while at < self.position {
            let batch = self.engine.store.journal_since(&CTX, at, BATCH_BYTES)?;
            for entry in batch.entries.iter().filter(|e| e.org == Some(org) && e.seq <= self.position) {
                if let Some(change) = data::record_change(entry) {
                    apply(&mut built.writer, &fields, change)?;
                }
            }
            let next = batch.next_after(at);
            if next == at {
                break;
            }
            at = next;
        }
        let seq = built.head.max(self.position);
        index::commit(&mut built.writer, seq)?;
        // The old writer goes before its generation's files do.
        self.orgs.remove(&org);
        index::swap(&self.engine.root, org, &built.generation)?;
        let opened = Arc::new(index::opened(built.index, built.generation, seq)?);
        opened.reader.reload()?;
        self.engine.set(org, Some(opened.clone()), Status::Ready { seq });
        self.orgs.insert(org, OrgWriter::new(built.writer, opened, seq));
        tracing::info!(org = %org, seq, "search index in use");
        Ok(())
    }

    /// Starts the rebuilds asked for (unusable at start, `docket reindex`) and
    /// puts the finished ones in use.
    fn tend_rebuilds(&mut self) -> Result<(), IndexError> {
        for (org, why) in std::mem::take(&mut self.pending) {
            self.start_rebuild(org, &why, false);
        }
        let wanted: Vec<OrgId> =
            self.engine.reindex.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().copied().collect();
        for org in wanted {
            self.start_rebuild(org, "reindex", true);
        }
        let finished: Vec<OrgId> = self
            .building
            .iter()
            .filter(|(_, b)| b.result.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some())
            .map(|(org, _)| *org)
            .collect();
        for org in finished {
            let Some(b) = self.building.remove(&org) else { continue };
            let result = b.result.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            let outcome = match result {
                Some(Ok(built)) => self.install(org, built),
                Some(Err(e)) => Err(e),
                None => Ok(()),
            };
            self.engine.reindex.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&org);
            self.engine.rebuilt.send_modify(|n| *n += 1);
            if let Err(e) = outcome {
                tracing::error!(org = %org, error = %e, reason = b.reason, "the search index rebuild failed");
                if !b.keep {
                    self.pending.push((org, b.reason));
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Applies one batch of the journal; `true` when it reached the head.
    pub fn step(&mut self) -> Result<bool, IndexError> {
        self.tend_rebuilds()?;
        let batch = match self.engine.store.journal_since(&CTX, self.position, BATCH_BYTES) {
            Ok(batch) => batch,
            Err(StoreError::Refused { problem }) => {
                tracing::warn!(%problem, "the journal was pruned past the search index; rebuilding every index");
                for org in self.engine.store.list_orgs()? {
                    self.start_rebuild(org.id, "the journal was pruned past it", true);
                }
                // The old indexes serve (stale) until their rebuilds, which hold the journal through their snapshots.
                self.position = self.engine.store.journal_head()?;
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(bad) = &batch.bad {
            tracing::error!(error = %bad, "the search indexer stopped at a journal entry it cannot read");
        }
        let end = batch.next_after(self.position);
        let mut touched = std::collections::BTreeSet::new();
        for entry in &batch.entries {
            let Some(org) = entry.org else { continue };
            if !self.orgs.contains_key(&org) && !self.building.contains_key(&org) {
                // A new org: its index starts from a snapshot that holds this entry.
                self.start_rebuild(org, "new firm", false);
            }
            let Some(w) = self.orgs.get_mut(&org) else { continue };
            if entry.seq <= w.seq {
                continue;
            }
            let Some(change) = data::record_change(entry) else { continue };
            let f = w.opened.fields;
            apply(w.writer()?, &f, change)?;
            touched.insert(org);
        }
        for (org, w) in &mut self.orgs {
            if w.seq >= end {
                continue;
            }
            if touched.contains(org) || end - w.seq >= IDLE_COMMIT {
                index::commit(w.writer()?, end)?;
                w.opened.reader.reload()?;
                w.seq = end;
            }
            self.engine.applied(*org, end);
        }
        self.position = end;
        for (org, w) in &mut self.orgs {
            w.release_if_idle(*org);
        }
        self.announce();
        self.report(batch.head);
        Ok(batch.bad.is_some() || end >= batch.head)
    }

    /// Tells the store the slowest durable seq (pruning waits for it),
    /// counting running rebuilds at the position they began from.
    fn announce(&self) {
        let floor = self.orgs.values().map(|w| w.seq).chain(self.building.values().map(|b| b.from)).min();
        self.engine.store.mark_applied(Follower::Search, floor.unwrap_or(self.position));
    }

    fn report(&self, head: u64) {
        let m = &self.engine.metrics;
        m.gauge(
            "docket_search_lag_entries",
            "Journal entries not yet in the search index (journal head minus applied seq).",
            vec![],
            head.saturating_sub(self.position) as f64,
        );
        for (org, w) in &self.orgs {
            let labels = vec![("org", org.to_string())];
            let docs = w.opened.reader.searcher().num_docs();
            m.gauge("docket_search_documents", "Documents in an org's search index.", labels.clone(), docs as f64);
            let bytes = index::bytes_on_disk(&self.engine.root, *org, &w.opened.generation);
            m.gauge("docket_search_index_bytes", "Bytes on disk of an org's search index.", labels, bytes as f64);
        }
    }
}

/// Applies one record change: delete the document by key, add the new one.
fn apply(writer: &mut IndexWriter, f: &super::schema::Fields, change: RecordChange) -> Result<(), IndexError> {
    match change {
        RecordChange::Put(record) => {
            writer.delete_term(Term::from_field_text(f.key, &document::key(record.kind, &record.id)));
            if let Some(doc) = document(f, &record) {
                writer.add_document(doc)?;
            }
        }
        RecordChange::Delete(kind, id) => {
            writer.delete_term(Term::from_field_text(f.key, &document::key(kind, &id)));
        }
    }
    Ok(())
}

/// Starts the indexer: opens every org's usable index (and builds empty
/// ones) before returning, then in the background rebuilds the unusable ones
/// and follows the journal until `stop` turns true. Blocking work runs on
/// the blocking pool.
pub async fn start(engine: Arc<Engine>, mut stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    let mut heads = engine.store.subscribe();
    let first = {
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || {
            let mut indexer = Box::new(Indexer::new(engine));
            let opened = indexer.open_existing();
            (indexer, opened)
        })
        .await
    };
    let mut indexer = match first {
        Ok((indexer, Ok(()))) => Some(indexer),
        Ok((indexer, Err(e))) => {
            tracing::error!(error = %e, "the search indexes could not all be opened; retrying in the background");
            Some(indexer)
        }
        Err(_) => None,
    };
    tokio::spawn(async move {
        loop {
            let Some(mut state) = indexer.take() else { return };
            let ran = tokio::task::spawn_blocking(move || {
                let result = state.step();
                (state, result)
            })
            .await;
            let Ok((state, result)) = ran else {
                tracing::error!("the search indexer's step panicked; search stops following the journal");
                return;
            };
            indexer = Some(state);
            let caught_up = match result {
                Ok(caught_up) => caught_up,
                Err(e) => {
                    tracing::error!(error = %e, "the search indexer failed; retrying in 5 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = stop.changed() => return,
                    }
                    continue;
                }
            };
            if *stop.borrow() {
                return;
            }
            if caught_up {
                tokio::select! {
                    changed = heads.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        tokio::time::sleep(GATHER).await;
                    }
                    _ = engine.wake.notified() => {}
                    // A step with nothing to apply releases the writers gone idle.
                    _ = tokio::time::sleep(WRITER_IDLE) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    })
}

/// A progress reporter for `docket reindex` run on the store: a bar on a
/// terminal, a log line every tenth otherwise.
pub fn progress_reporter(org: &str) -> impl FnMut(u64, u64) + use<> {
    use std::io::IsTerminal as _;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} records ({eta})") {
            bar.set_style(style);
        }
        bar.set_prefix(org.to_string());
        bar
    });
    let org = org.to_string();
    let mut logged = 0u64;
    move |done, total| match &bar {
        Some(bar) => {
            bar.set_length(total);
            bar.set_position(done);
            if done == total {
                bar.finish();
            }
        }
        None => {
            let tenth = (done * 10).checked_div(total).unwrap_or(10);
            if tenth > logged || done == total {
                logged = tenth;
                eprintln!("{org}: {done} of {total} records indexed");
            }
        }
    }
}
