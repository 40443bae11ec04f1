//! `POST /lti/launch[/{course}]`: verifies an LTI 1.1 launch (DESIGN §3),
//! provisions the learner, seals the session and hands the browser a
//! single-use ticket for `/lti/continue`.
//!
//! Checks run in the order of [`Rejection::ALL`]; the first failure decides.

use std::time::{Duration, Instant};

use http::header::{self, HeaderMap};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::{Deserialize, Serialize};

use super::session::Session;
use super::Gate;
use crate::config::{Consumer, PublicUrl, Settings};
use crate::http::access_log::{LogIdentity, LogReason};
use crate::http::respond;
use crate::http::{unix_now, with_header, Body};
use crate::lti::encode::{parse_form, percent_encode};
use crate::lti::launch::{parse, LaunchParams, Rejection};
use crate::lti::oauth1::{self, VerifyRequest};
use crate::lti::roles;
use crate::lti::LtiVersion;
use crate::outcomes::{check_target_url, secret_fingerprint, OutcomeTarget};
use crate::provision::{ProvisionError, ProvisionRequest};
use crate::store::{Enrolment, LicenceClaim, NonceCheck, StoreError};

/// Largest launch body.
pub const MAX_LAUNCH_BODY: usize = 64 * 1024;
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

/// A refused launch.
struct Failure {
    /// Why: the metric label and the log line.
    reason: Rejection,
    /// What the client is told (status, error code, message): the reason,
    /// except for an unknown key, which is answered as a known key with a
    /// wrong secret would be.
    shown: Rejection,
    /// Log detail; never contains secrets or signatures.
    detail: String,
    /// Set only once the signature has verified.
    return_url: Option<String>,
}

impl Failure {
    fn new(reason: Rejection, detail: impl Into<String>) -> Self {
        Failure {
            reason,
            shown: reason,
            detail: detail.into(),
            return_url: None,
        }
    }
}

/// Handles a launch request. `path_course` is the raw (still encoded) last
/// path segment of `/lti/launch/{course}`.
pub async fn handle<B>(state: &Gate, req: Request<B>, path_course: Option<&str>) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<crate::http::BoxError>,
{
    let started = Instant::now();
    let json = respond::prefers_json(req.headers());
    let mut consumer_label = "unknown".to_string();
    let result = run(state, req, path_course, &mut consumer_label).await;
    state
        .metrics
        .launch_duration
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(resp) => {
            state
                .metrics
                .launches
                .with_label_values(&[consumer_label.as_str(), "accepted"])
                .inc();
            resp
        }
        Err(f) => {
            state
                .metrics
                .launches
                .with_label_values(&[consumer_label.as_str(), f.reason.label()])
                .inc();
            tracing::info!(
                consumer = %consumer_label,
                reason = f.reason.label(),
                detail = %f.detail,
                "launch refused"
            );
            let label = f.reason.label();
            let mut resp = rejection_response(f, json);
            // The true reason, as the metric has it (the page may say less).
            resp.extensions_mut().insert(LogReason(label));
            resp
        }
    }
}

fn rejection_response(f: Failure, json: bool) -> Response<Body> {
    let shown = f.shown;
    let status = StatusCode::from_u16(shown.status()).unwrap_or(StatusCode::BAD_REQUEST);
    if let Some(url) = f.return_url {
        let sep = if url.contains('?') { '&' } else { '?' };
        let location = format!(
            "{url}{sep}lti_errormsg={}&lti_errorlog={}",
            percent_encode(shown.message().as_bytes()),
            shown.label()
        );
        return respond::see_other(&location);
    }
    let message = if shown == Rejection::InvalidRequest {
        format!("{} ({})", shown.message(), f.detail)
    } else {
        shown.message().to_string()
    };
    respond::error(status, shown.label(), &message, json)
}

/// The configured consumer whose key a launch names (once, or always with
/// the same value), for the metric label of a launch refused before its
/// key was looked up.
fn named_consumer<'a>(
    settings: &'a Settings,
    query: &[(String, String)],
    form: &[(String, String)],
) -> Option<&'a Consumer> {
    let mut keys = query
        .iter()
        .chain(form)
        .filter(|(n, _)| n == "oauth_consumer_key")
        .map(|(_, v)| v);
    let key = keys.next()?;
    if keys.any(|k| k != key) {
        return None;
    }
    settings.consumer_by_key(key)
}

