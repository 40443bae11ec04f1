//! The proxied side of the public listener: every request that is not one
//! of ltigate's own routes passes these layers, built once at start-up in
//! [`Proxy::new`] and composed with the rest of the public stack in
//! `lib.rs`:
//!
//! 0. [`ProxyRequest::new`] — the request with its client connection;
//! 1. [`SessionGateLayer`] — a valid session, or a public path; else 401;
//! 2. [`CsrfLayer`] — no unsafe cross-site request or cross-origin
//!    WebSocket rides on the cookie; else 403;
//! 3. [`HeaderPolicyLayer`] — strip what a client may not send, set the
//!    forwarding and identity headers;
//! 4. [`Forward`] — the upstream over kept-alive connections (each client
//!    connection keeps one, see [`upstream`]), bodies streamed both
//!    ways, WebSocket tunnels, 502/504 pages, the response policy and the
//!    proxy metrics.
//!
//! Each layer is always ready and answers with `Infallible`; none of them
//! touches the store.

pub mod error;
pub mod headers;
pub mod upstream;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::uri::Authority;
use http::{header, Method, Request, Response, StatusCode, Uri};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use prometheus::{Histogram, IntCounter};
use tokio::time::Instant;

use crate::http::is_websocket_upgrade;
use crate::http::request_id;
use crate::http::{respond, Body};
use crate::session::{Carrier, CsrfLayer, Gate, OpenedSession, SessionGateLayer};
use error::ProxyError;
use headers::{HeaderPolicy, HeaderPolicyLayer, ResponsePolicy};
use upstream::{Affinity, Upstream, UpstreamError};

/// A request on its way through the proxy stack.
pub struct ProxyRequest<B = Incoming> {
    /// The client's request (rewritten by the layers).
    pub http: Request<B>,
    /// The session, once the gate has checked it.
    pub session: Option<Arc<OpenedSession>>,
    /// The client's `Accept` header: whether error bodies are JSON is
    /// only worked out for an error ([`ProxyRequest::json`]).
    pub accept: Option<http::HeaderValue>,
    /// The client connection the request came on.
    pub client: Arc<ClientConn>,
    /// The request's id, once the header policy has set it (for the log
    /// lines of a failure: the request itself is gone by then).
    pub request_id: Option<http::HeaderValue>,
    /// Unix seconds when the session gate checked the session (0 before).
    pub now: u64,
}

impl<B> Carrier for ProxyRequest<B> {
    fn head(&self) -> (&Method, &str, &http::HeaderMap) {
        (
            self.http.method(),
            self.http.uri().path(),
            self.http.headers(),
        )
    }

    fn json(&self) -> bool {
        ProxyRequest::json(self)
    }

    fn set_session(&mut self, session: Arc<OpenedSession>, now: u64) {
        self.session = Some(session);
        self.now = now;
    }
}

impl<B> ProxyRequest<B> {
    /// A request that came on `client`'s connection, not yet gated.
    pub fn new(http: Request<B>, client: Arc<ClientConn>) -> Self {
        ProxyRequest {
            accept: http.headers().get(http::header::ACCEPT).cloned(),
            http,
            session: None,
            client,
            request_id: None,
            now: 0,
        }
    }

    /// The client prefers JSON error bodies.
    pub fn json(&self) -> bool {
        respond::accepts_json(self.accept.as_ref())
    }
}

/// What a client connection keeps between its requests.
pub struct ClientConn {
    /// The client's address.
    pub peer: SocketAddr,
    /// Its text for `X-Forwarded-For`, made once.
    pub peer_text: http::HeaderValue,
    /// The upstream connection of its last request.
    upstream: Affinity,
}

/// Idle upstream connections kept for client connections that have none.
const MAX_IDLE_UPSTREAM: usize = 1024;

/// The layers of the proxied side and its innermost service, each built
/// once; `lib.rs` composes them.
pub struct Proxy {
    /// Who is asking: without a valid session only public paths pass.
    pub session: SessionGateLayer,
    /// From where: checked once the cookie is known to matter.
    pub csrf: CsrfLayer,
    /// What the upstream sees: after the gate, so the identity headers come
    /// from the session just checked.
    pub headers: HeaderPolicyLayer,
    /// The upstream.
    pub forward: Forward,
    upstream: Arc<Upstream>,
}

