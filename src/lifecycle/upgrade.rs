//! Upgrades: what starting this binary will do to the store (`docket
//! upgrade-check`), and the copy of the store taken before a migration.
//!
//! The backup is a plain copy of the closed file (nothing has opened it yet at
//! that point, so the copy is consistent), fsynced, at
//! `<data_dir>/pre-upgrade/docket-schema<N>-<UTC time>.redb`, after checking
//! there is room for it. Rolling back is: stop docket, reinstall the previous
//! version, copy the backup over the store.
use crate::clock::Clock;
use crate::config::Config;
use crate::store::{SCHEMA_VERSION, Store, StoreError};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Room kept free beyond the backup itself, so the migration can still write.
const HEADROOM_BYTES: u64 = 64 * 1024 * 1024;

/// What starting this binary does to a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// No store (or an empty one) yet: the first start sets it up at the target schema.
    Create,
    /// Already at the target schema.
    Nothing,
    /// Back up, then run the migrations from `from` to the target.
    Migrate { from: u32 },
    /// Written by a newer docket: refused.
    Refuse { found: u32 },
    /// The running service holds the store, so its schema cannot be read now.
    InUse,
}

/// An upgrade plan for one store.
#[derive(Debug, Clone)]
pub struct Plan {
    pub store: PathBuf,
    pub target: u32,
    pub action: Action,
    /// Where the backup goes (for `Migrate`).
    pub backup: PathBuf,
    pub store_bytes: u64,
    pub free_bytes: Option<u64>,
}

/// Plans the start of a binary that writes schema `target` on the store at `store`.
pub fn plan(store: &Path, target: u32, clock: &Clock) -> Result<Plan, String> {
    let store_bytes = std::fs::metadata(store).map(|m| m.len()).unwrap_or(0);
    let action = match Store::peek_schema(store) {
        Ok(None) => Action::Create,
        Ok(Some(v)) if v == target => Action::Nothing,
        Ok(Some(v)) if v > target => Action::Refuse { found: v },
        Ok(Some(v)) => Action::Migrate { from: v },
        Err(StoreError::Locked { .. }) => Action::InUse,
        Err(e) => return Err(e.to_string()),
    };
    let dir = store.parent().unwrap_or(Path::new(".")).join("pre-upgrade");
    let from = match action {
        Action::Migrate { from } => from,
        _ => target,
    };
    let backup = dir.join(format!("docket-schema{from}-{}.redb", compact_time(clock)));
    let free_bytes = free_space(store.parent().unwrap_or(Path::new("."))).ok();
    Ok(Plan { store: store.to_path_buf(), target, action, backup, store_bytes, free_bytes })
}

/// `20261130T132400Z`: sortable, and safe in a file name.
fn compact_time(clock: &Clock) -> String {
    let t = clock.now();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Bytes available to an unprivileged writer on the file system holding `dir`.
pub fn free_space(dir: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

impl Plan {
    /// The `docket upgrade-check` report.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "store:          {} ({})\nthis docket:    {} (writes schema {})\n",
            self.store.display(),
            human_bytes(self.store_bytes),
            crate::VERSION,
            self.target
        );
        let next = match &self.action {
            Action::Create => "no store yet: the first start creates one".to_string(),
            Action::Nothing => format!("store schema:   {}\nnothing to migrate: the store is already at schema {}", self.target, self.target),
            Action::Migrate { from } => format!(
                "store schema:   {from}\nmigrations:     {}\nbackup first:   {} ({} needed, {} free)\nroll back by:   stopping docket, reinstalling the previous version, and copying the backup over {}",
                (*from..self.target).map(|v| format!("{v}->{}", v + 1)).collect::<Vec<_>>().join(", "),
                self.backup.display(),
                human_bytes(self.store_bytes),
                self.free_bytes.map_or("unknown".into(), human_bytes),
                self.store.display()
            ),
            Action::Refuse { found } => format!(
                "store schema:   {found}\nrefused: the store was written by a newer docket (schema {found}); this one reads schema {} at most. Run that newer docket, or restore a backup taken by this version",
                self.target
            ),
            Action::InUse => "store schema:   unknown: the running service holds the store\nrun `systemctl stop docket` and this check again; the next start backs up and migrates automatically anyway".to_string(),
        };
        out.push_str(&next);
        out.push('\n');
        out
    }

    /// Copies the store aside (only for `Migrate`); refuses when there is not room.
    pub fn back_up(&self) -> Result<Option<PathBuf>, String> {
        let Action::Migrate { .. } = self.action else {
            return Ok(None);
        };
        let needed = self.store_bytes.saturating_add(HEADROOM_BYTES);
        if let Some(free) = self.free_bytes
            && free < needed
        {
            return Err(format!(
                "not enough disk space to back up the store before migrating it: {} needed, {} free on the file system of {}\n  fix: free some space (or grow the disk) and start docket again; nothing was changed",
                human_bytes(needed),
                human_bytes(free),
                self.store.display()
            ));
        }
        copy_synced(&self.store, &self.backup).map_err(|e| {
            format!(
                "cannot back up {} to {} before migrating it: {e}\n  fix: make {} writable by the docket user; nothing was changed",
                self.store.display(),
                self.backup.display(),
                self.backup.parent().unwrap_or(Path::new(".")).display()
            )
        })?;
        Ok(Some(self.backup.clone()))
    }
}

