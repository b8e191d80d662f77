//! `wechat-sandbox`: serves the sandbox on 127.0.0.1:$SANDBOX_PORT (default 4000).
//! `SANDBOX_APPID` / `SANDBOX_SECRET` override the default credentials; `RUST_LOG` the log level.

use std::error::Error;
use std::net::Ipv4Addr;

use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use wechat_sandbox::{Sandbox, SandboxConfig};

const DEFAULT_PORT: u16 = 4000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    let port = match std::env::var("SANDBOX_PORT") {
        Ok(v) => v
            .parse::<u16>()
            .map_err(|e| format!("SANDBOX_PORT={v:?} is not a port number: {e}"))?,
        Err(_) => DEFAULT_PORT,
    };
    let mut cfg = SandboxConfig::default();
    if let Ok(appid) = std::env::var("SANDBOX_APPID") {
        cfg.appid = appid;
    }
    if let Ok(secret) = std::env::var("SANDBOX_SECRET") {
        cfg.secret = secret;
    }

    let sandbox = Sandbox::new(cfg);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        appid = %sandbox.config().appid,
        "WeChat sandbox listening"
    );
    axum::serve(listener, sandbox.router())
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("WeChat sandbox stopped");
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix. A handler that cannot be installed just never fires.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
