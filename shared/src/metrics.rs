//! CloudWatch metrics in the Embedded Metric Format (EMF): structured log lines that CloudWatch
//! turns into metrics, no API call and no added latency. The `metrics` facade records them; its
//! EMF backend (`metrics_cloudwatch_embedded`) writes them, flushed once per invocation (by the
//! request layer, and by the event functions after each event).
//!
//! Namespace `METRICS_NAMESPACE` (default `WeChatMiniProgram`); dimensions few and never secret or
//! per user: `function` (login, qrcode, push, notify, token-refresher, local-server) and the
//! metric's own (route, status class, outcome, cause, api, errcode). `METRICS_FILE` (local runs)
//! appends the lines to a file instead of stdout; `METRICS_DISABLED=1` turns them off (the
//! benchmark's "off" run).
//!
//! What is counted:
//! - `Requests` {route, status: 2xx|4xx|5xx} and `Latency` (ms) {route}: every HTTP request;
//! - `Logins` {outcome: ok or the error code}; `Codes` {outcome: made|cached|failed, cause};
//!   `CodesOk` and `CodesFailed` (the service's failures: WeChat, token, store) for the success
//!   rate and its alarm;
//! - `WeChatCalls` {api, errcode: 0, WeChat's errcode, or transport};
//! - `TokenFetches` {mode}, `TokenFetchFailures`, `TokenRejections`, `ForceRefreshes`,
//!   `LeaseWaits`, `TokenWaitMs` (ms: a request's wait for a token not in memory);
//! - `RefresherRuns` {outcome: ok|failed} and `TokenRemainingSecs` (s);
//! - `ColdStarts`.

use std::io::Write;
use std::sync::OnceLock;

use metrics::Unit;
use metrics_cloudwatch_embedded::Collector;

pub const DEFAULT_NAMESPACE: &str = "WeChatMiniProgram";

static COLLECTOR: OnceLock<Option<&'static Collector>> = OnceLock::new();

/// Installs the EMF recorder for `function` (once per process) and counts the cold start.
pub fn init(function: &'static str) {
    COLLECTOR.get_or_init(|| {
        if std::env::var("METRICS_DISABLED").is_ok_and(|v| v == "1") {
            return None;
        }
        let namespace = std::env::var("METRICS_NAMESPACE")
            .ok()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        match metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace(namespace)
            .with_dimension("function", function)
            .init()
        {
            Ok(c) => {
                metrics::describe_histogram!("Latency", Unit::Milliseconds, "handler time");
                metrics::describe_histogram!(
                    "TokenWaitMs",
                    Unit::Milliseconds,
                    "a request's wait for a token not in memory"
                );
                metrics::describe_gauge!(
                    "TokenRemainingSecs",
                    Unit::Seconds,
                    "the shared token's remaining life after a refresh"
                );
                metrics::counter!("ColdStarts").increment(1);
                Some(c)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics are off: the recorder could not be installed");
                None
            }
        }
    });
}

/// Writes what was recorded since the last flush, one EMF line per dimension set.
pub fn flush() {
    write(false)
}

/// [`flush`], the lines written with the thread's next log line (in one write) unless they go
/// to `METRICS_FILE`; `crate::logging::write_held` writes them if no line comes.
pub fn flush_with_next_log_line() {
    write(true)
}

fn write(with_next_line: bool) {
    let Some(Some(c)) = COLLECTOR.get() else {
        return;
    };
    static FILE: OnceLock<Option<std::ffi::OsString>> = OnceLock::new();
    // Every line of the flush in one buffer, written at once: one write(2) per invocation, not
    // one per dimension set (stdout writes each line on its own).
    let mut lines = Vec::with_capacity(1024);
    let written = c.flush(&mut lines).and_then(|_| {
        if lines.is_empty() {
            return Ok(());
        }
        match FILE.get_or_init(|| std::env::var_os("METRICS_FILE")) {
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(&lines)),
            None if with_next_line => {
                crate::logging::hold_for_next_line(lines);
                Ok(())
            }
            None => {
                let mut out = std::io::stdout().lock();
                out.write_all(&lines).and_then(|_| out.flush())
            }
        }
    });
    if let Err(e) = written {
        tracing::warn!(error = %e, "metrics could not be written");
    }
}

/// The request's route (the matched path pattern, or `other`) and its counters.
pub fn request(route: &str, status: u16, code: Option<&'static str>, cached: bool, ms: f64) {
    let route = route.to_string();
    let class = match status {
        200..=299 => "2xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!("Requests", "route" => route.clone(), "status" => class).increment(1);
    metrics::histogram!("Latency", "route" => route.clone()).record(ms);
    match route.as_str() {
        "/login" => {
            metrics::counter!("Logins", "outcome" => code.unwrap_or("ok")).increment(1);
        }
        "/qrcode" => {
            let (outcome, cause) = match code {
                None if cached => ("cached", "none"),
                None => ("made", "none"),
                Some("invalid_request" | "payload_too_large") => ("failed", "validation"),
                Some("wechat_error" | "rate_limited") => ("failed", "wechat"),
                Some("wechat_unavailable") => ("failed", "wechat_unavailable"),
                Some("store_unavailable") => ("failed", "store"),
                Some("unauthenticated") => ("failed", "unauthenticated"),
                Some(_) => ("failed", "other"),
            };
            metrics::counter!("Codes", "outcome" => outcome, "cause" => cause).increment(1);
            // The success rate's two terms, by function only (alarms cannot search): a code
            // made or served, or one the server failed to make (the client's own mistakes,
            // validation and sessions, are not failures of the service).
            match (outcome, cause) {
                ("failed", "validation" | "unauthenticated") => {}
                ("failed", _) => metrics::counter!("CodesFailed").increment(1),
                _ => metrics::counter!("CodesOk").increment(1),
            }
        }
        _ => {}
    }
}

/// One WeChat exchange: `errcode` 0 for success.
pub fn wechat_call(api: &'static str, errcode: Option<i64>) {
    let errcode = match errcode {
        Some(c) => c.to_string(),
        None => "transport".to_string(),
    };
    metrics::counter!("WeChatCalls", "api" => api, "errcode" => errcode).increment(1);
}

pub fn token_fetched(mode: &'static str) {
    metrics::counter!("TokenFetches", "mode" => mode).increment(1);
}

/// A request found another caller holding the fleet's fetch lease (it waits for that token).
pub fn lease_wait() {
    metrics::counter!("LeaseWaits").increment(1);
}

/// How long a request waited for a token it did not have in memory.
pub fn token_wait(waited: std::time::Duration) {
    metrics::histogram!("TokenWaitMs").record(waited.as_secs_f64() * 1000.0);
}

pub fn token_fetch_failed() {
    metrics::counter!("TokenFetchFailures").increment(1);
}

pub fn token_rejected() {
    metrics::counter!("TokenRejections").increment(1);
}

pub fn force_refreshed() {
    metrics::counter!("ForceRefreshes").increment(1);
}

pub fn refresher_run(ok: bool, remaining_secs: Option<u64>) {
    metrics::counter!("RefresherRuns", "outcome" => if ok { "ok" } else { "failed" }).increment(1);
    if let Some(s) = remaining_secs {
        metrics::gauge!("TokenRemainingSecs").set(s as f64);
    }
}
