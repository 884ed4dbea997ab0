//! Sync: keeps the store's copy of one org's Clio data equal to Clio's.
//!
//! - **Listings.** Each kind is one cursor listing, except notes: Clio serves
//!   `GET /notes` only with `type=Matter` or `type=Contact`, so notes are two
//!   listings, each with its own checkpoint.
//! - **Passes.** A pass walks a listing's cursor pages (`order=id(asc)`), first
//!   in full, later with `updated_since` = *when the last completed pass
//!   started* (docket's clock) minus an overlap window. Pages come in id order,
//!   not time order, so the newest `updated_at` seen says nothing about records
//!   edited behind the cursor; the pass start does. The overlap also absorbs
//!   clock skew between docket and Clio up to its length.
//! - **Pages.** Each page's records and the checkpoint (the next page's URL)
//!   commit in **one** store transaction, so a crash or restart resumes at the
//!   next page. Records whose etag did not change are not written. A record
//!   that does not parse is logged with its id and skipped.
//! - **Fencing.** A [`SyncScope`] carries the org's sync generation from when
//!   it began; a disconnect or purge bumps it ([`bump_generation`]), and every
//!   later write of that sync is refused inside its own transaction.
//! - **Dead cursors.** A saved `next` link Clio refuses with a 4xx (its page
//!   token expired: 400 or 410) restarts that listing from its last safe
//!   watermark (`synced_through` less the overlap; the beginning before a pass
//!   ever completed), at most [`MAX_RESTARTS`] times a run; the checkpoint
//!   counts restarts and keeps the last reason for the sync status.
//! - **Reconcile both ways.** The reconcile lists every id with its etag
//!   (`fields=id,etag`): ids the store lacks (a record restored in Clio) and
//!   etags that differ (an edit stamped behind the watermark) are fetched whole
//!   (`ids[]`, [`REFETCH_BATCH`] a request) and stored.
//! - **Deletions** are found by the same listing, compared with the store's
//!   keys (and etags: nothing else of a value is read). Every delete is decided
//!   inside one write transaction against the row as it stands then: a record
//!   written after the listing began (by a webhook, say) is kept. A listing
//!   that would delete more than `clio.max_delete_share` of a kind is *held*
//!   (reported in the sync status) until a second listing agrees (finds the
//!   same ids gone) or an admin confirms ([`confirm_held`]). An empty listing
//!   never agrees: only an admin can confirm deleting every record of a kind.
use super::client::{ClioClient, ClioError};
use crate::data;
use crate::records::{Kind, Record, record_key};
use crate::store::{OrgId, OrgScope, OrgTaskContext, RECORD_INDEX, RECORDS, Reader, SYNC_STATE, Store, StoreError, Tx};
use crate::timestamp::Timestamp;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Records updated this long before the last pass started are fetched again.
pub const OVERLAP_SECONDS: i64 = 300;
/// Times one run restarts a listing whose saved page link Clio refused.
const MAX_RESTARTS: u32 = 3;
/// A deletion reconcile may always delete this many records of a kind, whatever the share.
pub const ALWAYS_DELETABLE: u64 = 1;
const GENERATION: &[u8] = b"generation";
/// The note types Clio lists separately (`GET /notes` requires one).
pub const NOTE_TYPES: [&str; 2] = ["Matter", "Contact"];

/// One cursor listing of a kind: the kind, and for notes the `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listing {
    pub kind: Kind,
    pub note_type: Option<&'static str>,
}

impl Listing {
    /// The listings that together hold every record of `kind`.
    pub fn of(kind: Kind) -> Vec<Listing> {
        match kind {
            Kind::Note => NOTE_TYPES.iter().map(|t| Listing { kind, note_type: Some(t) }).collect(),
            _ => vec![Listing { kind, note_type: None }],
        }
    }

    /// Where its checkpoint is kept: the kind's name, plus `.<type>` for notes.
    fn key(self) -> String {
        match self.note_type {
            Some(t) => format!("{}.{t}", self.kind),
            None => self.kind.as_str().to_string(),
        }
    }

    /// The query parameter that selects it, if any.
    pub fn filter(self) -> Option<(&'static str, &'static str)> {
        self.note_type.map(|t| ("type", t))
    }
}

/// The sync acting for one org. With [`crate::data::Viewer`] it is the only
/// way to read records; it remembers the org's sync generation from when it
/// began, so a disconnect or purge fences every write it would still make.
#[derive(Clone, Debug)]
pub struct SyncScope {
    scope: OrgScope,
    generation: u64,
}

impl SyncScope {
    /// The sync of `org`, acting as the task `ctx` names, from now on.
    pub fn begin(store: &Store, ctx: &OrgTaskContext, org: OrgId) -> Result<SyncScope, StoreError> {
        let scope = ctx.org_scope(org);
        let generation = store.read(|r| generation(r, &scope))?;
        Ok(SyncScope { scope, generation })
    }

    pub fn scope(&self) -> &OrgScope {
        &self.scope
    }

