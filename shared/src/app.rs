//! Everything a request needs, built once per cold start and shared by every invocation.

use std::sync::Arc;

use crate::appsecret::SecretSource;
use crate::codecache::CodeCache;
use crate::config::{Config, ConfigError};
use crate::events::{EventBridgeSink, EventSink};
use crate::push::PushKeys;
use crate::store::{DynamoStore, Store};
use crate::token::TokenKeeper;
use crate::wechat::WeChatClient;

#[derive(Clone)]
pub struct App {
    pub config: Config,
    pub wechat: WeChatClient,
    pub store: Arc<dyn Store>,
    /// Shared by clones: one keeper (one memory, one single-flight) per instance.
    pub tokens: Arc<TokenKeeper>,
    /// The S3 code cache, when `CODE_BUCKET` is set.
    pub codes: Option<CodeCache>,
    /// The message push's keys, when a push token is configured (else `/push` is not served).
    pub push: Option<PushKeys>,
    /// Where pushes and subscribe-message results go (EventBridge; the local server's own bus).
    pub events: Option<Arc<dyn EventSink>>,
    /// The store's DynamoDB client when the store is DynamoDB (for connecting ahead of the first
    /// request: [`crate::lambda`]).
    pub dynamodb: Option<crate::aws::DynamoDb>,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl App {
    pub fn new(config: Config, store: Arc<dyn Store>) -> Self {
        let wechat = WeChatClient::new(&config.wechat_api_base, config.wechat.clone());
        let tokens = Arc::new(
            TokenKeeper::new(wechat.clone(), store.clone(), config.token_mode).with_options(
                crate::token::KeeperOptions {
                    max_age: config.token_max_age,
                    refresh_interval: config.refresh_interval,
                    ..crate::token::KeeperOptions::for_mode(config.token_mode)
                },
            ),
        );
        let push = config.push_token.as_deref().map(|t| {
            PushKeys::new(t, config.push_aes_key.as_deref()).expect("checked by the configuration")
        });
        App {
            config,
            wechat,
            store,
            tokens,
            codes: None,
            push,
            events: None,
            dynamodb: None,
        }
    }

    /// For the push function: a push token and an event bus, or an error naming the variable
    /// (logged; the cold start fails rather than answer every push with an error).
    pub fn require_push(&self) -> Result<(), InitError> {
        if self.push.is_none() {
            let e = ConfigError {
                var: "WECHAT_PUSH_TOKEN",
                reason: "is required but not set (nor push_token in the secret)".into(),
            };
            tracing::error!(variable = e.var, error = %e, "configuration error");
            return Err(e.into());
        }
        self.require_events()
    }

    /// For the push and notify functions: an event bus, or an error naming `EVENT_BUS_NAME`.
    pub fn require_events(&self) -> Result<(), InitError> {
        self.config.require_event_bus().map(|_| ()).map_err(|e| {
            tracing::error!(variable = e.var, error = %e, "configuration error");
            InitError::Config(e)
        })
    }

    pub fn with_events(mut self, events: Option<Arc<dyn EventSink>>) -> Self {
        self.events = events;
        self
    }

    pub fn with_code_cache(mut self, codes: Option<CodeCache>) -> Self {
        self.codes = codes;
        self
    }

    /// The Lambda setup: configuration from the environment, DynamoDB through one shared
    /// `SdkConfig`. Fails (and the cold start with it) when the configuration is wrong.
    pub async fn from_env() -> Result<Self, InitError> {
        let read = || -> Result<(Config, String), ConfigError> {
            let config = Config::from_env()?;
            let table = config.require_table()?.to_string();
            Ok((config, table))
        };
        let (config, table) = read().inspect_err(
            |e| tracing::error!(variable = e.var, error = %e, "configuration error"),
        )?;
        let sdk = crate::aws::sdk_config().await;
        Self::from_config(config, table, &sdk).await
    }

    /// The Lambda setup from a read configuration: the app secret from Secrets Manager when
    /// `WECHAT_SECRET_ARN` is set (an unreadable or malformed secret fails the start, naming the
    /// variable and the field), DynamoDB and S3 on `sdk`.
    pub async fn from_config(
        mut config: Config,
        table: String,
        sdk: &aws_config::SdkConfig,
    ) -> Result<Self, InitError> {
        let source = match &config.secret_arn {
            Some(arn) => {
                let source = Arc::new(SecretSource::new(crate::aws::secrets_manager(sdk), arn));
                let secret = source.read().await.inspect_err(
                    |e| tracing::error!(variable = e.var, error = %e, "configuration error"),
                )?;
                config.wechat = secret.credentials;
                if let Some(token) = secret.push_token {
                    config.push_token = Some(token);
                    config.push_aes_key = secret.push_aes_key;
                }
                Some(source)
            }
            None => None,
        };
        let dynamodb = crate::aws::dynamodb(sdk);
        let store = DynamoStore::new(dynamodb.clone(), table);
        let codes = config
            .code_bucket
            .as_ref()
            .map(|b| CodeCache::new(crate::aws::s3(sdk), b).keeping(config.code_cache_memory));
        let events = config.event_bus.as_ref().map(|bus| {
            Arc::new(EventBridgeSink::new(crate::aws::eventbridge(sdk), bus)) as Arc<dyn EventSink>
        });
        let mut app = App::new(config, Arc::new(store))
            .with_code_cache(codes)
            .with_events(events);
        if let Some(source) = source {
            app = app.with_secret_source(source);
        }
        app.dynamodb = Some(dynamodb);
        Ok(app)
    }

    /// Re-reads the AppSecret from `source` when WeChat refuses the current one (the keeper's
    /// client is a clone of the app's: both use it).
    pub fn with_secret_source(self, source: Arc<SecretSource>) -> Self {
        self.wechat.set_secret_source(source);
        self
    }
}
