//! The validated, typed settings the rest of ltigate runs on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::raw::RawCartridge;
use crate::secret::Secret;

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

/// A tenant (DESIGN §12): what a learner, a licence pool, an outcome
/// allowlist and the metric label `consumer` belong to, whichever protocol
/// the learner launched by. Every `[[consumers]]` entry is one. Everything
/// after a launch's verification is keyed on the tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// Name: the metric label `consumer`, the `X-LTI-Consumer` header, the
    /// key of its licences and enrolments.
    pub name: String,
    /// The namespace of its learners' external IDs (`<lms_id>:<user_id>`);
    /// unique across tenants.
    pub lms_id: String,
    /// Environment named to the upstream (`X-LTI-Environment`).
    pub environment: Option<String>,
    /// Licence cap (`None`: no cap).
    pub max_licences: Option<u64>,
    /// Hosts grades may be sent to (lowercase; empty: any public host).
    pub outcome_hosts: Vec<String>,
}

/// One LTI 1.1 consumer: an OAuth key and its secrets, speaking for a
/// tenant.
#[derive(Clone, Debug)]
pub struct Consumer {
    /// The tenant its learners belong to.
    pub tenant: Arc<Tenant>,
    /// `oauth_consumer_key`.
    pub key: String,
    /// Secrets, newest first.
    pub secrets: Vec<Secret>,
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
    /// Every tenant, in configuration order (today: one per consumer).
    pub tenants: Vec<Arc<Tenant>>,
    /// `[courses]`
    pub courses: BTreeMap<String, Course>,
}

/// Longest shared secret every LMS keeps whole: Brightspace (D2L) keeps the
/// first 100 characters of a pasted secret and signs with those.
pub const MAX_PORTABLE_SECRET: usize = 100;

impl Settings {
    /// The consumer with this `oauth_consumer_key`.
    pub fn consumer_by_key(&self, key: &str) -> Option<&Consumer> {
        self.consumers.iter().find(|c| c.key == key)
    }

    /// The consumer speaking for a tenant by LTI 1.1 (grades of its
    /// learners are signed with its secrets).
    pub fn consumer_of(&self, tenant: &str) -> Option<&Consumer> {
        self.consumers.iter().find(|c| c.tenant.name == tenant)
    }

    /// The tenant with this name.
    pub fn tenant(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.tenants.iter().find(|t| t.name == name)
    }

    /// The tenant whose learners carry this `lms_id`.
    pub fn tenant_by_lms_id(&self, lms_id: &str) -> Option<&Arc<Tenant>> {
        self.tenants.iter().find(|t| t.lms_id == lms_id)
    }
}
