//! API Gateway HTTP API (payload 2.0) events in, `http` requests out, and the router's answers
//! back as API Gateway reads them, without `lambda_http`'s conversions: those parse the event into
//! `aws_lambda_events`' owned types (every header and context field a `String`, the query parsed
//! into a map nobody reads), build an absolute URI through a URL parse, and box the response body
//! twice; together about a tenth of a warm login's CPU here (README, Performance).
//!
//! What `lambda_http` did and is kept: the method, path and query from `rawPath` and
//! `rawQueryString`; the headers as given (API Gateway already joins repeated ones with commas);
//! the `cookies` joined into one `Cookie` header; a base64 body (`isBase64Encoded`) decoded. On
//! the way back: `Set-Cookie` headers go to `cookies`, and the body is text for `text/*`, JSON,
//! JavaScript, XML and YAML (also `+json`, `+xml`, `+yaml`) or when there is no content type, and
//! base64 otherwise or whenever a `Content-Encoding` is set.
//!
//! What changed: a named stage is taken off the path here (`/prod/login` → `/login`), where
//! `lambda_http` put it on and the router took it off again; a header API Gateway could not have
//! sent (an invalid name or value) is dropped rather than failing the invocation; a body that is
//! not valid base64 is answered 400 (`invalid_request`) where `lambda_http` panicked; a header
//! given several times in the answer is sent comma-joined, where `lambda_http` kept the first.

use std::borrow::Cow;
use std::fmt;

use axum::body::Body;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;
use lambda_http::lambda_runtime::Diagnostic;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::http::layer::Unreadable;

/// A string of the event, borrowed from it unless it had escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// The event's `headers` (an object of strings), in their order.
#[derive(Default)]
struct Headers<'a>(Vec<(Str<'a>, Str<'a>)>);

impl<'de: 'a, 'a> Deserialize<'de> for Headers<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Headers<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(entry) = map.next_entry::<Str, Str>()? {
                    out.push(entry);
                }
                Ok(Headers(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// What of a payload 2.0 event the router needs; everything else is skipped unread.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    #[serde(borrow, default, alias = "path")]
    raw_path: Option<Str<'a>>,
    #[serde(borrow, default)]
    raw_query_string: Option<Str<'a>>,
    #[serde(borrow, default)]
    cookies: Option<Vec<Str<'a>>>,
    #[serde(borrow, default)]
    headers: Option<Headers<'a>>,
    #[serde(borrow, default)]
    body: Option<Str<'a>>,
    #[serde(default)]
    is_base64_encoded: Option<bool>,
    #[serde(borrow)]
    request_context: Context<'a>,
}

#[derive(Deserialize)]
struct Context<'a> {
    #[serde(borrow, default)]
    stage: Option<Str<'a>>,
    #[serde(borrow)]
    http: HttpContext<'a>,
}

#[derive(Deserialize)]
struct HttpContext<'a> {
    #[serde(borrow)]
    method: Str<'a>,
}

