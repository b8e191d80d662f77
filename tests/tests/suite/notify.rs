//! Subscribe messages end to end: the sandbox pushes a user's answer to a popup, the receiver
//! puts it on moto's EventBridge bus, the notify function's work (fed each event as it arrives
//! in the rule's SQS queue, as Lambda would be invoked) keeps the grant ledger, sends through the
//! sandbox's `subscribe/send` and answers with result events on the same bus.

use serde_json::{Value, json};
use wechat_sandbox::{PushFormat, PushMode};
use wxmp::events::BusEvent;
use wxmp::notify::{Outcome, send::Status};

use crate::push::{env, serve, spec};

const ONE_TIME: &str = "TPL_ORDER_SHIPPED_0000000000000000000000000";
const LONG_TERM: &str = "TPL_LONG_TERM_SERVICE_00000000000000000000";
const SEND_PATH: &str = "/cgi-bin/message/subscribe/send";

/// Hands one event, as the queue received it, to the notify function's handler.
async fn deliver(env: &e2e::TestEnv, event: &Value) -> Outcome {
    let event: BusEvent = serde_json::from_value(event.clone()).expect("an EventBridge event");
    wxmp::notify::handle(&env.app, &event)
        .await
        .expect("handled")
}

/// The one event now on the bus (a test's own step produced it).
async fn next(env: &e2e::TestEnv) -> Value {
    let got = env.bus.as_ref().unwrap().take_exactly(1).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    got.into_iter().next().unwrap()
}

fn popup(openid: &str, items: Value, at: u64) -> Value {
    json!({"ToUserName": "gh_sandbox000001", "FromUserName": openid, "CreateTime": at,
           "MsgType": "event", "Event": "subscribe_msg_popup_event", "List": items})
}

fn send_detail(openid: &str, template: &str, key: &str) -> Value {
    json!({"openid": openid, "template_id": template, "page": "pages/index/index?order=42",
           "data": {"thing1": {"value": "shipped"}, "time2": {"value": "2026-11-24 10:00"}},
           "miniprogram_state": "formal", "lang": "zh_CN", "idempotency_key": key})
}

/// Puts a send on the bus as another service would, delivers it to notify, and returns what
/// notify made of it with the result event it published (if any).
async fn send(env: &e2e::TestEnv, detail: Value) -> (Outcome, Option<Value>) {
    let bus = env.bus.as_ref().unwrap();
    bus.put("test.sender", "wechat.subscribe.send", &detail)
        .await;
    let outcome = deliver(env, &next(env).await).await;
    let results = bus
        .take_exactly(usize::from(outcome != Outcome::Duplicate))
        .await;
    assert!(results.len() <= 1, "{results:#?}");
    let result = results.into_iter().next();
    if let Some(r) = &result {
        assert_eq!(r["source"], "wxmp.notify");
        assert_eq!(r["detail-type"], "wechat.subscribe.result");
    }
    (outcome, result.map(|r| r["detail"].clone()))
}

async fn grants(env: &e2e::TestEnv, token: &str) -> Value {
    let r = env.call("GET", "/subscriptions", Some(token), b"").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["grants"].clone()
}

#[tokio::test]
async fn an_accepted_popup_lets_exactly_one_message_through() {
    let env = env().await;
    let url = serve(&env).await;
    let token = env.login("alice").await;
    let openid = env.sandbox().openid_for("alice");
    assert_eq!(grants(&env, &token).await, json!([]));
    // The user accepts the popup: WeChat records the grant and pushes the answer.
    let items =
        json!([{"TemplateId": ONE_TIME, "SubscribeStatusString": "accept", "PopupScene": 0}]);
    let (status, _) = env
        .sandbox()
        .push(
            &url,
            &spec(
                PushMode::Safe,
                PushFormat::Xml,
                popup(&openid, items, 1_700_000_000),
            ),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let pushed = next(&env).await;
    assert_eq!(deliver(&env, &pushed).await, Outcome::Ledger(1));
    // EventBridge may deliver the same event twice: the grant is counted once.
    assert_eq!(deliver(&env, &pushed).await, Outcome::Duplicate);
    assert_eq!(
        grants(&env, &token).await,
        json!([{"template_id": ONE_TIME, "one_time": 1, "long_term": false}])
    );

    let (outcome, result) = send(&env, send_detail(&openid, ONE_TIME, "order-42-shipped")).await;
    assert_eq!(outcome, Outcome::Sent(Status::Sent));
    let result = result.unwrap();
    assert_eq!(result["status"], "sent");
    assert_eq!(result["idempotency_key"], "order-42-shipped");
    assert_eq!(result["errcode"], Value::Null);
    let sent = env.sandbox().subscribe_messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["touser"], openid.as_str());
    assert_eq!(sent[0]["data"]["thing1"]["value"], "shipped");
    assert_eq!(sent[0]["page"], "pages/index/index?order=42");

    // The same send delivered again: not sent again, no second result.
    let (outcome, result) = send(&env, send_detail(&openid, ONE_TIME, "order-42-shipped")).await;
    assert_eq!((outcome, result), (Outcome::Duplicate, None));
    // Another message: the grant is used up, WeChat is not called.
    let calls = env.calls(SEND_PATH);
    let (outcome, result) = send(&env, send_detail(&openid, ONE_TIME, "order-43-shipped")).await;
    assert_eq!(outcome, Outcome::Sent(Status::NotSubscribed));
    assert_eq!(result.unwrap()["status"], "not_subscribed");
    assert_eq!(env.calls(SEND_PATH), calls);
    assert_eq!(env.sandbox().subscribe_messages().len(), 1);
    assert_eq!(grants(&env, &token).await, json!([]));
}

