//! The demo LMS: what an LMS does for an LTI 1.1 tool, in a few pages.
//!
//! - `GET /`: the learner's courses, with a launch button, and the gradebook.
//! - `GET /courses/{course}?learner=ID`: the course page; the tool runs in an
//!   iframe, as LMSs embed tools, next to a live gradebook.
//! - `GET /launch/{course}?learner=ID`: what the iframe loads: a freshly signed
//!   LTI 1.1 launch form that submits itself to ltigate, with
//!   `lis_outcome_service_url` and `lis_result_sourcedid`.
//! - `POST /outcomes`: the Basic Outcomes service. It checks the OAuth 1.0a
//!   signature of the `Authorization` header, the body hash, the timestamp
//!   and the nonce, then applies `replaceResult`, `readResult` or
//!   `deleteResult` and answers with a POX envelope.
//! - `GET /gradebook.json`: the gradebook, for the live view.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::web::{self, error_page, page, Site};
use super::{learner, Learner, CONSUMER_KEY, CONSUMER_SECRET, COURSE_ID, COURSE_TITLE, LEARNERS};
use crate::http::respond::{self, html_escape};
use crate::http::{decode_path_segment, unix_now, Body};
use crate::lti::encode::parse_form;
use crate::lti::oauth1::{
    base_string_uri_from_url, body_hash, parse_authorization_header, sign, sign_launch,
    signature_base_string, signatures_equal, LaunchSigner, SignatureMethod, UriError,
};
use crate::lti::outcomes::{build_response, parse_request, CodeMajor, Operation, PoxError};
use crate::secret::random_token;

/// Largest outcome request body.
const MAX_OUTCOME_BODY: usize = 64 * 1024;
/// Accepted difference between `oauth_timestamp` and now, in seconds.
const MAX_SKEW: u64 = 300;
/// The OAuth parameters an outcome request must carry, each once.
const REQUIRED_OAUTH: [&str; 6] = [
    "oauth_consumer_key",
    "oauth_signature_method",
    "oauth_timestamp",
    "oauth_nonce",
    "oauth_signature",
    "oauth_body_hash",
];

/// One gradebook entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grade {
    /// Course ID.
    pub course: String,
    /// LMS user ID.
    pub user: String,
    /// Score 0.0–1.0.
    pub score: f64,
    /// When it arrived (Unix seconds).
    pub updated: u64,
}

/// What the LMS puts in `lis_result_sourcedid`: JSON, as Moodle does.
#[derive(Debug, Serialize, Deserialize)]
struct SourcedId {
    course: String,
    user: String,
}

/// The sourcedId of a learner's result in a course.
pub fn sourced_id(course: &str, user: &str) -> String {
    serde_json::to_string(&SourcedId {
        course: course.to_string(),
        user: user.to_string(),
    })
    .unwrap_or_default()
}

#[derive(Default)]
struct State {
    grades: BTreeMap<(String, String), Grade>,
    /// Outcome nonces seen, with when they may be forgotten.
    nonces: HashMap<String, u64>,
}

/// The demo LMS.
pub struct Lms {
    base_url: String,
    launch_url: String,
    lti13: super::lms13::Platform13,
    state: Mutex<State>,
}

/// Why an outcome request was refused before its body was read as POX.
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    message: String,
}

impl Refused {
    fn unauthorized(message: impl Into<String>) -> Self {
        Refused {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
        }
    }
}

