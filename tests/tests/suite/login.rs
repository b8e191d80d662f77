//! `POST /login`, `GET /session`, `DELETE /session` in-process, through the handler the functions
//! run, against a fresh DynamoDB table on moto and a WeChat sandbox of the test's own.
//!
//! Every reply goes through [`Suite`], which checks it as it arrives (error shape, no app secret,
//! no `session_key` or `access_token` field) and, in [`Suite::finish`], against the session key
//! stored by each login and every secret the table holds at the end (access tokens included).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use e2e::env::call_app_with_headers;
use e2e::{Options, Reply, TestEnv};
use serde_json::{Value, json};
use wechat_sandbox::{Faults, SandboxConfig, ScriptedError};
use wxmp::App;
use wxmp::secret::Secret;
use wxmp::session::key_for;
use wxmp::store::{DynamoStore, SessionRecord, SessionStore, UserStore};

type Item = std::collections::HashMap<String, AttributeValue>;

const JSCODE2SESSION: &str = "/sns/jscode2session";
const WEEK: u64 = 604_800;

struct Suite {
    env: TestEnv,
    /// Every reply so far, headers and body as text.
    seen: Mutex<Vec<String>>,
    /// The session key stored by each successful login.
    session_keys: Mutex<Vec<String>>,
}

impl Suite {
    async fn new() -> Self {
        Self::with(Options::default()).await
    }

    async fn with(opts: Options) -> Self {
        Suite {
            env: TestEnv::with(opts).await,
            seen: Mutex::new(Vec::new()),
            session_keys: Mutex::new(Vec::new()),
        }
    }

    fn sandbox(&self) -> &wechat_sandbox::Sandbox {
        self.env.sandbox()
    }

    async fn call(&self, method: &str, path: &str, bearer: Option<&str>, body: &[u8]) -> Reply {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        self.call_on(&self.env.app, method, path, &headers, body)
            .await
    }

    async fn call_on(
        &self,
        app: &App,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let r = call_app_with_headers(app, method, path, headers, body).await;
        self.check(&r);
        if path == "/login" && r.status == 200 {
            let pk = format!("session#{}", key_for(&token_of(&r.json())));
            let item = get_item(&self.env, &pk)
                .await
                .expect("the session is stored");
            let key = item["session_key"]
                .as_s()
                .expect("the session_key is stored");
            self.session_keys.lock().unwrap().push(key.clone());
        }
        r
    }

    /// `POST /login` with `{"code": code}`.
    async fn login_with(&self, code: &str) -> Reply {
        let body = json!({ "code": code }).to_string();
        self.call("POST", "/login", None, body.as_bytes()).await
    }

    /// Logs `user` in with a freshly minted code; the 200 body.
    async fn login(&self, user: &str) -> Value {
        let r = self.login_with(&self.sandbox().mint_login_code(user)).await;
        assert_eq!(r.status, 200, "{}", text(&r));
        r.json()
    }

    async fn session(&self, token: &str) -> Reply {
        self.call("GET", "/session", Some(token), b"").await
    }

    fn jscode2session_calls(&self) -> u64 {
        let stats = self.sandbox().stats();
        stats.calls.get(JSCODE2SESSION).copied().unwrap_or(0)
    }

    /// What every reply must satisfy.
    fn check(&self, r: &Reply) {
        let all = format!("{:?}\n{}", r.headers, text(r));
        let secret = &self.sandbox().config().secret;
        for needle in [secret.as_str(), "session_key", "access_token"] {
            assert!(!all.contains(needle), "reply contains {needle:?}: {all}");
        }
        if r.status >= 400 {
            assert_error_shape(r);
        }
        self.seen.lock().unwrap().push(all);
    }

