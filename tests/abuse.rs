//! Hostile clients, hostile input and a hostile LMS: slowloris
//! connections, clients that stop reading, oversized headers and bodies, a burst of 10,000 nonces,
//! malformed encodings, duplicated OAuth parameters, request smuggling,
//! open redirects, another deployment's cookie, an XML entity bomb from
//! the LMS, and secrets in debug logs.
//!
//! Covered elsewhere and not repeated here: forged identity and forwarding
//! headers (`tests/proxy.rs`, `forged_identity_and_forwarding_headers_never_reach_the_upstream`),
//! hand-sealed cookies under another key (`tests/session.rs`,
//! `cookies_that_do_not_open_a_session_get_a_401_counted_by_reason`),
//! `check-config` redaction (`tests/cli.rs`).

mod procs;
mod proxykit;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use proxykit::{
    echo, gate_with, launch, location, metric, read_head, session, session_cookie, COOKIE,
};
use support::gate::{client, Gate, PUBLIC_URL};
use support::lms::Launch;
use support::upstream::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The 10,000-launch burst takes both cores for a while: it runs alone,
/// and the tests with timing bounds wait for it (or it for them).
static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn shared_machine() -> tokio::sync::RwLockReadGuard<'static, ()> {
    MACHINE.read().await
}

async fn whole_machine() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    MACHINE.write().await
}

/// Writes `bytes` (a write error is ignored: ltigate may close early),
/// then reads until EOF, a read error or `limit`.
async fn exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    read_all(&mut stream, limit).await
}

/// Reads until EOF, a read error or `limit`.
async fn read_all(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

/// The status codes of the HTTP/1.1 responses in `wire`, in order: each
/// head, then its body skipped by `Content-Length` or chunked framing.
fn statuses(wire: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    let mut rest = wire;
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
        let Some(status) = head
            .strip_prefix("http/1.1 ")
            .and_then(|h| h.get(..3))
            .and_then(|s| s.parse().ok())
        else {
            break;
        };
        out.push(status);
        rest = &rest[end + 4..];
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        if header("transfer-encoding") == Some("chunked") {
            loop {
                let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                    return out;
                };
                let size =
                    usize::from_str_radix(&String::from_utf8_lossy(&rest[..eol]), 16).unwrap_or(0);
                rest = rest.get(eol + 2 + size + 2..).unwrap_or_default();
                if size == 0 {
                    break;
                }
            }
        } else {
            let len: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            rest = rest.get(len..).unwrap_or_default();
        }
    }
    out
}

async fn setup() -> (Upstream, Gate) {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = Gate::start(&up.url(), "").await;
    (up, gate)
}

// ---------------------------------------------------------------------------
// Slow clients

