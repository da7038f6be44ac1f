//! The local app: every function's routes in one process on 127.0.0.1, with the embedded store and
//! the local queue and worker, so it needs nothing from AWS.
//!
//! The routes are served by the very handlers the Lambda functions run (lifecycle, webhooks, edit
//! API); only the transport differs (hyper here, API Gateway there), and the edit worker is fed by
//! the local queue instead of SQS.

pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use connect_auth::{CachingKeyProvider, HttpKeyProvider, SystemClock};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use understudy_admin::AdminApi;
use understudy_confluence::ConfluenceClient;
use understudy_confluence::{ClientConfig, ENV_ALLOW_HTTP_LOOPBACK};
use understudy_edits::api::EditApi;
use understudy_edits::worker::{
    DEFAULT_MAX_RECEIVES, DEFAULT_TENANT_JOBS_PER_MINUTE, EditWorker, JobOutcome,
};
use understudy_lifecycle::Lifecycle;
use understudy_privacy::{
    DEFAULT_MAX_ACCOUNTS_PER_TENANT, PrivacyRun, PrivacyRunner, deadline_in, report_settings,
};
use understudy_queue::LocalQueue;
use understudy_store::EmbeddedStore;
use understudy_web::routes::{self, Function};
use understudy_web::time::timeout_unless_ready;
use understudy_web::{ApiError, ApiRequest, AppConfig, ForgeFrontDoor, TenantCache};
use understudy_webhooks::{Rules, Webhooks};

/// Bodies above this are refused before any handler runs; every route's own limit is lower.
const MAX_BODY: usize = 1024 * 1024;
/// How long a leased job stays invisible: far longer than one edit may take.
const LEASE_MS: i64 = 5 * 60 * 1000;

/// How many threads the app's async runtime gets on a machine with `cores` cores, unless
/// `TOKIO_WORKER_THREADS` says: one fewer than the cores, at least one.
///
/// The runtime's threads answer HTTP and run the edit worker's requests; beside them the queue's
/// writer and applier threads make every accepted event durable, and the app shares the machine
/// with whatever brings it its requests (the tunnel agent, a load generator). A webhook's answer
/// takes a runtime thread about 10 µs, so one thread answers tens of thousands a second, and a
/// thread per core only adds hand-offs between cores: on the project's two-core machine, with wrk
/// on the same cores, one runtime thread answers the acknowledgement path at 92 000 requests a
/// second with a p99 of 1.0 ms and 10.8 µs of CPU each; two answer 78 000, p99 3.2–4.1 ms, 13.5
/// µs each (tests/load/RESULTS.md, issue 19).
pub fn runtime_worker_threads(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

/// Why the local app could not start; the message names what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

fn start_error(what: &str) -> impl Fn(&dyn std::fmt::Display) -> StartError + '_ {
    move |e| StartError(format!("{what}: {e}"))
}

/// Settings of the local app, from the environment (README, "Configuration").
#[derive(Debug, Clone)]
pub struct LocalSettings {
    /// `PORT` (default 3000; 0 picks a free port).
    pub port: u16,
    /// `DATA_DIR` (default `./.data`): the embedded store, its key file and the queue.
    pub data_dir: PathBuf,
    /// `LOCAL_RETRY_BASE_MS` (default 1000): the first retry delay of a job that failed for a
    /// passing reason, doubled on each delivery up to a minute (SQS's visibility timeout on AWS).
    pub retry_base: Duration,
    /// `EDIT_MAX_RECEIVES` (default 5): failed attempts before a job is dead-lettered.
    pub max_receives: u32,
    /// `EDIT_TENANT_JOBS_PER_MINUTE` (default 120; 0: no limit): jobs one tenant may start a
    /// minute; the rest wait for the next minute.
    pub tenant_jobs_per_minute: u32,
    /// `LOCAL_WORKER` (`on`, the default, or `off`). Off, the app accepts and queues events but
    /// edits nothing: the jobs wait in the queue for a later run with the worker on. For looking
    /// at what the rules queue before any page is touched, and for timing the webhook path alone.
    pub worker: bool,
    /// `LOCAL_EDIT_BUDGET_MS` (default 15000, the Lambda function's): how long one edit through
    /// the edit API may spend on Confluence in all.
    pub edit_budget: Duration,
    /// `LOCAL_PRIVACY` (`on`, the default, or `off`): the hourly personal data run
    /// ([`understudy_privacy`]), first a minute after start. Off, nothing is reported to
    /// Atlassian; `understudy privacy-report --once` runs it by hand.
    pub privacy: bool,
    /// `LOCAL_HEADER_TIMEOUT_MS`, `LOCAL_BODY_TIMEOUT_MS`, `LOCAL_MAX_CONNECTIONS`: the limits that
    /// keep slow or silent clients from holding the server open ([`server`]).
    pub server: server::ServerLimits,
}

