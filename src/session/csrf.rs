//! The CSRF guard ([`CsrfLayer`], `session.csrf`): no unsafe cross-site
//! request and no cross-origin WebSocket rides on the session cookie.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::header;
use http::{HeaderMap, Method, Response};

use super::gate::{rejection, Carrier, Ready};
use super::model::SessionRejection;
use super::Gate;
use crate::http::{is_websocket_upgrade, request_id, Body};

/// Is this request an unsafe cross-site one? Unsafe: any method but GET,
/// HEAD, OPTIONS and TRACE, and every WebSocket handshake (the browser
/// sends the cookie with it whoever opens it). Cross-site:
/// `Sec-Fetch-Site: cross-site`, or an `Origin` (`null` included) other
/// than the public origin.
pub fn is_cross_site(method: &Method, headers: &HeaderMap, public_origin: &str) -> bool {
    let unsafe_method = !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    if !unsafe_method && !is_websocket_upgrade(headers) {
        return false;
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return true;
    }
    headers
        .get(header::ORIGIN)
        .is_some_and(|o| !o.as_bytes().eq_ignore_ascii_case(public_origin.as_bytes()))
}

/// The CSRF guard (`session.csrf`): refuses unsafe cross-site requests
/// with 403 before they reach the upstream with the learner's identity.
#[derive(Clone)]
pub struct CsrfLayer {
    shared: Arc<CsrfShared>,
}

struct CsrfShared {
    enabled: bool,
    public_origin: String,
    rejected: prometheus::IntCounter,
}

impl CsrfLayer {
    /// The guard for the configured public origin.
    pub fn new(app: &Gate) -> Self {
        CsrfLayer {
            shared: Arc::new(CsrfShared {
                enabled: app.settings.session.csrf,
                public_origin: app.settings.server.public_url.origin(),
                rejected: app
                    .metrics
                    .session_rejections
                    .with_label_values(&[SessionRejection::Csrf.label()]),
            }),
        }
    }
}

impl<S> tower::Layer<S> for CsrfLayer {
    type Service = CsrfGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CsrfGuard {
            shared: self.shared.clone(),
            inner,
        }
    }
}

/// The service of [`CsrfLayer`].
#[derive(Clone)]
pub struct CsrfGuard<S> {
    shared: Arc<CsrfShared>,
    inner: S,
}

impl<S, R> tower::Service<R> for CsrfGuard<S>
where
    R: Carrier,
    S: tower::Service<R, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let s = &self.shared;
        let (method, path, headers) = req.head();
        if s.enabled && is_cross_site(method, headers, &s.public_origin) {
            s.rejected.inc();
            let _span = request_id::span(request_id::of(headers)).entered();
            tracing::info!(
                %method,
                path,
                "refused a cross-site request"
            );
            return Either::Left(std::future::ready(Ok(rejection(
                SessionRejection::Csrf,
                req.json(),
            ))));
        }
        Either::Right(self.inner.call(req))
    }
}
