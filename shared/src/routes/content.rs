//! Content security (v2) on the logged-in user's openid (WeChat requires a user who visited in
//! the last 2 hours: a logged-in one is).
//!
//! - `POST /content/check`: text through `/wxa/msg_sec_check`. WeChat's errcode stays 0 for risky
//!   content; the verdict is the answer (`suggest` pass | review | risky), never an error.
//! - `POST /media/check`: an image or audio URL through `/wxa/media_check_async`: 202 with the
//!   `trace_id`. The verdict arrives later as a `wxa_media_check` push, which the push receiver
//!   stores by `trace_id` (7 days); `GET /media/check/{trace_id}` answers it to the user who
//!   asked (anyone else: 404).
//!
//! Errcodes: 40003/43104 (openid not of this app) 502; 40129 (scene) 400; 45009, 45011 and 44990
//! (quotas) 429; busy retried within the budget; a rejected token follows the keeper's rule.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::error::ApiError;
use crate::http::extract::JsonBody;
use crate::reply::{Reply, json_response};
use crate::session::Session;
use crate::token::TokenError;

/// WeChat's limit on a checked text.
pub const MAX_CONTENT_CHARS: usize = 2500;
/// WeChat's limit on a checked image or audio file.
pub const MAX_MEDIA_BYTES: u64 = 10 * 1024 * 1024;
/// How long a media check's verdict is kept.
pub const MEDIA_RESULT_SECS: u64 = 7 * 24 * 3600;

/// `scene`: 1 profile, 2 comment, 3 forum, 4 social log.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "u64")]
pub struct Scene(u8);

impl TryFrom<u64> for Scene {
    type Error = String;
    fn try_from(n: u64) -> Result<Self, String> {
        match n {
            1..=4 => Ok(Scene(n as u8)),
            _ => Err("scene must be 1 (profile), 2 (comment), 3 (forum) or 4 (social log)".into()),
        }
    }
}

/// The checked text: 1 to 2,500 characters.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct CheckedText(String);

impl TryFrom<String> for CheckedText {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let n = s.chars().count();
        if n == 0 || n > MAX_CONTENT_CHARS {
            return Err(format!(
                "content must be 1 to {MAX_CONTENT_CHARS} characters"
            ));
        }
        Ok(CheckedText(s))
    }
}

/// `title`, `nickname`, `signature`: up to 256 characters each.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Short(String);

impl TryFrom<String> for Short {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.chars().count() > 256 {
            return Err("must be at most 256 characters".into());
        }
        Ok(Short(s))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentCheckRequest {
    pub content: CheckedText,
    pub scene: Scene,
    #[serde(default)]
    pub title: Option<Short>,
    #[serde(default)]
    pub nickname: Option<Short>,
    #[serde(default)]
    pub signature: Option<Short>,
}

#[derive(Debug, Serialize)]
pub struct Verdict {
    pub suggest: String,
    pub label: Value,
    pub trace_id: Option<String>,
}

/// The contract's reading of a WeChat failure of a content-security call.
fn refusal(e: TokenError) -> ApiError {
    match e {
        TokenError::WeChat(e) if e.errcode() == Some(40129) => {
            ApiError::rejected("scene is not accepted by WeChat", e)
        }
        TokenError::WeChat(e) if matches!(e.errcode(), Some(40003 | 43104)) => ApiError::WeChat(e),
        other => other.into(),
    }
}

pub async fn check_content(
    State(app): State<Arc<App>>,
    Session(user): Session,
    JsonBody(req): JsonBody<ContentCheckRequest>,
) -> Result<Reply<Verdict>, ApiError> {
    let mut body = json!({
        "version": 2,
        "openid": user.openid,
        "scene": req.scene.0,
        "content": req.content.0,
    });
    for (k, v) in [
        ("title", &req.title),
        ("nickname", &req.nickname),
        ("signature", &req.signature),
    ] {
        if let Some(v) = v {
            body[k] = json!(v.0);
        }
    }
    let answer = app
        .tokens
        .with_token(|t| {
            let (wechat, body) = (&app.wechat, &body);
            async move { wechat.msg_sec_check(&t, body).await }
        })
        .await
        .map_err(refusal)?;
    let result = &answer["result"];
    let suggest = result["suggest"].as_str().unwrap_or("").to_string();
    if !matches!(suggest.as_str(), "pass" | "review" | "risky") {
        return Err(ApiError::WeChat(crate::wechat::WxError::BadResponse(
            "msg_sec_check: no verdict in result.suggest".into(),
        )));
    }
    tracing::info!(suggest, "content checked");
    Ok(Reply(Verdict {
        suggest,
        label: result["label"].clone(),
        trace_id: answer["trace_id"].as_str().map(str::to_string),
    }))
}

/// `media_url`: `https://host[:port][/path]`, the host letters, digits, dots and hyphens, the
/// path printable ASCII; at most 2,048 characters (openapi.yaml states the same pattern).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct MediaUrl(String);

fn is_media_url(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("https://") else {
        return false;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    s.len() <= 2048
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
        && path.bytes().all(|b| b.is_ascii_graphic())
}

impl TryFrom<String> for MediaUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if !is_media_url(&s) {
            return Err("media_url must be an https:// URL of at most 2048 characters".into());
        }
        Ok(MediaUrl(s))
    }
}

/// `media_type`: 1 audio, 2 image.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "u64")]
pub struct MediaType(u8);

