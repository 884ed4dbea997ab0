//! The edge every request passes: request id and log span, body size limit,
//! errors turned into problem+json (405 with `Allow`), security headers, and
//! request metrics.
use super::semantics;
use crate::api::ClientIp;
use crate::api::auth::CallerSlot;
use crate::api::failures;
use crate::api::problem::{ApiError, CONTENT_TYPE as PROBLEM, Code, REQUEST_ID};
use crate::auth::limits::{Budget, Limited};
use crate::state::AppState;
use bytes::Bytes;
use poem::error::ReadBodyError;
use poem::http::{HeaderValue, Method, StatusCode, header};
use poem::{Body, Endpoint, IntoResponse, Request, Response};
use poem_openapi::OperationId;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument as _;

/// Operations whose query another party writes: the redirects back from an
/// identity provider or Clio, which may add parameters of their own (Google
/// adds `scope`, `authuser`, `hd`; others `session_state`), so unknown ones
/// are ignored there rather than failing a sign-in.
const FOREIGN_QUERIES: &[&str] = &["auth.oidc_callback", "clio.callback"];

/// What the spec says of each API path: allowed methods, and the top-level
/// properties (name → JSON type) of each operation's JSON request body.
#[derive(Debug, Default)]
pub struct SpecIndex {
    routes: Vec<Route>,
}

#[derive(Debug)]
struct Route {
    template: Vec<String>,
    methods: Vec<String>,
    bodies: Vec<(String, Vec<(String, Property)>)>,
    /// The query parameters each method declares.
    queries: Vec<(String, Vec<String>)>,
    /// The operation id of each method.
    ids: Vec<(String, String)>,
}

/// What the edge checks of a body property: its JSON type, and the values
/// allowed for it (or for its items) when they form a closed set.
#[derive(Debug)]
struct Property {
    kind: String,
    allowed: Vec<String>,
}

/// A schema with its `$ref` (and a one-entry `allOf` wrapper) followed.
fn resolve<'a>(spec: &'a serde_json::Value, schema: &'a serde_json::Value) -> &'a serde_json::Value {
    let schema = schema
        .pointer("/allOf/0")
        .filter(|_| schema["allOf"].as_array().is_some_and(|a| a.len() == 1))
        .unwrap_or(schema);
    match schema.get("$ref").and_then(|r| r.as_str()) {
        Some(r) => r
            .strip_prefix("#/components/schemas/")
            .and_then(|n| spec.pointer(&format!("/components/schemas/{n}")))
            .unwrap_or(schema),
        None => schema,
    }
}

