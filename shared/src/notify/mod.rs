//! The notify function's work: what it does with each event the bus delivers.
//!
//! - WeChat's subscribe pushes (`subscribe_msg_popup_event`, `subscribe_msg_change_event`,
//!   `subscribe_msg_sent_event`) update the grant ledger ([`ledger`]).
//! - `wechat.subscribe.send` events send a subscribe message ([`send`]) and answer with a
//!   `wechat.subscribe.result` event.
//!
//! EventBridge delivers at least once: each event is claimed (a push by its content, a send by its
//! idempotency key) with a short lease while it is handled and for a day once it is, so a
//! redelivery does nothing. An `Err` means nothing was done (the store failed, or another
//! invocation holds the event): Lambda's retry of the invocation may succeed.

pub mod ledger;
pub mod send;

use crate::app::App;
use crate::events::{BusEvent, PUSH_SOURCE, SEND};
use crate::store::{Claim, StoreError};

/// How long a handled event id (and a send's idempotency key) is remembered.
pub const REMEMBER_SECS: u64 = 24 * 3600;

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Ledger entries changed.
    Ledger(usize),
    /// A send's result (the status of the result event).
    Sent(send::Status),
    /// Delivered before: nothing done.
    Duplicate,
    /// Not an event for this function.
    Ignored,
}

/// How long one invocation holds an event while it works on it (the function's timeout is 20 s).
pub const LEASE_SECS: u64 = 60;

/// Why an event was not handled: Lambda's retry of the invocation may succeed.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the same event is being handled by another invocation")]
    InFlight,
}

/// Claims `key` for this invocation: `Ok(true)` to go on, `Ok(false)` if it was handled
/// before, `Err(InFlight)` while another invocation holds it.
pub(crate) async fn lease(
    app: &App,
    key: &str,
    holder: &str,
    now: u64,
) -> Result<bool, NotifyError> {
    match app.store.claim(key, holder, now + LEASE_SECS, now).await? {
        Claim::Taken => Ok(true),
        Claim::Held { until } if until > now + LEASE_SECS => Ok(false),
        Claim::Held { .. } => Err(NotifyError::InFlight),
    }
}

/// Marks `key` done for a day (a failure to is logged: a redelivery may then do it again).
pub(crate) async fn done(app: &App, key: &str, holder: &str, now: u64) {
    if let Err(e) = app.store.claim(key, holder, now + REMEMBER_SECS, now).await {
        tracing::warn!(error = %e, "the handled event could not be marked done");
    }
}

/// Handles one event from the bus.
pub async fn handle(app: &App, event: &BusEvent) -> Result<Outcome, NotifyError> {
    match (event.source.as_str(), event.detail_type.as_str()) {
        // Sends come from the team's services, never from WeChat's pushes.
        (source, SEND) if source != PUSH_SOURCE => send::send(app, &event.detail).await,
        (PUSH_SOURCE, t) if ledger::EVENTS.contains(&t) => {
            let now = crate::now_secs();
            // By the push's content: the same push published twice (a PutEvents retried after
            // it was applied) has two event ids.
            let key = match event.detail.as_object() {
                Some(m) => format!("ledger#{}", crate::push::message::dedup_key(m)),
                None => format!("ledger#event#{}", event.id),
            };
            let holder = crate::ids::new_request_id();
            if !lease(app, &key, &holder, now).await? {
                tracing::info!(detail_type = t, "event delivered before: not applied again");
                return Ok(Outcome::Duplicate);
            }
            match ledger::apply(app.store.as_ref(), &event.detail).await {
                Ok(n) => {
                    done(app, &key, &holder, now).await;
                    tracing::info!(detail_type = t, changes = n, "grant ledger updated");
                    Ok(Outcome::Ledger(n))
                }
                Err(e) => {
                    // Not applied (one write): let Lambda's retry apply it.
                    let _ = app.store.release_claim(&key, &holder).await;
                    Err(e.into())
                }
            }
        }
        (source, t) => {
            tracing::info!(
                source,
                detail_type = t,
                "event not for the notify function: ignored"
            );
            Ok(Outcome::Ignored)
        }
    }
}
