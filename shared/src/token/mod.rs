//! The access-token keeper: one shared token for every instance, fetched by one caller at a time.
//!
//! - Warm path: the token in this instance's memory, no I/O at all.
//! - Cold path: one consistent read of the shared item in DynamoDB.
//! - Miss (no usable shared token): a lease taken with a conditional write lets exactly one caller
//!   across the fleet ask WeChat; the others poll the shared item briefly and take over only if
//!   the lease holder died (its lease, renewed while the holder works, ran out with no token).
//! - Rejected token (40001/40014/42001): drop it only if the shared token is still the failing one,
//!   get another, call again. A token for the retry that came from the shared item was never
//!   checked by anyone: if WeChat rejects it too, it is dropped the same way and a token comes
//!   through the lease for one final call. So a request makes at most three calls, a token made
//!   by this request's own fetch is never replaced again, and each dead token is fetched past
//!   once across the fleet. In stable mode a normal-mode call comes first; force refresh only if
//!   WeChat hands back the very token it rejected, at most once per 30 s and 10 times per UTC day
//!   across the fleet (WeChat allows 20 a day).

mod cache;
mod error;
mod lease;
mod refresh;

pub use error::{GiveUp, TokenError};
pub use refresh::RefreshReport;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache::MemoryCache;

use crate::clock::{self, Instant};
use crate::config::TokenMode;
use crate::ids;
use crate::scope::{self, Waiting};
use crate::secret::Secret;
use crate::store::{Store, StoreError, StoredToken};
use crate::wechat::{FetchedToken, WeChatClient, WxError};

#[derive(Debug, Clone)]
pub struct KeeperOptions {
    /// A token with less than this left counts as expired (requests in flight need some margin).
    pub min_remaining: Duration,
    /// How long a token read from the store is trusted in memory before it is read again, so a
    /// token the refresher replaced is picked up well within WeChat's 5-minute overlap.
    pub memory_max_age: Duration,
    /// How long a fetch lease lasts without renewal. The holder renews it every third of this
    /// while its fetch runs, however long that takes; a holder that died stops renewing, and
    /// waiters take over once it runs out.
    pub lease_ttl: Duration,
    /// How long a caller waits for a token (for another instance's fetch, or its own): longer
    /// than the longest fetch (the force path: two WeChat calls with their retry budgets, and
    /// the store writes). A request's deadline cuts it shorter.
    pub wait_budget: Duration,
    pub poll_interval: Duration,
    /// The fleet-wide minimum gap between two force refreshes (WeChat's own rule is 30 s).
    pub force_min_interval: Duration,
    /// Force refreshes allowed per UTC day across the fleet (WeChat allows 20).
    pub force_daily_cap: u32,
    /// `TOKEN_MAX_AGE_SECS` (legacy mode): the refresher renews a shared token that would be
    /// older than this at its next run, and requests never use one older than this plus
    /// `refresh_interval` (they fetch instead, through the lease).
    pub max_age: Option<Duration>,
    /// The refresher's period (`REFRESH_INTERVAL_SECS`).
    pub refresh_interval: Duration,
}

impl KeeperOptions {
    /// The defaults, with the margin suited to the mode: WeChat renews a stable token only in its
    /// last 300 s (and the old one stays valid to its end), so a 4-minute refresher keeps it above
    /// 60 s; a 90 s margin would send requests to fetch. Legacy tokens are replaced by the
    /// refresher well ahead, so the wider margin costs nothing there.
    pub fn for_mode(mode: TokenMode) -> Self {
        let min_remaining = match mode {
            TokenMode::Stable => Duration::from_secs(30),
            TokenMode::Legacy => Duration::from_secs(90),
        };
        KeeperOptions {
            min_remaining,
            ..Self::default()
        }
    }
}

impl Default for KeeperOptions {
    fn default() -> Self {
        KeeperOptions {
            min_remaining: Duration::from_secs(90),
            memory_max_age: Duration::from_secs(120),
            lease_ttl: Duration::from_secs(3),
            wait_budget: Duration::from_secs(14),
            poll_interval: Duration::from_millis(50),
            force_min_interval: Duration::from_secs(30),
            force_daily_cap: 10,
            max_age: None,
            refresh_interval: crate::config::DEFAULT_REFRESH_INTERVAL,
        }
    }
}

