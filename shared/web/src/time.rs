//! Time limits on work that is usually done at once.
//!
//! On the hot paths (a webhook whose tenant and rules are cached, a body that arrived with its
//! headers) the work is ready at its first poll, and a `tokio::time::timeout` around it would
//! still read the clock and clone the runtime's handle (an atomic both worker threads write) for a
//! timer that is never armed. These helpers poll the work once first and only set the limit when
//! it has to wait.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;
use tokio::time::error::Elapsed;

/// `work`'s output if it is ready at its first poll.
async fn ready_now<F: Future>(work: Pin<&mut F>) -> Option<F::Output> {
    let mut work = Some(work);
    std::future::poll_fn(|cx| {
        Poll::Ready(match work.take() {
            Some(work) => match work.poll(cx) {
                Poll::Ready(output) => Some(output),
                Poll::Pending => None,
            },
            None => None,
        })
    })
    .await
}

/// As `tokio::time::timeout(limit, work)`; the time starts at the first poll that finds the work
/// waiting.
pub async fn timeout_unless_ready<F: Future>(
    limit: Duration,
    work: F,
) -> Result<F::Output, Elapsed> {
    let mut work = pin!(work);
    match ready_now(work.as_mut()).await {
        Some(output) => Ok(output),
        None => tokio::time::timeout(limit, work).await,
    }
}

/// As `tokio::time::timeout_at(deadline, work)`.
pub async fn timeout_at_unless_ready<F: Future>(
    deadline: Instant,
    work: F,
) -> Result<F::Output, Elapsed> {
    let mut work = pin!(work);
    match ready_now(work.as_mut()).await {
        Some(output) => Ok(output),
        None => tokio::time::timeout_at(deadline, work).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_work_needs_no_timer_and_waiting_work_gets_one() {
        assert_eq!(
            timeout_unless_ready(Duration::from_secs(1), async { 7 }).await,
            Ok(7)
        );
        // Already past its deadline, but ready: done, as tokio's timeout does too.
        let past = Instant::now() - Duration::from_secs(1);
        assert_eq!(timeout_at_unless_ready(past, async { 8 }).await, Ok(8));

        let slow = tokio::time::sleep(Duration::from_secs(60));
        assert!(
            timeout_unless_ready(Duration::from_millis(20), slow)
                .await
                .is_err()
        );
        let slow = tokio::time::sleep(Duration::from_secs(60));
        assert!(
            timeout_at_unless_ready(Instant::now() + Duration::from_millis(20), slow)
                .await
                .is_err()
        );
        // Waiting at first, then done within the limit.
        let soon = tokio::time::sleep(Duration::from_millis(10));
        assert_eq!(
            timeout_unless_ready(Duration::from_secs(60), soon).await,
            Ok(())
        );
    }
}
