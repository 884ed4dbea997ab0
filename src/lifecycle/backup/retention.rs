//! Which backups to keep: the newest of each of the last `daily` days and of
//! each of the last `weekly` ISO weeks that have a backup (the newest backup is
//! always kept), and the base of the point-in-time window: the newest backup
//! committed at or before the window's start (`backup.pitr_days` ago), or the
//! oldest when none is that old. Days and weeks are UTC, from the manifest's
//! creation time. A manual backup therefore never shortens the window.
use super::{BackupError, BackupInfo, list};
use crate::timestamp::Timestamp;
use std::collections::BTreeSet;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keep {
    pub daily: u32,
    pub weekly: u32,
}

/// When a backup's state was committed (its head's time, else its creation).
pub fn state_time(b: &BackupInfo) -> Timestamp {
    b.manifest.head_time.unwrap_or(b.manifest.created)
}

/// The backup (index into `backups`, oldest first) a restore to `window_start`
/// starts from: the newest committed at or before it, else the oldest.
pub fn window_base(backups: &[BackupInfo], window_start: Timestamp) -> Option<usize> {
    backups.iter().rposition(|b| state_time(b) <= window_start).or((!backups.is_empty()).then_some(0))
}

/// The indexes (into `backups`, oldest first) to keep.
pub fn plan(backups: &[BackupInfo], keep: Keep, window_start: Option<Timestamp>) -> BTreeSet<usize> {
    let mut kept: BTreeSet<usize> = window_start.and_then(|w| window_base(backups, w)).into_iter().collect();
    let (mut days, mut weeks) = (BTreeSet::new(), BTreeSet::new());
    for (i, b) in backups.iter().enumerate().rev() {
        let date = b.manifest.created.to_datetime().date();
        let (year, week, _) = date.to_iso_week_date();
        if i + 1 == backups.len() {
            kept.insert(i);
        }
        if days.len() < keep.daily as usize && days.insert(date) {
            kept.insert(i);
        }
        if weeks.len() < keep.weekly as usize && weeks.insert((year, week)) {
            kept.insert(i);
        }
    }
    kept
}

/// Deletes the backups of `dir` that [`plan`] does not keep (manifest first,
/// so a half-deleted backup is not listed); returns those kept.
pub fn apply(dir: &Path, keep: Keep, window_start: Option<Timestamp>) -> Result<Vec<BackupInfo>, BackupError> {
    let backups = list(dir)?;
    let kept = plan(&backups, keep, window_start);
    let mut out = vec![];
    for (i, b) in backups.into_iter().enumerate() {
        if kept.contains(&i) {
            out.push(b);
            continue;
        }
        std::fs::remove_file(b.manifest_path()).map_err(|e| BackupError::dir(&b.manifest_path(), &e))?;
        std::fs::remove_file(&b.path).map_err(|e| BackupError::dir(&b.path, &e))?;
        tracing::info!(backup = %b.path.display(), "removed by retention");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::backup::Manifest;

    fn at(text: &str) -> BackupInfo {
        let manifest = Manifest {
            format: String::new(),
            docket_version: String::new(),
            schema_version: 2,
            created: Timestamp::parse(text).unwrap(),
            head_seq: 0,
            head_time: None,
            first_seq: None,
            rows: 0,
            parts: Default::default(),
            recipients: vec![],
            file: text.into(),
            bytes: 0,
            sha256: String::new(),
            signer: String::new(),
            signature: String::new(),
        };
        BackupInfo { path: text.into(), manifest }
    }

    #[test]
    fn seven_daily_and_four_weekly_of_two_months_of_backups() {
        // Two backups a day (02:00 and 14:00) from 2026-09-01 (a Tuesday) to 2026-10-31.
        let mut backups = vec![];
        let start = Timestamp::parse("2026-09-01T02:00:00Z").unwrap();
        for half_day in 0..122 {
            backups.push(at(&start.plus_micros(half_day * 12 * 3_600_000_000).to_rfc3339()));
        }
        let kept: Vec<String> = plan(&backups, Keep { daily: 7, weekly: 4 }, None)
            .iter()
            .map(|&i| backups[i].manifest.created.to_rfc3339())
            .collect();
        let daily: Vec<String> = (25..=31).rev().map(|d| format!("2026-10-{d}T14:00:00Z")).collect();
        // Sundays end ISO weeks: the newest backup of each of the 4 newest weeks.
        let weekly = ["2026-10-31T14:00:00Z", "2026-10-25T14:00:00Z", "2026-10-18T14:00:00Z", "2026-10-11T14:00:00Z"];
        let mut expected: BTreeSet<String> = daily.into_iter().collect();
        expected.extend(weekly.iter().map(|s| s.to_string()));
        assert_eq!(kept.into_iter().collect::<BTreeSet<_>>(), expected);
    }

    #[test]
    fn the_newest_is_kept_even_with_nothing_to_keep() {
        let backups = vec![at("2026-10-01T00:00:00Z"), at("2026-10-02T00:00:00Z")];
        assert_eq!(plan(&backups, Keep { daily: 0, weekly: 0 }, None), BTreeSet::from([1]));
    }

    /// Issue 16: a manual backup on the first day must not take the window's base with it.
    #[test]
    fn the_windows_base_is_kept_whatever_manual_backups_come_later() {
        let backups = vec![
            at("2026-10-01T02:00:00Z"),
            at("2026-10-08T02:00:00Z"),
            at("2026-10-08T09:00:00Z"),
            at("2026-10-08T09:05:00Z"),
        ];
        let keep = Keep { daily: 1, weekly: 1 };
        let start = Timestamp::parse("2026-10-01T09:00:00Z").unwrap();
        assert_eq!(plan(&backups, keep, Some(start)), BTreeSet::from([0, 3]), "the base at or before the start stays");
        let before_all = Timestamp::parse("2026-09-20T00:00:00Z").unwrap();
        assert_eq!(plan(&backups, keep, Some(before_all)), BTreeSet::from([0, 3]), "none that old: the oldest stays");
        assert_eq!(window_base(&[], start), None);
    }
}
