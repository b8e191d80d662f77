//! A moto server shared by every test of one test binary, plus AWS settings
//! that point the SDK (in-process, or in a spawned function) at it.
//!
//! moto speaks the real DynamoDB and S3 wire protocols, so code under test
//! runs unchanged with only `AWS_ENDPOINT_URL` redirected.
//!
//! Lifetime: the server is started at most once per process and is *not*
//! owned by any tokio runtime (each `#[tokio::test]` has its own runtime,
//! which is dropped at the end of that test). It is spawned with
//! `std::process` and stopped by a tiny watchdog shell that waits on a pipe
//! from this process: when the test process exits — normally, by panic or by
//! SIGKILL — the kernel closes the pipe and the watchdog kills moto.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use tokio::sync::OnceCell;

/// Region used everywhere in the tests (moto accepts any).
pub const REGION: &str = "us-east-1";
/// Static credentials moto accepts (it does not check them).
pub const ACCESS_KEY_ID: &str = "test";
/// See [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "test";

/// How long a freshly spawned moto may take to answer HTTP.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Result of the one start attempt, kept so that a failure is reported at
/// once to every later test instead of each one waiting out the timeout.
static ENDPOINT: OnceCell<Result<String, String>> = OnceCell::const_new();

/// Keeps the write ends of the watchdogs' stdin pipes open for the life of the
/// process (one per server started); see the module docs.
static WATCHDOG_STDIN: OnceLock<Mutex<Vec<ChildStdin>>> = OnceLock::new();

/// Base URL (`http://127.0.0.1:PORT`, no trailing slash) of a running moto
/// server, started on first use and shared by all tests of this process.
///
/// Order: env `MOTO_ENDPOINT` if set (an externally managed server); else a
/// `moto_server` found via env `MOTO_SERVER_BIN`, `<workspace>/.venv/bin/`,
/// or `PATH`, spawned on a free loopback port.
///
/// # Panics
/// If no server can be found or started (the message says how to fix it).
pub async fn endpoint() -> String {
    let result = ENDPOINT
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("MOTO_ENDPOINT")
                && !url.trim().is_empty()
            {
                return Ok(url.trim().trim_end_matches('/').to_string());
            }
            // Blocking work (spawn + polling) off the async executor; the
            // child itself is not tied to this runtime.
            match tokio::task::spawn_blocking(start_moto).await {
                Ok(result) => result,
                Err(e) => Err(format!("moto start-up task failed: {e}")),
            }
        })
        .await;
    match result {
        Ok(url) => url.clone(),
        Err(msg) => panic!("{msg}"),
    }
}

/// Environment for a spawned function binary so its AWS SDK clients talk to
/// moto: `AWS_ENDPOINT_URL`, static credentials and region (plus
/// `AWS_DEFAULT_REGION` and `AWS_EC2_METADATA_DISABLED` so nothing ever
/// probes for real AWS settings).
pub async fn aws_env() -> Vec<(String, String)> {
    let endpoint = endpoint().await;
    [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ("AWS_REGION", REGION),
        ("AWS_DEFAULT_REGION", REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// SDK config for in-process clients (test setup and assertions) pointed at
/// `endpoint` with static test credentials.
///
/// Build clients per test: an SDK client's connection pool belongs to the
/// runtime it was first used on, and each `#[tokio::test]` has its own.
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    let credentials = aws_sdk_dynamodb::config::Credentials::new(
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
        None,
        None,
        "static",
    );
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(wxmp::net::aws_http_client())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .load()
        .await
}

/// A DynamoDB client for `config` (see [`sdk_config`]).
pub fn dynamodb_client(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

/// An S3 client for `config` using path-style addressing: virtual-host style
/// would need `BUCKET.127.0.0.1` to resolve, which it does not.
pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    let s3_config = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(s3_config)
}

/// `prefix` plus random hex, unique per call, usable as a DynamoDB table name
/// and as an S3 bucket name so tests sharing one moto never collide.
///
/// A `-` separator is inserted unless `prefix` is empty or already ends with
/// one. Result: lowercase, 3–63 chars, starting with a letter or digit.
///
/// # Panics
/// If `prefix` has characters other than `a-z`, `0-9`, `-`, starts with `-`,
/// or is longer than 40 chars.
pub fn unique_name(prefix: &str) -> String {
    assert!(
        prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "unique_name prefix {prefix:?} must be lowercase letters, digits and '-' (S3 bucket rules)"
    );
    assert!(
        !prefix.starts_with('-'),
        "unique_name prefix {prefix:?} must not start with '-'"
    );
    assert!(
        prefix.len() <= 40,
        "unique_name prefix {prefix:?} is too long"
    );
    let sep = if prefix.is_empty() || prefix.ends_with('-') {
        ""
    } else {
        "-"
    };
    format!("{prefix}{sep}{}", random_hex(8))
}

/// `n` random bytes as lowercase hex.
pub(crate) fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("OS random source unavailable");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The workspace root (parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate dir has a parent")
        .to_path_buf()
}

/// Locates `moto_server`: env `MOTO_SERVER_BIN`, then the workspace venv,
/// then `PATH`.
fn find_moto_server() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("MOTO_SERVER_BIN").filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    let venv = workspace_root().join(".venv/bin/moto_server");
    if is_executable(&venv) {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("moto_server"))
            .find(|p| is_executable(p))
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A loopback port that was free a moment ago. Racy by nature, so
/// [`start_moto`] retries with a new port if moto exits at start-up.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Spawns moto and waits until it answers HTTP. Blocking.
fn start_moto() -> Result<String, String> {
    start_moto_with(&[])
}

/// A moto server of its own (not the shared one), started with `env` (for example
/// `INITIAL_NO_AUTH_ACTION_COUNT`, which makes it check every request's SigV4 signature and IAM
/// policy after that many requests). Blocking; stopped when the test process exits.
pub fn start_private_moto(env: &[(&str, &str)]) -> Result<String, String> {
    start_moto_with(env)
}

fn start_moto_with(env: &[(&str, &str)]) -> Result<String, String> {
    let bin = find_moto_server().ok_or_else(|| {
        "moto_server not found (looked at $MOTO_SERVER_BIN, <workspace>/.venv/bin, $PATH): \
         run scripts/test.sh, which installs it, or set MOTO_ENDPOINT to a running server"
            .to_string()
    })?;
    let mut last_err = String::new();
    for _attempt in 0..3 {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("e2e-moto-{port}.log"));
        let mut child = spawn_moto(&bin, port, &log, env)?;
        arm_watchdog(child.id())?;
        match wait_until_ready(&mut child, port) {
            Ok(()) => return Ok(format!("http://127.0.0.1:{port}")),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: String = tail
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                last_err = format!(
                    "moto_server ({}) on port {port}: {e}; log {}:\n{tail}",
                    bin.display(),
                    log.display()
                );
            }
        }
    }
    Err(last_err)
}

