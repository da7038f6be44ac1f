//! The admin page as a site admin uses it, in a real headless Chromium: the app's page loaded in
//! place of Confluence's iframe (with a request-bound token, as Confluence builds the URL), its
//! calls signed by the simulator's stand-in for Confluence's `all.js` with the site's secret.
//! A failing step saves a screenshot, the page's HTML and its console into
//! `target/browser-screenshots/`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use confluence_sim::{Demo, SimConfig, Simulator};
use e2e_tests::{REVIEWED, now, rules, start_app_with};
use test_support::browser::{Browser, Client, CmdError, Locator};
use understudy::LocalApp;

const ADMIN_STAMP: &str = "<p>Checked by the site admin</p>";

struct Site {
    sim: Simulator,
    demo: Demo,
    app: LocalApp,
    _data: tempfile::TempDir,
}

impl Site {
    async fn new() -> Self {
        let sim = Simulator::start(SimConfig {
            webhooks_require_app_view: false,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let demo = sim.seed_demo().unwrap();
        let data = tempfile::tempdir().unwrap();
        let all_js = sim.all_js_url();
        let app = start_app_with(
            &sim,
            &rules("skip"),
            data.path(),
            &[("CONNECT_ALL_JS_URL", all_js.as_str())],
        )
        .await;
        sim.install(app.base_url()).await.unwrap();
        sim.set_site_admin(&demo.alice, true);
        Self {
            sim,
            demo,
            app,
            _data: data,
        }
    }

    /// The admin page as Confluence would frame it for `user`.
    fn page_url(&self, user: &str) -> String {
        self.sim
            .iframe_url("understudy", "/ui/admin", user)
            .unwrap()
    }

    async fn settle(&self) {
        for _ in 0..100 {
            self.app.wait_idle(Duration::from_secs(30)).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if self.app.queue().pending().await.unwrap_or(1) == 0 {
                return;
            }
        }
    }

    fn stamps(&self, page: &str, stamp: &str) -> usize {
        self.sim
            .page(page)
            .map_or(0, |p| p.body.matches(stamp).count())
    }
}

/// Waits until `script` (a JS expression) is true in the page, or fails after 10 s.
async fn until(client: &Client, what: &str, script: &str) -> Result<(), String> {
    for _ in 0..100 {
        let value = client
            .execute(&format!("return Boolean({script});"), vec![])
            .await
            .map_err(|e| e.to_string())?;
        if value.as_bool() == Some(true) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("timed out waiting for {what}"))
}

async fn text(client: &Client, css: &str) -> Result<String, CmdError> {
    client.find(Locator::Css(css)).await?.text().await
}

async fn type_into(client: &Client, css: &str, value: &str) -> Result<(), CmdError> {
    let field = client.find(Locator::Css(css)).await?;
    field.clear().await?;
    field.send_keys(value).await
}

fn err(e: CmdError) -> String {
    e.to_string()
}

#[tokio::test]
async fn a_site_admin_sets_rules_retries_a_blocked_page_and_downloads_the_trail() {
    let site = Site::new().await;
    let restricted = site.demo.edit_restricted_page.clone();
    let open = site.demo.open_page.clone();
    // Under the deployment's `skip`, Alice's edit of the edit-restricted page is blocked.
    site.sim
        .edit_page_as(&site.demo.alice, &restricted, "<p>Alice</p>")
        .await
        .unwrap();
    site.settle().await;
    assert_eq!(site.stamps(&restricted, REVIEWED), 0);

    let browser = Browser::start().await.unwrap();
    let url = site.page_url(&site.demo.alice);
    let sim = site.sim.clone();
    let bob = site.demo.bob.clone();
    let settle = || site.settle();
    browser
        .run("admin_page_as_a_site_admin", |client| async move {
            client.goto(&url).await.map_err(err)?;
            until(&client, "the admin sections", "!document.getElementById('admin').hidden").await?;
            until(
                &client,
                "the blocked page listed",
                &format!("document.getElementById('blocked').textContent.includes('{restricted}')"),
            )
            .await?;
            let reason = text(&client, "#blocked").await.map_err(err)?;
            if !reason.contains("an admin can") {
                return Err(format!("the blocked page says no remedy: {reason}"));
            }
            // The README's picture of the page: `UNDERSTUDY_README_SCREENSHOT=docs/admin-page.png`
            // (relative to tests/e2e) regenerates it.
            if let Ok(path) = std::env::var("UNDERSTUDY_README_SCREENSHOT") {
                let png = client.screenshot().await.map_err(err)?;
                std::fs::write(&path, png).map_err(|e| format!("{path}: {e}"))?;
            }

            // A rule with an unknown field: refused, and the message names rule and field.
            let bad = r#"{"rules": [{"name": "stamp", "events": ["page_updated"], "edit": [], "colour": "red"}]}"#;
            type_into(&client, "#rules", bad).await.map_err(err)?;
            client.find(Locator::Css("#save")).await.map_err(err)?.click().await.map_err(err)?;
            until(&client, "the refusal", "!document.getElementById('settings-error').hidden").await?;
            let said = text(&client, "#settings-error").await.map_err(err)?;
            if !(said.contains("rule 1 (`stamp`)") && said.contains("colour")) {
                return Err(format!("the refusal does not point at the rule and field: {said}"));
            }

            // A good rule and the impersonate policy, saved.
            let good = format!(
                r#"{{"rules": [{{"name": "stamp", "events": ["page_updated"], "spaces": ["DEMO"], "edit": [{{"append": "{ADMIN_STAMP}"}}]}}]}}"#
            );
            type_into(&client, "#rules", &good).await.map_err(err)?;
            client
                .find(Locator::Css("#policy"))
                .await
                .map_err(err)?
                .select_by_value("impersonate")
                .await
                .map_err(err)?;
            client.find(Locator::Css("#save")).await.map_err(err)?.click().await.map_err(err)?;
            until(&client, "the save", "document.getElementById('status').textContent.startsWith('Saved')").await?;

            // The next webhook follows the new rule.
            sim.edit_page_as(&bob, &open, "<p>Bob</p>").await.map_err(|e| e.to_string())?;
            settle().await;
            if !sim.page(&open).is_some_and(|p| p.body.contains(ADMIN_STAMP)) {
                return Err("the next event did not follow the saved rule".into());
            }

            // Retry the blocked page: it runs again under the new policy.
            client
                .find(Locator::Css(&format!("button[aria-label='Retry page {restricted}']")))
                .await
                .map_err(err)?
                .click()
                .await
                .map_err(err)?;
            until(&client, "the retry", "document.getElementById('status').textContent.includes('queued again')").await?;
            settle().await;
            if !sim.page(&restricted).is_some_and(|p| p.body.contains(ADMIN_STAMP)) {
                return Err("the retried page was not edited".into());
            }

            // The audit trail, filtered, then downloaded.
            client
                .find(Locator::Css("#filter-outcome"))
                .await
                .map_err(err)?
                .select_by_value("edited")
                .await
                .map_err(err)?;
            client.find(Locator::Css("#apply-filters")).await.map_err(err)?.click().await.map_err(err)?;
            until(
                &client,
                "the filtered trail",
                "[...document.querySelectorAll('#audit tr')].length > 0 && [...document.querySelectorAll('#audit tr')].every(r => r.children[2].textContent === 'edited')",
            )
            .await?;
            client.find(Locator::Css("#download-csv")).await.map_err(err)?.click().await.map_err(err)?;
            until(&client, "the download", "/Downloaded the audit trail: [1-9]/.test(document.getElementById('status').textContent)").await?;
            Ok::<_, String>(())
        })
        .await;
    assert!(now() > 0);
}

#[tokio::test]
async fn a_user_who_is_not_a_site_admin_sees_the_refusal() {
    let site = Site::new().await;
    let browser = Browser::start().await.unwrap();
    let url = site.page_url(&site.demo.bob);
    browser
        .run("admin_page_as_a_user", |client| async move {
            client.goto(&url).await.map_err(err)?;
            until(
                &client,
                "the refusal",
                "!document.getElementById('refusal').hidden",
            )
            .await?;
            let said = text(&client, "#refusal").await.map_err(err)?;
            if !said.contains("Only site admins") {
                return Err(format!("unexpected refusal: {said}"));
            }
            let hidden = client
                .execute("return document.getElementById('admin').hidden;", vec![])
                .await
                .map_err(err)?;
            if hidden.as_bool() != Some(true) {
                return Err("the admin sections are shown to a non-admin".into());
            }
            Ok::<_, String>(())
        })
        .await;
}
