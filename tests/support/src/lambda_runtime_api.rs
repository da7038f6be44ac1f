//! A stand-in for the Lambda Runtime API, the HTTP interface through which Lambda hands a function
//! process its events (`GET …/invocation/next`) and takes its answers (`POST …/response`), so that a
//! test can run a function exactly as Lambda does: under the real `lambda_runtime`, through
//! `lambda_http`'s conversion of the raw event, with the production log setup writing to stdout.
//!
//! The function runs in a child process (this same test binary, running one test that does nothing
//! unless [`CHILD_ENV`] is set), because the runtime reads its settings from the environment and a
//! test cannot change its own. The parent serves the events, collects the answers, then stops the
//! child and returns everything it wrote. The child test calls [`child_main`].

use std::collections::VecDeque;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Set in the child's environment; the child test runs the function only when it is set.
pub const CHILD_ENV: &str = "UNDERSTUDY_TEST_LAMBDA_CHILD";

/// True in the child process.
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// The body of the child test: in the child process, runs `function` (a Lambda function's `main`,
/// serving events until the parent stops it) on a multi-threaded runtime; elsewhere nothing.
pub fn child_main<F, E>(function: F)
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Debug,
{
    if !is_child() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(function).unwrap();
}

/// What one run produced.
#[derive(Debug)]
pub struct Run {
    /// Everything the child wrote to stdout (where the functions log).
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
    /// The answers the runtime posted, in order: (path, body).
    pub posted: Vec<(String, String)>,
}

impl Run {
    /// The status codes of the API Gateway responses the function returned.
    pub fn statuses(&self) -> Vec<u64> {
        self.posted
            .iter()
            .map(|(path, body)| {
                assert!(
                    path.ends_with("/response"),
                    "the runtime reported {path}: {body}"
                );
                let response: serde_json::Value = serde_json::from_str(body).unwrap();
                response["statusCode"].as_u64().unwrap()
            })
            .collect()
    }

    /// stdout and stderr.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

#[derive(Default)]
struct State {
    next: VecDeque<(String, String)>,
    posted: Vec<(String, String)>,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// Runs the test `child_test` of this binary as a Lambda function process with `RUST_LOG` set to
/// `rust_log`, hands it `events` (raw API Gateway events) one by one, and returns what it wrote
/// once it has answered them all (or after a minute).
pub fn run_child(child_test: &str, rust_log: &str, events: &[String]) -> Run {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let shared = Arc::new(Shared::default());
    {
        let mut state = shared.state.lock().unwrap();
        for (i, event) in events.iter().enumerate() {
            state
                .next
                .push_back((format!("req-{}", i + 1), event.clone()));
        }
    }
    let acceptor = shared.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let shared = acceptor.clone();
            thread::spawn(move || serve(stream, &shared));
            if acceptor.state.lock().unwrap().stop {
                return;
            }
        }
    });

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([child_test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env("RUST_LOG", rust_log)
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "understudy-test")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test-stream")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "test-group")
        .env_remove("AWS_LAMBDA_MAX_CONCURRENCY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut state = shared.state.lock().unwrap();
    while state.posted.len() < events.len()
        && Instant::now() < deadline
        && child.try_wait().unwrap().is_none()
    {
        state = shared
            .changed
            .wait_timeout(state, Duration::from_millis(100))
            .unwrap()
            .0;
    }
    state.stop = true;
    let posted = std::mem::take(&mut state.posted);
    drop(state);
    shared.changed.notify_all();
    // The child waits for its next event forever: stop it (it is ours, by its handle).
    let _ = child.kill();
    let _ = child.wait();
    // Unblock the acceptor so that it sees `stop`.
    let _ = TcpStream::connect(address);
    Run {
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        posted,
    }
}

fn collect(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Answers the runtime's requests on one connection until it closes or the run stops.
fn serve(stream: TcpStream, shared: &Shared) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    while let Some((method, path, body)) = read_request(&mut reader) {
        if method == "GET" && path.ends_with("/runtime/invocation/next") {
            let mut state = shared.state.lock().unwrap();
            let next = loop {
                if let Some(next) = state.next.pop_front() {
                    break next;
                }
                if state.stop {
                    return;
                }
                state = shared
                    .changed
                    .wait_timeout(state, Duration::from_millis(100))
                    .unwrap()
                    .0;
            };
            drop(state);
            let (request_id, event) = next;
            let deadline_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis()
                + 60_000;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 lambda-runtime-aws-request-id: {request_id}\r\n\
                 lambda-runtime-deadline-ms: {deadline_ms}\r\n\
                 lambda-runtime-invoked-function-arn: arn:aws:lambda:eu-west-1:123456789012:function:understudy-test\r\n\
                 lambda-runtime-trace-id: Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1\r\n\r\n",
                event.len()
            );
            if writer.write_all(head.as_bytes()).is_err()
                || writer.write_all(event.as_bytes()).is_err()
            {
                return;
            }
        } else {
            let status = if method == "POST" {
                let mut state = shared.state.lock().unwrap();
                state.posted.push((path, body));
                shared.changed.notify_all();
                "202 Accepted"
            } else {
                "404 Not Found"
            };
            let head = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            if writer.write_all(head.as_bytes()).is_err() {
                return;
            }
        }
    }
}

/// One HTTP/1.1 request: method, path and body (by content-length or chunked).
fn read_request(reader: &mut impl BufRead) -> Option<(String, String, String)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let (mut length, mut chunked) = (0_usize, false);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    let mut trailer = String::new();
                    if reader.read_line(&mut trailer).ok()? == 0 || trailer.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body).ok()?;
    }
    Some((method, path, String::from_utf8_lossy(&body).into_owned()))
}
