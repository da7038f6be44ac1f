//! Issue 12: slow or silent clients cannot hold the local server open. Each test sets the limits
//! low through the environment (`LOCAL_HEADER_TIMEOUT_MS`, `LOCAL_BODY_TIMEOUT_MS`,
//! `LOCAL_MAX_CONNECTIONS`) so it runs in a few seconds, and talks raw TCP to 127.0.0.1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use understudy::LocalApp;

async fn start(dir: &std::path::Path, vars: &[(&'static str, String)]) -> LocalApp {
    let dir = dir.to_str().unwrap().to_owned();
    let vars = vars.to_vec();
    LocalApp::start(&move |name| match name {
        "PORT" => Some("0".into()),
        "DATA_DIR" => Some(dir.clone()),
        _ => vars
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone()),
    })
    .await
    .unwrap()
}

/// Reads until the server closes the connection (end of file or reset); returns what was read
/// and when it closed.
fn until_closed(
    mut stream: impl AsyncReadExt + Unpin + Send + 'static,
) -> JoinHandle<(Vec<u8>, Instant)> {
    tokio::spawn(async move {
        let mut read = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return (read, Instant::now()),
                Ok(n) => read.extend_from_slice(&buf[..n]),
            }
        }
    })
}

/// Waits at most `limit` for `watch`; panics with `what` when the connection is still open.
async fn closed_within(
    watch: JoinHandle<(Vec<u8>, Instant)>,
    limit: Duration,
    what: &str,
) -> (Vec<u8>, Instant) {
    match tokio::time::timeout(limit, watch).await {
        Ok(result) => result.unwrap(),
        Err(_) => panic!("{what}: still open after {limit:?}"),
    }
}

/// Reads one response (head and Content-Length body) from a keep-alive connection.
async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_string();
                let length = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if data.len() >= end + 4 + length {
                    return (head, data[end + 4..end + 4 + length].to_vec());
                }
            }
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed mid-response: {data:?}");
            data.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("a response within 5 s")
}

fn get_descriptor() -> &'static [u8] {
    b"GET /atlassian-connect.json HTTP/1.1\r\nHost: localhost\r\n\r\n"
}

