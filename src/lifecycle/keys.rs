//! Opening the master key against the store, and rotating it.
//!
//! A sealed check value (`keycheck`) in the store says which key the store is
//! sealed with. Rotation: write `<key>.new`, re-seal every secret in one store
//! transaction, then move `<key>` to `<key>.previous` and `<key>.new` into place.
//! If the process dies between the transaction and the rename, the next open
//! finds that only `<key>.new` opens the check value and completes the swap.
use crate::audit;
use crate::config::Config;
use crate::secrets::{KeySource, Keyring, SecretsError, SharedKeyring, key_candidates, with_suffix};
use std::sync::Arc;

use crate::store::{OrgTask, OrgTaskContext, Store, StoreError, SystemContext, Task};

const CHECK_NAME: &str = "keycheck";
const CHECK_VALUE: &[u8] = b"docket master key check";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the master key {path} (public key {recipient}) does not open this store's secrets\n  fix: start docket with the key this store was sealed with (look for {path}.previous or your offline copy)"
    )]
    Mismatch { path: String, recipient: String },
    #[error(
        "the master key comes from the systemd credential {path}, which docket cannot replace\n  fix: stop the service, copy the key to a writable file, run `docket key rotate` with keys.master_key_file pointing at that copy, then install the rotated file as the credential"
    )]
    ReadOnlySource { path: String },
    #[error("there is no previous master key to remove at {path}")]
    NothingToConfirm { path: String },
}

fn opens_check(store: &Store, keyring: &Keyring) -> Result<Option<bool>, StoreError> {
    store.read(|r| match r.get_system_secret(keyring, CHECK_NAME) {
        Ok(Some(v)) => Ok(Some(v.expose() == CHECK_VALUE)),
        Ok(None) => Ok(None),
        Err(StoreError::Secrets(SecretsError::Open)) => Ok(Some(false)),
        Err(e) => Err(e),
    })
}

/// Loads the master key for `config` and proves it opens `store`, completing
/// an interrupted rotation if needed. A new store gets a check value.
pub fn open_keyring(config: &Config, store: &Store) -> Result<Keyring, KeyError> {
    let candidates = key_candidates(&config.data_dir, config.keys.master_key_file.as_deref());
    finish_interrupted_swap(&candidates);
    let keyring = Keyring::load(&candidates)?;
    match opens_check(store, &keyring)? {
        Some(true) => Ok(keyring),
        None => {
            let ctx = SystemContext::new(Task::KeyCheck);
            store.write(|w| w.put_system_secret(&ctx, &keyring, CHECK_NAME, CHECK_VALUE))?;
            Ok(keyring)
        }
        Some(false) => {
            let path = keyring.source().path().to_path_buf();
            let pending = with_suffix(&path, "new");
            if let KeySource::File(_) = keyring.source()
                && pending.exists()
            {
                let new = Keyring::load(&[KeySource::File(pending.clone())])?;
                if opens_check(store, &new)? == Some(true) {
                    Keyring::swap_files(&path)?;
                    tracing::warn!(key = %path.display(), "completed an interrupted master key rotation");
                    return Ok(Keyring::load(&[KeySource::File(path)])?);
                }
            }
            Err(KeyError::Mismatch { path: path.display().to_string(), recipient: keyring.recipient() })
        }
    }
}

/// A crash between the two renames of a rotation leaves `<key>.previous` and
/// `<key>.new` but no `<key>`: the store is already sealed for `.new`, so it
/// takes its place (the check value then proves it).
fn finish_interrupted_swap(candidates: &[KeySource]) {
    if candidates.iter().any(|c| c.path().exists()) {
        return;
    }
    for c in candidates {
        let KeySource::File(path) = c else { continue };
        let pending = with_suffix(path, "new");
        if pending.exists() && with_suffix(path, "previous").exists() && std::fs::rename(&pending, path).is_ok() {
            tracing::warn!(key = %path.display(), "completed an interrupted master key rotation");
            return;
        }
    }
}

