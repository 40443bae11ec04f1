//! The embedded store: one file-backed redb database for a single replica.
//!
//! Where each thing lives, and what a crash can lose:
//!
//! - **Licence claims, enrolments with their outcome targets, outbox jobs
//!   and remembered webhook events** are written by one writer thread
//!   ([`writer`]) in durable transactions, and a caller is answered only
//!   after the commit that holds its write. Writes that arrive together
//!   share one transaction and one fsync (group commit).
//! - **Nonces and launch tickets** live in memory ([`memory`]): checked and
//!   changed on the caller's task, under one of 32 shard locks, without a
//!   database transaction. What changed is written behind: about every
//!   100 ms the writer commits it to the database, durably, and open reads
//!   it back. A crash (not a shutdown, which flushes, nor dropping the
//!   store) can therefore forget the nonces and tickets of the last
//!   ~100 ms: such a launch could be replayed within its timestamp window,
//!   and a learner whose ticket was forgotten is told at `/lti/continue`
//!   that it expired and launches again. A ticket taken in that window can
//!   come back after the crash, until it expires (60 s at most). While the
//!   write-behind fails (a full disk) new nonces and tickets are refused, so
//!   launches fail closed and the window does not grow.
//!
//!   In the database both are keyed by expiry first, so that writing them
//!   appends and sweeping them takes from the front. A ticket's value
//!   leaves memory once written; taking such a ticket reads it back (a read
//!   transaction, no write).
//!
//!   The write-behind commits durably rather than with relaxed durability
//!   plus a periodic durable flush: at most ten fsyncs a second, on the
//!   writer thread and never on a request's path, and no second clock to
//!   reason about — what is in the database after a crash is what the
//!   last write-behind committed.
//! - **Reads first.** A returning learner's launch writes nothing but its
//!   nonce and ticket: `claim_licence` and `put_enrolment` look in a read
//!   transaction first and queue a write only for a new licence, a changed
//!   target or a waiting job to activate (the write re-checks: the read is
//!   only a shortcut). What such a read found is remembered ([`known`]:
//!   licences that exist, enrolments whose target is unchanged), so the
//!   next launch of the same learner needs no read either.
//!
//! Atomicity: a nonce is checked and recorded, and a ticket taken, under its
//! shard's lock; every other check-and-write is one operation inside one
//! write transaction, which redb runs one at a time.

mod known;
mod memory;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableHandle,
    WriteTransaction,
};

use self::known::Known;
use self::memory::{digest16, Digest16, Memory, Taken, Write};
use self::writer::Writer;
use super::{
    compound, now_millis, EnqueueOutcome, Enrolment, Failure, Job, JobState, Lease, LicenceClaim,
    NonceCheck, Store, StoreError,
};

/// Nonces by expiry: (expiry, compound key). Written in the order they
/// come, which is nearly the order of their expiry, so that writing and
/// sweeping them touches few pages.
const NONCE_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("nonce_expiry");
/// Nonce → expiry, written by earlier versions beside `nonce_expiry`; no
/// longer written, and emptied by the sweep.
const NONCES: TableDefinition<&str, u64> = TableDefinition::new("nonces");
const LICENCES: TableDefinition<&str, ()> = TableDefinition::new("licences");
const LICENCE_COUNT: TableDefinition<&str, u64> = TableDefinition::new("licence_count");
/// Tickets by expiry: (expiry, ticket) → value, for the same reason.
const TICKETS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("tickets_by_expiry");
/// Ticket → (expiry, value), as earlier versions kept them; moved into
/// `tickets_by_expiry` at open.
const LEGACY_TICKETS: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("tickets");
const ENROLMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("enrolments");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox_jobs");
const DUE: TableDefinition<(u64, &str), ()> = TableDefinition::new("outbox_due");
const EVENTS: TableDefinition<&str, u64> = TableDefinition::new("events");
const EVENT_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("event_expiry");
const HEALTH: TableDefinition<&str, u64> = TableDefinition::new("health");
/// AGS score key → the last score timestamp sent (unix ms).
const SCORE_TIMES: TableDefinition<&str, u64> = TableDefinition::new("score_times");

