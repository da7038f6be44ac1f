//! The local app's HTTP/1.1 server: the router on hyper connections, with the limits that keep a
//! slow or silent client from holding the app open (issue 12).
//!
//! `axum::serve` gives a client all the time it wants: one that sends nothing, or trickles its
//! headers or its body, keeps its connection (and a file descriptor) forever, and about a thousand
//! of them exhaust the process's descriptors, after which the app answers nobody, webhooks
//! included. Here:
//!
//! - **headers**: a connection must deliver a request's complete headers within
//!   [`HEADER_READ_TIMEOUT`] of being accepted, or of the end of its previous response (hyper's
//!   header-read timer, which hyper rearms as soon as a keep-alive connection falls idle, so it is
//!   also the idle keep-alive timeout); otherwise hyper closes it;
//! - **body**: the whole body must arrive within [`BODY_READ_TIMEOUT`] of the headers; otherwise
//!   `dispatch` answers 408 with a short JSON error and the connection is closed;
//! - **connections**: at most [`MAX_CONNECTIONS`] are open. A new connection at the cap closes the
//!   open one that has gone longest without a request being handled (silent, still sending its
//!   headers or body, or idle), so a webhook arriving in a flood of slow clients is served at
//!   once; only when every open connection has a request being handled does the new one wait in
//!   the kernel's accept backlog for one to finish;
//! - **shutdown**: stop accepting, close at once every connection without a request being handled
//!   (slow clients never delay a shutdown), and let the requests being handled finish (at most
//!   [`SHUTDOWN_GRACE`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt as _;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::StartError;

/// How long a client has to deliver a request's complete headers, from the moment its connection
/// is accepted, and on a keep-alive connection from the end of the previous response: hyper
/// rearms the same timer when a connection falls idle, so this is also the idle keep-alive
/// timeout. `LOCAL_HEADER_TIMEOUT_MS` overrides it.
///
/// Our clients are fast: Confluence's webhook sender and the page-byline iframe reach the app
/// through a tunnel agent on 127.0.0.1 that writes a request's headers at once; a request that
/// takes more than a few seconds to send its headers is not one of ours. 10 s leaves room for a
/// loaded two-core machine and is all a silent connection can hold a slot for. As the idle
/// timeout it is longer than the gaps within a burst of webhooks or a load test, so keep-alive
/// still saves the reconnects that matter (and a reconnect over loopback is cheap); it is also in
/// line with common servers (Node.js and Apache close idle connections after 5 s). A longer idle
/// time would only let a client that sent one quick request hold its slot longer.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request's whole body has to arrive, from the end of its headers; after that the
/// answer is 408 and the connection is closed. `LOCAL_BODY_TIMEOUT_MS` overrides it.
///
/// Our bodies are small JSON (webhook events, lifecycle payloads, edit requests: kilobytes, at
/// most the 1 MiB the app accepts) that the tunnel agent relays in one go; a body still arriving
/// after 10 s is a client holding the connection, not one of ours.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many connections are open at once. `LOCAL_MAX_CONNECTIONS` overrides it.
///
/// Legitimate clients need a few tens at most (the tunnel agent's pool; the load tests use 50),
/// and 512 stays well under the usual limit of 1024 file descriptors per process, which the
/// store, the queue and the outgoing Confluence connections need too: running out of descriptors
/// is what stopped the app answering anyone. At the cap a new connection does not wait for a
/// timeout: the open connection that has gone longest without a request being handled (silent,
/// still sending its headers or body, or idle) is closed to make room, so a webhook that arrives
/// while slow clients fill the cap is answered at once, and every slow client is cut off by
/// whichever comes first, its timeout or newer connections. Only when every open connection has
/// a request being handled (real work, which ends by itself) does a new connection wait in the
/// kernel's accept backlog. Closing new connections at the cap instead would refuse exactly the
/// webhooks a flood should not cost us (Confluence does not retry them).
pub const MAX_CONNECTIONS: usize = 512;

