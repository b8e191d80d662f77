//! The benchmark: prints every figure beside its target. Run it with `scripts/bench.sh`, which
//! builds the release binaries first and provides the moto server.
//!
//! - cold start of the release `login` and `qrcode` binaries under a local Lambda Runtime API;
//! - warm handler overhead (time in our code, upstream waits subtracted), p50/p99, requests/s;
//! - peak RSS of a warm function after N requests; binary and zip sizes;
//! - upstream calls per request (WeChat, DynamoDB).
//!
//! `BENCH_QUICK=1` runs a tenth of the iterations (a smoke run, figures less stable).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use e2e::{FunctionProcess, Options, RuntimeApi, TestEnv, V2Response, call_app, v2_event};
use serde_json::json;
use wxmp::App;
use wxmp::secret::Secret;
use wxmp::store::*;

fn quick() -> bool {
    std::env::var_os("BENCH_QUICK").is_some()
}

fn n(full: usize) -> usize {
    if quick() { (full / 10).max(3) } else { full }
}

fn row(name: &str, value: String, target: &str, ok: Option<bool>) {
    let verdict = match ok {
        Some(true) => "ok",
        Some(false) => "MISSED",
        None => "",
    };
    println!("  {name:<50} {value:>12}   target {target:<10} {verdict}");
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// A store that counts reads and writes and the time spent in them.
struct Metered {
    inner: Arc<dyn Store>,
    reads: AtomicU64,
    token_reads: AtomicU64,
    writes: AtomicU64,
    nanos: AtomicU64,
}

impl Metered {
    fn new(inner: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Metered {
            inner,
            reads: AtomicU64::new(0),
            token_reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            nanos: AtomicU64::new(0),
        })
    }
    fn counts(&self) -> (u64, u64) {
        (
            self.reads.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
        )
    }
    fn time(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
    async fn timed<T>(&self, write: bool, f: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let out = f.await;
        self.nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let counter = if write { &self.writes } else { &self.reads };
        counter.fetch_add(1, Ordering::Relaxed);
        out
    }
}

#[async_trait]
impl SessionStore for Metered {
    async fn put_session(&self, k: &str, r: &SessionRecord) -> Result<(), StoreError> {
        self.timed(true, self.inner.put_session(k, r)).await
    }
    async fn get_session(&self, k: &str, now: u64) -> Result<Option<SessionRecord>, StoreError> {
        self.timed(false, self.inner.get_session(k, now)).await
    }
    async fn delete_session(&self, k: &str) -> Result<(), StoreError> {
        self.timed(true, self.inner.delete_session(k)).await
    }
}

#[async_trait]
impl UserStore for Metered {
    async fn record_login(&self, o: &str, u: Option<&str>, now: u64) -> Result<bool, StoreError> {
        self.timed(true, self.inner.record_login(o, u, now)).await
    }
}

#[async_trait]
impl TokenStore for Metered {
    async fn get_token(&self, k: &str) -> Result<Option<StoredToken>, StoreError> {
        self.token_reads.fetch_add(1, Ordering::Relaxed);
        self.timed(false, self.inner.get_token(k)).await
    }
    async fn put_token(&self, k: &str, t: &StoredToken) -> Result<(), StoreError> {
        self.timed(true, self.inner.put_token(k, t)).await
    }
    async fn delete_token_if(&self, k: &str, t: &Secret) -> Result<bool, StoreError> {
        self.timed(true, self.inner.delete_token_if(k, t)).await
    }
    async fn try_lease(&self, name: &str, h: &str, now: u64, ttl: u64) -> Result<bool, StoreError> {
        self.timed(true, self.inner.try_lease(name, h, now, ttl))
            .await
    }
    async fn renew_lease(
        &self,
        name: &str,
        h: &str,
        now: u64,
        ttl: u64,
    ) -> Result<bool, StoreError> {
        self.timed(true, self.inner.renew_lease(name, h, now, ttl))
            .await
    }
    async fn release_lease(&self, name: &str, h: &str) -> Result<(), StoreError> {
        self.timed(true, self.inner.release_lease(name, h)).await
    }
    async fn take_quota(&self, name: &str, limit: u32, exp: u64) -> Result<bool, StoreError> {
        self.timed(true, self.inner.take_quota(name, limit, exp))
            .await
    }
}

/// An app like `env.app` but on `store`, metered.
fn metered_app(env: &TestEnv, store: Arc<dyn Store>) -> (App, Arc<Metered>) {
    let metered = Metered::new(store);
    let app =
        App::new(env.app.config.clone(), metered.clone()).with_code_cache(env.app.codes.clone());
    (app, metered)
}

async fn upstream_calls() {
    println!("\n== upstream calls per request (moto DynamoDB and S3, sandbox WeChat)");
    let env = TestEnv::with(Options {
        bucket: true,
        ..Default::default()
    })
    .await;
    let (app, m) = metered_app(&env, env.store.clone());
    let wechat = |app: &App| app.wechat.meter().snapshot().0;

    let (w0, (r0, wr0)) = (wechat(&app), m.counts());
    let token = e2e::env::login_with_code(&app, "bench-user.1").await;
    let (w1, (r1, wr1)) = (wechat(&app), m.counts());
    row(
        "login: WeChat calls",
        format!("{}", w1 - w0),
        "1",
        Some(w1 - w0 == 1),
    );
    // A session item (keyed by the token's hash, as the contract says) and the user record
    // (first seen, last login, as the login issue asks): two items, so two writes.
    row(
        "login: DynamoDB writes (session + user record)",
        format!("{}", wr1 - wr0),
        "1",
        Some(wr1 - wr0 == 1),
    );
    row(
        "login: DynamoDB reads",
        format!("{}", r1 - r0),
        "0",
        Some(r1 == r0),
    );

    // Warm the token first: the first code of an instance reads (or fetches) it.
    let first = call_app(
        &app,
        "POST",
        "/qrcode",
        Some(&token),
        br#"{"scene":"warmup"}"#,
    )
    .await;
    assert_eq!(first.status, 200);
    let (w0, (r0, _)) = (wechat(&app), m.counts());
    let token_reads0 = m.token_reads.load(Ordering::Relaxed);
    let miss = call_app(
        &app,
        "POST",
        "/qrcode",
        Some(&token),
        br#"{"scene":"bench-1"}"#,
    )
    .await;
    assert_eq!(miss.headers.get("x-cache").unwrap(), "miss");
    let (w1, _) = (wechat(&app), m.counts());
    row(
        "code miss: WeChat calls",
        format!("{}", w1 - w0),
        "1",
        Some(w1 - w0 == 1),
    );
    // Wait for the background upload, then ask again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hit = call_app(
        &app,
        "POST",
        "/qrcode",
        Some(&token),
        br#"{"scene":"bench-1"}"#,
    )
    .await;
    assert_eq!(hit.headers.get("x-cache").unwrap(), "hit");
    let (w2, (r2, _)) = (wechat(&app), m.counts());
    row(
        "code hit: WeChat calls",
        format!("{}", w2 - w1),
        "0",
        Some(w2 == w1),
    );
    let token_reads = m.token_reads.load(Ordering::Relaxed) - token_reads0;
    row(
        "warm code (miss + hit): DynamoDB reads for the token",
        format!("{token_reads}"),
        "0",
        Some(token_reads == 0),
    );
    row(
        "warm code (miss + hit): other DynamoDB reads",
        format!("{}", r2 - r0 - token_reads),
        "(2 bearer checks)",
        None,
    );

    let (w0, (r0, wr0)) = (wechat(&app), m.counts());
    wxmp::refresher::run_with_interval(&app, wxmp::refresher::DEFAULT_INTERVAL)
        .await
        .expect("refresh runs");
    let (w1, (r1, wr1)) = (wechat(&app), m.counts());
    row(
        "refresher run (stable): WeChat calls",
        format!("{}", w1 - w0),
        "1",
        Some(w1 - w0 == 1),
    );
    row(
        "refresher run: DynamoDB reads + writes",
        format!("{} + {}", r1 - r0, wr1 - wr0),
        "-",
        None,
    );
}