/// Rows removed per sweep transaction, so that a sweep never holds the
/// writer for long; a sweep runs as many as it needs.
const SWEEP_BATCH: usize = 5_000;

/// How often expired nonces, tickets and event ids are swept.
const SWEEP_PERIOD: Duration = Duration::from_secs(30);

/// How many licences, and how many enrolments, are remembered as known:
/// a few MB at most; beyond that a returning learner's launch reads again.
const KNOWN_CAPACITY: usize = 65_536;

/// The embedded backend.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    /// The only handle to the writer thread: dropping the store stops it.
    writer: Arc<Writer>,
}

struct Inner {
    path: PathBuf,
    /// `None` after a failed write poisoned the handle; the next operation
    /// reopens the file.
    db: RwLock<Option<Database>>,
    /// Set by a failed operation; `ping` then proves a write works.
    failing: AtomicBool,
    /// Set while the write-behind fails: new nonces and tickets are
    /// refused until it succeeds again.
    behind_failed: AtomicBool,
    /// Nonces and tickets.
    memory: Memory,
    /// Licences known to exist.
    licences: Known<()>,
    /// Enrolments known to exist: with the target of this digest and no
    /// job waiting for a target, or (`None`) with a target not known here.
    /// No outbox operation makes either false: a job is queued as waiting
    /// only while the stored target is empty, and empty targets are never
    /// remembered; a new target is written by `put_enrolment`, which
    /// forgets.
    enrolments: Known<Option<Digest16>>,
}

/// Start of the message of an error after which redb refuses every
/// transaction until the database is reopened: a failed write (such as a
/// full disk) or any other I/O error.
const POISONED: &str = "the database file failed";

/// Why a nonce or ticket is refused while the write-behind fails.
const BEHIND_FAILED: &str = "recent nonces and tickets cannot be written to the database (disk full or unwritable?); launches resume once they are";

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::PreviousIo => StoreError::Unavailable(format!(
            "{POISONED} a write (disk full or unwritable?); it is reopened at the next operation"
        )),
        redb::Error::Io(e) => StoreError::Unavailable(format!(
            "{POISONED} an I/O operation ({e}); it is reopened at the next operation"
        )),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// Whether `e` left the database handle unusable until it is reopened.
fn is_poisoned(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(m) if m.starts_with(POISONED))
}

/// redb's page cache. Its default (1 GiB) would let a busy store grow the
/// process far beyond what a sidecar is given; the working set of launches
/// (licences, targets, recent tickets) fits in far less, and the operating
/// system's page cache still holds the rest of the file.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Opens or creates the database file with ltigate's cache size.
fn open_database(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(path)
}

impl EmbeddedStore {
    /// Opens (or creates) the database at `path`, creating its directory,
    /// and reads the unexpired nonces and tickets back into memory.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("store.path: cannot create directory {}: {e}", dir.display())
            })?;
        }
        let db = create_database(path)?;
        let memory = create_tables(&db)
            .and_then(|()| reload(&db))
            .map_err(|e| anyhow::anyhow!("store.path: cannot open {}: {e}", path.display()))?;
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            db: RwLock::new(Some(db)),
            failing: AtomicBool::new(false),
            behind_failed: AtomicBool::new(false),
            memory,
            licences: Known::new(KNOWN_CAPACITY),
            enrolments: Known::new(KNOWN_CAPACITY),
        });
        let writer = Writer::start(inner.clone()).map_err(|e| {
            anyhow::anyhow!("store: cannot start the embedded store's writer thread: {e}")
        })?;
        let writer = Arc::new(writer);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(maintenance(Arc::downgrade(&inner), Arc::downgrade(&writer)));
        }
        Ok(EmbeddedStore { inner, writer })
    }

    /// Runs `f` in a read transaction on a blocking thread.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner.checked(|inner| {
                let txn = inner.begin_read()?;
                f(&txn)
            })
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    /// The nonce and ticket tables, unless their writes are failing.
    fn memory(&self) -> Result<&Memory, StoreError> {
        if self.inner.behind_failed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable(BEHIND_FAILED.into()));
        }
        Ok(&self.inner.memory)
    }

    /// Runs `f` in the writer's next batch on the outbox tables.
    async fn outbox<T, F>(&self, mut f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut OutboxTables<'_>, u64) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer
            .submit(move |txn, now| f(&mut OutboxTables::open(txn)?, now))
            .await
    }
}

