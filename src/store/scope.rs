//! Tenancy as a type: tenant data is reachable only through an [`OrgScope`].
//!
//! An `OrgScope` is made in exactly two ways: by `auth` after it has verified a
//! credential ([`OrgScope::authenticated`]; a test scans `src/` and fails on a
//! call outside `auth`), or by an [`OrgTaskContext`], a system task from the
//! closed list [`OrgTask`] of tasks that must act for an org (sync, admin
//! commands). Appliance tasks ([`Task`]) get a [`SystemContext`], which
//! cannot make an org scope. Allowed:
//!
//! ```
//! use docket::store::{OrgId, OrgTask, OrgTaskContext, SystemContext, Task};
//! let scope = OrgTaskContext::new(OrgTask::ClioSync).org_scope(OrgId(1));
//! let system = SystemContext::new(Task::Acme);
//! ```
//!
//! Refused (each differs from the above by the forbidden step):
//!
//! ```compile_fail
//! use docket::store::{OrgId, SystemContext, Task};
//! let scope = SystemContext::new(Task::Acme).org_scope(OrgId(1));
//! ```
//!
//! ```compile_fail
//! let ctx = docket::store::SystemContext::new("anything");
//! ```
//!
//! ```compile_fail
//! use docket::store::{Actor, OrgId, OrgScope};
//! let scope = OrgScope::authenticated(OrgId(1), Actor::System("forged"));
//! ```
//!
//! Store functions that touch tenant rows take `&OrgScope` and derive the key
//! prefix from it, so code that forgets the tenant check does not compile.
use serde::{Deserialize, Serialize};
use std::fmt;

/// A firm's id. Holding one grants nothing: it is only a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrgId(pub u64);

impl OrgId {
    /// The 8-byte prefix of every tenant key of this org.
    pub fn prefix(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Who is acting inside a scope; recorded in the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// A job or admin command of the appliance itself.
    System(&'static str),
    /// An API token, by its public id.
    Token(String),
    /// A signed-in user, by user id.
    User(String),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::System(task) => write!(f, "system:{task}"),
            Actor::Token(id) => write!(f, "token:{id}"),
            Actor::User(id) => write!(f, "user:{id}"),
        }
    }
}

/// Permission to read and write one org's data.
#[derive(Clone, Debug)]
pub struct OrgScope {
    org: OrgId,
    actor: Actor,
}

impl OrgScope {
    /// For `auth` only: a scope for a principal whose credential was verified.
    /// (`scope::tests::authenticated_is_called_only_from_auth` pins the callers.)
    pub(crate) fn authenticated(org: OrgId, actor: Actor) -> OrgScope {
        OrgScope { org, actor }
    }

    pub fn org(&self) -> OrgId {
        self.org
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }
}

/// Generates a closed task list with each task's audit name.
macro_rules! tasks {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every task of the list.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The name recorded in logs and the audit trail.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }
    };
}

tasks! {
    /// Appliance tasks: they touch system tables only.
    Task {
        /// Keeping the ACME account and certificate.
        Acme => "acme",
        /// Making the self-signed certificate.
        TlsSelfSigned => "tls-self-signed",
        /// Proving the master key opens the store.
        KeyCheck => "key-check",
        /// Browser sessions (`auth::sessions`).
        Sessions => "sessions",
        /// Sign-in names of members (`auth::users`).
        Members => "members",
        /// API token records (`auth::tokens`).
        Tokens => "tokens",
        /// An org admin's settings change (`store::orgs::update`).
        OrgSettings => "org-settings",
        /// Backups: shipping the journal, exporting every table, pruning.
        Backup => "backup",
        /// Restoring a backup or replaying a journal into an empty store.
        Restore => "restore",
        /// The scheduler: history of the appliance's jobs (`lifecycle::jobs`).
        Scheduler => "scheduler",
        /// The change feed: reads the journal's record rows for a caller's firm.
        ChangeFeed => "change-feed",
        /// Tests and benchmarks (a source scan keeps it out of production code).
        Test => "test",
    }
}

