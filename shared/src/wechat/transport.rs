//! One exchange with WeChat: retried with jittered backoff within the budget while the failure
//! is transient and the endpoint allows a resend; an errcode in a JSON body is an error whatever
//! the content type.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{WeChatClient, WxError};

/// When a failed call may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resend {
    /// After any transient failure (busy, no connection, a lost answer): the call is idempotent.
    WhenTransient,
    /// Only when WeChat surely did not act on it: single-use codes, force refreshes.
    OnlyWhenUnused,
}

impl WeChatClient {
    fn url(&self, path: &str, query: &[(&str, &str)]) -> reqwest::Url {
        let mut url = reqwest::Url::parse(&format!("{}{}", self.base, path))
            .expect("WECHAT_API_BASE was checked to be a URL");
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// One HTTP exchange, retried while the failure is transient. Returns the content type and body.
    pub(super) async fn call(
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
                let (method, url, body) = (&method, &url, body.clone());
                async move {
                    let started = crate::clock::now();
                    let result = exchange(&self.http, method, url, body, timeout).await;
                    #[cfg(feature = "bench")]
                    self.meter.record(started.elapsed());
                    let result = result.and_then(|(ct, bytes)| match errcode_of(&bytes) {
                        Some((errcode, errmsg)) if errcode != 0 => {
                            Err(WxError::Api { errcode, errmsg })
                        }
                        _ => Ok((ct, bytes)),
                    });
                    let ms = started.elapsed().as_millis() as u64;
                    crate::metrics::wechat_call(
                        path,
                        match &result {
                            Ok(_) => Some(0),
                            Err(e) => e.errcode(),
                        },
                    );
                    match &result {
                        Ok(_) => tracing::debug!(wechat_path = path, attempt, ms, "wechat call ok"),
                        Err(e) => tracing::warn!(wechat_path = path, attempt, ms, error = %e, "wechat call failed"),
                    }
                    result
                }
            })
            .await
    }

    pub(super) async fn call_json<T: for<'de> Deserialize<'de>>(
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
}

/// Sends the request (a JSON body if any); any non-2xx status or transport failure is a
/// (retryable) transport error.
async fn exchange(
    http: &crate::net::conn::Connections,
    method: &reqwest::Method,
    url: &reqwest::Url,
    body: Option<bytes::Bytes>,
    timeout: Duration,
) -> Result<(String, bytes::Bytes), WxError> {
    let mut headers = http::HeaderMap::new();
    if body.is_some() {
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
    }
    let answer = http
        .send(method, url, headers, body.unwrap_or_default(), timeout)
        .await
        .map_err(|e| {
            if e.unsent {
                WxError::Unsent(e.message)
            } else {
                WxError::Transport(e.message)
            }
        })?;
    let status = answer.status;
    let content_type = answer.header("content-type").unwrap_or("").to_string();
    if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
        return Err(WxError::Transport(format!("HTTP status {status}")));
    }
    if !status.is_success() {
        // A 4xx will not change on retry (a wrong WECHAT_API_BASE, a proxy refusing us).
        return Err(WxError::BadResponse(format!("HTTP status {status}")));
    }
    Ok((content_type, answer.body))
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
}
