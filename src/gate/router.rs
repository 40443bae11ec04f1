//! Routing of the public listener: ltigate's own `/lti/…` routes, then the
//! session gate in front of the proxy for everything else.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::proxy::ClientConn;
use super::{launch, tickets, Gate};
use crate::http::{respond, Body};

/// The public application behind the listener's limits.
pub struct Public {
    /// The public side's state.
    pub gate: Arc<Gate>,
    /// The session gate and proxy.
    pub proxy: super::proxy::Proxy,
}

/// Routes one public request of `client`. ltigate's own routes run boxed:
/// their futures are large (a launch provisions the learner), and every
/// proxied request would otherwise carry — and copy — room for them.
pub async fn route(
    public: &Public,
    req: Request<Incoming>,
    client: &Arc<ClientConn>,
) -> Response<Body> {
    let app = &public.gate;
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/lti/") {
        match (req.method(), rest) {
            (&Method::POST, "launch") => return Box::pin(launch::handle(app, req, None)).await,
            (&Method::POST, r) if r.starts_with("launch/") => {
                let course = r["launch/".len()..].to_string();
                if course.is_empty() || course.contains('/') {
                    return not_found(&req);
                }
                return Box::pin(launch::handle(app, req, Some(&course))).await;
            }
            (&Method::GET, "continue") => {
                return Box::pin(tickets::handle_continue(app, req)).await
            }
            (&Method::POST, "logout") => return Box::pin(tickets::handle_logout(app, req)).await,
            (&Method::GET | &Method::HEAD, "cartridge.xml") => {
                return super::cartridge::handle(app, &req)
            }
            (_, r) if r == "launch" || r.starts_with("launch/") || r == "logout" => {
                return respond::error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "This address only accepts POST requests from an LMS.",
                    respond::prefers_json(req.headers()),
                )
            }
            (_, "continue" | "cartridge.xml") => {
                return respond::error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "Method not allowed.",
                    respond::prefers_json(req.headers()),
                )
            }
            _ => {}
        }
    }
    public.proxy.handle(req, client).await
}

fn not_found<B>(req: &Request<B>) -> Response<Body> {
    respond::error(
        StatusCode::NOT_FOUND,
        "not_found",
        "Not found.",
        respond::prefers_json(req.headers()),
    )
}