    /// Whether this sync may still write; read inside the writing transaction.
    fn live(&self, w: &Tx) -> Result<bool, StoreError> {
        Ok(generation(w, &self.scope)? == self.generation)
    }
}

fn generation(r: &impl Reader, scope: &OrgScope) -> Result<u64, StoreError> {
    Ok(r.get_json(scope, &SYNC_STATE, GENERATION)?.unwrap_or(0))
}

/// Fences every sync of the org that began before this transaction: call it
/// in the transaction that disconnects the org or purges its data.
pub fn bump_generation(w: &mut Tx, scope: &OrgScope) -> Result<(), StoreError> {
    let next = generation(w, scope)?.wrapping_add(1);
    w.put_json(scope, &SYNC_STATE, GENERATION, &next)
}

/// An instant stored by an earlier docket as Clio's string; unreadable ones read as unknown.
fn lenient_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.and_then(|s| Timestamp::parse(&s).ok()))
}

/// Where one listing's sync stands; stored per org and listing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Checkpoint {
    /// The next page of the pass in progress; `None` between passes.
    pub next_url: Option<String>,
    /// The `updated_since` of the pass in progress (`None`: a full pass).
    #[serde(deserialize_with = "lenient_time")]
    pub pass_since: Option<Timestamp>,
    /// When the pass in progress started (docket's clock).
    #[serde(deserialize_with = "lenient_time")]
    pub pass_started_at: Option<Timestamp>,
    /// Every change made in Clio before this instant is in the store (less
    /// the overlap): when the last completed pass started.
    #[serde(deserialize_with = "lenient_time")]
    pub synced_through: Option<Timestamp>,
    pub full_done: bool,
    /// Records stored (changed or new), unchanged and skipped as unparseable, all time.
    pub stored: u64,
    pub unchanged: u64,
    pub skipped: u64,
    pub pages: u64,
    /// Unix microseconds.
    pub last_success_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    /// Times Clio refused a saved page link (an expired page token) and the
    /// listing started again from its watermark; the last time and why.
    pub restarts: u64,
    pub last_restart_at: Option<i64>,
    pub last_restart_reason: Option<String>,
}

/// Deletions a listing found but the guard held back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// Records the listing would delete, of how many stored.
    pub count: u64,
    pub of: u64,
    /// SHA-256 (hex) of the sorted ids: a second listing agrees if it finds the same.
    pub digest: String,
    pub listed_at: Timestamp,
    /// Who confirmed them (an admin through the API); the next listing then deletes.
    pub confirmed_by: Option<String>,
}

/// The deletion reconcile of one kind; stored per org and kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Deletions {
    /// Records deleted because Clio no longer lists them (deletes that removed a row).
    pub deleted: u64,
    pub last_listed_at: Option<Timestamp>,
    pub held: Option<Held>,
    /// Records fetched again because Clio lists them and the store lacks them
    /// or holds another etag (restored records, backdated edits).
    pub refetched: u64,
}

/// What one run of [`sync_kind`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub pages: u64,
    pub stored: u64,
    pub unchanged: u64,
    pub skipped: u64,
}

impl Report {
    fn add(&mut self, other: &Report) {
        self.pages += other.pages;
        self.stored += other.stored;
        self.unchanged += other.unchanged;
        self.skipped += other.skipped;
    }
}

/// What one deletion reconcile did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub deleted: u64,
    /// Deletions held back by the guard.
    pub held: Option<u64>,
    /// Records fetched and stored because the store lacked them or held another etag.
    pub refetched: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Clio(#[from] ClioError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the sync was stopped (the firm disconnected or its data was purged); nothing more was written")]
    Fenced,
}

pub fn checkpoint(r: &impl Reader, scope: &OrgScope, listing: Listing) -> Result<Checkpoint, StoreError> {
    Ok(r.get_json(scope, &SYNC_STATE, listing.key().as_bytes())?.unwrap_or_default())
}

fn save_checkpoint(w: &mut Tx, scope: &OrgScope, listing: Listing, cp: &Checkpoint) -> Result<(), StoreError> {
    w.put_json(scope, &SYNC_STATE, listing.key().as_bytes(), cp)
}

fn deletions_key(kind: Kind) -> String {
    format!("reconcile.{kind}")
}

pub fn deletions(r: &impl Reader, scope: &OrgScope, kind: Kind) -> Result<Deletions, StoreError> {
    Ok(r.get_json(scope, &SYNC_STATE, deletions_key(kind).as_bytes())?.unwrap_or_default())
}

fn save_deletions(w: &mut Tx, scope: &OrgScope, kind: Kind, d: &Deletions) -> Result<(), StoreError> {
    w.put_json(scope, &SYNC_STATE, deletions_key(kind).as_bytes(), d)
}

/// Where the sync of one kind stands, over all its listings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub pages: u64,
    pub stored: u64,
    pub skipped: u64,
    pub deleted: u64,
    pub in_progress: bool,
    pub full_done: bool,
    /// The earliest of the listings' (unknown if one never succeeded).
    pub last_success_at: Option<i64>,
    pub synced_through: Option<Timestamp>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub held: Option<Held>,
    /// Listings restarted after Clio refused a saved page link, the latest and why.
    pub restarts: u64,
    pub last_restart_at: Option<i64>,
    pub last_restart_reason: Option<String>,
    /// Records the reconcile fetched because the store lacked them or held another etag.
    pub refetched: u64,
}

