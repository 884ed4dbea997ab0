//! API tokens for integrators: `dkt_` + 32 random bytes (base64url), shown
//! once, stored only as a SHA-256 hash.
//!
//! A *service* token belongs to the org and carries a role; a *personal* token
//! acts as the member who made it, with that member's current role. Either may
//! be narrowed by scopes (a subset of permissions), expire, be rotated (same
//! id, new secret) and revoked. The last use is recorded (to the minute).
use super::grant::{self, Granted, Grantor};
use super::{Credential, Permissions, Principal, public_id, roles, secret_hash, users};
use crate::audit;
use crate::clock::{micros_to_datetime, rfc3339};
use crate::secrets::Secret;
use crate::store::{
    Actor, OrgId, OrgScope, OrgTaskContext, Reader, Store, StoreError, SystemContext, TOKENS, Task, Tx,
};
use serde::{Deserialize, Serialize};

/// The prefix secret scanners look for.
pub const PREFIX: &str = "dkt_";
/// Longest allowed lifetime, in days.
pub const MAX_DAYS: u32 = 730;

const CTX: SystemContext = SystemContext::new(Task::Tokens);
const TOUCH_EVERY: i64 = 60_000_000;

/// What the store keeps about a token (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id, safe to log and show.
    pub id: String,
    pub org: OrgId,
    pub name: String,
    /// Service tokens: their role. Personal tokens: the member's role when made
    /// (the member's current role applies).
    pub role: String,
    /// The member a personal token acts as; `None` for a service token.
    #[serde(default)]
    pub user: Option<String>,
    /// Permission names the token is narrowed to; empty means all of the role's.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Microseconds since the epoch.
    pub created_at: i64,
    /// Microseconds since the epoch; `None` never expires.
    pub expires_at: Option<i64>,
    pub created_by: String,
    #[serde(default)]
    pub last_used_at: Option<i64>,
    #[serde(default)]
    pub rotated_at: Option<i64>,
}

impl TokenRecord {
    pub fn kind(&self) -> &'static str {
        if self.user.is_some() { "personal" } else { "service" }
    }
}

/// A token to create.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub name: String,
    /// For a service token; ignored for a personal one.
    pub role: String,
    /// `Some(member)` makes a personal token.
    pub user: Option<String>,
    pub scopes: Vec<String>,
    pub valid_days: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is missing, malformed, unknown, revoked or expired")]
    Invalid,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn mint() -> Secret {
    Secret::new(format!("{PREFIX}{}", super::random_token(32)))
}

fn expiry(now: i64, days: Option<u32>) -> Result<Option<i64>, StoreError> {
    match days {
        Some(d) if d == 0 || d > MAX_DAYS => Err(StoreError::Invalid {
            field: "expires_in_days",
            problem: format!("must be between 1 and {MAX_DAYS} (or absent for a token that never expires)"),
        }),
        d => Ok(d.map(|d| now + i64::from(d) * 86_400_000_000)),
    }
}

/// What token `record` confers when used now: its role (a personal token's
/// member's current role) narrowed by its scopes.
fn conferred(r: &impl Reader, scope: &OrgScope, record: &TokenRecord) -> Result<Granted, StoreError> {
    let role = match &record.user {
        Some(user) => users::require(r, scope, user)?.role,
        None => record.role.clone(),
    };
    let scopes = match record.scopes.is_empty() {
        true => Permissions::all(),
        false => Permissions::parse(&record.scopes).unwrap_or_default(),
    };
    Ok(Granted::role(r, scope, &role, "role")?.narrowed(scopes, format!("token `{}`", record.id)))
}

