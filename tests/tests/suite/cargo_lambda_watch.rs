//! The dev loop Rust Lambda users reach for: the real `login` and `qrcode` functions under
//! `cargo lambda watch` (its own Runtime API emulator and function-URL front end), against moto
//! and the WeChat sandbox. Its emulator sends `Lambda-Runtime-Deadline-Ms: 600000` (a duration
//! where AWS sends an epoch time); the functions must not take that as "no time left".
//!
//! Needs `cargo-lambda` (`scripts/test.sh` installs it into `.venv`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use e2e::TestEnv;
use serde_json::json;

fn cargo_lambda() -> PathBuf {
    let venv = e2e::moto::workspace_root().join(".venv/bin/cargo-lambda");
    if venv.is_file() {
        return venv;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("cargo-lambda"))
        .find(|p| p.is_file())
        .expect("cargo-lambda is needed: scripts/test.sh installs it into .venv (pip install cargo-lambda)")
}

/// `cargo lambda watch` and everything it starts, stopped together (its process group).
struct Watch {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", "--", &format!("-{pid}")])
                .status();
        }
    }
}

impl Watch {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[tokio::test]
async fn the_functions_work_under_cargo_lambda_watch() {
    let env = TestEnv::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let vars: Vec<String> = env
        .function_env()
        .await
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let log = std::env::temp_dir().join(format!("cargo-lambda-watch-{port}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = tokio::process::Command::new(cargo_lambda());
    cmd.args(["lambda", "watch", "--ignore-changes", "-A", "127.0.0.1"])
        .args(["-P", &port.to_string()])
        .args(["--env-var", &vars.join(",")])
        .current_dir(e2e::moto::workspace_root())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .kill_on_drop(true);
    let watch = Watch {
        child: cmd.spawn().expect("cargo lambda watch starts"),
        log,
    };
    let base = format!("http://127.0.0.1:{port}/lambda-url");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "not listening:\n{}", watch.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A login (the first invocation may compile the function).
    let code = env.sandbox().mint_login_code("watcher");
    let r = http
        .post(format!("{base}/login/login"))
        .body(json!({ "code": code }).to_string())
        .send()
        .await
        .expect("login answered");
    let status = r.status();
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(status, 200, "{body}\n{}", watch.log());
    let token = body["token"].as_str().unwrap().to_string();
    assert_eq!(body["openid"], env.sandbox().openid_for("watcher"));

    // A session check.
    let r = http
        .get(format!("{base}/login/session"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", watch.log());

    // A code, as image bytes.
    let r = http
        .post(format!("{base}/qrcode/qrcode"))
        .bearer_auth(&token)
        .body(r#"{"scene":"watch=1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", watch.log());
    assert_eq!(r.headers()["content-type"], "image/png");
    let bytes = r.bytes().await.unwrap();
    assert!(bytes.starts_with(b"\x89PNG"), "{} bytes", bytes.len());

    // A wrong method.
    let r = http
        .get(format!("{base}/login/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");

    // The odd deadline was noticed once, and cut nothing short.
    let log = watch.log();
    assert!(!log.contains("ran out of time"), "{log}");
    assert!(log.contains("deadline is not an epoch time"), "{log}");
}
