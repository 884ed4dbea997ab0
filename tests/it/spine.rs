//! The spine: journal v2 (a v1 store converts), the follower API (whole
//! transactions, byte bounds, `seq_at`, pruning, notifications), export,
//! restore and replay into an identical store.
use docket::auth::{tokens, users};
use docket::clock::Clock;
use docket::records::Record;
use docket::store::{
    AUDIT, JournalEntry, OrgId, OrgTask, OrgTaskContext, RECORDS, RawRow, SECRETS, SESSIONS, SYSTEM_SECRETS, Section,
    Store, StoreError, TOKENS,
};
use docket::timestamp::Timestamp;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const CTX: OrgTaskContext = OrgTaskContext::new(OrgTask::Test);

fn open(dir: &Path, name: &str) -> Store {
    Store::open(&dir.join(name), Clock::system()).unwrap()
}

/// Every journal entry, read in batches of at most `bound` bytes.
fn whole_journal(store: &Store, bound: usize) -> Vec<JournalEntry> {
    journal_after(store, 0, bound)
}

/// The journal entries after `after`, read in batches of at most `bound` bytes.
fn journal_after(store: &Store, after: u64, bound: usize) -> Vec<JournalEntry> {
    let (mut after, mut out) = (after, vec![]);
    loop {
        let batch = store.journal_since(&CTX, after, bound).unwrap();
        assert_eq!(batch.bad, None);
        if batch.entries.is_empty() {
            return out;
        }
        assert!(batch.entries.last().unwrap().last, "a batch ends with a commit marker");
        after = batch.next_after(after);
        out.extend(batch.entries);
    }
}

/// Replays `store`'s whole journal, batch by batch, into a new store at `path`.
fn replay_into(store: &Store, path: &Path, bound: usize) -> Store {
    let copy = Store::open(path, Clock::system()).unwrap();
    let restore = copy.restore(&CTX).unwrap();
    let mut after = 0;
    loop {
        let batch = store.journal_since(&CTX, after, bound).unwrap();
        if batch.entries.is_empty() {
            break;
        }
        restore.replay(&batch.entries).unwrap();
        after = batch.next_after(after);
    }
    restore.finish().unwrap();
    copy
}

