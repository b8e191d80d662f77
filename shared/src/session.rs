//! Sessions: the client keeps an opaque random token; the table keeps only its SHA-256, so a
//! leaked table (or backup) gives no usable sessions. WeChat's session_key never leaves the
//! server. [`Session`] is the extractor a route takes to require a logged-in user.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::request::Parts;

use crate::app::App;
use crate::error::ApiError;
use crate::ids;
use crate::store::SessionRecord;

/// The storage key of a session token: its SHA-256, hex.
pub fn key_for(token: &str) -> String {
    ids::sha256_hex(token.as_bytes())
}

/// A session token as the client sends it (`Authorization: Bearer <token>`): 43 base64url
/// characters (256 bits). Anything else is `unauthenticated`.
pub struct SessionToken(String);

impl SessionToken {
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

    /// The storage key of this token.
    pub fn key(&self) -> String {
        key_for(&self.0)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SessionToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        SessionToken::from_headers(&parts.headers)
    }
}

/// The logged-in user behind the request's bearer token; `unauthenticated` for a missing,
/// malformed, unknown, logged-out or expired one.
pub struct Session(pub SessionRecord);

impl FromRequestParts<Arc<App>> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let token = SessionToken::from_headers(&parts.headers)?;
        Session::of(app, &token).await
    }
}

impl Session {
    /// The session of `token`, if it is open.
    pub async fn of(app: &App, token: &SessionToken) -> Result<Self, ApiError> {
        app.store
            .get_session(&token.key(), crate::now_secs())
            .await?
            .map(Session)
            .ok_or(ApiError::Unauthenticated)
    }
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
}
