//! The WeChat server API client: login (jscode2session), access tokens (legacy and stable),
//! unlimited mini-program codes and phone numbers.
//!
//! Retries `-1` (busy) and transport failures with bounded backoff; every other errcode comes
//! back typed as [`WxError::Api`] so callers decide. URLs carry the secret or the access token in
//! their query, so no URL is ever put in an error or a log line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Credentials;
use crate::retry::RetryPolicy;
use crate::secret::Secret;

/// Errcodes meaning "this access token is no good: refresh and retry once".
pub const TOKEN_REJECTED: [i64; 3] = [40001, 40014, 42001];

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WxError {
    #[error("WeChat answered errcode {errcode}: {errmsg}")]
    Api { errcode: i64, errmsg: String },
    /// No connection was made: WeChat never saw the request.
    #[error("WeChat could not be reached: {0}")]
    Unsent(String),
    /// The exchange failed midway (timeout, reset, 5xx): WeChat may have acted on it.
    #[error("WeChat could not be reached: {0}")]
    Transport(String),
    #[error("WeChat answered something unexpected: {0}")]
    BadResponse(String),
}

impl WxError {
    pub fn errcode(&self) -> Option<i64> {
        match self {
            WxError::Api { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }
    pub fn is_token_rejected(&self) -> bool {
        self.errcode().is_some_and(|c| TOKEN_REJECTED.contains(&c))
    }
    /// Busy (-1) and transport failures may go away on their own; nothing else does.
    pub fn is_transient(&self) -> bool {
        matches!(self, WxError::Transport(_) | WxError::Unsent(_)) || self.errcode() == Some(-1)
    }
    /// For calls that spend a single-use code: retry only when WeChat surely did not use it.
    pub fn is_safe_to_resend(&self) -> bool {
        matches!(self, WxError::Unsent(_)) || self.errcode() == Some(-1)
    }
}

/// What `jscode2session` returns. `session_key` stays on the server.
#[derive(Debug, Clone)]
pub struct Code2Session {
    pub openid: String,
    pub unionid: Option<String>,
    pub session_key: Secret,
}

/// An access token as WeChat issued it.
#[derive(Debug, Clone)]
pub struct FetchedToken {
    pub token: Secret,
    pub expires_in: u64,
}

/// A code image: bytes that are a PNG or a JPEG by their magic numbers, with the content type
/// those bytes call for. Built only through [`Image::from_bytes`].
#[derive(Debug, Clone)]
pub struct Image {
    pub content_type: &'static str,
    pub bytes: bytes::Bytes,
}

impl Image {
    /// The bytes as an image if they are one, else the bytes back.
    pub fn from_bytes(bytes: bytes::Bytes) -> Result<Self, bytes::Bytes> {
        const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
        const JPEG: &[u8] = b"\xff\xd8\xff";
        let content_type = if bytes.starts_with(PNG) {
            "image/png"
        } else if bytes.starts_with(JPEG) {
            "image/jpeg"
        } else {
            return Err(bytes);
        };
        Ok(Image {
            content_type,
            bytes,
        })
    }
}

/// When a failed call may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// After any transient failure (busy, no connection, a lost answer): the call is idempotent.
    WhenTransient,
    /// Only when WeChat surely did not act on it: single-use codes, force refreshes.
    OnlyWhenUnused,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PhoneInfo {
    pub phone_number: String,
    pub pure_phone_number: String,
    pub country_code: String,
    /// The app id WeChat stamped on the data; callers check it is theirs.
    #[serde(skip)]
    pub watermark_appid: String,
}

/// Counts WeChat exchanges and the time spent waiting on them (benchmarks subtract it to get the
/// time a request spends in our own code).
#[derive(Debug, Default)]
pub struct CallMeter {
    calls: AtomicU64,
    nanos: AtomicU64,
}

impl CallMeter {
    pub fn record(&self, took: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }
    /// (exchanges so far, total time waiting on them).
    pub fn snapshot(&self) -> (u64, Duration) {
        (
            self.calls.load(Ordering::Relaxed),
            Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
        )
    }
}

#[derive(Clone)]
pub struct WeChatClient {
    http: reqwest::Client,
    base: String,
    creds: Credentials,
    retry: RetryPolicy,
    meter: Arc<CallMeter>,
}

impl WeChatClient {
    /// Builds the client once per cold start: connection pool, timeouts, rustls.
    pub fn new(base: &str, creds: Credentials) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(50))
            .build()
            .expect("the HTTP client could not be built");
        WeChatClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            creds,
            retry: RetryPolicy::default(),
            meter: Arc::default(),
        }
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Exchanges made by this client and its clones, and the time spent on them.
    pub fn meter(&self) -> &CallMeter {
        &self.meter
    }

