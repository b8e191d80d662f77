//! AWS clients, built from one `SdkConfig` per cold start, with bounded timeouts so a slow
//! dependency answers 503 instead of running into the Lambda timeout. Their requests go through
//! the process's one HTTP stack (`net`).

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

pub fn dynamodb(sdk: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(sdk)
}

/// S3 with path-style addressing whenever a custom endpoint is set (local servers have no
/// virtual-host DNS for buckets).
pub fn s3(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(sdk.endpoint_url().is_some())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}