    /// Checks every reply of the test against the secrets the table now holds.
    async fn finish(self) {
        let items = scan(&self.env).await;
        let mut secrets = self.session_keys.lock().unwrap().clone();
        for item in &items {
            for field in ["session_key", "access_token"] {
                if let Some(AttributeValue::S(s)) = item.get(field) {
                    secrets.push(s.clone());
                }
            }
        }
        for reply in self.seen.lock().unwrap().iter() {
            for s in &secrets {
                assert!(
                    !reply.contains(s.as_str()),
                    "a reply leaks a secret: {reply}"
                );
            }
        }
    }
}

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The contract's error JSON: `{"error": {"code", "message", "request_id", "wechat_errcode"?}}`.
fn assert_error_shape(r: &Reply) {
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{}",
        text(r)
    );
    let v = r.json();
    let e = v["error"]
        .as_object()
        .unwrap_or_else(|| panic!("no error object: {v}"));
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    for k in e.keys() {
        assert!(
            ["code", "message", "request_id", "wechat_errcode"].contains(&k.as_str()),
            "unexpected field {k}: {v}"
        );
    }
    assert!(e["code"].as_str().is_some_and(|c| !c.is_empty()), "{v}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert_eq!(e["request_id"], "test-request", "{v}");
    if let Some(c) = e.get("wechat_errcode") {
        assert!(c.is_i64(), "{v}");
    }
}

/// Asserts status, error code and WeChat's errcode (absent when `None`); returns the message.
fn assert_error(r: &Reply, status: u16, code: &str, errcode: Option<i64>) -> String {
    assert_eq!(r.status, status, "{}", text(r));
    let e = &r.json()["error"];
    assert_eq!(e["code"], code, "{}", text(r));
    assert_eq!(
        e.get("wechat_errcode").and_then(Value::as_i64),
        errcode,
        "{}",
        text(r)
    );
    e["message"].as_str().unwrap().to_string()
}

async fn scan(env: &TestEnv) -> Vec<Item> {
    env.scan().await
}

async fn get_item(env: &TestEnv, pk: &str) -> Option<Item> {
    env.dynamodb()
        .get_item()
        .table_name(&env.table)
        .key("pk", AttributeValue::S(pk.to_string()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem")
        .item
}

fn token_of(login: &Value) -> String {
    login["token"].as_str().expect("token").to_string()
}

fn session_record(openid: &str, expires_at: u64) -> SessionRecord {
    SessionRecord {
        openid: openid.to_string(),
        unionid: None,
        session_key: Secret::new("c2Vzc2lvbi1rZXktMTIzNA=="),
        created_at: expires_at.saturating_sub(WEEK),
        expires_at,
    }
}

#[tokio::test]
async fn login_session_logout_lifecycle() {
    let s = Suite::new().await;
    let before = wxmp::now_secs();
    let first = s.login("alice").await;
    let after = wxmp::now_secs();

    let token = token_of(&first);
    assert_eq!(token.len(), 43, "{first}");
    assert_eq!(URL_SAFE_NO_PAD.decode(&token).expect("base64url").len(), 32);
    let expires_at = first["expires_at"].as_u64().expect("expires_at");
    assert!(
        (before + WEEK..=after + WEEK).contains(&expires_at),
        "{first}"
    );
    assert_eq!(first["openid"], s.sandbox().openid_for("alice"));
    assert_eq!(first["unionid"], s.sandbox().unionid_for("alice"));
    assert_eq!(first["new_user"], true);
    let mut keys: Vec<_> = first.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["expires_at", "new_user", "openid", "token", "unionid"]
    );

    // A second login of the same user is a new session of a known user.
    let second = s.login("alice").await;
    assert_eq!(second["new_user"], false);
    assert_eq!(second["openid"], first["openid"]);
    assert_ne!(token_of(&second), token);

    let r = s.session(&token).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({
            "openid": s.sandbox().openid_for("alice"),
            "unionid": s.sandbox().unionid_for("alice"),
            "expires_at": expires_at,
        })
    );

    let r = s.call("DELETE", "/session", Some(&token), b"").await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    let r = s.call("DELETE", "/session", Some(&token), b"").await;
    assert_eq!(r.status, 204, "logging out twice is fine");
    assert_error(&s.session(&token).await, 401, "unauthenticated", None);

    // The other session of the same user is untouched.
    assert_eq!(s.session(&token_of(&second)).await.status, 200);
    s.finish().await;
}

