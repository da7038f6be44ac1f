//! `soak`: a bounded soak run of the local app against the Confluence simulator (issue 18, "Soak").
//! Run by hand (`bash tests/load/run.sh soak`, or `target/release/soak` after a release build);
//! nothing here runs in CI.
//!
//! 1. Starts the simulator in this process (webhooks also for pages the app cannot view) and seeds
//!    a space of `SOAK_PAGES` pages (200), `SOAK_RESTRICTED_PERCENT` (20) of them restricted to the
//!    one person who edits them, half view-restricted (the app gets 404), half edit-restricted
//!    (403), so the app must act as that person (policy `impersonate`).
//! 2. Starts the app as its own process (`understudy`, next to this binary unless `SOAK_APP_BIN`),
//!    with the simulator's environment (`understudy_demo::simulator_env`), `LOCAL_PRIVACY=off`,
//!    `EDIT_TENANT_JOBS_PER_MINUTE=0` (the tenant's share would otherwise cap the one simulated
//!    site at 120 jobs a minute: a throttle, not the pipeline's capacity) and rules that append a
//!    stamp to every updated page; installs it into the simulator.
//! 3. Measures the pipeline's throughput, closed loop for `SOAK_BURST_SECONDS` (20):
//!    `SOAK_CONCURRENCY` (32) senders, each over its own pages, edit a page and wait until the
//!    app's edit of it shows in the simulator, then the next; then until the queue is drained (the
//!    admin API's `waiting` is 0 and the app makes no more page updates): person edits per second
//!    from the first send to the drain. Each person edit is two jobs: the person's event, and the
//!    event of the app's own edit (whose job finds the stamp there and changes nothing). (An open
//!    burst would overstate it: many edits of one page pile up before the worker reaches it, and
//!    every job after the first finds the page stamped already.)
//! 4. Runs for `SOAK_SECONDS` (600) at half that rate (`SOAK_RATE` overrides), open loop: event k
//!    is sent at start + k / rate, round-robin over the pages, each a person's edit in the
//!    simulator that fires `page_updated` to the app. Every `SOAK_429_EVERY_MS` (5000) the next
//!    page read or page update (alternately) of the app is answered 429 with `Retry-After: 1`
//!    (one armed at a time, during the throughput burst too). Every `SOAK_PROBE_MS` (500) an event
//!    is also a probe: the time until the page carries the app's edit after that person's edit
//!    (what a user waits for).
//! 5. Every `SOAK_WINDOW_SECONDS` (10) prints: the app's RSS (/proc/PID/status), the p50/p99 of
//!    the webhook deliveries of that window (the time the simulator's `edit_page_as` takes: the
//!    person's edit, signing, the POST and the app's 204), the probes' edit lag, and the queue's
//!    backlog (`waiting` from `GET /api/admin/queue`, as a site admin).
//! 6. Stops sending, waits for the drain (bounded), stops the app (SIGTERM: the job in flight
//!    finishes), then opens its data directory: the audit records of the tenant (the only one),
//!    the queue's pending jobs and dead letters. Every webhook the simulator delivered (the
//!    people's and those of the app's own edits) answered 204 is an accepted event, with the job
//!    id the app derives from it (`page_updated:<page>:v<version>`); each must have exactly one
//!    audit record, and no record may name another job. The page histories are checked too: every
//!    page ends stamped, and no app edit follows an app edit (the app's own edit never causes a
//!    second one).
//!
//! Exits 0 when every check passes, 1 when one fails (memory grew more than
//! `SOAK_MAX_RSS_GROWTH_MIB` (32) from the end of warm-up (`SOAK_WARMUP_SECONDS`, 60 or a third
//! of the run) to the last minute; the webhook p99 or the probes' lag p99 of the last minute is
//! more than `SOAK_MAX_P99_DRIFT` (2.0) times that of the first minute after warm-up and more than
//! `SOAK_DRIFT_FLOOR_MS` (5 ms) above it; the backlog of the last minute above 4 s of events and
//! twice that of the first; an accepted event without exactly one record; an event the app did not
//! accept; a job left queued or dead-lettered), 2 when it could not run, 3 past its time bound.
//! Everything it starts stops by itself: the app is stopped at the end, on Ctrl-C, and by a
//! watchdog past the run's bound. Everything listens and calls on 127.0.0.1 only.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use confluence_sim::{
    EditVia, Endpoint, Fault, Page, SimConfig, Simulator, SpaceAccess, SpaceSpec,
};
use connect_auth::{SecretString, sign_hs256};
use serde_json::{Value, json};
use understudy_domain::{ActedAs, AuditCursor, AuditLog, ClientKey, EditOutcome, EditStrategy};
use understudy_queue::LocalQueue;
use understudy_store::EmbeddedStore;

/// The fragment the rules append to every updated page.
const STAMP: &str = "<p>Stamped by understudy (soak)</p>";
/// The space every page is in.
const SPACE: &str = "SOAK";

// ---- settings ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Settings {
    seconds: u64,
    pages: usize,
    restricted_percent: usize,
    users: usize,
    burst: Duration,
    rate: Option<f64>,
    fault_every: Duration,
    window: Duration,
    warmup: Duration,
    concurrency: usize,
    probe_every: Duration,
    max_rss_growth_mib: f64,
    max_p99_drift: f64,
    drift_floor_ms: f64,
    drain_timeout: Duration,
    app_bin: PathBuf,
    keep: bool,
}

fn env_or<T: FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse()
            .map_err(|_| format!("{name}={value:?} is not a valid value")),
        _ => Ok(default),
    }
}

