//! The one in-process scheduler: every background job of the appliance (the
//! Clio sync and reconcile of each connected firm, the session sweep, the
//! purge of disconnected firms' data; later backups, verification, journal
//! segment retention) is a [`Job`] registered here.
//!
//! - **Schedules** are cron expressions from the config ([`Schedule`]),
//!   evaluated in UTC against the scheduler's [`Clock`].
//! - **Due.** A job is due at the first scheduled instant after its last run
//!   *ended* (read back from the store's history at start). So a run never
//!   overlaps itself (a slot that passes while it runs is skipped, counted as
//!   `skipped`), and runs missed while the service was down run once at
//!   start, not once per missed slot; so does a run cut short by a stop
//!   (recorded as `cancelled`). A job that never ran is due at once (or at
//!   its next slot, [`Job::first_run_at_next_slot`]).
//! - **Exclusion groups** ([`Job::exclusive`]): jobs of one group never run
//!   together (backup and restore). Appliance-wide runs of a group also hold
//!   the lock file `<data_dir>/locks/<group>.lock` ([`ExclusionLock`]), which
//!   an offline CLI command takes too, so a `docket restore` and the
//!   service's backup exclude each other across processes.
//! - **History** of each run goes to the store (`lifecycle::jobs`), and to
//!   `/metrics`: `docket_job_runs_total{name,outcome}`,
//!   `docket_job_last_duration_seconds{name}`,
//!   `docket_job_last_success_timestamp_seconds{name}` (plus `org` for an
//!   org's jobs; job names are fixed strings, so labels stay bounded; the
//!   label is `name`, as Prometheus keeps `job` for the scrape job).
//! - **Time is an input.** [`Scheduler::tick`] starts what is due at the
//!   clock's now; tests drive a fixed clock and tick. [`Scheduler::spawn`]
//!   is the production loop: it sleeps until the next due instant and wakes
//!   early on [`Scheduler::wake`] (a run ended, an org connected, a reload).
//!
//! Registering a job, and taking its exclusion from an offline command:
//!
//! ```no_run
//! # fn wire(state: std::sync::Arc<docket::state::AppState>) -> Result<(), String> {
//! use docket::lifecycle::scheduler::{BACKUP_RESTORE, Done, ExclusionLock, Job, Target};
//! let schedule = docket::config::Schedule::parse("0 0 3 * * *")?; // from the config in practice
//! let backup = Job::new("backup", schedule, |_: Target| async move {
//!     // ... write the backup ...
//!     Ok(Done::bytes(1024))
//! });
//! state.scheduler.register(backup.exclusive(BACKUP_RESTORE));
//! // `docket restore` (no service needed) waits for no backup and lets none start meanwhile:
//! let _held = ExclusionLock::take(&state.config.data_dir, BACKUP_RESTORE, "docket restore")?;
//! # Ok(())
//! # }
//! ```
pub use super::jobs::{Outcome, Run, Target};
use crate::clock::Clock;
use crate::config::Schedule;
use crate::store::{OrgId, OrgScope, Store, StoreError};
use crate::telemetry::Metrics;
use crate::timestamp::Timestamp;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::future::Future;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The exclusion group of backups, their verification and restores (they
/// must never run together, in the service or from the CLI).
pub const BACKUP_RESTORE: &str = "backup-restore";

/// The longest the loop sleeps without looking again (a wall clock that
/// jumps, a schedule whose next instant is years away).
const MAX_SLEEP: Duration = Duration::from_secs(300);
/// How soon a run kept waiting by another process's lock tries again.
const LOCK_RETRY: Duration = Duration::from_secs(30);

/// What a successful run reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Done {
    pub bytes: Option<u64>,
    pub items: Option<u64>,
}

impl Done {
    pub fn items(items: u64) -> Done {
        Done { bytes: None, items: Some(items) }
    }

    pub fn bytes(bytes: u64) -> Done {
        Done { bytes: Some(bytes), items: None }
    }
}

/// A run's result: what it did, or an error message for the operator.
pub type JobResult = Result<Done, String>;
type RunFuture = Pin<Box<dyn Future<Output = JobResult> + Send>>;
type RunFn = Arc<dyn Fn(Target) -> RunFuture + Send + Sync>;
type OrgsFn = Arc<dyn Fn() -> Vec<OrgId> + Send + Sync>;

/// When a job that never ran first runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FirstRun {
    AtOnce,
    AtNextSlot,
}

/// A job: a fixed name, a schedule, an optional exclusion group, whom it runs
/// for, and its run function.
#[derive(Clone)]
pub struct Job {
    name: &'static str,
    schedule: Schedule,
    group: Option<&'static str>,
    orgs: Option<OrgsFn>,
    first_run: FirstRun,
    run: RunFn,
}

impl Job {
    /// An appliance-wide job named `name` (a fixed string: it is a metrics
    /// label) running `run` on `schedule`.
    pub fn new<F, Fut>(name: &'static str, schedule: Schedule, run: F) -> Job
    where
        F: Fn(Target) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        let run: RunFn = Arc::new(move |target| Box::pin(run(target)));
        Job { name, schedule, group: None, orgs: None, first_run: FirstRun::AtOnce, run }
    }

