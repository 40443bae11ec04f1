//! Nonces and launch tickets held in memory and written behind.
//!
//! A launch checks a nonce and stores a ticket on the request's own task:
//! a lookup under one of [`SHARDS`] mutexes, never held across an `.await`.
//! Every change is also queued, in the same shard and under the same lock,
//! for the writer thread, which moves the queue to the database every
//! ~100 ms. Queuing under the shard lock keeps the writes of one key in the
//! order they happened (a ticket taken right after it was put is written as
//! put, then delete — never the other way round), whatever the races. A
//! ticket taken before its put was handed to the writer cancels that put:
//! a learner who follows the launch's redirect at once costs the database
//! nothing.
//!
//! A ticket's value (about a kilobyte) stays in memory only until the
//! writer has committed it; then only its expiry does, and taking it reads
//! the value from the database. Tickets that nobody redeems (a client that
//! does not follow the launch's redirect) then cost a few dozen bytes of
//! memory each, not a kilobyte of heap held for a minute.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sha2::{Digest, Sha256};

use crate::store::NonceCheck;

/// Independent locks: launches on different keys rarely wait for each other.
const SHARDS: usize = 32;

/// A key as kept in memory: the first 16 bytes of its SHA-256. Fixed-size,
/// whatever the LMS sends; two of n keys share a digest with a probability
/// of about n²/2¹²⁹.
pub(super) type Digest16 = [u8; 16];

/// The digest of a key (a nonce's compound key, a licence, a target).
pub(super) fn digest16(key: &[u8]) -> Digest16 {
    let full = Sha256::digest(key);
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// A change waiting to be written to the database. A ticket's row is
/// known by its expiry and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Write {
    /// Remember the nonce `key` (the compound key) until `expires_ms`.
    Nonce { key: String, expires_ms: u64 },
    /// Store a ticket until `expires_ms`.
    PutTicket {
        ticket: String,
        expires_ms: u64,
        value: Arc<[u8]>,
    },
    /// Delete a ticket's row: taken, or replaced.
    RemoveTicket { ticket: String, expires_ms: u64 },
}

impl Write {
    /// A write about a nonce or ticket that expired before it was made
    /// need not be kept for a retry: expired rows are swept, and never
    /// read back.
    pub(super) fn outlived(&self, now_ms: u64) -> bool {
        match self {
            Write::Nonce { expires_ms, .. }
            | Write::PutTicket { expires_ms, .. }
            | Write::RemoveTicket { expires_ms, .. } => *expires_ms <= now_ms,
        }
    }

    /// Whether this is the put of `ticket`'s row expiring at `expires_ms`.
    fn puts(&self, ticket: &str, expires_ms: u64) -> bool {
        matches!(self, Write::PutTicket { ticket: t, expires_ms: e, .. } if t == ticket && *e == expires_ms)
    }
}

/// A ticket in memory: expiry (unix ms), and its value until the database
/// holds it.
struct Ticket {
    expires_ms: u64,
    value: Option<Arc<[u8]>>,
}

/// What taking a ticket found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Taken {
    /// No such ticket, or it expired.
    Nothing,
    /// The ticket, with its value.
    Value(Vec<u8>),
    /// The ticket, whose value is in the database row expiring at
    /// `expires_ms`: read it, then [`Memory::row_read`] (or
    /// [`Memory::put_back`] when the read failed).
    Stored { expires_ms: u64 },
}

/// One lock's worth of a table, with the writes it has not yet handed over.
struct Shard<K, V> {
    entries: HashMap<K, V>,
    pending: Vec<Write>,
}

impl<K, V> Default for Shard<K, V> {
    fn default() -> Self {
        Shard {
            entries: HashMap::new(),
            pending: Vec::new(),
        }
    }
}

