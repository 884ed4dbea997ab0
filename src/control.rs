//! Admin commands, and the local channel the CLI uses to run them inside a
//! running server.
//!
//! redb lets one process open the store, so while the service runs, `docket org
//! create` and friends connect to `<data_dir>/control.sock` (mode 0600, owned by
//! the service user) and the server executes the command; when no server
//! listens, the CLI opens the store itself. Either way [`execute`] does the work.
//! The protocol is one JSON request line and one JSON response line.
use crate::audit::{self, Outcome};
use crate::auth::{Role, local, tokens};
use crate::config::Config;
use crate::lifecycle::{backup, keys, scheduler};
use crate::secrets::SharedKeyring;
use crate::store::orgs::{self, Org};
use crate::store::{OrgTask, OrgTaskContext, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// An admin command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    OrgCreate {
        slug: String,
        name: String,
    },
    OrgList,
    TokenCreate {
        org: String,
        role: Role,
        name: String,
        expires_days: Option<u32>,
    },
    /// Create (or reset) the break-glass local admin of an org.
    AdminCreate {
        email: String,
        /// Org slug; may be omitted when there is exactly one org.
        org: Option<String>,
    },
    KeyRotate,
    KeyConfirm,
    /// Verify the audit chain of one org (by slug), or of every org.
    AuditVerify {
        org: Option<String>,
    },
    /// Rebuild the search index of one org (by slug), or of every org, beside
    /// the one in use, then swap (the running server's indexer does it).
    Reindex {
        org: Option<String>,
    },
    /// List the scheduled jobs: schedules, next runs, last runs (every org's).
    Jobs,
    /// Take a backup now (`docket backup now`).
    BackupNow,
    /// Prove the newest backup restores (`docket backup verify`).
    BackupVerify,
    /// Write an org's export (`docket export`) to `out`, an absolute path.
    Export {
        org: String,
        /// `json` or `csv`.
        format: String,
        matter: Option<String>,
        bom: bool,
        out: std::path::PathBuf,
    },
    /// Erase an org's cached Clio data now (`docket org erase-data`); `confirm` must be its slug.
    EraseData {
        org: String,
        confirm: String,
    },
}

/// The outcome of a command: text for the operator, or an error message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Reply {
    Ok(String),
    Err(String),
}

/// Runs `command` against an open store.
pub fn execute(command: &Command, store: &Store, keys: &SharedKeyring, config: &Config) -> Reply {
    let ctx = OrgTaskContext::new(OrgTask::AdminCli);
    let result: Result<String, String> = match command {
        Command::OrgCreate { slug, name } => create_org(store, &ctx, slug, name)
            .map(|o| format!("created org {} (id {}): {}", o.slug, o.id, o.name))
            .map_err(|e| e.to_string()),
        Command::OrgList => store
            .list_orgs()
            .map(|orgs| orgs.iter().map(|o| format!("{}\t{}\t{}\n", o.id, o.slug, o.name)).collect())
            .map_err(|e| e.to_string()),
        Command::TokenCreate { org, role, name, expires_days } => match store.org_by_slug(org) {
            Ok(Some(o)) => tokens::create_service(store, &ctx, o.id, name, role.as_str(), *expires_days)
                .map(|(secret, record)| {
                    format!(
                        "{}\n# {} (org {}); shown once: store it in your integration's secret store\n",
                        secret.expose(),
                        tokens::describe(&record),
                        o.slug
                    )
                })
                .map_err(|e| e.to_string()),
            Ok(None) => Err(format!("no org has the slug `{org}`\n  fix: list orgs with `docket org list`")),
            Err(e) => Err(e.to_string()),
        },
        Command::AdminCreate { email, org } => admin_create(store, keys, &ctx, email, org.as_deref()),
        Command::KeyRotate => keys::rotate(store, keys).map_err(|e| e.to_string()).map(|text| {
            match backup::after_rotation(config, store, &keys.current()) {
                Ok(()) => text,
                Err(e) => format!("{text}\nwarning: the backup keyring was not resealed to the new key: {e}"),
            }
        }),
        Command::KeyConfirm => keys::confirm(keys).map_err(|e| e.to_string()),
        Command::AuditVerify { org } => verify_audit(store, org.as_deref()),
        Command::Reindex { .. } => Err("a reindex needs the search engine: run `docket reindex`".into()),
        Command::Jobs => recorded_jobs(store),
        Command::BackupNow | Command::BackupVerify => backup(command, store, keys, config, &backup::Quiet),
        Command::Export { org, format, matter, bom, out } => export(store, org, format, matter, *bom, out, |_| {}),
        Command::EraseData { org, confirm } => erase_data(store, &ctx, org, confirm, &config.backup_dir()),
    };
    match result {
        Ok(text) => Reply::Ok(text),
        Err(text) => Reply::Err(text),
    }
}

