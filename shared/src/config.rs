//! Configuration, read once per cold start from the environment (see the contract's table).
//!
//! Every error names the variable at fault, so a misconfigured deployment says exactly what to fix.

use std::time::Duration;

/// Where WeChat lives unless `WECHAT_API_BASE` says otherwise.
pub const DEFAULT_WECHAT_API_BASE: &str = "https://api.weixin.qq.com";
/// One week, the contract's default session lifetime.
pub const DEFAULT_SESSION_TTL_SECS: u64 = 604_800;

/// Megabytes of code images an instance keeps in memory unless `CODE_CACHE_MEMORY_MB` says
/// otherwise: a few hundred codes as WeChat makes them, well inside a 128 MB function.
pub const DEFAULT_CODE_CACHE_MEMORY_MB: usize = 4;

/// EventBridge's schedule in template.yaml, and the local server's default refresh interval.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(240);

/// `REFRESH_INTERVAL_SECS`: whole seconds, at least 1 (default 240).
pub fn refresh_interval(value: Option<String>) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(DEFAULT_REFRESH_INTERVAL),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= 1)
            .map(Duration::from_secs)
            .ok_or_else(|| ConfigError {
                var: "REFRESH_INTERVAL_SECS",
                reason: format!("must be a whole number of seconds, got {v:?}"),
            }),
    }
}

/// Which WeChat endpoint issues access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    /// `POST /cgi-bin/stable_token`, normal mode: other holders of the secret cannot invalidate it.
    Stable,
    /// `GET /cgi-bin/token`: every fetch invalidates the previous token after WeChat's overlap.
    Legacy,
}

impl TokenMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenMode::Stable => "stable",
            TokenMode::Legacy => "legacy",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("configuration: {var} {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

/// The app's WeChat credentials. `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub appid: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("appid", &self.appid)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// From `WECHAT_APPID` and `WECHAT_SECRET`, or (with `secret_arn`) filled from the secret at
    /// start-up (`App::from_env`).
    pub wechat: Credentials,
    /// `WECHAT_SECRET_ARN`: the Secrets Manager secret holding the credentials.
    pub secret_arn: Option<String>,
    pub wechat_api_base: String,
    pub token_mode: TokenMode,
    /// `None` only where the caller brings its own store (the local server's embedded one).
    pub table_name: Option<String>,
    pub code_bucket: Option<String>,
    /// `CODE_CACHE_MEMORY_MB`: the bytes of code images each instance keeps in memory in front
    /// of the S3 cache (default 4 MB; 0 keeps none).
    pub code_cache_memory: usize,
    pub session_ttl: Duration,
    /// `TOKEN_MAX_AGE_SECS` (legacy mode only): the seed article's token freshness.
    pub token_max_age: Option<Duration>,
    /// `REFRESH_INTERVAL_SECS`: the refresher's period (EventBridge's schedule in AWS).
    pub refresh_interval: Duration,
    /// `WECHAT_PUSH_TOKEN` (or the secret's `push_token`): the message push's Token.
    pub push_token: Option<String>,
    /// `WECHAT_PUSH_AES_KEY` (or the secret's `push_aes_key`): the 43-character EncodingAESKey.
    pub push_aes_key: Option<String>,
    /// `EVENT_BUS_NAME`: the EventBridge bus for pushes and subscribe messages.
    pub event_bus: Option<String>,
}