fn spawn_moto(bin: &Path, port: u16, log: &Path, env: &[(&str, &str)]) -> Result<Child, String> {
    // Output goes to a log file rather than /dev/null so a failed start can
    // show why; moto logs one line per request, so it stays small.
    let out = std::fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))
}

/// Starts `sh -c 'read _; kill PID'` with its stdin piped from us and keeps
/// the pipe's write end for the rest of the process. Rust opens pipes with
/// `O_CLOEXEC`, so no other child inherits it and only our exit closes it.
fn arm_watchdog(pid: u32) -> Result<(), String> {
    let mut watchdog = Command::new("sh")
        .args(["-c", "read _ ; kill \"$0\" 2>/dev/null", &pid.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn watchdog sh: {e}"))?;
    let stdin = watchdog.stdin.take().expect("piped stdin");
    WATCHDOG_STDIN
        .get_or_init(|| Mutex::new(Vec::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(stdin);
    Ok(())
}

fn wait_until_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while start.elapsed() < STARTUP_TIMEOUT {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("exited during start-up with {status}"));
        }
        if answers_http(addr) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "did not answer HTTP within {}s",
        STARTUP_TIMEOUT.as_secs()
    ))
}

/// True if something at `addr` answers an HTTP request with a status line.
fn answers_http(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = "GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_valid_and_distinct() {
        let a = unique_name("users");
        let b = unique_name("users");
        assert_ne!(a, b);
        assert!(a.starts_with("users-"), "{a}");
        assert_eq!(unique_name("x-").len(), 2 + 16);
        for name in [a, b, unique_name(""), unique_name(&"p".repeat(40))] {
            assert!((3..=63).contains(&name.len()), "{name}");
            assert!(
                name.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'),
                "{name}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "lowercase")]
    fn unique_name_rejects_uppercase() {
        unique_name("Users");
    }

    #[tokio::test]
    async fn moto_answers_dynamodb_and_s3() {
        let endpoint = endpoint().await;
        assert!(endpoint.starts_with("http://"), "{endpoint}");
        let config = sdk_config(&endpoint).await;

        let ddb = dynamodb_client(&config);
        let table = unique_name("e2e-harness");
        ddb.create_table()
            .table_name(&table)
            .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
            .key_schema(
                aws_sdk_dynamodb::types::KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .attribute_definitions(
                aws_sdk_dynamodb::types::AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("CreateTable");
        let tables = ddb.list_tables().send().await.expect("ListTables");
        assert!(tables.table_names().contains(&table));

        let s3 = s3_client(&config);
        let bucket = unique_name("e2e-harness");
        s3.create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("CreateBucket");
        s3.put_object()
            .bucket(&bucket)
            .key("a/b.txt")
            .body(b"hello".to_vec().into())
            .send()
            .await
            .expect("PutObject");
        let got = s3
            .get_object()
            .bucket(&bucket)
            .key("a/b.txt")
            .send()
            .await
            .expect("GetObject");
        let bytes = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(&bytes[..], b"hello");
    }

    /// A second test in its own runtime sees the same server: proves the
    /// server is not tied to the runtime that started it.
    #[tokio::test]
    async fn moto_is_shared_across_runtimes() {
        let a = endpoint().await;
        let b = tokio::task::spawn_blocking(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(endpoint())
        })
        .await
        .unwrap();
        assert_eq!(a, b);
        let env = aws_env().await;
        assert!(env.contains(&("AWS_ENDPOINT_URL".to_string(), a.clone())));
        let config = sdk_config(&a).await;
        dynamodb_client(&config)
            .list_tables()
            .send()
            .await
            .expect("ListTables");
    }
}