/// How long a nonce must be kept, counted from `now` (whole Unix seconds,
/// the clock rounded down): its timestamp is accepted while
/// `now − timestamp ≤ skew`, that is until the end of second
/// `timestamp + skew`, whatever fraction of `now` has passed already.
fn nonce_ttl(timestamp: i64, now: u64, skew: i64) -> Duration {
    let end = timestamp.saturating_add(skew).saturating_add(1);
    Duration::from_secs(end.saturating_sub(now as i64).max(1) as u64)
}

/// The URL the LMS signed: public scheme/host/port (or the forwarded ones,
/// when `trust_forwarded` says a proxy in front sets them), the public path
/// prefix (or `X-Forwarded-Prefix`), and the raw request path.
///
/// A forwarded scheme other than the public one drops the public port (it
/// belongs to the other scheme); a forwarded host carries its own port or
/// none; `X-Forwarded-Port` decides last. Of a list, the first value counts:
/// it was set by the proxy nearest the browser.
fn signed_base_uri(
    public: &PublicUrl,
    trust_forwarded: bool,
    headers: &HeaderMap,
    raw_path: &str,
) -> String {
    let mut scheme = public.scheme.clone();
    let mut host = public.host.clone();
    let mut port = public.port;
    let mut prefix = public.prefix.clone();
    if trust_forwarded {
        let first = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if let Some(p) = first("x-forwarded-proto") {
            let p = p.to_ascii_lowercase();
            if p != scheme {
                scheme = p;
                port = None;
            }
        }
        if let Some(h) = first("x-forwarded-host") {
            match h
                .rsplit_once(':')
                .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            {
                Some((name, p)) if !name.ends_with(']') || h.starts_with('[') => {
                    host = name.to_string();
                    port = p.parse().ok();
                }
                _ => {
                    host = h;
                    port = None;
                }
            }
        }
        if let Some(p) = first("x-forwarded-port").and_then(|p| p.parse::<u16>().ok()) {
            port = Some(p);
        }
        if let Some(p) = first("x-forwarded-prefix") {
            prefix = p.trim_end_matches('/').to_string();
        }
    }
    let path = format!("{prefix}{raw_path}");
    oauth1::base_string_uri(&scheme, &host, port, &path)
}

fn store_failure(state: &Gate, op: &'static str, e: StoreError) -> Failure {
    state.metrics.store_failed(op);
    Failure::new(Rejection::StoreUnavailable, e.to_string())
}

