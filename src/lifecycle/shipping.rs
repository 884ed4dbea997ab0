//! Journal shipping: committed journal entries go, within `backup.ship_interval`
//! of their commit, into sealed segment files in `<backup.dir>/segments/`, and
//! the live journal is pruned once they are there (never past what another
//! follower, the search indexer, has applied).
//!
//! A segment holds whole transactions with consecutive seqs. Its file name
//! carries its first and last seq and the commit times of both
//! (`seg_<first>_<last>_<first time>_<last time>.dseg`, seqs zero-padded to 20
//! digits, times in microseconds since the epoch), so a restore orders the
//! segments, finds the ones it needs and detects a gap without opening any.
//! Inside (frames of a sealed file): a header frame repeating the name's
//! figures and the entry count, then one frame per entry (`seq:u64 LE` and the
//! journal entry as stored).
//!
//! Rolling: the shipper keeps the open segment's entries in memory and writes
//! the whole segment again under its new name at each interval (atomically,
//! then removes the shorter one it supersedes), until it reaches
//! [`Roll::bytes`] or [`Roll::age`]; then the next interval starts a new one.
//! So steady writes make about one file a minute (a day back is some 1,440
//! small files), no round rewrites more than 1 MiB, and at every instant every
//! shipped entry is in a file with a final name. A crash between
//! writing a longer segment and removing the shorter one leaves both; listing
//! keeps the longest of those that start at the same seq, and the next start
//! removes the others.
use super::segments::dir_error;
pub use super::segments::{
    Listing, SealedSegments, Segment, SegmentName, SegmentSink, SegmentSource, ShipError, encode, list, read,
};
use super::signing::{Signer, Trust};
use crate::secrets::SharedKeyring;
use crate::store::journal::Entry;
use crate::store::{Follower, Store, StoreError, SystemContext, Task};
use crate::telemetry::Metrics;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The directory under `backup.dir` that holds the segments.
pub const SEGMENTS_DIR: &str = "segments";
/// The file in `backup.dir` where the shipper records its health ([`Status`]).
pub const STATUS_FILE: &str = "shipping.json";
/// A running shipper confirms it is caught up at least this often, even idle.
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// The running appliance's segments: sealed to the master key in force at
/// each write (so a rotation takes effect at the next segment) and to every
/// offline recipient, signed by the appliance's signing key.
pub struct ApplianceSeal {
    pub keys: SharedKeyring,
    pub offline: Vec<age::x25519::Recipient>,
    pub signer: Signer,
}

impl SegmentSink for ApplianceSeal {
    fn write(&self, path: &Path, frames: &[Vec<u8>]) -> Result<u64, ShipError> {
        let master = self.keys.current().age_recipient().clone();
        let recipients = std::iter::once(master).chain(self.offline.iter().cloned()).collect();
        let trust = Trust::signer(self.signer.public());
        SealedSegments { recipients, identities: vec![], signer: Some(self.signer.clone()), trust }.write(path, frames)
    }
}

/// When the open segment is closed and a new one begun.
#[derive(Clone, Copy, Debug)]
pub struct Roll {
    /// Encoded entry bytes a segment grows to before the next one begins.
    pub bytes: usize,
    /// How long a segment stays open (the store's clock).
    pub age: Duration,
}

impl Default for Roll {
    fn default() -> Self {
        Roll { bytes: 1 << 20, age: Duration::from_secs(60) }
    }
}

/// What one shipping round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shipped {
    /// Entries newly shipped.
    pub entries: u64,
    /// The commit time of the oldest entry shipped this round (its lag is the RPO).
    pub oldest_time: Option<i64>,
    /// The last shipped seq after the round.
    pub seq: u64,
    /// Segment bytes written this round.
    pub bytes: u64,
}

/// The open segment: entries shipped into a file that will be rewritten longer.
struct Open {
    entries: Vec<Entry>,
    bytes: usize,
    path: Option<PathBuf>,
    /// When it was begun (the store's clock, microseconds).
    opened: i64,
}

