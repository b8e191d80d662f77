//! The one clock: every reading of the time in this crate (session and token expiry, leases,
//! margins, retry budgets, the refresher, deadlines) comes from here.
//!
//! Points in time ([`now`], for timeouts within a request) are tokio's; epoch times ([`epoch_millis`],
//! for expiries, leases and stamps shared with other instances) are the system's wall clock plus
//! however far tokio's clock was moved ahead of the real one, which is nothing in production. Under
//! a paused tokio runtime (`#[tokio::test(start_paused = true)]`, `tokio::time::advance`) both are
//! virtual, so tests run days of token lifetimes in seconds. The WeChat sandbox reads the same
//! tokio clock, so both sides of a test age together.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use tokio::time::Instant;

/// A point on the clock, for measuring and deadlines.
pub fn now() -> Instant {
    Instant::now()
}

/// Milliseconds since the Unix epoch: the system's wall clock, read at each call (a Lambda
/// instance frozen for minutes, or a clock stepped after start, must not leave it behind), plus
/// how far tokio's clock has been moved ahead of the real one (zero unless a test paused it).
pub fn epoch_millis() -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i128;
    let virtual_now = Instant::now();
    let real_now = Instant::from_std(std::time::Instant::now());
    let ahead = if virtual_now >= real_now {
        (virtual_now - real_now).as_nanos() as i128
    } else {
        -((real_now - virtual_now).as_nanos() as i128)
    };
    ((wall + ahead).max(0) / 1_000_000) as u64
}

/// Seconds since the Unix epoch.
pub fn epoch_secs() -> u64 {
    epoch_millis() / 1000
}

/// The point on this clock that corresponds to `epoch_ms` (a Lambda deadline, say); `now()` if
/// that has passed.
pub fn instant_at_epoch_millis(epoch_ms: u64) -> Instant {
    let ahead = epoch_ms.saturating_sub(epoch_millis());
    Instant::now() + Duration::from_millis(ahead)
}

/// The UTC day number (days since the epoch), for per-day quotas.
pub fn utc_day() -> u64 {
    epoch_secs() / 86_400
}

pub async fn sleep(d: Duration) {
    tokio::time::sleep(d).await
}

/// The (year, month, day) of a day counted from 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_time() {
        let before = epoch_millis();
        let t = now();
        tokio::time::advance(Duration::from_secs(86_400)).await;
        let moved = epoch_millis() - before;
        // Real time also passes between the readings; a millisecond either way is rounding.
        assert!((86_399_999..86_400_500).contains(&moved), "{moved}");
        assert!(now() - t >= Duration::from_secs(86_400));
    }
}