/// At shutdown, how long requests already being handled (body received, handler running) may
/// take to finish. Connections with no request being handled are closed at once, so slow
/// clients never delay a shutdown; handlers bound their own work (a Confluence request retries
/// for at most `CONFLUENCE_RETRY_DEADLINE_SECONDS`, 20 s by default), so this only cuts a handler
/// that is stuck.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// After an accept error other than a failed connection (e.g. out of file descriptors): the pause
/// before the next try, so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The largest timeout the environment may set: an hour.
const MAX_TIMEOUT_MS: u64 = 60 * 60 * 1000;

/// The server's limits (module documentation); from the environment in
/// [`LocalSettings`](crate::LocalSettings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// `LOCAL_HEADER_TIMEOUT_MS` ([`HEADER_READ_TIMEOUT`]): complete headers, and idle keep-alive.
    pub header_read_timeout: Duration,
    /// `LOCAL_BODY_TIMEOUT_MS` ([`BODY_READ_TIMEOUT`]): the whole body, from the headers.
    pub body_read_timeout: Duration,
    /// `LOCAL_MAX_CONNECTIONS` ([`MAX_CONNECTIONS`]): open connections.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: HEADER_READ_TIMEOUT,
            body_read_timeout: BODY_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

impl ServerLimits {
    /// Reads the limits through `lookup`; an unset or empty variable keeps the default.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, StartError> {
        let number = |name: &str, max: u64| -> Result<Option<u64>, StartError> {
            let Some(value) = lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
            else {
                return Ok(None);
            };
            match value.parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
                _ => Err(StartError(format!(
                    "environment variable {name} must be a whole number from 1 to {max}"
                ))),
            }
        };
        let defaults = Self::default();
        let timeout = |name: &str, default: Duration| -> Result<Duration, StartError> {
            Ok(number(name, MAX_TIMEOUT_MS)?.map_or(default, Duration::from_millis))
        };
        Ok(Self {
            header_read_timeout: timeout("LOCAL_HEADER_TIMEOUT_MS", defaults.header_read_timeout)?,
            body_read_timeout: timeout("LOCAL_BODY_TIMEOUT_MS", defaults.body_read_timeout)?,
            max_connections: number("LOCAL_MAX_CONNECTIONS", 1_000_000)?
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(defaults.max_connections),
        })
    }
}

/// The answer when a body did not arrive within the body-read timeout: 408 with a short fixed
/// JSON error, and the connection closed (what is left of the body is not worth waiting for).
pub(crate) fn body_too_slow() -> http::Response<Bytes> {
    let mut response = http::Response::new(Bytes::from_static(
        br#"{"error":"request body not received in time"}"#,
    ));
    *response.status_mut() = http::StatusCode::REQUEST_TIMEOUT;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

/// What the server calls with each request once its headers are complete: the app's routing. The
/// body may still be arriving; the handler reads it (within
/// [`ServerLimits::body_read_timeout`]) and answers with the whole response body.
///
/// A plain function rather than a framework's router: the app routes every path itself (the one
/// route table, as API Gateway does on AWS), so a router in between would only add an allocation
/// and a boxed body per request.
pub(crate) trait Handler: Clone + Send + Sync + 'static {
    /// The answer's future.
    type Future: Future<Output = http::Response<Bytes>> + Send + 'static;
    /// Handles one request.
    fn call(&self, request: http::Request<RequestBody>) -> Self::Future;
}

