//! `GET /me` and `PUT /me`: the app's own record of the logged-in user (the login article's user
//! table): first and last login, the phone bound by `POST /phone`, and the profile the
//! mini-program's avatar and nickname components give. Nothing of the session or of another user.

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::error::ApiError;
use crate::http::extract::JsonBody;
use crate::reply::Reply;
use crate::session::Session;
use crate::store::UserRecord;

#[derive(Debug, Serialize)]
pub struct MeResponse {
    pub openid: String,
    pub unionid: Option<String>,
    pub first_seen: Option<u64>,
    pub last_login: Option<u64>,
    pub phone: Option<String>,
    pub nickname: Option<String>,
    pub avatar_url: Option<String>,
}

impl MeResponse {
    fn of(u: UserRecord, session_unionid: Option<String>) -> Self {
        MeResponse {
            openid: u.openid,
            unionid: u.unionid.or(session_unionid),
            first_seen: u.first_seen,
            last_login: u.last_login,
            phone: u.phone,
            nickname: u.nickname,
            avatar_url: u.avatar_url,
        }
    }
}

/// A nickname from the nickname input (`<input type="nickname">`): 1-64 characters.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Nickname(String);

impl TryFrom<String> for Nickname {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.chars().count() > 64 {
            return Err("nickname must be 1 to 64 characters".into());
        }
        Ok(Nickname(s))
    }
}

/// An avatar's URL (the avatar chooser's file, once uploaded): `https://host[:port][/path]`,
/// host letters, digits, dots and hyphens, the path printable ASCII; at most 1024 characters.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct AvatarUrl(String);

impl TryFrom<String> for AvatarUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        const RULE: &str =
            "avatar_url must be an https URL (https://host/path, at most 1024 characters)";
        let rest = s.strip_prefix("https://").ok_or(RULE)?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let path_ok = path.bytes().all(|b| b.is_ascii_graphic());
        if s.len() > 1024 || !host_ok || !port_ok || !path_ok {
            return Err(RULE.into());
        }
        Ok(AvatarUrl(s))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeUpdate {
    #[serde(default)]
    pub nickname: Option<Nickname>,
    #[serde(default)]
    pub avatar_url: Option<AvatarUrl>,
}

/// `GET /me`.
pub async fn get(
    State(app): State<Arc<App>>,
    Session(s): Session,
) -> Result<Reply<MeResponse>, ApiError> {
    let user = app.store.get_user(&s.openid).await?.unwrap_or(UserRecord {
        openid: s.openid.clone(),
        ..Default::default()
    });
    Ok(Reply(MeResponse::of(user, s.unionid)))
}

/// `PUT /me`: sets the fields given (an absent or null one stays as it is).
pub async fn put(
    State(app): State<Arc<App>>,
    Session(s): Session,
    JsonBody(req): JsonBody<MeUpdate>,
) -> Result<Reply<MeResponse>, ApiError> {
    let user = app
        .store
        .update_profile(
            &s.openid,
            req.nickname.as_ref().map(|n| n.0.as_str()),
            req.avatar_url.as_ref().map(|a| a.0.as_str()),
        )
        .await?;
    tracing::info!(
        nickname = req.nickname.is_some(),
        avatar = req.avatar_url.is_some(),
        "profile updated"
    );
    Ok(Reply(MeResponse::of(user, s.unionid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nickname_and_avatar_rules() {
        assert!(Nickname::try_from("小明".to_string()).is_ok());
        assert!(Nickname::try_from("字".repeat(64)).is_ok());
        assert!(Nickname::try_from("字".repeat(65)).is_err());
        assert!(Nickname::try_from(String::new()).is_err());
        for ok in [
            "https://a.example.com/x/y.png?v=1",
            "https://cdn:8443",
            "https://h",
        ] {
            assert!(AvatarUrl::try_from(ok.to_string()).is_ok(), "{ok}");
        }
        for bad in [
            "http://a.example.com/x.png",
            "https://",
            "https:///x",
            "https://a b/x",
            "https://a/x y",
            "https://a:/x",
            "javascript:alert(1)",
        ] {
            assert!(AvatarUrl::try_from(bad.to_string()).is_err(), "{bad}");
        }
        assert!(AvatarUrl::try_from(format!("https://a/{}", "x".repeat(1100))).is_err());
    }
}
