//! The `understudy` binary's async runtime: one worker thread fewer than the machine's cores (at
//! least one), unless `TOKIO_WORKER_THREADS` says otherwise. The binary says how many it runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts the binary on a fresh data directory and returns the worker count it announces.
fn announced_workers(tokio_worker_threads: Option<&str>) -> usize {
    let data = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_understudy"));
    command
        .env("PORT", "0")
        .env("DATA_DIR", data.path())
        .env("LOCAL_WORKER", "off")
        .env("LOCAL_PRIVACY", "off")
        .env_remove("TOKIO_WORKER_THREADS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(threads) = tokio_worker_threads {
        command.env("TOKIO_WORKER_THREADS", threads);
    }
    let mut child = command.spawn().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let started = Instant::now();
    let mut workers = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("runtime:") {
            workers = rest.split_whitespace().next().map(|n| n.parse().unwrap());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no runtime line"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    workers.expect("the binary names its runtime's worker threads")
}

#[test]
fn the_binary_runs_one_worker_fewer_than_the_cores_unless_told() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(announced_workers(None), cores.saturating_sub(1).max(1));
    assert_eq!(announced_workers(Some("3")), 3);
}