impl<F, Fut> Handler for F
where
    F: Fn(http::Request<RequestBody>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = http::Response<Bytes>> + Send + 'static,
{
    type Future = Fut;
    fn call(&self, request: http::Request<RequestBody>) -> Fut {
        self(request)
    }
}

/// Serves `handler` on `listener` until `stop` turns true (or its sender is dropped), then shuts
/// down as the module documentation says and returns when every connection is closed.
pub(crate) async fn serve<H: Handler>(
    listener: TcpListener,
    handler: H,
    limits: ServerLimits,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let registry = Arc::new(Registry::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) if is_connection_error(&err) => continue,
            Err(err) => {
                tracing::error!(error = %err, "cannot accept connections");
                tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        let registration = loop {
            if let Some(registration) = registry.admit() {
                break Some(registration);
            }
            // Every open connection has a request being handled: wait for one to finish (or
            // close) before taking more; newer connections wait in the kernel's backlog. Say so
            // first, then look once more: a change made before the connections could know is
            // seen by that look.
            registry.room.waiting.store(true, Ordering::SeqCst);
            let admitted = registry.admit();
            let stopping = admitted.is_none()
                && tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => true,
                    () = registry.room.notify.notified() => false,
                    Some(_) = connections.join_next() => false,
                };
            registry.room.waiting.store(false, Ordering::Relaxed);
            if stopping {
                break None;
            }
            if admitted.is_some() {
                break admitted;
            }
        };
        let Some(registration) = registration else {
            break;
        };
        connections.spawn(serve_connection(
            builder.clone(),
            stream,
            handler.clone(),
            registration,
            stop.clone(),
        ));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Errors of one incoming connection (it went away before we took it), not of the listener.
fn is_connection_error(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

async fn serve_connection<H: Handler>(
    builder: Arc<http1::Builder>,
    stream: TcpStream,
    handler: H,
    registration: Registration,
    mut stop: watch::Receiver<bool>,
) {
    let slot = registration.slot.clone();
    let service = Tracked {
        handler,
        slot: slot.clone(),
    };
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let stopping = tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "connection closed");
            }
            false
        }
        () = slot.evicted.notified() => {
            tracing::debug!("connection closed to make room for a new one");
            false
        }
        _ = stop.wait_for(|stop| *stop) => true,
    };
    if stopping && slot.phase.load(Ordering::Acquire) == HANDLING {
        // Let the request being handled finish; keep-alive off, so hyper closes after it.
        connection.as_mut().graceful_shutdown();
        if tokio::time::timeout(SHUTDOWN_GRACE, connection.as_mut())
            .await
            .is_err()
        {
            tracing::warn!("a request was still being handled at the end of the shutdown grace");
        }
    }
    // Otherwise dropping the connection closes it: at shutdown, one without a request being
    // handled (silent, slow, idle) is not waited for.
    drop(registration);
}

/// A connection's phase: with no request (accepted, headers arriving, or idle after a response).
const WAITING: u8 = 0;
/// A connection's phase: headers complete, the body arriving.
const RECEIVING: u8 = 1;
/// A connection's phase: request complete, being handled, or its response being written.
const HANDLING: u8 = 2;
/// A connection's phase: closed to make room.
const EVICTED: u8 = 3;

/// When a phase began: nanoseconds on the monotonic clock since the first call. The connection
/// whose phase began first is the stalest. A clock rather than a shared counter: a counter would be
/// an atomic every request writes from both worker threads, bouncing between the cores.
fn tick() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let nanos = START.get_or_init(Instant::now).elapsed().as_nanos();
    u64::try_from(nanos).unwrap_or(u64::MAX)
}

/// What the server knows about one open connection.
#[derive(Debug)]
struct Slot {
    id: u64,
    phase: AtomicU8,
    /// The [`tick`] at which the current phase began.
    since: AtomicU64,
    /// Told when the connection is closed to make room.
    evicted: Notify,
    /// The registry's: told when this connection stops handling a request.
    room: Arc<RoomSignal>,
}

