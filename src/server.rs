//! Listener plumbing: accept loop, HTTP/1.1 + HTTP/2 connections with the
//! header-read timeout and header size limit, and graceful shutdown (stop
//! accepting, let in-flight requests finish within `shutdown_grace`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::gate::Body;

/// Per-listener connection settings.
#[derive(Debug, Clone, Copy)]
pub struct ConnSettings {
    /// Time a client has to send its request headers.
    pub header_read_timeout: Duration,
    /// Largest request header block; larger gets 431.
    pub max_header_bytes: usize,
    /// Time in-flight requests get on shutdown.
    pub shutdown_grace: Duration,
}

/// Serves `service` on `listener` until `shutdown` flips to true, then
/// drains for at most `shutdown_grace`.
pub async fn serve<S, F>(
    listener: TcpListener,
    service: S,
    conn: ConnSettings,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(conn.header_read_timeout)
        .max_buf_size(conn.max_header_bytes.max(8192))
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = std::sync::Arc::new(builder);
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
        let svc = service.clone();
        let builder = builder.clone();
        let graceful_watcher = graceful.watcher();
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            // hyper's header timeout starts once it knows the protocol;
            // until then (a silent client) this one applies.
            if !protocol_known(&stream, conn.header_read_timeout).await || *stopping.borrow() {
                return;
            }
            let hyper_svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let fut = svc(req, peer);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let conn_fut = builder.serve_connection_with_upgrades(TokioIo::new(stream), hyper_svc);
            if let Err(e) = graceful_watcher.watch(conn_fut).await {
                tracing::debug!(error = %e, "connection ended with an error");
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
