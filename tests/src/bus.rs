//! An EventBridge bus on moto whose rule sends every event of the project's sources to an SQS
//! queue (moto's server delivers to SQS targets), and a reader of that queue: what a test sees is
//! what a subscriber of the bus would get.

use std::time::Duration;

use aws_config::SdkConfig;
use serde_json::{Value, json};
use wxmp::aws::{EventBridge, JsonClient};

use crate::moto;

pub struct TestBus {
    pub name: String,
    pub queue_url: String,
    pub events: EventBridge,
    sqs: JsonClient,
}

/// The SQS client of `sdk` (SQS's JSON protocol).
pub fn sqs(sdk: &SdkConfig) -> JsonClient {
    wxmp::aws::json_client(sdk, "sqs", "application/x-amz-json-1.0", "AmazonSQS")
}

impl TestBus {
    /// A new bus and queue; the rule takes the pushes, the sends and the results.
    pub async fn new(sdk: &SdkConfig) -> Self {
        let name = moto::unique_name("bus");
        let events = wxmp::aws::eventbridge(sdk);
        let sqs = sqs(sdk);
        events
            .call("CreateEventBus", &json!({ "Name": name }))
            .await
            .expect("CreateEventBus");
        let queue = sqs
            .call("CreateQueue", &json!({ "QueueName": format!("{name}-q") }))
            .await
            .expect("CreateQueue");
        let queue_url = queue["QueueUrl"].as_str().expect("QueueUrl").to_string();
        let attrs = sqs
            .call(
                "GetQueueAttributes",
                &json!({ "QueueUrl": queue_url, "AttributeNames": ["QueueArn"] }),
            )
            .await
            .expect("GetQueueAttributes");
        let arn = attrs["Attributes"]["QueueArn"].as_str().expect("QueueArn");
        let pattern = json!({ "source": [
            wxmp::events::PUSH_SOURCE,
            wxmp::events::NOTIFY_SOURCE,
            "test.sender",
        ]});
        events
            .call(
                "PutRule",
                &json!({
                    "Name": format!("{name}-all"),
                    "EventBusName": name,
                    "EventPattern": pattern.to_string(),
                    "State": "ENABLED",
                }),
            )
            .await
            .expect("PutRule");
        events
            .call(
                "PutTargets",
                &json!({
                    "Rule": format!("{name}-all"),
                    "EventBusName": name,
                    "Targets": [{ "Id": "queue", "Arn": arn }],
                }),
            )
            .await
            .expect("PutTargets");
        TestBus {
            name,
            queue_url,
            events,
            sqs,
        }
    }

    /// The events that arrived, waiting up to `wait` for at least `n` (fewer if they do not
    /// come), each as EventBridge delivers it (`source`, `detail-type`, `detail`, `id`, ...).
    pub async fn take(&self, n: usize, wait: Duration) -> Vec<Value> {
        let end = tokio::time::Instant::now() + wait;
        let mut got = Vec::new();
        loop {
            let out = self
                .sqs
                .call(
                    "ReceiveMessage",
                    &json!({ "QueueUrl": self.queue_url, "MaxNumberOfMessages": 10 }),
                )
                .await
                .expect("ReceiveMessage");
            for m in out["Messages"].as_array().cloned().unwrap_or_default() {
                let body: Value =
                    serde_json::from_str(m["Body"].as_str().expect("Body")).expect("JSON event");
                got.push(body);
                self.sqs
                    .call(
                        "DeleteMessage",
                        &json!({ "QueueUrl": self.queue_url, "ReceiptHandle": m["ReceiptHandle"] }),
                    )
                    .await
                    .expect("DeleteMessage");
            }
            if got.len() >= n || tokio::time::Instant::now() >= end {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Exactly the events that arrive within a short settle time after `n` came: a test that
    /// expects `n` sees any extra one.
    pub async fn take_exactly(&self, n: usize) -> Vec<Value> {
        let mut got = self.take(n, Duration::from_secs(5)).await;
        got.extend(self.take(usize::MAX, Duration::from_millis(300)).await);
        got
    }

    /// Puts an event on the bus as another service would.
    pub async fn put(&self, source: &str, detail_type: &str, detail: &Value) {
        self.events
            .put_event(&self.name, source, detail_type, detail)
            .await
            .expect("PutEvents");
    }
}
