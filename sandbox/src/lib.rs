//! A stand-in for WeChat's mini-program server APIs, for the backend's tests and its local
//! dev server.
//!
//! It answers the WeChat paths the backend uses (`/sns/jscode2session`, `/cgi-bin/token`,
//! `/cgi-bin/stable_token`, `/wxa/getwxacodeunlimit`, `/wxa/business/getuserphonenumber`,
//! `/cgi-bin/message/subscribe/send`, `/wxa/msg_sec_check`, `/wxa/media_check_async`,
//! `/wxa/generatescheme`, `/wxa/generate_urllink`, `/wxa/genwxashortlink`) and builds message
//! pushes as WeChat does (every mode and format), with WeChat's rules and quirks: HTTP 200 errors with an `errcode`, single-use codes, the
//! legacy token's overlap window, stable-token renewal and force limits, odd content types.
//! Behaviour is deterministic; randomness only goes into token, code and session-key values.
//!
//! A test drives it through [`Sandbox`]'s methods or the `/_sandbox/*` HTTP paths: mint codes,
//! inject [`Faults`] (busy rate, latency, [`ScriptedError`]s, a [`BogusImage`] in place of a
//! code, [`LostAnswer`]s), play a third party refreshing tokens, move the clock on, read call
//! counts.
//!
//! The sandbox's clock is tokio's (see [`Sandbox::advance_time`]): under a paused runtime
//! (`#[tokio::test(start_paused = true)]`, `tokio::time::advance`) token and code lifetimes,
//! the force-refresh day and watermark timestamps follow the test's virtual time.
//!
//! [`render_code`] is memoised for the last few distinct parameter sets, so thousands of codes
//! with the same parameters cost one render.

mod admin;
mod codes;
mod error;
mod faults;
mod image;
mod push;
mod routes;
mod security;
mod state;
mod subscribe;
mod tokens;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use image::{CodeParams, render_code};
pub use push::{PushFormat, PushMode, PushRequest, PushSpec, deliver as deliver_push, sign};

use state::State;

/// How the sandbox plays WeChat. Times are in seconds.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub appid: String,
    pub secret: String,
    /// Lifetime of issued access tokens, legacy and stable alike.
    pub token_ttl_secs: u64,
    /// After a new legacy token is issued, older legacy tokens stay valid this long.
    pub legacy_overlap_secs: u64,
    /// A normal-mode stable call within this many seconds of expiry gets a new token; the
    /// old one stays valid until its own expiry.
    pub stable_renew_window_secs: u64,
    /// A force refresh this soon after the previous one is not performed.
    pub force_min_interval_secs: u64,
    /// Force refreshes allowed per UTC day of the sandbox clock (the count starts again when
    /// `epoch_secs / 86400` changes, as WeChat's "20 a day"); beyond it, 45009.
    pub force_daily_limit: u32,
    /// After a force refresh, how long older stable tokens stay valid.
    pub force_grace_secs: u64,
    /// Lifetime of minted login and phone codes.
    pub code_ttl_secs: u64,
    /// Pages that exist in the "published version", for `check_path`.
    pub published_pages: Vec<String>,
    /// Whether jscode2session includes a unionid (the app is bound to an Open Platform account).
    pub unionid: bool,
    /// The message push's Token and EncodingAESKey, as set in the console.
    pub push_token: String,
    pub push_aes_key: String,
    /// The mini-program's original id (`gh_...`), the pushes' `ToUserName`.
    pub original_id: String,
    /// One-time subscribe-message templates the app has picked.
    pub subscribe_templates: Vec<String>,
    /// Long-term templates (sent without a grant).
    pub long_term_templates: Vec<String>,
    /// Schemes and URL links allowed per UTC day, together (WeChat's 500,000); beyond, 45009.
    pub link_daily_quota: u64,
    /// Where finished media checks are pushed (`wxa_media_check`), and how; unset: not pushed.
    pub push_url: Option<String>,
    pub push_mode: PushMode,
    pub push_format: PushFormat,
    /// How long a media check takes before its push.
    pub media_check_delay_ms: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            appid: "wxsandbox0000000001".to_owned(),
            secret: "sandbox-secret".to_owned(),
            token_ttl_secs: 7200,
            legacy_overlap_secs: 300,
            stable_renew_window_secs: 300,
            force_min_interval_secs: 30,
            force_daily_limit: 20,
            force_grace_secs: 0,
            code_ttl_secs: 300,
            published_pages: vec!["pages/index/index".to_owned()],
            unionid: true,
            push_token: "sandboxpushtoken".to_owned(),
            push_aes_key: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".to_owned(),
            original_id: "gh_sandbox000001".to_owned(),
            subscribe_templates: vec![
                "TPL_ORDER_SHIPPED_0000000000000000000000000".to_owned(),
                "TPL_BOOKING_REMINDER_000000000000000000000".to_owned(),
            ],
            long_term_templates: vec!["TPL_LONG_TERM_SERVICE_00000000000000000000".to_owned()],
            link_daily_quota: 500_000,
            push_url: None,
            push_mode: PushMode::Safe,
            push_format: PushFormat::Json,
            media_check_delay_ms: 20,
        }
    }
}