/// The request of payload 2.0 event `event`, or the invocation's error saying why it is not one
/// (where it did not fit, never its content).
pub fn request(event: &[u8]) -> Result<Request<Body>, Diagnostic> {
    // Read again only to say where it did not fit.
    let e: Event = match serde_json::from_slice(event) {
        Ok(e) => e,
        Err(_) => super::parse::<Event>(event)?,
    };
    // An empty method is GET, as `aws_lambda_events` reads it.
    let method = match &*e.request_context.http.method.0 {
        "" => Ok(Method::GET),
        m => Method::from_bytes(m.as_bytes()),
    }
    .map_err(|_| {
        super::diagnostic(
            "InvalidEvent",
            &"the event's requestContext.http.method is not an HTTP method",
        )
    })?;
    let mut unreadable = None;
    let raw_path = e.raw_path.as_ref().map_or("/", |p| &p.0);
    let stage = e.request_context.stage.as_ref().map(|s| &*s.0);
    let path = without_stage(raw_path, stage);
    let query = e.raw_query_string.as_ref().map_or("", |q| &q.0);
    let target = if query.is_empty() {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(format!("{path}?{query}"))
    };
    // API Gateway passes on characters a URI may not hold (a raw `"`, say): those are
    // percent-encoded, as a URL parser would.
    let uri = http::Uri::try_from(&*target)
        .or_else(|_| http::Uri::try_from(percent_encoded(&target)))
        .unwrap_or_else(|_| {
            unreadable = Some(Unreadable("the request path is not a valid URI"));
            http::Uri::from_static("/")
        });

    let mut headers = HeaderMap::with_capacity(e.headers.as_ref().map_or(0, |h| h.0.len()) + 1);
    for (name, value) in e.headers.iter().flat_map(|h| &h.0) {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.0.as_bytes()),
            HeaderValue::from_str(&value.0),
        ) {
            headers.append(n, v);
        }
    }
    if let Some(cookies) = e.cookies.as_ref().filter(|c| !c.is_empty()) {
        let joined = cookies.iter().map(|c| &*c.0).collect::<Vec<_>>().join("; ");
        if let Ok(v) = HeaderValue::from_str(&joined) {
            headers.insert(COOKIE, v);
        }
    }
    let body = match e.body {
        None => Body::empty(),
        Some(b) if e.is_base64_encoded == Some(true) => match BASE64.decode(b.0.as_bytes()) {
            Ok(bytes) => Body::from(bytes),
            Err(_) => {
                unreadable = Some(Unreadable(
                    "the request body is marked base64 (isBase64Encoded) but is not valid base64",
                ));
                Body::empty()
            }
        },
        Some(b) => match b.0 {
            Cow::Borrowed(s) => Body::from(bytes::Bytes::copy_from_slice(s.as_bytes())),
            Cow::Owned(s) => Body::from(s),
        },
    };
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    if let Some(u) = unreadable {
        request.extensions_mut().insert(u);
    }
    Ok(request)
}

