//! `POST /qrcode` (getUnlimitedQRCode).
//!
//! The body is deserialised into [`CodeRequest`] before WeChat is called: every rule of WeChat's
//! docs is a type here, so a bad request costs no quota. The image goes back as WeChat made it
//! (a PNG or JPEG by its bytes); the optional S3 cache serves repeats without a WeChat call.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::codecache::CodeCache;
use crate::error::ApiError;
use crate::http::extract::JsonBody;
use crate::session::{Session, SessionToken};
use crate::token::TokenError;
use crate::wechat::Image;

/// WeChat's allowed scene characters besides letters and digits.
pub const SCENE_PUNCTUATION: &str = "!#$&'()*+,/:;=?@-._~";
/// How long an answer may wait for its cache upload before leaving it in the background.
const UPLOAD_WAIT: Duration = Duration::from_millis(200);

/// A code request; absent or `null` fields take WeChat's defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    pub scene: Scene,
    pub page: Option<Page>,
    pub width: Option<Width>,
    pub check_path: Option<bool>,
    pub env_version: Option<EnvVersion>,
    pub auto_color: Option<bool>,
    pub line_color: Option<LineColor>,
    pub is_hyaline: Option<bool>,
    /// Ours, not WeChat's: `false` bypasses the S3 cache.
    pub cache: Option<bool>,
}

/// 1 to 32 characters: letters, digits and [`SCENE_PUNCTUATION`].
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Scene(String);

impl TryFrom<String> for Scene {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.chars().count() > 32 {
            return Err("scene must be 1 to 32 characters".into());
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || SCENE_PUNCTUATION.contains(*c)))
        {
            return Err(format!(
                "scene contains {c:?}; only letters, digits and {SCENE_PUNCTUATION} are allowed"
            ));
        }
        Ok(Scene(s))
    }
}

/// A page path of the mini-program: 1 to 256 characters, no leading `/`, no query, no spaces.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Page(String);

impl TryFrom<String> for Page {
    type Error = String;
    fn try_from(p: String) -> Result<Self, String> {
        // Characters, as the message (and scene's rule) says: not UTF-8 bytes.
        if p.is_empty() || p.chars().count() > 256 {
            return Err("page must be 1 to 256 characters".into());
        }
        if p.starts_with('/') {
            return Err("page must not start with '/' (e.g. pages/index/index)".into());
        }
        if p.contains('?') || p.contains('#') {
            return Err("page must not carry a query string; put parameters in scene".into());
        }
        if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("page must not contain spaces".into());
        }
        Ok(Page(p))
    }
}

/// The code's width in pixels, 280 to 1280 (WeChat's default 430).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "u64")]
pub struct Width(u32);

impl TryFrom<u64> for Width {
    type Error = String;
    fn try_from(w: u64) -> Result<Self, String> {
        if (280..=1280).contains(&w) {
            Ok(Width(w as u32))
        } else {
            Err("width must be a whole number from 280 to 1280".into())
        }
    }
}

impl Default for Width {
    fn default() -> Self {
        Width(430)
    }
}

/// Which version of the mini-program the code opens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvVersion {
    #[default]
    Release,
    Trial,
    Develop,
}

impl EnvVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            EnvVersion::Release => "release",
            EnvVersion::Trial => "trial",
            EnvVersion::Develop => "develop",
        }
    }
}

/// The line colour when `auto_color` is false: 0-255 each.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineColor {
    pub r: u8,
    pub g: u8,
    pub b: u8,
}

impl CodeRequest {
    pub fn cache(&self) -> bool {
        self.cache.unwrap_or(true)
    }

    /// The body WeChat gets: every parameter explicit, in a fixed order (serde_json keeps keys
    /// sorted), which makes its text the canonical form the cache key is derived from.
    pub fn wechat_body(&self) -> Value {
        let LineColor { r, g, b } = self.line_color.unwrap_or_default();
        let mut v = json!({
            "scene": self.scene.0,
            "width": self.width.unwrap_or_default().0,
            "check_path": self.check_path.unwrap_or(true),
            "env_version": self.env_version.unwrap_or_default().as_str(),
            "auto_color": self.auto_color.unwrap_or(false),
            "line_color": { "r": r, "g": g, "b": b },
            "is_hyaline": self.is_hyaline.unwrap_or(false),
        });
        if let Some(p) = &self.page {
            v["page"] = json!(p.0);
        }
        v
    }
}

