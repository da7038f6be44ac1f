//! Every route of the admin page and API fuzzed with generated API Gateway HTTP API (v2) events
//! (issue 18): the page `GET /ui/admin`, the settings (read and save), blocked pages, "retry now",
//! the audit trail (filters, cursors, CSV) and the queue's health, the Forge door open, with every
//! kind of path, query, header, body and credential (`test_support::fuzz`).
//!
//! Confluence is `fuzz::StubConfluence` (`557058:alice` is a site admin, `557058:bob` is not), so
//! the site-admin check answers at once and the property covers everything past it; the HTTP
//! client's wire is covered elsewhere. One blocked job is parked for the live tenant (page 42) and
//! one dead-lettered for the Forge installation (page 7), so a retry can queue. Nothing is down on
//! purpose, so no 503 is expected either.
//!
//! The property, for each event, through lambda_http's reading of it and the function's handler:
//! - no panic and no 5xx;
//! - a refusal (4xx) is a JSON object, 401s name the realm, and no answer carries a secret;
//! - nothing is written to the store (no rate-limit count, no settings, no mark, no unparking, no
//!   Forge installation), nothing queued and Confluence not asked (whether the caller is a site
//!   admin) unless the credential verified for the route the event reached (a context token naming a user, or a Forge invocation by a user, on the API),
//!   and then every write and job is under that tenant's key. Whether the user is a site admin is
//!   decided after the per-user count: a verified user who is no admin counts a call, nothing
//!   more.
//!
//! `PROPTEST_CASES=100000 cargo test -p understudy-admin --test fuzz_routes` searches longer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use connect_auth::FixedClock;
use proptest::prelude::*;
use serde_json::json;
use test_support::fuzz::{self, CountingStore, Keyring, Proof, Shot, Takes, Target};
use test_support::queue::RecordingQueue;
use understudy_admin::{AdminApi, MAX_SETTINGS_BODY};
use understudy_queue::MarkedQueue;
use understudy_web::lambda::to_api_request;
use understudy_web::routes::{self, Function, Route};
use understudy_web::{AppConfig, ForgeFrontDoor};

/// Cases per run: with the other functions' fuzz tests, well under a minute in a debug build.
const CASES: u32 = 500;

struct Fixture {
    admin: AdminApi<CountingStore, FixedClock>,
    store: Arc<CountingStore>,
    queue: Arc<RecordingQueue>,
    confluence: Arc<fuzz::StubConfluence>,
}

async fn fixture() -> Fixture {
    let config = AppConfig::from_lookup(fuzz::env).unwrap();
    let store = fuzz::seeded_store().await;
    fuzz::park_jobs(&store).await;
    let queue = Arc::new(RecordingQueue::default());
    let confluence = Arc::new(fuzz::StubConfluence::default());
    let forge = ForgeFrontDoor::new(
        config.forge.as_ref().unwrap(),
        fuzz::forge_jwks(),
        store.clone(),
        fuzz::clock(),
    );
    let default_rules = json!({"restricted_pages": "skip", "rules": []});
    let admin = AdminApi::new(
        config,
        Some(default_rules),
        store.clone(),
        Arc::new(MarkedQueue::new(store.clone(), queue.clone())),
        Arc::new(fuzz::FixedDepth(3)),
        confluence.clone(),
        fuzz::clock(),
    )
    .with_forge(Some(forge));
    Fixture {
        admin,
        store,
        queue,
        confluence,
    }
}

/// The proofs each route takes before it may write or queue.
fn accepts(route: Route, proof: &Proof) -> bool {
    match route {
        // The page verifies a request token but writes nothing.
        routes::ADMIN_PAGE => false,
        _ => matches!(proof, Proof::ConnectContext(_) | Proof::ForgeUser(_)),
    }
}

fn targets() -> Vec<Target> {
    let target = |route: Route, takes, templates| Target {
        method: route.method,
        path: route.path,
        takes,
        templates,
        limit: MAX_SETTINGS_BODY,
    };
    let api = Takes::ContextOrForge;
    let targets = vec![
        target(routes::ADMIN_PAGE, Takes::RequestToken, Vec::new()),
        target(routes::ADMIN_SETTINGS, api, Vec::new()),
        target(routes::ADMIN_SETTINGS_SAVE, api, fuzz::settings_requests()),
        target(routes::ADMIN_BLOCKED, api, Vec::new()),
        target(routes::ADMIN_RETRY, api, fuzz::retry_requests()),
        target(routes::ADMIN_AUDIT, api, Vec::new()),
        target(routes::ADMIN_QUEUE, api, Vec::new()),
    ];
    fuzz::assert_every_route_is_aimed_at(Function::Admin, &targets);
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
    let route = routes::resolve(Function::Admin, &request.method, &request.raw_path).ok();
    let response = f.admin.handle(request).await;
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
        }
        _ => prop_assert!(
            writes.is_empty() && jobs.is_empty() && f.confluence.calls() == 0,
            "{writes:?} / {} jobs / {} Confluence calls without a proof for {route:?}: {status} \
             {body} for {rendered:?}",
            jobs.len(),
            f.confluence.calls()
        ),
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

/// A site admin's genuine "retry now" gets through the same harness and queues the parked job
/// (the property is not vacuous).
#[test]
fn a_genuine_retry_is_queued_through_the_harness() {
    fuzz::runtime().block_on(async {
        let f = fixture().await;
        let shot = fuzz::genuine_connect_shot(
            "POST",
            "/api/admin/retry",
            &fuzz::retry_requests()[0],
            fuzz::Qsh::Context,
        );
        let rendered = shot.render(&Keyring::fixtures());
        let response = f
            .admin
            .handle(to_api_request(rendered.lambda_request()))
            .await;
        assert_eq!(response.status(), 202, "{:?}", response.body());
        assert_eq!(f.queue.jobs().len(), 1);
    });
}
