//! Grade passback (DESIGN §6): outcome targets stored at launch, the
//! completion webhook, and the outbox worker that delivers grades to the
//! LMS through one [`Deliver`] per target kind (LTI Basic Outcomes today).
//!
//! The decisions here are pure functions — target URL checks, the webhook
//! signature, the classification of an LMS answer, the retry backoff — so
//! they are tested on their own; I/O lives in [`webhook`] and [`worker`].

use std::net::IpAddr;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::lti::outcomes::{parse_response, CodeMajor};
use crate::secret::Secret;

pub mod ags;
pub mod basic;
pub mod deliver;
pub mod webhook;
pub mod worker;

pub use deliver::{Deliver, Deliverers};

/// Where and how a grade goes back: one variant per protocol.
///
/// Stored as JSON with the kind in a `kind` field
/// (`{"kind":"basic_outcomes","url":…}`); a kind's name never changes once
/// released, since replicas of different releases read each other's
/// targets ([`StoredTarget::decode`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutcomeTarget {
    /// LTI 1.1 Basic Outcomes (POX).
    BasicOutcomes {
        /// `lis_outcome_service_url`.
        url: String,
        /// `lis_result_sourcedid`, verbatim.
        sourced_id: String,
        /// The launch's signature method (`HMAC-SHA1` / `HMAC-SHA256`).
        method: String,
        /// Fingerprint of the consumer secret that verified the launch.
        secret: String,
    },
    /// LTI 1.3 Assignment and Grade Services: a score posted to a line
    /// item.
    Ags {
        /// The line item URL (`…/claim/endpoint` `lineitem`).
        lineitem: String,
        /// The learner at the platform (the id_token's `sub`).
        user_id: String,
        /// The registration's `name`: its token endpoint and client id.
        platform: String,
    },
}

impl OutcomeTarget {
    /// Serialised for the store.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// From the store, when it is a target of a kind this binary knows.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        match StoredTarget::decode(b)? {
            StoredTarget::Known(t) => Some(t),
            StoredTarget::Unknown { .. } => None,
        }
    }

    /// This target's kind.
    pub fn kind(&self) -> TargetKind {
        match self {
            OutcomeTarget::BasicOutcomes { .. } => TargetKind::BasicOutcomes,
            OutcomeTarget::Ags { .. } => TargetKind::Ags,
        }
    }
}

/// The kind of an outcome target: which [`Deliver`] sends its grades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetKind {
    /// LTI 1.1 Basic Outcomes.
    BasicOutcomes,
    /// LTI 1.3 AGS scores.
    Ags,
}

impl TargetKind {
    /// Every kind this binary knows.
    pub const ALL: [TargetKind; 2] = [TargetKind::BasicOutcomes, TargetKind::Ags];

    /// The name in a stored target's `kind` field.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::BasicOutcomes => "basic_outcomes",
            TargetKind::Ags => "ags",
        }
    }

    /// The `kind` label of `ltigate_outcomes_total` (DESIGN §9).
    pub fn metric_label(self) -> &'static str {
        match self {
            TargetKind::BasicOutcomes => "basic",
            TargetKind::Ags => "ags",
        }
    }

    /// The kind named `name`, when this binary knows it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Longest kind name taken for a kind this binary does not know; anything
/// longer (or not made of `[a-z0-9_.-]`) is not a target at all.
const MAX_KIND_NAME: usize = 64;

/// A stored outcome target as this binary reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredTarget {
    /// A target of a kind this binary knows.
    Known(OutcomeTarget),
    /// A well-formed target of a kind this binary does not know (written by
    /// a newer release): its grades are left for a replica that knows it.
    Unknown {
        /// The stored `kind`.
        kind: String,
    },
}

