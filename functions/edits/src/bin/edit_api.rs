//! The edit API on AWS Lambda (API Gateway HTTP API events).

use std::sync::Arc;

use connect_auth::SystemClock;
use lambda_http::Error;
use understudy_edits::ApiConfig;
use understudy_edits::api::EditApi;
use understudy_web::{ForgeFrontDoor, lambda};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config: ApiConfig = lambda::start()?;
    let app = config.deployed.app;
    let sdk = understudy_store::load_aws_config().await;
    let store = Arc::new(config.deployed.store.open(&sdk));
    let engine = understudy_edits::engine(config.client, store.clone(), &app.app_key)?;
    let forge = ForgeFrontDoor::from_config(&app, store.clone(), SystemClock)?;
    let api = EditApi::new(app, store, engine, SystemClock).with_forge(forge);
    lambda::serve_http(api, |f, request| async move { f.handle(request).await }).await
}
