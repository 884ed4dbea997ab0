//! Members of an org (firm): who may sign in, with which role.
//!
//! A member signs in through the firm's identity provider (matched by a
//! linked OIDC subject; linked by email only while they have no identity at
//! that provider, see [`super::oidc::admit`]) or, for the break-glass admin,
//! with a local password and TOTP ([`super::local`]). Emails are stored and
//! looked up in the one normal form of [`super::email`]. An email address is unique
//! within a firm, but several firms on one appliance may each have a member
//! with the same email: adding a member never tells one firm about another's.
//! Sign-in picks the firm by the identity provider (each belongs to one firm)
//! or, for the break-glass admin, by the one local login of that email.
use super::grant::{self, Granted, Grantor};
use super::{Role, public_id, sessions, tokens};
use crate::store::{LOGINS, OrgId, OrgScope, Reader, StoreError, SystemContext, Task, Tx, USERS};
use serde::{Deserialize, Serialize};

const CTX: SystemContext = SystemContext::new(Task::Members);

/// A member of an org.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Public id, e.g. `usr_1a2b3c4d5e6f`.
    pub id: String,
    /// Email address in the normal form of [`super::email`]; unique within the firm.
    pub email: String,
    pub name: String,
    /// A built-in or custom role name.
    pub role: String,
    #[serde(default)]
    pub disabled: bool,
    pub created_at: i64,
    pub created_by: String,
    #[serde(default)]
    pub last_sign_in_at: Option<i64>,
    /// Identity-provider accounts linked to this member.
    #[serde(default)]
    pub identities: Vec<Identity>,
    /// Groups the identity provider reported at the last sign-in.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Present for the break-glass admin only.
    #[serde(default)]
    pub local: Option<LocalLogin>,
}

/// An identity-provider account: provider id (from config) and subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub provider: String,
    pub subject: String,
}

/// Local sign-in state of a break-glass admin. The TOTP secret is sealed apart
/// (org secret `totp:<user id>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalLogin {
    /// argon2id PHC string.
    pub password_hash: String,
    /// Hex SHA-256 of each unused recovery code (normalized).
    pub recovery_codes: Vec<String>,
    /// Failed sign-ins, per client address and in all.
    #[serde(default)]
    pub lockout: super::local::Lockout,
    /// The last TOTP step accepted; a code is accepted once (RFC 6238 §5.2).
    #[serde(default)]
    pub last_totp_step: u64,
}

/// Where a sign-in name leads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRef {
    pub org: OrgId,
    pub user: String,
}

/// A new member.
#[derive(Clone, Debug)]
pub struct NewMember {
    pub email: String,
    pub name: String,
    pub role: String,
}

/// Changes to a member; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct MemberChanges {
    pub name: Option<String>,
    pub role: Option<String>,
    pub disabled: Option<bool>,
}

/// The index key of an email sign-in name in `org`; `email` is in the
/// normal form of [`super::email`] (or the form a member was stored with).
/// Emails hold no whitespace, so the space ends the email and a prefix scan
/// finds every firm's.
pub fn email_login(org: OrgId, email: &str) -> Vec<u8> {
    let mut key = email_prefix(email);
    key.extend_from_slice(&org.prefix());
    key
}

fn email_prefix(email: &str) -> Vec<u8> {
    format!("email:{email} ").into_bytes()
}

/// The key stores written before emails were per firm used (one org per email).
fn legacy_email_login(email: &str) -> Vec<u8> {
    format!("email:{email}").into_bytes()
}

/// The spellings `email` (a normal form) may be stored under: itself, and
/// the Unicode-domain form stores written before punycode domains used.
fn stored_forms(email: &str) -> impl Iterator<Item = String> {
    std::iter::once(email.to_string()).chain(super::email::legacy_form(email))
}

/// The index key of an identity-provider account.
pub fn oidc_login(provider: &str, subject: &str) -> Vec<u8> {
    format!("oidc:{provider}:{subject}").into_bytes()
}

/// Checks an email address and returns its normal form ([`super::email`]).
pub fn normalize_email(email: &str) -> Result<String, StoreError> {
    super::email::normalize(email).map_err(|problem| StoreError::Invalid { field: "email", problem })
}

pub fn get(r: &impl Reader, scope: &OrgScope, id: &str) -> Result<Option<User>, StoreError> {
    r.get_json(scope, &USERS, id.as_bytes())
}