/// Creates a token in `w`, if `grantor` may grant what it holds (see
/// [`grant::check`]). The token records the permissions granted as its scopes,
/// so it never gains more later (a promoted member, a widened custom role);
/// it loses what its role loses. Returns the token (shown once) and its record.
pub fn create(
    w: &mut Tx,
    scope: &OrgScope,
    new: &NewToken,
    grantor: &Grantor,
) -> Result<(Secret, TokenRecord), StoreError> {
    crate::store::orgs::validate_name(&new.name)?;
    let role = match &new.user {
        Some(user) => users::require(w, scope, user)?.role,
        None => new.role.clone(),
    };
    let scopes = Permissions::parse(&new.scopes).map_err(|problem| StoreError::Invalid { field: "scopes", problem })?;
    let mut granted = Granted::role(w, scope, &role, "role")?;
    if !new.scopes.is_empty() {
        granted = granted.narrowed(scopes, format!("a token of role `{role}` with these scopes"));
    }
    grant::check(grantor, &granted)?;
    if granted.held().is_empty() {
        return Err(StoreError::Invalid {
            field: "scopes",
            problem: format!(
                "would give the token no permission: role `{role}` holds none of them; choose scopes the role holds"
            ),
        });
    }
    let token = mint();
    let now = w.time();
    let record = TokenRecord {
        id: public_id("tok"),
        org: scope.org(),
        name: new.name.trim().into(),
        role,
        user: new.user.clone(),
        scopes: granted.held().names(),
        created_at: now,
        expires_at: expiry(now, new.valid_days)?,
        created_by: scope.actor().to_string(),
        last_used_at: None,
        rotated_at: None,
    };
    w.put_index_json(&CTX, &TOKENS, record.org, &secret_hash(token.expose()), &record)?;
    Ok((token, record))
}

/// Creates an org service token from the CLI or the demo (granted by the
/// appliance operator), audited as `token.create`.
pub fn create_service(
    store: &Store,
    ctx: &OrgTaskContext,
    org: OrgId,
    name: &str,
    role: &str,
    valid_days: Option<u32>,
) -> Result<(Secret, TokenRecord), TokenError> {
    let scope = ctx.org_scope(org);
    let new = NewToken { name: name.into(), role: role.into(), user: None, scopes: vec![], valid_days };
    let out = store.write(|w| {
        let (token, record) = create(w, &scope, &new, &Grantor::operator())?;
        audit::record(
            w,
            &scope,
            &audit::Context::default(),
            "token.create",
            &format!("token:{}", record.id),
            audit::Outcome::Success,
            details(&record),
        )?;
        Ok((token, record))
    })?;
    Ok(out)
}

/// The audit details of a token (never the secret).
pub fn details(record: &TokenRecord) -> serde_json::Value {
    serde_json::json!({
        "name": record.name, "kind": record.kind(), "role": record.role, "user": record.user,
        "scopes": record.scopes, "expires_at": record.expires_at.map(|t| rfc3339(micros_to_datetime(t))),
    })
}

/// Verifies a bearer token and returns the principal it stands for.
pub fn authenticate(store: &Store, token: &str) -> Result<Principal, TokenError> {
    if !token.starts_with(PREFIX) || token.len() != PREFIX.len() + 43 {
        return Err(TokenError::Invalid);
    }
    let key = secret_hash(token);
    let now = store.clock().now_micros();
    let found = store.read(|r| {
        let Some(record) = r.get_system_record::<TokenRecord>(&TOKENS, &key)? else { return Ok(None) };
        let scope = OrgScope::authenticated(record.org, Actor::Token(record.id.clone()));
        let role = match &record.user {
            Some(user) => match users::get(r, &scope, user)? {
                Some(u) if !u.disabled => u.role,
                _ => return Ok(None),
            },
            None => record.role.clone(),
        };
        let permissions = roles::permissions_of(r, &scope, &role)?.unwrap_or_default();
        Ok(Some((record, role, permissions)))
    })?;
    let (record, role, mut permissions) = found.ok_or(TokenError::Invalid)?;
    if record.expires_at.is_some_and(|t| t <= now) {
        return Err(TokenError::Invalid);
    }
    if !record.scopes.is_empty() {
        permissions = permissions.intersect(Permissions::parse(&record.scopes).unwrap_or_default());
    }
    if record.last_used_at.is_none_or(|t| now - t >= TOUCH_EVERY) {
        let touch = |t: TokenRecord| TokenRecord { last_used_at: Some(now), ..t };
        super::update_in_place(store, &CTX, &TOKENS, record.org, &key, touch)?;
    }
    let scope = OrgScope::authenticated(record.org, Actor::Token(record.id.clone()));
    Ok(Principal::new(scope, role, permissions, record.user.clone(), Credential::Token(record.id)))
}

