//! A fake upstream platform on loopback. It checks what a real platform's
//! API would (bearer token, JSON content type, well-formed JSON), records
//! every request, and can be told to fail or hang.
//!
//! - `PUT /api/users/{id}` → 201 `{"id": "up-<n>"}`
//! - `PUT /api/courses/{course}/subscriptions/{id}` → 201, or 404 when the
//!   course starts with `missing`
//! - anything else → 200 JSON echo of method, path, query and headers
//!   (what a platform page would see), or the special paths below:
//! - `/upload` → reads the body as it streams in, publishing the running
//!   byte count ([`Upstream::upload_received`]); 200 `{"received", "chunks"}`
//! - `/download?bytes=N[&pause_after=M]` → N bytes in 64 KiB chunks made on
//!   the fly; after M bytes it waits for [`Upstream::release_download`]
//! - `/ws` → WebSocket handshake, then echoes every frame (see [`ws`])
//! - `/hang` → never answers
//! - `/slow?ms=N` → 200 `{"slept_ms": N}`, N ms late
//! - `/set-cookie` → 200 with three `Set-Cookie` headers, one of them
//!   named like ltigate's cookie
//! - `/redirect?to=URL` → 302 to URL, `{upstream}` replaced by this
//!   fake's own origin
//! - `/html` → a small `text/html` page
//!
//! With a verifier ([`Upstream::verify_assertions`]) every recorded request
//! that carries an identity (`X-LTI-User` or `X-LTI-Assertion`) has its
//! `X-LTI-Assertion` checked by the README's Python recipe against the
//! gate's key set: the verdict is in [`Recorded::assertion`] and in the
//! echo's `assertion` field.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{mpsc, watch, Notify};

use super::assertion::Verifier;

type Body = BoxBody<Bytes, Infallible>;

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// With a verifier: the request's assertion, verified (its claims), or
    /// why not (no assertion, or the recipe's refusal).
    pub assertion: Option<Result<serde_json::Value, String>>,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// How the fake answers API calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Normal,
    /// Every API call answers 500.
    Fail500,
    /// Every request waits this long first.
    Slow(Duration),
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub records: Arc<Mutex<Vec<Recorded>>>,
    pub mode: Arc<Mutex<Mode>>,
    pub token: Option<String>,
    /// Bytes `/upload` has received so far (of the latest upload).
    pub upload_received: watch::Receiver<u64>,
    download_gate: Arc<Notify>,
    verifier: Arc<Mutex<Option<Arc<Verifier>>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct State {
    records: Arc<Mutex<Vec<Recorded>>>,
    mode: Arc<Mutex<Mode>>,
    token: Option<String>,
    upload_received: Arc<watch::Sender<u64>>,
    download_gate: Arc<Notify>,
    origin: String,
    verifier: Arc<Mutex<Option<Arc<Verifier>>>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Starts the fake; `token` is the bearer token the API requires.
    pub async fn start(token: Option<&str>) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let records = Arc::new(Mutex::new(Vec::new()));
        let mode = Arc::new(Mutex::new(Mode::Normal));
        let (upload_tx, upload_received) = watch::channel(0);
        let download_gate = Arc::new(Notify::new());
        let verifier = Arc::new(Mutex::new(None));
        let state = State {
            records: records.clone(),
            mode: mode.clone(),
            token: token.map(str::to_string),
            upload_received: Arc::new(upload_tx),
            download_gate: download_gate.clone(),
            origin: format!("http://{addr}"),
            verifier: verifier.clone(),
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(req, state).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            records,
            mode,
            token: token.map(str::to_string),
            upload_received,
            download_gate,
            verifier,
            task,
        }
    }

    /// From now on, verifies the assertion of every request with an
    /// identity with `verifier`.
    pub fn verify_assertions(&self, verifier: Arc<Verifier>) {
        *self.verifier.lock().unwrap() = Some(verifier);
    }

    /// Lets a paused `/download` go on.
    pub fn release_download(&self) {
        self.download_gate.notify_one();
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    pub fn records(&self) -> Vec<Recorded> {
        self.records.lock().unwrap().clone()
    }

    pub fn api_calls(&self) -> Vec<Recorded> {
        self.records()
            .into_iter()
            .filter(|r| r.path.starts_with("/api/"))
            .collect()
    }

    pub fn clear(&self) {
        self.records.lock().unwrap().clear();
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn reply(status: StatusCode, json: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(json.to_string()))
        .unwrap()
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|p| {
        let (n, v) = p.split_once('=')?;
        (n == name).then(|| ltigate::http::decode_path_segment(v).unwrap_or_default())
    })
}

