//! JSON answers: the one place that sets their headers (`application/json`, never cached).

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;

/// A JSON answer: `application/json`, never cached.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    (
        status,
        [
            (http::header::CONTENT_TYPE, "application/json"),
            (http::header::CACHE_CONTROL, "no-store"),
        ],
        serde_json::to_vec(body).expect("responses serialise"),
    )
        .into_response()
}

/// A 200 JSON answer of a route.
pub struct Reply<T>(pub T);

impl<T: Serialize> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        json_response(StatusCode::OK, &self.0)
    }
}
