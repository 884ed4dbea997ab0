//! The history of scheduled jobs: each run's start, end, outcome, bytes,
//! items and error, kept in the store (so it survives restarts) and bounded
//! to the newest [`KEEP`] runs per job.
//!
//! Runs of appliance-wide jobs live in the system table `job_runs`; runs of
//! an org's own jobs (its Clio sync) in the tenant table `org_job_runs`, so
//! reading them takes that org's scope. Keys are `job name ++ 0 ++ start`
//! (microseconds, big-endian), so a job's runs read oldest first.
use crate::store::{
    JOB_RUNS, ORG_JOB_RUNS, OrgId, OrgScope, OrgTask, OrgTaskContext, Reader, Rows, Store, StoreError, SystemContext,
    Task, Tx,
};
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Runs kept per job (and per org for an org's jobs).
pub const KEEP: usize = 100;

const SYSTEM: SystemContext = SystemContext::new(Task::Scheduler);
const ORG_JOBS: OrgTaskContext = OrgTaskContext::new(OrgTask::OrgJobs);

/// Whom a job runs for: the appliance, or one org.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Appliance,
    Org(OrgId),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Appliance => f.write_str("appliance"),
            Target::Org(org) => write!(f, "org {org}"),
        }
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Error,
    /// Cut short by a stop of the service; it does not count as a run (the
    /// next start runs it again).
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// One run of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub started: Timestamp,
    pub ended: Timestamp,
    pub outcome: Outcome,
    /// Bytes written (a backup's size, say), when the job reports them.
    #[serde(default)]
    pub bytes: Option<u64>,
    /// Items handled (sessions deleted, records purged), when the job reports them.
    #[serde(default)]
    pub items: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
}

fn prefix(job: &str) -> Vec<u8> {
    let mut key = job.as_bytes().to_vec();
    key.push(0);
    key
}

fn key(job: &str, started: Timestamp) -> Vec<u8> {
    let mut key = prefix(job);
    key.extend_from_slice(&started.micros().max(0).to_be_bytes());
    key
}

/// The org scope the scheduler writes an org's history with.
fn org_scope(org: OrgId) -> OrgScope {
    ORG_JOBS.org_scope(org)
}

fn rows(r: &impl Reader, target: Target, prefix: &[u8]) -> Result<Rows, StoreError> {
    match target {
        Target::Appliance => r.scan_system(&JOB_RUNS, prefix),
        Target::Org(org) => r.scan(&org_scope(org), &ORG_JOB_RUNS, prefix),
    }
}

fn decode(rows: Rows) -> Vec<Run> {
    rows.into_iter().filter_map(|(_, v)| serde_json::from_slice(&v).ok()).collect()
}

/// Records `run` of `job` for `target` and drops the oldest runs beyond `keep`.
pub fn record(w: &mut Tx, job: &str, target: Target, run: &Run, keep: usize) -> Result<(), StoreError> {
    let value = serde_json::to_vec(run).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let key = key(job, run.started);
    match target {
        Target::Appliance => w.put_system(&SYSTEM, &JOB_RUNS, &key, &value)?,
        Target::Org(org) => w.put(&org_scope(org), &ORG_JOB_RUNS, &key, &value)?,
    }
    let all = rows(w, target, &prefix(job))?;
    let surplus = all.len().saturating_sub(keep.max(1));
    for (old, _) in all.into_iter().take(surplus) {
        match target {
            Target::Appliance => w.delete_system(&SYSTEM, &JOB_RUNS, &old)?,
            // A tenant scan gives keys without the org prefix, as `delete` takes them.
            Target::Org(org) => w.delete(&org_scope(org), &ORG_JOB_RUNS, &old)?,
        };
    }
    Ok(())
}

/// The newest `limit` runs of `job` for `target`, newest first.
pub fn runs(r: &impl Reader, job: &str, target: Target, limit: usize) -> Result<Vec<Run>, StoreError> {
    let mut runs = decode(rows(r, target, &prefix(job))?);
    runs.reverse();
    runs.truncate(limit);
    Ok(runs)
}

/// The newest `limit` runs of an org's `job`, read with the caller's own scope.
pub fn org_runs(r: &impl Reader, scope: &OrgScope, job: &str, limit: usize) -> Result<Vec<Run>, StoreError> {
    let mut runs = decode(r.scan(scope, &ORG_JOB_RUNS, &prefix(job))?);
    runs.reverse();
    runs.truncate(limit);
    Ok(runs)
}

/// The newest run of `job` for `target`.
pub fn last(store: &Store, job: &str, target: Target) -> Result<Option<Run>, StoreError> {
    Ok(store.read(|r| runs(r, job, target, 1))?.into_iter().next())
}

/// Every recorded run, by job and target, newest first (for `docket jobs`
/// when no service runs). `orgs` are the orgs whose history is read.
pub fn everything(
    store: &Store,
    orgs: &[OrgId],
    limit: usize,
) -> Result<BTreeMap<(String, Target), Vec<Run>>, StoreError> {
    store.read(|r| {
        let mut all: BTreeMap<(String, Target), Vec<Run>> = BTreeMap::new();
        let targets = std::iter::once(Target::Appliance).chain(orgs.iter().map(|o| Target::Org(*o)));
        for target in targets {
            for (key, value) in rows(r, target, b"")? {
                let name = key.split(|b| *b == 0).next().unwrap_or_default();
                if let Ok(run) = serde_json::from_slice::<Run>(&value) {
                    all.entry((String::from_utf8_lossy(name).into_owned(), target)).or_default().push(run);
                }
            }
        }
        for runs in all.values_mut() {
            runs.reverse();
            runs.truncate(limit);
        }
        Ok(all)
    })
}