fn with_keys(r: &impl Reader, scope: &OrgScope) -> Result<Vec<(Vec<u8>, TokenRecord)>, StoreError> {
    let mut out = vec![];
    for (key, value) in r.scan_system(&TOKENS, b"")? {
        let t: TokenRecord = serde_json::from_slice(&value).map_err(|e| StoreError::Corrupt(format!("token: {e}")))?;
        if t.org == scope.org() {
            out.push((key, t));
        }
    }
    out.sort_by(|a, b| (a.1.created_at, &a.1.id).cmp(&(b.1.created_at, &b.1.id)));
    Ok(out)
}

/// Every token of the org, oldest first.
pub fn list(r: &impl Reader, scope: &OrgScope) -> Result<Vec<TokenRecord>, StoreError> {
    Ok(with_keys(r, scope)?.into_iter().map(|(_, t)| t).collect())
}

fn find(r: &impl Reader, scope: &OrgScope, id: &str) -> Result<(Vec<u8>, TokenRecord), StoreError> {
    with_keys(r, scope)?
        .into_iter()
        .find(|(_, t)| t.id == id)
        .ok_or_else(|| StoreError::NotFound { what: format!("token `{id}`") })
}

/// The record of token `id` of the org.
pub fn get(r: &impl Reader, scope: &OrgScope, id: &str) -> Result<TokenRecord, StoreError> {
    Ok(find(r, scope, id)?.1)
}

/// Revokes token `id`; it stops working at once.
pub fn revoke(w: &mut Tx, scope: &OrgScope, id: &str) -> Result<TokenRecord, StoreError> {
    let (key, record) = find(w, scope, id)?;
    w.delete_index(&CTX, &TOKENS, record.org, &key)?;
    Ok(record)
}

/// Replaces token `id`'s secret: the old one stops working, the new one is
/// returned once. Name, role, scopes and lifetime carry over. A new secret
/// hands out everything the token holds, so `grantor` must hold it all.
pub fn rotate(w: &mut Tx, scope: &OrgScope, id: &str, grantor: &Grantor) -> Result<(Secret, TokenRecord), StoreError> {
    let (key, old) = find(w, scope, id)?;
    grant::check(grantor, &conferred(w, scope, &old)?)?;
    let now = w.time();
    let token = mint();
    let record = TokenRecord {
        expires_at: old.expires_at.map(|e| now + (e - old.created_at)),
        created_at: now,
        rotated_at: Some(now),
        last_used_at: None,
        ..old
    };
    w.delete_index(&CTX, &TOKENS, scope.org(), &key)?;
    w.put_index_json(&CTX, &TOKENS, record.org, &secret_hash(token.expose()), &record)?;
    Ok((token, record))
}

/// Revokes every personal token of `user`.
pub fn revoke_user(w: &mut Tx, scope: &OrgScope, user: &str) -> Result<usize, StoreError> {
    let mine: Vec<_> = with_keys(w, scope)?.into_iter().filter(|(_, t)| t.user.as_deref() == Some(user)).collect();
    for (key, _) in &mine {
        w.delete_index(&CTX, &TOKENS, scope.org(), key)?;
    }
    Ok(mine.len())
}

/// Deletes the records of expired tokens (the retention sweep); returns how
/// many. An expired token already stops working; this removes what is kept about it.
pub fn sweep_expired(store: &Store) -> Result<usize, StoreError> {
    let now = store.clock().now_micros();
    store.write(|w| {
        let mut n = 0;
        for (key, value) in w.scan_system(&TOKENS, b"")? {
            match serde_json::from_slice::<TokenRecord>(&value) {
                Ok(t) if t.expires_at.is_some_and(|e| e <= now) => w.delete_index(&CTX, &TOKENS, t.org, &key)?,
                Ok(_) => continue,
                Err(_) => w.delete_index_unowned(&CTX, &TOKENS, &key)?,
            };
            n += 1;
        }
        Ok(n)
    })
}

