//! Request ids: every request on the public listener gets one.
//!
//! ```text
//! ServiceBuilder::new()
//!     .layer(RequestIdLayer::new(trust_forwarded_headers))
//!     .service(inner)
//! ```
//!
//! The id is the `X-Request-Id` a trusted proxy sent (only with
//! `server.trust_forwarded_headers`, and only when it is 1–128 visible
//! ASCII characters, so that it cannot break a log line), else a fresh one
//! (32 hex digits, [`RequestId::fresh`]). It replaces the request's own
//! `X-Request-Id` (the header policy sends it upstream, the access log
//! writes it: [`of`]), goes back to the client in the response's
//! `X-Request-Id`, and
//! every log line written while the request is handled carries it in a
//! `request` span ([`span`]). ltigate's own routes and the admin routes run
//! inside that span; on the proxied path, where log lines are rare (an
//! upstream failure, a forged header), the span is made when a line is
//! written, so that a proxied request does not pay for one it never uses.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::header::HeaderName;
use http::{HeaderValue, Request, Response};

/// `X-Request-Id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a trusted proxy.
pub const MAX_REQUEST_ID: usize = 128;

/// The id of one request, in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// A fresh id: 32 lowercase hex digits, never repeated within the
    /// process and not guessable from outside it ([`fresh_id`]).
    pub fn fresh() -> Self {
        // Hex digits are always a valid header value.
        RequestId(HeaderValue::from_bytes(&fresh_id()).unwrap_or(HeaderValue::from_static("0")))
    }

    /// The id a trusted proxy sent, when it is one ltigate passes on.
    pub fn from_trusted(value: &HeaderValue) -> Option<Self> {
        let b = value.as_bytes();
        let ok = (1..=MAX_REQUEST_ID).contains(&b.len()) && b.iter().all(|c| c.is_ascii_graphic());
        ok.then(|| RequestId(value.clone()))
    }

    /// The id as a header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// The id as text (always visible ASCII).
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("-")
    }
}

/// What a thread makes its fresh ids from: 64 random bits, drawn once per
/// thread, as the first 16 hex digits; a counter put through a keyed
/// permutation of 64-bit numbers as the last 16. Two ids of one thread
/// never repeat (the permutation is one-to-one), ids of two threads or
/// processes differ in their random half, and the counter does not show
/// (nobody can tell from an id how many requests came before it). Cheaper
/// than drawing 128 random bits per request, on the path of every request.
struct IdSource {
    prefix: [u8; 16],
    key: u64,
    next: std::cell::Cell<u64>,
}

thread_local! {
    static ID_SOURCE: IdSource = {
        let (prefix, key): (u64, u64) = rand::random();
        IdSource { prefix: hex16(prefix), key, next: std::cell::Cell::new(0) }
    };
}

/// 16 lowercase hex digits of `n`.
fn hex16(n: u64) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((n >> (4 * (15 - i))) & 0xf) as usize];
    }
    out
}

/// A one-to-one mixing of 64-bit numbers (the SplitMix64 finaliser).
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The text of a fresh request id (see [`IdSource`]).
fn fresh_id() -> [u8; 32] {
    ID_SOURCE.with(|s| {
        let n = s.next.get();
        s.next.set(n.wrapping_add(1));
        let mut id = [0u8; 32];
        id[..16].copy_from_slice(&s.prefix);
        id[16..].copy_from_slice(&hex16(mix(n ^ s.key)));
        id
    })
}

/// The id [`RequestIdLayer`] settled on for a request, from its headers.
pub fn of(headers: &http::HeaderMap) -> Option<&HeaderValue> {
    headers.get(&X_REQUEST_ID)
}

/// The `request` span of the request with the id `id` (none: a request
/// that came another way, such as a test calling a service directly).
pub fn span(id: Option<&HeaderValue>) -> tracing::Span {
    match id {
        Some(v) => tracing::info_span!("request", id = %v.to_str().unwrap_or("-")),
        None => tracing::info_span!("request"),
    }
}

/// Gives every request a [`RequestId`] (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct RequestIdLayer {
    trust: bool,
}

impl RequestIdLayer {
    /// `trust`: take a request's own `X-Request-Id` (a trusted proxy in front).
    pub fn new(trust: bool) -> Self {
        RequestIdLayer { trust }
    }
}

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = SetRequestId<S>;

    fn layer(&self, inner: S) -> SetRequestId<S> {
        SetRequestId {
            inner,
            trust: self.trust,
        }
    }
}

/// The service of [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct SetRequestId<S> {
    inner: S,
    trust: bool,
}

impl<S, B, R> tower::Service<Request<B>> for SetRequestId<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let trusted = match self.trust {
            true => req
                .headers()
                .get(&X_REQUEST_ID)
                .and_then(RequestId::from_trusted),
            false => None,
        };
        let id = trusted.unwrap_or_else(RequestId::fresh);
        let value = id.0.clone();
        req.headers_mut().insert(X_REQUEST_ID, id.0);
        let inner = self.inner.call(req);
        RequestIdFuture {
            inner,
            value: Some(value),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`SetRequestId`]: the inner future, then the
    /// id on the response.
    pub struct RequestIdFuture<F> {
        #[pin]
        inner: F,
        value: Option<HeaderValue>,
    }
}

impl<F, R, E> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<R>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = ready!(this.inner.poll(cx))?;
        if let Some(value) = this.value.take() {
            resp.headers_mut().insert(X_REQUEST_ID, value);
        }
        Poll::Ready(Ok(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_are_hex_and_differ() {
        let (a, b) = (RequestId::fresh(), RequestId::fresh());
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn fresh_ids_never_repeat_within_a_thread_and_differ_between_threads() {
        let mine: std::collections::HashSet<_> = (0..10_000).map(|_| fresh_id()).collect();
        assert_eq!(mine.len(), 10_000);
        let theirs = std::thread::spawn(fresh_id).join().unwrap();
        assert!(!mine.contains(&theirs));
        // The counter does not show: consecutive ids differ in many digits.
        let (a, b) = (fresh_id(), fresh_id());
        let differing = a[16..].iter().zip(&b[16..]).filter(|(x, y)| x != y).count();
        assert!(differing > 4, "{a:?} {b:?}");
    }

    #[test]
    fn a_trusted_id_is_taken_only_when_it_is_safe_to_log() {
        let ok = HeaderValue::from_static("ingress-42/abc");
        assert_eq!(
            RequestId::from_trusted(&ok).unwrap().as_str(),
            "ingress-42/abc"
        );
        for bad in ["", "with space", "tab\there"] {
            let v = HeaderValue::from_str(bad).unwrap();
            assert!(RequestId::from_trusted(&v).is_none(), "{bad:?}");
        }
        let long = HeaderValue::from_str(&"a".repeat(MAX_REQUEST_ID + 1)).unwrap();
        assert!(RequestId::from_trusted(&long).is_none());
        let max = HeaderValue::from_str(&"a".repeat(MAX_REQUEST_ID)).unwrap();
        assert!(RequestId::from_trusted(&max).is_some());
        let high = HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap();
        assert!(RequestId::from_trusted(&high).is_none());
    }
}