/// The in-memory nonce and ticket tables, both keyed by digest.
pub(super) struct Memory {
    nonces: Vec<Mutex<Shard<Digest16, u64>>>,
    tickets: Vec<Mutex<Shard<Digest16, Ticket>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A digest is uniformly distributed already.
fn shard_of(digest: &Digest16) -> usize {
    usize::from(digest[0]) % SHARDS
}

fn shards<K, V>() -> Vec<Mutex<Shard<K, V>>> {
    (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect()
}

impl Memory {
    pub(super) fn new() -> Self {
        Memory {
            nonces: shards(),
            tickets: shards(),
        }
    }

    fn nonce_shard(&self, digest: &Digest16) -> MutexGuard<'_, Shard<Digest16, u64>> {
        lock(&self.nonces[shard_of(digest)])
    }

    fn ticket_shard(&self, digest: &Digest16) -> MutexGuard<'_, Shard<Digest16, Ticket>> {
        lock(&self.tickets[shard_of(digest)])
    }

    /// Checks and records a nonce atomically: of concurrent calls with one
    /// key exactly one sees `Fresh`. A fresh nonce is queued for writing.
    pub(super) fn record_nonce(&self, key: String, now_ms: u64, expires_ms: u64) -> NonceCheck {
        let digest = digest16(key.as_bytes());
        let mut guard = self.nonce_shard(&digest);
        let shard = &mut *guard;
        match shard.entries.entry(digest) {
            Entry::Occupied(e) if *e.get() > now_ms => NonceCheck::Replayed,
            Entry::Occupied(mut e) => {
                e.insert(expires_ms);
                shard.pending.push(Write::Nonce { key, expires_ms });
                NonceCheck::Fresh
            }
            Entry::Vacant(e) => {
                e.insert(expires_ms);
                shard.pending.push(Write::Nonce { key, expires_ms });
                NonceCheck::Fresh
            }
        }
    }

    /// Stores (or replaces) a ticket and queues it for writing.
    pub(super) fn put_ticket(&self, ticket: String, value: &[u8], expires_ms: u64) {
        let value: Arc<[u8]> = Arc::from(value);
        let digest = digest16(ticket.as_bytes());
        let mut shard = self.ticket_shard(&digest);
        let replaced = shard.entries.insert(
            digest,
            Ticket {
                expires_ms,
                value: Some(value.clone()),
            },
        );
        if let Some(old) = replaced {
            shard.pending.push(Write::RemoveTicket {
                ticket: ticket.clone(),
                expires_ms: old.expires_ms,
            });
        }
        shard.pending.push(Write::PutTicket {
            ticket,
            expires_ms,
            value,
        });
    }

    /// Takes a ticket: of concurrent calls at most one finds it. With its
    /// value still here, its row is dealt with at once: its put is
    /// cancelled while still queued, else its deletion is queued.
    pub(super) fn take_ticket(&self, ticket: &str, now_ms: u64) -> Taken {
        let digest = digest16(ticket.as_bytes());
        let mut guard = self.ticket_shard(&digest);
        let shard = &mut *guard;
        let Some(taken) = shard.entries.remove(&digest) else {
            return Taken::Nothing;
        };
        if taken.expires_ms <= now_ms {
            // Its row, if written, is swept by its expiry.
            return Taken::Nothing;
        }
        let Some(value) = taken.value else {
            return Taken::Stored {
                expires_ms: taken.expires_ms,
            };
        };
        let queued = shard
            .pending
            .iter()
            .rposition(|w| w.puts(ticket, taken.expires_ms));
        match queued {
            Some(i) => {
                shard.pending.remove(i);
            }
            None => shard.pending.push(Write::RemoveTicket {
                ticket: ticket.to_string(),
                expires_ms: taken.expires_ms,
            }),
        }
        Taken::Value(value.to_vec())
    }

    /// A taken ticket's value was read from its row: queues the row's
    /// deletion (only now, so that the read finds it).
    pub(super) fn row_read(&self, ticket: &str, expires_ms: u64) {
        let digest = digest16(ticket.as_bytes());
        self.ticket_shard(&digest)
            .pending
            .push(Write::RemoveTicket {
                ticket: ticket.to_string(),
                expires_ms,
            });
    }

    /// A taken ticket's row could not be read: the ticket is there again,
    /// unless it was put anew meanwhile.
    pub(super) fn put_back(&self, ticket: &str, expires_ms: u64) {
        let digest = digest16(ticket.as_bytes());
        self.ticket_shard(&digest)
            .entries
            .entry(digest)
            .or_insert(Ticket {
                expires_ms,
                value: None,
            });
    }

