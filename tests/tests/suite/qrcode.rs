//! `POST /qrcode` and `POST /phone`, in-process against moto's S3 and DynamoDB and the sandbox,
//! and the real `qrcode` binary through the Lambda Runtime API.

use std::time::Duration;

use e2e::{Options, Reply, RuntimeApi, TestEnv, V2Response, moto, v2_event};
use serde_json::{Value, json};
use wechat_sandbox::{CodeParams, Faults, PhoneSpec, render_code};

const CODE_PATH: &str = "/wxa/getwxacodeunlimit";

fn params(scene: &str) -> CodeParams {
    CodeParams::defaults(scene)
}

async fn cached_env() -> TestEnv {
    TestEnv::with(Options {
        bucket: true,
        ..Default::default()
    })
    .await
}

async fn qrcode(env: &TestEnv, token: &str, body: Value) -> Reply {
    env.call("POST", "/qrcode", Some(token), body.to_string().as_bytes())
        .await
}

fn code_calls(env: &TestEnv) -> u64 {
    env.sandbox()
        .stats()
        .calls
        .get(CODE_PATH)
        .copied()
        .unwrap_or(0)
}

/// Waits until the background upload has put one object in the bucket, and returns its key.
async fn wait_for_object(env: &TestEnv) -> String {
    let s3 = moto::s3_client(&env.sdk);
    for _ in 0..100 {
        let out = s3
            .list_objects_v2()
            .bucket(env.bucket.as_ref().unwrap())
            .send()
            .await
            .unwrap();
        if let Some(key) = out.contents().first().and_then(|o| o.key()) {
            return key.to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the code was never stored in S3");
}

#[tokio::test]
async fn the_image_is_the_one_wechat_made_for_exactly_these_parameters() {
    let env = TestEnv::new().await;
    let token = env.login("alice").await;
    let r = qrcode(&env, &token, json!({"scene": "id=42", "page": "pages/index/index", "width": 600, "line_color": {"r": 200, "g": 10, "b": 10}, "is_hyaline": true})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert!(r.header("cache-control").unwrap().contains("immutable"));
    // No bucket configured: no cache header.
    assert_eq!(r.header("x-cache"), None);
    let expected = render_code(&CodeParams {
        page: Some("pages/index/index".into()),
        width: 600,
        line_color: (200, 10, 10),
        is_hyaline: true,
        ..params("id=42")
    });
    assert_eq!(r.body.as_ref(), expected.as_slice());
    assert_ne!(expected, render_code(&params("id=42")));
}

#[tokio::test]
async fn a_repeat_is_served_from_s3_without_calling_wechat() {
    let env = cached_env().await;
    let token = env.login("alice").await;
    let first = qrcode(&env, &token, json!({"scene": "id=7", "width": 430})).await;
    assert_eq!((first.status, first.header("x-cache")), (200, Some("miss")));
    let key = wait_for_object(&env).await;
    assert!(key.starts_with("codes/"), "{key}");

    // Same parameters, other order, defaults spelt out: the same object.
    let second = qrcode(
        &env,
        &token,
        json!({"env_version": "release", "scene": "id=7"}),
    )
    .await;
    assert_eq!(
        (second.status, second.header("x-cache")),
        (200, Some("hit"))
    );
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("content-type"), Some("image/png"));
    assert_eq!(code_calls(&env), 1, "a hit must not call WeChat");

    let s3 = moto::s3_client(&env.sdk);
    let head = s3
        .head_object()
        .bucket(env.bucket.as_ref().unwrap())
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("image/png"));

    // Other parameters: a miss.
    let other = qrcode(&env, &token, json!({"scene": "id=8"})).await;
    assert_eq!(other.header("x-cache"), Some("miss"));
    assert_eq!(code_calls(&env), 2);

    // "cache": false bypasses the cache both ways.
    let bypass = qrcode(&env, &token, json!({"scene": "id=7", "cache": false})).await;
    assert_eq!((bypass.status, bypass.header("x-cache")), (200, None));
    assert_eq!(bypass.body, first.body);
    assert_eq!(code_calls(&env), 3);
}

#[tokio::test]
async fn s3_down_still_serves_codes() {
    let env = cached_env().await;
    let token = env.login("alice").await;
    // An app whose S3 is a closed port: reads and writes fail, codes still come from WeChat.
    let dead = moto::sdk_config("http://127.0.0.1:9").await;
    let config = env.app.config.clone();
    let app = wxmp::App::new(config, env.store.clone()).with_code_cache(Some(
        wxmp::codecache::CodeCache::new(wxmp::aws::s3(&dead), env.bucket.clone().unwrap()),
    ));
    let started = std::time::Instant::now();
    let r = e2e::call_app(
        &app,
        "POST",
        "/qrcode",
        Some(&token),
        br#"{"scene":"s3down"}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-cache"), Some("miss"));
    assert_eq!(r.body.as_ref(), render_code(&params("s3down")).as_slice());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn invalid_input_is_refused_before_wechat_is_called() {
    let env = TestEnv::new().await;
    let token = env.login("alice").await;
    for (body, field) in [
        (json!({}), "scene"),
        (json!({"scene": ""}), "scene"),
        (json!({"scene": "x".repeat(33)}), "scene"),
        (json!({"scene": "名字"}), "scene"),
        (json!({"scene": "a%2Fb"}), "scene"),
        (json!({"scene": "a", "page": "/pages/index/index"}), "page"),
        (
            json!({"scene": "a", "page": "pages/index/index?x=1"}),
            "page",
        ),
        (json!({"scene": "a", "width": 100}), "width"),
        (json!({"scene": "a", "width": 2000}), "width"),
        (json!({"scene": "a", "width": "430"}), "width"),
        (json!({"scene": "a", "env_version": "prod"}), "env_version"),
        (
            json!({"scene": "a", "line_color": {"r": -1, "g": 0, "b": 0}}),
            "line_color.r",
        ),
        (
            json!({"scene": "a", "line_color": {"r": 0, "g": 300, "b": 0}}),
            "line_color.g",
        ),
        (json!({"scene": "a", "auto_color": "true"}), "auto_color"),
        (json!({"scene": "a", "is_hyaline": 0}), "is_hyaline"),
        (
            json!({"scene": "a", "check_path": null, "extra": 1}),
            "extra",
        ),
    ] {
        let r = qrcode(&env, &token, body.clone()).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.error_code(), "invalid_request");
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(field), "{body}: {msg}");
    }
    let r = env
        .call("POST", "/qrcode", Some(&token), b"{not json")
        .await;
    assert_eq!(r.status, 400);
    let r = env
        .call("POST", "/qrcode", Some(&token), &vec![b'x'; 20_000])
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "payload_too_large")
    );
    let r = env.call("GET", "/qrcode", Some(&token), b"").await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (405, "method_not_allowed")
    );
    assert_eq!(r.header("allow"), Some("POST"));
    assert_eq!(code_calls(&env), 0);
}

