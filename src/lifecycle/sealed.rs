//! Sealed files: the one container every backup file (and shipped journal
//! segment) is written in.
//!
//! A sealed file is a sequence of frames, zstd-compressed, then age-encrypted
//! to every recipient given (the appliance key and each offline key):
//!
//! ```text
//! age( zstd( MAGIC | frame* | trailer ) )
//! frame   = 0x01 | len:u32 LE | bytes
//! trailer = 0x00 | frames:u64 LE | sha256 of every frame (len and bytes)
//! ```
//!
//! age authenticates every 64 KiB chunk and marks the last one, so an altered
//! or cut file fails to decrypt; the trailer then proves every frame was read.
//!
//! age proves nothing about who wrote a file (the recipients are public), so
//! the ciphertext is followed by a signature block:
//!
//! ```text
//! file      = age-ciphertext | signature
//! signature = "DKSIG01\n" | signer public key (32) | Ed25519 signature (64)
//!             over "docket-sealed-file\0" | sha256(age-ciphertext)
//! ```
//!
//! A reader checks the signature against the pinned signers ([`Trust`])
//! before it decrypts anything; an unsigned file (written before docket signed
//! its files) is read only when the trust allows legacy files.
//! Files are written atomically: a temp name in the same directory
//! (`.NAME.PID.tmp`), fsync, rename, fsync of the directory. A file with its
//! final name is always complete; a temp file left by a killed process is
//! removed by [`sweep_temp`].
use super::signing::{PublicKey, Signer, Trust};
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"DKSEAL1\n";
const FRAME: u8 = 1;
const TRAILER: u8 = 0;
/// The largest frame a reader accepts (a guard against a forged length).
pub const MAX_FRAME: usize = 256 * 1024 * 1024;
/// zstd's level: fast, and most of a store is JSON that compresses well.
const LEVEL: i32 = 3;
const TEMP_SUFFIX: &str = ".tmp";
const SIG_MAGIC: &[u8; 8] = b"DKSIG01\n";
const SIG_BLOCK: usize = 8 + 32 + 64;
const SIG_DOMAIN: &str = "docket-sealed-file";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "cannot {action} {path}: {reason}\n  fix: check that the directory exists, is mounted and is writable by the docket user"
    )]
    Io { action: &'static str, path: String, reason: String },
    #[error(
        "the disk holding {path} is full; nothing was written under a final name\n  fix: free space there, or point backup.dir at a larger disk"
    )]
    NoSpace { path: String },
    #[error(
        "none of the keys given opens {path} (tried {tried})\n  fix: give the key it was sealed to: the appliance's master key (or its `.previous` after a rotation) or an offline key with `--key FILE`; the manifest lists the recipients' public keys"
    )]
    WrongKey { path: String, tried: String },
    #[error(
        "{path} is truncated: it ends before its trailer\n  fix: the copy is incomplete; copy it again from the backup share, or use an older backup (`docket backup list`)"
    )]
    Truncated { path: String },
    #[error("{path} is corrupt: {problem}\n  fix: use another copy or an older backup (`docket backup list`)")]
    Corrupt { path: String, problem: String },
    #[error("no recipient to seal {path} to\n  fix: docket needs its master key loaded to write backups")]
    NoRecipients { path: String },
    #[error(
        "{path} carries no signature: it is cut short, was written before docket signed its backups, or was planted by someone who can write the backup share\n  fix: if the copy is incomplete, copy it again; if it is a backup or segment of your own from before the upgrade, pass --allow-unsigned to read legacy files; otherwise move it out of the backup directory"
    )]
    Unsigned { path: String },
    #[error(
        "{path} is signed by {signer} (fingerprint {fingerprint}), which is not the pinned signer ({trusted})\n  fix: this appliance did not write it: move it out of the backup directory; if it is yours from another appliance, pass that appliance's signer with --trust"
    )]
    UnknownSigner { path: String, signer: String, fingerprint: String, trusted: String },
    #[error(
        "{path} carries a signature that does not verify: it was altered after it was signed\n  fix: use another copy of the file, or an older backup (`docket backup list`)"
    )]
    BadSignature { path: String },
    #[error(
        "no signer is pinned to check {path} against\n  fix: pass --trust with the backup signer's fingerprint (printed at the appliance's first start and by `docket doctor`), or --config of the instance that wrote it"
    )]
    NoTrust { path: String },
}

