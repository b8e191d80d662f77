//! The push function: `GET /push` (WeChat's verification) and `POST /push` (WeChat's message
//! pushes, put on the event bus).

use wxmp::{App, Surface};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    wxmp::logging::init();
    let app = App::from_env().await?;
    app.require_push()?;
    wxmp::lambda::run(app, Surface::Push).await
}
