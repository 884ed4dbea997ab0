//! Runs each connected org's sync: one task per org runs the requests it
//! gets one at a time, so an org's syncs and reconciles never overlap. The
//! scheduler (`lifecycle::scheduler`) asks on `clio.sync_schedule` (job
//! `clio-sync`) and `clio.reconcile_schedule` (job `clio-reconcile`, a sync
//! with a deletion reconcile) and awaits the outcome; "sync now" and
//! "reconcile now" (an admin confirmed held deletions) ask at once. Sync
//! works page by page in short store transactions, so it never blocks API
//! requests.
use super::client::{Gate, RetryPolicy};
use super::connection::{self, ConnectionError, State};
use super::sync;
use super::webhooks;
use crate::config::ClioConfig;
use crate::records::Kind;
use crate::secrets::SharedKeyring;
use crate::store::{OrgId, OrgTaskContext, Store};
use crate::telemetry::Metrics;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{mpsc, oneshot};

const CTX: OrgTaskContext = OrgTaskContext::new(crate::store::OrgTask::ClioSync);

/// One request to an org's sync task; `reply` gets the outcome.
struct Request {
    reconcile: bool,
    /// Gets the records the run stored, or its error.
    reply: Option<oneshot::Sender<Result<u64, String>>>,
}

struct OrgTask {
    requests: mpsc::UnboundedSender<Request>,
    running: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<()>,
}

/// Called when an org connects (the scheduler starts its first sync).
type OnConnect = Box<dyn Fn(OrgId) + Send + Sync>;