#[test]
fn v1_store_migrates_to_v2_then_v3() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docket.redb");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1.redb"), &path).unwrap();
    let store = Store::open(&path, Clock::system()).unwrap();
    assert_eq!(store.schema_version().unwrap(), Some(3));

    // Every row is still there and readable.
    let orgs = store.list_orgs().unwrap();
    let slugs: Vec<_> = orgs.iter().map(|o| (o.id, o.slug.as_str())).collect();
    assert_eq!(slugs, [(OrgId(1), "smith-jones"), (OrgId(2), "other-firm")]);
    assert_eq!(store.org_by_slug("other-firm").unwrap().map(|o| o.id), Some(OrgId(2)));
    let (firm, other) = (CTX.org_scope(OrgId(1)), CTX.org_scope(OrgId(2)));
    store
        .read(|r| {
            let emails =
                |scope| -> Vec<String> { users::list(r, scope).unwrap().into_iter().map(|u| u.email).collect() };
            assert_eq!(emails(&firm).len(), 2);
            assert!(emails(&firm).contains(&"sam@smith-jones.test".to_string()));
            assert_eq!(emails(&other), ["otto@other.test"]);
            let logins = users::logins_for_email(r, "otto@other.test")?;
            assert_eq!(
                logins.iter().map(|l| l.org).collect::<Vec<_>>(),
                [OrgId(2)],
                "a v1 sign-in name still leads to its firm"
            );
            let names =
                |scope| -> Vec<String> { tokens::list(r, scope).unwrap().into_iter().map(|t| t.name).collect() };
            assert_eq!((names(&firm), names(&other)), (vec!["integration".into()], vec!["reports".into()]));
            assert!(r.get(&firm, &SECRETS, b"clio.refresh")?.is_some_and(|c| c.starts_with(b"age-encryption.org")));
            assert!(r.get_system(&SYSTEM_SECRETS, b"acme.account")?.is_some());
            assert!(r.get_system(&SESSIONS, b"session-hash")?.is_some());
            let records: Vec<Record> =
                r.scan(&firm, &RECORDS, b"")?.iter().map(|(_, v)| serde_json::from_slice(v).unwrap()).collect();
            let ids: Vec<&str> = records.iter().map(|rec| rec.id.as_str()).collect();
            assert_eq!(ids.len(), 2, "matter 1002 was deleted");
            assert!(ids.contains(&"1001") && ids.contains(&"2001"));
            assert_eq!(r.scan(&firm, &AUDIT, b"")?.len(), 2);
            Ok(())
        })
        .unwrap();
    let hook = store.read(|r| r.get_system(&docket::store::HOOKS, b"hook-smith-jones")).unwrap().unwrap();
    assert_eq!(
        serde_json::from_slice::<OrgId>(&hook).unwrap(),
        OrgId(1),
        "the v1 shared webhook endpoint row survives"
    );
    for scope in [&firm, &other] {
        assert_eq!(docket::audit::verify(&store, scope).unwrap().unwrap(), 2, "audit chains survive");
    }

    // The converted journal: 28 v1 entries in 10 transactions, then the schema
    // 2 fence; then schema 3: the record index of org 1's two records (one
    // transaction), and its fence.
    let journal = whole_journal(&store, 1024);
    let indexed = journal.len() - 32;
    assert!(indexed >= 2, "matter 1001 and contact 2001 have index rows: {indexed}");
    assert_eq!(journal.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=journal.len() as u64).collect::<Vec<_>>());
    assert!(journal[..28].iter().all(|e| e.schema == 1) && journal[28..30].iter().all(|e| e.schema == 2));
    assert!(journal[30..].iter().all(|e| e.schema == 3));
    assert!(journal[30..30 + indexed].iter().all(|e| e.table == "record_index" && e.org == Some(OrgId(1))));
    assert!(journal.windows(2).all(|w| w[0].time <= w[1].time && w[0].tx <= w[1].tx));
    let ends: Vec<u64> = journal.iter().filter(|e| e.last).map(|e| e.tx).collect();
    assert_eq!(ends, (1..=13).collect::<Vec<_>>(), "one commit marker per transaction");
    assert!(journal.windows(2).all(|w| w[0].last == (w[0].tx != w[1].tx)));
    for e in &journal[..28] {
        assert_eq!(e.org.is_some(), e.table != "system_secrets", "entry {} ({}) names its org", e.seq, e.table);
    }
    assert_eq!(journal.iter().find(|e| e.table == "webhook_hooks").unwrap().org, Some(OrgId(1)));
    assert_eq!((journal[28].table.as_str(), journal[28].key.as_slice()), ("meta", b"schema_version".as_slice()));

    // The converted journal replays into a store identical to the migrated one.
    let copy = replay_into(&store, &dir.path().join("replayed.redb"), 512);
    assert_eq!(copy.digest().unwrap(), store.digest().unwrap());
    assert_eq!(whole_journal(&copy, usize::MAX), journal);

    // New writes go on from the converted journal.
    store.write(|w| w.put(&firm, &SECRETS, b"new", b"v")).unwrap();
    let head = journal.len() as u64;
    let last = store.journal_since(&CTX, head, usize::MAX).unwrap().entries;
    assert_eq!((last[0].seq, last[0].tx, last[0].schema), (head + 1, 14, 3));
    assert!(last[0].time >= journal[journal.len() - 1].time);
}

#[test]
fn org_owned_index_rows_are_journaled_with_their_org() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "s.redb");
    let org = docket::control::create_org(&store, &CTX, "acme", "Acme").unwrap();
    tokens::create_service(&store, &CTX, org.id, "t", "admin", None).unwrap();
    let journal = whole_journal(&store, usize::MAX);
    for table in ["orgs", "org_slugs", "tokens", "audit"] {
        let e = journal.iter().find(|e| e.table == table).unwrap();
        assert_eq!(e.org, Some(org.id), "{table}");
    }
    assert!(store.read(|r| r.scan_system(&TOKENS, b"")).unwrap().len() == 1);
}

