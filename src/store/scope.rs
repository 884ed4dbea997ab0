//! Tenancy as a type: tenant data is reachable only through an [`OrgScope`].
//!
//! An `OrgScope` is made in exactly two ways: by `auth` after it has verified a
//! credential ([`OrgScope::authenticated`]), or from an explicit
//! [`SystemContext`] that names the job acting (scheduler, CLI, sync). Store
//! functions that touch tenant rows take `&OrgScope` and derive the key prefix
//! from it, so code that forgets the tenant check does not compile.
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

/// The appliance acting on its own behalf (scheduler, CLI, migrations).
/// Every use names its task so it is greppable and auditable.
#[derive(Clone, Copy, Debug)]
pub struct SystemContext {
    task: &'static str,
}

impl SystemContext {
    pub const fn new(task: &'static str) -> SystemContext {
        SystemContext { task }
    }

    pub fn task(&self) -> &'static str {
        self.task
    }

    /// A scope over one org, acting as this system task.
    pub fn org_scope(&self, org: OrgId) -> OrgScope {
        OrgScope { org, actor: Actor::System(self.task) }
    }
}
