//! The identity header values of one session, rendered once per cookie
//! value and kept with the opened session ([`super::OpenedSession`]), so a
//! proxied request only copies them.

use http::header::{HeaderName, HeaderValue};

/// Identity header values derived from one session
/// (the proxy's header policy renders them).
#[derive(Debug)]
pub struct IdentityHeaders {
    /// User, upstream user, email, names, consumer, environment, course roles.
    pub(crate) fixed: Vec<(HeaderName, HeaderValue)>,
    /// `Course` and `Roles` of each course of the session, latest last.
    pub(crate) courses: Vec<CourseHeaders>,
    /// The signed identity assertions the session has used, one per
    /// course (empty when the assertion is off).
    pub(crate) assertions: super::assertion::Slots,
}

/// `Course` and `Roles` header values of one course.
#[derive(Debug, Clone)]
pub(crate) struct CourseHeaders {
    pub(crate) id: String,
    pub(crate) course: Option<HeaderValue>,
    pub(crate) roles: Option<HeaderValue>,
}
