//! The lifecycle function on AWS Lambda (API Gateway HTTP API events).

use std::sync::Arc;

use connect_auth::{CachingKeyProvider, HttpKeyProvider, SystemClock};
use lambda_http::{Error, service_fn};
use understudy_lifecycle::Lifecycle;
use understudy_web::AppConfig;
use understudy_web::lambda::{to_api_request, to_lambda_response};

#[tokio::main]
async fn main() -> Result<(), Error> {
    understudy_web::telemetry::init_json_logs();
    let config = AppConfig::from_env()?;
    let store = Arc::new(understudy_store::deployed_store_from_env(
        &understudy_store::load_aws_config().await,
    )?);
    let http = HttpKeyProvider::default_client()?;
    let keys = match &config.connect_keys_url {
        Some(url) => HttpKeyProvider::configured(http, url),
        None => HttpKeyProvider::atlassian(http),
    };
    let keys = CachingKeyProvider::new(keys, CachingKeyProvider::<()>::DEFAULT_CAPACITY);
    let lifecycle = Arc::new(Lifecycle::new(config, store, keys, SystemClock)?);
    lambda_http::run(service_fn(move |request| {
        let lifecycle = lifecycle.clone();
        async move {
            Ok::<_, Error>(to_lambda_response(
                lifecycle.handle(to_api_request(request)).await,
            ))
        }
    }))
    .await
}
