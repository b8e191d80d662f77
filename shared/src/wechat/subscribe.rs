//! `POST /cgi-bin/message/subscribe/send`: a subscribe message to one user. Not idempotent (a
//! resend after a lost answer could deliver twice, and use two of the user's grants): resent only
//! when WeChat surely did not act on it.

use serde_json::Value;

use super::transport::Resend;
use super::{WeChatClient, WxError};
use crate::secret::Secret;

impl WeChatClient {
    /// Sends `message` (`touser`, `template_id`, `page`?, `data`, `miniprogram_state`?, `lang`?).
    pub async fn subscribe_send(&self, token: &Secret, message: &Value) -> Result<(), WxError> {
        let _: serde::de::IgnoredAny = self
            .call_json(
                reqwest::Method::POST,
                "/cgi-bin/message/subscribe/send",
                &[("access_token", token.expose())],
                Some(message),
                Resend::OnlyWhenUnused,
            )
            .await?;
        Ok(())
    }
}
