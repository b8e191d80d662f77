//! The sandbox seen from outside: spawned on a port and called over HTTP like WeChat.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wechat_sandbox::{
    BogusImage, CodeParams, Faults, LostAnswer, PhoneSpec, RunningSandbox, Sandbox, SandboxConfig,
    ScriptedError, render_code,
};

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

struct Harness {
    running: RunningSandbox,
    http: reqwest::Client,
}

/// One answer: its content type and body.
struct Answer {
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The errcode, 0 for an image or a JSON body without one.
    fn errcode(&self) -> i64 {
        if self.content_type == "image/png" {
            return 0;
        }
        self.json()["errcode"].as_i64().unwrap_or(0)
    }

    fn errmsg(&self) -> String {
        self.json()["errmsg"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn start(edit: impl FnOnce(&mut SandboxConfig)) -> Harness {
    let mut cfg = SandboxConfig::default();
    edit(&mut cfg);
    Harness {
        running: Sandbox::spawn(cfg).await.expect("spawn sandbox"),
        http: reqwest::Client::new(),
    }
}

impl Harness {
    fn sb(&self) -> &Sandbox {
        &self.running.sandbox
    }

    /// The status and the answer, whatever the status.
    async fn read(resp: reqwest::Response) -> (u16, Answer) {
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = resp.bytes().await.unwrap().to_vec();
        (status, Answer { content_type, body })
    }

    async fn answer(resp: reqwest::Response) -> Answer {
        let (status, answer) = Self::read(resp).await;
        assert_eq!(status, 200, "WeChat answers 200 even on errors");
        answer
    }

    async fn raw_get(&self, path_and_query: &str) -> (u16, Answer) {
        let url = format!("{}{path_and_query}", self.running.base_url());
        Self::read(self.http.get(url).send().await.unwrap()).await
    }

    async fn raw_post(&self, path_and_query: &str, body: impl Into<String>) -> (u16, Answer) {
        let url = format!("{}{path_and_query}", self.running.base_url());
        let body: String = body.into();
        Self::read(self.http.post(url).body(body).send().await.unwrap()).await
    }

    async fn get(&self, path_and_query: &str) -> Answer {
        let url = format!("{}{path_and_query}", self.running.base_url());
        Self::answer(self.http.get(url).send().await.unwrap()).await
    }

    async fn post(&self, path_and_query: &str, body: impl Into<String>) -> Answer {
        let url = format!("{}{path_and_query}", self.running.base_url());
        let body: String = body.into();
        Self::answer(self.http.post(url).body(body).send().await.unwrap()).await
    }

    /// An admin call; returns the status and the body.
    async fn admin(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Vec<u8>) {
        let url = format!("{}{path}", self.running.base_url());
        let resp = self
            .http
            .request(method, url)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.bytes().await.unwrap().to_vec())
    }

    fn login_path(&self, code: &str) -> String {
        let cfg = self.sb().config();
        format!(
            "/sns/jscode2session?appid={}&secret={}&js_code={}&grant_type=authorization_code",
            enc(&cfg.appid),
            enc(&cfg.secret),
            enc(code)
        )
    }

    async fn login(&self, code: &str) -> Answer {
        self.get(&self.login_path(code)).await
    }

    async fn legacy(&self) -> Answer {
        let cfg = self.sb().config();
        self.get(&format!(
            "/cgi-bin/token?grant_type=client_credential&appid={}&secret={}",
            enc(&cfg.appid),
            enc(&cfg.secret)
        ))
        .await
    }

    async fn legacy_token(&self) -> String {
        let a = self.legacy().await;
        assert_eq!(a.errcode(), 0, "{}", a.errmsg());
        a.json()["access_token"].as_str().unwrap().to_owned()
    }

    fn stable_body(&self, force: bool) -> String {
        let cfg = self.sb().config();
        json!({
            "grant_type": "client_credential",
            "appid": cfg.appid,
            "secret": cfg.secret,
            "force_refresh": force,
        })
        .to_string()
    }

    async fn stable(&self, force: bool) -> Answer {
        self.post("/cgi-bin/stable_token", self.stable_body(force))
            .await
    }

    /// (token, expires_in) from a stable_token call that must succeed.
    async fn stable_ok(&self, force: bool) -> (String, u64) {
        let a = self.stable(force).await;
        assert_eq!(a.errcode(), 0, "{}", a.errmsg());
        let v = a.json();
        (
            v["access_token"].as_str().unwrap().to_owned(),
            v["expires_in"].as_u64().unwrap(),
        )
    }

    async fn qrcode(&self, token: &str, body: impl Into<String>) -> Answer {
        self.post(
            &format!("/wxa/getwxacodeunlimit?access_token={}", enc(token)),
            body,
        )
        .await
    }

    /// The errcode a protected API gives for `token` (0 when it works).
    async fn probe(&self, token: &str) -> i64 {
        self.qrcode(token, r#"{"scene":"probe"}"#).await.errcode()
    }

    async fn phone(&self, token: &str, code: &str) -> Answer {
        self.post(
            &format!(
                "/wxa/business/getuserphonenumber?access_token={}",
                enc(token)
            ),
            json!({ "code": code }).to_string(),
        )
        .await
    }

    fn advance(&self, secs: u64) {
        self.sb().advance_time(Duration::from_secs(secs));
    }
}

// ---------------------------------------------------------------- jscode2session

#[tokio::test]
async fn minted_login_code_works_once_then_says_code_been_used() {
    let h = start(|_| {}).await;
    let code = h.sb().mint_login_code("alice");

    let first = h.login(&code).await;
    assert!(first.content_type.starts_with("text/plain"));
    let v = first.json();
    assert_eq!(v["openid"], h.sb().openid_for("alice"));
    assert_eq!(v["unionid"], h.sb().unionid_for("alice"));
    assert_eq!(
        v["session_key"].as_str().unwrap().len(),
        24,
        "base64 of 16 bytes"
    );
    assert!(v.get("errcode").is_none());

    let again = h.login(&code).await;
    assert_eq!(again.errcode(), 40163);
    assert!(again.errmsg().contains("rid: "), "{}", again.errmsg());
}

#[tokio::test]
async fn minted_login_code_expires() {
    let h = start(|c| c.code_ttl_secs = 60).await;
    let code = h.sb().mint_login_code("alice");
    h.advance(60);
    assert_eq!(h.login(&code).await.errcode(), 40029);
}

#[tokio::test]
async fn adhoc_codes_name_their_user_and_keep_the_session_key() {
    let h = start(|_| {}).await;
    let a1 = h.login("alice.1").await.json();
    let a2 = h.login("alice.2").await.json();
    let bob = h.login("bob").await.json();
    assert_eq!(a1["openid"], h.sb().openid_for("alice"));
    assert_eq!(a1["openid"], a2["openid"]);
    assert_eq!(a1["session_key"], a2["session_key"]);
    assert_ne!(a1["openid"], bob["openid"]);
    assert_ne!(a1["session_key"], bob["session_key"]);
    // A minted code for the same user shares the session key too.
    let minted = h.sb().mint_login_code("alice");
    assert_eq!(
        h.login(&minted).await.json()["session_key"],
        a1["session_key"]
    );

    assert_eq!(h.login("alice.1").await.errcode(), 40163);
}

#[tokio::test]
async fn invalid_and_risky_codes() {
    let h = start(|_| {}).await;
    assert_eq!(h.login("invalid.1").await.errcode(), 40029);
    assert_eq!(h.login("has space").await.errcode(), 40029);
    assert_eq!(h.login(&"x".repeat(129)).await.errcode(), 40029);
    let risky = h.login("risky.1").await;
    assert_eq!(risky.errcode(), 40226);
    assert!(risky.content_type.starts_with("text/plain"));
}

#[tokio::test]
async fn login_parameter_errors() {
    let h = start(|_| {}).await;
    let cfg = h.sb().config().clone();
    let call = |grant: &str, appid: &str, secret: Option<&str>, code: Option<&str>| {
        let mut q = format!("/sns/jscode2session?grant_type={grant}&appid={appid}");
        if let Some(s) = secret {
            q += &format!("&secret={s}");
        }
        if let Some(c) = code {
            q += &format!("&js_code={c}");
        }
        q
    };
    let (a, s) = (cfg.appid.as_str(), cfg.secret.as_str());
    let cases = [
        (call("client_credential", a, Some(s), Some("c1")), 40002),
        (
            call("authorization_code", "wxother", Some(s), Some("c2")),
            40013,
        ),
        (call("authorization_code", a, None, Some("c3")), 41004),
        (
            call("authorization_code", a, Some("nope"), Some("c4")),
            40125,
        ),
        (call("authorization_code", a, Some(s), None), 41008),
        (call("authorization_code", a, Some(s), Some("c6")), 0),
    ];
    for (q, expected) in cases {
        assert_eq!(h.get(&q).await.errcode(), expected, "{q}");
    }
}

#[tokio::test]
async fn unionid_is_left_out_when_not_bound() {
    let h = start(|c| c.unionid = false).await;
    let v = h.login("alice").await.json();
    assert!(v.get("unionid").is_none());
    assert!(v.get("openid").is_some());
}

// ---------------------------------------------------------------- legacy token

#[tokio::test]
async fn legacy_token_answer_shape_and_errors() {
    let h = start(|_| {}).await;
    let a = h.legacy().await;
    assert!(a.content_type.starts_with("application/json"));
    let v = a.json();
    assert_eq!(v["expires_in"], 7200);
    assert!(v["access_token"].as_str().unwrap().len() >= 120);

    let appid = h.sb().config().appid.clone();
    let q = |grant: &str, secret: &str| {
        format!("/cgi-bin/token?grant_type={grant}&appid={appid}&secret={secret}")
    };
    assert_eq!(
        h.get(&q("authorization_code", "sandbox-secret"))
            .await
            .errcode(),
        40002
    );
    assert_eq!(h.get(&q("client_credential", "")).await.errcode(), 41004);
    assert_eq!(h.get(&q("client_credential", "bad")).await.errcode(), 40125);
    let wrong_app = "/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=sandbox-secret";
    assert_eq!(h.get(wrong_app).await.errcode(), 40013);
}

#[tokio::test]
async fn new_legacy_token_kills_the_old_one_after_the_overlap() {
    let h = start(|_| {}).await;
    let t1 = h.legacy_token().await;
    let t2 = h.legacy_token().await;
    assert_ne!(t1, t2);
    assert_eq!(h.probe(&t1).await, 0, "still inside the 300 s overlap");
    h.advance(300);
    assert_eq!(h.probe(&t1).await, 40001);
    assert_eq!(h.probe(&t2).await, 0);
}

#[tokio::test]
async fn zero_overlap_kills_the_old_legacy_token_at_once() {
    let h = start(|c| c.legacy_overlap_secs = 0).await;
    let t1 = h.legacy_token().await;
    let t2 = h.legacy_token().await;
    let dead = h.probe(&t1).await;
    assert_eq!(dead, 40001);
    assert_eq!(h.probe(&t2).await, 0);
}

#[tokio::test]
async fn legacy_token_expires_with_42001() {
    let h = start(|_| {}).await;
    let t = h.legacy_token().await;
    h.advance(7199);
    assert_eq!(h.probe(&t).await, 0);
    h.advance(1);
    assert_eq!(h.probe(&t).await, 42001);
}

#[tokio::test]
async fn third_party_refresh_kills_our_legacy_token() {
    let h = start(|c| c.legacy_overlap_secs = 1).await;
    let t = h.legacy_token().await;
    h.sb().third_party_refresh();
    assert_eq!(h.probe(&t).await, 0);
    h.advance(1);
    assert_eq!(h.probe(&t).await, 40001);
    let stats = h.sb().stats();
    assert_eq!(stats.legacy_issued, 2);
    assert_eq!(stats.calls.get("/cgi-bin/token"), Some(&1));
}

#[tokio::test]
async fn token_check_errors() {
    let h = start(|_| {}).await;
    let a = h.post("/wxa/getwxacodeunlimit", r#"{"scene":"a"}"#).await;
    assert_eq!(a.errcode(), 41001);
    assert_eq!(h.probe("not-a-token").await, 40001);
}

// ---------------------------------------------------------------- stable token

#[tokio::test]
async fn stable_normal_mode_returns_the_same_token_with_less_time() {
    let h = start(|_| {}).await;
    let (t1, e1) = h.stable_ok(false).await;
    assert_eq!(e1, 7200);
    h.advance(100);
    let (t2, e2) = h.stable_ok(false).await;
    assert_eq!(t2, t1);
    assert_eq!(e2, 7100);
    h.advance(100);
    assert_eq!(h.stable_ok(false).await, (t1.clone(), 7000));
    assert_eq!(h.sb().stats().stable_issued, 1);
    assert_eq!(h.sb().stats().calls.get("/cgi-bin/stable_token"), Some(&3));
}

#[tokio::test]
async fn stable_renews_inside_the_window_and_the_old_token_lives_on() {
    let h = start(|_| {}).await;
    let (t1, _) = h.stable_ok(false).await;
    h.advance(6900); // 300 s left: inside the window
    let (t2, e2) = h.stable_ok(false).await;
    assert_ne!(t2, t1);
    assert_eq!(e2, 7200);
    assert_eq!(h.probe(&t1).await, 0, "old token keeps its own expiry");
    h.advance(300);
    assert_eq!(h.probe(&t1).await, 42001);
    assert_eq!(h.probe(&t2).await, 0);
}

#[tokio::test]
async fn a_window_as_long_as_the_ttl_renews_every_time() {
    let h = start(|c| c.stable_renew_window_secs = c.token_ttl_secs).await;
    let (t1, _) = h.stable_ok(false).await;
    let (t2, e2) = h.stable_ok(false).await;
    assert_ne!(t1, t2);
    assert_eq!(e2, 7200);
    assert_eq!(h.probe(&t1).await, 0);
    assert_eq!(h.sb().stats().stable_issued, 2);
}

#[tokio::test]
async fn stable_and_legacy_tokens_are_independent() {
    let h = start(|c| c.legacy_overlap_secs = 0).await;
    let (stable, _) = h.stable_ok(false).await;
    let legacy = h.legacy_token().await;
    h.legacy_token().await;
    assert_eq!(h.probe(&legacy).await, 40001);
    assert_eq!(h.probe(&stable).await, 0);
    assert_eq!(h.stable_ok(false).await.0, stable);
}

#[tokio::test]
async fn stable_token_request_errors() {
    let h = start(|_| {}).await;
    assert_eq!(h.get("/cgi-bin/stable_token").await.errcode(), 43002);
    let form = "grant_type=client_credential&appid=x&secret=y";
    assert_eq!(h.post("/cgi-bin/stable_token", form).await.errcode(), 47001);
    let body = |grant: &str, appid: &str, secret: &str| {
        json!({"grant_type": grant, "appid": appid, "secret": secret}).to_string()
    };
    let appid = "wxsandbox0000000001";
    let cases = [
        (body("authorization_code", appid, "sandbox-secret"), 40002),
        (body("client_credential", "wx1", "sandbox-secret"), 40013),
        (body("client_credential", appid, ""), 41004),
        (body("client_credential", appid, "bad"), 40125),
    ];
    for (b, expected) in cases {
        assert_eq!(
            h.post("/cgi-bin/stable_token", b.clone()).await.errcode(),
            expected,
            "{b}"
        );
    }
    let a = h.post("/cgi-bin/stable_token", "{}").await;
    assert!(a.content_type.starts_with("application/json"));
}

#[tokio::test]
async fn force_refresh_replaces_the_token_at_most_every_30_s() {
    let h = start(|_| {}).await;
    let (a, _) = h.stable_ok(false).await;
    let (b, eb) = h.stable_ok(true).await;
    assert_ne!(a, b);
    assert_eq!(eb, 7200);
    assert_eq!(h.probe(&a).await, 40001, "no grace by default");

    h.advance(10);
    let (same, e) = h.stable_ok(true).await;
    assert_eq!(same, b, "too soon: not refreshed");
    assert_eq!(e, 7190);

    h.advance(20);
    let (c, _) = h.stable_ok(true).await;
    assert_ne!(c, b);
    assert_eq!(h.probe(&b).await, 40001);
    assert_eq!(h.probe(&c).await, 0);

    let stats = h.sb().stats();
    assert_eq!(stats.force_refreshes, 2);
    assert_eq!(stats.stable_issued, 3);
}

#[tokio::test]
async fn force_refresh_daily_limit() {
    let h = start(|c| {
        c.force_min_interval_secs = 0;
        c.force_daily_limit = 2;
    })
    .await;
    h.stable_ok(true).await;
    h.stable_ok(true).await;
    assert_eq!(h.stable(true).await.errcode(), 45009);
    // Normal mode still works.
    h.stable_ok(false).await;
    assert_eq!(h.sb().stats().force_refreshes, 2);
}

#[tokio::test]
async fn force_refresh_daily_limit_starts_again_the_next_utc_day() {
    let h = start(|c| {
        c.force_min_interval_secs = 0;
        c.force_daily_limit = 2;
    })
    .await;
    h.stable_ok(true).await;
    h.stable_ok(true).await;
    assert_eq!(h.stable(true).await.errcode(), 45009);
    h.advance(86_400);
    let (fresh, _) = h.stable_ok(true).await;
    let (again, _) = h.stable_ok(true).await;
    assert_ne!(fresh, again, "both were force refreshes");
    assert_eq!(h.stable(true).await.errcode(), 45009);
    assert_eq!(h.sb().stats().force_refreshes, 4);
}

#[tokio::test(start_paused = true)]
async fn force_refresh_daily_limit_holds_until_utc_midnight() {
    let h = start(|c| {
        c.force_min_interval_secs = 0;
        c.force_daily_limit = 1;
    })
    .await;
    let token = h.legacy_token().await;
    // The sandbox's own Unix time, from a watermark.
    let now = watermark_timestamp(&h.phone(&token, "abc").await);
    let to_midnight = 86_400 - now % 86_400;
    h.stable_ok(true).await;
    assert_eq!(h.stable(true).await.errcode(), 45009);
    tokio::time::advance(Duration::from_secs(to_midnight - 1)).await;
    assert_eq!(
        h.stable(true).await.errcode(),
        45009,
        "23:59:59 is the same day"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    h.stable_ok(true).await;
    assert_eq!(h.stable(true).await.errcode(), 45009);
    assert_eq!(h.sb().stats().force_refreshes, 2);
}

#[tokio::test]
async fn force_grace_keeps_the_old_stable_token_for_a_while() {
    let h = start(|c| c.force_grace_secs = 60).await;
    let (a, _) = h.stable_ok(false).await;
    h.stable_ok(true).await;
    h.advance(59);
    assert_eq!(h.probe(&a).await, 0);
    h.advance(1);
    assert_eq!(h.probe(&a).await, 40001);
}

#[tokio::test]
async fn third_party_force_stable_kills_our_stable_token() {
    let h = start(|_| {}).await;
    let (a, _) = h.stable_ok(false).await;
    h.sb().third_party_force_stable();
    assert_eq!(h.probe(&a).await, 40001);
    let (b, _) = h.stable_ok(false).await;
    assert_ne!(a, b);
    assert_eq!(h.probe(&b).await, 0);
    let stats = h.sb().stats();
    assert_eq!(stats.force_refreshes, 1);
    assert_eq!(
        stats.calls["/cgi-bin/stable_token"], 2,
        "the third party is not counted"
    );
}

#[tokio::test]
async fn invalidate_all_tokens_gives_40001_and_a_new_stable_token_works() {
    let h = start(|_| {}).await;
    let legacy = h.legacy_token().await;
    let (stable, _) = h.stable_ok(false).await;
    h.sb().invalidate_all_tokens();
    assert_eq!(h.probe(&legacy).await, 40001);
    assert_eq!(h.probe(&stable).await, 40001);
    let (fresh, e) = h.stable_ok(false).await;
    assert_ne!(fresh, stable);
    assert_eq!(e, 7200);
    assert_eq!(h.probe(&fresh).await, 0);
    assert_eq!(h.probe(&h.legacy_token().await).await, 0);
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn busy_rate_follows_the_deterministic_pattern() {
    let h = start(|_| {}).await;
    h.legacy().await; // calls before set_faults do not shift the pattern
    h.sb().set_faults(Faults {
        busy_rate: 0.5,
        ..Faults::default()
    });
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(h.legacy().await.errcode());
    }
    assert_eq!(codes, [0, -1, 0, -1, 0, -1]);

    h.sb().set_faults(Faults {
        busy_rate: 0.1,
        ..Faults::default()
    });
    let mut busy_at = Vec::new();
    for k in 1..=20 {
        if h.login(&format!("u{k}")).await.errcode() == -1 {
            busy_at.push(k);
        }
    }
    assert_eq!(busy_at, [10, 20]);

    h.sb().set_faults(Faults {
        busy_rate: 1.0,
        ..Faults::default()
    });
    let busy = h.legacy().await;
    assert_eq!(busy.errcode(), -1);
    assert!(busy.errmsg().starts_with("system error"));
    assert_eq!(
        h.sb().stats().calls["/cgi-bin/token"],
        8,
        "failures are counted"
    );
}

#[tokio::test]
async fn scripted_errors_come_before_busy_and_run_out() {
    let h = start(|_| {}).await;
    h.sb().set_faults(Faults {
        scripted: vec![ScriptedError {
            path: "/cgi-bin/token".into(),
            errcode: 40164,
            count: 2,
        }],
        ..Faults::default()
    });
    let first = h.legacy().await;
    assert_eq!(first.errcode(), 40164);
    assert!(first.errmsg().starts_with("scripted"));
    assert_eq!(h.stable(false).await.errcode(), 0, "other paths unaffected");
    assert_eq!(h.legacy().await.errcode(), 40164);
    assert_eq!(h.legacy().await.errcode(), 0);
    assert_eq!(h.sb().faults().scripted[0].count, 0);
}

#[tokio::test]
async fn scripted_errors_on_the_code_path_use_json() {
    let h = start(|_| {}).await;
    let token = h.legacy_token().await;
    h.sb().set_faults(Faults {
        scripted: vec![ScriptedError {
            path: "/wxa/getwxacodeunlimit".into(),
            errcode: 40001,
            count: 1,
        }],
        ..Faults::default()
    });
    let a = h.qrcode(&token, r#"{"scene":"a"}"#).await;
    assert_eq!(a.content_type, "application/json; encoding=utf-8");
    assert_eq!(a.errcode(), 40001);
}

#[tokio::test]
async fn latency_delays_wechat_answers() {
    let h = start(|_| {}).await;
    h.sb().set_faults(Faults {
        latency_ms: 200,
        ..Faults::default()
    });
    let t = Instant::now();
    h.legacy().await;
    assert!(t.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn bogus_images_replace_codes_that_would_have_succeeded() {
    use reqwest::Method;
    let h = start(|_| {}).await;
    let token = h.legacy_token().await;
    let faults = json!({
        "bogus_image": {
            "content_type": "image/jpeg",
            "body": r#"{"errmsg":"system error"}"#,
            "count": 2,
        },
        "scripted": [{"path": "/wxa/getwxacodeunlimit", "errcode": 45009, "count": 1}],
    });
    let (status, _) = h.admin(Method::PUT, "/_sandbox/faults", faults).await;
    assert_eq!(status, 204);

    // Calls that fail do not use up the count.
    assert_eq!(h.probe(&token).await, 45009, "scripted");
    assert_eq!(h.probe("not-a-token").await, 40001);
    assert_eq!(
        h.qrcode(&token, r#"{"scene":"a b"}"#).await.errcode(),
        40129
    );
    for left in [1, 0] {
        let a = h.qrcode(&token, r#"{"scene":"id=42"}"#).await;
        assert_eq!(a.content_type, "image/jpeg");
        assert_eq!(a.body, br#"{"errmsg":"system error"}"#);
        assert_eq!(h.sb().faults().bogus_image.unwrap().count, left);
    }
    let real = h.qrcode(&token, r#"{"scene":"id=42"}"#).await;
    assert_eq!(real.content_type, "image/png");
    assert_eq!(real.body, render_code(&CodeParams::defaults("id=42")));

    let (status, body) = h.admin(Method::GET, "/_sandbox/faults", json!(null)).await;
    assert_eq!(status, 200);
    let shown: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(shown["bogus_image"]["count"], 0);
    assert_eq!(shown["bogus_image"]["content_type"], "image/jpeg");
}

#[tokio::test]
async fn bogus_images_can_start_with_a_bom_or_be_empty() {
    let h = start(|_| {}).await;
    let token = h.legacy_token().await;
    let bogus = |content_type: &str, body: &str| Faults {
        bogus_image: Some(BogusImage {
            content_type: content_type.into(),
            body: body.into(),
            count: 1,
        }),
        ..Faults::default()
    };

    h.sb()
        .set_faults(bogus("image/png", "\u{feff}{\"errcode\":0}"));
    let a = h.qrcode(&token, r#"{"scene":"a"}"#).await;
    assert_eq!(a.content_type, "image/png");
    assert_eq!(a.body, b"\xef\xbb\xbf{\"errcode\":0}");

    h.sb().set_faults(bogus("", ""));
    let a = h.qrcode(&token, r#"{"scene":"a"}"#).await;
    assert_eq!(a.content_type, "", "no Content-Type at all");
    assert!(a.body.is_empty());

    // Other paths are not touched.
    h.sb().set_faults(bogus("image/jpeg", ""));
    assert!(
        h.legacy()
            .await
            .content_type
            .starts_with("application/json")
    );
    assert_eq!(h.sb().faults().bogus_image.unwrap().count, 1);
}

/// Asserts a gateway's 502 page.
fn assert_lost(status: u16, a: &Answer) {
    assert_eq!(status, 502);
    assert!(
        a.content_type.starts_with("text/html"),
        "{}",
        a.content_type
    );
    assert!(String::from_utf8_lossy(&a.body).contains("502 Bad Gateway"));
}

#[tokio::test]
async fn a_lost_force_refresh_still_happened() {
    let h = start(|_| {}).await;
    let (old, _) = h.stable_ok(false).await;
    h.sb().set_faults(Faults {
        lost_answers: vec![LostAnswer {
            path: "/cgi-bin/stable_token".into(),
            count: 1,
            only_force: true,
        }],
        ..Faults::default()
    });
    let (status, a) = h
        .raw_post("/cgi-bin/stable_token", h.stable_body(true))
        .await;
    assert_lost(status, &a);

    let stats = h.sb().stats();
    assert_eq!(stats.force_refreshes, 1);
    assert_eq!(stats.stable_issued, 2);
    assert_eq!(stats.calls["/cgi-bin/stable_token"], 2);
    assert_eq!(h.probe(&old).await, 40001, "the force refresh killed it");
    assert_eq!(h.sb().faults().lost_answers[0].count, 0);

    // The token the lost answer carried is the current one: normal mode hands it out.
    let (current, _) = h.stable_ok(false).await;
    assert_ne!(current, old);
    assert_eq!(h.probe(&current).await, 0);
    assert_eq!(h.sb().stats().stable_issued, 2);
}

#[tokio::test]
async fn lost_answers_set_over_http_use_up_codes_and_errors_alike() {
    use reqwest::Method;
    let h = start(|_| {}).await;
    let faults = json!({"lost_answers": [{"path": "sns/jscode2session", "count": 2}]});
    let (status, _) = h.admin(Method::PUT, "/_sandbox/faults", faults).await;
    assert_eq!(status, 204);

    let code = h.sb().mint_login_code("alice");
    let (status, a) = h.raw_get(&h.login_path(&code)).await;
    assert_lost(status, &a);
    // WeChat's error answer is lost too.
    let (status, a) = h.raw_get(&h.login_path("invalid.1")).await;
    assert_lost(status, &a);

    assert_eq!(
        h.login(&code).await.errcode(),
        40163,
        "redeemed by the lost call"
    );
    assert_eq!(h.legacy().await.errcode(), 0, "other paths unaffected");
    assert_eq!(h.sb().stats().calls["/sns/jscode2session"], 3);
}

// ---------------------------------------------------------------- paused tokio time

fn watermark_timestamp(a: &Answer) -> u64 {
    a.json()["phone_info"]["watermark"]["timestamp"]
        .as_u64()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn paused_tokio_time_expires_tokens() {
    let h = start(|_| {}).await;
    let t = h.legacy_token().await;
    tokio::time::advance(Duration::from_secs(7201)).await;
    assert_eq!(h.probe(&t).await, 42001);
    assert_eq!(h.probe(&h.legacy_token().await).await, 0);
}

#[tokio::test(start_paused = true)]
async fn paused_tokio_time_ages_codes_and_moves_watermarks() {
    let h = start(|c| c.code_ttl_secs = 60).await;
    let login = h.sb().mint_login_code("alice");
    let phone = h.sb().mint_phone_code(PhoneSpec::default());
    let token = h.legacy_token().await;
    let before = watermark_timestamp(&h.phone(&token, "abc").await);

    tokio::time::advance(Duration::from_secs(59)).await;
    let (stable, expires_in) = h.stable_ok(false).await;
    assert_eq!(expires_in, 7200);

    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(h.login(&login).await.errcode(), 40029);
    assert_eq!(h.phone(&token, &phone).await.errcode(), 40029);
    assert_eq!(
        watermark_timestamp(&h.phone(&token, "abd").await),
        before + 60
    );
    assert_eq!(h.stable_ok(false).await, (stable, 7199));
}

// ---------------------------------------------------------------- getwxacodeunlimit

fn default_params(scene: &str) -> CodeParams {
    CodeParams::defaults(scene)
}

#[tokio::test]
async fn code_image_is_render_code_of_the_params() {
    let h = start(|_| {}).await;
    let token = h.legacy_token().await;

    let a = h.qrcode(&token, r#"{"scene":"id=42"}"#).await;
    assert_eq!(a.content_type, "image/png");
    assert!(a.body.starts_with(PNG_SIGNATURE));
    assert_eq!(a.body, render_code(&default_params("id=42")));

    let body = json!({
        "scene": "a/b?c=d&e~f",
        "page": "pages/index/index",
        "width": 100,
        "auto_color": true,
        "line_color": {"r": 1, "g": 2, "b": 3},
        "is_hyaline": true,
        "env_version": "trial",
        "check_path": true,
    });
    let b = h.qrcode(&token, body.to_string()).await;
    let expected = CodeParams {
        scene: "a/b?c=d&e~f".into(),
        page: Some("pages/index/index".into()),
        width: 280,
        auto_color: true,
        line_color: (1, 2, 3),
        is_hyaline: true,
        env_version: "trial".into(),
        check_path: true,
    };
    assert_eq!(b.body, render_code(&expected));
    assert_ne!(a.body, b.body);

    let other = h.qrcode(&token, r#"{"scene":"id=43"}"#).await;
    assert_ne!(other.body, a.body);
    let again = h.qrcode(&token, r#"{"scene":"id=42","width":430}"#).await;
    assert_eq!(again.body, a.body);
}

#[tokio::test]
async fn unpublished_page_needs_check_path_false() {
    let h = start(|_| {}).await;
    let token = h.legacy_token().await;
    let checked = h
        .qrcode(&token, r#"{"scene":"a","page":"pages/new/new"}"#)
        .await;
    assert_eq!(checked.errcode(), 41030);
    let unchecked = h
        .qrcode(
            &token,
            r#"{"scene":"a","page":"pages/new/new","check_path":false}"#,
        )
        .await;
    assert_eq!(unchecked.content_type, "image/png");
    let mut p = default_params("a");
    p.page = Some("pages/new/new".into());
    p.check_path = false;
    assert_eq!(unchecked.body, render_code(&p));
}

#[tokio::test]
async fn code_request_validation_errors() {
    let h = start(|_| {}).await;
    let token = h.legacy_token().await;
    let long_scene = "s".repeat(33);
    let cases: [(String, i64); 14] = [
        ("scene=a".into(), 40169),
        ("[1,2]".into(), 40169),
        ("{}".into(), 40169),
        (r#"{"scene":""}"#.into(), 40169),
        (json!({"scene": long_scene}).to_string(), 40169),
        (r#"{"scene":"a b"}"#.into(), 40129),
        (r#"{"scene":"100%"}"#.into(), 40129),
        (r#"{"scene":"中文"}"#.into(), 40129),
        (r#"{"scene":"a","page":"/pages/index/index"}"#.into(), 41030),
        (
            r#"{"scene":"a","page":"pages/index/index?x=1","check_path":false}"#.into(),
            41030,
        ),
        (r#"{"scene":"a","env_version":"prod"}"#.into(), 40097),
        (
            r#"{"scene":"a","line_color":{"r":256,"g":0,"b":0}}"#.into(),
            40097,
        ),
        (
            r#"{"scene":"a","line_color":{"r":"0","g":0,"b":0}}"#.into(),
            40097,
        ),
        (r#"{"scene":"a","width":"big"}"#.into(), 40097),
    ];
    for (body, expected) in cases {
        let a = h.qrcode(&token, body.clone()).await;
        assert_eq!(a.errcode(), expected, "{body}");
        assert_eq!(a.content_type, "application/json; encoding=utf-8");
    }
    let ok = h
        .qrcode(&token, json!({"scene": "s".repeat(32)}).to_string())
        .await;
    assert_eq!(ok.content_type, "image/png");
}

// ---------------------------------------------------------------- getuserphonenumber

#[tokio::test]
async fn minted_phone_code_gives_its_phone_once() {
    let h = start(|_| {}).await;
    let token = h.legacy_token().await;
    let code = h.sb().mint_phone_code(PhoneSpec {
        phone_number: "+85261234567".into(),
        pure_phone_number: "61234567".into(),
        country_code: "852".into(),
    });
    let a = h.phone(&token, &code).await;
    assert!(a.content_type.starts_with("application/json"));
    let v = a.json();
    assert_eq!(v["errcode"], 0);
    assert_eq!(v["errmsg"], "ok");
    let info = &v["phone_info"];
    assert_eq!(info["phoneNumber"], "+85261234567");
    assert_eq!(info["purePhoneNumber"], "61234567");
    assert_eq!(info["countryCode"], "852");
    assert_eq!(info["watermark"]["appid"], "wxsandbox0000000001");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ts = info["watermark"]["timestamp"].as_u64().unwrap();
    assert!(ts.abs_diff(now) <= 5);

    assert_eq!(h.phone(&token, &code).await.errcode(), 40029);
}

#[tokio::test]
async fn phone_code_errors_and_adhoc_codes() {
    let h = start(|_| {}).await;
    let token = h.legacy_token().await;
    assert_eq!(h.phone(&token, "").await.errcode(), 40029);
    assert_eq!(h.phone(&token, "invalid-1").await.errcode(), 40029);
    assert_eq!(h.phone(&token, "a@b").await.errcode(), 40029);
    assert_eq!(h.phone("bad-token", "abc").await.errcode(), 40001);

    let v = h.phone(&token, "abc").await.json();
    let number = v["phone_info"]["phoneNumber"].as_str().unwrap().to_owned();
    assert_eq!(number.len(), 11);
    assert!(number.starts_with("138"));
    assert_eq!(v["phone_info"]["purePhoneNumber"], number.as_str());
    assert_eq!(v["phone_info"]["countryCode"], "86");
    assert_eq!(h.phone(&token, "abc").await.errcode(), 40029, "single use");

    // The same ad-hoc code gives the same phone in another sandbox.
    let other = start(|_| {}).await;
    let other_token = other.legacy_token().await;
    let again = other.phone(&other_token, "abc").await.json();
    assert_eq!(again["phone_info"]["phoneNumber"], number.as_str());

    let expiring = h.sb().mint_phone_code(PhoneSpec::default());
    h.advance(300);
    let token = h.legacy_token().await;
    assert_eq!(h.phone(&token, &expiring).await.errcode(), 40029);
}

#[tokio::test]
async fn watermark_appid_can_be_faked() {
    let h = start(|_| {}).await;
    let token = h.legacy_token().await;
    h.sb().set_faults(Faults {
        watermark_appid: Some("wxsomeoneelse".into()),
        ..Faults::default()
    });
    let v = h.phone(&token, "abc").await.json();
    assert_eq!(v["phone_info"]["watermark"]["appid"], "wxsomeoneelse");
}

// ---------------------------------------------------------------- stats and admin paths

#[tokio::test]
async fn stats_count_every_call_and_reset() {
    let h = start(|_| {}).await;
    h.login("invalid").await;
    h.login("alice").await;
    h.legacy().await;
    h.stable(false).await;
    h.stable(false).await;
    let stats = h.sb().stats();
    assert_eq!(stats.calls["/sns/jscode2session"], 2);
    assert_eq!(stats.calls["/cgi-bin/token"], 1);
    assert_eq!(stats.calls["/cgi-bin/stable_token"], 2);
    assert_eq!((stats.legacy_issued, stats.stable_issued), (1, 1));
    assert_eq!(stats.force_refreshes, 0);

    h.sb().reset_stats();
    let stats = h.sb().stats();
    assert!(stats.calls.is_empty());
    assert_eq!(stats.legacy_issued + stats.stable_issued, 0);
}

#[tokio::test]
async fn admin_paths_drive_the_sandbox_over_http() {
    use reqwest::Method;
    let h = start(|_| {}).await;

    let (status, body) = h
        .admin(
            Method::POST,
            "/_sandbox/login_code",
            json!({"user": "dora"}),
        )
        .await;
    assert_eq!(status, 200);
    let code: Value = serde_json::from_slice(&body).unwrap();
    let login = h.login(code["code"].as_str().unwrap()).await.json();
    assert_eq!(login["openid"], h.sb().openid_for("dora"));

    let phone = json!({"phone_number": "13900000000", "pure_phone_number": "13900000000", "country_code": "86"});
    let (status, body) = h.admin(Method::POST, "/_sandbox/phone_code", phone).await;
    assert_eq!(status, 200);
    let code: Value = serde_json::from_slice(&body).unwrap();
    let token = h.legacy_token().await;
    let v = h.phone(&token, code["code"].as_str().unwrap()).await.json();
    assert_eq!(v["phone_info"]["phoneNumber"], "13900000000");

    let (status, _) = h
        .admin(Method::PUT, "/_sandbox/faults", json!({"busy_rate": 1.0}))
        .await;
    assert_eq!(status, 204);
    assert_eq!(h.legacy().await.errcode(), -1);
    let (status, _) = h.admin(Method::PUT, "/_sandbox/faults", json!({})).await;
    assert_eq!(status, 204);
    let (status, _) = h
        .admin(Method::PUT, "/_sandbox/faults", json!({"busy_rate": "x"}))
        .await;
    assert_eq!(status, 400);

    let (stable, _) = h.stable_ok(false).await;
    let (status, _) = h
        .admin(
            Method::POST,
            "/_sandbox/third_party_force_stable",
            json!(null),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(h.probe(&stable).await, 40001);

    let (status, _) = h
        .admin(Method::POST, "/_sandbox/third_party_refresh", json!(null))
        .await;
    assert_eq!(status, 204);
    let (status, _) = h
        .admin(Method::POST, "/_sandbox/advance_time", json!({"secs": 300}))
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        h.probe(&token).await,
        40001,
        "third party's token replaced ours"
    );

    let fresh = h.legacy_token().await;
    let (status, _) = h
        .admin(Method::POST, "/_sandbox/invalidate_tokens", json!(null))
        .await;
    assert_eq!(status, 204);
    assert_eq!(h.probe(&fresh).await, 40001);

    let (status, body) = h.admin(Method::GET, "/_sandbox/stats", json!(null)).await;
    assert_eq!(status, 200);
    let stats: wechat_sandbox::Stats = serde_json::from_slice(&body).unwrap();
    assert_eq!(stats.force_refreshes, 1);
    assert_eq!(stats.legacy_issued, 3);

    let (status, _) = h
        .admin(Method::POST, "/_sandbox/reset_stats", json!(null))
        .await;
    assert_eq!(status, 204);
    assert!(h.sb().stats().calls.is_empty());
}

#[tokio::test]
async fn router_can_be_served_by_the_caller() {
    let sb = Sandbox::new(SandboxConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, sb.router()).into_future());
    let url = format!(
        "http://{addr}/cgi-bin/token?grant_type=client_credential&appid=wxsandbox0000000001&secret=sandbox-secret"
    );
    let resp = reqwest::get(url).await.unwrap();
    let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(v["expires_in"], 7200);
    assert_eq!(sb.stats().legacy_issued, 1);
    server.abort();
}
