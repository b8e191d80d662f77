//! The real `local-server` binary on a free port, driven over HTTP: the embedded store with the
//! sandbox mounted under `/sandbox`, and DynamoDB mode on moto.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{KeyType, ScalarAttributeType, TableStatus, TimeToLiveStatus};
use e2e::binary_path;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use wechat_sandbox::{Sandbox, SandboxConfig};

/// A running `local-server`, killed when dropped (its output is printed if the test failed).
struct LocalServer {
    child: tokio::process::Child,
    base: String,
    http: reqwest::Client,
    output: Arc<Mutex<Vec<String>>>,
}

struct HttpReply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
}

impl HttpReply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A contract error: status, code, a JSON content type and a request id; the request id.
    fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        let ct = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok());
        assert_eq!(ct, Some("application/json"), "{}", self.text());
        let e = &self.json()["error"];
        assert_eq!(e["code"], code, "{}", self.text());
        let id = e["request_id"].as_str().expect("request_id");
        assert!(!id.is_empty());
        id.to_string()
    }
}

impl LocalServer {
    /// Starts the server with `vars` on top of a clean environment and waits until it answers.
    async fn start(vars: &[(String, String)]) -> LocalServer {
        for _ in 0..3 {
            let port = free_port();
            let mut server = Self::spawn(&port.to_string(), vars);
            match server.wait_until_ready().await {
                Ok(()) => return server,
                // Something took the port between our probe and the bind: try another.
                Err(out) if out.contains("in use") => continue,
                Err(out) => panic!("local-server did not start:\n{out}"),
            }
        }
        panic!("local-server could not bind a free port");
    }

    fn spawn(port: &str, vars: &[(String, String)]) -> LocalServer {
        let mut cmd = tokio::process::Command::new(binary_path("local-server"));
        cmd.env_clear()
            .env("PORT", port)
            .envs(
                ["PATH", "RUST_LOG"]
                    .iter()
                    .filter_map(|k| Some((k, std::env::var_os(k)?))),
            )
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn local-server");
        let output = Arc::new(Mutex::new(Vec::new()));
        collect_lines(child.stdout.take().unwrap(), output.clone());
        collect_lines(child.stderr.take().unwrap(), output.clone());
        LocalServer {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            output,
        }
    }

    /// Ready once the server says it listens on its own port (a probe alone could reach another
    /// test's server that took the port first); `Err(output)` if the process exits first.
    async fn wait_until_ready(&mut self) -> Result<(), String> {
        let listening = format!("local-server: {}", self.base);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.output().lines().any(|l| l.starts_with(&listening)) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(format!("exited with {status}:\n{}", self.output()));
            }
            if Instant::now() > deadline {
                return Err(format!("not listening within 30 s:\n{}", self.output()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> HttpReply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.body(body).send().await.expect("HTTP request");
        HttpReply {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.bytes().await.expect("response body"),
        }
    }

    async fn post_json(&self, path: &str, body: &Value) -> HttpReply {
        let headers = [("content-type", "application/json")];
        self.request("POST", path, &headers, body.to_string().into_bytes())
            .await
    }

    async fn login(&self, code: &str) -> HttpReply {
        self.post_json("/login", &json!({ "code": code })).await
    }

    async fn with_token(&self, method: &str, token: &str) -> HttpReply {
        let auth = format!("Bearer {token}");
        self.request(method, "/session", &[("authorization", &auth)], Vec::new())
            .await
    }

    async fn wait_for_output(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.output().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- local-server output -----\n{}", self.output());
        }
    }
}

fn collect_lines(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    sink: Arc<Mutex<Vec<String>>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn token_of(r: &HttpReply) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["token"].as_str().expect("token").to_string()
}

/// The identities the built-in sandbox (default configuration) hands out.
fn builtin_sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig::default())
}

