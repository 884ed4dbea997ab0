//! Off-site copies: every sealed file of `backup.dir` (backups and their
//! manifests, the keyring, the shipped journal segments) also goes to an
//! S3-compatible bucket (`[backup.offsite]`), so a lost disk loses neither
//! the backups nor the point-in-time window.
//!
//! - [`target`]: the bucket and prefix over `object_store`; objects carry the
//!   files' bytes unchanged, named by their path relative to `backup.dir`.
//! - [`uploader`]: the task that uploads each file within `backup.ship_interval`
//!   of its sealing. Its queue is durable by construction: what is pending is
//!   what `backup.dir` holds and the bucket lacks, so an outage or a restart
//!   loses nothing; a final name is written once (conditional puts).
//! - [`retention`]: the local rules applied to the bucket too.
//! - [`download`]: a private staging dir filled from the bucket, which the
//!   local restore and listing paths then read.
//! - [`status`]: lag, last upload, last error and the remote window, for
//!   `/metrics` and `docket doctor`.
pub mod download;
pub mod retention;
pub mod status;
pub mod target;
pub mod uploader;

pub use target::Target;
pub use uploader::{Handle, start};

use crate::config::Config;
use crate::lifecycle::shipping::{SEGMENTS_DIR, SegmentName};
use crate::secrets::Secret;

/// Why an off-site operation failed; each names the object or file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum OffsiteError {
    #[error(
        "the off-site target {url} cannot be set up: {reason}\n  fix: check [backup.offsite] (url, endpoint, region)"
    )]
    Setup { url: String, reason: String },
    #[error(
        "off-site {url}: cannot {action}: {reason}\n  fix: check that the endpoint is reachable, that the bucket exists and that the access key may list, read, write and delete under the prefix (the service retries uploads: pending files stay in backup.dir meanwhile)"
    )]
    Remote { url: String, action: String, reason: String },
    #[error(
        "cannot use {path}: {reason}\n  fix: check that backup.dir is mounted and readable by docket, and that the disk has room"
    )]
    Local { path: String, reason: String },
    #[error(
        "the object {name} in {url} is not a file docket writes\n  fix: remove it from the bucket, or point --backup-dir at the prefix docket uploads to"
    )]
    Foreign { url: String, name: String },
    #[error(
        "the bucket {url} holds the segment {remote}, which overlaps the local {local} without being it: the bucket's segments belong to another timeline (the store was restored to an earlier instant, or another appliance uploads under this prefix); nothing more is uploaded there\n  fix: give this appliance a new prefix in backup.offsite.url (keep the old one: it holds the old timeline), then restart docket"
    )]
    OtherTimeline { url: String, remote: String, local: String },
    #[error("{0}")]
    Config(String),
}

/// `[backup.offsite]`, checked (see `Config::validate_offsite`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `s3://bucket/prefix` as configured.
    pub url: String,
    pub bucket: String,
    /// The key prefix without slashes at either end (may be empty).
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub allow_http: bool,
}

impl Settings {
    /// The off-site settings of `config`; `None` when `backup.offsite.url` is unset.
    pub fn from_config(config: &Config) -> Result<Option<Settings>, OffsiteError> {
        let o = &config.backup.offsite;
        let Some(url) = &o.url else { return Ok(None) };
        let (bucket, prefix) = crate::config::parse_offsite_url(url)
            .map_err(|problem| OffsiteError::Config(format!("backup.offsite.url: `{url}` {problem}")))?;
        let missing = |key: &str| {
            OffsiteError::Config(format!(
                "backup.offsite.{key} is not set\n  fix: set backup.offsite.access_key_id and secret_access_key_file (or the systemd credential {})",
                crate::config::OFFSITE_CREDENTIAL
            ))
        };
        Ok(Some(Settings {
            url: url.clone(),
            bucket,
            prefix,
            endpoint: o.endpoint.clone(),
            region: o.region.clone().unwrap_or_else(|| "us-east-1".into()),
            access_key_id: o.access_key_id.clone().ok_or_else(|| missing("access_key_id"))?,
            secret_access_key: o.secret_access_key.clone().ok_or_else(|| missing("secret_access_key"))?,
            allow_http: o.allow_http,
        }))
    }
}

/// Whether `dir` names an off-site target (`s3://…`) rather than a local directory.
pub fn is_remote(dir: &std::path::Path) -> bool {
    dir.to_str().is_some_and(|d| d.starts_with("s3://"))
}

/// What a file of `backup.dir` is, for uploading and ordering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A shipped journal segment (`segments/seg_….dseg`).
    Segment,
    /// A backup's sealed file (`backup-….sealed`) or another file of its
    /// stem other than the manifest.
    Backup,
    /// A backup's clear manifest: uploaded after its sealed file, deleted before it.
    Manifest,
    /// Any other finished file (the keyring): rewritten in place locally, so
    /// replaced remotely when it changes.
    Mutable,
}

impl Kind {
    /// Whether a name is written once (its object is never replaced).
    pub fn immutable(self) -> bool {
        self != Kind::Mutable
    }
}

/// Files of `backup.dir` that are not backups' sealed data: never uploaded.
const LOCAL_ONLY: &[&str] = &[crate::lifecycle::verify::STATUS_FILE, crate::lifecycle::shipping::STATUS_FILE];

/// The kind of the file `name` (relative to `backup.dir`, `/`-separated),
/// or `None` when it is not uploaded: temp and hidden files, local
/// bookkeeping, anything deeper than `segments/`.
pub fn kind(name: &str) -> Option<Kind> {
    let plain = |part: &str| {
        !part.is_empty()
            && !part.starts_with('.')
            && !part.ends_with(".tmp")
            && part.chars().all(|c| !c.is_control() && c != '\\' && c != '/')
    };
    if let Some(file) = name.strip_prefix(&format!("{SEGMENTS_DIR}/")) {
        return (plain(file) && SegmentName::parse(file).is_some()).then_some(Kind::Segment);
    }
    if !plain(name) || LOCAL_ONLY.contains(&name) {
        return None;
    }
    Some(if name.starts_with("backup-") && name.ends_with(".manifest.json") {
        Kind::Manifest
    } else if name.starts_with("backup-") {
        Kind::Backup
    } else {
        Kind::Mutable
    })
}

/// The segment name of an object, if it is one.
pub fn segment(name: &str) -> Option<SegmentName> {
    name.strip_prefix(&format!("{SEGMENTS_DIR}/")).and_then(SegmentName::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_finished_files_of_the_backup_dir_are_uploaded() {
        let seg = "segments/seg_00000000000000000001_00000000000000000002_10_20.dseg";
        assert_eq!(kind(seg), Some(Kind::Segment));
        assert_eq!(kind("backup-20260101T020000Z-abcd1234.sealed"), Some(Kind::Backup));
        assert_eq!(kind("backup-20260101T020000Z-abcd1234.manifest.json"), Some(Kind::Manifest));
        assert_eq!(kind("keyring.sealed"), Some(Kind::Mutable));
        for not in [
            ".keyring.sealed.42.tmp",
            ".backup-x.sealed.7.tmp",
            "segments/.seg_00000000000000000001_00000000000000000002_10_20.dseg.9.tmp",
            "segments/notes.txt",
            "segments/deeper/seg_00000000000000000001_00000000000000000002_10_20.dseg",
            "last-verify.json",
            "",
            "a/b",
            "x\u{7}y",
        ] {
            assert_eq!(kind(not), None, "{not:?}");
        }
    }
}