/// Injected failures for the WeChat paths. Setting them restarts the busy pattern.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Faults {
    /// Fraction (0.0..=1.0) of calls answered `-1 system error`. Deterministic: counting the
    /// WeChat-path calls since the faults were set from k = 1, call k is busy iff
    /// floor(k·rate) > floor((k−1)·rate). So 1.0 = every call, 0.1 = every 10th call.
    pub busy_rate: f64,
    /// Delay before every WeChat-path answer.
    pub latency_ms: u64,
    /// Checked first: a call to `path` answers `errcode` while its count lasts.
    pub scripted: Vec<ScriptedError>,
    /// Replaces the appid in getuserphonenumber's watermark.
    pub watermark_appid: Option<String>,
    /// getwxacodeunlimit calls that would have answered an image answer this instead, while
    /// its count lasts.
    pub bogus_image: Option<BogusImage>,
    /// Checked last: a call to `path` is carried out in full, then answered HTTP 502, while
    /// its count lasts.
    pub lost_answers: Vec<LostAnswer>,
}

/// `count` calls to `path` (e.g. "/cgi-bin/token") answer `errcode` with errmsg "scripted".
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ScriptedError {
    pub path: String,
    pub errcode: i64,
    pub count: u32,
}

/// The next `count` getwxacodeunlimit calls that would have succeeded (token and parameters
/// valid) answer HTTP 200 with `content_type` and `body` instead of the PNG: say `image/jpeg`
/// over `{"errmsg":"system error"}`, a body starting with a UTF-8 BOM, or an empty body. An
/// empty `content_type` (or one that is not a valid header value) sends no Content-Type.
/// Calls that fail (scripted, busy, bad token or parameters) do not use up the count.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct BogusImage {
    pub content_type: String,
    pub body: String,
    pub count: u32,
}

/// The next `count` calls to `path` (e.g. "/cgi-bin/stable_token") are carried out in full (a
/// token issued, a force refresh done and counted, a code redeemed, a scripted or busy error
/// answered, a [`BogusImage`] used up) and then answered HTTP 502 with a small `text/html`
/// body instead, as by a gateway that lost WeChat's answer. With `only_force`, only
/// `/cgi-bin/stable_token` calls with `force_refresh: true` count (and lose their answer).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LostAnswer {
    pub path: String,
    pub count: u32,
    #[serde(default)]
    pub only_force: bool,
}

/// The phone a phone code stands for.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct PhoneSpec {
    pub phone_number: String,
    pub pure_phone_number: String,
    pub country_code: String,
}

/// What the sandbox has seen since it started or since [`Sandbox::reset_stats`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Calls per WeChat path, failures included.
    pub calls: BTreeMap<String, u64>,
    /// Legacy tokens issued, third-party refreshes included.
    pub legacy_issued: u64,
    /// Stable tokens issued (new tokens only, not repeats of the current one).
    pub stable_issued: u64,
    /// Stable force refreshes performed.
    pub force_refreshes: u64,
}

/// The sandbox: cheap to clone, all clones share one state.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: SandboxConfig,
    state: Mutex<State>,
}

impl Sandbox {
    pub fn new(cfg: SandboxConfig) -> Self {
        let state = Mutex::new(State::new(&cfg));
        Self {
            inner: Arc::new(Inner { cfg, state }),
        }
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.inner.cfg
    }

    /// Makes `secret` the only app secret accepted from now on (the old one answers 40125).
    pub fn rotate_secret(&self, secret: String) {
        self.state().secret = secret;
    }

    /// The WeChat paths and the `/_sandbox/*` admin paths.
    pub fn router(&self) -> Router {
        routes::router()
            .merge(admin::router())
            .with_state(self.clone())
    }

