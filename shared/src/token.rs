//! The access-token keeper: one shared token for every instance, fetched by one caller at a time.
//!
//! - Warm path: the token in this instance's memory, no I/O at all.
//! - Cold path: one consistent read of the shared item in DynamoDB.
//! - Miss (no usable shared token): a lease taken with a conditional write lets exactly one caller
//!   across the fleet ask WeChat; the others poll the shared item briefly and take over only if
//!   the lease holder died (its lease ran out with no token written).
//! - Rejected token (40001/40014/42001): drop it only if the shared token is still the failing one,
//!   get a fresh one, retry the call once. In stable mode a normal-mode call comes first; force
//!   refresh only if WeChat hands back the very token it rejected, and never more than once per
//!   30 s across the fleet (WeChat allows 20 a day).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::TokenMode;
use crate::ids;
use crate::secret::Secret;
use crate::store::{Store, StoreError, StoredToken};
use crate::wechat::{FetchedToken, WeChatClient, WxError};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    WeChat(#[from] WxError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no access token could be had within {0:?}")]
    Timeout(Duration),
}

#[derive(Debug, Clone)]
pub struct KeeperOptions {
    /// A token with less than this left counts as expired (requests in flight need some margin).
    pub min_remaining: Duration,
    /// How long a token read from the store is trusted in memory before it is read again, so a
    /// token the refresher replaced is picked up well within WeChat's 5-minute overlap.
    pub memory_max_age: Duration,
    /// How long a fetch lease lasts: longer than one WeChat fetch with its retries.
    pub lease_ttl: Duration,
    /// How long a caller waits for a token (for another instance's fetch, or its own).
    pub wait_budget: Duration,
    pub poll_interval: Duration,
    /// The fleet-wide minimum gap between two force refreshes (WeChat's own rule is 30 s).
    pub force_min_interval: Duration,
}

impl Default for KeeperOptions {
    fn default() -> Self {
        KeeperOptions {
            min_remaining: Duration::from_secs(90),
            memory_max_age: Duration::from_secs(120),
            lease_ttl: Duration::from_secs(10),
            wait_budget: Duration::from_secs(9),
            poll_interval: Duration::from_millis(50),
            force_min_interval: Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
struct Cached {
    token: Secret,
    expires_at: u64,
    loaded: Instant,
}

/// What one scheduled refresh did, for its log line (never the token).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RefreshReport {
    pub mode: &'static str,
    pub fetched: bool,
    pub remaining_secs: u64,
}

pub struct TokenKeeper {
    wechat: WeChatClient,
    store: Arc<dyn Store>,
    mode: TokenMode,
    key: String,
    holder: String,
    opts: KeeperOptions,
    cache: Mutex<Option<Cached>>,
    /// Single flight inside this instance: concurrent misses queue here, not at DynamoDB.
    flight: tokio::sync::Mutex<()>,
}

impl TokenKeeper {
    pub fn new(wechat: WeChatClient, store: Arc<dyn Store>, mode: TokenMode) -> Self {
        let key = format!("{}#{}", wechat.appid(), mode.as_str());
        TokenKeeper {
            wechat,
            store,
            mode,
            key,
            holder: ids::new_request_id(),
            opts: KeeperOptions::default(),
            cache: Mutex::new(None),
            flight: tokio::sync::Mutex::new(()),
        }
    }

    pub fn with_options(mut self, opts: KeeperOptions) -> Self {
        self.opts = opts;
        self
    }

    pub fn mode(&self) -> TokenMode {
        self.mode
    }

    /// The key of the shared token item (`token#<key>` in the table), for other systems' reads.
    pub fn store_key(&self) -> &str {
        &self.key
    }

    /// Calls `f` with a valid token; if WeChat rejects that token, refreshes and calls once more.
    pub async fn with_token<T, F, Fut>(&self, f: F) -> Result<T, TokenError>
    where
        F: Fn(Secret) -> Fut,
        Fut: std::future::Future<Output = Result<T, WxError>>,
    {
        let token = self.token().await?;
        match f(token.clone()).await {
            Err(e) if e.is_token_rejected() => {
                tracing::warn!(
                    errcode = e.errcode(),
                    mode = self.mode.as_str(),
                    "access token rejected; refreshing and retrying once"
                );
                let fresh = self.replace_rejected(&token).await?;
                Ok(f(fresh).await?)
            }
            other => Ok(other?),
        }
    }

    /// A token valid for at least `min_remaining`.
    pub async fn token(&self) -> Result<Secret, TokenError> {
        if let Some(t) = self.memory() {
            return Ok(t);
        }
        if let Some(t) = self.shared().await? {
            return Ok(t);
        }
        self.fetch_once(None).await
    }

    fn memory(&self) -> Option<Secret> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .as_ref()
            .filter(|c| c.loaded.elapsed() < self.opts.memory_max_age && self.usable(c.expires_at))
            .map(|c| c.token.clone())
    }

    fn remember(&self, token: &Secret, expires_at: u64) {
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(Cached {
            token: token.clone(),
            expires_at,
            loaded: Instant::now(),
        });
    }

    fn forget(&self, token: &Secret) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.as_ref().is_some_and(|c| &c.token == token) {
            *cache = None;
        }
    }

