//! Layered configuration: built-in defaults < TOML file < `DOCKET_*` environment
//! < command-line flags, with the provenance of every key kept so an error can
//! say where a bad value came from.
//!
//! Rules a sysadmin can rely on:
//! - an unknown key (in the file or as a `DOCKET_*` variable) is an error naming it;
//! - `DOCKET_A__B=v` sets `a.b` (`__` nests, a single `_` stays part of the name);
//! - a secret key `k` may instead be given as `k_file` (a path whose content is the
//!   value); setting both is an error;
//! - every error names the key, where it came from, and the fix.
use crate::secrets::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// Environment variables with the `DOCKET_` prefix that are not config keys.
const NON_CONFIG_ENV: &[&str] = &["DOCKET_CONFIG", "DOCKET_LOG"];

/// Keys whose values are secrets: they may come from `<key>_file` and are never printed.
const SECRET_KEYS: &[&str] = &["metrics.token", "backup.offsite.secret_access_key"];
// `auth.oidc[].client_secret(_file)` are resolved per provider (see `resolve_oidc_secrets`).

/// The whole configuration of one docket instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the store, keys and certificates live.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub keys: KeysConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    pub clio: ClioConfig,
    pub maintenance: MaintenanceConfig,
    pub backup: BackupConfig,
    pub webhooks: WebhooksConfig,
}

/// Outbound webhooks (see `outbound`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// A PEM bundle of CAs trusted for endpoints besides the system roots
    /// (an internal CA).
    pub ca_file: Option<PathBuf>,
    /// Allow endpoints on private, loopback and link-local addresses
    /// (off: a firm's admin cannot make the appliance call its own network).
    pub allow_private_networks: bool,
    /// Seconds before the first retry; each later wait is four times longer (at most 6 hours).
    pub retry_base_seconds: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig { ca_file: None, allow_private_networks: false, retry_base_seconds: 15 }
    }
}

/// Encrypted full backups (see `lifecycle::backup`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Where backups are written: a directory on another disk or a mounted
    /// share. Unset: `<data_dir>/backups`, with a warning (see `Config::backup_dir`).
    pub dir: Option<PathBuf>,
    /// Offline age public keys (`age1…`) every backup is also sealed to, so a
    /// backup restores on a new machine with only one of their identities.
    pub recipients: Vec<String>,
    /// When to take a backup (cron: 6 fields, seconds first, UTC).
    pub schedule: Schedule,
    /// When to prove the newest backup restores.
    pub verify_schedule: Schedule,
    /// Newest backup of each of the last N days kept.
    pub keep_daily: u32,
    /// Newest backup of each of the last N ISO weeks kept.
    pub keep_weekly: u32,
    /// Seconds within which a commit is shipped into a journal segment
    /// beside the backups (the recovery point objective).
    pub ship_interval: u64,
    /// Days back any instant can be restored (`restore --at`): backups and
    /// segments are kept for this window whatever manual backups are taken.
    pub pitr_days: u32,
    /// Off-site copies in S3-compatible object storage (see `lifecycle::offsite`).
    pub offsite: OffsiteConfig,
}

/// `[backup.offsite]`: every sealed file of `backup.dir` is also uploaded to
/// an S3-compatible bucket; off unless `url` is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OffsiteConfig {
    /// `s3://bucket/prefix` (the prefix is optional).
    pub url: Option<String>,
    /// The S3 endpoint for a service other than AWS (MinIO, Backblaze B2, Wasabi,
    /// Ceph, Garage), e.g. `https://s3.eu-central-003.backblazeb2.com`.
    pub endpoint: Option<String>,
    /// The bucket's region (default `us-east-1`).
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    /// A secret: prefer `secret_access_key_file` or the systemd credential
    /// `docket-offsite-secret-key` (`LoadCredentialEncrypted=`).
    pub secret_access_key: Option<Secret>,
    /// Plain HTTP to the endpoint: refused unless the endpoint is loopback (tests).
    pub allow_http: bool,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            dir: None,
            recipients: vec![],
            schedule: Schedule::builtin("0 0 2 * * *"),
            verify_schedule: Schedule::builtin("0 0 4 * * *"),
            keep_daily: 7,
            keep_weekly: 4,
            ship_interval: 1,
            pitr_days: 7,
            offsite: OffsiteConfig::default(),
        }
    }
}

/// The Clio connection and its sync schedules (cron: 6 fields, seconds first, UTC).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClioConfig {
    /// When to fetch what changed in Clio.
    pub sync_schedule: Schedule,
    /// When to look for records deleted in Clio (lists every id).
    pub reconcile_schedule: Schedule,
    /// After disconnecting, the cached Clio data is due for purge after this many days.
    pub purge_after_days: u32,
    /// The largest share (0 to 1) of a kind's records one deletion reconcile
    /// may delete; more is held until a second listing agrees or an admin confirms.
    pub max_delete_share: f64,
}

impl Default for ClioConfig {
    fn default() -> Self {
        ClioConfig {
            sync_schedule: Schedule::builtin("0 */15 * * * *"),
            reconcile_schedule: Schedule::builtin("0 30 2 * * *"),
            purge_after_days: 30,
            max_delete_share: 0.2,
        }
    }
}

/// The appliance's own upkeep jobs (cron: 6 or 7 fields, seconds first, UTC).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// When to delete expired browser sessions (and forget idle rate-limit state).
    pub sweep_schedule: Schedule,
    /// When to purge the cached Clio data of firms disconnected more than
    /// `clio.purge_after_days` ago.
    pub purge_schedule: Schedule,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            sweep_schedule: Schedule::builtin("0 * * * * *"),
            purge_schedule: Schedule::builtin("0 0 * * * *"),
        }
    }
}

/// What a bad schedule's error says is wrong, and what to do.
const SCHEDULE_PROBLEM: &str = "is not a cron expression";
const SCHEDULE_FIX: &str = "write 6 or 7 fields, seconds first, in UTC: \"0 */15 * * * *\" is every 15 minutes, \"0 30 2 * * *\" daily at 02:30";

/// A cron schedule from the config (the `cron` crate: 6 or 7 fields, seconds
/// first, UTC), validated when the config loads: a bad expression is an error
/// naming its key. Written back as the expression it was read from.
#[derive(Clone)]
pub struct Schedule {
    expr: String,
    /// Always `Some` for a parsed schedule; a built-in default is a constant
    /// that a unit test proves parses.
    parsed: Option<cron::Schedule>,
}

