//! A fault proxy for the AWS path: an HTTP proxy on 127.0.0.1 between the app's AWS clients and the
//! local AWS-compatible server (moto) that, per armed rule, delays, drops, holds or resets a
//! request, loses its answer, or answers with an error as AWS sends it.
//!
//! Point an SDK client (its `endpoint_url`) at [`FaultProxy::url`]. Requests are matched by
//! service and operation: the AWS JSON protocol names the operation in `X-Amz-Target`
//! (`DynamoDB_20120810.PutItem`, `TrentService.Decrypt`, and for SQS, which the SDK speaks in JSON
//! too, `AmazonSQS.SendMessage`), and optionally by a piece of the request body (a sort key, a
//! queue name). A rule fires on the next `times` requests it matches, after letting `pass` go by;
//! the first rule with work left that matches a request decides it. Every request is recorded with
//! what was done to it.
//!
//! The SDK clients retry throttling, 5xx, timeouts and broken connections themselves (standard
//! mode: 4 attempts for DynamoDB and KMS, 3 for SQS in this app), so a fault must be armed for as
//! many requests as a call makes attempts for the call itself to fail.
//!
//! Bounded: it listens on 127.0.0.1 only and forwards to the one target it is given; dropping it
//! stops the listener, every connection and every delayed forward.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, Uri};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

/// Which requests a rule applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    target: Option<String>,
    body_contains: Option<String>,
}

impl Match {
    /// Every request.
    pub fn any() -> Self {
        Self::default()
    }

    /// Requests whose `X-Amz-Target` is `target` (e.g. `DynamoDB_20120810.PutItem`).
    pub fn target(target: &str) -> Self {
        Self {
            target: Some(target.to_owned()),
            body_contains: None,
        }
    }

    /// A DynamoDB operation (`PutItem`, `UpdateItem`, `GetItem`, …).
    pub fn dynamodb(operation: &str) -> Self {
        Self::target(&format!("DynamoDB_20120810.{operation}"))
    }

    /// An SQS operation (`SendMessage`, `DeleteMessage`, …), as the SDK sends it (JSON protocol).
    pub fn sqs(operation: &str) -> Self {
        Self::target(&format!("AmazonSQS.{operation}"))
    }

    /// A KMS operation (`Decrypt`, `GenerateDataKey`, …).
    pub fn kms(operation: &str) -> Self {
        Self::target(&format!("TrentService.{operation}"))
    }

    /// Only requests whose body contains `text` (e.g. a sort key such as `"AUDIT#`).
    #[must_use]
    pub fn body_contains(mut self, text: &str) -> Self {
        self.body_contains = Some(text.to_owned());
        self
    }

    /// Whether a request with this target and body is one of these.
    pub fn matches(&self, target: &str, body: &str) -> bool {
        self.target.as_deref().is_none_or(|t| t == target)
            && self
                .body_contains
                .as_deref()
                .is_none_or(|text| body.contains(text))
    }
}

/// An error answer as the AWS service sends it: status, `__type` and message in the JSON body, and
/// for SQS the `x-amzn-query-error` header its JSON protocol adds for query-compatible clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    /// The HTTP status.
    pub status: u16,
    /// The body's `__type`.
    pub kind: String,
    /// The body's `message`.
    pub message: String,
    /// The response's `Content-Type` (the service's JSON protocol version).
    pub content_type: &'static str,
    /// SQS's `x-amzn-query-error` (`<code>;<Sender|Server>`).
    pub query_error: Option<String>,
}

const DYNAMODB_ERROR: &str = "com.amazonaws.dynamodb.v20120810#";
const JSON_1_0: &str = "application/x-amz-json-1.0";
const JSON_1_1: &str = "application/x-amz-json-1.1";

impl AwsError {
    fn dynamodb(status: u16, name: &str, message: &str) -> Self {
        Self {
            status,
            kind: format!("{DYNAMODB_ERROR}{name}"),
            message: message.to_owned(),
            content_type: JSON_1_0,
            query_error: None,
        }
    }

