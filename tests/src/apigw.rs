//! API Gateway HTTP API (payload format 2.0) events and responses, so tests
//! invoke a function with exactly what API Gateway would send and read its
//! answer the way API Gateway would.
//!
//! What API Gateway does, and these builders mimic:
//! - header names are lowercased; repeated headers are joined with `,`;
//! - the `cookie` header is removed and split into the `cookies` array;
//! - the query string goes to `rawQueryString` (as sent) and to
//!   `queryStringParameters` (decoded, repeated keys joined with `,`);
//! - a binary body is base64 with `isBase64Encoded: true`;
//! - for a named stage (not `$default`) the path carries the stage prefix
//!   (see [`with_stage`]).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use crate::moto::random_hex;

/// Account id in `requestContext.accountId`.
pub const ACCOUNT_ID: &str = "123456789012";
/// API id in `requestContext.apiId` (and in the domain name).
pub const API_ID: &str = "e2etestapi";
/// The custom-domain-less host API Gateway serves the API on.
pub const DOMAIN_NAME: &str = "e2etestapi.execute-api.us-east-1.amazonaws.com";
/// Client address in `requestContext.http.sourceIp` and `x-forwarded-for`.
pub const SOURCE_IP: &str = "203.0.113.7";
/// User agent used when the test passes no `user-agent` header.
pub const DEFAULT_USER_AGENT: &str = "e2e-tests/1.0";

/// Builds a realistic API Gateway HTTP API payload 2.0 event.
///
/// `path` may include a query string (`/items?limit=10&tag=a`). `headers`
/// are as a client would send them (any case; a `cookie` header ends up in
/// `cookies`); `host`, `user-agent`, `x-forwarded-*`, `x-amzn-trace-id` and
/// `content-length` are added when absent, as API Gateway does. With
/// `base64`, `body` is sent base64-encoded (`isBase64Encoded: true`);
/// otherwise it must be UTF-8.
///
/// # Panics
/// If `body` is not UTF-8 and `base64` is false.
pub fn v2_event(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    base64: bool,
) -> Value {
    let method = method.to_ascii_uppercase();
    let (raw_path, raw_query) = path.split_once('?').unwrap_or((path, ""));

    let mut header_map = Map::new();
    let mut cookies: Vec<String> = Vec::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        if name == "cookie" {
            cookies.extend(
                value
                    .split(';')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_string),
            );
            continue;
        }
        match header_map.get_mut(&name) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(value);
            }
            _ => {
                header_map.insert(name, Value::String((*value).to_string()));
            }
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let defaults = [
        ("host", DOMAIN_NAME.to_string()),
        ("user-agent", DEFAULT_USER_AGENT.to_string()),
        ("x-forwarded-for", SOURCE_IP.to_string()),
        ("x-forwarded-port", "443".to_string()),
        ("x-forwarded-proto", "https".to_string()),
        (
            "x-amzn-trace-id",
            format!("Root=1-{:08x}-{}", now.as_secs(), random_hex(12)),
        ),
    ];
    for (name, value) in defaults {
        header_map
            .entry(name)
            .or_insert_with(|| Value::String(value));
    }
    if let Some(body) = body {
        header_map
            .entry("content-length")
            .or_insert_with(|| Value::String(body.len().to_string()));
    }
    let user_agent = header_map["user-agent"].as_str().unwrap_or("").to_string();

    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": header_map,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": DOMAIN_NAME,
            "domainPrefix": API_ID,
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": SOURCE_IP,
                "userAgent": user_agent,
            },
            // API Gateway's request ids are 16 base64 chars ending in '='.
            "requestId": format!("{}=", &BASE64.encode(random_hex(8))[..15]),
            "routeKey": "$default",
            "stage": "$default",
            "time": clf_time(now.as_secs()),
            "timeEpoch": now.as_millis() as u64,
        },
        "isBase64Encoded": false,
    });
    let obj = event.as_object_mut().expect("object");
    if !cookies.is_empty() {
        obj.insert("cookies".into(), json!(cookies));
    }
    let params = query_parameters(raw_query);
    if !params.is_empty() {
        obj.insert("queryStringParameters".into(), Value::Object(params));
    }
    if let Some(body) = body {
        let (text, encoded) = if base64 {
            (BASE64.encode(body), true)
        } else {
            let text = std::str::from_utf8(body)
                .expect("v2_event: non-UTF-8 body needs base64 = true")
                .to_string();
            (text, false)
        };
        obj.insert("body".into(), Value::String(text));
        obj.insert("isBase64Encoded".into(), Value::Bool(encoded));
    }
    event
}

