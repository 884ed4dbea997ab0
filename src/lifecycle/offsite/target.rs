//! The off-site target: an S3-compatible bucket and prefix, reached through
//! `object_store` (Apache Arrow). Objects are named like the files of
//! `backup.dir` relative to it (`backup-….sealed`, `keyring.sealed`,
//! `segments/seg_….dseg`) and hold their bytes unchanged.
use super::{OffsiteError, Settings};
use bytes::Bytes;
use futures_util::StreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, RetryConfig,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Files larger than this go up in parts of this size (S3 wants parts of 5 MiB or more).
const PART_BYTES: usize = 32 * 1024 * 1024;

/// An object found under the prefix: its name relative to the prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteObject {
    pub name: String,
    pub size: u64,
    /// Last modified, microseconds since the epoch.
    pub modified: i64,
}

/// How an upload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    Written,
    /// An object of that name was there already (a final name is never written twice).
    AlreadyThere,
}

/// The bucket and prefix of `[backup.offsite]`.
#[derive(Clone)]
pub struct Target {
    store: Arc<AmazonS3>,
    prefix: String,
    /// `s3://bucket/prefix`, for messages.
    pub url: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("url", &self.url).finish()
    }
}

impl Target {
    /// The client for `settings` (no request is made yet).
    pub fn new(settings: &Settings) -> Result<Target, OffsiteError> {
        let client = ClientOptions::new()
            .with_allow_http(settings.allow_http)
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(120));
        // Short retries inside a call: the uploader retries whole rounds with its own backoff.
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 2,
            retry_timeout: Duration::from_secs(30),
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(settings.secret_access_key.expose())
            .with_client_options(client)
            .with_retry(retry)
            // Single-object DELETE works on every S3-compatible service; the
            // uploader deletes a few objects a round, never thousands.
            .with_disable_bulk_delete(true);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(settings.allow_http);
        }
        let store =
            builder.build().map_err(|e| OffsiteError::Setup { url: settings.url.clone(), reason: e.to_string() })?;
        Ok(Target { store: Arc::new(store), prefix: settings.prefix.clone(), url: settings.url.clone() })
    }

    fn path(&self, name: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    fn error(&self, action: &str, name: &str, e: impl std::fmt::Display) -> OffsiteError {
        OffsiteError::Remote { url: self.url.clone(), action: format!("{action} {name}"), reason: e.to_string() }
    }

    /// Every object under the prefix, by name relative to it.
    pub async fn list(&self) -> Result<Vec<RemoteObject>, OffsiteError> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let mut stream = self.store.list(prefix.as_ref());
        let mut out = vec![];
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| self.error("list", "the objects", e))?;
            let full = meta.location.as_ref();
            let name = if self.prefix.is_empty() {
                full
            } else {
                match full.strip_prefix(self.prefix.as_str()).and_then(|r| r.strip_prefix('/')) {
                    Some(rest) => rest,
                    None => continue,
                }
            };
            let modified = meta.last_modified.timestamp_micros();
            out.push(RemoteObject { name: name.to_string(), size: meta.size, modified });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Uploads the file at `path` as `name`. With `replace` false the put is
    /// conditional (`If-None-Match: *`): an object already there is kept.
    pub async fn put_file(&self, name: &str, path: &Path, replace: bool) -> Result<(Put, u64), OffsiteError> {
        let read = |e: std::io::Error| OffsiteError::Local { path: path.display().to_string(), reason: e.to_string() };
        let size = tokio::fs::metadata(path).await.map_err(read)?.len();
        if size as usize > PART_BYTES {
            return self.put_parts(name, path, replace, size).await;
        }
        let bytes = tokio::fs::read(path).await.map_err(read)?;
        self.put_bytes(name, Bytes::from(bytes), replace).await
    }

    /// Uploads `bytes` as `name` (see [`Target::put_file`]).
    pub async fn put_bytes(&self, name: &str, bytes: Bytes, replace: bool) -> Result<(Put, u64), OffsiteError> {
        let size = bytes.len() as u64;
        let mode = if replace { PutMode::Overwrite } else { PutMode::Create };
        let options = PutOptions { mode, ..PutOptions::default() };
        match self.store.put_opts(&self.path(name), PutPayload::from_bytes(bytes), options).await {
            Ok(_) => Ok((Put::Written, size)),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                Ok((Put::AlreadyThere, 0))
            }
            Err(e) => Err(self.error("upload", name, e)),
        }
    }

    /// A large file in parts, read from disk part by part. Multipart uploads
    /// cannot be conditional everywhere, so an existing object is looked for first.
    async fn put_parts(&self, name: &str, path: &Path, replace: bool, size: u64) -> Result<(Put, u64), OffsiteError> {
        use tokio::io::AsyncReadExt as _;
        let location = self.path(name);
        if !replace && self.store.head(&location).await.is_ok() {
            return Ok((Put::AlreadyThere, 0));
        }
        let read = |e: std::io::Error| OffsiteError::Local { path: path.display().to_string(), reason: e.to_string() };
        let mut file = tokio::fs::File::open(path).await.map_err(read)?;
        let mut upload = self.store.put_multipart(&location).await.map_err(|e| self.error("upload", name, e))?;
        let mut sent = 0u64;
        while sent < size {
            let mut part = vec![0u8; PART_BYTES.min((size - sent) as usize)];
            if let Err(e) = file.read_exact(&mut part).await {
                let _ = upload.abort().await;
                return Err(read(e));
            }
            sent += part.len() as u64;
            if let Err(e) = upload.put_part(PutPayload::from(part)).await {
                let _ = upload.abort().await;
                return Err(self.error("upload", name, e));
            }
        }
        upload.complete().await.map_err(|e| self.error("upload", name, e))?;
        Ok((Put::Written, size))
    }

    /// The bytes of `name`.
    pub async fn get(&self, name: &str) -> Result<Bytes, OffsiteError> {
        tracing::debug!(object = %name, "reading off-site");
        let got = self.store.get(&self.path(name)).await.map_err(|e| self.error("download", name, e))?;
        got.bytes().await.map_err(|e| self.error("download", name, e))
    }

    /// Downloads `name` into the file `path` (created with mode 0600), streaming.
    pub async fn download(&self, name: &str, path: &Path) -> Result<u64, OffsiteError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        use tokio::io::AsyncWriteExt as _;
        let write = |e: std::io::Error| OffsiteError::Local { path: path.display().to_string(), reason: e.to_string() };
        let got = self.store.get(&self.path(name)).await.map_err(|e| self.error("download", name, e))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true).mode(0o600);
        let file = options.open(path).map_err(write)?;
        let mut file = tokio::fs::File::from_std(file);
        let mut stream = got.into_stream();
        let mut bytes = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error("download", name, e))?;
            file.write_all(&chunk).await.map_err(write)?;
            bytes += chunk.len() as u64;
        }
        file.sync_all().await.map_err(write)?;
        Ok(bytes)
    }

    /// Deletes `name` (an object already gone is fine).
    pub async fn delete(&self, name: &str) -> Result<(), OffsiteError> {
        tracing::debug!(object = %name, "deleting off-site");
        match self.store.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", name, e)),
        }
    }
}
