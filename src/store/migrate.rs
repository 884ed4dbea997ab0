//! Schema versions and forward migrations, run when a store opens.
//!
//! A new store is created at [`SCHEMA_VERSION`] with an empty journal. Each
//! migration runs in one write transaction that ends with journaled `meta`
//! writes of `schema_version` and `writer` (the schema fence), and every v2
//! journal entry carries the schema it was written under, so a replay knows
//! the layout of every row it applies.
//!
//! Schema 1 → 2 re-encodes the journal from format v1 to v2 (see
//! [`v1_to_v2`]); rows are unchanged. Schema 2 → 3 builds the record index
//! (see [`v2_to_v3`]).
use super::journal::{self, Entry, Op, V1};
use super::{JOURNAL, META, OrgId, RECORDS, SCHEMA_VERSION, Store, StoreError, TAIL, Tail, Tx, io};
use redb::{ReadableDatabase as _, ReadableTable as _};
use std::collections::HashMap;

/// One forward migration.
#[derive(Clone, Copy)]
pub(super) enum Migration {
    /// Rewrites what lies under the journal, in the fence's own transaction.
    Raw(fn(&redb::WriteTransaction) -> Result<(), StoreError>),
    /// Journaled row changes, in write transactions committed before the
    /// fence, each idempotent: a migration cut short is run again whole on
    /// the next open (the schema is still the old one).
    Rows(fn(&Store) -> Result<(), StoreError>),
}

/// Forward migrations: entry `i` takes a store from schema `i + 1` to `i + 2`.
pub(super) const MIGRATIONS: &[Migration] = &[Migration::Raw(v1_to_v2), Migration::Rows(v2_to_v3)];

/// The oldest schema whose rows have today's layout: replay applies entries
/// written under it or later verbatim, and refuses older ones.
pub(super) const ROWS_SINCE: u32 = 1;

impl Store {
    pub(super) fn migrate(&self, migrations: &[Migration]) -> Result<(), StoreError> {
        let target = migrations.len() as u32 + 1;
        match self.schema_version()? {
            None => self.create_schema(target),
            Some(0) => Err(StoreError::Open {
                path: self.path.display().to_string(),
                reason: "its schema_version is 0, which no docket writes: the file is damaged or not a docket store\n  fix: restore a backup, or point `data_dir` at the right directory".into(),
            }),
            Some(v) if v > target => {
                let writer = self.meta_string("writer")?.unwrap_or_else(|| "unknown".into());
                Err(StoreError::TooNew { path: self.path.display().to_string(), found: v, writer, ours: crate::VERSION })
            }
            Some(found) => {
                for (step, migration) in migrations.iter().enumerate().skip(found as usize - 1) {
                    let to = step as u32 + 2;
                    if let Migration::Rows(rows) = migration {
                        rows(self)?;
                    }
                    let tx = self.db.begin_write().map_err(io)?;
                    if let Migration::Raw(raw) = migration {
                        raw(&tx)?;
                    }
                    let mut w = Tx::begin(tx, self.clock.now_micros(), to)?;
                    w.put_meta("schema_version", &to.to_le_bytes())?;
                    w.put_meta("writer", crate::VERSION.as_bytes())?;
                    self.commit(w)?;
                    tracing::info!(schema = to, "store migrated");
                }
                Ok(())
            }
        }
    }

    /// Makes every table of a new store at schema `target` (not journaled: a
    /// new store's journal starts empty).
    fn create_schema(&self, target: u32) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(io)?;
        {
            let mut meta = tx.open_table(META).map_err(io)?;
            meta.insert("schema_version", target.to_le_bytes().as_slice()).map_err(io)?;
            meta.insert("writer", crate::VERSION.as_bytes()).map_err(io)?;
            tx.open_table(JOURNAL).map_err(io)?;
            for t in super::TABLES {
                tx.open_table(t.def()).map_err(io)?;
            }
        }
        tx.commit().map_err(io)
    }
}

