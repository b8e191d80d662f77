//! `/_sandbox/*`: the HTTP face of [`Sandbox`]'s control methods, for tests and tools that
//! only have the sandbox's URL. No faults apply and no calls are counted here.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{Faults, PhoneSpec, PushFormat, PushMode, PushSpec, Sandbox};

pub(crate) fn router() -> Router<Sandbox> {
    Router::new()
        .route("/_sandbox/login_code", post(login_code))
        .route("/_sandbox/phone_code", post(phone_code))
        .route("/_sandbox/faults", put(set_faults).get(get_faults))
        .route(
            "/_sandbox/third_party_refresh",
            post(|State(sb): State<Sandbox>| async move {
                sb.third_party_refresh();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/_sandbox/third_party_force_stable",
            post(|State(sb): State<Sandbox>| async move {
                sb.third_party_force_stable();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/_sandbox/invalidate_tokens",
            post(|State(sb): State<Sandbox>| async move {
                sb.invalidate_all_tokens();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/_sandbox/stats",
            get(|State(sb): State<Sandbox>| async move { Json(sb.stats()) }),
        )
        .route(
            "/_sandbox/reset_stats",
            post(|State(sb): State<Sandbox>| async move {
                sb.reset_stats();
                StatusCode::NO_CONTENT
            }),
        )
        .route("/_sandbox/advance_time", post(advance_time))
        .route("/_sandbox/secret", post(rotate_secret))
        .route("/_sandbox/push", post(push))
        .route("/_sandbox/grant", post(grant))
        .route("/_sandbox/push_target", post(push_target))
        .route("/_sandbox/subscribe_messages", get(subscribe_messages))
}

/// A JSON body, whatever the request's content type says (curl users often send none).
struct JsonBody<T>(T);

/// A body that does not fit: 400 with the reason.
struct BadBody(String);

impl IntoResponse for BadBody {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, Json(json!({"error": self.0}))).into_response()
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = BadBody;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| BadBody(format!("cannot read the body: {e}")))?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| BadBody(format!("bad request body: {e}")))
    }
}

#[derive(Deserialize)]
struct LoginCodeRequest {
    user: String,
}

async fn login_code(
    State(sb): State<Sandbox>,
    JsonBody(req): JsonBody<LoginCodeRequest>,
) -> Json<Value> {
    Json(json!({"code": sb.mint_login_code(&req.user)}))
}

async fn phone_code(
    State(sb): State<Sandbox>,
    JsonBody(phone): JsonBody<PhoneSpec>,
) -> Json<Value> {
    Json(json!({"code": sb.mint_phone_code(phone)}))
}

async fn set_faults(State(sb): State<Sandbox>, JsonBody(faults): JsonBody<Faults>) -> StatusCode {
    sb.set_faults(faults);
    StatusCode::NO_CONTENT
}

async fn get_faults(State(sb): State<Sandbox>) -> Json<Faults> {
    Json(sb.faults())
}

#[derive(Deserialize)]
struct AdvanceRequest {
    secs: u64,
}

async fn advance_time(
    State(sb): State<Sandbox>,
    JsonBody(req): JsonBody<AdvanceRequest>,
) -> StatusCode {
    sb.advance_time(Duration::from_secs(req.secs));
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct SecretRequest {
    secret: String,
}

/// Rotates the app secret (as a reset in the WeChat console does): from now on only the new one
/// is accepted, the old one answers 40125.
async fn rotate_secret(
    State(sb): State<Sandbox>,
    JsonBody(req): JsonBody<SecretRequest>,
) -> StatusCode {
    sb.rotate_secret(req.secret);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct PushDelivery {
    /// The receiver's URL (`http://127.0.0.1:3000/push`).
    url: String,
    #[serde(flatten)]
    spec: PushSpec,
}

/// Builds the push WeChat would send for `message` (mode, format) and POSTs it to `url`; the
/// receiver's status and body. An accepted subscribe popup is recorded as WeChat's grant.
async fn push(State(sb): State<Sandbox>, JsonBody(req): JsonBody<PushDelivery>) -> Response {
    match sb.push(&req.url, &req.spec).await {
        Ok((status, body)) => Json(json!({"status": status, "body": body})).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, Json(json!({"error": e}))).into_response(),
    }
}

#[derive(Deserialize)]
struct GrantRequest {
    openid: String,
    template_id: String,
    #[serde(default)]
    count: u32,
    #[serde(default)]
    long_term: bool,
}

async fn grant(State(sb): State<Sandbox>, JsonBody(req): JsonBody<GrantRequest>) -> StatusCode {
    sb.grant(&req.openid, &req.template_id, req.count, req.long_term);
    StatusCode::NO_CONTENT
}

async fn subscribe_messages(State(sb): State<Sandbox>) -> Json<Value> {
    Json(json!({"messages": sb.subscribe_messages()}))
}

#[derive(Deserialize)]
struct PushTarget {
    url: String,
    #[serde(default)]
    mode: PushMode,
    #[serde(default)]
    format: PushFormat,
}

/// Where finished media checks are pushed (`wxa_media_check`), as the console's push URL.
async fn push_target(State(sb): State<Sandbox>, JsonBody(t): JsonBody<PushTarget>) -> StatusCode {
    sb.set_push_target(&t.url, t.mode, t.format);
    StatusCode::NO_CONTENT
}
