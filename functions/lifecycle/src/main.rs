//! The lifecycle function on AWS Lambda (API Gateway HTTP API events).

use std::sync::Arc;

use connect_auth::{CachingKeyProvider, HttpKeyProvider, SystemClock};
use lambda_http::Error;
use understudy_lifecycle::{Lifecycle, LifecycleConfig};
use understudy_web::{ForgeFrontDoor, lambda};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config: LifecycleConfig = lambda::start()?;
    let sdk = understudy_store::load_aws_config().await;
    let store = Arc::new(config.store.open(&sdk));
    let http = HttpKeyProvider::default_client()?;
    let keys = match &config.app.connect_keys_url {
        Some(url) => HttpKeyProvider::configured(http, url),
        None => HttpKeyProvider::atlassian(http),
    };
    let keys = CachingKeyProvider::new(keys, CachingKeyProvider::<()>::DEFAULT_CAPACITY);
    let forge = ForgeFrontDoor::from_config(&config.app, store.clone(), SystemClock)?;
    let lifecycle = Lifecycle::new(config.app, store, keys, SystemClock)?.with_forge(forge);
    lambda::serve_http(
        lifecycle,
        |f, request| async move { f.handle(request).await },
    )
    .await
}
