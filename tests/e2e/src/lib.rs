#![allow(clippy::panic)] // test support: a failure here is a failing test

//! A world for end-to-end tests: a Confluence simulator with the demo site, and the local app
//! (the same handlers as on Lambda) installed into it.

use std::time::Duration;

use confluence_sim::{Demo, SimConfig, Simulator};
use serde_json::Value;
use understudy::LocalApp;
use understudy_domain::{AuditLog, AuditRecord, ClientKey, PageId, TenantStore};

/// The fragment the test rules append.
pub const REVIEWED: &str = "<p>Reviewed by understudy</p>";

/// Rules that append [`REVIEWED`] to every updated page of the demo space, with `policy` for
/// restricted pages.
pub fn rules(policy: &str) -> String {
    serde_json::json!({
        "restricted_pages": policy,
        "rules": [{"name": "review-stamp", "events": ["page_updated"], "spaces": ["DEMO"],
                   "edit": [{"append": REVIEWED}]}]
    })
    .to_string()
}

/// A running simulator and app.
pub struct World {
    /// The Confluence site.
    pub sim: Simulator,
    /// Its seeded users and pages.
    pub demo: Demo,
    /// The app, installed into the site.
    pub app: LocalApp,
    _data: tempfile::TempDir,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

/// Starts a local app pointed at `sim` with `edit_rules`.
pub async fn start_app(sim: &Simulator, edit_rules: &str, data: &std::path::Path) -> LocalApp {
    start_app_with(sim, edit_rules, data, &[]).await
}

/// As [`start_app`], with more environment variables (these win).
pub async fn start_app_with(
    sim: &Simulator,
    edit_rules: &str,
    data: &std::path::Path,
    more: &[(&str, &str)],
) -> LocalApp {
    let mut vars = understudy_demo::simulator_env(sim, edit_rules, data);
    vars.extend(more.iter().map(|(k, v)| (*k, (*v).to_owned())));
    LocalApp::start(&move |name| {
        vars.iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    })
    .await
    .unwrap_or_else(|e| panic!("the local app did not start: {e}"))
}

impl World {
    /// A simulator with the demo site (webhooks also for pages the app cannot view, so that the
    /// view-restricted case can be driven by an edit), and the app installed with `edit_rules`.
    pub async fn new(edit_rules: &str) -> Self {
        let config = SimConfig {
            webhooks_require_app_view: false,
            ..SimConfig::default()
        };
        Self::with_config(config, edit_rules).await
    }

    /// As [`World::new`] with more environment variables for the app (these win).
    pub async fn with_env(edit_rules: &str, more: &[(&str, &str)]) -> Self {
        let config = SimConfig {
            webhooks_require_app_view: false,
            ..SimConfig::default()
        };
        Self::with_config_and_env(config, edit_rules, more).await
    }

    /// As [`World::new`] with a simulator configuration of one's own.
    pub async fn with_config(config: SimConfig, edit_rules: &str) -> Self {
        Self::with_config_and_env(config, edit_rules, &[]).await
    }

    async fn with_config_and_env(
        config: SimConfig,
        edit_rules: &str,
        more: &[(&str, &str)],
    ) -> Self {
        let sim = Simulator::start(config)
            .await
            .unwrap_or_else(|e| panic!("simulator: {e}"));
        let demo = sim.seed_demo().unwrap_or_else(|e| panic!("demo site: {e}"));
        let data = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let app = start_app_with(&sim, edit_rules, data.path(), more).await;
        sim.install(app.base_url())
            .await
            .unwrap_or_else(|e| panic!("install: {e}"));
        Self {
            sim,
            demo,
            app,
            _data: data,
        }
    }

    /// The tenant's clientKey as the app knows it.
    pub fn client_key(&self) -> ClientKey {
        ClientKey::parse(self.sim.client_key()).unwrap_or_else(|e| panic!("clientKey: {e}"))
    }

    /// Waits until the app has no job queued or running and no webhook is in flight (the app's own
    /// edits fire webhooks too, which queue follow-up jobs).
    pub async fn settle(&self) {
        let mut seen = usize::MAX;
        for _ in 0..200 {
            assert!(
                self.app.wait_idle(Duration::from_secs(30)).await,
                "the app's queue did not drain"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            let deliveries = self.sim.deliveries().len();
            if deliveries == seen && self.app.queue().pending().await.unwrap_or(1) == 0 {
                return;
            }
            seen = deliveries;
        }
        panic!("the world did not settle");
    }

    /// The page's audit trail as the app recorded it, newest first.
    pub async fn audit(&self, page: &str) -> Vec<AuditRecord> {
        let page = PageId::parse(page).unwrap_or_else(|e| panic!("page id: {e}"));
        self.app
            .store()
            .list_for_page(&self.client_key(), &page, None, 100, now())
            .await
            .unwrap_or_else(|e| panic!("audit: {e}"))
            .records
    }

    /// A context token (`AP.context.getToken()`) of `user` on this site, as Confluence signs it.
    pub fn context_token(&self, user: &str) -> String {
        let secret = self
            .sim
            .installation("understudy")
            .unwrap_or_else(|| panic!("the app is not installed"))
            .shared_secret;
        let now = now();
        let claims = serde_json::json!({"iss": self.sim.client_key(), "sub": user, "iat": now,
                                        "exp": now + 180, "qsh": "context-qsh", "context": {}});
        connect_auth::sign_hs256(&claims, &connect_auth::SecretString::from(secret))
            .unwrap_or_else(|e| panic!("signing: {e}"))
    }

    /// How many times `fragment` stands in the page's body now.
    pub fn count_in_page(&self, page: &str, fragment: &str) -> usize {
        self.sim
            .page(page)
            .map_or(0, |p| p.body.matches(fragment).count())
    }

    /// Makes the stored tenant an install from before the descriptor asked for `ACT_AS_USER`: one
    /// without an oauthClientId.
    pub async fn drop_act_as_user(&self) {
        let store = self.app.store();
        let mut tenant = store
            .get_tenant(&self.client_key(), now())
            .await
            .unwrap_or_else(|e| panic!("tenant: {e}"))
            .unwrap_or_else(|| panic!("the tenant is not stored"));
        tenant.oauth_client_id = None;
        store
            .save_install(&tenant, now())
            .await
            .unwrap_or_else(|e| panic!("saving the tenant: {e}"));
    }

    /// `POST /api/pages/{page}/edits` with `body`, as `user` from the page's panel.
    pub async fn post_edit(&self, user: &str, page: &str, body: &Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("http://{}/api/pages/{page}/edits", self.app.addr()))
            .header("authorization", format!("JWT {}", self.context_token(user)))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("edit request: {e}"))
    }

    /// `GET /api/pages/{page}/audit{query}`, as `user` from the page's panel.
    pub async fn get_audit(&self, user: &str, page: &str, query: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!(
                "http://{}/api/pages/{page}/audit{query}",
                self.app.addr()
            ))
            .header("authorization", format!("JWT {}", self.context_token(user)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("audit request: {e}"))
    }
}

/// Now, in unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
