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
//! not race the upstream closing an idle connection. A kept connection the
//! upstream has closed meanwhile is noticed before it is used (its end of
//! stream is already in); should the close cross the request anyway, a
//! request without a body and with an idempotent method is sent once more
//! on a new connection (RFC 9110 §9.2.2); any other is not, since the
//! upstream may have acted on it.
//!
//! The exchange itself is HTTP/1.1 written and read here ([`h1`] frames
//! it): the request head goes out in one write from a buffer the
//! connection keeps, the response head is parsed from the connection's own
//! read buffer, and the response body is read by the client connection's
//! task as the client takes it, so no other task or channel sits between
//! the two sockets. A WebSocket upgrade goes through hyper's client on a
//! connection of its own, which becomes the tunnel.
//!
//! A response body that receives nothing for the upstream timeout fails
//! (the client's connection closes; the status is already out) and its
//! upstream connection is closed: a stalled upstream never holds a client
//! connection, a request slot or an upstream connection for ever. Only time
//! spent waiting for the upstream counts, never time the client takes.

/// HTTP/1.1 framing of upstream exchanges: request heads out, response heads
/// and chunked bodies in. Pure functions over buffers (fuzzed by
/// `fuzz/fuzz_targets/h1_response.rs`).
pub mod h1;

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub use self::h1::H1Error;
use self::h1::{ChunkedDecoder, Decoded, RequestFraming, ResponseFraming};
use crate::http::BoxError;
use crate::stall::Stall;

/// Longest an upstream connection may sit idle and still be used.
pub const IDLE: Duration = Duration::from_secs(1);

/// Read-buffer growth when it runs out of room.
const READ_CHUNK: usize = 8 * 1024;
/// A connection whose buffers grew past this (a large head or body) gets
/// fresh ones before it is kept.
const KEEP_BUFFER: usize = 64 * 1024;

/// Why a request did not get a response head from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be opened.
    #[error("cannot connect to the upstream: {0}")]
    Connect(#[source] io::Error),
    /// Opening the connection took longer than the connect timeout.
    #[error("connecting to the upstream timed out")]
    ConnectTimeout,
    /// The connection failed while the request was sent or the response
    /// head read.
    #[error("upstream connection failed: {0}")]
    Io(#[source] io::Error),
    /// The upstream closed the connection without answering.
    #[error("the upstream closed the connection without answering")]
    Closed,
    /// The upstream's answer is not HTTP/1.1 as RFC 9112 frames it.
    #[error("upstream response unreadable: {0}")]
    Protocol(#[source] H1Error),
    /// The client's request body failed while it was being sent.
    #[error("request body failed: {0}")]
    Body(#[source] BoxError),
    /// An upgrade request failed in hyper's client.
    #[error("upstream upgrade request failed: {0}")]
    Upgrade(#[source] hyper::Error),
}

impl UpstreamError {
    /// Whether the upstream could not be reached at all.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_) | UpstreamError::ConnectTimeout
        )
    }
}

/// One HTTP/1.1 connection to the upstream and its buffers.
struct Conn {
    io: TcpStream,
    read: BytesMut,
    write: Vec<u8>,
}

impl Conn {
    /// Whether the connection can carry a request: nothing arrived on it
    /// since its last response (no end of stream, no stray bytes). Reads
    /// only what readiness already reported, so a quiet connection costs
    /// no system call.
    fn looks_open(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut buf),
            Poll::Pending
        )
    }

    /// Drops buffers that grew large for one exchange.
    fn trim(&mut self) {
        if self.read.capacity() > KEEP_BUFFER {
            self.read = BytesMut::new();
        }
        if self.write.capacity() > KEEP_BUFFER {
            self.write = Vec::new();
        }
    }

    /// Reads more of the response into the read buffer.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        make_room(&mut self.read);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }
}

