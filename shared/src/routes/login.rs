//! `POST /login`: exchanges a `wx.login` code with WeChat and opens a session.

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::error::ApiError;
use crate::http::extract::JsonBody;
use crate::ids;
use crate::reply::Reply;
use crate::routes::types::LoginCode;
use crate::session::key_for;
use crate::store::SessionRecord;
use crate::wechat::WxError;

#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    pub code: LoginCode,
}

#[derive(Debug, Serialize)]
pub struct LoginResponse {
    pub token: String,
    pub expires_at: u64,
    pub openid: String,
    pub unionid: Option<String>,
    pub new_user: bool,
}

pub async fn login(
    State(app): State<Arc<App>>,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Reply<LoginResponse>, ApiError> {
    let wx = app
        .wechat
        .jscode2session(req.code.as_str())
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
    // The session and the user's login are written at once (one store round trip, not two).
    // If the session is not stored, the login fails: a first login recorded beside it is undone,
    // so the user's next login still reports them as new. If only the user's write fails, the
    // unused session simply expires.
    let key = key_for(&token);
    let (session, user) = tokio::join!(
        app.store.put_session(&key, &record),
        app.store
            .record_login(&record.openid, record.unionid.as_deref(), now),
    );
    if let Err(e) = session {
        if let Ok(true) = user
            && let Err(undo) = app.store.undo_first_login(&record.openid, now).await
        {
            tracing::error!(error = %undo, "a failed first login could not be undone");
        }
        return Err(e.into());
    }
    let new_user = user?;
    tracing::info!(new_user, "session opened");
    Ok(Reply(LoginResponse {
        token,
        expires_at: record.expires_at,
        openid: record.openid,
        unionid: record.unionid,
        new_user,
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