/// Runs `count` requests one after another on this (single) thread; returns the overheads
/// (total minus upstream waits) and the wall time.
async fn overhead_run(
    app: &App,
    m: &Metered,
    count: usize,
    mut request: impl FnMut(usize) -> (&'static str, &'static str, Option<String>, Vec<u8>),
) -> (Vec<Duration>, Duration) {
    let mut out = Vec::with_capacity(count);
    let wall = Instant::now();
    for i in 0..count {
        let (method, path, bearer, body) = request(i);
        let (_, wechat0) = app.wechat.meter().snapshot();
        let store0 = m.time();
        let started = Instant::now();
        let r = call_app(app, method, path, bearer.as_deref(), &body).await;
        let total = started.elapsed();
        assert!(r.status < 300, "{method} {path}: {}", r.status);
        let upstream = (app.wechat.meter().snapshot().1 - wechat0) + (m.time() - store0);
        out.push(total.saturating_sub(upstream));
    }
    let wall = wall.elapsed();
    out.sort();
    (out, wall)
}

async fn warm_overhead() {
    let count = n(10_000);
    println!(
        "\n== warm handler overhead, {count} requests each, one core (upstream waits subtracted)"
    );
    let env = TestEnv::new().await;
    let (app, m) = metered_app(&env, Arc::new(MemoryStore::new()));
    let token = e2e::env::login_with_code(&app, "overhead.0").await;
    let get = || ("GET", "/session", Some(token.clone()), Vec::new());

    let (o, wall) = overhead_run(&app, &m, count, |_| get()).await;
    row(
        "GET /session (embedded store) p50",
        ms(pct(&o, 0.5)),
        "-",
        None,
    );
    row(
        "GET /session (embedded store) p99",
        ms(pct(&o, 0.99)),
        "< 1 ms",
        Some(pct(&o, 0.99) < Duration::from_millis(1)),
    );
    let rps = count as f64 / wall.as_secs_f64();
    row(
        "GET /session requests/s on one core",
        format!("{rps:.0}"),
        "-",
        None,
    );

    let (o, _) = overhead_run(&app, &m, count, |i| {
        (
            "POST",
            "/login",
            None,
            json!({"code": format!("o{i}.x")}).to_string().into_bytes(),
        )
    })
    .await;
    row("POST /login p50", ms(pct(&o, 0.5)), "-", None);
    row(
        "POST /login p99",
        ms(pct(&o, 0.99)),
        "< 1 ms",
        Some(pct(&o, 0.99) < Duration::from_millis(1)),
    );

    let (o, _) = overhead_run(&app, &m, count, |i| {
        (
            "POST",
            "/qrcode",
            Some(token.clone()),
            json!({"scene": format!("s{i}")}).to_string().into_bytes(),
        )
    })
    .await;
    row("POST /qrcode (no cache) p50", ms(pct(&o, 0.5)), "-", None);
    row(
        "POST /qrcode (no cache) p99",
        ms(pct(&o, 0.99)),
        "< 1 ms",
        Some(pct(&o, 0.99) < Duration::from_millis(1)),
    );

    // The same through the DynamoDB client against moto: the SDK's own work is in "upstream".
    let moto_count = n(1_000);
    let (app, m) = metered_app(&env, env.store.clone());
    let token = e2e::env::login_with_code(&app, "overhead-moto.0").await;
    let (o, wall) = overhead_run(&app, &m, moto_count, |_| {
        ("GET", "/session", Some(token.clone()), Vec::new())
    })
    .await;
    row(
        &format!("GET /session on moto p50 ({moto_count} req)"),
        ms(pct(&o, 0.5)),
        "-",
        None,
    );
    row(
        "GET /session on moto p99",
        ms(pct(&o, 0.99)),
        "< 1 ms",
        Some(pct(&o, 0.99) < Duration::from_millis(1)),
    );
    row(
        "GET /session on moto, total latency mean",
        ms(wall / moto_count as u32),
        "-",
        None,
    );
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| e2e::moto::workspace_root().join("target"))
}

