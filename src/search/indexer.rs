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
use std::time::Duration;
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

/// One org's writer and the seq its last commit holds.
struct OrgWriter {
    writer: IndexWriter,
    opened: Arc<Opened>,
    /// Durable: the payload of the last commit.
    seq: u64,
}

/// The follower's state (moved onto the blocking pool for each step).
pub struct Indexer {
    engine: Arc<Engine>,
    orgs: BTreeMap<OrgId, OrgWriter>,
    /// Every entry up to here is applied (or was in a rebuild) for every org.
    position: u64,
    /// Orgs whose index must be rebuilt before following (found unusable at start).
    pending: Vec<(OrgId, String)>,
}

/// Called with `(done, total)` as a rebuild goes.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// Builds a new generation of `org`'s index from one snapshot, puts it in use
/// atomically, and returns its writer with the snapshot's journal head.
fn rebuild(
    root: &std::path::Path,
    store: &Store,
    org: OrgId,
    progress: Progress<'_>,
) -> Result<(IndexWriter, Opened), IndexError> {
    let (generation, idx) = index::create_next(root, org)?;
    let mut writer = index::writer(&idx)?;
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
    index::swap(root, org, &generation)?;
    let opened = index::opened(idx, generation, head)?;
    opened.reader.reload()?;
    Ok((writer, opened))
}

