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
//! 4. with an S3-compatible server (moto from `.ci/venv`, see `offsite/`):
//!    the uploader sending the backup directory off-site against one plain
//!    `put` of the same bytes, and the RTO from object storage (download
//!    into a staging dir, then the same restore).
//!
//! Reported: store size, backup size and ratio, copy and backup throughput and
//! their ratio, restore time.
use docket::clock::Clock;
use docket::lifecycle::backup::{self, Quiet, Settings, retention::Keep};
use docket::lifecycle::restore::{self, RestoreOptions};
use docket::lifecycle::upgrade::human_bytes;
use docket::secrets::Keyring;
use docket::store::Store;
use std::io::Write as _;
use std::time::Instant;

mod offsite;

mod fill;
use fill::fill;

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
    drop(copy);
    offsite_figures(&mut out, &settings.dir, dir.path(), &keyring, signer.public());
}

/// Upload throughput (the uploader against a plain put of the same bytes)
/// and the RTO from object storage, when moto is at hand.
fn offsite_figures(
    out: &mut impl std::io::Write,
    backups: &std::path::Path,
    scratch: &std::path::Path,
    keyring: &Keyring,
    signer: docket::lifecycle::backup::signing::PublicKey,
) {
    use docket::lifecycle::offsite::{download, uploader::Uploader};
    let Some(moto) = offsite::Moto::start() else {
        let _ = writeln!(out, "off-site figures skipped: no moto_server in .ci/venv (run .ci/run)");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let target = moto.target();
    let bytes: u64 =
        std::fs::read_dir(backups).expect("dir").flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum();
    let t = Instant::now();
    runtime.block_on(async {
        let mut uploader = Uploader::new(target.clone(), backups, Keep { daily: 7, weekly: 4 }, Clock::system());
        while uploader.round().await.expect("upload").pending > 0 {}
    });
    let upload_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    runtime.block_on(async {
        for entry in std::fs::read_dir(backups).expect("dir").flatten() {
            let name = format!("plain/{}", entry.file_name().to_string_lossy());
            target.put_file(&name, &entry.path(), true).await.expect("plain put");
        }
    });
    let plain_secs = t.elapsed().as_secs_f64();
    let _ = writeln!(
        out,
        "off-site upload of backup.dir ({}): {upload_secs:.2} s ({}) against plain puts of the same files {plain_secs:.2} s ({}): {:.2}x",
        human_bytes(bytes),
        rate(bytes, upload_secs),
        rate(bytes, plain_secs),
        upload_secs / plain_secs.max(1e-9)
    );
    let t = Instant::now();
    let now = docket::timestamp::Timestamp::from_micros(Clock::system().now_micros());
    let staged = runtime.block_on(download::stage(&moto.settings, scratch, download::Want::At(now))).expect("download");
    let download_secs = t.elapsed().as_secs_f64();
    let info = backup::list(staged.dir.path()).expect("list").pop().expect("a backup off-site");
    let into = scratch.join("restored-offsite");
    let options = RestoreOptions::new(Clock::system(), &Quiet, docket::lifecycle::backup::Trust::signer(signer));
    restore::restore(Some(&info), &[keyring.identity().clone()], &into, &options, |_| {
        Ok::<(), restore::RestoreError>(())
    })
    .expect("restore");
    let _ = writeln!(
        out,
        "RTO from object storage: {:.2} s (download {download_secs:.2} s of {} files, {}; then the restore)",
        t.elapsed().as_secs_f64(),
        staged.files,
        human_bytes(staged.bytes)
    );
}
