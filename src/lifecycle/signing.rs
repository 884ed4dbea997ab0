//! The appliance's signing key: every sealed file docket writes under
//! `backup.dir` (backup archives, their manifests, the keyring, shipped
//! segments) is signed with it, and a restore verifies the signature against a
//! pinned signer before it imports or replays anything.
//!
//! Encryption to the appliance's age recipient proves nothing about the
//! writer: the recipient is public. The Ed25519 signing key is what only the
//! appliance (and the holder of the offline key) has. It lives in the store as
//! the system secret [`SECRET_NAME`], sealed to the master key like every
//! secret; a backup carries it (inside the sealed rows, with the master key
//! that opens it, both sealed to the offline recipients), so a disaster
//! restore keeps signing with the same key and the pin stays valid.
//!
//! The expected signer is pinned: on the appliance from `<data_dir>/signing.pub`
//! (written at every start from the store), on a new machine from what the
//! operator kept with the offline key: the public key (`ed25519:<64 hex>`) or
//! its fingerprint (32 hex), printed at the first start and by `docket doctor`,
//! given as `restore --trust`.
use crate::secrets::Keyring;
use crate::store::{Store, StoreError, SystemContext, Task};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

/// The system secret holding the signing key's 32-byte seed.
pub const SECRET_NAME: &str = "backup-signing-key";
/// The file in the data dir naming the appliance's signer (public key).
pub const PUBLIC_FILE: &str = "signing.pub";
const KEY_PREFIX: &str = "ed25519:";

/// Why the signing key cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the backup signing key in the store is damaged ({0})\n  fix: restore the store from a backup; the signing key cannot be replaced without breaking the trust pinned by operators"
    )]
    Damaged(String),
    #[error("cannot write {path}: {reason}\n  fix: check that the data dir is writable by the docket user")]
    Io { path: String, reason: String },
}

/// The appliance's signing key (its Debug output is redacted).
#[derive(Clone)]
pub struct Signer(SigningKey);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.public())
    }
}

impl Signer {
    /// A new random key.
    pub fn generate() -> Signer {
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        Signer(SigningKey::from_bytes(&seed))
    }

    fn from_seed(bytes: &[u8]) -> Result<Signer, SigningError> {
        let seed: [u8; 32] =
            bytes.try_into().map_err(|_| SigningError::Damaged(format!("{} bytes, not 32", bytes.len())))?;
        Ok(Signer(SigningKey::from_bytes(&seed)))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// The signature of `message` under `domain` (a context string, so a
    /// signature made for one kind of file never verifies as another).
    pub fn sign(&self, domain: &str, message: &[u8]) -> [u8; 64] {
        self.0.sign(&signed_bytes(domain, message)).to_bytes()
    }
}

fn signed_bytes(domain: &str, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + 1 + message.len());
    out.extend_from_slice(domain.as_bytes());
    out.push(0);
    out.extend_from_slice(message);
    out
}

/// A signer's public key; shown as `ed25519:<64 hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The first 16 bytes of the key's SHA-256, as 32 hex digits in groups of four.
    pub fn fingerprint(&self) -> String {
        PublicKey::fingerprint_text(&self.fingerprint_bytes())
    }

    fn fingerprint_bytes(&self) -> [u8; 16] {
        let digest = Sha256::digest(self.0);
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        out
    }

    /// Whether `signature` is this key's over `message` under `domain`.
    pub fn verifies(&self, domain: &str, message: &[u8], signature: &[u8]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else { return false };
        let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else { return false };
        key.verify_strict(&signed_bytes(domain, message), &signature).is_ok()
    }

    /// Parses `ed25519:<64 hex>`.
    pub fn parse(text: &str) -> Option<PublicKey> {
        let hex = text.trim().strip_prefix(KEY_PREFIX)?;
        let bytes: [u8; 32] = hex::decode(hex).ok()?.try_into().ok()?;
        Some(PublicKey(bytes))
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{KEY_PREFIX}{}", hex::encode(self.0))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// One pinned signer: a whole public key or its fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pin {
    Key(PublicKey),
    Fingerprint([u8; 16]),
}

impl Pin {
    /// Parses `--trust`: `ed25519:<64 hex>`, or a fingerprint of 32 hex digits
    /// (colons, dashes and spaces between them are ignored).
    pub fn parse(text: &str) -> Result<Pin, String> {
        let bad = || {
            format!(
                "--trust `{text}` is neither a signing key (ed25519:<64 hex digits>) nor a fingerprint (32 hex digits)\n  fix: copy the value `docket doctor` printed on the appliance (\"backup signer\"), or the one kept with the offline key"
            )
        };
        let text = text.trim();
        if text.starts_with(KEY_PREFIX) {
            return PublicKey::parse(text).map(Pin::Key).ok_or_else(bad);
        }
        let digits: String = text.chars().filter(|c| !matches!(c, ':' | '-' | ' ')).collect();
        let bytes: [u8; 16] = hex::decode(&digits).ok().and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
        Ok(Pin::Fingerprint(bytes))
    }

    fn accepts(&self, key: &PublicKey) -> bool {
        match self {
            Pin::Key(k) => k == key,
            Pin::Fingerprint(f) => *f == key.fingerprint_bytes(),
        }
    }
}

