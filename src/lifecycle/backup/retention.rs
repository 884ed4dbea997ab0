//! Which backups to keep: the newest of each of the last `daily` days and of
//! each of the last `weekly` ISO weeks that have a backup (the newest backup is
//! always kept). Days and weeks are UTC, from the manifest's creation time.
use super::{BackupError, BackupInfo, list};
use std::collections::BTreeSet;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keep {
    pub daily: u32,
    pub weekly: u32,
}

/// The indexes (into `backups`, oldest first) to keep.
pub fn plan(backups: &[BackupInfo], keep: Keep) -> BTreeSet<usize> {
    let mut kept = BTreeSet::new();
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
pub fn apply(dir: &Path, keep: Keep) -> Result<Vec<BackupInfo>, BackupError> {
    let backups = list(dir)?;
    let kept = plan(&backups, keep);
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
    use crate::timestamp::Timestamp;

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
        let kept: Vec<String> = plan(&backups, Keep { daily: 7, weekly: 4 })
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
        assert_eq!(plan(&backups, Keep { daily: 0, weekly: 0 }), BTreeSet::from([1]));
    }
}
