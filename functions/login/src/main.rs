//! The login function: `POST /login`, `GET /session`, `DELETE /session`, `GET /me`, `PUT /me`,
//! `GET /subscriptions`.

use wxmp::{App, Surface};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    wxmp::logging::init();
    let app = App::from_env().await?;
    wxmp::lambda::run(app, Surface::Sessions).await
}
