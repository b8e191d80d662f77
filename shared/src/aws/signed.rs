//! One SigV4-signed exchange with an AWS service, with the SDK's retry rules: transient failures
//! (connection, timeout, 5xx) and throttling are tried again, at most three attempts in all, after
//! a jittered exponential backoff; each attempt is bounded (2 s) and so is the whole call (5 s).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_types::error::display::DisplayErrorContext;
use bytes::Bytes;
use http::Method;
use serde_json::Value;

use super::sigv4::{Keys, Signer, Style};
use crate::clock;
use crate::net::conn::Connections;

const ATTEMPTS: u32 = 3;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The first retry waits up to this long, the second up to twice as long (full jitter).
const BACKOFF_BASE: Duration = Duration::from_millis(50);
/// Credentials this close to their expiry are fetched again.
const CREDENTIALS_MARGIN: Duration = Duration::from_secs(60);

/// A failed AWS call: the service's own error, or one of ours (`code` `transport`, `timeout`,
/// `credentials`, `request`, `response`). Printed without any request or response body beyond
/// the service's error message.
#[derive(Clone)]
pub struct AwsError {
    pub service: &'static str,
    /// The HTTP status, when the service answered.
    pub status: Option<u16>,
    /// The service's error code (`ConditionalCheckFailedException`, `NoSuchKey`, ...).
    pub code: String,
    pub message: String,
    /// DynamoDB: the item as it was when a condition was refused, if the request asked for it
    /// (`ReturnValuesOnConditionCheckFailure`). Never printed: it may hold a secret.
    pub old_item: Option<serde_json::Map<String, serde_json::Value>>,
}

impl std::fmt::Debug for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsError")
            .field("service", &self.service)
            .field("status", &self.status)
            .field("code", &self.code)
            .field("message", &self.message)
            .field("old_item", &self.old_item.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl std::fmt::Display for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.service, self.code)?;
        if let Some(s) = self.status {
            write!(f, " (HTTP {s})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for AwsError {}

impl AwsError {
    fn local(service: &'static str, code: &str, message: impl std::fmt::Display) -> Self {
        AwsError {
            service,
            status: None,
            code: code.to_string(),
            message: message.to_string(),
            old_item: None,
        }
    }

    /// Worth another attempt: the SDK's transient and throttling errors.
    fn retryable(&self) -> bool {
        const CODES: &[&str] = &[
            "ThrottlingException",
            "Throttling",
            "ThrottledException",
            "RequestThrottledException",
            "TooManyRequestsException",
            "ProvisionedThroughputExceededException",
            "TransactionInProgressException",
            "RequestLimitExceeded",
            "BandwidthLimitExceeded",
            "LimitExceededException",
            "RequestThrottled",
            "SlowDown",
            "PriorRequestNotComplete",
            "EC2ThrottledException",
            "RequestTimeout",
            "RequestTimeoutException",
            "InternalError",
            "ExpiredToken",
            "ExpiredTokenException",
        ];
        match self.status {
            None => matches!(self.code.as_str(), "transport" | "timeout"),
            Some(s) => {
                matches!(s, 500 | 502 | 503 | 504 | 429) || CODES.contains(&self.code.as_str())
            }
        }
    }

    fn expired_credentials(&self) -> bool {
        matches!(self.code.as_str(), "ExpiredToken" | "ExpiredTokenException")
    }
}

/// A request to sign and send. `headers` are signed too.
pub(super) struct Request<'a> {
    pub method: Method,
    /// Parsed once where it does not change (DynamoDB's endpoint).
    pub url: &'a reqwest::Url,
    pub headers: &'a [(&'static str, &'a str)],
    pub body: Bytes,
}

/// A service's answer.
pub(super) struct Reply {
    pub status: u16,
    pub body: Bytes,
}

/// Reads a service's error code and message (and DynamoDB's old item) from an unsuccessful answer.
pub(super) type ParseError = fn(status: u16, body: &[u8]) -> Parsed;

pub(super) struct Parsed {
    pub code: String,
    pub message: String,
    pub old_item: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Clone)]
pub(super) struct Signed {
    inner: Arc<Inner>,
}

struct Inner {
    service: &'static str,
    region: Option<String>,
    endpoint: Option<String>,
    provider: Option<SharedCredentialsProvider>,
    credentials: Mutex<Option<Credentials>>,
    signer: Signer,
    connections: Connections,
}

