//! `POST /webhooks/completion` on the admin listener: the platform reports
//! that a learner completed an activity; the grade is queued for the LMS.
//!
//! Checks in order: a secret is configured (401), body size and arrival
//! (413, 408), signature and its age (401), JSON (400), fields (422 naming
//! the field), the learner launched the course through ltigate (422),
//! duplicate `event_id` (200), activity filter (200 `ignored`), then the
//! durable enqueue (202 `queued` or `waiting_for_target`). Every refusal is
//! a [`WebhookError`], answered as JSON by [`respond::reject`].

use std::borrow::Cow;
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Value};

use super::{verify_webhook_signature, SignatureError};
use crate::config::Settings;
use crate::http::respond::{self, HttpError};
use crate::http::{unix_now, AppState, Body, BoxError};
use crate::secret::Secret;
use crate::store::{EnqueueOutcome, Enrolment, StoreError};

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-ltigate-signature";

/// Every refusal of the completion webhook (DESIGN §6): its status, its
/// JSON `error` label ([`HttpError::label`]) and the `result` it counts
/// under in `ltigate_webhooks_total` ([`WebhookError::result`]).
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookError {
    /// `webhook.secret` is not configured: nothing could be verified, so
    /// nothing is read.
    Disabled,
    /// The body did not arrive within `server.header_read_timeout`.
    Timeout,
    /// The body is longer than `webhook.max_body`.
    TooLarge {
        /// `webhook.max_body`.
        max: usize,
    },
    /// The body could not be read.
    Unreadable,
    /// `X-Ltigate-Signature` is missing, malformed, stale or does not match.
    BadSignature(SignatureError),
    /// The body is JSON, but not an object.
    NotAnObject,
    /// The body is not JSON: the parser's message (positions, never input).
    BadJson(String),
    /// A field is missing, of the wrong type or out of range.
    Invalid {
        /// The field, named in the answer.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// `user` has no configured tenant's `lms_id`.
    UnknownConsumer,
    /// The learner never launched the course through ltigate.
    NotEnrolled,
    /// The store did not answer; the platform retries. Not counted in
    /// `ltigate_webhooks_total` (it is in `ltigate_store_errors_total`).
    StoreUnavailable,
}

impl WebhookError {
    /// The `result` label of `ltigate_webhooks_total` this refusal counts
    /// under (one of [`crate::metrics::WEBHOOK_RESULTS`]); `None` when it
    /// is not counted there.
    pub fn result(&self) -> Option<&'static str> {
        match self {
            WebhookError::Disabled | WebhookError::BadSignature(_) => Some("bad_signature"),
            WebhookError::StoreUnavailable => None,
            _ => Some("invalid"),
        }
    }

    /// The field an `invalid` answer names.
    fn field(&self) -> Option<&'static str> {
        match self {
            WebhookError::Invalid { field, .. } => Some(field),
            WebhookError::UnknownConsumer | WebhookError::NotEnrolled => Some("user"),
            _ => None,
        }
    }
}

impl HttpError for WebhookError {
    fn status(&self) -> StatusCode {
        match self {
            WebhookError::Disabled | WebhookError::BadSignature(_) => StatusCode::UNAUTHORIZED,
            WebhookError::Timeout => StatusCode::REQUEST_TIMEOUT,
            WebhookError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::Unreadable | WebhookError::NotAnObject | WebhookError::BadJson(_) => {
                StatusCode::BAD_REQUEST
            }
            WebhookError::Invalid { .. }
            | WebhookError::UnknownConsumer
            | WebhookError::NotEnrolled => StatusCode::UNPROCESSABLE_ENTITY,
            WebhookError::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            WebhookError::Disabled | WebhookError::BadSignature(_) => "bad_signature",
            WebhookError::Timeout => "timeout",
            WebhookError::TooLarge { .. } => "too_large",
            WebhookError::Unreadable => "unreadable_body",
            WebhookError::NotAnObject | WebhookError::BadJson(_) => "invalid_json",
            WebhookError::Invalid { .. }
            | WebhookError::UnknownConsumer
            | WebhookError::NotEnrolled => "invalid",
            WebhookError::StoreUnavailable => "store_unavailable",
        }
    }

