//! LTI 1.3 grades (DESIGN §13 "Outcome target (AGS)"): a learner launched
//! by LTI 1.3 with the AGS endpoint claim gets their grade as a score on
//! the line item, through the same webhook and outbox as LTI 1.1. The fake
//! platform's token endpoint verifies the tool's client assertion against
//! the tool's published JWKS; its scores endpoint checks the bearer, the
//! content type, the body and that timestamps increase.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::gate::{client, Gate};
use support::lti13::*;
use support::platform::{self, Platform};
use support::upstream::Upstream;

const SCORE_SCOPE: &str = "https://purl.imsglobal.org/spec/lti-ags/scope/score";
const ENDPOINT: &str = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint";

/// Gives the platform the tool's published key set (what a platform
/// fetches from the tool's JWKS URL).
async fn trust_the_tool(gate: &Gate, platform: &Platform) {
    let jwks: Value = client()
        .get(gate.url("/lti/1.3/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    platform.ags().tool_jwks = Some(jwks);
}

async fn ags_setup() -> Setup {
    let s = setup("lms_id = \"plat\"").await;
    trust_the_tool(&s.gate, &s.platform).await;
    s
}

/// Launches `sub` by LTI 1.3 on `gate` with the endpoint claim `endpoint`.
async fn launch_with_endpoint(gate: &Gate, platform: &Platform, sub: &str, endpoint: Value) {
    let login = login(gate).await;
    let mut claims = platform::claims(login.nonce(), &launch_url());
    claims["sub"] = json!(sub);
    claims[ENDPOINT] = endpoint;
    let token = platform.key.id_token(&claims);
    let r = post_launch(
        gate,
        "/lti/1.3/launch",
        &[("id_token", &token), ("state", login.state())],
        &login.cookie,
    )
    .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
}

/// Launches `sub` with a line item and the score scope.
async fn ags_launch(gate: &Gate, platform: &Platform, sub: &str) {
    let endpoint = json!({
        "scope": [SCORE_SCOPE, "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly"],
        "lineitem": platform.lineitem_url(1),
        "lineitems": format!("http://{}/lineitems", platform.addr),
    });
    launch_with_endpoint(gate, platform, sub, endpoint).await;
}

/// Sends a signed completion webhook; its status and JSON.
async fn complete(gate: &Gate, event_id: &str, user: &str, score: f64) -> (u16, Value) {
    gate.completion(json!({"event_id": event_id, "user": user, "course": "C-13",
        "activity": "final-assessment", "score": score}))
        .await
}

/// Waits (at most `within`) for the platform to have recorded `n` scores.
async fn wait_scores(platform: &Platform, n: usize, within: Duration) -> Vec<(String, Value)> {
    let deadline = Instant::now() + within;
    loop {
        {
            let ags = platform.ags();
            if ags.scores.len() >= n {
                return ags.scores.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} scores recorded; refused: {:?}",
                ags.scores.len(),
                ags.refused
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most 10 s) for the outbox's first job to be a dead letter.
async fn first_dead_letter(gate: &Gate) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let jobs = gate.admin_json("/outbox").await;
        if jobs["jobs"][0]["state"] == "dead" {
            return jobs["jobs"][0].clone();
        }
        assert!(Instant::now() < deadline, "{jobs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two grades for one learner: one token request, two scores with
/// increasing timestamps, posted where a Moodle-style line item's scores
/// go, with the body of DESIGN §13.
#[tokio::test]
async fn two_grades_take_one_token_and_carry_increasing_timestamps() {
    let s = ags_setup().await;
    ags_launch(&s.gate, &s.platform, "learner-1").await;
    let (status, body) = complete(&s.gate, "e-1", "plat:learner-1", 0.8).await;
    assert_eq!((status, &body["status"]), (202, &json!("queued")), "{body}");
    wait_scores(&s.platform, 1, Duration::from_secs(10)).await;
    let (status, _) = complete(&s.gate, "e-2", "plat:learner-1", 0.95).await;
    assert_eq!(status, 202);
    let scores = wait_scores(&s.platform, 2, Duration::from_secs(10)).await;

    assert_eq!(s.platform.ags().token_requests, 1, "one token for both");
    assert!(s.platform.ags().refused.is_empty());
    for (path, _) in &scores {
        assert_eq!(path, "/lineitems/1/lineitem/scores?type_id=2");
    }
    let (first, second) = (&scores[0].1, &scores[1].1);
    assert_eq!(first["userId"], "learner-1");
    assert_eq!(first["scoreGiven"], 0.8);
    assert_eq!(second["scoreGiven"], 0.95);
    assert_eq!(first["scoreMaximum"], 1);
    assert!(
        first["timestamp"].as_str() < second["timestamp"].as_str(),
        "{first} {second}"
    );
    for (series, want) in [
        (
            "ltigate_outcomes_total{kind=\"ags\",result=\"delivered\"}",
            2.0,
        ),
        (
            "ltigate_ags_tokens_total{platform=\"platform\",result=\"issued\"}",
            1.0,
        ),
        (
            "ltigate_ags_tokens_total{platform=\"platform\",result=\"error\"}",
            0.0,
        ),
    ] {
        assert_eq!(s.gate.metric(series).await, want, "{series}");
    }
}

/// A token the platform revoked: the scores endpoint answers 401, the
/// cached token is dropped, a new one is requested and the score delivered.
#[tokio::test]
async fn a_revoked_token_is_replaced_and_the_grade_delivered() {
    let s = ags_setup().await;
    ags_launch(&s.gate, &s.platform, "learner-1").await;
    complete(&s.gate, "e-1", "plat:learner-1", 0.5).await;
    wait_scores(&s.platform, 1, Duration::from_secs(10)).await;
    s.platform.ags().tokens.clear();
    complete(&s.gate, "e-2", "plat:learner-1", 0.6).await;
    let scores = wait_scores(&s.platform, 2, Duration::from_secs(10)).await;
    assert_eq!(scores[1].1["scoreGiven"], 0.6);
    assert_eq!(s.platform.ags().token_requests, 2);
}

/// A 500 is retried and the grade delivered; a 422 is a dead letter with
/// the platform's words, listed in the outbox with its kind and platform.
#[tokio::test]
async fn a_500_is_retried_and_a_422_is_a_dead_letter() {
    let s = ags_setup().await;
    ags_launch(&s.gate, &s.platform, "learner-1").await;
    s.platform.ags().score_failures.push_back(500);
    complete(&s.gate, "e-1", "plat:learner-1", 0.7).await;
    let scores = wait_scores(&s.platform, 1, Duration::from_secs(10)).await;
    assert_eq!(scores[0].1["scoreGiven"], 0.7);
    assert!(
        s.gate
            .metric("ltigate_outcomes_total{kind=\"ags\",result=\"retried\"}")
            .await
            >= 1.0
    );

    s.platform.ags().score_failures.push_back(422);
    complete(&s.gate, "e-2", "plat:learner-1", 0.9).await;
    let dead = first_dead_letter(&s.gate).await;
    assert_eq!(dead["kind"], "ags");
    assert_eq!(dead["platform"], "platform");
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .contains("the platform says 422"),
        "{dead}"
    );
    assert_eq!(
        s.gate
            .metric("ltigate_outcomes_total{kind=\"ags\",result=\"dead\"}")
            .await,
        1.0
    );
    let table = ltigate::admin::client::list(&s.gate.admin_url(""), false)
        .await
        .unwrap();
    assert!(table.lines().nth(1).unwrap().contains(" ags "), "{table}");
    assert!(
        table.lines().nth(1).unwrap().contains(" platform "),
        "{table}"
    );
}

/// A token endpoint that refuses (`invalid_client`, then a 5xx) is retried
/// like an outage: the grade still arrives.
#[tokio::test]
async fn a_refusing_token_endpoint_is_retried_until_the_grade_arrives() {
    let s = ags_setup().await;
    ags_launch(&s.gate, &s.platform, "learner-1").await;
    s.platform.ags().token_failures.extend([
        (401, "invalid_client".to_string()),
        (503, "unavailable".to_string()),
    ]);
    complete(&s.gate, "e-1", "plat:learner-1", 0.4).await;
    wait_scores(&s.platform, 1, Duration::from_secs(15)).await;
    assert_eq!(
        s.gate
            .metric("ltigate_ags_tokens_total{platform=\"platform\",result=\"error\"}")
            .await,
        2.0
    );
    assert_eq!(s.gate.status().await["outbox"]["dead"], 0);
}

/// A claim with only `lineitems`, or without the score scope, stores no
/// target (counted with its reason); the learner's grade waits for one.
#[tokio::test]
async fn without_a_line_item_and_the_score_scope_there_is_no_target() {
    let s = ags_setup().await;
    let lineitems = format!("http://{}/lineitems", s.platform.addr);
    launch_with_endpoint(
        &s.gate,
        &s.platform,
        "learner-1",
        json!({"scope": [SCORE_SCOPE], "lineitems": lineitems}),
    )
    .await;
    launch_with_endpoint(
        &s.gate,
        &s.platform,
        "learner-2",
        json!({"scope": ["https://purl.imsglobal.org/spec/lti-ags/scope/lineitem"],
            "lineitem": s.platform.lineitem_url(1)}),
    )
    .await;
    for reason in ["no_lineitem", "no_score_scope"] {
        let series = format!(
            "ltigate_outcome_targets_refused_total{{consumer=\"platform\",reason=\"{reason}\"}}"
        );
        assert_eq!(s.gate.metric(&series).await, 1.0, "{series}");
    }
    let (status, body) = complete(&s.gate, "e-1", "plat:learner-1", 0.5).await;
    assert_eq!(status, 202);
    assert_eq!(body["status"], "waiting_for_target", "{body}");
    // The next launch with a line item gives the waiting grade its target.
    ags_launch(&s.gate, &s.platform, "learner-1").await;
    let scores = wait_scores(&s.platform, 1, Duration::from_secs(10)).await;
    assert_eq!(scores[0].1["userId"], "learner-1");
}

/// Basic Outcomes and AGS jobs in one outbox are delivered side by side.
#[tokio::test]
async fn a_mixed_outbox_delivers_both_kinds() {
    let s = ags_setup().await;
    let lms = support::fake_lms::FakeLms::start("acme-key", "acme-secret").await;
    let l11 = support::lms::Launch::acme("g-11", "C-13")
        .set("lis_outcome_service_url", &lms.url())
        .set("lis_result_sourcedid", "sid-11");
    let r = client()
        .post(s.gate.url(&l11.path_and_query()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(l11.body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    ags_launch(&s.gate, &s.platform, "learner-13").await;
    complete(&s.gate, "e-11", "acme:g-11", 0.3).await;
    complete(&s.gate, "e-13", "plat:learner-13", 0.6).await;
    assert_eq!(
        lms.wait_accepted(1, Duration::from_secs(10)).await,
        vec![("sid-11".to_string(), 0.3)]
    );
    let scores = wait_scores(&s.platform, 1, Duration::from_secs(10)).await;
    assert_eq!(scores[0].1["userId"], "learner-13");
    for kind in ["basic", "ags"] {
        let series = format!("ltigate_outcomes_total{{kind=\"{kind}\",result=\"delivered\"}}");
        assert_eq!(s.gate.metric(&series).await, 1.0, "{series}");
    }
}

/// Two replicas on one Redis deliver 50 AGS grades (25 learners, two
/// rounds), each exactly once, with strictly increasing timestamps per
/// learner (the platform refuses any that is not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_redis_deliver_each_grade_once_with_increasing_timestamps() {
    let redis = support::redis::RedisServer::start();
    let up = Upstream::start(Some("upstream-token")).await;
    let platform = Platform::start().await;
    let a = gate_on_redis(&up, &platform, &redis.url()).await;
    let b = gate_on_redis(&up, &platform, &redis.url()).await;
    trust_the_tool(&a, &platform).await;
    let learners: Vec<String> = (0..25).map(|i| format!("m-{i}")).collect();
    for (i, l) in learners.iter().enumerate() {
        let gate = if i % 2 == 0 { &a } else { &b };
        ags_launch(gate, &platform, l).await;
    }
    for round in 0..2 {
        for (i, l) in learners.iter().enumerate() {
            let gate = if (i + round) % 2 == 0 { &a } else { &b };
            let score = 0.5 + round as f64 * 0.25;
            let (status, body) =
                complete(gate, &format!("e-{round}-{i}"), &format!("plat:{l}"), score).await;
            assert_eq!(status, 202, "{body}");
        }
        wait_scores(&platform, 25 * (round + 1), Duration::from_secs(30)).await;
    }
    // Settle: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ags = platform.ags();
    assert!(ags.refused.is_empty(), "{:?}", ags.refused);
    assert_eq!(ags.scores.len(), 50, "each grade exactly once");
    for l in &learners {
        let mine: Vec<&Value> = ags
            .scores
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s["userId"] == l.as_str())
            .collect();
        assert_eq!(mine.len(), 2, "{l}");
        assert_eq!(
            (&mine[0]["scoreGiven"], &mine[1]["scoreGiven"]),
            (&json!(0.5), &json!(0.75))
        );
        assert!(mine[0]["timestamp"].as_str() < mine[1]["timestamp"].as_str());
    }
}