/// Copies `from` to `to` (0600, in a 0700 directory) and fsyncs the copy and its directory.
fn copy_synced(from: &Path, to: &Path) -> std::io::Result<()> {
    let dir = to.parent().unwrap_or(Path::new("."));
    crate::secrets::create_private_dir(dir)?;
    let partial = to.with_extension("partial");
    {
        let mut src = std::fs::File::open(from)?;
        let mut dst = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&partial)?;
        std::io::copy(&mut src, &mut dst)?;
        dst.flush()?;
        dst.sync_all()?;
    }
    std::fs::rename(&partial, to)?;
    std::fs::File::open(dir)?.sync_all()
}

/// At start, before the store is opened: backs up a store that the migrations
/// are about to change, and logs how to roll back.
pub fn backup_before_migration(config: &Config, clock: &Clock) -> Result<Option<PathBuf>, String> {
    let plan = plan(&config.store_path(), SCHEMA_VERSION, clock)?;
    let Action::Migrate { from } = plan.action else {
        return Ok(None);
    };
    let backup = plan.back_up()?;
    if let Some(path) = &backup {
        tracing::warn!(
            from,
            to = plan.target,
            backup = %path.display(),
            "migrating the store; to roll back: stop docket, reinstall the previous version, then copy {} over {}",
            path.display(),
            plan.store.display()
        );
    }
    Ok(backup)
}

/// `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn clock() -> Clock {
        Clock::fixed(time::macros::datetime!(2026-11-30 13:24:00 UTC))
    }

    fn store_at_current_schema(dir: &Path) -> PathBuf {
        let path = dir.join("data/docket.redb");
        drop(Store::open(&path, Clock::system()).unwrap());
        path
    }

    #[test]
    fn an_older_store_is_copied_aside_before_migration() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at_current_schema(dir.path());
        let plan = plan(&store, SCHEMA_VERSION + 1, &clock()).unwrap();
        assert_eq!(plan.action, Action::Migrate { from: SCHEMA_VERSION });
        let expected = dir.path().join(format!("data/pre-upgrade/docket-schema{SCHEMA_VERSION}-20261130T132400Z.redb"));
        assert_eq!(plan.backup, expected);
        let report = plan.describe();
        assert!(report.contains(&format!("{SCHEMA_VERSION}->{}", SCHEMA_VERSION + 1)), "{report}");
        assert!(report.contains(&expected.display().to_string()), "{report}");
        assert_eq!(plan.back_up().unwrap(), Some(expected.clone()));
        assert_eq!(std::fs::read(&expected).unwrap(), std::fs::read(&store).unwrap());
        assert_eq!(std::fs::metadata(&expected).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(Store::peek_schema(&expected).unwrap(), Some(SCHEMA_VERSION), "the copy is a readable store");
    }

    #[test]
    fn no_backup_without_a_migration_and_newer_stores_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = plan(&dir.path().join("none.redb"), SCHEMA_VERSION, &clock()).unwrap();
        assert_eq!(missing.action, Action::Create);
        assert!(!dir.path().join("none.redb").exists(), "planning creates nothing");
        let store = store_at_current_schema(dir.path());
        let same = plan(&store, SCHEMA_VERSION, &clock()).unwrap();
        assert_eq!(same.action, Action::Nothing);
        assert_eq!(same.back_up().unwrap(), None);
        let config = Config { data_dir: dir.path().join("data"), ..Default::default() };
        assert_eq!(
            backup_before_migration(&config, &clock()).unwrap(),
            None,
            "a start at the same schema copies nothing"
        );
        assert!(!dir.path().join("data/pre-upgrade").exists());
        let older_binary = plan(&store, SCHEMA_VERSION - 1, &clock()).unwrap();
        assert_eq!(older_binary.action, Action::Refuse { found: SCHEMA_VERSION });
        assert!(older_binary.describe().contains("newer docket"), "{}", older_binary.describe());
    }

    #[test]
    fn a_full_disk_refuses_the_migration_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at_current_schema(dir.path());
        let mut plan = plan(&store, SCHEMA_VERSION + 1, &clock()).unwrap();
        plan.free_bytes = Some(plan.store_bytes);
        let e = plan.back_up().unwrap_err();
        assert!(e.contains("not enough disk space") && e.contains("fix:"), "{e}");
        assert!(!plan.backup.exists());
    }

    #[test]
    fn a_store_held_by_the_service_is_reported_not_failed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/docket.redb");
        let _open = Store::open(&path, Clock::system()).unwrap();
        assert_eq!(plan(&path, SCHEMA_VERSION, &clock()).unwrap().action, Action::InUse);
    }
}