/// Writes `n` transactions on each of `threads` threads, each touching a
/// tenant table, an index and the appliance's own table, with deletes.
fn concurrent_writes(store: &Arc<Store>, threads: u64, n: u64) {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let scope = CTX.org_scope(OrgId(t % 2 + 1));
                for i in 0..n {
                    store
                        .write(|w| {
                            let key = format!("k{}", i % 7);
                            w.put(&scope, &SECRETS, key.as_bytes(), format!("{t}:{i}").as_bytes())?;
                            w.put_index(&CTX, &TOKENS, scope.org(), format!("{t}:{}", i % 5).as_bytes(), b"tok")?;
                            if i % 3 == 0 {
                                w.delete(&scope, &SECRETS, format!("k{}", (i + 3) % 7).as_bytes())?;
                                w.put_system(&CTX, &SYSTEM_SECRETS, format!("s{t}").as_bytes(), &i.to_le_bytes())?;
                            }
                            Ok(())
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn concurrent_writers_replay_into_an_identical_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), "live.redb"));
    concurrent_writes(&store, 4, 40);
    let journal = whole_journal(&store, usize::MAX);
    assert_eq!(journal.last().unwrap().seq, store.journal_head().unwrap());
    assert_eq!(journal.iter().filter(|e| e.last).count(), 160, "one transaction per write");
    let copy = replay_into(&store, &dir.path().join("copy.redb"), 300);
    assert_eq!(copy.digest().unwrap(), store.digest().unwrap());
    assert_eq!(copy.journal_head().unwrap(), store.journal_head().unwrap());
    assert_eq!(whole_journal(&copy, usize::MAX), journal, "seq, tx ids and times are kept");

    // The digest sees one changed row.
    store.write(|w| w.put(&CTX.org_scope(OrgId(1)), &SECRETS, b"k0", b"changed")).unwrap();
    assert_ne!(copy.digest().unwrap(), store.digest().unwrap());
}

#[test]
fn reads_never_see_half_a_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), "s.redb"));
    let scope = CTX.org_scope(OrgId(1));
    const KEYS: u64 = 5;
    let writer = {
        let (store, scope) = (store.clone(), scope.clone());
        std::thread::spawn(move || {
            for i in 1..=60u64 {
                store
                    .write(|w| (0..KEYS).try_for_each(|k| w.put(&scope, &SECRETS, &k.to_be_bytes(), &i.to_be_bytes())))
                    .unwrap();
            }
        })
    };
    let mut after = 0;
    while after < 60 * KEYS {
        // A snapshot's rows agree with its head.
        store
            .read(|r| {
                let head = r.journal_head()?;
                let rows = r.scan(&scope, &SECRETS, b"")?;
                let values: Vec<&[u8]> = rows.iter().map(|(_, v)| v.as_slice()).collect();
                assert!(values.windows(2).all(|w| w[0] == w[1]), "one transaction's rows, whole");
                if let Some(v) = values.first() {
                    assert_eq!(u64::from_be_bytes((*v).try_into().unwrap()) * KEYS, head);
                }
                Ok(())
            })
            .unwrap();
        // A small byte bound still returns whole transactions.
        let batch = store.journal_since(&CTX, after, 10).unwrap();
        assert_eq!(batch.entries.len() as u64 % KEYS, 0);
        for tx in batch.entries.chunks(KEYS as usize) {
            assert!(tx.iter().all(|e| e.tx == tx[0].tx) && tx[KEYS as usize - 1].last);
        }
        assert!(batch.head >= batch.next_after(after));
        after = batch.next_after(after);
    }
    writer.join().unwrap();
}

#[test]
fn batches_are_bounded_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "s.redb");
    let scope = CTX.org_scope(OrgId(1));
    let put = |n: usize, size: usize| {
        store.write(|w| (0..n).try_for_each(|k| w.put(&scope, &SECRETS, &[k as u8], &vec![7; size]))).unwrap();
    };
    put(3, 1000); // tx 1: ~3 KB
    put(1, 100); // tx 2
    put(1, 100); // tx 3
    let batch = store.journal_since(&CTX, 0, 500).unwrap();
    assert_eq!(batch.entries.len(), 3, "a transaction larger than the bound comes alone and whole");
    assert_eq!(batch.head, 5);
    let batch = store.journal_since(&CTX, 3, 500).unwrap();
    assert_eq!(batch.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5], "two small ones fit");
    let batch = store.journal_since(&CTX, 3, 200).unwrap();
    assert_eq!(batch.entries.len(), 1, "the second would pass the bound");
    let e = store.journal_since(&CTX, 1, 500).unwrap_err();
    assert!(matches!(e, StoreError::Invalid { field: "after", .. }), "{e}");
}