    /// Never runs while another job of `group` runs (in this process, or,
    /// for appliance-wide runs, in any process holding the group's lock file).
    pub fn exclusive(mut self, group: &'static str) -> Job {
        self.group = Some(group);
        self
    }

    /// Runs once per org that `orgs` lists (asked at every look), each with
    /// its own history; the run function gets `Target::Org`.
    pub fn per_org(mut self, orgs: impl Fn() -> Vec<OrgId> + Send + Sync + 'static) -> Job {
        self.orgs = Some(Arc::new(orgs));
        self
    }

    /// A job that never ran waits for its next slot instead of running at once.
    pub fn first_run_at_next_slot(mut self) -> Job {
        self.first_run = FirstRun::AtNextSlot;
        self
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    fn targets(&self) -> Vec<Target> {
        match &self.orgs {
            None => vec![Target::Appliance],
            Some(orgs) => orgs().into_iter().map(Target::Org).collect(),
        }
    }
}

/// What the scheduler knows of one (job, target).
struct Instance {
    /// When the last run ended (from the store's history at first sight).
    last_end: Option<i64>,
    /// When the scheduler first saw it (a never-run job counts from here).
    first_seen: i64,
    /// The run in flight: its abort handle and start.
    running: Option<(tokio::task::AbortHandle, i64)>,
    /// A slot passed while it ran (counted once as `skipped`).
    skipped: bool,
}

#[derive(Default)]
struct Inner {
    jobs: Vec<Job>,
    instances: HashMap<(&'static str, Target), Instance>,
    busy_groups: HashSet<&'static str>,
}

/// A run the scheduler started; await it with [`Started::finished`].
pub struct Started {
    pub job: &'static str,
    pub target: Target,
    handle: tokio::task::JoinHandle<()>,
}

impl Started {
    /// Waits until the run ended and its history was recorded.
    pub async fn finished(self) {
        let _ = self.handle.await;
    }
}

/// Where one (job, target) stands.
enum Look {
    Running,
    /// Not due yet: due at this instant, if ever.
    Waiting(Option<i64>),
    Due,
}

/// What one look at the schedule did.
pub struct Tick {
    pub started: Vec<Started>,
    /// The earliest instant a job that is not running becomes due.
    pub next: Option<i64>,
    /// A due run waits for another process's exclusion lock.
    pub waiting_for_lock: bool,
}

/// Why [`Scheduler::run_now`] did not start a run.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotStarted {
    #[error("no job is named `{0}`")]
    Unknown(String),
    #[error("`{0}` is running already; it was not started twice")]
    Running(&'static str),
    #[error("`{job}` waits: another job of its exclusion group `{group}` is running")]
    Busy { job: &'static str, group: &'static str },
    #[error("`{job}` waits: {holder}")]
    Locked { job: &'static str, holder: String },
}

/// One (job, target) as the API and `docket jobs` show it.
#[derive(Clone, Debug)]
pub struct JobView {
    pub job: String,
    pub target: Target,
    pub schedule: String,
    pub group: Option<&'static str>,
    pub running: bool,
    pub next_run: Option<Timestamp>,
    /// Newest first.
    pub runs: Vec<Run>,
}

/// The scheduler of one appliance.
pub struct Scheduler {
    store: Arc<Store>,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// Where the exclusion lock files live (the data dir).
    lock_dir: PathBuf,
    keep: usize,
    inner: Mutex<Inner>,
    wake: Notify,
}

impl Scheduler {
    /// A scheduler with no jobs; `data_dir` holds the exclusion lock files.
    pub fn new(store: Arc<Store>, clock: Clock, metrics: Arc<Metrics>, data_dir: &Path) -> Scheduler {
        Scheduler {
            store,
            clock,
            metrics,
            lock_dir: data_dir.to_path_buf(),
            keep: super::jobs::KEEP,
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
        }
    }

    /// Keeps `keep` runs per job instead of [`super::jobs::KEEP`].
    pub fn keeping(mut self, keep: usize) -> Scheduler {
        self.keep = keep.max(1);
        self
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `job` (replacing a job of the same name) and wakes the loop.
    pub fn register(&self, job: Job) {
        let mut inner = self.inner();
        inner.jobs.retain(|j| j.name != job.name);
        inner.jobs.push(job);
        drop(inner);
        self.wake();
    }

    /// Gives job `name` a new schedule (a config reload); false if there is no such job.
    pub fn reschedule(&self, name: &str, schedule: Schedule) -> bool {
        let mut inner = self.inner();
        let Some(job) = inner.jobs.iter_mut().find(|j| j.name == name) else { return false };
        job.schedule = schedule;
        drop(inner);
        self.wake();
        true
    }

    /// Makes the loop look at the schedule now (an org connected, a run ended).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The registered job names.
    pub fn job_names(&self) -> Vec<&'static str> {
        self.inner().jobs.iter().map(|j| j.name).collect()
    }

    /// Starts every run that is due at the clock's now and may start.
    pub fn tick(self: &Arc<Self>) -> Tick {
        let now = self.clock.now_micros();
        let jobs = self.inner().jobs.clone();
        let mut tick = Tick { started: vec![], next: None, waiting_for_lock: false };
        for job in &jobs {
            for target in job.targets() {
                match self.look(job, target, now) {
                    Look::Running => {}
                    Look::Waiting(next) => tick.next = tick.next.into_iter().chain(next).min(),
                    Look::Due => match self.start(job, target) {
                        Ok(started) => tick.started.push(started),
                        Err(NotStarted::Locked { .. }) => tick.waiting_for_lock = true,
                        Err(_) => {}
                    },
                }
            }
        }
        tick
    }

    /// Where (job, target) stands at `now`; a slot that passed while it runs
    /// is counted once as `skipped`.
    fn look(&self, job: &Job, target: Target, now: i64) -> Look {
        let due = self.due_at(job, target, now);
        let mut inner = self.inner();
        let Some(instance) = inner.instances.get_mut(&(job.name, target)) else { return Look::Waiting(None) };
        if let Some((_, started)) = instance.running {
            if !instance.skipped && job.schedule.next_after(started).is_some_and(|t| t <= now) {
                instance.skipped = true;
                self.count(job.name, target, "skipped");
                tracing::info!(job = job.name, target = %target, "a scheduled run was skipped: the previous run is still going");
            }
            return Look::Running;
        }
        match due {
            Some(t) if t <= now => Look::Due,
            later => Look::Waiting(later),
        }
    }

    /// Ticks, then waits for the runs it started (tests step the scheduler with this).
    pub async fn run_due(self: &Arc<Self>) -> Vec<(&'static str, Target)> {
        let tick = self.tick();
        let mut ran = vec![];
        for started in tick.started {
            ran.push((started.job, started.target));
            started.finished().await;
        }
        ran
    }

    /// Starts a run of `job` for `target` now, whatever its schedule
    /// ("backup now"); never a second run of one already running.
    pub fn run_now(self: &Arc<Self>, job: &str, target: Target) -> Result<Started, NotStarted> {
        let found = self.inner().jobs.iter().find(|j| j.name == job).cloned();
        let job = found.ok_or_else(|| NotStarted::Unknown(job.to_string()))?;
        let now = self.clock.now_micros();
        let _ = self.due_at(&job, target, now);
        self.start(&job, target)
    }

    /// When `job` is next due for `target`, loading its last run from the
    /// store the first time this (job, target) is seen.
    fn due_at(&self, job: &Job, target: Target, now: i64) -> Option<i64> {
        let known = self.inner().instances.contains_key(&(job.name, target));
        if !known {
            let last = self.load_last(job.name, target);
            self.inner().instances.entry((job.name, target)).or_insert(Instance {
                last_end: last,
                first_seen: now,
                running: None,
                skipped: false,
            });
        }
        let inner = self.inner();
        let instance = inner.instances.get(&(job.name, target))?;
        match (instance.last_end, job.first_run) {
            (Some(end), _) => job.schedule.next_after(end),
            (None, FirstRun::AtOnce) => Some(instance.first_seen),
            (None, FirstRun::AtNextSlot) => job.schedule.next_after(instance.first_seen),
        }
    }

    /// The end of the last recorded run; publishes its last success to `/metrics`.
    fn load_last(&self, job: &'static str, target: Target) -> Option<i64> {
        let runs = match self.store.read(|r| super::jobs::runs(r, job, target, self.keep)) {
            Ok(runs) => runs,
            Err(e) => {
                tracing::warn!(job, target = %target, error = %e, "cannot read the job's history; treating it as never run");
                return None;
            }
        };
        if let Some(ok) = runs.iter().find(|r| r.outcome == Outcome::Ok) {
            self.gauge_success(job, target, ok.ended);
        }
        // A run cut short by a stop does not count: the start runs it again.
        runs.iter().find(|r| r.outcome != Outcome::Cancelled).map(|r| r.ended.micros().max(r.started.micros()))
    }

    /// Starts one run unless it runs already or its group is busy.
    fn start(self: &Arc<Self>, job: &Job, target: Target) -> Result<Started, NotStarted> {
        let mut inner = self.inner();
        let instance = inner.instances.get(&(job.name, target));
        if instance.is_some_and(|i| i.running.is_some()) {
            return Err(NotStarted::Running(job.name));
        }
        let mut file_lock = None;
        if let Some(group) = job.group {
            if inner.busy_groups.contains(group) {
                return Err(NotStarted::Busy { job: job.name, group });
            }
            if target == Target::Appliance {
                match ExclusionLock::try_take(&self.lock_dir, group) {
                    Ok(Some(lock)) => file_lock = Some(lock),
                    Ok(None) => {
                        let holder = ExclusionLock::holder(&self.lock_dir, group);
                        tracing::info!(job = job.name, group, holder = %holder, "a due run waits for the exclusion lock");
                        return Err(NotStarted::Locked { job: job.name, holder });
                    }
                    Err(e) => {
                        tracing::warn!(job = job.name, group, error = %e, "cannot take the exclusion lock; the run waits");
                        return Err(NotStarted::Locked { job: job.name, holder: format!("the lock file: {e}") });
                    }
                }
            }
            inner.busy_groups.insert(group);
        }
        let run = tokio::spawn((job.run)(target));
        let abort = run.abort_handle();
        let now = self.clock.now_micros();
        let instance = inner.instances.entry((job.name, target)).or_insert(Instance {
            last_end: None,
            first_seen: now,
            running: None,
            skipped: false,
        });
        instance.running = Some((abort, now));
        instance.skipped = false;
        drop(inner);
        let me = self.clone();
        let (name, group) = (job.name, job.group);
        let handle = tokio::spawn(async move {
            let started = Timestamp::from_micros(now);
            let (result, cancelled) = match run.await {
                Ok(result) => (result, false),
                Err(e) if e.is_cancelled() => (Err("cut short: the service stopped".to_string()), true),
                Err(_) => (Err("the run failed unexpectedly (a bug: see the service log)".to_string()), false),
            };
            drop(file_lock);
            me.finish(name, group, target, started, result, cancelled).await;
        });
        tracing::info!(job = name, target = %target, "job started");
        Ok(Started { job: name, target, handle })
    }

    /// Records a run's history and metrics, frees its instance and group, and wakes the loop.
    async fn finish(
        &self,
        job: &'static str,
        group: Option<&'static str>,
        target: Target,
        started: Timestamp,
        result: JobResult,
        cancelled: bool,
    ) {
        let ended = Timestamp::from_micros(self.clock.now_micros().max(started.micros()));
        let (outcome, done, error) = match result {
            Ok(done) => (Outcome::Ok, done, None),
            Err(e) if cancelled => (Outcome::Cancelled, Done::default(), Some(e)),
            Err(e) => (Outcome::Error, Done::default(), Some(e)),
        };
        let run = Run { started, ended, outcome, bytes: done.bytes, items: done.items, error };
        match &run.error {
            None => tracing::info!(job, target = %target, items = ?run.items, bytes = ?run.bytes, "job finished"),
            Some(e) => tracing::warn!(job, target = %target, error = %e, "job failed; it runs again at its next slot"),
        }
        let (store, keep, stored) = (self.store.clone(), self.keep, run.clone());
        let recorded =
            tokio::task::spawn_blocking(move || store.write(|w| super::jobs::record(w, job, target, &stored, keep)))
                .await;
        if !matches!(recorded, Ok(Ok(()))) {
            tracing::warn!(job, target = %target, "could not record the job's run in the store");
        }
        self.count(job, target, outcome.as_str());
        let seconds = (ended.micros() - started.micros()) as f64 / 1e6;
        self.metrics.gauge(
            "docket_job_last_duration_seconds",
            "How long the job's last run took.",
            labels(job, target),
            seconds,
        );
        if outcome == Outcome::Ok {
            self.gauge_success(job, target, ended);
        }
        let mut inner = self.inner();
        if let Some(instance) = inner.instances.get_mut(&(job, target)) {
            instance.running = None;
            if outcome != Outcome::Cancelled {
                instance.last_end = Some(ended.micros());
            }
        }
        if let Some(group) = group {
            inner.busy_groups.remove(group);
        }
        drop(inner);
        self.wake();
    }

    fn count(&self, job: &'static str, target: Target, outcome: &'static str) {
        let mut labels = labels(job, target);
        labels.push(("outcome", outcome.to_string()));
        self.metrics.count("docket_job_runs_total", "Runs of each scheduled job, by outcome.", labels, 1);
    }

    fn gauge_success(&self, job: &'static str, target: Target, at: Timestamp) {
        self.metrics.gauge(
            "docket_job_last_success_timestamp_seconds",
            "When the job's last successful run ended (Unix seconds).",
            labels(job, target),
            at.micros() as f64 / 1e6,
        );
    }

    /// The production loop: ticks, then sleeps until the next due instant
    /// (at most [`MAX_SLEEP`]) or until woken. Abort the handle to stop it;
    /// [`Scheduler::stop`] cancels the runs in flight.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let tick = me.tick();
                let now = me.clock.now_micros();
                let mut wait = tick
                    .next
                    .map(|t| Duration::from_micros(u64::try_from(t.saturating_sub(now)).unwrap_or(0)))
                    .unwrap_or(MAX_SLEEP)
                    .min(MAX_SLEEP);
                if tick.waiting_for_lock {
                    wait = wait.min(LOCK_RETRY);
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = me.wake.notified() => {}
                }
            }
        })
    }

    /// Cancels every run in flight (at shutdown; each is recorded as cancelled
    /// if its history can still be written).
    pub fn stop(&self) {
        for instance in self.inner().instances.values() {
            if let Some((run, _)) = &instance.running {
                run.abort();
            }
        }
    }

    /// Every (job, target) that `show` admits, with its schedule, next run and
    /// newest `history` runs (read through `read_runs`, so a firm's own runs
    /// are read with its own scope).
    pub fn overview(
        &self,
        show: impl Fn(Target) -> bool,
        read_runs: impl Fn(&'static str, Target) -> Result<Vec<Run>, StoreError>,
    ) -> Result<Vec<JobView>, StoreError> {
        let now = self.clock.now_micros();
        let jobs = self.inner().jobs.clone();
        let mut views = vec![];
        for job in &jobs {
            let mut targets = job.targets();
            targets.extend(self.inner().instances.keys().filter(|(n, _)| *n == job.name).map(|(_, t)| *t));
            targets.sort();
            targets.dedup();
            for target in targets.into_iter().filter(|t| show(*t)) {
                let next = self.due_at(job, target, now).map(|t| Timestamp::from_micros(t.max(now)));
                let running = self.inner().instances.get(&(job.name, target)).is_some_and(|i| i.running.is_some());
                views.push(JobView {
                    job: job.name.to_string(),
                    target,
                    schedule: job.schedule.expr().to_string(),
                    group: job.group,
                    running,
                    next_run: if running { None } else { next },
                    runs: read_runs(job.name, target)?,
                });
            }
        }
        Ok(views)
    }
}

