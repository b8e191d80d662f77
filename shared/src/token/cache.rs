//! This instance's copy of the shared token: no I/O on the warm path. Trusted for
//! `memory_max_age` (so a token the refresher replaced is picked up well within WeChat's 5-minute
//! overlap) and while it has more than the margin left.

use std::sync::Mutex;
use std::time::Duration;

use crate::secret::Secret;

#[derive(Clone)]
struct Cached {
    token: Secret,
    expires_at: u64,
    /// Epoch milliseconds when it was read (wall time: a frozen instance's memory ages too).
    loaded_ms: u64,
}

/// The token in memory, behind a lock never held across an `.await`.
#[derive(Default)]
pub(super) struct MemoryCache {
    inner: Mutex<Option<Cached>>,
}

impl MemoryCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token, if it was read less than `max_age` ago and `usable(expires_at)`.
    pub(super) fn get(&self, max_age: Duration, usable: impl Fn(u64) -> bool) -> Option<Secret> {
        self.lock()
            .as_ref()
            .filter(|c| {
                crate::now_millis().saturating_sub(c.loaded_ms) < max_age.as_millis() as u64
                    && usable(c.expires_at)
            })
            .map(|c| c.token.clone())
    }

    pub(super) fn remember(&self, token: &Secret, expires_at: u64) {
        *self.lock() = Some(Cached {
            token: token.clone(),
            expires_at,
            loaded_ms: crate::now_millis(),
        });
    }

    /// Forgets the token if it is `token`.
    pub(super) fn forget(&self, token: &Secret) {
        let mut cache = self.lock();
        if cache.as_ref().is_some_and(|c| &c.token == token) {
            *cache = None;
        }
    }

    /// The expiry of the token in memory (0 if none).
    pub(super) fn expiry(&self) -> u64 {
        self.lock().as_ref().map_or(0, |c| c.expires_at)
    }
}
