//! Shared test helpers: an in-process server on random loopback ports, a test
//! CA, HTTP clients, and a runner for the real `docket` binary.
#![allow(dead_code)]

use docket::app::{self, Instance, Running};
use docket::auth::grant::Grantor;
use docket::auth::tokens::NewToken;
use docket::auth::users::{self, NewMember};
use docket::auth::{Role, tokens};
use docket::clock::Clock;
use docket::config::{Config, TlsMode};
use docket::secrets::{Keyring, default_key_path};
use docket::store::{OrgTask, OrgTaskContext};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A CA and a leaf certificate for `localhost` / 127.0.0.1 signed by it.
pub struct TestCa {
    pub ca_pem: String,
    pub leaf_pem: String,
    pub leaf_key_pem: String,
}

impl TestCa {
    pub fn new(common_name: &str) -> TestCa {
        Self::for_names(common_name, &["localhost", "127.0.0.1"])
    }

    /// A CA and a leaf certificate for `names`.
    pub fn for_names(common_name: &str, names: &[&str]) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, format!("{common_name} test CA"));
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        leaf_params.distinguished_name.push(DnType::CommonName, common_name);
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        TestCa { ca_pem: ca.pem(), leaf_pem: leaf.pem(), leaf_key_pem: leaf_key.serialize_pem() }
    }

    /// Writes cert.pem, key.pem and ca.pem into `dir`.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let (c, k, ca) = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("ca.pem"));
        std::fs::write(&c, &self.leaf_pem).unwrap();
        std::fs::write(&k, &self.leaf_key_pem).unwrap();
        std::fs::write(&ca, &self.ca_pem).unwrap();
        (c, k, ca)
    }
}

/// A test configuration: self-signed TLS on random loopback ports.
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config { data_dir: data_dir.to_path_buf(), ..Default::default() };
    config.tls.mode = TlsMode::SelfSigned;
    config.server.listen = vec!["127.0.0.1:0".parse().unwrap()];
    config.server.redirect_listen = Some(vec!["127.0.0.1:0".parse().unwrap()]);
    config.server.shutdown_grace_seconds = 5;
    config
}

