//! A small W3C WebDriver client for chromedriver, over plain HTTP + JSON:
//! just the commands the browser test needs.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// The key of an element reference in WebDriver JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A running chromedriver, killed on drop.
pub struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// Starts `chromedriver` on a free port and waits until it is ready.
    pub async fn start(log: &Path) -> Driver {
        let port = free_port();
        let log_file = std::fs::File::create(log).expect("cannot create the chromedriver log");
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run chromedriver ({e}); on Debian: apt-get install chromium chromium-driver"
                )
            });
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await
                .ok()
                .map(|r| r.json::<Value>());
            if let Some(fut) = ready {
                if let Ok(v) = fut.await {
                    if v["value"]["ready"] == json!(true) {
                        return driver;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new browser session with these capabilities.
    pub async fn session(&self, capabilities: Value) -> Session {
        let resp: Value = self
            .http
            .post(format!("{}/session", self.base))
            .json(&json!({"capabilities": {"alwaysMatch": capabilities}}))
            .send()
            .await
            .expect("chromedriver did not answer")
            .json()
            .await
            .expect("chromedriver answered no JSON");
        let id = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("cannot start a browser session: {resp}"))
            .to_string();
        Session {
            base: format!("{}/session/{id}", self.base),
            http: self.http.clone(),
        }
    }
}

/// A found element.
#[derive(Debug, Clone)]
pub struct Element(String);

/// One browser session.
pub struct Session {
    base: String,
    http: reqwest::Client,
}

impl Session {
    /// Runs a command; `Ok(value)` or `Err(error message)`.
    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().await.map_err(|e| e.to_string())?;
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(format!(
                "{}: {}",
                v["value"]["error"].as_str().unwrap_or("error"),
                v["value"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
            ))
        }
    }

    async fn must(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.cmd(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    pub async fn goto(&self, url: &str) {
        self.must("POST", "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn current_url(&self) -> String {
        self.must("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn find_now(&self, css: &str) -> Option<Element> {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .ok()?;
        v[ELEMENT_KEY].as_str().map(|s| Element(s.to_string()))
    }

    /// Waits up to `timeout` for an element matching `css`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.find_now(css).await {
                return e;
            }
            if Instant::now() >= deadline {
                let text = self.body_text().await;
                panic!(
                    "no element `{css}` within {timeout:?} at {}; page text:\n{text}",
                    self.current_url().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to `timeout` until the text of `css` satisfies `ok`; returns it.
    pub async fn wait_text(
        &self,
        css: &str,
        timeout: Duration,
        what: &str,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Some(e) = self.find_now(css).await {
                if let Ok(v) = self
                    .cmd("GET", &format!("/element/{}/text", e.0), None)
                    .await
                {
                    last = v.as_str().unwrap_or_default().to_string();
                    if ok(&last) {
                        return last;
                    }
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "`{css}` did not show {what} within {timeout:?} (last text: {last:?}); page text:\n{}",
                    self.body_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn text(&self, e: &Element) -> String {
        self.must("GET", &format!("/element/{}/text", e.0), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn body_text(&self) -> String {
        match self.find_now("body").await {
            Some(b) => self
                .cmd("GET", &format!("/element/{}/text", b.0), None)
                .await
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            None => String::new(),
        }
    }

    pub async fn click(&self, e: &Element) {
        self.must("POST", &format!("/element/{}/click", e.0), None)
            .await;
    }

    pub async fn clear(&self, e: &Element) {
        self.must("POST", &format!("/element/{}/clear", e.0), None)
            .await;
    }

    pub async fn type_text(&self, e: &Element, text: &str) {
        self.must(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Selects the `<option>` matching `css`.
    pub async fn select(&self, css: &str) {
        let option = self.wait_for(css, Duration::from_secs(5)).await;
        self.click(&option).await;
    }

    /// Switches into the iframe `e`, or back to the top document with `None`.
    pub async fn frame(&self, e: Option<&Element>) {
        let id = match e {
            Some(e) => json!({ ELEMENT_KEY: e.0 }),
            None => Value::Null,
        };
        self.must("POST", "/frame", Some(json!({ "id": id }))).await;
    }

    pub async fn window_handle(&self) -> String {
        self.must("GET", "/window", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn window_handles(&self) -> Vec<String> {
        self.must("GET", "/window/handles", None)
            .await
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn switch_window(&self, handle: &str) {
        self.must("POST", "/window", Some(json!({ "handle": handle })))
            .await;
    }

    /// Waits for a window other than `known` to open; returns its handle.
    pub async fn wait_new_window(&self, known: &[String], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(h) = self
                .window_handles()
                .await
                .into_iter()
                .find(|h| !known.contains(h))
            {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "no new window opened within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `script` (a function body; `return` gives the value) in the
    /// current frame and returns its value.
    pub async fn execute(&self, script: &str) -> Value {
        self.must(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Saves a PNG screenshot of the current window.
    pub async fn screenshot(&self, path: &Path) {
        let b64 = self.must("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("screenshot is not base64");
        std::fs::write(path, png).expect("cannot write the screenshot");
    }

    /// Browser log entries of `kind` (`performance`, `browser`) since the last call.
    pub async fn log(&self, kind: &str) -> Vec<Value> {
        self.must("POST", "/se/log", Some(json!({ "type": kind })))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn quit(self) {
        let _ = self.cmd("DELETE", "", None).await;
    }
}
