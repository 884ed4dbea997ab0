//! The command line: parse flags, load config, pick a command.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage.
use crate::app::{self, Failure, Instance};
use crate::clock::Clock;
use crate::config::{ConfigError, Layers, Loaded, LogFormat, TlsMode};
use crate::control::{self, Command, Reply};
use crate::lifecycle;
use crate::secrets::{Keyring, default_key_path};
use crate::telemetry;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use toml::Value;

#[derive(Parser, Debug)]
#[command(name = "docket", version, about = "Self-hosted data appliance for law firms that use Clio")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the appliance (as the systemd service does).
    Serve {
        /// The TOML config file.
        #[arg(long, env = "DOCKET_CONFIG")]
        config: Option<PathBuf>,
        /// Human-readable logs instead of JSON.
        #[arg(long)]
        human_logs: bool,
    },
    /// Run a zero-configuration demo on localhost with a self-signed certificate.
    Demo {
        #[arg(long, default_value = "./docket-data")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 8443)]
        https_port: u16,
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        /// Size of the demo firm in the built-in fake Clio (records).
        #[arg(long, default_value_t = 20_000)]
        records: u64,
    },
    /// Check a config file.
    Config {
        #[command(subcommand)]
        command: ConfigCmd,
    },
    /// Manage the master key.
    Key {
        #[command(subcommand)]
        command: KeyCmd,
    },
    /// Manage orgs (firms).
    Org {
        #[command(subcommand)]
        command: OrgCmd,
    },
    /// Manage the break-glass local admin.
    Admin {
        #[command(subcommand)]
        command: AdminCmd,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// Check the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// Check the installation and the running service; print a checklist with
    /// a fix for each failure (exit 1 if any check fails).
    Doctor {
        /// Skip DNS, reachability and clock-skew checks of Clio, the identity
        /// providers and the ACME CA.
        #[arg(long)]
        no_network: bool,
        /// Timeout of each network check, in seconds.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// Rebuild the search index of one org (or of every org) beside the one
    /// in use, then swap it in atomically; searches go on meanwhile. Runs in
    /// the service when it is running, else on the store directly.
    Reindex {
        /// Only this org (slug).
        #[arg(long)]
        org: Option<String>,
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// Say what starting this docket will do to the store: its schema, the
    /// migrations to run, and the backup taken first. Changes nothing.
    UpgradeCheck {
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// List the scheduled jobs of every firm and of the appliance: schedule,
    /// next run and the last runs (start, end, outcome, bytes, items, error).
    Jobs {
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// Export a firm's data as a zip (one JSON or CSV file per kind and a
    /// manifest), from one consistent snapshot, with a progress bar.
    Export {
        /// The org (slug).
        #[arg(long)]
        org: String,
        /// `json` or `csv`.
        #[arg(long, default_value = "json")]
        format: String,
        /// Only this matter (Clio id) and what belongs to it.
        #[arg(long)]
        matter: Option<String>,
        /// Start each CSV file with a UTF-8 byte order mark (for spreadsheets).
        #[arg(long)]
        bom: bool,
        /// The zip file to write.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// Encrypted backups: take one now, list them, prove the newest restores.
    Backup {
        #[command(subcommand)]
        command: BackupCmd,
    },
    /// Restore a backup into a new data dir (or, with --replace, in place of the configured one).
    Restore {
        /// The backup's sealed file (or its manifest).
        #[arg(long, required_unless_present = "at", conflicts_with = "at")]
        backup: Option<PathBuf>,
        /// Point-in-time recovery: the state as of this instant (RFC 3339, or
        /// `now`), from the newest backup before it and the shipped journal segments.
        #[arg(long, conflicts_with = "replace", requires = "into")]
        at: Option<String>,
        /// With --at: the backup directory (default: backup.dir of --config), or
        /// off-site storage (`s3://bucket/prefix`, read with `[backup.offsite]` of
        /// --config or the `DOCKET_BACKUP__OFFSITE__*` environment).
        #[arg(long, requires = "at")]
        backup_dir: Option<PathBuf>,
        /// The new data dir to write; it must not exist or be empty.
        #[arg(long, required_unless_present = "replace")]
        into: Option<PathBuf>,
        /// Check everything (decrypt, import, verify), then remove what was built.
        #[arg(long)]
        dry_run: bool,
        /// With the service stopped: swap the restored dir in for the configured data dir, keeping the old one.
        #[arg(long, conflicts_with = "into")]
        replace: bool,
        /// An offline age identity file that opens the backup (repeatable).
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
        /// The backup signer to believe: its public key (ed25519:…) or fingerprint,
        /// as `docket doctor` prints it (repeatable; --config pins the instance's own).
        #[arg(long = "trust")]
        trust: Vec<String>,
        /// Also read unsigned files written before docket signed backups (legacy only).
        #[arg(long)]
        allow_unsigned: bool,
        /// Install the master key the backup carries even if the configured instance does not know it.
        #[arg(long)]
        accept_master_key: bool,
        #[arg(long, env = "DOCKET_CONFIG", conflicts_with = "data_dir")]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum BackupCmd {
    /// Take a backup now (through the running service when it runs).
    Now {
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// List the backups in backup.dir, oldest first.
    List {
        /// Another backup directory, or off-site storage (`s3://bucket/prefix`).
        #[arg(long)]
        backup_dir: Option<PathBuf>,
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// Restore the newest backup into a scratch dir and compare it with the live store.
    Verify {
        #[command(flatten)]
        instance: InstanceArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Verify every org's hash chain (exit 1 if any event was altered or removed).
    Verify {
        /// Only this org (slug).
        #[arg(long)]
        org: Option<String>,
        #[command(flatten)]
        instance: InstanceArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Validate the configuration and print it with where each value came from.
    Check {
        #[arg(long, env = "DOCKET_CONFIG")]
        config: PathBuf,
    },
}

/// How an admin command finds its instance.
#[derive(Args, Debug, Clone)]
pub struct InstanceArgs {
    /// The instance's config file.
    #[arg(long, env = "DOCKET_CONFIG", conflicts_with = "data_dir")]
    config: Option<PathBuf>,
    /// The instance's data dir (e.g. a demo's ./docket-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Create the master key (refuses to overwrite one).
    Generate {
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// Re-seal every secret under a new master key.
    Rotate {
        /// Delete the previous key after a rotation you have verified.
        #[arg(long)]
        confirm: bool,
        #[command(flatten)]
        instance: InstanceArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Create the break-glass local admin (an owner who signs in with a password
    /// and TOTP); run again to reset their credentials. Prints them once.
    Create {
        #[arg(long)]
        email: String,
        /// The org (slug); may be left out when there is only one.
        #[arg(long)]
        org: Option<String>,
        #[command(flatten)]
        instance: InstanceArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum OrgCmd {
    /// Create an org.
    Create {
        #[arg(long)]
        slug: String,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// List orgs.
    List {
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// Erase an org's cached Clio data now, irreversibly; its sync stays
    /// stopped until someone starts it.
    EraseData {
        #[arg(long)]
        org: String,
        /// The org's slug again, typed out.
        #[arg(long)]
        confirm: String,
        #[command(flatten)]
        instance: InstanceArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create an org service token (printed once).
    Create {
        #[arg(long)]
        org: String,
        /// owner, admin, manager, staff or auditor.
        #[arg(long)]
        role: crate::auth::Role,
        #[arg(long)]
        name: String,
        /// Days until the token expires (default: never).
        #[arg(long)]
        expires_days: Option<u32>,
        #[command(flatten)]
        instance: InstanceArgs,
    },
}

fn env_vars() -> Vec<(String, String)> {
    std::env::vars().collect()
}

/// Loads the full configuration for `serve`.
pub fn load_config(file: Option<&PathBuf>) -> Result<Loaded, ConfigError> {
    crate::config::load(file.map(PathBuf::as_path))
}

/// Loads what an admin command needs: with `--data-dir` only, TLS settings are
/// irrelevant, so TLS is treated as off.
fn load_instance_config(args: &InstanceArgs) -> Result<Loaded, ConfigError> {
    match (&args.config, &args.data_dir) {
        (Some(file), _) => load_config(Some(file)),
        (None, Some(dir)) => Layers::new()
            .env(env_vars())?
            .flag("data_dir", Value::String(dir.display().to_string()), "data-dir")
            .flag("tls.mode", Value::String("off".into()), "data-dir")
            .build(),
        (None, None) => Err(ConfigError {
            key: None,
            source: None,
            problem: "this command needs to know which docket instance to act on".into(),
            fix: "pass --config /etc/docket/docket.toml (or set DOCKET_CONFIG), or --data-dir DIR".into(),
        }),
    }
}

/// The instance's config when `--config` or `--data-dir` names one.
fn instance_config_if_named(args: &InstanceArgs) -> Result<Option<crate::config::Config>, Failure> {
    if args.config.is_none() && args.data_dir.is_none() {
        return Ok(None);
    }
    Ok(Some(load_instance_config(args)?.config))
}

/// Runs an admin command through the running server, or directly on the store.
async fn admin(args: &InstanceArgs, command: Command) -> Result<String, Failure> {
    let loaded = load_instance_config(args)?;
    let config = loaded.config;
    let failure = |message: String| Failure { code: 1, message };
    match control::send(&config.control_socket_path(), &command).await {
        Ok(Some(Reply::Ok(text))) => return Ok(text),
        Ok(Some(Reply::Err(text))) => return Err(failure(text)),
        Ok(None) => {}
        Err(e) => {
            return Err(failure(format!("cannot reach the running server's control socket: {e}")));
        }
    }
    let instance = Instance::open(config, Clock::system())?;
    match control::execute(&command, &instance.store, &instance.keys, &instance.config) {
        Reply::Ok(text) => Ok(text),
        Reply::Err(text) => Err(failure(text)),
    }
}

/// `docket reindex`: through the running server (which logs progress), or
/// on the store directly with a progress bar (log lines when not on a terminal).
async fn reindex(args: &InstanceArgs, org: Option<String>) -> Result<String, Failure> {
    let config = load_instance_config(args)?.config;
    let failure = |message: String| Failure { code: 1, message };
    match control::send(&config.control_socket_path(), &Command::Reindex { org: org.clone() }).await {
        Ok(Some(Reply::Ok(text))) => return Ok(text),
        Ok(Some(Reply::Err(text))) => return Err(failure(text)),
        Ok(None) => {}
        Err(e) => return Err(failure(format!("cannot reach the running server's control socket: {e}"))),
    }
    let data_dir = config.data_dir.clone();
    let instance = Instance::open(config, Clock::system())?;
    let orgs = control::orgs_named(&instance.store, org.as_deref()).map_err(failure)?;
    let mut report = String::new();
    for o in orgs {
        let mut progress = crate::search::indexer::progress_reporter(&o.slug);
        let seq = crate::search::indexer::reindex_offline(&data_dir, &instance.store, o.id, &mut progress)
            .map_err(|e| failure(format!("{}: {e}", o.slug)))?;
        report.push_str(&format!("{}: search index rebuilt and swapped in (journal seq {seq})\n", o.slug));
    }
    Ok(report)
}

/// Runs the parsed command line.
/// `docket backup now|list|verify`: through the running service when its
/// control socket answers, else against the store directly (with progress).
async fn backup_command(command: BackupCmd) -> Result<String, Failure> {
    let (instance, command) = match command {
        BackupCmd::List { backup_dir: Some(dir), instance } => {
            let config = instance_config_if_named(&instance)?;
            return lifecycle::offsite::download::list_command(&dir, config.as_ref())
                .await
                .map_err(|message| Failure { code: 1, message });
        }
        BackupCmd::List { backup_dir: None, instance } => {
            let config = load_instance_config(&instance)?.config;
            let failure = |e: lifecycle::backup::BackupError| Failure { code: 1, message: e.to_string() };
            let settings = lifecycle::backup::Settings::from_config(&config).map_err(failure)?;
            let backups = lifecycle::backup::list(&settings.dir).map_err(failure)?;
            return Ok(lifecycle::backup::describe(&backups) + &lifecycle::pitr::describe_window(&settings.dir));
        }
        BackupCmd::Now { instance } => (instance, Command::BackupNow),
        BackupCmd::Verify { instance } => (instance, Command::BackupVerify),
    };
    let config = load_instance_config(&instance)?.config;
    let failure = |message: String| Failure { code: 1, message };
    match control::send(&config.control_socket_path(), &command).await {
        Ok(Some(Reply::Ok(text))) => return Ok(text),
        Ok(Some(Reply::Err(text))) => return Err(failure(text)),
        Ok(None) => {}
        Err(e) => return Err(failure(format!("cannot reach the running server's control socket: {e}"))),
    }
    let name = if matches!(command, Command::BackupNow) { "docket backup now" } else { "docket backup verify" };
    let lock = lifecycle::scheduler::ExclusionLock::take(&config.data_dir, lifecycle::scheduler::BACKUP_RESTORE, name)
        .map_err(failure)?;
    let instance = Instance::open(config, Clock::system())?;
    tokio::task::spawn_blocking(move || {
        let _lock = lock;
        let progress = lifecycle::backup::progress::Cli::detect();
        control::backup(&command, &instance.store, &instance.keys, &instance.config, &progress)
    })
    .await
    .map_err(|e| failure(format!("the backup stopped: {e}")))?
    .map_err(failure)
}

pub async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Cmd::Serve { config, human_logs } => {
            let loaded = load_config(config.as_ref())?;
            let format = if human_logs { LogFormat::Human } else { loaded.config.log.format };
            telemetry::init_logging(format, &loaded.config.log.level);
            let instance = Instance::open(loaded.config, Clock::system())?;
            let mut running = app::start(instance).await?;
            running.config_file = config;
            app::serve_until_signal(running).await?;
            Ok(())
        }
        Cmd::Demo { data_dir, https_port, http_port, records } => {
            crate::demo::run(data_dir, https_port, http_port, records).await
        }
        Cmd::Config { command: ConfigCmd::Check { config } } => {
            let loaded = load_config(Some(&config))?;
            print!("{}", loaded.describe());
            if loaded.config.tls.mode == TlsMode::Off && loaded.config.server.trusted_proxies.is_empty() {
                eprintln!(
                    "note: tls.mode = \"off\" with no server.trusted_proxies: X-Forwarded-* headers will be ignored"
                );
            }
            eprintln!("configuration OK");
            Ok(())
        }
        Cmd::Key { command: KeyCmd::Generate { instance } } => {
            let config = load_instance_config(&instance)?.config;
            let path = config.keys.master_key_file.clone().unwrap_or_else(|| default_key_path(&config.data_dir));
            let keyring = Keyring::generate(&path).map_err(|e| Failure { code: 1, message: e.to_string() })?;
            println!("wrote the master key to {} (public key {})", path.display(), keyring.recipient());
            println!("back this file up offline: without it no secret or backup can be read");
            Ok(())
        }
        Cmd::Key { command: KeyCmd::Rotate { confirm, instance } } => {
            let command = if confirm { Command::KeyConfirm } else { Command::KeyRotate };
            println!("{}", admin(&instance, command).await?);
            Ok(())
        }
        Cmd::Org { command: OrgCmd::Create { slug, name, instance } } => {
            println!("{}", admin(&instance, Command::OrgCreate { slug, name }).await?);
            Ok(())
        }
        Cmd::Org { command: OrgCmd::List { instance } } => {
            print!("{}", admin(&instance, Command::OrgList).await?);
            Ok(())
        }
        Cmd::Jobs { instance } => {
            print!("{}", admin(&instance, Command::Jobs).await?);
            Ok(())
        }
        Cmd::Audit { command: AuditCmd::Verify { org, instance } } => {
            print!("{}", admin(&instance, Command::AuditVerify { org }).await?);
            Ok(())
        }
        Cmd::Doctor { no_network, timeout, instance } => {
            let options = lifecycle::doctor::Options { network: !no_network, timeout: Duration::from_secs(timeout) };
            let report = lifecycle::doctor::run(load_instance_config(&instance).map(|l| l.config), &options).await;
            print!("{}", report.render());
            if report.failed() {
                return Err(Failure { code: 1, message: "some checks failed; each names its fix above".into() });
            }
            Ok(())
        }
        Cmd::UpgradeCheck { instance } => {
            let config = load_instance_config(&instance)?.config;
            let plan = lifecycle::upgrade::plan(&config.store_path(), crate::store::SCHEMA_VERSION, &Clock::system())
                .map_err(|message| Failure { code: 1, message })?;
            print!("{}", plan.describe());
            if let lifecycle::upgrade::Action::Refuse { .. } = plan.action {
                return Err(Failure { code: 1, message: "this docket cannot open the store".into() });
            }
            Ok(())
        }
        Cmd::Reindex { org, instance } => {
            print!("{}", reindex(&instance, org).await?);
            Ok(())
        }
        Cmd::Backup { command } => {
            print!("{}", backup_command(command).await?);
            Ok(())
        }
        Cmd::Restore {
            backup,
            at,
            backup_dir,
            into,
            dry_run,
            replace,
            keys,
            trust,
            allow_unsigned,
            accept_master_key,
            config,
            data_dir,
        } => {
            let instance = InstanceArgs { config, data_dir };
            let config = if instance.config.is_some() || instance.data_dir.is_some() {
                Some(load_instance_config(&instance)?.config)
            } else {
                None
            };
            let progress = lifecycle::backup::progress::Cli::detect();
            let staged = match (&backup_dir, &at) {
                (Some(dir), Some(at)) if lifecycle::offsite::is_remote(dir) => Some(
                    lifecycle::offsite::download::stage_for_restore(dir, at, into.as_deref(), config.as_ref())
                        .await
                        .map_err(|message| Failure { code: 1, message })?,
                ),
                _ => None,
            };
            let backup_dir = staged.as_ref().map(|s| s.dir.path().to_path_buf()).or(backup_dir);
            let report = tokio::task::spawn_blocking(move || match (at, backup) {
                (Some(at), _) => {
                    let into = into.unwrap_or_default();
                    let request = lifecycle::pitr::Request {
                        at,
                        backup_dir,
                        into,
                        dry_run,
                        keys,
                        config,
                        trust,
                        allow_unsigned,
                        accept_master_key,
                    };
                    lifecycle::pitr::command(&request, &progress)
                }
                (None, backup) => {
                    let backup = backup.unwrap_or_default();
                    let request = lifecycle::restore::Request {
                        backup,
                        into,
                        dry_run,
                        replace,
                        keys,
                        config,
                        trust,
                        allow_unsigned,
                        accept_master_key,
                    };
                    lifecycle::restore::command(&request, &progress)
                }
            })
            .await
            .map_err(|e| Failure { code: 1, message: format!("the restore stopped: {e}") })?;
            let report = match &staged {
                Some(staged) => report.map(|r| staged.describe(&r)).map_err(|e| staged.describe(&e)),
                None => report,
            };
            print!("{}", report.map_err(|message| Failure { code: 1, message })?);
            Ok(())
        }
        Cmd::Admin { command: AdminCmd::Create { email, org, instance } } => {
            print!("{}", admin(&instance, Command::AdminCreate { email, org }).await?);
            Ok(())
        }
        Cmd::Token { command: TokenCmd::Create { org, role, name, expires_days, instance } } => {
            print!("{}", admin(&instance, Command::TokenCreate { org, role, name, expires_days }).await?);
            Ok(())
        }
        Cmd::Org { command: OrgCmd::EraseData { org, confirm, instance } } => {
            print!("{}", admin(&instance, Command::EraseData { org, confirm }).await?);
            Ok(())
        }
        Cmd::Export { org, format, matter, bom, out, instance } => {
            print!("{}", export(&instance, org, format, matter, bom, out).await?);
            Ok(())
        }
    }
}

/// `docket export`: through the running server (which writes the file), or
/// on the store directly with a progress bar.
async fn export(
    args: &InstanceArgs,
    org: String,
    format: String,
    matter: Option<String>,
    bom: bool,
    out: PathBuf,
) -> Result<String, Failure> {
    let failure = |message: String| Failure { code: 1, message };
    let out = std::path::absolute(&out).map_err(|e| failure(format!("--out {}: {e}", out.display())))?;
    let config = load_instance_config(args)?.config;
    let command =
        Command::Export { org: org.clone(), format: format.clone(), matter: matter.clone(), bom, out: out.clone() };
    match control::send(&config.control_socket_path(), &command).await {
        Ok(Some(Reply::Ok(text))) => return Ok(text),
        Ok(Some(Reply::Err(text))) => return Err(failure(text)),
        Ok(None) => {}
        Err(e) => return Err(failure(format!("cannot reach the running server's control socket: {e}"))),
    }
    let instance = Instance::open(config, Clock::system())?;
    let bar = export_progress(&org);
    let result = control::export(&instance.store, &org, &format, &matter, bom, &out, |n| bar.set_position(n));
    bar.finish_and_clear();
    result.map_err(failure)
}

/// A spinner with the running record count (hidden when not on a terminal).
fn export_progress(org: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{prefix} {spinner} {pos} records exported ({per_sec})")
    {
        bar.set_style(style);
    }
    bar.set_prefix(org.to_string());
    bar
}
