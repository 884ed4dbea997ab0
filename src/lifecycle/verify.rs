//! Verification that restores (`docket backup verify` and its scheduled job,
//! [`job_verify`]): decrypt the newest backup, restore it into a
//! scratch data dir, replay the live journal from the backup's seq to the live
//! head, and compare row counts and content hashes per org and table with the
//! live store at that head. The outcome is written to `last-verify.json` in
//! the backup directory (read by `docket doctor`), logged, and counted in
//! `/metrics` ([`record`]).
use super::backup::{self, BackupError, BackupInfo, Progress, Settings, Trust, appliance_keys, list, opening_keys};
use crate::clock::Clock;
use crate::config::Config;
use crate::lifecycle::replay::{self, Until};
use crate::lifecycle::restore::{self, RestoreError, RestoreOptions};
use crate::lifecycle::segments::{self, SealedSegments};
use crate::lifecycle::shipping;
use crate::secrets::Keyring;
use crate::store::{PartDigest, Store, SystemContext, Task};
use crate::telemetry::Metrics;
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Scratch copies are `<data_dir>/.verify-PID` (a killed run's is swept).
const SCRATCH: &str = ".verify-";

/// The file in the backup directory recording the last verification.
pub const STATUS_FILE: &str = "last-verify.json";

/// A verification that passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub backup: PathBuf,
    pub backup_seq: u64,
    /// The live head the restored copy was compared at.
    pub compared_seq: u64,
    pub parts: usize,
    pub rows: u64,
    /// False when the live journal no longer holds the entries after the
    /// backup (pruned once shipped): then the copy is compared with the
    /// digests the backup recorded at its own seq.
    pub against_live: bool,
}

/// The last verification, as `last-verify.json` records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub at: Timestamp,
    pub backup: String,
    pub ok: bool,
    pub detail: String,
}

