//! A bound on how long one side of a stream may go without progress.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Times the current wait of a stream: [`Stall::poll_waited`] when an
/// operation returned `Pending`, [`Stall::progressed`] when one made
/// progress. Only consecutive waiting counts, so a slow stream that keeps
/// moving never runs out, however long it takes in all. The timer is made
/// the first time a wait happens (most streams never wait).
pub struct Stall {
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` is counting the current wait.
    waiting: bool,
}

impl Stall {
    /// A bound of `limit` on each wait.
    pub fn new(limit: Duration) -> Self {
        Stall {
            limit,
            timer: None,
            waiting: false,
        }
    }

    /// The bound.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Called after an operation returned `Pending`: `Ready` once this wait
    /// has lasted the limit (else the task is woken when it will have).
    pub fn poll_waited(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if !std::mem::replace(&mut self.waiting, true) {
            timer.as_mut().reset(Instant::now() + limit);
        }
        timer.as_mut().poll(cx)
    }

    /// The stream moved: the next wait counts from its own start.
    pub fn progressed(&mut self) {
        self.waiting = false;
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::task::Poll;
    use std::time::Duration;

    use super::Stall;

    /// Polls `poll_waited` once.
    async fn waited(stall: &mut Stall) -> bool {
        poll_fn(|cx| Poll::Ready(stall.poll_waited(cx).is_ready())).await
    }

    #[tokio::test(start_paused = true)]
    async fn only_consecutive_waiting_counts() {
        let mut stall = Stall::new(Duration::from_secs(10));
        assert!(!waited(&mut stall).await);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!waited(&mut stall).await);
        // Progress: the next wait starts from zero.
        stall.progressed();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!waited(&mut stall).await);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!waited(&mut stall).await);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(waited(&mut stall).await);
    }

    #[tokio::test(start_paused = true)]
    async fn time_between_waits_does_not_count() {
        let mut stall = Stall::new(Duration::from_secs(10));
        assert!(!waited(&mut stall).await);
        stall.progressed();
        // Nothing asked for an hour (the other side was slow), then a wait.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(!waited(&mut stall).await);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(waited(&mut stall).await);
    }
}
