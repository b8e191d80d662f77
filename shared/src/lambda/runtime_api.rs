//! Lambda's runtime API, driven by a loop of our own: the next event is asked for, handled, and
//! its answer (or error) posted back, one at a time, on one kept HTTP/1.1 connection
//! ([`Wire`]). Each answer is written together with the poll for the next event, pipelined, so an
//! invocation costs the runtime API one write and one wait, not two of each. `lambda_runtime`'s
//! own loop goes through a tower stack, a tracing span per invocation, a connection pool and a URL
//! parse per call, which together cost about a tenth of a warm request's CPU here (README,
//! Performance).
//!
//! The event's [`Context`] is `lambda_runtime`'s, built from the same headers. Not done, as for
//! none of these functions it is needed: response streaming, SnapStart hooks, managed
//! concurrency, and `_X_AMZN_TRACE_ID` in the environment (X-Ray's trace id is in the context and
//! in the request's `x-amzn-trace-id` header). A panic aborts the process (the release profile's
//! `panic = "abort"`): Lambda reports the invocation failed and starts a new instance.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use lambda_http::lambda_runtime::{Config, Context, Diagnostic, Error};

use super::wire::Wire;
use crate::net::h1::{self, Answer};

/// The runtime API's version prefix.
const PREFIX: &str = "/2018-06-01/runtime";
/// The header echoed back with an invocation's answer, so that Lambda can refuse a late answer
/// to an invocation it has already given up on.
const INVOCATION_ID: &str = "lambda-runtime-invocation-id";
/// Longest wait for a connection to the runtime API (it is local).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One invocation: its context and its event, unparsed.
pub struct Invocation {
    pub context: Context,
    pub event: Bytes,
    pub answering: Answering,
}

/// What an invocation's answer is posted with.
pub struct Answering {
    request_id: String,
    invocation_id: Option<HeaderValue>,
}

/// An invocation's answer or error, written, waiting to go out with the next poll.
pub struct Posting {
    request_id: String,
    request: Vec<u8>,
}

/// The runtime API of `AWS_LAMBDA_RUNTIME_API`.
pub struct RuntimeApi {
    wire: Wire,
    /// The `Host` header.
    host: String,
    /// The path the API's own paths go under, with its version: `AWS_LAMBDA_RUNTIME_API` may have
    /// one of its own (`cargo lambda watch` gives `127.0.0.1:9000/.rt`).
    base: String,
    /// The poll for the next event, written once.
    next: Vec<u8>,
    config: Arc<Config>,
    user_agent: HeaderValue,
}

impl RuntimeApi {
    /// From the environment Lambda gives a function (`AWS_LAMBDA_RUNTIME_API`,
    /// `AWS_LAMBDA_FUNCTION_NAME`, ...).
    pub fn from_env() -> Result<RuntimeApi, Error> {
        let api = std::env::var("AWS_LAMBDA_RUNTIME_API")
            .map_err(|_| "AWS_LAMBDA_RUNTIME_API is not set: not running in Lambda")?;
        let located = locate(&api).map_err(|e| format!("AWS_LAMBDA_RUNTIME_API {api:?}: {e}"))?;
        for name in [
            "AWS_LAMBDA_FUNCTION_NAME",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            "AWS_LAMBDA_FUNCTION_VERSION",
        ] {
            if std::env::var_os(name).is_none() {
                return Err(format!("{name} is not set: not running in Lambda").into());
            }
        }
        let user_agent = HeaderValue::from_static(concat!("wxmp/", env!("CARGO_PKG_VERSION")));
        let mut headers = HeaderMap::new();
        headers.insert(http::header::USER_AGENT, user_agent.clone());
        let next = h1::request(
            &Method::GET,
            &format!("{}/invocation/next", located.base),
            &located.host,
            &headers,
            b"",
        );
        Ok(RuntimeApi {
            wire: Wire::new(&located.hostname, located.port, CONNECT_TIMEOUT),
            host: located.host,
            base: located.base,
            next,
            config: Arc::new(Config::from_env()),
            user_agent,
        })
    }

    /// Posts `posting` (the last invocation's answer or error), if any, and waits for the next
    /// invocation; both go out in one write. One whose context cannot be read is failed here (its
    /// error posted with the next poll) and the one after it waited for.
    pub async fn next(&mut self, mut posting: Option<Posting>) -> Result<Invocation, Error> {
        loop {
            let answers = match &posting {
                Some(p) => self.wire.exchange(&[&p.request, &self.next]).await,
                None => self.wire.exchange(&[&self.next]).await,
            }
            .map_err(|e| format!("the Lambda runtime API: {}", e.0))?;
            if let Some(p) = posting.take() {
                check_posted(&p, &answers[0]);
            }
            let answer = answers.last().expect("one answer a request");
            // `cargo lambda watch` answers 204 to keep a poll alive: no event, ask again.
            if answer.status == StatusCode::NO_CONTENT {
                continue;
            }
            if !answer.status.is_success() {
                return Err(format!(
                    "the Lambda runtime API answered {} to the next-event poll",
                    answer.status
                )
                .into());
            }
            let headers = &answer.headers();
            let request_id = headers
                .get("lambda-runtime-aws-request-id")
                .and_then(|v| v.to_str().ok())
                .ok_or("the next event has no lambda-runtime-aws-request-id")?;
            if headers.get("lambda-runtime-deadline-ms").is_none() {
                return Err("the next event has no lambda-runtime-deadline-ms".into());
            }
            let answering = Answering {
                request_id: request_id.to_string(),
                invocation_id: headers.get(INVOCATION_ID).cloned(),
            };
            match Context::new(request_id, self.config.clone(), headers) {
                Ok(context) => {
                    return Ok(Invocation {
                        answering,
                        context,
                        event: answer.body.clone(),
                    });
                }
                // A client context or Cognito identity that is not the JSON it should be: that
                // invocation's error, not the end of the instance. Not serde's message: it
                // quotes the values it met.
                Err(_) => {
                    let error = Diagnostic {
                        error_type: "InvalidContext".into(),
                        error_message: "the invocation's client context or Cognito identity is \
                                        not the JSON Lambda documents"
                            .into(),
                    };
                    tracing::error!(
                        request_id = answering.request_id,
                        error = error.error_message,
                        "invocation refused"
                    );
                    posting = Some(self.fail(&answering, &error)?);
                }
            }
        }
    }