impl Schedule {
    /// Parses a cron expression; the error says what is wrong.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let expr = expr.trim();
        match expr.parse::<cron::Schedule>() {
            Ok(parsed) => Ok(Schedule { expr: expr.to_string(), parsed: Some(parsed) }),
            Err(e) => Err(format!("`{expr}` {SCHEDULE_PROBLEM} ({e})")),
        }
    }

    /// A built-in default (a constant expression: add it to the test
    /// `schedules_load_seven_fields_and_the_defaults_parse`).
    pub fn builtin(expr: &str) -> Schedule {
        Schedule { expr: expr.to_string(), parsed: expr.parse().ok() }
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The first instant of the schedule strictly after `after` (microseconds
    /// since the epoch); `None` when the schedule has no later instant.
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let from = chrono::DateTime::from_timestamp_micros(after)?;
        self.parsed.as_ref()?.after(&from).next().map(|t| t.timestamp_micros())
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        self.expr == other.expr
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.expr)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

impl std::str::FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Schedule, String> {
        Schedule::parse(s)
    }
}

impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.expr)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Schedule, D::Error> {
        let expr = String::deserialize(d)?;
        Schedule::parse(&expr).map_err(serde::de::Error::custom)
    }
}

/// Sign-in: sessions, the break-glass local admin, identity providers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Whether the break-glass local admin (`docket admin create`) may sign in.
    pub local_login: bool,
    /// A session ends after this many minutes without a request.
    pub session_idle_minutes: u32,
    /// A session ends this many hours after sign-in, whatever the activity.
    pub session_absolute_hours: u32,
    /// OpenID Connect identity providers (`[[auth.oidc]]` tables).
    pub oidc: Vec<OidcProviderConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { local_login: true, session_idle_minutes: 30, session_absolute_hours: 12, oidc: vec![] }
    }
}

/// One OpenID Connect provider (see docs/identity-providers.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// Letters, digits and `-`; part of the redirect URI `/api/v1/auth/oidc/<id>/callback`.
    pub id: String,
    /// Slug of the firm this provider signs people into.
    pub org: String,
    /// Shown on the sign-in page; defaults to the id.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Issuer URL, exactly as in the provider's discovery document.
    pub issuer: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<Secret>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "default_email_claim")]
    pub email_claim: String,
    #[serde(default = "default_name_claim")]
    pub name_claim: String,
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Create members on their first sign-in.
    #[serde(default)]
    pub jit: bool,
    /// JIT only for these email domains (empty: any).
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// JIT only for members of one of these groups (empty: any).
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// Role of JIT members whom no `role_map` group matches; absent: no access.
    #[serde(default)]
    pub default_role: Option<String>,
    /// Group (as the provider sends it) → role.
    #[serde(default)]
    pub role_map: BTreeMap<String, String>,
    /// Extra CA certificates (PEM) trusted when talking to this provider.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How far the provider's clock may be off docket's: ID tokens issued
    /// later than now plus this, or expired earlier than now less this, are refused.
    #[serde(default = "default_clock_skew_seconds")]
    pub clock_skew_seconds: u64,
}

fn default_clock_skew_seconds() -> u64 {
    120
}

fn default_oidc_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

fn default_email_claim() -> String {
    "email".into()
}

fn default_name_claim() -> String {
    "name".into()
}

/// Request rate limits (a client over a limit gets 429 with `Retry-After`)
/// and connection limits (a connection past a timeout or cap is closed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests per minute from one client address (health checks exempt).
    pub per_ip_per_minute: u32,
    /// Requests per minute with one credential (API token or session).
    pub per_credential_per_minute: u32,
    /// Sign-in, callback and token-creation requests per minute from one client address.
    pub sign_in_per_ip_per_minute: u32,
    /// Seconds a client has to complete the TLS handshake.
    pub tls_handshake_seconds: u64,
    /// Seconds a client has to send a request's line and headers (on a new
    /// connection: from the end of the handshake; on HTTP/1.1 keep-alive: from
    /// the end of the previous response).
    pub header_read_seconds: u64,
    /// Seconds a connection may stay open with no traffic and no request in progress.
    pub idle_seconds: u64,
    /// Open connections from one client address (`server.trusted_proxies` are exempt).
    pub connections_per_address: u32,
    /// Open connections in all, per listener.
    pub connections_total: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            per_ip_per_minute: 1200,
            per_credential_per_minute: 600,
            sign_in_per_ip_per_minute: 30,
            tls_handshake_seconds: 10,
            header_read_seconds: 10,
            idle_seconds: 60,
            connections_per_address: 64,
            connections_total: 4096,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The host name users type; used in redirects. Defaults to the first ACME or
    /// self-signed host name.
    pub public_host: Option<String>,
    /// Addresses of the main listener (HTTPS, or plain HTTP when `tls.mode = "off"`).
    /// Empty means: 0.0.0.0:443, or 127.0.0.1:8080 when TLS is off.
    pub listen: Vec<SocketAddr>,
    /// Addresses of the plain-HTTP listener that redirects to HTTPS.
    /// Absent means 0.0.0.0:80 (none when TLS is off); `[]` disables it.
    pub redirect_listen: Option<Vec<SocketAddr>>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: u64,
    /// How long in-flight requests may run after SIGTERM before they are cut.
    pub shutdown_grace_seconds: u64,
    /// Reverse proxies whose `X-Forwarded-*` headers are believed (any TLS mode; usually `off`).
    pub trusted_proxies: Vec<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// A certificate generated once for `tls.self_signed_hosts`, for first runs.
    SelfSigned,
    /// PEM files, reloaded on SIGHUP.
    Files,
    /// Certificates from an ACME CA (Let's Encrypt by default).
    Acme,
    /// No TLS: only behind a reverse proxy that terminates it.
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub mode: TlsMode,
    /// PEM certificate chain (mode `files`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key (mode `files`).
    pub key_file: Option<PathBuf>,
    /// Host names in the generated certificate (mode `self-signed`).
    pub self_signed_hosts: Vec<String>,
    pub acme: AcmeConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// Domains to obtain a certificate for.
    pub domains: Vec<String>,
    /// Contact addresses, as `mailto:` URIs.
    pub contact: Vec<String>,
    /// `letsencrypt`, `letsencrypt-staging`, or a directory URL.
    pub directory: String,
    /// Extra CA certificates (PEM) trusted when talking to the directory.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// The age identity file holding the master key. Default: systemd credential
    /// `docket-master-key`, else `<data_dir>/keys/master.key`.
    pub master_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Human,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter such as `info` or `docket=debug,poem=info`.
    pub level: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Bearer token a scraper must send to `/metrics`. Without it, only loopback
    /// clients may read metrics.
    pub token: Option<Secret>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("/var/lib/docket"),
            server: ServerConfig::default(),
            tls: TlsConfig::default(),
            keys: KeysConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            clio: ClioConfig::default(),
            maintenance: MaintenanceConfig::default(),
            webhooks: WebhooksConfig::default(),
            backup: BackupConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            public_host: None,
            listen: vec![],
            redirect_listen: None,
            max_body_bytes: 1024 * 1024,
            shutdown_grace_seconds: 30,
            trusted_proxies: vec![],
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            mode: TlsMode::Acme,
            cert_file: None,
            key_file: None,
            self_signed_hosts: vec!["localhost".into()],
            acme: AcmeConfig::default(),
        }
    }
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig { domains: vec![], contact: vec![], directory: "letsencrypt".into(), ca_file: None }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Json, level: "info".into() }
    }
}