    pub fn appid(&self) -> &str {
        &self.creds.appid
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> reqwest::Url {
        let mut url = reqwest::Url::parse(&format!("{}{}", self.base, path))
            .expect("WECHAT_API_BASE was checked to be a URL");
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// One HTTP exchange, retried while the failure is transient. Returns the content type and body.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &'static str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        resend: Resend,
    ) -> Result<(String, bytes::Bytes), WxError> {
        crate::scope::waiting_on(
            crate::scope::Waiting::WeChat,
            self.call_inner(method, path, query, body, resend),
        )
        .await
    }

    async fn call_inner(
        &self,
        method: reqwest::Method,
        path: &'static str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        resend: Resend,
    ) -> Result<(String, bytes::Bytes), WxError> {
        let retryable = match resend {
            Resend::WhenTransient => WxError::is_transient,
            Resend::OnlyWhenUnused => WxError::is_safe_to_resend,
        };
        let url = self.url(path, query);
        let body =
            body.map(|b| bytes::Bytes::from(serde_json::to_vec(b).expect("JSON values serialise")));
        self.retry
            .run(retryable, |attempt, left| {
                // Each try ends by the budget's end, so a hanging WeChat cannot outlast it.
                let timeout = left.clamp(Duration::from_millis(200), Duration::from_secs(5));
                let mut req = self.http.request(method.clone(), url.clone()).timeout(timeout);
                if let Some(b) = &body {
                    req = req
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(b.clone());
                }
                async move {
                    let started = crate::clock::now();
                    let result = exchange(req).await;
                    self.meter.record(started.elapsed());
                    let result = result.and_then(|(ct, bytes)| match errcode_of(&bytes) {
                        Some((errcode, errmsg)) if errcode != 0 => {
                            Err(WxError::Api { errcode, errmsg })
                        }
                        _ => Ok((ct, bytes)),
                    });
                    let ms = started.elapsed().as_millis() as u64;
                    match &result {
                        Ok(_) => tracing::debug!(wechat_path = path, attempt, ms, "wechat call ok"),
                        Err(e) => tracing::warn!(wechat_path = path, attempt, ms, error = %e, "wechat call failed"),
                    }
                    result
                }
            })
            .await
    }

    async fn call_json<T: for<'de> Deserialize<'de>>(
        &self,
        method: reqwest::Method,
        path: &'static str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        resend: Resend,
    ) -> Result<T, WxError> {
        let (_, bytes) = self.call(method, path, query, body, resend).await?;
        // serde's message can quote a value (a token, a session_key): keep only where it failed.
        serde_json::from_slice(&bytes).map_err(|e| {
            WxError::BadResponse(format!(
                "{path}: {:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }

    /// Exchanges a `wx.login` code for the user's openid and session_key.
    pub async fn jscode2session(&self, js_code: &str) -> Result<Code2Session, WxError> {
        #[derive(Deserialize)]
        struct Raw {
            openid: String,
            session_key: String,
            unionid: Option<String>,
        }
        let raw: Raw = self
            .call_json(
                reqwest::Method::GET,
                "/sns/jscode2session",
                &[
                    ("appid", &self.creds.appid),
                    ("secret", &self.creds.secret),
                    ("js_code", js_code),
                    ("grant_type", "authorization_code"),
                ],
                None,
                // Single use: a resend after WeChat may have taken the code would only earn
                // "code been used" and hide the real failure.
                Resend::OnlyWhenUnused,
            )
            .await?;
        Ok(Code2Session {
            openid: raw.openid,
            unionid: raw.unionid.filter(|u| !u.is_empty()),
            session_key: Secret::new(raw.session_key),
        })
    }

    /// `GET /cgi-bin/token`: a new legacy token, which invalidates the previous one after the overlap.
    pub async fn legacy_token(&self) -> Result<FetchedToken, WxError> {
        self.token_call(
            reqwest::Method::GET,
            "/cgi-bin/token",
            &[
                ("grant_type", "client_credential"),
                ("appid", &self.creds.appid),
                ("secret", &self.creds.secret),
            ],
            None,
            Resend::WhenTransient,
        )
        .await
    }

    /// `POST /cgi-bin/stable_token`; `force` invalidates the current one (20 a day, 30 s apart).
    ///
    /// A force refresh is resent only when WeChat surely did not act on it (no connection, or a
    /// busy answer): after an ambiguous failure a second force would fall inside WeChat's 30 s
    /// and burn the daily quota, so the caller gets the error instead.
    pub async fn stable_token(&self, force: bool) -> Result<FetchedToken, WxError> {
        let body = json!({
            "grant_type": "client_credential",
            "appid": self.creds.appid,
            "secret": self.creds.secret,
            "force_refresh": force,
        });
        self.token_call(
            reqwest::Method::POST,
            "/cgi-bin/stable_token",
            &[],
            Some(&body),
            if force {
                Resend::OnlyWhenUnused
            } else {
                Resend::WhenTransient
            },
        )
        .await
    }

    async fn token_call(
        &self,
        method: reqwest::Method,
        path: &'static str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        resend: Resend,
    ) -> Result<FetchedToken, WxError> {
        #[derive(Deserialize)]
        struct Raw {
            access_token: String,
            expires_in: u64,
        }
        let raw: Raw = self.call_json(method, path, query, body, resend).await?;
        if raw.access_token.is_empty() {
            return Err(WxError::BadResponse(format!("{path}: empty access_token")));
        }
        Ok(FetchedToken {
            token: Secret::new(raw.access_token),
            expires_in: raw.expires_in,
        })
    }

    /// `POST /wxa/getwxacodeunlimit`. A JSON errcode answer is an error whatever its content type,
    /// and so is any body that is not a PNG or JPEG by its own bytes (a JSON error sent as
    /// `image/*`, a BOM, an empty body): the content type WeChat sent is not trusted.
    pub async fn unlimited_qrcode(&self, token: &Secret, params: &Value) -> Result<Image, WxError> {
        let (content_type, bytes) = self
            .call(
                reqwest::Method::POST,
                "/wxa/getwxacodeunlimit",
                &[("access_token", token.expose())],
                Some(params),
                Resend::WhenTransient,
            )
            .await?;
        Image::from_bytes(bytes).map_err(|bytes| {
            WxError::BadResponse(format!(
                "getwxacodeunlimit returned {} bytes of {content_type:?}, not a PNG or JPEG image",
                bytes.len()
            ))
        })
    }

    /// `POST /wxa/business/getuserphonenumber` with the code from the getPhoneNumber button.
    pub async fn phone_number(&self, token: &Secret, code: &str) -> Result<PhoneInfo, WxError> {
        #[derive(Deserialize)]
        struct Watermark {
            appid: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Info {
            phone_number: String,
            pure_phone_number: String,
            country_code: Value,
            watermark: Watermark,
        }
        #[derive(Deserialize)]
        struct Raw {
            phone_info: Info,
        }
        let raw: Raw = self
            .call_json(
                reqwest::Method::POST,
                "/wxa/business/getuserphonenumber",
                &[("access_token", token.expose())],
                Some(&json!({ "code": code })),
                Resend::OnlyWhenUnused,
            )
            .await?;
        let i = raw.phone_info;
        Ok(PhoneInfo {
            phone_number: i.phone_number,
            pure_phone_number: i.pure_phone_number,
            // Documented as a string, shown as a number in WeChat's own example: take either.
            country_code: match i.country_code {
                Value::String(s) => s,
                other => other.to_string(),
            },
            watermark_appid: i.watermark.appid,
        })
    }
}

/// Sends the request; any non-2xx status or transport failure is a (retryable) transport error.
async fn exchange(req: reqwest::RequestBuilder) -> Result<(String, bytes::Bytes), WxError> {
    let resp = req.send().await.map_err(|e| {
        let unsent = e.is_connect();
        let msg = e.without_url().to_string();
        if unsent {
            WxError::Unsent(msg)
        } else {
            WxError::Transport(msg)
        }
    })?;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| WxError::Transport(e.without_url().to_string()))?;
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(WxError::Transport(format!("HTTP status {status}")));
    }
    if !status.is_success() {
        // A 4xx will not change on retry (a wrong WECHAT_API_BASE, a proxy refusing us).
        return Err(WxError::BadResponse(format!("HTTP status {status}")));
    }
    Ok((content_type, bytes))
}

/// The `errcode`/`errmsg` of a JSON object body, if the body is one. WeChat's content type for
/// errors varies (`application/json`, `; encoding=utf-8`, `text/plain`), so the body decides.
fn errcode_of(bytes: &[u8]) -> Option<(i64, String)> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    #[derive(Deserialize)]
    struct E {
        errcode: Option<i64>,
        errmsg: Option<String>,
    }
    let e: E = serde_json::from_slice(bytes).ok()?;
    Some((e.errcode?, e.errmsg.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_errors_by_body_not_content_type() {
        assert_eq!(
            errcode_of(br#" {"errcode":40001,"errmsg":"invalid credential"}"#),
            Some((40001, "invalid credential".into()))
        );
        assert_eq!(
            errcode_of(br#"{"errcode":0,"errmsg":"ok"}"#),
            Some((0, "ok".into()))
        );
        assert_eq!(errcode_of(br#"{"openid":"o"}"#), None);
        assert_eq!(errcode_of(b"\x89PNG\r\n"), None);
    }

    #[test]
    fn classifies_errors() {
        let api = |c| WxError::Api {
            errcode: c,
            errmsg: String::new(),
        };
        assert!(api(-1).is_transient());
        assert!(WxError::Transport("x".into()).is_transient());
        assert!(!api(45011).is_transient());
        for c in TOKEN_REJECTED {
            assert!(api(c).is_token_rejected());
        }
        assert!(!api(40029).is_token_rejected());
    }

    #[test]
    fn an_image_is_known_by_its_bytes() {
        let png = bytes::Bytes::from_static(b"\x89PNG\r\n\x1a\n....");
        assert_eq!(Image::from_bytes(png).unwrap().content_type, "image/png");
        let jpeg = bytes::Bytes::from_static(b"\xff\xd8\xff\xe0..JFIF");
        assert_eq!(Image::from_bytes(jpeg).unwrap().content_type, "image/jpeg");
        for bad in [
            &b""[..],
            b"{\"errmsg\":\"system error\"}",
            b"\xef\xbb\xbf{\"errcode\":40001}",
            b"<html>",
        ] {
            assert!(Image::from_bytes(bytes::Bytes::from_static(bad)).is_err());
        }
    }
}
