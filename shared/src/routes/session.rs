//! `GET /session` and `DELETE /session`.

use axum::http::StatusCode;
use std::sync::Arc;

use axum::extract::State;
use serde::Serialize;

use crate::app::App;
use crate::error::ApiError;
use crate::reply::Reply;
use crate::session::{Session, SessionToken};

#[derive(Debug, Serialize)]
pub struct SessionResponse {
    pub openid: String,
    pub unionid: Option<String>,
    pub expires_at: u64,
}

/// `GET /session`: who the token belongs to, and until when.
pub async fn get(Session(s): Session) -> Reply<SessionResponse> {
    Reply(SessionResponse {
        openid: s.openid,
        unionid: s.unionid,
        expires_at: s.expires_at,
    })
}

/// `DELETE /session`: 204 whether or not the session still exists.
pub async fn delete(
    State(app): State<Arc<App>>,
    token: SessionToken,
) -> Result<StatusCode, ApiError> {
    app.store.delete_session(&token.key()).await?;
    Ok(StatusCode::NO_CONTENT)
}
