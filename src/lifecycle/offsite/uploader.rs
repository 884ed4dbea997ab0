//! The uploader: a task that keeps the bucket a copy of `backup.dir`'s sealed
//! files. Each round it scans `backup.dir` (and `segments/`) for finished
//! files, uploads those the bucket lacks (segments first, so a large backup
//! never holds the point-in-time window back by more than its own upload),
//! removes the remote segments a longer one supersedes, and applies
//! retention after a new backup.
//!
//! Nothing is kept apart from the two listings: what is pending is what
//! `backup.dir` holds and the bucket does not, so a long outage or a restart
//! loses nothing and catches up at the next round that reaches the bucket.
//! The bucket is listed at start and again after any failure; a final name
//! is put with `If-None-Match: *`, so it is never written twice, even by two
//! dockets sharing a prefix by mistake.
use super::status::{LastError, Status};
use super::target::{Put, RemoteObject, Target};
use super::{Kind, OffsiteError, Settings, kind, retention};
use crate::clock::Clock;
use crate::lifecycle::backup::Manifest;
use crate::lifecycle::backup::retention::Keep;
use crate::lifecycle::shipping::SEGMENTS_DIR;
use crate::telemetry::Metrics;
use crate::timestamp::Timestamp;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// A finished file of `backup.dir`.
#[derive(Clone, Debug)]
pub struct LocalFile {
    /// Relative to `backup.dir`, `/`-separated.
    pub name: String,
    pub path: PathBuf,
    pub kind: Kind,
    pub size: u64,
    pub modified: SystemTime,
}

/// What one round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub uploaded: u64,
    pub bytes: u64,
    /// Files still pending after the round (a backup waits for the next round).
    pub pending: u64,
}

/// Keeps one bucket prefix a copy of one backup directory.
pub struct Uploader {
    target: Target,
    dir: PathBuf,
    keep: Keep,
    /// `backup.pitr_days`: the base backup of the point-in-time window stays too.
    pitr_days: Option<u32>,
    clock: Clock,
    metrics: Option<Arc<Metrics>>,
    /// Where the status file goes (the data dir), if anywhere.
    status_dir: Option<PathBuf>,
    /// What the bucket holds, as far as this uploader knows.
    remote: BTreeMap<String, RemoteObject>,
    /// Whether `remote` comes from a listing since the last failure.
    listed: bool,
    /// Mutable files (the keyring) as last uploaded: size and modification time.
    sent: HashMap<String, (u64, SystemTime)>,
    /// Remote backups' manifests, by object name.
    manifests: HashMap<String, Manifest>,
    retention_due: bool,
    status: Status,
    /// The status last written to the status file, and when.
    written: Option<(Status, Timestamp)>,
}

impl Uploader {
    pub fn new(target: Target, dir: &Path, keep: Keep, clock: Clock) -> Uploader {
        let status = Status { url: target.url.clone(), ..Status::default() };
        Uploader {
            target,
            dir: dir.to_path_buf(),
            keep,
            pitr_days: None,
            clock,
            metrics: None,
            status_dir: None,
            remote: BTreeMap::new(),
            listed: false,
            sent: HashMap::new(),
            manifests: HashMap::new(),
            retention_due: true,
            status,
            written: None,
        }
    }

    /// Keeps the base backup of a `pitr_days` point-in-time window in the
    /// bucket too (as local retention does).
    pub fn window(mut self, pitr_days: u32) -> Uploader {
        self.pitr_days = Some(pitr_days);
        self
    }