    fn message(&self) -> Cow<'static, str> {
        match self {
            WebhookError::Disabled => {
                "webhooks are disabled: webhook.secret is not configured".into()
            }
            WebhookError::Timeout => {
                "the body did not arrive within server.header_read_timeout".into()
            }
            WebhookError::TooLarge { max } => format!("body over {max} bytes").into(),
            WebhookError::Unreadable => "the body could not be read".into(),
            WebhookError::BadSignature(why) => signature_message(*why).into(),
            WebhookError::NotAnObject => "the body must be a JSON object".into(),
            WebhookError::BadJson(why) => why.clone().into(),
            WebhookError::Invalid { message, .. } => message.clone().into(),
            WebhookError::UnknownConsumer => "unknown learner: no consumer has this lms_id".into(),
            WebhookError::NotEnrolled => {
                "unknown learner for this course: the learner never launched it through ltigate"
                    .into()
            }
            WebhookError::StoreUnavailable => "try again later".into(),
        }
    }

    fn add_json(&self, body: &mut serde_json::Map<String, Value>) {
        if let Some(field) = self.field() {
            body.insert("field".into(), field.into());
        }
    }
}

fn signature_message(why: SignatureError) -> &'static str {
    match why {
        SignatureError::Malformed => "missing or malformed X-Ltigate-Signature",
        SignatureError::Stale => "signature timestamp outside the tolerance",
        SignatureError::Mismatch => "signature does not match",
    }
}

/// Every accepted answer of the webhook: `{"status": <label>}`, also the
/// `result` label of `ltigate_webhooks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepted {
    /// Durably stored for delivery.
    Queued,
    /// Stored; sent once the learner's outcome target arrives.
    WaitingForTarget,
    /// This `event_id` was seen before.
    Duplicate,
    /// Not the course's grade activity (remembered, not sent).
    Ignored,
}

impl Accepted {
    fn status(self) -> StatusCode {
        match self {
            Accepted::Queued | Accepted::WaitingForTarget => StatusCode::ACCEPTED,
            Accepted::Duplicate | Accepted::Ignored => StatusCode::OK,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Accepted::Queued => "queued",
            Accepted::WaitingForTarget => "waiting_for_target",
            Accepted::Duplicate => "duplicate",
            Accepted::Ignored => "ignored",
        }
    }
}

/// Handles one completion webhook: every answer is counted under its
/// `result` and rendered here.
pub async fn handle<B>(
    app: &AppState,
    notify: &tokio::sync::Notify,
    req: Request<B>,
) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<BoxError>,
{
    match accept(app, notify, req).await {
        Ok(accepted) => {
            app.metrics
                .webhooks
                .with_label_values(&[accepted.label()])
                .inc();
            respond::json(accepted.status(), &json!({"status": accepted.label()}))
        }
        Err(refused) => {
            if let Some(result) = refused.result() {
                app.metrics.webhooks.with_label_values(&[result]).inc();
            }
            respond::reject(&refused, true)
        }
    }
}

/// The webhook's steps, in the order of the module documentation.
async fn accept<B>(
    app: &AppState,
    notify: &tokio::sync::Notify,
    req: Request<B>,
) -> Result<Accepted, WebhookError>
where
    B: http_body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let settings = &app.settings;
    let (parts, body) = req.into_parts();
    // Without a secret nothing could be verified: no body is read.
    let secret = settings
        .webhook
        .secret
        .as_ref()
        .ok_or(WebhookError::Disabled)?;
    let body = read_body(settings, body).await?;
    authenticate(settings, &parts.headers, &body, secret)?;
    let json = parse_object(&body)?;
    let event = Event::from_json(&json)?;
    let enrolment = find_learner(app, &event).await?;
    if !event.is_graded(settings) {
        return ignore(app, &event, &enrolment).await;
    }
    enqueue(app, notify, &event, &enrolment).await
}

