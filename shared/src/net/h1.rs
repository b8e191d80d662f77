//! HTTP/1.1 on a kept connection, written and read in the caller's own task: requests go out as
//! one write, answers are read with their length, chunked, or to the end of the connection.
//! Used by the runtime API's loop (`lambda::wire`, which pipelines two requests in one write) and
//! by the calls a request makes (`net::conn`, one at a time per connection).
//!
//! hyper's client drives each connection from a task of its own: a request was handed to that
//! task, written and read there, and its answer handed back, two task wakes per exchange and its
//! dispatcher's state machine around them. A Lambda instance makes one call at a time per
//! connection and reads every answer whole, so the caller reads and writes the socket itself.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::Context;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Most headers an answer may have (hyper's limit: S3 answers carry an object's metadata).
const MAX_HEADERS: usize = 100;
/// Longest answer head read.
const MAX_HEAD: usize = 64 * 1024;
/// Largest answer body read: WeChat's codes and the kept objects are tens of KB, AWS's JSON
/// answers smaller still. A larger one is refused, not allocated.
const MAX_BODY: usize = 32 * 1024 * 1024;
/// Room made in the read buffer before a read, when the answer's length is not known yet.
const READ_CHUNK: usize = 8 * 1024;

/// A TCP connection to `host` (an IPv6 address with or without a URL's brackets) and `port`,
/// Nagle's algorithm off: a request goes out whole in one write and should not wait to.
pub(crate) async fn connect_tcp(host: &str, port: u16) -> Result<tokio::net::TcpStream, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::net::TcpStream::connect((bare, port))
        .await
        .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// What a call got back: its status, its head (status line and headers, as sent: see
/// [`Answer::header`]) and its body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub head: Bytes,
    pub body: Bytes,
}

/// One connection and what was read on it past the last answer taken.
pub(crate) struct Link<S> {
    stream: S,
    buf: BytesMut,
}

/// How reading an answer went wrong.
#[derive(Debug)]
pub(crate) enum ReadFail {
    /// The connection ended (or was reset) before any byte of the answer.
    ClosedBeforeAnswer,
    Other(String),
}

