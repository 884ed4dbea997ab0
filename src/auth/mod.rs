//! Who is calling, and what they may do.
//!
//! This is the only module that turns a credential into an [`OrgScope`]
//! (via `OrgScope::authenticated`). Issue-level features (OIDC, sessions,
//! break-glass admin, walls) build on the [`Principal`] defined here.
pub mod limits;
pub mod tokens;

use crate::store::{Actor, OrgScope};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A built-in role within an org.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Manager,
    Staff,
    /// Read-only, with access to the audit trail.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Owner, Role::Admin, Role::Manager, Role::Staff, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Manager => "manager",
            Role::Staff => "staff",
            Role::Auditor => "auditor",
        }
    }

    /// Whether this role holds `permission`.
    pub fn allows(self, permission: Permission) -> bool {
        match permission {
            Permission::OrgRead => true,
            Permission::OrgWrite => matches!(self, Role::Owner | Role::Admin),
            Permission::AuditRead => matches!(self, Role::Owner | Role::Admin | Role::Auditor),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a role; use one of owner, admin, manager, staff, auditor"))
    }
}

/// A permission an API operation may require.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Read the org's own settings.
    OrgRead,
    /// Change the org's settings.
    OrgWrite,
    /// Read and export the audit trail.
    AuditRead,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::OrgRead => "org:read",
            Permission::OrgWrite => "org:write",
            Permission::AuditRead => "audit:read",
        }
    }
}

/// An authenticated caller: their org scope and role.
#[derive(Clone, Debug)]
pub struct Principal {
    scope: OrgScope,
    role: Role,
}

impl Principal {
    pub(crate) fn new(scope: OrgScope, role: Role) -> Self {
        Principal { scope, role }
    }

    pub fn scope(&self) -> &OrgScope {
        &self.scope
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn actor(&self) -> &Actor {
        self.scope.actor()
    }

    /// Whether the caller holds `permission`.
    pub fn can(&self, permission: Permission) -> bool {
        self.role.allows(permission)
    }
}
