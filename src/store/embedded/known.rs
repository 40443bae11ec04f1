//! Facts known to hold in the database, so that a returning learner's
//! launch needs no read transaction (and no hop to a blocking thread):
//! licences that exist, and enrolments whose stored target is a given one
//! with no job waiting for it.
//!
//! A fact is only ever learnt from the database and only ever forgotten
//! after a write that may have made it false has committed. Each shard has
//! a generation, bumped by every such forgetting: a caller notes it before
//! it reads, and keeps what it read only if the generation is unchanged —
//! so a fact read just before a concurrent write committed is never kept
//! after that write forgot it. The table is bounded: a full shard is
//! emptied (those learners' next launches read again).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::memory::Digest16;

const SHARDS: usize = 32;

struct Shard<V> {
    facts: HashMap<Digest16, V>,
    generation: u64,
}

/// A bounded table of facts about keys (by digest).
pub(super) struct Known<V> {
    shards: Vec<Mutex<Shard<V>>>,
    per_shard: usize,
}

/// A shard's generation, noted before reading the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Generation(u64);

impl<V: Copy + PartialEq> Known<V> {
    /// Holds up to about `capacity` facts.
    pub(super) fn new(capacity: usize) -> Self {
        Known {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        facts: HashMap::new(),
                        generation: 0,
                    })
                })
                .collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: &Digest16) -> MutexGuard<'_, Shard<V>> {
        // Digests are uniformly distributed already.
        self.shards[usize::from(key[0]) % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The fact about `key`, if known.
    pub(super) fn get(&self, key: &Digest16) -> Option<V> {
        self.shard(key).facts.get(key).copied()
    }

    /// The generation to pass to [`Known::learn`] after reading `key`.
    pub(super) fn generation(&self, key: &Digest16) -> Generation {
        Generation(self.shard(key).generation)
    }

    /// Keeps a fact read from the database, unless a write forgot facts of
    /// its shard since `seen` was noted.
    pub(super) fn learn(&self, key: Digest16, fact: V, seen: Generation) {
        let mut shard = self.shard(&key);
        if shard.generation != seen.0 {
            return;
        }
        if shard.facts.len() >= self.per_shard && !shard.facts.contains_key(&key) {
            shard.facts.clear();
        }
        shard.facts.insert(key, fact);
    }

    /// Forgets what is known about `key`; called after a write that may
    /// have changed it.
    pub(super) fn forget(&self, key: &Digest16) {
        let mut shard = self.shard(key);
        shard.facts.remove(key);
        shard.generation = shard.generation.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Digest16 {
        [n; 16]
    }

    #[test]
    fn a_fact_read_before_a_write_forgot_it_is_not_kept() {
        let known: Known<()> = Known::new(100);
        let seen = known.generation(&key(1));
        known.forget(&key(1));
        known.learn(key(1), (), seen);
        assert_eq!(known.get(&key(1)), None);
        let seen = known.generation(&key(1));
        known.learn(key(1), (), seen);
        assert_eq!(known.get(&key(1)), Some(()));
        known.forget(&key(1));
        assert_eq!(known.get(&key(1)), None);
    }

    #[test]
    fn a_full_shard_starts_again() {
        let known: Known<u8> = Known::new(SHARDS);
        // Same first byte: one shard, which holds one fact.
        let (a, mut b) = (key(7), key(7));
        b[1] = 8;
        known.learn(a, 1, known.generation(&a));
        known.learn(a, 2, known.generation(&a));
        assert_eq!(known.get(&a), Some(2), "replacing a fact needs no room");
        known.learn(b, 3, known.generation(&b));
        assert_eq!((known.get(&a), known.get(&b)), (None, Some(3)));
    }
}
