//! The session: an AEAD-sealed cookie that carries the learner and the
//! courses launched, so any replica serves any request without a store
//! round trip and sessions survive a store outage.
//!
//! ```
//! use ltigate::gate::session::{Sealer, Session};
//! use ltigate::secret::Secret;
//! let sealer = Sealer::new(&Secret::new([7u8; 32]), &[]);
//! let s = Session::new_for_test("acme:1");
//! let cookie = sealer.seal(&s).unwrap();
//! assert_eq!(sealer.open(&cookie).unwrap().external_id, "acme:1");
//! ```

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// Cookie format version (first byte of the sealed value).
const VERSION: u8 = 1;
/// Associated data binding a sealed value to its purpose.
const AAD: &[u8] = b"ltigate session v1";
/// Largest cookie value produced; older courses are dropped to stay below.
pub const MAX_COOKIE_VALUE: usize = 3_600;
/// Bounds on free-text fields kept in the session.
const MAX_NAME: usize = 64;
const MAX_EMAIL: usize = 128;
const MAX_ROLES: usize = 8;
const MAX_ROLE: usize = 48;

/// One launched course and the learner's roles in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CourseRoles {
    /// Course external ID.
    #[serde(rename = "i")]
    pub id: String,
    /// Normalised roles.
    #[serde(rename = "r")]
    pub roles: Vec<String>,
}

/// What the cookie carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Consumer name.
    #[serde(rename = "c")]
    pub consumer: String,
    /// The consumer's `lms_id`.
    #[serde(rename = "l")]
    pub lms_id: String,
    /// LMS `user_id`.
    #[serde(rename = "u")]
    pub user_id: String,
    /// Namespaced external ID.
    #[serde(rename = "x")]
    pub external_id: String,
    /// The upstream's own user id.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub upstream_id: Option<String>,
    /// Given name.
    #[serde(rename = "g", default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// Family name.
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// Email.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Launched courses, most recent last.
    #[serde(rename = "k")]
    pub courses: Vec<CourseRoles>,
    /// Issued at (unix seconds); a launch starts a fresh session lifetime.
    #[serde(rename = "t")]
    pub issued_at: u64,
    /// Last request seen (unix seconds, refreshed at most once a minute).
    #[serde(rename = "s")]
    pub last_seen: u64,
}

fn truncate(s: Option<String>, max: usize) -> Option<String> {
    s.map(|mut s| {
        if s.len() > max {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
        s
    })
}

impl Session {
    /// A minimal session (doc tests and unit tests).
    pub fn new_for_test(external_id: &str) -> Self {
        Session {
            consumer: "test".into(),
            lms_id: "test".into(),
            user_id: external_id.into(),
            external_id: external_id.into(),
            upstream_id: None,
            given_name: None,
            family_name: None,
            email: None,
            courses: Vec::new(),
            issued_at: 0,
            last_seen: 0,
        }
    }

    /// Is this the same learner (same consumer and LMS user)?
    pub fn same_learner(&self, consumer: &str, user_id: &str) -> bool {
        self.consumer == consumer && self.user_id == user_id
    }

    /// Records a launch of `course` with `roles`: the course moves to the
    /// end (most recent), and only the most recent `max_courses` are kept.
    pub fn add_course(&mut self, course: &str, roles: &[String], max_courses: usize) {
        self.courses.retain(|c| c.id != course);
        let roles: Vec<String> = roles
            .iter()
            .filter(|r| r.len() <= MAX_ROLE)
            .take(MAX_ROLES)
            .cloned()
            .collect();
        self.courses.push(CourseRoles {
            id: course.to_string(),
            roles,
        });
        let excess = self.courses.len().saturating_sub(max_courses.max(1));
        self.courses.drain(..excess);
    }

    /// The most recently launched course.
    pub fn latest_course(&self) -> Option<&CourseRoles> {
        self.courses.last()
    }

    /// The roles in `course`, if launched.
    pub fn course(&self, course: &str) -> Option<&CourseRoles> {
        self.courses.iter().find(|c| c.id == course)
    }

    /// Bounds the free-text fields so the cookie stays small.
    pub fn bound_fields(&mut self) {
        self.given_name = truncate(self.given_name.take(), MAX_NAME);
        self.family_name = truncate(self.family_name.take(), MAX_NAME);
        self.email = truncate(self.email.take(), MAX_EMAIL);
        self.upstream_id = truncate(self.upstream_id.take(), MAX_NAME);
    }
}

/// Why a cookie was not accepted; the labels of
/// `ltigate_session_rejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRejection {
    /// No cookie.
    Missing,
    /// Not a cookie of this deployment (forged, tampered, other key).
    Invalid,
    /// Older than `session.ttl`.
    Expired,
    /// No request for `session.idle_ttl`.
    Idle,
    /// Issued before `session.not_before`.
    Revoked,
    /// Unsafe cross-site request.
    Csrf,
}

