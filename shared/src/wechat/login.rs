//! `GET /sns/jscode2session`: a `wx.login` code for the user's openid and session_key. The code
//! is single use: resent only when WeChat surely did not receive it.

use serde::Deserialize;

use super::transport::Resend;
use super::{WeChatClient, WxError};
use crate::secret::Secret;

/// What `jscode2session` returns. `session_key` stays on the server.
#[derive(Debug, Clone)]
pub struct Code2Session {
    pub openid: String,
    pub unionid: Option<String>,
    pub session_key: Secret,
}

impl WeChatClient {
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
}
