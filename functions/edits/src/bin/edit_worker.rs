//! The edit worker on AWS Lambda: SQS FIFO batches in, partial batch failures out.

use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use connect_auth::SystemClock;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use understudy_edits::WorkerConfig;
use understudy_edits::worker::{EditWorker, SqsRedelivery, handle_sqs_batch};
use understudy_queue::SqsQueue;
use understudy_web::lambda;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config: WorkerConfig = lambda::start()?;
    let app = config.deployed.app;
    let sdk = understudy_store::load_aws_config().await;
    let store = Arc::new(config.deployed.store.open(&sdk));
    let engine = understudy_edits::engine(config.client, store.clone(), &app.app_key)?;
    let worker = Arc::new(
        EditWorker::new(store, engine, SystemClock, config.max_receives)
            .with_tenant_share(Some(config.tenant_jobs_per_minute)),
    );
    let queue = Arc::new(SqsRedelivery {
        edits: SqsQueue::from_sdk((&sdk).into(), config.edit_queue_url),
        dead_letters: SqsQueue::from_sdk((&sdk).into(), config.dead_letter_queue_url),
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let (worker, queue) = (worker.clone(), queue.clone());
        async move {
            Ok::<_, Error>(handle_sqs_batch(&*worker, event.payload, Some(&*queue)).await)
        }
    }))
    .await
}
