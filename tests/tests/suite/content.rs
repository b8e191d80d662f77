//! Content security and links on the central token, in-process against moto and the sandbox:
//! every route's success, every validation rule (the field named, WeChat not called), every
//! errcode mapping, the token retry rule, the media-check round trip through the push receiver,
//! and the link cache.

use std::time::Duration;

use e2e::TestEnv;
use e2e::env::Options;
use serde_json::{Value, json};
use wechat_sandbox::{PushFormat, PushMode, SandboxConfig};

const MSG_SEC_CHECK: &str = "/wxa/msg_sec_check";
const MEDIA_CHECK: &str = "/wxa/media_check_async";
const SCHEME: &str = "/wxa/generatescheme";
const URLLINK: &str = "/wxa/generate_urllink";
const SHORTLINK: &str = "/wxa/genwxashortlink";

async fn post(env: &TestEnv, path: &str, token: &str, body: Value) -> e2e::Reply {
    env.call("POST", path, Some(token), body.to_string().as_bytes())
        .await
}

fn assert_error(r: &e2e::Reply, status: u16, code: &str) -> Value {
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (status, code),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()["error"].clone()
}

#[tokio::test]
async fn content_verdicts_are_answers_not_errors() {
    let env = TestEnv::new().await;
    let token = env.login("writer").await;
    for (text, suggest, label) in [
        ("a nice day", "pass", 100),
        ("please review this", "review", 10001),
        ("something risky", "risky", 20002),
    ] {
        let r = post(
            &env,
            "/content/check",
            &token,
            json!({"content": text, "scene": 2}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(
            (v["suggest"].as_str(), v["label"].as_u64()),
            (Some(suggest), Some(label))
        );
        assert!(v["trace_id"].as_str().is_some_and(|t| !t.is_empty()));
    }
    let r = post(
        &env,
        "/content/check",
        &token,
        json!({"content": "hi", "scene": 1, "title": "t", "nickname": "n", "signature": "s"}),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn content_and_media_requests_are_checked_before_wechat_is_called() {
    let env = TestEnv::new().await;
    let token = env.login("checker").await;
    let long = "字".repeat(2501);
    let cases = [
        (
            "/content/check",
            json!({"content": "", "scene": 1}),
            "content",
        ),
        (
            "/content/check",
            json!({"content": long, "scene": 1}),
            "content",
        ),
        (
            "/content/check",
            json!({"content": "x", "scene": 5}),
            "scene",
        ),
        (
            "/content/check",
            json!({"content": "x", "scene": 0}),
            "scene",
        ),
        ("/content/check", json!({"content": "x"}), "scene"),
        (
            "/content/check",
            json!({"content": "x", "scene": 1, "title": "t".repeat(257)}),
            "title",
        ),
        (
            "/content/check",
            json!({"content": "x", "scene": 1, "extra": 1}),
            "extra",
        ),
        (
            "/media/check",
            json!({"media_url": "http://media.invalid/a.jpg", "media_type": 2, "scene": 1}),
            "media_url",
        ),
        (
            "/media/check",
            json!({"media_url": "https://", "media_type": 2, "scene": 1}),
            "media_url",
        ),
        (
            "/media/check",
            json!({"media_url": "https://media.invalid/a.jpg", "media_type": 3, "scene": 1}),
            "media_type",
        ),
        (
            "/media/check",
            json!({"media_url": "https://media.invalid/a.jpg", "media_type": 2, "scene": 9}),
            "scene",
        ),
    ];
    for (path, body, field) in cases {
        let r = post(&env, path, &token, body.clone()).await;
        let e = assert_error(&r, 400, "invalid_request");
        assert!(
            e["message"].as_str().unwrap().contains(field),
            "{path} {body}: {e}"
        );
    }
    // Exactly 2,500 characters is allowed.
    let r = post(
        &env,
        "/content/check",
        &token,
        json!({"content": "字".repeat(2500), "scene": 1}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(env.calls(MSG_SEC_CHECK), 1);
    assert_eq!(env.calls(MEDIA_CHECK), 0);
    // Without a session: 401 before anything.
    let r = env
        .call(
            "POST",
            "/content/check",
            None,
            br#"{"content":"x","scene":1}"#,
        )
        .await;
    assert_error(&r, 401, "unauthenticated");
}

#[tokio::test]
async fn wechat_errcodes_map_to_the_contract_and_busy_or_stale_tokens_are_retried() {
    let env = TestEnv::new().await;
    let token = env.login("mapper").await;
    let body = json!({"content": "hello", "scene": 3});
    for (errcode, status, code) in [
        (40003, 502, "wechat_error"),
        (43104, 502, "wechat_error"),
        (40129, 400, "invalid_request"),
        (45009, 429, "rate_limited"),
        (44990, 429, "rate_limited"),
    ] {
        env.script(MSG_SEC_CHECK, errcode, 1);
        let r = post(&env, "/content/check", &token, body.clone()).await;
        let e = assert_error(&r, status, code);
        assert_eq!(e["wechat_errcode"], errcode);
    }
    env.script(MEDIA_CHECK, 40003, 1);
    let media = json!({"media_url": "https://media.invalid/a.jpg", "media_type": 2, "scene": 1});
    assert_error(
        &post(&env, "/media/check", &token, media).await,
        502,
        "wechat_error",
    );
    // Busy once: retried within the budget.
    env.script(MSG_SEC_CHECK, -1, 1);
    assert_eq!(
        post(&env, "/content/check", &token, body.clone())
            .await
            .status,
        200
    );
    // Every token dies (a third party, a mass invalidation): the keeper refreshes, one retry.
    env.sandbox().invalidate_all_tokens();
    let before = env.calls("/cgi-bin/stable_token");
    assert_eq!(
        post(&env, "/content/check", &token, body.clone())
            .await
            .status,
        200
    );
    assert_eq!(env.calls("/cgi-bin/stable_token"), before + 1);
}

#[tokio::test]
async fn a_media_verdict_comes_back_through_the_push_receiver_to_the_user_who_asked() {
    let env = TestEnv::with(Options {
        bus: true,
        sandbox: SandboxConfig {
            media_check_delay_ms: 300,
            ..SandboxConfig::default()
        },
        ..Default::default()
    })
    .await;
    let url = crate::push::serve(&env).await;
    env.sandbox()
        .set_push_target(&url, PushMode::Safe, PushFormat::Json);
    let token = env.login("uploader").await;
    let other = env.login("someone-else").await;
    let r = post(
        &env,
        "/media/check",
        &token,
        json!({"media_url": "https://media.invalid/risky-cat.jpg", "media_type": 2, "scene": 4}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let trace_id = r.json()["trace_id"].as_str().unwrap().to_string();
    let path = format!("/media/check/{trace_id}");
    let r = env.call("GET", &path, Some(&token), b"").await;
    assert_eq!(
        r.json(),
        json!({"status": "pending", "suggest": null, "label": null})
    );
    // Only the user who asked sees it.
    assert_error(
        &env.call("GET", &path, Some(&other), b"").await,
        404,
        "not_found",
    );
    assert_error(
        &env.call("GET", "/media/check/unknown", Some(&token), b"")
            .await,
        404,
        "not_found",
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let done = loop {
        let v = env.call("GET", &path, Some(&token), b"").await.json();
        if v["status"] == "done" || tokio::time::Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        done,
        json!({"status": "done", "suggest": "risky", "label": 20002})
    );
    // The push was published too, once.
    let events = env.bus.as_ref().unwrap().take_exactly(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["detail-type"], "wxa_media_check");
    assert_eq!(events[0]["detail"]["trace_id"], trace_id.as_str());
}

#[tokio::test]
async fn links_are_made_checked_mapped_and_cached() {
    let env = TestEnv::new().await;
    let token = env.login("marketer").await;
    let now = wxmp::now_secs();
    // Each kind, and the answer's expiry.
    let r = post(
        &env,
        "/links",
        &token,
        json!({"kind": "scheme", "path": "pages/index/index",
        "query": "id=42&from=sms", "expire": {"type": "interval", "value": 7}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-cache"), Some("miss"));
    let v = r.json();
    assert!(
        v["link"]
            .as_str()
            .unwrap()
            .starts_with("weixin://dl/business/?t=")
    );
    let exp = v["expires_at"].as_u64().unwrap();
    assert!(
        (now + 7 * 86_400..=now + 7 * 86_400 + 5).contains(&exp),
        "{v}"
    );
    let at = now + 3600;
    let r = post(
        &env,
        "/links",
        &token,
        json!({"kind": "url_link", "path": "pages/index/index",
        "expire": {"type": "time", "value": at}}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.json()["link"]
            .as_str()
            .unwrap()
            .starts_with("https://wxaurl.cn/")
    );
    assert_eq!(r.json()["expires_at"], at);
    let r = post(
        &env,
        "/links",
        &token,
        json!({"kind": "short_link", "path": "pages/index/index",
        "query": "a=1", "page_title": "Sale", "is_permanent": true}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["expires_at"], Value::Null);

    // The same parameters again: from the table, WeChat not called.
    let calls = (env.calls(SCHEME), env.calls(URLLINK), env.calls(SHORTLINK));
    let again = post(
        &env,
        "/links",
        &token,
        json!({"kind": "scheme", "path": "pages/index/index",
        "query": "id=42&from=sms", "expire": {"type": "interval", "value": 7}}),
    )
    .await;
    assert_eq!(again.header("x-cache"), Some("hit"));
    assert_eq!(again.json(), v);
    let short = post(
        &env,
        "/links",
        &token,
        json!({"kind": "short_link", "path": "pages/index/index",
        "query": "a=1", "page_title": "Sale", "is_permanent": true}),
    )
    .await;
    assert_eq!(short.header("x-cache"), Some("hit"));
    assert_eq!(
        (env.calls(SCHEME), env.calls(URLLINK), env.calls(SHORTLINK)),
        calls
    );
    // Other parameters: a new link.
    let other = post(
        &env,
        "/links",
        &token,
        json!({"kind": "scheme", "path": "pages/index/index",
        "query": "id=43", "expire": {"type": "interval", "value": 7}}),
    )
    .await;
    assert_eq!(other.header("x-cache"), Some("miss"));
    assert_ne!(other.json()["link"], v["link"]);

    // Validation: the field named, WeChat not called.
    let before = (env.calls(SCHEME), env.calls(URLLINK), env.calls(SHORTLINK));
    let cases = [
        (
            json!({"kind": "scheme", "path": "/pages/index/index"}),
            "path",
        ),
        (json!({"kind": "scheme", "path": "p".repeat(1025)}), "path"),
        (
            json!({"kind": "scheme", "path": "pages/index/index?x=1"}),
            "path",
        ),
        (json!({"kind": "scheme", "query": "a=<b>"}), "query"),
        (
            json!({"kind": "scheme", "query": "q".repeat(1025)}),
            "query",
        ),
        (
            json!({"kind": "scheme", "expire": {"type": "interval", "value": 31}}),
            "expire",
        ),
        (
            json!({"kind": "scheme", "expire": {"type": "interval", "value": 0}}),
            "expire",
        ),
        (
            json!({"kind": "url_link", "expire": {"type": "time", "value": now + 31 * 86_400}}),
            "expire",
        ),
        (
            json!({"kind": "url_link", "expire": {"type": "time", "value": now - 10}}),
            "expire",
        ),
        (
            json!({"kind": "url_link", "expire": {"type": "forever", "value": 1}}),
            "expire",
        ),
        (
            json!({"kind": "scheme", "env_version": "beta"}),
            "env_version",
        ),
        (json!({"kind": "deep_link"}), "kind"),
        (json!({"kind": "short_link"}), "path"),
        (
            json!({"kind": "short_link", "path": "pages/index/index", "expire": {"type": "interval", "value": 1}}),
            "expire",
        ),
        (
            json!({"kind": "scheme", "is_permanent": true}),
            "is_permanent",
        ),
        (json!({"kind": "scheme", "surprise": 1}), "surprise"),
    ];
    for (body, field) in cases {
        let r = post(&env, "/links", &token, body.clone()).await;
        let e = assert_error(&r, 400, "invalid_request");
        assert!(
            e["message"].as_str().unwrap().contains(field),
            "{body}: {e}"
        );
    }
    assert_eq!(
        (env.calls(SCHEME), env.calls(URLLINK), env.calls(SHORTLINK)),
        before
    );

    // WeChat's refusals, each named.
    let fresh = |q: &str| json!({"kind": "scheme", "path": "pages/index/index", "query": q});
    for (path, errcode, status, code, names) in [
        (SCHEME, 40165, 400, "invalid_request", "path"),
        (SCHEME, 40212, 400, "invalid_request", "query"),
        (SCHEME, 85401, 400, "invalid_request", "expire"),
        (SCHEME, 85079, 400, "invalid_request", "env_version"),
        (SCHEME, 40002, 502, "wechat_error", ""),
        (SCHEME, 40013, 502, "wechat_error", ""),
        (SCHEME, 44990, 429, "rate_limited", ""),
        (SCHEME, 45009, 429, "rate_limited", ""),
        (URLLINK, 85402, 400, "invalid_request", "env_version"),
        (SHORTLINK, 40066, 400, "invalid_request", "path"),
        (SHORTLINK, 85400, 429, "rate_limited", ""),
    ] {
        env.script(path, errcode, 1);
        let kind = match path {
            SCHEME => "scheme",
            URLLINK => "url_link",
            _ => "short_link",
        };
        let mut body = fresh(&format!("e={errcode}"));
        body["kind"] = json!(kind);
        let r = post(&env, "/links", &token, body).await;
        let e = assert_error(&r, status, code);
        assert_eq!(e["wechat_errcode"], errcode);
        assert!(e["message"].as_str().unwrap().contains(names), "{e}");
    }
    // The sandbox's own rules: an unpublished page, the trial version.
    let r = post(
        &env,
        "/links",
        &token,
        json!({"kind": "url_link", "path": "pages/missing/index"}),
    )
    .await;
    assert_eq!(
        assert_error(&r, 400, "invalid_request")["wechat_errcode"],
        40165
    );
    let r = post(
        &env,
        "/links",
        &token,
        json!({"kind": "url_link", "env_version": "trial"}),
    )
    .await;
    assert_eq!(
        assert_error(&r, 400, "invalid_request")["wechat_errcode"],
        85079
    );
    // A rejected token: refreshed and retried once.
    env.sandbox().invalidate_all_tokens();
    assert_eq!(
        post(&env, "/links", &token, fresh("after=invalidation"))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn the_daily_link_quota_answers_429() {
    let env = TestEnv::with(Options {
        sandbox: SandboxConfig {
            link_daily_quota: 2,
            ..SandboxConfig::default()
        },
        ..Default::default()
    })
    .await;
    let token = env.login("quota").await;
    for (i, status) in [(1, 200), (2, 200), (3, 429)] {
        let r = post(
            &env,
            "/links",
            &token,
            json!({"kind": "url_link", "query": format!("n={i}")}),
        )
        .await;
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    }
    // Cached links still come, without the quota.
    let r = post(
        &env,
        "/links",
        &token,
        json!({"kind": "url_link", "query": "n=1"}),
    )
    .await;
    assert_eq!((r.status, r.header("x-cache")), (200, Some("hit")));
}