impl StoredTarget {
    /// Reads a stored target. `None` for a value that is not a target at
    /// all: not JSON, no `kind` name, or a known kind whose fields do not
    /// decode.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_slice(b).ok()?;
        let kind = value.get("kind")?.as_str()?;
        if TargetKind::from_name(kind).is_some() {
            return serde_json::from_value(value).ok().map(StoredTarget::Known);
        }
        let well_formed = !kind.is_empty()
            && kind.len() <= MAX_KIND_NAME
            && kind
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(&c));
        well_formed.then(|| StoredTarget::Unknown {
            kind: kind.to_string(),
        })
    }

    /// The stored kind's name.
    pub fn kind_name(&self) -> &str {
        match self {
            StoredTarget::Known(t) => t.kind().name(),
            StoredTarget::Unknown { kind } => kind,
        }
    }
}

/// A short fingerprint of a secret, stored instead of the secret.
pub fn secret_fingerprint(secret: &Secret) -> String {
    let mut h = Sha256::new();
    h.update(b"ltigate secret fingerprint\0");
    h.update(secret.expose());
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub use crate::outbound::is_internal;

/// Checks an outcome URL: https only, not an internal address or
/// `localhost`, and on the consumer's allowlist when it has one.
/// `allow_insecure` (development, tests) permits http and internal hosts.
pub fn check_target_url(
    url: &str,
    allow_insecure: bool,
    allowlist: &[String],
) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a valid URL: {e}"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_insecure => {}
        other => return Err(format!("scheme {other} is not allowed (https only)")),
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| "URL has no host".to_string())?
        .to_ascii_lowercase();
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("URL carries credentials".into());
    }
    if !allowlist.is_empty() && !allowlist.contains(&host) {
        return Err(format!(
            "host {host} is not in the consumer's outcome_hosts"
        ));
    }
    if !allow_insecure {
        if host == "localhost" || host.ends_with(".localhost") {
            return Err("loopback host".into());
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            if is_internal(ip) {
                return Err(format!("internal address {ip}"));
            }
        }
    }
    Ok(())
}

/// Why a webhook signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// Header missing or malformed.
    Malformed,
    /// `t` outside the tolerance.
    Stale,
    /// No `v1` matches.
    Mismatch,
}