impl Signed {
    /// `service` is the signing name (`dynamodb`, `s3`). The endpoint is
    /// `AWS_ENDPOINT_URL_<SERVICE>`, else the config's (`AWS_ENDPOINT_URL`), else the region's.
    pub fn new(sdk: &SdkConfig, service: &'static str) -> Self {
        // The variable is named after the SDK's service id (EventBridge's signing name is events).
        let env_name = match service {
            "events" => "EVENTBRIDGE".to_string(),
            s => s.to_uppercase(),
        };
        let endpoint = std::env::var(format!("AWS_ENDPOINT_URL_{env_name}"))
            .ok()
            .filter(|e| !e.is_empty())
            .or_else(|| sdk.endpoint_url().map(str::to_string))
            .map(|e| e.trim_end_matches('/').to_string());
        // S3 wants the payload hash as a header, and keys signed as they are sent.
        let style = if service == "s3" {
            Style::S3
        } else {
            Style::Default
        };
        Signed {
            inner: Arc::new(Inner {
                service,
                region: sdk.region().map(|r| r.to_string()),
                endpoint,
                provider: sdk.credentials_provider(),
                credentials: Mutex::new(None),
                signer: Signer::new(service, style),
                connections: Connections::new(crate::net::tls_config(), CONNECT_TIMEOUT),
            }),
        }
    }

