//! Listener plumbing: accept loop, HTTP/1.1 + HTTP/2 connections with the
//! header-read timeout, the send timeout and the header size limit, and
//! graceful shutdown (stop accepting, let in-flight requests finish within
//! `shutdown_grace`).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::http::{Body, BoxError};
use crate::stall::Stall;

mod h2_send;
pub mod shed;

use h2_send::{SendWait, StreamExecutor};

/// Per-listener connection settings.
#[derive(Debug, Clone, Copy)]
pub struct ConnSettings {
    /// Time a client has to send its request headers.
    pub header_read_timeout: Duration,
    /// Longest a client may take none of what is being sent to it.
    pub send_timeout: Duration,
    /// Largest request header block; larger gets 431.
    pub max_header_bytes: usize,
    /// Time in-flight requests get on shutdown.
    pub shutdown_grace: Duration,
}

/// Serves `listener` until `shutdown` flips to true, then drains for at
/// most `shutdown_grace`. `make_service` is called once per connection with
/// the client's address; the service it returns answers that connection's
/// requests (and may keep per-connection state).
pub async fn serve<M, S, F>(
    listener: TcpListener,
    make_service: M,
    conn: ConnSettings,
    mut shutdown: watch::Receiver<bool>,
) where
    M: Fn(SocketAddr) -> S + Send + Sync + 'static,
    S: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let make_service = Arc::new(make_service);
    let mut builder = auto::Builder::new(StreamExecutor {
        send_timeout: conn.send_timeout,
    });
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(conn.header_read_timeout)
        .max_buf_size(conn.max_header_bytes.max(8192))
        .keep_alive(true);
    // The same header bound for HTTP/2 (hyper's own default is 16 KiB):
    // larger header lists get 431 there too.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(conn.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();

    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let make_service = make_service.clone();
        let builder = builder.clone();
        let graceful_watcher = graceful.watcher();
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            // hyper's header timeout starts once it knows the protocol;
            // until then (a silent client) this one applies.
            if !protocol_known(&stream, conn.header_read_timeout).await || *stopping.borrow() {
                return;
            }
            let activity = Arc::new(Activity::new());
            let requests = activity.clone();
            let svc = make_service(peer);
            let hyper_svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let busy = requests.begin();
                Tracked {
                    inner: svc(req),
                    busy: Some(busy),
                }
            });
            let io = TokioIo::new(SendTimeout::new(stream, conn.send_timeout));
            let conn_fut = builder.serve_connection_with_upgrades(io, hyper_svc);
            // hyper closes an idle HTTP/1.1 connection after the header
            // timeout, but keeps an idle HTTP/2 one open for ever: a
            // connection with no request in flight for that long is closed
            // here, whatever its protocol.
            tokio::select! {
                ended = graceful_watcher.watch(conn_fut) => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                () = activity.idle_for(conn.header_read_timeout) => {
                    tracing::debug!("closed an idle connection");
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(conn.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
    }
}

/// Listen backlog: a burst of connections beyond what is being accepted
/// waits in the kernel queue (capped by `net.core.somaxconn`) instead of
/// waiting for SYN retransmits, so overload meets the fast 503s.
const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on `addr` (`SO_REUSEADDR`, a backlog of
/// [`LISTEN_BACKLOG`]).
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The `make_service` of [`serve`] for a listener that keeps no state per
/// connection: every connection gets (a clone of) `service`.
pub fn stateless<S>(service: S) -> impl Fn(SocketAddr) -> S + Send + Sync + 'static
where
    S: Clone + Send + Sync + 'static,
{
    move |_peer| service.clone()
}

/// Requests in flight on one connection, and since when it has had none.
struct Activity {
    origin: tokio::time::Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `origin` when the last request finished.
    idle_since_ms: AtomicU64,
}

/// One request in flight; ends when dropped (with the response body).
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since_ms.store(a.elapsed_ms(), Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    fn new() -> Self {
        Activity {
            origin: tokio::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Resolves once no request has been in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            if self.in_flight.load(Ordering::Acquire) > 0 {
                tokio::time::sleep(limit).await;
                continue;
            }
            let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
            let deadline = self.origin + since + limit;
            if tokio::time::Instant::now() >= deadline {
                if self.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                continue;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's response future that ends its [`Busy`] mark with the
    /// response body. A named future rather than an async block, so the
    /// service's future is not copied into a second slot of a wrapping
    /// state machine on every request.
    struct Tracked<F> {
        #[pin]
        inner: F,
        busy: Option<Busy>,
    }
}

impl<F> Future for Tracked<F>
where
    F: Future<Output = Response<Body>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = std::task::ready!(this.inner.poll(cx));
        Poll::Ready(Ok(match this.busy.take() {
            // On HTTP/2, the stream's send timeout watches this body.
            Some(busy) => hold(resp, busy, SendWait::current()),
            None => resp,
        }))
    }
}

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits (at most `timeout`) until the client has sent enough to tell
/// HTTP/1 from HTTP/2. False: it sent nothing in time, or closed.
async fn protocol_known(stream: &TcpStream, timeout: Duration) -> bool {
    let wait = async {
        let mut buf = [0u8; 24];
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n == buf.len() || buf[..n] != H2_PREFACE[..n] => return true,
                // A partial HTTP/2 preface: wait for the rest.
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    };
    tokio::time::timeout(timeout, wait).await.unwrap_or(false)
}

/// The response with `guard` kept alive until its body has been sent (or
/// dropped): a concurrency permit then covers a streaming download too,
/// not just the wait for its first byte.
pub fn hold_until_sent<G: Send + Sync + Unpin + 'static>(
    resp: Response<Body>,
    guard: G,
) -> Response<Body> {
    hold(resp, guard, None)
}

/// [`hold_until_sent`], the body reporting to `send_wait` when there is one.
fn hold<G: Send + Sync + Unpin + 'static>(
    resp: Response<Body>,
    guard: G,
    send_wait: Option<Arc<SendWait>>,
) -> Response<Body> {
    resp.map(|inner| {
        GuardedBody {
            inner,
            _guard: guard,
            send_wait,
        }
        .boxed()
    })
}

/// A client connection whose writes fail once the client has taken nothing
/// for `limit`: a client that stops reading a response (or a WebSocket)
/// then no longer holds its request slot, the upstream connection behind
/// it, or the upstream's worker writing into it. Only time a write waits
/// for the client counts; a slow reader that keeps taking bytes is served.
struct SendTimeout {
    io: TcpStream,
    stall: Stall,
}

impl SendTimeout {
    fn new(io: TcpStream, limit: Duration) -> Self {
        SendTimeout {
            io,
            stall: Stall::new(limit),
        }
    }

    /// A write's outcome: once a write has waited for the client for the
    /// limit, an error that ends the connection.
    fn wrote<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stall.progressed();
            return polled;
        }
        ready!(self.stall.poll_waited(cx));
        tracing::debug!(limit = ?self.stall.limit(), "the client took nothing for the send timeout; closing");
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client took nothing of the response for the send timeout",
        )))
    }
}

impl AsyncRead for SendTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A body that owns a guard, and on HTTP/2 tells its stream's send timeout
/// whether hyper is waiting to send what it handed over.
struct GuardedBody<G> {
    inner: Body,
    _guard: G,
    send_wait: Option<Arc<SendWait>>,
}

impl<G> http_body::Body for GuardedBody<G>
where
    G: Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Some(wait) = &self.send_wait {
            match &polled {
                Poll::Ready(Some(Ok(_))) => wait.handed_over(),
                _ => wait.asked(),
            }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http_body_util::BodyExt;

    use super::hold_until_sent;
    use crate::http::respond;

    #[tokio::test]
    async fn the_guard_lives_until_the_body_is_sent() {
        let permits = Arc::new(tokio::sync::Semaphore::new(1));
        let permit = permits.clone().try_acquire_owned().unwrap();
        let resp = hold_until_sent(respond::text(http::StatusCode::OK, "body"), permit);
        assert_eq!(permits.available_permits(), 0);
        let (parts, body) = resp.into_parts();
        assert_eq!(parts.status, 200);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "body");
        assert_eq!(permits.available_permits(), 1);
    }
}
