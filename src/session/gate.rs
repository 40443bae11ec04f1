//! The session gate for proxied paths ([`SessionGateLayer`]): a valid
//! session, or a public path; last-seen refreshed at most once a minute.
//! And the cache of opened sessions it shares with the launch routes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response};

use super::identity::IdentityHeaders;
use super::model::{Session, SessionRejection};
use super::seal::Lifetime;
use super::Gate;
use crate::http::access_log::LogIdentity;
use crate::http::{respond, unix_now, Body};

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
    pub identity: OnceLock<IdentityHeaders>,
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
pub(crate) fn rejection(reason: SessionRejection, json: bool) -> Response<Body> {
    respond::reject(&reason, json)
}

/// An answer that is ready at once (a refusal).
pub(crate) type Ready = std::future::Ready<Result<Response<Body>, Infallible>>;

/// A request the session layers can guard: its head, whether its client
/// prefers JSON error bodies, and a slot for the session the gate opened.
/// The proxy's request type implements it; the layers here need nothing
/// else of it.
pub trait Carrier {
    /// The request's method, path and headers.
    fn head(&self) -> (&http::Method, &str, &HeaderMap);
    /// The client prefers JSON error bodies.
    fn json(&self) -> bool;
    /// Hands the request the session the gate opened, checked at `now`
    /// (unix seconds).
    fn set_session(&mut self, session: Arc<OpenedSession>, now: u64);
}

impl<S, R> tower::Service<R> for SessionGate<S>
where
    R: Carrier,
    S: tower::Service<R, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready, WithCookie<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: R) -> Self::Future {
        let shared = &self.shared;
        let now = unix_now();
        let mut cookie = None;
        let mut identity = None;
        let (_, path, headers) = req.head();
        match shared.app.open_session(headers, now) {
            Ok(s) => {
                if shared.log_identity {
                    identity = Some(LogIdentity {
                        tenant: s.session.tenant.clone(),
                        external_id: s.session.external_id.clone(),
                    });
                }
                let public = is_public_path(&shared.app.settings.server.public_paths, path);
                // Public paths (static assets) may be cached: no cookie there.
                if !public {
                    cookie = shared.refreshed(&s.session, now);
                }
                req.set_session(s, now);
            }
            Err(reason) => {
                if !is_public_path(&shared.app.settings.server.public_paths, path) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
