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
    /// The signed identity assertion, when `session.assertion = true`.
    pub assertion: Option<AssertionSettings>,
}

/// `session.assertion*`, validated: the signed identity assertion (DESIGN
/// §4).
#[derive(Clone, Debug)]
pub struct AssertionSettings {
    /// `aud`.
    pub audience: String,
    /// Lifetime of one assertion (never past the session's own expiry).
    pub ttl: Duration,
    /// Put `course_roles` in the claims.
    pub course_roles: bool,
    /// The signing key: PKCS#8 DER of an EC P-256 key (`None`: none
    /// configured; the embedded store generates one, Redis refuses that).
    pub key: Option<Secret>,
    /// Keys published but never used to sign (PKCS#8 DER), in order.
    pub next_keys: Vec<Secret>,
    /// Keys still published after a switch (PKCS#8 DER), in order.
    pub previous_keys: Vec<Secret>,
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

/// `[lti13]`, validated: the tool key and the LTI 1.3 timings.
#[derive(Clone, Debug)]
pub struct Lti13Settings {
    /// The signing key: PKCS#8 DER of an RSA key of at least 2048 bits
    /// (`None`: none configured; Redis with platforms refuses that).
    pub key: Option<Secret>,
    /// Keys published but never used to sign (PKCS#8 DER), in order.
    pub next_keys: Vec<Secret>,
    /// Keys still published after a switch (PKCS#8 DER), in order.
    pub previous_keys: Vec<Secret>,
    /// Tolerance of an id_token's `exp`, `iat` and `nbf`.
    pub leeway: Duration,
    /// Lifetime of an OIDC login's state.
    pub state_ttl: Duration,
}

/// The deployments a registration accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeploymentIds {
    /// `["*"]`: any deployment of the (issuer, client id).
    Any,
    /// Exactly these.
    Only(Vec<String>),
}

impl DeploymentIds {
    /// Does this list accept `deployment_id`?
    pub fn accepts(&self, deployment_id: &str) -> bool {
        match self {
            DeploymentIds::Any => true,
            DeploymentIds::Only(ids) => ids.iter().any(|d| d == deployment_id),
        }
    }

    /// Does it name `deployment_id` itself (not through `*`)?
    pub fn lists(&self, deployment_id: &str) -> bool {
        match self {
            DeploymentIds::Any => false,
            DeploymentIds::Only(ids) => ids.iter().any(|d| d == deployment_id),
        }
    }
}

/// One LTI 1.3 registration (`[[platforms]]`, DESIGN §13).
#[derive(Clone, Debug)]
pub struct Platform {
    /// Name of the registration.
    pub name: String,
    /// The platform's issuer, compared exactly with `iss`.
    pub issuer: String,
    /// The client id the platform gave the tool.
    pub client_id: String,
    /// The deployments it accepts.
    pub deployment_ids: DeploymentIds,
    /// OIDC authorisation endpoint (the login redirects there).
    pub auth_login_url: String,
    /// OAuth 2 token endpoint.
    pub auth_token_url: String,
    /// `aud` of the client assertion (`auth_token_url` unless configured).
    pub token_audience: String,
    /// The platform's key set.
    pub jwks_url: String,
    /// The tenant its learners belong to: the linked consumer's, or its own.
    pub tenant: Arc<Tenant>,
    /// The linked `[[consumers]]` name (migration from LTI 1.1), if any.
    pub consumer: Option<String>,
    /// Use an `lti1p1.user_id` that carries no signature.
    pub trust_unsigned_migration: bool,
    /// JWKS, token and line-item URLs may be on private addresses.
    pub allow_private_endpoints: bool,
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
    /// `[lti13]`
    pub lti13: Lti13Settings,
    /// `[[consumers]]`
    pub consumers: Vec<Consumer>,
    /// `[[platforms]]`
    pub platforms: Vec<Platform>,
    /// Every tenant, in configuration order: one per consumer, then one per
    /// platform that is not linked to a consumer.
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

    /// The registrations of an issuer, in configuration order (a login
    /// that names no client id needs there to be one client id).
    pub fn platforms_of_issuer<'a>(
        &'a self,
        issuer: &'a str,
    ) -> impl Iterator<Item = &'a Platform> + 'a {
        self.platforms.iter().filter(move |p| p.issuer == issuer)
    }

    /// The registrations sharing (issuer, client id), in configuration
    /// order; they agree on every URL (start-up checks it).
    pub fn platforms_for<'a>(
        &'a self,
        issuer: &'a str,
        client_id: &'a str,
    ) -> impl Iterator<Item = &'a Platform> + 'a {
        self.platforms
            .iter()
            .filter(move |p| p.issuer == issuer && p.client_id == client_id)
    }

    /// The registration of (issuer, client id) that accepts this
    /// deployment: one listing it beats one accepting any (`*`).
    pub fn platform_for(
        &self,
        issuer: &str,
        client_id: &str,
        deployment_id: &str,
    ) -> Option<&Platform> {
        let mut wildcard = None;
        for p in self
            .platforms
            .iter()
            .filter(|p| p.issuer == issuer && p.client_id == client_id)
        {
            if p.deployment_ids.lists(deployment_id) {
                return Some(p);
            }
            if wildcard.is_none() && p.deployment_ids.accepts(deployment_id) {
                wildcard = Some(p);
            }
        }
        wildcard
    }

    /// The registration with this name.
    pub fn platform(&self, name: &str) -> Option<&Platform> {
        self.platforms.iter().find(|p| p.name == name)
    }

    /// The tenant whose learners carry this `lms_id`.
    pub fn tenant_by_lms_id(&self, lms_id: &str) -> Option<&Arc<Tenant>> {
        self.tenants.iter().find(|t| t.lms_id == lms_id)
    }
}