impl std::fmt::Display for ReadFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFail::ClosedBeforeAnswer => f.write_str("the connection closed before an answer"),
            ReadFail::Other(e) => f.write_str(e),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Link<S> {
    pub fn new(stream: S) -> Link<S> {
        Link {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Whether bytes past the last answer taken are already here.
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Whether an idle connection can no longer carry a request: the server closed or reset it,
    /// or sent something unasked. Looks once without waiting (a system call at most: tokio knows
    /// a socket with nothing to read after its last `EAGAIN`).
    pub fn is_broken(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut one = [0u8; 1];
        let mut read = ReadBuf::new(&mut one);
        // Ready is an end, bytes nobody asked for, or an error.
        Pin::new(&mut self.stream)
            .poll_read(&mut cx, &mut read)
            .is_ready()
    }

    /// Writes `parts` (one request or more, whole) in as few writes as the socket takes.
    pub async fn write_all(&mut self, parts: &[&[u8]]) -> std::io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = parts
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| IoSlice::new(p))
            .collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            let n = self.stream.write_vectored(slices).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut slices, n);
        }
        // TLS keeps what it wrote until flushed; TCP's flush does nothing.
        self.stream.flush().await
    }

    /// Reads more into the buffer; false at the end of the connection.
    async fn fill(&mut self, at_least: usize) -> Result<bool, String> {
        // Room grows with what arrives, not with what an answer announces.
        self.buf.reserve(at_least.clamp(READ_CHUNK, 1024 * 1024));
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) => Err(format!("read: {e}")),
        }
    }

    /// One answer, and whether the connection stays open after it. `to_head`: the answer is to a
    /// `HEAD` request, which has no body whatever its length says.
    pub async fn read_answer(&mut self, to_head: bool) -> Result<(Answer, bool), ReadFail> {
        let mut started = !self.buf.is_empty();
        loop {
            let head = {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut parsed = httparse::Response::new(&mut headers);
                match parsed.parse(&self.buf) {
                    Ok(httparse::Status::Complete(len)) => Some(head_of(&parsed, len)),
                    Ok(httparse::Status::Partial) => None,
                    Err(e) => return Err(ReadFail::Other(format!("the answer's head: {e}"))),
                }
            };
            match head {
                Some(head) => {
                    let Head {
                        status,
                        len,
                        keep,
                        length,
                        chunked,
                    } = head.map_err(ReadFail::Other)?;
                    let head = self.buf.split_to(len).freeze();
                    // An interim answer (100 Continue): the real one follows.
                    if status.is_informational() {
                        started = !self.buf.is_empty();
                        continue;
                    }
                    let (body, keep) = if to_head {
                        (Bytes::new(), keep)
                    } else {
                        self.read_body(status, length, chunked, keep)
                            .await
                            .map_err(ReadFail::Other)?
                    };
                    return Ok((Answer { status, head, body }, keep));
                }
                None if self.buf.len() > MAX_HEAD => {
                    return Err(ReadFail::Other(format!(
                        "the answer's head is longer than {MAX_HEAD} bytes"
                    )));
                }
                None => match self.fill(0).await {
                    Ok(true) => started = true,
                    Ok(false) if !started => return Err(ReadFail::ClosedBeforeAnswer),
                    Ok(false) => {
                        return Err(ReadFail::Other(
                            "the connection closed within an answer's head".into(),
                        ));
                    }
                    // A reset before any byte of the answer is the same as a close.
                    Err(_) if !started => return Err(ReadFail::ClosedBeforeAnswer),
                    Err(e) => return Err(ReadFail::Other(e)),
                },
            }
        }
    }

    async fn read_body(
        &mut self,
        status: StatusCode,
        length: Option<usize>,
        chunked: bool,
        keep: bool,
    ) -> Result<(Bytes, bool), String> {
        if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Ok((Bytes::new(), keep));
        }
        if chunked {
            return Ok((self.read_chunked().await?, keep));
        }
        if let Some(length) = length {
            if length > MAX_BODY {
                return Err(format!(
                    "an answer of {length} bytes (at most {MAX_BODY} are read)"
                ));
            }
            while self.buf.len() < length {
                if !self.fill(length - self.buf.len()).await? {
                    return Err("the connection closed within an answer's body".into());
                }
            }
            return Ok((self.buf.split_to(length).freeze(), keep));
        }
        // Neither: the body is what comes until the connection ends.
        while self.fill(0).await? {
            if self.buf.len() > MAX_BODY {
                return Err(format!("an answer longer than {MAX_BODY} bytes"));
            }
        }
        Ok((self.buf.split().freeze(), false))
    }

    async fn read_chunked(&mut self) -> Result<Bytes, String> {
        let mut body = BytesMut::new();
        loop {
            let (size_len, size) = loop {
                match httparse::parse_chunk_size(&self.buf) {
                    // (httparse reads a line without digits as 0: the end, cut short.)
                    Ok(httparse::Status::Complete(_))
                        if !self.buf.first().is_some_and(u8::is_ascii_hexdigit) =>
                    {
                        return Err("a chunk's size line has no size".into());
                    }
                    Ok(httparse::Status::Complete((len, size))) => break (len, size),
                    Ok(httparse::Status::Partial) => {
                        if !self.fill(0).await? {
                            return Err("the connection closed within a chunked body".into());
                        }
                    }
                    Err(_) => return Err("a chunk's size is not hexadecimal".into()),
                }
            };
            let size = usize::try_from(size)
                .ok()
                .filter(|size| body.len().saturating_add(*size) <= MAX_BODY)
                .ok_or_else(|| format!("a chunked answer longer than {MAX_BODY} bytes"))?;
            if size == 0 {
                self.buf.advance(size_len);
                // Trailers, if any, then the empty line.
                loop {
                    match self.buf.windows(2).position(|w| w == b"\r\n") {
                        Some(0) => {
                            self.buf.advance(2);
                            return Ok(body.freeze());
                        }
                        Some(at) => self.buf.advance(at + 2),
                        None => {
                            if !self.fill(0).await? {
                                return Err("the connection closed within a chunked body".into());
                            }
                        }
                    }
                }
            }
            let whole = size_len + size + 2;
            while self.buf.len() < whole {
                if !self.fill(whole - self.buf.len()).await? {
                    return Err("the connection closed within a chunked body".into());
                }
            }
            self.buf.advance(size_len);
            body.extend_from_slice(&self.buf[..size]);
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err("a chunk does not end with CRLF".into());
            }
            self.buf.advance(size + 2);
        }
    }
}

