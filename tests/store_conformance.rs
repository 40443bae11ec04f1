//! The store conformance suite: one set of cases, run against every backend
//! (the embedded store, a standalone Redis server, a three-node Redis
//! Cluster), plus backend-specific tests: for the embedded store reopening,
//! locking and what survives a crash; for Redis outages (killed and frozen
//! servers, Cluster nodes) and recovery of the same store instance, several
//! replicas sharing one Redis, and the server-settings warnings.
//!
//! Every test gets its own database file or its own Redis processes, so the
//! tests run in parallel without sharing state.

mod support;

use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ltigate::store::embedded::EmbeddedStore;
use ltigate::store::redis::RedisStore;
use ltigate::store::{LicenceClaim, NonceCheck, SharedStore, Store, StoreError};
use tokio::sync::Barrier;

use support::redis::{RedisCluster, RedisServer};

/// The operation timeout given to every `RedisStore`.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// A store under test and what it runs on (a temporary directory, a server,
/// a cluster). Fields drop in order: the store before its resources, so the
/// database closes before its directory is removed and the connections
/// close before the servers are killed.
struct Backend {
    store: SharedStore,
    _resources: Box<dyn Any>,
}

impl Backend {
    fn embedded() -> Backend {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(&dir.path().join("store.db")).expect("open embedded store");
        let store: SharedStore = Arc::new(store);
        assert_eq!(store.backend(), "embedded");
        Backend {
            store,
            _resources: Box::new(dir),
        }
    }

    fn redis() -> Backend {
        let server = RedisServer::start();
        let store: SharedStore = Arc::new(
            RedisStore::new(&[server.url()], false, REDIS_TIMEOUT).expect("create RedisStore"),
        );
        assert_eq!(store.backend(), "redis");
        Backend {
            store,
            _resources: Box::new(server),
        }
    }

    fn redis_cluster() -> Backend {
        let cluster = RedisCluster::start();
        let store: SharedStore = Arc::new(
            RedisStore::new(&cluster.urls(), true, REDIS_TIMEOUT)
                .expect("create cluster RedisStore"),
        );
        assert_eq!(store.backend(), "redis-cluster");
        Backend {
            store,
            _resources: Box::new(cluster),
        }
    }
}

/// Generates one `#[tokio::test]` per (backend, case), named
/// `<backend>::<case>`, each with a backend of its own.
macro_rules! conformance {
    (backends: [$($backend:ident),* $(,)?], cases: $cases:tt $(,)?) => {
        $( conformance!(@backend $backend $cases); )*
    };
    (@backend $backend:ident [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let backend = super::Backend::$backend();
                    super::cases::$case(backend.store.clone()).await;
                }
            )*
        }
    };
}

conformance! {
    backends: [embedded, redis, redis_cluster],
    cases: [
        ping,
        nonce_fresh_then_replayed,
        nonce_expires,
        nonce_is_atomic,
        licence_claims,
        licence_cap,
        licence_release,
        licence_scope,
        licence_claim_is_atomic,
        licence_claim_after_existing,
        ticket_single_use,
        ticket_expires,
        ticket_take_is_atomic,
        odd_inputs_do_not_collide,
        enrolments_keep_their_target,
        same_target_again_leaves_the_activated_job_due,
        enqueue_lease_complete,
        duplicates_and_waiting,
        event_ids_expire,
        newer_event_while_leased,
        duplicate_events_are_recorded_atomically,
        a_completion_racing_a_newer_event_never_loses_it,
        retries_dead_letters_and_retry,
        expired_leases_come_back,
        release_hands_back,
        unknown_kind_is_released_for_later,
        concurrent_leases_are_disjoint,
        stats_count_depth_dead_and_age,
        score_timestamps_strictly_increase,
        score_timestamps_are_atomic,
    ],
}

/// Thin wrappers that name the inputs when an operation fails.
mod ops {
    use super::*;

    pub async fn nonce(store: &dyn Store, key: &str, nonce: &str, ttl: Duration) -> NonceCheck {
        store
            .record_nonce(key, nonce, ttl)
            .await
            .unwrap_or_else(|e| panic!("record_nonce({key:?}, {nonce:?}): {e}"))
    }

    pub async fn claim(
        store: &dyn Store,
        consumer: &str,
        course: &str,
        learner: &str,
        cap: Option<u64>,
    ) -> LicenceClaim {
        store
            .claim_licence(consumer, course, learner, cap)
            .await
            .unwrap_or_else(|e| {
                panic!("claim_licence({consumer:?}, {course:?}, {learner:?}, {cap:?}): {e}")
            })
    }

    pub async fn release(store: &dyn Store, consumer: &str, course: &str, learner: &str) {
        store
            .release_licence(consumer, course, learner)
            .await
            .unwrap_or_else(|e| {
                panic!("release_licence({consumer:?}, {course:?}, {learner:?}): {e}")
            })
    }

    pub async fn used(store: &dyn Store, consumer: &str) -> u64 {
        store
            .licences_used(consumer)
            .await
            .unwrap_or_else(|e| panic!("licences_used({consumer:?}): {e}"))
    }

    pub async fn put(store: &dyn Store, ticket: &str, value: &[u8], ttl: Duration) {
        store
            .put_ticket(ticket, value, ttl)
            .await
            .unwrap_or_else(|e| panic!("put_ticket({ticket:?}): {e}"))
    }

    pub async fn take(store: &dyn Store, ticket: &str) -> Option<Vec<u8>> {
        store
            .take_ticket(ticket)
            .await
            .unwrap_or_else(|e| panic!("take_ticket({ticket:?}): {e}"))
    }
}

/// The conformance cases; each takes a fresh, empty store.
mod cases {
    use super::ops::*;
    pub use super::outbox_cases::*;
    use super::*;
    use LicenceClaim::{Exhausted, Existing, New};
    use NonceCheck::{Fresh, Replayed};

    /// Longer than any test runs.
    const LONG: Duration = Duration::from_secs(600);

    pub async fn ping(store: SharedStore) {
        store.ping().await.expect("ping");
        // Pinging changes nothing.
        assert_eq!(used(&*store, "acme").await, 0);
        assert_eq!(take(&*store, "t").await, None);
    }

    pub async fn nonce_fresh_then_replayed(store: SharedStore) {
        let s = &*store;
        assert_eq!(nonce(s, "acme", "n-1", LONG).await, Fresh);
        assert_eq!(nonce(s, "acme", "n-1", LONG).await, Replayed);
        assert_eq!(nonce(s, "acme", "n-1", LONG).await, Replayed);
        // Another consumer key with the same nonce, another nonce of the
        // same key: both first seen.
        assert_eq!(nonce(s, "beta", "n-1", LONG).await, Fresh);
        assert_eq!(nonce(s, "acme", "n-2", LONG).await, Fresh);
        // Keys and nonces are compared exactly.
        assert_eq!(nonce(s, "Acme", "n-1", LONG).await, Fresh);
        assert_eq!(nonce(s, "acme", "N-1", LONG).await, Fresh);
        assert_eq!(nonce(s, "acme", "n-1 ", LONG).await, Fresh);
        // Recording those did not disturb the others.
        assert_eq!(nonce(s, "beta", "n-1", LONG).await, Replayed);
        assert_eq!(nonce(s, "acme", "n-2", LONG).await, Replayed);
        assert_eq!(nonce(s, "acme", "n-1", LONG).await, Replayed);
    }

    pub async fn nonce_expires(store: SharedStore) {
        let s = &*store;
        let short = Duration::from_millis(500);
        assert_eq!(nonce(s, "acme", "short", short).await, Fresh);
        assert_eq!(nonce(s, "acme", "short", short).await, Replayed);
        assert_eq!(nonce(s, "acme", "long", LONG).await, Fresh);
        tokio::time::sleep(short * 2).await;
        // Forgotten after its ttl, while a nonce with a long ttl is not.
        assert_eq!(nonce(s, "acme", "short", LONG).await, Fresh);
        assert_eq!(nonce(s, "acme", "long", LONG).await, Replayed);
        // Recorded again, now with the new (long) ttl.
        tokio::time::sleep(short * 2).await;
        assert_eq!(nonce(s, "acme", "short", LONG).await, Replayed);
    }

