//! docket itself: the firm loaded into a store through the sync's write path,
//! then the appliance started in-process on loopback HTTPS (self-signed), its
//! search engine indexing from the journal until the lag is 0, and clients
//! querying `GET /api/v1/search` and `/api/v1/search/suggest` over HTTPS.
use crate::firm;
use crate::measure::{Answer, Client, SearchClient};
use crate::mix::{FACETS, LIMIT, Op, Query, SUGGEST_LIMIT, Suggest};
use anyhow::Context;
use docket::app::{self, Instance, Running};
use docket::clio::generator::Firm;
use docket::clio::sync::SyncScope;
use docket::clock::Clock;
use docket::config::{Config, TlsMode};
use docket::secrets::{Keyring, default_key_path};
use docket::store::{OrgTask, OrgTaskContext};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long indexing may take before the benchmark gives up.
const INDEX_TIMEOUT: Duration = Duration::from_secs(3 * 3600);

/// A store loaded with the firm, not yet serving.
pub struct Loaded {
    pub instance: Instance,
    pub token: String,
    /// Bytes of record JSON stored (the "store's record data").
    pub record_bytes: u64,
    pub store_bytes: u64,
}

fn config(data_dir: &Path) -> anyhow::Result<Config> {
    let mut config = Config { data_dir: data_dir.to_path_buf(), ..Default::default() };
    config.tls.mode = TlsMode::SelfSigned;
    config.server.listen = vec!["127.0.0.1:0".parse()?];
    config.server.redirect_listen = Some(vec![]);
    // The benchmark is one credential and one address sending tens of thousands of requests.
    config.limits.per_ip_per_minute = 1_000_000_000;
    config.limits.per_credential_per_minute = 1_000_000_000;
    Ok(config)
}

/// Opens a store in `data_dir`, creates the org and a staff token, and loads the firm.
pub fn load(data_dir: &Path, firm: &Firm) -> anyhow::Result<Loaded> {
    let config = config(data_dir)?;
    Keyring::generate(&default_key_path(&config.data_dir)).context("making the bench's master key")?;
    let instance = Instance::open(config, Clock::system()).context("opening the bench's store")?;
    let store = &instance.store;
    let admin = OrgTaskContext::new(OrgTask::Test);
    let org = docket::control::create_org(store, &admin, "bench", "Bench LLP")?;
    let (token, _) = docket::auth::tokens::create_service(store, &admin, org.id, "bench", "staff", None)?;
    let scope = SyncScope::begin(store, &OrgTaskContext::new(OrgTask::ClioSync), org.id)?;
    let record_bytes = firm::load_store(store, &scope, firm)?;
    let store_bytes = std::fs::metadata(store.path()).map(|m| m.len()).unwrap_or(0);
    Ok(Loaded { token: token.expose().to_string(), instance, record_bytes, store_bytes })
}

/// The appliance, serving.
pub struct Serving {
    pub running: Running,
    pub base: String,
    pub token: String,
    /// From `app::start` until the index had every record.
    pub indexing: Duration,
    /// Documents in the index then, as `/metrics` reports them.
    pub documents: Option<f64>,
}

fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(1)
        .build()?)
}

/// The sum of every sample of the metrics whose name has all of `words`
/// (Prometheus text); `None` if there is none.
fn metric(metrics: &str, words: &[&str]) -> Option<f64> {
    let samples: Vec<f64> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let metric = name.split('{').next()?;
            words.iter().all(|w| metric.contains(w)).then(|| value.parse::<f64>().ok())?
        })
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

/// How long search may answer with no lag metric in `/metrics` before the
/// benchmark takes "search answers" as "indexed".
const NO_LAG_METRIC_GRACE: Duration = Duration::from_secs(10);

/// Starts serving and waits until search answers and the lag is 0; stops
/// the appliance again if it never gets there.
pub async fn serve(loaded: Loaded) -> anyhow::Result<Serving> {
    let Loaded { instance, token, .. } = loaded;
    let started = Instant::now();
    let running = app::start(instance).await.context("starting the appliance")?;
    let port = running.main_addrs.first().map(|a| a.port()).unwrap_or_default();
    let base = format!("https://localhost:{port}");
    match indexed(&base, &token, started).await {
        Ok((indexing, documents)) => Ok(Serving { running, base, token, indexing, documents }),
        Err(e) => {
            if let Err(stop) = running.stop().await {
                eprintln!("docket: could not stop the appliance: {stop}");
            }
            Err(e)
        }
    }
}