/// `target` with every byte a URI may not hold percent-encoded.
fn percent_encoded(target: &str) -> String {
    let mut out = String::with_capacity(target.len() + 16);
    for b in target.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/prod/login` → `/login` when the request came through the stage `prod` (API Gateway puts a
/// named stage in `rawPath`; `$default` is not in it).
pub fn without_stage<'p>(path: &'p str, stage: Option<&str>) -> &'p str {
    let Some(stage) = stage.filter(|s| !s.is_empty() && *s != "$default") else {
        return path;
    };
    match path.strip_prefix('/').and_then(|p| p.strip_prefix(stage)) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

/// The router's answer as payload 2.0 JSON.
pub async fn response(answer: Response<Body>) -> Result<Vec<u8>, String> {
    let (parts, body) = answer.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| format!("the answer's body could not be read: {e}"))?
        .to_bytes();
    let text = is_text(&parts.headers);
    let body = if bytes.is_empty() && text {
        None
    } else if text {
        Some(String::from_utf8_lossy(&bytes))
    } else {
        Some(Cow::Owned(BASE64.encode(&bytes)))
    };
    let out = Out {
        status_code: parts.status.as_u16(),
        headers: OutHeaders(&parts.headers),
        body: body.as_deref(),
        is_base64_encoded: !text,
        cookies: OutCookies(&parts.headers),
    };
    serde_json::to_vec(&out).map_err(|e| format!("the answer could not be written: {e}"))
}

/// Text unless a content encoding is set or the content type is not a textual one (`lambda_http`'s
/// rule, which API Gateway's binary handling expects).
fn is_text(headers: &HeaderMap) -> bool {
    if headers.contains_key(CONTENT_ENCODING) {
        return false;
    }
    let Some(ct) = headers.get(CONTENT_TYPE) else {
        return true;
    };
    let ct = ct.to_str().unwrap_or_default();
    const PREFIXES: [&str; 5] = [
        "text",
        "application/json",
        "application/javascript",
        "application/xml",
        "application/yaml",
    ];
    if PREFIXES.iter().any(|p| ct.starts_with(p)) {
        return true;
    }
    let mime = ct.trim().split(';').next().unwrap_or_default();
    if ["+xml", "+yaml", "+json"].iter().any(|s| mime.ends_with(s)) {
        return true;
    }
    headers
        .get("x-lambda-http-content-encoding")
        .is_some_and(|v| v == "text")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Out<'a> {
    status_code: u16,
    headers: OutHeaders<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    is_base64_encoded: bool,
    cookies: OutCookies<'a>,
}

/// Every header but `Set-Cookie`, repeated ones comma-joined.
struct OutHeaders<'a>(&'a HeaderMap);

impl Serialize for OutHeaders<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for name in self.0.keys() {
            if name == SET_COOKIE {
                continue;
            }
            let mut values = self
                .0
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()));
            let first = values.next().unwrap_or_default();
            match values.next() {
                None => map.serialize_entry(name.as_str(), &first)?,
                Some(second) => {
                    let mut joined = format!("{first},{second}");
                    for v in values {
                        joined.push(',');
                        joined.push_str(&v);
                    }
                    map.serialize_entry(name.as_str(), &joined)?
                }
            }
        }
        map.end()
    }
}

/// The `Set-Cookie` values, where payload 2.0 wants them.
struct OutCookies<'a>(&'a HeaderMap);

impl Serialize for OutCookies<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.0
                .get_all(SET_COOKIE)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn event(path: &str, stage: &str) -> Value {
        json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": path,
            "rawQueryString": "a=1&b=%20",
            "cookies": ["c1=v1", "c2=v2"],
            "headers": {
                "content-type": "application/json",
                "x-forwarded-for": "1.2.3.4, 5.6.7.8",
                "bad header": "dropped"
            },
            "requestContext": {
                "accountId": "123", "apiId": "api", "domainName": "x.example.com",
                "http": { "method": "POST", "path": path, "protocol": "HTTP/1.1",
                          "sourceIp": "1.2.3.4", "userAgent": "ua" },
                "requestId": "r", "routeKey": "$default", "stage": stage,
                "time": "24/Nov/2026:00:00:00 +0000", "timeEpoch": 1
            },
            "body": "{\"code\":\"c\\\"q\"}",
            "isBase64Encoded": false
        })
    }

    async fn body(r: Request<Body>) -> Vec<u8> {
        r.into_body().collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn an_event_becomes_its_request() {
        let r = request(event("/login", "$default").to_string().as_bytes()).unwrap();
        assert_eq!(r.method(), Method::POST);
        assert_eq!(r.uri(), "/login?a=1&b=%20");
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.headers()["x-forwarded-for"], "1.2.3.4, 5.6.7.8");
        assert_eq!(r.headers()["cookie"], "c1=v1; c2=v2");
        assert_eq!(r.headers().len(), 3, "the invalid header is dropped");
        assert!(r.extensions().get::<Unreadable>().is_none());
        assert_eq!(body(r).await, br#"{"code":"c\"q"}"#);
    }

    #[tokio::test]
    async fn a_named_stage_leaves_the_path() {
        let uri = |path: &str, stage: &str| {
            let mut e = event(path, stage);
            e["rawQueryString"] = json!("");
            request(e.to_string().as_bytes()).unwrap().uri().to_string()
        };
        assert_eq!(uri("/prod/login", "prod"), "/login");
        assert_eq!(uri("/prod", "prod"), "/");
        assert_eq!(uri("/production/login", "prod"), "/production/login");
        assert_eq!(uri("/login", "prod"), "/login");
        assert_eq!(uri("/login", "$default"), "/login");
    }

    #[tokio::test]
    async fn a_base64_body_is_decoded_and_a_bad_one_marked() {
        let mut e = event("/media/check", "$default");
        e["isBase64Encoded"] = json!(true);
        e["body"] = json!(BASE64.encode([0u8, 159, 146, 150]));
        let r = request(e.to_string().as_bytes()).unwrap();
        assert_eq!(body(r).await, [0u8, 159, 146, 150]);

        e["body"] = json!("not base64!");
        let r = request(e.to_string().as_bytes()).unwrap();
        assert!(
            r.extensions()
                .get::<Unreadable>()
                .unwrap()
                .0
                .contains("base64")
        );
    }

    #[test]
    fn characters_a_uri_cannot_hold_are_encoded() {
        let mut e = event("/a\"b c", "$default");
        e["rawQueryString"] = json!("q=<x>");
        let r = request(e.to_string().as_bytes()).unwrap();
        assert_eq!(r.uri(), "/a%22b%20c?q=%3Cx%3E");
    }

    #[test]
    fn what_is_not_an_event_is_named_without_its_content() {
        let e = request(br#""not an event""#).unwrap_err().error_message;
        assert!(e.contains("does not fit"), "{e}");
        assert!(!e.contains("not an event"), "{e}");
        let e = request(br#"{"detail-type": "Scheduled Event", "detail": {}}"#).unwrap_err();
        assert!(
            e.error_message.contains("does not fit"),
            "{}",
            e.error_message
        );
        let mut bad = event("/login", "$default");
        bad["requestContext"]["http"]["method"] = json!("NOT A METHOD");
        assert!(request(bad.to_string().as_bytes()).is_err());
    }

    #[test]
    fn nulls_and_old_spellings_read_as_lambda_http_read_them() {
        let mut e = event("/x", "$default");
        for k in [
            "headers",
            "cookies",
            "body",
            "isBase64Encoded",
            "rawQueryString",
        ] {
            e[k] = Value::Null;
        }
        e["requestContext"]["stage"] = Value::Null;
        e["requestContext"]["http"]["method"] = json!("");
        let r = request(e.to_string().as_bytes()).unwrap();
        assert_eq!(
            (r.method(), r.uri().to_string()),
            (&Method::GET, "/x".to_string())
        );
        // `path` for `rawPath`.
        let mut e = event("/x", "$default");
        let raw = e.as_object_mut().unwrap().remove("rawPath").unwrap();
        e["path"] = raw;
        assert_eq!(
            request(e.to_string().as_bytes()).unwrap().uri().path(),
            "/x"
        );
    }

    async fn answer(r: Response<Body>) -> Value {
        serde_json::from_slice(&response(r).await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn json_stays_text_and_images_go_base64() {
        let json = Response::builder()
            .status(201)
            .header("content-type", "application/json")
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .header("vary", "origin")
            .header("vary", "accept")
            .body(Body::from(r#"{"ok":"真"}"#))
            .unwrap();
        assert_eq!(
            answer(json).await,
            json!({
                "statusCode": 201,
                "headers": { "content-type": "application/json", "vary": "origin,accept" },
                "body": r#"{"ok":"真"}"#,
                "isBase64Encoded": false,
                "cookies": ["a=1", "b=2"],
            })
        );
        let png = Response::builder()
            .header("content-type", "image/png")
            .body(Body::from(vec![0x89u8, b'P', b'N', b'G']))
            .unwrap();
        let a = answer(png).await;
        assert_eq!(a["isBase64Encoded"], true);
        assert_eq!(a["body"], BASE64.encode([0x89u8, b'P', b'N', b'G']));
        let gz = Response::builder()
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(Body::from("x"))
            .unwrap();
        assert_eq!(answer(gz).await["isBase64Encoded"], true);
        let problem = Response::builder()
            .header("content-type", "application/problem+json; charset=utf-8")
            .body(Body::from("{}"))
            .unwrap();
        assert_eq!(answer(problem).await["isBase64Encoded"], false);
        let empty = Response::builder().status(204).body(Body::empty()).unwrap();
        assert_eq!(
            answer(empty).await,
            json!({ "statusCode": 204, "headers": {}, "isBase64Encoded": false, "cookies": [] })
        );
    }
}
