//! Browser sessions: an opaque random id in a `__Host-` cookie, kept
//! server-side (as a hash) so it can be listed and revoked; idle and absolute
//! timeouts from `auth.session_idle_minutes` / `auth.session_absolute_hours`.
use super::{Credential, Principal, public_id, random_token, roles, secret_hash, users};
use crate::secrets::Secret;
use crate::store::{Actor, OrgId, OrgScope, Reader, SESSIONS, Store, StoreError, SystemContext, Task, Tx};
use serde::{Deserialize, Serialize};

/// The session cookie. `__Host-` makes browsers insist on Secure, Path=/ and no Domain.
pub const COOKIE: &str = "__Host-docket_session";

const CTX: SystemContext = SystemContext::new(Task::Sessions);
/// `last_seen_at` is written at most this often (microseconds), not on every request.
const TOUCH_EVERY: i64 = 60_000_000;

/// A signed-in browser.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Public id, e.g. `ses_1a2b3c4d5e6f` (the cookie value is never stored).
    pub id: String,
    pub org: OrgId,
    pub user: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    /// Absolute end, whatever the activity.
    pub expires_at: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// `local` or `oidc:<provider>`.
    pub method: String,
}

/// Session lifetimes in microseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub idle: i64,
    pub absolute: i64,
}

