//! Refused and failed API calls in the audit trail: an authenticated call
//! answered 403 (`denied`), 409 or 422 (`failure`) leaves an event naming the
//! operation, the path and the problem code, so an auditor sees probing and
//! misbehaving integrations, not only what succeeded.
//!
//! Bounded so a flood cannot fill the trail: at most [`PER_MINUTE`] such
//! events per firm a minute (a burst of as many); past that they are counted,
//! and the next event recorded for the firm says how many were left out
//! (`details.suppressed`), as does `docket_audit_refusals_suppressed_total`.
use crate::audit::{self, Context, Outcome};
use crate::auth::Principal;
use crate::store::Store;
use crate::telemetry::Metrics;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;

/// Refusal events recorded per firm and minute, at most.
pub const PER_MINUTE: u32 = 30;

/// The bounded recorder of refusals (one per server).
pub struct Refusals {
    limiter: DefaultKeyedRateLimiter<u64>,
    suppressed: Mutex<HashMap<u64, u64>>,
}

impl Default for Refusals {
    fn default() -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(PER_MINUTE).unwrap_or(NonZeroU32::MIN));
        Refusals { limiter: RateLimiter::keyed(quota), suppressed: Mutex::default() }
    }
}

/// What was refused.
pub struct Refusal<'a> {
    /// The operation id, e.g. `tokens.create_service`.
    pub operation: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub code: &'a str,
    pub field: Option<&'a str>,
}

/// The statuses whose refusals are audited.
pub fn audited(status: u16) -> bool {
    matches!(status, 403 | 409 | 422)
}

impl Refusals {
    /// Records `refusal` for `principal`, unless the firm is past its bound.
    pub fn record(&self, store: &Store, metrics: &Metrics, principal: &Principal, ctx: &Context, refusal: &Refusal) {
        let org = principal.scope().org().0;
        let mut suppressed = self.suppressed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.limiter.check_key(&org).is_err() {
            *suppressed.entry(org).or_default() += 1;
            metrics.count(
                "docket_audit_refusals_suppressed_total",
                "Refused API calls left out of the audit trail by its bound.",
                vec![],
                1,
            );
            return;
        }
        let left_out = suppressed.remove(&org).unwrap_or(0);
        drop(suppressed);
        let outcome = if refusal.status == 403 { Outcome::Denied } else { Outcome::Failure };
        let mut details = serde_json::json!({"status": refusal.status, "code": refusal.code, "path": refusal.path});
        if let Some(field) = refusal.field {
            details["field"] = field.into();
        }
        if left_out > 0 {
            details["suppressed"] = left_out.into();
        }
        let target = format!("api:{}", refusal.operation);
        let written = store.write(|w| {
            audit::record(w, principal.scope(), ctx, refusal.operation, &target, outcome, details).map(drop)
        });
        if let Err(e) = written {
            tracing::warn!(error = %e, "a refused call could not be audited");
        }
    }
}
