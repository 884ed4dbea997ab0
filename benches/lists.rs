//! The filtered-list benchmark (figures, not a timed test):
//! `cargo bench --bench lists` (1,000,000 records; `DOCKET_BENCH_RECORDS=N`
//! for another size, `DOCKET_BENCH_SCAN_RUNS=N` for the baseline's runs).
//!
//! Loads the generator's firm through `data::put_record` (the write path the
//! sync uses: each record and its index rows in one transaction, journaled),
//! then times the first page (100 records) of each list:
//! - through the record index (`data::list`, what the API serves), and
//! - by the full scan of the kind with the same filters (`data::list_by_scan`,
//!   the old plan: the baseline, measured in the same run),
//!
//! and prints p50 and p99 of each, the ratio of the p50s, and the rows each
//! page examined.
use docket::clio::generator::Firm;
use docket::clock::Clock;
use docket::data::{self, Date, Filters, Viewer};
use docket::records::{Kind, Record};
use docket::store::{OrgTask, OrgTaskContext, Store};
use docket::timestamp::Timestamp;
use std::time::{Duration, Instant};

/// Records written per transaction while loading.
const LOAD_BATCH: usize = 5_000;
const PAGE: usize = 100;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// p50 and p99 of `times`, in milliseconds.
fn percentiles(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let at = |q: f64| {
        let i = ((times.len() as f64 - 1.0) * q).round() as usize;
        times.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    (at(0.50), at(0.99))
}

/// Times `runs` first pages of one list; returns (p50, p99, rows examined, records).
fn measure(runs: u64, mut page: impl FnMut() -> data::Page) -> (f64, f64, u64, usize) {
    let (mut times, mut examined, mut found) = (vec![], 0, 0);
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let p = page();
        times.push(started.elapsed());
        (examined, found) = (p.examined, p.records.len());
    }
    let (p50, p99) = percentiles(times);
    (p50, p99, examined, found)
}

fn load(store: &Store, ctx: &OrgTaskContext, org: docket::store::OrgId, firm: &Firm) -> u64 {
    let scope = ctx.org_scope(org);
    let mut written = 0u64;
    for kind in Kind::ALL {
        let records = (0..firm.count(kind)).filter_map(|i| Record::from_clio(kind, firm.record(kind, i)).ok());
        let mut batch = Vec::with_capacity(LOAD_BATCH);
        let mut flush = |batch: &mut Vec<Record>| {
            store.write(|w| batch.iter().try_for_each(|r| data::put_record(w, &scope, r))).expect("write a batch");
            written += batch.len() as u64;
            batch.clear();
        };
        for record in records {
            batch.push(record);
            if batch.len() == LOAD_BATCH {
                flush(&mut batch);
            }
        }
        flush(&mut batch);
    }
    written
}

fn main() {
    let total = env("DOCKET_BENCH_RECORDS", 1_000_000);
    let runs = env("DOCKET_BENCH_RUNS", 200);
    let scan_runs = env("DOCKET_BENCH_SCAN_RUNS", 10);
    let firm = Firm::new(1, total);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("bench.redb"), Clock::system()).expect("store");
    let ctx = OrgTaskContext::new(OrgTask::Test);
    let org = docket::control::create_org(&store, &ctx, "bench", "Bench LLP").expect("org");
    let started = Instant::now();
    let written = load(&store, &ctx, org.id, &firm);
    let took = started.elapsed().as_secs_f64();
    println!(
        "firm: {written} records (seed 1) loaded through data::put_record in {took:.1} s = {:.0} records/s",
        written as f64 / took
    );

    // Filter values taken from the firm itself, so each selects real records.
    let record = |kind: Kind, i: u64| Record::from_clio(kind, firm.record(kind, i)).expect("record").raw;
    let matter = record(Kind::Matter, 0);
    let activity = record(Kind::Activity, 0);
    let id = |v: &serde_json::Value| v["id"].as_u64().map(|n| n.to_string());
    let day = activity["date"].as_str().and_then(|d| Date::parse(d).ok());
    let recent = Timestamp::from_micros(firm.updated_at(firm.count(Kind::Activity).saturating_sub(50)) * 1_000_000);
    let lists: Vec<(&str, Kind, Filters)> = vec![
        ("matters, unfiltered", Kind::Matter, Filters::default()),
        ("matters of one client", Kind::Matter, Filters { client_id: id(&matter["client"]), ..Filters::default() }),
        ("matters, status=Closed", Kind::Matter, Filters { status: Some("Closed".into()), ..Filters::default() }),
        (
            "matters of one client, status=Closed",
            Kind::Matter,
            Filters { client_id: id(&matter["client"]), status: Some("Closed".into()), ..Filters::default() },
        ),
        (
            "activities of one matter",
            Kind::Activity,
            Filters { matter_id: id(&activity["matter"]), ..Filters::default() },
        ),
        ("activities on one day", Kind::Activity, Filters { from: day, to: day, ..Filters::default() }),
        (
            "activities updated in the last 50 steps",
            Kind::Activity,
            Filters { updated_since: Some(recent), ..Filters::default() },
        ),
    ];

    let viewer = Viewer::unwalled(&ctx, org.id);
    println!(
        "first page ({PAGE} records) of each list; index: {runs} runs, full scan (baseline): {scan_runs} runs; times in ms"
    );
    println!(
        "{:<40} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>8}",
        "list", "p50", "p99", "examined", "scan p50", "scan p99", "examined", "scan/idx"
    );
    for (name, kind, filters) in &lists {
        let (p50, p99, examined, found) =
            measure(runs, || data::list(&store, &viewer, *kind, filters, None, PAGE).expect("list"));
        let (s50, s99, scanned, scan_found) =
            measure(scan_runs, || data::list_by_scan(&store, &viewer, *kind, filters, PAGE).expect("scan"));
        assert_eq!(found, scan_found, "{name}: the index and the scan agree on the page");
        println!(
            "{name:<40} {p50:>9.3} {p99:>9.3} {examined:>9} | {s50:>9.3} {s99:>9.3} {scanned:>9} | {:>7.1}x",
            s50 / p50.max(1e-9)
        );
    }
}
