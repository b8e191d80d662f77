//! The WeChat server API client: login (jscode2session), access tokens (legacy and stable),
//! unlimited mini-program codes and phone numbers.
//!
//! - [`transport`]: one exchange, retried with backoff while the failure is transient and the
//!   endpoint says it may be resent; errcodes come back typed as [`WxError::Api`].
//! - one module per endpoint ([`login`], [`token`], [`code`], [`phone`]), each with its typed
//!   answer and its resend rule.
//!
//! URLs carry the secret or the access token in their query, so no URL is ever put in an error
//! or a log line.

mod code;
mod error;
mod login;
mod phone;
mod security;
mod subscribe;
mod token;
mod transport;

#[cfg(feature = "bench")]
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use code::Image;
pub use error::{TOKEN_REJECTED, WxError};
pub use login::Code2Session;
pub use phone::PhoneInfo;
pub use security::LinkApi;
pub use token::FetchedToken;

use crate::config::Credentials;
use crate::retry::RetryPolicy;

/// (Only with the `bench` feature.) Counts WeChat exchanges and the time spent waiting on them (benchmarks subtract it to get the
/// time a request spends in our own code).
#[cfg(feature = "bench")]
#[derive(Debug, Default)]
pub struct CallMeter {
    calls: AtomicU64,
    nanos: AtomicU64,
}

#[cfg(feature = "bench")]
impl CallMeter {
    pub fn record(&self, took: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }
    /// (exchanges so far, total time waiting on them).
    pub fn snapshot(&self) -> (u64, Duration) {
        (
            self.calls.load(Ordering::Relaxed),
            Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
        )
    }
}

#[derive(Clone)]
pub struct WeChatClient {
    http: std::sync::Arc<crate::net::conn::Connections>,
    base: String,
    appid: String,
    /// Replaced when the secret is rotated (see [`crate::appsecret`]).
    secret: std::sync::Arc<std::sync::RwLock<String>>,
    /// Where a rotated secret is read from (Lambda with `WECHAT_SECRET_ARN`); shared by clones,
    /// so one set on the app's client applies to the keeper's too.
    source: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<crate::appsecret::SecretSource>>>,
    retry: RetryPolicy,
    #[cfg(feature = "bench")]
    meter: std::sync::Arc<CallMeter>,
}

impl WeChatClient {
    /// Builds the client once per cold start: kept connections (a 2 s connect timeout; each
    /// call bounded by its retry budget, at most 5 s), rustls.
    pub fn new(base: &str, creds: Credentials) -> Self {
        let http = std::sync::Arc::new(crate::net::conn::Connections::new(
            crate::net::tls_config(),
            Duration::from_secs(2),
        ));
        WeChatClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            appid: creds.appid,
            secret: std::sync::Arc::new(std::sync::RwLock::new(creds.secret)),
            source: Default::default(),
            retry: RetryPolicy::default(),
            #[cfg(feature = "bench")]
            meter: Default::default(),
        }
    }

    /// Opens a connection to WeChat's API ahead of the first call (a cold start's).
    pub fn open_ahead(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (http, base) = (self.http.clone(), reqwest::Url::parse(&self.base).ok());
        async move {
            if let Some(base) = base {
                http.open_ahead(&base, 1).await
            }
        }
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Exchanges made by this client and its clones, and the time spent on them.
    #[cfg(feature = "bench")]
    pub fn meter(&self) -> &CallMeter {
        &self.meter
    }

    pub fn appid(&self) -> &str {
        &self.appid
    }

    /// Reads a rotated AppSecret from `source` when WeChat refuses the current one (for this
    /// client and every clone of it; the first source set stays).
    pub fn set_secret_source(&self, source: std::sync::Arc<crate::appsecret::SecretSource>) {
        let _ = self.source.set(source);
    }

    fn secret(&self) -> String {
        self.secret.read().expect("not poisoned").clone()
    }

    /// Runs `call` with the current AppSecret. If WeChat refuses the secret (40125, or 40001
    /// where `also_40001`) and a re-read of the secret (at most once a minute) finds another
    /// one, that one is kept and `call` runs once more with it.
    async fn with_secret<T, F, Fut>(&self, also_40001: bool, call: F) -> Result<T, WxError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, WxError>>,
    {
        let used = self.secret();
        let result = call(used.clone()).await;
        let refused = match &result {
            Err(e) => e.errcode() == Some(40125) || (also_40001 && e.errcode() == Some(40001)),
            Ok(_) => false,
        };
        let Some(source) = self.source.get().filter(|_| refused) else {
            return result;
        };
        // Another request may have picked up the rotated secret meanwhile (re-reads are one at a
        // time, and at most one a minute): use it rather than read again.
        if self.secret() == used
            && let Some(fresh) = source.reread().await
        {
            if fresh.credentials.appid != self.appid {
                tracing::warn!(appid = %fresh.credentials.appid, "the secret now names another app id; not used");
                return result;
            }
            *self.secret.write().expect("not poisoned") = fresh.credentials.secret;
        }
        let current = self.secret();
        if current == used {
            return result;
        }
        tracing::info!("app secret rotated; trying again with the new one");
        call(current).await
    }
}