impl TryFrom<u64> for MediaType {
    type Error = String;
    fn try_from(n: u64) -> Result<Self, String> {
        match n {
            1 | 2 => Ok(MediaType(n as u8)),
            _ => Err("media_type must be 1 (audio) or 2 (image)".into()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaCheckRequest {
    pub media_url: MediaUrl,
    pub media_type: MediaType,
    pub scene: Scene,
}

/// Whether `ip` is an address on the public internet (not loopback, private, link-local,
/// unique-local, shared, documentation or unspecified).
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (s[0] & 0xfe00) == 0xfc00
                    || (s[0] & 0xffc0) == 0xfe80)
            }
        },
    }
}

/// The size of what `url` serves, by a HEAD request (no redirects, no proxy, 2 s), when it
/// says. In Lambda only public addresses are asked (the address is resolved once, checked and
/// pinned): a user's URL must not reach into the deployment's network. The local server asks
/// any (a developer's media may be on localhost).
async fn media_size(url: &str) -> Option<u64> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?.to_string();
    let port = parsed.port_or_known_default()?;
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        let addrs: Vec<_> = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        .ok()?
        .ok()?
        .collect();
        let first = *addrs.first()?;
        if !addrs.iter().all(|a| is_public(a.ip())) {
            tracing::info!("media size not asked: the host is not on the public internet");
            return None;
        }
        builder = builder.resolve(&host, first);
    }
    let resp = match crate::net::client(builder).head(url).send().await {
        Ok(r) => r,
        Err(e) => {
            // The URL is the user's: not logged.
            tracing::info!(error = %e.without_url(), "media size unknown (HEAD failed): WeChat decides");
            return None;
        }
    };
    resp.headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn media_key(trace_id: &str) -> String {
    format!("media#{trace_id}")
}

pub async fn check_media(
    State(app): State<Arc<App>>,
    Session(user): Session,
    JsonBody(req): JsonBody<MediaCheckRequest>,
) -> Result<Response, ApiError> {
    // WeChat refuses media over 10 MB only later, in the push: say so now when the server says
    // how large it is (a server that does not say is left to WeChat).
    if media_size(&req.media_url.0)
        .await
        .is_some_and(|size| size > MAX_MEDIA_BYTES)
    {
        return Err(ApiError::InvalidRequest(
            "media_url is over WeChat's 10 MB limit (its server says so)".into(),
        ));
    }
    let body = json!({
        "media_url": req.media_url.0,
        "media_type": req.media_type.0,
        "version": 2,
        "scene": req.scene.0,
        "openid": user.openid,
    });
    let trace_id = app
        .tokens
        .with_token(|t| {
            let (wechat, body) = (&app.wechat, &body);
            async move { wechat.media_check_async(&t, body).await }
        })
        .await
        .map_err(refusal)?;
    let mut owner = Map::new();
    owner.insert("openid".into(), json!(user.openid));
    app.store
        .merge_record(
            &media_key(&trace_id),
            &owner,
            crate::now_secs() + MEDIA_RESULT_SECS,
        )
        .await?;
    Ok(json_response(StatusCode::ACCEPTED, &json!({ "trace_id": trace_id })).into_response())
}

#[derive(Debug, Serialize)]
pub struct MediaStatus {
    pub status: &'static str,
    pub suggest: Option<String>,
    pub label: Option<Value>,
}

pub async fn media_result(
    State(app): State<Arc<App>>,
    Session(user): Session,
    Path(trace_id): Path<String>,
) -> Result<Reply<MediaStatus>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no media check {trace_id} of this user"));
    if trace_id.is_empty() || trace_id.len() > 128 {
        return Err(not_found());
    }
    let record = app
        .store
        .get_record(&media_key(&trace_id), crate::now_secs())
        .await?
        .ok_or_else(not_found)?;
    if record.get("openid").and_then(Value::as_str) != Some(user.openid.as_str()) {
        return Err(not_found());
    }
    let suggest = record
        .get("suggest")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Reply(MediaStatus {
        status: if suggest.is_some() { "done" } else { "pending" },
        label: suggest.as_ref().and(record.get("label").cloned()),
        suggest,
    }))
}

/// The push receiver's part: a `wxa_media_check` push's verdict, stored by its `trace_id`.
pub async fn store_media_verdict(app: &App, push: &Map<String, Value>) -> Result<(), ApiError> {
    let Some(trace_id) = push
        .get("trace_id")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() <= 128)
    else {
        return Ok(());
    };
    let result = push.get("result").cloned().unwrap_or(Value::Null);
    let Some(suggest) = result.get("suggest").and_then(Value::as_str) else {
        return Ok(());
    };
    let mut verdict = Map::new();
    verdict.insert("suggest".into(), json!(suggest));
    if let Some(label) = result
        .get("label")
        .filter(|l| l.is_number() || l.is_string())
    {
        verdict.insert("label".into(), label.clone());
    }
    app.store
        .merge_record(
            &media_key(trace_id),
            &verdict,
            crate::now_secs() + MEDIA_RESULT_SECS,
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "8.8.8.8",
            "203.0.114.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn media_urls_follow_their_schema_pattern() {
        for ok in [
            "https://cdn.example.com/a.jpg",
            "https://h:8443/x?y=1",
            "https://h",
        ] {
            assert!(is_media_url(ok), "{ok}");
        }
        for bad in [
            "http://h/a",
            "https://",
            "https://h h/a",
            "https://h:/a",
            "https://h:123456/a",
            "https://[::1]/a",
            "https://h/a b",
        ] {
            assert!(!is_media_url(bad), "{bad}");
        }
    }
}
