//! Encrypted full backups: writing them ([`run`]), listing ([`archive::list`]),
//! keeping 7 daily and 4 weekly and the point-in-time window's base
//! ([`retention`]); proving they restore is `lifecycle::verify`, above restore.
//!
//! A backup is one consistent export of the store (one read transaction, so
//! the API and the sync keep writing) in a sealed file ([`sealed`]: zstd, age
//! to the appliance key and every offline recipient, checksummed, written
//! atomically) with a manifest beside it ([`archive`]).
//!
//! Key rotation: each backup carries the master key its store was sealed
//! under, and `keyring.sealed` in the backup directory keeps every retired
//! master key a retained backup is sealed to, itself sealed to the current key
//! and the offline recipients (refreshed by every backup run and by `docket key
//! rotate`). So a backup sealed before a rotation still opens with the current
//! key; nothing is re-encrypted.
pub mod archive;
pub mod progress;
pub mod retention;
pub use super::{sealed, signing};

pub use archive::{BackupInfo, Imported, Manifest, Progress, Quiet, import, import_with, list};
pub use sealed::{SealError, SealedFile, SealedReader, SealedWriter};
pub use signing::{Pin, PublicKey, Signer, SigningError, Trust};

use crate::clock::Clock;
use crate::config::Config;
use crate::secrets::{KeySource, Keyring, with_suffix};
use crate::store::{Store, StoreError};
use crate::timestamp::Timestamp;
use std::path::{Path, PathBuf};

/// The file in the backup directory holding retired master keys.
pub const KEYRING_FILE: &str = "keyring.sealed";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Signing(#[from] SigningError),
    #[error(
        "cannot reach the backup directory {path}: {reason}\n  fix: check that it exists and is mounted, that the docket user can write it, or set backup.dir"
    )]
    Dir { path: String, reason: String },
    #[error("the backup manifest {path} cannot be read: {reason}\n  fix: use another backup (`docket backup list`)")]
    Manifest { path: String, reason: String },
    #[error(
        "the backup {path} does not match its manifest: {problem}\n  fix: use another copy or an older backup (`docket backup list`)"
    )]
    Mismatch { path: String, problem: String },
    #[error(
        "the backup {path} was written by a newer docket: {problem}\n  fix: restore it with that docket version or newer"
    )]
    Newer { path: String, problem: String },
    #[error("there is no backup in {dir}\n  fix: take one with `docket backup now`")]
    NoBackup { dir: String },
    #[error("backup failed: {0}")]
    Io(String),
}

impl BackupError {
    fn dir(path: &Path, e: &std::io::Error) -> BackupError {
        if e.kind() == std::io::ErrorKind::StorageFull {
            return SealError::NoSpace { path: path.display().to_string() }.into();
        }
        BackupError::Dir { path: path.display().to_string(), reason: e.to_string() }
    }
}

/// Where backups go and whom they are sealed to, from `[backup]`.
#[derive(Clone, Debug)]
pub struct Settings {
    pub dir: PathBuf,
    /// Offline recipients (`backup.recipients`), besides the appliance key.
    pub offline: Vec<age::x25519::Recipient>,
    pub keep: retention::Keep,
    /// `backup.pitr_days`: the point-in-time window retention keeps.
    pub pitr_days: u32,
}

impl Settings {
    /// The settings of `config`.
    pub fn from_config(config: &Config) -> Result<Settings, BackupError> {
        let dir = config.backup_dir();
        let offline = config
            .backup
            .recipients
            .iter()
            .map(|r| r.parse().map_err(|e| BackupError::Io(format!("backup.recipients: `{r}`: {e}"))))
            .collect::<Result<_, _>>()?;
        let keep = retention::Keep { daily: config.backup.keep_daily, weekly: config.backup.keep_weekly };
        Ok(Settings { dir, offline, keep, pitr_days: config.backup.pitr_days })
    }

    /// Where the point-in-time window starts at `now`: `pitr_days` before it.
    pub fn window_start(&self, now: Timestamp) -> Timestamp {
        now.plus_micros(-(i64::from(self.pitr_days) * 86_400_000_000))
    }

    /// The appliance key first, then each offline recipient.
    fn recipients(&self, keyring: &Keyring) -> Vec<age::x25519::Recipient> {
        std::iter::once(keyring.age_recipient().clone()).chain(self.offline.iter().cloned()).collect()
    }
}

/// The master key and, after a rotation not yet confirmed, the previous one.
pub fn appliance_keys(keyring: &Keyring) -> Vec<age::x25519::Identity> {
    let mut keys = vec![keyring.identity().clone()];
    if let KeySource::File(path) = keyring.source()
        && let Ok(previous) = Keyring::load(&[KeySource::File(with_suffix(path, "previous"))])
    {
        keys.push(previous.identity().clone());
    }
    keys
}