    pub fn service(&self) -> &'static str {
        self.inner.service
    }

    /// Opens a connection to `url`'s origin ahead of the first call, unless `want` are open or
    /// being opened (see [`Connections::open_ahead`]).
    pub fn open_ahead(
        &self,
        url: reqwest::Url,
        want: usize,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let inner = self.inner.clone();
        async move { inner.connections.open_ahead(&url, want).await }
    }

    /// The custom endpoint, if one is configured (no trailing `/`).
    pub fn endpoint(&self) -> Option<&str> {
        self.inner.endpoint.as_deref()
    }

    pub fn region(&self) -> Option<&str> {
        self.inner.region.as_deref()
    }

    /// `https://<host>.<region>.amazonaws.com` (`.com.cn` in the China regions).
    pub fn regional_url(&self, host: &str) -> String {
        let region = self.region().unwrap_or("us-east-1");
        let suffix = if region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        format!("https://{host}.{region}.{suffix}")
    }

    /// Sends `req`, retrying what the SDK retries. An answer outside 2xx is an error whose code
    /// and message `parse` reads from it.
    pub async fn send(&self, req: Request<'_>, parse: ParseError) -> Result<Reply, AwsError> {
        let end = clock::now() + OPERATION_TIMEOUT;
        let mut attempt = 1;
        loop {
            let left = end.saturating_duration_since(clock::now());
            let e = match self.attempt(&req, left.min(ATTEMPT_TIMEOUT)).await {
                Ok(r) if (200..300).contains(&r.status) => return Ok(r),
                Ok(r) => {
                    let p = parse(r.status, &r.body);
                    AwsError {
                        service: self.service(),
                        status: Some(r.status),
                        code: p.code,
                        message: p.message,
                        old_item: p.old_item,
                    }
                }
                Err(e) => e,
            };
            if e.expired_credentials() {
                *self.inner.credentials.lock().expect("not poisoned") = None;
            }
            // Full jitter: anything up to base * 2^(attempt-1).
            let cap = BACKOFF_BASE.saturating_mul(1 << (attempt - 1));
            let delay =
                Duration::from_micros(crate::ids::random_u64() % (cap.as_micros() as u64).max(1));
            if !e.retryable() || attempt >= ATTEMPTS || clock::now() + delay >= end {
                return Err(e);
            }
            clock::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn attempt(&self, req: &Request<'_>, timeout: Duration) -> Result<Reply, AwsError> {
        let service = self.service();
        if timeout.is_zero() {
            return Err(AwsError::local(
                service,
                "timeout",
                "no time left for the call",
            ));
        }
        let bad_request = |e: &dyn std::fmt::Display| AwsError::local(service, "request", e);
        let credentials = self.credentials().await?;
        let region = self
            .region()
            .ok_or_else(|| bad_request(&"no AWS region configured (AWS_REGION)"))?;
        let signed = self.inner.signer.sign(
            &Keys {
                access_key_id: credentials.access_key_id(),
                secret_access_key: credentials.secret_access_key(),
                session_token: credentials.session_token(),
            },
            region,
            req.method.as_str(),
            req.url,
            req.headers,
            &req.body,
            SystemTime::now(),
        );

        let mut headers = http::HeaderMap::with_capacity(req.headers.len() + signed.len() + 2);
        let signed = signed.iter().map(|(n, v)| (*n, v.as_str()));
        for (name, value) in req.headers.iter().copied().chain(signed) {
            let name = http::HeaderName::from_static(name);
            let mut value = http::HeaderValue::from_str(value).map_err(|e| bad_request(&e))?;
            // Kept out of any Debug print of the request.
            value.set_sensitive(matches!(
                name.as_str(),
                "authorization" | "x-amz-security-token"
            ));
            headers.insert(name, value);
        }
        let answer = self
            .inner
            .connections
            .send(&req.method, req.url, headers, req.body.clone(), timeout)
            .await
            .map_err(|e| {
                let code = if e.timeout { "timeout" } else { "transport" };
                AwsError::local(service, code, e.message)
            })?;
        Ok(Reply {
            status: answer.status.as_u16(),
            body: answer.body,
        })
    }

    /// The config's credentials, resolved once and kept until five minutes before they expire
    /// (in Lambda they come from the environment and do not expire while the instance lives).
    async fn credentials(&self) -> Result<Credentials, AwsError> {
        if let Some(c) = self
            .inner
            .credentials
            .lock()
            .expect("not poisoned")
            .as_ref()
            && c.expiry()
                .is_none_or(|e| e > SystemTime::now() + CREDENTIALS_MARGIN)
        {
            return Ok(c.clone());
        }
        let provider = self.inner.provider.as_ref().ok_or_else(|| {
            AwsError::local(self.service(), "credentials", "no credentials provider")
        })?;
        let c = provider
            .provide_credentials()
            .await
            .map_err(|e| AwsError::local(self.service(), "credentials", DisplayErrorContext(&e)))?;
        *self.inner.credentials.lock().expect("not poisoned") = Some(c.clone());
        Ok(c)
    }
}

/// A service of AWS's JSON protocol (DynamoDB, Secrets Manager): every operation one signed POST
/// to the endpoint, named by `x-amz-target`, the request and the answer JSON documents.
#[derive(Clone)]
pub(super) struct JsonService {
    signed: Signed,
    /// Parsed once; an unusable endpoint is reported by every call.
    url: Result<reqwest::Url, String>,
    /// `application/x-amz-json-1.0` or `-1.1`.
    content_type: &'static str,
    /// The target's prefix: `DynamoDB_20120810`, `secretsmanager`.
    target: &'static str,
}

impl JsonService {
    /// `host` is the regional endpoint's first label, used without a custom endpoint.
    pub fn new(
        signed: Signed,
        host: &str,
        content_type: &'static str,
        target: &'static str,
    ) -> Self {
        let url = match signed.endpoint() {
            Some(e) => format!("{e}/"),
            None => format!("{}/", signed.regional_url(host)),
        };
        let url = reqwest::Url::parse(&url).map_err(|e| format!("endpoint {url}: {e}"));
        JsonService {
            signed,
            url,
            content_type,
            target,
        }
    }

    /// Opens a connection to the endpoint ahead of the first call, unless `want` are open or
    /// being opened.
    pub fn open_ahead(
        &self,
        want: usize,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let ahead = self
            .url
            .as_ref()
            .ok()
            .map(|u| self.signed.open_ahead(u.clone(), want));
        async move {
            if let Some(ahead) = ahead {
                ahead.await
            }
        }
    }

    /// Calls `operation` with its request document; the answer's document. The answer is not
    /// quoted in an error (it may hold a secret).
    pub async fn call(&self, operation: &str, request: &Value) -> Result<Value, AwsError> {
        let service = self.signed.service();
        let url = self
            .url
            .as_ref()
            .map_err(|e| AwsError::local(service, "request", e))?;
        let target = format!("{}.{operation}", self.target);
        let body = serde_json::to_vec(request).expect("a JSON value serialises");
        let reply = self
            .signed
            .send(
                Request {
                    method: Method::POST,
                    url,
                    headers: &[
                        ("content-type", self.content_type),
                        ("x-amz-target", &target),
                    ],
                    body: body.into(),
                },
                json_error,
            )
            .await?;
        serde_json::from_slice(&reply.body).map_err(|_| AwsError {
            status: Some(reply.status),
            ..AwsError::local(
                service,
                "response",
                format!("{operation}: the answer is not JSON"),
            )
        })
    }
}

/// A JSON protocol error: `{"__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
/// "message": ..}` gives `ConditionalCheckFailedException`; DynamoDB's old item of a refused
/// condition is kept (never printed). An XML error (from something in front of the service) is
/// read as S3's are.
fn json_error(status: u16, body: &[u8]) -> Parsed {
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

/// The text of the first `<name>` element of an XML error document (S3's; also what an
/// authentication failure before the service looks like).
pub(super) fn xml_element(text: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&format!("</{name}>"))? + start;
    Some(text[start..end].to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_config::{BehaviorVersion, Region};
    use aws_credential_types::provider::future;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// An HTTP/1.1 server answering with `script` in order (status, JSON body) and recording each
    /// request's head.
    async fn scripted(script: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let (script, log) = (script.clone(), log.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 4096];
                        let Ok(n) = tcp.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() < end + 4 + length {
                            continue;
                        }
                        buf.drain(..end + 4 + length);
                        log.lock().unwrap().push(head);
                        let (status, body) =
                            script.lock().unwrap().pop_front().unwrap_or((200, "{}"));
                        let answer = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if tcp.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, seen)
    }

    /// Static credentials that count how often they are asked for.
    #[derive(Debug)]
    struct Counting(Arc<AtomicUsize>);
    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            self.0.fetch_add(1, Ordering::SeqCst);
            future::ProvideCredentials::ready(Ok(Credentials::new(
                "AKIDEXAMPLE",
                "secret",
                Some("session-token".into()),
                None,
                "test",
            )))
        }
    }

    async fn client(url: &str) -> (super::super::DynamoDb, Arc<AtomicUsize>) {
        let asked = Arc::new(AtomicUsize::new(0));
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .http_client(crate::net::aws_http_client())
            .region(Region::new("cn-north-1"))
            .endpoint_url(url)
            .credentials_provider(Counting(asked.clone()))
            .load()
            .await;
        (super::super::dynamodb(&sdk), asked)
    }

    const THROTTLED: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"slow down"}"#;
    const CONDITION: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"no"}"#;

    #[tokio::test]
    async fn throttling_is_retried_and_requests_are_signed() {
        let (url, seen) = scripted(vec![
            (400, THROTTLED),
            (400, THROTTLED),
            (200, r#"{"Item":{}}"#),
        ])
        .await;
        let (db, asked) = client(&url).await;
        let out = db
            .call("GetItem", &serde_json::json!({}))
            .await
            .expect("third attempt");
        assert_eq!(out, serde_json::json!({"Item": {}}));
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3);
        let head = seen[0].to_ascii_lowercase();
        assert!(
            head.contains("x-amz-target: dynamodb_20120810.getitem"),
            "{head}"
        );
        assert!(
            head.contains("x-amz-security-token: session-token"),
            "{head}"
        );
        assert!(
            head.contains("authorization: aws4-hmac-sha256 credential=akidexample/")
                && head.contains("/cn-north-1/dynamodb/aws4_request"),
            "{head}"
        );
        // Credentials without an expiry are resolved once for the client's life.
        db.call("GetItem", &serde_json::json!({})).await.unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_refused_condition_is_answered_at_once() {
        let (url, seen) = scripted(vec![(400, CONDITION)]).await;
        let (db, _) = client(&url).await;
        let e = db
            .call("PutItem", &serde_json::json!({}))
            .await
            .unwrap_err();
        assert_eq!(e.code, "ConditionalCheckFailedException");
        assert_eq!(e.status, Some(400));
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn server_errors_get_three_attempts_in_all() {
        let (url, seen) = scripted(vec![(500, "{}"), (503, "{}"), (500, "{}"), (200, "{}")]).await;
        let (db, _) = client(&url).await;
        let e = db
            .call("GetItem", &serde_json::json!({}))
            .await
            .unwrap_err();
        assert_eq!(e.status, Some(500));
        assert_eq!(seen.lock().unwrap().len(), 3);
    }

    #[test]
    fn json_error_codes_are_read_without_their_namespace() {
        let p = json_error(
            400,
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional request failed","Item":{"holder":{"S":"a"}}}"#,
        );
        assert_eq!(p.code, "ConditionalCheckFailedException");
        assert_eq!(p.message, "The conditional request failed");
        assert_eq!(p.old_item.unwrap()["holder"]["S"], "a");
        let p = json_error(
            400,
            br#"{"__type":"com.amazon.coral.validate#ValidationException","Message":"bad"}"#,
        );
        assert_eq!(
            (p.code.as_str(), p.message.as_str()),
            ("ValidationException", "bad")
        );
        assert_eq!(json_error(503, b"<html>").code, "HTTP503");
        let p = json_error(
            403,
            b"<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code></Error></ErrorResponse>",
        );
        assert_eq!(p.code, "SignatureDoesNotMatch");
    }

    #[test]
    fn china_regions_have_their_own_domain() {
        let sdk = aws_config::SdkConfig::builder()
            .region(Region::new("cn-northwest-1"))
            .build();
        assert_eq!(
            Signed::new(&sdk, "dynamodb").regional_url("dynamodb"),
            "https://dynamodb.cn-northwest-1.amazonaws.com.cn"
        );
        let sdk = aws_config::SdkConfig::builder()
            .region(Region::new("ap-east-1"))
            .build();
        assert_eq!(
            Signed::new(&sdk, "s3").regional_url("b.s3"),
            "https://b.s3.ap-east-1.amazonaws.com"
        );
    }
}