async fn run<B>(
    state: &Gate,
    req: Request<B>,
    path_course: Option<&str>,
    consumer_label: &mut String,
) -> Result<Response<Body>, Failure>
where
    B: http_body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<crate::http::BoxError>,
{
    let (parts, body) = req.into_parts();

    // Content type and size.
    let ctype = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ctype.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(Failure::new(
            Rejection::InvalidRequest,
            "the launch must be an application/x-www-form-urlencoded POST",
        ));
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_LAUNCH_BODY as u64) {
        return Err(Failure::new(
            Rejection::BodyTooLarge,
            "content-length over 64 KiB",
        ));
    }
    // A launch form is small: it gets as long as the headers did. A client
    // that sends its headers and then stalls would otherwise hold a
    // request slot (server.max_connections) for as long as it likes.
    let limit = state.settings.server.header_read_timeout;
    let collected =
        tokio::time::timeout(limit, Limited::new(body, MAX_LAUNCH_BODY).collect()).await;
    let Ok(collected) = collected else {
        return Err(Failure::new(
            Rejection::InvalidRequest,
            format!("the body did not arrive within {limit:?} (server.header_read_timeout)"),
        ));
    };
    let body = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(Failure::new(Rejection::BodyTooLarge, "body over 64 KiB"));
            }
            return Err(Failure::new(
                Rejection::InvalidRequest,
                format!("cannot read the body: {e}"),
            ));
        }
    };

    // Parameters.
    let query = parse_form(parts.uri.query().unwrap_or("").as_bytes())
        .map_err(|e| Failure::new(Rejection::InvalidRequest, format!("query: {e}")))?;
    let form = parse_form(&body)
        .map_err(|e| Failure::new(Rejection::InvalidRequest, format!("body: {e}")))?;
    let path_course = match path_course {
        Some(raw) => Some(crate::http::decode_path_segment(raw).map_err(|e| {
            Failure::new(Rejection::InvalidRequest, format!("course in path: {e}"))
        })?),
        None => None,
    };
    let launch = match parse(&query, &form, path_course.as_deref()) {
        Ok(launch) => launch,
        Err(e) => {
            // Counted under the LMS that sent it when it names a configured
            // key: which LMS is misconfigured (no course, say) is what the
            // operator needs to know.
            if let Some(c) = named_consumer(&state.settings, &query, &form) {
                *consumer_label = c.name.clone();
            }
            return Err(Failure::new(Rejection::InvalidRequest, e.0));
        }
    };

    let settings = &state.settings;
    let now = unix_now();
    let skew = settings.launch.max_clock_skew.as_secs() as i64;
    let delta = launch.timestamp - now as i64;
    let stale = delta.abs() > skew;

    // Consumer. An unknown key gets the answer a known key with a wrong
    // secret would get, stale timestamp included: which keys exist is not
    // told (the metric and the log still say `unknown_consumer`).
    let Some(consumer) = settings.consumer_by_key(&launch.consumer_key) else {
        let mut f = Failure::new(Rejection::UnknownConsumer, "unknown oauth_consumer_key");
        f.shown = if stale {
            Rejection::StaleTimestamp
        } else {
            Rejection::BadSignature
        };
        return Err(f);
    };
    *consumer_label = consumer.name.clone();

    // Timestamp.
    if stale {
        return Err(Failure::new(
            Rejection::StaleTimestamp,
            format!("oauth_timestamp is {delta} s from now (allowed ±{skew} s)"),
        ));
    }

    // Signature.
    let base_uri = signed_base_uri(
        &settings.server.public_url,
        settings.server.trust_forwarded_headers,
        &parts.headers,
        parts.uri.path(),
    );
    let secrets: Vec<&[u8]> = consumer.secrets.iter().map(|s| s.expose()).collect();
    let verified = oauth1::verify(
        &VerifyRequest {
            http_method: parts.method.as_str(),
            base_uri: &base_uri,
            query: &query,
            body: &form,
            method: launch.signature_method,
            signature: &launch.signature,
        },
        &secrets,
    );
    let Some(secret_index) = verified else {
        return Err(Failure::new(
            Rejection::BadSignature,
            format!("signature does not verify for {base_uri}"),
        ));
    };
    // From here on the LMS is authenticated: its return URL may be used.
    let return_url = launch.return_url.clone();
    let fail = |reason: Rejection, detail: String| Failure {
        return_url: return_url.clone(),
        ..Failure::new(reason, detail)
    };

    let existing = state
        .open_session(&parts.headers, now)
        .ok()
        .map(|o| o.session.clone());

    // Replay.
    let ttl = nonce_ttl(launch.timestamp, now, skew);
    match state
        .store
        .record_nonce(&consumer.key, &launch.nonce, ttl)
        .await
    {
        Ok(NonceCheck::Fresh) => state.metrics.store_ok(),
        Ok(NonceCheck::Replayed) => {
            state.metrics.store_ok();
            // An LMS double-click: the browser already holds this session.
            if let Some(s) = &existing {
                if s.same_learner(&consumer.name, &launch.user_id)
                    && s.course(&launch.course).is_some()
                {
                    tracing::info!(consumer = %consumer.name, "replayed launch of an open session; redirecting");
                    return Ok(respond::see_other(&state.landing_path(&launch.course)));
                }
            }
            return Err(fail(Rejection::ReplayedNonce, "nonce seen before".into()));
        }
        Err(e) => {
            let f = store_failure(state, "nonce", e);
            return Err(fail(f.reason, f.detail));
        }
    }

    let verified = VerifiedLaunch {
        consumer,
        outcome_target: outcome_target(state, consumer, &launch, secret_index),
        user_id: launch.user_id,
        course: launch.course,
        roles: launch.roles,
        given_name: launch.given_name,
        family_name: launch.family_name,
        email: launch.email,
    };
    accept(state, &verified, existing, now)
        .await
        .map_err(|f| fail(f.reason, f.detail))
}