impl SessionRejection {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            SessionRejection::Missing => "missing",
            SessionRejection::Invalid => "invalid",
            SessionRejection::Expired => "expired",
            SessionRejection::Idle => "idle",
            SessionRejection::Revoked => "revoked",
            SessionRejection::Csrf => "csrf",
        }
    }

    /// Every label.
    pub const ALL: [SessionRejection; 6] = [
        SessionRejection::Missing,
        SessionRejection::Invalid,
        SessionRejection::Expired,
        SessionRejection::Idle,
        SessionRejection::Revoked,
        SessionRejection::Csrf,
    ];
}

/// Seals and opens session cookies with the current key and any previous
/// keys (rotation).
#[derive(Clone)]
pub struct Sealer {
    current: XChaCha20Poly1305,
    previous: Vec<XChaCha20Poly1305>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

/// Derives the cookie key from the configured secret (any length ≥ 32):
/// SHA-256 over a domain label and the secret.
fn derive(secret: &Secret) -> XChaCha20Poly1305 {
    let mut h = Sha256::new();
    h.update(b"ltigate session key v1\0");
    h.update(secret.expose());
    XChaCha20Poly1305::new(&h.finalize())
}

/// A sealing failure (the payload could not be encoded or encrypted).
#[derive(Debug, thiserror::Error)]
#[error("cannot seal the session: {0}")]
pub struct SealError(String);

impl Sealer {
    /// A sealer for `current`, also opening cookies sealed with `previous`.
    pub fn new(current: &Secret, previous: &[Secret]) -> Self {
        Sealer {
            current: derive(current),
            previous: previous.iter().map(derive).collect(),
        }
    }

    /// Seals a session into a cookie value, dropping the oldest courses
    /// while the value would exceed [`MAX_COOKIE_VALUE`].
    pub fn seal(&self, session: &Session) -> Result<String, SealError> {
        let mut s = session.clone();
        s.bound_fields();
        loop {
            let value = self.seal_exact(&s)?;
            if value.len() <= MAX_COOKIE_VALUE || s.courses.len() <= 1 {
                return Ok(value);
            }
            s.courses.remove(0);
        }
    }

    fn seal_exact(&self, s: &Session) -> Result<String, SealError> {
        let plain = serde_json::to_vec(s).map_err(|e| SealError(e.to_string()))?;
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .current
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: AAD,
                },
            )
            .map_err(|e| SealError(e.to_string()))?;
        let mut raw = Vec::with_capacity(1 + nonce.len() + sealed.len());
        raw.push(VERSION);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        Ok(URL_SAFE_NO_PAD.encode(raw))
    }

    /// Opens a cookie value; any failure is [`SessionRejection::Invalid`].
    pub fn open(&self, value: &str) -> Result<Session, SessionRejection> {
        if value.len() > 8 * 1024 {
            return Err(SessionRejection::Invalid);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(value.trim())
            .map_err(|_| SessionRejection::Invalid)?;
        let (version, rest) = raw.split_first().ok_or(SessionRejection::Invalid)?;
        if *version != VERSION || rest.len() < 24 + 16 {
            return Err(SessionRejection::Invalid);
        }
        let (nonce, sealed) = rest.split_at(24);
        let payload = Payload {
            msg: sealed,
            aad: AAD,
        };
        let plain = std::iter::once(&self.current)
            .chain(self.previous.iter())
            .find_map(|k| {
                k.decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: payload.msg,
                        aad: payload.aad,
                    },
                )
                .ok()
            })
            .ok_or(SessionRejection::Invalid)?;
        serde_json::from_slice(&plain).map_err(|_| SessionRejection::Invalid)
    }
}

/// Session lifetime policy.
#[derive(Debug, Clone, Copy)]
pub struct Lifetime {
    /// Absolute lifetime (seconds).
    pub ttl: u64,
    /// Idle lifetime (seconds).
    pub idle_ttl: u64,
    /// Sessions issued before this are revoked.
    pub not_before: Option<u64>,
}

impl Lifetime {
    /// Checks a session at `now` (unix seconds).
    pub fn check(&self, s: &Session, now: u64) -> Result<(), SessionRejection> {
        if self.not_before.is_some_and(|nb| s.issued_at < nb) {
            return Err(SessionRejection::Revoked);
        }
        if now >= s.issued_at.saturating_add(self.ttl) {
            return Err(SessionRejection::Expired);
        }
        if now >= s.last_seen.saturating_add(self.idle_ttl) {
            return Err(SessionRejection::Idle);
        }
        Ok(())
    }

