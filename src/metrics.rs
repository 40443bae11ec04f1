//! Prometheus metrics: one registry, every series named in DESIGN §9. Label
//! values come only from configuration or fixed lists, never from request
//! input.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::lti::id_token::Lti13Rejection;
use crate::lti::launch::Rejection;

/// Every ltigate metric.
pub struct Metrics {
    registry: Registry,
    /// `ltigate_launches_total{consumer,version,result}`
    pub launches: IntCounterVec,
    /// `ltigate_launch_duration_seconds`
    pub launch_duration: Histogram,
    /// `ltigate_session_rejections_total{reason}`
    pub session_rejections: IntCounterVec,
    /// `ltigate_proxy_requests_total{code}`
    pub proxy_requests: IntCounterVec,
    /// `ltigate_proxy_request_duration_seconds`
    pub proxy_duration: Histogram,
    /// `ltigate_upstream_api_requests_total{op,result}`
    pub upstream_api: IntCounterVec,
    /// `ltigate_upstream_api_duration_seconds{op}`
    pub upstream_api_duration: HistogramVec,
    /// `ltigate_webhooks_total{result}`
    pub webhooks: IntCounterVec,
    /// `ltigate_outcomes_total{kind,result}`
    pub outcomes: IntCounterVec,
    /// `ltigate_outcomes_unknown_kind_total`: outbox jobs handed back
    /// because this process has no deliverer for their target's kind.
    pub outcomes_unknown_kind: IntCounter,
    /// `ltigate_outbox_depth`
    pub outbox_depth: IntGauge,
    /// `ltigate_outbox_dead`
    pub outbox_dead: IntGauge,
    /// `ltigate_outbox_oldest_age_seconds`
    pub outbox_oldest_age: Gauge,
    /// `ltigate_licences_used{consumer}`
    pub licences_used: IntGaugeVec,
    /// `ltigate_outcome_targets_refused_total{consumer,reason}`: accepted
    /// launches whose outcome target was not stored, so their grades cannot
    /// go back.
    pub outcome_targets_refused: IntCounterVec,
    /// `ltigate_lti13_logins_total{result}`
    pub lti13_logins: IntCounterVec,
    /// `ltigate_jwks_fetches_total{platform,result}`
    pub jwks_fetches: IntCounterVec,
    /// `ltigate_jwks_last_success_timestamp_seconds{platform}`
    pub jwks_last_success: IntGaugeVec,
    /// `ltigate_ags_tokens_total{platform,result}`
    pub ags_tokens: IntCounterVec,
    /// `ltigate_store_up`
    pub store_up: IntGauge,
    /// `ltigate_store_errors_total{op}`
    pub store_errors: IntCounterVec,
}

