//! `understudy-demo`: the local app installed into a simulated Confluence site, people editing
//! restricted pages, and the app keeping up; prints the story and the audit trail.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match understudy_demo::run().await {
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