/// The sync state of `kind` (checkpoints and deletions; no records are read).
pub fn progress(r: &impl Reader, scope: &OrgScope, kind: Kind) -> Result<Progress, StoreError> {
    let d = deletions(r, scope, kind)?;
    let mut p =
        Progress { deleted: d.deleted, held: d.held, refetched: d.refetched, full_done: true, ..Progress::default() };
    let mut first = true;
    for listing in Listing::of(kind) {
        let cp = checkpoint(r, scope, listing)?;
        p.pages += cp.pages;
        p.stored += cp.stored;
        p.skipped += cp.skipped;
        p.in_progress |= cp.next_url.is_some();
        p.full_done &= cp.full_done;
        let earliest = |a: Option<i64>, b: Option<i64>| a.zip(b).map(|(a, b)| a.min(b));
        p.last_success_at = if first { cp.last_success_at } else { earliest(p.last_success_at, cp.last_success_at) };
        p.synced_through =
            if first { cp.synced_through } else { p.synced_through.zip(cp.synced_through).map(|(a, b)| a.min(b)) };
        if p.last_error.is_none() {
            (p.last_error, p.last_error_at) = (cp.last_error, cp.last_error_at);
        }
        p.restarts += cp.restarts;
        if cp.last_restart_at > p.last_restart_at {
            (p.last_restart_at, p.last_restart_reason) = (cp.last_restart_at, cp.last_restart_reason);
        }
        first = false;
    }
    Ok(p)
}

/// The stored copy's etag and write time (and a contact's name), read without the rest of the record.
#[derive(Deserialize)]
struct Stamp {
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    stored_at: Option<Timestamp>,
    #[serde(default)]
    raw: Option<NameOnly>,
}

#[derive(Deserialize)]
struct NameOnly {
    #[serde(default)]
    name: Option<String>,
}

/// Contacts renamed since their dependants were last refreshed (see [`refresh_dependants`]).
const RENAMED: &[u8] = b"renamed.contact";
/// The queue under [`RENAMED`]: contact id → when it was queued (the write's time, micros).
type Renamed = std::collections::BTreeMap<String, i64>;

/// The records that carry a copy of a contact's name: matters and bills whose client it is.
const DEPENDANTS: [Kind; 2] = [Kind::Matter, Kind::Bill];

fn stamp(bytes: &[u8]) -> Result<Stamp, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("records: {e}")))
}

/// Writes `record` (stamped with the transaction's time) unless the stored
/// copy has the same etag; whether it wrote.
fn upsert(w: &mut Tx, scope: &OrgScope, record: Record) -> Result<bool, StoreError> {
    write_if(w, scope, record, etag_differs)
}

/// Whether `new` is another version than the stored `old` (by etag; no etag: always).
fn etag_differs(old: &[u8], new: &Record) -> Result<bool, StoreError> {
    let old = stamp(old)?;
    Ok(old.etag.is_none() || old.etag != new.etag)
}

/// Whether anything Clio sent differs from the stored `old` (a nested name can change under the same etag).
fn raw_differs(old: &[u8], new: &Record) -> Result<bool, StoreError> {
    let old: Record = serde_json::from_slice(old).map_err(|e| StoreError::Corrupt(format!("records: {e}")))?;
    Ok(old.etag != new.etag || old.raw != new.raw)
}

/// Decides whether a fetched record is written over the stored one.
type Differs = fn(&[u8], &Record) -> Result<bool, StoreError>;

/// Writes `record` if there is no stored copy or `differs(stored, record)`;
/// a contact whose name changed is queued for [`refresh_dependants`] in the same transaction.
fn write_if(w: &mut Tx, scope: &OrgScope, mut record: Record, differs: Differs) -> Result<bool, StoreError> {
    let key = record_key(record.kind, &record.id);
    if let Some(bytes) = w.get(scope, &RECORDS, &key)? {
        if !differs(&bytes, &record)? {
            return Ok(false);
        }
        let old_name = stamp(&bytes)?.raw.and_then(|r| r.name);
        if record.kind == Kind::Contact && old_name.as_deref() != record.raw["name"].as_str() {
            // Keyed to this write's time: a refresh that began before it does not take it off the queue.
            let mut renamed: Renamed = w.get_json(scope, &SYNC_STATE, RENAMED)?.unwrap_or_default();
            renamed.insert(record.id.clone(), w.time());
            w.put_json(scope, &SYNC_STATE, RENAMED, &renamed)?;
        }
    }
    record.stored_at = Some(Timestamp::from_micros(w.time()));
    data::put_record(w, scope, &record)?;
    Ok(true)
}

