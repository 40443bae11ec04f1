//! Helpers for the session and proxy tests: configurations with a few keys
//! changed, a learner's session obtained the way a browser gets one, cookies
//! sealed by hand, and raw HTTP/1.1 exchanges for exact control over what
//! is on the wire.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use ltigate::secret::Secret;
use ltigate::session::{Sealer, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::gate::{base_config, client, Gate, PUBLIC_URL};
use crate::support::lms::Launch;

/// The session secret of the base configuration.
pub const SESSION_SECRET: &str = "0123456789abcdef0123456789abcdef-session";
/// The session cookie's name.
pub const COOKIE: &str = "__Host-ltigate_session";

/// Sets `key = value` (TOML) in `[section]` of `toml`: replaces the key
/// when the section has it, else adds it below the section header (the
/// section is created at the end when missing).
pub fn set_key(toml: &str, section: &str, key: &str, value: &str) -> String {
    let header = format!("[{section}]");
    let line = format!("{key} = {value}");
    let mut out = Vec::new();
    let mut in_section = false;
    let mut done = false;
    let mut seen = false;
    for l in toml.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            if in_section && !done {
                out.push(line.clone());
                done = true;
            }
            in_section = t == header;
            seen |= in_section;
        } else if in_section && !done && t.split('=').next().map(str::trim) == Some(key) {
            out.push(line.clone());
            done = true;
            continue;
        }
        out.push(l.to_string());
    }
    if !done {
        if !seen {
            out.push(header);
        }
        out.push(line);
    }
    out.join("\n") + "\n"
}

/// Starts ltigate with the base configuration changed by `keys`
/// (`(section, key, TOML value)`).
pub async fn gate_with(upstream: &str, keys: &[(&str, &str, &str)]) -> Gate {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = base_config(upstream, dir.path());
    for (section, key, value) in keys {
        toml = set_key(&toml, section, key, value);
    }
    Gate::start_with(&toml, dir).await
}

/// POSTs a signed launch (with a cookie, as a browser that has one).
pub async fn launch(gate: &Gate, l: &Launch, cookie: Option<&str>) -> reqwest::Response {
    let mut req = client()
        .post(gate.url(&l.path_and_query()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(l.body());
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.unwrap()
}

/// The `name=value` part of the session `Set-Cookie` of a response.
pub fn session_cookie(r: &reqwest::Response) -> Option<String> {
    set_cookies(r)
        .into_iter()
        .find(|v| v.starts_with(&format!("{COOKIE}=")))
        .map(|v| v.split(';').next().unwrap().to_string())
}

/// Every `Set-Cookie` of a response.
pub fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// The `Location` of a response ("" when none).
pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Launches and returns the session cookie (`name=value`).
pub async fn session(gate: &Gate, l: &Launch, cookie: Option<&str>) -> String {
    let r = launch(gate, l, cookie).await;
    assert_eq!(r.status(), 303, "launch refused");
    session_cookie(&r).expect("a session cookie")
}

/// GETs `path` with `cookie`; the fake upstream's echo (must be 200).
pub async fn echo(gate: &Gate, path: &str, cookie: Option<&str>) -> serde_json::Value {
    let mut req = client().get(gate.url(path));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    r.json().await.unwrap()
}

/// The headers of an echo, as a map.
pub fn echoed_headers(echo: &serde_json::Value) -> &serde_json::Map<String, serde_json::Value> {
    echo["headers"].as_object().expect("echoed headers")
}

/// The header names of an echo that start with `x-lti` (any spelling).
pub fn identity_names(echo: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = echoed_headers(echo)
        .keys()
        .filter(|k| k.replace('_', "-").starts_with("x-lti-"))
        .cloned()
        .collect();
    names.sort();
    names
}

/// A sealer with the base configuration's key.
pub fn sealer() -> Sealer {
    Sealer::new(&Secret::new(SESSION_SECRET.as_bytes().to_vec()), &[])
}

/// A session for `acme:<user>` in `course`, issued and last seen at the
/// given unix times.
pub fn session_at(user: &str, course: &str, issued_at: u64, last_seen: u64) -> Session {
    let mut s = Session::new_for_test(&format!("acme:{user}"));
    s.tenant = "Acme".into();
    s.lms_id = "acme".into();
    s.user_id = user.into();
    s.add_course(course, &["Learner".into()], 20);
    s.issued_at = issued_at;
    s.last_seen = last_seen;
    s
}

/// `name=value` of a cookie sealed with `sealer`.
pub fn cookie_for(sealer: &Sealer, s: &Session) -> String {
    format!("{COOKIE}={}", sealer.seal(s).unwrap())
}

/// A raw HTTP/1.1 response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads a response head from `stream` (and nothing after it).
pub async fn read_head(stream: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.unwrap();
        assert!(n > 0, "connection closed in the head: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    (status, head)
}

/// Sends `head` (request line and headers, without the blank line; a
/// `Connection: close` is added) and reads the whole response.
pub async fn raw(addr: SocketAddr, head: &str) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let req = format!("{}\r\nConnection: close\r\n\r\n", head.trim_end());
    stream.write_all(req.as_bytes()).await.unwrap();
    let (status, head) = read_head(&mut stream).await;
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut body))
        .await
        .expect("body in time")
        .unwrap();
    RawResponse { status, head, body }
}

/// The public origin the test LMS and browser use.
pub fn origin() -> &'static str {
    PUBLIC_URL
}

/// A metric series' value.
pub async fn metric(gate: &Gate, series: &str) -> f64 {
    gate.metric(series).await
}
