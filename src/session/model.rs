//! What the session cookie carries: the learner, the courses launched with
//! the roles in each, the lifetime stamps and the protocol of the latest
//! launch, with the bounds that keep it within one cookie.

use serde::{Deserialize, Serialize};

use crate::lti::LtiVersion;

/// Largest cookie value produced; older courses are dropped to stay below.
pub const MAX_COOKIE_VALUE: usize = 3_600;
/// Bounds on free-text fields kept in the session.
const MAX_NAME: usize = 64;
const MAX_EMAIL: usize = 128;
const MAX_ROLES: usize = 8;
const MAX_ROLE: usize = 48;

/// One launched course and the learner's roles in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CourseRoles {
    /// Course external ID.
    #[serde(rename = "i")]
    pub id: String,
    /// Normalised roles.
    #[serde(rename = "r")]
    pub roles: Vec<String>,
}

/// What the cookie carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The tenant's name (DESIGN §12).
    #[serde(rename = "c")]
    pub tenant: String,
    /// The tenant's `lms_id`.
    #[serde(rename = "l")]
    pub lms_id: String,
    /// LMS `user_id`.
    #[serde(rename = "u")]
    pub user_id: String,
    /// Namespaced external ID.
    #[serde(rename = "x")]
    pub external_id: String,
    /// The upstream's own user id.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub upstream_id: Option<String>,
    /// Given name.
    #[serde(rename = "g", default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// Family name.
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// Email.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Launched courses, most recent last.
    #[serde(rename = "k")]
    pub courses: Vec<CourseRoles>,
    /// Issued at (unix seconds); a launch starts a fresh session lifetime.
    #[serde(rename = "t")]
    pub issued_at: u64,
    /// Last request seen (unix seconds, refreshed at most once a minute).
    #[serde(rename = "s")]
    pub last_seen: u64,
    /// The protocol of the latest launch (absent in the cookie: 1.1).
    #[serde(rename = "v", default, skip_serializing_if = "LtiVersion::is_default")]
    pub lti_version: LtiVersion,
}

/// Drops control characters and cuts to at most `max` bytes (at a
/// character boundary).
fn truncate(s: Option<String>, max: usize) -> Option<String> {
    s.map(|mut s| {
        if s.chars().any(char::is_control) {
            s.retain(|c| !c.is_control());
        }
        if s.len() > max {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
        s
    })
}

impl Session {
    /// A minimal session (doc tests and unit tests).
    pub fn new_for_test(external_id: &str) -> Self {
        Session {
            tenant: "test".into(),
            lms_id: "test".into(),
            user_id: external_id.into(),
            external_id: external_id.into(),
            upstream_id: None,
            given_name: None,
            family_name: None,
            email: None,
            courses: Vec::new(),
            issued_at: 0,
            last_seen: 0,
            lti_version: LtiVersion::V1p1,
        }
    }

    /// Is this the same learner (same tenant and LMS user)?
    pub fn same_learner(&self, tenant: &str, user_id: &str) -> bool {
        self.tenant == tenant && self.user_id == user_id
    }

    /// Records a launch of `course` with `roles`: the course moves to the
    /// end (most recent), and only the most recent `max_courses` are kept.
    pub fn add_course(&mut self, course: &str, roles: &[String], max_courses: usize) {
        self.courses.retain(|c| c.id != course);
        let roles: Vec<String> = roles
            .iter()
            .filter(|r| r.len() <= MAX_ROLE)
            .take(MAX_ROLES)
            .cloned()
            .collect();
        self.courses.push(CourseRoles {
            id: course.to_string(),
            roles,
        });
        let excess = self.courses.len().saturating_sub(max_courses.max(1));
        self.courses.drain(..excess);
    }

    /// The most recently launched course.
    pub fn latest_course(&self) -> Option<&CourseRoles> {
        self.courses.last()
    }

    /// The roles in `course`, if launched.
    pub fn course(&self, course: &str) -> Option<&CourseRoles> {
        self.courses.iter().find(|c| c.id == course)
    }

    /// Bounds the free-text fields so the cookie stays small.
    pub fn bound_fields(&mut self) {
        self.given_name = truncate(self.given_name.take(), MAX_NAME);
        self.family_name = truncate(self.family_name.take(), MAX_NAME);
        self.email = truncate(self.email.take(), MAX_EMAIL);
        self.upstream_id = truncate(self.upstream_id.take(), MAX_NAME);
    }
}

/// Why a cookie was not accepted; the labels of
/// `ltigate_session_rejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRejection {
    /// No cookie.
    Missing,
    /// Not a cookie of this deployment (forged, tampered, other key).
    Invalid,
    /// Older than `session.ttl`.
    Expired,
    /// No request for `session.idle_ttl`.
    Idle,
    /// Issued before `session.not_before`.
    Revoked,
    /// Unsafe cross-site request.
    Csrf,
}

impl SessionRejection {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            SessionRejection::Missing => "missing",
            SessionRejection::Invalid => "invalid",
            SessionRejection::Expired => "expired",
            SessionRejection::Idle => "idle",
            SessionRejection::Revoked => "revoked",
            SessionRejection::Csrf => "csrf",
        }
    }

    /// The status a refused request gets.
    pub fn status(self) -> http::StatusCode {
        match self {
            SessionRejection::Csrf => http::StatusCode::FORBIDDEN,
            _ => http::StatusCode::UNAUTHORIZED,
        }
    }

    /// The text a refused request gets.
    pub fn message(self) -> std::borrow::Cow<'static, str> {
        match self {
            SessionRejection::Csrf => "This request came from another site and was refused.",
            _ => "Your session has ended or was not started. Open the course again from your LMS.",
        }
        .into()
    }

    /// Every label.
    pub const ALL: [SessionRejection; 6] = [
        SessionRejection::Missing,
        SessionRejection::Invalid,
        SessionRejection::Expired,
        SessionRejection::Idle,
        SessionRejection::Revoked,
        SessionRejection::Csrf,
    ];
}

/// The session layers' boundary error: the client is told `no_session`
/// (401) or `csrf` (403); the access log and the metric keep the reason.
impl crate::http::respond::HttpError for SessionRejection {
    fn status(&self) -> http::StatusCode {
        SessionRejection::status(*self)
    }

    fn label(&self) -> &'static str {
        match self {
            SessionRejection::Csrf => "csrf",
            _ => "no_session",
        }
    }

    fn message(&self) -> std::borrow::Cow<'static, str> {
        SessionRejection::message(*self)
    }

    fn reason(&self) -> &'static str {
        SessionRejection::label(*self)
    }
}
