//! The token keeper's promises under the failures that made this project: every token dying at
//! once, a wrong AppSecret, force refreshes that must not be repeated or run away, and the
//! routes' answers when the token or the store fails. Keepers share one moto DynamoDB table (each
//! `App` is another Lambda instance) and a WeChat sandbox; requests go through the routes.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::env::{login_with_code, token_path};
use e2e::{Reply, TestEnv, call_app, moto};
use serde_json::{Value, json};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use wechat_sandbox::{Faults, PhoneSpec};
use wxmp::App;
use wxmp::config::TokenMode;
use wxmp::secret::Secret;
use wxmp::store::{
    DynamoStore, SessionRecord, SessionStore, StoreError, StoredToken, TokenStore, UserStore,
};
use wxmp::token::{KeeperOptions, TokenKeeper};

const CODE_PATH: &str = "/wxa/getwxacodeunlimit";
const PHONE_PATH: &str = "/wxa/business/getuserphonenumber";
const MODES: [TokenMode; 2] = [TokenMode::Stable, TokenMode::Legacy];

async fn qrcode(app: &App, bearer: &str, scene: &str) -> Reply {
    let body = json!({ "scene": scene, "width": 280 }).to_string();
    call_app(app, "POST", "/qrcode", Some(bearer), body.as_bytes()).await
}

async fn phone(env: &TestEnv, app: &App, bearer: &str) -> Reply {
    let code = env.sandbox().mint_phone_code(PhoneSpec {
        phone_number: "13800138000".into(),
        pure_phone_number: "13800138000".into(),
        country_code: "86".into(),
    });
    let body = json!({ "code": code }).to_string();
    call_app(app, "POST", "/phone", Some(bearer), body.as_bytes()).await
}

fn is_png(r: &Reply) -> bool {
    r.status == 200 && r.body.starts_with(b"\x89PNG")
}

fn error(r: &Reply) -> (u16, String, Value) {
    (
        r.status,
        r.error_code(),
        r.json()["error"]["wechat_errcode"].clone(),
    )
}

/// An instance whose keeper may force a refresh again at once (the sandbox's gap set to 0 too),
/// so one test can see several force refreshes without waiting WeChat's 30 s.
fn eager_force_instance(env: &TestEnv) -> App {
    let mut app = env.build_app();
    app.tokens = Arc::new(
        TokenKeeper::new(app.wechat.clone(), app.store.clone(), env.token_mode).with_options(
            KeeperOptions {
                force_min_interval: Duration::from_millis(1),
                ..KeeperOptions::for_mode(env.token_mode)
            },
        ),
    );
    app
}

/// The log lines written while `f` runs on this thread (the test's current-thread runtime).
struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let buf = buf.clone();
            move || LogWriter(buf.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(writer)
            .with_max_level(tracing::Level::INFO)
            .finish();
        (
            LogCapture(buf),
            tracing::subscriber::set_default(subscriber),
        )
    }
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_string)
            .collect()
    }
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Every token dies at once.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_token_dying_at_once_fails_no_request_and_costs_one_fetch() {
    // GIVEN legacy mode and four instances on one table, each holding a different token in
    // memory, as warm instances do for up to memory_max_age after the shared one was replaced
    let env = TestEnv::with_mode(TokenMode::Legacy, |_| {}).await;
    let instances: Vec<Arc<App>> = (0..4).map(|_| Arc::new(env.build_app())).collect();
    let bearer = login_with_code(&instances[0], &env.sandbox().mint_login_code("mass")).await;
    let mut held: Vec<Secret> = Vec::new();
    for app in &instances {
        if let Some(previous) = held.last() {
            // The shared token is replaced (as the refresher does); the old one lives on at
            // WeChat for the overlap and in the previous instance's memory.
            env.store
                .delete_token_if(app.tokens.store_key(), previous)
                .await
                .expect("store");
        }
        assert!(is_png(&qrcode(app, &bearer, "warm").await));
        held.push(app.tokens.token().await.expect("token in memory"));
    }
    for (i, t) in held.iter().enumerate() {
        assert!(held[..i].iter().all(|o| o != t), "four different tokens");
    }

    // WHEN every token is invalidated at once (an AppSecret reset, say) while 60 code requests
    // run concurrently, 15 on each instance
    env.sandbox().invalidate_all_tokens();
    env.sandbox().reset_stats();
    let barrier = Arc::new(Barrier::new(60));
    let mut set = JoinSet::new();
    for i in 0..60 {
        let app = instances[i % 4].clone();
        let (bearer, barrier) = (bearer.clone(), barrier.clone());
        set.spawn(async move {
            barrier.wait().await;
            qrcode(&app, &bearer, &format!("s{}", i % 3)).await
        });
    }
    let replies = set.join_all().await;

    // THEN every request got its code, WeChat issued one token, and no request made more than
    // three calls
    let failed: Vec<_> = replies.iter().filter(|r| !is_png(r)).map(error).collect();
    assert!(
        failed.is_empty(),
        "{} of 60 failed: {failed:?}",
        failed.len()
    );
    let fetches = env.calls("/cgi-bin/token");
    let code_calls = env.calls(CODE_PATH);
    println!(
        "mass invalidation: 60 requests on 4 instances -> {fetches} fetch, {code_calls} code calls"
    );
    assert_eq!(fetches, 1, "one fetch for the whole fleet");
    assert!(code_calls <= 180, "{code_calls} code calls");
    let shared = env
        .store
        .get_token(instances[0].tokens.store_key())
        .await
        .unwrap()
        .unwrap();
    for app in &instances {
        assert_eq!(app.tokens.token().await.unwrap(), shared.token);
    }
}

