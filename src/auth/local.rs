//! The break-glass local admin: an owner who signs in with a password
//! (argon2id) and a TOTP code or one of ten one-time recovery codes, for when
//! the firm's identity provider is down. Created only by `docket admin create`.
//!
//! Failed sign-ins lock out the *client address* that made them, for that
//! account: after [`FREE_ATTEMPTS`] failures, 1 minute, then doubling up to an
//! hour. Once the account has [`BACKSTOP_ATTEMPTS`] failures in all (many
//! addresses), every address that has failed loses its free attempts, but an
//! address that has not failed is never locked: the right credentials still
//! work from elsewhere. An unknown email answers exactly as a known one (same
//! status, body, headers and argon2 work), its lockout kept in a bounded map.
//!
//! A sign-in runs argon2 outside the store, then, inside ONE write transaction,
//! re-reads the account, checks that the password hash is the one it verified
//! against, checks and consumes the one-time code and counts the failure, so
//! parallel attempts can neither reuse a code nor lose a failure.
use super::grant::Grantor;
use super::passwords;
use super::sessions::{self, Session, Timeouts};
use super::users::{self, LocalLogin, NewMember, User};
use crate::audit::{self, Outcome};
use crate::secrets::{Keyring, Secret, SharedKeyring};
use crate::store::{Actor, OrgId, OrgScope, OrgTaskContext, Reader, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Failures allowed from one address before it is first locked out.
pub const FREE_ATTEMPTS: u32 = 5;
/// Failures in all (from any address) after which failed addresses get no free attempts.
pub const BACKSTOP_ATTEMPTS: u32 = 50;
/// Addresses remembered per account (the least recently failing is forgotten).
const MAX_ADDRESSES: usize = 256;
/// Unknown emails whose failures are remembered (the least recently failing is forgotten).
const MAX_DECOYS: usize = 10_000;
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
        lockout: Lockout::default(),
        last_totp_step: 0,
    };
    let (user, reset) = store.write(|w| {
        if local_member(w, &email)?.is_some_and(|(s, _)| s.org() != org) {
            return Err(StoreError::Conflict {
                what: format!("a break-glass admin with the email {email} in another firm (local sign-in picks the firm by email; use another address)"),
            });
        }
        let (mut user, reset) = match users::find_by_email(w, &scope, &email)? {
            Some(user) => (user, true),
            None => {
                let new = NewMember { email: email.clone(), name: "Break-glass admin".into(), role: "owner".into() };
                (users::create(w, &scope, &new, &Grantor::operator())?, false)
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
    #[error("too many failed sign-ins from your address; try again in {0} seconds")]
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

/// Failed sign-ins of one account: per client address, and in all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lockout {
    /// Failures since the last success, from every address.
    pub failed_attempts: u32,
    /// The addresses that failed, least recently failing first.
    pub addresses: Vec<AddressFailures>,
}

/// Failed sign-ins of one account from one client address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressFailures {
    pub address: String,
    pub failures: u32,
    /// Microseconds since the epoch; this address is refused until then.
    pub locked_until: Option<i64>,
}

impl Lockout {
    /// Whole seconds `address` must still wait, if it is locked out.
    pub fn locked(&self, address: &str, now: i64) -> Option<u64> {
        let until = self.addresses.iter().find(|a| a.address == address)?.locked_until.filter(|t| *t > now)?;
        Some(u64::try_from((until - now) / 1_000_000).unwrap_or(1).max(1))
    }

    /// Counts a failure from `address`. Past the backstop, an address that has
    /// failed gets no free attempts; addresses that never failed are untouched.
    pub fn fail(&mut self, address: &str, now: i64) {
        self.failed_attempts = self.failed_attempts.saturating_add(1);
        let mut entry = match self.addresses.iter().position(|a| a.address == address) {
            Some(at) => self.addresses.remove(at),
            None => AddressFailures { address: address.into(), failures: 0, locked_until: None },
        };
        entry.failures = entry.failures.saturating_add(1);
        let backstop = if self.failed_attempts >= BACKSTOP_ATTEMPTS { FREE_ATTEMPTS } else { 0 };
        let lock = lock_for(entry.failures.saturating_add(backstop));
        entry.locked_until = (lock > 0).then_some(now + lock);
        if self.addresses.len() >= MAX_ADDRESSES {
            self.addresses.remove(0);
        }
        self.addresses.push(entry);
    }

    /// A success from `address`: it and the total start afresh.
    pub fn succeed(&mut self, address: &str) {
        self.failed_attempts = 0;
        self.addresses.retain(|a| a.address != address);
    }
}

/// Checks the second factor; returns which kind matched, consuming it in `local`.
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

/// The firm and member signing in locally as `email`, if one has a local login.
fn local_member(r: &impl Reader, email: &str) -> Result<Option<(OrgScope, User)>, StoreError> {
    for login in users::logins_for_email(r, email)? {
        let scope = OrgScope::authenticated(login.org, Actor::User(login.user.clone()));
        if let Some(user) = users::get(r, &scope, &login.user)?.filter(|u| u.local.is_some()) {
            return Ok(Some((scope, user)));
        }
    }
    Ok(None)
}

/// Signs the break-glass admin in: on success a new session (cookie shown once).
/// Every attempt on a known member is audited as `auth.sign_in`.
pub fn sign_in(
    store: &Store,
    keys: &Keyring,
    decoys: &Decoys,
    attempt: &Attempt,
    ctx: &audit::Context,
    timeouts: Timeouts,
) -> Result<(Secret, Session), SignInError> {
    // An address that is not in normal form matches no member (it is never trimmed or folded).
    let email = users::normalize_email(&attempt.email).unwrap_or_else(|_| attempt.email.clone());
    let address = ctx.ip.clone().unwrap_or_else(|| "unknown".into());
    let now = store.clock().now_micros();
    let Some((scope, user)) = store.read(|r| local_member(r, &email))? else {
        return Err(decoys.answer(store, &email, &address, &attempt.password, now)?);
    };
    let Some(verified) = user.local.clone() else { return Err(SignInError::Failed) };
    // argon2 runs outside the transaction; a locked address skips it, as for unknown emails.
    let password_ok = verified.lockout.locked(&address, now).is_none()
        && passwords::verify(&attempt.password, &verified.password_hash);
    let totp_secret = store.read(|r| r.get_secret(&scope, keys, &totp_secret_name(&user.id)))?;
    let now_secs = u64::try_from(now / 1_000_000).unwrap_or(0);
    store.write(|w| {
        let mut user = users::require(w, &scope, &user.id)?;
        let Some(mut local) = user.local.clone() else { return Ok(Err(SignInError::Failed)) };
        let locked = local.lockout.locked(&address, now);
        let factor = match (&totp_secret, password_ok && locked.is_none()) {
            (Some(secret), true) => second_factor(&mut local, secret.expose(), &attempt.code, now_secs),
            _ => None,
        };
        let reason = match (locked, user.disabled, password_ok, factor) {
            (Some(_), _, _, _) => Some("locked"),
            (_, true, _, _) => Some("member disabled"),
            (_, _, false, _) => Some("wrong password"),
            _ if local.password_hash != verified.password_hash => Some("credentials reset during sign-in"),
            (_, _, true, None) => Some("wrong second factor"),
            (_, _, true, Some(_)) => None,
        };
        if let Some(reason) = reason {
            let mut failed = user.local.clone().unwrap_or(local);
            failed.lockout.fail(&address, now);
            let details = serde_json::json!({
                "method": "local", "reason": reason, "failed_attempts": failed.lockout.failed_attempts,
                "locked_seconds": failed.lockout.locked(&address, now).unwrap_or(0),
            });
            user.local = Some(failed);
            users::save(w, &scope, &user)?;
            audit::record(w, &scope, ctx, "auth.sign_in", &format!("user:{}", user.id), Outcome::Failure, details)?;
            return Ok(Err(locked.map_or(SignInError::Failed, SignInError::Locked)));
        }
        local.lockout.succeed(&address);
        let recovery_codes_left = local.recovery_codes.len();
        user.local = Some(local);
        user.last_sign_in_at = Some(now);
        users::save(w, &scope, &user)?;
        let (cookie, session) = sessions::create(w, &scope, &user.id, "local", ctx, timeouts)?;
        let details = serde_json::json!({
            "method": "local", "second_factor": factor, "session": session.id,
            "recovery_codes_left": recovery_codes_left,
        });
        audit::record(w, &scope, ctx, "auth.sign_in", &format!("user:{}", user.id), Outcome::Success, details)?;
        Ok(Ok((cookie, session)))
    })?
}

/// Lockout state of emails with no local login, so that they answer exactly
/// like real accounts; one per server (in `AppState`), bounded: past
/// `MAX_DECOYS` the least recently tried email is forgotten.
#[derive(Default)]
pub struct Decoys(Mutex<BTreeMap<Vec<u8>, (i64, Lockout)>>);

impl Decoys {
    /// The answer for an email with no local login: the same argon2 work, a
    /// durable commit like a real account's audited failure, and the same
    /// lockout as a real account.
    fn answer(
        &self,
        store: &Store,
        email: &str,
        address: &str,
        password: &str,
        now: i64,
    ) -> Result<SignInError, StoreError> {
        let key = super::secret_hash(email);
        let locked = self.with(|all| all.get(&key).and_then(|(_, l)| l.locked(address, now)));
        if locked.is_none() {
            let _ = passwords::verify(password, dummy_hash());
        }
        store.write(|_| Ok(()))?;
        tracing::warn!("local sign-in for an email without a local login");
        self.with(|all| {
            if !all.contains_key(&key)
                && all.len() >= MAX_DECOYS
                && let Some(oldest) = all.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| k.clone())
            {
                all.remove(&oldest);
            }
            let (at, lockout) = all.entry(key).or_default();
            *at = now;
            lockout.fail(address, now);
        });
        Ok(locked.map_or(SignInError::Failed, SignInError::Locked))
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<Vec<u8>, (i64, Lockout)>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// An argon2id hash of a random string, verified against for unknown
/// accounts so a failed sign-in costs the same either way.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| passwords::hash(&passwords::generate_password()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000_000;

    #[test]
    fn an_address_is_locked_out_only_for_itself() {
        let mut l = Lockout::default();
        for _ in 0..FREE_ATTEMPTS - 1 {
            l.fail("192.0.2.1", 0);
        }
        assert_eq!(l.locked("192.0.2.1", 0), None, "free attempts");
        l.fail("192.0.2.1", 0);
        assert_eq!(l.locked("192.0.2.1", 0), Some(60), "a minute after the free attempts");
        assert_eq!(l.locked("192.0.2.2", 0), None, "another address is not locked");
        l.fail("192.0.2.1", MINUTE);
        assert_eq!(l.locked("192.0.2.1", MINUTE), Some(120), "doubling");
        assert_eq!(l.failed_attempts, FREE_ATTEMPTS + 1);
        l.succeed("192.0.2.2");
        assert_eq!(l.failed_attempts, 0);
        assert_eq!(l.locked("192.0.2.1", MINUTE), Some(120), "a success elsewhere does not unlock the attacker");
    }

    #[test]
    fn the_backstop_slows_failing_addresses_and_never_a_clean_one() {
        let mut l = Lockout::default();
        for i in 0..BACKSTOP_ATTEMPTS {
            l.fail(&format!("198.51.100.{i}"), 0);
        }
        assert_eq!(l.locked("198.51.100.1", 0), None, "before the backstop, one failure locks nothing");
        l.fail("198.51.100.1", 0);
        assert!(l.locked("198.51.100.1", 0).is_some(), "past the backstop, a failing address loses its free attempts");
        assert_eq!(l.locked("203.0.113.9", 0), None, "an address that never failed is never locked");
        for _ in 0..1000 {
            l.fail("198.51.100.1", 0);
        }
        assert_eq!(l.locked("198.51.100.1", 0), Some(3600), "at most an hour");
        assert_eq!(l.failed_attempts, BACKSTOP_ATTEMPTS + 1001, "every failure counted");
    }

    #[test]
    fn remembered_addresses_are_bounded() {
        let mut l = Lockout::default();
        for i in 0..(MAX_ADDRESSES as u32 * 2) {
            l.fail(&format!("a{i}"), 0);
        }
        assert_eq!(l.addresses.len(), MAX_ADDRESSES);
    }
}
