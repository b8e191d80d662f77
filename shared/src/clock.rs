//! The one clock: every reading of the time in this crate (session and token expiry, leases,
//! margins, retry budgets, the refresher, deadlines) comes from here.
//!
//! It is tokio's clock. In production that is the monotonic clock anchored to the wall clock once
//! per process; under a paused tokio runtime (`#[tokio::test(start_paused = true)]`,
//! `tokio::time::advance`) it is virtual, so tests run days of token lifetimes in seconds. The
//! WeChat sandbox reads the same tokio clock, so both sides of a test age together.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use tokio::time::Instant;

struct Anchor {
    epoch: Duration,
    at: Instant,
}

fn anchor() -> &'static Anchor {
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    ANCHOR.get_or_init(|| Anchor {
        epoch: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
        at: Instant::now(),
    })
}

/// A point on the clock, for measuring and deadlines.
pub fn now() -> Instant {
    // The anchor is taken first, so `now` is never before it.
    let _ = anchor();
    Instant::now()
}

/// Milliseconds since the Unix epoch.
pub fn epoch_millis() -> u64 {
    let a = anchor();
    (a.epoch + Instant::now().saturating_duration_since(a.at)).as_millis() as u64
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_time() {
        let before = epoch_millis();
        let t = now();
        tokio::time::advance(Duration::from_secs(86_400)).await;
        assert!(epoch_millis() - before >= 86_400_000);
        assert!(now() - t >= Duration::from_secs(86_400));
    }
}
