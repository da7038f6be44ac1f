//! `understudy`: the whole app on 127.0.0.1, no AWS needed.
//!
//! `cargo run --release --bin understudy` serves every route. The demo, which plays the whole story
//! against the Confluence simulator, is its own binary (`cargo run --release --bin understudy-demo`),
//! so that this one never links the simulator. `understudy privacy-report --once` runs the
//! personal data run by hand, with the app stopped (README, "Personal data").

use std::process::ExitCode;

use understudy::LocalApp;

async fn serve() -> Result<(), String> {
    understudy_web::telemetry::init_text_logs();
    let app = LocalApp::start_from_env()
        .await
        .map_err(|e| e.to_string())?;
    println!("understudy is listening on http://{}", app.addr());
    println!("  descriptor:  {}/atlassian-connect.json", app.base_url());
    println!(
        "  runtime:     {} worker threads (TOKIO_WORKER_THREADS)",
        tokio::runtime::Handle::current().metrics().num_workers()
    );
    println!();
    println!(
        "To install it on a Confluence Cloud dev site, expose this port through a tunnel, e.g."
    );
    println!(
        "  cloudflared tunnel --url http://localhost:{}   (or: ngrok http {})",
        app.addr().port(),
        app.addr().port()
    );
    println!(
        "then restart with APP_BASE_URL=<the tunnel's https URL> and, in Confluence, Settings >"
    );
    println!(
        "Manage apps > Upload app (development mode on) > <tunnel URL>/atlassian-connect.json."
    );
    println!("Ctrl-C stops it: the job in flight finishes, queued jobs resume at the next start.");
    shutdown_signal().await;
    println!("stopping...");
    app.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
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
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `understudy privacy-report --once`: one personal data run over every tenant, by hand.
async fn privacy_report(args: &[String]) -> Result<(), String> {
    if args != ["--once"] {
        return Err("usage: understudy privacy-report --once".to_owned());
    }
    understudy_web::telemetry::init_text_logs();
    let run = understudy::privacy_report_once(&|name| std::env::var(name).ok())
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "personal data run: {} tenants visited, {} accounts reported, {} closed accounts erased, \
         {} tenants deleted after their retention, {} skipped, {} left for the next run{}",
        run.visited,
        run.accounts_reported,
        run.accounts_erased,
        run.purged_tenants,
        run.skipped,
        run.unfinished,
        if run.out_of_time {
            " (out of time)"
        } else {
            ""
        }
    );
    if run.unfinished > 0 {
        return Err("some tenants could not be finished; see the log".to_owned());
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    // TOKIO_WORKER_THREADS, when set, is tokio's to read; otherwise the app's own default.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        runtime.worker_threads(understudy::runtime_worker_threads(cores));
    }
    match runtime.build() {
        Ok(runtime) => runtime.block_on(run()),
        Err(err) => {
            eprintln!("understudy: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None => serve().await,
        Some("privacy-report") => privacy_report(args.get(1..).unwrap_or_default()).await,
        Some("demo") => {
            Err("the demo is its own binary: cargo run --release --bin understudy-demo".to_owned())
        }
        Some(other) => Err(format!(
            "unknown command `{other}` (run with no arguments to serve)"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("understudy: {reason}");
            ExitCode::FAILURE
        }
    }
}