#[tokio::test]
async fn popups_with_several_items_and_setting_changes_keep_the_ledger() {
    let env = env().await;
    let url = serve(&env).await;
    let token = env.login("bob").await;
    let openid = env.sandbox().openid_for("bob");
    let both = |a: &str, b: &str| {
        json!([{"TemplateId": ONE_TIME, "SubscribeStatusString": a, "PopupScene": 0},
               {"TemplateId": LONG_TERM, "SubscribeStatusString": b, "PopupScene": 0}])
    };
    let mut at = 1_700_000_000;
    let mut push = |message: Value, format| {
        at += 1;
        let mut m = message;
        m["CreateTime"] = json!(at);
        let (env, url) = (&env, &url);
        async move {
            let (s, _) = env
                .sandbox()
                .push(url, &spec(PushMode::Compatible, format, m))
                .await
                .unwrap();
            assert_eq!(s, 200);
            let event = next(env).await;
            deliver(env, &event).await
        }
    };
    assert_eq!(
        push(
            popup(&openid, both("accept", "accept"), 0),
            PushFormat::Json
        )
        .await,
        Outcome::Ledger(2)
    );
    assert_eq!(
        push(popup(&openid, both("accept", "reject"), 0), PushFormat::Xml).await,
        Outcome::Ledger(2)
    );
    assert_eq!(
        grants(&env, &token).await,
        json!([{"template_id": ONE_TIME, "one_time": 2, "long_term": false}])
    );
    // "Always allow" in the settings: a standing grant, used without counting down.
    let change = |status: &str| {
        json!({"ToUserName": "gh_sandbox000001", "FromUserName": openid, "CreateTime": 0,
               "MsgType": "event", "Event": "subscribe_msg_change_event",
               "List": {"TemplateId": LONG_TERM, "SubscribeStatusString": status}})
    };
    assert_eq!(
        push(change("accept"), PushFormat::Json).await,
        Outcome::Ledger(1)
    );
    for key in ["lt-1", "lt-2"] {
        let (outcome, _) = send(&env, send_detail(&openid, LONG_TERM, key)).await;
        assert_eq!(outcome, Outcome::Sent(Status::Sent));
    }
    assert_eq!(
        grants(&env, &token).await,
        // By template id.
        json!([{"template_id": LONG_TERM, "one_time": 0, "long_term": true},
               {"template_id": ONE_TIME, "one_time": 2, "long_term": false}])
    );
    assert_eq!(
        push(change("reject"), PushFormat::Xml).await,
        Outcome::Ledger(1)
    );
    // The user rejects the one-time template in a popup: its grants are gone.
    assert_eq!(
        push(
            popup(
                &openid,
                json!({"TemplateId": ONE_TIME, "SubscribeStatusString": "reject"}),
                0
            ),
            PushFormat::Json
        )
        .await,
        Outcome::Ledger(1)
    );
    assert_eq!(grants(&env, &token).await, json!([]));
}

