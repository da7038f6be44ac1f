//! The client reporting accounts to the simulator's personal data reporting API, through both
//! doors: a Connect app's JWT, a Forge installation's system token, closed and updated answers,
//! `Cycle-Period`, and a 429 waited out as told.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use confluence_sim::privacy::{ACTIVE_TEST_ACCOUNT_ID, CLOSED_TEST_ACCOUNT_ID};
use confluence_sim::{Endpoint, Fault, ReportAuth};
use connect_auth::SecretString;
use support::{ALL_SCOPES, fake_app, installed};
use test_support::sim::{sim_client_config, sim_tenant};
use understudy_confluence::{ConfluenceClient, VirtualPause};
use understudy_core::{AccountReport, AccountReporting, AccountStatus, Door, ReportError};
use understudy_domain::{AccountId, ForgeInstallation, InstallationId, MemoryStore, SystemToken};

fn reports(ids: &[&str]) -> Vec<AccountReport> {
    ids.iter()
        .map(|id| AccountReport {
            account: AccountId::parse(*id).unwrap(),
            updated_at: 1_700_000_000,
        })
        .collect()
}

fn client(sim: &confluence_sim::Simulator) -> (ConfluenceClient, Arc<VirtualPause>) {
    let mut config = sim_client_config(sim);
    config.report_accounts_url = Some(sim.report_accounts_url().parse().unwrap());
    let pause = Arc::new(VirtualPause::new());
    let client = ConfluenceClient::with_time(
        config,
        Arc::new(MemoryStore::new()),
        Arc::new(connect_auth::SystemClock),
        pause.clone(),
    )
    .unwrap();
    (client, pause)
}

#[tokio::test]
async fn a_connect_app_reports_with_its_jwt_and_learns_which_accounts_closed() {
    let (sim, _demo, _app, installation) = installed(ALL_SCOPES).await;
    sim.set_report_cycle_period(Some(86_400));
    sim.mark_account_updated("5b10ac8d82e05b22cc7d4ef5");
    let (client, _) = client(&sim);
    let tenant = sim_tenant(&sim, &installation);
    let answer = client
        .report_accounts(
            Door::Connect(&tenant),
            &reports(&[
                ACTIVE_TEST_ACCOUNT_ID,
                CLOSED_TEST_ACCOUNT_ID,
                "5b10ac8d82e05b22cc7d4ef5",
            ]),
        )
        .await
        .unwrap();
    assert_eq!(
        answer.statuses,
        vec![
            (
                AccountId::parse(CLOSED_TEST_ACCOUNT_ID).unwrap(),
                AccountStatus::Closed
            ),
            (
                AccountId::parse("5b10ac8d82e05b22cc7d4ef5").unwrap(),
                AccountStatus::Updated
            ),
        ]
    );
    assert_eq!(answer.cycle_period, Some(86_400));
    let sent = sim.report_requests();
    assert_eq!(sent.len(), 1);
    assert!(
        matches!(sent[0].auth, Some(ReportAuth::Connect { .. })),
        "{:?}",
        sent[0].auth
    );
    assert_eq!(sent[0].accounts[0].updated_at, "2023-11-14T22:13:20Z");

    // Nobody named: 204, nothing to do.
    let answer = client
        .report_accounts(Door::Connect(&tenant), &reports(&[ACTIVE_TEST_ACCOUNT_ID]))
        .await
        .unwrap();
    assert!(answer.statuses.is_empty());
}

#[tokio::test]
async fn a_forge_installation_reports_with_its_system_token_and_429_waits_as_told() {
    let (sim, _demo, _app, _installation) = installed(ALL_SCOPES).await;
    let remote = fake_app("/remote", &[]).await;
    let forge = sim.forge_install(&remote.base_url()).await.unwrap();
    let id = InstallationId::parse(forge.installation.installation_id.clone()).unwrap();
    let installation = ForgeInstallation {
        tenant_key: id.own_tenant_key(),
        id,
        app_id: forge.installation.app_id.clone(),
        cloud_id: forge.installation.cloud_id.clone(),
        api_base_url: forge.installation.api_base_url.clone(),
        system_token: SystemToken::received(
            SecretString::from(forge.system_token.clone()),
            connect_auth::Clock::now_unix(&connect_auth::SystemClock),
        ),
        created_at: 0,
        updated_at: 0,
    };
    let (client, pause) = client(&sim);
    sim.fail_next(
        Endpoint::ReportAccounts,
        Fault::TooManyRequests {
            retry_after: Some(3),
        },
        1,
    );
    let answer = client
        .report_accounts(
            Door::forge(&installation),
            &reports(&[CLOSED_TEST_ACCOUNT_ID]),
        )
        .await
        .unwrap();
    assert_eq!(answer.statuses.len(), 1);
    assert_eq!(pause.waits(), vec![Duration::from_secs(3)]);
    let sent = sim.report_requests();
    assert!(matches!(
        sent.last().unwrap().auth,
        Some(ReportAuth::Forge { .. })
    ));

    // A 500 that does not clear is an outage: the rest waits for the next run.
    sim.fail_next(Endpoint::ReportAccounts, Fault::ServerError(500), 10);
    let error = client
        .report_accounts(
            Door::forge(&installation),
            &reports(&[ACTIVE_TEST_ACCOUNT_ID]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, ReportError::Unavailable { .. }),
        "{error:?}"
    );
}
