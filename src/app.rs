//! Wiring: open the instance (store + master key), build the shared state,
//! start the listeners and the control socket, and stop them all gracefully.
use crate::clock::Clock;
use crate::config::Config;
use crate::http::{self, Listeners, tls::TlsSetup};
use crate::lifecycle::keys::{self, KeyError};
use crate::secrets::SharedKeyring;
use crate::state::AppState;
use crate::store::{Store, StoreError};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error("cannot create the control socket {path}: {reason}")]
    Control { path: String, reason: String },
    #[error("{0}\n  fix: correct the identity provider's ca_file in auth.oidc")]
    Identity(String),
}

/// A failure with its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl From<crate::config::ConfigError> for Failure {
    fn from(e: crate::config::ConfigError) -> Self {
        Failure { code: 2, message: e.to_string() }
    }
}

impl From<AppError> for Failure {
    fn from(e: AppError) -> Self {
        Failure { code: 1, message: e.to_string() }
    }
}

/// An opened instance: its store and master key.
pub struct Instance {
    pub config: Config,
    pub store: Arc<Store>,
    pub keys: SharedKeyring,
}

impl Instance {
    /// Opens the store in the data dir and proves the master key opens it.
    pub fn open(config: Config, clock: Clock) -> Result<Instance, AppError> {
        let store = Store::open(&config.store_path(), clock)?;
        let keyring = keys::open_keyring(&config, &store)?;
        Ok(Instance { config, store: Arc::new(store), keys: SharedKeyring::new(keyring) })
    }
}

/// A running server.
pub struct Running {
    pub state: Arc<AppState>,
    pub main_addrs: Vec<SocketAddr>,
    pub redirect_addrs: Vec<SocketAddr>,
    tls: Option<TlsSetup>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<Result<(), http::HttpError>>,
    control: tokio::task::JoinHandle<()>,
    sweeper: tokio::task::JoinHandle<()>,
}

/// Starts serving `instance`; returns once every listener is bound.
pub async fn start(instance: Instance) -> Result<Running, AppError> {
    let Instance { config, store, keys } = instance;
    let clock = store.clock().clone();
    let tls = TlsSetup::from_config(&config, &store, &keys).map_err(http::HttpError::from)?;
    let listeners = Listeners::bind(&config).await?;
    let (main_addrs, redirect_addrs) = (listeners.main_addrs(), listeners.redirect_addrs());
    let socket = config.control_socket_path();
    let control = crate::control::listen(&socket, store.clone(), keys.clone())
        .map_err(|e| AppError::Control { path: socket.display().to_string(), reason: e.to_string() })?;
    let state = AppState::new(config, store, keys, clock).map_err(AppError::Identity)?;
    let (shutdown, rx) = watch::channel(false);
    let server = tokio::spawn(http::run(state.clone(), listeners, tls.clone(), rx));
    let sweeper = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                state.limits.forget_idle();
                if let Err(e) = crate::auth::sessions::sweep(&state.store, state.timeouts) {
                    tracing::warn!(error = %e, "could not delete expired sessions");
                }
            }
        })
    };
    state.sync.start_all();
    tracing::info!(listen = ?main_addrs, redirect = ?redirect_addrs, tls = ?state.config.tls.mode, "docket is serving");
    Ok(Running { state, main_addrs, redirect_addrs, tls, shutdown, server, control, sweeper })
}

impl Running {
    /// Re-reads TLS files (SIGHUP).
    pub fn reload(&self) {
        if let Some(tls) = &self.tls {
            match tls.reload(&self.state.config) {
                Ok(true) => tracing::info!("reloaded the TLS certificate"),
                Ok(false) => tracing::info!("SIGHUP: nothing to reload in this TLS mode"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS reload failed; still serving the previous certificate")
                }
            }
        }
    }

    /// Stops accepting, lets in-flight requests finish, then returns.
    pub async fn stop(self) -> Result<(), AppError> {
        let _ = self.shutdown.send(true);
        self.control.abort();
        self.sweeper.abort();
        self.state.sync.stop_all();
        if let Some(tls) = &self.tls {
            tls.stop();
        }
        let _ = std::fs::remove_file(self.state.config.control_socket_path());
        let result = match self.server.await {
            Ok(r) => r.map_err(AppError::from),
            Err(e) => Err(AppError::Http(http::HttpError::Serve(e.to_string()))),
        };
        tracing::info!("docket stopped");
        result
    }
}

/// Tells systemd we are ready (no effect outside systemd).
pub fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt as _;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
    } else {
        socket.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// Serves until SIGTERM or SIGINT; SIGHUP reloads TLS files.
pub async fn serve_until_signal(running: Running) -> Result<(), AppError> {
    use tokio::signal::unix::{SignalKind, signal};
    notify_systemd("READY=1");
    let (mut term, mut int, mut hup) =
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup())) {
            (Ok(t), Ok(i), Ok(h)) => (t, i, h),
            _ => {
                tracing::error!("cannot install signal handlers");
                return running.stop().await;
            }
        };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => running.reload(),
        }
    }
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    notify_systemd("STOPPING=1");
    running.stop().await
}
