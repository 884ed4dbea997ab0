//! Point-in-time restore: the state as of an instant `T` is the newest base
//! whose journal head was committed at or before `T` (a full backup, or an
//! empty store when the segments start at the journal's first entry), plus
//! the shipped transactions after that head committed at or before `T`: every
//! one of them, none after, never half of one (a transaction's entries share
//! one commit time, so cutting at the first entry after `T` cuts between
//! transactions).
//!
//! [`plan`] chooses the base and the segments from names alone and refuses a
//! `T` outside the window or a chain with a gap or an overlap; [`replay`]
//! reads the chosen segments into a [`Restore`] between the base's import and
//! its finish.
use super::backup::{self, BackupError, Trust};
use super::replay::{self, ReplayError, Until};
use super::restore::{self, RestoreError};
use super::segments::{self, SealedSegments, Segment, SegmentSource, ShipError};
use super::shipping;
use crate::clock::Clock;
use crate::store::{Restore, StoreError};
use crate::timestamp::Timestamp;
use std::path::{Path, PathBuf};

pub use super::replay::Replayed;

/// Why a point-in-time restore cannot be done; each names the fix.
#[derive(Debug, thiserror::Error)]
pub enum PitrError {
    #[error(
        "{at} is outside the window this backup directory can restore: {window}\n  fix: pick a time inside the window (RFC 3339, e.g. 2026-01-31T09:30:00Z)"
    )]
    Outside { at: String, window: String },
    #[error(
        "journal entries {from} to {to} are missing from the segments (after {after}, before {before})\n  fix: copy the missing segment files back into the segment directory, or restore to a time before {gap_time}"
    )]
    Gap { from: u64, to: String, after: String, before: String, gap_time: String },
    #[error(
        "the segments {path} and {other} overlap (seq {first} is in both): a file was copied in from another appliance or renamed\n  fix: move the one that does not belong out of the segment directory"
    )]
    Overlap { path: String, other: String, first: u64 },
    #[error(transparent)]
    Segment(#[from] ShipError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(
        "cannot restore into {path}: {reason}\n  fix: name a new directory (or an empty one) that docket can write with --into"
    )]
    Into { path: String, reason: String },
}

/// A base a restore can start from: a full backup's journal head, and the
/// commit time of that head (`None` for a backup of a store that had journaled nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Base {
    pub head: u64,
    pub time: Option<i64>,
}

/// Where a point-in-time restore starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// An empty store: the segments begin at the journal's first entry.
    Empty,
    /// The backup at this index of the bases given to [`plan`].
    Backup(usize),
}

/// What a point-in-time restore reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub start: Start,
    /// The base's journal head: replay begins after it.
    pub after: u64,
    /// The segments to replay from, in order (the first may begin before `after`).
    pub segments: Vec<Segment>,
    pub at: Timestamp,
}

/// The instants a backup directory can restore, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from: Timestamp,
    pub to: Timestamp,
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "from {} to {}", self.from.to_rfc3339(), self.to.to_rfc3339())
    }
}

/// The bases to choose from: the backups, and the empty store when the chain
/// starts at seq 1 (its time is that of the first commit).
fn starts(bases: &[Base], chain: &[Segment]) -> Vec<(Start, u64, Option<i64>)> {
    let mut all: Vec<_> = bases.iter().enumerate().map(|(i, b)| (Start::Backup(i), b.head, b.time)).collect();
    if let Some(first) = chain.first().filter(|s| s.name.first == 1) {
        all.push((Start::Empty, 0, Some(first.name.first_time)));
    }
    all
}

/// The window `bases` and the segment `chain` can restore; `None` if nothing can be.
pub fn window(bases: &[Base], chain: &[Segment]) -> Option<Window> {
    let starts = starts(bases, chain);
    let from = starts.iter().filter_map(|s| s.2).min()?;
    let to = chain.iter().map(|s| s.name.last_time).chain(starts.iter().filter_map(|s| s.2)).max()?;
    Some(Window { from: Timestamp::from_micros(from), to: Timestamp::from_micros(to) })
}

/// The window `backup_dir` can restore (its backups and shipped segments);
/// `None` when nothing can be.
pub fn window_of(backup_dir: &Path) -> Result<Option<Window>, PitrError> {
    let backups = if backup_dir.exists() { backup::list(backup_dir)? } else { vec![] };
    let bases: Vec<Base> = backups
        .iter()
        .map(|b| Base { head: b.manifest.head_seq, time: b.manifest.head_time.map(Timestamp::micros) })
        .collect();
    let chain = segments::list(&backup_dir.join(shipping::SEGMENTS_DIR))?.chain;
    Ok(window(&bases, &chain))
}

