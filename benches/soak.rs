//! The soak benchmark (figures, not a timed test): `cargo bench --bench soak`.
//!
//! Runs the real binary (`docket demo`, the build's own allocator and runtime)
//! with a firm of `DOCKET_SOAK_RECORDS` records (default 50,000) from the
//! built-in fake Clio, waits for the sync and the search index, then for
//! `DOCKET_SOAK_SECONDS` (default 600) drives a steady mixed load over HTTPS:
//! about 20 reads a second (lists, records, searches, suggestions) and 2
//! writes a second (a service token created, then revoked), a backup every
//! `DOCKET_SOAK_BACKUP_EVERY` seconds (default 120), a verification after
//! each of the first `DOCKET_SOAK_VERIFIES` backups (default 1), one reindex
//! half-way, and a burst of 200
//! parallel searches every 90 seconds. Every 15 seconds it samples the
//! service's resident memory, threads and open file descriptors from
//! `/proc/<pid>`, and the latency of the requests of that window.
//!
//! Printed: the idle RSS after the sync, the series, RSS growth after the
//! first two minutes (absolute, share of the start, per hour), peak RSS,
//! thread and fd growth after warm-up, first-minute and last-minute latency,
//! and the RSS of each verification (before, peak, 20 s after).
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const SAMPLE_EVERY: Duration = Duration::from_secs(15);
const WARM_UP: Duration = Duration::from_secs(120);
const BURST_EVERY: Duration = Duration::from_secs(90);
const BURST: usize = 200;
const READS_PER_SECOND: u64 = 20;
const WRITES_PER_SECOND: u64 = 2;
const QUERIES: &[&str] = &["smith", "contract", "johnson deposition", "review", "wils", "motion to compel", "00041"];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

/// What `/proc/<pid>` says of the service now.
#[derive(Clone, Copy, Default)]
struct Proc {
    rss_kib: u64,
    /// Anonymous memory (heap, stacks); the rest of the RSS is file pages
    /// (the binary, the search index's mapped files) the kernel can drop.
    anon_kib: u64,
    threads: u64,
    fds: u64,
}

fn sample(pid: u32) -> Proc {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0);
    Proc { rss_kib: field("VmRSS:"), anon_kib: field("RssAnon:"), threads: field("Threads:"), fds }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The demo service, stopped (SIGTERM, then kill) when dropped.
