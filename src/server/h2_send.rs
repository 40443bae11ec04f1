//! The send timeout for each HTTP/2 stream.
//!
//! On HTTP/1.1 a client that stops reading stops reading the connection,
//! which [`super::SendTimeout`] sees. On HTTP/2 it can keep reading the
//! connection and leave one stream's flow-control window shut: hyper then
//! waits for the window without asking the response body for more, and the
//! stream would hold its request slot, its upstream connection and the
//! upstream's worker writing into it for ever. So every stream runs under
//! [`StreamExecutor`]: once its response body has handed hyper a frame that
//! hyper has not sent on for the send timeout, the stream is dropped, which
//! resets it (`RST_STREAM`) and frees what it held; the connection and its
//! other streams go on.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

tokio::task_local! {
    /// The HTTP/2 stream being polled.
    static STREAM: Arc<SendWait>;
}

/// Whether one stream's response is waiting for the client: its body has
/// handed hyper a frame and has not been asked for the next one since.
pub(super) struct SendWait {
    origin: Instant,
    /// Milliseconds after `origin`, plus one, when the body handed over its
    /// last frame; 0 while hyper is not waiting to send one.
    since_ms: AtomicU64,
}

impl SendWait {
    fn new() -> Self {
        SendWait {
            origin: Instant::now(),
            since_ms: AtomicU64::new(0),
        }
    }

    /// The stream being polled, when on an HTTP/2 connection.
    pub(super) fn current() -> Option<Arc<SendWait>> {
        STREAM.try_with(Arc::clone).ok()
    }

    /// The body handed hyper a frame.
    pub(super) fn handed_over(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.since_ms.store(ms + 1, Ordering::Relaxed);
    }

    /// hyper asked the body for more: what it had is on its way.
    pub(super) fn asked(&self) {
        self.since_ms.store(0, Ordering::Relaxed);
    }

    fn waiting_since(&self) -> Option<Instant> {
        match self.since_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.origin + Duration::from_millis(ms - 1)),
        }
    }
}

/// Spawns hyper's HTTP/2 streams, each under the send timeout.
#[derive(Clone, Copy)]
pub(super) struct StreamExecutor {
    pub(super) send_timeout: Duration,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(Watched {
            inner: fut,
            wait: Arc::new(SendWait::new()),
            limit: self.send_timeout,
            timer: None,
        });
    }
}

pin_project_lite::pin_project! {
    /// One stream's future, dropped once its response has waited for the
    /// client for the limit.
    struct Watched<F> {
        #[pin]
        inner: F,
        wait: Arc<SendWait>,
        limit: Duration,
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<F> Future for Watched<F>
where
    F: Future<Output = ()>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let inner = this.inner;
        if STREAM
            .sync_scope(this.wait.clone(), || inner.poll(cx))
            .is_ready()
        {
            return Poll::Ready(());
        }
        let Some(since) = this.wait.waiting_since() else {
            return Poll::Pending;
        };
        let deadline = since + *this.limit;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_ready() {
            tracing::debug!(limit = ?this.limit, "the client took nothing of an HTTP/2 stream for the send timeout; resetting it");
            return Poll::Ready(());
        }
        Poll::Pending
    }
}
