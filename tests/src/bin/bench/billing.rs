//! What Lambda bills, measured the way Lambda runs a function: the real release binaries (and the
//! Python peer, and an echo floor) polling a Runtime API emulator, against moto and the WeChat
//! sandbox. Per scenario:
//!
//! - init: exec to the first poll of `/next` (Lambda's init phase);
//! - first response: exec to the first invocation's answer (what the first user waits), and the
//!   same less the time moto spent answering the process's calls (what is the runner's own);
//! - CPU per warm invocation: the whole process, all threads (`/proc/<pid>/task/*/schedstat`),
//!   over the warm run, divided by its invocations: what Lambda bills beyond wall time;
//! - warm p50/p99: one invocation's round trip through the emulator;
//! - peak RSS (`VmHWM`) after the warm run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::{FunctionProcess, RuntimeApi, TestEnv, V2Response, v2_event};
use serde_json::{Value, json};

use crate::report::{ms, n, pct, release_binary, row, target_dir};

/// What runs as the function.
#[derive(Clone, Copy)]
pub enum Runner {
    /// A release binary of this workspace.
    Rust(&'static str),
    /// A binary of another build: `target/<dir>/<name>` (`BENCH_VS`).
    Built(&'static str, &'static str),
    /// `bench/python-login/app.py` under awslambdaric, in the project's `.venv`.
    Python,
}

impl Runner {
    fn spawn(self, api: &RuntimeApi, env: &[(String, String)]) -> FunctionProcess {
        match self {
            Runner::Rust(name) => FunctionProcess::spawn(&release_binary(name), api, env),
            Runner::Built(dir, name) => {
                let path = target_dir().join(dir).join(name);
                assert!(path.exists(), "{} is missing", path.display());
                FunctionProcess::spawn(&path, api, env)
            }
            Runner::Python => {
                let root = e2e::moto::workspace_root();
                let task_root = root.join("bench").join("python-login");
                let python = root.join(".venv").join("bin").join("python");
                let mut env = env.to_vec();
                for (k, v) in [
                    ("LAMBDA_TASK_ROOT", task_root.display().to_string()),
                    ("PYTHONPATH", task_root.display().to_string()),
                    ("_HANDLER", "app.handler".to_string()),
                ] {
                    env.push((k.to_string(), v));
                }
                FunctionProcess::spawn_with_args(
                    &python,
                    &["-m", "awslambdaric", "app.handler"],
                    api,
                    &env,
                )
            }
        }
    }
}

/// The figures of one scenario.
pub struct Figures {
    pub label: String,
    /// Sorted; empty when the scenario has no cold starts of its own.
    pub init: Vec<Duration>,
    pub first: Vec<Duration>,
    /// Sorted; each cold start's first response less the time moto took answering its calls.
    pub beyond_moto: Vec<Duration>,
    /// Sorted round trips of the warm invocations.
    pub warm: Vec<Duration>,
    pub cpu_per_warm: Duration,
    pub peak_rss_kb: u64,
    /// Requests the process had served when its peak RSS was read.
    pub served: usize,
}

impl Figures {
    fn print(&self) {
        let cold = |v: &[Duration]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                ms(pct(v, 0.5))
            }
        };
        println!(
            "  {:<30} {:>10} {:>11} {:>10} {:>11} {:>10} {:>10} {:>8.1} MB",
            self.label,
            cold(&self.init),
            cold(&self.first),
            cold(&self.beyond_moto),
            format!("{:.3} ms", self.cpu_per_warm.as_secs_f64() * 1e3),
            ms(pct(&self.warm, 0.5)),
            ms(pct(&self.warm, 0.99)),
            self.peak_rss_kb as f64 / 1024.0,
        );
    }

    pub fn init_p50(&self) -> Duration {
        pct(&self.init, 0.5)
    }
    pub fn first_p50(&self) -> Duration {
        pct(&self.first, 0.5)
    }
    pub fn warm_p50(&self) -> Duration {
        pct(&self.warm, 0.5)
    }
}

fn vm_hwm_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Times the process's threads gave up the processor to wait (`voluntary_ctxt_switches` of each
/// thread): a sleep and a wake each, which on this VM cost more than most of a request's work.
fn sleeps(pid: u32) -> u64 {
    per_thread(pid, "status", |s| {
        s.lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
            .trim()
            .parse()
            .ok()
    })
}

/// The sum over the process's threads of a figure read from `/proc/<pid>/task/<tid>/<file>`.
fn per_thread(pid: u32, file: &str, figure: impl Fn(&str) -> Option<u64>) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join(file)).ok())
        .filter_map(|s| figure(&s))
        .sum()
}