    /// Reports to `/metrics` and to `<data_dir>/offsite-status.json`.
    pub fn reporting(mut self, metrics: Arc<Metrics>, data_dir: &Path) -> Uploader {
        self.metrics = Some(metrics);
        self.status_dir = Some(data_dir.to_path_buf());
        self
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.clock.now_micros())
    }

    /// One round: uploads what is pending (every segment, then at most one
    /// other file), prunes superseded segments and, after a new backup, applies
    /// retention. A failure leaves everything pending for the next round.
    pub async fn round(&mut self) -> Result<Round, OffsiteError> {
        let outcome = self.round_inner().await;
        let now = self.now();
        match &outcome {
            Ok(_) => {}
            Err(e) => {
                self.listed = false;
                if let Ok(local) = scan_blocking(&self.dir).await {
                    self.count_pending(&local);
                }
                self.status.last_error = Some(LastError { at: now, message: e.to_string() });
                if let Some(m) = &self.metrics {
                    m.count("docket_offsite_rounds_failed_total", "Off-site upload rounds that failed.", vec![], 1);
                }
            }
        }
        self.report(now);
        outcome
    }

    async fn round_inner(&mut self) -> Result<Round, OffsiteError> {
        if !self.listed {
            let listed = self.target.list().await?;
            self.remote = listed.into_iter().map(|o| (o.name.clone(), o)).collect();
            self.listed = true;
        }
        let local = scan_blocking(&self.dir).await?;
        let names: Vec<String> = local.iter().map(|f| f.name.clone()).collect();
        if let Some((remote, local)) = retention::other_timeline(&self.remote, &names) {
            return Err(OffsiteError::OtherTimeline { url: self.target.url.clone(), remote, local });
        }
        let pending = self.pending(&local);
        let mut round = Round::default();
        let (segments, others): (Vec<&LocalFile>, Vec<&LocalFile>) =
            pending.into_iter().partition(|f| f.kind == Kind::Segment);
        for file in segments.iter().chain(others.first()) {
            if self.upload(file).await? == Some(Put::Written) {
                round.uploaded += 1;
                round.bytes += file.size;
            }
            if file.kind == Kind::Manifest {
                self.retention_due = true;
            }
        }
        self.delete_superseded().await?;
        if self.retention_due && others.len() <= 1 {
            self.apply_retention(&local).await?;
        }
        let after = scan_blocking(&self.dir).await?;
        round.pending = self.count_pending(&after);
        Ok(round)
    }

    /// Updates the status's pending count and oldest pending file; returns the count.
    fn count_pending(&mut self, local: &[LocalFile]) -> u64 {
        let still = self.pending(local);
        self.status.pending_files = still.len() as u64;
        self.status.oldest_pending = still.iter().map(|f| f.modified).min().map(to_timestamp);
        self.status.remote_objects = self.remote.len() as u64;
        self.status.pending_files
    }

    /// The files of `local` the bucket lacks (or, for mutable ones, holds an
    /// older copy of), in upload order. Before the first listing (a restart
    /// during an outage) every file counts as pending.
    pub fn pending<'a>(&self, local: &'a [LocalFile]) -> Vec<&'a LocalFile> {
        let remote = &self.remote;
        let mut out: Vec<&LocalFile> = local
            .iter()
            .filter(|f| match remote.get(&f.name) {
                None => true,
                Some(_) if f.kind.immutable() => false,
                Some(r) => match self.sent.get(&f.name) {
                    Some(sent) => *sent != (f.size, f.modified),
                    // Object stores keep whole seconds; a rewrite shows as a newer local file.
                    None => r.size != f.size || r.modified + MTIME_SLACK_MICROS < to_timestamp(f.modified).micros(),
                },
            })
            .collect();
        out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        out
    }

    /// Uploads one file; `None` when it vanished meanwhile (a superseded segment).
    async fn upload(&mut self, file: &LocalFile) -> Result<Option<Put>, OffsiteError> {
        let replace = !file.kind.immutable();
        let started = std::time::Instant::now();
        let put = match self.target.put_file(&file.name, &file.path, replace).await {
            Err(OffsiteError::Local { .. }) if !file.path.exists() => return Ok(None),
            other => other?,
        };
        if file.kind == Kind::Manifest
            && let Ok(text) = std::fs::read(&file.path)
            && let Ok(manifest) = serde_json::from_slice::<Manifest>(&text)
        {
            self.manifests.insert(file.name.clone(), manifest);
        }
        if replace {
            self.sent.insert(file.name.clone(), (file.size, file.modified));
        }
        let now = self.now();
        let object = RemoteObject { name: file.name.clone(), size: file.size, modified: now.micros() };
        self.remote.insert(file.name.clone(), object);
        self.status.last_upload = Some(now);
        if let (Some(m), (Put::Written, bytes)) = (&self.metrics, put) {
            m.count("docket_offsite_uploads_total", "Files uploaded to off-site storage.", vec![], 1);
            m.count("docket_offsite_uploaded_bytes_total", "Bytes uploaded to off-site storage.", vec![], bytes);
            m.observe(
                "docket_offsite_upload_seconds",
                "Time to upload one file to off-site storage.",
                vec![],
                started.elapsed().as_secs_f64(),
            );
        }
        tracing::debug!(object = %file.name, bytes = file.size, already = matches!(put.0, Put::AlreadyThere), "uploaded off-site");
        Ok(Some(put.0))
    }

    async fn delete_superseded(&mut self) -> Result<(), OffsiteError> {
        for name in retention::superseded(&self.remote) {
            self.target.delete(&name).await?;
            self.remote.remove(&name);
        }
        Ok(())
    }

    /// Reads the manifests of remote backups not yet known, then deletes what
    /// [`retention::plan`] drops.
    async fn apply_retention(&mut self, local: &[LocalFile]) -> Result<(), OffsiteError> {
        let remote = self.remote.clone();
        self.manifests.retain(|name, _| remote.contains_key(name));
        for name in remote.keys().filter(|n| kind(n) == Some(Kind::Manifest)) {
            if self.manifests.contains_key(name) {
                continue;
            }
            let bytes = self.target.get(name).await?;
            match serde_json::from_slice::<Manifest>(&bytes) {
                Ok(m) => {
                    self.manifests.insert(name.clone(), m);
                }
                Err(e) => tracing::warn!(object = %name, error = %e, "an off-site manifest does not parse; left alone"),
            }
        }
        let local: BTreeSet<String> = local.iter().map(|f| f.name.clone()).collect();
        let now = self.now();
        let window_start = self.pitr_days.map(|days| now.plus_micros(-(i64::from(days) * 86_400_000_000)));
        for name in retention::plan(&remote, &self.manifests, &local, self.keep, window_start) {
            self.target.delete(&name).await?;
            self.manifests.remove(&name);
            self.remote.remove(&name);
            tracing::info!(object = %name, url = %self.target.url, "removed off-site by retention");
        }
        self.retention_due = false;
        Ok(())
    }

    fn report(&mut self, now: Timestamp) {
        self.status.window = retention::window(&self.remote, &self.manifests);
        self.status.updated = Some(now);
        if let Some(m) = &self.metrics {
            self.status.publish(m, now);
        }
        let Some(dir) = &self.status_dir else { return };
        // Steady uploads change only the times: the file is rewritten for
        // those at most every STATUS_EVERY, at once for anything else.
        let gist = |s: &Status| Status { updated: None, last_upload: None, ..s.clone() };
        let due = match &self.written {
            Some((last, at)) => gist(last) != gist(&self.status) || now.micros() - at.micros() >= STATUS_EVERY_MICROS,
            None => true,
        };
        if !due {
            return;
        }
        match super::status::write(dir, &self.status) {
            Ok(()) => self.written = Some((self.status.clone(), now)),
            Err(e) => tracing::warn!(error = %e, "cannot write the off-site status file"),
        }
    }
}

