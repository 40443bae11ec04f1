//! The real `ltigate` binary as a child process, for the abuse and fault
//! tests: its addresses read from the JSON start-up line, its whole stderr
//! kept for inspection, its memory read from `/proc/<pid>/status`, SIGTERM
//! and SIGSTOP. The process is killed and reaped when the handle drops,
//! also while a failing test unwinds.
#![allow(dead_code)]

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ltigate");

pub struct Ltigate {
    child: std::process::Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Ltigate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Ltigate {
    /// Starts `ltigate serve --config <config>` with JSON logs at `log`
    /// (an `LTIGATE_LOG` filter that lets the `ltigate` target's info
    /// through) and waits for "ltigate is serving".
    pub fn spawn(config: &Path, log: &str) -> Ltigate {
        Ltigate::spawn_with_env(config, log, &[])
    }

    /// [`Ltigate::spawn`] with extra environment variables for the child.
    pub fn spawn_with_env(config: &Path, log: &str, env: &[(&str, &str)]) -> Ltigate {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .env("LTIGATE_LOG_FORMAT", "json")
            .env("LTIGATE_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the ltigate binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { return };
                    lines.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let mut me = Ltigate {
            child,
            public: "0.0.0.0:0".parse().unwrap(),
            admin: "0.0.0.0:0".parse().unwrap(),
            lines,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                panic!("ltigate did not start:\n{}", me.log());
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["fields"]["message"] == "ltigate is serving" {
                me.public = v["fields"]["public"].as_str().unwrap().parse().unwrap();
                me.admin = v["fields"]["admin"].as_str().unwrap().parse().unwrap();
                return me;
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Everything written to stderr so far, one line per entry.
    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// A field of `/proc/<pid>/status` in KiB (`VmRSS:`, `VmHWM:`).
    pub fn status_kib(&self, field: &str) -> u64 {
        status_kib(self.pid(), field)
    }

    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal}");
    }

    /// Waits (at most `limit`) for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                // Let the reader thread drain what is left.
                std::thread::sleep(Duration::from_millis(50));
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A field of `/proc/<pid>/status` in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Writes `toml` to `<dir>/ltigate.toml` and returns the path.
pub fn write_config(dir: &Path, toml: &str) -> std::path::PathBuf {
    let path = dir.join("ltigate.toml");
    std::fs::write(&path, toml).unwrap();
    path
}