/// CPU time the process has used, all its threads (what Lambda bills): the first field of each
/// thread's `/proc/<pid>/task/<tid>/schedstat`, in nanoseconds.
fn cpu_ns(pid: u32) -> u64 {
    per_thread(pid, "schedstat", |s| {
        s.split_whitespace().next()?.parse().ok()
    })
}

async fn invoke_ok(api: &RuntimeApi, event: Value, what: &str, f: &FunctionProcess) -> V2Response {
    let answer = api
        .invoke(event)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}\n{}", f.output()));
    let r = V2Response::parse(&answer);
    assert!(
        r.status == 200,
        "{what}: status {} {}\n{}",
        r.status,
        r.text(),
        f.output()
    );
    r
}

/// The cold starts of a scenario, each figure sorted.
#[derive(Default)]
pub struct Cold {
    /// Exec to the first poll.
    init: Vec<Duration>,
    /// Exec to the first answer.
    first: Vec<Duration>,
    /// The first answer's time less the time moto took answering the process's calls (moto
    /// serves one call at a time, and a login's two writes take it 10-14 ms, which every runner
    /// waits alike): what is the runner's own.
    beyond_moto: Vec<Duration>,
}

/// `starts` cold starts: a new process each, one invocation each.
async fn cold(
    runner: Runner,
    env: &[(String, String)],
    starts: usize,
    event: &mut dyn FnMut(usize) -> Value,
    what: &str,
) -> Cold {
    let mut c = Cold::default();
    for i in 0..starts {
        let api = RuntimeApi::start().await;
        let spawned = Instant::now();
        let mut f = runner.spawn(&api, env);
        let polled = api
            .wait_for_next_poll(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{what} starts: {e}\n{}", f.output()));
        c.init.push(polled - spawned);
        let at_moto = moto_time();
        invoke_ok(&api, event(i), what, &f).await;
        let first = spawned.elapsed();
        c.first.push(first);
        c.beyond_moto
            .push(first.saturating_sub(moto_time().saturating_sub(at_moto)));
        f.kill().await;
    }
    c.init.sort();
    c.first.sort();
    c.beyond_moto.sort();
    c
}

/// The time moto has spent answering calls passed on by the proxy, since the bench began: the
/// union of the spans with one call or more at moto (two calls side by side count once), not
/// counting `BENCH_STORE_RTT_MS`.
fn moto_time() -> Duration {
    let m = MOTO.lock().expect("moto clock");
    m.total + m.since.map_or(Duration::ZERO, |s| s.elapsed())
}

static MOTO: std::sync::Mutex<MotoClock> = std::sync::Mutex::new(MotoClock {
    calls: 0,
    since: None,
    total: Duration::ZERO,
});

struct MotoClock {
    /// Calls at moto now.
    calls: usize,
    /// Since when `calls` has been above zero.
    since: Option<Instant>,
    total: Duration,
}

/// A call at moto, from the proxy's request to moto's whole answer.
struct AtMoto;

impl AtMoto {
    fn begin() -> AtMoto {
        let mut m = MOTO.lock().expect("moto clock");
        if m.calls == 0 {
            m.since = Some(Instant::now());
        }
        m.calls += 1;
        AtMoto
    }
}

impl Drop for AtMoto {
    fn drop(&mut self) {
        let mut m = MOTO.lock().expect("moto clock");
        m.calls -= 1;
        if m.calls == 0
            && let Some(since) = m.since.take()
        {
            m.total += since.elapsed();
        }
    }
}

/// A warm process: started, its first invocation (`prime`: the instance's own first-request
/// work) done untimed.
struct Warm {
    api: RuntimeApi,
    f: FunctionProcess,
    pid: u32,
    what: String,
    /// The timed invocations' round trips, and the CPU the process used over them.
    times: Vec<Duration>,
    cpu_ns: u64,
    sleeps: u64,
}

impl Warm {
    async fn start(runner: Runner, env: &[(String, String)], prime: Value, what: &str) -> Warm {
        let api = RuntimeApi::start().await;
        let f = runner.spawn(&api, env);
        api.wait_for_next_poll(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{what} starts: {e}\n{}", f.output()));
        let pid = f.pid().expect("function runs");
        invoke_ok(&api, prime, what, &f).await;
        // Let work the prime left in the background (a code's upload) settle first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Warm {
            api,
            f,
            pid,
            what: what.to_string(),
            times: Vec::new(),
            cpu_ns: 0,
            sleeps: 0,
        }
    }

    /// `count` timed invocations, `event(i)` the `i`th.
    async fn run(&mut self, count: usize, event: &mut dyn FnMut(usize) -> Value) {
        let (cpu0, sleeps0) = (cpu_ns(self.pid), sleeps(self.pid));
        for i in 0..count {
            let e = event(i);
            let started = Instant::now();
            invoke_ok(&self.api, e, &self.what, &self.f).await;
            self.times.push(started.elapsed());
        }
        self.cpu_ns += cpu_ns(self.pid).saturating_sub(cpu0);
        self.sleeps += sleeps(self.pid).saturating_sub(sleeps0);
    }

    fn sleeps_per_invocation(&self) -> f64 {
        self.sleeps as f64 / self.times.len().max(1) as f64
    }

    fn cpu_per_invocation(&self) -> Duration {
        Duration::from_nanos(self.cpu_ns / self.times.len().max(1) as u64)
    }

    /// The sorted round trips, the CPU per invocation and the peak RSS; the process stopped.
    async fn end(mut self) -> (Vec<Duration>, Duration, u64) {
        let cpu = self.cpu_per_invocation();
        let rss = vm_hwm_kb(self.pid);
        self.f.kill().await;
        self.times.sort();
        (self.times, cpu, rss)
    }
}

/// One process, one untimed invocation (`prime`), then `count` timed ones.
async fn warm(
    runner: Runner,
    env: &[(String, String)],
    prime: Value,
    count: usize,
    event: &mut dyn FnMut(usize) -> Value,
    what: &str,
) -> (Vec<Duration>, Duration, u64) {
    let mut w = Warm::start(runner, env, prime, what).await;
    let perf = perf_record(w.pid, what).await;
    w.run(count, event).await;
    if let Some(perf) = perf {
        perf.stop().await;
    }
    w.end().await
}

/// The login and the Python peer's measured in turns, so that both meet the same spells of this
/// shared machine (a ratio of two scenarios run minutes apart moves as much as the machine does):
/// cold starts in blocks of 5 taken in turn, then warm logins in blocks of 100, each process's
/// CPU summed over its own blocks. Blocks, not one of each: taken one of each in turn, every
/// start of ours followed the peer's (50 MB of memory touched, caches and moto's included) and
/// ran slower than in its own scenario (14.9 vs 13.0 ms, same run); a block leaves that to its
/// first start, for both runners alike, and the p50 does not see it.
/// Each pair is (this project, the Python peer); the cold figures are p50s.
pub struct SideBySide {
    pub first: (Duration, Duration),
    pub beyond_moto: (Duration, Duration),
    pub cpu: (Duration, Duration),
}

async fn side_by_side(
    env: &[(String, String)],
    starts: usize,
    count: usize,
    login: &dyn Fn(&str, usize) -> Value,
) -> SideBySide {
    let runners = [
        (Runner::Rust("login"), "login", "sbs"),
        (Runner::Python, "python login", "pysbs"),
    ];
    let mut cold_starts = [Cold::default(), Cold::default()];
    const COLD_BLOCK: usize = 5;
    for block in 0..starts.div_ceil(COLD_BLOCK) {
        let first = block * COLD_BLOCK;
        let size = COLD_BLOCK.min(starts - first);
        for ((runner, what, tag), c) in runners.iter().zip(&mut cold_starts) {
            let tag = format!("{tag}cold");
            let some = cold(*runner, env, size, &mut |i| login(&tag, first + i), what).await;
            c.first.extend(some.first);
            c.beyond_moto.extend(some.beyond_moto);
        }
    }
    let pair = [
        (runners[0].0, env, runners[0].1),
        (runners[1].0, env, runners[1].1),
    ];
    let cpu = warm_in_turns(pair, count, 100, &|k, i| login(runners[k].2, i))
        .await
        .cpu;
    let p50 = |mut v: Vec<Duration>| {
        v.sort();
        pct(&v, 0.5)
    };
    let [ours, peer] = cold_starts;
    SideBySide {
        first: (p50(ours.first), p50(peer.first)),
        beyond_moto: (p50(ours.beyond_moto), p50(peer.beyond_moto)),
        cpu,
    }
}

/// One of two processes measured in turns: what runs, its environment, its name.
type Contender<'a> = (Runner, &'a [(String, String)], &'a str);

/// Two warm processes measured in turns, in blocks of `block` invocations, `count` each: their CPU
/// per invocation, each summed over its own blocks. `event(k, i)` is the `i`th invocation of the
/// `k`th process; each is first primed, untimed, with `event(k, usize::MAX)`. For two builds, or two settings of one, whose
/// difference is smaller than what the machine's spells move between two scenarios.
async fn warm_in_turns(
    pair: [Contender<'_>; 2],
    count: usize,
    block: usize,
    event: &dyn Fn(usize, usize) -> Value,
) -> InTurns {
    let mut warm = Vec::new();
    for (k, (runner, env, what)) in pair.into_iter().enumerate() {
        // (Each its own: a login's code is good once.)
        warm.push(Warm::start(runner, env, event(k, usize::MAX), what).await);
    }
    for b in 0..count.div_ceil(block) {
        for (k, w) in warm.iter_mut().enumerate() {
            w.run(block, &mut |i| event(k, b * block + i)).await;
        }
    }
    let turns = InTurns {
        cpu: (warm[0].cpu_per_invocation(), warm[1].cpu_per_invocation()),
        sleeps: (
            warm[0].sleeps_per_invocation(),
            warm[1].sleeps_per_invocation(),
        ),
    };
    for w in warm {
        w.end().await;
    }
    turns
}

/// Two processes' figures from [`warm_in_turns`]: CPU per invocation, and sleeps per invocation.
struct InTurns {
    cpu: (Duration, Duration),
    sleeps: (f64, f64),
}

/// `BENCH_VS=<dir>`: this build and the one in `target/<dir>` (its `login`), in turns: CPU per
/// warm login and per warm `GET /session`. What the README's one-line-per-change figures use.
async fn builds_in_turns(
    dir: &'static str,
    env: &[(String, String)],
    bearer: &str,
    login: &dyn Fn(&str, usize) -> Value,
) {
    let count = n(3_000);
    println!(
        "\n== this build ({}) and target/{dir} in turns ({count} warm invocations each, in blocks \
         of 100)",
        crate::report::profile()
    );
    let pair = [
        (Runner::Rust("login"), env, "login"),
        (Runner::Built(dir, "login"), env, "login (other build)"),
    ];
    let auth = format!("Bearer {bearer}");
    let session = v2_event("GET", "/session", &[("authorization", &auth)], None, false);
    let logins = warm_in_turns(pair, count, 100, &|_, i| login("vs", i)).await;
    let sessions = warm_in_turns(pair, count, 100, &|_, _| session.clone()).await;
    for (what, t) in [
        ("CPU per warm login", logins),
        ("CPU per warm GET /session", sessions),
    ] {
        let (this, other) = t.cpu;
        println!(
            "  {what:<26} this {:.3} ms   {dir} {:.3} ms   change {:+.1}%   (sleeps each: {:.2} vs {:.2})",
            this.as_secs_f64() * 1e3,
            other.as_secs_f64() * 1e3,
            (this.as_secs_f64() / other.as_secs_f64().max(1e-12) - 1.0) * 100.0,
            t.sleeps.0,
            t.sleeps.1,
        );
    }
}

/// `perf record` of the warm run whose name is `BENCH_PERF`, into `target/perf-<name>.data`.
struct Perf(tokio::process::Child, PathBuf);

impl Perf {
    async fn stop(mut self) {
        if let Some(id) = self.0.id() {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &id.to_string()])
                .status();
        }
        let _ = self.0.wait().await;
        println!("  (perf data: {}; `perf report -i` it)", self.1.display());
    }
}

