//! `/system`: what this appliance is running.
use super::auth::Caller;
use super::problem::{ApiError, ApiResult};
use crate::auth::Permission;
use crate::lifecycle::scheduler::Target;
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

/// One run of a scheduled job.
#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobRunView {
    /// RFC 3339.
    pub started: String,
    /// RFC 3339.
    pub ended: String,
    /// `ok`, `error`, or `cancelled` (cut short by a stop of the service; it runs again at start).
    pub outcome: String,
    /// Bytes written, when the job reports them.
    pub bytes: Option<u64>,
    /// Items handled (sessions deleted, records purged), when the job reports them.
    pub items: Option<u64>,
    /// Why the run failed.
    pub error: Option<String>,
}

/// A scheduled job, for the appliance or for the caller's firm.
#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobView {
    /// The job's fixed name, e.g. `clio-sync`, `session-sweep`.
    pub name: String,
    /// `appliance` (a job of the whole appliance) or `org` (the caller's firm's own).
    pub scope: String,
    /// Cron expression (seconds first, UTC).
    pub schedule: String,
    /// Whether a run is going on now.
    pub running: bool,
    /// RFC 3339; absent while it runs or when the schedule has no later instant.
    pub next_run: Option<String>,
    /// The last runs, newest first.
    pub runs: Vec<JobRunView>,
}

/// The scheduled jobs the caller may see.
#[derive(Object)]
pub struct JobList {
    pub jobs: Vec<JobView>,
}

/// Runs per job the API shows.
const JOB_RUNS_SHOWN: usize = 20;

impl From<crate::lifecycle::scheduler::JobView> for JobView {
    fn from(v: crate::lifecycle::scheduler::JobView) -> Self {
        let scope = match v.target {
            Target::Appliance => "appliance",
            Target::Org(_) => "org",
        };
        JobView {
            name: v.job,
            scope: scope.into(),
            schedule: v.schedule,
            running: v.running,
            next_run: v.next_run.map(|t| t.to_rfc3339()),
            runs: v
                .runs
                .into_iter()
                .map(|r| JobRunView {
                    started: r.started.to_rfc3339(),
                    ended: r.ended.to_rfc3339(),
                    outcome: r.outcome.as_str().into(),
                    bytes: r.bytes,
                    items: r.items,
                    error: r.error,
                })
                .collect(),
        }
    }
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

    /// Scheduled jobs
    ///
    /// The caller's firm's own jobs (its Clio sync and reconcile) and the
    /// appliance-wide jobs (session sweep, purge, backups): schedule, next run
    /// and the last runs. On an appliance serving several firms, the
    /// appliance-wide runs show times and outcomes only.
    ///
    /// Requires permission `org:write`.
    #[oai(path = "/jobs", method = "get", operation_id = "system.jobs")]
    async fn jobs(&self, auth: Caller) -> ApiResult<Json<JobList>> {
        let scope = auth.require(Permission::OrgWrite)?.scope().clone();
        let scheduler = self.state.scheduler.clone();
        let views = super::off_worker(&self.state.store, move |_| {
            scheduler.firm_overview(&scope, JOB_RUNS_SHOWN).map_err(ApiError::from)
        })
        .await?;
        Ok(Json(JobList { jobs: views.into_iter().map(JobView::from).collect() }))
    }
}
