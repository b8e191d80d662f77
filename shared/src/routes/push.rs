//! `GET /push` (WeChat's verification of the push URL) and `POST /push` (a push): checked by
//! [`crate::push`], normalised, and put on the event bus once however often WeChat retries it.
//!
//! The bus is the only work on the request path (a conditional write to recognise a retry, one
//! `PutEvents`, the claim marked done): WeChat retries a push it did not get `success` for within
//! 5 seconds. The push is claimed with a short lease while it is published, and for a day once it
//! is: a retry that meets the lease gets 503 (WeChat tries again), one that meets the day gets
//! `success`. If the bus fails, the claim is given back and the answer is 503, so WeChat's retry
//! can publish it. A plaintext push's signature is remembered with its body's hash for 10
//! minutes: the same signature with another body is refused (it covers no part of the body).
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
use crate::push::{MAX_PUSH_BYTES, MAX_SKEW_SECS, PushKeys, message};
use crate::store::Claim;

/// How long a push is remembered to recognise WeChat's retries (which come within seconds).
pub const DEDUP_SECS: u64 = 24 * 3600;
/// How long one request holds a push while it publishes it (the function's timeout is 5 s).
pub const LEASE_SECS: u64 = 30;

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
    // The bus's detail-type: WeChat's event names only (EventBridge allows 128 characters; the
    // `wechat.` names are this project's own events, never a push's).
    if detail_type.len() > 128
        || detail_type.starts_with("wechat.")
        || !detail_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
    {
        return Err(ApiError::InvalidRequest(
            "the push's Event (or MsgType) is not an event name".into(),
        ));
    }
    let events = app
        .events
        .as_ref()
        .ok_or_else(|| ApiError::EventBus("no EVENT_BUS_NAME is configured".into()))?;
    // A plaintext push's signature covers no part of the body: a signature seen with another
    // body in the last minutes is a forgery.
    if !opened.encrypted {
        let sig = query(&uri).remove("signature").unwrap_or_default();
        let body_hash = crate::ids::sha256_hex(&body);
        let seen = app
            .store
            .claim(
                &format!("sig#{sig}"),
                &body_hash,
                now + 2 * MAX_SKEW_SECS,
                now,
            )
            .await?;
        if !seen.taken() {
            return Err(ApiError::Forbidden(
                "the push was refused: its signature was used before with another body".into(),
            ));
        }
    }
    let key = format!("push#{}", message::dedup_key(&opened.fields));
    let holder = crate::ids::new_request_id();
    // A short lease while this request publishes; "done" for a day once it has.
    match app
        .store
        .claim(&key, &holder, now + LEASE_SECS, now)
        .await?
    {
        Claim::Taken => {}
        Claim::Held { until } if until > now + LEASE_SECS => {
            tracing::info!(
                detail_type,
                "push received before (WeChat's retry): not published again"
            );
            return Ok(text("success".into()));
        }
        Claim::Held { .. } => {
            // Still being published by another request: WeChat's next retry learns how it went.
            return Err(ApiError::EventBus(
                "the same push is being published by another request".into(),
            ));
        }
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
    if let Err(e) = app.store.claim(&key, &holder, now + DEDUP_SECS, now).await {
        tracing::warn!(error = %e, "the push's claim could not be kept: a retry may publish it again");
    }
    tracing::info!(
        detail_type,
        encrypted = opened.encrypted,
        format = ?opened.format,
        "push published"
    );
    Ok(text("success".into()))
}