#[tokio::test]
async fn a_retry_token_from_the_table_that_wechat_rejects_too_is_replaced_once_more() {
    for mode in MODES {
        // GIVEN an instance holding one token in memory, and the table holding another (fetched
        // by a second instance after the first was replaced) that WeChat will reject as well:
        // its first call and the retry both answer 40001
        // (force refreshes allowed back to back, so the stable case can show every call)
        let env = TestEnv::with_mode(mode, |c| c.force_min_interval_secs = 0).await;
        let (app, other) = (eager_force_instance(&env), env.build_app());
        let bearer = login_with_code(&app, &env.sandbox().mint_login_code("twice")).await;
        assert!(is_png(&qrcode(&app, &bearer, "warm").await));
        let held = app.tokens.token().await.unwrap();
        match mode {
            TokenMode::Legacy => {
                env.store
                    .delete_token_if(app.tokens.store_key(), &held)
                    .await
                    .unwrap();
            }
            TokenMode::Stable => env.sandbox().third_party_force_stable(),
        }
        assert!(is_png(&qrcode(&other, &bearer, "other").await));
        let shared = other.tokens.token().await.unwrap();
        assert_ne!(shared, held);
        env.sandbox().reset_stats();
        env.script(CODE_PATH, 40001, 2);

        // WHEN the first instance is asked for a code
        let r = qrcode(&app, &bearer, "x").await;

        // THEN the third call, with a token fetched for it through the lease, succeeds
        assert!(is_png(&r), "{}: {:?}", mode.as_str(), error(&r));
        assert_eq!(env.calls(CODE_PATH), 3, "{}", mode.as_str());
        // (stable: a normal call handed back the rejected token, so one force refresh)
        let token_calls = match mode {
            TokenMode::Legacy => 1,
            TokenMode::Stable => 2,
        };
        assert_eq!(
            env.calls(token_path(mode)),
            token_calls,
            "{}",
            mode.as_str()
        );
        let now = app.tokens.token().await.unwrap();
        assert_ne!(now, held);
        if mode == TokenMode::Legacy {
            // (stable: WeChat performs no force within 30 s of the third party's and hands the
            // current token back, which is then accepted)
            assert_ne!(now, shared, "the rejected table token was replaced");
        }

        // AND a token this request fetched itself is not replaced again: a rejection of it ends
        // the request (no loop)
        env.sandbox().reset_stats();
        env.script(CODE_PATH, 40001, 100);
        let app = eager_force_instance(&env);
        let r = qrcode(&app, &bearer, "y").await;
        assert_eq!(r.status, 503, "{}", mode.as_str());
        // Its first token came from the table; the replacement was fetched for it: two calls.
        assert_eq!(env.calls(CODE_PATH), 2, "{}", mode.as_str());
    }
}

