//! Configuration: figment loading into serde structs at the edge, validated once
//! into the typed [`Settings`] the rest of ltigate uses.
//!
//! Sources, later ones winning: built-in defaults → the TOML file
//! (`config/ltigate.toml` or `--config PATH`) → environment variables
//! `LTIGATE_<SECTION>__<KEY>`. Only variable names containing `__` are read, so
//! Kubernetes service-link variables such as `LTIGATE_PORT` are ignored.
//! Unknown keys are rejected with their path. Every secret may be given inline
//! or through a `*_file` twin (trailing newline trimmed; `base64:` prefix
//! decoded). Durations accept `300ms`, `300s`, `8h`; sizes `64KiB`, `1MiB`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize, Serializer};

use crate::secret::Secret;

/// Where the configuration file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "config/ltigate.toml";

/// Minimum length of the session key, in bytes.
pub const MIN_SESSION_KEY: usize = 32;

// ---------------------------------------------------------------------------
// Raw (serde) layer
// ---------------------------------------------------------------------------

/// A secret as written in the configuration: printed as `[redacted]`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct RawSecret(String);

impl Serialize for RawSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

impl fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A duration or size as written: a string such as `300s`, or a bare integer
/// (seconds, or bytes for sizes).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Quantity {
    /// `"300s"`, `"64KiB"`.
    Text(String),
    /// Seconds or bytes.
    Number(u64),
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Quantity::Text(t) => s.serialize_str(t),
            Quantity::Number(n) => s.serialize_u64(*n),
        }
    }
}

impl From<&str> for Quantity {
    fn from(s: &str) -> Self {
        Quantity::Text(s.to_string())
    }
}

/// One string or a list of strings (`store.url`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value (may hold several comma-separated URLs).
    One(String),
    /// A list.
    Many(Vec<String>),
}

impl Default for OneOrMany {
    fn default() -> Self {
        OneOrMany::One(String::new())
    }
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Public listener address.
    pub listen: String,
    /// Admin listener address (health, metrics, webhooks).
    pub admin_listen: String,
    /// Base of the URL the LMS signs; may carry a path prefix. Required.
    pub public_url: String,
    /// Honour `X-Forwarded-*` from a trusted proxy in front.
    pub trust_forwarded_headers: bool,
    /// Path prefixes proxied without a session.
    pub public_paths: Vec<String>,
    /// Origins allowed to frame proxied HTML (CSP `frame-ancestors`).
    pub frame_ancestors: Vec<String>,
    /// Concurrency limit on the public listener.
    pub max_connections: usize,
    /// Time a client has to send its request headers.
    pub header_read_timeout: Quantity,
    /// Longest a client may take none of a response being sent to it.
    pub send_timeout: Quantity,
    /// Largest request header block accepted.
    pub max_header_bytes: Quantity,
    /// Time in-flight requests get to finish on shutdown.
    pub shutdown_grace: Quantity,
    /// One access-log line per public request.
    pub access_log: bool,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "0.0.0.0:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            public_url: String::new(),
            trust_forwarded_headers: false,
            public_paths: Vec::new(),
            frame_ancestors: Vec::new(),
            max_connections: 10_000,
            header_read_timeout: "10s".into(),
            send_timeout: "60s".into(),
            access_log: true,
            max_header_bytes: "32KiB".into(),
            shutdown_grace: "25s".into(),
        }
    }
}

/// `[upstream]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    /// Where browser traffic goes.
    pub url: String,
    /// Base of the provisioning API.
    pub api_url: String,
    /// Bearer token for the API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_token: Option<RawSecret>,
    /// File holding the bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_token_file: Option<String>,
    /// Timeout of one API call.
    pub api_timeout: Quantity,
    /// Retries of a failed idempotent API call.
    pub api_retries: u32,
    /// Template of the user path.
    pub user_path: String,
    /// Template of the subscription path.
    pub subscription_path: String,
    /// Template of the landing path after a launch.
    pub landing_path: String,
    /// Pattern that names the current course in a request path.
    pub course_path: String,
    /// Pass the client's `Host` header upstream.
    pub pass_host_header: bool,
    /// Timeout of a proxied request's answer, and longest a response
    /// body may go without a byte.
    pub timeout: Quantity,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            url: "http://127.0.0.1:3000".into(),
            api_url: "http://127.0.0.1:3000/api".into(),
            api_token: None,
            api_token_file: None,
            api_timeout: "5s".into(),
            api_retries: 2,
            user_path: "/users/{external_id}".into(),
            subscription_path: "/courses/{course}/subscriptions/{external_id}".into(),
            landing_path: "/courses/{course}".into(),
            course_path: String::new(),
            pass_host_header: true,
            timeout: "60s".into(),
        }
    }
}

/// `[launch]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLaunch {
    /// Accepted difference between `oauth_timestamp` and now.
    pub max_clock_skew: Quantity,
    /// Separator between `lms_id` and the LMS user id.
    pub id_separator: String,
}

impl Default for RawLaunch {
    fn default() -> Self {
        RawLaunch {
            max_clock_skew: "300s".into(),
            id_separator: ":".into(),
        }
    }
}

/// `[session]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSession {
    /// Session key (≥ 32 bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<RawSecret>,
    /// File holding the session key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// Older keys that still open cookies.
    pub previous_secrets: Vec<RawSecret>,
    /// File with older keys, one per line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secrets_file: Option<String>,
    /// Cookie name.
    pub cookie_name: String,
    /// Prefix of the identity headers.
    pub header_prefix: String,
    /// Absolute session lifetime.
    pub ttl: Quantity,
    /// Lifetime without a request.
    pub idle_ttl: Quantity,
    /// Courses remembered in one session.
    pub max_courses: usize,
    /// Add `Partitioned` to cookies (CHIPS).
    pub partitioned: bool,
    /// Refuse unsafe cross-site requests.
    pub csrf: bool,
    /// Make upstream cookies work inside the LMS iframe.
    pub rewrite_upstream_cookies: bool,
    /// RFC 3339 instant; sessions issued earlier are rejected.
    pub not_before: String,
}

impl Default for RawSession {
    fn default() -> Self {
        RawSession {
            secret: None,
            secret_file: None,
            previous_secrets: Vec::new(),
            previous_secrets_file: None,
            cookie_name: "__Host-ltigate_session".into(),
            header_prefix: "X-LTI-".into(),
            ttl: "8h".into(),
            idle_ttl: "2h".into(),
            max_courses: 20,
            partitioned: false,
            csrf: true,
            rewrite_upstream_cookies: true,
            not_before: String::new(),
        }
    }
}

