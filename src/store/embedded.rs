//! The embedded store: one file-backed redb database for a single replica.
//!
//! Every operation is one redb write transaction; redb runs write
//! transactions one at a time, which makes each check-and-record atomic.
//! Licence claims and tickets commit durably before they return. Nonces
//! commit with relaxed durability and are made durable by the next durable
//! commit, by a background flush every second, and on shutdown: a crash can
//! forget at most the last second's nonces (a replay inside that window).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{now_millis, LicenceClaim, NonceCheck, Store, StoreError};

const NONCES: TableDefinition<&str, u64> = TableDefinition::new("nonces");
const NONCE_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("nonce_expiry");
const LICENCES: TableDefinition<&str, ()> = TableDefinition::new("licences");
const LICENCE_COUNT: TableDefinition<&str, u64> = TableDefinition::new("licence_count");
const TICKETS: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("tickets");

/// Entries removed per sweep transaction, so a sweep never holds the writer
/// for long.
const SWEEP_BATCH: usize = 5_000;

/// The embedded backend.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    /// Set when a relaxed commit has not yet been followed by a durable one.
    dirty: AtomicBool,
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Unavailable(e.into().to_string())
}

/// Length-prefixed concatenation: unambiguous whatever the parts contain.
fn compound(parts: &[&str]) -> String {
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

impl EmbeddedStore {
    /// Opens (or creates) the database at `path`, creating its directory.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("store.path: cannot create directory {}: {e}", dir.display())
            })?;
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => anyhow::anyhow!(
                "store.path: {} is already open in another ltigate process (the embedded store serves one replica; use Redis for several)",
                path.display()
            ),
            other => anyhow::anyhow!("store.path: cannot open {}: {other}", path.display()),
        })?;
        // Create every table up front so readers never see a missing table.
        let txn = db.begin_write()?;
        {
            txn.open_table(NONCES)?;
            txn.open_table(NONCE_EXPIRY)?;
            txn.open_table(LICENCES)?;
            txn.open_table(LICENCE_COUNT)?;
            txn.open_table(TICKETS)?;
        }
        txn.commit()?;
        let inner = Arc::new(Inner {
            db,
            dirty: AtomicBool::new(false),
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(maintenance(Arc::downgrade(&inner)));
        }
        Ok(EmbeddedStore { inner })
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

impl Inner {
    fn flush(&self) -> Result<(), StoreError> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            let txn = self.db.begin_write().map_err(db_err)?;
            if let Err(e) = txn.commit() {
                self.dirty.store(true, Ordering::Release);
                return Err(db_err(e));
            }
        }
        Ok(())
    }

    /// Removes expired nonces and tickets; returns how many were removed.
    fn sweep(&self) -> Result<usize, StoreError> {
        let now = now_millis();
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::None).map_err(db_err)?;
        let mut removed = 0;
        {
            let mut expiry = txn.open_table(NONCE_EXPIRY).map_err(db_err)?;
            let mut nonces = txn.open_table(NONCES).map_err(db_err)?;
            let mut due: Vec<(u64, String)> = Vec::new();
            for entry in expiry.range((0u64, "")..(now, "")).map_err(db_err)? {
                let (k, _) = entry.map_err(db_err)?;
                let (at, key) = k.value();
                due.push((at, key.to_string()));
                if due.len() >= SWEEP_BATCH {
                    break;
                }
            }
            for (at, key) in &due {
                expiry.remove((*at, key.as_str())).map_err(db_err)?;
                let still_due = nonces
                    .get(key.as_str())
                    .map_err(db_err)?
                    .is_some_and(|v| v.value() <= now);
                if still_due {
                    nonces.remove(key.as_str()).map_err(db_err)?;
                }
            }
            removed += due.len();
            let mut tickets = txn.open_table(TICKETS).map_err(db_err)?;
            let expired: Vec<String> = tickets
                .iter()
                .map_err(db_err)?
                .filter_map(Result::ok)
                .filter(|(_, v)| v.value().0 <= now)
                .map(|(k, _)| k.value().to_string())
                .take(SWEEP_BATCH)
                .collect();
            for t in &expired {
                tickets.remove(t.as_str()).map_err(db_err)?;
            }
            removed += expired.len();
        }
        txn.commit().map_err(db_err)?;
        self.dirty.store(true, Ordering::Release);
        Ok(removed)
    }
}

