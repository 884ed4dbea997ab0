//! Outbound webhooks: a firm registers HTTPS endpoints for chosen record
//! kinds and events; every change the feed shows ([`crate::changes`], read
//! for the firm, so walls do not apply: an endpoint acts for the firm like a
//! service token) is queued for each matching endpoint and POSTed to it,
//! signed, retried with backoff, in order per record ([`worker`]).
//!
//! Everything lives in the tenant table `outbound_webhooks`:
//! `e/<endpoint>` the endpoint, `p/<endpoint>` its feed position,
//! `q/<endpoint>/<seq>` a queued delivery, `d/<endpoint>/<seq>` a finished
//! one (delivered or failed; [`HISTORY`] kept per endpoint). Each endpoint
//! has a secret (`whsec_…`, shown once) sealed in the org's secrets.
//!
//! Signature: header `Docket-Signature: t=<unix seconds>,v1=<hex>` where
//! `hex = HMAC-SHA256(secret, "<t>.<body>")`; receivers recompute it and
//! refuse a `t` more than five minutes away (docs/integrators.md).
pub mod worker;

use crate::changes::{self, Position};
use crate::records::Kind;
use crate::secrets::{Keyring, Sealer};
use crate::store::{OUTBOUND, OrgScope, Reader, SECRETS, Store, StoreError, Tx};
use crate::timestamp::Timestamp;
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Endpoints one firm may register.
pub const MAX_ENDPOINTS: usize = 20;
/// Queued deliveries per endpoint; beyond it queueing waits (the feed window
/// keeps the changes meanwhile).
pub const MAX_QUEUED: usize = 10_000;
/// Finished deliveries kept per endpoint (oldest removed first).
pub const HISTORY: usize = 1_000;
/// Attempts before a delivery is given up as failed.
pub const MAX_ATTEMPTS: u32 = 8;
/// The longest wait between two attempts.
pub const MAX_BACKOFF_SECONDS: u64 = 6 * 3600;
/// How far a signature's timestamp may be from the receiver's clock.
pub const REPLAY_WINDOW_SECONDS: i64 = 300;
const URL_MAX: usize = 2048;
/// Journal entries an endpoint's position may lag behind without a change
/// for it before the position is saved anyway.
const REWRITE_AFTER: u64 = 10_000;
const DESCRIPTION_MAX: usize = 200;

/// Which changes an endpoint wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A record was created or changed.
    Upsert,
    /// A record was deleted.
    Delete,
}

impl Event {
    pub const ALL: [Event; 2] = [Event::Upsert, Event::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Upsert => "upsert",
            Event::Delete => "delete",
        }
    }
}

/// A registered endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Public id, e.g. `whk_1a2b3c4d5e6f`.
    pub id: String,
    pub url: String,
    /// Kinds delivered (empty: all).
    pub kinds: Vec<Kind>,
    /// Events delivered (empty: all).
    pub events: Vec<Event>,
    pub description: String,
    pub enabled: bool,
    pub created_at: i64,
    pub created_by: String,
    pub updated_at: i64,
}

/// Where an endpoint's queueing stands in the feed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub after: u64,
    pub skip: u64,
    /// When queueing fell behind the feed's window and skipped to its head
    /// (the changes between were not delivered: resynchronise from the feed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed_at: Option<i64>,
}

impl Progress {
    fn position(&self) -> Position {
        Position { after: self.after, skip: self.skip }
    }
}

/// A delivery's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for its first or next attempt.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Every attempt failed.
    Failed,
}

/// One attempt to deliver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: i64,
    /// The HTTP status the endpoint answered, if it answered.
    pub status: Option<u16>,
    /// Why it failed (no answer, refused address, non-2xx), if it failed.
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// One change to deliver to one endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Public id: `dlv_<seq>_<endpoint suffix>`, the same in the payload and header.
    pub id: String,
    pub endpoint: String,
    pub seq: u64,
    pub kind: Kind,
    pub record_id: String,
    pub event: Event,
    pub state: State,
    pub created_at: i64,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<i64>,
    pub attempts: Vec<Attempt>,
    /// The JSON body every attempt sends.
    pub payload: serde_json::Value,
}

/// Settings of a new or changed endpoint.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub url: Option<String>,
    pub kinds: Option<Vec<Kind>>,
    pub events: Option<Vec<Event>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

fn endpoint_key(id: &str) -> Vec<u8> {
    format!("e/{id}").into_bytes()
}

fn progress_key(id: &str) -> Vec<u8> {
    format!("p/{id}").into_bytes()
}

fn queue_prefix(id: &str) -> Vec<u8> {
    format!("q/{id}/").into_bytes()
}