tasks! {
    /// Tasks that must act for an org: only these can make an [`OrgScope`].
    OrgTask {
        /// `docket org create`, `docket token create` and other admin commands.
        AdminCli => "admin-cli",
        /// `docket audit verify`.
        AuditVerify => "audit-verify",
        /// The Clio sync of a firm.
        ClioSync => "clio-sync",
        /// Clio webhook subscriptions and deliveries.
        ClioWebhooks => "clio-webhooks",
        /// The zero-configuration demo.
        Demo => "demo",
        /// Master key rotation (audited in every org).
        KeyRotate => "key-rotate",
        /// OIDC just-in-time membership.
        OidcSignIn => "oidc-sign-in",
        /// Ending a session (audited in its org).
        SignOut => "sign-out",
        /// The search indexer: follows the journal, rebuilds an org's index.
        SearchIndex => "search-index",
        /// A store migration that rebuilds an org's rows (schema 3: the record index).
        Migrate => "migrate",
        /// The scheduler: history of an org's jobs (`lifecycle::jobs`).
        OrgJobs => "org-jobs",
        /// Purging a disconnected firm's cached Clio data (`clio::purge`).
        ClioPurge => "clio-purge",
        /// Outbound webhooks: queueing and delivering a firm's changes (`outbound`).
        Outbound => "outbound-webhooks",
        /// `docket export`: a firm's data as a zip (`lifecycle::export`).
        Export => "export",
        /// Erasing a firm's data, or deleting the firm (`lifecycle::erase`).
        Erase => "erase",
        /// Retention sweeps of a firm's expired rows (`lifecycle::retention`).
        Retention => "retention",
        /// Tests and benchmarks (a source scan keeps it out of production code).
        Test => "test",
    }
}

/// The appliance acting on its own behalf, naming its task so every use is
/// greppable and auditable. It reaches system tables only.
#[derive(Clone, Copy, Debug)]
pub struct SystemContext {
    task: &'static str,
}

impl SystemContext {
    pub const fn new(task: Task) -> SystemContext {
        SystemContext { task: task.name() }
    }

    pub fn task(&self) -> &'static str {
        self.task
    }
}

/// A system task that acts for orgs: a [`SystemContext`] (by `Deref`) that can
/// also make an org scope.
#[derive(Clone, Copy, Debug)]
pub struct OrgTaskContext {
    system: SystemContext,
}

impl OrgTaskContext {
    pub const fn new(task: OrgTask) -> OrgTaskContext {
        OrgTaskContext { system: SystemContext { task: task.name() } }
    }

    /// A scope over one org, acting as this task.
    pub fn org_scope(&self, org: OrgId) -> OrgScope {
        OrgScope { org, actor: Actor::System(self.system.task) }
    }
}

impl std::ops::Deref for OrgTaskContext {
    type Target = SystemContext;

    fn deref(&self) -> &SystemContext {
        &self.system
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// `(path relative to the crate, production text before any `#[cfg(test)]`)`.
    fn production_sources() -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = vec![];
        rust_files(&root.join("src"), &mut files);
        files
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).unwrap();
                let production = text.split("#[cfg(test)]").next().unwrap_or_default().to_string();
                (path.strip_prefix(root).unwrap().display().to_string(), production)
            })
            .collect()
    }

    /// Whether `text` names the function `authenticated` (a call or a path), not
    /// a longer word such as `unauthenticated`.
    fn calls_authenticated(text: &str) -> bool {
        text.match_indices("authenticated").any(|(at, word)| {
            let before = text[..at].chars().next_back();
            let after = text[at + word.len()..].chars().next();
            let whole = !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                && !after.is_some_and(|c| c.is_alphanumeric() || c == '_');
            whole && (after == Some('(') || text[..at].ends_with("::"))
        })
    }

    #[test]
    fn the_scan_finds_calls_and_paths_only() {
        assert!(calls_authenticated("OrgScope::authenticated(org, actor)"));
        assert!(calls_authenticated("use crate::store::OrgScope; let f = OrgScope::authenticated;"));
        assert!(!calls_authenticated("fn unauthenticated(detail: &str)"));
        assert!(!calls_authenticated("// the caller is authenticated."));
    }

    #[test]
    fn authenticated_is_called_only_from_auth() {
        let callers: Vec<String> = production_sources()
            .into_iter()
            .filter(|(path, text)| {
                calls_authenticated(text) && !path.starts_with("src/auth/") && path != "src/store/scope.rs"
            })
            .map(|(path, _)| path)
            .collect();
        assert!(callers.is_empty(), "OrgScope::authenticated is for `auth` only; called from {callers:?}");
    }

    #[test]
    fn test_tasks_stay_out_of_production_code() {
        let users: Vec<String> = production_sources()
            .into_iter()
            .filter(|(path, text)| text.contains("Task::Test") && path != "src/store/scope.rs")
            .map(|(path, _)| path)
            .collect();
        assert!(users.is_empty(), "Task::Test / OrgTask::Test belong in tests; used in {users:?}");
    }

    #[test]
    fn task_names_are_unique_and_only_org_tasks_make_scopes() {
        let mut names: Vec<&str> = Task::ALL.iter().map(|t| t.name()).collect();
        names.extend(OrgTask::ALL.iter().filter(|t| **t != OrgTask::Test).map(|t| t.name()));
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "task names are unique");
        let scope = OrgTaskContext::new(OrgTask::ClioSync).org_scope(OrgId(4));
        assert_eq!((scope.org(), scope.actor().to_string()), (OrgId(4), "system:clio-sync".to_string()));
    }
}
