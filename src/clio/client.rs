//! The Clio API client: OAuth token exchange and refresh, and GET requests
//! that survive what Clio does to clients.
//!
//! - Rate limits: `X-RateLimit-Remaining`/`Reset` pace the next request so it
//!   stays under the limit; a 429 waits `Retry-After`.
//! - 5xx, timeouts, resets and truncated bodies are retried with exponential
//!   backoff and jitter, a bounded number of times.
//! - The access token is refreshed shortly before `expires_in` runs out and
//!   once on a 401; a new refresh token is kept if Clio ever sends one.
//! - Pages are followed through `meta.paging.next` exactly as given.
//! - `X-API-VERSION` is pinned; requests, 429s, retries and latency are metrics.
use crate::records::Kind;
use crate::secrets::Secret;
use crate::telemetry::Metrics;
use crate::timestamp::Timestamp;
use rand::Rng as _;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The API minor version docket is written against.
pub const API_VERSION: &str = "4.0.13";
/// Refresh this long before the access token expires.
const REFRESH_MARGIN: i64 = 300;

/// Where a Clio account lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// e.g. `https://app.clio.com/api/v4`.
    pub api_base: String,
    /// e.g. `https://app.clio.com` (`/oauth/authorize`, `/oauth/token`, `/oauth/deauthorize`).
    pub oauth_base: String,
}

impl Endpoints {
    /// The hosts of a Clio region: `us`, `ca`, `eu` or `au`.
    pub fn region(region: &str) -> Option<Endpoints> {
        let host = match region {
            "us" => "app.clio.com",
            "ca" => "ca.app.clio.com",
            "eu" => "eu.app.clio.com",
            "au" => "au.app.clio.com",
            _ => return None,
        };
        Some(Endpoints::at(&format!("https://{host}")))
    }

    /// Both bases under one origin (a proxy, or the fake Clio).
    pub fn at(origin: &str) -> Endpoints {
        let origin = origin.trim_end_matches('/');
        Endpoints { api_base: format!("{origin}/api/v4"), oauth_base: origin.to_string() }
    }
}

/// An OAuth token pair and when the access token runs out (unix seconds).
#[derive(Clone, Debug)]
pub struct Tokens {
    pub access: Secret,
    pub refresh: Secret,
    pub expires_at: i64,
}

/// How hard to try before giving up on a request.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts for 5xx, network errors and bad bodies.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// 429s waited out before giving up.
    pub rate_limit_waits: u32,
    /// The longest `Retry-After` honoured in one wait.
    pub max_retry_after: Duration,
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            rate_limit_waits: 20,
            max_retry_after: Duration::from_secs(120),
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClioError {
    #[error("Clio refused docket's authorization ({0}); reconnect the firm to Clio")]
    Unauthorized(String),
    #[error("Clio could not be reached after {attempts} attempts: {last}")]
    Unavailable { attempts: u32, last: String },
    #[error("Clio kept answering 429 (rate limited) after {0} waits")]
    RateLimited(u32),
    #[error("Clio answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("could not save the refreshed Clio token: {0}")]
    TokenStore(String),
    #[error("the sync was stopped (the firm disconnected); no more requests are sent to Clio")]
    Stopped,
}

/// Lets requests go to Clio until closed. Each request holds it open while it
/// is sent and answered, so [`Gate::close`] returns only once no request is in
/// flight, and none starts after: a disconnect's fence.
#[derive(Debug)]
pub struct Gate(tokio::sync::RwLock<bool>);

impl Default for Gate {
    fn default() -> Self {
        Gate(tokio::sync::RwLock::new(true))
    }
}

impl Gate {
    /// Closes the gate, waiting for the requests in flight to be answered.
    pub async fn close(&self) {
        *self.0.write().await = false;
    }

    pub async fn is_open(&self) -> bool {
        *self.0.read().await
    }
}

/// A page of a collection.
#[derive(Debug)]
pub struct Page {
    pub data: Vec<Value>,
    pub next: Option<String>,
}

