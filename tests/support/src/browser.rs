//! A real headless Chromium for tests of the app's pages, driven through WebDriver.
//!
//! [`Browser::start`] runs Debian's `chromedriver` on a free port of 127.0.0.1 and opens a
//! [`fantoccini`] session with Chromium headless (`--no-sandbox`: the tests run as root), a fresh
//! profile in a temporary folder, and a 1280x900 window. [`Browser::run`] runs a test's body with
//! the session's [`Client`]; when the body returns an error, panics or times out, it saves a
//! screenshot, the page's HTML and the browser's console into
//! `<target>/browser-screenshots/<name>.{png,html,console.txt}`, prints where, and fails the test.
//!
//! ```no_run
//! # async fn demo() {
//! use test_support::browser::{Browser, CmdError, Locator};
//! let browser = Browser::start().await.unwrap();
//! browser
//!     .run("admin_page_saves", |client| async move {
//!         client.goto("http://127.0.0.1:3000/ui/admin").await?;
//!         client.find(Locator::Css("#save")).await?.click().await?;
//!         Ok::<_, CmdError>(())
//!     })
//!     .await;
//! # }
//! ```
//!
//! The programs come from the environment: `CHROMEDRIVER` and `CHROMIUM` name them (tests/run.sh
//! installs Debian's `chromium-driver` and `chromium` and sets both), else `chromedriver` and
//! `chromium` are looked up on `PATH`. When either is missing, [`Browser::start`] fails and says
//! which: a browser test never skips.
//!
//! Each [`Browser`] has its own chromedriver and Chromium; dropping it ends the session and kills
//! both. Starting one takes about half a second on this project's machines (2 cores).

use std::fmt;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use futures::FutureExt;
use serde_json::{Value, json};

pub use fantoccini::error::CmdError;
pub use fantoccini::{Client, Locator};

/// How long [`Browser::run`] lets a test body run before it fails it.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// How long chromedriver may take to listen.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(20);

/// The window size of every session.
pub const WINDOW_SIZE: (u32, u32) = (1280, 900);

/// Why a browser could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrowserError {
    /// chromedriver or Chromium is not installed (or not where the environment says).
    #[error(
        "{program} is missing: {detail}. Install Debian's `chromium` and `chromium-driver` \
         (`bash tests/run.sh` does: apt-get install -y chromium chromium-driver), or set {env} to \
         the program's path"
    )]
    Missing {
        /// `chromedriver` or `chromium`.
        program: &'static str,
        /// The environment variable that names it.
        env: &'static str,
        /// Where it was looked for.
        detail: String,
    },
    /// chromedriver exited or did not listen in time.
    #[error("chromedriver ({path}) did not start: {reason}\n--- chromedriver's output ---\n{log}")]
    Driver {
        /// The program run.
        path: String,
        /// What went wrong.
        reason: String,
        /// What it printed.
        log: String,
    },
    /// chromedriver refused to open a session (Chromium would not start, most often).
    #[error(
        "no WebDriver session with Chromium ({chromium}): {reason}\n--- chromedriver's output ---\n{log}"
    )]
    Session {
        /// The browser binary given to chromedriver.
        chromium: String,
        /// chromedriver's answer.
        reason: String,
        /// What chromedriver printed.
        log: String,
    },
    /// A temporary folder or a log file could not be made.
    #[error("browser setup: {0}")]
    Io(#[from] std::io::Error),
}