/// The syncs of every connected org.
pub struct SyncManager {
    store: Arc<Store>,
    keys: SharedKeyring,
    metrics: Arc<Metrics>,
    config: ClioConfig,
    http: reqwest::Client,
    policy: RetryPolicy,
    tasks: Mutex<HashMap<OrgId, OrgTask>>,
    /// Each org's fence: its sync's requests go to Clio only while it is open.
    gates: Mutex<HashMap<OrgId, Arc<Gate>>>,
    on_connect: OnceLock<OnConnect>,
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
        Ok(SyncManager {
            store,
            keys,
            metrics,
            config,
            http,
            policy,
            tasks: Mutex::new(HashMap::new()),
            gates: Mutex::new(HashMap::new()),
            on_connect: OnceLock::new(),
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// What [`SyncManager::ensure`] does instead of syncing at once (the
    /// scheduler runs the org's `clio-sync` job now, so it is in the history).
    pub fn on_connect(&self, hook: impl Fn(OrgId) + Send + Sync + 'static) {
        let _ = self.on_connect.set(Box::new(hook));
    }

    /// The orgs connected to Clio now (whom the scheduled sync jobs run for).
    pub fn connected_orgs(&self) -> Vec<OrgId> {
        let orgs = self.store.list_orgs().unwrap_or_default();
        orgs.into_iter()
            .filter(|org| {
                self.store
                    .read(|r| connection::get(r, &CTX.org_scope(org.id)))
                    .ok()
                    .flatten()
                    .is_some_and(|c| c.state == State::Connected && c.sync_stopped_at.is_none())
            })
            .map(|org| org.id)
            .collect()
    }

    /// The org's sync task, started if it is not running.
    fn task(self: &Arc<Self>, org: OrgId) -> mpsc::UnboundedSender<Request> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = tasks.get(&org).filter(|t| !t.handle.is_finished()) {
            return t.requests.clone();
        }
        let (requests, rx) = mpsc::unbounded_channel();
        let running = Arc::new(AtomicBool::new(false));
        let me = self.clone();
        let r = running.clone();
        let handle = tokio::spawn(async move { me.run_org(org, rx, r).await });
        tasks.insert(org, OrgTask { requests: requests.clone(), running, handle });
        requests
    }

    fn ask(self: &Arc<Self>, org: OrgId, reconcile: bool, reply: Option<oneshot::Sender<Result<u64, String>>>) {
        // A task that just ended (its org disconnected) drops the request; the reply then says so.
        let _ = self.task(org).send(Request { reconcile, reply });
    }

    /// The org's gate (open unless its sync was stopped since it last connected).
    fn gate(&self, org: OrgId) -> Arc<Gate> {
        self.gates.lock().unwrap_or_else(|e| e.into_inner()).entry(org).or_default().clone()
    }

    /// The org just connected: its first sync starts at once.
    pub fn ensure(self: &Arc<Self>, org: OrgId) {
        // A fresh gate: one closed by an earlier disconnect stays closed for that sync's client.
        self.gates.lock().unwrap_or_else(|e| e.into_inner()).insert(org, Arc::default());
        match self.on_connect.get() {
            Some(hook) => hook(org),
            None => self.ask(org, false, None),
        }
    }

    /// Asks for a sync of `org` now, after any run in progress.
    pub fn sync_now(self: &Arc<Self>, org: OrgId) -> bool {
        self.ask(org, false, None);
        true
    }

    /// Asks for a sync with a deletion reconcile now (an admin confirmed held deletions).
    pub fn reconcile_now(self: &Arc<Self>, org: OrgId) -> bool {
        self.ask(org, true, None);
        true
    }

    /// Runs a sync (with a deletion reconcile if `reconcile`) of `org` and
    /// waits for its outcome (the records it stored): the scheduled jobs
    /// `clio-sync` and `clio-reconcile`.
    pub async fn run(self: &Arc<Self>, org: OrgId, reconcile: bool) -> Result<u64, String> {
        let (reply, outcome) = oneshot::channel();
        self.ask(org, reconcile, Some(reply));
        outcome.await.unwrap_or_else(|_| Err(ConnectionError::NotConnected.to_string()))
    }

    pub fn is_running(&self, org: OrgId) -> bool {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.get(&org).is_some_and(|t| t.running.load(Ordering::Relaxed))
    }

    /// Stops the org's sync (on disconnect). First its gate closes, which
    /// waits for the request in flight (if any) to be answered and lets no
    /// other start, so Clio sees no request of this sync after `stop`
    /// returns; then the task is aborted and awaited. Aborting does not stop
    /// a page already being stored on the blocking pool, so the org's sync
    /// generation is bumped too: that page's transaction then writes nothing.
    pub async fn stop(&self, org: OrgId) {
        self.gate(org).close().await;
        let task = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).remove(&org);
        if let Some(t) = task {
            t.handle.abort();
            let _ = t.handle.await;
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

    /// Runs the org's requests one at a time; requests that queued up during
    /// a run share the next one. Ends when the org is no longer connected.
    async fn run_org(
        self: Arc<Self>,
        org: OrgId,
        mut requests: mpsc::UnboundedReceiver<Request>,
        running: Arc<AtomicBool>,
    ) {
        while let Some(first) = requests.recv().await {
            let mut batch = vec![first];
            while let Ok(more) = requests.try_recv() {
                batch.push(more);
            }
            // A confirmation survives a restart: it is in the store, not only in a request.
            let confirmed = self.store.read(|r| sync::confirmation_pending(r, &CTX.org_scope(org))).unwrap_or(false);
            let reconcile = confirmed || batch.iter().any(|r| r.reconcile);
            running.store(true, Ordering::Relaxed);
            let result = self.run_once(org, reconcile).await;
            running.store(false, Ordering::Relaxed);
            let outcome = result.as_ref().copied().map_err(ToString::to_string);
            for request in batch {
                if let Some(reply) = request.reply {
                    let _ = reply.send(outcome.clone());
                }
            }
            match result {
                Err(ConnectionError::NotConnected) => return,
                Err(e) => tracing::warn!(org = %org, error = %e, "Clio sync failed; it resumes at the next run"),
                Ok(_) => {}
            }
        }
    }

    /// One sync of every kind (and a deletion reconcile when asked); the records it stored.
    pub async fn run_once(&self, org: OrgId, reconcile: bool) -> Result<u64, ConnectionError> {
        let gate = self.gate(org);
        if !gate.is_open().await {
            return Err(ConnectionError::NotConnected);
        }
        let sync = sync::SyncScope::begin(&self.store, &CTX, org)?;
        let scope = sync.scope().clone();
        let client = connection::client(
            &self.store,
            &self.keys,
            &scope,
            self.http.clone(),
            self.metrics.clone(),
            self.policy.clone(),
        )?
        .gated(gate);
        let (mut failed, mut stored) = (None, 0);
        for kind in Kind::ALL {
            let result = async {
                stored += sync::sync_kind(&self.store, &sync, &client, kind).await?.stored;
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
        match sync::refresh_dependants(&self.store, &sync, &client).await {
            Err(sync::SyncError::Fenced) => return Err(ConnectionError::NotConnected),
            Err(e) => {
                tracing::warn!(org = %org, error = %e, "records naming a renamed contact could not be refreshed; the next run tries again");
                failed = failed.or(Some(e));
            }
            Ok(_) => {}
        }
        self.keep_webhooks(&scope, &client).await;
        match failed {
            Some(sync::SyncError::Clio(super::client::ClioError::Stopped)) => Err(ConnectionError::NotConnected),
            Some(sync::SyncError::Clio(e)) => Err(ConnectionError::Clio(e)),
            Some(sync::SyncError::Store(e)) => Err(ConnectionError::Store(e)),
            Some(sync::SyncError::Fenced) => Err(ConnectionError::NotConnected),
            None => Ok(stored),
        }
    }

    /// With webhooks on: follows each subscription's lifecycle at Clio
    /// (`webhooks::upkeep`) and reports their health as metrics. A failure is
    /// logged; the scheduled sync goes on either way.
    async fn keep_webhooks(&self, scope: &crate::store::OrgScope, client: &super::client::ClioClient) {
        let origin = self.store.read(|r| connection::get(r, scope)).ok().flatten().and_then(|c| c.webhook_origin);
        let Some(origin) = origin else { return };
        match webhooks::upkeep(&self.store, scope, client, &origin).await {
            Ok(done) => {
                for (kind, error) in &done.failed {
                    tracing::warn!(org = %scope.org(), kind = kind.as_str(), %error, "Clio webhook upkeep failed for one model; polling covers it");
                }
            }
            Err(e) => {
                tracing::warn!(org = %scope.org(), error = %e, "Clio webhooks could not be set up; polling continues")
            }
        }
        self.report_webhooks(scope);
    }

    /// Webhook health per model as gauges (`docket_clio_webhook_*`).
    fn report_webhooks(&self, scope: &crate::store::OrgScope) {
        let Ok(Some(state)) = self.store.read(|r| webhooks::get(r, scope)) else { return };
        for (kind, model) in webhooks::MODELS {
            let labels = || vec![("org", scope.org().to_string()), ("model", model.to_string())];
            let sub = state.subscription(kind);
            let health = state.health(kind);
            let active = sub.is_some_and(|s| s.active);
            self.metrics.gauge(
                "docket_clio_webhook_active",
                "1 while the model's Clio webhook subscription is live (handshake done, not suspended).",
                labels(),
                f64::from(u8::from(active)),
            );
            if let Some(s) = sub.filter(|s| s.active) {
                self.metrics.gauge(
                    "docket_clio_webhook_expires_seconds",
                    "When the model's Clio webhook subscription expires (renewed 3 days before).",
                    labels(),
                    s.expires_at as f64,
                );
            }
            if let Some(t) = health.last_delivery_at {
                self.metrics.gauge(
                    "docket_clio_webhook_last_delivery_seconds",
                    "When the last Clio webhook delivery of the model was applied.",
                    labels(),
                    t as f64 / 1e6,
                );
            }
            self.metrics.gauge(
                "docket_clio_webhook_failing",
                "1 while the last webhook upkeep of the model failed.",
                labels(),
                f64::from(u8::from(health.last_error.is_some() && !active)),
            );
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
            "docket_sync_listing_restarts_total",
            "Listings restarted from their watermark because Clio refused a saved page link.",
            labels(),
            cp.restarts as f64,
        );
        self.metrics.gauge(
            "docket_sync_failing",
            "1 while the last run of this kind failed.",
            labels(),
            f64::from(u8::from(cp.last_error.is_some())),
        );
    }
}
