//! The master key and age sealing of every secret at rest.
//!
//! One age X25519 identity (the master key) is read from, in order: systemd's
//! `$CREDENTIALS_DIRECTORY/docket-master-key`, `keys.master_key_file`, or
//! `<data_dir>/keys/master.key`. A key file readable by group or others is
//! refused. Secrets in memory are wrapped in [`Secret`] / [`SecretBytes`], whose
//! Debug, Display and Serialize print `[redacted]`.
use crate::swap::Swap;
use age::secrecy::ExposeSecret as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The systemd credential name docket looks for.
pub const CREDENTIAL_NAME: &str = "docket-master-key";

/// A secret string: never printed, never serialized in clear.
#[derive(Clone)]
pub struct Secret(secrecy::SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(secrecy::SecretString::from(value.into()))
    }

    /// The clear value, for the one place that must use it.
    pub fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

/// Secret bytes (a decrypted value), zeroed on drop.
pub struct SecretBytes(secrecy::SecretSlice<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(secrecy::SecretSlice::from(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "no master key found (looked for {looked})\n  fix: run `docket key generate --config FILE` (or --data-dir DIR) once, then back the key file up offline"
    )]
    NoKey { looked: String },
    #[error("the master key file {path} is readable by group or others (mode {mode:o})\n  fix: chmod 600 {path}")]
    TooOpen { path: String, mode: u32 },
    #[error(
        "cannot read the master key file {path}: {reason}\n  fix: check the path and that the docket user owns the file"
    )]
    Unreadable { path: String, reason: String },
    #[error(
        "{path} does not hold an age identity (a line starting AGE-SECRET-KEY-1)\n  fix: point keys.master_key_file at the file `docket key generate` wrote"
    )]
    Malformed { path: String },
    #[error("a master key already exists at {path}\n  fix: keep it, or use `docket key rotate` to replace it")]
    Exists { path: String },
    #[error("cannot write the key file {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("sealing failed: {0}")]
    Seal(String),
    #[error(
        "a sealed value could not be opened with the current master key\n  fix: start docket with the key this store was sealed with"
    )]
    Open,
}

/// Where the master key was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A systemd credential (read-only to docket).
    Credential(PathBuf),
    /// A file docket may replace on rotation.
    File(PathBuf),
}

impl KeySource {
    pub fn path(&self) -> &Path {
        match self {
            KeySource::Credential(p) | KeySource::File(p) => p,
        }
    }
}

/// The master identity and what it seals to.
pub struct Keyring {
    identity: age::x25519::Identity,
    recipient: age::x25519::Recipient,
    source: KeySource,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("recipient", &self.recipient.to_string()).field("source", &self.source).finish()
    }
}

/// Where the key would be found for this data dir and config, in search order.
pub fn key_candidates(data_dir: &Path, configured: Option<&Path>) -> Vec<KeySource> {
    let mut out = vec![];
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        out.push(KeySource::Credential(PathBuf::from(dir).join(CREDENTIAL_NAME)));
    }
    match configured {
        Some(path) => out.push(KeySource::File(path.to_path_buf())),
        None => out.push(KeySource::File(default_key_path(data_dir))),
    }
    out
}

/// `<data_dir>/keys/master.key`.
pub fn default_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("master.key")
}

impl Keyring {
    /// Loads the first key that exists among `candidates`.
    pub fn load(candidates: &[KeySource]) -> Result<Keyring, SecretsError> {
        for source in candidates {
            if source.path().exists() {
                return Self::load_from(source.clone());
            }
        }
        let looked = candidates.iter().map(|c| c.path().display().to_string()).collect::<Vec<_>>().join(", ");
        Err(SecretsError::NoKey { looked })
    }

    fn load_from(source: KeySource) -> Result<Keyring, SecretsError> {
        let path = source.path();
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path)
            .map_err(|e| SecretsError::Unreadable { path: shown.clone(), reason: e.to_string() })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretsError::TooOpen { path: shown, mode });
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| SecretsError::Unreadable { path: shown.clone(), reason: e.to_string() })?;
        let identity = parse_identity(&text).ok_or(SecretsError::Malformed { path: shown })?;
        Ok(Keyring { recipient: identity.to_public(), identity, source })
    }

    /// Creates a new key file (0600, in a 0700 directory); refuses to overwrite.
    pub fn generate(path: &Path) -> Result<Keyring, SecretsError> {
        if path.exists() {
            return Err(SecretsError::Exists { path: path.display().to_string() });
        }
        let identity = age::x25519::Identity::generate();
        write_identity(path, &identity)?;
        Ok(Keyring { recipient: identity.to_public(), identity, source: KeySource::File(path.to_path_buf()) })
    }

    /// A fresh identity held only in memory until [`Keyring::persist_rotation`].
    pub fn fresh(source: KeySource) -> Keyring {
        let identity = age::x25519::Identity::generate();
        Keyring { recipient: identity.to_public(), identity, source }
    }

    /// The public half, `age1…`; safe to print and store.
    pub fn recipient(&self) -> String {
        self.recipient.to_string()
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// The private identity, for opening backups sealed to this key.
    pub fn identity(&self) -> &age::x25519::Identity {
        &self.identity
    }

    /// The public key new backups are sealed to.
    pub fn age_recipient(&self) -> &age::x25519::Recipient {
        &self.recipient
    }

    /// Encrypts `plaintext` to the master recipient.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SecretsError> {
        age::encrypt(&self.recipient, plaintext).map_err(|e| SecretsError::Seal(e.to_string()))
    }

    /// Decrypts a value sealed by [`Keyring::seal`].
    pub fn open(&self, ciphertext: &[u8]) -> Result<SecretBytes, SecretsError> {
        age::decrypt(&self.identity, ciphertext).map(SecretBytes::new).map_err(|_| SecretsError::Open)
    }

    /// Writes this (new) identity to `<path>.new`, to be swapped in by [`Keyring::swap_files`].
    pub fn write_pending(&self) -> Result<PathBuf, SecretsError> {
        let pending = with_suffix(self.source.path(), "new");
        let _ = std::fs::remove_file(&pending);
        write_identity(&pending, &self.identity)?;
        Ok(pending)
    }

    /// Moves the current key file to `<path>.previous` and `<path>.new` into place.
    pub fn swap_files(path: &Path) -> Result<PathBuf, SecretsError> {
        let previous = with_suffix(path, "previous");
        let io = |e: std::io::Error| SecretsError::Write { path: path.display().to_string(), reason: e.to_string() };
        std::fs::rename(path, &previous).map_err(io)?;
        std::fs::rename(with_suffix(path, "new"), path).map_err(io)?;
        Ok(previous)
    }
}