impl Open {
    fn new(opened: i64) -> Open {
        Open { entries: Vec::new(), bytes: 0, path: None, opened }
    }
}

/// Ships the journal of one store into one segment directory.
pub struct Shipper {
    store: Arc<Store>,
    dir: PathBuf,
    seal: Arc<dyn SegmentSink>,
    roll: Roll,
    metrics: Option<Arc<Metrics>>,
    ctx: SystemContext,
    shipped: u64,
    /// The commit time of `shipped` (none before the first segment).
    shipped_time: Option<i64>,
    /// The last failure and when (kept after recovery, for doctor).
    last_error: Option<(String, i64)>,
    pruned: u64,
    open: Open,
}

impl Shipper {
    /// Opens the segment directory (creating it), removes the temp files of a
    /// killed process and the segments a rolled one superseded, and takes the shipped seq from the newest segment (or,
    /// with none, from where the journal starts). Registers as a journal
    /// follower, so nothing unshipped is pruned.
    pub fn open(
        store: Arc<Store>,
        dir: &Path,
        seal: Arc<dyn SegmentSink>,
        roll: Roll,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Shipper, ShipError> {
        crate::secrets::create_private_dir(dir).map_err(|e| dir_error(dir, e))?;
        super::sealed::sweep_temp(dir)?;
        let listing = list(dir)?;
        for old in &listing.superseded {
            remove(&old.path)?;
        }
        let head = store.journal_head()?;
        let shipped = match listing.chain.last() {
            Some(newest) => newest.name.last,
            None => store.journal_start()?.map_or(head, |start| start.saturating_sub(1)),
        };
        let shipped_time = listing.chain.last().map(|s| s.name.last_time);
        if shipped > head {
            return Err(ShipError::Ahead { dir: dir.display().to_string(), shipped, head });
        }
        store.register_follower(Follower::Shipping);
        store.mark_applied(Follower::Shipping, shipped);
        let store_now = store.clock().now_micros();
        tracing::info!(dir = %dir.display(), shipped, "journal shipping resumes");
        Ok(Shipper {
            store,
            dir: dir.to_path_buf(),
            seal,
            roll,
            metrics,
            ctx: SystemContext::new(Task::Backup),
            shipped,
            shipped_time,
            last_error: None,
            pruned: 0,
            open: Open::new(store_now),
        })
    }

    /// The last seq that is in a segment with a final name.
    pub fn shipped(&self) -> u64 {
        self.shipped
    }

    /// Ships every whole transaction committed so far, then prunes the
    /// journal up to what every follower has (shipping included) applied.
    pub fn ship(&mut self) -> Result<Shipped, ShipError> {
        let checked_at = self.store.clock().now_micros();
        let head = self.store.journal_head();
        let result = self.ship_pending();
        if let (Some(m), Err(e)) = (&self.metrics, &result) {
            m.count("docket_ship_failures_total", "Journal shipping rounds that failed.", vec![], 1);
            tracing::warn!(error = %e, "journal shipping failed; retrying at the next commit");
        }
        self.record(checked_at, head.ok(), result.as_ref().err(), false);
        let done = result?;
        self.prune()?;
        Ok(done)
    }

    /// Writes [`STATUS_FILE`] beside the segment directory and the health
    /// gauges: on, the shipped seq and time, whether everything committed by
    /// `checked_at` (journal head `head`) is shipped, the last error.
    fn record(&mut self, checked_at: i64, head: Option<u64>, error: Option<&ShipError>, stopped: bool) {
        if let Some(e) = error {
            self.last_error = Some((e.to_string(), checked_at));
        }
        let (last_error, last_error_at) = self.last_error.clone().unzip();
        let status = Status {
            on: true,
            shipped_seq: self.shipped,
            shipped_time: self.shipped_time,
            caught_up: error.is_none() && head.is_some_and(|h| h <= self.shipped),
            checked_at,
            stopped,
            failing: error.is_some(),
            last_error,
            last_error_at,
        };
        if let Some(m) = &self.metrics {
            status.gauges(m);
        }
        if let Some(backup_dir) = self.dir.parent() {
            status.write(backup_dir);
        }
    }

    /// Records a clean stop: everything committed was shipped and nothing
    /// more will be until the next start.
    pub fn record_stop(&mut self) {
        let checked_at = self.store.clock().now_micros();
        let head = self.store.journal_head().ok();
        self.record(checked_at, head, None, true);
    }

    fn ship_pending(&mut self) -> Result<Shipped, ShipError> {
        let mut done = Shipped { seq: self.shipped, ..Shipped::default() };
        loop {
            let now = self.store.clock().now_micros();
            let age = Duration::from_micros(now.saturating_sub(self.open.opened).max(0) as u64);
            if self.open.bytes >= self.roll.bytes || age >= self.roll.age {
                self.open = Open::new(now);
            }
            let room = self.roll.bytes.saturating_sub(self.open.bytes).max(1);
            let batch = self.store.journal_since(&self.ctx, self.shipped, room)?;
            if batch.entries.is_empty() {
                if let Some(bad) = batch.bad {
                    return Err(StoreError::Journal(bad).into());
                }
                return Ok(done);
            }
            done.entries += batch.entries.len() as u64;
            done.oldest_time = done.oldest_time.or(batch.entries.first().map(|e| e.time));
            self.open.bytes += batch.entries.iter().map(|e| e.encode().len() + 8).sum::<usize>();
            self.open.entries.extend(batch.entries);
            done.bytes += self.write_open()?;
            done.seq = self.shipped;
        }
    }

    /// Writes the open segment under its current name and removes the shorter
    /// file it supersedes.
    fn write_open(&mut self) -> Result<u64, ShipError> {
        let Some(name) = SegmentName::of(&self.open.entries) else { return Ok(0) };
        let path = self.dir.join(name.file_name());
        let bytes = self.seal.write(&path, &encode(&name, &self.open.entries))?;
        if let Some(old) = self.open.path.replace(path) {
            remove(&old)?;
        }
        self.shipped = name.last;
        self.shipped_time = Some(name.last_time);
        self.store.mark_applied(Follower::Shipping, name.last);
        if let Some(m) = &self.metrics {
            m.gauge("docket_ship_shipped_seq", "The last journal seq in a shipped segment.", vec![], name.last as f64);
            m.count("docket_ship_segment_bytes_total", "Bytes of segment files written.", vec![], bytes);
            let lag = self.store.clock().now_micros().saturating_sub(name.last_time) as f64 / 1e6;
            m.gauge(
                "docket_ship_lag_seconds",
                "Seconds from the last shipped commit to its segment being final.",
                vec![],
                lag,
            );
        }
        Ok(bytes)
    }

    /// Prunes the live journal before what every follower has applied.
    fn prune(&mut self) -> Result<(), ShipError> {
        let floor = self.store.applied_floor().unwrap_or(self.shipped).min(self.shipped);
        if floor > self.pruned {
            self.store.prune_journal_before(&self.ctx, floor + 1)?;
            self.pruned = floor;
        }
        Ok(())
    }
}

fn remove(path: &Path) -> Result<(), ShipError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ShipError::Write { path: path.display().to_string(), reason: e.to_string() }),
    }
}

