//! `local-server`: every route of the contract on `http://127.0.0.1:$PORT` (default 3000), through
//! the same handler code the Lambda functions run.
//!
//! - Store: embedded (in memory) by default; DynamoDB when `TABLE_NAME` is set (with
//!   `AWS_ENDPOINT_URL` for a local one), creating the table if it is missing.
//! - WeChat: the built-in sandbox, mounted under `/sandbox` on the same port, unless
//!   `WECHAT_APPID` and `WECHAT_SECRET` are set (then `WECHAT_API_BASE`, default the real API).
//!   With the sandbox, `/push` takes the sandbox's pushes (its push token and EncodingAESKey,
//!   or `WECHAT_PUSH_TOKEN`/`WECHAT_PUSH_AES_KEY` for both).
//! - Events: an in-process bus whose consumer does the notify function's work (the grant ledger,
//!   subscribe sends), unless `EVENT_BUS_NAME` is set (then that EventBridge bus).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use wechat_sandbox::{Sandbox, SandboxConfig};
use wxmp::codecache::CodeCache;
use wxmp::events::{BusEvent, EventBridgeSink, EventSink, LocalBus};
use wxmp::store::{DynamoStore, MemoryStore, Store};
use wxmp::{App, Config, Surface};

#[tokio::main]
async fn main() {
    wxmp::logging::init();
    // EMF lines to stdout, or to METRICS_FILE, as the functions write them.
    wxmp::metrics::init("local-server");
    if let Err(e) = run().await {
        tracing::error!(error = %e, "local-server failed to start");
        // stderr may be closed too: nothing here may panic.
        let _ = writeln!(std::io::stderr(), "local-server: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p
            .parse()
            .map_err(|_| format!("PORT must be a port number, got {p:?}"))?,
        Err(_) => 3000,
    };
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    // Both credentials, or neither (the sandbox): one alone is a mistake, not a wish for the sandbox.
    let use_sandbox = match (env("WECHAT_APPID"), env("WECHAT_SECRET")) {
        (None, None) => true,
        (Some(_), Some(_)) => false,
        (Some(_), None) => {
            return Err("WECHAT_SECRET is required when WECHAT_APPID is set (unset both to use the sandbox)".into());
        }
        (None, Some(_)) => {
            return Err("WECHAT_APPID is required when WECHAT_SECRET is set (unset both to use the sandbox)".into());
        }
    };
    let sandbox = use_sandbox.then(|| {
        let mut cfg = SandboxConfig::default();
        if let Some(t) = env("WECHAT_PUSH_TOKEN") {
            cfg.push_token = t;
        }
        if let Some(k) = env("WECHAT_PUSH_AES_KEY") {
            cfg.push_aes_key = k;
        }
        // The sandbox pushes finished media checks to this server, as WeChat to the console's URL.
        cfg.push_url = Some(format!("http://127.0.0.1:{port}/push"));
        Sandbox::new(cfg)
    });

    let config = match &sandbox {
        Some(sb) => {
            let cfg = sb.config().clone();
            let base = format!("http://127.0.0.1:{port}/sandbox");
            Config::from_lookup(|k| match k {
                "WECHAT_APPID" => Some(cfg.appid.clone()),
                "WECHAT_SECRET" => Some(cfg.secret.clone()),
                "WECHAT_API_BASE" => Some(base.clone()),
                "WECHAT_PUSH_TOKEN" => Some(cfg.push_token.clone()),
                "WECHAT_PUSH_AES_KEY" => Some(cfg.push_aes_key.clone()),
                other => env(other),
            })?
        }
        None => Config::from_env()?,
    };

    // One SdkConfig for every AWS client, loaded only if AWS is used at all.
    let sdk = match (&config.table_name, &config.code_bucket, &config.event_bus) {
        (None, None, None) => None,
        _ => Some(wxmp::aws::sdk_config().await),
    };
    let store: Arc<dyn Store> = match (&config.table_name, &sdk) {
        (Some(table), Some(sdk)) => {
            let client = wxmp::aws::dynamodb(sdk);
            wxmp::store::ensure_table(&client, table).await?;
            Arc::new(DynamoStore::new(client, table.clone()))
        }
        _ => Arc::new(MemoryStore::new()),
    };
    let codes = match (&config.code_bucket, &sdk) {
        (Some(bucket), Some(sdk)) => {
            let cache = CodeCache::new(wxmp::aws::s3(sdk), bucket.clone())
                .keeping(config.code_cache_memory);
            cache.ensure_bucket().await?;
            Some(cache)
        }
        _ => None,
    };

    let store_kind = if config.table_name.is_some() {
        "dynamodb"
    } else {
        "embedded"
    };
    let wechat = if sandbox.is_some() {
        "sandbox"
    } else {
        config.wechat_api_base.as_str()
    };
    let (events, local_bus): (Arc<dyn EventSink>, _) = match (&config.event_bus, &sdk) {
        (Some(bus), Some(sdk)) => (
            Arc::new(EventBridgeSink::new(wxmp::aws::eventbridge(sdk), bus)),
            None,
        ),
        _ => {
            let (bus, rx) = LocalBus::new();
            (Arc::new(bus), Some(rx))
        }
    };
    let app = Arc::new(
        App::new(config.clone(), store)
            .with_code_cache(codes)
            .with_events(Some(events)),
    );
    if let Some(rx) = local_bus {
        tokio::spawn(consume(app.clone(), rx));
    }

    let mut router =
        wxmp::routes::router(app.clone(), Surface::All).merge(local_events(app.clone()));
    if let Some(sb) = &sandbox {
        router = router.nest_service("/sandbox", sb.router());
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    // The refresher runs as EventBridge would run it, once the sandbox (if any) can answer.
    let interval = app.config.refresh_interval;
    tokio::spawn(refresh_forever(app.clone(), interval));
    tracing::info!(%addr, store = store_kind, wechat, appid = %config.wechat.appid, "local-server listening");
    // A closed stdout (piped into `head`, say) must not stop the server.
    let _ = writeln!(
        std::io::stdout(),
        "local-server: http://{addr} (store: {store_kind}, wechat: {wechat})"
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// `POST /_local/events` `{"source", "detail-type", "detail"}`: puts an event on the bus, as
/// another service's `PutEvents` would (say a `wechat.subscribe.send`). 202 once it is on it.
fn local_events(app: Arc<App>) -> axum::Router {
    use axum::http::StatusCode;
    axum::Router::new().route(
        "/_local/events",
        axum::routing::post(move |body: axum::body::Bytes| {
            let app = app.clone();
            async move {
                let event: BusEvent = match serde_json::from_slice(&body) {
                    Ok(e) => e,
                    Err(e) => return (StatusCode::BAD_REQUEST, format!("bad event: {e}")),
                };
                match &app.events {
                    Some(bus) => match bus.put(event).await {
                        Ok(()) => (StatusCode::ACCEPTED, "queued".to_string()),
                        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e),
                    },
                    None => (StatusCode::SERVICE_UNAVAILABLE, "no event bus".to_string()),
                }
            }
        }),
    )
}

/// The local bus's consumer: what EventBridge's rule and the notify function do in AWS.
async fn consume(app: Arc<App>, mut rx: tokio::sync::mpsc::UnboundedReceiver<BusEvent>) {
    while let Some(event) = rx.recv().await {
        tracing::info!(source = %event.source, detail_type = %event.detail_type, "event on the local bus");
        if let Err(e) = wxmp::notify::handle(&app, &event).await {
            tracing::error!(error = %e, "the local bus's event failed");
        }
    }
}

async fn refresh_forever(app: Arc<App>, interval: std::time::Duration) {
    loop {
        // Failures are logged inside; requests still fetch on a miss.
        let _ = wxmp::refresher::run_with_interval(&app, interval).await;
        tokio::time::sleep(interval).await;
    }
}