/// Schema 1 → 2: re-encodes every v1 journal entry as v2, in place (same seq).
///
/// v1 entries had no transaction boundaries, but a v1 transaction read the
/// clock once, so its entries share a time: consecutive entries with the same
/// time become one v2 transaction (two v1 transactions in the same microsecond
/// merge, which is safe: the merged state was committed; a transaction is
/// never split). Times are raised to the previous entry's where the wall clock
/// went backwards. v1 wrote no org for rows of system tables: an org-owned
/// index row gets it from its value (or key, for `orgs`), a delete from the
/// last put of its key. Converted entries keep schema 1.
fn v1_to_v2(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut journal = tx.open_table(JOURNAL).map_err(io)?;
    let mut owners: HashMap<(String, Vec<u8>), OrgId> = HashMap::new();
    let (mut tail, mut prev_time, mut from) = (Tail::EMPTY, None, 0);
    loop {
        // A chunk at a time (memory stays flat however long the journal), with
        // one entry of lookahead to see where a transaction ends.
        let mut chunk: Vec<(u64, V1)> = Vec::with_capacity(V1_CHUNK + 1);
        for row in journal.range(from..).map_err(io)?.take(V1_CHUNK + 1) {
            let (k, v) = row.map_err(io)?;
            chunk.push((k.value(), journal::decode_v1(k.value(), v.value())?));
        }
        let next_chunk = chunk.get(V1_CHUNK).map(|(seq, _)| *seq);
        for (i, (seq, v1)) in chunk.iter().take(V1_CHUNK).enumerate() {
            let next_time = chunk.get(i + 1).map(|(_, next)| next.time);
            let time = v1.time.max(tail.time);
            let entry = Entry {
                seq: *seq,
                tx: if prev_time == Some(v1.time) { tail.tx } else { tail.tx + 1 },
                last: next_time != Some(v1.time),
                schema: 1,
                time,
                org: v1.org.or_else(|| index_owner(&mut owners, v1)),
                table: v1.table.clone(),
                key: v1.key.clone(),
                op: v1.op.clone(),
            };
            journal.insert(*seq, entry.encode().as_slice()).map_err(io)?;
            tail = Tail { seq: *seq, tx: entry.tx, time };
            prev_time = Some(v1.time);
        }
        match next_chunk {
            Some(seq) => from = seq,
            None => break,
        }
    }
    if tail != Tail::EMPTY {
        tx.open_table(META).map_err(io)?.insert(TAIL, tail.encode().as_slice()).map_err(io)?;
    }
    Ok(())
}

/// v1 entries converted per read of the journal (tests cross chunk edges).
const V1_CHUNK: usize = if cfg!(test) { 2 } else { 4096 };

/// The org of a v1 entry of an org-owned index, remembered for later deletes.
fn index_owner(owners: &mut HashMap<(String, Vec<u8>), OrgId>, v1: &V1) -> Option<OrgId> {
    match &v1.op {
        Op::Put(value) => {
            let org = owner_in_v1_row(&v1.table, &v1.key, value)?;
            owners.insert((v1.table.clone(), v1.key.clone()), org);
            Some(org)
        }
        Op::Delete => owners.remove(&(v1.table.clone(), v1.key.clone())),
    }
}

/// Where schema 1 kept the org of an index row.
fn owner_in_v1_row(table: &str, key: &[u8], value: &[u8]) -> Option<OrgId> {
    let be = |b: &[u8]| b.try_into().ok().map(|b| OrgId(u64::from_be_bytes(b)));
    match table {
        "orgs" => be(key),
        "org_slugs" => be(value),
        "webhook_hooks" => serde_json::from_slice(value).ok(),
        "tokens" | "sessions" | "logins" => {
            serde_json::from_slice::<serde_json::Value>(value).ok()?.get("org")?.as_u64().map(OrgId)
        }
        _ => None,
    }
}

/// Schema 2 → 3: builds the record index (`data::index`) of every org that
/// has records, one journaled write transaction per org, so a replay of the
/// journal reproduces the index rows like any others.
fn v2_to_v3(store: &Store) -> Result<(), StoreError> {
    let ctx = super::OrgTaskContext::new(super::OrgTask::Migrate);
    for org in orgs_with_records(store)? {
        let read = store.write(|w| crate::data::rebuild_index(w, &ctx.org_scope(org)))?;
        tracing::info!(%org, records = read, "record index built");
    }
    Ok(())
}

/// The orgs that have rows in `records`: one seek per org, not a scan.
fn orgs_with_records(store: &Store) -> Result<Vec<OrgId>, StoreError> {
    let tx = store.db.begin_read().map_err(io)?;
    let table = match tx.open_table(RECORDS.0.def()) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
        Err(e) => return Err(io(e)),
    };
    let mut orgs = vec![];
    let mut from = Some(0u64);
    while let Some(start) = from {
        let first = table.range::<&[u8]>(start.to_be_bytes().as_slice()..).map_err(io)?.next();
        let Some(row) = first else { break };
        let (key, _) = row.map_err(io)?;
        let Some(org) = key.value().get(..8).and_then(|p| p.try_into().ok()).map(u64::from_be_bytes) else {
            break;
        };
        orgs.push(OrgId(org));
        from = org.checked_add(1);
    }
    Ok(orgs)
}