    /// Should last-seen be refreshed (at most once a minute)?
    pub fn needs_touch(s: &Session, now: u64) -> bool {
        now >= s.last_seen.saturating_add(60)
    }
}

/// Finds the value of cookie `name` in `Cookie` header values.
pub fn cookie_value<'a>(headers: impl Iterator<Item = &'a [u8]>, name: &str) -> Option<&'a str> {
    for h in headers {
        let Ok(text) = std::str::from_utf8(h) else {
            continue;
        };
        for pair in text.split(';') {
            if let Some((n, v)) = pair.trim().split_once('=') {
                if n.trim() == name {
                    return Some(v.trim().trim_matches('"'));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Secret {
        Secret::new([b; 32])
    }

    fn session() -> Session {
        let mut s = Session::new_for_test("acme:42");
        s.given_name = Some("Zoë".into());
        s.add_course("C-1", &["Learner".into()], 20);
        s.issued_at = 1_000;
        s.last_seen = 1_000;
        s
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let sealer = Sealer::new(&key(1), &[]);
        let v = sealer.seal(&session()).unwrap();
        assert_eq!(sealer.open(&v).unwrap(), session());
        let mut bytes = v.into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(sealer.open(&tampered), Err(SessionRejection::Invalid));
        assert_eq!(sealer.open("garbage"), Err(SessionRejection::Invalid));
        assert_eq!(sealer.open(""), Err(SessionRejection::Invalid));
    }

    #[test]
    fn rotation_opens_old_cookies_and_other_deployments_fail() {
        let old = Sealer::new(&key(1), &[]);
        let v = old.seal(&session()).unwrap();
        let rotated = Sealer::new(&key(2), &[key(1)]);
        assert!(rotated.open(&v).is_ok());
        let other = Sealer::new(&key(3), &[]);
        assert_eq!(other.open(&v), Err(SessionRejection::Invalid));
    }

    #[test]
    fn lifetime_rules() {
        let l = Lifetime {
            ttl: 100,
            idle_ttl: 50,
            not_before: None,
        };
        let s = session();
        assert!(l.check(&s, 1_010).is_ok());
        assert_eq!(l.check(&s, 1_060), Err(SessionRejection::Idle));
        let mut t = s.clone();
        t.last_seen = 1_090;
        assert_eq!(l.check(&t, 1_100), Err(SessionRejection::Expired));
        let r = Lifetime {
            not_before: Some(1_001),
            ..l
        };
        assert_eq!(r.check(&s, 1_010), Err(SessionRejection::Revoked));
    }

    #[test]
    fn courses_merge_most_recent_last_and_capped() {
        let mut s = session();
        s.add_course("C-2", &["Instructor".into()], 2);
        s.add_course("C-1", &["Learner".into()], 2);
        assert_eq!(
            s.courses.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["C-2", "C-1"]
        );
        s.add_course("C-3", &[], 2);
        assert_eq!(
            s.courses.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["C-1", "C-3"]
        );
    }

    #[test]
    fn cookie_stays_under_4kb_at_the_limits() {
        let sealer = Sealer::new(&key(1), &[]);
        let mut s = session();
        s.given_name = Some("é".repeat(500));
        s.family_name = Some("x".repeat(500));
        s.email = Some("y".repeat(500));
        s.upstream_id = Some("z".repeat(500));
        s.user_id = "u".repeat(128);
        s.external_id = format!("acme:{}", "u".repeat(128));
        let roles: Vec<String> = (0..20)
            .map(|i| format!("urn:lti:role:custom/Role{i:02}"))
            .collect();
        for i in 0..50 {
            s.add_course(&format!("{i:0>64}"), &roles, 50);
        }
        let v = sealer.seal(&s).unwrap();
        assert!(v.len() <= MAX_COOKIE_VALUE, "{}", v.len());
        let opened = sealer.open(&v).unwrap();
        // The most recent course is always kept.
        assert_eq!(opened.latest_course().unwrap().id, format!("{:0>64}", 49));
        assert!(opened.given_name.unwrap().len() <= 64);
        // A whole Set-Cookie header stays below 4096 bytes.
        let header = format!(
            "__Host-ltigate_session={v}; Path=/; Max-Age=28800; HttpOnly; Secure; SameSite=None; Partitioned"
        );
        assert!(header.len() < 4096);
    }

    #[test]
    fn finds_cookie() {
        let h: Vec<&[u8]> = vec![b"a=1; __Host-s=abc; b=2"];
        assert_eq!(cookie_value(h.into_iter(), "__Host-s"), Some("abc"));
    }
}