/// A running in-process server with two orgs and tokens of several roles.
pub struct TestServer {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub redirect_base: String,
    pub admin_token: String,
    pub staff_token: String,
    pub auditor_token: String,
    pub other_org_token: String,
    /// A service token of `smith-jones` for each built-in role.
    pub role_tokens: std::collections::BTreeMap<Role, String>,
    /// A personal token of `owner@smith-jones.test`, the firm's owner member.
    pub member_token: String,
    pub member_id: String,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&dir.path().join("data"));
        adjust(&mut config);
        let key = default_key_path(&config.data_dir);
        if !key.exists() {
            Keyring::generate(&key).unwrap();
        }
        let instance = Instance::open(config, Clock::system()).unwrap();
        let ctx = OrgTaskContext::new(OrgTask::Test);
        let store = &instance.store;
        let org = |slug: &str, name: &str| match store.org_by_slug(slug).unwrap() {
            Some(o) => o,
            None => docket::control::create_org(store, &ctx, slug, name).unwrap(),
        };
        let (firm, other) = (org("smith-jones", "Smith & Jones LLP"), org("other-firm", "Other Firm"));
        let token = |org, role: Role| {
            tokens::create_service(store, &ctx, org, "test", role.as_str(), None).unwrap().0.expose().to_string()
        };
        let role_tokens: std::collections::BTreeMap<Role, String> =
            Role::ALL.iter().map(|r| (*r, token(firm.id, *r))).collect();
        let (admin_token, staff_token, auditor_token, other_org_token) = (
            role_tokens[&Role::Admin].clone(),
            role_tokens[&Role::Staff].clone(),
            role_tokens[&Role::Auditor].clone(),
            token(other.id, Role::Owner),
        );
        let owner =
            NewMember { email: "owner@smith-jones.test".into(), name: "Olive Owner".into(), role: "owner".into() };
        let scope = ctx.org_scope(firm.id);
        let member = store
            .write(|w| match users::find_by_email(w, &scope, &owner.email)? {
                Some(found) => Ok(found),
                None => users::create(w, &scope, &owner, &Grantor::operator()),
            })
            .unwrap();
        let personal = NewToken {
            name: "owner's token".into(),
            role: String::new(),
            user: Some(member.id.clone()),
            scopes: vec![],
            valid_days: None,
        };
        let member_token =
            store.write(|w| tokens::create(w, &scope, &personal, &Grantor::operator())).unwrap().0.expose().to_string();
        let https = instance.config.tls.mode != TlsMode::Off;
        let running = app::start(instance).await.unwrap();
        let scheme = if https { "https" } else { "http" };
        let base = format!("{scheme}://localhost:{}", running.main_addrs[0].port());
        let redirect_base =
            running.redirect_addrs.first().map(|a| format!("http://localhost:{}", a.port())).unwrap_or_default();
        TestServer {
            running: Some(running),
            dir,
            base,
            redirect_base,
            admin_token,
            staff_token,
            auditor_token,
            other_org_token,
            role_tokens,
            member_token,
            member_id: member.id,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET `path` with a bearer token: the status and the JSON body (`Null` if none).
    pub async fn get_json(&self, token: &str, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let r = client().get(self.url(path)).bearer_auth(token).send().await.unwrap();
        (r.status(), r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// POST a JSON body to `path` with a bearer token: the status and the JSON body.
    pub async fn post_json(
        &self,
        token: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let r = client().post(self.url(path)).bearer_auth(token).json(&body).send().await.unwrap();
        (r.status(), r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// The firm's audit events whose action is or starts with `action`, oldest first.
    pub async fn audit_events(&self, action: &str) -> Vec<serde_json::Value> {
        let (_, body) =
            self.get_json(&self.auditor_token, &format!("/api/v1/audit/events?action={action}&limit=500")).await;
        body["items"].as_array().cloned().unwrap_or_default()
    }

    /// A personal token (no scopes) of member `user` of `smith-jones`, made in
    /// the store by the operator: test setup, not a path under test.
    pub fn personal_token(&self, user: &str) -> String {
        let store = &self.running.as_ref().unwrap().state.store;
        let org = store.org_by_slug("smith-jones").unwrap().unwrap();
        let scope = OrgTaskContext::new(OrgTask::Test).org_scope(org.id);
        let new = NewToken {
            name: "test".into(),
            role: String::new(),
            user: Some(user.into()),
            scopes: vec![],
            valid_days: None,
        };
        store.write(|w| tokens::create(w, &scope, &new, &Grantor::operator())).unwrap().0.expose().to_string()
    }

    /// Stops the server gracefully; returns its directory, still on disk, once
    /// the store is free (aborted tasks let go of it when the runtime drops them).
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            let store = r.state.config.store_path();
            r.stop().await.unwrap();
            released(&store).await;
        }
        self.dir
    }
}

/// An HTTPS client that accepts the self-signed certificate and never follows redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A client that trusts only `ca_pem`.
pub fn client_trusting(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Path of the built `docket` binary.
pub fn docket_bin() -> &'static str {
    env!("CARGO_BIN_EXE_docket")
}

/// Runs the binary to completion with `args` and extra env; returns (code, stdout, stderr).
pub fn run_docket(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = std::process::Command::new(docket_bin()).args(args).envs(env.iter().copied()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` until it returns true or `within` passes.
pub async fn eventually(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Whether CI asked for every external component to be present.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A raw TLS client that trusts only `ca_pem` (for tests below HTTP).
pub fn tls_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// Waits until no task of a stopped server holds the store at `path`.
async fn released(path: &std::path::Path) {
    for _ in 0..200 {
        match docket::store::Store::open(path, docket::clock::Clock::system()) {
            Ok(store) => return drop(store),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("the stopped server never released its store {}", path.display());
}

/// Provisions the instance of the config file `cfg` through the CLI, as an
/// operator would: the master key, the org `acme`, and an admin service
/// token of it (returned).
pub fn provision_acme(cfg: &str) -> String {
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--config", cfg]);
        run_docket(&all, &[])
    };
    assert_eq!(cli(&["key", "generate"]).0, 0);
    assert_eq!(cli(&["org", "create", "--slug", "acme", "--name", "Acme"]).0, 0);
    let (code, out, err) = cli(&["token", "create", "--org", "acme", "--role", "admin", "--name", "t"]);
    assert_eq!(code, 0, "{err}");
    out.lines().next().unwrap_or_default().trim().to_string()
}