impl SealError {
    fn io(action: &'static str, path: &Path, e: &io::Error) -> SealError {
        if e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::QuotaExceeded {
            return SealError::NoSpace { path: path.display().to_string() };
        }
        SealError::Io { action, path: path.display().to_string(), reason: e.to_string() }
    }

    fn read(path: &Path, e: &io::Error) -> SealError {
        let path = path.display().to_string();
        match e.kind() {
            io::ErrorKind::UnexpectedEof => SealError::Truncated { path },
            io::ErrorKind::InvalidData => {
                SealError::Corrupt { path, problem: format!("it fails authentication ({e}): altered or cut short") }
            }
            _ => SealError::Io { action: "read", path, reason: e.to_string() },
        }
    }
}

/// A sealed file written under its final name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedFile {
    pub path: PathBuf,
    /// Size on disk.
    pub bytes: u64,
    /// SHA-256 (hex) of the file as written.
    pub sha256: String,
}

/// Hashes and counts what reaches the file; optionally fails like a full disk
/// after a budget (failure tests use [`SealedWriter::create_failing_after`]).
struct Counting<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
    budget: Option<u64>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(budget) = self.budget
            && self.bytes + buf.len() as u64 > budget
        {
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type Sink = zstd::stream::write::Encoder<'static, age::stream::StreamWriter<Counting<BufWriter<File>>>>;

/// Writes one sealed file; [`SealedWriter::finish`] gives it its final name.
/// Dropped unfinished, it removes its temp file.
pub struct SealedWriter {
    final_path: PathBuf,
    temp_path: PathBuf,
    signer: Signer,
    sink: Option<Sink>,
    frames: u64,
    plain: Sha256,
}

impl std::fmt::Debug for SealedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedWriter").field("final_path", &self.final_path).field("frames", &self.frames).finish()
    }
}

/// `.NAME.PID.tmp` beside `final_path`.
fn temp_path_for(final_path: &Path) -> PathBuf {
    let name = final_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    final_path.with_file_name(format!(".{name}.{}{TEMP_SUFFIX}", std::process::id()))
}

/// Whether `name` is a temp file of [`SealedWriter`] (never a finished file).
pub fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

impl SealedWriter {
    /// Starts a sealed file that will be named `final_path`, encrypted to every
    /// recipient in `recipients` and signed by `signer`.
    pub fn create(
        final_path: &Path,
        recipients: &[age::x25519::Recipient],
        signer: &Signer,
    ) -> Result<SealedWriter, SealError> {
        Self::create_with(final_path, recipients, signer, None)
    }

    /// [`SealedWriter::create`] whose writes fail as on a full disk once
    /// `bytes` have reached the file (failure-injection tests).
    #[doc(hidden)]
    pub fn create_failing_after(
        final_path: &Path,
        recipients: &[age::x25519::Recipient],
        signer: &Signer,
        bytes: u64,
    ) -> Result<SealedWriter, SealError> {
        Self::create_with(final_path, recipients, signer, Some(bytes))
    }

