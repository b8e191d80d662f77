//! Bounded retries with exponential backoff and jitter, shared by every upstream call.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total tries, the first included.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No new try starts after this much time has gone by since the first.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
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

    /// Runs `op` until it succeeds, fails with an error `retryable` rejects, or tries/budget run out.
    /// `op` gets the try number and the time left in the budget, and must bound the try by it
    /// (the budget is checked only between tries).
    pub async fn run<T, E, F, Fut>(&self, retryable: impl Fn(&E) -> bool, mut op: F) -> Result<T, E>
    where
        F: FnMut(u32, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let left = self.budget.saturating_sub(started.elapsed());
            match op(attempt, left).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let delay = self.delay(attempt);
                    if attempt >= self.attempts
                        || !retryable(&e)
                        || started.elapsed() + delay > self.budget
                    {
                        return Err(e);
                    }
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stops_after_the_bounded_attempts() {
        let p = RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(1),
            ..Default::default()
        };
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
        assert_eq!(calls, 3);
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
