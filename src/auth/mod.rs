//! Who is calling, and what they may do.
//!
//! This is the only module that turns a credential (API token, session
//! cookie, OIDC sign-in, break-glass password) into an [`OrgScope`] via
//! `OrgScope::authenticated`. Roles map to a fixed list of [`Permission`]s;
//! custom roles ([`roles`]) pick from the same list.
pub mod email;
pub mod grant;
pub mod limits;
pub mod local;
pub mod oidc;
pub mod passwords;
pub mod roles;
pub mod sessions;
pub mod tokens;
pub mod users;
pub mod walls;

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

    /// What the role is for, shown next to it in the API.
    pub fn description(self) -> &'static str {
        match self {
            Role::Owner => "Everything, including granting and removing the owner role.",
            Role::Admin => "Everything except granting or removing the owner role.",
            Role::Manager => "Reads the firm's data, settings and members.",
            Role::Staff => "Reads the firm's data and settings.",
            Role::Auditor => "Read-only, with access to the audit trail and the member list.",
        }
    }

    /// The permissions the role holds.
    pub fn permissions(self) -> Permissions {
        use Permission::*;
        match self {
            Role::Owner | Role::Admin => Permissions::all(),
            Role::Manager => Permissions::of(&[OrgRead, MembersRead, TokensSelf, DataRead]),
            Role::Staff => Permissions::of(&[OrgRead, TokensSelf, DataRead]),
            Role::Auditor => Permissions::of(&[OrgRead, AuditRead, MembersRead, TokensSelf]),
        }
    }

    /// Whether this role holds `permission`.
    pub fn allows(self, permission: Permission) -> bool {
        self.permissions().contains(permission)
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

/// The fixed list of permissions operations require and roles grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// Read the org's own settings.
    OrgRead,
    /// Change the org's settings.
    OrgWrite,
    /// Read and export the audit trail.
    AuditRead,
    /// List members and roles.
    MembersRead,
    /// Add, change and remove members.
    MembersWrite,
    /// Create, change and delete custom roles.
    RolesWrite,
    /// Create, list and revoke one's own personal API tokens.
    TokensSelf,
    /// Create, list, rotate and revoke any token of the org, including service tokens.
    TokensManage,
    /// See and change the ethical walls.
    WallsManage,
    /// Read the firm's Clio data (matters, contacts, time entries, bills, …).
    DataRead,
    /// Connect and disconnect Clio, and start a sync.
    ClioManage,
    /// Register, change and remove outbound webhook endpoints, and see their deliveries.
    WebhooksManage,
    /// Export the firm's data (JSON or CSV zip, subject-access exports).
    DataExport,
    /// Erase the firm's cached Clio data, irreversibly.
    DataErase,
}

impl Permission {
    pub const ALL: [Permission; 14] = [
        Permission::OrgRead,
        Permission::OrgWrite,
        Permission::AuditRead,
        Permission::MembersRead,
        Permission::MembersWrite,
        Permission::RolesWrite,
        Permission::TokensSelf,
        Permission::TokensManage,
        Permission::WallsManage,
        Permission::DataRead,
        Permission::ClioManage,
        Permission::WebhooksManage,
        Permission::DataExport,
        Permission::DataErase,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::OrgRead => "org:read",
            Permission::OrgWrite => "org:write",
            Permission::AuditRead => "audit:read",
            Permission::MembersRead => "members:read",
            Permission::MembersWrite => "members:write",
            Permission::RolesWrite => "roles:write",
            Permission::TokensSelf => "tokens:self",
            Permission::TokensManage => "tokens:manage",
            Permission::WallsManage => "walls:manage",
            Permission::DataRead => "data:read",
            Permission::ClioManage => "clio:manage",
            Permission::WebhooksManage => "webhooks:manage",
            Permission::DataExport => "data:export",
            Permission::DataErase => "data:erase",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Permission::OrgRead => "Read the firm's settings.",
            Permission::OrgWrite => "Change the firm's settings.",
            Permission::AuditRead => "Read and export the audit trail.",
            Permission::MembersRead => "List members and roles.",
            Permission::MembersWrite => "Add, change and remove members.",
            Permission::RolesWrite => "Create, change and delete custom roles.",
            Permission::TokensSelf => "Manage one's own personal API tokens.",
            Permission::TokensManage => "Manage every API token of the firm, including service tokens.",
            Permission::WallsManage => "See and change the ethical walls around matters.",
            Permission::DataRead => "Read the firm's Clio data, except walled matters.",
            Permission::ClioManage => "Connect and disconnect Clio, and start a sync.",
            Permission::WebhooksManage => {
                "Register, change and remove outbound webhook endpoints (they receive the firm's data, unwalled), and see their deliveries."
            }
            Permission::DataExport => "Export the firm's data, except walled matters (zip of JSON or CSV).",
            Permission::DataErase => "Erase the firm's cached Clio data now, irreversibly.",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            let all: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
            format!("`{s}` is not a permission; use some of {}", all.join(", "))
        })
    }
}