fn history_prefix(id: &str) -> Vec<u8> {
    format!("d/{id}/").into_bytes()
}

fn delivery_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    [prefix, format!("{seq:020}").as_bytes()].concat()
}

fn secret_name(id: &str) -> String {
    format!("outbound-webhook:{id}")
}

fn invalid(field: &'static str, problem: impl Into<String>) -> StoreError {
    StoreError::Invalid { field, problem: problem.into() }
}

/// Checks an endpoint URL: `https`, a host, no credentials or fragment, at
/// most 2048 characters; a literal private address only when `private` allows it.
pub fn check_url(text: &str, private: bool) -> Result<url::Url, StoreError> {
    if text.len() > URL_MAX {
        return Err(invalid("url", format!("is longer than {URL_MAX} characters")));
    }
    let url =
        url::Url::parse(text).map_err(|e| invalid("url", format!("is not a URL ({e}); write https://host/path")))?;
    if url.scheme() != "https" {
        return Err(invalid("url", "must use https (deliveries carry the firm's data)"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("url", "must not carry credentials; verify deliveries by their signature instead"));
    }
    if url.fragment().is_some() {
        return Err(invalid("url", "must not have a #fragment"));
    }
    let Some(host) = url.host() else { return Err(invalid("url", "has no host")) };
    let literal = match host {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    };
    if let Some(ip) = literal
        && !private
        && !is_public(ip)
    {
        return Err(invalid(
            "url",
            format!(
                "names {ip}, a private, loopback or link-local address; use a public address (an operator may allow private networks with `webhooks.allow_private_networks`)"
            ),
        ));
    }
    Ok(url)
}

/// Whether `ip` is a public unicast address (not loopback, private,
/// link-local, shared, documentation, multicast or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80
                    || first == 0x2001 && v6.segments()[1] == 0x0db8)
            }
        },
    }
}

fn check_description(text: &str) -> Result<String, StoreError> {
    let text = text.trim();
    if text.chars().count() > DESCRIPTION_MAX || text.chars().any(char::is_control) {
        return Err(invalid(
            "description",
            format!("must be at most {DESCRIPTION_MAX} characters without control characters"),
        ));
    }
    Ok(text.to_string())
}

fn sorted<T: Ord>(mut list: Vec<T>) -> Vec<T> {
    list.sort();
    list.dedup();
    list
}

