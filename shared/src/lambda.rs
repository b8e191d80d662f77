//! The Lambda adapter: `lambda_http` serves the function's [`crate::routes::router`]. API Gateway
//! HTTP API (payload 2.0) events in; JSON leaves as text, images base64 with `isBase64Encoded`
//! (`lambda_http` decides by content type). The router never fails: every failure is already a
//! JSON response, including running out of time (answered just before Lambda's deadline).
//!
//! One thing `lambda_http` does not do: a named stage stays in the request path (`/prod/login`;
//! `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH` only stops it adding one), so it is taken off here
//! before routing.

use std::sync::Arc;

use lambda_http::request::RequestContext;
use lambda_http::{Error, Request, RequestExt};
use tower::ServiceBuilder;

use crate::app::App;
use crate::routes::{Surface, router};

/// Runs the function until Lambda stops it.
pub async fn run(app: App, surface: Surface) -> Result<(), Error> {
    crate::metrics::init(surface.function_name());
    let service = ServiceBuilder::new()
        .map_request(strip_stage)
        .service(router(Arc::new(app), surface));
    lambda_http::run(service).await
}

/// `/prod/login` → `/login` when the request came through the stage `prod`.
pub fn strip_stage(mut req: Request) -> Request {
    let stage = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.stage.clone(),
        _ => None,
    };
    let Some(stage) = stage.filter(|s| s != "$default") else {
        return req;
    };
    let prefix = format!("/{stage}");
    let path = req.uri().path();
    let Some(rest) = path
        .strip_prefix(&prefix)
        .filter(|r| r.is_empty() || r.starts_with('/'))
    else {
        return req;
    };
    let rest = if rest.is_empty() { "/" } else { rest };
    let uri = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    if let Ok(uri) = uri.parse() {
        *req.uri_mut() = uri;
    }
    req
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
    use lambda_http::lambda_runtime::{LambdaEvent, service_fn};
    let handler = &handler;
    lambda_http::lambda_runtime::run(service_fn(move |event: LambdaEvent<E>| async move {
        let (payload, ctx) = event.into_parts();
        let request_id = ctx.request_id.clone();
        let trace_id = ctx.xray_trace_id.clone();
        let started = crate::clock::now();
        // Boxed: the handler's future (the whole notify flow) stays out of the runtime's types,
        // which otherwise nest deeper than rustc's default query depth on a clean build.
        let work: std::pin::Pin<Box<dyn std::future::Future<Output = Result<R, Error>> + '_>> =
            Box::pin(handler(payload));
        let result = crate::scope::run_request(request_id.clone(), None, work).await;
        let ms = (crate::clock::now() - started).as_secs_f64() * 1000.0;
        let trace_id = trace_id.as_deref();
        match &result {
            Ok(outcome) => {
                let outcome = serde_json::to_string(outcome).unwrap_or_default();
                tracing::info!(request_id, trace_id, outcome, ms, "event handled")
            }
            Err(e) => tracing::error!(request_id, trace_id, error = %e, ms, "event failed"),
        }
        crate::metrics::flush();
        result
    }))
    .await
}
