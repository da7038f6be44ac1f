//! The webhook function on AWS Lambda (API Gateway HTTP API events).

use std::sync::Arc;

use connect_auth::SystemClock;
use lambda_http::{Error, service_fn};
use understudy_queue::{MarkedQueue, SqsQueue};
use understudy_web::AppConfig;
use understudy_web::lambda::{to_api_request, to_lambda_response};
use understudy_webhooks::{Rules, Webhooks};

#[tokio::main]
async fn main() -> Result<(), Error> {
    understudy_web::telemetry::init_json_logs();
    let config = AppConfig::from_env()?;
    // An invalid rules document stops the cold start with its reason: never half-applied.
    let rules = Rules::from_env_value(std::env::var("EDIT_RULES").ok().as_deref())?;
    let sdk = understudy_store::load_aws_config().await;
    let store = Arc::new(understudy_store::deployed_store_from_env(&sdk)?);
    let queue = Arc::new(SqsQueue::from_env(&sdk)?);
    // Marks in DynamoDB (kept for days), jobs in SQS FIFO (whose own de-duplication lasts 5 minutes).
    let intake = Arc::new(MarkedQueue::new(store.clone(), queue));
    let webhooks = Arc::new(Webhooks::new(config, rules, store, intake, SystemClock));
    lambda_http::run(service_fn(move |request| {
        let webhooks = webhooks.clone();
        async move {
            Ok::<_, Error>(to_lambda_response(
                webhooks.handle(to_api_request(request)).await,
            ))
        }
    }))
    .await
}