/// Saves refreshed tokens (sealed, in the store).
pub type OnRefresh = Arc<dyn Fn(&Tokens) -> Result<(), String> + Send + Sync>;

/// A client for one org's Clio account.
pub struct ClioClient {
    http: reqwest::Client,
    endpoints: Endpoints,
    client_id: String,
    client_secret: Secret,
    tokens: tokio::sync::Mutex<Tokens>,
    on_refresh: OnRefresh,
    metrics: Arc<Metrics>,
    policy: RetryPolicy,
    /// The earliest moment the next request may go (rate-limit pacing).
    not_before: std::sync::Mutex<Option<Instant>>,
    /// Requests go only while it is open (the sync's client; see [`Gate`]).
    gate: Arc<Gate>,
}

enum Attempt {
    Done(Value),
    Retry(String),
    Wait(Duration),
    Unauthorized(String),
    Fail(ClioError),
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A plain HTTP client for Clio: no redirects followed, bounded timeouts.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("docket/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

/// Exchanges an authorization code (or a refresh token) at `/oauth/token`.
pub async fn token_request(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    client_id: &str,
    client_secret: &Secret,
    grant: &[(&str, &str)],
    previous_refresh: Option<&Secret>,
) -> Result<Tokens, ClioError> {
    let mut form: Vec<(&str, &str)> = vec![("client_id", client_id), ("client_secret", client_secret.expose())];
    form.extend_from_slice(grant);
    let resp = http
        .post(format!("{}/oauth/token", endpoints.oauth_base))
        .form(&form)
        .send()
        .await
        .map_err(|e| ClioError::Unavailable { attempts: 1, last: e.to_string() })?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let reason = body["error"].as_str().unwrap_or("unknown error").to_string();
        return Err(if status.is_client_error() {
            ClioError::Unauthorized(reason)
        } else {
            ClioError::Unavailable { attempts: 1, last: format!("{status}: {reason}") }
        });
    }
    let access = body["access_token"].as_str().ok_or_else(|| ClioError::Refused {
        status: status.as_u16(),
        message: "the token response has no access_token".into(),
    })?;
    let refresh =
        body["refresh_token"].as_str().map(Secret::new).or_else(|| previous_refresh.cloned()).ok_or_else(|| {
            ClioError::Refused { status: status.as_u16(), message: "the token response has no refresh_token".into() }
        })?;
    let expires_in = body["expires_in"].as_i64().unwrap_or(3600);
    Ok(Tokens { access: Secret::new(access), refresh, expires_at: now_unix() + expires_in })
}

impl ClioClient {
    #[allow(clippy::too_many_arguments)] // the parts of a connection, named
    pub fn new(
        http: reqwest::Client,
        endpoints: Endpoints,
        client_id: String,
        client_secret: Secret,
        tokens: Tokens,
        on_refresh: OnRefresh,
        metrics: Arc<Metrics>,
        policy: RetryPolicy,
    ) -> ClioClient {
        ClioClient {
            http,
            endpoints,
            client_id,
            client_secret,
            tokens: tokio::sync::Mutex::new(tokens),
            on_refresh,
            metrics,
            policy,
            not_before: std::sync::Mutex::new(None),
            gate: Arc::new(Gate::default()),
        }
    }

