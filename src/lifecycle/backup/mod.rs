//! Encrypted full backups: writing them ([`run`]), listing ([`archive::list`]),
//! keeping 7 daily and 4 weekly ([`retention`]), and proving they restore
//! ([`verify`]).
//!
//! A backup is one consistent export of the store (one read transaction, so
//! the API and the sync keep writing) in a sealed file ([`sealed`]: zstd, age
//! to the appliance key and every offline recipient, checksummed, written
//! atomically) with a manifest beside it ([`archive`]).
pub mod archive;
pub mod sealed;

pub use archive::{BackupInfo, Manifest, Progress, Quiet, import, import_with, list};
pub use sealed::{SealError, SealedFile, SealedReader, SealedWriter};

use crate::store::StoreError;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Store(#[from] StoreError),
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
