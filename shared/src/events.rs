//! The event bus where WeChat's pushes meet the team's other services (EventBridge,
//! `EVENT_BUS_NAME`), and the local server's in-process stand-in for it.
//!
//! - Pushes: source [`PUSH_SOURCE`], `detail-type` the push's `Event` (or `MsgType`).
//! - Subscribe messages: any service puts [`SEND`]; the notify function answers with [`RESULT`]
//!   from [`NOTIFY_SOURCE`].

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::aws::EventBridge;

pub const PUSH_SOURCE: &str = "wechat.miniprogram";
pub const NOTIFY_SOURCE: &str = "wxmp.notify";
pub const SEND: &str = "wechat.subscribe.send";
pub const RESULT: &str = "wechat.subscribe.result";

/// An event as EventBridge delivers it to a target (the fields the functions read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusEvent {
    /// EventBridge's event id (the local bus makes one up).
    #[serde(default)]
    pub id: String,
    pub source: String,
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    #[serde(default)]
    pub detail: Value,
}

impl BusEvent {
    pub fn new(source: &str, detail_type: &str, detail: Value) -> Self {
        BusEvent {
            id: String::new(),
            source: source.into(),
            detail_type: detail_type.into(),
            detail,
        }
    }
}

/// Where events are put. Errors say which service failed and why, never an event's content.
#[async_trait]
pub trait EventSink: Send + Sync {
    async fn put(&self, event: BusEvent) -> Result<(), String>;
}

/// EventBridge, on the bus `EVENT_BUS_NAME`.
pub struct EventBridgeSink {
    client: EventBridge,
    bus: String,
}

impl EventBridgeSink {
    pub fn new(client: EventBridge, bus: impl Into<String>) -> Self {
        EventBridgeSink {
            client,
            bus: bus.into(),
        }
    }
}

#[async_trait]
impl EventSink for EventBridgeSink {
    async fn put(&self, event: BusEvent) -> Result<(), String> {
        crate::scope::waiting_on(
            crate::scope::Waiting::Store,
            self.client
                .put_event(&self.bus, &event.source, &event.detail_type, &event.detail),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    }
}

/// The local server's bus: events go to a channel that the server's own consumer reads (the
/// notify function's work, as EventBridge's rule would invoke it).
pub struct LocalBus {
    tx: mpsc::UnboundedSender<BusEvent>,
}

impl LocalBus {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<BusEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (LocalBus { tx }, rx)
    }
}

#[async_trait]
impl EventSink for LocalBus {
    async fn put(&self, mut event: BusEvent) -> Result<(), String> {
        if event.id.is_empty() {
            event.id = crate::ids::new_request_id();
        }
        self.tx
            .send(event)
            .map_err(|_| "the local bus has stopped".to_string())
    }
}
