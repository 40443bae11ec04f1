//! `POST /webhooks/completion` on the admin listener: the platform reports
//! that a learner completed an activity; the grade is queued for the LMS.
//!
//! Checks in order: body size (413), signature and its age (401), JSON
//! (400), fields (422 naming the field), the learner launched the course
//! through ltigate (422), duplicate `event_id` (200), activity filter (200
//! `ignored`), then the durable enqueue (202 `queued` or
//! `waiting_for_target`).

use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Value};

use super::{verify_webhook_signature, SignatureError};
use crate::http::{respond, unix_now, AppState, Body, BoxError};
use crate::store::{EnqueueOutcome, Enrolment};

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-ltigate-signature";

fn answer(app: &AppState, status: StatusCode, result: &'static str, body: Value) -> Response<Body> {
    app.metrics.webhooks.with_label_values(&[result]).inc();
    respond::json(status, &body)
}

fn invalid(app: &AppState, field: &str, message: &str) -> Response<Body> {
    answer(
        app,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        json!({"error": "invalid", "field": field, "message": message}),
    )
}

fn text_field<'a>(v: &'a Value, name: &str, max: usize) -> Result<&'a str, String> {
    match v.get(name) {
        Some(Value::String(s))
            if !s.trim().is_empty() && s.len() <= max && !s.chars().any(char::is_control) =>
        {
            Ok(s)
        }
        Some(Value::String(s)) if s.len() > max => {
            Err(format!("{name} is longer than {max} bytes"))
        }
        Some(Value::String(_)) => Err(format!(
            "{name} must be a non-empty string without control characters"
        )),
        Some(_) => Err(format!("{name} must be a string")),
        None => Err(format!("{name} is required")),
    }
}

