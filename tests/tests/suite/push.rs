//! The message push receiver: pushes built by the sandbox exactly as WeChat builds them (every
//! mode, both formats), received through the router every function runs, published to a real
//! EventBridge bus on moto and read back from the SQS queue its rule targets.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use e2e::TestEnv;
use e2e::env::Options;
use e2e::env::call_app_with_headers;
use serde_json::{Map, Value, json};
use wechat_sandbox::{PushFormat, PushMode, PushRequest, PushSpec, Sandbox, SandboxConfig};

pub async fn env() -> TestEnv {
    TestEnv::with(Options {
        bus: true,
        ..Default::default()
    })
    .await
}

pub fn spec(mode: PushMode, format: PushFormat, message: Value) -> PushSpec {
    PushSpec {
        mode,
        format,
        message: message.as_object().expect("object").clone(),
        timestamp: None,
        nonce: None,
    }
}

/// POST /push with the push's query and body, in-process.
pub async fn post(env: &TestEnv, req: &PushRequest) -> e2e::Reply {
    post_to(&env.app, req).await
}

pub async fn post_to(app: &wxmp::App, req: &PushRequest) -> e2e::Reply {
    call_app_with_headers(
        app,
        "POST",
        &format!("/push?{}", req.query_string()),
        &[("content-type", req.content_type)],
        req.body.as_bytes(),
    )
    .await
}

/// The env's app as a receiver without an EncodingAESKey (the console in plaintext mode).
pub fn plain_app(env: &TestEnv) -> wxmp::App {
    wxmp::App {
        push: Some(wxmp::push::PushKeys::new(&SandboxConfig::default().push_token, None).unwrap()),
        ..env.app.clone()
    }
}

fn text_message(n: u64) -> Value {
    json!({
        "ToUserName": "gh_sandbox000001",
        "FromUserName": "oUser000000000000000000000001",
        "CreateTime": 1_700_000_000u64 + n,
        "MsgType": "text",
        "Content": format!("hello <&> {n}"),
        "MsgId": 23_000_000_000_000_000u64 + n,
    })
}

fn assert_success(r: &e2e::Reply) {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(&r.body[..], b"success");
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
}

#[tokio::test]
async fn every_mode_and_format_is_published_once_as_one_json_shape() {
    let env = env().await;
    let bus = env.bus.as_ref().unwrap();
    let mut n = 0;
    let mut expected = Vec::new();
    for mode in [PushMode::Plain, PushMode::Compatible, PushMode::Safe] {
        for format in [PushFormat::Xml, PushFormat::Json] {
            n += 1;
            let msg = text_message(n);
            let req = env.sandbox().build_push(&spec(mode, format, msg.clone()));
            if mode == PushMode::Safe {
                assert!(!req.body.contains("hello"), "safe mode hides the message");
            }
            if mode == PushMode::Plain {
                // A receiver with an EncodingAESKey takes encrypted pushes only (a plaintext
                // signature covers no part of the body); the console in plaintext mode has none.
                let r = post(&env, &req).await;
                assert_eq!((r.status, r.error_code().as_str()), (403, "forbidden"));
                assert_success(&post_to(&plain_app(&env), &req).await);
            } else {
                assert_success(&post(&env, &req).await);
            }
            expected.push(msg);
        }
    }
    let got = bus.take_exactly(6).await;
    assert_eq!(got.len(), 6, "{got:#?}");
    for (event, msg) in got.iter().zip(&expected) {
        assert_eq!(event["source"], "wechat.miniprogram");
        assert_eq!(event["detail-type"], "text");
        // Numbers as numbers, strings as strings, whatever the format.
        assert_eq!(&event["detail"], msg, "{event:#}");
    }
}