    /// The writer committed `writes`: the values of the tickets it wrote
    /// leave memory (unless put anew meanwhile).
    pub(super) fn written(&self, writes: &[Write]) {
        for write in writes {
            let Write::PutTicket { ticket, value, .. } = write else {
                continue;
            };
            let digest = digest16(ticket.as_bytes());
            let mut shard = self.ticket_shard(&digest);
            if let Some(t) = shard.entries.get_mut(&digest) {
                if t.value.as_ref().is_some_and(|v| Arc::ptr_eq(v, value)) {
                    t.value = None;
                }
            }
        }
    }

    /// Hands over every queued write, shard by shard: the writes of one
    /// key keep their order.
    pub(super) fn drain(&self) -> Vec<Write> {
        let mut out = Vec::new();
        for shard in &self.nonces {
            out.append(&mut lock(shard).pending);
        }
        for shard in &self.tickets {
            out.append(&mut lock(shard).pending);
        }
        out
    }

    /// Forgets expired nonces and tickets (their rows are swept in the
    /// database by their expiry). Returns how many entries went.
    pub(super) fn sweep(&self, now_ms: u64) -> usize {
        let mut removed = 0;
        for shard in &self.nonces {
            let mut shard = lock(shard);
            let before = shard.entries.len();
            shard.entries.retain(|_, expires| *expires > now_ms);
            removed += before - shard.entries.len();
        }
        for shard in &self.tickets {
            let mut shard = lock(shard);
            let before = shard.entries.len();
            shard.entries.retain(|_, t| t.expires_ms > now_ms);
            removed += before - shard.entries.len();
        }
        removed
    }

    /// Puts back a nonce read from the database at open (nothing queued).
    pub(super) fn load_nonce(&self, key: &str, expires_ms: u64) {
        let digest = digest16(key.as_bytes());
        let mut shard = self.nonce_shard(&digest);
        let e = shard.entries.entry(digest).or_insert(expires_ms);
        *e = (*e).max(expires_ms);
    }

    /// Puts back a ticket found in the database at open (nothing queued;
    /// its value stays there).
    pub(super) fn load_ticket(&self, ticket: &str, expires_ms: u64) {
        let digest = digest16(ticket.as_bytes());
        self.ticket_shard(&digest).entries.insert(
            digest,
            Ticket {
                expires_ms,
                value: None,
            },
        );
    }

    /// Nonces and tickets held: (nonces, tickets).
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let n = self.nonces.iter().map(|s| lock(s).entries.len()).sum();
        let t = self.tickets.iter().map(|s| lock(s).entries.len()).sum();
        (n, t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonce(key: &str, expires_ms: u64) -> Write {
        Write::Nonce {
            key: key.into(),
            expires_ms,
        }
    }

    fn remove(ticket: &str, expires_ms: u64) -> Write {
        Write::RemoveTicket {
            ticket: ticket.into(),
            expires_ms,
        }
    }

    fn kinds(writes: &[Write]) -> Vec<&'static str> {
        writes
            .iter()
            .map(|w| match w {
                Write::PutTicket { .. } => "put",
                Write::RemoveTicket { .. } => "remove",
                Write::Nonce { .. } => "nonce",
            })
            .collect()
    }

    #[test]
    fn a_nonce_is_fresh_once_until_it_expires() {
        let m = Memory::new();
        assert_eq!(m.record_nonce("k".into(), 100, 200), NonceCheck::Fresh);
        assert_eq!(m.record_nonce("k".into(), 150, 300), NonceCheck::Replayed);
        assert_eq!(m.record_nonce("k".into(), 200, 400), NonceCheck::Fresh);
        assert_eq!(m.drain(), vec![nonce("k", 200), nonce("k", 400)]);
        assert!(m.drain().is_empty(), "drained once");
    }

    fn value(v: &[u8]) -> Taken {
        Taken::Value(v.to_vec())
    }