/// How often the status file is rewritten when only its times change.
const STATUS_EVERY_MICROS: i64 = 30_000_000;

/// How much newer than its object a mutable file must be to count as rewritten.
const MTIME_SLACK_MICROS: i64 = 2_000_000;

fn to_timestamp(t: SystemTime) -> Timestamp {
    let micros = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
    Timestamp::from_micros(micros)
}

/// [`scan`] on the blocking pool.
async fn scan_blocking(dir: &Path) -> Result<Vec<LocalFile>, OffsiteError> {
    let dir = dir.to_path_buf();
    let shown = dir.display().to_string();
    tokio::task::spawn_blocking(move || scan(&dir))
        .await
        .map_err(|e| OffsiteError::Local { path: shown, reason: e.to_string() })?
}

/// The finished files of `dir` and `dir/segments` that are uploaded; a
/// missing directory has none.
pub fn scan(dir: &Path) -> Result<Vec<LocalFile>, OffsiteError> {
    let mut out = vec![];
    scan_one(dir, "", &mut out)?;
    scan_one(&dir.join(SEGMENTS_DIR), &format!("{SEGMENTS_DIR}/"), &mut out)?;
    Ok(out)
}

fn scan_one(dir: &Path, prefix: &str, out: &mut Vec<LocalFile>) -> Result<(), OffsiteError> {
    let error = |e: std::io::Error| OffsiteError::Local { path: dir.display().to_string(), reason: e.to_string() };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(error(e)),
    };
    for entry in entries {
        let entry = entry.map_err(error)?;
        let Some(file) = entry.file_name().to_str().map(|n| format!("{prefix}{n}")) else { continue };
        let Some(kind) = kind(&file) else { continue };
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(error(e)),
        };
        if !meta.is_file() {
            continue;
        }
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        out.push(LocalFile { name: file, path: entry.path(), kind, size: meta.len(), modified });
    }
    Ok(())
}

