//! The writer: one thread runs every write transaction of the embedded
//! store, and commits the operations queued meanwhile together.
//!
//! redb runs one write transaction at a time and a durable commit costs an
//! fsync (3–4 ms on an ordinary disk): callers that each waited for a
//! commit of their own would queue behind each other's fsyncs. Instead an
//! operation is queued with a oneshot for its answer; the thread takes all
//! that is queued, runs the operations one after the other inside ONE
//! transaction — each sees the writes of those before it, and no other
//! transaction runs in between, so each check-and-write stays atomic —
//! commits once (durably) and then answers every caller. Same durability,
//! one fsync per batch.
//!
//! A batch is all or nothing. When an operation fails, the transaction is
//! aborted and every operation of the batch runs again, each in a
//! transaction of its own, so that one failure fails only its own caller.
//! Two failures end the whole batch instead: a commit that fails (nothing
//! was written, and the same commit would fail again one by one) and a
//! failed write that poisoned the database handle (every transaction fails
//! until it is reopened, see [`super::Inner::note_failure`]).
//!
//! The same thread moves the nonces and tickets queued in memory
//! ([`super::memory`]) to the database, every [`WRITE_BEHIND`] when there
//! are any, as one more step of the next batch; [`Writer::flush`] asks for
//! that at once, and [`Writer::probe`] too, with a probe row when nothing
//! waits. When it fails, the writes are kept for the next attempt
//! and the memory tables refuse new entries until one succeeds.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::WriteTransaction;
use tokio::sync::oneshot;

use super::memory::Write;
use super::{is_poisoned, write_behind, Inner};
use crate::store::{now_millis, StoreError};

/// How often queued nonces and tickets are written: what a crash can lose.
pub(super) const WRITE_BEHIND: Duration = Duration::from_millis(100);

/// After a failed write-behind, the next attempt waits this long: a full
/// disk is not retried (and the database reopened) ten times a second.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// At most this many operations share one transaction, so that a burst
/// does not make the first callers wait for the last ones' work.
const MAX_BATCH: usize = 512;

/// An operation run by the writer inside a batch transaction.
trait Operation: Send {
    /// Runs inside `txn` at unix ms `now`. Runs again, alone, when another
    /// step of its batch failed.
    fn run(&mut self, txn: &WriteTransaction, now: u64) -> Result<(), StoreError>;

    /// Answers the caller: the result of the last run once its transaction
    /// committed, or why it did not.
    fn answer(self: Box<Self>, outcome: Result<(), StoreError>);
}

/// A caller's closure, its result and where to send it.
struct Queued<T, F> {
    f: F,
    out: Option<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Operation for Queued<T, F>
where
    T: Send,
    F: FnMut(&WriteTransaction, u64) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, txn: &WriteTransaction, now: u64) -> Result<(), StoreError> {
        self.out = None;
        self.out = Some((self.f)(txn, now)?);
        Ok(())
    }

    fn answer(self: Box<Self>, outcome: Result<(), StoreError>) {
        let Queued { out, reply, .. } = *self;
        let result = outcome.and_then(|()| out.ok_or_else(dropped));
        // A caller that stopped waiting (a timeout) needs no answer.
        let _ = reply.send(result);
    }
}

type Reply = oneshot::Sender<Result<(), StoreError>>;

enum Message {
    Run(Box<dyn Operation>),
    /// Write the queued nonces and tickets now.
    Flush(Reply),
    /// Write the queued nonces and tickets now, or a probe row when there
    /// are none: a transaction in any case.
    Probe(Reply),
}

/// The handle to the writer thread. Dropping it stops the thread, which
/// first writes what is queued in memory.
pub(super) struct Writer {
    queue: Sender<Message>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store's writer thread has stopped".into())
}

fn dropped() -> StoreError {
    StoreError::Unavailable("the store's writer dropped the operation".into())
}

