//! A faithful fake of the part of Clio Manage API v4 docket uses, served on
//! loopback for the tests, the demo and the sync benchmark (no machine here
//! can reach Clio; `../shared/CLIO.md` is the reference it follows). It is as
//! strict as Clio on everything CLIO.md documents, so a client that works
//! against it does not meet a 400 at Clio:
//!
//! - Versions (CLIO.md 1): `X-API-VERSION` other than `4.0.0`–`4.0.13`
//!   answers 410; successful answers echo it. Paths with and without `.json`.
//! - OAuth (2): `/oauth/authorize` needs `response_type=code`, the app's
//!   `client_id` and a `redirect_uri` (it approves at once, as if the user
//!   clicked Allow; `redirect_on_decline` accepted). Codes are single-use, bound
//!   to their `redirect_uri` and expire after 10 minutes. `/oauth/token` takes
//!   only `application/x-www-form-urlencoded`, the app's id and secret, and
//!   the `authorization_code` or `refresh_token` grant; refresh answers a new
//!   access token and no refresh token (they do not rotate). Access tokens
//!   expire after `token_ttl` (the fake's [`Clock`]): then every call answers
//!   401 `invalid_token`. `/oauth/deauthorize` needs a live Bearer token and the
//!   same token in the form body; it answers 200 without a body and revokes the grant.
//! - Requests (3): `Authorization: Bearer` on every API call. `fields` parses
//!   `a,b,c{x,y}`: an unknown field, braces on a field that is not an
//!   association, a second nesting level or unbalanced braces answer 400
//!   `InvalidFields`; without `fields` only `id` and `etag` come back; a nested
//!   resource named without braces comes back as `{id, etag}`. A single record
//!   carries `ETag` and `Last-Modified`, and `If-None-Match` with its etag answers 304.
//! - Resources (4): the eight kinds in [`Kind`] and `/users/who_am_i`; `GET
//!   /notes` answers 400 without `type=Matter` or `type=Contact`.
//! - Paging (5): `limit` 1–200 (users 2000), else 400; cursor paging only with
//!   `order=id(asc)` (the default); another order needs `offset`; `offset`
//!   past 10,000 answers 422 `ArgumentError`; `page_token` and `offset` do not
//!   mix; `meta.paging.next` is a full URL carrying every parameter, `"paging":{}`
//!   on the last page, `meta.records` counts every match. `updated_since` and
//!   `created_since` must be RFC 3339 date-times (else 400) and select records
//!   changed (created) strictly after them; `ids[]` (repeated, at most 200)
//!   selects records by id. Page tokens die ([`FakeClio::expire_page_tokens`],
//!   or [`Faults::page_token_ttl`] after they were issued): a dead one answers
//!   [`Faults::dead_token_status`] (400 or 410, as Clio has been seen to).
//! - Associations are resolved when answering: a matter's or bill's
//!   `client{name}` is the contact's name now, so renaming a contact changes
//!   them without a new etag or `updated_at`.
//! - Rate limits (6): per access token, `X-RateLimit-*` on every answer (a limit
//!   too large to meet unless [`Faults::rate_limit_per_minute`] sets one), and
//!   429 with `Retry-After` over the limit.
//! - Webhooks (7): `url` must be https, `model` one of Clio's webhook models (a
//!   name or its numeric id; no users, no notes), `fields` required and at most
//!   1000 characters, `events` from `created`/`updated`/`deleted` (and matters'
//!   own), `expires_at` an RFC 3339 time at most 31 days ahead (3 days when
//!   absent); else 422. The `X-Hook-Secret` handshake, hex HMAC-SHA256
//!   `X-Hook-Signature`, `{data, meta:{event, webhook_id}}` payloads; a 410
//!   from the receiver disables it. `status` is `pending`, `enabled` or
//!   `suspended` (after three failed deliveries in a row, or
//!   [`FakeClio::suspend_webhooks`]); a suspended subscription delivers
//!   nothing. An expired one is gone: `GET /webhooks` leaves it out, and GET,
//!   PATCH (renewal) and DELETE of it answer 404.
//! - Errors (8): `{"error":{type,message}}` bodies; 404 for unknown records and
//!   resources; writes other than webhooks answer 405; DELETE answers 204.
//!
//! Faults on demand: bursts of 5xx, slow responses, truncated or mistyped
//! bodies, records without an id, and hooks that run after the n-th API call
//! (edit a record or move the clock while a pass is under way). Edits (any
//! change: long decimals, decomposed text, null or missing fields), edits
//! stamped in the past, creations, deletions and restores on demand, so
//! incremental sync and reconciliation can be checked against the source.
//! [`FakeClio::requests`] counts requests arrived and answered, so a test can
//! see one in flight.
use super::generator::{self, Firm};
use crate::clock::Clock;
use crate::records::Kind;
use crate::timestamp::Timestamp;
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
    /// Lists answer no records and no next page (a bad answer a deletion reconcile must survive).
    pub empty_lists: bool,
    /// Page tokens stop working this long after they were issued (the fake's clock); `None`: never.
    pub page_token_ttl: Option<Duration>,
    /// What a dead page token answers: Clio has been seen answering 400 and 410.
    pub dead_token_status: u16,
    /// Subscriptions to these models are refused with 403 (the app lacks the model's permission).
    pub refuse_webhooks: Vec<Kind>,
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
            empty_lists: false,
            page_token_ttl: None,
            dead_token_status: 400,
            refuse_webhooks: vec![],
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
    /// Suspended by Clio after failed deliveries: delivers nothing until replaced.
    suspended: bool,
    /// Deliveries failed in a row; [`SUSPEND_AFTER`] suspends the subscription.
    failures: u32,
    expires_at: String,
}

impl Hook {
    /// Clio's `status`: `pending` until the handshake, `suspended` after failed deliveries, else `enabled`.
    fn status(&self) -> &'static str {
        match (self.active, self.suspended) {
            (_, true) => "suspended",
            (false, _) => "pending",
            (true, false) => "enabled",
        }
    }

    fn expired(&self, now: i64) -> bool {
        Timestamp::parse(&self.expires_at).is_ok_and(|t| t.micros() <= now)
    }
}

