//! The admin listener: `/healthz`, `/readyz`, `/status`, `/metrics`.
//!
//! Readiness means "can proxy": it does not depend on the store, because
//! sessions keep working through a store outage and taking pods out of the
//! Service would turn a partial outage into a full one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};

use crate::http::{respond, AppState, Body};

/// Admin-side shared state.
pub struct Admin {
    /// The application state.
    pub app: Arc<AppState>,
    /// True once both listeners are bound.
    pub ready: AtomicBool,
}

/// Routes an admin request.
pub async fn handle<B>(admin: &Admin, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<crate::http::BoxError>,
{
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::POST, "/webhooks/completion") => {
            crate::outcomes::webhook::handle(&admin.app, &admin.app.outbox_notify, req).await
        }
        (&Method::GET, "/outbox") => outbox_list(admin).await,
        (&Method::POST, "/outbox/retry") => outbox_retry(admin, req).await,
        (&Method::GET | &Method::HEAD, "/healthz") => respond::text(StatusCode::OK, "ok\n"),
        (&Method::GET | &Method::HEAD, "/readyz") => {
            if admin.ready.load(Ordering::Acquire) {
                respond::text(StatusCode::OK, "ready\n")
            } else {
                respond::text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
            }
        }
        (&Method::GET, "/status") => status(admin).await,
        (&Method::GET, "/metrics") => {
            let mut resp = respond::text(StatusCode::OK, admin.app.metrics.render());
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        (
            _,
            "/healthz"
            | "/readyz"
            | "/status"
            | "/metrics"
            | "/webhooks/completion"
            | "/outbox"
            | "/outbox/retry",
        ) => respond::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method not allowed.",
            true,
        ),
        _ => respond::error(StatusCode::NOT_FOUND, "not_found", "Not found.", true),
    }
}

fn store_unavailable(admin: &Admin, e: &crate::store::StoreError) -> Response<Body> {
    admin.app.metrics.store_failed("outbox");
    respond::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        &e.to_string(),
        true,
    )
}

/// How many outcome targets `/outbox` reads at once.
const TARGET_READS: usize = 16;

/// The kind of an enrolment's outcome target, as stored (`basic_outcomes`,
/// or a kind this release does not know); `None` without a readable target.
async fn target_kind(
    admin: &Admin,
    enrolment: &crate::store::Enrolment,
) -> Result<Option<String>, crate::store::StoreError> {
    Ok(admin
        .app
        .store
        .get_enrolment(enrolment)
        .await?
        .flatten()
        .and_then(|bytes| crate::outcomes::StoredTarget::decode(&bytes))
        .map(|t| t.kind_name().to_string()))
}

async fn outbox_list(admin: &Admin) -> Response<Body> {
    let mut jobs = match admin.app.store.outbox_jobs().await {
        Ok(jobs) => jobs,
        Err(e) => return store_unavailable(admin, &e),
    };
    jobs.sort_by_key(|j| (j.state != crate::store::JobState::Dead, j.created_ms));
    let mut kinds: Vec<Option<String>> = Vec::with_capacity(jobs.len());
    for chunk in jobs.chunks(TARGET_READS) {
        let mut reads = Vec::with_capacity(chunk.len());
        for j in chunk {
            reads.push(target_kind(admin, &j.enrolment));
        }
        match futures_util::future::try_join_all(reads).await {
            Ok(k) => kinds.extend(k),
            Err(e) => return store_unavailable(admin, &e),
        }
    }
    let list: Vec<serde_json::Value> = jobs
        .iter()
        .zip(kinds)
        .map(|(j, kind)| {
            serde_json::json!({
                "id": j.enrolment.id(),
                "state": j.state,
                "kind": kind,
                "consumer": j.enrolment.consumer,
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
    respond::json(StatusCode::OK, &serde_json::json!({ "jobs": list }))
}

async fn outbox_retry<B>(admin: &Admin, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<crate::http::BoxError>,
{
    use http_body_util::BodyExt as _;
    let body = match http_body_util::Limited::new(req.into_body(), 4096)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return respond::error(StatusCode::BAD_REQUEST, "invalid", "unreadable body", true)
        }
    };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let id = v.get("id").and_then(|i| i.as_str());
    let all = v.get("all_dead").and_then(|a| a.as_bool()).unwrap_or(false);
    if id.is_none() && !all {
        return respond::error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "send {\"id\": \"…\"} or {\"all_dead\": true}",
            true,
        );
    }
    match admin
        .app
        .store
        .retry_dead(if all { None } else { id })
        .await
    {
        Ok(n) => {
            tracing::info!(requeued = n, "dead letters re-queued");
            admin.app.outbox_notify.notify_one();
            if n == 0 && !all {
                return respond::error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no dead letter with this id",
                    true,
                );
            }
            respond::json(StatusCode::OK, &serde_json::json!({ "requeued": n }))
        }
        Err(e) => store_unavailable(admin, &e),
    }
}

async fn status(admin: &Admin) -> Response<Body> {
    let app = &admin.app;
    let store = match tokio::time::timeout(Duration::from_secs(3), app.store.ping()).await {
        Ok(Ok(())) => {
            app.metrics.store_ok();
            "ok"
        }
        Ok(Err(_)) | Err(_) => {
            app.metrics.store_failed("ping");
            "down"
        }
    };
    let upstream = if upstream_reachable(&app.settings.upstream.url).await {
        "ok"
    } else {
        "down"
    };
    if let Ok(stats) = app.store.outbox_stats().await {
        app.metrics.set_outbox(&stats);
    }
    let body = serde_json::json!({
        "store": store,
        "store_backend": app.store.backend(),
        "upstream": upstream,
        "outbox": {
            "depth": app.metrics.outbox_depth.get(),
            "dead": app.metrics.outbox_dead.get(),
            "oldest_age_seconds": app.metrics.outbox_oldest_age.get().round() as u64,
        },
        "version": env!("CARGO_PKG_VERSION"),
    });
    respond::json(StatusCode::OK, &body)
}

/// A TCP connection check to the upstream's host and port.
async fn upstream_reachable(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect((host, port))
        )
        .await,
        Ok(Ok(_))
    )
}

