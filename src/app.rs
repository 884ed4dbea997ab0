//! Wiring: open the instance (store + master key), build the shared state,
//! start the listeners and the control socket, and stop them all gracefully.
//! Under systemd: `READY=1`/`STATUS=`/`STOPPING=1` notifications, `WATCHDOG=1`
//! pings while the runtime and the store answer, and SIGHUP reloads.
use crate::clock::Clock;
use crate::config::{Config, Schedule};
use crate::http::{self, Listeners, tls::TlsSetup};
use crate::lifecycle::backup::Quiet;
use crate::lifecycle::keys::{self, KeyError};
use crate::lifecycle::scheduler::{BACKUP_RESTORE, Done, Job, JobResult, Target};
use crate::secrets::SharedKeyring;
use crate::state::AppState;
use crate::store::{Store, StoreError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error("cannot create the control socket {path}: {reason}")]
    Control { path: String, reason: String },
    #[error(
        "cannot set up the outbound HTTPS clients (identity providers, Clio): {0}\n  fix: correct the identity provider's ca_file in auth.oidc; if there is no system CA bundle (/etc/ssl/certs), install the ca-certificates package"
    )]
    Identity(String),
    #[error("{0}")]
    Upgrade(String),
    #[error(transparent)]
    Signing(#[from] crate::lifecycle::backup::SigningError),
    #[error(
        "another docket serves this data dir ({holder}; lock {lock})\n  fix: stop it first (`systemctl stop docket`), or give this one its own data_dir"
    )]
    AlreadyServing { holder: String, lock: String },
    #[error("cannot take the service lock {lock}: {reason}\n  fix: make the data dir writable by the docket user")]
    Lock { lock: String, reason: String },
    #[error("cannot set up outbound webhooks: {0}\n  fix: correct webhooks.ca_file (a PEM bundle of CA certificates)")]
    Webhooks(String),
}

/// A failure with its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl From<crate::config::ConfigError> for Failure {
    fn from(e: crate::config::ConfigError) -> Self {
        Failure { code: 2, message: e.to_string() }
    }
}

impl From<AppError> for Failure {
    fn from(e: AppError) -> Self {
        Failure { code: 1, message: e.to_string() }
    }
}

/// An opened instance: its store and master key.
pub struct Instance {
    pub config: Config,
    pub store: Arc<Store>,
    pub keys: SharedKeyring,
}

impl Instance {
    /// Opens the store in the data dir and proves the master key opens it.
    /// A store of an older schema is copied aside before it is migrated.
    pub fn open(config: Config, clock: Clock) -> Result<Instance, AppError> {
        notify_systemd("STATUS=opening the store (an older schema is first backed up, then migrated)");
        crate::lifecycle::upgrade::backup_before_migration(&config, &clock).map_err(AppError::Upgrade)?;
        let store = Store::open(&config.store_path(), clock)?;
        let keyring = keys::open_keyring(&config, &store)?;
        pin_backup_signer(&config, &store, &keyring)?;
        Ok(Instance { config, store: Arc::new(store), keys: SharedKeyring::new(keyring) })
    }
}

/// Makes the backup signing key on first use and writes its public key to
/// `<data_dir>/signing.pub`, the pin a restore on this machine uses.
fn pin_backup_signer(
    config: &Config,
    store: &Store,
    keyring: &crate::secrets::Keyring,
) -> Result<(), crate::lifecycle::backup::SigningError> {
    use crate::lifecycle::backup::signing;
    let public = signing::ensure(store, keyring)?.public();
    if signing::pinned(&config.data_dir) != Some(public) {
        tracing::info!(signer = %public, fingerprint = %public.fingerprint(), "backup signer: keep this fingerprint with the offline key (restore --trust)");
    }
    signing::write_public(&config.data_dir, &public)
}