/// Store operations, the `op` label of `ltigate_store_errors_total`.
pub const STORE_OPS: [&str; 7] = [
    "ping", "nonce", "licence", "ticket", "outbox", "target", "state",
];
/// Reasons of `ltigate_outcome_targets_refused_total`.
pub const OUTCOME_TARGET_REFUSALS: [&str; 3] = ["unsafe_url", "no_lineitem", "no_score_scope"];
/// Results of `ltigate_lti13_logins_total`.
pub const LTI13_LOGIN_RESULTS: [&str; 5] = [
    "redirected",
    "cookie_check",
    "new_window",
    "invalid_request",
    "unknown_platform",
];
/// Upstream API operations.
pub const API_OPS: [&str; 2] = ["put_user", "put_subscription"];
/// Upstream API results.
pub const API_RESULTS: [&str; 4] = ["ok", "not_found", "error", "timeout"];
/// Proxy status classes.
pub const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Webhook results.
pub const WEBHOOK_RESULTS: [&str; 6] = [
    "queued",
    "waiting_for_target",
    "duplicate",
    "ignored",
    "bad_signature",
    "invalid",
];
/// Outcome results.
pub const OUTCOME_RESULTS: [&str; 3] = ["delivered", "retried", "dead"];
/// `kind` values of `ltigate_outcomes_total` (DESIGN §9), pre-created:
/// LTI 1.1 Basic Outcomes and LTI 1.3 AGS scores.
pub const OUTCOME_KINDS: [&str; 2] = ["basic", "ags"];
/// The `kind` of `ltigate_outcomes_total` for a job whose outcome target is
/// missing or unreadable (it can only end as a dead letter, or be retried
/// when the store did not answer).
pub const OUTCOME_KIND_NONE: &str = "none";
/// `reason` values of `ltigate_session_rejections_total` (DESIGN §9).
pub const SESSION_REJECTIONS: [&str; 6] =
    ["missing", "invalid", "expired", "idle", "revoked", "csrf"];

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    r.register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    c
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    r.register(Box::new(h.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    h
}

impl Metrics {
    /// Registers every series. `consumers` are the configured tenant
    /// names, pre-created so dashboards see zeros. Panics only on a
    /// programming error in the metric definitions (fixed names).
    ///
    /// Long on purpose: one registration per series, in the order of
    /// DESIGN §9, so the whole exposition reads in one place.
    pub fn new(consumers: &[String]) -> Self {
        let r = Registry::new();
        let launches = counter_vec(
            &r,
            "ltigate_launches_total",
            "LTI launches by consumer (tenant), protocol version and result",
            &["consumer", "version", "result"],
        );
        let launch_duration = histogram(
            &r,
            "ltigate_launch_duration_seconds",
            "Time to handle a launch, provisioning included",
            vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        );
        let session_rejections = counter_vec(
            &r,
            "ltigate_session_rejections_total",
            "Requests refused for want of a valid session, by reason",
            &["reason"],
        );
        let proxy_requests = counter_vec(
            &r,
            "ltigate_proxy_requests_total",
            "Requests proxied to the upstream, by status class",
            &["code"],
        );
        let proxy_duration = histogram(
            &r,
            "ltigate_proxy_request_duration_seconds",
            "Time until the upstream's response headers",
            vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0,
            ],
        );
        let upstream_api = counter_vec(
            &r,
            "ltigate_upstream_api_requests_total",
            "Provisioning API calls by operation and result",
            &["op", "result"],
        );
        let upstream_api_duration = HistogramVec::new(
            HistogramOpts::new(
                "ltigate_upstream_api_duration_seconds",
                "Provisioning API call duration",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["op"],
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        r.register(Box::new(upstream_api_duration.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        let webhooks = counter_vec(
            &r,
            "ltigate_webhooks_total",
            "Completion webhooks by result",
            &["result"],
        );
        let outcomes = counter_vec(
            &r,
            "ltigate_outcomes_total",
            "Grade deliveries to LMSs by target kind and result",
            &["kind", "result"],
        );
        let outcomes_unknown_kind = IntCounter::new(
            "ltigate_outcomes_unknown_kind_total",
            "Outbox jobs handed back because this replica cannot deliver their target's kind",
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        r.register(Box::new(outcomes_unknown_kind.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
            r.register(Box::new(g.clone()))
                .unwrap_or_else(|e| panic!("metric {name}: {e}"));
            g
        };
        let outbox_depth = gauge("ltigate_outbox_depth", "Grade jobs waiting for delivery");
        let outbox_dead = gauge("ltigate_outbox_dead", "Grade jobs in the dead-letter list");
        let store_up = gauge("ltigate_store_up", "1 when the store answers, else 0");
        let outbox_oldest_age = Gauge::new(
            "ltigate_outbox_oldest_age_seconds",
            "Age of the oldest waiting grade job",
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        r.register(Box::new(outbox_oldest_age.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        let licences_used = IntGaugeVec::new(
            Opts::new("ltigate_licences_used", "Licences in use per consumer"),
            &["consumer"],
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        r.register(Box::new(licences_used.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        let outcome_targets_refused = counter_vec(
            &r,
            "ltigate_outcome_targets_refused_total",
            "Accepted launches whose outcome target was not stored (grades cannot go back), by consumer and reason",
            &["consumer", "reason"],
        );
        let lti13_logins = counter_vec(
            &r,
            "ltigate_lti13_logins_total",
            "LTI 1.3 login initiations by result",
            &["result"],
        );
        let ags_tokens = counter_vec(
            &r,
            "ltigate_ags_tokens_total",
            "Access token requests for AGS scores by platform and result",
            &["platform", "result"],
        );
        let jwks_fetches = counter_vec(
            &r,
            "ltigate_jwks_fetches_total",
            "Fetches of a platform's key set by platform and result",
            &["platform", "result"],
        );
        let jwks_last_success = IntGaugeVec::new(
            Opts::new(
                "ltigate_jwks_last_success_timestamp_seconds",
                "When a platform's key set was last fetched (unix seconds)",
            ),
            &["platform"],
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        r.register(Box::new(jwks_last_success.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        let store_errors = counter_vec(
            &r,
            "ltigate_store_errors_total",
            "Store operations that failed, by operation",
            &["op"],
        );
        let build_info = IntGaugeVec::new(
            Opts::new("ltigate_build_info", "Build information"),
            &["version"],
        )
        .unwrap_or_else(|e| panic!("metric: {e}"));
        r.register(Box::new(build_info.clone()))
            .unwrap_or_else(|e| panic!("metric: {e}"));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        // Pre-create the label combinations known at start-up.
        for c in consumers.iter().map(String::as_str).chain(["unknown"]) {
            launches.with_label_values(&[c, "1.1", "accepted"]);
            for r in Rejection::ALL {
                launches.with_label_values(&[c, "1.1", r.label()]);
            }
        }
        for c in consumers {
            licences_used.with_label_values(&[c.as_str()]);
            for r in OUTCOME_TARGET_REFUSALS {
                outcome_targets_refused.with_label_values(&[c.as_str(), r]);
            }
        }
        for s in SESSION_REJECTIONS {
            session_rejections.with_label_values(&[s]);
        }
        for c in CODE_CLASSES {
            proxy_requests.with_label_values(&[c]);
        }
        for op in API_OPS {
            upstream_api_duration.with_label_values(&[op]);
            for res in API_RESULTS {
                upstream_api.with_label_values(&[op, res]);
            }
        }
        for w in WEBHOOK_RESULTS {
            webhooks.with_label_values(&[w]);
        }
        for k in OUTCOME_KINDS {
            for o in OUTCOME_RESULTS {
                outcomes.with_label_values(&[k, o]);
            }
        }
        for op in STORE_OPS {
            store_errors.with_label_values(&[op]);
        }
        for l in LTI13_LOGIN_RESULTS {
            lti13_logins.with_label_values(&[l]);
        }

        Metrics {
            registry: r,
            launches,
            launch_duration,
            session_rejections,
            proxy_requests,
            proxy_duration,
            upstream_api,
            upstream_api_duration,
            webhooks,
            outcomes,
            outcomes_unknown_kind,
            outbox_depth,
            outbox_dead,
            outbox_oldest_age,
            licences_used,
            outcome_targets_refused,
            lti13_logins,
            jwks_fetches,
            jwks_last_success,
            ags_tokens,
            store_up,
            store_errors,
        }
    }

    /// Pre-creates the LTI 1.3 series of the configured registrations:
    /// `(tenant, platform)` pairs.
    pub fn register_platforms<'a>(&self, platforms: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut tenants = vec!["unknown"];
        for (tenant, platform) in platforms {
            if !tenants.contains(&tenant) {
                tenants.push(tenant);
            }
            for result in ["ok", "error"] {
                self.jwks_fetches.with_label_values(&[platform, result]);
            }
            for result in ["issued", "error"] {
                self.ags_tokens.with_label_values(&[platform, result]);
            }
            for reason in OUTCOME_TARGET_REFUSALS {
                self.outcome_targets_refused
                    .with_label_values(&[tenant, reason]);
            }
        }
        for t in tenants {
            self.launches.with_label_values(&[t, "1.3", "accepted"]);
            for r in Lti13Rejection::ALL {
                self.launches.with_label_values(&[t, "1.3", r.label()]);
            }
        }
    }

    /// Text exposition of every series.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Counts a failed store operation and marks the store down.
    pub fn store_failed(&self, op: &'static str) {
        self.store_errors.with_label_values(&[op]).inc();
        self.store_up.set(0);
    }

    /// Sets the outbox gauges from the store's counters.
    pub fn set_outbox(&self, stats: &crate::store::OutboxStats) {
        self.outbox_depth
            .set(i64::try_from(stats.depth).unwrap_or(i64::MAX));
        self.outbox_dead
            .set(i64::try_from(stats.dead).unwrap_or(i64::MAX));
        let age_ms = stats
            .oldest_created_ms
            .map_or(0, |c| crate::store::now_millis().saturating_sub(c));
        self.outbox_oldest_age.set(age_ms as f64 / 1000.0);
    }

    /// Marks the store up after a successful operation.
    pub fn store_ok(&self) {
        self.store_up.set(1);
    }

    /// The status class label of a status code.
    pub fn code_class(status: u16) -> &'static str {
        match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        }
    }
}
