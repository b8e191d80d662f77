//! The notify function: EventBridge invokes it with the bus's subscribe events. WeChat's
//! subscribe pushes update the grant ledger; `wechat.subscribe.send` events send a subscribe
//! message and answer with a `wechat.subscribe.result` event (see `wxmp::notify`). An `Err` (the
//! store failed before anything was done) lets Lambda retry the event.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use wxmp::App;
use wxmp::events::BusEvent;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    wxmp::logging::init();
    wxmp::metrics::init("notify");
    let app = App::from_env().await?;
    app.require_events()?;
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<BusEvent>| async move {
        let id = event.context.request_id.clone();
        let handled = wxmp::scope::run_request(id, None, wxmp::notify::handle(app, &event.payload))
            .await
            .map(|outcome| format!("{outcome:?}"))
            .map_err(Error::from);
        wxmp::metrics::flush();
        handled
    }))
    .await
}
