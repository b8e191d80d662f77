//! The runtime API's connection: HTTP/1.1 on one kept TCP connection, written and read here so
//! that an invocation's answer and the poll for the next event go out together, pipelined in one
//! write, and their two answers are read back in order. hyper's client sends one request at a
//! time on a connection, so every invocation cost a round trip of its own (its answer's `202`)
//! before the poll could leave, and a task's hop each way per exchange.
//!
//! The runtime API is a local, plain-HTTP server (Lambda's, `cargo lambda watch`'s, the tests'
//! emulator); each serves a connection's requests in order, as HTTP/1.1 requires. Answers are
//! read with their length, chunked, or to the end of the connection; a `Connection: close`, or a
//! kept connection found closed before its first answer, has what was not answered sent again on
//! a new connection (once, for the latter).

use std::time::Duration;

use tokio::net::TcpStream;

use crate::net::h1::{Answer, Link, ReadFail, connect_tcp};

/// One kept connection to `host:port`.
pub(crate) struct Wire {
    host: String,
    port: u16,
    connect_timeout: Duration,
    link: Option<Link<TcpStream>>,
}

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) struct WireError(pub String);

impl Wire {
    pub fn new(host: &str, port: u16, connect_timeout: Duration) -> Wire {
        Wire {
            host: host.to_string(),
            port,
            connect_timeout,
            link: None,
        }
    }

    /// Sends `requests` (each a whole HTTP/1.1 request) in one write and reads their answers, in
    /// order.
    pub async fn exchange(&mut self, requests: &[&[u8]]) -> Result<Vec<Answer>, WireError> {
        let mut answers = Vec::with_capacity(requests.len());
        let mut retried = false;
        while answers.len() < requests.len() {
            let fresh = self.link.is_none();
            if fresh {
                self.connect().await?;
            }
            let rest = &requests[answers.len()..];
            let link = self.link.as_mut().expect("connected");
            if let Err(e) = link.write_all(rest).await {
                self.link = None;
                if !fresh && !retried {
                    retried = true;
                    continue;
                }
                return Err(WireError(format!("write: {e}")));
            }
            while answers.len() < requests.len() {
                let link = self.link.as_mut().expect("connected");
                match link.read_answer(false).await {
                    Ok((answer, keep)) => {
                        answers.push(answer);
                        if !keep {
                            // What was sent behind it is not answered there: again, on a new one.
                            self.link = None;
                            break;
                        }
                        if answers.len() < requests.len() && !link.has_buffered() {
                            ack_now(link.stream());
                        }
                    }
                    // A kept connection the server had closed: the requests did not reach it.
                    Err(ReadFail::ClosedBeforeAnswer) if !fresh && !retried => {
                        self.link = None;
                        retried = true;
                        break;
                    }
                    Err(e) => {
                        self.link = None;
                        return Err(WireError(e.to_string()));
                    }
                }
            }
        }
        Ok(answers)
    }

    async fn connect(&mut self) -> Result<(), WireError> {
        let connecting = connect_tcp(&self.host, self.port);
        let tcp = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(tcp) => tcp.map_err(WireError)?,
            Err(_) => {
                return Err(WireError(format!(
                    "no connection to {}:{} within {:?}",
                    self.host, self.port, self.connect_timeout
                )));
            }
        };
        self.link = Some(Link::new(tcp));
        Ok(())
    }
}

