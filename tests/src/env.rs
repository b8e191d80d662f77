//! One test's world: a fresh table (and bucket) on the shared moto server, its own WeChat sandbox,
//! and the app wired to both exactly as a function would be, so a test can call routes in-process
//! or hand [`TestEnv::function_env`] to a real function binary.

use std::sync::Arc;

use aws_config::SdkConfig;
use bytes::Bytes;
use serde_json::Value;
use wechat_sandbox::{RunningSandbox, Sandbox, SandboxConfig};
use wxmp::codecache::CodeCache;
use wxmp::config::TokenMode;
use wxmp::store::{DynamoStore, Store};
use wxmp::{App, Config, Surface};

use crate::atomic::AtomicDynamo;
use crate::moto;

pub struct Options {
    pub sandbox: SandboxConfig,
    pub token_mode: TokenMode,
    pub bucket: bool,
    /// An EventBridge bus (with an SQS queue reading it) as `EVENT_BUS_NAME`.
    pub bus: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sandbox: SandboxConfig::default(),
            token_mode: TokenMode::Stable,
            bucket: false,
            bus: false,
        }
    }
}

pub struct TestEnv {
    pub wechat: RunningSandbox,
    pub endpoint: String,
    pub sdk: SdkConfig,
    pub table: String,
    pub bucket: Option<String>,
    pub bus: Option<crate::bus::TestBus>,
    /// The test's DynamoDB table on moto, conditional writes made atomic (see [`AtomicDynamo`]).
    pub store: Arc<AtomicDynamo>,
    pub app: App,
    pub token_mode: TokenMode,
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// The contract's error code, for error replies.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// The token endpoint of `mode`.
pub fn token_path(mode: TokenMode) -> &'static str {
    match mode {
        TokenMode::Stable => "/cgi-bin/stable_token",
        TokenMode::Legacy => "/cgi-bin/token",
    }
}

