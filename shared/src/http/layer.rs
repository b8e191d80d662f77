//! The request layer: every request runs in a [`crate::scope`] (its id and deadline), is cut off
//! just before Lambda's deadline with the contract's answer, and leaves one structured log line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lambda_http::RequestExt;

use crate::clock::{self, Instant};
use crate::error::{ApiError, Logged};
use crate::scope;

/// On a request whose path or body could not be read from its event (a body marked base64 that
/// is not): answered 400 `invalid_request` with this message, without being routed.
#[derive(Debug, Clone, Copy)]
pub struct Unreadable(pub &'static str);

/// Time kept back before Lambda's deadline to send the error answer.
const DEADLINE_MARGIN_MS: u64 = 500;
/// Lambda's longest timeout; a deadline further away than this is not a real one.
const MAX_LAMBDA_TIMEOUT_MS: u64 = 15 * 60 * 1000;

/// A request id given by whoever serves the router (the local server, tests); Lambda's own
/// request id is used when there is none.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The point by which the request must be answered: Lambda's deadline less a margin. A deadline
/// that is not a plausible epoch time in the next 15 minutes (`cargo lambda watch` sends its
/// timeout as a duration, 600000) does not cut a request short; it is logged once.
pub fn answer_by(deadline_ms: u64) -> Option<Instant> {
    let now = crate::now_millis();
    if deadline_ms <= now || deadline_ms > now + MAX_LAMBDA_TIMEOUT_MS + 60_000 {
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                deadline_ms,
                now_ms = now,
                "the invocation's deadline is not an epoch time within Lambda's 15 minutes; \
                 requests are not cut short by it"
            );
        }
        return None;
    }
    let by = deadline_ms.saturating_sub(DEADLINE_MARGIN_MS).max(now + 1);
    Some(clock::instant_at_epoch_millis(by))
}

pub async fn request(req: Request, next: Next) -> Response {
    let lambda = req.lambda_context_ref();
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .or_else(|| lambda.map(|c| c.request_id.clone()))
        .unwrap_or_else(crate::ids::new_request_id);
    let by = lambda.and_then(|c| answer_by(c.deadline));
    // X-Ray's trace id (Lambda with tracing active), so a log line leads to its trace.
    let trace_id = lambda.and_then(|c| c.xray_trace_id.clone());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // The route's pattern (`/media/check/{trace_id}`), never the path itself, for the metrics.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().trim_end_matches('/').to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "other".to_string());
    let started = clock::now();
    let id = request_id.clone();
    let resp = scope::run_request(request_id.clone(), by, async move {
        let request_id = id;
        // Nothing to route: the event's path or body could not be read.
        if let Some(unreadable) = req.extensions().get::<Unreadable>() {
            return ApiError::InvalidRequest(unreadable.0.to_string()).into_response();
        }
        let handled = next.run(req);
        match by {
            None => handled.await,
            Some(by) => match tokio::time::timeout_at(by, handled).await {
                Ok(resp) => resp,
                Err(_) => {
                    tracing::error!(
                        request_id,
                        "request ran out of time before the Lambda deadline"
                    );
                    ApiError::out_of_time(scope::slowest()).into_response()
                }
            },
        }
    })
    .await;
    let took = clock::now() - started;
    crate::metrics::request(
        &route,
        resp.status().as_u16(),
        resp.extensions().get::<Logged>().map(|e| e.code),
        resp.headers().get("x-cache").is_some_and(|v| v == "hit"),
        took.as_secs_f64() * 1000.0,
    );
    // Once per invocation: what this request (and anything since the last flush) recorded,
    // written in one write with the request's log line.
    crate::metrics::flush_with_next_log_line();
    log(
        &request_id,
        trace_id.as_deref(),
        &method,
        &path,
        &resp,
        took,
    );
    crate::logging::write_held();
    resp
}

fn log(
    request_id: &str,
    trace_id: Option<&str>,
    method: &http::Method,
    path: &str,
    resp: &Response,
    took: Duration,
) {
    let status = resp.status().as_u16();
    let ms = took.as_secs_f64() * 1000.0;
    match resp.extensions().get::<Logged>() {
        None => {
            tracing::info!(request_id, trace_id, method = %method, path, status, ms, "request served")
        }
        Some(e) if status >= 500 => {
            tracing::error!(request_id, trace_id, method = %method, path, status, code = e.code, error = %e.detail, ms, "request failed")
        }
        Some(e) => {
            tracing::info!(request_id, trace_id, method = %method, path, status, code = e.code, error = %e.detail, ms, "request refused")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plausible_deadline_counts() {
        let now = crate::now_millis();
        assert!(answer_by(now + 10_000).is_some());
        assert!(answer_by(now + MAX_LAMBDA_TIMEOUT_MS).is_some());
        // cargo lambda watch's emulator sends the timeout itself.
        assert!(answer_by(600_000).is_none());
        assert!(answer_by(0).is_none());
        assert!(answer_by(now + 10 * MAX_LAMBDA_TIMEOUT_MS).is_none());
    }
}
