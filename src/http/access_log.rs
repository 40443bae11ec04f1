//! The access log: one line per public request, when its response has been
//! sent (or abandoned), on the `ltigate::access` target.
//!
//! ```text
//! ServiceBuilder::new()
//!     .layer(RequestIdLayer::new(trust))
//!     .option_layer(settings.server.access_log.then(AccessLogLayer::new))
//!     .service(inner)
//! ```
//!
//! Fields: `request_id`, `method`, `path` (never the query string),
//! `version`, `status`, `duration_ms` (until the last byte of the body),
//! `bytes_in` (the declared request length), `bytes_out` (response body
//! bytes sent), `tenant` and `user` (the external ID) when the request had
//! a session or launched one ([`LogIdentity`]), and `reason` when it was
//! refused ([`LogReason`]). Never a cookie, a ticket, a signature, a token
//! or a query string. JSON under `LTIGATE_LOG_FORMAT=json`, like every
//! other log line.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{HeaderValue, Method, Request, Response, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokio::time::Instant;

use super::request_id;
use super::{Body, BoxError};

/// Who the request was for, put in the response's extensions by the part
/// that knows (the session gate, a launch).
#[derive(Debug, Clone)]
pub struct LogIdentity {
    /// The tenant's name.
    pub tenant: String,
    /// The learner's external ID.
    pub external_id: String,
}

/// Why a request was refused: the stable label of its error
/// ([`super::respond::error`] sets it).
#[derive(Debug, Clone, Copy)]
pub struct LogReason(pub &'static str);

/// Writes one access-log line per request (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLogLayer;

impl AccessLogLayer {
    /// The layer.
    pub fn new() -> Self {
        AccessLogLayer
    }
}

impl<S> tower::Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog { inner }
    }
}

/// The service of [`AccessLogLayer`].
#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
}

/// What is known of a request when it arrives.
struct Started {
    at: Instant,
    method: Method,
    path: String,
    version: Version,
    request_id: Option<HeaderValue>,
    bytes_in: Option<u64>,
}

impl<S, B> tower::Service<Request<B>> for AccessLog<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = AccessLogFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = Started {
            at: Instant::now(),
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            version: req.version(),
            request_id: request_id::of(req.headers()).cloned(),
            bytes_in: req
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        };
        AccessLogFuture {
            inner: self.inner.call(req),
            started: Some(started),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`AccessLog`].
    pub struct AccessLogFuture<F> {
        #[pin]
        inner: F,
        started: Option<Started>,
    }
}

impl<F, E> Future for AccessLogFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = ready!(this.inner.poll(cx))?;
        let Some(started) = this.started.take() else {
            return Poll::Ready(Ok(resp));
        };
        let (mut parts, body) = resp.into_parts();
        let line = Line {
            started,
            status: parts.status.as_u16(),
            identity: parts.extensions.remove::<LogIdentity>(),
            reason: parts.extensions.get::<LogReason>().map(|r| r.0),
            bytes_out: 0,
        };
        let body = LoggedBody {
            inner: body,
            line: Some(line),
        };
        Poll::Ready(Ok(Response::from_parts(parts, body.boxed())))
    }
}

/// One access-log line, written when the body is done with.
struct Line {
    started: Started,
    status: u16,
    identity: Option<LogIdentity>,
    reason: Option<&'static str>,
    bytes_out: u64,
}

impl Line {
    fn write(self) {
        let s = &self.started;
        let (tenant, user) = match &self.identity {
            Some(i) => (i.tenant.as_str(), i.external_id.as_str()),
            None => ("", ""),
        };
        tracing::info!(
            target: "ltigate::access",
            request_id = s.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
            method = s.method.as_str(),
            path = s.path.as_str(),
            version = ?s.version,
            status = self.status,
            duration_ms = s.at.elapsed().as_secs_f64() * 1000.0,
            bytes_in = s.bytes_in,
            bytes_out = self.bytes_out,
            tenant,
            user,
            reason = self.reason.unwrap_or(""),
            "access"
        );
    }
}

/// The response body, counting what is sent; the line is written when the
/// body ends or is dropped (the client went away).
struct LoggedBody {
    inner: Body,
    line: Option<Line>,
}

impl HttpBody for LoggedBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let (Some(data), Some(line)) = (f.data_ref(), self.line.as_mut()) {
                    line.bytes_out += data.len() as u64;
                }
            }
            Some(Err(_)) | None => {
                if let Some(line) = self.line.take() {
                    line.write();
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(line) = self.line.take() {
            line.write();
        }
    }
}