/// What [`Browser::check`] found when a test body failed.
#[derive(Debug)]
pub struct Failure {
    /// The name the body ran under.
    pub name: String,
    /// Why the body failed: its error, its panic, or the timeout.
    pub message: String,
    /// The page's address when it failed, if the browser could tell.
    pub url: Option<String>,
    /// The screenshot written, if any.
    pub screenshot: Option<PathBuf>,
    /// The page's HTML written, if any.
    pub html: Option<PathBuf>,
    /// The browser's console written, if any.
    pub console: Option<PathBuf>,
    /// What could not be saved, and why.
    pub capture_errors: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "browser test `{}` failed: {}", self.name, self.message)?;
        if let Some(url) = &self.url {
            write!(f, "\n  page: {url}")?;
        }
        for (what, path) in [
            ("screenshot", &self.screenshot),
            ("html", &self.html),
            ("console", &self.console),
        ] {
            if let Some(path) = path {
                write!(f, "\n  {what}: {}", path.display())?;
            }
        }
        for error in &self.capture_errors {
            write!(f, "\n  not saved: {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

/// A chromedriver and the Chromium session it drives. Dropping it ends both.
pub struct Browser {
    client: Client,
    session_id: Option<String>,
    driver: Child,
    driver_port: u16,
    driver_log: PathBuf,
    // Holds Chromium's profile and chromedriver's log; removed after both are gone.
    _scratch: tempfile::TempDir,
}

impl fmt::Debug for Browser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Browser")
            .field("driver_pid", &self.driver.id())
            .field("driver_port", &self.driver_port)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

/// Which programs to run. The default finds both as [`Browser::start`] says.
#[derive(Debug, Clone, Default)]
pub struct BrowserConfig {
    /// chromedriver; `None`: `CHROMEDRIVER`, else `chromedriver` on `PATH`.
    pub chromedriver: Option<PathBuf>,
    /// Chromium; `None`: `CHROMIUM`, else `chromium` on `PATH`.
    pub chromium: Option<PathBuf>,
}

impl Browser {
    /// Starts chromedriver on a free port of 127.0.0.1 and opens a session with a fresh headless
    /// Chromium. Fails, naming what is missing, when chromedriver or Chromium is not installed.
    pub async fn start() -> Result<Self, BrowserError> {
        Self::start_with(BrowserConfig::default()).await
    }

    /// As [`Self::start`], with the programs `config` names.
    pub async fn start_with(config: BrowserConfig) -> Result<Self, BrowserError> {
        let chromedriver = find_program("chromedriver", "CHROMEDRIVER", config.chromedriver)?;
        let chromium = find_program("chromium", "CHROMIUM", config.chromium)?;
        let scratch = tempfile::Builder::new()
            .prefix("understudy-browser-")
            .tempdir()?;
        let profile = scratch.path().join("profile");
        std::fs::create_dir_all(&profile)?;
        let driver_log = scratch.path().join("chromedriver.log");

        let (mut driver, driver_port) = spawn_driver(&chromedriver, &driver_log).await?;
        let mut capabilities = Capabilities::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("pageLoadStrategy".into(), json!("normal"));
        capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium.display().to_string(),
                "args": chromium_args(&profile),
            }),
        );
        let client = match connect(driver_port, capabilities).await {
            Ok(client) => client,
            Err(reason) => {
                kill_group(driver.id());
                let _ = driver.kill();
                let _ = driver.wait();
                return Err(BrowserError::Session {
                    chromium: chromium.display().to_string(),
                    reason,
                    log: read_log(&driver_log),
                });
            }
        };
        let mut browser = Self {
            client,
            session_id: None,
            driver,
            driver_port,
            driver_log,
            _scratch: scratch,
        };
        browser.session_id = browser.client.session_id().await.ok().flatten();
        Ok(browser)
    }

    /// The WebDriver client of the session (cheap to clone).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// chromedriver's output so far.
    pub fn driver_log(&self) -> String {
        read_log(&self.driver_log)
    }

    /// The browser's console since the last call (chromedriver's `browser` log): one line per
    /// entry, `LEVEL message`.
    pub async fn console_log(&self) -> Result<Vec<String>, CmdError> {
        let answer = self.client.issue_cmd(BrowserLog).await?;
        Ok(answer
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|entry| {
                        format!(
                            "{} {}",
                            entry.get("level").and_then(Value::as_str).unwrap_or("?"),
                            entry.get("message").and_then(Value::as_str).unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Runs a test's body with a clone of the client and returns what it returns. When the body
    /// returns an error, panics, or runs longer than [`DEFAULT_RUN_TIMEOUT`], saves a screenshot,
    /// the HTML and the console under [`screenshot_dir`] as `<name>.*`, prints their paths, and
    /// panics: the test fails.
    pub async fn run<T, E, F, Fut>(&self, name: &str, body: F) -> T
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: fmt::Display,
    {
        match self.check(name, DEFAULT_RUN_TIMEOUT, body).await {
            Ok(value) => value,
            Err(failure) => panic!("{failure}"),
        }
    }

    /// As [`Self::run`], with another timeout, and the failure returned rather than raised.
    pub async fn check<T, E, F, Fut>(
        &self,
        name: &str,
        timeout: Duration,
        body: F,
    ) -> Result<T, Failure>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: fmt::Display,
    {
        let ran = tokio::time::timeout(
            timeout,
            AssertUnwindSafe(body(self.client.clone())).catch_unwind(),
        )
        .await;
        let message = match ran {
            Ok(Ok(Ok(value))) => return Ok(value),
            Ok(Ok(Err(error))) => format!("{error:#}"),
            Ok(Err(panic)) => format!("panicked: {}", panic_message(panic.as_ref())),
            Err(_) => format!("did not finish within {timeout:?}"),
        };
        let failure = self.capture(name, message).await;
        eprintln!("{failure}");
        Err(failure)
    }

    /// Saves the page as it stands (screenshot, HTML, console) under [`screenshot_dir`] as
    /// `<name>.*`, for a failure described by `message`.
    pub async fn capture(&self, name: &str, message: String) -> Failure {
        let mut failure = Failure {
            name: name.to_owned(),
            message,
            url: None,
            screenshot: None,
            html: None,
            console: None,
            capture_errors: Vec::new(),
        };
        let dir = screenshot_dir();
        if let Err(e) = std::fs::create_dir_all(&dir) {
            failure
                .capture_errors
                .push(format!("creating {}: {e}", dir.display()));
            return failure;
        }
        let stem = file_stem(name);
        let mut save = |what: &str, extension: &str, bytes: Result<Vec<u8>, String>| {
            let path = dir.join(format!("{stem}.{extension}"));
            match bytes.and_then(|b| std::fs::write(&path, b).map_err(|e| e.to_string())) {
                Ok(()) => Some(path),
                Err(e) => {
                    failure.capture_errors.push(format!("{what}: {e}"));
                    None
                }
            }
        };
        let screenshot = save(
            "screenshot",
            "png",
            self.client.screenshot().await.map_err(|e| e.to_string()),
        );
        let html = save(
            "html",
            "html",
            self.client
                .source()
                .await
                .map(String::into_bytes)
                .map_err(|e| e.to_string()),
        );
        let console = save(
            "console",
            "console.txt",
            self.console_log()
                .await
                .map(|lines| (lines.join("\n") + "\n").into_bytes())
                .map_err(|e| e.to_string()),
        );
        failure.screenshot = screenshot;
        failure.html = html;
        failure.console = console;
        failure.url = self.client.current_url().await.ok().map(|u| u.to_string());
        failure
    }

    /// Ends the session (Chromium quits) and stops chromedriver.
    pub async fn close(self) -> Result<(), CmdError> {
        let closed = self.client.clone().close().await;
        drop(self);
        closed
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium quits when its session ends; fantoccini would end it only later, from its own
        // task, and chromedriver is about to be killed. A failure here changes nothing.
        if let Some(id) = &self.session_id {
            delete_session(self.driver_port, id);
        }
        kill_group(self.driver.id());
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where failing browser tests leave their screenshots: `<target>/browser-screenshots`, the target
/// folder being `CARGO_TARGET_DIR` when it is absolute, else the one the test binary runs from,
/// else the workspace's `target`.
pub fn screenshot_dir() -> PathBuf {
    target_dir().join("browser-screenshots")
}

fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from)
        && dir.is_absolute()
    {
        return dir;
    }
    // A test binary runs from <target>/<profile>/deps (or <target>/<triple>/<profile>/deps).
    if let Ok(exe) = std::env::current_exe()
        && let Some(deps) = exe.parent()
        && deps.file_name().is_some_and(|n| n == "deps")
        && let Some(target) = deps.parent().and_then(Path::parent)
    {
        return target.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
}

/// A name safe as a file name: letters, digits, `-`, `_` and `.`; anything else becomes `_`.
fn file_stem(name: &str) -> String {
    let stem: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.trim_matches('.').is_empty() {
        "browser-test".to_owned()
    } else {
        stem
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(a panic without a message)".to_owned())
}

/// The arguments Chromium runs with (shared/reference/forge-remote.md §8).
fn chromium_args(profile: &Path) -> Vec<String> {
    let (width, height) = WINDOW_SIZE;
    vec![
        "--headless=new".into(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--no-first-run".into(),
        "--no-default-browser-check".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-dev-shm-usage".into(),
        "--password-store=basic".into(),
        format!("--user-data-dir={}", profile.display()),
        format!("--window-size={width},{height}"),
    ]
}

/// `given` when set, else `env`'s value when set (either must name an executable file), else
/// `name` on `PATH`.
fn find_program(
    name: &'static str,
    env: &'static str,
    given: Option<PathBuf>,
) -> Result<PathBuf, BrowserError> {
    let named = given.map(|path| (path, "the configured path")).or_else(|| {
        std::env::var_os(env)
            .filter(|v| !v.is_empty())
            .map(|v| (PathBuf::from(v), env))
    });
    if let Some((path, source)) = named {
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(BrowserError::Missing {
                program: name,
                env,
                detail: format!("{} ({source}) is not an executable file", path.display()),
            })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| BrowserError::Missing {
            program: name,
            env,
            detail: format!("{env} is not set and there is no `{name}` on PATH"),
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn free_port() -> Result<u16, BrowserError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Kills chromedriver's process group (it leads one of its own, Chromium included).
fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Starts chromedriver on a free port (a few tries: a port found free may be taken before it
/// binds) and waits until it listens.
async fn spawn_driver(chromedriver: &Path, log: &Path) -> Result<(Child, u16), BrowserError> {
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port()?;
        let output = std::fs::File::create(log)?;
        let errors = output.try_clone()?;
        let mut driver = {
            use std::os::unix::process::CommandExt;
            Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(output)
                .stderr(errors)
                // Its own process group, so that dropping the browser can end Chromium too.
                .process_group(0)
                .spawn()
                .map_err(|e| BrowserError::Missing {
                    program: "chromedriver",
                    env: "CHROMEDRIVER",
                    detail: format!("{} could not be run: {e}", chromedriver.display()),
                })?
        };
        let deadline = Instant::now() + DRIVER_START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(
                &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                return Ok((driver, port));
            }
            if let Ok(Some(status)) = driver.try_wait() {
                last = format!("it exited with {status} (port {port})");
                break;
            }
            if Instant::now() >= deadline {
                kill_group(driver.id());
                let _ = driver.kill();
                let _ = driver.wait();
                return Err(BrowserError::Driver {
                    path: chromedriver.display().to_string(),
                    reason: format!(
                        "it did not listen on 127.0.0.1:{port} within {DRIVER_START_TIMEOUT:?}"
                    ),
                    log: read_log(log),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    Err(BrowserError::Driver {
        path: chromedriver.display().to_string(),
        reason: last,
        log: read_log(log),
    })
}

async fn connect(port: u16, capabilities: Capabilities) -> Result<Client, String> {
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    fantoccini::ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .map_err(|e| e.to_string())
}

/// Ends a session with a plain `DELETE /session/{id}`, without the async runtime (from `Drop`).
fn delete_session(port: u16, session_id: &str) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "DELETE /session/{session_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        // chromedriver answers once Chromium has quit; it may keep the connection open after.
        read_one_answer(&mut stream);
    }
}

/// Reads one HTTP answer (its head, then `Content-Length` bytes of body) or until the peer stops.
fn read_one_answer(stream: &mut TcpStream) {
    let mut answer = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        let read = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        answer.extend_from_slice(chunk.get(..read).unwrap_or_default());
        let Some(head_end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(answer.get(..head_end).unwrap_or_default());
        let length = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if answer.len() >= head_end + 4 + length {
            return;
        }
    }
}

/// chromedriver's `POST /session/{id}/se/log {"type": "browser"}`: the console since the last call.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}
