//! Access tokens: the legacy `/cgi-bin/token` kind and the stable `/cgi-bin/stable_token` kind.
//!
//! Both kinds live in one table so a protected API can check any token, but their lifecycles
//! are independent: issuing one kind never touches tokens of the other kind.
//!
//! Times are sandbox-clock offsets (see [`crate::state::Clock`]), so tests can move time on.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::SandboxConfig;
use crate::error::{self, WxError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Legacy,
    Stable,
}

#[derive(Debug)]
struct Token {
    kind: Kind,
    expires_at: Duration,
    /// Set when a newer token superseded this one before its natural expiry; from then on it
    /// answers 40001 ("not latest") rather than 42001 ("expired"). Always < `expires_at`.
    killed_at: Option<Duration>,
    /// Set by [`Tokens::invalidate_all`].
    revoked: bool,
}

impl Token {
    /// When the token stops working, whatever the reason.
    fn end(&self) -> Duration {
        self.killed_at
            .map_or(self.expires_at, |k| k.min(self.expires_at))
    }

    fn usable(&self, now: Duration) -> bool {
        !self.revoked && now < self.end()
    }

    /// Make the token stop working at `at`, unless it stops earlier anyway.
    fn kill_at(&mut self, at: Duration) {
        if at < self.end() {
            self.killed_at = Some(at);
        }
    }
}

/// What a token request produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pub access_token: String,
    /// Whole seconds left, rounded up (a fresh token reports exactly the configured TTL).
    pub expires_in: u64,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The current stable token was handed out again.
    Reused,
    /// A new token was issued without force (legacy fetch or stable renewal).
    Issued,
    /// A new stable token was issued by a force refresh.
    Forced,
}

/// The lifetimes and limits, taken from [`SandboxConfig`].
#[derive(Debug, Clone)]
struct Policy {
    ttl: Duration,
    legacy_overlap: Duration,
    renew_window: Duration,
    force_min_interval: Duration,
    force_daily_limit: u32,
    force_grace: Duration,
}

#[derive(Debug)]
pub(crate) struct Tokens {
    policy: Policy,
    all: HashMap<String, Token>,
    current_stable: Option<String>,
    last_force: Option<Duration>,
    /// Force refreshes done on UTC day `forces_day` (the daily limit is per UTC day).
    forces: u32,
    forces_day: u64,
}

impl Tokens {
    pub(crate) fn new(cfg: &SandboxConfig) -> Self {
        Self {
            policy: Policy {
                ttl: Duration::from_secs(cfg.token_ttl_secs),
                legacy_overlap: Duration::from_secs(cfg.legacy_overlap_secs),
                renew_window: Duration::from_secs(cfg.stable_renew_window_secs),
                force_min_interval: Duration::from_secs(cfg.force_min_interval_secs),
                force_daily_limit: cfg.force_daily_limit,
                force_grace: Duration::from_secs(cfg.force_grace_secs),
            },
            all: HashMap::new(),
            current_stable: None,
            last_force: None,
            forces: 0,
            forces_day: 0,
        }
    }

    /// `/cgi-bin/token`: always a new token; every older legacy token keeps working for the
    /// overlap window only.
    pub(crate) fn issue_legacy(&mut self, now: Duration) -> Grant {
        let cutoff = now + self.policy.legacy_overlap;
        for token in self.all.values_mut().filter(|t| t.kind == Kind::Legacy) {
            token.kill_at(cutoff);
        }
        self.issue(Kind::Legacy, now, Origin::Issued)
    }

    /// `/cgi-bin/stable_token`.
    ///
    /// Normal mode hands out the current token while more than the renewal window is left,
    /// and otherwise issues a new one (the old one keeps its own expiry). Force mode issues a
    /// new one and cuts every older stable token down to the grace period, unless the last
    /// force was too recent (then it behaves like normal mode) or the daily limit is used up.
    /// `day` is the UTC day on the sandbox clock: the force count starts again when it changes.
    pub(crate) fn stable(
        &mut self,
        now: Duration,
        day: u64,
        force: bool,
    ) -> Result<Grant, WxError> {
        let force_too_soon = self
            .last_force
            .is_some_and(|last| now < last + self.policy.force_min_interval);
        if !force || force_too_soon {
            return Ok(self.stable_normal(now));
        }
        if day != self.forces_day {
            self.forces_day = day;
            self.forces = 0;
        }
        if self.forces >= self.policy.force_daily_limit {
            return Err(error::DAILY_QUOTA);
        }
        self.forces += 1;
        self.last_force = Some(now);
        let cutoff = now + self.policy.force_grace;
        for token in self.all.values_mut().filter(|t| t.kind == Kind::Stable) {
            token.kill_at(cutoff);
        }
        Ok(self.issue(Kind::Stable, now, Origin::Forced))
    }

    fn stable_normal(&mut self, now: Duration) -> Grant {
        let current = self
            .current_stable
            .as_ref()
            .and_then(|id| self.all.get(id).map(|t| (id, t)))
            .filter(|(_, t)| t.usable(now) && t.end() - now > self.policy.renew_window);
        match current {
            Some((id, token)) => Grant {
                access_token: id.clone(),
                expires_in: ceil_secs(token.end() - now),
                origin: Origin::Reused,
            },
            None => self.issue(Kind::Stable, now, Origin::Issued),
        }
    }

