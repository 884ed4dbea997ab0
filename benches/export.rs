//! The export and erasure benchmark (figures, not a timed test):
//! `cargo bench --bench export` (1,000,000 records; `DOCKET_BENCH_RECORDS=N`
//! for another size; smoke: `DOCKET_BENCH_RECORDS=5000 cargo bench --profile dev --bench export`).
//!
//! A firm from `clio::generator::Firm` is written through the sync's write
//! path. Then, in the same run and the same process, each phase with the
//! peak RSS reset before it (`/proc/self/clear_refs`, Linux):
//! 1. a plain read of every record in one snapshot (decode, nothing written): the baseline;
//! 2. the JSON export to a file (`lifecycle::export::to_file`);
//! 3. the CSV export to a file;
//! 4. erasing every record (`lifecycle::erase::erase_clio_data`): time, store bytes before and after.
//!
//! Reported per phase: records/s and peak RSS (goal: at most 100 MiB whatever the size).
use docket::clio::generator::Firm;
use docket::clock::Clock;
use docket::data::{self, Viewer};
use docket::lifecycle::export::{Format, Options, Selection, to_file};
use docket::lifecycle::upgrade::human_bytes;
use docket::records::Kind;
use docket::store::{OrgTask, OrgTaskContext, Store};
use std::time::Instant;

mod fill;
use fill::fill;

/// Resets the peak RSS the kernel reports (Linux: writing 5 to clear_refs).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The peak RSS since the last reset, in bytes (`VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn phase(name: &str, records: u64, run: impl FnOnce()) {
    reset_peak();
    let t = Instant::now();
    run();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{name:<12} {records} records in {secs:.2} s: {:.0} records/s, peak RSS {}",
        records as f64 / secs.max(1e-9),
        human_bytes(peak_rss())
    );
}

fn main() {
    let total: u64 = std::env::var("DOCKET_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("data/docket.redb"), Clock::system()).expect("store");
    let t = Instant::now();
    let org = fill(&store, total);
    let written = Firm::new(1, total).total();
    println!("wrote {written} records through the sync's write path in {:.1} s", t.elapsed().as_secs_f64());

    let ctx = OrgTaskContext::new(OrgTask::Test);
    phase("plain read", written, || {
        let viewer = Viewer::unwalled(&ctx, org);
        let mut n = 0u64;
        store
            .read(|r| {
                for kind in Kind::ALL {
                    data::visit_seen(r, &viewer, kind, |record| {
                        n += u64::from(!record.id.is_empty());
                        Ok(true)
                    })?;
                }
                Ok(())
            })
            .expect("read");
        assert_eq!(n, written);
    });
    for format in [Format::Json, Format::Csv] {
        let out = dir.path().join(format!("export.{}.zip", format.as_str()));
        let options = Options { format, selection: Selection::All, bom: false };
        phase(&format!("{} export", format.as_str()), written, || {
            let m = to_file(&store, org, &options, &out, |_| {}).expect("export");
            assert_eq!(m.total, written);
        });
        println!("{:<12} zip of {}", "", human_bytes(std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0)));
    }

    let before = std::fs::metadata(store.path()).expect("size").len();
    phase("erase", written, || {
        let scope = ctx.org_scope(org);
        let erased =
            docket::lifecycle::erase::erase_clio_data(&store, &scope, &docket::audit::Context::default(), dir.path())
                .expect("erase");
        assert_eq!(erased.records, written);
    });
    let after = std::fs::metadata(store.path()).expect("size").len();
    println!("store bytes before the erasure {}, after {}", human_bytes(before), human_bytes(after));
}