/// Takes the lock `docket serve` holds for its whole life (`restore --replace`
/// decides from it whether the service runs).
fn take_life_lock(config: &Config) -> Result<crate::lifecycle::scheduler::ExclusionLock, AppError> {
    use crate::lifecycle::{restore::SERVICE_LOCK, scheduler::ExclusionLock};
    let lock = || config.data_dir.join("locks").join(format!("{SERVICE_LOCK}.lock")).display().to_string();
    match ExclusionLock::try_take(&config.data_dir, SERVICE_LOCK) {
        Ok(Some(held)) => Ok(held),
        Ok(None) => Err(AppError::AlreadyServing {
            holder: ExclusionLock::holder(&config.data_dir, SERVICE_LOCK),
            lock: lock(),
        }),
        Err(e) => Err(AppError::Lock { lock: lock(), reason: e.to_string() }),
    }
}

/// A running server.
pub struct Running {
    pub state: Arc<AppState>,
    pub main_addrs: Vec<SocketAddr>,
    pub redirect_addrs: Vec<SocketAddr>,
    tls: Option<TlsSetup>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<Result<(), http::HttpError>>,
    control: tokio::task::JoinHandle<()>,
    indexer: tokio::task::JoinHandle<()>,
    scheduler: tokio::task::JoinHandle<()>,
    watchdog: Option<tokio::task::JoinHandle<()>>,
    /// Outbound webhook deliveries (stops at shutdown).
    outbound: tokio::task::JoinHandle<()>,
    /// Journal shipping (when `backup.dir` is set), stopped after the server.
    shipper: Option<tokio::task::JoinHandle<()>>,
    stop_shipping: watch::Sender<bool>,
    /// Off-site uploads (when `backup.offsite.url` is set), stopped after shipping.
    offsite: Option<crate::lifecycle::offsite::Handle>,
    /// The config file SIGHUP re-reads (none: only certificates are reloaded).
    pub config_file: Option<PathBuf>,
    /// Held from start to the end of `stop` (released by the kernel on a crash).
    _life: crate::lifecycle::scheduler::ExclusionLock,
}

/// Starts serving `instance`; returns once every listener is bound.
pub async fn start(instance: Instance) -> Result<Running, AppError> {
    let Instance { config, store, keys } = instance;
    let life = take_life_lock(&config)?;
    let clock = store.clock().clone();
    let tls = TlsSetup::from_config(&config, &store, &keys).map_err(http::HttpError::from)?;
    let listeners = Listeners::bind(&config).await?;
    let (main_addrs, redirect_addrs) = (listeners.main_addrs(), listeners.redirect_addrs());
    let socket = config.control_socket_path();
    crate::lifecycle::backup::warn_if_same_filesystem(&config);
    let state = AppState::new(config, store, keys, clock).map_err(AppError::Identity)?;
    let control = crate::control::listen(&socket, state.clone())
        .map_err(|e| AppError::Control { path: socket.display().to_string(), reason: e.to_string() })?;
    register_jobs(&state);
    let (shutdown, rx) = watch::channel(false);
    let indexer = crate::search::indexer::start(state.search.clone(), rx.clone()).await;
    // Before the shipper can prune: the change feed's window of journal.
    crate::changes::keep_window(&state.store)?;
    let outbound =
        crate::outbound::worker::Worker::new(state.store.clone(), state.keys.clone(), state.config.webhooks.clone())
            .map_err(AppError::Webhooks)?;
    let outbound = tokio::spawn(outbound.run(rx.clone()));
    let server = tokio::spawn(http::run(state.clone(), listeners, tls.clone(), rx));
    let scheduler = state.scheduler.spawn();
    let (stop_shipping, shipping_rx) = watch::channel(false);
    let shipper = crate::lifecycle::shipping::start(
        &state.config,
        state.store.clone(),
        state.keys.clone(),
        state.metrics.clone(),
        shipping_rx,
    );
    crate::lifecycle::pitr::window_gauges(&state.config.backup_dir(), &state.metrics);
    let offsite = crate::lifecycle::offsite::start(&state.config, state.store.clock().clone(), state.metrics.clone());
    let watchdog = watchdog_interval(|k| std::env::var(k).ok(), std::process::id()).map(|every| {
        let state = state.clone();
        tokio::spawn(watchdog(every, move || sync_status(state.clone())))
    });
    tracing::info!(listen = ?main_addrs, redirect = ?redirect_addrs, tls = ?state.config.tls.mode, "docket is serving");
    Ok(Running {
        state,
        main_addrs,
        redirect_addrs,
        tls,
        shutdown,
        server,
        control,
        indexer,
        scheduler,
        watchdog,
        outbound,
        shipper,
        stop_shipping,
        offsite,
        config_file: None,
        _life: life,
    })
}