/// Probes the store every few seconds so `ltigate_store_up` follows
/// outages and recoveries even without traffic.
pub async fn store_probe(app: Arc<AppState>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match tokio::time::timeout(Duration::from_secs(3), app.store.ping()).await {
            Ok(Ok(())) => app.metrics.store_ok(),
            _ => app.metrics.store_failed("ping"),
        }
    }
}

/// The client side of the outbox routes, used by `ltigate outbox …`.
pub mod client {
    use std::net::SocketAddr;
    use std::time::Duration;

    /// The admin base URL for a listen address (`0.0.0.0` → loopback).
    pub fn base_url(listen: SocketAddr) -> String {
        let ip = if listen.ip().is_unspecified() {
            if listen.is_ipv4() {
                "127.0.0.1".to_string()
            } else {
                "[::1]".to_string()
            }
        } else if listen.is_ipv6() {
            format!("[{}]", listen.ip())
        } else {
            listen.ip().to_string()
        };
        format!("http://{ip}:{}", listen.port())
    }

    fn client() -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?)
    }

    /// `GET /outbox`, rendered as a table (or the JSON).
    pub async fn list(base: &str, json: bool) -> anyhow::Result<String> {
        let resp = client()?
            .get(format!("{base}/outbox"))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach ltigate's admin listener at {base}: {e}"))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await?;
        if !status.is_success() {
            anyhow::bail!("{base}/outbox answered {status}: {body}");
        }
        if json {
            return Ok(format!("{body:#}\n"));
        }
        let jobs = body["jobs"].as_array().cloned().unwrap_or_default();
        if jobs.is_empty() {
            return Ok("the outbox is empty\n".into());
        }
        let mut out =
            String::from("STATE    ATTEMPTS  SCORE  KIND            COURSE  LEARNER  EVENT  ID\n");
        for j in &jobs {
            out.push_str(&format!(
                "{:<8} {:>8}  {:<5}  {:<14}  {}  {}  {}  {}\n",
                j["state"].as_str().unwrap_or("?"),
                j["attempts"],
                j["score"],
                j["kind"].as_str().unwrap_or("-"),
                j["course"].as_str().unwrap_or(""),
                j["learner"].as_str().unwrap_or(""),
                j["event_id"].as_str().unwrap_or(""),
                j["id"].as_str().unwrap_or(""),
            ));
            if let Some(e) = j["last_error"].as_str() {
                out.push_str(&format!("         last error: {e}\n"));
            }
        }
        Ok(out)
    }

    /// `POST /outbox/retry` for one id or every dead letter.
    pub async fn retry(base: &str, id: Option<&str>) -> anyhow::Result<String> {
        let body = match id {
            Some(id) => serde_json::json!({ "id": id }),
            None => serde_json::json!({ "all_dead": true }),
        };
        let resp = client()?
            .post(format!("{base}/outbox/retry"))
            .json(&body)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach ltigate's admin listener at {base}: {e}"))?;
        let status = resp.status();
        let answer: serde_json::Value = resp.json().await.unwrap_or_default();
        if !status.is_success() {
            anyhow::bail!(
                "{}",
                answer["message"]
                    .as_str()
                    .unwrap_or("the retry was refused")
            );
        }
        Ok(format!("re-queued {} job(s)\n", answer["requeued"]))
    }
}
