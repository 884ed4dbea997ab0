//! Point-in-time recovery figures (not a timed test): `cargo bench --bench pitr`
//! (1,000,000 records; `DOCKET_BENCH_RECORDS=N` for another size; smoke:
//! `DOCKET_BENCH_RECORDS=5000 cargo bench --profile dev --bench pitr`).
//!
//! 1. Store size over a simulated week of edits (one transaction a minute
//!    editing N/6000 records, under a fixed clock), without shipping and with
//!    the shipper shipping and pruning after every transaction and a full
//!    backup at the start of each day.
//! 2. RTO: a point-in-time restore one day back from the end of that week, a
//!    moment before a day's last commit (the newest daily backup before it plus a day
//!    of segments, the worst case), into a new data dir, until the restored
//!    store is finished and verified (backup's restore pipeline).
//! 3. RPO: the largest observed gap between a commit and a segment holding it
//!    having its final name, under a steady write load (a transaction every
//!    2 ms for 10 s) with the real shipper task (`backup.ship_interval` 1 s);
//!    with moto at hand (`offsite/`), also the RPO for a lost disk: the gap
//!    until the segment is in object storage (the real uploader task; the
//!    bucket is listed every 20 ms).
use docket::clio::generator::Firm;
use docket::clio::sync::{self, Pushed, SyncScope};
use docket::clock::Clock;
use docket::lifecycle::backup::Quiet;
use docket::lifecycle::backup::archive::{self, WriteOptions};
use docket::lifecycle::backup::retention::Keep;
use docket::lifecycle::pitr;
use docket::lifecycle::shipping::{self, Roll, SealedSegments, Shipper};
use docket::records::{Kind, Record};
use docket::store::{OrgTask, OrgTaskContext, Store};
use docket::timestamp::Timestamp;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod offsite;

const MINUTES_A_WEEK: u64 = 7 * 24 * 60;

fn records() -> u64 {
    std::env::var("DOCKET_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map(|d| d.flatten().map(|e| file_size(&e.path())).sum()).unwrap_or(0)
}

/// The `i`th record of the firm (kinds in turn), at edit `version`.
fn record(firm: &Firm, i: u64, version: u64) -> Record {
    let kind = Kind::ALL[(i % Kind::ALL.len() as u64) as usize];
    let index = (i / Kind::ALL.len() as u64) % firm.count(kind);
    let mut raw = firm.record(kind, index);
    raw["etag"] = serde_json::json!(format!("v{version}-{i}"));
    Record::from_clio(kind, raw).expect("generated records parse")
}

/// One transaction upserting `records` through the sync's write path.
fn upsert(store: &Store, sync: &SyncScope, records: impl IntoIterator<Item = Record>) {
    store
        .write(|w| {
            for r in records {
                sync::apply_pushed(w, sync, Pushed::Upsert(r))?;
            }
            Ok(())
        })
        .expect("write");
}

/// A store with an org holding `n` records.
fn loaded(path: &Path, clock: Clock, n: u64) -> (Arc<Store>, SyncScope, Firm) {
    let store = Arc::new(Store::open(path, clock).expect("store"));
    let ctx = OrgTaskContext::new(OrgTask::Test);
    let org = docket::control::create_org(&store, &ctx, "bench", "Bench LLP").expect("org");
    let sync = SyncScope::begin(&store, &ctx, org.id).expect("sync scope");
    let firm = Firm::new(7, n);
    let mut i = 0;
    while i < n {
        let end = (i + 2000).min(n);
        upsert(&store, &sync, (i..end).map(|j| record(&firm, j, 0)));
        i = end;
    }
    (store, sync, firm)
}

struct Week {
    daily_mib: Vec<f64>,
    store: Arc<Store>,
    end: Timestamp,
}

/// A week of edits, one transaction a simulated minute; with `ship`, the
/// shipper ships (and prunes) after each, and a backup is taken each day.
fn week(dir: &Path, n: u64, ship: Option<&SealedSegments>) -> Week {
    let clock = Clock::fixed(time::macros::datetime!(2026-01-05 00:00 UTC));
    let (store, sync, firm) = loaded(&dir.join("docket.redb"), clock.clone(), n);
    let mut shipper = ship.map(|seal| {
        let seal = Arc::new(seal.clone());
        Shipper::open(store.clone(), &dir.join("backups/segments"), seal, Roll::default(), None).expect("shipper")
    });
    let per_tx = (n / 6000).max(1);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut daily_mib = vec![mib(file_size(store.path()))];
    for minute in 0..MINUTES_A_WEEK {
        if minute % (24 * 60) == 0
            && let Some(seal) = ship
        {
            let options = WriteOptions {
                dir: &dir.join("backups"),
                recipients: &seal.recipients,
                keys: &[],
                signer: seal.signer.as_ref().expect("a signing key"),
                created: Timestamp::from_micros(clock.now_micros()),
                progress: &Quiet,
                fail_after: None,
            };
            archive::write(&store, &options).expect("backup");
        }
        let edits = (0..per_tx).map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            record(&firm, state % n, minute + 1)
        });
        upsert(&store, &sync, edits.collect::<Vec<_>>());
        if let Some(s) = shipper.as_mut() {
            s.ship().expect("ship");
        }
        clock.advance(Duration::from_secs(60));
        if (minute + 1) % (24 * 60) == 0 {
            daily_mib.push(mib(file_size(store.path())));
        }
    }
    Week { daily_mib, end: Timestamp::from_micros(clock.now_micros()), store }
}