#[test]
fn seq_at_finds_the_last_commit_at_or_before_an_instant_while_the_clock_steps_back() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = time::macros::datetime!(2026-05-01 12:00 UTC);
    let clock = Clock::fixed(t0);
    let store = Store::open(&dir.path().join("s.redb"), clock.clone()).unwrap();
    let scope = CTX.org_scope(OrgId(1));
    let commit = |n: u8| store.write(|w| (0..n).try_for_each(|k| w.put(&scope, &SECRETS, &[k], b"v"))).unwrap();
    let at = |secs: i64| Timestamp::from_micros(clock_micros(t0) + secs * 1_000_000);
    commit(2); // seq 1-2 at t0
    clock.advance(Duration::from_secs(10));
    commit(1); // seq 3 at t0+10
    clock.rewind(Duration::from_secs(20));
    commit(2); // seq 4-5: the clock says t0-10, the journal keeps t0+10
    clock.advance(Duration::from_secs(30));
    commit(1); // seq 6 at t0+20
    let times: Vec<i64> = whole_journal(&store, usize::MAX).iter().map(|e| e.time - clock_micros(t0)).collect();
    assert_eq!(times, [0, 0, 10_000_000, 10_000_000, 10_000_000, 20_000_000]);
    assert_eq!(store.seq_at(at(-1)).unwrap(), None);
    assert_eq!(store.seq_at(at(0)).unwrap(), Some(2));
    assert_eq!(store.seq_at(at(5)).unwrap(), Some(2));
    assert_eq!(store.seq_at(at(10)).unwrap(), Some(5), "both commits stamped t0+10");
    assert_eq!(store.seq_at(at(19)).unwrap(), Some(5));
    assert_eq!(store.seq_at(at(20)).unwrap(), Some(6));
    assert_eq!(store.seq_at(Timestamp::MAX).unwrap(), Some(6));
    store.prune_journal_before(&CTX, 3).unwrap();
    assert_eq!(store.seq_at(at(0)).unwrap(), None, "pruned entries are not answered");
    assert_eq!(store.seq_at(at(15)).unwrap(), Some(5));
}

fn clock_micros(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1000) as i64
}

#[test]
fn pruning_removes_whole_transactions_and_the_head_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "s.redb");
    let scope = CTX.org_scope(OrgId(1));
    for _ in 0..3 {
        store.write(|w| (0..3u8).try_for_each(|k| w.put(&scope, &SECRETS, &[k], b"v"))).unwrap();
    }
    assert_eq!(store.prune_journal_before(&CTX, 5).unwrap(), 3, "seq 5 is inside tx 2 (4-6): tx 2 is kept");
    assert_eq!(store.journal_start().unwrap(), Some(4));
    let e = store.journal_since(&CTX, 0, usize::MAX).unwrap_err();
    assert!(e.to_string().contains("1 to 3 were pruned"), "{e}");
    assert_eq!(store.journal_since(&CTX, 3, usize::MAX).unwrap().entries.len(), 6);
    assert_eq!(store.prune_journal_before(&CTX, 100).unwrap(), 6);
    assert_eq!((store.journal_start().unwrap(), store.journal_head().unwrap()), (None, 9));
    store.write(|w| w.put(&scope, &SECRETS, b"after", b"v")).unwrap();
    let next = store.journal_since(&CTX, 9, usize::MAX).unwrap().entries;
    assert_eq!((next[0].seq, next[0].tx), (10, 4), "seq and tx ids are never reused");
}

