//! The HTTP surface, independent of how requests arrive (Lambda or the local server): routing,
//! one structured log line per request, and errors turned into the contract's JSON.

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;

use crate::app::App;
use crate::error::ApiError;
use crate::{qrcode, session};

pub type HttpRequest = http::Request<Bytes>;
pub type HttpResponse = http::Response<Bytes>;

/// Which routes a deployment unit serves: each Lambda serves its own; the local server all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `POST /login`, `GET /session`, `DELETE /session` (the login function).
    Sessions,
    /// `POST /qrcode`, `POST /phone` (the qrcode function).
    Codes,
    /// Every route.
    All,
}

/// Every route: method, path, and the function that serves it. openapi.yaml and template.yaml
/// describe the same set (tests/tests/routes.rs keeps the three in sync).
pub const ROUTES: &[(&str, &str, Surface)] = &[
    ("POST", "/login", Surface::Sessions),
    ("GET", "/session", Surface::Sessions),
    ("DELETE", "/session", Surface::Sessions),
    ("POST", "/qrcode", Surface::Codes),
    ("POST", "/phone", Surface::Codes),
];

impl Surface {
    fn includes(self, owner: Surface) -> bool {
        self == Surface::All || self == owner
    }
}

/// Whether `surface` serves `method path`; if not, the contract's answer: 400 for a known path
/// with the wrong method (naming the allowed ones), 404 otherwise.
fn check_route(surface: Surface, method: &Method, path: &str) -> Result<(), ApiError> {
    let same_path = || ROUTES.iter().filter(|(_, p, _)| *p == path);
    if same_path().any(|(m, _, s)| *m == method.as_str() && surface.includes(*s)) {
        return Ok(());
    }
    let allowed: Vec<&str> = same_path().map(|(m, _, _)| *m).collect();
    if allowed.is_empty() || allowed.contains(&method.as_str()) {
        return Err(ApiError::NotFound(format!("{method} {path}")));
    }
    Err(ApiError::InvalidRequest(format!(
        "method {method} is not allowed on {path}; use {}",
        allowed.join(", ")
    )))
}

/// Serves one request. Never fails: every error becomes a JSON response.
pub async fn handle(
    app: &App,
    surface: Surface,
    req: HttpRequest,
    request_id: &str,
) -> HttpResponse {
    let started = crate::clock::now();
    let method = req.method().clone();
    let path = normalise(req.uri().path()).to_string();
    let result = match check_route(surface, &method, &path) {
        Ok(()) => route(app, &method, &path, req).await,
        Err(e) => Err(e),
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(resp) => {
            tracing::info!(request_id, method = %method, path, status = resp.status().as_u16(), ms, "request served");
            resp
        }
        Err(e) => {
            let resp = e.to_response(request_id);
            let status = resp.status().as_u16();
            let detail = e.detail();
            if status >= 500 {
                tracing::error!(request_id, method = %method, path, status, code = e.code(), error = %detail, ms, "request failed");
            } else {
                tracing::info!(request_id, method = %method, path, status, code = e.code(), error = %detail, ms, "request refused");
            }
            resp
        }
    }
}

fn normalise(path: &str) -> &str {
    let p = path.trim_end_matches('/');
    if p.is_empty() { "/" } else { p }
}

async fn route(
    app: &App,
    method: &Method,
    path: &str,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (parts, body) = req.into_parts();
    match (path, method) {
        ("/login", &Method::POST) => Ok(json_ok(&session::login(app, &body).await?)),
        ("/session", &Method::GET) => {
            Ok(json_ok(&session::get_session(app, &parts.headers).await?))
        }
        ("/session", &Method::DELETE) => {
            session::logout(app, &parts.headers).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        ("/qrcode", &Method::POST) => qrcode::qrcode(app, &parts.headers, &body).await,
        ("/phone", &Method::POST) => Ok(json_ok(&qrcode::phone(app, &parts.headers, &body).await?)),
        _ => Err(ApiError::NotFound(format!("{method} {path}"))),
    }
}

pub fn json_response(status: StatusCode, body: &Value) -> HttpResponse {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(Bytes::from(
            serde_json::to_vec(body).expect("JSON values serialise"),
        ))
        .expect("static headers are valid")
}

fn json_ok(body: &Value) -> HttpResponse {
    json_response(StatusCode::OK, body)
}

fn empty(status: StatusCode) -> HttpResponse {
    http::Response::builder()
        .status(status)
        .body(Bytes::new())
        .expect("static headers are valid")
}
