//! A faithful fake of the part of Clio Manage API v4 docket uses, served on
//! loopback for the tests, the demo and the sync benchmark (no machine here
//! can reach Clio; `../shared/CLIO.md` is the reference it follows).
//!
//! - OAuth 2.0: `/oauth/authorize` (approves at once, as if the user clicked
//!   Allow), `/oauth/token` (code and refresh grants; refresh tokens do not
//!   rotate), `/oauth/deauthorize`; access tokens expire after `token_ttl`.
//! - `/api/v4/<collection>[.json]` and `/<collection>/<id>[.json]` for the eight
//!   kinds in [`Kind`], `/users/who_am_i`: `fields` with one nesting level
//!   (unknown fields and deeper nesting answer 400 `InvalidFields`), cursor
//!   paging through `meta.paging.next` (`order=id(asc)` only), `limit` up to 200
//!   (users 2000), `updated_since`, `meta.records`, `X-API-VERSION` echoed.
//! - Per-token rate limits with `X-RateLimit-*` headers and 429 `Retry-After`.
//! - Faults on demand: bursts of 5xx, slow responses, truncated or mistyped
//!   bodies, records without an id.
//! - Edits, creations and deletions on demand, so incremental sync and deletion
//!   detection can be checked against the source.
use super::generator::{self, Firm};
use crate::records::Kind;
use poem::http::{HeaderValue, StatusCode};
use poem::listener::{Acceptor as _, Listener as _, TcpListener};
use poem::web::Query;
use poem::{Body, EndpointExt as _, IntoResponse, Request, Response, Route, Server, handler};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The API version the fake speaks (and echoes).
pub const API_VERSION: &str = "4.0.13";

/// How a response body is damaged (one response each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// The JSON stops half way.
    Truncated,
    /// The first record's `id` is an object.
    WrongType,
    /// The first record has no `id`.
    MissingId,
}

/// Faults the fake injects; all off by default.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Requests per window per access token; `None` = unlimited.
    pub rate_limit_per_minute: Option<u32>,
    /// The rate-limit window: Clio's is a minute; tests shorten it.
    pub rate_window: Duration,
    /// Whether responses carry `X-RateLimit-*` (off: a client cannot pace and meets 429s).
    pub rate_headers: bool,
    /// The next this-many API requests fail with `fail_status`.
    pub fail_next: u32,
    pub fail_status: u16,
    /// Added to every API response.
    pub delay: Duration,
    /// The next list responses are damaged this way.
    pub corrupt_next: Vec<Corruption>,
    /// Lifetime of access tokens.
    pub token_ttl: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            rate_limit_per_minute: None,
            rate_window: Duration::from_secs(60),
            rate_headers: true,
            fail_next: 0,
            fail_status: 503,
            delay: Duration::ZERO,
            corrupt_next: vec![],
            token_ttl: Duration::from_secs(30 * 86_400),
        }
    }
}

/// A webhook subscription at the fake.
#[derive(Clone, Debug)]
struct Hook {
    url: String,
    kind: Kind,
    fields: Vec<Field>,
    secret: String,
    active: bool,
    expires_at: String,
}

struct Window {
    start: Instant,
    used: u32,
}

struct State {
    firm: Firm,
    /// Edited or created records: full JSON and `updated_at` (unix seconds).
    overlay: BTreeMap<(Kind, u64), (Value, i64)>,
    deleted: BTreeSet<(Kind, u64)>,
    created: HashMap<Kind, u64>,
    versions: HashMap<(Kind, u64), u64>,
    /// The fake's own clock for edits: later than every base record.
    now: i64,
    codes: HashMap<String, String>,
    access: HashMap<String, Instant>,
    refresh: BTreeSet<String>,
    windows: HashMap<String, Window>,
    faults: Faults,
    api_calls: u64,
    hooks: BTreeMap<u64, Hook>,
    next_hook: u64,
}

/// A running fake Clio.
#[derive(Clone)]
pub struct FakeClio {
    state: Arc<Mutex<State>>,
    pub addr: SocketAddr,
    pub client_id: String,
    pub client_secret: String,
}

fn token() -> String {
    crate::auth::random_token(24)
}

