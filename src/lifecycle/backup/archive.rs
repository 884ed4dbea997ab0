//! The backup archive: one sealed file of every row of the store, and its
//! manifest beside it.
//!
//! `backup-<created>-<id>.sealed` holds, in [`sealed`] frames, each starting
//! with a kind byte: `K` the appliance's master key(s) at the export (newest
//! first: the restored data dir needs the key its sealed secrets open with),
//! `R` rows of one consistent export, batched (`section_len:u8 | section |
//! key_len:u32 | key | value_len:u32 | value`, repeated), and last `M` the
//! manifest as JSON (so it is authenticated with the rows).
//! `backup-<created>-<id>.manifest.json`
//! is the same manifest in clear plus the sealed file's size and SHA-256, so
//! `docket backup list` needs no key, signed by the appliance's signing key
//! (`signer`, `signature`: Ed25519 over the compact JSON of the manifest with
//! an empty `signature`); a restore checks it before anything else. The sealed file is renamed into place
//! before its manifest is written: a manifest names only a complete file.
use super::BackupError;
use super::sealed::{self, SealError, SealedReader, SealedWriter};
use super::signing::{PublicKey, Signer, Trust};
use crate::store::{Digester, PartDigest, RawRow, Restore, Section, Store, StoreError, SystemContext, Task};
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The archive format this docket writes and reads.
pub const FORMAT: &str = "docket-backup/1";
const SEALED_SUFFIX: &str = ".sealed";
const MANIFEST_SUFFIX: &str = ".manifest.json";
/// Rows are batched into frames of about this size (and imported per frame).
const FRAME_BYTES: usize = 8 * 1024 * 1024;
const KEYS: u8 = b'K';
const ROWS: u8 = b'R';
const MANIFEST: u8 = b'M';

/// What a backup holds; stored in clear beside it and sealed inside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// The docket version that wrote it.
    pub docket_version: String,
    /// The store's schema version at the export.
    pub schema_version: u32,
    pub created: Timestamp,
    /// The journal head of the exported snapshot: the backup is the store as of this seq.
    pub head_seq: u64,
    /// When that seq was committed (none for a store that never wrote).
    pub head_time: Option<Timestamp>,
    /// The first journal entry the backup holds (the live journal may be pruned).
    pub first_seq: Option<u64>,
    /// Rows exported (meta, tables and journal).
    pub rows: u64,
    /// Row counts and content hashes per org and table: what a restore must reproduce.
    pub parts: BTreeMap<String, PartDigest>,
    /// The public keys (`age1…`) the file is sealed to.
    pub recipients: Vec<String>,
    /// The sealed file's name, size and SHA-256 (empty inside the sealed copy).
    #[serde(default)]
    pub file: String,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub sha256: String,
    /// The signing key (`ed25519:…`) and its signature of this manifest
    /// (empty in a legacy backup and inside the sealed copy).
    #[serde(default)]
    pub signer: String,
    #[serde(default)]
    pub signature: String,
}

const MANIFEST_DOMAIN: &str = "docket-backup-manifest";

impl Manifest {
    /// The part the sealed file carries: everything but the file's own figures.
    fn sealed_part(&self) -> Manifest {
        Manifest {
            file: String::new(),
            bytes: 0,
            sha256: String::new(),
            signer: String::new(),
            signature: String::new(),
            ..self.clone()
        }
    }

    /// What the signature covers: the compact JSON with an empty signature.
    fn signed_bytes(&self) -> Result<Vec<u8>, BackupError> {
        serde_json::to_vec(&Manifest { signature: String::new(), ..self.clone() })
            .map_err(|e| BackupError::Io(e.to_string()))
    }

    fn sign(&mut self, signer: &Signer) -> Result<(), BackupError> {
        self.signer = signer.public().to_string();
        self.signature = hex::encode(signer.sign(MANIFEST_DOMAIN, &self.signed_bytes()?));
        Ok(())
    }
}

