//! Secrets Manager's JSON protocol (`x-amz-json-1.1`): `GetSecretValue` for the functions, any
//! operation for set-up (local runs and tests).

use http::Method;
use serde_json::{Value, json};

use super::AwsError;
use super::signed::{Parsed, Request, Signed};

#[derive(Clone)]
pub struct SecretsManager {
    signed: Signed,
    url: Result<reqwest::Url, String>,
}

impl SecretsManager {
    pub(super) fn new(signed: Signed) -> Self {
        let url = match signed.endpoint() {
            Some(e) => format!("{e}/"),
            None => format!("{}/", signed.regional_url("secretsmanager")),
        };
        let url = reqwest::Url::parse(&url).map_err(|e| format!("endpoint {url}: {e}"));
        SecretsManager { signed, url }
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
        let local = |message: String| AwsError {
            service: "secretsmanager",
            status: None,
            code: "request".to_string(),
            message,
            old_item: None,
        };
        let url = self.url.as_ref().map_err(|e| local(e.clone()))?;
        let target = format!("secretsmanager.{operation}");
        let body = serde_json::to_vec(request).expect("a JSON value serialises");
        let reply = self
            .signed
            .send(
                Request {
                    method: Method::POST,
                    url,
                    headers: &[
                        ("content-type", "application/x-amz-json-1.1"),
                        ("x-amz-target", &target),
                    ],
                    body: body.into(),
                },
                parse_error,
            )
            .await?;
        // The body is not quoted in the error: it may be the secret.
        serde_json::from_slice(&reply.body).map_err(|_| AwsError {
            code: "response".to_string(),
            message: format!("{operation}: the answer is not JSON"),
            ..local(String::new())
        })
    }
}

/// `{"__type": "ResourceNotFoundException", "Message": ..}`.
fn parse_error(status: u16, body: &[u8]) -> Parsed {
    let doc: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = doc["__type"]
        .as_str()
        .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
        .unwrap_or_else(|| format!("HTTP{status}"));
    let message = doc["Message"]
        .as_str()
        .or(doc["message"].as_str())
        .unwrap_or_default()
        .to_string();
    Parsed {
        code,
        message,
        old_item: None,
    }
}