fn release_binary(name: &str) -> PathBuf {
    let p = target_dir().join("release").join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/bench.sh (it builds the release binaries)",
        p.display()
    );
    p
}

async fn cold_starts() {
    let starts = n(20).max(5);
    println!("\n== cold start of the release binaries, {starts} starts each (moto + sandbox)");
    let env = TestEnv::new().await;
    let fenv = env.function_env().await;
    let token = env.login("cold").await;
    for name in ["login", "qrcode"] {
        let mut init = Vec::new();
        let mut first = Vec::new();
        for i in 0..starts {
            let api = RuntimeApi::start().await;
            let spawned = Instant::now();
            let _f = FunctionProcess::spawn(&release_binary(name), &api, &fenv);
            let polled = api
                .wait_for_next_poll(Duration::from_secs(20))
                .await
                .expect("function starts");
            init.push(polled - spawned);
            let event = if name == "login" {
                let code = env.sandbox().mint_login_code(&format!("cold{i}"));
                v2_event(
                    "POST",
                    "/login",
                    &[],
                    Some(json!({ "code": code }).to_string().as_bytes()),
                    false,
                )
            } else {
                let auth = format!("Bearer {token}");
                v2_event(
                    "POST",
                    "/qrcode",
                    &[("authorization", &auth)],
                    Some(format!(r#"{{"scene":"cold{i}"}}"#).as_bytes()),
                    false,
                )
            };
            let r = V2Response::parse(&api.invoke(event).await.expect("invocation"));
            assert_eq!(r.status, 200);
            first.push(spawned.elapsed());
        }
        init.sort();
        first.sort();
        row(
            &format!("{name}: init (exec to first poll) median"),
            ms(pct(&init, 0.5)),
            "< 30 ms",
            Some(pct(&init, 0.5) < Duration::from_millis(30)),
        );
        row(
            &format!("{name}: init p90"),
            ms(pct(&init, 0.9)),
            "< 30 ms",
            Some(pct(&init, 0.9) < Duration::from_millis(30)),
        );
        row(
            &format!("{name}: exec to first response median"),
            ms(pct(&first, 0.5)),
            "-",
            None,
        );
        row(
            &format!("{name}: exec to first response p90"),
            ms(pct(&first, 0.9)),
            "-",
            None,
        );
    }
}

fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time the process has used, all its threads (what Lambda bills): the first field of each
/// thread's `/proc/<pid>/task/<tid>/schedstat`, in nanoseconds.
fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

async fn peak_rss() {
    let count = n(10_000);
    println!(
        "\n== peak RSS of the release login binary after {count} requests (GET /session on moto)"
    );
    let env = TestEnv::new().await;
    let token = env.login("rss").await;
    let api = RuntimeApi::start().await;
    let f = FunctionProcess::spawn(&release_binary("login"), &api, &env.function_env().await);
    api.wait_for_next_poll(Duration::from_secs(20))
        .await
        .expect("function starts");
    let pid = f.pid().expect("running");
    let auth = format!("Bearer {token}");
    let event = v2_event("GET", "/session", &[("authorization", &auth)], None, false);
    let after_first = {
        api.invoke(event.clone()).await.expect("invocation");
        vm_hwm_kb(pid).unwrap_or(0)
    };
    let cpu_before = cpu_ns(pid).unwrap_or(0);
    for _ in 1..count {
        let r = V2Response::parse(&api.invoke(event.clone()).await.expect("invocation"));
        assert_eq!(r.status, 200);
    }
    let cpu_per_request = (cpu_ns(pid).unwrap_or(0) - cpu_before) as f64 / (count - 1) as f64;
    let peak = vm_hwm_kb(pid).unwrap_or(0);
    row(
        "CPU per warm GET /session, the whole process (all threads, schedstat)",
        format!("{:.3} ms", cpu_per_request / 1e6),
        "-",
        None,
    );
    row(
        "peak RSS after the first request",
        format!("{:.1} MB", after_first as f64 / 1024.0),
        "-",
        None,
    );
    row(
        &format!("peak RSS after {count} requests"),
        format!("{:.1} MB", peak as f64 / 1024.0),
        "< 32 MB",
        Some(peak < 32 * 1024),
    );
}

fn zipped_size(path: &std::path::Path) -> Option<u64> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import io,sys,zipfile\nb=io.BytesIO()\nz=zipfile.ZipFile(b,'w',zipfile.ZIP_DEFLATED)\nz.write(sys.argv[1],'bootstrap')\nz.close()\nprint(len(b.getvalue()))"])
        .arg(path)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn sizes() {
    println!("\n== sizes (release profile: opt-level s, lto, codegen-units 1, panic abort, strip)");
    for name in ["login", "qrcode", "token-refresher"] {
        // The target applies to what is deployed: the cargo lambda build (scripts/build-lambda.sh)
        // when there is one, else the host release binary.
        let arm = target_dir().join("lambda").join(name).join("bootstrap");
        let deployed = arm.exists();
        let host = release_binary(name);
        let size = std::fs::metadata(&host).map(|m| m.len()).unwrap_or(0);
        let (target, ok) = if deployed {
            ("-", None)
        } else {
            ("< 8 MB", Some(size < 8_000_000))
        };
        row(
            &format!("{name}: binary (host x86_64)"),
            format!("{:.2} MB", size as f64 / 1e6),
            target,
            ok,
        );
        if let Some(z) = zipped_size(&host) {
            row(
                &format!("{name}: zip (host x86_64)"),
                format!("{:.2} MB", z as f64 / 1e6),
                "-",
                None,
            );
        }
        if let Ok(m) = std::fs::metadata(&arm) {
            row(
                &format!("{name}: bootstrap (cargo lambda build)"),
                format!("{:.2} MB", m.len() as f64 / 1e6),
                "< 8 MB",
                Some(m.len() < 8_000_000),
            );
            if let Some(z) = zipped_size(&arm) {
                row(
                    &format!("{name}: bootstrap zip (cargo lambda build)"),
                    format!("{:.2} MB", z as f64 / 1e6),
                    "-",
                    None,
                );
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    println!(
        "benchmark{}",
        if quick() {
            " (quick: a tenth of the iterations)"
        } else {
            ""
        }
    );
    sizes();
    upstream_calls().await;
    warm_overhead().await;
    cold_starts().await;
    peak_rss().await;
}