impl Proxy {
    /// Builds the stack from the settings (once, at start-up).
    pub fn new(app: Arc<Gate>) -> anyhow::Result<Self> {
        let s = &app.settings;
        let upstream: Uri = s
            .upstream
            .url
            .parse()
            .map_err(|e| anyhow::anyhow!("upstream.url: {e}"))?;
        if upstream.scheme_str() != Some("http") {
            anyhow::bail!("upstream.url: only http:// upstreams are supported (ltigate runs beside the platform)");
        }
        let authority = upstream
            .authority()
            .ok_or_else(|| anyhow::anyhow!("upstream.url: missing host"))?
            .clone();
        let public = &s.server.public_url;
        let public_authority = match public.port {
            Some(p) => format!("{}:{p}", public.host),
            None => public.host.clone(),
        };
        let policy = HeaderPolicy::new(
            &s.session.header_prefix,
            s.server.trust_forwarded_headers,
            &s.session.cookie_name,
            &public.scheme,
            &public_authority,
            authority.as_str(),
            s.upstream.pass_host_header,
        )?
        .with_public_prefix(&public.prefix)?
        .with_course_path(s.upstream.course_path.as_deref())
        .with_environments(
            s.tenants
                .iter()
                .filter_map(|t| Some((t.name.as_str(), t.environment.as_deref()?))),
        )
        .with_assertion(app.assertion.clone());
        let forward = Forward::new(&app, &authority, upstream.path())?;
        let address = match authority.port_u16() {
            Some(port) => format!("{}:{port}", authority.host()),
            None => format!("{}:80", authority.host()),
        };
        let connect_timeout = s.upstream.timeout.min(Duration::from_secs(10));
        let upstream = Upstream::new(
            address,
            connect_timeout,
            s.upstream.timeout,
            MAX_IDLE_UPSTREAM,
        );

        Ok(Proxy {
            session: SessionGateLayer::new(app.clone()),
            csrf: CsrfLayer::new(&app),
            headers: HeaderPolicyLayer::new(policy),
            forward,
            upstream,
        })
    }

    /// State for a new client connection from `peer`.
    pub fn connection(&self, peer: SocketAddr) -> Arc<ClientConn> {
        Arc::new(ClientConn {
            peer,
            peer_text: headers::peer_text(peer.ip()),
            upstream: Affinity::new(self.upstream.clone()),
        })
    }
}

/// The innermost service: sends the request to the upstream and streams
/// the response back.
#[derive(Clone)]
pub struct Forward {
    shared: Arc<ForwardShared>,
}

struct ForwardShared {
    /// Path prefix of `upstream.url` (no trailing slash).
    prefix: String,
    timeout: Duration,
    responses: ResponsePolicy,
    /// `ltigate_proxy_requests_total` by status class (1xx…5xx).
    codes: [IntCounter; 5],
    duration: Histogram,
}

/// The response future of [`Forward`].
pub type ForwardFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl Forward {
    /// The response policy and metrics for `upstream.url`.
    pub fn new(app: &Gate, authority: &Authority, path: &str) -> anyhow::Result<Self> {
        let s = &app.settings;
        let prefix = path.trim_end_matches('/').to_string();
        let host = authority.host().to_string();
        let responses =
            ResponsePolicy::new(s, &format!("http://{}", authority.as_str()), &host, &prefix)?;
        let codes = crate::metrics::CODE_CLASSES
            .map(|c| app.metrics.proxy_requests.with_label_values(&[c]));
        Ok(Forward {
            shared: Arc::new(ForwardShared {
                prefix,
                timeout: s.upstream.timeout,
                responses,
                codes,
                duration: app.metrics.proxy_duration.clone(),
            }),
        })
    }
}

impl tower::Service<ProxyRequest<Incoming>> for Forward {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ForwardFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ProxyRequest<Incoming>) -> ForwardFuture {
        Box::pin(self.shared.clone().forward(req).map(Ok))
    }
}

impl ForwardShared {
    async fn forward(self: Arc<Self>, req: ProxyRequest<Incoming>) -> Response<Body> {
        let ProxyRequest {
            http: mut req,
            accept,
            client,
            request_id: id,
            ..
        } = req;
        let started = Instant::now();
        let json = || respond::accepts_json(accept.as_ref());
        if req.method() == Method::CONNECT {
            // A 2xx would turn the upstream connection into a tunnel.
            return self.count(respond::reject(&ProxyError::Connect, json()));
        }
        if req.headers().get_all(header::HOST).iter().nth(1).is_some() {
            // RFC 9112 §3.2: an upstream would pick one or join them.
            return self.count(respond::reject(&ProxyError::DuplicateHost, json()));
        }
        let Some(target) = self.target(req.uri()) else {
            return self.count(respond::reject(&ProxyError::BadTarget, json()));
        };
        let upgrade = is_websocket_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        parts.uri = target;
        parts.version = http::Version::HTTP_11;
        // A request with a body keeps the timeout from running while the
        // client is still sending it: the deadline counts from its last
        // progress.
        let progress = (!http_body::Body::is_end_stream(&body)).then(|| {
            Arc::new(Progress {
                origin: started,
                last_ms: AtomicU64::new(0),
                waiting_for_client: AtomicBool::new(false),
            })
        });
        let body = RequestBody {
            inner: body,
            progress: progress.clone(),
        };
        let req = Request::from_parts(parts, body);
        let upgrading = upgrade.is_some();
        let response = async {
            Ok(if upgrading {
                boxed(client.upstream.send_upgrade(req).await?)
            } else {
                boxed(client.upstream.send(req).await?)
            })
        };
        tokio::pin!(response);
        let deadline = tokio::time::sleep_until(started + self.timeout);
        tokio::pin!(deadline);
        let result = loop {
            tokio::select! {
                biased;
                result = &mut response => break result,
                () = &mut deadline => {
                    match progress.as_ref().map(|p| (p.deadline(self.timeout), p.waiting_for_client())) {
                        Some((next, _)) if next > deadline.deadline() => deadline.as_mut().reset(next),
                        last => {
                            let client_stalled = last.is_some_and(|(_, waiting)| waiting);
                            return self.timed_out(started, client_stalled, json(), id.as_ref());
                        }
                    }
                }
            }
        };
        self.finish(result, upgrade, started, json, id.as_ref())
    }

