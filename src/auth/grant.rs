//! The one grant rule. Every path that confers a role or permissions (a token
//! created or rotated, a custom role created or edited, a member added or
//! changed, an identity provider's group → role mapping, the admin CLI and
//! control socket) asks [`check`] inside its write transaction.
//!
//! The rule: a grantor confers only permissions it holds itself (a role's
//! permissions, narrowed by a token's scopes, must be a subset of the caller's
//! effective permissions), and only an owner confers the `owner` role. Acting
//! on something that already holds permissions (rotating a token, changing or
//! removing a member, editing a custom role that members and tokens hold)
//! hands out what it holds, so it is checked the same way.
use super::{Permission, Permissions, Principal, Role, roles, users};
use crate::store::{OrgScope, Reader, StoreError};

/// Who confers a grant.
#[derive(Clone, Debug)]
pub struct Grantor {
    permissions: Permissions,
    owner: bool,
}

impl Grantor {
    /// An authenticated caller, read inside the granting transaction: its
    /// effective permissions when the request began (a token's scopes
    /// included), less anything its role has lost since (a demotion or a
    /// narrowed custom role racing the request). It is an owner only with the
    /// owner role and every permission, so a narrowed owner token makes no owners.
    pub fn caller(r: &impl Reader, p: &Principal) -> Result<Grantor, StoreError> {
        let role = match p.user() {
            Some(user) => users::get(r, p.scope(), user)?.filter(|u| !u.disabled).map(|u| u.role).unwrap_or_default(),
            None => p.role().to_string(),
        };
        let now = roles::permissions_of(r, p.scope(), &role)?.unwrap_or_default();
        let permissions = p.permissions().intersect(now);
        let owner = role == Role::Owner.as_str() && permissions == Permissions::all();
        Ok(Grantor { permissions, owner })
    }

    /// The appliance operator (the admin CLI and the control socket), who
    /// creates firms and their first owners.
    pub fn operator() -> Grantor {
        Grantor { permissions: Permissions::all(), owner: true }
    }

    /// An identity provider's group → role mapping: any role but `owner`,
    /// which only an owner grants inside docket.
    pub fn identity_provider() -> Grantor {
        Grantor { permissions: Permissions::all(), owner: false }
    }

    /// A grantor holding `permissions`, not an owner (for tests).
    #[cfg(test)]
    pub(crate) fn holding(permissions: Permissions) -> Grantor {
        Grantor { permissions, owner: false }
    }

    /// What the grantor holds.
    pub fn permissions(&self) -> Permissions {
        self.permissions
    }

    /// Whether the grantor may confer the owner role.
    pub fn is_owner(&self) -> bool {
        self.owner
    }
}

/// What a grant confers (or what the thing acted on already holds).
#[derive(Clone, Debug)]
pub struct Granted {
    permissions: Permissions,
    owner: bool,
    what: String,
}

impl Granted {
    /// Role `name` of the scope's org; an unknown role is refused, naming `field`.
    pub fn role(r: &impl Reader, scope: &OrgScope, name: &str, field: &'static str) -> Result<Granted, StoreError> {
        Ok(Granted {
            permissions: roles::require(r, scope, name, field)?,
            owner: name == Role::Owner.as_str(),
            what: format!("role `{name}`"),
        })
    }

    /// A set of permissions, described as `what` in refusals.
    pub fn permissions(permissions: Permissions, what: impl Into<String>) -> Granted {
        Granted { permissions, owner: false, what: what.into() }
    }

    /// The same grant narrowed to `scopes`, described as `what`.
    pub fn narrowed(self, scopes: Permissions, what: impl Into<String>) -> Granted {
        Granted { permissions: self.permissions.intersect(scopes), owner: self.owner, what: what.into() }
    }

    /// The same grant, described as `what` in refusals.
    pub fn named(self, what: impl Into<String>) -> Granted {
        Granted { what: what.into(), ..self }
    }

    /// The permissions conferred.
    pub fn held(&self) -> Permissions {
        self.permissions
    }
}

/// THE grant check: refuses (403) a grant of anything the grantor does not
/// hold, and the owner role to anyone but an owner.
pub fn check(grantor: &Grantor, granted: &Granted) -> Result<(), StoreError> {
    if granted.owner && !grantor.owner {
        return Err(StoreError::Denied {
            problem: format!(
                "only an owner (with every permission) may grant, change or remove {}; ask an owner",
                granted.what
            ),
        });
    }
    let missing: Vec<&str> =
        granted.permissions.iter().filter(|p| !grantor.permissions.contains(*p)).map(Permission::as_str).collect();
    if !missing.is_empty() {
        return Err(StoreError::Denied {
            problem: format!(
                "{} holds {}, which you lack; you can only grant or act on what you hold yourself (choose a lesser role or fewer permissions, or ask someone who holds them)",
                granted.what,
                missing.join(", ")
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission::*;

    fn grantor(list: &[Permission], owner: bool) -> Grantor {
        Grantor { permissions: Permissions::of(list), owner }
    }

    #[test]
    fn grants_only_what_the_grantor_holds() {
        let tokens_only = grantor(&[TokensManage], false);
        let admin_role = Granted { permissions: Permissions::all(), owner: false, what: "role `admin`".into() };
        let err = check(&tokens_only, &admin_role).unwrap_err();
        assert!(matches!(err, StoreError::Denied { .. }));
        assert!(err.to_string().contains("members:write") && !err.to_string().contains("tokens:manage"), "{err}");
        let narrowed = admin_role.clone().narrowed(Permissions::of(&[TokensManage]), "a narrowed token");
        assert!(check(&tokens_only, &narrowed).is_ok(), "scopes bring it within reach");
        assert!(check(&grantor(&Permission::ALL, false), &admin_role).is_ok());
    }

    #[test]
    fn a_caller_demoted_during_its_request_grants_only_what_is_left() {
        use crate::store::Actor;
        let (_dir, store, ctx, org) = crate::auth::test_org(crate::clock::Clock::system());
        let scope = ctx.org_scope(org.id);
        let new = users::NewMember { email: "o@acme.test".into(), name: "O".into(), role: "owner".into() };
        let user = store.write(|w| users::create(w, &scope, &new, &Grantor::operator())).unwrap();
        let as_user = crate::store::OrgScope::authenticated(org.id, Actor::User(user.id.clone()));
        let credential = super::super::Credential::Session("ses_x".into());
        let p = Principal::new(as_user, "owner".into(), Permissions::all(), Some(user.id.clone()), credential);
        assert!(store.read(|r| Grantor::caller(r, &p)).unwrap().is_owner());
        let mut demoted = user.clone();
        demoted.role = "staff".into();
        store.write(|w| users::save(w, &scope, &demoted)).unwrap();
        let now = store.read(|r| Grantor::caller(r, &p)).unwrap();
        assert!(!now.is_owner());
        assert_eq!(now.permissions(), Role::Staff.permissions(), "the request-time snapshot no longer counts");
    }

    #[test]
    fn only_owners_grant_owner() {
        let owner_role = Granted { permissions: Permissions::all(), owner: true, what: "role `owner`".into() };
        assert!(check(&grantor(&Permission::ALL, false), &owner_role).is_err(), "an admin holds all but owner");
        assert!(check(&Grantor::identity_provider(), &owner_role).is_err());
        assert!(check(&Grantor::operator(), &owner_role).is_ok());
        let narrowed = owner_role.narrowed(Permissions::of(&[OrgRead]), "a narrowed owner token");
        assert!(check(&grantor(&Permission::ALL, false), &narrowed).is_err(), "the owner role, even narrowed");
    }
}