/// The score in 0.0–1.0 from `score`, or from `percentage` (0–100).
fn score_of(v: &Value) -> Result<f64, (&'static str, String)> {
    let number = |name: &'static str, max: f64| -> Result<Option<f64>, (&'static str, String)> {
        match v.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(x) if x.is_finite() && (0.0..=max).contains(&x) => Ok(Some(x)),
                _ => Err((name, format!("{name} must be between 0 and {max}"))),
            },
            Some(_) => Err((
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
    Err((
        "score",
        "score (0.0–1.0) or percentage (0–100) is required".into(),
    ))
}

/// Handles one completion webhook.
pub async fn handle<B>(
    app: &AppState,
    notify: &tokio::sync::Notify,
    req: Request<B>,
) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let settings = &app.settings;
    let (parts, body) = req.into_parts();
    // Without a secret nothing could be verified: no body is read.
    let Some(secret) = &settings.webhook.secret else {
        return answer(
            app,
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            json!({"error": "bad_signature", "message": "webhooks are disabled: webhook.secret is not configured"}),
        );
    };
    // The body gets as long as headers do: a stalled sender holds nothing.
    let read = tokio::time::timeout(
        settings.server.header_read_timeout,
        Limited::new(body, settings.webhook.max_body).collect(),
    )
    .await;
    let Ok(read) = read else {
        return answer(
            app,
            StatusCode::REQUEST_TIMEOUT,
            "invalid",
            json!({"error": "timeout", "message": "the body did not arrive within server.header_read_timeout"}),
        );
    };
    let body = match read {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return answer(
                    app,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid",
                    json!({"error": "too_large", "message": format!("body over {} bytes", settings.webhook.max_body)}),
                );
            }
            return answer(
                app,
                StatusCode::BAD_REQUEST,
                "invalid",
                json!({"error": "unreadable_body"}),
            );
        }
    };

    let header = parts
        .headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Err(e) = verify_webhook_signature(
        header,
        &body,
        secret,
        unix_now(),
        settings.webhook.tolerance,
    ) {
        let message = match e {
            SignatureError::Malformed => "missing or malformed X-Ltigate-Signature",
            SignatureError::Stale => "signature timestamp outside the tolerance",
            SignatureError::Mismatch => "signature does not match",
        };
        tracing::info!(reason = message, "webhook refused");
        return answer(
            app,
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            json!({"error": "bad_signature", "message": message}),
        );
    }

    let v: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return answer(
                app,
                StatusCode::BAD_REQUEST,
                "invalid",
                json!({"error": "invalid_json", "message": "the body must be a JSON object"}),
            )
        }
        Err(e) => {
            return answer(
                app,
                StatusCode::BAD_REQUEST,
                "invalid",
                json!({"error": "invalid_json", "message": e.to_string()}),
            )
        }
    };
    let event_id = match text_field(&v, "event_id", 200) {
        Ok(s) => s,
        Err(m) => return invalid(app, "event_id", &m),
    };
    let user = match text_field(&v, "user", 256) {
        Ok(s) => s,
        Err(m) => return invalid(app, "user", &m),
    };
    let course = match text_field(&v, "course", crate::lti::launch::MAX_COURSE_ID) {
        Ok(s) => s,
        Err(m) => return invalid(app, "course", &m),
    };
    let activity = match v.get("activity") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return invalid(app, "activity", "activity must be a string"),
    };
    let score = match score_of(&v) {
        Ok(s) => s,
        Err((field, m)) => return invalid(app, field, &m),
    };

    // The learner: <lms_id><sep><user_id> of a configured consumer.
    let sep = &settings.launch.id_separator;
    let tenant = user
        .split_once(sep.as_str())
        .and_then(|(lms_id, _)| settings.tenant_by_lms_id(lms_id));
    let Some(tenant) = tenant else {
        return invalid(app, "user", "unknown learner: no consumer has this lms_id");
    };
    let enrolment = Enrolment::new(&tenant.name, course, user);
    let store_down = |e: crate::store::StoreError| {
        app.metrics.store_failed("outbox");
        tracing::warn!(event_id, error = %e, "cannot store a completion webhook");
        respond::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "store_unavailable", "message": "try again later"}),
        )
    };
    match app.store.get_enrolment(&enrolment).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return invalid(
                app,
                "user",
                "unknown learner for this course: the learner never launched it through ltigate",
            )
        }
        Err(e) => return store_down(e),
    }

    // Remember event ids at least as long as a signature stays valid.
    let event_ttl = settings.webhook.tolerance.max(Duration::from_secs(300)) * 2;
    let graded = settings
        .courses
        .get(course)
        .and_then(|c| c.grade_activity.as_deref());
    if graded.is_some_and(|g| g != activity) {
        return match app
            .store
            .remember_event(&enrolment, event_id, event_ttl)
            .await
        {
            Ok(true) => {
                tracing::info!(
                    event_id,
                    course,
                    activity,
                    "completion ignored: not the grade activity"
                );
                answer(app, StatusCode::OK, "ignored", json!({"status": "ignored"}))
            }
            Ok(false) => answer(
                app,
                StatusCode::OK,
                "duplicate",
                json!({"status": "duplicate"}),
            ),
            Err(e) => store_down(e),
        };
    }

    match app
        .store
        .enqueue(&enrolment, event_id, score, event_ttl)
        .await
    {
        Ok(EnqueueOutcome::Queued) => {
            app.metrics.store_ok();
            tracing::info!(event_id, learner = user, course, score, "grade queued");
            notify.notify_one();
            answer(
                app,
                StatusCode::ACCEPTED,
                "queued",
                json!({"status": "queued"}),
            )
        }
        Ok(EnqueueOutcome::Waiting) => {
            tracing::info!(
                event_id,
                learner = user,
                course,
                score,
                "grade waiting for an outcome target"
            );
            answer(
                app,
                StatusCode::ACCEPTED,
                "waiting_for_target",
                json!({"status": "waiting_for_target"}),
            )
        }
        Ok(EnqueueOutcome::Duplicate) => answer(
            app,
            StatusCode::OK,
            "duplicate",
            json!({"status": "duplicate"}),
        ),
        Err(e) => store_down(e),
    }
}
