//! Keep-alive HTTP/1.1 connections to the upstream.
//!
//! A client connection keeps the upstream connection of its last request
//! ([`Affinity`]) and sends its next request on it: a browser's requests on
//! one kept-alive connection go down one upstream connection, with no pool
//! lookup and no lock anyone else takes. Upstream connections a client
//! connection cannot use (it closed, or an HTTP/2 client has several
//! requests in flight) wait in a small shared pool, newest first
//! ([`Upstream`]).
//!
//! An upstream connection idle for longer than [`IDLE`] is closed rather
//! than used: that is shorter than the keep-alive timeouts of common
//! upstream servers (gunicorn 2 s, Node and Apache 5 s), so a request does
//! not race the upstream closing an idle connection. Should it happen
//! anyway, a request the connection could not start sending is sent again
//! on a new connection; a request already (partly) sent is not, since the
//! upstream may have acted on it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response};
use http_body::Body as HttpBody;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::BoxError;

/// Longest an upstream connection may sit idle and still be used.
pub const IDLE: Duration = Duration::from_secs(1);

/// Why a request did not get a response head from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be opened.
    #[error("cannot connect to the upstream: {0}")]
    Connect(#[source] std::io::Error),
    /// Opening the connection took longer than the connect timeout.
    #[error("connecting to the upstream timed out")]
    ConnectTimeout,
    /// The connection failed while the request was sent or the response
    /// head read.
    #[error("upstream request failed: {0}")]
    Request(#[source] hyper::Error),
}

impl UpstreamError {
    /// Whether the upstream could not be reached at all.
    pub fn is_connect(&self) -> bool {
        !matches!(self, UpstreamError::Request(_))
    }
}

/// The upstream's address and the idle connections shared between client
/// connections.
pub struct Upstream<B> {
    /// `host:port` to connect to.
    address: String,
    connect_timeout: Duration,
    max_idle: usize,
    /// Oldest at the front; taken from the back.
    idle: Mutex<VecDeque<Idle<B>>>,
}

/// An upstream connection not carrying a request, and since when.
struct Idle<B> {
    sender: SendRequest<B>,
    since: Instant,
}

impl<B> Idle<B> {
    fn fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) < IDLE && !self.sender.is_closed()
    }
}

impl<B> Upstream<B> {
    /// Connections to `address` (`host:port`), at most `max_idle` of them
    /// kept idle.
    pub fn new(address: String, connect_timeout: Duration, max_idle: usize) -> Arc<Self> {
        Arc::new(Upstream {
            address,
            connect_timeout,
            max_idle,
            idle: Mutex::new(VecDeque::new()),
        })
    }

    /// The most recently used idle connection that is ready for a request.
    /// Busy ones stay; closed and stale ones are dropped (which closes
    /// them).
    fn take_idle(&self, now: Instant) -> Option<SendRequest<B>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let mut busy = Vec::new();
        let mut found = None;
        while let Some(c) = idle.pop_back() {
            if !c.fresh(now) {
                continue;
            }
            if c.sender.is_ready() {
                found = Some(c.sender);
                break;
            }
            busy.push(c);
            // Several client connections' downloads in flight: a new
            // connection is cheaper than walking all of them.
            if busy.len() >= 8 {
                break;
            }
        }
        idle.extend(busy.into_iter().rev());
        found
    }

    /// Keeps a connection for another client connection.
    fn put_idle(&self, sender: SendRequest<B>, now: Instant) {
        if sender.is_closed() || self.max_idle == 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while idle.front().is_some_and(|c| !c.fresh(now)) || idle.len() >= self.max_idle {
            idle.pop_front();
        }
        idle.push_back(Idle { sender, since: now });
    }
}

impl<B> Upstream<B>
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Opens a new connection; its I/O runs on a task of its own until
    /// either side closes it (or, after a `101`, until the tunnel ends).
    async fn connect(&self) -> Result<SendRequest<B>, UpstreamError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&*self.address))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout)?
            .map_err(UpstreamError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Request)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// The upstream connection one client connection keeps between its
/// requests. Handed to the shared pool when the client connection ends.
pub struct Affinity<B> {
    upstream: Arc<Upstream<B>>,
    kept: Mutex<Option<Idle<B>>>,
}

impl<B> Affinity<B>
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A client connection's view of `upstream`.
    pub fn new(upstream: Arc<Upstream<B>>) -> Self {
        Affinity {
            upstream,
            kept: Mutex::new(None),
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) and waits for the
    /// response head. The connection is kept for the next request as soon
    /// as the head is in: it is ready again once the body has been read.
    pub async fn send(&self, req: Request<B>) -> Result<Response<Incoming>, UpstreamError> {
        let (mut sender, mut reused) = match self.take() {
            Some(s) => (s, true),
            // Boxed: the connect future is only needed now and then.
            None => (Box::pin(self.upstream.connect()).await?, false),
        };
        let mut req = req;
        loop {
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.keep(sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    // A kept connection closed before the request went out:
                    // nothing reached the upstream, so send it afresh.
                    Some(unsent) if reused => {
                        tracing::debug!(error = %e.error(), "kept upstream connection had closed; reconnecting");
                        req = unsent;
                        sender = Box::pin(self.upstream.connect()).await?;
                        reused = false;
                    }
                    _ => return Err(UpstreamError::Request(e.into_error())),
                },
            }
        }
    }

    /// This client connection's kept connection if it is ready, else an
    /// idle one from the pool. A kept connection still busy (another
    /// request of an HTTP/2 client) stays kept.
    fn take(&self) -> Option<SendRequest<B>> {
        let now = Instant::now();
        {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = kept.take() {
                if c.fresh(now) {
                    if c.sender.is_ready() {
                        return Some(c.sender);
                    }
                    *kept = Some(c);
                }
            }
        }
        self.upstream.take_idle(now)
    }

    fn keep(&self, sender: SendRequest<B>) {
        let now = Instant::now();
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        match &*kept {
            Some(c) if c.fresh(now) => {
                drop(kept);
                self.upstream.put_idle(sender, now);
            }
            _ => *kept = Some(Idle { sender, since: now }),
        }
    }
}

impl<B> Drop for Affinity<B> {
    fn drop(&mut self) {
        let kept = self
            .kept
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(c) = kept {
            if c.fresh(Instant::now()) {
                self.upstream.put_idle(c.sender, c.since);
            }
        }
    }
}
