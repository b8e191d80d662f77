//! Everything the sandbox remembers, behind one mutex.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::codes::{LoginCodes, PhoneCodes};
use crate::faults::FaultGate;
use crate::tokens::{Grant, Origin, Tokens};
use crate::{SandboxConfig, Stats};

/// The sandbox's clock: real time plus whatever tests skipped with `advance_time`.
#[derive(Debug)]
pub(crate) struct Clock {
    start: Instant,
    skipped: Duration,
}

impl Clock {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            skipped: Duration::ZERO,
        }
    }

    /// Time since the sandbox started; every expiry is measured on this scale.
    pub(crate) fn now(&self) -> Duration {
        self.start.elapsed() + self.skipped
    }

    /// Unix time in seconds, as WeChat puts in watermarks.
    pub(crate) fn epoch_secs(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (real + self.skipped).as_secs()
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
        }
    }

    pub(crate) fn now(&self) -> Duration {
        self.clock.now()
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