/// Rebuilds every org's index under `data_dir` from `store` (restore calls
/// this after replacing a store: the indexes must match the restored data).
/// Returns the orgs rebuilt and their journal heads.
pub fn rebuild_all(data_dir: &std::path::Path, store: &Store) -> Result<Vec<(OrgId, u64)>, IndexError> {
    let root = index::root(data_dir);
    let mut out = vec![];
    for org in store.list_orgs()? {
        let (_, opened) = rebuild(&root, store, org.id, &mut |_, _| {})?;
        out.push((org.id, opened.seq));
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
    let (_, opened) = rebuild(&index::root(data_dir), store, org, progress)?;
    Ok(opened.seq)
}

impl Indexer {
    pub fn new(engine: Arc<Engine>) -> Indexer {
        engine.store.register_follower(Follower::Search);
        Indexer { engine, orgs: BTreeMap::new(), position: 0, pending: vec![] }
    }

    /// Opens every org's index, rebuilding those that cannot be used.
    pub fn open_all(&mut self) -> Result<(), IndexError> {
        self.open_existing()?;
        self.rebuild_pending()
    }

    /// Opens every org's usable index; an unusable one of an org without
    /// records is rebuilt at once (it is empty), the others are marked
    /// building and left to [`Indexer::rebuild_pending`] (in the background).
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
                    self.orgs.insert(org.id, OrgWriter { writer, opened, seq });
                }
                Err(why) => {
                    if why != Unusable::Missing {
                        tracing::warn!(org = %org.id, problem = %why, "the search index cannot be used; rebuilding it");
                    }
                    let scope = CTX.org_scope(org.id);
                    if self.engine.store.read(|r| data::count_records(r, &scope))? == 0 {
                        self.rebuild_org(org.id, &why.to_string(), false)?;
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

    /// Builds the indexes [`Indexer::open_existing`] found unusable.
    fn rebuild_pending(&mut self) -> Result<(), IndexError> {
        while let Some((org, why)) = self.pending.first().cloned() {
            self.rebuild_org(org, &why, false)?;
            self.pending.remove(0);
        }
        Ok(())
    }

    /// Rebuilds `org` (beside the old index when `keep`: it serves meanwhile).
    fn rebuild_org(&mut self, org: OrgId, reason: &str, keep: bool) -> Result<(), IndexError> {
        let engine = self.engine.clone();
        engine.building(org, 0, 0, reason, keep);
        // The old writer holds the old generation's lock; it is not needed once the new one is built.
        let metrics = engine.metrics.clone();
        let mut logged = 0u64;
        let mut progress = |done: u64, total: u64| {
            engine.building(org, done, total, reason, keep);
            let tenth = (done * 10).checked_div(total).unwrap_or(10);
            if tenth > logged {
                logged = tenth;
                tracing::info!(org = %org, done, total, reason, "building the search index");
            }
            let labels = vec![("org", org.to_string())];
            metrics.gauge(
                "docket_search_reindex_done",
                "Records written by the running rebuild.",
                labels.clone(),
                done as f64,
            );
            metrics.gauge(
                "docket_search_reindex_total",
                "Records the running rebuild will write.",
                labels,
                total as f64,
            );
        };
        let started = std::time::Instant::now();
        let (writer, opened) = rebuild(&engine.root, &engine.store, org, &mut progress)?;
        let seq = opened.seq;
        tracing::info!(org = %org, seq, seconds = started.elapsed().as_secs_f64(), reason, "search index built");
        let opened = Arc::new(opened);
        // Drop the old writer before the old generation's files go (they were removed by the swap).
        self.orgs.remove(&org);
        engine.set(org, Some(opened.clone()), Status::Ready { seq });
        self.orgs.insert(org, OrgWriter { writer, opened, seq });
        self.engine.rebuilt.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Runs the rebuilds `docket reindex` asked for.
    fn reindex_requested(&mut self) -> Result<(), IndexError> {
        let wanted: Vec<OrgId> =
            self.engine.reindex.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().copied().collect();
        for org in wanted {
            let result = self.rebuild_org(org, "reindex", true);
            self.engine.reindex.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&org);
            self.engine.rebuilt.send_modify(|n| *n += 1);
            result?;
        }
        Ok(())
    }

    /// Applies one batch of the journal; `true` when it reached the head.
    pub fn step(&mut self) -> Result<bool, IndexError> {
        self.rebuild_pending()?;
        self.reindex_requested()?;
        let batch = match self.engine.store.journal_since(&CTX, self.position, BATCH_BYTES) {
            Ok(batch) => batch,
            Err(StoreError::Refused { problem }) => {
                tracing::warn!(%problem, "the journal was pruned past the search index; rebuilding every index");
                for org in self.engine.store.list_orgs()? {
                    self.rebuild_org(org.id, "the journal was pruned past it", true)?;
                }
                // Each rebuild holds the journal through its own snapshot's head.
                self.position = self.orgs.values().map(|w| w.seq).min().unwrap_or(self.position);
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
            if !self.orgs.contains_key(&org) {
                // A new org: its index starts from a snapshot that holds this entry.
                self.rebuild_org(org, "new firm", false)?;
            }
            let Some(w) = self.orgs.get_mut(&org) else { continue };
            if entry.seq <= w.seq {
                continue;
            }
            let Some(change) = data::record_change(entry) else { continue };
            let f = w.opened.fields;
            match change? {
                RecordChange::Put(record) => {
                    w.writer.delete_term(Term::from_field_text(f.key, &document::key(record.kind, &record.id)));
                    if let Some(doc) = document(&f, &record) {
                        w.writer.add_document(doc)?;
                    }
                }
                RecordChange::Delete(kind, id) => {
                    w.writer.delete_term(Term::from_field_text(f.key, &document::key(kind, &id)));
                }
            }
            touched.insert(org);
        }
        for (org, w) in &mut self.orgs {
            if w.seq >= end {
                continue;
            }
            if touched.contains(org) || end - w.seq >= IDLE_COMMIT {
                index::commit(&mut w.writer, end)?;
                w.opened.reader.reload()?;
                w.seq = end;
            }
            self.engine.applied(*org, end);
        }
        self.position = end;
        self.announce();
        self.report(batch.head);
        Ok(batch.bad.is_some() || end >= batch.head)
    }

    /// Tells the store the slowest org's durable seq (pruning waits for it).
    fn announce(&self) {
        let floor = self.orgs.values().map(|w| w.seq).min().unwrap_or(self.position);
        self.engine.store.mark_applied(Follower::Search, floor);
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