fn clio_error(status: StatusCode, kind: &str, message: &str) -> Response {
    json_response(status, &json!({"error": {"type": kind, "message": message}}))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    Response::builder().status(status).content_type("application/json").body(body.to_string())
}

/// One requested field and, for a nested resource, the fields asked of it.
type Field = (String, Option<Vec<String>>);

/// `fields=a,b,c{x,y}` as (name, nested names); `Err` names the problem.
fn parse_fields(spec: &str) -> Result<Vec<Field>, String> {
    let mut out = vec![];
    let mut rest = spec;
    while !rest.is_empty() {
        let end = rest.find([',', '{']).unwrap_or(rest.len());
        let name = rest[..end].trim().to_string();
        rest = &rest[end..];
        let nested = if let Some(inner) = rest.strip_prefix('{') {
            let close = inner.find('}').ok_or("unbalanced `{` in fields")?;
            let body = &inner[..close];
            if body.contains('{') {
                return Err(format!("{name}: nested fields may go one level deep only"));
            }
            rest = &inner[close + 1..];
            Some(body.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
        } else {
            None
        };
        rest = rest.strip_prefix(',').unwrap_or(rest);
        if name.is_empty() {
            return Err("empty field name".into());
        }
        out.push((name, nested));
    }
    Ok(out)
}

fn project(record: &Value, fields: &[Field]) -> Value {
    let pick = |v: &Value, keys: &[String]| -> Value {
        match v {
            Value::Object(m) => {
                Value::Object(m.iter().filter(|(k, _)| keys.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect())
            }
            other => other.clone(),
        }
    };
    let default_nested = ["id".to_string(), "etag".to_string()];
    let mut out = serde_json::Map::new();
    for (name, nested) in fields {
        let Some(v) = record.get(name) else { continue };
        let keys = nested.as_deref().unwrap_or(&default_nested);
        let shaped = match v {
            Value::Object(_) => pick(v, keys),
            Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => {
                Value::Array(items.iter().map(|i| pick(i, keys)).collect())
            }
            other => other.clone(),
        };
        out.insert(name.clone(), shaped);
    }
    Value::Object(out)
}

fn parse_time(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok().map(|t| t.unix_timestamp())
}

fn encode_cursor(id: u64) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("after:{id}"))
}

fn decode_cursor(token: &str) -> Option<u64> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    String::from_utf8(raw).ok()?.strip_prefix("after:")?.parse().ok()
}

impl State {
    fn new(firm: Firm, faults: Faults) -> State {
        let latest = Kind::ALL.iter().map(|k| firm.updated_at(firm.count(*k))).max().unwrap_or(generator::EPOCH);
        State {
            firm,
            overlay: BTreeMap::new(),
            deleted: BTreeSet::new(),
            created: HashMap::new(),
            versions: HashMap::new(),
            now: latest + 60,
            codes: HashMap::new(),
            access: HashMap::new(),
            refresh: BTreeSet::new(),
            windows: HashMap::new(),
            faults,
            api_calls: 0,
            hooks: BTreeMap::new(),
            next_hook: 1,
        }
    }

    fn base_count(&self, kind: Kind) -> u64 {
        self.firm.count(kind)
    }

    /// The current version of record `id`, if it exists.
    fn get(&self, kind: Kind, id: u64) -> Option<(Value, i64)> {
        if self.deleted.contains(&(kind, id)) {
            return None;
        }
        if let Some(v) = self.overlay.get(&(kind, id)) {
            return Some(v.clone());
        }
        let index = self.firm.index_of(kind, id).filter(|i| *i < self.base_count(kind))?;
        Some((self.firm.record(kind, index), self.firm.updated_at(index)))
    }