/// `[store]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// `redis://…` / `rediss://…` (several for a Cluster); empty: embedded.
    pub url: OneOrMany,
    /// The URL(s) name a Redis Cluster.
    pub cluster: bool,
    /// Embedded database file.
    pub path: String,
    /// Timeout of one store operation.
    pub timeout: Quantity,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            url: OneOrMany::default(),
            cluster: false,
            path: "data/ltigate.db".into(),
            timeout: "2s".into(),
        }
    }
}

/// `[webhook]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWebhook {
    /// HMAC key of completion webhooks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<RawSecret>,
    /// File holding it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// Accepted age of a signature.
    pub tolerance: Quantity,
    /// Largest webhook body.
    pub max_body: Quantity,
}

impl Default for RawWebhook {
    fn default() -> Self {
        RawWebhook {
            secret: None,
            secret_file: None,
            tolerance: "300s".into(),
            max_body: "64KiB".into(),
        }
    }
}

/// `[outcomes]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOutcomes {
    /// Attempts before a dead letter.
    pub max_attempts: u32,
    /// First retry delay.
    pub retry_initial: Quantity,
    /// Largest retry delay.
    pub retry_max: Quantity,
    /// Lease of a job being delivered.
    pub lease: Quantity,
    /// Timeout of one delivery.
    pub timeout: Quantity,
    /// Allow http and private/loopback outcome URLs.
    pub allow_insecure_targets: bool,
}

impl Default for RawOutcomes {
    fn default() -> Self {
        RawOutcomes {
            max_attempts: 12,
            retry_initial: "2s".into(),
            retry_max: "10m".into(),
            lease: "60s".into(),
            timeout: "30s".into(),
            allow_insecure_targets: false,
        }
    }
}

/// `[licences]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLicences {
    /// Staff subscriptions count against `max_licences`.
    pub count_staff: bool,
}

/// `[cartridge]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCartridge {
    /// Tool title shown in the LMS.
    pub title: String,
    /// Tool description.
    pub description: String,
}

impl Default for RawCartridge {
    fn default() -> Self {
        RawCartridge {
            title: "Learning platform".into(),
            description: String::new(),
        }
    }
}

/// `[[consumers]]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConsumer {
    /// Display name; the metric label.
    pub name: String,
    /// `oauth_consumer_key`.
    pub key: String,
    /// Shared secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<RawSecret>,
    /// Several secrets (rotation), newest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<RawSecret>,
    /// File holding the secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// Namespace of this LMS's learners.
    pub lms_id: String,
    /// Upstream sub-environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Cap on (course, learner) subscriptions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_licences: Option<u64>,
    /// Allowed outcome URL hosts.
    pub outcome_hosts: Vec<String>,
}

/// `[courses.<id>]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCourse {
    /// Activity whose result is the course grade.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grade_activity: Option<String>,
    /// Landing path of this course.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub landing_path: Option<String>,
}

/// The whole file, as written.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `[server]`
    pub server: RawServer,
    /// `[upstream]`
    pub upstream: RawUpstream,
    /// `[launch]`
    pub launch: RawLaunch,
    /// `[session]`
    pub session: RawSession,
    /// `[store]`
    pub store: RawStore,
    /// `[webhook]`
    pub webhook: RawWebhook,
    /// `[outcomes]`
    pub outcomes: RawOutcomes,
    /// `[licences]`
    pub licences: RawLicences,
    /// `[cartridge]`
    pub cartridge: RawCartridge,
    /// `[[consumers]]`
    pub consumers: Vec<RawConsumer>,
    /// `[courses.<id>]`
    pub courses: BTreeMap<String, RawCourse>,
}

// ---------------------------------------------------------------------------
// Validated settings
// ---------------------------------------------------------------------------

/// The public origin and path prefix the LMS uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicUrl {
    /// `http` or `https`.
    pub scheme: String,
    /// Lowercased host (IPv6 in brackets).
    pub host: String,
    /// Explicit non-default port.
    pub port: Option<u16>,
    /// Path prefix without trailing slash (`""` or `/lms`).
    pub prefix: String,
}

impl PublicUrl {
    /// `scheme://host[:port]`.
    pub fn origin(&self) -> String {
        match self.port {
            Some(p) => format!("{}://{}:{}", self.scheme, self.host, p),
            None => format!("{}://{}", self.scheme, self.host),
        }
    }

    /// The public URL of a path below the prefix (`path` starts with `/`).
    pub fn url_for(&self, path: &str) -> String {
        format!("{}{}{}", self.origin(), self.prefix, path)
    }

    /// True for https.
    pub fn is_https(&self) -> bool {
        self.scheme == "https"
    }
}

/// `[server]`, validated.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Public listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Public URL.
    pub public_url: PublicUrl,
    /// See [`RawServer::trust_forwarded_headers`].
    pub trust_forwarded_headers: bool,
    /// See [`RawServer::public_paths`].
    pub public_paths: Vec<String>,
    /// See [`RawServer::frame_ancestors`].
    pub frame_ancestors: Vec<String>,
    /// See [`RawServer::max_connections`].
    pub max_connections: usize,
    /// See [`RawServer::header_read_timeout`].
    pub header_read_timeout: Duration,
    /// See [`RawServer::send_timeout`].
    pub send_timeout: Duration,
    /// See [`RawServer::max_header_bytes`].
    pub max_header_bytes: usize,
    /// See [`RawServer::shutdown_grace`].
    pub shutdown_grace: Duration,
    /// See [`RawServer::access_log`].
    pub access_log: bool,
}

/// `[upstream]`, validated.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    /// Browser traffic target, without trailing slash.
    pub url: String,
    /// API base, without trailing slash.
    pub api_url: String,
    /// Bearer token.
    pub api_token: Option<Secret>,
    /// Per-call timeout.
    pub api_timeout: Duration,
    /// Retries.
    pub api_retries: u32,
    /// Template.
    pub user_path: String,
    /// Template.
    pub subscription_path: String,
    /// Template.
    pub landing_path: String,
    /// Pattern, `None` when empty.
    pub course_path: Option<String>,
    /// Pass `Host`.
    pub pass_host_header: bool,
    /// Proxy timeout: for the response head, and between two pieces of a
    /// response body.
    pub timeout: Duration,
}

/// `[launch]`, validated.
#[derive(Clone, Debug)]
pub struct LaunchSettings {
    /// Clock skew.
    pub max_clock_skew: Duration,
    /// Separator.
    pub id_separator: String,
}

