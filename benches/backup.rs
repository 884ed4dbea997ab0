//! The backup benchmark (figures, not a timed test):
//! `cargo bench --bench backup` (1,000,000 records; `DOCKET_BENCH_RECORDS=N`
//! for another size; smoke: `DOCKET_BENCH_RECORDS=5000 cargo bench --profile dev --bench backup`).
//!
//! A firm from `clio::generator::Firm` is written through the sync's write
//! path (`clio::sync::apply_pushed`, 1,000 records per transaction). Then, in
//! the same run:
//! 1. a plain copy of the store file (read, write, fsync): the baseline;
//! 2. one full backup (`backup::run`: export, zstd, age, fsync, rename);
//! 3. a whole-backup restore until the restored store opens and verifies
//!    (its per-org-and-table digests equal the manifest's): the RTO.
//!
//! Reported: store size, backup size and ratio, copy and backup throughput and
//! their ratio, restore time.
use docket::clio::generator::Firm;
use docket::clio::sync::{self, Pushed, SyncScope};
use docket::clock::Clock;
use docket::lifecycle::backup::{self, Quiet, Settings, retention::Keep};
use docket::lifecycle::restore::{self, RestoreOptions};
use docket::lifecycle::upgrade::human_bytes;
use docket::records::{Kind, Record};
use docket::secrets::Keyring;
use docket::store::{OrgTask, OrgTaskContext, Store};
use std::io::Write as _;
use std::time::Instant;

const PER_TX: u64 = 1_000;

fn fill(store: &Store, total: u64) {
    let ctx = OrgTaskContext::new(OrgTask::Test);
    let org = docket::control::create_org(store, &ctx, "bench", "Bench LLP").expect("org");
    let sync = SyncScope::begin(store, &ctx, org.id).expect("sync scope");
    let firm = Firm::new(1, total);
    for kind in Kind::ALL {
        let count = firm.count(kind);
        let mut start = 0;
        while start < count {
            let end = (start + PER_TX).min(count);
            store
                .write(|w| {
                    for i in start..end {
                        let record = Record::from_clio(kind, firm.record(kind, i)).expect("record");
                        sync::apply_pushed(w, &sync, Pushed::Upsert(record))?;
                    }
                    Ok(())
                })
                .expect("write");
            start = end;
        }
    }
}

fn copy_file(from: &std::path::Path, to: &std::path::Path) -> u64 {
    let bytes = std::fs::copy(from, to).expect("copy");
    std::fs::OpenOptions::new().write(true).open(to).and_then(|f| f.sync_all()).expect("fsync");
    bytes
}

fn rate(bytes: u64, secs: f64) -> String {
    format!("{}/s", human_bytes((bytes as f64 / secs.max(1e-9)) as u64))
}

fn main() {
    let total: u64 = std::env::var("DOCKET_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("data/docket.redb"), Clock::system()).expect("store");
    let t = Instant::now();
    fill(&store, total);
    println!("wrote {total} records through the sync's write path in {:.1} s", t.elapsed().as_secs_f64());
    let store_bytes = std::fs::metadata(store.path()).expect("size").len();

    let t = Instant::now();
    copy_file(store.path(), &dir.path().join("copy.redb"));
    let cp_secs = t.elapsed().as_secs_f64();

    let keyring = Keyring::generate(&dir.path().join("data/keys/master.key")).expect("key");
    let settings =
        Settings { dir: dir.path().join("backups"), offline: vec![], keep: Keep { daily: 7, weekly: 4 }, pitr_days: 7 };
    let t = Instant::now();
    let info = backup::run(&store, &settings, &keyring, &Clock::system(), &Quiet).expect("backup");
    let backup_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let into = dir.path().join("restored");
    let signer = docket::lifecycle::backup::signing::ensure(&store, &keyring).expect("signing key");
    let trust = docket::lifecycle::backup::Trust::signer(signer.public());
    let options = RestoreOptions::new(Clock::system(), &Quiet, trust);
    let restored = restore::restore(Some(&info), &[keyring.identity().clone()], &into, &options, |_| {
        Ok::<(), restore::RestoreError>(())
    })
    .expect("restore");
    let copy = Store::open(&into.join("docket.redb"), Clock::system()).expect("open restored");
    let (head, parts) = copy.digests().expect("digests");
    assert!(head == info.manifest.head_seq && parts == info.manifest.parts, "the restored store verifies");
    let rto = t.elapsed().as_secs_f64();

    let mut out = std::io::stdout().lock();
    let _ =
        writeln!(out, "store: {} ({} rows exported, journal at seq {})", human_bytes(store_bytes), restored.rows, head);
    let _ = writeln!(
        out,
        "backup: {} ({:.1}% of the store)",
        human_bytes(info.manifest.bytes),
        100.0 * info.manifest.bytes as f64 / store_bytes.max(1) as f64
    );
    let _ = writeln!(out, "cp of the store file: {cp_secs:.2} s ({})", rate(store_bytes, cp_secs));
    let _ = writeln!(
        out,
        "backup: {backup_secs:.2} s ({} of store), {:.2}x the cp time",
        rate(store_bytes, backup_secs),
        backup_secs / cp_secs.max(1e-9)
    );
    let _ = writeln!(out, "RTO, whole-backup restore until the store opens and verifies: {rto:.2} s");
}
