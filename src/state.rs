//! The handles every request and job shares, built once by `app`.
use crate::auth::limits::Limits;
use crate::auth::oidc::Oidc;
use crate::auth::sessions::Timeouts;
use crate::clio::connection::PendingGrants;
use crate::clio::runner::SyncManager;
use crate::clock::Clock;
use crate::config::Config;
use crate::lifecycle::scheduler::Scheduler;
use crate::secrets::SharedKeyring;
use crate::store::Store;
use crate::telemetry::Metrics;
use std::sync::Arc;
use std::time::Instant;

/// Shared state of a running appliance.
pub struct AppState {
    pub config: Config,
    pub store: Arc<Store>,
    pub keys: SharedKeyring,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub started: Instant,
    pub limits: Limits,
    pub oidc: Oidc,
    pub timeouts: Timeouts,
    pub sync: Arc<SyncManager>,
    /// Every background job (`app::register_jobs` adds the built-in ones).
    pub scheduler: Arc<Scheduler>,
    pub clio_grants: PendingGrants,
    /// Lockout state of emails with no local login (they answer like accounts).
    pub sign_in_decoys: crate::auth::local::Decoys,
    /// Full-text search (fed by the indexer `app` starts).
    pub search: Arc<crate::search::Engine>,
}

impl AppState {
    /// Fails only when an identity provider's `ca_file` cannot be used or no HTTP client can be built.
    pub fn new(config: Config, store: Arc<Store>, keys: SharedKeyring, clock: Clock) -> Result<Arc<AppState>, String> {
        let limits = Limits::new(&config.limits);
        let oidc = Oidc::new(&config.auth.oidc, clock.clone())?;
        let timeouts = Timeouts::from_config(&config.auth);
        let metrics = Arc::new(Metrics::default());
        let search = crate::search::Engine::new(&config.data_dir, store.clone(), metrics.clone());
        let sync = Arc::new(SyncManager::new(store.clone(), keys.clone(), metrics.clone(), config.clio.clone())?);
        let scheduler = Arc::new(Scheduler::new(store.clone(), clock.clone(), metrics.clone(), &config.data_dir));
        Ok(Arc::new(AppState {
            config,
            store,
            keys,
            metrics,
            clock,
            started: Instant::now(),
            limits,
            oidc,
            timeouts,
            sync,
            scheduler,
            clio_grants: PendingGrants::default(),
            sign_in_decoys: Default::default(),
            search,
        }))
    }
}
