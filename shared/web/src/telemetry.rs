//! Logs: JSON lines on Lambda (CloudWatch parses them), plain text locally. The level comes from
//! `RUST_LOG` (default `info`), with two rules no level can lift:
//!
//! - **Only the app's own crates log below `info`.** Every other crate (the Lambda runtime, which
//!   logs each raw event at `trace`; hyper, h2, reqwest, rustls, the AWS SDK, tower, axum, …, which
//!   log requests and headers at `debug`/`trace`) is capped at `info`, whatever `RUST_LOG` says,
//!   even `RUST_LOG=trace` or `RUST_LOG=lambda_runtime=trace`: a raw install body carries the
//!   tenant's shared secret and every request an `Authorization` JWT. The cap is a filter of its own
//!   beside `RUST_LOG`'s, so no directive can re-open it; it is an allow-list ([`OWN_CRATES`]), so a
//!   new dependency is capped too.
//! - **Every log line is one line.** Control characters (`\n`, `\r`, ESC, …), Unicode line and
//!   paragraph separators and bidirectional overrides are escaped in everything written (`\n`,
//!   `\u{1b}` in text, `\u001b` in JSON), except the newline that ends the line, so a value that came
//!   from a caller cannot forge a line. Text logs are therefore never coloured.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;

use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, Layered, SubscriberExt};
use tracing_subscriber::registry::Registry;
use tracing_subscriber::util::SubscriberInitExt;

/// The crates (log targets' first segment) that may log below `info`: the workspace's libraries
/// and binaries. `understudy_*` crates are included by their prefix.
pub const OWN_CRATES: &[&str] = &[
    "understudy",
    "connect_auth",
    "connect_jwt",
    "confluence_sim",
    "lifecycle",
    "webhooks",
    "edit_worker",
    "edit_api",
];

/// The most verbose level any other crate may log at.
pub const FOREIGN_CRATES_MAX_LEVEL: Level = Level::INFO;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, without a timestamp (CloudWatch stamps every line): Lambda.
    Json,
    /// Readable text, uncoloured: the local app.
    Text,
}

/// The subscriber the functions install, writing to `writer`. `directives` are `RUST_LOG`'s
/// (`None` or invalid: `info`). Production passes `RUST_LOG` and stdout; tests pass a level and a
/// writer that keeps what is written.
pub fn subscriber<W>(
    format: LogFormat,
    directives: Option<&str>,
    writer: W,
) -> impl Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = directives
        .and_then(|d| EnvFilter::try_new(d).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let base: Base = Registry::default().with(filter).with(CapForeignCrates);
    base.with(format_layer(format, writer))
}

/// JSON logs for Lambda; a second call does nothing.
pub fn init_json_logs() {
    init(LogFormat::Json);
}

/// JSON logs for Lambda at the level `directives` name (`RUST_LOG`'s syntax, `info` when `None`),
/// for a caller that has read `RUST_LOG` itself; a second call does nothing.
pub fn init_json_logs_at(directives: Option<&str>) {
    let _ = subscriber(LogFormat::Json, directives, io::stdout).try_init();
}

/// Text logs for the local app; a second call does nothing.
pub fn init_text_logs() {
    init(LogFormat::Text);
}

fn init(format: LogFormat) {
    let directives = std::env::var("RUST_LOG").ok();
    // Also routes the `log` crate's records (rustls, …) through the same filters.
    let _ = subscriber(format, directives.as_deref(), io::stdout).try_init();
}

/// `RUST_LOG`'s filter, then the cap on foreign crates.
type Base = Layered<CapForeignCrates, Layered<EnvFilter, Registry>>;

fn format_layer<W>(format: LogFormat, writer: W) -> Box<dyn Layer<Base> + Send + Sync + 'static>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer();
    match format {
        LogFormat::Json => layer
            .json()
            // The use case's span (tenant, page, job) on every line, so that one query on the
            // tenant finds the engine's lines too.
            .with_current_span(true)
            .without_time()
            .with_writer(OneLine::new(writer, Escapes::Json))
            .boxed(),
        LogFormat::Text => layer
            .with_target(false)
            .with_ansi(false)
            .with_writer(OneLine::new(writer, Escapes::Text))
            .boxed(),
    }
}

/// True when the event or span may be logged whatever `RUST_LOG` allows: it is the app's own, or
/// at most [`FOREIGN_CRATES_MAX_LEVEL`].
pub fn passes_cap(metadata: &Metadata<'_>) -> bool {
    *metadata.level() <= FOREIGN_CRATES_MAX_LEVEL || is_own(metadata.target())
}