    /// One page of `kind` in id order: records updated after `since`, ids after
    /// `after`; returns the page and whether more follow.
    fn page(&self, kind: Kind, since: Option<i64>, after: Option<u64>, limit: usize) -> (Vec<Value>, bool) {
        let lo = since.map_or(0, |s| self.firm.first_updated_after(s));
        let first_id = self.firm.id(kind, lo);
        let start_id = after.map_or(first_id, |a| (a + 1).max(first_id));
        let base_end = self.firm.id(kind, self.base_count(kind));
        let mut overlay = self
            .overlay
            .range((kind, after.map_or(0, |a| a + 1))..=(kind, u64::MAX))
            .filter(|((_, id), (_, updated))| after.is_none_or(|a| *id > a) && since.is_none_or(|s| *updated > s))
            .map(|((_, id), (v, _))| (*id, v))
            .peekable();
        let mut out = Vec::with_capacity(limit);
        let mut base_id = start_id;
        loop {
            while base_id < base_end
                && (self.deleted.contains(&(kind, base_id)) || self.overlay.contains_key(&(kind, base_id)))
            {
                base_id += 1;
            }
            let next_overlay = overlay.peek().map(|(id, _)| *id);
            let take_base = base_id < base_end && next_overlay.is_none_or(|o| base_id < o);
            if !take_base && next_overlay.is_none() {
                return (out, false);
            }
            if out.len() == limit {
                return (out, true);
            }
            if take_base {
                let index = self.firm.index_of(kind, base_id).unwrap_or(0);
                out.push(self.firm.record(kind, index));
                base_id += 1;
            } else if let Some((_, v)) = overlay.next() {
                out.push(v.clone());
            }
        }
    }

    /// How many records of `kind` were updated after `since`.
    fn count(&self, kind: Kind, since: Option<i64>) -> u64 {
        let lo = since.map_or(0, |s| self.firm.first_updated_after(s));
        let in_base = |id: u64| self.firm.index_of(kind, id).is_some_and(|i| i >= lo && i < self.base_count(kind));
        let base = self.base_count(kind).saturating_sub(lo);
        let deleted = self.deleted.iter().filter(|(k, id)| *k == kind && in_base(*id)).count() as u64;
        let replaced = self.overlay.keys().filter(|(k, id)| *k == kind && in_base(*id)).count() as u64;
        let overlay =
            self.overlay.iter().filter(|((k, _), (_, u))| *k == kind && since.is_none_or(|s| *u > s)).count() as u64;
        base - deleted - replaced + overlay
    }

    fn tick(&mut self) -> i64 {
        self.now += 1;
        self.now
    }
}

impl FakeClio {
    /// Starts a fake Clio for a firm of about `total` records on 127.0.0.1.
    pub async fn start(seed: u64, total: u64) -> std::io::Result<FakeClio> {
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .ok_or_else(|| std::io::Error::other("no local address"))?;
        let fake = FakeClio {
            state: Arc::new(Mutex::new(State::new(Firm::new(seed, total), Faults::default()))),
            addr,
            client_id: "docket-fake-client".into(),
            client_secret: "docket-fake-secret".into(),
        };
        let app = Route::new()
            .at("/oauth/authorize", poem::get(authorize))
            .at("/oauth/token", poem::post(issue_token))
            .at("/oauth/deauthorize", poem::post(deauthorize))
            .at("/api/v4/*path", poem::get(api).post(api_write).patch(api_write).delete(api_write))
            .data(fake.clone());
        tokio::spawn(async move {
            if let Err(e) = Server::new_with_acceptor(acceptor).run(app).await {
                tracing::warn!(error = %e, "the fake Clio stopped");
            }
        });
        Ok(fake)
    }

    /// `http://127.0.0.1:<port>`: both the OAuth host and, with `/api/v4`, the API base.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    }

    pub fn firm(&self) -> Firm {
        self.with(|s| s.firm.clone())
    }

    /// Changes the faults in force.
    pub fn set_faults(&self, change: impl FnOnce(&mut Faults)) {
        self.with(|s| change(&mut s.faults));
    }

    /// API requests served so far (OAuth requests not counted).
    pub fn api_calls(&self) -> u64 {
        self.with(|s| s.api_calls)
    }

    /// Edits record `id` of `kind` (a new etag and `updated_at`); false if it does not exist.
    pub fn edit(&self, kind: Kind, id: u64) -> bool {
        self.with(|s| {
            let Some((mut v, _)) = s.get(kind, id) else { return false };
            let now = s.tick();
            let version = s.versions.entry((kind, id)).or_insert(0);
            *version += 1;
            let field = match kind {
                Kind::Matter | Kind::Task | Kind::CalendarEntry => "description",
                Kind::Activity => "note",
                Kind::Note => "detail",
                Kind::Bill => "subject",
                Kind::Contact | Kind::User => "name",
            };
            let old = v.get(field).and_then(Value::as_str).unwrap_or("").to_string();
            v[field] = json!(format!("{old} (revised {version})"));
            v["etag"] = json!(format!("\"{id:x}v{version}\""));
            v["updated_at"] = json!(generator::datetime(now));
            s.overlay.insert((kind, id), (v.clone(), now));
            self.notify(s, kind, "updated", &v);
            true
        })
    }

