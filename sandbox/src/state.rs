//! Everything the sandbox remembers, behind one mutex.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::codes::{LoginCodes, PhoneCodes};
use crate::error::WxError;
use crate::faults::FaultGate;
use crate::tokens::{Grant, Origin, Tokens};
use crate::{SandboxConfig, Stats};

/// Seconds in a UTC day, for the per-day force-refresh limit.
const DAY_SECS: u64 = 86_400;

/// The sandbox's clock: tokio's clock plus whatever tests skipped with `advance_time`.
///
/// Tokio's clock is the monotonic clock, except under a paused runtime
/// (`#[tokio::test(start_paused = true)]`, `tokio::time::advance`), where it only moves when
/// the test moves it, so token and code lifetimes and watermark timestamps follow it. The
/// paused clock belongs to a runtime: create and use a sandbox in the same one.
#[derive(Debug)]
pub(crate) struct Clock {
    start: Instant,
    /// Unix time when the clock was created; wall time then moves with `start`, not with
    /// the system clock.
    start_epoch: Duration,
    skipped: Duration,
}

impl Clock {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            start_epoch: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            skipped: Duration::ZERO,
        }
    }

    /// Time since the sandbox started; every expiry is measured on this scale.
    pub(crate) fn now(&self) -> Duration {
        self.start.elapsed() + self.skipped
    }

    /// Unix time in seconds, as WeChat puts in watermarks.
    pub(crate) fn epoch_secs(&self) -> u64 {
        (self.start_epoch + self.now()).as_secs()
    }

    /// The UTC day (days since the Unix epoch) on this clock: WeChat's daily quotas reset when
    /// it changes.
    pub(crate) fn utc_day(&self) -> u64 {
        self.epoch_secs() / DAY_SECS
    }

    pub(crate) fn advance(&mut self, by: Duration) {
        self.skipped += by;
    }
}

#[derive(Debug)]
pub(crate) struct State {
    pub clock: Clock,
    pub tokens: Tokens,
    pub login_codes: LoginCodes,
    pub phone_codes: PhoneCodes,
    pub faults: FaultGate,
    pub stats: Stats,
    rid_seq: u64,
    /// The app secret WeChat accepts now (rotated with `POST /_sandbox/secret`).
    pub secret: String,
    pub subscriptions: crate::subscribe::Subscriptions,
    pub links: crate::security::LinkQuota,
    /// Where media-check results are pushed (set at run time; else the config's `push_url`).
    pub push_target: Option<(String, crate::PushMode, crate::PushFormat)>,
}

impl State {
    pub(crate) fn new(cfg: &SandboxConfig) -> Self {
        let code_ttl = Duration::from_secs(cfg.code_ttl_secs);
        Self {
            clock: Clock::new(),
            tokens: Tokens::new(cfg),
            login_codes: LoginCodes::new(code_ttl),
            phone_codes: PhoneCodes::new(code_ttl),
            faults: FaultGate::default(),
            stats: Stats::default(),
            rid_seq: 0,
            secret: cfg.secret.clone(),
            subscriptions: Default::default(),
            links: Default::default(),
            push_target: cfg
                .push_url
                .clone()
                .map(|u| (u, cfg.push_mode, cfg.push_format)),
        }
    }

    pub(crate) fn now(&self) -> Duration {
        self.clock.now()
    }

    /// A stable-token request at the current time, with the clock's UTC day for the force limit.
    pub(crate) fn stable_token(&mut self, force: bool) -> Result<Grant, WxError> {
        let (now, day) = (self.clock.now(), self.clock.utc_day());
        self.tokens.stable(now, day, force)
    }

    pub(crate) fn count_call(&mut self, path: &str) {
        *self.stats.calls.entry(path.to_owned()).or_default() += 1;
    }

    /// Books a token grant in the stats.
    pub(crate) fn record_grant(&mut self, grant: &Grant, legacy: bool) {
        match (grant.origin, legacy) {
            (Origin::Reused, _) => {}
            (_, true) => self.stats.legacy_issued += 1,
            (Origin::Issued, false) => self.stats.stable_issued += 1,
            (Origin::Forced, false) => {
                self.stats.stable_issued += 1;
                self.stats.force_refreshes += 1;
            }
        }
    }

    /// A request id for an error message: hex, deterministic per sandbox.
    pub(crate) fn next_rid(&mut self) -> String {
        self.rid_seq += 1;
        let digest = Sha256::digest(format!("rid:{}", self.rid_seq));
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(DAY_SECS);

    #[tokio::test(start_paused = true)]
    async fn clock_follows_paused_tokio_time() {
        let clock = Clock::new();
        let (epoch, day) = (clock.epoch_secs(), clock.utc_day());
        tokio::time::advance(DAY).await;
        assert_eq!(clock.now(), DAY);
        assert_eq!(clock.epoch_secs(), epoch + DAY_SECS);
        assert_eq!(clock.utc_day(), day + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn skipped_time_adds_to_tokio_time() {
        let mut clock = Clock::new();
        let epoch = clock.epoch_secs();
        clock.advance(Duration::from_secs(100));
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(clock.now(), Duration::from_secs(120));
        assert_eq!(clock.epoch_secs(), epoch + 120);
    }
}
