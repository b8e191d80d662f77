//! Upstream calls per request (WeChat, DynamoDB, S3), counted in-process on the real routes: a
//! count, not a timing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use e2e::{Options, TestEnv, call_app};
use wxmp::App;
use wxmp::secret::Secret;
use wxmp::store::*;

use crate::report::row;

/// A store that counts reads and writes.
struct Metered {
    inner: Arc<dyn Store>,
    reads: AtomicU64,
    token_reads: AtomicU64,
    writes: AtomicU64,
}

impl Metered {
    fn new(inner: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Metered {
            inner,
            reads: AtomicU64::new(0),
            token_reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        })
    }
    fn counts(&self) -> (u64, u64) {
        (
            self.reads.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
        )
    }
    async fn counted<T>(&self, write: bool, f: impl std::future::Future<Output = T>) -> T {
        let out = f.await;
        let counter = if write { &self.writes } else { &self.reads };
        counter.fetch_add(1, Ordering::Relaxed);
        out
    }
}

#[async_trait]
impl SessionStore for Metered {
    async fn put_session(&self, k: &str, r: &SessionRecord) -> Result<(), StoreError> {
        self.counted(true, self.inner.put_session(k, r)).await
    }
    async fn get_session(&self, k: &str, now: u64) -> Result<Option<SessionRecord>, StoreError> {
        self.counted(false, self.inner.get_session(k, now)).await
    }
    async fn delete_session(&self, k: &str) -> Result<(), StoreError> {
        self.counted(true, self.inner.delete_session(k)).await
    }
}

#[async_trait]
impl UserStore for Metered {
    async fn record_login(&self, o: &str, u: Option<&str>, now: u64) -> Result<bool, StoreError> {
        self.counted(true, self.inner.record_login(o, u, now)).await
    }
    async fn undo_first_login(&self, openid: &str, at: u64) -> Result<(), StoreError> {
        self.inner.undo_first_login(openid, at).await
    }
    async fn get_user(&self, openid: &str) -> Result<Option<wxmp::store::UserRecord>, StoreError> {
        self.inner.get_user(openid).await
    }
    async fn bind_phone(&self, openid: &str, phone: &str, now: u64) -> Result<(), StoreError> {
        self.inner.bind_phone(openid, phone, now).await
    }
    async fn update_profile(
        &self,
        openid: &str,
        nickname: Option<&str>,
        avatar_url: Option<&str>,
    ) -> Result<wxmp::store::UserRecord, StoreError> {
        self.inner
            .update_profile(openid, nickname, avatar_url)
            .await
    }
}

#[async_trait]
impl TokenStore for Metered {
    async fn get_token(&self, k: &str) -> Result<Option<StoredToken>, StoreError> {
        self.token_reads.fetch_add(1, Ordering::Relaxed);
        self.counted(false, self.inner.get_token(k)).await
    }
    async fn put_token(&self, k: &str, t: &StoredToken) -> Result<(), StoreError> {
        self.counted(true, self.inner.put_token(k, t)).await
    }
    async fn delete_token_if(&self, k: &str, t: &Secret) -> Result<bool, StoreError> {
        self.counted(true, self.inner.delete_token_if(k, t)).await
    }
    async fn try_lease(&self, name: &str, h: &str, now: u64, ttl: u64) -> Result<bool, StoreError> {
        self.counted(true, self.inner.try_lease(name, h, now, ttl))
            .await
    }
    async fn renew_lease(
        &self,
        name: &str,
        h: &str,
        now: u64,
        ttl: u64,
    ) -> Result<bool, StoreError> {
        self.counted(true, self.inner.renew_lease(name, h, now, ttl))
            .await
    }
    async fn release_lease(&self, name: &str, h: &str) -> Result<(), StoreError> {
        self.counted(true, self.inner.release_lease(name, h)).await
    }
    async fn take_quota(&self, name: &str, limit: u32, exp: u64) -> Result<bool, StoreError> {
        self.counted(true, self.inner.take_quota(name, limit, exp))
            .await
    }
}

