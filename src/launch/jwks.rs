//! The platforms' key sets (DESIGN §13 "JWKS of a platform"), cached per
//! `jwks_url`:
//!
//! - kept for the answer's `Cache-Control: max-age`, clamped to
//!   [5 min, 24 h] (5 min when absent);
//! - an unknown `kid` triggers one re-fetch, shared by every launch waiting
//!   for it, and such re-fetches happen at most once per 10 s per URL (a
//!   cold or expired cache's fetch does not count), so random `kid`s cannot
//!   cause a fetch storm;
//! - a failed refresh keeps serving the cached set for up to 24 h after it
//!   was fetched: a platform outage must not stop launches;
//! - fetched by [`Outbound`]: no redirects, 1 MiB at most, the connected
//!   address checked unless the registration allows private endpoints;
//! - [`JwksCache::clear`] (the admin `POST /jwks/refresh`) drops them all.
//!
//! The key set type is the protocol core's; the cache only needs to parse
//! one and ask it for a `kid` ([`KeySet`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::outbound::{Outbound, OutboundError};

/// Largest JWKS document read.
pub const MAX_JWKS: usize = 1024 * 1024;
/// Shortest time a fetched set is kept.
pub const MIN_MAX_AGE: Duration = Duration::from_secs(5 * 60);
/// Longest time a fetched set is kept, and served stale after it.
pub const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// At most one re-fetch for an unknown `kid` per URL in this time.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// A parsed key set, as the cache needs it.
pub trait KeySet: Send + Sync + Sized + 'static {
    /// Parses a JWKS document.
    fn parse(document: &[u8]) -> Result<Self, String>;
    /// Holds a key with this `kid`.
    fn has(&self, kid: &str) -> bool;
}

/// Why no key could be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The set (fresh, or re-fetched once) has no key with this `kid`: the
    /// token's doing (`bad_token`).
    #[error("no key {0:?} in the platform's key set")]
    UnknownKid(String),
    /// The set cannot be fetched and no cached one holds the `kid`: the
    /// platform's outage (`jwks_unavailable`).
    #[error("the platform's key set cannot be fetched: {0}")]
    Unavailable(String),
}

/// One fetched set.
struct Fetched<K> {
    keys: Arc<K>,
    at: Instant,
    fresh_for: Duration,
}

impl<K> Fetched<K> {
    fn fresh(&self, now: Instant) -> bool {
        now < self.at + self.fresh_for
    }

    fn usable_stale(&self, now: Instant) -> bool {
        now < self.at + MAX_MAX_AGE
    }
}

/// The cache state of one `jwks_url`.
struct Entry<K> {
    /// The latest set: read without waiting by every launch.
    current: RwLock<Option<Arc<Fetched<K>>>>,
    /// Held while fetching (concurrent launches wait for the one fetch);
    /// holds when the last re-fetch for an unknown `kid` started.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl<K> Default for Entry<K> {
    fn default() -> Self {
        Entry {
            current: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(None),
        }
    }
}

/// What one fetch did, for the caller's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchResult {
    /// A set was fetched and parsed.
    Ok,
    /// The fetch or the parse failed.
    Error,
}

/// Key sets by `jwks_url`.
pub struct JwksCache<K> {
    entries: Mutex<HashMap<String, Arc<Entry<K>>>>,
}

