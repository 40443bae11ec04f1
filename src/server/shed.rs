//! Load shedding: at most `server.max_connections` requests in flight; the
//! next one gets a fast `503` with `Retry-After: 1` instead of a queue.
//!
//! ```text
//! ServiceBuilder::new()
//!     .layer(ShedLayer::new(settings.server.max_connections))
//!     .service(inner)
//! ```
//!
//! A request's slot is held until its response body has been sent, so
//! streaming downloads count too.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http::{respond, Body};

/// Sheds requests beyond a limit (see the module docs).
#[derive(Debug, Clone)]
pub struct ShedLayer {
    slots: Arc<Semaphore>,
}

impl ShedLayer {
    /// At most `max` requests in flight.
    pub fn new(max: usize) -> Self {
        ShedLayer {
            slots: Arc::new(Semaphore::new(max)),
        }
    }
}

impl<S> tower::Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            slots: self.slots.clone(),
        }
    }
}

/// The service of [`ShedLayer`].
#[derive(Debug, Clone)]
pub struct Shed<S> {
    inner: S,
    slots: Arc<Semaphore>,
}

impl<S, B> tower::Service<Request<B>> for Shed<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => ShedFuture {
                inner: Some(self.inner.call(req)),
                permit: Some(permit),
                json: false,
            },
            Err(_) => ShedFuture {
                inner: None,
                permit: None,
                json: respond::prefers_json(req.headers()),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Shed`]: the inner service's answer, holding
    /// the slot, or (no inner future) the 503 of a request over the limit.
    pub struct ShedFuture<F> {
        #[pin]
        inner: Option<F>,
        permit: Option<OwnedSemaphorePermit>,
        json: bool,
    }
}

impl<F, E> Future for ShedFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            let resp = respond::reject(&Overloaded, *this.json);
            return Poll::Ready(Ok(resp));
        };
        let resp = ready!(inner.poll(cx))?;
        Poll::Ready(Ok(match this.permit.take() {
            Some(p) => super::hold_until_sent(resp, p),
            None => resp,
        }))
    }
}

/// The shed's answer: 503 with `Retry-After: 1`, before any other layer
/// has run.
#[derive(Debug, Clone, Copy)]
pub struct Overloaded;

impl respond::HttpError for Overloaded {
    fn status(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }

    fn label(&self) -> &'static str {
        "overloaded"
    }

    fn message(&self) -> std::borrow::Cow<'static, str> {
        "The service is busy. Please try again in a moment.".into()
    }

    fn add_headers(&self, headers: &mut http::HeaderMap) {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
}