impl Writer {
    /// Starts the thread.
    pub(super) fn start(inner: Arc<Inner>) -> std::io::Result<Writer> {
        let (queue, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("ltigate-store".into())
            .spawn(move || serve(&inner, &rx))?;
        Ok(Writer { queue })
    }

    /// Queues `f` for the next batch at once; the future is its result once
    /// committed. Whoever holds the future need not hold the writer.
    pub(super) fn submit<T, F>(&self, f: F) -> impl Future<Output = Result<T, StoreError>> + 'static
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction, u64) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op = Box::new(Queued {
            f,
            out: None,
            reply,
        });
        let sent = self.queue.send(Message::Run(op)).is_ok();
        async move {
            if !sent {
                return Err(stopped());
            }
            answer.await.map_err(|_| dropped())?
        }
    }

    /// Writes the nonces and tickets queued in memory, durably, now.
    pub(super) fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + 'static {
        self.ask(Message::Flush)
    }

    /// Proves that writing works: writes what memory holds now, or a probe
    /// row when it holds nothing.
    pub(super) fn probe(&self) -> impl Future<Output = Result<(), StoreError>> + 'static {
        self.ask(Message::Probe)
    }

    fn ask(&self, message: fn(Reply) -> Message) -> impl Future<Output = Result<(), StoreError>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.queue.send(message(reply)).is_ok();
        async move {
            if !sent {
                return Err(stopped());
            }
            answer.await.map_err(|_| dropped())?
        }
    }
}

/// The writes taken from memory and not yet committed, and when to write
/// again.
struct Behind {
    carry: Vec<Write>,
    next_at: Instant,
    failed: bool,
}

impl Behind {
    fn new() -> Self {
        Behind {
            carry: Vec::new(),
            next_at: Instant::now() + WRITE_BEHIND,
            failed: false,
        }
    }

    /// Takes what memory queued, after what a failed attempt kept (the
    /// order of one key's writes holds), dropping kept writes that expired
    /// meanwhile.
    fn collect(&mut self, inner: &Inner) {
        let now = now_millis();
        self.carry.retain(|w| !w.outlived(now));
        self.carry.append(&mut inner.memory.drain());
    }

    /// Whether a transaction is needed: writes to make, or (after a
    /// failure) proof that writing works again.
    fn has_work(&self) -> bool {
        !self.carry.is_empty() || self.failed
    }

    fn settle(&mut self, inner: &Inner, result: &Result<(), StoreError>) {
        match result {
            Ok(()) => {
                inner.memory.written(&self.carry);
                self.carry.clear();
                self.next_at = Instant::now() + WRITE_BEHIND;
                if self.failed {
                    tracing::info!(path = %inner.path.display(), "embedded store: nonces and tickets are written again");
                }
                self.failed = false;
            }
            Err(e) => {
                self.next_at = Instant::now() + RETRY_AFTER_FAILURE;
                if !self.failed {
                    tracing::warn!(error = %e, queued = self.carry.len(), "embedded store: cannot write nonces and tickets; launches are refused until it can");
                }
                self.failed = true;
            }
        }
        inner.behind_failed.store(self.failed, Ordering::Release);
    }
}

/// What was queued when the thread woke up.
struct Batch {
    ops: Vec<Box<dyn Operation>>,
    flushes: Vec<Reply>,
    probes: Vec<Reply>,
}

impl Batch {
    /// `first` and whatever else is queued, up to [`MAX_BATCH`] operations.
    fn take(first: Option<Message>, rx: &Receiver<Message>) -> Batch {
        let mut batch = Batch {
            ops: Vec::new(),
            flushes: Vec::new(),
            probes: Vec::new(),
        };
        let mut next = first;
        while let Some(message) = next.take() {
            match message {
                Message::Run(op) => batch.ops.push(op),
                Message::Flush(reply) => batch.flushes.push(reply),
                Message::Probe(reply) => batch.probes.push(reply),
            }
            if batch.ops.len() >= MAX_BATCH {
                break;
            }
            // Empty or disconnected: the batch ends here (the next
            // `recv_timeout` sees a disconnection).
            next = rx.try_recv().ok();
        }
        batch
    }
}

fn serve(inner: &Inner, rx: &Receiver<Message>) {
    let mut behind = Behind::new();
    loop {
        let wait = behind.next_at.saturating_duration_since(Instant::now());
        let first = match rx.recv_timeout(wait) {
            Ok(message) => Some(message),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                write_before_closing(inner, &mut behind);
                return;
            }
        };
        let batch = Batch::take(first, rx);
        let run = catch_unwind(AssertUnwindSafe(|| run_batch(inner, &mut behind, batch)));
        if run.is_err() {
            // The batch's operations were dropped: their callers got an
            // error. The thread goes on serving the others.
            tracing::error!("embedded store: the writer panicked; that batch failed");
        }
    }
}

/// The store was dropped: what memory still holds is written before the
/// database closes.
fn write_before_closing(inner: &Inner, behind: &mut Behind) {
    behind.collect(inner);
    if behind.carry.is_empty() {
        return;
    }
    if let Err(e) = alone(inner, Some(&behind.carry), &mut []) {
        tracing::warn!(error = %e, lost = behind.carry.len(), "embedded store: cannot write the last nonces and tickets on close");
    }
}

