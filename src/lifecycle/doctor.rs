//! `docket doctor`: a checklist of what an operator would otherwise check by
//! hand (config, file modes, key, disk, schema, certificate, the service's own
//! /healthz and sync health, the clock and the reachability of Clio, the
//! identity providers and the ACME CA), each failure with its fix.
//!
//! It only reads: it never opens the store for writing, never migrates, and
//! sends nothing but GET requests. `--no-network` skips the outside world.
use crate::config::{Config, ConfigError, TlsMode};
use crate::lifecycle::upgrade::{self, Action, human_bytes};
use crate::secrets::{Keyring, key_candidates};
use crate::store::SCHEMA_VERSION;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Clio's default region, checked for reachability.
const CLIO: &str = "https://app.clio.com";
/// Clock skew past which sign-in (OIDC, TOTP) and tokens misbehave.
const SKEW_FAIL: Duration = Duration::from_secs(60);
const SKEW_WARN: Duration = Duration::from_secs(5);
/// Certificate lifetimes left below which doctor warns / fails.
const CERT_WARN_DAYS: i64 = 21;
const CERT_FAIL_DAYS: i64 = 7;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Info,
    Warn,
    Fail,
}

/// One line of the checklist.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

fn check(name: &str, status: Status, detail: impl Into<String>, fix: Option<String>) -> Check {
    Check { name: name.to_string(), status, detail: detail.into(), fix }
}

/// An error message of the house form "problem\n  fix: how" as a failed check.
fn failed(name: &str, message: &str) -> Check {
    match message.split_once("\n  fix: ") {
        Some((problem, fix)) => check(name, Status::Fail, problem, Some(fix.to_string())),
        None => check(name, Status::Fail, message, None),
    }
}

/// How doctor runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Check DNS, reachability and clock skew of Clio, the identity providers and the ACME CA.
    pub network: bool,
    pub timeout: Duration,
}

/// The checklist.
#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let tag = match c.status {
                Status::Ok => " ok ",
                Status::Info => "info",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            out.push_str(&format!("[{tag}] {}: {}\n", c.name, c.detail));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("       fix: {fix}\n"));
            }
        }
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        out.push_str(&format!(
            "{} failed, {} warnings, {} checks\n",
            count(Status::Fail),
            count(Status::Warn),
            self.checks.len()
        ));
        out
    }
}

/// Whether each firm's search index can be used (read-only; the service
/// may be running). An unusable one is rebuilt at the next start.
fn search_indexes(config: &Config) -> Check {
    let found = crate::search::index::inspect(&crate::search::index::root(&config.data_dir));
    if found.is_empty() {
        return check("search index", Status::Info, "none yet; the service builds one per firm when it starts", None);
    }
    let bad: Vec<String> =
        found.iter().filter_map(|(org, r)| r.as_ref().err().map(|why| format!("org {org}: {why}"))).collect();
    if !bad.is_empty() {
        return check(
            "search index",
            Status::Warn,
            bad.join("; "),
            Some(
                "the service rebuilds it at its next start (searches answer 503 meanwhile), or run `docket reindex`"
                    .into(),
            ),
        );
    }
    let seqs: Vec<u64> = found.iter().filter_map(|(_, r)| r.as_ref().ok().copied()).collect();
    let (low, high) = (seqs.iter().min().copied().unwrap_or(0), seqs.iter().max().copied().unwrap_or(0));
    let detail = format!("{} firm indexes usable, holding the journal through seq {low} to {high}", found.len());
    check("search index", Status::Ok, detail, None)
}