/// Verifies `X-Ltigate-Signature: t=<unix>,v1=<hex HMAC-SHA256("<t>." + body)>`
/// (several `v1` allowed, for secret rotation on the sender's side).
pub fn verify_webhook_signature(
    header: &str,
    body: &[u8],
    secret: &Secret,
    now: u64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let mut t: Option<&str> = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.trim()),
            Some(("v1", v)) => sigs.push(v.trim()),
            _ => {}
        }
    }
    let t_text = t.ok_or(SignatureError::Malformed)?;
    if sigs.is_empty() || t_text.is_empty() || !t_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed);
    }
    let ts: u64 = t_text.parse().map_err(|_| SignatureError::Malformed)?;
    if now.abs_diff(ts) > tolerance.as_secs() {
        return Err(SignatureError::Stale);
    }
    let expected = webhook_mac(secret, t_text, body);
    let ok = sigs
        .iter()
        .any(|s| crate::lti::oauth1::signatures_equal(&s.to_ascii_lowercase(), &expected));
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Hex HMAC-SHA256 of `"<t>." + body` (HMAC takes keys of any length).
fn webhook_mac(secret: &Secret, t: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(secret.expose())
        .unwrap_or_else(|_| <Hmac<Sha256> as hmac::digest::KeyInit>::new(&Default::default()));
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Signs a webhook body the way ltigate verifies it (for platforms written
/// in Rust, the demo and tests).
pub fn sign_webhook(body: &[u8], secret: &Secret, t: u64) -> String {
    format!("t={t},v1={}", webhook_mac(secret, &t.to_string(), body))
}

/// What to do after a delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The LMS accepted the grade.
    Delivered,
    /// Try again; `after` is the LMS's `Retry-After`, if any.
    Retry {
        /// Minimum wait asked by the LMS.
        after: Option<Duration>,
        /// Why.
        why: String,
    },
    /// Give up (dead letter) with the LMS's words.
    Dead(String),
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let t: String = text.chars().take(300).collect();
    t.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Longest wait a `Retry-After` can ask for: an LMS asking for more would
/// park a grade past any outage worth waiting for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Parses `Retry-After`: seconds, or an HTTP date (relative to `now`), at
/// most [`MAX_RETRY_AFTER`] either way.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    let wait = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate_parse(v)?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

fn httpdate_parse(v: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(v).ok().or_else(|| {
        // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
        let parts: Vec<&str> = v.split_whitespace().collect();
        let [_, day, mon, year, time, "GMT"] = parts.as_slice() else {
            return None;
        };
        let months = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let m = months.iter().position(|x| x == mon)? + 1;
        let text = format!("{year}-{m:02}-{:0>2}T{time}Z", day);
        humantime::parse_rfc3339(&text).ok()
    })
}

/// Classifies an LMS answer (DESIGN §6): the POX body decides whatever the
/// HTTP status, except 3xx (never followed) and 429 (come back later).
pub fn classify(
    status: u16,
    retry_after: Option<Duration>,
    location: Option<&str>,
    body: &[u8],
) -> Verdict {
    if (300..400).contains(&status) {
        return Verdict::Dead(format!(
            "redirect: HTTP {status} to {}",
            location.unwrap_or("(no location)")
        ));
    }
    if status == 429 {
        return Verdict::Retry {
            after: retry_after,
            why: "HTTP 429 Too Many Requests".into(),
        };
    }
    match parse_response(body) {
        Ok(pox) => {
            let text = if pox.description.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {}", pox.description)
            };
            match pox.code_major {
                CodeMajor::Success => Verdict::Delivered,
                CodeMajor::Processing => Verdict::Retry {
                    after: retry_after,
                    why: format!("processing ({text})"),
                },
                CodeMajor::Failure => Verdict::Dead(format!("failure: {text}")),
                CodeMajor::Unsupported => Verdict::Dead(format!("unsupported: {text}")),
                CodeMajor::Other(code) => Verdict::Dead(format!("{code}: {text}")),
            }
        }
        Err(_) => {
            if (400..500).contains(&status) {
                Verdict::Dead(format!("HTTP {status}: {}", snippet(body)))
            } else {
                Verdict::Retry {
                    after: retry_after,
                    why: format!("HTTP {status} without a POX answer"),
                }
            }
        }
    }
}

/// Delay before retry number `attempt` (1 = first retry): doubling from
/// `initial`, capped at `max`, with "equal jitter" (`jitter` in 0..1 picks a
/// point in the upper half).
pub fn backoff(attempt: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let base = initial.saturating_mul(1u32 << exp.min(20)).min(max);
    let j = jitter.clamp(0.0, 1.0);
    base.mul_f64(0.5 + 0.5 * j)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Basic Outcomes target exactly as releases before target kinds were
    /// dispatched stored it (and as this one still does).
    const STORED_BASIC: &str = r#"{"kind":"basic_outcomes","url":"https://lms.example.org/grade?a=1","sourced_id":"{\"data\":{\"userid\":\"3\"}}","method":"HMAC-SHA256","secret":"0a1b2c3d4e5f6071"}"#;

    #[test]
    fn targets_stored_today_decode_as_basic_outcomes() {
        let want = OutcomeTarget::BasicOutcomes {
            url: "https://lms.example.org/grade?a=1".into(),
            sourced_id: r#"{"data":{"userid":"3"}}"#.into(),
            method: "HMAC-SHA256".into(),
            secret: "0a1b2c3d4e5f6071".into(),
        };
        assert_eq!(
            StoredTarget::decode(STORED_BASIC.as_bytes()),
            Some(StoredTarget::Known(want.clone()))
        );
        assert_eq!(
            OutcomeTarget::from_bytes(STORED_BASIC.as_bytes()),
            Some(want.clone())
        );
        assert_eq!(want.to_bytes(), STORED_BASIC.as_bytes());
        assert_eq!(want.kind(), TargetKind::BasicOutcomes);
        assert_eq!(want.kind().name(), "basic_outcomes");
        assert_eq!(want.kind().metric_label(), "basic");
    }

    #[test]
    fn ags_targets_round_trip() {
        let stored = br#"{"kind":"ags","lineitem":"https://lms.example.org/li/1","user_id":"u","platform":"canvas"}"#;
        let want = OutcomeTarget::Ags {
            lineitem: "https://lms.example.org/li/1".into(),
            user_id: "u".into(),
            platform: "canvas".into(),
        };
        assert_eq!(OutcomeTarget::from_bytes(stored), Some(want.clone()));
        assert_eq!(want.to_bytes(), stored);
        assert_eq!(want.kind().metric_label(), "ags");
    }

    #[test]
    fn targets_of_a_kind_not_known_here_decode_as_unknown() {
        let ags = br#"{"kind":"future_kind","lineitem":"https://lms.example.org/li/1","user_id":"u","platform":"canvas"}"#;
        let got = StoredTarget::decode(ags);
        assert_eq!(
            got,
            Some(StoredTarget::Unknown {
                kind: "future_kind".into()
            })
        );
        assert_eq!(
            got.map(|t| t.kind_name().to_string()).as_deref(),
            Some("future_kind")
        );
        assert_eq!(OutcomeTarget::from_bytes(ags), None);
        assert_eq!(
            StoredTarget::decode(br#"{"kind":"next_gen.v2-x"}"#),
            Some(StoredTarget::Unknown {
                kind: "next_gen.v2-x".into()
            })
        );
    }

    #[test]
    fn values_that_are_not_targets_do_not_decode() {
        for bad in [
            &b""[..],
            b"garbage",
            b"\xff\xfe",
            b"[]",
            b"\"basic_outcomes\"",
            b"{}",
            br#"{"url":"https://lms.example.org/grade"}"#,
            br#"{"kind":7}"#,
            br#"{"kind":""}"#,
            br#"{"kind":"Has Spaces"}"#,
            br#"{"kind":"line\nbreak"}"#,
            // A known kind whose fields do not decode is unreadable, not
            // another kind.
            br#"{"kind":"basic_outcomes","url":"https://lms.example.org/grade"}"#,
        ] {
            assert_eq!(
                StoredTarget::decode(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!(r#"{{"kind":"{}"}}"#, "k".repeat(MAX_KIND_NAME + 1));
        assert_eq!(StoredTarget::decode(long.as_bytes()), None);
        let longest = format!(r#"{{"kind":"{}"}}"#, "k".repeat(MAX_KIND_NAME));
        assert!(StoredTarget::decode(longest.as_bytes()).is_some());
    }

    #[test]
    fn target_urls() {
        assert!(check_target_url("https://lms.example.org/grade", false, &[]).is_ok());
        for bad in [
            "http://lms.example.org/grade",
            "https://127.0.0.1/x",
            "https://10.1.2.3/x",
            "https://192.168.0.1/x",
            "https://169.254.169.254/latest",
            "https://[::1]/x",
            "https://[fd00::1]/x",
            "https://localhost/x",
            "https://user:pw@lms.example.org/",
            "ftp://lms.example.org/",
            "not a url",
        ] {
            assert!(check_target_url(bad, false, &[]).is_err(), "{bad}");
        }
        assert!(check_target_url("http://127.0.0.1:9/x", true, &[]).is_ok());
        let allow = vec!["lms.example.org".to_string()];
        assert!(check_target_url("https://LMS.example.org/x", false, &allow).is_ok());
        assert!(check_target_url("https://other.example.org/x", false, &allow).is_err());
    }

    #[test]
    fn webhook_signatures() {
        let secret = Secret::new("whsec-0123456789abcdef");
        let body = br#"{"event_id":"e-1"}"#;
        let header = sign_webhook(body, &secret, 1_700_000_000);
        let tol = Duration::from_secs(300);
        assert_eq!(
            verify_webhook_signature(&header, body, &secret, 1_700_000_100, tol),
            Ok(())
        );
        assert_eq!(
            verify_webhook_signature(&header, body, &secret, 1_700_000_400, tol),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_webhook_signature(&header, b"{}", &secret, 1_700_000_000, tol),
            Err(SignatureError::Mismatch)
        );
        let other = Secret::new("another-secret-0123");
        assert_eq!(
            verify_webhook_signature(&header, body, &other, 1_700_000_000, tol),
            Err(SignatureError::Mismatch)
        );
        for bad in ["", "t=,v1=ab", "v1=ab", "t=1700000000", "t=-5,v1=ab"] {
            assert_eq!(
                verify_webhook_signature(bad, body, &secret, 1_700_000_000, tol),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        // A second v1 (rotation) is accepted.
        let rotated = format!("t=1700000000,v1=00ff,{}", header.split(',').nth(1).unwrap());
        assert_eq!(
            verify_webhook_signature(&rotated, body, &secret, 1_700_000_000, tol),
            Ok(())
        );
    }

    fn pox(code: &str, desc: &str) -> Vec<u8> {
        crate::lti::outcomes::build_response(
            "m",
            "r",
            "replaceResult",
            &match code {
                "success" => CodeMajor::Success,
                "processing" => CodeMajor::Processing,
                "failure" => CodeMajor::Failure,
                _ => CodeMajor::Unsupported,
            },
            desc,
            None,
        )
        .into_bytes()
    }

    #[test]
    fn classification_table() {
        assert_eq!(
            classify(200, None, None, &pox("success", "")),
            Verdict::Delivered
        );
        // POX decides whatever the status (Canvas answers failure with 422).
        assert!(
            matches!(classify(422, None, None, &pox("failure", "Score is not between 0 and 1")), Verdict::Dead(t) if t.contains("Score is not between 0 and 1"))
        );
        assert!(matches!(
            classify(200, None, None, &pox("unsupported", "")),
            Verdict::Dead(_)
        ));
        assert!(matches!(
            classify(200, None, None, &pox("processing", "")),
            Verdict::Retry { .. }
        ));
        for s in [400u16, 401, 403, 404, 410, 415, 418] {
            assert!(
                matches!(classify(s, None, None, b"nope"), Verdict::Dead(_)),
                "{s}"
            );
        }
        for s in [500u16, 502, 503, 200, 204] {
            assert!(
                matches!(classify(s, None, None, b"<html>"), Verdict::Retry { .. }),
                "{s}"
            );
        }
        assert_eq!(
            classify(429, Some(Duration::from_secs(30)), None, b""),
            Verdict::Retry {
                after: Some(Duration::from_secs(30)),
                why: "HTTP 429 Too Many Requests".into()
            }
        );
        assert!(
            matches!(classify(302, None, Some("https://sso.example/login"), &pox("success", "")), Verdict::Dead(t) if t.contains("https://sso.example/login"))
        );
    }

    #[test]
    fn retry_after_forms() {
        let now = humantime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 00:01:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        // Neither form parks a grade for more than a day.
        assert_eq!(parse_retry_after("999999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Wed, 31 Dec 2025 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let i = Duration::from_secs(2);
        let m = Duration::from_secs(600);
        assert_eq!(backoff(1, i, m, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(1, i, m, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(4, i, m, 1.0), Duration::from_secs(16));
        assert_eq!(backoff(40, i, m, 1.0), m);
    }

    #[test]
    fn fingerprints_differ_and_hide_the_secret() {
        let a = secret_fingerprint(&Secret::new("secret-a"));
        let b = secret_fingerprint(&Secret::new("secret-b"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert!(!a.contains("secret"));
    }

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fc00::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
