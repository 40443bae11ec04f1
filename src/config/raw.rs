//! The configuration as written: serde structs, defaults, and the redacted
//! rendering `check-config` prints.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// A secret as written in the configuration: printed as `[redacted]`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct RawSecret(pub(super) String);

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

/// A duration or size as written: a string such as `300s` or `64KiB`, or
/// a bare integer (bytes for sizes; for durations only `0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Quantity {
    /// `"300s"`, `"64KiB"`.
    Text(String),
    /// Bytes, or a zero duration.
    Number(u64),
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string such as \"30s\" or \"64KiB\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity::Text(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity::Number(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                u64::try_from(v)
                    .map(Quantity::Number)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
        }
        d.deserialize_any(Visitor)
    }
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
            max_header_bytes: "32KiB".into(),
            shutdown_grace: "25s".into(),
            access_log: true,
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
    /// Send the signed identity assertion (`{header_prefix}Assertion`).
    pub assertion: bool,
    /// `aud` of the assertion: names this deployment's upstream.
    pub assertion_audience: String,
    /// Lifetime of one assertion.
    pub assertion_ttl: Quantity,
    /// Put every launched course with its roles in the assertion.
    pub assertion_course_roles: bool,
    /// The assertion's signing key inline: PEM (PKCS#8 or SEC1) of an EC
    /// P-256 key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assertion_key: Option<RawSecret>,
    /// File holding the assertion's signing key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assertion_key_file: Option<String>,
    /// Keys published that never sign (rotation step 1).
    pub assertion_next_key_files: Vec<String>,
    /// Keys still published after a switch.
    pub assertion_previous_key_files: Vec<String>,
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
            assertion: false,
            assertion_audience: String::new(),
            assertion_ttl: "5m".into(),
            assertion_course_roles: false,
            assertion_key: None,
            assertion_key_file: None,
            assertion_next_key_files: Vec::new(),
            assertion_previous_key_files: Vec::new(),
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

/// `[lti13]`: the tool's own key and the LTI 1.3 timings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLti13 {
    /// The tool's signing key inline: PEM (PKCS#8 or PKCS#1) of an RSA key
    /// ≥ 2048 bits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<RawSecret>,
    /// File holding the tool's signing key (PKCS#8 or PKCS#1 PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Keys published in the tool's JWKS that never sign (rotation step 1).
    pub next_key_files: Vec<String>,
    /// Keys still published after a switch.
    pub previous_key_files: Vec<String>,
    /// Tolerance of an id_token's `exp`, `iat` and `nbf`.
    pub leeway: Quantity,
    /// Lifetime of an OIDC login's state.
    pub state_ttl: Quantity,
}

impl Default for RawLti13 {
    fn default() -> Self {
        RawLti13 {
            key: None,
            key_file: None,
            next_key_files: Vec::new(),
            previous_key_files: Vec::new(),
            leeway: "60s".into(),
            state_ttl: "10m".into(),
        }
    }
}

/// `[[platforms]]`: one LTI 1.3 registration.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPlatform {
    /// Name of the registration (`export --platform`); the metric label
    /// when it is a tenant of its own.
    pub name: String,
    /// The platform's issuer (`iss`), compared exactly.
    pub issuer: String,
    /// The client id the platform gave the tool.
    pub client_id: String,
    /// Deployment ids accepted; `["*"]` accepts any.
    pub deployment_ids: Vec<String>,
    /// The platform's OIDC authorisation endpoint.
    pub auth_login_url: String,
    /// The platform's OAuth 2 token endpoint.
    pub auth_token_url: String,
    /// `aud` of the client assertion; empty: `auth_token_url`.
    pub token_audience: String,
    /// The platform's key set.
    pub jwks_url: String,
    /// A `[[consumers]]` name whose tenant this registration shares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// Namespace of the learners of a registration that is its own tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lms_id: Option<String>,
    /// Upstream sub-environment of its own tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Cap on (course, learner) subscriptions of its own tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_licences: Option<u64>,
    /// Allowed outcome URL hosts of its own tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome_hosts: Option<Vec<String>>,
    /// Use an `lti1p1.user_id` that carries no `oauth_consumer_key_sign`.
    pub trust_unsigned_migration: bool,
    /// Allow JWKS, token and line-item URLs on private addresses.
    pub allow_private_endpoints: bool,
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
    /// `[lti13]`
    pub lti13: RawLti13,
    /// `[[consumers]]`
    pub consumers: Vec<RawConsumer>,
    /// `[[platforms]]`
    pub platforms: Vec<RawPlatform>,
    /// `[courses.<id>]`
    pub courses: BTreeMap<String, RawCourse>,
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