/// Failed deliveries in a row after which Clio suspends a subscription.
const SUSPEND_AFTER: u32 = 3;

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
    /// The `updated_at` of the latest edit (unix seconds): later than every
    /// base record, and never earlier than the clock.
    now: i64,
    clock: Clock,
    /// Authorization codes: the `redirect_uri` they were issued for, and when (micros).
    codes: HashMap<String, (String, i64)>,
    /// Access tokens and when they expire (micros, on the clock).
    access: HashMap<String, i64>,
    refresh: BTreeSet<String>,
    windows: HashMap<String, Window>,
    faults: Faults,
    api_calls: u64,
    hooks: BTreeMap<u64, Hook>,
    next_hook: u64,
    /// Run once the n-th API call has been answered (see [`FakeClio::after_call`]).
    after_calls: Vec<(u64, Box<dyn FnOnce() + Send>)>,
    /// Page tokens issued under an earlier epoch are dead ([`FakeClio::expire_page_tokens`]).
    token_epoch: u64,
    /// API requests that arrived (counted before any delay), and those answered.
    received: u64,
    answered: u64,
}

/// A running fake Clio.
#[derive(Clone)]
pub struct FakeClio {
    state: Arc<Mutex<State>>,
    /// Delivers webhooks to docket's own (often self-signed) listener on loopback.
    delivery: reqwest::Client,
    pub addr: SocketAddr,
    pub client_id: String,
    pub client_secret: String,
}

fn token() -> String {
    crate::auth::random_token(24)
}

/// A refusal in Clio's error shape, made into a response where it is answered.
struct Refusal {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl From<Refusal> for Response {
    fn from(r: Refusal) -> Response {
        clio_error(r.status, r.kind, &r.message)
    }
}

fn clio_error(status: StatusCode, kind: &str, message: &str) -> Response {
    json_response(status, &json!({"error": {"type": kind, "message": message}}))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    Response::builder().status(status).content_type("application/json").body(body.to_string())
}

/// What a listing selects besides `updated_since` and the cursor.
#[derive(Debug, Default)]
struct Select {
    /// Notes' `type` (`Matter` or `Contact`).
    note_type: Option<String>,
    /// Created strictly after this (micros).
    created_since: Option<i64>,
    /// `ids[]`: only these records.
    ids: Option<BTreeSet<u64>>,
}

impl Select {
    fn is_all(&self) -> bool {
        self.note_type.is_none() && self.created_since.is_none() && self.ids.is_none()
    }

    /// Whether base record `index` of `kind` is selected (computed without building it).
    fn base(&self, firm: &Firm, kind: Kind, index: u64) -> bool {
        self.note_type.as_deref().is_none_or(|t| kind != Kind::Note || firm.note_type(index) == t)
            && self.created_since.is_none_or(|c| firm.created_at(kind, index).saturating_mul(1_000_000) > c)
            && self.ids.as_ref().is_none_or(|ids| ids.contains(&firm.id(kind, index)))
    }

    /// Whether an edited or created record is selected.
    fn value(&self, v: &Value) -> bool {
        let created = || v["created_at"].as_str().and_then(|t| Timestamp::parse(t).ok());
        self.note_type.as_deref().is_none_or(|t| v["type"].as_str() == Some(t))
            && self.created_since.is_none_or(|c| created().is_some_and(|t| t.micros() > c))
            && self.ids.as_ref().is_none_or(|ids| id_of(v).is_some_and(|id| ids.contains(&id)))
    }
}

/// The most `ids[]` one request may name (the fake's bound; a URL stays short).
const MAX_IDS: usize = 200;

/// `ids[]` (repeated): the records a listing is limited to; 400 for one that is not an id.
fn id_filter(pairs: &[(String, String)]) -> Result<Option<BTreeSet<u64>>, Refusal> {
    let given: Vec<&str> = pairs.iter().filter(|(k, _)| k == "ids[]").map(|(_, v)| v.as_str()).collect();
    if given.is_empty() {
        return Ok(None);
    }
    if given.len() > MAX_IDS {
        return Err(bad("ArgumentError", &format!("ids[] names at most {MAX_IDS} records")));
    }
    let ids = given.iter().map(|v| v.parse::<u64>().map_err(|_| bad("ArgumentError", "ids[] takes record ids")));
    ids.collect::<Result<BTreeSet<_>, _>>().map(Some)
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

/// An opaque page token: the last id served, the token epoch and when it was issued (micros).
fn encode_cursor(id: u64, epoch: u64, issued: i64) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("after:{id}:{epoch}:{issued}"))
}

/// A page token's `(after, epoch, issued)`; `None` if it is not one the fake issued.
fn decode_cursor(token: &str) -> Option<(u64, u64, i64)> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let mut parts = text.strip_prefix("after:")?.split(':');
    let (id, epoch, issued) = (parts.next()?, parts.next()?, parts.next()?);
    Some((id.parse().ok()?, epoch.parse().ok()?, issued.parse().ok()?))
}

impl State {
    fn new(firm: Firm, faults: Faults, clock: Clock) -> State {
        let latest = Kind::ALL.iter().map(|k| firm.updated_at(firm.count(*k))).max().unwrap_or(generator::EPOCH);
        State {
            firm,
            overlay: BTreeMap::new(),
            deleted: BTreeSet::new(),
            created: HashMap::new(),
            versions: HashMap::new(),
            now: latest + 60,
            clock,
            codes: HashMap::new(),
            access: HashMap::new(),
            refresh: BTreeSet::new(),
            windows: HashMap::new(),
            faults,
            api_calls: 0,
            hooks: BTreeMap::new(),
            next_hook: 1,
            after_calls: vec![],
            token_epoch: 0,
            received: 0,
            answered: 0,
        }
    }