fn is_own(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    krate.starts_with("understudy_") || OWN_CRATES.contains(&krate)
}

/// The cap, as a filter beside `RUST_LOG`'s: an event must pass both.
#[derive(Debug, Clone, Copy)]
struct CapForeignCrates;

impl<S: Subscriber> Layer<S> for CapForeignCrates {
    fn register_callsite(
        &self,
        metadata: &'static Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if passes_cap(metadata) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        passes_cap(metadata)
    }
}

/// How a character that would break the line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escapes {
    /// `\u001b`: valid inside a JSON string, where these characters can only be (serde_json
    /// escapes the C0 controls itself; DEL, C1 controls and U+2028/U+2029 it leaves raw).
    Json,
    /// `\n`, `\r`, `\t`, else `\u{1b}`.
    Text,
}

/// A `MakeWriter` whose writers escape what would break a line. tracing-subscriber's fmt layer
/// formats each event into one buffer and writes it with one `write_all`, so each `write` here is
/// one whole event and its final newline is the only one kept.
#[derive(Debug)]
struct OneLine<M> {
    inner: M,
    escapes: Escapes,
}

impl<M> OneLine<M> {
    fn new(inner: M, escapes: Escapes) -> Self {
        Self { inner, escapes }
    }
}

impl<'w, M: MakeWriter<'w>> MakeWriter<'w> for OneLine<M> {
    type Writer = OneLineWriter<M::Writer>;

    fn make_writer(&'w self) -> Self::Writer {
        OneLineWriter {
            inner: self.inner.make_writer(),
            escapes: self.escapes,
        }
    }

    fn make_writer_for(&'w self, meta: &Metadata<'_>) -> Self::Writer {
        OneLineWriter {
            inner: self.inner.make_writer_for(meta),
            escapes: self.escapes,
        }
    }
}

#[derive(Debug)]
struct OneLineWriter<W> {
    inner: W,
    escapes: Escapes,
}