    fn usable(&self, expires_at: u64) -> bool {
        expires_at > crate::now_secs() + self.opts.min_remaining.as_secs()
    }

    /// The shared token, if it is usable (and not `not`); remembered in memory.
    async fn shared_except(&self, not: Option<&Secret>) -> Result<Option<Secret>, TokenError> {
        let Some(t) = self.store.get_token(&self.key).await? else {
            return Ok(None);
        };
        if !self.usable(t.expires_at) || not == Some(&t.token) {
            return Ok(None);
        }
        self.remember(&t.token, t.expires_at);
        Ok(Some(t.token))
    }

    async fn shared(&self) -> Result<Option<Secret>, TokenError> {
        self.shared_except(None).await
    }

    /// Gets a new token with at most one fetch across the fleet. `rejected` is the token WeChat
    /// just refused, if that is why we are here (a shared token equal to it does not count).
    async fn fetch_once(&self, rejected: Option<&Secret>) -> Result<Secret, TokenError> {
        let _flight = self.flight.lock().await;
        // Another task of this instance may have finished the work while we queued.
        if let Some(t) = self.memory().filter(|t| Some(t) != rejected) {
            return Ok(t);
        }
        let lease = format!("fetch#{}", self.key);
        let started = Instant::now();
        let mut next_lease_try = Instant::now();
        loop {
            if let Some(t) = self.shared_except(rejected).await? {
                return Ok(t);
            }
            if Instant::now() >= next_lease_try {
                let now_ms = crate::now_millis();
                let ttl = self.opts.lease_ttl.as_millis() as u64;
                if self
                    .store
                    .try_lease(&lease, &self.holder, now_ms, ttl)
                    .await?
                {
                    let result = self.fetch_and_store(rejected).await;
                    // On failure too: the next caller may try at once instead of waiting it out.
                    if let Err(e) = self.store.release_lease(&lease, &self.holder).await {
                        tracing::warn!(error = %e, "could not release the token lease");
                    }
                    return result;
                }
                next_lease_try = Instant::now() + self.opts.poll_interval * 5;
            }
            if started.elapsed() >= self.opts.wait_budget {
                return Err(TokenError::Timeout(self.opts.wait_budget));
            }
            tokio::time::sleep(self.opts.poll_interval).await;
        }
    }

    /// Asks WeChat (we hold the lease) and writes the result to the shared item.
    async fn fetch_and_store(&self, rejected: Option<&Secret>) -> Result<Secret, TokenError> {
        let fetched = match self.mode {
            TokenMode::Legacy => self.wechat.legacy_token().await,
            TokenMode::Stable => match self.wechat.stable_token(false).await {
                Ok(t) if Some(&t.token) == rejected => self.force_refresh().await,
                other => other,
            },
        }
        .inspect_err(|e| log_fetch_error(self.mode, e))?;
        let now = crate::now_secs();
        let stored = StoredToken {
            token: fetched.token.clone(),
            expires_at: now + fetched.expires_in,
            fetched_at: now,
        };
        self.store.put_token(&self.key, &stored).await?;
        self.remember(&stored.token, stored.expires_at);
        tracing::info!(
            mode = self.mode.as_str(),
            expires_in = fetched.expires_in,
            "access token fetched"
        );
        Ok(stored.token)
    }

