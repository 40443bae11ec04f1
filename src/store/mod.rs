//! The store: replay protection, licence claims and launch tickets.
//!
//! One trait, two backends — [`redis::RedisStore`] (standalone or Cluster, for
//! several replicas) and [`embedded::EmbeddedStore`] (a file-backed database
//! for one replica). Every operation that must be atomic is one atomic
//! operation in each backend; `tests/store_conformance.rs` runs one suite
//! against all of them.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod embedded;
pub mod redis;

/// A store failure: the store could not answer. Callers fail closed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend is unreachable or answered with an error.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The operation did not finish in time.
    #[error("store operation timed out")]
    Timeout,
    /// Stored data could not be decoded.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
}

/// Result of recording a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// First time seen; now recorded.
    Fresh,
    /// Seen before and still remembered.
    Replayed,
}

/// Result of claiming a licence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LicenceClaim {
    /// The learner already held this subscription.
    Existing,
    /// A new subscription was recorded; `used` licences after the claim.
    New {
        /// Licences in use after the claim.
        used: u64,
    },
    /// The cap is reached; nothing was recorded.
    Exhausted,
}

/// One learner in one course of one tenant: the unit of outcome targets
/// and outbox jobs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Enrolment {
    /// Tenant name (stored as `consumer`, the name it has always had).
    #[serde(rename = "consumer")]
    pub tenant: String,
    /// Course external ID.
    pub course: String,
    /// Learner external ID.
    pub learner: String,
}

impl Enrolment {
    /// Builds one.
    pub fn new(tenant: &str, course: &str, learner: &str) -> Self {
        Enrolment {
            tenant: tenant.into(),
            course: course.into(),
            learner: learner.into(),
        }
    }

    /// The store key: unambiguous whatever the parts contain.
    pub fn key(&self) -> String {
        compound(&[&self.tenant, &self.course, &self.learner])
    }

    /// A URL-safe identifier (the outbox job id shown to operators).
    pub fn id(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.key())
    }

    /// Parses [`Enrolment::id`] back into a store key.
    pub fn key_from_id(id: &str) -> Option<String> {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(id)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
    }
}

/// Length-prefixed concatenation: unambiguous whatever the parts contain.
pub(crate) fn compound(parts: &[&str]) -> String {
    let mut out = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            out.push_str(p);
        } else {
            out.push_str(&p.len().to_string());
            out.push(':');
            out.push_str(p);
        }
    }
    out
}

/// What an enqueue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// Durably queued for delivery.
    Queued,
    /// Kept until a launch brings an outcome target.
    Waiting,
    /// The event id was seen before; nothing changed.
    Duplicate,
}

/// State of an outbox job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// No outcome target yet.
    Waiting,
    /// To be delivered (or being delivered under a lease).
    Pending,
    /// Gave up; kept for an operator.
    Dead,
}

/// An outbox job: the latest score of one enrolment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Whose grade.
    pub enrolment: Enrolment,
    /// The completion event that set the score.
    pub event_id: String,
    /// Score 0.0–1.0.
    pub score: f64,
    /// Bumped by every new event; a delivery of an older version does not
    /// complete a newer one.
    pub version: u64,
    /// Failed attempts of this version.
    pub attempts: u32,
    /// State.
    pub state: JobState,
    /// When it is due (unix ms).
    pub next_at_ms: u64,
    /// When the job was first queued (unix ms).
    pub created_ms: u64,
    /// Lease expiry (unix ms); 0 when not leased.
    pub lease_until_ms: u64,
    /// The holder's lease token.
    pub lease_token: String,
    /// The last failure (LMS text for dead letters).
    pub last_error: Option<String>,
}

/// A leased job: deliver it, then complete, fail or release it with the
/// same lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// Snapshot of the job when leased.
    pub job: Job,
    /// The lease token.
    pub token: String,
}

/// How a failed delivery continues.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Try again at this time (unix ms).
    RetryAt(u64),
    /// Give up: dead letter.
    Dead,
}

/// Outbox counters for `/status` and the gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Pending + waiting jobs.
    pub depth: u64,
    /// Dead letters.
    pub dead: u64,
    /// `created_ms` of the oldest pending or waiting job.
    pub oldest_created_ms: Option<u64>,
}

/// How long the last AGS score timestamp of a (line item, learner) is kept
/// after it was used: longer than any course.
pub const SCORE_TIMESTAMP_TTL: Duration = Duration::from_secs(400 * 24 * 3600);

