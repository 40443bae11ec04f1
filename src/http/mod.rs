//! What every part shares: the application state, the response body type,
//! the error → response rendering ([`respond`]) and small request helpers.
//! It imports nothing from the parts above it (launch, session, proxy,
//! outcomes, admin).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Request, Response};

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::provision::Provisioner;
use crate::store::SharedStore;

pub mod access_log;
pub mod request_id;
pub mod respond;

/// Error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body ltigate produces.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// What every request handler shares. Built once at start-up.
pub struct AppState {
    /// Validated settings.
    pub settings: Arc<Settings>,
    /// The store.
    pub store: SharedStore,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Upstream API client.
    pub provisioner: Provisioner,
    /// Wakes the outbox worker when a job becomes due.
    pub outbox_notify: Arc<tokio::sync::Notify>,
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl AppState {
    /// The public path of the course landing page (prefix included).
    pub fn landing_path(&self, course: &str) -> String {
        let template = self
            .settings
            .courses
            .get(course)
            .and_then(|c| c.landing_path.as_deref())
            .unwrap_or(&self.settings.upstream.landing_path);
        format!(
            "{}{}",
            self.settings.server.public_url.prefix,
            crate::provision::fill_template(template, &[("course", course)])
        )
    }

    /// The public path of an ltigate route (prefix included).
    pub fn public_path(&self, path: &str) -> String {
        format!("{}{}", self.settings.server.public_url.prefix, path)
    }
}

/// Query parameters of a request (strictly decoded; malformed → empty).
pub fn query_pairs<B>(req: &Request<B>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .and_then(|q| crate::lti::encode::parse_form(q.as_bytes()).ok())
        .unwrap_or_default()
}

/// A response with a header appended (invalid values are skipped).
pub fn with_header(
    mut resp: Response<Body>,
    name: http::HeaderName,
    value: &str,
) -> Response<Body> {
    if let Ok(v) = http::HeaderValue::from_str(value) {
        resp.headers_mut().append(name, v);
    }
    resp
}

/// Decodes one percent-encoded path segment strictly (`+` stays `+`).
pub fn decode_path_segment(raw: &str) -> Result<String, &'static str> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("bad percent-encoding")?;
                out.push(hex);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "not valid UTF-8")
}

/// The comma-separated tokens of every `Connection` header, as bytes: a
/// value with other bytes than visible ASCII still names its headers.
pub fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Is this request a WebSocket handshake (`Connection: upgrade` and
/// `Upgrade: websocket`)? Other upgrades are not forwarded.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(b"upgrade"))
}
