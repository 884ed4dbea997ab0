//! Serving connections with bounded resources: every connection is admitted
//! against a per-address and a global cap, must finish its TLS handshake and
//! send its first request head within set times, and is closed when idle.
//!
//! poem's own `Server` sets none of these (and hyper needs a timer for its
//! header-read timeout), so this module runs hyper directly and hands each
//! request to the poem endpoint.
//!
//! | limit (`[limits]`)          | enforced by                                        |
//! |-----------------------------|----------------------------------------------------|
//! | `tls_handshake_seconds`     | a timeout around the rustls handshake              |
//! | `header_read_seconds`       | the watchdog (first request), hyper (later heads)  |
//! | `idle_seconds`              | the watchdog: no traffic and no request running    |
//! | `connections_per_address`   | [`Gate`], keyed by the TCP peer                    |
//! | `connections_total`         | [`Gate`]                                           |
use super::tls::{self, TlsSetup};
use crate::config::LimitsConfig;
use crate::telemetry::Metrics;
use poem::endpoint::{DynEndpoint, ToDynEndpoint};
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, Response};
use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// The largest request line plus headers the protocol layers accept. The
/// edge answers 431 (problem+json) from a lower bound (`edge::MAX_HEAD_BYTES`);
/// past this one hyper (HTTP/1.1) or h2 (HTTP/2) answers before any handler.
pub const PROTOCOL_HEAD_BYTES: usize = 128 * 1024;

/// The connection limits of one listener, from `[limits]`.
#[derive(Clone, Debug)]
pub struct Limits {
    pub handshake: Duration,
    pub header_read: Duration,
    pub idle: Duration,
    pub per_address: usize,
    pub total: usize,
    /// Peers exempt from the per-address cap (trusted reverse proxies).
    pub exempt: Vec<IpAddr>,
}

impl Limits {
    pub fn from_config(limits: &LimitsConfig, trusted_proxies: &[IpAddr]) -> Limits {
        Limits {
            handshake: Duration::from_secs(limits.tls_handshake_seconds),
            header_read: Duration::from_secs(limits.header_read_seconds),
            idle: Duration::from_secs(limits.idle_seconds),
            per_address: usize::try_from(limits.connections_per_address).unwrap_or(usize::MAX),
            total: usize::try_from(limits.connections_total).unwrap_or(usize::MAX),
            exempt: trusted_proxies.to_vec(),
        }
    }
}

/// Why a connection was refused or closed: the fixed label set of the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    PerAddress,
    Total,
    HandshakeTimeout,
    HeaderTimeout,
    Idle,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::PerAddress => "per_address",
            Reason::Total => "total",
            Reason::HandshakeTimeout => "handshake_timeout",
            Reason::HeaderTimeout => "header_timeout",
            Reason::Idle => "idle",
        }
    }
}

/// Counts open connections, in all and per client address.
#[derive(Debug, Default)]
pub struct Gate {
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Gate>,
    ip: Option<IpAddr>,
}

impl Gate {
    fn with<R>(&self, f: impl FnOnce(&mut (usize, HashMap<IpAddr, usize>)) -> R) -> R {
        let mut guard = match self.open.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Admits a connection from `ip`, unless a cap is reached.
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> Result<Permit, Reason> {
        let counted = !limits.exempt.contains(&ip);
        self.with(|(total, per)| {
            if *total >= limits.total {
                return Err(Reason::Total);
            }
            let mine = per.entry(ip).or_default();
            if counted && *mine >= limits.per_address {
                return Err(Reason::PerAddress);
            }
            *mine += 1;
            *total += 1;
            Ok(Permit { gate: self.clone(), ip: Some(ip) })
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.with(|(total, _)| *total)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(ip) = self.ip.take() else { return };
        self.gate.with(|(total, per)| {
            *total = total.saturating_sub(1);
            if let Some(n) = per.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per.remove(&ip);
                }
            }
        });
    }
}

/// What the watchdog of one connection knows: when it last moved bytes,
/// how many requests it began, and how many are running.
struct Activity {
    base: Instant,
    last_io_ms: AtomicU64,
    started: AtomicU64,
    running: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            started: AtomicU64::new(0),
            running: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_io_ms.store(ms, Ordering::Relaxed);
    }