/// The upstream's address and the idle connections shared between client
/// connections.
pub struct Upstream {
    /// `host:port` to connect to.
    address: String,
    connect_timeout: Duration,
    /// Longest a response body may wait for its next bytes.
    body_timeout: Duration,
    max_idle: usize,
    /// Oldest at the front; taken from the back.
    idle: Mutex<VecDeque<Idle>>,
}

/// An upstream connection not carrying a request, and since when.
struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

impl Idle {
    fn fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) < IDLE
    }
}

impl Upstream {
    /// Connections to `address` (`host:port`), at most `max_idle` of them
    /// kept idle. A response body that receives nothing for `body_timeout`
    /// fails (and its connection is closed).
    pub fn new(
        address: String,
        connect_timeout: Duration,
        body_timeout: Duration,
        max_idle: usize,
    ) -> Arc<Self> {
        Arc::new(Upstream {
            address,
            connect_timeout,
            body_timeout,
            max_idle,
            idle: Mutex::new(VecDeque::new()),
        })
    }

    /// The most recently used idle connection that is still open. Closed
    /// and stale ones are dropped.
    fn take_idle(&self, now: Instant) -> Option<Box<Conn>> {
        loop {
            // The lock is held for the pop only: a closed connection is
            // dropped (closed) outside it.
            let mut c = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_back()?;
            if c.fresh(now) && c.conn.looks_open() {
                return Some(c.conn);
            }
        }
    }

    /// Keeps a connection for another client connection.
    fn put_idle(&self, conn: Box<Conn>, since: Instant) {
        if self.max_idle == 0 {
            return;
        }
        let mut evicted = Vec::new();
        {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            while idle.front().is_some_and(|c| !c.fresh(since)) || idle.len() >= self.max_idle {
                evicted.extend(idle.pop_front());
            }
            idle.push_back(Idle { conn, since });
        }
        // Closed outside the lock.
        drop(evicted);
    }

    async fn connect_stream(&self) -> Result<TcpStream, UpstreamError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&*self.address))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout)?
            .map_err(UpstreamError::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect(&self) -> Result<Box<Conn>, UpstreamError> {
        Ok(Box::new(Conn {
            io: self.connect_stream().await?,
            read: BytesMut::new(),
            write: Vec::new(),
        }))
    }
}

/// The upstream connection one client connection keeps between its
/// requests. Handed to the shared pool when the client connection ends
/// (and the last response body it is streaming is through).
#[derive(Clone)]
pub struct Affinity(Arc<Kept>);

struct Kept {
    upstream: Arc<Upstream>,
    slot: Mutex<Option<Idle>>,
}

impl Affinity {
    /// A client connection's view of `upstream`.
    pub fn new(upstream: Arc<Upstream>) -> Self {
        Affinity(Arc::new(Kept {
            upstream,
            slot: Mutex::new(None),
        }))
    }