async fn maintenance(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        n += 1;
        let sweep = n % 30 == 0;
        let result = tokio::task::spawn_blocking(move || {
            if sweep {
                strong.sweep()?;
            }
            strong.flush()
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "embedded store maintenance failed"),
            Err(e) => tracing::warn!(error = %e, "embedded store maintenance task failed"),
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|inner| {
            let txn = inner.db.begin_read().map_err(db_err)?;
            txn.open_table(NONCES).map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn record_nonce(
        &self,
        consumer_key: &str,
        nonce: &str,
        ttl: Duration,
    ) -> Result<NonceCheck, StoreError> {
        let key = compound(&[consumer_key, nonce]);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.blocking(move |inner| {
            let now = now_millis();
            let expires = now.saturating_add(ttl_ms);
            let mut txn = inner.db.begin_write().map_err(db_err)?;
            txn.set_durability(Durability::None).map_err(db_err)?;
            let outcome = {
                let mut nonces = txn.open_table(NONCES).map_err(db_err)?;
                let seen = nonces.get(key.as_str()).map_err(db_err)?.map(|v| v.value());
                match seen {
                    Some(until) if until > now => NonceCheck::Replayed,
                    _ => {
                        nonces.insert(key.as_str(), expires).map_err(db_err)?;
                        let mut expiry = txn.open_table(NONCE_EXPIRY).map_err(db_err)?;
                        expiry.insert((expires, key.as_str()), ()).map_err(db_err)?;
                        NonceCheck::Fresh
                    }
                }
            };
            if outcome == NonceCheck::Fresh {
                txn.commit().map_err(db_err)?;
                inner.dirty.store(true, Ordering::Release);
            } else {
                txn.abort().map_err(db_err)?;
            }
            Ok(outcome)
        })
        .await
    }

    async fn claim_licence(
        &self,
        consumer: &str,
        course: &str,
        learner: &str,
        cap: Option<u64>,
    ) -> Result<LicenceClaim, StoreError> {
        let key = compound(&[consumer, course, learner]);
        let consumer = consumer.to_string();
        self.blocking(move |inner| {
            let txn = inner.db.begin_write().map_err(db_err)?;
            let claim = {
                let mut licences = txn.open_table(LICENCES).map_err(db_err)?;
                let mut counts = txn.open_table(LICENCE_COUNT).map_err(db_err)?;
                if licences.get(key.as_str()).map_err(db_err)?.is_some() {
                    LicenceClaim::Existing
                } else {
                    let used = counts
                        .get(consumer.as_str())
                        .map_err(db_err)?
                        .map(|v| v.value())
                        .unwrap_or(0);
                    if cap.is_some_and(|c| used >= c) {
                        LicenceClaim::Exhausted
                    } else {
                        licences.insert(key.as_str(), ()).map_err(db_err)?;
                        counts.insert(consumer.as_str(), used + 1).map_err(db_err)?;
                        LicenceClaim::New { used: used + 1 }
                    }
                }
            };
            match claim {
                LicenceClaim::New { .. } => {
                    txn.commit().map_err(db_err)?;
                }
                _ => txn.abort().map_err(db_err)?,
            }
            Ok(claim)
        })
        .await
    }

    async fn release_licence(
        &self,
        consumer: &str,
        course: &str,
        learner: &str,
    ) -> Result<(), StoreError> {
        let key = compound(&[consumer, course, learner]);
        let consumer = consumer.to_string();
        self.blocking(move |inner| {
            let txn = inner.db.begin_write().map_err(db_err)?;
            {
                let mut licences = txn.open_table(LICENCES).map_err(db_err)?;
                if licences.remove(key.as_str()).map_err(db_err)?.is_some() {
                    let mut counts = txn.open_table(LICENCE_COUNT).map_err(db_err)?;
                    let used = counts
                        .get(consumer.as_str())
                        .map_err(db_err)?
                        .map(|v| v.value())
                        .unwrap_or(0);
                    counts
                        .insert(consumer.as_str(), used.saturating_sub(1))
                        .map_err(db_err)?;
                }
            }
            txn.commit().map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn licences_used(&self, consumer: &str) -> Result<u64, StoreError> {
        let consumer = consumer.to_string();
        self.blocking(move |inner| {
            let txn = inner.db.begin_read().map_err(db_err)?;
            let counts = txn.open_table(LICENCE_COUNT).map_err(db_err)?;
            Ok(counts
                .get(consumer.as_str())
                .map_err(db_err)?
                .map(|v| v.value())
                .unwrap_or(0))
        })
        .await
    }

    async fn put_ticket(
        &self,
        ticket: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let ticket = ticket.to_string();
        let value = value.to_vec();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.blocking(move |inner| {
            let expires = now_millis().saturating_add(ttl_ms);
            let txn = inner.db.begin_write().map_err(db_err)?;
            {
                let mut tickets = txn.open_table(TICKETS).map_err(db_err)?;
                tickets
                    .insert(ticket.as_str(), (expires, value.as_slice()))
                    .map_err(db_err)?;
            }
            txn.commit().map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn take_ticket(&self, ticket: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let ticket = ticket.to_string();
        self.blocking(move |inner| {
            let txn = inner.db.begin_write().map_err(db_err)?;
            let taken = {
                let mut tickets = txn.open_table(TICKETS).map_err(db_err)?;
                let removed = tickets.remove(ticket.as_str()).map_err(db_err)?;
                removed.and_then(|v| {
                    let (expires, bytes) = v.value();
                    (expires > now_millis()).then(|| bytes.to_vec())
                })
            };
            txn.commit().map_err(db_err)?;
            Ok(taken)
        })
        .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.blocking(|inner| inner.flush()).await
    }
}

#[cfg(test)]
mod tests {
    use super::compound;

    #[test]
    fn compound_keys_are_unambiguous() {
        assert_ne!(compound(&["a:b", "c"]), compound(&["a", "b:c"]));
        assert_ne!(compound(&["ab", "c", "d"]), compound(&["a", "bc", "d"]));
    }
}
