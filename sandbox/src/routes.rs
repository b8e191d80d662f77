//! The WeChat paths. Each call goes through the same steps: latency, counting, scripted
//! error, busy rate, then the path's own logic; a code that would be answered may be swapped
//! for a bogus image, and last of all the answer may be lost (HTTP 502).

use std::collections::HashMap;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};

use crate::codes::{openid, unionid};
use crate::error::{self, JSON_CT, TEXT_CT, WxError};
use crate::image::{CodeParams, code_png};
use crate::state::State as SandboxState;
use crate::{BogusImage, Sandbox, SandboxConfig};

pub(crate) const JSCODE2SESSION: &str = "/sns/jscode2session";
pub(crate) const TOKEN: &str = "/cgi-bin/token";
pub(crate) const STABLE_TOKEN: &str = "/cgi-bin/stable_token";
pub(crate) const GETWXACODEUNLIMIT: &str = "/wxa/getwxacodeunlimit";
pub(crate) const GETUSERPHONENUMBER: &str = "/wxa/business/getuserphonenumber";
pub(crate) const SUBSCRIBE_SEND: &str = "/cgi-bin/message/subscribe/send";
pub(crate) const MSG_SEC_CHECK: &str = "/wxa/msg_sec_check";
pub(crate) const MEDIA_CHECK_ASYNC: &str = "/wxa/media_check_async";
pub(crate) const GENERATESCHEME: &str = "/wxa/generatescheme";
pub(crate) const GENERATE_URLLINK: &str = "/wxa/generate_urllink";
pub(crate) const GENWXASHORTLINK: &str = "/wxa/genwxashortlink";

pub(crate) fn router() -> Router<Sandbox> {
    Router::new()
        .route(JSCODE2SESSION, any(jscode2session))
        .route(TOKEN, any(token))
        .route(STABLE_TOKEN, any(stable_token))
        .route(GETWXACODEUNLIMIT, any(getwxacodeunlimit))
        .route(GETUSERPHONENUMBER, any(getuserphonenumber))
        .route(SUBSCRIBE_SEND, any(subscribe_send))
        .route(MSG_SEC_CHECK, any(msg_sec_check))
        .route(MEDIA_CHECK_ASYNC, any(media_check_async))
        .route(
            GENERATESCHEME,
            any(|sb, m, q, b| link(sb, m, q, b, GENERATESCHEME)),
        )
        .route(
            GENERATE_URLLINK,
            any(|sb, m, q, b| link(sb, m, q, b, GENERATE_URLLINK)),
        )
        .route(
            GENWXASHORTLINK,
            any(|sb, m, q, b| link(sb, m, q, b, GENWXASHORTLINK)),
        )
}

/// Query parameters; a malformed query string reads as no parameters, as WeChat would then
/// report the first missing one.
type Params = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

fn params(q: Params) -> HashMap<String, String> {
    q.map(|Query(q)| q).unwrap_or_default()
}

/// A non-empty query parameter.
fn param<'a>(q: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    q.get(key).map(String::as_str).filter(|v| !v.is_empty())
}

