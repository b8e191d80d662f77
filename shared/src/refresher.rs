//! One run of the scheduled token refresh, shared by the token-refresher Lambda and the local
//! server's timer. Logs one structured line per run (mode, fetched, remaining lifetime).

use std::time::Duration;

use crate::app::App;
use crate::token::TokenError;

/// EventBridge's schedule in template.yaml, and the local server's default interval.
pub const DEFAULT_INTERVAL: Duration = crate::config::DEFAULT_REFRESH_INTERVAL;

pub async fn run_with_interval(
    app: &App,
    interval: Duration,
) -> Result<serde_json::Value, TokenError> {
    match app.tokens.refresh_scheduled(interval).await {
        Ok(r) => {
            crate::metrics::refresher_run(true, Some(r.remaining_secs));
            tracing::info!(
                mode = r.mode,
                fetched = r.fetched,
                remaining_secs = r.remaining_secs,
                "token refresh"
            );
            Ok(serde_json::to_value(r).expect("report serialises"))
        }
        Err(e) => {
            crate::metrics::refresher_run(false, None);
            tracing::error!(mode = app.tokens.mode().as_str(), error = %e, "token refresh failed");
            Err(e)
        }
    }
}