#[tokio::test]
async fn commits_are_notified() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), "s.redb"));
    let mut heads = store.subscribe();
    assert_eq!(*heads.borrow_and_update(), 0);
    let writer = store.clone();
    tokio::task::spawn_blocking(move || {
        writer.write(|w| w.put(&CTX.org_scope(OrgId(1)), &SECRETS, b"k", b"v")).unwrap();
    });
    tokio::time::timeout(Duration::from_secs(10), heads.changed()).await.unwrap().unwrap();
    assert_eq!(*heads.borrow_and_update(), 1);
    store.write(|_| Ok(())).unwrap();
    assert!(!heads.has_changed().unwrap(), "a commit that journals nothing is not notified");
}

#[test]
fn export_restores_into_an_empty_store_and_nowhere_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), "live.redb"));
    concurrent_writes(&store, 2, 10);
    let mut rows: Vec<(Section, Vec<u8>, Vec<u8>)> = vec![];
    let head = store
        .export(&CTX, |row| {
            rows.push((row.section, row.key.to_vec(), row.value.to_vec()));
            Ok(())
        })
        .unwrap();
    assert_eq!(head, store.journal_head().unwrap());
    for name in ["meta", "journal", "secrets", "tokens", "system_secrets"] {
        assert!(rows.iter().any(|(s, _, _)| s.name() == name), "{name} is exported");
        assert_eq!(Section::named(name).map(|s| s.name()), Some(name));
    }
    let copy = open(dir.path(), "copy.redb");
    let restore = copy.restore(&CTX).unwrap();
    let raw = rows.iter().map(|(section, key, value)| RawRow { section: *section, key, value });
    assert_eq!(restore.import(raw).unwrap(), rows.len() as u64);
    assert_eq!(restore.finish().unwrap(), head);
    assert_eq!(copy.digest().unwrap(), store.digest().unwrap());
    assert_eq!(whole_journal(&copy, usize::MAX), whole_journal(&store, usize::MAX));

    let e = copy.restore(&CTX).err().unwrap();
    assert!(e.to_string().contains("is not empty"), "{e}");
    let fresh = open(dir.path(), "fresh.redb");
    let restore = fresh.restore(&CTX).unwrap();
    let entries = whole_journal(&store, usize::MAX);
    let e = restore.replay(&entries[..1]).unwrap_err();
    assert!(e.to_string().contains("inside a transaction"), "{e}");
    let one = entries.iter().position(|e| e.last).unwrap() + 1;
    restore.replay(&entries[..one]).unwrap();
    let e = restore.replay(&entries[..one]).unwrap_err();
    assert!(e.to_string().contains("does not follow"), "{e}");
}

#[test]
fn an_export_of_a_pruned_journal_restores() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), "live.redb"));
    concurrent_writes(&store, 2, 10);
    let head = store.journal_head().unwrap();
    let middle = whole_journal(&store, usize::MAX)[head as usize / 2].seq;
    // Half the journal shipped, then all of it: both exports are normal backups.
    for (name, prune_before) in [("half.redb", middle), ("all.redb", head + 1)] {
        store.prune_journal_before(&CTX, prune_before).unwrap();
        let mut rows: Vec<(Section, Vec<u8>, Vec<u8>)> = vec![];
        let keep = |row: RawRow<'_>| {
            rows.push((row.section, row.key.to_vec(), row.value.to_vec()));
            Ok(())
        };
        store.export(&CTX, keep).unwrap();
        let copy = open(dir.path(), name);
        let restore = copy.restore(&CTX).unwrap();
        restore.import(rows.iter().map(|(section, key, value)| RawRow { section: *section, key, value })).unwrap();
        assert_eq!(restore.finish().unwrap(), head, "{name}");
        assert_eq!(copy.digest().unwrap(), store.digest().unwrap(), "{name}");
        assert_eq!(copy.journal_start().unwrap(), store.journal_start().unwrap(), "{name}");
    }
}