    pub async fn nonce_is_atomic(store: SharedStore) {
        const N: usize = 32;
        let barrier = Arc::new(Barrier::new(N));
        let tasks: Vec<_> = (0..N)
            .map(|_| {
                let store = store.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.record_nonce("acme", "race", LONG).await
                })
            })
            .collect();
        let mut fresh = 0;
        let mut replayed = 0;
        for t in tasks {
            match t.await.expect("task").expect("record_nonce") {
                Fresh => fresh += 1,
                Replayed => replayed += 1,
            }
        }
        assert_eq!((fresh, replayed), (1, N - 1), "(fresh, replayed)");
        assert_eq!(nonce(&*store, "acme", "race", LONG).await, Replayed);
    }

    pub async fn licence_claims(store: SharedStore) {
        let s = &*store;
        assert_eq!(used(s, "acme").await, 0);
        assert_eq!(
            claim(s, "acme", "C-1", "alice", None).await,
            New { used: 1 }
        );
        assert_eq!(claim(s, "acme", "C-1", "alice", None).await, Existing);
        assert_eq!(used(s, "acme").await, 1);
        assert_eq!(claim(s, "acme", "C-1", "bob", None).await, New { used: 2 });
        assert_eq!(claim(s, "acme", "C-1", "bob", None).await, Existing);
        assert_eq!(claim(s, "acme", "C-1", "alice", None).await, Existing);
        assert_eq!(used(s, "acme").await, 2);
        assert_eq!(used(s, "nobody").await, 0);
    }

    pub async fn licence_cap(store: SharedStore) {
        let s = &*store;
        let cap = Some(2);
        assert_eq!(claim(s, "acme", "C-1", "alice", cap).await, New { used: 1 });
        assert_eq!(claim(s, "acme", "C-1", "bob", cap).await, New { used: 2 });
        assert_eq!(claim(s, "acme", "C-1", "carol", cap).await, Exhausted);
        assert_eq!(used(s, "acme").await, 2);
        // Nothing was recorded for carol: she is still exhausted, not
        // an existing subscriber.
        assert_eq!(claim(s, "acme", "C-1", "carol", cap).await, Exhausted);
        assert_eq!(used(s, "acme").await, 2);
        // Existing subscribers keep access under a full cap, and even
        // under a cap lowered below the current use.
        assert_eq!(claim(s, "acme", "C-1", "alice", cap).await, Existing);
        assert_eq!(claim(s, "acme", "C-1", "bob", Some(1)).await, Existing);
        assert_eq!(claim(s, "acme", "C-1", "bob", Some(0)).await, Existing);
        assert_eq!(used(s, "acme").await, 2);
        // A cap of zero admits no new learner; no cap admits anyone.
        assert_eq!(claim(s, "other", "C-1", "alice", Some(0)).await, Exhausted);
        assert_eq!(used(s, "other").await, 0);
        assert_eq!(
            claim(s, "acme", "C-1", "carol", None).await,
            New { used: 3 }
        );
        assert_eq!(
            claim(s, "acme", "C-1", "dave", Some(4)).await,
            New { used: 4 }
        );
        assert_eq!(claim(s, "acme", "C-1", "erin", Some(4)).await, Exhausted);
        assert_eq!(used(s, "acme").await, 4);
    }

    pub async fn licence_release(store: SharedStore) {
        let s = &*store;
        let cap = Some(2);
        assert_eq!(claim(s, "acme", "C-1", "alice", cap).await, New { used: 1 });
        assert_eq!(claim(s, "acme", "C-1", "bob", cap).await, New { used: 2 });
        assert_eq!(claim(s, "acme", "C-1", "carol", cap).await, Exhausted);
        release(s, "acme", "C-1", "alice").await;
        assert_eq!(used(s, "acme").await, 1);
        // The freed seat goes to a new learner...
        assert_eq!(claim(s, "acme", "C-1", "carol", cap).await, New { used: 2 });
        // ...and alice, released, is a new learner again: the cap is full.
        assert_eq!(claim(s, "acme", "C-1", "alice", cap).await, Exhausted);
        // Releasing what is not held changes nothing.
        release(s, "acme", "C-1", "zed").await;
        release(s, "acme", "C-2", "bob").await;
        release(s, "other", "C-1", "bob").await;
        assert_eq!(used(s, "acme").await, 2);
        assert_eq!(used(s, "other").await, 0);
        // Releasing twice frees one seat only.
        release(s, "acme", "C-1", "carol").await;
        release(s, "acme", "C-1", "carol").await;
        assert_eq!(used(s, "acme").await, 1);
        assert_eq!(claim(s, "acme", "C-1", "bob", cap).await, Existing);
        release(s, "acme", "C-1", "bob").await;
        assert_eq!(used(s, "acme").await, 0);
        assert_eq!(claim(s, "acme", "C-1", "bob", cap).await, New { used: 1 });
    }

    pub async fn licence_scope(store: SharedStore) {
        let s = &*store;
        // One learner in two courses holds two licences.
        assert_eq!(
            claim(s, "acme", "C-1", "alice", None).await,
            New { used: 1 }
        );
        assert_eq!(
            claim(s, "acme", "C-2", "alice", None).await,
            New { used: 2 }
        );
        assert_eq!(claim(s, "acme", "C-2", "alice", None).await, Existing);
        assert_eq!(used(s, "acme").await, 2);
        // Consumers count independently, even for the same course and
        // learner.
        assert_eq!(
            claim(s, "beta", "C-1", "alice", None).await,
            New { used: 1 }
        );
        assert_eq!(used(s, "beta").await, 1);
        assert_eq!(used(s, "acme").await, 2);
        // A full cap of one consumer does not limit the other.
        assert_eq!(claim(s, "beta", "C-1", "bob", Some(1)).await, Exhausted);
        assert_eq!(
            claim(s, "acme", "C-1", "bob", Some(3)).await,
            New { used: 3 }
        );
        // Releasing in one consumer leaves the other alone.
        release(s, "acme", "C-1", "alice").await;
        assert_eq!(used(s, "acme").await, 2);
        assert_eq!(used(s, "beta").await, 1);
        assert_eq!(claim(s, "beta", "C-1", "alice", Some(1)).await, Existing);
        assert_eq!(claim(s, "acme", "C-2", "alice", Some(2)).await, Existing);
    }

    pub async fn licence_claim_is_atomic(store: SharedStore) {
        // Twenty new learners race for five seats.
        const N: usize = 20;
        const CAP: u64 = 5;
        let barrier = Arc::new(Barrier::new(N));
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let store = store.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .claim_licence("acme", "C-1", &format!("learner-{i}"), Some(CAP))
                        .await
                })
            })
            .collect();
        let mut new_used = Vec::new();
        let mut exhausted = 0;
        for t in tasks {
            match t.await.expect("task").expect("claim_licence") {
                New { used } => new_used.push(used),
                Exhausted => exhausted += 1,
                Existing => panic!("a new learner was seen as existing"),
            }
        }
        new_used.sort_unstable();
        assert_eq!(new_used, vec![1, 2, 3, 4, 5], "`used` of the New claims");
        assert_eq!(exhausted, N - CAP as usize);
        assert_eq!(used(&*store, "acme").await, CAP);

        // The same new learner claimed concurrently: one New, the rest
        // Existing.
        let barrier = Arc::new(Barrier::new(N));
        let tasks: Vec<_> = (0..N)
            .map(|_| {
                let store = store.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.claim_licence("beta", "C-1", "same", Some(CAP)).await
                })
            })
            .collect();
        let mut claims = BTreeMap::new();
        for t in tasks {
            let c = t.await.expect("task").expect("claim_licence");
            *claims.entry(format!("{c:?}")).or_insert(0) += 1;
        }
        let expected = BTreeMap::from([
            (format!("{:?}", New { used: 1 }), 1),
            (format!("{Existing:?}"), N - 1),
        ]);
        assert_eq!(claims, expected);
        assert_eq!(used(&*store, "beta").await, 1);
    }

    /// Claims around an `Existing` answer (which the embedded store gives
    /// from a read, without a write): a new claim still counts and checks
    /// the cap, and a released licence is claimed anew.
    pub async fn licence_claim_after_existing(store: SharedStore) {
        let s = &*store;
        assert_eq!(
            claim(s, "acme", "C-1", "alice", Some(2)).await,
            New { used: 1 }
        );
        assert_eq!(claim(s, "acme", "C-1", "alice", Some(2)).await, Existing);
        assert_eq!(
            claim(s, "acme", "C-1", "bob", Some(2)).await,
            New { used: 2 }
        );
        assert_eq!(claim(s, "acme", "C-1", "alice", Some(2)).await, Existing);
        assert_eq!(claim(s, "acme", "C-1", "carol", Some(2)).await, Exhausted);
        release(s, "acme", "C-1", "alice").await;
        assert_eq!(
            claim(s, "acme", "C-1", "carol", Some(2)).await,
            New { used: 2 }
        );
        assert_eq!(claim(s, "acme", "C-1", "alice", Some(2)).await, Exhausted);
        release(s, "acme", "C-1", "bob").await;
        assert_eq!(
            claim(s, "acme", "C-1", "alice", Some(2)).await,
            New { used: 2 }
        );
        assert_eq!(claim(s, "acme", "C-1", "alice", Some(2)).await, Existing);
        assert_eq!(used(s, "acme").await, 2);
    }

    pub async fn ticket_single_use(store: SharedStore) {
        let s = &*store;
        put(s, "t-1", b"payload", LONG).await;
        assert_eq!(take(s, "t-1").await.as_deref(), Some(&b"payload"[..]));
        assert_eq!(take(s, "t-1").await, None);
        assert_eq!(take(s, "t-1").await, None);
        assert_eq!(take(s, "unknown").await, None);
        // Values are bytes, kept exactly; an empty value is still a value.
        let all: Vec<u8> = (0..=255).collect();
        put(s, "binary", &all, LONG).await;
        put(s, "empty", b"", LONG).await;
        assert_eq!(take(s, "binary").await, Some(all));
        assert_eq!(take(s, "empty").await, Some(Vec::new()));
        assert_eq!(take(s, "empty").await, None);
        // Tickets are independent of each other.
        put(s, "t-2", b"two", LONG).await;
        put(s, "t-3", b"three", LONG).await;
        assert_eq!(take(s, "t-3").await.as_deref(), Some(&b"three"[..]));
        assert_eq!(take(s, "t-2").await.as_deref(), Some(&b"two"[..]));
    }

    pub async fn ticket_expires(store: SharedStore) {
        let s = &*store;
        put(s, "short", b"s", Duration::from_millis(200)).await;
        put(s, "long", b"l", LONG).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(take(s, "short").await, None);
        assert_eq!(take(s, "long").await.as_deref(), Some(&b"l"[..]));
        // A ticket put again after expiring is a new ticket.
        put(s, "short", b"again", LONG).await;
        assert_eq!(take(s, "short").await.as_deref(), Some(&b"again"[..]));
    }

    pub async fn ticket_take_is_atomic(store: SharedStore) {
        put(&*store, "race", b"the value", LONG).await;
        let got = race_take(&store, "race", 16).await;
        assert_eq!(got, vec![b"the value".to_vec()], "values taken");
    }

    /// `n` tasks released at once all try to take ticket `name`: the
    /// values they got.
    pub async fn race_take(store: &SharedStore, name: &'static str, n: usize) -> Vec<Vec<u8>> {
        let barrier = Arc::new(Barrier::new(n));
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.take_ticket(name).await
                })
            })
            .collect();
        let mut got = Vec::new();
        for t in tasks {
            if let Some(v) = t.await.expect("task").expect("take_ticket") {
                got.push(v);
            }
        }
        got
    }

    /// The next AGS score timestamp of a key: now, or one past the last
    /// when the clock is behind it; keys are independent.
    pub async fn score_timestamps_strictly_increase(store: SharedStore) {
        let s = &*store;
        let key = "https://lms.example/lineitems/1|learner-1";
        let next = |k: &'static str, at: u64| async move {
            s.next_score_timestamp(k, at)
                .await
                .expect("next_score_timestamp")
        };
        assert_eq!(next(key, 1_765_000_000_000).await, 1_765_000_000_000);
        assert_eq!(next(key, 1_765_000_000_000).await, 1_765_000_000_001);
        // A replica whose clock is behind still sends a later one.
        assert_eq!(next(key, 1_764_000_000_000).await, 1_765_000_000_002);
        assert_eq!(next(key, 1_766_000_000_000).await, 1_766_000_000_000);
        assert_eq!(
            next("https://lms.example/lineitems/1|learner-2", 5).await,
            5,
            "another learner's key is its own"
        );
    }

    /// Concurrent calls for one key get distinct, consecutive timestamps.
    pub async fn score_timestamps_are_atomic(store: SharedStore) {
        let n = 32;
        let barrier = Arc::new(Barrier::new(n));
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.next_score_timestamp("race", 1_000).await
                })
            })
            .collect();
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.expect("task").expect("next_score_timestamp"));
        }
        got.sort_unstable();
        let expected: Vec<u64> = (1_000..1_000 + n as u64).collect();
        assert_eq!(got, expected);
    }

    pub async fn odd_inputs_do_not_collide(store: SharedStore) {
        let s = &*store;
        let long = "x".repeat(4096);
        let odd = [
            "",
            " ",
            ":",
            "::",
            "{",
            "}",
            "{}",
            "}{",
            "\0",
            "\r\n",
            "é",
            "ключ",
            "😀",
            "a",
            "b",
            "c",
            "ab",
            "bc",
            "abc",
            "a:b",
            "b:c",
            "1:a",
            "3:abc",
            "{a}",
            "{a",
            "a}",
            "ltigate:nonce:1:a",
            "%3A",
            long.as_str(),
        ];

        // Nonces: every distinct (key, nonce) pair is its own.
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for k in odd {
            for n in ["", "b", "c", "b:c", "1:b", "{x}", "é"] {
                pairs.push((k, n));
            }
            pairs.push(("acme", k));
        }
        let mut seen = HashSet::new();
        pairs.retain(|p| seen.insert(*p));
        for (k, n) in &pairs {
            assert_eq!(nonce(s, k, n, LONG).await, Fresh, "first ({k:?}, {n:?})");
        }
        for (k, n) in &pairs {
            assert_eq!(
                nonce(s, k, n, LONG).await,
                Replayed,
                "second ({k:?}, {n:?})"
            );
        }

        // Licences: every distinct (consumer, course, learner) is its own,
        // and each consumer counts only its own.
        let mut triples: Vec<(&str, &str, &str)> = Vec::new();
        for c in ["acme", "a", "a:b", "{acme}", "acme}", "", "ключ"] {
            for (course, learner) in [
                ("a:b", "c"),
                ("a", "b:c"),
                ("ab", "c"),
                ("a", "bc"),
                ("", "abc"),
                ("abc", ""),
                ("1:a", "b"),
                ("1", ":ab"),
                ("{C}", "}"),
                ("é", "😀"),
                ("", ""),
                (long.as_str(), "x"),
            ] {
                triples.push((c, course, learner));
            }
        }
        triples.push(("b:c", "a", "x"));
        triples.push(("a", "b:cx", ""));
        let mut seen = HashSet::new();
        triples.retain(|t| seen.insert(*t));
        let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
        for (c, course, learner) in &triples {
            let n = expected.entry(c).or_insert(0);
            *n += 1;
            assert_eq!(
                claim(s, c, course, learner, None).await,
                New { used: *n },
                "first claim ({c:?}, {course:?}, {learner:?})"
            );
        }
        for (c, course, learner) in &triples {
            assert_eq!(
                claim(s, c, course, learner, None).await,
                Existing,
                "second claim ({c:?}, {course:?}, {learner:?})"
            );
        }
        for (c, n) in &expected {
            assert_eq!(used(s, c).await, *n, "licences_used({c:?})");
        }
        // Releasing one leaves its look-alikes in place.
        release(s, "acme", "a:b", "c").await;
        assert_eq!(used(s, "acme").await, expected["acme"] - 1);
        assert_eq!(claim(s, "acme", "a", "b:c", Some(0)).await, Existing);
        assert_eq!(claim(s, "acme", "ab", "c", Some(0)).await, Existing);
        assert_eq!(claim(s, "acme", "a:b", "c", Some(0)).await, Exhausted);

        // Tickets: put every one, then take every one; each gets its own.
        let tickets: Vec<&str> = odd.to_vec();
        for (i, t) in tickets.iter().enumerate() {
            put(s, t, format!("value-{i}").as_bytes(), LONG).await;
        }
        for (i, t) in tickets.iter().enumerate() {
            assert_eq!(
                take(s, t).await,
                Some(format!("value-{i}").into_bytes()),
                "take_ticket({t:?})"
            );
        }
        for t in &tickets {
            assert_eq!(take(s, t).await, None, "second take_ticket({t:?})");
        }

        // The same string as a nonce, a licence and a ticket: three
        // different things.
        put(s, "same", b"ticket", LONG).await;
        assert_eq!(nonce(s, "same", "same", LONG).await, Fresh);
        assert_eq!(
            claim(s, "same", "same", "same", None).await,
            New { used: 1 }
        );
        assert_eq!(take(s, "same").await.as_deref(), Some(&b"ticket"[..]));
    }
}