/// A new secret: `whsec_` and 32 random bytes, base64url.
fn new_secret() -> String {
    use base64::Engine as _;
    format!("whsec_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()))
}

/// Every endpoint of the firm, oldest first.
pub fn list(r: &impl Reader, scope: &OrgScope) -> Result<Vec<Endpoint>, StoreError> {
    let mut all: Vec<Endpoint> = r.scan_json(scope, &OUTBOUND, b"e/")?;
    all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(all)
}

/// One endpoint.
pub fn get(r: &impl Reader, scope: &OrgScope, id: &str) -> Result<Option<Endpoint>, StoreError> {
    r.get_json(scope, &OUTBOUND, &endpoint_key(id))
}

fn found(r: &impl Reader, scope: &OrgScope, id: &str) -> Result<Endpoint, StoreError> {
    get(r, scope, id)?.ok_or_else(|| StoreError::NotFound { what: format!("webhook endpoint `{id}`") })
}

/// An endpoint's progress in the feed.
pub fn progress(r: &impl Reader, scope: &OrgScope, id: &str) -> Result<Progress, StoreError> {
    Ok(r.get_json(scope, &OUTBOUND, &progress_key(id))?.unwrap_or_default())
}

/// Registers an endpoint that receives the changes committed after `head`
/// (the journal head read before this transaction began); returns it with
/// its secret (shown this once).
pub fn create(
    w: &mut Tx,
    scope: &OrgScope,
    keys: &impl Sealer,
    settings: &Settings,
    by: &str,
    private: bool,
    head: u64,
) -> Result<(Endpoint, String), StoreError> {
    let url = settings.url.as_deref().ok_or_else(|| invalid("url", "is required"))?;
    let url = check_url(url, private)?;
    if list(w, scope)?.len() >= MAX_ENDPOINTS {
        return Err(StoreError::Refused {
            problem: format!("the firm already has {MAX_ENDPOINTS} webhook endpoints; delete one first"),
        });
    }
    let now = w.time();
    let endpoint = Endpoint {
        id: crate::auth::public_id("whk"),
        url: url.to_string(),
        kinds: sorted(settings.kinds.clone().unwrap_or_default()),
        events: sorted(settings.events.clone().unwrap_or_default()),
        description: check_description(settings.description.as_deref().unwrap_or_default())?,
        enabled: settings.enabled.unwrap_or(true),
        created_at: now,
        created_by: by.to_string(),
        updated_at: now,
    };
    let secret = new_secret();
    w.put_secret(scope, keys, &secret_name(&endpoint.id), secret.as_bytes())?;
    w.put_json(scope, &OUTBOUND, &endpoint_key(&endpoint.id), &endpoint)?;
    w.put_json(scope, &OUTBOUND, &progress_key(&endpoint.id), &Progress { after: head, skip: 0, missed_at: None })?;
    Ok((endpoint, secret))
}

/// Changes an endpoint's settings.
pub fn update(
    w: &mut Tx,
    scope: &OrgScope,
    id: &str,
    settings: &Settings,
    private: bool,
) -> Result<Endpoint, StoreError> {
    let mut endpoint = found(w, scope, id)?;
    if let Some(url) = &settings.url {
        endpoint.url = check_url(url, private)?.to_string();
    }
    if let Some(kinds) = &settings.kinds {
        endpoint.kinds = sorted(kinds.clone());
    }
    if let Some(events) = &settings.events {
        endpoint.events = sorted(events.clone());
    }
    if let Some(description) = &settings.description {
        endpoint.description = check_description(description)?;
    }
    if let Some(enabled) = settings.enabled {
        endpoint.enabled = enabled;
    }
    endpoint.updated_at = w.time();
    w.put_json(scope, &OUTBOUND, &endpoint_key(id), &endpoint)?;
    Ok(endpoint)
}

/// Replaces an endpoint's secret; returns the new one (shown this once).
pub fn rotate_secret(w: &mut Tx, scope: &OrgScope, keys: &impl Sealer, id: &str) -> Result<String, StoreError> {
    found(w, scope, id)?;
    let secret = new_secret();
    w.put_secret(scope, keys, &secret_name(id), secret.as_bytes())?;
    Ok(secret)
}

/// Removes an endpoint, its secret, its queue and its history.
pub fn delete(w: &mut Tx, scope: &OrgScope, id: &str) -> Result<Endpoint, StoreError> {
    let endpoint = found(w, scope, id)?;
    for prefix in [queue_prefix(id), history_prefix(id)] {
        loop {
            let rows = w.scan_chunk(scope, &OUTBOUND, &prefix, &prefix, 1024)?;
            if rows.is_empty() {
                break;
            }
            for (key, _) in rows {
                w.delete(scope, &OUTBOUND, &key)?;
            }
        }
    }
    w.delete(scope, &OUTBOUND, &progress_key(id))?;
    w.delete(scope, &SECRETS, secret_name(id).as_bytes())?;
    w.delete(scope, &OUTBOUND, &endpoint_key(id))?;
    Ok(endpoint)
}

/// An endpoint's secret, opened.
pub fn secret(r: &impl Reader, scope: &OrgScope, keys: &Keyring, id: &str) -> Result<Option<String>, StoreError> {
    let Some(sealed) = r.get(scope, &SECRETS, secret_name(id).as_bytes())? else { return Ok(None) };
    let open = keys.open(&sealed)?;
    Ok(Some(String::from_utf8_lossy(open.expose()).into_owned()))
}

/// A page of an endpoint's deliveries, newest first: the queued ones, then
/// the finished ones. `before` is the seq the previous page ended at.
pub fn deliveries(
    r: &impl Reader,
    scope: &OrgScope,
    id: &str,
    before: Option<u64>,
    limit: usize,
) -> Result<(Vec<Delivery>, Option<u64>), StoreError> {
    found(r, scope, id)?;
    let mut all: Vec<Delivery> = r.scan_json(scope, &OUTBOUND, &queue_prefix(id))?;
    all.extend(r.scan_json::<Delivery>(scope, &OUTBOUND, &history_prefix(id))?);
    all.sort_by_key(|d| std::cmp::Reverse(d.seq));
    let mut page: Vec<Delivery> =
        all.into_iter().filter(|d| before.is_none_or(|b| d.seq < b)).take(limit.saturating_add(1)).collect();
    let more = page.len() > limit;
    page.truncate(limit);
    let next = more.then(|| page.last().map(|d| d.seq)).flatten();
    Ok((page, next))
}

/// The signature header value of `body` sent at `unix_seconds`.
pub fn signature(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else { return String::new() };
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={unix_seconds},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// How long to wait after the `attempt`-th failure: 15 s × 4^(n−1) by
/// default (`base` seconds), at most [`MAX_BACKOFF_SECONDS`].
pub fn backoff_seconds(base: u64, attempt: u32) -> u64 {
    let factor = 4u64.saturating_pow(attempt.saturating_sub(1));
    base.max(1).saturating_mul(factor).min(MAX_BACKOFF_SECONDS)
}

/// The body of a delivery.
fn payload(delivery_id: &str, endpoint: &str, change: &changes::Change, event: Event) -> serde_json::Value {
    let record = match &change.op {
        changes::ChangeOp::Upsert(r) => serde_json::json!({
            "id": r.id,
            "kind": r.kind.as_str(),
            "etag": r.etag,
            "updated_at": r.updated_at.map(Timestamp::to_rfc3339),
            "data": r.raw,
        }),
        changes::ChangeOp::Delete => serde_json::Value::Null,
    };
    serde_json::json!({
        "id": delivery_id,
        "endpoint": endpoint,
        "event": event.as_str(),
        "seq": change.seq,
        "committed_at": change.committed_at.to_rfc3339(),
        "kind": change.kind.as_str(),
        "record_id": change.id,
        "record": record,
    })
}

/// How many deliveries are queued for an endpoint.
fn queued(r: &impl Reader, scope: &OrgScope, id: &str) -> Result<usize, StoreError> {
    Ok(r.scan(scope, &OUTBOUND, &queue_prefix(id))?.len())
}

/// Queues the changes after an endpoint's position (one page), in one
/// transaction with its new position; whether there is more to read now
/// (call again until there is not). A position the feed no longer keeps
/// skips to the head and is noted.
pub fn enqueue(store: &Store, scope: &OrgScope, viewer: &crate::data::Viewer, id: &str) -> Result<bool, StoreError> {
    let (endpoint, at, room) = match store.read(|r| {
        let room = MAX_QUEUED.saturating_sub(queued(r, scope, id)?);
        Ok((get(r, scope, id)?, progress(r, scope, id)?, room))
    })? {
        (Some(e), at, room) if e.enabled && room > 0 => (e, at, room),
        _ => return Ok(false),
    };
    let kinds = endpoint.kinds.iter().copied().collect();
    let page = match changes::read(store, viewer, at.position(), &kinds, room.min(500)) {
        Ok(page) => page,
        Err(changes::FeedError::Behind(why)) => {
            tracing::warn!(endpoint = id, %why, "webhook queueing fell behind the feed's window; skipping to its head");
            let head = store.journal_head()?;
            return store.write(|w| {
                let missed = Progress { after: head, skip: 0, missed_at: Some(w.time()) };
                if get(w, scope, id)?.is_some() && progress(w, scope, id)? == at {
                    w.put_json(scope, &OUTBOUND, &progress_key(id), &missed)?;
                }
                Ok(false)
            });
        }
        Err(changes::FeedError::Store(e)) => return Err(e),
    };
    let wanted = |c: &&changes::Change| {
        let event = event_of(c);
        endpoint.events.is_empty() || endpoint.events.contains(&event)
    };
    let queue: Vec<&changes::Change> = page.changes.iter().filter(wanted).collect();
    // Saving the position is itself a journaled commit: saved only with
    // deliveries, mid-way, or after a long stretch, else each save would be
    // the next thing to read and queueing would never settle.
    let far = page.next.after.saturating_sub(at.after) >= REWRITE_AFTER;
    if page.next == at.position() || (queue.is_empty() && page.caught_up && !far) {
        return Ok(false);
    }
    store.write(|w| {
        // Deleted, or another queueing moved it meanwhile: nothing to do.
        if get(w, scope, id)?.is_none() || progress(w, scope, id)? != at {
            return Ok(false);
        }
        let now = w.time();
        for change in queue.iter().copied() {
            let event = event_of(change);
            let delivery_id = format!("dlv_{}_{}", change.seq, id.trim_start_matches("whk_"));
            let delivery = Delivery {
                payload: payload(&delivery_id, id, change, event),
                id: delivery_id,
                endpoint: id.to_string(),
                seq: change.seq,
                kind: change.kind,
                record_id: change.id.clone(),
                event,
                state: State::Pending,
                created_at: now,
                next_attempt_at: Some(now),
                attempts: vec![],
            };
            w.put_json(scope, &OUTBOUND, &delivery_key(&queue_prefix(id), change.seq), &delivery)?;
        }
        let next = Progress { after: page.next.after, skip: page.next.skip, missed_at: at.missed_at };
        w.put_json(scope, &OUTBOUND, &progress_key(id), &next)?;
        Ok(!page.caught_up)
    })
}

fn event_of(change: &changes::Change) -> Event {
    match change.op {
        changes::ChangeOp::Upsert(_) => Event::Upsert,
        changes::ChangeOp::Delete => Event::Delete,
    }
}

/// The deliveries of an endpoint due at `now`, at most `max`, oldest first,
/// none behind an earlier queued delivery of the same record (per-record order).
pub fn due(r: &impl Reader, scope: &OrgScope, id: &str, now: i64, max: usize) -> Result<Vec<Delivery>, StoreError> {
    let queue: Vec<Delivery> = r.scan_json(scope, &OUTBOUND, &queue_prefix(id))?;
    let mut waiting = std::collections::BTreeSet::new();
    let mut out = vec![];
    for d in queue {
        let first_of_record = waiting.insert((d.kind, d.record_id.clone()));
        if first_of_record && d.next_attempt_at.is_some_and(|t| t <= now) {
            out.push(d);
            if out.len() == max {
                break;
            }
        }
    }
    Ok(out)
}

/// Records an attempt: delivered and failed deliveries move to the history
/// (trimmed to [`HISTORY`]); others are due again after their backoff.
pub fn record_attempt(
    w: &mut Tx,
    scope: &OrgScope,
    delivery: &Delivery,
    attempt: Attempt,
    retry_base: u64,
) -> Result<(), StoreError> {
    let queue_key = delivery_key(&queue_prefix(&delivery.endpoint), delivery.seq);
    let Some(mut d) = w.get_json::<Delivery>(scope, &OUTBOUND, &queue_key)? else { return Ok(()) };
    let ok = attempt.error.is_none();
    let at = attempt.at;
    d.attempts.push(attempt);
    let tries = u32::try_from(d.attempts.len()).unwrap_or(u32::MAX);
    if ok || tries >= MAX_ATTEMPTS {
        d.state = if ok { State::Delivered } else { State::Failed };
        d.next_attempt_at = None;
        w.delete(scope, &OUTBOUND, &queue_key)?;
        let history = history_prefix(&delivery.endpoint);
        w.put_json(scope, &OUTBOUND, &delivery_key(&history, d.seq), &d)?;
        trim_history(w, scope, &history)?;
    } else {
        let wait = i64::try_from(backoff_seconds(retry_base, tries)).unwrap_or(i64::MAX);
        d.next_attempt_at = Some(at.saturating_add(wait.saturating_mul(1_000_000)));
        w.put_json(scope, &OUTBOUND, &queue_key, &d)?;
    }
    Ok(())
}

fn trim_history(w: &mut Tx, scope: &OrgScope, prefix: &[u8]) -> Result<(), StoreError> {
    let rows = w.scan(scope, &OUTBOUND, prefix)?;
    for (key, _) in rows.iter().take(rows.len().saturating_sub(HISTORY)) {
        w.delete(scope, &OUTBOUND, key)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_are_https_without_credentials_or_private_literals() {
        assert!(check_url("https://hooks.example.com/docket?x=1", false).is_ok());
        for (bad, why) in [
            ("http://hooks.example.com/", "https"),
            ("https://user:pw@hooks.example.com/", "credentials"),
            ("https://hooks.example.com/#x", "fragment"),
            ("https://127.0.0.1/", "private"),
            ("https://[::1]/", "private"),
            ("https://10.1.2.3/", "private"),
            ("https://169.254.169.254/latest", "private"),
            ("https://[::ffff:192.168.0.1]/", "private"),
            ("not a url", "not a URL"),
        ] {
            let e = check_url(bad, false).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(check_url("https://127.0.0.1:8443/", true).is_ok(), "allowed by the operator");
        assert!(check_url(&format!("https://a.example/{}", "x".repeat(URL_MAX)), true).is_err());
    }

    #[test]
    fn public_addresses_are_told_from_the_rest() {
        for ip in ["8.8.8.8", "2606:4700::1111", "1.1.1.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["0.0.0.0", "100.64.0.1", "192.168.1.1", "172.16.0.1", "fd00::1", "fe80::1", "::", "224.0.0.1"] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_dot_body() {
        // Reference value computed independently:
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        let sig = signature("whsec_test", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(sig, format!("t=1700000000,v1={}", REFERENCE));
    }
    const REFERENCE: &str = "38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789";

    #[test]
    fn backoff_grows_fourfold_to_a_cap() {
        assert_eq!(
            (1..=8).map(|n| backoff_seconds(15, n)).collect::<Vec<_>>(),
            [15, 60, 240, 960, 3840, 15360, 21600, 21600]
        );
        assert_eq!(backoff_seconds(0, 1), 1, "never zero");
        assert_eq!(backoff_seconds(u64::MAX, u32::MAX), MAX_BACKOFF_SECONDS);
    }
}