#[tokio::test]
async fn the_verification_echoes_only_a_signed_echostr() {
    let env = env().await;
    let req = env
        .sandbox()
        .build_push(&spec(PushMode::Plain, PushFormat::Xml, json!({})));
    let q = format!("/push?{}&echostr=4750372548593", req.query_string());
    let r = env.call("GET", &q, None, b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"4750372548593");
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    // A signature made with another token: 403, the echostr not echoed.
    let forged = q.replace(
        &req.query[0].1,
        &wechat_sandbox::sign(&["not-the-token", &req.query[1].1, &req.query[2].1]),
    );
    let r = env.call("GET", &forged, None, b"").await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "forbidden"));
    assert!(!String::from_utf8_lossy(&r.body).contains("4750372548593"));
    let r = env.call("GET", "/push?echostr=1", None, b"").await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn wechat_retries_are_published_once_and_media_results_are_told_apart() {
    let env = env().await;
    let bus = env.bus.as_ref().unwrap();
    let req = env
        .sandbox()
        .build_push(&spec(PushMode::Safe, PushFormat::Xml, text_message(1)));
    for _ in 0..3 {
        assert_success(&post(&env, &req).await);
    }
    // WeChat's retry is a new request (new timestamp and nonce) for the same message.
    let mut again = spec(PushMode::Safe, PushFormat::Json, text_message(1));
    again.nonce = Some("another".into());
    assert_success(&post(&env, &env.sandbox().build_push(&again)).await);
    // Two media-check results in the same second from the same user differ by trace_id.
    for trace in ["trace-a", "trace-b", "trace-a"] {
        let m = json!({"ToUserName": "gh_sandbox000001", "FromUserName": "oUser000000000000000000000001",
            "CreateTime": 1_700_000_100u64, "MsgType": "event", "Event": "wxa_media_check",
            "appid": "wx", "trace_id": trace, "version": 2,
            "result": {"suggest": "pass", "label": 100}});
        assert_success(
            &post(
                &env,
                &env.sandbox()
                    .build_push(&spec(PushMode::Safe, PushFormat::Json, m)),
            )
            .await,
        );
    }
    let got = bus.take_exactly(3).await;
    let types: Vec<_> = got
        .iter()
        .map(|e| e["detail-type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types,
        ["text", "wxa_media_check", "wxa_media_check"],
        "{got:#?}"
    );
    assert_eq!(got[1]["detail"]["trace_id"], "trace-a");
    assert_eq!(got[2]["detail"]["trace_id"], "trace-b");
}

#[tokio::test]
async fn list_is_an_array_for_one_item_and_for_several() {
    let env = env().await;
    let bus = env.bus.as_ref().unwrap();
    let one = json!({"ToUserName": "gh_sandbox000001", "FromUserName": "oUser000000000000000000000002",
        "CreateTime": 1_700_000_200u64, "MsgType": "event", "Event": "subscribe_msg_popup_event",
        "List": {"TemplateId": "T1", "SubscribeStatusString": "accept", "PopupScene": "0"}});
    let mut two = one.clone();
    two["CreateTime"] = json!(1_700_000_201u64);
    two["List"] = json!([
        {"TemplateId": "T1", "SubscribeStatusString": "accept", "PopupScene": 0},
        {"TemplateId": "T2", "SubscribeStatusString": "reject", "PopupScene": 0},
    ]);
    for (msg, format) in [
        (&one, PushFormat::Json),
        (&two, PushFormat::Xml),
        (&one, PushFormat::Xml),
    ] {
        let mut m = msg.clone();
        if format == PushFormat::Xml && m["List"].is_object() {
            // XML cannot tell one item from a list of one: the same push as JSON.
            m["CreateTime"] = json!(1_700_000_202u64);
        }
        assert_success(
            &post(
                &env,
                &env.sandbox().build_push(&spec(PushMode::Safe, format, m)),
            )
            .await,
        );
    }
    let got = bus.take_exactly(3).await;
    assert_eq!(got.len(), 3);
    let single = json!([{"TemplateId": "T1", "SubscribeStatusString": "accept", "PopupScene": 0}]);
    assert_eq!(got[0]["detail"]["List"], single);
    assert_eq!(got[1]["detail"]["List"].as_array().unwrap().len(), 2);
    assert_eq!(got[2]["detail"]["List"], single);
    assert!(
        got[1]["detail"].get("SubscribeMsgPopupEvent").is_none(),
        "XML's wrapper is lifted"
    );
}

/// Flips bits of the ciphertext in a safe-mode JSON push (CBC: a flip in block k-1 flips the
/// same bit of plaintext block k), re-signing it so that only the decryption can catch it.
fn tamper(req: &PushRequest, at_from_end: usize, bits: u8) -> PushRequest {
    let body: Value = serde_json::from_str(&req.body).unwrap();
    let mut raw = STANDARD.decode(body["Encrypt"].as_str().unwrap()).unwrap();
    let n = raw.len();
    raw[n - at_from_end] ^= bits;
    let enc = STANDARD.encode(raw);
    let mut out = req.clone();
    out.body = json!({"ToUserName": body["ToUserName"], "Encrypt": enc}).to_string();
    let q: Map<String, Value> = req
        .query
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let sig = wechat_sandbox::sign(&[
        &SandboxConfig::default().push_token,
        q["timestamp"].as_str().unwrap(),
        q["nonce"].as_str().unwrap(),
        &enc,
    ]);
    for (k, v) in out.query.iter_mut() {
        if k == "msg_signature" {
            *v = sig.clone();
        }
    }
    out
}

#[tokio::test]
async fn bad_pushes_are_refused_and_nothing_is_published() {
    let env = env().await;
    let bus = env.bus.as_ref().unwrap();
    let secret_text = "PRIVATE-CONTENT-42";
    let msg = json!({"FromUserName": "oUser000000000000000000000003", "CreateTime": 1_700_000_300u64,
        "MsgType": "text", "Content": secret_text, "MsgId": 99u64});
    let safe = env
        .sandbox()
        .build_push(&spec(PushMode::Safe, PushFormat::Json, msg.clone()));
    let plain = env
        .sandbox()
        .build_push(&spec(PushMode::Plain, PushFormat::Xml, msg.clone()));
    let set = |req: &PushRequest, key: &str, value: &str| {
        let mut r = req.clone();
        for (k, v) in r.query.iter_mut() {
            if k == key {
                *v = value.to_string();
            }
        }
        r
    };
    let with_body = |req: &PushRequest, body: &str| PushRequest {
        body: body.to_string(),
        ..req.clone()
    };
    // Another app's push (the same token and key, another app id inside).
    let other_app = Sandbox::new(SandboxConfig {
        appid: "wxotherapp0000000001".into(),
        ..SandboxConfig::default()
    })
    .build_push(&spec(PushMode::Safe, PushFormat::Xml, msg.clone()));
    // A stale push (a replay): 6 minutes old, correctly signed.
    let mut stale = spec(PushMode::Plain, PushFormat::Json, msg.clone());
    stale.timestamp = Some(wxmp::now_secs() - 360);
    let stale = env.sandbox().build_push(&stale);
    let cases: Vec<(&str, PushRequest, u16, &str)> = vec![
        (
            "wrong signature",
            set(&plain, "signature", &"0".repeat(40)),
            403,
            "forbidden",
        ),
        (
            "no signature",
            PushRequest {
                query: plain.query[1..].to_vec(),
                ..plain.clone()
            },
            403,
            "forbidden",
        ),
        (
            "wrong msg_signature",
            set(&safe, "msg_signature", &"1".repeat(40)),
            403,
            "forbidden",
        ),
        ("bad padding", tamper(&safe, 17, 0x40), 403, "forbidden"),
        (
            "tampered ciphertext",
            tamper(&safe, 40, 0x01),
            403,
            "forbidden",
        ),
        ("foreign app id", other_app, 403, "forbidden"),
        ("stale timestamp", stale, 403, "forbidden"),
        (
            "malformed XML",
            with_body(&plain, "<xml><MsgType>text</Content></xml>"),
            400,
            "invalid_request",
        ),
        (
            "malformed JSON",
            with_body(&plain, &format!("{{\"Content\": {secret_text}")),
            400,
            "invalid_request",
        ),
        (
            "neither Event nor MsgType",
            with_body(&plain, "{\"Content\":\"x\"}"),
            400,
            "invalid_request",
        ),
        (
            "not UTF-8",
            PushRequest {
                body: String::from_utf8_lossy(&[0xff, 0xfe]).into_owned(),
                ..plain.clone()
            },
            400,
            "invalid_request",
        ),
        (
            "over the size cap",
            with_body(
                &plain,
                &format!("<xml><Content>{}</Content></xml>", "x".repeat(70_000)),
            ),
            413,
            "payload_too_large",
        ),
    ];
    let plain_receiver = plain_app(&env);
    for (what, req, status, code) in &cases {
        // Plaintext pushes go to a receiver in plaintext mode, encrypted ones to the keyed one.
        let encrypted = req.query.iter().any(|(k, _)| k == "msg_signature");
        let r = if encrypted {
            post(&env, req).await
        } else {
            post_to(&plain_receiver, req).await
        };
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (*status, *code),
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains(secret_text),
            "{what}"
        );
    }
    // A plaintext push's signature replayed with another body (it covers no part of it): the
    // first body goes through, the other is refused; the same body again is WeChat's retry.
    let first = env.sandbox().build_push(&spec(
        PushMode::Plain,
        PushFormat::Json,
        json!({"MsgType": "text", "Content": "hi", "MsgId": 5, "CreateTime": 1}),
    ));
    assert_success(&post_to(&plain_receiver, &first).await);
    assert_success(&post_to(&plain_receiver, &first).await);
    let forged = with_body(
        &first,
        &format!(
            "{{\"MsgType\":\"text\",\"Content\":\"{secret_text}\",\"MsgId\":6,\"CreateTime\":1}}"
        ),
    );
    let r = post_to(&plain_receiver, &forged).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "forbidden"));
    assert_eq!(
        bus.take_exactly(1).await.len(),
        1,
        "the first body only, once"
    );
    // A plaintext push to the receiver with a key: refused (it takes encrypted pushes only).
    let r = post(&env, &plain).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "forbidden"));
    // A push posing as one of the project's own events.
    let posing = env.sandbox().build_push(&spec(PushMode::Safe, PushFormat::Json,
        json!({"MsgType": "event", "Event": "wechat.subscribe.send", "openid": "x", "CreateTime": 1})));
    let r = post(&env, &posing).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "invalid_request")
    );
    // A receiver whose EncodingAESKey is another one.
    let wrong_key = env.build_app_with(
        &[(
            "WECHAT_PUSH_AES_KEY",
            "zyxwvutsrqponmlkjihgfedcba9876543210ZYXWVUT",
        )],
        env.store.clone(),
    );
    let r = post_to(&wrong_key, &safe).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "forbidden"));
    // A receiver with no key at all gets a safe-mode push.
    let mut pairs_no_key = env.build_app_with(&[], env.store.clone());
    pairs_no_key.push =
        Some(wxmp::push::PushKeys::new(&SandboxConfig::default().push_token, None).unwrap());
    let r = post_to(&pairs_no_key, &safe).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "forbidden"));
    assert!(
        bus.take_exactly(0).await.is_empty(),
        "nothing was published"
    );
    // The good push still goes through afterwards.
    assert_success(&post(&env, &safe).await);
    let got = bus.take_exactly(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["detail"]["Content"], secret_text);
}

