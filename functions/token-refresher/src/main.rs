//! The token refresher: EventBridge invokes it every 4 minutes (any event payload will do).
//! `REFRESH_INTERVAL_SECS` (default 240) must match that schedule: the refresh makes sure the
//! shared token outlives two more runs. A failed refresh returns `Err`, so the function's Errors
//! metric (and its alarm) sees it.

use lambda_runtime::Error;
use serde_json::Value;
use wxmp::App;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    wxmp::logging::init();
    wxmp::metrics::init("token-refresher");
    let app = App::from_env().await?;
    let interval = app.config.refresh_interval;
    let app = &app;
    wxmp::lambda::run_events(move |_: Value| async move {
        Ok(wxmp::refresher::run_with_interval(app, interval).await?)
    })
    .await
}
