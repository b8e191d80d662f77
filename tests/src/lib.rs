//! Test harness for the workspace's end-to-end tests.
//!
//! The integration tests in `tests/tests/suite/` run the real Lambda binaries
//! against real wire protocols:
//! - [`moto`]: a shared moto server (DynamoDB, S3) and the AWS settings that
//!   point SDK clients at it;
//! - [`runtime_api`]: a Lambda Runtime API emulator and a launcher for the
//!   function binaries, so each test invokes a function as Lambda would;
//! - [`apigw`]: API Gateway HTTP API (payload 2.0) events and responses.

pub mod apigw;
pub mod atomic;
pub mod bus;
pub mod env;
pub mod moto;
pub mod runtime_api;

pub use apigw::{V2Response, login_event, v2_event, with_stage};

/// Implements `wxmp::store::MessageStore` for a test store decorator by handing every call to
/// `$inner` (an expression of `$self`): the decorators watch or break the session, user and
/// token calls, and leave the grant ledger and claims as they are.
#[macro_export]
macro_rules! delegate_message_store {
    ($ty:ty, $self:ident => $inner:expr) => {
        #[async_trait::async_trait]
        impl wxmp::store::MessageStore for $ty {
            async fn claim(
                &$self,
                key: &str,
                holder: &str,
                expires_at: u64,
                now: u64,
            ) -> Result<wxmp::store::Claim, wxmp::store::StoreError> {
                $inner.claim(key, holder, expires_at, now).await
            }
            async fn release_claim(
                &$self,
                key: &str,
                holder: &str,
            ) -> Result<(), wxmp::store::StoreError> {
                $inner.release_claim(key, holder).await
            }
            async fn change_grants(
                &$self,
                openid: &str,
                changes: &[(String, wxmp::store::NetChange)],
            ) -> Result<(), wxmp::store::StoreError> {
                $inner.change_grants(openid, changes).await
            }
            async fn take_grant(
                &$self,
                openid: &str,
                template_id: &str,
            ) -> Result<Option<wxmp::store::Taken>, wxmp::store::StoreError> {
                $inner.take_grant(openid, template_id).await
            }
            async fn grants(
                &$self,
                openid: &str,
            ) -> Result<Vec<wxmp::store::Grant>, wxmp::store::StoreError> {
                $inner.grants(openid).await
            }
            async fn merge_record(
                &$self,
                key: &str,
                fields: &serde_json::Map<String, serde_json::Value>,
                expires_at: u64,
            ) -> Result<(), wxmp::store::StoreError> {
                $inner.merge_record(key, fields, expires_at).await
            }
            async fn get_record(
                &$self,
                key: &str,
                now: u64,
            ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, wxmp::store::StoreError>
            {
                $inner.get_record(key, now).await
            }
        }
    };
}
pub use env::{Options, Reply, TestEnv, call_app, set_var};
pub use runtime_api::{FunctionProcess, InvocationError, RuntimeApi, binary_path};

/// The whole harness against the real `lambda_http` runtime: this test
/// binary re-executes itself as the "function" (an ignored test that runs
/// `lambda_http::run` only when `E2E_ECHO_CHILD` is set), so the emulator,
/// the event builder and the response parser are checked against what the
/// production functions link, without building another binary.
#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use lambda_http::{Body, Request, RequestExt, Response, service_fn};
    use serde_json::json;

    use super::*;

    const CHILD_TEST: &str = "tests::lambda_http_echo_child";

    #[test]
    #[ignore = "run as a child process by real_lambda_http_function_round_trips"]
    fn lambda_http_echo_child() {
        if std::env::var_os("E2E_ECHO_CHILD").is_none() {
            return;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(lambda_http::run(service_fn(|req: Request| async move {
                eprintln!("handling {} {}", req.method(), req.uri().path());
                if req.uri().path().ends_with("/fail") {
                    return Err(lambda_http::Error::from("asked to fail"));
                }
                let echo = json!({
                    "method": req.method().as_str(),
                    "path": req.uri().path(),
                    "raw_path": req.raw_http_path(),
                    "query": req.uri().query(),
                    "cookie": req.headers().get("cookie").and_then(|v| v.to_str().ok()),
                    "body_len": req.body().len(),
                    "request_id": req.lambda_context_ref().map(|c| c.request_id.clone()),
                });
                // lambda_http picks text or base64 from the content type.
                let (content_type, body) = if req.uri().path().ends_with("/binary") {
                    ("application/octet-stream", Body::Binary(vec![0, 1, 2, 255]))
                } else {
                    ("application/json", Body::Text(echo.to_string()))
                };
                Ok(Response::builder()
                    .status(201)
                    .header("content-type", content_type)
                    .header("set-cookie", "sid=abc; HttpOnly")
                    .body(body)
                    .unwrap())
            })))
            .expect("lambda_http::run");
    }

    #[tokio::test]
    async fn real_lambda_http_function_round_trips() {
        let api = RuntimeApi::start().await;
        let exe = std::env::current_exe().unwrap();
        let spawned = Instant::now();
        let function = FunctionProcess::spawn_with_args(
            &exe,
            &[CHILD_TEST, "--exact", "--ignored", "--nocapture"],
            &api,
            &[("E2E_ECHO_CHILD".to_string(), "1".to_string())],
        );
        let first_poll = api
            .wait_for_next_poll(Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", function.output()));
        assert!(first_poll >= spawned);

        let event = with_stage(
            v2_event(
                "POST",
                "/login?x=1",
                &[("Cookie", "a=1; b=2")],
                Some(b"hello"),
                false,
            ),
            "prod",
        );
        let invocation = api
            .invoke_full(event, runtime_api::DEFAULT_INVOKE_TIMEOUT)
            .await;
        let response = V2Response::parse(&invocation.result.unwrap());
        assert_eq!(response.status, 201);
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.cookies, ["sid=abc; HttpOnly"]);
        assert_eq!(
            response.json(),
            json!({
                "method": "POST",
                "path": "/prod/login",
                "raw_path": "/prod/login",
                "query": "x=1",
                "cookie": "a=1; b=2",
                "body_len": 5,
                "request_id": invocation.request_id,
            })
        );

        let binary = api
            .invoke(v2_event("GET", "/binary", &[], None, false))
            .await
            .unwrap();
        let binary = V2Response::parse(&binary);
        assert!(binary.is_base64);
        assert_eq!(binary.body, [0, 1, 2, 255]);

        match api.invoke(v2_event("GET", "/fail", &[], None, false)).await {
            Err(InvocationError::Function { body, .. }) => {
                assert_eq!(body["errorMessage"], "asked to fail", "{body}");
            }
            other => panic!("expected a function error, got {other:?}"),
        }
        assert!(
            function
                .wait_for_output("handling GET /fail", Duration::from_secs(5))
                .await,
            "{}",
            function.output()
        );
    }
}