#[tokio::test]
async fn strangers_cannot_make_codes() {
    let env = TestEnv::new().await;
    for bearer in [None, Some("x".repeat(43))] {
        let r = env
            .call("POST", "/qrcode", bearer.as_deref(), br#"{"scene":"a"}"#)
            .await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (401, "unauthenticated")
        );
    }
    assert_eq!(code_calls(&env), 0);
}

#[tokio::test]
async fn strangers_get_no_code_even_one_that_is_cached() {
    let env = cached_env().await;
    let alice = env.login("alice").await;
    let body = json!({"scene": "kept"});
    assert_eq!(qrcode(&env, &alice, body.clone()).await.status, 200);
    // Logged out: the session is gone, the code is still kept (in S3 and in this instance).
    let gone = env.login("bob").await;
    assert_eq!(
        env.call("DELETE", "/session", Some(&gone), b"")
            .await
            .status,
        204
    );
    let stranger = wxmp::ids::new_session_token();
    // Another instance, whose code must come from S3 (this one keeps it in memory).
    let other = env.build_app();
    for token in [&stranger, &gone] {
        for app in [&env.app, &other] {
            let r = e2e::env::call_app(
                app,
                "POST",
                "/qrcode",
                Some(token),
                body.to_string().as_bytes(),
            )
            .await;
            assert_eq!(
                (r.status, r.error_code().as_str()),
                (401, "unauthenticated"),
                "{}",
                String::from_utf8_lossy(&r.body)
            );
            // And a bad body is still theirs to hear about only once they are logged in.
            let r = e2e::env::call_app(app, "POST", "/qrcode", Some(token), b"{").await;
            assert_eq!(
                (r.status, r.error_code().as_str()),
                (401, "unauthenticated")
            );
        }
    }
    let r = qrcode(&env, &alice, body).await;
    assert_eq!((r.status, r.header("x-cache")), (200, Some("hit")));
    let r = env.call("POST", "/qrcode", Some(&alice), b"{").await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "invalid_request")
    );
    assert_eq!(code_calls(&env), 1);
}