impl Lms {
    /// An LMS served at `base_url` (`http://127.0.0.1:<port>`) that launches
    /// the tool at `launch_url` by LTI 1.1, and by LTI 1.3 as `lti13`.
    pub fn new(base_url: &str, launch_url: &str, lti13: super::lms13::Platform13) -> Lms {
        Lms {
            base_url: base_url.trim_end_matches('/').to_string(),
            launch_url: launch_url.to_string(),
            lti13,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The Basic Outcomes service URL sent in launches.
    pub fn outcome_url(&self) -> String {
        format!("{}/outcomes", self.base_url)
    }

    /// Every grade received, by course then user.
    pub fn gradebook(&self) -> Vec<Grade> {
        self.state().grades.values().cloned().collect()
    }

    /// The signed launch parameters for `learner` in `course`.
    pub fn launch_params(
        &self,
        course: &str,
        learner: &Learner,
        nonce: &str,
        timestamp: u64,
    ) -> Result<Vec<(String, String)>, UriError> {
        let course_page = format!(
            "{}/courses/{course}?learner={}",
            self.base_url, learner.user_id
        );
        let params: Vec<(String, String)> = [
            ("lti_message_type", "basic-lti-launch-request"),
            ("lti_version", "LTI-1p0"),
            ("resource_link_id", &format!("{course}-final")),
            ("resource_link_title", "Final assessment"),
            ("context_id", course),
            ("context_label", course),
            ("context_title", COURSE_TITLE),
            ("user_id", learner.user_id),
            ("roles", "Learner"),
            ("lis_person_name_given", learner.given),
            ("lis_person_name_family", learner.family),
            ("lis_person_name_full", &learner.full_name()),
            ("lis_person_contact_email_primary", learner.email),
            ("custom_course", course),
            ("lis_outcome_service_url", &self.outcome_url()),
            ("lis_result_sourcedid", &sourced_id(course, learner.user_id)),
            ("launch_presentation_document_target", "iframe"),
            ("launch_presentation_return_url", &course_page),
            ("launch_presentation_locale", "en"),
            ("tool_consumer_info_product_family_code", "ltigate-demo"),
            ("tool_consumer_instance_guid", "demo-lms.ltigate.invalid"),
            ("tool_consumer_instance_name", "Demo LMS"),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        sign_launch(
            &LaunchSigner {
                url: &self.launch_url,
                consumer_key: CONSUMER_KEY,
                consumer_secret: CONSUMER_SECRET.as_bytes(),
                method: SignatureMethod::HmacSha1,
                nonce,
                timestamp,
            },
            &params,
        )
    }

    /// Handles one request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path().to_string();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let chosen = web::query_param(&req, "learner");
        let chosen = match chosen.as_deref() {
            None => LEARNERS.first(),
            Some(id) => learner(id),
        };
        match (req.method().clone(), segments.as_slice()) {
            (Method::GET | Method::HEAD, [""]) => self.home(),
            (Method::GET | Method::HEAD, ["gradebook.json"]) => self.gradebook_json(),
            (Method::GET | Method::HEAD, ["courses", course]) => {
                let lti13 = web::query_param(&req, "lti").as_deref() == Some("1.3");
                match (known_course(course), chosen) {
                    (true, Some(l)) => self.course_page(l, lti13),
                    _ => not_found(),
                }
            }
            (Method::GET | Method::HEAD, ["launch13", course]) => {
                match (known_course(course), chosen) {
                    (true, Some(l)) => self.lti13.start_login(l),
                    _ => not_found(),
                }
            }
            (Method::GET, ["lti13", "auth"]) => {
                self.lti13.authorize(&crate::http::query_pairs(&req))
            }
            (Method::GET | Method::HEAD, ["lti13", "jwks.json"]) => self.lti13.jwks(),
            (Method::POST, ["lti13", "token"]) => match web::read_body(req, MAX_OUTCOME_BODY).await
            {
                Ok(body) => {
                    self.lti13
                        .token(&parse_form(&body).unwrap_or_default())
                        .await
                }
                Err(status) => error_page(Site::Lms, status, "The token request is too large."),
            },
            (Method::POST, ["lti13", "lineitems", course, "lineitem", "scores"]) => {
                let course = course.to_string();
                if !known_course(&course) {
                    return not_found();
                }
                self.ags_score(&course, req).await
            }
            (Method::GET | Method::HEAD, ["launch", course]) => {
                match (known_course(course), chosen) {
                    (true, Some(l)) => self.launch_form(l),
                    _ => not_found(),
                }
            }
            (Method::POST, ["outcomes"]) => self.outcomes(req).await,
            (_, ["outcomes"]) => error_page(
                Site::Lms,
                StatusCode::METHOD_NOT_ALLOWED,
                "The outcome service takes POST requests from tools.",
            ),
            _ => not_found(),
        }
    }

    /// An AGS score into the gradebook.
    async fn ags_score<B>(&self, course: &str, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let headers = req.headers().clone();
        let body = match web::read_body(req, MAX_OUTCOME_BODY).await {
            Ok(b) => b,
            Err(status) => return error_page(Site::Lms, status, "The score is too large."),
        };
        match self.lti13.score(course, &headers, &body) {
            Ok(score) => {
                tracing::info!(course = %score.course, user = %score.user, score = score.score, "demo LMS: AGS score received");
                self.state().grades.insert(
                    (score.course.clone(), score.user.clone()),
                    Grade {
                        course: score.course,
                        user: score.user,
                        score: score.score,
                        updated: unix_now(),
                    },
                );
                respond::json(StatusCode::OK, &serde_json::json!({}))
            }
            Err((status, why)) => respond::json(status, &serde_json::json!({ "error": why })),
        }
    }

    fn gradebook_rows(&self) -> Vec<serde_json::Value> {
        let state = self.state();
        LEARNERS
            .iter()
            .map(|l| {
                let grade = state
                    .grades
                    .get(&(COURSE_ID.to_string(), l.user_id.to_string()));
                serde_json::json!({
                    "course": COURSE_ID,
                    "user": l.user_id,
                    "name": l.full_name(),
                    "score": grade.map(|g| g.score),
                    "grade": grade.map_or_else(|| "—".to_string(), |g| web::percent(g.score)),
                    "updated": grade.map_or_else(String::new, |g| web::clock(g.updated)),
                })
            })
            .collect()
    }

    fn gradebook_json(&self) -> Response<Body> {
        respond::json(
            StatusCode::OK,
            &serde_json::Value::Array(self.gradebook_rows()),
        )
    }

    /// The gradebook table, updated live from `/gradebook.json`. `compact`:
    /// the course page's narrow column (no course column, the user ID under
    /// the name).
    fn gradebook_html(&self, compact: bool) -> String {
        let rows: String = self
            .gradebook_rows()
            .iter()
            .map(|r| {
                let text = |k: &str| html_escape(r[k].as_str().unwrap_or_default());
                let key = format!("{}-{}", text("course"), text("user"));
                let who = if compact {
                    format!(
                        "<td>{}<br><span class=\"mono muted\">{}</span></td>",
                        text("name"),
                        text("user")
                    )
                } else {
                    format!(
                        "<td>{}</td><td class=\"mono\">{}</td><td>{}</td>",
                        text("name"),
                        text("user"),
                        text("course")
                    )
                };
                format!(
                    "<tr>{who}<td id=\"grade-{key}\" class=\"grade\">{}</td><td id=\"updated-{key}\" class=\"muted\">{}</td></tr>",
                    text("grade"),
                    text("updated"),
                )
            })
            .collect();
        let head = if compact {
            "<th>Learner</th><th>Grade</th><th>Received</th>"
        } else {
            "<th>Learner</th><th>User ID</th><th>Course</th><th>Grade</th><th>Received</th>"
        };
        format!(
            "<table id=\"gradebook\"><tr>{head}</tr>{rows}</table>\
             <script>(function(){{function tick(){{fetch('/gradebook.json',{{cache:'no-store'}}).then(function(r){{return r.json();}}).then(function(rows){{rows.forEach(function(g){{\
             var k=g.course+'-'+g.user,c=document.getElementById('grade-'+k),u=document.getElementById('updated-'+k);\
             if(c){{c.textContent=g.grade;}}if(u){{u.textContent=g.updated;}}}});}}).catch(function(){{}});}}setInterval(tick,1000);}})();</script>"
        )
    }

    fn home(&self) -> Response<Body> {
        let options: String = LEARNERS
            .iter()
            .map(|l| {
                format!(
                    "<option value=\"{}\">{}</option>",
                    html_escape(l.user_id),
                    html_escape(&l.full_name())
                )
            })
            .collect();
        let body = format!(
            "<h1>My courses</h1>\
             <div class=\"card\"><table><tr><th>Course</th><th>Tool</th><th></th></tr>\
             <tr><td><b>{COURSE_TITLE}</b><br><span class=\"muted\">{COURSE_ID}</span></td>\
             <td>Demo learning platform<br><span class=\"muted\">LTI 1.1 external tool, through ltigate</span></td>\
             <td><form method=\"get\" action=\"/courses/{COURSE_ID}\">\
             <label>Launch as <select id=\"learner\" name=\"learner\">{options}</select></label> \
             <button id=\"launch\" type=\"submit\">Launch</button> \
             <button id=\"launch13\" type=\"submit\" name=\"lti\" value=\"1.3\">Launch by LTI 1.3</button></form></td></tr></table></div>\
             <h2>Gradebook</h2><div class=\"card\">{gradebook}\
             <p class=\"muted\">Grades arrive from the tool through the LTI Basic Outcomes service at \
             <span class=\"mono\">{outcomes}</span>, signed with the consumer key \
             <span class=\"mono\">{CONSUMER_KEY}</span>.</p></div>\
             <div class=\"card muted\">This LMS launches the tool at <span class=\"mono\">{launch}</span> \
             (key <span class=\"mono\">{CONSUMER_KEY}</span>, secret <span class=\"mono\">{CONSUMER_SECRET}</span>, \
             custom parameter <span class=\"mono\">course={COURSE_ID}</span>), inside an iframe as LMSs do. \
             By LTI 1.3 it is the platform <span class=\"mono\">{issuer}</span> (client id \
             <span class=\"mono\">{client_id}</span>, deployment <span class=\"mono\">{deployment}</span>): \
             the login starts at ltigate's <span class=\"mono\">/lti/1.3/login</span> and the id_token is \
             signed with this LMS's key, published at <span class=\"mono\">/lti13/jwks.json</span>; \
             grades of LTI 1.3 launches come back as AGS scores on the course's line item.</div>",
            gradebook = self.gradebook_html(false),
            outcomes = html_escape(&self.outcome_url()),
            launch = html_escape(&self.launch_url),
            issuer = html_escape(self.lti13.issuer()),
            client_id = super::lms13::CLIENT_ID,
            deployment = super::lms13::DEPLOYMENT_ID,
        );
        respond::html(
            StatusCode::OK,
            page(Site::Lms, "My courses", "learner view", &body),
        )
    }

    /// The course page: the tool's iframe with the gradebook beside it (on
    /// narrow screens above it), so the grade is seen arriving. The iframe
    /// launches by LTI 1.1, or by LTI 1.3 with `lti13`.
    fn course_page(&self, l: &Learner, lti13: bool) -> Response<Body> {
        let launch = if lti13 { "launch13" } else { "launch" };
        let body = format!(
            "<h1>{COURSE_TITLE} <span class=\"muted\">({COURSE_ID})</span></h1>\
             <div class=\"course\">\
             <iframe id=\"tool\" name=\"tool\" title=\"Demo learning platform\" \
             src=\"/{launch}/{COURSE_ID}?learner={user}\"></iframe>\
             <aside><h2>Gradebook</h2><div class=\"card\">{gradebook}\
             <p class=\"muted\">Grades the tool sends back appear here as they arrive.</p></div>\
             <p><a href=\"/\">← My courses</a></p></aside></div>",
            user = html_escape(l.user_id),
            gradebook = self.gradebook_html(true),
        );
        respond::html(
            StatusCode::OK,
            page(Site::Lms, COURSE_TITLE, &who(l), &body),
        )
    }

    /// The self-submitting launch form the iframe loads.
    fn launch_form(&self, l: &Learner) -> Response<Body> {
        let params = match self.launch_params(COURSE_ID, l, &random_token(), unix_now()) {
            Ok(p) => p,
            Err(e) => {
                return error_page(
                    Site::Lms,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("Cannot sign the launch: {e}"),
                )
            }
        };
        let inputs: String = params
            .iter()
            .map(|(n, v)| {
                format!(
                    "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                    html_escape(n),
                    html_escape(v)
                )
            })
            .collect();
        let body = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Launching…</title></head>\
             <body style=\"font-family:system-ui,sans-serif;color:#555;padding:1rem\">\
             <form id=\"ltiLaunch\" method=\"post\" action=\"{action}\">{inputs}\
             <p>Launching the tool… <noscript><button type=\"submit\">Continue</button></noscript></p></form>\
             <script>document.getElementById('ltiLaunch').submit();</script></body></html>\n",
            action = html_escape(&self.launch_url),
        );
        respond::html(StatusCode::OK, body)
    }

    async fn outcomes<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let checked = self.check_outcome_request(req).await;
        let body = match checked {
            Ok(body) => body,
            Err(r) => {
                tracing::info!(reason = %r.message, "demo LMS: outcome request refused");
                return pox(r.status, "", "", &CodeMajor::Failure, &r.message, None);
            }
        };
        let request = match parse_request(&body) {
            Ok(r) => r,
            Err(PoxError::UnsupportedOperation(op)) => {
                let op = op.strip_suffix("Request").unwrap_or(&op).to_string();
                return pox(
                    StatusCode::OK,
                    "",
                    &op,
                    &CodeMajor::Unsupported,
                    "This operation is not supported.",
                    None,
                );
            }
            Err(e) => {
                return pox(
                    StatusCode::BAD_REQUEST,
                    "",
                    "",
                    &CodeMajor::Failure,
                    &e.to_string(),
                    None,
                )
            }
        };
        let op = request.operation.name();
        let target = serde_json::from_str::<SourcedId>(&request.sourced_id)
            .ok()
            .filter(|s| s.course == COURSE_ID && learner(&s.user).is_some());
        let Some(target) = target else {
            return pox(
                StatusCode::OK,
                &request.message_id,
                op,
                &CodeMajor::Failure,
                "Unknown sourcedId.",
                None,
            );
        };
        let key = (target.course.clone(), target.user.clone());
        let mut state = self.state();
        let (description, read) = match request.operation {
            Operation::Replace { score } => {
                state.grades.insert(
                    key,
                    Grade {
                        course: target.course.clone(),
                        user: target.user.clone(),
                        score,
                        updated: unix_now(),
                    },
                );
                tracing::info!(course = %target.course, user = %target.user, score, "demo LMS: grade received");
                (format!("Score {score} recorded."), None)
            }
            Operation::Read => {
                let score = state.grades.get(&key).map(|g| g.score.to_string());
                ("Result read.".to_string(), Some(score.unwrap_or_default()))
            }
            Operation::Delete => {
                state.grades.remove(&key);
                ("Result deleted.".to_string(), None)
            }
        };
        drop(state);
        pox(
            StatusCode::OK,
            &request.message_id,
            op,
            &CodeMajor::Success,
            &description,
            read.as_deref(),
        )
    }

