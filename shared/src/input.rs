//! Reading request bodies: JSON is parsed whatever the content-type says (a missing header must
//! not turn into a silent `None`), and every failure names what is wrong.

use serde_json::Value;

use crate::error::ApiError;

/// Request bodies larger than this are refused before parsing.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

pub fn json_object(body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::InvalidRequest(format!(
            "request body is larger than {MAX_BODY_BYTES} bytes"
        )));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidRequest(
            "request body must be a JSON object".into(),
        ));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidRequest(format!("request body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::InvalidRequest(
            "request body must be a JSON object".into(),
        ));
    }
    Ok(v)
}

pub fn required_str<'a>(body: &'a Value, field: &str) -> Result<&'a str, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Err(ApiError::InvalidRequest(format!("{field} is required"))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::InvalidRequest(format!(
            "{field} must be a string"
        ))),
    }
}

/// A WeChat client-side code (`wx.login`, the getPhoneNumber button) in `body.code`: 1-128
/// printable ASCII characters, checked before WeChat sees it.
pub fn client_code<'a>(body: &'a Value, from: &str) -> Result<&'a str, ApiError> {
    let code = required_str(body, "code")?;
    if code.is_empty() || code.len() > 128 || !code.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::InvalidRequest(format!(
            "code must be the 1-128 printable characters {from} returned"
        )));
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_json_object() {
        for (body, needle) in [
            (&b""[..], "JSON object"),
            (b"[1]", "JSON object"),
            (b"{code:1}", "not valid JSON"),
        ] {
            let e = json_object(body).unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
        }
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert!(
            json_object(&big)
                .unwrap_err()
                .to_string()
                .contains("larger")
        );
        assert!(json_object(br#"{"a":1}"#).is_ok());
    }
}
