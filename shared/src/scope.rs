//! What one request may spend and what it is waiting on, for the code deep inside it.
//!
//! The Lambda adapter runs each request inside [`run`] with the invocation's deadline. Upstream
//! calls mark what they wait on with [`waiting_on`]; retry loops stop at [`deadline`]; and when
//! the deadline is overrun, [`slowest`] names the part that ran out the clock (the one the
//! request spent the most time waiting on, the wait still in flight included), so the answer is
//! `store_unavailable` when DynamoDB or S3 was slow and `wechat_unavailable` when WeChat was.
//! Outside a scope (the refresher, tests calling the keeper directly) there is no deadline and
//! nothing is recorded.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use crate::clock::{self, Instant};

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
    request_id: String,
    deadline: Option<Instant>,
    /// What is waited on now, and since when.
    current: Cell<(Waiting, Instant)>,
    /// Time spent waiting on WeChat and on the store, the current wait not yet included.
    spent: Cell<[Duration; 2]>,
}

impl Scope {
    /// Books the time since the last switch to what was waited on, and switches to `next`.
    fn switch(&self, next: Waiting) -> Waiting {
        let now = clock::now();
        let (was, since) = self.current.replace((next, now));
        let mut spent = self.spent.get();
        match was {
            Waiting::WeChat => spent[0] += now - since,
            Waiting::Store => spent[1] += now - since,
            Waiting::Nothing => {}
        }
        self.spent.set(spent);
        was
    }
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// Runs `f` (a whole request) with `deadline`.
pub async fn run<F: Future>(deadline: Option<Instant>, f: F) -> F::Output {
    run_request(crate::ids::new_request_id(), deadline, f).await
}

/// Runs `f` (a whole request) as `request_id`, with `deadline`.
pub async fn run_request<F: Future>(
    request_id: String,
    deadline: Option<Instant>,
    f: F,
) -> F::Output {
    SCOPE
        .scope(
            Scope {
                request_id,
                deadline,
                current: Cell::new((Waiting::Nothing, clock::now())),
                spent: Cell::new([Duration::ZERO; 2]),
            },
            f,
        )
        .await
}

/// The id of the request running (the Lambda request id, or a generated one), if any.
pub fn request_id() -> Option<String> {
    SCOPE.try_with(|s| s.request_id.clone()).ok()
}

/// Calls `f` with the running request's id, if there is one (no copy of it).
pub fn with_request_id<R>(f: impl FnOnce(&str) -> R) -> Option<R> {
    SCOPE.try_with(|s| f(&s.request_id)).ok()
}

/// The request's deadline, if it runs in a scope that has one.
pub fn deadline() -> Option<Instant> {
    SCOPE.try_with(|s| s.deadline).ok().flatten()
}

/// What the request has spent the most time waiting on so far, the wait in flight included
/// (also one that the deadline cut off); `Nothing` outside a scope or before any wait.
pub fn slowest() -> Waiting {
    SCOPE
        .try_with(|s| {
            let current = s.current.get().0;
            s.switch(current);
            match s.spent.get() {
                [w, st] if w.is_zero() && st.is_zero() => Waiting::Nothing,
                [w, st] if st > w => Waiting::Store,
                _ => Waiting::WeChat,
            }
        })
        .unwrap_or(Waiting::Nothing)
}

/// Awaits `f`, marked as waiting on `what`. The mark is put back only when `f` completes: a wait
/// that the deadline cuts off is still in flight for [`slowest`].
pub async fn waiting_on<F: Future>(what: Waiting, f: F) -> F::Output {
    let before = SCOPE.try_with(|s| s.switch(what)).ok();
    let out = f.await;
    if let Some(before) = before {
        let _ = SCOPE.try_with(|s| s.switch(before));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_slowest_part_is_named_the_cut_off_wait_included() {
        let d = clock::now() + Duration::from_secs(3);
        let named = run(Some(d), async {
            // 1 s on WeChat, then a store wait that the deadline cuts off after 2 s.
            waiting_on(Waiting::WeChat, tokio::time::sleep(Duration::from_secs(1))).await;
            let slow = waiting_on(Waiting::Store, async {
                waiting_on(Waiting::WeChat, async {}).await;
                tokio::time::sleep(Duration::from_secs(5)).await
            });
            assert!(tokio::time::timeout_at(d, slow).await.is_err());
            (slowest(), deadline())
        })
        .await;
        assert_eq!(named, (Waiting::Store, Some(d)));

        // A store write cut off at the end does not outweigh a long WeChat wait.
        let d = clock::now() + Duration::from_secs(3);
        let named = run(Some(d), async {
            waiting_on(
                Waiting::WeChat,
                tokio::time::sleep(Duration::from_millis(2900)),
            )
            .await;
            let write = waiting_on(Waiting::Store, tokio::time::sleep(Duration::from_secs(1)));
            assert!(tokio::time::timeout_at(d, write).await.is_err());
            slowest()
        })
        .await;
        assert_eq!(named, Waiting::WeChat);

        assert_eq!(slowest(), Waiting::Nothing, "outside a scope");
        assert_eq!(deadline(), None);
    }
}
