//! The notify function: EventBridge invokes it with the bus's subscribe events. WeChat's
//! subscribe pushes update the grant ledger; `wechat.subscribe.send` events send a subscribe
//! message and answer with a `wechat.subscribe.result` event (see `wxmp::notify`). An `Err`
//! (nothing was done: the store failed, or another invocation holds the event) lets Lambda retry
//! the event.

use lambda_runtime::Error;
use wxmp::App;
use wxmp::events::BusEvent;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    wxmp::logging::init();
    wxmp::metrics::init("notify");
    let app = App::from_env().await?;
    app.require_events()?;
    let app = &app;
    wxmp::lambda::run_events(move |event: BusEvent| async move {
        let outcome = wxmp::notify::handle(app, &event).await?;
        Ok(format!("{outcome:?}"))
    })
    .await
}