/// Describes a record for the CLI.
pub fn describe(record: &TokenRecord) -> String {
    let expires = record.expires_at.map_or("never".to_string(), |t| rfc3339(micros_to_datetime(t)));
    format!("{} name={:?} {} role={} expires={}", record.id, record.name, record.kind(), record.role, expires)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_org as acme;
    use crate::clock::Clock;

    #[test]
    fn the_sweep_removes_expired_tokens_only() {
        let clock = Clock::fixed(time::macros::datetime!(2026-01-01 0:00 UTC));
        let (_dir, store, ctx, org) = acme(clock.clone());
        let (_, short) = create_service(&store, &ctx, org.id, "short", "staff", Some(1)).unwrap();
        let (_, forever) = create_service(&store, &ctx, org.id, "forever", "staff", None).unwrap();
        assert_eq!(sweep_expired(&store).unwrap(), 0, "nothing has expired yet");
        clock.advance(std::time::Duration::from_secs(86_400));
        assert_eq!(sweep_expired(&store).unwrap(), 1);
        let left: Vec<String> =
            store.read(|r| list(r, &ctx.org_scope(org.id))).unwrap().into_iter().map(|t| t.id).collect();
        assert_eq!(left, [forever.id], "the expired {} is gone, the other stays", short.id);
    }

    #[test]
    fn token_lifecycle() {
        let clock = Clock::fixed(time::macros::datetime!(2026-01-01 0:00 UTC));
        let (_dir, store, ctx, org) = acme(clock.clone());
        let (token, record) = create_service(&store, &ctx, org.id, "billing export", "staff", Some(1)).unwrap();
        assert!(token.expose().starts_with("dkt_"));
        assert_eq!(token.expose().len(), 47);
        let p = authenticate(&store, token.expose()).unwrap();
        assert_eq!((p.scope().org(), p.role()), (org.id, "staff"));
        assert_eq!(p.actor(), &Actor::Token(record.id.clone()));
        assert!(matches!(authenticate(&store, "dkt_nope"), Err(TokenError::Invalid)));
        let mut forged = token.expose().to_string();
        forged.replace_range(10..11, if &forged[10..11] == "A" { "B" } else { "A" });
        assert!(matches!(authenticate(&store, &forged), Err(TokenError::Invalid)));
        let scope = ctx.org_scope(org.id);
        assert!(store.read(|r| get(r, &scope, &record.id)).unwrap().last_used_at.is_some(), "last use recorded");

        let (rotated, after) = store.write(|w| rotate(w, &scope, &record.id, &Grantor::operator())).unwrap();
        assert_eq!(after.id, record.id);
        assert!(matches!(authenticate(&store, token.expose()), Err(TokenError::Invalid)), "old secret dead");
        assert!(authenticate(&store, rotated.expose()).is_ok());
        clock.advance(std::time::Duration::from_secs(86_401));
        assert!(matches!(authenticate(&store, rotated.expose()), Err(TokenError::Invalid)), "expired");
    }

    #[test]
    fn a_use_recorded_after_a_revocation_does_not_bring_the_token_back() {
        let (_dir, store, ctx, org) = acme(Clock::system());
        let (token, record) = create_service(&store, &ctx, org.id, "t", "staff", None).unwrap();
        let key = secret_hash(token.expose());
        store.write(|w| revoke(w, &ctx.org_scope(org.id), &record.id)).unwrap();
        // What `authenticate` does after reading the record, had the revocation come in between.
        super::super::update_in_place(&store, &CTX, &TOKENS, org.id, &key, |t: TokenRecord| t).unwrap();
        assert!(matches!(authenticate(&store, token.expose()), Err(TokenError::Invalid)), "still revoked");
    }

    #[test]
    fn scopes_narrow_and_creators_cannot_escalate() {
        let (_dir, store, ctx, org) = acme(Clock::system());
        let scope = ctx.org_scope(org.id);
        let narrow = NewToken {
            name: "read only".into(),
            role: "admin".into(),
            user: None,
            scopes: vec!["org:read".into()],
            valid_days: None,
        };
        let (token, _) = store.write(|w| create(w, &scope, &narrow, &Grantor::operator())).unwrap();
        let p = authenticate(&store, token.expose()).unwrap();
        assert!(p.can(super::super::Permission::OrgRead));
        assert!(!p.can(super::super::Permission::OrgWrite), "scopes narrow the admin role");
        let staff_limit = Grantor::holding(super::super::Role::Staff.permissions());
        let escalate = NewToken { scopes: vec![], ..narrow.clone() };
        let err = store.write(|w| create(w, &scope, &escalate, &staff_limit)).unwrap_err();
        assert!(matches!(err, StoreError::Denied { .. }), "{err}");
        let bad_scope = NewToken { scopes: vec!["org:destroy".into()], ..narrow };
        let err = store.write(|w| create(w, &scope, &bad_scope, &Grantor::operator())).unwrap_err();
        assert!(err.to_string().contains("org:destroy"), "{err}");
    }
}