/// A launch whose protocol checks passed, in protocol-neutral terms: what
/// licences, provisioning, grade passback and the session consume. LTI 1.1
/// builds it from a verified OAuth launch; LTI 1.3 will build it from a
/// verified id_token.
pub struct VerifiedLaunch<'a> {
    /// The LMS configuration it came through.
    pub consumer: &'a Consumer,
    /// The LMS's user id.
    pub user_id: String,
    /// Course external ID.
    pub course: String,
    /// Normalised roles in the course.
    pub roles: Vec<String>,
    /// Given name.
    pub given_name: Option<String>,
    /// Family name.
    pub family_name: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Where grades go back, when the launch allows it.
    pub outcome_target: Option<OutcomeTarget>,
}

/// The Basic Outcomes target of an LTI 1.1 launch: both outcome parameters
/// present and the URL acceptable. An unsafe URL is logged and ignored; the
/// launch still succeeds.
fn outcome_target(
    state: &Gate,
    consumer: &Consumer,
    launch: &LaunchParams,
    secret_index: usize,
) -> Option<OutcomeTarget> {
    let (Some(url), Some(sourced_id)) = (&launch.outcome_service_url, &launch.result_sourcedid)
    else {
        return None;
    };
    if let Err(why) = check_target_url(
        url,
        state.settings.outcomes.allow_insecure_targets,
        &consumer.outcome_hosts,
    ) {
        tracing::warn!(consumer = %consumer.name, reason = %why, "outcome URL refused; no grade passback for this launch");
        state
            .metrics
            .outcome_targets_refused
            .with_label_values(&[consumer.name.as_str()])
            .inc();
        return None;
    }
    consumer
        .secrets
        .get(secret_index)
        .map(|secret| OutcomeTarget::BasicOutcomes {
            url: url.clone(),
            sourced_id: sourced_id.clone(),
            method: launch.signature_method.as_str().to_string(),
            secret: secret_fingerprint(secret),
        })
}

