//! `/system`: what this appliance is running.
use super::auth::Caller;
use super::problem::{ApiError, ApiResult};
use crate::auth::Permission;
use crate::state::AppState;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};
use std::sync::Arc;

#[derive(Tags)]
enum Tag {
    /// The appliance itself.
    System,
}

pub struct SystemApi {
    pub state: Arc<AppState>,
}

/// Version and state of the appliance.
#[derive(Object)]
pub struct SystemStatus {
    /// docket version.
    pub version: String,
    /// Schema version of the store.
    pub schema_version: u32,
    /// Sequence number of the newest journal entry.
    pub journal_seq: u64,
    /// Seconds since the process started.
    pub uptime_seconds: u64,
    /// `self-signed`, `files`, `acme` or `off`.
    pub tls_mode: String,
}

#[OpenApi(prefix_path = "/system", tag = "Tag::System")]
impl SystemApi {
    /// Appliance status
    ///
    /// Requires permission `org:read`.
    #[oai(path = "/status", method = "get", operation_id = "system.status")]
    async fn status(&self, auth: Caller) -> ApiResult<Json<SystemStatus>> {
        auth.require(Permission::OrgRead)?;
        let store = &self.state.store;
        let tls_mode = serde_json::to_value(self.state.config.tls.mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        Ok(Json(SystemStatus {
            version: crate::VERSION.into(),
            schema_version: store.schema_version().map_err(ApiError::from)?.unwrap_or(0),
            journal_seq: store.journal_head().map_err(ApiError::from)?,
            uptime_seconds: self.state.started.elapsed().as_secs(),
            tls_mode,
        }))
    }
}