    /// Whether a page token issued under `epoch` at `issued` still works.
    fn token_alive(&self, epoch: u64, issued: i64) -> bool {
        let ttl = self.faults.page_token_ttl.map(|t| i64::try_from(t.as_micros()).unwrap_or(i64::MAX));
        epoch == self.token_epoch && ttl.is_none_or(|ttl| self.clock.now_micros().saturating_sub(issued) <= ttl)
    }

    /// Subscriptions past their `expires_at` are gone, as at Clio.
    fn drop_expired_hooks(&mut self) {
        let now = self.clock.now_micros();
        self.hooks.retain(|_, h| !h.expired(now));
    }

    /// Whether `token` is a live access token now.
    fn live(&self, token: &str) -> bool {
        self.access.get(token).is_some_and(|exp| *exp > self.clock.now_micros())
    }

    fn base_count(&self, kind: Kind) -> u64 {
        self.firm.count(kind)
    }

    /// The current version of record `id`, if it exists.
    fn get(&self, kind: Kind, id: u64) -> Option<(Value, i64)> {
        if self.deleted.contains(&(kind, id)) {
            return None;
        }
        if let Some((v, at)) = self.overlay.get(&(kind, id)) {
            return Some((self.linked(kind, v.clone()), *at));
        }
        let index = self.firm.index_of(kind, id).filter(|i| *i < self.base_count(kind))?;
        Some((self.linked(kind, self.firm.record(kind, index)), self.firm.updated_at(index)))
    }

    /// `v` with its nested `client{name}` read from the contact as it is now,
    /// as Clio resolves associations when it answers: renaming a contact
    /// changes what its matters and bills show, not their etag or `updated_at`.
    fn linked(&self, kind: Kind, mut v: Value) -> Value {
        if matches!(kind, Kind::Matter | Kind::Bill)
            && let Some(client) = v["client"]["id"].as_u64()
            && let Some((contact, _)) = self.overlay.get(&(Kind::Contact, client))
        {
            v["client"]["name"] = contact["name"].clone();
        }
        v
    }

    /// One page of `kind` in id order: records updated after `since` (unix
    /// seconds) that `select` keeps, ids after `after`; returns the page and
    /// whether more follow.
    fn page(
        &self,
        kind: Kind,
        since: Option<i64>,
        after: Option<u64>,
        limit: usize,
        select: &Select,
    ) -> (Vec<Value>, bool) {
        let lo = since.map_or(0, |s| self.firm.first_updated_after(s));
        let first_id = self.firm.id(kind, lo);
        let start_id = after.map_or(first_id, |a| (a + 1).max(first_id));
        let base_end = self.firm.id(kind, self.base_count(kind));
        let mut overlay = self
            .overlay
            .range((kind, after.map_or(0, |a| a + 1))..=(kind, u64::MAX))
            .filter(|((_, id), (v, updated))| {
                after.is_none_or(|a| *id > a) && since.is_none_or(|s| *updated > s) && select.value(v)
            })
            .map(|((_, id), (v, _))| (*id, v))
            .peekable();
        let skip = |id: u64| {
            self.deleted.contains(&(kind, id))
                || self.overlay.contains_key(&(kind, id))
                || !self.firm.index_of(kind, id).is_some_and(|i| select.base(&self.firm, kind, i))
        };
        let mut out = Vec::with_capacity(limit);
        let mut base_id = start_id;
        loop {
            while base_id < base_end && skip(base_id) {
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
                out.push(self.linked(kind, self.firm.record(kind, index)));
                base_id += 1;
            } else if let Some((_, v)) = overlay.next() {
                out.push(self.linked(kind, v.clone()));
            }
        }
    }

    /// How many records of `kind` updated after `since` (unix seconds) `select` keeps.
    fn count(&self, kind: Kind, since: Option<i64>, select: &Select) -> u64 {
        let lo = since.map_or(0, |s| self.firm.first_updated_after(s));
        let overlay = self
            .overlay
            .iter()
            .filter(|((k, _), (v, u))| *k == kind && since.is_none_or(|s| *u > s) && select.value(v))
            .count() as u64;
        if !select.is_all() {
            let live = |i: u64| {
                let id = self.firm.id(kind, i);
                !self.deleted.contains(&(kind, id)) && !self.overlay.contains_key(&(kind, id))
            };
            let base = (lo..self.base_count(kind)).filter(|i| select.base(&self.firm, kind, *i) && live(*i)).count();
            return base as u64 + overlay;
        }
        let in_base = |id: u64| self.firm.index_of(kind, id).is_some_and(|i| i >= lo && i < self.base_count(kind));
        let base = self.base_count(kind).saturating_sub(lo);
        let deleted = self.deleted.iter().filter(|(k, id)| *k == kind && in_base(*id)).count() as u64;
        let replaced = self.overlay.keys().filter(|(k, id)| *k == kind && in_base(*id)).count() as u64;
        base - deleted - replaced + overlay
    }

    /// The `updated_at` of an edit now: the clock's second, and after every earlier edit.
    fn tick(&mut self) -> i64 {
        self.now = (self.now + 1).max(self.clock.now_micros().div_euclid(1_000_000));
        self.now
    }
}

impl FakeClio {
    /// Starts a fake Clio for a firm of about `total` records on 127.0.0.1, on the system clock.
    pub async fn start(seed: u64, total: u64) -> std::io::Result<FakeClio> {
        Self::start_with_clock(seed, total, Clock::system()).await
    }

