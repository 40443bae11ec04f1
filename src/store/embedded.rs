//! The embedded store: one file-backed redb database for a single replica.
//!
//! Every operation is one redb write transaction; redb runs write
//! transactions one at a time, which makes each check-and-record atomic.
//! Licence claims and tickets commit durably before they return. Nonces
//! commit with relaxed durability and are made durable by the next durable
//! commit, by a background flush every second, and on shutdown: a crash can
//! forget at most the last second's nonces (a replay inside that window).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{
    compound, now_millis, EnqueueOutcome, Enrolment, Failure, Job, JobState, Lease, LicenceClaim,
    NonceCheck, Store, StoreError,
};

const NONCES: TableDefinition<&str, u64> = TableDefinition::new("nonces");
const NONCE_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("nonce_expiry");
const LICENCES: TableDefinition<&str, ()> = TableDefinition::new("licences");
const LICENCE_COUNT: TableDefinition<&str, u64> = TableDefinition::new("licence_count");
const TICKETS: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("tickets");
const ENROLMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("enrolments");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox_jobs");
const DUE: TableDefinition<(u64, &str), ()> = TableDefinition::new("outbox_due");
const EVENTS: TableDefinition<&str, u64> = TableDefinition::new("events");
const EVENT_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("event_expiry");
const HEALTH: TableDefinition<&str, u64> = TableDefinition::new("health");

/// Entries removed per sweep transaction, so a sweep never holds the writer
/// for long.
const SWEEP_BATCH: usize = 5_000;

/// The embedded backend.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// `None` after a failed write poisoned the handle; the next operation
    /// reopens the file.
    db: RwLock<Option<Database>>,
    /// Set when a relaxed commit has not yet been followed by a durable one.
    dirty: AtomicBool,
    /// Set by a failed operation; `ping` then proves a write works.
    failing: AtomicBool,
}

/// Start of the message of an error after which redb refuses every
/// transaction until the database is reopened (a failed write, such as a
/// full disk).
const POISONED: &str = "the database file failed a write";

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::PreviousIo => StoreError::Unavailable(format!(
            "{POISONED} (disk full or unwritable?); it is reopened at the next operation"
        )),
        other => StoreError::Unavailable(other.to_string()),
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the database at `path`, creating its directory.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("store.path: cannot create directory {}: {e}", dir.display())
            })?;
        }
        // A store of this process dropped a moment ago may still be
        // finishing a background flush: give it a moment before calling the
        // database busy.
        let mut attempt = 0;
        let created = loop {
            match Database::create(path) {
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if attempt < 20 => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => break other,
            }
        };
        let db = created.map_err(|e| match e {
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
            txn.open_table(ENROLMENTS)?;
            txn.open_table(JOBS)?;
            txn.open_table(DUE)?;
            txn.open_table(EVENTS)?;
            txn.open_table(EVENT_EXPIRY)?;
            txn.open_table(HEALTH)?;
        }
        txn.commit()?;
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            db: RwLock::new(Some(db)),
            dirty: AtomicBool::new(false),
            failing: AtomicBool::new(false),
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
        tokio::task::spawn_blocking(move || inner.checked(f))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

impl Inner {
    /// Runs `f`, noting failures: a poisoned handle is closed so that the
    /// next operation reopens the file (recovery from a full disk without a
    /// restart).
    fn checked<T>(&self, f: impl FnOnce(&Inner) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let result = f(self);
        if let Err(e) = &result {
            self.failing.store(true, Ordering::Release);
            if matches!(e, StoreError::Unavailable(m) if m.starts_with(POISONED)) {
                let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
                if db.take().is_some() {
                    tracing::warn!(path = %self.path.display(), "embedded store: a write failed; closing the database to reopen it");
                }
            }
        }
        result
    }

    /// Calls `f` with the open database, reopening it first when a failed
    /// write closed it.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        {
            let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(db) = db.as_ref() {
                return f(db);
            }
        }
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if db.is_none() {
            let reopened = Database::create(&self.path).map_err(|e| {
                StoreError::Unavailable(format!("cannot reopen {}: {e}", self.path.display()))
            })?;
            tracing::info!(path = %self.path.display(), "embedded store reopened");
            *db = Some(reopened);
        }
        match db.as_ref() {
            Some(d) => f(d),
            None => Err(StoreError::Unavailable("the database is closed".into())),
        }
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        self.with_db(|db| db.begin_write().map_err(db_err))
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.with_db(|db| db.begin_read().map_err(db_err))
    }

    /// A small durable write: proves the file takes writes again.
    fn probe_write(&self) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut t = txn.open_table(HEALTH).map_err(db_err)?;
            t.insert("probe", crate::store::now_millis())
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    fn flush(&self) -> Result<(), StoreError> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            let txn = self.begin_write()?;
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
        let mut txn = self.begin_write()?;
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

            let mut event_expiry = txn.open_table(EVENT_EXPIRY).map_err(db_err)?;
            let mut events = txn.open_table(EVENTS).map_err(db_err)?;
            let mut due_events: Vec<(u64, String)> = Vec::new();
            for entry in event_expiry.range((0u64, "")..(now, "")).map_err(db_err)? {
                let (k, _) = entry.map_err(db_err)?;
                let (at, key) = k.value();
                due_events.push((at, key.to_string()));
                if due_events.len() >= SWEEP_BATCH {
                    break;
                }
            }
            for (at, key) in &due_events {
                event_expiry.remove((*at, key.as_str())).map_err(db_err)?;
                let still_due = events
                    .get(key.as_str())
                    .map_err(db_err)?
                    .is_some_and(|v| v.value() <= now);
                if still_due {
                    events.remove(key.as_str()).map_err(db_err)?;
                }
            }
            removed += due_events.len();
        }
        txn.commit().map_err(db_err)?;
        self.dirty.store(true, Ordering::Release);
        Ok(removed)
    }
}