#[tokio::test]
async fn clients_that_do_not_finish_their_headers_are_disconnected_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(
        dir.path(),
        &[
            ("LOCAL_HEADER_TIMEOUT_MS", "500".into()),
            ("LOCAL_BODY_TIMEOUT_MS", "10000".into()),
        ],
    )
    .await;
    let began = Instant::now();
    // Half a request line, then nothing.
    let mut half = TcpStream::connect(app.addr()).await.unwrap();
    half.write_all(b"GET /atlassian-conn").await.unwrap();
    let half = until_closed(half);
    // Nothing at all.
    let silent = until_closed(TcpStream::connect(app.addr()).await.unwrap());
    // Headers trickled a byte every 50 ms, which never stops: the timeout is for the whole head.
    let (reader, mut writer) = TcpStream::connect(app.addr()).await.unwrap().into_split();
    let trickle = tokio::spawn(async move {
        let head = b"GET /atlassian-connect.json HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
        for byte in head.iter().chain(std::iter::repeat(&b'a')).take(200) {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let trickled = until_closed(reader);
    for (watch, what) in [
        (half, "half a request line"),
        (silent, "a silent connection"),
        (trickled, "trickled headers"),
    ] {
        let (read, at) = closed_within(watch, Duration::from_secs(5), what).await;
        let after = at - began;
        assert!(
            after >= Duration::from_millis(400) && after < Duration::from_secs(4),
            "{what}: closed after {after:?}"
        );
        assert!(
            !String::from_utf8_lossy(&read).contains(" 200 "),
            "{what}: {read:?}"
        );
    }
    trickle.abort();
    // The app still answers.
    let response = reqwest::get(format!("http://{}/atlassian-connect.json", app.addr()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn a_trickled_body_is_answered_408_after_the_body_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(
        dir.path(),
        &[
            ("LOCAL_HEADER_TIMEOUT_MS", "10000".into()),
            ("LOCAL_BODY_TIMEOUT_MS", "500".into()),
        ],
    )
    .await;
    let (reader, mut writer) = TcpStream::connect(app.addr()).await.unwrap().into_split();
    writer
        .write_all(
            b"POST /webhooks/page_updated HTTP/1.1\r\nHost: localhost\r\n\
              Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
        )
        .await
        .unwrap();
    let headers_sent = Instant::now();
    let response = until_closed(reader);
    // A few bytes of the promised 1000, then nothing (the connection stays open on our side).
    for byte in b"{\"a" {
        writer.write_all(&[*byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (read, at) = closed_within(response, Duration::from_secs(5), "a trickled body").await;
    let after = at - headers_sent;
    assert!(
        after >= Duration::from_millis(400) && after < Duration::from_secs(4),
        "closed after {after:?}"
    );
    let read = String::from_utf8_lossy(&read).to_string();
    assert!(read.starts_with("HTTP/1.1 408 "), "{read}");
    assert!(
        read.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{read}"
    );
    assert!(
        read.ends_with(r#"{"error":"request body not received in time"}"#),
        "{read}"
    );
    drop(writer);
    app.shutdown().await;
}

#[tokio::test]
async fn keep_alive_works_and_an_idle_connection_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path(), &[("LOCAL_HEADER_TIMEOUT_MS", "500".into())]).await;
    let mut stream = TcpStream::connect(app.addr()).await.unwrap();
    // Several requests on one connection, each well within the timeout of the previous response.
    for round in 0..3 {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stream.write_all(get_descriptor()).await.unwrap();
        let (head, body) = read_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        let descriptor: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(descriptor["key"], "understudy");
    }
    // Then idle: closed once the timeout has passed since the last response.
    let idle_since = Instant::now();
    let (read, at) = closed_within(
        until_closed(stream),
        Duration::from_secs(5),
        "an idle keep-alive connection",
    )
    .await;
    let after = at - idle_since;
    assert!(
        after >= Duration::from_millis(400) && after < Duration::from_secs(4),
        "closed after {after:?}"
    );
    assert!(read.is_empty(), "{read:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn silent_connections_beyond_the_cap_do_not_keep_a_normal_request_out() {
    const CAP: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let app = start(
        dir.path(),
        &[
            ("LOCAL_HEADER_TIMEOUT_MS", "3000".into()),
            ("LOCAL_MAX_CONNECTIONS", CAP.to_string()),
        ],
    )
    .await;
    let url = format!("http://{}/atlassian-connect.json", app.addr());
    let began = Instant::now();
    // Three times the cap's worth of silent connections, oldest first.
    let mut silent = Vec::new();
    for _ in 0..3 * CAP {
        silent.push(until_closed(TcpStream::connect(app.addr()).await.unwrap()));
    }
    // The cap holds: all but the newest CAP are closed at once, long before the header timeout.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let closed = silent.iter().filter(|watch| watch.is_finished()).count();
    assert_eq!(closed, 2 * CAP, "connections closed to keep to the cap");
    assert!(
        silent[..2 * CAP].iter().all(JoinHandle::is_finished),
        "the stalest go first"
    );
    // A normal request on a new connection is answered at once, not after the silent ones' timeout.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let asked = Instant::now();
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    assert!(
        asked.elapsed() < Duration::from_millis(1500),
        "{:?}",
        asked.elapsed()
    );
    // The rest time out on their own.
    for watch in silent {
        let (_, at) = closed_within(watch, Duration::from_secs(6), "a silent connection").await;
        assert!(at - began < Duration::from_secs(6), "{:?}", at - began);
    }
    // Wave after wave of silent connections never stops the app answering.
    let mut held = Vec::new();
    for _ in 0..3 {
        for _ in 0..2 * CAP {
            held.push(TcpStream::connect(app.addr()).await.unwrap());
        }
        let asked = Instant::now();
        assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
        assert!(
            asked.elapsed() < Duration::from_millis(1500),
            "{:?}",
            asked.elapsed()
        );
    }
    drop(held);
    app.shutdown().await;
}

/// A key server that answers 404 one second after each request, and says when one arrived.
async fn slow_key_server() -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    let (asked, asks) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let asked = asked.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = asked.send(());
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
            });
        }
    });
    (url, asks)
}

#[tokio::test]
async fn shutdown_returns_promptly_with_slow_clients_and_lets_a_request_being_handled_finish() {
    let dir = tempfile::tempdir().unwrap();
    let (keys_url, mut key_requests) = slow_key_server().await;
    // Timeouts far longer than the test: only the shutdown may close these connections.
    let app = start(
        dir.path(),
        &[
            ("LOCAL_HEADER_TIMEOUT_MS", "60000".into()),
            ("LOCAL_BODY_TIMEOUT_MS", "60000".into()),
            ("CONNECT_KEYS_URL", keys_url),
        ],
    )
    .await;
    let silent = until_closed(TcpStream::connect(app.addr()).await.unwrap());
    let mut half = TcpStream::connect(app.addr()).await.unwrap();
    half.write_all(b"GET /atlassian-conn").await.unwrap();
    let half = until_closed(half);
    let (body_reader, mut body_writer) = TcpStream::connect(app.addr()).await.unwrap().into_split();
    body_writer
        .write_all(
            b"POST /webhooks/page_updated HTTP/1.1\r\nHost: localhost\r\n\
              Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"a",
        )
        .await
        .unwrap();
    let slow_body = until_closed(body_reader);
    let mut idle = TcpStream::connect(app.addr()).await.unwrap();
    idle.write_all(get_descriptor()).await.unwrap();
    let (head, _) = read_response(&mut idle).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let idle = until_closed(idle);
    // A complete install request whose handler waits a second on the key server.
    let token =
        "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InNsb3cta2V5In0.eyJpc3MiOiJjbGllbnQifQ.c2ln";
    let mut in_flight = TcpStream::connect(app.addr()).await.unwrap();
    in_flight
        .write_all(
            format!(
                "POST /installed HTTP/1.1\r\nHost: localhost\r\nAuthorization: JWT {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), key_requests.recv())
        .await
        .expect("the install handler asks the key server")
        .unwrap();
    let in_flight = until_closed(in_flight);

    let stopping = Instant::now();
    tokio::time::timeout(Duration::from_secs(4), app.shutdown())
        .await
        .expect("shutdown returns while slow clients are connected");
    let took = stopping.elapsed();
    // The request being handled finished first (its key server answers after a second) ...
    let (read, _) = closed_within(in_flight, Duration::from_secs(1), "the install request").await;
    let read = String::from_utf8_lossy(&read).to_string();
    assert!(read.starts_with("HTTP/1.1 "), "{read}");
    assert!(read.contains("\r\n\r\n"), "{read}");
    assert!(took >= Duration::from_millis(500), "{took:?}");
    // ... and the slow ones were closed without an answer, without waiting for any timeout.
    for (watch, what) in [
        (silent, "silent"),
        (half, "half a request line"),
        (slow_body, "slow body"),
        (idle, "idle"),
    ] {
        let (read, at) = closed_within(watch, Duration::from_secs(1), what).await;
        assert!(at - stopping < Duration::from_secs(3), "{what}");
        assert!(read.is_empty(), "{what}: {read:?}");
    }
    drop(body_writer);
}
