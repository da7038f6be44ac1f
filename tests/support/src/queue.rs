//! Edit jobs as the webhook function queues them, and a queue that records the jobs it is given
//! and can be made to fail as a queue that is down.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use understudy_core::{Edit, RestrictedPagePolicy, WebhookEvent};
use understudy_domain::{ClientKey, PageId};
use understudy_queue::{EditJobMessage, EditQueue, QueueError};

/// The job `job_id` for an update of `page` (to version 1) on the site `client_key`: the rule `r`
/// appends `<p>x</p>`, restricted pages are edited as nobody in particular (no user).
pub fn edit_job(client_key: &str, page: &str, job_id: &str) -> EditJobMessage {
    EditJobMessage {
        job_id: job_id.to_owned(),
        client_key: ClientKey::parse(client_key).unwrap_or_else(|e| panic!("clientKey: {e}")),
        page_id: PageId::parse(page).unwrap_or_else(|e| panic!("page id: {e}")),
        event: WebhookEvent::PageUpdated,
        page_version: Some(1),
        user: None,
        policy: RestrictedPagePolicy::Impersonate,
        edit: Edit::from_json(r#"[{"append": "<p>x</p>"}]"#)
            .unwrap_or_else(|e| panic!("edit: {e}")),
        rules: vec!["r".into()],
        accepted_at: 0,
        forge_installation: None,
    }
}

/// Keeps every job in order; refuses them while [`RecordingQueue::set_down`] says so.
#[derive(Debug, Default)]
pub struct RecordingQueue {
    jobs: Mutex<Vec<EditJobMessage>>,
    down: AtomicBool,
}

impl RecordingQueue {
    /// The jobs queued so far.
    pub fn jobs(&self) -> Vec<EditJobMessage> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes the queue unavailable (`true`) or available again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

#[async_trait]
impl EditQueue for RecordingQueue {
    async fn enqueue(&self, job: &EditJobMessage) -> Result<(), QueueError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(QueueError::Unavailable("queue is down".into()));
        }
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(job.clone());
        Ok(())
    }
}