/// One line stating the point-in-time window (`docket backup list`).
pub fn describe_window(backup_dir: &Path) -> String {
    match window_of(backup_dir) {
        Ok(Some(w)) => format!("point-in-time window: {w}\n"),
        Ok(None) => "point-in-time window: none yet (no backup, and no segment from the journal's start)\n".into(),
        Err(e) => format!("point-in-time window: unknown ({e})\n"),
    }
}

/// Sets the window gauges (`docket_pitr_window_{start,end}_timestamp_seconds`).
pub fn window_gauges(backup_dir: &Path, metrics: &crate::telemetry::Metrics) {
    if let Ok(Some(w)) = window_of(backup_dir) {
        let seconds = |t: Timestamp| t.micros() as f64 / 1e6;
        metrics.gauge(
            "docket_pitr_window_start_timestamp_seconds",
            "The oldest instant `restore --at` can restore.",
            vec![],
            seconds(w.from),
        );
        metrics.gauge(
            "docket_pitr_window_end_timestamp_seconds",
            "The newest instant `restore --at` can restore (the last shipped commit).",
            vec![],
            seconds(w.to),
        );
    }
}

/// Chooses the newest base committed at or before `at` and the segments
/// that carry every transaction after it up to `at`.
pub fn plan(bases: &[Base], chain: &[Segment], at: Timestamp) -> Result<Plan, PitrError> {
    let t = at.micros();
    let outside = || PitrError::Outside {
        at: at.to_rfc3339(),
        window: window(bases, chain)
            .map_or("nothing (no backup and no segment from the journal's start)".into(), |w| w.to_string()),
    };
    if window(bases, chain).is_none_or(|w| t < w.from.micros() || t > w.to.micros()) {
        return Err(outside());
    }
    let (start, after, _) = starts(bases, chain)
        .into_iter()
        .filter(|s| s.2.is_some_and(|time| time <= t))
        .max_by_key(|s| s.1)
        .ok_or_else(outside)?;
    let mut need = after + 1;
    let mut segments: Vec<Segment> = Vec::new();
    for segment in chain {
        if segment.name.last < need {
            continue;
        }
        if let Some(prev) = segments.last()
            && segment.name.first < need
        {
            return Err(PitrError::Overlap {
                path: segment.path.display().to_string(),
                other: prev.path.display().to_string(),
                first: segment.name.first,
            });
        }
        if segment.name.first > need {
            return Err(gap(need, Some(segment.name.first - 1), segments.last(), Some(segment)));
        }
        if segment.name.first_time > t {
            return Ok(Plan { start, after, segments, at });
        }
        need = segment.name.last + 1;
        segments.push(segment.clone());
        if segment.name.last_time > t {
            return Ok(Plan { start, after, segments, at });
        }
    }
    // The chain ended at or before `at`: fine unless a newer backup shows there were later commits.
    if bases.iter().any(|b| b.head >= need) {
        return Err(gap(need, None, segments.last(), None));
    }
    Ok(Plan { start, after, segments, at })
}

fn gap(from: u64, to: Option<u64>, after: Option<&Segment>, before: Option<&Segment>) -> PitrError {
    let named = |s: Option<&Segment>, none: &str| s.map_or(none.to_string(), |s| s.path.display().to_string());
    PitrError::Gap {
        from,
        to: to.map_or("the next backup".into(), |to| to.to_string()),
        after: named(after, "the base backup"),
        before: named(before, "the newest backup"),
        gap_time: after.map_or("the gap".into(), |s| Timestamp::from_micros(s.name.last_time).to_rfc3339()),
    }
}

/// Replays the plan's segments into `restore`: the whole transactions after
/// the base's head committed at or before the plan's instant, one segment per
/// write transaction (the one replay, [`replay::replay`]).
pub fn replay(restore: &Restore<'_>, seal: &dyn SegmentSource, plan: &Plan) -> Result<Replayed, PitrError> {
    Ok(replay::replay(restore, seal, &plan.segments, plan.after, Until::instant(plan.at))?)
}

/// How `docket restore --at` runs.
pub struct AtOptions<'a> {
    /// `backup.dir`: the full backups, and the segments in its `segments/`.
    pub backup_dir: &'a Path,
    /// Keys that open backups and segments (the master key and its previous
    /// one, offline keys, the backup directory's keyring of retired keys).
    pub identities: &'a [age::x25519::Identity],
    pub at: Timestamp,
    /// The new data dir: missing or empty.
    pub into: &'a Path,
    /// How the restore runs: dry run, progress, the pinned signers, the keys
    /// a configured instance knows.
    pub restore: restore::RestoreOptions<'a>,
}