/// The largest gap between a commit and a segment holding it having its final
/// name, under a steady load, with the shipper task as the service runs it.
/// What the RPO run measured: the largest gap between a commit and a segment
/// holding it being final locally and, with moto, being in the bucket.
struct Rpo {
    local: Duration,
    offsite: Option<Duration>,
    commits: u64,
}

fn worst_gap(commits: &[(u64, Instant)], seen: &[(u64, Instant)]) -> Duration {
    commits
        .iter()
        .filter_map(|(seq, at)| seen.iter().find(|(s, _)| s >= seq).map(|(_, final_at)| final_at.duration_since(*at)))
        .max()
        .unwrap_or_default()
}

/// Polls `newest` every `every` until `done`, noting when each new seq appears.
fn watch(every: Duration, done: impl Fn() -> bool, mut newest: impl FnMut() -> Option<u64>) -> Vec<(u64, Instant)> {
    let mut seen: Vec<(u64, Instant)> = Vec::new();
    while !done() {
        if let Some(last) = newest().filter(|l| seen.last().is_none_or(|(s, _)| l > s)) {
            seen.push((last, Instant::now()));
        }
        std::thread::sleep(every);
    }
    seen
}

fn rpo(dir: &Path, seal: &SealedSegments, moto: Option<&offsite::Moto>) -> Rpo {
    use docket::lifecycle::offsite::uploader::{self, Uploader};
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let (store, sync, firm) = loaded(&dir.join("docket.redb"), Clock::system(), 1000);
    let backups = dir.join("backups");
    let segments = backups.join("segments");
    let shipper =
        Shipper::open(store.clone(), &segments, Arc::new(seal.clone()), Roll::default(), None).expect("shipper");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = runtime.spawn(shipping::run(shipper, Duration::from_secs(1), stopped.clone()));
    let upload = moto.map(|m| {
        let uploader = Uploader::new(m.target(), &backups, Keep { daily: 7, weekly: 4 }, Clock::system());
        runtime.spawn(uploader::run(uploader, Duration::from_secs(1), stopped.clone()))
    });
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut commits = Vec::new();
            let start = Instant::now();
            let mut version = 0;
            while start.elapsed() < Duration::from_secs(10) {
                version += 1;
                upsert(&store, &sync, (0..10).map(|i| record(&firm, (version * 10 + i) % 1000, version)));
                commits.push((store.journal_head().expect("head"), Instant::now()));
                std::thread::sleep(Duration::from_millis(2));
            }
            commits
        })
    };
    let remote = moto.map(|m| {
        let (target, handle) = (m.target(), runtime.handle().clone());
        let writer_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = writer_done.clone();
        let poller = std::thread::spawn(move || {
            watch(
                Duration::from_millis(20),
                || done.load(std::sync::atomic::Ordering::SeqCst),
                || {
                    let names = handle.block_on(target.list()).ok()?;
                    names.iter().filter_map(|o| docket::lifecycle::offsite::segment(&o.name)).map(|s| s.last).max()
                },
            )
        });
        (writer_done, poller)
    });
    let seen = watch(
        Duration::from_millis(2),
        || writer.is_finished(),
        || shipping::list(&segments).expect("list").chain.last().map(|s| s.name.last),
    );
    let commits = writer.join().expect("writer");
    // The last commits' uploads: give them two intervals before the poller stops.
    std::thread::sleep(Duration::from_secs(2));
    let offsite_seen = remote.map(|(done, poller)| {
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        poller.join().expect("poller")
    });
    let _ = stop.send(true);
    let _ = runtime.block_on(task);
    if let Some(upload) = upload {
        let _ = runtime.block_on(upload);
    }
    Rpo {
        local: worst_gap(&commits, &seen),
        offsite: offsite_seen.map(|s| worst_gap(&commits, &s)),
        commits: commits.len() as u64,
    }
}