impl LocalSettings {
    /// Reads the settings through `lookup`.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, StartError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let number = |name: &str, default: u64| -> Result<u64, StartError> {
            get(name).map_or(Ok(default), |v| {
                v.parse().map_err(|_| {
                    StartError(format!(
                        "environment variable {name} must be a whole number"
                    ))
                })
            })
        };
        let switch = |name: &str| match get(name).as_deref() {
            None | Some("on") => Ok(true),
            Some("off") => Ok(false),
            Some(_) => Err(StartError(format!(
                "environment variable {name} must be on or off"
            ))),
        };
        Ok(Self {
            port: u16::try_from(number("PORT", 3000)?).map_err(|_| {
                StartError("environment variable PORT must be at most 65535".into())
            })?,
            data_dir: get("DATA_DIR").map_or_else(|| PathBuf::from(".data"), PathBuf::from),
            retry_base: Duration::from_millis(number("LOCAL_RETRY_BASE_MS", 1000)?),
            max_receives: u32::try_from(number(
                "EDIT_MAX_RECEIVES",
                u64::from(DEFAULT_MAX_RECEIVES),
            )?)
            .unwrap_or(DEFAULT_MAX_RECEIVES),
            tenant_jobs_per_minute: u32::try_from(number(
                "EDIT_TENANT_JOBS_PER_MINUTE",
                u64::from(DEFAULT_TENANT_JOBS_PER_MINUTE),
            )?)
            .unwrap_or(u32::MAX),
            edit_budget: Duration::from_millis(number(
                "LOCAL_EDIT_BUDGET_MS",
                u64::try_from(understudy_edits::api::DEFAULT_EDIT_BUDGET.as_millis())
                    .unwrap_or(15_000),
            )?),
            worker: switch("LOCAL_WORKER")?,
            privacy: switch("LOCAL_PRIVACY")?,
            server: server::ServerLimits::from_lookup(lookup)?,
        })
    }
}

type LocalLifecycle = Lifecycle<EmbeddedStore, CachingKeyProvider<HttpKeyProvider>, SystemClock>;
type LocalWebhooks = Webhooks<EmbeddedStore, LocalQueue, SystemClock>;
type LocalApi = EditApi<EmbeddedStore, SystemClock>;
type LocalAdmin = AdminApi<EmbeddedStore, SystemClock>;

struct Services {
    base_path: String,
    app_key: String,
    /// The whole body must arrive within this, from the end of the headers.
    body_read_timeout: Duration,
    lifecycle: LocalLifecycle,
    webhooks: LocalWebhooks,
    api: LocalApi,
    admin: LocalAdmin,
}

/// A running local app.
pub struct LocalApp {
    addr: SocketAddr,
    base_url: String,
    store: Arc<EmbeddedStore>,
    tenants: Arc<TenantCache>,
    queue: LocalQueue,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    /// `None` when `LOCAL_WORKER=off`.
    worker: Option<JoinHandle<()>>,
    /// The personal data run, by hand ([`Self::privacy_report`]) and on the hourly timer.
    privacy: Arc<LocalPrivacy>,
    /// `None` when `LOCAL_PRIVACY=off`.
    privacy_timer: Option<JoinHandle<()>>,
}

/// The personal data run on the embedded store.
pub type LocalPrivacy = PrivacyRunner<EmbeddedStore>;

/// How long a local personal data run may take (the Lambda function's timeout on AWS).
const PRIVACY_RUN_BUDGET: Duration = Duration::from_secs(10 * 60);

