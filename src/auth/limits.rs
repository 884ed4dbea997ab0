//! Request rate limits: one bucket per client address and one per credential
//! (GCRA via governor). A request over either limit is refused with the time
//! after which it may retry.
use crate::config::LimitsConfig;
use governor::clock::{Clock as _, DefaultClock};
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

/// The appliance's rate limiters.
pub struct Limits {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_credential: DefaultKeyedRateLimiter<[u8; 16]>,
    sign_in: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

impl Limits {
    pub fn new(config: &LimitsConfig) -> Limits {
        Limits {
            per_ip: RateLimiter::keyed(per_minute(config.per_ip_per_minute)),
            per_credential: RateLimiter::keyed(per_minute(config.per_credential_per_minute)),
            sign_in: RateLimiter::keyed(per_minute(config.sign_in_per_ip_per_minute)),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one request from `ip` presenting `credential` (the raw secret,
    /// which is only hashed here, never kept).
    pub fn check(&self, ip: Option<IpAddr>, credential: Option<&str>) -> Result<(), Limited> {
        let now = self.clock.now();
        if let Some(ip) = ip {
            self.per_ip.check_key(&ip).map_err(|n| Limited::Ip(n.wait_time_from(now)))?;
        }
        if let Some(secret) = credential {
            let digest = Sha256::digest(secret.as_bytes());
            let mut key = [0u8; 16];
            key.copy_from_slice(&digest[..16]);
            self.per_credential.check_key(&key).map_err(|n| Limited::Credential(n.wait_time_from(now)))?;
        }
        Ok(())
    }

    /// Counts one sign-in, callback or token-creation request from `ip`.
    pub fn check_sign_in(&self, ip: IpAddr) -> Result<(), Limited> {
        let now = self.clock.now();
        self.sign_in.check_key(&ip).map_err(|n| Limited::SignIn(n.wait_time_from(now)))
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
}
