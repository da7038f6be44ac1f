//! `understudy-rules`: the deployment's default edit rules, kept in the stack's table.
//!
//! Lambda caps a function's environment at 4 KB in all, and CloudFormation a parameter at 4 KB,
//! so a rules document of any size cannot travel as `EDIT_RULES` on AWS. It is stored in the
//! table instead, under the deployment's own key, where the webhooks function reads it (at most
//! once a minute per warm instance) for every site without rules of its own.
//!
//! ```text
//! understudy-rules check FILE   # is FILE a valid rules document? (nothing is written)
//! understudy-rules show         # the stored document
//! understudy-rules set FILE     # check FILE, then store it
//! understudy-rules clear        # remove it: sites without rules of their own get none
//! ```
//!
//! It reads `TABLE_NAME` and `KMS_KEY_ID` (the stack's `TableName` and `SecretsKeyArn` outputs)
//! and AWS credentials and region as the AWS CLI does.

use std::process::ExitCode;

use understudy_core::Rules;
use understudy_domain::{ClientKey, SettingsStore, TenantSettings};
use understudy_web::env::{Env, FromEnv};
use understudy_web::lambda::StoreSettings;

const USAGE: &str = "usage: understudy-rules check FILE | show | set FILE | clear";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The document in `path`, checked as the webhooks function will check it.
fn checked(path: &str) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let document: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{path}: not valid JSON: {e}"))?;
    let rules = Rules::from_value(document.clone()).map_err(|e| format!("{path}: {e}"))?;
    eprintln!("{path}: {} rules, valid", rules.len());
    Ok(document)
}

async fn run(args: &[String]) -> Result<(), String> {
    let command: Vec<&str> = args.iter().map(String::as_str).collect();
    match command.as_slice() {
        ["check", path] => return checked(path).map(|_| ()),
        ["show"] | ["set", _] | ["clear"] => {}
        _ => return Err(USAGE.to_owned()),
    }
    let lookup = |name: &str| std::env::var(name).ok();
    let env = Env::new(&lookup);
    let settings = <StoreSettings as FromEnv>::read(&env);
    let settings = env.finish(settings).map_err(|e| e.to_string())?;
    let sdk = understudy_store::load_aws_config().await;
    let store = settings.open(&sdk);
    let key = ClientKey::deployment();
    match command.as_slice() {
        ["show"] => {
            let stored = store
                .get_settings(&key, now())
                .await
                .map_err(|e| e.to_string())?;
            match stored {
                Some(settings) if !settings.document.is_null() => println!(
                    "{}",
                    serde_json::to_string_pretty(&settings.document).unwrap_or_default()
                ),
                _ => eprintln!("no rules stored: sites without rules of their own get none"),
            }
            Ok(())
        }
        ["set", path] => {
            let document = checked(path)?;
            store
                .put_settings(&key, &TenantSettings { document }, now())
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("stored: every warm function reads it within a minute");
            Ok(())
        }
        ["clear"] => {
            store
                .put_settings(
                    &key,
                    &TenantSettings {
                        document: serde_json::Value::Null,
                    },
                    now(),
                )
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("cleared");
            Ok(())
        }
        _ => Err(USAGE.to_owned()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("understudy-rules: {reason}");
            ExitCode::FAILURE
        }
    }
}