// ---------------------------------------------------------------------------
// Embedded store: durability and locking.

/// Opens `path` again after its previous store was dropped. A dropped
/// `EmbeddedStore` can keep its database open for a moment while its
/// writer thread writes what memory held (see
/// `embedded_drop_releases_the_database_at_once`), so "already open" is
/// retried for up to two seconds; any other error fails at once.
async fn reopen_embedded(path: &Path) -> SharedStore {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match EmbeddedStore::open(path) {
            Ok(store) => return Arc::new(store),
            Err(e) if format!("{e:#}").contains("already open") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("reopen {}: {e:#}", path.display()),
        }
    }
}

fn open_embedded(path: &Path) -> SharedStore {
    Arc::new(EmbeddedStore::open(path).unwrap_or_else(|e| panic!("open {}: {e:#}", path.display())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_score_timestamps_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ltigate.db");
    {
        let store = open_embedded(&path);
        assert_eq!(store.next_score_timestamp("k", 10).await.unwrap(), 10);
    }
    let store = reopen_embedded(&path).await;
    assert_eq!(store.next_score_timestamp("k", 10).await.unwrap(), 11);
}

#[tokio::test]
async fn embedded_nonces_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("store.db");
    let store = open_embedded(&path);
    assert_eq!(
        ops::nonce(&*store, "acme", "n-1", Duration::from_secs(600)).await,
        NonceCheck::Fresh
    );
    store.flush().await.expect("flush");
    drop(store);

    let store = reopen_embedded(&path).await;
    assert_eq!(
        ops::nonce(&*store, "acme", "n-1", Duration::from_secs(600)).await,
        NonceCheck::Replayed
    );
    assert_eq!(
        ops::nonce(&*store, "acme", "n-2", Duration::from_secs(600)).await,
        NonceCheck::Fresh
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_licences_and_tickets_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = open_embedded(&path);
    let s = &*store;
    assert_eq!(
        ops::claim(s, "acme", "C-1", "alice", Some(2)).await,
        LicenceClaim::New { used: 1 }
    );
    assert_eq!(
        ops::claim(s, "acme", "C-1", "bob", Some(2)).await,
        LicenceClaim::New { used: 2 }
    );
    ops::put(s, "t-1", b"ticket", Duration::from_secs(600)).await;
    store.flush().await.expect("flush");
    drop(store);

    let store = reopen_embedded(&path).await;
    let s = &*store;
    assert_eq!(ops::used(s, "acme").await, 2);
    assert_eq!(
        ops::claim(s, "acme", "C-1", "alice", Some(2)).await,
        LicenceClaim::Existing
    );
    assert_eq!(
        ops::claim(s, "acme", "C-1", "carol", Some(2)).await,
        LicenceClaim::Exhausted
    );
    assert_eq!(ops::take(s, "t-1").await.as_deref(), Some(&b"ticket"[..]));
}

/// Tickets are read back at open: one kept is there (once), one taken
/// stays taken, one expired is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_tickets_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = open_embedded(&path);
    let s = &*store;
    let long = Duration::from_secs(600);
    ops::put(s, "kept", b"one", long).await;
    ops::put(s, "taken", b"two", long).await;
    ops::put(s, "short", b"three", Duration::from_millis(200)).await;
    // Written behind before it is taken: the deletion must follow it.
    store.flush().await.expect("flush");
    assert_eq!(ops::take(s, "taken").await.as_deref(), Some(&b"two"[..]));
    store.flush().await.expect("flush");
    drop(store);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let store = reopen_embedded(&path).await;
    let s = &*store;
    assert_eq!(ops::take(s, "kept").await.as_deref(), Some(&b"one"[..]));
    assert_eq!(ops::take(s, "kept").await, None);
    assert_eq!(ops::take(s, "taken").await, None);
    assert_eq!(ops::take(s, "short").await, None);
}

/// A ticket already written to the database (its value no longer in
/// memory) is still taken at most once, whatever the race, and its value
/// comes back exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_a_written_ticket_is_taken_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_embedded(&dir.path().join("store.db"));
    let value: Vec<u8> = (0..=255).collect();
    ops::put(&*store, "race", &value, Duration::from_secs(600)).await;
    store.flush().await.expect("flush");
    let got = cases::race_take(&store, "race", 16).await;
    assert_eq!(got, vec![value]);
    store.flush().await.expect("flush");
    assert_eq!(ops::take(&*store, "race").await, None);
}

