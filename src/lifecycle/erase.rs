//! Erasing a firm's cached Clio data on request (`POST /clio/data/erase`,
//! `docket org erase-data`): irreversible, audited, confirmed by the firm's
//! slug. The sync is stopped first (its generation bumped, so a page in
//! flight writes nothing, and a stop mark kept until someone starts a sync
//! again), then the records and their index rows are deleted page by page
//! through the one write path, the sync's progress is forgotten, the live
//! journal entries that held the records are redacted, and the search index
//! is rebuilt without them. Running it again after an interruption finishes
//! the job: every step is idempotent.
use super::ledger;
use crate::audit;
use crate::clio::connection;
use crate::clio::sync::{self, SyncScope};
use crate::store::{OrgScope, OrgTask, OrgTaskContext, Store, StoreError};

const CTX: OrgTaskContext = OrgTaskContext::new(OrgTask::Erase);
/// Records deleted per transaction.
const PAGE: usize = 1_000;

/// What an erasure removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Erased {
    /// Records deleted from the store.
    pub records: u64,
    /// Live journal entries redacted.
    pub journal_entries: u64,
}

/// Refuses unless `confirm` is the slug of `org`.
pub fn check_confirmation(store: &Store, scope: &OrgScope, confirm: &str) -> Result<(), StoreError> {
    let slug = store.org(scope)?.slug;
    if confirm == slug {
        return Ok(());
    }
    Err(StoreError::Invalid {
        field: "confirm",
        problem: format!("must be this firm's slug, `{slug}`, typed out (this cannot be undone)"),
    })
}

/// Erases every cached Clio record of `org` now; `scope` and `context` are
/// whom the audit event names. The erasure is written to the ledger in
/// `ledger_dir` (the backup directory) first, so every later restore
/// re-applies it. The caller stops the org's sync task first (and asks the
/// search engine for a rebuild afterwards).
pub fn erase_clio_data(
    store: &Store,
    scope: &OrgScope,
    context: &audit::Context,
    ledger_dir: &std::path::Path,
) -> Result<Erased, StoreError> {
    let org = scope.org();
    let task = CTX.org_scope(org);
    let at = store.write(|w| {
        connection::stop_sync(w, &task)?;
        Ok(w.time())
    })?;
    let entry = ledger::Erasure {
        org: org.0,
        org_slug: store.org(scope)?.slug,
        at,
        by: scope.actor().to_string(),
        rule: ledger::CLIO_DATA.into(),
    };
    ledger::record(ledger_dir, &entry)
        .map_err(|e| StoreError::Io(format!("cannot write the erasure ledger in {}: {e}", ledger_dir.display())))?;
    let sync = SyncScope::begin(store, &CTX, org)?;
    let mut records = 0;
    loop {
        match sync::purge_page(store, &sync, PAGE, |_| Ok(true))? {
            Some(0) | None => break,
            Some(n) => records += n,
        }
    }
    let (_, journal_entries) = crate::data::erase_stored_through(store, &CTX, &task, i64::MAX, PAGE)?;
    let erased = Erased { records, journal_entries };
    let details = serde_json::json!({ "records": records, "journal_entries": journal_entries });
    audit::audited(store, scope, context, "clio.data.erase", &format!("org:{org}"), details, |_| Ok(()))?;
    tracing::info!(org = %org, records, journal_entries, "erased a firm's cached Clio data on request");
    Ok(erased)
}
