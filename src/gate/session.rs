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
//!
//! Two tower layers guard the proxied paths with it:
//! [`SessionGateLayer`] (a valid session, or a public path; last-seen
//! refreshed at most once a minute) and [`CsrfLayer`] (no unsafe
//! cross-site request and no cross-origin WebSocket rides on the cookie).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use super::proxy::ProxyRequest;
use super::Gate;
use crate::http::access_log::{LogIdentity, LogReason};
use crate::http::request_id;
use crate::http::{respond, unix_now, Body};
use crate::lti::LtiVersion;
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
    /// The protocol of the latest launch (absent in the cookie: 1.1).
    #[serde(rename = "v", default, skip_serializing_if = "LtiVersion::is_default")]
    pub lti_version: LtiVersion,
}

/// Drops control characters and cuts to at most `max` bytes (at a
/// character boundary).
fn truncate(s: Option<String>, max: usize) -> Option<String> {
    s.map(|mut s| {
        if s.chars().any(char::is_control) {
            s.retain(|c| !c.is_control());
        }
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
            lti_version: LtiVersion::V1p1,
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

/// Approximate serialised size of one course entry.
fn course_size(c: &CourseRoles) -> usize {
    16 + c.id.len() + c.roles.iter().map(|r| r.len() + 3).sum::<usize>()
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

    /// Seals a session into a cookie value of at most
    /// [`MAX_COOKIE_VALUE`] bytes: fields are bounded, then the oldest
    /// courses dropped while it is too long (the latest always stays), then
    /// names and email. Fails only when even that is too long.
    pub fn seal(&self, session: &Session) -> Result<String, SealError> {
        let mut s = session.clone();
        s.bound_fields();
        loop {
            let value = self.seal_exact(&s)?;
            if value.len() <= MAX_COOKIE_VALUE {
                return Ok(value);
            }
            if s.courses.len() > 1 {
                // Sealing adds a fixed overhead and base64's 4/3: drop as
                // many of the oldest courses as the excess needs at once.
                let excess = (value.len() - MAX_COOKIE_VALUE) * 3 / 4;
                let mut freed = 0;
                let mut drop = 0;
                while drop < s.courses.len() - 1 && freed < excess {
                    freed += course_size(&s.courses[drop]);
                    drop += 1;
                }
                s.courses.drain(..drop.max(1));
            } else if s.given_name.is_some() || s.family_name.is_some() || s.email.is_some() {
                s.given_name = None;
                s.family_name = None;
                s.email = None;
            } else {
                return Err(SealError(format!(
                    "the session needs {} bytes, more than a cookie can hold",
                    value.len()
                )));
            }
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

/// Finds the value of cookie `name` in `Cookie` header values. Other
/// cookies may hold any bytes; only the value found must be UTF-8.
pub fn cookie_value<'a>(headers: impl Iterator<Item = &'a [u8]>, name: &str) -> Option<&'a str> {
    for h in headers {
        // A sealed session is a long value: the separators are found with
        // memchr, not byte by byte.
        let mut rest = h;
        while !rest.is_empty() {
            let end = memchr::memchr(b';', rest).unwrap_or(rest.len());
            let pair = &rest[..end];
            rest = rest.get(end + 1..).unwrap_or_default();
            let Some(eq) = memchr::memchr(b'=', pair) else {
                continue;
            };
            let (n, v) = pair.split_at(eq);
            if n.trim_ascii() == name.as_bytes() {
                let v = std::str::from_utf8(v.get(1..)?).ok()?;
                return Some(v.trim().trim_matches('"'));
            }
        }
    }
    None
}

/// The session gate for proxied paths: a request needs a valid session
/// unless its path is one of `server.public_paths`; a session whose
/// last-seen is a minute old gets a refreshed cookie on the response.
/// Rejections are answered here (401, HTML or JSON) and counted by reason.
#[derive(Clone)]
pub struct SessionGateLayer {
    shared: Arc<GateShared>,
}

struct GateShared {
    app: Arc<Gate>,
    rejections: Rejections,
    /// Tell the access log whose request it was (`server.access_log`).
    log_identity: bool,
}

/// A session opened from a cookie value, and the identity header values
/// the header policy derives from it (built on first use).
#[derive(Debug)]
pub struct OpenedSession {
    /// The session as sealed in the cookie.
    pub session: Session,
    /// Identity header values, built once per cookie value.
    pub identity: OnceLock<super::headers::IdentityHeaders>,
}

/// Opened sessions by exact cookie value. A browser sends the same cookie
/// until last-seen is refreshed (at most once a minute), so the AEAD open
/// and the JSON parse run once per cookie instead of once per request; the
/// lifetime policy still runs on every request. Bounded: a full shard is
/// emptied. Only values that opened with the configured keys get in, and
/// the keys do not change while the process runs.
pub struct OpenedCache {
    shards: Vec<Mutex<OpenedShard>>,
    per_shard: usize,
}

type OpenedShard = HashMap<Box<str>, Arc<OpenedSession>, TagHash>;

/// Hashes a sealed cookie value by its last 16 characters: the text of its
/// authentication tag, which nobody can choose without the session key.
/// Cheaper than SipHash over the whole value, and as safe here: only
/// values that opened get into the cache, so no client can crowd a bucket,
/// and a lookup compares the whole value.
#[derive(Clone, Copy, Default)]
struct TagHash;

struct TagHasher(u64);

impl BuildHasher for TagHash {
    type Hasher = TagHasher;

    fn build_hasher(&self) -> TagHasher {
        TagHasher(0)
    }
}

impl std::hash::Hasher for TagHasher {
    fn write(&mut self, bytes: &[u8]) {
        let tail = &bytes[bytes.len().saturating_sub(16)..];
        for chunk in tail.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(word)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    /// `str` hashing ends with a 0xff marker; nothing to add for it.
    fn write_u8(&mut self, _: u8) {}

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Shards of [`OpenedCache`] (uncontended locks on the hot path).
const OPENED_SHARDS: usize = 16;
/// Sessions kept opened: ~1.5 KB each with their header values.
const OPENED_CAPACITY: usize = 4096;

impl Default for OpenedCache {
    fn default() -> Self {
        Self::new()
    }
}

impl OpenedCache {
    /// An empty cache.
    pub fn new() -> Self {
        OpenedCache {
            shards: (0..OPENED_SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(TagHash)))
                .collect(),
            per_shard: OPENED_CAPACITY / OPENED_SHARDS,
        }
    }

    fn shard(&self, value: &str) -> &Mutex<OpenedShard> {
        // The top bits: the maps inside use the low ones.
        let h = (TagHash.hash_one(value) >> 56) as usize;
        &self.shards[h % self.shards.len()]
    }

    pub(crate) fn get(&self, value: &str) -> Option<Arc<OpenedSession>> {
        self.shard(value).lock().ok()?.get(value).cloned()
    }

    pub(crate) fn put(&self, value: &str, opened: Arc<OpenedSession>) {
        if let Ok(mut m) = self.shard(value).lock() {
            if m.len() >= self.per_shard {
                m.clear();
            }
            m.insert(value.into(), opened);
        }
    }
}

/// `ltigate_session_rejections_total` resolved once per reason.
#[derive(Clone)]
struct Rejections([prometheus::IntCounter; 6]);

impl Rejections {
    fn new(metrics: &crate::metrics::Metrics) -> Self {
        Rejections(
            SessionRejection::ALL
                .map(|r| metrics.session_rejections.with_label_values(&[r.label()])),
        )
    }

    fn count(&self, reason: SessionRejection) {
        self.0[reason as usize].inc();
    }
}

impl SessionGateLayer {
    /// The gate over the application's sealer, lifetime and settings.
    pub fn new(app: Arc<Gate>) -> Self {
        SessionGateLayer {
            shared: Arc::new(GateShared {
                rejections: Rejections::new(&app.metrics),
                log_identity: app.settings.server.access_log,
                app,
            }),
        }
    }
}

impl<S> tower::Layer<S> for SessionGateLayer {
    type Service = SessionGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionGate {
            shared: self.shared.clone(),
            inner,
        }
    }
}

/// The service of [`SessionGateLayer`].
#[derive(Clone)]
pub struct SessionGate<S> {
    shared: Arc<GateShared>,
    inner: S,
}

/// Is `path` below one of the public prefixes? Paths with dot segments or
/// encoded slashes never are: an upstream that normalises them could serve
/// a private page under a public prefix.
pub fn is_public_path(public_paths: &[String], path: &str) -> bool {
    if public_paths.is_empty() || !public_paths.iter().any(|p| path.starts_with(p.as_str())) {
        return false;
    }
    let bytes = path.as_bytes();
    let encoded_separator = bytes
        .windows(3)
        .any(|w| w[0] == b'%' && matches!((w[1], w[2] | 0x20), (b'2', b'f') | (b'5', b'c')));
    !(encoded_separator
        || bytes.contains(&b'\\')
        || bytes.split(|b| *b == b'/').any(is_dot_segment))
}

/// `.` or `..`, dots possibly percent-encoded.
fn is_dot_segment(seg: &[u8]) -> bool {
    let mut dots = 0;
    let mut rest = seg;
    while !rest.is_empty() {
        match rest {
            [b'.', tail @ ..] => rest = tail,
            [b'%', b'2', e, tail @ ..] if *e | 0x20 == b'e' => rest = tail,
            _ => return false,
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

impl GateShared {
    /// The cookie with last-seen moved to `now`, when it is due.
    fn refreshed(&self, s: &Session, now: u64) -> Option<HeaderValue> {
        if !Lifetime::needs_touch(s, now) {
            return None;
        }
        let mut t = s.clone();
        t.last_seen = now;
        match self.app.sealer.seal(&t) {
            Ok(v) => HeaderValue::from_str(&self.app.session_cookie(&v)).ok(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot refresh the session");
                None
            }
        }
    }
}

/// The response of a refused request: counted, then a page; the access
/// log gets the reason's metric label.
fn rejection(reason: SessionRejection, json: bool) -> Response<Body> {
    let mut resp = rejection_page(reason, json);
    resp.extensions_mut().insert(LogReason(reason.label()));
    resp
}

fn rejection_page(reason: SessionRejection, json: bool) -> Response<Body> {
    match reason {
        SessionRejection::Csrf => respond::error(
            StatusCode::FORBIDDEN,
            "csrf",
            "This request came from another site and was refused.",
            json,
        ),
        _ => respond::error(
            StatusCode::UNAUTHORIZED,
            "no_session",
            "Your session has ended or was not started. Open the course again from your LMS.",
            json,
        ),
    }
}

type Ready = std::future::Ready<Result<Response<Body>, Infallible>>;

impl<S, B> tower::Service<ProxyRequest<B>> for SessionGate<S>
where
    S: tower::Service<ProxyRequest<B>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready, WithCookie<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: ProxyRequest<B>) -> Self::Future {
        let shared = &self.shared;
        let now = unix_now();
        let mut cookie = None;
        let mut identity = None;
        match shared.app.open_session(req.http.headers(), now) {
            Ok(s) => {
                if shared.log_identity {
                    identity = Some(LogIdentity {
                        tenant: s.session.consumer.clone(),
                        external_id: s.session.external_id.clone(),
                    });
                }
                let public = is_public_path(
                    &shared.app.settings.server.public_paths,
                    req.http.uri().path(),
                );
                // Public paths (static assets) may be cached: no cookie there.
                if !public {
                    cookie = shared.refreshed(&s.session, now);
                }
                req.session = Some(s);
            }
            Err(reason) => {
                if !is_public_path(
                    &shared.app.settings.server.public_paths,
                    req.http.uri().path(),
                ) {
                    shared.rejections.count(reason);
                    return Either::Left(std::future::ready(Ok(rejection(reason, req.json()))));
                }
            }
        }
        Either::Right(WithCookie {
            inner: self.inner.call(req),
            cookie,
            identity,
        })
    }
}

pin_project_lite::pin_project! {
    /// A response future that appends a `Set-Cookie` to the response, and
    /// tells the access log whose request it was.
    pub struct WithCookie<F> {
        #[pin]
        inner: F,
        cookie: Option<HeaderValue>,
        identity: Option<LogIdentity>,
    }
}

impl<F> Future for WithCookie<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = std::task::ready!(this.inner.poll(cx))?;
        if let Some(c) = this.cookie.take() {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        if let Some(i) = this.identity.take() {
            resp.extensions_mut().insert(i);
        }
        Poll::Ready(Ok(resp))
    }
}

/// Is this request an unsafe cross-site one? Unsafe: any method but GET,
/// HEAD, OPTIONS and TRACE, and every WebSocket handshake (the browser
/// sends the cookie with it whoever opens it). Cross-site:
/// `Sec-Fetch-Site: cross-site`, or an `Origin` (`null` included) other
/// than the public origin.
pub fn is_cross_site(method: &Method, headers: &http::HeaderMap, public_origin: &str) -> bool {
    let unsafe_method = !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    if !unsafe_method && !super::headers::is_websocket_upgrade(headers) {
        return false;
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return true;
    }
    headers
        .get(header::ORIGIN)
        .is_some_and(|o| !o.as_bytes().eq_ignore_ascii_case(public_origin.as_bytes()))
}

/// The CSRF guard (`session.csrf`): refuses unsafe cross-site requests
/// with 403 before they reach the upstream with the learner's identity.
#[derive(Clone)]
pub struct CsrfLayer {
    shared: Arc<CsrfShared>,
}

struct CsrfShared {
    enabled: bool,
    public_origin: String,
    rejected: prometheus::IntCounter,
}

impl CsrfLayer {
    /// The guard for the configured public origin.
    pub fn new(app: &Gate) -> Self {
        CsrfLayer {
            shared: Arc::new(CsrfShared {
                enabled: app.settings.session.csrf,
                public_origin: app.settings.server.public_url.origin(),
                rejected: app
                    .metrics
                    .session_rejections
                    .with_label_values(&[SessionRejection::Csrf.label()]),
            }),
        }
    }
}

impl<S> tower::Layer<S> for CsrfLayer {
    type Service = CsrfGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CsrfGuard {
            shared: self.shared.clone(),
            inner,
        }
    }
}

/// The service of [`CsrfLayer`].
#[derive(Clone)]
pub struct CsrfGuard<S> {
    shared: Arc<CsrfShared>,
    inner: S,
}

impl<S, B> tower::Service<ProxyRequest<B>> for CsrfGuard<S>
where
    S: tower::Service<ProxyRequest<B>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: ProxyRequest<B>) -> Self::Future {
        let s = &self.shared;
        if s.enabled && is_cross_site(req.http.method(), req.http.headers(), &s.public_origin) {
            s.rejected.inc();
            let _span = request_id::span(request_id::of(req.http.headers())).entered();
            tracing::info!(
                method = %req.http.method(),
                path = req.http.uri().path(),
                "refused a cross-site request"
            );
            return Either::Left(std::future::ready(Ok(rejection(
                SessionRejection::Csrf,
                req.json(),
            ))));
        }
        Either::Right(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_protocol_rides_in_the_cookie_and_1_1_costs_nothing() {
        let mut s = Session::new_for_test("acme:1");
        let v11 = serde_json::to_string(&s).unwrap();
        assert!(!v11.contains("\"v\""), "{v11}");
        // A cookie from before the field opens as an LTI 1.1 session.
        let old: Session = serde_json::from_str(&v11).unwrap();
        assert_eq!(old.lti_version, LtiVersion::V1p1);
        s.lti_version = LtiVersion::V1p3;
        let v13 = serde_json::to_string(&s).unwrap();
        assert!(v13.contains("\"v\":\"1.3\""), "{v13}");
        assert_eq!(serde_json::from_str::<Session>(&v13).unwrap(), s);
    }

    #[test]
    fn every_rejection_is_a_pre_created_metric_label() {
        let labels: Vec<_> = SessionRejection::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels, crate::metrics::SESSION_REJECTIONS);
    }

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
    fn opened_sessions_are_kept_by_exact_cookie_value_and_bounded() {
        let cache = OpenedCache::new();
        let opened = |id: &str| {
            Arc::new(OpenedSession {
                session: Session::new_for_test(id),
                identity: OnceLock::new(),
            })
        };
        cache.put("v1", opened("acme:1"));
        assert_eq!(cache.get("v1").unwrap().session.external_id, "acme:1");
        assert!(cache.get("v1 ").is_none() && cache.get("v").is_none());
        for i in 0..3 * OPENED_CAPACITY {
            cache.put(&format!("value-{i}"), opened("acme:2"));
        }
        let kept: usize = cache.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(kept <= OPENED_CAPACITY, "{kept} kept");
        assert!(cache
            .get(&format!("value-{}", 3 * OPENED_CAPACITY - 1))
            .is_some());
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
    fn oversized_names_are_dropped_before_the_cookie_outgrows_4kb() {
        let sealer = Sealer::new(&key(1), &[]);
        let mut s = session();
        // Control characters would grow sixfold as JSON escapes.
        s.given_name = Some("\u{1}".repeat(64) + "Ada");
        s.family_name = Some("\"".repeat(64));
        s.email = Some("\\".repeat(128));
        s.consumer = "c".repeat(2400);
        let v = sealer.seal(&s).unwrap();
        assert!(v.len() <= MAX_COOKIE_VALUE, "{}", v.len());
        let opened = sealer.open(&v).unwrap();
        assert_eq!(opened.given_name, None);
        assert_eq!(opened.latest_course().unwrap().id, "C-1");

        s.consumer = "c".repeat(4000);
        assert!(sealer.seal(&s).is_err());

        let mut t = session();
        t.given_name = Some("A\u{0}d\u{7f}a".into());
        let opened = sealer.open(&sealer.seal(&t).unwrap()).unwrap();
        assert_eq!(opened.given_name.as_deref(), Some("Ada"));
    }

    #[test]
    fn rejection_counters_follow_the_label_order() {
        for (i, r) in SessionRejection::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.label());
        }
    }

    #[test]
    fn public_paths_never_match_dot_segments_or_encoded_slashes() {
        let public = vec!["/static/".to_string(), "/favicon.ico".to_string()];
        assert!(is_public_path(&public, "/static/app.js"));
        assert!(is_public_path(&public, "/static/a..b/x.js"));
        assert!(is_public_path(&public, "/favicon.ico"));
        assert!(!is_public_path(&public, "/courses/C-1"));
        assert!(!is_public_path(&public, "/static/../admin"));
        assert!(!is_public_path(&public, "/static/%2e%2E/admin"));
        assert!(!is_public_path(&public, "/static/.%2e/admin"));
        assert!(!is_public_path(&public, "/static/./x"));
        assert!(!is_public_path(&public, "/static/..%2Fadmin"));
        assert!(!is_public_path(&public, "/static/..%5cadmin"));
        assert!(!is_public_path(&public, "/static/..\\admin"));
        assert!(!is_public_path(&[], "/static/app.js"));
    }

    #[test]
    fn cross_site_rules() {
        let origin = "https://learn.example.com";
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = http::HeaderMap::new();
            for (n, v) in pairs {
                m.insert(*n, HeaderValue::from_static(v));
            }
            m
        };
        let post = Method::POST;
        assert!(is_cross_site(
            &post,
            &h(&[("sec-fetch-site", "cross-site")]),
            origin
        ));
        assert!(is_cross_site(
            &post,
            &h(&[("origin", "https://evil.example")]),
            origin
        ));
        assert!(is_cross_site(&post, &h(&[("origin", "null")]), origin));
        assert!(!is_cross_site(&post, &h(&[("origin", origin)]), origin));
        assert!(!is_cross_site(
            &post,
            &h(&[("sec-fetch-site", "same-origin")]),
            origin
        ));
        // A server-to-server POST carries neither header.
        assert!(!is_cross_site(&post, &h(&[]), origin));
        assert!(is_cross_site(
            &Method::DELETE,
            &h(&[("origin", "https://evil.example")]),
            origin
        ));
        assert!(is_cross_site(
            &Method::from_bytes(b"PROPPATCH").unwrap(),
            &h(&[("origin", "https://evil.example")]),
            origin
        ));
        // Safe methods pass, except a WebSocket handshake from elsewhere.
        assert!(!is_cross_site(
            &Method::GET,
            &h(&[("sec-fetch-site", "cross-site")]),
            origin
        ));
        let ws = [
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("origin", "https://evil.example"),
        ];
        assert!(is_cross_site(&Method::GET, &h(&ws), origin));
        let ws = [
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("origin", origin),
        ];
        assert!(!is_cross_site(&Method::GET, &h(&ws), origin));
    }

    #[test]
    fn finds_cookie() {
        let h: Vec<&[u8]> = vec![b"a=1; __Host-s=abc; b=2"];
        assert_eq!(cookie_value(h.into_iter(), "__Host-s"), Some("abc"));
        // Another cookie's bytes outside UTF-8 do not hide ours.
        let h: Vec<&[u8]> = vec![b"pref=Zo\xEB; __Host-s=\"abc\""];
        assert_eq!(cookie_value(h.into_iter(), "__Host-s"), Some("abc"));
        let h: Vec<&[u8]> = vec![b"a", b"__Host-s=\xFF"];
        assert_eq!(cookie_value(h.into_iter(), "__Host-s"), None);
        for (headers, found) in [
            (vec![&b";;a;  __Host-s = v ;"[..]], Some("v")),
            (vec![b"x__Host-s=1; __Host-s="], Some("")),
            (vec![b"a=1", b"b=2;__Host-s=two"], Some("two")),
            (vec![b"", b";", b"__Host-s"], None),
        ] {
            assert_eq!(cookie_value(headers.into_iter(), "__Host-s"), found);
        }
    }

    /// The pairs as RFC 6265 splits them, one byte at a time.
    fn cookie_value_by_bytes<'a>(headers: &[&'a [u8]], name: &str) -> Option<&'a str> {
        for h in headers {
            for pair in h.split(|b| *b == b';') {
                let Some(eq) = pair.iter().position(|b| *b == b'=') else {
                    continue;
                };
                let (n, v) = pair.split_at(eq);
                if n.trim_ascii() == name.as_bytes() {
                    let v = std::str::from_utf8(&v[1..]).ok()?;
                    return Some(v.trim().trim_matches('"'));
                }
            }
        }
        None
    }

    proptest::proptest! {
        #[test]
        fn cookie_value_finds_what_a_byte_by_byte_split_finds(
            headers in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::prop_oneof![
                        proptest::sample::select(b"; =\"s\xff".to_vec()),
                        proptest::strategy::Just(b'a'),
                    ],
                    0..40,
                ),
                0..4,
            ),
        ) {
            let headers: Vec<&[u8]> = headers.iter().map(Vec::as_slice).collect();
            proptest::prop_assert_eq!(
                cookie_value(headers.iter().copied(), "s"),
                cookie_value_by_bytes(&headers, "s")
            );
        }
    }
}
