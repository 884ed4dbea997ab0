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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::records::{Kind, Record};
    use crate::secrets::{Keyring, Secret, SharedKeyring};
    use crate::store::{AUDIT, OrgTask};
    use std::sync::Arc;
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(86_400);

    #[tokio::test]
    async fn a_disconnected_firms_records_are_purged_once_due_and_audited() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::fixed(time::macros::datetime!(2026-11-30 10:00 UTC));
        let store = Arc::new(Store::open(&dir.path().join("s.redb"), clock.clone()).unwrap());
        let keys = SharedKeyring::new(Keyring::generate(&dir.path().join("master.key")).unwrap());
        let test = OrgTaskContext::new(OrgTask::Test);
        let org = |slug: &str| store.write(|w| crate::store::orgs::create(w, &test, slug, slug)).unwrap().id;
        let (gone, staying) = (org("gone"), org("staying"));
        let metrics = Arc::new(crate::telemetry::Metrics::default());
        let http = super::super::client::http_client(Duration::from_secs(1)).unwrap();
        for id in [gone, staying] {
            let scope = test.org_scope(id);
            let secret = Secret::new("secret".to_string());
            store.write(|w| connection::configure(w, &scope, &keys, "us", None, "client", &secret, None)).unwrap();
            let sync = SyncScope::begin(&store, &test, id).unwrap();
            for n in 1..=3 {
                let raw = serde_json::json!({"id": n, "updated_at": "2026-11-01T00:00:00Z"});
                sync::store_one(&store, &sync, Record::from_clio(Kind::Matter, raw).unwrap()).unwrap();
            }
        }
        let scope = test.org_scope(gone);
        connection::disconnect(&store, &keys, &scope, http, metrics, 30).await.unwrap();
        let count = |id| {
            let sync = SyncScope::begin(&store, &test, id).unwrap();
            store.read(|r| sync::records(r, &sync, Kind::Matter)).unwrap().len()
        };

        clock.advance(29 * DAY);
        assert_eq!(purge_due(&store), Ok(0), "not due before purge_after_days");
        assert_eq!(count(gone), 3);
        clock.advance(DAY);
        assert_eq!(purge_due(&store), Ok(3));
        assert_eq!((count(gone), count(staying)), (0, 3), "only the disconnected firm's data goes");
        let index_rows =
            |id| store.read(|r| r.scan(&test.org_scope(id), &crate::store::RECORD_INDEX, b"")).unwrap().len();
        assert_eq!(index_rows(gone), 0, "the purge removes the records' index rows with them");
        assert!(index_rows(staying) > 0);
        let c = store.read(|r| connection::get(r, &scope)).unwrap().unwrap();
        assert_eq!((c.state, c.purge_due_at), (State::Disconnected, None), "nothing is due any more");
        let audit: Vec<crate::audit::Event> = store.read(|r| r.scan_json(&scope, &AUDIT, b"")).unwrap();
        let purged = audit.iter().find(|e| e.action == "clio.purge").expect("the purge is audited");
        assert_eq!(purged.details["records"], 3);
        assert_eq!(purge_due(&store), Ok(0), "purged once");
    }
}
