//! Atlassian's personal data reporting API as the simulator plays it: Forge system tokens and
//! Connect JWTs, 204 / 200 with `closed` and `updated`, validation, refusals, injected faults,
//! `Cycle-Period`, and the record of requests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::time::Duration;

use confluence_sim::privacy::{ACTIVE_TEST_ACCOUNT_ID, CLOSED_TEST_ACCOUNT_ID};
use confluence_sim::{
    Endpoint, Fault, ForgeInstall, Installation, ReportAuth, ReportedAccount, Simulator,
};
use connect_auth::{SecretString, mint_app_token};
use serde_json::{Value, json};
use support::{ALL_SCOPES, FakeApp, fake_app, installed};
use url::Url;

const UPDATED_AT: &str = "2024-05-06T07:08:09.123Z";

/// A site with the Connect app and the Forge app installed.
struct Site {
    sim: Simulator,
    connect: Installation,
    forge: ForgeInstall,
    _apps: (FakeApp, FakeApp),
}

async fn site() -> Site {
    let (sim, _demo, app, connect) = installed(ALL_SCOPES).await;
    let remote = fake_app("/remote", &[]).await;
    let forge = sim.forge_install(&remote.base_url()).await.unwrap();
    Site {
        sim,
        connect,
        forge,
        _apps: (app, remote),
    }
}

fn body_for(ids: &[&str]) -> Value {
    json!({"accounts": ids.iter().map(|id| json!({"accountId": id, "updatedAt": UPDATED_AT})).collect::<Vec<_>>()})
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn post(url: &str, authorization: Option<&str>, body: &Value) -> Answer {
    let mut request = reqwest::Client::new().post(url).json(body);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// The Connect app's JWT for `POST url`, as connect-auth mints app tokens (qsh relative to the
/// site's base URL, which is no prefix of `/app/report-accounts/`).
fn connect_jwt(sim: &Simulator, installation: &Installation, url: &str) -> String {
    let token = mint_app_token(
        &installation.app_key,
        &installation.client_key,
        &SecretString::from(installation.shared_secret.clone()),
        "POST",
        &Url::parse(url).unwrap(),
        &Url::parse(&sim.site_base_url()).unwrap(),
        sim.now(),
    )
    .unwrap();
    format!("JWT {token}")
}

fn forge_bearer(sim: &Simulator) -> String {
    format!("Bearer {}", sim.forge_system_token().unwrap())
}

#[tokio::test]
async fn the_url_is_on_the_simulators_origin() {
    let site = site().await;
    assert_eq!(
        site.sim.report_accounts_url(),
        format!("{}/app/report-accounts/", site.sim.origin())
    );
}

#[tokio::test]
async fn a_forge_system_token_reports_active_and_closed_accounts() {
    let Site { sim, forge, .. } = site().await;
    let url = sim.report_accounts_url();
    let auth = forge_bearer(&sim);

    let active = post(&url, Some(&auth), &body_for(&[ACTIVE_TEST_ACCOUNT_ID])).await;
    assert_eq!(active.status, 204);
    assert_eq!(active.body, Value::Null);
    assert!(active.headers.get("cycle-period").is_none());

    let closed = post(
        &url,
        Some(&auth),
        &body_for(&[ACTIVE_TEST_ACCOUNT_ID, CLOSED_TEST_ACCOUNT_ID]),
    )
    .await;
    assert_eq!(closed.status, 200);
    assert_eq!(
        closed.body,
        json!({"accounts": [{"accountId": CLOSED_TEST_ACCOUNT_ID, "status": "closed"}]})
    );

    let requests = sim.report_requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].auth,
        Some(ReportAuth::Forge {
            installation_id: forge.installation.installation_id.clone(),
            app_id: sim.forge_app_id(),
        })
    );
    assert_eq!(requests[0].status, 204);
    assert_eq!(requests[1].status, 200);
    assert_eq!(
        requests[1].accounts,
        vec![
            ReportedAccount {
                account_id: ACTIVE_TEST_ACCOUNT_ID.into(),
                updated_at: UPDATED_AT.into()
            },
            ReportedAccount {
                account_id: CLOSED_TEST_ACCOUNT_ID.into(),
                updated_at: UPDATED_AT.into()
            },
        ]
    );
    assert_eq!(sim.count(&Endpoint::ReportAccounts), 2);
}

#[tokio::test]
async fn a_connect_jwt_reports_with_or_without_the_trailing_slash() {
    let Site { sim, connect, .. } = site().await;
    let with_slash = sim.report_accounts_url();
    let without = with_slash.trim_end_matches('/').to_owned();
    for url in [&with_slash, &without] {
        let active = post(
            url,
            Some(&connect_jwt(&sim, &connect, url)),
            &body_for(&[ACTIVE_TEST_ACCOUNT_ID]),
        )
        .await;
        assert_eq!(active.status, 204, "{url}: {}", active.body);
        let closed = post(
            url,
            Some(&connect_jwt(&sim, &connect, url)),
            &body_for(&[CLOSED_TEST_ACCOUNT_ID]),
        )
        .await;
        assert_eq!(closed.status, 200);
        assert_eq!(
            closed.body["accounts"],
            json!([{"accountId": CLOSED_TEST_ACCOUNT_ID, "status": "closed"}])
        );
    }
    let requests = sim.report_requests();
    assert_eq!(requests.len(), 4);
    for request in &requests {
        assert_eq!(
            request.auth,
            Some(ReportAuth::Connect {
                client_key: connect.client_key.clone(),
                app_key: connect.app_key.clone(),
            })
        );
    }
    assert_eq!(requests[2].path, "/app/report-accounts");
}

