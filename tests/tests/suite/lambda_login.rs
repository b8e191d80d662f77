//! The real `login` binary, run as Lambda runs it: it polls a Runtime API emulator, gets API
//! Gateway HTTP API (payload 2.0) events and answers with v2 responses; DynamoDB is moto, WeChat
//! the test's sandbox.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use e2e::runtime_api::DEFAULT_INVOKE_TIMEOUT;
use e2e::{FunctionProcess, InvocationError, RuntimeApi, TestEnv, V2Response, binary_path};
use e2e::{login_event, v2_event, with_stage};
use serde_json::{Value, json};

/// The login function running against a fresh [`TestEnv`].
struct Function {
    env: TestEnv,
    api: RuntimeApi,
    process: FunctionProcess,
}

/// One invocation's answer, as API Gateway reads it, with the Lambda request id.
struct Answer {
    response: V2Response,
    raw: Value,
    request_id: String,
}

impl Answer {
    fn json(&self) -> Value {
        self.response.json()
    }

    /// A contract error: status, code, and the request id of this very invocation.
    fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.response.status, status, "{}", self.raw);
        let e = &self.json()["error"];
        assert_eq!(e["code"], code, "{}", self.raw);
        assert_eq!(e["request_id"], self.request_id.as_str(), "{}", self.raw);
        e["message"].as_str().expect("message").to_string()
    }
}

impl Function {
    async fn start() -> Self {
        let env = TestEnv::new().await;
        let vars = env.function_env().await;
        Self::start_with(env, vars).await
    }

    async fn start_with(env: TestEnv, vars: Vec<(String, String)>) -> Self {
        let api = RuntimeApi::start().await;
        let process = FunctionProcess::spawn(&binary_path("login"), &api, &vars);
        Function { env, api, process }
    }

    async fn invoke(&self, event: Value) -> Answer {
        let inv = self.api.invoke_full(event, DEFAULT_INVOKE_TIMEOUT).await;
        let raw = inv.result.unwrap_or_else(|e| {
            panic!(
                "invocation failed: {e}\n--- function output ---\n{}",
                self.process.output()
            )
        });
        let response = V2Response::parse(&raw);
        assert_valid_v2(&response, &raw);
        Answer {
            response,
            raw,
            request_id: inv.request_id,
        }
    }

    /// `POST /login` with `{"code": code}` as a JSON request.
    async fn login_with(&self, code: &str) -> Answer {
        self.invoke(login_event(code)).await
    }

    /// Waits until the function has logged `request_id` (its output is read asynchronously).
    async fn wait_for_log_of(&self, request_id: &str) {
        assert!(
            self.process
                .wait_for_output(request_id, Duration::from_secs(5))
                .await,
            "no log line with {request_id}:\n{}",
            self.process.output()
        );
    }
}

fn bearer_event(method: &str, path: &str, token: &str) -> Value {
    let auth = format!("Bearer {token}");
    v2_event(method, path, &[("authorization", &auth)], None, false)
}

/// What API Gateway needs: JSON answers as text with their content type, nothing else as base64.
fn assert_valid_v2(r: &V2Response, raw: &Value) {
    assert!(raw["statusCode"].is_u64(), "{raw}");
    assert!(!r.is_base64, "JSON is sent as text: {raw}");
    if r.status == 204 {
        assert!(r.body.is_empty(), "{raw}");
        return;
    }
    assert!(raw["body"].is_string(), "{raw}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{raw}");
    let _ = r.json();
}

fn token_of(login: &Value) -> String {
    login["token"].as_str().expect("token").to_string()
}