    /// Starts a fake Clio whose edits, token and code expiry follow `clock`
    /// (share it with the store to drive both from a test).
    pub async fn start_with_clock(seed: u64, total: u64, clock: Clock) -> std::io::Result<FakeClio> {
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .ok_or_else(|| std::io::Error::other("no local address"))?;
        let delivery = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| std::io::Error::other(format!("the fake Clio cannot build its webhook client: {e}")))?;
        let fake = FakeClio {
            state: Arc::new(Mutex::new(State::new(Firm::new(seed, total), Faults::default(), clock))),
            delivery,
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

    /// Runs `then` once the `n`-th API call (counting from the fake's start)
    /// has been answered, before the next is served: a test edits records or
    /// moves the clock at an exact point of a pass this way.
    pub fn after_call(&self, n: u64, then: impl FnOnce() + Send + 'static) {
        self.with(|s| s.after_calls.push((n, Box::new(then))));
    }

    /// The hooks due once `calls` API calls were answered, taken out.
    fn due_hooks(&self) -> Vec<Box<dyn FnOnce() + Send>> {
        self.with(|s| {
            let calls = s.api_calls;
            let (due, later): (Vec<_>, Vec<_>) = s.after_calls.drain(..).partition(|(n, _)| *n <= calls);
            s.after_calls = later;
            due.into_iter().map(|(_, f)| f).collect()
        })
    }

    /// Edits record `id` of `kind` (a new etag and `updated_at`); false if it does not exist.
    pub fn edit(&self, kind: Kind, id: u64) -> bool {
        let field = match kind {
            Kind::Matter | Kind::Task | Kind::CalendarEntry => "description",
            Kind::Activity => "note",
            Kind::Note => "detail",
            Kind::Bill => "subject",
            Kind::Contact | Kind::User => "name",
        };
        self.edit_with(kind, id, |v, version| {
            let old = v.get(field).and_then(Value::as_str).unwrap_or("").to_string();
            v[field] = json!(format!("{old} (revised {version})"));
        })
    }

    /// Changes record `id` of `kind` with `change` (given the record and its new
    /// version): a new etag and `updated_at` now; false if it does not exist.
    pub fn edit_with(&self, kind: Kind, id: u64, change: impl FnOnce(&mut Value, u64)) -> bool {
        self.with(|s| {
            let now = s.tick();
            self.change(s, kind, id, now, change)
        })
    }

    /// An edit stamped `updated_at` (unix seconds) in the past, as an import or
    /// a skewed clock does: `updated_since` listings after that instant miss it.
    pub fn edit_backdated(&self, kind: Kind, id: u64, updated_at: i64) -> bool {
        self.with(|s| {
            self.change(s, kind, id, updated_at, |v, version| {
                v["etag"] = json!(format!("\"{id:x}b{version}\""));
            })
        })
    }

    fn change(&self, s: &mut State, kind: Kind, id: u64, at: i64, change: impl FnOnce(&mut Value, u64)) -> bool {
        let Some((mut v, _)) = s.get(kind, id) else { return false };
        let version = s.versions.entry((kind, id)).or_insert(0);
        *version += 1;
        let version = *version;
        v["etag"] = json!(format!("\"{id:x}v{version}\""));
        v["updated_at"] = json!(generator::datetime(at));
        change(&mut v, version);
        s.overlay.insert((kind, id), (v.clone(), at));
        self.notify(s, kind, "updated", &v);
        true
    }

    /// Brings back a deleted record as it was (Clio's restore from the trash):
    /// its `updated_at` stays behind every watermark. False if it was not deleted.
    pub fn restore(&self, kind: Kind, id: u64) -> bool {
        self.with(|s| s.deleted.remove(&(kind, id)))
    }

    /// Kills every page token issued so far (as Clio's expire): a saved `next` link then answers
    /// [`Faults::dead_token_status`].
    pub fn expire_page_tokens(&self) {
        self.with(|s| s.token_epoch += 1);
    }

    /// Suspends the subscriptions to `kind` (as Clio does after failed deliveries).
    pub fn suspend_webhooks(&self, kind: Kind) {
        self.with(|s| s.hooks.values_mut().filter(|h| h.kind == kind).for_each(|h| h.suspended = true));
    }

    /// Lets the subscriptions to `kind` run out now: Clio forgets them (GET and PATCH answer 404).
    pub fn expire_webhooks(&self, kind: Kind) {
        self.with(|s| {
            let past = Timestamp::from_micros(s.clock.now_micros() - 1).to_rfc3339();
            s.hooks.values_mut().filter(|h| h.kind == kind).for_each(|h| h.expires_at = past.clone());
        })
    }

    /// The `status` of each subscription to `kind`, in id order.
    pub fn webhook_statuses(&self, kind: Kind) -> Vec<&'static str> {
        self.with(|s| {
            s.drop_expired_hooks();
            s.hooks.values().filter(|h| h.kind == kind).map(Hook::status).collect()
        })
    }

