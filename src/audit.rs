//! The audit trail: append-only per org, hash-chained so any edit, removal or
//! truncation is detected by [`verify`] (`docket audit verify`).
//!
//! Each event is written in the same store transaction as the change it
//! describes (via [`record`] on a [`Tx`]), so a change without its audit entry
//! cannot exist. Event `n` stores `hash = SHA-256(prev_hash ‖ canonical JSON of
//! the event without its hash)`; the org's chain head (last seq and hash) is kept
//! apart, so cutting entries off the end is detected too.
pub use crate::store::{AUDIT, AUDIT_HEAD};
use crate::store::{OrgScope, Store, StoreError, Tx};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Whether the audited action succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }
}

/// Who did what, as given by the caller of [`record`].
#[derive(Clone, Debug, Default)]
pub struct Context {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// Microseconds since the epoch.
    pub time: i64,
    /// `token:…`, `user:…` or `system:…`.
    pub actor: String,
    /// A dotted verb such as `org.update` or `token.create`.
    pub action: String,
    /// What was acted on, e.g. `org:3` or `token:tok_ab12`.
    pub target: String,
    pub outcome: Outcome,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// Extra facts (never secrets, never client data).
    pub details: serde_json::Value,
    /// Hex SHA-256 of the previous event (all zeros for the first).
    pub prev_hash: String,
    /// Hex SHA-256 over `prev_hash` and this event without `hash`.
    pub hash: String,
}

#[derive(Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn digest(event: &Event) -> String {
    let mut unsigned = event.clone();
    unsigned.hash = String::new();
    let body = serde_json::to_vec(&unsigned).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(event.prev_hash.as_bytes());
    h.update(&body);
    hex::encode(h.finalize())
}

/// Appends an event to the scope's chain inside the transaction `w`.
pub fn record(
    w: &mut Tx,
    scope: &OrgScope,
    ctx: &Context,
    action: &str,
    target: &str,
    outcome: Outcome,
    details: serde_json::Value,
) -> Result<Event, StoreError> {
    let head: Option<Head> = w
        .get(scope, &AUDIT_HEAD, b"")?
        .map(|b| serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt(format!("audit head: {e}"))))
        .transpose()?;
    let (seq, prev_hash) = head.map_or((1, GENESIS.to_string()), |h| (h.seq + 1, h.hash));
    let mut event = Event {
        seq,
        time: w.time(),
        actor: scope.actor().to_string(),
        action: action.into(),
        target: target.into(),
        outcome,
        ip: ctx.ip.clone(),
        user_agent: ctx.user_agent.as_ref().map(|ua| ua.chars().take(256).collect()),
        request_id: ctx.request_id.clone(),
        details,
        prev_hash,
        hash: String::new(),
    };
    event.hash = digest(&event);
    w.put_json(scope, &AUDIT, &seq.to_be_bytes(), &event)?;
    w.put_json(scope, &AUDIT_HEAD, b"", &Head { seq, hash: event.hash.clone() })?;
    Ok(event)
}

/// Runs `change` in one write transaction and records a successful `action`
/// on `target` in the same transaction; `details` describes the change.
pub fn audited<T>(
    store: &Store,
    scope: &OrgScope,
    ctx: &Context,
    action: &str,
    target: &str,
    details: serde_json::Value,
    change: impl FnOnce(&mut Tx) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    store.write(|w| {
        let out = change(w)?;
        record(w, scope, ctx, action, target, Outcome::Success, details)?;
        Ok(out)
    })
}

/// Filters for [`query`].
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only events with `seq > after` (the cursor).
    pub after: u64,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub action: Option<String>,
    pub actor: Option<String>,
    pub outcome: Option<Outcome>,
    pub limit: usize,
}

impl Filter {
    fn accepts(&self, e: &Event) -> bool {
        self.since.is_none_or(|t| e.time >= t)
            && self.until.is_none_or(|t| e.time < t)
            && self.action.as_ref().is_none_or(|a| e.action == *a || e.action.starts_with(&format!("{a}.")))
            && self.actor.as_ref().is_none_or(|a| e.actor == *a)
            && self.outcome.is_none_or(|o| e.outcome == o)
    }
}

fn decode(bytes: &[u8]) -> Result<Event, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("audit event: {e}")))
}

/// Events of the scope's org matching `filter`, oldest first, at most `filter.limit`.
pub fn query(store: &Store, scope: &OrgScope, filter: &Filter) -> Result<Vec<Event>, StoreError> {
    store.read(|r| {
        let mut out = vec![];
        for (key, value) in r.scan_from(scope, &AUDIT, &filter.after.saturating_add(1).to_be_bytes())? {
            if key.len() != 8 {
                continue;
            }
            let event = decode(&value)?;
            if filter.accepts(&event) {
                out.push(event);
                if out.len() >= filter.limit {
                    break;
                }
            }
        }
        Ok(out)
    })
}

/// Why a chain failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Tamper {
    #[error("event {seq} was altered (its hash does not match its content)")]
    Altered { seq: u64 },
    #[error("the chain breaks before event {seq}: an event was removed or reordered")]
    Broken { seq: u64 },
    #[error("events after {seq} were removed (the chain head says {head})")]
    Truncated { seq: u64, head: u64 },
    #[error("event stored under {key} claims to be event {seq}")]
    Misplaced { key: u64, seq: u64 },
}

