//! The header policy (DESIGN §4), built once at start-up: what the upstream
//! may see of a request, and what the browser may see of a response.
//!
//! Request side, in this order — first everything a client could use to
//! forge identity or confuse the upstream is removed:
//!
//! 1. `Connection` and every header it names, then the hop-by-hop set
//!    (RFC 9110 §7.6.1). A WebSocket handshake gets `Connection: upgrade` +
//!    `Upgrade: websocket` back; any other upgrade (`h2c`, …) is dropped,
//!    since a tunnel would carry later requests past this policy.
//! 2. Every name starting with the identity prefix, compared
//!    case-insensitively with `_` as `-` (CGI/PHP/WSGI upstreams map
//!    `X_LTI_User` and `X-LTI-User` to one variable).
//! 3. Unless a trusted proxy is in front: `Forwarded`, `X-Forwarded-*`,
//!    `X-Real-IP`, `X-Original-URL`, `X-Rewrite-URL`, `True-Client-IP`,
//!    `Client-IP`, `X-Client-IP`, `X-Request-Id` (also with `_` for `-`).
//! 4. ltigate's own cookie from `Cookie`.
//!
//! Only then are `X-Forwarded-For`/`-Proto`/`-Host` (and `-Prefix` under a
//! public path prefix), `X-Request-Id`, `Host` and — with a session — the
//! identity headers set. Identity values are percent-encoded per component:
//!
//! ```
//! use ltigate::proxy::headers::encode_value;
//! assert_eq!(encode_value("Zoë van Dijk"), "Zo%C3%AB%20van%20Dijk");
//! ```
//!
//! As a tower layer ([`HeaderPolicyLayer`]) it sits between the session
//! gate and the forwarding service:
//!
//! ```ignore
//! ServiceBuilder::new()
//!     .layer(SessionGateLayer::new(app))     // who is asking
//!     .layer(CsrfLayer::new(&settings))      // from where
//!     .layer(HeaderPolicyLayer::new(policy)) // what the upstream sees
//!     .service(forward)
//! ```
//!
//! Response side ([`ResponsePolicy`]): hop-by-hop headers removed, upstream
//! `Set-Cookie` made to survive in the LMS iframe (and never under
//! ltigate's cookie name), redirects to the upstream's internal origin moved
//! to the public origin, optional CSP `frame-ancestors` on HTML.

use http::header::{self, HeaderMap, HeaderName};

use crate::http::connection_tokens;

pub mod request;
pub mod response;

pub use request::{
    course_from_path, encode_value, peer_text, HeaderPolicy, HeaderPolicyLayer, IdentityNames,
    RequestContext,
};
pub use response::ResponsePolicy;

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy ones proxies strip).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Does `name` (a lowercase header name) start with `prefix` (lowercase,
/// `-` for `_`), reading `_` in `name` as `-`?
pub(crate) fn has_prefix(name: &str, prefix: &str) -> bool {
    let n = name.as_bytes();
    let p = prefix.as_bytes();
    n.len() >= p.len()
        && n.iter().zip(p).all(|(a, b)| {
            let a = if *a == b'_' { b'-' } else { *a };
            a == *b
        })
}

/// Is `name` (lowercase) `target` (lowercase, with `-`), reading `_` as `-`?
pub(crate) fn same_name(name: &str, target: &str) -> bool {
    name.len() == target.len() && has_prefix(name, target)
}

/// Removes `Connection`, every header it names and the hop-by-hop set, in
/// one walk over the names present (most requests carry none of them, and
/// then nothing is allocated or looked up again).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let connection = headers.contains_key(header::CONNECTION);
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n) || (connection && named_by_connection(headers, n)))
        .cloned()
        .collect();
    for n in doomed {
        headers.remove(n);
    }
}

/// A hop-by-hop name, `_` read as `-` (`Transfer_Encoding` reaches a CGI
/// or WSGI application as the same variable as `Transfer-Encoding`).
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.iter().any(|h| same_name(name.as_str(), h))
}

/// Whether `Connection` lists `name` (as an option naming a header).
pub(crate) fn named_by_connection(headers: &HeaderMap, name: &HeaderName) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(name.as_str().as_bytes()))
}
