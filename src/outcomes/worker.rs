//! The outbox worker: leases due jobs, delivers each through the
//! [`Deliver`](super::Deliver) registered for its target's kind, and
//! completes, retries (backoff with jitter, `Retry-After`) or dead-letters it
//! by the LMS's answer.
//!
//! A job whose target is of a kind this process has no deliverer for (a
//! newer release's, during a rolling upgrade) is handed back untouched —
//! not an attempt, never a dead letter — due again after
//! [`UNKNOWN_KIND_DELAY`], for a replica that knows the kind.
//!
//! Several processes may run it against one Redis: a job is leased to one
//! of them at a time, for `outcomes.lease`, which is longer than one
//! delivery's timeout. On shutdown the worker stops leasing, lets
//! deliveries in flight finish within the grace period, and hands the rest
//! back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use super::{backoff, Deliverers, StoredTarget, Verdict};
use crate::http::AppState;
use crate::metrics::OUTCOME_KIND_NONE;
use crate::store::{now_millis, Failure, Lease};

/// Deliveries in flight per process.
const CONCURRENCY: usize = 8;

/// The outbox gauges are read from the store at most this often (reading
/// them walks the outbox), and at least every [`GAUGES_EVERY`].
const GAUGES_AT_MOST: Duration = Duration::from_secs(1);
const GAUGES_EVERY: Duration = Duration::from_secs(5);

/// A job of a target kind this process cannot deliver is due again after
/// this long: soon enough for a grade during a rolling upgrade, rare enough
/// that a replica left alone on an older release does not spin on it.
pub const UNKNOWN_KIND_DELAY: Duration = Duration::from_secs(30);

/// The WARN about a target kind this process cannot deliver is logged at
/// most this often per kind (every hand-back is counted in
/// `ltigate_outcomes_unknown_kind_total`).
const UNKNOWN_KIND_WARN_EVERY: Duration = Duration::from_secs(60);

/// Kinds whose last WARN time is remembered; beyond that the WARN waits
/// until a remembered one is older than [`UNKNOWN_KIND_WARN_EVERY`].
const UNKNOWN_KINDS_REMEMBERED: usize = 32;

/// The worker.
pub struct Worker {
    app: Arc<AppState>,
    deliverers: Deliverers,
    notify: Arc<Notify>,
    /// A delivery changed the outbox: the gauges are stale.
    gauges_stale: Notify,
    /// When each target kind this process cannot deliver was last warned
    /// about.
    unknown_kinds: Mutex<KindWarnings>,
}

/// What became of one leased job before the outbox is told.
enum Attempt {
    /// Tried: `kind` is the `kind` label of `ltigate_outcomes_total`.
    Tried {
        kind: &'static str,
        verdict: Verdict,
    },
    /// Not this process's to deliver: no deliverer for the target's kind.
    NotHere { kind: String },
}

impl Worker {
    /// Builds the worker with the standard deliverers
    /// ([`Deliverers::standard`]).
    pub fn new(
        app: Arc<AppState>,
        notify: Arc<Notify>,
        tool_key: Option<Arc<crate::lti::jose::SigningKey>>,
    ) -> anyhow::Result<Self> {
        let deliverers = Deliverers::standard(&app, tool_key)?;
        Ok(Self::with_deliverers(app, notify, deliverers))
    }

    /// Builds the worker with these deliverers.
    pub fn with_deliverers(
        app: Arc<AppState>,
        notify: Arc<Notify>,
        deliverers: Deliverers,
    ) -> Self {
        Worker {
            app,
            deliverers,
            notify,
            gauges_stale: Notify::new(),
            unknown_kinds: Mutex::new(KindWarnings::default()),
        }
    }

