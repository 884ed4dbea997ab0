//! TLS for the main listener: one rustls server config (TLS 1.3 preferred,
//! 1.2 minimum, h2 and http/1.1), whose certificate comes from one of:
//!
//! - `self-signed`: generated once for `tls.self_signed_hosts`, kept sealed in the store;
//! - `files`: PEM files, re-read on SIGHUP (open connections keep their certificate);
//! - `acme`: rustls-acme, TLS-ALPN-01, account and certificate cached sealed in the store.
//!
//! The handshake runs lazily on the connection's task, never in the accept loop,
//! so a slow client cannot stall other connections.
use crate::config::{Config, TlsMode};
use crate::secrets::SharedKeyring;
use crate::store::{Store, SystemContext, Task};
use crate::swap::Swap;
use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What went wrong setting up TLS, worded for the sysadmin.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "cannot read {path}: {reason}\n  fix: check the path in tls.cert_file / tls.key_file and that the docket user may read it"
    )]
    Read { path: String, reason: String },
    #[error("{path} holds no {what}\n  fix: give a PEM file with {what}")]
    Empty { path: String, what: &'static str },
    #[error(
        "the certificate and key cannot be used: {0}\n  fix: check that the key matches the certificate and is RSA, ECDSA or Ed25519"
    )]
    Key(String),
    #[error("cannot generate the self-signed certificate: {0}")]
    Generate(String),
    #[error("ACME setup failed: {0}")]
    Acme(String),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate that can be swapped while the server runs.
#[derive(Debug)]
pub struct ReloadableCert(Swap<CertifiedKey>);

impl ReloadableCert {
    pub fn new(key: CertifiedKey) -> Self {
        ReloadableCert(Swap::new(key))
    }

    pub fn replace(&self, key: CertifiedKey) {
        self.0.replace(key);
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

/// Builds a [`CertifiedKey`] from PEM text.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_name: &str,
    key_name: &str,
) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Read { path: cert_name.into(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Empty { path: cert_name.into(), what: "certificate" });
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| TlsError::Read { path: key_name.into(), reason: e.to_string() })?
        .ok_or(TlsError::Empty { path: key_name.into(), what: "private key" })?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| TlsError::Key(e.to_string()))
}

/// Reads the `files`-mode certificate and key.
pub fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| TlsError::Read { path: p.display().to_string(), reason: e.to_string() })
    };
    certified_key_from_pem(&read(cert)?, &read(key)?, &cert.display().to_string(), &key.display().to_string())
}

const SELF_SIGNED_NAME: &str = "tls.self_signed";

/// The self-signed certificate for `hosts`: loaded from the store, or generated
/// once and kept sealed there (so browsers see the same certificate each start).
pub fn self_signed(store: &Store, keys: &SharedKeyring, hosts: &[String]) -> Result<CertifiedKey, TlsError> {
    let keyring = keys.current();
    if let Some(stored) = store.read(|r| r.get_system_secret(&keyring, SELF_SIGNED_NAME))?
        && let Ok(pair) = serde_json::from_slice::<(String, String, Vec<String>)>(stored.expose())
        && pair.2 == hosts
    {
        return certified_key_from_pem(pair.0.as_bytes(), pair.1.as_bytes(), "stored certificate", "stored key");
    }
    let generated =
        rcgen::generate_simple_self_signed(hosts.to_vec()).map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert_pem = generated.cert.pem();
    let key_pem = generated.key_pair.serialize_pem();
    let bundle = serde_json::to_vec(&(&cert_pem, &key_pem, hosts)).map_err(|e| TlsError::Generate(e.to_string()))?;
    let ctx = SystemContext::new(Task::TlsSelfSigned);
    store.write(|w| w.put_system_secret(&ctx, keys, SELF_SIGNED_NAME, &bundle))?;
    tracing::info!(hosts = ?hosts, "generated a self-signed certificate");
    certified_key_from_pem(cert_pem.as_bytes(), key_pem.as_bytes(), "generated certificate", "generated key")
}

/// The TLS side of the main listener, ready to wrap TCP acceptors.
#[derive(Clone)]
pub struct TlsSetup {
    pub config: Arc<ServerConfig>,
    /// For `acme`: the config that answers TLS-ALPN-01 validation handshakes.
    pub challenge: Option<Arc<ServerConfig>>,
    /// For `self-signed` and `files`: the certificate SIGHUP replaces.
    pub reloadable: Option<Arc<ReloadableCert>>,
    /// For `acme`: the task that orders and renews certificates.
    pub renewal: Option<tokio::task::AbortHandle>,
}

