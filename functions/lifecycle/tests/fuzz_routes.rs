//! Every lifecycle route fuzzed with generated API Gateway HTTP API (v2) events (issue 18): the
//! descriptor, `installed`, `uninstalled`, `enabled`, `disabled`, and the Forge lifecycle routes
//! (the Forge door open), with every kind of path, header, body and credential
//! (`test_support::fuzz`).
//!
//! The property, for each event, through lambda_http's reading of it and the function's handler:
//! - no panic and no 5xx;
//! - a refusal (4xx) is a JSON object, 401s name the realm, and no answer carries a secret;
//! - nothing is written to the store unless the credential verified for the route the event
//!   reached (a signed install from Atlassian on `installed`/`uninstalled`, a request-bound
//!   Connect token of a live tenant on `enabled`/`disabled`, a Forge invocation on the Forge
//!   routes), and then only under that tenant's key (for installs: the token's issuer).
//!
//! `PROPTEST_CASES=100000 cargo test -p understudy-lifecycle --test fuzz_routes` searches longer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use connect_auth::{FixedClock, InMemoryKeys};
use proptest::prelude::*;
use test_support::fuzz::{self, CountingStore, Keyring, Proof, Shot, Takes, Target};
use test_support::install::install_keys;
use understudy_lifecycle::{Lifecycle, MAX_LIFECYCLE_BODY};
use understudy_web::lambda::to_api_request;
use understudy_web::routes::{self, Function, Route};
use understudy_web::{AppConfig, ForgeFrontDoor};

/// Cases per run: with the other functions' fuzz tests, well under a minute in a debug build.
const CASES: u32 = 500;

type App = Lifecycle<CountingStore, InMemoryKeys, FixedClock>;

async fn app() -> (App, Arc<CountingStore>) {
    let config = AppConfig::from_lookup(fuzz::env).unwrap();
    let store = fuzz::seeded_store().await;
    let forge = ForgeFrontDoor::new(
        config.forge.as_ref().unwrap(),
        fuzz::forge_jwks(),
        store.clone(),
        fuzz::clock(),
    );
    let app = Lifecycle::new(config, store.clone(), install_keys(), fuzz::clock())
        .unwrap()
        .with_forge(Some(forge));
    (app, store)
}

/// The proofs each route takes before it may write.
fn accepts(route: Route, proof: &Proof) -> bool {
    match route {
        routes::INSTALLED | routes::UNINSTALLED => matches!(proof, Proof::Install(_)),
        routes::ENABLED | routes::DISABLED => matches!(proof, Proof::ConnectRequest(_)),
        routes::FORGE_LIFECYCLE | routes::FORGE_SCHEDULED => {
            matches!(proof, Proof::ForgeApp(_) | Proof::ForgeUser(_))
        }
        _ => false,
    }
}

fn targets() -> Vec<Target> {
    let target = |route: Route, takes, templates| Target {
        method: route.method,
        path: route.path,
        takes,
        templates,
        limit: MAX_LIFECYCLE_BODY,
    };
    let targets = vec![
        target(routes::DESCRIPTOR, Takes::Nothing, Vec::new()),
        target(routes::INSTALLED, Takes::Install, fuzz::install_payloads()),
        target(
            routes::UNINSTALLED,
            Takes::Install,
            fuzz::install_payloads(),
        ),
        target(
            routes::ENABLED,
            Takes::RequestToken,
            fuzz::lifecycle_payloads(),
        ),
        target(
            routes::DISABLED,
            Takes::RequestToken,
            fuzz::lifecycle_payloads(),
        ),
        target(
            routes::FORGE_LIFECYCLE,
            Takes::Forge,
            fuzz::forge_lifecycle_events(),
        ),
        target(
            routes::FORGE_SCHEDULED,
            Takes::Forge,
            fuzz::forge_lifecycle_events(),
        ),
    ];
    fuzz::assert_every_route_is_aimed_at(Function::Lifecycle, &targets);
    targets
}

fn shots() -> impl Strategy<Value = Shot> {
    fuzz::shot(targets())
}

/// What no answer may contain.
const SECRETS: [&str; 6] = [
    "secret-a",
    "secret-d",
    "secret-u",
    "secret-new",
    "system-token-1",
    "user-token-1",
];

async fn check(shot: Shot) -> Result<(), TestCaseError> {
    let (app, store) = app().await;
    let rendered = shot.render(&Keyring::fixtures());
    let request = to_api_request(rendered.lambda_request());
    let route = routes::resolve(Function::Lifecycle, &request.method, &request.raw_path).ok();
    let response = app.handle(request).await;
    let (status, body) = fuzz::check_answer(&response, &rendered, &SECRETS, |json| {
        json["error"].is_string()
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
            writes.is_empty(),
            "{writes:?} without a proof for {route:?}: {status} {body} for {rendered:?}"
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(fuzz::config(CASES))]

    #[test]
    fn no_event_panics_fails_or_writes_without_the_proof_its_route_takes(shot in shots()) {
        fuzz::runtime().block_on(check(shot))?;
    }
}

/// A genuine install and a genuine `enabled` get through the same harness (the property is not
/// vacuous: the generator's genuine credentials do verify, and then the function writes).
#[test]
fn genuine_credentials_do_write_through_the_harness() {
    fuzz::runtime().block_on(async {
        let (app, store) = app().await;
        let install = Shot {
            method: "POST".into(),
            path: "/installed".into(),
            query: String::new(),
            content_type: Some("application/json".into()),
            headers: Vec::new(),
            payload: fuzz::Payload::Text {
                text: fuzz::install_payloads()[0].to_string(),
                base64: false,
            },
            credential: fuzz::Credential::Install(fuzz::InstallSpec {
                iss: fuzz::LIVE.0.into(),
                qsh: fuzz::Qsh::ThisRequest,
                flaw: None,
                scheme: fuzz::Scheme::Jwt,
                place: fuzz::Place::Header,
            }),
        };
        let rendered = install.render(&Keyring::fixtures());
        assert_eq!(rendered.proof, Some(Proof::Install(fuzz::LIVE.0.into())));
        let response = app.handle(to_api_request(rendered.lambda_request())).await;
        assert_eq!(response.status(), 204);
        assert!(store.writes().iter().any(|w| w.op == "save_install"));
    });
}

/// lambda_http (1.x) builds the request's URI from `rawQueryString` and panics ("failed to build
/// request") when the query holds a character `http::Uri` refuses: a space, `"`, `<`, `>`, a tab
/// or DEL. On Lambda the runtime catches the panic and reports an invocation error, which API
/// Gateway answers with a 500, before any of the app's code runs. Whether API Gateway ever
/// forwards such a query unencoded is not known here; if it does, the fix is to read the event
/// without lambda_http's conversion (`understudy_web::lambda`). The generated events above keep
/// queries to what lambda_http can read (`fuzz::uri_safe_query`).
#[test]
#[ignore = "lambda_http panics on a raw query it cannot put in a URI (upstream; see the comment)"]
fn an_event_whose_query_has_a_raw_quote_is_read_without_a_panic() {
    let event = test_support::lambda::api_gateway_event("GET", "/", "a=\"b\"", None, "");
    let read = std::panic::catch_unwind(|| lambda_http::request::from_str(&event).is_ok());
    assert!(read.is_ok(), "lambda_http panicked on the event");
}