    /// Runs until `shutdown` flips.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let mut leases: HashMap<tokio::task::Id, Lease> = HashMap::new();
        let gauges = tokio::spawn(self.clone().keep_gauges(shutdown.clone()));
        loop {
            // Poll for due jobs while there is room.
            let room = CONCURRENCY.saturating_sub(in_flight.len());
            if room > 0 {
                match self
                    .app
                    .store
                    .lease_due(self.app.settings.outcomes.lease, room)
                    .await
                {
                    Ok(batch) => {
                        for lease in batch {
                            let me = self.clone();
                            let l = lease.clone();
                            let handle = in_flight.spawn(async move { me.deliver(l).await });
                            leases.insert(handle.id(), lease);
                        }
                    }
                    Err(e) => {
                        self.app.metrics.store_failed("outbox");
                        tracing::warn!(error = %e, "cannot lease outbox jobs");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                    match done {
                        Ok((id, ())) => { leases.remove(&id); }
                        Err(e) => { leases.remove(&e.id()); }
                    }
                }
            }
        }

        // Shutdown: finish in-flight deliveries within the grace period,
        // hand back the rest.
        let grace = self.app.settings.server.shutdown_grace;
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        while !in_flight.is_empty() {
            tokio::select! {
                Some(done) = in_flight.join_next_with_id() => {
                    match done {
                        Ok((id, ())) => { leases.remove(&id); }
                        Err(e) => { leases.remove(&e.id()); }
                    }
                }
                _ = &mut deadline => break,
            }
        }
        in_flight.abort_all();
        gauges.abort();
        for (_, lease) in leases {
            if let Err(e) = self.app.store.release(&lease).await {
                tracing::warn!(event_id = %lease.job.event_id, error = %e, "cannot hand back an outbox job; its lease will expire");
            } else {
                tracing::info!(event_id = %lease.job.event_id, "outbox job handed back on shutdown");
            }
        }
    }

    /// Keeps the outbox gauges current until `shutdown` flips: read after
    /// deliveries, at most every [`GAUGES_AT_MOST`] (a backlog drained at
    /// full speed reads the outbox once a second, not once a grade), and
    /// at least every [`GAUGES_EVERY`].
    async fn keep_gauges(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            self.update_gauges().await;
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(GAUGES_AT_MOST) => {}
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                () = self.gauges_stale.notified() => {}
                () = tokio::time::sleep(GAUGES_EVERY - GAUGES_AT_MOST) => {}
            }
        }
    }

    /// Refreshes the outbox gauges.
    async fn update_gauges(&self) {
        match self.app.store.outbox_stats().await {
            Ok(stats) => self.app.metrics.set_outbox(&stats),
            Err(e) => tracing::debug!(error = %e, "cannot read outbox stats"),
        }
    }

    async fn deliver(&self, lease: Lease) {
        let job = &lease.job;
        let store = &self.app.store;
        let m = &self.app.metrics;
        let o = &self.app.settings.outcomes;
        let (kind, verdict) = match self.attempt(&lease).await {
            Attempt::Tried { kind, verdict } => (kind, verdict),
            Attempt::NotHere { kind } => {
                m.outcomes_unknown_kind.inc();
                let warn = self
                    .unknown_kinds
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .should_warn(&kind, Instant::now());
                if warn {
                    tracing::warn!(kind = %kind, event_id = %job.event_id, retry_in = ?UNKNOWN_KIND_DELAY, "an outbox job's outcome target is of a kind this release cannot deliver; it is left for a replica that can (upgrade every replica)");
                } else {
                    tracing::debug!(kind = %kind, event_id = %job.event_id, "outbox job of an unknown target kind handed back");
                }
                let result = store.release_after(&lease, UNKNOWN_KIND_DELAY).await;
                self.record(job, result);
                return;
            }
        };
        let result = match verdict {
            Verdict::Delivered => {
                m.outcomes.with_label_values(&[kind, "delivered"]).inc();
                tracing::info!(event_id = %job.event_id, learner = %job.enrolment.learner, course = %job.enrolment.course, score = job.score, "grade delivered");
                store.complete(&lease).await
            }
            Verdict::Retry { after, why } => {
                let attempt = job.attempts.saturating_add(1);
                if attempt >= o.max_attempts {
                    m.outcomes.with_label_values(&[kind, "dead"]).inc();
                    tracing::warn!(event_id = %job.event_id, attempts = attempt, error = %why, "grade delivery gave up: dead letter");
                    store
                        .fail(
                            &lease,
                            Failure::Dead,
                            &format!("gave up after {attempt} attempts: {why}"),
                        )
                        .await
                } else {
                    let jitter: f64 = rand::rng().random();
                    let wait = backoff(attempt, o.retry_initial, o.retry_max, jitter)
                        .max(after.unwrap_or_default());
                    m.outcomes.with_label_values(&[kind, "retried"]).inc();
                    tracing::info!(event_id = %job.event_id, attempt, retry_in = ?wait, error = %why, "grade delivery failed; will retry");
                    let at = now_millis()
                        .saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
                    store.fail(&lease, Failure::RetryAt(at), &why).await
                }
            }
            Verdict::Dead(why) => {
                m.outcomes.with_label_values(&[kind, "dead"]).inc();
                tracing::warn!(event_id = %job.event_id, error = %why, "grade refused by the LMS: dead letter");
                store.fail(&lease, Failure::Dead, &why).await
            }
        };
        self.record(job, result);
    }

    /// Logs how recording a result in the outbox went.
    fn record(&self, job: &crate::store::Job, result: Result<bool, crate::store::StoreError>) {
        match result {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(event_id = %job.event_id, "outbox lease was lost before the result was recorded")
            }
            Err(e) => {
                self.app.metrics.store_failed("outbox");
                tracing::warn!(event_id = %job.event_id, error = %e, "cannot record a delivery result; the lease will expire and the job run again");
            }
        }
        self.gauges_stale.notify_one();
    }

    /// One delivery attempt, through the deliverer of the target's kind.
    async fn attempt(&self, lease: &Lease) -> Attempt {
        let job = &lease.job;
        let settings = &self.app.settings;
        let none = |verdict| Attempt::Tried {
            kind: OUTCOME_KIND_NONE,
            verdict,
        };
        let target = match self.app.store.get_enrolment(&job.enrolment).await {
            Ok(Some(Some(bytes))) => match StoredTarget::decode(&bytes) {
                Some(StoredTarget::Known(t)) => t,
                Some(StoredTarget::Unknown { kind }) => return Attempt::NotHere { kind },
                None => return none(Verdict::Dead("stored outcome target is unreadable".into())),
            },
            Ok(_) => {
                return none(Verdict::Dead(
                    "no outcome target for this learner and course".into(),
                ))
            }
            Err(e) => {
                return none(Verdict::Retry {
                    after: None,
                    why: format!("store: {e}"),
                })
            }
        };
        let kind = target.kind();
        let Some(deliverer) = self.deliverers.get(kind) else {
            return Attempt::NotHere {
                kind: kind.name().to_string(),
            };
        };
        let label = kind.metric_label();
        let Some(tenant) = settings.tenant(&job.enrolment.tenant) else {
            return Attempt::Tried {
                kind: label,
                verdict: Verdict::Dead(format!(
                    "tenant {} is no longer configured",
                    job.enrolment.tenant
                )),
            };
        };
        Attempt::Tried {
            kind: label,
            verdict: deliverer.deliver(settings, tenant, &target, job).await,
        }
    }
}