/// Checks the clear manifest's signature against `trust` (at `path`, for messages).
pub fn verify_manifest(path: &Path, manifest: &Manifest, trust: &Trust) -> Result<(), BackupError> {
    let shown = path.display().to_string();
    if manifest.signature.is_empty() {
        if trust.allows_unsigned() {
            return Ok(());
        }
        return Err(SealError::Unsigned { path: shown }.into());
    }
    if trust.is_empty() {
        return Err(SealError::NoTrust { path: shown }.into());
    }
    let signer = PublicKey::parse(&manifest.signer).ok_or_else(|| SealError::BadSignature { path: shown.clone() })?;
    if !trust.accepts(&signer) {
        return Err(SealError::UnknownSigner {
            path: shown,
            signer: signer.to_string(),
            fingerprint: signer.fingerprint(),
            trusted: trust.describe(),
        }
        .into());
    }
    let signature = hex::decode(&manifest.signature).unwrap_or_default();
    if !signer.verifies(MANIFEST_DOMAIN, &manifest.signed_bytes()?, &signature) {
        return Err(SealError::BadSignature { path: shown }.into());
    }
    Ok(())
}

/// A backup found in a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupInfo {
    /// The sealed file.
    pub path: PathBuf,
    pub manifest: Manifest,
}

impl BackupInfo {
    /// The manifest file beside the sealed one.
    pub fn manifest_path(&self) -> PathBuf {
        manifest_path_for(&self.path)
    }
}

fn manifest_path_for(sealed: &Path) -> PathBuf {
    let name = sealed.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    sealed.with_file_name(format!("{}{MANIFEST_SUFFIX}", name.trim_end_matches(SEALED_SUFFIX)))
}

/// Lists the backups in `dir`, oldest first. Temp files and sealed files
/// without a manifest (a run that died between the two renames) are not backups.
pub fn list(dir: &Path) -> Result<Vec<BackupInfo>, BackupError> {
    let entries = std::fs::read_dir(dir).map_err(|e| BackupError::dir(dir, &e))?;
    let mut out = vec![];
    for entry in entries {
        let entry = entry.map_err(|e| BackupError::dir(dir, &e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if sealed::is_temp(&name) || !name.ends_with(MANIFEST_SUFFIX) {
            continue;
        }
        match read_manifest(&entry.path()) {
            Ok(manifest) => out.push(BackupInfo { path: dir.join(&manifest.file), manifest }),
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable backup manifest"),
        }
    }
    out.sort_by_key(|b| (b.manifest.created, b.manifest.head_seq));
    Ok(out)
}

fn read_manifest(path: &Path) -> Result<Manifest, BackupError> {
    let bad = |reason: String| BackupError::Manifest { path: path.display().to_string(), reason };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    if manifest.format != FORMAT {
        return Err(bad(format!("its format is `{}`; this docket reads `{FORMAT}`", manifest.format)));
    }
    if manifest.file.contains('/') || !manifest.file.ends_with(SEALED_SUFFIX) {
        return Err(bad(format!("it names `{}`, not a sealed file beside it", manifest.file)));
    }
    Ok(manifest)
}

/// The backup at `path`: a sealed file or its manifest.
pub fn open(path: &Path) -> Result<BackupInfo, BackupError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let sealed = if name.ends_with(MANIFEST_SUFFIX) {
        path.with_file_name(format!("{}{SEALED_SUFFIX}", name.trim_end_matches(MANIFEST_SUFFIX)))
    } else {
        path.to_path_buf()
    };
    let manifest = read_manifest(&manifest_path_for(&sealed))?;
    Ok(BackupInfo { path: sealed, manifest })
}

/// Encodes rows into a frame.
struct Batch {
    bytes: Vec<u8>,
}

impl Default for Batch {
    fn default() -> Self {
        Batch { bytes: vec![ROWS] }
    }
}

impl Batch {
    fn is_full(&self) -> bool {
        self.bytes.len() >= FRAME_BYTES
    }

    fn take(&mut self) -> Option<Vec<u8>> {
        (self.bytes.len() > 1).then(|| std::mem::replace(&mut self.bytes, vec![ROWS]))
    }

    fn push(&mut self, row: &RawRow<'_>) {
        let name = row.section.name();
        self.bytes.push(name.len() as u8);
        self.bytes.extend_from_slice(name.as_bytes());
        for part in [row.key, row.value] {
            self.bytes.extend_from_slice(&(part.len() as u32).to_le_bytes());
            self.bytes.extend_from_slice(part);
        }
    }
}

/// Decodes the rows of one frame.
fn decode_rows<'a>(path: &Path, mut frame: &'a [u8]) -> Result<Vec<RawRow<'a>>, BackupError> {
    let corrupt = |problem: &str| BackupError::Mismatch { path: path.display().to_string(), problem: problem.into() };
    let mut rows = vec![];
    while let Some((&len, rest)) = frame.split_first() {
        let (name, rest) = rest.split_at_checked(len as usize).ok_or_else(|| corrupt("a row is cut short"))?;
        let name = std::str::from_utf8(name).map_err(|_| corrupt("a section name is not UTF-8"))?;
        let section = Section::named(name).ok_or_else(|| BackupError::Newer {
            path: path.display().to_string(),
            problem: format!("it holds a table `{name}` this docket does not know"),
        })?;
        let (key, rest) = take_sized(rest).ok_or_else(|| corrupt("a row key is cut short"))?;
        let (value, rest) = take_sized(rest).ok_or_else(|| corrupt("a row value is cut short"))?;
        rows.push(RawRow { section, key, value });
        frame = rest;
    }
    Ok(rows)
}

