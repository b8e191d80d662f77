//! The fleet-wide fetch lease: a conditional write in the table gives one caller at a time the
//! right to ask WeChat. The holder renews it while its work runs (however long WeChat takes), and
//! gives it back when done, or from `drop` when the request is cancelled (the Lambda deadline).
//! Used by both the request path and the scheduled refresh.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::clock;
use crate::ids;
use crate::store::{Store, StoreError};

/// A lease this caller holds. Dropped without [`Lease::release`] (the request was cancelled,
/// say by the Lambda deadline), it is released in the background, so the next caller need not
/// wait for it to run out.
pub(super) struct Lease {
    store: Arc<dyn Store>,
    name: String,
    holder: String,
    released: bool,
}

impl Lease {
    async fn release(mut self) {
        let released = self.store.release_lease(&self.name, &self.holder).await;
        // Only now: a release cut off midway is made again from `drop`.
        self.released = true;
        if let Err(e) = released {
            tracing::warn!(error = %e, "could not release the token lease");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (store, name, holder) = (
                self.store.clone(),
                std::mem::take(&mut self.name),
                std::mem::take(&mut self.holder),
            );
            rt.spawn(async move {
                let _ = store.release_lease(&name, &holder).await;
            });
        }
    }
}

/// Runs `work` holding the lease `name`, renewed every third of `ttl` while `work` runs, if the
/// lease can be taken now; `None` if another caller holds it.
///
/// Each take uses a fresh holder id, so a stale release by an earlier take of this same instance
/// can never end a newer one.
pub(super) async fn hold<T>(
    store: &Arc<dyn Store>,
    name: String,
    ttl: Duration,
    work: impl Future<Output = T>,
) -> Result<Option<T>, StoreError> {
    let holder = ids::new_request_id();
    let ttl_ms = ttl.as_millis() as u64;
    if !store
        .try_lease(&name, &holder, crate::now_millis(), ttl_ms)
        .await?
    {
        return Ok(None);
    }
    let lease = Lease {
        store: store.clone(),
        name,
        holder,
        released: false,
    };
    let renew = async {
        loop {
            clock::sleep(ttl / 3).await;
            let renewed = store
                .renew_lease(&lease.name, &lease.holder, crate::now_millis(), ttl_ms)
                .await;
            match renewed {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        lease = lease.name,
                        "the lease ran out while its work went on (a stalled instance?)"
                    );
                    std::future::pending::<()>().await;
                }
                Err(e) => tracing::warn!(error = %e, "could not renew the lease"),
            }
        }
    };
    let out = tokio::select! {
        biased;
        out = work => out,
        () = renew => unreachable!("renewing never ends"),
    };
    // On failure too: the next caller may try at once instead of waiting it out.
    lease.release().await;
    Ok(Some(out))
}
