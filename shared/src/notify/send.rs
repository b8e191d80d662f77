//! Sending a subscribe message for a `wechat.subscribe.send` event, and the
//! `wechat.subscribe.result` event that answers it.
//!
//! 1. The detail is checked (`openid`, `template_id`, `data` an object, `idempotency_key`; `page`,
//!    `miniprogram_state`, `lang` as WeChat takes them): a bad one is `invalid`, WeChat not called.
//! 2. The idempotency key is claimed (24 h): a key seen before is not sent again.
//! 3. A grant is used from the ledger (a standing one, else one one-time grant), unless the
//!    event says `"long_term": true`; with none, `not_subscribed` and WeChat is not called.
//! 4. `/cgi-bin/message/subscribe/send` through the token keeper (a rejected token is refreshed
//!    and the send tried once more).
//!
//! Results: `sent`; `not_subscribed` (43101: the ledger's grants for the template are cleared;
//! logged at info, it is the user's choice); `invalid` (47003 data, 40037 template, 41030 page,
//! 40003 openid: the grant is given back); `failed`: when WeChat surely did not send it, the grant
//! is given back and the key released, so the same event may be sent again; when the answer was
//! lost (WeChat may have sent it), the key stays used and the grant with it: never two messages.
//!
//! The key is held with a short lease while the send runs, and for 24 hours once it is answered:
//! a redelivery meeting the lease is an `Err` (Lambda retries it later).

use serde::Deserialize;
use serde_json::{Value, json};

use super::{NotifyError, Outcome, done, lease};
use crate::app::App;
use crate::events::{BusEvent, NOTIFY_SOURCE, RESULT};
use crate::store::{GrantChange, Taken};
use crate::token::TokenError;
use crate::wechat::WxError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Sent,
    NotSubscribed,
    Invalid,
    Failed,
}

/// Errcodes that mean the request itself is wrong: sending it again cannot help.
const INVALID: [i64; 4] = [47003, 40037, 41030, 40003];

#[derive(Debug, Deserialize)]
struct SendRequest {
    openid: String,
    template_id: String,
    #[serde(default)]
    page: Option<String>,
    data: serde_json::Map<String, Value>,
    #[serde(default)]
    miniprogram_state: Option<String>,
    #[serde(default)]
    lang: Option<String>,
    idempotency_key: String,
    /// The template is long-term (the caller knows): no grant is needed or used.
    #[serde(default)]
    long_term: bool,
}

impl SendRequest {
    fn check(&self) -> Result<(), String> {
        let bounded = |name: &str, v: &str, max: usize| {
            if v.is_empty() || v.len() > max {
                Err(format!("{name} must be 1 to {max} characters"))
            } else {
                Ok(())
            }
        };
        bounded("openid", &self.openid, 128)?;
        bounded("template_id", &self.template_id, 128)?;
        bounded("idempotency_key", &self.idempotency_key, 128)?;
        if let Some(p) = &self.page {
            bounded("page", p, 1024)?;
        }
        if let Some(s) = &self.miniprogram_state
            && !matches!(s.as_str(), "developer" | "trial" | "formal")
        {
            return Err("miniprogram_state must be developer, trial or formal".into());
        }
        if let Some(l) = &self.lang
            && !matches!(l.as_str(), "zh_CN" | "en_US" | "zh_HK" | "zh_TW")
        {
            return Err("lang must be zh_CN, en_US, zh_HK or zh_TW".into());
        }
        for (k, v) in &self.data {
            if v.get("value").and_then(Value::as_str).is_none() {
                return Err(format!(
                    "data.{k} must be an object with a string \"value\""
                ));
            }
        }
        Ok(())
    }

    fn message(&self) -> Value {
        let mut m = json!({
            "touser": self.openid,
            "template_id": self.template_id,
            "data": self.data,
        });
        for (k, v) in [
            ("page", &self.page),
            ("miniprogram_state", &self.miniprogram_state),
            ("lang", &self.lang),
        ] {
            if let Some(v) = v {
                m[k] = json!(v);
            }
        }
        m
    }
}