    fn create_with(
        final_path: &Path,
        recipients: &[age::x25519::Recipient],
        signer: &Signer,
        budget: Option<u64>,
    ) -> Result<SealedWriter, SealError> {
        if recipients.is_empty() {
            return Err(SealError::NoRecipients { path: final_path.display().to_string() });
        }
        let temp_path = temp_path_for(final_path);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp_path)
            .map_err(|e| SealError::io("create", &temp_path, &e))?;
        let mut writer = SealedWriter {
            final_path: final_path.to_path_buf(),
            temp_path,
            signer: signer.clone(),
            sink: None,
            frames: 0,
            plain: Sha256::new(),
        };
        let counting =
            Counting { inner: BufWriter::with_capacity(1 << 20, file), hash: Sha256::new(), bytes: 0, budget };
        let encryptor =
            age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient)).map_err(|e| {
                SealError::Io { action: "seal", path: final_path.display().to_string(), reason: e.to_string() }
            })?;
        let age = encryptor.wrap_output(counting).map_err(|e| SealError::io("write", &writer.temp_path, &e))?;
        let mut sink =
            zstd::stream::write::Encoder::new(age, LEVEL).map_err(|e| SealError::io("write", &writer.temp_path, &e))?;
        sink.write_all(MAGIC).map_err(|e| SealError::io("write", &writer.temp_path, &e))?;
        writer.sink = Some(sink);
        Ok(writer)
    }

    fn sink(&mut self) -> Result<&mut Sink, SealError> {
        self.sink.as_mut().ok_or_else(|| SealError::Io {
            action: "write",
            path: self.temp_path.display().to_string(),
            reason: "an earlier write failed".into(),
        })
    }

    /// Appends one frame.
    pub fn frame(&mut self, bytes: &[u8]) -> Result<(), SealError> {
        let len =
            u32::try_from(bytes.len()).ok().filter(|n| *n as usize <= MAX_FRAME).ok_or_else(|| SealError::Io {
                action: "write",
                path: self.final_path.display().to_string(),
                reason: format!("a frame of {} bytes is over the {MAX_FRAME}-byte limit", bytes.len()),
            })?;
        self.plain.update(len.to_le_bytes());
        self.plain.update(bytes);
        self.frames += 1;
        let temp = self.temp_path.clone();
        let sink = self.sink()?;
        let written = sink
            .write_all(&[FRAME])
            .and_then(|()| sink.write_all(&len.to_le_bytes()))
            .and_then(|()| sink.write_all(bytes));
        written.map_err(|e| {
            self.sink = None;
            SealError::io("write", &temp, &e)
        })
    }

    /// Writes the trailer, syncs, and renames the file to its final name.
    pub fn finish(mut self) -> Result<SealedFile, SealError> {
        let temp = self.temp_path.clone();
        let err = |e: io::Error| SealError::io("write", &temp, &e);
        let mut sink = self.sink.take().ok_or_else(|| SealError::Io {
            action: "write",
            path: temp.display().to_string(),
            reason: "an earlier write failed".into(),
        })?;
        let digest = std::mem::take(&mut self.plain).finalize();
        sink.write_all(&[TRAILER]).map_err(err)?;
        sink.write_all(&self.frames.to_le_bytes()).map_err(err)?;
        sink.write_all(&digest).map_err(err)?;
        let mut counting = sink.finish().map_err(err)?.finish().map_err(err)?;
        let signature = self.signer.sign(SIG_DOMAIN, &counting.hash.clone().finalize());
        counting.write_all(SIG_MAGIC).map_err(err)?;
        counting.write_all(&self.signer.public().0).map_err(err)?;
        counting.write_all(&signature).map_err(err)?;
        let Counting { inner, hash, bytes, .. } = counting;
        let file = inner.into_inner().map_err(|e| err(e.into_error()))?;
        file.sync_all().map_err(|e| SealError::io("sync", &temp, &e))?;
        drop(file);
        std::fs::rename(&temp, &self.final_path).map_err(|e| SealError::io("rename", &self.final_path, &e))?;
        sync_dir(&self.final_path)?;
        Ok(SealedFile { path: self.final_path.clone(), bytes, sha256: hex::encode(hash.finalize()) })
    }
}

impl Drop for SealedWriter {
    fn drop(&mut self) {
        // Finished: the temp name no longer exists and this is a no-op.
        let _ = std::fs::remove_file(&self.temp_path);
    }
}

/// Fsyncs the directory holding `path`, so a rename survives a power cut.
pub fn sync_dir(path: &Path) -> Result<(), SealError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| SealError::io("sync", dir, &e))
}

/// Removes temp files in `dir` left by processes that no longer run (a
/// killed backup); returns how many. Temp files of live processes are kept.
pub fn sweep_temp(dir: &Path) -> Result<usize, SealError> {
    sweep_dead(dir, |name| {
        is_temp(name)
            .then(|| name.trim_end_matches(TEMP_SUFFIX).rsplit('.').next())
            .flatten()
            .and_then(|p| p.parse().ok())
    })
}

/// Removes the entries of `dir` (files or directories) that `owner` names as
/// left by a process id that no longer runs; returns how many.
pub fn sweep_dead(dir: &Path, owner: impl Fn(&str) -> Option<u32>) -> Result<usize, SealError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(SealError::io("list", dir, &e)),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let Some(pid) = owner(&entry.file_name().to_string_lossy()) else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        let gone = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        if gone.is_ok() {
            tracing::warn!(path = %path.display(), "removed what an interrupted run left behind");
            removed += 1;
        }
    }
    Ok(removed)
}

type Source =
    BufReader<zstd::stream::read::Decoder<'static, BufReader<age::stream::StreamReader<BufReader<io::Take<File>>>>>>;

