//! EMF metrics from the real binaries: after a scripted sequence, the lines a function wrote are
//! valid Embedded Metric Format documents (the `_aws.CloudWatchMetrics` envelope, units,
//! dimensions) and carry exactly the expected counts; nothing secret is in them.

use std::time::Duration;

use e2e::env::Options;
use e2e::{FunctionProcess, RuntimeApi, TestEnv, V2Response, login_event, v2_event};
use serde_json::Value;

/// Every EMF document in `output`, checked against the format's rules.
fn emf_documents(output: &str) -> Vec<Value> {
    let docs: Vec<Value> = output
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    for d in &docs {
        let aws = &d["_aws"];
        assert!(aws["Timestamp"].as_u64().is_some(), "{d}");
        let cw = aws["CloudWatchMetrics"]
            .as_array()
            .expect("CloudWatchMetrics");
        assert_eq!(cw.len(), 1, "{d}");
        assert_eq!(cw[0]["Namespace"], "WeChatMiniProgram", "{d}");
        for set in cw[0]["Dimensions"].as_array().expect("Dimensions") {
            for dim in set.as_array().expect("a dimension set") {
                let name = dim.as_str().expect("a dimension name");
                assert!(d[name].is_string(), "dimension {name} has no value: {d}");
            }
        }
        for m in cw[0]["Metrics"].as_array().expect("Metrics") {
            let name = m["Name"].as_str().expect("Name");
            assert!(
                d[name].is_number() || d[name].is_array(),
                "metric {name} has no value: {d}"
            );
            if name == "Latency" {
                assert_eq!(m["Unit"], "Milliseconds", "{d}");
            }
        }
    }
    docs
}

/// The sum of `metric` over the documents whose dimensions include `dims`.
fn total(docs: &[Value], metric: &str, dims: &[(&str, &str)]) -> f64 {
    docs.iter()
        .filter(|d| dims.iter().all(|(k, v)| d[*k] == *v))
        .filter_map(|d| match &d[metric] {
            Value::Number(n) => n.as_f64(),
            Value::Array(a) => Some(a.len() as f64),
            _ => None,
        })
        .sum()
}

async fn invoke(api: &RuntimeApi, f: &FunctionProcess, event: Value) -> V2Response {
    let raw = api
        .invoke(event)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", f.output()));
    V2Response::parse(&raw)
}

