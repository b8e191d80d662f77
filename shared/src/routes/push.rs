//! `GET /push` (WeChat's verification of the push URL) and `POST /push` (a push): checked by
//! [`crate::push`], normalised, and put on the event bus once however often WeChat retries it.
//!
//! The bus is the only work on the request path (one conditional write to recognise a retry,
//! one `PutEvents`): WeChat retries a push it did not get `success` for within 5 seconds. If the
//! bus fails, the claim is given back and the answer is 503, so WeChat's retry can publish it.
//! Bad input (signature, key, app id, a malformed or oversized body) is a 4xx, nothing is
//! published, and nothing from the body is logged.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::Uri;
use serde_json::Value;

use crate::app::App;
use crate::error::ApiError;
use crate::events::{BusEvent, PUSH_SOURCE};
use crate::push::{MAX_PUSH_BYTES, PushKeys, message};

/// How long a push is remembered to recognise WeChat's retries (which come within seconds).
pub const DEDUP_SECS: u64 = 24 * 3600;

fn keys(app: &App, uri: &Uri) -> Result<PushKeys, ApiError> {
    // Without a push token there is no push route (the contract's "unset: no push route").
    app.push
        .clone()
        .ok_or_else(|| ApiError::NotFound(format!("{} (no WECHAT_PUSH_TOKEN)", uri.path())))
}

fn query(uri: &Uri) -> HashMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn text(body: String) -> Response {
    (
        [
            (http::header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (http::header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// `GET /push`: `echostr` back when the signature holds.
pub async fn verify(State(app): State<Arc<App>>, uri: Uri) -> Result<Response, ApiError> {
    let keys = keys(&app, &uri)?;
    let q = query(&uri);
    let echo = keys.verify(&q, crate::now_secs())?;
    tracing::info!("push URL verified");
    Ok(text(echo.to_string()))
}

/// `POST /push`: `success` once the push is on the bus (or was before).
pub async fn receive(
    State(app): State<Arc<App>>,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let keys = keys(&app, &uri)?;
    let body = crate::http::extract::read_body(body, MAX_PUSH_BYTES).await?;
    let now = crate::now_secs();
    let opened = keys.open(&query(&uri), &body, &app.config.wechat.appid, now)?;
    let detail_type = message::detail_type(&opened.fields)
        .ok_or_else(|| ApiError::InvalidRequest("the push has neither Event nor MsgType".into()))?
        .to_string();
    let events = app
        .events
        .as_ref()
        .ok_or_else(|| ApiError::EventBus("no EVENT_BUS_NAME is configured".into()))?;
    let key = format!("push#{}", message::dedup_key(&opened.fields));
    let holder = crate::ids::new_request_id();
    if !app
        .store
        .claim(&key, &holder, now + DEDUP_SECS, now)
        .await?
    {
        tracing::info!(
            detail_type,
            "push received before (WeChat's retry): not published again"
        );
        return Ok(text("success".into()));
    }
    // A media check's verdict is also kept for `GET /media/check/{trace_id}`.
    if detail_type == "wxa_media_check"
        && let Err(e) = crate::routes::content::store_media_verdict(&app, &opened.fields).await
    {
        let _ = app.store.release_claim(&key, &holder).await;
        return Err(e);
    }
    let event = BusEvent::new(PUSH_SOURCE, &detail_type, Value::Object(opened.fields));
    if let Err(e) = events.put(event).await {
        if let Err(r) = app.store.release_claim(&key, &holder).await {
            tracing::warn!(error = %r, "the push's claim could not be given back");
        }
        return Err(ApiError::EventBus(e));
    }
    tracing::info!(
        detail_type,
        encrypted = opened.encrypted,
        format = ?opened.format,
        "push published"
    );
    Ok(text("success".into()))
}
