//! TLS for the main listener: one rustls server config (TLS 1.3 preferred,
//! 1.2 minimum, h2 and http/1.1), whose certificate comes from one of:
//!
//! - `self-signed`: generated once for `tls.self_signed_hosts`, kept sealed in the store;
//! - `files`: PEM files, re-read on SIGHUP (open connections keep their certificate);
//! - `acme`: rustls-acme, TLS-ALPN-01, account and certificate cached sealed in the store.
//!
//! The handshake ([`accept`]) runs on the connection's task, never in the
//! accept loop, and under `limits.tls_handshake_seconds` (see `http::serve`),
//! so a slow client can neither stall other connections nor hold its own open.
use crate::config::{Config, TlsMode};
use crate::secrets::SharedKeyring;
use crate::store::{Store, SystemContext, Task};
use crate::swap::Swap;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::io;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

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

/// Completes the TLS handshake of one accepted connection (on its own task,
/// under the caller's timeout). An ACME TLS-ALPN-01 validation is answered
/// and closed here.
pub async fn accept<S>(stream: S, setup: TlsSetup) -> io::Result<tokio_rustls::server::TlsStream<S>>
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
