//! `POST /qrcode` (getUnlimitedQRCode) and `POST /phone` (getuserphonenumber).
//!
//! Input is parsed into [`CodeRequest`] before WeChat is called: every rule of WeChat's docs is
//! checked here, so a bad request costs no quota. The image goes back as WeChat made it, with its
//! content type; the optional S3 cache serves repeats without a WeChat call.

use std::time::Duration;

use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::codecache::CodeCache;
use crate::error::ApiError;
use crate::input;
use crate::token::TokenError;
use crate::wechat::{Image, WxError};

const FIELDS: [&str; 9] = [
    "scene",
    "page",
    "width",
    "check_path",
    "env_version",
    "auto_color",
    "line_color",
    "is_hyaline",
    "cache",
];
/// WeChat's allowed scene characters besides letters and digits.
const SCENE_PUNCTUATION: &str = "!#$&'()*+,/:;=?@-._~";
/// How long an answer may wait for its cache upload before leaving it in the background.
const UPLOAD_WAIT: Duration = Duration::from_millis(200);

/// A validated code request with WeChat's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRequest {
    pub scene: String,
    pub page: Option<String>,
    pub width: u32,
    pub check_path: bool,
    pub env_version: String,
    pub auto_color: bool,
    pub line_color: (u8, u8, u8),
    pub is_hyaline: bool,
    pub cache: bool,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::InvalidRequest(msg.into())
}

fn opt_bool(o: &Map<String, Value>, field: &str, default: bool) -> Result<bool, ApiError> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(format!("{field} must be a boolean"))),
    }
}

impl CodeRequest {
    pub fn parse(body: &Value) -> Result<Self, ApiError> {
        let o = body
            .as_object()
            .ok_or_else(|| bad("request body must be a JSON object"))?;
        if let Some(unknown) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(bad(format!(
                "unknown field {unknown:?}; allowed: {}",
                FIELDS.join(", ")
            )));
        }
        let scene = input::required_str(body, "scene")?;
        if scene.is_empty() || scene.chars().count() > 32 {
            return Err(bad("scene must be 1 to 32 characters"));
        }
        if let Some(c) = scene
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || SCENE_PUNCTUATION.contains(*c)))
        {
            return Err(bad(format!(
                "scene contains {c:?}; only letters, digits and {SCENE_PUNCTUATION} are allowed"
            )));
        }
        let page = match o.get("page") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => {
                if p.is_empty() || p.len() > 256 {
                    return Err(bad("page must be 1 to 256 characters"));
                }
                if p.starts_with('/') {
                    return Err(bad("page must not start with '/' (e.g. pages/index/index)"));
                }
                if p.contains('?') || p.contains('#') {
                    return Err(bad(
                        "page must not carry a query string; put parameters in scene",
                    ));
                }
                if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(bad("page must not contain spaces"));
                }
                Some(p.clone())
            }
            Some(_) => return Err(bad("page must be a string")),
        };
        let width = match o.get("width") {
            None | Some(Value::Null) => 430,
            Some(v) => v
                .as_u64()
                .filter(|w| (280..=1280).contains(w))
                .ok_or_else(|| bad("width must be a whole number from 280 to 1280"))?
                as u32,
        };
        let env_version = match o.get("env_version") {
            None | Some(Value::Null) => "release".to_string(),
            Some(Value::String(s)) if ["release", "trial", "develop"].contains(&s.as_str()) => {
                s.clone()
            }
            Some(_) => return Err(bad("env_version must be one of release, trial, develop")),
        };
        let line_color = match o.get("line_color") {
            None | Some(Value::Null) => (0, 0, 0),
            Some(Value::Object(c)) => {
                if let Some(k) = c.keys().find(|k| !["r", "g", "b"].contains(&k.as_str())) {
                    return Err(bad(format!(
                        "line_color has unknown field {k:?}; use r, g, b"
                    )));
                }
                let channel = |k: &str| {
                    c.get(k)
                        .and_then(Value::as_u64)
                        .filter(|v| *v <= 255)
                        .map(|v| v as u8)
                        .ok_or_else(|| {
                            bad(format!(
                                "line_color.{k} must be a whole number from 0 to 255"
                            ))
                        })
                };
                (channel("r")?, channel("g")?, channel("b")?)
            }
            Some(_) => return Err(bad("line_color must be an object {\"r\",\"g\",\"b\"}")),
        };
        Ok(CodeRequest {
            scene: scene.to_string(),
            page,
            width,
            check_path: opt_bool(o, "check_path", true)?,
            env_version,
            auto_color: opt_bool(o, "auto_color", false)?,
            line_color,
            is_hyaline: opt_bool(o, "is_hyaline", false)?,
            cache: opt_bool(o, "cache", true)?,
        })
    }

    /// The body WeChat gets: every parameter explicit, in a fixed order (serde_json keeps keys
    /// sorted), which makes its text the canonical form the cache key is derived from.
    pub fn wechat_body(&self) -> Value {
        let (r, g, b) = self.line_color;
        let mut v = json!({
            "scene": self.scene,
            "width": self.width,
            "check_path": self.check_path,
            "env_version": self.env_version,
            "auto_color": self.auto_color,
            "line_color": { "r": r, "g": g, "b": b },
            "is_hyaline": self.is_hyaline,
        });
        if let Some(p) = &self.page {
            v["page"] = json!(p);
        }
        v
    }
}

