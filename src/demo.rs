//! `docket demo`: a zero-configuration instance on localhost with a
//! self-signed certificate, a demo firm, and an API token printed for curl.
//! Its backups go under its data dir (`<data_dir>/backups`).
use crate::app::{self, Failure, Instance};
use crate::auth::tokens::TokenError;
use crate::auth::{Role, local, tokens};
use crate::clio::connection;
use crate::clio::fake::FakeClio;
use crate::clock::Clock;
use crate::config::{Layers, LogFormat};
use crate::secrets::Secret;
use crate::secrets::{Keyring, default_key_path};
use crate::store::{OrgId, OrgTask, OrgTaskContext, Store};
use crate::telemetry;
use std::path::PathBuf;
use toml::Value;

const DEMO_SLUG: &str = "demo";
/// The demo firm is the same at every start.
const DEMO_SEED: u64 = 2026;
const DEMO_ADMIN: &str = "admin@demo.docket.test";
const DEMO_TOKEN: &str = "demo token";

/// A fresh 30-day admin token; the previous demo tokens are revoked.
fn demo_token(store: &Store, ctx: &OrgTaskContext, org: OrgId) -> Result<Secret, TokenError> {
    let scope = ctx.org_scope(org);
    store.write(|w| {
        for old in tokens::list(w, &scope)?.into_iter().filter(|t| t.name == DEMO_TOKEN && t.user.is_none()) {
            tokens::revoke(w, &scope, &old.id)?;
        }
        Ok(())
    })?;
    Ok(tokens::create_service(store, ctx, org, DEMO_TOKEN, Role::Admin.as_str(), Some(30))?.0)
}

/// Builds the demo configuration: defaults and `DOCKET_*`, with these flags on top.
pub fn config(data_dir: &std::path::Path, https_port: u16, http_port: u16) -> Result<crate::config::Config, Failure> {
    let listen = |port: u16| Value::Array(vec![Value::String(format!("127.0.0.1:{port}"))]);
    let loaded = Layers::new()
        .env(std::env::vars())?
        .flag("data_dir", Value::String(data_dir.display().to_string()), "data-dir")
        .flag("tls.mode", Value::String("self-signed".into()), "demo")
        .flag("log.format", Value::String("human".into()), "demo")
        .flag("server.listen", listen(https_port), "https-port")
        .flag("server.redirect_listen", listen(http_port), "http-port")
        .flag("backup.dir", Value::String(data_dir.join("backups").display().to_string()), "demo")
        .build()?;
    Ok(loaded.config)
}

/// Points the demo firm at a freshly started fake Clio and completes the OAuth
/// grant as the firm's admin would in a browser.
async fn connect_demo(instance: &Instance, fake: &FakeClio, org: OrgId) -> Result<(), String> {
    let scope = OrgTaskContext::new(OrgTask::Demo).org_scope(org);
    let secret = Secret::new(fake.client_secret.clone());
    let base = fake.base_url();
    instance
        .store
        .write(|w| {
            connection::forget(w, &scope)?;
            connection::configure(w, &scope, &instance.keys, "custom", Some(&base), &fake.client_id, &secret, None)
        })
        .map_err(|e| e.to_string())?;
    let redirect = "https://localhost/api/v1/clio/callback";
    let code = fake.approve(redirect);
    let http = crate::clio::client::http_client(std::time::Duration::from_secs(30))?;
    connection::complete(&instance.store, &instance.keys, &scope, &http, &code, redirect)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

pub async fn run(data_dir: PathBuf, https_port: u16, http_port: u16, records: u64) -> Result<(), Failure> {
    let config = config(&data_dir, https_port, http_port)?;
    telemetry::init_logging(LogFormat::Human, &config.log.level);
    let fail = |message: String| Failure { code: 1, message };
    let key_path = config.keys.master_key_file.clone().unwrap_or_else(|| default_key_path(&config.data_dir));
    if !key_path.exists() {
        Keyring::generate(&key_path).map_err(|e| fail(e.to_string()))?;
    }
    let instance = Instance::open(config, Clock::system())?;
    let ctx = OrgTaskContext::new(OrgTask::Demo);
    let org = match instance.store.org_by_slug(DEMO_SLUG).map_err(|e| fail(e.to_string()))? {
        Some(org) => org,
        None => crate::control::create_org(&instance.store, &ctx, DEMO_SLUG, "Demo Law LLP")
            .map_err(|e| fail(e.to_string()))?,
    };
    let token = demo_token(&instance.store, &ctx, org.id).map_err(|e| fail(e.to_string()))?;
    let admin = local::create_admin(&instance.store, &instance.keys, &ctx, org.id, DEMO_ADMIN)
        .map_err(|e| fail(e.to_string()))?;
    let fake =
        FakeClio::start(DEMO_SEED, records).await.map_err(|e| fail(format!("cannot start the fake Clio: {e}")))?;
    connect_demo(&instance, &fake, org.id)
        .await
        .map_err(|e| fail(format!("cannot connect the demo firm to the fake Clio: {e}")))?;
    let running = app::start(instance).await?;
    let port = running.main_addrs.first().map_or(https_port, |a| a.port());
    let login: String =
        crate::control::describe_admin(&admin, DEMO_SLUG).lines().map(|l| format!("    {l}\n")).collect();
    println!(
        "\n  docket demo is running\n\n  web app:   https://localhost:{port}/   (self-signed certificate: accept it once)\n  API docs:  https://localhost:{port}/api/docs\n  API token: {}\n\n  curl -k -H 'Authorization: Bearer {}' https://localhost:{port}/api/v1/org\n\n  Clio data: {records} records of the built-in fake Clio at {}, syncing in the background\n  (progress: curl -k -H 'Authorization: Bearer …' https://localhost:{port}/api/v1/clio/sync)\n\n  one-time admin login (new at every demo start):\n{login}\n  data: {}   stop with Ctrl-C\n",
        token.expose(),
        token.expose(),
        fake.base_url(),
        data_dir.display()
    );
    app::serve_until_signal(running).await?;
    Ok(())
}
