//! Roles: the five built-in ones and an org's custom roles, which pick from
//! the fixed permission list. A member's or token's role is stored by name and
//! resolved to permissions at each request, so changing a role applies at once.
use super::grant::{self, Granted, Grantor};
use super::{Permissions, Role};
use crate::store::{OrgScope, ROLES, Reader, StoreError, Tx};
use serde::{Deserialize, Serialize};

/// A custom role of one org.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomRole {
    pub name: String,
    pub description: String,
    /// Permission names (see [`super::Permission::as_str`]).
    pub permissions: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A role as listed by the API: built-in or custom.
#[derive(Clone, Debug)]
pub struct RoleInfo {
    pub name: String,
    pub description: String,
    pub permissions: Permissions,
    pub built_in: bool,
}

/// Checks a custom role name: 2–40 of `a-z`, `0-9`, `-`, starting with a letter, not a built-in name.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    crate::store::orgs::validate_slug(name).map_err(|_| StoreError::Invalid {
        field: "name",
        problem: format!("`{name}` must be 2 to 40 characters of a-z, 0-9 and -, starting with a letter"),
    })?;
    if name.parse::<Role>().is_ok() {
        return Err(StoreError::Refused {
            problem: format!("`{name}` is a built-in role and cannot be changed; choose another name"),
        });
    }
    Ok(())
}

/// The permissions of role `name` in the scope's org, or `None` if no such role exists.
pub fn permissions_of(r: &impl Reader, scope: &OrgScope, name: &str) -> Result<Option<Permissions>, StoreError> {
    if let Ok(role) = name.parse::<Role>() {
        return Ok(Some(role.permissions()));
    }
    let Some(custom) = r.get_json::<CustomRole>(scope, &ROLES, name.as_bytes())? else {
        return Ok(None);
    };
    // Names were validated on write; an unknown one (from a newer docket) grants nothing.
    Ok(Some(Permissions::of(&custom.permissions.iter().filter_map(|p| p.parse().ok()).collect::<Vec<_>>())))
}

/// Like [`permissions_of`], but a missing role is an `UnknownRole` error on `field`.
pub fn require(r: &impl Reader, scope: &OrgScope, name: &str, field: &'static str) -> Result<Permissions, StoreError> {
    permissions_of(r, scope, name)?.ok_or_else(|| StoreError::UnknownRole { field, name: name.to_string() })
}

/// Every role of the org: built-ins first, then custom roles by name.
pub fn list(r: &impl Reader, scope: &OrgScope) -> Result<Vec<RoleInfo>, StoreError> {
    let mut out: Vec<RoleInfo> = Role::ALL
        .iter()
        .map(|r| RoleInfo {
            name: r.as_str().into(),
            description: r.description().into(),
            permissions: r.permissions(),
            built_in: true,
        })
        .collect();
    for custom in r.scan_json::<CustomRole>(scope, &ROLES, b"")? {
        let permissions = Permissions::parse(&custom.permissions).unwrap_or_default();
        out.push(RoleInfo { name: custom.name, description: custom.description, permissions, built_in: false });
    }
    Ok(out)
}

/// Creates or replaces custom role `name`; returns it and whether it was new.
/// Members and tokens holding the role are affected at once, so `grantor` must
/// hold both what the role holds now and what it is to hold.
pub fn put(
    w: &mut Tx,
    scope: &OrgScope,
    name: &str,
    description: &str,
    permissions: &[String],
    grantor: &Grantor,
) -> Result<(CustomRole, bool), StoreError> {
    validate_name(name)?;
    if description.chars().count() > 500 || description.chars().any(char::is_control) {
        return Err(StoreError::Invalid {
            field: "description",
            problem: "must be at most 500 characters without control characters".into(),
        });
    }
    let parsed =
        Permissions::parse(permissions).map_err(|problem| StoreError::Invalid { field: "permissions", problem })?;
    grant::check(grantor, &Granted::permissions(parsed, format!("role `{name}` as requested")))?;
    let existing = w.get_json::<CustomRole>(scope, &ROLES, name.as_bytes())?;
    if existing.is_some() {
        grant::check(grantor, &Granted::role(w, scope, name, "name")?)?;
    }
    let now = w.time();
    let role = CustomRole {
        name: name.into(),
        description: description.trim().into(),
        permissions: parsed.names(),
        created_at: existing.as_ref().map_or(now, |r| r.created_at),
        updated_at: now,
    };
    w.put_json(scope, &ROLES, name.as_bytes(), &role)?;
    Ok((role, existing.is_none()))
}

/// Deletes custom role `name`; refused while a member or token still has it,
/// and to a grantor who does not hold what it holds.
pub fn delete(w: &mut Tx, scope: &OrgScope, name: &str, grantor: &Grantor) -> Result<(), StoreError> {
    if name.parse::<Role>().is_ok() {
        return Err(StoreError::Refused { problem: format!("`{name}` is a built-in role and cannot be deleted") });
    }
    if w.get(scope, &ROLES, name.as_bytes())?.is_none() {
        return Err(StoreError::NotFound { what: format!("role `{name}`") });
    }
    grant::check(grantor, &Granted::role(w, scope, name, "name")?)?;
    let members = super::users::list(w, scope)?.into_iter().filter(|u| u.role == name).count();
    let tokens = super::tokens::list(w, scope)?.into_iter().filter(|t| t.role == name).count();
    if members + tokens > 0 {
        return Err(StoreError::Refused {
            problem: format!(
                "role `{name}` is held by {members} member(s) and {tokens} token(s); give them another role first"
            ),
        });
    }
    w.delete(scope, &ROLES, name.as_bytes())?;
    Ok(())
}
