//! `GET /lti/cartridge.xml[?course=ID]`: the IMS Basic LTI configuration an
//! LMS admin can paste or point the LMS at, and [`CourseLink`]: everything an
//! LMS admin needs to connect one course (what `ltigate export` prints).

use std::fmt::Write as _;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

use super::error::RouteError;
use crate::config::Settings;
use crate::http::{query_pairs, respond, Body};
use crate::lti::cartridge::{build, Cartridge};
use crate::lti::encode::percent_encode;
use crate::lti::launch::MAX_COURSE_ID;
use crate::session::Gate;

/// The launch URL for a course (external ID appended), or the plain one.
pub fn launch_url(settings: &Settings, course: Option<&str>) -> String {
    let public = &settings.server.public_url;
    match course {
        Some(c) => public.url_for(&format!("/lti/launch/{}", percent_encode(c.as_bytes()))),
        None => public.url_for("/lti/launch"),
    }
}

/// The URL of the cartridge XML for a course (or the plain one).
pub fn cartridge_url(settings: &Settings, course: Option<&str>) -> String {
    let public = &settings.server.public_url;
    match course {
        Some(c) => public.url_for(&format!(
            "/lti/cartridge.xml?course={}",
            percent_encode(c.as_bytes())
        )),
        None => public.url_for("/lti/cartridge.xml"),
    }
}

/// The cartridge XML for a course (or the plain launch URL without one).
pub fn xml(settings: &Settings, course: Option<&str>) -> String {
    let url = launch_url(settings, course);
    build(&Cartridge {
        title: &settings.cartridge.title,
        description: &settings.cartridge.description,
        launch_url: &url,
        custom: &[],
        icon_url: None,
    })
}

/// Why a course ID cannot be used in a launch URL.
pub fn check_course_id(course: &str) -> Result<(), &'static str> {
    if course.is_empty() {
        return Err("The course id is empty.");
    }
    if course.len() > MAX_COURSE_ID || course.chars().any(char::is_control) {
        return Err("The course id is too long or contains control characters.");
    }
    Ok(())
}

/// Handles the route.
pub fn handle<B>(app: &Gate, req: &Request<B>) -> Response<Body> {
    let course = query_pairs(req)
        .into_iter()
        .find(|(n, _)| n == "course")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty());
    if let Some(Err(message)) = course.as_deref().map(check_course_id) {
        return respond::reject(
            &RouteError::InvalidCourse(message),
            respond::prefers_json(req.headers()),
        );
    }
    let mut resp = respond::text(StatusCode::OK, xml(&app.settings, course.as_deref()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    resp
}

/// Why `ltigate export` cannot describe a course.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// No consumer has this name.
    #[error("unknown consumer `{name}`; configured consumers: {}", list(.configured))]
    UnknownConsumer {
        /// The name asked for.
        name: String,
        /// The configured names.
        configured: Vec<String>,
    },
    /// The course ID cannot be put in a launch URL.
    #[error("course `{course}`: {message}")]
    BadCourse {
        /// The course ID asked for.
        course: String,
        /// What is wrong with it.
        message: &'static str,
    },
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What an LMS admin needs to connect one course of one consumer: two ways of
/// launching it (custom parameter, or the external ID in the launch URL), the
/// consumer key and secret, and the cartridge.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CourseLink {
    /// The consumer's name.
    pub consumer: String,
    /// The course's external ID.
    pub course: String,
    /// The plain launch URL, used with the custom parameter.
    pub launch_url: String,
    /// The custom parameter, as LMSs take it (`course=ID`).
    pub custom_parameter: String,
    /// The launch URL with the course ID appended (no custom parameter needed).
    pub course_launch_url: String,
    /// `oauth_consumer_key`.
    pub consumer_key: String,
    /// The newest shared secret, only when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_secret: Option<String>,
    /// The URL of the course's cartridge XML.
    pub cartridge_url: String,
    /// The course's cartridge XML.
    pub cartridge_xml: String,
}

impl CourseLink {
    /// Describes `course` of the consumer named `consumer`; the secret is
    /// included only when `show_secret`.
    pub fn new(
        settings: &Settings,
        consumer: &str,
        course: &str,
        show_secret: bool,
    ) -> Result<Self, ExportError> {
        let c = settings
            .consumer_of(consumer)
            .ok_or_else(|| ExportError::UnknownConsumer {
                name: consumer.to_string(),
                configured: settings.tenants.iter().map(|t| t.name.clone()).collect(),
            })?;
        check_course_id(course).map_err(|message| ExportError::BadCourse {
            course: course.to_string(),
            message,
        })?;
        let shared_secret = show_secret
            .then(|| c.secrets.first().map(|s| secret_text(s.expose())))
            .flatten();
        Ok(CourseLink {
            consumer: c.tenant.name.clone(),
            course: course.to_string(),
            launch_url: launch_url(settings, None),
            custom_parameter: format!("course={course}"),
            course_launch_url: launch_url(settings, Some(course)),
            consumer_key: c.key.clone(),
            shared_secret,
            cartridge_url: cartridge_url(settings, Some(course)),
            cartridge_xml: xml(settings, Some(course)),
        })
    }

