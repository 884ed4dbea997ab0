//! Restoring a backup into a new data dir: `docket restore --backup FILE
//! --into DIR [--dry-run] [--replace]`, and the pipeline point-in-time
//! recovery builds on (import, a replay hook, finish, checks).
//!
//! A restore never writes into an existing store: it builds the new data dir
//! under a temp name beside `into` (`.NAME.restoring-PID`), imports the
//! backup, lets the caller replay journal entries, finishes (migrating an
//! older schema), verifies it (the import's checksums and per-part digests,
//! the schema, every org's audit chain), writes the master key the backup
//! carries, and only then renames it into place. Any failure removes the temp
//! dir; the live data dir is never touched (`--replace` swaps directories by
//! rename, with the service stopped, keeping the old one).
//!
//! Nothing is imported before the backup's manifest and sealed file verify
//! against the pinned signer ([`Trust`]): `--trust`, or the instance's own
//! `signing.pub` with `--config`. A master key the backup carries that the
//! configured instance does not know is installed only with `--accept-master-key`.
use crate::audit;
use crate::clock::Clock;
use crate::lifecycle::backup::{self, BackupError, BackupInfo, Pin, Progress, Trust, signing};
use crate::secrets::{create_private_dir, default_key_path, write_identity};
use crate::store::{OrgTask, OrgTaskContext, Restore, SCHEMA_VERSION, Store, StoreError, SystemContext, Task};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "{path} is not empty; a restore writes only a new data dir\n  fix: name a new or empty directory with --into, or use --replace to swap it in for the configured data dir"
    )]
    NotEmpty { path: String },
    #[error(
        "cannot {action} {path}: {reason}\n  fix: check the directory exists, the docket user can write it, and the disk has space"
    )]
    Io { action: &'static str, path: String, reason: String },
    #[error(
        "the restored store fails verification: {problem}\n  fix: the backup is damaged or incomplete; use an older backup (`docket backup list`)"
    )]
    Verify { problem: String },
    #[error(
        "the service is running ({holder}, lock {lock})\n  fix: stop it first (`systemctl stop docket`), then run the restore with --replace again"
    )]
    Running { holder: String, lock: String },
    #[error(
        "the backup carries the master key {carried}, which this instance does not know (its keys: {known})\n  fix: a backup sealed before a key rotation carries the older key: if you rotated since, or restore another appliance's backup on purpose, pass --accept-master-key; otherwise the backup is not this appliance's"
    )]
    UnknownMasterKey { carried: String, known: String },
    #[error(transparent)]
    Replay(#[from] crate::lifecycle::replay::ReplayError),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> RestoreError + 'a {
    move |e| RestoreError::Io { action, path: path.display().to_string(), reason: e.to_string() }
}

/// How to restore.
pub struct RestoreOptions<'a> {
    /// Check everything, then remove what was built: nothing is left behind.
    pub dry_run: bool,
    pub clock: Clock,
    pub progress: &'a dyn Progress,
    /// Whose signatures are believed.
    pub trust: Trust,
    /// The master keys (`age1…`) the instance knows, when restoring for a
    /// configured instance: a carried key outside them is refused unless
    /// `accept_master_key`. `None`: a new machine, nothing to compare with.
    pub known_keys: Option<Vec<String>>,
    pub accept_master_key: bool,
    /// The backup dir whose erasure ledger the restore re-applies; `None`:
    /// the directory of the backup restored.
    pub ledger: Option<PathBuf>,
}

impl<'a> RestoreOptions<'a> {
    /// Options trusting `trust`, with no configured instance to compare keys with.
    pub fn new(clock: Clock, progress: &'a dyn Progress, trust: Trust) -> RestoreOptions<'a> {
        RestoreOptions {
            dry_run: false,
            clock,
            progress,
            trust,
            known_keys: None,
            accept_master_key: false,
            ledger: None,
        }
    }

    /// The same options, re-applying the erasure ledger of `backup_dir`.
    pub fn with_ledger(&self, backup_dir: &Path) -> RestoreOptions<'a> {
        RestoreOptions {
            dry_run: self.dry_run,
            clock: self.clock.clone(),
            progress: self.progress,
            trust: self.trust.clone(),
            known_keys: self.known_keys.clone(),
            accept_master_key: self.accept_master_key,
            ledger: Some(backup_dir.to_path_buf()),
        }
    }
}

