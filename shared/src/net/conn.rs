//! Keep-alive HTTP/1.1 connections for the calls a request makes (AWS's endpoints and WeChat's
//! API): an idle connection is taken for a call, the request written and its answer read whole by
//! the caller itself ([`super::h1`]), and the connection given back. reqwest wraps hyper in a
//! pool, redirect and timeout layers and a URL parse per request, which together cost about a
//! tenth of a warm request's CPU here (README, Performance); hyper's own client then drove each
//! connection from a task of its own, two task wakes per call. These calls need none of it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::h1::{self, Answer, Link, ReadFail};

/// A connection's endpoint: https or not, host, port.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Origin {
    https: bool,
    host: String,
    port: u16,
}

/// How a call failed before an answer: `timeout`, or `transport` (connect, TLS, I/O). The
/// message names the host, never the path or query (WeChat's carry the secret).
#[derive(Debug)]
pub(crate) struct Failed {
    pub timeout: bool,
    /// The request surely did not reach the server: no connection was made, or the one it was
    /// being written to had closed before it was whole.
    pub unsent: bool,
    pub message: String,
}

/// Where calls go, parsed once: the connection's origin and the `Host` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    origin: Origin,
    host: HeaderValue,
}

impl Endpoint {
    /// The endpoint of `url` (its scheme, host and port; the path is the call's).
    pub fn of(url: &reqwest::Url) -> Result<Endpoint, String> {
        let origin = Origin {
            https: match url.scheme() {
                "https" => true,
                "http" => false,
                s => return Err(format!("unsupported scheme {s}")),
            },
            host: url.host_str().ok_or("the URL has no host")?.to_string(),
            port: url.port_or_known_default().ok_or("the URL has no port")?,
        };
        let host = HeaderValue::from_str(&authority(url)).map_err(|e| format!("host: {e}"))?;
        Ok(Endpoint { origin, host })
    }
}

/// A connection's transport: TCP, or TLS over it.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A kept connection: its origin, when it was given back, the connection.
type Idle = (Origin, std::time::Instant, Link<Io>);

/// Connections kept for reuse, per origin.
pub(crate) struct Connections {
    idle: Mutex<Vec<Idle>>,
    /// Connections being opened ahead of the first call ([`Connections::open_ahead`]), by origin
    /// and a number of their own: a call that finds none idle waits while one to its origin is
    /// being opened rather than open its own.
    opening: Mutex<Vec<(Origin, u64)>>,
    /// Told to every waiting call whenever an opening ahead ends, either way.
    opened: tokio::sync::Notify,
    next_opening: std::sync::atomic::AtomicU64,
    /// Kept no longer than this unused: a connection idle for minutes may have been dropped on
    /// the way without either end being told (a NAT's timeout), and a request written into it
    /// would wait for its timeout. reqwest's pool used the same limit.
    idle_limit: Duration,
    tls: Arc<rustls::ClientConfig>,
    /// Longest wait for a TCP connection and its TLS handshake.
    connect_timeout: Duration,
}
/// Idle connections kept per process: a Lambda instance makes one call at a time, the local
/// server a few.
const MAX_IDLE: usize = 8;
/// How long an unused connection is kept.
const IDLE_LIMIT: Duration = Duration::from_secs(50);

impl Connections {
    pub fn new(tls: rustls::ClientConfig, connect_timeout: Duration) -> Self {
        Connections {
            idle: Mutex::new(Vec::new()),
            opening: Mutex::new(Vec::new()),
            opened: tokio::sync::Notify::new(),
            next_opening: std::sync::atomic::AtomicU64::new(0),
            idle_limit: IDLE_LIMIT,
            tls: Arc::new(tls),
            connect_timeout,
        }
    }

    /// Opens a connection to `url`'s origin now and keeps it for a first call there, unless
    /// `want` are kept or being opened already (a request that makes two calls there side by side
    /// wants two). A cold start does this for the calls its first request will make, while it
    /// waits for that request: the name lookup and the TCP and TLS handshakes are then behind it
    /// (for a login, its DynamoDB connections are ready by the time WeChat has answered). A
    /// failure is only logged (at debug): the call opens its own.
    pub async fn open_ahead(&self, url: &reqwest::Url, want: usize) {
        let Ok(endpoint) = Endpoint::of(url) else {
            return;
        };
        let origin = endpoint.origin;
        let id = self.next_opening.fetch_add(1, Ordering::Relaxed);
        {
            let idle = self.idle.lock().expect("not poisoned");
            let mut opening = self.opening.lock().expect("not poisoned");
            let have = idle.iter().filter(|(o, _, _)| *o == origin).count()
                + opening.iter().filter(|(o, _)| *o == origin).count();
            if have >= want {
                return;
            }
            opening.push((origin.clone(), id));
        }
        // Ends the opening however this future ends (also dropped half way): its entry goes and
        // the waiting calls look again.
        let _ending = Opening { conns: self, id };
        match Box::pin(self.connect(&origin)).await {
            Ok(link) => self.give_back(origin.clone(), link),
            Err(e) => tracing::debug!(error = %e.message, "a connection opened ahead failed"),
        }
    }