    #[test]
    fn loaded_entries_are_remembered_but_not_written_again() {
        let m = Memory::new();
        m.load_nonce("k", 500);
        m.load_ticket("t", 500);
        assert_eq!(m.record_nonce("k".into(), 100, 900), NonceCheck::Replayed);
        assert_eq!(m.take_ticket("t", 100), Taken::Stored { expires_ms: 500 });
        assert!(m.drain().is_empty(), "nothing until the row was read");
        m.row_read("t", 500);
        assert_eq!(m.drain(), vec![remove("t", 500)]);
        assert_eq!(m.take_ticket("t", 100), Taken::Nothing, "taken once");
    }

    #[test]
    fn a_ticket_taken_before_it_was_handed_over_is_never_written() {
        let m = Memory::new();
        m.put_ticket("t".into(), b"one", 500);
        assert_eq!(m.take_ticket("t", 100), value(b"one"));
        assert_eq!(m.take_ticket("t", 100), Taken::Nothing, "taken once");
        assert!(m.drain().is_empty());
    }

    #[test]
    fn a_written_value_leaves_memory_and_a_failed_read_puts_the_ticket_back() {
        let m = Memory::new();
        m.put_ticket("t".into(), b"one", 500);
        let writes = m.drain();
        m.written(&writes);
        assert_eq!(m.take_ticket("t", 100), Taken::Stored { expires_ms: 500 });
        m.put_back("t", 500);
        assert_eq!(m.take_ticket("t", 100), Taken::Stored { expires_ms: 500 });
        // Written while already put anew: the new value stays.
        m.put_ticket("u".into(), b"one", 500);
        let writes = m.drain();
        m.put_ticket("u".into(), b"two", 600);
        m.written(&writes);
        assert_eq!(m.take_ticket("u", 100), value(b"two"));
    }

    #[test]
    fn ticket_writes_keep_their_order() {
        let m = Memory::new();
        m.put_ticket("t".into(), b"one", 500);
        assert_eq!(kinds(&m.drain()), ["put"]);
        // Handed over, not yet written: its deletion must follow the put.
        assert_eq!(m.take_ticket("t", 100), value(b"one"));
        // Put back (a new window), then replaced: the replaced row goes.
        m.put_ticket("t".into(), b"two", 600);
        m.put_ticket("t".into(), b"three", 700);
        let writes = m.drain();
        assert_eq!(kinds(&writes), ["remove", "put", "remove", "put"]);
        assert_eq!(
            (&writes[0], &writes[2]),
            (&remove("t", 500), &remove("t", 600))
        );
        assert_eq!(m.take_ticket("t", 100), value(b"three"));
    }

    #[test]
    fn an_expired_ticket_is_not_handed_out() {
        let m = Memory::new();
        m.put_ticket("t".into(), b"v", 100);
        m.drain();
        assert_eq!(m.take_ticket("t", 100), Taken::Nothing);
        assert!(m.drain().is_empty(), "its row is swept by its expiry");
    }

    #[test]
    fn sweep_forgets_expired_entries() {
        let m = Memory::new();
        m.record_nonce("old".into(), 0, 100);
        m.record_nonce("new".into(), 0, 1_000);
        m.put_ticket("old".into(), b"v", 100);
        m.put_ticket("new".into(), b"v", 1_000);
        m.drain();
        assert_eq!(m.sweep(500), 2);
        assert_eq!(m.len(), (1, 1));
        assert!(m.drain().is_empty(), "expired rows are swept by expiry");
        assert_eq!(
            m.record_nonce("new".into(), 500, 2_000),
            NonceCheck::Replayed
        );
        assert_eq!(m.take_ticket("old", 500), Taken::Nothing);
    }

    #[test]
    fn outlived_writes_are_not_retried() {
        assert!(nonce("k", 100).outlived(100));
        assert!(!nonce("k", 101).outlived(100));
        assert!(remove("t", 100).outlived(100));
        assert!(!remove("t", 101).outlived(100));
    }

    #[test]
    fn digests_are_sixteen_bytes_of_sha256() {
        let d = digest16(b"abc");
        // SHA-256("abc") begins ba7816bf 8f01cfea 414140de 5dae2223.
        assert_eq!(
            d,
            [
                0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae,
                0x22, 0x23
            ]
        );
    }
}
