//! The demo (`cargo run --release --bin understudy-demo`, or `-- --forge` for the Forge front
//! door): the whole story against the Confluence simulator, told in plain words.
//!
//! A simulated site with three pages (open, edit-restricted, view-restricted), the local app
//! installed into it (a signed install, verified), people editing, and the app keeping up: as
//! itself where it may, as the user where a restriction blocks it, or granting itself access.

use std::fmt::Write as _;
use std::time::Duration;

use confluence_sim::{EditVia, SimConfig, Simulator};
use understudy_domain::{ActedAs, AuditLog, ClientKey, SettingsStore, TenantSettings};

use understudy::LocalApp;

mod forge;
pub use forge::run_forge;

const STAMP: &str = "<p>Reviewed by understudy</p>";

fn rules(policy: &str) -> serde_json::Value {
    serde_json::json!({
        "restricted_pages": policy,
        "rules": [{"name": "review-stamp", "events": ["page_updated"], "spaces": ["DEMO"],
                   "edit": [{"append": STAMP}]}]
    })
}

/// The local app's environment for a run against `sim`: its key server and OAuth server, plain
/// http to its loopback site, `edit_rules`, data under `data_dir`, a free port and quick retries.
pub fn simulator_env(
    sim: &Simulator,
    edit_rules: &str,
    data_dir: &std::path::Path,
) -> Vec<(&'static str, String)> {
    vec![
        ("PORT", "0".to_owned()),
        ("DATA_DIR", data_dir.display().to_string()),
        ("CONNECT_KEYS_URL", sim.keys_url()),
        ("ATLASSIAN_OAUTH_URL", sim.oauth_url()),
        ("ALLOWED_TENANT_HOSTS", "127.0.0.1".to_owned()),
        ("EDIT_RULES", edit_rules.to_owned()),
        ("LOCAL_RETRY_BASE_MS", "50".to_owned()),
        // The Forge front door, open to the simulator's Forge platform (its app, its JWKS, its
        // API gateway on 127.0.0.1).
        ("FORGE_APP_ID", sim.forge_app_id()),
        ("FORGE_JWKS_URL", sim.forge_jwks_url()),
        ("FORGE_API_HOSTS", "127.0.0.1".to_owned()),
        // Atlassian's personal data reporting API, played by the simulator; the hourly run is
        // off, so that a test (or the demo) runs it when it means to.
        ("ATLASSIAN_REPORT_ACCOUNTS_URL", sim.report_accounts_url()),
        ("LOCAL_PRIVACY", "off".to_owned()),
    ]
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The stored spelling of an enum (`as_app`, `impersonate`, `edited`, ...).
fn label<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Waits until the app has nothing queued and no webhook or Forge event is in flight.
async fn settle(sim: &Simulator, app: &LocalApp) {
    let mut seen = usize::MAX;
    for _ in 0..100 {
        app.wait_idle(Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let deliveries = sim.deliveries().len() + sim.forge_calls().len();
        if deliveries == seen && app.queue().pending().await.unwrap_or(1) == 0 {
            return;
        }
        seen = deliveries;
    }
}

/// What the last revision of a page says about who wrote it.
fn last_edit(sim: &Simulator, page: &str, names: &dyn Fn(&str) -> String) -> String {
    let Some(p) = sim.page(page) else {
        return "page not found".into();
    };
    let Some(last) = p.history.last() else {
        return "no history".into();
    };
    let how = match &last.via {
        EditVia::AppUser { .. } => "by the app user".to_owned(),
        EditVia::Impersonation { .. } => format!("by the app acting as {}", names(&last.by)),
        EditVia::Editor => format!("by {} in the editor", names(&last.by)),
        EditVia::Seed => "seeded".to_owned(),
    };
    let stamped = if p.body.ends_with(STAMP) {
        "stamped"
    } else {
        "not stamped"
    };
    format!("version {}, {how}, {stamped}", p.version)
}

/// Runs the demo and returns the story.
pub async fn run() -> Result<String, String> {
    let mut out = String::new();
    let sim = Simulator::start(SimConfig {
        webhooks_require_app_view: false,
        ..SimConfig::default()
    })
    .await
    .map_err(|e| format!("simulator: {e}"))?;
    let demo = sim.seed_demo().map_err(|e| format!("demo site: {e}"))?;
    let people = [
        (demo.alice.clone(), "Alice"),
        (demo.bob.clone(), "Bob"),
        (demo.carol.clone(), "Carol"),
    ];
    let name = move |account: &str| {
        people
            .iter()
            .find(|(id, _)| id == account)
            .map_or_else(|| account.to_owned(), |(_, n)| (*n).to_owned())
    };
    let data =
        std::env::temp_dir().join(format!("understudy-demo-{}-{}", std::process::id(), now()));
    let vars = simulator_env(&sim, &rules("impersonate").to_string(), &data);
    let app = LocalApp::start(&move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    })
    .await
    .map_err(|e| e.to_string())?;
    let line = |out: &mut String, text: String| {
        let _ = writeln!(out, "{text}");
    };
    line(
        &mut out,
        format!(
            "A simulated Confluence site at {}; understudy at {}.",
            sim.site_base_url(),
            app.base_url()
        ),
    );
    line(
        &mut out,
        "Rule: stamp every updated page of space DEMO with \"Reviewed by understudy\".".into(),
    );
    line(&mut out, String::new());

    let installation = sim
        .install(app.base_url())
        .await
        .map_err(|e| format!("install: {e}"))?;
    line(
        &mut out,
        format!(
            "1. Confluence installs the app. The install is signed by the site's key (RS256); the app verifies it, \
         stores the tenant {} and encrypts its shared secret.",
            installation.client_key
        ),
    );

    sim.edit_page_as(&demo.bob, &demo.open_page, "<p>Bob's notes.</p>")
        .await
        .map_err(|e| e.to_string())?;
    settle(&sim, &app).await;
    line(
        &mut out,
        format!(
            "2. Bob edits \"Open page\". The app may edit it, so it does, as itself: {}.",
            last_edit(&sim, &demo.open_page, &name)
        ),
    );

    sim.edit_page_as(
        &demo.alice,
        &demo.edit_restricted_page,
        "<p>Alice's plan.</p>",
    )
    .await
    .map_err(|e| e.to_string())?;
    settle(&sim, &app).await;
    line(
        &mut out,
        format!(
            "3. Alice edits \"Edit-restricted page\" (only Alice may edit it). Confluence refuses the app (403), \
         so the app edits as Alice through user impersonation: {}.",
            last_edit(&sim, &demo.edit_restricted_page, &name)
        ),
    );

    let client_key =
        ClientKey::parse(installation.client_key.clone()).map_err(|e| e.to_string())?;
    app.store()
        .put_settings(
            &client_key,
            &TenantSettings {
                document: rules("grant"),
            },
            now(),
        )
        .await
        .map_err(|e| e.to_string())?;
    // As the admin page's save does: the running handlers read the settings again at once.
    app.tenant_cache().forget(&client_key).await;
    sim.edit_page_as(
        &demo.alice,
        &demo.view_restricted_page,
        "<p>Alice's secret.</p>",
    )
    .await
    .map_err(|e| e.to_string())?;
    settle(&sim, &app).await;
    let restrictions = sim
        .page(&demo.view_restricted_page)
        .map(|p| p.restrictions)
        .ok_or("page vanished")?;
    let app_user = installation.app_account_id.clone();
    let granted = restrictions.read.users.contains(&app_user)
        && restrictions.update.users.contains(&app_user);
    line(
        &mut out,
        format!(
            "4. The site switches to the grant policy. Alice edits \"View-restricted page\", which the app cannot even \
         see (404). Acting as Alice, the app adds itself to the page's existing read and update restrictions \
         ({}), then edits as itself: {}.",
            if granted { "done" } else { "not done" },
            last_edit(&sim, &demo.view_restricted_page, &name)
        ),
    );
    line(
        &mut out,
        "   Each of the app's own edits fires page_updated too; the follow-up job finds the stamp \
         already there and makes no PUT, so nothing loops."
            .into(),
    );
    line(&mut out, String::new());

    let story = [
        demo.open_page.as_str(),
        demo.edit_restricted_page.as_str(),
        demo.view_restricted_page.as_str(),
    ];
    audit_trail(&mut out, &sim, &app, &client_key, &story, &name).await?;
    app.shutdown().await;
    let _ = std::fs::remove_dir_all(&data);
    Ok(out)
}

/// Prints the tenant's audit trail, page by page in the story's order, oldest first.
async fn audit_trail(
    out: &mut String,
    sim: &Simulator,
    app: &LocalApp,
    tenant_key: &ClientKey,
    story: &[&str],
    name: &dyn Fn(&str) -> String,
) -> Result<(), String> {
    let _ = writeln!(out, "The audit trail, page by page, oldest first:");
    let mut records = app
        .store()
        .list_for_tenant(tenant_key, None, 100, now())
        .await
        .map_err(|e| e.to_string())?
        .records;
    // Page by page in the story's order, then by the version each run started from (records of
    // one second share a timestamp).
    records.sort_by_key(|r| {
        let page = story
            .iter()
            .position(|p| *p == r.page_id.as_str())
            .unwrap_or(story.len());
        (page, r.version_before, r.at_ms)
    });
    for r in records {
        let title = sim
            .page(r.page_id.as_str())
            .map(|p| p.title)
            .unwrap_or_default();
        let who = match &r.acted_as {
            ActedAs::App => "the app".to_owned(),
            ActedAs::User(user) => name(user.as_str()),
        };
        let versions = match (r.version_before, r.version_after) {
            (Some(a), Some(b)) => format!("v{a} -> v{b}"),
            (Some(a), None) => format!("v{a}"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:<22} {:<9} as {:<10} {:<12} {:<9} {}",
            title,
            label(&r.outcome),
            who,
            label(&r.strategy),
            versions,
            r.reason
        );
    }
    Ok(())
}
