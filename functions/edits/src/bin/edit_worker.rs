//! The edit worker on AWS Lambda: SQS FIFO batches in, partial batch failures out.

use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use connect_auth::SystemClock;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use understudy_edits::worker::{DEFAULT_MAX_RECEIVES, EditWorker, handle_sqs_batch};
use understudy_web::AppConfig;

#[tokio::main]
async fn main() -> Result<(), Error> {
    understudy_web::telemetry::init_json_logs();
    let config = AppConfig::from_env()?;
    let max_receives = match std::env::var("EDIT_MAX_RECEIVES")
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| "EDIT_MAX_RECEIVES must be a whole number")?,
        None => DEFAULT_MAX_RECEIVES,
    };
    let store = Arc::new(understudy_store::deployed_store_from_env(
        &understudy_store::load_aws_config().await,
    )?);
    let engine = understudy_edits::engine_from_env(store.clone(), &config.app_key)?;
    let worker = Arc::new(EditWorker::new(store, engine, SystemClock, max_receives));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let worker = worker.clone();
        async move { Ok::<_, Error>(handle_sqs_batch(&*worker, event.payload).await) }
    }))
    .await
}