    /// Sends `req` (origin-form URI, `Host` set) and waits for the
    /// response head. The connection is kept for the next request once
    /// the response body has been read to its end.
    pub async fn send<B>(&self, req: Request<B>) -> Result<Response<UpstreamBody>, UpstreamError>
    where
        B: HttpBody<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let (parts, mut body) = req.into_parts();
        let framing = RequestFraming::of(body.is_end_stream(), body.size_hint().exact());
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        // Only a request with nothing to send but its head may go out
        // twice, and only if sending it twice means what sending it once
        // does.
        let may_resend = framing == RequestFraming::Empty && parts.method.is_idempotent();
        let (mut conn, mut reused) = match self.take() {
            Some(c) => (c, true),
            // Boxed: the connect future is only needed now and then.
            None => (Box::pin(self.0.upstream.connect()).await?, false),
        };
        let head = loop {
            conn.write.clear();
            h1::write_request_head(
                &mut conn.write,
                &parts.method,
                target,
                &parts.headers,
                framing,
            );
            match exchange(&mut conn, &parts.method, framing, &mut body).await {
                Ok(head) => break head,
                Err(Exchange::Unanswered(e)) if reused && may_resend => {
                    tracing::debug!(error = %e, "kept upstream connection had closed; sending again on a new one");
                    conn = Box::pin(self.0.upstream.connect()).await?;
                    reused = false;
                }
                Err(Exchange::Unanswered(e) | Exchange::Failed(e)) => return Err(e),
            }
        };
        let kind = match head.framing {
            ResponseFraming::Empty => BodyKind::Empty,
            ResponseFraming::Length(n) => BodyKind::Length(n),
            ResponseFraming::Chunked => BodyKind::Chunked(ChunkedDecoder::default()),
            ResponseFraming::UntilClose => BodyKind::UntilClose,
        };
        let mut resp = Response::new(UpstreamBody {
            conn: Some(conn),
            kind,
            reusable: head.reusable,
            stall: Stall::new(self.0.upstream.body_timeout),
            home: self.clone(),
        });
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        resp.body_mut().end_if_complete();
        Ok(resp)
    }

    /// Sends a WebSocket upgrade request on a connection of its own
    /// through hyper's client, which hands the connection over as the
    /// tunnel after a `101`.
    pub async fn send_upgrade<B>(
        &self,
        req: Request<B>,
    ) -> Result<Response<Incoming>, UpstreamError>
    where
        B: HttpBody + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let stream = self.0.upstream.connect_stream().await?;
        let (mut sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Upgrade)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Upgrade)
    }

    /// This client connection's kept connection if it is still open, else
    /// an idle one from the pool.
    fn take(&self) -> Option<Box<Conn>> {
        let now = Instant::now();
        let kept = self
            .0
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut c) = kept {
            if c.fresh(now) && c.conn.looks_open() {
                return Some(c.conn);
            }
        }
        self.0.upstream.take_idle(now)
    }

    fn keep(&self, mut conn: Box<Conn>) {
        conn.trim();
        let now = Instant::now();
        let mut slot = self.0.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some(c) if c.fresh(now) => {
                drop(slot);
                self.0.upstream.put_idle(conn, now);
            }
            _ => *slot = Some(Idle { conn, since: now }),
        }
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        let kept = self
            .slot
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(c) = kept {
            if c.fresh(Instant::now()) {
                self.upstream.put_idle(c.conn, c.since);
            }
        }
    }
}

/// How an exchange failed: before any answer (`Unanswered`: the
/// connection may have been closed by the upstream before it read the
/// request) or otherwise.
enum Exchange {
    Unanswered(UpstreamError),
    Failed(UpstreamError),
}

/// Writes the request (head already in `conn.write`) and its body, then
/// reads the response head.
async fn exchange<B>(
    conn: &mut Conn,
    method: &Method,
    framing: RequestFraming,
    body: &mut B,
) -> Result<h1::ResponseHead, Exchange>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let write = std::mem::take(&mut conn.write);
    let sent = conn.io.write_all(&write).await;
    conn.write = write;
    if let Err(e) = sent {
        return Err(Exchange::Unanswered(UpstreamError::Io(e)));
    }
    if framing != RequestFraming::Empty {
        match send_body(conn, method, framing, body).await {
            Ok(None) => {}
            // The upstream answered before the body was through (a 413):
            // that answer is the response, and the connection, with part
            // of a body in it, is not used again.
            Ok(Some(mut head)) => {
                head.reusable = false;
                return Ok(head);
            }
            Err(e) => {
                // It may also have answered and closed: the answer may
                // still be readable.
                if matches!(e, UpstreamError::Io(_)) {
                    if let Ok(mut head) = read_head(conn, method).await {
                        head.reusable = false;
                        return Ok(head);
                    }
                }
                return Err(Exchange::Failed(e));
            }
        }
    }
    read_head(conn, method).await.map_err(|e| match e {
        UpstreamError::Closed => Exchange::Unanswered(e),
        UpstreamError::Io(ref io)
            if conn.read.is_empty()
                && matches!(
                    io.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ) =>
        {
            Exchange::Unanswered(e)
        }
        e => Exchange::Failed(e),
    })
}

