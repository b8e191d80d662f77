//! What one request may spend and what it is waiting on, for the code deep inside it.
//!
//! The Lambda adapter runs each request inside [`run`] with the invocation's deadline. Upstream
//! calls mark what they wait on with [`waiting_on`]; retry loops stop at [`deadline`]; and when
//! the deadline is overrun, [`waiting`] names the part that ran out the clock, so the answer is
//! `store_unavailable` when DynamoDB or S3 was slow and `wechat_unavailable` when WeChat was.
//! Outside a scope (the refresher, tests calling the keeper directly) there is no deadline and
//! nothing is recorded.

use std::cell::Cell;
use std::future::Future;

use crate::clock::Instant;

/// The upstream a request is waiting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    Nothing,
    /// WeChat's API, or another instance's token fetch.
    WeChat,
    /// DynamoDB or S3.
    Store,
}

struct Scope {
    deadline: Option<Instant>,
    waiting: Cell<Waiting>,
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// Runs `f` (a whole request) with `deadline`.
pub async fn run<F: Future>(deadline: Option<Instant>, f: F) -> F::Output {
    SCOPE
        .scope(
            Scope {
                deadline,
                waiting: Cell::new(Waiting::Nothing),
            },
            f,
        )
        .await
}

/// The request's deadline, if it runs in a scope that has one.
pub fn deadline() -> Option<Instant> {
    SCOPE.try_with(|s| s.deadline).ok().flatten()
}

/// What the request was waiting on last (still set if the wait was cut off by the deadline).
pub fn waiting() -> Waiting {
    SCOPE
        .try_with(|s| s.waiting.get())
        .unwrap_or(Waiting::Nothing)
}

fn set(w: Waiting) -> Waiting {
    SCOPE
        .try_with(|s| s.waiting.replace(w))
        .unwrap_or(Waiting::Nothing)
}

/// Awaits `f`, marked as waiting on `what`. The mark is put back only when `f` completes: a wait
/// that the deadline cuts off stays recorded.
pub async fn waiting_on<F: Future>(what: Waiting, f: F) -> F::Output {
    let before = set(what);
    let out = f.await;
    set(before);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_cut_off_wait_is_remembered() {
        let d = crate::clock::now() + Duration::from_secs(1);
        let w = run(Some(d), async {
            let slow = waiting_on(Waiting::Store, async {
                waiting_on(Waiting::WeChat, async {}).await;
                tokio::time::sleep(Duration::from_secs(5)).await
            });
            assert!(tokio::time::timeout_at(d, slow).await.is_err());
            (waiting(), deadline())
        })
        .await;
        assert_eq!(w, (Waiting::Store, Some(d)));
        assert_eq!(waiting(), Waiting::Nothing, "outside a scope");
        assert_eq!(deadline(), None);
    }
}
