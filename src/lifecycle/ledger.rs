//! The erasure ledger: what was erased, when, by whom and by which rule,
//! never the erased content. It lives beside the backups
//! (`<backup.dir>/erasures.ledger`, one JSON object a line, appended and
//! fsynced before the erasure starts), because a restore reads that
//! directory and a store restored to a point before an erasure does not know
//! of it. Every restore, whole-backup or point-in-time, calls [`reapply`]
//! after its replay and before the restored store serves anything, so
//! restoring to an earlier point never brings erased data back.
use crate::store::{OrgTask, OrgTaskContext, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The ledger's file name in the backup directory.
pub const FILE: &str = "erasures.ledger";
const CTX: OrgTaskContext = OrgTaskContext::new(OrgTask::Erase);
/// Records deleted per transaction when re-applying.
const PAGE: usize = 1_000;

/// The rule of an erasure.
pub const CLIO_DATA: &str = "clio-data";

/// One erasure: which firm, when, by whom, by which rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    pub org: u64,
    pub org_slug: String,
    /// Microseconds since the epoch: everything of the rule stored at or before it is erased.
    pub at: i64,
    pub by: String,
    pub rule: String,
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Appends `erasure` to the ledger in `dir` (created if missing) and fsyncs it.
pub fn record(dir: &Path, erasure: &Erasure) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut line = serde_json::to_vec(erasure).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path(dir))?;
    file.write_all(&line)?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// The ledger in `dir` (empty when there is none). A line that does not
/// read is an error naming it: a restore must not skip an erasure.
pub fn read(dir: &Path) -> Result<Vec<Erasure>, String> {
    let file = path(dir);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(format!("cannot read the erasure ledger {}: {e}", file.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l).map_err(|e| {
                format!(
                    "line {} of the erasure ledger {} does not read ({e})\n  fix: restore the file from an off-site copy; never delete it",
                    n + 1,
                    file.display()
                )
            })
        })
        .collect()
}

/// Re-applies every erasure of the ledger in `dir` to `store` (a restored
/// store, before it serves): for a firm the store holds (same id and slug),
/// deletes what the rule erased and redacts the journal entries that held
/// it. Returns the records deleted. Idempotent.
pub fn reapply(store: &Store, dir: &Path) -> Result<u64, StoreError> {
    let ledger = read(dir).map_err(|problem| StoreError::Refused { problem })?;
    let orgs = store.list_orgs()?;
    let mut deleted = 0;
    for erasure in ledger.iter().filter(|e| e.rule == CLIO_DATA) {
        let Some(org) = orgs.iter().find(|o| o.id.0 == erasure.org) else { continue };
        let scope = CTX.org_scope(org.id);
        let (n, _) = crate::data::erase_stored_through(store, &CTX, &scope, erasure.at, PAGE)?;
        if n > 0 {
            tracing::info!(org = %org.slug, records = n, at = erasure.at, "re-applied an erasure to the restored store");
        }
        deleted += n;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clio::sync::{self, Pushed, SyncScope};
    use crate::clock::Clock;
    use crate::records::{Kind, Record};
    use crate::store::journal::Op;
    use crate::store::{SystemContext, Task};
    use std::time::Duration;

    const MARKER: &str = "ledger-marker-5521";

    #[test]
    fn a_restored_store_loses_what_was_erased_and_keeps_what_came_after() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::fixed(time::macros::datetime!(2026-11-30 10:00 UTC));
        let store = Store::open(&dir.path().join("s.redb"), clock.clone()).unwrap();
        let test = OrgTaskContext::new(OrgTask::Test);
        let org = store.write(|w| crate::store::orgs::create(w, &test, "firm", "Firm")).unwrap();
        let sync = SyncScope::begin(&store, &test, org.id).unwrap();
        let put = |id: u64, name: &str| {
            let raw = serde_json::json!({"id": id, "name": name, "updated_at": "2026-11-01T00:00:00Z"});
            let record = Record::from_clio(Kind::Contact, raw).unwrap();
            store.write(|w| sync::apply_pushed(w, &sync, Pushed::Upsert(record)).map(|_| ())).unwrap();
        };
        put(1, MARKER);
        put(2, "also erased");
        clock.advance(Duration::from_secs(60));
        let at = clock.now_micros();
        let backups = dir.path().join("backups");
        let erasure =
            Erasure { org: org.id.0, org_slug: "firm".into(), at, by: "user:u1".into(), rule: CLIO_DATA.into() };
        record(&backups, &erasure).unwrap();
        clock.advance(Duration::from_secs(60));
        put(3, "synced after the erasure");

        assert_eq!(reapply(&store, &backups).unwrap(), 2);
        assert_eq!(reapply(&store, &backups).unwrap(), 0, "idempotent");
        let left: Vec<String> = store
            .read(|r| {
                let mut ids = vec![];
                crate::data::visit_records(r, &test.org_scope(org.id), |rec| {
                    ids.push(rec.id);
                    Ok(true)
                })?;
                Ok(ids)
            })
            .unwrap();
        assert_eq!(left, ["3"], "what was stored after the erasure stays");
        let batch = store.journal_since(&SystemContext::new(Task::Backup), 0, usize::MAX).unwrap();
        assert!(batch.entries.iter().all(|e| match &e.op {
            Op::Put(bytes) => !String::from_utf8_lossy(bytes).contains(MARKER),
            Op::Delete => true,
        }));

        // Another firm with the same id but another slug (a different appliance's store) is left alone.
        let other = Erasure { org_slug: "someone-else".into(), ..erasure };
        std::fs::write(path(&backups), format!("{}\n", serde_json::to_string(&other).unwrap())).unwrap();
        assert_eq!(reapply(&store, &backups).unwrap(), 0);
        std::fs::write(path(&backups), "{not json\n").unwrap();
        let refused = reapply(&store, &backups).unwrap_err().to_string();
        assert!(refused.contains("line 1") && refused.contains("fix"), "{refused}");
    }
}