/// Moves `event` to a named stage, as a request to
/// `https://host/{stage}/path` arrives from API Gateway: sets
/// `requestContext.stage` and prefixes `rawPath` and
/// `requestContext.http.path` with `/{stage}`. `$default` leaves paths alone.
/// `POST /login` with `{"code": code}` as a JSON request.
pub fn login_event(code: &str) -> Value {
    let body = serde_json::json!({ "code": code }).to_string();
    v2_event(
        "POST",
        "/login",
        &[("content-type", "application/json")],
        Some(body.as_bytes()),
        false,
    )
}

pub fn with_stage(mut event: Value, stage: &str) -> Value {
    event["requestContext"]["stage"] = Value::String(stage.to_string());
    if stage != "$default" {
        let prefix = |path: &mut Value| {
            let old = path.as_str().unwrap_or("/");
            *path = Value::String(format!("/{stage}{old}"));
        };
        prefix(&mut event["rawPath"]);
        prefix(&mut event["requestContext"]["http"]["path"]);
    }
    event
}

/// A function's answer as API Gateway (payload 2.0) reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct V2Response {
    pub status: u16,
    /// Header names lowercased; values as strings.
    pub headers: Map<String, Value>,
    /// `Set-Cookie` values, from the `cookies` field (where lambda_http puts
    /// them for payload 2.0).
    pub cookies: Vec<String>,
    /// The body, base64-decoded when `isBase64Encoded`.
    pub body: Vec<u8>,
    pub is_base64: bool,
    /// The `body` field exactly as the function returned it.
    pub raw_body: String,
}

impl V2Response {
    /// Parses a function's response; panics with the raw JSON on anything
    /// API Gateway would reject (a test harness wants the message, not a
    /// `Result`). See [`V2Response::try_parse`].
    pub fn parse(response: &Value) -> V2Response {
        Self::try_parse(response)
            .unwrap_or_else(|e| panic!("invalid payload 2.0 response ({e}): {response}"))
    }

    /// Parses a function's response. Like API Gateway, a JSON value without
    /// `statusCode` is taken as a 200 `application/json` response whose
    /// body is that JSON.
    pub fn try_parse(response: &Value) -> Result<V2Response, String> {
        let Some(obj) = response
            .as_object()
            .filter(|o| o.contains_key("statusCode"))
        else {
            let raw_body = response.to_string();
            let mut headers = Map::new();
            headers.insert("content-type".into(), "application/json".into());
            return Ok(V2Response {
                status: 200,
                headers,
                cookies: Vec::new(),
                body: raw_body.clone().into_bytes(),
                is_base64: false,
                raw_body,
            });
        };
        let status = obj["statusCode"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .filter(|s| (100..=599).contains(s))
            .ok_or("statusCode is not an HTTP status")?;
        let mut headers = Map::new();
        if let Some(h) = obj.get("headers").filter(|h| !h.is_null()) {
            for (name, value) in h.as_object().ok_or("headers is not an object")? {
                let value = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                headers.insert(name.to_ascii_lowercase(), Value::String(value));
            }
        }
        let cookies = match obj.get("cookies") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|c| {
                    c.as_str()
                        .map(str::to_string)
                        .ok_or("cookie is not a string")
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("cookies is not an array".into()),
        };
        let is_base64 = obj
            .get("isBase64Encoded")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let raw_body = match obj.get("body") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err("body is not a string".into()),
        };
        let body = if is_base64 {
            BASE64
                .decode(&raw_body)
                .map_err(|e| format!("body is not base64: {e}"))?
        } else {
            raw_body.clone().into_bytes()
        };
        Ok(V2Response {
            status,
            headers,
            cookies,
            body,
            is_base64,
            raw_body,
        })
    }