/// A database written by an earlier version: its tickets (kept by name
/// then) and its nonces are read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_tickets_and_nonces_of_an_earlier_version_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let now = ltigate::store::now_millis();
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let tickets = redb::TableDefinition::<&str, (u64, &[u8])>::new("tickets");
            let mut t = txn.open_table(tickets).unwrap();
            t.insert("kept", (now + 600_000, &b"one"[..])).unwrap();
            t.insert("expired", (now - 1, &b"two"[..])).unwrap();
            let nonces = redb::TableDefinition::<&str, u64>::new("nonces");
            let expiry = redb::TableDefinition::<(u64, &str), ()>::new("nonce_expiry");
            let key = "4:acmen-1";
            txn.open_table(nonces)
                .unwrap()
                .insert(key, now + 600_000)
                .unwrap();
            txn.open_table(expiry)
                .unwrap()
                .insert((now + 600_000, key), ())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let store = open_embedded(&path);
    assert_eq!(
        ops::nonce(&*store, "acme", "n-1", Duration::from_secs(600)).await,
        NonceCheck::Replayed
    );
    assert_eq!(ops::take(&*store, "expired").await, None);
    store.flush().await.expect("flush");
    drop(store);
    // Moved, not copied: still there after a second open.
    let store = reopen_embedded(&path).await;
    assert_eq!(
        ops::take(&*store, "kept").await.as_deref(),
        Some(&b"one"[..])
    );
}

/// Dropping the store (an in-process restart) writes the nonces and
/// tickets it holds before the database closes, without a flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_drop_writes_nonces_and_tickets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = open_embedded(&path);
    let long = Duration::from_secs(600);
    assert_eq!(
        ops::nonce(&*store, "acme", "n-1", long).await,
        NonceCheck::Fresh
    );
    ops::put(&*store, "t-1", b"ticket", long).await;
    drop(store);

    let store = reopen_embedded(&path).await;
    assert_eq!(
        ops::nonce(&*store, "acme", "n-1", long).await,
        NonceCheck::Replayed
    );
    assert_eq!(
        ops::take(&*store, "t-1").await.as_deref(),
        Some(&b"ticket"[..])
    );
}