/// The verdict on a request's assertion, when there is a verifier and the
/// request carries an identity.
async fn verdict(state: &State, headers: &HeaderMap) -> Option<Result<serde_json::Value, String>> {
    let verifier = state.verifier.lock().unwrap().clone()?;
    let token = headers.get("x-lti-assertion");
    if token.is_none() && !headers.contains_key("x-lti-user") {
        return None;
    }
    Some(match token.map(|t| t.to_str()) {
        Some(Ok(t)) => verifier.verify(t).await,
        Some(Err(_)) => Err("an assertion that is not text".into()),
        None => Err("no assertion".into()),
    })
}

async fn record(state: &State, parts: &http::request::Parts, body: Bytes) -> usize {
    let assertion = verdict(state, &parts.headers).await;
    let mut r = state.records.lock().unwrap();
    r.push(Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        headers: parts.headers.clone(),
        body,
        assertion,
    });
    r.len()
}

/// A body fed by a channel (responses here, request bodies in tests).
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// The special routes; the request back for everything else.
async fn special(
    req: Request<Incoming>,
    state: &State,
) -> Result<Response<Body>, Request<Incoming>> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    match path.as_str() {
        "/upload" => {
            let (parts, mut body) = req.into_parts();
            record(state, &parts, Bytes::new()).await;
            let (mut received, mut chunks) = (0u64, 0u64);
            state.upload_received.send_replace(0);
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(data) = frame.data_ref() {
                    received += data.len() as u64;
                    chunks += 1;
                    state.upload_received.send_replace(received);
                }
            }
            Ok(reply(
                StatusCode::OK,
                serde_json::json!({"received": received, "chunks": chunks}),
            ))
        }
        "/download" => {
            let (parts, _) = req.into_parts();
            record(state, &parts, Bytes::new()).await;
            let total: u64 = query_param(query.as_deref(), "bytes")
                .and_then(|b| b.parse().ok())
                .unwrap_or(0);
            let pause_after: Option<u64> =
                query_param(query.as_deref(), "pause_after").and_then(|b| b.parse().ok());
            let (tx, rx) = mpsc::channel(4);
            let gate = state.download_gate.clone();
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                let mut sent = 0u64;
                let mut paused = false;
                while sent < total {
                    if !paused && pause_after.is_some_and(|p| sent >= p) {
                        gate.notified().await;
                        paused = true;
                    }
                    let n = (total - sent).min(chunk.len() as u64) as usize;
                    if tx.send(chunk.slice(..n)).await.is_err() {
                        return;
                    }
                    sent += n as u64;
                }
            });
            Ok(Response::builder()
                .header("content-type", "application/octet-stream")
                .header("content-length", total.to_string())
                .body(ChannelBody(rx).boxed())
                .unwrap())
        }
        "/ws" => {
            let (parts, _) = req.into_parts();
            record(state, &parts, Bytes::new()).await;
            let mut req = Request::from_parts(parts, ());
            let key = req
                .headers()
                .get("sec-websocket-key")
                .map(|k| k.as_bytes().to_vec())
                .unwrap_or_default();
            let upgraded = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(io) = upgraded.await else { return };
                ws::echo(TokioIo::new(io)).await;
            });
            Ok(Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", ws::accept(&key))
                .body(full(""))
                .unwrap())
        }
        "/hang" => {
            let (parts, _) = req.into_parts();
            record(state, &parts, Bytes::new()).await;
            std::future::pending::<()>().await;
            unreachable!()
        }
        "/set-cookie" => {
            let (parts, _) = req.into_parts();
            record(state, &parts, Bytes::new()).await;
            Ok(Response::builder()
                .header("content-type", "text/plain")
                .header("set-cookie", "sid=abc; Path=/; SameSite=Lax; HttpOnly")
                .header("set-cookie", "pref=dark; Max-Age=60; Secure")
                .header(
                    "set-cookie",
                    "__Host-ltigate_session=planted; Path=/; Secure",
                )
                .body(full("cookies"))
                .unwrap())
        }
        "/redirect" => {
            let (parts, _) = req.into_parts();
            record(state, &parts, Bytes::new()).await;
            let to = query_param(query.as_deref(), "to")
                .unwrap_or_default()
                .replace("{upstream}", &state.origin);
            Ok(Response::builder()
                .status(StatusCode::FOUND)
                .header("location", to)
                .body(full(""))
                .unwrap())
        }
        "/html" => {
            let (parts, _) = req.into_parts();
            record(state, &parts, Bytes::new()).await;
            Ok(Response::builder()
                .header("content-type", "text/html; charset=utf-8")
                .body(full("<!doctype html><p>course page</p>"))
                .unwrap())
        }
        "/slow" => {
            let (parts, _) = req.into_parts();
            record(state, &parts, Bytes::new()).await;
            let ms: u64 = query_param(query.as_deref(), "ms")
                .and_then(|b| b.parse().ok())
                .unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(reply(StatusCode::OK, serde_json::json!({"slept_ms": ms})))
        }
        _ => Err(req),
    }
}