    /// DynamoDB's 400 `ProvisionedThroughputExceededException` (a provisioned table's capacity).
    pub fn dynamodb_throughput_exceeded() -> Self {
        Self::dynamodb(
            400,
            "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded. Consider \
             increasing your provisioning level with the UpdateTable API.",
        )
    }

    /// DynamoDB's 400 `ThrottlingException` (an on-demand table or partition over its rate).
    pub fn dynamodb_throttling() -> Self {
        Self::dynamodb(
            400,
            "ThrottlingException",
            "Rate of requests exceeds the allowed throughput.",
        )
    }

    /// DynamoDB's 500 `InternalServerError`.
    pub fn dynamodb_internal_server_error() -> Self {
        Self::dynamodb(500, "InternalServerError", "Internal server error")
    }

    /// SQS's 503 `ServiceUnavailable`.
    pub fn sqs_service_unavailable() -> Self {
        Self {
            status: 503,
            kind: "com.amazonaws.sqs#ServiceUnavailable".into(),
            message: "Service Unavailable".into(),
            content_type: JSON_1_0,
            query_error: Some("ServiceUnavailable;Server".into()),
        }
    }

    /// SQS's 400 `RequestThrottled`.
    pub fn sqs_request_throttled() -> Self {
        Self {
            status: 400,
            kind: "com.amazonaws.sqs#RequestThrottled".into(),
            message: "Rate exceeded".into(),
            content_type: JSON_1_0,
            query_error: Some("RequestThrottled;Sender".into()),
        }
    }

    /// KMS's 400 `ThrottlingException`.
    pub fn kms_throttling() -> Self {
        Self {
            status: 400,
            kind: "ThrottlingException".into(),
            message: "Rate exceeded".into(),
            content_type: JSON_1_1,
            query_error: None,
        }
    }

    fn response(&self) -> Response<Whole> {
        let body = serde_json::json!({"__type": self.kind, "message": self.message}).to_string();
        let mut response = Response::new(Whole::new(body));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        headers.insert(
            "x-amzn-requestid",
            HeaderValue::from_static("00000000-0000-4000-8000-fa017f0a0001"),
        );
        if let Some(value) = self
            .query_error
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert("x-amzn-query-error", value);
        }
        response
    }
}

/// What is done to a request a rule fires on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forwarded after this long. The forward happens even when the client has given up by then
    /// (a request that reached AWS late): what it writes lands.
    Delay(Duration),
    /// Not forwarded: the connection stays open without an answer for this long, then closes. Longer
    /// than the client's attempt timeout, this is a request timeout.
    Hold(Duration),
    /// Not forwarded: the connection is closed without an answer.
    Drop,
    /// Not forwarded: the connection is reset (TCP RST).
    Reset,
    /// Forwarded (what it writes lands), then the connection is closed without the answer: the
    /// client cannot tell whether it was done.
    LoseAnswer,
    /// Not forwarded: answered with this error.
    Error(AwsError),
}

impl Fault {
    fn name(&self) -> &'static str {
        match self {
            Self::Delay(_) => "delay",
            Self::Hold(_) => "hold",
            Self::Drop => "drop",
            Self::Reset => "reset",
            Self::LoseAnswer => "lose answer",
            Self::Error(_) => "error",
        }
    }
}

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its `X-Amz-Target` (empty when it had none).
    pub target: String,
    /// Its body, as text.
    pub body: String,
    /// The fault done to it (`None`: forwarded as it was).
    pub fault: Option<&'static str>,
}

#[derive(Debug)]
struct Rule {
    on: Match,
    pass: usize,
    left: usize,
    fault: Fault,
}

#[derive(Debug)]
struct State {
    target: Uri,
    client: Client<HttpConnector, Whole>,
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
    stop: watch::Receiver<()>,
}

