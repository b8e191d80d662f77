//! `POST /links`: a link that opens the mini-program from outside WeChat (SMS, an H5 page,
//! email): a URL Scheme (`/wxa/generatescheme`), a URL Link (`/wxa/generate_urllink`) or a Short
//! Link (`/wxa/genwxashortlink`), on the central access token.
//!
//! Checked before WeChat is called: `path` without a leading `/` and at most 1024 characters,
//! `query` at most 1024 of the characters WeChat allows, an expiry at most 30 days away. A link
//! with the same parameters whose result has not expired is served from the table (`x-cache:
//! hit`), so a repeated request costs none of the daily quota (500,000, shared by schemes and URL
//! links).
//!
//! Errcodes: 40165 and 40066 (path), 40212 (query), 85401 (expiry), 85079 and 85402 (version)
//! are 400 naming the field; 40002/40013 (no permission, banned) 502; 44990 (over 100/s), 45009
//! (the daily quota) and 85400 (permanent short links used up) 429.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::error::ApiError;
use crate::http::extract::JsonBody;
use crate::reply::json_response;
use crate::session::Session;
use crate::token::TokenError;
use crate::wechat::LinkApi;

/// The longest expiry WeChat gives a link.
pub const MAX_EXPIRE_DAYS: u64 = 30;
const DAY: u64 = 86_400;
/// How long a permanent short link is kept in the table.
const PERMANENT_KEEP_SECS: u64 = 365 * DAY;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Scheme,
    UrlLink,
    ShortLink,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvVersion {
    Release,
    Trial,
    Develop,
}

/// A page path: no leading `/`, at most 1024 characters, printable ASCII without `?`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "String")]
pub struct LinkPath(String);

impl TryFrom<String> for LinkPath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.starts_with('/')
            || s.len() > 1024
            || !s.bytes().all(|b| b.is_ascii_graphic() && b != b'?')
        {
            return Err(
                "path must be a page path without a leading / (at most 1024 characters, no query)"
                    .into(),
            );
        }
        Ok(LinkPath(s))
    }
}

/// A query: at most 1024 of digits, letters and ``!#$&'()*+,/:;=?@-._~%``.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "String")]
pub struct LinkQuery(String);

