//! The fault proxy itself, against an in-test upstream that counts what reaches it: each fault as
//! a client sees it on the wire, what lands upstream, rule counting, and that it stops when
//! dropped. (The tests of the AWS path use it in front of moto.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use test_support::fault_proxy::{AwsError, Fault, FaultProxy, Match};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An upstream on 127.0.0.1 that answers `200 landed:<body>` and counts the requests reaching
/// it; its URL and the count.
async fn upstream() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let landed = Arc::new(AtomicUsize::new(0));
    let count = landed.clone();
    let router = axum::Router::new().fallback(move |body: String| {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            format!("landed:{body}")
        }
    });
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (format!("http://{addr}"), landed)
}

/// What a client gets for one request with this `X-Amz-Target`: the answer's text, or the error
/// reading it.
async fn call(proxy: &FaultProxy, target: &str, body: &str) -> std::io::Result<String> {
    let addr = proxy.url().trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nX-Amz-Target: {target}\r\nContent-Type: \
         application/x-amz-json-1.0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

const PUT: &str = "DynamoDB_20120810.PutItem";

#[tokio::test]
async fn requests_pass_through_until_a_rule_fires_and_then_only_for_its_count() {
    let (target, landed) = upstream().await;
    let proxy = FaultProxy::start(&target).await;
    let answer = call(&proxy, PUT, "{\"a\":1}").await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("landed:{\"a\":1}"), "{answer}");

    // Passes one matching request, then fails two; other operations and bodies are not matched.
    proxy.arm_after(
        Match::dynamodb("PutItem").body_contains("MARK#"),
        1,
        Fault::Error(AwsError::dynamodb_throttling()),
        2,
    );
    assert!(
        call(&proxy, PUT, "other")
            .await
            .unwrap()
            .contains("landed:")
    );
    assert!(
        call(&proxy, "DynamoDB_20120810.GetItem", "MARK#1")
            .await
            .unwrap()
            .contains("landed:")
    );
    assert!(
        call(&proxy, PUT, "MARK#1")
            .await
            .unwrap()
            .contains("landed:")
    );
    for _ in 0..2 {
        let answer = call(&proxy, PUT, "MARK#1").await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(
            answer.contains(
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#
            ),
            "{answer}"
        );
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("content-type: application/x-amz-json-1.0"),
            "{answer}"
        );
    }
    assert_eq!(proxy.unfired(), 0);
    assert!(
        call(&proxy, PUT, "MARK#1")
            .await
            .unwrap()
            .contains("landed:")
    );
    let marks = Match::dynamodb("PutItem").body_contains("MARK#");
    assert_eq!((proxy.count(&marks), proxy.faulted(&marks)), (4, 2));
    assert_eq!(
        landed.load(Ordering::SeqCst),
        5,
        "the faulted two never landed"
    );
    assert_eq!(proxy.seen().len(), 7);
}

#[tokio::test]
async fn sqs_and_kms_errors_are_answered_as_those_services_send_them() {
    let (target, _) = upstream().await;
    let proxy = FaultProxy::start(&target).await;
    proxy.arm(
        Match::sqs("SendMessage"),
        Fault::Error(AwsError::sqs_service_unavailable()),
        1,
    );
    proxy.arm(
        Match::sqs("SendMessage"),
        Fault::Error(AwsError::sqs_request_throttled()),
        1,
    );
    proxy.arm(
        Match::kms("Decrypt"),
        Fault::Error(AwsError::kms_throttling()),
        1,
    );
    let unavailable = call(&proxy, "AmazonSQS.SendMessage", "{}").await.unwrap();
    assert!(unavailable.starts_with("HTTP/1.1 503"), "{unavailable}");
    assert!(
        unavailable
            .to_ascii_lowercase()
            .contains("x-amzn-query-error: serviceunavailable;server")
    );
    let throttled = call(&proxy, "AmazonSQS.SendMessage", "{}").await.unwrap();
    assert!(throttled.starts_with("HTTP/1.1 400"), "{throttled}");
    assert!(throttled.contains("com.amazonaws.sqs#RequestThrottled"));
    let kms = call(&proxy, "TrentService.Decrypt", "{}").await.unwrap();
    assert!(kms.starts_with("HTTP/1.1 400"), "{kms}");
    assert!(kms.contains(r#""__type":"ThrottlingException""#), "{kms}");
    assert!(
        kms.to_ascii_lowercase()
            .contains("content-type: application/x-amz-json-1.1")
    );
}

#[tokio::test]
async fn drop_reset_and_hold_answer_nothing_and_never_land() {
    let (target, landed) = upstream().await;
    let proxy = FaultProxy::start(&target).await;
    proxy.arm(Match::any(), Fault::Drop, 1);
    proxy.arm(Match::any(), Fault::Reset, 1);
    proxy.arm(Match::any(), Fault::Hold(Duration::from_millis(300)), 1);
    assert_eq!(
        call(&proxy, PUT, "x").await.unwrap(),
        "",
        "closed, no answer"
    );
    let reset = call(&proxy, PUT, "x").await.unwrap_err();
    assert_eq!(reset.kind(), std::io::ErrorKind::ConnectionReset, "{reset}");
    let started = Instant::now();
    assert_eq!(call(&proxy, PUT, "x").await.unwrap(), "");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(landed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_delayed_request_lands_late_even_when_its_client_gave_up_and_a_lost_answer_lands_too() {
    let (target, landed) = upstream().await;
    let proxy = FaultProxy::start(&target).await;
    proxy.arm(Match::any(), Fault::Delay(Duration::from_millis(300)), 2);
    let started = Instant::now();
    assert!(
        call(&proxy, PUT, "late")
            .await
            .unwrap()
            .ends_with("landed:late")
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    // The client gives up after 50 ms; the request still reaches the upstream at 300 ms.
    let gave_up = tokio::time::timeout(Duration::from_millis(50), call(&proxy, PUT, "late")).await;
    assert!(gave_up.is_err());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(landed.load(Ordering::SeqCst), 2);

    proxy.arm(Match::any(), Fault::LoseAnswer, 1);
    assert_eq!(call(&proxy, PUT, "lost").await.unwrap(), "", "no answer");
    assert_eq!(landed.load(Ordering::SeqCst), 3, "but it landed");
}

#[tokio::test]
async fn a_dropped_proxy_stops_listening() {
    let (target, _) = upstream().await;
    let proxy = FaultProxy::start(&target).await;
    let addr = proxy.url().trim_start_matches("http://").to_owned();
    drop(proxy);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(TcpStream::connect(&addr).await.is_err());
}

#[tokio::test]
#[should_panic(expected = "local http server only")]
async fn it_forwards_to_this_machine_only() {
    FaultProxy::start("http://example.com:80").await;
}
