//! AWS clients, built from one `SdkConfig` per cold start (credentials, region, endpoint), with
//! bounded timeouts so a slow dependency answers 503 instead of running into the Lambda timeout.
//!
//! DynamoDB and S3 are called through small clients of our own ([`DynamoDb`], [`S3`]): a request
//! signed with SigV4 (`sigv4`: the SDK's `aws-sigv4` gives the same signatures, checked in its
//! tests, but re-derives the day's key and allocates its way through every call) and sent on the process's one HTTP stack
//! (`net`), with the SDK's retry rules (transient errors and throttling, three attempts, jittered
//! backoff). The functions make a handful of item and object calls; the SDK's generic request
//! pipeline cost more CPU than everything else a request does (README, Performance). The
//! `SdkConfig` gives credentials, region and endpoint: in a Lambda function straight from its
//! environment, elsewhere from aws-config's default chains, whose HTTP client serves the
//! credential providers that need one.

mod dynamodb;
mod events;
mod s3;
mod secrets;
mod signed;
mod sigv4;

pub use dynamodb::DynamoDb;
pub use events::{EventBridge, JsonClient};
pub use s3::S3;
pub use secrets::SecretsManager;
pub use signed::AwsError;

use std::time::Duration;

use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::{BehaviorVersion, SdkConfig, timeout::TimeoutConfig};
use aws_smithy_types::checksum_config::{RequestChecksumCalculation, ResponseChecksumValidation};

/// The AWS settings of this process. In a Lambda function whose credentials and region are in its
/// environment (as Lambda gives them: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION`) they are read from there, as aws-config's default chains
/// would read them first; building those chains (profile files, SSO, web identity, IMDS and the
/// partition table) cost a tenth of a cold start (README, Performance). Anywhere else, and in a
/// function without them, the default chains.
pub async fn sdk_config() -> SdkConfig {
    match lambda_environment(|name| std::env::var(name).ok()) {
        Some(config) => config,
        None => default_chains().await,
    }
}

/// The settings from Lambda's environment, if this is a Lambda function
/// (`AWS_LAMBDA_FUNCTION_NAME`) and its credentials and region are all there. The endpoint is
/// `AWS_ENDPOINT_URL` unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` is true, as in aws-config.
fn lambda_environment(var: impl Fn(&str) -> Option<String>) -> Option<SdkConfig> {
    use aws_config::Region;
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;

    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    set("AWS_LAMBDA_FUNCTION_NAME")?;
    let region = set("AWS_REGION").or_else(|| set("AWS_DEFAULT_REGION"))?;
    let credentials = Credentials::new(
        set("AWS_ACCESS_KEY_ID")?,
        set("AWS_SECRET_ACCESS_KEY")?,
        set("AWS_SESSION_TOKEN"),
        None,
        "Environment",
    );
    let mut config = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .credentials_provider(SharedCredentialsProvider::new(credentials));
    let ignore_endpoints = set("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if !ignore_endpoints && let Some(url) = set("AWS_ENDPOINT_URL") {
        config = config.endpoint_url(url);
    }
    Some(config.build())
}

/// aws-config's default chains (environment, profile files, SSO, web identity, container and
/// instance metadata), with the HTTP client the providers that call out use.
async fn default_chains() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(crate::net::aws_http_client())
        // The attempt and operation timeouts below bound every call; the stalled-stream
        // watchdog's per-poll bookkeeping would only add CPU to each request.
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        // Checksums only where an API requires them: TLS guards the bytes in transit, and a
        // cached code is checked by its image magic when read (CPU per code request).
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .timeout_config(
            // The connect (1 s) and read (2 s) timeouts live on the HTTP client (net.rs); the
            // connect timeout here only documents the same figure.
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(1))
                .operation_attempt_timeout(Duration::from_secs(2))
                .operation_timeout(Duration::from_secs(5))
                .build(),
        )
        .load()
        .await
}

/// The DynamoDB client of `sdk` (endpoint: `AWS_ENDPOINT_URL_DYNAMODB`, the config's
/// endpoint, or the region's).
pub fn dynamodb(sdk: &SdkConfig) -> DynamoDb {
    DynamoDb::new(signed::Signed::new(sdk, "dynamodb"))
}