impl Scheduler {
    /// Every job of the appliance and of every firm, for the sysadmin (`docket jobs`).
    pub fn overview_all(&self, history: usize) -> Result<Vec<JobView>, StoreError> {
        self.overview(|_| true, |job, target| self.store.read(|r| super::jobs::runs(r, job, target, history)))
    }

    /// What a firm's admin sees: the firm's own jobs, read with its own
    /// scope, and the appliance-wide jobs' times and outcomes. While the
    /// appliance serves more than one firm, nothing of an appliance-wide run
    /// that could describe another firm's data is shown: no bytes, no items,
    /// no error text.
    pub fn firm_overview(&self, scope: &OrgScope, history: usize) -> Result<Vec<JobView>, StoreError> {
        let shared = self.store.list_orgs()?.len() > 1;
        self.overview(
            |target| target == Target::Appliance || target == Target::Org(scope.org()),
            |job, target| {
                self.store.read(|r| match target {
                    Target::Org(_) => super::jobs::org_runs(r, scope, job, history),
                    Target::Appliance => {
                        let runs = super::jobs::runs(r, job, target, history)?;
                        Ok(if shared { runs.into_iter().map(redact).collect() } else { runs })
                    }
                })
            },
        )
    }
}

/// An appliance-wide run as a firm sees it on a shared appliance.
fn redact(run: Run) -> Run {
    let error = run.error.map(|_| REDACTED_ERROR.to_string());
    Run { bytes: None, items: None, error, ..run }
}