    /// Creates a record of `kind`; returns its id.
    pub fn create(&self, kind: Kind) -> u64 {
        self.with(|s| {
            let n = s.created.entry(kind).or_insert(0);
            let index = s.firm.count(kind) + *n;
            *n += 1;
            let now = s.tick();
            let id = s.firm.id(kind, index);
            let mut v = s.firm.record(kind, index);
            v["updated_at"] = json!(generator::datetime(now));
            s.overlay.insert((kind, id), (v.clone(), now));
            self.notify(s, kind, "created", &v);
            id
        })
    }

    /// Deletes record `id` of `kind`; false if it did not exist.
    pub fn delete(&self, kind: Kind, id: u64) -> bool {
        self.with(|s| {
            let found = s.get(kind, id);
            s.overlay.remove(&(kind, id));
            s.deleted.insert((kind, id));
            if let Some((v, _)) = &found {
                self.notify(s, kind, "deleted", &json!({"id": v["id"], "etag": v["etag"]}));
            }
            found.is_some()
        })
    }

    /// Every live record of `kind` (id → JSON with every field), for comparing against a sync.
    pub fn snapshot(&self, kind: Kind) -> BTreeMap<String, Value> {
        self.with(|s| {
            let mut out = BTreeMap::new();
            let mut after = None;
            loop {
                let (page, more) = s.page(kind, None, after, 10_000);
                for v in &page {
                    let id = v["id"].to_string().trim_matches('"').to_string();
                    after = id.parse().ok();
                    out.insert(id, v.clone());
                }
                if !more || page.is_empty() {
                    return out;
                }
            }
        })
    }

    /// Delivers `event` on `record` to every active subscription for `kind`, signed.
    fn notify(&self, s: &State, kind: Kind, event: &str, record: &Value) {
        for (id, hook) in s.hooks.iter().filter(|(_, h)| h.kind == kind && h.active) {
            let data = if event == "deleted" { record.clone() } else { project(record, &hook.fields) };
            let body = json!({"data": data, "meta": {"event": event, "webhook_id": id}}).to_string();
            let signature = sign(&hook.secret, body.as_bytes());
            let url = hook.url.clone();
            tokio::spawn(async move {
                let sent = delivery_client()
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-hook-signature", signature)
                    .body(body)
                    .send()
                    .await;
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "the fake Clio could not deliver a webhook");
                }
            });
        }
    }

    /// Whether every webhook subscription completed its handshake.
    pub fn webhooks_active(&self) -> usize {
        self.with(|s| s.hooks.values().filter(|h| h.active).count())
    }

    /// Whether a grant is live: some refresh token still works.
    pub fn grant_live(&self) -> bool {
        self.with(|s| !s.refresh.is_empty())
    }

    /// Forgets every refresh token (as if the grant were revoked behind docket's back).
    pub fn forget_refresh_tokens(&self) {
        self.with(|s| s.refresh.clear());
    }

    /// Invalidates every access token now (as if they expired); refresh tokens keep working.
    pub fn expire_access_tokens(&self) {
        self.with(|s| s.access.clear());
    }

    /// Tokens for the firm's account, as if an admin had approved docket in a
    /// browser and docket had redeemed the code (for the tests and the benchmark).
    pub async fn grant(&self, http: &reqwest::Client) -> Result<super::client::Tokens, super::client::ClioError> {
        let redirect = "https://docket.test/api/v1/clio/callback";
        let code = self.approve(redirect);
        let grant = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", redirect)];
        let secret = crate::secrets::Secret::new(self.client_secret.clone());
        let endpoints = super::client::Endpoints::at(&self.base_url());
        super::client::token_request(http, &endpoints, &self.client_id, &secret, &grant, None).await
    }

    /// Signs in as the firm's account owner the way a browser would: the
    /// authorization code `/oauth/authorize` would hand to `redirect_uri`.
    pub fn approve(&self, redirect_uri: &str) -> String {
        let code = token();
        self.with(|s| s.codes.insert(code.clone(), redirect_uri.to_string()));
        code
    }
}

