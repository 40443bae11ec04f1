//! Upstream connections over real sockets: a client connection keeps its
//! upstream connection between requests, hands it on when it ends, stops
//! using it once it has been idle for a second, and no request is lost when
//! the upstream closes kept-alive connections on its own.

mod proxykit;
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use proxykit::session;
use support::gate::{base_config, client, Gate};
use support::lms::Launch;
use support::upstream::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How the counting platform treats its connections.
#[derive(Clone, Copy, PartialEq)]
enum Keep {
    /// HTTP/1.1 keep-alive, as a normal server does.
    Alive,
    /// Answers one request, then closes the socket without announcing it
    /// (no `Connection: close`): what a server does whose keep-alive
    /// timeout has just run out.
    CloseAfterOne,
}

/// A platform that counts the connections it accepts. `/slow` answers
/// after 100 ms.
struct Platform {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Platform {
    async fn start(keep: Keep) -> Platform {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    match keep {
                        Keep::Alive => serve_keep_alive(stream).await,
                        Keep::CloseAfterOne => serve_one_and_close(stream).await,
                    }
                });
            }
        });
        Platform {
            addr,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn serve_keep_alive(stream: tokio::net::TcpStream) {
    let svc = hyper::service::service_fn(|req: http::Request<Incoming>| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

async fn serve_one_and_close(mut stream: tokio::net::TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let _ = stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        .await;
    // Dropping the stream closes the connection.
}

/// ltigate in front of `platform`, the provisioning API on the usual fake.
async fn gate_for(platform: &Platform, api: &Upstream) -> Gate {
    let dir = tempfile::tempdir().unwrap();
    let toml = proxykit::set_key(
        &base_config(&api.url(), dir.path()),
        "upstream",
        "url",
        &format!("\"http://{}\"", platform.addr),
    );
    Gate::start_with(&toml, dir).await
}

/// The platform (`keep`), the API fake, ltigate in front and a session of
/// `user` in course C-1.
async fn setup(keep: Keep, user: &str) -> (Upstream, Platform, Gate, String) {
    let api = Upstream::start(Some("upstream-token")).await;
    let platform = Platform::start(keep).await;
    let gate = gate_for(&platform, &api).await;
    let cookie = session(&gate, &Launch::acme(user, "C-1"), None).await;
    (api, platform, gate, cookie)
}

/// Eight concurrent `GET /slow` on one HTTP/2 client: versions and statuses.
async fn eight_slow_requests(
    h2: &reqwest::Client,
    gate: &Gate,
    cookie: &str,
) -> Vec<(reqwest::Version, u16)> {
    let requests = (0..8).map(|_| async move {
        let r = h2
            .get(gate.url("/slow"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        (r.version(), r.status().as_u16())
    });
    futures_util::future::join_all(requests).await
}

async fn get(c: &reqwest::Client, gate: &Gate, path: &str, cookie: &str) -> u16 {
    c.get(gate.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_kept_alive_client_connection_keeps_one_upstream_connection() {
    let (_api, platform, gate, cookie) = setup(Keep::Alive, "u-1").await;

    // One browser connection, twenty requests: one upstream connection.
    let browser = client();
    for _ in 0..20 {
        assert_eq!(get(&browser, &gate, "/courses/C-1", &cookie).await, 200);
    }
    assert_eq!(platform.accepted(), 1);

    // The browser goes; the next one gets its upstream connection.
    drop(browser);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let next = client();
    assert_eq!(get(&next, &gate, "/courses/C-1", &cookie).await, 200);
    assert_eq!(platform.accepted(), 1);

    // Idle for more than a second: not used again, a new one is opened.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(get(&next, &gate, "/courses/C-1", &cookie).await, 200);
    assert_eq!(platform.accepted(), 2);
}

#[tokio::test]
async fn an_upstream_closing_every_connection_loses_no_request() {
    let (_api, platform, gate, cookie) = setup(Keep::CloseAfterOne, "u-2").await;
    let browser = client();
    for i in 0..50 {
        let status = get(&browser, &gate, "/courses/C-1", &cookie).await;
        assert_eq!(status, 200, "request {i}");
    }
    assert_eq!(platform.accepted(), 50);
}

#[tokio::test]
async fn concurrent_http2_requests_of_one_client_get_their_own_upstream_connections() {
    let (_api, platform, gate, cookie) = setup(Keep::Alive, "u-3").await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let answers = eight_slow_requests(&h2, &gate, &cookie).await;
    assert!(
        answers
            .iter()
            .all(|a| *a == (reqwest::Version::HTTP_2, 200)),
        "{answers:?}"
    );
    // They overlapped (100 ms each), so each needed an HTTP/1.1 upstream
    // connection of its own.
    let opened = platform.accepted();
    assert_eq!(opened, 8);

    // Afterwards they are all kept: eight more need no new connection.
    let again = eight_slow_requests(&h2, &gate, &cookie).await;
    assert!(again.iter().all(|a| a.1 == 200), "{again:?}");
    assert_eq!(platform.accepted(), opened);
}
