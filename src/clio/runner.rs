//! Runs each connected org's sync in the background: at once when the org
//! connects (or the appliance starts, resuming any pass a stop interrupted),
//! then on `clio.sync_schedule`, with a deletion reconcile on
//! `clio.reconcile_schedule` (or at once when an admin confirmed held
//! deletions), and whenever someone asks ("sync now"). Sync works page by page
//! in short store transactions, so it never blocks API requests.
use super::client::RetryPolicy;
use super::connection::{self, ConnectionError, State};
use super::sync;
use super::webhooks;
use crate::config::ClioConfig;
use crate::records::Kind;
use crate::secrets::SharedKeyring;
use crate::store::{OrgId, OrgTaskContext, Store};
use crate::telemetry::Metrics;
use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

const CTX: OrgTaskContext = OrgTaskContext::new(crate::store::OrgTask::ClioSync);

struct OrgTask {
    now: Arc<Notify>,
    reconcile: Arc<AtomicBool>,
    running: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<()>,
}

/// The background syncs of every connected org.
pub struct SyncManager {
    store: Arc<Store>,
    keys: SharedKeyring,
    metrics: Arc<Metrics>,
    config: ClioConfig,
    http: reqwest::Client,
    policy: RetryPolicy,
    tasks: Mutex<HashMap<OrgId, OrgTask>>,
}

fn next_after(expr: &str) -> std::time::Duration {
    cron::Schedule::from_str(expr)
        .ok()
        .and_then(|s| s.upcoming(chrono::Utc).next())
        .and_then(|t| (t - chrono::Utc::now()).to_std().ok())
        .unwrap_or(std::time::Duration::from_secs(900))
}

impl SyncManager {
    pub fn new(
        store: Arc<Store>,
        keys: SharedKeyring,
        metrics: Arc<Metrics>,
        config: ClioConfig,
    ) -> Result<SyncManager, String> {
        let policy = RetryPolicy::default();
        let http = super::client::http_client(policy.timeout)?;
        Ok(SyncManager { store, keys, metrics, config, http, policy, tasks: Mutex::new(HashMap::new()) })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Starts the sync of every connected org (at appliance start).
    pub fn start_all(self: &Arc<Self>) {
        let orgs = self.store.list_orgs().unwrap_or_default();
        for org in orgs {
            let connected = self
                .store
                .read(|r| connection::get(r, &CTX.org_scope(org.id)))
                .ok()
                .flatten()
                .is_some_and(|c| c.state == State::Connected);
            if connected {
                self.ensure(org.id);
            }
        }
    }

    /// Starts the org's sync loop if it is not running; its first run begins at once.
    pub fn ensure(self: &Arc<Self>, org: OrgId) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if tasks.get(&org).is_some_and(|t| !t.handle.is_finished()) {
            return;
        }
        let (now, running) = (Arc::new(Notify::new()), Arc::new(AtomicBool::new(false)));
        let reconcile = Arc::new(AtomicBool::new(false));
        let me = self.clone();
        let (n, r, c) = (now.clone(), running.clone(), reconcile.clone());
        let handle = tokio::spawn(async move { me.run_org(org, n, r, c).await });
        tasks.insert(org, OrgTask { now, reconcile, running, handle });
    }

    /// Asks for a sync of `org` now; false if the org is not connected.
    pub fn sync_now(self: &Arc<Self>, org: OrgId) -> bool {
        self.ensure(org);
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.get(&org).map(|t| t.now.notify_one()).is_some()
    }

    /// Asks for a sync with a deletion reconcile now (an admin confirmed held deletions).
    pub fn reconcile_now(self: &Arc<Self>, org: OrgId) -> bool {
        self.ensure(org);
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks
            .get(&org)
            .map(|t| {
                t.reconcile.store(true, Ordering::Relaxed);
                t.now.notify_one();
            })
            .is_some()
    }

    pub fn is_running(&self, org: OrgId) -> bool {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.get(&org).is_some_and(|t| t.running.load(Ordering::Relaxed))
    }

