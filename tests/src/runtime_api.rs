//! A Lambda Runtime API emulator and a launcher for function binaries, so a
//! test drives the *real* compiled function exactly as Lambda would: the
//! binary polls `GET /2018-06-01/runtime/invocation/next`, handles the event
//! and posts its result back.
//!
//! ```no_run
//! # async fn demo() {
//! use e2e::runtime_api::{binary_path, FunctionProcess, RuntimeApi};
//! let api = RuntimeApi::start().await;
//! let env = e2e::moto::aws_env().await;
//! let function = FunctionProcess::spawn(&binary_path("login"), &api, &env);
//! let event = e2e::apigw::v2_event("GET", "/health", &[], None, false);
//! let response = api.invoke(event).await.expect("invocation");
//! # drop(function); drop(response);
//! # }
//! ```
//!
//! The emulator lives in a task of the test's tokio runtime, which is fine:
//! a `RuntimeApi` and the function it serves belong to one test.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;

use crate::moto::random_hex;

/// ARN sent in `Lambda-Runtime-Invoked-Function-Arn`.
pub const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:test";
/// Default time [`RuntimeApi::invoke`] waits for a result; also the
/// deadline advertised to the function.
pub const DEFAULT_INVOKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response/error body accepted (Lambda's own limit is 6 MB; axum's
/// default of 2 MB would reject large but legal responses).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Why an invocation produced no response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvocationError {
    /// The function posted to `/invocation/{id}/error` (a handler error or
    /// panic). `body` is the posted JSON (`{"errorType","errorMessage"}`),
    /// or a JSON string if it was not JSON.
    #[error("function error for {request_id}: {error_type:?}: {body}")]
    Function {
        request_id: String,
        /// `Lambda-Runtime-Function-Error-Type` header, if sent.
        error_type: Option<String>,
        body: Value,
    },
    /// The function posted to `/init/error` (it failed before handling
    /// anything, e.g. missing configuration).
    #[error("function init error: {0}")]
    Init(FunctionError),
    /// No result within the timeout (function hung, crashed or never
    /// started: see [`FunctionProcess::output`]).
    #[error("no result for {request_id} within {after:?}")]
    Timeout { request_id: String, after: Duration },
    /// The function posted a response that is not JSON (e.g. a streaming
    /// response, which this emulator does not decode).
    #[error("response for {request_id} is not JSON: {raw}")]
    NotJson { request_id: String, raw: String },
}

/// An error reported by the function (init error body and type header).
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionError {
    /// `Lambda-Runtime-Function-Error-Type` header, if sent.
    pub error_type: Option<String>,
    /// Posted body as JSON, or a JSON string if it was not JSON.
    pub body: Value,
}

impl std::fmt::Display for FunctionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.error_type, self.body)
    }
}

/// The outcome of [`RuntimeApi::invoke_full`], with the request id so a test
/// can correlate it with the function's logs.
#[derive(Debug)]
pub struct Invocation {
    pub request_id: String,
    pub result: Result<Value, InvocationError>,
}

/// An event waiting for the function's next poll.
struct Queued {
    request_id: String,
    event: Value,
    timeout: Duration,
    /// `lambda-runtime-client-context`, as a mobile SDK's invocation gives it.
    client_context: Option<String>,
}

/// What the function posted for one invocation.
enum Outcome {
    Response(Bytes),
    Error(FunctionError),
    Init(FunctionError),
}

struct Shared {
    queue: Mutex<VecDeque<Queued>>,
    /// Wakes a long-polling `/invocation/next` when an event is queued.
    queued: Notify,
    /// Invocations waiting for a result, by request id.
    pending: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    /// When the function first polled `/invocation/next`.
    first_poll: watch::Sender<Option<Instant>>,
    init_error: watch::Sender<Option<FunctionError>>,
    last_request_id: Mutex<Option<String>>,
}

