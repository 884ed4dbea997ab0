//! ACME certificates through rustls-acme (TLS-ALPN-01). The ACME account key and
//! the issued certificate with its private key are cached in the store, sealed
//! with the master key, so a restart reuses them without asking the CA again.
use super::tls::{TlsError, TlsSetup, server_config};
use crate::config::AcmeConfig;
use crate::secrets::SharedKeyring;
use crate::store::{Store, StoreError, SystemContext, Task};
use async_trait::async_trait;
use futures_util::StreamExt as _;
use rustls_acme::{AccountCache, CertCache};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;

const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// The directory URL for `tls.acme.directory`.
pub fn directory_url(directory: &str) -> &str {
    match directory {
        "letsencrypt" => LETS_ENCRYPT,
        "letsencrypt-staging" => LETS_ENCRYPT_STAGING,
        url => url,
    }
}

/// rustls-acme's cache, backed by sealed system secrets in the store.
pub struct StoreCache {
    store: Arc<Store>,
    keys: SharedKeyring,
}

fn cache_name(kind: &str, parts: &[String], directory: &str) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.update(directory.as_bytes());
    format!("acme.{kind}.{}", hex::encode(&h.finalize()[..12]))
}

impl StoreCache {
    fn load(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let keyring = self.keys.current();
        Ok(self.store.read(|r| r.get_system_secret(&keyring, name))?.map(|s| s.expose().to_vec()))
    }

    fn save(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let ctx = SystemContext::new(Task::Acme);
        self.store.write(|w| w.put_system_secret(&ctx, &self.keys, name, value))
    }
}

#[async_trait]
impl CertCache for StoreCache {
    type EC = String;
    async fn load_cert(&self, domains: &[String], directory_url: &str) -> Result<Option<Vec<u8>>, String> {
        self.load(&cache_name("cert", domains, directory_url)).map_err(|e| e.to_string())
    }
    async fn store_cert(&self, domains: &[String], directory_url: &str, cert: &[u8]) -> Result<(), String> {
        self.save(&cache_name("cert", domains, directory_url), cert).map_err(|e| e.to_string())
    }
}

#[async_trait]
impl AccountCache for StoreCache {
    type EA = String;
    async fn load_account(&self, contact: &[String], directory_url: &str) -> Result<Option<Vec<u8>>, String> {
        self.load(&cache_name("account", contact, directory_url)).map_err(|e| e.to_string())
    }
    async fn store_account(&self, contact: &[String], directory_url: &str, account: &[u8]) -> Result<(), String> {
        self.save(&cache_name("account", contact, directory_url), account).map_err(|e| e.to_string())
    }
}

fn client_config_with_roots(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let pem = std::fs::read(ca_file)
        .map_err(|e| TlsError::Read { path: ca_file.display().to_string(), reason: e.to_string() })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        let cert = cert.map_err(|e| TlsError::Read { path: ca_file.display().to_string(), reason: e.to_string() })?;
        roots.add(cert).map_err(|e| TlsError::Acme(format!("{}: {e}", ca_file.display())))?;
    }
    if roots.is_empty() {
        return Err(TlsError::Empty { path: ca_file.display().to_string(), what: "CA certificate" });
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Acme(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// Starts ordering and renewing certificates; returns the TLS setup that serves them.
pub fn start(cfg: &AcmeConfig, store: Arc<Store>, keys: SharedKeyring) -> Result<TlsSetup, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut acme = rustls_acme::AcmeConfig::new_with_provider(&cfg.domains, provider.clone())
        .contact(&cfg.contact)
        .directory(directory_url(&cfg.directory));
    if let Some(ca) = &cfg.ca_file {
        acme = acme.client_tls_config(client_config_with_roots(ca)?);
    }
    let mut state = acme.cache(StoreCache { store, keys }).state();
    let resolver = state.resolver();
    let challenge = state.challenge_rustls_config_with_provider(provider);
    let domains = cfg.domains.clone();
    let renewal = tokio::spawn(async move {
        while let Some(event) = state.next().await {
            match event {
                Ok(ok) => tracing::info!(event = ?ok, domains = ?domains, "acme"),
                Err(err) => {
                    tracing::warn!(error = ?err, domains = ?domains, "acme: could not obtain or renew the certificate; will retry")
                }
            }
        }
    });
    Ok(TlsSetup {
        config: Arc::new(server_config(resolver)?),
        challenge: Some(challenge),
        reloadable: None,
        renewal: Some(renewal.abort_handle()),
    })
}