/// Runs `shipper` until `shutdown` turns true: it wakes at each commit, waits
/// half of `interval` so the commits of that moment share one write, ships,
/// and ships once more before it returns (a clean stop leaves nothing behind).
pub async fn run(mut shipper: Shipper, interval: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut heads = shipper.store.subscribe();
    loop {
        shipper = match ship_blocking(shipper).await {
            Some(s) => s,
            None => return,
        };
        if *shutdown.borrow() {
            let _ = tokio::task::spawn_blocking(move || shipper.record_stop()).await;
            return;
        }
        tokio::select! {
            changed = heads.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => continue,
            // Idle: a round confirms nothing is left unshipped ([`Status::caught_up`]).
            _ = tokio::time::sleep(HEARTBEAT) => continue,
        }
        tokio::select! {
            _ = tokio::time::sleep(interval / 2) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Starts shipping for the running appliance when `backup.dir` is set
/// (`None` when it is not, or when the shipper cannot open: logged, and the
/// journal is then kept whole). Stop it by sending `true` on `shutdown` and
/// awaiting the handle: it ships once more first.
pub fn start(
    config: &crate::config::Config,
    store: Arc<Store>,
    keys: SharedKeyring,
    metrics: Arc<Metrics>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let settings = super::backup::Settings::from_config(config).ok()?;
    let signer = match super::signing::ensure(&store, &keys.current()) {
        Ok(signer) => signer,
        Err(e) => {
            tracing::error!(error = %e, "journal shipping is OFF: point-in-time recovery has no new segments");
            Status::off(&settings.dir, &e.to_string(), store.clock().now_micros(), &metrics);
            return None;
        }
    };
    let seal = Arc::new(ApplianceSeal { keys, offline: settings.offline, signer });
    let dir = settings.dir.join(SEGMENTS_DIR);
    match Shipper::open(store.clone(), &dir, seal, Roll::default(), Some(metrics.clone())) {
        Ok(shipper) => {
            let interval = Duration::from_secs(config.backup.ship_interval);
            Some(tokio::spawn(run(shipper, interval, shutdown)))
        }
        Err(e) => {
            tracing::error!(error = %e, "journal shipping is OFF: point-in-time recovery has no new segments");
            Status::off(&settings.dir, &e.to_string(), store.clock().now_micros(), &metrics);
            None
        }
    }
}

/// Shipping's state for `/readyz`: `on`, `failing` or `off` (no detail that
/// could carry a path), and the seconds since the last shipped commit.
pub fn readiness(config: &crate::config::Config, now: i64) -> serde_json::Value {
    match Status::read(&config.backup_dir()) {
        None => serde_json::json!({"state": "unknown"}),
        Some(s) => {
            let state = if !s.on {
                "off"
            } else if s.failing {
                "failing"
            } else {
                "on"
            };
            let since = s.shipped_time.map(|t| now.saturating_sub(t) / 1_000_000);
            serde_json::json!({"state": state, "caught_up": s.caught_up, "seconds_since_last_shipped_commit": since})
        }
    }
}

/// What the service's status line adds about shipping (systemd `STATUS=`).
pub fn status_note(config: &crate::config::Config) -> Option<String> {
    let s = Status::read(&config.backup_dir())?;
    if !s.on {
        return Some("; WARNING: journal shipping is OFF (point-in-time recovery stopped; see docket doctor)".into());
    }
    s.failing.then(|| "; WARNING: journal shipping is failing (see docket doctor)".into())
}

/// The shipper's health as it last recorded it in `<backup.dir>/shipping.json`
/// (read by `docket doctor`, the status line and `restore --at`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    /// Whether the service ships at all (false: it refused its segment directory).
    pub on: bool,
    pub shipped_seq: u64,
    /// The commit time of the last shipped seq (microseconds).
    pub shipped_time: Option<i64>,
    /// Everything committed by `checked_at` was in a final segment then.
    pub caught_up: bool,
    /// When the shipper last looked (microseconds; the store's clock).
    pub checked_at: i64,
    /// The service stopped cleanly after that look: nothing was committed since.
    #[serde(default)]
    pub stopped: bool,
    /// The last round failed.
    #[serde(default)]
    pub failing: bool,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
}

impl Status {
    /// The status recorded in `backup_dir`, if any.
    pub fn read(backup_dir: &Path) -> Option<Status> {
        std::fs::read(backup_dir.join(STATUS_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok())
    }

    fn write(&self, backup_dir: &Path) {
        let path = backup_dir.join(STATUS_FILE);
        let written = serde_json::to_vec_pretty(self)
            .map_err(std::io::Error::other)
            .and_then(|text| crate::secrets::write_private_file(&path, &text));
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = %e, "cannot record the shipping status");
        }
    }

    /// Records that shipping is off, and why.
    fn off(backup_dir: &Path, error: &str, now: i64, metrics: &Metrics) {
        let previous = Status::read(backup_dir);
        let status = Status {
            on: false,
            shipped_seq: previous.as_ref().map_or(0, |p| p.shipped_seq),
            shipped_time: previous.as_ref().and_then(|p| p.shipped_time),
            caught_up: false,
            checked_at: now,
            stopped: false,
            failing: true,
            last_error: Some(error.to_string()),
            last_error_at: Some(now),
        };
        status.gauges(metrics);
        if std::fs::create_dir_all(backup_dir).is_ok() {
            status.write(backup_dir);
        }
    }

    /// The `docket_ship_*` health gauges.
    fn gauges(&self, m: &Metrics) {
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        m.gauge(
            "docket_ship_up",
            "1 while journal shipping runs (0: point-in-time recovery is off).",
            vec![],
            flag(self.on),
        );
        m.gauge("docket_ship_failing", "1 while the last journal shipping round failed.", vec![], flag(self.failing));
        m.gauge(
            "docket_ship_shipped_seq",
            "The last journal seq in a shipped segment.",
            vec![],
            self.shipped_seq as f64,
        );
        if let Some(t) = self.shipped_time {
            m.gauge(
                "docket_ship_last_shipped_commit_timestamp_seconds",
                "Commit time of the newest shipped journal entry.",
                vec![],
                t as f64 / 1e6,
            );
            m.gauge(
                "docket_pitr_window_end_timestamp_seconds",
                "The newest instant `restore --at` can restore (the last shipped commit).",
                vec![],
                t as f64 / 1e6,
            );
        }
        if let Some(t) = self.last_error_at {
            m.gauge(
                "docket_ship_last_error_timestamp_seconds",
                "When journal shipping last failed.",
                vec![],
                t as f64 / 1e6,
            );
        }
    }

    /// Whether an instant `at` after the newest shipped commit (`newest`)
    /// holds that commit's state: the shipper had shipped everything when it
    /// last looked, that look is at or after `at` (or within one heartbeat
    /// and a round of it), or the service stopped cleanly then.
    pub fn caught_up_at(&self, at: crate::timestamp::Timestamp, newest: crate::timestamp::Timestamp) -> bool {
        let allowance = 2 * HEARTBEAT.as_micros() as i64;
        self.on
            && self.caught_up
            && self.shipped_time == Some(newest.micros())
            && (self.stopped || at.micros() <= self.checked_at.saturating_add(allowance))
    }

    /// One line for `docket doctor` and the status line.
    pub fn describe(&self, now: i64) -> String {
        if !self.on {
            return format!(
                "OFF since {}: {}",
                crate::timestamp::Timestamp::from_micros(self.checked_at).to_rfc3339(),
                self.last_error.as_deref().unwrap_or("unknown")
            );
        }
        let lag = if self.caught_up { 0.0 } else { now.saturating_sub(self.shipped_time.unwrap_or(now)) as f64 / 1e6 };
        let mut text = format!("on, shipped to seq {}, lag {lag:.0} s", self.shipped_seq);
        if self.failing {
            text += &format!("; FAILING: {}", self.last_error.as_deref().unwrap_or("unknown"));
        }
        text
    }
}

/// One shipping round on the blocking pool (it reads the store and writes files).
async fn ship_blocking(mut shipper: Shipper) -> Option<Shipper> {
    let joined = tokio::task::spawn_blocking(move || {
        let _ = shipper.ship();
        shipper
    })
    .await;
    joined.map_err(|e| tracing::error!(error = %e, "the journal shipper stopped")).ok()
}

/// Removes the segments that end at or before `keep_after` (the journal head
/// of the oldest retained backup): no restore can use them. Returns the files
/// removed. The open segment of a running shipper is never among them.
pub fn remove_before(dir: &Path, keep_after: u64) -> Result<Vec<PathBuf>, ShipError> {
    let listing = list(dir)?;
    let mut removed = Vec::new();
    for segment in listing.chain.iter().chain(&listing.superseded) {
        if segment.name.last <= keep_after {
            remove(&segment.path)?;
            removed.push(segment.path.clone());
        }
    }
    Ok(removed)
}

/// The segment retention job: keeps the point-in-time window of `backup_dir`
/// (from `window_start`): removes the segments that end at or before the
/// journal head of the window's base, the newest backup committed at or
/// before the start. With no backup that old nothing goes: the window then
/// starts before every backup and the segments are the only way back.
pub fn apply_retention(
    backup_dir: &Path,
    window_start: crate::timestamp::Timestamp,
) -> Result<Vec<PathBuf>, ShipError> {
    use super::backup::retention;
    let backups = super::backup::list(backup_dir).map_err(|e| dir_error(backup_dir, e))?;
    let base = backups.iter().rev().find(|b| retention::state_time(b) <= window_start);
    match base {
        Some(base) => remove_before(&backup_dir.join(SEGMENTS_DIR), base.manifest.head_seq),
        None => Ok(vec![]),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::store::{OrgId, OrgTask, OrgTaskContext, SECRETS};

    /// Frames as plain length-prefixed bytes, renamed into place: the seam's
    /// contract without encryption, for unit tests.
    #[derive(Default)]
    pub(crate) struct PlainSeal {
        pub fail: std::sync::atomic::AtomicBool,
    }

    impl SegmentSink for PlainSeal {
        fn write(&self, path: &Path, frames: &[Vec<u8>]) -> Result<u64, ShipError> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(ShipError::Write { path: path.display().to_string(), reason: "disk full".into() });
            }
            let mut out = Vec::new();
            for f in frames {
                out.extend_from_slice(&(f.len() as u64).to_le_bytes());
                out.extend_from_slice(f);
            }
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &out).unwrap();
            std::fs::rename(&tmp, path).unwrap();
            Ok(out.len() as u64)
        }
    }

    impl SegmentSource for PlainSeal {
        fn read(&self, path: &Path) -> Result<Vec<Vec<u8>>, ShipError> {
            let bytes = std::fs::read(path)
                .map_err(|e| ShipError::Read { path: path.display().to_string(), reason: e.to_string() })?;
            let (mut frames, mut at) = (Vec::new(), 0);
            while at < bytes.len() {
                let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
                frames.push(bytes[at + 8..at + 8 + len].to_vec());
                at += 8 + len;
            }
            Ok(frames)
        }
    }

    pub(crate) fn store(clock: Clock) -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), clock).unwrap();
        (dir, Arc::new(store))
    }

    /// One transaction of `n` puts.
    pub(crate) fn commit(store: &Store, tag: u32, n: u8) {
        let scope = OrgTaskContext::new(OrgTask::Test).org_scope(OrgId(1));
        store
            .write(|w| (0..n).try_for_each(|k| w.put(&scope, &SECRETS, &[&tag.to_be_bytes()[..], &[k]].concat(), b"v")))
            .unwrap();
    }

    fn names(dir: &Path) -> Vec<(u64, u64)> {
        list(dir).unwrap().chain.iter().map(|s| (s.name.first, s.name.last)).collect()
    }

    #[test]
    fn a_name_round_trips_and_other_names_are_not_segments() {
        let name =
            SegmentName { first: 3, last: 9, first_time: 1_700_000_000_000_000, last_time: 1_700_000_000_000_001 };
        assert_eq!(SegmentName::parse(&name.file_name()), Some(name));
        let before_epoch = SegmentName { first_time: -5, last_time: -1, ..name };
        assert_eq!(SegmentName::parse(&before_epoch.file_name()), Some(before_epoch));
        for other in
            ["seg_1_2_3_4.dseg.tmp", ".seg_1_2_3_4.dseg", "seg_5_2_3_4.dseg", "seg_0_2_3_4.dseg", "seg_1_2_3.dseg"]
        {
            assert_eq!(SegmentName::parse(other), None, "{other}");
        }
    }

    #[test]
    fn commits_of_one_round_share_a_segment_and_the_roll_grows_in_place() {
        let (tmp, store) = store(Clock::system());
        let seal = Arc::new(PlainSeal::default());
        let segs = tmp.path().join("segments");
        let mut shipper = Shipper::open(store.clone(), &segs, seal.clone(), Roll::default(), None).unwrap();
        for tag in 0..3 {
            commit(&store, tag, 2);
        }
        let done = shipper.ship().unwrap();
        assert_eq!((done.entries, done.seq), (6, 6));
        commit(&store, 3, 1);
        shipper.ship().unwrap();
        assert_eq!(names(&segs), [(1, 7)], "the open segment is rewritten longer, the shorter one removed");
        let entries = read(seal.as_ref(), &list(&segs).unwrap().chain[0]).unwrap();
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());
    }

    #[test]
    fn segments_roll_by_size_whole_transactions_only() {
        let (tmp, store) = store(Clock::system());
        let segs = tmp.path().join("segments");
        let roll = Roll { bytes: 150, age: Duration::from_secs(3600) };
        let mut shipper = Shipper::open(store.clone(), &segs, Arc::new(PlainSeal::default()), roll, None).unwrap();
        for tag in 0..4 {
            commit(&store, tag, 3);
            shipper.ship().unwrap();
        }
        let got = names(&segs);
        assert!(got.len() > 1, "rolled: {got:?}");
        for pair in got.windows(2) {
            assert_eq!(pair[1].0, pair[0].1 + 1, "consecutive: {got:?}");
        }
        assert!(got.iter().all(|(first, last)| (first - 1) % 3 == 0 && last % 3 == 0), "whole transactions: {got:?}");
    }

    #[test]
    fn segments_roll_by_age_on_the_store_clock() {
        let clock = Clock::fixed(time::macros::datetime!(2026-01-05 09:00 UTC));
        let (tmp, store) = store(clock.clone());
        let segs = tmp.path().join("segments");
        let mut shipper =
            Shipper::open(store.clone(), &segs, Arc::new(PlainSeal::default()), Roll::default(), None).unwrap();
        for tag in 0..3 {
            commit(&store, tag, 1);
            shipper.ship().unwrap();
            clock.advance(Duration::from_secs(30));
        }
        assert_eq!(names(&segs), [(1, 2), (3, 3)], "the second minute begins a new segment");
    }

    #[test]
    fn the_shipped_seq_survives_a_restart_and_superseded_segments_go() {
        let (tmp, store) = store(Clock::system());
        let seal = Arc::new(PlainSeal::default());
        let segs = tmp.path().join("segments");
        let mut shipper = Shipper::open(store.clone(), &segs, seal.clone(), Roll::default(), None).unwrap();
        commit(&store, 0, 2);
        shipper.ship().unwrap();
        let short = list(&segs).unwrap().chain[0].path.clone();
        let kept = std::fs::read(&short).unwrap();
        commit(&store, 1, 2);
        shipper.ship().unwrap();
        drop(shipper);
        std::fs::write(&short, kept).unwrap(); // as if the process died before removing it
        assert_eq!(list(&segs).unwrap().superseded.len(), 1);
        commit(&store, 2, 1);
        let mut again = Shipper::open(store.clone(), &segs, seal, Roll::default(), None).unwrap();
        assert_eq!(again.shipped(), 4);
        assert!(!short.exists());
        again.ship().unwrap();
        assert_eq!(names(&segs), [(1, 4), (5, 5)], "no seq shipped twice, none missing");
    }

    #[test]
    fn pruning_follows_shipping_and_never_overtakes_another_follower() {
        let (tmp, store) = store(Clock::system());
        let seal = Arc::new(PlainSeal::default());
        store.register_follower(Follower::Search);
        store.mark_applied(Follower::Search, 2);
        let mut shipper =
            Shipper::open(store.clone(), &tmp.path().join("segs"), seal.clone(), Roll::default(), None).unwrap();
        for tag in 0..3 {
            commit(&store, tag, 2);
        }
        shipper.ship().unwrap();
        assert_eq!(store.journal_start().unwrap(), Some(3), "pruned up to what search applied");
        store.mark_applied(Follower::Search, 6);
        shipper.ship().unwrap();
        assert_eq!(store.journal_start().unwrap(), None, "all shipped and applied: pruned");
        commit(&store, 9, 1);
        seal.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        store.mark_applied(Follower::Search, 7);
        assert!(matches!(shipper.ship(), Err(ShipError::Write { .. })));
        assert_eq!(store.journal_start().unwrap(), Some(7), "an unshipped entry stays");
        seal.fail.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(shipper.ship().unwrap().seq, 7);
    }

    #[test]
    fn a_shipper_refuses_segments_from_a_later_timeline() {
        let (tmp, store) = store(Clock::system());
        let segs = tmp.path().join("segs");
        let mut shipper =
            Shipper::open(store.clone(), &segs, Arc::new(PlainSeal::default()), Roll::default(), None).unwrap();
        commit(&store, 0, 2);
        shipper.ship().unwrap();
        let (_tmp2, earlier) = self::store(Clock::system());
        let err = Shipper::open(earlier, &segs, Arc::new(PlainSeal::default()), Roll::default(), None).err().unwrap();
        assert!(err.to_string().contains("move"), "{err}");
    }

    #[test]
    fn a_renamed_segment_is_refused() {
        let (tmp, store) = store(Clock::system());
        let seal = Arc::new(PlainSeal::default());
        let segs = tmp.path().join("segs");
        let mut shipper = Shipper::open(store.clone(), &segs, seal.clone(), Roll::default(), None).unwrap();
        commit(&store, 0, 2);
        shipper.ship().unwrap();
        let seg = list(&segs).unwrap().chain.remove(0);
        let name = SegmentName { last: 1, ..seg.name };
        let moved = segs.join(name.file_name());
        std::fs::rename(&seg.path, &moved).unwrap();
        let err = read(seal.as_ref(), &Segment { path: moved, name }).unwrap_err();
        assert!(err.to_string().contains("does not match its name"), "{err}");
    }

    #[tokio::test]
    async fn the_running_shipper_wakes_on_commits_and_ships_what_is_left_at_stop() {
        let (tmp, store) = store(Clock::system());
        let segs = tmp.path().join("segs");
        let start = |interval: Duration| {
            let shipper = Shipper::open(store.clone(), &segs, Arc::new(PlainSeal::default()), Roll::default(), None);
            let (stop, stopped) = tokio::sync::watch::channel(false);
            (stop, tokio::spawn(run(shipper.unwrap(), interval, stopped)))
        };
        let (stop, task) = start(Duration::from_millis(20));
        commit(&store, 0, 2);
        let mut waited = 0;
        while list(&segs).unwrap().chain.is_empty() && waited < 1000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        assert_eq!(names(&segs), [(1, 2)], "a commit wakes the shipper");
        stop.send(true).unwrap();
        task.await.unwrap();
        // An hour's interval: only the stop can ship this commit in time.
        let (stop, task) = start(Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_millis(50)).await; // past its first round
        commit(&store, 1, 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(names(&segs), [(1, 2), (3, 3)], "stopping ships what was committed");
    }

    #[test]
    fn retention_removes_segments_a_backup_covers() {
        let (tmp, store) = store(Clock::system());
        let segs = tmp.path().join("segs");
        let roll = Roll { bytes: 1, age: Duration::from_secs(3600) };
        let mut shipper = Shipper::open(store.clone(), &segs, Arc::new(PlainSeal::default()), roll, None).unwrap();
        for tag in 0..3 {
            commit(&store, tag, 2);
            shipper.ship().unwrap();
        }
        assert_eq!(names(&segs), [(1, 2), (3, 4), (5, 6)]);
        assert_eq!(remove_before(&segs, 3).unwrap().len(), 1, "seq 3 and 4 are needed after a backup at 3");
        assert_eq!(names(&segs), [(3, 4), (5, 6)]);
    }
}
