//! Every route of the edit API fuzzed with generated API Gateway HTTP API (v2) events (issue 18):
//! `POST /api/pages/{pageId}/edits`, `GET /api/pages/{pageId}/audit` and the panel
//! `GET /ui/page`, the Forge door open, with every kind of path, page id, header, body and
//! credential (`test_support::fuzz`).
//!
//! Confluence is `fuzz::StubConfluence`, in memory and healthy (pages exist, one id in ten is not
//! found, one in ten may be viewed but not edited, `557058:alice` is a site admin): so the
//! property covers what the function does with the caller's input all the way through an edit and
//! an audit listing, not the HTTP client's wire (`shared/confluence/tests` and the simulator's
//! tests cover that). Nothing is down on purpose, so no 503 is expected either.
//!
//! The property, for each event, through lambda_http's reading of it and the function's handler:
//! - no panic and no 5xx;
//! - an error answer (4xx) is a JSON object (an `error`, or for an edit refused or blocked by
//!   Confluence, its audit record); 401s name the realm; no answer carries a secret;
//! - nothing is written to the store (no rate-limit count, no audit record, no account noted, no
//!   Forge installation) and Confluence is not called unless the credential verified for the
//!   route the event reached (a context token naming a user, or a Forge invocation by a user, on
//!   the API routes), and then every write is under that tenant's key.
//!
//! `PROPTEST_CASES=100000 cargo test -p understudy-edits --test fuzz_routes` searches longer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use connect_auth::{Clock, FixedClock};
use proptest::prelude::*;
use test_support::fuzz::{self, CountingStore, Keyring, Proof, Shot, Takes, Target};
use understudy_core::{EditEngine, EngineSettings};
use understudy_domain::AuditLog;
use understudy_edits::api::{EditApi, MAX_EDIT_BODY};
use understudy_web::lambda::to_api_request;
use understudy_web::routes::{self, Function, Route};
use understudy_web::{AppConfig, ForgeFrontDoor};

/// Cases per run: with the other functions' fuzz tests, well under a minute in a debug build.
const CASES: u32 = 500;

struct Fixture {
    api: EditApi<CountingStore, FixedClock>,
    store: Arc<CountingStore>,
    confluence: Arc<fuzz::StubConfluence>,
}

async fn fixture() -> Fixture {
    let config = AppConfig::from_lookup(fuzz::env).unwrap();
    let store = fuzz::seeded_store().await;
    let confluence = Arc::new(fuzz::StubConfluence::default());
    let engine = EditEngine::new(
        confluence.clone(),
        store.clone() as Arc<dyn AuditLog>,
        Arc::new(fuzz::clock()) as Arc<dyn Clock>,
        EngineSettings::default(),
    )
    .noting_accounts(store.clone());
    let forge = ForgeFrontDoor::new(
        config.forge.as_ref().unwrap(),
        fuzz::forge_jwks(),
        store.clone(),
        fuzz::clock(),
    );
    let api = EditApi::new(config, store.clone(), engine, fuzz::clock()).with_forge(Some(forge));
    Fixture {
        api,
        store,
        confluence,
    }
}

/// The proofs each route takes before it may write.
fn accepts(route: Route, proof: &Proof) -> bool {
    match route {
        routes::PAGE_EDITS | routes::PAGE_AUDIT => {
            matches!(proof, Proof::ConnectContext(_) | Proof::ForgeUser(_))
        }
        // The panel verifies a request token but writes nothing.
        _ => false,
    }
}

fn targets() -> Vec<Target> {
    let target = |route: Route, takes, templates| Target {
        method: route.method,
        path: route.path,
        takes,
        templates,
        limit: MAX_EDIT_BODY,
    };
    let targets = vec![
        target(
            routes::PAGE_EDITS,
            Takes::ContextOrForge,
            fuzz::edit_requests(),
        ),
        target(routes::PAGE_AUDIT, Takes::ContextOrForge, Vec::new()),
        target(routes::PAGE_PANEL, Takes::RequestToken, Vec::new()),
    ];
    fuzz::assert_every_route_is_aimed_at(Function::EditApi, &targets);
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
    let Fixture {
        api,
        store,
        confluence,
    } = fixture().await;
    let rendered = shot.render(&Keyring::fixtures());
    let request = to_api_request(rendered.lambda_request());
    let route = routes::resolve(Function::EditApi, &request.method, &request.raw_path).ok();
    let response = api.handle(request).await;
    let (status, body) = fuzz::check_answer(&response, &rendered, &SECRETS, |json| {
        json["error"].is_string() || json["audit"].is_object()
    })?;
    let writes = store.writes();
    fuzz::note_case(
        route.map(|r| r.path),
        rendered.proof.as_ref(),
        status,
        writes.len(),
    );
    match (route, &rendered.proof) {
        (Some(route), Some(proof)) if accepts(route, proof) => {
            for write in &writes {
                prop_assert_eq!(write.tenant.as_str(), proof.tenant(), "{:?}", writes);
            }
        }
        _ => prop_assert!(
            writes.is_empty() && confluence.calls() == 0,
            "{writes:?} / {} Confluence calls without a proof for {route:?}: {status} {body} for \
             {rendered:?}",
            confluence.calls()
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(fuzz::config(CASES))]

    #[test]
    fn no_event_panics_fails_or_writes_without_the_proof_its_route_takes(
        shot in fuzz::shot(targets())
    ) {
        fuzz::runtime().block_on(check(shot))?;
    }
}

/// A genuine edit gets through the same harness, is made and audited (the property is not
/// vacuous).
#[test]
fn a_genuine_edit_is_made_and_audited_through_the_harness() {
    fuzz::runtime().block_on(async {
        let Fixture { api, store, .. } = fixture().await;
        let shot = fuzz::genuine_connect_shot(
            "POST",
            "/api/pages/42/edits",
            &fuzz::edit_requests()[0],
            fuzz::Qsh::Context,
        );
        let rendered = shot.render(&Keyring::fixtures());
        assert_eq!(
            rendered.proof,
            Some(Proof::ConnectContext(fuzz::LIVE.0.into()))
        );
        let response = api.handle(to_api_request(rendered.lambda_request())).await;
        assert_eq!(response.status(), 200, "{:?}", response.body());
        assert!(store.writes().iter().any(|w| w.op == "append"));
    });
}