impl<K> Default for JwksCache<K> {
    fn default() -> Self {
        JwksCache {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: KeySet> JwksCache<K> {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops every cached set (the next launch of each platform fetches).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn entry(&self, url: &str) -> Arc<Entry<K>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.entry(url.to_string()).or_default().clone()
    }

    /// The key set of `url` holding `kid`, fetched with `outbound` when
    /// the cache cannot answer. `fetched` is told of every fetch.
    pub async fn keys_for(
        &self,
        outbound: &Outbound,
        url: &str,
        kid: &str,
        fetched: impl Fn(FetchResult),
    ) -> Result<Arc<K>, JwksError> {
        let entry = self.entry(url);
        let seen = current(&entry);
        if let Some(f) = &seen {
            if f.fresh(Instant::now()) && f.keys.has(kid) {
                return Ok(f.keys.clone());
            }
        }
        let mut last_refetch = entry.fetching.lock().await;
        // Another launch may have fetched while this one waited.
        let now = Instant::now();
        let latest = current(&entry);
        if let Some(f) = &latest {
            let newer = seen.as_ref().is_none_or(|s| !Arc::ptr_eq(s, f));
            if f.keys.has(kid) && (f.fresh(now) || newer) {
                return Ok(f.keys.clone());
            }
        }
        let fresh = latest.as_ref().is_some_and(|f| f.fresh(now));
        if fresh {
            // A fresh set without the kid: one re-fetch per interval.
            if last_refetch.is_some_and(|t| now < t + REFETCH_INTERVAL) {
                return Err(JwksError::UnknownKid(kid.to_string()));
            }
            *last_refetch = Some(now);
        }
        match fetch::<K>(outbound, url).await {
            Ok(f) => {
                fetched(FetchResult::Ok);
                let f = Arc::new(f);
                *entry.current.write().unwrap_or_else(|p| p.into_inner()) = Some(f.clone());
                if f.keys.has(kid) {
                    Ok(f.keys.clone())
                } else {
                    Err(JwksError::UnknownKid(kid.to_string()))
                }
            }
            Err(why) => {
                fetched(FetchResult::Error);
                tracing::warn!(jwks_url = url, error = %why, "cannot fetch a platform's key set");
                match latest {
                    Some(f) if f.usable_stale(now) && f.keys.has(kid) => Ok(f.keys.clone()),
                    _ => Err(JwksError::Unavailable(why)),
                }
            }
        }
    }
}

fn current<K>(entry: &Entry<K>) -> Option<Arc<Fetched<K>>> {
    entry
        .current
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// Fetches and parses one set.
async fn fetch<K: KeySet>(outbound: &Outbound, url: &str) -> Result<Fetched<K>, String> {
    let (headers, body) = outbound
        .get(url, "application/json, application/jwk-set+json", MAX_JWKS)
        .await
        .map_err(|e: OutboundError| e.to_string())?;
    let keys = K::parse(&body)?;
    Ok(Fetched {
        keys: Arc::new(keys),
        at: Instant::now(),
        fresh_for: max_age(&headers),
    })
}

/// How long a set is kept: `Cache-Control: max-age`, clamped.
fn max_age(headers: &http::HeaderMap) -> Duration {
    let seconds = headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| {
            let (name, value) = d.trim().split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("max-age")
                .then(|| value.trim().trim_matches('"').parse::<u64>().ok())
                .flatten()
        })
        .next();
    match seconds {
        Some(s) => Duration::from_secs(s).clamp(MIN_MAX_AGE, MAX_MAX_AGE),
        None => MIN_MAX_AGE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A key set: the kids of a JSON list.
    #[derive(Debug)]
    struct Kids(Vec<String>);

    impl KeySet for Kids {
        fn parse(document: &[u8]) -> Result<Self, String> {
            serde_json::from_slice(document)
                .map(Kids)
                .map_err(|e| e.to_string())
        }
        fn has(&self, kid: &str) -> bool {
            self.0.iter().any(|k| k == kid)
        }
    }

    /// A JWKS server on loopback that counts its fetches and serves what
    /// `body` holds (503 when `None`).
    struct Server {
        url: String,
        fetches: Arc<AtomicUsize>,
        body: Arc<Mutex<Option<String>>>,
    }

    async fn server(max_age: Option<u64>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let fetches = Arc::new(AtomicUsize::new(0));
        let body: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(Some("[\"k1\"]".into())));
        let (f, b) = (fetches.clone(), body.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (f, b) = (f.clone(), b.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        f.fetch_add(1, Ordering::SeqCst);
                        let body = b.lock().unwrap().clone();
                        async move {
                            let mut resp = http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(body.clone().unwrap_or_default()),
                            ));
                            if body.is_none() {
                                *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                            }
                            if let Some(a) = max_age {
                                resp.headers_mut().insert(
                                    http::header::CACHE_CONTROL,
                                    format!("public, max-age={a}").parse().unwrap(),
                                );
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Server { url, fetches, body }
    }

    fn outbound() -> Outbound {
        Outbound::new(Duration::from_secs(5), true).unwrap()
    }

    #[tokio::test]
    async fn a_known_kid_is_served_from_the_cache() {
        let s = server(Some(600)).await;
        let cache = JwksCache::<Kids>::new();
        for _ in 0..5 {
            let keys = cache.keys_for(&outbound(), &s.url, "k1", |_| {}).await;
            assert!(keys.unwrap().has("k1"));
        }
        assert_eq!(s.fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_kids_cause_at_most_one_refetch_per_interval() {
        let s = server(None).await;
        let cache = Arc::new(JwksCache::<Kids>::new());
        cache
            .keys_for(&outbound(), &s.url, "k1", |_| {})
            .await
            .unwrap();
        // 50 launches with random kids at once: one shared re-fetch.
        let mut tasks = Vec::new();
        for i in 0..50 {
            let (cache, url) = (cache.clone(), s.url.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .keys_for(&outbound(), &url, &format!("random-{i}"), |_| {})
                    .await
            }));
        }
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Err(JwksError::UnknownKid(_))));
        }
        assert_eq!(s.fetches.load(Ordering::SeqCst), 2);
        // A rotated key appears: after the interval, its kid is fetched.
        *s.body.lock().unwrap() = Some("[\"k1\",\"k2\"]".into());
        tokio::time::advance(REFETCH_INTERVAL + Duration::from_millis(1)).await;
        assert!(cache
            .keys_for(&outbound(), &s.url, "k2", |_| {})
            .await
            .is_ok());
        assert_eq!(s.fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_serves_the_stale_set_for_a_day() {
        let s = server(None).await;
        let cache = JwksCache::<Kids>::new();
        cache
            .keys_for(&outbound(), &s.url, "k1", |_| {})
            .await
            .unwrap();
        *s.body.lock().unwrap() = None;
        tokio::time::advance(MIN_MAX_AGE + Duration::from_secs(1)).await;
        let results = Arc::new(Mutex::new(Vec::new()));
        let r = results.clone();
        let keys = cache
            .keys_for(&outbound(), &s.url, "k1", move |f| {
                r.lock().unwrap().push(f)
            })
            .await;
        assert!(keys.is_ok(), "stale keys serve during an outage");
        assert_eq!(*results.lock().unwrap(), vec![FetchResult::Error]);
        // An unknown kid during the outage is the platform's outage.
        tokio::time::advance(REFETCH_INTERVAL).await;
        let unknown = cache.keys_for(&outbound(), &s.url, "k9", |_| {}).await;
        assert!(
            matches!(unknown, Err(JwksError::Unavailable(_))),
            "{unknown:?}"
        );
        // After a day the stale set is no longer used.
        tokio::time::advance(MAX_MAX_AGE).await;
        let gone = cache.keys_for(&outbound(), &s.url, "k1", |_| {}).await;
        assert!(matches!(gone, Err(JwksError::Unavailable(_))), "{gone:?}");
    }

    #[tokio::test]
    async fn nothing_cached_and_nothing_fetched_is_unavailable_and_clear_refetches() {
        let s = server(Some(3600)).await;
        *s.body.lock().unwrap() = None;
        let cache = JwksCache::<Kids>::new();
        let first = cache.keys_for(&outbound(), &s.url, "k1", |_| {}).await;
        assert!(matches!(first, Err(JwksError::Unavailable(_))));
        *s.body.lock().unwrap() = Some("[\"k1\"]".into());
        assert!(cache
            .keys_for(&outbound(), &s.url, "k1", |_| {})
            .await
            .is_ok());
        cache.clear();
        assert!(cache
            .keys_for(&outbound(), &s.url, "k1", |_| {})
            .await
            .is_ok());
        assert_eq!(s.fetches.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn max_age_is_clamped() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert(http::header::CACHE_CONTROL, v.parse().unwrap());
            max_age(&m)
        };
        assert_eq!(max_age(&http::HeaderMap::new()), MIN_MAX_AGE);
        assert_eq!(h("max-age=60"), MIN_MAX_AGE);
        assert_eq!(h("public, max-age=3600"), Duration::from_secs(3600));
        assert_eq!(h("max-age=9999999"), MAX_MAX_AGE);
        assert_eq!(h("no-cache"), MIN_MAX_AGE);
    }

    #[tokio::test]
    async fn a_set_over_the_limit_is_refused() {
        let s = server(None).await;
        *s.body.lock().unwrap() = Some(format!("[\"{}\"]", "k".repeat(MAX_JWKS)));
        let cache = JwksCache::<Kids>::new();
        let r = cache.keys_for(&outbound(), &s.url, "k1", |_| {}).await;
        assert!(
            matches!(r, Err(JwksError::Unavailable(ref e)) if e.contains("larger")),
            "{r:?}"
        );
    }
}