/// Settings a SIGHUP applies without a restart; changes to any other are logged.
const LIVE_SETTINGS: &[&str] = &[
    "tls.cert_file",
    "tls.key_file",
    "clio.sync_schedule",
    "clio.reconcile_schedule",
    "maintenance.sweep_schedule",
    "maintenance.purge_schedule",
];

/// The built-in jobs (`docket jobs` and `GET /api/v1/system/jobs` list them by these names).
pub const CLIO_SYNC: &str = "clio-sync";
pub const CLIO_RECONCILE: &str = "clio-reconcile";
pub const SESSION_SWEEP: &str = "session-sweep";
pub const CLIO_PURGE: &str = "clio-purge";
pub const BACKUP: &str = "backup";
pub const BACKUP_VERIFY: &str = "backup-verify";

/// Each built-in job's schedule in `config`.
fn schedules(config: &Config) -> [(&'static str, Schedule); 6] {
    [
        (CLIO_SYNC, config.clio.sync_schedule.clone()),
        (CLIO_RECONCILE, config.clio.reconcile_schedule.clone()),
        (SESSION_SWEEP, config.maintenance.sweep_schedule.clone()),
        (CLIO_PURGE, config.maintenance.purge_schedule.clone()),
        (BACKUP, config.backup.schedule.clone()),
        (BACKUP_VERIFY, config.backup.verify_schedule.clone()),
    ]
}

/// Registers the built-in jobs: per connected firm, the Clio sync and the
/// deletion reconcile (an org that connects syncs at once); for the
/// appliance, the session sweep (expired sessions and tokens), the purge of disconnected firms' data, and
/// the backup (with the retention of backups and shipped segments) and its
/// verification (one exclusion group with restores).
fn register_jobs(state: &Arc<AppState>) {
    let [sync, reconcile, sweep, purge, backup, verify] = schedules(&state.config).map(|(_, s)| s);
    let scheduler = &state.scheduler;
    let syncs = |reconcile: bool| {
        let manager = state.sync.clone();
        move |target: Target| {
            let manager = manager.clone();
            async move {
                let Target::Org(org) = target else { return Err("the Clio sync runs per firm".to_string()) };
                manager.run(org, reconcile).await.map(Done::items)
            }
        }
    };
    let connected = |manager: Arc<crate::clio::runner::SyncManager>| move || manager.connected_orgs();
    scheduler.register(Job::new(CLIO_SYNC, sync, syncs(false)).per_org(connected(state.sync.clone())));
    scheduler.register(
        Job::new(CLIO_RECONCILE, reconcile, syncs(true))
            .per_org(connected(state.sync.clone()))
            .first_run_at_next_slot(),
    );
    let weak = Arc::downgrade(scheduler);
    state.sync.on_connect(move |org| {
        if let Some(scheduler) = weak.upgrade() {
            let _ = scheduler.run_now(CLIO_SYNC, Target::Org(org));
        }
    });
    let app = Arc::downgrade(state);
    scheduler.register(Job::new(SESSION_SWEEP, sweep, move |_| {
        let app = app.clone();
        blocking(move || {
            let state = app.upgrade().ok_or("the service is stopping")?;
            state.limits.forget_idle();
            let swept = crate::auth::sessions::sweep(&state.store, state.timeouts)
                .map_err(|e| format!("could not delete expired sessions: {e}"))?;
            let tokens = crate::auth::tokens::sweep_expired(&state.store)
                .map_err(|e| format!("could not delete expired tokens: {e}"))?;
            Ok(Done::items((swept + tokens) as u64))
        })
    }));
    let store = state.store.clone();
    scheduler.register(Job::new(CLIO_PURGE, purge, move |_| {
        let store = store.clone();
        blocking(move || crate::clio::purge::purge_due(&store).map(Done::items))
    }));
    let app = Arc::downgrade(state);
    scheduler.register(
        Job::new(BACKUP, backup, move |_| {
            let app = app.clone();
            blocking(move || {
                let state = app.upgrade().ok_or("the service is stopping")?;
                let keyring = state.keys.current();
                let info = crate::lifecycle::backup::job_backup(
                    &state.store,
                    &keyring,
                    &state.config,
                    Some(&state.metrics),
                    &Quiet,
                )
                .map_err(|e| e.to_string())?;
                // Segments before the point-in-time window's base restore nothing any more.
                let settings =
                    crate::lifecycle::backup::Settings::from_config(&state.config).map_err(|e| e.to_string())?;
                let now = crate::timestamp::Timestamp::from_micros(state.store.clock().now_micros());
                crate::lifecycle::shipping::apply_retention(&settings.dir, settings.window_start(now))
                    .map_err(|e| e.to_string())?;
                crate::lifecycle::pitr::window_gauges(&settings.dir, &state.metrics);
                Ok(Done::bytes(info.manifest.bytes))
            })
        })
        .exclusive(BACKUP_RESTORE),
    );
    let app = Arc::downgrade(state);
    scheduler.register(
        Job::new(BACKUP_VERIFY, verify, move |_| {
            let app = app.clone();
            blocking(move || {
                let state = app.upgrade().ok_or("the service is stopping")?;
                let keyring = state.keys.current();
                crate::lifecycle::verify::job_verify(
                    &state.store,
                    &keyring,
                    &state.config,
                    Some(&state.metrics),
                    &Quiet,
                )
                .map(|v| Done::items(v.rows))
                .map_err(|e| e.to_string())
            })
        })
        .exclusive(BACKUP_RESTORE)
        .first_run_at_next_slot(),
    );
}

/// Runs a job's store work on the blocking pool.
async fn blocking(work: impl FnOnce() -> JobResult + Send + 'static) -> JobResult {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| Err(format!("the job stopped unexpectedly: {e}")))
}

/// The settings that differ between `old` and `new`.
pub fn changed_settings(old: &Config, new: &Config) -> Vec<String> {
    let before: std::collections::BTreeMap<String, String> = old.leaves().into_iter().collect();
    let after: std::collections::BTreeMap<String, String> = new.leaves().into_iter().collect();
    let mut keys: Vec<String> = before.keys().chain(after.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| before.get(k) != after.get(k)).collect()
}

impl Running {
    /// SIGHUP: re-reads and validates the config file, applies what can change
    /// live (the certificate files), names in the log what needs a restart, and
    /// re-reads the TLS files. An invalid file changes nothing.
    pub fn reload(&self) {
        notify_systemd("RELOADING=1\nSTATUS=reloading the configuration and certificates");
        let config = match &self.config_file {
            None => self.state.config.clone(),
            Some(file) => match crate::config::load(Some(file)) {
                Ok(loaded) => loaded.config,
                Err(e) => {
                    tracing::error!(error = %e, "config reload refused; still running with the previous configuration");
                    notify_systemd("READY=1\nSTATUS=serving (the last reload was refused: see the log)");
                    return;
                }
            },
        };
        let changed = changed_settings(&self.state.config, &config);
        let (live, restart): (Vec<String>, Vec<String>) =
            changed.into_iter().partition(|k| LIVE_SETTINGS.contains(&k.as_str()));
        if !live.is_empty() {
            for (job, schedule) in schedules(&config) {
                self.state.scheduler.reschedule(job, schedule);
            }
            tracing::info!(settings = ?live, "applied the changed settings");
        }
        if !restart.is_empty() {
            tracing::warn!(
                settings = ?restart,
                "these changed settings cannot change while running and keep their previous values; apply them with `systemctl restart docket`"
            );
        }
        if let Some(tls) = &self.tls {
            match tls.reload(&config) {
                Ok(true) => tracing::info!("reloaded the TLS certificate"),
                Ok(false) => tracing::info!("SIGHUP: nothing to reload in this TLS mode"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS reload failed; still serving the previous certificate")
                }
            }
        }
        notify_systemd("READY=1\nSTATUS=serving");
    }

    /// Stops accepting, lets in-flight requests finish, then returns.
    pub async fn stop(self) -> Result<(), AppError> {
        let _ = self.shutdown.send(true);
        self.control.abort();
        self.scheduler.abort();
        self.state.scheduler.stop();
        // The indexer stops at its next wake (shutdown was sent); its writers commit nothing half-done.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.indexer).await;
        // A delivery in flight ends within its timeout; its attempt is then recorded or retried.
        let _ = tokio::time::timeout(Duration::from_secs(15), self.outbound).await;
        if let Some(watchdog) = &self.watchdog {
            watchdog.abort();
        }
        self.state.sync.stop_all();
        if let Some(tls) = &self.tls {
            tls.stop();
        }
        let _ = std::fs::remove_file(self.state.config.control_socket_path());
        let result = match self.server.await {
            Ok(r) => r.map_err(AppError::from),
            Err(e) => Err(AppError::Http(http::HttpError::Serve(e.to_string()))),
        };
        let _ = self.stop_shipping.send(true);
        if let Some(shipper) = self.shipper {
            let _ = shipper.await;
        }
        if let Some(offsite) = self.offsite {
            offsite.stop().await;
        }
        tracing::info!("docket stopped");
        result
    }
}

/// How often systemd wants `WATCHDOG=1` (half its `WatchdogSec=`), when it
/// asked this process for pings (`WATCHDOG_USEC`, and `WATCHDOG_PID` if set).
pub fn watchdog_interval(get: impl Fn(&str) -> Option<String>, pid: u32) -> Option<Duration> {
    if let Some(for_pid) = get("WATCHDOG_PID")
        && for_pid.trim().parse::<u32>().ok() != Some(pid)
    {
        return None;
    }
    let usec = get("WATCHDOG_USEC")?.trim().parse::<u64>().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// A `STATUS=` line once the blocking pool has run a store read (`None` if
/// the store did not answer): how many firms are syncing now.
async fn sync_status(state: Arc<AppState>) -> Option<String> {
    let store = state.store.clone();
    let orgs = tokio::task::spawn_blocking(move || store.list_orgs()).await.ok()?.ok()?;
    let syncing = orgs.iter().filter(|o| state.sync.is_running(o.id)).count();
    let status = match syncing {
        0 => format!("serving; {} firms, none syncing now", orgs.len()),
        n => format!("serving; syncing {n} of {} firms", orgs.len()),
    };
    Some(
        status
            + crate::lifecycle::backup::status_note(&state.config).unwrap_or_default()
            + &crate::lifecycle::shipping::status_note(&state.config).unwrap_or_default(),
    )
}

/// Every `every`, runs `alive` and, if it answers within `every`, sends
/// `WATCHDOG=1` with its `STATUS=` line. The pings come from a task on the
/// runtime, so a stalled runtime (or a store that stops answering) stops them
/// and systemd restarts the service.
async fn watchdog<A, F>(every: Duration, alive: A)
where
    A: FnMut() -> F,
    F: std::future::Future<Output = Option<String>>,
{
    let ping = |status: Option<String>| {
        if let Some(status) = status {
            notify_systemd(&format!("WATCHDOG=1\nSTATUS={status}"));
        }
    };
    watch_liveness(move || tokio::time::sleep(every), every, alive, ping).await;
}

/// The watchdog's loop: after each `next_tick`, `alive` gets `limit` to answer;
/// `outcome(Some(status))` means it did and a ping is due, `outcome(None)`
/// that it did not (logged, no ping).
pub async fn watch_liveness<T, TF, A, F, S>(
    mut next_tick: T,
    limit: Duration,
    mut alive: A,
    mut outcome: impl FnMut(Option<S>),
) where
    T: FnMut() -> TF,
    TF: std::future::Future<Output = ()>,
    A: FnMut() -> F,
    F: std::future::Future<Output = Option<S>>,
{
    loop {
        next_tick().await;
        let answered = match tokio::time::timeout(limit, alive()).await {
            Ok(Some(status)) => Some(status),
            Ok(None) => {
                tracing::error!("watchdog: the store does not answer; not pinging systemd");
                None
            }
            Err(_) => {
                tracing::error!("watchdog: the liveness check is stuck; not pinging systemd");
                None
            }
        };
        outcome(answered);
    }
}

/// Sends `state` (e.g. `READY=1`, `STATUS=...`) to systemd's notify socket;
/// no effect outside systemd.
pub fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt as _;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
    } else {
        socket.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// Serves until SIGTERM or SIGINT; SIGHUP reloads TLS files.
pub async fn serve_until_signal(running: Running) -> Result<(), AppError> {
    use tokio::signal::unix::{SignalKind, signal};
    let listening: Vec<String> = running.main_addrs.iter().map(ToString::to_string).collect();
    notify_systemd(&format!("READY=1\nSTATUS=serving on {}", listening.join(", ")));
    let (mut term, mut int, mut hup) =
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup())) {
            (Ok(t), Ok(i), Ok(h)) => (t, i, h),
            _ => {
                tracing::error!("cannot install signal handlers");
                return running.stop().await;
            }
        };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => running.reload(),
        }
    }
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    notify_systemd("STOPPING=1\nSTATUS=stopping: finishing requests in flight");
    running.stop().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn watchdog_interval_is_half_of_what_systemd_asks_and_only_for_us() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(watchdog_interval(env(&[("WATCHDOG_USEC", "30000000")]), 9), Some(Duration::from_secs(15)));
        assert_eq!(
            watchdog_interval(env(&[("WATCHDOG_USEC", "30000000"), ("WATCHDOG_PID", "9")]), 9),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval(env(&[("WATCHDOG_USEC", "30000000"), ("WATCHDOG_PID", "8")]), 9), None);
        assert_eq!(watchdog_interval(env(&[("WATCHDOG_USEC", "0")]), 9), None);
        assert_eq!(watchdog_interval(env(&[]), 9), None);
    }

    /// A stalled liveness check (an injected stall) stops the pings; they come back when it answers.
    #[tokio::test]
    async fn a_stall_stops_the_watchdog_pings() {
        let stalled = Arc::new(AtomicBool::new(false));
        let (tick_tx, tick_rx) = tokio::sync::mpsc::channel::<()>(1);
        let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
        let tick_rx = Arc::new(tokio::sync::Mutex::new(tick_rx));
        let task = {
            let stalled = stalled.clone();
            tokio::spawn(watch_liveness(
                move || {
                    let rx = tick_rx.clone();
                    async move {
                        rx.lock().await.recv().await;
                    }
                },
                Duration::from_millis(200),
                move || {
                    let stalled = stalled.clone();
                    async move {
                        if stalled.load(Ordering::SeqCst) {
                            std::future::pending::<()>().await;
                        }
                        Some("serving")
                    }
                },
                move |pinged: Option<&str>| {
                    let _ = out_tx.send(pinged.is_some());
                },
            ))
        };
        let mut round = async |stall: bool| {
            stalled.store(stall, Ordering::SeqCst);
            tick_tx.send(()).await.unwrap();
            out_rx.recv().await.unwrap()
        };
        assert!(round(false).await, "pings while the runtime answers");
        assert!(round(false).await);
        assert!(!round(true).await, "no ping while the check is stalled");
        assert!(!round(true).await);
        assert!(round(false).await, "pings resume once it answers");
        task.abort();
    }

    #[test]
    fn a_reload_names_exactly_the_changed_settings() {
        let old = Config::default();
        let mut new = old.clone();
        new.tls.cert_file = Some("/etc/docket/new.pem".into());
        new.server.shutdown_grace_seconds += 1;
        assert_eq!(changed_settings(&old, &new), vec!["server.shutdown_grace_seconds", "tls.cert_file"]);
        assert!(changed_settings(&old, &old).is_empty());
    }
}
