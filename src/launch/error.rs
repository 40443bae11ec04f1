//! The one error type of ltigate's own public routes (launch, continue,
//! logout, cartridge), rendered by [`crate::http::respond::reject`].

use std::borrow::Cow;

use http::header::{self, HeaderValue};
use http::{HeaderMap, StatusCode};

use crate::http::respond::HttpError;
use crate::session::SessionRejection;

/// Why one of ltigate's own routes refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// A refused launch, as the client is told it (see
    /// [`super::Failure::shown`]); a malformed request also gets the detail.
    Launch {
        /// The reason shown.
        shown: super::Reason,
        /// What was wrong; shown only for a malformed request.
        detail: String,
    },
    /// A refused LTI 1.3 login.
    Login {
        /// Why.
        reason: super::v1p3::login::LoginRejection,
        /// What was wrong (shown).
        detail: String,
    },
    /// `/lti/continue` with a ticket that is unknown, spent or expired.
    TicketInvalid,
    /// The store did not answer.
    StoreUnavailable,
    /// A session refusal (an unsafe cross-site logout).
    Session(SessionRejection),
    /// A course ID that cannot name a course.
    InvalidCourse(&'static str),
    /// A route known under another method.
    MethodNotAllowed {
        /// The `Allow` header value.
        allow: &'static str,
        /// What the client is told.
        message: &'static str,
    },
    /// Below `/lti/` but not a route.
    NotFound,
}

impl HttpError for RouteError {
    fn status(&self) -> StatusCode {
        match self {
            RouteError::Launch { shown, .. } => {
                StatusCode::from_u16(shown.status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            RouteError::Login { reason, .. } => reason.status(),
            RouteError::TicketInvalid => StatusCode::UNAUTHORIZED,
            RouteError::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            RouteError::Session(r) => r.status(),
            RouteError::InvalidCourse(_) => StatusCode::BAD_REQUEST,
            RouteError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            RouteError::NotFound => StatusCode::NOT_FOUND,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            RouteError::Launch { shown, .. } => shown.label(),
            RouteError::Login { reason, .. } => reason.label(),
            RouteError::TicketInvalid => "ticket_invalid",
            RouteError::StoreUnavailable => "store_unavailable",
            RouteError::Session(r) => HttpError::label(r),
            RouteError::InvalidCourse(_) => "invalid_course",
            RouteError::MethodNotAllowed { .. } => "method_not_allowed",
            RouteError::NotFound => "not_found",
        }
    }

    fn message(&self) -> Cow<'static, str> {
        match self {
            RouteError::Launch { shown, detail } if shown.is_invalid_request() => {
                format!("{} ({detail})", shown.message()).into()
            }
            RouteError::Launch { shown, .. } => shown.message().into(),
            RouteError::Login { reason, detail } => {
                format!("{} ({detail})", reason.message()).into()
            }
            RouteError::TicketInvalid => "This launch link has expired or was already used. \
                 Go back to your course and open the link again."
                .into(),
            RouteError::StoreUnavailable => {
                "The service is temporarily unavailable. Please try again in a moment.".into()
            }
            RouteError::Session(r) => r.message(),
            RouteError::InvalidCourse(why) => (*why).into(),
            RouteError::MethodNotAllowed { message, .. } => (*message).into(),
            RouteError::NotFound => "Not found.".into(),
        }
    }

    fn add_headers(&self, headers: &mut HeaderMap) {
        if let RouteError::MethodNotAllowed { allow, .. } = self {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lti::launch::Rejection;

    #[test]
    fn every_route_error_has_its_status_and_label() {
        let launch = |shown: Rejection| RouteError::Launch {
            shown: shown.into(),
            detail: "no course".into(),
        };
        for (e, status, label) in [
            (launch(Rejection::InvalidRequest), 400, "invalid_request"),
            (launch(Rejection::BadSignature), 401, "bad_signature"),
            (
                launch(Rejection::LicenceExhausted),
                403,
                "licence_exhausted",
            ),
            (RouteError::TicketInvalid, 401, "ticket_invalid"),
            (RouteError::StoreUnavailable, 503, "store_unavailable"),
            (RouteError::Session(SessionRejection::Csrf), 403, "csrf"),
            (RouteError::InvalidCourse("too long"), 400, "invalid_course"),
            (
                RouteError::MethodNotAllowed {
                    allow: "POST",
                    message: "Use POST.",
                },
                405,
                "method_not_allowed",
            ),
            (RouteError::NotFound, 404, "not_found"),
        ] {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
            assert_eq!(e.label(), label, "{e:?}");
        }
        // Only a malformed launch says what was wrong with it.
        assert!(launch(Rejection::InvalidRequest)
            .message()
            .ends_with("(no course)"));
        assert!(!launch(Rejection::BadSignature)
            .message()
            .contains("no course"));
    }
}