    /// The same client, sending requests only while `gate` is open.
    pub fn gated(mut self, gate: Arc<Gate>) -> ClioClient {
        self.gate = gate;
        self
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The first page of a listing of `kind`: only records updated after
    /// `since` if given, and `filter` (e.g. notes' `type`) if given.
    pub fn first_page_url(
        &self,
        kind: Kind,
        fields: &str,
        since: Option<Timestamp>,
        filter: Option<(&str, &str)>,
    ) -> String {
        let mut url = format!(
            "{}/{}.json?fields={}&limit={}&order=id(asc)",
            self.endpoints.api_base,
            kind.collection(),
            urlencode(fields),
            kind.page_limit()
        );
        if let Some((name, value)) = filter {
            url.push_str(&format!("&{}={}", urlencode(name), urlencode(value)));
        }
        if let Some(since) = since {
            url.push_str(&format!("&updated_since={}", urlencode(&since.to_rfc3339())));
        }
        url
    }

    /// One page: the records and the `meta.paging.next` URL, if any.
    pub async fn page(&self, url: &str, kind: Kind) -> Result<Page, ClioError> {
        let body = self.get(url, kind).await?;
        let data = body["data"].as_array().cloned().unwrap_or_default();
        let next = body.pointer("/meta/paging/next").and_then(Value::as_str).map(str::to_owned);
        Ok(Page { data, next })
    }

    async fn access_token(&self, force_refresh: bool) -> Result<Secret, ClioError> {
        let mut tokens = self.tokens.lock().await;
        if force_refresh || tokens.expires_at - REFRESH_MARGIN <= now_unix() {
            let open = self.gate.0.read().await;
            if !*open {
                return Err(ClioError::Stopped);
            }
            let refresh = tokens.refresh.clone();
            let grant = [("grant_type", "refresh_token"), ("refresh_token", refresh.expose())];
            let fresh = token_request(
                &self.http,
                &self.endpoints,
                &self.client_id,
                &self.client_secret,
                &grant,
                Some(&refresh),
            )
            .await?;
            (self.on_refresh)(&fresh).map_err(ClioError::TokenStore)?;
            self.metrics.count("docket_clio_token_refreshes_total", "Clio access-token refreshes.", vec![], 1);
            *tokens = fresh;
        }
        Ok(tokens.access.clone())
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.policy.base_delay.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let capped = exp.min(self.policy.max_delay);
        // Full jitter: anywhere between half and all of the capped delay.
        let millis = u64::try_from(capped.as_millis()).unwrap_or(u64::MAX).max(2);
        Duration::from_millis(rand::thread_rng().gen_range(millis / 2..=millis))
    }

    async fn pace(&self) {
        let wait = self.not_before.lock().ok().and_then(|g| *g).and_then(|t| t.checked_duration_since(Instant::now()));
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }

    /// Learns the rate-limit state from a response and spaces later requests.
    fn learn_limits(&self, headers: &reqwest::header::HeaderMap) {
        let num =
            |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<i64>().ok());
        let (Some(remaining), Some(reset)) = (num("x-ratelimit-remaining"), num("x-ratelimit-reset")) else { return };
        let window = Duration::from_secs(u64::try_from((reset - now_unix()).max(0)).unwrap_or(0));
        let gap = match remaining {
            0 => Some(window),
            r if r < 5 => Some(window / u32::try_from(r + 1).unwrap_or(1)),
            _ => None,
        };
        if let Ok(mut g) = self.not_before.lock() {
            *g = gap.map(|d| Instant::now() + d);
        }
    }

