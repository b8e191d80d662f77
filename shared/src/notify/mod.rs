//! The notify function's work: what it does with each event the bus delivers.
//!
//! - WeChat's subscribe pushes (`subscribe_msg_popup_event`, `subscribe_msg_change_event`,
//!   `subscribe_msg_sent_event`) update the grant ledger ([`ledger`]).
//! - `wechat.subscribe.send` events send a subscribe message ([`send`]) and answer with a
//!   `wechat.subscribe.result` event.
//!
//! EventBridge delivers at least once: each event is claimed by its id (a send by its
//! idempotency key) before it is acted on, so a redelivery does nothing. An `Err` means the
//! store failed before anything was done: Lambda's retry of the invocation may succeed.

pub mod ledger;
pub mod send;

use crate::app::App;
use crate::events::{BusEvent, PUSH_SOURCE, SEND};
use crate::store::StoreError;

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

/// Handles one event from the bus.
pub async fn handle(app: &App, event: &BusEvent) -> Result<Outcome, StoreError> {
    match (event.source.as_str(), event.detail_type.as_str()) {
        (_, SEND) => send::send(app, &event.detail).await,
        (PUSH_SOURCE, t) if ledger::EVENTS.contains(&t) => {
            let now = crate::now_secs();
            let key = format!("event#{}", event.id);
            let holder = crate::ids::new_request_id();
            if !event.id.is_empty()
                && !app
                    .store
                    .claim(&key, &holder, now + REMEMBER_SECS, now)
                    .await?
            {
                tracing::info!(detail_type = t, "event delivered before: not applied again");
                return Ok(Outcome::Duplicate);
            }
            match ledger::apply(app.store.as_ref(), &event.detail).await {
                Ok(n) => {
                    tracing::info!(detail_type = t, changes = n, "grant ledger updated");
                    Ok(Outcome::Ledger(n))
                }
                Err(e) => {
                    // Not applied (or partly): let Lambda's retry apply it.
                    let _ = app.store.release_claim(&key, &holder).await;
                    Err(e)
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