/// Who signed a sealed file (`None`: an unsigned legacy file the trust allowed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signed {
    pub signer: Option<PublicKey>,
    /// The bytes of age ciphertext before the signature block.
    ciphertext: u64,
}

/// Checks the signature of the sealed file at `path` against `trust` without
/// decrypting it: refuses an unsigned file (unless legacy files are allowed),
/// an altered one and one of a signer not pinned.
pub fn verify_file(path: &Path, trust: &Trust) -> Result<Signed, SealError> {
    use std::io::{Seek as _, SeekFrom};
    let shown = || path.display().to_string();
    let mut file = File::open(path).map_err(|e| SealError::io("open", path, &e))?;
    let len = file.metadata().map_err(|e| SealError::io("read", path, &e))?.len();
    let mut block = [0u8; SIG_BLOCK];
    let signed = len >= SIG_BLOCK as u64
        && file
            .seek(SeekFrom::Start(len - SIG_BLOCK as u64))
            .and_then(|_| file.read_exact(&mut block))
            .map_err(|e| SealError::read(path, &e))
            .map(|()| block.starts_with(SIG_MAGIC))?;
    if !signed {
        if trust.allows_unsigned() {
            tracing::warn!(file = %shown(), "reading an unsigned legacy file (--allow-unsigned)");
            return Ok(Signed { signer: None, ciphertext: len });
        }
        return Err(SealError::Unsigned { path: shown() });
    }
    if trust.is_empty() {
        return Err(SealError::NoTrust { path: shown() });
    }
    let ciphertext = len - SIG_BLOCK as u64;
    let mut key = [0u8; 32];
    key.copy_from_slice(&block[8..40]);
    let signer = PublicKey(key);
    if !trust.accepts(&signer) {
        return Err(SealError::UnknownSigner {
            path: shown(),
            signer: signer.to_string(),
            fingerprint: signer.fingerprint(),
            trusted: trust.describe(),
        });
    }
    file.seek(SeekFrom::Start(0)).map_err(|e| SealError::read(path, &e))?;
    let mut hash = Sha256::new();
    io::copy(&mut (&mut file).take(ciphertext), &mut hash).map_err(|e| SealError::read(path, &e))?;
    if !signer.verifies(SIG_DOMAIN, &hash.finalize(), &block[40..]) {
        return Err(SealError::BadSignature { path: shown() });
    }
    Ok(Signed { signer: Some(signer), ciphertext })
}

/// Reads the frames of a sealed file, checking its trailer.
pub struct SealedReader {
    path: PathBuf,
    source: Source,
    frames: u64,
    plain: Sha256,
    done: bool,
}

impl std::fmt::Debug for SealedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedReader").field("path", &self.path).field("frames", &self.frames).finish()
    }
}

impl SealedReader {
    /// Opens `path` with the first of `identities` it was sealed to, once its
    /// signature verifies against `trust` ([`verify_file`]).
    pub fn open(path: &Path, identities: &[age::x25519::Identity], trust: &Trust) -> Result<SealedReader, SealError> {
        let shown = path.display().to_string();
        let signed = verify_file(path, trust)?;
        let file = File::open(path).map_err(|e| SealError::io("open", path, &e))?.take(signed.ciphertext);
        let decryptor = age::Decryptor::new_buffered(BufReader::new(file)).map_err(|e| match e {
            age::DecryptError::Io(e) => SealError::read(path, &e),
            other => {
                SealError::Corrupt { path: shown.clone(), problem: format!("it is not a sealed docket file ({other})") }
            }
        })?;
        let stream = decryptor.decrypt(identities.iter().map(|i| i as &dyn age::Identity)).map_err(|e| match e {
            age::DecryptError::NoMatchingKeys | age::DecryptError::KeyDecryptionFailed => SealError::WrongKey {
                path: shown.clone(),
                tried: identities.iter().map(|i| i.to_public().to_string()).collect::<Vec<_>>().join(", "),
            },
            age::DecryptError::Io(e) => SealError::read(path, &e),
            other => SealError::Corrupt { path: shown.clone(), problem: other.to_string() },
        })?;
        let decoder = zstd::stream::read::Decoder::new(stream).map_err(|e| SealError::read(path, &e))?;
        let mut reader = SealedReader {
            path: path.to_path_buf(),
            source: BufReader::with_capacity(1 << 20, decoder),
            frames: 0,
            plain: Sha256::new(),
            done: false,
        };
        let mut magic = [0u8; 8];
        reader.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(reader.corrupt("it does not start with a docket sealed-file header"));
        }
        Ok(reader)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn corrupt(&self, problem: &str) -> SealError {
        SealError::Corrupt { path: self.path.display().to_string(), problem: problem.into() }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), SealError> {
        self.source.read_exact(buf).map_err(|e| SealError::read(&self.path, &e))
    }