/// What a path's logic answers when it succeeds.
enum Reply {
    Json(Value, &'static str),
    /// Rendered after the state lock is released.
    Code(CodeParams),
}

/// What a call answers, decided under the state lock.
enum Answer {
    Reply(Reply),
    Bogus(BogusImage),
    Error(WxError, String),
}

/// Runs one WeChat call through the common steps. Errors use `error_ct` as content type.
async fn serve_call<F>(
    sb: &Sandbox,
    path: &'static str,
    error_ct: &'static str,
    logic: F,
) -> Response
where
    F: FnOnce(&SandboxConfig, &mut SandboxState) -> Result<Reply, WxError>,
{
    serve_call_as(sb, path, error_ct, false, logic).await
}

/// [`serve_call`] for a call that is a force refresh if `force` (for `LostAnswer::only_force`).
async fn serve_call_as<F>(
    sb: &Sandbox,
    path: &'static str,
    error_ct: &'static str,
    force: bool,
    logic: F,
) -> Response
where
    F: FnOnce(&SandboxConfig, &mut SandboxState) -> Result<Reply, WxError>,
{
    let latency = sb.state().faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (answer, lost) = {
        let mut st = sb.state();
        st.count_call(path);
        let result = st
            .faults
            .admit(path)
            .and_then(|()| logic(sb.config(), &mut st));
        let answer = match result {
            Ok(Reply::Code(params)) => match st.faults.take_bogus_image() {
                Some(bogus) => Answer::Bogus(bogus),
                None => Answer::Reply(Reply::Code(params)),
            },
            Ok(reply) => Answer::Reply(reply),
            Err(e) => Answer::Error(e, st.next_rid()),
        };
        (answer, st.faults.take_lost_answer(path, force))
    };
    if lost {
        tracing::info!(path, "answer lost on the way back (502)");
        return lost_answer();
    }
    match answer {
        Answer::Reply(Reply::Json(body, content_type)) => {
            tracing::info!(path, errcode = 0, "answered");
            with_content_type(content_type, body.to_string())
        }
        Answer::Reply(Reply::Code(params)) => {
            tracing::info!(
                path,
                errcode = 0,
                width = params.width,
                "answered with an image"
            );
            with_content_type("image/png", code_png(&params))
        }
        Answer::Bogus(bogus) => {
            tracing::info!(path, content_type = %bogus.content_type, "answered with a bogus image");
            bogus_image(bogus)
        }
        Answer::Error(err, rid) => {
            tracing::info!(path, errcode = err.code, "answered with an error");
            err.into_response(&rid, error_ct)
        }
    }
}

/// HTTP 200 with the fault's body, and its content type if it is a valid header value.
fn bogus_image(bogus: BogusImage) -> Response {
    let mut response = (StatusCode::OK, Body::from(bogus.body)).into_response();
    if !bogus.content_type.is_empty()
        && let Ok(ct) = HeaderValue::from_str(&bogus.content_type)
    {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response
}

/// What a gateway answers when it lost the upstream's answer.
fn lost_answer() -> Response {
    const PAGE: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
                        <center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n";
    (
        StatusCode::BAD_GATEWAY,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/html"))],
        PAGE,
    )
        .into_response()
}

fn with_content_type(content_type: &'static str, body: impl IntoResponse) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// The app credential checks shared by the token paths and jscode2session.
fn check_credentials(
    cfg: &SandboxConfig,
    current_secret: &str,
    grant_type: Option<&str>,
    expected_grant_type: &str,
    appid: Option<&str>,
    secret: Option<&str>,
) -> Result<(), WxError> {
    if grant_type != Some(expected_grant_type) {
        return Err(error::INVALID_GRANT_TYPE);
    }
    if appid != Some(cfg.appid.as_str()) {
        return Err(error::INVALID_APPID);
    }
    match secret {
        None | Some("") => Err(error::SECRET_MISSING),
        Some(s) if s != current_secret => Err(error::INVALID_SECRET),
        Some(_) => Ok(()),
    }
}

/// The `access_token` check of every protected path.
fn authorize(st: &SandboxState, q: &HashMap<String, String>) -> Result<(), WxError> {
    let token = param(q, "access_token").ok_or(error::TOKEN_MISSING)?;
    st.tokens.check(token, st.now())
}

fn require_post(method: &Method) -> Result<(), WxError> {
    if method == Method::POST {
        Ok(())
    } else {
        Err(error::REQUIRE_POST)
    }
}

async fn jscode2session(State(sb): State<Sandbox>, q: Params) -> Response {
    let q = params(q);
    serve_call(&sb, JSCODE2SESSION, TEXT_CT, |cfg, st| {
        check_credentials(
            cfg,
            &st.secret,
            param(&q, "grant_type"),
            "authorization_code",
            param(&q, "appid"),
            param(&q, "secret"),
        )?;
        let code = param(&q, "js_code").ok_or(error::CODE_MISSING)?;
        let now = st.now();
        let user = st.login_codes.redeem(code, now)?;
        let mut body = json!({
            "openid": openid(&cfg.appid, &user),
            "session_key": st.login_codes.session_key(&user),
        });
        if cfg.unionid {
            body["unionid"] = Value::String(unionid(&user));
        }
        Ok(Reply::Json(body, TEXT_CT))
    })
    .await
}

async fn token(State(sb): State<Sandbox>, q: Params) -> Response {
    let q = params(q);
    serve_call(&sb, TOKEN, JSON_CT, |cfg, st| {
        check_credentials(
            cfg,
            &st.secret,
            param(&q, "grant_type"),
            "client_credential",
            param(&q, "appid"),
            param(&q, "secret"),
        )?;
        let now = st.now();
        let grant = st.tokens.issue_legacy(now);
        st.record_grant(&grant, true);
        Ok(Reply::Json(
            json!({"access_token": grant.access_token, "expires_in": grant.expires_in}),
            JSON_CT,
        ))
    })
    .await
}

async fn stable_token(State(sb): State<Sandbox>, method: Method, body: Bytes) -> Response {
    let forced = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("force_refresh")?.as_bool())
        .unwrap_or(false);
    serve_call_as(&sb, STABLE_TOKEN, JSON_CT, forced, |cfg, st| {
        require_post(&method)?;
        let value: Value = serde_json::from_slice(&body).map_err(|_| error::DATA_FORMAT)?;
        let obj = value.as_object().ok_or(error::DATA_FORMAT)?;
        let text = |key: &str| match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(error::DATA_FORMAT),
        };
        let force = match obj.get("force_refresh") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(error::DATA_FORMAT),
        };
        check_credentials(
            cfg,
            &st.secret,
            text("grant_type")?,
            "client_credential",
            text("appid")?,
            text("secret")?,
        )?;
        let grant = st.stable_token(force)?;
        st.record_grant(&grant, false);
        Ok(Reply::Json(
            json!({"access_token": grant.access_token, "expires_in": grant.expires_in}),
            JSON_CT,
        ))
    })
    .await
}