    fn is_opening(&self, origin: &Origin) -> bool {
        let opening = self.opening.lock().expect("not poisoned");
        opening.iter().any(|(o, _)| o == origin)
    }

    /// Sends one request and reads its whole answer, within `timeout`. `headers` are sent as
    /// given, after `host` (a `host` or `content-length` among them is replaced by the right one).
    pub async fn send(
        &self,
        method: &http::Method,
        url: &reqwest::Url,
        headers: http::HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, Failed> {
        let endpoint = Endpoint::of(url).map_err(|message| Failed {
            timeout: false,
            unsent: true,
            message,
        })?;
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        // Whether the request may have left: until then a timeout is also "unsent".
        let written = AtomicBool::new(false);
        let exchange = self.exchange(&endpoint, method, &target, &headers, &body, &written);
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(Failed {
                timeout: true,
                unsent: !written.load(Ordering::Relaxed),
                message: format!("no answer within {timeout:?}"),
            }),
        }
    }

    async fn exchange(
        &self,
        endpoint: &Endpoint,
        method: &http::Method,
        target: &str,
        headers: &http::HeaderMap,
        body: &Bytes,
        written: &AtomicBool,
    ) -> Result<Answer, Failed> {
        let transport = |unsent: bool, message: String| Failed {
            timeout: false,
            unsent,
            message,
        };
        let origin = &endpoint.origin;
        let host = endpoint
            .host
            .to_str()
            .map_err(|e| transport(true, format!("host: {e}")))?;
        let head = h1::request_head(method, target, host, headers, body.len());
        let to_head = *method == http::Method::HEAD;

        // A kept connection the server has closed is found so before the request is written, or
        // fails its write: then once more on a new one, at once (the caller's retries are for the
        // service's failures).
        loop {
            let (mut link, fresh) = match self.take(origin) {
                Some(link) => (link, false),
                None => (self.wait_or_connect(origin).await?, true),
            };
            written.store(true, Ordering::Relaxed);
            if let Err(e) = link.write_all(&[&head, body]).await {
                // A request not written whole cannot have been acted on.
                written.store(false, Ordering::Relaxed);
                if !fresh {
                    continue;
                }
                return Err(transport(true, format!("write: {e}")));
            }
            return match link.read_answer(to_head).await {
                Ok((answer, keep)) => {
                    if keep {
                        self.give_back(origin.clone(), link);
                    }
                    Ok(answer)
                }
                // Written whole, then closed unanswered: it may have been acted on.
                Err(ReadFail::ClosedBeforeAnswer) => Err(transport(
                    false,
                    format!("the connection to {} closed before an answer", origin.host),
                )),
                Err(ReadFail::Other(e)) => Err(transport(false, e)),
            };
        }
    }

    /// A new connection for a call that found none idle, or one opened ahead meanwhile.
    async fn wait_or_connect(&self, origin: &Origin) -> Result<Link<Io>, Failed> {
        loop {
            // Look again registered for the end of an opening ahead, so that one ending in
            // between is not missed.
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if let Some(link) = self.take(origin) {
                return Ok(link);
            }
            // Some being opened ahead: wait until one of them ends (each within the connect
            // timeout), then look again.
            if self.is_opening(origin) {
                opened.await;
                continue;
            }
            // Boxed: a TLS handshake's state is large, and a call's future is part of every
            // caller's (a debug build's test thread overflowed its stack).
            return Box::pin(self.connect(origin)).await;
        }
    }

    /// An idle connection to `origin` that can still carry a request.
    fn take(&self, origin: &Origin) -> Option<Link<Io>> {
        let mut idle = self.idle.lock().expect("not poisoned");
        let limit = self.idle_limit;
        idle.retain(|(_, since, _)| since.elapsed() < limit);
        while let Some(at) = idle.iter().rposition(|(o, _, _)| o == origin) {
            let mut link = idle.swap_remove(at).2;
            if !link.is_broken() {
                return Some(link);
            }
        }
        None
    }