fn take_sized(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    rest.split_at_checked(u32::from_le_bytes(*len) as usize)
}

/// Reports how far a long job is; the CLI shows a bar, the service logs.
pub trait Progress {
    /// `total` bytes are expected (an estimate may be exceeded).
    fn start(&self, what: &str, total: u64);
    fn advance(&self, bytes: u64);
    fn finish(&self);
}

/// Progress nobody watches.
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// How a backup is written: where, to whom, and (tests) a failing disk.
pub struct WriteOptions<'a> {
    pub dir: &'a Path,
    pub recipients: &'a [age::x25519::Recipient],
    /// The appliance's master key (and a previous one), carried inside so a
    /// restore on a new machine gets the key the store's secrets are sealed to.
    pub keys: &'a [age::x25519::Identity],
    /// The appliance's signing key: it signs the sealed file and its manifest.
    pub signer: &'a Signer,
    pub created: Timestamp,
    pub progress: &'a dyn Progress,
    /// Fail like a full disk after this many bytes (failure-injection tests).
    pub fail_after: Option<u64>,
}

/// Exports `store` (one read transaction) into a new sealed backup in `dir`.
pub fn write(store: &Store, options: &WriteOptions<'_>) -> Result<BackupInfo, BackupError> {
    let ctx = SystemContext::new(Task::Backup);
    let total = std::fs::metadata(store.path()).map(|m| m.len()).unwrap_or(0);
    write_rows(options, total, |visit| store.export(&ctx, visit))
}

/// What an export hands each row to (as `Store::export` does).
pub type Visit<'v> = dyn FnMut(RawRow<'_>) -> Result<(), StoreError> + 'v;