/// The properties of a (possibly `$ref`-erenced) object schema.
fn properties(spec: &serde_json::Value, schema: &serde_json::Value) -> Vec<(String, Property)> {
    let Some(props) = resolve(spec, schema).get("properties").and_then(|p| p.as_object()) else {
        return vec![];
    };
    let values = |s: &serde_json::Value| -> Vec<String> {
        s.get("enum")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    props
        .iter()
        .map(|(name, p)| {
            let p = resolve(spec, p);
            let kind = p.get("type").and_then(|t| t.as_str()).unwrap_or("any").to_string();
            let allowed = match p.get("items") {
                Some(items) if kind == "array" => values(resolve(spec, items)),
                _ => values(p),
            };
            (name.clone(), Property { kind, allowed })
        })
        .collect()
}

impl SpecIndex {
    /// Reads `paths` from a spec whose paths are relative to `base`.
    pub fn from_spec(spec: &str, base: &str) -> Self {
        let value: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
        let mut routes = vec![];
        for (path, ops) in value.get("paths").and_then(|p| p.as_object()).into_iter().flatten() {
            let Some(ops) = ops.as_object() else { continue };
            let mut methods: Vec<String> =
                ops.keys().map(|m| m.to_ascii_uppercase()).filter(|m| m != "PARAMETERS").collect();
            if methods.iter().any(|m| m == "GET") {
                methods.push("HEAD".into());
            }
            let bodies = ops
                .iter()
                .filter_map(|(m, op)| {
                    let content = op.pointer("/requestBody/content")?.as_object()?;
                    let schema = content.iter().find(|(ct, _)| ct.contains("json"))?.1.get("schema")?;
                    Some((m.to_ascii_uppercase(), properties(&value, schema)))
                })
                .collect();
            let queries = ops
                .iter()
                .map(|(m, op)| {
                    let names = op.get("parameters").and_then(|p| p.as_array()).into_iter().flatten();
                    let names = names
                        .filter(|p| p.get("in").and_then(|i| i.as_str()) == Some("query"))
                        .filter_map(|p| p.get("name").and_then(|n| n.as_str()).map(str::to_owned))
                        .collect();
                    (m.to_ascii_uppercase(), names)
                })
                .collect();
            let ids = ops
                .iter()
                .filter_map(|(m, op)| Some((m.to_ascii_uppercase(), op.get("operationId")?.as_str()?.to_string())))
                .collect();
            routes.push(Route { template: split(&format!("{base}{path}")), methods, bodies, queries, ids });
        }
        SpecIndex { routes }
    }

    fn route(&self, path: &str) -> Option<&Route> {
        let segments = split(path);
        self.routes.iter().find(|r| {
            r.template.len() == segments.len()
                && r.template.iter().zip(&segments).all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')))
        })
    }

    /// The operation id of a method on a concrete path.
    pub fn operation_id(&self, method: &Method, path: &str) -> Option<&str> {
        let method = if *method == Method::HEAD { "GET" } else { method.as_str() };
        self.route(path)?.ids.iter().find(|(m, _)| m == method).map(|(_, id)| id.as_str())
    }

    /// The allowed methods for a concrete path, if it matches a template.
    pub fn allowed(&self, path: &str) -> Option<String> {
        self.route(path).map(|r| r.methods.join(", "))
    }

    /// The methods any path accepts: the spec's for API paths, `POST` for
    /// webhook deliveries, `GET, HEAD` for everything else.
    pub fn allow(&self, path: &str) -> String {
        self.allowed(path).unwrap_or_else(|| {
            if path.starts_with(crate::clio::webhooks::PATH) { "POST" } else { "GET, HEAD" }.to_string()
        })
    }

    /// A 400 naming the query parameters the operation does not declare
    /// (a misspelt or unsupported parameter must not be silently ignored).
    pub fn unknown_parameters(&self, method: &Method, path: &str, query: Option<&str>) -> Option<ApiError> {
        let query = query.filter(|q| !q.is_empty())?;
        if self.operation_id(method, path).is_some_and(|id| FOREIGN_QUERIES.contains(&id)) {
            return None;
        }
        let method = if *method == Method::HEAD { "GET" } else { method.as_str() };
        let declared = &self.route(path)?.queries.iter().find(|(m, _)| m == method)?.1;
        let mut unknown: Vec<String> = vec![];
        for (name, _) in url::form_urlencoded::parse(query.as_bytes()) {
            if !declared.iter().any(|d| *d == name) && !unknown.iter().any(|u| *u == name) {
                unknown.push(name.into_owned());
            }
        }
        let first = unknown.first()?.clone();
        let names: Vec<String> = unknown.iter().map(|n| format!("`{}`", n.escape_debug())).collect();
        let takes = if declared.is_empty() {
            "this operation takes no query parameters".to_string()
        } else {
            let list: Vec<String> = declared.iter().map(|n| format!("`{n}`")).collect();
            format!("this operation takes {}", list.join(", "))
        };
        let what = if names.len() == 1 { "unknown query parameter" } else { "unknown query parameters" };
        Some(ApiError::field(
            Code::UnknownParameter,
            first,
            format!("{what} {}; {takes} (see /api/docs)", names.join(", ")),
        ))
    }

    /// Names the first body field whose JSON type differs from the spec's.
    pub fn wrong_field(&self, method: &str, path: &str, body: &[u8]) -> Option<(String, String)> {
        let props = &self.route(path)?.bodies.iter().find(|(m, _)| m == method)?.1;
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        for (name, field) in value.as_object()? {
            let Some((_, property)) = props.iter().find(|(n, _)| n == name) else {
                continue;
            };
            if let Some(detail) = not_allowed(name, property, field) {
                return Some((name.clone(), detail));
            }
            let expected = &property.kind;
            let fits = match (expected.as_str(), field) {
                (_, serde_json::Value::Null) => false,
                ("string", v) => v.is_string(),
                ("integer", v) => v.is_i64() || v.is_u64(),
                ("number", v) => v.is_number(),
                ("boolean", v) => v.is_boolean(),
                ("array", v) => v.is_array(),
                ("object", v) => v.is_object(),
                _ => true,
            };
            if !fits {
                let found = match field {
                    serde_json::Value::Null => "null (leave the field out instead)",
                    serde_json::Value::Bool(_) => "a boolean",
                    serde_json::Value::Number(_) => "a number",
                    serde_json::Value::String(_) => "a string",
                    serde_json::Value::Array(_) => "an array",
                    _ => "an object",
                };
                return Some((
                    name.clone(),
                    format!("field `{name}` must be of type {expected}, but the request sent {found}"),
                ));
            }
        }
        None
    }
}

/// Names the first value of `field` outside the property's closed set.
fn not_allowed(name: &str, property: &Property, field: &serde_json::Value) -> Option<String> {
    if property.allowed.is_empty() {
        return None;
    }
    let values: Vec<&serde_json::Value> = match field {
        serde_json::Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let bad = values.into_iter().find_map(|v| v.as_str().filter(|s| !property.allowed.iter().any(|a| a == s)))?;
    let list: Vec<String> = property.allowed.iter().map(|a| format!("`{a}`")).collect();
    let shown: String = bad.chars().take(64).collect::<String>().escape_debug().to_string();
    Some(format!("field `{name}` has `{shown}`, which is not one of {}", list.join(", ")))
}

/// The detail of a 400 the framework produced, without its internals (type
/// names, parser wrappers).
fn clean_detail(raw: &str) -> String {
    let raw = raw.trim();
    let Some(rest) = raw.strip_prefix("parse request payload error:") else {
        return raw.to_string();
    };
    let rest = rest.trim();
    let rest = rest.strip_prefix("failed to parse \"").and_then(|r| r.split_once("\": ")).map_or(rest, |r| r.1);
    let rest = rest.split(" (occurred while parsing").next().unwrap_or(rest);
    format!("the request body does not fit this operation: {rest}; see /api/docs for its schema")
}

fn split(path: &str) -> Vec<String> {
    path.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// The edge middleware around the whole application.
pub struct Edge<E> {
    pub inner: E,
    pub state: Arc<AppState>,
    pub spec: Arc<SpecIndex>,
    /// Whether responses go out over HTTPS (adds HSTS).
    pub https: bool,
    /// The idempotency keys of recent `POST`s.
    pub replays: semantics::Replays,
    /// The bounded audit of refused calls.
    pub refusals: crate::api::failures::Refusals,
}

fn request_id(req: &Request) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=64).contains(&v.len()) && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// The client's address and whether it reached us over HTTPS. Behind a proxy
/// (TLS mode `off`), `X-Forwarded-For` / `X-Forwarded-Proto` are believed only
/// when the direct peer is listed in `server.trusted_proxies`.
pub fn client_origin(
    peer: Option<IpAddr>,
    headers: &poem::http::HeaderMap,
    trusted: &[IpAddr],
    https: bool,
) -> (Option<IpAddr>, bool) {
    let Some(peer_ip) = peer.filter(|ip| trusted.contains(ip)) else {
        return (peer, https);
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let client = header("x-forwarded-for")
        .and_then(|chain| {
            chain.rsplit(',').filter_map(|hop| hop.trim().parse::<IpAddr>().ok()).find(|ip| !trusted.contains(ip))
        })
        .unwrap_or(peer_ip);
    let forwarded_https = header("x-forwarded-proto").is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    (Some(client), https || forwarded_https)
}

/// The methods docket knows; any other is answered 405 before anything else
/// and counted as `other`, so metric labels come from a fixed set.
const METHODS: [Method; 7] =
    [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];

/// The metric label of a method: its name if known, else `other`.
fn method_label(method: &Method) -> &'static str {
    METHODS.iter().find(|m| *m == method).map_or("other", Method::as_str)
}

/// The longest request line plus headers answered by a handler; longer ones
/// get a 431 problem (the protocol layer refuses past `serve::PROTOCOL_HEAD_BYTES`).
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

fn head_bytes(req: &Request) -> usize {
    let headers: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    req.uri().to_string().len() + headers
}

/// Whether a response already is a problem document.
fn is_problem(resp: &Response) -> bool {
    resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(PROBLEM.as_bytes()))
}

/// A HEAD response: the headers of the GET, no body, and the length the body
/// would have (HTTP/2 treats any body on a HEAD response as a protocol error).
fn without_body(resp: &mut Response) {
    let body: http_body_util::combinators::BoxBody<Bytes, std::io::Error> = resp.take_body().into();
    if let Some(len) = hyper::body::Body::size_hint(&body).exact()
        && !resp.headers().contains_key(header::CONTENT_LENGTH)
    {
        resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
}

/// Route label for metrics: the operation id for API calls, else a fixed class.
fn route_label(resp: &Response, path: &str) -> String {
    if let Some(op) = resp.data::<OperationId>() {
        return op.0.to_string();
    }
    if path.starts_with(crate::clio::webhooks::PATH) {
        return "hooks".to_string();
    }
    let class = match path {
        "/healthz" | "/readyz" | "/metrics" => path,
        p if p.starts_with("/api/docs") => "/api/docs",
        "/api/v1/openapi.json" => "/api/v1/openapi.json",
        p if p.starts_with("/api/") => "api-unmatched",
        _ => "web",
    };
    class.to_string()
}

impl<E: Endpoint> Edge<E> {
    /// Buffers the body up to the limit (`Err` with a 413 problem past it) and
    /// returns a shared handle on it for error diagnosis (no copy).
    async fn limit_body(&self, req: &mut Request) -> Result<Bytes, ApiError> {
        let max = self.state.config.server.max_body_bytes;
        let too_large = || {
            ApiError::new(
                Code::PayloadTooLarge,
                format!("the request body is larger than the {max}-byte limit; send less"),
            )
        };
        if let Some(len) = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            && len > max
        {
            return Err(too_large());
        }
        let limit = usize::try_from(max).unwrap_or(usize::MAX);
        let bytes = req.take_body().into_bytes_limit(limit).await.map_err(|e| match e {
            ReadBodyError::PayloadTooLarge => too_large(),
            _ => ApiError::new(Code::BadRequest, "the request body could not be read; send it again"),
        })?;
        req.set_body(Body::from(bytes.clone()));
        Ok(bytes)
    }

    fn error_response(&self, err: poem::Error, method: &Method, path: &str, body: &[u8]) -> Response {
        if let Some(refused) = parameter_error(&err) {
            return refused.into_response();
        }
        let resp = err.into_response();
        if is_problem(&resp) {
            return resp;
        }
        self.problem_for(resp, method, path, body)
    }

    /// The problem document for a response that is not one (router, parsers, bare statuses).
    fn problem_for(&self, resp: Response, method: &Method, path: &str, body: &[u8]) -> Response {
        let code = Code::for_status(resp.status().as_u16());
        let detail = match code {
            Code::NotFound => format!("nothing is served at {path}; see /api/docs for the API"),
            Code::MethodNotAllowed => format!("{path} does not accept this method"),
            Code::Internal | Code::StorageUnavailable => {
                "an internal error occurred; quote the request id to your administrator".to_string()
            }
            _ => clean_detail(&String::from_utf8_lossy(&futures_body(resp))),
        };
        let mut e = ApiError::new(code, if detail.is_empty() { code.title().to_string() } else { detail });
        if code == Code::BadRequest
            && let Some((field, detail)) = self.spec.wrong_field(method.as_str(), path, body)
        {
            // A permission that does not exist is a scope the client must fix, not a malformed request.
            let code = if field == "scopes" && detail.contains("not one of") { Code::InvalidScope } else { code };
            e = ApiError::field(code, field, detail);
        }
        if code == Code::MethodNotAllowed {
            e = e.with_header("allow", self.spec.allow(path));
        }
        e.into_response()
    }

    /// Refusals made before routing: a method outside [`METHODS`] (405), an
    /// oversized request head (431).
    fn refuse_early(&self, req: &Request) -> Option<ApiError> {
        let path = req.uri().path();
        if method_label(req.method()) == "other" {
            return Some(
                ApiError::new(
                    Code::MethodNotAllowed,
                    format!("{path} does not accept this method; use one of those in the Allow header"),
                )
                .with_header("allow", self.spec.allow(path)),
            );
        }
        let size = head_bytes(req);
        (size > MAX_HEAD_BYTES).then(|| {
            ApiError::new(
                Code::HeadersTooLarge,
                format!(
                    "the request line and headers are {size} bytes, more than the {MAX_HEAD_BYTES}-byte limit; send a shorter query or fewer headers"
                ),
            )
        })
    }

    /// Applies the rate limits (what is left of the tightest, or the
    /// refusal); health checks are exempt so monitoring never trips them.
    fn rate_limit(&self, req: &Request, client: Option<IpAddr>) -> Result<Option<Budget>, ApiError> {
        let path = req.uri().path();
        if matches!(path, "/healthz" | "/readyz") {
            return Ok(None);
        }
        let session = crate::api::auth::session_cookie(req);
        let credential = crate::api::auth::bearer(req).or(session.as_deref());
        let sign_in = is_sign_in(req.method(), path);
        let checked = self.state.limits.check(client, credential).and_then(|budget| match (sign_in, client) {
            (true, Some(ip)) => self.state.limits.check_sign_in(ip).map(|b| Some(b.tighter(budget))),
            _ => Ok(budget),
        });
        let refused = match checked {
            Ok(budget) => return Ok(budget),
            Err(refused) => refused,
        };
        let retry = refused.retry_after().as_secs().max(1);
        self.state.metrics.count(
            "docket_http_rate_limited_total",
            "Requests refused by a rate limit.",
            vec![("limit", refused.scope().to_string())],
            1,
        );
        let limits = &self.state.config.limits;
        let (detail, limit) = match refused {
            Limited::Ip(_) => {
                (format!("too many requests from your address; retry in {retry} s"), limits.per_ip_per_minute)
            }
            Limited::Credential(_) => (
                format!("too many requests with this credential; retry in {retry} s"),
                limits.per_credential_per_minute,
            ),
            Limited::SignIn(_) => (
                format!("too many sign-in attempts from your address; retry in {retry} s"),
                limits.sign_in_per_ip_per_minute,
            ),
        };
        Err(ApiError::new(Code::RateLimited, detail)
            .with_header("retry-after", retry.to_string())
            .with_header("ratelimit-limit", limit.to_string())
            .with_header("ratelimit-remaining", "0".into())
            .with_header("ratelimit-reset", retry.to_string()))
    }

    /// Serves a request past the edge's refusals: an idempotent `POST` from
    /// memory or once, then the API's promises (ETag, Location) applied.
    async fn serve(&self, mut req: Request, method: &Method, path: &str, body: Bytes) -> Response {
        let api = path.starts_with(crate::api::BASE);
        let headers = req.headers().clone();
        let mut ticket = None;
        if *method == Method::POST && semantics::idempotent(path) {
            let key = match semantics::key_of(&headers) {
                Ok(key) => key,
                Err(e) => return e.into_response(),
            };
            let session = crate::api::auth::session_cookie(&req);
            let credential = crate::api::auth::bearer(&req).or(session.as_deref()).map(str::to_owned);
            if let (Some(key), Some(credential)) = (key, credential) {
                match self.replays.claim(&credential, key, method, path, &body, Instant::now()) {
                    semantics::Claim::Answer(resp) => return resp,
                    semantics::Claim::Fresh(t) => ticket = Some(t),
                }
            }
        }
        if *method == Method::HEAD {
            // Served as the GET it mirrors; the body is dropped below, its length kept.
            req.set_method(Method::GET);
        }
        let caller = CallerSlot::default();
        req.set_data(caller.clone());
        let ctx = crate::api::audit_context(&req);
        let mut resp = match self.inner.call(req).await {
            Ok(out) => {
                let resp = out.into_response();
                let failed = resp.status().is_client_error() || resp.status().is_server_error();
                if failed && !is_problem(&resp) { self.problem_for(resp, method, path, &[]) } else { resp }
            }
            Err(err) => self.error_response(err, method, path, &body),
        };
        if api
            && failures::audited(resp.status().as_u16())
            && let Some(principal) = caller.take()
        {
            resp = self.audit_refusal(resp, &principal, &ctx, method, path).await;
        }
        if api && resp.status() == StatusCode::CREATED && !resp.headers().contains_key(header::LOCATION) {
            resp = with_location(resp, method, path).await;
        }
        if let Some(ticket) = ticket {
            resp = self.replays.finish(ticket, resp).await;
        }
        if api && matches!(*method, Method::GET | Method::HEAD) {
            resp = semantics::conditional(&headers, resp).await;
        }
        resp
    }
}

impl<E: Endpoint> Edge<E> {
    /// Records a refused call of an authenticated caller (see `api::failures`).
    async fn audit_refusal(
        &self,
        resp: Response,
        principal: &crate::auth::Principal,
        ctx: &crate::audit::Context,
        method: &Method,
        path: &str,
    ) -> Response {
        let (parts, body) = resp.into_parts();
        let Ok(bytes) = body.into_bytes().await else {
            return Response::from_parts(parts, Body::empty());
        };
        let problem: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let refusal = failures::Refusal {
            operation: self.spec.operation_id(method, path).unwrap_or("api.request"),
            path,
            status: parts.status.as_u16(),
            code: problem["code"].as_str().unwrap_or("unknown"),
            field: problem["field"].as_str(),
        };
        let (store, metrics) = (&self.state.store, &self.state.metrics);
        self.refusals.record(store, metrics, principal, ctx, &refusal);
        Response::from_parts(parts, Body::from(bytes))
    }
}

/// Adds `Location` to a `201` (see [`semantics::location`]).
async fn with_location(resp: Response, method: &Method, path: &str) -> Response {
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = body.into_bytes().await else {
        return Response::from_parts(parts, Body::empty());
    };
    if let Some(at) = semantics::location(method, path, &bytes)
        && let Ok(v) = HeaderValue::from_str(&at)
    {
        parts.headers.insert(header::LOCATION, v);
    }
    Response::from_parts(parts, Body::from(bytes))
}

impl<E: Endpoint> Edge<E> {
    fn secure(&self, resp: &mut Response, id: &str, https: bool) {
        let h = resp.headers_mut();
        let mut set = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        };
        set("x-request-id", id);
        set("x-content-type-options", "nosniff");
        set("referrer-policy", "no-referrer");
        set("x-frame-options", "DENY");
        set(
            "content-security-policy",
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        );
        if https {
            set("strict-transport-security", "max-age=31536000; includeSubDomains");
        }
    }
}

/// The header a same-site script sends to prove it is not a cross-site form.
pub const CSRF_HEADER: &str = "x-docket-csrf";

/// Refuses cross-site state-changing requests that ride on the session
/// cookie (or that sign in): they must come from this site (`Origin`) and
/// carry `X-Docket-CSRF`, which a cross-site form cannot send. Requests
/// with an API token carry no ambient credential and are exempt.
fn csrf(req: &Request, https: bool) -> Option<ApiError> {
    let method = req.method();
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || req.headers().contains_key(header::AUTHORIZATION)
    {
        return None;
    }
    let signing_in = req.uri().path().starts_with(&format!("{}/auth/", crate::api::BASE));
    if crate::api::auth::session_cookie(req).is_none() && !signing_in {
        return None;
    }
    let expected = site_origin(req, https);
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if origin != Some(expected.as_str()) {
        return Some(ApiError::new(
            Code::Forbidden,
            format!(
                "cross-site request refused: the Origin header must be {expected} for a request made with a session; integrations should use an API token instead"
            ),
        ));
    }
    if !req.headers().contains_key(CSRF_HEADER) {
        return Some(ApiError::new(
            Code::Forbidden,
            "cross-site request refused: send the header `X-Docket-CSRF: 1` with state-changing requests made with a session",
        ));
    }
    None
}

/// This site's origin as the browser sees it: scheme and `Host`.
fn site_origin(req: &Request, https: bool) -> String {
    // HTTP/2 carries the host in the `:authority` pseudo-header (the URI), HTTP/1.1 in `Host`.
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(header::HOST).and_then(|v| v.to_str().ok()))
        .unwrap_or("localhost");
    format!("{}://{host}", if https { "https" } else { "http" })
}