/// Creates or opens the file. A store of this process dropped a moment ago
/// may still be closing it (its writer writes what memory held): wait a
/// moment before calling the database busy.
fn create_database(path: &Path) -> anyhow::Result<Database> {
    let mut attempt = 0;
    let created = loop {
        match open_database(path) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if attempt < 20 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            other => break other,
        }
    };
    created.map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => anyhow::anyhow!(
            "store.path: {} is already open in another ltigate process (the embedded store serves one replica; use Redis for several)",
            path.display()
        ),
        other => anyhow::anyhow!("store.path: cannot open {}: {other}", path.display()),
    })
}

/// Creates every table up front so that readers never see a missing one,
/// and moves the tickets of an earlier version's table.
fn create_tables(db: &Database) -> Result<(), redb::Error> {
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
        txn.open_table(SCORE_TIMES)?;
    }
    let legacy = txn
        .list_tables()?
        .any(|t| t.name() == LEGACY_TICKETS.name());
    if legacy {
        move_legacy_tickets(&txn)?;
    }
    txn.commit()?;
    Ok(())
}

/// Moves the unexpired tickets of the earlier table into `tickets_by_expiry`
/// and deletes the earlier table.
fn move_legacy_tickets(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let now = now_millis();
    {
        let legacy = txn.open_table(LEGACY_TICKETS)?;
        let mut tickets = txn.open_table(TICKETS)?;
        for entry in legacy.iter()? {
            let (ticket, v) = entry?;
            let (expires, value) = v.value();
            if expires > now {
                tickets.insert((expires, ticket.value()), value)?;
            }
        }
    }
    txn.delete_table(LEGACY_TICKETS)?;
    Ok(())
}

/// Reads the unexpired nonces and tickets into memory.
fn reload(db: &Database) -> Result<Memory, redb::Error> {
    let memory = Memory::new();
    // Unexpired: from the first key of the next millisecond on.
    let unexpired = (now_millis().saturating_add(1), "")..;
    let txn = db.begin_read()?;
    for entry in txn.open_table(NONCE_EXPIRY)?.range(unexpired.clone())? {
        let (k, _) = entry?;
        let (expires, key) = k.value();
        memory.load_nonce(key, expires);
    }
    for entry in txn.open_table(TICKETS)?.range(unexpired)? {
        let (k, _) = entry?;
        let (expires, ticket) = k.value();
        memory.load_ticket(ticket, expires);
    }
    Ok(memory)
}

impl Inner {
    /// Runs `f`, noting a failure.
    fn checked<T>(&self, f: impl FnOnce(&Inner) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let result = f(self);
        if let Err(e) = &result {
            self.note_failure(e);
        }
        result
    }

