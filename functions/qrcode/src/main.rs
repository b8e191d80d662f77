//! The qrcode function: `POST /qrcode` (mini-program codes, S3-cached) and `POST /phone`.

use wxmp::{App, Surface};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    wxmp::logging::init();
    let app = App::from_env().await?;
    wxmp::lambda::run(app, Surface::Codes).await
}