/// Whether entries written under `schema` can be replayed into this binary's store.
pub(super) fn replayable(schema: u32) -> bool {
    (ROWS_SINCE..=SCHEMA_VERSION).contains(&schema)
}

#[cfg(test)]
mod tests {
    use super::super::journal::tests::encode_v1;
    use super::*;
    use crate::clock::Clock;
    use crate::store::{SystemContext, Task};
    use redb::TableDefinition;

    /// Writes a schema-1 file by hand: meta and the given v1 journal rows.
    fn v1_file(path: &std::path::Path, rows: &[Vec<u8>]) {
        let db = redb::Database::create(path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut meta = tx.open_table(META).unwrap();
            meta.insert("schema_version", 1u32.to_le_bytes().as_slice()).unwrap();
            let mut journal = tx.open_table(JOURNAL).unwrap();
            for (i, row) in rows.iter().enumerate() {
                journal.insert(i as u64 + 1, row.as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }

    #[test]
    fn v1_transactions_are_grouped_by_time_made_monotonic_and_given_index_owners() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let token = br#"{"org":5,"id":"tok"}"#;
        v1_file(
            &path,
            &[
                encode_v1(100, 0, "tokens", b"h", 1, token),
                encode_v1(100, 5, "secrets", b"k", 1, b"c"),
                encode_v1(90, 0, "tokens", b"h", 0, b""), // the wall clock stepped back
                encode_v1(120, 0, "system_secrets", b"acme", 1, b"c"),
                encode_v1(120, 0, "system_secrets", b"tls", 1, b"c"), // same tx, next chunk
            ],
        );
        let store = Store::open(&path, Clock::system()).unwrap();
        let batch = store.journal_since(&SystemContext::new(Task::Test), 0, usize::MAX).unwrap();
        let got: Vec<_> = batch.entries.iter().map(|e| (e.seq, e.tx, e.last, e.time, e.org, e.schema)).collect();
        let org5 = Some(OrgId(5));
        assert_eq!(
            &got[..5],
            &[
                (1, 1, false, 100, org5, 1),
                (2, 1, true, 100, org5, 1),
                (3, 2, true, 100, org5, 1),
                (4, 3, false, 120, None, 1),
                (5, 3, true, 120, None, 1),
            ]
        );
        let fence: Vec<_> = got[5..].iter().map(|e| (e.0, e.1, e.2, e.5)).collect();
        assert_eq!(
            fence,
            vec![(6, 4, false, 2), (7, 4, true, 2), (8, 5, false, 3), (9, 5, true, 3)],
            "each migration journals its schema"
        );
        assert_eq!(batch.entries[5].table, "meta");
        assert_eq!(batch.entries[5].op, Op::Put(2u32.to_le_bytes().to_vec()));
    }

    #[test]
    fn an_unknown_v1_op_fails_the_migration_naming_the_seq() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        v1_file(&path, &[encode_v1(1, 0, "orgs", b"k", 1, b"v"), encode_v1(2, 0, "orgs", b"k", 9, b"")]);
        let e = Store::open(&path, Clock::system()).unwrap_err();
        assert!(e.to_string().contains("journal entry 2") && e.to_string().contains("op 9"), "{e}");
        assert_eq!(Store::open(&path, Clock::system()).err().map(|e| e.to_string()), Some(e.to_string()));
    }

    #[test]
    fn schema_version_zero_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let db = redb::Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(META).unwrap().insert("schema_version", 0u32.to_le_bytes().as_slice()).unwrap();
            tx.commit().unwrap();
        }
        let e = Store::open(&path, Clock::system()).unwrap_err();
        assert!(matches!(e, StoreError::Open { .. }), "{e}");
        assert!(e.to_string().contains("schema_version is 0") && e.to_string().contains("fix:"), "{e}");
    }

    #[test]
    fn migrations_run_forward_and_newer_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docket.redb");
        drop(Store::open(&path, Clock::system()).unwrap());
        fn add_table(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
            tx.open_table(TableDefinition::<&[u8], &[u8]>::new("added_in_v4")).map_err(io)?;
            Ok(())
        }
        let store =
            Store::open_with(&path, Clock::system(), &[MIGRATIONS[0], MIGRATIONS[1], Migration::Raw(add_table)])
                .unwrap();
        assert_eq!(store.schema_version().unwrap(), Some(4));
        let fence = store.journal_since(&SystemContext::new(Task::Test), 0, usize::MAX).unwrap().entries;
        assert_eq!(fence.iter().map(|e| (e.table.as_str(), e.schema)).collect::<Vec<_>>(), [("meta", 4), ("meta", 4)]);
        let read = store.db.begin_read().unwrap();
        assert!(read.open_table(TableDefinition::<&[u8], &[u8]>::new("added_in_v4")).is_ok());
        drop((read, store));
        let e = Store::open(&path, Clock::system()).unwrap_err();
        assert!(matches!(e, StoreError::TooNew { found: 4, .. }), "{e}");
        assert!(e.to_string().contains("newer docket"), "{e}");
    }

    #[test]
    fn schema_3_builds_the_record_index_of_every_org() {
        use crate::records::{Kind, Record};
        use crate::store::{OrgTask, OrgTaskContext, RECORD_INDEX};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docket.redb");
        let ctx = OrgTaskContext::new(OrgTask::Test);
        let firm = crate::clio::generator::Firm::new(5, 400);
        let mut want = std::collections::BTreeMap::new();
        {
            // A schema 2 store, its records written as schema 2 wrote them: no index rows.
            let v2 = Store::open_with(&path, Clock::system(), &MIGRATIONS[..1]).unwrap();
            assert_eq!(v2.schema_version().unwrap(), Some(2));
            for org in [OrgId(3), OrgId(9)] {
                let scope = ctx.org_scope(org);
                v2.write(|w| {
                    for kind in Kind::ALL {
                        for i in 0..firm.count(kind).min(20) {
                            let record = Record::from_clio(kind, firm.record(kind, i)).unwrap();
                            let key = crate::records::record_key(kind, &record.id);
                            w.put_json(&scope, &RECORDS, &key, &record)?;
                            want.entry(org)
                                .or_insert_with(std::collections::BTreeSet::new)
                                .extend(crate::data::index::entries(&record));
                        }
                    }
                    Ok(())
                })
                .unwrap();
            }
        }
        let store = Store::open(&path, Clock::system()).unwrap();
        assert_eq!(store.schema_version().unwrap(), Some(3));
        for (org, rows) in want {
            let got: std::collections::BTreeSet<Vec<u8>> = store
                .read(|r| r.scan(&ctx.org_scope(org), &RECORD_INDEX, b""))
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            assert!(rows.len() > 300, "the firm fills the index: {}", rows.len());
            assert_eq!(got, rows, "org {org}: exactly its records' index rows");
        }
        let journal = store.journal_since(&SystemContext::new(Task::Test), 0, usize::MAX).unwrap().entries;
        assert!(journal.iter().any(|e| e.table == "record_index" && e.schema == 3), "index rows are journaled");
        assert_eq!(journal.last().map(|e| (e.table.as_str(), e.schema)), Some(("meta", 3)), "the fence comes last");
    }

    /// `tests/fixtures/store-v2.redb` is the v1 fixture migrated by the schema
    /// 2 step only (see tests/fixtures/README.md): the step run again here gives
    /// the same rows and the same journal. `DOCKET_WRITE_FIXTURES=1` rewrites
    /// the committed file from it instead.
    #[test]
    fn the_v2_fixture_is_the_v1_fixture_after_the_schema_2_step() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let dir = tempfile::tempdir().unwrap();
        let (made, committed) = (dir.path().join("made.redb"), dir.path().join("committed.redb"));
        let at = crate::timestamp::Timestamp::parse("2026-03-02T09:00:00Z").unwrap();
        let open =
            |path: &std::path::Path| Store::open_with(path, Clock::fixed(at.to_datetime()), &MIGRATIONS[..1]).unwrap();
        std::fs::copy(fixtures.join("store-v1.redb"), &made).unwrap();
        let made_store = open(&made);
        assert_eq!(made_store.schema_version().unwrap(), Some(2));
        if std::env::var_os("DOCKET_WRITE_FIXTURES").is_some() {
            drop(made_store);
            std::fs::copy(&made, fixtures.join("store-v2.redb")).unwrap();
            return;
        }
        std::fs::copy(fixtures.join("store-v2.redb"), &committed).unwrap();
        let committed_store = open(&committed);
        assert_eq!(committed_store.schema_version().unwrap(), Some(2));
        let journal = |s: &Store| s.journal_since(&SystemContext::new(Task::Test), 0, usize::MAX).unwrap().entries;
        assert_eq!(made_store.digest().unwrap(), committed_store.digest().unwrap(), "the same rows");
        assert_eq!(journal(&made_store), journal(&committed_store), "the same v2 journal");
    }
}