    /// Notes a failed operation for `ping`; a poisoned handle is closed so
    /// that the next operation reopens the file (recovery from a full disk
    /// without a restart).
    fn note_failure(&self, e: &StoreError) {
        self.failing.store(true, Ordering::Release);
        if is_poisoned(e) {
            let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
            if db.take().is_some() {
                tracing::warn!(path = %self.path.display(), "embedded store: a write failed; closing the database to reopen it");
            }
        }
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
            let reopened = open_database(&self.path).map_err(|e| {
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

    fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        self.with_db(|db| db.begin_write().map_err(db_err))
    }

    fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        self.with_db(|db| db.begin_read().map_err(db_err))
    }
}

/// A small write: proves that the file takes writes.
fn probe(txn: &WriteTransaction, now: u64) -> Result<(), StoreError> {
    let mut t = txn.open_table(HEALTH).map_err(db_err)?;
    t.insert("probe", now).map_err(db_err)?;
    Ok(())
}

/// The writer's write-behind step: the nonces and ticket changes queued in
/// memory, in order. With none (a retry after a failure) it writes a probe
/// row instead, which proves that writing works again.
fn write_behind(txn: &WriteTransaction, writes: &[Write], now: u64) -> Result<(), StoreError> {
    if writes.is_empty() {
        return probe(txn, now);
    }
    let mut nonces = txn.open_table(NONCE_EXPIRY).map_err(db_err)?;
    let mut tickets = txn.open_table(TICKETS).map_err(db_err)?;
    for write in writes {
        match write {
            Write::Nonce { key, expires_ms } => {
                if *expires_ms > now {
                    nonces
                        .insert((*expires_ms, key.as_str()), ())
                        .map_err(db_err)?;
                }
            }
            Write::PutTicket {
                ticket,
                expires_ms,
                value,
            } => {
                if *expires_ms > now {
                    tickets
                        .insert((*expires_ms, ticket.as_str()), &value[..])
                        .map_err(db_err)?;
                }
            }
            Write::RemoveTicket { ticket, expires_ms } => {
                tickets
                    .remove((*expires_ms, ticket.as_str()))
                    .map_err(db_err)?;
            }
        }
    }
    Ok(())
}

/// Removes up to [`SWEEP_BATCH`] expired nonces, as many expired tickets
/// and as many expired event ids; returns the largest count (a full batch:
/// run another).
fn sweep_rows(txn: &WriteTransaction, now: u64) -> Result<usize, StoreError> {
    let nonces = {
        let mut expiry = txn.open_table(NONCE_EXPIRY).map_err(db_err)?;
        let mut legacy = txn.open_table(NONCES).map_err(db_err)?;
        sweep_expiring(&mut expiry, &mut legacy, now)?
    };
    let tickets = {
        let mut tickets = txn.open_table(TICKETS).map_err(db_err)?;
        sweep_tickets(&mut tickets, now)?
    };
    let events = {
        let mut expiry = txn.open_table(EVENT_EXPIRY).map_err(db_err)?;
        let mut values = txn.open_table(EVENTS).map_err(db_err)?;
        sweep_expiring(&mut expiry, &mut values, now)?
    };
    Ok(nonces.max(tickets).max(events))
}

/// The first [`SWEEP_BATCH`] `(expiry, key)` entries of a table keyed by
/// expiry that are due by `now`, oldest first.
fn due_batch<V: redb::Value + 'static>(
    table: &impl ReadableTable<(u64, &'static str), V>,
    now: u64,
) -> Result<Vec<(u64, String)>, StoreError> {
    let mut due = Vec::new();
    for entry in table.range((0u64, "")..(now, "")).map_err(db_err)? {
        let (k, _) = entry.map_err(db_err)?;
        let (at, key) = k.value();
        due.push((at, key.to_string()));
        if due.len() >= SWEEP_BATCH {
            break;
        }
    }
    Ok(due)
}

/// One batch of expired tickets, from the front of the table.
fn sweep_tickets(
    tickets: &mut redb::Table<(u64, &'static str), &'static [u8]>,
    now: u64,
) -> Result<usize, StoreError> {
    let due = due_batch(tickets, now)?;
    for (at, ticket) in &due {
        tickets.remove((*at, ticket.as_str())).map_err(db_err)?;
    }
    Ok(due.len())
}

/// One batch of an expiry index: removes the index entries due by `now`
/// and their rows in `values`, unless a row was renewed (it has a later
/// entry).
fn sweep_expiring(
    expiry: &mut redb::Table<(u64, &'static str), ()>,
    values: &mut redb::Table<&'static str, u64>,
    now: u64,
) -> Result<usize, StoreError> {
    let due = due_batch(expiry, now)?;
    for (at, key) in &due {
        expiry.remove((*at, key.as_str())).map_err(db_err)?;
        let still_due = values
            .get(key.as_str())
            .map_err(db_err)?
            .is_some_and(|v| v.value() <= now);
        if still_due {
            values.remove(key.as_str()).map_err(db_err)?;
        }
    }
    Ok(due.len())
}

/// Sweeps every [`SWEEP_PERIOD`] until the store is dropped.
async fn maintenance(inner: Weak<Inner>, writer: Weak<Writer>) {
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_PERIOD, SWEEP_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match sweep(&inner, &writer).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => tracing::warn!(error = %e, "embedded store sweep failed"),
        }
    }
}

/// Forgets expired nonces and tickets in memory, then removes expired rows
/// in batches. Holds the store only for a moment at a time, so that
/// dropping it is not held up. False when the store was dropped.
async fn sweep(inner: &Weak<Inner>, writer: &Weak<Writer>) -> Result<bool, StoreError> {
    if writer.strong_count() == 0 {
        return Ok(false);
    }
    let Some(strong) = inner.upgrade() else {
        return Ok(false);
    };
    tokio::task::spawn_blocking(move || strong.memory.sweep(now_millis()))
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?;
    loop {
        let Some(w) = writer.upgrade() else {
            return Ok(false);
        };
        let batch = w.submit(sweep_rows);
        drop(w);
        if batch.await? < SWEEP_BATCH {
            return Ok(true);
        }
    }
}

/// Whether a launch's `put_enrolment` would change nothing: the entry
/// exists, with the same target or with none given, and no waiting job
/// needs activating.
fn enrolment_unchanged(
    txn: &ReadTransaction,
    key: &str,
    target: Option<&[u8]>,
) -> Result<bool, StoreError> {
    let enrolments = txn.open_table(ENROLMENTS).map_err(db_err)?;
    let Some(stored) = enrolments.get(key).map_err(db_err)? else {
        return Ok(false);
    };
    match target {
        None => Ok(true),
        Some(t) if stored.value() != t => Ok(false),
        Some(_) => {
            let jobs = txn.open_table(JOBS).map_err(db_err)?;
            let waiting = load_job(&jobs, key)?.is_some_and(|j| j.state == JobState::Waiting);
            Ok(!waiting)
        }
    }
}

/// Records the enrolment and target; activates a waiting job when a
/// target arrives. True when it did.
fn put_enrolment_in(
    t: &mut OutboxTables<'_>,
    key: &str,
    target: Option<&[u8]>,
    now: u64,
) -> Result<bool, StoreError> {
    match target {
        Some(bytes) => {
            t.enrolments.insert(key, bytes).map_err(db_err)?;
        }
        None => {
            if t.enrolments.get(key).map_err(db_err)?.is_none() {
                t.enrolments.insert(key, &[][..]).map_err(db_err)?;
            }
            return Ok(false);
        }
    }
    let Some(old) = load_job(&t.jobs, key)? else {
        return Ok(false);
    };
    if old.state != JobState::Waiting {
        return Ok(false);
    }
    let mut job = old.clone();
    job.state = JobState::Pending;
    job.next_at_ms = now;
    save_job(&mut t.jobs, &mut t.due, key, Some(&old), Some(&job))?;
    Ok(true)
}

/// Claims the licence `key` of `consumer` under `cap`, checking again
/// inside the transaction.
fn claim_in(
    txn: &WriteTransaction,
    key: &str,
    consumer: &str,
    cap: Option<u64>,
) -> Result<LicenceClaim, StoreError> {
    let mut licences = txn.open_table(LICENCES).map_err(db_err)?;
    if licences.get(key).map_err(db_err)?.is_some() {
        return Ok(LicenceClaim::Existing);
    }
    let mut counts = txn.open_table(LICENCE_COUNT).map_err(db_err)?;
    let used = used_of(&counts, consumer)?;
    if cap.is_some_and(|c| used >= c) {
        return Ok(LicenceClaim::Exhausted);
    }
    licences.insert(key, ()).map_err(db_err)?;
    counts.insert(consumer, used + 1).map_err(db_err)?;
    Ok(LicenceClaim::New { used: used + 1 })
}

/// Licences `consumer` holds, from the licence count table.
fn used_of(
    counts: &impl ReadableTable<&'static str, u64>,
    consumer: &str,
) -> Result<u64, StoreError> {
    Ok(counts
        .get(consumer)
        .map_err(db_err)?
        .map(|v| v.value())
        .unwrap_or(0))
}

/// Gives back the licence `key` of `consumer`, if held.
fn release_in(txn: &WriteTransaction, key: &str, consumer: &str) -> Result<(), StoreError> {
    let mut licences = txn.open_table(LICENCES).map_err(db_err)?;
    if licences.remove(key).map_err(db_err)?.is_none() {
        return Ok(());
    }
    let mut counts = txn.open_table(LICENCE_COUNT).map_err(db_err)?;
    let used = used_of(&counts, consumer)?;
    counts
        .insert(consumer, used.saturating_sub(1))
        .map_err(db_err)?;
    Ok(())
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.inner.failing.load(Ordering::Acquire) {
            // After a failure a read is no proof: the disk may be full. Nor
            // is a write of one small row, which redb may fit in pages the
            // file already holds: what waits in memory is written too.
            self.writer.probe().await?;
            self.inner.failing.store(false, Ordering::Release);
            return Ok(());
        }
        self.read(|txn| {
            txn.open_table(HEALTH).map_err(db_err)?;
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
        let now = now_millis();
        Ok(self
            .memory()?
            .record_nonce(key, now, now.saturating_add(ms(ttl))))
    }

    async fn claim_licence(
        &self,
        consumer: &str,
        course: &str,
        learner: &str,
        cap: Option<u64>,
    ) -> Result<LicenceClaim, StoreError> {
        let key = compound(&[consumer, course, learner]);
        let fact = digest16(key.as_bytes());
        let known = &self.inner.licences;
        if known.get(&fact).is_some() {
            return Ok(LicenceClaim::Existing);
        }
        let seen = known.generation(&fact);
        let exists = {
            let key = key.clone();
            self.read(move |txn| {
                let licences = txn.open_table(LICENCES).map_err(db_err)?;
                Ok(licences.get(key.as_str()).map_err(db_err)?.is_some())
            })
            .await?
        };
        if exists {
            known.learn(fact, (), seen);
            return Ok(LicenceClaim::Existing);
        }
        let consumer = consumer.to_string();
        let claim = self
            .writer
            .submit(move |txn, _| claim_in(txn, &key, &consumer, cap))
            .await?;
        if claim != LicenceClaim::Exhausted {
            known.learn(fact, (), seen);
        }
        Ok(claim)
    }

    async fn release_licence(
        &self,
        consumer: &str,
        course: &str,
        learner: &str,
    ) -> Result<(), StoreError> {
        let key = compound(&[consumer, course, learner]);
        let fact = digest16(key.as_bytes());
        let consumer = consumer.to_string();
        let released = self
            .writer
            .submit(move |txn, _| release_in(txn, &key, &consumer))
            .await;
        self.inner.licences.forget(&fact);
        released
    }

    async fn licences_used(&self, consumer: &str) -> Result<u64, StoreError> {
        let consumer = consumer.to_string();
        self.read(move |txn| {
            let counts = txn.open_table(LICENCE_COUNT).map_err(db_err)?;
            used_of(&counts, &consumer)
        })
        .await
    }

    async fn put_ticket(
        &self,
        ticket: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let expires = now_millis().saturating_add(ms(ttl));
        self.memory()?
            .put_ticket(ticket.to_string(), value, expires);
        Ok(())
    }

    async fn take_ticket(&self, ticket: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let expires_ms = match self.memory()?.take_ticket(ticket, now_millis()) {
            Taken::Nothing => return Ok(None),
            Taken::Value(value) => return Ok(Some(value)),
            Taken::Stored { expires_ms } => expires_ms,
        };
        let row = {
            let ticket = ticket.to_string();
            self.read(move |txn| {
                let tickets = txn.open_table(TICKETS).map_err(db_err)?;
                let row = tickets.get((expires_ms, ticket.as_str())).map_err(db_err)?;
                Ok(row.map(|v| v.value().to_vec()))
            })
            .await
        };
        let memory = &self.inner.memory;
        match &row {
            Ok(_) => memory.row_read(ticket, expires_ms),
            Err(_) => memory.put_back(ticket, expires_ms),
        }
        row
    }

    async fn put_enrolment(
        &self,
        enrolment: &Enrolment,
        target: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let key = enrolment.key();
        let fact = digest16(key.as_bytes());
        let target_fact = target.filter(|t| !t.is_empty()).map(digest16);
        let known = &self.inner.enrolments;
        match (target, known.get(&fact)) {
            (None, Some(_)) => return Ok(false),
            (Some(_), Some(Some(d))) if target_fact == Some(d) => return Ok(false),
            _ => {}
        }
        let seen = known.generation(&fact);
        let target = target.map(<[u8]>::to_vec);
        let unchanged = {
            let (key, target) = (key.clone(), target.clone());
            self.read(move |txn| enrolment_unchanged(txn, &key, target.as_deref()))
                .await?
        };
        if unchanged {
            if target.is_none() || target_fact.is_some() {
                known.learn(fact, target_fact, seen);
            }
            return Ok(false);
        }
        let activated = self
            .outbox(move |t, now| put_enrolment_in(t, &key, target.as_deref(), now))
            .await;
        known.forget(&fact);
        activated
    }

    async fn get_enrolment(
        &self,
        enrolment: &Enrolment,
    ) -> Result<Option<Option<Vec<u8>>>, StoreError> {
        let key = enrolment.key();
        self.read(move |txn| {
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
        self.outbox(move |t, now| {
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
                enrolment: enrolment.clone(),
                event_id: event_id.clone(),
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
        self.outbox(move |t, now| {
            check_event(&mut t.events, &mut t.event_expiry, &event_key, now, ttl)
        })
        .await
    }

    async fn next_score_timestamp(&self, key: &str, candidate: u64) -> Result<u64, StoreError> {
        // One read-modify-write in one write transaction (redb runs them one
        // at a time). Kept without expiry: one small row per line item and
        // learner.
        let key = key.to_string();
        self.writer
            .submit(move |txn, _now| {
                let mut times = txn.open_table(SCORE_TIMES).map_err(db_err)?;
                let last = times.get(key.as_str()).map_err(db_err)?.map(|v| v.value());
                let next = match last {
                    Some(l) if l >= candidate => l.saturating_add(1),
                    _ => candidate,
                };
                times.insert(key.as_str(), next).map_err(db_err)?;
                Ok(next)
            })
            .await
    }

    async fn lease_due(&self, lease: Duration, max: usize) -> Result<Vec<Lease>, StoreError> {
        let lease_ms = ms(lease);
        // A read first: polling an empty outbox must not cost a durable commit.
        let any_due = self
            .read(|txn| {
                let due = txn.open_table(DUE).map_err(db_err)?;
                let first = due.first().map_err(db_err)?;
                Ok(first.is_some_and(|(k, _)| k.value().0 <= now_millis()))
            })
            .await?;
        if !any_due {
            return Ok(Vec::new());
        }
        self.outbox(move |t, now| {
            let mut keys = Vec::new();
            for entry in t
                .due
                .range((0u64, "")..=(now, "\u{10FFFF}"))
                .map_err(db_err)?
            {
                let (k, _) = entry.map_err(db_err)?;
                let (at, key) = k.value();
                keys.push((at, key.to_string()));
                if keys.len() >= max {
                    break;
                }
            }
            let mut leases = Vec::new();
            for (at, key) in keys {
                let old = match load_job(&t.jobs, &key) {
                    Ok(Some(job)) => job,
                    Ok(None) => continue,
                    // A row that does not decode would head the due index
                    // for ever and hold up every other grade: it leaves the
                    // index (its row stays, for an operator to look at).
                    Err(StoreError::Corrupt(why)) => {
                        tracing::error!(job = %key, error = %why, "an outbox job cannot be read; it is no longer delivered");
                        t.due.remove((at, key.as_str())).map_err(db_err)?;
                        continue;
                    }
                    Err(e) => return Err(e),
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
        self.outbox(move |t, now| {
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
        self.outbox(move |t, now| {
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
                job.last_error = Some(error.clone());
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

    async fn release_after(&self, lease: &Lease, delay: Duration) -> Result<bool, StoreError> {
        let key = lease.job.enrolment.key();
        let token = lease.token.clone();
        let delay_ms = ms(delay);
        self.outbox(move |t, now| {
            let Some(old) = load_job(&t.jobs, &key)? else {
                return Ok(false);
            };
            if old.lease_token != token {
                return Ok(false);
            }
            let mut job = old.clone();
            job.lease_until_ms = 0;
            job.lease_token.clear();
            job.next_at_ms = now.saturating_add(delay_ms);
            save_job(&mut t.jobs, &mut t.due, &key, Some(&old), Some(&job))?;
            Ok(true)
        })
        .await
    }

    async fn outbox_jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.read(|txn| {
            let t = txn.open_table(JOBS).map_err(db_err)?;
            let mut out = Vec::new();
            for entry in t.iter().map_err(db_err)? {
                let (k, v) = entry.map_err(db_err)?;
                match serde_json::from_slice(v.value()) {
                    Ok(job) => out.push(job),
                    // Listed without it rather than not at all (logged
                    // when it was taken out of delivery).
                    Err(e) => tracing::debug!(job = %k.value(), error = %e, "an outbox job cannot be read"),
                }
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
        self.outbox(move |t, now| {
            let keys: Vec<String> = match &wanted {
                Some(k) => vec![k.clone()],
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
        self.writer.flush().await
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

fn load_job(
    jobs: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Job>, StoreError> {
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

/// The outbox tables, open in one write transaction.
struct OutboxTables<'t> {
    enrolments: redb::Table<'t, &'static str, &'static [u8]>,
    jobs: redb::Table<'t, &'static str, &'static [u8]>,
    due: redb::Table<'t, (u64, &'static str), ()>,
    events: redb::Table<'t, &'static str, u64>,
    event_expiry: redb::Table<'t, (u64, &'static str), ()>,
}

impl<'t> OutboxTables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(OutboxTables {
            enrolments: txn.open_table(ENROLMENTS).map_err(db_err)?,
            jobs: txn.open_table(JOBS).map_err(db_err)?,
            due: txn.open_table(DUE).map_err(db_err)?,
            events: txn.open_table(EVENTS).map_err(db_err)?,
            event_expiry: txn.open_table(EVENT_EXPIRY).map_err(db_err)?,
        })
    }
}

fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 12];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use redb::Database;

    use super::{compound, EmbeddedStore, DUE, JOBS};
    use crate::store::{EnqueueOutcome, Enrolment, Store};

    #[test]
    fn compound_keys_are_unambiguous() {
        assert_ne!(compound(&["a:b", "c"]), compound(&["a", "b:c"]));
        assert_ne!(compound(&["ab", "c", "d"]), compound(&["a", "bc", "d"]));
    }

    /// A job row that no longer decodes (a damaged file, a format this
    /// version does not read) holds up no other grade.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreadable_job_holds_up_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ltigate.db");
        {
            let db = Database::create(&path).unwrap();
            let w = db.begin_write().unwrap();
            {
                let mut jobs = w.open_table(JOBS).unwrap();
                jobs.insert("unreadable", b"{not json".as_slice()).unwrap();
                let mut due = w.open_table(DUE).unwrap();
                due.insert((0u64, "unreadable"), ()).unwrap();
            }
            w.commit().unwrap();
        }
        let store = EmbeddedStore::open(&path).unwrap();
        let e = Enrolment::new("Acme", "C-1", "acme:u");
        store.put_enrolment(&e, Some(b"target")).await.unwrap();
        let queued = store.enqueue(&e, "e-1", 0.5, Duration::from_secs(60)).await;
        assert_eq!(queued.unwrap(), EnqueueOutcome::Queued);
        for _ in 0..2 {
            let leases = store.lease_due(Duration::from_secs(60), 10).await.unwrap();
            if let Some(l) = leases.first() {
                assert_eq!((leases.len(), l.job.score), (1, 0.5));
                assert!(store.complete(l).await.unwrap());
            }
        }
        assert!(store.outbox_jobs().await.unwrap().is_empty());
    }
}