/// `[session]`, validated.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// The current key; `None` on the embedded store means "generate one
    /// beside the database".
    pub secret: Option<Secret>,
    /// Older keys.
    pub previous_secrets: Vec<Secret>,
    /// Cookie name.
    pub cookie_name: String,
    /// Identity header prefix.
    pub header_prefix: String,
    /// Lifetime.
    pub ttl: Duration,
    /// Idle lifetime.
    pub idle_ttl: Duration,
    /// Courses kept.
    pub max_courses: usize,
    /// CHIPS.
    pub partitioned: bool,
    /// CSRF guard.
    pub csrf: bool,
    /// Rewrite upstream cookies.
    pub rewrite_upstream_cookies: bool,
    /// Unix seconds; older sessions are rejected.
    pub not_before: Option<u64>,
}

/// Which store backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSettings {
    /// File-backed embedded database.
    Embedded {
        /// Database file.
        path: PathBuf,
    },
    /// Redis standalone or Cluster.
    Redis {
        /// One URL, or the seed nodes of a Cluster.
        urls: Vec<String>,
        /// Cluster mode.
        cluster: bool,
        /// Per-operation timeout.
        timeout: Duration,
    },
}

/// `[webhook]`, validated.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// Key; `None`: every webhook gets 401.
    pub secret: Option<Secret>,
    /// Signature age.
    pub tolerance: Duration,
    /// Body limit.
    pub max_body: usize,
}

/// `[outcomes]`, validated.
#[derive(Clone, Debug)]
pub struct OutcomeSettings {
    /// Attempts.
    pub max_attempts: u32,
    /// First delay.
    pub retry_initial: Duration,
    /// Largest delay.
    pub retry_max: Duration,
    /// Lease.
    pub lease: Duration,
    /// Delivery timeout.
    pub timeout: Duration,
    /// Dev switch.
    pub allow_insecure_targets: bool,
}

/// One LTI consumer.
#[derive(Clone, Debug)]
pub struct Consumer {
    /// Name (metric label).
    pub name: String,
    /// Key.
    pub key: String,
    /// Secrets, newest first.
    pub secrets: Vec<Secret>,
    /// Namespace.
    pub lms_id: String,
    /// Environment.
    pub environment: Option<String>,
    /// Cap.
    pub max_licences: Option<u64>,
    /// Allowlist.
    pub outcome_hosts: Vec<String>,
}

/// One configured course.
#[derive(Clone, Debug, Default)]
pub struct Course {
    /// Grade activity.
    pub grade_activity: Option<String>,
    /// Landing path.
    pub landing_path: Option<String>,
}

/// Everything ltigate runs on, validated.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `[server]`
    pub server: ServerSettings,
    /// `[upstream]`
    pub upstream: UpstreamSettings,
    /// `[launch]`
    pub launch: LaunchSettings,
    /// `[session]`
    pub session: SessionSettings,
    /// `[store]`
    pub store: StoreSettings,
    /// `[webhook]`
    pub webhook: WebhookSettings,
    /// `[outcomes]`
    pub outcomes: OutcomeSettings,
    /// `[licences] count_staff`
    pub count_staff: bool,
    /// `[cartridge]`
    pub cartridge: RawCartridge,
    /// `[[consumers]]`
    pub consumers: Vec<Consumer>,
    /// `[courses]`
    pub courses: BTreeMap<String, Course>,
}

/// Longest shared secret every LMS keeps whole: Brightspace (D2L) keeps the
/// first 100 characters of a pasted secret and signs with those.
pub const MAX_PORTABLE_SECRET: usize = 100;

impl Settings {
    /// What is valid but likely wrong, one line each, for `check-config`
    /// and the start-up log.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.consumers {
            for (i, secret) in c.secrets.iter().enumerate() {
                let len = secret.expose().len();
                if len > MAX_PORTABLE_SECRET {
                    out.push(format!(
                        "consumer {:?}: secret {} is {len} characters; Brightspace keeps only the first {MAX_PORTABLE_SECRET} of a pasted secret, so its launches would fail as bad_signature",
                        c.name,
                        i + 1
                    ));
                }
            }
        }
        out
    }

    /// The consumer with this `oauth_consumer_key`.
    pub fn consumer_by_key(&self, key: &str) -> Option<&Consumer> {
        self.consumers.iter().find(|c| c.key == key)
    }

    /// The consumer with this name.
    pub fn consumer_by_name(&self, name: &str) -> Option<&Consumer> {
        self.consumers.iter().find(|c| c.name == name)
    }

    /// The consumer whose learners carry this `lms_id`.
    pub fn consumer_by_lms_id(&self, lms_id: &str) -> Option<&Consumer> {
        self.consumers.iter().find(|c| c.lms_id == lms_id)
    }
}

/// Configuration problems, one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(p)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/// Reads the configuration: defaults → file → environment.
///
/// `path = None` reads [`DEFAULT_CONFIG_PATH`] when it exists. An explicit
/// path that does not exist is an error.
pub fn load_raw(path: Option<&Path>) -> Result<RawConfig, ConfigError> {
    load_raw_from(path, std::env::vars())
}

/// [`load_raw`] with an explicit environment (tests).
pub fn load_raw_from(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<RawConfig, ConfigError> {
    let mut figment = Figment::new();
    match path {
        Some(p) => {
            if !p.is_file() {
                return Err(ConfigError(vec![format!(
                    "config file {}: not found",
                    p.display()
                )]));
            }
            figment = figment.merge(Toml::file(p));
        }
        None => {
            let p = Path::new(DEFAULT_CONFIG_PATH);
            if p.is_file() {
                figment = figment.merge(Toml::file(p));
            }
        }
    }
    // figment's Env reads the process environment; build the equivalent
    // explicitly so tests can pass their own.
    let mut env_toml = toml::Table::new();
    let mut problems = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("LTIGATE_") else {
            continue;
        };
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(|s| s.is_empty()) {
            problems.push(format!("{name}: malformed variable name"));
            continue;
        }
        insert_env_value(&mut env_toml, &path, parse_env_value(&value));
    }
    if !problems.is_empty() {
        return Err(ConfigError(problems));
    }
    figment = figment.merge(Toml::string(&env_toml.to_string()));
    figment.extract::<RawConfig>().map_err(figment_errors)
}

/// Environment values: TOML scalars and arrays where they parse, else strings.
fn parse_env_value(value: &str) -> toml::Value {
    let trimmed = value.trim();
    if trimmed.starts_with('[') {
        if let Ok(t) = format!("v = {trimmed}").parse::<toml::Table>() {
            if let Some(v) = t.get("v") {
                return v.clone();
            }
        }
    }
    match trimmed {
        "true" => return toml::Value::Boolean(true),
        "false" => return toml::Value::Boolean(false),
        _ => {}
    }
    if let Ok(n) = trimmed.parse::<i64>() {
        return toml::Value::Integer(n);
    }
    toml::Value::String(value.to_string())
}