/// The orgs `slug` names: that one, or every org when `None`.
pub fn orgs_named(store: &Store, slug: Option<&str>) -> Result<Vec<Org>, String> {
    let orgs = store.list_orgs().map_err(|e| e.to_string())?;
    let chosen: Vec<Org> = orgs.into_iter().filter(|o| slug.is_none_or(|s| s == o.slug)).collect();
    if chosen.is_empty() {
        return Err(match slug {
            Some(s) => format!("no org has the slug `{s}`\n  fix: list orgs with `docket org list`"),
            None => "there is no org yet\n  fix: create one with `docket org create --slug … --name …`".into(),
        });
    }
    Ok(chosen)
}

/// `docket reindex` inside the running server: asks the indexer to rebuild
/// each org's index beside the one in use (which keeps serving), logs the
/// progress, and answers once every swap is done.
async fn reindex(engine: Arc<crate::search::Engine>, slug: Option<String>) -> Reply {
    let store = engine.store().clone();
    let orgs = match tokio::task::spawn_blocking(move || orgs_named(&store, slug.as_deref())).await {
        Ok(Ok(orgs)) => orgs,
        Ok(Err(e)) => return Reply::Err(e),
        Err(_) => return Reply::Err("the command failed inside the server".into()),
    };
    let mut done = engine.rebuilds();
    engine.request_reindex(orgs.iter().map(|o| o.id));
    while orgs.iter().any(|o| engine.reindex_pending(o.id)) {
        if done.changed().await.is_err() {
            return Reply::Err("the server is stopping; the old indexes stay in use".into());
        }
    }
    let mut report = String::new();
    for org in &orgs {
        match engine.status(org.id) {
            Some(crate::search::Status::Ready { seq }) => {
                report.push_str(&format!("{}: search index rebuilt and swapped in (journal seq {seq})\n", org.slug));
            }
            other => {
                return Reply::Err(format!(
                    "{}: the rebuild did not finish ({other:?}); see the service log",
                    org.slug
                ));
            }
        }
    }
    Reply::Ok(report)
}

/// The org named by `slug`, or the only org when `slug` is `None`.
fn resolve_org(store: &Store, slug: Option<&str>) -> Result<Org, String> {
    let orgs = store.list_orgs().map_err(|e| e.to_string())?;
    match slug {
        Some(s) => orgs
            .into_iter()
            .find(|o| o.slug == s)
            .ok_or_else(|| format!("no org has the slug `{s}`\n  fix: list orgs with `docket org list`")),
        None if orgs.len() == 1 => Ok(orgs.into_iter().next().ok_or("no org")?),
        None if orgs.is_empty() => {
            Err("there is no org yet\n  fix: create one with `docket org create --slug … --name …`".into())
        }
        None => Err("there are several orgs\n  fix: name one with --org SLUG (see `docket org list`)".into()),
    }
}