#[tokio::test]
async fn wechats_refusals_are_results_and_an_unused_grant_is_given_back() {
    let env = env().await;
    let token = env.login("carol").await;
    let openid = env.sandbox().openid_for("carol");
    // Grants in WeChat's record and in the ledger alike (as after an accepted popup).
    env.sandbox().grant(&openid, ONE_TIME, 1, false);
    env.app
        .store
        .change_grant(&openid, ONE_TIME, wxmp::store::GrantChange::AddOneTime)
        .await
        .unwrap();
    let one_left = json!([{"template_id": ONE_TIME, "one_time": 1, "long_term": false}]);
    let cases = [
        (
            "bad data",
            {
                let mut d = send_detail(&openid, ONE_TIME, "k-data");
                d["data"]["thing1"]["value"] = json!("far too long for a thing field, WeChat says");
                d
            },
            47003,
        ),
        (
            "unpublished page",
            {
                let mut d = send_detail(&openid, ONE_TIME, "k-page");
                d["page"] = json!("pages/missing/index");
                d
            },
            41030,
        ),
        (
            "unknown template",
            {
                let mut d = send_detail(&openid, "TPL_NOT_PICKED", "k-tpl");
                d["long_term"] = json!(true);
                d
            },
            40037,
        ),
        (
            "foreign openid",
            {
                let mut d = send_detail("not-an-openid-of-this-app", LONG_TERM, "k-openid");
                d["long_term"] = json!(true);
                d
            },
            40003,
        ),
    ];
    for (what, detail, errcode) in cases {
        let (outcome, result) = send(&env, detail).await;
        assert_eq!(outcome, Outcome::Sent(Status::Invalid), "{what}");
        let result = result.unwrap();
        assert_eq!(
            (result["status"].as_str(), result["errcode"].as_i64()),
            (Some("invalid"), Some(errcode)),
            "{what}: {result}"
        );
        assert_eq!(
            grants(&env, &token).await,
            one_left,
            "{what}: the grant is the user's still"
        );
    }
    // A detail the notify function cannot read: invalid, WeChat not called.
    let calls = env.calls(SEND_PATH);
    let (outcome, result) = send(
        &env,
        json!({"openid": openid, "template_id": ONE_TIME, "data": {"thing1": {"value": "x"}}}),
    )
    .await;
    assert_eq!(outcome, Outcome::Sent(Status::Invalid));
    assert!(
        result.unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("idempotency_key")
    );
    assert_eq!(env.calls(SEND_PATH), calls);
    // WeChat busy once, then a rejected token: retried within the budget, the keeper refreshes.
    env.script(SEND_PATH, -1, 1);
    env.sandbox().invalidate_all_tokens();
    let (outcome, _) = send(&env, send_detail(&openid, ONE_TIME, "k-ok")).await;
    assert_eq!(outcome, Outcome::Sent(Status::Sent));
    assert_eq!(grants(&env, &token).await, json!([]));
    // WeChat sends the message but its answer is lost (a gateway's 502): the outcome is
    // unknown, so the key stays used (a redelivery sends nothing) and so does the grant.
    env.sandbox().grant(&openid, ONE_TIME, 1, false);
    env.app
        .store
        .change_grant(&openid, ONE_TIME, wxmp::store::GrantChange::AddOneTime)
        .await
        .unwrap();
    env.sandbox().set_faults(wechat_sandbox::Faults {
        lost_answers: vec![wechat_sandbox::LostAnswer {
            path: SEND_PATH.into(),
            count: 1,
            only_force: false,
        }],
        ..Default::default()
    });
    let sent_before = env.sandbox().subscribe_messages().len();
    let (outcome, result) = send(&env, send_detail(&openid, ONE_TIME, "k-lost")).await;
    assert_eq!(outcome, Outcome::Sent(Status::Failed));
    assert!(
        result.unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("unknown")
    );
    assert_eq!(
        env.sandbox().subscribe_messages().len(),
        sent_before + 1,
        "WeChat did send it"
    );
    let (outcome, _) = send(&env, send_detail(&openid, ONE_TIME, "k-lost")).await;
    assert_eq!(outcome, Outcome::Duplicate);
    assert_eq!(
        env.sandbox().subscribe_messages().len(),
        sent_before + 1,
        "and only once"
    );
    assert_eq!(grants(&env, &token).await, json!([]));
    // The ledger thinks there is a grant WeChat does not: 43101, and the ledger learns.
    env.app
        .store
        .change_grant(&openid, ONE_TIME, wxmp::store::GrantChange::AddOneTime)
        .await
        .unwrap();
    let (outcome, result) = send(&env, send_detail(&openid, ONE_TIME, "k-43101")).await;
    assert_eq!(outcome, Outcome::Sent(Status::NotSubscribed));
    assert_eq!(result.unwrap()["errcode"], 43101);
    assert_eq!(grants(&env, &token).await, json!([]));
}
