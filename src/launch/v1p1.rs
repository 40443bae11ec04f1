//! `POST /lti/launch[/{course}]`: an LTI 1.1 launch (DESIGN §3). The form
//! is read, the OAuth 1.0a signature, the timestamp and the nonce checked,
//! in the order of [`Rejection::ALL`] (the first failure decides), and the
//! launch becomes a protocol-neutral [`VerifiedLaunch`] for the one
//! [`accept`](super::accept) path.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::request::Parts;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};

use super::{accept, finish, Failure, Learner, VerifiedLaunch};
use crate::config::{Consumer, PublicUrl, Settings};
use crate::http::{respond, unix_now, Body};
use crate::lti::encode::parse_form;
use crate::lti::launch::{parse, LaunchParams, Rejection};
use crate::lti::oauth1::{self, VerifyRequest};
use crate::lti::LtiVersion;
use crate::outcomes::{check_target_url, secret_fingerprint, OutcomeTarget};
use crate::session::{Gate, Session};
use crate::store::NonceCheck;

/// Largest launch body.
pub const MAX_LAUNCH_BODY: usize = 64 * 1024;

/// Handles a launch request. `path_course` is the raw (still encoded) last
/// path segment of `/lti/launch/{course}`.
pub async fn handle<B>(state: &Gate, req: Request<B>, path_course: Option<&str>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<crate::http::BoxError>,
{
    let started = Instant::now();
    let json = respond::prefers_json(req.headers());
    let mut tenant_label = "unknown".to_string();
    let result = run(state, req, path_course, &mut tenant_label).await;
    finish(
        state,
        started,
        LtiVersion::V1p1,
        &tenant_label,
        result,
        json,
    )
}

/// What the checks decided.
enum Verified {
    /// A launch for the accept path.
    Launch(Box<ToAccept>),
    /// An LMS double-click: the browser already holds this session, and
    /// goes on to the course.
    AlreadyOpen(String),
}

/// A verified launch and what the accept path needs beside it.
struct ToAccept {
    /// The launch.
    launch: VerifiedLaunch,
    /// The session the browser holds, if any.
    existing: Option<Session>,
    /// Where a refusal goes back to the LMS (it is authenticated now).
    return_url: Option<String>,
}

async fn run<B>(
    state: &Gate,
    req: Request<B>,
    path_course: Option<&str>,
    tenant_label: &mut String,
) -> Result<Response<Body>, Failure>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<crate::http::BoxError>,
{
    let (parts, body) = req.into_parts();
    let body = read_form(state, &parts.headers, body).await?;
    let now = unix_now();
    match verify(state, &parts, &body, path_course, now, tenant_label).await {
        Ok(Verified::Launch(to)) => {
            let ToAccept {
                launch,
                existing,
                return_url,
            } = *to;
            accept::accept(state, &launch, existing, now)
                .await
                .map_err(|f| Failure { return_url, ..f })
        }
        Ok(Verified::AlreadyOpen(landing)) => Ok(respond::see_other(&landing)),
        Err(f) => Err(f),
    }
}

/// The form body of a launch: `application/x-www-form-urlencoded`, at
/// most [`MAX_LAUNCH_BODY`], arrived within `server.header_read_timeout`.
pub(crate) async fn read_form<B>(
    state: &Gate,
    headers: &HeaderMap,
    body: B,
) -> Result<Bytes, Failure>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<crate::http::BoxError>,
{
    let ctype = headers
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
    let declared = headers
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
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(Failure::new(Rejection::BodyTooLarge, "body over 64 KiB"))
        }
        Err(e) => Err(Failure::new(
            Rejection::InvalidRequest,
            format!("cannot read the body: {e}"),
        )),
    }
}