/// Streams the request body as `framing` says, reading from the upstream
/// meanwhile: a response head that arrives before the body is through
/// (the upstream refusing it early) ends the upload and is returned.
async fn send_body<B>(
    conn: &mut Conn,
    method: &Method,
    framing: RequestFraming,
    body: &mut B,
) -> Result<Option<h1::ResponseHead>, UpstreamError>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let Conn { io, read, write } = conn;
    let (mut rd, mut wr) = io.split();
    let mut early = EarlyAnswer { method, open: true };
    let chunked = framing == RequestFraming::Chunked;
    let mut left = match framing {
        RequestFraming::Length(n) => n,
        _ => u64::MAX,
    };
    loop {
        let frame = tokio::select! {
            biased;
            got = read_some(&mut rd, read), if early.open => {
                if let Some(head) = early.check(got, read)? {
                    return Ok(Some(head));
                }
                continue;
            }
            frame = body.frame() => frame,
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| UpstreamError::Body(e.into()))?;
        let Ok(data) = frame.into_data() else {
            // Trailers are not forwarded.
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if !chunked {
            left = left
                .checked_sub(data.len() as u64)
                .ok_or_else(|| UpstreamError::Body("request body longer than its length".into()))?;
        }
        write.clear();
        if chunked {
            h1::write_chunk_size(write, data.len());
        }
        let piece = write_piece(&mut wr, write, &data, chunked);
        tokio::pin!(piece);
        loop {
            tokio::select! {
                biased;
                sent = &mut piece => {
                    sent.map_err(UpstreamError::Io)?;
                    break;
                }
                got = read_some(&mut rd, read), if early.open => {
                    if let Some(head) = early.check(got, read)? {
                        return Ok(Some(head));
                    }
                }
            }
        }
    }
    if chunked {
        wr.write_all(b"0\r\n\r\n")
            .await
            .map_err(UpstreamError::Io)?;
    } else if left != 0 && left != u64::MAX {
        return Err(UpstreamError::Body(
            "request body shorter than its length".into(),
        ));
    }
    Ok(None)
}

/// Writes one piece of the body: `prefix` (a chunk-size line, or nothing),
/// the data, and for a chunk its CRLF. Small chunks go out in one write.
async fn write_piece(
    wr: &mut tokio::net::tcp::WriteHalf<'_>,
    prefix: &mut Vec<u8>,
    data: &Bytes,
    chunked: bool,
) -> io::Result<()> {
    if chunked && data.len() <= READ_CHUNK {
        prefix.extend_from_slice(data);
        prefix.extend_from_slice(b"\r\n");
        return wr.write_all(prefix).await;
    }
    if !prefix.is_empty() {
        wr.write_all(prefix).await?;
    }
    wr.write_all(data).await?;
    if chunked {
        wr.write_all(b"\r\n").await?;
    }
    Ok(())
}

async fn read_some(
    rd: &mut tokio::net::tcp::ReadHalf<'_>,
    read: &mut BytesMut,
) -> io::Result<usize> {
    make_room(read);
    rd.read_buf(read).await
}

/// Grows a read buffer that has little room left.
fn make_room(read: &mut BytesMut) {
    if read.capacity() - read.len() < READ_CHUNK / 4 {
        read.reserve(READ_CHUNK);
    }
}

/// Watches for a response during an upload.
struct EarlyAnswer<'a> {
    method: &'a Method,
    /// Reading still makes sense (the upstream has not ended its side).
    open: bool,
}

impl EarlyAnswer<'_> {
    fn check(
        &mut self,
        got: io::Result<usize>,
        read: &mut BytesMut,
    ) -> Result<Option<h1::ResponseHead>, UpstreamError> {
        match got {
            // The upstream ended its side without a word: the rest of the
            // body goes out (or fails) and reading the head says closed.
            Ok(0) => {
                self.open = false;
                Ok(None)
            }
            Ok(_) => h1::parse_response_head(read, self.method).map_err(UpstreamError::Protocol),
            Err(e) => Err(UpstreamError::Io(e)),
        }
    }
}

