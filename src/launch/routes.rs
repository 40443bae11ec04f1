//! ltigate's own routes on the public listener — launch, continue, logout,
//! cartridge — as a layer: every other request goes on to the session gate
//! and the proxy below it.
//!
//! ```text
//! ServiceBuilder::new()
//!     .layer(OwnRoutesLayer::new(gate))
//!     .service(session_gate_and_proxy)
//! ```
//!
//! The own routes run boxed: their futures are large (a launch provisions
//! the learner), and every proxied request would otherwise carry — and
//! copy — room for them.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{Method, Request, Response};
use hyper::body::Incoming;

use tracing::Instrument as _;

use super::error::RouteError;
use super::v1p3::Lti13;
use super::{cartridge, ticket, v1p1, v1p3};
use crate::http::request_id;
use crate::http::{respond, Body};
use crate::session::Gate;

/// One of ltigate's own routes, from the method and path alone.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `POST /lti/launch`, or `/lti/launch/{course}` with the raw segment.
    Launch(Option<String>),
    /// `GET /lti/continue`.
    Continue,
    /// `POST /lti/logout`.
    Logout,
    /// `GET|HEAD /lti/cartridge.xml`.
    Cartridge,
    /// `GET|HEAD /lti/1.3/jwks.json`: the tool's public keys.
    ToolJwks,
    /// `GET|POST /lti/1.3/login`: the OIDC login initiation.
    Login13,
    /// `GET /lti/1.3/cookie-check`.
    CookieCheck,
    /// `POST /lti/1.3/launch`, or `/lti/1.3/launch/{course}` with the raw
    /// segment.
    Launch13(Option<String>),
    /// An own path with another method.
    MethodNotAllowed(RouteError),
    /// Under `/lti/launch/` but not one segment.
    NotFound,
}

/// The own route a request is for, if any.
fn route(method: &Method, path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/lti/")?;
    Some(match (method, rest) {
        (&Method::POST, "launch") => Route::Launch(None),
        (&Method::POST, r) if r.starts_with("launch/") => {
            match one_segment(&r["launch/".len()..]) {
                Some(course) => Route::Launch(Some(course)),
                None => Route::NotFound,
            }
        }
        (&Method::GET, "continue") => Route::Continue,
        (&Method::POST, "logout") => Route::Logout,
        (&Method::GET | &Method::HEAD, "cartridge.xml") => Route::Cartridge,
        (&Method::GET | &Method::HEAD, "1.3/jwks.json") => Route::ToolJwks,
        (&Method::GET | &Method::POST, "1.3/login") => Route::Login13,
        (&Method::GET, "1.3/cookie-check") => Route::CookieCheck,
        (&Method::POST, "1.3/launch") => Route::Launch13(None),
        (&Method::POST, r) if r.starts_with("1.3/launch/") => {
            match one_segment(&r["1.3/launch/".len()..]) {
                Some(course) => Route::Launch13(Some(course)),
                None => Route::NotFound,
            }
        }
        (_, r) if r == "1.3/launch" || r.starts_with("1.3/launch/") => {
            Route::MethodNotAllowed(RouteError::MethodNotAllowed {
                allow: "POST",
                message: "This address only accepts POST requests from an LMS.",
            })
        }
        (_, "1.3/login") => Route::MethodNotAllowed(RouteError::MethodNotAllowed {
            allow: "GET, POST",
            message: "Method not allowed.",
        }),
        (_, "1.3/cookie-check") => Route::MethodNotAllowed(RouteError::MethodNotAllowed {
            allow: "GET",
            message: "Method not allowed.",
        }),
        (_, r) if r == "launch" || r.starts_with("launch/") || r == "logout" => {
            Route::MethodNotAllowed(RouteError::MethodNotAllowed {
                allow: "POST",
                message: "This address only accepts POST requests from an LMS.",
            })
        }
        (_, "continue") => Route::MethodNotAllowed(RouteError::MethodNotAllowed {
            allow: "GET",
            message: "Method not allowed.",
        }),
        (_, "cartridge.xml" | "1.3/jwks.json") => {
            Route::MethodNotAllowed(RouteError::MethodNotAllowed {
                allow: "GET, HEAD",
                message: "Method not allowed.",
            })
        }
        _ => return None,
    })
}

/// A course path segment: non-empty, one segment.
fn one_segment(rest: &str) -> Option<String> {
    (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_string())
}