/// Licence, provisioning, session and ticket for a verified launch.
async fn accept(
    state: &Gate,
    launch: &VerifiedLaunch<'_>,
    existing: Option<Session>,
    now: u64,
) -> Result<Response<Body>, Failure> {
    let consumer = launch.consumer;
    let settings = &state.settings;
    let external_id = format!(
        "{}{}{}",
        consumer.lms_id, settings.launch.id_separator, launch.user_id
    );
    let staff = roles::is_staff(&launch.roles);

    // Licence: claimed before the subscription call, atomically with the cap.
    let counts = !staff || settings.count_staff;
    let mut claimed = false;
    if counts {
        match state
            .store
            .claim_licence(
                &consumer.name,
                &launch.course,
                &external_id,
                consumer.max_licences,
            )
            .await
        {
            Ok(LicenceClaim::Existing) => state.metrics.store_ok(),
            Ok(LicenceClaim::New { used }) => {
                state.metrics.store_ok();
                claimed = true;
                state
                    .metrics
                    .licences_used
                    .with_label_values(&[consumer.name.as_str()])
                    .set(used as i64);
            }
            Ok(LicenceClaim::Exhausted) => {
                state.metrics.store_ok();
                return Err(Failure::new(
                    Rejection::LicenceExhausted,
                    format!("cap of {} reached", consumer.max_licences.unwrap_or(0)),
                ));
            }
            Err(e) => return Err(store_failure(state, "licence", e)),
        }
    }

    // Provisioning.
    let provisioned = state
        .provisioner
        .provision(&ProvisionRequest {
            external_id: &external_id,
            given_name: launch.given_name.as_deref(),
            family_name: launch.family_name.as_deref(),
            email: launch.email.as_deref(),
            environment: consumer.environment.as_deref(),
            course: &launch.course,
            staff,
        })
        .await;
    let upstream_id = match provisioned {
        Ok(id) => id,
        Err(e) => {
            if claimed {
                release(state, consumer, &launch.course, &external_id).await;
            }
            return Err(match e {
                ProvisionError::UnknownCourse => {
                    Failure::new(Rejection::UnknownCourse, "subscription answered 404")
                }
                ProvisionError::Upstream(why) => Failure::new(Rejection::UpstreamError, why),
            });
        }
    };

    // Enrolment and outcome target (grade passback).
    let enrolment = Enrolment::new(&consumer.name, &launch.course, &external_id);
    match state
        .store
        .put_enrolment(
            &enrolment,
            launch
                .outcome_target
                .as_ref()
                .map(OutcomeTarget::to_bytes)
                .as_deref(),
        )
        .await
    {
        Ok(activated) => {
            if activated {
                tracing::info!(learner = %external_id, course = %launch.course, "a waiting grade now has an outcome target");
                state.outbox_notify.notify_one();
            }
        }
        Err(e) => return Err(store_failure(state, "target", e)),
    }

    // Session: the same learner's courses merge; another learner replaces it.
    let mut session = match existing {
        Some(s) if s.same_learner(&consumer.name, &launch.user_id) => s,
        _ => Session {
            consumer: consumer.name.clone(),
            lms_id: consumer.lms_id.clone(),
            user_id: launch.user_id.clone(),
            external_id: external_id.clone(),
            upstream_id: None,
            given_name: None,
            family_name: None,
            email: None,
            courses: Vec::new(),
            issued_at: now,
            last_seen: now,
            lti_version: LtiVersion::V1p1,
        },
    };
    session.lti_version = LtiVersion::V1p1;
    session.external_id = external_id.clone();
    session.lms_id = consumer.lms_id.clone();
    if upstream_id.is_some() {
        session.upstream_id = upstream_id;
    }
    if launch.given_name.is_some() || launch.family_name.is_some() {
        session.given_name = launch.given_name.clone();
        session.family_name = launch.family_name.clone();
    }
    if launch.email.is_some() {
        session.email = launch.email.clone();
    }
    session.issued_at = now;
    session.last_seen = now;
    session.add_course(&launch.course, &launch.roles, settings.session.max_courses);
    let cookie = state
        .sealer
        .seal(&session)
        .map_err(|e| Failure::new(Rejection::UpstreamError, e.to_string()))?;

    // Ticket for /lti/continue.
    let landing = state.landing_path(&launch.course);
    let ticket = crate::secret::random_token();
    let value = serde_json::to_vec(&Ticket {
        cookie: cookie.clone(),
        landing,
        external_id: external_id.clone(),
        course: launch.course.clone(),
        expires: now + TICKET_TTL.as_secs(),
    })
    .map_err(|e| Failure::new(Rejection::UpstreamError, e.to_string()))?;
    if let Err(e) = state.store.put_ticket(&ticket, &value, TICKET_TTL).await {
        return Err(store_failure(state, "ticket", e));
    }

    tracing::info!(
        consumer = %consumer.name,
        learner = %external_id,
        course = %launch.course,
        staff,
        "launch accepted"
    );
    let location = format!("{}?ticket={ticket}", state.public_path("/lti/continue"));
    let mut resp = with_header(
        respond::see_other(&location),
        header::SET_COOKIE,
        &state.session_cookie(&cookie),
    );
    resp.extensions_mut().insert(LogIdentity {
        tenant: consumer.name.clone(),
        external_id,
    });
    Ok(resp)
}