/// The body, up to `webhook.max_body`, within the time headers get: a
/// stalled sender holds nothing.
async fn read_body<B>(settings: &Settings, body: B) -> Result<bytes::Bytes, WebhookError>
where
    B: http_body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let max = settings.webhook.max_body;
    let read = tokio::time::timeout(
        settings.server.header_read_timeout,
        Limited::new(body, max).collect(),
    )
    .await
    .map_err(|_| WebhookError::Timeout)?;
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(WebhookError::TooLarge { max })
        }
        Err(_) => Err(WebhookError::Unreadable),
    }
}

/// Checks `X-Ltigate-Signature` over the exact bytes received.
fn authenticate(
    settings: &Settings,
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
) -> Result<(), WebhookError> {
    let header = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    verify_webhook_signature(header, body, secret, unix_now(), settings.webhook.tolerance).map_err(
        |why| {
            tracing::info!(reason = signature_message(why), "webhook refused");
            WebhookError::BadSignature(why)
        },
    )
}

/// The body as a JSON object.
fn parse_object(body: &[u8]) -> Result<Value, WebhookError> {
    match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(WebhookError::NotAnObject),
        Err(e) => Err(WebhookError::BadJson(e.to_string())),
    }
}

/// A completion event whose fields are checked.
struct Event<'a> {
    event_id: &'a str,
    user: &'a str,
    course: &'a str,
    /// Empty when the event names none.
    activity: &'a str,
    /// 0.0–1.0.
    score: f64,
}

impl<'a> Event<'a> {
    /// The fields of `v`, checked in order; the first bad one is named.
    fn from_json(v: &'a Value) -> Result<Self, WebhookError> {
        let event_id = text_field(v, "event_id", 200)?;
        let user = text_field(v, "user", 256)?;
        let course = text_field(v, "course", crate::lti::launch::MAX_COURSE_ID)?;
        let activity = match v.get("activity") {
            None | Some(Value::Null) => "",
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(invalid("activity", "activity must be a string".into())),
        };
        let score = score_of(v)?;
        Ok(Event {
            event_id,
            user,
            course,
            activity,
            score,
        })
    }

    /// Whether the event is for the course's grade activity (every event
    /// is, without one).
    fn is_graded(&self, settings: &Settings) -> bool {
        let graded = settings
            .courses
            .get(self.course)
            .and_then(|c| c.grade_activity.as_deref());
        graded.is_none_or(|g| g == self.activity)
    }
}

fn invalid(field: &'static str, message: String) -> WebhookError {
    WebhookError::Invalid { field, message }
}

fn text_field<'a>(v: &'a Value, name: &'static str, max: usize) -> Result<&'a str, WebhookError> {
    match v.get(name) {
        Some(Value::String(s))
            if !s.trim().is_empty() && s.len() <= max && !s.chars().any(char::is_control) =>
        {
            Ok(s)
        }
        Some(Value::String(s)) if s.len() > max => {
            Err(invalid(name, format!("{name} is longer than {max} bytes")))
        }
        Some(Value::String(_)) => Err(invalid(
            name,
            format!("{name} must be a non-empty string without control characters"),
        )),
        Some(_) => Err(invalid(name, format!("{name} must be a string"))),
        None => Err(invalid(name, format!("{name} is required"))),
    }
}

/// The score in 0.0–1.0 from `score`, or from `percentage` (0–100).
fn score_of(v: &Value) -> Result<f64, WebhookError> {
    let number = |name: &'static str, max: f64| -> Result<Option<f64>, WebhookError> {
        match v.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(x) if x.is_finite() && (0.0..=max).contains(&x) => Ok(Some(x)),
                _ => Err(invalid(name, format!("{name} must be between 0 and {max}"))),
            },
            Some(_) => Err(invalid(
                name,
                format!("{name} must be a finite number between 0 and {max}"),
            )),
        }
    };
    if let Some(s) = number("score", 1.0)? {
        return Ok(s);
    }
    if let Some(p) = number("percentage", 100.0)? {
        return Ok(p / 100.0);
    }
    Err(invalid(
        "score",
        "score (0.0–1.0) or percentage (0–100) is required".into(),
    ))
}

