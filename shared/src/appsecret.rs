//! The mini-program's credentials from AWS Secrets Manager (`WECHAT_SECRET_ARN`): one secret per
//! mini-program, a JSON object `{"appid", "secret", "push_token"?, "push_aes_key"?}`, read once
//! per cold start and kept in memory. When WeChat says the AppSecret is wrong (40125, or 40001 on
//! a token fetch) the secret is read again, at most once a minute per instance, so a rotated
//! AppSecret is picked up without a redeploy and without a storm of reads.
//!
//! No value of the secret is ever printed: errors name the field, never its content.

use std::time::Duration;

use serde_json::Value;

use crate::aws::SecretsManager;
use crate::clock::{self, Instant};
use crate::config::{ConfigError, Credentials};

/// Re-reads are at least this far apart.
pub const REREAD_INTERVAL: Duration = Duration::from_secs(60);

/// What the secret holds.
#[derive(Clone, PartialEq, Eq)]
pub struct AppSecret {
    pub credentials: Credentials,
    /// The message-push token and EncodingAESKey (for the push receiver), when set.
    pub push_token: Option<String>,
    pub push_aes_key: Option<String>,
}

impl std::fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSecret")
            .field("credentials", &self.credentials)
            .field(
                "push_token",
                &self.push_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "push_aes_key",
                &self.push_aes_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

fn invalid(reason: impl Into<String>) -> ConfigError {
    ConfigError {
        var: "WECHAT_SECRET_ARN",
        reason: reason.into(),
    }
}

/// Parses the secret's string. Errors name the field at fault and never quote the value.
pub fn parse(text: &str) -> Result<AppSecret, ConfigError> {
    let Ok(Value::Object(doc)) = serde_json::from_str::<Value>(text) else {
        return Err(invalid(
            "the secret is not a JSON object (expected {\"appid\", \"secret\", \"push_token\"?, \"push_aes_key\"?})",
        ));
    };
    let field = |name: &str, required: bool| -> Result<Option<String>, ConfigError> {
        match doc.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            // An optional field left empty (the template writes every field) is absent.
            None | Some(Value::Null) if !required => Ok(None),
            Some(Value::String(s)) if s.is_empty() && !required => Ok(None),
            None | Some(Value::Null) => Err(invalid(format!("the secret has no \"{name}\" field"))),
            Some(_) => Err(invalid(format!(
                "the secret's \"{name}\" field must be a non-empty string"
            ))),
        }
    };
    let appid = field("appid", true)?.expect("required");
    if !appid.chars().all(|c| c.is_ascii_alphanumeric()) || appid.len() > 64 {
        return Err(invalid(
            "the secret's \"appid\" field must be the mini-program's app id (letters and digits)",
        ));
    }
    let secret = field("secret", true)?.expect("required");
    let push_token = field("push_token", false)?;
    let push_aes_key = field("push_aes_key", false)?;
    if push_aes_key
        .as_ref()
        .is_some_and(|k| crate::push::crypto::AesKey::parse(k).is_err())
    {
        return Err(invalid(
            "the secret's \"push_aes_key\" field must be the 43-character EncodingAESKey",
        ));
    }
    Ok(AppSecret {
        credentials: Credentials { appid, secret },
        push_token,
        push_aes_key,
    })
}

/// Where the secret lives, and when it was last read.
pub struct SecretSource {
    client: SecretsManager,
    arn: String,
    /// Held across a re-read, so concurrent refusals wait for one read instead of skipping it.
    last_read: tokio::sync::Mutex<Option<Instant>>,
    reads: std::sync::atomic::AtomicU64,
}

impl SecretSource {
    pub fn new(client: SecretsManager, arn: impl Into<String>) -> Self {
        SecretSource {
            client,
            arn: arn.into(),
            last_read: tokio::sync::Mutex::new(None),
            reads: Default::default(),
        }
    }

    /// Reads and parses the secret (at init). A missing secret, one we may not read, or one
    /// that does not parse is an error naming `WECHAT_SECRET_ARN` (and the field).
    pub async fn read(&self) -> Result<AppSecret, ConfigError> {
        *self.last_read.lock().await = Some(clock::now());
        self.fetch().await
    }

    async fn fetch(&self) -> Result<AppSecret, ConfigError> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = clock::now();
        let text = self
            .client
            .get_secret_string(&self.arn)
            .await
            .map_err(|e| {
                invalid(format!(
                    "the secret could not be read: {}: {}",
                    e.code, e.message
                ))
            })?;
        let secret = parse(&text)?;
        tracing::info!(
            ms = (clock::now() - started).as_secs_f64() * 1000.0,
            appid = %secret.credentials.appid,
            "app secret read from Secrets Manager"
        );
        Ok(secret)
    }

    /// Reads the secret again unless that was done less than [`REREAD_INTERVAL`] ago; `None`
    /// when it was too soon or the read failed (logged).
    pub async fn reread(&self) -> Option<AppSecret> {
        let mut last = self.last_read.lock().await;
        if last.is_some_and(|t| clock::now() < t + REREAD_INTERVAL) {
            return None;
        }
        *last = Some(clock::now());
        match self.fetch().await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "app secret could not be read again");
                None
            }
        }
    }

    /// How often the secret was read (for tests and the benchmark).
    pub fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_secret_parses() {
        let s = parse(&format!(
            r#"{{"appid":"wx1","secret":"s3cr3t","push_token":"t","push_aes_key":"{}"}}"#,
            "k".repeat(43)
        ))
        .unwrap();
        assert_eq!(s.credentials.appid, "wx1");
        assert_eq!(s.credentials.secret, "s3cr3t");
        assert_eq!(s.push_token.as_deref(), Some("t"));
        assert!(!format!("{s:?}").contains("s3cr3t"));
        let s = parse(r#"{"appid":"wx1","secret":"x"}"#).unwrap();
        assert_eq!((s.push_token, s.push_aes_key), (None, None));
    }

    #[test]
    fn errors_name_the_field_never_the_value() {
        let cases = [
            ("not json s3cr3t", "not a JSON object"),
            (r#"["s3cr3t"]"#, "not a JSON object"),
            (r#"{"secret":"s3cr3t"}"#, "no \"appid\" field"),
            (r#"{"appid":"wx1"}"#, "no \"secret\" field"),
            (r#"{"appid":"wx1","secret":7}"#, "\"secret\" field must be"),
            (
                r#"{"appid":"wx 1","secret":"s3cr3t"}"#,
                "\"appid\" field must be",
            ),
            (
                r#"{"appid":"wx1","secret":"s3cr3t","push_aes_key":"short"}"#,
                "\"push_aes_key\" field must be",
            ),
        ];
        for (text, expected) in cases {
            let e = parse(text).unwrap_err();
            let shown = e.to_string();
            assert_eq!(e.var, "WECHAT_SECRET_ARN");
            assert!(shown.contains(expected), "{text}: {shown}");
            assert!(
                !shown.contains("s3cr3t") && !shown.contains("short"),
                "{shown}"
            );
        }
    }
}
