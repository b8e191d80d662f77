//! Content security (v2) and links into the mini-program, as WeChat documents them: the checks
//! in WeChat's order and its errcodes. Verdicts are deterministic: content or a media URL
//! containing `risky` is risky (label 20002), `review` needs review (10001), anything else
//! passes (100). Links count against one daily quota shared by schemes and URL links.

use serde_json::{Value, json};

use crate::SandboxConfig;
use crate::error::{self, WxError};

/// The sandbox's openids: 'o' and 27 more characters (see `codes::openid`).
fn check_openid(v: &Value) -> Result<&str, WxError> {
    let openid = v.get("openid").and_then(Value::as_str).unwrap_or("");
    if openid.len() != 28 || !openid.starts_with('o') {
        return Err(error::INVALID_OPENID);
    }
    Ok(openid)
}

fn check_scene(v: &Value) -> Result<(), WxError> {
    match v.get("scene").and_then(Value::as_u64) {
        Some(1..=4) => Ok(()),
        _ => Err(error::INVALID_SCENE),
    }
}

fn verdict(text: &str) -> (&'static str, u64) {
    if text.contains("risky") {
        ("risky", 20002)
    } else if text.contains("review") {
        ("review", 10001)
    } else {
        ("pass", 100)
    }
}

/// `/wxa/msg_sec_check` (version 2).
pub(crate) fn msg_sec_check(body: &[u8], trace_id: &str) -> Result<Value, WxError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| error::DATA_FORMAT)?;
    if v.get("version").and_then(Value::as_u64) != Some(2) {
        return Err(error::INVALID_ARGS);
    }
    check_openid(&v)?;
    check_scene(&v)?;
    let content = v.get("content").and_then(Value::as_str).unwrap_or("");
    if content.is_empty() || content.chars().count() > 2500 {
        return Err(error::INVALID_ARGS);
    }
    let (suggest, label) = verdict(content);
    Ok(json!({
        "errcode": 0, "errmsg": "ok", "trace_id": trace_id,
        "result": {"suggest": suggest, "label": label},
        "detail": [{"strategy": "content_model", "errcode": 0, "suggest": suggest, "label": label, "prob": 90}],
    }))
}

/// A media check WeChat has accepted: what its push will say.
#[derive(Debug, Clone)]
pub(crate) struct MediaCheck {
    pub openid: String,
    pub trace_id: String,
    pub suggest: &'static str,
    pub label: u64,
}

/// `/wxa/media_check_async` (version 2).
pub(crate) fn media_check_async(body: &[u8], trace_id: &str) -> Result<MediaCheck, WxError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| error::DATA_FORMAT)?;
    if v.get("version").and_then(Value::as_u64) != Some(2) {
        return Err(error::INVALID_ARGS);
    }
    let openid = check_openid(&v)?.to_string();
    check_scene(&v)?;
    let url = v.get("media_url").and_then(Value::as_str).unwrap_or("");
    if url.is_empty() || !matches!(v.get("media_type").and_then(Value::as_u64), Some(1 | 2)) {
        return Err(error::INVALID_ARGS);
    }
    let (suggest, label) = verdict(url);
    Ok(MediaCheck {
        openid,
        trace_id: trace_id.to_string(),
        suggest,
        label,
    })
}

/// The `wxa_media_check` push for a finished check.
pub(crate) fn media_push(
    cfg: &SandboxConfig,
    c: &MediaCheck,
    now: u64,
) -> serde_json::Map<String, Value> {
    json!({
        "ToUserName": cfg.original_id, "FromUserName": c.openid, "CreateTime": now,
        "MsgType": "event", "Event": "wxa_media_check", "appid": cfg.appid,
        "trace_id": c.trace_id, "version": 2, "errcode": 0, "errmsg": "ok",
        "detail": [{"strategy": "content_model", "errcode": 0, "suggest": c.suggest, "label": c.label, "prob": 90}],
        "result": {"suggest": c.suggest, "label": c.label},
    })
    .as_object()
    .expect("object")
    .clone()
}