async fn handle(req: Request<Incoming>, state: State) -> Response<Body> {
    let mode_now = *state.mode.lock().unwrap();
    if let Mode::Slow(d) = mode_now {
        tokio::time::sleep(d).await;
    }
    let req = match special(req, &state).await {
        Ok(resp) => return resp,
        Err(req) => req,
    };
    let token = &state.token;
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let n = record(&state, &parts, body.clone()).await;

    if let Some(api) = path.strip_prefix("/api/") {
        if let Some(t) = &token {
            let auth = parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if auth != format!("Bearer {t}") {
                return reply(
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({"error": "token"}),
                );
            }
        }
        let ctype = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if parts.method != http::Method::PUT || !ctype.starts_with("application/json") {
            return reply(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "want a JSON PUT"}),
            );
        }
        if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
            return reply(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "bad JSON"}),
            );
        }
        if mode_now == Mode::Fail500 {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"error": "boom"}),
            );
        }
        let segs: Vec<&str> = api.split('/').collect();
        return match segs.as_slice() {
            ["users", _] => reply(
                StatusCode::CREATED,
                serde_json::json!({"id": format!("up-{n}")}),
            ),
            ["courses", course, "subscriptions", _] => {
                if course.starts_with("missing") {
                    reply(
                        StatusCode::NOT_FOUND,
                        serde_json::json!({"error": "no such course"}),
                    )
                } else {
                    reply(StatusCode::CREATED, serde_json::json!({}))
                }
            }
            _ => reply(StatusCode::NOT_FOUND, serde_json::json!({"error": "route"})),
        };
    }

    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    reply(
        StatusCode::OK,
        serde_json::json!({
            "method": parts.method.as_str(),
            "path": path,
            "query": parts.uri.query(),
            "headers": headers,
            "body_len": body.len(),
            "assertion": state.records.lock().unwrap().get(n - 1).and_then(|r| r.assertion.clone()).map(|v| match v {
                Ok(claims) => serde_json::json!({"ok": true, "claims": claims}),
                Err(e) => serde_json::json!({"ok": false, "error": e}),
            }),
        }),
    )
}

/// Minimal WebSocket (RFC 6455) framing for the echo route and for tests:
/// single-frame messages, payloads under 64 KiB.
pub mod ws {
    use base64::Engine as _;
    use sha1::{Digest, Sha1};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
    pub fn accept(key: &[u8]) -> String {
        let mut h = Sha1::new();
        h.update(key);
        h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        base64::engine::general_purpose::STANDARD.encode(h.finalize())
    }

    /// Reads one frame: (opcode, unmasked payload).
    pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(u8, Vec<u8>)> {
        let mut head = [0u8; 2];
        r.read_exact(&mut head).await?;
        let opcode = head[0] & 0x0f;
        let masked = head[1] & 0x80 != 0;
        let len = match head[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                r.read_exact(&mut l).await?;
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                r.read_exact(&mut l).await?;
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut mask = [0u8; 4];
        if masked {
            r.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        Ok((opcode, payload))
    }

    /// Writes one final frame, masked when `mask` is given (client side).
    pub async fn write_frame<W: AsyncWrite + Unpin>(
        w: &mut W,
        opcode: u8,
        payload: &[u8],
        mask: Option<[u8; 4]>,
    ) -> std::io::Result<()> {
        let mut out = vec![0x80 | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        if payload.len() < 126 {
            out.push(m | payload.len() as u8);
        } else {
            out.push(m | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        match mask {
            Some(k) => {
                out.extend_from_slice(&k);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        w.write_all(&out).await?;
        w.flush().await
    }

    /// Echoes frames until a close frame (echoed too) or EOF.
    pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) {
        while let Ok((opcode, payload)) = read_frame(&mut io).await {
            if write_frame(&mut io, opcode, &payload, None).await.is_err() || opcode == 8 {
                return;
            }
        }
    }
}
