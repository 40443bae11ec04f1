//! Starts ltigate in-process on loopback from a TOML configuration.

use std::net::SocketAddr;

use ltigate::config::{load_raw_from, validate};
use ltigate::Running;

/// The public URL every test LMS signs against. ltigate listens on a
/// loopback port; the LMS-facing URL is different on purpose, as behind a
/// real ingress.
pub const PUBLIC_URL: &str = "https://learn.example.test";

/// The webhook secret of the base configuration.
pub const WEBHOOK_SECRET: &str = "whsec-test-0123456789abcdef";

pub struct Gate {
    pub running: Option<Running>,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
}

/// A base configuration: one consumer `acme` (key `acme-key`, secret
/// `acme-secret`), the given upstream, the embedded store in `dir`.
pub fn base_config(upstream: &str, dir: &std::path::Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
public_url = "{PUBLIC_URL}"
shutdown_grace = "5s"

[upstream]
url = "{upstream}"
api_url = "{upstream}/api"
api_token = "upstream-token"
api_timeout = "2s"
api_retries = 1
timeout = "2s"

[session]
secret = "0123456789abcdef0123456789abcdef-session"

[store]
path = "{db}"

[webhook]
secret = "{WEBHOOK_SECRET}"

[outcomes]
allow_insecure_targets = true
retry_initial = "200ms"
retry_max = "1s"
lease = "10s"
timeout = "3s"

[courses.C-graded]
grade_activity = "final-assessment"

[[consumers]]
name = "Acme"
key = "acme-key"
secret = "acme-secret"
lms_id = "acme"
environment = "acme-env"

[[consumers]]
name = "Beta"
key = "beta-key"
secrets = ["beta-new", "beta-old"]
lms_id = "beta"
max_licences = 2
"#,
        db = dir.join("ltigate.db").display()
    )
}

/// `config` with its `[store]` table replaced by `store` (a whole table,
/// starting with `[store]`).
pub fn with_store(config: &str, store: &str) -> String {
    let start = config.find("[store]").expect("a [store] table");
    let end = start
        + config[start..]
            .find("\n\n")
            .expect("a blank line after [store]");
    format!("{}{}{}", &config[..start], store, &config[end..])
}

impl Gate {
    /// Starts ltigate with `toml` (a full configuration).
    pub async fn start_with(toml: &str, dir: tempfile::TempDir) -> Gate {
        let path = dir.path().join("ltigate.toml");
        std::fs::write(&path, toml).unwrap();
        let raw = load_raw_from(Some(&path), Vec::new()).unwrap();
        let settings = validate(&raw).unwrap_or_else(|e| panic!("config:\n{e}"));
        let running = ltigate::start(settings).await.unwrap();
        Gate {
            public: running.public_addr,
            admin: running.admin_addr,
            running: Some(running),
            dir,
        }
    }

    /// Starts ltigate with the base configuration plus `extra` TOML
    /// (appended; later tables and keys must not repeat base ones).
    pub async fn start(upstream: &str, extra: &str) -> Gate {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!("{}\n{extra}", base_config(upstream, dir.path()));
        Gate::start_with(&toml, dir).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.public, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn app(&self) -> &ltigate::http::AppState {
        &self.running.as_ref().unwrap().app
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Stops this gate and starts another with `toml` on the same
    /// directory (its embedded store), as a restart with a new
    /// configuration.
    pub async fn restart(mut self, toml: &str) -> Gate {
        self.stop().await;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Gate::start_with(toml, dir).await
    }

    /// Sends `event` as a completion webhook signed with the base
    /// configuration's secret; the status and the JSON answer.
    pub async fn completion(&self, event: serde_json::Value) -> (u16, serde_json::Value) {
        let body = event.to_string();
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let signature = ltigate::outcomes::sign_webhook(
            body.as_bytes(),
            &ltigate::secret::Secret::new(WEBHOOK_SECRET),
            t,
        );
        let r = client()
            .post(self.admin_url("/webhooks/completion"))
            .header("content-type", "application/json")
            .header("x-ltigate-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// The JSON an admin route answers a GET with.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        client()
            .get(self.admin_url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The admin listener's `/status`.
    pub async fn status(&self) -> serde_json::Value {
        self.admin_json("/status").await
    }

    /// The whole `/metrics` exposition.
    pub async fn metrics_text(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one metric series from `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

/// An HTTP client that follows no redirects and keeps no cookies.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}