#[tokio::test]
async fn a_user_without_unionid_gets_null() {
    let s = Suite::with(Options {
        sandbox: SandboxConfig {
            unionid: false,
            ..SandboxConfig::default()
        },
        ..Options::default()
    })
    .await;
    let login = s.login("bob").await;
    assert_eq!(login["unionid"], Value::Null, "{login}");
    let r = s.session(&token_of(&login)).await;
    assert_eq!(r.json()["unionid"], Value::Null);
    s.finish().await;
}

#[tokio::test]
async fn session_lifetime_follows_session_ttl_secs() {
    let s = Suite::new().await;
    let app = s
        .env
        .build_app_with(&[("SESSION_TTL_SECS", "3600")], s.env.store.clone());
    let code = s.sandbox().mint_login_code("carol");
    let before = wxmp::now_secs();
    let body = json!({ "code": code }).to_string();
    let r = s
        .call_on(&app, "POST", "/login", &[], body.as_bytes())
        .await;
    let after = wxmp::now_secs();
    assert_eq!(r.status, 200, "{}", text(&r));
    let expires_at = r.json()["expires_at"].as_u64().unwrap();
    assert!((before + 3600..=after + 3600).contains(&expires_at));
    s.finish().await;
}

#[tokio::test]
async fn codes_wechat_rejects() {
    let s = Suite::new().await;
    let code = s.sandbox().mint_login_code("erin");
    assert_eq!(s.login_with(&code).await.status, 200);
    assert_error(&s.login_with(&code).await, 401, "invalid_code", Some(40163));
    assert_error(
        &s.login_with("invalid.1").await,
        401,
        "invalid_code",
        Some(40029),
    );
    assert_error(
        &s.login_with("risky.1").await,
        403,
        "risky_user",
        Some(40226),
    );

    // A minted code past its lifetime.
    let late = s.sandbox().mint_login_code("erin");
    s.sandbox().advance_time(Duration::from_secs(301));
    assert_error(&s.login_with(&late).await, 401, "invalid_code", Some(40029));
    s.finish().await;
}

