//! The handles every request and job shares, built once by `app`.
use crate::auth::limits::Limits;
use crate::auth::oidc::Oidc;
use crate::auth::sessions::Timeouts;
use crate::clock::Clock;
use crate::config::Config;
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
}

impl AppState {
    /// Fails only when an identity provider's `ca_file` cannot be used.
    pub fn new(config: Config, store: Arc<Store>, keys: SharedKeyring, clock: Clock) -> Result<Arc<AppState>, String> {
        let limits = Limits::new(&config.limits);
        let oidc = Oidc::new(&config.auth.oidc)?;
        let timeouts = Timeouts::from_config(&config.auth);
        Ok(Arc::new(AppState {
            config,
            store,
            keys,
            metrics: Arc::new(Metrics::default()),
            clock,
            started: Instant::now(),
            limits,
            oidc,
            timeouts,
        }))
    }
}