    async fn attempt(&self, method: &reqwest::Method, url: &str, body: Option<&Value>, token: &Secret) -> Attempt {
        self.pace().await;
        // Held until the answer is read: closing the gate waits for it.
        let open = self.gate.0.read().await;
        if !*open {
            return Attempt::Fail(ClioError::Stopped);
        }
        let started = Instant::now();
        let mut request = self.http.request(method.clone(), url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let sent = request
            .bearer_auth(token.expose())
            .header("x-api-version", API_VERSION)
            .header("accept", "application/json")
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry(if e.is_timeout() {
                    "timed out".into()
                } else {
                    format!("connection failed: {e}")
                });
            }
        };
        let status = resp.status();
        self.learn_limits(resp.headers());
        self.metrics.observe(
            "docket_clio_request_seconds",
            "Latency of Clio API requests.",
            vec![("status", status.as_u16().to_string())],
            started.elapsed().as_secs_f64(),
        );
        match status.as_u16() {
            200..=299 => match resp.bytes().await {
                Ok(bytes) if bytes.is_empty() => Attempt::Done(Value::Null),
                Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                    Ok(v) => Attempt::Done(v),
                    Err(e) => Attempt::Retry(format!("malformed JSON from Clio: {e}")),
                },
                Err(e) => Attempt::Retry(format!("the response broke off: {e}")),
            },
            429 => {
                let secs = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
                Attempt::Wait(Duration::from_secs(secs.unwrap_or(60)).min(self.policy.max_retry_after))
            }
            401 => Attempt::Unauthorized(resp.text().await.unwrap_or_default().chars().take(200).collect()),
            500..=599 => Attempt::Retry(format!("Clio answered {status}")),
            _ => {
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                let message = body.pointer("/error/message").and_then(Value::as_str).unwrap_or("no detail").to_string();
                Attempt::Fail(ClioError::Refused { status: status.as_u16(), message })
            }
        }
    }

    /// GETs `url` with retries, refresh and pacing; the parsed JSON body.
    pub async fn get(&self, url: &str, kind: Kind) -> Result<Value, ClioError> {
        self.request(reqwest::Method::GET, url, None, kind).await
    }

    /// Sends `body` to `path` (under the API base) with `method`; the parsed JSON answer.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
        kind: Kind,
    ) -> Result<Value, ClioError> {
        let url = format!("{}{path}", self.endpoints.api_base);
        self.request(method, &url, Some(body), kind).await
    }

    async fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
        kind: Kind,
    ) -> Result<Value, ClioError> {
        let labels = || vec![("kind", kind.as_str().to_string())];
        let (mut failures, mut waits, mut refreshed) = (0u32, 0u32, false);
        let mut token = self.access_token(false).await?;
        loop {
            self.metrics.count("docket_clio_requests_total", "Requests sent to Clio.", labels(), 1);
            match self.attempt(&method, url, body, &token).await {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(e) => return Err(e),
                Attempt::Unauthorized(detail) if !refreshed => {
                    refreshed = true;
                    tracing::info!(%detail, "Clio answered 401; refreshing the access token");
                    token = self.access_token(true).await?;
                }
                Attempt::Unauthorized(detail) => return Err(ClioError::Unauthorized(detail)),
                Attempt::Wait(d) => {
                    waits += 1;
                    self.metrics.count("docket_clio_rate_limited_total", "429 answers from Clio.", labels(), 1);
                    if waits > self.policy.rate_limit_waits {
                        return Err(ClioError::RateLimited(waits - 1));
                    }
                    tracing::info!(seconds = d.as_secs(), "Clio rate limit reached; waiting");
                    tokio::time::sleep(d).await;
                }
                Attempt::Retry(reason) => {
                    failures += 1;
                    if failures >= self.policy.attempts {
                        return Err(ClioError::Unavailable { attempts: failures, last: reason });
                    }
                    self.metrics.count("docket_clio_retries_total", "Clio requests retried.", labels(), 1);
                    let d = self.backoff(failures);
                    tracing::warn!(%reason, attempt = failures, wait_ms = d.as_millis() as u64, "Clio request failed; retrying");
                    tokio::time::sleep(d).await;
                }
            }
        }
    }

    /// Revokes docket's access at Clio (`/oauth/deauthorize`). A 401 means the
    /// access token was stale, not that the grant is gone: the token is
    /// refreshed and the request sent once more. Only a 2xx confirms.
    pub async fn deauthorize(&self) -> Result<(), ClioError> {
        let mut status = 0;
        for force_refresh in [false, true] {
            let token = self.access_token(force_refresh).await?;
            let resp = self
                .http
                .post(format!("{}/oauth/deauthorize", self.endpoints.oauth_base))
                .bearer_auth(token.expose())
                .form(&[("token", token.expose())])
                .send()
                .await
                .map_err(|e| ClioError::Unavailable { attempts: 1, last: e.to_string() })?;
            status = resp.status().as_u16();
            if resp.status().is_success() {
                return Ok(());
            }
            if status != 401 {
                break;
            }
        }
        Err(ClioError::Refused { status, message: "Clio did not confirm the deauthorization".into() })
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