impl<W: io::Write> io::Write for OneLineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.inner
            .write_all(one_line(&text, self.escapes).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Characters that end, hide or reorder a line: controls (C0, DEL, C1), the Unicode line and
/// paragraph separators, and the bidirectional marks and overrides.
fn breaks_line(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every character that [`breaks_line`] escaped, except one final `\n`.
fn one_line(text: &str, escapes: Escapes) -> Cow<'_, str> {
    let (line, end) = match text.strip_suffix('\n') {
        Some(line) => (line, "\n"),
        None => (text, ""),
    };
    if !line.chars().any(breaks_line) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in line.chars() {
        match (breaks_line(c), escapes, c) {
            (false, _, c) => out.push(c),
            (true, Escapes::Text, '\n') => out.push_str("\\n"),
            (true, Escapes::Text, '\r') => out.push_str("\\r"),
            (true, Escapes::Text, '\t') => out.push_str("\\t"),
            (true, Escapes::Text, c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            // Every character breaks_line names is in the Basic Multilingual Plane.
            (true, Escapes::Json, c) => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
        }
    }
    out.push_str(end);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Everything the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
        fn writer(&self) -> impl Fn() -> CaptureWriter + Send + Sync + 'static {
            let sink = self.0.clone();
            move || CaptureWriter(sink.clone())
        }
    }

    struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

    impl io::Write for CaptureWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn capture(format: LogFormat, directives: &str, log: impl FnOnce()) -> String {
        let captured = Captured::default();
        let subscriber = subscriber(format, Some(directives), captured.writer());
        tracing::subscriber::with_default(subscriber, log);
        captured.text()
    }

    #[test]
    fn foreign_crates_stay_at_info_whatever_the_level_and_ours_follow_it() {
        // (RUST_LOG, whether it lets our trace event through, whether it lets an info event of
        // lambda_runtime through)
        for (directives, ours, theirs) in [
            ("trace", true, true),
            ("lambda_runtime=trace", false, true),
            (
                "trace,lambda_runtime=trace,hyper=trace,aws_smithy_runtime=trace",
                true,
                true,
            ),
            (
                "off,lambda_runtime::layers::api_response=trace,understudy_web=trace",
                true,
                false,
            ),
        ] {
            let out = capture(LogFormat::Json, directives, || {
                tracing::trace!(target: "lambda_runtime::layers::api_response",
                    body = "SECRET-RAW-EVENT", "raw JSON event received from Lambda");
                tracing::debug!(target: "hyper::proto::h1::io", "SECRET-HEADERS");
                tracing::trace!(target: "rustls::client", "SECRET-TLS");
                tracing::debug!(target: "aws_smithy_runtime::client", "SECRET-SDK");
                tracing::trace!(target: "understudy_web::error", "ours-at-trace");
                tracing::info!(target: "lambda_runtime", "theirs-at-info");
            });
            assert!(!out.contains("SECRET"), "{directives}: {out}");
            assert_eq!(out.contains("ours-at-trace"), ours, "{directives}: {out}");
            assert_eq!(
                out.contains("theirs-at-info"),
                theirs,
                "{directives}: {out}"
            );
        }
        // And RUST_LOG still lowers every crate, ours included.
        let out = capture(LogFormat::Text, "warn", || {
            tracing::info!(target: "understudy_web", "ours-at-info");
            tracing::info!(target: "lambda_runtime", "theirs-at-info");
            tracing::warn!(target: "lambda_runtime", "theirs-at-warn");
        });
        assert!(
            !out.contains("at-info") && out.contains("theirs-at-warn"),
            "{out}"
        );
    }

    #[test]
    fn the_cap_knows_our_crates_by_their_first_segment() {
        for own in [
            "understudy",
            "understudy_web::error",
            "understudy_lifecycle",
            "connect_auth::keys",
            "edit_worker",
        ] {
            assert!(is_own(own), "{own}");
        }
        for foreign in [
            "lambda_runtime",
            "understudyx",
            "hyper_util::client",
            "aws_sdk_dynamodb",
            "",
            "log",
        ] {
            assert!(!is_own(foreign), "{foreign}");
        }
    }

    #[test]
    fn a_value_with_a_newline_cannot_forge_a_text_line() {
        let forged = "x\nINFO understudy: forged line\r\u{1b}[2K\u{85}\u{2028}\u{202e}end";
        let out = capture(LogFormat::Text, "info", || {
            tracing::info!(reason = %forged, "request refused");
            tracing::info!(reason = ?forged, "request refused");
            tracing::info!("{forged}");
        });
        assert_eq!(out.matches('\n').count(), 3, "{out}");
        for line in out.lines() {
            assert!(!line.chars().any(breaks_line), "{line:?}");
        }
        assert!(out.contains("x\\nINFO understudy: forged line\\r"), "{out}");
    }

    #[test]
    fn json_lines_carry_the_use_cases_span_so_one_query_finds_a_tenants_lines() {
        let out = capture(LogFormat::Json, "info", || {
            let span = tracing::info_span!("accept", client_key = "tenant-1", page_id = "42");
            let _entered = span.enter();
            tracing::info!(acted_as = "app", "edit executed");
        });
        let line: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(line["span"]["client_key"], "tenant-1", "{out}");
        assert_eq!(line["span"]["page_id"], "42");
        assert_eq!(line["fields"]["acted_as"], "app");
    }

    #[test]
    fn json_lines_stay_one_line_and_keep_the_value() {
        let forged = "x\nINFO forged\r\u{1b}[2K\u{7f}\u{85}\u{2028}\u{202e}\t\\end";
        let out = capture(LogFormat::Json, "info", || {
            tracing::info!(reason = %forged, "request refused");
        });
        assert_eq!(out.matches('\n').count(), 1, "{out}");
        assert!(out.ends_with('\n'));
        assert!(!out.trim_end().chars().any(breaks_line), "{out}");
        let line: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(line["fields"]["reason"], forged);
        assert_eq!(line["fields"]["message"], "request refused");
    }

    #[test]
    fn refusals_logged_by_api_error_are_one_line() {
        let out = capture(LogFormat::Text, "info", || {
            let _ = crate::ApiError::BadRequest("bad\nINFO forged line".into()).into_response("k");
        });
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.contains("bad\\nINFO forged line"), "{out}");
    }

    #[test]
    fn escaping_keeps_the_final_newline_only() {
        assert_eq!(one_line("plain\n", Escapes::Text), "plain\n");
        assert!(matches!(
            one_line("plain\n", Escapes::Text),
            Cow::Borrowed(_)
        ));
        assert_eq!(one_line("a\nb\n", Escapes::Text), "a\\nb\n");
        assert_eq!(one_line("a\n\n", Escapes::Text), "a\\n\n");
        assert_eq!(
            one_line("a\r\t\u{0}\u{1b}", Escapes::Text),
            "a\\r\\t\\u{0}\\u{1b}"
        );
        assert_eq!(
            one_line("é\u{9f}\u{2029}", Escapes::Text),
            "é\\u{9f}\\u{2029}"
        );
        assert_eq!(
            one_line("{\"a\":\"\u{7f}\u{85}\u{2028}\"}\n", Escapes::Json),
            "{\"a\":\"\\u007f\\u0085\\u2028\"}\n"
        );
    }
}
