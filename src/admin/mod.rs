//! The admin listener: `/healthz`, `/readyz`, `/status`, `/metrics`, the
//! completion webhook ([`crate::outcomes::webhook`]), the outbox routes,
//! `GET /.well-known/jwks.json` (the public keys of the signed identity
//! assertion, for the upstream) and `POST /jwks/refresh` (drops the
//! platforms' cached key sets).
//!
//! Readiness means "can proxy": it does not depend on the store, because
//! sessions keep working through a store outage and taking pods out of the
//! Service would turn a partial outage into a full one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};

use crate::http::{respond, AppState, Body};
use crate::launch::jwks::JwksCache;
use crate::lti::jose::JwkSet;
use crate::session::assertion::AssertionKeys;

pub mod client;
mod error;
mod outbox;

pub use error::AdminError;

/// Admin-side shared state.
pub struct Admin {
    /// The application state.
    pub app: Arc<AppState>,
    /// The platforms' cached key sets (`POST /jwks/refresh` drops them).
    pub platform_keys: Arc<JwksCache<JwkSet>>,
    /// The signed identity assertion's keys (`GET /.well-known/jwks.json`),
    /// when `session.assertion` is on.
    pub assertion_keys: Option<Arc<AssertionKeys>>,
    /// True once both listeners are bound.
    pub ready: AtomicBool,
}

/// Routes an admin request; a refusal is an [`AdminError`], answered as
/// JSON.
pub async fn handle<B>(admin: &Admin, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<crate::http::BoxError>,
{
    route(admin, req)
        .await
        .unwrap_or_else(|refused| respond::reject(&refused, true))
}

/// Every admin route (the webhook answers for itself).
async fn route<B>(admin: &Admin, req: Request<B>) -> Result<Response<Body>, AdminError>
where
    B: http_body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<crate::http::BoxError>,
{
    let path = req.uri().path().to_string();
    Ok(match (req.method(), path.as_str()) {
        (&Method::POST, "/webhooks/completion") => {
            crate::outcomes::webhook::handle(&admin.app, &admin.app.outbox_notify, req).await
        }
        (&Method::GET, "/outbox") => outbox::list(admin).await?,
        (&Method::POST, "/outbox/retry") => outbox::retry(admin, req).await?,
        (&Method::GET | &Method::HEAD, "/healthz") => respond::text(StatusCode::OK, "ok\n"),
        (&Method::GET | &Method::HEAD, "/readyz") => {
            if admin.ready.load(Ordering::Acquire) {
                respond::text(StatusCode::OK, "ready\n")
            } else {
                respond::text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
            }
        }
        (&Method::GET, "/status") => status(admin).await,
        (&Method::GET, "/metrics") => metrics(admin),
        (&Method::GET | &Method::HEAD, "/.well-known/jwks.json") => match &admin.assertion_keys {
            Some(keys) => keys.jwks_response(),
            None => return Err(AdminError::AssertionOff),
        },
        (&Method::POST, "/jwks/refresh") => {
            admin.platform_keys.clear();
            tracing::info!("the platforms' cached key sets were dropped");
            respond::json(StatusCode::OK, &serde_json::json!({"status": "dropped"}))
        }
        (
            _,
            "/healthz"
            | "/readyz"
            | "/status"
            | "/metrics"
            | "/webhooks/completion"
            | "/outbox"
            | "/outbox/retry"
            | "/.well-known/jwks.json"
            | "/jwks/refresh",
        ) => return Err(AdminError::MethodNotAllowed),
        _ => return Err(AdminError::NotFound),
    })
}

/// `GET /metrics`: the Prometheus text exposition.
fn metrics(admin: &Admin) -> Response<Body> {
    let mut resp = respond::text(StatusCode::OK, admin.app.metrics.render());
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

async fn status(admin: &Admin) -> Response<Body> {
    let app = &admin.app;
    let store = match tokio::time::timeout(Duration::from_secs(3), app.store.ping()).await {
        Ok(Ok(())) => {
            app.metrics.store_ok();
            "ok"
        }
        Ok(Err(_)) | Err(_) => {
            app.metrics.store_failed("ping");
            "down"
        }
    };
    let upstream = if upstream_reachable(&app.settings.upstream.url).await {
        "ok"
    } else {
        "down"
    };
    if let Ok(stats) = app.store.outbox_stats().await {
        app.metrics.set_outbox(&stats);
    }
    let body = serde_json::json!({
        "store": store,
        "store_backend": app.store.backend(),
        "upstream": upstream,
        "outbox": {
            "depth": app.metrics.outbox_depth.get(),
            "dead": app.metrics.outbox_dead.get(),
            "oldest_age_seconds": app.metrics.outbox_oldest_age.get().round() as u64,
        },
        "version": env!("CARGO_PKG_VERSION"),
    });
    respond::json(StatusCode::OK, &body)
}

/// A TCP connection check to the upstream's host and port.
async fn upstream_reachable(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect((host, port))
        )
        .await,
        Ok(Ok(_))
    )
}

/// Probes the store every few seconds so `ltigate_store_up` follows
/// outages and recoveries even without traffic.
pub async fn store_probe(app: Arc<AppState>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match tokio::time::timeout(Duration::from_secs(3), app.store.ping()).await {
            Ok(Ok(())) => app.metrics.store_ok(),
            _ => app.metrics.store_failed("ping"),
        }
    }
}