/// `<path>.<suffix>`, e.g. `master.key.previous`.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

fn parse_identity(text: &str) -> Option<age::x25519::Identity> {
    text.lines().map(str::trim).find(|l| l.starts_with("AGE-SECRET-KEY-1")).and_then(|l| l.parse().ok())
}

/// Writes `identity` as a new key file (0600; a new directory 0700); refuses to overwrite.
pub fn write_identity(path: &Path, identity: &age::x25519::Identity) -> Result<(), SecretsError> {
    let err = |e: std::io::Error| SecretsError::Write { path: path.display().to_string(), reason: e.to_string() };
    // A new directory is made private; an existing one (e.g. /etc/docket, which
    // also holds the config the service must read) keeps its mode.
    if let Some(dir) = path.parent().filter(|d| !d.exists()) {
        create_private_dir(dir).map_err(err)?;
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(err)?;
    let body = format!(
        "# docket master key: keep a copy offline; without it no secret or backup can be read\n# public key: {}\n{}\n",
        identity.to_public(),
        identity.to_string().expose_secret()
    );
    file.write_all(body.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)
}

/// Creates `dir` (and parents) and sets it to 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes a small clear file atomically with mode 0600 (temp, fsync,
/// rename, fsync of the directory), whatever the umask.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp).and_then(
        |mut f| {
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.write_all(bytes)?;
            f.sync_all()
        },
    );
    if let Err(e) = written.and_then(|()| std::fs::rename(&temp, path)) {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// Something that seals secrets at rest.
///
/// A write that stores a secret takes a [`SharedKeyring`] and seals inside its
/// store transaction: key rotation swaps the keyring inside its own (serialized)
/// transaction, so no value sealed under the old key can be committed after the
/// re-seal.
pub trait Sealer {
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SecretsError>;
}

impl Sealer for Keyring {
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SecretsError> {
        Keyring::seal(self, plaintext)
    }
}

impl Sealer for SharedKeyring {
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SecretsError> {
        self.current().seal(plaintext)
    }
}

/// A keyring shared by the running server, swapped whole on rotation.
#[derive(Clone, Debug)]
pub struct SharedKeyring(Arc<Swap<Keyring>>);

impl SharedKeyring {
    pub fn new(keyring: Keyring) -> Self {
        SharedKeyring(Arc::new(Swap::new(keyring)))
    }

    /// The keyring in force now.
    pub fn current(&self) -> Arc<Keyring> {
        self.0.current()
    }

    pub fn replace(&self, keyring: Keyring) {
        self.0.replace(keyring);
    }

    /// Puts a keyring that is also held elsewhere in force.
    pub fn put(&self, keyring: Arc<Keyring>) {
        self.0.put(keyring);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_redaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/master.key");
        let k = Keyring::generate(&path).unwrap();
        let sealed = k.seal(b"clio-refresh-token").unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"token"));
        assert_eq!(k.open(&sealed).unwrap().expose(), b"clio-refresh-token");
        let other = Keyring::fresh(KeySource::File(dir.path().join("x")));
        assert!(matches!(other.open(&sealed), Err(SecretsError::Open)));
        assert_eq!(format!("{:?} {}", Secret::new("pw"), Secret::new("pw")), "[redacted] [redacted]");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn refuses_open_key_file_and_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        Keyring::generate(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Keyring::load(&[KeySource::File(path.clone())]).unwrap_err();
        assert!(e.to_string().contains(&format!("chmod 600 {}", path.display())), "{e}");
    }

    #[test]
    fn missing_and_malformed_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        assert!(matches!(Keyring::load(&[KeySource::File(path.clone())]), Err(SecretsError::NoKey { .. })));
        std::fs::write(&path, "hello").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(Keyring::load(&[KeySource::File(path.clone())]), Err(SecretsError::Malformed { .. })));
        assert!(matches!(Keyring::generate(&path), Err(SecretsError::Exists { .. })));
    }
}