/// What a restore built and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The new data dir (the checked one was removed after a dry run).
    pub into: PathBuf,
    pub rows: u64,
    /// The journal head of the restored store (after any replay).
    pub head_seq: u64,
    pub schema_version: u32,
    /// Orgs whose audit chains were verified, and their events.
    pub orgs: usize,
    pub audit_events: u64,
    /// Orgs whose search index was rebuilt from the restored store (none on a dry run).
    pub indexed: u64,
    /// The master key written into the new data dir, if the backup carries one.
    pub key: Option<PathBuf>,
    pub dry_run: bool,
}

impl Restored {
    pub fn describe(&self) -> String {
        let verb = if self.dry_run { "checked (dry run; nothing written)" } else { "restored into" };
        let key = self
            .key
            .as_ref()
            .map(|k| format!("\nthe master key the store is sealed to is at {}", k.display()))
            .unwrap_or_default();
        format!(
            "{verb} {}: {} rows, journal at seq {}, schema {}, {} org audit chains intact ({} events), {} search indexes rebuilt{key}\n",
            self.into.display(),
            self.rows,
            self.head_seq,
            self.schema_version,
            self.orgs,
            self.audit_events,
            self.indexed
        )
    }
}

/// Whether `dir` is absent or an empty directory.
fn is_vacant(dir: &Path) -> Result<bool, RestoreError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io("read", dir)(e)),
    }
}

const STAGING: &str = ".restoring-";

fn dir_name(into: &Path) -> String {
    into.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into())
}

/// `.NAME.restoring-PID` beside `into`.
fn staging_for(into: &Path) -> PathBuf {
    into.with_file_name(format!(".{}{STAGING}{}", dir_name(into), std::process::id()))
}

/// Removes staging dirs beside `into` left by restores that were killed.
fn sweep_staging(into: &Path) {
    let Some(parent) = into.parent().filter(|p| !p.as_os_str().is_empty()) else { return };
    let prefix = format!(".{}{STAGING}", dir_name(into));
    if let Err(e) = backup::sealed::sweep_dead(parent, |n| n.strip_prefix(&prefix).and_then(|p| p.parse().ok())) {
        tracing::warn!(error = %e, "cannot sweep the staging dirs of interrupted restores");
    }
}

/// Restores `backup` into the new data dir `into`; `replay` runs between the
/// import and the finish (point-in-time recovery replays shipped entries
/// there; a whole-backup restore passes `|_| Ok(())`), and its error comes
/// back as it is.
pub fn restore<E: From<RestoreError>>(
    backup: Option<&BackupInfo>,
    identities: &[age::x25519::Identity],
    into: &Path,
    options: &RestoreOptions<'_>,
    replay: impl FnOnce(&Restore<'_>) -> Result<(), E>,
) -> Result<Restored, E> {
    if !is_vacant(into)? {
        return Err(RestoreError::NotEmpty { path: into.display().to_string() }.into());
    }
    sweep_staging(into);
    let staging = staging_for(into);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io("remove", &staging))?;
    }
    create_private_dir(&staging).map_err(io("create", &staging))?;
    let built = build(backup, identities, &staging, options, replay);
    let outcome = built.and_then(|restored| place(restored, &staging, into, options.dry_run).map_err(E::from));
    if outcome.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    outcome
}

/// Renames the checked `staging` dir to `into` (or removes it after a dry run).
fn place(mut restored: Restored, staging: &Path, into: &Path, dry_run: bool) -> Result<Restored, RestoreError> {
    if dry_run {
        std::fs::remove_dir_all(staging).map_err(io("remove", staging))?;
        restored.into = into.to_path_buf();
        restored.key = None;
        return Ok(restored);
    }
    if into.exists() {
        std::fs::remove_dir(into).map_err(io("replace the empty directory", into))?;
    }
    std::fs::rename(staging, into).map_err(io("rename the restored data dir to", into))?;
    backup::sealed::sync_dir(into).map_err(BackupError::from)?;
    restored.into = into.to_path_buf();
    restored.key = restored.key.map(|_| default_key_path(into));
    Ok(restored)
}