/// The store operations ltigate needs. Implementations are cheap to share
/// (`Arc<dyn Store>`).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"redis"`, `"redis-cluster"` or `"embedded"`.
    fn backend(&self) -> &'static str;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Atomically checks and records `(consumer_key, nonce)` for `ttl`. Of
    /// any number of concurrent calls with the same pair exactly one sees
    /// [`NonceCheck::Fresh`].
    async fn record_nonce(
        &self,
        consumer_key: &str,
        nonce: &str,
        ttl: Duration,
    ) -> Result<NonceCheck, StoreError>;

    /// Atomically claims the (course, learner) licence of `consumer` under
    /// `cap` (no cap: `None`). An existing subscription always succeeds.
    async fn claim_licence(
        &self,
        consumer: &str,
        course: &str,
        learner: &str,
        cap: Option<u64>,
    ) -> Result<LicenceClaim, StoreError>;

    /// Gives back a licence claimed by a launch that then failed.
    async fn release_licence(
        &self,
        consumer: &str,
        course: &str,
        learner: &str,
    ) -> Result<(), StoreError>;

    /// Licences in use by `consumer`.
    async fn licences_used(&self, consumer: &str) -> Result<u64, StoreError>;

    /// Stores a single-use launch ticket for `ttl`.
    async fn put_ticket(&self, ticket: &str, value: &[u8], ttl: Duration)
        -> Result<(), StoreError>;

    /// Atomically reads and deletes a ticket: of concurrent calls at most one
    /// gets the value. Expired tickets are `None`.
    async fn take_ticket(&self, ticket: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Records that the learner launched the course, with the outcome target
    /// when the launch carried one (a launch without one keeps an earlier
    /// target). A target arriving for a waiting job makes it pending.
    /// Returns true when a waiting job was activated.
    async fn put_enrolment(
        &self,
        enrolment: &Enrolment,
        target: Option<&[u8]>,
    ) -> Result<bool, StoreError>;

    /// `None`: never launched; `Some(None)`: launched without a target.
    async fn get_enrolment(
        &self,
        enrolment: &Enrolment,
    ) -> Result<Option<Option<Vec<u8>>>, StoreError>;

    /// Atomically: refuses an `event_id` seen for this enrolment, remembers
    /// it for `event_ttl`, and queues the score — replacing a job not yet
    /// delivered — as pending (a target exists) or waiting.
    async fn enqueue(
        &self,
        enrolment: &Enrolment,
        event_id: &str,
        score: f64,
        event_ttl: Duration,
    ) -> Result<EnqueueOutcome, StoreError>;

    /// Remembers an event id that is not queued (ignored events); false when
    /// it was seen before.
    async fn remember_event(
        &self,
        enrolment: &Enrolment,
        event_id: &str,
        event_ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Leases up to `max` due pending jobs for `lease`. A job is never
    /// leased twice at once; a lease that expires makes the job due again.
    async fn lease_due(&self, lease: Duration, max: usize) -> Result<Vec<Lease>, StoreError>;

    /// The leased version was delivered: removes the job unless a newer
    /// event replaced it meanwhile (then that one becomes due). False when
    /// the lease was lost.
    async fn complete(&self, lease: &Lease) -> Result<bool, StoreError>;

    /// The leased version failed: schedules a retry or makes it a dead
    /// letter, keeping `error`. False when the lease was lost.
    async fn fail(&self, lease: &Lease, failure: Failure, error: &str) -> Result<bool, StoreError>;

    /// Hands a leased job back undelivered, due again `delay` from now,
    /// attempts and last error unchanged: it was not this process's to
    /// deliver (a target kind it does not know). False when the lease was
    /// lost (then nothing changes).
    async fn release_after(&self, lease: &Lease, delay: Duration) -> Result<bool, StoreError>;

    /// Hands a leased job back undelivered (shutdown): due now, attempts
    /// unchanged.
    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.release_after(lease, Duration::ZERO).await.map(|_| ())
    }

    /// Every pending, waiting and dead job.
    async fn outbox_jobs(&self) -> Result<Vec<Job>, StoreError>;

    /// Re-queues one dead job (by [`Enrolment::id`]) or all of them; returns
    /// how many.
    async fn retry_dead(&self, id: Option<&str>) -> Result<usize, StoreError>;

    /// The timestamp (unix ms) of the next AGS score sent under `key` (a
    /// line item and a learner): `candidate` (now), or one past the last
    /// one sent when that is not earlier — so the timestamps of one key
    /// strictly increase across replicas, restarts and clock differences
    /// (DESIGN §13). Atomic: concurrent calls get distinct values. Kept
    /// [`SCORE_TIMESTAMP_TTL`] after the last use.
    async fn next_score_timestamp(&self, key: &str, candidate: u64) -> Result<u64, StoreError>;

    /// Counters, from [`Store::outbox_jobs`].
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let jobs = self.outbox_jobs().await?;
        let mut s = OutboxStats::default();
        for j in &jobs {
            if j.state == JobState::Dead {
                s.dead += 1;
            } else {
                s.depth += 1;
                s.oldest_created_ms = Some(
                    s.oldest_created_ms
                        .map_or(j.created_ms, |o| o.min(j.created_ms)),
                );
            }
        }
        Ok(s)
    }

    /// Writes durably what was acknowledged before it was durable (nonces;
    /// on the embedded store also launch tickets); called on shutdown.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A shared store handle.
pub type SharedStore = Arc<dyn Store>;

/// Unix time in milliseconds.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Opens the configured backend. Redis connects lazily, so ltigate starts
/// while Redis is down (launches answer 503 until it is back).
pub async fn open(settings: &crate::config::StoreSettings) -> anyhow::Result<SharedStore> {
    use crate::config::StoreSettings;
    Ok(match settings {
        StoreSettings::Embedded { path } => Arc::new(embedded::EmbeddedStore::open(path)?),
        StoreSettings::Redis {
            urls,
            cluster,
            timeout,
        } => Arc::new(redis::RedisStore::new(urls, *cluster, *timeout)?),
    })
}