fn admin_create(
    store: &Store,
    keys: &SharedKeyring,
    ctx: &OrgTaskContext,
    email: &str,
    org: Option<&str>,
) -> Result<String, String> {
    let org = resolve_org(store, org)?;
    let creds = local::create_admin(store, keys, ctx, org.id, email).map_err(|e| e.to_string())?;
    Ok(describe_admin(&creds, &org.slug))
}

/// The one-time printout of a break-glass admin's credentials.
pub fn describe_admin(creds: &local::AdminCredentials, org: &str) -> String {
    let verb = if creds.reset { "reset (old password, TOTP and recovery codes no longer work)" } else { "created" };
    let codes: String = creds.recovery_codes.iter().map(|c| format!("    {c}\n")).collect();
    format!(
        "break-glass admin {} ({}) {verb}: owner of {org}\n\
         \x20 email:        {}\n\
         \x20 password:     {}\n\
         \x20 TOTP secret:  {}   (add it to an authenticator app)\n\
         \x20 TOTP URI:     {}\n\
         \x20 recovery codes, each usable once instead of a TOTP code:\n{codes}\
         Shown once: keep them in the firm's password safe. Sign in on the web app's local sign-in form.\n",
        creds.user.email,
        creds.user.id,
        creds.user.email,
        creds.password.expose(),
        creds.totp_secret,
        creds.totp_uri
    )
}

/// Creates an org and opens its audit chain with `org.create`, atomically.
pub fn create_org(store: &Store, ctx: &OrgTaskContext, slug: &str, name: &str) -> Result<Org, StoreError> {
    store.write(|w| {
        let org = orgs::create(w, ctx, slug, name)?;
        let target = format!("org:{}", org.id);
        let details = serde_json::json!({ "slug": org.slug });
        audit::record(
            w,
            &ctx.org_scope(org.id),
            &audit::Context::default(),
            "org.create",
            &target,
            Outcome::Success,
            details,
        )?;
        Ok(org)
    })
}

/// `docket backup now` (one backup of `store`) or `docket backup verify`
/// (the newest backup restored into a scratch dir and compared with `store`).
pub fn backup(
    command: &Command,
    store: &Store,
    keys: &SharedKeyring,
    config: &Config,
    progress: &dyn backup::Progress,
) -> Result<String, String> {
    let keyring = keys.current();
    if !matches!(command, Command::BackupVerify) {
        let info = backup::job_backup(store, &keyring, config, None, progress).map_err(|e| e.to_string())?;
        return Ok(describe_backup(&info));
    }
    let v = crate::lifecycle::verify::job_verify(store, &keyring, config, None, progress).map_err(|e| e.to_string())?;
    let against = if v.against_live { "the live store" } else { "the digests recorded at backup time" };
    Ok(format!(
        "{} restores: {} rows; {} parts (org × table) match {against} at seq {}\n",
        v.backup.display(),
        v.rows,
        v.parts,
        v.compared_seq
    ))
}

