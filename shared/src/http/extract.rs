//! Extractors: a JSON body read whatever the content type says (a missing header must not turn
//! into a silent "no body"), deserialised into a typed request whose rejections name the field.

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Request bodies larger than this are refused (413) before parsing.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A request body as `T`. Not an object, not JSON, a field missing, of the wrong type or invalid:
/// 400 `invalid_request`, naming the field; over [`MAX_BODY_BYTES`]: 413 `payload_too_large`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req.into_body(), MAX_BODY_BYTES).await?;
        parse(&bytes).map(JsonBody)
    }
}

/// The whole body, up to `limit` bytes (413 `payload_too_large` beyond).
pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if is_length_limit(&e) {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::InvalidRequest(format!("the request body could not be read: {e}"))
        }
    })
}

/// Whether reading the body failed because it passed the cap (not because the client went away).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Parses a request body (a JSON object) into `T`.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let bad = |m: String| ApiError::InvalidRequest(m);
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        // JSON, but not an object; or not JSON at all.
        Some(_) => {
            return Err(bad(
                match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                    Err(e) => format!("request body is not valid JSON: {e}"),
                    Ok(_) => "request body must be a JSON object".into(),
                },
            ));
        }
        None => return Err(bad("request body must be a JSON object".into())),
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| bad(describe(&e)))?;
    de.end()
        .map_err(|e| bad(format!("request body is not valid JSON: {e}")))?;
    Ok(value)
}

/// One line naming the field at fault, e.g. `line_color.b is required`, `width: invalid type:
/// floating point `300.5`, expected u64`.
fn describe(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let inner = e.inner();
    if inner.is_syntax() || inner.is_eof() {
        return format!("request body is not valid JSON: {inner}");
    }
    let full = inner.to_string();
    let msg = full.split(" at line ").next().unwrap_or(&full);
    let path = e.path().to_string();
    let at = |field: &str| {
        if path == "." {
            field.to_string()
        } else {
            format!("{path}.{field}")
        }
    };
    if let Some(field) = msg
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        return format!("{} is required", at(field));
    }
    if msg.starts_with("unknown field") {
        // The path ends in the unknown field itself: name the object it was found in.
        return match path.rsplit_once('.') {
            Some((parent, _)) => format!("{parent}: {msg}"),
            None => msg.to_string(),
        };
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        let field = if path == "." { "request body" } else { &path };
        if rest.starts_with("null,") {
            return format!("{field} is required");
        }
        let expected = rest.split(", expected ").nth(1).unwrap_or("another type");
        return format!("{field} must be {}", friendly(expected));
    }
    if path == "." || msg.starts_with(&path) {
        msg.to_string()
    } else {
        format!("{path}: {msg}")
    }
}

/// serde's name of an expected type, as a client reads it.
fn friendly(expected: &str) -> &str {
    match expected {
        "u8" => "a whole number from 0 to 255",
        "u16" | "u32" | "u64" | "i64" => "a whole number",
        e if e.starts_with("struct ") || e.starts_with("a map") => "an object",
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        a: String,
        inner: Option<Inner>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        x: u8,
    }

    fn err(body: &str) -> String {
        parse::<T>(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn every_rejection_names_the_field() {
        assert_eq!(err(""), "request body must be a JSON object");
        assert_eq!(err("[1]"), "request body must be a JSON object");
        assert!(err("{a:1}").starts_with("request body is not valid JSON"));
        assert!(err(r#"{"a":"x"} x"#).starts_with("request body is not valid JSON"));
        assert_eq!(err("{}"), "a is required");
        assert_eq!(err(r#"{"a":1}"#), "a must be a string");
        assert_eq!(err(r#"{"a":null}"#), "a is required");
        assert_eq!(err(r#"{"a":"x","inner":5}"#), "inner must be an object");
        assert_eq!(
            err(r#"{"a":"x","inner":{"x":"1"}}"#),
            "inner.x must be a whole number from 0 to 255"
        );
        assert!(err("code=abc").starts_with("request body is not valid JSON"));
        assert_eq!(err(r#""abc""#), "request body must be a JSON object");
        assert_eq!(err("null"), "request body must be a JSON object");
        assert_eq!(err(r#"{"a":"x","inner":{}}"#), "inner.x is required");
        assert!(err(r#"{"a":"x","inner":{"x":300}}"#).starts_with("inner.x: invalid value"));
        assert!(err(r#"{"a":"x","b":1}"#).starts_with("unknown field `b`"));
        assert!(err(r#"{"a":"x","inner":{"x":1,"y":2}}"#).starts_with("inner: unknown field `y`"));
        assert!(parse::<T>(br#" {"a":"x","inner":null} "#).is_ok());
    }
}
