//! The HTTP semantics the API promises integrators, applied at the edge so
//! every operation keeps them alike:
//!
//! - `ETag` on every successful `GET` of the API (a hash of the body), and
//!   `If-None-Match` answered `304 Not Modified`;
//! - `RateLimit-Limit`/`-Remaining`/`-Reset` on every response that counted
//!   against a limit;
//! - `Location` on every `201 Created`;
//! - `Idempotency-Key` on `POST` (but sign-in and sign-out, which create
//!   nothing a retry could duplicate): the first response to a key is
//!   replayed to every retry with the same body; another body is a 422.
//!
//! Idempotency records live in a bounded in-memory map, not the store: they
//! guard a client's retries of one request over minutes, they hold response
//! bodies that may carry secrets (a new token), which must never reach the
//! disk or a backup, and a retry after a restart is rare enough to accept a
//! second creation (docs/integrators.md says so). Keys are kept per credential
//! for [`KEY_TTL`], at most [`KEY_CAPACITY`] at once (the oldest go first).
use crate::api::problem::{ApiError, Code};
use crate::auth::limits::Budget;
use bytes::Bytes;
use poem::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use poem::{Body, IntoResponse as _, Response};
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an idempotency key is remembered.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The most idempotency keys remembered at once (all credentials together).
pub const KEY_CAPACITY: usize = 10_000;
/// The longest idempotency key accepted.
pub const KEY_MAX: usize = 255;
/// Responses larger than this are not kept for replay (none of the API's creations come close).
const BODY_MAX: usize = 256 * 1024;

/// The request header that makes a `POST` safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a response replayed for a repeated idempotency key.
pub const REPLAYED: &str = "idempotent-replayed";

/// The strong validator of a body.
pub fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// Whether `If-None-Match` (a list of validators, or `*`) matches `etag`,
/// by the weak comparison RFC 9110 prescribes for it.
pub fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).any(|list| {
        list.split(',').any(|t| {
            let t = t.trim();
            t == "*" || strip(t) == strip(etag)
        })
    })
}

/// Adds `ETag` to a successful API `GET` and turns it into a 304 when the
/// client already holds it. The body is in memory already (API responses are
/// serialized JSON), so reading it costs no I/O.
pub async fn conditional(request_headers: &HeaderMap, mut resp: Response) -> Response {
    if resp.status() != StatusCode::OK || resp.headers().contains_key(header::ETAG) {
        return resp;
    }
    let Ok(body) = resp.take_body().into_bytes().await else {
        return resp;
    };
    let tag = etag(&body);
    if let Ok(v) = HeaderValue::from_str(&tag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    if !resp.headers().contains_key(header::CACHE_CONTROL) {
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    }
    if none_match(request_headers, &tag) {
        resp.set_status(StatusCode::NOT_MODIFIED);
        resp.headers_mut().remove(header::CONTENT_TYPE);
        resp.headers_mut().remove(header::CONTENT_LENGTH);
        return resp;
    }
    resp.set_body(Body::from(body));
    resp
}

/// The `RateLimit-*` headers of a budget.
pub fn rate_limit_headers(resp: &mut Response, budget: Budget) {
    let reset = budget.reset.as_secs() + u64::from(budget.reset.subsec_nanos() > 0);
    let h = resp.headers_mut();
    h.insert("ratelimit-limit", HeaderValue::from(budget.limit));
    h.insert("ratelimit-remaining", HeaderValue::from(budget.remaining));
    h.insert("ratelimit-reset", HeaderValue::from(reset));
}

/// The `Location` of a resource a `201` created: for a `PUT`, the request's
/// own path; for a `POST`, the collection (`/api/v1/<first segment>`) and the
/// `id` of the body (or of its `record`).
pub fn location(method: &Method, path: &str, body: &[u8]) -> Option<String> {
    if *method == Method::PUT {
        return Some(path.to_string());
    }
    let rest = path.strip_prefix(crate::api::BASE)?;
    let collection = rest.split('/').find(|s| !s.is_empty())?;
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = value.get("id").or_else(|| value.pointer("/record/id"))?.as_str()?;
    let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    Some(format!("{}/{collection}/{id}", crate::api::BASE))
}

/// What the idempotency map knows of a key.
enum Entry {
    /// The first request is still being served.
    InFlight { fingerprint: [u8; 32] },
    /// Its response, ready to replay.
    Done { fingerprint: [u8; 32], response: Stored },
}

#[derive(Clone)]
struct Stored {
    status: StatusCode,
    headers: Vec<(header::HeaderName, HeaderValue)>,
    body: Bytes,
}

type Key = ([u8; 16], String);

/// The remembered idempotency keys (see the module docs).
#[derive(Default)]
pub struct Replays {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Each key's entry, and when the key was first seen.
    entries: HashMap<Key, (Instant, Entry)>,
    /// Keys in the order they were first seen, with when.
    order: VecDeque<(Key, Instant)>,
}

/// What to do with a `POST` that carries an idempotency key.
pub enum Claim {
    /// Serve it, then [`Replays::finish`] with its response.
    Fresh(Ticket),
    /// Answer with this (a replay, or a refusal).
    Answer(Response),
}

/// The right to serve the first request of a key.
pub struct Ticket {
    key: Key,
}

fn fingerprint(method: &Method, path: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    h.update(body);
    h.finalize().into()
}

/// Whether a `POST` to `path` honours `Idempotency-Key`: every API `POST`
/// but those under `/auth/` (signing in or out creates nothing to duplicate,
/// and a replay could not carry the session cookie).
pub fn idempotent(path: &str) -> bool {
    path.strip_prefix(crate::api::BASE).is_some_and(|rest| !rest.starts_with("/auth/"))
}

/// The idempotency key of a request, if it sent one, or a 400 if it is unusable.
pub fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
    let key =
        value.to_str().ok().filter(|k| (1..=KEY_MAX).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()));
    key.map(|k| Some(k.to_string())).ok_or_else(|| {
        ApiError::field(
            Code::BadRequest,
            "Idempotency-Key",
            format!(
                "header `Idempotency-Key` must be 1 to {KEY_MAX} visible ASCII characters without spaces; a UUID is a good key"
            ),
        )
    })
}