/// The links' shared daily quota: (UTC day, links made that day).
#[derive(Debug, Default)]
pub(crate) struct LinkQuota(u64, u64);

fn allowed_query(q: &str) -> bool {
    q.len() <= 1024
        && q.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$&'()*+,/:;=?@-._~%".contains(&b))
}

fn check_page(cfg: &SandboxConfig, path: &str) -> Result<(), WxError> {
    if path.is_empty() || cfg.published_pages.iter().any(|p| p == path) {
        Ok(())
    } else {
        Err(error::INVALID_LINK_PATH)
    }
}

/// The expiry fields of a scheme or URL link: at most 30 days.
fn check_expiry(v: &Value, now: u64) -> Result<(), WxError> {
    match v.get("expire_type").and_then(Value::as_u64).unwrap_or(0) {
        0 => match v.get("expire_time").and_then(Value::as_u64) {
            Some(t) if t > now && t <= now + 30 * 86_400 => Ok(()),
            _ => Err(error::INVALID_EXPIRE),
        },
        1 => match v.get("expire_interval").and_then(Value::as_u64) {
            Some(1..=30) => Ok(()),
            _ => Err(error::INVALID_EXPIRE),
        },
        _ => Err(error::INVALID_EXPIRE),
    }
}

fn check_env(env: Option<&str>) -> Result<(), WxError> {
    match env.unwrap_or("release") {
        "release" | "develop" => Ok(()),
        // The sandbox has no trial version published.
        "trial" => Err(error::VERSION_NOT_PUBLISHED),
        _ => Err(error::INVALID_ARGS),
    }
}

impl LinkQuota {
    fn take(&mut self, cfg: &SandboxConfig, day: u64) -> Result<(), WxError> {
        if self.0 != day {
            *self = LinkQuota(day, 0);
        }
        if self.1 >= cfg.link_daily_quota {
            return Err(error::DAILY_QUOTA);
        }
        self.1 += 1;
        Ok(())
    }

    /// `/wxa/generatescheme`, `/wxa/generate_urllink` (`scheme`: which one) and
    /// `/wxa/genwxashortlink`.
    pub(crate) fn link(
        &mut self,
        cfg: &SandboxConfig,
        api: &str,
        body: &[u8],
        now: u64,
        day: u64,
        id: &str,
    ) -> Result<Value, WxError> {
        let v: Value = serde_json::from_slice(body).map_err(|_| error::DATA_FORMAT)?;
        match api {
            "scheme" | "urllink" => {
                let target = if api == "scheme" {
                    v.get("jump_wxa").cloned().unwrap_or(json!({}))
                } else {
                    v.clone()
                };
                let path = target.get("path").and_then(Value::as_str).unwrap_or("");
                check_page(cfg, path)?;
                if !allowed_query(target.get("query").and_then(Value::as_str).unwrap_or("")) {
                    return Err(error::INVALID_LINK_QUERY);
                }
                check_env(target.get("env_version").and_then(Value::as_str))?;
                check_expiry(&v, now)?;
                self.take(cfg, day)?;
                Ok(if api == "scheme" {
                    json!({"errcode": 0, "errmsg": "ok", "openlink": format!("weixin://dl/business/?t={id}")})
                } else {
                    json!({"errcode": 0, "errmsg": "ok", "url_link": format!("https://wxaurl.cn/{id}")})
                })
            }
            _ => {
                let page_url = v.get("page_url").and_then(Value::as_str).unwrap_or("");
                let (path, query) = page_url.split_once('?').unwrap_or((page_url, ""));
                if path.is_empty() {
                    return Err(error::INVALID_LINK_PATH);
                }
                check_page(cfg, path)?;
                if !allowed_query(query) {
                    return Err(error::INVALID_LINK_QUERY);
                }
                Ok(json!({"errcode": 0, "errmsg": "ok", "link": format!("#小程序://sandbox/{id}")}))
            }
        }
    }
}
