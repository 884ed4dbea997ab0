//! The Clio sync benchmark (figures, not a timed test):
//! `cargo bench --bench sync` (1,000,000 records; `DOCKET_BENCH_RECORDS=N` for another size).
//!
//! The fake Clio runs in this process on loopback with rate limiting off. Two
//! passes over the same firm:
//! 1. baseline: every page fetched and parsed into records, nothing stored;
//! 2. sync: the real thing (HTTP, parse, store, journal, checkpoint per page).
//!
//! Reported: wall time, records per second, API calls, the ratio sync/baseline,
//! peak RSS of the process (the fake included), store file size, and what the
//! same first sync would take at Clio's documented 50 requests per minute.
use docket::clio::client::{ClioClient, Endpoints, RetryPolicy, http_client};
use docket::clio::fake::FakeClio;
use docket::clio::sync;
use docket::clock::Clock;
use docket::records::{Kind, Record};
use docket::secrets::Secret;
use docket::store::{OrgTask, OrgTaskContext, RawRow, Section, Store, SystemContext, Task};
use docket::telemetry::Metrics;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

/// What the store costs once its journal is shipped: prunes every entry, then
/// copies the rows (journal pruned) into a fresh file, as a restore would, so
/// pages redb keeps free are not counted. Returns (bytes before, bytes after).
fn shipped_and_pruned(store: &Store, copy_path: &std::path::Path) -> (u64, u64) {
    let before = std::fs::metadata(store.path()).map(|m| m.len()).unwrap_or(0);
    let ctx = SystemContext::new(Task::Backup);
    let head = store.journal_head().expect("head");
    store.prune_journal_before(&ctx, head + 1).expect("prune");
    let copy = Store::open(copy_path, Clock::system()).expect("copy");
    let restore = copy.restore(&SystemContext::new(Task::Restore)).expect("restore");
    let mut batch: Vec<(Section, Vec<u8>, Vec<u8>)> = Vec::with_capacity(4096);
    let flush = |batch: &mut Vec<(Section, Vec<u8>, Vec<u8>)>| {
        let rows = batch.iter().map(|(section, key, value)| RawRow { section: *section, key, value });
        restore.import(rows).expect("import");
        batch.clear();
    };
    store
        .export(&ctx, |row| {
            batch.push((row.section, row.key.to_vec(), row.value.to_vec()));
            if batch.len() == 4096 {
                flush(&mut batch);
            }
            Ok(())
        })
        .expect("export");
    flush(&mut batch);
    restore.finish().expect("finish");
    (before, std::fs::metadata(copy_path).map(|m| m.len()).unwrap_or(0))
}

#[tokio::main]
async fn main() {
    let total: u64 = std::env::var("DOCKET_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let fake = FakeClio::start(1, total).await.expect("fake Clio");
    let firm = fake.firm();
    let endpoints = Endpoints::at(&fake.base_url());
    let http = http_client(Duration::from_secs(60)).expect("http");
    let secret = Secret::new(fake.client_secret.clone());
    let tokens = fake.grant(&http).await.expect("token");
    let client = ClioClient::new(
        http,
        endpoints,
        fake.client_id.clone(),
        secret,
        tokens,
        Arc::new(|_| Ok(())),
        Arc::new(Metrics::default()),
        RetryPolicy::default(),
    );
    println!("firm: {} records (seed 1), fake Clio on {}", firm.total(), fake.base_url());

    // 1. Baseline: fetch and parse every page, store nothing.
    let started = Instant::now();
    let mut parsed = 0u64;
    for listing in Kind::ALL.into_iter().flat_map(sync::Listing::of) {
        let kind = listing.kind;
        let mut url = Some(client.first_page_url(kind, kind.fields(), None, listing.filter()));
        while let Some(u) = url {
            let page = client.page(&u, kind).await.expect("page");
            parsed += page.data.into_iter().filter_map(|raw| Record::from_clio(kind, raw).ok()).count() as u64;
            url = page.next;
        }
    }
    let baseline = started.elapsed();
    let calls_baseline = fake.api_calls();

    // 2. The sync.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.redb");
    let store = Arc::new(Store::open(&path, Clock::system()).expect("store"));
    let ctx = OrgTaskContext::new(OrgTask::Test);
    let org = docket::control::create_org(&store, &ctx, "bench", "Bench LLP").expect("org");
    let scope = sync::SyncScope::begin(&store, &ctx, org.id).expect("sync scope");
    let started = Instant::now();
    let mut stored = 0;
    for kind in Kind::ALL {
        stored += sync::sync_kind(&store, &scope, &client, kind).await.expect("sync").stored;
    }
    let elapsed = started.elapsed();
    let calls = fake.api_calls() - calls_baseline;
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);

    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "baseline (HTTP + parse, no store): {parsed} records in {:.1} s = {:.0} records/s",
        baseline.as_secs_f64(),
        rate(parsed, baseline)
    );
    println!(
        "sync (HTTP + parse + store + journal): {stored} records in {:.1} s = {:.0} records/s",
        elapsed.as_secs_f64(),
        rate(stored, elapsed)
    );
    println!("ratio sync/baseline time: {:.2}x", elapsed.as_secs_f64() / baseline.as_secs_f64());
    println!("API calls for the sync: {calls} (users 2000 per page, the rest 200)");
    println!("journal head: {}", store.journal_head().unwrap_or(0));
    println!("store file: {:.0} MiB", size as f64 / 1_048_576.0);
    println!("peak RSS (this process, fake Clio included): {:.0} MiB", peak_rss_mib());
    let (with_journal, without) = shipped_and_pruned(&store, &dir.path().join("pruned.redb"));
    println!(
        "store bytes per record: {:.0} with the journal, {:.0} once shipped journal entries are pruned and the file compacted",
        with_journal as f64 / stored.max(1) as f64,
        without as f64 / stored.max(1) as f64
    );
    let minutes = calls as f64 / 50.0;
    println!(
        "at Clio's 50 requests/minute the same first sync needs {calls} requests = {:.0} min ({:.1} h)",
        minutes,
        minutes / 60.0
    );
}