impl Config {
    /// Reads the process environment. Lambda functions call this once per cold start.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let required = |k: &'static str| {
            get(k).ok_or_else(|| ConfigError {
                var: k,
                reason: "is required but not set".into(),
            })
        };
        let secret_arn = get("WECHAT_SECRET_ARN");
        if secret_arn.is_some()
            && get("WECHAT_SECRET").is_some()
            && get("AWS_LAMBDA_FUNCTION_NAME").is_some()
        {
            return Err(ConfigError {
                var: "WECHAT_SECRET",
                reason: "is set together with WECHAT_SECRET_ARN: in Lambda the AppSecret comes \
                         only from Secrets Manager; remove WECHAT_SECRET from the function's \
                         environment"
                    .into(),
            });
        }
        // With a secret ARN, both come from the secret (read at start-up).
        let (appid, secret) = if secret_arn.is_some() && get("WECHAT_SECRET").is_none() {
            (String::new(), String::new())
        } else {
            let appid = required("WECHAT_APPID")?;
            if !appid.chars().all(|c| c.is_ascii_alphanumeric()) || appid.len() > 64 {
                return Err(ConfigError {
                    var: "WECHAT_APPID",
                    reason: "must be the mini-program's app id (letters and digits)".into(),
                });
            }
            (appid, required("WECHAT_SECRET")?)
        };
        let wechat_api_base = get("WECHAT_API_BASE")
            .unwrap_or_else(|| DEFAULT_WECHAT_API_BASE.to_string())
            .trim_end_matches('/')
            .to_string();
        let parsed = reqwest::Url::parse(&wechat_api_base).ok();
        if !parsed.is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some()) {
            return Err(ConfigError {
                var: "WECHAT_API_BASE",
                reason: format!("must be an http(s) URL, got {wechat_api_base:?}"),
            });
        }
        let token_mode = match get("WECHAT_TOKEN_MODE").as_deref() {
            None | Some("stable") => TokenMode::Stable,
            Some("legacy") => TokenMode::Legacy,
            Some(other) => {
                return Err(ConfigError {
                    var: "WECHAT_TOKEN_MODE",
                    reason: format!("must be \"stable\" or \"legacy\", got {other:?}"),
                });
            }
        };
        let session_ttl_secs = match get("SESSION_TTL_SECS") {
            None => DEFAULT_SESSION_TTL_SECS,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (60..=31_536_000).contains(n))
                .ok_or_else(|| ConfigError {
                    var: "SESSION_TTL_SECS",
                    reason: format!(
                        "must be a whole number of seconds from 60 to 31536000, got {v:?}"
                    ),
                })?,
        };
        let refresh_interval = refresh_interval(get("REFRESH_INTERVAL_SECS"))?;
        let code_cache_memory_mb = match get("CODE_CACHE_MEMORY_MB") {
            None => DEFAULT_CODE_CACHE_MEMORY_MB,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= 64)
                .ok_or_else(|| ConfigError {
                    var: "CODE_CACHE_MEMORY_MB",
                    reason: format!("must be a whole number of megabytes from 0 to 64, got {v:?}"),
                })?,
        };
        let token_max_age = match get("TOKEN_MAX_AGE_SECS") {
            None => None,
            Some(_) if token_mode != TokenMode::Legacy => {
                return Err(ConfigError {
                    var: "TOKEN_MAX_AGE_SECS",
                    reason: "applies to WECHAT_TOKEN_MODE=legacy only: a stable token can be \
                             renewed early only by a force refresh (20 a day)"
                        .into(),
                });
            }
            Some(v) => Some(
                v.parse::<u64>()
                    .ok()
                    .filter(|n| (60..=7000).contains(n))
                    .map(Duration::from_secs)
                    .ok_or_else(|| ConfigError {
                        var: "TOKEN_MAX_AGE_SECS",
                        reason: format!(
                            "must be a whole number of seconds from 60 to 7000, got {v:?}"
                        ),
                    })?,
            ),
        };
        let push_token = get("WECHAT_PUSH_TOKEN");
        let push_aes_key = get("WECHAT_PUSH_AES_KEY");
        if let Some(k) = &push_aes_key {
            crate::push::crypto::AesKey::parse(k).map_err(|_| ConfigError {
                var: "WECHAT_PUSH_AES_KEY",
                reason: "must be the console's 43-character EncodingAESKey".into(),
            })?;
            if push_token.is_none() {
                return Err(ConfigError {
                    var: "WECHAT_PUSH_TOKEN",
                    reason: "is required with WECHAT_PUSH_AES_KEY".into(),
                });
            }
        }
        if let Some(t) = &push_token
            && !(3..=32).contains(&t.len())
        {
            return Err(ConfigError {
                var: "WECHAT_PUSH_TOKEN",
                reason: "must be the console's Token (3 to 32 characters)".into(),
            });
        }
        // Outside Lambda an explicit WECHAT_SECRET wins (local runs).
        let secret_arn = secret_arn.filter(|_| secret.is_empty());
        Ok(Config {
            wechat: Credentials { appid, secret },
            secret_arn,
            wechat_api_base,
            token_mode,
            table_name: get("TABLE_NAME"),
            code_bucket: get("CODE_BUCKET"),
            code_cache_memory: code_cache_memory_mb * 1024 * 1024,
            session_ttl: Duration::from_secs(session_ttl_secs),
            token_max_age,
            refresh_interval,
            push_token,
            push_aes_key,
            event_bus: get("EVENT_BUS_NAME"),
        })
    }

    /// The bus name, or an error naming `EVENT_BUS_NAME` (the push and notify functions need it).
    pub fn require_event_bus(&self) -> Result<&str, ConfigError> {
        self.event_bus.as_deref().ok_or(ConfigError {
            var: "EVENT_BUS_NAME",
            reason: "is required but not set".into(),
        })
    }

    /// The table name, or an error naming `TABLE_NAME` (it is required in Lambda).
    pub fn require_table(&self) -> Result<&str, ConfigError> {
        self.table_name.as_deref().ok_or(ConfigError {
            var: "TABLE_NAME",
            reason: "is required but not set".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_apply() {
        let c = cfg(&[("WECHAT_APPID", "wx123"), ("WECHAT_SECRET", "s")]).unwrap();
        assert_eq!(c.wechat_api_base, DEFAULT_WECHAT_API_BASE);
        assert_eq!(c.token_mode, TokenMode::Stable);
        assert_eq!(c.session_ttl, Duration::from_secs(604_800));
        assert!(c.table_name.is_none() && c.code_bucket.is_none());
        assert_eq!(c.require_table().unwrap_err().var, "TABLE_NAME");
    }

    #[test]
    fn errors_name_the_variable() {
        assert_eq!(cfg(&[]).unwrap_err().var, "WECHAT_APPID");
        assert_eq!(
            cfg(&[("WECHAT_APPID", "wx1")]).unwrap_err().var,
            "WECHAT_SECRET"
        );
        let base = [("WECHAT_APPID", "wx1"), ("WECHAT_SECRET", "s")];
        for (var, bad) in [
            ("WECHAT_TOKEN_MODE", "fast"),
            ("SESSION_TTL_SECS", "soon"),
            ("SESSION_TTL_SECS", "5"),
            ("WECHAT_API_BASE", "ftp://x"),
            ("WECHAT_PUSH_AES_KEY", "too-short"),
            ("WECHAT_PUSH_TOKEN", "x"),
            ("CODE_CACHE_MEMORY_MB", "65"),
            ("CODE_CACHE_MEMORY_MB", "-1"),
            ("CODE_CACHE_MEMORY_MB", "4MB"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push((var, bad));
            let err = cfg(&pairs).unwrap_err();
            assert_eq!(err.var, var, "{err}");
        }
    }

    #[test]
    fn codes_kept_in_memory_are_4_mb_unless_set() {
        let base = [("WECHAT_APPID", "wx1"), ("WECHAT_SECRET", "s")];
        assert_eq!(cfg(&base).unwrap().code_cache_memory, 4 << 20);
        let mut off = base.to_vec();
        off.push(("CODE_CACHE_MEMORY_MB", "0"));
        assert_eq!(cfg(&off).unwrap().code_cache_memory, 0);
        let mut most = base.to_vec();
        most.push(("CODE_CACHE_MEMORY_MB", "64"));
        assert_eq!(cfg(&most).unwrap().code_cache_memory, 64 << 20);
    }

    #[test]
    fn token_max_age_is_for_legacy_mode_only() {
        let base = [("WECHAT_APPID", "wx1"), ("WECHAT_SECRET", "s")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            cfg(&v)
        };
        assert_eq!(with(&[]).unwrap().token_max_age, None);
        let c = with(&[
            ("WECHAT_TOKEN_MODE", "legacy"),
            ("TOKEN_MAX_AGE_SECS", "300"),
        ])
        .unwrap();
        assert_eq!(c.token_max_age, Some(Duration::from_secs(300)));
        let e = with(&[("TOKEN_MAX_AGE_SECS", "300")]).unwrap_err();
        assert_eq!(e.var, "TOKEN_MAX_AGE_SECS");
        assert!(e.to_string().contains("legacy"), "{e}");
        for bad in ["10", "7201", "5m"] {
            let e =
                with(&[("WECHAT_TOKEN_MODE", "legacy"), ("TOKEN_MAX_AGE_SECS", bad)]).unwrap_err();
            assert_eq!(e.var, "TOKEN_MAX_AGE_SECS");
        }
        let e = with(&[("REFRESH_INTERVAL_SECS", "0")]).unwrap_err();
        assert_eq!(e.var, "REFRESH_INTERVAL_SECS");
    }

    #[test]
    fn a_secret_arn_replaces_the_secret_and_both_refuse_to_start_in_lambda() {
        let c = cfg(&[("WECHAT_SECRET_ARN", "arn:aws:secretsmanager:r:1:secret:wx")]).unwrap();
        assert_eq!(
            c.secret_arn.as_deref(),
            Some("arn:aws:secretsmanager:r:1:secret:wx")
        );
        assert_eq!(c.wechat.secret, "");
        let both = [
            ("WECHAT_SECRET_ARN", "arn:x"),
            ("WECHAT_APPID", "wx1"),
            ("WECHAT_SECRET", "s"),
        ];
        // A local run with both: the explicit secret is used.
        let c = cfg(&both).unwrap();
        assert_eq!((c.secret_arn, c.wechat.secret.as_str()), (None, "s"));
        let mut in_lambda = both.to_vec();
        in_lambda.push(("AWS_LAMBDA_FUNCTION_NAME", "login"));
        let e = cfg(&in_lambda).unwrap_err();
        assert_eq!(e.var, "WECHAT_SECRET");
        assert!(e.to_string().contains("WECHAT_SECRET_ARN"), "{e}");
    }

    #[test]
    fn reads_everything_and_hides_the_secret() {
        let c = cfg(&[
            ("WECHAT_APPID", "wx1"),
            ("WECHAT_SECRET", "topsecret"),
            ("WECHAT_API_BASE", "http://127.0.0.1:9/"),
            ("WECHAT_TOKEN_MODE", "legacy"),
            ("TABLE_NAME", "t"),
            ("CODE_BUCKET", "b"),
            ("SESSION_TTL_SECS", "3600"),
        ])
        .unwrap();
        assert_eq!(c.wechat_api_base, "http://127.0.0.1:9");
        assert_eq!(c.token_mode, TokenMode::Legacy);
        assert_eq!(c.require_table().unwrap(), "t");
        assert_eq!(c.code_bucket.as_deref(), Some("b"));
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