    /// The invocation's answer (JSON), to be posted with the next poll.
    pub fn respond(&self, invocation: &Answering, answer: Vec<u8>) -> Posting {
        let target = format!(
            "{}/invocation/{}/response",
            self.base, invocation.request_id
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.post(invocation, &target, headers, &answer)
    }

    /// That the invocation failed, to be posted with the next poll.
    pub fn fail(&self, invocation: &Answering, error: &Diagnostic) -> Result<Posting, Error> {
        let target = format!("{}/invocation/{}/error", self.base, invocation.request_id);
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            "lambda-runtime-function-error-type",
            HeaderValue::from_static("unhandled"),
        );
        let body = serde_json::to_vec(error)?;
        Ok(self.post(invocation, &target, headers, &body))
    }

    fn post(
        &self,
        invocation: &Answering,
        target: &str,
        mut headers: HeaderMap,
        body: &[u8],
    ) -> Posting {
        headers.insert(http::header::USER_AGENT, self.user_agent.clone());
        if let Some(id) = &invocation.invocation_id {
            headers.insert(INVOCATION_ID, id.clone());
        }
        Posting {
            request_id: invocation.request_id.clone(),
            request: h1::request(&Method::POST, target, &self.host, &headers, body),
        }
    }
}

/// 413: the answer is over Lambda's limit; 400/403: the invocation is no longer this instance's.
/// Either way the invocation is over, and the next one can be taken.
fn check_posted(posting: &Posting, answer: &Answer) {
    if !answer.status.is_success() {
        tracing::error!(
            request_id = posting.request_id,
            status = answer.status.as_u16(),
            answer = %String::from_utf8_lossy(&answer.body),
            "the Lambda runtime API refused an invocation's answer"
        );
    }
}

/// Where the runtime API is.
#[derive(Debug, PartialEq, Eq)]
struct Located {
    hostname: String,
    port: u16,
    /// The `Host` header: the host, and the port when it is not 80.
    host: String,
    /// The path its calls go under.
    base: String,
}

/// Where the runtime API of `AWS_LAMBDA_RUNTIME_API` is (Lambda gives `host:port`; `cargo lambda
/// watch` a URL with a path, `http://127.0.0.1:9000/.rt`).
fn locate(api: &str) -> Result<Located, String> {
    let url = if api.contains("://") {
        reqwest::Url::parse(api)
    } else {
        reqwest::Url::parse(&format!("http://{api}"))
    }
    .map_err(|e| e.to_string())?;
    if url.scheme() != "http" {
        return Err(format!("unsupported scheme {}", url.scheme()));
    }
    Ok(Located {
        hostname: url.host_str().ok_or("the URL has no host")?.to_string(),
        port: url.port_or_known_default().ok_or("the URL has no port")?,
        host: crate::net::conn::authority(&url),
        base: format!("{}{PREFIX}", url.path().trim_end_matches('/')),
    })
}

/// Handles invocations until the runtime API fails: each event given to `handle`, its answer or
/// error posted back with the next poll. An `Err` from `handle` is the invocation's error
/// (Lambda's retries of asynchronous events see it); the loop goes on.
pub async fn serve<F, Fut>(mut handle: F) -> Result<(), Error>
where
    F: FnMut(Bytes, Context) -> Fut,
    Fut: Future<Output = Result<Vec<u8>, Diagnostic>>,
{
    let mut api = RuntimeApi::from_env()?;
    let mut posting = None;
    loop {
        let Invocation {
            context,
            event,
            answering,
        } = api.next(posting.take()).await?;
        posting = Some(match handle(event, context).await {
            Ok(answer) => api.respond(&answering, answer),
            Err(error) => api.fail(&answering, &error)?,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_api_is_found_as_lambda_and_cargo_lambda_give_it() {
        let at = |hostname: &str, port, host: &str, base: &str| Located {
            hostname: hostname.into(),
            port,
            host: host.into(),
            base: base.into(),
        };
        assert_eq!(
            locate("127.0.0.1:9001").unwrap(),
            at("127.0.0.1", 9001, "127.0.0.1:9001", "/2018-06-01/runtime")
        );
        assert_eq!(
            locate("http://127.0.0.1:9000/.rt").unwrap(),
            at(
                "127.0.0.1",
                9000,
                "127.0.0.1:9000",
                "/.rt/2018-06-01/runtime"
            )
        );
        assert_eq!(
            locate("http://localhost/").unwrap(),
            at("localhost", 80, "localhost", "/2018-06-01/runtime")
        );
        assert!(locate("ftp://127.0.0.1:21").is_err());
        assert!(locate("https://127.0.0.1:21").is_err());
    }
}