/// The learner's enrolment: `user` is `<lms_id><sep><user_id>` of a
/// configured tenant, who launched the course through ltigate.
async fn find_learner(app: &AppState, event: &Event<'_>) -> Result<Enrolment, WebhookError> {
    let sep = &app.settings.launch.id_separator;
    let tenant = event
        .user
        .split_once(sep.as_str())
        .and_then(|(lms_id, _)| app.settings.tenant_by_lms_id(lms_id))
        .ok_or(WebhookError::UnknownConsumer)?;
    let enrolment = Enrolment::new(&tenant.name, event.course, event.user);
    match app.store.get_enrolment(&enrolment).await {
        Ok(Some(_)) => Ok(enrolment),
        Ok(None) => Err(WebhookError::NotEnrolled),
        Err(e) => Err(store_down(app, event, e)),
    }
}

/// How long event ids are remembered: at least as long as a signature
/// stays valid.
fn event_ttl(settings: &Settings) -> Duration {
    settings.webhook.tolerance.max(Duration::from_secs(300)) * 2
}

/// An event for another activity: remembered (so a replay is a
/// duplicate), not sent.
async fn ignore(
    app: &AppState,
    event: &Event<'_>,
    enrolment: &Enrolment,
) -> Result<Accepted, WebhookError> {
    let ttl = event_ttl(&app.settings);
    match app
        .store
        .remember_event(enrolment, event.event_id, ttl)
        .await
    {
        Ok(true) => {
            tracing::info!(
                event_id = event.event_id,
                course = event.course,
                activity = event.activity,
                "completion ignored: not the grade activity"
            );
            Ok(Accepted::Ignored)
        }
        Ok(false) => Ok(Accepted::Duplicate),
        Err(e) => Err(store_down(app, event, e)),
    }
}

/// The durable enqueue; a queued grade wakes the worker.
async fn enqueue(
    app: &AppState,
    notify: &tokio::sync::Notify,
    event: &Event<'_>,
    enrolment: &Enrolment,
) -> Result<Accepted, WebhookError> {
    let ttl = event_ttl(&app.settings);
    let Event {
        event_id,
        user,
        course,
        score,
        ..
    } = *event;
    match app.store.enqueue(enrolment, event_id, score, ttl).await {
        Ok(EnqueueOutcome::Queued) => {
            app.metrics.store_ok();
            tracing::info!(event_id, learner = user, course, score, "grade queued");
            notify.notify_one();
            Ok(Accepted::Queued)
        }
        Ok(EnqueueOutcome::Waiting) => {
            tracing::info!(
                event_id,
                learner = user,
                course,
                score,
                "grade waiting for an outcome target"
            );
            Ok(Accepted::WaitingForTarget)
        }
        Ok(EnqueueOutcome::Duplicate) => Ok(Accepted::Duplicate),
        Err(e) => Err(store_down(app, event, e)),
    }
}

