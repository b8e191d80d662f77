//! One HTTP stack for everything a function calls (WeChat, DynamoDB, S3, EventBridge): hyper
//! over rustls (aws-lc-rs), with one TLS configuration per process whose root store is loaded at
//! the first certificate check rather than at start-up. A request's calls go through
//! [`conn::Connections`] (kept HTTP/1.1 connections); reqwest, on the same TLS configuration,
//! serves the SDK's credential providers and the media size probe.
//!
//! Before this, reqwest and the AWS SDK each brought their own TLS stack, and each read the
//! system's CA bundle and every file under `/etc/ssl/certs` while the clients were being built:
//! twice per cold start, before the first poll. Now every client shares [`tls_config`] (the SDK's
//! through [`aws_http_client`]), and the roots are read once, when the first HTTPS connection
//! needs them.

pub mod conn;
pub(crate) mod h1;

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

type LoadRoots = Box<dyn Fn() -> Vec<CertificateDer<'static>> + Send + Sync>;

/// Roots read on the first certificate check (the system's in production: [`system_roots`]).
/// Everything else a handshake needs comes from the provider, so a process that only talks plain
/// HTTP (a local run, the tests) never reads them.
struct LazyRoots {
    provider: Arc<CryptoProvider>,
    load: LoadRoots,
    verifier: OnceLock<Arc<WebPkiServerVerifier>>,
}

impl std::fmt::Debug for LazyRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyRoots")
            .field("loaded", &self.verifier.get().is_some())
            .finish()
    }
}

/// The system's roots: `SSL_CERT_FILE`/`SSL_CERT_DIR`, or the usual places.
fn system_roots() -> Vec<CertificateDer<'static>> {
    let loaded = rustls_native_certs::load_native_certs();
    for e in &loaded.errors {
        tracing::warn!(error = %e, "a system root certificate could not be read");
    }
    loaded.certs
}

impl LazyRoots {
    /// The verifier, built on first use. A failed build is not kept: the next handshake tries
    /// again, so an instance whose first read failed does not refuse every server until recycled.
    fn verifier(&self) -> Result<&WebPkiServerVerifier, rustls::Error> {
        if let Some(v) = self.verifier.get() {
            return Ok(v);
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates((self.load)());
        tracing::debug!(added, ignored, "root certificates loaded");
        let built =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("no usable root certificates: {e}")))?;
        // Two first handshakes at once may both build; the first one stored is used by all.
        let _ = self.verifier.set(built);
        Ok(self.verifier.get().expect("set above"))
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
    static CONFIG: LazyLock<rustls::ClientConfig> =
        LazyLock::new(|| config_with(Box::new(system_roots)));
    CONFIG.clone()
}

fn config_with(load: LoadRoots) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = LazyRoots {
        provider: provider.clone(),
        load,
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
}

/// A reqwest client on the process's TLS configuration.
pub fn client(builder: reqwest::ClientBuilder) -> reqwest::Client {
    builder
        .tls_backend_preconfigured(tls_config())
        .build()
        .expect("the HTTP client could not be built")
}

/// The HTTP client for AWS calls, on the shared TLS configuration. Connect (1 s) and read (2 s)
/// timeouts; no total timeout (each call sets its own). As the SDK's own client: no redirects
/// followed (AWS reports them), no proxy from the environment.
pub fn aws_reqwest_client() -> reqwest::Client {
    client(
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .read_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(50))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy(),
    )
}