/// Sign-in, its callback, and token creation: stricter per-address limits and CSRF checks.
fn is_sign_in(method: &Method, path: &str) -> bool {
    let Some(rest) = path.strip_prefix(crate::api::BASE) else { return false };
    rest.starts_with("/auth/") || (*method == Method::POST && (rest == "/tokens" || rest.starts_with("/tokens/")))
}

/// A query, path or header parameter that did not parse: a 400 naming it.
fn parameter_error(err: &poem::Error) -> Option<ApiError> {
    use poem_openapi::error::{ParseParamError, ParsePathError};
    let (kind, name, reason) = if let Some(e) = err.downcast_ref::<ParseParamError>() {
        ("parameter", e.name, &e.reason)
    } else {
        let e = err.downcast_ref::<ParsePathError>()?;
        ("path parameter", e.name, &e.reason)
    };
    // poem-openapi wraps the parser's message: `failed to parse "T": <message> (occurred while parsing "U")`.
    let reason =
        reason.strip_prefix("failed to parse \"").and_then(|r| r.split_once("\": ")).map_or(reason.as_str(), |r| r.1);
    let reason = reason.split(" (occurred while parsing").next().unwrap_or(reason);
    let code = if name == "cursor" { Code::InvalidCursor } else { Code::BadRequest };
    Some(ApiError::field(code, name, format!("{kind} `{name}` is invalid: {reason}")))
}

