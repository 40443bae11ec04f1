//! `GET /lti/continue?ticket=…` (second step of a launch, with the
//! new-window fallback for browsers that drop third-party cookies) and
//! `POST /lti/logout`.
//!
//! The fallback page inside the LMS frame opens
//! `/lti/continue?ticket=…&window=new` in a new window. There, top-level,
//! the ticket is redeemed as without `window=new`, but the answer is a small
//! page instead of the 303: it tells the window that opened it (the frame,
//! same origin) that the course continues here, then replaces itself with
//! the landing path. The frame then says so instead of still offering the
//! new window. `window=new` changes only the form of the answer: the ticket
//! is spent the same way, and the landing path is the ticket's own.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::error::RouteError;
use crate::http::respond;
use crate::http::{query_pairs, unix_now, with_header, Body};
use crate::session::{Gate, SessionRejection};

/// Lifetime of a launch ticket.
pub const TICKET_TTL: Duration = Duration::from_secs(60);

/// What a ticket holds until `/lti/continue` redeems it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ticket {
    /// The sealed cookie value.
    #[serde(rename = "c")]
    pub cookie: String,
    /// Public landing path.
    #[serde(rename = "l")]
    pub landing: String,
    /// Learner external ID.
    #[serde(rename = "x")]
    pub external_id: String,
    /// Course.
    #[serde(rename = "k")]
    pub course: String,
    /// When it expires (Unix seconds); 0 in tickets written before it was kept.
    #[serde(rename = "e", default)]
    pub expires: u64,
}

impl Ticket {
    /// How long it still lives at `now`: `None` once expired. Putting a
    /// ticket back (the new-window fallback) keeps its first expiry, so
    /// reloading the frame never stretches it.
    pub fn remaining(&self, now: u64) -> Option<Duration> {
        if self.expires == 0 {
            return Some(TICKET_TTL);
        }
        self.expires
            .checked_sub(now)
            .filter(|&s| s > 0)
            .map(Duration::from_secs)
    }
}

/// Handles `/lti/continue`.
pub async fn handle_continue<B>(state: &Gate, req: Request<B>) -> Response<Body> {
    let json = respond::prefers_json(req.headers());
    let expired = || respond::reject(&RouteError::TicketInvalid, json);
    let query = query_pairs(&req);
    let Some(ticket) = query
        .iter()
        .find(|(n, _)| n == "ticket")
        .map(|(_, v)| v.clone())
        .filter(|t| !t.is_empty() && t.len() <= 128)
    else {
        return expired();
    };
    let new_window = query.iter().any(|(n, v)| n == "window" && v == "new");

    // A cookie for the ticket's learner and course means the browser kept
    // the cookie set by the launch: spend the ticket and go on.
    let now = unix_now();
    let session = state.open_session(req.headers(), now).ok();
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
            return respond::reject(&RouteError::StoreUnavailable, json);
        }
    };
    let Some(raw) = taken else {
        return expired();
    };
    let Ok(t) = serde_json::from_slice::<Ticket>(&raw) else {
        return expired();
    };

    let cookie_matches = session.as_ref().map(|o| &o.session).is_some_and(|s| {
        s.external_id == t.external_id && s.latest_course().is_some_and(|c| c.id == t.course)
    });
    if cookie_matches {
        // The new window already holds the cookie (first-party, from an
        // earlier new-window launch): still tell the frame.
        if new_window && !in_frame {
            return continued_page(state, &t.landing, None);
        }
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
    let cookie = state.session_cookie(&t.cookie);
    if new_window {
        return continued_page(state, &t.landing, Some(&cookie));
    }
    with_header(respond::see_other(&t.landing), header::SET_COOKIE, &cookie)
}

/// The message the new window posts to the frame that opened it.
const CONTINUED_MESSAGE: &str = "{ltigate:'continued'}";