fn insert_env_value(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(t) = entry {
                insert_env_value(t, rest, value);
            }
        }
    }
}

fn figment_errors(err: figment::Error) -> ConfigError {
    let mut lines = Vec::new();
    for e in err {
        let path = e.path.join(".");
        let source = e
            .metadata
            .as_ref()
            .and_then(|m| m.source.as_ref())
            .map(|s| format!(" (in {s})"))
            .unwrap_or_default();
        let what = match &e.kind {
            figment::error::Kind::UnknownField(field, _) => {
                // The path already ends with the unknown field when known.
                let full = if path.is_empty() {
                    field.clone()
                } else if path.ends_with(field.as_str()) {
                    path.clone()
                } else {
                    format!("{path}.{field}")
                };
                lines.push(format!("{full}: unknown key{source}"));
                continue;
            }
            other => other.to_string(),
        };
        if path.is_empty() {
            lines.push(format!("{what}{source}"));
        } else {
            lines.push(format!("{path}: {what}{source}"));
        }
    }
    if lines.is_empty() {
        lines.push("invalid configuration".into());
    }
    ConfigError(lines)
}

/// Loads and validates: what `serve` and `check-config` call.
pub fn load(path: Option<&Path>) -> Result<(RawConfig, Settings), ConfigError> {
    let raw = load_raw(path)?;
    let settings = validate(&raw)?;
    Ok((raw, settings))
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// Parses `300ms`, `300s`, `8h`, `1h 30m`, or a bare number of seconds.
pub fn parse_duration(q: &Quantity) -> Result<Duration, String> {
    match q {
        Quantity::Number(n) => Ok(Duration::from_secs(*n)),
        Quantity::Text(t) => {
            let t = t.trim();
            if let Ok(n) = t.parse::<u64>() {
                return Ok(Duration::from_secs(n));
            }
            humantime::parse_duration(t).map_err(|_| {
                format!("`{t}` is not a duration (examples: \"300ms\", \"30s\", \"8h\")")
            })
        }
    }
}

/// Parses `32KiB`, `64KB`, `1MiB`, `512`, or a bare number of bytes.
pub fn parse_size(q: &Quantity) -> Result<usize, String> {
    let bad = |t: &str| format!("`{t}` is not a size (examples: \"64KiB\", \"1MiB\", \"4096\")");
    match q {
        Quantity::Number(n) => usize::try_from(*n).map_err(|_| bad(&n.to_string())),
        Quantity::Text(t) => {
            let t = t.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let n: usize = num.parse().map_err(|_| bad(t))?;
            let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "k" | "kb" => 1000,
                "kib" => 1024,
                "m" | "mb" => 1_000_000,
                "mib" => 1024 * 1024,
                _ => return Err(bad(t)),
            };
            n.checked_mul(mult).ok_or_else(|| bad(t))
        }
    }
}

/// Parses the `server.public_url`.
pub fn parse_public_url(url: &str) -> Result<PublicUrl, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not an absolute http(s) URL"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!("`{url}`: scheme must be http or https"));
    }
    if rest.contains(['?', '#']) {
        return Err(format!("`{url}`: must not carry a query or fragment"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("`{url}`: missing or invalid host"));
    }
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        let end = stripped
            .find(']')
            .ok_or_else(|| format!("`{url}`: invalid IPv6 host"))?;
        let host = &authority[..end + 2];
        let after = &stripped[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("`{url}`: invalid host")),
        };
        (host.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("`{url}`: missing host"));
    }
    let port = match port {
        None => None,
        Some(p) => {
            let n: u16 = p
                .parse()
                .ok()
                .filter(|n| *n != 0)
                .ok_or_else(|| format!("`{url}`: invalid port"))?;
            let default = if scheme == "https" { 443 } else { 80 };
            (n != default).then_some(n)
        }
    };
    let prefix = path.trim_end_matches('/').to_string();
    Ok(PublicUrl {
        scheme,
        host: host.to_ascii_lowercase(),
        port,
        prefix,
    })
}

/// Reads a `*_file` secret: trailing newline(s) trimmed, `base64:` decoded.
fn read_secret_file(path: &str) -> Result<Secret, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    let mut end = bytes.len();
    while end > 0 && (bytes[end - 1] == b'\n' || bytes[end - 1] == b'\r') {
        end -= 1;
    }
    let bytes = &bytes[..end];
    match std::str::from_utf8(bytes) {
        Ok(text) if text.starts_with("base64:") => Secret::parse(text),
        _ => Ok(Secret::new(bytes)),
    }
}

/// A secret read from a file's line, with the line's number (from 1).
type NumberedSecret = (usize, Result<Secret, String>);

/// Reads a file of secrets, one a line, newest first (a rotation): blank
/// lines skipped, a line's `\r` dropped, each line read as
/// [`read_secret_file`] reads a whole file. Each secret comes with its line
/// number, so a bad one can be named.
fn read_secret_lines(path: &str) -> Result<Vec<NumberedSecret>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    Ok(bytes
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| {
            let secret = match std::str::from_utf8(line) {
                Ok(text) if text.starts_with("base64:") => Secret::parse(text),
                _ => Ok(Secret::new(line)),
            };
            (i + 1, secret)
        })
        .collect())
}

/// Resolves an inline secret and its `_file` twin (at most one of them).
fn resolve_secret(
    key: &str,
    inline: Option<&RawSecret>,
    file: Option<&String>,
    problems: &mut Vec<String>,
) -> Option<Secret> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            problems.push(format!("{key}: set either {key} or {key}_file, not both"));
            None
        }
        (Some(s), None) => match Secret::parse(&s.0) {
            Ok(s) => Some(s),
            Err(e) => {
                problems.push(format!("{key}: {e}"));
                None
            }
        },
        (None, Some(f)) => match read_secret_file(f) {
            Ok(s) => Some(s),
            Err(e) => {
                problems.push(format!("{key}_file: {e}"));
                None
            }
        },
        (None, None) => None,
    }
}

struct Check<'a> {
    problems: &'a mut Vec<String>,
}