async fn perf_record(pid: u32, what: &str) -> Option<Perf> {
    if std::env::var("BENCH_PERF").ok().as_deref() != Some(what) {
        return None;
    }
    let out = target_dir().join(format!("perf-{}.data", what.replace([' ', '/'], "_")));
    let child = tokio::process::Command::new("perf")
        .args(["record", "-F", "4999", "--call-graph", "dwarf,32768", "-o"])
        .arg(&out)
        .args(["-p", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Some(Perf(child, out))
}

/// `BENCH_STORE_RTT_MS` (default 0): a round trip's time added to every call the functions make
/// to AWS (moto), as the network within a region would (DynamoDB's calls take a few ms there).
fn store_rtt() -> Duration {
    static RTT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *RTT.get_or_init(|| {
        let ms = std::env::var("BENCH_STORE_RTT_MS").ok();
        Duration::from_millis(ms.and_then(|v| v.parse().ok()).unwrap_or(0))
    })
}

/// An HTTP/1.1 keep-alive front for `upstream`: each request is passed on as it is (host header
/// included, so signatures still match) over a connection of the proxy's own.
async fn keep_alive_proxy(upstream: &str) -> String {
    use axum::body::{Body, Bytes};
    use axum::extract::{Request, State};
    use axum::response::Response;

    async fn pass(
        State((http, upstream)): State<(reqwest::Client, String)>,
        req: Request,
    ) -> Response {
        let (parts, body) = req.into_parts();
        let body: Bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        // The network between Lambda and AWS's endpoints, which moto on loopback does not have.
        if !store_rtt().is_zero() {
            tokio::time::sleep(store_rtt()).await;
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut headers = parts.headers.clone();
        headers.remove(http::header::CONNECTION);
        let at_moto = AtMoto::begin();
        let answer = http
            .request(parts.method.clone(), format!("{upstream}{path}"))
            .headers(headers)
            .body(body)
            .send()
            .await;
        let Ok(answer) = answer else {
            return Response::builder().status(502).body(Body::empty()).unwrap();
        };
        let mut out = Response::builder().status(answer.status());
        for (k, v) in answer.headers() {
            if k != http::header::CONNECTION && k != http::header::TRANSFER_ENCODING {
                out = out.header(k, v);
            }
        }
        let bytes = answer.bytes().await.unwrap_or_default();
        drop(at_moto);
        out.body(Body::from(bytes)).unwrap()
    }

    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let app = axum::Router::new()
        .fallback(pass)
        .with_state((http, upstream.trim_end_matches('/').to_string()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(Handshaking(listener), app)
            .await
            .expect("proxy")
    });
    format!("http://{addr}")
}

/// The proxy's listener: with `BENCH_STORE_RTT_MS`, a new connection is read from only two
/// round trips after it was accepted, as a TCP and a TLS 1.3 handshake with AWS's endpoints take
/// before the first request can go (moto on loopback is plain HTTP): a request on a connection
/// opened ahead of it does not wait for them, one on a connection opened for it does.
struct Handshaking(tokio::net::TcpListener);

impl axum::serve::Listener for Handshaking {
    type Io = Handshake;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Ok((tcp, addr)) = self.0.accept().await {
                let _ = tcp.set_nodelay(true);
                let ready = tokio::time::Instant::now() + store_rtt() * 2;
                return (
                    Handshake {
                        tcp,
                        ready: Box::pin(tokio::time::sleep_until(ready)),
                    },
                    addr,
                );
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection not readable before its handshakes are done.
struct Handshake {
    tcp: tokio::net::TcpStream,
    ready: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl tokio::io::AsyncRead for Handshake {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.ready.as_mut().poll(cx).is_pending() {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Handshake {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

fn login_event(code: &str) -> Value {
    let body = json!({ "code": code }).to_string();
    v2_event("POST", "/login", &[], Some(body.as_bytes()), false)
}

fn code_event(bearer: &str, scene: &str) -> Value {
    let auth = format!("Bearer {bearer}");
    let body = json!({ "scene": scene }).to_string();
    v2_event(
        "POST",
        "/qrcode",
        &[("authorization", &auth)],
        Some(body.as_bytes()),
        false,
    )
}

/// Whether scenario `what` runs: all of them, or those named in `BENCH_ONLY` (comma-separated:
/// login, login secret, GET /session, code miss, code hit, code hit s3, python login, echo,
/// in turns).
fn only(what: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |o| o.split(',').any(|w| w.trim() == what))
}

/// Every scenario, printed as a table, then the targets.
pub async fn run() {
    let env = TestEnv::with(e2e::Options {
        bucket: true,
        bus: true,
        ..Default::default()
    })
    .await;
    // DynamoDB and S3 keep connections alive; moto's server closes each one (werkzeug). The
    // functions reach moto through a keep-alive proxy in this process, so their CPU is what it
    // would be against AWS, not a TCP handshake per call (for the Python peer too).
    let proxy = keep_alive_proxy(&env.endpoint).await;
    let fenv: Vec<(String, String)> = env
        .function_env()
        .await
        .into_iter()
        .map(|(k, v)| {
            if k == "AWS_ENDPOINT_URL" {
                (k, proxy.clone())
            } else {
                (k, v)
            }
        })
        .collect();
    let bearer = env.login("bench").await;
    let sandbox = env.sandbox();
    // WeChat's answer time as seen from a Lambda region (tens of ms), which the sandbox on
    // loopback does not have: BENCH_WECHAT_MS=<ms> delays every WeChat answer.
    if let Some(ms) = std::env::var("BENCH_WECHAT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        sandbox.set_faults(wechat_sandbox::Faults {
            latency_ms: ms,
            ..Default::default()
        });
    }
    // Logins by returning users, a hundred of them, each with a fresh single-use code.
    let login =
        |tag: &str, i: usize| login_event(&sandbox.mint_login_code(&format!("{tag}{}", i % 100)));
    if let Ok(dir) = std::env::var("BENCH_VS") {
        builds_in_turns(dir.leak(), &fenv, &bearer, &login).await;
        return;
    }
    let starts = n(20);
    let python_starts = n(10).max(3);

    println!(
        "\n== what Lambda bills: release binaries under the Runtime API emulator, moto and the \
         WeChat sandbox\n   ({starts} cold starts per function, {python_starts} for Python; CPU \
         is the whole process, all threads)"
    );
    println!(
        "  {:<30} {:>10} {:>11} {:>10} {:>11} {:>10} {:>10} {:>11}",
        "scenario",
        "init p50",
        "first resp",
        "less moto",
        "CPU/warm",
        "warm p50",
        "warm p99",
        "peak RSS"
    );

    let mut all = Vec::new();
    let mut figures = |label: String,
                       cold: Cold,
                       (warm, cpu, rss): (Vec<Duration>, Duration, u64),
                       served: usize| {
        let f = Figures {
            label,
            init: cold.init,
            first: cold.first,
            beyond_moto: cold.beyond_moto,
            warm,
            cpu_per_warm: cpu,
            peak_rss_kb: rss,
            served,
        };
        f.print();
        all.push(f);
    };

    if only("login") {
        // login: POST /login.
        let count = n(2_000);
        let c = cold(
            Runner::Rust("login"),
            &fenv,
            starts,
            &mut |i| login("cold", i),
            "login",
        )
        .await;
        let w = warm(
            Runner::Rust("login"),
            &fenv,
            login("prime", 0),
            count,
            &mut |i| login("warm", i),
            "login",
        )
        .await;
        figures("login: POST /login".into(), c, w, count + 1);
    }

    if only("login secret") {
        // login again, its AppSecret read from Secrets Manager at start (WECHAT_SECRET_ARN), as
        // deployed: what the one GetSecretValue adds to a cold start.
        let value = serde_json::json!({
            "appid": sandbox.config().appid,
            "secret": sandbox.config().secret,
        });
        let created = wxmp::aws::secrets_manager(&env.sdk)
            .call(
                "CreateSecret",
                &serde_json::json!({
                    "Name": e2e::moto::unique_name("bench"),
                    "SecretString": value.to_string(),
                }),
            )
            .await
            .expect("secret created");
        let mut senv = fenv.clone();
        senv.retain(|(k, _)| k != "WECHAT_SECRET" && k != "WECHAT_APPID");
        senv.push((
            "WECHAT_SECRET_ARN".into(),
            created["ARN"].as_str().expect("ARN").into(),
        ));
        let c = cold(
            Runner::Rust("login"),
            &senv,
            starts,
            &mut |i| login("secret", i),
            "login (secret)",
        )
        .await;
        println!(
            "  {:<30} {:>10} {:>11}   (AppSecret from Secrets Manager: one GetSecretValue at init)",
            "login: cold, WECHAT_SECRET_ARN",
            ms(pct(&c.init, 0.5)),
            ms(pct(&c.first, 0.5)),
        );
    }

    if only("GET /session") {
        // login: GET /session, 10,000 of them: the RSS after many requests.
        let count = n(10_000);
        let auth = format!("Bearer {bearer}");
        let session = v2_event("GET", "/session", &[("authorization", &auth)], None, false);
        let w = warm(
            Runner::Rust("login"),
            &fenv,
            session.clone(),
            count,
            &mut |_| session.clone(),
            "GET /session",
        )
        .await;
        figures("login: GET /session".into(), Cold::default(), w, count + 1);
    }

    // What the EMF metrics cost: GET /session with them and with METRICS_DISABLED=1, in turns
    // (a difference of two scenarios minutes apart is the machine's as much as the metrics').
    let metrics = if only("GET /session") && only("metrics off") {
        let count = n(10_000);
        let auth = format!("Bearer {bearer}");
        let session = v2_event("GET", "/session", &[("authorization", &auth)], None, false);
        let mut off = fenv.clone();
        off.push(("METRICS_DISABLED".into(), "1".into()));
        let pair = [
            (
                Runner::Rust("login"),
                &fenv[..],
                "GET /session (metrics on)",
            ),
            (
                Runner::Rust("login"),
                &off[..],
                "GET /session (metrics off)",
            ),
        ];
        let (on, off) = warm_in_turns(pair, count, 500, &|_, _| session.clone())
            .await
            .cpu;
        println!(
            "  {:<30} {:>10} {:>11} {:>10} {:>11}   (in turns with metrics on: {:.3} ms)",
            "login: GET /session, metrics off",
            "-",
            "-",
            "-",
            format!("{:.3} ms", off.as_secs_f64() * 1e3),
            on.as_secs_f64() * 1e3,
        );
        Some((on, off))
    } else {
        None
    };

    if only("code miss") {
        // qrcode: a code not made before (WeChat renders it; uploaded to S3 after the answer).
        let count = n(1_000);
        let c = cold(
            Runner::Rust("qrcode"),
            &fenv,
            starts,
            &mut |i| code_event(&bearer, &format!("cold{i}")),
            "code (cold)",
        )
        .await;
        let w = warm(
            Runner::Rust("qrcode"),
            &fenv,
            code_event(&bearer, "prime"),
            count,
            &mut |i| code_event(&bearer, &format!("miss{i}")),
            "code miss",
        )
        .await;
        figures("qrcode: code miss".into(), c, w, count + 1);
    }

    if only("code hit") {
        // qrcode: the same code again, as deployed: answered from the instance's memory (the
        // first ask reads it from S3).
        let count = n(10_000);
        let w = warm(
            Runner::Rust("qrcode"),
            &fenv,
            code_event(&bearer, "hit"),
            count,
            &mut |_| code_event(&bearer, "hit"),
            "code hit",
        )
        .await;
        figures(
            "qrcode: code hit (the instance's memory)".into(),
            Cold::default(),
            w,
            count + 1,
        );
    }

    if only("code hit s3") {
        // qrcode: the same code again with no codes kept in memory: each one read from S3.
        let count = n(10_000);
        let mut s3_only = fenv.clone();
        s3_only.push(("CODE_CACHE_MEMORY_MB".into(), "0".into()));
        let w = warm(
            Runner::Rust("qrcode"),
            &s3_only,
            code_event(&bearer, "hit"),
            count,
            &mut |_| code_event(&bearer, "hit"),
            "code hit s3",
        )
        .await;
        figures(
            "qrcode: code hit (S3, no codes kept in memory)".into(),
            Cold::default(),
            w,
            count + 1,
        );
    }

    if only("push") {
        // push: a safe-mode XML message push from WeChat (signature, AES, XML), claimed once in
        // DynamoDB and put on the EventBridge bus. Each push a new message (no duplicates).
        let count = n(2_000);
        let push = |i: usize| {
            let message = json!({"ToUserName": "gh_sandbox000001",
                "FromUserName": "oBench00000000000000000000001", "CreateTime": 1_700_000_000u64 + i as u64,
                "MsgType": "text", "Content": "hello", "MsgId": 24_000_000_000_000_000u64 + i as u64});
            let req = sandbox.build_push(&wechat_sandbox::PushSpec {
                mode: wechat_sandbox::PushMode::Safe,
                format: wechat_sandbox::PushFormat::Xml,
                message: message.as_object().unwrap().clone(),
                timestamp: None,
                nonce: None,
            });
            v2_event(
                "POST",
                &format!("/push?{}", req.query_string()),
                &[("content-type", "text/xml")],
                Some(req.body.as_bytes()),
                false,
            )
        };
        let c = cold(
            Runner::Rust("push"),
            &fenv,
            starts,
            &mut |i| push(1_000_000 + i),
            "push (cold)",
        )
        .await;
        let w = warm(
            Runner::Rust("push"),
            &fenv,
            push(2_000_000),
            count,
            &mut |i| push(i),
            "push",
        )
        .await;
        figures("push: POST /push (safe)".into(), c, w, count + 1);
    }

    if only("python login") {
        // The Python peer doing the same login.
        let count = n(2_000);
        let c = cold(
            Runner::Python,
            &fenv,
            python_starts,
            &mut |i| login("pycold", i),
            "python login",
        )
        .await;
        let w = warm(
            Runner::Python,
            &fenv,
            login("pyprime", 0),
            count,
            &mut |i| login("pywarm", i),
            "python login",
        )
        .await;
        figures("python peer: POST /login".into(), c, w, count + 1);
    }

    if only("echo") {
        // The floor: a lambda_http function that answers at once.
        let count = n(10_000);
        let echo = v2_event("GET", "/echo", &[], None, false);
        let c = cold(
            Runner::Rust("echo-floor"),
            &fenv,
            starts,
            &mut |_| echo.clone(),
            "echo",
        )
        .await;
        let w = warm(
            Runner::Rust("echo-floor"),
            &fenv,
            echo.clone(),
            count,
            &mut |_| echo.clone(),
            "echo",
        )
        .await;
        figures("echo floor (lambda_http)".into(), c, w, count + 1);
    }

    let turns = if only("in turns") {
        let count = n(1_000);
        let t = side_by_side(&fenv, python_starts, count, &login).await;
        println!(
            "\n== the login and the Python peer in turns ({python_starts} cold starts each, in blocks \
             of 5 taken in turn; {count} warm logins each, in blocks of 100 taken in turn)"
        );
        println!(
            "  {:<30} {:>12} {:>12} {:>8}",
            "", "this project", "Python peer", "ratio"
        );
        let cpu_ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
        for (what, (ours, peer), show) in [
            ("first response p50", t.first, ms as fn(Duration) -> String),
            ("first response less moto p50", t.beyond_moto, ms),
            ("CPU per warm login", t.cpu, cpu_ms),
        ] {
            println!(
                "  {:<30} {:>12} {:>12} {:>7.1}x",
                what,
                show(ours),
                show(peer),
                peer.as_secs_f64() / ours.as_secs_f64().max(1e-9)
            );
        }
        Some(t)
    } else {
        None
    };

    if std::env::var_os("BENCH_ONLY").is_none() {
        targets(
            &all,
            turns.as_ref().expect("in turns ran"),
            metrics.expect("metrics on and off ran"),
        );
    }
}

fn targets(all: &[Figures], turns: &SideBySide, (on, off): (Duration, Duration)) {
    let get = |prefix: &str| {
        all.iter()
            .find(|f| f.label.starts_with(prefix))
            .expect("scenario ran")
    };
    let (login, session, miss, hit, hit_s3, python, echo) = (
        get("login: POST"),
        get("login: GET"),
        get("qrcode: code miss"),
        get("qrcode: code hit (the"),
        get("qrcode: code hit (S3"),
        get("python"),
        get("echo"),
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!("\n== targets (ratios from this run)");
    // The ratios are judged on the two measured in turns; the scenarios' own, minutes apart,
    // beside them.
    let cpu = ratio(turns.cpu.1, turns.cpu.0);
    row(
        "CPU per warm login, Python peer / this project (in turns)",
        format!("{cpu:.1}x"),
        ">= 10x",
        Some(cpu >= 10.0),
    );
    row(
        "CPU per warm login, Python peer / this project (scenarios)",
        format!("{:.1}x", ratio(python.cpu_per_warm, login.cpu_per_warm)),
        "-",
        None,
    );
    row(
        "CPU per warm login, this project / echo floor",
        format!("{:.1}x", ratio(login.cpu_per_warm, echo.cpu_per_warm)),
        "-",
        None,
    );
    for f in [hit, hit_s3, session] {
        row(
            &format!("CPU per warm invocation, {}", f.label),
            format!("{:.3} ms", f.cpu_per_warm.as_secs_f64() * 1e3),
            "<= 0.5 ms",
            Some(f.cpu_per_warm <= Duration::from_micros(500)),
        );
    }
    row(
        "CPU per warm invocation, qrcode: code miss",
        format!("{:.3} ms", miss.cpu_per_warm.as_secs_f64() * 1e3),
        "-",
        None,
    );
    let cost = on.as_secs_f64() - off.as_secs_f64();
    row(
        "CPU per warm GET /session, metrics on minus off (in turns)",
        format!("{:.3} ms", cost * 1e3),
        "< 0.05 ms",
        Some(cost < 0.000_05),
    );
    let push = get("push");
    row(
        "CPU per warm push (safe mode: check, decrypt, claim, PutEvents)",
        format!("{:.3} ms", push.cpu_per_warm.as_secs_f64() * 1e3),
        "<= 1 ms",
        Some(push.cpu_per_warm <= Duration::from_millis(1)),
    );
    row(
        "warm push p50 (round trip with one write and one PutEvents on moto)",
        ms(push.warm_p50()),
        "-",
        None,
    );
    for f in [login, miss] {
        let name = f.label.split(':').next().unwrap_or("");
        row(
            &format!("init (exec to first poll), {name}, p50"),
            ms(f.init_p50()),
            "<= 8 ms",
            Some(f.init_p50() <= Duration::from_millis(8)),
        );
    }
    row("init, echo floor, p50", ms(echo.init_p50()), "-", None);
    let first = ratio(turns.first.1, turns.first.0);
    row(
        "first response (cold login), Python peer / this project (in turns)",
        format!("{first:.1}x"),
        ">= 30x",
        Some(first >= 30.0),
    );
    row(
        "first response (cold login), Python peer / this project (scenarios)",
        format!("{:.1}x", ratio(python.first_p50(), login.first_p50())),
        "-",
        None,
    );
    // What moto's share hides: the first response less moto's time answering the calls, which
    // every runner waits alike.
    row(
        "first response (cold login) less moto's time, Python peer / this project (in turns)",
        format!(
            "{:.0}x ({} vs {})",
            ratio(turns.beyond_moto.1, turns.beyond_moto.0),
            ms(turns.beyond_moto.1),
            ms(turns.beyond_moto.0)
        ),
        "-",
        None,
    );
    row(
        "warm p50 of login, this project vs Python peer",
        format!("{} vs {}", ms(login.warm_p50()), ms(python.warm_p50())),
        "not worse",
        Some(login.warm_p50() <= python.warm_p50()),
    );
    for f in [session, hit, hit_s3] {
        let judged = f.served >= 10_000;
        row(
            &format!("peak RSS after {} requests, {}", f.served, f.label),
            format!("{:.1} MB", f.peak_rss_kb as f64 / 1024.0),
            if judged { "<= 12 MB" } else { "(quick run)" },
            judged.then_some(f.peak_rss_kb <= 12 * 1024),
        );
    }
    row(
        "peak RSS, Python peer / this project (login)",
        format!(
            "{:.1}x",
            python.peak_rss_kb as f64 / login.peak_rss_kb.max(1) as f64
        ),
        "-",
        None,
    );
}