/// What a firm on a shared appliance reads instead of an appliance-wide job's error.
pub const REDACTED_ERROR: &str = "failed; the appliance's operator sees why with `docket jobs`";

/// The recorded runs when no service runs (`docket jobs` on a stopped service).
pub fn recorded(store: &Store, orgs: &[OrgId], history: usize) -> Result<Vec<JobView>, StoreError> {
    Ok(super::jobs::everything(store, orgs, history)?
        .into_iter()
        .map(|((job, target), runs)| JobView {
            job,
            target,
            schedule: "-".into(),
            group: None,
            running: false,
            next_run: None,
            runs,
        })
        .collect())
}

/// The listing `docket jobs` prints: a line per job and target, then its last runs.
pub fn describe(views: &[JobView]) -> String {
    let time = |t: Option<Timestamp>| t.map_or("-".to_string(), |t| t.to_rfc3339());
    let mut out = String::new();
    for v in views {
        let state = if v.running { "running now".to_string() } else { format!("next {}", time(v.next_run)) };
        let group = v.group.map(|g| format!(", excludes `{g}`")).unwrap_or_default();
        out.push_str(&format!("{} ({}): schedule \"{}\", {state}{group}\n", v.job, v.target, v.schedule));
        if v.runs.is_empty() {
            out.push_str("    no run recorded\n");
        }
        for run in &v.runs {
            let mut line = format!("    {} {} to {}", run.outcome.as_str(), run.started, run.ended);
            if let Some(b) = run.bytes {
                line.push_str(&format!(", {b} bytes"));
            }
            if let Some(n) = run.items {
                line.push_str(&format!(", {n} items"));
            }
            if let Some(e) = &run.error {
                line.push_str(&format!(": {e}"));
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

fn labels(job: &'static str, target: Target) -> Vec<(&'static str, String)> {
    match target {
        Target::Appliance => vec![("name", job.to_string())],
        Target::Org(org) => vec![("name", job.to_string()), ("org", org.to_string())],
    }
}

/// An exclusion group's lock file, held while one of its runs goes on: the
/// service's scheduler and offline CLI commands (`docket restore`) take the
/// same file, so they exclude each other across processes. Released on drop
/// (and by the kernel if the process dies).
#[derive(Debug)]
pub struct ExclusionLock {
    file: File,
    path: PathBuf,
}

impl ExclusionLock {
    fn path(data_dir: &Path, group: &str) -> PathBuf {
        data_dir.join("locks").join(format!("{group}.lock"))
    }

    /// Takes the lock of `group` if no one holds it; `Ok(None)` if someone does.
    pub fn try_take(data_dir: &Path, group: &str) -> std::io::Result<Option<ExclusionLock>> {
        let path = Self::path(data_dir, group);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(Some(ExclusionLock { file, path }))
    }

    /// Takes the lock of `group` for a CLI command, or says who holds it and what to do.
    pub fn take(data_dir: &Path, group: &str, command: &str) -> Result<ExclusionLock, String> {
        match Self::try_take(data_dir, group) {
            Ok(Some(lock)) => Ok(lock),
            Ok(None) => Err(format!(
                "`{command}` cannot run now: {} (lock {})\n  fix: wait for it to finish (`docket jobs` lists what runs), then try again",
                Self::holder(data_dir, group),
                Self::path(data_dir, group).display()
            )),
            Err(e) => Err(format!(
                "`{command}` cannot take its lock {}: {e}\n  fix: make the data dir writable by the user running docket",
                Self::path(data_dir, group).display()
            )),
        }
    }

    /// Who holds the lock of `group`, as well as the file tells.
    pub fn holder(data_dir: &Path, group: &str) -> String {
        let mut pid = String::new();
        let _ = File::open(Self::path(data_dir, group)).and_then(|mut f| f.read_to_string(&mut pid));
        match pid.trim() {
            "" => format!("another process holds the exclusion lock `{group}`"),
            pid => format!("process {pid} holds the exclusion lock `{group}`"),
        }
    }

    pub fn path_held(&self) -> &Path {
        &self.path
    }
}

impl Drop for ExclusionLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OrgTask, OrgTaskContext};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn at(t: &str) -> i64 {
        Timestamp::parse(t).unwrap().micros()
    }

    struct Fixture {
        dir: tempfile::TempDir,
        clock: Clock,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
    }

    impl Fixture {
        /// A store and a fixed clock at `start`.
        fn new(start: &str) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let clock = Clock::fixed(Timestamp::parse(start).unwrap().to_datetime());
            let store = Arc::new(Store::open(&dir.path().join("s.redb"), clock.clone()).unwrap());
            Fixture { dir, clock, store, metrics: Arc::new(Metrics::default()) }
        }

        /// A fresh scheduler on the same store (a service start).
        fn scheduler(&self) -> Arc<Scheduler> {
            Arc::new(Scheduler::new(self.store.clone(), self.clock.clone(), self.metrics.clone(), self.dir.path()))
        }

        /// Moves the clock to `t` (forward only).
        fn set(&self, t: &str) {
            let by = at(t) - self.clock.now_micros();
            self.clock.advance(Duration::from_micros(u64::try_from(by).unwrap()));
        }

        fn history(&self, job: &str) -> Vec<Run> {
            self.store.read(|r| super::super::jobs::runs(r, job, Target::Appliance, 1000)).unwrap()
        }
    }

    fn every(expr: &str) -> Schedule {
        Schedule::parse(expr).unwrap()
    }

    /// A job that counts its runs.
    fn counting(name: &'static str, schedule: &str, runs: &Arc<AtomicUsize>) -> Job {
        let runs = runs.clone();
        Job::new(name, every(schedule), move |_| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(Done::items(7))
            }
        })
    }

    /// A job that runs until `gate` is notified once per run.
    fn gated(name: &'static str, schedule: &str, gate: &Arc<Notify>, runs: &Arc<AtomicUsize>) -> Job {
        let (gate, runs) = (gate.clone(), runs.clone());
        Job::new(name, every(schedule), move |_| {
            let (gate, runs) = (gate.clone(), runs.clone());
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                gate.notified().await;
                Ok(Done::bytes(1))
            }
        })
    }

    fn names(ran: &[(&'static str, Target)]) -> Vec<&'static str> {
        ran.iter().map(|(n, _)| *n).collect()
    }

    #[tokio::test]
    async fn a_job_is_due_at_its_slots_and_a_new_one_at_once_or_at_its_next_slot() {
        let f = Fixture::new("2026-11-30T10:03:00Z");
        let s = f.scheduler();
        let runs = Arc::new(AtomicUsize::new(0));
        s.register(counting("sweep", "0 */15 * * * *", &runs));
        s.register(counting("reconcile", "0 30 2 * * *", &runs).first_run_at_next_slot());
        assert_eq!(names(&s.run_due().await), ["sweep"], "a job that never ran runs at once");
        assert!(s.run_due().await.is_empty(), "not again before its next slot");
        let tick = s.tick();
        assert_eq!(tick.next, Some(at("2026-11-30T10:15:00Z")), "the loop sleeps until the next slot");
        f.set("2026-11-30T10:14:59Z");
        assert!(s.run_due().await.is_empty());
        f.set("2026-11-30T10:15:00Z");
        assert_eq!(names(&s.run_due().await), ["sweep"]);
        f.set("2026-12-01T02:29:59Z");
        assert_eq!(names(&s.run_due().await), ["sweep"], "many missed slots: one run");
        f.set("2026-12-01T02:30:00Z");
        assert_eq!(names(&s.run_due().await), ["sweep", "reconcile"], "the new job waited for its slot");
        assert_eq!(runs.load(Ordering::SeqCst), 5);
        let history = f.history("sweep");
        assert_eq!(history.len(), 4);
        assert_eq!(history[0].started, Timestamp::from_micros(at("2026-12-01T02:30:00Z")), "newest first");
        assert_eq!((history[0].outcome, history[0].items), (Outcome::Ok, Some(7)));

        // A reload's new schedule counts from the last run at once.
        assert_eq!(s.tick().next, Some(at("2026-12-01T02:45:00Z")));
        assert!(s.reschedule("sweep", every("0 */5 * * * *")));
        assert!(!s.reschedule("no-such-job", every("0 */5 * * * *")));
        assert_eq!(s.tick().next, Some(at("2026-12-01T02:35:00Z")));
    }

    #[tokio::test]
    async fn a_run_missed_while_down_runs_once_at_start() {
        let f = Fixture::new("2026-11-30T10:00:00Z");
        let runs = Arc::new(AtomicUsize::new(0));
        let first = f.scheduler();
        first.register(counting("sync", "0 */15 * * * *", &runs));
        assert_eq!(first.run_due().await.len(), 1);
        drop(first);

        // Restarted before the next slot: nothing is due yet (the history says when it last ran).
        f.set("2026-11-30T10:10:00Z");
        let second = f.scheduler();
        second.register(counting("sync", "0 */15 * * * *", &runs));
        assert!(second.run_due().await.is_empty(), "it ran at 10:00; the next slot is 10:15");
        drop(second);

        // Down through eleven slots: one run at start, not eleven.
        f.set("2026-11-30T12:50:00Z");
        let third = f.scheduler();
        third.register(counting("sync", "0 */15 * * * *", &runs));
        assert_eq!(third.run_due().await.len(), 1);
        assert!(third.run_due().await.is_empty());
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(f.history("sync").len(), 2);
        drop(third);

        // A run cut short by a stop runs again at the next start, before its next slot.
        f.set("2026-11-30T13:00:00Z");
        let (gate, cut) = (Arc::new(Notify::new()), Arc::new(AtomicUsize::new(0)));
        let fourth = f.scheduler();
        fourth.register(gated("sync", "0 */15 * * * *", &gate, &cut));
        let mut tick = fourth.tick();
        fourth.stop();
        tick.started.remove(0).finished().await;
        assert_eq!(f.history("sync")[0].outcome, Outcome::Cancelled);
        f.set("2026-11-30T13:01:00Z");
        let fifth = f.scheduler();
        fifth.register(counting("sync", "0 */15 * * * *", &runs));
        assert_eq!(fifth.run_due().await.len(), 1, "the cut-short run runs again at start");
        assert!(fifth.run_due().await.is_empty());
    }

    #[tokio::test]
    async fn a_slow_job_is_skipped_not_doubled_when_due_again() {
        let f = Fixture::new("2026-11-30T10:00:00Z");
        let s = f.scheduler();
        let (gate, runs) = (Arc::new(Notify::new()), Arc::new(AtomicUsize::new(0)));
        s.register(gated("backup", "0 */15 * * * *", &gate, &runs));
        let mut tick = s.tick();
        assert_eq!(tick.started.len(), 1);
        let slow = tick.started.remove(0);
        f.set("2026-11-30T10:15:30Z");
        assert!(s.tick().started.is_empty(), "due again while running: not started twice");
        assert!(s.tick().started.is_empty());
        assert_eq!(s.run_now("backup", Target::Appliance).err(), Some(NotStarted::Running("backup")));
        assert!(f.metrics.render().contains("docket_job_runs_total{name=\"backup\",outcome=\"skipped\"} 1"));
        f.set("2026-11-30T10:20:00Z");
        gate.notify_one();
        slow.finished().await;
        assert!(s.run_due().await.is_empty(), "the 10:15 slot passed during the run: skipped");
        f.set("2026-11-30T10:30:00Z");
        let mut tick = s.tick();
        assert_eq!(tick.started.len(), 1);
        gate.notify_one();
        tick.started.remove(0).finished().await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        let history = f.history("backup");
        assert_eq!(history[1].ended, Timestamp::from_micros(at("2026-11-30T10:20:00Z")));
        assert_eq!(history[0].bytes, Some(1));
    }

    #[tokio::test]
    async fn jobs_of_one_group_exclude_each_other_and_offline_commands() {
        let f = Fixture::new("2026-11-30T10:00:00Z");
        let s = f.scheduler();
        let (gate, backups, restores) =
            (Arc::new(Notify::new()), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        s.register(gated("backup", "0 0 * * * *", &gate, &backups).exclusive("store"));
        s.register(counting("restore-drill", "0 0 * * * *", &restores).exclusive("store"));
        let mut tick = s.tick();
        assert_eq!(tick.started.iter().map(|r| r.job).collect::<Vec<_>>(), ["backup"], "one of the group at a time");
        // An offline command meets the running backup's lock, and is told who holds it.
        let refused = ExclusionLock::take(f.dir.path(), "store", "docket restore").unwrap_err();
        assert!(refused.contains(&format!("process {}", std::process::id())), "{refused}");
        assert!(refused.contains("fix:"), "{refused}");
        gate.notify_one();
        tick.started.remove(0).finished().await;
        assert_eq!(names(&s.run_due().await), ["restore-drill"], "it runs once the backup ended");

        // An offline command holding the lock keeps the group's due runs waiting.
        f.set("2026-11-30T11:00:00Z");
        let held = ExclusionLock::take(f.dir.path(), "store", "docket restore").unwrap();
        let tick = s.tick();
        assert!(tick.started.is_empty() && tick.waiting_for_lock, "the lock file is honoured");
        assert!(matches!(s.run_now("restore-drill", Target::Appliance), Err(NotStarted::Locked { .. })));
        drop(held);
        let mut tick = s.tick();
        assert_eq!(tick.started.len(), 1);
        gate.notify_one();
        tick.started.remove(0).finished().await;
        assert_eq!(names(&s.run_due().await), ["restore-drill"]);
        assert_eq!((backups.load(Ordering::SeqCst), restores.load(Ordering::SeqCst)), (2, 2));
    }

    #[tokio::test]
    async fn history_is_bounded_survives_a_restart_and_feeds_the_metrics() {
        let f = Fixture::new("2026-11-30T10:00:00Z");
        let s = Arc::new(Scheduler::new(f.store.clone(), f.clock.clone(), f.metrics.clone(), f.dir.path()).keeping(3));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failing = fail.clone();
        s.register(Job::new("verify", every("0 * * * * *"), move |_| {
            let fail = failing.load(Ordering::SeqCst);
            async move { if fail { Err("the newest backup does not decrypt".to_string()) } else { Ok(Done::default()) } }
        }));
        for minute in 0..5 {
            f.set(&format!("2026-11-30T10:0{minute}:00Z"));
            assert_eq!(s.run_due().await.len(), 1);
        }
        let history = f.history("verify");
        assert_eq!(history.len(), 3, "only the newest runs are kept");
        assert_eq!(history[2].started, Timestamp::from_micros(at("2026-11-30T10:02:00Z")));
        fail.store(true, Ordering::SeqCst);
        f.set("2026-11-30T10:05:00Z");
        s.run_due().await;
        let last = f.history("verify").remove(0);
        assert_eq!((last.outcome, last.error.as_deref()), (Outcome::Error, Some("the newest backup does not decrypt")));
        let metrics = f.metrics.render();
        assert!(metrics.contains("docket_job_runs_total{name=\"verify\",outcome=\"ok\"} 5"), "{metrics}");
        assert!(metrics.contains("docket_job_runs_total{name=\"verify\",outcome=\"error\"} 1"), "{metrics}");
        let success = at("2026-11-30T10:04:00Z") as f64 / 1e6;
        assert!(metrics.contains(&format!("docket_job_last_success_timestamp_seconds{{name=\"verify\"}} {success}")));
        assert!(metrics.contains("docket_job_last_duration_seconds{name=\"verify\"} 0"), "{metrics}");

        // A restart reads the history: the last success is published before any run, and the listing has it.
        let metrics = Arc::new(Metrics::default());
        let again = Arc::new(Scheduler::new(f.store.clone(), f.clock.clone(), metrics.clone(), f.dir.path()));
        again.register(Job::new("verify", every("0 * * * * *"), |_| async { Ok(Done::default()) }));
        let views = again.overview_all(10).unwrap();
        assert_eq!(views[0].runs.len(), 3);
        assert_eq!(views[0].next_run, Some(Timestamp::from_micros(at("2026-11-30T10:06:00Z"))));
        assert!(
            metrics
                .render()
                .contains(&format!("docket_job_last_success_timestamp_seconds{{name=\"verify\"}} {success}"))
        );
        assert!(
            describe(&views)
                .contains("error 2026-11-30T10:05:00Z to 2026-11-30T10:05:00Z: the newest backup does not decrypt")
        );
    }

    #[tokio::test]
    async fn a_firm_sees_its_own_jobs_and_only_the_outcomes_of_shared_ones() {
        let f = Fixture::new("2026-11-30T10:00:00Z");
        let ctx = OrgTaskContext::new(OrgTask::Test);
        let org = |slug: &str| f.store.write(|w| crate::store::orgs::create(w, &ctx, slug, slug)).unwrap().id;
        let (a, b) = (org("alpha"), org("beta"));
        let s = f.scheduler();
        let per_org = Job::new("clio-sync", every("0 */15 * * * *"), |target| async move {
            match target {
                Target::Org(OrgId(n)) => Ok(Done::items(n * 100)),
                Target::Appliance => Err("per firm".into()),
            }
        });
        s.register(per_org.per_org(move || vec![a, b]));
        s.register(Job::new("clio-purge", every("0 0 * * * *"), |_| async { Err("org 2: disk full".to_string()) }));
        assert_eq!(s.run_due().await.len(), 3);
        let view = |scope: &OrgScope| s.firm_overview(scope, 10).unwrap();
        let alpha = view(&ctx.org_scope(a));
        let shown: Vec<(String, Target)> = alpha.iter().map(|v| (v.job.clone(), v.target)).collect();
        assert_eq!(shown, [("clio-sync".to_string(), Target::Org(a)), ("clio-purge".to_string(), Target::Appliance)]);
        assert_eq!(alpha[0].runs[0].items, Some(a.0 * 100), "its own figures");
        let purge = &alpha[1].runs[0];
        assert_eq!(
            (purge.outcome, purge.error.as_deref()),
            (Outcome::Error, Some(REDACTED_ERROR)),
            "no other firm's detail"
        );
        let all = s.overview_all(10).unwrap();
        assert_eq!(all.len(), 3, "the sysadmin sees every firm's");
        assert_eq!(all[2].runs[0].error.as_deref(), Some("org 2: disk full"));
    }
}
