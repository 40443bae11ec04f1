//! Upstream connections over real sockets: a client connection keeps its
//! upstream connection between requests, hands it on when it ends, stops
//! using it once it has been idle for a second, and no request is lost when
//! the upstream closes kept-alive connections on its own. A scripted
//! platform checks the HTTP/1.1 framing both ways, byte for byte.

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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
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

/// A platform listening on 127.0.0.1 that numbers the connections it
/// accepts (from 1) and serves each with its own task.
struct Listening {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listening {
    async fn start<F, Fut>(serve: F) -> Listening
    where
        F: Fn(tokio::net::TcpStream, usize) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = counter.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(serve(stream, conn));
            }
        });
        Listening {
            addr,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A platform that counts the connections it accepts. `/slow` answers
/// after 100 ms.
async fn platform(keep: Keep) -> Listening {
    Listening::start(move |stream, _| async move {
        match keep {
            Keep::Alive => serve_keep_alive(stream).await,
            Keep::CloseAfterOne => serve_one_and_close(stream).await,
        }
    })
    .await
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
    let mut buf = Vec::new();
    let Some(end) = read_until(&mut stream, &mut buf, b"\r\n\r\n").await else {
        return;
    };
    // Reads the body too (closing with unread bytes would reset the
    // connection and could take the answer with it).
    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
    let length: usize = field(&head, "content-length")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if !fill_to(&mut stream, &mut buf, end + 4 + length).await {
        return;
    }
    let _ = stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        .await;
    // Dropping the stream closes the connection.
}

/// ltigate in front of the platform at `platform`, the provisioning API on
/// the usual fake.
async fn gate_for(platform: SocketAddr, api: &Upstream) -> Gate {
    let dir = tempfile::tempdir().unwrap();
    let toml = proxykit::set_key(
        &base_config(&api.url(), dir.path()),
        "upstream",
        "url",
        &format!("\"http://{platform}\""),
    );
    Gate::start_with(&toml, dir).await
}

/// The platform (`keep`), the API fake, ltigate in front and a session of
/// `user` in course C-1.
async fn setup(keep: Keep, user: &str) -> (Upstream, Listening, Gate, String) {
    let api = Upstream::start(Some("upstream-token")).await;
    let platform = platform(keep).await;
    let gate = gate_for(platform.addr, &api).await;
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
async fn a_kept_connection_the_upstream_closed_is_not_used_even_for_a_post() {
    let (_api, platform, gate, cookie) = setup(Keep::CloseAfterOne, "u-8").await;
    let browser = client();
    for i in 0..20 {
        // A POST is never sent twice, so each must find that the previous
        // request's connection was closed (its end of stream is in by
        // now) and open a new one instead of failing with a 502.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let status = browser
            .post(gate.url("/courses/C-1/answer"))
            .headers(same_site(&cookie))
            .body("a=1")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, 200, "request {i}");
    }
    assert_eq!(platform.accepted(), 20);
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

/// What the scripted platform received: method, target, header block
/// (lower-cased) and body, per connection number.
#[derive(Debug, Clone)]
struct Seen {
    conn: usize,
    method: String,
    target: String,
    head: String,
    body: Vec<u8>,
}

/// A platform that answers from a script, byte for byte: `/r/{name}` gets
/// `answer(name)`; `/drop` is read and the connection closed without an
/// answer, unless it is the connection's first request.
struct Scripted {
    listening: Listening,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
}

fn answer(name: &str) -> &'static [u8] {
    match name {
        "chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n",
        "length" => b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
        "head" => b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
        "empty" => b"HTTP/1.1 204 No Content\r\n\r\n",
        "interim" => b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        "both" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 99\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "close" => b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
        "garbage" => b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        "two-lengths" => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok!",
        "bad-chunk" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n",
        "short" => b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok",
        _ => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
    }
}

impl Scripted {
    async fn start() -> Scripted {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let listening =
            Listening::start(move |stream, conn| serve_script(stream, conn, log.clone())).await;
        Scripted { listening, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads requests as an HTTP/1.1 server must (Content-Length or chunked
/// bodies) and answers from the script.
async fn serve_script(
    mut stream: tokio::net::TcpStream,
    conn: usize,
    log: Arc<std::sync::Mutex<Vec<Seen>>>,
) {
    let mut buf = Vec::new();
    let mut requests = 0;
    loop {
        let Some(end) = read_until(&mut stream, &mut buf, b"\r\n\r\n").await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        buf.drain(..end + 4);
        let mut line = head.lines().next().unwrap_or("").split(' ');
        let method = line.next().unwrap_or("").to_uppercase();
        let target = line.next().unwrap_or("").to_string();
        if target == "/early" {
            // Refuses the upload before reading it, and reads nothing
            // more for longer than the gate's upstream timeout.
            let _ = stream
                .write_all(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 9\r\nconnection: close\r\n\r\ntoo large")
                .await;
            log.lock().unwrap().push(Seen {
                conn,
                method,
                target,
                head,
                body: Vec::new(),
            });
            tokio::time::sleep(Duration::from_secs(6)).await;
            return;
        }
        let mut body = Vec::new();
        if field(&head, "transfer-encoding") == Some("chunked") {
            loop {
                let Some(end) = read_until(&mut stream, &mut buf, b"\r\n").await else {
                    return;
                };
                let size_line = String::from_utf8_lossy(&buf[..end]).to_string();
                buf.drain(..end + 2);
                let size = usize::from_str_radix(size_line.split(';').next().unwrap(), 16).unwrap();
                if !fill_to(&mut stream, &mut buf, size + 2).await {
                    return;
                }
                assert_eq!(&buf[size..size + 2], b"\r\n", "chunk data ends in CRLF");
                body.extend_from_slice(&buf[..size]);
                buf.drain(..size + 2);
                if size == 0 {
                    break;
                }
            }
        } else if let Some(len) = field(&head, "content-length") {
            let len: usize = len.parse().unwrap();
            if !fill_to(&mut stream, &mut buf, len).await {
                return;
            }
            body = buf.drain(..len).collect();
        }
        log.lock().unwrap().push(Seen {
            conn,
            method: method.clone(),
            target: target.clone(),
            head: head.clone(),
            body,
        });
        requests += 1;
        if target == "/drop" && requests > 1 {
            return;
        }
        if target == "/stall" {
            // Part of the body, then nothing for far longer than the
            // gate's upstream timeout, the connection kept open.
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok")
                .await;
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
        if target == "/trickle" {
            // One byte every 700 ms: 3.5 s in all, longer than the gate's
            // upstream timeout, but never silent for that long.
            if stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            for byte in b"hello" {
                tokio::time::sleep(Duration::from_millis(700)).await;
                if stream.write_all(&[*byte]).await.is_err() {
                    return;
                }
            }
            continue;
        }
        let reply = match target.strip_prefix("/r/") {
            Some(name) => answer(name),
            None => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".as_slice(),
        };
        if stream.write_all(reply).await.is_err() {
            return;
        }
        if target == "/r/short" {
            // Ends the connection mid-body.
            return;
        }
    }
}

/// Reads what is there into `buf`; false at the end of the stream.
async fn fill<R: AsyncRead + Unpin>(stream: &mut R, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Reads until `buf` holds at least `len` bytes; false if the stream ends
/// first.
async fn fill_to<R: AsyncRead + Unpin>(stream: &mut R, buf: &mut Vec<u8>, len: usize) -> bool {
    while buf.len() < len {
        if !fill(stream, buf).await {
            return false;
        }
    }
    true
}

/// Reads until `buf` holds `pat`: where it starts, or `None` if the stream
/// ends first.
async fn read_until<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut Vec<u8>,
    pat: &[u8],
) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(pat.len()).position(|w| w == pat) {
            return Some(i);
        }
        if !fill(stream, buf).await {
            return None;
        }
    }
}

/// What a browser sends with a request it makes from the platform's own
/// page: the session cookie, and a same-origin fetch (no CSRF refusal).
fn same_site(cookie: &str) -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("cookie", cookie.parse().unwrap());
    h.insert(
        "sec-fetch-site",
        reqwest::header::HeaderValue::from_static("same-origin"),
    );
    h
}

/// A field's value in a lower-cased request head.
fn field<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

async fn scripted_setup(user: &str) -> (Upstream, Scripted, Gate, String) {
    let api = Upstream::start(Some("upstream-token")).await;
    let platform = Scripted::start().await;
    let gate = gate_for(platform.listening.addr, &api).await;
    let cookie = session(&gate, &Launch::acme(user, "C-1"), None).await;
    (api, platform, gate, cookie)
}

#[tokio::test]
async fn responses_reach_the_client_as_the_upstream_framed_them() {
    let (_api, platform, gate, cookie) = scripted_setup("u-4").await;
    let browser = client();
    let fetch = |method: reqwest::Method, name: &str| {
        browser
            .request(method, gate.url(&format!("/r/{name}")))
            .header("cookie", &cookie)
            .send()
    };
    let r = fetch(reqwest::Method::GET, "chunked").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello, world");
    let r = fetch(reqwest::Method::GET, "length").await.unwrap();
    assert_eq!(r.headers()["content-length"], "5");
    assert_eq!(r.text().await.unwrap(), "hello");
    let r = fetch(reqwest::Method::HEAD, "head").await.unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["content-length"].to_str().unwrap()
        ),
        (200, "5")
    );
    let r = fetch(reqwest::Method::GET, "empty").await.unwrap();
    assert_eq!(r.status(), 204);
    // Interim responses are not passed on; the final one is.
    let r = fetch(reqwest::Method::GET, "interim").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("link").is_none());
    assert_eq!(r.text().await.unwrap(), "ok");
    // All of that on one upstream connection.
    assert_eq!(platform.listening.accepted(), 1);

    // Chunked and a length at once: the chunks count, the length is not
    // passed on, and the connection is not trusted again.
    let r = fetch(reqwest::Method::GET, "both").await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ok");
    let r = fetch(reqwest::Method::GET, "close").await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ok");
    assert_eq!(platform.listening.accepted(), 2);
    assert_eq!(
        fetch(reqwest::Method::GET, "length")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(platform.listening.accepted(), 3);
}

#[tokio::test]
async fn an_unreadable_upstream_answer_is_a_502_and_its_connection_is_dropped() {
    let (_api, platform, gate, cookie) = scripted_setup("u-5").await;
    let browser = client();
    for name in ["garbage", "two-lengths"] {
        let r = browser
            .get(gate.url(&format!("/r/{name}")))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502, "{name}");
    }
    // A body that breaks off or stops making sense mid-way cannot become
    // a 502 (the head is out): the client sees the response fail.
    for name in ["bad-chunk", "short"] {
        let r = browser
            .get(gate.url(&format!("/r/{name}")))
            .header("cookie", &cookie)
            .send()
            .await;
        let failed = match r {
            Err(_) => true,
            Ok(r) => r.bytes().await.is_err(),
        };
        assert!(failed, "{name}");
    }
    // No connection that carried one of them was used again.
    let conns: Vec<usize> = platform.seen().iter().map(|s| s.conn).collect();
    let mut unique = conns.clone();
    unique.dedup();
    assert_eq!(conns, unique, "{conns:?}");
}

#[tokio::test]
async fn request_bodies_reach_the_upstream_framed_by_ltigate() {
    let (_api, platform, gate, cookie) = scripted_setup("u-6").await;
    let browser = client();
    // A length: sent with it.
    let r = browser
        .post(gate.url("/form"))
        .headers(same_site(&cookie))
        .body("a=1&b=2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // No length (a stream): chunked.
    let frames: Vec<Result<hyper::body::Frame<Bytes>, std::io::Error>> = [
        Bytes::from_static(b"first "),
        Bytes::from(vec![b'x'; 20_000]),
        Bytes::from_static(b" last"),
    ]
    .into_iter()
    .map(|b| Ok(hyper::body::Frame::data(b)))
    .collect();
    let stream = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let r = browser
        .put(gate.url("/upload"))
        .headers(same_site(&cookie))
        .body(reqwest::Body::wrap(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // No body: a POST says so.
    let r = browser
        .post(gate.url("/empty"))
        .headers(same_site(&cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let seen = platform.seen();
    let form = seen.iter().find(|s| s.target == "/form").unwrap();
    assert!(form.head.contains("\r\ncontent-length: 7"), "{}", form.head);
    assert!(!form.head.contains("transfer-encoding"));
    assert_eq!(form.body, b"a=1&b=2");
    let upload = seen.iter().find(|s| s.target == "/upload").unwrap();
    assert_eq!(upload.method, "PUT");
    assert!(
        upload.head.contains("\r\ntransfer-encoding: chunked"),
        "{}",
        upload.head
    );
    assert!(!upload.head.contains("content-length"));
    assert_eq!(upload.body.len(), 6 + 20_000 + 5);
    assert!(upload.body.starts_with(b"first x") && upload.body.ends_with(b"x last"));
    let empty = seen.iter().find(|s| s.target == "/empty").unwrap();
    assert!(
        empty.head.contains("\r\ncontent-length: 0"),
        "{}",
        empty.head
    );
    // One connection carried all three.
    assert!(seen.iter().all(|s| s.conn == 1), "{seen:?}");
}

#[tokio::test]
async fn a_kept_connection_closed_unanswered_resends_a_get_but_never_a_post() {
    let (_api, platform, gate, cookie) = scripted_setup("u-7").await;
    let browser = client();
    // The first request on a connection is answered; a second `/drop` on
    // it is read and the connection closed without an answer.
    let get = || {
        browser
            .get(gate.url("/drop"))
            .header("cookie", &cookie)
            .send()
    };
    assert_eq!(get().await.unwrap().status(), 200);
    assert_eq!(get().await.unwrap().status(), 200);
    let seen = platform.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(
        (seen[1].conn, seen[2].conn),
        (1, 2),
        "resent on a new connection"
    );

    let post = browser
        .post(gate.url("/drop"))
        .headers(same_site(&cookie))
        .body("once")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 502);
    let posts = platform
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST")
        .count();
    assert_eq!(
        posts, 1,
        "a POST the upstream may have acted on is not sent again"
    );
}

#[tokio::test]
async fn an_upstream_refusing_an_upload_early_is_answered_without_waiting_for_the_body() {
    let (_api, platform, gate, cookie) = scripted_setup("u-9").await;
    // 64 MB announced and sent as fast as the sockets take it; the
    // platform answers 413 after the head and reads nothing more.
    let mut browser = tokio::net::TcpStream::connect(gate.public).await.unwrap();
    let length = 64 << 20;
    let head = format!(
        "POST /early HTTP/1.1\r\nhost: {}\r\ncookie: {cookie}\r\nsec-fetch-site: same-origin\r\ncontent-length: {length}\r\n\r\n",
        gate.public
    );
    browser.write_all(head.as_bytes()).await.unwrap();
    let (mut from_gate, mut to_gate) = browser.into_split();
    let upload = tokio::spawn(async move {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            if to_gate.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    read_until(&mut from_gate, &mut answer, b"\r\n\r\n").await;
    let answer = String::from_utf8_lossy(&answer);
    // Not a 504 after the upstream timeout (2 s without progress): the
    // platform's own answer.
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    upload.abort();
    assert_eq!(platform.seen().len(), 1);
}

#[tokio::test]
async fn a_response_body_is_cut_off_when_the_upstream_stops_sending_it_not_when_it_is_slow() {
    let (_api, platform, gate, cookie) = scripted_setup("u-9").await;
    let browser = client();
    // Slower in all than the upstream timeout (2 s), never silent for it.
    let r = browser
        .get(gate.url("/trickle"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "hello");

    // Silent mid-body: ltigate ends the response once the timeout has
    // passed without a byte, long before the upstream would close.
    let started = std::time::Instant::now();
    let r = browser
        .get(gate.url("/stall"))
        .header("cookie", &cookie)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let err = r
        .bytes()
        .await
        .expect_err("a body the upstream stopped sending");
    let waited = started.elapsed();
    assert!(
        !err.is_timeout(),
        "ltigate, not the client, ended it: {err}"
    );
    assert!(
        waited >= Duration::from_millis(1900),
        "cut off early: {waited:?}"
    );

    // The stalled connection is not used again; the trickling one was.
    let r = browser
        .get(gate.url("/r/length"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "hello");
    let conns: Vec<usize> = platform.seen().iter().map(|s| s.conn).collect();
    assert_eq!(conns.len(), 3, "{conns:?}");
    assert_eq!(conns[0], conns[1], "{conns:?}");
    assert_ne!(conns[1], conns[2], "{conns:?}");
}
