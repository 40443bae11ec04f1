//! Launches on Redis and on a Redis Cluster, and a Redis outage in the
//! middle of a run: launches fail closed (503), health says so, readiness
//! stays up, and ltigate recovers without a restart.

mod support;

use std::time::{Duration, Instant};

use support::gate::{client, Gate};
use support::lms::Launch;
use support::redis::{RedisCluster, RedisServer};
use support::upstream::Upstream;

async fn post(gate: &Gate, l: &Launch) -> reqwest::Response {
    client()
        .post(gate.url(&l.path_and_query()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(l.body())
        .send()
        .await
        .unwrap()
}

fn redis_extra(urls: &[String], cluster: bool) -> String {
    let list = urls
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!("[store]\nurl = [{list}]\ncluster = {cluster}\ntimeout = \"1s\"\n")
}

/// The base configuration with the `[store]` table replaced.
async fn gate_on(up: &Upstream, store: &str) -> Gate {
    let dir = tempfile::tempdir().unwrap();
    let toml = support::gate::with_store(&support::gate::base_config(&up.url(), dir.path()), store);
    Gate::start_with(&toml, dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launches_on_standalone_redis_and_an_outage_fails_closed_then_recovers() {
    let mut redis = RedisServer::start();
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_on(&up, &redis_extra(&[redis.url()], false)).await;

    let l = Launch::acme("r-1", "C-1");
    assert_eq!(post(&gate, &l).await.status(), 303);
    assert_eq!(post(&gate, &l).await.status(), 401, "replay on Redis");

    redis.kill();
    let started = Instant::now();
    let r = post(&gate, &Launch::acme("r-2", "C-1")).await;
    assert_eq!(r.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        gate.metric("ltigate_launches_total{consumer=\"Acme\",result=\"store_unavailable\",version=\"1.1\"}")
            .await,
        1.0
    );
    assert_eq!(gate.metric("ltigate_store_up").await, 0.0);
    assert_eq!(gate.status().await["store"], "down");
    // Readiness does not depend on the store.
    let ready = client()
        .get(gate.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert!(
        gate.metric("ltigate_store_errors_total{op=\"nonce\"}")
            .await
            >= 1.0
    );

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = post(&gate, &Launch::acme("r-3", "C-1")).await;
        if r.status() == 303 {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {}", r.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(gate.status().await["store"], "ok");
    assert_eq!(gate.metric("ltigate_store_up").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launches_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_on(&up, &redis_extra(&cluster.urls(), true)).await;
    for i in 0..6 {
        let l = Launch::acme(&format!("c-{i}"), "C-1");
        assert_eq!(post(&gate, &l).await.status(), 303);
        assert_eq!(post(&gate, &l).await.status(), 401);
    }
    let beta = |u: &str| Launch::new("beta-key", "beta-new", u, Some("C-1"));
    assert_eq!(post(&gate, &beta("a")).await.status(), 303);
    assert_eq!(post(&gate, &beta("b")).await.status(), 303);
    assert_eq!(post(&gate, &beta("c")).await.status(), 403);
    assert_eq!(gate.status().await["store"], "ok");
    assert_eq!(gate.status().await["store_backend"], "redis-cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ltigate_starts_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill();
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_on(&up, &redis_extra(&[url], false)).await;
    assert_eq!(post(&gate, &Launch::acme("d-1", "C-1")).await.status(), 503);
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while post(&gate, &Launch::acme("d-2", "C-1")).await.status() != 303 {
        assert!(Instant::now() < deadline, "no recovery");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