#[tokio::test]
async fn a_connect_jwt_may_name_the_client_key_as_issuer() {
    let Site { sim, connect, .. } = site().await;
    let now = sim.now();
    let qsh = connect_auth::RequestParts::new("POST", "/app/report-accounts/", "").qsh();
    let token = connect_auth::sign_hs256(
        &json!({"iss": connect.client_key, "aud": connect.client_key, "iat": now,
                "exp": now + 180, "qsh": qsh}),
        &SecretString::from(connect.shared_secret.clone()),
    )
    .unwrap();
    let answer = post(
        &sim.report_accounts_url(),
        Some(&format!("JWT {token}")),
        &body_for(&[CLOSED_TEST_ACCOUNT_ID]),
    )
    .await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn updated_and_closed_accounts_are_answered_in_the_order_sent() {
    let Site { sim, .. } = site().await;
    sim.mark_account_updated("557058:updated-1");
    sim.close_account("557058:closed-1");
    sim.mark_account_updated("557058:closed-1"); // closed wins
    let answer = post(
        &sim.report_accounts_url(),
        Some(&forge_bearer(&sim)),
        &body_for(&[
            "557058:updated-1",
            ACTIVE_TEST_ACCOUNT_ID,
            "557058:closed-1",
            "557058:updated-1",
        ]),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        json!({"accounts": [
            {"accountId": "557058:updated-1", "status": "updated"},
            {"accountId": "557058:closed-1", "status": "closed"},
        ]})
    );
    sim.clear_account_updated("557058:updated-1");
    let answer = post(
        &sim.report_accounts_url(),
        Some(&forge_bearer(&sim)),
        &body_for(&["557058:updated-1"]),
    )
    .await;
    assert_eq!(answer.status, 204);
}

#[tokio::test]
async fn bad_bodies_are_400_with_atlassians_error_shape() {
    let Site { sim, .. } = site().await;
    let url = sim.report_accounts_url();
    let auth = forge_bearer(&sim);
    let ninety: Vec<String> = (0..90)
        .map(|i| format!("5be24ad8b16532403769{i:04}"))
        .collect();
    let ninety_refs: Vec<&str> = ninety.iter().map(String::as_str).collect();
    assert_eq!(
        post(&url, Some(&auth), &body_for(&ninety_refs))
            .await
            .status,
        204
    );

    let mut ninety_one = ninety_refs.clone();
    ninety_one.push(ACTIVE_TEST_ACCOUNT_ID);
    for body in [
        body_for(&ninety_one),
        body_for(&[]),
        json!({}),
        json!([]),
        json!({"accounts": [{"accountId": ACTIVE_TEST_ACCOUNT_ID}]}),
        json!({"accounts": [{"accountId": ACTIVE_TEST_ACCOUNT_ID, "updatedAt": "yesterday"}]}),
        json!({"accounts": [{"accountId": 5, "updatedAt": UPDATED_AT}]}),
    ] {
        let answer = post(&url, Some(&auth), &body).await;
        assert_eq!(answer.status, 400, "{body}");
        assert!(answer.body["errorType"].is_string(), "{}", answer.body);
        assert!(answer.body["errorMessage"].is_string(), "{}", answer.body);
    }
    let last = sim.report_requests().pop().unwrap();
    assert_eq!(last.status, 400);
    assert!(matches!(last.auth, Some(ReportAuth::Forge { .. })));
}

#[tokio::test]
async fn anything_but_a_system_token_or_an_app_jwt_is_401() {
    let Site { sim, connect, .. } = site().await;
    let url = sim.report_accounts_url();
    let body = body_for(&[ACTIVE_TEST_ACCOUNT_ID]);
    let demo_user = sim.add_user("5b10a2844c20165700ede21g", "Alice Example");
    let user_token = format!("Bearer {}", sim.forge_user_token(&demo_user).unwrap());
    // A JWT minted for another request (its qsh does not match).
    let wrong_qsh = connect_jwt(
        &sim,
        &connect,
        &format!("{}/wiki/rest/api/user/current", sim.origin()),
    );
    // A context JWT.
    let now = sim.now();
    let context = connect_auth::sign_hs256(
        &json!({"iss": connect.app_key, "aud": connect.client_key, "iat": now,
                "exp": now + 180, "qsh": "context-qsh"}),
        &SecretString::from(connect.shared_secret.clone()),
    )
    .unwrap();
    // Signed with another secret.
    let forged = connect_auth::sign_hs256(
        &json!({"iss": connect.app_key, "aud": connect.client_key, "iat": now, "exp": now + 180,
                "qsh": connect_auth::RequestParts::new("POST", "/app/report-accounts/", "").qsh()}),
        &SecretString::from("not the secret".to_owned()),
    )
    .unwrap();
    let expired_system = forge_bearer(&sim);
    sim.forge_expire_system_tokens();
    for auth in [
        None,
        Some("Bearer sim-forge-unknown".to_owned()),
        Some(user_token),
        Some(expired_system),
        Some(wrong_qsh),
        Some(format!("JWT {context}")),
        Some(format!("JWT {forged}")),
        Some("Basic dXNlcjpwYXNz".to_owned()),
    ] {
        let answer = post(&url, auth.as_deref(), &body).await;
        assert_eq!(answer.status, 401, "{auth:?}");
    }
    let requests = sim.report_requests();
    assert_eq!(requests.len(), 8);
    assert!(requests.iter().all(|r| r.status == 401 && r.auth.is_none()));
}

#[tokio::test]
async fn injected_faults_answer_in_atlassians_shape() {
    let Site { sim, .. } = site().await;
    let url = sim.report_accounts_url();
    let body = body_for(&[ACTIVE_TEST_ACCOUNT_ID]);
    sim.fail_next(
        Endpoint::ReportAccounts,
        Fault::TooManyRequests {
            retry_after: Some(42),
        },
        1,
    );
    let limited = post(&url, Some(&forge_bearer(&sim)), &body).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.headers["retry-after"], "42");
    assert!(limited.body["errorType"].is_string());
    assert!(limited.body["errorMessage"].is_string());

    sim.fail_next(Endpoint::ReportAccounts, Fault::ServerError(500), 1);
    let failed = post(&url, Some(&forge_bearer(&sim)), &body).await;
    assert_eq!(failed.status, 500);
    assert!(failed.body["errorType"].is_string());

    sim.fail_next(
        Endpoint::ReportAccounts,
        Fault::ServiceUnavailable { retry_after: None },
        1,
    );
    assert_eq!(
        post(&url, Some(&forge_bearer(&sim)), &body).await.status,
        503
    );

    // A slow answer that the client gives up on.
    sim.fail_next(
        Endpoint::ReportAccounts,
        Fault::Slow(Duration::from_millis(500)),
        1,
    );
    let timed_out = reqwest::Client::new()
        .post(&url)
        .header("authorization", forge_bearer(&sim))
        .timeout(Duration::from_millis(100))
        .json(&body)
        .send()
        .await;
    assert!(timed_out.unwrap_err().is_timeout());

    // Faults aimed elsewhere leave the API alone; the next request is answered.
    sim.fail_next(Endpoint::GetPage, Fault::ServerError(500), 1);
    assert_eq!(
        post(&url, Some(&forge_bearer(&sim)), &body).await.status,
        204
    );

    let requests = sim.report_requests();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(&statuses[..3], &[429, 500, 503]);
    assert!(
        requests[..3]
            .iter()
            .all(|r| r.faulted && r.accounts.len() == 1)
    );
    assert_eq!(requests.last().unwrap().status, 204);
}