/// Acknowledges what was read at once. A server that leaves Nagle's algorithm on (hyper's, under
/// `cargo lambda watch`) holds its next answer until the one before it is acknowledged, and Linux
/// delays that acknowledgement up to 40 ms when it has nothing to send with it, as a client whose
/// next request is already written has not. Lambda's own runtime API (Go) writes without delay.
fn ack_now(tcp: &TcpStream) {
    let _ = socket2::SockRef::from(tcp).set_tcp_quickack(true);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use http::{HeaderMap, HeaderValue, StatusCode};

    use super::*;
    use crate::net::h1::request;

    /// A server that reads requests (heads, and bodies by content-length) in order on each
    /// connection and answers each with `answer(n)` (n counting across connections), closing a
    /// connection after `close_after` answers on it. Returns its port and the count of
    /// connections it accepted.
    async fn server(answer: fn(usize) -> Vec<u8>, close_after: usize) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                let answered = answered.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut here = 0;
                    loop {
                        // One request: its head, then its body.
                        let (head_len, body_len) = loop {
                            let mut headers = [httparse::EMPTY_HEADER; 32];
                            let mut req = httparse::Request::new(&mut headers);
                            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                                let len = req
                                    .headers
                                    .iter()
                                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                                    .map_or(0, |h| {
                                        std::str::from_utf8(h.value).unwrap().parse().unwrap()
                                    });
                                break (n, len);
                            }
                            let mut chunk = [0u8; 4096];
                            let n = s.read(&mut chunk).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                        };
                        while buf.len() < head_len + body_len {
                            let mut chunk = [0u8; 4096];
                            let n = s.read(&mut chunk).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        buf.drain(..head_len + body_len);
                        let n = answered.fetch_add(1, Ordering::SeqCst);
                        s.write_all(&answer(n)).await.unwrap();
                        here += 1;
                        if here == close_after {
                            return;
                        }
                    }
                });
            }
        });
        (port, conns)
    }

    fn get(path: &str) -> Vec<u8> {
        request(
            &http::Method::GET,
            path,
            "127.0.0.1",
            &HeaderMap::new(),
            b"",
        )
    }

    fn post(path: &str, body: &[u8]) -> Vec<u8> {
        request(
            &http::Method::POST,
            path,
            "127.0.0.1",
            &HeaderMap::new(),
            body,
        )
    }

    fn wire(port: u16) -> Wire {
        Wire::new("127.0.0.1", port, Duration::from_secs(1))
    }

    #[tokio::test]
    async fn two_requests_in_one_write_get_their_two_answers_in_order() {
        let (port, conns) = server(
            |n| {
                format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-n: {n}\r\n\r\n#{n}").into_bytes()
            },
            usize::MAX,
        )
        .await;
        let mut w = wire(port);
        let a = w.exchange(&[&post("/a", b"{}"), &get("/b")]).await.unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!((&a[0].body[..], &a[1].body[..]), (&b"#0"[..], &b"#1"[..]));
        assert_eq!(a[1].header("x-n"), Some("1"));
        assert_eq!(a[1].headers()["x-n"], "1");
        // The connection is kept for the next exchange.
        let a = w.exchange(&[&get("/c")]).await.unwrap();
        assert_eq!(&a[0].body[..], b"#2");
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn chunked_and_empty_bodies_are_read_whole() {
        let (port, _) = server(
            |n| match n {
                0 => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\nx-trailer: 1\r\n\r\n".to_vec(),
                _ => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            },
            usize::MAX,
        )
        .await;
        let mut w = wire(port);
        let a = w.exchange(&[&get("/a"), &get("/b")]).await.unwrap();
        assert_eq!(&a[0].body[..], b"wikipedia");
        assert_eq!(a[1].status, StatusCode::NO_CONTENT);
        assert!(a[1].body.is_empty());
    }

    #[tokio::test]
    async fn what_a_closing_connection_left_unanswered_goes_again_on_a_new_one() {
        // Each connection answers one request and closes (saying so).
        let (port, conns) = server(
            |n| {
                format!(
                    "HTTP/1.1 202 Accepted\r\nconnection: close\r\ncontent-length: 1\r\n\r\n{n}"
                )
                .into_bytes()
            },
            1,
        )
        .await;
        let mut w = wire(port);
        let a = w.exchange(&[&post("/a", b"{}"), &get("/b")]).await.unwrap();
        assert_eq!((&a[0].body[..], &a[1].body[..]), (&b"0"[..], &b"1"[..]));
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_kept_connection_closed_meanwhile_is_replaced_once() {
        // Answers one request per connection without saying it closes.
        let (port, conns) = server(
            |_| b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            1,
        )
        .await;
        let mut w = wire(port);
        w.exchange(&[&get("/a")]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let a = w.exchange(&[&get("/b")]).await.unwrap();
        assert_eq!(&a[0].body[..], b"ok");
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_body_until_the_end_and_a_broken_answer() {
        let (port, _) = server(|_| b"HTTP/1.0 200 OK\r\n\r\nall of it".to_vec(), 1).await;
        let a = wire(port).exchange(&[&get("/a")]).await.unwrap();
        assert_eq!(&a[0].body[..], b"all of it");

        let (port, _) = server(
            |_| b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort".to_vec(),
            1,
        )
        .await;
        let e = wire(port).exchange(&[&get("/a")]).await.unwrap_err();
        assert!(e.0.contains("within an answer's body"), "{e:?}");
    }

    #[test]
    fn a_request_is_written_with_its_host_headers_and_length() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        assert_eq!(
            post("/r", b"{}"),
            b"POST /r HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 2\r\n\r\n{}".to_vec()
        );
        assert_eq!(
            request(&http::Method::POST, "/r", "h:1", &headers, b"x"),
            b"POST /r HTTP/1.1\r\nhost: h:1\r\ncontent-type: application/json\r\ncontent-length: 1\r\n\r\nx"
                .to_vec()
        );
        assert_eq!(
            get("/n"),
            b"GET /n HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".to_vec()
        );
    }

    #[tokio::test]
    async fn a_server_holding_its_second_answer_for_an_acknowledgement_is_not_kept_waiting() {
        // Nagle's algorithm on (the default): the event's answer, written while the 202 is not
        // yet acknowledged, waits for the client's acknowledgement, which Linux delays up to
        // 40 ms when it has nothing to send.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 65536];
            while s.read(&mut buf).await.unwrap_or(0) > 0 {
                s.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_micros(300)).await;
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nevent")
                    .await
                    .unwrap();
            }
        });
        let mut w = wire(port);
        let (answer, poll) = (post("/a", b"{}"), get("/b"));
        let started = std::time::Instant::now();
        for _ in 0..10 {
            let a = w.exchange(&[&answer, &poll]).await.unwrap();
            assert_eq!(&a[1].body[..], b"event");
        }
        // Held, the ten would take 400 ms or more; answered at once, a few.
        let took = started.elapsed();
        assert!(took < Duration::from_millis(250), "{took:?}");
    }
}
