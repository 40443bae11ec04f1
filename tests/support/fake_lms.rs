//! A fake LMS outcome service: it checks what Canvas, Moodle or Sakai check
//! — `Content-Type: application/xml` exactly, the OAuth 1.0a signature of
//! the `Authorization` header (with the URL's query parameters), the
//! `oauth_body_hash` of the exact bytes, fresh nonces — with its own
//! RFC 5849 code, independent of ltigate's signer, then parses the POX and
//! answers as programmed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// One programmed answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// POX success, HTTP 200.
    Success,
    /// POX failure with this HTTP status and description.
    Failure(u16, String),
    /// A bare HTTP status without POX.
    Status(u16),
    /// 429 with `Retry-After: <secs>`.
    TooMany(u64),
    /// Wait this long before answering success.
    Hang(Duration),
    /// This status and body verbatim (`application/xml`), e.g. XML with a
    /// DOCTYPE; recorded as not accepted.
    Raw(u16, String),
    /// Wait this long, then answer 503 without POX: an LMS that stalls past
    /// the delivery timeout. Recorded as not accepted.
    Stall(Duration),
    /// 200 and a body that never ends (64 KiB chunks for as long as the
    /// client reads). Recorded as not accepted.
    Endless,
}

/// A delivery the LMS accepted or refused.
#[derive(Debug, Clone)]
pub struct Received {
    pub sourced_id: String,
    pub score: Option<f64>,
    pub method: String,
    pub at: Instant,
    /// Whether this one was answered with success.
    pub accepted: bool,
}

#[derive(Default)]
struct State {
    answers: VecDeque<Answer>,
    received: Vec<Received>,
    rejected: Vec<String>,
    nonces: HashSet<String>,
    in_flight: HashMap<String, usize>,
    max_in_flight: HashMap<String, usize>,
    authorizations: Vec<String>,
}

pub struct FakeLms {
    pub addr: SocketAddr,
    key: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeLms {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn dec(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else if b[i] == b'+' {
            out.push(b' ');
            i += 1;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Verifies an outcome POST the way an LMS does. Returns the signature
/// method on success.
fn verify(
    url_base: &str,
    query: &str,
    auth: &str,
    body: &[u8],
    key: &str,
    secret: &str,
) -> Result<String, String> {
    let rest = auth.strip_prefix("OAuth ").ok_or("not OAuth")?;
    let mut oauth: Vec<(String, String)> = Vec::new();
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or("bad header")?;
        let v = v.trim_matches('"');
        if k == "realm" {
            continue;
        }
        if oauth.iter().any(|(n, _)| n == k) {
            return Err(format!("{k} twice"));
        }
        oauth.push((k.to_string(), dec(v).ok_or("bad encoding")?));
    }
    let get = |n: &str| oauth.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    if get("oauth_consumer_key").as_deref() != Some(key) {
        return Err("wrong key".into());
    }
    let method = get("oauth_signature_method").ok_or("no method")?;
    let body_hash = get("oauth_body_hash").ok_or("Did not find oauth_body_hash")?;
    let expected_hash = match method.as_str() {
        "HMAC-SHA1" => base64::engine::general_purpose::STANDARD.encode(Sha1::digest(body)),
        "HMAC-SHA256" => base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body)),
        _ => return Err("unknown method".into()),
    };
    if body_hash != expected_hash {
        return Err("body hash mismatch".into());
    }
    let signature = get("oauth_signature").ok_or("no signature")?;
    let mut params: Vec<(String, String)> = oauth
        .iter()
        .filter(|(k, _)| k != "oauth_signature")
        .map(|(k, v)| (enc(k), enc(v)))
        .collect();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.push((enc(&dec(k).ok_or("q")?), enc(&dec(v).ok_or("q")?)));
    }
    params.sort();
    let normalized = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let base = format!("POST&{}&{}", enc(url_base), enc(&normalized));
    let signing_key = format!("{}&", enc(secret));
    let computed = match method.as_str() {
        "HMAC-SHA1" => {
            let mut m = Hmac::<Sha1>::new_from_slice(signing_key.as_bytes()).unwrap();
            m.update(base.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
        }
        _ => {
            let mut m = Hmac::<Sha256>::new_from_slice(signing_key.as_bytes()).unwrap();
            m.update(base.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
        }
    };
    if computed != signature {
        return Err("signature mismatch".into());
    }
    Ok(method)
}

fn pox_answer(code: &str, desc: &str, msg_ref: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<imsx_POXEnvelopeResponse xmlns="http://www.imsglobal.org/services/ltiv1p1/xsd/imsoms_v1p0">
<imsx_POXHeader><imsx_POXResponseHeaderInfo><imsx_version>V1.0</imsx_version>
<imsx_messageIdentifier>lms-1</imsx_messageIdentifier><imsx_statusInfo>
<imsx_codeMajor>{code}</imsx_codeMajor><imsx_severity>status</imsx_severity>
<imsx_description>{desc}</imsx_description><imsx_messageRefIdentifier>{msg_ref}</imsx_messageRefIdentifier>
<imsx_operationRefIdentifier>replaceResult</imsx_operationRefIdentifier></imsx_statusInfo>
</imsx_POXResponseHeaderInfo></imsx_POXHeader><imsx_POXBody><replaceResultResponse/></imsx_POXBody>
</imsx_POXEnvelopeResponse>"#
    )
}

impl FakeLms {
    /// Starts the LMS for consumer `key` / `secret`.
    pub async fn start(key: &str, secret: &str) -> FakeLms {
        FakeLms::start_on("127.0.0.1:0".parse().unwrap(), key, secret).await
    }