#[tokio::test]
async fn every_answer_carries_the_cycle_period_when_set() {
    let Site { sim, .. } = site().await;
    let url = sim.report_accounts_url();
    sim.set_report_cycle_period(Some(86_400));
    let auth = forge_bearer(&sim);
    let active = post(&url, Some(&auth), &body_for(&[ACTIVE_TEST_ACCOUNT_ID])).await;
    assert_eq!(active.status, 204);
    assert_eq!(active.headers["cycle-period"], "86400");
    let closed = post(&url, Some(&auth), &body_for(&[CLOSED_TEST_ACCOUNT_ID])).await;
    assert_eq!(closed.headers["cycle-period"], "86400");
    let refused = post(&url, None, &body_for(&[ACTIVE_TEST_ACCOUNT_ID])).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.headers["cycle-period"], "86400");
    sim.fail_next(
        Endpoint::ReportAccounts,
        Fault::TooManyRequests {
            retry_after: Some(1),
        },
        1,
    );
    let limited = post(&url, Some(&auth), &body_for(&[ACTIVE_TEST_ACCOUNT_ID])).await;
    assert_eq!(limited.headers["cycle-period"], "86400");

    sim.set_report_cycle_period(None);
    let plain = post(&url, Some(&auth), &body_for(&[ACTIVE_TEST_ACCOUNT_ID])).await;
    assert!(plain.headers.get("cycle-period").is_none());
}

#[tokio::test]
async fn only_post_is_answered() {
    let Site { sim, .. } = site().await;
    let (status, body) = sim
        .request("GET", "/app/report-accounts/", None, None)
        .await
        .unwrap();
    assert_eq!(status, 405);
    assert!(body["errorType"].is_string());
    assert_eq!(sim.report_requests().len(), 1);
}
