//! 50 MB up and down through ltigate: both bodies stream (the far end
//! sees data while the near end is still sending) and the process's memory
//! stays far below the size of the transfer. One test in this binary, so
//! nothing else moves the memory figures.

mod proxykit;
mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use proxykit::session;
use support::gate::Gate;
use support::lms::Launch;
use support::upstream::{ChannelBody, Upstream};

const SIZE: u64 = 50 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;
const MIB: u64 = 1024 * 1024;

/// A field of /proc/self/status in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_stream_up_and_down_in_bounded_memory() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = Gate::start(&up.url(), "").await;
    let cookie = session(&gate, &Launch::acme("u-1", "C-1"), None).await;
    let rss_before = status_kib("VmRSS:");
    let started = Instant::now();

    // Upload: after 4 MiB the client waits until the upstream has 2 MiB.
    // ltigate buffering the body would deadlock here (and time out).
    let stream = tokio::net::TcpStream::connect(gate.public).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let mut received = up.upload_received.clone();
    let producer = tokio::spawn(async move {
        let chunk = Bytes::from(vec![b'u'; CHUNK]);
        let mut sent = 0u64;
        let mut upstream_had_at_wait = None;
        while sent < SIZE {
            if sent == 4 * MIB {
                let seen = tokio::time::timeout(
                    Duration::from_secs(10),
                    received.wait_for(|n| *n >= 2 * MIB),
                )
                .await
                .expect("the upstream gets data while the client is still sending")
                .map(|n| *n)
                .unwrap();
                upstream_had_at_wait = Some(seen);
            }
            tx.send(chunk.clone()).await.unwrap();
            sent += CHUNK as u64;
        }
        upstream_had_at_wait
    });
    let req = http::Request::post("/upload")
        .header("host", "learn.example.test")
        .header("cookie", &cookie)
        .header("content-length", SIZE.to_string())
        .body(ChannelBody(rx))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .expect("upload in time")
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(j["received"], SIZE);
    assert!(j["chunks"].as_u64().unwrap() > 100, "{j}");
    let seen = producer.await.unwrap().unwrap();
    assert!((2 * MIB..=4 * MIB).contains(&seen), "{seen}");

    // Download: the upstream pauses after 4 MiB until the client has 2 MiB.
    let resp = support::gate::client()
        .get(gate.url(&format!("/download?bytes={SIZE}&pause_after={}", 4 * MIB)))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(SIZE));
    let mut resp = resp;
    let mut got = 0u64;
    let mut released = false;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("download data in time")
        .unwrap()
    {
        assert!(chunk.iter().all(|b| *b == b'x'));
        got += chunk.len() as u64;
        if !released && got >= 2 * MIB {
            up.release_download();
            released = true;
        }
    }
    assert!(released);
    assert_eq!(got, SIZE);

    let rss_after = status_kib("VmRSS:");
    let peak = status_kib("VmHWM:");
    let grew_mib = peak.saturating_sub(rss_before) / 1024;
    eprintln!(
        "100 MiB moved in {:?}; RSS {} → {} KiB, peak {} KiB",
        started.elapsed(),
        rss_before,
        rss_after,
        peak
    );
    assert!(grew_mib < 16, "the peak grew by {grew_mib} MiB");
}