/// Runs `job` at once on the running service's scheduler (so it is excluded
/// from restores and other backups, and recorded in the job history), waits
/// for it and reports how it went.
async fn scheduled(state: Arc<crate::state::AppState>, job: &'static str) -> Reply {
    // A run of the job or of its exclusion group in flight is waited for:
    // "backup now" then takes a fresh backup after it.
    let started = loop {
        match state.scheduler.run_now(job, scheduler::Target::Appliance) {
            Ok(started) => break started,
            Err(scheduler::NotStarted::Unknown(name)) => return Reply::Err(format!("no job is named `{name}`")),
            Err(waiting) => {
                tracing::info!(job, reason = %waiting, "waiting to run a job asked for over the control socket");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
    };
    started.finished().await;
    let outcome = tokio::task::spawn_blocking(move || {
        let run = crate::lifecycle::jobs::last(&state.store, job, scheduler::Target::Appliance)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("`{job}` left no record of its run; see the service log"))?;
        if run.outcome != crate::lifecycle::jobs::Outcome::Ok {
            return Err(run.error.unwrap_or_else(|| format!("`{job}` did not finish; see the service log")));
        }
        let dir = state.config.backup_dir();
        if job == crate::app::BACKUP {
            let newest = backup::list(&dir).map_err(|e| e.to_string())?;
            newest.last().map(describe_backup).ok_or_else(|| format!("no backup is in {}", dir.display()))
        } else {
            Ok(crate::lifecycle::verify::last(&dir)
                .map(|s| format!("{}: {}\n", s.backup, s.detail))
                .unwrap_or_default())
        }
    })
    .await
    .unwrap_or_else(|_| Err("the command failed inside the server".into()));
    match outcome {
        Ok(text) => Reply::Ok(text),
        Err(e) => Reply::Err(e),
    }
}

/// One line about a backup just written.
fn describe_backup(info: &backup::BackupInfo) -> String {
    let m = &info.manifest;
    let size = crate::lifecycle::upgrade::human_bytes(m.bytes);
    format!("wrote {} ({size}, {} rows, journal seq {})\n", info.path.display(), m.rows, m.head_seq)
}

/// Verifies audit chains; any tampering makes the whole command fail.
fn verify_audit(store: &Store, slug: Option<&str>) -> Result<String, String> {
    let orgs = store.list_orgs().map_err(|e| e.to_string())?;
    let chosen: Vec<_> = orgs.iter().filter(|o| slug.is_none_or(|s| s == o.slug)).collect();
    if chosen.is_empty() {
        return Err(format!("no org has the slug `{}`\n  fix: list orgs with `docket org list`", slug.unwrap_or("")));
    }
    let ctx = OrgTaskContext::new(OrgTask::AuditVerify);
    let (mut report, mut tampered) = (String::new(), false);
    for org in chosen {
        match audit::verify(store, &ctx.org_scope(org.id)).map_err(|e| e.to_string())? {
            Ok(n) => report.push_str(&format!("{}: {n} events, chain intact\n", org.slug)),
            Err(t) => {
                tampered = true;
                report.push_str(&format!("{}: TAMPERED: {t}\n", org.slug));
            }
        }
    }
    if tampered { Err(report.trim_end().to_string()) } else { Ok(report) }
}

/// `docket jobs` with no service running: the history in the store.
fn recorded_jobs(store: &Store) -> Result<String, String> {
    let orgs: Vec<_> = store.list_orgs().map_err(|e| e.to_string())?.iter().map(|o| o.id).collect();
    let views = scheduler::recorded(store, &orgs, JOB_RUNS_SHOWN).map_err(|e| e.to_string())?;
    Ok(format!(
        "the service is not running: no job is scheduled now; the runs recorded:\n{}",
        scheduler::describe(&views)
    ))
}

/// Runs per job that `docket jobs` shows.
const JOB_RUNS_SHOWN: usize = 5;

/// Listens on the control socket until the returned task is aborted; commands
/// that need the running service (`docket jobs`, `docket reindex`) use `state`.
pub fn listen(path: &Path, state: Arc<crate::state::AppState>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(stream, state).await {
                    tracing::warn!(error = %e, "control connection failed");
                }
            });
        }
    }))
}