    /// The human-readable form: one labelled line per value, then the XML.
    pub fn to_text(&self) -> String {
        let secret = self
            .shared_secret
            .as_deref()
            .unwrap_or("(hidden; add --show-secret to print it)");
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Course {} for consumer \"{}\"\n",
            self.course, self.consumer
        );
        let _ = writeln!(out, "Either a launch URL with a custom parameter:");
        let _ = writeln!(out, "  Launch URL:        {}", self.launch_url);
        let _ = writeln!(out, "  Custom parameter:  {}", self.custom_parameter);
        let _ = writeln!(
            out,
            "or the course in the launch URL (no custom parameter):"
        );
        let _ = writeln!(out, "  Launch URL:        {}\n", self.course_launch_url);
        let _ = writeln!(out, "Consumer key:        {}", self.consumer_key);
        let _ = writeln!(out, "Shared secret:       {secret}");
        let _ = writeln!(out, "Cartridge URL:       {}\n", self.cartridge_url);
        let _ = writeln!(out, "Cartridge XML:");
        out.push_str(&self.cartridge_xml);
        out
    }

    /// The JSON form, for scripts.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// A secret as an LMS admin types it: the text itself, or its `base64:`
/// form when it is not UTF-8.
fn secret_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => {
            use base64::Engine as _;
            format!(
                "base64:{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{validate, RawConfig};

    fn settings(public_url: &str) -> Settings {
        let raw: RawConfig = toml::from_str(&format!(
            r#"
[server]
public_url = "{public_url}"
[cartridge]
title = "Platform"
[[consumers]]
name = "Acme Moodle"
key = "acme-key"
secrets = ["new-secret", "old-secret"]
lms_id = "acme"
[[consumers]]
name = "Binary"
key = "bin-key"
secret = "base64:/w=="
lms_id = "bin"
"#
        ))
        .unwrap();
        validate(&raw).unwrap()
    }

    #[test]
    fn urls_for_a_course_and_without() {
        let s = settings("https://learn.example.com/p");
        assert_eq!(
            launch_url(&s, None),
            "https://learn.example.com/p/lti/launch"
        );
        assert_eq!(
            launch_url(&s, Some("C 1/ä")),
            "https://learn.example.com/p/lti/launch/C%201%2F%C3%A4"
        );
        assert_eq!(
            cartridge_url(&s, Some("C&1")),
            "https://learn.example.com/p/lti/cartridge.xml?course=C%261"
        );
        assert_eq!(
            cartridge_url(&s, None),
            "https://learn.example.com/p/lti/cartridge.xml"
        );
    }

    #[test]
    fn course_link_hides_the_secret_unless_asked() {
        let s = settings("https://learn.example.com");
        let hidden = CourseLink::new(&s, "Acme Moodle", "C-1", false).unwrap();
        assert_eq!(hidden.shared_secret, None);
        assert_eq!(hidden.custom_parameter, "course=C-1");
        assert_eq!(
            hidden.course_launch_url,
            "https://learn.example.com/lti/launch/C-1"
        );
        assert_eq!(hidden.cartridge_xml, xml(&s, Some("C-1")));
        assert!(!hidden.to_text().contains("new-secret"));
        assert!(!hidden.to_json().contains("secret\""));
        let shown = CourseLink::new(&s, "Acme Moodle", "C-1", true).unwrap();
        assert_eq!(shown.shared_secret.as_deref(), Some("new-secret"));
        assert!(shown
            .to_text()
            .contains("Shared secret:       new-secret\n"));
        let binary = CourseLink::new(&s, "Binary", "C-1", true).unwrap();
        assert_eq!(binary.shared_secret.as_deref(), Some("base64:/w=="));
    }

    #[test]
    fn unknown_consumer_lists_the_configured_ones() {
        let s = settings("https://learn.example.com");
        let err = CourseLink::new(&s, "Nope", "C-1", false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown consumer `Nope`; configured consumers: `Acme Moodle`, `Binary`"
        );
        let err = CourseLink::new(&s, "Binary", "", false).unwrap_err();
        assert!(matches!(err, ExportError::BadCourse { .. }), "{err}");
        let long = "x".repeat(MAX_COURSE_ID + 1);
        assert!(CourseLink::new(&s, "Binary", &long, false).is_err());
    }
}
