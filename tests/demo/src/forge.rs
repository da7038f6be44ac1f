//! The Forge story (`understudy-demo --forge`): the same site, reached through the Forge front
//! door. Forge installs the app as a remote, its events arrive with invocation tokens, and where a
//! restriction blocks the Forge app the app acts as the user by offline user impersonation.

use std::fmt::Write as _;

use confluence_sim::{FitSigner, FitSpec, ForgeConfig, SimConfig, Simulator};
use serde_json::json;
use understudy::LocalApp;
use understudy_domain::{ClientKey, SettingsStore, TenantSettings};

use crate::{audit_trail, last_edit, now, rules, settle, simulator_env};

/// Runs the Forge story and returns it.
pub async fn run_forge() -> Result<String, String> {
    let mut out = String::new();
    let sim = Simulator::start(SimConfig {
        webhooks_require_app_view: false,
        forge: ForgeConfig {
            retry_delay: std::time::Duration::from_millis(200),
            ..ForgeConfig::default()
        },
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
    let data = std::env::temp_dir().join(format!(
        "understudy-demo-forge-{}-{}",
        std::process::id(),
        now()
    ));
    let vars = simulator_env(&sim, &rules("impersonate").to_string(), &data);
    let app = LocalApp::start(&move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut line = |text: String| {
        let _ = writeln!(out, "{text}");
    };
    line(format!(
        "A simulated Confluence site with Forge's platform at {}; understudy at {}, as a Forge Remote of the app {}.",
        sim.origin(),
        app.base_url(),
        sim.forge_app_id()
    ));
    line("Rule: stamp every updated page of space DEMO with \"Reviewed by understudy\".".into());
    line(String::new());

    let install = sim
        .forge_install(app.base_url())
        .await
        .map_err(|e| format!("Forge install: {e}"))?;
    line(format!(
        "1. An admin installs the Forge app. Forge posts avi:forge:installed:app with an invocation token (RS256, \
         checked against Forge's key set, addressed to this app) and the app system token; the app records \
         installation {} (answer {}), its API base URL and the token, sealed.",
        install.installation.installation_id,
        install.lifecycle.status.unwrap_or_default()
    ));

    sim.edit_page_as(&demo.bob, &demo.open_page, "<p>Bob's notes.</p>")
        .await
        .map_err(|e| e.to_string())?;
    settle(&sim, &app).await;
    line(format!(
        "2. Bob edits \"Open page\". Forge sends avi:confluence:updated:page; the Forge app may edit the page, \
         so the app does, with its system token through {}: {}.",
        sim.forge_api_base_url(),
        last_edit(&sim, &demo.open_page, &name)
    ));

    sim.edit_page_as(
        &demo.alice,
        &demo.edit_restricted_page,
        "<p>Alice's plan.</p>",
    )
    .await
    .map_err(|e| e.to_string())?;
    settle(&sim, &app).await;
    line(format!(
        "3. Alice edits \"Edit-restricted page\". Confluence refuses the Forge app (403), so the app asks Forge \
         for an offline token for Alice (offlineUserAuthToken, {} exchange) and edits as her: {}.",
        sim.offline_token_exchanges().len(),
        last_edit(&sim, &demo.edit_restricted_page, &name)
    ));

    let tenant_key = ClientKey::parse(install.installation.installation_id.clone())
        .map_err(|e| e.to_string())?;
    app.store()
        .put_settings(
            &tenant_key,
            &TenantSettings {
                document: rules("grant"),
            },
            now(),
        )
        .await
        .map_err(|e| e.to_string())?;
    // As the admin page's save does: the running handlers read the settings again at once.
    app.tenant_cache().forget(&tenant_key).await;
    sim.edit_page_as(
        &demo.alice,
        &demo.view_restricted_page,
        "<p>Alice's secret.</p>",
    )
    .await
    .map_err(|e| e.to_string())?;
    settle(&sim, &app).await;
    let forge_account = install.installation.app_account_id.clone();
    let granted = sim
        .page(&demo.view_restricted_page)
        .is_some_and(|p| p.restrictions.read.users.contains(&forge_account));
    line(format!(
        "4. The site switches to the grant policy. Alice edits \"View-restricted page\", which the Forge app cannot \
         see. Acting as Alice, the app adds the Forge app's own account (not the Connect app user) to the page's \
         restrictions ({}), then edits with its system token: {}.",
        if granted { "done" } else { "not done" },
        last_edit(&sim, &demo.view_restricted_page, &name)
    ));

    let page = demo.edit_restricted_page.clone();
    let (status, body) = sim
        .forge_invoke_remote_on_page(
            &demo.alice,
            &page,
            "POST",
            &format!("/api/pages/{page}/edits"),
            Some(&json!({"edit": [{"append": "<p>Alice's note.</p>"}]})),
        )
        .await
        .map_err(|e| e.to_string())?;
    line(format!(
        "5. Alice appends a note from the page's byline in Confluence (invokeRemote). The call carries her own \
         token, and the edit runs with it only: {status}, \"{}\".",
        body.pointer("/audit/reason")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
    ));

    let forged = sim
        .forge_fit(&FitSpec::new().signed_by(FitSigner::Unsigned))
        .map_err(|e| e.to_string())?;
    let system = sim.forge_system_token().map_err(|e| e.to_string())?;
    let (status, _) = sim
        .forge_post(
            "/forge/events",
            Some(&forged),
            Some(&system),
            None,
            &json!({"eventType": "avi:confluence:updated:page", "content": {"id": page}}),
        )
        .await
        .map_err(|e| e.to_string())?;
    line(format!(
        "6. An event with an unsigned token (alg none) is refused before anything is read or queued: {status}."
    ));
    line("   The app's own edits come back as events marked selfGenerated; they are acknowledged and dropped.".into());
    line(String::new());

    let story = [
        demo.open_page.as_str(),
        demo.edit_restricted_page.as_str(),
        demo.view_restricted_page.as_str(),
    ];
    audit_trail(&mut out, &sim, &app, &tenant_key, &story, &name).await?;
    app.shutdown().await;
    let _ = std::fs::remove_dir_all(&data);
    Ok(out)
}