impl Slot {
    fn enter(&self, phase: u8) {
        self.since.store(tick(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Release);
    }

    /// The request's headers are complete (hyper calls the service).
    fn request_started(&self, has_body: bool) {
        self.enter(if has_body { RECEIVING } else { HANDLING });
    }

    /// The request's body is complete.
    fn body_received(&self) {
        let _ =
            self.phase
                .compare_exchange(RECEIVING, HANDLING, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// The response has been handed to the connection (its body is done or dropped).
    fn response_done(&self) {
        if self.phase.load(Ordering::Acquire) != EVICTED {
            self.enter(WAITING);
            self.room.made();
        }
    }
}

/// How connections tell the accept loop, while it waits at the cap, that one stopped handling a
/// request or closed. Only while it waits: otherwise a response costs no write to state shared by
/// every connection.
#[derive(Debug, Default)]
struct RoomSignal {
    waiting: AtomicBool,
    notify: Notify,
}

impl RoomSignal {
    /// A connection changed (its phase already stored).
    fn made(&self) {
        // Orders the phase change before the look at `waiting`; `wait_for_room` orders its flag
        // before its look at the phases: one of the two sees the other.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed) {
            self.notify.notify_one();
        }
    }
}

/// The open connections.
#[derive(Debug)]
struct Registry {
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    next_id: AtomicU64,
    cap: usize,
    /// Told, while the accept loop waits, when a connection closes or stops handling a request.
    room: Arc<RoomSignal>,
    /// Whether the cap was reached since a connection was last admitted below it (to log the
    /// first eviction of a flood, not each).
    saturated: AtomicBool,
}

impl Registry {
    fn new(cap: usize) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            cap: cap.max(1),
            room: Arc::new(RoomSignal::default()),
            saturated: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the open connection whose current phase without a request being handled began
    /// first, and returns its id; `None` when every one has a request being handled.
    fn evict_stalest(slots: &HashMap<u64, Arc<Slot>>) -> Option<u64> {
        // A victim whose phase changes between the look and the eviction (its headers or body
        // just completed) is spared, and the next stalest looked for.
        for _ in 0..slots.len() {
            let (_, phase, victim) = slots
                .values()
                .filter_map(|slot| {
                    let phase = slot.phase.load(Ordering::Acquire);
                    matches!(phase, WAITING | RECEIVING)
                        .then(|| (slot.since.load(Ordering::Relaxed), phase, slot))
                })
                .min_by_key(|(since, _, _)| *since)?;
            if victim
                .phase
                .compare_exchange(phase, EVICTED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                victim.evicted.notify_one();
                return Some(victim.id);
            }
        }
        None
    }

    /// Registers a new connection, closing the stalest connection without a request being handled
    /// when the cap is reached; `None` when every open connection has a request being handled.
    fn admit(self: &Arc<Self>) -> Option<Registration> {
        let mut slots = self.lock();
        if slots.len() >= self.cap {
            let evicted = Self::evict_stalest(&slots)?;
            slots.remove(&evicted);
            if !self.saturated.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    max_connections = self.cap,
                    "connection limit reached: closing the stalest connections without a request being handled"
                );
            }
        } else {
            self.saturated.store(false, Ordering::Relaxed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            id,
            phase: AtomicU8::new(WAITING),
            since: AtomicU64::new(tick()),
            evicted: Notify::new(),
            room: self.room.clone(),
        });
        slots.insert(id, slot.clone());
        Some(Registration {
            registry: self.clone(),
            slot,
        })
    }
}

/// A connection's place in the registry, given up when dropped (also when its task is aborted).
#[derive(Debug)]
struct Registration {
    registry: Arc<Registry>,
    slot: Arc<Slot>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.slot.id);
        self.registry.room.made();
    }
}

/// The handler as a hyper service that records its connection's phase.
#[derive(Debug, Clone)]
struct Tracked<H> {
    handler: H,
    slot: Arc<Slot>,
}

type TrackedFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<ResponseBody>, Infallible>> + Send>>;

impl<H: Handler> Service<http::Request<Incoming>> for Tracked<H> {
    type Response = http::Response<ResponseBody>;
    type Error = Infallible;
    type Future = TrackedFuture;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        self.slot.request_started(!request.body().is_end_stream());
        let request = request.map(|inner| RequestBody {
            inner,
            slot: self.slot.clone(),
        });
        let slot = self.slot.clone();
        // `map`, not an `async move` block around the handler's future: the block would hold that
        // future twice (as it captured it and as it awaits it), and boxing copies all of it.
        Box::pin(self.handler.call(request).map(|response| {
            Ok(response.map(|data| ResponseBody {
                data: (!data.is_empty()).then_some(data),
                _done: ResponseDone(slot),
            }))
        }))
    }
}

