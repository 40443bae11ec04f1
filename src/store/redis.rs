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

use super::{
    compound, now_millis, EnqueueOutcome, Enrolment, Failure, Job, JobState, Lease, LicenceClaim,
    NonceCheck, OutboxStats, Store, StoreError,
};

const KEY_PREFIX: &str = "ltigate";

/// The next AGS score timestamp: KEYS[1] = the key's last timestamp,
/// ARGV[1] = the candidate (now, unix ms), ARGV[2] = how long to keep it
/// (seconds). Returns the candidate, or one past the last when that is not
/// earlier, and keeps it as the last. (Lua numbers are doubles: exact for
/// unix milliseconds.)
const SCORE_TIME_SCRIPT: &str = r"
local candidate = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
local nextval = candidate
if last >= candidate then nextval = last + 1 end
redis.call('SET', KEYS[1], string.format('%.0f', nextval), 'EX', ARGV[2])
return nextval
";

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

/// Every outbox key shares the `{outbox}` hash tag: the outbox is one Cluster
/// slot, so each script below is atomic on a Cluster too. A job is a hash;
/// `due` orders pending jobs by due time (lease expiry while leased), `dead`
/// and `waiting` list the others.
const OUTBOX: &str = "ltigate:{outbox}";

/// KEYS: job, due, dead, waiting, event, enrolment. ARGV: member, event_id,
/// score, now, event_ttl_ms, consumer, course, learner.
const ENQUEUE_SCRIPT: &str = r"
if redis.call('SET', KEYS[5], '1', 'NX', 'PX', ARGV[5]) == false then
  return 'duplicate'
end
local target = redis.call('HGET', KEYS[6], 'target')
local state = 'waiting'
if target and target ~= '' then state = 'pending' end
local prev = redis.call('HGET', KEYS[1], 'state')
if (not prev) or prev == 'dead' then
  redis.call('HSET', KEYS[1], 'created_at', ARGV[4])
end
local lease = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0') or 0
if lease <= tonumber(ARGV[4]) then
  lease = 0
  redis.call('HSET', KEYS[1], 'lease_until', 0, 'lease_token', '')
end
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'consumer', ARGV[6], 'course', ARGV[7], 'learner', ARGV[8],
  'event_id', ARGV[2], 'score', ARGV[3], 'state', state, 'attempts', 0,
  'next_at', ARGV[4], 'last_error', '')
redis.call('ZREM', KEYS[3], ARGV[1])
if state == 'pending' then
  redis.call('SREM', KEYS[4], ARGV[1])
  if lease > 0 then
    redis.call('ZADD', KEYS[2], lease, ARGV[1])
  else
    redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
  end
  return 'queued'
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
return 'waiting'
";

/// KEYS: enrolment, job, due, waiting. ARGV: member, target ('' for none), now.
const ENROL_SCRIPT: &str = r"
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'target', ARGV[2])
elseif redis.call('HEXISTS', KEYS[1], 'target') == 0 then
  redis.call('HSET', KEYS[1], 'target', '')
  return 0
else
  return 0
