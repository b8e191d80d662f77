//! Access tokens: `GET /cgi-bin/token` (legacy) and `POST /cgi-bin/stable_token`. Idempotent
//! and resent on transient failures, except a force refresh (see [`WeChatClient::stable_token`]).

use serde::Deserialize;
use serde_json::{Value, json};

use super::transport::Resend;
use super::{WeChatClient, WxError};
use crate::secret::Secret;

/// An access token as WeChat issued it.
#[derive(Debug, Clone)]
pub struct FetchedToken {
    pub token: Secret,
    pub expires_in: u64,
}

impl WeChatClient {
    /// `GET /cgi-bin/token`: a new legacy token, which invalidates the previous one after the overlap.
    pub async fn legacy_token(&self) -> Result<FetchedToken, WxError> {
        self.with_secret(true, |secret| async move {
            self.token_call(
                reqwest::Method::GET,
                "/cgi-bin/token",
                &[
                    ("grant_type", "client_credential"),
                    ("appid", self.appid()),
                    ("secret", &secret),
                ],
                None,
                Resend::WhenTransient,
            )
            .await
        })
        .await
    }

    /// `POST /cgi-bin/stable_token`; `force` invalidates the current one (20 a day, 30 s apart).
    ///
    /// A force refresh is resent only when WeChat surely did not act on it (no connection, or a
    /// busy answer): after an ambiguous failure a second force would fall inside WeChat's 30 s
    /// and burn the daily quota, so the caller gets the error instead.
    pub async fn stable_token(&self, force: bool) -> Result<FetchedToken, WxError> {
        // A refused secret is checked before anything else: WeChat did not act on that call, so
        // even a force refresh may be sent again with the rotated secret.
        self.with_secret(true, |secret| async move {
            let body = json!({
                "grant_type": "client_credential",
                "appid": self.appid(),
                "secret": secret,
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
        })
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
}
