//! Structured JSON logs, one object per line (CloudWatch Logs Insights reads the fields):
//! `{"timestamp":"2026-11-24T12:00:00.123456Z","level":"INFO","message":"request served",
//! "request_id":"…",…}`, every field of the event at the top level. A line written inside a
//! request carries that request's `request_id` (from [`crate::scope`]) even when the event does
//! not name it.
//!
//! Level from `RUST_LOG` (`info` by default; `debug`, or per crate: `warn,wxmp=debug`). Spans are
//! not recorded (no line prints them; the Lambda runtime opens one per invocation, which cost a
//! tenth of a warm request's CPU). Nothing secret is ever given to a log macro: secrets live in
//! [`crate::secret::Secret`], which prints as `<redacted>`.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;

use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

pub fn init() {
    let (filter, refused) = filter(std::env::var("RUST_LOG").ok().as_deref());
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(JsonLines)
        .try_init()
        .is_ok();
    if installed && let Some(value) = refused {
        tracing::warn!(
            rust_log = value,
            "RUST_LOG is not a list of [target=]level; logging at info"
        );
    }
}

/// `RUST_LOG` as a filter (`info` when unset); a value it cannot read gives `info` and is returned.
fn filter(rust_log: Option<&str>) -> (Targets, Option<String>) {
    let default = || Targets::new().with_default(Level::INFO);
    match rust_log.map(str::trim).filter(|v| !v.is_empty()) {
        None => (default(), None),
        // As EnvFilter read it: directives trimmed, empty ones (a trailing comma) skipped.
        Some(v) => {
            let directives: Vec<&str> = v
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .collect();
            match directives.join(",").parse::<Targets>() {
                Ok(t) if !directives.is_empty() => (t, None),
                _ => (default(), Some(v.to_string())),
            }
        }
    }
}

/// Writes each event as one JSON line to stdout; turns every span off.
struct JsonLines;

impl<S: Subscriber> Layer<S> for JsonLines {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.is_span() {
            Interest::never()
        } else {
            Interest::always()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        meta.is_event()
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        thread_local! {
            static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
        }
        // (After the thread's locals are gone, at exit, an event is dropped.)
        let _ = LINE.try_with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                return; // an event while formatting one (a field's Debug logging): dropped
            };
            line.clear();
            format_line(&mut line, event, std::time::SystemTime::now());
            let mut out = std::io::stdout().lock();
            let _ = match TAIL.try_with(|t| t.take()) {
                Ok(tail) if !tail.is_empty() => {
                    let mut all = Vec::with_capacity(line.len() + tail.len());
                    all.extend_from_slice(line.as_bytes());
                    all.extend_from_slice(&tail);
                    out.write_all(&all)
                }
                _ => out.write_all(line.as_bytes()),
            };
        });
    }
}

thread_local! {
    /// Lines to go out in the same write as the next log line.
    static TAIL: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Has `lines` (whole lines) written together with the next log line of this thread, in one
/// write: a request's metrics go out with its log line. [`write_held`] writes them if no log
/// line comes (its level filtered out).
pub(crate) fn hold_for_next_line(lines: Vec<u8>) {
    let _ = TAIL.try_with(|t| t.borrow_mut().extend_from_slice(&lines));
}

/// Writes what [`hold_for_next_line`] holds, if no log line has taken it.
pub(crate) fn write_held() {
    let Ok(tail) = TAIL.try_with(|t| t.take()) else {
        return;
    };
    if !tail.is_empty() {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&tail).and_then(|_| out.flush());
    }
}

fn format_line(line: &mut String, event: &Event<'_>, now: std::time::SystemTime) {
    let meta = event.metadata();
    line.push_str("{\"timestamp\":\"");
    timestamp(line, now);
    line.push_str("\",\"level\":\"");
    line.push_str(meta.level().as_str());
    line.push('"');
    event.record(&mut Fields { line });
    if meta.fields().field("request_id").is_none() {
        crate::scope::with_request_id(|id| {
            line.push_str(",\"request_id\":");
            json_str(line, id);
        });
    }
    line.push_str("}\n");
}

struct Fields<'a> {
    line: &'a mut String,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        self.line.push(',');
        json_str(self.line, field.name());
        self.line.push(':');
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        json_str(self.line, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.line, "{value}");
        } else {
            self.line.push_str("null");
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.line.push_str(if value { "true" } else { "false" });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.key(field);
        json_display(self.line, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.key(field);
        json_display(self.line, &format_args!("{value:?}"));
    }
}

/// A JSON string of `value`'s text, escaped as JSON requires.
fn json_display(line: &mut String, value: &dyn std::fmt::Display) {
    let mut text = String::new();
    let _ = write!(text, "{value}");
    json_str(line, &text);
}