/// `POST /qrcode`.
pub async fn qrcode(
    app: &App,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<crate::HttpResponse, ApiError> {
    crate::session::authenticate(app, headers).await?;
    let req = CodeRequest::parse(&input::json_object(body)?)?;
    let params = req.wechat_body();
    // The cache and its key only when it is in use for this request.
    let cache = app.codes.as_ref().filter(|_| req.cache).map(|c| {
        (
            c,
            CodeCache::key(&app.config.wechat.appid, &params.to_string()),
        )
    });
    if let Some((c, key)) = &cache
        && let Some(hit) = c.get(key).await
    {
        return Ok(image_response(hit, Some("hit")));
    }
    let image = app
        .tokens
        .with_token(|t| {
            let wechat = &app.wechat;
            let params = &params;
            async move { wechat.unlimited_qrcode(&t, params).await }
        })
        .await
        .map_err(qrcode_error)?;
    if let Some((c, key)) = &cache {
        c.put_in_background(key.clone(), image.clone(), UPLOAD_WAIT)
            .await;
    }
    Ok(image_response(image, cache.map(|_| "miss")))
}

fn image_response(image: Image, x_cache: Option<&str>) -> crate::HttpResponse {
    let mut b = http::Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, image.content_type)
        // A code for given parameters never changes.
        .header(
            http::header::CACHE_CONTROL,
            "public, max-age=31536000, immutable",
        );
    if let Some(x) = x_cache {
        b = b.header("x-cache", x);
    }
    b.body(image.bytes).expect("static headers are valid")
}

fn rejected(message: &str, e: WxError) -> ApiError {
    ApiError::RejectedInput {
        message: message.into(),
        source: e,
    }
}

fn qrcode_error(e: TokenError) -> ApiError {
    match e {
        TokenError::WeChat(e) => match e.errcode() {
            Some(41030) => rejected(
                "page is not a page of the published mini-program (or is malformed); set check_path to false for unpublished pages",
                e,
            ),
            Some(40129 | 40169) => rejected("scene was rejected by WeChat", e),
            Some(40097) => rejected("WeChat rejected the code parameters", e),
            Some(85096) => rejected("scene must not use the reserved name scancode_time", e),
            _ => ApiError::from_wechat(e),
        },
        other => other.into(),
    }
}

