//! The Lambda adapter: API Gateway HTTP API (payload 2.0) events in, made into requests for the
//! function's [`crate::routes::router`] and its answers written back ([`apigw`]): JSON leaves as
//! text, images base64 with `isBase64Encoded` (decided by content type). The router never fails:
//! every failure is already a JSON response, including running out of time (answered just before
//! Lambda's deadline).
//!
//! The loop that asks Lambda for events and posts the answers is our own ([`runtime_api`]), and so
//! are the conversions on either side of the router ([`apigw`]); `lambda_http`'s context type is
//! kept, as the request's extension.

pub mod apigw;
pub mod runtime_api;
mod wire;

use std::sync::Arc;

use lambda_http::Error;
use lambda_http::lambda_runtime::Diagnostic;
use tower::Service;

use crate::app::App;
use crate::routes::{Surface, router};

/// Runs the function until Lambda stops it.
pub async fn run(app: App, surface: Surface) -> Result<(), Error> {
    crate::metrics::init(surface.function_name());
    connect_ahead(&app, surface);
    let mut router = router(Arc::new(app), surface);
    let serve = runtime_api::serve(move |event: bytes::Bytes, context| {
        let answer = match apigw::request(&event) {
            Ok(mut request) => {
                request.extensions_mut().insert(context);
                // The router is always ready and never fails (every failure is a JSON answer).
                Ok(router.call(request))
            }
            // Not an API Gateway event: the invocation's error, the router never called.
            Err(e) => {
                tracing::error!(
                    request_id = context.request_id,
                    trace_id = context.xray_trace_id,
                    error = e.error_message,
                    "event refused"
                );
                Err(e)
            }
        };
        async move {
            let response = answer?.await.unwrap_or_else(|e| match e {});
            apigw::response(response)
                .await
                .map_err(|e| diagnostic("Serialization", &e))
        }
    });
    in_task(serve).await
}

/// Runs `work` as a task of the runtime rather than as the future `main` blocks on: a task woken
/// by another (a connection's task handing it an answer) is queued, where waking the blocked-on
/// future writes to the runtime's eventfd and costs the loop another `epoll_wait`.
async fn in_task<F>(work: F) -> Result<(), Error>
where
    F: std::future::Future<Output = Result<(), Error>> + Send + 'static,
{
    match tokio::spawn(work).await {
        Ok(result) => result,
        Err(e) => Err(e.to_string().into()),
    }
}

/// Opens, in the background, the connections a cold start's first request will want, so that
/// their name lookups and TCP and TLS handshakes happen while the runtime API is asked for it, and
/// for a login while WeChat is: DynamoDB always (two for a login, which writes the session and the
/// user record side by side); WeChat for logins and codes; the code bucket for codes. What a first
/// request does not use stays open, unused, until its idle limit.
fn connect_ahead(app: &App, surface: Surface) {
    if let Some(db) = &app.dynamodb {
        let want = if matches!(surface, Surface::Sessions) {
            2
        } else {
            1
        };
        for _ in 0..want {
            tokio::spawn(db.open_ahead(want));
        }
    }
    if matches!(surface, Surface::Sessions | Surface::Codes | Surface::All) {
        tokio::spawn(app.wechat.open_ahead());
    }
    if matches!(surface, Surface::Codes | Surface::All)
        && let Some(codes) = &app.codes
    {
        tokio::spawn(codes.open_ahead());
    }
}

/// The event as `T`, or the invocation's error naming where it did not fit (never its content).
fn parse<'de, T: serde::Deserialize<'de>>(event: &'de [u8]) -> Result<T, Diagnostic> {
    let mut json = serde_json::Deserializer::from_slice(event);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        // Where and what kind, not serde's message: it quotes the values it met.
        let path = e.path().to_string();
        let inner = e.inner();
        diagnostic(
            "InvalidEvent",
            &format!(
                "the event does not fit at {path} ({:?} error at line {}, column {})",
                inner.classify(),
                inner.line(),
                inner.column()
            ),
        )
    })
}

fn diagnostic(error_type: &str, message: &dyn std::fmt::Display) -> Diagnostic {
    Diagnostic {
        error_type: error_type.to_string(),
        error_message: message.to_string(),
    }
}

/// Runs an event function (EventBridge's targets: the refresher, notify) until Lambda stops it:
/// each event handled in its own request scope, one log line per event with the Lambda request
/// id, X-Ray's trace id, the outcome and the time, and the metrics flushed after it.
pub async fn run_events<E, R, F, Fut>(handler: F) -> Result<(), Error>
where
    E: serde::de::DeserializeOwned,
    R: serde::Serialize,
    F: Fn(E) -> Fut,
    Fut: std::future::Future<Output = Result<R, Error>>,
{
    let handler = &handler;
    runtime_api::serve(move |event: bytes::Bytes, ctx| async move {
        let request_id = ctx.request_id;
        let trace_id = ctx.xray_trace_id;
        let started = crate::clock::now();
        let payload = match parse::<E>(&event) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::error!(
                    request_id,
                    trace_id,
                    error = e.error_message,
                    "event refused"
                );
                return Err(e);
            }
        };
        // Boxed: the handler's future (the whole notify flow) stays out of the loop's types,
        // which otherwise nest deeper than rustc's default query depth on a clean build.
        let work: std::pin::Pin<Box<dyn std::future::Future<Output = Result<R, Error>> + '_>> =
            Box::pin(handler(payload));
        let result = crate::scope::run_request(request_id.clone(), None, work).await;
        let ms = (crate::clock::now() - started).as_secs_f64() * 1000.0;
        let trace_id = trace_id.as_deref();
        let answer = match result {
            Ok(outcome) => match serde_json::to_vec(&outcome) {
                Ok(outcome) => {
                    tracing::info!(
                        request_id,
                        trace_id,
                        outcome = %String::from_utf8_lossy(&outcome),
                        ms,
                        "event handled"
                    );
                    Ok(outcome)
                }
                Err(e) => {
                    tracing::error!(request_id, trace_id, error = %e, ms, "outcome not serialized");
                    Err(diagnostic("Serialization", &e))
                }
            },
            Err(e) => {
                tracing::error!(request_id, trace_id, error = %e, ms, "event failed");
                Err(Diagnostic::from(e))
            }
        };
        crate::metrics::flush();
        answer
    })
    .await
}