/// Where a token handed to a caller came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Read from memory or the shared item: nobody has checked it with WeChat.
    Shared,
    /// Issued by WeChat to a fetch this caller made holding the lease.
    Fetched,
}

struct Got {
    token: Secret,
    origin: Origin,
}

impl Got {
    fn shared(token: Secret) -> Self {
        Got {
            token,
            origin: Origin::Shared,
        }
    }
}

pub struct TokenKeeper {
    wechat: WeChatClient,
    store: Arc<dyn Store>,
    mode: TokenMode,
    key: String,
    opts: KeeperOptions,
    cache: MemoryCache,
    /// Single flight inside this instance: concurrent misses queue here, not at DynamoDB.
    flight: tokio::sync::Mutex<()>,
    /// When each kind of give-up was last logged (at most one line a minute each).
    give_up_logged: Mutex<HashMap<&'static str, Instant>>,
}

impl TokenKeeper {
    pub fn new(wechat: WeChatClient, store: Arc<dyn Store>, mode: TokenMode) -> Self {
        let key = format!("{}#{}", wechat.appid(), mode.as_str());
        TokenKeeper {
            wechat,
            store,
            mode,
            key,
            opts: KeeperOptions::for_mode(mode),
            cache: MemoryCache::default(),
            flight: tokio::sync::Mutex::new(()),
            give_up_logged: Mutex::new(HashMap::new()),
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

    /// Calls `f` with a valid token. If WeChat rejects that token, replaces it and calls again;
    /// if the replacement came unchecked from the shared item and is rejected as well, replaces
    /// that one through the lease and makes one final call. At most three calls.
    pub async fn with_token<T, F, Fut>(&self, f: F) -> Result<T, TokenError>
    where
        F: Fn(Secret) -> Fut,
        Fut: Future<Output = Result<T, WxError>>,
    {
        let mut token = self.token().await?;
        let mut replaced = 0;
        loop {
            match f(token.clone()).await {
                Err(e) if e.is_token_rejected() && replaced < 2 => {
                    tracing::warn!(
                        errcode = e.errcode(),
                        mode = self.mode.as_str(),
                        replaced,
                        "access token rejected; replacing it and calling again"
                    );
                    let got = self.replace_rejected(&token).await?;
                    replaced += 1;
                    token = got.token;
                    if got.origin == Origin::Fetched {
                        // WeChat issued it to us just now: a rejection of it ends here.
                        replaced = 2;
                    }
                }
                other => return Ok(other?),
            }
        }
    }

    /// A token valid for at least `min_remaining`.
    pub async fn token(&self) -> Result<Secret, TokenError> {
        if let Some(t) = self.memory() {
            return Ok(t);
        }
        // Beyond memory: how long a request waited for its token is a metric.
        let started = clock::now();
        let got = match self.shared_except(None).await? {
            Some(t) => t,
            None => self.fetch_once(None).await?.token,
        };
        crate::metrics::token_wait(clock::now() - started);
        Ok(got)
    }

    fn memory(&self) -> Option<Secret> {
        self.cache.get(self.opts.memory_max_age, |e| self.usable(e))
    }

    /// When a stored token stops being served: WeChat's end, or earlier under `max_age`.
    fn expiry(&self, t: &StoredToken) -> u64 {
        match self.opts.max_age {
            Some(age) => t
                .expires_at
                .min(t.fetched_at_ms / 1000 + age.as_secs() + self.opts.refresh_interval.as_secs()),
            None => t.expires_at,
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
        if !self.usable(self.expiry(&t)) || not == Some(&t.token) {
            return Ok(None);
        }
        self.cache.remember(&t.token, self.expiry(&t));
        Ok(Some(t.token))
    }

    /// Gets a new token with at most one fetch across the fleet. `rejected` is the token WeChat
    /// just refused, if that is why we are here (a shared token equal to it does not count).
    ///
    /// The whole wait (queueing behind this instance's other callers included) is bounded by
    /// `wait_budget` and the request's deadline; only a fetch this caller started itself may run
    /// past the budget (the deadline still cuts it, and its lease is then released).
    async fn fetch_once(&self, rejected: Option<&Secret>) -> Result<Got, TokenError> {
        scope::waiting_on(Waiting::WeChat, self.fetch_once_inner(rejected)).await
    }

    async fn fetch_once_inner(&self, rejected: Option<&Secret>) -> Result<Got, TokenError> {
        let deadline = clock::now() + self.opts.wait_budget;
        let timeout = || TokenError::GaveUp(GiveUp::Timeout(self.opts.wait_budget));
        let _flight = tokio::time::timeout_at(deadline, self.flight.lock())
            .await
            .map_err(|_| timeout())?;
        // Another task of this instance may have finished the work while we queued.
        if let Some(t) = self.memory().filter(|t| Some(t) != rejected) {
            return Ok(Got::shared(t));
        }
        let mut next_lease_try = clock::now();
        loop {
            if let Some(t) = self.shared_except(rejected).await? {
                return Ok(Got::shared(t));
            }
            if clock::now() >= next_lease_try {
                if let Some(got) = self.under_lease(self.fetch_holding_lease(rejected)).await? {
                    return got;
                }
                // Another caller holds the fetch lease: this one waits for its token.
                crate::metrics::lease_wait();
                next_lease_try = clock::now() + self.opts.poll_interval * 5;
            }
            let now = clock::now();
            if now >= deadline {
                return Err(timeout());
            }
            clock::sleep(self.opts.poll_interval.min(deadline - now)).await;
        }
    }

    /// Runs `work` holding the fleet-wide fetch lease (see [`lease::hold`]); `None` if another
    /// caller holds it.
    async fn under_lease<T>(&self, work: impl Future<Output = T>) -> Result<Option<T>, StoreError> {
        lease::hold(
            &self.store,
            format!("fetch#{}", self.key),
            self.opts.lease_ttl,
            work,
        )
        .await
    }

    /// With the fetch lease: look once more, then fetch. The previous holder may have written a
    /// token and released the lease between our last read and our lease write; fetching then
    /// would be a second fetch (and in legacy mode would cut the token everyone just picked up).
    async fn fetch_holding_lease(&self, rejected: Option<&Secret>) -> Result<Got, TokenError> {
        if let Some(t) = self.shared_except(rejected).await? {
            return Ok(Got::shared(t));
        }
        if let (TokenMode::Legacy, Some(failed)) = (self.mode, rejected) {
            // Compare-and-drop, once per rejection (not once per rejected request): a token
            // someone else already replaced stays, and if our fetch fails, nobody picks up the
            // dead one meanwhile. A stable token is not dropped: WeChat may still call it current.
            self.store.delete_token_if(&self.key, failed).await?;
        }
        let (shared, ours) = self.fetch_and_store(rejected).await?;
        Ok(Got {
            token: shared.token,
            origin: if ours {
                Origin::Fetched
            } else {
                Origin::Shared
            },
        })
    }

    /// Asks WeChat (we hold the lease) and writes the result to the shared item. Returns the
    /// shared token afterwards, and whether it is the one we fetched (else a newer one another
    /// fetch wrote meanwhile).
    async fn fetch_and_store(
        &self,
        rejected: Option<&Secret>,
    ) -> Result<(StoredToken, bool), TokenError> {
        // Stamp the token with the time the fetch started, not the time it returned: a later
        // lease holder started later, so a slow fetch that outlived its lease can never replace
        // what that holder wrote (put_token keeps the later `fetched_at_ms`). It is also the
        // conservative base for the expiry: WeChat issued the token no earlier than this.
        let started_ms = crate::now_millis();
        let fetched = match self.mode {
            TokenMode::Legacy => self
                .wechat
                .legacy_token()
                .await
                .map_err(|e| self.fetch_error(e))?,
            TokenMode::Stable => {
                let t = self
                    .wechat
                    .stable_token(false)
                    .await
                    .map_err(|e| self.fetch_error(e))?;
                if Some(&t.token) == rejected {
                    self.force_refresh().await?
                } else {
                    t
                }
            }
        };
        let ours = StoredToken {
            token: fetched.token.clone(),
            expires_at: started_ms / 1000 + fetched.expires_in,
            fetched_at_ms: started_ms,
        };
        self.store.put_token(&self.key, &ours).await?;
        crate::metrics::token_fetched(self.mode.as_str());
        tracing::info!(
            mode = self.mode.as_str(),
            expires_in = fetched.expires_in,
            "access token fetched"
        );
        // The write is conditional: read back which token the fleet now shares, so this instance
        // does not go on with one the others never see.
        let shared = match self.store.get_token(&self.key).await? {
            Some(t)
                if t.token != ours.token
                    && self.usable(self.expiry(&t))
                    && Some(&t.token) != rejected =>
            {
                tracing::warn!(
                    mode = self.mode.as_str(),
                    "a newer access token was stored while fetching; using that one"
                );
                (t, false)
            }
            _ => (ours, true),
        };
        self.cache.remember(&shared.0.token, self.expiry(&shared.0));
        Ok(shared)
    }

    /// Stable mode's last resort: WeChat handed back the very token it rejected. At most one
    /// force refresh per `force_min_interval` across the fleet (the gap lease is taken before the
    /// call and never released, so it runs out after the gap), and at most `force_daily_cap` per
    /// UTC day (a persistent 40001 must not burn WeChat's 20 a day in ten minutes). Never resent
    /// after an ambiguous failure (see [`WeChatClient::stable_token`]).
    async fn force_refresh(&self) -> Result<FetchedToken, TokenError> {
        let appid = self.wechat.appid();
        let gap = self.opts.force_min_interval.as_millis() as u64;
        if !self
            .store
            .try_lease(
                &format!("force#{appid}"),
                &ids::new_request_id(),
                crate::now_millis(),
                gap,
            )
            .await?
        {
            return Err(self.give_up(GiveUp::ForceTooSoon));
        }
        let day = clock::utc_day();
        if !self
            .store
            .take_quota(
                &format!("force#{appid}#{day}"),
                self.opts.force_daily_cap,
                (day + 2) * 86_400,
            )
            .await?
        {
            return Err(self.give_up(GiveUp::ForceCapReached));
        }
        tracing::warn!(
            mode = self.mode.as_str(),
            "stable token rejected but still current: force refresh"
        );
        crate::metrics::force_refreshed();
        self.wechat
            .stable_token(true)
            .await
            .map_err(|e| self.fetch_error(e))
    }

    /// The keeper's own give-up, logged at most once a minute per kind (a persistent rejection
    /// would otherwise log it on every request).
    fn give_up(&self, why: GiveUp) -> TokenError {
        let kind = match why {
            GiveUp::Timeout(_) => "timeout",
            GiveUp::ForceTooSoon => "force_too_soon",
            GiveUp::ForceCapReached => "force_cap_reached",
        };
        let now = clock::now();
        let mut logged = self
            .give_up_logged
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let due = logged
            .get(kind)
            .is_none_or(|last| now - *last >= Duration::from_secs(60));
        if due {
            logged.insert(kind, now);
            tracing::error!(
                mode = self.mode.as_str(),
                reason = kind,
                force_daily_cap = self.opts.force_daily_cap,
                "no access token: {why} (logged at most once a minute)"
            );
        }
        TokenError::GaveUp(why)
    }

    fn fetch_error(&self, e: WxError) -> TokenError {
        log_fetch_error(self.mode, &e);
        crate::metrics::token_fetch_failed();
        TokenError::Fetch(e)
    }

    /// Handles a rejection of `failed`: a newer shared token if there is one, else a fresh fetch
    /// (by whoever holds the lease, which drops `failed` from the table if it is still there).
    async fn replace_rejected(&self, failed: &Secret) -> Result<Got, TokenError> {
        crate::metrics::token_rejected();
        self.cache.forget(failed);
        self.fetch_once(Some(failed)).await
    }
}

fn log_fetch_error(mode: TokenMode, e: &WxError) {
    match e.errcode() {
        Some(45009 | 45011) => {
            tracing::error!(mode = mode.as_str(), errcode = e.errcode(), error = %e, "access token quota exhausted")
        }
        Some(40013 | 40125 | 40164 | 40243 | 41004 | 40001) => {
            tracing::error!(mode = mode.as_str(), errcode = e.errcode(), error = %e, "access token fetch refused: check the app id and AppSecret (WECHAT_APPID and WECHAT_SECRET, or the secret of WECHAT_SECRET_ARN) and the IP allow-list")
        }
        _ => tracing::error!(mode = mode.as_str(), error = %e, "access token fetch failed"),
    }
}

/// For the team's other systems: the current shared access token, without the app secret and
/// without ever fetching (the refresher keeps it fresh). Needs only `dynamodb:GetItem` on the table.
///
/// `None` when there is no token for that app and mode, or the stored one has expired (DynamoDB's
/// TTL deletes items late, so the expiry is checked here).
///
/// ```
/// use wxmp::config::TokenMode;
/// use wxmp::secret::Secret;
/// use wxmp::store::{MemoryStore, StoredToken, TokenStore};
/// use wxmp::token::read_shared_token;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), wxmp::store::StoreError> {
/// let store = MemoryStore::new();
/// let now = wxmp::now_secs();
/// let token = StoredToken { token: Secret::new("ACCESS"), expires_at: now + 7200, fetched_at_ms: now * 1000 };
/// // The keeper stores it under `<appid>#<mode>`.
/// store.put_token("wx123#stable", &token).await?;
///
/// let shared = read_shared_token(&store, "wx123", TokenMode::Stable).await?;
/// assert_eq!(shared.map(|t| t.token.expose().to_string()), Some("ACCESS".into()));
/// // Legacy and stable tokens are kept apart.
/// assert_eq!(read_shared_token(&store, "wx123", TokenMode::Legacy).await?, None);
/// # Ok(())
/// # }
/// ```
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, TokenStore};

    fn stored(token: &str, expires_at: u64) -> StoredToken {
        StoredToken {
            token: Secret::new(token),
            expires_at,
            fetched_at_ms: expires_at.saturating_sub(7200) * 1000,
        }
    }

    #[test]
    fn default_waits_outlast_the_longest_fetch_and_a_dead_holders_lease() {
        let o = KeeperOptions::default();
        let retry = crate::retry::RetryPolicy::default();
        // The force path: a normal call and a force call, each with its retry budget, plus the
        // store writes; waiters must not give up on a holder that is still working.
        assert!(o.wait_budget >= retry.budget * 2 + Duration::from_secs(1));
        // A waiter that arrived with a holder that then died: the lease runs out, and the next
        // lease try (every 5 polls) comes while the waiter still waits.
        assert!(o.lease_ttl + o.poll_interval * 5 < o.wait_budget);
        assert!(o.force_min_interval >= Duration::from_secs(30));
        assert!(o.force_daily_cap < 20, "below WeChat's own daily limit");
    }

    #[tokio::test]
    async fn read_shared_token_reads_the_keepers_item_and_checks_expiry() {
        let store = MemoryStore::new();
        let now = crate::now_secs();
        assert_eq!(
            read_shared_token(&store, "wx1", TokenMode::Stable)
                .await
                .unwrap(),
            None
        );

        store
            .put_token("wx1#legacy", &stored("L", now + 100))
            .await
            .unwrap();
        let got = read_shared_token(&store, "wx1", TokenMode::Legacy)
            .await
            .unwrap();
        assert_eq!(got, Some(stored("L", now + 100)));
        assert_eq!(
            read_shared_token(&store, "wx2", TokenMode::Legacy)
                .await
                .unwrap(),
            None,
            "another app's token"
        );

        // Expired but not yet deleted by the TTL sweeper: as good as gone.
        store
            .put_token("wx1#stable", &stored("S", now))
            .await
            .unwrap();
        assert_eq!(
            read_shared_token(&store, "wx1", TokenMode::Stable)
                .await
                .unwrap(),
            None
        );
    }
}