/// What reading an answer needs of its head; its headers stay in the head's bytes, read when
/// asked for ([`Answer::header`]): an AWS call uses none of them.
struct Head {
    status: StatusCode,
    /// The head's length, its empty line included.
    len: usize,
    /// Whether the connection stays open after the answer.
    keep: bool,
    /// `content-length`.
    length: Option<usize>,
    chunked: bool,
}

fn head_of(parsed: &httparse::Response<'_, '_>, len: usize) -> Result<Head, String> {
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or("the answer has no status")?;
    let mut head = Head {
        status,
        len,
        keep: parsed.version == Some(1),
        length: None,
        chunked: false,
    };
    for h in parsed.headers.iter() {
        let value = || String::from_utf8_lossy(h.value).to_ascii_lowercase();
        if h.name.eq_ignore_ascii_case("content-length") {
            let length = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or("the answer's content-length is not a number")?;
            if head.length.is_some_and(|l| l != length) {
                return Err("the answer gives two different content-lengths".into());
            }
            head.length = Some(length);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked |= value().contains("chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = value();
            if v.contains("close") {
                head.keep = false;
            } else if v.contains("keep-alive") {
                head.keep = true;
            }
        }
    }
    // Both framings: the chunks are read, and the connection not trusted after (a proxy and a
    // server may have read the answer differently).
    if head.chunked && head.length.is_some() {
        head.keep = false;
    }
    Ok(head)
}

impl Answer {
    /// The value of header `name` (any case), the first if it is given more than once; `None`
    /// also for a value that is not text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_lines()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Every header, as a map (what `lambda_runtime`'s `Context` reads); a line that is not a
    /// valid header is left out.
    pub fn headers(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in self.header_lines() {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                map.append(name, value);
            }
        }
        map
    }

    /// The head's header lines, as (name, trimmed value). The head was parsed whole when read.
    fn header_lines(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.head
            .split(|b| *b == b'\n')
            .skip(1) // the status line
            .filter_map(|line| {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let colon = line.iter().position(|b| *b == b':')?;
                let name = std::str::from_utf8(&line[..colon]).ok()?;
                Some((name, line[colon + 1..].trim_ascii()))
            })
    }
}

