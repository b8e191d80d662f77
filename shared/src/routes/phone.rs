//! `POST /phone`: the user's phone number from a getPhoneNumber button code.

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::error::ApiError;
use crate::http::extract::JsonBody;
use crate::reply::Reply;
use crate::routes::types::PhoneCode;
use crate::session::Session;
use crate::token::TokenError;
use crate::wechat::WxError;

#[derive(Debug, Deserialize)]
pub struct PhoneRequest {
    pub code: PhoneCode,
}

#[derive(Debug, Serialize)]
pub struct PhoneResponse {
    pub phone_number: String,
    pub pure_phone_number: String,
    pub country_code: String,
}

pub async fn phone(
    State(app): State<Arc<App>>,
    Session(user): Session,
    JsonBody(req): JsonBody<PhoneRequest>,
) -> Result<Reply<PhoneResponse>, ApiError> {
    let code = req.code.as_str();
    let info = app
        .tokens
        .with_token(|t| {
            let wechat = &app.wechat;
            async move { wechat.phone_number(&t, code).await }
        })
        .await
        .map_err(|e| match e {
            TokenError::WeChat(e) if e.errcode() == Some(40029) => ApiError::rejected(
                "the phone code was rejected by WeChat (used, expired or invalid)",
                e,
            ),
            TokenError::WeChat(e) if e.errcode() == Some(40013) => {
                ApiError::rejected("the phone code was issued to another mini-program", e)
            }
            other => other.into(),
        })?;
    if info.watermark_appid != app.config.wechat.appid {
        return Err(ApiError::WeChat(WxError::BadResponse(
            "the phone number's watermark names another app id".into(),
        )));
    }
    // Bound to the user's record (the login article's user table), shown by `GET /me`. WeChat
    // has used up the code by now: a store failure must not cost the user the number (a retry
    // would only earn 40029), so it is logged and the number answered.
    if let Err(e) = app
        .store
        .bind_phone(&user.openid, &info.phone_number, crate::now_secs())
        .await
    {
        tracing::warn!(error = %e, "the phone number could not be bound to the user record");
    }
    Ok(Reply(PhoneResponse {
        phone_number: info.phone_number,
        pure_phone_number: info.pure_phone_number,
        country_code: info.country_code,
    }))
}