/// Issue 9: sync passes, webhook deliveries, edits, creations, deletions, a
/// "sync now" and a disconnect all run at once against the live server; the
/// whole journal, replayed into an empty store, must rebuild it exactly.
#[tokio::test]
async fn a_live_workload_replays_into_an_identical_store() {
    use crate::clio::connect;
    use crate::support::{TestServer, client, eventually};
    use docket::clio::fake::FakeClio;
    use docket::records::Kind;

    let fake = FakeClio::start(23, 2_000).await.unwrap();
    let s = TestServer::start().await;
    connect(&s, &fake, true).await;
    let firm = fake.firm();
    let churn = {
        let fake = fake.clone();
        tokio::spawn(async move {
            for i in 0..40u64 {
                if i == 20 {
                    // The second half once webhooks are on (they come after the first full
                    // sync, however long it takes), so deliveries meet the syncs still running.
                    for _ in 0..600 {
                        if fake.webhooks_active() == 6 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                let kind = [Kind::Matter, Kind::Contact, Kind::Activity, Kind::Task][(i % 4) as usize];
                match i % 5 {
                    0 => {
                        fake.create(kind);
                    }
                    1 => {
                        fake.delete(kind, firm.id(kind, i + 1));
                    }
                    _ => {
                        fake.edit(kind, firm.id(kind, i % 7 + 1));
                    }
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    let mut syncs = vec![];
    for _ in 0..3 {
        syncs.push(s.post_json(&s.admin_token, "/api/v1/clio/sync", serde_json::Value::Null));
    }
    for (status, _) in futures_util::future::join_all(syncs).await {
        assert!(status.is_success() || status == 409, "sync now: {status}");
    }
    churn.await.unwrap();
    let live = eventually(Duration::from_secs(60), async || fake.webhooks_active() == 6).await;
    assert!(live, "webhooks took part");
    let off = client().delete(s.url("/api/v1/clio/connection")).bearer_auth(&s.admin_token).send();
    assert_eq!(off.await.unwrap().status(), 200);
    let dir = s.stop().await;

    let data = dir.path().join("data");
    let store = Store::open(&data.join("docket.redb"), Clock::system()).unwrap();
    // The journal as a restore sees it: what shipping sealed into segments
    // (the live journal is pruned behind it), then what is left in the store.
    let mut journal = shipped(&data);
    assert!(!journal.is_empty(), "the running service shipped its journal");
    assert_eq!(journal.first().map(|e| e.seq), Some(1), "shipping starts at the journal's start");
    journal.extend(journal_after(&store, journal.last().map_or(0, |e| e.seq), 256 * 1024));
    assert!(journal.windows(2).all(|w| w[1].seq == w[0].seq + 1), "no seq is missing or doubled");
    assert!(journal.iter().any(|e| e.table == "records"), "records were synced");
    let audited = |action: &str| {
        journal.iter().any(|e| {
            e.table == "audit"
                && matches!(&e.op, docket::store::Op::Put(v) if v.windows(action.len()).any(|w| w == action.as_bytes()))
        })
    };
    assert!(audited("clio.webhook.deliver"), "webhook deliveries were applied during the workload");
    assert!(audited("clio.disconnect"), "and the disconnect");
    // Pages, webhook deliveries and deletions all kept the record index exact.
    crate::data::assert_index_matches(&store, &CTX.org_scope(OrgId(1)));
    let copy = Store::open(&dir.path().join("replayed.redb"), Clock::system()).unwrap();
    let restore = copy.restore(&CTX).unwrap();
    restore.replay(&journal).unwrap();
    restore.finish().unwrap();
    assert_eq!(copy.digest().unwrap(), store.digest().unwrap(), "the journal rebuilds the live store exactly");
    assert_eq!(copy.journal_head().unwrap(), store.journal_head().unwrap());
}

/// The entries shipped into `<data>/backups/segments`, opened with the appliance's key.
fn shipped(data: &Path) -> Vec<JournalEntry> {
    use docket::lifecycle::shipping;
    use docket::secrets::{KeySource, Keyring, default_key_path};
    let key = Keyring::load(&[KeySource::File(default_key_path(data))]).unwrap();
    let signer = docket::lifecycle::backup::signing::pinned(data).unwrap();
    let trust = docket::lifecycle::backup::Trust::signer(signer);
    let source = shipping::SealedSegments::reader(vec![key.identity().clone()], trust);
    let listing = shipping::list(&data.join("backups").join(shipping::SEGMENTS_DIR)).unwrap();
    listing.chain.iter().flat_map(|segment| shipping::read(&source, segment).unwrap()).collect()
}
