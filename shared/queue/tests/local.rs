//! The local queue keeps the promises the worker relies on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use understudy_confluence::{Edit, RestrictedPagePolicy};
use understudy_domain::{ClientKey, PageId};
use understudy_queue::{EditJobMessage, EditQueue, LocalQueue};

fn job(tenant: &str, page: &str, id: &str) -> EditJobMessage {
    EditJobMessage {
        job_id: id.to_owned(),
        client_key: ClientKey::parse(tenant).unwrap(),
        page_id: PageId::parse(page).unwrap(),
        event: "page_updated".into(),
        page_version: Some(2),
        user: None,
        policy: RestrictedPagePolicy::Impersonate,
        edit: Edit::from_json(r#"[{"append": "<p>x</p>"}]"#).unwrap(),
        rules: vec!["r".into()],
        accepted_at: 0,
    }
}

#[tokio::test]
async fn jobs_of_one_page_wait_for_the_earlier_one_while_other_pages_go_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let q = LocalQueue::open(dir.path()).unwrap();
    q.enqueue(&job("t1", "1", "a")).await.unwrap();
    q.enqueue(&job("t1", "1", "b")).await.unwrap();
    q.enqueue(&job("t1", "2", "c")).await.unwrap();

    let first = q.lease(1_000, 30_000).await.unwrap().unwrap();
    assert_eq!(first.message.job_id, "a");
    assert_eq!(first.receives, 1);
    // Page 1 is busy: the next lease is page 2's job, not "b".
    let second = q.lease(1_000, 30_000).await.unwrap().unwrap();
    assert_eq!(second.message.job_id, "c");
    assert!(q.lease(1_000, 30_000).await.unwrap().is_none());

    // "a" fails for a passing reason: it comes back later, still ahead of "b".
    q.retry_later(first.seq, 5_000).await.unwrap();
    assert!(q.lease(2_000, 30_000).await.unwrap().is_none());
    let again = q.lease(5_000, 30_000).await.unwrap().unwrap();
    assert_eq!((again.message.job_id.as_str(), again.receives), ("a", 2));
    q.complete(again.seq).await.unwrap();
    assert_eq!(
        q.lease(5_000, 30_000)
            .await
            .unwrap()
            .unwrap()
            .message
            .job_id,
        "b"
    );
}

#[tokio::test]
async fn a_lease_that_is_never_finished_comes_back_after_its_visibility() {
    let dir = tempfile::tempdir().unwrap();
    let q = LocalQueue::open(dir.path()).unwrap();
    q.enqueue(&job("t1", "1", "a")).await.unwrap();
    q.lease(0, 1_000).await.unwrap().unwrap();
    assert!(q.lease(999, 1_000).await.unwrap().is_none());
    assert_eq!(q.lease(1_000, 1_000).await.unwrap().unwrap().receives, 2);
}

#[tokio::test]
async fn dead_letters_keep_the_job_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let q = LocalQueue::open(dir.path()).unwrap();
    q.enqueue(&job("t1", "1", "a")).await.unwrap();
    let lease = q.lease(0, 1_000).await.unwrap().unwrap();
    q.dead_letter(lease.seq, "kept failing: rate limited")
        .await
        .unwrap();
    assert_eq!(q.pending().await.unwrap(), 0);
    let dead = q.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0.job_id, "a");
    assert_eq!(dead[0].1, "kept failing: rate limited");
    // A new job does not reuse the dead job's place.
    q.enqueue(&job("t1", "1", "b")).await.unwrap();
    assert_eq!(q.dead_letters().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_restart_resumes_queued_and_leased_jobs() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = LocalQueue::open(dir.path()).unwrap();
        q.enqueue(&job("t1", "1", "a")).await.unwrap();
        q.enqueue(&job("t1", "2", "b")).await.unwrap();
        q.lease(0, 60_000).await.unwrap().unwrap();
    }
    let q = LocalQueue::open(dir.path()).unwrap();
    assert_eq!(q.pending().await.unwrap(), 2);
    let lease = q.lease(1, 60_000).await.unwrap().unwrap();
    assert_eq!((lease.message.job_id.as_str(), lease.receives), ("a", 2));
}

#[test]
fn sqs_ids_carry_no_client_key_and_fit_sqs_limits() {
    let long = "k".repeat(256);
    let j = job(
        &long,
        "12345678901234567890",
        "page_updated:12345678901234567890:7",
    );
    assert!(j.group_id().len() <= 128 && !j.group_id().contains("kkkk"));
    assert!(j.deduplication_id().len() <= 128);
    assert_ne!(
        job("t1", "1", "x").group_id(),
        job("t2", "1", "x").group_id()
    );
    assert_eq!(
        job("t1", "1", "x").group_id(),
        job("t1", "1", "y").group_id()
    );
    assert_ne!(
        job("t1", "1", "x").deduplication_id(),
        job("t2", "1", "x").deduplication_id()
    );
}

#[tokio::test]
async fn concurrent_enqueues_share_commits_and_every_one_lands_once() {
    let dir = tempfile::tempdir().unwrap();
    let q = LocalQueue::open(dir.path()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            q.enqueue(&job("t1", &i.to_string(), &format!("j{i}")))
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(q.pending().await.unwrap(), 200);
    let mut seen = std::collections::HashSet::new();
    while let Some(lease) = q.lease(0, 60_000).await.unwrap() {
        assert!(
            seen.insert(lease.message.job_id.clone()),
            "{} twice",
            lease.message.job_id
        );
        q.complete(lease.seq).await.unwrap();
    }
    assert_eq!(seen.len(), 200);
}
