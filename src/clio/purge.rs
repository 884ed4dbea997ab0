//! The purge of a disconnected firm's cached Clio data once its
//! `purge_due_at` (set on disconnect, `clio.purge_after_days` later) has
//! passed: a scheduled job (`clio-purge`). It first bumps the org's sync
//! generation, fencing any sync still writing, then deletes the records page
//! by page through the sync's write path (each page checks, in its own
//! transaction, that the firm is still disconnected and due: a reconnect
//! stops the purge), forgets the sync's progress, and ends with one audited
//! transaction (`clio.purge`) that clears `purge_due_at`. The firm, its
//! members, tokens and audit trail stay.
use super::connection::{self, State};
use super::sync::{self, SyncScope};
use crate::audit;
use crate::store::{OrgId, OrgScope, OrgTask, OrgTaskContext, Reader, Store, StoreError};

const CTX: OrgTaskContext = OrgTaskContext::new(OrgTask::ClioPurge);
/// Records deleted per transaction.
const PAGE: usize = 1_000;

/// Whether `org`'s cached data is due for purge at `now` (microseconds).
fn due(r: &impl Reader, scope: &OrgScope, now: i64) -> Result<bool, StoreError> {
    Ok(connection::get(r, scope)?
        .is_some_and(|c| c.state == State::Disconnected && c.purge_due_at.is_some_and(|t| t <= now)))
}

/// Purges every firm whose data is due; returns the records deleted. One
/// firm's failure does not stop the others; the error names each that failed.
pub fn purge_due(store: &Store) -> Result<u64, String> {
    let now = store.clock().now_micros();
    let orgs = store.list_orgs().map_err(|e| format!("cannot list the firms: {e}"))?;
    let (mut purged, mut failed) = (0, vec![]);
    for org in orgs {
        let scope = CTX.org_scope(org.id);
        match store.read(|r| due(r, &scope, now)) {
            Ok(false) => continue,
            Ok(true) => match purge(store, org.id, now) {
                Ok(n) => purged += n,
                Err(e) => failed.push(format!("org {}: {e}", org.id)),
            },
            Err(e) => failed.push(format!("org {}: {e}", org.id)),
        }
    }
    if failed.is_empty() { Ok(purged) } else { Err(format!("the purge failed for {}", failed.join("; "))) }
}

/// Purges one firm's cached Clio data (it must be disconnected and due at
/// `now`); returns the records deleted (0 if it stopped being due).
pub fn purge(store: &Store, org: OrgId, now: i64) -> Result<u64, StoreError> {
    let scope = CTX.org_scope(org);
    let fenced = store.write(|w| {
        if !due(w, &scope, now)? {
            return Ok(false);
        }
        sync::bump_generation(w, &scope)?;
        Ok(true)
    })?;
    if !fenced {
        return Ok(0);
    }
    let purge = SyncScope::begin(store, &CTX, org)?;
    let mut deleted = 0;
    loop {
        match sync::purge_page(store, &purge, PAGE, |w| due(w, &scope, now))? {
            None => return Ok(deleted),
            Some(0) => break,
            Some(n) => deleted += n,
        }
    }
    let details = serde_json::json!({ "records": deleted });
    let target = format!("org:{org}");
    audit::audited(store, &scope, &audit::Context::default(), "clio.purge", &target, details, |w| {
        connection::mark_purged(w, &scope)
    })?;
    tracing::info!(org = %org, records = deleted, "purged a disconnected firm's cached Clio data");
    Ok(deleted)
}
