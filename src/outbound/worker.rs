//! The delivery worker: one task that wakes at each commit (and every
//! second for retries), queues each endpoint's new changes, then attempts
//! what is due, a few endpoints at a time ([`CONCURRENCY`]), one delivery at
//! a time per endpoint. It also keeps the change feed's journal window
//! ([`crate::changes::keep_window`]).
//!
//! Only `https` with a trusted certificate is spoken; no redirect is
//! followed; names resolving to private, loopback or link-local addresses
//! are refused unless `webhooks.allow_private_networks` is set (so a firm's
//! admin cannot make the appliance call its own network).
use super::{Attempt, Delivery, check_url, is_public};
use crate::config::WebhooksConfig;
use crate::data::Viewer;
use crate::secrets::SharedKeyring;
use crate::store::{OrgScope, OrgTask, OrgTaskContext, Store, StoreError};
use futures_util::StreamExt as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Endpoints attempted at once.
pub const CONCURRENCY: usize = 4;
/// Deliveries attempted per endpoint per round.
const PER_ROUND: usize = 20;
/// How long one attempt may take.
const TIMEOUT: Duration = Duration::from_secs(10);
const CTX: OrgTaskContext = OrgTaskContext::new(OrgTask::Outbound);

/// What the worker needs.
#[derive(Clone)]
pub struct Worker {
    store: Arc<Store>,
    keys: SharedKeyring,
    http: reqwest::Client,
    settings: WebhooksConfig,
}

/// Refuses names that resolve to no public address.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<std::net::SocketAddr> = found.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client deliveries use: `webhooks.ca_file` trusted besides the
/// system roots, no redirects, bounded time, the public-address guard.
pub fn http_client(settings: &WebhooksConfig) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .https_only(true)
        .user_agent(concat!("docket-webhooks/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("{}: {e}", path.display()))? {
            builder = builder.add_root_certificate(cert);
        }
    }
    if !settings.allow_private_networks {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    builder.build().map_err(|e| e.to_string())
}

impl Worker {
    pub fn new(store: Arc<Store>, keys: SharedKeyring, settings: WebhooksConfig) -> Result<Worker, String> {
        let http = http_client(&settings)?;
        Ok(Worker { store, keys, http, settings })
    }

    /// Runs until `shutdown` turns true: a round at each commit, and every second.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut head = self.store.subscribe();
        loop {
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e, "an outbound webhook round failed; retrying");
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = head.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// One round: the feed window, queueing, then the due deliveries.
    pub async fn round(&self) -> Result<(), StoreError> {
        let store = self.store.clone();
        let work = tokio::task::spawn_blocking(move || queue_all(&store)).await;
        let work = work.map_err(|e| StoreError::Io(format!("the queueing task failed: {e}")))??;
        futures_util::stream::iter(work)
            .for_each_concurrent(CONCURRENCY, |(scope, id)| async move {
                if let Err(e) = self.deliver_due(&scope, &id).await {
                    tracing::warn!(endpoint = %id, error = %e, "outbound webhook deliveries failed to record");
                }
            })
            .await;
        Ok(())
    }

    /// Attempts an endpoint's due deliveries, in order, recording each.
    async fn deliver_due(&self, scope: &OrgScope, id: &str) -> Result<(), StoreError> {
        let now = self.store.clock().now_micros();
        let (due, endpoint, secret) = self.store.read(|r| {
            let keys = self.keys.current();
            Ok((
                super::due(r, scope, id, now, PER_ROUND)?,
                super::get(r, scope, id)?,
                super::secret(r, scope, &keys, id)?,
            ))
        })?;
        let (Some(endpoint), Some(secret)) = (endpoint, secret) else { return Ok(()) };
        if !endpoint.enabled {
            return Ok(());
        }
        for delivery in due {
            let attempt = self.attempt(&endpoint.url, &secret, &delivery).await;
            let retry_base = self.settings.retry_base_seconds;
            self.store.write(|w| super::record_attempt(w, scope, &delivery, attempt, retry_base))?;
        }
        Ok(())
    }

    /// One POST of a delivery.
    async fn attempt(&self, url: &str, secret: &str, delivery: &Delivery) -> Attempt {
        let at = self.store.clock().now_micros();
        let started = Instant::now();
        let (status, error) = match self.post(url, secret, delivery, at).await {
            Ok(status) if (200..300).contains(&status) => (Some(status), None),
            Ok(status) => (Some(status), Some(format!("the endpoint answered {status}; 2xx is success"))),
            Err(e) => (None, Some(e)),
        };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Attempt { at, status, error, duration_ms }
    }

    async fn post(&self, url: &str, secret: &str, delivery: &Delivery, at: i64) -> Result<u16, String> {
        let url = check_url(url, self.settings.allow_private_networks).map_err(|e| e.to_string())?;
        let body = serde_json::to_vec(&delivery.payload).map_err(|e| e.to_string())?;
        let seconds = at.div_euclid(1_000_000);
        let response = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("docket-signature", super::signature(secret, seconds, &body))
            .header("docket-delivery", &delivery.id)
            .header("docket-event", delivery.event.as_str())
            .body(body)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        Ok(response.status().as_u16())
    }
}

/// A delivery failure in words, without the error chain's internals.
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut cause = e.source();
    let mut last = e.to_string();
    while let Some(c) = cause {
        last = c.to_string();
        cause = c.source();
    }
    if e.is_timeout() {
        format!("no answer within {} seconds", TIMEOUT.as_secs())
    } else if e.is_connect() {
        format!("could not connect: {last}")
    } else {
        format!("the request failed: {last}")
    }
}

/// Keeps the feed window, then queues every enabled endpoint's new changes
/// (as the firm: walls do not apply); returns every endpoint to attempt.
fn queue_all(store: &Store) -> Result<Vec<(OrgScope, String)>, StoreError> {
    crate::changes::keep_window(store)?;
    let mut out = vec![];
    for org in store.list_orgs()? {
        let scope = CTX.org_scope(org.id);
        let endpoints = store.read(|r| super::list(r, &scope))?;
        if endpoints.is_empty() {
            continue;
        }
        let viewer = Viewer::unwalled(&CTX, org.id);
        for endpoint in endpoints.into_iter().filter(|e| e.enabled) {
            // Queue until caught up or full, a page per transaction.
            while super::enqueue(store, &scope, &viewer, &endpoint.id)? {}
            out.push((scope.clone(), endpoint.id));
        }
    }
    Ok(out)
}