/// The member `id`, or `NotFound`.
pub fn require(r: &impl Reader, scope: &OrgScope, id: &str) -> Result<User, StoreError> {
    get(r, scope, id)?.ok_or_else(|| StoreError::NotFound { what: format!("member `{id}`") })
}

/// Every member of the org, by id.
pub fn list(r: &impl Reader, scope: &OrgScope) -> Result<Vec<User>, StoreError> {
    r.scan_json(scope, &USERS, b"")
}

/// Where a sign-in name (see [`email_login`], [`oidc_login`]) leads.
pub fn find_login(r: &impl Reader, key: &[u8]) -> Result<Option<LoginRef>, StoreError> {
    r.get_system_record(&LOGINS, key)
}

/// Every member, in any firm, signing in with `email` (a normal form).
pub fn logins_for_email(r: &impl Reader, email: &str) -> Result<Vec<LoginRef>, StoreError> {
    let mut found = vec![];
    for form in stored_forms(email) {
        for (_, value) in r.scan_system(&LOGINS, &email_prefix(&form))? {
            found.push(serde_json::from_slice(&value).map_err(|e| StoreError::Corrupt(format!("login: {e}")))?);
        }
        found.extend(find_login(r, &legacy_email_login(&form))?);
    }
    Ok(found)
}

/// The member of the scope's firm whose email is `email` (a normal form), if any.
pub fn find_by_email(r: &impl Reader, scope: &OrgScope, email: &str) -> Result<Option<User>, StoreError> {
    for form in stored_forms(email) {
        let key = find_login(r, &email_login(scope.org(), &form))?;
        let legacy = find_login(r, &legacy_email_login(&form))?.filter(|l| l.org == scope.org());
        if let Some(login) = key.or(legacy) {
            return get(r, scope, &login.user);
        }
    }
    Ok(None)
}

/// Writes a member record back (sign-in bookkeeping, credential changes).
pub fn save(w: &mut Tx, scope: &OrgScope, user: &User) -> Result<(), StoreError> {
    w.put_json(scope, &USERS, user.id.as_bytes(), user)
}

/// What member `user` holds: acting on them (role, disabling, removal) needs it all.
fn held_by(r: &impl Reader, scope: &OrgScope, user: &User) -> Result<Granted, StoreError> {
    Ok(Granted::role(r, scope, &user.role, "role")?.named(format!("member {} (role `{}`)", user.email, user.role)))
}

/// Adds a member with a role `grantor` may grant (see [`grant::check`]).
/// The email must be new to this firm; other firms are not consulted.
pub fn create(w: &mut Tx, scope: &OrgScope, new: &NewMember, grantor: &Grantor) -> Result<User, StoreError> {
    let email = normalize_email(&new.email)?;
    let name = if new.name.trim().is_empty() { email.clone() } else { new.name.trim().to_string() };
    crate::store::orgs::validate_name(&name)?;
    grant::check(grantor, &Granted::role(w, scope, &new.role, "role")?)?;
    if find_by_email(w, scope, &email)?.is_some() {
        return Err(StoreError::Conflict { what: format!("a member with the email {email}") });
    }
    let user = User {
        id: public_id("usr"),
        email: email.clone(),
        name,
        role: new.role.clone(),
        disabled: false,
        created_at: w.time(),
        created_by: scope.actor().to_string(),
        last_sign_in_at: None,
        identities: vec![],
        groups: vec![],
        local: None,
    };
    save(w, scope, &user)?;
    let login = LoginRef { org: scope.org(), user: user.id.clone() };
    w.put_index_json(&CTX, &LOGINS, scope.org(), &email_login(scope.org(), &email), &login)?;
    Ok(user)
}

fn owners(r: &impl Reader, scope: &OrgScope) -> Result<usize, StoreError> {
    Ok(list(r, scope)?.iter().filter(|u| u.role == Role::Owner.as_str() && !u.disabled).count())
}

fn refuse_last_owner(r: &impl Reader, scope: &OrgScope, user: &User) -> Result<(), StoreError> {
    if user.role == Role::Owner.as_str() && !user.disabled && owners(r, scope)? <= 1 {
        return Err(StoreError::Refused {
            problem: "this is the firm's last owner; make another member owner first".into(),
        });
    }
    Ok(())
}

