//! The HTTP surface: one axum [`Router`] for every function and for the local server, and one
//! module per route: its typed request (newtypes that validate, so a bad request never reaches
//! WeChat), its response, and its handler.
//!
//! Each Lambda function serves [`router`] for its own [`Surface`] through [`crate::lambda::run`]; the
//! local server serves [`Surface::All`] with `axum::serve`. Every other method or path gets the
//! contract's answer from [`fallback`]: 405 with `Allow` on a known path, 404 elsewhere. The one
//! log line per request and the deadline guard are a layer ([`crate::http::layer`]).

pub mod content;
pub mod links;
pub mod login;
pub mod me;
pub mod phone;
pub mod push;
pub mod qrcode;
pub mod session;
pub mod subscriptions;
pub mod types;

use std::sync::Arc;

use axum::Router;
use axum::routing::{MethodRouter, get, post};
use http::{Method, Uri};

use crate::app::App;
use crate::error::ApiError;

/// Which routes a deployment unit serves: each Lambda serves its own; the local server all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `POST /login`, `GET /session`, `DELETE /session`, `GET /me`, `PUT /me`,
    /// `GET /subscriptions` (the login function).
    Sessions,
    /// `POST /qrcode`, `POST /phone`, `POST /content/check`, `POST /media/check`,
    /// `GET /media/check/{trace_id}`, `POST /links` (the qrcode function: WeChat calls on the
    /// central access token).
    Codes,
    /// `GET /push`, `POST /push` (the push function).
    Push,
    /// Every route.
    All,
}

impl Surface {
    /// The function that serves it (the metrics' `function` dimension).
    pub fn function_name(self) -> &'static str {
        match self {
            Surface::Sessions => "login",
            Surface::Codes => "qrcode",
            Surface::Push => "push",
            Surface::All => "local-server",
        }
    }

    fn includes(self, owner: Surface) -> bool {
        self == Surface::All || self == owner
    }
}

/// Every route: method, path, and the function that serves it. [`router`] mounts exactly these
/// (a unit test checks it); openapi.yaml and template.yaml describe the same set
/// (tests/tests/suite/routes.rs keeps the three in sync).
pub const ROUTES: &[(&str, &str, Surface)] = &[
    ("POST", "/login", Surface::Sessions),
    ("GET", "/session", Surface::Sessions),
    ("DELETE", "/session", Surface::Sessions),
    ("GET", "/me", Surface::Sessions),
    ("PUT", "/me", Surface::Sessions),
    ("GET", "/subscriptions", Surface::Sessions),
    ("POST", "/qrcode", Surface::Codes),
    ("POST", "/phone", Surface::Codes),
    ("POST", "/content/check", Surface::Codes),
    ("POST", "/media/check", Surface::Codes),
    ("GET", "/media/check/{trace_id}", Surface::Codes),
    ("POST", "/links", Surface::Codes),
    ("GET", "/push", Surface::Push),
    ("POST", "/push", Surface::Push),
];

/// The router of `surface`, with the request layer and the contract's fallback.
pub fn router(app: Arc<App>, surface: Surface) -> Router {
    let mut r: Router<Arc<App>> = Router::new();
    if surface.includes(Surface::Sessions) {
        r = mount(r, "/login", post(login::login));
        r = mount(r, "/session", get(session::get).delete(session::delete));
        r = mount(r, "/me", get(me::get).put(me::put));
        r = mount(r, "/subscriptions", get(subscriptions::get));
    }
    if surface.includes(Surface::Codes) {
        r = mount(r, "/qrcode", post(qrcode::qrcode));
        r = mount(r, "/phone", post(phone::phone));
        r = mount(r, "/content/check", post(content::check_content));
        r = mount(r, "/media/check", post(content::check_media));
        r = mount(r, "/media/check/{trace_id}", get(content::media_result));
        r = mount(r, "/links", post(links::create));
    }
    if surface.includes(Surface::Push) {
        r = mount(r, "/push", get(push::verify).post(push::receive));
    }
    r.fallback(fallback)
        .method_not_allowed_fallback(fallback)
        .layer(axum::middleware::from_fn(crate::http::layer::request))
        .with_state(app)
}

/// Mounts `route` at `path` and at `path/` (a trailing slash is the same route).
fn mount(r: Router<Arc<App>>, path: &str, route: MethodRouter<Arc<App>>) -> Router<Arc<App>> {
    r.route(path, route.clone())
        .route(&format!("{path}/"), route)
}

/// The contract's answer for everything the router does not serve: 405 `method_not_allowed`
/// (with `Allow`) for a known path and another method, 404 `not_found` otherwise (also for a
/// route of another function: API Gateway's `$default` route sends strays to this one).
pub async fn fallback(method: Method, uri: Uri) -> ApiError {
    let path = normalise(uri.path());
    let allow: Vec<&'static str> = ROUTES
        .iter()
        .filter(|(_, p, _)| matches(p, path))
        .map(|(m, _, _)| *m)
        .collect();
    if allow.is_empty() || allow.contains(&method.as_str()) {
        ApiError::NotFound(format!("{method} {path}"))
    } else {
        ApiError::MethodNotAllowed {
            method: method.to_string(),
            path: path.to_string(),
            allow,
        }
    }
}

/// Whether `path` is an instance of the route `pattern` (`{name}` matches one segment).
fn matches(pattern: &str, path: &str) -> bool {
    let (mut p, mut q) = (pattern.split('/'), path.split('/'));
    loop {
        match (p.next(), q.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a.starts_with('{') && a.ends_with('}') && !b.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

fn normalise(path: &str) -> &str {
    let p = path.trim_end_matches('/');
    if p.is_empty() { "/" } else { p }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use tower::ServiceExt;

    fn app() -> Arc<App> {
        let config = crate::Config::from_lookup(|k| match k {
            "WECHAT_APPID" => Some("wx1".into()),
            "WECHAT_SECRET" => Some("s".into()),
            "WECHAT_API_BASE" => Some("http://127.0.0.1:9".into()),
            "WECHAT_PUSH_TOKEN" => Some("push-token".into()),
            _ => None,
        })
        .unwrap();
        Arc::new(App::new(config, Arc::new(MemoryStore::new())))
    }

    async fn status(r: &Router, method: &str, path: &str) -> (u16, Option<String>) {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = r.clone().oneshot(req).await.unwrap();
        let allow = resp
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_string());
        (resp.status().as_u16(), allow)
    }

    #[tokio::test]
    async fn each_surface_mounts_exactly_its_routes_and_answers_the_rest() {
        for surface in [
            Surface::Sessions,
            Surface::Codes,
            Surface::Push,
            Surface::All,
        ] {
            let r = router(app(), surface);
            for (m, p, owner) in ROUTES {
                let (s, _) = status(&r, m, p).await;
                if surface.includes(*owner) {
                    // Served: no token, no body or no signature, so 400, 401 or 403, never the
                    // fallback's answers.
                    assert!(s == 400 || s == 401 || s == 403, "{surface:?} {m} {p}: {s}");
                } else {
                    assert_eq!(s, 404, "{surface:?} {m} {p}");
                }
            }
            let (s, allow) = status(&r, "PUT", "/session").await;
            assert_eq!((s, allow.as_deref()), (405, Some("GET, DELETE")));
            let (s, allow) = status(&r, "GET", "/qrcode/").await;
            assert_eq!((s, allow.as_deref()), (405, Some("POST")));
            assert_eq!(status(&r, "GET", "/nope").await.0, 404);
        }
    }
}