/// Takes one backup now: sweeps temp files of killed runs, exports the store
/// into a new sealed backup, applies retention and refreshes the keyring.
pub fn run(
    store: &Store,
    settings: &Settings,
    keyring: &Keyring,
    clock: &Clock,
    progress: &dyn Progress,
) -> Result<BackupInfo, BackupError> {
    run_with(store, settings, keyring, clock, progress, None)
}

/// [`run`], failing like a full disk after `fail_after` bytes (tests).
#[doc(hidden)]
pub fn run_with(
    store: &Store,
    settings: &Settings,
    keyring: &Keyring,
    clock: &Clock,
    progress: &dyn Progress,
    fail_after: Option<u64>,
) -> Result<BackupInfo, BackupError> {
    let dir = &settings.dir;
    match std::fs::create_dir(dir) {
        Ok(()) => crate::secrets::create_private_dir(dir).map_err(|e| BackupError::dir(dir, &e))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(BackupError::dir(dir, &e)),
    }
    sealed::sweep_temp(dir)?;
    let signer = signing::ensure(store, keyring)?;
    let keys = appliance_keys(keyring);
    let recipients = settings.recipients(keyring);
    let created = Timestamp::from_micros(clock.now_micros());
    let options = archive::WriteOptions {
        dir,
        recipients: &recipients,
        keys: &keys,
        signer: &signer,
        created,
        progress,
        fail_after,
    };
    let info = archive::write(store, &options)?;
    tracing::info!(
        backup = %info.path.display(),
        bytes = info.manifest.bytes,
        rows = info.manifest.rows,
        seq = info.manifest.head_seq,
        "backup written"
    );
    let kept = retention::apply(dir, settings.keep, Some(settings.window_start(created)))?;
    refresh_keyring(dir, &keys, &recipients, &kept, &signer)?;
    Ok(info)
}

/// Every key that opens backups in `dir`: `given` plus the retired master
/// keys in its keyring file, when one of `given` opens it. A keyring that is
/// unsigned or signed by a signer `trust` does not pin is refused.
pub fn opening_keys(
    dir: &Path,
    given: &[age::x25519::Identity],
    trust: &Trust,
) -> Result<Vec<age::x25519::Identity>, SealError> {
    let mut keys = given.to_vec();
    for key in read_keyring(dir, given, trust)? {
        if !keys.iter().any(|k| k.to_public().to_string() == key.to_public().to_string()) {
            keys.push(key);
        }
    }
    Ok(keys)
}

fn read_keyring(
    dir: &Path,
    given: &[age::x25519::Identity],
    trust: &Trust,
) -> Result<Vec<age::x25519::Identity>, SealError> {
    let path = dir.join(KEYRING_FILE);
    if !path.exists() {
        return Ok(vec![]);
    }
    let read = || -> Result<Vec<age::x25519::Identity>, SealError> {
        let mut reader = SealedReader::open(&path, given, trust)?;
        let mut out = vec![];
        while let Some(frame) = reader.next_frame()? {
            if let Some(key) = std::str::from_utf8(&frame).ok().and_then(|t| t.trim().parse().ok()) {
                out.push(key);
            }
        }
        Ok(out)
    };
    match read() {
        Ok(keys) => Ok(keys),
        Err(e @ SealError::WrongKey { .. }) => {
            tracing::warn!(error = %e, "the backup keyring does not open with the keys at hand");
            Ok(vec![])
        }
        Err(e) => Err(e),
    }
}

/// Rewrites `keyring.sealed`: the keys in force now plus every retired key
/// still needed by a kept backup, sealed to `recipients`, signed by `signer`.
/// A keyring this appliance did not sign is replaced (its keys are not taken).
pub fn refresh_keyring(
    dir: &Path,
    current: &[age::x25519::Identity],
    recipients: &[age::x25519::Recipient],
    kept: &[BackupInfo],
    signer: &Signer,
) -> Result<(), BackupError> {
    use age::secrecy::ExposeSecret as _;
    let needed = |key: &age::x25519::Identity| {
        let public = key.to_public().to_string();
        kept.iter().any(|b| b.manifest.recipients.contains(&public))
    };
    // A keyring written before docket signed its files is read once more, so
    // an upgrade keeps the retired keys it holds; what is written is signed.
    // (Keys taken from it only open backups: they can vouch for nothing.)
    let own = Trust::signer(signer.public()).allowing_unsigned(true);
    let known = opening_keys(dir, current, &own).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the backup keyring is not this appliance's: it is rewritten from the current keys");
        current.to_vec()
    });
    let keys: Vec<_> = known
        .into_iter()
        .filter(|k| needed(k) || current.iter().any(|c| c.to_public().to_string() == k.to_public().to_string()))
        .collect();
    let mut writer = SealedWriter::create(&dir.join(KEYRING_FILE), recipients, signer)?;
    for key in &keys {
        writer.frame(key.to_string().expose_secret().as_bytes())?;
    }
    writer.finish()?;
    Ok(())
}

