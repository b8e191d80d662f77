//! Structured JSON logs, one object per line (CloudWatch Logs Insights reads the fields).
//! Level from `RUST_LOG` (default `info`). Nothing secret is ever given to a log macro: secrets
//! live in [`crate::secret::Secret`], which prints as `<redacted>`.

pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_target(false)
        .with_current_span(false)
        .flatten_event(true)
        .with_writer(std::io::stdout)
        .try_init();
}