/// Extracts a plain-text error body (poem errors render their message as text).
fn futures_body(resp: Response) -> Vec<u8> {
    // poem error bodies are in-memory; reading them never waits on the network.
    let body = resp.into_body();
    futures_util::FutureExt::now_or_never(body.into_vec()).and_then(Result::ok).unwrap_or_default()
}

impl<E: Endpoint> Endpoint for Edge<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let id = request_id(&req);
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let peer = req.remote_addr().as_socket_addr().map(|a| a.ip());
        let (client, https) = client_origin(peer, req.headers(), &self.state.config.server.trusted_proxies, self.https);
        let peer_client = client;
        let client = client.map(|ip| ip.to_string()).unwrap_or_default();
        req.set_data(ClientIp(client.clone()));
        req.set_data(crate::api::SiteOrigin(site_origin(&req, https)));
        let label = method_label(&method);
        let span = tracing::info_span!("request", request_id = %id, method = label, path = %path, client = %client);
        let start = Instant::now();
        let state = self.state.clone();
        req.set_data(state.clone());
        let mut budget = None;
        let refused = self
            .refuse_early(&req)
            .or_else(|| self.rate_limit(&req, peer_client).map(|b| budget = b).err())
            .or_else(|| csrf(&req, https))
            .or_else(|| self.spec.unknown_parameters(&method, &path, req.uri().query()));
        let mut resp = REQUEST_ID
            .scope(id.clone(), async {
                if let Some(refused) = refused {
                    return refused.into_response();
                }
                let mut body = Bytes::new();
                if method != Method::GET && method != Method::HEAD {
                    match self.limit_body(&mut req).await {
                        Ok(b) => body = b,
                        Err(e) => return e.into_response(),
                    }
                }
                self.serve(req, &method, &path, body).await
            })
            .instrument(span.clone())
            .await;
        if let Some(budget) = budget {
            semantics::rate_limit_headers(&mut resp, budget);
        }
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE && !resp.headers().contains_key(header::RETRY_AFTER) {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        }
        self.secure(&mut resp, &id, https);
        if method == Method::HEAD {
            without_body(&mut resp);
        }
        let elapsed = start.elapsed().as_secs_f64();
        let route = route_label(&resp, &path);
        let status = resp.status().as_u16();
        let labels = vec![("route", route.clone()), ("method", label.to_string()), ("status", status.to_string())];
        state.metrics.count("docket_http_requests_total", "HTTP requests served.", labels.clone(), 1);
        state.metrics.observe("docket_http_request_duration_seconds", "HTTP request latency.", labels, elapsed);
        span.in_scope(|| tracing::info!(status, route = %route, duration_ms = elapsed * 1000.0, "request"));
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> poem::http::HeaderMap {
        pairs.iter().map(|(k, v)| (poem::http::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn forwarded_headers_only_from_trusted_proxies() {
        let trusted: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap()];
        let h = [("x-forwarded-for", "198.51.100.7, 10.0.0.2"), ("x-forwarded-proto", "https")];
        let (ip, https) = client_origin(Some("10.0.0.2".parse().unwrap()), &headers(&h), &trusted, false);
        assert_eq!((ip.unwrap().to_string().as_str(), https), ("198.51.100.7", true));
        let (ip, https) = client_origin(Some("203.0.113.1".parse().unwrap()), &headers(&h), &trusted, false);
        assert_eq!((ip.unwrap().to_string().as_str(), https), ("203.0.113.1", false), "spoofed headers are ignored");
    }

    #[test]
    fn spec_index_matches_templates_and_names_wrong_fields() {
        let spec = r##"{"paths":{"/org":{"get":{},"patch":{"requestBody":{"content":{"application/json; charset=utf-8":{"schema":{"$ref":"#/components/schemas/P"}}}}}},"/matters/{id}":{"get":{}}},
            "components":{"schemas":{"P":{"type":"object","properties":{"name":{"type":"string"}}}}}}"##;
        let idx = SpecIndex::from_spec(spec, "/api/v1");
        assert_eq!(idx.allowed("/api/v1/org").as_deref(), Some("GET, PATCH, HEAD"));
        assert_eq!(idx.allowed("/api/v1/matters/42").as_deref(), Some("GET, HEAD"));
        assert_eq!(idx.allowed("/api/v1/nothing"), None);
        let (field, detail) = idx.wrong_field("PATCH", "/api/v1/org", br#"{"name": 5}"#).unwrap();
        assert_eq!(field, "name");
        assert!(detail.contains("must be of type string"), "{detail}");
        assert_eq!(idx.wrong_field("PATCH", "/api/v1/org", br#"{"name": "x"}"#), None);
    }

    #[test]
    fn unknown_query_parameters_except_on_redirects_back() {
        let spec = r#"{"paths":{"/matters":{"get":{"operationId":"matters.list","parameters":[{"name":"cursor","in":"query"}]}},
            "/auth/oidc/{provider}/callback":{"get":{"operationId":"auth.oidc_callback","parameters":[{"name":"code","in":"query"}]}}}}"#;
        let idx = SpecIndex::from_spec(spec, "/api/v1");
        let e = idx.unknown_parameters(&Method::GET, "/api/v1/matters", Some("after=1&x=2&cursor=c&x=3")).unwrap();
        assert_eq!((e.code, e.field.as_deref()), (Code::UnknownParameter, Some("after")));
        assert!(e.detail.contains("`after`, `x`;") && e.detail.contains("takes `cursor`"), "{}", e.detail);
        assert!(idx.unknown_parameters(&Method::HEAD, "/api/v1/matters", Some("cursor=1")).is_none());
        let google = Some("code=c&scope=openid&authuser=0&hd=example.com&prompt=consent");
        assert!(idx.unknown_parameters(&Method::GET, "/api/v1/auth/oidc/google/callback", google).is_none());
    }
}