#[handler]
fn authorize(req: &Request, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(fake) = req.data::<FakeClio>() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    let (Some(client), Some(redirect)) = (q.get("client_id"), q.get("redirect_uri")) else {
        return clio_error(StatusCode::BAD_REQUEST, "invalid_request", "client_id and redirect_uri are required");
    };
    if *client != fake.client_id || q.get("response_type").map(String::as_str) != Some("code") {
        return clio_error(StatusCode::BAD_REQUEST, "invalid_client", "unknown client_id or response_type");
    }
    let code = fake.approve(redirect);
    let sep = if redirect.contains('?') { '&' } else { '?' };
    let mut location = format!("{redirect}{sep}code={code}");
    if let Some(state) = q.get("state") {
        location.push_str(&format!("&state={}", urlencode(state)));
    }
    Response::builder().status(StatusCode::FOUND).header("location", location).finish()
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[handler]
async fn issue_token(req: &Request, body: Body) -> Response {
    let Some(fake) = req.data::<FakeClio>() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    let text = body.into_string().await.unwrap_or_default();
    let form: HashMap<String, String> = serde_urlencoded_pairs(&text);
    if form.get("client_id") != Some(&fake.client_id) || form.get("client_secret") != Some(&fake.client_secret) {
        return json_response(StatusCode::UNAUTHORIZED, &json!({"error": "invalid_client"}));
    }
    fake.with(|s| {
        let ok = match form.get("grant_type").map(String::as_str) {
            Some("authorization_code") => form
                .get("code")
                .and_then(|c| s.codes.remove(c))
                .is_some_and(|uri| Some(&uri) == form.get("redirect_uri")),
            Some("refresh_token") => form.get("refresh_token").is_some_and(|r| s.refresh.contains(r)),
            _ => false,
        };
        if !ok {
            return json_response(StatusCode::BAD_REQUEST, &json!({"error": "invalid_grant"}));
        }
        let access = token();
        let ttl = s.faults.token_ttl;
        s.access.insert(access.clone(), Instant::now() + ttl);
        let mut body = json!({"token_type": "bearer", "access_token": access, "expires_in": ttl.as_secs()});
        if form.get("grant_type").map(String::as_str) == Some("authorization_code") {
            let refresh = token();
            s.refresh.insert(refresh.clone());
            body["refresh_token"] = json!(refresh);
        }
        json_response(StatusCode::OK, &body)
    })
}

fn serde_urlencoded_pairs(text: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(text.as_bytes()).into_owned().collect()
}

fn bearer(req: &Request) -> Option<String> {
    req.headers().get("authorization")?.to_str().ok()?.strip_prefix("Bearer ").map(str::to_owned)
}

#[handler]
fn deauthorize(req: &Request) -> Response {
    let Some(fake) = req.data::<FakeClio>() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    let Some(token) = bearer(req) else { return StatusCode::UNAUTHORIZED.into_response() };
    // As at Clio, only a live access token can revoke the grant: an expired
    // one gets 401 and the grant stays.
    let revoked = fake.with(|s| {
        if s.access.get(&token).is_none_or(|exp| *exp <= Instant::now()) {
            return false;
        }
        s.access.clear();
        // Deauthorizing the app revokes its grant: refresh tokens stop working too.
        s.refresh.clear();
        true
    });
    if revoked { StatusCode::OK.into_response() } else { StatusCode::UNAUTHORIZED.into_response() }
}

fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::Mac as _;
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else { return String::new() };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The fake delivers to docket's own (often self-signed) HTTPS listener on loopback.
fn delivery_client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// `POST /webhooks` (subscribe, then handshake), `PATCH /webhooks/{id}`, `DELETE /webhooks/{id}`.
#[handler]
async fn api_write(req: &Request, body: Body) -> Response {
    let Some(fake) = req.data::<FakeClio>().cloned() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    let path = req.uri().path().trim_start_matches("/api/v4/").trim_end_matches(".json").to_string();
    let body: Value = serde_json::from_str(&body.into_string().await.unwrap_or_default()).unwrap_or(Value::Null);
    let method = req.method().clone();
    let authorized = fake.with(|s| {
        s.api_calls += 1;
        bearer(req).is_some_and(|t| s.access.get(&t).is_some_and(|exp| *exp > Instant::now()))
    });
    if !authorized {
        return invalid_token();
    }
    match (method.as_str(), path.split_once('/')) {
        ("POST", None) if path == "webhooks" => {
            let d = &body["data"];
            let (Some(url), Some(model)) = (d["url"].as_str(), d["model"].as_str()) else {
                return clio_error(StatusCode::UNPROCESSABLE_ENTITY, "ValidationError", "url and model are required");
            };
            let Some(kind) = Kind::ALL.into_iter().find(|k| k.as_str() == model) else {
                return clio_error(StatusCode::UNPROCESSABLE_ENTITY, "ValidationError", "unknown model");
            };
            let fields = match parse_fields(d["fields"].as_str().unwrap_or("id,etag")) {
                Ok(f) => f,
                Err(p) => return clio_error(StatusCode::BAD_REQUEST, "InvalidFields", &p),
            };
            let hook = Hook {
                url: url.to_string(),
                kind,
                fields,
                secret: token(),
                active: false,
                expires_at: d["expires_at"].as_str().unwrap_or_default().to_string(),
            };
            let id = fake.with(|s| {
                let id = s.next_hook;
                s.next_hook += 1;
                s.hooks.insert(id, hook.clone());
                id
            });
            // The handshake: Clio POSTs the shared secret; the subscriber echoes it.
            let handshake_fake = fake.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let sent = delivery_client()
                    .post(&hook.url)
                    .header("x-hook-secret", &hook.secret)
                    .json(&json!({"data": {"webhook_id": id}}))
                    .send()
                    .await;
                let echoed = sent
                    .ok()
                    .filter(|r| r.status().is_success())
                    .and_then(|r| r.headers().get("x-hook-secret").and_then(|v| v.to_str().ok()).map(str::to_owned));
                if echoed.as_deref() == Some(hook.secret.as_str()) {
                    handshake_fake.with(|s| s.hooks.get_mut(&id).map(|h| h.active = true));
                }
            });
            json_response(
                StatusCode::CREATED,
                &json!({"data": {"id": id, "url": url, "model": model, "status": "pending", "expires_at": hook.expires_at}}),
            )
        }
        ("PATCH", Some(("webhooks", id))) => {
            fake.with(|s| match id.parse().ok().and_then(|id: u64| s.hooks.get_mut(&id)) {
                Some(h) => {
                    if let Some(e) = body.pointer("/data/expires_at").and_then(Value::as_str) {
                        h.expires_at = e.to_string();
                    }
                    json_response(StatusCode::OK, &json!({"data": {"id": id, "expires_at": h.expires_at}}))
                }
                None => clio_error(StatusCode::NOT_FOUND, "RecordNotFound", "no such webhook"),
            })
        }
        ("DELETE", Some(("webhooks", id))) => {
            fake.with(|s| match id.parse().ok().and_then(|id: u64| s.hooks.remove(&id)) {
                Some(_) => StatusCode::NO_CONTENT.into_response(),
                None => clio_error(StatusCode::NOT_FOUND, "RecordNotFound", "no such webhook"),
            })
        }
        _ => clio_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the fake Clio is read-only apart from webhooks",
        ),
    }
}