/// Counts and logs a store failure; the platform is told to retry.
fn store_down(app: &AppState, event: &Event<'_>, e: StoreError) -> WebhookError {
    app.metrics.store_failed("outbox");
    tracing::warn!(event_id = event.event_id, error = %e, "cannot store a completion webhook");
    WebhookError::StoreUnavailable
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::WEBHOOK_RESULTS;

    /// Every refusal: status, JSON `error`, `ltigate_webhooks_total` result
    /// and the field it names, as DESIGN §6 and §9 have them.
    #[test]
    fn every_refusal_answers_as_the_contract_says() {
        use SignatureError as S;
        use WebhookError as E;
        let (sig, inv) = (Some("bad_signature"), Some("invalid"));
        let bad_json = E::BadJson("EOF at line 1 column 0".into());
        let bad_score = invalid("score", "out of range".into());
        let table = [
            (E::Disabled, 401, "bad_signature", sig, None),
            (
                E::BadSignature(S::Malformed),
                401,
                "bad_signature",
                sig,
                None,
            ),
            (E::BadSignature(S::Stale), 401, "bad_signature", sig, None),
            (
                E::BadSignature(S::Mismatch),
                401,
                "bad_signature",
                sig,
                None,
            ),
            (E::Timeout, 408, "timeout", inv, None),
            (E::TooLarge { max: 65536 }, 413, "too_large", inv, None),
            (E::Unreadable, 400, "unreadable_body", inv, None),
            (E::NotAnObject, 400, "invalid_json", inv, None),
            (bad_json, 400, "invalid_json", inv, None),
            (bad_score, 422, "invalid", inv, Some("score")),
            (E::UnknownConsumer, 422, "invalid", inv, Some("user")),
            (E::NotEnrolled, 422, "invalid", inv, Some("user")),
            (E::StoreUnavailable, 503, "store_unavailable", None, None),
        ];
        for (err, status, label, result, field) in table {
            // A new variant fails to compile here until the table has it.
            match err {
                E::Disabled | E::Timeout | E::TooLarge { .. } | E::Unreadable => {}
                E::BadSignature(_) | E::NotAnObject | E::BadJson(_) | E::Invalid { .. } => {}
                E::UnknownConsumer | E::NotEnrolled | E::StoreUnavailable => {}
            }
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            assert_eq!(err.label(), label, "{err:?}");
            assert_eq!(err.result(), result, "{err:?}");
            assert!(!err.message().is_empty(), "{err:?}");
            if let Some(result) = result {
                assert!(WEBHOOK_RESULTS.contains(&result), "{result} is pre-created");
            }
            let mut extra = serde_json::Map::new();
            err.add_json(&mut extra);
            assert_eq!(extra.get("field").and_then(Value::as_str), field, "{err:?}");
        }
    }

    #[test]
    fn every_acceptance_answers_as_the_contract_says() {
        for (accepted, status) in [
            (Accepted::Queued, 202),
            (Accepted::WaitingForTarget, 202),
            (Accepted::Duplicate, 200),
            (Accepted::Ignored, 200),
        ] {
            assert_eq!(accepted.status().as_u16(), status, "{accepted:?}");
            assert!(WEBHOOK_RESULTS.contains(&accepted.label()), "{accepted:?}");
        }
        assert_eq!(Accepted::WaitingForTarget.label(), "waiting_for_target");
        // With the refusals' two, every pre-created result is one an answer
        // counts under.
        let mut used = vec!["bad_signature", "invalid"];
        used.extend(
            [
                Accepted::Queued,
                Accepted::WaitingForTarget,
                Accepted::Duplicate,
                Accepted::Ignored,
            ]
            .map(Accepted::label),
        );
        used.sort_unstable();
        let mut pre_created = WEBHOOK_RESULTS.to_vec();
        pre_created.sort_unstable();
        assert_eq!(used, pre_created);
    }

    /// The rendered answer: JSON with `error`, `message`, `status` and the
    /// field, `no-store`.
    #[tokio::test]
    async fn a_refusal_is_rendered_as_json_naming_the_field() {
        let resp = respond::reject(&WebhookError::NotEnrolled, true);
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "invalid");
        assert_eq!(v["field"], "user");
        assert_eq!(v["status"], 422);
        assert!(v["message"].as_str().unwrap().contains("never launched"));
    }

    #[test]
    fn fields_are_checked_in_order_and_named() {
        let field = |v: Value| match Event::from_json(&v) {
            Ok(_) => None,
            Err(e) => e.field(),
        };
        let ok = json!({"event_id": "e", "user": "acme:1", "course": "C-1", "percentage": 80});
        assert_eq!(field(ok.clone()), None);
        let v: Value = serde_json::from_value(ok).unwrap();
        assert_eq!(Event::from_json(&v).map(|e| e.score).ok(), Some(0.8));
        assert_eq!(field(json!({"user": 1})), Some("event_id"));
        assert_eq!(field(json!({"event_id": "e", "user": " "})), Some("user"));
        assert_eq!(
            field(json!({"event_id": "e", "user": "u", "course": "C", "activity": 3})),
            Some("activity")
        );
        assert_eq!(
            field(json!({"event_id": "e", "user": "u", "course": "C", "score": 1.5})),
            Some("score")
        );
        assert_eq!(
            field(json!({"event_id": "e", "user": "u", "course": "C", "percentage": "x"})),
            Some("percentage")
        );
    }
}
