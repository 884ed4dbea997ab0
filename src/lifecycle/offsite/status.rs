//! What the uploader reports: lag, last upload, last error and the remote
//! window, kept in memory, exported to `/metrics`, and written to
//! `<data_dir>/offsite-status.json` (0600) for `docket doctor`.
use crate::telemetry::Metrics;
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file in the data dir the running service keeps its off-site status in.
pub const STATUS_FILE: &str = "offsite-status.json";

/// The last failure of an upload round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    pub at: Timestamp,
    pub message: String,
}

/// The instants a restore from the bucket alone can reach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// `s3://bucket/prefix`.
    pub url: String,
    /// When this status was written.
    pub updated: Option<Timestamp>,
    pub last_upload: Option<Timestamp>,
    pub last_error: Option<LastError>,
    /// Files sealed in `backup.dir` and not yet in the bucket.
    pub pending_files: u64,
    /// When the oldest of those was sealed (its age is the off-site lag).
    pub oldest_pending: Option<Timestamp>,
    pub remote_objects: u64,
    pub window: Window,
}

impl Status {
    /// Seconds from the oldest pending file's sealing to `now` (0 when caught up).
    pub fn lag_seconds(&self, now: Timestamp) -> f64 {
        self.oldest_pending.map_or(0.0, |t| (now.micros().saturating_sub(t.micros())).max(0) as f64 / 1e6)
    }

    /// Whether the last round failed (no upload succeeded since the error).
    pub fn failing(&self) -> bool {
        match (&self.last_error, self.last_upload) {
            (Some(e), Some(up)) => e.at > up,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// Exports the status as `docket_offsite_*` gauges.
    pub fn publish(&self, metrics: &Metrics, now: Timestamp) {
        let seconds = |t: Option<Timestamp>| t.map_or(0.0, |t| t.micros() as f64 / 1e6);
        metrics.gauge(
            "docket_offsite_lag_seconds",
            "Age of the oldest sealed file in backup.dir not yet in off-site storage (0: caught up).",
            vec![],
            self.lag_seconds(now),
        );
        metrics.gauge(
            "docket_offsite_pending_files",
            "Sealed files waiting for upload.",
            vec![],
            self.pending_files as f64,
        );
        metrics.gauge(
            "docket_offsite_up",
            "1 when the last off-site round succeeded.",
            vec![],
            if self.failing() { 0.0 } else { 1.0 },
        );
        metrics.gauge(
            "docket_offsite_last_upload_timestamp_seconds",
            "When a file last reached off-site storage (0: never).",
            vec![],
            seconds(self.last_upload),
        );
        metrics.gauge(
            "docket_offsite_last_error_timestamp_seconds",
            "When an off-site round last failed (0: never).",
            vec![],
            seconds(self.last_error.as_ref().map(|e| e.at)),
        );
        metrics.gauge(
            "docket_offsite_window_start_timestamp_seconds",
            "The earliest instant a restore from off-site storage alone reaches (0: none).",
            vec![],
            seconds(self.window.start),
        );
        metrics.gauge(
            "docket_offsite_window_end_timestamp_seconds",
            "The latest instant a restore from off-site storage alone reaches (0: none).",
            vec![],
            seconds(self.window.end),
        );
    }
}

/// The status file of `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(STATUS_FILE)
}

/// The status the service last wrote, if any.
pub fn read(data_dir: &Path) -> Option<Status> {
    serde_json::from_slice(&std::fs::read(path(data_dir)).ok()?).ok()
}

/// Writes `status` atomically (temp, rename) with mode 0600.
pub fn write(data_dir: &Path, status: &Status) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let target = path(data_dir);
    let temp = data_dir.join(format!(".{STATUS_FILE}.{}.tmp", std::process::id()));
    let text = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp)?;
    file.write_all(&text)?;
    drop(file);
    std::fs::rename(&temp, &target)
}
