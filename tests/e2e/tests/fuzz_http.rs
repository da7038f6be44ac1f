//! Every route of the local app fuzzed over HTTP (issue 18): the requests of
//! `test_support::fuzz` (methods, paths with odd encodings, repeated and oversized headers, bodies
//! of every shape, credentials genuine or flawed) written as raw HTTP/1.1 on a TCP connection, so
//! that what no HTTP client library would send (a path with spaces, dot segments, bytes that are
//! not ASCII, a `Content-Length` that lies) reaches the server as written.
//!
//! One app, installed into the simulator with the worker off (an accepted event stays queued, so
//! that a job queued by mistake is seen), answers every case in turn. The property, for each
//! request:
//! - the server answers without a 5xx (or closes a connection it cannot read; hyper answers a
//!   request line or headers it cannot parse with a 4xx itself);
//! - then still answers a normal request (the descriptor);
//! - a request whose credential does not verify for the route it reached queues nothing and
//!   changes nothing an operator can see in the store: the tenant's state, its settings and its
//!   audit trail (what a verified request changed is put back before the next case).
//!
//! Only Connect tokens can be genuine here: the app trusts the simulator's install key and Forge
//! JWKS, not the fixtures', so signed installs and Forge invocations all count as unverified.
//!
//! `PROPTEST_CASES=20000 cargo test -p e2e-tests --test fuzz_http` searches longer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use e2e_tests::{World, now};
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::Value;
use test_support::fuzz::{self, Keyring, Payload, Proof, Rendered, Takes, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use understudy_domain::{AuditLog, ClientKey, SettingsStore, TenantState, TenantStore};
use understudy_web::routes::{self, Function, Route};

/// Cases per run: with the functions' fuzz tests, well under a minute in a debug build.
const CASES: u32 = 500;

/// Every page event of every space is edited: a verified event always queues a job.
const RULES: &str = r#"{"restricted_pages": "grant", "rules": [
    {"name": "all", "events": ["page_created", "page_updated", "content_permissions_updated"],
     "edit": [{"append": "<p>Reviewed</p>"}]}]}"#;

/// The body limits: the functions' (64 KiB, webhooks 256 KiB) and the local app's own (1 MiB).
const LIMITS: [usize; 3] = [64 * 1024, 256 * 1024, 1024 * 1024];

/// What each route takes before it may write or queue (as the functions' own fuzz tests say).
fn accepts(route: Route, proof: &Proof) -> bool {
    match route {
        routes::INSTALLED | routes::UNINSTALLED => matches!(proof, Proof::Install(_)),
        routes::ENABLED
        | routes::DISABLED
        | routes::PAGE_CREATED
        | routes::PAGE_UPDATED
        | routes::CONTENT_PERMISSIONS_UPDATED => matches!(proof, Proof::ConnectRequest(_)),
        routes::FORGE_LIFECYCLE | routes::FORGE_SCHEDULED | routes::FORGE_EVENTS => {
            matches!(proof, Proof::ForgeApp(_) | Proof::ForgeUser(_))
        }
        routes::PAGE_EDITS
        | routes::PAGE_AUDIT
        | routes::ADMIN_SETTINGS
        | routes::ADMIN_SETTINGS_SAVE
        | routes::ADMIN_BLOCKED
        | routes::ADMIN_RETRY
        | routes::ADMIN_AUDIT
        | routes::ADMIN_QUEUE => matches!(proof, Proof::ConnectContext(_) | Proof::ForgeUser(_)),
        _ => false,
    }
}

/// Every route of the table, with what it takes and its own payloads.
fn targets() -> Vec<Target> {
    routes::ROUTES
        .iter()
        .map(|route| {
            let (takes, templates) = match *route {
                routes::DESCRIPTOR => (Takes::Nothing, Vec::new()),
                routes::INSTALLED | routes::UNINSTALLED => {
                    (Takes::Install, fuzz::install_payloads())
                }
                routes::ENABLED | routes::DISABLED => {
                    (Takes::RequestToken, fuzz::lifecycle_payloads())
                }
                routes::FORGE_LIFECYCLE | routes::FORGE_SCHEDULED => {
                    (Takes::Forge, fuzz::forge_lifecycle_events())
                }
                routes::FORGE_EVENTS => (Takes::Forge, fuzz::forge_page_events()),
                routes::PAGE_CREATED
                | routes::PAGE_UPDATED
                | routes::CONTENT_PERMISSIONS_UPDATED => (Takes::RequestToken, fuzz::page_events()),
                routes::PAGE_EDITS => (Takes::ContextOrForge, fuzz::edit_requests()),
                routes::ADMIN_SETTINGS_SAVE => (Takes::ContextOrForge, fuzz::settings_requests()),
                routes::ADMIN_RETRY => (Takes::ContextOrForge, fuzz::retry_requests()),
                routes::PAGE_PANEL | routes::ADMIN_PAGE => (Takes::RequestToken, Vec::new()),
                _ => (Takes::ContextOrForge, Vec::new()),
            };
            Target {
                method: route.method,
                path: route.path,
                takes,
                templates,
                limit: LIMITS[usize::from(route.function == Function::Webhooks)],
            }
        })
        // The local app's own limit, on a webhook.
        .chain(std::iter::once(Target {
            method: "POST",
            path: "/webhooks/page_updated",
            takes: Takes::RequestToken,
            templates: fuzz::page_events(),
            limit: LIMITS[2],
        }))
        .collect()
}