    /// Serves a new sandbox on 127.0.0.1 at a free port until the handle is dropped.
    pub async fn spawn(cfg: SandboxConfig) -> std::io::Result<RunningSandbox> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let sandbox = Sandbox::new(cfg);
        let app = sandbox.router();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "sandbox server stopped");
            }
        });
        Ok(RunningSandbox {
            sandbox,
            addr,
            task,
        })
    }

    /// The state lock. Never held across an `.await`; a panic while holding it does not make
    /// the sandbox unusable.
    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A login code for `user`, valid `code_ttl_secs`, usable once.
    pub fn mint_login_code(&self, user: &str) -> String {
        let mut st = self.state();
        let now = st.now();
        st.login_codes.mint(user, now)
    }

    /// A phone code for `phone`, valid `code_ttl_secs`, usable once.
    pub fn mint_phone_code(&self, phone: PhoneSpec) -> String {
        let mut st = self.state();
        let now = st.now();
        st.phone_codes.mint(phone, now)
    }

    /// Replaces the faults; the busy pattern restarts at call 1.
    pub fn set_faults(&self, faults: Faults) {
        self.state().faults.set(faults);
    }

    /// The faults in force, with scripted, bogus-image and lost-answer counts as far as they
    /// have run down.
    pub fn faults(&self) -> Faults {
        self.state().faults.faults().clone()
    }

    /// Someone else holding the secret fetches a legacy token: older legacy tokens die after
    /// `legacy_overlap_secs`. Counted as issued, not as a call.
    pub fn third_party_refresh(&self) {
        let mut st = self.state();
        let now = st.now();
        let grant = st.tokens.issue_legacy(now);
        st.record_grant(&grant, true);
    }

    /// Someone else force-refreshes the stable token, subject to the force rules.
    pub fn third_party_force_stable(&self) {
        let mut st = self.state();
        if let Ok(grant) = st.stable_token(true) {
            st.record_grant(&grant, false);
        }
    }

    /// Every token issued so far answers 40001 from now on.
    pub fn invalidate_all_tokens(&self) {
        self.state().tokens.invalidate_all();
    }

    /// Moves the sandbox clock forward: tokens and codes age, watermarks move on.
    ///
    /// The clock also runs on its own, on tokio's clock: under a paused runtime
    /// `tokio::time::advance` moves it the same way (create the sandbox in that runtime).
    pub fn advance_time(&self, by: Duration) {
        self.state().clock.advance(by);
    }

    pub fn stats(&self) -> Stats {
        self.state().stats.clone()
    }

    pub fn reset_stats(&self) {
        self.state().stats = Stats::default();
    }

    /// The push WeChat would send for `spec` (nothing recorded, nothing sent): for tests that
    /// replay, tamper with or time a push themselves.
    pub fn build_push(&self, spec: &PushSpec) -> PushRequest {
        let cfg = &self.inner.cfg;
        let now = self.state().clock.epoch_secs();
        push::build(
            spec,
            &cfg.push_token,
            &cfg.push_aes_key,
            &cfg.appid,
            &cfg.original_id,
            now,
        )
    }

    /// A user's action that WeChat pushes: what it means for the grants is recorded (an
    /// accepted popup is a grant WeChat will honour), then the push is built and POSTed to
    /// `url`. The receiver's status and body.
    pub async fn push(&self, url: &str, spec: &PushSpec) -> Result<(u16, String), String> {
        self.state().subscriptions.record_push(&spec.message);
        let req = self.build_push(spec);
        push::deliver(url, &req).await
    }

    /// Gives `openid` `count` one-time grants of `template_id` (and a standing one if
    /// `standing`) without a push.
    pub fn grant(&self, openid: &str, template_id: &str, count: u32, standing: bool) {
        self.state()
            .subscriptions
            .grant(openid, template_id, count, standing);
    }

    /// Where finished media checks are pushed from now on (`wxa_media_check`), in `mode` and
    /// `format`.
    pub fn set_push_target(&self, url: &str, mode: PushMode, format: PushFormat) {
        self.state().push_target = Some((url.to_string(), mode, format));
    }

    /// Every subscribe message sent so far (the request bodies WeChat accepted).
    pub fn subscribe_messages(&self) -> Vec<serde_json::Value> {
        self.state().subscriptions.sent.clone()
    }

    /// The openid jscode2session returns for `user`.
    pub fn openid_for(&self, user: &str) -> String {
        codes::openid(&self.inner.cfg.appid, user)
    }

    /// The unionid jscode2session returns for `user` (when `unionid` is on).
    pub fn unionid_for(&self, user: &str) -> String {
        codes::unionid(user)
    }
}

/// A sandbox served on a local port; the server stops when this is dropped.
pub struct RunningSandbox {
    pub sandbox: Sandbox,
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl RunningSandbox {
    /// `http://127.0.0.1:PORT`, to use as the WeChat API base.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}