/// A request body that records when it is complete.
#[derive(Debug)]
pub(crate) struct RequestBody {
    inner: Incoming,
    slot: Arc<Slot>,
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.slot.body_received();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A whole response body, in one frame, that records, when hyper drops it (written, or the
/// connection gone), that the connection no longer handles a request.
#[derive(Debug)]
struct ResponseBody {
    /// What is left to send: `None` once sent (or for an empty body).
    data: Option<Bytes>,
    _done: ResponseDone,
}

#[derive(Debug)]
struct ResponseDone(Arc<Slot>);

impl Drop for ResponseDone {
    fn drop(&mut self) {
        self.0.response_done();
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.data.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let len = self.data.as_ref().map_or(0, Bytes::len);
        SizeHint::with_exact(u64::try_from(len).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn limits_default_and_read_the_environment() {
        assert_eq!(
            ServerLimits::from_lookup(&lookup(&[])).unwrap(),
            ServerLimits {
                header_read_timeout: Duration::from_secs(10),
                body_read_timeout: Duration::from_secs(10),
                max_connections: 512,
            }
        );
        let limits = ServerLimits::from_lookup(&lookup(&[
            ("LOCAL_HEADER_TIMEOUT_MS", "250"),
            ("LOCAL_BODY_TIMEOUT_MS", " 300 "),
            ("LOCAL_MAX_CONNECTIONS", "8"),
        ]))
        .unwrap();
        assert_eq!(limits.header_read_timeout, Duration::from_millis(250));
        assert_eq!(limits.body_read_timeout, Duration::from_millis(300));
        assert_eq!(limits.max_connections, 8);
        for (name, value) in [
            ("LOCAL_HEADER_TIMEOUT_MS", "0"),
            ("LOCAL_BODY_TIMEOUT_MS", "ten"),
            ("LOCAL_MAX_CONNECTIONS", "0"),
            ("LOCAL_HEADER_TIMEOUT_MS", "3600001"),
        ] {
            let err =
                ServerLimits::from_lookup(&move |n: &str| (n == name).then(|| value.to_owned()))
                    .unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    /// Phases are ordered by the clock: each step of these tests begins on a later tick.
    fn later() {
        let before = tick();
        while tick() == before {
            std::thread::sleep(Duration::from_micros(10));
        }
    }

    #[tokio::test]
    async fn at_the_cap_the_stalest_connection_without_a_request_being_handled_makes_room() {
        let registry = Arc::new(Registry::new(3));
        let first = registry.admit().unwrap();
        let second = registry.admit().unwrap();
        let third = registry.admit().unwrap();
        // The oldest is handling a request: the next stalest (the second, waiting) goes.
        first.slot.request_started(false);
        later();
        second.slot.request_started(true);
        later();
        third.slot.request_started(false);
        third.slot.response_done();
        later();
        let fourth = registry.admit().unwrap();
        assert_eq!(second.slot.phase.load(Ordering::Acquire), EVICTED);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), second.slot.evicted.notified())
                .await
                .is_ok()
        );
        assert_eq!(registry.lock().len(), 3);
        // Then the third (idle since its response), then the fourth (newest, waiting).
        later();
        let _fifth = registry.admit().unwrap();
        assert_eq!(third.slot.phase.load(Ordering::Acquire), EVICTED);
        let _sixth = registry.admit().unwrap();
        assert_eq!(fourth.slot.phase.load(Ordering::Acquire), EVICTED);
        assert_eq!(first.slot.phase.load(Ordering::Acquire), HANDLING);
        drop((second, third, fourth));
        assert_eq!(registry.lock().len(), 3);
    }

    #[tokio::test]
    async fn when_every_connection_is_handling_a_request_a_new_one_waits() {
        let registry = Arc::new(Registry::new(2));
        let first = registry.admit().unwrap();
        let second = registry.admit().unwrap();
        first.slot.request_started(true);
        first.slot.body_received();
        second.slot.request_started(false);
        assert!(registry.admit().is_none());
        // While the accept loop waits, a response done is a change it is told of, and makes room.
        registry.room.waiting.store(true, Ordering::SeqCst);
        second.slot.response_done();
        assert!(
            tokio::time::timeout(Duration::from_secs(1), registry.room.notify.notified())
                .await
                .is_ok()
        );
        let _third = registry.admit().unwrap();
        assert_eq!(second.slot.phase.load(Ordering::Acquire), EVICTED);
        // A closed connection gives its place up.
        drop(first);
        assert_eq!(registry.lock().len(), 1);
        assert!(registry.admit().is_some());
    }
}
