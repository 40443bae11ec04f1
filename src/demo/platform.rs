//! The demo learning platform: the upstream behind ltigate.
//!
//! - `PUT /api/users/{external_id}` and
//!   `PUT /api/courses/{course}/subscriptions/{external_id}`: the provisioning
//!   API of DESIGN §5 (bearer token, JSON).
//! - `GET /courses/{course}`: the course page, showing the identity headers
//!   ltigate added (percent-decoded for display) and the assessment.
//! - `POST /courses/{course}/complete`: records the score and sends the signed
//!   completion webhook of DESIGN §6 to ltigate's admin listener, server-side.
//!
//! It trusts the identity headers because in the demo only ltigate reaches
//! it; a real platform must not be reachable around ltigate.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, StatusCode};

use super::web::{self, error_page, page, Site};
use super::{API_TOKEN, COURSE_ID, COURSE_TITLE, GRADE_ACTIVITY, WEBHOOK_SECRET};
use crate::http::respond::{self, html_escape};
use crate::http::{decode_path_segment, unix_now, Body};
use crate::lti::encode::{parse_form, percent_decode};
use crate::outcomes::sign_webhook;
use crate::secret::random_token;
use crate::secret::Secret;

/// Largest API or form body.
const MAX_BODY: usize = 16 * 1024;

/// The identity headers shown on the course page, in this order.
const IDENTITY_HEADERS: [&str; 11] = [
    "X-LTI-User",
    "X-LTI-Upstream-User",
    "X-LTI-Given-Name",
    "X-LTI-Family-Name",
    "X-LTI-Email",
    "X-LTI-Course",
    "X-LTI-Roles",
    "X-LTI-Course-Roles",
    "X-LTI-Consumer",
    "X-LTI-Environment",
    "X-LTI-Version",
];

/// A provisioned user.
#[derive(Debug, Clone)]
struct User {
    id: String,
}

/// The last completion a learner sent, and what ltigate answered.
#[derive(Debug, Clone)]
struct Completion {
    score: f64,
    accepted: bool,
    answer: String,
}

#[derive(Default)]
struct State {
    users: BTreeMap<String, User>,
    subscriptions: BTreeSet<(String, String)>,
    completions: HashMap<(String, String), Completion>,
}

/// The demo platform.
pub struct Platform {
    webhook_url: String,
    webhook_secret: Secret,
    client: reqwest::Client,
    state: Mutex<State>,
}

/// The decoded identity ltigate sent with a request.
struct Identity {
    /// `X-LTI-User`, decoded: the external ID.
    user: String,
    /// Display name.
    name: String,
    /// Every identity header present: (name, decoded value).
    headers: Vec<(&'static str, String)>,
}

impl Identity {
    fn from_headers(headers: &HeaderMap) -> Option<Identity> {
        let value = |name: &str| {
            let raw = headers.get(name)?.to_str().ok()?;
            Some(percent_decode(raw.as_bytes()).unwrap_or_else(|_| raw.to_string()))
        };
        let user = value("x-lti-user")?;
        let name = [value("x-lti-given-name"), value("x-lti-family-name")]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        let shown = IDENTITY_HEADERS
            .iter()
            .filter_map(|h| value(h).map(|v| (*h, v)))
            .collect();
        Some(Identity {
            name: if name.is_empty() { user.clone() } else { name },
            user,
            headers: shown,
        })
    }
}

fn api_reply(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    respond::json(status, &value)
}

impl Platform {
    /// A platform that sends completion webhooks to `webhook_url`.
    pub fn new(webhook_url: &str) -> anyhow::Result<Platform> {
        Ok(Platform {
            webhook_url: webhook_url.to_string(),
            webhook_secret: Secret::new(WEBHOOK_SECRET),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles one request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path().to_string();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (req.method().clone(), segments.as_slice()) {
            (Method::PUT, ["api", "users", id]) => {
                let id = id.to_string();
                self.put_user(req, &id).await
            }
            (Method::PUT, ["api", "courses", course, "subscriptions", id]) => {
                let (course, id) = (course.to_string(), id.to_string());
                self.put_subscription(req, &course, &id).await
            }
            (_, ["api", ..]) => api_reply(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "no such API route"}),
            ),
            (Method::GET | Method::HEAD, [""]) => self.home(req.headers()),
            (Method::GET | Method::HEAD, ["courses", course]) => {
                let course = course.to_string();
                self.course_page(req.headers(), &course)
            }
            (Method::POST, ["courses", course, "complete"]) => {
                let course = course.to_string();
                self.complete(req, &course).await
            }
            _ => error_page(
                Site::Platform,
                StatusCode::NOT_FOUND,
                "There is no such page.",
            ),
        }
    }

