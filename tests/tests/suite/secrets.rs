//! The AppSecret from AWS Secrets Manager (`WECHAT_SECRET_ARN`), against moto's Secrets Manager:
//! the real login binary starting with it, start-up refused for a missing or malformed secret
//! (naming the field, never the value), and a rotation picked up with one re-read.

use std::time::Duration;

use e2e::runtime_api::DEFAULT_INVOKE_TIMEOUT;
use e2e::{FunctionProcess, RuntimeApi, TestEnv, V2Response, binary_path};
use e2e::{Reply, call_app, login_event, moto};
use serde_json::json;
use wxmp::Config;

/// `POST /login` in-process with a fresh code.
async fn login(app: &wxmp::App, code: &str) -> Reply {
    call_app(
        app,
        "POST",
        "/login",
        None,
        json!({ "code": code }).to_string().as_bytes(),
    )
    .await
}

/// Creates a secret holding `value` in moto; its ARN.
async fn create_secret(env: &TestEnv, value: &str) -> String {
    let out = wxmp::aws::secrets_manager(&env.sdk)
        .call(
            "CreateSecret",
            &json!({ "Name": moto::unique_name("wx"), "SecretString": value }),
        )
        .await
        .expect("secret created");
    out["ARN"].as_str().expect("ARN").to_string()
}

fn secret_json(env: &TestEnv, secret: &str) -> String {
    json!({ "appid": env.sandbox().config().appid, "secret": secret }).to_string()
}

/// The function's environment with the secret's ARN instead of the app id and secret.
async fn vars_with_arn(env: &TestEnv, arn: &str) -> Vec<(String, String)> {
    let mut vars = env.function_env().await;
    vars.retain(|(k, _)| k != "WECHAT_SECRET" && k != "WECHAT_APPID");
    vars.push(("WECHAT_SECRET_ARN".into(), arn.into()));
    vars
}

#[tokio::test]
async fn the_login_function_starts_with_the_secret_from_secrets_manager() {
    let env = TestEnv::new().await;
    let real = env.sandbox().config().secret.clone();
    let arn = create_secret(&env, &secret_json(&env, &real)).await;
    let vars = vars_with_arn(&env, &arn).await;
    assert!(
        !vars.iter().any(|(_, v)| v == &real),
        "the secret is not in the environment"
    );

    let api = RuntimeApi::start().await;
    let process = FunctionProcess::spawn(&binary_path("login"), &api, &vars);
    let code = env.sandbox().mint_login_code("alice");
    let raw = api
        .invoke_full(login_event(&code), DEFAULT_INVOKE_TIMEOUT)
        .await
        .result
        .unwrap_or_else(|e| panic!("{e}\n{}", process.output()));
    let r = V2Response::parse(&raw);
    assert_eq!(r.status, 200, "{raw}");
    assert!(r.json()["token"].is_string());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = process.output();
    assert!(
        out.contains("app secret read from Secrets Manager"),
        "{out}"
    );
    assert!(!out.contains(&real), "the secret value was logged");
}

#[tokio::test]
async fn a_missing_or_malformed_secret_stops_the_start_naming_the_field() {
    let env = TestEnv::new().await;
    let missing = format!(
        "arn:aws:secretsmanager:{}:123456789012:secret:nope-AbCdEf",
        moto::REGION
    );
    let appid = env.sandbox().config().appid.clone();
    let cases = [
        (missing, "ResourceNotFoundException"),
        (
            create_secret(&env, r#"{"appid": "wx1", "secret": "#).await,
            "not a JSON object",
        ),
        (
            create_secret(&env, &json!({ "appid": appid, "secret": "" }).to_string()).await,
            // (as the JSON log line and the error's Debug print escape it)
            r#"\"secret\" field must be a non-empty string"#,
        ),
        (
            create_secret(&env, &json!({ "secret": "hunter2-value" }).to_string()).await,
            r#"has no \"appid\" field"#,
        ),
    ];
    for (arn, expected) in cases {
        let api = RuntimeApi::start().await;
        let vars = vars_with_arn(&env, &arn).await;
        let mut process = FunctionProcess::spawn(&binary_path("login"), &api, &vars);
        // Either the runtime reports an init error or the process exits with the reason.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let text = loop {
            if let Some(e) = api.init_error() {
                break e.to_string();
            }
            if let Some(status) = process.try_exit_status() {
                assert!(!status.success(), "{status}");
                process
                    .wait_for_output(expected, Duration::from_secs(2))
                    .await;
                break process.output();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{arn}: neither an init error nor an exit"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            text.contains("WECHAT_SECRET_ARN") && text.contains(expected),
            "{expected}: {text}"
        );
        assert!(
            api.invoke_full(json!({}), Duration::from_secs(1))
                .await
                .result
                .is_err(),
            "a function without its secret served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let out = process.output();
        assert!(!out.contains("hunter2-value") && !text.contains("hunter2-value"));
    }
}

#[tokio::test]
async fn a_rotated_secret_is_read_again_once_and_used() {
    let env = TestEnv::new().await;
    let old = env.sandbox().config().secret.clone();
    let arn = create_secret(&env, &secret_json(&env, &old)).await;
    let pairs = vars_with_arn(&env, &arn).await;
    let config =
        Config::from_lookup(|k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
            .expect("configuration");
    let app = wxmp::App::from_config(config, env.table.clone(), &env.sdk)
        .await
        .expect("starts with the secret");
    let code = env.sandbox().mint_login_code("bob");
    let r = login(&app, &code).await;
    assert_eq!(r.status, 200);

    // The AppSecret is reset in the console and stored in Secrets Manager; WeChat now refuses
    // the old one with 40125.
    env.sandbox().rotate_secret("rotated-secret".into());
    wxmp::aws::secrets_manager(&env.sdk)
        .call(
            "PutSecretValue",
            &json!({ "SecretId": arn, "SecretString": secret_json(&env, "rotated-secret") }),
        )
        .await
        .expect("rotated");
    // The instance read the secret at start less than a minute ago: move its clock on.
    tokio::time::pause();
    tokio::time::advance(wxmp::appsecret::REREAD_INTERVAL).await;
    tokio::time::resume();

    // Five logins at once all meet the refusal; one re-read serves them all.
    let before = env.calls("/sns/jscode2session");
    let mut logins = tokio::task::JoinSet::new();
    for i in 0..5 {
        let code = env.sandbox().mint_login_code(&format!("bob{i}"));
        let app = app.clone();
        logins.spawn(async move { login(&app, &code).await });
    }
    let answers = logins.join_all().await;
    for r in &answers {
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    }
    let r = &answers[0];
    assert_eq!(
        env.calls("/sns/jscode2session") - before,
        10,
        "each refused once, then accepted"
    );
    // A code now comes too: the token fetch uses the new secret.
    let r = call_app(
        &app,
        "POST",
        "/qrcode",
        Some(r.json()["token"].as_str().unwrap()),
        br#"{"scene":"a=1"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));

    // A refused secret within the minute is not read again: WeChat's answer stands.
    env.sandbox().rotate_secret("yet-another".into());
    let code = env.sandbox().mint_login_code("carol");
    let r = login(&app, &code).await;
    assert_ne!(r.status, 200);
    assert_eq!(r.json()["error"]["wechat_errcode"], 40125);
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        !body.contains("rotated-secret") && !body.contains("yet-another") && !body.contains(&old),
        "{body}"
    );
}