fn json_str(line: &mut String, value: &str) {
    line.push('"');
    let mut start = 0;
    for (i, b) in value.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        line.push_str(&value[start..i]);
        if escaped.is_empty() {
            let _ = write!(line, "\\u{b:04x}");
        } else {
            line.push_str(escaped);
        }
        start = i + 1;
    }
    line.push_str(&value[start..]);
    line.push('"');
}

/// RFC 3339 in UTC with microseconds: `2026-11-24T12:00:00.123456Z`.
fn timestamp(line: &mut String, now: std::time::SystemTime) {
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let rem = secs % 86_400;
    let (year, month, day) = crate::clock::civil_from_days((secs / 86_400) as i64);
    let _ = write!(
        line,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        since.subsec_micros()
    );
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let mut s = String::new();
        timestamp(
            &mut s,
            UNIX_EPOCH + Duration::from_micros(1_795_003_200_123_456),
        );
        assert_eq!(s, "2026-11-18T12:00:00.123456Z");
        s.clear();
        timestamp(&mut s, UNIX_EPOCH + Duration::from_secs(951_782_400)); // a leap day
        assert_eq!(s, "2000-02-29T00:00:00.000000Z");
        s.clear();
        timestamp(&mut s, UNIX_EPOCH);
        assert_eq!(s, "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn strings_are_escaped_as_json() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(
            serde_json::from_str::<String>(&s).unwrap(),
            "a\"b\\c\nd\u{1}é"
        );
    }

    #[test]
    fn rust_log_is_read_or_refused() {
        assert!(filter(None).1.is_none());
        assert!(filter(Some("warn,wxmp=debug")).1.is_none());
        // Spaces and a trailing comma as EnvFilter took them.
        let (t, refused) = filter(Some(" warn, wxmp=debug ,"));
        assert!(refused.is_none());
        assert!(t.would_enable("wxmp", &Level::DEBUG));
        assert!(!t.would_enable("hyper", &Level::INFO));
        assert!(t.would_enable("hyper", &Level::WARN));
        assert!(filter(Some(",")).1.is_some());
        let (t, refused) = filter(Some("[span{a=1}]=debug"));
        assert_eq!(refused.as_deref(), Some("[span{a=1}]=debug"));
        assert!(t.would_enable("wxmp", &Level::INFO));
        assert!(!t.would_enable("wxmp", &Level::DEBUG));
    }

    /// A line as the layer writes it, with every kind of field and a request's id.
    #[tokio::test]
    async fn events_are_one_json_object_with_the_request_id() {
        use std::sync::{Arc, Mutex};
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        struct Capture(Arc<Mutex<Vec<String>>>);
        impl<S: Subscriber> Layer<S> for Capture {
            fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
                let mut line = String::new();
                format_line(&mut line, event, std::time::SystemTime::now());
                self.0.lock().unwrap().push(line);
            }
        }
        let subscriber = tracing_subscriber::registry().with(Capture(lines.clone()));
        let _guard = tracing::subscriber::set_default(subscriber);
        let err = std::io::Error::other("boom \"quoted\"");
        crate::scope::run_request("req-1".into(), None, async {
            tracing::info!(n = 3_i64, u = 7_u64, f = 1.5, inf = f64::INFINITY, ok = true, s = "x\ny", error = &err as &dyn std::error::Error, d = ?Some(1), "hello {}", "world");
            tracing::warn!(request_id = "given", "explicit id");
        })
        .await;
        tracing::error!("outside a request");
        let lines = lines.lock().unwrap().clone();
        let v: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| {
                assert!(l.ends_with("}\n") && l.matches('\n').count() == 1, "{l}");
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))
            })
            .collect();
        assert_eq!(v[0]["level"], "INFO");
        assert_eq!(v[0]["message"], "hello world");
        assert_eq!(v[0]["n"], 3);
        assert_eq!(v[0]["u"], 7);
        assert_eq!(v[0]["f"], 1.5);
        assert!(v[0]["inf"].is_null());
        assert_eq!(v[0]["ok"], true);
        assert_eq!(v[0]["s"], "x\ny");
        assert_eq!(v[0]["error"], "boom \"quoted\"");
        assert_eq!(v[0]["d"], "Some(1)");
        assert_eq!(v[0]["request_id"], "req-1");
        assert!(v[0]["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(v[1]["request_id"], "given");
        assert_eq!(lines[1].matches("request_id").count(), 1);
        assert_eq!(v[2]["level"], "ERROR");
        assert!(v[2].get("request_id").is_none());
    }
}