/// A rustls server config for `resolver`: TLS 1.3 and 1.2 only, h2 and http/1.1.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Key(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

impl TlsSetup {
    /// Prepares TLS for the configured mode; `None` when TLS is off. In `acme`
    /// mode this also spawns the task that orders and renews certificates.
    pub fn from_config(
        config: &Config,
        store: &Arc<Store>,
        keys: &SharedKeyring,
    ) -> Result<Option<TlsSetup>, TlsError> {
        let reloadable = |key: CertifiedKey| -> Result<Option<TlsSetup>, TlsError> {
            let cert = Arc::new(ReloadableCert::new(key));
            Ok(Some(TlsSetup {
                config: Arc::new(server_config(cert.clone())?),
                challenge: None,
                reloadable: Some(cert),
                renewal: None,
            }))
        };
        match config.tls.mode {
            TlsMode::Off => Ok(None),
            TlsMode::SelfSigned => reloadable(self_signed(store, keys, &config.tls.self_signed_hosts)?),
            TlsMode::Files => {
                let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) else {
                    return Err(TlsError::Acme("tls.cert_file and tls.key_file are required".into()));
                };
                reloadable(load_files(cert, key)?)
            }
            TlsMode::Acme => super::acme::start(&config.tls.acme, store.clone(), keys.clone()).map(Some),
        }
    }

    /// Stops background work (the ACME renewal task).
    pub fn stop(&self) {
        if let Some(task) = &self.renewal {
            task.abort();
        }
    }

    /// Re-reads the certificate files (mode `files`); other modes ignore it.
    pub fn reload(&self, config: &Config) -> Result<bool, TlsError> {
        match (&self.reloadable, config.tls.mode, &config.tls.cert_file, &config.tls.key_file) {
            (Some(cert), TlsMode::Files, Some(c), Some(k)) => {
                cert.replace(load_files(c, k)?);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Wraps an acceptor so each connection is a TLS stream.
pub struct TlsAcceptor<A> {
    inner: A,
    setup: TlsSetup,
}

impl<A> TlsAcceptor<A> {
    pub fn new(inner: A, setup: TlsSetup) -> Self {
        TlsAcceptor { inner, setup }
    }
}

type Handshake<S> = Pin<Box<dyn Future<Output = io::Result<tokio_rustls::server::TlsStream<S>>> + Send>>;

async fn handshake<S>(stream: S, setup: TlsSetup) -> io::Result<tokio_rustls::server::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
    if let Some(challenge) = setup.challenge
        && rustls_acme::is_tls_alpn_challenge(&start.client_hello())
    {
        let mut tls = start.into_stream(challenge).await?;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
        tracing::info!("answered an ACME TLS-ALPN-01 validation");
        return Err(io::Error::other("ACME validation connection closed"));
    }
    start.into_stream(setup.config).await
}

impl<A> Acceptor for TlsAcceptor<A>
where
    A: Acceptor,
    A::Io: 'static,
{
    type Io = LazyTls<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (stream, local, remote, _) = self.inner.accept().await?;
        let fut: Handshake<A::Io> = Box::pin(handshake(stream, self.setup.clone()));
        Ok((LazyTls::Handshaking(fut), local, remote, Scheme::HTTPS))
    }
}

/// A TLS stream whose handshake completes on first use.
pub enum LazyTls<S> {
    Handshaking(Handshake<S>),
    Ready(Box<tokio_rustls::server::TlsStream<S>>),
    Failed,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> LazyTls<S> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut tokio_rustls::server::TlsStream<S>>> {
        loop {
            match self {
                LazyTls::Handshaking(fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready(Ok(s)) => *self = LazyTls::Ready(Box::new(s)),
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        *self = LazyTls::Failed;
                        return Poll::Ready(Err(e));
                    }
                    Poll::Pending => return Poll::Pending,
                },
                LazyTls::Ready(s) => return Poll::Ready(Ok(s)),
                LazyTls::Failed => {
                    return Poll::Ready(Err(io::Error::other("TLS handshake failed")));
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for LazyTls<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(s)) => Pin::new(s).poll_read(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for LazyTls<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(s)) => Pin::new(s).poll_write(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(s)) => Pin::new(s).poll_flush(cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(s)) => Pin::new(s).poll_shutdown(cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}