/// Imports, replays, finishes and verifies into `dir`.
/// Without a backup the store starts empty (a point-in-time restore from the
/// journal's first segment) and its master key is the one of `identities`
/// that opens the restored store's signing key.
fn build<E: From<RestoreError>>(
    backup: Option<&BackupInfo>,
    identities: &[age::x25519::Identity],
    dir: &Path,
    options: &RestoreOptions<'_>,
    replay: impl FnOnce(&Restore<'_>) -> Result<(), E>,
) -> Result<Restored, E> {
    let store = Store::open(&crate::config::store_path_in(dir), options.clock.clone()).map_err(RestoreError::from)?;
    let restore = store.restore(&SystemContext::new(Task::Restore)).map_err(RestoreError::from)?;
    let imported = match backup {
        Some(b) => backup::import_with(b, identities, &options.trust, &restore, options.progress)
            .map_err(RestoreError::from)?,
        None => backup::Imported { rows: 0, keys: vec![] },
    };
    check_master_key(&imported.keys, options)?;
    replay(&restore)?;
    let head_seq = restore.finish().map_err(RestoreError::from)?;
    // Erasures recorded after this backup or instant: gone before anything reads the store.
    if let Some(ledger) = options.ledger.as_deref().or(backup.and_then(|b| b.path.parent())) {
        crate::lifecycle::ledger::reapply(&store, ledger).map_err(RestoreError::from)?;
    }
    let master = match imported.keys.first() {
        Some(key) => Some(key.clone()),
        None => master_key_of(&store, identities).map_err(RestoreError::from)?,
    };
    finish(dir, &store, backup, imported.rows, head_seq, master.as_ref(), options).map_err(E::from)
}

/// The identity among `identities` that opens the store's sealed signing
/// key: the master key the store's secrets are sealed to.
fn master_key_of(
    store: &Store,
    identities: &[age::x25519::Identity],
) -> Result<Option<age::x25519::Identity>, StoreError> {
    let sealed = store.read(|r| r.get_system(&crate::store::SYSTEM_SECRETS, signing::SECRET_NAME.as_bytes()))?;
    let Some(sealed) = sealed else { return Ok(None) };
    Ok(identities.iter().find(|id| age::decrypt(*id, &sealed).is_ok()).cloned())
}

/// Refuses a carried master key the configured instance does not know.
fn check_master_key(carried: &[age::x25519::Identity], options: &RestoreOptions<'_>) -> Result<(), RestoreError> {
    let (Some(known), Some(key)) = (&options.known_keys, carried.first()) else { return Ok(()) };
    let public = key.to_public().to_string();
    if options.accept_master_key || known.contains(&public) {
        return Ok(());
    }
    Err(RestoreError::UnknownMasterKey { carried: public, known: known.join(", ") })
}

/// Checks a built store (schema, the base's rows, audit chains), rebuilds its
/// search index and writes its master key: what both restore paths end with.
pub(crate) fn finish(
    dir: &Path,
    store: &Store,
    backup: Option<&BackupInfo>,
    rows: u64,
    head_seq: u64,
    master_key: Option<&age::x25519::Identity>,
    options: &RestoreOptions<'_>,
) -> Result<Restored, RestoreError> {
    let (orgs, audit_events) = check(store, backup)?;
    let indexed = if options.dry_run { 0 } else { rebuild_search_index(dir, store)? };
    let key = match master_key {
        Some(identity) => {
            let path = default_key_path(dir);
            write_identity(&path, identity).map_err(|e| RestoreError::Io {
                action: "write",
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            Some(path)
        }
        None => None,
    };
    Ok(Restored {
        into: dir.to_path_buf(),
        rows,
        head_seq,
        schema_version: store.schema_version()?.unwrap_or(SCHEMA_VERSION),
        orgs,
        audit_events,
        indexed,
        key,
        dry_run: options.dry_run,
    })
}

/// The restored store reads at this docket's schema, holds the backup's rows
/// and every org's audit chain is intact; returns (orgs, events).
fn check(store: &Store, backup: Option<&BackupInfo>) -> Result<(usize, u64), RestoreError> {
    let schema = store.schema_version()?;
    if schema != Some(SCHEMA_VERSION) {
        return Err(RestoreError::Verify {
            problem: format!("its schema is {schema:?} after migration, not {SCHEMA_VERSION}"),
        });
    }
    if let Some(backup) = backup {
        check_base(store, backup, schema)?;
    }
    verify_audit_chains(store)
}

/// The store holds at least the backup's journal, and exactly its rows when nothing was replayed.
fn check_base(store: &Store, backup: &BackupInfo, schema: Option<u32>) -> Result<(), RestoreError> {
    if store.journal_head()? < backup.manifest.head_seq {
        return Err(RestoreError::Verify {
            problem: format!("its journal ends before seq {}, the backup's head", backup.manifest.head_seq),
        });
    }
    // Nothing replayed or migrated: the store must hold exactly the rows the
    // backup recorded (read back from disk, not as imported).
    let (head, parts) = store.digests()?;
    if head == backup.manifest.head_seq
        && schema == Some(backup.manifest.schema_version)
        && parts != backup.manifest.parts
    {
        return Err(RestoreError::Verify {
            problem: "its rows differ from the backup's per-org-and-table digests".into(),
        });
    }
    Ok(())
}

/// Every org's audit chain is intact; returns (orgs, events).
fn verify_audit_chains(store: &Store) -> Result<(usize, u64), RestoreError> {
    let ctx = OrgTaskContext::new(OrgTask::AuditVerify);
    let orgs = store.list_orgs()?;
    let mut events = 0;
    for org in &orgs {
        match audit::verify(store, &ctx.org_scope(org.id))? {
            Ok(n) => events += n,
            Err(tamper) => {
                return Err(RestoreError::Verify {
                    problem: format!("the audit chain of {} is broken: {tamper}", org.slug),
                });
            }
        }
    }
    Ok((orgs.len(), events))
}

/// Builds the search indexes of a restored data dir from its store, so the
/// restored appliance answers searches at once; returns how many orgs' indexes.
fn rebuild_search_index(dir: &Path, store: &Store) -> Result<u64, RestoreError> {
    let built = crate::search::rebuild_all(dir, store).map_err(|e| RestoreError::Io {
        action: "build the search index in",
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(built.len() as u64)
}

/// `--replace`: with the service stopped, moves the configured data dir
/// aside (`<data_dir>.before-restore-<time>`, kept) and the restored one into
/// its place; returns where the old one went.
pub fn replace(data_dir: &Path, restored: &Path, clock: &Clock) -> Result<PathBuf, RestoreError> {
    let stamp = crate::timestamp::Timestamp::from_micros(clock.now_micros()).to_rfc3339().replace(':', "");
    let kept = crate::secrets::with_suffix(data_dir, &format!("before-restore-{stamp}"));
    if data_dir.exists() {
        std::fs::rename(data_dir, &kept).map_err(io("move aside", data_dir))?;
    }
    if let Err(e) = std::fs::rename(restored, data_dir) {
        let _ = std::fs::rename(&kept, data_dir);
        return Err(io("move into place", data_dir)(e));
    }
    backup::sealed::sync_dir(data_dir).map_err(BackupError::from)?;
    Ok(kept)
}

/// `docket restore` as the operator types it.
pub struct Request {
    pub backup: PathBuf,
    /// The new data dir; with `replace`, a temp dir beside the configured one.
    pub into: Option<PathBuf>,
    pub dry_run: bool,
    pub replace: bool,
    /// Offline identity files (`--key FILE`).
    pub keys: Vec<PathBuf>,
    /// The instance's config, when given: its master key (and `.previous`)
    /// open backups too, its `signing.pub` pins the signer, and `--replace`
    /// swaps its data dir.
    pub config: Option<crate::config::Config>,
    /// Pinned signers (`--trust`: a public key or a fingerprint).
    pub trust: Vec<String>,
    /// Read unsigned legacy files (`--allow-unsigned`).
    pub allow_unsigned: bool,
    /// Install a carried master key the instance does not know (`--accept-master-key`).
    pub accept_master_key: bool,
}

/// The signers a restore believes: every `--trust`, and the instance's own
/// (`<data_dir>/signing.pub`) when a config is given. None pinned is an
/// error naming the fix, unless only legacy files are to be read.
pub fn trust(pins: &[String], allow_unsigned: bool, config: Option<&crate::config::Config>) -> Result<Trust, String> {
    let mut parsed = pins.iter().map(|p| Pin::parse(p)).collect::<Result<Vec<_>, _>>()?;
    if let Some(own) = config.and_then(|c| signing::pinned(&c.data_dir)) {
        parsed.push(Pin::Key(own));
    }
    if parsed.is_empty() && !allow_unsigned {
        return Err("no backup signer is pinned, so no backup can be trusted\n  fix: pass --trust with the signer's fingerprint (printed at the appliance's first start and by `docket doctor`, kept with the offline key), or --config of the instance that wrote the backups".into());
    }
    Ok(Trust::pins(parsed).allowing_unsigned(allow_unsigned))
}

/// The identities a restore may open backups with: every `--key` file, the
/// configured master key and its `.previous`, then the retired keys of the
/// backup directory's keyring (when it verifies against `trust`).
pub fn identities(request: &Request, backup_dir: &Path, trust: &Trust) -> Result<Vec<age::x25519::Identity>, String> {
    use crate::secrets::{KeySource, Keyring, key_candidates};
    let mut given = vec![];
    for path in &request.keys {
        given.push(Keyring::load(&[KeySource::File(path.clone())]).map_err(|e| e.to_string())?.identity().clone());
    }
    if let Some(config) = &request.config
        && let Ok(keyring) = Keyring::load(&key_candidates(&config.data_dir, config.keys.master_key_file.as_deref()))
    {
        given.extend(backup::appliance_keys(&keyring));
    }
    if given.is_empty() {
        return Err("no key to open the backup with\n  fix: pass an offline key with --key FILE, or --config for the appliance's master key".into());
    }
    backup::opening_keys(backup_dir, &given, trust).map_err(|e| e.to_string())
}

/// The options of `request`: its trust, and with a config, the master keys
/// the instance knows (`identities`: its own, `.previous` and the keyring's).
pub fn options_for<'a>(
    request: &Request,
    trust: Trust,
    identities: &[age::x25519::Identity],
    clock: Clock,
    progress: &'a dyn Progress,
) -> RestoreOptions<'a> {
    let known = request.config.as_ref().map(|_| identities.iter().map(|k| k.to_public().to_string()).collect());
    RestoreOptions {
        dry_run: request.dry_run,
        clock,
        progress,
        trust,
        known_keys: known,
        accept_master_key: request.accept_master_key,
        ledger: None,
    }
}

/// The lock `docket serve` holds for its whole life in `<data_dir>/locks/`:
/// whether the service runs is decided by it, never by the control socket.
pub const SERVICE_LOCK: &str = "service";

/// Refuses while a service holds `data_dir`'s life lock.
fn refuse_if_running(data_dir: &Path) -> Result<(), RestoreError> {
    use crate::lifecycle::scheduler::ExclusionLock;
    let lock = data_dir.join("locks").join(format!("{SERVICE_LOCK}.lock"));
    if !lock.exists() {
        return Ok(());
    }
    match ExclusionLock::try_take(data_dir, SERVICE_LOCK) {
        Ok(Some(_probe)) => Ok(()),
        Ok(None) => Err(RestoreError::Running {
            holder: ExclusionLock::holder(data_dir, SERVICE_LOCK),
            lock: lock.display().to_string(),
        }),
        Err(e) => Err(io("check the service lock", &lock)(e)),
    }
}

/// Runs a `docket restore` request; returns the operator's report.
pub fn command(request: &Request, progress: &dyn Progress) -> Result<String, String> {
    let trust = trust(&request.trust, request.allow_unsigned, request.config.as_ref())?;
    let info = backup::archive::open(&request.backup).map_err(|e| e.to_string())?;
    let dir = info.path.parent().map(Path::to_path_buf).unwrap_or_default();
    let keys = identities(request, &dir, &trust)?;
    let clock = Clock::system();
    let options = options_for(request, trust, &keys, clock.clone(), progress);
    let whole = |_: &Restore<'_>| Ok::<(), RestoreError>(());
    if !request.replace {
        let into = request.into.as_ref().ok_or("name the new data dir with --into DIR (or use --replace)")?;
        return restore(Some(&info), &keys, into, &options, whole).map(|r| r.describe()).map_err(|e| e.to_string());
    }
    let config = request.config.as_ref().ok_or("--replace needs --config (or --data-dir) naming the instance")?;
    refuse_if_running(&config.data_dir).map_err(|e| e.to_string())?;
    let _lock = crate::lifecycle::scheduler::ExclusionLock::take(
        &config.data_dir,
        crate::lifecycle::scheduler::BACKUP_RESTORE,
        "docket restore --replace",
    )?;
    let staging = crate::secrets::with_suffix(&config.data_dir, &format!("restored-{}", std::process::id()));
    let restored = restore(Some(&info), &keys, &staging, &options, whole).map_err(|e| e.to_string())?;
    if request.dry_run {
        return Ok(restored.describe());
    }
    refuse_if_running(&config.data_dir).map_err(|e| e.to_string())?;
    let kept = replace(&config.data_dir, &staging, &clock).map_err(|e| e.to_string())?;
    let restored = Restored {
        into: config.data_dir.clone(),
        key: restored.key.map(|_| default_key_path(&config.data_dir)),
        ..restored
    };
    Ok(format!("{}the previous data dir is kept at {}\n", restored.describe(), kept.display()))
}
