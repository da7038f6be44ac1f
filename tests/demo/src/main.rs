//! `understudy-demo`: the local app installed into a simulated Confluence site, people editing
//! restricted pages, and the app keeping up; prints the story and the audit trail. With `--forge`,
//! the same story through the Forge front door.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let story = match std::env::args().nth(1).as_deref() {
        None => understudy_demo::run().await,
        Some("--forge") => understudy_demo::run_forge().await,
        Some(other) => Err(format!(
            "unknown argument {other:?}; the one option is --forge"
        )),
    };
    match story {
        Ok(story) => {
            print!("{story}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("understudy-demo: {reason}");
            ExitCode::FAILURE
        }
    }
}