#[tokio::test]
async fn malformed_login_requests_are_refused_before_wechat() {
    let s = Suite::new().await;
    let long = json!({ "code": "x".repeat(129) }).to_string();
    let oversized = json!({ "code": "x", "pad": "p".repeat(16 * 1024) }).to_string();
    let cases: Vec<(&[u8], &str)> = vec![
        (br#"{"code":""}"#, "code must be"),
        (br#"{"code":"a b"}"#, "code must be"),
        (br#"{"code":"caf\u00e9"}"#, "code must be"),
        (long.as_bytes(), "code must be"),
        (br#"{"code":5}"#, "code must be a string"),
        (br#"{"code":["a"]}"#, "code must be a string"),
        (br#"{}"#, "code is required"),
        (br#"{"code":null}"#, "code is required"),
        (br#"{"kode":"abc"}"#, "code is required"),
        (br#"{"code":"#, "not valid JSON"),
        (b"code=abc", "not valid JSON"),
        (br#"["code"]"#, "must be a JSON object"),
        (br#""abc""#, "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (b"", "must be a JSON object"),
        (b"  \n", "must be a JSON object"),
    ];
    for (body, needle) in cases {
        let r = s.call("POST", "/login", None, body).await;
        let message = assert_error(&r, 400, "invalid_request", None);
        assert!(
            message.contains(needle),
            "{:?}: {message:?} lacks {needle:?}",
            String::from_utf8_lossy(body)
        );
    }
    // Over the size cap: HTTP's own status for it.
    let r = s.call("POST", "/login", None, oversized.as_bytes()).await;
    let message = assert_error(&r, 413, "payload_too_large", None);
    assert!(message.contains("larger than 16384 bytes"), "{message}");
    assert_eq!(s.jscode2session_calls(), 0, "nothing reached WeChat");

    // The longest code allowed goes through.
    let r = s.login_with(&"y".repeat(128)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    s.finish().await;
}

#[tokio::test]
async fn wrong_methods_and_unknown_routes() {
    let s = Suite::new().await;
    for (method, path, allowed) in [
        ("GET", "/login", "POST"),
        ("PUT", "/login", "POST"),
        ("POST", "/session", "GET, DELETE"),
        ("PUT", "/session", "GET, DELETE"),
        ("PATCH", "/session", "GET, DELETE"),
    ] {
        let r = s.call(method, path, None, br#"{"code":"abc"}"#).await;
        let message = assert_error(&r, 405, "method_not_allowed", None);
        assert!(
            message.contains(method) && message.contains(path) && message.contains(allowed),
            "{method} {path}: {message}"
        );
        assert_eq!(r.header("allow"), Some(allowed), "{method} {path}");
    }
    for (method, path) in [("POST", "/logins"), ("GET", "/"), ("GET", "/session/x")] {
        let r = s.call(method, path, None, b"").await;
        let message = assert_error(&r, 404, "not_found", None);
        assert!(message.contains(path), "{message}");
    }
    // A trailing slash is the same route.
    let r = s.call("GET", "/session/", None, b"").await;
    assert_error(&r, 401, "unauthenticated", None);
    assert_eq!(s.jscode2session_calls(), 0);
    s.finish().await;
}

#[tokio::test]
async fn wechat_always_busy_is_retried_until_the_budget_then_503() {
    let s = Suite::new().await;
    s.sandbox().set_faults(Faults {
        busy_rate: 1.0,
        ..Faults::default()
    });
    let started = Instant::now();
    let r = s.login_with("frank.1").await;
    let elapsed = started.elapsed();
    assert_error(&r, 503, "wechat_unavailable", Some(-1));
    // Busy answers are retried with backoff for the 6 s budget (not a fixed few tries), and
    // the answer still comes within it.
    assert!(elapsed < Duration::from_millis(6500), "took {elapsed:?}");
    let calls = s.jscode2session_calls();
    assert!((6..=10).contains(&calls), "{calls} jscode2session calls");
    s.finish().await;
}

#[tokio::test]
async fn wechat_busy_once_is_retried() {
    let s = Suite::new().await;
    s.sandbox().set_faults(scripted(-1));
    let r = s.login_with("grace.1").await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["openid"], s.sandbox().openid_for("grace"));
    assert_eq!(s.jscode2session_calls(), 2);
    s.finish().await;
}

#[tokio::test]
async fn wechat_errors_that_retrying_cannot_fix() {
    let s = Suite::new().await;
    for (errcode, status, code) in [
        (45011, 429, "rate_limited"),
        (45009, 429, "rate_limited"),
        (40013, 502, "wechat_error"),
    ] {
        s.sandbox().reset_stats();
        s.sandbox().set_faults(scripted(errcode));
        let r = s.login_with("heidi.1").await;
        assert_error(&r, status, code, Some(errcode));
        assert_eq!(s.jscode2session_calls(), 1, "{errcode} is not retried");
    }
    s.finish().await;
}

fn scripted(errcode: i64) -> Faults {
    Faults {
        scripted: vec![ScriptedError {
            path: JSCODE2SESSION.into(),
            errcode,
            count: 1,
        }],
        ..Faults::default()
    }
}

#[tokio::test]
async fn a_wrong_app_secret_is_a_wechat_error_and_stays_secret() {
    let s = Suite::new().await;
    let app = s
        .env
        .build_app_with(&[("WECHAT_SECRET", "not-the-secret")], s.env.store.clone());
    let r = s
        .call_on(&app, "POST", "/login", &[], br#"{"code":"ivan.1"}"#)
        .await;
    assert_error(&r, 502, "wechat_error", Some(40125));
    assert!(!text(&r).contains("not-the-secret"));
    s.finish().await;
}

#[tokio::test]
async fn wechat_unreachable_is_unavailable() {
    let s = Suite::new().await;
    let closed = closed_port_url();
    let app = s
        .env
        .build_app_with(&[("WECHAT_API_BASE", &closed)], s.env.store.clone());
    let started = Instant::now();
    let r = s
        .call_on(&app, "POST", "/login", &[], br#"{"code":"judy.1"}"#)
        .await;
    assert_error(&r, 503, "wechat_unavailable", None);
    assert!(started.elapsed() < Duration::from_secs(10));
    s.finish().await;
}

/// `http://127.0.0.1:PORT` where nothing listens.
fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn bad_or_unknown_tokens_are_unauthenticated() {
    let s = Suite::new().await;
    let token = token_of(&s.login("kim").await);
    let unknown = wxmp::ids::new_session_token();
    let cases: Vec<Vec<(&str, String)>> = vec![
        vec![("authorization", format!("Bearer {unknown}"))],
        vec![],
        vec![("authorization", token.clone())],
        vec![("authorization", format!("Basic {token}"))],
        vec![("authorization", format!("Token {token}"))],
        vec![("authorization", "Bearer".into())],
        vec![("authorization", "Bearer ".into())],
        vec![("authorization", "Bearer short".into())],
        vec![("authorization", format!("Bearer {token}x"))],
        vec![("authorization", format!("Bearer {}", &token[1..]))],
        vec![("authorization", format!("Bearer {}+", &token[1..]))],
        vec![("authorization", format!("Bearer {}=", &token[1..]))],
        vec![("x-authorization", format!("Bearer {token}"))],
    ];
    for headers in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = s
            .call_on(&s.env.app, "GET", "/session", &headers, b"")
            .await;
        assert_error(&r, 401, "unauthenticated", None);
    }
    // Logging out needs a well-formed token too, but not a live one.
    assert_error(
        &s.call("DELETE", "/session", None, b"").await,
        401,
        "unauthenticated",
        None,
    );
    assert_eq!(
        s.call("DELETE", "/session", Some(&unknown), b"")
            .await
            .status,
        204
    );
    // The real token still works; the scheme is case-insensitive.
    let lower = format!("bearer {token}");
    let r = s
        .call_on(
            &s.env.app,
            "GET",
            "/session",
            &[("authorization", &lower)],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    s.finish().await;
}

#[tokio::test]
async fn an_expired_session_is_refused_but_left_for_ttl() {
    let s = Suite::new().await;
    let openid = s.sandbox().openid_for("lee");
    let now = wxmp::now_secs();
    let live = wxmp::ids::new_session_token();
    let expired = wxmp::ids::new_session_token();
    let expiring = wxmp::ids::new_session_token();
    let store = &s.env.store;
    store
        .put_session(&key_for(&live), &session_record(&openid, now + 600))
        .await
        .unwrap();
    store
        .put_session(&key_for(&expired), &session_record(&openid, now - 10))
        .await
        .unwrap();
    // `expires_at` is the first second the session is no longer valid.
    store
        .put_session(&key_for(&expiring), &session_record(&openid, now))
        .await
        .unwrap();

    assert_eq!(s.session(&live).await.json()["openid"], openid);
    for token in [&expired, &expiring] {
        assert_error(&s.session(token).await, 401, "unauthenticated", None);
        let item = get_item(&s.env, &format!("session#{}", key_for(token))).await;
        assert!(
            item.is_some(),
            "reading does not delete; DynamoDB's TTL does"
        );
    }
    s.finish().await;
}

#[tokio::test]
async fn the_table_holds_a_hash_of_the_token_and_the_session_key() {
    let s = Suite::new().await;
    let login = s.login("mallory").await;
    let token = token_of(&login);

    let items = scan(&s.env).await;
    let dump = format!("{items:?}");
    assert!(
        !dump.contains(&token),
        "the raw token is in the table: {dump}"
    );

    let pk = format!("session#{}", wxmp::ids::sha256_hex(token.as_bytes()));
    assert_eq!(pk.len(), "session#".len() + 64);
    let sessions: Vec<_> = items
        .iter()
        .filter(|i| i["pk"].as_s().is_ok_and(|p| p.starts_with("session#")))
        .collect();
    assert_eq!(sessions.len(), 1, "{dump}");
    let item = sessions[0];
    assert_eq!(item["pk"].as_s().unwrap(), &pk);
    assert_eq!(
        item["openid"].as_s().unwrap(),
        login["openid"].as_str().unwrap()
    );
    assert_eq!(
        item["expires_at"].as_n().unwrap(),
        &login["expires_at"].to_string()
    );
    let session_key = item["session_key"].as_s().expect("session_key is kept");
    assert!(!session_key.is_empty());

    // A second login of the same user: same session key from WeChat, still in no response.
    let again = s.login("mallory").await;
    assert_eq!(s.session(&token_of(&again)).await.status, 200);
    s.finish().await;
}

#[tokio::test]
async fn a_first_login_whose_session_is_not_stored_leaves_the_user_new() {
    let s = Suite::new().await;
    let openid = s.sandbox().openid_for("olga");
    // The session write fails while the user's login, written beside it, goes through.
    s.env.store.set_sessions_down(true);
    let r = s.login_with(&s.sandbox().mint_login_code("olga")).await;
    assert_error(&r, 503, "store_unavailable", None);
    let user = s.env.store.get_user(&openid).await.expect("user read");
    assert_eq!(
        user.as_ref().and_then(|u| u.first_seen),
        None,
        "the failed first login is undone: {user:?}"
    );
    s.env.store.set_sessions_down(false);

    // The first login that opens a session is the user's first.
    let first = s.login("olga").await;
    assert_eq!(first["new_user"], true, "{first}");
    assert_eq!(s.session(&token_of(&first)).await.status, 200);
    let user = s.env.store.get_user(&openid).await.expect("user read");
    assert!(user.and_then(|u| u.first_seen).is_some());
    assert_eq!(s.login("olga").await["new_user"], false);

    // A known user's failed login changes nothing of what is known.
    s.env.store.set_sessions_down(true);
    let r = s.login_with(&s.sandbox().mint_login_code("olga")).await;
    assert_error(&r, 503, "store_unavailable", None);
    s.env.store.set_sessions_down(false);
    assert_eq!(s.login("olga").await["new_user"], false);
    s.finish().await;
}

#[tokio::test]
async fn a_store_that_is_down_answers_503_quickly() {
    let s = Suite::new().await;
    let sdk = e2e::moto::sdk_config(&closed_port_url()).await;
    let down = Arc::new(DynamoStore::new(wxmp::aws::dynamodb(&sdk), &s.env.table));
    let app = s.env.build_app_with(&[], down);
    let token = wxmp::ids::new_session_token();
    let auth = format!("Bearer {token}");
    for (method, path, headers, body) in [
        ("POST", "/login", vec![], &br#"{"code":"nina.1"}"#[..]),
        (
            "GET",
            "/session",
            vec![("authorization", auth.as_str())],
            b"",
        ),
        (
            "DELETE",
            "/session",
            vec![("authorization", auth.as_str())],
            b"",
        ),
    ] {
        let started = Instant::now();
        let r = s.call_on(&app, method, path, &headers, body).await;
        let elapsed = started.elapsed();
        assert_error(&r, 503, "store_unavailable", None);
        assert!(
            elapsed < Duration::from_secs(10),
            "{method} {path} took {elapsed:?}"
        );
    }
    s.finish().await;
}

/// The login function's Lambda timeout in template.yaml: past it the client gets API Gateway's
/// own error, not the contract's JSON.
const LOGIN_FUNCTION_TIMEOUT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn wechat_that_never_answers_gives_503_before_the_function_times_out() {
    let s = Suite::new().await;
    s.sandbox().set_faults(Faults {
        latency_ms: 30_000,
        ..Faults::default()
    });
    let started = Instant::now();
    let r = s.login_with("slow.1").await;
    let elapsed = started.elapsed();
    assert_error(&r, 503, "wechat_unavailable", None);
    // Leave time for the two store writes a login makes after WeChat answers.
    // WeChat's whole retry budget is 6 s, however slow each try.
    assert!(elapsed < Duration::from_secs(7), "took {elapsed:?}");
    assert!(elapsed < LOGIN_FUNCTION_TIMEOUT - Duration::from_secs(5));
    s.finish().await;
}