impl Replays {
    /// Claims `key` for `credential`'s request, or answers it from memory.
    pub fn claim(
        &self,
        credential: &str,
        key: String,
        method: &Method,
        path: &str,
        body: &[u8],
        now: Instant,
    ) -> Claim {
        let digest = Sha256::digest(credential.as_bytes());
        let mut owner = [0u8; 16];
        owner.copy_from_slice(&digest[..16]);
        let key = (owner, key);
        let print = fingerprint(method, path, body);
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.expire(now);
        match inner.entries.get(&key).map(|e| &e.1) {
            Some(Entry::InFlight { fingerprint } | Entry::Done { fingerprint, .. }) if *fingerprint != print => {
                Claim::Answer(
                    ApiError::field(
                        Code::IdempotencyKeyReused,
                        "Idempotency-Key",
                        "this Idempotency-Key was used with another request (other path or body); use a new key for a new request",
                    )
                    .into_response(),
                )
            }
            Some(Entry::InFlight { .. }) => Claim::Answer(
                ApiError::new(
                    Code::IdempotencyKeyInUse,
                    "the first request with this Idempotency-Key is still being served; retry in a moment to get its response",
                )
                .with_header("retry-after", "1".into())
                .into_response(),
            ),
            Some(Entry::Done { response, .. }) => Claim::Answer(replay(response.clone())),
            None => {
                while inner.entries.len() >= KEY_CAPACITY {
                    inner.pop_oldest();
                }
                inner.entries.insert(key.clone(), (now, Entry::InFlight { fingerprint: print }));
                inner.order.push_back((key.clone(), now));
                Claim::Fresh(Ticket { key })
            }
        }
    }

    /// Keeps the first response of a key for replay, unless it is worth a
    /// retry (a server error, a rate limit): then the key is released.
    pub async fn finish(&self, ticket: Ticket, resp: Response) -> Response {
        let keep = !(resp.status().is_server_error() || resp.status() == StatusCode::TOO_MANY_REQUESTS);
        if !keep {
            self.release(&ticket);
            return resp;
        }
        let (parts, body) = resp.into_parts();
        let body = match body.into_bytes().await {
            Ok(body) if body.len() <= BODY_MAX => body,
            Ok(body) => {
                self.release(&ticket);
                return Response::from_parts(parts, Body::from(body));
            }
            Err(_) => {
                self.release(&ticket);
                return Response::from_parts(parts, Body::empty());
            }
        };
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let stored = Stored {
            status: parts.status,
            headers: parts
                .headers
                .iter()
                .filter(|(n, _)| *n == header::CONTENT_TYPE || *n == header::LOCATION)
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect(),
            body: body.clone(),
        };
        if let Some((since, Entry::InFlight { fingerprint })) = inner.entries.remove(&ticket.key) {
            inner.entries.insert(ticket.key, (since, Entry::Done { fingerprint, response: stored }));
        }
        drop(inner);
        Response::from_parts(parts, Body::from(body))
    }
}

impl Replays {
    /// Forgets a key whose first response is not kept, so a retry runs again.
    fn release(&self, ticket: &Ticket) {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entries.remove(&ticket.key);
    }
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(_, at)| now.duration_since(*at) >= KEY_TTL) {
            self.pop_oldest();
        }
    }

    /// Forgets the oldest key (its entry only if it is the one first seen
    /// then: a released key may have been claimed again since).
    fn pop_oldest(&mut self) {
        let Some((key, at)) = self.order.pop_front() else {
            self.entries.clear();
            return;
        };
        if self.entries.get(&key).is_some_and(|(since, _)| *since == at) {
            self.entries.remove(&key);
        }
    }
}