#[tokio::test]
async fn login_session_logout_through_the_binary() {
    let f = Function::start().await;
    let code = f.env.sandbox().mint_login_code("alice");
    let a = f.login_with(&code).await;
    assert_eq!(a.response.status, 200, "{}", a.raw);
    let login = a.json();
    assert_eq!(login["openid"], f.env.sandbox().openid_for("alice"));
    assert_eq!(login["new_user"], true);
    let token = token_of(&login);
    assert_eq!(token.len(), 43);
    let session_key = stored_session_keys(&f.env).await.pop().expect("a session");

    let a = f.invoke(bearer_event("GET", "/session", &token)).await;
    assert_eq!(a.response.status, 200, "{}", a.raw);
    assert_eq!(a.json()["openid"], login["openid"]);
    assert_eq!(a.json()["expires_at"], login["expires_at"]);

    let a = f.invoke(bearer_event("DELETE", "/session", &token)).await;
    assert_eq!(a.response.status, 204, "{}", a.raw);

    let a = f.invoke(bearer_event("GET", "/session", &token)).await;
    a.assert_error(401, "unauthenticated");
    // The request id of an error is in the logs of that request.
    f.wait_for_log_of(&a.request_id).await;

    // Nothing secret in the logs, and every line is a JSON object.
    let output = f.process.output();
    let secret = f.env.sandbox().config().secret.clone();
    for (what, value) in [
        ("the app secret", secret.as_str()),
        ("the session_key", session_key.as_str()),
        ("the session token", token.as_str()),
        ("the login code", code.as_str()),
    ] {
        assert!(!output.contains(value), "{what} is in the logs:\n{output}");
    }
    assert!(!output.contains("access_token="), "{output}");
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v.is_object(), "{line}");
    }
    // Each request's line carries X-Ray's trace id (Lambda's Lambda-Runtime-Trace-Id).
    let served: Vec<Value> = output
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["request_id"] == a.request_id.as_str() && v["status"].is_number())
        .collect();
    assert_eq!(served.len(), 1, "{output}");
    assert!(
        served[0]["trace_id"]
            .as_str()
            .is_some_and(|t| t.starts_with("Root=1-")),
        "{}",
        served[0]
    );
}