impl Check<'_> {
    fn duration(&mut self, key: &str, q: &Quantity) -> Duration {
        parse_duration(q).unwrap_or_else(|e| {
            self.problems.push(format!("{key}: {e}"));
            Duration::ZERO
        })
    }

    fn size(&mut self, key: &str, q: &Quantity) -> usize {
        parse_size(q).unwrap_or_else(|e| {
            self.problems.push(format!("{key}: {e}"));
            0
        })
    }

    fn addr(&mut self, key: &str, s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|_| {
            self.problems.push(format!(
                "{key}: `{s}` is not an address:port (example: \"0.0.0.0:8080\")"
            ));
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    fn http_url(&mut self, key: &str, s: &str) -> String {
        let ok = (s.starts_with("http://") || s.starts_with("https://"))
            && s.split_once("://")
                .map(|(_, r)| !r.is_empty() && !r.starts_with('/'))
                .unwrap_or(false);
        if !ok {
            self.problems
                .push(format!("{key}: `{s}` is not an absolute http(s) URL"));
        }
        s.trim_end_matches('/').to_string()
    }

    fn path_template(&mut self, key: &str, s: &str, allowed: &[&str]) {
        if !s.starts_with('/') {
            self.problems
                .push(format!("{key}: `{s}` must start with `/`"));
        }
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                self.problems.push(format!("{key}: unclosed `{{` in `{s}`"));
                return;
            };
            let name = &rest[open + 1..open + close];
            if !allowed.contains(&name) {
                self.problems.push(format!(
                    "{key}: unknown placeholder `{{{name}}}` (allowed: {})",
                    allowed
                        .iter()
                        .map(|a| format!("{{{a}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            rest = &rest[open + close + 1..];
        }
    }
}

/// Validates a raw configuration into [`Settings`], collecting every problem.
pub fn validate(raw: &RawConfig) -> Result<Settings, ConfigError> {
    let mut problems = Vec::new();
    let mut c = Check {
        problems: &mut problems,
    };

    // [server]
    let listen = c.addr("server.listen", &raw.server.listen);
    let admin_listen = c.addr("server.admin_listen", &raw.server.admin_listen);
    let public_url = if raw.server.public_url.trim().is_empty() {
        c.problems.push(
            "server.public_url: required (the base URL the LMS launches, e.g. \"https://learn.example.com\")"
                .into(),
        );
        None
    } else {
        match parse_public_url(raw.server.public_url.trim()) {
            Ok(u) => Some(u),
            Err(e) => {
                c.problems.push(format!("server.public_url: {e}"));
                None
            }
        }
    };
    for p in &raw.server.public_paths {
        if !p.starts_with('/') {
            c.problems
                .push(format!("server.public_paths: `{p}` must start with `/`"));
        }
    }
    if raw.server.max_connections == 0 {
        c.problems
            .push("server.max_connections: must be at least 1".into());
    }
    let header_read_timeout = c.duration(
        "server.header_read_timeout",
        &raw.server.header_read_timeout,
    );
    let send_timeout = c.duration("server.send_timeout", &raw.server.send_timeout);
    if send_timeout.is_zero() && parse_duration(&raw.server.send_timeout).is_ok() {
        c.problems
            .push("server.send_timeout: must be longer than 0s".into());
    }
    let max_header_bytes = c.size("server.max_header_bytes", &raw.server.max_header_bytes);
    if max_header_bytes != 0 && max_header_bytes < 1024 {
        c.problems
            .push("server.max_header_bytes: must be at least 1KiB".into());
    }
    let shutdown_grace = c.duration("server.shutdown_grace", &raw.server.shutdown_grace);

    // [upstream]
    let up = &raw.upstream;
    let url = c.http_url("upstream.url", &up.url);
    let api_url = c.http_url("upstream.api_url", &up.api_url);
    c.path_template("upstream.user_path", &up.user_path, &["external_id"]);
    c.path_template(
        "upstream.subscription_path",
        &up.subscription_path,
        &["course", "external_id"],
    );
    c.path_template("upstream.landing_path", &up.landing_path, &["course"]);
    let course_path = if up.course_path.is_empty() {
        None
    } else {
        c.path_template("upstream.course_path", &up.course_path, &["course"]);
        if !up.course_path.contains("{course}") {
            c.problems
                .push("upstream.course_path: must contain `{course}`".into());
        }
        Some(up.course_path.clone())
    };
    let api_timeout = c.duration("upstream.api_timeout", &up.api_timeout);
    let api_token = resolve_secret(
        "upstream.api_token",
        up.api_token.as_ref(),
        up.api_token_file.as_ref(),
        c.problems,
    );
    let timeout = c.duration("upstream.timeout", &up.timeout);
    if up.api_retries > 10 {
        c.problems.push("upstream.api_retries: at most 10".into());
    }

    // [launch]
    let max_clock_skew = c.duration("launch.max_clock_skew", &raw.launch.max_clock_skew);
    if raw.launch.id_separator.is_empty() {
        c.problems
            .push("launch.id_separator: must not be empty".into());
    }

    // [session]
    let s = &raw.session;
    let ttl = c.duration("session.ttl", &s.ttl);
    let idle_ttl = c.duration("session.idle_ttl", &s.idle_ttl);
    if ttl.is_zero() || idle_ttl.is_zero() {
        c.problems
            .push("session.ttl / session.idle_ttl: must be longer than zero".into());
    }
    if s.max_courses == 0 || s.max_courses > 50 {
        c.problems.push(
            "session.max_courses: must be between 1 and 50 (the cookie must stay under 4 KB)"
                .into(),
        );
    }
    if !is_token(&s.cookie_name) {
        c.problems.push(format!(
            "session.cookie_name: `{}` is not a valid cookie name",
            s.cookie_name
        ));
    }
    if s.cookie_name.starts_with("__Host-") || s.cookie_name.starts_with("__Secure-") {
        if let Some(u) = &public_url {
            if !u.is_https() && !is_local_host(&u.host) {
                c.problems.push(format!(
                    "session.cookie_name: `{}` needs Secure cookies, which browsers only keep on https (or localhost); use https in server.public_url or another cookie name",
                    s.cookie_name
                ));
            }
        }
    }
    if s.header_prefix.is_empty() || !is_token(&s.header_prefix) {
        c.problems
            .push("session.header_prefix: must be a non-empty header name prefix".into());
    }
    let not_before = if s.not_before.trim().is_empty() {
        None
    } else {
        match humantime::parse_rfc3339_weak(s.not_before.trim()) {
            Ok(t) => t
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs()),
            Err(_) => {
                c.problems.push(format!(
                    "session.not_before: `{}` is not an RFC 3339 timestamp (example: \"2026-01-31T12:00:00Z\")",
                    s.not_before
                ));
                None
            }
        }
    };
    let session_secret = resolve_secret(
        "session.secret",
        s.secret.as_ref(),
        s.secret_file.as_ref(),
        c.problems,
    );
    if let Some(k) = &session_secret {
        if k.len() < MIN_SESSION_KEY {
            c.problems.push(format!(
                "session.secret: must be at least {MIN_SESSION_KEY} bytes (got {})",
                k.len()
            ));
        }
    }
    let mut previous_secrets = Vec::new();
    for (i, p) in s.previous_secrets.iter().enumerate() {
        match Secret::parse(&p.0) {
            Ok(k) if k.len() >= MIN_SESSION_KEY => previous_secrets.push(k),
            Ok(_) => c.problems.push(format!(
                "session.previous_secrets[{i}]: must be at least {MIN_SESSION_KEY} bytes"
            )),
            Err(e) => c
                .problems
                .push(format!("session.previous_secrets[{i}]: {e}")),
        }
    }
    if let Some(f) = &s.previous_secrets_file {
        match read_secret_lines(f) {
            Ok(lines) => {
                for (n, line) in lines {
                    match line {
                        Ok(k) if k.len() >= MIN_SESSION_KEY => previous_secrets.push(k),
                        Ok(_) => c.problems.push(format!(
                            "session.previous_secrets_file: line {n}: must be at least {MIN_SESSION_KEY} bytes"
                        )),
                        Err(e) => c
                            .problems
                            .push(format!("session.previous_secrets_file: line {n}: {e}")),
                    }
                }
            }
            Err(e) => c
                .problems
                .push(format!("session.previous_secrets_file: {e}")),
        }
    }

    // [store]
    let urls: Vec<String> = match &raw.store.url {
        OneOrMany::One(s) => s
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect(),
        OneOrMany::Many(v) => v
            .iter()
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect(),
    };
    let store_timeout = c.duration("store.timeout", &raw.store.timeout);
    let store = if urls.is_empty() {
        if raw.store.cluster {
            c.problems
                .push("store.cluster: needs store.url (the Cluster's seed nodes)".into());
        }
        if raw.store.path.trim().is_empty() {
            c.problems
                .push("store.path: required for the embedded store".into());
        }
        StoreSettings::Embedded {
            path: PathBuf::from(&raw.store.path),
        }
    } else {
        for u in &urls {
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                c.problems.push(format!(
                    "store.url: `{}` must start with redis:// or rediss://",
                    redact_url(u)
                ));
            } else if redis::parse_redis_url(u).is_none() {
                c.problems.push(format!(
                    "store.url: `{}` is not a valid Redis URL",
                    redact_url(u)
                ));
            }
        }
        if urls.len() > 1 && !raw.store.cluster {
            c.problems.push(
                "store.url: several URLs name a Redis Cluster; set store.cluster = true".into(),
            );
        }
        if session_secret.is_none() {
            c.problems.push(
                "session.secret: required with Redis (every replica must share the session key); set session.secret or session.secret_file"
                    .into(),
            );
        }
        StoreSettings::Redis {
            urls,
            cluster: raw.store.cluster,
            timeout: store_timeout,
        }
    };

    // [webhook]
    let w = &raw.webhook;
    let webhook_secret = resolve_secret(
        "webhook.secret",
        w.secret.as_ref(),
        w.secret_file.as_ref(),
        c.problems,
    );
    if webhook_secret.as_ref().is_some_and(|s| s.len() < 16) {
        c.problems
            .push("webhook.secret: must be at least 16 bytes".into());
    }
    let tolerance = c.duration("webhook.tolerance", &w.tolerance);
    let max_body = c.size("webhook.max_body", &w.max_body);

    // [outcomes]
    let o = &raw.outcomes;
    if o.max_attempts == 0 {
        c.problems
            .push("outcomes.max_attempts: must be at least 1".into());
    }
    let retry_initial = c.duration("outcomes.retry_initial", &o.retry_initial);
    let retry_max = c.duration("outcomes.retry_max", &o.retry_max);
    if retry_max < retry_initial {
        c.problems
            .push("outcomes.retry_max: must not be shorter than outcomes.retry_initial".into());
    }
    let lease = c.duration("outcomes.lease", &o.lease);
    let outcome_timeout = c.duration("outcomes.timeout", &o.timeout);
    if lease <= outcome_timeout {
        c.problems.push(
            "outcomes.lease: must be longer than outcomes.timeout (a lease must outlive a delivery)"
                .into(),
        );
    }

    // [[consumers]]
    let mut consumers = Vec::new();
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    let mut lms_ids = HashSet::new();
    for (i, rc) in raw.consumers.iter().enumerate() {
        let at = format!("consumers[{i}]");
        if rc.name.trim().is_empty() {
            c.problems.push(format!("{at}.name: required"));
        } else if !names.insert(rc.name.clone()) {
            c.problems
                .push(format!("{at}.name: `{}` is used twice", rc.name));
        }
        if rc.key.is_empty() {
            c.problems.push(format!("{at}.key: required"));
        } else if !keys.insert(rc.key.clone()) {
            c.problems
                .push(format!("{at}.key: `{}` is used twice", rc.key));
        }
        if rc.lms_id.is_empty() {
            c.problems.push(format!("{at}.lms_id: required"));
        } else if !lms_ids.insert(rc.lms_id.clone()) {
            c.problems.push(format!(
                "{at}.lms_id: `{}` is used twice (it must namespace one LMS)",
                rc.lms_id
            ));
        } else if !raw.launch.id_separator.is_empty()
            && rc.lms_id.contains(&raw.launch.id_separator)
        {
            c.problems.push(format!(
                "{at}.lms_id: `{}` must not contain launch.id_separator `{}`",
                rc.lms_id, raw.launch.id_separator
            ));
        }
        let mut secrets = Vec::new();
        let given = usize::from(rc.secret.is_some())
            + usize::from(!rc.secrets.is_empty())
            + usize::from(rc.secret_file.is_some());
        if given > 1 {
            c.problems
                .push(format!("{at}: set one of secret, secrets or secret_file"));
        }
        if let Some(s) = resolve_secret(
            &format!("{at}.secret"),
            rc.secret.as_ref(),
            None,
            c.problems,
        ) {
            secrets.push(s);
        }
        for (j, s) in rc.secrets.iter().enumerate() {
            match Secret::parse(&s.0) {
                Ok(s) => secrets.push(s),
                Err(e) => c.problems.push(format!("{at}.secrets[{j}]: {e}")),
            }
        }
        if let Some(f) = &rc.secret_file {
            // One secret, or several during a rotation: one a line, newest first.
            match read_secret_lines(f) {
                Ok(lines) if lines.is_empty() => c
                    .problems
                    .push(format!("{at}.secret_file: `{f}` holds no secret")),
                Ok(lines) => {
                    for (n, line) in lines {
                        match line {
                            Ok(s) => secrets.push(s),
                            Err(e) => c.problems.push(format!("{at}.secret_file: line {n}: {e}")),
                        }
                    }
                }
                Err(e) => c.problems.push(format!("{at}.secret_file: {e}")),
            }
        }
        if given == 0 {
            c.problems.push(format!(
                "{at}: a secret is required (secret, secrets or secret_file)"
            ));
        }
        if secrets.iter().any(|s| s.is_empty()) {
            c.problems.push(format!("{at}: secrets must not be empty"));
        }
        if rc.max_licences == Some(0) {
            c.problems.push(format!(
                "{at}.max_licences: 0 would refuse every learner; omit it for no cap"
            ));
        }
        consumers.push(Consumer {
            name: rc.name.clone(),
            key: rc.key.clone(),
            secrets,
            lms_id: rc.lms_id.clone(),
            environment: rc.environment.clone().filter(|e| !e.is_empty()),
            max_licences: rc.max_licences,
            outcome_hosts: rc
                .outcome_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        });
    }

    // [courses]
    let mut courses = BTreeMap::new();
    for (id, rc) in &raw.courses {
        if let Some(lp) = &rc.landing_path {
            if !lp.starts_with('/') {
                c.problems.push(format!(
                    "courses.{id}.landing_path: `{lp}` must start with `/`"
                ));
            }
        }
        courses.insert(
            id.clone(),
            Course {
                grade_activity: rc.grade_activity.clone(),
                landing_path: rc.landing_path.clone(),
            },
        );
    }

    let Some(public_url) = public_url else {
        return Err(ConfigError(problems));
    };
    if !problems.is_empty() {
        return Err(ConfigError(problems));
    }

    Ok(Settings {
        server: ServerSettings {
            listen,
            admin_listen,
            public_url,
            trust_forwarded_headers: raw.server.trust_forwarded_headers,
            public_paths: raw.server.public_paths.clone(),
            frame_ancestors: raw.server.frame_ancestors.clone(),
            max_connections: raw.server.max_connections,
            header_read_timeout,
            send_timeout,
            max_header_bytes,
            shutdown_grace,
            access_log: raw.server.access_log,
        },
        upstream: UpstreamSettings {
            url,
            api_url,
            api_token,
            api_timeout,
            api_retries: up.api_retries,
            user_path: up.user_path.clone(),
            subscription_path: up.subscription_path.clone(),
            landing_path: up.landing_path.clone(),
            course_path,
            pass_host_header: up.pass_host_header,
            timeout,
        },
        launch: LaunchSettings {
            max_clock_skew,
            id_separator: raw.launch.id_separator.clone(),
        },
        session: SessionSettings {
            secret: session_secret,
            previous_secrets,
            cookie_name: s.cookie_name.clone(),
            header_prefix: s.header_prefix.clone(),
            ttl,
            idle_ttl,
            max_courses: s.max_courses,
            partitioned: s.partitioned,
            csrf: s.csrf,
            rewrite_upstream_cookies: s.rewrite_upstream_cookies,
            not_before,
        },
        store,
        webhook: WebhookSettings {
            secret: webhook_secret,
            tolerance,
            max_body,
        },
        outcomes: OutcomeSettings {
            max_attempts: o.max_attempts,
            retry_initial,
            retry_max,
            lease,
            timeout: outcome_timeout,
            allow_insecure_targets: o.allow_insecure_targets,
        },
        count_staff: raw.licences.count_staff,
        cartridge: raw.cartridge.clone(),
        consumers,
        courses,
    })
}

/// The effective configuration as TOML, every secret shown as `[redacted]`
/// and passwords in Redis URLs masked.
pub fn render_redacted(raw: &RawConfig) -> String {
    let mut shown = raw.clone();
    shown.store.url = match &raw.store.url {
        OneOrMany::One(s) => OneOrMany::One(
            s.split(',')
                .map(|u| redact_url(u.trim()))
                .collect::<Vec<_>>()
                .join(","),
        ),
        OneOrMany::Many(v) => OneOrMany::Many(v.iter().map(|u| redact_url(u)).collect()),
    };
    toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
}

/// Masks the password of a `scheme://user:password@host` URL.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:[redacted]")
            } else {
                "[redacted]".to_string()
            };
            format!("{scheme}://{masked}{}", &rest[at..])
        }
        None => url.to_string(),
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_local_host(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost") || host == "127.0.0.1" || host == "[::1]"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_from(toml_text: &str, env: &[(&str, &str)]) -> Result<RawConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, toml_text).unwrap();
        load_raw_from(
            Some(&p),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    const MIN: &str = r#"
[server]
public_url = "https://learn.example.com/lti-prefix/"
[[consumers]]
name = "Acme"
key = "acme-key"
secret = "s3cret"
lms_id = "acme"
"#;

    #[test]
    fn minimal_config_validates_with_defaults() {
        let raw = raw_from(MIN, &[]).unwrap();
        let s = validate(&raw).unwrap();
        assert_eq!(s.server.public_url.prefix, "/lti-prefix");
        assert_eq!(s.server.public_url.origin(), "https://learn.example.com");
        assert_eq!(s.server.max_header_bytes, 32 * 1024);
        assert_eq!(s.session.ttl, Duration::from_secs(8 * 3600));
        assert_eq!(s.launch.max_clock_skew, Duration::from_secs(300));
        assert!(matches!(s.store, StoreSettings::Embedded { .. }));
        assert_eq!(s.consumers[0].secrets[0].expose(), b"s3cret");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let err = raw_from(&format!("{MIN}\n[session]\nttll = \"1h\"\n"), &[]).unwrap_err();
        assert!(
            err.0
                .iter()
                .any(|l| l.starts_with("session.ttll: unknown key")),
            "{err}"
        );
        let err = raw_from(
            "[server]\npublic_url = \"https://x\"\n[[consumers]]\nname=\"a\"\nkey=\"k\"\nsecret=\"s\"\nlms_id=\"a\"\nlms=\"x\"\n",
            &[],
        )
        .unwrap_err();
        assert!(
            err.0.iter().any(|l| l.contains("lms: unknown key")),
            "{err}"
        );
    }

    #[test]
    fn environment_overrides_with_double_underscore_only() {
        let raw = raw_from(
            MIN,
            &[
                ("LTIGATE_STORE__URL", "redis://127.0.0.1:6379"),
                ("LTIGATE_SESSION__MAX_COURSES", "7"),
                ("LTIGATE_SERVER__PUBLIC_PATHS", "[\"/static/\"]"),
                ("LTIGATE_PORT", "tcp://10.0.0.1:8080"),
                ("LTIGATE_SERVICE_HOST", "10.0.0.1"),
            ],
        )
        .unwrap();
        assert_eq!(raw.session.max_courses, 7);
        assert_eq!(raw.server.public_paths, vec!["/static/".to_string()]);
        // Redis without a session secret is a configuration error.
        let err = validate(&raw).unwrap_err();
        assert!(err
            .0
            .iter()
            .any(|l| l.starts_with("session.secret: required with Redis")));
    }

    #[test]
    fn secret_files_hold_a_rotation_one_secret_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let consumer = write("consumer", "new-secret\r\n\nbase64:b2xkLXNlY3JldA==\n");
        let previous = write(
            "previous",
            &format!("{}\n\n{}\r\n", "p".repeat(32), "q".repeat(40)),
        );
        let config = |consumer: &str, previous: &str| {
            format!(
                "[server]\npublic_url = \"https://x.example\"\n[session]\nsecret = \"{}\"\n\
                 previous_secrets_file = \"{previous}\"\n\
                 [[consumers]]\nname=\"a\"\nkey=\"k\"\nsecret_file=\"{consumer}\"\nlms_id=\"a\"\n",
                "s".repeat(32)
            )
        };
        let s = validate(&raw_from(&config(&consumer, &previous), &[]).unwrap()).unwrap();
        let secrets: Vec<&[u8]> = s.consumers[0].secrets.iter().map(|s| s.expose()).collect();
        assert_eq!(secrets, [&b"new-secret"[..], b"old-secret"]);
        let previous: Vec<usize> = s.session.previous_secrets.iter().map(|k| k.len()).collect();
        assert_eq!(previous, [32, 40]);

        // Bad lines are named by their number; an empty file is no secret.
        let empty = write("empty", "\n\n");
        let short = write("short", &format!("{}\n\nshort\n", "p".repeat(32)));
        let err = validate(&raw_from(&config(&empty, &short), &[]).unwrap()).unwrap_err();
        let text = err.0.join("\n");
        assert!(
            text.contains(&format!(
                "consumers[0].secret_file: `{empty}` holds no secret"
            )),
            "{text}"
        );
        assert!(
            text.contains("session.previous_secrets_file: line 3: must be at least 32 bytes"),
            "{text}"
        );
    }

    #[test]
    fn secret_files_and_redaction() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, format!("{}\n", "k".repeat(40))).unwrap();
        let cs = dir.path().join("cs");
        std::fs::write(&cs, "base64:c2VjcmV0LWZyb20tZmlsZQ==\n").unwrap();
        let text = format!(
            "[server]\npublic_url = \"https://x.example\"\n[session]\nsecret_file = \"{}\"\n[store]\nurl = \"redis://user:pw@127.0.0.1:6379\"\n[[consumers]]\nname=\"a\"\nkey=\"k\"\nsecret_file=\"{}\"\nlms_id=\"a\"\n[[consumers]]\nname=\"b\"\nkey=\"k2\"\nsecrets=[\"inline-new\",\"inline-old\"]\nlms_id=\"b\"\n",
            key.display(),
            cs.display()
        );
        let raw = raw_from(&text, &[]).unwrap();
        let s = validate(&raw).unwrap();
        assert_eq!(s.session.secret.as_ref().unwrap().len(), 40);
        assert_eq!(s.consumers[0].secrets[0].expose(), b"secret-from-file");
        assert_eq!(s.consumers[1].secrets.len(), 2);
        let shown = render_redacted(&raw);
        assert!(!shown.contains("inline-new") && !shown.contains("inline-old"));
        assert!(!shown.contains(":pw@"), "{shown}");
        assert!(shown.contains("[redacted]"));
        assert!(!format!("{s:?}").contains("inline-new"));
    }

    #[test]
    fn every_problem_is_one_line() {
        let raw = raw_from(
            "[server]\nlisten = \"nope\"\n[session]\nttl = \"forever\"\nsecret = \"short\"\n[webhook]\nmax_body = \"lots\"\n",
            &[],
        )
        .unwrap();
        let err = validate(&raw).unwrap_err();
        let text = err.to_string();
        for needle in [
            "server.listen:",
            "server.public_url: required",
            "session.ttl:",
            "session.secret: must be at least 32 bytes",
            "webhook.max_body:",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert_eq!(err.0.len(), text.lines().count());
    }

    #[test]
    fn send_timeout_defaults_to_a_minute_and_is_never_zero() {
        let s = validate(&raw_from(MIN, &[]).unwrap()).unwrap();
        assert_eq!(s.server.send_timeout, Duration::from_secs(60));
        let raw = raw_from(MIN, &[("LTIGATE_SERVER__SEND_TIMEOUT", "0s")]).unwrap();
        let err = validate(&raw).unwrap_err();
        assert_eq!(
            err.0,
            vec!["server.send_timeout: must be longer than 0s".to_string()]
        );
        let raw = raw_from(MIN, &[("LTIGATE_SERVER__SEND_TIMEOUT", "soon")]).unwrap();
        let err = validate(&raw).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert!(err.0[0].starts_with("server.send_timeout: "), "{err}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let err = raw_from(&format!("{MIN}\n[launch]\nid_separator = 3\n"), &[]).unwrap_err();
        assert!(
            err.0.iter().any(|l| l.starts_with("launch.id_separator:")),
            "{err}"
        );
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(
            parse_duration(&"300ms".into()).unwrap(),
            Duration::from_millis(300)
        );
        assert_eq!(
            parse_duration(&"8h".into()).unwrap(),
            Duration::from_secs(28800)
        );
        assert_eq!(
            parse_duration(&Quantity::Number(5)).unwrap(),
            Duration::from_secs(5)
        );
        assert!(parse_duration(&"soon".into()).is_err());
        assert_eq!(parse_size(&"64KiB".into()).unwrap(), 65536);
        assert_eq!(parse_size(&"1MiB".into()).unwrap(), 1 << 20);
        assert!(parse_size(&"1XB".into()).is_err());
    }

    #[test]
    fn public_url_forms() {
        let u = parse_public_url("HTTPS://Learn.Example.com:443").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("learn.example.com", None, "")
        );
        let u = parse_public_url("http://localhost:8080/p/").unwrap();
        assert_eq!((u.port, u.prefix.as_str()), (Some(8080), "/p"));
        assert_eq!(
            u.url_for("/lti/launch"),
            "http://localhost:8080/p/lti/launch"
        );
        assert!(parse_public_url("ftp://x").is_err());
        assert!(parse_public_url("https://x:0").is_err());
        assert!(parse_public_url("https://x/?q").is_err());
    }

    #[test]
    fn shipped_config_is_valid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ltigate.toml");
        let raw = load_raw_from(Some(&p), Vec::new()).unwrap();
        let s = validate(&raw).unwrap();
        assert!(matches!(s.store, StoreSettings::Embedded { .. }));
    }
}