impl Settings {
    fn from_env() -> Result<Self, String> {
        let seconds: u64 = env_or("SOAK_SECONDS", 600)?;
        let default_warmup = (seconds / 3).min(60);
        let app_bin = match std::env::var("SOAK_APP_BIN") {
            Ok(path) if !path.is_empty() => PathBuf::from(path),
            _ => std::env::current_exe()
                .map_err(|e| format!("where is this binary? {e}"))?
                .with_file_name("understudy"),
        };
        let rate: f64 = env_or("SOAK_RATE", 0.0)?;
        let settings = Self {
            seconds,
            pages: env_or("SOAK_PAGES", 200)?,
            restricted_percent: env_or("SOAK_RESTRICTED_PERCENT", 20)?,
            users: env_or("SOAK_USERS", 4)?,
            burst: Duration::from_secs(env_or("SOAK_BURST_SECONDS", 20)?),
            rate: (rate > 0.0).then_some(rate),
            fault_every: Duration::from_millis(env_or("SOAK_429_EVERY_MS", 5000)?),
            window: Duration::from_secs(env_or("SOAK_WINDOW_SECONDS", 10)?),
            warmup: Duration::from_secs(env_or("SOAK_WARMUP_SECONDS", default_warmup)?),
            concurrency: env_or("SOAK_CONCURRENCY", 32)?,
            probe_every: Duration::from_millis(env_or("SOAK_PROBE_MS", 500)?),
            max_rss_growth_mib: env_or("SOAK_MAX_RSS_GROWTH_MIB", 32.0)?,
            max_p99_drift: env_or("SOAK_MAX_P99_DRIFT", 2.0)?,
            drift_floor_ms: env_or("SOAK_DRIFT_FLOOR_MS", 5.0)?,
            drain_timeout: Duration::from_secs(env_or("SOAK_DRAIN_SECONDS", 180)?),
            app_bin,
            keep: std::env::var("SOAK_KEEP").is_ok_and(|v| !v.is_empty() && v != "0"),
        };
        if settings.seconds == 0 || settings.seconds > 6 * 60 * 60 {
            return Err("SOAK_SECONDS must be between 1 and 21600".into());
        }
        if settings.pages < 10 || settings.pages > 100_000 {
            return Err("SOAK_PAGES must be between 10 and 100000".into());
        }
        if settings.restricted_percent > 100 {
            return Err("SOAK_RESTRICTED_PERCENT must be at most 100".into());
        }
        if settings.users == 0 || settings.users > 1000 {
            return Err("SOAK_USERS must be between 1 and 1000".into());
        }
        if settings.burst.as_secs() < 5 || settings.burst.as_secs() > 600 {
            return Err("SOAK_BURST_SECONDS must be between 5 and 600".into());
        }
        if settings.concurrency == 0 || settings.concurrency > 1024 {
            return Err("SOAK_CONCURRENCY must be between 1 and 1024".into());
        }
        if settings.window.is_zero() {
            return Err("SOAK_WINDOW_SECONDS must be at least 1".into());
        }
        if settings.warmup.as_secs() >= settings.seconds {
            return Err("SOAK_WARMUP_SECONDS must be shorter than SOAK_SECONDS".into());
        }
        Ok(settings)
    }

    /// Everything the run may take, warm-up, burst, drains and stop included: the watchdog's bound.
    fn hard_bound(&self) -> Duration {
        Duration::from_secs(self.seconds)
            + self.burst
            + self.drain_timeout * 3
            + Duration::from_secs(300)
    }
}

// ---- small helpers ----------------------------------------------------------------------------

fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn unix_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// The `q`-quantile (0..=1) of sorted microseconds, in milliseconds.
fn quantile_ms(sorted: &[u32], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted.get(index).map(|us| f64::from(*us) / 1000.0)
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// (VmRSS, VmHWM) of a process, in KiB.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

// ---- the app's process ------------------------------------------------------------------------

/// The pid of the running app (0: none), for the watchdog and the signal handler.
static APP_PID: AtomicU32 = AtomicU32::new(0);

fn signal_pid(pid: u32, signal: &str) {
    if pid != 0 {
        let _ = Command::new("kill")
            .args([signal, &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The app as a child process; killed when dropped if it still runs.
struct AppProcess {
    child: Child,
    pid: u32,
}

impl AppProcess {
    fn spawn(bin: &Path, vars: &[(String, String)], log: &Path) -> Result<Self, String> {
        let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err_file = log_file
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let mut command = Command::new(bin);
        command
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file);
        for (name, value) in vars {
            command.env(name, value);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let pid = child.id();
        APP_PID.store(pid, Ordering::SeqCst);
        Ok(Self { child, pid })
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// SIGTERM (the app finishes the job in flight), then SIGKILL after `grace`. True when it
    /// stopped on SIGTERM.
    async fn stop(&mut self, grace: Duration) -> bool {
        signal_pid(self.pid, "-TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                APP_PID.store(0, Ordering::SeqCst);
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        APP_PID.store(0, Ordering::SeqCst);
        false
    }
}

impl Drop for AppProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        APP_PID.store(0, Ordering::SeqCst);
    }
}

// ---- the world --------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Open,
    ViewRestricted,
    EditRestricted,
}

#[derive(Debug, Clone)]
struct SoakPage {
    id: String,
    kind: Kind,
    /// Who edits a restricted page (the only one allowed).
    owner: String,
}

/// What the senders, the sampler and the injector share.
struct Ctx {
    sim: Simulator,
    http: reqwest::Client,
    base_url: String,
    client_key: String,
    secret: String,
    pages: Vec<SoakPage>,
    users: Vec<String>,
    admins: Vec<String>,
    admin_turn: AtomicU64,
    /// Webhook deliveries' durations (µs) of the current window, answered 204.
    acks: Mutex<Vec<u32>>,
    /// Probes' edit lags (µs) of the current window.
    lags: Mutex<Vec<u32>>,
    sent: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    probe_timeouts: AtomicU64,
    first_problem: Mutex<Option<String>>,
    faults_armed: AtomicU64,
}

impl Ctx {
    fn note_problem(&self, problem: String) {
        let mut first = self
            .first_problem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if first.is_none() {
            *first = Some(problem);
        }
    }

    /// A context token of `user` (what `AP.context.getToken()` gives the admin page).
    fn context_token(&self, user: &str) -> Option<String> {
        let now = unix_seconds();
        let claims = json!({"iss": self.client_key, "sub": user, "iat": now, "exp": now + 180,
                            "qsh": "context-qsh", "context": {}});
        sign_hs256(&claims, &SecretString::from(self.secret.clone())).ok()
    }

    /// The queue's backlog (jobs waiting or running), as a site admin sees it.
    async fn waiting(&self) -> Option<u64> {
        let turn = self.admin_turn.fetch_add(1, Ordering::Relaxed);
        let admin = self
            .admins
            .get(usize::try_from(turn).unwrap_or(0) % self.admins.len().max(1))?;
        let token = self.context_token(admin)?;
        let answer = self
            .http
            .get(format!("{}/api/admin/queue", self.base_url))
            .header("authorization", format!("JWT {token}"))
            .send()
            .await
            .ok()?;
        if !answer.status().is_success() {
            return None;
        }
        let body: Value = answer.json().await.ok()?;
        body.get("waiting").and_then(Value::as_u64)
    }

    /// Event `k`: a person edits page `index mod pages`; with `probe`, waits for the app's edit
    /// too.
    async fn person_edit(&self, k: u64, index: usize, probe: bool) {
        let count = self.pages.len().max(1);
        let Some(page) = self.pages.get(index % count) else {
            return;
        };
        let editor = match page.kind {
            Kind::Open => self
                .users
                .get(usize::try_from(k / count as u64).unwrap_or(0) % self.users.len().max(1))
                .cloned()
                .unwrap_or_else(|| page.owner.clone()),
            Kind::ViewRestricted | Kind::EditRestricted => page.owner.clone(),
        };
        let body = format!("<p>Soak edit {k} of page {} by {editor}.</p>", page.id);
        self.sent.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let delivered = self.sim.edit_page_as(&editor, &page.id, &body).await;
        let took = started.elapsed();
        let deliveries = match delivered {
            Ok(deliveries) => deliveries,
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.note_problem(format!("edit {k} of page {}: {e}", page.id));
                return;
            }
        };
        let mut version = None;
        for delivery in &deliveries {
            if delivery.status == Some(204) {
                self.acked.fetch_add(1, Ordering::Relaxed);
                self.acks
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(micros(took));
                version = delivery
                    .body
                    .get("page")
                    .and_then(|p| p.get("version"))
                    .and_then(Value::as_u64);
            } else {
                self.refused.fetch_add(1, Ordering::Relaxed);
                self.note_problem(format!(
                    "delivery of edit {k} of page {}: status {:?}, error {:?}",
                    page.id, delivery.status, delivery.error
                ));
            }
        }
        if deliveries.is_empty() {
            self.errors.fetch_add(1, Ordering::Relaxed);
            self.note_problem(format!("edit {k} of page {}: no webhook was sent", page.id));
        }
        if let (true, Some(version)) = (probe, version) {
            self.probe(&page.id, version, started).await;
        }
    }

    /// Waits until the simulator holds an edit by the app after `version` (60 s at most).
    async fn probe(&self, page: &str, version: u64, started: Instant) {
        let deadline = started + Duration::from_secs(60);
        while Instant::now() < deadline {
            let done = self.sim.page(page).is_some_and(|p| {
                p.history
                    .iter()
                    .rev()
                    .take_while(|r| r.number > version)
                    .any(|r| by_app(&r.via))
            });
            if done {
                self.lags
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(micros(started.elapsed()));
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.probe_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Arms one 429 (`Retry-After: 1`) every `every`, alternately on the app's next page read and
    /// page update, until `stop`; one armed at a time, so no request sees two in a row.
    async fn inject_faults(self: Arc<Self>, every: Duration, stop: Arc<AtomicBool>) {
        if every.is_zero() {
            return;
        }
        let mut turn = 0u64;
        loop {
            let mut slept = Duration::ZERO;
            while slept < every {
                if stop.load(Ordering::Relaxed) {
                    self.sim.clear_faults();
                    return;
                }
                let step = Duration::from_millis(100).min(every - slept);
                tokio::time::sleep(step).await;
                slept += step;
            }
            let target = if turn.is_multiple_of(2) {
                Endpoint::GetPage
            } else {
                Endpoint::UpdatePage
            };
            turn += 1;
            self.sim.clear_faults();
            self.sim.fail_next(
                target,
                Fault::TooManyRequests {
                    retry_after: Some(1),
                },
                1,
            );
            self.faults_armed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until the queue is empty and the app makes no more page updates (3 polls in a row,
    /// 300 ms apart); returns when the first of those polls was made, or `None` after `timeout`.
    async fn drain(&self, timeout: Duration) -> Option<Instant> {
        let start = Instant::now();
        let mut streak = 0;
        let mut since = None;
        let mut last_puts = usize::MAX;
        while start.elapsed() < timeout {
            let polled = Instant::now();
            let waiting = self.waiting().await;
            let puts = self.sim.count(&Endpoint::UpdatePage);
            if waiting == Some(0) && puts == last_puts {
                streak += 1;
                let first = *since.get_or_insert(polled);
                if streak >= 3 {
                    return Some(first);
                }
            } else {
                streak = 0;
                since = None;
            }
            last_puts = puts;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        None
    }
}

fn by_app(via: &EditVia) -> bool {
    matches!(via, EditVia::AppUser { .. } | EditVia::Impersonation { .. })
}

/// What [`seed`] made.
struct Seeded {
    pages: Vec<SoakPage>,
    users: Vec<String>,
    admins: Vec<String>,
}

/// Seeds users, admins, the space and its pages.
fn seed(sim: &Simulator, settings: &Settings) -> Result<Seeded, String> {
    let users: Vec<String> = (0..settings.users)
        .map(|i| sim.add_user(&format!("soak-user-{i:03}"), &format!("Soak user {i}")))
        .collect();
    let admins: Vec<String> = (0..3)
        .map(|i| {
            let id = sim.add_user(&format!("soak-admin-{i}"), &format!("Soak admin {i}"));
            sim.set_site_admin(&id, true);
            id
        })
        .collect();
    sim.add_space(
        SpaceSpec::new(SPACE)
            .name("Soak space")
            .everyone(SpaceAccess::Edit),
    );
    let mut pages = Vec::with_capacity(settings.pages);
    let mut restricted = 0usize;
    for i in 0..settings.pages {
        let owner = users
            .get(i % users.len().max(1))
            .cloned()
            .ok_or("no users")?;
        // Spread evenly: page i is restricted when the running share steps up at i.
        let is_restricted =
            (i + 1) * settings.restricted_percent / 100 > i * settings.restricted_percent / 100;
        let kind = if !is_restricted {
            Kind::Open
        } else {
            restricted += 1;
            if restricted % 2 == 1 {
                Kind::ViewRestricted
            } else {
                Kind::EditRestricted
            }
        };
        let id = sim
            .create_page(
                SPACE,
                &format!("Soak page {i:05}"),
                "<p>Seeded.</p>",
                &owner,
            )
            .map_err(|e| format!("page {i}: {e}"))?;
        match kind {
            Kind::Open => {}
            Kind::ViewRestricted => sim
                .restrict(&id, &[owner.as_str()], &[owner.as_str()])
                .map_err(|e| e.to_string())?,
            Kind::EditRestricted => sim
                .restrict(&id, &[], &[owner.as_str()])
                .map_err(|e| e.to_string())?,
        }
        pages.push(SoakPage { id, kind, owner });
    }
    Ok(Seeded {
        pages,
        users,
        admins,
    })
}

// ---- windows ----------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Window {
    /// Seconds since the soak started, at the window's end.
    at: f64,
    sent: u64,
    acked: u64,
    acks: Vec<u32>,
    lags: Vec<u32>,
    rss_kib: u64,
    hwm_kib: u64,
    waiting: Option<u64>,
    load: String,
}

fn window_line(w: &Window, warm: bool) -> String {
    let mut acks = w.acks.clone();
    acks.sort_unstable();
    let mut lags = w.lags.clone();
    lags.sort_unstable();
    format!(
        "{:>6.0} s{} sent {:>5} acked {:>5}  webhook p50 {:>6} p99 {:>7} ms  lag p50 {:>6} p99 {:>7} ms ({:>2} probes)  RSS {:>6.1} MiB (HWM {:>6.1})  backlog {:>5}  load {}",
        w.at,
        if warm { "*" } else { " " },
        w.sent,
        w.acked,
        ms(quantile_ms(&acks, 0.5)),
        ms(quantile_ms(&acks, 0.99)),
        ms(quantile_ms(&lags, 0.5)),
        ms(quantile_ms(&lags, 0.99)),
        w.lags.len(),
        mib(w.rss_kib),
        mib(w.hwm_kib),
        w.waiting.map_or_else(|| "?".to_owned(), |n| n.to_string()),
        w.load,
    )
}

fn pooled(windows: &[&Window], lags: bool) -> Vec<u32> {
    let mut all: Vec<u32> = windows
        .iter()
        .flat_map(|w| if lags { w.lags.iter() } else { w.acks.iter() })
        .copied()
        .collect();
    all.sort_unstable();
    all
}

// ---- verification -----------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Verification {
    deliveries: usize,
    accepted: usize,
    accepted_person: usize,
    accepted_app: usize,
    not_accepted: usize,
    duplicates: usize,
    jobs: usize,
    records: usize,
    exactly_one: usize,
    missing: Vec<String>,
    several: Vec<(String, usize)>,
    unexpected: Vec<String>,
    outcomes: BTreeMap<String, usize>,
    pending: Option<u64>,
    dead: Option<usize>,
    pages_unstamped: usize,
    app_after_app: usize,
    person_revisions: usize,
    app_revisions: usize,
    confluence_requests: usize,
    answered_429: usize,
    token_exchanges: usize,
}

fn outcome_label(strategy: EditStrategy, outcome: EditOutcome, acted_as: &ActedAs) -> String {
    let outcome = match outcome {
        EditOutcome::Edited => "edited",
        EditOutcome::Unchanged => "unchanged",
        EditOutcome::Blocked => "blocked",
        EditOutcome::Failed => "failed",
        EditOutcome::Refused => "refused",
        EditOutcome::Skipped => "skipped",
    };
    let how = match (strategy, acted_as) {
        (EditStrategy::AsApp, _) => "as the app",
        (EditStrategy::Impersonate, ActedAs::User(_)) => "as the user (impersonation)",
        (EditStrategy::Impersonate, ActedAs::App) => "impersonate, as the app",
        (EditStrategy::Grant, _) => "grant",
        (EditStrategy::Skip, _) => "skip",
    };
    format!("{outcome}, {how}")
}

/// Reads the stopped app's data directory and matches it against every delivery.
async fn verify(
    sim: &Simulator,
    pages: &[SoakPage],
    client_key: &str,
    data: &Path,
) -> Result<Verification, String> {
    let mut v = Verification::default();
    let histories: HashMap<String, Page> = pages
        .iter()
        .filter_map(|p| sim.page(&p.id).map(|page| (p.id.clone(), page)))
        .collect();
    for page in histories.values() {
        if !page.body.trim_end().ends_with(STAMP) {
            v.pages_unstamped += 1;
        }
        let mut previous_by_app = false;
        for revision in &page.history {
            let app = by_app(&revision.via);
            match revision.via {
                EditVia::Editor => v.person_revisions += 1,
                EditVia::AppUser { .. } | EditVia::Impersonation { .. } => v.app_revisions += 1,
                EditVia::Seed => {}
            }
            if app && previous_by_app {
                v.app_after_app += 1;
            }
            previous_by_app = app;
        }
    }

    // Every accepted event, by the job id the app derives from it.
    let mut expected: HashMap<String, usize> = HashMap::new();
    for delivery in sim.deliveries() {
        v.deliveries += 1;
        if delivery.status != Some(204) {
            v.not_accepted += 1;
            continue;
        }
        let page = delivery.body.get("page");
        let id = page.and_then(|p| p.get("id")).and_then(Value::as_u64);
        let version = page.and_then(|p| p.get("version")).and_then(Value::as_u64);
        let (Some(id), Some(version)) = (id, version) else {
            v.not_accepted += 1;
            continue;
        };
        v.accepted += 1;
        let by = histories
            .get(&id.to_string())
            .and_then(|p| p.history.iter().find(|r| r.number == version))
            .map(|r| by_app(&r.via));
        match by {
            Some(true) => v.accepted_app += 1,
            _ => v.accepted_person += 1,
        }
        *expected
            .entry(format!("{}:{id}:v{version}", delivery.event))
            .or_default() += 1;
    }
    v.duplicates = expected.values().map(|n| n - 1).sum();
    v.jobs = expected.len();

    // The app is stopped: its files are free.
    let store = EmbeddedStore::open_with_local_key(data).map_err(|e| format!("store: {e}"))?;
    let tenant = ClientKey::parse(client_key.to_owned()).map_err(|e| e.to_string())?;
    let mut records: HashMap<String, usize> = HashMap::new();
    let mut cursor: Option<AuditCursor> = None;
    for _ in 0..100_000 {
        let page = store
            .list_for_tenant(&tenant, cursor.as_ref(), 1000, unix_seconds())
            .await
            .map_err(|e| format!("audit: {e}"))?;
        for record in &page.records {
            v.records += 1;
            *records.entry(record.job_id.clone()).or_default() += 1;
            *v.outcomes
                .entry(outcome_label(
                    record.strategy,
                    record.outcome,
                    &record.acted_as,
                ))
                .or_default() += 1;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    drop(store);
    for job in expected.keys() {
        match records.get(job).copied().unwrap_or(0) {
            0 => v.missing.push(job.clone()),
            1 => v.exactly_one += 1,
            n => v.several.push((job.clone(), n)),
        }
    }
    v.unexpected = records
        .keys()
        .filter(|job| !expected.contains_key(*job))
        .cloned()
        .collect();
    v.missing.sort();
    v.several.sort();
    v.unexpected.sort();

    let queue = LocalQueue::open(data).map_err(|e| format!("queue: {e}"))?;
    v.pending = queue.pending().await.ok();
    v.dead = queue.dead_letters().await.ok().map(|d| d.len());
    drop(queue);

    for request in sim.requests() {
        if request.path.starts_with("/wiki/") {
            v.confluence_requests += 1;
            if request.status == 429 {
                v.answered_429 += 1;
            }
        }
    }
    v.token_exchanges = sim.token_exchanges().len();
    Ok(v)
}

// ---- the run ----------------------------------------------------------------------------------

struct Burst {
    /// Person edits sent.
    events: u64,
    /// From the first send until the queue was drained.
    drain_seconds: f64,
    /// Webhooks accepted meanwhile (the people's and those of the app's own edits): the jobs.
    jobs: usize,
}

impl Burst {
    fn events_per_second(&self) -> f64 {
        self.events as f64 / self.drain_seconds.max(0.001)
    }
    fn jobs_per_second(&self) -> f64 {
        self.jobs as f64 / self.drain_seconds.max(0.001)
    }
}

/// Sends `count` events from `first` as fast as `concurrency` senders go; waits for all.
async fn send_burst(ctx: &Arc<Ctx>, first: u64, count: u64, concurrency: usize) {
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for k in first..first + count {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            ctx.person_edit(k, usize::try_from(k).unwrap_or(0), false)
                .await;
            drop(permit);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

async fn run(settings: &Settings) -> Result<bool, String> {
    if !settings.app_bin.is_file() {
        return Err(format!(
            "{} not found: build it (cargo build --release -p understudy --bin understudy) or set SOAK_APP_BIN",
            settings.app_bin.display()
        ));
    }
    let mut work = WorkDir {
        path: std::env::temp_dir().join(format!(
            "understudy-soak-{}-{}",
            std::process::id(),
            unix_millis()
        )),
        keep: settings.keep,
    };
    let data = work.path.join("data");
    std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    let log = work.path.join("app.log");
    println!(
        "scratch directory (removed at the end unless the run fails or SOAK_KEEP=1): {}",
        work.path.display()
    );
    let result = soak(settings, &data, &log).await;
    work.keep |= !matches!(result, Ok(true));
    if work.keep {
        println!(
            "\n(kept: {} — the app's data directory and log)",
            work.path.display()
        );
    }
    result
}

/// The scratch directory (the app's data directory and log): removed when dropped, also when the
/// run is interrupted, unless kept.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Starts the simulator with its seeded site and the app against it, and installs the app.
async fn start(
    settings: &Settings,
    data: &Path,
    log: &Path,
) -> Result<(Arc<Ctx>, AppProcess), String> {
    let sim = Simulator::start(SimConfig {
        webhooks_require_app_view: false,
        ..SimConfig::default()
    })
    .await
    .map_err(|e| format!("simulator: {e}"))?;
    let Seeded {
        pages,
        users,
        admins,
    } = seed(&sim, settings)?;
    let restricted = pages.iter().filter(|p| p.kind != Kind::Open).count();

    let rules = json!({
        "restricted_pages": "impersonate",
        "rules": [{"name": "soak-stamp", "events": ["page_updated"], "edit": [{"append": STAMP}]}]
    })
    .to_string();
    let port = free_port()?;
    let base_url = format!("http://127.0.0.1:{port}");
    let mut vars: Vec<(String, String)> = understudy_demo::simulator_env(&sim, &rules, data)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let rust_log = std::env::var("SOAK_RUST_LOG").unwrap_or_else(|_| "warn".to_owned());
    for (name, value) in [
        ("PORT", port.to_string()),
        ("APP_BASE_URL", base_url.clone()),
        ("LOCAL_PRIVACY", "off".to_owned()),
        ("EDIT_TENANT_JOBS_PER_MINUTE", "0".to_owned()),
        ("RUST_LOG", rust_log),
    ] {
        vars.retain(|(k, _)| k != name);
        vars.push((name.to_owned(), value));
    }
    let mut app = AppProcess::spawn(&settings.app_bin, &vars, log)?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    loop {
        if let Some(status) = app.exited() {
            return Err(format!(
                "the app exited at start ({status}); see {}",
                log.display()
            ));
        }
        let ok = http
            .get(format!("{base_url}/atlassian-connect.json"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err("the app did not answer within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let installation = sim
        .install(&base_url)
        .await
        .map_err(|e| format!("install: {e}"))?;
    println!(
        "app pid {} at {base_url} ({}), installed as {}; {} pages, {restricted} restricted; RSS {:.1} MiB",
        app.pid,
        settings.app_bin.display(),
        installation.app_key,
        pages.len(),
        memory_kib(app.pid).map_or(0.0, |(rss, _)| mib(rss)),
    );
    let ctx = Arc::new(Ctx {
        sim,
        http,
        base_url,
        client_key: installation.client_key,
        secret: installation.shared_secret,
        pages,
        users,
        admins,
        admin_turn: AtomicU64::new(0),
        acks: Mutex::new(Vec::new()),
        lags: Mutex::new(Vec::new()),
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        probe_timeouts: AtomicU64::new(0),
        first_problem: Mutex::new(None),
        faults_armed: AtomicU64::new(0),
    });
    Ok((ctx, app))
}

/// The pipeline's throughput, measured closed loop so that, as in the soak, every person edit is
/// followed by its own app edit (an open burst would pile many edits of a page before the worker
/// reaches it, and the jobs after the first would find nothing to do): `settings.concurrency`
/// senders, each over its own pages, edit a page and wait until the app's edit of it shows, for
/// `settings.burst`; the queue never empties meanwhile. Then until the queue is drained. Person
/// edits per second from the first send to the drain.
async fn measure(ctx: &Arc<Ctx>, settings: &Settings, first: u64) -> Result<Burst, String> {
    let deliveries_before = ctx.sim.deliveries().len();
    let start = Instant::now();
    let until = start + settings.burst;
    let next = Arc::new(AtomicU64::new(first));
    let senders = settings.concurrency.min(ctx.pages.len()).max(1);
    let mut tasks = Vec::with_capacity(senders);
    for sender in 0..senders {
        let ctx = ctx.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut index = sender;
            while Instant::now() < until {
                let k = next.fetch_add(1, Ordering::Relaxed);
                ctx.person_edit(k, index, true).await;
                index += senders;
                if index >= ctx.pages.len() {
                    index = sender;
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let drained = ctx
        .drain(settings.drain_timeout)
        .await
        .ok_or("the throughput burst did not drain within SOAK_DRAIN_SECONDS")?;
    Ok(Burst {
        events: next.load(Ordering::Relaxed) - first,
        drain_seconds: drained.duration_since(start).as_secs_f64(),
        jobs: ctx.sim.deliveries().len().saturating_sub(deliveries_before),
    })
}

/// What the soak phase saw.
struct SoakRun {
    windows: Vec<Window>,
    scheduled: u64,
    /// The most an event was sent after its time.
    late: Duration,
    sent: u64,
    acked: u64,
    seconds: f64,
}

fn counted(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Sends events from `first` at `rate` for the run's duration (open loop), one window line every
/// `settings.window`; returns when every sender is done.
async fn soak_phase(
    ctx: &Arc<Ctx>,
    app: &mut AppProcess,
    settings: &Settings,
    rate: f64,
    first: u64,
) -> Result<SoakRun, String> {
    // The soak's own figures start now.
    ctx.acks.lock().map_err(|_| "poisoned")?.clear();
    ctx.lags.lock().map_err(|_| "poisoned")?.clear();
    let sent_before = counted(&ctx.sent);
    let acked_before = counted(&ctx.acked);
    let duration = Duration::from_secs(settings.seconds);
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let probe_each = (settings.probe_every.as_secs_f64() * rate).round().max(1.0) as u64;
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.concurrency));
    let pacer = {
        let ctx = ctx.clone();
        let slots = slots.clone();
        tokio::spawn(async move {
            let mut k = 0u64;
            let mut late = Duration::ZERO;
            loop {
                let due = start + interval.mul_f64(k as f64);
                if due >= start + duration {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                late = late.max(Instant::now().saturating_duration_since(due));
                let ctx = ctx.clone();
                let probe = k.is_multiple_of(probe_each);
                tokio::spawn(async move {
                    let event = first + k;
                    ctx.person_edit(event, usize::try_from(event).unwrap_or(0), probe)
                        .await;
                    drop(permit);
                });
                k += 1;
            }
            (k, late)
        })
    };
    let mut windows: Vec<Window> = Vec::new();
    let mut last_sent = sent_before;
    let mut last_acked = acked_before;
    println!(
        "(* = warm-up window; webhook = the simulator's edit + delivery until the app's 204; lag = a probe edit until the app's edit of it shows)"
    );
    for tick in 1u32.. {
        let at = start + settings.window * tick;
        if at > start + duration + settings.window / 2 {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let acks = std::mem::take(&mut *ctx.acks.lock().map_err(|_| "poisoned")?);
        let lags = std::mem::take(&mut *ctx.lags.lock().map_err(|_| "poisoned")?);
        let (rss_kib, hwm_kib) = memory_kib(app.pid).unwrap_or((0, 0));
        let waiting = ctx.waiting().await;
        let (sent, acked) = (counted(&ctx.sent), counted(&ctx.acked));
        let window = Window {
            at: at.duration_since(start).as_secs_f64(),
            sent: sent - last_sent,
            acked: acked - last_acked,
            acks,
            lags,
            rss_kib,
            hwm_kib,
            waiting,
            load: load_average(),
        };
        (last_sent, last_acked) = (sent, acked);
        let warm = window.at <= settings.warmup.as_secs_f64();
        println!("{}", window_line(&window, warm));
        windows.push(window);
        if let Some(status) = app.exited() {
            return Err(format!("the app exited during the soak ({status})"));
        }
    }
    let (scheduled, late) = pacer.await.map_err(|e| e.to_string())?;
    // Every sender done (their probes included).
    let all = u32::try_from(settings.concurrency).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(120), slots.acquire_many(all)).await;
    Ok(SoakRun {
        windows,
        scheduled,
        late,
        sent: counted(&ctx.sent) - sent_before,
        acked: counted(&ctx.acked) - acked_before,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// How the run ended: the final drain and the app's stop.
struct Ending {
    /// Seconds from the last send to the drain; `None`: not within the bound.
    drained: Option<f64>,
    rss_kib: u64,
    hwm_kib: u64,
}

async fn soak(settings: &Settings, data: &Path, log: &Path) -> Result<bool, String> {
    println!(
        "soak: {} s, {} pages ({} % restricted), {} people, 429 every {} ms, window {} s, warm-up {} s  [load {}]",
        settings.seconds,
        settings.pages,
        settings.restricted_percent,
        settings.users,
        settings.fault_every.as_millis(),
        settings.window.as_secs(),
        settings.warmup.as_secs(),
        load_average()
    );
    let (ctx, mut app) = start(settings, data, log).await?;
    let mut next_event = 0u64;

    // The caches (tokens, rules, admin answers) warm: one edit of each of the first pages.
    let warm = u64::try_from(ctx.pages.len().min(40)).unwrap_or(40);
    send_burst(&ctx, next_event, warm, 8).await;
    next_event += warm;
    ctx.drain(settings.drain_timeout)
        .await
        .ok_or("the warm-up events did not drain")?;

    // The 429s, from the throughput burst to the end of the soak.
    let stop_faults = Arc::new(AtomicBool::new(false));
    let injector = tokio::spawn(
        ctx.clone()
            .inject_faults(settings.fault_every, stop_faults.clone()),
    );
    let burst = measure(&ctx, settings, next_event).await?;
    next_event += burst.events;
    let rate = settings.rate.unwrap_or(burst.events_per_second() / 2.0);
    println!(
        "throughput: {} person edits by {} closed-loop senders for {} s, drained after {:.1} s: {:.1} edits/s, {:.1} jobs/s ({} jobs); soak rate {:.1} edits/s{}  [load {}]",
        burst.events,
        settings.concurrency.min(ctx.pages.len()),
        settings.burst.as_secs(),
        burst.drain_seconds,
        burst.events_per_second(),
        burst.jobs_per_second(),
        burst.jobs,
        rate,
        if settings.rate.is_some() {
            " (SOAK_RATE)"
        } else {
            " (half)"
        },
        load_average()
    );
    if rate <= 0.0 || !rate.is_finite() {
        return Err("no usable rate".into());
    }
    let run = soak_phase(&ctx, &mut app, settings, rate, next_event).await?;
    stop_faults.store(true, Ordering::Relaxed);
    let _ = injector.await;
    ctx.sim.clear_faults();

    let drain_start = Instant::now();
    let drained = ctx.drain(settings.drain_timeout).await;
    let (rss_kib, hwm_kib) = memory_kib(app.pid).unwrap_or((0, 0));
    let ending = Ending {
        drained: drained.map(|at| at.saturating_duration_since(drain_start).as_secs_f64()),
        rss_kib,
        hwm_kib,
    };
    let stopped_cleanly = app.stop(Duration::from_secs(30)).await;
    println!(
        "stopped sending after {:.0} s ({} scheduled, send lag at most {:.1} ms); drained {}; app stopped {}  [load {}]",
        run.seconds,
        run.scheduled,
        run.late.as_secs_f64() * 1000.0,
        ending.drained.map_or_else(
            || "NOT within the bound".to_owned(),
            |s| format!("{s:.1} s later")
        ),
        if stopped_cleanly {
            "on SIGTERM"
        } else {
            "by SIGKILL after 30 s"
        },
        load_average()
    );
    let verification = verify(&ctx.sim, &ctx.pages, &ctx.client_key, data).await?;
    Ok(report(
        settings,
        &ctx,
        &burst,
        rate,
        &run,
        &ending,
        &verification,
    ))
}

/// Prints the summary table and the checks; true when every check passed.
fn report(
    settings: &Settings,
    ctx: &Ctx,
    burst: &Burst,
    rate: f64,
    run: &SoakRun,
    ending: &Ending,
    v: &Verification,
) -> bool {
    let warmup = settings.warmup.as_secs_f64();
    let post: Vec<&Window> = run.windows.iter().filter(|w| w.at > warmup).collect();
    // The first and the last minute after warm-up (a third of it each, in a shorter run).
    let span = post.len().div_ceil(3).clamp(1, 6);
    let first: Vec<&Window> = post.iter().take(span).copied().collect();
    let last: Vec<&Window> = post.iter().rev().take(span).rev().copied().collect();
    let rss_warm = first.first().map_or(0, |w| w.rss_kib);
    let rss_last = last.iter().map(|w| w.rss_kib).max().unwrap_or(0);
    let rss_growth = mib(rss_last) - mib(rss_warm);
    let minutes = post
        .last()
        .zip(post.first())
        .map_or(0.0, |(b, a)| (b.at - a.at) / 60.0);
    let everything: Vec<&Window> = run.windows.iter().collect();
    let all_acks = pooled(&everything, false);
    let all_lags = pooled(&everything, true);
    let drift = |lags: bool| -> (String, bool) {
        let a = quantile_ms(&pooled(&first, lags), 0.99);
        let b = quantile_ms(&pooled(&last, lags), 0.99);
        match (a, b) {
            (Some(a), Some(b)) => {
                let ratio = b / a.max(0.001);
                let ok = ratio <= settings.max_p99_drift || b - a <= settings.drift_floor_ms;
                (format!("{a:.2} → {b:.2} ms (×{ratio:.2})"), ok)
            }
            _ => ("no samples".to_owned(), false),
        }
    };
    let (ack_drift, ack_ok) = drift(false);
    let (lag_drift, lag_ok) = drift(true);
    let backlog_max = post.iter().filter_map(|w| w.waiting).max();
    let backlog_first = first.iter().filter_map(|w| w.waiting).max();
    let backlog_last = last.iter().filter_map(|w| w.waiting).max();
    // A backlog that grows is a worker falling behind; a 1 s stall on a 429 leaves a few hundred.
    let backlog_bound = (4.0 * rate).max(2.0 * backlog_first.unwrap_or(0) as f64);
    let backlog_ok = backlog_last.is_some_and(|n| n as f64 <= backlog_bound);
    let span_label = format!("{} s", span as u64 * settings.window.as_secs());
    let some = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
    let per_thousand = if run.sent > 0 {
        (rss_last as f64 - rss_warm as f64) * 1000.0 / run.sent as f64
    } else {
        0.0
    };

    println!("\n== soak summary  [load {}]", load_average());
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| throughput (closed loop, {} s, 429s included) | {:.1} person edits/s = {:.1} jobs/s ({} edits) |",
        settings.burst.as_secs(),
        burst.events_per_second(),
        burst.jobs_per_second(),
        burst.events
    );
    println!(
        "| soak rate | {rate:.1} person edits/s for {} s |",
        settings.seconds
    );
    println!(
        "| person edits sent / acknowledged 204 | {} / {} (errors {}, refused {}) |",
        run.sent,
        run.acked,
        counted(&ctx.errors),
        counted(&ctx.refused)
    );
    println!(
        "| webhook latency, whole soak | p50 {} ms, p99 {} ms, max {} ms ({} deliveries) |",
        ms(quantile_ms(&all_acks, 0.5)),
        ms(quantile_ms(&all_acks, 0.99)),
        ms(quantile_ms(&all_acks, 1.0)),
        all_acks.len()
    );
    println!(
        "| edit lag (probes), whole soak | p50 {} ms, p99 {} ms, max {} ms ({} probes, {} timed out) |",
        ms(quantile_ms(&all_lags, 0.5)),
        ms(quantile_ms(&all_lags, 0.99)),
        ms(quantile_ms(&all_lags, 1.0)),
        all_lags.len(),
        counted(&ctx.probe_timeouts)
    );
    println!("| webhook p99, first {span_label} after warm-up → last {span_label} | {ack_drift} |");
    println!(
        "| edit lag p99, first {span_label} after warm-up → last {span_label} | {lag_drift} |"
    );
    println!(
        "| RSS at end of warm-up → highest in the last {span_label} | {:.1} → {:.1} MiB ({rss_growth:+.1} MiB over {minutes:.1} min; {per_thousand:+.1} KiB per 1000 edits) |",
        mib(rss_warm),
        mib(rss_last),
    );
    println!(
        "| RSS after the drain / peak (VmHWM) | {:.1} / {:.1} MiB |",
        mib(ending.rss_kib),
        mib(ending.hwm_kib)
    );
    println!(
        "| backlog (admin API `waiting`): highest after warm-up; first {span_label} → last {span_label} | {}; {} → {} |",
        some(backlog_max),
        some(backlog_first),
        some(backlog_last)
    );
    println!(
        "| 429s armed / answered (of all Confluence REST calls) | {} / {} of {} ({:.3} %); {} OAuth exchanges |",
        counted(&ctx.faults_armed),
        v.answered_429,
        v.confluence_requests,
        100.0 * v.answered_429 as f64 / v.confluence_requests.max(1) as f64,
        v.token_exchanges
    );
    println!(
        "| webhooks delivered (whole run) / accepted 204 | {} / {} ({} people's edits, {} the app's own edits; {} duplicates) |",
        v.deliveries, v.accepted, v.accepted_person, v.accepted_app, v.duplicates
    );
    println!(
        "| accepted events with exactly one audit record | {} of {} (missing {}, several {}, records of no accepted event {}; {} records in all) |",
        v.exactly_one,
        v.jobs,
        v.missing.len(),
        v.several.len(),
        v.unexpected.len(),
        v.records
    );
    let outcomes = v
        .outcomes
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join("; ");
    println!("| audit outcomes | {outcomes} |");
    println!(
        "| left in the queue / dead letters | {} / {} |",
        some(v.pending),
        some(v.dead.map(|n| n as u64))
    );
    println!(
        "| page histories | {} person edits, {} app edits; {} pages not ending stamped; {} app edits right after an app edit |",
        v.person_revisions, v.app_revisions, v.pages_unstamped, v.app_after_app
    );

    let mut passed = true;
    let mut check = |ok: bool, what: String| {
        println!("{} {what}", if ok { "PASS" } else { "FAIL" });
        passed &= ok;
    };
    println!();
    check(
        rss_growth <= settings.max_rss_growth_mib,
        format!(
            "memory: RSS grew {rss_growth:+.1} MiB after warm-up (bound {} MiB)",
            settings.max_rss_growth_mib
        ),
    );
    check(
        backlog_ok,
        format!(
            "backlog does not grow: highest {} in the last {span_label} (bound {backlog_bound:.0}: 4 s of events, or twice the first {span_label}'s {})",
            some(backlog_last),
            some(backlog_first)
        ),
    );
    check(
        ack_ok,
        format!(
            "webhook p99 drift: {ack_drift} (bound ×{} unless within {} ms)",
            settings.max_p99_drift, settings.drift_floor_ms
        ),
    );
    check(
        lag_ok,
        format!(
            "edit lag p99 drift: {lag_drift} (bound ×{} unless within {} ms)",
            settings.max_p99_drift, settings.drift_floor_ms
        ),
    );
    check(
        v.missing.is_empty() && v.several.is_empty() && v.unexpected.is_empty(),
        format!(
            "every accepted event has exactly one audit record ({} of {}){}",
            v.exactly_one,
            v.jobs,
            examples(v)
        ),
    );
    check(
        v.not_accepted == 0 && counted(&ctx.errors) == 0,
        format!(
            "every event was delivered and accepted ({} not answered 204, {} send errors){}",
            v.not_accepted,
            counted(&ctx.errors),
            ctx.first_problem
                .lock()
                .ok()
                .and_then(|p| p.clone())
                .map_or_else(String::new, |p| format!("; first: {p}"))
        ),
    );
    check(
        ending.drained.is_some() && v.pending == Some(0) && v.dead == Some(0),
        format!(
            "the queue drained: {} pending, {} dead letters",
            some(v.pending),
            some(v.dead.map(|n| n as u64))
        ),
    );
    check(
        v.pages_unstamped == 0 && v.app_after_app == 0,
        format!(
            "every page ends stamped and no app edit follows an app edit ({} / {})",
            v.pages_unstamped, v.app_after_app
        ),
    );
    check(
        counted(&ctx.probe_timeouts) == 0,
        format!(
            "every probe saw the app's edit within 60 s ({} did not)",
            counted(&ctx.probe_timeouts)
        ),
    );
    passed
}

fn examples(v: &Verification) -> String {
    let mut parts = Vec::new();
    if let Some(job) = v.missing.first() {
        parts.push(format!("missing e.g. {job}"));
    }
    if let Some((job, n)) = v.several.first() {
        parts.push(format!("{n} records for {job}"));
    }
    if let Some(job) = v.unexpected.first() {
        parts.push(format!("unexpected {job}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join(", "))
    }
}

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    // The watchdog: past the run's bound, the app is killed and this process exits.
    let bound = settings.hard_bound();
    std::thread::spawn(move || {
        std::thread::sleep(bound);
        eprintln!(
            "soak: the run exceeded its bound of {} s: stopping",
            bound.as_secs()
        );
        signal_pid(APP_PID.load(Ordering::SeqCst), "-KILL");
        std::process::exit(3);
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("soak: tokio: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = run(&settings) => outcome,
            () = interrupted() => {
                signal_pid(APP_PID.load(Ordering::SeqCst), "-KILL");
                Err("interrupted".to_owned())
            }
        }
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::from(2)
        }
    }
}

async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