#[tokio::test]
async fn embedded_mode_serves_logins_with_the_builtin_sandbox() {
    let server = LocalServer::start(&[]).await;
    let ids = builtin_sandbox();

    // GIVEN a made-up code, as a developer would type one.
    let r = server.login("alice.1").await;
    let token = token_of(&r);
    assert_eq!(r.json()["openid"], ids.openid_for("alice"));
    assert_eq!(r.json()["unionid"], ids.unionid_for("alice"));
    assert_eq!(r.json()["new_user"], true);

    let r = server.with_token("GET", &token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["openid"], ids.openid_for("alice"));

    // A code works once.
    let r = server.login("alice.1").await;
    let request_id = r.assert_error(401, "invalid_code");
    assert_eq!(r.json()["error"]["wechat_errcode"], 40163);
    assert!(
        server.wait_for_output(&request_id).await,
        "request id not logged"
    );

    // A code minted through the mounted sandbox, sent without a content type.
    let r = server
        .post_json("/sandbox/_sandbox/login_code", &json!({ "user": "x" }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let code = r.json()["code"].as_str().unwrap().to_string();
    let body = json!({ "code": code }).to_string().into_bytes();
    let r = server.request("POST", "/login", &[], body).await;
    let other = token_of(&r);
    assert_eq!(r.json()["openid"], ids.openid_for("x"));

    let r = server.with_token("DELETE", &token).await;
    assert_eq!(r.status, 204);
    server
        .with_token("GET", &token)
        .await
        .assert_error(401, "unauthenticated");
    assert_eq!(server.with_token("GET", &other).await.status, 200);
}

#[tokio::test]
async fn embedded_mode_refuses_bad_requests_with_json() {
    let server = LocalServer::start(&[]).await;
    server
        .request("GET", "/nope", &[], Vec::new())
        .await
        .assert_error(404, "not_found");
    let r = server.request("GET", "/login", &[], Vec::new()).await;
    r.assert_error(405, "method_not_allowed");
    assert_eq!(
        r.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    server
        .request("POST", "/login", &[], b"{".to_vec())
        .await
        .assert_error(400, "invalid_request");
    // Just over the handler's limit, and far over what the server reads at all.
    for size in [16 * 1024 + 1, 64 * 1024] {
        let r = server
            .request("POST", "/login", &[], vec![b' '; size])
            .await;
        r.assert_error(413, "payload_too_large");
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains("larger than 16384"), "{size}: {message}");
    }
}

#[tokio::test]
async fn dynamodb_mode_creates_the_table_and_serves_login() {
    let table = e2e::moto::unique_name("local");
    let mut vars = e2e::moto::aws_env().await;
    vars.push(("TABLE_NAME".into(), table.clone()));
    let server = LocalServer::start(&vars).await;

    let sdk = e2e::moto::sdk_config(&e2e::moto::endpoint().await).await;
    let ddb = e2e::moto::dynamodb_client(&sdk);
    let described = ddb.describe_table().table_name(&table).send().await;
    let t = described
        .expect("the server created the table")
        .table
        .unwrap();
    assert_eq!(t.table_status, Some(TableStatus::Active));
    let key = t.key_schema();
    assert_eq!(key.len(), 1);
    assert_eq!(key[0].attribute_name, "pk");
    assert_eq!(key[0].key_type, KeyType::Hash);
    let pk = t
        .attribute_definitions()
        .iter()
        .find(|a| a.attribute_name == "pk");
    assert_eq!(pk.unwrap().attribute_type, ScalarAttributeType::S);
    let ttl = ddb.describe_time_to_live().table_name(&table).send().await;
    let ttl = ttl
        .expect("DescribeTimeToLive")
        .time_to_live_description
        .unwrap();
    assert_eq!(ttl.time_to_live_status, Some(TimeToLiveStatus::Enabled));
    assert_eq!(ttl.attribute_name.as_deref(), Some("expires_at"));

    let r = server.login("bob.1").await;
    let token = token_of(&r);
    assert_eq!(r.json()["openid"], builtin_sandbox().openid_for("bob"));
    let pk = format!("session#{}", wxmp::session::key_for(&token));
    let item = ddb
        .get_item()
        .table_name(&table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(pk))
        .send()
        .await
        .expect("GetItem")
        .item;
    assert!(item.is_some(), "the session is in DynamoDB");

    // A second server on the existing table sees the same sessions.
    let second = LocalServer::start(&vars).await;
    let r = second.with_token("GET", &token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    drop(server);
    assert_eq!(second.with_token("DELETE", &token).await.status, 204);
}

#[tokio::test]
async fn a_bad_port_is_reported() {
    let mut server = LocalServer::spawn("not-a-port", &[]);
    let out = server
        .wait_until_ready()
        .await
        .expect_err("it must not start");
    assert!(out.contains("PORT must be a port number"), "{out}");
}

#[tokio::test]
async fn half_of_the_wechat_credentials_is_refused_not_taken_for_the_sandbox() {
    for (set, missing) in [
        ("WECHAT_APPID", "WECHAT_SECRET"),
        ("WECHAT_SECRET", "WECHAT_APPID"),
    ] {
        let vars = [(set.to_string(), "wx0123456789".to_string())];
        let mut server = LocalServer::spawn(&free_port().to_string(), &vars);
        let out = server
            .wait_until_ready()
            .await
            .expect_err("it must not start");
        assert!(out.contains(&format!("{missing} is required")), "{out}");
    }
}

#[tokio::test]
async fn a_closed_stdout_does_not_stop_the_server() {
    // GIVEN the server's stdout closed from the start (as when piped into `head`)
    let port = free_port();
    let mut child = tokio::process::Command::new(binary_path("local-server"))
        .env_clear()
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn local-server");
    drop(child.stdout.take());
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/session")).send().await.is_err() {
        assert!(Instant::now() < deadline, "never listened");
        assert!(child.try_wait().unwrap().is_none(), "it stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // WHEN requests come (each writes a log line to the closed stdout)
    for i in 0..5 {
        let r = http
            .post(format!("{base}/login"))
            .body(format!(r#"{{"code":"head.{i}"}}"#))
            .send()
            .await
            .expect("answered");
        // THEN each is served, and the server goes on
        assert_eq!(r.status(), 200);
    }
    assert!(child.try_wait().unwrap().is_none(), "still running");
}

/// The README's walk-through: the sandbox pushes an accepted popup (safe mode, XML) to the local
/// server's `/push`, the local bus keeps the grant, a send put on the bus as another service
/// would uses it, WeChat (the sandbox) receives the message, and the grant is gone.
#[tokio::test]
async fn a_pushed_popup_grant_is_used_by_one_send_on_the_local_bus() {
    let server = LocalServer::start(&[]).await;
    let token = token_of(&server.login("walkthrough.1").await);
    let auth = format!("Bearer {token}");
    let session = server
        .request("GET", "/session", &[("authorization", &auth)], Vec::new())
        .await;
    let openid = session.json()["openid"].as_str().unwrap().to_string();
    let template = "TPL_ORDER_SHIPPED_0000000000000000000000000";
    let push = server
        .post_json(
            "/sandbox/_sandbox/push",
            &json!({"url": format!("{}/push", server.base), "mode": "safe", "format": "xml",
                "message": {"ToUserName": "gh_sandbox000001", "FromUserName": openid,
                    "CreateTime": wxmp::now_secs(), "MsgType": "event",
                    "Event": "subscribe_msg_popup_event",
                    "List": [{"TemplateId": template, "SubscribeStatusString": "accept", "PopupScene": 0}]}}),
        )
        .await;
    assert_eq!(push.json(), json!({"status": 200, "body": "success"}));
    let grants = || async {
        server
            .request(
                "GET",
                "/subscriptions",
                &[("authorization", &auth)],
                Vec::new(),
            )
            .await
            .json()["grants"]
            .clone()
    };
    // The bus is asynchronous: the ledger follows within moments.
    let deadline = Instant::now() + Duration::from_secs(5);
    while grants().await == json!([]) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        grants().await,
        json!([{"template_id": template, "one_time": 1, "long_term": false}])
    );
    let queued = server
        .post_json(
            "/_local/events",
            &json!({"source": "shop", "detail-type": "wechat.subscribe.send",
                "detail": {"openid": openid, "template_id": template,
                    "data": {"thing1": {"value": "shipped"}}, "idempotency_key": "order-42"}}),
        )
        .await;
    assert_eq!(queued.status, 202);
    assert!(
        server.wait_for_output("subscribe message sent").await,
        "{}",
        server.output()
    );
    let sent = server
        .request(
            "GET",
            "/sandbox/_sandbox/subscribe_messages",
            &[],
            Vec::new(),
        )
        .await
        .json();
    assert_eq!(sent["messages"][0]["touser"], openid.as_str());
    assert_eq!(grants().await, json!([]));
}

/// An HTTPS media server (a private CA's certificate for `localhost`) that answers a HEAD with
/// `length` bytes; the CA's PEM to trust it.
async fn https_media_server(length: u64) -> (u16, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "media test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
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
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: image/jpeg\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n"
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, ca.pem())
}

/// Media over WeChat's 10 MB is refused before WeChat is called: the server asks the media's
/// host for its size (HEAD, over verified TLS).
#[tokio::test]
async fn media_over_ten_megabytes_is_refused_before_wechat_is_called() {
    let (big, ca) = https_media_server(10 * 1024 * 1024 + 1).await;
    let ca_file = std::env::temp_dir().join(format!("media-ca-{big}.pem"));
    std::fs::write(&ca_file, ca).unwrap();
    let server =
        LocalServer::start(&[("SSL_CERT_FILE".into(), ca_file.display().to_string())]).await;
    let token = token_of(&server.login("media.1").await);
    let auth = format!("Bearer {token}");
    let check = |url: String| {
        let body = json!({"media_url": url, "media_type": 2, "scene": 1}).to_string();
        let auth = auth.clone();
        let server = &server;
        async move {
            server
                .request(
                    "POST",
                    "/media/check",
                    &[("authorization", &auth)],
                    body.into_bytes(),
                )
                .await
        }
    };
    let r = check(format!("https://localhost:{big}/big.jpg")).await;
    r.assert_error(400, "invalid_request");
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("10 MB") && message.contains("media_url"),
        "{message}"
    );
    let (small, _) = https_media_server(1024).await;
    // The small server's certificate is from another CA: unverifiable, so its size is unknown
    // and WeChat decides (202). A size the server states within the limit passes the same way.
    let r = check(format!("https://localhost:{small}/small.jpg")).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let stats = server
        .request("GET", "/sandbox/_sandbox/stats", &[], Vec::new())
        .await
        .json();
    assert_eq!(stats["calls"]["/wxa/media_check_async"], 1, "{stats}");
}

/// Locally the EMF lines go to `METRICS_FILE` when it is set (as the functions write them to
/// their log in Lambda).
#[tokio::test]
async fn the_local_server_writes_its_metrics_to_metrics_file() {
    let file = std::env::temp_dir().join(format!("local-metrics-{}.jsonl", free_port()));
    let _ = std::fs::remove_file(&file);
    let server = LocalServer::start(&[("METRICS_FILE".into(), file.display().to_string())]).await;
    token_of(&server.login("metered.1").await);
    let _ = server.login("invalid-code").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let docs = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let docs: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let logins: f64 = docs.iter().filter_map(|d| d["Logins"].as_f64()).sum();
        if logins >= 2.0 || Instant::now() > deadline {
            break docs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let count = |outcome: &str| -> f64 {
        docs.iter()
            .filter(|d| d["outcome"] == outcome && d["function"] == "local-server")
            .filter_map(|d| d["Logins"].as_f64())
            .sum()
    };
    assert_eq!(
        (count("ok"), count("invalid_code")),
        (1.0, 1.0),
        "{docs:#?}"
    );
    assert!(
        docs.iter()
            .all(|d| d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "WeChatMiniProgram")
    );
    // Not on stdout then.
    assert!(!server.output().contains("_aws"), "{}", server.output());
}