    /// Checks the bearer token and JSON body of an API call.
    async fn api_body<B>(&self, req: Request<B>) -> Result<serde_json::Value, Response<Body>>
    where
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let authorized = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == format!("Bearer {API_TOKEN}"));
        if !authorized {
            return Err(api_reply(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "a valid bearer token is required"}),
            ));
        }
        let is_json = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return Err(api_reply(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                serde_json::json!({"error": "send JSON"}),
            ));
        }
        let body = web::read_body(req, MAX_BODY)
            .await
            .map_err(|s| api_reply(s, serde_json::json!({"error": "cannot read the body"})))?;
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) if v.is_object() => Ok(v),
            _ => Err(api_reply(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "the body must be a JSON object"}),
            )),
        }
    }

    async fn put_user<B>(&self, req: Request<B>, raw_id: &str) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let body = match self.api_body(req).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        let Ok(external_id) = decode_path_segment(raw_id) else {
            return api_reply(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "bad user id"}),
            );
        };
        if body.get("external_id").and_then(|v| v.as_str()) != Some(external_id.as_str()) {
            return api_reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({"error": "external_id must match the path"}),
            );
        }
        let mut state = self.state();
        let next = state.users.len() + 1;
        let (status, user) = match state.users.get(&external_id) {
            Some(u) => (StatusCode::OK, u.clone()),
            None => {
                let u = User {
                    id: format!("p-{next}"),
                };
                state.users.insert(external_id.clone(), u.clone());
                (StatusCode::CREATED, u)
            }
        };
        tracing::info!(user = %external_id, id = %user.id, "demo platform: user provisioned");
        api_reply(status, serde_json::json!({"id": user.id}))
    }

    async fn put_subscription<B>(
        &self,
        req: Request<B>,
        raw_course: &str,
        raw_id: &str,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let body = match self.api_body(req).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        let (Ok(course), Ok(external_id)) =
            (decode_path_segment(raw_course), decode_path_segment(raw_id))
        else {
            return api_reply(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "bad path"}),
            );
        };
        if course != COURSE_ID {
            return api_reply(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "no such course"}),
            );
        }
        if !matches!(
            body.get("role").and_then(|v| v.as_str()),
            Some("learner" | "staff")
        ) {
            return api_reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({"error": "role must be learner or staff"}),
            );
        }
        let mut state = self.state();
        if !state.users.contains_key(&external_id) {
            return api_reply(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "no such user"}),
            );
        }
        let created = state.subscriptions.insert((course, external_id));
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        api_reply(status, serde_json::json!({}))
    }

    fn home(&self, headers: &HeaderMap) -> Response<Body> {
        let Some(id) = Identity::from_headers(headers) else {
            return self.no_identity();
        };
        let body = format!(
            "<h1>Welcome, {name}</h1><div class=\"card\"><p>Your course: \
             <a href=\"/courses/{COURSE_ID}\">{COURSE_TITLE} ({COURSE_ID})</a></p></div>",
            name = html_escape(&id.name)
        );
        respond::html(
            StatusCode::OK,
            page(Site::Platform, "Home", &html_escape(&id.name), &body),
        )
    }

    fn no_identity(&self) -> Response<Body> {
        error_page(
            Site::Platform,
            StatusCode::UNAUTHORIZED,
            "No learner identity came with this request. Open the course from the demo LMS: \
             ltigate signs you in and tells this platform who you are.",
        )
    }

    fn course_page(&self, headers: &HeaderMap, raw_course: &str) -> Response<Body> {
        let Some(id) = Identity::from_headers(headers) else {
            return self.no_identity();
        };
        if decode_path_segment(raw_course).ok().as_deref() != Some(COURSE_ID) {
            return error_page(
                Site::Platform,
                StatusCode::NOT_FOUND,
                "There is no such course.",
            );
        }
        let rows: String = id
            .headers
            .iter()
            .map(|(name, value)| {
                let row_id = name.to_ascii_lowercase();
                format!(
                    "<tr><th class=\"mono\">{name}</th><td id=\"{row_id}\">{}</td></tr>",
                    html_escape(value)
                )
            })
            .collect();
        let last = self
            .state()
            .completions
            .get(&(id.user.clone(), COURSE_ID.to_string()))
            .cloned();
        let score_value = last.as_ref().map_or_else(
            || "85".to_string(),
            |c| web::percent_value(c.score).to_string(),
        );
        let result = match last {
            None => String::new(),
            Some(c) => {
                let class = if c.accepted { "ok" } else { "bad" };
                let what = if c.accepted {
                    "The grade is on its way to your LMS."
                } else {
                    "ltigate did not accept the completion."
                };
                format!(
                    "<p id=\"result\">You completed the assessment with {score}. \
                     <span class=\"{class}\">{what}</span></p>\
                     <p class=\"muted\">ltigate answered: <span id=\"answer\" class=\"mono\">{answer}</span></p>",
                    score = web::percent(c.score),
                    answer = html_escape(&c.answer),
                )
            }
        };
        let body = format!(
            "<h1 id=\"course-title\">{COURSE_TITLE} <span class=\"muted\">({COURSE_ID})</span></h1>\
             <div class=\"row\">\
             <div class=\"card wide\"><h2>Who ltigate says you are</h2>\
             <p class=\"muted\">The identity headers this platform received with this page.</p>\
             <table>{rows}</table></div>\
             <div class=\"card narrow\"><h2>Final assessment</h2>\
             <form method=\"post\" action=\"/courses/{COURSE_ID}/complete\">\
             <p><label>Your score <input id=\"score\" name=\"score\" type=\"number\" min=\"0\" max=\"100\" step=\"0.1\" value=\"{score_value}\"> %</label></p>\
             <p><button id=\"complete\" type=\"submit\">Complete the assessment</button></p></form>\
             {result}</div></div>"
        );
        respond::html(
            StatusCode::OK,
            page(
                Site::Platform,
                COURSE_TITLE,
                &format!("signed in as <b id=\"who\">{}</b>", html_escape(&id.name)),
                &body,
            ),
        )
    }

    async fn complete<B>(&self, req: Request<B>, raw_course: &str) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let Some(id) = Identity::from_headers(req.headers()) else {
            return self.no_identity();
        };
        if decode_path_segment(raw_course).ok().as_deref() != Some(COURSE_ID) {
            return error_page(
                Site::Platform,
                StatusCode::NOT_FOUND,
                "There is no such course.",
            );
        }
        let form = match web::read_body(req, MAX_BODY).await {
            Ok(b) => parse_form(&b).unwrap_or_default(),
            Err(status) => {
                return error_page(Site::Platform, status, "The form could not be read.")
            }
        };
        let score = form
            .iter()
            .find(|(n, _)| n == "score")
            .and_then(|(_, v)| v.trim().parse::<f64>().ok())
            .filter(|p| p.is_finite() && (0.0..=100.0).contains(p));
        let Some(percent) = score else {
            return error_page(
                Site::Platform,
                StatusCode::BAD_REQUEST,
                "The score must be a number from 0 to 100.",
            );
        };
        let score = (percent * 10.0).round() / 1000.0;
        let (accepted, answer) = self.send_completion(&id.user, score).await;
        self.state().completions.insert(
            (id.user.clone(), COURSE_ID.to_string()),
            Completion {
                score,
                accepted,
                answer,
            },
        );
        respond::see_other(&format!("/courses/{COURSE_ID}"))
    }

    /// Sends the signed completion webhook; returns whether ltigate accepted
    /// it and a one-line account of its answer.
    async fn send_completion(&self, user: &str, score: f64) -> (bool, String) {
        let body = serde_json::json!({
            "event_id": format!("demo-{}", random_token()),
            "user": user,
            "course": COURSE_ID,
            "activity": GRADE_ACTIVITY,
            "score": score,
        })
        .to_string();
        let signature = sign_webhook(body.as_bytes(), &self.webhook_secret, unix_now());
        let sent = self
            .client
            .post(&self.webhook_url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-ltigate-signature", signature)
            .body(body)
            .send()
            .await;
        let outcome = match sent {
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                let text: String = text.trim().chars().take(200).collect();
                (status.is_success(), format!("{status} {text}"))
            }
            Err(e) => (false, format!("cannot reach ltigate: {e}")),
        };
        tracing::info!(user, score, answer = %outcome.1, "demo platform: completion webhook sent");
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_decoded_for_display() {
        let mut h = HeaderMap::new();
        h.insert("x-lti-user", "demo:u-1002".parse().unwrap());
        h.insert("x-lti-given-name", "Jos%C3%A9".parse().unwrap());
        h.insert("x-lti-family-name", "N%C3%BA%C3%B1ez".parse().unwrap());
        h.insert("x-lti-course-roles", "DEMO-101=Learner".parse().unwrap());
        let id = Identity::from_headers(&h).unwrap();
        assert_eq!(id.user, "demo:u-1002");
        assert_eq!(id.name, "José Núñez");
        assert_eq!(
            id.headers,
            vec![
                ("X-LTI-User", "demo:u-1002".to_string()),
                ("X-LTI-Given-Name", "José".to_string()),
                ("X-LTI-Family-Name", "Núñez".to_string()),
                ("X-LTI-Course-Roles", "DEMO-101=Learner".to_string()),
            ]
        );
        assert!(Identity::from_headers(&HeaderMap::new()).is_none());
    }
}