/// Changes a member. `grantor` must hold what the member holds and any new
/// role (see [`grant::check`]). Disabling or demoting a member signs them out everywhere.
pub fn update(
    w: &mut Tx,
    scope: &OrgScope,
    id: &str,
    changes: &MemberChanges,
    grantor: &Grantor,
) -> Result<User, StoreError> {
    let mut user = require(w, scope, id)?;
    grant::check(grantor, &held_by(w, scope, &user)?)?;
    if let Some(name) = &changes.name {
        crate::store::orgs::validate_name(name)?;
        user.name = name.trim().into();
    }
    let demoted = changes.role.as_ref().is_some_and(|r| *r != user.role);
    let disabling = changes.disabled == Some(true) && !user.disabled;
    if demoted || disabling {
        refuse_last_owner(w, scope, &user)?;
    }
    if let Some(role) = &changes.role {
        grant::check(grantor, &Granted::role(w, scope, role, "role")?)?;
        user.role = role.clone();
    }
    if let Some(disabled) = changes.disabled {
        user.disabled = disabled;
    }
    if demoted || disabling {
        sessions::revoke_user(w, scope, &user.id)?;
    }
    save(w, scope, &user)?;
    Ok(user)
}

/// Removes a member (if `grantor` holds what they hold), their sign-in names,
/// sessions and personal tokens.
pub fn delete(w: &mut Tx, scope: &OrgScope, id: &str, grantor: &Grantor) -> Result<User, StoreError> {
    let user = require(w, scope, id)?;
    grant::check(grantor, &held_by(w, scope, &user)?)?;
    refuse_last_owner(w, scope, &user)?;
    w.delete_index(&CTX, &LOGINS, scope.org(), &email_login(scope.org(), &user.email))?;
    if find_login(w, &legacy_email_login(&user.email))?.is_some_and(|l| l.org == scope.org() && l.user == user.id) {
        w.delete_index(&CTX, &LOGINS, scope.org(), &legacy_email_login(&user.email))?;
    }
    for identity in &user.identities {
        w.delete_index(&CTX, &LOGINS, scope.org(), &oidc_login(&identity.provider, &identity.subject))?;
    }
    w.delete(scope, &crate::store::SECRETS, super::local::totp_secret_name(&user.id).as_bytes())?;
    sessions::revoke_user(w, scope, &user.id)?;
    tokens::revoke_user(w, scope, &user.id)?;
    w.delete(scope, &USERS, user.id.as_bytes())?;
    Ok(user)
}

/// Links an identity-provider account to a member.
pub fn link_identity(
    w: &mut Tx,
    scope: &OrgScope,
    user: &mut User,
    provider: &str,
    subject: &str,
) -> Result<(), StoreError> {
    if user.identities.iter().any(|i| i.provider == provider && i.subject == subject) {
        return Ok(());
    }
    user.identities.push(Identity { provider: provider.into(), subject: subject.into() });
    w.put_index_json(
        &CTX,
        &LOGINS,
        scope.org(),
        &oidc_login(provider, subject),
        &LoginRef { org: scope.org(), user: user.id.clone() },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_stored_before_punycode_domains_are_still_found() {
        let (_dir, store, ctx, org) = crate::auth::test_org(crate::clock::Clock::system());
        let scope = ctx.org_scope(org.id);
        let legacy = "bob@bücher.test";
        store
            .write(|w| {
                let user = User {
                    id: "usr_legacy".into(),
                    email: legacy.into(),
                    name: "Bob".into(),
                    role: "staff".into(),
                    disabled: false,
                    created_at: 0,
                    created_by: "test".into(),
                    last_sign_in_at: None,
                    identities: vec![],
                    groups: vec![],
                    local: None,
                };
                save(w, &scope, &user)?;
                let login = LoginRef { org: org.id, user: user.id.clone() };
                w.put_index_json(&CTX, &LOGINS, org.id, &email_login(org.id, legacy), &login)
            })
            .unwrap();
        let normal = normalize_email("bob@bücher.test").unwrap();
        assert_eq!(normal, "bob@xn--bcher-kva.test");
        store
            .read(|r| {
                assert_eq!(find_by_email(r, &scope, &normal)?.map(|u| u.id).as_deref(), Some("usr_legacy"));
                assert_eq!(logins_for_email(r, &normal)?.len(), 1);
                Ok(())
            })
            .unwrap();
        let new = NewMember { email: "Bob@XN--BCHER-KVA.test".into(), name: String::new(), role: "staff".into() };
        let again = store.write(|w| create(w, &scope, &new, &Grantor::operator()));
        assert!(matches!(again, Err(StoreError::Conflict { .. })), "the same address is not added twice: {again:?}");
    }
}