async fn settle(f: &FunctionProcess, docs_at_least: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let docs = emf_documents(&f.output());
        if docs.len() >= docs_at_least || tokio::time::Instant::now() > deadline {
            return docs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_qrcode_functions_metrics_count_codes_wechat_calls_and_token_rejections() {
    let env = TestEnv::with(Options {
        bucket: true,
        ..Default::default()
    })
    .await;
    let token = env.login("metrics").await;
    let api = RuntimeApi::start().await;
    let f = FunctionProcess::spawn(&e2e::binary_path("qrcode"), &api, &env.function_env().await);
    let auth = format!("Bearer {token}");
    let code = |body: &str| {
        v2_event(
            "POST",
            "/qrcode",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Some(body.as_bytes()),
            false,
        )
    };
    assert_eq!(
        invoke(&api, &f, code(r#"{"scene":"m=1"}"#)).await.status,
        200
    );
    let hit = invoke(&api, &f, code(r#"{"scene":"m=1"}"#)).await;
    assert_eq!((hit.status, hit.header("x-cache")), (200, Some("hit")));
    assert_eq!(
        invoke(&api, &f, code(r#"{"scene":"m=2","width":10}"#))
            .await
            .status,
        400
    );
    env.script("/wxa/getwxacodeunlimit", 45009, 1);
    assert_eq!(
        invoke(&api, &f, code(r#"{"scene":"m=3"}"#)).await.status,
        429
    );
    // Every token dies: the keeper replaces the rejected one and the code is made.
    env.sandbox().invalidate_all_tokens();
    assert_eq!(
        invoke(&api, &f, code(r#"{"scene":"m=4"}"#)).await.status,
        200
    );

    let docs = settle(&f, 8).await;
    let all = [("function", "qrcode")];
    let codes = |outcome: &str, cause: &str| {
        total(
            &docs,
            "Codes",
            &[
                ("function", "qrcode"),
                ("outcome", outcome),
                ("cause", cause),
            ],
        )
    };
    assert_eq!(codes("made", "none"), 2.0, "{docs:#?}");
    assert_eq!(codes("cached", "none"), 1.0);
    assert_eq!(codes("failed", "validation"), 1.0);
    assert_eq!(codes("failed", "wechat"), 1.0);
    assert_eq!(
        total(
            &docs,
            "Requests",
            &[("route", "/qrcode"), ("status", "2xx")]
        ),
        3.0
    );
    assert_eq!(
        total(
            &docs,
            "Requests",
            &[("route", "/qrcode"), ("status", "4xx")]
        ),
        2.0
    );
    assert_eq!(
        total(&docs, "Latency", &[("route", "/qrcode")]),
        5.0,
        "one value a request"
    );
    let calls = |errcode: &str| {
        total(
            &docs,
            "WeChatCalls",
            &[("api", "/wxa/getwxacodeunlimit"), ("errcode", errcode)],
        )
    };
    assert_eq!(
        (calls("0"), calls("45009"), calls("40001")),
        (2.0, 1.0, 1.0)
    );
    assert_eq!(total(&docs, "TokenRejections", &all), 1.0);
    // The success rate's terms: 3 codes made or served; 1 failed at WeChat (the invalid width is
    // the client's mistake, not the service's).
    assert_eq!(
        (
            total(&docs, "CodesOk", &all),
            total(&docs, "CodesFailed", &all)
        ),
        (3.0, 1.0)
    );
    assert_eq!(total(&docs, "TokenFetches", &[("mode", "stable")]), 2.0);
    assert_eq!(total(&docs, "ColdStarts", &all), 1.0);
    // The first code waited for the token's fetch; the others had it in memory (the one after
    // the rejection got its replacement through the rejection path, not token()).
    assert_eq!(total(&docs, "TokenWaitMs", &all), 1.0, "one wait recorded");
    // Nothing secret or per user in them.
    let text = docs.iter().map(Value::to_string).collect::<String>();
    for secret in [
        token.as_str(),
        env.sandbox().config().secret.as_str(),
        "access_token",
    ] {
        assert!(!text.contains(secret), "{secret} in the metrics");
    }
    assert!(!text.contains(&env.sandbox().openid_for("metrics")));
}

#[tokio::test]
async fn the_login_functions_metrics_count_logins_by_outcome() {
    let env = TestEnv::new().await;
    let api = RuntimeApi::start().await;
    let f = FunctionProcess::spawn(&e2e::binary_path("login"), &api, &env.function_env().await);
    let code = env.sandbox().mint_login_code("counted");
    assert_eq!(invoke(&api, &f, login_event(&code)).await.status, 200);
    assert_eq!(invoke(&api, &f, login_event(&code)).await.status, 401);
    assert_eq!(
        invoke(&api, &f, login_event("invalid-code")).await.status,
        401
    );
    assert_eq!(
        invoke(&api, &f, v2_event("GET", "/nowhere", &[], None, false))
            .await
            .status,
        404
    );
    let docs = settle(&f, 4).await;
    assert_eq!(
        total(&docs, "Logins", &[("function", "login"), ("outcome", "ok")]),
        1.0,
        "{docs:#?}"
    );
    assert_eq!(total(&docs, "Logins", &[("outcome", "invalid_code")]), 2.0);
    assert_eq!(
        total(&docs, "Requests", &[("route", "other"), ("status", "4xx")]),
        1.0
    );
    assert_eq!(
        total(
            &docs,
            "WeChatCalls",
            &[("api", "/sns/jscode2session"), ("errcode", "40163")]
        ),
        1.0
    );
}

#[tokio::test]
async fn metrics_are_written_when_no_log_line_is() {
    // GIVEN the login function logging errors only (a request's own line is filtered out, and
    // its metrics would otherwise go out in the same write)
    let env = TestEnv::new().await;
    let api = RuntimeApi::start().await;
    let mut vars = env.function_env().await;
    e2e::set_var(&mut vars, "RUST_LOG", "error");
    let f = FunctionProcess::spawn(&e2e::binary_path("login"), &api, &vars);
    let code = env.sandbox().mint_login_code("quiet");
    assert_eq!(invoke(&api, &f, login_event(&code)).await.status, 200);
    assert_eq!(invoke(&api, &f, login_event(&code)).await.status, 401);

    // THEN no request line was written, and both requests' metrics were
    let docs = settle(&f, 2).await;
    assert!(!f.output().contains("request served"), "{}", f.output());
    assert_eq!(
        total(&docs, "Logins", &[("outcome", "ok")]),
        1.0,
        "{docs:#?}"
    );
    assert_eq!(total(&docs, "Logins", &[("outcome", "invalid_code")]), 1.0);
}