impl std::fmt::Debug for LocalApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalApp")
            .field("addr", &self.addr)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl LocalApp {
    /// Starts the app from the process environment.
    pub async fn start_from_env() -> Result<Self, StartError> {
        Self::start(&|name| std::env::var(name).ok()).await
    }

    /// Starts the app with variables read through `lookup`: binds 127.0.0.1, opens the store and
    /// the queue under the data directory, and starts the server and the worker.
    pub async fn start(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, StartError> {
        let settings = LocalSettings::from_lookup(lookup)?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", settings.port))
            .await
            .map_err(|e| {
                start_error("cannot listen on 127.0.0.1")(&format!("port {}: {e}", settings.port))
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| start_error("listener")(&e))?;
        let app_config = app_config(lookup, addr.port())?;
        let rules = Rules::from_env_value(lookup("EDIT_RULES").as_deref())
            .map_err(|e| StartError(e.to_string()))?;
        let client_config = client_config(lookup, &app_config)?;

        let store = Arc::new(
            EmbeddedStore::open_with_local_key(&settings.data_dir)
                .map_err(|e| start_error("cannot open the store in DATA_DIR")(&e))?,
        );
        let queue = LocalQueue::open(&settings.data_dir)
            .map_err(|e| start_error("cannot open the queue in DATA_DIR")(&e))?;
        // One HTTP client (one load of the system's root certificates) for the install keys and
        // every Confluence client of the process.
        let http = understudy_confluence::http_client(&client_config)
            .map_err(|e| start_error("HTTP client")(&e))?;
        let keys = match &app_config.connect_keys_url {
            Some(url) => HttpKeyProvider::configured(http, url),
            None => HttpKeyProvider::atlassian(http),
        };
        let keys = CachingKeyProvider::new(keys, CachingKeyProvider::<()>::DEFAULT_CAPACITY);
        let forge = || {
            ForgeFrontDoor::from_config(&app_config, store.clone(), SystemClock)
                .map_err(|e| StartError(e.to_string()))
        };
        // One process, one cache of verified tenants: the lifecycle and admin handlers' writes
        // drop what the webhook and API handlers hold, at once.
        let tenants = Arc::new(TenantCache::default());
        let lifecycle = Lifecycle::new(app_config.clone(), store.clone(), keys, SystemClock)
            .map_err(|e| start_error("descriptor")(&e))?
            .with_tenant_cache(tenants.clone())
            .with_forge(forge()?);
        let webhooks = Webhooks::new(
            app_config.clone(),
            rules,
            store.clone(),
            Arc::new(queue.clone()),
            SystemClock,
        )
        .with_tenant_cache(tenants.clone())
        .with_forge(forge()?);
        let api_engine =
            understudy_edits::engine(client_config.clone(), store.clone(), &app_config.app_key)
                .map_err(|e| start_error("Confluence client")(&e))?;
        let api = EditApi::new(app_config.clone(), store.clone(), api_engine, SystemClock)
            .with_tenant_cache(tenants.clone())
            .with_forge(forge()?)
            .with_edit_budget(settings.edit_budget);
        let default_rules = Rules::document_from_env_value(lookup("EDIT_RULES").as_deref())
            .map_err(|e| StartError(e.to_string()))?;
        let admin_confluence = ConfluenceClient::new(client_config.clone(), store.clone())
            .map_err(|e| start_error("Confluence client")(&e))?;
        let admin = AdminApi::new(
            app_config.clone(),
            default_rules,
            store.clone(),
            Arc::new(queue.clone()),
            Arc::new(queue.clone()),
            Arc::new(admin_confluence),
            SystemClock,
        )
        .with_tenant_cache(tenants.clone())
        .with_forge(forge()?);
        let privacy = Arc::new(privacy_runner(client_config.clone(), store.clone())?);
        let worker_engine =
            understudy_edits::engine(client_config, store.clone(), &app_config.app_key)
                .map_err(|e| start_error("Confluence client")(&e))?;
        let worker = EditWorker::new(
            store.clone(),
            worker_engine,
            SystemClock,
            settings.max_receives,
        )
        .with_tenant_share(Some(settings.tenant_jobs_per_minute))
        .with_failure_backoff(settings.retry_base, Duration::from_secs(60));

        let services = Arc::new(Services {
            base_path: app_config.base_path().to_owned(),
            app_key: app_config.app_key.clone(),
            body_read_timeout: settings.server.body_read_timeout,
            lifecycle,
            webhooks,
            api,
            admin,
        });
        let (stop, stopped) = watch::channel(false);
        let handler = move |request| dispatch(services.clone(), request);
        let server = tokio::spawn(server::serve(
            listener,
            handler,
            settings.server,
            stopped.clone(),
        ));
        let worker = settings.worker.then(|| {
            tokio::spawn(run_worker(
                worker,
                queue.clone(),
                settings.retry_base,
                stopped,
            ))
        });
        if worker.is_none() {
            tracing::warn!("LOCAL_WORKER=off: events are queued, no page is edited");
        }
        let privacy_timer = settings
            .privacy
            .then(|| tokio::spawn(run_privacy_hourly(privacy.clone(), stop.subscribe())));
        Ok(Self {
            addr,
            // Always set here: `app_config` defaults APP_BASE_URL to http://localhost:<port>.
            base_url: app_config
                .app_base_url
                .as_ref()
                .map(|url| url.as_str().trim_end_matches('/').to_owned())
                .unwrap_or_default(),
            store,
            tenants,
            queue,
            stop,
            server,
            worker,
            privacy,
            privacy_timer,
        })
    }

    /// Runs the personal data run now, over every slot (what `understudy privacy-report --once`
    /// does with a stopped app).
    pub async fn privacy_report(&self) -> PrivacyRun {
        self.privacy
            .run_every_slot(deadline_in(PRIVACY_RUN_BUDGET))
            .await
    }

    /// Where the app listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The app's base URL (the descriptor's `baseUrl`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The store. A tenant or its settings changed here directly (not through the app's own
    /// handlers) reach the running handlers within [`TenantCache::DEFAULT_TTL_SECONDS`], or at
    /// once after [`LocalApp::tenant_cache`]'s `forget`.
    pub fn store(&self) -> &Arc<EmbeddedStore> {
        &self.store
    }

    /// The handlers' shared cache of verified tenants and their settings.
    pub fn tenant_cache(&self) -> &Arc<TenantCache> {
        &self.tenants
    }

    /// The queue.
    pub fn queue(&self) -> &LocalQueue {
        &self.queue
    }

    /// Waits until no job is queued or running, or `timeout` passes; true when idle.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.queue.pending().await.unwrap_or(1) == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops accepting requests, lets the requests being handled and the job in flight finish, and
    /// returns. Connections without a request being handled (idle, silent, or still sending their
    /// request) are closed at once, so slow clients do not delay it. Jobs still queued stay in the
    /// queue file and run after the next start.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        if let Some(worker) = self.worker {
            let _ = worker.await;
        }
        if let Some(timer) = self.privacy_timer {
            let _ = timer.await;
        }
    }
}

