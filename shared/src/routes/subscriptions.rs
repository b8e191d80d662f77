//! `GET /subscriptions`: the subscribe-message grants the logged-in user holds (the grant
//! ledger), so the mini-program knows whether to call `wx.requestSubscribeMessage` again.

use std::sync::Arc;

use axum::extract::State;
use serde::Serialize;

use crate::app::App;
use crate::error::ApiError;
use crate::reply::Reply;
use crate::session::Session;
use crate::store::Grant;

#[derive(Debug, Serialize)]
pub struct Grants {
    pub grants: Vec<Grant>,
}

pub async fn get(
    State(app): State<Arc<App>>,
    Session(user): Session,
) -> Result<Reply<Grants>, ApiError> {
    let grants = app.store.grants(&user.openid).await?;
    Ok(Reply(Grants { grants }))
}
