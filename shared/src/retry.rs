//! Bounded retries with exponential backoff and jitter, shared by every upstream call.
//!
//! Bounded by time, not by a count: a try starts only while the budget (and the request's
//! deadline, see [`crate::scope`]) leaves room for it. A code, a login or a phone number is worth
//! a few seconds of a user's wait; a real outage still answers within the budget.

use std::time::Duration;

use crate::clock::{self, Instant};

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No new try starts after this much time has gone by since the first.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            budget: Duration::from_secs(6),
        }
    }
}

impl RetryPolicy {
    /// The wait before try number `attempt + 1` (attempt counts from 1): base * 2^(attempt-1),
    /// capped, plus up to 50% random jitter so instances that failed together do not retry together.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16))
            .min(self.max_delay);
        let jitter_ms = (exp.as_millis() as u64 / 2).max(1);
        exp + Duration::from_millis(crate::ids::random_u64() % jitter_ms)
    }

    /// When the budget of a run starting at `started` ends: the budget, or the request's
    /// deadline if that comes first.
    pub fn end(&self, started: Instant) -> Instant {
        let own = started + self.budget;
        crate::scope::deadline().map_or(own, |d| d.min(own))
    }

    /// Runs `op` until it succeeds, fails with an error `retryable` rejects, or the budget runs
    /// out. `op` gets the try number and the time left, and must bound the try by it (the budget
    /// is checked only between tries).
    pub async fn run<T, E, F, Fut>(&self, retryable: impl Fn(&E) -> bool, mut op: F) -> Result<T, E>
    where
        F: FnMut(u32, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let end = self.end(clock::now());
        let mut attempt = 1;
        loop {
            let left = end.saturating_duration_since(clock::now());
            match op(attempt, left).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let delay = self.delay(attempt);
                    if !retryable(&e) || clock::now() + delay >= end {
                        return Err(e);
                    }
                    clock::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_until_the_budget_not_a_count() {
        let p = RetryPolicy::default();
        let started = clock::now();
        let mut calls = 0;
        let r: Result<(), &str> = p
            .run(
                |_| true,
                |_, _| {
                    calls += 1;
                    async { Err("busy") }
                },
            )
            .await;
        assert_eq!(r, Err("busy"));
        let took = clock::now() - started;
        // 0.1 + 0.2 + 0.4 + 0.8 + 1 + 1 ... s with up to 50% jitter: 6 to 10 tries in 6 s.
        assert!((6..=10).contains(&calls), "{calls} tries");
        assert!(took <= p.budget, "{took:?}");
        assert!(took >= p.budget - p.max_delay * 2, "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_deadline_cuts_the_budget() {
        let p = RetryPolicy::default();
        let d = clock::now() + Duration::from_millis(900);
        let calls = crate::scope::run(Some(d), async {
            let mut calls = 0;
            let _: Result<(), &str> = p
                .run(
                    |_| true,
                    |_, _| {
                        calls += 1;
                        async { Err("busy") }
                    },
                )
                .await;
            calls
        })
        .await;
        assert!(clock::now() < d, "gave up before the deadline");
        assert!((2..=4).contains(&calls), "{calls} tries");
    }

    #[tokio::test]
    async fn does_not_retry_what_cannot_be_fixed() {
        let p = RetryPolicy::default();
        let mut calls = 0;
        let r: Result<(), &str> = p
            .run(
                |e| *e == "busy",
                |_, _| {
                    calls += 1;
                    async { Err("fatal") }
                },
            )
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }

    #[test]
    fn delays_grow_and_are_capped() {
        let p = RetryPolicy::default();
        assert!(
            p.delay(1) >= Duration::from_millis(100) && p.delay(1) < Duration::from_millis(150)
        );
        assert!(p.delay(2) >= Duration::from_millis(200));
        assert!(p.delay(20) <= Duration::from_millis(1500));
    }
}