async fn maintenance(inner: Weak<Inner>) {
    let period = Duration::from_secs(1);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        if inner.strong_count() == 0 {
            return;
        }
        n += 1;
        let sweep = n % 30 == 0;
        // The strong handle lives only inside the blocking job, so a store
        // dropped meanwhile closes its database as soon as the job ends.
        let weak = inner.clone();
        let result = tokio::task::spawn_blocking(move || {
            let Some(strong) = weak.upgrade() else {
                return Ok(());
            };
            strong.checked(|inner| {
                if sweep {
                    inner.sweep()?;
                }
                inner.flush()
            })
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
            if inner.failing.load(Ordering::Acquire) {
                // After a failure a read is no proof: the disk may be full.
                inner.probe_write()?;
                inner.failing.store(false, Ordering::Release);
                return Ok(());
            }
            let txn = inner.begin_read()?;
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
            let mut txn = inner.begin_write()?;
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
            let txn = inner.begin_write()?;
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
            let txn = inner.begin_write()?;
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
            let txn = inner.begin_read()?;
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
            let txn = inner.begin_write()?;
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
            let txn = inner.begin_write()?;
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

    async fn put_enrolment(
        &self,
        enrolment: &Enrolment,
        target: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let key = enrolment.key();
        let target = target.map(<[u8]>::to_vec);
        self.outbox_txn(move |t, now| {
            match &target {
                Some(bytes) => {
                    t.enrolments
                        .insert(key.as_str(), bytes.as_slice())
                        .map_err(db_err)?;
                }
                None => {
                    if t.enrolments.get(key.as_str()).map_err(db_err)?.is_none() {
                        t.enrolments.insert(key.as_str(), &[][..]).map_err(db_err)?;
                    }
                }
            }
            if target.is_none() {
                return Ok(false);
            }
            let Some(old) = load_job(&t.jobs, &key)? else {
                return Ok(false);
            };
            if old.state != JobState::Waiting {
                return Ok(false);
            }
            let mut job = old.clone();
            job.state = JobState::Pending;
            job.next_at_ms = now;
            save_job(&mut t.jobs, &mut t.due, &key, Some(&old), Some(&job))?;
            Ok(true)
        })
        .await
    }

    async fn get_enrolment(
        &self,
        enrolment: &Enrolment,
    ) -> Result<Option<Option<Vec<u8>>>, StoreError> {
        let key = enrolment.key();
        self.blocking(move |inner| {
            let txn = inner.begin_read()?;
            let t = txn.open_table(ENROLMENTS).map_err(db_err)?;
            Ok(t.get(key.as_str()).map_err(db_err)?.map(|v| {
                let b = v.value();
                (!b.is_empty()).then(|| b.to_vec())
            }))
        })
        .await
    }

    async fn enqueue(
        &self,
        enrolment: &Enrolment,
        event_id: &str,
        score: f64,
        event_ttl: Duration,
    ) -> Result<EnqueueOutcome, StoreError> {
        let key = enrolment.key();
        let event_key = compound(&[&key, event_id]);
        let enrolment = enrolment.clone();
        let event_id = event_id.to_string();
        let ttl = ms(event_ttl);
        self.outbox_txn(move |t, now| {
            if !check_event(&mut t.events, &mut t.event_expiry, &event_key, now, ttl)? {
                return Ok(EnqueueOutcome::Duplicate);
            }
            let has_target = t
                .enrolments
                .get(key.as_str())
                .map_err(db_err)?
                .is_some_and(|v| !v.value().is_empty());
            let old = load_job(&t.jobs, &key)?;
            let live = old.as_ref().filter(|j| j.state != JobState::Dead);
            let leased = old.as_ref().filter(|j| j.lease_until_ms > now);
            let job = Job {
                enrolment,
                event_id,
                score,
                version: old.as_ref().map_or(1, |j| j.version + 1),
                attempts: 0,
                state: if has_target {
                    JobState::Pending
                } else {
                    JobState::Waiting
                },
                next_at_ms: now,
                created_ms: live.map_or(now, |j| j.created_ms),
                lease_until_ms: leased.map_or(0, |j| j.lease_until_ms),
                lease_token: leased.map(|j| j.lease_token.clone()).unwrap_or_default(),
                last_error: None,
            };
            save_job(&mut t.jobs, &mut t.due, &key, old.as_ref(), Some(&job))?;
            Ok(if has_target {
                EnqueueOutcome::Queued
            } else {
                EnqueueOutcome::Waiting
            })
        })
        .await
    }

    async fn remember_event(
        &self,
        enrolment: &Enrolment,
        event_id: &str,
        event_ttl: Duration,
    ) -> Result<bool, StoreError> {
        let event_key = compound(&[&enrolment.key(), event_id]);
        let ttl = ms(event_ttl);
        self.outbox_txn(move |t, now| {
            check_event(&mut t.events, &mut t.event_expiry, &event_key, now, ttl)
        })
        .await
    }

    async fn lease_due(&self, lease: Duration, max: usize) -> Result<Vec<Lease>, StoreError> {
        let lease_ms = ms(lease);
        // A read first: polling an empty outbox must not cost a durable commit.
        let any_due = self
            .blocking(|inner| {
                let txn = inner.begin_read()?;
                let due = txn.open_table(DUE).map_err(db_err)?;
                let first = due.first().map_err(db_err)?;
                Ok(first.is_some_and(|(k, _)| k.value().0 <= now_millis()))
            })
            .await?;
        if !any_due {
            return Ok(Vec::new());
        }
        self.outbox_txn(move |t, now| {
            let mut keys = Vec::new();
            for entry in t
                .due
                .range((0u64, "")..=(now, "\u{10FFFF}"))
                .map_err(db_err)?
            {
                let (k, _) = entry.map_err(db_err)?;
                keys.push(k.value().1.to_string());
                if keys.len() >= max {
                    break;
                }
            }
            let mut leases = Vec::new();
            for key in keys {
                let Some(old) = load_job(&t.jobs, &key)? else {
                    continue;
                };
                let mut job = old.clone();
                job.lease_until_ms = now.saturating_add(lease_ms);
                job.lease_token = new_token();
                save_job(&mut t.jobs, &mut t.due, &key, Some(&old), Some(&job))?;
                leases.push(Lease {
                    token: job.lease_token.clone(),
                    job,
                });
            }
            Ok(leases)
        })
        .await
    }

    async fn complete(&self, lease: &Lease) -> Result<bool, StoreError> {
        let key = lease.job.enrolment.key();
        let lease = lease.clone();
        self.outbox_txn(move |t, now| {
            let Some(old) = load_job(&t.jobs, &key)? else {
                return Ok(false);
            };
            if old.lease_token != lease.token {
                return Ok(false);
            }
            if old.version == lease.job.version {
                save_job(&mut t.jobs, &mut t.due, &key, Some(&old), None)?;
            } else {
                let mut job = old.clone();
                job.lease_until_ms = 0;
                job.lease_token.clear();
                job.next_at_ms = now;
                save_job(&mut t.jobs, &mut t.due, &key, Some(&old), Some(&job))?;
            }
            Ok(true)
        })
        .await
    }

    async fn fail(&self, lease: &Lease, failure: Failure, error: &str) -> Result<bool, StoreError> {
        let key = lease.job.enrolment.key();
        let lease = lease.clone();
        let error = error.to_string();
        self.outbox_txn(move |t, now| {
            let Some(old) = load_job(&t.jobs, &key)? else {
                return Ok(false);
            };
            if old.lease_token != lease.token {
                return Ok(false);
            }
            let mut job = old.clone();
            job.lease_until_ms = 0;
            job.lease_token.clear();
            if old.version != lease.job.version {
                job.next_at_ms = now;
            } else {
                job.attempts = lease.job.attempts.saturating_add(1);
                job.last_error = Some(error);
                match failure {
                    Failure::Dead => job.state = JobState::Dead,
                    Failure::RetryAt(at) => job.next_at_ms = at,
                }
            }
            save_job(&mut t.jobs, &mut t.due, &key, Some(&old), Some(&job))?;
            Ok(true)
        })
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let key = lease.job.enrolment.key();
        let token = lease.token.clone();
        self.outbox_txn(move |t, now| {
            let Some(old) = load_job(&t.jobs, &key)? else {
                return Ok(());
            };
            if old.lease_token != token {
                return Ok(());
            }
            let mut job = old.clone();
            job.lease_until_ms = 0;
            job.lease_token.clear();
            job.next_at_ms = now;
            save_job(&mut t.jobs, &mut t.due, &key, Some(&old), Some(&job))
        })
        .await
    }

    async fn outbox_jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.blocking(|inner| {
            let txn = inner.begin_read()?;
            let t = txn.open_table(JOBS).map_err(db_err)?;
            let mut out = Vec::new();
            for entry in t.iter().map_err(db_err)? {
                let (_, v) = entry.map_err(db_err)?;
                out.push(
                    serde_json::from_slice(v.value())
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                );
            }
            Ok(out)
        })
        .await
    }

    async fn retry_dead(&self, id: Option<&str>) -> Result<usize, StoreError> {
        let wanted = match id {
            Some(id) => match Enrolment::key_from_id(id) {
                Some(k) => Some(k),
                None => return Ok(0),
            },
            None => None,
        };
        self.outbox_txn(move |t, now| {
            let keys: Vec<String> = match wanted {
                Some(k) => vec![k],
                None => {
                    let mut all = Vec::new();
                    for entry in t.jobs.iter().map_err(db_err)? {
                        let (k, _) = entry.map_err(db_err)?;
                        all.push(k.value().to_string());
                    }
                    all
                }
            };
            let mut n = 0;
            for key in keys {
                let Some(old) = load_job(&t.jobs, &key)? else {
                    continue;
                };
                if old.state != JobState::Dead {
                    continue;
                }
                let mut job = old.clone();
                job.state = JobState::Pending;
                job.attempts = 0;
                job.next_at_ms = now;
                job.last_error = None;
                save_job(&mut t.jobs, &mut t.due, &key, Some(&old), Some(&job))?;
                n += 1;
            }
            Ok(n)
        })
        .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.blocking(|inner| inner.flush()).await
    }
}

/// When a job is due in the index: pending jobs at their lease expiry
/// while leased, else at `next_at`.
fn due_of(job: &Job) -> Option<u64> {
    let at = if job.lease_until_ms > 0 {
        job.lease_until_ms
    } else {
        job.next_at_ms
    };
    (job.state == JobState::Pending).then_some(at)
}

fn load_job(jobs: &redb::Table<&str, &[u8]>, key: &str) -> Result<Option<Job>, StoreError> {
    match jobs.get(key).map_err(db_err)? {
        Some(v) => serde_json::from_slice(v.value())
            .map(Some)
            .map_err(|e| StoreError::Corrupt(e.to_string())),
        None => Ok(None),
    }
}

/// Writes `new` (or deletes when `None`), keeping the due index in step
/// with `old`.
fn save_job(
    jobs: &mut redb::Table<&str, &[u8]>,
    due: &mut redb::Table<(u64, &str), ()>,
    key: &str,
    old: Option<&Job>,
    new: Option<&Job>,
) -> Result<(), StoreError> {
    if let Some(at) = old.and_then(due_of) {
        due.remove((at, key)).map_err(db_err)?;
    }
    match new {
        Some(job) => {
            let bytes = serde_json::to_vec(job).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            jobs.insert(key, bytes.as_slice()).map_err(db_err)?;
            if let Some(at) = due_of(job) {
                due.insert((at, key), ()).map_err(db_err)?;
            }
        }
        None => {
            jobs.remove(key).map_err(db_err)?;
        }
    }
    Ok(())
}

fn check_event(
    events: &mut redb::Table<&str, u64>,
    expiry: &mut redb::Table<(u64, &str), ()>,
    key: &str,
    now: u64,
    ttl_ms: u64,
) -> Result<bool, StoreError> {
    let seen = events.get(key).map_err(db_err)?.map(|v| v.value());
    if seen.is_some_and(|until| until > now) {
        return Ok(false);
    }
    let until = now.saturating_add(ttl_ms);
    events.insert(key, until).map_err(db_err)?;
    expiry.insert((until, key), ()).map_err(db_err)?;
    Ok(true)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl EmbeddedStore {
    /// Runs `f` in one durable write transaction on the outbox tables.
    async fn outbox_txn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut OutboxTables<'_>, u64) -> Result<T, StoreError> + Send + 'static,
    {
        self.blocking(move |inner| {
            let txn = inner.begin_write()?;
            let out = {
                let mut t = OutboxTables {
                    enrolments: txn.open_table(ENROLMENTS).map_err(db_err)?,
                    jobs: txn.open_table(JOBS).map_err(db_err)?,
                    due: txn.open_table(DUE).map_err(db_err)?,
                    events: txn.open_table(EVENTS).map_err(db_err)?,
                    event_expiry: txn.open_table(EVENT_EXPIRY).map_err(db_err)?,
                };
                f(&mut t, now_millis())?
            };
            txn.commit().map_err(db_err)?;
            Ok(out)
        })
        .await
    }
}

struct OutboxTables<'t> {
    enrolments: redb::Table<'t, &'static str, &'static [u8]>,
    jobs: redb::Table<'t, &'static str, &'static [u8]>,
    due: redb::Table<'t, (u64, &'static str), ()>,
    events: redb::Table<'t, &'static str, u64>,
    event_expiry: redb::Table<'t, (u64, &'static str), ()>,
}

fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 12];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
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