/// Runs every check on the instance `config` describes.
pub async fn run(config: Result<Config, ConfigError>, options: &Options) -> Report {
    let mut report = Report::default();
    let config = match config {
        Ok(c) => {
            report.checks.push(check("config", Status::Ok, "valid", None));
            c
        }
        Err(e) => {
            report.checks.push(check("config", Status::Fail, e.problem.clone(), Some(e.fix.clone())));
            return report;
        }
    };
    report.checks.extend(files(&config));
    report.checks.push(key(&config));
    report.checks.push(disk(&config));
    report.checks.push(schema(&config));
    report.checks.push(certificate(&config));
    let client = match http_client(options.timeout) {
        Ok(c) => c,
        Err(e) => {
            report.checks.push(check("http client", Status::Fail, e, None));
            return report;
        }
    };
    report.checks.extend(service(&config, &client).await);
    let now = crate::timestamp::Timestamp::from_micros(crate::clock::Clock::system().now_micros());
    report.checks.extend(backups(&config, now));
    report.checks.push(offsite(&config, now));
    report.checks.push(search_indexes(&config));
    if options.network {
        for (name, url) in outside_services(&config) {
            report.checks.push(reachable(&client, &name, &url).await);
        }
    } else {
        report.checks.push(check(
            "network",
            Status::Info,
            "skipped (--no-network): DNS, reachability and clock skew of Clio, identity providers, ACME CA",
            None,
        ));
    }
    report
}

/// Data dir 0700; store and key owned by the data dir's owner and private.
fn files(config: &Config) -> Vec<Check> {
    let dir = &config.data_dir;
    let shown = dir.display();
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) => {
            return vec![check(
                "data dir",
                Status::Fail,
                format!("{shown}: {e}"),
                Some(format!(
                    "create it: install -d -m 0700 -o docket -g docket {shown} (the packaged unit's StateDirectory= does this)"
                )),
            )];
        }
    };
    let mut out = vec![private("data dir", dir, meta.mode(), 0o700, format!("owner uid {}", meta.uid()))];
    let store = config.store_path();
    if let Ok(m) = std::fs::metadata(&store) {
        out.push(if m.uid() != meta.uid() {
            check(
                "store file",
                Status::Fail,
                format!("{} is owned by uid {}, the data dir by uid {}", store.display(), m.uid(), meta.uid()),
                Some(format!(
                    "chown -R --reference={shown} {shown} (an admin command run as root may have created it)"
                )),
            )
        } else {
            private("store file", &store, m.mode(), 0o600, String::new())
        });
    }
    out
}

/// Fails when group or others may read `path`; the fix is `chmod <want>`.
fn private(name: &str, path: &Path, mode: u32, want: u32, more: String) -> Check {
    let mode = mode & 0o777;
    if mode & 0o077 != 0 {
        let fix = format!("chmod {want:o} {}", path.display());
        return check(name, Status::Fail, format!("{} has mode {mode:o}, open to others", path.display()), Some(fix));
    }
    check(name, Status::Ok, format!("{} mode {mode:o} {more}", path.display()).trim_end().to_string(), None)
}

fn key(config: &Config) -> Check {
    let candidates = key_candidates(&config.data_dir, config.keys.master_key_file.as_deref());
    match Keyring::load(&candidates) {
        Ok(k) => check(
            "master key",
            Status::Ok,
            format!("{} (public key {})", k.source().path().display(), k.recipient()),
            None,
        ),
        Err(e) => failed("master key", &e.to_string()),
    }
}

