//! The admin page and API on AWS Lambda (API Gateway HTTP API events).

use std::sync::Arc;

use connect_auth::SystemClock;
use lambda_http::Error;
use understudy_admin::{AdminApi, AdminConfig};
use understudy_confluence::ConfluenceClient;
use understudy_queue::{MarkedQueue, SqsQueue};
use understudy_web::{ForgeFrontDoor, lambda};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config: AdminConfig = lambda::start()?;
    let app = config.deployed.app;
    let sdk = understudy_store::load_aws_config().await;
    let store = Arc::new(config.deployed.store.open(&sdk));
    let queue = Arc::new(SqsQueue::from_sdk((&sdk).into(), config.edit_queue_url));
    let intake = Arc::new(MarkedQueue::new(store.clone(), queue.clone()));
    let confluence = Arc::new(ConfluenceClient::new(config.client, store.clone())?);
    let forge = ForgeFrontDoor::from_config(&app, store.clone(), SystemClock)?;
    let admin = AdminApi::new(
        app,
        config.default_rules,
        store,
        intake,
        queue,
        confluence,
        SystemClock,
    )
    .with_forge(forge);
    lambda::serve_http(admin, |f, request| async move { f.handle(request).await }).await
}