    /// API requests that arrived so far, and how many of them were answered.
    pub fn requests(&self) -> (u64, u64) {
        self.with(|s| (s.received, s.answered))
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
                let (page, more) = s.page(kind, None, after, 10_000, &Select::default());
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
    /// An expired subscription delivers nothing; a receiver answering 410 disables it.
    fn notify(&self, s: &State, kind: Kind, event: &str, record: &Value) {
        let now = s.clock.now_micros();
        for (id, hook) in s.hooks.iter().filter(|(_, h)| h.kind == kind && h.status() == "enabled" && !h.expired(now)) {
            let data = if event == "deleted" { record.clone() } else { project(record, &hook.fields) };
            let body = json!({"data": data, "meta": {"event": event, "webhook_id": id}}).to_string();
            let signature = sign(&hook.secret, body.as_bytes());
            let (url, fake, id) = (hook.url.clone(), self.clone(), *id);
            tokio::spawn(async move {
                let sent = fake
                    .delivery
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-hook-signature", signature)
                    .body(body)
                    .send()
                    .await;
                // Clio's success: any 2xx or 3xx, or 410 (which also disables the subscription).
                let status = sent.as_ref().map(reqwest::Response::status);
                fake.with(|s| match status {
                    Ok(reqwest::StatusCode::GONE) => {
                        s.hooks.remove(&id);
                    }
                    Ok(st) if st.is_success() || st.is_redirection() => {
                        if let Some(h) = s.hooks.get_mut(&id) {
                            h.failures = 0;
                        }
                    }
                    _ => {
                        if let Some(h) = s.hooks.get_mut(&id) {
                            h.failures += 1;
                            h.suspended |= h.failures >= SUSPEND_AFTER;
                        }
                    }
                });
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

    /// The fake's clock.
    pub fn clock(&self) -> Clock {
        self.with(|s| s.clock.clone())
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
        self.with(|s| {
            let now = s.clock.now_micros();
            s.codes.insert(code.clone(), (redirect_uri.to_string(), now))
        });
        code
    }
}

/// How long an authorization code can be redeemed (CLIO.md 2).
const CODE_TTL_MICROS: i64 = 10 * 60 * 1_000_000;

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

fn is_form(req: &Request) -> bool {
    req.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"))
}

#[handler]
async fn issue_token(req: &Request, body: Body) -> Response {
    let Some(fake) = req.data::<FakeClio>() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    if !is_form(req) {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_request", "error_description": "send the form as application/x-www-form-urlencoded"}),
        );
    }
    let text = body.into_string().await.unwrap_or_default();
    let form: HashMap<String, String> = serde_urlencoded_pairs(&text);
    if form.get("client_id") != Some(&fake.client_id) || form.get("client_secret") != Some(&fake.client_secret) {
        return json_response(StatusCode::UNAUTHORIZED, &json!({"error": "invalid_client"}));
    }
    fake.with(|s| {
        let now = s.clock.now_micros();
        let ok = match form.get("grant_type").map(String::as_str) {
            // Single use: the code is gone whether or not the rest matches.
            Some("authorization_code") => form
                .get("code")
                .and_then(|c| s.codes.remove(c))
                .is_some_and(|(uri, at)| Some(&uri) == form.get("redirect_uri") && now - at < CODE_TTL_MICROS),
            Some("refresh_token") => form.get("refresh_token").is_some_and(|r| s.refresh.contains(r)),
            _ => false,
        };
        if !ok {
            return json_response(StatusCode::BAD_REQUEST, &json!({"error": "invalid_grant"}));
        }
        let access = token();
        let ttl = s.faults.token_ttl;
        s.access.insert(access.clone(), now.saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX)));
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

/// `POST /oauth/deauthorize`: a live Bearer token, and the same token as `token` in the form.
#[handler]
async fn deauthorize(req: &Request, body: Body) -> Response {
    let Some(fake) = req.data::<FakeClio>() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    let form: HashMap<String, String> = serde_urlencoded_pairs(&body.into_string().await.unwrap_or_default());
    let Some(token) = bearer(req) else { return invalid_token() };
    fake.with(|s| {
        if !s.live(&token) || form.get("token") != Some(&token) {
            return invalid_token();
        }
        s.access.remove(&token);
        // Deauthorizing the app revokes its grant: refresh tokens stop working too.
        s.refresh.clear();
        StatusCode::OK.into_response()
    })
}

fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::Mac as _;
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else { return String::new() };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// `POST /webhooks` (subscribe, then handshake), `PATCH /webhooks/{id}`, `DELETE /webhooks/{id}`.
#[handler]
async fn api_write(req: &Request, body: Body) -> Response {
    let Some(fake) = req.data::<FakeClio>().cloned() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    fake.with(|s| s.received += 1);
    let resp = write(&fake, req, body).await;
    fake.with(|s| s.answered += 1);
    resp
}

async fn write(fake: &FakeClio, req: &Request, body: Body) -> Response {
    let fake = fake.clone();
    let path = req.uri().path().trim_start_matches("/api/v4/").trim_end_matches(".json").to_string();
    let body: Value = serde_json::from_str(&body.into_string().await.unwrap_or_default()).unwrap_or(Value::Null);
    let method = req.method().clone();
    let (authorized, now) = fake.with(|s| {
        s.api_calls += 1;
        (bearer(req).is_some_and(|t| s.live(&t)), s.clock.now_micros())
    });
    if !authorized {
        return invalid_token();
    }
    if let Some(refused) = version_refused(req) {
        return refused;
    }
    match (method.as_str(), path.split_once('/')) {
        ("POST", None) if path == "webhooks" => {
            let (url, model, kind, fields, expires_at) = match subscription(&body["data"], now) {
                Ok(s) => s,
                Err(refusal) => return refusal.into(),
            };
            if fake.with(|s| s.faults.refuse_webhooks.contains(&kind)) {
                return clio_error(StatusCode::FORBIDDEN, "ForbiddenError", "the app lacks this model's permission");
            }
            let hook = Hook {
                url: url.clone(),
                kind,
                fields,
                secret: token(),
                active: false,
                suspended: false,
                failures: 0,
                expires_at,
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
                let sent = handshake_fake
                    .delivery
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
            let expires_at = match body.pointer("/data/expires_at").map(|e| expiry(Some(e), now)).transpose() {
                Ok(e) => e,
                Err(refusal) => return refusal.into(),
            };
            fake.with(|s| {
                s.drop_expired_hooks();
                match id.parse().ok().and_then(|id: u64| s.hooks.get_mut(&id)) {
                    Some(h) => {
                        if let Some(e) = expires_at {
                            h.expires_at = e;
                        }
                        json_response(
                            StatusCode::OK,
                            &json!({"data": {"id": id, "status": h.status(), "expires_at": h.expires_at}}),
                        )
                    }
                    None => clio_error(StatusCode::NOT_FOUND, "RecordNotFound", "no such webhook"),
                }
            })
        }
        ("DELETE", Some(("webhooks", id))) => fake.with(|s| {
            s.drop_expired_hooks();
            match id.parse().ok().and_then(|id: u64| s.hooks.remove(&id)) {
                Some(_) => StatusCode::NO_CONTENT.into_response(),
                None => clio_error(StatusCode::NOT_FOUND, "RecordNotFound", "no such webhook"),
            }
        }),
        _ => clio_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the fake Clio is read-only apart from webhooks",
        ),
    }
}

/// The webhook models Clio has (CLIO.md 7), by name and numeric id; the fake serves those with a [`Kind`].
const WEBHOOK_MODELS: [(&str, u64, Option<Kind>); 10] = [
    ("matter", 1, Some(Kind::Matter)),
    ("activity", 2, Some(Kind::Activity)),
    ("bill", 3, Some(Kind::Bill)),
    ("calendar_entry", 4, Some(Kind::CalendarEntry)),
    ("communication", 5, None),
    ("contact", 6, Some(Kind::Contact)),
    ("task", 7, Some(Kind::Task)),
    ("document", 8, None),
    ("folder", 9, None),
    ("clio_payments_payment", 10, None),
];
const DAY_MICROS: i64 = 86_400 * 1_000_000;

fn invalid(message: &str) -> Refusal {
    Refusal { status: StatusCode::UNPROCESSABLE_ENTITY, kind: "ValidationError", message: message.into() }
}

/// A webhook's `expires_at`: RFC 3339, in the future, at most 31 days ahead; 3 days when absent.
fn expiry(given: Option<&Value>, now: i64) -> Result<String, Refusal> {
    let at = match given {
        None | Some(Value::Null) => Timestamp::from_micros(now + 3 * DAY_MICROS),
        Some(v) => v
            .as_str()
            .and_then(|t| Timestamp::parse(t).ok())
            .ok_or_else(|| invalid("expires_at is not an ISO-8601 date-time"))?,
    };
    if at.micros() <= now || at.micros() > now + 31 * DAY_MICROS {
        return Err(invalid("expires_at must be in the future and at most 31 days ahead"));
    }
    Ok(at.to_rfc3339())
}

/// The parts of a `POST /webhooks` body, checked as Clio checks them.
#[allow(clippy::type_complexity)] // the parts, named at the one caller
fn subscription(d: &Value, now: i64) -> Result<(String, Value, Kind, Vec<Field>, String), Refusal> {
    let url = d["url"].as_str().ok_or_else(|| invalid("url is required"))?;
    if !url.starts_with("https://") {
        return Err(invalid("url must use https"));
    }
    let model = &d["model"];
    let known = WEBHOOK_MODELS
        .iter()
        .find(|(name, id, _)| model.as_str() == Some(name) || model.as_u64() == Some(*id))
        .ok_or_else(|| invalid("model is not a webhook model"))?;
    let kind = known.2.ok_or_else(|| invalid("the fake Clio has no records of this model"))?;
    let spec = d["fields"].as_str().ok_or_else(|| invalid("fields is required"))?;
    if spec.len() > 1000 {
        return Err(invalid("fields is longer than 1000 characters"));
    }
    let fields = parse_fields(spec).map_err(|p| bad("InvalidFields", &p))?;
    let allowed = |e: &str| {
        matches!(e, "created" | "updated" | "deleted")
            || (kind == Kind::Matter && matches!(e, "matter_opened" | "matter_pended" | "matter_closed"))
    };
    let events = d["events"].as_array().filter(|e| !e.is_empty()).ok_or_else(|| invalid("events is required"))?;
    if !events.iter().all(|e| e.as_str().is_some_and(allowed)) {
        return Err(invalid("events has an event this model does not have"));
    }
    Ok((url.to_string(), json!(known.0), kind, fields, expiry(d.get("expires_at"), now)?))
}

/// 410 for an `X-API-VERSION` Clio does not serve (anything but 4.0.0 to 4.0.13); absent means the default.
fn version_refused(req: &Request) -> Option<Response> {
    let asked = req.headers().get("x-api-version")?;
    let minor = asked.to_str().ok().and_then(|v| v.strip_prefix("4.0.")).and_then(|m| m.parse::<u32>().ok());
    if minor.is_some_and(|m| m <= 13) {
        return None;
    }
    Some(clio_error(StatusCode::GONE, "ApiVersionError", "this X-API-VERSION is invalid or no longer supported"))
}

fn invalid_token() -> Response {
    json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"error": "invalid_token", "error_description": "The access token provided is expired, revoked, malformed or invalid for other reasons."}),
    )
}

/// Rate-limit headers and the 429, per access token.
fn rate_limit(s: &mut State, token: &str) -> (Option<Response>, Vec<(&'static str, String)>) {
    // Clio sends the headers on every answer; without a limit set, the fake's is too large to meet.
    let limit = s.faults.rate_limit_per_minute.unwrap_or(u32::MAX);
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
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes()).into_owned().collect();
    let delay = fake.with(|s| {
        s.received += 1;
        s.faults.delay
    });
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let if_none_match = req.headers().get("if-none-match").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (mut resp, headers) = fake.with(|s| {
        s.api_calls += 1;
        let Some(token) = bearer(req).filter(|t| s.live(t)) else { return (invalid_token(), vec![]) };
        if let Some(refused) = version_refused(req) {
            return (refused, vec![]);
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
        (serve(s, &fake.base_url(), &path, (&q, &pairs), if_none_match.as_deref()), headers)
    });
    for run in fake.due_hooks() {
        run();
    }
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    if resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED {
        resp.headers_mut().insert("x-api-version", HeaderValue::from_static(API_VERSION));
    }
    fake.with(|s| s.answered += 1);
    resp
}

fn bad(kind: &'static str, message: &str) -> Refusal {
    Refusal { status: StatusCode::BAD_REQUEST, kind, message: message.into() }
}

/// The associations (nested resources) of each kind, from CLIO.md 4: the
/// fields that take `{...}`, valid even where the generated firm has no value.
fn associations(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Matter => &[
            "client",
            "responsible_attorney",
            "originating_attorney",
            "responsible_staff",
            "user",
            "practice_area",
            "matter_stage",
            "group",
            "folder",
            "custom_field_values",
            "relationships",
            "account_balances",
            "statute_of_limitations",
            "custom_rate",
            "matter_budget",
            "currency",
        ],
        Kind::Contact => &[
            "addresses",
            "email_addresses",
            "phone_numbers",
            "web_sites",
            "instant_messengers",
            "company",
            "custom_field_values",
            "primary_address",
            "related_contacts",
            "avatar",
            "currency",
        ],
        Kind::Activity => &[
            "matter",
            "user",
            "bill",
            "activity_description",
            "expense_category",
            "vendor",
            "task",
            "calendar_entry",
            "communication",
            "matter_note",
            "contact_note",
            "timer",
            "utbms_expense",
            "currency",
        ],
        Kind::Bill => &[
            "client",
            "matters",
            "user",
            "group",
            "bill_theme",
            "original_bill",
            "destination_account",
            "balances",
            "matter_totals",
            "currency",
            "discount",
            "interest",
            "client_addresses",
        ],
        Kind::User => &["account", "groups", "contact", "job_title", "avatar"],
        Kind::CalendarEntry => &["matter", "calendar_owner", "attendees", "reminders", "external_properties"],
        Kind::Task => &["matter", "assignee", "assigner", "task_type"],
        Kind::Note => &["matter", "contact", "author"],
    }
}

/// `fields`, checked against what `kind` has: unknown names, and braces on a
/// field that is not an association, are 400 `InvalidFields`.
fn requested_fields(s: &State, kind: Kind, spec: Option<&String>) -> Result<Vec<Field>, Refusal> {
    let Some(spec) = spec else { return Ok(vec![("id".into(), None), ("etag".into(), None)]) };
    let fields = parse_fields(spec).map_err(|p| bad("InvalidFields", &p))?;
    let sample = s.firm.record(kind, 0);
    let nests = |name: &str| associations(kind).contains(&name);
    for (name, nested) in &fields {
        if sample.get(name).is_none() && !nests(name) {
            return Err(bad("InvalidFields", &format!("{name} is not a valid field")));
        }
        if nested.is_some() && !nests(name) {
            return Err(bad("InvalidFields", &format!("{name} is not an association; it takes no nested fields")));
        }
    }
    Ok(fields)
}

/// A `*_since` parameter: an RFC 3339 date-time, as micros.
fn since_param(q: &HashMap<String, String>, name: &str) -> Result<Option<i64>, Refusal> {
    q.get(name)
        .map(|t| Timestamp::parse(t).map(Timestamp::micros).map_err(|e| bad("ArgumentError", &format!("{name} {e}"))))
        .transpose()
}

/// The most records offset paging reaches (CLIO.md 5).
const OFFSET_CAP: usize = 10_000;

/// One GET under `/api/v4`: `q` has each parameter's last value, `pairs` every one in order (`ids[]` repeats).
fn serve(
    s: &mut State,
    base: &str,
    path: &str,
    (q, pairs): (&HashMap<String, String>, &[(String, String)]),
    if_none_match: Option<&str>,
) -> Response {
    let (collection, id) = match path.split_once('/') {
        Some((c, id)) => (c, Some(id)),
        None => (path, None),
    };
    if collection == "users" && id == Some("who_am_i") {
        let fields = match requested_fields(s, Kind::User, q.get("fields")) {
            Ok(f) => f,
            Err(refusal) => return refusal.into(),
        };
        let (v, _) = s.get(Kind::User, s.firm.id(Kind::User, 0)).unwrap_or_default();
        let mut v = project(&v, &fields);
        v["account"] = json!({"id": 1, "name": "Smith & Jones LLP"});
        return json_response(StatusCode::OK, &json!({"data": v}));
    }
    if collection == "webhooks" {
        return webhooks(s, id, q.get("fields"));
    }
    let Some(kind) = Kind::from_collection(collection) else {
        return clio_error(StatusCode::NOT_FOUND, "RecordNotFound", "no such resource");
    };
    let fields = match requested_fields(s, kind, q.get("fields")) {
        Ok(f) => f,
        Err(refusal) => return refusal.into(),
    };
    if let Some(id) = id {
        return single(s, kind, id, &fields, if_none_match);
    }
    let (since, created_since) = match (since_param(q, "updated_since"), since_param(q, "created_since")) {
        (Ok(u), Ok(c)) => (u.map(|m| m.div_euclid(1_000_000)), c),
        (Err(refusal), _) | (_, Err(refusal)) => return refusal.into(),
    };
    let note_type = q.get("type").cloned();
    if kind == Kind::Note && !matches!(note_type.as_deref(), Some("Matter" | "Contact")) {
        return bad("ArgumentError", "type must be Matter or Contact").into();
    }
    let ids = match id_filter(pairs) {
        Ok(ids) => ids,
        Err(refusal) => return refusal.into(),
    };
    let select = Select { note_type: note_type.filter(|_| kind == Kind::Note), created_since, ids };
    let limit = match q.get("limit").map(|l| l.parse::<u32>()) {
        None => kind.page_limit(),
        Some(Ok(l)) if (1..=kind.page_limit()).contains(&l) => l,
        Some(_) => return bad("ArgumentError", "limit is out of range").into(),
    } as usize;
    let offset = match q.get("offset").map(|o| o.parse::<usize>()) {
        None => None,
        Some(Ok(o)) => Some(o),
        Some(Err(_)) => return bad("ArgumentError", "offset is not a number").into(),
    };
    match (q.get("order").map(String::as_str), offset) {
        (None | Some("id(asc)"), _) => {}
        (Some(_), None) => return bad("ArgumentError", "an order other than id(asc) needs offset paging").into(),
        (Some(_), Some(_)) => return bad("ArgumentError", "the fake Clio sorts by id(asc) only").into(),
    }
    let after = match (q.get("page_token"), offset) {
        (Some(_), Some(_)) => return bad("ArgumentError", "page_token and offset do not mix").into(),
        (Some(t), None) => match decode_cursor(t) {
            Some((after, epoch, issued)) if s.token_alive(epoch, issued) => Some(after),
            Some(_) => {
                let status = StatusCode::from_u16(s.faults.dead_token_status).unwrap_or(StatusCode::BAD_REQUEST);
                return clio_error(status, "InvalidPageToken", "page_token has expired; start the listing again");
            }
            None => return bad("ArgumentError", "invalid page_token").into(),
        },
        (None, Some(o)) if o + limit > OFFSET_CAP => {
            return clio_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "ArgumentError",
                "offset paging reaches 10,000 records at most; use cursor paging",
            );
        }
        (None, Some(0)) | (None, None) => None,
        (None, Some(o)) => {
            let (before, _) = s.page(kind, since, None, o, &select);
            match (before.len() == o).then(|| before.last().and_then(id_of)).flatten() {
                Some(last) => Some(last),
                None => return list_response(s, kind, since, &select, vec![], serde_json::Map::new()),
            }
        }
    };
    if s.faults.empty_lists {
        return json_response(StatusCode::OK, &json!({"data": [], "meta": {"paging": {}, "records": 0}}));
    }
    let (page, more) = s.page(kind, since, after, limit, &select);
    let mut paging = serde_json::Map::new();
    if more && let Some(last) = page.last().and_then(id_of) {
        let Ok(mut next) = url::Url::parse(&format!("{base}/api/v4/{path}.json")) else {
            return clio_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", "bad base URL");
        };
        {
            let mut out = next.query_pairs_mut();
            for (k, v) in pairs.iter().filter(|(k, _)| !matches!(k.as_str(), "page_token" | "offset")) {
                out.append_pair(k, v);
            }
            match offset {
                Some(o) => out.append_pair("offset", &(o + limit).to_string()),
                None => out.append_pair("page_token", &encode_cursor(last, s.token_epoch, s.clock.now_micros())),
            };
        }
        paging.insert("next".into(), json!(next.to_string()));
    }
    let data = page.iter().map(|v| project(v, &fields)).collect();
    list_response(s, kind, since, &select, data, paging)
}

/// `GET /webhooks` and `/webhooks/{id}`: subscriptions as Clio shows them (expired ones are gone).
fn webhooks(s: &mut State, id: Option<&str>, fields: Option<&String>) -> Response {
    s.drop_expired_hooks();
    let fields = match fields.map(|f| parse_fields(f)).transpose() {
        Ok(f) => f.unwrap_or_else(|| vec![("id".into(), None), ("etag".into(), None)]),
        Err(p) => return bad("InvalidFields", &p).into(),
    };
    const KNOWN: [&str; 8] = ["id", "etag", "url", "model", "status", "events", "expires_at", "fields"];
    if let Some((name, _)) = fields.iter().find(|(name, nested)| !KNOWN.contains(&name.as_str()) || nested.is_some()) {
        return bad("InvalidFields", &format!("{name} is not a valid field")).into();
    }
    let show = |id: u64, h: &Hook| {
        let model = WEBHOOK_MODELS.iter().find(|m| m.2 == Some(h.kind)).map_or("", |m| m.0);
        let full = json!({
            "id": id, "etag": format!("\"wh{id}-{}\"", h.status()), "url": h.url, "model": model,
            "status": h.status(), "events": ["created", "updated", "deleted"], "expires_at": h.expires_at,
            "fields": h.fields.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(","),
        });
        project(&full, &fields)
    };
    match id {
        Some(id) => match id.parse().ok().and_then(|id: u64| s.hooks.get(&id).map(|h| show(id, h))) {
            Some(v) => json_response(StatusCode::OK, &json!({"data": v})),
            None => clio_error(StatusCode::NOT_FOUND, "RecordNotFound", "no such webhook"),
        },
        None => {
            let data: Vec<Value> = s.hooks.iter().map(|(id, h)| show(*id, h)).collect();
            let records = data.len();
            json_response(StatusCode::OK, &json!({"data": data, "meta": {"paging": {}, "records": records}}))
        }
    }
}

fn id_of(v: &Value) -> Option<u64> {
    v["id"].to_string().trim_matches('"').parse().ok()
}

/// `GET /<collection>/<id>`: the record with `ETag` and `Last-Modified`; 304 if `If-None-Match` names its etag.
fn single(s: &State, kind: Kind, id: &str, fields: &[Field], if_none_match: Option<&str>) -> Response {
    let Some((v, updated)) = id.parse().ok().and_then(|id| s.get(kind, id)) else {
        return clio_error(StatusCode::NOT_FOUND, "RecordNotFound", "Record not found");
    };
    let etag = v["etag"].as_str().unwrap_or_default().to_string();
    let mut resp = if if_none_match == Some(etag.as_str()) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        json_response(StatusCode::OK, &json!({"data": project(&v, fields)}))
    };
    let modified = time::OffsetDateTime::from_unix_timestamp(updated).ok().and_then(|t| {
        t.format(time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ))
        .ok()
    });
    for (name, value) in [("etag", Some(etag)), ("last-modified", modified)] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

/// A list answer: the page (damaged if a fault says so) and `meta`.
fn list_response(
    s: &mut State,
    kind: Kind,
    since: Option<i64>,
    select: &Select,
    mut data: Vec<Value>,
    paging: serde_json::Map<String, Value>,
) -> Response {
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
    let records = s.count(kind, since, select);
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
        let mut s = State::new(Firm::new(1, 2_000), Faults::default(), Clock::system());
        let kind = Kind::Matter;
        let n = s.firm.count(kind);
        let ids = |page: &[Value]| page.iter().map(|v| v["id"].as_u64().unwrap()).collect::<Vec<_>>();
        let all = |s: &State, since| {
            let (mut out, mut after) = (vec![], None);
            loop {
                let (page, more) = s.page(kind, since, after, 7, &Select::default());
                out.extend(ids(&page));
                after = out.last().copied();
                if !more {
                    return out;
                }
            }
        };
        assert_eq!(all(&s, None).len() as u64, n);
        assert_eq!(s.count(kind, None, &Select::default()), n);
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
        assert_eq!(s.count(kind, Some(since), &Select::default()), 1);
    }
}