#[tokio::test]
async fn wechats_json_errors_map_to_the_contract_and_are_never_images() {
    let env = TestEnv::new().await;
    let token = env.login("alice").await;
    // The sandbox checks pages against the published version.
    let r = qrcode(
        &env,
        &token,
        json!({"scene": "a", "page": "pages/secret/index"}),
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "invalid_request")
    );
    assert_eq!(r.json()["error"]["wechat_errcode"], 41030);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    // check_path false accepts an unpublished page.
    let r = qrcode(
        &env,
        &token,
        json!({"scene": "a", "page": "pages/secret/index", "check_path": false}),
    )
    .await;
    assert_eq!(r.status, 200);

    for (errcode, status, code) in [
        (40169, 400, "invalid_request"),
        (40129, 400, "invalid_request"),
        (45009, 429, "rate_limited"),
        (40097, 400, "invalid_request"),
        (44990, 429, "rate_limited"),
    ] {
        env.script(CODE_PATH, errcode, 1);
        let r = qrcode(&env, &token, json!({"scene": "b"})).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (status, code),
            "errcode {errcode}"
        );
        assert_eq!(r.json()["error"]["wechat_errcode"], errcode);
    }

    env.sandbox().set_faults(Faults {
        busy_rate: 1.0,
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let r = qrcode(&env, &token, json!({"scene": "c"})).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (503, "wechat_unavailable")
    );
    assert_eq!(r.json()["error"]["wechat_errcode"], -1);
    // Retried for the 6 s budget, answered within it.
    assert!(started.elapsed() < Duration::from_millis(6500));
}

#[tokio::test]
async fn a_token_rejected_midway_is_refreshed_and_the_code_still_comes_back() {
    let env = TestEnv::new().await;
    let token = env.login("alice").await;
    assert_eq!(
        qrcode(&env, &token, json!({"scene": "warm"})).await.status,
        200
    );
    // WeChat now rejects the token the keeper holds (as after someone else's force refresh).
    env.sandbox().third_party_force_stable();
    let r = qrcode(&env, &token, json!({"scene": "after"})).await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.body.as_ref(), render_code(&params("after")).as_slice());
}

#[tokio::test]
async fn phone_numbers_come_back_for_a_valid_code_once() {
    let env = TestEnv::new().await;
    let token = env.login("alice").await;
    let code = env.sandbox().mint_phone_code(PhoneSpec {
        phone_number: "+1 2025550123".into(),
        pure_phone_number: "2025550123".into(),
        country_code: "1".into(),
    });
    let body = json!({ "code": code }).to_string();
    let r = env
        .call("POST", "/phone", Some(&token), body.as_bytes())
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"phone_number": "+1 2025550123", "pure_phone_number": "2025550123", "country_code": "1"})
    );
    let again = env
        .call("POST", "/phone", Some(&token), body.as_bytes())
        .await;
    assert_eq!(
        (again.status, again.error_code().as_str()),
        (400, "invalid_request")
    );
    assert_eq!(again.json()["error"]["wechat_errcode"], 40029);

    for bad in [&b"{}"[..], br#"{"code": 1}"#, br#"{"code": ""}"#, b"nope"] {
        let r = env.call("POST", "/phone", Some(&token), bad).await;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(bad));
    }
    let r = env.call("POST", "/phone", None, br#"{"code":"abc"}"#).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn a_phone_number_stamped_for_another_app_is_refused() {
    let env = TestEnv::new().await;
    let token = env.login("alice").await;
    env.sandbox().set_faults(Faults {
        watermark_appid: Some("wxsomeoneelse".into()),
        ..Default::default()
    });
    let r = env
        .call("POST", "/phone", Some(&token), br#"{"code":"p1"}"#)
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (502, "wechat_error"));
    assert!(!String::from_utf8_lossy(&r.body).contains("138"));
}

