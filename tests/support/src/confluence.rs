//! The Confluence client and the edit engine as the protocol tests build them: time injected (the
//! test's clock for tokens and JWTs, virtual waits for retries), tokens and audit records in memory.

use std::sync::Arc;
use std::time::Duration;

use connect_auth::Clock;
use understudy_confluence::{ClientConfig, ConfluenceClient, RetryPolicy, VirtualPause};
use understudy_core::{Edit, EditEngine, EditJob, EditMode, EditReport, EngineSettings};
use understudy_domain::{
    AuditLog, AuditRecord, ClientKey, MemoryStore, PageId, Tenant, TokenCache,
};

/// Retries as in production (5 attempts, a 20 s deadline) with shorter backoffs (200 ms doubling
/// to 2 s) and a 5 s attempt timeout.
pub fn test_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(2),
        total_deadline: Duration::from_secs(20),
        attempt_timeout: Duration::from_secs(5),
    }
}

/// A client and an engine over it, sharing a store and a clock.
#[derive(Debug)]
pub struct ClientHarness {
    /// Token cache and audit log.
    pub store: Arc<MemoryStore>,
    /// The retries' waits, recorded instead of slept.
    pub pause: Arc<VirtualPause>,
    /// The client.
    pub client: ConfluenceClient,
    /// The edit engine, acting through the client.
    pub engine: EditEngine,
}

impl ClientHarness {
    /// The client with `config` on `clock`, keeping tokens and audit records in `store`; the
    /// engine re-tries a 409 three times.
    pub fn new(config: ClientConfig, store: Arc<MemoryStore>, clock: Arc<dyn Clock>) -> Self {
        let pause = Arc::new(VirtualPause::new());
        let client = ConfluenceClient::with_time(
            config,
            Arc::clone(&store) as Arc<dyn TokenCache>,
            Arc::clone(&clock),
            Arc::clone(&pause) as _,
        )
        .unwrap_or_else(|e| panic!("client: {e}"));
        let engine = EditEngine::new(
            Arc::new(client.clone()),
            Arc::clone(&store) as Arc<dyn AuditLog>,
            clock,
            EngineSettings {
                max_conflict_retries: 3,
                ..EngineSettings::default()
            },
        );
        Self {
            store,
            pause,
            client,
            engine,
        }
    }

    /// Runs `edit` on `page` in `mode` as job `job-1`.
    pub async fn run(
        &self,
        tenant: &Tenant,
        page: &str,
        edit: &Edit,
        mode: &EditMode,
    ) -> EditReport {
        let page_id = PageId::parse(page).unwrap_or_else(|e| panic!("page id: {e}"));
        self.engine
            .execute(EditJob {
                door: tenant.into(),
                page_id: &page_id,
                edit,
                mode,
                job_id: "job-1",
            })
            .await
    }

    /// The tenant's audit records at `now`, newest first.
    pub async fn audit(&self, client_key: &ClientKey, now: i64) -> Vec<AuditRecord> {
        self.store
            .list_for_tenant(client_key, None, 100, now)
            .await
            .unwrap_or_else(|e| panic!("audit: {e}"))
            .records
    }
}