    /// Stable mode's last resort: WeChat handed back the very token it rejected.
    async fn force_refresh(&self) -> Result<FetchedToken, WxError> {
        let lease = format!("force#{}", self.wechat.appid());
        let now_ms = crate::now_millis();
        let gap = self.opts.force_min_interval.as_millis() as u64;
        // This lease is never released: it expires after the minimum gap, fleet-wide.
        match self
            .store
            .try_lease(&lease, &self.holder, now_ms, gap)
            .await
        {
            Ok(true) => {
                tracing::warn!("stable token rejected but still current: force refresh");
                self.wechat.stable_token(true).await
            }
            Ok(false) => Err(WxError::Api {
                errcode: 40001,
                errmsg: "access token rejected; force refresh already done in the last 30 s".into(),
            }),
            Err(e) => Err(WxError::Transport(e.to_string())),
        }
    }

    /// Handles a rejection of `failed`: a newer shared token if there is one, else a fresh fetch.
    pub async fn replace_rejected(&self, failed: &Secret) -> Result<Secret, TokenError> {
        self.forget(failed);
        if self.mode == TokenMode::Legacy {
            // Compare-and-delete: a token someone else already replaced stays.
            self.store.delete_token_if(&self.key, failed).await?;
        }
        self.fetch_once(Some(failed)).await
    }

    /// The scheduled refresh (EventBridge every `interval`): makes sure the shared token outlives
    /// two more runs. Stable mode simply asks each run (normal mode is idempotent and cheap).
    pub async fn refresh_scheduled(&self, interval: Duration) -> Result<RefreshReport, TokenError> {
        let horizon = 2 * interval.as_secs() + self.opts.min_remaining.as_secs();
        let current = self.store.get_token(&self.key).await?;
        let needs = match (&current, self.mode) {
            (_, TokenMode::Stable) => true,
            (None, _) => true,
            (Some(t), _) => t.expires_at <= crate::now_secs() + horizon,
        };
        let (fetched, expires_at) = if needs {
            let lease = format!("fetch#{}", self.key);
            let ttl = self.opts.lease_ttl.as_millis() as u64;
            if self
                .store
                .try_lease(&lease, &self.holder, crate::now_millis(), ttl)
                .await?
            {
                let result = self.fetch_and_store(None).await;
                let _ = self.store.release_lease(&lease, &self.holder).await;
                result?;
                let t = self.store.get_token(&self.key).await?;
                (true, t.map(|t| t.expires_at).unwrap_or(0))
            } else {
                // A request is fetching right now; its result is as good as ours.
                (false, self.token().await.map(|_| self.cached_expiry())?)
            }
        } else {
            (false, current.map(|t| t.expires_at).unwrap_or(0))
        };
        Ok(RefreshReport {
            mode: self.mode.as_str(),
            fetched,
            remaining_secs: expires_at.saturating_sub(crate::now_secs()),
        })
    }

    fn cached_expiry(&self) -> u64 {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.as_ref().map(|c| c.expires_at).unwrap_or(0)
    }
}

fn log_fetch_error(mode: TokenMode, e: &WxError) {
    match e.errcode() {
        Some(45009 | 45011) => {
            tracing::error!(mode = mode.as_str(), errcode = e.errcode(), error = %e, "access token quota exhausted")
        }
        Some(40013 | 40125 | 40164 | 40243 | 41004 | 40001) => {
            tracing::error!(mode = mode.as_str(), errcode = e.errcode(), error = %e, "access token fetch refused: check WECHAT_APPID, WECHAT_SECRET and the IP allow-list")
        }
        _ => tracing::error!(mode = mode.as_str(), error = %e, "access token fetch failed"),
    }
}

/// For the team's other systems: the current shared access token, without the app secret and
/// without ever fetching (the refresher keeps it fresh). Needs only `dynamodb:GetItem` on the table.
pub async fn read_shared_token(
    store: &dyn Store,
    appid: &str,
    mode: TokenMode,
) -> Result<Option<StoredToken>, StoreError> {
    let t = store
        .get_token(&format!("{appid}#{}", mode.as_str()))
        .await?;
    Ok(t.filter(|t| t.expires_at > crate::now_secs()))
}