    fn give_back(&self, origin: Origin, link: Link<Io>) {
        let mut idle = self.idle.lock().expect("not poisoned");
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push((origin, std::time::Instant::now(), link));
    }

    async fn connect(&self, origin: &Origin) -> Result<Link<Io>, Failed> {
        // The server's name: an IPv6 address without the URL's brackets.
        let bare = origin.host.trim_start_matches('[').trim_end_matches(']');
        let connecting = async {
            let tcp = h1::connect_tcp(&origin.host, origin.port).await?;
            if !origin.https {
                return Ok(Link::new(Io::Plain(tcp)));
            }
            let name = ServerName::try_from(bare.to_string())
                .map_err(|e| format!("server name {}: {e}", origin.host))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {}: {}", origin.host, error_chain(&e)))?;
            Ok(Link::new(Io::Tls(Box::new(tls))))
        };
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(r) => r.map_err(|message| Failed {
                timeout: false,
                unsent: true,
                message,
            }),
            Err(_) => Err(Failed {
                timeout: true,
                unsent: true,
                message: format!(
                    "no connection to {}:{} within {:?}",
                    origin.host, origin.port, self.connect_timeout
                ),
            }),
        }
    }
}

/// An opening ahead under way: when dropped, its entry goes and the waiting calls are told.
struct Opening<'a> {
    conns: &'a Connections,
    id: u64,
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        if let Ok(mut opening) = self.conns.opening.lock() {
            opening.retain(|(_, id)| *id != self.id);
        }
        self.conns.opened.notify_waiters();
    }
}