/// The checks, in order: parameters, consumer, timestamp, signature,
/// nonce. `tenant_label` is set as soon as the launch names a configured
/// key.
async fn verify(
    state: &Gate,
    parts: &Parts,
    body: &[u8],
    path_course: Option<&str>,
    now: u64,
    tenant_label: &mut String,
) -> Result<Verified, Failure> {
    let settings = &state.settings;
    let Parsed {
        query,
        form,
        launch,
    } = parse_launch(settings, parts, body, path_course, tenant_label)?;
    let skew = settings.launch.max_clock_skew.as_secs() as i64;
    let delta = launch.timestamp - now as i64;
    let stale = delta.abs() > skew;

    // Consumer. An unknown key gets the answer a known key with a wrong
    // secret would get, stale timestamp included: which keys exist is not
    // told (the metric and the log still say `unknown_consumer`).
    let Some(consumer) = settings.consumer_by_key(&launch.consumer_key) else {
        let mut f = Failure::new(Rejection::UnknownConsumer, "unknown oauth_consumer_key");
        f.shown = if stale {
            Rejection::StaleTimestamp.into()
        } else {
            Rejection::BadSignature.into()
        };
        return Err(f);
    };
    *tenant_label = consumer.tenant.name.clone();

    if stale {
        return Err(Failure::new(
            Rejection::StaleTimestamp,
            format!("oauth_timestamp is {delta} s from now (allowed ±{skew} s)"),
        ));
    }

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

    let existing = state
        .open_session(&parts.headers, now)
        .ok()
        .map(|o| o.session.clone());
    match check_nonce(state, consumer, &launch, existing.as_ref(), now, skew).await {
        Ok(None) => {}
        Ok(Some(landing)) => return Ok(Verified::AlreadyOpen(landing)),
        Err(f) => return Err(Failure { return_url, ..f }),
    }

    let verified = VerifiedLaunch {
        tenant: consumer.tenant.clone(),
        version: LtiVersion::V1p1,
        outcome_target: outcome_target(state, consumer, &launch, secret_index),
        learner: Learner {
            user_id: launch.user_id,
            given_name: launch.given_name,
            family_name: launch.family_name,
            email: launch.email,
        },
        course: launch.course,
        roles: launch.roles,
    };
    Ok(Verified::Launch(Box::new(ToAccept {
        launch: verified,
        existing,
        return_url,
    })))
}

/// A launch's parameters as sent (for the signature) and as read.
struct Parsed {
    query: Vec<(String, String)>,
    form: Vec<(String, String)>,
    launch: LaunchParams,
}

/// The launch's parameters, from the query and the form, with the course
/// of the launch URL's path. A malformed launch that names a configured
/// key is counted under that tenant: which LMS is misconfigured (no course,
/// say) is what the operator needs to know.
fn parse_launch(
    settings: &Settings,
    parts: &Parts,
    body: &[u8],
    path_course: Option<&str>,
    tenant_label: &mut String,
) -> Result<Parsed, Failure> {
    let query = parse_form(parts.uri.query().unwrap_or("").as_bytes())
        .map_err(|e| Failure::new(Rejection::InvalidRequest, format!("query: {e}")))?;
    let form = parse_form(body)
        .map_err(|e| Failure::new(Rejection::InvalidRequest, format!("body: {e}")))?;
    let path_course = match path_course {
        Some(raw) => Some(crate::http::decode_path_segment(raw).map_err(|e| {
            Failure::new(Rejection::InvalidRequest, format!("course in path: {e}"))
        })?),
        None => None,
    };
    match parse(&query, &form, path_course.as_deref()) {
        Ok(launch) => Ok(Parsed {
            query,
            form,
            launch,
        }),
        Err(e) => {
            if let Some(c) = named_consumer(settings, &query, &form) {
                *tenant_label = c.tenant.name.clone();
            }
            Err(Failure::new(Rejection::InvalidRequest, e.0))
        }
    }
}

/// The nonce, recorded once for the key. A replay is refused, unless it is
/// an LMS double-click from a browser that already holds this learner's
/// session for this course: then the landing path to go on to.
async fn check_nonce(
    state: &Gate,
    consumer: &Consumer,
    launch: &LaunchParams,
    existing: Option<&Session>,
    now: u64,
    skew: i64,
) -> Result<Option<String>, Failure> {
    let ttl = nonce_ttl(launch.timestamp, now, skew);
    match state
        .store
        .record_nonce(&consumer.key, &launch.nonce, ttl)
        .await
    {
        Ok(NonceCheck::Fresh) => {
            state.metrics.store_ok();
            Ok(None)
        }
        Ok(NonceCheck::Replayed) => {
            state.metrics.store_ok();
            let tenant = &consumer.tenant.name;
            if existing.is_some_and(|s| {
                s.same_learner(tenant, &launch.user_id) && s.course(&launch.course).is_some()
            }) {
                tracing::info!(consumer = %tenant, "replayed launch of an open session; redirecting");
                return Ok(Some(state.landing_path(&launch.course)));
            }
            Err(Failure::new(Rejection::ReplayedNonce, "nonce seen before"))
        }
        Err(e) => Err(Failure::store(state, "nonce", e)),
    }
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
    let tenant = &consumer.tenant;
    if let Err(why) = check_target_url(
        url,
        state.settings.outcomes.allow_insecure_targets,
        &tenant.outcome_hosts,
    ) {
        tracing::warn!(consumer = %tenant.name, reason = %why, "outcome URL refused; no grade passback for this launch");
        state
            .metrics
            .outcome_targets_refused
            .with_label_values(&[tenant.name.as_str(), "unsafe_url"])
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