/// The page inside the LMS frame that offers the new window, and switches
/// to "Continued in a new window" once that window has redeemed the ticket
/// (its message, from this origin and of the expected shape). Opening the
/// window alone changes nothing: the learner may come back before it loads.
fn new_window_page(state: &Gate, ticket: &str) -> Response<Body> {
    let url = format!(
        "{}?ticket={}&window=new",
        state.public_path("/lti/continue"),
        crate::lti::encode::percent_encode(ticket.as_bytes())
    );
    let url_html = respond::html_escape(&url);
    let url_js = respond::js_string(&url);
    let body = format!(
        "<div id=\"offer\"><p>Your browser blocks this course inside the LMS page. Open it in a new window to continue.</p>\
         <p><a id=\"open\" href=\"{url_html}\" target=\"_blank\" rel=\"opener\" style=\"font-size:1.1rem\">Open the course in a new window</a></p></div>\
         <div id=\"continued\" hidden><p>The course is open in another window: carry on there. When you are done, close it and return to the LMS.</p>\
         <p>If you closed that window, open the course again from your LMS.</p></div>\
         <script>(function(){{\
         document.getElementById('open').addEventListener('click',function(e){{e.preventDefault();window.open({url_js},'_blank');}});\
         window.addEventListener('message',function(e){{\
         var d=e.data;\
         if(e.origin!==window.location.origin||!d||typeof d!=='object'||d.ltigate!=='continued'){{return;}}\
         document.title='Continued in a new window';\
         var h=document.querySelector('h1');if(h){{h.textContent='Continued in a new window';}}\
         document.getElementById('offer').hidden=true;document.getElementById('continued').hidden=false;\
         }});\
         }})();</script>"
    );
    let mut resp = respond::html(StatusCode::OK, respond::page("Open in a new window", &body));
    resp.headers_mut()
        .insert("x-ltigate-fallback", HeaderValue::from_static("new-window"));
    resp
}

/// The top-level answer to `/lti/continue?…&window=new`: sets the session
/// cookie (when `cookie` is given), tells the frame that opened this window
/// (target origin: the public origin, so no other site can read it), then
/// replaces itself with the landing path; without script, a meta refresh
/// and a link lead there.
fn continued_page(state: &Gate, landing: &str, cookie: Option<&str>) -> Response<Body> {
    let origin = state.settings.server.public_url.origin();
    let landing_html = respond::html_escape(landing);
    let head = format!(
        "<noscript><meta http-equiv=\"refresh\" content=\"0;url={landing_html}\"></noscript>"
    );
    let body = format!(
        "<p>The course opens in this window. If it does not, <a id=\"go\" href=\"{landing_html}\">continue to the course</a>.</p>\
         <script>(function(){{var o=window.opener;\
         if(o&&o!==window){{try{{o.postMessage({CONTINUED_MESSAGE},{origin_js});}}catch(e){{}}}}\
         window.location.replace({landing_js});}})();</script>",
        origin_js = respond::js_string(&origin),
        landing_js = respond::js_string(landing),
    );
    let mut resp = respond::html(
        StatusCode::OK,
        respond::page_with_head("Opening the course", &head, &body),
    );
    resp.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    match cookie {
        Some(c) => with_header(resp, header::SET_COOKIE, c),
        None => resp,
    }
}

/// Handles `POST /lti/logout`: clears the cookie. Another site cannot sign
/// the learner out (the CSRF guard applies, when on).
pub async fn handle_logout<B>(state: &Gate, req: Request<B>) -> Response<Body> {
    let json = respond::prefers_json(req.headers());
    if state.settings.session.csrf
        && crate::session::is_cross_site(
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
        return respond::reject(&RouteError::Session(SessionRejection::Csrf), json);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_put_back_keeps_its_first_expiry() {
        let t = Ticket {
            cookie: String::new(),
            landing: String::new(),
            external_id: String::new(),
            course: String::new(),
            expires: 1_000_060,
        };
        assert_eq!(t.remaining(1_000_000), Some(TICKET_TTL));
        assert_eq!(t.remaining(1_000_059), Some(Duration::from_secs(1)));
        assert_eq!(t.remaining(1_000_060), None);
        assert_eq!(t.remaining(2_000_000), None);
        let older = Ticket { expires: 0, ..t };
        assert_eq!(older.remaining(2_000_000), Some(TICKET_TTL));
    }
}
