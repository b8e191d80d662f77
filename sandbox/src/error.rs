//! WeChat's error answers: an `errcode` and a message, always with HTTP 200.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Content type of WeChat's JSON answers (note the non-standard `encoding=` suffix).
pub(crate) const JSON_CT: &str = "application/json; encoding=utf-8";
/// Content type `/sns/jscode2session` really answers with, even though the body is JSON.
pub(crate) const TEXT_CT: &str = "text/plain";

/// An error as WeChat reports it. The request id (`rid`) is appended on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WxError {
    pub code: i64,
    pub msg: Cow<'static, str>,
}

impl WxError {
    const fn new(code: i64, msg: &'static str) -> Self {
        Self {
            code,
            msg: Cow::Borrowed(msg),
        }
    }

    /// An error injected by [`crate::Faults::scripted`].
    pub(crate) fn scripted(code: i64) -> Self {
        Self::new(code, "scripted")
    }

    /// The response WeChat would send: HTTP 200, JSON body, the given content type.
    pub(crate) fn into_response(self, rid: &str, content_type: &'static str) -> Response {
        let body = serde_json::json!({
            "errcode": self.code,
            "errmsg": format!("{}, rid: {rid}", self.msg),
        });
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body.to_string(),
        )
            .into_response()
    }
}

pub(crate) const SYSTEM_BUSY: WxError = WxError::new(-1, "system error");
pub(crate) const INVALID_TOKEN: WxError = WxError::new(
    40001,
    "invalid credential, access_token is invalid or not latest",
);
pub(crate) const INVALID_LINK_PATH: WxError = WxError::new(40165, "invalid weapp pagepath");
pub(crate) const INVALID_LINK_QUERY: WxError = WxError::new(40212, "invalid query");
pub(crate) const INVALID_EXPIRE: WxError =
    WxError::new(85401, "time limit between 1min and 30days");
pub(crate) const VERSION_NOT_PUBLISHED: WxError =
    WxError::new(85079, "miniprogram has no online release");
pub(crate) const INVALID_OPENID: WxError = WxError::new(40003, "invalid openid");
pub(crate) const INVALID_TEMPLATE: WxError = WxError::new(40037, "invalid template_id");
pub(crate) const USER_REFUSED: WxError = WxError::new(43101, "user refuse to accept the msg");
pub(crate) const ARGUMENT_INVALID: WxError =
    WxError::new(47003, "argument invalid! data.value is empty or too long");
pub(crate) const INVALID_GRANT_TYPE: WxError = WxError::new(40002, "invalid grant_type");
pub(crate) const INVALID_APPID: WxError = WxError::new(40013, "invalid appid");
pub(crate) const INVALID_CODE: WxError = WxError::new(40029, "invalid code");
pub(crate) const INVALID_ARGS: WxError = WxError::new(40097, "invalid args");
pub(crate) const INVALID_SECRET: WxError = WxError::new(40125, "invalid appsecret");
pub(crate) const INVALID_SCENE: WxError = WxError::new(40129, "invalid scene");
pub(crate) const CODE_USED: WxError = WxError::new(40163, "code been used");
pub(crate) const INVALID_SCENE_LENGTH: WxError = WxError::new(
    40169,
    "invalid length for scene, or the data is not json string",
);
pub(crate) const CODE_BLOCKED: WxError =
    WxError::new(40226, "code blocked, high risk user, login intercepted");
pub(crate) const TOKEN_MISSING: WxError = WxError::new(41001, "access_token missing");
pub(crate) const SECRET_MISSING: WxError = WxError::new(41004, "appsecret missing");
pub(crate) const CODE_MISSING: WxError = WxError::new(41008, "missing code");
pub(crate) const INVALID_PAGE: WxError = WxError::new(41030, "invalid page");
pub(crate) const TOKEN_EXPIRED: WxError = WxError::new(42001, "access_token expired");
pub(crate) const REQUIRE_POST: WxError = WxError::new(43002, "require POST method");
pub(crate) const DAILY_QUOTA: WxError = WxError::new(45009, "reach max api daily quota limit");
pub(crate) const DATA_FORMAT: WxError = WxError::new(47001, "data format error");