    /// Starts the LMS on `addr` (e.g. the address of an LMS that was down).
    pub async fn start_on(addr: SocketAddr, key: &str, secret: &str) -> FakeLms {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let ctx = (state.clone(), key.to_string(), secret.to_string(), addr);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let ctx = ctx.clone();
                        async move { Ok::<_, Infallible>(handle(req, ctx).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeLms {
            addr,
            key: key.into(),
            state,
            task,
        }
    }

    /// The outcome service URL (with a query, which must be signed).
    pub fn url(&self) -> String {
        format!("http://{}/outcomes?tool=ltigate", self.addr)
    }

    /// Programs the next answers (after them: success).
    pub fn then(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.lock().unwrap().answers.extend(answers);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Accepted grades per sourcedId.
    pub fn accepted(&self) -> Vec<(String, f64)> {
        self.received()
            .into_iter()
            .filter(|r| r.accepted)
            .map(|r| (r.sourced_id, r.score.unwrap_or(-1.0)))
            .collect()
    }

    /// Requests refused for signature, hash or content type.
    pub fn rejected(&self) -> Vec<String> {
        self.state.lock().unwrap().rejected.clone()
    }

    /// The `Authorization` header of every request, in arrival order.
    pub fn authorizations(&self) -> Vec<String> {
        self.state.lock().unwrap().authorizations.clone()
    }

    /// The most deliveries of one sourcedId seen at the same time.
    pub fn max_concurrent(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .max_in_flight
            .values()
            .copied()
            .max()
            .unwrap_or(0)
    }

    /// Waits until `n` grades were accepted (bounded).
    pub async fn wait_accepted(&self, n: usize, within: Duration) -> Vec<(String, f64)> {
        let deadline = Instant::now() + within;
        loop {
            let a = self.accepted();
            if a.len() >= n || Instant::now() > deadline {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `n` requests arrived, whatever the answer; panics past
    /// `within`.
    pub async fn wait_received(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.received().len() < n {
            assert!(
                Instant::now() < deadline,
                "the LMS received fewer than {n} requests"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

type Ctx = (Arc<Mutex<State>>, String, String, SocketAddr);

type Body = BoxBody<Bytes, Infallible>;

/// 64 KiB chunks for as long as the receiver reads them.
fn endless() -> Body {
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let frames = futures_util::stream::repeat_with(move || {
        Ok::<_, Infallible>(http_body::Frame::data(chunk.clone()))
    });
    StreamBody::new(frames).boxed()
}

fn reply(status: u16, body: String, extra: Option<(&str, String)>) -> Response<Body> {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/xml");
    if let Some((k, v)) = extra {
        b = b.header(k, v);
    }
    b.body(Full::new(Bytes::from(body)).boxed()).unwrap()
}

async fn handle(req: Request<Incoming>, (state, key, secret, addr): Ctx) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let reject = |why: String, status: u16| {
        state.lock().unwrap().rejected.push(why.clone());
        reply(status, why, None)
    };
    if parts.headers.get("content-type").map(|v| v.as_bytes()) != Some(b"application/xml") {
        return reject("content type must be exactly application/xml".into(), 415);
    }
    let auth = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    state.lock().unwrap().authorizations.push(auth.clone());
    let url_base = format!("http://{addr}{}", parts.uri.path());
    let method = match verify(
        &url_base,
        parts.uri.query().unwrap_or(""),
        &auth,
        &body,
        &key,
        &secret,
    ) {
        Ok(m) => m,
        Err(why) => return reject(why, 401),
    };
    let nonce = auth
        .split(',')
        .find_map(|p| p.trim().strip_prefix("oauth_nonce=\""))
        .map(|n| n.trim_end_matches('"').to_string())
        .unwrap_or_default();
    if !state.lock().unwrap().nonces.insert(nonce) {
        return reject("nonce reused".into(), 401);
    }
    let pox = match ltigate::lti::outcomes::parse_request(&body) {
        Ok(p) => p,
        Err(e) => return reject(format!("bad POX: {e}"), 400),
    };
    let score = match pox.operation {
        ltigate::lti::outcomes::Operation::Replace { score } => Some(score),
        _ => None,
    };
    let sid = pox.sourced_id.clone();
    let answer = {
        let mut s = state.lock().unwrap();
        let n = s.in_flight.entry(sid.clone()).or_insert(0);
        *n += 1;
        let now_in = *n;
        let max = s.max_in_flight.entry(sid.clone()).or_insert(0);
        *max = (*max).max(now_in);
        s.answers.pop_front().unwrap_or(Answer::Success)
    };
    if let Answer::Hang(d) | Answer::Stall(d) = &answer {
        tokio::time::sleep(*d).await;
    }
    let accepted = matches!(answer, Answer::Success | Answer::Hang(_));
    {
        let mut s = state.lock().unwrap();
        if let Some(n) = s.in_flight.get_mut(&sid) {
            *n -= 1;
        }
        s.received.push(Received {
            sourced_id: sid,
            score,
            method,
            at: Instant::now(),
            accepted,
        });
    }
    match answer {
        Answer::Success | Answer::Hang(_) => {
            reply(200, pox_answer("success", "ok", &pox.message_id), None)
        }
        Answer::Failure(status, desc) => {
            reply(status, pox_answer("failure", &desc, &pox.message_id), None)
        }
        Answer::Status(status) => reply(status, "<html>down</html>".into(), None),
        Answer::TooMany(secs) => reply(429, String::new(), Some(("retry-after", secs.to_string()))),
        Answer::Raw(status, body) => reply(status, body, None),
        Answer::Stall(_) => reply(503, "<html>too late</html>".into(), None),
        Answer::Endless => Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/xml")
            .body(endless())
            .unwrap(),
    }
}