    /// Stops the org's sync (on disconnect). Aborting the task does not stop
    /// a page already being stored on the blocking pool, so the org's sync
    /// generation is bumped too: that page's transaction then writes nothing.
    pub fn stop(&self, org: OrgId) {
        if let Some(t) = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).remove(&org) {
            t.handle.abort();
        }
        if let Err(e) = self.store.write(|w| sync::bump_generation(w, &CTX.org_scope(org))) {
            tracing::warn!(org = %org, error = %e, "could not fence the stopped sync; disconnect fences it");
        }
    }

    /// Stops every sync (on shutdown). A page in flight is simply fetched again next time.
    pub fn stop_all(&self) {
        for (_, t) in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            t.handle.abort();
        }
    }

    async fn run_org(self: Arc<Self>, org: OrgId, now: Arc<Notify>, running: Arc<AtomicBool>, asked: Arc<AtomicBool>) {
        let mut reconcile_at = tokio::time::Instant::now() + next_after(&self.config.reconcile_schedule);
        loop {
            let due = tokio::time::Instant::now() >= reconcile_at;
            // A confirmation survives a restart: it is in the store, not only in `asked`.
            let confirmed = self.store.read(|r| sync::confirmation_pending(r, &CTX.org_scope(org))).unwrap_or(false);
            let reconcile = asked.swap(false, Ordering::Relaxed) || due || confirmed;
            running.store(true, Ordering::Relaxed);
            match self.run_once(org, reconcile).await {
                Err(ConnectionError::NotConnected) => {
                    running.store(false, Ordering::Relaxed);
                    return;
                }
                Err(e) => tracing::warn!(org = %org, error = %e, "Clio sync failed; it resumes at the next run"),
                Ok(()) => {}
            }
            running.store(false, Ordering::Relaxed);
            if due {
                reconcile_at = tokio::time::Instant::now() + next_after(&self.config.reconcile_schedule);
            }
            let wait = next_after(&self.config.sync_schedule);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = now.notified() => {}
            }
        }
    }

    /// One sync of every kind (and a deletion reconcile when asked).
    pub async fn run_once(&self, org: OrgId, reconcile: bool) -> Result<(), ConnectionError> {
        let sync = sync::SyncScope::begin(&self.store, &CTX, org)?;
        let scope = sync.scope().clone();
        let client = connection::client(
            &self.store,
            &self.keys,
            &scope,
            self.http.clone(),
            self.metrics.clone(),
            self.policy.clone(),
        )?;
        let mut failed = None;
        for kind in Kind::ALL {
            let result = async {
                sync::sync_kind(&self.store, &sync, &client, kind).await?;
                if reconcile {
                    sync::reconcile(&self.store, &sync, &client, kind, self.config.max_delete_share).await?;
                }
                Ok::<(), sync::SyncError>(())
            }
            .await;
            match result {
                // Disconnected (or purged) meanwhile: stop without writing anything more.
                Err(sync::SyncError::Fenced) => return Err(ConnectionError::NotConnected),
                Err(e) => {
                    tracing::warn!(org = %org, kind = %kind, error = %e, "sync of one kind failed");
                    failed = Some(e);
                }
                Ok(()) => {}
            }
            self.report(org, kind);
        }
        self.keep_webhooks(&scope, &client).await;
        match failed {
            Some(sync::SyncError::Clio(e)) => Err(ConnectionError::Clio(e)),
            Some(sync::SyncError::Store(e)) => Err(ConnectionError::Store(e)),
            Some(sync::SyncError::Fenced) => Err(ConnectionError::NotConnected),
            None => Ok(()),
        }
    }

    /// With webhooks on: subscribes what is missing and renews what expires soon.
    /// A failure is logged; the scheduled sync goes on either way.
    async fn keep_webhooks(&self, scope: &crate::store::OrgScope, client: &super::client::ClioClient) {
        let origin = self.store.read(|r| connection::get(r, scope)).ok().flatten().and_then(|c| c.webhook_origin);
        let Some(origin) = origin else { return };
        let result = async {
            webhooks::register(&self.store, scope, client, &origin).await?;
            webhooks::renew(&self.store, scope, client).await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(org = %scope.org(), error = %e, "Clio webhooks could not be set up; polling continues");
        }
    }

    fn report(&self, org: OrgId, kind: Kind) {
        let scope = CTX.org_scope(org);
        let Ok(cp) = self.store.read(|r| sync::progress(r, &scope, kind)) else { return };
        let labels = || vec![("org", org.to_string()), ("kind", kind.as_str().to_string())];
        self.metrics.gauge("docket_sync_pages_total", "Pages fetched by the Clio sync.", labels(), cp.pages as f64);
        self.metrics.gauge(
            "docket_sync_records_stored_total",
            "Records written by the Clio sync.",
            labels(),
            cp.stored as f64,
        );
        if let Some(t) = cp.last_success_at {
            self.metrics.gauge(
                "docket_sync_last_success_seconds",
                "When the last sync pass finished.",
                labels(),
                t as f64 / 1e6,
            );
        }
        self.metrics.gauge(
            "docket_sync_failing",
            "1 while the last run of this kind failed.",
            labels(),
            f64::from(u8::from(cp.last_error.is_some())),
        );
    }
}
