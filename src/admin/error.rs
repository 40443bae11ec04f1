//! [`AdminError`]: every refusal of the admin listener's own routes.

use std::borrow::Cow;

use http::StatusCode;

use crate::http::respond::HttpError;
use crate::store::StoreError;

/// Every refusal of the admin listener's own routes (the completion webhook
/// has its own, [`crate::outcomes::webhook::WebhookError`]). Answered as
/// JSON; not counted in a metric of its own (a store failure is, in
/// `ltigate_store_errors_total{op="outbox"}`).
#[derive(Debug)]
pub enum AdminError {
    /// No such route.
    NotFound,
    /// `GET /.well-known/jwks.json` while the signed identity assertion is
    /// off: no keys are published.
    AssertionOff,
    /// The route exists, not with this method.
    MethodNotAllowed,
    /// `POST /outbox/retry`: the body could not be read (or is over 4 KiB).
    UnreadableBody,
    /// `POST /outbox/retry` names neither an `id` nor `all_dead`.
    NothingToRetry,
    /// `POST /outbox/retry` names an id that is no dead letter.
    NoSuchDeadLetter,
    /// The store did not answer.
    StoreUnavailable(StoreError),
}

impl HttpError for AdminError {
    fn status(&self) -> StatusCode {
        match self {
            AdminError::NotFound | AdminError::AssertionOff | AdminError::NoSuchDeadLetter => {
                StatusCode::NOT_FOUND
            }
            AdminError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::UnreadableBody => StatusCode::BAD_REQUEST,
            AdminError::NothingToRetry => StatusCode::UNPROCESSABLE_ENTITY,
            AdminError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            AdminError::NotFound | AdminError::AssertionOff | AdminError::NoSuchDeadLetter => {
                "not_found"
            }
            AdminError::MethodNotAllowed => "method_not_allowed",
            AdminError::UnreadableBody | AdminError::NothingToRetry => "invalid",
            AdminError::StoreUnavailable(_) => "store_unavailable",
        }
    }

    fn message(&self) -> Cow<'static, str> {
        match self {
            AdminError::NotFound => "Not found.".into(),
            AdminError::AssertionOff => {
                "The signed identity assertion is off (session.assertion = false): no keys are published."
                    .into()
            }
            AdminError::MethodNotAllowed => "Method not allowed.".into(),
            AdminError::UnreadableBody => "unreadable body".into(),
            AdminError::NothingToRetry => "send {\"id\": \"…\"} or {\"all_dead\": true}".into(),
            // The CLI shows this text (`ltigate outbox retry`).
            AdminError::NoSuchDeadLetter => "no dead letter with this id".into(),
            AdminError::StoreUnavailable(e) => e.to_string().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::http::respond;

    #[test]
    fn every_refusal_answers_as_before() {
        let table = [
            (AdminError::NotFound, 404, "not_found"),
            (AdminError::AssertionOff, 404, "not_found"),
            (AdminError::MethodNotAllowed, 405, "method_not_allowed"),
            (AdminError::UnreadableBody, 400, "invalid"),
            (AdminError::NothingToRetry, 422, "invalid"),
            (AdminError::NoSuchDeadLetter, 404, "not_found"),
            (
                AdminError::StoreUnavailable(StoreError::Timeout),
                503,
                "store_unavailable",
            ),
        ];
        for (err, status, label) in table {
            // A new variant fails to compile here until the table has it.
            match err {
                AdminError::NotFound
                | AdminError::AssertionOff
                | AdminError::MethodNotAllowed
                | AdminError::UnreadableBody
                | AdminError::NothingToRetry
                | AdminError::NoSuchDeadLetter
                | AdminError::StoreUnavailable(_) => {}
            }
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            assert_eq!(err.label(), label, "{err:?}");
            assert!(!err.message().is_empty(), "{err:?}");
        }
    }

    #[tokio::test]
    async fn a_refusal_is_json() {
        let resp = respond::reject(&AdminError::NoSuchDeadLetter, true);
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "not_found");
        assert_eq!(v["message"], "no dead letter with this id");
    }
}