/// The request as raw HTTP/1.1: the request line as rendered (whatever it holds), `Host`, the
/// body's `Content-Length` and `Connection: close`, then the rendered headers in order (repeated
/// ones repeated), then the body.
fn raw_request(addr: std::net::SocketAddr, r: &Rendered) -> Vec<u8> {
    let target = if r.query.is_empty() {
        r.path.clone()
    } else {
        format!("{}?{}", r.path, r.query)
    };
    let body = r.payload.bytes();
    let mut head = format!(
        "{} {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n",
        r.method
    );
    if !matches!(r.payload, Payload::None) {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    for (name, value) in &r.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

/// The status of the answer to `request`, or `None` when the server closed the connection
/// without one.
async fn send(addr: std::net::SocketAddr, request: &[u8]) -> Option<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // The server may answer (and close) before it has read everything: a write error then is
        // not a failure. The writing side stays open (`connection: close` ends the exchange): a
        // client that hangs up is not waited for.
        let _ = stream.write_all(request).await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer within 30 s"));
    let text = String::from_utf8_lossy(&answer);
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?;
    status.parse().ok()
}

/// What an operator can see of the tenant: its state, its settings, its audit trail.
async fn visible(world: &World, tenant: &ClientKey) -> (TenantState, Option<Value>, usize) {
    let store = world.app.store();
    let state = store
        .get_tenant(tenant, now())
        .await
        .unwrap()
        .map_or(TenantState::Uninstalled, |t| t.state);
    let settings = store
        .get_settings(tenant, now())
        .await
        .unwrap()
        .map(|s| s.document);
    let audit = store
        .list_for_tenant(tenant, None, 1000, now())
        .await
        .unwrap()
        .records
        .len();
    (state, settings, audit)
}

async fn check(world: &World, keys: &Keyring, shot: fuzz::Shot) -> Result<(), TestCaseError> {
    let addr = world.app.addr();
    let tenant = world.client_key();
    let mut keys = keys.clone();
    keys.now = now();
    let rendered = shot.render(&keys);
    let route = http::Method::from_bytes(rendered.method.as_bytes())
        .ok()
        .and_then(|method| {
            let function = routes::owner(&rendered.path)?;
            routes::resolve(function, &method, &rendered.path).ok()
        });
    let queued = world.app.queue().pending().await.unwrap();
    let before = visible(world, &tenant).await;

    let status = send(addr, &raw_request(addr, &rendered)).await;
    if let Some(status) = status
        && status >= 500
    {
        return Err(TestCaseError::fail(format!("{status} for {rendered:?}")));
    }
    let descriptor =
        b"GET /atlassian-connect.json HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    if send(addr, descriptor).await != Some(200) {
        return Err(TestCaseError::fail(format!(
            "the app stopped answering after {rendered:?}"
        )));
    }

    let verified = matches!((route, &rendered.proof), (Some(r), Some(p)) if accepts(r, p));
    let after = visible(world, &tenant).await;
    let queued_after = world.app.queue().pending().await.unwrap();
    let changed = usize::from(after != before) + usize::from(queued_after != queued);
    fuzz::note_case(
        route.map(|r| r.path),
        rendered.proof.as_ref(),
        status.unwrap_or(0),
        changed,
    );
    if !verified && (after != before || queued_after != queued) {
        return Err(TestCaseError::fail(format!(
            "{status:?} without a proof for {route:?} changed {before:?} / {queued} queued into \
             {after:?} / {queued_after} queued: {rendered:?}"
        )));
    }
    // What a verified request changed is put back: the next case starts from an enabled tenant
    // with the deployment's rules.
    if after.0 != before.0 {
        world
            .app
            .store()
            .set_state(&tenant, before.0, now())
            .await
            .unwrap();
    }
    Ok(())
}

#[test]
fn no_request_fails_the_app_or_changes_anything_without_the_proof_its_route_takes() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let world = runtime.block_on(World::with_env(
        RULES,
        &[
            ("LOCAL_WORKER", "off"),
            // A body announced longer than it is waits for this, not for 10 s.
            ("LOCAL_BODY_TIMEOUT_MS", "300"),
            ("LOCAL_HEADER_TIMEOUT_MS", "2000"),
        ],
    ));
    let installation = world.sim.installation("understudy").unwrap();
    // Alice may use the admin API; Bob may not.
    world.sim.set_site_admin(&world.demo.alice, true);
    let keys = Keyring {
        live: (
            installation.client_key.clone(),
            installation.shared_secret.clone(),
        ),
        disabled: None,
        uninstalled: None,
        base_path: String::new(),
        app_base_url: world.app.base_url().to_owned(),
        // The app trusts the simulator's install key and Forge JWKS, not the fixtures'.
        installs_trusted: false,
        forge_trusted: false,
        users: [world.demo.alice.clone(), world.demo.bob.clone()],
        now: now(),
    };
    let mut config = fuzz::config(CASES);
    config.failure_persistence = None;
    let mut runner = TestRunner::new(config);
    let result = runner.run(&fuzz::shot(targets()), |shot| {
        runtime.block_on(check(&world, &keys, shot))
    });
    runtime.block_on(async move { drop(world) });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
