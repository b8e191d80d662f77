//! The scheduled refresh (the token-refresher function, the local server's timer): keeps the
//! shared token ahead of its end, through the same lease as the request path.

use std::time::Duration;

use super::{TokenError, TokenKeeper};
use crate::config::TokenMode;
use crate::store::StoredToken;

/// What one scheduled refresh did, for its log line (never the token).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RefreshReport {
    pub mode: &'static str,
    pub fetched: bool,
    pub remaining_secs: u64,
}

impl TokenKeeper {
    /// The scheduled refresh (EventBridge every `interval`): makes sure the shared token outlives
    /// two more runs. Stable mode simply asks each run (normal mode is idempotent and cheap).
    pub async fn refresh_scheduled(&self, interval: Duration) -> Result<RefreshReport, TokenError> {
        let horizon = 2 * interval.as_secs() + self.opts.min_remaining.as_secs();
        // TOKEN_MAX_AGE_SECS: renewed when it would be older than that at the next run.
        let too_old = |t: &StoredToken| {
            self.opts.max_age.is_some_and(|age| {
                let age_at_next_run = crate::now_millis().saturating_sub(t.fetched_at_ms)
                    + interval.as_millis() as u64;
                age_at_next_run > age.as_millis() as u64
            })
        };
        let needs = |t: &Option<StoredToken>| match (t, self.mode) {
            (_, TokenMode::Stable) | (None, _) => true,
            (Some(t), TokenMode::Legacy) => {
                t.expires_at <= crate::now_secs() + horizon || too_old(t)
            }
        };
        let current = self.store.get_token(&self.key).await?;
        let (fetched, expires_at) = if !needs(&current) {
            (false, current.map_or(0, |t| t.expires_at))
        } else {
            let work = async {
                // A request may have fetched between our read and our lease: in legacy mode a
                // second fetch would only cut the token everyone just picked up.
                let again = self.store.get_token(&self.key).await?;
                if !needs(&again) {
                    return Ok((false, again.map_or(0, |t| t.expires_at)));
                }
                let (t, ours) = self.fetch_and_store(None).await?;
                Ok::<_, TokenError>((ours, t.expires_at))
            };
            match self.under_lease(work).await? {
                Some(done) => done?,
                // A request is fetching right now; its result is as good as ours.
                None => (false, self.token().await.map(|_| self.cache.expiry())?),
            }
        };
        Ok(RefreshReport {
            mode: self.mode.as_str(),
            fetched,
            remaining_secs: expires_at.saturating_sub(crate::now_secs()),
        })
    }
}