end
if redis.call('HGET', KEYS[2], 'state') == 'waiting' then
  redis.call('HSET', KEYS[2], 'state', 'pending', 'next_at', ARGV[3])
  redis.call('SREM', KEYS[4], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
  return 1
end
return 0
";

/// KEYS: due. ARGV: now, lease_until, max, token prefix, job key prefix.
/// Returns the leased jobs as flat field/value lists.
const LEASE_SCRIPT: &str = r"
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for i, m in ipairs(members) do
  local key = ARGV[5] .. m
  if redis.call('HGET', key, 'state') == 'pending' then
    local token = ARGV[4] .. ':' .. i
    redis.call('HSET', key, 'lease_until', ARGV[2], 'lease_token', token)
    redis.call('ZADD', KEYS[1], ARGV[2], m)
    local fields = redis.call('HGETALL', key)
    table.insert(fields, 'member')
    table.insert(fields, m)
    out[#out + 1] = fields
  else
    redis.call('ZREM', KEYS[1], m)
  end
end
return out
";

/// KEYS: job, due. ARGV: member, token, version, now.
/// 0: lease lost; 1: done; 2: a newer version is due now.
const COMPLETE_SCRIPT: &str = r"
if redis.call('HGET', KEYS[1], 'lease_token') ~= ARGV[2] then return 0 end
if redis.call('HGET', KEYS[1], 'version') == ARGV[3] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
redis.call('HSET', KEYS[1], 'lease_until', 0, 'lease_token', '', 'next_at', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 2
";

/// KEYS: job, due, dead. ARGV: member, token, version, now, next_at, dead
/// (0/1), error, attempts.
const FAIL_SCRIPT: &str = r"
if redis.call('HGET', KEYS[1], 'lease_token') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', 0, 'lease_token', '')
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[3] then
  redis.call('HSET', KEYS[1], 'next_at', ARGV[4])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
  return 2
end
redis.call('HSET', KEYS[1], 'attempts', ARGV[8], 'last_error', ARGV[7])
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[1], 'state', 'dead')
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
else
  redis.call('HSET', KEYS[1], 'next_at', ARGV[5])
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
end
return 1
";

/// KEYS: job, due. ARGV: member, token, next_at.
const RELEASE_SCRIPT: &str = r"
if redis.call('HGET', KEYS[1], 'lease_token') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', 0, 'lease_token', '', 'next_at', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
";

/// KEYS: due, dead. ARGV: now, job key prefix, member ('' for all).
const RETRY_SCRIPT: &str = r"
local members
if ARGV[3] ~= '' then members = {ARGV[3]} else members = redis.call('ZRANGE', KEYS[2], 0, -1) end
local n = 0
for _, m in ipairs(members) do
  local key = ARGV[2] .. m
  if redis.call('HGET', key, 'state') == 'dead' then
    redis.call('HSET', key, 'state', 'pending', 'attempts', 0, 'next_at', ARGV[1], 'last_error', '')
    redis.call('ZREM', KEYS[2], m)
    redis.call('ZADD', KEYS[1], ARGV[1], m)
    n = n + 1
  end
end
return n
";

fn outbox_key(kind: &str, member: &str) -> String {
    format!("{OUTBOX}:{kind}:{member}")
}

fn job_from_fields(fields: &[String]) -> Option<Job> {
    let mut map = std::collections::HashMap::new();
    for pair in fields.chunks(2) {
        if let [k, v] = pair {
            map.insert(k.as_str(), v.as_str());
        }
    }
    let get = |k: &str| map.get(k).copied().unwrap_or("");
    let num = |k: &str| get(k).parse::<u64>().unwrap_or(0);
    Some(Job {
        enrolment: Enrolment::new(get("consumer"), get("course"), get("learner")),
        event_id: get("event_id").to_string(),
        score: get("score").parse().ok()?,
        version: num("version"),
        attempts: u32::try_from(num("attempts")).unwrap_or(u32::MAX),
        state: match get("state") {
            "pending" => JobState::Pending,
            "waiting" => JobState::Waiting,
            "dead" => JobState::Dead,
            _ => return None,
        },
        next_at_ms: num("next_at"),
        created_ms: num("created_at"),
        lease_until_ms: num("lease_until"),
        lease_token: get("lease_token").to_string(),
        last_error: Some(get("last_error").to_string()).filter(|e| !e.is_empty()),
    })
}

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
    score_time: Script,
    enqueue: Script,
    enrol: Script,
    lease: Script,
    complete: Script,
    fail: Script,
    release: Script,
    retry: Script,
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
            score_time: Script::new(SCORE_TIME_SCRIPT),
            enqueue: Script::new(ENQUEUE_SCRIPT),
            enrol: Script::new(ENROL_SCRIPT),
            lease: Script::new(LEASE_SCRIPT),
            complete: Script::new(COMPLETE_SCRIPT),
            fail: Script::new(FAIL_SCRIPT),
            release: Script::new(RELEASE_SCRIPT),
            retry: Script::new(RETRY_SCRIPT),
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

    /// One command per outbox job (`add` writes it for the job's key), in
    /// pipelines of a thousand: a round trip per thousand jobs rather than
    /// per job (the keys share the outbox's hash slot, so this holds on a
    /// Cluster too). One answer per member, in order.
    async fn per_job<T: redis::FromRedisValue>(
        &self,
        members: &[&String],
        add: impl Fn(&mut redis::Pipeline, String),
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::with_capacity(members.len());
        for chunk in members.chunks(1000) {
            let mut pipe = redis::pipe();
            for member in chunk {
                add(&mut pipe, outbox_key("job", member));
            }
            let answers: Vec<T> = self
                .run(async |mut c| pipe.query_async(&mut c).await)
                .await?;
            out.extend(answers);
        }
        Ok(out)
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

    async fn next_score_timestamp(&self, key: &str, candidate: u64) -> Result<u64, StoreError> {
        let key = tagged("score_time", key, "");
        let ttl = crate::store::SCORE_TIMESTAMP_TTL.as_secs();
        self.run(async |mut c| {
            self.score_time
                .key(&key)
                .arg(candidate)
                .arg(ttl)
                .invoke_async(&mut c)
                .await
        })
        .await
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

    async fn put_enrolment(
        &self,
        enrolment: &Enrolment,
        target: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let member = enrolment.key();
        let target = target
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .unwrap_or_default();
        let n: i64 = self
            .run(async |mut c| {
                self.enrol
                    .key(outbox_key("enrolment", &member))
                    .key(outbox_key("job", &member))
                    .key(format!("{OUTBOX}:due"))
                    .key(format!("{OUTBOX}:waiting"))
                    .arg(&member)
                    .arg(&target)
                    .arg(now_millis())
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(n == 1)
    }

    async fn get_enrolment(
        &self,
        enrolment: &Enrolment,
    ) -> Result<Option<Option<Vec<u8>>>, StoreError> {
        let key = outbox_key("enrolment", &enrolment.key());
        let v: Option<String> = self
            .run(async |mut c| {
                redis::cmd("HGET")
                    .arg(&key)
                    .arg("target")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(v.map(|t| (!t.is_empty()).then(|| t.into_bytes())))
    }

    async fn enqueue(
        &self,
        enrolment: &Enrolment,
        event_id: &str,
        score: f64,
        event_ttl: Duration,
    ) -> Result<EnqueueOutcome, StoreError> {
        let member = enrolment.key();
        let event = outbox_key("event", &compound(&[&member, event_id]));
        let ttl = u64::try_from(event_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let r: String = self
            .run(async |mut c| {
                self.enqueue
                    .key(outbox_key("job", &member))
                    .key(format!("{OUTBOX}:due"))
                    .key(format!("{OUTBOX}:dead"))
                    .key(format!("{OUTBOX}:waiting"))
                    .key(&event)
                    .key(outbox_key("enrolment", &member))
                    .arg(&member)
                    .arg(event_id)
                    .arg(score.to_string())
                    .arg(now_millis())
                    .arg(ttl)
                    .arg(&enrolment.tenant)
                    .arg(&enrolment.course)
                    .arg(&enrolment.learner)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(match r.as_str() {
            "queued" => EnqueueOutcome::Queued,
            "waiting" => EnqueueOutcome::Waiting,
            _ => EnqueueOutcome::Duplicate,
        })
    }

    async fn remember_event(
        &self,
        enrolment: &Enrolment,
        event_id: &str,
        event_ttl: Duration,
    ) -> Result<bool, StoreError> {
        let event = outbox_key("event", &compound(&[&enrolment.key(), event_id]));
        let ttl = u64::try_from(event_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let set: Option<String> = self
            .run(async |mut c| {
                redis::cmd("SET")
                    .arg(&event)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    async fn lease_due(&self, lease: Duration, max: usize) -> Result<Vec<Lease>, StoreError> {
        let now = now_millis();
        let until = now.saturating_add(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX));
        let prefix = crate::secret::random_token();
        let rows: Vec<Vec<String>> = self
            .run(async |mut c| {
                self.lease
                    .key(format!("{OUTBOX}:due"))
                    .arg(now)
                    .arg(until)
                    .arg(max)
                    .arg(&prefix)
                    .arg(format!("{OUTBOX}:job:"))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let leases: Vec<Lease> = rows
            .iter()
            .filter_map(|fields| job_from_fields(fields))
            .map(|job| Lease {
                token: job.lease_token.clone(),
                job,
            })
            .collect();
        if leases.len() < rows.len() {
            tracing::error!(
                unreadable = rows.len() - leases.len(),
                "outbox jobs in Redis cannot be read; they come back each lease and are never delivered"
            );
        }
        Ok(leases)
    }

    async fn complete(&self, lease: &Lease) -> Result<bool, StoreError> {
        let member = lease.job.enrolment.key();
        let n: i64 = self
            .run(async |mut c| {
                self.complete
                    .key(outbox_key("job", &member))
                    .key(format!("{OUTBOX}:due"))
                    .arg(&member)
                    .arg(&lease.token)
                    .arg(lease.job.version)
                    .arg(now_millis())
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(n != 0)
    }

    async fn fail(&self, lease: &Lease, failure: Failure, error: &str) -> Result<bool, StoreError> {
        let member = lease.job.enrolment.key();
        let (next_at, dead) = match failure {
            Failure::RetryAt(at) => (at, "0"),
            Failure::Dead => (0, "1"),
        };
        let n: i64 = self
            .run(async |mut c| {
                self.fail
                    .key(outbox_key("job", &member))
                    .key(format!("{OUTBOX}:due"))
                    .key(format!("{OUTBOX}:dead"))
                    .arg(&member)
                    .arg(&lease.token)
                    .arg(lease.job.version)
                    .arg(now_millis())
                    .arg(next_at)
                    .arg(dead)
                    .arg(error)
                    .arg(lease.job.attempts.saturating_add(1))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(n != 0)
    }

    async fn release_after(&self, lease: &Lease, delay: Duration) -> Result<bool, StoreError> {
        let member = lease.job.enrolment.key();
        let next_at =
            now_millis().saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        let n: i64 = self
            .run(async |mut c| {
                self.release
                    .key(outbox_key("job", &member))
                    .key(format!("{OUTBOX}:due"))
                    .arg(&member)
                    .arg(&lease.token)
                    .arg(next_at)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(n != 0)
    }

    async fn outbox_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let (due, dead, waiting): (Vec<String>, Vec<String>, Vec<String>) = self
            .run(async |mut c| {
                redis::pipe()
                    .cmd("ZRANGE")
                    .arg(format!("{OUTBOX}:due"))
                    .arg(0)
                    .arg(-1)
                    .cmd("ZRANGE")
                    .arg(format!("{OUTBOX}:dead"))
                    .arg(0)
                    .arg(-1)
                    .cmd("SMEMBERS")
                    .arg(format!("{OUTBOX}:waiting"))
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let members: Vec<&String> = due.iter().chain(&dead).chain(&waiting).collect();
        let rows: Vec<Vec<String>> = self
            .per_job(&members, |pipe, key| {
                pipe.cmd("HGETALL").arg(key);
            })
            .await?;
        Ok(rows
            .iter()
            .filter_map(|fields| job_from_fields(fields))
            .collect())
    }

    /// Counted without reading the jobs: the sizes of the due, dead and
    /// waiting indexes, and one field (`created_at`) of each job not dead,
    /// pipelined.
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let (due, dead, waiting): (Vec<String>, u64, Vec<String>) = self
            .run(async |mut c| {
                redis::pipe()
                    .cmd("ZRANGE")
                    .arg(format!("{OUTBOX}:due"))
                    .arg(0)
                    .arg(-1)
                    .cmd("ZCARD")
                    .arg(format!("{OUTBOX}:dead"))
                    .cmd("SMEMBERS")
                    .arg(format!("{OUTBOX}:waiting"))
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let members: Vec<&String> = due.iter().chain(&waiting).collect();
        let created: Vec<Option<u64>> = self
            .per_job(&members, |pipe, key| {
                pipe.cmd("HGET").arg(key).arg("created_at");
            })
            .await?;
        Ok(OutboxStats {
            depth: members.len() as u64,
            dead,
            oldest_created_ms: created.into_iter().flatten().min(),
        })
    }

    async fn retry_dead(&self, id: Option<&str>) -> Result<usize, StoreError> {
        let member = match id {
            Some(id) => match Enrolment::key_from_id(id) {
                Some(k) => k,
                None => return Ok(0),
            },
            None => String::new(),
        };
        let n: i64 = self
            .run(async |mut c| {
                self.retry
                    .key(format!("{OUTBOX}:due"))
                    .key(format!("{OUTBOX}:dead"))
                    .arg(now_millis())
                    .arg(format!("{OUTBOX}:job:"))
                    .arg(&member)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(usize::try_from(n).unwrap_or(0))
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