#[tokio::test]
async fn a_bus_failure_answers_503_and_wechats_retry_publishes() {
    let env = env().await;
    let bus = env.bus.as_ref().unwrap();
    let req = env
        .sandbox()
        .build_push(&spec(PushMode::Safe, PushFormat::Xml, text_message(7)));
    let broken = env.build_app_with(&[("EVENT_BUS_NAME", "no-such-bus")], env.store.clone());
    let broken = wxmp::App {
        events: Some(std::sync::Arc::new(wxmp::events::EventBridgeSink::new(
            wxmp::aws::eventbridge(&env.sdk),
            "no-such-bus",
        ))),
        ..broken
    };
    let r = post_to(&broken, &req).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (503, "store_unavailable"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // The claim was given back: WeChat's retry reaches the bus.
    assert_success(&post(&env, &req).await);
    let got = bus.take_exactly(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["detail"]["MsgId"], text_message(7)["MsgId"]);
}

/// Serves the push function's routes of `env`'s app on a local port: its `/push` URL.
pub async fn serve(env: &TestEnv) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/push", listener.local_addr().unwrap());
    let router = wxmp::routes::router(std::sync::Arc::new(env.app.clone()), wxmp::Surface::Push);
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

#[tokio::test]
async fn the_sandbox_delivers_over_http_to_a_served_receiver() {
    let env = env().await;
    let bus = env.bus.as_ref().unwrap();
    let url = serve(&env).await;
    for (mode, format) in [
        (PushMode::Safe, PushFormat::Xml),
        (PushMode::Compatible, PushFormat::Json),
    ] {
        let (status, body) = env
            .sandbox()
            .push(&url, &spec(mode, format, text_message(format as u64 + 10)))
            .await
            .unwrap();
        assert_eq!((status, body.as_str()), (200, "success"));
    }
    assert_eq!(bus.take_exactly(2).await.len(), 2);
}

#[tokio::test]
async fn a_retry_while_the_first_delivery_still_publishes_is_told_to_come_back() {
    let env = env().await;
    let bus = env.bus.as_ref().unwrap();
    let msg = text_message(77);
    let req = env
        .sandbox()
        .build_push(&spec(PushMode::Safe, PushFormat::Xml, msg.clone()));
    // Another instance is publishing this push right now (it holds the short lease).
    let key = format!(
        "push#{}",
        wxmp::push::message::dedup_key(msg.as_object().unwrap())
    );
    let now = wxmp::now_secs();
    assert!(env.store_claim(&key, "other-instance", now + 30, now).await);
    let r = post(&env, &req).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (503, "store_unavailable")
    );
    assert!(bus.take_exactly(0).await.is_empty());
    // That instance died; its lease runs out; WeChat's next retry publishes the push.
    env.app
        .store
        .release_claim(&key, "other-instance")
        .await
        .unwrap();
    assert_success(&post(&env, &req).await);
    assert_eq!(bus.take_exactly(1).await.len(), 1);
    // And after that, a retry is answered success without a second event.
    assert_success(&post(&env, &req).await);
    assert!(bus.take_exactly(0).await.is_empty());
}