/// The same client as the AWS SDK's HTTP client, for what the `SdkConfig` itself calls
/// (credential providers: STS, SSO, the container and instance metadata endpoints). The SDK's
/// attempt and operation timeouts apply on top.
pub fn aws_http_client() -> SharedHttpClient {
    SharedHttpClient::new(ReqwestHttpClient(SharedHttpConnector::new(
        ReqwestConnector(aws_reqwest_client()),
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    use super::*;

    /// A private CA and a certificate for `localhost` signed by it.
    struct Pki {
        ca: CertificateDer<'static>,
        cert: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
    }

    fn pki() -> Pki {
        static CAS: AtomicUsize = AtomicUsize::new(0);
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let n = CAS.fetch_add(1, Ordering::SeqCst);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("test CA {n}"));
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        Pki {
            ca: ca.der().clone(),
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }

    /// TLS on the server's side, presenting `pki`'s certificate.
    fn acceptor(pki: &Pki) -> TlsAcceptor {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.cert.clone()], pki.key.clone_key())
        .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }

    /// An HTTPS server on 127.0.0.1 presenting `pki`'s certificate; answers every request "ok".
    async fn https_server(pki: &Pki) -> u16 {
        let acceptor = acceptor(pki);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        port
    }

    /// An HTTPS server answering `per_connection` requests on each connection ("ok", kept
    /// alive), then closing it with TLS's close; counts connections.
    async fn https_keep_alive_server(pki: &Pki, per_connection: usize) -> (u16, Arc<AtomicUsize>) {
        let acceptor = acceptor(pki);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = Arc::new(AtomicUsize::new(0));
        let counter = conns.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    for _ in 0..per_connection {
                        if !h1::read_request_head(&mut tls, &mut buf).await {
                            return;
                        }
                        let _ = tls
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                    }
                    let _ = tls.shutdown().await;
                });
            }
        });
        (port, conns)
    }

    fn client_on(config: rustls::ClientConfig) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn roots_are_read_once_at_the_first_certificate_check() {
        let pki = pki();
        let port = https_server(&pki).await;
        let loads = Arc::new(AtomicUsize::new(0));
        let (counter, ca) = (loads.clone(), pki.ca.clone());
        let config = config_with(Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            vec![ca.clone()]
        }));

        let first = client_on(config.clone());
        let second = client_on(config);
        assert_eq!(
            loads.load(Ordering::SeqCst),
            0,
            "building clients reads no roots"
        );

        let url = format!("https://localhost:{port}/");
        for client in [&first, &second, &first] {
            let r = client.get(&url).send().await.expect("trusted server");
            assert_eq!(r.status(), 200);
            assert_eq!(r.text().await.unwrap(), "ok");
        }
        assert_eq!(
            loads.load(Ordering::SeqCst),
            1,
            "one root store for the process"
        );
    }

    #[tokio::test]
    async fn a_failed_root_load_is_tried_again_at_the_next_handshake() {
        let pki = pki();
        let port = https_server(&pki).await;
        let loads = Arc::new(AtomicUsize::new(0));
        let (counter, ca) = (loads.clone(), pki.ca.clone());
        // The first read finds no roots (a transient failure); the second finds the CA.
        let config = config_with(Box::new(move || {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                Vec::new()
            } else {
                vec![ca.clone()]
            }
        }));
        let client = client_on(config);
        let url = format!("https://localhost:{port}/");
        let e = client.get(&url).send().await.expect_err("no roots yet");
        assert!(
            conn::error_chain(&e).contains("no usable root certificates"),
            "{}",
            conn::error_chain(&e)
        );
        let r = client.get(&url).send().await.expect("roots read again");
        assert_eq!(r.status(), 200);
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_certificate_from_an_unknown_issuer_is_refused() {
        let pki = pki();
        let port = https_server(&pki).await;
        let other_ca = self::pki().ca;
        let config = config_with(Box::new(move || vec![other_ca.clone()]));
        let e = client_on(config)
            .get(format!("https://localhost:{port}/"))
            .send()
            .await
            .expect_err("an unknown issuer must be refused");
        assert!(
            conn::error_chain(&e).contains("invalid peer certificate: UnknownIssuer"),
            "{}",
            conn::error_chain(&e)
        );

        // The process's own configuration (the system's roots) refuses it too.
        let e = client(reqwest::Client::builder())
            .get(format!("https://localhost:{port}/"))
            .send()
            .await
            .expect_err("a private CA is not a system root");
        // (A machine without any system roots refuses every server.)
        let refused = conn::error_chain(&e);
        assert!(
            refused.contains("invalid peer certificate: UnknownIssuer")
                || refused.contains("no usable root certificates"),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn a_certificate_for_another_name_is_refused() {
        let pki = pki();
        let port = https_server(&pki).await;
        let ca = pki.ca.clone();
        let config = config_with(Box::new(move || vec![ca.clone()]));
        let e = client_on(config)
            .get(format!("https://127.0.0.1:{port}/"))
            .send()
            .await
            .expect_err("the certificate names localhost only");
        assert!(
            conn::error_chain(&e).contains("not valid for name"),
            "{}",
            conn::error_chain(&e)
        );
    }

    /// The AWS calls' own connections (`aws::conn`) verify servers with the same configuration.
    #[tokio::test]
    async fn aws_connections_use_tls_with_the_process_roots() {
        use crate::net::conn::Connections;
        let pki = pki();
        let port = https_server(&pki).await;
        let url = reqwest::Url::parse(&format!("https://localhost:{port}/")).unwrap();
        async fn get(c: &Connections, url: &reqwest::Url) -> Result<h1::Answer, conn::Failed> {
            let (headers, body) = (http::HeaderMap::new(), bytes::Bytes::new());
            c.send(
                &http::Method::GET,
                url,
                headers,
                body,
                Duration::from_secs(2),
            )
            .await
        }
        let send = |c: Connections| {
            let url = url.clone();
            async move { get(&c, &url).await }
        };
        let ca = pki.ca.clone();
        let trusted = Connections::new(
            config_with(Box::new(move || vec![ca.clone()])),
            Duration::from_secs(1),
        );
        let answer = send(trusted).await.expect("a trusted server");
        assert_eq!(
            (answer.status.as_u16(), &answer.body[..]),
            (200, &b"ok"[..])
        );

        // A TLS connection is kept, and the server's close of it seen before the next call.
        let (port, conns) = https_keep_alive_server(&pki, 2).await;
        let url = reqwest::Url::parse(&format!("https://localhost:{port}/")).unwrap();
        let ca = pki.ca.clone();
        let kept = Connections::new(
            config_with(Box::new(move || vec![ca.clone()])),
            Duration::from_secs(1),
        );
        for i in 1..=5 {
            let answer = get(&kept, &url)
                .await
                .unwrap_or_else(|e| panic!("call {i}: {e:?}"));
            assert_eq!(&answer.body[..], b"ok");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 3, "two calls a connection");

        let other_ca = self::pki().ca;
        let untrusted = Connections::new(
            config_with(Box::new(move || vec![other_ca.clone()])),
            Duration::from_secs(1),
        );
        let e = send(untrusted).await.expect_err("an unknown issuer");
        assert!(!e.timeout && e.message.contains("UnknownIssuer"), "{e:?}");
    }
}
