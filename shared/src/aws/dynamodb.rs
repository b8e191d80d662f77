//! DynamoDB's JSON protocol (`x-amz-json-1.0`): one signed POST per operation, the request and the
//! answer as JSON documents, exactly as the API reference writes them.

use serde_json::Value;

use super::AwsError;
use super::signed::{JsonService, Signed};

#[derive(Clone)]
pub struct DynamoDb(JsonService);

impl DynamoDb {
    pub(super) fn new(signed: Signed) -> Self {
        DynamoDb(JsonService::new(
            signed,
            "dynamodb",
            "application/x-amz-json-1.0",
            "DynamoDB_20120810",
        ))
    }

    /// Opens a connection to DynamoDB ahead of the first call (a cold start's), unless `want`
    /// are open or being opened.
    pub fn open_ahead(
        &self,
        want: usize,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.0.open_ahead(want)
    }

    /// Calls `operation` (`GetItem`, `PutItem`, ...) with its request document; the answer's
    /// document. A refused condition is the error `ConditionalCheckFailedException` (with the
    /// old item when the request asked for it).
    pub async fn call(&self, operation: &str, request: &Value) -> Result<Value, AwsError> {
        self.0.call(operation, request).await
    }
}