// ---------------------------------------------------------------------------------------------
// Fetch errors, force refreshes.

#[tokio::test]
async fn a_token_fetch_refused_with_40001_is_a_configuration_error_not_a_retry() {
    for mode in MODES {
        // GIVEN WeChat refusing to issue tokens with 40001 (on the token endpoints: a wrong
        // AppSecret)
        let env = TestEnv::with_mode(mode, |_| {}).await;
        let bearer = login_with_code(&env.app, &env.sandbox().mint_login_code("cfg")).await;
        env.script(token_path(mode), 40001, 10);

        // WHEN a code is asked for
        let r = qrcode(&env.app, &bearer, "x").await;

        // THEN 502 wechat_error with WeChat's errcode, after one fetch attempt
        assert_eq!(
            error(&r),
            (502, "wechat_error".into(), json!(40001)),
            "{}",
            mode.as_str()
        );
        assert_eq!(env.calls(token_path(mode)), 1, "{}", mode.as_str());
        assert_eq!(env.calls(CODE_PATH), 0);
    }
}

#[tokio::test]
async fn the_daily_force_cap_holds_under_a_persistent_rejection_and_logs_once_a_minute() {
    // GIVEN stable mode and a WeChat that rejects every code call with 40001 while handing out
    // the same token in normal mode, with the 30 s gap between force refreshes lifted
    let env = TestEnv::with_mode(TokenMode::Stable, |c| c.force_min_interval_secs = 0).await;
    let app = eager_force_instance(&env);
    let bearer = login_with_code(&app, &env.sandbox().mint_login_code("persistent")).await;
    assert!(is_png(&qrcode(&app, &bearer, "warm").await));
    env.script(CODE_PATH, 40001, 10_000);
    let (logs, _guard) = LogCapture::start();

    // WHEN 15 codes are asked for, one after another
    let mut replies = Vec::new();
    for i in 0..15 {
        replies.push(qrcode(&app, &bearer, &format!("p{i}")).await);
    }

    // THEN ten force refreshes were made (the fleet's daily cap), not twenty (WeChat's quota)
    assert_eq!(env.sandbox().stats().force_refreshes, 10);
    for r in &replies[..10] {
        // WeChat rejected even the freshly forced token: its own 40001 is reported
        assert_eq!(error(r), (503, "wechat_unavailable".into(), json!(40001)));
    }
    // AND past the cap the keeper gives up on its own rule: 503 without a WeChat errcode
    for r in &replies[10..] {
        assert_eq!(error(r), (503, "wechat_unavailable".into(), Value::Null));
    }
    // AND the log says why once, not once per request
    let cap_lines: Vec<_> = logs
        .lines()
        .into_iter()
        .filter(|l| l.contains("force_cap_reached"))
        .collect();
    assert_eq!(cap_lines.len(), 1, "{cap_lines:#?}");
    assert!(
        cap_lines[0].contains("\"level\":\"ERROR\""),
        "{}",
        cap_lines[0]
    );
}

#[tokio::test]
async fn a_force_refresh_whose_answer_is_lost_is_not_sent_again() {
    // GIVEN stable mode, a token WeChat rejects but still hands out, and a gateway that will lose
    // WeChat's answer to the force refresh (the refresh itself happens)
    let env = TestEnv::with_mode(TokenMode::Stable, |_| {}).await;
    let bearer = login_with_code(&env.app, &env.sandbox().mint_login_code("lost")).await;
    assert!(is_png(&qrcode(&env.app, &bearer, "warm").await));
    env.sandbox().reset_stats();
    env.sandbox().set_faults(Faults {
        scripted: vec![wechat_sandbox::ScriptedError {
            path: CODE_PATH.into(),
            errcode: 40001,
            count: 1,
        }],
        lost_answers: vec![wechat_sandbox::LostAnswer {
            path: "/cgi-bin/stable_token".into(),
            count: 1,
            only_force: true,
        }],
        ..Default::default()
    });

    // WHEN a code is asked for
    let r = qrcode(&env.app, &bearer, "x").await;

    // THEN the force refresh was sent once (a normal call, then the force), the request failed
    // as unavailable, and WeChat did refresh
    assert_eq!(error(&r).0, 503);
    assert_eq!(env.calls("/cgi-bin/stable_token"), 2);
    assert_eq!(env.sandbox().stats().force_refreshes, 1);

    // AND the next request picks up the token WeChat issued by that refresh, without forcing
    let r = qrcode(&env.app, &bearer, "y").await;
    assert!(is_png(&r), "{:?}", error(&r));
    assert_eq!(env.sandbox().stats().force_refreshes, 1);
}