/// After `docket key rotate`: reseals the backup keyring to the new key, so
/// backups sealed to the old one keep opening after `--confirm`.
pub fn after_rotation(config: &Config, store: &Store, keyring: &Keyring) -> Result<(), BackupError> {
    let Ok(settings) = Settings::from_config(config) else { return Ok(()) };
    if !settings.dir.exists() {
        return Ok(());
    }
    let signer = signing::ensure(store, keyring)?;
    let kept = list(&settings.dir)?;
    refresh_keyring(&settings.dir, &appliance_keys(keyring), &settings.recipients(keyring), &kept, &signer)
}

/// `docket backup list`: one line per backup, oldest first.
pub fn describe(backups: &[BackupInfo]) -> String {
    backups
        .iter()
        .map(|b| {
            format!(
                "{}\t{}\tseq {}\t{} rows\t{}\n",
                b.manifest.created,
                b.path.display(),
                b.manifest.head_seq,
                b.manifest.rows,
                crate::lifecycle::upgrade::human_bytes(b.manifest.bytes)
            )
        })
        .collect()
}

/// Whether the backup directory (or its nearest existing parent) is on the
/// filesystem of the data dir: a lost disk would then take both.
pub fn same_filesystem(config: &Config) -> Option<bool> {
    use std::os::unix::fs::MetadataExt as _;
    let dir = config.backup_dir();
    let existing = dir.ancestors().find(|p| p.exists())?;
    let (a, b) = (std::fs::metadata(existing).ok()?, std::fs::metadata(&config.data_dir).ok()?);
    Some(a.dev() == b.dev())
}

/// What the service's status line adds about backups (systemd `STATUS=`).
pub fn status_note(config: &Config) -> Option<&'static str> {
    (same_filesystem(config) == Some(true)).then_some("; WARNING: backups share the store's disk (set backup.dir)")
}

/// Logs a warning at start when backups share the store's filesystem.
pub fn warn_if_same_filesystem(config: &Config) {
    if same_filesystem(config) == Some(true) {
        tracing::warn!(
            backup_dir = %config.backup_dir().display(),
            data_dir = %config.data_dir.display(),
            "backups are on the same filesystem as the store: a lost disk loses both; point backup.dir at another disk or a share"
        );
    }
}

/// The scheduled backup job (and `docket backup now`): one backup with the
/// appliance's key and `[backup]`; the outcome is logged and, with `metrics`,
/// counted (`docket_backups_total{result}`, `docket_backup_last_success_timestamp_seconds`,
/// `docket_backup_last_bytes`).
pub fn job_backup(
    store: &Store,
    keyring: &Keyring,
    config: &Config,
    metrics: Option<&crate::telemetry::Metrics>,
    progress: &dyn Progress,
) -> Result<BackupInfo, BackupError> {
    let outcome = Settings::from_config(config).and_then(|s| run(store, &s, keyring, store.clock(), progress));
    if let Err(e) = &outcome {
        tracing::error!(error = %e, "backup FAILED");
    }
    if let Some(m) = metrics {
        let result = if outcome.is_ok() { "ok" } else { "failed" };
        m.count("docket_backups_total", "Backups by result.", vec![("result", result.into())], 1);
        if let Ok(info) = &outcome {
            let now = store.clock().now_micros() as f64 / 1e6;
            m.gauge("docket_backup_last_success_timestamp_seconds", "When a backup last succeeded.", vec![], now);
            m.gauge("docket_backup_last_bytes", "Size of the newest backup.", vec![], info.manifest.bytes as f64);
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_warns_when_backups_share_the_stores_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config { data_dir: dir.path().join("data"), ..Default::default() };
        std::fs::create_dir(&config.data_dir).unwrap();
        assert!(status_note(&config).is_some_and(|n| n.contains("backup.dir")), "unset: under the data dir");
        config.backup.dir = Some(dir.path().join("backups"));
        assert!(status_note(&config).is_some_and(|n| n.contains("backup.dir")));
        config.backup.dir = Some("/proc/docket-backups".into()); // another filesystem
        assert_eq!(status_note(&config), None);
    }
}
