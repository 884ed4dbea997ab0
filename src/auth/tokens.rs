//! API tokens for integrators: `dkt_` + 32 random bytes (base64url), shown
//! once, stored only as a SHA-256 hash, scoped to one org and a role.
use super::{Principal, Role};
use crate::audit;
use crate::clock::{micros_to_datetime, rfc3339};
use crate::secrets::Secret;
use crate::store::{Actor, OrgId, OrgScope, Store, StoreError, SystemContext, TOKENS};
use base64::Engine as _;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The prefix secret scanners look for.
pub const PREFIX: &str = "dkt_";

/// What the store keeps about a token (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id, safe to log and show.
    pub id: String,
    pub org: OrgId,
    pub name: String,
    pub role: Role,
    /// Microseconds since the epoch.
    pub created_at: i64,
    /// Microseconds since the epoch; `None` never expires.
    pub expires_at: Option<i64>,
    pub created_by: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is missing, malformed, unknown, revoked or expired")]
    Invalid,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Creates an org service token; returns the token (shown once) and its record.
pub fn create(
    store: &Store,
    ctx: &SystemContext,
    org: OrgId,
    name: &str,
    role: Role,
    valid_days: Option<u32>,
) -> Result<(Secret, TokenRecord), TokenError> {
    crate::store::orgs::validate_name(name)?;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let mut id_bytes = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut id_bytes);
    let now = store.clock().now_micros();
    let record = TokenRecord {
        id: format!("tok_{}", hex::encode(id_bytes)),
        org,
        name: name.trim().into(),
        role,
        created_at: now,
        expires_at: valid_days.map(|d| now + i64::from(d) * 86_400_000_000),
        created_by: format!("system:{}", ctx.task()),
    };
    let details = serde_json::json!({"name": record.name, "role": record.role, "expires_at": record.expires_at});
    let target = format!("token:{}", record.id);
    audit::audited(store, &ctx.org_scope(org), &audit::Context::default(), "token.create", &target, details, |w| {
        w.put_system_json(ctx, &TOKENS, &hash(&token), &record)
    })?;
    Ok((Secret::new(token), record))
}

/// Verifies a bearer token and returns the principal it stands for.
pub fn authenticate(store: &Store, token: &str) -> Result<Principal, TokenError> {
    if !token.starts_with(PREFIX) || token.len() != PREFIX.len() + 43 {
        return Err(TokenError::Invalid);
    }
    let record: TokenRecord = store.read(|r| r.get_system_json(&TOKENS, &hash(token)))?.ok_or(TokenError::Invalid)?;
    if record.expires_at.is_some_and(|t| t <= store.clock().now_micros()) {
        return Err(TokenError::Invalid);
    }
    let scope = OrgScope::authenticated(record.org, Actor::Token(record.id.clone()));
    Ok(Principal::new(scope, record.role))
}

/// Describes a record for the CLI.
pub fn describe(record: &TokenRecord) -> String {
    let expires = record.expires_at.map_or("never".to_string(), |t| rfc3339(micros_to_datetime(t)));
    format!("{} name={:?} role={} expires={}", record.id, record.name, record.role, expires)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;

    #[test]
    fn token_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::fixed(time::macros::datetime!(2026-01-01 0:00 UTC));
        let store = Store::open(&dir.path().join("s.redb"), clock.clone()).unwrap();
        let ctx = SystemContext::new("test");
        let org = store.write(|w| crate::store::orgs::create(w, &ctx, "acme", "Acme")).unwrap();
        let (token, record) = create(&store, &ctx, org.id, "billing export", Role::Staff, Some(1)).unwrap();
        assert!(token.expose().starts_with("dkt_"));
        assert_eq!(token.expose().len(), 47);
        let p = authenticate(&store, token.expose()).unwrap();
        assert_eq!((p.scope().org(), p.role()), (org.id, Role::Staff));
        assert_eq!(p.actor(), &Actor::Token(record.id));
        assert!(matches!(authenticate(&store, "dkt_nope"), Err(TokenError::Invalid)));
        let mut forged = token.expose().to_string();
        forged.replace_range(10..11, if &forged[10..11] == "A" { "B" } else { "A" });
        assert!(matches!(authenticate(&store, &forged), Err(TokenError::Invalid)));
        clock.advance(std::time::Duration::from_secs(86_401));
        assert!(matches!(authenticate(&store, token.expose()), Err(TokenError::Invalid)), "expired");
    }
}