fn run_batch(inner: &Inner, behind: &mut Behind, batch: Batch) {
    let Batch {
        mut ops,
        flushes,
        probes,
    } = batch;
    let forced = !probes.is_empty();
    let due = forced || !flushes.is_empty() || Instant::now() >= behind.next_at;
    if due {
        behind.collect(inner);
        if !behind.has_work() {
            behind.next_at = Instant::now() + WRITE_BEHIND;
        }
    }
    let with_behind = due && (behind.has_work() || forced);
    let writes = with_behind.then_some(behind.carry.as_slice());
    let (written, outcomes) = commit(inner, writes, &mut ops);
    if with_behind {
        behind.settle(inner, &written);
    }
    for reply in flushes.into_iter().chain(probes) {
        let _ = reply.send(copy_result(&written));
    }
    for (op, outcome) in ops.into_iter().zip(outcomes) {
        op.answer(outcome);
    }
}

/// How a transaction ended.
enum Outcome {
    Committed,
    /// No transaction could be begun (the database cannot be reopened).
    NotBegun(StoreError),
    /// A step failed; the transaction was aborted.
    StepFailed(StoreError),
    /// The commit failed: nothing was written.
    CommitFailed(StoreError),
}

/// Runs the write-behind step (when given) and `ops` in one transaction.
fn transact(inner: &Inner, writes: Option<&[Write]>, ops: &mut [Box<dyn Operation>]) -> Outcome {
    let txn = match inner.begin_write() {
        Ok(t) => t,
        Err(e) => return Outcome::NotBegun(e),
    };
    let now = now_millis();
    if let Some(writes) = writes {
        if let Err(e) = write_behind(&txn, writes, now) {
            return Outcome::StepFailed(e);
        }
    }
    for op in ops.iter_mut() {
        if let Err(e) = op.run(&txn, now) {
            return Outcome::StepFailed(e);
        }
    }
    match txn.commit() {
        Ok(()) => Outcome::Committed,
        Err(e) => Outcome::CommitFailed(super::db_err(e)),
    }
}

/// Commits the batch together, or else as described in the module doc.
/// Returns the write-behind step's result (`Ok` when there was none) and
/// each operation's.
fn commit(
    inner: &Inner,
    writes: Option<&[Write]>,
    ops: &mut [Box<dyn Operation>],
) -> (Result<(), StoreError>, Vec<Result<(), StoreError>>) {
    if writes.is_none() && ops.is_empty() {
        return (Ok(()), Vec::new());
    }
    let e = match transact(inner, writes, ops) {
        Outcome::Committed => return (Ok(()), ops.iter().map(|_| Ok(())).collect()),
        Outcome::NotBegun(e) | Outcome::CommitFailed(e) => {
            inner.note_failure(&e);
            return all_failed(&e, ops.len());
        }
        Outcome::StepFailed(e) => {
            inner.note_failure(&e);
            e
        }
    };
    let steps = ops.len() + usize::from(writes.is_some());
    if steps == 1 || is_poisoned(&e) {
        return all_failed(&e, ops.len());
    }
    tracing::debug!(steps, error = %e, "embedded store: a batch failed; running its steps one by one");
    let written = match writes {
        Some(w) => alone(inner, Some(w), &mut []),
        None => Ok(()),
    };
    let outcomes = ops
        .iter_mut()
        .map(|op| alone(inner, None, std::slice::from_mut(op)))
        .collect();
    (written, outcomes)
}

/// One step in a transaction of its own.
fn alone(
    inner: &Inner,
    writes: Option<&[Write]>,
    ops: &mut [Box<dyn Operation>],
) -> Result<(), StoreError> {
    match transact(inner, writes, ops) {
        Outcome::Committed => Ok(()),
        Outcome::NotBegun(e) | Outcome::StepFailed(e) | Outcome::CommitFailed(e) => {
            inner.note_failure(&e);
            Err(e)
        }
    }
}

fn all_failed(e: &StoreError, ops: usize) -> (Result<(), StoreError>, Vec<Result<(), StoreError>>) {
    (Err(copy(e)), (0..ops).map(|_| Err(copy(e))).collect())
}

/// The same error again, for another caller.
fn copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Timeout => StoreError::Timeout,
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
    }
}

fn copy_result(r: &Result<(), StoreError>) -> Result<(), StoreError> {
    r.as_ref().map(|_| ()).map_err(copy)
}