/// The ids of `kind`'s records whose client is `contact` (through the record index).
fn clients_of(
    r: &crate::store::ReadTx,
    scope: &OrgScope,
    kind: Kind,
    contact: &str,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let prefix = data::index::value_prefix(kind, data::index::Field::Client, contact.as_bytes());
    let mut ids = vec![];
    r.visit(scope, &RECORD_INDEX, &prefix, &prefix, |key, _| {
        ids.push(key[prefix.len()..].to_vec());
        Ok(true)
    })?;
    Ok(ids)
}

/// Names copied into other records go stale when a contact is renamed (Clio
/// need not bump a matter whose client was renamed), so the matters and bills
/// whose client a queued contact is are fetched again, as Clio serves them now
/// (its nested `client{name}` is the contact's current name), and stored when
/// anything in them differs. The queue is emptied only once they are stored,
/// so a crash refreshes them at the next run. How many records changed.
pub async fn refresh_dependants(store: &Store, sync: &SyncScope, client: &ClioClient) -> Result<u64, SyncError> {
    let queued: Renamed = store.read(|r| r.get_json(&sync.scope, &SYNC_STATE, RENAMED))?.unwrap_or_default();
    if queued.is_empty() {
        return Ok(0);
    }
    let mut written = 0;
    for kind in DEPENDANTS {
        let mut ids = store.read(|r| {
            let mut ids = vec![];
            for contact in queued.keys() {
                ids.extend(clients_of(r, &sync.scope, kind, contact)?);
            }
            Ok(ids)
        })?;
        ids.sort();
        ids.dedup();
        let listing = Listing { kind, note_type: None };
        written += fetch_ids(store, sync, client, listing, &ids, raw_differs).await?;
    }
    let done = store.write(|w| {
        if !sync.live(w)? {
            return Ok(None);
        }
        let mut left: Renamed = w.get_json(&sync.scope, &SYNC_STATE, RENAMED)?.unwrap_or_default();
        // A contact renamed again meanwhile stays queued for the next run.
        left.retain(|id, at| queued.get(id) != Some(at));
        w.put_json(&sync.scope, &SYNC_STATE, RENAMED, &left)?;
        Ok(Some(()))
    })?;
    done.ok_or(SyncError::Fenced)?;
    Ok(written)
}

/// A change Clio pushed (a webhook delivery).
pub enum Pushed {
    Upsert(Record),
    Delete(Kind, String),
}

/// Applies a pushed change inside `w`, so the caller commits it with what
/// belongs to it (its audit event): `None` if this sync was fenced (the firm
/// disconnected since it began), else whether a row changed.
pub fn apply_pushed(w: &mut Tx, sync: &SyncScope, change: Pushed) -> Result<Option<bool>, StoreError> {
    // An erasure stopped the sync: nothing pushed is kept until someone starts it again.
    if !sync.live(w)? || super::connection::sync_stopped(w, &sync.scope)? {
        return Ok(None);
    }
    match change {
        Pushed::Upsert(record) => upsert(w, &sync.scope, record).map(Some),
        Pushed::Delete(kind, id) => data::delete_record(w, &sync.scope, kind, &id).map(Some),
    }
}

/// Stores one record Clio pushed, in a transaction of its own; whether it wrote.
pub fn store_one(store: &Store, sync: &SyncScope, record: Record) -> Result<bool, SyncError> {
    store.write(|w| apply_pushed(w, sync, Pushed::Upsert(record)))?.ok_or(SyncError::Fenced)
}

/// One stored record, as the sync sees it (no ethical walls: the API reads through `data::Viewer`).
pub fn record(r: &impl Reader, sync: &SyncScope, kind: Kind, id: &str) -> Result<Option<Record>, StoreError> {
    r.get_json(&sync.scope, &RECORDS, &record_key(kind, id))
}

/// Every stored record of `kind`, in key order, as the sync sees it.
pub fn records(r: &impl Reader, sync: &SyncScope, kind: Kind) -> Result<Vec<Record>, StoreError> {
    r.scan_json(&sync.scope, &RECORDS, &[kind.code()])
}

/// A fetched page.
struct Parsed {
    records: Vec<Record>,
    skipped: u64,
    next: Option<String>,
}

/// Stores one page and the checkpoint pointing past it, in one transaction;
/// `None` (nothing written) when the sync was fenced.
fn apply_page(
    store: &Store,
    sync: &SyncScope,
    listing: Listing,
    cp: &Checkpoint,
    page: Parsed,
) -> Result<Option<(Checkpoint, Report)>, StoreError> {
    let Parsed { records, skipped, next } = page;
    store.write(|w| {
        if !sync.live(w)? {
            return Ok(None);
        }
        let mut report = Report { pages: 1, skipped, ..Report::default() };
        for record in records {
            if upsert(w, &sync.scope, record)? {
                report.stored += 1;
            } else {
                report.unchanged += 1;
            }
        }
        let mut next_cp = cp.clone();
        next_cp.next_url = next;
        next_cp.pages += 1;
        next_cp.stored += report.stored;
        next_cp.unchanged += report.unchanged;
        next_cp.skipped += skipped;
        save_checkpoint(w, &sync.scope, listing, &next_cp)?;
        Ok(Some((next_cp, report)))
    })
}

