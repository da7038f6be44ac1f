//! `hello-floor`: the floor for the webhook load test. The same stack as the local app (tokio's
//! multi-threaded runtime, axum, HTTP/1.1), reading the whole body and answering 204, with no
//! verification, store or queue behind it.
//!
//! `PORT` (default 0: a free port); prints `listening on 127.0.0.1:PORT` once it accepts.

use std::process::ExitCode;

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;

async fn answer(body: Bytes) -> StatusCode {
    // Touch the body so reading it is part of the floor, as it is of the webhook path.
    std::hint::black_box(body.len());
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() -> ExitCode {
    let port: u16 = match std::env::var("PORT").ok().filter(|p| !p.trim().is_empty()) {
        None => 0,
        Some(p) => match p.trim().parse() {
            Ok(port) => port,
            Err(_) => {
                eprintln!("hello-floor: PORT must be a port number");
                return ExitCode::FAILURE;
            }
        },
    };
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("hello-floor: cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(e) => {
            eprintln!("hello-floor: {e}");
            return ExitCode::FAILURE;
        }
    }
    let router = Router::new().fallback(answer);
    if let Err(e) = axum::serve(listener, router).await {
        eprintln!("hello-floor: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
