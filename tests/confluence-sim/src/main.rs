//! `confluence-sim`: a seeded simulated Confluence site on 127.0.0.1, for running the app locally.

use std::process::ExitCode;

use clap::Parser;
use confluence_sim::{SimConfig, Simulator};

/// Starts a simulated Confluence Cloud site (with Atlassian's OAuth and install key servers) on
/// 127.0.0.1, seeded with users, a space and pages, and prints how to point an app at it.
#[derive(Debug, Parser)]
#[command(name = "confluence-sim", version)]
struct Args {
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 4000)]
    port: u16,
    /// Install the app served at this base URL once the site is up (repeatable).
    #[arg(long = "install", value_name = "APP_BASE_URL")]
    install: Vec<String>,
    /// Start an empty site instead of the demo one.
    #[arg(long)]
    empty: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let sim = match Simulator::start(SimConfig {
        port: args.port,
        ..SimConfig::default()
    })
    .await
    {
        Ok(sim) => sim,
        Err(error) => {
            eprintln!("confluence-sim: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("confluence-sim on {}", sim.origin());
    println!("  site base URL   {}", sim.site_base_url());
    println!("  client key      {}", sim.client_key());
    println!(
        "  keys URL        {}   (the app's CONNECT_KEYS_URL)",
        sim.keys_url()
    );
    println!(
        "  OAuth URL       {}   (the app's ATLASSIAN_OAUTH_URL)",
        sim.oauth_url()
    );
    println!(
        "  Forge JWKS      {}   (the app's FORGE_JWKS_URL)",
        sim.forge_jwks_url()
    );
    println!("  Forge app id    {}", sim.forge_app_id());
    println!("  Forge gateway   {}", sim.forge_api_base_url());
    if !args.empty {
        match sim.seed_demo() {
            Ok(demo) => {
                println!("  demo space      {}", demo.space);
                println!(
                    "  users           alice={} bob={} carol={} (reader)",
                    demo.alice, demo.bob, demo.carol
                );
                println!(
                    "  pages           open={} edit-restricted={} view-restricted={}",
                    demo.open_page, demo.edit_restricted_page, demo.view_restricted_page
                );
            }
            Err(error) => {
                eprintln!("confluence-sim: seeding failed: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    let admin = sim.origin();
    println!();
    println!("Install an app (its descriptor at <APP>/atlassian-connect.json, URLs on 127.0.0.1):");
    println!("  curl -X POST {admin}/_sim/install -d '{{\"app\": \"http://127.0.0.1:3000\"}}'");
    println!("Then, as a person:");
    println!(
        "  curl -X POST {admin}/_sim/edit -d '{{\"user\": \"<accountId>\", \"page\": \"<id>\", \"body\": \"<p>hi</p>\"}}'"
    );
    println!("  curl {admin}/_sim/state");
    println!("Install the Forge app (its remote on 127.0.0.1):");
    println!(
        "  curl -X POST {admin}/_sim/forge/install -d '{{\"remote\": \"http://127.0.0.1:3000\"}}'"
    );
    for app in &args.install {
        match sim.install(app).await {
            Ok(installation) => println!(
                "installed {} from {} (app user {})",
                installation.app_key, installation.app_base_url, installation.app_account_id
            ),
            Err(error) => eprintln!("confluence-sim: installing {app} failed: {error}"),
        }
    }
    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("confluence-sim: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
