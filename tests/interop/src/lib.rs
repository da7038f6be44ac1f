//! A handle on Atlassian's atlassian-jwt running in node (`oracle.js`), for tests that check this
//! project's Connect JWT code against Atlassian's own.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::Value;

/// A running `node oracle.js`; ended when dropped.
#[derive(Debug)]
pub struct Oracle {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// Why the oracle could not answer.
#[derive(Debug)]
pub struct OracleError(pub String);

impl std::fmt::Display for OracleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OracleError {}

impl Oracle {
    /// Starts the oracle. Fails with instructions when node or the npm packages are missing: the
    /// README's test command installs them, and a missing oracle must fail the run, never skip it.
    pub fn start() -> Result<Self, OracleError> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        if !dir.join("node_modules/atlassian-jwt/package.json").exists() {
            return Err(OracleError(format!(
                "atlassian-jwt is not installed in {}: run the README's test command (bash tests/run.sh), \
                 or `npm ci` in that folder",
                dir.display()
            )));
        }
        let mut child = Command::new("node")
            .arg(dir.join("oracle.js"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| OracleError(format!("cannot start node: {e}")))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| OracleError("no stdin".into()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| OracleError("no stdout".into()))?;
        Ok(Self {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    /// Sends one request and returns the answer; an answer with `ok: false` is an error.
    pub fn call(&mut self, request: &Value) -> Result<Value, OracleError> {
        writeln!(self.stdin, "{request}").map_err(|e| OracleError(format!("write: {e}")))?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| OracleError(format!("read: {e}")))?;
        let answer: Value = serde_json::from_str(&line)
            .map_err(|e| OracleError(format!("bad answer {line:?}: {e}")))?;
        if answer.get("ok") == Some(&Value::Bool(true)) {
            Ok(answer)
        } else {
            let reason = answer
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown error");
            Err(OracleError(reason.to_owned()))
        }
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
