//! Sync: keeps the store's copy of one org's Clio data equal to Clio's.
//!
//! Per kind, a *pass* walks Clio's cursor pages (`order=id(asc)`), first in
//! full, later with `updated_since` = the newest `updated_at` seen minus an
//! overlap window. Each page's records and the checkpoint (the next page's
//! URL) commit in **one** store transaction, so a crash or restart resumes at
//! the next page: nothing completed is fetched again and nothing is stored
//! twice. Records whose etag did not change are skipped (no write, no journal
//! entry). A record that does not parse is logged with its id and skipped.
//! Deletions are found by reconciling ids (`fields=id`) against the store.
use super::client::{ClioClient, ClioError};
use crate::records::{Kind, Record};
use crate::store::{OrgScope, RECORDS, Reader, SYNC_STATE, Store, StoreError, Tx};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;

/// Records updated this long before the last pass's newest are fetched again.
pub const OVERLAP_SECONDS: i64 = 300;

/// Where the sync of one kind stands; stored per org and kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Checkpoint {
    /// The next page of the pass in progress; `None` between passes.
    pub next_url: Option<String>,
    /// The `updated_since` of the pass in progress (`None`: a full pass).
    pub pass_since: Option<String>,
    /// The newest `updated_at` seen in the pass in progress.
    pub high_water: Option<String>,
    /// The newest `updated_at` of the last completed pass.
    pub synced_through: Option<String>,
    pub full_done: bool,
    /// Records stored (changed or new) and skipped as unparseable, all time.
    pub stored: u64,
    pub unchanged: u64,
    pub skipped: u64,
    pub deleted: u64,
    pub pages: u64,
    /// Unix microseconds.
    pub last_success_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
}

/// What one run of [`sync_kind`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub pages: u64,
    pub stored: u64,
    pub unchanged: u64,
    pub skipped: u64,
    pub deleted: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Clio(#[from] ClioError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The store key of a record: a kind byte, then the Clio id.
pub fn record_key(kind: Kind, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(kind_byte(kind));
    key.extend_from_slice(id.as_bytes());
    key
}

fn kind_byte(kind: Kind) -> u8 {
    Kind::ALL.iter().position(|k| *k == kind).and_then(|p| u8::try_from(p).ok()).unwrap_or(u8::MAX)
}

pub fn checkpoint(r: &impl Reader, scope: &OrgScope, kind: Kind) -> Result<Checkpoint, StoreError> {
    Ok(r.get_json(scope, &SYNC_STATE, kind.as_str().as_bytes())?.unwrap_or_default())
}

fn save_checkpoint(w: &mut Tx, scope: &OrgScope, kind: Kind, cp: &Checkpoint) -> Result<(), StoreError> {
    w.put_json(scope, &SYNC_STATE, kind.as_str().as_bytes(), cp)
}

/// A stored record.
pub fn get(r: &impl Reader, scope: &OrgScope, kind: Kind, id: &str) -> Result<Option<Record>, StoreError> {
    r.get_json(scope, &RECORDS, &record_key(kind, id))
}

/// How many records of `kind` the store holds.
pub fn count(store: &Store, scope: &OrgScope, kind: Kind) -> Result<u64, StoreError> {
    store.read(|r| r.count(scope, &RECORDS, &[kind_byte(kind)]))
}

/// Every stored record of `kind`, in key order.
pub fn all(r: &impl Reader, scope: &OrgScope, kind: Kind) -> Result<Vec<Record>, StoreError> {
    r.scan_json(scope, &RECORDS, &[kind_byte(kind)])
}

fn later(a: Option<String>, b: Option<&String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.as_str() > a.as_str() { b.clone() } else { a }),
        (a, b) => a.or_else(|| b.cloned()),
    }
}

fn minus_overlap(rfc3339: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(rfc3339, &Rfc3339)
        .ok()
        .and_then(|t| (t - time::Duration::seconds(OVERLAP_SECONDS)).format(&Rfc3339).ok())
        .unwrap_or_else(|| rfc3339.to_string())
}

/// A fetched page, parsed.
struct Parsed {
    records: Vec<Record>,
    skipped: u64,
    next: Option<String>,
}