fn invalid_token() -> Response {
    json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"error": "invalid_token", "error_description": "The access token provided is expired, revoked, malformed or invalid for other reasons."}),
    )
}

/// Rate-limit headers and the 429, per access token.
fn rate_limit(s: &mut State, token: &str) -> (Option<Response>, Vec<(&'static str, String)>) {
    let Some(limit) = s.faults.rate_limit_per_minute else { return (None, vec![]) };
    let window = s.faults.rate_window;
    let w = s.windows.entry(token.to_string()).or_insert(Window { start: Instant::now(), used: 0 });
    if w.start.elapsed() >= window {
        *w = Window { start: Instant::now(), used: 0 };
    }
    let left = window.saturating_sub(w.start.elapsed());
    let reset = time::OffsetDateTime::now_utc().unix_timestamp() + i64::try_from(left.as_secs()).unwrap_or(60) + 1;
    let shown = s.faults.rate_headers;
    let headers = |remaining: u32| {
        if !shown {
            return vec![];
        }
        vec![
            ("x-ratelimit-limit", limit.to_string()),
            ("x-ratelimit-remaining", remaining.to_string()),
            ("x-ratelimit-reset", reset.to_string()),
        ]
    };
    if w.used >= limit {
        let mut resp = clio_error(StatusCode::TOO_MANY_REQUESTS, "RateLimited", "Rate limit exceeded");
        resp.headers_mut().insert("retry-after", HeaderValue::from(left.as_secs().max(1)));
        return (Some(resp), headers(0));
    }
    w.used += 1;
    (None, headers(limit - w.used))
}

#[handler]
async fn api(req: &Request, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(fake) = req.data::<FakeClio>().cloned() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    let path = req.uri().path().trim_start_matches("/api/v4/").trim_end_matches(".json").to_string();
    let delay = fake.with(|s| s.faults.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut resp = fake.with(|s| {
        s.api_calls += 1;
        let Some(token) = bearer(req) else { return (invalid_token(), vec![]) };
        if s.access.get(&token).is_none_or(|exp| *exp <= Instant::now()) {
            return (invalid_token(), vec![]);
        }
        let (limited, headers) = rate_limit(s, &token);
        if let Some(r) = limited {
            return (r, headers);
        }
        if s.faults.fail_next > 0 {
            s.faults.fail_next -= 1;
            let status = StatusCode::from_u16(s.faults.fail_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return (clio_error(status, "ServiceUnavailable", "try again later"), headers);
        }
        (serve(s, &fake.base_url(), &path, &q), headers)
    });
    let (ref mut r, headers) = resp;
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            r.headers_mut().insert(name, v);
        }
    }
    r.headers_mut().insert("x-api-version", HeaderValue::from_static(API_VERSION));
    resp.0
}

fn serve(s: &mut State, base: &str, path: &str, q: &HashMap<String, String>) -> Response {
    let fields = match q.get("fields").map(|f| parse_fields(f)).transpose() {
        Ok(f) => f.unwrap_or_else(|| vec![("id".into(), None), ("etag".into(), None)]),
        Err(problem) => return clio_error(StatusCode::BAD_REQUEST, "InvalidFields", &problem),
    };
    let (collection, id) = match path.split_once('/') {
        Some((c, id)) => (c, Some(id)),
        None => (path, None),
    };
    if collection == "users" && id == Some("who_am_i") {
        let (v, _) = s.get(Kind::User, s.firm.id(Kind::User, 0)).unwrap_or_default();
        let mut v = project(&v, &fields);
        v["account"] = json!({"id": 1, "name": "Smith & Jones LLP"});
        return json_response(StatusCode::OK, &json!({"data": v}));
    }
    let Some(kind) = Kind::from_collection(collection) else {
        return clio_error(StatusCode::NOT_FOUND, "RecordNotFound", "no such resource");
    };
    let full = s.firm.record(kind, 0);
    if let Some((bad, _)) = fields.iter().find(|(name, _)| full.get(name).is_none()) {
        return clio_error(StatusCode::BAD_REQUEST, "InvalidFields", &format!("{bad} is not a valid field"));
    }
    if let Some(id) = id {
        let found = id.parse().ok().and_then(|id| s.get(kind, id));
        return match found {
            Some((v, _)) => json_response(StatusCode::OK, &json!({"data": project(&v, &fields)})),
            None => clio_error(StatusCode::NOT_FOUND, "RecordNotFound", "Record not found"),
        };
    }
    let limit = match q.get("limit").map(|l| l.parse::<u32>()) {
        None => kind.page_limit(),
        Some(Ok(l)) if (1..=kind.page_limit()).contains(&l) => l,
        Some(_) => return clio_error(StatusCode::BAD_REQUEST, "ArgumentError", "limit is out of range"),
    };
    if q.get("order").is_some_and(|o| o != "id(asc)") {
        return clio_error(StatusCode::BAD_REQUEST, "ArgumentError", "this fake supports order=id(asc) only");
    }
    let since = match q.get("updated_since").map(|t| parse_time(t)) {
        None => None,
        Some(Some(t)) => Some(t),
        Some(None) => return clio_error(StatusCode::BAD_REQUEST, "ArgumentError", "updated_since is not ISO-8601"),
    };
    let after = match q.get("page_token").map(|t| decode_cursor(t)) {
        None => None,
        Some(Some(a)) => Some(a),
        Some(None) => return clio_error(StatusCode::BAD_REQUEST, "ArgumentError", "invalid page_token"),
    };
    let (page, more) = s.page(kind, since, after, limit as usize);
    let mut data: Vec<Value> = page.iter().map(|v| project(v, &fields)).collect();
    let mut paging = serde_json::Map::new();
    if more && let Some(last) = page.last().and_then(|v| v["id"].to_string().trim_matches('"').parse::<u64>().ok()) {
        let Ok(mut next) = url::Url::parse(&format!("{base}/api/v4/{path}.json")) else {
            return clio_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", "bad base URL");
        };
        {
            let mut pairs = next.query_pairs_mut();
            for (k, v) in q.iter().filter(|(k, _)| *k != "page_token") {
                pairs.append_pair(k, v);
            }
            pairs.append_pair("page_token", &encode_cursor(last));
        }
        paging.insert("next".into(), json!(next.to_string()));
    }
    if let Some(corruption) = (!s.faults.corrupt_next.is_empty()).then(|| s.faults.corrupt_next.remove(0)) {
        match corruption {
            Corruption::Truncated => {
                let body = json!({"data": data, "meta": {"paging": paging}}).to_string();
                let cut = body.len() / 2;
                return Response::builder().content_type("application/json").body(body[..cut].to_string());
            }
            Corruption::WrongType => {
                if let Some(first) = data.first_mut() {
                    first["id"] = json!({"oops": true});
                }
            }
            Corruption::MissingId => {
                if let Some(first) = data.first_mut().and_then(Value::as_object_mut) {
                    first.remove("id");
                }
            }
        }
    }
    let records = s.count(kind, since);
    json_response(StatusCode::OK, &json!({"data": data, "meta": {"paging": paging, "records": records}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse_one_level_and_project() {
        let f = parse_fields("id,etag,client{id,name},matters{id}").unwrap();
        assert_eq!(f[2], ("client".into(), Some(vec!["id".into(), "name".into()])));
        assert!(parse_fields("id,client{id,company{id}}").is_err(), "two levels");
        assert!(parse_fields("id,client{id").is_err());
        let v = json!({"id": 1, "etag": "e", "client": {"id": 5, "name": "Jane", "x": 1}, "matters": [{"id": 1, "y": 2}], "z": 3});
        let p = project(&v, &f);
        assert_eq!(p, json!({"id": 1, "etag": "e", "client": {"id": 5, "name": "Jane"}, "matters": [{"id": 1}]}));
    }

    #[test]
    fn pages_merge_edits_creations_and_deletions_in_id_order() {
        let mut s = State::new(Firm::new(1, 2_000), Faults::default());
        let kind = Kind::Matter;
        let n = s.firm.count(kind);
        let ids = |page: &[Value]| page.iter().map(|v| v["id"].as_u64().unwrap()).collect::<Vec<_>>();
        let all = |s: &State, since| {
            let (mut out, mut after) = (vec![], None);
            loop {
                let (page, more) = s.page(kind, since, after, 7);
                out.extend(ids(&page));
                after = out.last().copied();
                if !more {
                    return out;
                }
            }
        };
        assert_eq!(all(&s, None).len() as u64, n);
        assert_eq!(s.count(kind, None), n);
        let id3 = s.firm.id(kind, 3);
        s.deleted.insert((kind, id3));
        let now = s.tick();
        let id5 = s.firm.id(kind, 5);
        s.overlay.insert((kind, id5), (json!({"id": id5}), now));
        let listed = all(&s, None);
        assert_eq!(listed.len() as u64, n - 1);
        assert!(!listed.contains(&id3) && listed.contains(&id5));
        assert!(listed.windows(2).all(|w| w[0] < w[1]), "id order");
        let since = s.firm.updated_at(n - 1);
        assert_eq!(all(&s, Some(since)), vec![id5], "only the edit is newer than every base record");
        assert_eq!(s.count(kind, Some(since)), 1);
    }
}
