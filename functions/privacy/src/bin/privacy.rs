//! The personal data run on AWS Lambda: an EventBridge schedule invokes it every hour; it
//! visits that hour's tenants until the invocation's own deadline is near.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use connect_auth::SystemClock;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use understudy_confluence::ConfluenceClient;
use understudy_privacy::{PrivacyConfig, PrivacyRunner, deadline_in, report_settings};
use understudy_web::lambda;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config: PrivacyConfig = lambda::start()?;
    let sdk = understudy_store::load_aws_config().await;
    let store = Arc::new(config.deployed.store.open(&sdk));
    let settings = report_settings(&config.client, config.max_accounts_per_tenant);
    let reporting = Arc::new(ConfluenceClient::new(config.client, store.clone())?);
    let runner = Arc::new(PrivacyRunner::new(
        store,
        reporting,
        settings,
        Arc::new(SystemClock),
    ));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let runner = runner.clone();
        async move {
            // The invocation's deadline (unix ms), as the runtime tells it.
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default();
            let left = u128::from(event.context.deadline).saturating_sub(now_ms);
            let budget = Duration::from_millis(u64::try_from(left).unwrap_or(u64::MAX));
            let run = runner.run_this_hour(deadline_in(budget)).await;
            tracing::info!(?run, "personal data run done");
            Ok::<_, Error>(serde_json::json!({
                "visited": run.visited,
                "accountsReported": run.accounts_reported,
                "accountsErased": run.accounts_erased,
                "purgedTenants": run.purged_tenants,
                "unfinished": run.unfinished,
                "outOfTime": run.out_of_time,
            }))
        }
    }))
    .await
}
