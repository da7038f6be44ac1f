//! The edit API on AWS Lambda (API Gateway HTTP API events).

use std::sync::Arc;

use connect_auth::SystemClock;
use lambda_http::{Error, service_fn};
use understudy_edits::api::EditApi;
use understudy_web::AppConfig;
use understudy_web::lambda::{to_api_request, to_lambda_response};

#[tokio::main]
async fn main() -> Result<(), Error> {
    understudy_web::telemetry::init_json_logs();
    let config = AppConfig::from_env()?;
    let store = Arc::new(understudy_store::deployed_store_from_env(
        &understudy_store::load_aws_config().await,
    )?);
    let engine = understudy_edits::engine_from_env(store.clone(), &config.app_key)?;
    let api = Arc::new(EditApi::new(config, store, engine, SystemClock));
    lambda_http::run(service_fn(move |request| {
        let api = api.clone();
        async move {
            Ok::<_, Error>(to_lambda_response(
                api.handle(to_api_request(request)).await,
            ))
        }
    }))
    .await
}
