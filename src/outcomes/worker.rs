//! The outbox worker: leases due jobs, delivers each as a signed LTI Basic
//! Outcomes `replaceResultRequest`, and completes, retries (backoff with
//! jitter, `Retry-After`) or dead-letters it by the LMS's answer.
//!
//! Several processes may run it against one Redis: a job is leased to one
//! of them at a time, for `outcomes.lease`, which is longer than one
//! delivery's timeout. On shutdown the worker stops leasing, lets
//! deliveries in flight finish within the grace period, and hands the rest
//! back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use super::basic::{BasicOutcomes, Deliver};
use super::{backoff, OutcomeTarget, Verdict};
use crate::http::AppState;
use crate::store::{now_millis, Failure, Lease};

/// Deliveries in flight per process.
const CONCURRENCY: usize = 8;

/// The outbox gauges are read from the store at most this often (reading
/// them walks the outbox), and at least every [`GAUGES_EVERY`].
const GAUGES_AT_MOST: Duration = Duration::from_secs(1);
const GAUGES_EVERY: Duration = Duration::from_secs(5);

/// The worker.
pub struct Worker {
    app: Arc<AppState>,
    basic: BasicOutcomes,
    notify: Arc<Notify>,
    /// A delivery changed the outbox: the gauges are stale.
    gauges_stale: Notify,
}

impl Worker {
    /// Builds the worker and its delivery clients.
    pub fn new(app: Arc<AppState>, notify: Arc<Notify>) -> anyhow::Result<Self> {
        let basic = BasicOutcomes::new(&app.settings.outcomes)?;
        Ok(Worker {
            app,
            basic,
            notify,
            gauges_stale: Notify::new(),
        })
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
        let verdict = self.attempt(&lease).await;
        let store = &self.app.store;
        let m = &self.app.metrics;
        let o = &self.app.settings.outcomes;
        let result = match verdict {
            Verdict::Delivered => {
                m.outcomes.with_label_values(&["delivered"]).inc();
                tracing::info!(event_id = %job.event_id, learner = %job.enrolment.learner, course = %job.enrolment.course, score = job.score, "grade delivered");
                store.complete(&lease).await
            }
            Verdict::Retry { after, why } => {
                let attempt = job.attempts.saturating_add(1);
                if attempt >= o.max_attempts {
                    m.outcomes.with_label_values(&["dead"]).inc();
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
                    m.outcomes.with_label_values(&["retried"]).inc();
                    tracing::info!(event_id = %job.event_id, attempt, retry_in = ?wait, error = %why, "grade delivery failed; will retry");
                    let at = now_millis()
                        .saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
                    store.fail(&lease, Failure::RetryAt(at), &why).await
                }
            }
            Verdict::Dead(why) => {
                m.outcomes.with_label_values(&["dead"]).inc();
                tracing::warn!(event_id = %job.event_id, error = %why, "grade refused by the LMS: dead letter");
                store.fail(&lease, Failure::Dead, &why).await
            }
        };
        match result {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(event_id = %job.event_id, "outbox lease was lost before the result was recorded")
            }
            Err(e) => {
                m.store_failed("outbox");
                tracing::warn!(event_id = %job.event_id, error = %e, "cannot record a delivery result; the lease will expire and the job run again");
            }
        }
        self.gauges_stale.notify_one();
    }

    /// One delivery attempt.
    async fn attempt(&self, lease: &Lease) -> Verdict {
        let job = &lease.job;
        let settings = &self.app.settings;
        let target = match self.app.store.get_enrolment(&job.enrolment).await {
            Ok(Some(Some(bytes))) => match OutcomeTarget::from_bytes(&bytes) {
                Some(t) => t,
                None => return Verdict::Dead("stored outcome target is unreadable".into()),
            },
            Ok(_) => return Verdict::Dead("no outcome target for this learner and course".into()),
            Err(e) => {
                return Verdict::Retry {
                    after: None,
                    why: format!("store: {e}"),
                }
            }
        };
        let Some(consumer) = settings.consumer_by_name(&job.enrolment.consumer) else {
            return Verdict::Dead(format!(
                "consumer {} is no longer configured",
                job.enrolment.consumer
            ));
        };
        self.basic.deliver(consumer, &target, job).await
    }
}
