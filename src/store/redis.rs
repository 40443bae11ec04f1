//! The Redis backend: one Redis server (or a managed failover pair behind one
//! URL), or a Redis Cluster.
//!
//! Atomicity: nonces are `SET NX PX`; a licence claim is one Lua script over
//! one key (the consumer's subscription set); tickets are taken with
//! `GETDEL`. Keys of one entity share a hash slot (`{…}` hash tags), so every
//! script works unchanged on a Cluster.
//!
//! Connections are made lazily and re-made after failures, so ltigate starts
//! and keeps serving sessions while Redis is down; every operation has a
//! timeout and fails closed.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};
use tokio::sync::Mutex;

use super::{LicenceClaim, NonceCheck, Store, StoreError};

const KEY_PREFIX: &str = "ltigate";

/// Claims a licence: KEYS[1] = the consumer's subscription set, ARGV[1] = the
/// member, ARGV[2] = the cap (`-1`: none). Returns -1 when the cap is
/// reached, 0 for an existing member, else the count after adding.
const CLAIM_SCRIPT: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  return 0
end
local cap = tonumber(ARGV[2])
local used = redis.call('SCARD', KEYS[1])
if cap >= 0 and used >= cap then
  return -1
end
redis.call('SADD', KEYS[1], ARGV[1])
return used + 1
";

/// A connection to either kind of deployment.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

enum Target {
    Single(ConnectionManager),
    Cluster(Box<ClusterTarget>),
}

struct ClusterTarget {
    client: ClusterClient,
    conn: Mutex<Option<ClusterConnection>>,
}

/// The Redis backend.
pub struct RedisStore {
    target: Target,
    timeout: Duration,
    claim: Script,
}