#[tokio::test]
async fn the_lambda_binary_returns_the_image_base64_encoded() {
    let env = cached_env().await;
    let token = env.login("alice").await;
    let api = RuntimeApi::start().await;
    let _function =
        e2e::FunctionProcess::spawn(&e2e::binary_path("qrcode"), &api, &env.function_env().await);

    let auth = format!("Bearer {token}");
    let event = v2_event(
        "POST",
        "/qrcode",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        Some(br#"{"scene":"bin=1"}"#),
        false,
    );
    let raw = api
        .invoke(event.clone())
        .await
        .expect("invocation succeeds");
    assert_eq!(raw["isBase64Encoded"], true, "{raw}");
    let r = V2Response::parse(&raw);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert_eq!(r.header("x-cache"), Some("miss"));
    assert_eq!(r.body, render_code(&params("bin=1")));

    // An error stays JSON text.
    let bad = v2_event(
        "POST",
        "/qrcode",
        &[("authorization", &auth)],
        Some(br#"{"scene":""}"#),
        false,
    );
    let raw = api.invoke(bad).await.expect("invocation succeeds");
    assert_eq!(raw["isBase64Encoded"], false, "{raw}");
    let r = V2Response::parse(&raw);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "invalid_request");

    // Routes of the login function are not served here.
    let login = v2_event("POST", "/login", &[], Some(br#"{"code":"x"}"#), false);
    let r = V2Response::parse(&api.invoke(login).await.unwrap());
    assert_eq!(r.status, 404);
}

/// Every object in the test's bucket.
async fn objects(env: &TestEnv) -> Vec<String> {
    let out = moto::s3_client(&env.sdk)
        .list_objects_v2()
        .bucket(env.bucket.as_ref().unwrap())
        .send()
        .await
        .unwrap();
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_body_that_is_not_a_png_or_jpeg_is_never_served_nor_cached() {
    let env = cached_env().await;
    let token = env.login("alice").await;
    for (content_type, body) in [
        ("image/jpeg", r#"{"errmsg":"system error"}"#),
        (
            "image/png",
            "\u{feff}{\"errcode\":40001,\"errmsg\":\"invalid credential\"}",
        ),
        ("image/png", ""),
        ("image/jpeg", "<html><body>busy</body></html>"),
    ] {
        // GIVEN WeChat answering the next code call with that body as an image
        env.sandbox().set_faults(Faults {
            bogus_image: Some(wechat_sandbox::BogusImage {
                content_type: content_type.into(),
                body: body.into(),
                count: 1,
            }),
            ..Default::default()
        });
        // WHEN a code is asked for, THEN 502 wechat_error, as JSON
        let r = qrcode(&env, &token, json!({"scene": "bogus"})).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (502, "wechat_error"),
            "{body:?}"
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    // AND nothing reached S3
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(objects(&env).await, Vec::<String>::new());

    // AND once WeChat answers with an image, the real code is served and cached
    let r = qrcode(&env, &token, json!({"scene": "bogus"})).await;
    assert_eq!((r.status, r.header("x-cache")), (200, Some("miss")));
    assert_eq!(r.body, render_code(&params("bogus")));
    let key = wait_for_object(&env).await;

    // AND an object in the cache that is not an image (written by someone else, or corrupted)
    // is not served: WeChat makes the code again
    moto::s3_client(&env.sdk)
        .put_object()
        .bucket(env.bucket.as_ref().unwrap())
        .key(&key)
        .content_type("image/png")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"{\"errcode\":-1}",
        ))
        .send()
        .await
        .unwrap();
    let before = code_calls(&env);
    let r = qrcode(&env, &token, json!({"scene": "bogus"})).await;
    assert_eq!((r.status, r.header("x-cache")), (200, Some("miss")));
    assert_eq!(r.body, render_code(&params("bogus")));
    assert_eq!(code_calls(&env), before + 1);
}

/// A TCP endpoint that accepts connections and never answers (a hung dependency).
fn hanging_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn an_overrun_of_the_lambda_deadline_names_the_part_that_was_slow() {
    let env = TestEnv::new().await;
    let token = env.login("alice").await;
    let auth = format!("Bearer {token}");
    let event = v2_event(
        "POST",
        "/qrcode",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        Some(br#"{"scene":"slow"}"#),
        false,
    );
    // A 2 s invocation: the function answers 0.5 s before the deadline.
    let budget = Duration::from_secs(2);

    // GIVEN a WeChat that takes 5 s to answer
    env.sandbox().set_faults(Faults {
        latency_ms: 5000,
        ..Default::default()
    });
    let api = RuntimeApi::start().await;
    let _f =
        e2e::FunctionProcess::spawn(&e2e::binary_path("qrcode"), &api, &env.function_env().await);
    let started = std::time::Instant::now();
    let r = V2Response::parse(
        &api.invoke_full(event.clone(), budget)
            .await
            .result
            .expect("answered"),
    );
    // THEN the answer comes before the deadline and blames WeChat
    assert!(started.elapsed() < budget, "{:?}", started.elapsed());
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (503, json!("wechat_unavailable"))
    );

    // GIVEN instead a DynamoDB that never answers
    env.sandbox().set_faults(Faults::default());
    let mut fenv = env.function_env().await;
    e2e::set_var(&mut fenv, "AWS_ENDPOINT_URL", &hanging_endpoint());
    let api = RuntimeApi::start().await;
    let _f = e2e::FunctionProcess::spawn(&e2e::binary_path("qrcode"), &api, &fenv);
    let started = std::time::Instant::now();
    let r = V2Response::parse(
        &api.invoke_full(event, budget)
            .await
            .result
            .expect("answered"),
    );
    // THEN the answer comes before the deadline and blames the store
    assert!(started.elapsed() < budget, "{:?}", started.elapsed());
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (503, json!("store_unavailable"))
    );
}

#[tokio::test]
async fn a_code_asked_again_is_answered_from_the_instances_memory() {
    // GIVEN the qrcode function as deployed (codes kept in memory by default) and one told to
    // keep none
    let env = cached_env().await;
    let token = env.login("poster").await;
    let api = RuntimeApi::start().await;
    let _kept =
        e2e::FunctionProcess::spawn(&e2e::binary_path("qrcode"), &api, &env.function_env().await);
    let none_api = RuntimeApi::start().await;
    let mut none_env = env.function_env().await;
    none_env.push(("CODE_CACHE_MEMORY_MB".into(), "0".into()));
    let _none = e2e::FunctionProcess::spawn(&e2e::binary_path("qrcode"), &none_api, &none_env);
    let auth = format!("Bearer {token}");
    let ask = |body: &'static [u8]| {
        v2_event(
            "POST",
            "/qrcode",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Some(body),
            false,
        )
    };
    let code = br#"{"scene":"share=42"}"#;

    // WHEN a code is made, its S3 copy then removed (as the bucket's lifecycle rule would),
    // and the same code asked for again
    let first = V2Response::parse(&api.invoke(ask(code)).await.unwrap());
    assert_eq!((first.status, first.header("x-cache")), (200, Some("miss")));
    let key = wait_for_object(&env).await;
    moto::s3_client(&env.sdk)
        .delete_object()
        .bucket(env.bucket.as_ref().unwrap())
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(code_calls(&env), 1);
    let again = V2Response::parse(&api.invoke(ask(code)).await.unwrap());

    // THEN the instance answers it from memory: a hit, the same image, WeChat not asked again
    assert_eq!((again.status, again.header("x-cache")), (200, Some("hit")));
    assert_eq!(again.body, first.body);
    assert_eq!(again.body, render_code(&params("share=42")));
    assert_eq!(code_calls(&env), 1);

    // AND an instance keeping none has only S3 (now without the code): WeChat makes it again
    let other = V2Response::parse(&none_api.invoke(ask(code)).await.unwrap());
    assert_eq!((other.status, other.header("x-cache")), (200, Some("miss")));
    assert_eq!(code_calls(&env), 2);

    // AND `"cache": false` still goes to WeChat, memory or not
    let bypass = V2Response::parse(
        &api.invoke(ask(br#"{"scene":"share=42","cache":false}"#))
            .await
            .unwrap(),
    );
    assert_eq!((bypass.status, bypass.header("x-cache")), (200, None));
    assert_eq!(code_calls(&env), 3);
}
