// Test support: a fixture that cannot be built is a failing test, so it says why and panics.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

//! The fixtures the workspace's tests share, one copy each, so that a change to what Confluence
//! sends (an install payload, a signed token, an API Gateway event) is made once.
//!
//! - [`install`]: the install payload, the tenant it makes, and installs signed with the test key;
//! - [`jwt`]: HS256 tokens as Confluence signs them for requests to the app;
//! - [`logs`]: capturing what a tracing subscriber writes, and checking it for secrets;
//! - [`aws`]: the local AWS-compatible server the tests talk to;
//! - `lambda` (feature `lambda`): API Gateway HTTP API (v2) events, and [`lambda_runtime_api`], a
//!   stand-in for the Lambda Runtime API;
//! - `confluence` (feature `confluence`): the Confluence client and the edit engine as the protocol
//!   tests build them;
//! - `queue` (feature `queue`): a queue that records its jobs, and edit jobs;
//! - `sim` (feature `sim`): the Confluence simulator's installation as a tenant, and a client
//!   configured for the simulator;
//! - `fault_proxy` (feature `fault-proxy`): a proxy in front of the AWS-compatible server that
//!   delays, drops, resets or answers with AWS's own errors, per rule;
//! - `fuzz` (feature `fuzz`): bad input for every route (generated API Gateway events and
//!   requests, credentials genuine or flawed, a store that notes its writes);
//! - `browser` (feature `browser`): a headless Chromium driven through chromedriver, with
//!   screenshots of failing tests.

pub mod aws;
pub mod install;
pub mod jwt;
pub mod logs;

#[cfg(feature = "browser")]
pub mod browser;
#[cfg(feature = "confluence")]
pub mod confluence;
#[cfg(feature = "fault-proxy")]
pub mod fault_proxy;
#[cfg(feature = "fuzz")]
pub mod fuzz;
#[cfg(feature = "lambda")]
pub mod lambda;
#[cfg(feature = "lambda")]
pub mod lambda_runtime_api;
#[cfg(feature = "queue")]
pub mod queue;
#[cfg(feature = "sim")]
pub mod sim;

pub use install::{install_payload, tenant};
pub use jwt::ConnectToken;

/// The instant the tests' fixed clocks stand at, in seconds since the epoch.
pub const NOW: i64 = 1_780_000_000;

/// The app's key, as the descriptor names it.
pub const APP_KEY: &str = "understudy";

/// The app's base URL in the tests (the audience of signed installs).
pub const APP_BASE_URL: &str = "https://understudy.example.com";

/// The environment of an app deployed at [`APP_BASE_URL`] with the key [`APP_KEY`], as a lookup
/// for the configs' `from_lookup`.
pub fn app_env(name: &str) -> Option<String> {
    match name {
        "APP_BASE_URL" => Some(APP_BASE_URL.to_owned()),
        "APP_KEY" => Some(APP_KEY.to_owned()),
        _ => None,
    }
}

/// A port on 127.0.0.1 that nobody listens on (bound, then closed): a server that is down.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}