impl Timeouts {
    pub fn from_config(c: &crate::config::AuthConfig) -> Timeouts {
        Timeouts {
            idle: i64::from(c.session_idle_minutes) * 60_000_000,
            absolute: i64::from(c.session_absolute_hours) * 3_600_000_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the session is unknown, expired or revoked; sign in again")]
    Invalid,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Starts a session for `user`; returns the cookie value (shown once) and the record.
pub fn create(
    w: &mut Tx,
    scope: &OrgScope,
    user: &str,
    method: &str,
    ctx: &crate::audit::Context,
    timeouts: Timeouts,
) -> Result<(Secret, Session), StoreError> {
    let cookie = random_token(32);
    let now = w.time();
    let session = Session {
        id: public_id("ses"),
        org: scope.org(),
        user: user.into(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + timeouts.absolute,
        ip: ctx.ip.clone(),
        user_agent: ctx.user_agent.as_ref().map(|ua| ua.chars().take(256).collect()),
        method: method.into(),
    };
    w.put_index_json(&CTX, &SESSIONS, session.org, &secret_hash(&cookie), &session)?;
    Ok((Secret::new(cookie), session))
}

fn expired(s: &Session, now: i64, timeouts: Timeouts) -> bool {
    now >= s.expires_at || now - s.last_seen_at >= timeouts.idle
}

/// Verifies a session cookie and returns the member it signs in.
pub fn authenticate(store: &Store, cookie: &str, timeouts: Timeouts) -> Result<Principal, SessionError> {
    if cookie.len() != 43 {
        return Err(SessionError::Invalid);
    }
    let key = secret_hash(cookie);
    let now = store.clock().now_micros();
    let (session, user, permissions) = store
        .read(|r| {
            let Some(session) = r.get_system_record::<Session>(&SESSIONS, &key)? else { return Ok(None) };
            let scope = OrgScope::authenticated(session.org, Actor::User(session.user.clone()));
            let Some(user) = users::get(r, &scope, &session.user)? else { return Ok(None) };
            let permissions = roles::permissions_of(r, &scope, &user.role)?.unwrap_or_default();
            Ok(Some((session, user, permissions)))
        })?
        .ok_or(SessionError::Invalid)?;
    if expired(&session, now, timeouts) || user.disabled {
        store.write(|w| w.delete_index(&CTX, &SESSIONS, session.org, &key))?;
        return Err(SessionError::Invalid);
    }
    if now - session.last_seen_at >= TOUCH_EVERY {
        super::update_in_place(store, &CTX, &SESSIONS, session.org, &key, |s: Session| Session {
            last_seen_at: now,
            ..s
        })?;
    }
    let scope = OrgScope::authenticated(session.org, Actor::User(user.id.clone()));
    Ok(Principal::new(scope, user.role, permissions, Some(user.id), Credential::Session(session.id)))
}

/// The live sessions of `user`, newest first, with their keys.
fn of_user(r: &impl Reader, org: OrgId, user: &str) -> Result<Vec<(Vec<u8>, Session)>, StoreError> {
    let mut out = vec![];
    for (key, value) in r.scan_system(&SESSIONS, b"")? {
        let s: Session = serde_json::from_slice(&value).map_err(|e| StoreError::Corrupt(format!("session: {e}")))?;
        if s.org == org && s.user == user {
            out.push((key, s));
        }
    }
    out.sort_by_key(|(_, s)| std::cmp::Reverse(s.created_at));
    Ok(out)
}

/// The unexpired sessions of `user`, newest first.
pub fn list(store: &Store, scope: &OrgScope, user: &str, timeouts: Timeouts) -> Result<Vec<Session>, StoreError> {
    let now = store.clock().now_micros();
    let all = store.read(|r| of_user(r, scope.org(), user))?;
    Ok(all.into_iter().map(|(_, s)| s).filter(|s| !expired(s, now, timeouts)).collect())
}

/// Ends one session of `user`; `NotFound` if it is not theirs.
pub fn revoke(w: &mut Tx, scope: &OrgScope, user: &str, id: &str) -> Result<(), StoreError> {
    let found = of_user(w, scope.org(), user)?.into_iter().find(|(_, s)| s.id == id);
    let (key, _) = found.ok_or_else(|| StoreError::NotFound { what: format!("session `{id}`") })?;
    w.delete_index(&CTX, &SESSIONS, scope.org(), &key)?;
    Ok(())
}

/// Ends every session of `user` (sign out everywhere); returns how many ended.
pub fn revoke_user(w: &mut Tx, scope: &OrgScope, user: &str) -> Result<usize, StoreError> {
    let all = of_user(w, scope.org(), user)?;
    for (key, _) in &all {
        w.delete_index(&CTX, &SESSIONS, scope.org(), key)?;
    }
    Ok(all.len())
}

/// Ends the session whose cookie is `cookie` (sign out); returns it if it existed.
pub fn end(store: &Store, cookie: &str) -> Result<Option<Session>, StoreError> {
    let key = secret_hash(cookie);
    store.write(|w| {
        let s = w.get_system_record::<Session>(&SESSIONS, &key)?;
        if let Some(s) = &s {
            w.delete_index(&CTX, &SESSIONS, s.org, &key)?;
        }
        Ok(s)
    })
}

/// Deletes expired sessions (run by the periodic sweeper); returns how many.
pub fn sweep(store: &Store, timeouts: Timeouts) -> Result<usize, StoreError> {
    let now = store.clock().now_micros();
    store.write(|w| {
        let mut n = 0;
        for (key, value) in w.scan_system(&SESSIONS, b"")? {
            match serde_json::from_slice::<Session>(&value) {
                Ok(s) if !expired(&s, now, timeouts) => continue,
                Ok(s) => w.delete_index(&CTX, &SESSIONS, s.org, &key)?,
                Err(_) => w.delete_index_unowned(&CTX, &SESSIONS, &key)?,
            };
            n += 1;
        }
        Ok(n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::users::{self, NewMember};
    use crate::clock::Clock;
    use crate::store::{OrgTask, OrgTaskContext};
    use std::time::Duration;

    #[test]
    fn sessions_end_after_idle_and_absolute_timeouts() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::fixed(time::macros::datetime!(2026-01-01 8:00 UTC));
        let store = Store::open(&dir.path().join("s.redb"), clock.clone()).unwrap();
        let ctx = OrgTaskContext::new(OrgTask::Test);
        let org = store.write(|w| crate::store::orgs::create(w, &ctx, "acme", "Acme")).unwrap();
        let scope = ctx.org_scope(org.id);
        let new = NewMember { email: "a@acme.test".into(), name: "A".into(), role: "staff".into() };
        let user = store.write(|w| users::create(w, &scope, &new, &crate::auth::grant::Grantor::operator())).unwrap();
        let timeouts = Timeouts { idle: 30 * 60_000_000, absolute: 12 * 3_600_000_000 };
        let start = |store: &Store| {
            store
                .write(|w| create(w, &scope, &user.id, "local", &crate::audit::Context::default(), timeouts))
                .unwrap()
                .0
        };

        let idle = start(&store);
        clock.advance(Duration::from_secs(29 * 60));
        assert!(authenticate(&store, idle.expose(), timeouts).is_ok(), "activity within the idle window");
        clock.advance(Duration::from_secs(29 * 60));
        assert!(authenticate(&store, idle.expose(), timeouts).is_ok(), "the last request renewed it");
        clock.advance(Duration::from_secs(31 * 60));
        assert!(matches!(authenticate(&store, idle.expose(), timeouts), Err(SessionError::Invalid)), "idle too long");

        let busy = start(&store);
        for _ in 0..(12 * 4) {
            clock.advance(Duration::from_secs(15 * 60));
            let _ = authenticate(&store, busy.expose(), timeouts);
        }
        assert!(matches!(authenticate(&store, busy.expose(), timeouts), Err(SessionError::Invalid)), "12 h absolute");

        let disabled = start(&store);
        let changes = users::MemberChanges { disabled: Some(true), ..Default::default() };
        store
            .write(|w| users::update(w, &scope, &user.id, &changes, &crate::auth::grant::Grantor::operator()))
            .unwrap();
        assert!(authenticate(&store, disabled.expose(), timeouts).is_err(), "disabling ends sessions");
        assert_eq!(sweep(&store, timeouts).unwrap(), 0, "expired sessions were already removed");
    }
}
