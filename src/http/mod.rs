//! The HTTP surface: listeners (HTTPS and the plain-HTTP redirect), TLS, the
//! edge middleware, and the routes (API, docs, ops endpoints, web app).
pub mod acme;
pub mod activation;
pub mod docs;
pub mod edge;
pub mod hooks;
pub mod ops;
pub mod semantics;
pub mod serve;
pub mod spa;
pub mod tls;

use crate::api;
use crate::config::{Config, TlsMode};
use crate::state::AppState;
use edge::{Edge, SpecIndex};
use poem::endpoint::make_sync;
use poem::http::{StatusCode, header};
use poem::{Endpoint, IntoResponse as _, Request, Response, Route};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tls::TlsSetup;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "cannot listen on {addr}: {reason}\n  fix: free the port, choose another in server.listen / server.redirect_listen, or (for ports below 1024) run as the packaged systemd service, whose docket.socket binds them"
    )]
    Bind { addr: SocketAddr, reason: String },
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error("server error: {0}")]
    Serve(String),
    #[error(
        "cannot use the sockets systemd passed: {0}\n  fix: check docket.socket (ListenStream= lines) and restart docket.socket and docket.service"
    )]
    Activation(String),
}

/// The whole application endpoint, wrapped in the edge.
pub fn app(state: Arc<AppState>, https: bool) -> impl Endpoint<Output = Response> {
    let service = api::service(state.clone());
    let docs = docs::routes(&service.swagger_ui_html());
    let spec_for_endpoint = api::spec_json(&service);
    let spec_index = Arc::new(SpecIndex::from_spec(&spec_for_endpoint, api::BASE));
    let route = Route::new()
        .at(
            "/api/v1/openapi.json",
            poem::get(make_sync(move |_| {
                Response::builder().header(header::CONTENT_TYPE, "application/json").body(spec_for_endpoint.clone())
            })),
        )
        .nest(api::BASE, service)
        .nest("/api/docs", docs)
        .at("/healthz", poem::get(make_sync(ops::healthz)))
        .at(
            format!("{}/:hook", crate::clio::webhooks::PATH),
            poem::post(poem::endpoint::make(|req: Request| async move { hooks::receive(req).await })),
        )
        .at("/readyz", poem::get(poem::endpoint::make(|req| async move { ops::readyz(req) })))
        .at("/metrics", poem::get(poem::endpoint::make(|req| async move { ops::metrics(req) })))
        .at("/api/*rest", make_sync(|_| Response::builder().status(StatusCode::NOT_FOUND).finish()))
        .at("/*path", poem::get(poem::endpoint::make(|req: Request| async move { spa::serve(&req) })))
        .at("/", poem::get(poem::endpoint::make(|req: Request| async move { spa::serve(&req) })));
    Edge { inner: route, state, spec: spec_index, https, replays: Default::default(), refusals: Default::default() }
}

/// The plain-HTTP app: every request gets a 308 to the same path over HTTPS.
///
/// The host is `server.public_host` when set. Otherwise the request's own
/// `Host` is used only when the server is configured or certified for it
/// ([`redirect_hosts`]); any other host gets a 400 problem, so the redirect
/// never sends a browser to a host an attacker named. A request without
/// `Host` goes to the configured default.
pub fn redirect_app(config: &Config, https_port: u16) -> impl Endpoint<Output = Response> + use<> {
    let configured = config.server.public_host.clone();
    let fallback = config.public_host();
    let known = redirect_hosts(config);
    make_sync(move |req: Request| {
        let sent = req.headers().get(header::HOST).map(|h| h.to_str().ok().and_then(host_of));
        let host = match (&configured, sent) {
            (Some(host), _) => host.clone(),
            (None, None) => fallback.clone(),
            (None, Some(Some(host))) if known.iter().any(|k| k.eq_ignore_ascii_case(&host)) => host,
            (None, Some(_)) => {
                return api::problem::ApiError::new(
                    api::problem::Code::BadRequest,
                    "this server does not answer for the host in the Host header; use its configured name (the administrator sets server.public_host)",
                )
                .into_response();
            }
        };
        let authority = if https_port == 443 { host } else { format!("{host}:{https_port}") };
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let location = format!("https://{authority}{path}");
        Response::builder().status(StatusCode::PERMANENT_REDIRECT).header(header::LOCATION, location).finish()
    })
}

