//! Graceful shutdown of the real binary: on SIGTERM ltigate stops
//! accepting, lets the requests in flight finish, and exits 0.

mod proxykit;
mod support;

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proxykit::set_key;
use support::gate::{base_config, client};
use support::upstream::Upstream;

/// Kills the child if the test fails before it exits.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ltigate serve` and returns it with its public address, read
/// from its JSON start-up log line.
fn spawn_ltigate(config: &std::path::Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ltigate"))
        .args(["serve", "--config"])
        .arg(config)
        .env("LTIGATE_LOG_FORMAT", "json")
        .env("LTIGATE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the ltigate binary");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            let _ = tx.send(line);
        }
    });
    let child = Child(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("ltigate logs that it is serving");
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["fields"]["message"] == "ltigate is serving" {
            let addr = v["fields"]["public"].as_str().unwrap().parse().unwrap();
            return (child, addr);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish_and_refuses_new_connections() {
    let up = Upstream::start(Some("upstream-token")).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = set_key(
        &base_config(&up.url(), dir.path()),
        "server",
        "public_paths",
        r#"["/slow"]"#,
    );
    let config = dir.path().join("ltigate.toml");
    std::fs::write(&config, toml).unwrap();
    let (mut child, public) = spawn_ltigate(&config);

    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let req = client().get(format!("http://{public}/slow?ms=1500"));
            tokio::spawn(async move {
                let r = req.send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        })
        .collect();
    while up.records().len() < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let pid = child.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());

    // New connections are refused while the three are still in flight.
    let t = Instant::now();
    loop {
        match tokio::net::TcpStream::connect(public).await {
            Err(e) => {
                // Refused once the listener is gone; reset when the SYN
                // meets it as it closes.
                assert!(
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                    ),
                    "{e}"
                );
                break;
            }
            Ok(_) => {
                assert!(t.elapsed() < Duration::from_secs(1), "still accepting");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(in_flight.iter().all(|t| !t.is_finished()));

    for t in in_flight {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, r#"{"slept_ms":1500}"#);
    }
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = child.0.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap()
    .expect("ltigate exits after the requests in flight");
    assert_eq!(status.code(), Some(0));
}

/// A SIGTERM sent the moment ltigate says it is serving (an orchestrator
/// that rolls a pod right after it started) is a graceful shutdown too:
/// the handler is in place before the listeners open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_start_is_a_graceful_shutdown() {
    let up = Upstream::start(Some("upstream-token")).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ltigate.toml");
    std::fs::write(&config, base_config(&up.url(), dir.path())).unwrap();
    for _ in 0..5 {
        let (mut child, _) = spawn_ltigate(&config);
        let pid = child.0.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let status = child.0.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{status}");
    }
}