/// When each target kind this process cannot deliver was last warned about.
#[derive(Debug, Default)]
struct KindWarnings {
    last: HashMap<String, Instant>,
}

impl KindWarnings {
    /// Whether to WARN about `kind` at `now` (and if so, remembers it): at
    /// most once per [`UNKNOWN_KIND_WARN_EVERY`] per kind, for at most
    /// [`UNKNOWN_KINDS_REMEMBERED`] kinds at a time.
    fn should_warn(&mut self, kind: &str, now: Instant) -> bool {
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < UNKNOWN_KIND_WARN_EVERY;
        if let Some(at) = self.last.get(kind) {
            if fresh(at) {
                return false;
            }
        } else if self.last.len() >= UNKNOWN_KINDS_REMEMBERED {
            self.last.retain(|_, at| fresh(at));
            if self.last.len() >= UNKNOWN_KINDS_REMEMBERED {
                return false;
            }
        }
        self.last.insert(kind.to_string(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_kind_is_warned_about_once_a_minute() {
        let mut w = KindWarnings::default();
        let t0 = Instant::now();
        assert!(w.should_warn("ags", t0));
        assert!(!w.should_warn("ags", t0 + Duration::from_secs(59)));
        assert!(w.should_warn("other", t0 + Duration::from_secs(1)));
        assert!(w.should_warn("ags", t0 + UNKNOWN_KIND_WARN_EVERY));
        assert!(!w.should_warn("ags", t0 + UNKNOWN_KIND_WARN_EVERY));
    }

    #[test]
    fn remembered_kinds_are_bounded() {
        let mut w = KindWarnings::default();
        let t0 = Instant::now();
        for i in 0..UNKNOWN_KINDS_REMEMBERED {
            assert!(w.should_warn(&format!("k{i}"), t0));
        }
        // Full of recent warnings: a new kind waits...
        assert!(!w.should_warn("late", t0 + Duration::from_secs(1)));
        assert_eq!(w.last.len(), UNKNOWN_KINDS_REMEMBERED);
        // ...until they are old enough to forget.
        assert!(w.should_warn("late", t0 + UNKNOWN_KIND_WARN_EVERY));
        assert_eq!(w.last.len(), 1);
    }
}