/// Walks the scope's chain; returns how many events it holds, or the first tampering found.
pub fn verify(store: &Store, scope: &OrgScope) -> Result<Result<u64, Tamper>, StoreError> {
    store.read(|r| {
        let head: Option<Head> = r
            .get(scope, &AUDIT_HEAD, b"")?
            .map(|b| serde_json::from_slice(&b))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("audit head: {e}")))?;
        let mut prev = GENESIS.to_string();
        let mut expected = 1;
        for (key, value) in r.scan(scope, &AUDIT, b"")? {
            let key = u64::from_be_bytes(key.as_slice().try_into().unwrap_or_default());
            let event = match decode(&value) {
                Ok(e) => e,
                Err(_) => return Ok(Err(Tamper::Altered { seq: key })),
            };
            if event.seq != key {
                return Ok(Err(Tamper::Misplaced { key, seq: event.seq }));
            }
            if event.seq != expected || event.prev_hash != prev {
                return Ok(Err(Tamper::Broken { seq: event.seq }));
            }
            if digest(&event) != event.hash {
                return Ok(Err(Tamper::Altered { seq: event.seq }));
            }
            prev = event.hash;
            expected += 1;
        }
        let count = expected - 1;
        match head {
            Some(h) if h.seq != count || h.hash != prev => Ok(Err(Tamper::Truncated { seq: count, head: h.seq })),
            None if count > 0 => Ok(Err(Tamper::Truncated { seq: count, head: 0 })),
            _ => Ok(Ok(count)),
        }
    })
}

/// CSV rendering of events (header row first), for exports.
pub fn to_csv(events: &[Event]) -> String {
    let mut out = String::from("seq,time,actor,action,target,outcome,ip,user_agent,request_id,details,hash\n");
    for e in events {
        let fields = [
            e.seq.to_string(),
            crate::clock::rfc3339(crate::clock::micros_to_datetime(e.time)),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone(),
            e.outcome.as_str().to_string(),
            e.ip.clone().unwrap_or_default(),
            e.user_agent.clone().unwrap_or_default(),
            e.request_id.clone().unwrap_or_default(),
            e.details.to_string(),
            e.hash.clone(),
        ];
        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// Quotes a CSV field, and defuses spreadsheet formulas (`=`, `+`, `-`, `@`).
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) { format!("'{value}") } else { value.to_string() };
    if value.contains([',', '"', '\n', '\r']) { format!("\"{}\"", value.replace('"', "\"\"")) } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::store::{OrgId, OrgTask, OrgTaskContext};

    fn setup() -> (tempfile::TempDir, Store, OrgScope) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), Clock::system()).unwrap();
        let scope = OrgTaskContext::new(OrgTask::Test).org_scope(OrgId(1));
        (dir, store, scope)
    }

    fn add(store: &Store, scope: &OrgScope, action: &str) -> Event {
        store
            .write(|w| record(w, scope, &Context::default(), action, "org:1", Outcome::Success, serde_json::json!({})))
            .unwrap()
    }

    #[test]
    fn chain_verifies_and_detects_edits_removals_and_truncation() {
        let (_d, store, scope) = setup();
        for a in ["org.update", "token.create", "org.update"] {
            add(&store, &scope, a);
        }
        assert_eq!(verify(&store, &scope).unwrap(), Ok(3));
        let other = OrgTaskContext::new(OrgTask::Test).org_scope(OrgId(2));
        assert_eq!(verify(&store, &other).unwrap(), Ok(0), "chains are per org");

        let stored = query(&store, &scope, &Filter { limit: 10, ..Default::default() }).unwrap();
        let mut edited = stored[1].clone();
        edited.action = "nothing.happened".into();
        let ctx = OrgTaskContext::new(OrgTask::Test);
        let raw = |e: &Event| serde_json::to_vec(e).unwrap();
        store.write(|w| w.put(&ctx.org_scope(OrgId(1)), &AUDIT, &2u64.to_be_bytes(), &raw(&edited))).unwrap();
        assert_eq!(verify(&store, &scope).unwrap(), Err(Tamper::Altered { seq: 2 }));

        store.write(|w| w.put(&scope, &AUDIT, &2u64.to_be_bytes(), &raw(&stored[1]))).unwrap();
        assert_eq!(verify(&store, &scope).unwrap(), Ok(3), "restoring the original heals the chain");
        store.write(|w| w.delete(&scope, &AUDIT, &2u64.to_be_bytes())).unwrap();
        assert_eq!(verify(&store, &scope).unwrap(), Err(Tamper::Broken { seq: 3 }));
        store.write(|w| w.put(&scope, &AUDIT, &2u64.to_be_bytes(), &raw(&stored[1]))).unwrap();
        store.write(|w| w.delete(&scope, &AUDIT, &3u64.to_be_bytes())).unwrap();
        assert_eq!(verify(&store, &scope).unwrap(), Err(Tamper::Truncated { seq: 2, head: 3 }));
    }

    #[test]
    fn query_filters_and_pages() {
        let (_d, store, scope) = setup();
        for a in ["org.update", "token.create", "token.revoke", "org.update"] {
            add(&store, &scope, a);
        }
        let page =
            query(&store, &scope, &Filter { action: Some("token".into()), limit: 1, ..Default::default() }).unwrap();
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2]);
        let next =
            query(&store, &scope, &Filter { action: Some("token".into()), after: 2, limit: 10, ..Default::default() })
                .unwrap();
        assert_eq!(next.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), vec!["token.revoke"]);
        assert_eq!(next[0].actor, "system:test");
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