/// Verifies the newest backup in `dir` against `live`, restoring into a
/// scratch dir under `scratch_parent` (removed afterwards); the backup, the
/// keyring and the segments must verify against `trust` (the appliance's signer).
pub fn verify(
    live: &Store,
    dir: &Path,
    identities: &[age::x25519::Identity],
    trust: &Trust,
    scratch_parent: &Path,
    clock: &Clock,
    progress: &dyn Progress,
) -> Result<Verified, RestoreError> {
    let newest = list(dir)?.pop().ok_or_else(|| BackupError::NoBackup { dir: dir.display().to_string() })?;
    let keys = opening_keys(dir, identities, trust).map_err(BackupError::from)?;
    let (live_head, live_parts) = live.digests()?;
    let backup_seq = newest.manifest.head_seq;
    let live_from = live.journal_start()?.map_or(live_head.saturating_add(1), |s| s);
    let segments = segments::list(&dir.join(shipping::SEGMENTS_DIR)).map_err(replay::ReplayError::from)?.chain;
    let shipped_from = segments.first().map(|s| s.name.first);
    // The live journal continues the backup directly, or shipped segments
    // bridge what pruning removed since the backup (the usual case).
    let against_live = live_head == backup_seq
        || live_from <= backup_seq + 1
        || shipped_from.is_some_and(|first| first <= backup_seq + 1);
    let scratch = scratch_parent.join(format!("{SCRATCH}{}", std::process::id()));
    super::sealed::sweep_dead(scratch_parent, |n| n.strip_prefix(SCRATCH).and_then(|p| p.parse().ok()))
        .map_err(BackupError::from)?;
    let options = RestoreOptions::new(clock.clone(), progress, trust.clone());
    let source = SealedSegments::reader(keys.clone(), trust.clone());
    let result = restore::restore(Some(&newest), &keys, &scratch, &options, |r| {
        if !against_live {
            return Ok(());
        }
        // Shipped segments bridge what pruning removed from the live journal.
        let pruned_to = live_from.saturating_sub(1).min(live_head);
        let shipped = if backup_seq < pruned_to {
            replay::replay(r, &source, &segments, backup_seq, Until::seq(pruned_to))?.head
        } else {
            backup_seq
        };
        if shipped < pruned_to {
            return Err(RestoreError::Verify {
                problem: format!(
                    "the shipped segments end at seq {shipped}, but the live journal starts after seq {pruned_to}; the backup cannot be brought to the live store"
                ),
            });
        }
        replay_live(live, r, shipped, live_head)
    })
    .and_then(|restored| {
        let store = Store::open(&crate::config::store_path_in(&scratch), clock.clone())?;
        let (head, parts) = store.digests()?;
        let expected =
            if against_live { (live_head, &live_parts) } else { (newest.manifest.head_seq, &newest.manifest.parts) };
        compare(&newest, (head, &parts), expected)?;
        Ok(Verified {
            backup: newest.path.clone(),
            backup_seq: newest.manifest.head_seq,
            compared_seq: head,
            parts: parts.len(),
            rows: restored.rows,
            against_live,
        })
    });
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Replays the live journal `(from, to]` into the restore.
fn replay_live(live: &Store, restore: &crate::store::Restore<'_>, from: u64, to: u64) -> Result<(), RestoreError> {
    let ctx = SystemContext::new(Task::Restore);
    let mut after = from;
    while after < to {
        let batch = live.journal_since(&ctx, after, 8 << 20)?;
        if let Some(bad) = batch.bad {
            return Err(crate::store::StoreError::from(bad).into());
        }
        let entries: Vec<_> = batch.entries.into_iter().take_while(|e| e.seq <= to).collect();
        if entries.is_empty() {
            break;
        }
        after = entries.last().map_or(after, |e| e.seq);
        restore.replay(&entries)?;
    }
    Ok(())
}

fn compare(
    backup: &BackupInfo,
    (head, parts): (u64, &BTreeMap<String, PartDigest>),
    (want_head, want): (u64, &BTreeMap<String, PartDigest>),
) -> Result<(), RestoreError> {
    if head != want_head {
        return Err(RestoreError::Verify {
            problem: format!("the restored copy of {} is at seq {head}, not {want_head}", backup.path.display()),
        });
    }
    let names: std::collections::BTreeSet<&String> = parts.keys().chain(want.keys()).collect();
    let differing: Vec<String> = names
        .into_iter()
        .filter(|n| parts.get(*n) != want.get(*n))
        .map(|n| {
            let rows = |m: &BTreeMap<String, PartDigest>| m.get(n).map_or(0, |p| p.rows);
            format!("{n} ({} rows restored, {} live)", rows(parts), rows(want))
        })
        .collect();
    if differing.is_empty() {
        Ok(())
    } else {
        Err(RestoreError::Verify {
            problem: format!(
                "the restored copy of {} differs from the live store at seq {head} in {}",
                backup.path.display(),
                differing.join(", ")
            ),
        })
    }
}

/// The scheduled verification job (and `docket backup verify`): the newest
/// backup restored into a scratch dir under the data dir and compared with
/// `store`; the outcome is logged, written to `last-verify.json` and, with
/// `metrics`, counted.
pub fn job_verify(
    store: &Store,
    keyring: &Keyring,
    config: &Config,
    metrics: Option<&crate::telemetry::Metrics>,
    progress: &dyn Progress,
) -> Result<Verified, RestoreError> {
    let settings = Settings::from_config(config)?;
    let keys = appliance_keys(keyring);
    let trust = Trust::signer(backup::signing::ensure(store, keyring).map_err(BackupError::from)?.public());
    let outcome = verify(store, &settings.dir, &keys, &trust, &config.data_dir, store.clock(), progress);
    record(&settings.dir, metrics, store.clock(), &outcome);
    outcome
}

/// Logs the outcome, counts it in `/metrics` and writes [`STATUS_FILE`].
pub fn record(dir: &Path, metrics: Option<&Metrics>, clock: &Clock, outcome: &Result<Verified, RestoreError>) {
    let at = Timestamp::from_micros(clock.now_micros());
    let (ok, backup, detail) = match outcome {
        Ok(v) => {
            tracing::info!(backup = %v.backup.display(), seq = v.compared_seq, parts = v.parts, "backup verified: it restores and matches the live store");
            (true, v.backup.display().to_string(), format!("{} parts match at seq {}", v.parts, v.compared_seq))
        }
        Err(e) => {
            tracing::error!(error = %e, "backup verification FAILED");
            (false, String::new(), e.to_string())
        }
    };
    if let Some(m) = metrics {
        let result = if ok { "ok" } else { "failed" };
        m.count(
            "docket_backup_verifications_total",
            "Backup verifications by result.",
            vec![("result", result.into())],
            1,
        );
        if ok {
            m.gauge(
                "docket_backup_last_verified_timestamp_seconds",
                "When a backup last verified.",
                vec![],
                at.micros() as f64 / 1e6,
            );
        }
    }
    let status = Status { at, backup, ok, detail };
    if let Ok(text) = serde_json::to_vec_pretty(&status) {
        let path = dir.join(STATUS_FILE);
        if let Err(e) = crate::secrets::write_private_file(&path, &text) {
            tracing::warn!(file = %path.display(), error = %e, "cannot record the verification outcome");
        }
    }
}

/// The last verification recorded in `dir`, if any.
pub fn last(dir: &Path) -> Option<Status> {
    std::fs::read(dir.join(STATUS_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok())
}
