//! The webhook function on AWS Lambda (API Gateway HTTP API events).

use std::sync::Arc;

use connect_auth::SystemClock;
use lambda_http::Error;
use understudy_queue::{MarkedQueue, SqsQueue};
use understudy_web::{ForgeFrontDoor, lambda};
use understudy_webhooks::{Webhooks, WebhooksConfig};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config: WebhooksConfig = lambda::start()?;
    let sdk = understudy_store::load_aws_config().await;
    let store = Arc::new(config.deployed.store.open(&sdk));
    let queue = SqsQueue::from_sdk((&sdk).into(), config.edit_queue_url);
    // Marks in DynamoDB (kept for days), jobs in SQS FIFO (whose own de-duplication lasts 5 minutes).
    let intake = Arc::new(MarkedQueue::new(store.clone(), Arc::new(queue)));
    let forge = ForgeFrontDoor::from_config(&config.deployed.app, store.clone(), SystemClock)?;
    let webhooks = Webhooks::new(
        config.deployed.app,
        config.rules,
        store,
        intake,
        SystemClock,
    )
    .with_forge(forge);
    lambda::serve_http(
        webhooks,
        |f, request| async move { f.handle(request).await },
    )
    .await
}
