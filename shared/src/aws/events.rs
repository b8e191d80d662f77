//! EventBridge's JSON protocol (`x-amz-json-1.1`, target `AWSEvents`): `PutEvents` for the
//! functions, any operation for set-up (tests, local runs).

use serde_json::{Value, json};

use super::AwsError;
use super::signed::{JsonService, Signed};

#[derive(Clone)]
pub struct EventBridge(JsonService);

impl EventBridge {
    pub(super) fn new(signed: Signed) -> Self {
        EventBridge(JsonService::new(
            signed,
            "events",
            "application/x-amz-json-1.1",
            "AWSEvents",
        ))
    }

    /// Puts one event on `bus`. An entry the service refused (`FailedEntryCount`) is an error
    /// with the entry's code.
    pub async fn put_event(
        &self,
        bus: &str,
        source: &str,
        detail_type: &str,
        detail: &Value,
    ) -> Result<String, AwsError> {
        let out = self
            .call(
                "PutEvents",
                &json!({ "Entries": [{
                    "EventBusName": bus,
                    "Source": source,
                    "DetailType": detail_type,
                    "Detail": detail.to_string(),
                }]}),
            )
            .await?;
        let entry = out.get("Entries").and_then(|e| e.get(0));
        match entry.and_then(|e| e.get("EventId")).and_then(Value::as_str) {
            Some(id)
                if out
                    .get("FailedEntryCount")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    == 0 =>
            {
                Ok(id.to_string())
            }
            _ => Err(AwsError {
                service: "events",
                status: None,
                code: entry
                    .and_then(|e| e.get("ErrorCode"))
                    .and_then(Value::as_str)
                    .unwrap_or("FailedEntry")
                    .to_string(),
                message: entry
                    .and_then(|e| e.get("ErrorMessage"))
                    .and_then(Value::as_str)
                    .unwrap_or("the event was not put")
                    .to_string(),
                old_item: None,
            }),
        }
    }

    /// Calls `operation` (`CreateEventBus`, `PutRule`, ...) with its request document.
    pub async fn call(&self, operation: &str, request: &Value) -> Result<Value, AwsError> {
        self.0.call(operation, request).await
    }
}

/// Any JSON-protocol service, for set-up and inspection (SQS in the tests).
#[derive(Clone)]
pub struct JsonClient(JsonService);

impl JsonClient {
    pub(super) fn new(
        signed: Signed,
        host: &str,
        content_type: &'static str,
        target: &'static str,
    ) -> Self {
        JsonClient(JsonService::new(signed, host, content_type, target))
    }

    pub async fn call(&self, operation: &str, request: &Value) -> Result<Value, AwsError> {
        self.0.call(operation, request).await
    }
}
