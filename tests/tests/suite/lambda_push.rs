//! The real `push` and `notify` binaries, run as Lambda runs them (Runtime API emulator): API
//! Gateway v2 events into `push` (the stage in the path, a base64 body), EventBridge events as
//! moto's bus delivered them into `notify`; DynamoDB and EventBridge are moto, WeChat the sandbox.

use e2e::runtime_api::DEFAULT_INVOKE_TIMEOUT;
use e2e::{FunctionProcess, RuntimeApi, V2Response, binary_path, v2_event, with_stage};
use serde_json::{Value, json};
use wechat_sandbox::{PushFormat, PushMode};

use crate::push::{env, spec};

struct Function {
    api: RuntimeApi,
    process: FunctionProcess,
}

impl Function {
    async fn start(name: &str, vars: &[(String, String)]) -> Self {
        let api = RuntimeApi::start().await;
        let process = FunctionProcess::spawn(&binary_path(name), &api, vars);
        Function { api, process }
    }

    async fn invoke(&self, event: Value) -> Value {
        let inv = self.api.invoke_full(event, DEFAULT_INVOKE_TIMEOUT).await;
        inv.result.unwrap_or_else(|e| {
            panic!(
                "invocation failed: {e}\n--- output ---\n{}",
                self.process.output()
            )
        })
    }
}

#[tokio::test]
async fn pushes_through_the_push_binary_reach_the_notify_binary() {
    let env = env().await;
    let bus = env.bus.as_ref().unwrap();
    let vars = env.function_env().await;
    let push = Function::start("push", &vars).await;
    let notify = Function::start("notify", &vars).await;
    let openid = env.sandbox().openid_for("dora");
    let template = "TPL_BOOKING_REMINDER_000000000000000000000";
    let secret_text = "DO-NOT-LOG-ME";

    // A safe-mode XML popup answer, its body base64-encoded by API Gateway, under a stage.
    let message = json!({"ToUserName": "gh_sandbox000001", "FromUserName": openid,
        "CreateTime": 1_700_000_000u64, "MsgType": "event", "Event": "subscribe_msg_popup_event",
        "List": [{"TemplateId": template, "SubscribeStatusString": "accept", "PopupScene": 0}]});
    env.sandbox().grant(&openid, template, 1, false);
    let req = env
        .sandbox()
        .build_push(&spec(PushMode::Safe, PushFormat::Xml, message));
    let path = format!("/push?{}", req.query_string());
    let event = v2_event(
        "POST",
        &path,
        &[("content-type", "text/xml")],
        Some(req.body.as_bytes()),
        true,
    );
    let r = V2Response::parse(&push.invoke(with_stage(event, "prod")).await);
    assert_eq!((r.status, r.text().as_str()), (200, "success"));
    // Verification through the binary: text/plain, not base64.
    let verify = format!("/push?{}&echostr=abc123", req.query_string());
    let raw = push
        .invoke(v2_event("GET", &verify, &[], None, false))
        .await;
    let r = V2Response::parse(&raw);
    assert_eq!(
        (r.status, r.text().as_str(), r.is_base64),
        (200, "abc123", false),
        "{raw}"
    );
    // A forged push: 403 JSON, and nothing of its body in the function's logs.
    let forged = format!(
        "/push?signature={}&timestamp={}&nonce=1",
        "0".repeat(40),
        wxmp::now_secs()
    );
    let body = format!("<xml><MsgType>text</MsgType><Content>{secret_text}</Content></xml>");
    let r = V2Response::parse(
        &push
            .invoke(v2_event("POST", &forged, &[], Some(body.as_bytes()), false))
            .await,
    );
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );

    let pushed = bus.take_exactly(1).await;
    assert_eq!(pushed.len(), 1, "{pushed:#?}");
    assert_eq!(pushed[0]["detail-type"], "subscribe_msg_popup_event");
    // EventBridge invokes notify with the event as it delivered it to the queue.
    let out = notify.invoke(pushed[0].clone()).await;
    assert_eq!(out, json!("Ledger(1)"));
    let send = json!({"openid": openid, "template_id": template,
        "data": {"thing1": {"value": "tomorrow 9:00"}}, "idempotency_key": "booking-7"});
    bus.put("test.sender", "wechat.subscribe.send", &send).await;
    let sends = bus.take_exactly(1).await;
    assert_eq!(notify.invoke(sends[0].clone()).await, json!("Sent(Sent)"));
    let results = bus.take_exactly(1).await;
    assert_eq!(results[0]["detail"]["status"], "sent", "{results:#?}");
    assert_eq!(env.sandbox().subscribe_messages().len(), 1);

    // One line per event, with the Lambda request id and X-Ray's trace id; and the metrics.
    let handled = notify.process.log_lines("event handled");
    assert_eq!(handled.len(), 2, "{}", notify.process.output());
    assert!(handled.iter().all(|l| {
        l["trace_id"]
            .as_str()
            .is_some_and(|t| t.starts_with("Root=1-"))
    }));
    assert_eq!(handled[0]["outcome"], "\"Ledger(1)\"");
    assert!(
        notify.process.output().contains("\"function\":\"notify\""),
        "EMF lines"
    );
    let logs = format!("{}{}", push.process.output(), notify.process.output());
    assert!(!logs.contains(secret_text), "a refused body was logged");
    assert!(
        !logs.contains(&wechat_sandbox::SandboxConfig::default().push_token),
        "the push token was logged"
    );
    assert!(logs.contains("push published"), "{logs}");
}

#[tokio::test]
async fn the_push_function_refuses_to_start_without_its_configuration() {
    let env = env().await;
    for missing in ["WECHAT_PUSH_TOKEN", "EVENT_BUS_NAME"] {
        let vars: Vec<_> = env
            .function_env()
            .await
            .into_iter()
            .filter(|(k, _)| {
                k != missing && !(missing == "WECHAT_PUSH_TOKEN" && k == "WECHAT_PUSH_AES_KEY")
            })
            .collect();
        let mut f = Function::start("push", &vars).await;
        // Either the runtime reports an init error or the process exits with the reason.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let reason = loop {
            if let Some(e) = f.api.init_error() {
                break e.to_string();
            }
            if let Some(status) = f.process.try_exit_status() {
                assert!(!status.success(), "{status}");
                f.process
                    .wait_for_output(missing, std::time::Duration::from_secs(2))
                    .await;
                break f.process.output();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{missing}: the function started"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert!(reason.contains(missing), "{missing}: {reason}");
    }
}