// ---------------------------------------------------------------------------------------------
// The routes' answers.

#[tokio::test]
async fn phone_follows_the_retry_rule() {
    for mode in MODES {
        let env = TestEnv::with_mode(mode, |c| c.force_min_interval_secs = 0).await;
        let app = eager_force_instance(&env);
        let bearer = login_with_code(&app, &env.sandbox().mint_login_code("ph")).await;
        assert_eq!(phone(&env, &app, &bearer).await.status, 200);

        // GIVEN WeChat rejects the token once: refreshed, called again, the number comes back
        env.sandbox().reset_stats();
        env.script(PHONE_PATH, 40001, 1);
        let r = phone(&env, &app, &bearer).await;
        assert_eq!(r.status, 200, "{}: {:?}", mode.as_str(), error(&r));
        assert_eq!(r.json()["pure_phone_number"], "13800138000");
        assert_eq!(env.calls(PHONE_PATH), 2);

        // GIVEN WeChat rejects even a token fetched for this request: no loop, 503
        env.sandbox().reset_stats();
        env.script(PHONE_PATH, 40001, 100);
        let r = phone(&env, &app, &bearer).await;
        assert_eq!(
            error(&r),
            (503, "wechat_unavailable".into(), json!(40001)),
            "{}",
            mode.as_str()
        );
        assert_eq!(env.calls(PHONE_PATH), 2, "{}", mode.as_str());
    }
}

#[tokio::test]
async fn codes_and_phone_answer_503_store_unavailable_when_dynamodb_is_down() {
    let env = TestEnv::with_mode(TokenMode::Stable, |_| {}).await;
    let bearer = login_with_code(&env.app, &env.sandbox().mint_login_code("down")).await;
    // GIVEN an instance whose DynamoDB does not answer (nothing listens on its endpoint)
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}")
    };
    let sdk = moto::sdk_config(&dead).await;
    let store = Arc::new(DynamoStore::new(
        wxmp::aws::dynamodb(&sdk),
        env.table.clone(),
    ));
    let app = env.build_app_with(&[], store);

    // WHEN a code and a phone number are asked for, THEN both answer 503 store_unavailable
    let r = qrcode(&app, &bearer, "x").await;
    assert_eq!(error(&r), (503, "store_unavailable".into(), Value::Null));
    let r = phone(&env, &app, &bearer).await;
    assert_eq!(error(&r), (503, "store_unavailable".into(), Value::Null));
    assert_eq!(env.calls(CODE_PATH) + env.calls(PHONE_PATH), 0);

    // GIVEN instead an instance whose sessions are readable but whose token item is not (the
    // keeper's own store failure), with nothing in its memory
    let app = env.build_app_with(&[], Arc::new(TokensDown(env.store.clone())));
    let r = qrcode(&app, &bearer, "y").await;
    assert_eq!(error(&r), (503, "store_unavailable".into(), Value::Null));
    let r = phone(&env, &app, &bearer).await;
    assert_eq!(error(&r), (503, "store_unavailable".into(), Value::Null));
    assert_eq!(env.calls(CODE_PATH) + env.calls(PHONE_PATH), 0);
}

/// A store whose sessions work and whose token item and leases do not.
struct TokensDown(Arc<e2e::atomic::AtomicDynamo>);

fn down<T>() -> Result<T, StoreError> {
    Err(StoreError("the token item is unreachable".into()))
}

#[async_trait::async_trait]
impl SessionStore for TokensDown {
    async fn put_session(&self, key: &str, record: &SessionRecord) -> Result<(), StoreError> {
        self.0.put_session(key, record).await
    }
    async fn get_session(&self, key: &str, now: u64) -> Result<Option<SessionRecord>, StoreError> {
        self.0.get_session(key, now).await
    }
    async fn delete_session(&self, key: &str) -> Result<(), StoreError> {
        self.0.delete_session(key).await
    }
}