/// The Secrets Manager client of `sdk` (endpoint: `AWS_ENDPOINT_URL_SECRETSMANAGER`, the
/// config's, or the region's).
pub fn secrets_manager(sdk: &SdkConfig) -> SecretsManager {
    SecretsManager::new(signed::Signed::new(sdk, "secretsmanager"))
}

/// The EventBridge client of `sdk` (endpoint: `AWS_ENDPOINT_URL_EVENTBRIDGE`, the config's, or
/// the region's).
pub fn eventbridge(sdk: &SdkConfig) -> EventBridge {
    EventBridge::new(signed::Signed::new(sdk, "events"))
}

/// A client of any JSON-protocol service: `service` is the signing name (`sqs`), `target` the
/// `x-amz-target` prefix (`AmazonSQS`). For set-up and inspection.
pub fn json_client(
    sdk: &SdkConfig,
    service: &'static str,
    content_type: &'static str,
    target: &'static str,
) -> JsonClient {
    JsonClient::new(
        signed::Signed::new(sdk, service),
        service,
        content_type,
        target,
    )
}

/// The S3 client of `sdk`: path-style addressing whenever a custom endpoint is set (local servers
/// have no virtual-host DNS for buckets), virtual-hosted in AWS.
pub fn s3(sdk: &SdkConfig) -> S3 {
    S3::new(signed::Signed::new(sdk, "s3"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Option<SdkConfig> {
        let vars: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        lambda_environment(|name| vars.get(name).cloned())
    }

    const LAMBDA: &[(&str, &str)] = &[
        ("AWS_LAMBDA_FUNCTION_NAME", "login"),
        ("AWS_REGION", "ap-shanghai"),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
        ("AWS_SESSION_TOKEN", "session"),
    ];

    async fn credentials(c: &SdkConfig) -> aws_credential_types::Credentials {
        use aws_credential_types::provider::ProvideCredentials;
        c.credentials_provider()
            .expect("a provider")
            .provide_credentials()
            .await
            .expect("credentials")
    }

    #[tokio::test]
    async fn a_lambda_functions_settings_come_from_its_environment() {
        let c = config(LAMBDA).expect("read from the environment");
        assert_eq!(c.region().map(|r| r.as_ref()), Some("ap-shanghai"));
        assert_eq!(c.endpoint_url(), None);
        let creds = credentials(&c).await;
        assert_eq!(creds.access_key_id(), "AKIDEXAMPLE");
        assert_eq!(creds.secret_access_key(), "secret");
        assert_eq!(creds.session_token(), Some("session"));

        // Long-term keys have no session token; AWS_DEFAULT_REGION stands in for AWS_REGION.
        let mut vars: Vec<_> = LAMBDA
            .iter()
            .filter(|(k, _)| *k != "AWS_SESSION_TOKEN" && *k != "AWS_REGION")
            .copied()
            .collect();
        vars.push(("AWS_DEFAULT_REGION", "eu-west-1"));
        vars.push(("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"));
        let c = config(&vars).expect("read from the environment");
        assert_eq!(c.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(c.endpoint_url(), Some("http://127.0.0.1:5000"));
        assert_eq!(credentials(&c).await.session_token(), None);

        vars.push(("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "TRUE"));
        assert_eq!(config(&vars).expect("read").endpoint_url(), None);
    }

    #[test]
    fn anything_missing_leaves_it_to_the_default_chains() {
        assert!(config(LAMBDA).is_some());
        for missing in [
            "AWS_LAMBDA_FUNCTION_NAME",
            "AWS_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            let vars: Vec<_> = LAMBDA
                .iter()
                .filter(|(k, _)| *k != missing)
                .copied()
                .collect();
            assert!(config(&vars).is_none(), "without {missing}");
            // An empty value is no value.
            let mut vars = vars;
            vars.push((missing, " "));
            assert!(config(&vars).is_none(), "with {missing} empty");
        }
    }
}