/// Parses a page's objects; unparseable ones are logged and counted, never fatal.
fn parse_page(kind: Kind, data: Vec<serde_json::Value>) -> (Vec<Record>, u64) {
    let mut skipped = 0;
    let records = data
        .into_iter()
        .filter_map(|raw| match Record::from_clio(kind, raw) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(kind = %e.kind, id = %e.id, problem = %e.problem, "skipped a Clio record that does not parse");
                skipped += 1;
                None
            }
        })
        .collect();
    (records, skipped)
}

fn record_error(store: &Store, sync: &SyncScope, listing: Listing, error: &SyncError) {
    if matches!(error, SyncError::Fenced) {
        return;
    }
    let now = store.clock().now_micros();
    let result = store.write(|w| {
        if !sync.live(w)? {
            return Ok(());
        }
        let mut cp = checkpoint(w, &sync.scope, listing)?;
        cp.last_error = Some(error.to_string());
        cp.last_error_at = Some(now);
        save_checkpoint(w, &sync.scope, listing, &cp)
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not record a sync error");
    }
}

/// Runs (or resumes) one pass of every listing of `kind` to its end.
pub async fn sync_kind(
    store: &Arc<Store>,
    sync: &SyncScope,
    client: &ClioClient,
    kind: Kind,
) -> Result<Report, SyncError> {
    let mut report = Report::default();
    let mut failed = None;
    for listing in Listing::of(kind) {
        match run_pass(store, sync, client, listing).await {
            Ok(r) => report.add(&r),
            Err(e) => {
                record_error(store, sync, listing, &e);
                // A fenced sync writes nothing more; another listing's failure does not stop this one.
                if matches!(e, SyncError::Fenced) {
                    return Err(e);
                }
                failed = Some(e);
            }
        }
    }
    failed.map_or(Ok(report), Err)
}

type Applying = tokio::task::JoinHandle<Result<Option<(Checkpoint, Report)>, StoreError>>;

/// Waits for the page being stored (if any) and folds its result in.
async fn settle(applying: &mut Option<Applying>, cp: &mut Checkpoint, report: &mut Report) -> Result<(), SyncError> {
    if let Some(handle) = applying.take() {
        let done = handle.await.map_err(|e| StoreError::Io(format!("storing a page failed: {e}")))??;
        let (done, r) = done.ok_or(SyncError::Fenced)?;
        *cp = done;
        report.add(&r);
    }
    Ok(())
}

/// The next page to fetch: `next` if it stays under the connection's API base.
fn follow(client: &ClioClient, next: Option<String>) -> Result<Option<String>, SyncError> {
    match next {
        Some(next) if !next.starts_with(client.endpoints().api_base.as_str()) => {
            Err(SyncError::Clio(ClioError::Refused {
                status: 200,
                message: format!("the next-page link leaves the Clio API ({next}); not followed"),
            }))
        }
        next => Ok(next),
    }
}

/// An instant moved back by the overlap and down to a whole second.
fn minus_overlap(t: Timestamp) -> Timestamp {
    let back = t.plus_micros(-OVERLAP_SECONDS * 1_000_000).micros();
    Timestamp::from_micros(back - back.rem_euclid(1_000_000))
}

/// Begins a pass: from the watermark less the overlap (a full pass before the first completes).
fn start_pass(store: &Store, client: &ClioClient, listing: Listing, cp: &mut Checkpoint) -> String {
    cp.pass_started_at = Some(Timestamp::from_micros(store.clock().now_micros()));
    cp.pass_since = cp.synced_through.map(minus_overlap);
    client.first_page_url(listing.kind, listing.kind.fields(), cp.pass_since, listing.filter())
}

/// Whether Clio refused a page link for good: a 4xx other than 401 and 429
/// (those are retried inside the client), as an expired page token answers.
fn dead_cursor(e: &ClioError) -> bool {
    matches!(e, ClioError::Refused { status, .. } if (400..500).contains(status))
}

/// Clio refused the saved page link: the listing starts again from its last
/// safe watermark (`synced_through`, or a full listing before the first pass
/// completed), keeping the interrupted pass's start, which is earlier and so
/// safe as the next watermark. Recorded in the checkpoint for the sync status.
fn restart_pass(
    store: &Store,
    sync: &SyncScope,
    client: &ClioClient,
    listing: Listing,
    cp: &mut Checkpoint,
    why: &ClioError,
) -> Result<String, SyncError> {
    let started = cp.pass_started_at;
    let url = start_pass(store, client, listing, cp);
    cp.pass_started_at = started.or(cp.pass_started_at);
    let from = cp.pass_since.map_or("the beginning (no pass has completed yet)".to_string(), |t| t.to_rfc3339());
    let reason = format!("Clio refused the saved page link ({why}); the listing restarted from {from}");
    tracing::warn!(org = %sync.scope.org(), listing = %listing.key(), %reason, "a Clio listing restarted");
    let now = store.clock().now_micros();
    let saved = store.write(|w| {
        if !sync.live(w)? {
            return Ok(None);
        }
        let mut stored = checkpoint(w, &sync.scope, listing)?;
        stored.next_url = None;
        stored.pass_started_at = cp.pass_started_at;
        stored.pass_since = cp.pass_since;
        stored.restarts += 1;
        stored.last_restart_at = Some(now);
        stored.last_restart_reason = Some(reason.clone());
        save_checkpoint(w, &sync.scope, listing, &stored)?;
        Ok(Some(stored))
    })?;
    *cp = saved.ok_or(SyncError::Fenced)?;
    Ok(url)
}

/// Fetches page n+1 while page n is parsed and stored on the blocking pool,
/// so network and disk overlap; pages still commit one after another, in order.
async fn run_pass(
    store: &Arc<Store>,
    sync: &SyncScope,
    client: &ClioClient,
    listing: Listing,
) -> Result<Report, SyncError> {
    let kind = listing.kind;
    let mut cp = store.read(|r| checkpoint(r, &sync.scope, listing))?;
    let mut report = Report::default();
    let base = &client.endpoints().api_base;
    let (mut url, mut on_cursor) = match cp.next_url.clone() {
        // A cursor saved for another Clio host (the connection changed) is not followed.
        Some(resume) if resume.starts_with(base.as_str()) => (resume, true),
        _ => (start_pass(store, client, listing, &mut cp), false),
    };
    let mut restarts = 0;
    let mut applying: Option<Applying> = None;
    loop {
        let fetched = client.page(&url, kind).await;
        settle(&mut applying, &mut cp, &mut report).await?;
        let page = match fetched {
            Ok(page) => page,
            // A refused first page is a real error, and a run restarts a listing a bounded number of times.
            Err(e) if on_cursor && dead_cursor(&e) && restarts < MAX_RESTARTS => {
                (on_cursor, restarts) = (false, restarts + 1);
                url = restart_pass(store, sync, client, listing, &mut cp, &e)?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        on_cursor = page.next.is_some();
        let next = follow(client, page.next.clone());
        let (store, sync, page_cp) = (store.clone(), sync.clone(), cp.clone());
        applying = Some(tokio::task::spawn_blocking(move || {
            let (records, skipped) = parse_page(kind, page.data);
            apply_page(&store, &sync, listing, &page_cp, Parsed { records, skipped, next: page.next })
        }));
        match next {
            Ok(Some(next)) => url = next,
            Ok(None) => break,
            Err(e) => {
                settle(&mut applying, &mut cp, &mut report).await?;
                return Err(e);
            }
        }
    }
    settle(&mut applying, &mut cp, &mut report).await?;
    let now = store.clock().now_micros();
    store
        .write(|w| {
            if !sync.live(w)? {
                return Ok(None);
            }
            let mut done = checkpoint(w, &sync.scope, listing)?;
            done.synced_through = done.pass_started_at.or(done.synced_through);
            done.full_done = true;
            done.next_url = None;
            done.last_success_at = Some(now);
            done.last_error = None;
            save_checkpoint(w, &sync.scope, listing, &done)?;
            Ok(Some(()))
        })?
        .ok_or(SyncError::Fenced)?;
    Ok(report)
}

/// What Clio lists of a kind: each id's etag and the listing it is in.
type Listed = HashMap<Vec<u8>, (Option<String>, Listing)>;

/// Every id and etag Clio lists for `kind` (`fields=id,etag`, every listing of
/// the kind). A page link Clio refuses (an expired page token) starts that
/// listing again, a bounded number of times.
async fn list_live(client: &ClioClient, kind: Kind) -> Result<Listed, SyncError> {
    let mut live = HashMap::new();
    for listing in Listing::of(kind) {
        let first = client.first_page_url(kind, "id,etag", None, listing.filter());
        let (mut url, mut restarts) = (Some(first.clone()), 0);
        while let Some(u) = url {
            let page = match client.page(&u, kind).await {
                Ok(page) => page,
                Err(e) if u != first && dead_cursor(&e) && restarts < MAX_RESTARTS => {
                    restarts += 1;
                    tracing::warn!(%kind, error = %e, "Clio refused a page link of the id listing; listing again");
                    url = Some(first.clone());
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for v in &page.data {
                let id = match &v["id"] {
                    serde_json::Value::Number(n) => n.to_string().into_bytes(),
                    serde_json::Value::String(s) => s.clone().into_bytes(),
                    _ => continue,
                };
                live.insert(id, (v["etag"].as_str().map(str::to_owned), listing));
            }
            url = follow(client, page.next)?;
        }
    }
    Ok(live)
}

/// Refetches what Clio lists that the store lacks or holds with another etag
/// (`differing`, per listing); how many records it wrote.
async fn refetch_differing(
    store: &Store,
    sync: &SyncScope,
    client: &ClioClient,
    kind: Kind,
    differing: Listed,
) -> Result<u64, SyncError> {
    let mut written = 0;
    for listing in Listing::of(kind) {
        let mut ids: Vec<Vec<u8>> =
            differing.iter().filter(|(_, (_, l))| *l == listing).map(|(id, _)| id.clone()).collect();
        if ids.is_empty() {
            continue;
        }
        ids.sort();
        tracing::info!(org = %sync.scope.org(), listing = %listing.key(), count = ids.len(), "fetching records the store lacks or holds stale");
        written += fetch_ids(store, sync, client, listing, &ids, etag_differs).await?;
    }
    Ok(written)
}

/// The most ids one refetch request names (`ids[]`).
const REFETCH_BATCH: usize = 100;

/// Fetches the records `ids` (of `listing`) whole and stores those that
/// `differs` from the stored copy, a batch per transaction; how many it wrote.
async fn fetch_ids(
    store: &Store,
    sync: &SyncScope,
    client: &ClioClient,
    listing: Listing,
    ids: &[Vec<u8>],
    differs: Differs,
) -> Result<u64, SyncError> {
    let kind = listing.kind;
    let mut written = 0;
    for batch in ids.chunks(REFETCH_BATCH) {
        let mut url = Some(client.first_page_url(kind, kind.fields(), None, listing.filter()));
        if let Some(u) = url.as_mut() {
            for id in batch {
                u.push_str("&ids%5B%5D=");
                u.push_str(&url::form_urlencoded::byte_serialize(id).collect::<String>());
            }
        }
        while let Some(u) = url {
            let page = client.page(&u, kind).await?;
            url = follow(client, page.next)?;
            let (records, _) = parse_page(kind, page.data);
            let stored = store.write(|w| {
                if !sync.live(w)? {
                    return Ok(None);
                }
                let mut n = 0;
                for record in records {
                    n += u64::from(write_if(w, &sync.scope, record, differs)?);
                }
                Ok(Some(n))
            })?;
            written += stored.ok_or(SyncError::Fenced)?;
        }
    }
    Ok(written)
}

/// How many records of a kind holding `stored` one listing may delete.
fn allowance(stored: u64, max_share: f64) -> u64 {
    // Truncation is the point: a share of a count, rounded down.
    ((stored as f64 * max_share.clamp(0.0, 1.0)) as u64).max(ALWAYS_DELETABLE)
}

fn digest(ids: &[Vec<u8>]) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for id in ids {
        h.update((id.len() as u64).to_le_bytes());
        h.update(id);
    }
    hex::encode(h.finalize())
}

/// Finds records deleted in Clio: lists every id and removes stored records
/// Clio no longer has, unless written after the listing began. More than
/// `max_share` of the kind is held instead (see the module doc).
pub async fn reconcile(
    store: &Store,
    sync: &SyncScope,
    client: &ClioClient,
    kind: Kind,
    max_share: f64,
) -> Result<Reconciled, SyncError> {
    let listed_at = Timestamp::from_micros(store.clock().now_micros());
    let mut live = list_live(client, kind).await?;
    let listed_nothing = live.is_empty();
    // The ids the store holds that Clio no longer lists; what is left of `live`
    // afterwards is what the store lacks or holds with another etag.
    let prefix = [kind.code()];
    let (stored, gone) = store.read(|r| {
        let (mut stored, mut gone) = (0u64, vec![]);
        r.visit(&sync.scope, &RECORDS, &prefix, &prefix, |key, value| {
            stored += 1;
            let id = &key[prefix.len()..];
            match live.get(id) {
                None => gone.push(id.to_vec()),
                Some((etag, _)) if etag.is_some() && *etag == stamp(value)?.etag => {
                    live.remove(id);
                }
                Some(_) => {}
            }
            Ok(true)
        })?;
        Ok((stored, gone))
    })?;
    let refetched = refetch_differing(store, sync, client, kind, live).await?;
    let outcome = store.write(|w| {
        if !sync.live(w)? {
            return Ok(None);
        }
        let scope = &sync.scope;
        let mut state = deletions(w, scope, kind)?;
        state.last_listed_at = Some(listed_at);
        let (count, free) = (gone.len() as u64, allowance(stored, max_share));
        if count > free {
            let digest = digest(&gone);
            let agreed = state.held.as_ref().is_some_and(|h| {
                (h.digest == digest && !listed_nothing)
                    || (h.confirmed_by.is_some() && count <= h.count.saturating_add(free))
            });
            if !agreed {
                tracing::warn!(org = %scope.org(), %kind, count, stored, "a Clio listing would delete more than the allowed share; held");
                state.held = Some(Held { count, of: stored, digest, listed_at, confirmed_by: None });
                state.refetched += refetched;
                save_deletions(w, scope, kind, &state)?;
                return Ok(Some(Reconciled { deleted: 0, held: Some(count), refetched }));
            }
        }
        let mut deleted = 0;
        for id in &gone {
            let key = [prefix.as_slice(), id].concat();
            let Some(bytes) = w.get(scope, &RECORDS, &key)? else { continue };
            // Written after the listing began (a webhook, say): Clio had it then.
            if stamp(&bytes)?.stored_at.is_some_and(|t| t >= listed_at) {
                continue;
            }
            if data::delete_record(w, scope, kind, &String::from_utf8_lossy(id))? {
                deleted += 1;
            }
        }
        state.deleted += deleted;
        state.refetched += refetched;
        state.held = None;
        save_deletions(w, scope, kind, &state)?;
        Ok(Some(Reconciled { deleted, held: None, refetched }))
    })?;
    outcome.ok_or(SyncError::Fenced)
}

/// An admin confirms every held deletion of the org: the next listing of each
/// such kind deletes (if it finds no more than were held plus the usual
/// allowance). Returns the kinds and the counts confirmed.
pub fn confirm_held(w: &mut Tx, scope: &OrgScope, by: &str) -> Result<Vec<(Kind, u64)>, StoreError> {
    let mut confirmed = vec![];
    for kind in Kind::ALL {
        let mut state = deletions(w, scope, kind)?;
        if let Some(held) = state.held.as_mut().filter(|h| h.confirmed_by.is_none()) {
            held.confirmed_by = Some(by.to_string());
            confirmed.push((kind, held.count));
            save_deletions(w, scope, kind, &state)?;
        }
    }
    Ok(confirmed)
}

/// Whether an admin confirmed held deletions that no listing has applied yet.
pub fn confirmation_pending(r: &impl Reader, scope: &OrgScope) -> Result<bool, StoreError> {
    for kind in Kind::ALL {
        if deletions(r, scope, kind)?.held.is_some_and(|h| h.confirmed_by.is_some()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Deletes up to `max` of the org's records in one transaction, fenced like
/// every sync write and only while `still` holds inside it (the purge checks
/// the firm is still disconnected and due); when none are left, forgets the
/// sync's progress too (checkpoints, held deletions; the generation stays),
/// so a reconnect starts with a full pass. `Some(deleted)`, or `None` when
/// fenced or `still` failed: nothing was written.
pub fn purge_page(
    store: &Store,
    sync: &SyncScope,
    max: usize,
    still: impl Fn(&Tx) -> Result<bool, StoreError>,
) -> Result<Option<u64>, StoreError> {
    let keys = store.read(|r| {
        let mut keys = vec![];
        r.visit(&sync.scope, &RECORDS, b"", b"", |key, _| {
            keys.push(key.to_vec());
            Ok(keys.len() < max)
        })?;
        Ok(keys)
    })?;
    store.write(|w| {
        if !sync.live(w)? || !still(w)? {
            return Ok(None);
        }
        let mut deleted = 0;
        for key in &keys {
            deleted += u64::from(data::delete_record_at(w, &sync.scope, key)?);
        }
        if keys.is_empty() {
            for (key, _) in w.scan(&sync.scope, &SYNC_STATE, b"")? {
                if key != GENERATION {
                    w.delete(&sync.scope, &SYNC_STATE, &key)?;
                }
            }
        }
        Ok(Some(deleted))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowance_is_a_share_rounded_down_with_a_floor() {
        assert_eq!(allowance(0, 0.2), ALWAYS_DELETABLE);
        assert_eq!(allowance(100, 0.2), 20);
        assert_eq!(allowance(99, 0.2), 19);
        assert_eq!(allowance(10, 1.0), 10);
    }

    #[test]
    fn the_watermark_goes_back_by_the_overlap_to_a_whole_second() {
        let t = Timestamp::parse("2026-01-01T00:10:00.750Z").unwrap();
        assert_eq!(minus_overlap(t), Timestamp::parse("2026-01-01T00:05:00Z").unwrap());
    }

    #[test]
    fn old_checkpoints_load_with_times_as_instants() {
        // As an earlier docket stored it: Clio's strings, a high-water mark, deletes counted here.
        let old = r#"{"next_url":null,"pass_since":"2024-03-01T23:55:00+00:00","high_water":"2024-03-02T00:00:00Z",
            "synced_through":"2024-03-01T19:00:00-05:00","full_done":true,"stored":5,"deleted":2,"pages":1}"#;
        let cp: Checkpoint = serde_json::from_str(old).unwrap();
        assert_eq!(cp.synced_through, Some(Timestamp::parse("2024-03-02T00:00:00Z").unwrap()));
        assert_eq!(cp.pass_since, Some(Timestamp::parse("2024-03-01T23:55:00Z").unwrap()));
        assert!(cp.full_done && cp.stored == 5);
        let unreadable: Checkpoint = serde_json::from_str(r#"{"synced_through":"last tuesday"}"#).unwrap();
        assert_eq!(unreadable.synced_through, None, "an unreadable time means a full pass, not a stuck sync");
    }

    #[test]
    fn notes_are_listed_per_type_with_their_own_checkpoints() {
        let notes = Listing::of(Kind::Note);
        assert_eq!(
            notes.iter().map(|l| l.filter()).collect::<Vec<_>>(),
            [Some(("type", "Matter")), Some(("type", "Contact"))]
        );
        assert_eq!(notes.iter().map(|l| l.key()).collect::<Vec<_>>(), ["note.Matter", "note.Contact"]);
        assert_eq!(Listing::of(Kind::Matter)[0].key(), "matter");
    }
}
