//! The break-glass local admin: an owner who signs in with a password
//! (argon2id) and a TOTP code or one of ten one-time recovery codes, for when
//! the firm's identity provider is down. Created only by `docket admin create`.
//!
//! Failed sign-ins lock the account for a growing time: after
//! [`FREE_ATTEMPTS`] failures, 1 minute, then doubling up to an hour.
use super::passwords;
use super::sessions::{self, Session, Timeouts};
use super::users::{self, LocalLogin, NewMember, User};
use crate::audit::{self, Outcome};
use crate::secrets::{Keyring, Secret, SharedKeyring};
use crate::store::{Actor, OrgId, OrgScope, OrgTaskContext, Store, StoreError, Tx};

/// Failures allowed before the first lockout.
pub const FREE_ATTEMPTS: u32 = 5;
const FIRST_LOCK_MICROS: i64 = 60_000_000;
const MAX_LOCK_MICROS: i64 = 3_600_000_000;
const RECOVERY_CODES: usize = 10;

/// The org secret holding a member's TOTP secret.
pub fn totp_secret_name(user: &str) -> String {
    format!("totp:{user}")
}

/// What `docket admin create` prints, once.
pub struct AdminCredentials {
    pub user: User,
    pub password: Secret,
    pub totp_uri: String,
    pub totp_secret: String,
    pub recovery_codes: Vec<String>,
    /// Whether an existing admin's credentials were replaced.
    pub reset: bool,
}

fn code_hash(code: &str) -> String {
    hex::encode(super::secret_hash(&passwords::normalize_recovery_code(code)))
}

/// Creates the break-glass admin `email` as an owner of `org`, or resets the
/// credentials of that member if they already exist in the org.
pub fn create_admin(
    store: &Store,
    keys: &SharedKeyring,
    ctx: &OrgTaskContext,
    org: OrgId,
    email: &str,
) -> Result<AdminCredentials, StoreError> {
    let scope = ctx.org_scope(org);
    let email = users::normalize_email(email)?;
    let password = passwords::generate_password();
    let password_hash = passwords::hash(&password).map_err(StoreError::Corrupt)?;
    let totp_secret = passwords::generate_totp_secret();
    let (totp_uri, totp_b32) = passwords::totp_enrolment(&totp_secret, &email).map_err(StoreError::Corrupt)?;
    let recovery_codes: Vec<String> = (0..RECOVERY_CODES).map(|_| passwords::generate_recovery_code()).collect();
    let local = LocalLogin {
        password_hash,
        recovery_codes: recovery_codes.iter().map(|c| code_hash(c)).collect(),
        failed_attempts: 0,
        locked_until: None,
        last_totp_step: 0,
    };
    let (user, reset) = store.write(|w| {
        let existing = users::find_login(w, &users::email_login(&email))?;
        let (mut user, reset) = match existing {
            Some(found) if found.org == org => (users::require(w, &scope, &found.user)?, true),
            Some(_) => {
                return Err(StoreError::Conflict { what: format!("a member with the email {email} in another firm") });
            }
            None => {
                let new = NewMember { email: email.clone(), name: "Break-glass admin".into(), role: "owner".into() };
                (users::create(w, &scope, &new, true)?, false)
            }
        };
        user.local = Some(local.clone());
        user.role = "owner".into();
        user.disabled = false;
        users::save(w, &scope, &user)?;
        w.put_secret(&scope, keys, &totp_secret_name(&user.id), &totp_secret)?;
        sessions::revoke_user(w, &scope, &user.id)?;
        let action = if reset { "admin.reset" } else { "admin.create" };
        let details = serde_json::json!({"email": email, "role": "owner", "recovery_codes": RECOVERY_CODES});
        audit::record(
            w,
            &scope,
            &audit::Context::default(),
            action,
            &format!("user:{}", user.id),
            Outcome::Success,
            details,
        )?;
        Ok((user, reset))
    })?;
    Ok(AdminCredentials {
        user,
        password: Secret::new(password),
        totp_uri,
        totp_secret: totp_b32,
        recovery_codes,
        reset,
    })
}

/// Why a local sign-in was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error(
        "local sign-in is disabled on this appliance (auth.local_login = false); sign in with your identity provider"
    )]
    Disabled,
    #[error("sign-in failed: the email, password or code is wrong")]
    Failed,
    #[error("too many failed sign-ins; this account is locked for {0} more seconds")]
    Locked(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a sign-in attempt presents.
pub struct Attempt {
    pub email: String,
    pub password: String,
    /// A 6-digit TOTP code or a recovery code.
    pub code: String,
}

fn lock_for(failures: u32) -> i64 {
    if failures < FREE_ATTEMPTS {
        return 0;
    }
    let doublings = (failures - FREE_ATTEMPTS).min(10);
    (FIRST_LOCK_MICROS << doublings).min(MAX_LOCK_MICROS)
}

/// Checks the second factor; returns which kind matched, updating `local`.
fn second_factor(local: &mut LocalLogin, totp_secret: &[u8], code: &str, now_secs: u64) -> Option<&'static str> {
    if let Some(step) = passwords::totp_check(totp_secret, code, now_secs)
        && step > local.last_totp_step
    {
        local.last_totp_step = step;
        return Some("totp");
    }
    let hash = code_hash(code);
    let at = local.recovery_codes.iter().position(|c| *c == hash)?;
    local.recovery_codes.remove(at);
    Some("recovery_code")
}