/// What a point-in-time restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredAt {
    /// The full backup it started from (none: an empty store).
    pub base: Option<PathBuf>,
    /// The journal head of the restored store: the last transaction at or before the instant.
    pub head: u64,
    /// Shipped entries replayed over the base.
    pub entries: u64,
    /// The checks and the startable data dir, as a whole-backup restore reports them.
    pub restored: restore::Restored,
    /// Set when the instant is after the newest shipped commit: that commit's time.
    pub after_last_commit: Option<Timestamp>,
}

impl RestoredAt {
    pub fn describe(&self, at: Timestamp) -> String {
        let base = self.base.as_ref().map_or("an empty store".into(), |b| format!("the backup {}", b.display()));
        let note = self.after_last_commit.map_or(String::new(), |last| {
            format!(
                "{} is after the newest shipped commit ({}) and shipping was caught up: this is the state as of that commit\n",
                at.to_rfc3339(),
                last.to_rfc3339()
            )
        });
        format!(
            "{note}as of {}: {base} plus {} shipped journal entries\n{}",
            at.to_rfc3339(),
            self.entries,
            self.restored.describe()
        )
    }
}

/// Refuses any backup manifest in `backups` that does not verify against
/// `trust`: a planted backup is named before anything is read.
fn verify_bases(backups: &[backup::BackupInfo], trust: &Trust) -> Result<(), PitrError> {
    for b in backups {
        backup::archive::verify_manifest(&b.manifest_path(), &b.manifest, trust)?;
    }
    Ok(())
}

/// Verifies the signature of every segment the plan reads (one that vanished
/// meanwhile, rolled by the shipper, is verified when its successor is read).
fn verify_segments(plan: &Plan, trust: &Trust) -> Result<(), PitrError> {
    for segment in &plan.segments {
        match backup::sealed::verify_file(&segment.path, trust) {
            Err(_) if !segment.path.exists() => {}
            other => drop(other.map_err(ShipError::from)?),
        }
    }
    Ok(())
}

/// Rebuilds the store as of `options.at` from the newest full backup in
/// `backup_dir` before it (or an empty store when the segments begin at the
/// journal's start) and the shipped segments, through restore's one pipeline
/// (staging dir, import, the replay, finish, checks, search index, the master
/// key, rename); nothing is left behind on a failure or a dry run.
pub fn restore_at(options: &AtOptions<'_>) -> Result<RestoredAt, PitrError> {
    let trust = &options.restore.trust;
    let backups = backup::list(options.backup_dir)?;
    verify_bases(&backups, trust)?;
    let bases: Vec<Base> = backups
        .iter()
        .map(|b| Base { head: b.manifest.head_seq, time: b.manifest.head_time.map(Timestamp::micros) })
        .collect();
    let (plan, after_last_commit) = plan_listed(options, &bases)?;
    verify_segments(&plan, trust)?;
    let seal = SealedSegments::reader(options.identities.to_vec(), trust.clone());
    let mut replayed = Replayed::default();
    let run_replay = |r: &Restore<'_>| -> Result<(), PitrError> {
        replayed = replay(r, &seal, &plan)?;
        Ok(())
    };
    let base = match plan.start {
        Start::Backup(i) => Some(backups.get(i).ok_or_else(|| PitrError::Into {
            path: options.backup_dir.display().to_string(),
            reason: "the backup chosen is gone".into(),
        })?),
        Start::Empty => None,
    };
    let restore_options = options.restore.with_ledger(options.backup_dir);
    let restored = restore::restore(base, options.identities, options.into, &restore_options, run_replay)?;
    Ok(RestoredAt {
        base: base.map(|b| b.path.clone()),
        head: restored.head_seq,
        entries: replayed.entries,
        restored,
        after_last_commit,
    })
}