async fn handle(stream: UnixStream, state: Arc<crate::state::AppState>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let line = read_line(read).await?;
    let reply = match serde_json::from_str::<Command>(&line) {
        Ok(Command::Reindex { org }) => {
            tracing::info!(command = "reindex", "admin command over the control socket");
            reindex(state.search.clone(), org).await
        }
        Ok(command @ (Command::BackupNow | Command::BackupVerify)) => {
            tracing::info!(command = ?command_name(&command), "admin command over the control socket");
            let job =
                if matches!(command, Command::BackupNow) { crate::app::BACKUP } else { crate::app::BACKUP_VERIFY };
            scheduled(state, job).await
        }
        Ok(command) => {
            tracing::info!(command = ?command_name(&command), "admin command over the control socket");
            tokio::task::spawn_blocking(move || match &command {
                Command::Jobs => match state.scheduler.overview_all(JOB_RUNS_SHOWN) {
                    Ok(views) => Reply::Ok(scheduler::describe(&views)),
                    Err(e) => Reply::Err(e.to_string()),
                },
                _ => execute(&command, &state.store, &state.keys, &state.config),
            })
            .await
            .unwrap_or_else(|_| Reply::Err("the command failed inside the server".into()))
        }
        Err(e) => Reply::Err(format!("malformed control request: {e}")),
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    write.write_all(&out).await
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::OrgCreate { .. } => "org-create",
        Command::OrgList => "org-list",
        Command::TokenCreate { .. } => "token-create",
        Command::AdminCreate { .. } => "admin-create",
        Command::KeyRotate => "key-rotate",
        Command::KeyConfirm => "key-confirm",
        Command::AuditVerify { .. } => "audit-verify",
        Command::Reindex { .. } => "reindex",
        Command::Jobs => "jobs",
        Command::BackupNow => "backup-now",
        Command::BackupVerify => "backup-verify",
        Command::Export { .. } => "export",
        Command::EraseData { .. } => "erase-data",
    }
}

/// `docket export`: the org's data as a zip at `out`; `progress` sees the running record count.
pub fn export(
    store: &Store,
    org: &str,
    format: &str,
    matter: &Option<String>,
    bom: bool,
    out: &std::path::Path,
    progress: impl FnMut(u64),
) -> Result<String, String> {
    use crate::lifecycle::export::{Format, Options, Selection, to_file};
    let format = Format::parse(format)?;
    let o = orgs_named(store, Some(org))?.remove(0);
    let selection = matter.clone().map_or(Selection::All, Selection::Matter);
    let m = to_file(store, o.id, &Options { format, selection, bom }, out, progress)?;
    Ok(format!(
        "exported {} records of {} as {} to {} (snapshot {}, journal seq {})\n",
        m.total,
        o.slug,
        m.format,
        out.display(),
        m.snapshot_at,
        m.journal_seq
    ))
}

/// `docket org erase-data`: erases the org's cached Clio data, audited as the admin CLI.
fn erase_data(
    store: &Store,
    ctx: &OrgTaskContext,
    org: &str,
    confirm: &str,
    ledger: &std::path::Path,
) -> Result<String, String> {
    use crate::lifecycle::erase;
    let o = orgs_named(store, Some(org))?.remove(0);
    let scope = ctx.org_scope(o.id);
    erase::check_confirmation(store, &scope, confirm).map_err(|e| format!("--confirm {e}"))?;
    let done =
        erase::erase_clio_data(store, &scope, &crate::audit::Context::default(), ledger).map_err(|e| e.to_string())?;
    Ok(format!(
        "erased {} records of {} and redacted {} journal entries; its sync stays stopped until someone starts it\n",
        done.records, o.slug, done.journal_entries
    ))
}

/// Reads one line of at most 64 KiB.
async fn read_line<R: tokio::io::AsyncRead + Unpin>(r: R) -> std::io::Result<String> {
    let mut line = String::new();
    BufReader::new(tokio::io::AsyncReadExt::take(r, 64 * 1024)).read_line(&mut line).await?;
    Ok(line)
}

/// Sends `command` to a running server. `Ok(None)` when no server listens.
pub async fn send(socket: &PathBuf, command: &Command) -> std::io::Result<Option<Reply>> {
    let stream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let (read, mut write) = stream.into_split();
    let mut req = serde_json::to_vec(command).map_err(std::io::Error::other)?;
    req.push(b'\n');
    write.write_all(&req).await?;
    let line = read_line(read).await?;
    serde_json::from_str(&line).map(Some).map_err(std::io::Error::other)
}