/// Signs the break-glass admin in: on success a new session (cookie shown once).
/// Every attempt on a known member is audited as `auth.sign_in`.
pub fn sign_in(
    store: &Store,
    keys: &Keyring,
    attempt: &Attempt,
    ctx: &audit::Context,
    timeouts: Timeouts,
) -> Result<(Secret, Session), SignInError> {
    let Ok(email) = users::normalize_email(&attempt.email) else { return Err(SignInError::Failed) };
    let found = store.read(|r| users::find_login(r, &users::email_login(&email)))?;
    let Some(found) = found else {
        // Same work as for a real account, so timing does not reveal which emails exist.
        let _ = passwords::verify(&attempt.password, dummy_hash());
        tracing::warn!(email = %email, "local sign-in for an unknown email");
        return Err(SignInError::Failed);
    };
    let scope = OrgScope::authenticated(found.org, Actor::User(found.user.clone()));
    let user = store.read(|r| users::get(r, &scope, &found.user))?;
    let Some((mut user, mut local)) = user.and_then(|u| u.local.clone().map(|l| (u, l))) else {
        let _ = passwords::verify(&attempt.password, dummy_hash());
        record_failure(store, &scope, &found.user, ctx, "no local sign-in for this member")?;
        return Err(SignInError::Failed);
    };
    let now = store.clock().now_micros();
    if let Some(until) = local.locked_until.filter(|t| *t > now) {
        record_failure(store, &scope, &user.id, ctx, "locked")?;
        return Err(SignInError::Locked(u64::try_from((until - now) / 1_000_000).unwrap_or(0).max(1)));
    }
    let password_ok = passwords::verify(&attempt.password, &local.password_hash);
    let totp_secret = store.read(|r| r.get_secret(&scope, keys, &totp_secret_name(&user.id)))?;
    let now_secs = u64::try_from(now / 1_000_000).unwrap_or(0);
    let factor = match (&totp_secret, password_ok) {
        (Some(secret), true) => second_factor(&mut local, secret.expose(), &attempt.code, now_secs),
        _ => None,
    };
    let outcome = store.write(|w| {
        let reason = match (password_ok, factor, user.disabled) {
            (_, _, true) => Some("member disabled"),
            (false, _, _) => Some("wrong password"),
            (true, None, _) => Some("wrong second factor"),
            (true, Some(_), false) => None,
        };
        if let Some(reason) = reason {
            local.failed_attempts += 1;
            let lock = lock_for(local.failed_attempts);
            local.locked_until = (lock > 0).then_some(now + lock);
            user.local = Some(local.clone());
            users::save(w, &scope, &user)?;
            let details = serde_json::json!({"method": "local", "reason": reason, "failed_attempts": local.failed_attempts, "locked_seconds": lock / 1_000_000});
            audit::record(w, &scope, ctx, "auth.sign_in", &format!("user:{}", user.id), Outcome::Failure, details)?;
            return Ok(None);
        }
        local.failed_attempts = 0;
        local.locked_until = None;
        user.local = Some(local.clone());
        user.last_sign_in_at = Some(now);
        users::save(w, &scope, &user)?;
        let (cookie, session) = sessions::create(w, &scope, &user.id, "local", ctx, timeouts)?;
        let details = serde_json::json!({
            "method": "local", "second_factor": factor, "session": session.id,
            "recovery_codes_left": local.recovery_codes.len(),
        });
        audit::record(w, &scope, ctx, "auth.sign_in", &format!("user:{}", user.id), Outcome::Success, details)?;
        Ok(Some((cookie, session)))
    })?;
    outcome.ok_or(SignInError::Failed)
}

fn record_failure(
    store: &Store,
    scope: &OrgScope,
    user: &str,
    ctx: &audit::Context,
    reason: &str,
) -> Result<(), StoreError> {
    store.write(|w: &mut Tx| {
        let details = serde_json::json!({"method": "local", "reason": reason});
        audit::record(w, scope, ctx, "auth.sign_in", &format!("user:{user}"), Outcome::Failure, details).map(|_| ())
    })
}

/// An argon2id hash of a random string, verified against for unknown
/// accounts so a failed sign-in costs the same either way.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| passwords::hash(&passwords::generate_password()).unwrap_or_default())
}