impl TryFrom<String> for LinkQuery {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b"!#$&'()*+,/:;=?@-._~%".contains(&b);
        if s.len() > 1024 || !s.bytes().all(allowed) {
            return Err("query must be at most 1024 characters of letters, digits and !#$&'()*+,/:;=?@-._~%".into());
        }
        Ok(LinkQuery(s))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpireType {
    /// `value`: the Unix time at which the link expires.
    Time,
    /// `value`: the link's life in days.
    Interval,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expire {
    #[serde(rename = "type")]
    pub kind: ExpireType,
    pub value: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    pub kind: Kind,
    #[serde(default)]
    pub path: LinkPath,
    #[serde(default)]
    pub query: LinkQuery,
    #[serde(default)]
    pub env_version: Option<EnvVersion>,
    #[serde(default)]
    pub expire: Option<Expire>,
    /// Short links: the title shown with the link.
    #[serde(default)]
    pub page_title: Option<String>,
    /// Short links: never expires (WeChat allows 100,000 of them in all).
    #[serde(default)]
    pub is_permanent: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct LinkResponse {
    pub link: String,
    /// Unix time; null for a permanent short link.
    pub expires_at: Option<u64>,
}

fn invalid(m: &str) -> ApiError {
    ApiError::InvalidRequest(m.to_string())
}

impl LinkRequest {
    /// The checks that need more than one field or the clock; the link's expiry (epoch
    /// seconds; `None` for a permanent short link).
    fn check(&self, now: u64) -> Result<Option<u64>, ApiError> {
        if self.kind == Kind::ShortLink {
            if self.expire.is_some() || self.env_version.is_some() {
                return Err(invalid(
                    "expire and env_version do not apply to a short_link",
                ));
            }
            if self.path.0.is_empty() {
                return Err(invalid("path is required for a short_link"));
            }
            if self
                .page_title
                .as_ref()
                .is_some_and(|t| t.chars().count() > 64)
            {
                return Err(invalid("page_title must be at most 64 characters"));
            }
            return Ok((!self.is_permanent.unwrap_or(false)).then_some(now + MAX_EXPIRE_DAYS * DAY));
        }
        if self.page_title.is_some() || self.is_permanent.is_some() {
            return Err(invalid(
                "page_title and is_permanent apply to a short_link only",
            ));
        }
        let expire = self.expire.unwrap_or(Expire {
            kind: ExpireType::Interval,
            value: MAX_EXPIRE_DAYS,
        });
        match expire.kind {
            ExpireType::Interval if (1..=MAX_EXPIRE_DAYS).contains(&expire.value) => {
                Ok(Some(now + expire.value * DAY))
            }
            ExpireType::Interval => {
                Err(invalid("expire.value must be 1 to 30 days for an interval"))
            }
            ExpireType::Time
                if expire.value > now && expire.value <= now + MAX_EXPIRE_DAYS * DAY =>
            {
                Ok(Some(expire.value))
            }
            ExpireType::Time => Err(invalid(
                "expire.value must be a Unix time in the next 30 days for a time expiry",
            )),
        }
    }

    fn env(&self) -> &'static str {
        match self.env_version.unwrap_or(EnvVersion::Release) {
            EnvVersion::Release => "release",
            EnvVersion::Trial => "trial",
            EnvVersion::Develop => "develop",
        }
    }

    /// WeChat's request body.
    fn body(&self, expires_at: Option<u64>, now: u64) -> (LinkApi, Value) {
        let expiry = |body: &mut Value| {
            match self.expire {
                Some(Expire {
                    kind: ExpireType::Time,
                    value,
                }) => {
                    body["expire_type"] = json!(0);
                    body["expire_time"] = json!(value);
                }
                _ => {
                    body["expire_type"] = json!(1);
                    body["expire_interval"] =
                        json!(expires_at.map_or(MAX_EXPIRE_DAYS, |e| (e - now) / DAY));
                }
            }
            body["is_expire"] = json!(true);
        };
        match self.kind {
            Kind::Scheme => {
                let mut b = json!({ "jump_wxa": {
                    "path": self.path.0, "query": self.query.0, "env_version": self.env(),
                }});
                expiry(&mut b);
                (LinkApi::Scheme, b)
            }
            Kind::UrlLink => {
                let mut b = json!({ "path": self.path.0, "query": self.query.0, "env_version": self.env() });
                expiry(&mut b);
                (LinkApi::UrlLink, b)
            }
            Kind::ShortLink => {
                let page_url = if self.query.0.is_empty() {
                    self.path.0.clone()
                } else {
                    format!("{}?{}", self.path.0, self.query.0)
                };
                (
                    LinkApi::ShortLink,
                    json!({
                        "page_url": page_url,
                        "page_title": self.page_title.clone().unwrap_or_default(),
                        "is_permanent": self.is_permanent.unwrap_or(false),
                    }),
                )
            }
        }
    }

    /// The table key of the link these parameters make: an interval link's life counts, not
    /// when it was asked for.
    fn cache_key(&self, app: &App) -> String {
        let expire = match self.kind {
            Kind::ShortLink => Value::Null,
            _ => json!(
                self.expire
                    .map(|e| (e.kind, e.value))
                    .unwrap_or((ExpireType::Interval, MAX_EXPIRE_DAYS))
            ),
        };
        let basis = json!([
            app.config.wechat.appid,
            self.kind,
            self.path.0,
            self.query.0,
            self.env(),
            expire,
            self.page_title,
            self.is_permanent.unwrap_or(false),
        ]);
        format!(
            "link#{}",
            crate::ids::sha256_hex(basis.to_string().as_bytes())
        )
    }
}

fn refusal(e: TokenError) -> ApiError {
    match e {
        TokenError::WeChat(e) => match e.errcode() {
            Some(40165 | 40066) => ApiError::rejected("path is not a page of the mini-program", e),
            Some(40212) => ApiError::rejected("query is not accepted by WeChat", e),
            Some(85401) => ApiError::rejected("expire is outside what WeChat allows", e),
            Some(85079) => ApiError::rejected("env_version: that version is not published", e),
            Some(85402) => ApiError::rejected("env_version is not accepted by WeChat", e),
            Some(40002 | 40013) => ApiError::WeChat(e),
            // 85400: the 100,000 permanent short links are used up.
            Some(44990 | 45009 | 85400) => ApiError::RateLimited(e),
            _ => ApiError::from_wechat(e),
        },
        other => other.into(),
    }
}

fn answer(link: LinkResponse, cache: &'static str) -> Response {
    let mut r = json_response(StatusCode::OK, &link);
    r.headers_mut()
        .insert("x-cache", http::HeaderValue::from_static(cache));
    r
}

pub async fn create(
    State(app): State<Arc<App>>,
    Session(_user): Session,
    JsonBody(req): JsonBody<LinkRequest>,
) -> Result<Response, ApiError> {
    let now = crate::now_secs();
    let expires_at = req.check(now)?;
    let key = req.cache_key(&app);
    // A cached link still good for a minute is the same link WeChat would make again.
    match app.store.get_record(&key, now + 60).await {
        Ok(Some(hit)) => {
            if let Some(link) = hit.get("link").and_then(Value::as_str) {
                let expires_at = hit.get("link_expires_at").and_then(Value::as_u64);
                return Ok(answer(
                    LinkResponse {
                        link: link.to_string(),
                        expires_at,
                    },
                    "hit",
                ));
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "link cache unreadable: asking WeChat"),
    }
    let (api, body) = req.body(expires_at, now);
    let link = app
        .tokens
        .with_token(|t| {
            let (wechat, body) = (&app.wechat, &body);
            async move { wechat.generate_link(&t, api, body).await }
        })
        .await
        .map_err(refusal)?;
    let mut record = Map::new();
    record.insert("link".into(), json!(link));
    if let Some(e) = expires_at {
        record.insert("link_expires_at".into(), json!(e));
    }
    // The link is made: a store failure only costs the next request a WeChat call.
    if let Err(e) = app
        .store
        .merge_record(
            &key,
            &record,
            expires_at.unwrap_or(now + PERMANENT_KEEP_SECS),
        )
        .await
    {
        tracing::warn!(error = %e, "link not cached");
    }
    tracing::info!(kind = ?req.kind, "link made");
    Ok(answer(LinkResponse { link, expires_at }, "miss").into_response())
}