/// Poison-tolerant lock: a panicking test must not cascade into the server.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Lambda Runtime API emulator (`/2018-06-01/runtime/...`) on a loopback
/// port. One function process polls it; tests call [`RuntimeApi::invoke`].
/// The server task is aborted on drop.
pub struct RuntimeApi {
    addr: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl RuntimeApi {
    /// Binds `127.0.0.1:0` and serves the Runtime API in a task of the
    /// current tokio runtime.
    pub async fn start() -> RuntimeApi {
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            queued: Notify::new(),
            pending: Mutex::new(HashMap::new()),
            first_poll: watch::Sender::new(None),
            init_error: watch::Sender::new(None),
            last_request_id: Mutex::new(None),
        });
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(invocation_response),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(invocation_error),
            )
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind Runtime API listener");
        let addr = listener.local_addr().expect("local addr").to_string();
        let server = tokio::spawn(async move {
            // Writing without delay, as Lambda's own runtime API (Go's net/http) does.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, router)
                .await
                .expect("Runtime API server");
        });
        RuntimeApi {
            addr,
            shared,
            server,
        }
    }

    /// `127.0.0.1:PORT`: the value for `AWS_LAMBDA_RUNTIME_API`.
    pub fn runtime_api_addr(&self) -> String {
        self.addr.clone()
    }

    /// Invokes the function with `event` and waits up to
    /// [`DEFAULT_INVOKE_TIMEOUT`] for its response JSON. Use
    /// [`RuntimeApi::last_request_id`] or [`RuntimeApi::invoke_full`] for the
    /// request id.
    pub async fn invoke(&self, event: Value) -> Result<Value, InvocationError> {
        self.invoke_full(event, DEFAULT_INVOKE_TIMEOUT).await.result
    }

    /// Queues `event` under a fresh request id and waits up to `timeout`
    /// (also advertised to the function as its deadline). On timeout the
    /// event is withdrawn if the function has not picked it up yet.
    /// Fails at once with [`InvocationError::Init`] if the function has
    /// reported an init error.
    pub async fn invoke_full(&self, event: Value, timeout: Duration) -> Invocation {
        self.invoke_queued(event, timeout, None).await
    }

    /// [`RuntimeApi::invoke_full`] with a client context (the JSON that Lambda passes on in
    /// `lambda-runtime-client-context`, here sent as it is, well-formed or not).
    pub async fn invoke_with_client_context(
        &self,
        event: Value,
        client_context: &str,
    ) -> Invocation {
        self.invoke_queued(
            event,
            DEFAULT_INVOKE_TIMEOUT,
            Some(client_context.to_string()),
        )
        .await
    }

    async fn invoke_queued(
        &self,
        event: Value,
        timeout: Duration,
        client_context: Option<String>,
    ) -> Invocation {
        let request_id = new_request_id();
        let (tx, rx) = oneshot::channel();
        if let Some(init) = self.shared.init_error.borrow().clone() {
            return Invocation {
                request_id,
                result: Err(InvocationError::Init(init)),
            };
        }
        lock(&self.shared.pending).insert(request_id.clone(), tx);
        lock(&self.shared.queue).push_back(Queued {
            request_id: request_id.clone(),
            event,
            timeout,
            client_context,
        });
        *lock(&self.shared.last_request_id) = Some(request_id.clone());
        self.shared.queued.notify_one();

        let outcome = tokio::time::timeout(timeout, rx).await;
        let result = match outcome {
            Ok(Ok(Outcome::Response(raw))) => {
                serde_json::from_slice(&raw).map_err(|_| InvocationError::NotJson {
                    request_id: request_id.clone(),
                    raw: String::from_utf8_lossy(&raw).into_owned(),
                })
            }
            Ok(Ok(Outcome::Error(e))) => Err(InvocationError::Function {
                request_id: request_id.clone(),
                error_type: e.error_type,
                body: e.body,
            }),
            Ok(Ok(Outcome::Init(e))) => Err(InvocationError::Init(e)),
            // Sender dropped without an outcome: cannot happen while the
            // server holds `pending`, but treat it as a timeout.
            Ok(Err(_)) | Err(_) => {
                lock(&self.shared.pending).remove(&request_id);
                lock(&self.shared.queue).retain(|q| q.request_id != request_id);
                Err(InvocationError::Timeout {
                    request_id: request_id.clone(),
                    after: timeout,
                })
            }
        };
        Invocation { request_id, result }
    }

    /// Request id of the most recently queued invocation.
    pub fn last_request_id(&self) -> Option<String> {
        lock(&self.shared.last_request_id).clone()
    }

    /// Resolves when the function first polls `/invocation/next` (i.e. has
    /// finished its init), returning that instant: with an `Instant` taken
    /// just before spawning, the difference is the cold-start time.
    /// Returns at once if that already happened; fails early on an init
    /// error or with [`InvocationError::Timeout`] (empty request id).
    pub async fn wait_for_next_poll(&self, timeout: Duration) -> Result<Instant, InvocationError> {
        let mut polled = self.shared.first_poll.subscribe();
        let mut init = self.shared.init_error.subscribe();
        let wait = async {
            tokio::select! {
                r = polled.wait_for(Option::is_some) => {
                    Ok(r.expect("sender lives in self").expect("is_some"))
                }
                r = init.wait_for(Option::is_some) => {
                    let e = r.expect("sender lives in self").clone().expect("is_some");
                    Err(InvocationError::Init(e))
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(InvocationError::Timeout {
                request_id: String::new(),
                after: timeout,
            }))
    }

    /// The init error the function reported, if any.
    pub fn init_error(&self) -> Option<FunctionError> {
        self.shared.init_error.borrow().clone()
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A UUID-v4-shaped id, like Lambda's request ids.
fn new_request_id() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn epoch_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

/// `GET /invocation/next`: long-polls until an event is queued.
async fn next_invocation(State(shared): State<Arc<Shared>>) -> Response {
    shared.first_poll.send_if_modified(|first| {
        if first.is_none() {
            *first = Some(Instant::now());
            true
        } else {
            false
        }
    });
    let queued = loop {
        // Register interest before checking the queue so a notify between
        // the check and the await is not lost. If this request is dropped
        // (client went away) after being notified, tokio passes the
        // notification on, and the event stays queued.
        let notified = shared.queued.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(q) = lock(&shared.queue).pop_front() {
            break q;
        }
        notified.await;
    };
    let deadline = epoch_ms(SystemTime::now() + queued.timeout);
    let trace_id = format!(
        "Root=1-{:08x}-{};Parent={};Sampled=0",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
        random_hex(12),
        random_hex(8)
    );
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        headers.insert(name, HeaderValue::from_str(&value).expect("header value"));
    };
    set("lambda-runtime-aws-request-id", queued.request_id);
    set("lambda-runtime-deadline-ms", deadline.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        FUNCTION_ARN.to_string(),
    );
    set("lambda-runtime-trace-id", trace_id);
    if let Some(c) = queued.client_context {
        set("lambda-runtime-client-context", c);
    }
    set("content-type", "application/json".to_string());
    (StatusCode::OK, headers, queued.event.to_string()).into_response()
}

fn function_error(headers: &HeaderMap, body: &Bytes) -> FunctionError {
    FunctionError {
        error_type: headers
            .get("lambda-runtime-function-error-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned())),
    }
}

/// Delivers `outcome` to the waiting invocation: 202 as Lambda answers, or
/// 400 for an unknown (or already timed-out) request id.
fn complete(shared: &Shared, id: &str, outcome: Outcome) -> Response {
    match lock(&shared.pending).remove(id) {
        Some(tx) => {
            let _ = tx.send(outcome);
            (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
        }
        None => (
            StatusCode::BAD_REQUEST,
            r#"{"errorMessage":"Invalid request ID","errorType":"InvalidRequestID"}"#,
        )
            .into_response(),
    }
}

/// `POST /invocation/{id}/response`.
async fn invocation_response(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    complete(&shared, &id, Outcome::Response(body))
}

/// `POST /invocation/{id}/error`.
async fn invocation_error(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    complete(
        &shared,
        &id,
        Outcome::Error(function_error(&headers, &body)),
    )
}

/// `POST /init/error`: records the error and fails every waiting invocation,
/// as Lambda does when a function cannot initialise.
async fn init_error(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let error = function_error(&headers, &body);
    shared.init_error.send_replace(Some(error.clone()));
    lock(&shared.queue).clear();
    for (_, tx) in lock(&shared.pending).drain() {
        let _ = tx.send(Outcome::Init(error.clone()));
    }
    (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
}

/// Path of a binary built in this workspace, next to the running test
/// executable: tests run from `target/<profile>/deps/`, binaries live in
/// `target/<profile>/`. `cargo test -p e2e` does not build other packages'
/// binaries, so build them first (scripts/test.sh does).
///
/// # Panics
/// If the binary does not exist.
pub fn binary_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test exe has a directory");
    let profile_dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent")
    } else {
        deps
    };
    let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "function binary {} not found: build it first (`cargo build -p <package> --bin {name}` \
         with the same profile as the tests; scripts/test.sh does this)",
        path.display()
    );
    path
}

/// Environment variables of the test process passed on to a function: only
/// ones that help debugging; everything else is cleared so that the host's
/// AWS profile or credentials can never leak into a test.
const PASSED_THROUGH_ENV: &[&str] = &["PATH", "RUST_LOG", "RUST_BACKTRACE"];

/// A running function binary, polling a [`RuntimeApi`]. Its stdout and
/// stderr lines are collected (see [`FunctionProcess::output`]). Killed on
/// drop; if the test is panicking at that point its output is printed, so a
/// failed test shows the function's logs.
pub struct FunctionProcess {
    name: String,
    child: tokio::process::Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl FunctionProcess {
    /// Spawns `binary` as Lambda would run it. See [`FunctionProcess::spawn_with_args`].
    pub fn spawn(binary: &Path, api: &RuntimeApi, env: &[(String, String)]) -> FunctionProcess {
        Self::spawn_with_args(binary, &[], api, env)
    }

    /// Spawns `binary args...` with a clean environment holding what Lambda
    /// sets (`AWS_LAMBDA_RUNTIME_API`, `AWS_LAMBDA_FUNCTION_NAME` = file
    /// name, `AWS_LAMBDA_FUNCTION_VERSION=1`,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128`, log group/stream,
    /// `AWS_LAMBDA_INITIALIZATION_TYPE=on-demand`, `AWS_REGION`, `TZ`), then
    /// `PATH`/`RUST_LOG`/`RUST_BACKTRACE` from the test process, then `env`
    /// (which wins). `AWS_LAMBDA_LOG_FORMAT` is left unset (text logs).
    ///
    /// Must be called within a tokio runtime (the child is reaped by it).
    pub fn spawn_with_args(
        binary: &Path,
        args: &[&str],
        api: &RuntimeApi,
        env: &[(String, String)],
    ) -> FunctionProcess {
        let name = binary
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "function".into());
        let mut cmd = tokio::process::Command::new(binary);
        cmd.args(args)
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", api.runtime_api_addr())
            .env("AWS_LAMBDA_FUNCTION_NAME", &name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "2024/01/01/[1]e2e")
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            .env("AWS_REGION", crate::moto::REGION)
            .env("AWS_DEFAULT_REGION", crate::moto::REGION)
            .env("TZ", ":UTC");
        for key in PASSED_THROUGH_ENV {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn function {}: {e}", binary.display()));
        let output = Arc::new(Mutex::new(Vec::new()));
        collect_lines(child.stdout.take().expect("piped stdout"), output.clone());
        collect_lines(child.stderr.take().expect("piped stderr"), output.clone());
        FunctionProcess {
            name,
            child,
            output,
        }
    }

    /// All stdout and stderr lines so far, in arrival order, `\n`-joined.
    pub fn output(&self) -> String {
        lock(&self.output).join("\n")
    }

    /// The output lines that parse as JSON objects (the functions log one JSON object a line).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        lock(&self.output)
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(serde_json::Value::is_object)
            .collect()
    }

    /// The JSON log lines whose `message` is `message`.
    pub fn log_lines(&self, message: &str) -> Vec<serde_json::Value> {
        self.json_lines()
            .into_iter()
            .filter(|l| l["message"] == message)
            .collect()
    }

    /// Waits until some output line contains `needle`; false on timeout.
    /// Output is read asynchronously, so use this rather than
    /// [`FunctionProcess::output`] right after an invocation when asserting
    /// on log lines.
    pub async fn wait_for_output(&self, needle: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        loop {
            if lock(&self.output).iter().any(|l| l.contains(needle)) {
                return true;
            }
            if start.elapsed() >= timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The exit status if the process has exited (e.g. it crashed).
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// OS process id, if still running.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the process and waits for it to exit.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!(
                "----- output of function {} -----\n{}\n----- end of {} -----",
                self.name,
                self.output(),
                self.name
            );
        }
    }
}

/// Appends each line of `stream` to `sink` from a background task (lossy
/// UTF-8, so binary junk cannot stop the collection).
fn collect_lines(stream: impl AsyncRead + Unpin + Send + 'static, sink: Arc<Mutex<Vec<String>>>) {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    lock(&sink).push(line.trim_end_matches(['\n', '\r']).to_string());
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Minimal HTTP helper for the fake function (reqwest without its
    /// `json` feature).
    struct FakeFunction {
        http: reqwest::Client,
        base: String,
    }

    impl FakeFunction {
        fn new(api: &RuntimeApi) -> Self {
            FakeFunction {
                http: reqwest::Client::new(),
                base: format!("http://{}/2018-06-01/runtime", api.runtime_api_addr()),
            }
        }

        /// `GET /invocation/next` → (headers, event).
        async fn next(&self) -> (reqwest::header::HeaderMap, Value) {
            let r = self
                .http
                .get(format!("{}/invocation/next", self.base))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let headers = r.headers().clone();
            let event = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            (headers, event)
        }

        async fn post(&self, path: &str, error_type: Option<&str>, body: Value) -> u16 {
            let mut req = self
                .http
                .post(format!("{}/{path}", self.base))
                .body(body.to_string());
            if let Some(t) = error_type {
                req = req.header("lambda-runtime-function-error-type", t);
            }
            req.send().await.unwrap().status().as_u16()
        }
    }

    fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
        h.get(name).unwrap().to_str().unwrap()
    }

    #[tokio::test]
    async fn invoke_round_trips_through_a_fake_function() {
        let api = RuntimeApi::start().await;
        let f = FakeFunction::new(&api);
        let started = Instant::now();
        // The "function": echo each event back, three times, checking headers.
        let function = tokio::spawn(async move {
            for _ in 0..3 {
                let (h, event) = f.next().await;
                let id = header(&h, "lambda-runtime-aws-request-id").to_string();
                assert_eq!(
                    header(&h, "lambda-runtime-invoked-function-arn"),
                    FUNCTION_ARN
                );
                assert!(header(&h, "lambda-runtime-trace-id").starts_with("Root=1-"));
                let deadline: u128 = header(&h, "lambda-runtime-deadline-ms").parse().unwrap();
                let now = epoch_ms(SystemTime::now());
                assert!(deadline > now + 25_000 && deadline <= now + 30_000);
                let status = f
                    .post(
                        &format!("invocation/{id}/response"),
                        None,
                        json!({"echo": event, "id": id}),
                    )
                    .await;
                assert_eq!(status, 202);
            }
        });
        let polled = api
            .wait_for_next_poll(Duration::from_secs(5))
            .await
            .unwrap();
        assert!(polled >= started);
        for i in 0..3 {
            let inv = api
                .invoke_full(json!({"n": i}), DEFAULT_INVOKE_TIMEOUT)
                .await;
            let value = inv.result.unwrap();
            assert_eq!(value["echo"], json!({"n": i}));
            assert_eq!(value["id"], json!(inv.request_id));
            assert_eq!(api.last_request_id(), Some(inv.request_id));
        }
        function.await.unwrap();
    }

    #[tokio::test]
    async fn function_errors_are_reported() {
        let api = RuntimeApi::start().await;
        let f = FakeFunction::new(&api);
        tokio::spawn(async move {
            let (h, _) = f.next().await;
            let id = header(&h, "lambda-runtime-aws-request-id").to_string();
            f.post(
                &format!("invocation/{id}/error"),
                Some("unhandled"),
                json!({"errorType": "Boom", "errorMessage": "it broke"}),
            )
            .await;
            // A result for an unknown id is rejected.
            assert_eq!(
                f.post("invocation/nope/response", None, json!({})).await,
                400
            );
        });
        match api.invoke(json!({})).await {
            Err(InvocationError::Function {
                error_type, body, ..
            }) => {
                assert_eq!(error_type.as_deref(), Some("unhandled"));
                assert_eq!(body["errorMessage"], "it broke");
            }
            other => panic!("expected a function error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn init_error_fails_waiting_and_later_invocations() {
        let api = RuntimeApi::start().await;
        let f = FakeFunction::new(&api);
        let pending = api.invoke_full(json!({}), Duration::from_secs(10));
        let init = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            f.post(
                "init/error",
                Some("Runtime.InitError"),
                json!({"errorType": "Config", "errorMessage": "missing TABLE"}),
            )
            .await
        };
        let (inv, status) = tokio::join!(pending, init);
        assert_eq!(status, 202);
        assert!(
            matches!(&inv.result, Err(InvocationError::Init(e)) if e.body["errorMessage"] == "missing TABLE"),
            "{inv:?}"
        );
        assert!(matches!(
            api.invoke(json!({})).await,
            Err(InvocationError::Init(_))
        ));
        assert!(matches!(
            api.wait_for_next_poll(Duration::from_secs(1)).await,
            Err(InvocationError::Init(_))
        ));
        assert_eq!(
            api.init_error().unwrap().error_type.as_deref(),
            Some("Runtime.InitError")
        );
    }

    #[tokio::test]
    async fn timeouts_withdraw_the_event() {
        let api = RuntimeApi::start().await;
        assert!(matches!(
            api.wait_for_next_poll(Duration::from_millis(50)).await,
            Err(InvocationError::Timeout { .. })
        ));
        let inv = api
            .invoke_full(json!({"stale": true}), Duration::from_millis(50))
            .await;
        assert!(matches!(inv.result, Err(InvocationError::Timeout { .. })));
        // A function that starts polling now must get the next event, not
        // the withdrawn one.
        let f = FakeFunction::new(&api);
        tokio::spawn(async move {
            let (h, event) = f.next().await;
            let id = header(&h, "lambda-runtime-aws-request-id").to_string();
            f.post(&format!("invocation/{id}/response"), None, event)
                .await;
        });
        assert_eq!(
            api.invoke(json!({"fresh": true})).await.unwrap(),
            json!({"fresh": true})
        );
    }

    #[tokio::test]
    async fn function_process_gets_lambda_env_and_output_is_captured() {
        // A shell script stands in for a function binary.
        let dir = std::env::temp_dir().join(format!("e2e-fp-{}", random_hex(4)));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("fake-fn");
        std::fs::write(
            &script,
            "#!/bin/sh\necho \"api=$AWS_LAMBDA_RUNTIME_API name=$AWS_LAMBDA_FUNCTION_NAME \
             mem=$AWS_LAMBDA_FUNCTION_MEMORY_SIZE ver=$AWS_LAMBDA_FUNCTION_VERSION \
             extra=$EXTRA home=${HOME:-unset}\"\necho \"to stderr $1\" >&2\nexec sleep 30\n",
        )
        .unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let api = RuntimeApi::start().await;
        let env = vec![("EXTRA".to_string(), "yes".to_string())];
        let mut p = FunctionProcess::spawn_with_args(&script, &["arg1"], &api, &env);
        assert!(
            p.wait_for_output("to stderr arg1", Duration::from_secs(5))
                .await
        );
        assert!(p.wait_for_output("extra=yes", Duration::from_secs(5)).await);
        let out = p.output();
        assert!(
            out.contains(&format!(
                "api={} name=fake-fn mem=128 ver=1 extra=yes home=unset",
                api.runtime_api_addr()
            )),
            "{out}"
        );
        assert!(p.try_exit_status().is_none());
        assert!(p.pid().is_some());
        p.kill().await;
        assert!(p.try_exit_status().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    #[should_panic(expected = "not found: build it first")]
    fn binary_path_explains_a_missing_binary() {
        binary_path("no-such-function-binary");
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = new_request_id();
        let parts: Vec<_> = id.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12], "{id}");
        assert_ne!(id, new_request_id());
    }
}