/// The proxy; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    url: String,
    state: Arc<State>,
    _stop: watch::Sender<()>,
}

impl FaultProxy {
    /// A proxy on a free port of 127.0.0.1 forwarding to `target` (`http://127.0.0.1:<port>`, on
    /// this machine only). Panics when the target is elsewhere or no port is free.
    pub async fn start(target: &str) -> Self {
        let target: Uri = target
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("fault proxy target {target}: {e}"));
        let host = target.host().unwrap_or_default();
        assert!(
            target.scheme_str() == Some("http") && ["127.0.0.1", "localhost"].contains(&host),
            "the fault proxy forwards to a local http server only, not {target}"
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("fault proxy: no port on 127.0.0.1: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fault proxy: {e}"));
        let (stop_tx, stop) = watch::channel(());
        let state = Arc::new(State {
            target,
            client: Client::builder(TokioExecutor::new()).build_http(),
            rules: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            stop,
        });
        tokio::spawn(accept(listener, state.clone()));
        Self {
            url: format!("http://{addr}"),
            state,
            _stop: stop_tx,
        }
    }

    /// The proxy's URL, for a client's `endpoint_url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Does `fault` to the next `times` requests that match `on`.
    pub fn arm(&self, on: Match, fault: Fault, times: usize) {
        self.arm_after(on, 0, fault, times);
    }

    /// Lets the next `pass` requests that match `on` through, then does `fault` to the `times`
    /// after them.
    pub fn arm_after(&self, on: Match, pass: usize, fault: Fault, times: usize) {
        lock(&self.state.rules).push(Rule {
            on,
            pass,
            left: times,
            fault,
        });
    }

    /// Disarms every rule.
    pub fn clear(&self) {
        lock(&self.state.rules).clear();
    }

    /// Faults armed and not yet done, over every rule.
    pub fn unfired(&self) -> usize {
        lock(&self.state.rules).iter().map(|rule| rule.left).sum()
    }

    /// Every request seen so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.state.seen).clone()
    }

    /// How many requests matching `on` were seen (faulted or not).
    pub fn count(&self, on: &Match) -> usize {
        self.count_where(on, |_| true)
    }

    /// How many requests matching `on` had a fault done to them.
    pub fn faulted(&self, on: &Match) -> usize {
        self.count_where(on, |seen| seen.fault.is_some())
    }

    fn count_where(&self, on: &Match, keep: impl Fn(&Seen) -> bool) -> usize {
        lock(&self.state.seen)
            .iter()
            .filter(|seen| on.matches(&seen.target, &seen.body) && keep(seen))
            .count()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    let mut stop = state.stop.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        if let Ok((stream, _)) = accepted {
            tokio::spawn(connection(stream, state.clone()));
        }
    }
}

/// Serves one client connection.
async fn connection(stream: TcpStream, state: Arc<State>) {
    // A second descriptor of the socket, so that a reset can close it with SO_LINGER 0 (an RST)
    // whatever hyper does with its own when its connection is dropped.
    let Some((stream, twin)) = stream
        .into_std()
        .and_then(|std| Ok((std.try_clone()?, std)))
        .and_then(|(twin, std)| Ok((TcpStream::from_std(std)?, TcpStream::from_std(twin)?)))
        .ok()
    else {
        return;
    };
    let reset = Arc::new(Notify::new());
    let service = {
        let (state, reset) = (state.clone(), reset.clone());
        service_fn(move |request| handle(state.clone(), reset.clone(), request))
    };
    let served = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    let mut stop = state.stop.clone();
    tokio::select! {
        _ = served => {}
        () = reset.notified() => {
            let _ = twin.set_zero_linger();
        }
        _ = stop.changed() => {}
    }
    // hyper's descriptor is closed with the dropped connection; the twin's close is the last one.
    drop(twin);
}

/// Why a request got no answer (hyper closes the connection without writing one).
#[derive(Debug)]
struct Unanswered(&'static str);

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fault proxy: {}", self.0)
    }
}

