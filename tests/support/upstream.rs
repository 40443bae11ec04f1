//! A fake upstream platform on loopback. It checks what a real platform's
//! API would (bearer token, JSON content type, well-formed JSON), records
//! every request, and can be told to fail or hang.
//!
//! - `PUT /api/users/{id}` → 201 `{"id": "up-<n>"}`
//! - `PUT /api/courses/{course}/subscriptions/{id}` → 201, or 404 when the
//!   course starts with `missing`
//! - anything else → 200 JSON echo of method, path, query and headers
//!   (what a platform page would see), or the special paths below.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
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
    task: tokio::task::JoinHandle<()>,
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
        let state = (records.clone(), mode.clone(), token.map(str::to_string));
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
            task,
        }
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

type State = (Arc<Mutex<Vec<Recorded>>>, Arc<Mutex<Mode>>, Option<String>);

fn reply(status: StatusCode, json: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json.to_string())))
        .unwrap()
}

async fn handle(req: Request<Incoming>, (records, mode, token): State) -> Response<Full<Bytes>> {
    let mode_now = *mode.lock().unwrap();
    if let Mode::Slow(d) = mode_now {
        tokio::time::sleep(d).await;
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let rec = Recorded {
        method: parts.method.to_string(),
        path: path.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    let n = {
        let mut r = records.lock().unwrap();
        r.push(rec);
        r.len()
    };

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
        }),
    )
}