async fn release(state: &Gate, consumer: &Consumer, course: &str, learner: &str) {
    match state
        .store
        .release_licence(&consumer.name, course, learner)
        .await
    {
        Ok(()) => {
            if let Ok(used) = state.store.licences_used(&consumer.name).await {
                state
                    .metrics
                    .licences_used
                    .with_label_values(&[consumer.name.as_str()])
                    .set(used as i64);
            }
        }
        Err(e) => {
            state.metrics.store_failed("licence");
            tracing::warn!(error = %e, "cannot release the licence of a failed launch");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(url: &str) -> PublicUrl {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse().unwrap())),
            None => (authority, None),
        };
        PublicUrl {
            scheme: scheme.into(),
            host: host.into(),
            port,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("/{prefix}")
            },
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, value.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_nonce_outlives_the_last_second_its_timestamp_is_accepted_in() {
        // Accepted while now − ts ≤ 300: up to the end of second ts + 300.
        let ts = 1_700_000_000;
        assert_eq!(nonce_ttl(ts, ts as u64, 300), Duration::from_secs(301));
        assert_eq!(nonce_ttl(ts, ts as u64 + 300, 300), Duration::from_secs(1));
        // A timestamp from the future: kept until it is as old as allowed.
        assert_eq!(
            nonce_ttl(ts + 300, ts as u64, 300),
            Duration::from_secs(601)
        );
        assert_eq!(
            nonce_ttl(i64::MAX, 0, 300),
            Duration::from_secs(i64::MAX as u64)
        );
    }

    #[test]
    fn the_signed_url_is_the_public_one_with_its_prefix() {
        for (url, path, want) in [
            (
                "https://learn.example",
                "/lti/launch",
                "https://learn.example/lti/launch",
            ),
            (
                "https://learn.example:8443/tools/gate",
                "/lti/launch/C%2F1",
                "https://learn.example:8443/tools/gate/lti/launch/C%2F1",
            ),
            (
                "http://LEARN.example:80/p",
                "/lti/launch",
                "http://learn.example/p/lti/launch",
            ),
        ] {
            assert_eq!(
                signed_base_uri(&public(url), false, &HeaderMap::new(), path),
                want
            );
        }
    }

    #[test]
    fn forwarded_headers_count_only_when_trusted() {
        let forwarded = headers(&[
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-port", "8080"),
            ("x-forwarded-prefix", "/x"),
        ]);
        let p = public("https://learn.example/gate");
        assert_eq!(
            signed_base_uri(&p, false, &forwarded, "/lti/launch"),
            "https://learn.example/gate/lti/launch"
        );
        assert_eq!(
            signed_base_uri(&p, true, &forwarded, "/lti/launch"),
            "http://evil.example:8080/x/lti/launch"
        );
    }

    #[test]
    fn forwarded_parts_replace_only_what_they_name() {
        let p = public("https://learn.example:8443/gate");
        for (sent, want) in [
            // The same scheme keeps the public port; another scheme drops it.
            (
                vec![("x-forwarded-proto", "https")],
                "https://learn.example:8443/gate/lti/launch",
            ),
            (
                vec![("x-forwarded-proto", "HTTP")],
                "http://learn.example/gate/lti/launch",
            ),
            // A host carries its own port, or none.
            (
                vec![("x-forwarded-host", "lms-tools.example")],
                "https://lms-tools.example/gate/lti/launch",
            ),
            (
                vec![("x-forwarded-host", "lms-tools.example:9443")],
                "https://lms-tools.example:9443/gate/lti/launch",
            ),
            (
                vec![("x-forwarded-host", "[2001:db8::1]:9443")],
                "https://[2001:db8::1]:9443/gate/lti/launch",
            ),
            (
                vec![("x-forwarded-host", "[2001:db8::1]")],
                "https://[2001:db8::1]/gate/lti/launch",
            ),
            // The port decides last; a default port is dropped.
            (
                vec![
                    ("x-forwarded-host", "a.example:9443"),
                    ("x-forwarded-port", "443"),
                ],
                "https://a.example/gate/lti/launch",
            ),
            (
                vec![("x-forwarded-port", "not-a-port")],
                "https://learn.example:8443/gate/lti/launch",
            ),
            // The prefix replaces the public one, without its trailing slash.
            (
                vec![("x-forwarded-prefix", "/other/")],
                "https://learn.example:8443/other/lti/launch",
            ),
            // Of a list, the first (nearest the browser); empty values are ignored.
            (
                vec![("x-forwarded-proto", "http, https")],
                "http://learn.example/gate/lti/launch",
            ),
            (
                vec![("x-forwarded-host", " ")],
                "https://learn.example:8443/gate/lti/launch",
            ),
        ] {
            assert_eq!(
                signed_base_uri(&p, true, &headers(&sent), "/lti/launch"),
                want,
                "{sent:?}"
            );
        }
    }
}

#[cfg(test)]
mod ticket_tests {
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