#[async_trait::async_trait]
impl UserStore for TokensDown {
    async fn record_login(&self, o: &str, u: Option<&str>, now: u64) -> Result<bool, StoreError> {
        self.0.record_login(o, u, now).await
    }
    async fn undo_first_login(&self, openid: &str, at: u64) -> Result<(), StoreError> {
        self.0.undo_first_login(openid, at).await
    }
    async fn get_user(&self, openid: &str) -> Result<Option<wxmp::store::UserRecord>, StoreError> {
        self.0.get_user(openid).await
    }
    async fn bind_phone(&self, openid: &str, phone: &str, now: u64) -> Result<(), StoreError> {
        self.0.bind_phone(openid, phone, now).await
    }
    async fn update_profile(
        &self,
        openid: &str,
        nickname: Option<&str>,
        avatar_url: Option<&str>,
    ) -> Result<wxmp::store::UserRecord, StoreError> {
        self.0.update_profile(openid, nickname, avatar_url).await
    }
}

#[async_trait::async_trait]
impl TokenStore for TokensDown {
    async fn get_token(&self, _: &str) -> Result<Option<StoredToken>, StoreError> {
        down()
    }
    async fn put_token(&self, _: &str, _: &StoredToken) -> Result<(), StoreError> {
        down()
    }
    async fn delete_token_if(&self, _: &str, _: &Secret) -> Result<bool, StoreError> {
        down()
    }
    async fn try_lease(&self, _: &str, _: &str, _: u64, _: u64) -> Result<bool, StoreError> {
        down()
    }
    async fn renew_lease(&self, _: &str, _: &str, _: u64, _: u64) -> Result<bool, StoreError> {
        down()
    }
    async fn release_lease(&self, _: &str, _: &str) -> Result<(), StoreError> {
        down()
    }
    async fn take_quota(&self, _: &str, _: u32, _: u64) -> Result<bool, StoreError> {
        down()
    }
}

// ---------------------------------------------------------------------------------------------
// The fetch lease.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_slower_than_the_lease_keeps_its_lease_and_nobody_fetches_twice() {
    for mode in MODES {
        // GIVEN a WeChat that takes 4 s to issue a token (longer than the 3 s lease, as the force
        // path can be), and two cold instances
        let env = TestEnv::with_mode(mode, |_| {}).await;
        let (a, b) = (Arc::new(env.build_app()), Arc::new(env.build_app()));
        env.sandbox().set_faults(Faults {
            latency_ms: 4000,
            ..Default::default()
        });

        // WHEN one starts fetching and the other needs a token a moment later
        let first = {
            let a = a.clone();
            tokio::spawn(async move { a.tokens.token().await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let second = b.tokens.token().await.expect("waited for the first fetch");

        // THEN the holder renewed its lease while WeChat was slow: one fetch, one token
        let first = first.await.unwrap().expect("fetched");
        assert_eq!(first, second, "{}", mode.as_str());
        assert_eq!(env.calls(token_path(mode)), 1, "{}", mode.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_cancelled_by_the_deadline_releases_its_lease() {
    // GIVEN a WeChat that hangs for 10 s, and a request whose deadline comes after 1 s
    let env = TestEnv::with_mode(TokenMode::Stable, |_| {}).await;
    env.sandbox().set_faults(Faults {
        latency_ms: 10_000,
        ..Default::default()
    });
    let app = env.build_app();
    let by = wxmp::clock::now() + Duration::from_secs(1);
    let cut = wxmp::scope::run(Some(by), tokio::time::timeout_at(by, app.tokens.token())).await;
    assert!(cut.is_err(), "cut off by the deadline");

    // THEN the lease is free well before its 3 s run out (the release is made in the background)
    let lease = format!("fetch#{}", app.tokens.store_key());
    let cut_at = std::time::Instant::now();
    loop {
        if env
            .store
            .try_lease(&lease, "next", wxmp::now_millis(), 1000)
            .await
            .unwrap()
        {
            break;
        }
        assert!(
            cut_at.elapsed() < Duration::from_millis(2000),
            "the cancelled fetch did not give its lease back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

e2e::delegate_message_store!(TokensDown, self => self.0);