/// Room for the store to grow and for the automatic pre-upgrade copy.
fn disk(config: &Config) -> Check {
    let store_bytes = std::fs::metadata(config.store_path()).map(|m| m.len()).unwrap_or(0);
    let backups = dir_bytes(&config.data_dir.join("pre-upgrade"));
    let Ok(free) = upgrade::free_space(&config.data_dir) else {
        return check(
            "disk space",
            Status::Warn,
            format!("cannot read the free space of {}", config.data_dir.display()),
            None,
        );
    };
    let detail = format!(
        "{} free; store {}, pre-upgrade copies {}",
        human_bytes(free),
        human_bytes(store_bytes),
        human_bytes(backups)
    );
    let floor = store_bytes.max(256 * 1024 * 1024);
    if free < floor {
        let fix = format!(
            "free space on the file system of {}: an upgrade needs room for a copy of the store (delete old files in {}/pre-upgrade once upgrades are verified)",
            config.data_dir.display(),
            config.data_dir.display()
        );
        check("disk space", Status::Fail, detail, Some(fix))
    } else if free < store_bytes.saturating_mul(2) {
        check("disk space", Status::Warn, detail, Some("grow the disk before the store doubles".into()))
    } else {
        check("disk space", Status::Ok, detail, None)
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

fn schema(config: &Config) -> Check {
    let clock = crate::clock::Clock::system();
    match upgrade::plan(&config.store_path(), SCHEMA_VERSION, &clock) {
        Ok(plan) => match plan.action {
            Action::Nothing => check("store schema", Status::Ok, format!("schema {SCHEMA_VERSION}, current"), None),
            Action::InUse => check("store schema", Status::Ok, "in use by the running service", None),
            Action::Create => check("store schema", Status::Info, "no store yet: the first start creates it", None),
            Action::Migrate { from } => check(
                "store schema",
                Status::Warn,
                format!("schema {from}: the next start backs it up and migrates it to {SCHEMA_VERSION}"),
                Some("see `docket upgrade-check`".into()),
            ),
            Action::Refuse { found } => check(
                "store schema",
                Status::Fail,
                format!("schema {found}, written by a newer docket; this one reads {SCHEMA_VERSION}"),
                Some("install the newer docket again, or restore a backup taken by this version".into()),
            ),
        },
        Err(e) => failed("store schema", &e),
    }
}

/// Days left on the certificate of `tls.mode = "files"`.
fn certificate(config: &Config) -> Check {
    let (TlsMode::Files, Some(path)) = (config.tls.mode, &config.tls.cert_file) else {
        let how = match config.tls.mode {
            TlsMode::Acme => "renewed by the service from the ACME CA (watch the log for renewal errors)",
            TlsMode::SelfSigned => "self-signed, kept in the store (browsers warn)",
            _ => "TLS is off (a reverse proxy terminates it)",
        };
        return check("certificate", Status::Info, how, None);
    };
    match cert_days_left(path, SystemTime::now()) {
        Ok(days) if days < 0 => check(
            "certificate",
            Status::Fail,
            format!("{} expired {} days ago", path.display(), -days),
            Some("install a renewed certificate at tls.cert_file, then `systemctl reload docket`".into()),
        ),
        Ok(days) if days < CERT_FAIL_DAYS => check(
            "certificate",
            Status::Fail,
            format!("{} expires in {days} days", path.display()),
            Some("install a renewed certificate at tls.cert_file, then `systemctl reload docket`".into()),
        ),
        Ok(days) if days < CERT_WARN_DAYS => {
            check("certificate", Status::Warn, format!("{} expires in {days} days", path.display()), None)
        }
        Ok(days) => check("certificate", Status::Ok, format!("{} valid for {days} more days", path.display()), None),
        Err(e) => check(
            "certificate",
            Status::Fail,
            e,
            Some("point tls.cert_file at a PEM certificate chain, leaf first".into()),
        ),
    }
}

/// Whole days from `now` until the first certificate in `path` expires.
pub fn cert_days_left(path: &Path, now: SystemTime) -> Result<i64, String> {
    let not_after = crate::certfile::leaf(path)?.not_after;
    let now = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    Ok((not_after - now).div_euclid(86_400))
}

fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

/// The running service: /healthz over loopback, then sync health from /metrics.
async fn service(config: &Config, plain: &reqwest::Client) -> Vec<Check> {
    let Some(addr) = config.listen_addrs().first().copied() else {
        return vec![check("service", Status::Fail, "no listen address configured", None)];
    };
    let ip = if addr.ip().is_unspecified() { std::net::Ipv4Addr::LOCALHOST.into() } else { addr.ip() };
    let scheme = if config.tls.mode == TlsMode::Off { "http" } else { "https" };
    let base = format!("{scheme}://{}", std::net::SocketAddr::new(ip, addr.port()));
    // Our own address by IP: the certificate names the public host, not this address.
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_else(|_| plain.clone());
    let health = match client.get(format!("{base}/healthz")).send().await {
        Ok(r) if r.status().is_success() => {
            check("service /healthz", Status::Ok, format!("{base}/healthz answers"), None)
        }
        Ok(r) => check(
            "service /healthz",
            Status::Fail,
            format!("{base}/healthz answered {}", r.status()),
            Some("journalctl -u docket -e".into()),
        ),
        Err(e) => {
            return vec![check(
                "service /healthz",
                Status::Fail,
                format!("{base}/healthz: {}", error_chain(&e)),
                Some("start it (`systemctl start docket.socket docket.service`); if it fails, read `journalctl -u docket -e`".into()),
            )];
        }
    };
    let mut request = client.get(format!("{base}/metrics"));
    if let Some(token) = &config.metrics.token {
        request = request.bearer_auth(token.expose());
    }
    let sync = match request.send().await {
        Ok(r) if r.status().is_success() => sync_health(&r.text().await.unwrap_or_default()),
        Ok(r) => check(
            "clio sync",
            Status::Warn,
            format!("/metrics answered {}", r.status()),
            Some("set metrics.token in the config so doctor can read sync health".into()),
        ),
        Err(e) => check("clio sync", Status::Warn, format!("/metrics: {}", error_chain(&e)), None),
    };
    vec![health, sync]
}

/// Clio token and sync health from the `docket_sync_failing` gauges.
pub fn sync_health(metrics: &str) -> Check {
    let failing: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("docket_sync_failing{"))
        .filter(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0))
        .filter_map(|l| l.split_once('{').and_then(|(_, rest)| rest.split_once('}')).map(|(labels, _)| labels))
        .collect();
    let synced = metrics.lines().filter(|l| l.starts_with("docket_sync_failing{")).count();
    if failing.is_empty() {
        check("clio sync", Status::Ok, format!("{synced} connected firms, none failing"), None)
    } else {
        check(
            "clio sync",
            Status::Fail,
            format!("failing for {}", failing.join("; ")),
            Some("GET /api/v1/clio/connection shows the error; an expired or revoked Clio token needs an admin to connect again".into()),
        )
    }
}

