//! LTI 1.3 launches as a platform and a browser make them, for the tests:
//! ltigate with the fake platform's registration, the login (with its
//! state cookie) and the launch post.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::gate::{client, Gate, PUBLIC_URL};
use super::platform::{Platform, CLIENT_ID, DEPLOYMENT, ISSUER};
use super::upstream::Upstream;
use serde_json::Value;

pub const TOOL_KEY: &str = "tests/vectors/tool-key-rsa2048.pem";

pub struct Setup {
    pub up: Upstream,
    pub gate: Gate,
    pub platform: Platform,
}

/// ltigate with the base configuration, a tool key and the fake
/// platform's registration (`extra` added to it).
pub async fn setup(extra: &str) -> Setup {
    let up = Upstream::start(Some("upstream-token")).await;
    let platform = Platform::start().await;
    let config = format!(
        "[lti13]\nkey_file = \"{}/{TOOL_KEY}\"\n{}",
        env!("CARGO_MANIFEST_DIR"),
        platform.registration(extra)
    );
    let gate = Gate::start(&up.url(), &config).await;
    Setup { up, gate, platform }
}

/// ltigate on Redis at `redis_url` with the same registration as
/// [`setup`], on `platform`.
pub async fn gate_on_redis(up: &Upstream, platform: &Platform, redis_url: &str) -> Gate {
    let dir = tempfile::tempdir().unwrap();
    let base = super::gate::with_store(
        &super::gate::base_config(&up.url(), dir.path()),
        &format!("[store]\nurl = [\"{redis_url}\"]\ntimeout = \"1s\"\n"),
    );
    let toml = format!(
        "{base}\n[lti13]\nkey_file = \"{}/{TOOL_KEY}\"\n{}",
        env!("CARGO_MANIFEST_DIR"),
        platform.registration("lms_id = \"plat\"")
    );
    Gate::start_with(&toml, dir).await
}

pub fn launch_url() -> String {
    format!("{PUBLIC_URL}/lti/1.3/launch")
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A login's outcome: the auth URL's parameters and the state cookie.
pub struct Login {
    pub params: HashMap<String, String>,
    /// `name=value` of the state cookie.
    pub cookie: String,
}

impl Login {
    pub fn state(&self) -> &str {
        &self.params["state"]
    }
    pub fn nonce(&self) -> &str {
        &self.params["nonce"]
    }
}

pub fn query_of(url: &str) -> HashMap<String, String> {
    let url = reqwest::Url::parse(url).unwrap();
    url.query_pairs()
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect()
}

pub fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// A top-level login with `query` (URL-encoded pairs).
pub async fn login_with(gate: &Gate, query: &[(&str, &str)]) -> reqwest::Response {
    client()
        .get(gate.url("/lti/1.3/login"))
        .query(query)
        .send()
        .await
        .unwrap()
}

/// A successful login to the launch URL.
pub async fn login(gate: &Gate) -> Login {
    login_to(gate, &launch_url()).await
}

pub async fn login_to(gate: &Gate, target: &str) -> Login {
    let r = login_with(
        gate,
        &[
            ("iss", ISSUER),
            ("login_hint", "hint-1"),
            ("target_link_uri", target),
            ("client_id", CLIENT_ID),
            ("lti_deployment_id", DEPLOYMENT),
        ],
    )
    .await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    let set_cookie = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("__Host-ltigate_s_"))
        .expect("a state cookie");
    Login {
        params: query_of(&location(&r)),
        cookie: set_cookie.split(';').next().unwrap().to_string(),
    }
}

/// Posts a launch form with `cookie`.
pub async fn post_launch(
    gate: &Gate,
    path: &str,
    form: &[(&str, &str)],
    cookie: &str,
) -> reqwest::Response {
    let mut req = client()
        .post(gate.url(path))
        .header("accept", "application/json")
        .form(form);
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    req.send().await.unwrap()
}

/// Launches with the token of `claims` after `login`.
pub async fn launch(s: &Setup, login: &Login, token: &str) -> reqwest::Response {
    post_launch(
        &s.gate,
        "/lti/1.3/launch",
        &[("id_token", token), ("state", login.state())],
        &login.cookie,
    )
    .await
}

pub async fn error_of(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["error"].as_str().unwrap_or("").to_string())
}
