//! Fair shares of the workers: one site's flood of edits waits its turn (a few jobs a minute, the
//! rest deferred, none failed) while another site's edit goes through at once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use confluence_sim::{SimConfig, Simulator};
use e2e_tests::{REVIEWED, now, rules, start_app_with};
use understudy_domain::{AuditLog, ClientKey, EditOutcome};

/// Jobs one site may start a minute in this test.
const SHARE: usize = 3;

async fn site() -> (Simulator, confluence_sim::Demo) {
    let sim = Simulator::start(SimConfig {
        webhooks_require_app_view: false,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let demo = sim.seed_demo().unwrap();
    (sim, demo)
}

#[tokio::test]
async fn a_flooding_site_waits_for_its_share_while_another_sites_edit_goes_through() {
    let (flood, flood_demo) = site().await;
    let (quiet, quiet_demo) = site().await;
    let data = tempfile::tempdir().unwrap();
    let share = SHARE.to_string();
    let app = start_app_with(
        &flood,
        &rules("impersonate"),
        data.path(),
        &[("EDIT_TENANT_JOBS_PER_MINUTE", share.as_str())],
    )
    .await;
    flood.install(app.base_url()).await.unwrap();
    quiet.install(app.base_url()).await.unwrap();

    // The flood: twelve pages edited at once, each an event the rules turn into a job.
    let mut pages = Vec::new();
    for n in 0..12 {
        let page = flood
            .create_page(
                &flood_demo.space,
                &format!("Import {n}"),
                "<p>imported</p>",
                &flood_demo.bob,
            )
            .unwrap();
        pages.push(page);
    }
    for page in &pages {
        flood
            .edit_page_as(&flood_demo.bob, page, "<p>imported, edited</p>")
            .await
            .unwrap();
    }
    // The other site's one edit, after the flood is queued.
    let started = Instant::now();
    quiet
        .edit_page_as(&quiet_demo.bob, &quiet_demo.open_page, "<p>mine</p>")
        .await
        .unwrap();
    let stamped = |sim: &Simulator, page: &str| sim.page(page).unwrap().body.ends_with(REVIEWED);
    while !stamped(&quiet, &quiet_demo.open_page) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the quiet site's edit waited behind the flood"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The flood got its share (two shares at most, if a minute turned meanwhile); the rest wait
    // in the queue for the next minutes, none failed, none dead-lettered.
    let done = pages.iter().filter(|p| stamped(&flood, p)).count();
    assert!(
        (1..=2 * SHARE).contains(&done),
        "{done} of the flood edited"
    );
    let waiting = app.queue().pending().await.unwrap();
    assert!(
        waiting >= (pages.len() - 2 * SHARE) as u64,
        "{waiting} jobs still waiting"
    );
    assert!(app.queue().dead_letters().await.unwrap().is_empty());
    let flood_key = ClientKey::parse(flood.client_key()).unwrap();
    let trail = app
        .store()
        .list_for_tenant(&flood_key, None, 100, now())
        .await
        .unwrap();
    assert!(
        trail
            .records
            .iter()
            .all(|r| r.outcome != EditOutcome::Failed),
        "a wait for the share is no failure"
    );
    app.shutdown().await;
}