impl std::error::Error for Unanswered {}

async fn handle(
    state: Arc<State>,
    reset: Arc<Notify>,
    request: Request<Incoming>,
) -> Result<Response<Whole>, Unanswered> {
    let (parts, body) = request.into_parts();
    let body = collect(body)
        .await
        .map_err(|_| Unanswered("the request body broke off"))?;
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = String::from_utf8_lossy(&body).into_owned();
    let fault = {
        let mut rules = lock(&state.rules);
        let rule = rules
            .iter_mut()
            .find(|rule| (rule.pass > 0 || rule.left > 0) && rule.on.matches(&target, &text));
        match rule {
            Some(rule) if rule.pass > 0 => {
                rule.pass -= 1;
                None
            }
            Some(rule) => {
                rule.left -= 1;
                Some(rule.fault.clone())
            }
            None => None,
        }
    };
    lock(&state.seen).push(Seen {
        target,
        body: text,
        fault: fault.as_ref().map(Fault::name),
    });
    let upstream = build_upstream(&state.target, &parts, body);
    match fault {
        None => Ok(forward(&state, upstream).await),
        Some(Fault::Error(error)) => Ok(error.response()),
        Some(Fault::Delay(delay)) => {
            // Its own task: it lands even if the client gives up and the connection goes.
            let late = state.clone();
            let mut stop = state.stop.clone();
            let task = tokio::spawn(async move {
                tokio::select! {
                    () = tokio::time::sleep(delay) => Some(forward(&late, upstream).await),
                    _ = stop.changed() => None,
                }
            });
            match task.await {
                Ok(Some(response)) => Ok(response),
                _ => Err(Unanswered("stopped")),
            }
        }
        Some(Fault::Hold(hold)) => {
            tokio::time::sleep(hold).await;
            Err(Unanswered("held without an answer"))
        }
        Some(Fault::Drop) => Err(Unanswered("dropped without an answer")),
        Some(Fault::Reset) => {
            reset.notify_one();
            std::future::pending().await
        }
        Some(Fault::LoseAnswer) => {
            let _landed = forward(&state, upstream).await;
            Err(Unanswered("the answer was lost"))
        }
    }
}

fn build_upstream(target: &Uri, parts: &http::request::Parts, body: Bytes) -> Request<Whole> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = Request::new(Whole(Some(body)));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = format!("{target}{path}")
        .parse()
        .unwrap_or_else(|_| target.clone());
    *request.headers_mut() = parts.headers.clone();
    request
}

/// Sends `request` to the target; its answer whole (a 502 when the target does not answer).
async fn forward(state: &State, request: Request<Whole>) -> Response<Whole> {
    let answered = match state.client.request(request).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            collect(body).await.ok().map(|body| {
                // The body is sent whole, with its own length.
                for name in [
                    http::header::TRANSFER_ENCODING,
                    http::header::CONTENT_LENGTH,
                    http::header::CONNECTION,
                ] {
                    parts.headers.remove(name);
                }
                Response::from_parts(parts, Whole(Some(body)))
            })
        }
        Err(_) => None,
    };
    answered.unwrap_or_else(|| {
        let mut response = Response::new(Whole::new("the fault proxy's target did not answer"));
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        response
    })
}

async fn collect(mut body: Incoming) -> Result<Bytes, hyper::Error> {
    let mut whole = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame?.into_data() {
            whole.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(whole))
}

/// A body sent in one piece.
#[derive(Debug)]
struct Whole(Option<Bytes>);

impl Whole {
    fn new(text: impl Into<String>) -> Self {
        Self(Some(Bytes::from(text.into())))
    }
}

impl Body for Whole {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(
            self.0
                .take()
                .filter(|data| !data.is_empty())
                .map(|data| Ok(Frame::data(data))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(Bytes::is_empty)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |data| data.len() as u64))
    }
}