/// Clio, each identity provider's discovery document, and the ACME directory.
fn outside_services(config: &Config) -> Vec<(String, String)> {
    let mut out = vec![("clio".to_string(), CLIO.to_string())];
    for p in &config.auth.oidc {
        let issuer = p.issuer.trim_end_matches('/');
        out.push((format!("identity provider {}", p.id), format!("{issuer}/.well-known/openid-configuration")));
    }
    if config.tls.mode == TlsMode::Acme {
        out.push(("ACME CA".into(), crate::http::acme::directory_url(&config.tls.acme.directory).to_string()));
    }
    out
}

/// DNS, then a GET; the answer's `Date` gives the clock skew.
pub async fn reachable(client: &reqwest::Client, name: &str, url: &str) -> Check {
    let Ok(parsed) = url::Url::parse(url) else {
        return check(name, Status::Fail, format!("{url} is not a URL"), None);
    };
    let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
        return check(name, Status::Fail, format!("{url} names no host"), None);
    };
    let lookup = tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((host, port))).await;
    let resolved = match lookup {
        Ok(Ok(addrs)) => addrs.count(),
        _ => 0,
    };
    if resolved == 0 {
        return check(
            name,
            Status::Fail,
            format!("cannot resolve {host}"),
            Some("check /etc/resolv.conf and the VM's DNS server".into()),
        );
    }
    let response = match client.get(url).send().await {
        Ok(r) => r,
        Err(e) => {
            return check(
                name,
                Status::Fail,
                format!("{url}: {}", error_chain(&e)),
                Some(format!("allow outbound HTTPS to {host} in the firewall or proxy")),
            );
        }
    };
    let date =
        response.headers().get("date").and_then(|d| d.to_str().ok()).and_then(|d| httpdate::parse_http_date(d).ok());
    match date.map(|d| skew(d, SystemTime::now())) {
        Some(s) if s > SKEW_FAIL => check(
            name,
            Status::Fail,
            format!("reachable, but this clock is {}s off {host}'s", s.as_secs()),
            Some("enable time sync: timedatectl set-ntp true".into()),
        ),
        Some(s) if s > SKEW_WARN => check(
            name,
            Status::Warn,
            format!("reachable; clock {}s off {host}'s", s.as_secs()),
            Some("timedatectl set-ntp true".into()),
        ),
        Some(s) => check(
            name,
            Status::Ok,
            format!("{url} answered {}; clock within {}s", response.status(), s.as_secs()),
            None,
        ),
        None => check(
            name,
            Status::Ok,
            format!("{url} answered {} (no Date header to compare clocks)", response.status()),
            None,
        ),
    }
}