/// A set of permissions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Permissions(u32);

impl Permissions {
    pub fn of(list: &[Permission]) -> Permissions {
        Permissions(list.iter().fold(0, |acc, p| acc | p.bit()))
    }

    pub fn all() -> Permissions {
        Permissions::of(&Permission::ALL)
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    /// Whether every permission of `other` is also in `self`.
    pub fn covers(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn intersect(self, other: Permissions) -> Permissions {
        Permissions(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL.into_iter().filter(move |p| self.contains(*p))
    }

    /// The permission names, in the fixed order.
    pub fn names(self) -> Vec<String> {
        self.iter().map(|p| p.as_str().to_string()).collect()
    }

    /// Parses permission names; the error names the first unknown one.
    pub fn parse(names: &[String]) -> Result<Permissions, String> {
        let list = names.iter().map(|n| n.parse()).collect::<Result<Vec<Permission>, _>>()?;
        Ok(Permissions::of(&list))
    }
}

/// How the caller proved who they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// An API token, by public id.
    Token(String),
    /// A browser session, by public id.
    Session(String),
}

/// An authenticated caller: their org scope, role and effective permissions.
#[derive(Clone, Debug)]
pub struct Principal {
    scope: OrgScope,
    role: String,
    permissions: Permissions,
    /// The member acting, for sessions and personal tokens; `None` for service tokens.
    user: Option<String>,
    credential: Credential,
}

impl Principal {
    pub(crate) fn new(
        scope: OrgScope,
        role: String,
        permissions: Permissions,
        user: Option<String>,
        credential: Credential,
    ) -> Self {
        Principal { scope, role, permissions, user, credential }
    }

    pub fn scope(&self) -> &OrgScope {
        &self.scope
    }

    pub fn role(&self) -> &str {
        &self.role
    }

    pub fn permissions(&self) -> Permissions {
        self.permissions
    }

    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    pub fn actor(&self) -> &Actor {
        self.scope.actor()
    }

    /// Whether the caller holds `permission`.
    pub fn can(&self, permission: Permission) -> bool {
        self.permissions.contains(permission)
    }
}

/// Fresh random bytes, base64url without padding: session ids, flow ids, passwords.
pub fn random_token(bytes: usize) -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// A public id such as `usr_1a2b3c4d5e6f`.
pub fn public_id(prefix: &str) -> String {
    use rand::RngCore as _;
    let mut buf = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    format!("{prefix}_{}", hex::encode(buf))
}

/// Rewrites the record at `key` of system table `table` with `change`, reading
/// it inside the write transaction: a record deleted since the caller read it
/// (a revoked token, an ended session) stays deleted, and no stale copy is
/// written back over a newer one.
/// `org` owns the record (the journal names it).
pub(crate) fn update_in_place<T: Serialize + serde::de::DeserializeOwned>(
    store: &crate::store::Store,
    ctx: &crate::store::SystemContext,
    table: &crate::store::IndexTable,
    org: crate::store::OrgId,
    key: &[u8],
    change: impl FnOnce(T) -> T,
) -> Result<(), crate::store::StoreError> {
    use crate::store::Reader as _;
    store.write(|w| match w.get_system_record::<T>(table, key)? {
        Some(current) => w.put_index_json(ctx, table, org, key, &change(current)),
        None => Ok(()),
    })
}

/// SHA-256 of a secret, as stored in index tables instead of the secret.
pub fn secret_hash(secret: &str) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(secret.as_bytes()).to_vec()
}

/// A store in a temporary directory with one org, `acme` (for unit tests).
#[cfg(test)]
pub(crate) fn test_org(
    clock: crate::clock::Clock,
) -> (tempfile::TempDir, crate::store::Store, crate::store::OrgTaskContext, crate::store::orgs::Org) {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(&dir.path().join("s.redb"), clock).unwrap();
    let ctx = crate::store::OrgTaskContext::new(crate::store::OrgTask::Test);
    let org = store.write(|w| crate::store::orgs::create(w, &ctx, "acme", "Acme")).unwrap();
    (dir, store, ctx, org)
}
