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
        // WeChat checks the secret before the code: a code refused with 40125 is still unused
        // and may be sent again with a rotated secret.
        let raw: Raw = self
            .with_secret(false, |secret| async move {
                self.call_json(
                    reqwest::Method::GET,
                    "/sns/jscode2session",
                    &[
                        ("appid", self.appid()),
                        ("secret", &secret),
                        ("js_code", js_code),
                        ("grant_type", "authorization_code"),
                    ],
                    None,
                    // Single use: a resend after WeChat may have taken the code would only earn
                    // "code been used" and hide the real failure.
                    Resend::OnlyWhenUnused,
                )
                .await
            })
            .await?;
        Ok(Code2Session {
            openid: raw.openid,
            unionid: raw.unionid.filter(|u| !u.is_empty()),
            session_key: Secret::new(raw.session_key),
        })
    }
}