struct Service {
    child: Child,
    data_dir: PathBuf,
    base: String,
    token: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The docket binary as a command; docket reads every `DOCKET_*` variable
/// as config, so the soak's own are taken out.
fn docket() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_docket"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("DOCKET_SOAK_")) {
        command.env_remove(name);
    }
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn start(data_dir: &Path, records: u64) -> Service {
    let (https, http) = (free_port(), free_port());
    let mut child = docket()
        .args(["demo", "--data-dir"])
        .arg(data_dir)
        .args(["--https-port", &https.to_string(), "--http-port", &http.to_string()])
        .args(["--records", &records.to_string()])
        // One client sends everything: the per-address limits would refuse the load.
        .env("DOCKET_LIMITS__PER_IP_PER_MINUTE", "100000000")
        .env("DOCKET_LIMITS__PER_CREDENTIAL_PER_MINUTE", "100000000")
        .env("DOCKET_LIMITS__SIGN_IN_PER_IP_PER_MINUTE", "100000000")
        .env("DOCKET_LOG__LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start docket demo");
    let stdout = child.stdout.take().expect("demo stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut token = None;
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        if let Some(t) = line.trim().strip_prefix("API token: ") {
            token = Some(t.trim().to_string());
            break;
        }
    }
    // The demo logs to stdout: keep reading, or a full pipe would stall it.
    std::thread::spawn(move || lines.for_each(drop));
    let Some(token) = token else {
        let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
        panic!("the demo did not print its API token (it ended: {status}; its errors are above)");
    };
    Service { child, data_dir: data_dir.to_path_buf(), base: format!("https://127.0.0.1:{https}"), token }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

async fn get(client: &reqwest::Client, s: &Service, path: &str) -> Option<serde_json::Value> {
    let response = client.get(format!("{}{path}", s.base)).bearer_auth(&s.token).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// Waits until every kind finished its first sync and the search index caught up.
async fn wait_synced(client: &reqwest::Client, s: &Service) -> Duration {
    let started = Instant::now();
    loop {
        let synced = get(client, s, "/api/v1/clio/sync").await.is_some_and(|status| {
            let kinds = status["kinds"].as_array().cloned().unwrap_or_default();
            !kinds.is_empty()
                && kinds.iter().all(|k| k["full_sync_done"] == true && k["in_progress"] == false)
                && status["running"] == false
        });
        let lag = metric(client, s, "docket_search_lag_entries").await;
        if synced && lag == Some(0.0) {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(3600), "the demo did not finish its sync within an hour");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn metric(client: &reqwest::Client, s: &Service, name: &str) -> Option<f64> {
    let text = client.get(format!("{}/metrics", s.base)).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

/// Latencies of the current window, and counters over the whole run.
#[derive(Default)]
struct Tally {
    window: Vec<Duration>,
    ok: u64,
    /// Failed requests by status (0: no answer).
    failed: std::collections::BTreeMap<u16, u64>,
}

async fn timed(tally: &Mutex<Tally>, request: reqwest::RequestBuilder) -> Option<reqwest::Response> {
    let started = Instant::now();
    let response = request.send().await.ok();
    if let Some(r) = &response
        && !r.status().is_success()
        && tally.lock().await.failed.is_empty()
    {
        println!("  first failure: {} {} {:?}", r.status(), r.url().path(), r.headers().get("retry-after"));
    }
    let mut t = tally.lock().await;
    t.window.push(started.elapsed());
    match &response {
        Some(r) if r.status().is_success() => t.ok += 1,
        Some(r) => *t.failed.entry(r.status().as_u16()).or_default() += 1,
        None => *t.failed.entry(0).or_default() += 1,
    }
    response
}

fn read_request(client: &reqwest::Client, s: &Service, i: u64) -> reqwest::RequestBuilder {
    let q = QUERIES[(i as usize) % QUERIES.len()];
    let path = match i % 5 {
        0 => "/api/v1/matters?limit=50".to_string(),
        1 => "/api/v1/contacts?limit=50".to_string(),
        2 => format!("/api/v1/search?q={}", q.replace(' ', "+")),
        3 => format!("/api/v1/search/suggest?q={}", &q[..q.len().min(4)]),
        _ => "/api/v1/activities?limit=20".to_string(),
    };
    client.get(format!("{}{path}", s.base)).bearer_auth(&s.token)
}

/// One write: a service token made, then revoked (two journaled, audited transactions).
async fn write_once(client: &reqwest::Client, s: &Service, tally: &Mutex<Tally>, i: u64) {
    let body = serde_json::json!({ "name": format!("soak {i}"), "role": "staff", "expires_in_days": 1 });
    let request = client.post(format!("{}/api/v1/tokens/service", s.base)).bearer_auth(&s.token).json(&body);
    let Some(response) = timed(tally, request).await else { return };
    let Ok(created) = response.json::<serde_json::Value>().await else { return };
    if let Some(id) = created["record"]["id"].as_str() {
        let request = client.delete(format!("{}/api/v1/tokens/{id}", s.base)).bearer_auth(&s.token);
        timed(tally, request).await;
    }
}

/// A `docket` admin command against the running demo (through its control socket).
fn admin(s: &Service, args: &[&str]) -> bool {
    docket()
        .args(args)
        .arg("--data-dir")
        .arg(&s.data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

struct Row {
    at: Duration,
    proc: Proc,
    /// The window's latencies, sorted.
    window: Vec<Duration>,
}

/// RSS before a verification, its peak while it runs, and 20 s after.
async fn verify_with_peak(s: &Service, pid: u32) -> (u64, u64, u64) {
    let before = sample(pid).rss_kib;
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(before));
    let watcher = {
        let (done, peak) = (done.clone(), peak.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(sample(pid).rss_kib, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let data_dir = s.data_dir.clone();
    let failed = tokio::task::spawn_blocking(move || {
        let out = docket().args(["backup", "verify", "--data-dir"]).arg(&data_dir).output();
        match out {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(String::from_utf8_lossy(&out.stderr).into_owned()),
            Err(e) => Some(e.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| Some(e.to_string()));
    done.store(true, Ordering::Relaxed);
    let _ = watcher.await;
    if let Some(why) = failed {
        println!("  (the verification failed: {})", why.trim());
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    (before, peak.load(Ordering::Relaxed), sample(pid).rss_kib)
}

#[tokio::main]
async fn main() {
    let seconds = env_u64("DOCKET_SOAK_SECONDS", 600);
    let records = env_u64("DOCKET_SOAK_RECORDS", 50_000);
    let verifies = env_u64("DOCKET_SOAK_VERIFIES", 1);
    let backup_every = Duration::from_secs(env_u64("DOCKET_SOAK_BACKUP_EVERY", 120));
    let dir = tempfile::tempdir().expect("temp dir");
    println!("soak: {records} records, {seconds} s of load (docket demo, {})", env!("CARGO_BIN_EXE_docket"));
    let service = Arc::new(start(&dir.path().join("data"), records));
    let pid = service.child.id();
    let client = client();
    let synced = wait_synced(&client, &service).await;
    println!("sync and index of {records} records: {:.1} s, peak so far {}", synced.as_secs_f64(), mib(peak_kib(pid)));
    // Past the indexer's writer release (30 s) and jemalloc's decay (~10 s).
    tokio::time::sleep(Duration::from_secs(45)).await;
    let idle = sample(pid);
    println!(
        "idle after the sync: RSS {} ({} anonymous), {} threads, {} fds",
        mib(idle.rss_kib),
        mib(idle.anon_kib),
        idle.threads,
        idle.fds
    );

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = vec![];
    for (per_second, write) in [(READS_PER_SECOND, false), (WRITES_PER_SECOND, true)] {
        let (client, s, tally, stop) = (client.clone(), service.clone(), tally.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / per_second));
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                i += 1;
                let (client, s, tally) = (client.clone(), s.clone(), tally.clone());
                tokio::spawn(async move {
                    if write {
                        write_once(&client, &s, &tally, i).await;
                    } else {
                        timed(&tally, read_request(&client, &s, i)).await;
                    }
                });
            }
        }));
    }

    let started = Instant::now();
    let total = Duration::from_secs(seconds);
    let (mut next_sample, mut next_backup, mut next_burst) = (SAMPLE_EVERY, backup_every, BURST_EVERY);
    let mut verified = 0;
    let mut reindexed = false;
    let mut rows: Vec<Row> = vec![];
    let mut verify_rows = vec![];
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = started.elapsed();
        if now >= next_burst {
            next_burst += BURST_EVERY;
            let mut burst = vec![];
            for i in 0..BURST {
                let (client, s, tally) = (client.clone(), service.clone(), tally.clone());
                burst.push(tokio::spawn(
                    async move { timed(&tally, read_request(&client, &s, 2 + 5 * i as u64)).await },
                ));
            }
            for b in burst {
                let _ = b.await;
            }
        }
        if now >= next_backup {
            next_backup += backup_every;
            let s = service.clone();
            let _ = tokio::task::spawn_blocking(move || admin(&s, &["backup", "now"])).await;
            if verified < verifies {
                verified += 1;
                verify_rows.push(verify_with_peak(&service, pid).await);
            }
        }
        if !reindexed && now >= total / 2 {
            reindexed = true;
            let s = service.clone();
            let _ = tokio::task::spawn_blocking(move || admin(&s, &["reindex"])).await;
        }
        if now >= next_sample {
            next_sample += SAMPLE_EVERY;
            let mut window = std::mem::take(&mut tally.lock().await.window);
            window.sort();
            rows.push(Row { at: now, proc: sample(pid), window });
        }
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        let _ = l.await;
    }
    report(&rows, &verify_rows, &tally, idle, pid).await;
}

/// The process's peak resident memory so far (`VmHWM`).
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn report(rows: &[Row], verify_rows: &[(u64, u64, u64)], tally: &Mutex<Tally>, idle: Proc, pid: u32) {
    println!(
        "\n{:>6}  {:>10}  {:>7}  {:>4}  {:>8}  {:>8}  {:>8}",
        "t (s)", "RSS", "threads", "fds", "requests", "p50 ms", "p99 ms"
    );
    for r in rows {
        println!(
            "{:>6.0}  {:>10}  {:>7}  {:>4}  {:>8}  {:>8.1}  {:>8.1}",
            r.at.as_secs_f64(),
            mib(r.proc.rss_kib),
            r.proc.threads,
            r.proc.fds,
            r.window.len(),
            percentile(&r.window, 0.5),
            percentile(&r.window, 0.99)
        );
    }
    let t = tally.lock().await;
    let failed: u64 = t.failed.values().sum();
    println!("\nrequests: {} answered 2xx, {failed} failed {:?} (status: count; 0 = no answer)", t.ok, t.failed);
    println!("idle RSS after the sync: {}", mib(idle.rss_kib));
    println!("peak RSS (VmHWM): {}", mib(peak_kib(pid)));
    for (i, (before, peak, after)) in verify_rows.iter().enumerate() {
        println!(
            "verification {}: RSS before {}, peak {}, 20 s after {} ({:+.1} MiB kept)",
            i + 1,
            mib(*before),
            mib(*peak),
            mib(*after),
            (*after as f64 - *before as f64) / 1024.0
        );
    }
    let warm: Vec<&Row> = rows.iter().filter(|r| r.at >= WARM_UP).collect();
    // The median of a minute's samples: a sample taken while a backup runs
    // holds its buffers, which are returned seconds later.
    let per_minute = (60 / SAMPLE_EVERY.as_secs()) as usize;
    let median_rss = |rs: &[&Row]| {
        let mut v: Vec<u64> = rs.iter().map(|r| r.proc.rss_kib).collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    if warm.len() >= 2 * per_minute {
        let (first, last) = (median_rss(&warm[..per_minute]), median_rss(&warm[warm.len() - per_minute..]));
        let grew = last as f64 - first as f64;
        let hours = (warm[warm.len() - 1].at - warm[0].at).as_secs_f64() / 3600.0;
        println!(
            "RSS after warm-up (median of the first and of the last minute): {} → {} ({:+.1} MiB, {:+.1}% of the start; {:+.1} MiB/hour)",
            mib(first),
            mib(last),
            grew / 1024.0,
            100.0 * grew / first.max(1) as f64,
            grew / 1024.0 / hours.max(1e-9)
        );
    }
    if let (Some(first), Some(last)) = (warm.first(), warm.last()) {
        let max_threads = warm.iter().map(|r| r.proc.threads).max().unwrap_or(0);
        let max_fds = warm.iter().map(|r| r.proc.fds).max().unwrap_or(0);
        println!(
            "threads after warm-up: {} → {} (max {max_threads}); fds: {} → {} (max {max_fds})",
            first.proc.threads, last.proc.threads, first.proc.fds, last.proc.fds
        );
    }
    let minute = |rs: &[&Row]| {
        let mut all: Vec<Duration> = rs.iter().flat_map(|r| r.window.iter().copied()).collect();
        all.sort();
        (percentile(&all, 0.5), percentile(&all, 0.99))
    };
    let all: Vec<&Row> = rows.iter().collect();
    if all.len() >= 2 * per_minute {
        let (f50, f99) = minute(&all[..per_minute]);
        let (l50, l99) = minute(&all[all.len() - per_minute..]);
        println!(
            "latency, first minute: p50 {f50:.1} ms, p99 {f99:.1} ms; last minute: p50 {l50:.1} ms, p99 {l99:.1} ms"
        );
    }
}
