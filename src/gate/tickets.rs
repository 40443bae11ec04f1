//! `GET /lti/continue?ticket=…` (second step of a launch, with the
//! new-window fallback for browsers that drop third-party cookies) and
//! `POST /lti/logout`.

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

use super::launch::Ticket;
use super::session::SessionRejection;
use super::Gate;
use crate::http::respond;
use crate::http::{query_pairs, unix_now, with_header, Body};

/// Handles `/lti/continue`.
pub async fn handle_continue<B>(state: &Gate, req: Request<B>) -> Response<Body> {
    let json = respond::prefers_json(req.headers());
    let expired = || {
        respond::error(
            StatusCode::UNAUTHORIZED,
            "ticket_invalid",
            "This launch link has expired or was already used. Go back to your course and open the link again.",
            json,
        )
    };
    let Some(ticket) = query_pairs(&req)
        .into_iter()
        .find(|(n, _)| n == "ticket")
        .map(|(_, v)| v)
        .filter(|t| !t.is_empty() && t.len() <= 128)
    else {
        return expired();
    };

    // A cookie for the ticket's learner and course means the browser kept
    // the cookie set by the launch: spend the ticket and go on.
    let now = unix_now();
    let session = state.session_from(req.headers(), now).ok();
    let in_frame = req.headers().get("sec-fetch-dest").is_some_and(|v| {
        v.as_bytes().eq_ignore_ascii_case(b"iframe") || v.as_bytes().eq_ignore_ascii_case(b"frame")
    });

    let taken = match state.store.take_ticket(&ticket).await {
        Ok(t) => {
            state.metrics.store_ok();
            t
        }
        Err(e) => {
            state.metrics.store_failed("ticket");
            tracing::warn!(error = %e, "cannot redeem a launch ticket");
            return respond::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "The service is temporarily unavailable. Please try again in a moment.",
                json,
            );
        }
    };
    let Some(raw) = taken else {
        return expired();
    };
    let Ok(t) = serde_json::from_slice::<Ticket>(&raw) else {
        return expired();
    };

    let cookie_matches = session.as_ref().is_some_and(|s| {
        s.external_id == t.external_id && s.latest_course().is_some_and(|c| c.id == t.course)
    });
    if cookie_matches {
        return respond::see_other(&t.landing);
    }
    let Some(remaining) = t.remaining(now) else {
        return expired();
    };
    if in_frame {
        // The cookie set inside the LMS frame was dropped (third-party
        // cookies blocked). Put the ticket back, with what is left of its
        // life, and offer a new window, where the cookie is first-party.
        if let Err(e) = state.store.put_ticket(&ticket, &raw, remaining).await {
            state.metrics.store_failed("ticket");
            tracing::warn!(error = %e, "cannot keep a launch ticket for the new window");
        }
        return new_window_page(state, &ticket);
    }
    // Top-level context: set the cookie here, first-party.
    with_header(
        respond::see_other(&t.landing),
        header::SET_COOKIE,
        &state.session_cookie(&t.cookie),
    )
}

fn new_window_page(state: &Gate, ticket: &str) -> Response<Body> {
    let url = format!(
        "{}?ticket={}",
        state.public_path("/lti/continue"),
        crate::lti::encode::percent_encode(ticket.as_bytes())
    );
    let url_html = respond::html_escape(&url);
    let url_js = serde_json::to_string(&url).unwrap_or_else(|_| "\"\"".into());
    let body = format!(
        "<p>Your browser blocks this course inside the LMS page. Open it in a new window to continue.</p>\
         <p><a id=\"open\" href=\"{url_html}\" target=\"_blank\" rel=\"opener\" style=\"font-size:1.1rem\">Open the course in a new window</a></p>\
         <script>document.getElementById('open').addEventListener('click',function(e){{e.preventDefault();window.open({url_js},'_blank');}});</script>"
    );
    let mut resp = respond::html(StatusCode::OK, respond::page("Open in a new window", &body));
    resp.headers_mut()
        .insert("x-ltigate-fallback", HeaderValue::from_static("new-window"));
    resp
}

/// Handles `POST /lti/logout`: clears the cookie. Another site cannot sign
/// the learner out (the CSRF guard applies, when on).
pub async fn handle_logout<B>(state: &Gate, req: Request<B>) -> Response<Body> {
    let json = respond::prefers_json(req.headers());
    if state.settings.session.csrf
        && super::session::is_cross_site(
            req.method(),
            req.headers(),
            &state.settings.server.public_url.origin(),
        )
    {
        state
            .metrics
            .session_rejections
            .with_label_values(&[SessionRejection::Csrf.label()])
            .inc();
        return respond::error(
            StatusCode::FORBIDDEN,
            "csrf",
            "This request came from another site and was refused.",
            json,
        );
    }
    let resp = if json {
        respond::json(StatusCode::OK, &serde_json::json!({"status": "signed_out"}))
    } else {
        respond::html(
            StatusCode::OK,
            respond::page(
                "Signed out",
                "<p>You are signed out. Open the course from your LMS to continue.</p>",
            ),
        )
    };
    with_header(resp, header::SET_COOKIE, &state.clear_cookie())
}