/// Rotates the master key; returns a message for the operator.
pub fn rotate(store: &Store, keys: &SharedKeyring) -> Result<String, KeyError> {
    let current = keys.current();
    let KeySource::File(path) = current.source().clone() else {
        return Err(KeyError::ReadOnlySource { path: current.source().path().display().to_string() });
    };
    let new = Arc::new(Keyring::fresh(KeySource::File(path.clone())));
    new.write_pending()?;
    let ctx = OrgTaskContext::new(OrgTask::KeyRotate);
    let orgs = store.list_orgs()?;
    let recipient = new.recipient();
    // Recorded in every firm's chain (each firm's secrets are re-sealed), and the
    // new key is put in force inside the same transaction: writes are
    // serialized, so every later write seals under the new key.
    let record_and_swap = |w: &mut crate::store::Tx| {
        let details = serde_json::json!({"recipient": recipient});
        for org in &orgs {
            let target = format!("org:{}", org.id);
            audit::record(
                w,
                &ctx.org_scope(org.id),
                &audit::Context::default(),
                "key.rotate",
                &target,
                audit::Outcome::Success,
                details.clone(),
            )?;
        }
        keys.put(new.clone());
        Ok(())
    };
    let count = match store.reseal_all(&ctx, &current, &new, record_and_swap) {
        Ok(n) => n,
        Err(e) => {
            keys.put(current.clone());
            let _ = std::fs::remove_file(with_suffix(&path, "new"));
            return Err(e.into());
        }
    };
    let previous = Keyring::swap_files(&path)?;
    Ok(format!(
        "re-sealed {count} secrets under the new master key {recipient}\n\
         the previous key is kept at {}; back up the new key at {}, then run `docket key rotate --confirm` to delete the previous one",
        previous.display(),
        path.display()
    ))
}

/// Deletes `<key>.previous` once the operator has confirmed the new key works.
pub fn confirm(keys: &SharedKeyring) -> Result<String, KeyError> {
    let previous = with_suffix(keys.current().source().path(), "previous");
    if !previous.exists() {
        return Err(KeyError::NothingToConfirm { path: previous.display().to_string() });
    }
    std::fs::remove_file(&previous)
        .map_err(|e| SecretsError::Write { path: previous.display().to_string(), reason: e.to_string() })?;
    Ok(format!("deleted the previous master key {}", previous.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;

    fn setup() -> (tempfile::TempDir, Config, Store, SharedKeyring) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { data_dir: dir.path().join("data"), ..Default::default() };
        Keyring::generate(&crate::secrets::default_key_path(&config.data_dir)).unwrap();
        let store = Store::open(&config.store_path(), Clock::system()).unwrap();
        let keys = SharedKeyring::new(open_keyring(&config, &store).unwrap());
        let ctx = OrgTaskContext::new(OrgTask::Test);
        store.write(|w| w.put_system_secret(&ctx, &keys, "s", b"v")).unwrap();
        (dir, config, store, keys)
    }

    /// A rotation that got as far as the re-seal commit; returns the key path and the new key.
    fn rotate_until_commit(store: &Store, keys: &SharedKeyring) -> (std::path::PathBuf, Keyring) {
        let path = keys.current().source().path().to_path_buf();
        let new = Keyring::fresh(KeySource::File(path.clone()));
        new.write_pending().unwrap();
        store.reseal_all(&OrgTaskContext::new(OrgTask::Test), &keys.current(), &new, |_| Ok(())).unwrap();
        (path, new)
    }

    #[test]
    fn crash_after_reseal_before_renames_is_completed_on_open() {
        let (_d, config, store, keys) = setup();
        let (path, new) = rotate_until_commit(&store, &keys);
        // died here: master.key is still the old key
        let reopened = open_keyring(&config, &store).unwrap();
        assert_eq!(reopened.recipient(), new.recipient());
        assert!(with_suffix(&path, "previous").exists());
    }

    #[test]
    fn crash_between_the_renames_is_completed_on_open() {
        let (_d, config, store, keys) = setup();
        let (path, new) = rotate_until_commit(&store, &keys);
        std::fs::rename(&path, with_suffix(&path, "previous")).unwrap();
        // died here: no master.key at all
        let reopened = open_keyring(&config, &store).unwrap();
        assert_eq!(reopened.recipient(), new.recipient());
        assert_eq!(store.read(|r| r.get_system_secret(&reopened, "s")).unwrap().unwrap().expose(), b"v");
    }

    #[test]
    fn a_foreign_key_is_refused_with_its_public_half() {
        let (_d, config, store, keys) = setup();
        let path = keys.current().source().path().to_path_buf();
        std::fs::remove_file(&path).unwrap();
        let other = Keyring::generate(&path).unwrap();
        let e = open_keyring(&config, &store).unwrap_err();
        assert!(matches!(e, KeyError::Mismatch { .. }));
        assert!(e.to_string().contains(&other.recipient()), "{e}");
    }
}
