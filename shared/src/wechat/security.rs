//! Content security (v2) and links into the mini-program: JSON in, JSON out, on the access token.
//!
//! - `POST /wxa/msg_sec_check` (text, `version: 2`): the verdict is in `result`, errcode 0 even
//!   for risky content. A check changes nothing at WeChat: resent after any transient failure.
//! - `POST /wxa/media_check_async`: a `trace_id` now, the verdict later as a `wxa_media_check`
//!   push. Resent after a transient failure (a second check only costs a second push).
//! - `POST /wxa/generatescheme`, `/wxa/generate_urllink`, `/wxa/genwxashortlink`: each link
//!   counts against a daily quota, so resent only when WeChat surely did not make one.

use serde_json::Value;

use super::transport::Resend;
use super::{WeChatClient, WxError};
use crate::secret::Secret;

/// The three link APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkApi {
    Scheme,
    UrlLink,
    ShortLink,
}

impl LinkApi {
    fn path(self) -> &'static str {
        match self {
            LinkApi::Scheme => "/wxa/generatescheme",
            LinkApi::UrlLink => "/wxa/generate_urllink",
            LinkApi::ShortLink => "/wxa/genwxashortlink",
        }
    }
    /// The answer's field holding the link.
    fn field(self) -> &'static str {
        match self {
            LinkApi::Scheme => "openlink",
            LinkApi::UrlLink => "url_link",
            LinkApi::ShortLink => "link",
        }
    }
}

impl WeChatClient {
    async fn post_api(
        &self,
        token: &Secret,
        path: &'static str,
        body: &Value,
        resend: Resend,
    ) -> Result<Value, WxError> {
        self.call_json(
            reqwest::Method::POST,
            path,
            &[("access_token", token.expose())],
            Some(body),
            resend,
        )
        .await
    }

    /// `msg_sec_check` v2: WeChat's whole answer (`result.suggest`, `result.label`, `trace_id`).
    pub async fn msg_sec_check(&self, token: &Secret, body: &Value) -> Result<Value, WxError> {
        self.post_api(token, "/wxa/msg_sec_check", body, Resend::WhenTransient)
            .await
    }

    /// `media_check_async` v2: the check's `trace_id`.
    pub async fn media_check_async(&self, token: &Secret, body: &Value) -> Result<String, WxError> {
        let v = self
            .post_api(token, "/wxa/media_check_async", body, Resend::WhenTransient)
            .await?;
        v.get("trace_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| WxError::BadResponse("media_check_async: no trace_id".into()))
    }

    /// A scheme, URL link or short link: the link WeChat made.
    pub async fn generate_link(
        &self,
        token: &Secret,
        api: LinkApi,
        body: &Value,
    ) -> Result<String, WxError> {
        let v = self
            .post_api(token, api.path(), body, Resend::OnlyWhenUnused)
            .await?;
        v.get(api.field())
            .and_then(Value::as_str)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .ok_or_else(|| WxError::BadResponse(format!("{}: no {}", api.path(), api.field())))
    }
}