/// `POST /phone`: the user's phone number from a getPhoneNumber button code.
pub async fn phone(app: &App, headers: &http::HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    crate::session::authenticate(app, headers).await?;
    let body = input::json_object(body)?;
    let code = input::client_code(&body, "the getPhoneNumber button")?;
    let info = app
        .tokens
        .with_token(|t| {
            let wechat = &app.wechat;
            async move { wechat.phone_number(&t, code).await }
        })
        .await
        .map_err(|e| match e {
            TokenError::WeChat(e) if e.errcode() == Some(40029) => rejected(
                "the phone code was rejected by WeChat (used, expired or invalid)",
                e,
            ),
            TokenError::WeChat(e) if e.errcode() == Some(40013) => {
                rejected("the phone code was issued to another mini-program", e)
            }
            other => other.into(),
        })?;
    if info.watermark_appid != app.config.wechat.appid {
        return Err(ApiError::WeChat(WxError::BadResponse(
            "the phone number's watermark names another app id".into(),
        )));
    }
    Ok(serde_json::to_value(&info).expect("phone info serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<CodeRequest, String> {
        CodeRequest::parse(&v).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_wechats() {
        let r = parse(json!({"scene": "a=1"})).unwrap();
        assert_eq!(
            (
                r.width,
                r.check_path,
                r.env_version.as_str(),
                r.auto_color,
                r.is_hyaline,
                r.cache
            ),
            (430, true, "release", false, false, true)
        );
        assert_eq!(r.line_color, (0, 0, 0));
        assert_eq!(r.page, None);
    }

    #[test]
    fn every_rule_names_its_field() {
        for (body, field) in [
            (json!({}), "scene"),
            (json!({"scene": ""}), "scene"),
            (json!({"scene": "x".repeat(33)}), "scene"),
            (json!({"scene": "中文"}), "scene"),
            (json!({"scene": "a%20b"}), "scene"),
            (json!({"scene": 5}), "scene"),
            (json!({"scene": "a", "page": "/pages/x"}), "page"),
            (json!({"scene": "a", "page": "pages/x?a=1"}), "page"),
            (json!({"scene": "a", "page": 1}), "page"),
            (json!({"scene": "a", "width": 279}), "width"),
            (json!({"scene": "a", "width": 1281}), "width"),
            (json!({"scene": "a", "width": 300.5}), "width"),
            (json!({"scene": "a", "env_version": "beta"}), "env_version"),
            (
                json!({"scene": "a", "line_color": {"r": 256, "g": 0, "b": 0}}),
                "line_color.r",
            ),
            (
                json!({"scene": "a", "line_color": {"r": 0, "g": 0}}),
                "line_color.b",
            ),
            (
                json!({"scene": "a", "line_color": {"r": 0, "g": 0, "b": 0, "a": 1}}),
                "line_color",
            ),
            (json!({"scene": "a", "line_color": "red"}), "line_color"),
            (json!({"scene": "a", "auto_color": "yes"}), "auto_color"),
            (json!({"scene": "a", "is_hyaline": 1}), "is_hyaline"),
            (json!({"scene": "a", "check_path": "false"}), "check_path"),
            (json!({"scene": "a", "cache": 0}), "cache"),
            (json!({"scene": "a", "color": 1}), "color"),
        ] {
            let e = parse(body.clone()).expect_err(&body.to_string());
            assert!(e.contains(field), "{body}: {e}");
        }
    }

    #[test]
    fn canonical_body_ignores_input_order_and_defaults() {
        let a = parse(json!({"scene": "id=7", "width": 430, "page": "pages/a/b"})).unwrap();
        let b =
            parse(json!({"page": "pages/a/b", "scene": "id=7", "env_version": "release"})).unwrap();
        assert_eq!(a.wechat_body().to_string(), b.wechat_body().to_string());
        let c = parse(json!({"scene": "id=7", "page": "pages/a/b", "width": 431})).unwrap();
        assert_ne!(a.wechat_body().to_string(), c.wechat_body().to_string());
        // The cache flag is ours, not WeChat's: it must not reach WeChat or the key.
        assert!(a.wechat_body().get("cache").is_none());
    }
}
