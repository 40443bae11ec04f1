//! The one error type of the proxied path, rendered by
//! [`crate::http::respond::reject`]. (Session and CSRF refusals are the
//! session layers' own: [`crate::session::SessionRejection`].)

use std::borrow::Cow;

use http::StatusCode;

use crate::http::respond::HttpError;

/// Why a proxied request got ltigate's answer instead of the upstream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// `CONNECT`: a 2xx would turn the upstream connection into a tunnel.
    Connect,
    /// More than one `Host` header (RFC 9112 §3.2): an upstream would pick
    /// one or join them.
    DuplicateHost,
    /// A request target that makes no upstream URL.
    BadTarget,
    /// The upstream could not be reached, or failed mid-exchange.
    UpstreamUnreachable,
    /// The upstream switched protocols without being asked.
    UpstreamProtocol,
    /// The client stopped sending its request body.
    RequestTimeout,
    /// The upstream did not answer within `upstream.timeout`.
    UpstreamTimeout,
}

impl HttpError for ProxyError {
    fn status(&self) -> StatusCode {
        match self {
            ProxyError::Connect => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::DuplicateHost | ProxyError::BadTarget => StatusCode::BAD_REQUEST,
            ProxyError::UpstreamUnreachable | ProxyError::UpstreamProtocol => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            ProxyError::Connect => "method_not_allowed",
            ProxyError::DuplicateHost | ProxyError::BadTarget => "bad_request",
            ProxyError::UpstreamUnreachable => "upstream_unreachable",
            ProxyError::UpstreamProtocol => "upstream_protocol",
            ProxyError::RequestTimeout => "request_timeout",
            ProxyError::UpstreamTimeout => "upstream_timeout",
        }
    }

    fn message(&self) -> Cow<'static, str> {
        match self {
            ProxyError::Connect => "CONNECT is not supported.",
            ProxyError::DuplicateHost => "More than one Host header.",
            ProxyError::BadTarget => "Bad request target.",
            ProxyError::UpstreamUnreachable => {
                "The learning platform cannot be reached right now. Please try again in a moment."
            }
            ProxyError::UpstreamProtocol => "The learning platform answered in an unexpected way.",
            ProxyError::RequestTimeout => "Your request stopped arriving. Please try again.",
            ProxyError::UpstreamTimeout => {
                "The learning platform did not answer in time. Please try again."
            }
        }
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_proxy_error_has_its_status_and_label() {
        for (e, status, label) in [
            (ProxyError::Connect, 405, "method_not_allowed"),
            (ProxyError::DuplicateHost, 400, "bad_request"),
            (ProxyError::BadTarget, 400, "bad_request"),
            (ProxyError::UpstreamUnreachable, 502, "upstream_unreachable"),
            (ProxyError::UpstreamProtocol, 502, "upstream_protocol"),
            (ProxyError::RequestTimeout, 408, "request_timeout"),
            (ProxyError::UpstreamTimeout, 504, "upstream_timeout"),
        ] {
            assert_eq!((e.status().as_u16(), e.label()), (status, label), "{e:?}");
            assert!(!e.message().is_empty());
        }
    }
}