/// Stores one page and the checkpoint pointing past it, in one transaction.
fn apply_page(
    store: &Store,
    scope: &OrgScope,
    kind: Kind,
    cp: &mut Checkpoint,
    page: Parsed,
    report: &mut Report,
) -> Result<(), StoreError> {
    let Parsed { records, skipped, next } = page;
    let mut next_cp = cp.clone();
    let (mut stored, mut unchanged) = (0, 0);
    store.write(|w| {
        for record in &records {
            let key = record_key(kind, &record.id);
            let same = w
                .get_json::<Record>(scope, &RECORDS, &key)?
                .is_some_and(|old| old.etag.is_some() && old.etag == record.etag);
            if same {
                unchanged += 1;
                continue;
            }
            w.put_json(scope, &RECORDS, &key, record)?;
            stored += 1;
            next_cp.high_water = later(next_cp.high_water.take(), record.updated_at.as_ref());
        }
        next_cp.next_url = next.clone();
        next_cp.pages += 1;
        next_cp.stored += stored;
        next_cp.unchanged += unchanged;
        next_cp.skipped += skipped;
        save_checkpoint(w, scope, kind, &next_cp)
    })?;
    *cp = next_cp;
    report.pages += 1;
    report.stored += stored;
    report.unchanged += unchanged;
    report.skipped += skipped;
    Ok(())
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

fn record_error(store: &Store, scope: &OrgScope, kind: Kind, error: &SyncError) {
    let now = store.clock().now_micros();
    let result = store.write(|w| {
        let mut cp = checkpoint(w, scope, kind)?;
        cp.last_error = Some(error.to_string());
        cp.last_error_at = Some(now);
        save_checkpoint(w, scope, kind, &cp)
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not record a sync error");
    }
}

/// Runs (or resumes) one pass of `kind` to its end.
pub async fn sync_kind(
    store: &Arc<Store>,
    scope: &OrgScope,
    client: &ClioClient,
    kind: Kind,
) -> Result<Report, SyncError> {
    let result = run_pass(store, scope, client, kind).await;
    if let Err(e) = &result {
        record_error(store, scope, kind, e);
    }
    result
}

impl Report {
    fn add(&mut self, other: &Report) {
        self.pages += other.pages;
        self.stored += other.stored;
        self.unchanged += other.unchanged;
        self.skipped += other.skipped;
        self.deleted += other.deleted;
    }
}

type Applying = tokio::task::JoinHandle<Result<(Checkpoint, Report), StoreError>>;

/// Waits for the page being stored (if any) and folds its result in.
async fn settle(applying: &mut Option<Applying>, cp: &mut Checkpoint, report: &mut Report) -> Result<(), SyncError> {
    if let Some(handle) = applying.take() {
        let (done, r) = handle.await.map_err(|e| StoreError::Io(format!("storing a page failed: {e}")))??;
        *cp = done;
        report.add(&r);
    }
    Ok(())
}

/// Fetches page n+1 while page n is parsed and stored on the blocking pool,
/// so network and disk overlap; pages still commit one after another, in order.
async fn run_pass(store: &Arc<Store>, scope: &OrgScope, client: &ClioClient, kind: Kind) -> Result<Report, SyncError> {
    let mut cp = store.read(|r| checkpoint(r, scope, kind))?;
    let mut report = Report::default();
    let base = &client.endpoints().api_base;
    let mut url = match cp.next_url.clone() {
        // A cursor saved for another Clio host (the connection changed) is not followed.
        Some(resume) if resume.starts_with(base.as_str()) => resume,
        _ => {
            cp.pass_since = cp.synced_through.as_deref().map(minus_overlap);
            cp.high_water = None;
            client.first_page_url(kind, kind.fields(), cp.pass_since.as_deref())
        }
    };
    let mut applying: Option<Applying> = None;
    loop {
        let fetched = client.page(&url, kind).await;
        settle(&mut applying, &mut cp, &mut report).await?;
        let page = fetched?;
        let next = page.next.clone();
        let (store, scope, mut page_cp) = (store.clone(), scope.clone(), cp.clone());
        applying = Some(tokio::task::spawn_blocking(move || {
            let (records, skipped) = parse_page(kind, page.data);
            let mut r = Report::default();
            apply_page(&store, &scope, kind, &mut page_cp, Parsed { records, skipped, next: page.next }, &mut r)?;
            Ok((page_cp, r))
        }));
        match next {
            Some(next) if next.starts_with(base.as_str()) => url = next,
            Some(next) => {
                settle(&mut applying, &mut cp, &mut report).await?;
                return Err(SyncError::Clio(ClioError::Refused {
                    status: 200,
                    message: format!("the next-page link leaves the Clio API ({next}); not followed"),
                }));
            }
            None => break,
        }
    }
    settle(&mut applying, &mut cp, &mut report).await?;
    let now = store.clock().now_micros();
    store.write(|w| {
        let mut done = checkpoint(w, scope, kind)?;
        done.synced_through = later(done.synced_through.take(), done.high_water.as_ref());
        done.full_done = true;
        done.next_url = None;
        done.last_success_at = Some(now);
        done.last_error = None;
        save_checkpoint(w, scope, kind, &done)
    })?;
    Ok(report)
}

/// Finds records deleted in Clio: lists every id (`fields=id`) and removes
/// stored records Clio no longer has. Returns how many were removed.
pub async fn reconcile(store: &Store, scope: &OrgScope, client: &ClioClient, kind: Kind) -> Result<u64, SyncError> {
    let mut live = HashSet::new();
    let mut url = Some(client.first_page_url(kind, "id", None));
    while let Some(u) = url {
        let page = client.page(&u, kind).await?;
        live.extend(page.data.iter().filter_map(|v| match &v["id"] {
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::String(s) => Some(s.clone()),
            _ => None,
        }));
        url = page.next;
    }
    let gone: Vec<String> =
        store.read(|r| all(r, scope, kind))?.into_iter().map(|r| r.id).filter(|id| !live.contains(id)).collect();
    let removed = gone.len() as u64;
    store.write(|w| {
        for id in &gone {
            w.delete(scope, &RECORDS, &record_key(kind, id))?;
        }
        let mut cp = checkpoint(w, scope, kind)?;
        cp.deleted += removed;
        save_checkpoint(w, scope, kind, &cp)
    })?;
    Ok(removed)
}