/// An app like `env.app` but on `store`, metered.
fn metered_app(env: &TestEnv, store: Arc<dyn Store>) -> (App, Arc<Metered>) {
    let metered = Metered::new(store);
    let app =
        App::new(env.app.config.clone(), metered.clone()).with_code_cache(env.app.codes.clone());
    (app, metered)
}

pub async fn upstream_calls() {
    println!("\n== upstream calls per request (moto DynamoDB and S3, sandbox WeChat)");
    let env = TestEnv::with(Options {
        bucket: true,
        ..Default::default()
    })
    .await;
    let (app, m) = metered_app(&env, env.store.clone());
    let wechat = |app: &App| app.wechat.meter().snapshot().0;

    let (w0, (r0, wr0)) = (wechat(&app), m.counts());
    let token = e2e::env::login_with_code(&app, "bench-user.1").await;
    let (w1, (r1, wr1)) = (wechat(&app), m.counts());
    row(
        "login: WeChat calls",
        format!("{}", w1 - w0),
        "1",
        Some(w1 - w0 == 1),
    );
    // A session item (keyed by the token's hash, as the contract says) and the user record
    // (first seen, last login, as the login issue asks): two items, so two writes.
    row(
        "login: DynamoDB writes (session + user record)",
        format!("{}", wr1 - wr0),
        "2",
        Some(wr1 - wr0 == 2),
    );
    row(
        "login: DynamoDB reads",
        format!("{}", r1 - r0),
        "0",
        Some(r1 == r0),
    );

    // Warm the token first: the first code of an instance reads (or fetches) it.
    let first = call_app(
        &app,
        "POST",
        "/qrcode",
        Some(&token),
        br#"{"scene":"warmup"}"#,
    )
    .await;
    assert_eq!(first.status, 200);
    let (w0, (r0, _)) = (wechat(&app), m.counts());
    let token_reads0 = m.token_reads.load(Ordering::Relaxed);
    let miss = call_app(
        &app,
        "POST",
        "/qrcode",
        Some(&token),
        br#"{"scene":"bench-1"}"#,
    )
    .await;
    assert_eq!(miss.headers.get("x-cache").unwrap(), "miss");
    let (w1, _) = (wechat(&app), m.counts());
    row(
        "code miss: WeChat calls",
        format!("{}", w1 - w0),
        "1",
        Some(w1 - w0 == 1),
    );
    // Wait for the background upload, then ask again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hit = call_app(
        &app,
        "POST",
        "/qrcode",
        Some(&token),
        br#"{"scene":"bench-1"}"#,
    )
    .await;
    assert_eq!(hit.headers.get("x-cache").unwrap(), "hit");
    let (w2, (r2, _)) = (wechat(&app), m.counts());
    row(
        "code hit: WeChat calls",
        format!("{}", w2 - w1),
        "0",
        Some(w2 == w1),
    );
    let token_reads = m.token_reads.load(Ordering::Relaxed) - token_reads0;
    row(
        "warm code (miss + hit): DynamoDB reads for the token",
        format!("{token_reads}"),
        "0",
        Some(token_reads == 0),
    );
    row(
        "warm code (miss + hit): other DynamoDB reads",
        format!("{}", r2 - r0 - token_reads),
        "(2 bearer checks)",
        None,
    );

    let (w0, (r0, wr0)) = (wechat(&app), m.counts());
    wxmp::refresher::run_with_interval(&app, wxmp::refresher::DEFAULT_INTERVAL)
        .await
        .expect("refresh runs");
    let (w1, (r1, wr1)) = (wechat(&app), m.counts());
    row(
        "refresher run (stable): WeChat calls",
        format!("{}", w1 - w0),
        "1",
        Some(w1 - w0 == 1),
    );
    row(
        "refresher run: DynamoDB reads + writes",
        format!("{} + {}", r1 - r0, wr1 - wr0),
        "-",
        None,
    );
}

e2e::delegate_message_store!(Metered, self => self.inner);