/// `POST /qrcode`. The session is looked up while a cached code is read, so that a hit from S3
/// waits for one round trip instead of two; WeChat is asked only once the session is known. The
/// answers are those of a session checked first: `unauthenticated` before any complaint about
/// the body.
pub async fn qrcode(
    State(app): State<Arc<App>>,
    token: SessionToken,
    body: Result<JsonBody<CodeRequest>, ApiError>,
) -> Result<Response, ApiError> {
    // The body's parameters and the cache's key, if the body could be read.
    let read = body.map(|JsonBody(req)| {
        let params = req.wechat_body();
        let cache = cache_for(&app, &req, &params);
        (params, cache)
    });
    let cached = async {
        match &read {
            Ok((_, Some((c, key)))) => c.get(key).await,
            _ => None,
        }
    };
    let (session, cached) = tokio::join!(Session::of(&app, &token), cached);
    session?;
    let (params, cache) = read?;
    let (image, x_cache) = match cached {
        Some(hit) => (hit, Some("hit")),
        None => make_new(&app, params, cache).await?,
    };
    Ok(image_response(image, x_cache))
}

/// The cache and the key of `req`'s code, when the cache is configured and `req` allows it.
fn cache_for<'a>(
    app: &'a App,
    req: &CodeRequest,
    params: &Value,
) -> Option<(&'a CodeCache, String)> {
    app.codes.as_ref().filter(|_| req.cache()).map(|c| {
        (
            c,
            CodeCache::key(&app.config.wechat.appid, &params.to_string()),
        )
    })
}

/// A code for `req`: from the S3 cache when it is configured and `req` allows it (`"hit"`), else
/// from WeChat through the token keeper (`"miss"`, stored in the cache after at most a short
/// wait; `None` without a cache). Shared by the route and the operators' tool (`ops`).
pub async fn make_code(
    app: &App,
    req: &CodeRequest,
) -> Result<(Image, Option<&'static str>), ApiError> {
    let params = req.wechat_body();
    let cache = cache_for(app, req, &params);
    if let Some((c, key)) = &cache
        && let Some(hit) = c.get(key).await
    {
        return Ok((hit, Some("hit")));
    }
    make_new(app, params, cache).await
}

/// A new code from WeChat for `params`, kept in `cache` if there is one.
async fn make_new(
    app: &App,
    params: Value,
    cache: Option<(&CodeCache, String)>,
) -> Result<(Image, Option<&'static str>), ApiError> {
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
    Ok((image, cache.map(|_| "miss")))
}

fn image_response(image: Image, x_cache: Option<&'static str>) -> Response {
    let mut resp = (
        StatusCode::OK,
        [
            (http::header::CONTENT_TYPE, image.content_type),
            // A code for given parameters never changes.
            (
                http::header::CACHE_CONTROL,
                "public, max-age=31536000, immutable",
            ),
        ],
        image.bytes,
    )
        .into_response();
    if let Some(x) = x_cache {
        resp.headers_mut()
            .insert("x-cache", http::HeaderValue::from_static(x));
    }
    resp
}

fn qrcode_error(e: TokenError) -> ApiError {
    match e {
        TokenError::WeChat(e) => match e.errcode() {
            Some(41030) => ApiError::rejected(
                "page is not a page of the published mini-program (or is malformed); set check_path to false for unpublished pages",
                e,
            ),
            Some(40129 | 40169) => ApiError::rejected("scene was rejected by WeChat", e),
            Some(40097) => ApiError::rejected("WeChat rejected the code parameters", e),
            Some(85096) => {
                ApiError::rejected("scene must not use the reserved name scancode_time", e)
            }
            _ => ApiError::from_wechat(e),
        },
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<CodeRequest, String> {
        crate::http::extract::parse(v.to_string().as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_wechats() {
        let r = parse(json!({"scene": "a=1"})).unwrap();
        assert_eq!(
            r.wechat_body(),
            json!({"scene": "a=1", "width": 430, "check_path": true, "env_version": "release",
                   "auto_color": false, "line_color": {"r": 0, "g": 0, "b": 0}, "is_hyaline": false})
        );
        assert!(r.cache());
        // null is the default too
        let n = parse(json!({"scene": "a=1", "page": null, "width": null, "cache": null})).unwrap();
        assert_eq!(n.wechat_body(), r.wechat_body());
        // 256 characters, whatever their UTF-8 length.
        assert!(parse(json!({"scene": "a", "page": "页".repeat(256)})).is_ok());
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
            (json!({"scene": "a", "page": "x".repeat(257)}), "page"),
            (json!({"scene": "a", "page": "页".repeat(257)}), "page"),
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
