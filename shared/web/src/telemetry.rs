//! Logs: JSON lines on Lambda (CloudWatch parses them), readable text locally. The level comes from
//! `RUST_LOG` (default `info`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// JSON logs for Lambda; a second call does nothing.
pub fn init_json_logs() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter())
        .with_current_span(false)
        .without_time() // CloudWatch stamps every line
        .try_init();
}

/// Human-readable logs for the local app, coloured only on a terminal (not in a log file); a
/// second call does nothing.
pub fn init_text_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .try_init();
}