    /// The next frame; `Ok(None)` only after a valid trailer. Truncation, a bad
    /// checksum or a wrong key is an error naming the file and the fix.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, SealError> {
        if self.done {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.read_exact(&mut tag)?;
        match tag[0] {
            FRAME => {
                let mut len = [0u8; 4];
                self.read_exact(&mut len)?;
                let n = u32::from_le_bytes(len) as usize;
                if n > MAX_FRAME {
                    return Err(self.corrupt(&format!("a frame claims {n} bytes, over the {MAX_FRAME}-byte limit")));
                }
                let mut bytes = vec![0u8; n];
                self.read_exact(&mut bytes)?;
                self.plain.update(len);
                self.plain.update(&bytes);
                self.frames += 1;
                Ok(Some(bytes))
            }
            TRAILER => {
                let mut count = [0u8; 8];
                let mut digest = [0u8; 32];
                self.read_exact(&mut count)?;
                self.read_exact(&mut digest)?;
                if u64::from_le_bytes(count) != self.frames {
                    return Err(self.corrupt(&format!(
                        "its trailer counts {} frames, {} were read",
                        u64::from_le_bytes(count),
                        self.frames
                    )));
                }
                if std::mem::take(&mut self.plain).finalize().as_slice() != digest {
                    return Err(self.corrupt("its frames do not match the trailer's checksum"));
                }
                let mut rest = [0u8; 1];
                match self.source.read(&mut rest) {
                    Ok(0) => {}
                    Ok(_) => return Err(self.corrupt("it has bytes after its trailer")),
                    Err(e) => return Err(SealError::read(&self.path, &e)),
                }
                self.done = true;
                Ok(None)
            }
            other => Err(self.corrupt(&format!("unknown frame tag {other}"))),
        }
    }
}