/// A request's head: `method target`, `Host`, `headers`, and the body's length unless it is a
/// `GET` or `HEAD` without one (S3 refuses a `PUT` without a length, even an empty one).
pub(crate) fn request_head(
    method: &http::Method,
    target: &str,
    host: &str,
    headers: &HeaderMap,
    body_len: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + headers.len() * 48);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name == http::header::HOST || name == http::header::CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = matches!(*method, http::Method::GET | http::Method::HEAD);
    if body_len > 0 || !bodiless {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body_len.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A whole request: [`request_head`] and `body`.
pub(crate) fn request(
    method: &http::Method,
    target: &str,
    host: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Vec<u8> {
    let mut out = request_head(method, target, host, headers, body.len());
    out.extend_from_slice(body);
    out
}

/// For the tests' servers: reads until `buf` holds a whole request head and takes it off (the
/// tests' requests have no body); false at the connection's end.
#[cfg(test)]
pub(crate) async fn read_request_head(
    io: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> bool {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            return true;
        }
        let mut chunk = [0u8; 4096];
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[test]
    fn headers_are_read_from_the_head_when_asked_for() {
        let answer = Answer {
            status: StatusCode::OK,
            head: Bytes::from_static(
                b"HTTP/1.1 200 OK\r\nContent-Type:  application/json \r\nx-a: 1\r\nX-A: 2\r\n\
                  x-empty:\r\nbad line\r\n\r\n",
            ),
            body: Bytes::new(),
        };
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_eq!(answer.header("x-a"), Some("1"), "the first of two");
        assert_eq!(answer.header("x-empty"), Some(""));
        assert_eq!(answer.header("missing"), None);
        let map = answer.headers();
        assert_eq!(map.get_all("x-a").iter().count(), 2);
        assert_eq!(map.len(), 4);
    }

    /// What `read_answer` makes of `raw`, sent whole and then the connection closed.
    async fn answer_to(raw: &[u8]) -> Result<(Answer, bool), ReadFail> {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        server.write_all(raw).await.unwrap();
        drop(server);
        Link::new(client).read_answer(false).await
    }

    /// A broken or hostile server's framing is refused with an error: never a panic (the release
    /// build aborts on one), a huge allocation, or a body cut short passed on as whole.
    #[tokio::test]
    async fn malformed_framing_is_an_error() {
        for (raw, says) in [
            (
                &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\nx"[..],
                "longer than",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n7fffffffffffffff\r\nx",
                "longer than",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 9223372036854775807\r\n\r\nx",
                "at most",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n\r\n\r\n",
                "no size",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc",
                "two different",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nab",
                "not a number",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab",
                "closed within",
            ),
        ] {
            match answer_to(raw).await {
                Err(ReadFail::Other(e)) => assert!(e.contains(says), "{e}"),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
            }
        }
        let endless = vec![b'a'; 100_000];
        let raw = [b"HTTP/1.1 200 OK\r\nx-h: ".as_slice(), &endless].concat();
        let (client, mut server) = tokio::io::duplex(1 << 20);
        server.write_all(&raw).await.unwrap();
        let e = Link::new(client).read_answer(false).await.unwrap_err();
        assert!(e.to_string().contains("head is longer"), "{e}");
    }

    /// What is well formed passes: many headers (S3's metadata), the same length twice, both
    /// framings (read chunked, the connection not kept).
    #[tokio::test]
    async fn lenient_where_the_answer_is_whole() {
        let many: String = (0..90).map(|i| format!("x-amz-meta-{i}: v\r\n")).collect();
        let raw = format!("HTTP/1.1 200 OK\r\n{many}content-length: 2\r\n\r\nok");
        let (a, keep) = answer_to(raw.as_bytes()).await.unwrap();
        assert_eq!((&a.body[..], keep), (&b"ok"[..], true));
        assert_eq!(a.header("x-amz-meta-89"), Some("v"));
        let (a, keep) =
            answer_to(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
        assert_eq!((&a.body[..], keep), (&b"ok"[..], true));
        let (a, keep) = answer_to(
            b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!((&a.body[..], keep), (&b"ok"[..], false));
    }

    #[test]
    fn a_head_says_length_chunking_and_keeping() {
        let parse = |raw: &[u8]| {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(len) = parsed.parse(raw).unwrap() else {
                panic!("partial")
            };
            head_of(&parsed, len)
        };
        let h = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n").unwrap();
        assert_eq!((h.length, h.chunked, h.keep), (Some(12), false, true));
        let h = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\nConnection: Close\r\n\r\n",
        )
        .unwrap();
        assert_eq!((h.length, h.chunked, h.keep), (None, true, false));
        let h = parse(b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n\r\n").unwrap();
        assert!(h.keep);
        assert!(!parse(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().keep);
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
    }
}