    /// Checks content type, OAuth signature, body hash, timestamp and nonce;
    /// returns the body.
    async fn check_outcome_request<B>(&self, req: Request<B>) -> Result<bytes::Bytes, Refused>
    where
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        if !is_xml(req.headers()) {
            return Err(Refused {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: "Content-Type must be application/xml.".into(),
            });
        }
        let auth = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_authorization_header)
            .ok_or_else(|| Refused::unauthorized("An OAuth Authorization header is required."))?;
        let query = req
            .uri()
            .query()
            .map(|q| parse_form(q.as_bytes()))
            .transpose()
            .map_err(|_| Refused::unauthorized("The query string is malformed."))?
            .unwrap_or_default();
        let body = web::read_body(req, MAX_OUTCOME_BODY)
            .await
            .map_err(|status| Refused {
                status,
                message: "The body could not be read.".into(),
            })?;
        self.verify_oauth(&auth, &query, &body)
            .map_err(Refused::unauthorized)?;
        Ok(body)
    }

    fn verify_oauth(
        &self,
        auth: &[(String, String)],
        query: &[(String, String)],
        body: &[u8],
    ) -> Result<(), String> {
        let get = |name: &str| {
            auth.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_default()
        };
        for name in REQUIRED_OAUTH {
            if auth.iter().filter(|(n, _)| n == name).count() != 1 {
                return Err(format!("{name} is missing or repeated."));
            }
        }
        if get("oauth_consumer_key") != CONSUMER_KEY {
            return Err("Unknown consumer key.".into());
        }
        let method = SignatureMethod::parse(get("oauth_signature_method"))
            .ok_or("Unsupported oauth_signature_method.")?;
        if auth.iter().any(|(n, v)| n == "oauth_version" && v != "1.0") {
            return Err("oauth_version must be 1.0.".into());
        }
        let timestamp: u64 = get("oauth_timestamp")
            .parse()
            .map_err(|_| "oauth_timestamp is not a number.")?;
        let now = unix_now();
        if now.abs_diff(timestamp) > MAX_SKEW {
            return Err("oauth_timestamp is too old or in the future.".into());
        }
        if !signatures_equal(&body_hash(method, body), get("oauth_body_hash")) {
            return Err("oauth_body_hash does not match the body.".into());
        }
        let base_uri = base_string_uri_from_url(&self.outcome_url()).map_err(|e| e.to_string())?;
        let base = signature_base_string(
            "POST",
            &base_uri,
            query
                .iter()
                .chain(auth.iter())
                .map(|(n, v)| (n.as_str(), v.as_str())),
        );
        let expected = sign(method, &base, CONSUMER_SECRET.as_bytes(), b"");
        if !signatures_equal(&expected, get("oauth_signature")) {
            return Err("The OAuth signature does not verify.".into());
        }
        let mut state = self.state();
        state.nonces.retain(|_, until| *until > now);
        let nonce = get("oauth_nonce").to_string();
        if state.nonces.contains_key(&nonce) {
            return Err("oauth_nonce was already used.".into());
        }
        state.nonces.insert(nonce, timestamp + 2 * MAX_SKEW);
        Ok(())
    }
}

