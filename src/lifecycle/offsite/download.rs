//! Reading straight from the bucket: the objects a restore or a listing
//! needs, downloaded into a private staging dir (0700, files 0600) that the
//! local restore and listing paths then read like any backup directory. The
//! staging dir is removed when dropped.
//!
//! Object names are checked before anything is written: only names docket
//! uploads (see [`super::kind`]) are taken, so a bucket that holds other
//! objects cannot make the download write outside the staging dir.
use super::target::Target;
use super::{Kind, OffsiteError, Settings, kind};
use crate::lifecycle::backup::Manifest;
use crate::lifecycle::shipping::SEGMENTS_DIR;
use crate::timestamp::Timestamp;
use std::path::{Path, PathBuf};

/// What to download.
#[derive(Clone, Copy, Debug)]
pub enum Want {
    /// The manifests (`docket backup list`).
    Listing,
    /// What a point-in-time restore to this instant reads: the newest backup
    /// whose head is at or before it, the keyring, and every segment.
    At(Timestamp),
}

/// A private directory removed with everything in it when dropped.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
}

impl Staging {
    /// Creates `<parent>/.docket-offsite-<pid>-<random>` with mode 0700.
    pub fn create(parent: &Path) -> Result<Staging, OffsiteError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let path = parent.join(format!(".docket-offsite-{}-{}", std::process::id(), &id[..8]));
        let error = |e: std::io::Error| OffsiteError::Local { path: path.display().to_string(), reason: e.to_string() };
        std::fs::create_dir_all(parent).map_err(error)?;
        crate::secrets::create_private_dir(&path).map_err(error)?;
        crate::secrets::create_private_dir(&path.join(SEGMENTS_DIR)).map_err(error)?;
        Ok(Staging { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// What a download fetched.
#[derive(Debug)]
pub struct Staged {
    pub dir: Staging,
    pub files: u64,
    pub bytes: u64,
}

/// Downloads what `want` needs from `settings`' bucket into a staging dir under `parent`.
pub async fn stage(settings: &Settings, parent: &Path, want: Want) -> Result<Staged, OffsiteError> {
    let target = Target::new(settings)?;
    let objects = target.list().await?;
    let dir = Staging::create(parent)?;
    let names: Vec<&str> = objects.iter().map(|o| o.name.as_str()).filter(|n| kind(n).is_some()).collect();
    let manifests = read_manifests(&target, &names).await?;
    let wanted: Vec<&str> = match want {
        Want::Listing => manifests.iter().map(|(n, _)| n.as_str()).collect(),
        Want::At(at) => {
            let base = base_at(&manifests, at);
            names
                .iter()
                .copied()
                .filter(|n| match kind(n) {
                    Some(Kind::Backup | Kind::Manifest) => base.is_some_and(|stem| n.starts_with(stem)),
                    Some(_) => true,
                    None => false,
                })
                .collect()
        }
    };
    let (mut files, mut bytes) = (0, 0);
    for name in wanted {
        let path = dir.path().join(name);
        bytes += target.download(name, &path).await?;
        files += 1;
    }
    Ok(Staged { dir, files, bytes })
}

/// The manifests in the bucket, by object name; one that does not parse is
/// left out (the listing then does not show it, as locally).
async fn read_manifests(target: &Target, names: &[&str]) -> Result<Vec<(String, Manifest)>, OffsiteError> {
    let mut out = vec![];
    for name in names.iter().filter(|n| kind(n) == Some(Kind::Manifest)) {
        let bytes = target.get(name).await?;
        match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(m) => out.push((name.to_string(), m)),
            Err(e) => tracing::warn!(object = %name, error = %e, "skipping an off-site manifest that does not parse"),
        }
    }
    Ok(out)
}

/// The stem (`backup-…` without suffix) of the newest backup whose head
/// commit is at or before `at`: the base a point-in-time restore starts from.
fn base_at(manifests: &[(String, Manifest)], at: Timestamp) -> Option<&str> {
    manifests
        .iter()
        .filter(|(_, m)| m.head_time.is_none_or(|t| t <= at))
        .max_by_key(|(_, m)| (m.head_seq, m.created))
        .map(|(name, _)| name.trim_end_matches(".manifest.json"))
}

/// The off-site settings for reading `url` from a command: `[backup.offsite]`
/// of `config` (or of the `DOCKET_BACKUP__OFFSITE__*` environment alone) with
/// its url replaced by `url`.
pub fn settings_for(url: &str, config: Option<&crate::config::Config>) -> Result<Settings, OffsiteError> {
    let mut config = match config {
        Some(c) => c.clone(),
        None => {
            crate::config::Layers::new()
                .env(std::env::vars())
                .map(|layers| {
                    // Only the bucket settings matter here; TLS is not served.
                    layers.flag("backup.offsite.url", toml::Value::String(url.into()), "backup-dir").flag(
                        "tls.mode",
                        toml::Value::String("off".into()),
                        "backup-dir",
                    )
                })
                .and_then(crate::config::Layers::build)
                .map_err(|e| OffsiteError::Config(e.to_string()))?
                .config
        }
    };
    crate::config::parse_offsite_url(url).map_err(|problem| {
        OffsiteError::Config(format!("--backup-dir `{url}` {problem}\n  fix: write it as s3://bucket/prefix"))
    })?;
    config.backup.offsite.url = Some(url.to_string());
    Settings::from_config(&config)?.ok_or_else(|| OffsiteError::Config("no off-site url".into()))
}

/// A staging dir filled for one command, with where it came from.
#[derive(Debug)]
pub struct ForCommand {
    pub dir: Staging,
    pub url: String,
    pub files: u64,
    pub bytes: u64,
}

impl ForCommand {
    /// `text` (a command's report or error) naming the bucket instead of the
    /// staging dir, after a line saying what was downloaded.
    pub fn describe(&self, text: &str) -> String {
        let staged = self.dir.path().display().to_string();
        format!(
            "downloaded {} files ({}) from {}\n{}",
            self.files,
            crate::lifecycle::upgrade::human_bytes(self.bytes),
            self.url,
            text.replace(&staged, &self.url)
        )
    }
}

fn url_of(dir: &Path) -> Result<&str, String> {
    dir.to_str().ok_or_else(|| format!("--backup-dir `{}` is not valid UTF-8", dir.display()))
}

/// `docket restore --backup-dir s3://… --at T`: downloads what the restore
/// reads into a staging dir beside `--into` (same disk, private).
pub async fn stage_for_restore(
    dir: &Path,
    at: &str,
    into: Option<&Path>,
    config: Option<&crate::config::Config>,
) -> Result<ForCommand, String> {
    let url = url_of(dir)?;
    let at = Timestamp::parse(at).map_err(|e| {
        format!("--at `{at}` {e}\n  fix: give the instant to restore to, e.g. --at 2026-01-31T09:30:00Z")
    })?;
    let settings = settings_for(url, config).map_err(|e| e.to_string())?;
    let parent = into
        .and_then(Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let staged = stage(&settings, &parent, Want::At(at)).await.map_err(|e| e.to_string())?;
    Ok(ForCommand { dir: staged.dir, url: url.to_string(), files: staged.files, bytes: staged.bytes })
}

/// `docket backup list --backup-dir DIR`: a local directory, or the bucket's
/// manifests (downloaded into a private staging dir, then listed as usual).
pub async fn list_command(dir: &Path, config: Option<&crate::config::Config>) -> Result<String, String> {
    use crate::lifecycle::backup;
    if !super::is_remote(dir) {
        let backups = backup::list(dir).map_err(|e| e.to_string())?;
        return Ok(backup::describe(&backups));
    }
    let url = url_of(dir)?;
    let settings = settings_for(url, config).map_err(|e| e.to_string())?;
    let staged = stage(&settings, &std::env::temp_dir(), Want::Listing).await.map_err(|e| e.to_string())?;
    let backups = backup::list(staged.dir.path()).map_err(|e| e.to_string())?;
    let prefix = format!("{}/", staged.dir.path().display());
    Ok(backup::describe(&backups).replace(&prefix, &format!("{}/", url.trim_end_matches('/'))))
}
