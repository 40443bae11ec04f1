//! `GET /lti/cartridge.xml[?course=ID]`: the IMS Basic LTI configuration an
//! LMS admin can paste or point the LMS at.

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

use super::{query_pairs, respond, AppState, Body};
use crate::lti::cartridge::{build, Cartridge};
use crate::lti::encode::percent_encode;

/// The launch URL for a course (external ID appended), or the plain one.
pub fn launch_url(app: &AppState, course: Option<&str>) -> String {
    let public = &app.settings.server.public_url;
    match course {
        Some(c) => public.url_for(&format!("/lti/launch/{}", percent_encode(c.as_bytes()))),
        None => public.url_for("/lti/launch"),
    }
}

/// The cartridge XML for a course (or the plain launch URL without one).
pub fn xml(app: &AppState, course: Option<&str>) -> String {
    let url = launch_url(app, course);
    build(&Cartridge {
        title: &app.settings.cartridge.title,
        description: &app.settings.cartridge.description,
        launch_url: &url,
        custom: &[],
        icon_url: None,
    })
}

/// Handles the route.
pub fn handle<B>(app: &AppState, req: &Request<B>) -> Response<Body> {
    let course = query_pairs(req)
        .into_iter()
        .find(|(n, _)| n == "course")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty());
    if course.as_deref().is_some_and(|c| {
        c.len() > crate::lti::launch::MAX_COURSE_ID || c.chars().any(char::is_control)
    }) {
        return respond::error(
            StatusCode::BAD_REQUEST,
            "invalid_course",
            "The course id is too long or contains control characters.",
            respond::prefers_json(req.headers()),
        );
    }
    let mut resp = respond::text(StatusCode::OK, xml(app, course.as_deref()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    resp
}
