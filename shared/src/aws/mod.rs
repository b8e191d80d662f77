//! AWS clients, built from one `SdkConfig` per cold start (credentials, region, endpoint), with
//! bounded timeouts so a slow dependency answers 503 instead of running into the Lambda timeout.
//!
//! DynamoDB and S3 are called through small clients of our own ([`DynamoDb`], [`S3`]): a request
//! signed with SigV4 (`sigv4`: the SDK's `aws-sigv4` gives the same signatures, checked in its
//! tests, but re-derives the day's key and allocates its way through every call) and sent on the process's one HTTP stack
//! (`net`), with the SDK's retry rules (transient errors and throttling, three attempts, jittered
//! backoff). The functions make a handful of item and object calls; the SDK's generic request
//! pipeline cost more CPU than everything else a request does (README, Performance). The
//! `SdkConfig` still resolves credentials and region exactly as the SDK does, and its HTTP client
//! serves the credential providers that need one.

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

pub async fn sdk_config() -> SdkConfig {
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