fn known_course(raw: &str) -> bool {
    decode_path_segment(raw).ok().as_deref() == Some(COURSE_ID)
}

fn not_found() -> Response<Body> {
    error_page(Site::Lms, StatusCode::NOT_FOUND, "There is no such page.")
}

fn who(l: &Learner) -> String {
    format!("signed in as {}", html_escape(&l.full_name()))
}

fn is_xml(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/xml"))
}

/// A POX response envelope.
fn pox(
    status: StatusCode,
    message_ref: &str,
    operation_ref: &str,
    code: &CodeMajor,
    description: &str,
    read_score: Option<&str>,
) -> Response<Body> {
    let xml = build_response(
        &random_token(),
        message_ref,
        operation_ref,
        code,
        description,
        read_score,
    );
    let mut resp = respond::text(status, xml);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lti::oauth1::{verify, VerifyRequest};

    #[test]
    fn launches_are_signed_for_the_launch_url() {
        let lms = Lms::new(
            "http://127.0.0.1:8000/",
            "http://localhost:8080/lti/launch",
            super::super::lms13::Platform13::new("http://127.0.0.1:8000", "http://localhost:8080")
                .unwrap(),
        );
        let params = lms
            .launch_params(COURSE_ID, &LEARNERS[1], "n-1", 1_700_000_000)
            .unwrap();
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get("custom_course"), COURSE_ID);
        assert_eq!(get("user_id"), "u-1002");
        assert_eq!(get("lis_person_name_given"), "José");
        assert_eq!(
            get("lis_outcome_service_url"),
            "http://127.0.0.1:8000/outcomes"
        );
        assert_eq!(
            get("lis_result_sourcedid"),
            r#"{"course":"DEMO-101","user":"u-1002"}"#
        );
        let signature = get("oauth_signature");
        let verified = verify(
            &VerifyRequest {
                http_method: "POST",
                base_uri: "http://localhost:8080/lti/launch",
                query: &[],
                body: &params,
                method: SignatureMethod::HmacSha1,
                signature: &signature,
            },
            &[CONSUMER_SECRET.as_bytes()],
        );
        assert_eq!(verified, Some(0));
    }
}
