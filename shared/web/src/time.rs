//! Time limits on work that is usually done at once.
//!
//! On the hot paths (a webhook whose tenant and rules are cached, a body that arrived with its
//! headers) the work is ready at its first poll, and a `tokio::time::timeout` around it would
//! still read the clock and clone the runtime's handle (an atomic both worker threads write) for a
//! timer that is never armed. These helpers poll the work once first and only set the limit when
//! it has to wait.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The work was still waiting when its time was up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the time limit passed before the work was done")]
pub struct TimedOut;

/// When an [`UnlessReady`] gives up.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// This long after the first poll that finds the work waiting.
    After(Duration),
    /// At this instant.
    At(Instant),
}

pin_project_lite::pin_project! {
    /// `work` with a time limit that is only armed once the work has to wait.
    ///
    /// A hand-written future rather than an `async fn`: an `async fn` keeps the work it is given
    /// as an argument and again as the local it polls, so each such layer doubled the size of the
    /// webhook path's future, and every move of that future (into its task, into a box) copied
    /// the doubled bytes. This one holds the work once, and the timer only when it is armed.
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct UnlessReady<F> {
        #[pin]
        work: F,
        limit: Limit,
        #[pin]
        timer: Option<Sleep>,
    }
}

impl<F: Future> Future for UnlessReady<F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // The work first, as tokio's timeout does: work that is done is done, even late.
        if let Poll::Ready(output) = this.work.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        if this.timer.is_none() {
            let deadline = match *this.limit {
                Limit::After(limit) => Instant::now() + limit,
                Limit::At(deadline) => deadline,
            };
            this.timer.set(Some(tokio::time::sleep_until(deadline)));
        }
        match this.timer.as_pin_mut() {
            Some(timer) => {
                ready!(timer.poll(cx));
                Poll::Ready(Err(TimedOut))
            }
            None => Poll::Pending,
        }
    }
}

/// As `tokio::time::timeout(limit, work)`; the time starts at the first poll that finds the work
/// waiting.
pub fn timeout_unless_ready<F: Future>(limit: Duration, work: F) -> UnlessReady<F> {
    UnlessReady {
        work,
        limit: Limit::After(limit),
        timer: None,
    }
}

/// As `tokio::time::timeout_at(deadline, work)`.
pub fn timeout_at_unless_ready<F: Future>(deadline: Instant, work: F) -> UnlessReady<F> {
    UnlessReady {
        work,
        limit: Limit::At(deadline),
        timer: None,
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
            timeout_at_unless_ready(Instant::now() + Duration::from_secs(60), soon).await,
            Ok(())
        );
        let soon = tokio::time::sleep(Duration::from_millis(10));
        assert_eq!(
            timeout_unless_ready(Duration::from_secs(60), soon).await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn the_time_starts_when_the_work_first_waits() {
        let limited = timeout_unless_ready(
            Duration::from_millis(300),
            tokio::time::sleep(Duration::from_secs(60)),
        );
        // Made 200 ms before it is first polled: a limit that started then would be up after 100.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        assert_eq!(limited.await, Err(TimedOut));
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn the_limit_holds_the_work_once() {
        let work = async {
            let big = [7_u8; 4096];
            tokio::task::yield_now().await;
            std::hint::black_box(big);
        };
        let work_size = std::mem::size_of_val(&work);
        assert!(work_size >= 4096);
        let limited = timeout_unless_ready(Duration::from_secs(1), work);
        // The work, the limit and an optional timer: not the work twice, as an `async fn` kept it.
        assert!(
            std::mem::size_of_val(&limited)
                <= work_size + std::mem::size_of::<Option<Sleep>>() + 32,
            "{} for work of {work_size}",
            std::mem::size_of_val(&limited)
        );
    }
}