    fn last_io(&self) -> Instant {
        self.base + Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed))
    }

    /// When the connection is to be closed if nothing changes, and why.
    fn deadline(&self, limits: &Limits) -> (Instant, Reason) {
        if self.started.load(Ordering::Relaxed) == 0 {
            (self.base + limits.header_read, Reason::HeaderTimeout)
        } else if self.running.load(Ordering::Relaxed) > 0 {
            (Instant::now() + limits.idle, Reason::Idle)
        } else {
            (self.last_io() + limits.idle, Reason::Idle)
        }
    }
}

/// Marks a request running for as long as it lives.
struct Running(Arc<Activity>);

impl Running {
    fn begin(activity: &Arc<Activity>) -> Running {
        activity.started.fetch_add(1, Ordering::Relaxed);
        activity.running.fetch_add(1, Ordering::Relaxed);
        Running(activity.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A stream that reports each transfer to its connection's [`Activity`].
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Everything the connections of one server share.
struct Shared {
    endpoint: Arc<dyn DynEndpoint<Output = Response>>,
    tls: Option<TlsSetup>,
    limits: Limits,
    gate: Arc<Gate>,
    metrics: Arc<Metrics>,
    name: &'static str,
}

impl Shared {
    fn count(&self, reason: Reason) {
        let (metric, help) = match reason {
            Reason::PerAddress | Reason::Total => {
                ("docket_http_connections_refused_total", "Connections refused at a connection cap.")
            }
            _ => ("docket_http_connections_closed_total", "Connections closed by a timeout."),
        };
        self.metrics.count(metric, help, vec![("listener", self.name.into()), ("reason", reason.label().into())], 1);
    }
}

/// One listening server: its sockets, TLS (or plain HTTP), endpoint and limits.
pub struct Server {
    pub name: &'static str,
    pub listeners: Vec<TcpListener>,
    pub tls: Option<TlsSetup>,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
}

impl Server {
    /// Serves until `shutdown` turns true, then lets running requests finish
    /// for up to `grace` before cutting what is left.
    pub async fn run<E>(self, endpoint: E, shutdown: watch::Receiver<bool>, grace: Duration)
    where
        E: Endpoint<Output = Response> + 'static,
    {
        let shared = Arc::new(Shared {
            endpoint: Arc::new(ToDynEndpoint(endpoint)),
            tls: self.tls,
            limits: self.limits,
            gate: Arc::new(Gate::default()),
            metrics: self.metrics,
            name: self.name,
        });
        let (cut_tx, cut_rx) = watch::channel(false);
        let mut accepting = tokio::task::JoinSet::new();
        for listener in self.listeners {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(server = shared.name, %addr, "listening");
            }
            accepting.spawn(accept_loop(listener, shared.clone(), shutdown.clone(), cut_rx.clone()));
        }
        while accepting.join_next().await.is_some() {}
        let deadline = Instant::now() + grace;
        while shared.gate.open() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = cut_tx.send(true);
        tracing::info!(server = shared.name, "server stopped");
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    cut: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(server = shared.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let permit = match shared.gate.admit(peer.ip(), &shared.limits) {
            Ok(p) => p,
            Err(reason) => {
                shared.count(reason);
                tracing::debug!(server = shared.name, client = %peer.ip(), reason = reason.label(), "connection refused");
                drop(stream);
                continue;
            }
        };
        let local = stream.local_addr().ok();
        tokio::spawn(connection(stream, peer, local, shared.clone(), permit, shutdown.clone(), cut.clone()));
    }
}

fn remote(addr: SocketAddr) -> RemoteAddr {
    RemoteAddr(poem::Addr::SocketAddr(addr))
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    shared: Arc<Shared>,
    _permit: Permit,
    shutdown: watch::Receiver<bool>,
    cut: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let local = LocalAddr(local.map_or(poem::Addr::Custom("tcp", "".into()), poem::Addr::SocketAddr));
    let Some(setup) = shared.tls.clone() else {
        return http(stream, local, remote(peer), Scheme::HTTP, &shared, shutdown, cut).await;
    };
    let mut stop = shutdown.clone();
    let handshake = tokio::select! {
        done = tokio::time::timeout(shared.limits.handshake, tls::accept(stream, setup)) => done,
        _ = stop.wait_for(|s| *s) => return,
    };
    match handshake {
        Ok(Ok(tls_stream)) => http(tls_stream, local, remote(peer), Scheme::HTTPS, &shared, shutdown, cut).await,
        Ok(Err(e)) => tracing::debug!(client = %peer.ip(), error = %e, "TLS handshake failed"),
        Err(_) => {
            shared.count(Reason::HandshakeTimeout);
            tracing::debug!(client = %peer.ip(), "TLS handshake timed out");
        }
    }
}

/// Serves HTTP/1.1 or HTTP/2 on one connection until it ends, times out or is cut.
async fn http<S>(
    io: S,
    local: LocalAddr,
    remote: RemoteAddr,
    scheme: Scheme,
    shared: &Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    mut cut: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = Tracked { inner: io, activity: activity.clone() };
    let service = {
        let (shared, activity) = (shared.clone(), activity.clone());
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let (endpoint, activity) = (shared.endpoint.clone(), activity.clone());
            let req = poem::Request::from((req, local.clone(), remote.clone(), scheme.clone()));
            async move {
                let _running = Running::begin(&activity);
                let resp = endpoint.call(req).await.unwrap_or_else(|e| e.into_response());
                Ok::<_, Infallible>(hyper::Response::<_>::from(resp))
            }
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(shared.limits.header_read)
        .max_buf_size(PROTOCOL_HEAD_BYTES);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(u32::try_from(PROTOCOL_HEAD_BYTES).unwrap_or(u32::MAX))
        .max_concurrent_streams(128)
        .max_pending_accept_reset_streams(20);
    let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(conn);
    loop {
        let (deadline, reason) = activity.deadline(&shared.limits);
        tokio::select! {
            // The watchdog first: when it and hyper's own timeout are due together, the reason is counted.
            biased;
            _ = tokio::time::sleep_until(deadline) => {
                if activity.deadline(&shared.limits).0 <= Instant::now() {
                    shared.count(reason);
                    tracing::debug!(server = shared.name, reason = reason.label(), "connection closed");
                    return;
                }
            }
            _ = shutdown.wait_for(|s| *s) => break,
            _ = conn.as_mut() => return,
        }
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = cut.wait_for(|c| *c) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_address: usize, total: usize) -> Limits {
        Limits {
            handshake: Duration::from_secs(1),
            header_read: Duration::from_secs(1),
            idle: Duration::from_secs(1),
            per_address,
            total,
            exempt: vec!["10.0.0.9".parse().unwrap()],
        }
    }

    #[test]
    fn gate_caps_per_address_and_in_all_and_frees_on_drop() {
        let gate = Arc::new(Gate::default());
        let l = limits(2, 3);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let p1 = gate.admit(a, &l).unwrap();
        let _p2 = gate.admit(a, &l).unwrap();
        assert_eq!(gate.admit(a, &l).unwrap_err(), Reason::PerAddress);
        let _p3 = gate.admit(b, &l).unwrap();
        assert_eq!(gate.admit(b, &l).unwrap_err(), Reason::Total);
        drop(p1);
        assert_eq!(gate.open(), 2);
        let _p4 = gate.admit(a, &l).unwrap();
        assert_eq!(gate.open(), 3);
    }

    #[test]
    fn trusted_proxies_skip_the_per_address_cap() {
        let gate = Arc::new(Gate::default());
        let l = limits(1, 10);
        let proxy: IpAddr = "10.0.0.9".parse().unwrap();
        let held: Vec<Permit> = (0..5).map(|_| gate.admit(proxy, &l).unwrap()).collect();
        assert_eq!(held.len(), 5);
    }
}