/// The hosts the redirect may send a browser to when `server.public_host` is
/// unset: the names of the certificate docket makes, orders or is given
/// (self-signed hosts, ACME domains, the DNS names of `tls.cert_file`; read
/// at start) and the loopback names.
pub fn redirect_hosts(config: &Config) -> Vec<String> {
    let certified = match config.tls.mode {
        TlsMode::Acme => config.tls.acme.domains.clone(),
        TlsMode::SelfSigned => config.tls.self_signed_hosts.clone(),
        TlsMode::Files => {
            let file = config.tls.cert_file.as_deref().map(crate::certfile::leaf);
            file.and_then(Result::ok).map(|leaf| leaf.dns_names).unwrap_or_default()
        }
        TlsMode::Off => vec![],
    };
    let loopback = ["localhost", "127.0.0.1", "[::1]"].map(String::from);
    certified.into_iter().chain(config.server.public_host.clone()).chain(loopback).collect()
}

/// The host part of a `Host` header, if it is a well-formed name or address.
fn host_of(value: &str) -> Option<String> {
    let host = match value.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split_once(']')?.0),
        None => value
            .rsplit_once(':')
            .map_or(value, |(h, port)| if port.parse::<u16>().is_ok() { h } else { value })
            .to_string(),
    };
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    ok.then_some(host)
}

/// Listening sockets, bound before the server starts so bind errors are clear
/// and tests can bind port 0 and read the port back.
pub struct Listeners {
    pub main: Vec<tokio::net::TcpListener>,
    pub redirect: Vec<tokio::net::TcpListener>,
}

async fn bind(addrs: &[SocketAddr]) -> Result<Vec<tokio::net::TcpListener>, HttpError> {
    let mut out = vec![];
    for addr in addrs {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| HttpError::Bind { addr: *addr, reason: e.to_string() })?;
        out.push(l);
    }
    Ok(out)
}

impl Listeners {
    /// The sockets systemd passed when socket-activated, else binds the configured addresses.
    pub async fn bind(config: &Config) -> Result<Listeners, HttpError> {
        if let Some(passed) = Self::activated(config)? {
            return Ok(passed);
        }
        Ok(Listeners { main: bind(&config.listen_addrs()).await?, redirect: bind(&config.redirect_addrs()).await? })
    }

    fn activated(config: &Config) -> Result<Option<Listeners>, HttpError> {
        let redirect_ports = config.redirect_addrs().iter().map(SocketAddr::port).collect();
        let passed = activation::take(&redirect_ports).map_err(HttpError::Activation)?;
        if passed.is_empty() {
            return Ok(None);
        }
        let mut listeners = Listeners { main: vec![], redirect: vec![] };
        for (role, socket) in passed {
            let socket = tokio::net::TcpListener::from_std(socket).map_err(|e| HttpError::Activation(e.to_string()))?;
            match role {
                activation::Role::Main => listeners.main.push(socket),
                activation::Role::Redirect => listeners.redirect.push(socket),
            }
        }
        Ok(Some(listeners))
    }

    pub fn main_addrs(&self) -> Vec<SocketAddr> {
        self.main.iter().filter_map(|l| l.local_addr().ok()).collect()
    }

    pub fn redirect_addrs(&self) -> Vec<SocketAddr> {
        self.redirect.iter().filter_map(|l| l.local_addr().ok()).collect()
    }
}

/// Runs the main and redirect servers until `shutdown` turns true, then lets
/// in-flight requests finish for up to `server.shutdown_grace_seconds`.
/// Both run under the connection limits of `[limits]` (see [`serve`]).
pub async fn run(
    state: Arc<AppState>,
    listeners: Listeners,
    tls: Option<TlsSetup>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), HttpError> {
    let config = &state.config;
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    let limits = serve::Limits::from_config(&config.limits, &config.server.trusted_proxies);
    let https_port = listeners.main_addrs().first().map_or(443, SocketAddr::port);
    let redirect = (tls.is_some() && !listeners.redirect.is_empty()).then(|| {
        let server = serve::Server {
            name: "redirect",
            listeners: listeners.redirect,
            tls: None,
            limits: limits.clone(),
            metrics: state.metrics.clone(),
        };
        tokio::spawn(server.run(redirect_app(config, https_port), shutdown.clone(), grace))
    });
    if !listeners.main.is_empty() {
        let https = tls.is_some();
        let server =
            serve::Server { name: "main", listeners: listeners.main, tls, limits, metrics: state.metrics.clone() };
        server.run(app(state.clone(), https), shutdown, grace).await;
    }
    if let Some(handle) = redirect {
        handle.await.map_err(|e| HttpError::Serve(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_header_parsing() {
        assert_eq!(host_of("docket.firm.example:80").as_deref(), Some("docket.firm.example"));
        assert_eq!(host_of("docket.firm.example").as_deref(), Some("docket.firm.example"));
        assert_eq!(host_of("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(host_of("evil.example/path"), None);
        assert_eq!(host_of("a b"), None);
    }
}