/// Two hundred connections that never finish their headers (half trickle
/// a header line every 200 ms, half send nothing) with
/// `max_connections = 4`: none of them takes a request slot, so a learner's
/// requests are answered at once all along; each slow connection is closed
/// once `header_read_timeout` (1 s) has passed since it opened, trickling
/// or not; an idle keep-alive connection is closed after the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_hold_no_worker() {
    let _machine = shared_machine().await;
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_with(
        &up.url(),
        &[
            ("server", "header_read_timeout", r#""1s""#),
            ("server", "max_connections", "4"),
        ],
    )
    .await;
    let cookie = session(&gate, &Launch::acme("s-1", "C-1"), None).await;
    up.clear();

    let mut slow = Vec::new();
    for i in 0..200 {
        let mut stream = TcpStream::connect(gate.public).await.unwrap();
        slow.push(tokio::spawn(async move {
            let opened = Instant::now();
            let trickle = i % 2 == 0;
            if trickle {
                let _ = stream
                    .write_all(b"GET /courses/C-1 HTTP/1.1\r\nHost: x\r\n")
                    .await;
            }
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while opened.elapsed() < Duration::from_secs(8) {
                tokio::select! {
                    r = stream.read(&mut buf) => match r {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    },
                    _ = tick.tick(), if trickle => {
                        if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                            break;
                        }
                    }
                }
            }
            (opened.elapsed(), got)
        }));
    }

    // Meanwhile a learner is served at once, request after request.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        echo(&gate, "/courses/C-1", Some(&cookie)).await;
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");

    for t in slow {
        let (lived, got) = t.await.unwrap();
        assert!(
            lived >= Duration::from_millis(900) && lived < Duration::from_millis(2500),
            "a slow connection lived {lived:?}"
        );
        assert!(
            got.is_empty() || statuses(&got) == [408],
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    // Only the learner's requests reached the upstream.
    assert_eq!(up.records().len(), 20);

    // A kept-alive connection that goes quiet after a request is closed
    // after header_read_timeout as well.
    let mut stream = TcpStream::connect(gate.public).await.unwrap();
    let req = format!("GET /courses/C-1 HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let (status, head) = read_head(&mut stream).await;
    assert_eq!(status, 200);
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.unwrap();
    let t = Instant::now();
    let rest = read_all(&mut stream, Duration::from_secs(5)).await;
    assert!(rest.is_empty() || statuses(&rest) == [408]);
    assert!(
        t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
}

/// HTTP/2 gets the same bound as HTTP/1.1: a connection with no request in
/// flight for `header_read_timeout` (1 s) is closed — one that sent only
/// the preface, one that finished its SETTINGS, one that is done with its
/// requests — while a request that takes longer than that (a slow upstream
/// answer) is not cut, and an upgraded WebSocket tunnel outlives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_like_http1_ones() {
    let _machine = shared_machine().await;
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_with(
        &up.url(),
        &[
            ("server", "header_read_timeout", r#""1s""#),
            ("server", "public_paths", r#"["/slow"]"#),
        ],
    )
    .await;
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
    for opening in [PREFACE.to_vec(), [PREFACE, &EMPTY_SETTINGS].concat()] {
        let mut stream = TcpStream::connect(gate.public).await.unwrap();
        stream.write_all(&opening).await.unwrap();
        let t = Instant::now();
        read_all(&mut stream, Duration::from_secs(5)).await;
        assert!(
            t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_millis(2500),
            "{:?}",
            t.elapsed()
        );
    }

    // A request slower than the timeout is answered on HTTP/2, and the
    // connection is closed once it has been idle for the timeout.
    let (mut h2, conn) = http2_client(gate.public).await;
    let req = http::Request::get(format!("http://{}/slow?ms=1500", gate.public))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let r = h2.send_request(req).await.unwrap();
    assert_eq!(r.status(), 200);
    let idle = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("closed by ltigate")
        .unwrap()
        .ok();
    assert!(
        idle.elapsed() >= Duration::from_millis(900)
            && idle.elapsed() < Duration::from_millis(2500),
        "{:?}",
        idle.elapsed()
    );

    // A WebSocket tunnel is no idle connection.
    let cookie = session(&gate, &Launch::acme("w-1", "C-1"), None).await;
    let mut ws = TcpStream::connect(gate.public).await.unwrap();
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Origin: {PUBLIC_URL}\r\nCookie: {cookie}\r\n\r\n"
    );
    ws.write_all(handshake.as_bytes()).await.unwrap();
    assert_eq!(read_head(&mut ws).await.0, 101);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    support::upstream::ws::write_frame(&mut ws, 1, b"still here", Some([1, 2, 3, 4]))
        .await
        .unwrap();
    let (opcode, payload) = tokio::time::timeout(
        Duration::from_secs(3),
        support::upstream::ws::read_frame(&mut ws),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((opcode, payload.as_slice()), (1, &b"still here"[..]));
}

/// A launch whose headers arrive but whose body does not: with
/// `max_connections = 2`, two such launches take both request slots, so
/// others get the fast 503 meanwhile — but only until
/// `header_read_timeout` (1 s), when both are refused (400,
/// `invalid_request`) and their slots come back. Without that bound two
/// connections would shut ltigate out for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_body_that_never_arrives_gives_its_slot_back() {
    let _machine = shared_machine().await;
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_with(
        &up.url(),
        &[
            ("server", "header_read_timeout", r#""1s""#),
            ("server", "max_connections", "2"),
        ],
    )
    .await;
    let head = "POST /lti/launch HTTP/1.1\r\nHost: x\r\n\
                Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nuser_id=";
    let stalled: Vec<_> = (0..2)
        .map(|_| {
            let addr = gate.public;
            tokio::spawn(async move {
                let t = Instant::now();
                let wire = exchange(addr, head.as_bytes(), Duration::from_secs(10)).await;
                (t.elapsed(), wire)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let r = client().get(gate.url("/courses/C-1")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );

    for s in stalled {
        let (lived, wire) = s.await.unwrap();
        assert_eq!(statuses(&wire), [400], "{}", String::from_utf8_lossy(&wire));
        assert!(
            lived >= Duration::from_millis(900) && lived < Duration::from_millis(2500),
            "{lived:?}"
        );
    }
    assert_eq!(
        metric(
            &gate,
            "ltigate_launches_total{consumer=\"unknown\",result=\"invalid_request\",version=\"1.1\"}"
        )
        .await,
        2.0
    );
    // Both slots are free again.
    let cookie = session(&gate, &Launch::acme("s-2", "C-1"), None).await;
    echo(&gate, "/courses/C-1", Some(&cookie)).await;
}

// ---------------------------------------------------------------------------
// Oversized requests

/// `server.max_header_bytes` (default 32 KiB) is the bound on HTTP/1.1 and
/// HTTP/2 alike: a 24 KiB header passes, a 40 KiB one gets 431 on a
/// proxied path and on the launch route, before any of ltigate's code
/// runs; so do more than 100 header fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431_on_http1_and_http2() {
    let _machine = shared_machine().await;
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = Gate::start(&up.url(), "").await;
    let cookie = session(&gate, &Launch::acme("h-1", "C-1"), None).await;
    up.clear();
    let pad = |n: usize| "a".repeat(n);

    let h1 = |path: &str, extra: String| {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n{extra}\r\nConnection: close\r\n\r\n")
    };
    let wire = exchange(
        gate.public,
        h1("/courses/C-1", format!("X-Pad: {}", pad(24 * 1024))).as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(statuses(&wire), [200]);
    let wire = exchange(
        gate.public,
        h1("/courses/C-1", format!("X-Pad: {}", pad(40 * 1024))).as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(statuses(&wire), [431]);
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let wire = exchange(
        gate.public,
        h1("/courses/C-1", many.trim_end().to_string()).as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(statuses(&wire), [431]);
    let launch_head = format!(
        "POST /lti/launch HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 0\r\nX-Pad: {}\r\n\r\n",
        pad(40 * 1024)
    );
    let wire = exchange(gate.public, launch_head.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(statuses(&wire), [431]);

    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let get = |n: usize| {
        h2.get(gate.url("/courses/C-1"))
            .header("cookie", &cookie)
            .header("x-pad", pad(n))
            .send()
    };
    let r = get(24 * 1024).await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let r = get(40 * 1024).await.unwrap();
    assert_eq!(r.status(), 431);

    // Only the two requests within the bound reached the upstream, and no
    // launch was counted.
    assert_eq!(up.records().len(), 2);
    assert!(up.api_calls().is_empty());
    let text = client()
        .get(gate.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("ltigate_launches_total{"))
            .filter(|l| !l.contains("result=\"accepted\""))
            .filter(|l| !l.ends_with(" 0"))
            .count(),
        0,
        "{text}"
    );
}

/// A signed launch padded to exactly `len` body bytes.
fn launch_of_length(user: &str, len: usize) -> (Launch, String) {
    let mut pad = len.saturating_sub(1000);
    for _ in 0..50 {
        // Each attempt has a fresh nonce, so a different signature whose
        // encoded length varies by a few bytes: step towards the target.
        let l = Launch::acme(user, "C-1").set("custom_padding", &"p".repeat(pad));
        let body = l.body();
        if body.len() == len {
            return (l, body);
        }
        pad = (pad + len).saturating_sub(body.len());
    }
    panic!("no launch of exactly {len} bytes");
}

/// Launch bodies: 64 KiB exactly is accepted; one byte more is 413, also
/// when chunked without a length; a declared `Content-Length` of 10 GB is
/// refused at once, without waiting for the body.
#[tokio::test]
async fn oversized_launch_bodies_get_413_at_the_exact_bound() {
    let _machine = shared_machine().await;
    let (up, gate) = setup().await;
    let (_, body) = launch_of_length("b-1", 64 * 1024);
    let r = client()
        .post(gate.url("/lti/launch"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let (_, body) = launch_of_length("b-2", 64 * 1024 + 1);
    let r = client()
        .post(gate.url("/lti/launch"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Chunked, no length: cut off once the 64 KiB are passed.
    let mut chunked = String::new();
    for piece in body.as_bytes().chunks(4096) {
        chunked.push_str(&format!(
            "{:x}\r\n{}\r\n",
            piece.len(),
            std::str::from_utf8(piece).unwrap()
        ));
    }
    chunked.push_str("0\r\n\r\n");
    let req = format!(
        "POST /lti/launch HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunked}"
    );
    let wire = exchange(gate.public, req.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(statuses(&wire), [413]);

    // 10 GB declared, nothing sent: answered before any body byte.
    let t = Instant::now();
    let req = "POST /lti/launch HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
               Content-Length: 10000000000\r\n\r\n";
    let mut stream = TcpStream::connect(gate.public).await.unwrap();
    stream.write_all(req.as_bytes()).await.unwrap();
    let (status, _) = tokio::time::timeout(Duration::from_secs(2), read_head(&mut stream))
        .await
        .expect("answered without the body");
    assert_eq!(status, 413);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );

    assert_eq!(
        metric(
            &gate,
            "ltigate_launches_total{consumer=\"unknown\",result=\"body_too_large\",version=\"1.1\"}"
        )
        .await,
        3.0
    );
    // Only the launch within the bound was provisioned.
    assert_eq!(up.api_calls().len(), 2);
}

// ---------------------------------------------------------------------------
// A burst of nonces

/// 10,000 launches with distinct nonces from one key, each sent twice at
/// once, 64 requests in flight, against the real binary. Consumer `Beta`
/// has two licences, so two launches are accepted and the rest pass the
/// nonce check only to be refused a licence (403): every nonce passes
/// exactly once, every second copy is a replay (401). The process's peak
/// memory grows by less than 64 MiB over the burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_nonces_from_one_key_pass_once_each_in_bounded_memory() {
    let _machine = whole_machine().await;
    const N: usize = 10_000;
    let up = Upstream::start(Some("upstream-token")).await;
    let dir = tempfile::tempdir().unwrap();
    let config = procs::write_config(
        dir.path(),
        &support::gate::base_config(&up.url(), dir.path()),
    );
    let gate = procs::Ltigate::spawn(
        &config,
        "warn,ltigate=info,ltigate::launch=warn,ltigate::session=warn,ltigate::proxy=warn",
    );

    let bodies: Vec<String> = (0..N)
        .map(|i| Launch::new("beta-key", "beta-new", &format!("n-{i}"), Some("C-1")).body())
        .collect();
    let bodies = std::sync::Arc::new(bodies);
    // Warm up the connection pool and the allocator before measuring.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let rss_before = gate.status_kib("VmRSS:");

    let started = Instant::now();
    let mut order: Vec<usize> = (0..2 * N).map(|k| k / 2).collect();
    // Each pair adjacent: the two copies of a nonce race each other.
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let order = std::sync::Arc::new(std::mem::take(&mut order));
    let url = gate.url("/lti/launch");
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let (http, bodies, order, next, url) = (
                http.clone(),
                bodies.clone(),
                order.clone(),
                next.clone(),
                url.clone(),
            );
            tokio::spawn(async move {
                let mut seen = Vec::new();
                loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&i) = order.get(k) else { return seen };
                    let r = http
                        .post(&url)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(bodies[i].clone())
                        .send()
                        .await
                        .unwrap();
                    seen.push((i, r.status().as_u16()));
                }
            })
        })
        .collect();
    let mut by_nonce = vec![Vec::new(); N];
    for w in workers {
        for (i, status) in w.await.unwrap() {
            by_nonce[i].push(status);
        }
    }
    let elapsed = started.elapsed();
    let peak = gate.status_kib("VmHWM:");
    let rss_after = gate.status_kib("VmRSS:");
    eprintln!(
        "{} launches in {elapsed:?}; RSS {rss_before} → {rss_after} KiB, peak {peak} KiB",
        2 * N
    );

    let mut accepted = 0;
    for (i, statuses) in by_nonce.iter_mut().enumerate() {
        statuses.sort();
        match statuses.as_slice() {
            [303, 401] => accepted += 1,
            [401, 403] => {}
            other => panic!("nonce {i}: {other:?}"),
        }
    }
    assert_eq!(accepted, 2);
    let metrics = client()
        .get(gate.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (result, n) in [
        ("accepted", 2),
        ("licence_exhausted", N - 2),
        ("replayed_nonce", N),
    ] {
        let series = format!(
            "ltigate_launches_total{{consumer=\"Beta\",result=\"{result}\",version=\"1.1\"}} {n}"
        );
        assert!(metrics.lines().any(|l| l == series), "{series}");
    }
    let grew_mib = peak.saturating_sub(rss_before) / 1024;
    assert!(grew_mib < 64, "the peak grew by {grew_mib} MiB");
}

// ---------------------------------------------------------------------------
// Malformed encodings and parameter pollution

/// POSTs `body` (raw bytes) to `path` as a form.
async fn post_raw(gate: &Gate, path: &str, body: Vec<u8>) -> reqwest::Response {
    client()
        .post(gate.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Invalid UTF-8 (raw, percent-encoded, overlong, surrogates, truncated)
/// and broken percent sequences, in the body, the query and the path
/// course, are each a 400 `invalid_request` — before the signature, so
/// none of them spends the nonce: the same launch sent intact afterwards
/// is accepted. The page never echoes the raw bytes.
#[tokio::test]
async fn invalid_utf8_and_percent_sequences_are_400_and_spend_no_nonce() {
    let _machine = shared_machine().await;
    let (up, gate) = setup().await;
    let l = Launch::acme("e-1", "C-1");
    let good = l.body();
    let with = |extra: &[u8]| {
        let mut b = good.clone().into_bytes();
        b.extend_from_slice(extra);
        b
    };
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("raw 0xFF", with(b"&custom_x=\xFF")),
        ("raw latin-1", with(b"&lis_person_name_given=Zo\xEB")),
        ("%FF", with(b"&custom_x=%FF")),
        ("%C3%28", with(b"&custom_x=%C3%28")),
        ("truncated %E2%82", with(b"&custom_x=%E2%82")),
        ("surrogate %ED%A0%80", with(b"&custom_x=%ED%A0%80")),
        ("overlong %C0%AF", with(b"&custom_x=%C0%AF")),
        ("lone %", with(b"&custom_x=%")),
        ("short %4", with(b"&custom_x=%4")),
        ("not hex %G1", with(b"&custom_x=%G1")),
        ("bad name", with(b"&%FF=1")),
        (
            "NUL in user_id",
            good.replace("user_id=e-1", "user_id=e%00-1").into_bytes(),
        ),
    ];
    let mut refused = 0;
    for (case, body) in bodies {
        let r = post_raw(&gate, "/lti/launch", body).await;
        assert_eq!(r.status(), 400, "{case}");
        let page = r.bytes().await.unwrap();
        assert!(
            std::str::from_utf8(&page).is_ok(),
            "{case}: the page is UTF-8"
        );
        assert!(!page.windows(2).any(|w| w == b"%F"), "{case}");
        refused += 1;
    }
    for path in [
        "/lti/launch?custom_x=%FF",
        "/lti/launch?custom_x=%",
        "/lti/launch/%FF",
        "/lti/launch/%C3%28",
        "/lti/launch/%ZZ",
    ] {
        let r = post_raw(&gate, path, good.clone().into_bytes()).await;
        assert_eq!(r.status(), 400, "{path}");
        refused += 1;
    }
    assert_eq!(invalid_requests(&gate).await, refused as f64);
    assert!(up.api_calls().is_empty());
    // The nonce is still unspent.
    let r = post_raw(&gate, "/lti/launch", good.into_bytes()).await;
    assert_eq!(r.status(), 303);
    let cookie = session_cookie(&r).unwrap();

    // A ticket that is not UTF-8 is an expired link.
    let r = client()
        .get(gate.url("/lti/continue?ticket=%FF%FE"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Proxied paths pass as sent, still encoded; raw bytes in the request
    // target are refused by the HTTP parser.
    up.clear();
    let e = echo(&gate, "/courses/%FF%C3%28%/x", Some(&cookie)).await;
    assert_eq!(e["path"], "/courses/%FF%C3%28%/x");
    let mut req =
        b"GET /courses/\xFF HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: ".to_vec();
    req.extend_from_slice(cookie.as_bytes());
    req.extend_from_slice(b"\r\n\r\n");
    let wire = exchange(gate.public, &req, Duration::from_secs(5)).await;
    assert_eq!(statuses(&wire), [400]);
    assert_eq!(up.records().len(), 1);

    // Bytes outside ASCII in other headers: an identity header is still
    // replaced, the session is still found, and the platform's other
    // cookies in the same header pass byte for byte — UTF-8 and Latin-1.
    for (other, lang) in [
        (&b"pref=Zo\xC3\xAB"[..], &b"lang=fr"[..]),
        (b"pref=Zo\xEB", b"l=\xE9"),
    ] {
        up.clear();
        let mut req = b"GET /courses/C-1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-LTI-User: \xC3\xA9vil\r\nCookie: ".to_vec();
        for (i, part) in [other, cookie.as_bytes(), lang].iter().enumerate() {
            if i > 0 {
                req.extend_from_slice(b"; ");
            }
            req.extend_from_slice(part);
        }
        req.extend_from_slice(b"\r\n\r\n");
        let wire = exchange(gate.public, &req, Duration::from_secs(5)).await;
        assert_eq!(statuses(&wire), [200], "{}", String::from_utf8_lossy(&wire));
        let rec = &up.records()[0];
        assert_eq!(rec.headers["x-lti-user"], "acme:e-1");
        assert_eq!(rec.headers.get_all("x-lti-user").iter().count(), 1);
        assert_eq!(
            rec.headers["cookie"].as_bytes(),
            [other, b"; ", lang].concat()
        );
    }
}

/// Every `oauth_*` parameter given twice — in the body, or in the query
/// and the body, same value or not — is a 400 naming it; so is any other
/// parameter given twice with different values. None spends the nonce.
#[tokio::test]
async fn duplicated_oauth_parameters_are_refused() {
    let _machine = shared_machine().await;
    let (up, gate) = setup().await;
    let l = Launch::acme("d-1", "C-1");
    let signed = l.signed_params();
    let value = |name: &str| {
        signed
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let body_with = |extra: &[(&str, &str)]| {
        let mut p = signed.clone();
        p.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        support::lms::encode(&p)
    };
    let nonce = value("oauth_nonce");
    let signature = value("oauth_signature");
    let cases: Vec<(&str, String, String)> = vec![
        (
            "oauth_nonce",
            "/lti/launch".into(),
            body_with(&[("oauth_nonce", &nonce)]),
        ),
        (
            "oauth_nonce",
            "/lti/launch".into(),
            body_with(&[("oauth_nonce", "other")]),
        ),
        (
            "oauth_consumer_key",
            "/lti/launch".into(),
            body_with(&[("oauth_consumer_key", "beta-key")]),
        ),
        (
            "oauth_signature",
            "/lti/launch".into(),
            body_with(&[("oauth_signature", "Zm9yZ2Vk")]),
        ),
        (
            "oauth_signature",
            "/lti/launch".into(),
            body_with(&[("oauth_signature", &signature)]),
        ),
        (
            "oauth_timestamp",
            "/lti/launch".into(),
            body_with(&[("oauth_timestamp", "1")]),
        ),
        (
            "oauth_version",
            "/lti/launch".into(),
            body_with(&[("oauth_version", "1.0"), ("oauth_version", "1.0")]),
        ),
        (
            "oauth_callback",
            "/lti/launch".into(),
            body_with(&[
                ("oauth_callback", "about:blank"),
                ("oauth_callback", "about:blank"),
            ]),
        ),
        (
            "oauth_signature_method",
            "/lti/launch?oauth_signature_method=HMAC-SHA256".into(),
            l.body(),
        ),
        (
            "oauth_consumer_key",
            "/lti/launch?oauth_consumer_key=acme-key".into(),
            l.body(),
        ),
    ];
    for (name, path, body) in &cases {
        let r = post_raw(&gate, path, body.clone().into_bytes()).await;
        assert_eq!(r.status(), 400, "{name} {path}");
        let text = r.text().await.unwrap();
        assert!(
            text.contains(&format!("{name} is given more than once")),
            "{text}"
        );
    }
    let polluted = [
        ("user_id", body_with(&[("user_id", "admin")])),
        ("custom_course", body_with(&[("custom_course", "C-2")])),
    ];
    for (name, body) in &polluted {
        let r = post_raw(&gate, "/lti/launch", body.clone().into_bytes()).await;
        assert_eq!(r.status(), 400, "{name}");
        let text = r.text().await.unwrap();
        assert!(
            text.contains(&format!("{name} is given twice with different values")),
            "{text}"
        );
    }
    assert!(up.api_calls().is_empty());
    assert_eq!(
        invalid_requests(&gate).await,
        (cases.len() + polluted.len()) as f64
    );
    let r = post_raw(&gate, "/lti/launch", l.body().into_bytes()).await;
    assert_eq!(r.status(), 303);
}

/// Launches refused as `invalid_request`, under the consumer whose key they
/// name (`Acme`) or under `unknown`.
async fn invalid_requests(gate: &Gate) -> f64 {
    let mut n = 0.0;
    for consumer in ["Acme", "unknown"] {
        n += metric(
            gate,
            &format!(
                "ltigate_launches_total{{consumer=\"{consumer}\",result=\"invalid_request\",version=\"1.1\"}}"
            ),
        )
        .await;
    }
    n
}

/// A 64 KiB body of one signed launch padded with `filler(i)` parameters.
fn padded_launch(filler: impl Fn(usize) -> String) -> String {
    let mut body = Launch::acme("q-1", "C-1").body();
    let mut i = 0;
    while body.len() < 64 * 1024 - 16 {
        body.push('&');
        body.push_str(&filler(i));
        i += 1;
    }
    body.truncate(64 * 1024);
    body
}

/// The fastest of three POSTs of `body`.
async fn fastest(gate: &Gate, body: &str) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let r = post_raw(gate, "/lti/launch", body.as_bytes().to_vec()).await;
        assert_eq!(r.status(), 401);
        best = best.min(t.elapsed());
    }
    best
}

/// An unsigned launch costs about the same whatever its parameter names:
/// 64 KiB of distinct `oauth_*` names (`oauth_0`, `oauth_1`, … about 6,300
/// of them) must not cost more than as many ordinary names before any
/// signature is checked (the duplicate check keeps a set of the names seen;
/// comparing each name with every later one was quadratic, 15 times the
/// cost).
#[tokio::test]
async fn distinct_oauth_names_cost_no_more_than_other_names() {
    let _machine = shared_machine().await;
    let (_up, gate) = setup().await;
    let plain = fastest(&gate, &padded_launch(|i| format!("x_{i:x}"))).await;
    let oauth = fastest(&gate, &padded_launch(|i| format!("oauth_{i:x}"))).await;
    assert!(
        oauth < plain * 3,
        "oauth_* names {oauth:?}, other names {plain:?}"
    );
}

// ---------------------------------------------------------------------------
// Request smuggling

/// Framing tricks over a raw connection, on a public path so that no
/// session is needed to reach the upstream. Each request the upstream sees
/// is one ltigate framed itself; nothing hidden in a body becomes a request
/// of its own; ambiguous framing is refused.
#[tokio::test]
async fn smuggling_attempts_never_reach_the_upstream_as_requests() {
    let _machine = shared_machine().await;
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_with(&up.url(), &[("server", "public_paths", r#"["/static/"]"#)]).await;
    let addr = gate.public;
    let send = move |wire: &'static str| exchange(addr, wire.as_bytes(), Duration::from_secs(5));

    // CL.TE: Transfer-Encoding wins, the request ends at the empty chunk,
    // and the connection is closed after the answer: the request hidden
    // behind it is never read.
    let wire = send(
        "POST /static/a HTTP/1.1\r\nHost: x\r\nContent-Length: 47\r\nTransfer-Encoding: chunked\r\n\r\n\
         0\r\n\r\nGET /static/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&wire), [200], "{}", String::from_utf8_lossy(&wire));
    // TE.CL: the chunked body is the body, whatever the length says.
    let wire = send(
        "POST /static/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n\
         8\r\nSMUGGLED\r\n0\r\n\r\nGET /static/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&wire), [200], "{}", String::from_utf8_lossy(&wire));
    let text = String::from_utf8_lossy(&wire);
    assert!(text.contains(r#""body_len":8"#), "{text}");
    let recs = up.records();
    assert_eq!(
        recs.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        ["/static/a", "/static/b"]
    );
    for r in &recs {
        // One framing only, of ltigate's choosing.
        assert!(
            !(r.headers.contains_key("content-length")
                && r.headers.contains_key("transfer-encoding")),
            "{:?}",
            r.headers
        );
    }

    // Ambiguous or invalid framing and header syntax: 400, nothing sent on.
    up.clear();
    for (case, wire) in [
        ("TE not ending in chunked", "POST /static/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
        ("unknown TE", "POST /static/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
        ("space before colon", "POST /static/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
        ("two lengths", "POST /static/c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("signed length", "POST /static/c HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello"),
        ("TE in HTTP/1.0", "POST /static/c HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("obs-fold", "GET /static/c HTTP/1.1\r\nHost: x\r\nX-Note: a\r\n X-LTI-User: admin\r\n\r\n"),
        ("two hosts", "GET /static/c HTTP/1.1\r\nHost: learn.example.test\r\nHost: evil.example\r\n\r\n"),
    ] {
        let wire = send(wire).await;
        assert_eq!(statuses(&wire), [400], "{case}: {}", String::from_utf8_lossy(&wire));
    }
    // CONNECT would make the upstream connection a tunnel: never sent on.
    let wire = send("CONNECT /static/c HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(statuses(&wire), [405], "{}", String::from_utf8_lossy(&wire));
    assert!(up.records().is_empty(), "{:?}", up.records());

    // A bare LF ends a header line: what follows is a header of its own,
    // and an identity header is removed like any other.
    let wire = send("GET /static/d HTTP/1.1\r\nHost: x\r\nX-Note: a\nX-LTI-User: admin\r\nConnection: close\r\n\r\n").await;
    assert_eq!(statuses(&wire), [200]);
    let rec = &up.records()[0];
    assert_eq!(rec.headers["x-note"], "a");
    assert!(!rec.headers.contains_key("x-lti-user"), "{:?}", rec.headers);
}

/// Identity headers on a kept-alive connection: the learner's request
/// carries the identity; the next request on the same connection, without
/// the cookie but with forged `X-LTI-*` / `X_LTI_*` headers, carries none;
/// `Connection` naming identity or forwarding headers cannot remove what
/// ltigate sets; CONNECT and asterisk-form targets go nowhere.
#[tokio::test]
async fn identity_is_per_request_on_a_kept_alive_connection() {
    let _machine = shared_machine().await;
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_with(&up.url(), &[("server", "public_paths", r#"["/static/"]"#)]).await;
    let cookie = session(&gate, &Launch::acme("k-1", "C-1"), None).await;
    up.clear();
    let wire = format!(
        "GET /static/one HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nConnection: keep-alive, X-LTI-User, X-Forwarded-For\r\n\r\n\
         GET /static/two HTTP/1.1\r\nHost: x\r\nX-LTI-User: acme:k-1\r\nX_LTI_Roles: Administrator\r\n\
         x-lti-course-roles: C-1=Administrator\r\nX-Lti_Consumer: Acme\r\n\r\n\
         GET /courses/C-1 HTTP/1.1\r\nHost: x\r\nX-LTI-User: acme:k-1\r\nConnection: close\r\n\r\n"
    );
    let wire = exchange(gate.public, wire.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(
        statuses(&wire),
        [200, 200, 401],
        "{}",
        String::from_utf8_lossy(&wire)
    );
    let recs = up.records();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].headers["x-lti-user"], "acme:k-1");
    assert_eq!(recs[0].headers["x-forwarded-for"], "127.0.0.1");
    let identity: Vec<_> = recs[1]
        .headers
        .keys()
        .filter(|k| k.as_str().replace('_', "-").starts_with("x-lti-"))
        .collect();
    assert!(identity.is_empty(), "{identity:?}");

    up.clear();
    // CONNECT is refused as a method, a target that is no path as a target.
    for (target, status) in [("CONNECT evil.example:443", 405), ("OPTIONS *", 400)] {
        let wire = format!("{target} HTTP/1.1\r\nHost: evil.example:443\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n");
        let wire = exchange(gate.public, wire.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(
            statuses(&wire),
            [status],
            "{target}: {}",
            String::from_utf8_lossy(&wire)
        );
    }
    // An absolute-form target naming another host still goes to the
    // upstream, and only its path is used.
    let wire = format!("GET http://evil.example/courses/C-1?x=1 HTTP/1.1\r\nHost: evil.example\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n");
    let wire = exchange(gate.public, wire.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(statuses(&wire), [200]);
    let recs = up.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].path, "/courses/C-1");
}

// ---------------------------------------------------------------------------
// Open redirects

/// `launch_presentation_return_url` is followed only when the launch's
/// signature verified and the URL is an absolute http(s) URL. A refused
/// launch (here: a replay, a stale timestamp, an unknown key) otherwise
/// gets the error page and no `Location`; an accepted launch always goes
/// to `/lti/continue`.
#[tokio::test]
async fn the_return_url_is_no_open_redirect() {
    let _machine = shared_machine().await;
    let (_up, gate) = setup().await;
    let with_return = |user: &str, url: &str| {
        Launch::acme(user, "C-1").set("launch_presentation_return_url", url)
    };
    for (i, url) in [
        "javascript:alert(document.cookie)",
        "//evil.example/x",
        "/\\evil.example/x",
        "https:/\\evil.example/x",
        "/relative/path",
        "data:text/html,<script>alert(1)</script>",
        "evil.example",
        "https://evil.example/\r\nSet-Cookie: a=b",
        "https://evil.example/\tx",
    ]
    .into_iter()
    .enumerate()
    {
        let l = with_return(&format!("r-{i}"), url);
        let r = launch(&gate, &l, None).await;
        assert_eq!(r.status(), 303, "{url}");
        assert!(location(&r).starts_with("/lti/continue?ticket="), "{url}");
        // Replayed: refused, and the URL is not one to follow.
        let r = launch(&gate, &l, None).await;
        assert_eq!(r.status(), 401, "{url}");
        assert_eq!(location(&r), "", "{url}");
    }

    // An absolute https URL from a verified launch is followed, with the
    // reason appended — an uppercase scheme too.
    let l = with_return("r-ok", "HTTPS://lms.example.org/ret");
    assert_eq!(launch(&gate, &l, None).await.status(), 303);
    let r = launch(&gate, &l, None).await;
    assert_eq!(r.status(), 303);
    assert!(
        location(&r).starts_with("HTTPS://lms.example.org/ret?lti_errormsg="),
        "{}",
        location(&r)
    );

    // Refused before the signature decides: never followed.
    let mut stale = with_return("r-stale", "https://evil.example/");
    stale.timestamp -= 3600;
    let r = launch(&gate, &stale, None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(location(&r), "");
    let unknown = Launch::new("who-key", "x", "r-u", Some("C-1"))
        .set("launch_presentation_return_url", "https://evil.example/");
    let r = launch(&gate, &unknown, None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(location(&r), "");
}

/// A stand-in platform that answers every request with `302` to the
/// (percent-decoded) `to` query parameter.
async fn redirector() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let to = req
                            .uri()
                            .query()
                            .and_then(|q| q.strip_prefix("to="))
                            .and_then(|v| ltigate::http::decode_path_segment(v).ok())
                            .unwrap_or_default();
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(302)
                                .header("location", to)
                                .body(http_body_util::Empty::<bytes::Bytes>::new())
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

/// Upstream redirects are moved to the public origin, never to another
/// one. With an upstream path prefix (`upstream.url = http://…/app`) a
/// redirect to `/app//evil.example/x` is a path on the platform; it must
/// not become the protocol-relative `//evil.example/x`, which a browser
/// would follow to another site (nor `/\evil.example`, which browsers read
/// the same way).
#[tokio::test]
async fn upstream_redirects_never_leave_the_public_origin() {
    let _machine = shared_machine().await;
    let up = Upstream::start(Some("upstream-token")).await;
    let (platform, _task) = redirector().await;
    let gate = gate_with(
        &up.url(),
        &[("upstream", "url", &format!("\"http://{platform}/app\""))],
    )
    .await;
    let cookie = session(&gate, &Launch::acme("o-1", "C-1"), None).await;
    let internal = format!("http://{platform}");
    for (to, expected) in [
        ("/app/courses/C-1".to_string(), "/courses/C-1".to_string()),
        (
            "/app//evil.example/x".into(),
            format!("{PUBLIC_URL}//evil.example/x"),
        ),
        (
            "/app/\\evil.example/x".into(),
            format!("{PUBLIC_URL}/\\evil.example/x"),
        ),
        (
            format!("{internal}/app//evil.example/x"),
            format!("{PUBLIC_URL}//evil.example/x"),
        ),
        (format!("{internal}/app/x"), format!("{PUBLIC_URL}/x")),
        // Not the platform's: passed on as they are.
        (
            "https://elsewhere.example/x".into(),
            "https://elsewhere.example/x".into(),
        ),
        (
            "//elsewhere.example/x".into(),
            "//elsewhere.example/x".into(),
        ),
    ] {
        let r = client()
            .get(gate.url(&format!(
                "/go?to={}",
                ltigate::lti::encode::percent_encode(to.as_bytes())
            )))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "{to}");
        assert_eq!(location(&r), expected, "{to}");
    }
}

// ---------------------------------------------------------------------------
// Another deployment's cookie

/// Two deployments with the same consumers and cookie name but different
/// session keys: A's genuine cookie opens nothing at B — no proxied
/// request, no "double-click" pass for a replayed launch of the same
/// learner and course, no ticket shortcut — and never reaches B's
/// upstream.
#[tokio::test]
async fn a_cookie_from_another_deployment_opens_nothing() {
    let _machine = shared_machine().await;
    let up_a = Upstream::start(Some("upstream-token")).await;
    let up_b = Upstream::start(Some("upstream-token")).await;
    let a = Gate::start(&up_a.url(), "").await;
    let b = gate_with(
        &up_b.url(),
        &[(
            "session",
            "secret",
            r#""another-deployment-0123456789abcdef""#,
        )],
    )
    .await;
    let foreign = session(&a, &Launch::acme("x-1", "C-1"), None).await;
    let foreign_value = foreign.split_once('=').unwrap().1.to_string();

    let r = client()
        .get(b.url("/courses/C-1"))
        .header("cookie", &foreign)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        metric(&b, "ltigate_session_rejections_total{reason=\"invalid\"}").await,
        1.0
    );

    // The same learner launches at B; the launch is then replayed with
    // A's cookie: a replay, not a double-click of an open session.
    let l = Launch::acme("x-1", "C-1");
    let first = launch(&b, &l, None).await;
    assert_eq!(first.status(), 303);
    let own = session_cookie(&first).unwrap();
    let r = launch(&b, &l, Some(&foreign)).await;
    assert_eq!(r.status(), 401);
    assert_eq!(location(&r), "");
    // With B's own cookie the double-click goes to the course.
    let r = launch(&b, &l, Some(&own)).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/courses/C-1");

    // A ticket of B with A's cookie in a frame: the cookie does not count
    // as B's, so the new-window page, not the course.
    let fresh = launch(&b, &Launch::acme("x-1", "C-1"), None).await;
    let ticket_url = location(&fresh);
    let r = client()
        .get(b.url(&ticket_url))
        .header("cookie", &foreign)
        .header("sec-fetch-dest", "iframe")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ltigate-fallback"], "new-window");

    for rec in up_b.records() {
        for v in rec.headers.values() {
            let v = String::from_utf8_lossy(v.as_bytes());
            assert!(!v.contains(&foreign_value), "{rec:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// A hostile LMS answer

const POX_NS: &str = "http://www.imsglobal.org/services/ltiv1p1/xsd/imsoms_v1p0";

/// A POX answer whose `imsx_codeMajor` is `code_major` (raw XML), after
/// the given DOCTYPE.
fn pox_with_doctype(doctype: &str, code_major: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n{doctype}\n<imsx_POXEnvelopeResponse xmlns=\"{POX_NS}\"><imsx_POXHeader>\
         <imsx_POXResponseHeaderInfo><imsx_version>V1.0</imsx_version><imsx_messageIdentifier>1</imsx_messageIdentifier>\
         <imsx_statusInfo><imsx_codeMajor>{code_major}</imsx_codeMajor><imsx_severity>status</imsx_severity>\
         <imsx_description>&desc;</imsx_description></imsx_statusInfo></imsx_POXResponseHeaderInfo></imsx_POXHeader>\
         <imsx_POXBody><replaceResultResponse/></imsx_POXBody></imsx_POXEnvelopeResponse>"
    )
}

/// The outbox job of `learner`, once it is a dead letter (bounded wait).
async fn dead_letter(gate: &Gate, learner: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = gate.admin_json("/outbox").await;
        let job = list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["learner"] == learner)
            .cloned();
        if let Some(j) = job.filter(|j| j["state"] == "dead") {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "no dead letter for {learner}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The LMS answers with XML carrying a DOCTYPE: an entity that would read
/// `success`, a billion-laughs bomb, an external entity pointing at a
/// listener; and with a body that never ends. None is expanded, fetched or
/// read to the end: each attempt ends at once as "no POX answer" and the
/// job becomes a dead letter after `outcomes.max_attempts` (2) — the
/// `success` entity did not deliver the grade, the listener saw no
/// connection, and the process's peak memory grew by less than 32 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_entities_in_an_lms_answer_are_never_expanded() {
    let _machine = shared_machine().await;
    use support::fake_lms::{Answer, FakeLms};
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_with(&up.url(), &[("outcomes", "max_attempts", "2")]).await;
    let lms = FakeLms::start("acme-key", "acme-secret").await;
    let fetched = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let xxe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let xxe_addr = xxe.local_addr().unwrap();
    {
        let fetched = fetched.clone();
        tokio::spawn(async move {
            while xxe.accept().await.is_ok() {
                fetched.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    let laughs: String = (1..=9)
        .map(|i| {
            let prev = if i == 1 {
                "lol".to_string()
            } else {
                format!("lol{}", i - 1)
            };
            format!("<!ENTITY lol{i} \"{}\">", format!("&{prev};").repeat(10))
        })
        .collect();
    let cases: Vec<(&str, Answer)> = vec![
        (
            "entity-success",
            Answer::Raw(
                200,
                pox_with_doctype(
                    "<!DOCTYPE imsx_POXEnvelopeResponse [<!ENTITY ok \"success\"><!ENTITY desc \"fine\">]>",
                    "&ok;",
                ),
            ),
        ),
        (
            "billion-laughs",
            Answer::Raw(
                200,
                pox_with_doctype(
                    &format!("<!DOCTYPE lolz [<!ENTITY lol \"lol\">{laughs}<!ENTITY desc \"&lol9;\">]>"),
                    "&lol9;",
                ),
            ),
        ),
        (
            "external-entity",
            Answer::Raw(
                200,
                pox_with_doctype(
                    &format!("<!DOCTYPE x [<!ENTITY ok SYSTEM \"http://{xxe_addr}/xxe\"><!ENTITY desc SYSTEM \"file:///etc/hostname\">]>"),
                    "&ok;",
                ),
            ),
        ),
        ("endless", Answer::Endless),
    ];
    let peak_before = procs::status_kib(std::process::id(), "VmHWM:");
    for (i, (case, answer)) in cases.into_iter().enumerate() {
        let learner = format!("x-{i}");
        let l = Launch::acme(&learner, "C-1")
            .set("lis_outcome_service_url", &lms.url())
            .set("lis_result_sourcedid", &format!("sid-{case}"));
        assert_eq!(launch(&gate, &l, None).await.status(), 303);
        lms.then([answer.clone(), answer]);
        let body =
            serde_json::json!({"event_id": format!("e-{case}"), "user": format!("acme:{learner}"),
            "course": "C-1", "activity": "final-assessment", "score": 0.9})
            .to_string();
        let t = Instant::now();
        let r = client()
            .post(gate.admin_url("/webhooks/completion"))
            .header("content-type", "application/json")
            .header(
                "x-ltigate-signature",
                ltigate::outcomes::sign_webhook(
                    body.as_bytes(),
                    &ltigate::secret::Secret::new(support::gate::WEBHOOK_SECRET),
                    support::lms::now(),
                ),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{case}");
        let job = dead_letter(&gate, &format!("acme:{learner}")).await;
        assert_eq!(
            job["last_error"], "gave up after 2 attempts: HTTP 200 without a POX answer",
            "{case}"
        );
        assert_eq!(job["attempts"], 2, "{case}");
        // Two attempts and one retry delay (200–400 ms), nothing more.
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{case}: {:?}",
            t.elapsed()
        );
    }
    assert!(lms.accepted().is_empty());
    assert_eq!(lms.received().len(), 8);
    assert!(lms.rejected().is_empty(), "{:?}", lms.rejected());
    assert_eq!(fetched.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(
        metric(
            &gate,
            "ltigate_outcomes_total{kind=\"basic\",result=\"delivered\"}"
        )
        .await,
        0.0
    );
    let grew = procs::status_kib(std::process::id(), "VmHWM:").saturating_sub(peak_before) / 1024;
    assert!(grew < 32, "peak memory grew by {grew} MiB");
}

// ---------------------------------------------------------------------------
// Secrets in logs

/// Every string value of a JSON log line, unescaped (a secret with quotes
/// or backslashes would be escaped in the raw line).
fn json_strings(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| json_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| json_strings(x, out)),
        _ => {}
    }
}

/// The real binary at `LTIGATE_LOG=debug` (every crate: hyper, reqwest,
/// redis…) on Redis with a password, through accepted, refused and
/// replayed launches, continues, proxied requests with the learner's and
/// the browser's credentials, a webhook with a bad signature and a good
/// one, and a grade delivery: its whole stderr holds none of the
/// configured secrets (inline, from a file, `base64:`, from the
/// environment, previous session keys, the Redis password), the session
/// cookie, a launch ticket, the `Authorization` headers (browser and
/// LMS-bound OAuth, with their signatures) or the webhook signature; nor
/// does `check-config` print any secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs_at_debug() {
    let _machine = shared_machine().await;
    use support::fake_lms::FakeLms;
    const REDIS_PASSWORD: &str = "redis-pw-6c1d9e0f";
    let redis = support::redis::RedisServer::start_with_args(&[
        "--user",
        "ltigate",
        "on",
        &format!(">{REDIS_PASSWORD}"),
        "~*",
        "&*",
        "+@all",
    ]);
    const API_TOKEN: &str = "api-token-from-env-81f2";
    let up = Upstream::start(Some(API_TOKEN)).await;
    let lms = FakeLms::start("acme-key", "acme-secret-new-5d7a").await;
    let dir = tempfile::tempdir().unwrap();
    let beta_file = dir.path().join("beta-secret");
    // `base64:` + "beta-secret-from-file-93e0"
    std::fs::write(&beta_file, "base64:YmV0YS1zZWNyZXQtZnJvbS1maWxlLTkzZTA=\n").unwrap();
    let secrets = [
        "session-secret-0123456789abcdef-4b2c",
        "previous-session-secret-0123456789-77aa",
        "webhook-secret-2b9e4d",
        "acme-secret-new-5d7a",
        "acme-secret-old-0c3f",
        "beta-secret-from-file-93e0",
        "YmV0YS1zZWNyZXQtZnJvbS1maWxlLTkzZTA",
        API_TOKEN,
        REDIS_PASSWORD,
    ];
    let port = redis.port();
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
public_url = "{PUBLIC_URL}"
shutdown_grace = "5s"

[upstream]
url = "{up}"
api_url = "{up}/api"
api_timeout = "2s"
timeout = "2s"

[session]
secret = "{session}"
previous_secrets = ["{previous}"]

[store]
url = "redis://ltigate:{REDIS_PASSWORD}@127.0.0.1:{port}"

[webhook]
secret = "{webhook}"

[outcomes]
allow_insecure_targets = true
retry_initial = "200ms"

[[consumers]]
name = "Acme"
key = "acme-key"
secrets = ["{acme_new}", "{acme_old}"]
lms_id = "acme"

[[consumers]]
name = "Beta"
key = "beta-key"
secret_file = "{beta_file}"
lms_id = "beta"
"#,
        up = up.url(),
        session = secrets[0],
        previous = secrets[1],
        webhook = secrets[2],
        acme_new = secrets[3],
        acme_old = secrets[4],
        beta_file = beta_file.display(),
    );
    let config = procs::write_config(dir.path(), &toml);
    let env = [("LTIGATE_UPSTREAM__API_TOKEN", API_TOKEN)];
    let mut gate = procs::Ltigate::spawn_with_env(&config, "debug", &env);

    let post = |l: &Launch, cookie: Option<&str>| {
        let mut req = client()
            .post(gate.url("/lti/launch"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(l.body());
        if let Some(c) = cookie {
            req = req.header("cookie", c.to_string());
        }
        req.send()
    };
    let graded = Launch::new("acme-key", secrets[3], "l-1", Some("C-1"))
        .set("lis_outcome_service_url", &lms.url())
        .set("lis_result_sourcedid", "sid-l-1")
        .set(
            "launch_presentation_return_url",
            "https://lms.example.org/ret",
        );
    let r = post(&graded, None).await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = session_cookie(&r).unwrap();
    let ticket_url = location(&r);
    let ticket = ticket_url.split_once("ticket=").unwrap().1.to_string();
    assert_eq!(
        post(&graded, None).await.unwrap().status(),
        303,
        "replay to the return URL"
    );
    assert_eq!(
        post(&graded, Some(&cookie)).await.unwrap().status(),
        303,
        "double-click"
    );
    let wrong = Launch::new("acme-key", "not-the-secret", "l-2", Some("C-1"));
    assert_eq!(post(&wrong, None).await.unwrap().status(), 401);
    let beta = Launch::new("beta-key", secrets[5], "l-3", Some("C-1"));
    assert_eq!(post(&beta, None).await.unwrap().status(), 303);
    let r = client().get(gate.url(&ticket_url)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        client()
            .get(gate.url(&ticket_url))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    const BROWSER_AUTH: &str = "Bearer browser-credential-e4a1";
    let r = client()
        .get(gate.url("/courses/C-1?page=1"))
        .header("cookie", format!("{cookie}; other=1"))
        .header("authorization", BROWSER_AUTH)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let forged = format!("{COOKIE}={}x", cookie.split_once('=').unwrap().1);
    let r = client()
        .get(gate.url("/courses/C-1"))
        .header("cookie", &forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let webhook = |body: String, signature: String| {
        client()
            .post(gate.admin_url("/webhooks/completion"))
            .header("content-type", "application/json")
            .header("x-ltigate-signature", signature)
            .body(body)
            .send()
    };
    let body = serde_json::json!({"event_id": "e-log", "user": "acme:l-1", "course": "C-1",
        "activity": "final-assessment", "score": 0.7})
    .to_string();
    let signature = ltigate::outcomes::sign_webhook(
        body.as_bytes(),
        &ltigate::secret::Secret::new(secrets[2]),
        support::lms::now(),
    );
    let bad = ltigate::outcomes::sign_webhook(
        body.as_bytes(),
        &ltigate::secret::Secret::new("not-the-webhook-secret"),
        support::lms::now(),
    );
    assert_eq!(
        webhook(body.clone(), bad.clone()).await.unwrap().status(),
        401
    );
    assert_eq!(
        webhook(body, signature.clone()).await.unwrap().status(),
        202
    );
    assert_eq!(
        lms.wait_accepted(1, Duration::from_secs(10)).await,
        [("sid-l-1".to_string(), 0.7)]
    );
    gate.signal("TERM");
    assert!(gate
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));

    let raw = gate.log();
    let mut text = raw.clone();
    for line in raw.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            json_strings(&v, &mut text);
        }
    }
    // The log is the debug one, with the requests in it.
    assert!(text.contains("launch accepted") && text.contains("grade delivered"));
    let debug = raw.lines().filter(|l| l.contains(r#""level":"DEBUG""#));
    assert!(debug.count() >= 10, "{raw}");

    let mut sensitive: Vec<(String, String)> = secrets
        .iter()
        .map(|s| ("a configured secret".to_string(), s.to_string()))
        .collect();
    sensitive.push((
        "the session cookie".into(),
        cookie.split_once('=').unwrap().1.into(),
    ));
    sensitive.push(("a launch ticket".into(), ticket));
    sensitive.push(("the browser's Authorization".into(), BROWSER_AUTH.into()));
    sensitive.push(("the webhook signature".into(), signature.clone()));
    sensitive.push((
        "the webhook signature".into(),
        signature.split("v1=").nth(1).unwrap().into(),
    ));
    sensitive.push((
        "a bad webhook signature".into(),
        bad.split("v1=").nth(1).unwrap().into(),
    ));
    let auths = lms.authorizations();
    assert_eq!(auths.len(), 1);
    sensitive.push(("the LMS-bound Authorization".into(), auths[0].clone()));
    let oauth_signature = auths[0]
        .split(',')
        .find_map(|p| p.trim().strip_prefix("oauth_signature=\""))
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    sensitive.push(("its oauth_signature".into(), oauth_signature.clone()));
    sensitive.push((
        "its oauth_signature, decoded".into(),
        ltigate::http::decode_path_segment(&oauth_signature).unwrap(),
    ));
    sensitive.push((
        "a launch signature".into(),
        graded
            .signed_params()
            .into_iter()
            .find(|(n, _)| n == "oauth_signature")
            .unwrap()
            .1,
    ));
    for (what, value) in &sensitive {
        assert!(
            !text.contains(value.as_str()),
            "{what} is in the log: {value}"
        );
    }

    // check-config on the same configuration and environment.
    let out = std::process::Command::new(procs::BIN)
        .args(["check-config", "--config"])
        .arg(&config)
        .envs(env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("[redacted]"));
    for s in secrets {
        assert!(!printed.contains(s), "check-config printed {s}:\n{printed}");
    }
}

/// An HTTP/2 (prior knowledge) client connection to `addr`, its connection
/// task running.
async fn http2_client(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    (h2, tokio::spawn(conn))
}

/// A gate with two request slots and a send timeout of one second, and a
/// learner's session cookie.
async fn two_slots_and_a_one_second_send_timeout(user: &str) -> (Upstream, Gate, String) {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_with(
        &up.url(),
        &[
            ("server", "send_timeout", r#""1s""#),
            ("server", "max_connections", "2"),
        ],
    )
    .await;
    let cookie = session(&gate, &Launch::acme(user, "C-1"), None).await;
    (up, gate, cookie)
}

/// With both slots held by clients that stopped reading: a learner gets
/// 503, then 200 once the send timeout (1 s) has freed a slot, not before.
async fn a_learner_is_served_once_the_send_timeout_frees_a_slot(gate: &Gate, cookie: &str) {
    let learner = || async {
        client()
            .get(gate.url("/courses/C-1"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .status()
    };
    let stopped = Instant::now();
    assert_eq!(learner().await, 503, "both slots are held");
    let served_after = loop {
        if learner().await == 200 {
            break stopped.elapsed();
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "the learner was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        served_after >= Duration::from_millis(900),
        "slots freed before the send timeout: {served_after:?}"
    );
}

/// Clients that stop reading a download hold their request slot (and the
/// upstream connection behind it) for `send_timeout` (1 s) and no longer:
/// with both slots of `max_connections = 2` held by them a learner gets a
/// 503, then is served once they are cut off. A client that reads slowly
/// but steadily gets the whole body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_are_cut_off_after_the_send_timeout() {
    const BIG: usize = 64 * 1024 * 1024;
    const STEADY: usize = 12 * 1024 * 1024;
    let _machine = shared_machine().await;
    let (_up, gate, cookie) = two_slots_and_a_one_second_send_timeout("s-9").await;
    let download = |bytes: usize| {
        format!("GET /download?bytes={bytes} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n")
    };

    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(gate.public).await.unwrap();
        stream.write_all(download(BIG).as_bytes()).await.unwrap();
        assert_eq!(read_head(&mut stream).await.0, 200);
        stalled.push(stream);
    }
    a_learner_is_served_once_the_send_timeout_frees_a_slot(&gate, &cookie).await;
    // What they get afterwards is what was already on its way, then the end.
    for mut stream in stalled {
        let mut got = 0;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
                .await
                .expect("ltigate closed the connection");
            match read {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        assert!(got < BIG, "the whole body arrived: {got}");
    }

    // A small receive window, read a little every 20 ms: ltigate's writes
    // wait for this client all along (its send buffer, at most 4 MiB on
    // Linux, fills early), each wait far shorter than the send timeout,
    // the whole far longer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(128 * 1024).unwrap();
    let mut stream = socket.connect(gate.public).await.unwrap();
    stream.write_all(download(STEADY).as_bytes()).await.unwrap();
    let started = Instant::now();
    assert_eq!(read_head(&mut stream).await.0, 200);
    let mut got = 0;
    let mut buf = vec![0u8; 128 * 1024];
    while got < STEADY {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(got, STEADY, "cut off after {:?}", started.elapsed());
}

/// On HTTP/2 a client can keep reading the connection and leave one
/// stream's window shut. Such a stream is reset after the send timeout,
/// freeing its request slot and upstream connection; the connection and its
/// other streams go on, and a stream read slowly but steadily is not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_left_unread_are_reset_after_the_send_timeout() {
    const BIG: usize = 64 * 1024 * 1024;
    const STEADY: usize = 2 * 1024 * 1024;
    let _machine = shared_machine().await;
    let (_up, gate, cookie) = two_slots_and_a_one_second_send_timeout("s-10").await;
    let (mut h2, conn) = http2_client(gate.public).await;
    let get = |path: String| {
        http::Request::get(format!("http://{}{path}", gate.public))
            .header("cookie", &cookie)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    // Two downloads whose bodies this client never reads: hyper's client
    // opens no window for them, while its connection task reads on.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let r = h2
            .send_request(get(format!("/download?bytes={BIG}")))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        stalled.push(r.into_body());
    }
    a_learner_is_served_once_the_send_timeout_frees_a_slot(&gate, &cookie).await;
    // The streams were reset after what was already on its way.
    for body in stalled {
        let mut body = body;
        let mut got = 0;
        let ended = loop {
            match body.frame().await {
                Some(Ok(f)) => got += f.data_ref().map_or(0, |d| d.len()),
                Some(Err(e)) => break Some(e),
                None => break None,
            }
        };
        assert!(ended.is_some(), "the stream ended as if complete");
        assert!(got < BIG, "the whole body arrived: {got}");
    }

    // The connection itself goes on: a new stream on it is answered, and
    // one read in bursts with pauses under the timeout (the whole far
    // longer) arrives whole.
    let r = h2.send_request(get("/courses/C-1".into())).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = h2
        .send_request(get(format!("/download?bytes={STEADY}")))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let started = Instant::now();
    let mut body = r.into_body();
    let (mut got, mut since_pause) = (0, 0);
    while let Some(frame) = body.frame().await {
        let n = frame.unwrap().data_ref().map_or(0, |d| d.len());
        got += n;
        since_pause += n;
        if since_pause >= 256 * 1024 {
            since_pause = 0;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    assert_eq!(got, STEADY, "cut off after {:?}", started.elapsed());
    assert!(started.elapsed() > Duration::from_secs(2));
    drop(h2);
    conn.abort();
}