impl Config {
    /// The main listener's addresses after defaults are applied.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        if !self.server.listen.is_empty() {
            return self.server.listen.clone();
        }
        let addr = match self.tls.mode {
            TlsMode::Off => "127.0.0.1:8080",
            _ => "0.0.0.0:443",
        };
        addr.parse().into_iter().collect()
    }

    /// The redirect listener's addresses after defaults are applied.
    pub fn redirect_addrs(&self) -> Vec<SocketAddr> {
        match (&self.server.redirect_listen, self.tls.mode) {
            (Some(addrs), _) => addrs.clone(),
            (None, TlsMode::Off) => vec![],
            (None, _) => "0.0.0.0:80".parse().into_iter().collect(),
        }
    }

    /// The host name used in redirects and printed URLs.
    pub fn public_host(&self) -> String {
        self.server
            .public_host
            .clone()
            .or_else(|| match self.tls.mode {
                TlsMode::Acme => self.tls.acme.domains.first().cloned(),
                _ => self.tls.self_signed_hosts.first().cloned(),
            })
            .unwrap_or_else(|| "localhost".into())
    }

    /// Where backups and shipped journal segments go: `backup.dir`, or
    /// `<data_dir>/backups` when unset (backups from the first day; the
    /// service, its status and `docket doctor` warn that they share the
    /// store's disk until `backup.dir` names another).
    pub fn backup_dir(&self) -> PathBuf {
        self.backup.dir.clone().unwrap_or_else(|| self.data_dir.join("backups"))
    }

    /// The store file inside the data dir.
    pub fn store_path(&self) -> PathBuf {
        store_path_in(&self.data_dir)
    }

    /// Every setting as `section.key` and its rendered value (secrets redacted),
    /// in key order: what a reload compares.
    pub fn leaves(&self) -> Vec<(String, String)> {
        let value = Value::try_from(self).unwrap_or(Value::Table(Table::new()));
        let mut leaves = vec![];
        flatten("", &value, &mut leaves);
        leaves.into_iter().map(|(k, v)| (k, v.to_string())).collect()
    }

    /// The Unix socket of the running server's admin channel.
    pub fn control_socket_path(&self) -> PathBuf {
        self.data_dir.join("control.sock")
    }
}

/// Where a config value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "built-in default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "environment variable {v}"),
            Source::Flag(n) => write!(f, "flag --{n}"),
        }
    }
}

/// A configuration problem, worded for the sysadmin who has to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The dotted key, when the problem is with one key.
    pub key: Option<String>,
    /// Where the offending value came from.
    pub source: Option<Source>,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration error")?;
        if let Some(key) = &self.key {
            write!(f, " in `{key}`")?;
        }
        if let Some(source) = &self.source {
            write!(f, " (from {source})")?;
        }
        write!(f, ": {}\n  fix: {}", self.problem, self.fix)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn new(key: Option<&str>, source: Option<Source>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        ConfigError { key: key.map(str::to_owned), source, problem: problem.into(), fix: fix.into() }
    }
}

/// A configuration being assembled layer by layer.
#[derive(Debug)]
pub struct Layers {
    table: Table,
    provenance: BTreeMap<String, Source>,
    /// The serialized defaults: tells each key's type, so env strings can be typed.
    shape: Table,
}

/// The loaded configuration plus where each key came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub provenance: BTreeMap<String, Source>,
}

impl Default for Layers {
    fn default() -> Self {
        Self::new()
    }
}

/// The full configuration of `serve` (and of a SIGHUP reload): built-in
/// defaults, then `file`, then the `DOCKET_*` environment.
pub fn load(file: Option<&Path>) -> Result<Loaded, ConfigError> {
    let mut layers = Layers::new();
    if let Some(f) = file {
        layers = layers.file(f)?;
    }
    layers.env(std::env::vars())?.build()
}

impl Layers {
    pub fn new() -> Self {
        let shape = Value::try_from(Config::default()).ok().and_then(|v| v.as_table().cloned()).unwrap_or_default();
        Layers { table: Table::new(), provenance: BTreeMap::new(), shape }
    }