/// SHA-256 (hex) of the file at `path`, as [`SealedFile::sha256`] records it.
pub fn file_sha256(path: &Path) -> Result<String, SealError> {
    let mut file = File::open(path).map_err(|e| SealError::io("open", path, &e))?;
    let mut hash = Sha256::new();
    io::copy(&mut file, &mut hash).map_err(|e| SealError::io("read", path, &e))?;
    Ok(hex::encode(hash.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (age::x25519::Identity, age::x25519::Identity) {
        (age::x25519::Identity::generate(), age::x25519::Identity::generate())
    }

    fn signer() -> &'static Signer {
        static SIGNER: std::sync::OnceLock<Signer> = std::sync::OnceLock::new();
        SIGNER.get_or_init(Signer::generate)
    }

    fn trust() -> Trust {
        Trust::signer(signer().public())
    }

    fn write(path: &Path, to: &[age::x25519::Recipient], frames: &[&[u8]]) -> SealedFile {
        let mut w = SealedWriter::create(path, to, signer()).unwrap();
        for f in frames {
            w.frame(f).unwrap();
        }
        w.finish().unwrap()
    }

    fn read_all(path: &Path, ids: &[age::x25519::Identity]) -> Result<Vec<Vec<u8>>, SealError> {
        let mut r = SealedReader::open(path, ids, &trust())?;
        let mut out = vec![];
        while let Some(f) = r.next_frame()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn round_trip_to_every_recipient() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = keys();
        let path = dir.path().join("x.sealed");
        let big = vec![7u8; 300_000];
        let sealed = write(&path, &[a.to_public(), b.to_public()], &[b"one", b"", &big]);
        assert_eq!(sealed.sha256, file_sha256(&path).unwrap());
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(sealed.bytes, std::fs::metadata(&path).unwrap().len());
        for id in [a, b] {
            assert_eq!(read_all(&path, &[id]).unwrap(), vec![b"one".to_vec(), vec![], big.clone()]);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file is left");
    }

    #[test]
    fn wrong_key_names_file_and_fix() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = keys();
        let path = dir.path().join("x.sealed");
        write(&path, &[a.to_public()], &[b"secret"]);
        let e = read_all(&path, &[b]).unwrap_err();
        assert!(matches!(e, SealError::WrongKey { .. }), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()) && e.to_string().contains("--key"), "{e}");
    }

    #[test]
    fn truncation_and_alteration_are_errors_never_a_short_read() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = keys();
        let path = dir.path().join("x.sealed");
        let frames: Vec<Vec<u8>> =
            (0..200u32).map(|i| format!("frame {i} {}", "x".repeat(i as usize * 37)).into_bytes()).collect();
        let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
        write(&path, &[a.to_public()], &refs);
        let whole = std::fs::read(&path).unwrap();
        for cut in [whole.len() - 1, whole.len() - 17, whole.len() / 2, 200, 40] {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let e = read_all(&path, std::slice::from_ref(&a)).unwrap_err();
            // A cut loses the signature block first: nothing is decrypted.
            assert!(
                matches!(e, SealError::Truncated { .. } | SealError::Corrupt { .. } | SealError::Unsigned { .. }),
                "cut at {cut}: {e}"
            );
            assert!(e.to_string().contains("fix:"), "{e}");
        }
        let mut altered = whole.clone();
        let at = altered.len() - 200;
        altered[at] ^= 1;
        std::fs::write(&path, &altered).unwrap();
        assert!(matches!(read_all(&path, std::slice::from_ref(&a)), Err(SealError::BadSignature { .. })));
    }

    /// The back door of issue 16: a file encrypted to the appliance's public
    /// recipient by someone else decrypts, so only the signature tells.
    #[test]
    fn a_file_of_another_signer_or_none_is_refused_before_decryption() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = keys();
        let path = dir.path().join("x.sealed");
        let forger = Signer::generate();
        let mut w = SealedWriter::create(&path, &[a.to_public()], &forger).unwrap();
        w.frame(b"owner token").unwrap();
        w.finish().unwrap();
        let e = read_all(&path, std::slice::from_ref(&a)).unwrap_err();
        assert!(matches!(e, SealError::UnknownSigner { .. }), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()) && e.to_string().contains("move it out"), "{e}");
        let pinned_forger = SealedReader::open(&path, std::slice::from_ref(&a), &Trust::signer(forger.public()));
        assert!(pinned_forger.is_ok(), "the forger's own pin reads it: the pin is what decides");

        // Unsigned (a legacy file, or a forger without a key): the signature block cut off.
        write(&path, &[a.to_public()], &[b"legacy"]);
        let whole = std::fs::read(&path).unwrap();
        std::fs::write(&path, &whole[..whole.len() - SIG_BLOCK]).unwrap();
        let e = read_all(&path, std::slice::from_ref(&a)).unwrap_err();
        assert!(matches!(e, SealError::Unsigned { .. }) && e.to_string().contains("--allow-unsigned"), "{e}");
        let mut legacy = SealedReader::open(&path, std::slice::from_ref(&a), &trust().allowing_unsigned(true)).unwrap();
        assert_eq!(legacy.next_frame().unwrap(), Some(b"legacy".to_vec()), "legacy files read when allowed");
        let e = SealedReader::open(&path, &[a], &Trust::default()).map(drop).unwrap_err();
        assert!(matches!(e, SealError::Unsigned { .. }), "{e}");
    }

    #[test]
    fn a_full_disk_leaves_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = keys();
        let path = dir.path().join("x.sealed");
        let mut w = SealedWriter::create_failing_after(&path, &[a.to_public()], signer(), 4096).unwrap();
        let noise: Vec<u8> = (0..2_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let failed = w.frame(&noise).and_then(|()| w.finish().map(drop));
        let e = failed.unwrap_err();
        assert!(matches!(e, SealError::NoSpace { .. }), "{e}");
        assert!(e.to_string().contains("backup.dir"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "neither a final nor a temp file");
    }

    #[test]
    fn sweep_removes_temp_files_of_dead_processes_only() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(".b.sealed.999999999.tmp");
        let ours = temp_path_for(&dir.path().join("c.sealed"));
        std::fs::write(&dead, b"half").unwrap();
        std::fs::write(&ours, b"half").unwrap();
        std::fs::write(dir.path().join("d.sealed"), b"kept").unwrap();
        assert_eq!(sweep_temp(dir.path()).unwrap(), 1);
        assert!(!dead.exists() && ours.exists() && dir.path().join("d.sealed").exists());
    }
}