/// Answers one own route.
async fn serve(
    gate: Arc<Gate>,
    lti13: Arc<Lti13>,
    route: Route,
    req: Request<Incoming>,
) -> Response<Body> {
    let json = || respond::prefers_json(req.headers());
    match route {
        Route::Launch(course) => v1p1::handle(&gate, req, course.as_deref()).await,
        Route::Continue => ticket::handle_continue(&gate, req).await,
        Route::Logout => ticket::handle_logout(&gate, req).await,
        Route::Cartridge => cartridge::handle(&gate, &req),
        Route::ToolJwks => lti13.keys.jwks_response(),
        Route::Login13 => v1p3::login::handle(&gate, req).await,
        Route::CookieCheck => v1p3::login::cookie_check(&req),
        Route::Launch13(course) => {
            v1p3::verify::handle(&gate, &lti13, req, course.as_deref()).await
        }
        Route::MethodNotAllowed(e) => respond::reject(&e, json()),
        Route::NotFound => respond::reject(&RouteError::NotFound, json()),
    }
}

/// Serves ltigate's own routes, passes everything else on.
#[derive(Clone)]
pub struct OwnRoutesLayer {
    gate: Arc<Gate>,
    lti13: Arc<Lti13>,
}

impl OwnRoutesLayer {
    /// The routes of `gate`, with the LTI 1.3 side `lti13`.
    pub fn new(gate: Arc<Gate>, lti13: Arc<Lti13>) -> Self {
        OwnRoutesLayer { gate, lti13 }
    }
}

impl<S> tower::Layer<S> for OwnRoutesLayer {
    type Service = OwnRoutes<S>;

    fn layer(&self, inner: S) -> OwnRoutes<S> {
        OwnRoutes {
            gate: self.gate.clone(),
            lti13: self.lti13.clone(),
            inner,
        }
    }
}

/// The service of [`OwnRoutesLayer`].
#[derive(Clone)]
pub struct OwnRoutes<S> {
    gate: Arc<Gate>,
    lti13: Arc<Lti13>,
    inner: S,
}

/// The boxed future of an own route.
pub type OwnFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl<S> tower::Service<Request<Incoming>> for OwnRoutes<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<OwnFuture, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        match route(req.method(), req.uri().path()) {
            Some(r) => {
                let (gate, lti13) = (self.gate.clone(), self.lti13.clone());
                let span = request_id::span(request_id::of(req.headers()));
                Either::Left(Box::pin(
                    async move { Ok(serve(gate, lti13, r, req).await) }.instrument(span),
                ))
            }
            None => Either::Right(self.inner.call(req)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_routes_are_told_apart_by_method_and_path() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(route(&post, "/lti/launch"), Some(Route::Launch(None)));
        assert_eq!(
            route(&post, "/lti/launch/C%2D1"),
            Some(Route::Launch(Some("C%2D1".into())))
        );
        assert_eq!(route(&post, "/lti/launch/"), Some(Route::NotFound));
        assert_eq!(route(&post, "/lti/launch/a/b"), Some(Route::NotFound));
        assert!(matches!(
            route(&get, "/lti/launch"),
            Some(Route::MethodNotAllowed(_))
        ));
        assert_eq!(route(&get, "/lti/continue"), Some(Route::Continue));
        assert_eq!(route(&post, "/lti/logout"), Some(Route::Logout));
        assert_eq!(
            route(&Method::HEAD, "/lti/cartridge.xml"),
            Some(Route::Cartridge)
        );
        assert!(matches!(
            route(&post, "/lti/cartridge.xml"),
            Some(Route::MethodNotAllowed(_))
        ));
        assert_eq!(route(&get, "/lti/1.3/login"), Some(Route::Login13));
        assert_eq!(route(&post, "/lti/1.3/login"), Some(Route::Login13));
        assert_eq!(route(&post, "/lti/1.3/launch"), Some(Route::Launch13(None)));
        assert_eq!(
            route(&post, "/lti/1.3/launch/C-1"),
            Some(Route::Launch13(Some("C-1".into())))
        );
        assert_eq!(route(&post, "/lti/1.3/launch/a/b"), Some(Route::NotFound));
        assert!(matches!(
            route(&get, "/lti/1.3/launch"),
            Some(Route::MethodNotAllowed(_))
        ));
        assert_eq!(
            route(&get, "/lti/1.3/cookie-check"),
            Some(Route::CookieCheck)
        );
        assert_eq!(route(&get, "/lti/other"), None);
        assert_eq!(route(&get, "/courses/C-1"), None);
    }
}