/// Retry delays after failed rounds: 1 s doubling up to 30 s.
#[derive(Clone, Copy, Debug)]
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);

    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        wait
    }
}

/// Runs `uploader` until `stop` turns true: a round every half
/// `interval` (at once again while files wait), with backoff after failures,
/// and a last round (bounded) before it returns.
pub async fn run(mut uploader: Uploader, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff(Backoff::FIRST);
    let mut failing = false;
    loop {
        let wait = match uploader.round().await {
            Ok(round) => {
                if failing {
                    tracing::info!(url = %uploader.target.url, "off-site uploads work again; catching up");
                }
                failing = false;
                backoff = Backoff(Backoff::FIRST);
                if round.pending > 0 { Duration::ZERO } else { (interval / 2).max(Duration::from_millis(100)) }
            }
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e, "off-site upload FAILED; pending files stay in backup.dir and are retried");
                }
                failing = true;
                backoff.next()
            }
        };
        if *stop.borrow() {
            let _ = tokio::time::timeout(Duration::from_secs(15), uploader.round()).await;
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
}

/// The running uploader; [`Handle::stop`] runs a last round and waits for it.
pub struct Handle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// Stops after a last round (call it once shipping has stopped, so the
    /// last segment goes up too).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(20), self.task).await;
    }
}

/// Starts the uploader when `backup.offsite.url` is set (`None` otherwise, or
/// when its settings do not build: logged).
pub fn start(config: &crate::config::Config, clock: Clock, metrics: Arc<Metrics>) -> Option<Handle> {
    let settings = match Settings::from_config(config) {
        Ok(Some(s)) => s,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(error = %e, "off-site copies are off");
            return None;
        }
    };
    let target = match Target::new(&settings) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "off-site copies are off");
            return None;
        }
    };
    let keep = Keep { daily: config.backup.keep_daily, weekly: config.backup.keep_weekly };
    let uploader = Uploader::new(target, &config.backup_dir(), keep, clock)
        .window(config.backup.pitr_days)
        .reporting(metrics, &config.data_dir);
    tracing::info!(url = %settings.url, dir = %config.backup_dir().display(), "off-site copies on");
    let (stop, rx) = watch::channel(false);
    let interval = Duration::from_secs(config.backup.ship_interval);
    Some(Handle { stop, task: tokio::spawn(run(uploader, interval, rx)) })
}