    /// The upstream request target (origin-form) of a request URI.
    fn target(&self, uri: &Uri) -> Option<Uri> {
        let pq = uri.path_and_query()?;
        if !pq.as_str().starts_with('/') {
            return None;
        }
        if self.prefix.is_empty() {
            Some(Uri::from(pq.clone()))
        } else {
            format!("{}{}", self.prefix, pq.as_str()).parse().ok()
        }
    }

    fn count(&self, resp: Response<Body>) -> Response<Body> {
        let class = (resp.status().as_u16() / 100).clamp(1, 5) as usize - 1;
        self.codes[class].inc();
        resp
    }

    fn finish(
        &self,
        result: Result<Response<Body>, UpstreamError>,
        upgrade: Option<OnUpgrade>,
        started: Instant,
        json: impl Fn() -> bool,
        id: Option<&http::HeaderValue>,
    ) -> Response<Body> {
        self.duration.observe(started.elapsed().as_secs_f64());
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => {
                let _span = request_id::span(id).entered();
                tracing::warn!(error = %e, connect = e.is_connect(), "upstream request failed");
                return self.count(respond::reject(&ProxyError::UpstreamUnreachable, json()));
            }
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client) = upgrade else {
                let _span = request_id::span(id).entered();
                tracing::warn!("the upstream switched protocols without being asked");
                return self.count(respond::reject(&ProxyError::UpstreamProtocol, json()));
            };
            let upstream = hyper::upgrade::on(&mut resp);
            tokio::spawn(tunnel(client, upstream));
        }
        self.responses.apply(resp.status(), resp.headers_mut());
        self.count(resp)
    }

    /// No answer within the timeout: the upstream's doing (504), or the
    /// client's when it stopped sending its request body (408).
    fn timed_out(
        &self,
        started: Instant,
        client_stalled: bool,
        json: bool,
        id: Option<&http::HeaderValue>,
    ) -> Response<Body> {
        self.duration.observe(started.elapsed().as_secs_f64());
        let _span = request_id::span(id).entered();
        let error = if client_stalled {
            tracing::info!(timeout = ?self.timeout, "the client stopped sending its request body");
            ProxyError::RequestTimeout
        } else {
            tracing::warn!(timeout = ?self.timeout, "upstream did not answer in time");
            ProxyError::UpstreamTimeout
        };
        self.count(respond::reject(&error, json))
    }
}

/// A response with its body boxed as [`Body`].
fn boxed<B>(resp: Response<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<crate::http::BoxError>,
{
    resp.map(|b| b.map_err(Into::into).boxed())
}

/// Copies bytes both ways between an upgraded client connection and the
/// upgraded upstream connection until either side closes.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade) {
    match tokio::try_join!(client, upstream) {
        Ok((c, u)) => {
            let mut c = TokioIo::new(c);
            let mut u = TokioIo::new(u);
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        }
        Err(e) => tracing::warn!(error = %e, "upgrade failed"),
    }
}

/// When the request body last moved (ms after `origin`), and whether ltigate
/// is waiting for the client to send more of it (rather than for the
/// upstream to take what it has).
struct Progress {
    origin: Instant,
    last_ms: AtomicU64,
    waiting_for_client: AtomicBool,
}

impl Progress {
    fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn waiting_for_client(&self) -> bool {
        self.waiting_for_client.load(Ordering::Relaxed)
    }

    fn deadline(&self, timeout: Duration) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + timeout
    }
}

/// The client's request body, streamed to the upstream as it arrives.
pub struct RequestBody {
    inner: Incoming,
    progress: Option<Arc<Progress>>,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Some(p) = &self.progress {
            if polled.is_ready() {
                p.touch();
            }
            p.waiting_for_client
                .store(polled.is_pending(), Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
