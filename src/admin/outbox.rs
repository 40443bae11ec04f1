//! `GET /outbox` and `POST /outbox/retry`: pending jobs and dead letters,
//! and re-queueing them (the CLI's `ltigate outbox …`).

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};

use super::{Admin, AdminError};
use crate::http::{respond, Body, BoxError};
use crate::store::{Enrolment, JobState, StoreError};

/// How many outcome targets `/outbox` reads at once.
const TARGET_READS: usize = 16;

/// Largest `/outbox/retry` body read.
const MAX_RETRY_BODY: usize = 4096;

/// Counts a failed store operation: the answer is a 503.
fn store_unavailable(admin: &Admin, e: StoreError) -> AdminError {
    admin.app.metrics.store_failed("outbox");
    AdminError::StoreUnavailable(e)
}

/// The kind of an enrolment's outcome target, as stored (`basic_outcomes`,
/// `ags`, or a kind this release does not know; `None` without a readable
/// target), and the LTI 1.3 registration an AGS target goes to.
async fn target_kind(
    admin: &Admin,
    enrolment: &Enrolment,
) -> Result<(Option<String>, Option<String>), StoreError> {
    use crate::outcomes::{OutcomeTarget, StoredTarget};
    let stored = admin
        .app
        .store
        .get_enrolment(enrolment)
        .await?
        .flatten()
        .and_then(|bytes| StoredTarget::decode(&bytes));
    let platform = match &stored {
        Some(StoredTarget::Known(OutcomeTarget::Ags { platform, .. })) => Some(platform.clone()),
        _ => None,
    };
    Ok((stored.map(|t| t.kind_name().to_string()), platform))
}

/// `GET /outbox`: every job, dead letters first, oldest first.
pub(super) async fn list(admin: &Admin) -> Result<Response<Body>, AdminError> {
    let mut jobs = admin
        .app
        .store
        .outbox_jobs()
        .await
        .map_err(|e| store_unavailable(admin, e))?;
    jobs.sort_by_key(|j| (j.state != JobState::Dead, j.created_ms));
    let mut kinds: Vec<(Option<String>, Option<String>)> = Vec::with_capacity(jobs.len());
    for chunk in jobs.chunks(TARGET_READS) {
        let reads = chunk.iter().map(|j| target_kind(admin, &j.enrolment));
        let read = futures_util::future::try_join_all(reads).await;
        kinds.extend(read.map_err(|e| store_unavailable(admin, e))?);
    }
    let list: Vec<serde_json::Value> = jobs
        .iter()
        .zip(kinds)
        .map(|(j, (kind, platform))| {
            serde_json::json!({
                "id": j.enrolment.id(),
                "state": j.state,
                "kind": kind,
                "platform": platform,
                "consumer": j.enrolment.tenant,
                "course": j.enrolment.course,
                "learner": j.enrolment.learner,
                "event_id": j.event_id,
                "score": j.score,
                "attempts": j.attempts,
                "created_ms": j.created_ms,
                "next_at_ms": j.next_at_ms,
                "leased": j.lease_until_ms > crate::store::now_millis(),
                "last_error": j.last_error,
            })
        })
        .collect();
    Ok(respond::json(
        StatusCode::OK,
        &serde_json::json!({ "jobs": list }),
    ))
}

/// `POST /outbox/retry` with `{"id": "…"}` or `{"all_dead": true}`.
pub(super) async fn retry<B>(admin: &Admin, req: Request<B>) -> Result<Response<Body>, AdminError>
where
    B: http_body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let body = Limited::new(req.into_body(), MAX_RETRY_BODY)
        .collect()
        .await
        .map_err(|_| AdminError::UnreadableBody)?
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let id = v.get("id").and_then(|i| i.as_str());
    let all = v.get("all_dead").and_then(|a| a.as_bool()).unwrap_or(false);
    if id.is_none() && !all {
        return Err(AdminError::NothingToRetry);
    }
    let n = admin
        .app
        .store
        .retry_dead(if all { None } else { id })
        .await
        .map_err(|e| store_unavailable(admin, e))?;
    tracing::info!(requeued = n, "dead letters re-queued");
    admin.app.outbox_notify.notify_one();
    if n == 0 && !all {
        return Err(AdminError::NoSuchDeadLetter);
    }
    Ok(respond::json(
        StatusCode::OK,
        &serde_json::json!({ "requeued": n }),
    ))
}
