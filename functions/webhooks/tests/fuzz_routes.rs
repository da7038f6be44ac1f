//! Every webhook route fuzzed with generated API Gateway HTTP API (v2) events (issue 18): the three
//! Connect page events and Forge's `/forge/events` (the Forge door open), with every kind of path,
//! header, body and credential (`test_support::fuzz`), over rules that match every page event.
//!
//! The property, for each event, through lambda_http's reading of it and the function's handler:
//! - no panic and no 5xx (the store and the queue are up: a 503 here would be a bug);
//! - a refusal (4xx) is a JSON object, 401s name the realm, and no answer carries a secret;
//! - nothing is written (no idempotency mark, no installation) and nothing queued unless the
//!   credential verified for the route the event reached (a request-bound Connect token of a live
//!   tenant on a Connect webhook, a Forge invocation on `/forge/events`), and then every write
//!   and every job is under that tenant's key.
//!
//! `PROPTEST_CASES=100000 cargo test -p understudy-webhooks --test fuzz_routes` searches longer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use connect_auth::FixedClock;
use proptest::prelude::*;
use test_support::fuzz::{self, CountingStore, Keyring, Proof, Shot, Takes, Target};
use test_support::queue::RecordingQueue;
use understudy_queue::MarkedQueue;
use understudy_web::lambda::to_api_request;
use understudy_web::routes::{self, Function, Route};
use understudy_web::{AppConfig, ForgeFrontDoor};
use understudy_webhooks::{MAX_WEBHOOK_BODY, Rules, Webhooks};

/// Cases per run: with the other functions' fuzz tests, well under a minute in a debug build.
const CASES: u32 = 500;

/// Every page event of every space is edited: an accepted event always queues a job.
const RULES: &str = r#"{"restricted_pages": "grant", "rules": [
    {"name": "all", "events": ["page_created", "page_updated", "content_permissions_updated"],
     "edit": [{"append": "<p>Reviewed</p>"}]}]}"#;

type App = Webhooks<CountingStore, MarkedQueue<CountingStore, RecordingQueue>, FixedClock>;

struct Fixture {
    app: App,
    store: Arc<CountingStore>,
    queue: Arc<RecordingQueue>,
}

async fn fixture() -> Fixture {
    let config = AppConfig::from_lookup(fuzz::env).unwrap();
    let store = fuzz::seeded_store().await;
    let queue = Arc::new(RecordingQueue::default());
    let forge = ForgeFrontDoor::new(
        config.forge.as_ref().unwrap(),
        fuzz::forge_jwks(),
        store.clone(),
        fuzz::clock(),
    );
    let app = Webhooks::new(
        config,
        Rules::parse(RULES).unwrap(),
        store.clone(),
        Arc::new(MarkedQueue::new(store.clone(), queue.clone())),
        fuzz::clock(),
    )
    .with_forge(Some(forge));
    Fixture { app, store, queue }
}

/// The proofs each route takes before it may write or queue.
fn accepts(route: Route, proof: &Proof) -> bool {
    match route {
        routes::PAGE_CREATED | routes::PAGE_UPDATED | routes::CONTENT_PERMISSIONS_UPDATED => {
            matches!(proof, Proof::ConnectRequest(_))
        }
        routes::FORGE_EVENTS => matches!(proof, Proof::ForgeApp(_) | Proof::ForgeUser(_)),
        _ => false,
    }
}

fn targets() -> Vec<Target> {
    let target = |route: Route, takes, templates| Target {
        method: route.method,
        path: route.path,
        takes,
        templates,
        limit: MAX_WEBHOOK_BODY,
    };
    let targets = vec![
        target(
            routes::PAGE_CREATED,
            Takes::RequestToken,
            fuzz::page_events(),
        ),
        target(
            routes::PAGE_UPDATED,
            Takes::RequestToken,
            fuzz::page_events(),
        ),
        target(
            routes::CONTENT_PERMISSIONS_UPDATED,
            Takes::RequestToken,
            fuzz::page_events(),
        ),
        target(
            routes::FORGE_EVENTS,
            Takes::Forge,
            fuzz::forge_page_events(),
        ),
    ];
    fuzz::assert_every_route_is_aimed_at(Function::Webhooks, &targets);
    targets
}

/// What no answer may contain.
const SECRETS: [&str; 5] = [
    "secret-a",
    "secret-d",
    "secret-u",
    "system-token-1",
    "user-token-1",
];

async fn check(shot: Shot) -> Result<(), TestCaseError> {
    let f = fixture().await;
    let rendered = shot.render(&Keyring::fixtures());
    let request = to_api_request(rendered.lambda_request());
    let route = routes::resolve(Function::Webhooks, &request.method, &request.raw_path).ok();
    let response = f.app.handle(request).await;
    let (status, body) = fuzz::check_answer(&response, &rendered, &SECRETS, |json| {
        json["error"].is_string()
    })?;
    let writes = f.store.writes();
    let jobs = f.queue.jobs();
    fuzz::note_case(
        route.map(|r| r.path),
        rendered.proof.as_ref(),
        status,
        writes.len() + jobs.len(),
    );
    match (route, &rendered.proof) {
        (Some(route), Some(proof)) if accepts(route, proof) => {
            for write in &writes {
                prop_assert_eq!(write.tenant.as_str(), proof.tenant(), "{:?}", writes);
            }
            for job in &jobs {
                prop_assert_eq!(job.client_key.as_str(), proof.tenant());
            }
            // An accepted event is marked and queued together, or neither.
            prop_assert_eq!(
                jobs.len(),
                writes.iter().filter(|w| w.op == "mark_once").count(),
                "{:?}",
                writes
            );
        }
        _ => {
            prop_assert!(
                writes.is_empty() && jobs.is_empty(),
                "{writes:?} / {} jobs without a proof for {route:?}: {status} {body} for {rendered:?}",
                jobs.len()
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(fuzz::config(CASES))]

    #[test]
    fn no_event_panics_fails_writes_or_queues_without_the_proof_its_route_takes(
        shot in fuzz::shot(targets())
    ) {
        fuzz::runtime().block_on(check(shot))?;
    }
}

/// A genuine page event gets through the same harness and is queued (the property is not
/// vacuous).
#[test]
fn a_genuine_event_is_queued_through_the_harness() {
    fuzz::runtime().block_on(async {
        let f = fixture().await;
        let shot = fuzz::genuine_connect_shot(
            "POST",
            "/webhooks/page_updated",
            &fuzz::page_events()[0],
            fuzz::Qsh::ThisRequest,
        );
        let rendered = shot.render(&Keyring::fixtures());
        assert_eq!(
            rendered.proof,
            Some(Proof::ConnectRequest(fuzz::LIVE.0.into()))
        );
        let response = f
            .app
            .handle(to_api_request(rendered.lambda_request()))
            .await;
        assert_eq!(response.status(), 204);
        assert_eq!(f.queue.jobs().len(), 1);
    });
}