/// Logs the user of a sandbox login `code` in through `app`; returns the session token.
pub async fn login_with_code(app: &App, code: &str) -> String {
    let body = serde_json::json!({ "code": code }).to_string();
    let r = call_app(app, "POST", "/login", None, body.as_bytes()).await;
    assert_eq!(
        r.status,
        200,
        "login failed: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()["token"].as_str().unwrap().to_string()
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::with(Options::default()).await
    }

    pub async fn with(opts: Options) -> Self {
        let wechat = Sandbox::spawn(opts.sandbox).await.expect("sandbox starts");
        let endpoint = moto::endpoint().await;
        let sdk = moto::sdk_config(&endpoint).await;
        let table = moto::unique_name("t");
        let dynamo = wxmp::aws::dynamodb(&sdk);
        wxmp::store::ensure_table(&dynamo, &table)
            .await
            .expect("table created");
        let bucket = opts.bucket.then(|| moto::unique_name("codes"));
        let store = Arc::new(AtomicDynamo::new(DynamoStore::new(dynamo, table.clone())));
        let bus = match opts.bus {
            true => Some(crate::bus::TestBus::new(&sdk).await),
            false => None,
        };
        let pairs = config_pairs(
            &wechat,
            opts.token_mode,
            &table,
            bucket.as_deref(),
            bus.as_ref().map(|b| b.name.as_str()),
        );
        let app = build_app(&pairs, &sdk, bucket.as_deref(), store.clone());
        if let Some(c) = &app.codes {
            c.ensure_bucket().await.expect("bucket created");
        }
        TestEnv {
            wechat,
            endpoint,
            sdk,
            table,
            bucket,
            bus,
            store,
            app,
            token_mode: opts.token_mode,
        }
    }

    /// A world in token `mode`, its sandbox configured by `edit`.
    pub async fn with_mode(mode: TokenMode, edit: impl FnOnce(&mut SandboxConfig)) -> Self {
        let mut sandbox = SandboxConfig::default();
        edit(&mut sandbox);
        Self::with(Options {
            sandbox,
            token_mode: mode,
            ..Default::default()
        })
        .await
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.wechat.sandbox
    }

    /// Calls the sandbox has seen to `path`, failed ones included.
    pub fn calls(&self, path: &str) -> u64 {
        self.sandbox().stats().calls.get(path).copied().unwrap_or(0)
    }

    /// Configuration as the function binaries read it from their environment.
    pub fn config_pairs(&self) -> Vec<(String, String)> {
        config_pairs(
            &self.wechat,
            self.token_mode,
            &self.table,
            self.bucket.as_deref(),
            self.bus.as_ref().map(|b| b.name.as_str()),
        )
    }

    /// Everything a function binary needs: the configuration plus moto's AWS settings.
    pub async fn function_env(&self) -> Vec<(String, String)> {
        let mut v = self.config_pairs();
        v.extend(moto::aws_env().await);
        v
    }

    /// Another app instance on the same table and sandbox, as another Lambda instance would be.
    pub fn build_app(&self) -> App {
        build_app(
            &self.config_pairs(),
            &self.sdk,
            self.bucket.as_deref(),
            self.store.clone(),
        )
    }

    /// An app on this env's configuration with `overrides` (environment variable, value) applied
    /// and its own store: a misconfigured instance, or one whose store is down.
    pub fn build_app_with(&self, overrides: &[(&str, &str)], store: Arc<dyn Store>) -> App {
        let mut pairs = self.config_pairs();
        for (k, v) in overrides {
            set_var(&mut pairs, k, v);
        }
        build_app(&pairs, &self.sdk, self.bucket.as_deref(), store)
    }

    /// Claims `key` in the test's table as another instance would; true if taken.
    pub async fn store_claim(&self, key: &str, holder: &str, expires_at: u64, now: u64) -> bool {
        use wxmp::store::MessageStore;
        self.store
            .claim(key, holder, expires_at, now)
            .await
            .expect("claim")
            .taken()
    }

    /// A DynamoDB client on this env's moto, for reading and writing the table directly.
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        moto::dynamodb_client(&self.sdk)
    }

    /// The sandbox answers the next `count` calls to `path` with `errcode` (other faults off).
    pub fn script(&self, path: &str, errcode: i64, count: u32) {
        self.sandbox().set_faults(wechat_sandbox::Faults {
            scripted: vec![wechat_sandbox::ScriptedError {
                path: path.into(),
                errcode,
                count,
            }],
            ..Default::default()
        });
    }

    /// Every item of the test's table (a consistent scan; test tables fit one page).
    pub async fn scan(
        &self,
    ) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        let out = self
            .dynamodb()
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .send()
            .await
            .expect("Scan");
        assert!(
            out.last_evaluated_key.is_none(),
            "the test table fits one page"
        );
        out.items.unwrap_or_default()
    }

    /// Calls a route in-process through the same handler the functions run.
    pub async fn call(&self, method: &str, path: &str, bearer: Option<&str>, body: &[u8]) -> Reply {
        call_app(&self.app, method, path, bearer, body).await
    }

    /// Like [`TestEnv::call`], with the request headers given verbatim.
    pub async fn call_with_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        call_app_with_headers(&self.app, method, path, headers, body).await
    }

    /// Logs a new user in and returns the session token.
    pub async fn login(&self, user: &str) -> String {
        let code = self.sandbox().mint_login_code(user);
        let r = self
            .call(
                "POST",
                "/login",
                None,
                format!(r#"{{"code":"{code}"}}"#).as_bytes(),
            )
            .await;
        assert_eq!(
            r.status,
            200,
            "login failed: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()["token"].as_str().unwrap().to_string()
    }
}

/// Sets `name` to `value` in an environment list (as a function's), replacing any value it had.
pub fn set_var(vars: &mut Vec<(String, String)>, name: &str, value: &str) {
    vars.retain(|(n, _)| n != name);
    vars.push((name.to_string(), value.to_string()));
}

pub async fn call_app(
    app: &App,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &[u8],
) -> Reply {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    call_app_with_headers(app, method, path, &headers, body).await
}

/// Calls a route of `app` in-process with the request headers given verbatim.
pub async fn call_app_with_headers(
    app: &App,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut b = http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        b = b.header(*name, *value);
    }
    let req = b
        .extension(wxmp::http::RequestId("test-request".into()))
        .body(axum::body::Body::from(Bytes::copy_from_slice(body)))
        .expect("valid request");
    // The router as every function and the local server build it (the app is cheap to clone:
    // the clone shares the keeper, the store and the clients).
    let router = wxmp::routes::router(std::sync::Arc::new(app.clone()), Surface::All);
    let resp = tower::ServiceExt::oneshot(router, req)
        .await
        .expect("the router never fails");
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("an in-memory body");
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

fn config_pairs(
    wechat: &RunningSandbox,
    mode: TokenMode,
    table: &str,
    bucket: Option<&str>,
    bus: Option<&str>,
) -> Vec<(String, String)> {
    let cfg = wechat.sandbox.config();
    let mut v = vec![
        ("WECHAT_APPID".to_string(), cfg.appid.clone()),
        ("WECHAT_SECRET".to_string(), cfg.secret.clone()),
        ("WECHAT_API_BASE".to_string(), wechat.base_url()),
        ("WECHAT_TOKEN_MODE".to_string(), mode.as_str().to_string()),
        ("TABLE_NAME".to_string(), table.to_string()),
        ("WECHAT_PUSH_TOKEN".to_string(), cfg.push_token.clone()),
        ("WECHAT_PUSH_AES_KEY".to_string(), cfg.push_aes_key.clone()),
    ];
    if let Some(b) = bus {
        v.push(("EVENT_BUS_NAME".to_string(), b.to_string()));
    }
    if let Some(b) = bucket {
        v.push(("CODE_BUCKET".to_string(), b.to_string()));
    }
    v
}

fn build_app(
    pairs: &[(String, String)],
    sdk: &SdkConfig,
    bucket: Option<&str>,
    store: Arc<dyn Store>,
) -> App {
    let config =
        Config::from_lookup(|k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
            .expect("test configuration is valid");
    let codes = bucket.map(|b| CodeCache::new(wxmp::aws::s3(sdk), b));
    let events = config.event_bus.as_ref().map(|bus| {
        Arc::new(wxmp::events::EventBridgeSink::new(
            wxmp::aws::eventbridge(sdk),
            bus,
        )) as Arc<dyn wxmp::events::EventSink>
    });
    App::new(config, store)
        .with_code_cache(codes)
        .with_events(events)
}
