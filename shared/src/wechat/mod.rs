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
mod token;
mod transport;

#[cfg(feature = "bench")]
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use code::Image;
pub use error::{TOKEN_REJECTED, WxError};
pub use login::Code2Session;
pub use phone::PhoneInfo;
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
    http: reqwest::Client,
    base: String,
    creds: Credentials,
    retry: RetryPolicy,
    #[cfg(feature = "bench")]
    meter: std::sync::Arc<CallMeter>,
}

impl WeChatClient {
    /// Builds the client once per cold start: connection pool, timeouts, rustls.
    pub fn new(base: &str, creds: Credentials) -> Self {
        let http = crate::net::client(
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(5))
                .pool_idle_timeout(Duration::from_secs(50)),
        );
        WeChatClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            creds,
            retry: RetryPolicy::default(),
            #[cfg(feature = "bench")]
            meter: Default::default(),
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
        &self.creds.appid
    }
}
