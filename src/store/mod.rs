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

    /// Makes relaxed writes (nonces) durable; called on shutdown.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A shared store handle.
pub type SharedStore = Arc<dyn Store>;

/// Unix time in milliseconds.
pub(crate) fn now_millis() -> u64 {
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