async fn stored_session_keys(env: &TestEnv) -> Vec<String> {
    env.scan()
        .await
        .iter()
        .filter_map(|i| match i.get("session_key") {
            Some(AttributeValue::S(s)) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_named_stage_in_the_path_is_routed() {
    let f = Function::start().await;
    let code = f.env.sandbox().mint_login_code("bob");
    let a = f.invoke(with_stage(login_event(&code), "prod")).await;
    assert_eq!(a.response.status, 200, "{}", a.raw);
    let token = token_of(&a.json());

    let a = f
        .invoke(with_stage(bearer_event("GET", "/session", &token), "prod"))
        .await;
    assert_eq!(a.response.status, 200, "{}", a.raw);
    assert_eq!(a.json()["openid"], f.env.sandbox().openid_for("bob"));

    let a = f
        .invoke(with_stage(
            v2_event("GET", "/nope", &[], None, false),
            "prod",
        ))
        .await;
    let message = a.assert_error(404, "not_found");
    assert!(
        message.contains("/nope") && !message.contains("/prod"),
        "{message}"
    );
}

#[tokio::test]
async fn bodies_without_content_type_or_in_base64_are_read() {
    let f = Function::start().await;
    let body = |user: &str| json!({ "code": f.env.sandbox().mint_login_code(user) }).to_string();

    let plain = body("carol");
    let a = f
        .invoke(v2_event(
            "POST",
            "/login",
            &[],
            Some(plain.as_bytes()),
            false,
        ))
        .await;
    assert_eq!(a.response.status, 200, "{}", a.raw);
    assert_eq!(a.json()["openid"], f.env.sandbox().openid_for("carol"));

    let encoded = body("carol");
    let event = v2_event(
        "POST",
        "/login",
        &[("content-type", "application/json")],
        Some(encoded.as_bytes()),
        true,
    );
    assert_eq!(event["body"], STANDARD.encode(&encoded));
    let a = f.invoke(event).await;
    assert_eq!(a.response.status, 200, "{}", a.raw);
    assert_eq!(a.json()["new_user"], false);

    // Form-encoded content type, JSON body: the body decides.
    let form = body("carol");
    let a = f
        .invoke(v2_event(
            "POST",
            "/login",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(form.as_bytes()),
            false,
        ))
        .await;
    assert_eq!(a.response.status, 200, "{}", a.raw);
}

#[tokio::test]
async fn a_body_marked_base64_that_is_not_is_a_400_and_the_next_is_served() {
    let f = Function::start().await;
    // WHEN an event says its body is base64 but it is not (lambda_http's conversion panicked on
    // this, and with panic = abort the instance died)
    let mut event = v2_event(
        "POST",
        "/login",
        &[("content-type", "application/json")],
        Some(br#"{"code":"x"}"#),
        true,
    );
    event["body"] = json!("{not base64!}");
    let a = f.invoke(event).await;
    // THEN the route answers the contract's 400, with the request id, and logs it
    let message = a.assert_error(400, "invalid_request");
    assert!(message.contains("base64"), "{message}");
    f.wait_for_log_of(&a.request_id).await;
    // AND the same process serves the next invocation
    let code = f.env.sandbox().mint_login_code("after-bad-base64");
    let a = f.login_with(&code).await;
    assert_eq!(a.response.status, 200, "{}", a.raw);
}

#[tokio::test]
async fn an_event_not_from_api_gateway_is_the_invocations_error_and_the_next_is_served() {
    let f = Function::start().await;
    // WHEN the function is invoked with something that is not an API Gateway event (a test
    // invocation from the console with the wrong template, say)
    let invocation = f
        .api
        .invoke_full(json!("not an event"), DEFAULT_INVOKE_TIMEOUT)
        .await;
    let result = invocation.result;
    // THEN the invocation fails as an unhandled function error naming what was wrong, not
    // what was sent
    match &result {
        Err(InvocationError::Function {
            error_type, body, ..
        }) => {
            assert_eq!(error_type.as_deref(), Some("unhandled"), "{body}");
            assert_eq!(body["errorType"], "InvalidEvent", "{body}");
            let message = body["errorMessage"].as_str().unwrap_or_default();
            assert!(message.contains("does not fit"), "{body}");
            assert!(!message.contains("not an event"), "{body}");
        }
        other => panic!("{other:?}\n{}", f.process.output()),
    }
    // AND the function's log says so in one line with the invocation's id, without the event
    assert!(
        f.process
            .wait_for_output("event refused", Duration::from_secs(5))
            .await
    );
    let refused = f.process.log_lines("event refused");
    assert_eq!(refused.len(), 1, "{}", f.process.output());
    assert_eq!(refused[0]["level"], "ERROR", "{}", refused[0]);
    assert_eq!(refused[0]["request_id"], invocation.request_id.as_str());
    assert!(!refused[0].to_string().contains("not an event"));
    // AND the same process serves the next invocation
    let code = f.env.sandbox().mint_login_code("after-a-bad-event");
    let a = f.login_with(&code).await;
    assert_eq!(a.response.status, 200, "{}", a.raw);
}

#[tokio::test]
async fn an_unreadable_client_context_fails_that_invocation_only() {
    let f = Function::start().await;
    // WHEN an invocation comes with a client context that is not the JSON Lambda documents
    let code = f.env.sandbox().mint_login_code("context");
    let invocation = f
        .api
        .invoke_with_client_context(login_event(&code), r#"{"client": "secret-ish"}"#)
        .await;
    // THEN that invocation fails, saying what was wrong but not quoting it
    match &invocation.result {
        Err(InvocationError::Function { body, .. }) => {
            assert_eq!(body["errorType"], "InvalidContext", "{body}");
            assert!(!body.to_string().contains("secret-ish"), "{body}");
        }
        other => panic!("{other:?}\n{}", f.process.output()),
    }
    assert!(
        f.process
            .wait_for_output("invocation refused", Duration::from_secs(5))
            .await
    );
    assert!(!f.process.output().contains("secret-ish"));
    // AND the same process serves the next invocation, whose context is well-formed
    let a = f
        .api
        .invoke_with_client_context(
            login_event(&f.env.sandbox().mint_login_code("context")),
            &json!({
                "client": {
                    "installation_id": "i",
                    "app_title": "t",
                    "app_version_name": "1",
                    "app_version_code": "1",
                    "app_package_name": "p"
                },
                "custom": {},
                "environment": {}
            })
            .to_string(),
        )
        .await;
    let response = V2Response::parse(&a.result.expect("served"));
    assert_eq!(response.status, 200, "{}", response.text());
}

#[tokio::test]
async fn bad_input_is_a_400_response_not_a_function_error() {
    let f = Function::start().await;
    let oversized = json!({ "code": "x", "pad": "p".repeat(17 * 1024) }).to_string();
    let json_ct = [("content-type", "application/json")];
    let cases: Vec<(Value, &str)> = vec![
        (
            v2_event("POST", "/login", &json_ct, Some(b"{"), false),
            "not valid JSON",
        ),
        (
            v2_event("POST", "/login", &json_ct, None, false),
            "JSON object",
        ),
        (
            v2_event("POST", "/login", &json_ct, Some(b"[]"), false),
            "JSON object",
        ),
        (
            v2_event("POST", "/login", &json_ct, Some(b"{}"), false),
            "code is required",
        ),
        (
            v2_event("POST", "/login", &json_ct, Some(br#"{"code":7}"#), false),
            "code must be a string",
        ),
        (
            v2_event(
                "POST",
                "/login",
                &json_ct,
                Some(br#"{"code":"a b"}"#),
                false,
            ),
            "code must be",
        ),
        (
            v2_event("POST", "/login", &json_ct, Some(&[0xff, 0xfe, 0x00]), true),
            "not valid JSON",
        ),
    ];
    for (event, needle) in cases {
        let a = f.invoke(event).await;
        let message = a.assert_error(400, "invalid_request");
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    let a = f
        .invoke(v2_event(
            "POST",
            "/login",
            &json_ct,
            Some(oversized.as_bytes()),
            false,
        ))
        .await;
    assert!(
        a.assert_error(413, "payload_too_large")
            .contains("larger than")
    );
    for (event, allow) in [
        (v2_event("GET", "/login", &[], None, false), "POST"),
        (v2_event("PUT", "/session", &[], None, false), "GET, DELETE"),
        // A stray of the other function's path comes here through the $default route.
        (v2_event("GET", "/qrcode", &[], None, false), "POST"),
    ] {
        let a = f.invoke(event).await;
        let message = a.assert_error(405, "method_not_allowed");
        assert!(message.contains(&format!("use {allow}")), "{message}");
        assert_eq!(a.response.header("allow"), Some(allow));
    }
    // The other function's routes are not served here.
    let a = f
        .invoke(v2_event("POST", "/qrcode", &json_ct, Some(b"{}"), false))
        .await;
    a.assert_error(404, "not_found");
    // A rejected code carries WeChat's errcode.
    let a = f.login_with("invalid.1").await;
    a.assert_error(401, "invalid_code");
    assert_eq!(a.json()["error"]["wechat_errcode"], 40029);
    let stats = f.env.sandbox().stats();
    assert_eq!(stats.calls.get("/sns/jscode2session"), Some(&1));
}

#[tokio::test]
async fn a_store_that_never_answers_gives_503_within_the_timeouts() {
    let env = TestEnv::new().await;
    let blackhole = Blackhole::start().await;
    let mut vars = env.function_env().await;
    e2e::set_var(&mut vars, "AWS_ENDPOINT_URL", &blackhole.url());
    let f = Function::start_with(env, vars).await;
    let started = Instant::now();
    let a = f.login_with("dave.1").await;
    let elapsed = started.elapsed();
    a.assert_error(503, "store_unavailable");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}

/// A TCP server that accepts connections and never answers.
struct Blackhole {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Blackhole { addr, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn missing_table_name_fails_init_naming_it() {
    let env = TestEnv::new().await;
    let mut vars = env.function_env().await;
    vars.retain(|(k, _)| k != "TABLE_NAME");
    let mut f = Function::start_with(env, vars).await;

    // Either the runtime reports an init error or the process exits with the reason.
    let deadline = Instant::now() + Duration::from_secs(20);
    let reason = loop {
        if let Some(e) = f.api.init_error() {
            break e.to_string();
        }
        if let Some(status) = f.process.try_exit_status() {
            assert!(!status.success(), "{status}");
            // Let the output reader catch up with the last lines.
            f.process
                .wait_for_output("TABLE_NAME", Duration::from_secs(2))
                .await;
            break f.process.output();
        }
        assert!(
            Instant::now() < deadline,
            "neither an init error nor an exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(reason.contains("TABLE_NAME"), "{reason}");
    match f
        .api
        .invoke_full(json!({}), Duration::from_secs(1))
        .await
        .result
    {
        Err(InvocationError::Init(_) | InvocationError::Timeout { .. }) => {}
        other => panic!("a function without TABLE_NAME served {other:?}"),
    }
}

#[tokio::test]
async fn a_cold_start_connects_to_dynamodb_and_wechat_before_its_first_event() {
    let env = TestEnv::new().await;
    let mut vars = env.function_env().await;
    // DynamoDB and WeChat are listeners that only count connections.
    let dynamodb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let wechat = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = |l: &tokio::net::TcpListener| format!("http://{}", l.local_addr().unwrap());
    e2e::set_var(&mut vars, "AWS_ENDPOINT_URL_DYNAMODB", &url(&dynamodb));
    e2e::set_var(&mut vars, "WECHAT_API_BASE", &url(&wechat));
    // WHEN the function starts and asks for its first event, and none comes
    let f = Function::start_with(env, vars).await;
    f.api
        .wait_for_next_poll(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", f.process.output()));
    // THEN it has connected to both already: twice to DynamoDB (a login writes the session and
    // the user record side by side), once to WeChat
    for (name, listener, count) in [("DynamoDB", &dynamodb, 2), ("WeChat", &wechat, 1)] {
        for n in 1..=count {
            let accepted = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
            assert!(
                accepted.is_ok(),
                "no connection {n} to {name}\n{}",
                f.process.output()
            );
        }
        let again = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(again.is_err(), "one connection too many to {name}");
    }
}
