//! One HTTP stack for everything a function calls (WeChat, DynamoDB, S3): reqwest over rustls
//! (aws-lc-rs), with one TLS configuration per process whose root store is loaded at the first
//! certificate check rather than at start-up.
//!
//! Before this, reqwest and the AWS SDK each brought their own TLS stack, and each read the
//! system's CA bundle and every file under `/etc/ssl/certs` while the clients were being built:
//! twice per cold start, before the first poll. Now the AWS SDK sends its requests through reqwest
//! ([`aws_http_client`]), and the roots are read once, when the first HTTPS connection needs them.

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The system's roots (`SSL_CERT_FILE`/`SSL_CERT_DIR` or the usual places), read on the first
/// certificate check. Everything else a handshake needs comes from the provider, so a process that
/// only talks plain HTTP (a local run, the tests) never reads them.
#[derive(Debug)]
struct LazyRoots {
    provider: Arc<CryptoProvider>,
    verifier: OnceLock<Result<Arc<WebPkiServerVerifier>, String>>,
}

impl LazyRoots {
    fn verifier(&self) -> Result<&WebPkiServerVerifier, rustls::Error> {
        self.verifier
            .get_or_init(|| {
                let loaded = rustls_native_certs::load_native_certs();
                for e in &loaded.errors {
                    tracing::warn!(error = %e, "a system root certificate could not be read");
                }
                let mut roots = RootCertStore::empty();
                let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
                tracing::debug!(added, ignored, "system root certificates loaded");
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                    .build()
                    .map_err(|e| format!("no usable root certificates: {e}"))
            })
            .as_deref()
            .map_err(|e| rustls::Error::General(e.clone()))
    }
}

impl ServerCertVerifier for LazyRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The process's TLS configuration: clones share one verifier (one root store) and one session
/// cache. HTTP/1.1 only, as the clients are built.
pub fn tls_config() -> rustls::ClientConfig {
    static CONFIG: LazyLock<rustls::ClientConfig> = LazyLock::new(|| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = LazyRoots {
            provider: provider.clone(),
            verifier: OnceLock::new(),
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports the default TLS versions")
            .dangerous() // a custom verifier: the standard WebPKI one, built late
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    });
    CONFIG.clone()
}

/// A reqwest client on the process's TLS configuration.
pub fn client(builder: reqwest::ClientBuilder) -> reqwest::Client {
    builder
        .tls_backend_preconfigured(tls_config())
        .build()
        .expect("the HTTP client could not be built")
}

/// The AWS SDK's HTTP client: requests go through reqwest, on the shared TLS configuration.
/// Connect and read timeouts are set here (the SDK's own operation and attempt timeouts still
/// apply on top); no total timeout, which would cut an S3 body short.
pub fn aws_http_client() -> SharedHttpClient {
    let http = client(
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .read_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(50)),
    );
    SharedHttpClient::new(ReqwestHttpClient(SharedHttpConnector::new(
        ReqwestConnector(http),
    )))
}

#[derive(Debug, Clone)]
struct ReqwestConnector(reqwest::Client);

impl HttpConnector for ReqwestConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.0.clone();
        HttpConnectorFuture::new(async move {
            let request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::other(e.into(), None))?
                .map(reqwest::Body::wrap);
            let request = reqwest::Request::try_from(request)
                .map_err(|e| ConnectorError::other(e.into(), None))?;
            let response = client.execute(request).await.map_err(|e| {
                // The SDK retries timeouts and I/O errors as transient.
                if e.is_timeout() {
                    ConnectorError::timeout(e.into())
                } else if e.is_connect() || e.is_request() || e.is_body() {
                    ConnectorError::io(e.into())
                } else {
                    ConnectorError::other(e.into(), None)
                }
            })?;
            let response = http::Response::from(response).map(SdkBody::from_body_1_x);
            HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

#[derive(Debug)]
struct ReqwestHttpClient(SharedHttpConnector);

impl HttpClient for ReqwestHttpClient {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.clone()
    }
}