fn redis_err(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// `{tag}` keeps every key of one entity in one Cluster hash slot. A brace
/// inside the entity only shortens the tag, identically for all of the
/// entity's keys.
fn tagged(kind: &str, entity: &str, rest: &str) -> String {
    let safe = entity;
    if rest.is_empty() {
        format!("{KEY_PREFIX}:{kind}:{{{safe}}}")
    } else {
        format!("{KEY_PREFIX}:{kind}:{{{safe}}}:{rest}")
    }
}

impl RedisStore {
    /// Prepares a store for `urls`; no connection is made yet.
    pub fn new(urls: &[String], cluster: bool, timeout: Duration) -> anyhow::Result<Self> {
        let target = if cluster {
            let client = ClusterClient::builder(urls.iter().map(String::as_str))
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(1)
                .build()
                .map_err(|e| anyhow::anyhow!("store.url: {e}"))?;
            Target::Cluster(Box::new(ClusterTarget {
                client,
                conn: Mutex::new(None),
            }))
        } else {
            let url = urls
                .first()
                .ok_or_else(|| anyhow::anyhow!("store.url: missing"))?;
            let client =
                redis::Client::open(url.as_str()).map_err(|e| anyhow::anyhow!("store.url: {e}"))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            Target::Single(
                ConnectionManager::new_lazy_with_config(client, config)
                    .map_err(|e| anyhow::anyhow!("store.url: {e}"))?,
            )
        };
        Ok(RedisStore {
            target,
            timeout,
            claim: Script::new(CLAIM_SCRIPT),
        })
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        match &self.target {
            Target::Single(m) => Ok(Conn::Single(m.clone())),
            Target::Cluster(t) => {
                let mut guard = t.conn.lock().await;
                if let Some(c) = guard.as_ref() {
                    return Ok(Conn::Cluster(c.clone()));
                }
                let c = t.client.get_async_connection().await.map_err(redis_err)?;
                *guard = Some(c.clone());
                Ok(Conn::Cluster(c))
            }
        }
    }

    /// Runs one operation with the store timeout.
    async fn run<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(Conn) -> Result<T, redis::RedisError>,
    {
        let fut = async {
            let conn = self.conn().await?;
            op(conn).await.map_err(redis_err)
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// Warns when the server may evict keys or does not persist (DESIGN §7).
    pub async fn check_server_settings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let policy: Result<Vec<String>, _> = self
            .run(async |mut c| {
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("maxmemory-policy")
                    .query_async(&mut c)
                    .await
            })
            .await;
        if let Ok(v) = policy {
            if let Some(p) = v.get(1) {
                if p != "noeviction" {
                    warnings.push(format!(
                        "Redis maxmemory-policy is {p}: it may evict nonces and licence claims; set noeviction"
                    ));
                }
            }
        }
        let aof: Result<Vec<String>, _> = self
            .run(async |mut c| {
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("appendonly")
                    .query_async(&mut c)
                    .await
            })
            .await;
        if let Ok(v) = aof {
            if v.get(1).is_some_and(|a| a != "yes") {
                warnings.push(
                    "Redis appendonly is off: a restart loses recent writes; set appendonly yes"
                        .into(),
                );
            }
        }
        warnings
    }
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        match self.target {
            Target::Single(_) => "redis",
            Target::Cluster(_) => "redis-cluster",
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let pong: String = self
            .run(async |mut c| redis::cmd("PING").query_async(&mut c).await)
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "unexpected PING answer {pong}"
            )))
        }
    }

    async fn record_nonce(
        &self,
        consumer_key: &str,
        nonce: &str,
        ttl: Duration,
    ) -> Result<NonceCheck, StoreError> {
        // One key per nonce, spread over the Cluster (no hash tag needed for
        // a single-key command).
        let key = format!(
            "{KEY_PREFIX}:nonce:{}:{}{}",
            consumer_key.len(),
            consumer_key,
            nonce
        );
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> = self
            .run(async |mut c| {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(if set.is_some() {
            NonceCheck::Fresh
        } else {
            NonceCheck::Replayed
        })
    }

    async fn claim_licence(
        &self,
        consumer: &str,
        course: &str,
        learner: &str,
        cap: Option<u64>,
    ) -> Result<LicenceClaim, StoreError> {
        let key = tagged("licences", consumer, "subs");
        let member = format!("{}:{course}{learner}", course.len());
        let cap = cap.map(|c| c as i64).unwrap_or(-1);
        let n: i64 = self
            .run(async |mut c| {
                self.claim
                    .key(&key)
                    .arg(&member)
                    .arg(cap)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(match n {
            -1 => LicenceClaim::Exhausted,
            0 => LicenceClaim::Existing,
            used => LicenceClaim::New { used: used as u64 },
        })
    }

    async fn release_licence(
        &self,
        consumer: &str,
        course: &str,
        learner: &str,
    ) -> Result<(), StoreError> {
        let key = tagged("licences", consumer, "subs");
        let member = format!("{}:{course}{learner}", course.len());
        let _: i64 = self
            .run(async |mut c| {
                redis::cmd("SREM")
                    .arg(&key)
                    .arg(&member)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn licences_used(&self, consumer: &str) -> Result<u64, StoreError> {
        let key = tagged("licences", consumer, "subs");
        self.run(async |mut c| redis::cmd("SCARD").arg(&key).query_async(&mut c).await)
            .await
    }

    async fn put_ticket(
        &self,
        ticket: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = tagged("ticket", ticket, "");
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let _: () = self
            .run(async |mut c| {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn take_ticket(&self, ticket: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = tagged("ticket", ticket, "");
        self.run(async |mut c| redis::cmd("GETDEL").arg(&key).query_async(&mut c).await)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::tagged;

    #[test]
    fn keys_share_a_slot_per_entity() {
        assert_eq!(
            tagged("licences", "Acme", "subs"),
            "ltigate:licences:{Acme}:subs"
        );
        assert_eq!(tagged("nonce", "ab", "n"), "ltigate:nonce:{ab}:n");
        assert_eq!(tagged("ticket", "t", ""), "ltigate:ticket:{t}");
    }
}