async fn getwxacodeunlimit(
    State(sb): State<Sandbox>,
    method: Method,
    q: Params,
    body: Bytes,
) -> Response {
    let q = params(q);
    serve_call(&sb, GETWXACODEUNLIMIT, JSON_CT, |cfg, st| {
        require_post(&method)?;
        authorize(st, &q)?;
        CodeParams::from_request(&body, &cfg.published_pages).map(Reply::Code)
    })
    .await
}

async fn getuserphonenumber(
    State(sb): State<Sandbox>,
    method: Method,
    q: Params,
    body: Bytes,
) -> Response {
    let q = params(q);
    serve_call(&sb, GETUSERPHONENUMBER, JSON_CT, |cfg, st| {
        require_post(&method)?;
        authorize(st, &q)?;
        let value: Value = serde_json::from_slice(&body).map_err(|_| error::DATA_FORMAT)?;
        let code = value
            .get("code")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .ok_or(error::INVALID_CODE)?;
        let now = st.now();
        let phone = st.phone_codes.redeem(code, now)?;
        let watermark_appid = st
            .faults
            .faults()
            .watermark_appid
            .clone()
            .unwrap_or_else(|| cfg.appid.clone());
        Ok(Reply::Json(
            json!({
                "errcode": 0,
                "errmsg": "ok",
                "phone_info": {
                    "phoneNumber": phone.phone_number,
                    "purePhoneNumber": phone.pure_phone_number,
                    "countryCode": phone.country_code,
                    "watermark": {
                        "timestamp": st.clock.epoch_secs(),
                        "appid": watermark_appid,
                    },
                },
            }),
            JSON_CT,
        ))
    })
    .await
}

async fn subscribe_send(
    State(sb): State<Sandbox>,
    method: Method,
    q: Params,
    body: Bytes,
) -> Response {
    let q = params(q);
    serve_call(&sb, SUBSCRIBE_SEND, JSON_CT, |cfg, st| {
        require_post(&method)?;
        authorize(st, &q)?;
        st.subscriptions.send(cfg, &body)?;
        Ok(Reply::Json(json!({"errcode": 0, "errmsg": "ok"}), JSON_CT))
    })
    .await
}

/// A random hex id (trace ids, link ids).
fn random_id(len: usize) -> String {
    let mut b = vec![0u8; len];
    getrandom::fill(&mut b).expect("randomness");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn msg_sec_check(
    State(sb): State<Sandbox>,
    method: Method,
    q: Params,
    body: Bytes,
) -> Response {
    let q = params(q);
    let trace_id = random_id(12);
    serve_call(&sb, MSG_SEC_CHECK, JSON_CT, |_, st| {
        require_post(&method)?;
        authorize(st, &q)?;
        crate::security::msg_sec_check(&body, &trace_id).map(|v| Reply::Json(v, JSON_CT))
    })
    .await
}

async fn media_check_async(
    State(sb): State<Sandbox>,
    method: Method,
    q: Params,
    body: Bytes,
) -> Response {
    let q = params(q);
    let trace_id = random_id(12);
    let mut accepted = None;
    let response = serve_call(&sb, MEDIA_CHECK_ASYNC, JSON_CT, |_, st| {
        require_post(&method)?;
        authorize(st, &q)?;
        let check = crate::security::media_check_async(&body, &trace_id)?;
        accepted = Some(check);
        Ok(Reply::Json(
            json!({"errcode": 0, "errmsg": "ok", "trace_id": trace_id}),
            JSON_CT,
        ))
    })
    .await;
    // WeChat checks the media later and pushes the verdict to the push URL.
    let target = sb.state().push_target.clone();
    if let (Some(check), Some((url, mode, format))) = (accepted, target) {
        let sb = sb.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(
                sb.config().media_check_delay_ms,
            ))
            .await;
            let now = sb.state().clock.epoch_secs();
            let message = crate::security::media_push(sb.config(), &check, now);
            let spec = crate::PushSpec {
                mode,
                format,
                message,
                timestamp: None,
                nonce: None,
            };
            match crate::push::deliver(&url, &sb.build_push(&spec)).await {
                Ok((status, _)) => tracing::info!(status, "media check result pushed"),
                Err(e) => tracing::warn!(error = %e, "media check result could not be pushed"),
            }
        });
    }
    response
}

async fn link(
    State(sb): State<Sandbox>,
    method: Method,
    q: Params,
    body: Bytes,
    path: &'static str,
) -> Response {
    let q = params(q);
    let id = random_id(8);
    serve_call(&sb, path, JSON_CT, |cfg, st| {
        require_post(&method)?;
        authorize(st, &q)?;
        let now = st.clock.epoch_secs();
        let day = st.clock.utc_day();
        let api = match path {
            GENERATESCHEME => "scheme",
            GENERATE_URLLINK => "urllink",
            _ => "shortlink",
        };
        st.links
            .link(cfg, api, &body, now, day, &id)
            .map(|v| Reply::Json(v, JSON_CT))
    })
    .await
}