/// The `Host` header of a request to `url`: the host, and the port when it is not the scheme's
/// (also what SigV4 signs as `host`).
pub(crate) fn authority(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// An error and its sources, `: `-joined.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// How the test server ends an exchange.
    #[derive(Clone, Copy)]
    enum Close {
        /// Keeps the connection open for the next request.
        Never,
        /// Says `connection: close` and closes.
        Announced,
        /// Closes after the answer without saying so (what a server's idle timeout looks like to
        /// the next request).
        Silently,
    }

    /// An HTTP/1.1 server answering each request with its own request line; counts connections.
    async fn server(close: Close) -> (String, Arc<AtomicUsize>) {
        server_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), close)
    }

    fn server_on(listener: TcpListener, close: Close) -> (String, Arc<AtomicUsize>) {
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 4096];
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        let line = head.lines().next().unwrap_or_default().to_string();
                        let host = head
                            .lines()
                            .find_map(|l| l.strip_prefix("host: "))
                            .unwrap_or("-")
                            .to_string();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .unwrap_or("-")
                            .to_string();
                        let sent: usize = length.parse().unwrap_or(0);
                        if buf.len() < sent {
                            // (the tests' bodies arrive with their heads)
                            return;
                        }
                        buf.drain(..sent);
                        let body = format!("{line} @ {host} length {length}");
                        let extra = match close {
                            Close::Announced => "connection: close\r\n",
                            _ => "",
                        };
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{extra}\r\n{body}",
                            body.len()
                        );
                        if tcp.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                        if !matches!(close, Close::Never) {
                            let _ = tcp.shutdown().await;
                            return;
                        }
                    }
                });
            }
        });
        (url, connections)
    }

    async fn get(c: &Connections, url: &str) -> Result<String, Failed> {
        let url = reqwest::Url::parse(url).unwrap();
        let a = c
            .send(
                &http::Method::GET,
                &url,
                http::HeaderMap::new(),
                Bytes::new(),
                Duration::from_secs(2),
            )
            .await?;
        assert_eq!(a.status, http::StatusCode::OK);
        Ok(String::from_utf8(a.body.to_vec()).unwrap())
    }

    fn connections() -> Connections {
        Connections::new(crate::net::tls_config(), Duration::from_secs(1))
    }

    #[tokio::test]
    async fn a_connection_is_kept_and_used_again() {
        let (url, opened) = server(Close::Never).await;
        let c = connections();
        let host = url.trim_start_matches("http://");
        for path in ["/a?x=1", "/b", "/"] {
            let answer = get(&c, &format!("{url}{path}")).await.unwrap();
            assert_eq!(answer, format!("GET {path} HTTP/1.1 @ {host} length -"));
        }
        assert_eq!(opened.load(Ordering::SeqCst), 1);
    }

    /// S3 refuses a PUT without a length; hyper sends none for an empty body by itself.
    #[tokio::test]
    async fn every_request_with_a_body_method_says_its_length() {
        let (url, _) = server(Close::Never).await;
        let c = connections();
        let url = reqwest::Url::parse(&format!("{url}/bucket")).unwrap();
        for (method, body, length) in [
            (http::Method::PUT, "", "0"),
            (http::Method::PUT, "abc", "3"),
            (http::Method::POST, "{}", "2"),
            (http::Method::HEAD, "", "-"),
        ] {
            let a = c
                .send(
                    &method,
                    &url,
                    http::HeaderMap::new(),
                    Bytes::from(body),
                    Duration::from_secs(2),
                )
                .await
                .unwrap();
            if method != http::Method::HEAD {
                let answer = String::from_utf8(a.body.to_vec()).unwrap();
                assert!(
                    answer.ends_with(&format!("length {length}")),
                    "{method}: {answer}"
                );
            }
        }
    }

    #[tokio::test]
    async fn an_ipv6_address_is_connected_to() {
        let Ok(listener) = TcpListener::bind("[::1]:0").await else {
            eprintln!("no IPv6 loopback here: skipped");
            return;
        };
        let (url, _) = server_on(listener, Close::Never);
        let port = url.rsplit(':').next().unwrap();
        let answer = get(&connections(), &format!("{url}/")).await.unwrap();
        // Connected, and the Host header keeps the brackets.
        assert_eq!(answer, format!("GET / HTTP/1.1 @ [::1]:{port} length -"));
    }

    #[tokio::test]
    async fn a_connection_opened_ahead_serves_the_first_call() {
        let (url, opened) = server(Close::Never).await;
        let c = Arc::new(connections());
        let u = reqwest::Url::parse(&format!("{url}/")).unwrap();
        // Opened in the background while the first call is made: the call waits for it rather
        // than open a second one.
        let ahead = tokio::spawn({
            let (c, u) = (c.clone(), u.clone());
            async move { c.open_ahead(&u, 1).await }
        });
        tokio::task::yield_now().await;
        get(&c, &format!("{url}/first")).await.unwrap();
        ahead.await.unwrap();
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        // Already open: nothing more.
        c.open_ahead(&u, 1).await;
        get(&c, &format!("{url}/second")).await.unwrap();
        assert_eq!(opened.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn two_connections_opened_ahead_serve_two_calls_side_by_side() {
        let (url, opened) = server(Close::Never).await;
        let c = Arc::new(connections());
        let u = reqwest::Url::parse(&format!("{url}/")).unwrap();
        let ahead: Vec<_> = (0..3)
            .map(|_| {
                let (c, u) = (c.clone(), u.clone());
                tokio::spawn(async move { c.open_ahead(&u, 2).await })
            })
            .collect();
        tokio::task::yield_now().await;
        let (ua, ub) = (format!("{url}/a"), format!("{url}/b"));
        let (a, b) = tokio::join!(get(&c, &ua), get(&c, &ub));
        a.unwrap();
        b.unwrap();
        for a in ahead {
            a.await.unwrap();
        }
        assert_eq!(
            opened.load(Ordering::SeqCst),
            2,
            "two wanted, two opened, both used"
        );
        assert_eq!(c.idle.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_opening_ahead_cut_short_leaves_nothing_to_wait_for() {
        // A TLS origin whose server accepts and never answers: the handshake hangs.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let c = Arc::new(connections());
        let u = reqwest::Url::parse(&format!("https://{addr}/")).unwrap();
        let ahead = tokio::spawn({
            let (c, u) = (c.clone(), u.clone());
            async move { c.open_ahead(&u, 1).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(c.opening.lock().unwrap().len(), 1);
        // Cut short (its task aborted): the entry goes with it.
        ahead.abort();
        let _ = ahead.await;
        assert!(c.opening.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_failed_opening_ahead_leaves_the_call_its_own() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let c = connections();
        let u = reqwest::Url::parse(&format!("http://{addr}/")).unwrap();
        c.open_ahead(&u, 1).await;
        assert!(c.opening.lock().unwrap().is_empty());
        assert!(c.idle.lock().unwrap().is_empty());
        // The server comes up: the call connects by itself.
        let listener = TcpListener::bind(addr).await.unwrap();
        let (url, opened) = server_on(listener, Close::Never);
        get(&c, &format!("{url}/x")).await.unwrap();
        assert_eq!(opened.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_unused_too_long_is_not_used_again() {
        let (url, opened) = server(Close::Never).await;
        let mut c = connections();
        c.idle_limit = Duration::from_millis(100);
        get(&c, &format!("{url}/1")).await.unwrap();
        get(&c, &format!("{url}/2")).await.unwrap();
        assert_eq!(opened.load(Ordering::SeqCst), 1, "kept while fresh");
        std::thread::sleep(Duration::from_millis(150));
        get(&c, &format!("{url}/3")).await.unwrap();
        assert_eq!(
            opened.load(Ordering::SeqCst),
            2,
            "a new one after the limit"
        );
        assert_eq!(c.idle.lock().unwrap().len(), 1, "the old one dropped");
    }

    #[tokio::test]
    async fn a_closed_connection_is_replaced_without_an_error() {
        for close in [Close::Announced, Close::Silently] {
            let (url, opened) = server(close).await;
            let c = connections();
            for i in 1..=5 {
                get(&c, &format!("{url}/{i}")).await.unwrap();
                // The next call comes at once or after the close has been seen.
                if i % 2 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            assert_eq!(opened.load(Ordering::SeqCst), 5);
        }
    }

    /// A server answering each request on a connection with the next of `answers` (raw), then
    /// reading one more and closing unanswered; counts connections and the requests answered
    /// (the tests' requests have no body).
    async fn scripted(
        answers: &'static [&'static str],
    ) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (conns, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (c, r) = (conns.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for answer in answers.iter().map(Some).chain([None]) {
                        if !super::h1::read_request_head(&mut tcp, &mut buf).await {
                            return;
                        }
                        // The request after the last answer: closed unanswered.
                        let Some(answer) = answer else { break };
                        r.fetch_add(1, Ordering::SeqCst);
                        if tcp.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    let _ = tcp.shutdown().await;
                });
            }
        });
        (url, conns, requests)
    }

    async fn call(c: &Connections, method: http::Method, url: &str) -> Result<Answer, Failed> {
        let url = reqwest::Url::parse(url).unwrap();
        c.send(
            &method,
            &url,
            http::HeaderMap::new(),
            Bytes::new(),
            Duration::from_secs(2),
        )
        .await
    }

    /// An answer to `HEAD` has no body whatever its length says (S3's `HeadObject`); a chunked
    /// body is read whole. Both leave the connection fit for the next call.
    #[tokio::test]
    async fn head_and_chunked_answers_are_read_exactly() {
        const HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-length: 1234\r\netag: \"x\"\r\n\r\n";
        const CHUNKED: &str = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\n!!!\r\n0\r\n\r\n";
        let (url, conns, _) = scripted(&[HEAD, CHUNKED, HEAD, CHUNKED]).await;
        let c = connections();
        for _ in 0..2 {
            let head = call(&c, http::Method::HEAD, &url).await.unwrap();
            assert_eq!(head.header("Content-Length"), Some("1234"));
            assert_eq!(head.header("etag"), Some("\"x\""));
            assert!(head.body.is_empty());
            let get = call(&c, http::Method::GET, &url).await.unwrap();
            assert_eq!(&get.body[..], b"hello!!!");
        }
        assert_eq!(
            conns.load(Ordering::SeqCst),
            1,
            "one connection for all four"
        );
    }

    /// A request written whole to a connection that then closes without an answer may have been
    /// acted on: it is not sent again, and the failure does not say unsent (a write such as a
    /// quota's `UpdateItem` must not be repeated by the retry rules).
    #[tokio::test]
    async fn a_close_after_the_request_is_a_failure_that_may_have_been_acted_on() {
        const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let (url, conns, requests) = scripted(&[OK]).await;
        let c = connections();
        call(&c, http::Method::POST, &url).await.unwrap();
        // The server closes only once it has read the second request: the kept connection looks
        // alive when it is taken.
        let e = call(&c, http::Method::POST, &url)
            .await
            .expect_err("closed");
        assert!(!e.unsent && !e.timeout, "{e:?}");
        assert_eq!(requests.load(Ordering::SeqCst), 1, "answered once");
        assert_eq!(conns.load(Ordering::SeqCst), 1, "not sent again");
    }

    #[tokio::test]
    async fn no_server_is_a_transport_failure_and_silence_a_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        let e = get(&connections(), &url).await.unwrap_err();
        assert!(
            !e.timeout && e.unsent && e.message.contains("connect to"),
            "{e:?}"
        );

        // Accepts and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url =
            reqwest::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let e = connections()
            .send(
                &http::Method::GET,
                &url,
                http::HeaderMap::new(),
                Bytes::new(),
                Duration::from_millis(200),
            )
            .await
            .expect_err("no answer");
        assert!(e.timeout && !e.unsent, "{e:?}");
    }
}