    /// The body as JSON; panics (showing the body) if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(Value::as_str)
    }
}

/// `queryStringParameters` as API Gateway builds it: decoded, repeated keys
/// joined with `,`.
fn query_parameters(raw_query: &str) -> Map<String, Value> {
    let mut params = Map::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k), percent_decode(v));
        match params.get_mut(&k) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                params.insert(k, Value::String(v));
            }
        }
    }
    params
}

/// Decodes `%XX` escapes and `+` (lossy on invalid UTF-8).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `12/Mar/2020:19:03:58 +0000`, the format of `requestContext.time`.
fn clf_time(epoch_secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (epoch_secs / 86_400) as i64;
    let secs = epoch_secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpResponse;
    use lambda_http::http::{HeaderMap, HeaderValue};
    use lambda_http::request::RequestContext;
    use lambda_http::{Body, RequestExt};

    #[test]
    fn event_has_the_payload_2_0_shape() {
        let e = v2_event(
            "post",
            "/items?limit=10&tag=a&tag=b%20c",
            &[
                ("Content-Type", "application/json"),
                ("X-Multi", "1"),
                ("x-multi", "2"),
                ("Cookie", "sid=abc; theme=dark"),
            ],
            Some(br#"{"a":1}"#),
            false,
        );
        assert_eq!(e["version"], "2.0");
        assert_eq!(e["routeKey"], "$default");
        assert_eq!(e["rawPath"], "/items");
        assert_eq!(e["rawQueryString"], "limit=10&tag=a&tag=b%20c");
        assert_eq!(e["queryStringParameters"]["tag"], "a,b c");
        assert_eq!(e["headers"]["content-type"], "application/json");
        assert_eq!(e["headers"]["x-multi"], "1,2");
        assert_eq!(e["headers"]["content-length"], "7");
        assert!(e["headers"].get("cookie").is_none());
        assert_eq!(e["cookies"], json!(["sid=abc", "theme=dark"]));
        assert_eq!(e["body"], r#"{"a":1}"#);
        assert_eq!(e["isBase64Encoded"], false);
        let rc = &e["requestContext"];
        assert_eq!(rc["http"]["method"], "POST");
        assert_eq!(rc["http"]["path"], "/items");
        assert_eq!(rc["http"]["sourceIp"], SOURCE_IP);
        assert_eq!(rc["http"]["userAgent"], DEFAULT_USER_AGENT);
        assert_eq!(rc["stage"], "$default");
        assert_eq!(rc["domainName"], DOMAIN_NAME);
        assert_eq!(rc["requestId"].as_str().unwrap().len(), 16);
        assert!(rc["timeEpoch"].as_u64().unwrap() > 1_600_000_000_000);
    }

    #[test]
    fn binary_body_is_base64() {
        let e = v2_event("PUT", "/img", &[], Some(&[0, 159, 146, 150]), true);
        assert_eq!(e["isBase64Encoded"], true);
        assert_eq!(e["body"], "AJ+Slg==");
        let bare = v2_event("GET", "/", &[], None, false);
        assert!(bare.get("body").is_none());
        assert!(bare.get("queryStringParameters").is_none());
        assert!(bare.get("cookies").is_none());
    }

    #[test]
    fn stage_prefixes_paths() {
        let e = with_stage(v2_event("GET", "/a/b?x=1", &[], None, false), "prod");
        assert_eq!(e["rawPath"], "/prod/a/b");
        assert_eq!(e["requestContext"]["http"]["path"], "/prod/a/b");
        assert_eq!(e["requestContext"]["stage"], "prod");
        assert_eq!(e["rawQueryString"], "x=1");
    }

    /// The events deserialize in lambda_http (the functions' runtime) into
    /// the request the handler is meant to see.
    #[test]
    fn lambda_http_accepts_the_events() {
        let e = v2_event(
            "POST",
            "/login?next=%2Fhome",
            &[("Content-Type", "application/json"), ("Cookie", "a=1; b=2")],
            Some(b"{\"code\":\"x\"}"),
            false,
        );
        let req = lambda_http::request::from_str(&e.to_string()).expect("lambda_http parses");
        assert_eq!(req.method(), "POST");
        assert_eq!(req.uri().path(), "/login");
        assert_eq!(req.uri().query(), Some("next=%2Fhome"));
        assert_eq!(
            req.query_string_parameters_ref()
                .and_then(|q| q.first("next")),
            Some("/home")
        );
        assert_eq!(req.headers()["cookie"], "a=1; b=2");
        assert_eq!(req.headers()["content-type"], "application/json");
        assert_eq!(req.body().as_ref(), b"{\"code\":\"x\"}");
        assert!(matches!(
            req.request_context_ref(),
            Some(RequestContext::ApiGatewayV2(_))
        ));

        let bin = v2_event("PUT", "/img", &[], Some(&[0, 255]), true);
        let req = lambda_http::request::from_str(&bin.to_string()).unwrap();
        assert_eq!(req.body().as_ref(), &[0, 255]);

        // lambda_http keeps the stage prefix in the URI path.
        let staged = with_stage(v2_event("GET", "/x", &[], None, false), "prod");
        let req = lambda_http::request::from_str(&staged.to_string()).unwrap();
        assert_eq!(req.uri().path(), "/prod/x");
        assert_eq!(req.raw_http_path(), "/prod/x");
    }

    /// Parses what lambda_http actually serializes for payload 2.0.
    #[test]
    fn parses_lambda_http_responses() {
        let mut headers = HeaderMap::new();
        headers.insert("Content-Type", HeaderValue::from_static("image/png"));
        let mut r = ApiGatewayV2httpResponse::default();
        r.status_code = 201;
        r.headers = headers;
        r.body = Some(Body::Binary(vec![1, 2, 3]));
        r.is_base64_encoded = true;
        r.cookies = vec!["sid=1; HttpOnly".into()];
        let parsed = V2Response::parse(&serde_json::to_value(&r).unwrap());
        assert_eq!(parsed.status, 201);
        assert_eq!(parsed.header("Content-Type"), Some("image/png"));
        assert_eq!(parsed.body, [1, 2, 3]);
        assert!(parsed.is_base64);
        assert_eq!(parsed.raw_body, "AQID");
        assert_eq!(parsed.cookies, ["sid=1; HttpOnly"]);

        let mut r = ApiGatewayV2httpResponse::default();
        r.status_code = 200;
        r.body = Some(Body::Text(r#"{"ok":true}"#.into()));
        let parsed = V2Response::parse(&serde_json::to_value(&r).unwrap());
        assert_eq!(parsed.json(), json!({"ok": true}));
        assert_eq!(parsed.text(), r#"{"ok":true}"#);

        let mut r = ApiGatewayV2httpResponse::default();
        r.status_code = 204;
        let parsed = V2Response::parse(&serde_json::to_value(&r).unwrap());
        assert!(parsed.body.is_empty());
    }

    #[test]
    fn bare_json_is_an_implicit_200() {
        let parsed = V2Response::parse(&json!({"hello": "world"}));
        assert_eq!(parsed.status, 200);
        assert_eq!(parsed.header("content-type"), Some("application/json"));
        assert_eq!(parsed.json(), json!({"hello": "world"}));
        assert!(V2Response::try_parse(&json!({"statusCode": "x"})).is_err());
    }

    #[test]
    fn helpers() {
        assert_eq!(clf_time(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(clf_time(1_584_039_838), "12/Mar/2020:19:03:58 +0000");
        assert_eq!(clf_time(951_782_400), "29/Feb/2000:00:00:00 +0000");
        assert_eq!(percent_decode("a%2Fb+c%zz%4"), "a/b c%zz%4");
    }
}