/// Operations that arrive together share one transaction; one of them
/// failing (here: a corrupt job) fails only its own caller, and none of
/// its writes is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_one_failing_operation_does_not_fail_its_batch() {
    use ltigate::store::{EnqueueOutcome, Enrolment};
    const N: usize = 24;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let bad = Enrolment::new("Acme", "C-1", "acme:bad");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let jobs = redb::TableDefinition::<&str, &[u8]>::new("outbox_jobs");
            let mut t = txn.open_table(jobs).unwrap();
            t.insert(bad.key().as_str(), &b"not json"[..]).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = open_embedded(&path);
    let learners: Vec<Enrolment> = (0..N)
        .map(|i| Enrolment::new("Acme", "C-1", &format!("acme:{i}")))
        .collect();
    for e in &learners {
        store.put_enrolment(e, Some(b"t")).await.unwrap();
    }
    let barrier = Arc::new(Barrier::new(N + 1));
    let tasks: Vec<_> = learners
        .iter()
        .chain([&bad])
        .map(|e| {
            let (store, barrier, e) = (store.clone(), barrier.clone(), e.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.enqueue(&e, "e-1", 0.5, Duration::from_secs(60)).await
            })
        })
        .collect();
    let mut queued = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(EnqueueOutcome::Queued) if i < N => queued += 1,
            Err(StoreError::Corrupt(_)) if i == N => {}
            other => panic!("enqueue {i}: {other:?}"),
        }
    }
    assert_eq!(queued, N);
    let leased = store
        .lease_due(Duration::from_secs(30), 2 * N)
        .await
        .unwrap();
    assert_eq!(leased.len(), N, "every good job is queued");
    // The failed enqueue kept nothing, not even its event id.
    assert!(matches!(
        store
            .enqueue(&bad, "e-1", 0.5, Duration::from_secs(60))
            .await,
        Err(StoreError::Corrupt(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_second_open_of_one_path_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let first = open_embedded(&path);
    let second = EmbeddedStore::open(&path);
    let err = match second {
        Ok(_) => panic!("a second open of {} succeeded", path.display()),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains(&path.display().to_string()),
        "the error names the path: {err}"
    );
    // The first handle is unaffected.
    assert_eq!(
        ops::nonce(&*first, "acme", "n", Duration::from_secs(60)).await,
        NonceCheck::Fresh
    );
    first.ping().await.expect("ping");
}

/// Dropping the store must release the database file at once, so the same
/// process can open it again (an in-process restart, as the integration
/// tests do), even when the writer has work: each round drops the store
/// one second after `open`, right after recording a nonce that the writer
/// then writes before it closes the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_drop_releases_the_database_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for round in 0..10 {
        let path = dir.path().join(format!("{round}.db"));
        let store = open_embedded(&path);
        let opened = tokio::time::Instant::now();
        assert_eq!(
            ops::nonce(&*store, "acme", "n", Duration::from_secs(60)).await,
            NonceCheck::Fresh
        );
        tokio::time::sleep_until(opened + Duration::from_secs(1)).await;
        assert_eq!(
            ops::nonce(&*store, "acme", "last", Duration::from_secs(60)).await,
            NonceCheck::Fresh
        );
        drop(store);
        if let Err(e) = EmbeddedStore::open(&path) {
            failures.push(format!("{e:#}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 10 reopens right after a drop failed; first: {}",
        failures.len(),
        failures[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_open_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // Not a database.
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 10_000]).unwrap();
    // A directory that cannot be created: a file is in the way.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let below_a_file = blocker.join("store.db");
    for (path, names) in [(&garbage, &garbage), (&below_a_file, &blocker)] {
        let err = match EmbeddedStore::open(path) {
            Ok(_) => panic!("opening {} succeeded", path.display()),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains(&names.display().to_string()),
            "the error for {} names {}: {err}",
            path.display(),
            names.display()
        );
    }
}

// ---------------------------------------------------------------------------
// Redis: outages, lazy connection, several replicas, server settings.

/// Well within this, a failing operation must have returned.
const PROMPT: Duration = Duration::from_secs(3);

fn redis_store(urls: &[String], cluster: bool) -> SharedStore {
    Arc::new(RedisStore::new(urls, cluster, REDIS_TIMEOUT).expect("create RedisStore"))
}

/// Runs `op`, asserts that it returns within [`PROMPT`], and returns its
/// result.
async fn promptly<T>(
    what: &str,
    op: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(PROMPT, op).await {
        Ok(r) => r,
        Err(_) => panic!("{what} did not return within {PROMPT:?}"),
    }
}

/// Asserts that every operation (run concurrently) fails promptly with a
/// store error.
async fn assert_all_fail(store: &dyn Store) {
    fn check<T: std::fmt::Debug>(what: &str, r: Result<T, StoreError>) {
        match r {
            Err(StoreError::Unavailable(_) | StoreError::Timeout) => {}
            other => {
                panic!("{what} during an outage: expected Unavailable or Timeout, got {other:?}")
            }
        }
    }
    // A request that timed out may still reach the server later (a frozen
    // server runs what it had received once it resumes), so these touch
    // only names the tests never check afterwards.
    let ttl = Duration::from_secs(60);
    let (ping, nonce, claim, release, used, put, take) = tokio::join!(
        promptly("ping", store.ping()),
        promptly("record_nonce", store.record_nonce("outage", "n", ttl)),
        promptly(
            "claim_licence",
            store.claim_licence("outage", "C-1", "dave", Some(10))
        ),
        promptly(
            "release_licence",
            store.release_licence("outage", "C-1", "erin")
        ),
        promptly("licences_used", store.licences_used("outage")),
        promptly("put_ticket", store.put_ticket("outage-1", b"v", ttl)),
        promptly("take_ticket", store.take_ticket("outage-2")),
    );
    check("ping", ping);
    check("record_nonce", nonce);
    check("claim_licence", claim);
    check("release_licence", release);
    check("licences_used", used);
    check("put_ticket", put);
    check("take_ticket", take);
}

/// Pings until the store answers; panics after `limit`.
async fn wait_for_ping(store: &dyn Store, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let err = match promptly("ping", store.ping()).await {
            Ok(()) => return start.elapsed(),
            Err(e) => e,
        };
        if start.elapsed() > limit {
            panic!("the store did not recover within {limit:?}: {err}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_fails_fast_and_the_same_store_recovers() {
    let mut server = RedisServer::start();
    let store = redis_store(&[server.url()], false);
    let s = &*store;
    let ttl = Duration::from_secs(600);
    assert_eq!(
        ops::nonce(s, "acme", "before", ttl).await,
        NonceCheck::Fresh
    );
    assert_eq!(
        ops::claim(s, "acme", "C-1", "alice", None).await,
        LicenceClaim::New { used: 1 }
    );
    ops::put(s, "t-1", b"v", ttl).await;

    server.kill();
    assert_all_fail(s).await;
    // Still failing on a second round (no stale success from a cache).
    assert_all_fail(s).await;

    server.restart();
    wait_for_ping(s, Duration::from_secs(5)).await;
    // The restarted server kept nothing (no persistence): the same
    // instance now talks to the new, empty server.
    assert_eq!(ops::used(s, "acme").await, 0);
    assert_eq!(
        ops::nonce(s, "acme", "before", ttl).await,
        NonceCheck::Fresh
    );
    assert_eq!(
        ops::nonce(s, "acme", "before", ttl).await,
        NonceCheck::Replayed
    );
    assert_eq!(
        ops::claim(s, "acme", "C-1", "alice", Some(1)).await,
        LicenceClaim::New { used: 1 }
    );
    assert_eq!(
        ops::claim(s, "acme", "C-1", "bob", Some(1)).await,
        LicenceClaim::Exhausted
    );
    assert_eq!(ops::take(s, "t-1").await, None);
    ops::put(s, "t-3", b"after", ttl).await;
    assert_eq!(ops::take(s, "t-3").await.as_deref(), Some(&b"after"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_created_while_redis_is_down_connects_later() {
    let mut server = RedisServer::start();
    server.kill();
    let store = redis_store(&[server.url()], false);
    assert_all_fail(&*store).await;

    server.restart();
    wait_for_ping(&*store, Duration::from_secs(5)).await;
    assert_eq!(
        ops::nonce(&*store, "acme", "n", Duration::from_secs(60)).await,
        NonceCheck::Fresh
    );
}

/// Two replicas (two `RedisStore`s) on one Redis see each other's nonces,
/// licences and tickets.
async fn replicas_share_state(a: SharedStore, b: SharedStore) {
    let ttl = Duration::from_secs(600);
    assert_eq!(ops::nonce(&*a, "acme", "n-1", ttl).await, NonceCheck::Fresh);
    assert_eq!(
        ops::nonce(&*b, "acme", "n-1", ttl).await,
        NonceCheck::Replayed
    );
    assert_eq!(
        ops::claim(&*a, "acme", "C-1", "alice", Some(2)).await,
        LicenceClaim::New { used: 1 }
    );
    assert_eq!(
        ops::claim(&*b, "acme", "C-1", "bob", Some(2)).await,
        LicenceClaim::New { used: 2 }
    );
    assert_eq!(
        ops::claim(&*a, "acme", "C-1", "carol", Some(2)).await,
        LicenceClaim::Exhausted
    );
    assert_eq!(
        ops::claim(&*b, "acme", "C-1", "alice", Some(2)).await,
        LicenceClaim::Existing
    );
    assert_eq!(ops::used(&*a, "acme").await, 2);
    ops::release(&*b, "acme", "C-1", "alice").await;
    assert_eq!(ops::used(&*a, "acme").await, 1);
    ops::put(&*a, "t-1", b"v", ttl).await;
    assert_eq!(ops::take(&*b, "t-1").await.as_deref(), Some(&b"v"[..]));
    assert_eq!(ops::take(&*a, "t-1").await, None);
    // After the licence script ran, every other operation still works on
    // both.
    for (i, s) in [&a, &b].into_iter().enumerate() {
        s.ping().await.expect("ping");
        let n = format!("after-script-{i}");
        assert_eq!(ops::nonce(&**s, "beta", &n, ttl).await, NonceCheck::Fresh);
        assert_eq!(
            ops::nonce(&**s, "beta", &n, ttl).await,
            NonceCheck::Replayed
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_replicas_share_state() {
    let server = RedisServer::start();
    replicas_share_state(
        redis_store(&[server.url()], false),
        redis_store(&[server.url()], false),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_replicas_share_state() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    // Each replica knows a different seed node.
    replicas_share_state(redis_store(&urls[..1], true), redis_store(&urls[2..], true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_settings_that_lose_data_are_reported() {
    let lossy = RedisServer::start_with_args(&["--maxmemory-policy", "allkeys-lru"]);
    let store = RedisStore::new(&[lossy.url()], false, REDIS_TIMEOUT).unwrap();
    let warnings = store.check_server_settings().await;
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("allkeys-lru"), "{warnings:?}");
    assert!(warnings[1].contains("appendonly"), "{warnings:?}");

    let safe =
        RedisServer::start_with_args(&["--maxmemory-policy", "noeviction", "--appendonly", "yes"]);
    let store = RedisStore::new(&[safe.url()], false, REDIS_TIMEOUT).unwrap();
    assert_eq!(store.check_server_settings().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_hung_server_times_out_and_recovers() {
    let mut server = RedisServer::start();
    let store = redis_store(&[server.url()], false);
    let s = &*store;
    let ttl = Duration::from_secs(600);
    assert_eq!(
        ops::nonce(s, "acme", "before", ttl).await,
        NonceCheck::Fresh
    );
    ops::put(s, "t-1", b"v", ttl).await;

    // A frozen server accepts nothing and answers nothing: every operation
    // must give up on its own timeout.
    server.pause();
    assert_all_fail(s).await;

    server.resume();
    wait_for_ping(s, Duration::from_secs(5)).await;
    // The data survived the pause, and replies to abandoned requests are
    // not mistaken for answers to new ones.
    assert_eq!(
        ops::nonce(s, "acme", "before", ttl).await,
        NonceCheck::Replayed
    );
    assert_eq!(ops::nonce(s, "acme", "after", ttl).await, NonceCheck::Fresh);
    assert_eq!(ops::used(s, "acme").await, 0);
    assert_eq!(ops::take(s, "t-1").await.as_deref(), Some(&b"v"[..]));
    assert_eq!(ops::take(s, "t-1").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_outage_fails_fast_and_the_same_store_recovers() {
    let mut cluster = RedisCluster::start();
    let store = redis_store(&cluster.urls(), true);
    let s = &*store;
    let ttl = Duration::from_secs(600);
    let names: Vec<String> = (0..30).map(|i| format!("n-{i}")).collect();
    // Thirty nonces land on all three nodes.
    for n in &names {
        assert_eq!(ops::nonce(s, "acme", n, ttl).await, NonceCheck::Fresh);
    }

    // One node down: its keys fail promptly, the others still answer, and
    // nothing is ever forgotten-and-accepted.
    cluster.kill_node(1);
    let mut failed = 0;
    for n in &names {
        match promptly("record_nonce", s.record_nonce("acme", n, ttl)).await {
            Ok(NonceCheck::Replayed) => {}
            Ok(NonceCheck::Fresh) => panic!("{n} was Fresh again while a node was down"),
            Err(_) => failed += 1,
        }
    }
    assert!(failed > 0, "no operation failed with a node down");
    assert!(
        failed < names.len(),
        "every operation failed with one node down"
    );

    // Every node down: everything fails promptly.
    cluster.kill_all();
    assert_all_fail(s).await;

    // Back on the same ports (same cluster shape, no data): the same store
    // recovers.
    cluster.restart_all();
    wait_for_ping(s, Duration::from_secs(10)).await;
    for n in &names {
        assert_eq!(ops::nonce(s, "acme", n, ttl).await, NonceCheck::Fresh);
        assert_eq!(ops::nonce(s, "acme", n, ttl).await, NonceCheck::Replayed);
    }
    assert_eq!(
        ops::claim(s, "acme", "C-1", "alice", Some(1)).await,
        LicenceClaim::New { used: 1 }
    );
    assert_eq!(
        ops::claim(s, "acme", "C-1", "bob", Some(1)).await,
        LicenceClaim::Exhausted
    );
    ops::put(s, "t", b"v", ttl).await;
    assert_eq!(ops::take(s, "t").await.as_deref(), Some(&b"v"[..]));
}

// ---------------------------------------------------------------------------
// Embedded store: what survives a crash. The test binary runs itself as a
// child process that writes to the store and then aborts (no destructors,
// no shutdown flush); the parent reopens the database afterwards.

const CRASH_DB_ENV: &str = "LTIGATE_TEST_CRASH_DB";
const CRASH_MODE_ENV: &str = "LTIGATE_TEST_CRASH_MODE";
const CRASH_CHILD: &str = "embedded_crash_child";

/// The child side; does nothing unless started by [`crash_child`].
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs as a child process of the embedded_*_crash tests"]
async fn embedded_crash_child() {
    let (Some(path), Some(mode)) = (
        std::env::var_os(CRASH_DB_ENV),
        std::env::var(CRASH_MODE_ENV).ok(),
    ) else {
        return;
    };
    let store = open_embedded(Path::new(&path));
    let s = &*store;
    let ttl = Duration::from_secs(600);
    match mode.as_str() {
        // Durable before they return: the abort follows at once.
        "licences" => {
            assert_eq!(
                ops::claim(s, "acme", "C-1", "alice", Some(2)).await,
                LicenceClaim::New { used: 1 }
            );
            assert_eq!(
                ops::claim(s, "acme", "C-1", "bob", Some(2)).await,
                LicenceClaim::New { used: 2 }
            );
        }
        // Tickets (one kept, one taken) written behind: by an explicit
        // flush, or by the background write-behind (every ~100 ms).
        "tickets-flush" | "tickets-background" => {
            ops::put(s, "t-1", b"ticket", ttl).await;
            ops::put(s, "t-2", b"taken", ttl).await;
            assert_eq!(ops::take(s, "t-2").await.as_deref(), Some(&b"taken"[..]));
            if mode == "tickets-flush" {
                store.flush().await.expect("flush");
            } else {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        // A nonce made durable by an explicit flush.
        "flush" => {
            assert_eq!(
                ops::nonce(s, "acme", "flushed", ttl).await,
                NonceCheck::Fresh
            );
            store.flush().await.expect("flush");
        }
        // A nonce made durable by the background write-behind (every
        // ~100 ms).
        "background" => {
            assert_eq!(
                ops::nonce(s, "acme", "background", ttl).await,
                NonceCheck::Fresh
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        other => panic!("unknown crash mode {other}"),
    }
    std::process::abort();
}

/// Runs [`embedded_crash_child`] in `mode` on `path` and checks that it got
/// as far as its crash.
fn crash_child(path: &Path, mode: &str) {
    let exe = std::env::current_exe().expect("current_exe");
    let out = std::process::Command::new(exe)
        .args([CRASH_CHILD, "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CRASH_DB_ENV, path)
        .env(CRASH_MODE_ENV, mode)
        .env("RUST_BACKTRACE", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the crash child");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(6),
        "the crash child ({mode}) should die by SIGABRT, got {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Crashes a child in `mode` on `path`, then opens what it left.
async fn crash_and_reopen(path: &Path, mode: &'static str) -> SharedStore {
    let crashed = path.to_path_buf();
    tokio::task::spawn_blocking(move || crash_child(&crashed, mode))
        .await
        .unwrap();
    open_embedded(path)
}

/// Licence claims survive an abort right after they return; tickets
/// survive once written behind, and a ticket taken before that stays taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_licences_and_tickets_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("licences.db");
    let store = crash_and_reopen(&path, "licences").await;
    let s = &*store;
    assert_eq!(ops::used(s, "acme").await, 2);
    assert_eq!(
        ops::claim(s, "acme", "C-1", "alice", Some(2)).await,
        LicenceClaim::Existing
    );
    assert_eq!(
        ops::claim(s, "acme", "C-1", "carol", Some(2)).await,
        LicenceClaim::Exhausted
    );

    for mode in ["tickets-flush", "tickets-background"] {
        let path = dir.path().join(format!("{mode}.db"));
        let store = crash_and_reopen(&path, mode).await;
        let s = &*store;
        assert_eq!(
            ops::take(s, "t-1").await.as_deref(),
            Some(&b"ticket"[..]),
            "{mode}"
        );
        assert_eq!(ops::take(s, "t-2").await, None, "{mode}: taken before");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_flushed_nonces_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let ttl = Duration::from_secs(600);
    for mode in ["flush", "background"] {
        let path = dir.path().join(format!("{mode}.db"));
        let store = crash_and_reopen(&path, mode).await;
        let nonce = if mode == "flush" {
            "flushed"
        } else {
            "background"
        };
        assert_eq!(
            ops::nonce(&*store, "acme", nonce, ttl).await,
            NonceCheck::Replayed,
            "{mode}"
        );
    }
}

/// Outbox cases: enrolments and targets, enqueue with dedupe and
/// replacement, leases, completion, retries, dead letters, statistics.
mod outbox_cases {
    use super::*;
    use ltigate::store::{EnqueueOutcome, Enrolment, Failure, JobState, Lease};

    const TTL: Duration = Duration::from_secs(60);
    const LEASE: Duration = Duration::from_secs(30);

    fn who(n: &str) -> Enrolment {
        Enrolment::new("Acme", "C-1", &format!("acme:{n}"))
    }

    async fn with_target(store: &dyn Store, e: &Enrolment) {
        store
            .put_enrolment(e, Some(b"{\"kind\":\"t\"}"))
            .await
            .expect("put_enrolment");
    }

    async fn lease(store: &dyn Store, lease: Duration, max: usize) -> Vec<Lease> {
        store.lease_due(lease, max).await.expect("lease_due")
    }

    pub async fn enrolments_keep_their_target(store: SharedStore) {
        let e = who("t");
        assert_eq!(store.get_enrolment(&e).await.unwrap(), None);
        assert!(!store.put_enrolment(&e, None).await.unwrap());
        assert_eq!(store.get_enrolment(&e).await.unwrap(), Some(None));
        store.put_enrolment(&e, Some(b"one")).await.unwrap();
        assert_eq!(
            store.get_enrolment(&e).await.unwrap(),
            Some(Some(b"one".to_vec()))
        );
        // A launch without a target keeps the earlier one; a new target replaces it.
        store.put_enrolment(&e, None).await.unwrap();
        assert_eq!(
            store.get_enrolment(&e).await.unwrap(),
            Some(Some(b"one".to_vec()))
        );
        store.put_enrolment(&e, Some(b"two")).await.unwrap();
        assert_eq!(
            store.get_enrolment(&e).await.unwrap(),
            Some(Some(b"two".to_vec()))
        );
        // The same target again changes nothing; another one still
        // replaces it.
        assert!(!store.put_enrolment(&e, Some(b"two")).await.unwrap());
        store.put_enrolment(&e, Some(b"three")).await.unwrap();
        assert_eq!(
            store.get_enrolment(&e).await.unwrap(),
            Some(Some(b"three".to_vec()))
        );
        assert_eq!(store.get_enrolment(&who("other")).await.unwrap(), None);
    }

    /// A target activates a waiting job; the same target again (which the
    /// embedded store answers from a read) neither activates it twice nor
    /// disturbs it: the job stays pending and due.
    pub async fn same_target_again_leaves_the_activated_job_due(store: SharedStore) {
        let e = who("again");
        store.put_enrolment(&e, None).await.unwrap();
        assert_eq!(
            store.enqueue(&e, "e-1", 0.6, TTL).await.unwrap(),
            EnqueueOutcome::Waiting
        );
        assert!(store.put_enrolment(&e, Some(b"target")).await.unwrap());
        assert!(!store.put_enrolment(&e, Some(b"target")).await.unwrap());
        assert!(!store.put_enrolment(&e, None).await.unwrap());
        let jobs = store.outbox_jobs().await.unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].state, JobState::Pending);
        assert!(jobs[0].next_at_ms <= ltigate::store::now_millis());
        let leased = lease(&*store, LEASE, 10).await;
        assert_eq!(leased.len(), 1, "due");
        assert_eq!(leased[0].job.score, 0.6);
        assert_eq!(
            store.get_enrolment(&e).await.unwrap(),
            Some(Some(b"target".to_vec()))
        );
    }

    pub async fn enqueue_lease_complete(store: SharedStore) {
        let e = who("a");
        with_target(&*store, &e).await;
        assert_eq!(
            store.enqueue(&e, "e-1", 0.8, TTL).await.unwrap(),
            EnqueueOutcome::Queued
        );
        let leased = lease(&*store, LEASE, 10).await;
        assert_eq!(leased.len(), 1);
        assert_eq!(leased[0].job.enrolment, e);
        assert_eq!(leased[0].job.score, 0.8);
        assert_eq!(leased[0].job.event_id, "e-1");
        assert_eq!(leased[0].job.state, JobState::Pending);
        // Leased: not handed out again.
        assert!(lease(&*store, LEASE, 10).await.is_empty());
        assert!(store.complete(&leased[0]).await.unwrap());
        assert!(store.outbox_jobs().await.unwrap().is_empty());
        assert!(lease(&*store, LEASE, 10).await.is_empty());
    }

    pub async fn duplicates_and_waiting(store: SharedStore) {
        let e = who("w");
        store.put_enrolment(&e, None).await.unwrap();
        assert_eq!(
            store.enqueue(&e, "e-1", 0.4, TTL).await.unwrap(),
            EnqueueOutcome::Waiting
        );
        assert_eq!(
            store.enqueue(&e, "e-1", 0.4, TTL).await.unwrap(),
            EnqueueOutcome::Duplicate
        );
        assert_eq!(
            store.enqueue(&e, "e-2", 0.7, TTL).await.unwrap(),
            EnqueueOutcome::Waiting
        );
        assert!(
            lease(&*store, LEASE, 10).await.is_empty(),
            "waiting jobs are not due"
        );
        let jobs = store.outbox_jobs().await.unwrap();
        assert_eq!(jobs.len(), 1, "the newer event replaced the waiting one");
        assert_eq!((jobs[0].score, jobs[0].state), (0.7, JobState::Waiting));
        // The same event id for another learner is another event.
        let other = who("x");
        with_target(&*store, &other).await;
        assert_eq!(
            store.enqueue(&other, "e-1", 0.1, TTL).await.unwrap(),
            EnqueueOutcome::Queued
        );
        // A target activates the waiting job.
        assert!(store.put_enrolment(&e, Some(b"t")).await.unwrap());
        let leased = lease(&*store, LEASE, 10).await;
        let mut scores: Vec<f64> = leased.iter().map(|l| l.job.score).collect();
        scores.sort_by(f64::total_cmp);
        assert_eq!(scores, vec![0.1, 0.7]);
        // Remembered ignored events.
        assert!(store.remember_event(&e, "ignored-1", TTL).await.unwrap());
        assert!(!store.remember_event(&e, "ignored-1", TTL).await.unwrap());
        assert_eq!(
            store.enqueue(&e, "ignored-1", 0.2, TTL).await.unwrap(),
            EnqueueOutcome::Duplicate
        );
    }

    pub async fn event_ids_expire(store: SharedStore) {
        let e = who("exp");
        with_target(&*store, &e).await;
        let short = Duration::from_millis(300);
        assert_eq!(
            store.enqueue(&e, "e-1", 0.5, short).await.unwrap(),
            EnqueueOutcome::Queued
        );
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(
            store.enqueue(&e, "e-1", 0.5, short).await.unwrap(),
            EnqueueOutcome::Queued
        );
    }

    pub async fn newer_event_while_leased(store: SharedStore) {
        let e = who("r");
        with_target(&*store, &e).await;
        store.enqueue(&e, "e-1", 0.2, TTL).await.unwrap();
        let first = lease(&*store, LEASE, 10).await.remove(0);
        assert_eq!(
            store.enqueue(&e, "e-2", 0.9, TTL).await.unwrap(),
            EnqueueOutcome::Queued
        );
        // Still leased: nobody else may deliver it meanwhile.
        assert!(lease(&*store, LEASE, 10).await.is_empty());
        // The old version was delivered; the newer one stays and is due.
        assert!(store.complete(&first).await.unwrap());
        let second = lease(&*store, LEASE, 10).await;
        assert_eq!(second.len(), 1);
        assert_eq!(
            (second[0].job.score, second[0].job.event_id.as_str()),
            (0.9, "e-2")
        );
        assert!(second[0].job.version > first.job.version);
        assert!(store.complete(&second[0]).await.unwrap());
        assert!(store.outbox_jobs().await.unwrap().is_empty());
    }

    /// A webhook retried while the first delivery of it is still being
    /// handled: of N identical events at once, one is queued.
    pub async fn duplicate_events_are_recorded_atomically(store: SharedStore) {
        const N: usize = 32;
        let e = who("dup");
        with_target(&*store, &e).await;
        let barrier = Arc::new(Barrier::new(N));
        let tasks: Vec<_> = (0..N)
            .map(|_| {
                let (store, barrier, e) = (store.clone(), barrier.clone(), e.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.enqueue(&e, "e-same", 0.5, TTL).await
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.expect("task").expect("enqueue"));
        }
        let queued = outcomes
            .iter()
            .filter(|o| **o == EnqueueOutcome::Queued)
            .count();
        let duplicates = outcomes
            .iter()
            .filter(|o| **o == EnqueueOutcome::Duplicate)
            .count();
        assert_eq!((queued, duplicates), (1, N - 1), "{outcomes:?}");
        assert_eq!(store.outbox_jobs().await.unwrap().len(), 1);
    }

    /// The delivery of an old score completing at the moment a newer score
    /// arrives: whichever lands first, the newer score stays queued.
    pub async fn a_completion_racing_a_newer_event_never_loses_it(store: SharedStore) {
        let e = who("race");
        with_target(&*store, &e).await;
        for round in 0..20u32 {
            let old = f64::from(round) / 100.0;
            let new = f64::from(round) / 100.0 + 0.5;
            store
                .enqueue(&e, &format!("old-{round}"), old, TTL)
                .await
                .unwrap();
            let l = lease(&*store, LEASE, 10).await.remove(0);
            assert_eq!(l.job.score, old);
            let barrier = Arc::new(Barrier::new(2));
            let completing = {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.complete(&l).await
                })
            };
            let newer = {
                let (store, barrier, e) = (store.clone(), barrier.clone(), e.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.enqueue(&e, &format!("new-{round}"), new, TTL).await
                })
            };
            completing.await.expect("task").expect("complete");
            assert_eq!(
                newer.await.expect("task").expect("enqueue"),
                EnqueueOutcome::Queued
            );
            let jobs = store.outbox_jobs().await.unwrap();
            let scores: Vec<f64> = jobs.iter().map(|j| j.score).collect();
            assert_eq!(scores, [new], "round {round}");
            // Deliver the newer one too, for a clean next round.
            let l = lease(&*store, LEASE, 10).await.remove(0);
            assert!(store.complete(&l).await.unwrap());
        }
    }

    pub async fn retries_dead_letters_and_retry(store: SharedStore) {
        let e = who("f");
        with_target(&*store, &e).await;
        store.enqueue(&e, "e-1", 0.3, TTL).await.unwrap();
        let l = lease(&*store, LEASE, 10).await.remove(0);
        let at = ltigate::store::now_millis() + 300;
        assert!(store
            .fail(&l, Failure::RetryAt(at), "HTTP 503")
            .await
            .unwrap());
        assert!(
            lease(&*store, LEASE, 10).await.is_empty(),
            "not due before its time"
        );
        tokio::time::sleep(Duration::from_millis(450)).await;
        let l = lease(&*store, LEASE, 10).await.remove(0);
        assert_eq!(l.job.attempts, 1);
        assert_eq!(l.job.last_error.as_deref(), Some("HTTP 503"));
        assert!(store
            .fail(&l, Failure::Dead, "failure: HTTP 422: locked")
            .await
            .unwrap());
        assert!(
            lease(&*store, LEASE, 10).await.is_empty(),
            "dead letters are not retried"
        );
        let jobs = store.outbox_jobs().await.unwrap();
        assert_eq!(jobs[0].state, JobState::Dead);
        assert_eq!(jobs[0].attempts, 2);
        assert_eq!(
            jobs[0].last_error.as_deref(),
            Some("failure: HTTP 422: locked")
        );
        let stats = store.outbox_stats().await.unwrap();
        assert_eq!((stats.depth, stats.dead), (0, 1));
        assert_eq!(store.retry_dead(Some("not-an-id")).await.unwrap(), 0);
        assert_eq!(store.retry_dead(Some(&e.id())).await.unwrap(), 1);
        let l = lease(&*store, LEASE, 10).await.remove(0);
        assert_eq!((l.job.attempts, l.job.last_error.clone()), (0, None));
        assert!(store.fail(&l, Failure::Dead, "again").await.unwrap());
        assert_eq!(store.retry_dead(None).await.unwrap(), 1);
        // A new event replaces a dead letter.
        let l = lease(&*store, LEASE, 10).await.remove(0);
        store.fail(&l, Failure::Dead, "dead").await.unwrap();
        assert_eq!(
            store.enqueue(&e, "e-9", 1.0, TTL).await.unwrap(),
            EnqueueOutcome::Queued
        );
        let l = lease(&*store, LEASE, 10).await.remove(0);
        assert_eq!((l.job.score, l.job.attempts), (1.0, 0));
    }

    pub async fn expired_leases_come_back(store: SharedStore) {
        let e = who("l");
        with_target(&*store, &e).await;
        store.enqueue(&e, "e-1", 0.5, TTL).await.unwrap();
        let first = lease(&*store, Duration::from_millis(300), 10)
            .await
            .remove(0);
        tokio::time::sleep(Duration::from_millis(450)).await;
        let second = lease(&*store, LEASE, 10).await.remove(0);
        assert_ne!(first.token, second.token);
        // The first holder lost its lease: its results are not recorded.
        assert!(!store.complete(&first).await.unwrap());
        assert!(!store.fail(&first, Failure::Dead, "x").await.unwrap());
        assert_eq!(
            store.outbox_jobs().await.unwrap()[0].state,
            JobState::Pending
        );
        assert!(store.complete(&second).await.unwrap());
    }

    pub async fn release_hands_back(store: SharedStore) {
        let e = who("h");
        with_target(&*store, &e).await;
        store.enqueue(&e, "e-1", 0.5, TTL).await.unwrap();
        let l = lease(&*store, LEASE, 10).await.remove(0);
        store.release(&l).await.unwrap();
        let again = lease(&*store, LEASE, 10).await;
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].job.attempts, 0);
    }

    /// A replica that cannot deliver a job's target kind (written by a
    /// newer release) hands the job back for a while: not an attempt, never
    /// a dead letter, due again once the delay is over.
    pub async fn unknown_kind_is_released_for_later(store: SharedStore) {
        use ltigate::outcomes::StoredTarget;
        const DELAY: Duration = Duration::from_millis(400);
        let e = who("u");
        let newer = br#"{"kind":"future_kind","lineitem":"https://lms.example.org/li/1","user_id":"u-1","platform":"canvas"}"#;
        store.put_enrolment(&e, Some(newer)).await.unwrap();
        assert_eq!(
            store.enqueue(&e, "e-1", 0.7, TTL).await.unwrap(),
            EnqueueOutcome::Queued
        );
        let l = lease(&*store, LEASE, 10).await.remove(0);
        let stored = store.get_enrolment(&e).await.unwrap().flatten().unwrap();
        assert_eq!(
            StoredTarget::decode(&stored),
            Some(StoredTarget::Unknown {
                kind: "future_kind".into()
            })
        );
        let before = ltigate::store::now_millis();
        assert!(store.release_after(&l, DELAY).await.unwrap());
        assert!(
            lease(&*store, LEASE, 10).await.is_empty(),
            "not due before the delay"
        );
        let jobs = store.outbox_jobs().await.unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].state, JobState::Pending);
        assert_eq!((jobs[0].attempts, jobs[0].last_error.clone()), (0, None));
        assert_eq!(jobs[0].lease_until_ms, 0);
        assert!(jobs[0].next_at_ms >= before + 400, "{:?}", jobs[0]);
        let stats = store.outbox_stats().await.unwrap();
        assert_eq!((stats.depth, stats.dead), (1, 0));
        // The lease is given up: handing it back again changes nothing.
        assert!(!store.release_after(&l, Duration::ZERO).await.unwrap());
        assert!(lease(&*store, LEASE, 10).await.is_empty(), "still delayed");
        tokio::time::sleep(DELAY + Duration::from_millis(150)).await;
        let mut again = lease(&*store, LEASE, 10).await.remove(0);
        assert_ne!(again.token, l.token);
        assert_eq!(
            (again.job.version, again.job.score, again.job.attempts),
            (l.job.version, 0.7, 0)
        );
        // However often it comes back, it is never counted nor dead.
        for _ in 0..3 {
            assert!(store.release_after(&again, Duration::ZERO).await.unwrap());
            again = lease(&*store, LEASE, 10).await.remove(0);
            assert_eq!(again.job.attempts, 0);
            assert_eq!(again.job.state, JobState::Pending);
        }
        assert_eq!(store.outbox_stats().await.unwrap().dead, 0);
        // A replica that knows the kind delivers it.
        assert!(store.complete(&again).await.unwrap());
        assert!(store.outbox_jobs().await.unwrap().is_empty());
    }

    pub async fn concurrent_leases_are_disjoint(store: SharedStore) {
        for i in 0..30 {
            let e = who(&format!("c{i}"));
            with_target(&*store, &e).await;
            store.enqueue(&e, "e", 0.5, TTL).await.unwrap();
        }
        let barrier = Arc::new(Barrier::new(8));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (store, barrier) = (store.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let mut mine = Vec::new();
                for _ in 0..4 {
                    for l in store.lease_due(LEASE, 3).await.unwrap() {
                        mine.push(l.job.enrolment.learner);
                    }
                }
                mine
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let unique: HashSet<&String> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "a job was leased twice: {all:?}");
        assert_eq!(all.len(), 30);
    }

    pub async fn stats_count_depth_dead_and_age(store: SharedStore) {
        assert_eq!(store.outbox_stats().await.unwrap(), Default::default());
        let a = who("s1");
        with_target(&*store, &a).await;
        store.enqueue(&a, "e", 0.5, TTL).await.unwrap();
        let b = who("s2");
        store.put_enrolment(&b, None).await.unwrap();
        store.enqueue(&b, "e", 0.5, TTL).await.unwrap();
        let s = store.outbox_stats().await.unwrap();
        assert_eq!((s.depth, s.dead), (2, 0));
        let oldest = s.oldest_created_ms.unwrap();
        assert!(ltigate::store::now_millis() - oldest < 5_000);
        // A dead letter leaves the depth and the age for the dead count;
        // the waiting job is the oldest left.
        let l = lease(&*store, LEASE, 10).await.remove(0);
        assert!(store.fail(&l, Failure::Dead, "dead").await.unwrap());
        let s = store.outbox_stats().await.unwrap();
        assert_eq!((s.depth, s.dead), (1, 1));
        let waiting = store
            .outbox_jobs()
            .await
            .unwrap()
            .into_iter()
            .find(|j| j.state == JobState::Waiting)
            .unwrap();
        assert_eq!(s.oldest_created_ms, Some(waiting.created_ms));
        store.retry_dead(None).await.unwrap();
        assert_eq!(store.outbox_stats().await.unwrap().dead, 0);
    }
}
