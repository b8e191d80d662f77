//! DynamoDB's JSON protocol (`x-amz-json-1.0`): one signed POST per operation, the request and the
//! answer as JSON documents, exactly as the API reference writes them.

use http::Method;
use serde_json::Value;

use super::AwsError;
use super::signed::{Parsed, Request, Signed, xml_element};

#[derive(Clone)]
pub struct DynamoDb {
    signed: Signed,
    /// Parsed once; an unusable endpoint is reported by every call.
    url: Result<reqwest::Url, String>,
}

impl DynamoDb {
    pub(super) fn new(signed: Signed) -> Self {
        let url = match signed.endpoint() {
            Some(e) => format!("{e}/"),
            None => format!("{}/", signed.regional_url("dynamodb")),
        };
        let url = reqwest::Url::parse(&url).map_err(|e| format!("endpoint {url}: {e}"));
        DynamoDb { signed, url }
    }

    /// Calls `operation` (`GetItem`, `PutItem`, ...) with its request document; the answer's
    /// document. A refused condition is the error `ConditionalCheckFailedException`.
    pub async fn call(&self, operation: &str, request: &Value) -> Result<Value, AwsError> {
        let url = self.url.as_ref().map_err(|e| AwsError {
            old_item: None,
            service: "dynamodb",
            status: None,
            code: "request".to_string(),
            message: e.clone(),
        })?;
        let target = format!("DynamoDB_20120810.{operation}");
        let body = serde_json::to_vec(request).expect("a JSON value serialises");
        let reply = self
            .signed
            .send(
                Request {
                    method: Method::POST,
                    url,
                    headers: &[
                        ("content-type", "application/x-amz-json-1.0"),
                        ("x-amz-target", &target),
                    ],
                    body: body.into(),
                },
                parse_error,
            )
            .await?;
        serde_json::from_slice(&reply.body).map_err(|e| AwsError {
            old_item: None,
            service: "dynamodb",
            status: Some(reply.status),
            code: "response".to_string(),
            message: format!("{operation}: the answer is not JSON: {e}"),
        })
    }
}

/// `{"__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException", "message": ..}`
/// gives `ConditionalCheckFailedException`. An XML error (from something in front of DynamoDB)
/// is read as S3's are.
fn parse_error(status: u16, body: &[u8]) -> Parsed {
    let mut doc: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = String::from_utf8_lossy(body);
    let code = doc["__type"]
        .as_str()
        .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
        .or_else(|| xml_element(&text, "Code"))
        .unwrap_or_else(|| format!("HTTP{status}"));
    let message = doc["message"]
        .as_str()
        .or(doc["Message"].as_str())
        .map(str::to_string)
        .or_else(|| xml_element(&text, "Message"))
        .unwrap_or_default();
    let old_item = match doc.get_mut("Item").map(Value::take) {
        Some(Value::Object(item)) => Some(item),
        _ => None,
    };
    Parsed {
        code,
        message,
        old_item,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_read_without_their_namespace() {
        let p = parse_error(
            400,
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional request failed","Item":{"holder":{"S":"a"}}}"#,
        );
        assert_eq!(p.code, "ConditionalCheckFailedException");
        assert_eq!(p.message, "The conditional request failed");
        assert_eq!(p.old_item.unwrap()["holder"]["S"], "a");
        let p = parse_error(
            400,
            br#"{"__type":"com.amazon.coral.validate#ValidationException","Message":"bad"}"#,
        );
        assert_eq!(
            (p.code.as_str(), p.message.as_str()),
            ("ValidationException", "bad")
        );
        assert_eq!(parse_error(503, b"<html>").code, "HTTP503");
        let p = parse_error(
            403,
            b"<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code></Error></ErrorResponse>",
        );
        assert_eq!(p.code, "SignatureDoesNotMatch");
    }
}
