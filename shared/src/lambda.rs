//! The Lambda adapter: API Gateway HTTP API (payload 2.0) events in, the shared handler, responses
//! out. JSON leaves as text, images as binary (which lambda_http sends base64 with
//! `isBase64Encoded`). The handler returns `Err` never: every failure is already a JSON response,
//! including running out of time (answered just before Lambda's deadline, not after it).

use std::sync::Arc;

use bytes::Bytes;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Error, Request, RequestExt, Response, service_fn};

use crate::api::{self, Surface};
use crate::app::App;
use crate::error::ApiError;

/// Time kept back before Lambda's deadline to send the error answer.
const DEADLINE_MARGIN_MS: u64 = 500;

/// The point by which this invocation must answer, if Lambda gave a deadline.
fn answer_by(deadline_ms: Option<u64>) -> Option<crate::clock::Instant> {
    let ms = deadline_ms?.saturating_sub(DEADLINE_MARGIN_MS);
    Some(crate::clock::instant_at_epoch_millis(ms))
}

/// Runs the function until Lambda stops it.
pub async fn run(app: App, surface: Surface) -> Result<(), Error> {
    let app = Arc::new(app);
    lambda_http::run(service_fn(move |req: Request| {
        let app = app.clone();
        async move { Ok::<_, Error>(serve(&app, surface, req).await) }
    }))
    .await
}

pub async fn serve(app: &App, surface: Surface, req: Request) -> Response<Body> {
    let request_id = req
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .unwrap_or_else(crate::ids::new_request_id);
    let deadline_ms = req.lambda_context_ref().map(|c| c.deadline);
    let stage = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.stage.clone(),
        _ => None,
    };
    let (mut parts, body) = req.into_parts();
    // lambda_http puts a named stage in front of the path (`/prod/login`); the routes don't have it.
    if let Some(stage) = stage.filter(|s| s != "$default") {
        let prefix = format!("/{stage}");
        let path = parts.uri.path();
        if let Some(rest) = path
            .strip_prefix(&prefix)
            .filter(|r| r.is_empty() || r.starts_with('/'))
        {
            let rest = if rest.is_empty() { "/" } else { rest };
            if let Ok(uri) = rest.parse() {
                parts.uri = uri;
            }
        }
    }
    let body = match body {
        Body::Empty => Bytes::new(),
        Body::Text(t) => Bytes::from(t),
        Body::Binary(b) => Bytes::from(b),
        _ => Bytes::new(),
    };
    let request = http::Request::from_parts(parts, body);
    let answer_by = answer_by(deadline_ms);
    // Upstream retries stop at the deadline (see `scope`), and an overrun is answered before it.
    let resp = crate::scope::run(answer_by, async {
        let handled = api::handle(app, surface, request, &request_id);
        match answer_by {
            None => handled.await,
            Some(by) => match tokio::time::timeout_at(by, handled).await {
                Ok(resp) => resp,
                Err(_) => {
                    let e = ApiError::out_of_time(crate::scope::slowest());
                    tracing::error!(
                        request_id,
                        code = e.code(),
                        "request ran out of time before the Lambda deadline"
                    );
                    e.to_response(&request_id)
                }
            },
        }
    })
    .await;
    let (parts, body) = resp.into_parts();
    let is_text = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.starts_with("text/"));
    let body = if body.is_empty() {
        Body::Empty
    } else if is_text {
        Body::Text(String::from_utf8_lossy(&body).into_owned())
    } else {
        Body::Binary(body.to_vec())
    };
    Response::from_parts(parts, body)
}