/// Routes a request to the function that owns its path, as API Gateway does on AWS.
async fn dispatch(
    services: Arc<Services>,
    request: http::Request<server::RequestBody>,
) -> http::Response<Bytes> {
    let (parts, body) = request.into_parts();
    let read = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, MAX_BODY));
    let body = match timeout_unless_ready(services.body_read_timeout, read).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(_)) => {
            return ApiError::PayloadTooLarge { limit: MAX_BODY }.into_response(&services.app_key);
        }
        Err(_) => {
            tracing::info!(path = %parts.uri.path(), "request body not received in time");
            return server::body_too_slow();
        }
    };
    let request = ApiRequest::from_http(http::Request::from_parts(parts, body));
    // The function that owns the path in the one route table, as API Gateway routes it on AWS.
    match routes::owner(request.relative_path(&services.base_path)) {
        Some(Function::Lifecycle) => services.lifecycle.handle(request).await,
        Some(Function::Webhooks) => services.webhooks.handle(request).await,
        Some(Function::EditApi) => services.api.handle(request).await,
        Some(Function::Admin) => services.admin.handle(request).await,
        None => ApiError::NotFound.into_response(&services.app_key),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The local queue's consumer: one job at a time, in queue order per page.
/// The app's settings, with `APP_BASE_URL` defaulting to `http://localhost:<port>`.
fn app_config(lookup: &dyn Fn(&str) -> Option<String>, port: u16) -> Result<AppConfig, StartError> {
    let default_base = format!("http://localhost:{port}");
    AppConfig::from_lookup(|name| match name {
        "APP_BASE_URL" => lookup(name)
            .filter(|v| !v.trim().is_empty())
            .or_else(|| Some(default_base.clone())),
        _ => lookup(name),
    })
    .map_err(|e| StartError(e.to_string()))
}

/// The Confluence client's settings. Plain http to a tenant (and to a configured OAuth server or
/// reporting API) only when the allow-list names a loopback host exactly: local testing against
/// the simulator.
fn client_config(
    lookup: &dyn Fn(&str) -> Option<String>,
    app_config: &AppConfig,
) -> Result<ClientConfig, StartError> {
    let loopback = (app_config.tenant_hosts.names_loopback_host()
        || app_config
            .forge
            .as_ref()
            .is_some_and(|forge| forge.api_hosts.names_loopback_host()))
    .to_string();
    ClientConfig::from_lookup(|name| match name {
        ENV_ALLOW_HTTP_LOOPBACK => Some(loopback.clone()),
        _ => lookup(name),
    })
    .map_err(|e| StartError(e.to_string()))
}

/// The personal data run of the embedded store, reporting through a client built from `config`.
pub fn privacy_runner(
    config: ClientConfig,
    store: Arc<EmbeddedStore>,
) -> Result<LocalPrivacy, StartError> {
    let settings = report_settings(&config, DEFAULT_MAX_ACCOUNTS_PER_TENANT);
    let reporting = ConfluenceClient::new(config, store.clone())
        .map_err(|e| start_error("reporting client")(&e))?;
    Ok(PrivacyRunner::new(
        store,
        Arc::new(reporting),
        settings,
        Arc::new(SystemClock),
    ))
}

/// Opens the data directory's store by itself and runs the personal data run once, over every
/// slot (`understudy privacy-report --once`). The store is one process's at a time: with the app
/// running, it refuses, and the app's own hourly run does the work.
pub async fn privacy_report_once(
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<PrivacyRun, StartError> {
    let settings = LocalSettings::from_lookup(lookup)?;
    let client_config = client_config(lookup, &app_config(lookup, settings.port)?)?;
    let store = Arc::new(
        EmbeddedStore::open_with_local_key(&settings.data_dir).map_err(|e| {
            start_error(
                "cannot open the store in DATA_DIR (is the app running? its hourly run does this)",
            )(&e)
        })?,
    );
    let runner = privacy_runner(client_config, store)?;
    Ok(runner.run_every_slot(deadline_in(PRIVACY_RUN_BUDGET)).await)
}

/// The hourly timer: the first run a minute after start, then every hour, each over the slot of
/// its hour, until the app stops.
async fn run_privacy_hourly(runner: Arc<LocalPrivacy>, mut stop: watch::Receiver<bool>) {
    let mut wait = Duration::from_secs(60);
    while !*stop.borrow() {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => continue,
        }
        let run = runner.run_this_hour(deadline_in(PRIVACY_RUN_BUDGET)).await;
        tracing::info!(?run, "personal data run done");
        wait = Duration::from_secs(60 * 60);
    }
}

async fn run_worker(
    worker: EditWorker<EmbeddedStore, SystemClock>,
    queue: LocalQueue,
    retry_base: Duration,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let lease = match queue.lease(now_ms(), LEASE_MS).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                tokio::select! {
                    () = queue.wait(Duration::from_millis(500)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            Err(err) => {
                tracing::error!(error = %err, "local queue unavailable");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let result = match worker.run(&lease.message, lease.receives).await {
            JobOutcome::Done => queue.complete(lease.seq).await,
            JobOutcome::RetryLater { after, .. } => {
                // The worker's wait (Confluence's, the tenant's share, its backoff from
                // LOCAL_RETRY_BASE_MS); a held-back job of the same page waits one base step.
                let delay = after.unwrap_or(retry_base);
                let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(60_000);
                queue
                    .retry_later(lease.seq, now_ms().saturating_add(delay_ms))
                    .await
            }
            JobOutcome::DeadLetter { reason } => queue.dead_letter(lease.seq, &reason).await,
        };
        if let Err(err) = result {
            tracing::error!(error = %err, job_id = %lease.message.job_id, "could not record a job's outcome");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_leaves_a_core_to_the_rest_of_the_machine() {
        assert_eq!(runtime_worker_threads(0), 1);
        assert_eq!(runtime_worker_threads(1), 1);
        assert_eq!(runtime_worker_threads(2), 1);
        assert_eq!(runtime_worker_threads(8), 7);
    }
}