    /// Overlays a TOML file.
    pub fn file(mut self, path: &Path) -> Result<Self, ConfigError> {
        let fix_path = format!("check that {} exists and that this user may read it", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                None,
                Some(Source::File(path.into())),
                format!("cannot read the config file: {e}"),
                fix_path,
            )
        })?;
        let parsed: Table = toml::from_str(&text).map_err(|e| {
            ConfigError::new(
                None,
                Some(Source::File(path.into())),
                format!("the file is not valid TOML: {}", e.to_string().trim()),
                "correct the syntax at the line shown (see packaging/docket.toml for a commented example)",
            )
        })?;
        let mut leaves = vec![];
        flatten("", &Value::Table(parsed), &mut leaves);
        for (key, value) in leaves {
            self.set(&key, value, Source::File(path.into()));
        }
        Ok(self)
    }

    /// Overlays every `DOCKET_*` variable from `vars`.
    pub fn env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut vars: Vec<_> = vars.into_iter().filter(|(k, _)| k.starts_with("DOCKET_")).collect();
        vars.sort();
        for (name, raw) in vars {
            if NON_CONFIG_ENV.contains(&name.as_str()) {
                continue;
            }
            let key = name["DOCKET_".len()..].to_ascii_lowercase().replace("__", ".");
            let source = Source::Env(name.clone());
            let value = self.typed_env_value(&key, &raw, &source)?;
            self.set(&key, value, source);
        }
        Ok(self)
    }

    /// Overlays one value given by a command-line flag.
    pub fn flag(mut self, key: &str, value: Value, flag: &str) -> Self {
        self.set(key, value, Source::Flag(flag.into()));
        self
    }

    fn set(&mut self, key: &str, value: Value, source: Source) {
        let mut table = &mut self.table;
        let parts: Vec<&str> = key.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            let entry = table.entry(part.to_string()).or_insert_with(|| Value::Table(Table::new()));
            if !entry.is_table() {
                *entry = Value::Table(Table::new());
            }
            let Value::Table(next) = entry else { return };
            table = next;
        }
        table.insert(parts[parts.len() - 1].to_string(), value);
        self.provenance.insert(key.to_string(), source);
    }

    /// Types an environment string by the key's type in the defaults.
    fn typed_env_value(&self, key: &str, raw: &str, source: &Source) -> Result<Value, ConfigError> {
        let expected = lookup(&self.shape, key);
        let bad = |what: &str| {
            ConfigError::new(
                Some(key),
                Some(source.clone()),
                format!("`{raw}` is not {what}"),
                format!("set it to {what}"),
            )
        };
        Ok(match expected {
            Some(Value::Integer(_)) => Value::Integer(raw.trim().parse().map_err(|_| bad("a whole number"))?),
            Some(Value::Boolean(_)) => Value::Boolean(raw.trim().parse().map_err(|_| bad("true or false"))?),
            Some(Value::Float(_)) => Value::Float(raw.trim().parse().map_err(|_| bad("a number such as 0.2"))?),
            Some(Value::Array(_)) => parse_env_list(raw),
            _ if key.ends_with("listen") || key.ends_with("trusted_proxies") => parse_env_list(raw),
            _ => Value::String(raw.to_string()),
        })
    }

    /// Resolves `*_file` secrets, deserializes, and validates.
    pub fn build(mut self) -> Result<Loaded, ConfigError> {
        self.resolve_secret_files()?;
        let value = Value::Table(self.table.clone());
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let source = self.provenance_of(&key);
            let inner = e.into_inner().to_string();
            let fix = if inner.contains("unknown field") {
                "remove or rename the key (packaging/docket.toml lists every valid key)".to_string()
            } else if inner.contains(SCHEDULE_PROBLEM) {
                SCHEDULE_FIX.to_string()
            } else {
                "give a value of the type shown (packaging/docket.toml documents each key)".to_string()
            };
            ConfigError::new(Some(&key), source, inner, fix)
        })?;
        let mut loaded = Loaded { config, provenance: self.provenance };
        loaded.resolve_oidc_secrets()?;
        loaded.resolve_offsite_credential();
        loaded.validate()?;
        loaded.validate_offsite()?;
        loaded.validate_oidc()?;
        Ok(loaded)
    }

    fn provenance_of(&self, key: &str) -> Option<Source> {
        self.provenance
            .iter()
            .filter(|(k, _)| {
                key == k.as_str()
                    || key.starts_with(&format!("{k}."))
                    || key.starts_with(&format!("{k}["))
                    || k.starts_with(&format!("{key}."))
            })
            .map(|(_, s)| s.clone())
            .next()
            .or(Some(Source::Default))
    }

    fn resolve_secret_files(&mut self) -> Result<(), ConfigError> {
        for key in SECRET_KEYS {
            let file_key = format!("{key}_file");
            let Some(path) = lookup(&self.table, &file_key).cloned() else {
                continue;
            };
            let source = self.provenance.get(&file_key).cloned();
            if lookup(&self.table, key).is_some() {
                return Err(ConfigError::new(
                    Some(key),
                    source,
                    format!("both `{key}` and `{file_key}` are set"),
                    format!("keep only one of them (prefer `{file_key}`, which keeps the secret out of the config)"),
                ));
            }
            let Value::String(path) = path else {
                return Err(ConfigError::new(
                    Some(&file_key),
                    source,
                    "expected a file path",
                    "give the path as a string",
                ));
            };
            let content = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::new(
                    Some(&file_key),
                    source.clone(),
                    format!("cannot read {path}: {e}"),
                    "point it at a readable file that holds only the secret",
                )
            })?;
            remove(&mut self.table, &file_key);
            self.set(
                key,
                Value::String(content.trim_end_matches(['\n', '\r']).to_string()),
                source.unwrap_or(Source::Default),
            );
        }
        Ok(())
    }
}

impl Loaded {
    /// With an off-site target and no secret key configured, takes it from the
    /// systemd credential `docket-offsite-secret-key`, when one is passed.
    fn resolve_offsite_credential(&mut self) {
        let offsite = &mut self.config.backup.offsite;
        if offsite.url.is_none() || offsite.secret_access_key.is_some() {
            return;
        }
        let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else { return };
        let path = Path::new(&dir).join(OFFSITE_CREDENTIAL);
        if let Ok(text) = std::fs::read_to_string(&path) {
            offsite.secret_access_key = Some(Secret::new(text.trim_end_matches(['\n', '\r'])));
            self.provenance.insert("backup.offsite.secret_access_key".into(), Source::File(path));
        }
    }