/// Lists the segments and plans. A listing taken while the shipper renames
/// the open segment may see neither its old nor its new name (a directory
/// read is not atomic), so a refusal is retried on a fresh listing first.
fn plan_listed(options: &AtOptions<'_>, bases: &[Base]) -> Result<(Plan, Option<Timestamp>), PitrError> {
    const LISTINGS: usize = 3;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let chain = segments::list(&options.backup_dir.join(shipping::SEGMENTS_DIR))?.chain;
        let status = shipping::Status::read(options.backup_dir);
        let (at, after_last_commit) = caught_up_instant(bases, &chain, options.at, status.as_ref());
        match plan(bases, &chain, at) {
            Ok(plan) => return Ok((plan, after_last_commit)),
            Err(PitrError::Outside { .. } | PitrError::Gap { .. }) if attempt < LISTINGS => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

/// An instant after the newest shipped commit restores that commit's state
/// when the shipper reported itself caught up at or after the instant (or
/// within its lag allowance of it): then nothing later was committed. Returns
/// the instant to plan for and, when moved, the newest commit's time.
fn caught_up_instant(
    bases: &[Base],
    chain: &[Segment],
    at: Timestamp,
    status: Option<&shipping::Status>,
) -> (Timestamp, Option<Timestamp>) {
    let Some(window) = window(bases, chain) else { return (at, None) };
    let Some(status) = status else { return (at, None) };
    if at <= window.to || !status.caught_up_at(at, window.to) {
        return (at, None);
    }
    (window.to, Some(window.to))
}

/// `docket restore --at` as the operator types it.
pub struct Request {
    /// An RFC 3339 instant, or `now`.
    pub at: String,
    /// The backup directory; default: `backup.dir` of the instance's config.
    pub backup_dir: Option<PathBuf>,
    pub into: PathBuf,
    pub dry_run: bool,
    /// Offline identity files (`--key FILE`).
    pub keys: Vec<PathBuf>,
    pub config: Option<crate::config::Config>,
    /// Pinned signers (`--trust`).
    pub trust: Vec<String>,
    pub allow_unsigned: bool,
    pub accept_master_key: bool,
}

/// `--at`: RFC 3339, or `now` (the clock's instant).
fn parse_at(text: &str, clock: &Clock) -> Result<Timestamp, String> {
    if text.trim().eq_ignore_ascii_case("now") {
        return Ok(Timestamp::from_micros(clock.now_micros()));
    }
    Timestamp::parse(text).map_err(|e| {
        format!("--at `{text}` {e}\n  fix: give the instant to restore to, e.g. --at 2026-01-31T09:30:00Z, or --at now")
    })
}

/// Runs a `docket restore --at` request; returns the operator's report.
pub fn command(request: &Request, progress: &dyn backup::Progress) -> Result<String, String> {
    let clock = Clock::system();
    let at = parse_at(&request.at, &clock)?;
    let dir = match (&request.backup_dir, &request.config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(config)) => config.backup_dir(),
        (None, None) => {
            return Err("name the backup directory with --backup-dir DIR or --config FILE (its backup.dir)".into());
        }
    };
    let whole = restore::Request {
        backup: dir.clone(),
        into: Some(request.into.clone()),
        dry_run: request.dry_run,
        replace: false,
        keys: request.keys.clone(),
        config: request.config.clone(),
        trust: request.trust.clone(),
        allow_unsigned: request.allow_unsigned,
        accept_master_key: request.accept_master_key,
    };
    let trust = restore::trust(&whole.trust, whole.allow_unsigned, whole.config.as_ref())?;
    let identities = restore::identities(&whole, &dir, &trust)?;
    let options = AtOptions {
        backup_dir: &dir,
        identities: &identities,
        at,
        into: &request.into,
        restore: restore::options_for(&whole, trust, &identities, clock, progress),
    };
    restore_at(&options).map(|r| r.describe(at)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::lifecycle::shipping::tests::{PlainSeal, commit, store};
    use crate::lifecycle::shipping::{Roll, SegmentName, Shipper, list};
    use crate::store::{Store, SystemContext, Task};
    use std::sync::Arc;
    use std::time::Duration;

    fn seg(first: u64, last: u64, first_time: i64, last_time: i64) -> Segment {
        let name = SegmentName { first, last, first_time, last_time };
        Segment { path: PathBuf::from(name.file_name()), name }
    }

    fn at(micros: i64) -> Timestamp {
        Timestamp::from_micros(micros)
    }

    #[test]
    fn the_newest_base_at_or_before_t_and_the_segments_up_to_t() {
        let chain = [seg(1, 4, 10, 20), seg(5, 9, 20, 30), seg(10, 12, 40, 50)];
        let bases = [Base { head: 4, time: Some(20) }, Base { head: 9, time: Some(30) }];
        let p = plan(&bases, &chain, at(35)).unwrap();
        assert_eq!((p.start, p.after, p.segments.len()), (Start::Backup(1), 9, 0));
        let p = plan(&bases, &chain, at(25)).unwrap();
        assert_eq!((p.start, p.after), (Start::Backup(0), 4));
        assert_eq!(p.segments, [chain[1].clone()], "stops at the first segment ending after T");
        let same_time = [seg(1, 4, 10, 20), seg(5, 6, 20, 20), seg(7, 8, 30, 40)];
        let p = plan(&[], &same_time, at(20)).unwrap();
        assert_eq!(p.segments, same_time[..2], "a segment starting at T is read; one starting after it is not");
        let p = plan(&[], &chain, at(15)).unwrap();
        assert_eq!(
            (p.start, p.after, p.segments.len()),
            (Start::Empty, 0, 1),
            "an empty start: the chain begins at seq 1"
        );
    }

    #[test]
    fn t_outside_the_window_names_the_window() {
        let chain = [seg(5, 9, 20, 30)];
        let bases = [Base { head: 4, time: Some(20) }];
        for t in [19, 31] {
            let err = plan(&bases, &chain, at(t)).unwrap_err();
            assert!(matches!(err, PitrError::Outside { .. }), "{err}");
            assert!(
                err.to_string().contains(&format!("from {} to {}", at(20).to_rfc3339(), at(30).to_rfc3339())),
                "{err}"
            );
        }
        assert!(plan(&[], &chain, at(25)).is_err(), "no backup and a chain not from seq 1");
    }

    #[test]
    fn a_missing_segment_is_named_with_its_neighbours() {
        let chain = [seg(1, 4, 10, 20), seg(8, 9, 30, 30)];
        let err = plan(&[], &chain, at(30)).unwrap_err();
        assert!(matches!(err, PitrError::Gap { from: 5, .. }), "{err}");
        assert!(err.to_string().contains("5 to 7") && err.to_string().contains(&chain[0].name.file_name()), "{err}");
        assert!(plan(&[], &chain, at(15)).is_ok(), "before the gap still restores");
        let bases = [Base { head: 7, time: Some(25) }];
        assert!(plan(&bases, &chain, at(30)).is_ok(), "a backup bridges the gap");
        let tail_missing = plan(&[Base { head: 12, time: Some(60) }], &chain[..1], at(40)).unwrap_err();
        assert!(matches!(tail_missing, PitrError::Gap { from: 5, .. }), "{tail_missing}");
    }

    #[test]
    fn overlapping_segments_are_refused() {
        let chain = [seg(1, 5, 10, 20), seg(3, 9, 15, 30)];
        assert!(matches!(plan(&[], &chain, at(30)).unwrap_err(), PitrError::Overlap { first: 3, .. }));
    }

    /// Commits at controlled instants, ships them (rolling often), then
    /// restores from an empty store to every instant, bursts included.
    #[test]
    fn replay_to_every_instant_matches_the_store_then() {
        let clock = Clock::fixed(time::macros::datetime!(2026-01-05 09:00 UTC));
        let (tmp, store) = store(clock.clone());
        let seal = Arc::new(PlainSeal::default());
        let segs = tmp.path().join("segs");
        let roll = Roll { bytes: 200, age: Duration::from_secs(3600) };
        let mut shipper = Shipper::open(store.clone(), &segs, seal.clone(), roll, None).unwrap();
        let mut states = vec![];
        for tag in 0..12u32 {
            if tag % 4 != 0 {
                clock.advance(Duration::from_micros(1 + u64::from(tag % 2)));
            }
            commit(&store, tag, 1 + (tag % 3) as u8);
            if tag % 3 == 0 {
                shipper.ship().unwrap();
            }
            states.push((clock.now_micros(), store.digest().unwrap()));
        }
        shipper.ship().unwrap();
        assert!(store.journal_start().unwrap().is_none(), "pruned once shipped");
        let chain = list(&segs).unwrap().chain;
        assert!(chain.len() > 2);
        for (t, _) in &states {
            // The state at an instant is that after the last commit at it.
            let expected = &states.iter().rev().find(|(u, _)| u <= t).unwrap().1;
            let into = tempfile::tempdir().unwrap();
            let restored = Store::open(&into.path().join("s.redb"), Clock::system()).unwrap();
            let restore = restored.restore(&SystemContext::new(Task::Test)).unwrap();
            let p = plan(&[], &chain, at(*t)).unwrap();
            replay(&restore, seal.as_ref(), &p).unwrap();
            restore.finish().unwrap();
            assert_eq!(&restored.digest().unwrap(), expected, "at {t}");
        }
    }
}
