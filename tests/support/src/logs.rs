//! What a tracing subscriber writes, captured for a test to read, and the check that it holds no
//! secret.

use std::io;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// Everything written through its writers, in order. Clones share one buffer.
#[derive(Debug, Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// A writer into this capture (what a subscriber's `make_writer` returns).
    pub fn writer(&self) -> CaptureWriter {
        CaptureWriter(Arc::clone(&self.0))
    }

    /// What was written so far.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// One writer into a [`LogCapture`].
#[derive(Debug)]
pub struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The JSON log lines in `output`, each from its first `{` (a test harness's own
/// "test lambda_child ... " may start the first line).
pub fn json_lines(output: &str) -> Vec<Value> {
    output
        .lines()
        .filter_map(|line| serde_json::from_str(line.get(line.find('{')?..)?).ok())
        .collect()
}

/// Fails when `logs` hold `secret`, or any of `token` (whole, or its signature alone).
pub fn assert_no_secret(logs: &str, secret: &str, token: &str) {
    let signature = token.rsplit('.').next().unwrap_or(token);
    assert!(
        !logs.contains(secret),
        "the shared secret was logged:\n{logs}"
    );
    assert!(!logs.contains(signature), "the JWT was logged:\n{logs}");
}