/// Whom a reader believes: the pinned signers, and whether unsigned files
/// written before docket signed them (legacy) are read anyway.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    pins: Vec<Pin>,
    legacy: bool,
}

impl Trust {
    /// Trusts exactly `key` (the appliance's own signer).
    pub fn signer(key: PublicKey) -> Trust {
        Trust { pins: vec![Pin::Key(key)], legacy: false }
    }

    /// Trusts every pin given.
    pub fn pins(pins: Vec<Pin>) -> Trust {
        Trust { pins, legacy: false }
    }

    /// Also reads unsigned files (`--allow-unsigned`: legacy backups only).
    pub fn allowing_unsigned(mut self, legacy: bool) -> Trust {
        self.legacy = legacy;
        self
    }

    pub fn allows_unsigned(&self) -> bool {
        self.legacy
    }

    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }

    pub fn accepts(&self, key: &PublicKey) -> bool {
        self.pins.iter().any(|p| p.accepts(key))
    }

    /// The pinned signers, for messages.
    pub fn describe(&self) -> String {
        if self.pins.is_empty() {
            return "no signer pinned".into();
        }
        let shown: Vec<String> = self
            .pins
            .iter()
            .map(|p| match p {
                Pin::Key(k) => format!("{} (fingerprint {})", k, k.fingerprint()),
                Pin::Fingerprint(f) => format!("fingerprint {}", PublicKey::fingerprint_text(f)),
            })
            .collect();
        shown.join(", ")
    }
}

impl PublicKey {
    fn fingerprint_text(bytes: &[u8; 16]) -> String {
        let hex = hex::encode(bytes);
        hex.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(":")
    }
}

/// The appliance's signing key from `store`, made and stored (sealed to the
/// master key, journaled like every write) on first use.
pub fn ensure(store: &Store, keys: &Keyring) -> Result<Signer, SigningError> {
    if let Some(seed) = store.read(|r| r.get_system_secret(keys, SECRET_NAME))? {
        return Signer::from_seed(seed.expose());
    }
    let fresh = Signer::generate();
    let ctx = SystemContext::new(Task::Backup);
    let mut kept = None;
    store.write(|w| {
        // Another thread may have made it meanwhile: the first one stays.
        if let Some(sealed) = w.get_system(&crate::store::SYSTEM_SECRETS, SECRET_NAME.as_bytes())? {
            kept = Some(sealed);
            return Ok(());
        }
        w.put_system_secret(&ctx, keys, SECRET_NAME, &fresh.0.to_bytes())
    })?;
    match kept {
        Some(sealed) => Signer::from_seed(keys.open(&sealed).map_err(StoreError::from)?.expose()),
        None => {
            tracing::info!(signer = %fresh.public(), fingerprint = %fresh.public().fingerprint(), "made the backup signing key: keep its fingerprint with the offline key");
            Ok(fresh)
        }
    }
}

/// `<data_dir>/signing.pub`.
pub fn public_file(data_dir: &Path) -> PathBuf {
    data_dir.join(PUBLIC_FILE)
}

/// Writes the signer's public key to `<data_dir>/signing.pub` (0600) unless
/// it already says so: the pin a restore on this machine uses.
pub fn write_public(data_dir: &Path, key: &PublicKey) -> Result<(), SigningError> {
    let path = public_file(data_dir);
    let text = format!("{key}\n");
    if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    crate::secrets::write_private_file(&path, text.as_bytes())
        .map_err(|e| SigningError::Io { path: path.display().to_string(), reason: e.to_string() })
}

/// The signer pinned in `data_dir` (`signing.pub`), if any.
pub fn pinned(data_dir: &Path) -> Option<PublicKey> {
    std::fs::read_to_string(public_file(data_dir)).ok().and_then(|t| PublicKey::parse(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_key_domain_and_message() {
        let (a, b) = (Signer::generate(), Signer::generate());
        let sig = a.sign("file", b"hello");
        assert!(a.public().verifies("file", b"hello", &sig));
        assert!(!a.public().verifies("manifest", b"hello", &sig), "another domain");
        assert!(!a.public().verifies("file", b"hellO", &sig));
        assert!(!b.public().verifies("file", b"hello", &sig));
        assert!(!a.public().verifies("file", b"hello", &sig[..63]));
    }

    #[test]
    fn pins_parse_keys_and_fingerprints_and_refuse_the_rest() {
        let key = Signer::generate().public();
        assert_eq!(PublicKey::parse(&key.to_string()), Some(key));
        for text in
            [key.to_string(), key.fingerprint(), key.fingerprint().replace(':', ""), key.fingerprint().to_uppercase()]
        {
            let pin = Pin::parse(&text).unwrap();
            assert!(Trust::pins(vec![pin]).accepts(&key), "{text}");
            assert!(!Trust::pins(vec![pin]).accepts(&Signer::generate().public()), "{text}");
        }
        for bad in ["", "ed25519:", "ed25519:zz", "abcd", &"0".repeat(33), "age1qqqq"] {
            let e = Pin::parse(bad).unwrap_err();
            assert!(e.contains("fix:") && e.contains("docket doctor"), "{e}");
        }
    }
}