fn main() {
    let n = records();
    let key = age::x25519::Identity::generate();
    let signer = docket::lifecycle::backup::Signer::generate();
    let trust = docket::lifecycle::backup::Trust::signer(signer.public());
    let seal = SealedSegments { recipients: vec![key.to_public()], identities: vec![key], signer: Some(signer), trust };
    println!("records: {n}; a simulated week: {MINUTES_A_WEEK} transactions of {} record edits", (n / 6000).max(1));

    let plain = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let without = week(plain.path(), n, None);
    println!("week without shipping: {:.1} s", started.elapsed().as_secs_f64());
    drop(without.store);

    let shipped = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let with = week(shipped.path(), n, Some(&seal));
    println!("week with shipping, pruning and daily backups: {:.1} s", started.elapsed().as_secs_f64());
    println!("store size (MiB) at the end of each day, day 0 = after the load:");
    println!("  day  without-shipping  with-shipping+pruning");
    for (day, (a, b)) in without.daily_mib.iter().zip(&with.daily_mib).enumerate() {
        println!("  {day:>3}  {a:>16.1}  {b:>21.1}");
    }
    let segments = shipped.path().join("backups/segments");
    let count = shipping::list(&segments).expect("list").chain.len();
    println!("segments: {count} files, {:.1} MiB", mib(dir_size(&segments)));

    // One day back, the worst case for daily backups: just before the last
    // commit of a day (the next day's backup holds it), so the newest backup
    // before it is a day older and a day of segments is replayed over it.
    let at = with.end.plus_micros(-(24 * 3600 + 90) * 1_000_000);
    let into = shipped.path().join("restored");
    let started = Instant::now();
    let options = pitr::AtOptions {
        backup_dir: &shipped.path().join("backups"),
        identities: &seal.identities,
        at,
        into: &into,
        restore: docket::lifecycle::restore::RestoreOptions::new(Clock::system(), &Quiet, seal.trust.clone()),
    };
    let restored = pitr::restore_at(&options).expect("point-in-time restore");
    println!(
        "RTO, point-in-time restore one day back: {:.2} s (base backup + {} entries replayed, head seq {})",
        started.elapsed().as_secs_f64(),
        restored.entries,
        restored.head
    );

    let rpo_dir = tempfile::tempdir().expect("tempdir");
    let moto = offsite::Moto::start();
    let measured = rpo(rpo_dir.path(), &seal, moto.as_ref());
    println!(
        "RPO: largest gap between a commit and its segment being final: {:.0} ms over {} commits (ship_interval 1 s)",
        measured.local.as_secs_f64() * 1e3,
        measured.commits
    );
    match measured.offsite {
        Some(worst) => println!(
            "RPO for a lost disk: largest gap between a commit and its segment being in object storage: {:.0} ms (goal <= 2000 ms)",
            worst.as_secs_f64() * 1e3
        ),
        None => println!("RPO for a lost disk skipped: no moto_server in .ci/venv (run .ci/run)"),
    }
}