/// Reads until the response head is complete.
async fn read_head(conn: &mut Conn, method: &Method) -> Result<h1::ResponseHead, UpstreamError> {
    loop {
        if let Some(head) =
            h1::parse_response_head(&mut conn.read, method).map_err(UpstreamError::Protocol)?
        {
            return Ok(head);
        }
        let empty = conn.read.is_empty();
        match std::future::poll_fn(|cx| conn.poll_fill(cx)).await {
            Ok(0) if empty => return Err(UpstreamError::Closed),
            Ok(0) => {
                return Err(UpstreamError::Protocol(H1Error::Head(
                    "connection closed mid-head",
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(UpstreamError::Io(e)),
        }
    }
}

enum BodyKind {
    Empty,
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// A response body read straight from the upstream connection. At its end
/// the connection goes back to the client connection that sent the
/// request (if it may carry another); dropped before its end, the
/// connection is closed.
pub struct UpstreamBody {
    conn: Option<Box<Conn>>,
    kind: BodyKind,
    reusable: bool,
    home: Affinity,
    /// Bounds each wait for the upstream's next bytes; progress is every
    /// piece of body, so the time the client takes between pieces never
    /// counts.
    stall: Stall,
}

impl UpstreamBody {
    /// Ends a body that is already complete (none, or all of it read).
    fn end_if_complete(&mut self) {
        if matches!(self.kind, BodyKind::Empty | BodyKind::Length(0)) {
            self.finish();
        }
    }

    /// The next piece of the body, read from the connection as needed.
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.kind {
                BodyKind::Empty | BodyKind::Done => {
                    this.finish();
                    return Poll::Ready(None);
                }
                BodyKind::Length(left) => {
                    if !conn.read.is_empty() {
                        let n = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(conn.read.len());
                        let data = conn.read.split_to(n).freeze();
                        *left -= n as u64;
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                BodyKind::Chunked(decoder) => match decoder.decode(&mut conn.read) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => {
                        this.conn = None;
                        this.kind = BodyKind::Done;
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            e,
                        ))));
                    }
                },
                BodyKind::UntilClose => {
                    if !conn.read.is_empty() {
                        let data = conn.read.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            let filled = match conn.poll_fill(cx) {
                Poll::Ready(filled) => filled,
                Poll::Pending => {
                    ready!(this.stall.poll_waited(cx));
                    let limit = this.stall.limit();
                    tracing::warn!(
                        ?limit,
                        "the upstream sent nothing more of a response body in time; cutting it off"
                    );
                    this.conn = None;
                    this.kind = BodyKind::Done;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the upstream stopped sending the response body",
                    ))));
                }
            };
            match filled {
                Ok(0) => {
                    let until_close = matches!(this.kind, BodyKind::UntilClose);
                    this.conn = None;
                    this.kind = BodyKind::Done;
                    if until_close {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(broken(
                        "the upstream closed the connection before the end of the body",
                    ))));
                }
                // Bytes came: the next wait counts from now.
                Ok(_) => this.stall.progressed(),
                Err(e) => {
                    this.conn = None;
                    this.kind = BodyKind::Done;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    /// The body is through: the connection goes home or is closed.
    fn finish(&mut self) {
        self.kind = BodyKind::Done;
        if let Some(conn) = self.conn.take() {
            if self.reusable && conn.read.is_empty() {
                self.home.keep(conn);
            }
        }
    }
}

fn broken(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let polled = this.poll_body(cx);
        if polled.is_ready() {
            this.stall.progressed();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        matches!(
            self.kind,
            BodyKind::Empty | BodyKind::Done | BodyKind::Length(0)
        )
    }

    fn size_hint(&self) -> SizeHint {
        match self.kind {
            BodyKind::Empty | BodyKind::Done => SizeHint::with_exact(0),
            BodyKind::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
