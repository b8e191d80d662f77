//! The library every function uses: configuration, the WeChat client, the stores, the HTTP
//! surface and the Lambda adapter. Functions' `main.rs` files only wire these together.

pub mod app;
pub mod appsecret;
pub mod aws;
pub mod clock;
pub mod codecache;
pub mod config;
pub mod error;
pub mod events;
pub mod http;
pub mod ids;
pub mod lambda;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod push;
pub mod refresher;
pub mod reply;
pub mod retry;
pub mod routes;
pub mod scope;
pub mod secret;
pub mod session;
pub mod store;
pub mod token;
pub mod wechat;

pub use app::App;
pub use config::Config;
pub use routes::Surface;

/// Seconds since the Unix epoch, on the one [`clock`].
pub fn now_secs() -> u64 {
    clock::epoch_secs()
}

/// Milliseconds since the Unix epoch, on the one [`clock`].
pub fn now_millis() -> u64 {
    clock::epoch_millis()
}
