//! A minimal, fast upstream for `benches/load.sh`: what a platform would be
//! if it did no work at all, so the measured cost is the proxy's.
//!
//! - `PUT /api/users/{id}` → 201 `{"id":"up-{id}"}`
//! - `PUT /api/courses/{course}/subscriptions/{id}` → 201 `{}`
//! - anything else → 200 with a fixed 64-byte `text/html` body
//!
//! ```text
//! cargo run --release --example bench_upstream -- 127.0.0.1:3000
//! ```
//!
//! One thread (a current-thread runtime): pin it with `taskset`.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;

/// The page body: 64 bytes.
const PAGE: &[u8; 64] = b"<!doctype html><title>ok</title><p>hello from the upstream</p>\n\n";

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let is_put = req.method() == Method::PUT;
    let path = req.uri().path().to_owned();
    if is_put && path.starts_with("/api/") {
        // Read the JSON body, as a real API would, before answering.
        let _ = req.into_body().collect().await;
        let body = match path.strip_prefix("/api/users/") {
            Some(id) => Bytes::from(format!("{{\"id\":\"up-{id}\"}}")),
            None => Bytes::from_static(b"{}"),
        };
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = StatusCode::CREATED;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(resp);
    }
    let mut resp = Response::new(Full::new(Bytes::from_static(PAGE)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Ok(resp)
}

fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into())
        .parse()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("bench_upstream listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handle))
                    .await;
            });
        }
    })
}
