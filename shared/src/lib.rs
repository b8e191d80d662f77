//! The library every function uses: configuration, the WeChat client, the stores, the HTTP
//! surface and the Lambda adapter. Functions' `main.rs` files only wire these together.

pub mod api;
pub mod app;
pub mod aws;
pub mod codecache;
pub mod config;
pub mod error;
pub mod ids;
pub mod input;
pub mod lambda;
pub mod logging;
pub mod qrcode;
pub mod refresher;
pub mod retry;
pub mod secret;
pub mod session;
pub mod store;
pub mod token;
pub mod wechat;

pub use api::{HttpRequest, HttpResponse, Surface};
pub use app::App;
pub use config::Config;

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    now_millis() / 1000
}

pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