fn replay(stored: Stored) -> Response {
    let mut resp = Response::builder().status(stored.status).body(stored.body);
    for (name, value) in stored.headers {
        resp.headers_mut().insert(name, value);
    }
    resp.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn if_none_match_lists_weak_tags_and_star() {
        let tag = etag(b"{}");
        assert!(tag.starts_with('"') && tag.ends_with('"') && tag.len() == 34);
        assert!(!none_match(&headers(&[]), &tag));
        assert!(none_match(&headers(&[("if-none-match", "*")]), &tag));
        let list = format!("\"other\", W/{tag}");
        assert!(none_match(
            &[(header::IF_NONE_MATCH, HeaderValue::from_str(&list).unwrap())].into_iter().collect(),
            &tag
        ));
        assert!(!none_match(&headers(&[("if-none-match", "\"other\"")]), &tag));
    }

    #[test]
    fn locations_of_creations() {
        let post = Method::POST;
        assert_eq!(location(&post, "/api/v1/members", br#"{"id":"usr_1"}"#).as_deref(), Some("/api/v1/members/usr_1"));
        assert_eq!(
            location(&post, "/api/v1/tokens/service", br#"{"token":"x","record":{"id":"tok_1"}}"#).as_deref(),
            Some("/api/v1/tokens/tok_1")
        );
        assert_eq!(
            location(&Method::PUT, "/api/v1/roles/paralegal", b"{}").as_deref(),
            Some("/api/v1/roles/paralegal")
        );
        assert_eq!(location(&post, "/api/v1/walls", b"not json"), None);
    }

    #[test]
    fn keys_must_be_visible_ascii() {
        assert_eq!(key_of(&headers(&[])).unwrap(), None);
        assert_eq!(key_of(&headers(&[("idempotency-key", "a-1")])).unwrap().as_deref(), Some("a-1"));
        for bad in ["", "a b"] {
            let h: HeaderMap =
                [(header::HeaderName::from_static(IDEMPOTENCY_KEY), HeaderValue::from_str(bad).unwrap())]
                    .into_iter()
                    .collect();
            assert_eq!(key_of(&h).unwrap_err().field.as_deref(), Some("Idempotency-Key"), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn replays_the_first_response_and_refuses_other_bodies() {
        let replays = Replays::default();
        let now = Instant::now();
        let post = Method::POST;
        let Claim::Fresh(ticket) = replays.claim("cred", "k".into(), &post, "/api/v1/tokens", b"{}", now) else {
            panic!("the first use of a key is served")
        };
        let Claim::Answer(busy) = replays.claim("cred", "k".into(), &post, "/api/v1/tokens", b"{}", now) else {
            panic!("a retry while the first runs waits")
        };
        assert_eq!(busy.status(), StatusCode::CONFLICT);
        let first = Response::builder().status(StatusCode::CREATED).content_type("application/json").body("{\"id\":1}");
        let first = replays.finish(ticket, first).await;
        assert_eq!(first.into_body().into_string().await.unwrap(), "{\"id\":1}");
        let Claim::Answer(again) = replays.claim("cred", "k".into(), &post, "/api/v1/tokens", b"{}", now) else {
            panic!("a retry is replayed")
        };
        assert_eq!((again.status(), again.headers()[REPLAYED].to_str().unwrap()), (StatusCode::CREATED, "true"));
        assert_eq!(again.into_body().into_string().await.unwrap(), "{\"id\":1}");
        let Claim::Answer(other) = replays.claim("cred", "k".into(), &post, "/api/v1/tokens", b"{\"a\":1}", now) else {
            panic!("another body is refused")
        };
        assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            matches!(replays.claim("other", "k".into(), &post, "/api/v1/tokens", b"{}", now), Claim::Fresh(_)),
            "keys are per credential"
        );
        assert!(
            matches!(replays.claim("cred", "k".into(), &post, "/api/v1/tokens", b"{}", now + KEY_TTL), Claim::Fresh(_)),
            "keys expire"
        );
    }

    #[tokio::test]
    async fn server_errors_release_the_key_and_the_map_is_bounded() {
        let replays = Replays::default();
        let now = Instant::now();
        let post = Method::POST;
        let Claim::Fresh(t) = replays.claim("c", "k".into(), &post, "/p", b"", now) else { panic!() };
        let limited = Response::builder().status(StatusCode::TOO_MANY_REQUESTS).body("{\"code\":\"rate-limited\"}");
        let limited = replays.finish(t, limited).await;
        assert_eq!(limited.into_body().into_string().await.unwrap(), "{\"code\":\"rate-limited\"}", "passed on whole");
        assert!(matches!(replays.claim("c", "k".into(), &post, "/p", b"", now), Claim::Fresh(_)), "retry after a 429");
        let Claim::Fresh(t) = replays.claim("c", "k2".into(), &post, "/p", b"", now) else { panic!() };
        replays.finish(t, Response::builder().status(StatusCode::SERVICE_UNAVAILABLE).finish()).await;
        assert!(matches!(replays.claim("c", "k2".into(), &post, "/p", b"", now), Claim::Fresh(_)), "retry after a 503");
        for i in 0..KEY_CAPACITY + 10 {
            let _ = replays.claim("c", format!("k{i}"), &post, "/p", b"", now);
        }
        assert_eq!(replays.inner.lock().unwrap().entries.len(), KEY_CAPACITY);
    }
}
