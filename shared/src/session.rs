//! Login and the session routes: `POST /login`, `GET /session`, `DELETE /session`.
//!
//! The client keeps an opaque random token; the table keeps only its SHA-256, so a leaked table
//! (or backup) gives no usable sessions. WeChat's session_key never leaves the server.

use serde_json::{Value, json};

use crate::app::App;
use crate::error::ApiError;
use crate::ids;
use crate::input;
use crate::store::SessionRecord;
use crate::wechat::WxError;

/// The storage key of a session token: its SHA-256, hex.
pub fn key_for(token: &str) -> String {
    ids::sha256_hex(token.as_bytes())
}

/// A session token as the client sends it: 43 base64url characters (256 bits).
pub struct SessionToken(String);

impl SessionToken {
    /// Reads `Authorization: Bearer <token>`; anything else is `unauthenticated`.
    pub fn from_headers(headers: &http::HeaderMap) -> Result<Self, ApiError> {
        let value = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthenticated)?;
        let (scheme, token) = value
            .trim()
            .split_once(' ')
            .ok_or(ApiError::Unauthenticated)?;
        let token = token.trim();
        let well_formed = scheme.eq_ignore_ascii_case("bearer")
            && token.len() == 43
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return Err(ApiError::Unauthenticated);
        }
        Ok(SessionToken(token.to_string()))
    }

    pub fn key(&self) -> String {
        key_for(&self.0)
    }
}

/// A `wx.login` code, checked before WeChat sees it.
struct LoginCode(String);

impl LoginCode {
    fn parse(body: &Value) -> Result<Self, ApiError> {
        input::client_code(body, "wx.login").map(|c| LoginCode(c.to_string()))
    }
}

/// `POST /login`: exchanges the code with WeChat and opens a session.
pub async fn login(app: &App, body: &[u8]) -> Result<Value, ApiError> {
    let code = LoginCode::parse(&input::json_object(body)?)?;
    let wx = app
        .wechat
        .jscode2session(&code.0)
        .await
        .map_err(login_error)?;
    let now = crate::now_secs();
    let token = ids::new_session_token();
    let record = SessionRecord {
        openid: wx.openid,
        unionid: wx.unionid,
        session_key: wx.session_key,
        created_at: now,
        expires_at: now + app.config.session_ttl.as_secs(),
    };
    // The session first: if recording the user then fails, the unused session simply expires,
    // and the next login still reports the user as new.
    app.store.put_session(&key_for(&token), &record).await?;
    let new_user = app
        .store
        .record_login(&record.openid, record.unionid.as_deref(), now)
        .await?;
    tracing::info!(new_user, "session opened");
    Ok(json!({
        "token": token,
        "expires_at": record.expires_at,
        "openid": record.openid,
        "unionid": record.unionid,
        "new_user": new_user,
    }))
}

fn login_error(e: WxError) -> ApiError {
    match e.errcode() {
        // 40029 invalid code, 40163 code already used.
        Some(40029 | 40163) => ApiError::InvalidCode(e),
        Some(40226) => ApiError::RiskyUser(e),
        _ => ApiError::from_wechat(e),
    }
}

/// The session behind the request's bearer token, or `unauthenticated`.
pub async fn authenticate(app: &App, headers: &http::HeaderMap) -> Result<SessionRecord, ApiError> {
    let token = SessionToken::from_headers(headers)?;
    app.store
        .get_session(&token.key(), crate::now_secs())
        .await?
        .ok_or(ApiError::Unauthenticated)
}

/// `GET /session`.
pub async fn get_session(app: &App, headers: &http::HeaderMap) -> Result<Value, ApiError> {
    let s = authenticate(app, headers).await?;
    Ok(json!({ "openid": s.openid, "unionid": s.unionid, "expires_at": s.expires_at }))
}

/// `DELETE /session`: succeeds whether or not the session still exists.
pub async fn logout(app: &App, headers: &http::HeaderMap) -> Result<(), ApiError> {
    let token = SessionToken::from_headers(headers)?;
    app.store.delete_session(&token.key()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn bearer_parsing() {
        let t = ids::new_session_token();
        assert!(SessionToken::from_headers(&headers(&format!("Bearer {t}"))).is_ok());
        assert!(SessionToken::from_headers(&headers(&format!("bearer  {t}"))).is_ok());
        for bad in [
            t.clone(),
            format!("Basic {t}"),
            "Bearer short".into(),
            format!("Bearer {t}x"),
        ] {
            assert!(SessionToken::from_headers(&headers(&bad)).is_err(), "{bad}");
        }
        assert!(SessionToken::from_headers(&http::HeaderMap::new()).is_err());
    }

    #[test]
    fn login_code_rules() {
        assert!(LoginCode::parse(&json!({"code": "081abc"})).is_ok());
        for bad in [
            json!({}),
            json!({"code": 5}),
            json!({"code": ""}),
            json!({"code": "a b"}),
            json!({"code": "x".repeat(129)}),
        ] {
            let e = LoginCode::parse(&bad).err().unwrap();
            assert!(e.to_string().contains("code"), "{e}");
        }
    }
}