/// Handles one send event; `Err` only when nothing was done (the store failed before WeChat was
/// called, or another invocation is sending the same key).
pub async fn send(app: &App, detail: &Value) -> Result<Outcome, NotifyError> {
    let key_of = |d: &Value| {
        d.get("idempotency_key")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let req: SendRequest = match serde_path_to_error::deserialize::<_, SendRequest>(detail)
        .map_err(|e| {
            format!(
                "the send event's detail is invalid: {} ({})",
                e.path(),
                e.inner()
            )
        })
        .and_then(|r| r.check().map(|_| r))
    {
        Ok(r) => r,
        Err(why) => {
            tracing::warn!(reason = %why, "subscribe send refused");
            let result = json!({
                "status": Status::Invalid,
                "errcode": null,
                "idempotency_key": key_of(detail),
                "openid": detail.get("openid"),
                "template_id": detail.get("template_id"),
                "message": why,
            });
            publish(app, result).await;
            return Ok(Outcome::Sent(Status::Invalid));
        }
    };
    let now = crate::now_secs();
    let claim = format!(
        "send#{}",
        crate::ids::sha256_hex(req.idempotency_key.as_bytes())
    );
    let holder = crate::ids::new_request_id();
    if !lease(app, &claim, &holder, now).await? {
        tracing::info!("subscribe send already handled for this idempotency key: not sent again");
        return Ok(Outcome::Duplicate);
    }
    let taken = if req.long_term {
        Some(Taken::LongTerm)
    } else {
        match app.store.take_grant(&req.openid, &req.template_id).await {
            Ok(t) => t,
            Err(e) => {
                let _ = app.store.release_claim(&claim, &holder).await;
                return Err(e.into());
            }
        }
    };
    let (status, errcode, message) = match taken {
        None => {
            done(app, &claim, &holder, now).await;
            (
                Status::NotSubscribed,
                None,
                "the grant ledger holds no grant for this user and template".to_string(),
            )
        }
        Some(taken) => {
            let body = req.message();
            let sent = app
                .tokens
                .with_token(|t| {
                    let (wechat, body) = (&app.wechat, &body);
                    async move { wechat.subscribe_send(&t, body).await }
                })
                .await;
            let errcode = match &sent {
                Err(TokenError::WeChat(e)) => e.errcode(),
                _ => None,
            };
            // Whether WeChat may have sent it although we did not hear so (a lost answer).
            let unknown = matches!(&sent, Err(TokenError::WeChat(e)) if matches!(e, WxError::Transport(_) | WxError::BadResponse(_)));
            let (status, message) = match &sent {
                Ok(()) => (Status::Sent, "sent".to_string()),
                Err(_) if errcode == Some(43101) => {
                    // The user holds nothing for this template, standing grant included.
                    ledger_change(app, &req, GrantChange::LongTerm(false)).await;
                    (
                        Status::NotSubscribed,
                        "WeChat says the user holds no grant (43101)".into(),
                    )
                }
                Err(e) if errcode.is_some_and(|c| INVALID.contains(&c)) => {
                    (Status::Invalid, format!("WeChat refused the message: {e}"))
                }
                Err(e) if unknown => (
                    Status::Failed,
                    format!(
                        "the outcome is unknown (WeChat may have sent it): {e}; not sent again for this idempotency key"
                    ),
                ),
                Err(e) => (Status::Failed, format!("the message was not sent: {e}")),
            };
            // WeChat did not use the grant: it is the user's still (not when it may have).
            if matches!(status, Status::Invalid | Status::Failed)
                && !unknown
                && taken == Taken::OneTime
            {
                ledger_change(app, &req, GrantChange::AddOneTime).await;
            }
            if status == Status::Failed && !unknown {
                // Surely not sent: another delivery of the same event may try again.
                if let Err(e) = app.store.release_claim(&claim, &holder).await {
                    tracing::warn!(error = %e, "the idempotency key could not be released");
                }
            } else {
                done(app, &claim, &holder, now).await;
            }
            (status, errcode, message)
        }
    };
    match status {
        Status::Sent => tracing::info!("subscribe message sent"),
        Status::NotSubscribed => {
            tracing::info!(errcode, "subscribe message not sent: the user has no grant")
        }
        Status::Invalid => tracing::warn!(errcode, reason = %message, "subscribe message refused"),
        Status::Failed => tracing::error!(errcode, reason = %message, "subscribe message failed"),
    }
    publish(
        app,
        json!({
            "status": status,
            "errcode": errcode,
            "idempotency_key": req.idempotency_key,
            "openid": req.openid,
            "template_id": req.template_id,
            "message": message,
        }),
    )
    .await;
    Ok(Outcome::Sent(status))
}

async fn ledger_change(app: &App, req: &SendRequest, change: GrantChange) {
    if let Err(e) = app
        .store
        .change_grant(&req.openid, &req.template_id, change)
        .await
    {
        tracing::warn!(error = %e, "the grant ledger could not be updated");
    }
}

/// Puts the result event; a bus failure is logged (the send itself is done).
async fn publish(app: &App, result: Value) {
    let Some(events) = &app.events else {
        tracing::warn!("no event bus configured: the subscribe result is only logged");
        return;
    };
    if let Err(e) = events
        .put(BusEvent::new(NOTIFY_SOURCE, RESULT, result))
        .await
    {
        tracing::error!(error = %e, "the subscribe result could not be published");
    }
}
