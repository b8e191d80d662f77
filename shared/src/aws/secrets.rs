//! Secrets Manager's JSON protocol (`x-amz-json-1.1`): `GetSecretValue` for the functions, any
//! operation for set-up (local runs and tests).

use serde_json::{Value, json};

use super::AwsError;
use super::signed::{JsonService, Signed};

#[derive(Clone)]
pub struct SecretsManager(JsonService);

impl SecretsManager {
    pub(super) fn new(signed: Signed) -> Self {
        SecretsManager(JsonService::new(
            signed,
            "secretsmanager",
            "application/x-amz-json-1.1",
            "secretsmanager",
        ))
    }

    /// The secret's current string value. Errors carry the service's code
    /// (`ResourceNotFoundException`, `AccessDeniedException`, ...), never the value.
    pub async fn get_secret_string(&self, id: &str) -> Result<String, AwsError> {
        let out = self
            .call("GetSecretValue", &json!({ "SecretId": id }))
            .await?;
        match out.get("SecretString").and_then(Value::as_str) {
            Some(s) => Ok(s.to_string()),
            None => Err(AwsError {
                service: "secretsmanager",
                status: None,
                code: "response".to_string(),
                message: "the secret has no string value (a binary secret?)".to_string(),
                old_item: None,
            }),
        }
    }

    /// Calls `operation` (`CreateSecret`, `PutSecretValue`, ...) with its request document.
    pub async fn call(&self, operation: &str, request: &Value) -> Result<Value, AwsError> {
        self.0.call(operation, request).await
    }
}
