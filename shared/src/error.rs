//! Every failure a request can meet, and the one place that turns it into the contract's JSON:
//! `{"error": {"code", "message", "wechat_errcode"?, "request_id"}}` with its status.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::store::StoreError;
use crate::wechat::WxError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad JSON, a missing or invalid field (named in the message), an unsupported method.
    #[error("{0}")]
    InvalidRequest(String),
    /// WeChat refused something the client sent (a phone code, a page), named in the message.
    #[error("{message}")]
    RejectedInput { message: String, source: WxError },
    #[error("missing, unknown, logged-out or expired session token")]
    Unauthenticated,
    #[error("the login code was rejected by WeChat")]
    InvalidCode(#[source] WxError),
    #[error("WeChat blocked this login: the user is flagged as high-risk")]
    RiskyUser(#[source] WxError),
    #[error("WeChat's rate limit was reached; retry later")]
    RateLimited(#[source] WxError),
    #[error("WeChat answered with an error that retrying cannot fix")]
    WeChat(#[source] WxError),
    #[error("WeChat is unavailable; retry later")]
    WeChatUnavailable(#[source] WxError),
    /// The token keeper gave up by its own rules (WeChat said nothing that explains it).
    #[error("no WeChat access token could be had; retry later")]
    NoToken(#[source] crate::token::GiveUp),
    #[error("the session store is unavailable; retry later")]
    Store(#[from] StoreError),
    /// A message push whose signature, key or app id does not check out (the reason is ours,
    /// never the message's content).
    #[error("{0}")]
    Forbidden(String),
    /// The event bus did not take a push (after bounded retries): WeChat will send it again.
    #[error("the event bus is unavailable; retry later")]
    EventBus(String),
    #[error("no route {0}")]
    NotFound(String),
    /// A known path with a method it does not take; `allow` lists the ones it does.
    #[error("method {method} is not allowed on {path}; use {}", allow.join(", "))]
    MethodNotAllowed {
        method: String,
        path: String,
        allow: Vec<&'static str>,
    },
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("internal error")]
    Internal(String),
}

impl From<crate::token::TokenError> for ApiError {
    fn from(e: crate::token::TokenError) -> Self {
        use crate::token::TokenError;
        match e {
            TokenError::WeChat(w) => ApiError::from_wechat(w),
            TokenError::Fetch(w) => ApiError::from_token_fetch(w),
            TokenError::Store(s) => ApiError::Store(s),
            TokenError::GaveUp(g) => ApiError::NoToken(g),
        }
    }
}

impl ApiError {
    /// The generic reading of a WeChat failure; routes override the codes that mean bad input.
    pub fn from_wechat(err: WxError) -> Self {
        match err.errcode() {
            _ if err.is_transient() => ApiError::WeChatUnavailable(err),
            // An access token still rejected after the keeper refreshed it once.
            _ if err.is_token_rejected() => ApiError::WeChatUnavailable(err),
            Some(45009 | 45011 | 44990) => ApiError::RateLimited(err),
            _ => ApiError::WeChat(err),
        }
    }

    /// WeChat refused input the client sent (a page, a phone code): 400 naming it.
    pub fn rejected(message: &str, source: WxError) -> Self {
        ApiError::RejectedInput {
            message: message.into(),
            source,
        }
    }

    /// A failure to get an access token from WeChat. On the token endpoints 40001 means a
    /// wrong AppSecret (like 40013/40125), not a stale token: only busy answers and transport
    /// failures are worth retrying later, and the quotas are rate limits.
    pub fn from_token_fetch(err: WxError) -> Self {
        match err.errcode() {
            _ if err.is_transient() => ApiError::WeChatUnavailable(err),
            Some(45009 | 45011 | 44990) => ApiError::RateLimited(err),
            _ => ApiError::WeChat(err),
        }
    }

    /// The answer when a request overran its deadline, naming the part that ran out the clock.
    pub fn out_of_time(waiting: crate::scope::Waiting) -> Self {
        let msg = "the request ran out of time".to_string();
        match waiting {
            crate::scope::Waiting::Store => ApiError::Store(StoreError(msg)),
            _ => ApiError::WeChatUnavailable(WxError::Transport(msg)),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) | ApiError::RejectedInput { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated | ApiError::InvalidCode(_) => StatusCode::UNAUTHORIZED,
            ApiError::RiskyUser(_) | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::WeChat(_) => StatusCode::BAD_GATEWAY,
            ApiError::WeChatUnavailable(_)
            | ApiError::NoToken(_)
            | ApiError::Store(_)
            | ApiError::EventBus(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) | ApiError::RejectedInput { .. } => "invalid_request",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::InvalidCode(_) => "invalid_code",
            ApiError::RiskyUser(_) => "risky_user",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::WeChat(_) => "wechat_error",
            ApiError::WeChatUnavailable(_) | ApiError::NoToken(_) => "wechat_unavailable",
            // The bus is where pushes are kept: the contract's one code for "not stored".
            ApiError::Store(_) | ApiError::EventBus(_) => "store_unavailable",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The WeChat failure behind this error, if there is one.
    fn wechat_source(&self) -> Option<&WxError> {
        match self {
            ApiError::RejectedInput { source: e, .. }
            | ApiError::InvalidCode(e)
            | ApiError::RiskyUser(e)
            | ApiError::RateLimited(e)
            | ApiError::WeChat(e)
            | ApiError::WeChatUnavailable(e) => Some(e),
            _ => None,
        }
    }

    /// WeChat's errcode, when WeChat said something.
    pub fn wechat_errcode(&self) -> Option<i64> {
        self.wechat_source().and_then(WxError::errcode)
    }

    /// What is logged: the public message plus the cause (never a secret: causes carry no URLs).
    pub fn detail(&self) -> String {
        match (self.wechat_source(), self) {
            (Some(e), _) => format!("{self}: {e}"),
            (None, ApiError::Store(e)) => format!("{self}: {}", e.0),
            (None, ApiError::NoToken(g)) => format!("{self}: {g}"),
            (None, ApiError::Internal(d)) => format!("{self}: {d}"),
            (None, ApiError::EventBus(d)) => format!("{self}: {d}"),
            _ => self.to_string(),
        }
    }

    /// The contract's answer for this error, for the request `request_id`.
    pub fn to_response(&self, request_id: &str) -> Response {
        let mut error = json!({
            "code": self.code(),
            "message": self.to_string(),
            "request_id": request_id,
        });
        if let Some(c) = self.wechat_errcode() {
            error["wechat_errcode"] = json!(c);
        }
        let mut resp =
            crate::reply::json_response(self.status(), &json!({ "error": error })).into_response();
        if let ApiError::MethodNotAllowed { allow, .. } = self {
            let allow = http::HeaderValue::from_str(&allow.join(", "))
                .expect("method names are valid header text");
            resp.headers_mut().insert(http::header::ALLOW, allow);
        }
        // For the request's log line (see `http::layer`).
        resp.extensions_mut().insert(Logged {
            code: self.code(),
            detail: self.detail(),
        });
        resp
    }
}

/// What the request's log line says about an error answer.
#[derive(Debug, Clone)]
pub struct Logged {
    pub code: &'static str,
    pub detail: String,
}

impl IntoResponse for ApiError {
    /// The contract's JSON, with the id of the request running (see [`crate::scope`]).
    fn into_response(self) -> Response {
        let id = crate::scope::request_id().unwrap_or_default();
        self.to_response(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(c: i64) -> WxError {
        WxError::Api {
            errcode: c,
            errmsg: "x".into(),
        }
    }

    #[test]
    fn maps_wechat_failures() {
        assert_eq!(ApiError::from_wechat(api(-1)).status(), 503);
        assert_eq!(ApiError::from_wechat(api(45011)).code(), "rate_limited");
        assert_eq!(ApiError::from_wechat(api(45009)).status(), 429);
        assert_eq!(ApiError::from_wechat(api(40013)).code(), "wechat_error");
        assert_eq!(
            ApiError::from_wechat(api(40001)).code(),
            "wechat_unavailable"
        );
        assert_eq!(
            ApiError::from_wechat(WxError::Transport("t".into())).status(),
            503
        );
        // Fetching a token: 40001 is a wrong AppSecret, not a stale token.
        assert_eq!(
            ApiError::from_token_fetch(api(40001)).code(),
            "wechat_error"
        );
        assert_eq!(ApiError::from_token_fetch(api(40001)).status(), 502);
        assert_eq!(ApiError::from_token_fetch(api(-1)).status(), 503);
        assert_eq!(ApiError::from_token_fetch(api(45009)).status(), 429);
    }

    #[test]
    fn a_give_up_reports_no_wechat_errcode() {
        let e = ApiError::from(crate::token::TokenError::GaveUp(
            crate::token::GiveUp::ForceCapReached,
        ));
        assert_eq!((e.status().as_u16(), e.code()), (503, "wechat_unavailable"));
        assert_eq!(e.wechat_errcode(), None);
    }

    #[test]
    fn an_overrun_names_the_slow_part() {
        use crate::scope::Waiting;
        assert_eq!(
            ApiError::out_of_time(Waiting::Store).code(),
            "store_unavailable"
        );
        assert_eq!(
            ApiError::out_of_time(Waiting::WeChat).code(),
            "wechat_unavailable"
        );
        assert_eq!(ApiError::out_of_time(Waiting::Nothing).status(), 503);
    }

    #[test]
    fn body_has_the_contract_shape() {
        let r = ApiError::InvalidCode(api(40029)).to_response("req-1");
        assert_eq!(r.status(), 401);
        let v = body(r);
        assert_eq!(v["error"]["code"], "invalid_code");
        assert_eq!(v["error"]["wechat_errcode"], 40029);
        assert_eq!(v["error"]["request_id"], "req-1");
        assert_eq!(
            v["error"]["message"],
            "the login code was rejected by WeChat"
        );
        let r = ApiError::Unauthenticated.to_response("r");
        let v = body(r);
        assert!(v["error"].get("wechat_errcode").is_none());

        let r = ApiError::MethodNotAllowed {
            method: "PUT".into(),
            path: "/session".into(),
            allow: vec!["GET", "DELETE"],
        }
        .to_response("r");
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()["allow"], "GET, DELETE");
        assert_eq!(body(r)["error"]["code"], "method_not_allowed");
        let r = ApiError::PayloadTooLarge(16384).to_response("r");
        assert_eq!(r.status(), 413);
        assert_eq!(body(r)["error"]["code"], "payload_too_large");
    }

    fn body(r: Response) -> serde_json::Value {
        let bytes = body_bytes(r);
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The bytes of a response body built in memory.
    fn body_bytes(r: Response) -> bytes::Bytes {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(axum::body::to_bytes(r.into_body(), usize::MAX))
            .unwrap()
    }
}