/// Writes a backup of the rows `export` visits (one consistent snapshot, about
/// `total` bytes; it returns the snapshot's journal head); [`write`]
/// passes `Store::export`. Tests pass rows of a store written by an older docket.
#[doc(hidden)]
pub fn write_rows(
    options: &WriteOptions<'_>,
    total: u64,
    export: impl FnOnce(&mut Visit<'_>) -> Result<u64, StoreError>,
) -> Result<BackupInfo, BackupError> {
    let stamp = options.created.to_rfc3339().replace(['-', ':'], "");
    let stamp = stamp.split(['.', 'Z']).next().unwrap_or_default().to_string();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("backup-{stamp}Z-{}{SEALED_SUFFIX}", &id[..8]);
    let path = options.dir.join(&name);
    let mut writer = match options.fail_after {
        Some(n) => SealedWriter::create_failing_after(&path, options.recipients, options.signer, n)?,
        None => SealedWriter::create(&path, options.recipients, options.signer)?,
    };
    writer.frame(&keys_frame(options.keys))?;
    options.progress.start("backup", total);
    let mut state = ExportState::default();
    let mut failure = None;
    let head_seq = export(&mut |row| {
        state.add(&row)?;
        if state.batch.is_full()
            && let Some(frame) = state.batch.take()
        {
            options.progress.advance(frame.len() as u64);
            if let Err(e) = writer.frame(&frame) {
                failure = Some(e);
                return Err(StoreError::Io("the backup write failed".into()));
            }
        }
        Ok(())
    });
    if let Some(e) = failure {
        return Err(e.into());
    }
    let head_seq = head_seq?;
    if let Some(frame) = state.batch.take() {
        options.progress.advance(frame.len() as u64);
        writer.frame(&frame)?;
    }
    let mut manifest = Manifest {
        format: FORMAT.into(),
        docket_version: env!("CARGO_PKG_VERSION").into(),
        schema_version: state.schema.unwrap_or(crate::store::SCHEMA_VERSION),
        created: options.created,
        head_seq,
        head_time: state.head_time.map(Timestamp::from_micros),
        first_seq: state.first_seq,
        rows: state.rows,
        parts: state.digester.finish(),
        recipients: options.recipients.iter().map(ToString::to_string).collect(),
        file: name,
        bytes: 0,
        sha256: String::new(),
        signer: String::new(),
        signature: String::new(),
    };
    // Its figures are known only now, so the sealed copy is the last frame;
    // `import` checks it against the clear copy.
    let mut sealed_manifest = vec![MANIFEST];
    serde_json::to_writer(&mut sealed_manifest, &manifest.sealed_part()).map_err(|e| BackupError::Io(e.to_string()))?;
    writer.frame(&sealed_manifest)?;
    let file = writer.finish()?;
    manifest.bytes = file.bytes;
    manifest.sha256 = file.sha256;
    manifest.sign(options.signer)?;
    let manifest_path = manifest_path_for(&file.path);
    write_manifest(&manifest_path, &manifest)?;
    options.progress.finish();
    Ok(BackupInfo { path: file.path, manifest })
}

fn keys_frame(keys: &[age::x25519::Identity]) -> Vec<u8> {
    use age::secrecy::ExposeSecret as _;
    let mut frame = vec![KEYS];
    for key in keys {
        frame.extend_from_slice(key.to_string().expose_secret().as_bytes());
        frame.push(b'\n');
    }
    frame
}

/// Writes the clear manifest atomically (0600; temp, fsync, rename, fsync dir).
fn write_manifest(path: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    let text = serde_json::to_vec_pretty(manifest).map_err(|e| BackupError::Io(e.to_string()))?;
    crate::secrets::write_private_file(path, &text).map_err(|e| BackupError::dir(path, &e))
}

/// What the export saw, for the manifest.
#[derive(Default)]
struct ExportState {
    batch: Batch,
    rows: u64,
    digester: Digester,
    schema: Option<u32>,
    head_time: Option<i64>,
    first_seq: Option<u64>,
}

impl ExportState {
    fn add(&mut self, row: &RawRow<'_>) -> Result<(), StoreError> {
        match row.section {
            Section::Table(table) => self.digester.add(&table, row.key, row.value),
            Section::Journal if self.first_seq.is_none() => {
                self.first_seq = row.key.first_chunk::<8>().map(|k| u64::from_be_bytes(*k));
            }
            Section::Meta if row.key == b"schema_version" => {
                self.schema = row.value.first_chunk::<4>().map(|v| u32::from_le_bytes(*v));
            }
            _ => {}
        }
        if let Some((_, time)) = row.journal_tail()? {
            self.head_time = Some(time).filter(|t| *t != i64::MIN);
        }
        self.rows += 1;
        self.batch.push(row);
        Ok(())
    }
}

/// Checks the manifest's signature against `trust`, then the sealed file
/// against the manifest's size and SHA-256 and its own signature: nothing of a
/// backup is used before this passes.
pub fn check_file(info: &BackupInfo, trust: &Trust) -> Result<(), BackupError> {
    verify_manifest(&info.manifest_path(), &info.manifest, trust)?;
    let shown = info.path.display().to_string();
    let len = std::fs::metadata(&info.path).map_err(|e| BackupError::dir(&info.path, &e))?.len();
    if len != info.manifest.bytes {
        return Err(BackupError::Mismatch {
            path: shown,
            problem: format!("it has {len} bytes, its manifest says {} (truncated or replaced)", info.manifest.bytes),
        });
    }
    if sealed::file_sha256(&info.path)? != info.manifest.sha256 {
        return Err(BackupError::Mismatch { path: shown, problem: "its SHA-256 differs from its manifest's".into() });
    }
    sealed::verify_file(&info.path, trust)?;
    Ok(())
}

/// What [`import_with`] brought in.
pub struct Imported {
    pub rows: u64,
    /// The master key(s) the backup carries, newest first.
    pub keys: Vec<age::x25519::Identity>,
}

/// Imports every row of the backup into `restore` (a new, empty store):
/// checks the file's checksum, decrypts with the first of `identities` it is
/// sealed to, and checks the sealed manifest equals the clear one and the
/// rows their counts and digests. Returns the rows imported. On an error the
/// target store is partial: the caller discards it.
pub fn import(
    info: &BackupInfo,
    identities: &[age::x25519::Identity],
    trust: &Trust,
    restore: &Restore<'_>,
) -> Result<u64, BackupError> {
    import_with(info, identities, trust, restore, &Quiet).map(|i| i.rows)
}

/// [`import`], reporting progress and returning the carried keys.
pub fn import_with(
    info: &BackupInfo,
    identities: &[age::x25519::Identity],
    trust: &Trust,
    restore: &Restore<'_>,
    progress: &dyn Progress,
) -> Result<Imported, BackupError> {
    check_file(info, trust)?;
    let path = &info.path;
    let mismatch = |problem: &str| BackupError::Mismatch { path: path.display().to_string(), problem: problem.into() };
    if info.manifest.schema_version > crate::store::SCHEMA_VERSION {
        return Err(BackupError::Newer {
            path: path.display().to_string(),
            problem: format!(
                "it is of schema {}; this docket reads schema {} at most",
                info.manifest.schema_version,
                crate::store::SCHEMA_VERSION
            ),
        });
    }
    let mut reader = SealedReader::open(path, identities, trust)?;
    progress.start("restore", info.manifest.bytes);
    let (mut rows, mut digester, mut keys, mut sealed) = (0u64, Digester::default(), vec![], None);
    while let Some(frame) = reader.next_frame()? {
        let Some((&kind, body)) = frame.split_first() else { return Err(mismatch("it holds an empty frame")) };
        if sealed.is_some() {
            return Err(mismatch("it has frames after its manifest"));
        }
        match kind {
            KEYS => keys = parse_keys(body).ok_or_else(|| mismatch("its key frame does not read"))?,
            ROWS => {
                let decoded = decode_rows(path, body)?;
                for row in &decoded {
                    if let Section::Table(table) = row.section {
                        digester.add(&table, row.key, row.value);
                    }
                }
                rows += restore.import(decoded)?;
                progress.advance(frame.len() as u64);
            }
            MANIFEST => {
                sealed = Some(
                    serde_json::from_slice::<Manifest>(body)
                        .map_err(|e| mismatch(&format!("its sealed manifest does not read: {e}")))?,
                );
            }
            other => return Err(mismatch(&format!("it holds a frame of unknown kind {other}"))),
        }
    }
    let sealed = sealed.ok_or_else(|| mismatch("it ends without its manifest"))?;
    if sealed != info.manifest.sealed_part() {
        return Err(mismatch("the manifest beside it differs from the one sealed inside it (edited or swapped)"));
    }
    if rows != sealed.rows || digester.finish() != sealed.parts {
        return Err(mismatch(&format!("its rows ({rows}) do not match the counts and digests of its manifest")));
    }
    progress.finish();
    Ok(Imported { rows, keys })
}

fn parse_keys(body: &[u8]) -> Option<Vec<age::x25519::Identity>> {
    let text = std::str::from_utf8(body).ok()?;
    text.lines().filter(|l| !l.is_empty()).map(|l| l.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::store::{OrgId, OrgTask, OrgTaskContext, SECRETS, WALLS};

    fn store_with_rows(path: &Path) -> Store {
        let store = Store::open(path, Clock::system()).unwrap();
        let ctx = OrgTaskContext::new(OrgTask::Test);
        for org in 1..=2u64 {
            let scope = ctx.org_scope(OrgId(org));
            for n in 0..50u32 {
                store.write(|w| w.put(&scope, &WALLS, &n.to_be_bytes(), format!("wall {org}/{n}").as_bytes())).unwrap();
            }
            store.write(|w| w.put(&scope, &SECRETS, b"s", b"sealed")).unwrap();
        }
        store
    }

    fn signer() -> &'static Signer {
        static SIGNER: std::sync::OnceLock<Signer> = std::sync::OnceLock::new();
        SIGNER.get_or_init(Signer::generate)
    }

    fn trust() -> Trust {
        Trust::signer(signer().public())
    }

    fn backup(store: &Store, dir: &Path, to: &[age::x25519::Recipient]) -> BackupInfo {
        let carried = age::x25519::Identity::generate();
        let options = WriteOptions {
            dir,
            recipients: to,
            keys: std::slice::from_ref(&carried),
            signer: signer(),
            created: Timestamp::from_micros(1_700_000_000_000_000),
            progress: &Quiet,
            fail_after: None,
        };
        write(store, &options).unwrap()
    }

    #[test]
    fn a_backup_imports_into_an_equal_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_rows(&dir.path().join("live.redb"));
        let key = age::x25519::Identity::generate();
        let info = backup(&store, dir.path(), &[key.to_public()]);
        let (head, parts) = store.digests().unwrap();
        assert_eq!((info.manifest.head_seq, &info.manifest.parts), (head, &parts));
        assert_eq!(info.manifest.parts["walls/org 2"].rows, 50);
        assert_eq!(info.manifest.first_seq, Some(1));
        assert_eq!(list(dir.path()).unwrap(), vec![info.clone()]);

        let copy = Store::open(&dir.path().join("copy.redb"), Clock::system()).unwrap();
        let restore = copy.restore(&SystemContext::new(Task::Test)).unwrap();
        let imported = import_with(&info, &[key], &trust(), &restore, &Quiet).unwrap();
        assert_eq!(imported.rows, info.manifest.rows);
        assert_eq!(imported.keys.len(), 1, "the master key travels inside");
        assert_eq!(restore.finish().unwrap(), head);
        assert_eq!(copy.digest().unwrap(), store.digest().unwrap());
    }

    #[test]
    fn an_edited_manifest_or_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_rows(&dir.path().join("live.redb"));
        let key = age::x25519::Identity::generate();
        let mut info = backup(&store, dir.path(), &[key.to_public()]);
        let target = |name: &str| Store::open(&dir.path().join(name), Clock::system()).unwrap();

        info.manifest.head_seq += 1;
        let t = target("a.redb");
        let e =
            import(&info, std::slice::from_ref(&key), &trust(), &t.restore(&SystemContext::new(Task::Test)).unwrap())
                .unwrap_err();
        assert!(e.to_string().contains("does not verify") && e.to_string().contains("manifest.json"), "{e}");

        info.manifest.head_seq -= 1;
        let bytes = std::fs::read(&info.path).unwrap();
        std::fs::write(&info.path, &bytes[..bytes.len() - 10]).unwrap();
        let t = target("b.redb");
        let e = import(&info, &[key], &trust(), &t.restore(&SystemContext::new(Task::Test)).unwrap()).unwrap_err();
        assert!(e.to_string().contains("truncated or replaced") && e.to_string().contains("fix:"), "{e}");
    }

    #[test]
    fn list_skips_temp_files_and_sealed_files_without_a_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_rows(&dir.path().join("live.redb"));
        let key = age::x25519::Identity::generate();
        let info = backup(&store, dir.path(), &[key.to_public()]);
        std::fs::write(dir.path().join(".backup-x.manifest.json.1.tmp"), b"{").unwrap();
        std::fs::write(dir.path().join("backup-y.sealed"), b"orphan").unwrap();
        assert_eq!(list(dir.path()).unwrap(), vec![info]);
        let e = list(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("fix:") && e.to_string().contains("missing"), "{e}");
    }
}