    fn issue(&mut self, kind: Kind, now: Duration, origin: Origin) -> Grant {
        let access_token = random_token();
        self.all.insert(
            access_token.clone(),
            Token {
                kind,
                expires_at: now + self.policy.ttl,
                killed_at: None,
                revoked: false,
            },
        );
        if kind == Kind::Stable {
            self.current_stable = Some(access_token.clone());
        }
        Grant {
            access_token,
            expires_in: self.policy.ttl.as_secs(),
            origin,
        }
    }

    /// The check every protected API does on its `access_token` query parameter.
    pub(crate) fn check(&self, access_token: &str, now: Duration) -> Result<(), WxError> {
        let token = self.all.get(access_token).ok_or(error::INVALID_TOKEN)?;
        if token.revoked || token.killed_at.is_some_and(|k| now >= k) {
            Err(error::INVALID_TOKEN)
        } else if now >= token.expires_at {
            Err(error::TOKEN_EXPIRED)
        } else {
            Ok(())
        }
    }

    /// Every token issued so far stops working at once (40001).
    pub(crate) fn invalidate_all(&mut self) {
        for token in self.all.values_mut() {
            token.revoked = true;
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// 96 random bytes: 128 URL-safe characters, about as long as WeChat's real tokens.
fn random_token() -> String {
    let mut bytes = [0u8; 96];
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any UTC day: only changes of the day matter.
    const DAY: u64 = 20_000;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn tokens(edit: impl FnOnce(&mut SandboxConfig)) -> Tokens {
        let mut cfg = SandboxConfig::default();
        edit(&mut cfg);
        Tokens::new(&cfg)
    }

    #[test]
    fn superseded_legacy_token_says_not_latest_but_expired_one_says_expired() {
        let mut t = tokens(|c| c.legacy_overlap_secs = 10);
        let old = t.issue_legacy(secs(0)).access_token;
        t.issue_legacy(secs(7195));
        // The overlap would end after the natural expiry, so it expires normally.
        assert_eq!(t.check(&old, secs(7200)), Err(error::TOKEN_EXPIRED));

        let a = t.issue_legacy(secs(8000)).access_token;
        t.issue_legacy(secs(8001));
        assert_eq!(t.check(&a, secs(8010)), Ok(()));
        assert_eq!(t.check(&a, secs(8011)), Err(error::INVALID_TOKEN));
    }

    #[test]
    fn stable_expires_in_is_rounded_up() {
        let mut t = tokens(|_| {});
        t.stable(secs(0), DAY, false).unwrap();
        let again = t.stable(Duration::from_millis(1500), DAY, false).unwrap();
        assert_eq!((again.expires_in, again.origin), (7199, Origin::Reused));
    }

    #[test]
    fn force_too_soon_falls_back_to_normal_mode() {
        let mut t = tokens(|_| {});
        let first = t.stable(secs(0), DAY, true).unwrap();
        assert_eq!(first.origin, Origin::Forced);
        let soon = t.stable(secs(29), DAY, true).unwrap();
        assert_eq!(soon.origin, Origin::Reused);
        assert_eq!(soon.access_token, first.access_token);
        assert_eq!(
            t.stable(secs(30), DAY, true).unwrap().origin,
            Origin::Forced
        );
    }

    #[test]
    fn force_daily_limit_is_per_utc_day() {
        let mut t = tokens(|c| {
            c.force_min_interval_secs = 0;
            c.force_daily_limit = 2;
        });
        assert_eq!(t.stable(secs(0), DAY, true).unwrap().origin, Origin::Forced);
        assert_eq!(t.stable(secs(1), DAY, true).unwrap().origin, Origin::Forced);
        assert_eq!(t.stable(secs(2), DAY, true), Err(error::DAILY_QUOTA));
        // Hours later, the same day: still used up, and normal mode still works.
        assert_eq!(t.stable(secs(80_000), DAY, true), Err(error::DAILY_QUOTA));
        assert!(t.stable(secs(80_000), DAY, false).is_ok());
        // The next day, the count starts again.
        let next = DAY + 1;
        assert_eq!(
            t.stable(secs(80_001), next, true).unwrap().origin,
            Origin::Forced
        );
        assert_eq!(
            t.stable(secs(80_002), next, true).unwrap().origin,
            Origin::Forced
        );
        assert_eq!(t.stable(secs(80_003), next, true), Err(error::DAILY_QUOTA));
    }

    #[test]
    fn revoked_current_stable_token_is_replaced_in_normal_mode() {
        let mut t = tokens(|_| {});
        let a = t.stable(secs(0), DAY, false).unwrap().access_token;
        t.invalidate_all();
        let b = t.stable(secs(1), DAY, false).unwrap();
        assert_ne!(b.access_token, a);
        assert_eq!(b.origin, Origin::Issued);
        assert_eq!(t.check(&b.access_token, secs(1)), Ok(()));
    }
}