    /// `[backup.offsite]`: a parseable `s3://bucket/prefix`, an https endpoint
    /// (plain http only on loopback with `allow_http`), both keys or neither.
    fn validate_offsite(&self) -> Result<(), ConfigError> {
        let o = &self.config.backup.offsite;
        let err = |key: &str, problem: String, fix: &str| {
            let key = format!("backup.offsite.{key}");
            Err(ConfigError::new(Some(&key), self.source(&key), problem, fix))
        };
        let Some(url) = &o.url else {
            let set = o.endpoint.is_some() || o.access_key_id.is_some() || o.secret_access_key.is_some();
            if set {
                return err(
                    "url",
                    "is not set, but other backup.offsite keys are".into(),
                    "set url = \"s3://bucket/prefix\", or remove the [backup.offsite] section",
                );
            }
            return Ok(());
        };
        if let Err(problem) = parse_offsite_url(url) {
            return err("url", format!("`{url}` {problem}"), "write it as s3://bucket or s3://bucket/prefix");
        }
        if let Some(endpoint) = &o.endpoint {
            match offsite_endpoint_kind(endpoint) {
                None => {
                    return err(
                        "endpoint",
                        format!("`{endpoint}` is not an http(s) URL"),
                        "give the provider's S3 endpoint, e.g. https://s3.eu-central-003.backblazeb2.com",
                    );
                }
                Some(EndpointKind::Http { loopback: false }) => {
                    return err(
                        "endpoint",
                        format!(
                            "`{endpoint}` is plain http to another machine: the backups' keys and files would cross the network unprotected"
                        ),
                        "use the provider's https:// endpoint (plain http is allowed on loopback only)",
                    );
                }
                Some(EndpointKind::Http { loopback: true }) if !o.allow_http => {
                    return err(
                        "endpoint",
                        format!("`{endpoint}` is plain http"),
                        "use https://, or set backup.offsite.allow_http = true for a loopback test server",
                    );
                }
                _ => {}
            }
        }
        if o.allow_http && !o.endpoint.as_deref().and_then(offsite_endpoint_kind).is_some_and(|k| k.loopback()) {
            return err(
                "allow_http",
                "is true, but the endpoint is not a loopback address".into(),
                "remove allow_http: plain http is allowed only to a test server on 127.0.0.1 or ::1",
            );
        }
        match (&o.access_key_id, &o.secret_access_key) {
            (Some(id), _) if id.trim().is_empty() => {
                err("access_key_id", "is empty".into(), "copy the access key id from the provider's console")
            }
            (Some(_), None) => err(
                "secret_access_key",
                "is missing (access_key_id is set)".into(),
                "set secret_access_key_file to a file holding the secret key, or pass the systemd credential docket-offsite-secret-key",
            ),
            (None, Some(_)) => err(
                "access_key_id",
                "is missing (a secret access key is set)".into(),
                "set access_key_id to the key id that goes with the secret",
            ),
            (None, None) => err(
                "access_key_id",
                "is missing: the bucket needs credentials".into(),
                "create an access key limited to this bucket and set access_key_id and secret_access_key_file in [backup.offsite] (or DOCKET_BACKUP__OFFSITE__ACCESS_KEY_ID and DOCKET_BACKUP__OFFSITE__SECRET_ACCESS_KEY_FILE)",
            ),
            _ => Ok(()),
        }
    }