/// Polls until search answers and `/metrics` shows no lag: the time from
/// `started` and the documents the index then holds.
async fn indexed(base: &str, token: &str, started: Instant) -> anyhow::Result<(Duration, Option<f64>)> {
    let client = http()?;
    let mut answering_since = None;
    loop {
        anyhow::ensure!(started.elapsed() < INDEX_TIMEOUT, "the index did not catch up within {INDEX_TIMEOUT:?}");
        let search = client.get(format!("{base}/api/v1/search?q=bench&limit=1")).bearer_auth(token).send().await?;
        let status = search.status();
        anyhow::ensure!(
            status.is_success() || status == reqwest::StatusCode::SERVICE_UNAVAILABLE,
            "GET /api/v1/search answered {status}: {}",
            search.text().await.unwrap_or_default()
        );
        if status.is_success() {
            let now = Instant::now();
            let metrics = client.get(format!("{base}/metrics")).send().await?.text().await?;
            let documents = metric(&metrics, &["search", "documents"]);
            let since = *answering_since.get_or_insert(now);
            match metric(&metrics, &["search", "lag"]) {
                Some(lag) if lag <= 0.0 => return Ok((now - started, documents)),
                Some(_) => {}
                None if since.elapsed() > NO_LAG_METRIC_GRACE => {
                    eprintln!("docket: /metrics has no search lag metric; indexing time is until search answered");
                    return Ok((since - started, documents));
                }
                None => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bytes under `dir`, recursively.
pub fn du(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => du(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// One HTTPS client (its own connection, HTTP/2 when offered).
pub struct DocketClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl DocketClient {
    pub fn connect(serving: &Serving) -> anyhow::Result<Client> {
        Ok(Box::new(DocketClient { http: http()?, base: serving.base.clone(), token: serving.token.clone() }))
    }

    fn url(&self, path: &str, params: &[(&str, String)]) -> anyhow::Result<url::Url> {
        Ok(url::Url::parse_with_params(&format!("{}{path}", self.base), params)?)
    }

    async fn get(&self, url: url::Url) -> anyhow::Result<serde_json::Value> {
        let response = self.http.get(url.clone()).bearer_auth(&self.token).send().await?;
        let status = response.status();
        let body = response.text().await?;
        anyhow::ensure!(status.is_success(), "{} answered {status}: {body}", url.path());
        Ok(serde_json::from_str(&body)?)
    }

    async fn search(&self, q: &Query) -> anyhow::Result<u64> {
        let f = &q.filters;
        let mut params = vec![("q", q.q.clone()), ("limit", LIMIT.to_string())];
        if !f.kinds.is_empty() {
            params.push(("kind", f.kinds.join(",")));
        }
        let optional = [
            ("status", f.status.map(str::to_owned)),
            ("practice_area", f.practice_area.clone()),
            ("client_id", f.client_id.map(|c| c.to_string())),
            ("from", f.from.clone()),
            ("to", f.to.clone()),
            ("billed", f.billed.map(|b| b.to_string())),
            ("sort", q.date_desc.then(|| "date_desc".to_string())),
            ("facets", q.facets.then(|| FACETS.join(","))),
        ];
        params.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        let body = self.get(self.url("/api/v1/search", &params)?).await?;
        body.get("total").and_then(|t| t.as_u64()).context("the search answer has no `total`")
    }

    async fn suggest(&self, s: &Suggest) -> anyhow::Result<u64> {
        let params = [("q", s.typed.clone()), ("limit", SUGGEST_LIMIT.to_string())];
        let body = self.get(self.url("/api/v1/search/suggest", &params)?).await?;
        let n = body.get("suggestions").and_then(|s| s.as_array()).map(Vec::len);
        Ok(n.context("the suggest answer has no `suggestions`")? as u64)
    }
}

impl SearchClient for DocketClient {
    fn run<'a>(&'a mut self, op: &'a Op) -> Answer<'a> {
        Box::pin(async move {
            match op {
                Op::Search(q) => self.search(q).await,
                Op::Suggest(s) => self.suggest(s).await,
            }
        })
    }
}