/// How far apart two clocks are, either way.
pub fn skew(theirs: SystemTime, ours: SystemTime) -> Duration {
    theirs.duration_since(ours).or_else(|_| ours.duration_since(theirs)).unwrap_or_default()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

/// A backup older than this is stale (the default schedule is daily).
const BACKUP_STALE_HOURS: i64 = 36;

/// The newest backup's age, the last verification, and whether backups share
/// the store's filesystem.
pub fn backups(config: &Config, now: crate::timestamp::Timestamp) -> Vec<Check> {
    use crate::lifecycle::backup;
    let dir = &config.backup_dir();
    let hours = |t: crate::timestamp::Timestamp| (now.micros() - t.micros()) / 3_600_000_000;
    let listed = if dir.exists() { backup::list(dir) } else { Ok(vec![]) };
    let mut out = vec![match listed {
        Err(e) => failed("backups", &e.to_string()),
        Ok(list) => match list.last() {
            None => check(
                "backups",
                Status::Warn,
                format!("none yet in {}", dir.display()),
                Some("take one with `docket backup now`".into()),
            ),
            Some(b) if hours(b.manifest.created) > BACKUP_STALE_HOURS => check(
                "backups",
                Status::Warn,
                format!("the newest ({}) is {} hours old", b.path.display(), hours(b.manifest.created)),
                Some("check the service log for failed backup jobs, then run `docket backup now`".into()),
            ),
            Some(b) => check(
                "backups",
                Status::Ok,
                format!(
                    "{} kept; the newest is {} hours old ({})",
                    list.len(),
                    hours(b.manifest.created),
                    human_bytes(b.manifest.bytes)
                ),
                None,
            ),
        },
    }];
    out.push(match crate::lifecycle::verify::last(dir) {
        None => check("backup verification", Status::Warn, "never run", Some("run `docket backup verify`".into())),
        Some(s) if !s.ok => failed("backup verification", &format!("failed at {}: {}", s.at, s.detail)),
        Some(s) => {
            check("backup verification", Status::Ok, format!("passed {} hours ago: {}", hours(s.at), s.detail), None)
        }
    });
    out.push(signer(config));
    out.push(window(dir, config.backup.pitr_days));
    out.push(shipping(dir, now));
    if backup::same_filesystem(config) == Some(true) {
        out.push(check(
            "backup disk",
            Status::Warn,
            format!("{} is on the store's filesystem: a lost disk loses both", dir.display()),
            Some("point backup.dir at another disk or a mounted share".into()),
        ));
    }
    out
}

/// The backup signer operators pin (`restore --trust`).
fn signer(config: &Config) -> Check {
    match crate::lifecycle::backup::signing::pinned(&config.data_dir) {
        Some(key) => check("backup signer", Status::Ok, format!("{key} (fingerprint {})", key.fingerprint()), None),
        None => check(
            "backup signer",
            Status::Warn,
            "not made yet",
            Some(
                "start docket once: it makes the signing key and prints its fingerprint; keep it with the offline key"
                    .into(),
            ),
        ),
    }
}

/// The point-in-time window against `backup.pitr_days`.
fn window(dir: &Path, pitr_days: u32) -> Check {
    match crate::lifecycle::pitr::window_of(dir) {
        Ok(Some(w)) => {
            let days = (w.to.micros() - w.from.micros()) as f64 / 86_400_000_000.0;
            let text = format!("{w} ({days:.1} days; backup.pitr_days = {pitr_days})");
            check("point-in-time window", Status::Ok, text, None)
        }
        Ok(None) => check(
            "point-in-time window",
            Status::Warn,
            "nothing can be restored yet",
            Some("take a backup (`docket backup now`) and let the service ship the journal".into()),
        ),
        Err(e) => failed("point-in-time window", &e.to_string()),
    }
}

/// Journal shipping's health as the service last recorded it.
fn shipping(dir: &Path, now: crate::timestamp::Timestamp) -> Check {
    match crate::lifecycle::shipping::Status::read(dir) {
        None => check(
            "journal shipping",
            Status::Warn,
            "no shipping status recorded",
            Some("start the service: it ships the journal into backup.dir/segments".into()),
        ),
        Some(s) if !s.on || s.failing => failed("journal shipping", &s.describe(now.micros())),
        Some(s) => check("journal shipping", Status::Ok, s.describe(now.micros()), None),
    }
}

/// Off-site lag past which doctor warns (a round runs every half ship interval).
const OFFSITE_LAG_WARN_SECONDS: f64 = 60.0;
/// Past this, a lost disk loses more than an hour of work.
const OFFSITE_LAG_FAIL_SECONDS: f64 = 3600.0;

/// Off-site copies: off, or the running service's last report (lag, last
/// upload, last error, the remote window).
pub fn offsite(config: &Config, now: crate::timestamp::Timestamp) -> Check {
    use crate::lifecycle::offsite::status;
    let Some(url) = &config.backup.offsite.url else {
        return check(
            "off-site copies",
            Status::Info,
            "off: backups and segments exist only in backup.dir",
            Some(
                "set [backup.offsite] url = \"s3://bucket/prefix\" (docs/operator-guide.md, \"Off-site copies\")"
                    .into(),
            ),
        );
    };
    let Some(s) = status::read(&config.data_dir) else {
        return check(
            "off-site copies",
            Status::Warn,
            format!("{url}: the service has not reported yet"),
            Some(
                "start docket (`systemctl start docket`); its uploader writes offsite-status.json in the data dir"
                    .into(),
            ),
        );
    };
    let lag = s.lag_seconds(now);
    let window = match (s.window.start, s.window.end) {
        (Some(a), Some(b)) => format!("restorable from {a} to {b}"),
        _ => "nothing restorable there yet".into(),
    };
    let detail = format!(
        "{url}: {} pending, lag {lag:.0} s, last upload {}; {window}",
        s.pending_files,
        s.last_upload.map_or("never".into(), |t| t.to_rfc3339())
    );
    let error =
        s.last_error.as_ref().filter(|_| s.failing()).map(|e| format!("; failing since {}: {}", e.at, e.message));
    let fix = "check the endpoint, the bucket and the access key (the error names which); pending files stay in backup.dir and go up once it answers";
    match error {
        Some(e) if lag > OFFSITE_LAG_FAIL_SECONDS => {
            check("off-site copies", Status::Fail, detail + &e, Some(fix.into()))
        }
        Some(e) => check("off-site copies", Status::Warn, detail + &e, Some(fix.into())),
        None if lag > OFFSITE_LAG_WARN_SECONDS => check(
            "off-site copies",
            Status::Warn,
            detail,
            Some("uploads are behind: check the uplink's bandwidth against the size of the backups".into()),
        ),
        None => check("off-site copies", Status::Ok, detail, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_checks_name_age_verification_and_a_shared_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config { data_dir: dir.path().join("data"), ..Default::default() };
        std::fs::create_dir(&config.data_dir).unwrap();
        let now = crate::timestamp::Timestamp::parse("2026-11-30T12:00:00Z").unwrap();
        let unset = backups(&config, now);
        assert!(unset[0].detail.contains("data/backups"), "unset: under the data dir: {:?}", unset[0]);
        assert!(unset.iter().any(|c| c.name == "backup disk" && c.status == Status::Warn), "{unset:?}");
        config.backup.dir = Some(dir.path().join("backups"));
        std::fs::create_dir(dir.path().join("backups")).unwrap();
        let checks = backups(&config, now);
        assert_eq!(
            checks.iter().map(|c| (c.name.as_str(), c.status)).collect::<Vec<_>>(),
            [
                ("backups", Status::Warn),
                ("backup verification", Status::Warn),
                ("backup signer", Status::Warn),
                ("point-in-time window", Status::Warn),
                ("journal shipping", Status::Warn),
                ("backup disk", Status::Warn),
            ]
        );
        let ok =
            crate::lifecycle::verify::Status { at: now, backup: "b".into(), ok: false, detail: "x differs".into() };
        std::fs::write(
            dir.path().join("backups").join(crate::lifecycle::verify::STATUS_FILE),
            serde_json::to_vec(&ok).unwrap(),
        )
        .unwrap();
        let c = &backups(&config, now)[1];
        assert!(c.status == Status::Fail && c.detail.contains("x differs"), "{c:?}");
    }

    #[test]
    fn failing_syncs_are_named() {
        let ok = "docket_sync_failing{org=\"smith-jones\"} 0\n";
        assert_eq!(sync_health(ok).status, Status::Ok);
        let bad = "# HELP x\ndocket_sync_failing{org=\"smith-jones\"} 0\ndocket_sync_failing{org=\"other\"} 1\n";
        let c = sync_health(bad);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("org=\"other\"") && !c.detail.contains("smith"), "{}", c.detail);
    }

    #[test]
    fn skew_is_symmetric() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(skew(t, t + Duration::from_secs(90)), Duration::from_secs(90));
        assert_eq!(skew(t + Duration::from_secs(90), t), Duration::from_secs(90));
    }

    #[test]
    fn certificate_days_left_are_counted_from_not_after() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2030, 1, 31);
        let path = dir.path().join("cert.pem");
        std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
        let jan_1 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000); // 2030-01-01T00:00:00Z
        assert_eq!(cert_days_left(&path, jan_1).unwrap(), 30);
        assert!(cert_days_left(&path, jan_1 + Duration::from_secs(31 * 86_400)).unwrap() < 0);
        std::fs::write(&path, "not a certificate").unwrap();
        assert!(cert_days_left(&path, jan_1).is_err());
    }

    /// A loopback server that answers with a Date far in the past: skew fails;
    /// a closed port fails with a firewall fix.
    /// No traffic leaves the machine.
    #[tokio::test]
    async fn reachability_reports_skew_and_closed_ports() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let reply = "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        let client = http_client(Duration::from_secs(5)).unwrap();
        let c = reachable(&client, "fake", &format!("http://127.0.0.1:{port}/")).await;
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.detail.contains("clock") && c.fix.as_deref().is_some_and(|f| f.contains("set-ntp")), "{c:?}");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = reachable(&client, "closed", &format!("http://127.0.0.1:{closed}/")).await;
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.fix.as_deref().is_some_and(|f| f.contains("firewall")), "{c:?}");
    }

    #[test]
    fn offsite_copies_say_off_unreported_failing_or_caught_up() {
        use crate::lifecycle::offsite::status::{self, LastError, Status as Offsite};
        use crate::timestamp::Timestamp;
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
        let now = Timestamp::parse("2026-03-02T12:00:00Z").unwrap();
        assert_eq!(offsite(&config, now).status, Status::Info, "off");
        config.backup.offsite.url = Some("s3://firm/appliance".into());
        assert_eq!(offsite(&config, now).status, Status::Warn, "no report from the service yet");
        let hours_ago = |h: i64| Timestamp::from_micros(now.micros() - h * 3_600_000_000);
        let failing = Offsite {
            url: "s3://firm/appliance".into(),
            last_upload: Some(hours_ago(3)),
            last_error: Some(LastError { at: hours_ago(0), message: "cannot list\n  fix: check".into() }),
            pending_files: 4,
            oldest_pending: Some(hours_ago(2)),
            ..Offsite::default()
        };
        status::write(dir.path(), &failing).unwrap();
        let c = offsite(&config, now);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.detail.contains("4 pending") && c.detail.contains("failing since"), "{c:?}");
        let caught_up = Offsite { last_upload: Some(now), oldest_pending: None, pending_files: 0, ..failing };
        status::write(dir.path(), &caught_up).unwrap();
        let c = offsite(&config, now);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(status::path(dir.path())).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the status file is private");
    }
}