    /// Reads each provider's `client_secret_file` into `client_secret`.
    fn resolve_oidc_secrets(&mut self) -> Result<(), ConfigError> {
        let source = self.source("auth.oidc");
        for (i, p) in self.config.auth.oidc.iter_mut().enumerate() {
            let key = format!("auth.oidc[{i}]");
            match (&p.client_secret, &p.client_secret_file) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        Some(&key),
                        source,
                        "both `client_secret` and `client_secret_file` are set",
                        "keep only `client_secret_file`, which keeps the secret out of the config",
                    ));
                }
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        ConfigError::new(
                            Some(&format!("{key}.client_secret_file")),
                            source.clone(),
                            format!("cannot read {}: {e}", path.display()),
                            "point it at a readable file that holds only the client secret",
                        )
                    })?;
                    p.client_secret = Some(Secret::new(text.trim_end_matches(['\n', '\r'])));
                    p.client_secret_file = None;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn validate_oidc(&self) -> Result<(), ConfigError> {
        let source = self.source("auth.oidc");
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.config.auth.oidc.iter().enumerate() {
            let err = |field: &str, problem: String, fix: &str| {
                Err(ConfigError::new(Some(&format!("auth.oidc[{i}].{field}")), source.clone(), problem, fix))
            };
            let id_ok = (1..=40).contains(&p.id.len()) && p.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !id_ok {
                return err(
                    "id",
                    format!("`{}` is not 1 to 40 letters, digits or -", p.id),
                    "choose an id such as \"entra\"",
                );
            }
            if !seen.insert(p.id.clone()) {
                return err("id", format!("`{}` is used by two providers", p.id), "give each provider its own id");
            }
            if crate::store::orgs::validate_slug(&p.org).is_err() {
                return err(
                    "org",
                    format!("`{}` is not an org slug", p.org),
                    "use the slug shown by `docket org list`",
                );
            }
            let loopback_http = ["http://127.0.0.1", "http://[::1]", "http://localhost"].iter().any(|prefix| {
                p.issuer.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
            });
            if !p.issuer.starts_with("https://") && !loopback_http {
                return err(
                    "issuer",
                    format!("`{}` is not an https:// URL", p.issuer),
                    "copy the issuer from the provider's discovery document (plain http is allowed on loopback only)",
                );
            }
            if p.client_id.trim().is_empty() {
                return err("client_id", "is empty".into(), "copy the client (application) id from the provider");
            }
            if p.clock_skew_seconds > 600 {
                return err(
                    "clock_skew_seconds",
                    format!("{} is more than 600 (ten minutes)", p.clock_skew_seconds),
                    "keep the appliance and the provider on NTP and use the default (120)",
                );
            }
            if p.client_secret.is_none() {
                return err(
                    "client_secret_file",
                    "is missing (docket is a confidential client)".into(),
                    "set client_secret_file to a file holding the client secret",
                );
            }
            if !p.scopes.iter().any(|s| s == "openid") {
                return err("scopes", "does not include `openid`".into(), "add \"openid\" to scopes");
            }
            let mapped = p.role_map.values().map(|r| ("role_map", r));
            for (key, role) in mapped.chain(p.default_role.iter().map(|r| ("default_role", r))) {
                if crate::store::orgs::validate_slug(role).is_err() {
                    return err(
                        key,
                        format!("`{role}` is not a role name"),
                        "use admin, manager, staff, auditor or a custom role's name",
                    );
                }
                // The grant rule: only an owner makes an owner, never an identity provider.
                if role == "owner" {
                    return err(
                        key,
                        "gives the role `owner`, which an identity provider may never grant".into(),
                        "map the group to `admin` (or a custom role); an owner makes owners with PATCH /api/v1/members/{id}",
                    );
                }
            }
        }
        Ok(())
    }

    fn source(&self, key: &str) -> Option<Source> {
        Some(self.provenance.get(key).cloned().unwrap_or(Source::Default))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.config;
        let err =
            |key: &str, problem: &str, fix: &str| Err(ConfigError::new(Some(key), self.source(key), problem, fix));
        for (key, value) in [
            ("limits.per_ip_per_minute", c.limits.per_ip_per_minute),
            ("limits.per_credential_per_minute", c.limits.per_credential_per_minute),
            ("limits.sign_in_per_ip_per_minute", c.limits.sign_in_per_ip_per_minute),
            ("limits.connections_per_address", c.limits.connections_per_address),
            ("limits.connections_total", c.limits.connections_total),
            ("auth.session_idle_minutes", c.auth.session_idle_minutes),
            ("auth.session_absolute_hours", c.auth.session_absolute_hours),
            ("clio.purge_after_days", c.clio.purge_after_days),
            ("backup.keep_daily", c.backup.keep_daily),
            ("backup.pitr_days", c.backup.pitr_days),
        ] {
            if value == 0 {
                return err(
                    key,
                    "must be at least 1",
                    "set a positive number (packaging/docket.toml shows the default)",
                );
            }
        }
        for (key, seconds) in [
            ("limits.tls_handshake_seconds", c.limits.tls_handshake_seconds),
            ("limits.header_read_seconds", c.limits.header_read_seconds),
            ("limits.idle_seconds", c.limits.idle_seconds),
            ("backup.ship_interval", c.backup.ship_interval),
        ] {
            if !(1..=3600).contains(&seconds) {
                return err(
                    key,
                    &format!("is {seconds}, outside 1 to 3600 seconds"),
                    "set a timeout in seconds such as 10 (packaging/docket.toml shows the default)",
                );
            }
        }
        if c.limits.connections_per_address > c.limits.connections_total {
            return err(
                "limits.connections_per_address",
                &format!(
                    "({}) is larger than limits.connections_total ({})",
                    c.limits.connections_per_address, c.limits.connections_total
                ),
                "set it at most limits.connections_total, e.g. 64 per address and 4096 in all",
            );
        }
        for recipient in &c.backup.recipients {
            if recipient.parse::<age::x25519::Recipient>().is_err() {
                return err(
                    "backup.recipients",
                    &format!("`{recipient}` is not an age public key"),
                    "list public keys as `age-keygen` prints them (age1…), never the AGE-SECRET-KEY line",
                );
            }
        }
        let share = c.clio.max_delete_share;
        if !(share > 0.0 && share <= 1.0) {
            return err(
                "clio.max_delete_share",
                &format!("`{share}` is not a share between 0 (exclusive) and 1"),
                "set a fraction such as 0.2 (one listing may delete at most a fifth of a kind's records)",
            );
        }
        if c.server.max_body_bytes == 0 {
            return err("server.max_body_bytes", "must be greater than 0", "set a limit such as 1048576 (1 MiB)");
        }
        if c.data_dir.as_os_str().is_empty() {
            return err("data_dir", "is empty", "set it to a directory docket may own, such as /var/lib/docket");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&c.log.level) {
            return err(
                "log.level",
                &format!("is not a valid filter: {e}"),
                "use a level such as `info` or `docket=debug,info`",
            );
        }
        match c.tls.mode {
            TlsMode::Files => {
                for key in ["tls.cert_file", "tls.key_file"] {
                    let set = if key == "tls.cert_file" { &c.tls.cert_file } else { &c.tls.key_file };
                    if set.is_none() {
                        return err(key, "is required when tls.mode = \"files\"", "give the path of the PEM file");
                    }
                }
            }
            TlsMode::Acme => {
                if c.tls.acme.domains.is_empty() {
                    return err(
                        "tls.acme.domains",
                        "is empty but tls.mode = \"acme\"",
                        "list the public DNS names of this server, or choose tls.mode = \"self-signed\" or \"files\"",
                    );
                }
                if let Some(bad) = c.tls.acme.contact.iter().find(|c| !c.starts_with("mailto:")) {
                    return err(
                        "tls.acme.contact",
                        &format!("`{bad}` is not a mailto: URI"),
                        "write contacts as \"mailto:it@yourfirm.example\"",
                    );
                }
                let d = &c.tls.acme.directory;
                if !matches!(d.as_str(), "letsencrypt" | "letsencrypt-staging") && !d.starts_with("https://") {
                    return err(
                        "tls.acme.directory",
                        &format!("`{d}` is neither `letsencrypt`, `letsencrypt-staging` nor an https:// URL"),
                        "use one of those",
                    );
                }
            }
            TlsMode::SelfSigned => {
                if c.tls.self_signed_hosts.is_empty() {
                    return err(
                        "tls.self_signed_hosts",
                        "is empty",
                        "list at least one host name, such as \"localhost\"",
                    );
                }
            }
            TlsMode::Off => {
                if c.server.redirect_listen.as_ref().is_some_and(|a| !a.is_empty()) {
                    return err(
                        "server.redirect_listen",
                        "has no effect with tls.mode = \"off\" (there is no HTTPS to redirect to)",
                        "remove it, and let the reverse proxy redirect HTTP to HTTPS",
                    );
                }
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted, each key followed
    /// by where it came from.
    pub fn describe(&self) -> String {
        let value = Value::try_from(&self.config).unwrap_or(Value::Table(Table::new()));
        let mut leaves = vec![];
        flatten("", &value, &mut leaves);
        leaves
            .into_iter()
            .map(|(key, value)| {
                let source = self.provenance.get(&key).cloned().unwrap_or(Source::Default);
                format!("{key} = {value}    # {source}\n")
            })
            .collect()
    }
}

/// The systemd credential that holds `backup.offsite.secret_access_key`.
pub const OFFSITE_CREDENTIAL: &str = "docket-offsite-secret-key";

/// The bucket and prefix of an off-site URL `s3://bucket[/prefix]`, or what is wrong with it.
pub fn parse_offsite_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("s3://").ok_or("does not start with s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.']);
    if !bucket_ok {
        return Err(format!("names the bucket `{bucket}`: 3 to 63 lowercase letters, digits, dots or hyphens"));
    }
    let prefix = prefix.trim_end_matches('/');
    let prefix_ok = prefix.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
        && prefix.chars().all(|c| !c.is_control() && c != '\\');
    if !prefix.is_empty() && !prefix_ok {
        return Err(format!("has the prefix `{prefix}`, with an empty, `.` or `..` part or a control character"));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

enum EndpointKind {
    Https,
    Http { loopback: bool },
}

impl EndpointKind {
    fn loopback(&self) -> bool {
        matches!(self, EndpointKind::Http { loopback: true })
    }
}

fn offsite_endpoint_kind(endpoint: &str) -> Option<EndpointKind> {
    let parsed = url::Url::parse(endpoint).ok()?;
    let loopback = match parsed.host()? {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(name) => name == "localhost",
    };
    match parsed.scheme() {
        "https" => Some(EndpointKind::Https),
        "http" => Some(EndpointKind::Http { loopback }),
        _ => None,
    }
}

fn parse_env_list(raw: &str) -> Value {
    let trimmed = raw.trim();
    if trimmed.starts_with('[')
        && let Ok(table) = toml::from_str::<Table>(&format!("v = {trimmed}"))
        && let Some(v) = table.get("v")
    {
        return v.clone();
    }
    Value::Array(
        trimmed.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.to_string())).collect(),
    )
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

fn lookup<'a>(table: &'a Table, key: &str) -> Option<&'a Value> {
    let mut parts = key.split('.').peekable();
    let mut current = table;
    while let Some(part) = parts.next() {
        let value = current.get(part)?;
        if parts.peek().is_none() {
            return Some(value);
        }
        current = value.as_table()?;
    }
    None
}

fn remove(table: &mut Table, key: &str) {
    match key.split_once('.') {
        None => {
            table.remove(key);
        }
        Some((head, rest)) => {
            if let Some(Value::Table(inner)) = table.get_mut(head) {
                remove(inner, rest);
            }
        }
    }
}

/// The store file's name in a data dir.
pub const STORE_FILE: &str = "docket.redb";

/// The store file inside `data_dir` (a restore's staging dir included).
pub fn store_path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(STORE_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn layers_apply_in_order_and_record_provenance() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "d.toml",
            "data_dir = \"/srv/a\"\n[tls]\nmode = \"files\"\ncert_file = \"c\"\nkey_file = \"k\"\n",
        );
        let loaded = Layers::new()
            .file(&file)
            .unwrap()
            .env(env(&[("DOCKET_DATA_DIR", "/srv/b"), ("DOCKET_SERVER__MAX_BODY_BYTES", "2048")]))
            .unwrap()
            .flag("data_dir", Value::String("/srv/c".into()), "data-dir")
            .build()
            .unwrap();
        assert_eq!(loaded.config.data_dir, PathBuf::from("/srv/c"));
        assert_eq!(loaded.config.server.max_body_bytes, 2048);
        assert_eq!(loaded.config.tls.mode, TlsMode::Files);
        assert_eq!(loaded.provenance["tls.mode"], Source::File(file));
        assert_eq!(loaded.provenance["server.max_body_bytes"], Source::Env("DOCKET_SERVER__MAX_BODY_BYTES".into()));
        assert!(loaded.describe().contains("data_dir = \"/srv/c\"    # flag --data-dir"));
    }

    #[test]
    fn the_delete_share_is_a_fraction() {
        for bad in ["0", "1.5", "-0.1", "NaN"] {
            let vars = [("DOCKET_TLS__MODE", "off"), ("DOCKET_CLIO__MAX_DELETE_SHARE", bad)];
            let e = Layers::new().env(env(&vars)).unwrap().build().unwrap_err();
            assert_eq!(e.key.as_deref(), Some("clio.max_delete_share"), "{bad}: {e}");
        }
        let vars = [("DOCKET_TLS__MODE", "off"), ("DOCKET_CLIO__MAX_DELETE_SHARE", "0.5")];
        assert_eq!(Layers::new().env(env(&vars)).unwrap().build().unwrap().config.clio.max_delete_share, 0.5);
        assert_eq!(ClioConfig::default().max_delete_share, 0.2);
    }

    #[test]
    fn an_identity_provider_may_not_be_mapped_to_owner() {
        let dir = tempfile::tempdir().unwrap();
        let secret = write(dir.path(), "idp.secret", "s3cret\n");
        let provider = format!(
            "[tls]\nmode = \"off\"\n[[auth.oidc]]\nid = \"entra\"\norg = \"smith-jones\"\nissuer = \"https://login.example/\"\nclient_id = \"c\"\nclient_secret_file = \"{}\"\n",
            secret.display()
        );
        let load = |extra: &str| {
            let file = write(dir.path(), "d.toml", &format!("{provider}{extra}"));
            Layers::new().file(&file).unwrap().build()
        };
        load("role_map = { partners = \"admin\" }\n").unwrap();
        let e = load("role_map = { partners = \"owner\" }\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("auth.oidc[0].role_map"), "{e}");
        assert!(e.problem.contains("owner") && e.fix.contains("admin"), "{e}");
        let e = load("jit = true\ndefault_role = \"owner\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("auth.oidc[0].default_role"), "{e}");
        let e = load("clock_skew_seconds = 601\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("auth.oidc[0].clock_skew_seconds"), "{e}");
        assert_eq!(load("").unwrap().config.auth.oidc[0].clock_skew_seconds, 120);
    }

    #[test]
    fn unknown_file_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "d.toml", "[tls]\nmode = \"off\"\nmdoe = 1\n");
        let e = Layers::new().file(&file).unwrap().build().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("tls.mdoe"));
        assert!(e.problem.contains("unknown field"), "{e}");
    }

    #[test]
    fn a_bad_schedule_is_named_with_an_example() {
        let dir = tempfile::tempdir().unwrap();
        for (text, key) in [
            ("[clio]\nsync_schedule = \"*/15 * * * *\"\n", "clio.sync_schedule"),
            ("[clio]\nreconcile_schedule = \"daily\"\n", "clio.reconcile_schedule"),
            ("[maintenance]\nsweep_schedule = \"0 61 * * * *\"\n", "maintenance.sweep_schedule"),
            ("[maintenance]\npurge_schedule = \"\"\n", "maintenance.purge_schedule"),
        ] {
            let file = write(dir.path(), "d.toml", &format!("[tls]\nmode = \"off\"\n{text}"));
            let e = Layers::new().file(&file).unwrap().build().unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert!(e.problem.contains("is not a cron expression"), "{e}");
            assert!(e.fix.contains("\"0 */15 * * * *\""), "the fix shows an example: {e}");
            assert_eq!(e.source, Some(Source::File(file.clone())));
        }
        let e = Layers::new()
            .env(env(&[("DOCKET_TLS__MODE", "off"), ("DOCKET_MAINTENANCE__SWEEP_SCHEDULE", "soon")]))
            .unwrap()
            .build()
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("maintenance.sweep_schedule"), "{e}");
        assert!(e.to_string().contains("DOCKET_MAINTENANCE__SWEEP_SCHEDULE"), "{e}");
    }

    #[test]
    fn schedules_load_seven_fields_and_the_defaults_parse() {
        let dir = tempfile::tempdir().unwrap();
        let file =
            write(dir.path(), "d.toml", "[tls]\nmode = \"off\"\n[clio]\nsync_schedule = \" 0 0 3 * * * 2030 \"\n");
        let loaded = Layers::new().file(&file).unwrap().build().unwrap();
        let schedule = &loaded.config.clio.sync_schedule;
        assert_eq!(schedule.expr(), "0 0 3 * * * 2030");
        let at = |t: &str| crate::timestamp::Timestamp::parse(t).unwrap().micros();
        assert_eq!(schedule.next_after(at("2026-11-30T12:00:00Z")), Some(at("2030-01-01T03:00:00Z")));
        assert_eq!(schedule.next_after(at("2030-12-31T03:00:00Z")), None, "no instant after its last year");
        let c = Config::default();
        for s in [
            &c.clio.sync_schedule,
            &c.clio.reconcile_schedule,
            &c.maintenance.sweep_schedule,
            &c.maintenance.purge_schedule,
            &c.backup.schedule,
            &c.backup.verify_schedule,
        ] {
            assert!(s.next_after(0).is_some(), "the built-in default `{s}` parses");
            assert_eq!(Schedule::parse(s.expr()).as_ref(), Ok(s));
        }
    }

    #[test]
    fn unknown_env_var_is_named() {
        let e = Layers::new().env(env(&[("DOCKET_TLS__MDOE", "off")])).unwrap().build().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("tls.mdoe"));
        assert_eq!(e.source, Some(Source::Env("DOCKET_TLS__MDOE".into())));
    }

    #[test]
    fn wrong_type_is_named_with_its_source() {
        let e = Layers::new().env(env(&[("DOCKET_SERVER__MAX_BODY_BYTES", "lots")])).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("server.max_body_bytes"));
        assert!(e.to_string().contains("DOCKET_SERVER__MAX_BODY_BYTES"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "d.toml", "[tls]\nmode = \"sometimes\"\n");
        let e = Layers::new().file(&file).unwrap().build().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("tls.mode"));
        assert!(e.problem.contains("unknown variant"), "{e}");
    }

    #[test]
    fn missing_required_value_for_mode() {
        let e = Layers::new().env(env(&[("DOCKET_TLS__MODE", "files")])).unwrap().build().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("tls.cert_file"));
        let e = Layers::new().build().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("tls.acme.domains"), "acme without domains must be refused");
    }

    #[test]
    fn connection_limits_are_validated_by_key() {
        let off = ("DOCKET_TLS__MODE", "off");
        let loaded = Layers::new().env(env(&[off])).unwrap().build().unwrap();
        let l = &loaded.config.limits;
        assert_eq!((l.tls_handshake_seconds, l.header_read_seconds, l.idle_seconds), (10, 10, 60));
        assert_eq!((l.connections_per_address, l.connections_total), (64, 4096));
        for (var, key) in [
            ("DOCKET_LIMITS__TLS_HANDSHAKE_SECONDS", "limits.tls_handshake_seconds"),
            ("DOCKET_LIMITS__HEADER_READ_SECONDS", "limits.header_read_seconds"),
            ("DOCKET_LIMITS__IDLE_SECONDS", "limits.idle_seconds"),
            ("DOCKET_LIMITS__CONNECTIONS_PER_ADDRESS", "limits.connections_per_address"),
            ("DOCKET_LIMITS__CONNECTIONS_TOTAL", "limits.connections_total"),
        ] {
            let e = Layers::new().env(env(&[off, (var, "0")])).unwrap().build().unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
        }
        let e = Layers::new().env(env(&[off, ("DOCKET_LIMITS__IDLE_SECONDS", "86400")])).unwrap().build().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("limits.idle_seconds"));
        let over = ("DOCKET_LIMITS__CONNECTIONS_PER_ADDRESS", "5000");
        let e = Layers::new().env(env(&[off, over])).unwrap().build().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("limits.connections_per_address"));
        assert!(e.problem.contains("connections_total"), "{e}");
    }

    #[test]
    fn unreadable_and_invalid_files() {
        let e = Layers::new().file(Path::new("/nonexistent/docket.toml")).err().unwrap();
        assert!(e.to_string().contains("/nonexistent/docket.toml"));
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "d.toml", "[tls\n");
        let e = Layers::new().file(&file).err().unwrap();
        assert!(e.problem.contains("not valid TOML"));
    }

    #[test]
    fn secret_from_file_and_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let secret = write(dir.path(), "tok", "s3cret-token\n");
        let base = [("DOCKET_TLS__MODE", "off")];
        let loaded = Layers::new()
            .env(env(&[base[0], ("DOCKET_METRICS__TOKEN_FILE", secret.to_str().unwrap())]))
            .unwrap()
            .build()
            .unwrap();
        let token = loaded.config.metrics.token.as_ref().unwrap();
        assert_eq!(token.expose(), "s3cret-token");
        assert!(!loaded.describe().contains("s3cret"), "the dump must redact secrets");
        assert!(!format!("{:?}", loaded.config).contains("s3cret"));
        let e = Layers::new()
            .env(env(&[
                base[0],
                ("DOCKET_METRICS__TOKEN", "x"),
                ("DOCKET_METRICS__TOKEN_FILE", secret.to_str().unwrap()),
            ]))
            .unwrap()
            .build()
            .unwrap_err();
        assert!(e.problem.contains("both"), "{e}");
    }

    #[test]
    fn env_lists_and_defaults_by_mode() {
        let loaded = Layers::new()
            .env(env(&[("DOCKET_TLS__MODE", "off"), ("DOCKET_SERVER__TRUSTED_PROXIES", "10.0.0.1, 10.0.0.2")]))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(loaded.config.server.trusted_proxies.len(), 2);
        assert_eq!(loaded.config.listen_addrs(), vec!["127.0.0.1:8080".parse().unwrap()]);
        assert!(loaded.config.redirect_addrs().is_empty());
    }
}
