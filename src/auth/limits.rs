//! Request rate limits: one bucket per client address and one per credential
//! (GCRA via governor). A request over either limit is refused with the time
//! after which it may retry.
use crate::config::LimitsConfig;
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest as _, Sha256};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Ip(Duration),
    Credential(Duration),
    /// The stricter per-address limit on sign-in, callback and token creation.
    SignIn(Duration),
}

impl Limited {
    pub fn retry_after(self) -> Duration {
        match self {
            Limited::Ip(d) | Limited::Credential(d) | Limited::SignIn(d) => d,
        }
    }

    pub fn scope(self) -> &'static str {
        match self {
            Limited::Ip(_) => "ip",
            Limited::Credential(_) => "credential",
            Limited::SignIn(_) => "sign_in",
        }
    }
}

/// What is left of the tightest limit a request counted against (the
/// `RateLimit-*` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Requests the bucket holds when full.
    pub limit: u32,
    /// Requests that may still be made at once.
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
}

impl Budget {
    fn of(state: &StateSnapshot) -> Budget {
        let quota = state.quota();
        let limit = quota.burst_size().get();
        let remaining = state.remaining_burst_capacity().min(limit);
        Budget { limit, remaining, reset: quota.replenish_interval() * (limit - remaining) }
    }

    /// The tighter of two budgets: the one with fewer requests left.
    pub fn tighter(self, other: Option<Budget>) -> Budget {
        match other {
            Some(o) if o.remaining < self.remaining => o,
            _ => self,
        }
    }
}

type Keyed<K> = DefaultKeyedRateLimiter<K, StateInformationMiddleware>;

/// The appliance's rate limiters.
pub struct Limits {
    per_ip: Keyed<IpAddr>,
    per_credential: Keyed<[u8; 16]>,
    sign_in: Keyed<IpAddr>,
    clock: DefaultClock,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

impl Limits {
    pub fn new(config: &LimitsConfig) -> Limits {
        Limits {
            per_ip: RateLimiter::keyed(per_minute(config.per_ip_per_minute)).with_middleware(),
            per_credential: RateLimiter::keyed(per_minute(config.per_credential_per_minute)).with_middleware(),
            sign_in: RateLimiter::keyed(per_minute(config.sign_in_per_ip_per_minute)).with_middleware(),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one request from `ip` presenting `credential` (the raw secret,
    /// which is only hashed here, never kept); what is left of the tighter limit.
    pub fn check(&self, ip: Option<IpAddr>, credential: Option<&str>) -> Result<Option<Budget>, Limited> {
        let now = self.clock.now();
        let mut budget = None;
        if let Some(ip) = ip {
            let state = self.per_ip.check_key(&ip).map_err(|n| Limited::Ip(n.wait_time_from(now)))?;
            budget = Some(Budget::of(&state));
        }
        if let Some(secret) = credential {
            let digest = Sha256::digest(secret.as_bytes());
            let mut key = [0u8; 16];
            key.copy_from_slice(&digest[..16]);
            let state = self.per_credential.check_key(&key).map_err(|n| Limited::Credential(n.wait_time_from(now)))?;
            budget = Some(Budget::of(&state).tighter(budget));
        }
        Ok(budget)
    }

    /// Counts one sign-in, callback or token-creation request from `ip`.
    pub fn check_sign_in(&self, ip: IpAddr) -> Result<Budget, Limited> {
        let now = self.clock.now();
        self.sign_in.check_key(&ip).map(|s| Budget::of(&s)).map_err(|n| Limited::SignIn(n.wait_time_from(now)))
    }

    /// Forgets clients whose buckets are full again (bounds memory).
    pub fn forget_idle(&self) {
        self.per_ip.retain_recent();
        self.per_credential.retain_recent();
        self.sign_in.retain_recent();
        self.sign_in.shrink_to_fit();
        self.per_ip.shrink_to_fit();
        self.per_credential.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_ip_and_per_credential() {
        let limits = Limits::new(&LimitsConfig {
            per_ip_per_minute: 3,
            per_credential_per_minute: 2,
            sign_in_per_ip_per_minute: 1,
            ..LimitsConfig::default()
        });
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!(limits.check(Some(a), Some("t1")).is_ok());
        assert!(limits.check(Some(b), Some("t1")).is_ok());
        let refused = limits.check(Some(b), Some("t1")).unwrap_err();
        assert_eq!(refused.scope(), "credential", "the token is limited wherever it comes from");
        assert!(refused.retry_after() > Duration::ZERO && refused.retry_after() <= Duration::from_secs(30));
        assert!(limits.check(Some(a), Some("t2")).is_ok());
        assert!(limits.check(Some(a), None).is_ok(), "a's third request");
        assert!(matches!(limits.check(Some(a), None), Err(Limited::Ip(_))), "a's fourth request");
        assert!(limits.check(Some("192.0.2.3".parse().unwrap()), None).is_ok(), "other clients are unaffected");
        assert!(limits.check_sign_in(a).is_ok());
        assert!(matches!(limits.check_sign_in(a), Err(Limited::SignIn(_))), "sign-in has its own, stricter bucket");
        assert!(limits.check_sign_in(b).is_ok());
    }

    #[test]
    fn budgets_report_the_tighter_limit() {
        let limits = Limits::new(&LimitsConfig {
            per_ip_per_minute: 6,
            per_credential_per_minute: 3,
            ..LimitsConfig::default()
        });
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let first = limits.check(Some(ip), None).unwrap().unwrap();
        assert_eq!((first.limit, first.remaining, first.reset), (6, 5, Duration::from_secs(10)));
        let tight = limits.check(Some(ip), Some("t")).unwrap().unwrap();
        assert_eq!((tight.limit, tight.remaining, tight.reset), (3, 2, Duration::from_secs(20)));
        assert_eq!(limits.check(None, None), Ok(None), "nothing counted, nothing to report");
    }
}
