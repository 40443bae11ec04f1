//! Grade passback end to end: launch with an outcome service, completion
//! webhook from the platform, signed Basic Outcomes delivery to a fake LMS
//! that verifies signature, body hash and content type independently.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ltigate::lti::oauth1::SignatureMethod;
use ltigate::secret::Secret;
use support::fake_lms::{Answer, FakeLms};
use support::gate::{base_config, client, Gate, WEBHOOK_SECRET};
use support::lms::Launch;
use support::redis::RedisServer;
use support::upstream::Upstream;

/// Moodle's shape, with XML's special characters and whitespace around it:
/// all of it is the consumer's identifier and must come back as it was sent.
const SOURCED: &str =
    r#" {"data":{"instanceid":"2","userid":"3","launchid":771},"hash":"<a&b>'q'"} "#;

async fn launch(gate: &Gate, l: &Launch) -> u16 {
    client()
        .post(gate.url(&l.path_and_query()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(l.body())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn graded(user: &str, course: &str, lms: &FakeLms, sourced: &str) -> Launch {
    Launch::acme(user, course)
        .set("lis_outcome_service_url", &lms.url())
        .set("lis_result_sourcedid", sourced)
}

async fn webhook_raw(gate: &Gate, body: &str, signature: &str) -> (u16, serde_json::Value) {
    let r = client()
        .post(gate.admin_url("/webhooks/completion"))
        .header("content-type", "application/json")
        .header("x-ltigate-signature", signature)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let json = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn sign(body: &str) -> String {
    let t = support::lms::now();
    ltigate::outcomes::sign_webhook(body.as_bytes(), &Secret::new(WEBHOOK_SECRET), t)
}

async fn webhook(gate: &Gate, v: serde_json::Value) -> (u16, serde_json::Value) {
    let body = v.to_string();
    webhook_raw(gate, &body, &sign(&body)).await
}

fn event(id: &str, user: &str, course: &str, score: f64) -> serde_json::Value {
    serde_json::json!({"event_id": id, "user": user, "course": course, "activity": "final-assessment", "score": score})
}

/// Waits (at most 5 s) for the outbox's first job to be a dead letter.
async fn first_dead_letter(gate: &Gate) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let jobs = outbox(gate).await;
        if jobs["jobs"][0]["state"] == "dead" {
            return jobs["jobs"][0].clone();
        }
        assert!(Instant::now() < deadline, "{jobs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most 3 s) for a gauge, refreshed at most once a second, to
/// read `want`.
async fn gauge_reads(gate: &Gate, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let got = gate.metric(series).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{series} is {got}, not {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn setup() -> (Upstream, Gate, FakeLms) {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = Gate::start(&up.url(), "").await;
    let lms = FakeLms::start("acme-key", "acme-secret").await;
    (up, gate, lms)
}

async fn outbox(gate: &Gate) -> serde_json::Value {
    gate.admin_json("/outbox").await
}

#[tokio::test]
async fn completion_reaches_the_gradebook_with_sourcedid_intact() {
    let (_up, gate, lms) = setup().await;
    assert_eq!(
        launch(&gate, &graded("g-1", "C-1", &lms, SOURCED)).await,
        303
    );
    let (status, body) = webhook(&gate, event("e-1", "acme:g-1", "C-1", 0.8)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "queued");
    let got = lms.wait_accepted(1, Duration::from_secs(5)).await;
    assert_eq!(got, vec![(SOURCED.to_string(), 0.8)]);
    assert!(lms.rejected().is_empty(), "{:?}", lms.rejected());
    assert_eq!(lms.received()[0].method, "HMAC-SHA1");
    assert_eq!(
        gate.metric("ltigate_outcomes_total{kind=\"basic\",result=\"delivered\"}")
            .await,
        1.0
    );
    assert_eq!(
        gate.metric("ltigate_webhooks_total{result=\"queued\"}")
            .await,
        1.0
    );
    // Delivered jobs leave the outbox.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(outbox(&gate).await["jobs"].as_array().unwrap().len(), 0);
}

/// The LMS checks the signature over the URL it received; the HTTP client
/// sends an outcome URL normalised (braces, spaces and non-ASCII encoded, dot
/// segments resolved), so that is the URL signed.
#[tokio::test]
async fn an_outcome_url_is_signed_as_it_is_sent() {
    let (_up, gate, lms) = setup().await;
    let url = format!(
        "http://{}/grade/{{term}}/señor/../x y\"1\"?tool=a b&n=ü",
        lms.addr
    );
    let l = Launch::acme("g-url", "C-1")
        .set("lis_outcome_service_url", &url)
        .set("lis_result_sourcedid", "sid-url");
    assert_eq!(launch(&gate, &l).await, 303);
    let (status, body) = webhook(&gate, event("e-url", "acme:g-url", "C-1", 0.5)).await;
    assert_eq!(status, 202, "{body}");
    let got = lms.wait_accepted(1, Duration::from_secs(5)).await;
    assert_eq!(got, vec![("sid-url".to_string(), 0.5)]);
    assert!(lms.rejected().is_empty(), "{:?}", lms.rejected());
}

/// During a secret rotation a grade goes back signed with the secret that
/// verified its launch: an LMS still on the old secret verifies it.
#[tokio::test]
async fn a_grade_is_signed_with_the_secret_that_verified_its_launch() {
    let (_up, gate, _) = setup().await;
    let lms = FakeLms::start("beta-key", "beta-old").await;
    let l = Launch::new("beta-key", "beta-old", "g-rot", Some("C-1"))
        .set("lis_outcome_service_url", &lms.url())
        .set("lis_result_sourcedid", "sid-rot");
    assert_eq!(launch(&gate, &l).await, 303);
    let (status, body) = webhook(&gate, event("e-rot", "beta:g-rot", "C-1", 0.9)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        lms.wait_accepted(1, Duration::from_secs(5)).await,
        vec![("sid-rot".to_string(), 0.9)]
    );
    assert!(lms.rejected().is_empty(), "{:?}", lms.rejected());
}

#[tokio::test]
async fn percentage_becomes_a_fraction_and_sha256_launches_get_sha256_deliveries() {
    let (_up, gate, lms) = setup().await;
    let mut l = graded("g-2", "C-1", &lms, "sid-2");
    l.method = SignatureMethod::HmacSha256;
    assert_eq!(launch(&gate, &l).await, 303);
    let v = serde_json::json!({"event_id": "e-2", "user": "acme:g-2", "course": "C-1", "activity": "x", "percentage": 80});
    assert_eq!(webhook(&gate, v).await.0, 202);
    let got = lms.wait_accepted(1, Duration::from_secs(5)).await;
    assert_eq!(got, vec![("sid-2".to_string(), 0.8)]);
    assert_eq!(lms.received()[0].method, "HMAC-SHA256");
}

#[tokio::test]
async fn bad_stale_and_missing_signatures_are_401() {
    let (_up, gate, lms) = setup().await;
    assert_eq!(
        launch(&gate, &graded("g-3", "C-1", &lms, "sid-3")).await,
        303
    );
    let body = event("e-3", "acme:g-3", "C-1", 0.5).to_string();
    let wrong = ltigate::outcomes::sign_webhook(
        body.as_bytes(),
        &Secret::new("not-the-secret-000"),
        support::lms::now(),
    );
    assert_eq!(webhook_raw(&gate, &body, &wrong).await.0, 401);
    let stale = ltigate::outcomes::sign_webhook(
        body.as_bytes(),
        &Secret::new(WEBHOOK_SECRET),
        support::lms::now() - 301,
    );
    assert_eq!(webhook_raw(&gate, &body, &stale).await.0, 401);
    assert_eq!(webhook_raw(&gate, &body, "").await.0, 401);
    // The signature covers the exact bytes.
    let sig = sign(&body);
    let tampered = body.replace("0.5", "1.0");
    assert_eq!(webhook_raw(&gate, &tampered, &sig).await.0, 401);
    assert_eq!(
        gate.metric("ltigate_webhooks_total{result=\"bad_signature\"}")
            .await,
        4.0
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(lms.received().is_empty());
}

/// Without `webhook.secret` nothing can be verified: every webhook is a 401
/// saying so, whatever its body, and no body is read.
#[tokio::test]
async fn without_a_webhook_secret_every_webhook_is_401() {
    let up = Upstream::start(Some("upstream-token")).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = base_config(&up.url(), dir.path()).replace(
        &format!("secret = \"{WEBHOOK_SECRET}\""),
        "max_body = \"1KiB\"",
    );
    let gate = Gate::start_with(&toml, dir).await;
    let body = event("e-none", "acme:g-none", "C-1", 0.5).to_string();
    // Over max_body, yet small enough to arrive with the headers.
    let oversized = "x".repeat(2048);
    for (body, signature) in [
        (body.as_str(), sign(&body)),
        (oversized.as_str(), String::new()),
    ] {
        let (status, answer) = webhook_raw(&gate, body, &signature).await;
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["error"], "bad_signature");
        assert!(
            answer["message"]
                .as_str()
                .unwrap_or("")
                .contains("webhook.secret"),
            "{answer}"
        );
    }
    assert_eq!(
        gate.metric("ltigate_webhooks_total{result=\"bad_signature\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn invalid_scores_and_unknown_learners_are_422_naming_the_field() {
    let (_up, gate, lms) = setup().await;
    assert_eq!(
        launch(&gate, &graded("g-4", "C-1", &lms, "sid-4")).await,
        303
    );
    for (score, field) in [
        (serde_json::json!(1.5), "score"),
        (serde_json::json!(-0.1), "score"),
        (serde_json::json!("NaN"), "score"),
        (serde_json::json!("0.5"), "score"),
    ] {
        let v = serde_json::json!({"event_id": "e-4", "user": "acme:g-4", "course": "C-1", "score": score});
        let (status, body) = webhook(&gate, v).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["field"], field);
    }
    let v = serde_json::json!({"event_id": "e-4", "user": "acme:g-4", "course": "C-1", "percentage": 101});
    assert_eq!(webhook(&gate, v).await.1["field"], "percentage");
    let v = serde_json::json!({"user": "acme:g-4", "course": "C-1", "score": 0.5});
    assert_eq!(webhook(&gate, v).await.1["field"], "event_id");
    // A learner who never launched, a course the learner never launched,
    // an lms_id nobody has.
    for (user, course) in [
        ("acme:nobody", "C-1"),
        ("acme:g-4", "C-other"),
        ("zzz:g-4", "C-1"),
    ] {
        let (status, body) = webhook(&gate, event("e-5", user, course, 0.5)).await;
        assert_eq!(status, 422, "{user} {course}: {body}");
        assert_eq!(body["field"], "user");
    }
    // JSON has no NaN: unparsable.
    let raw = r#"{"event_id":"e-6","user":"acme:g-4","course":"C-1","score":NaN}"#;
    assert_eq!(webhook_raw(&gate, raw, &sign(raw)).await.0, 400);
    // Invalid events are not remembered: a corrected one with the same id goes through.
    assert_eq!(
        webhook(&gate, event("e-4", "acme:g-4", "C-1", 0.5)).await.0,
        202
    );
    // Too large.
    let big = format!(r#"{{"event_id":"e-7","pad":"{}"}}"#, "x".repeat(70 * 1024));
    assert_eq!(webhook_raw(&gate, &big, &sign(&big)).await.0, 413);
    assert_eq!(lms.wait_accepted(1, Duration::from_secs(5)).await.len(), 1);
}

#[tokio::test]
async fn other_activities_are_ignored_and_duplicates_delivered_once() {
    let (_up, gate, lms) = setup().await;
    assert_eq!(
        launch(&gate, &graded("g-5", "C-graded", &lms, "sid-5")).await,
        303
    );
    let mut other = event("e-10", "acme:g-5", "C-graded", 0.3);
    other["activity"] = "quiz-1".into();
    let (status, body) = webhook(&gate, other.clone()).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ignored")));
    // Ignored ids are remembered too.
    assert_eq!(webhook(&gate, other).await.1["status"], "duplicate");

    let graded_event = event("e-11", "acme:g-5", "C-graded", 0.9);
    assert_eq!(webhook(&gate, graded_event.clone()).await.0, 202);
    let (status, body) = webhook(&gate, graded_event.clone()).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("duplicate")));
    lms.wait_accepted(1, Duration::from_secs(5)).await;
    // After delivery, a retried webhook is still a duplicate.
    assert_eq!(webhook(&gate, graded_event).await.1["status"], "duplicate");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(lms.accepted(), vec![("sid-5".to_string(), 0.9)]);
    assert_eq!(
        gate.metric("ltigate_webhooks_total{result=\"ignored\"}")
            .await,
        1.0
    );
    assert_eq!(
        gate.metric("ltigate_webhooks_total{result=\"duplicate\"}")
            .await,
        3.0
    );
}

#[tokio::test]
async fn a_score_before_any_target_waits_and_only_the_newest_is_sent() {
    let (_up, gate, lms) = setup().await;
    // Course navigation launch: no outcome service.
    assert_eq!(launch(&gate, &Launch::acme("g-6", "C-1")).await, 303);
    let (status, body) = webhook(&gate, event("e-20", "acme:g-6", "C-1", 0.4)).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("waiting_for_target"))
    );
    assert_eq!(
        webhook(&gate, event("e-21", "acme:g-6", "C-1", 0.7))
            .await
            .1["status"],
        "waiting_for_target"
    );
    let jobs = outbox(&gate).await;
    assert_eq!(jobs["jobs"][0]["state"], "waiting");
    assert_eq!(jobs["jobs"][0]["score"], 0.7);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(lms.received().is_empty());
    // The assignment launch brings the target: the latest score goes out.
    assert_eq!(
        launch(&gate, &graded("g-6", "C-1", &lms, "sid-6")).await,
        303
    );
    assert_eq!(
        lms.wait_accepted(1, Duration::from_secs(5)).await,
        vec![("sid-6".to_string(), 0.7)]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lms.received().len(), 1);
}

#[tokio::test]
async fn a_newer_event_replaces_one_not_yet_delivered() {
    let (_up, gate, lms) = setup().await;
    assert_eq!(
        launch(&gate, &graded("g-7", "C-1", &lms, "sid-7")).await,
        303
    );
    // The first attempt fails; the retry is scheduled.
    lms.then([Answer::Status(503)]);
    assert_eq!(
        webhook(&gate, event("e-30", "acme:g-7", "C-1", 0.2))
            .await
            .0,
        202
    );
    lms.wait_received(1, Duration::from_secs(5)).await;
    assert_eq!(
        webhook(&gate, event("e-31", "acme:g-7", "C-1", 0.95))
            .await
            .0,
        202
    );
    let got = lms.wait_accepted(1, Duration::from_secs(5)).await;
    assert_eq!(got, vec![("sid-7".to_string(), 0.95)]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // 0.2 was never accepted, and nothing else arrived.
    assert_eq!(lms.accepted(), vec![("sid-7".to_string(), 0.95)]);
}

#[tokio::test]
async fn server_errors_are_retried_until_delivered() {
    let (_up, gate, lms) = setup().await;
    assert_eq!(
        launch(&gate, &graded("g-8", "C-1", &lms, "sid-8")).await,
        303
    );
    lms.then([
        Answer::Status(500),
        Answer::Status(500),
        Answer::Status(500),
    ]);
    assert_eq!(
        webhook(&gate, event("e-40", "acme:g-8", "C-1", 0.6))
            .await
            .0,
        202
    );
    let got = lms.wait_accepted(1, Duration::from_secs(10)).await;
    assert_eq!(got, vec![("sid-8".to_string(), 0.6)]);
    assert_eq!(lms.received().len(), 4);
    assert_eq!(
        gate.metric("ltigate_outcomes_total{kind=\"basic\",result=\"retried\"}")
            .await,
        3.0
    );
    assert_eq!(
        gate.metric("ltigate_outcomes_total{kind=\"basic\",result=\"delivered\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let (_up, gate, lms) = setup().await;
    assert_eq!(
        launch(&gate, &graded("g-9", "C-1", &lms, "sid-9")).await,
        303
    );
    lms.then([Answer::TooMany(2)]);
    assert_eq!(
        webhook(&gate, event("e-50", "acme:g-9", "C-1", 0.5))
            .await
            .0,
        202
    );
    // Between the attempts the job is counted in the outbox gauges.
    let deadline = Instant::now() + Duration::from_secs(2);
    while lms.received().is_empty() {
        assert!(Instant::now() < deadline, "no first attempt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gauge_reads(&gate, "ltigate_outbox_depth", 1.0).await;
    assert_eq!(gate.metric("ltigate_outbox_dead").await, 0.0);
    assert!(gate.metric("ltigate_outbox_oldest_age_seconds").await > 0.0);
    let pending = &outbox(&gate).await["jobs"][0];
    assert_eq!(pending["state"], "pending");
    assert_eq!(pending["kind"], "basic_outcomes");
    lms.wait_accepted(1, Duration::from_secs(8)).await;
    let r = lms.received();
    assert_eq!(r.len(), 2);
    let gap = r[1].at - r[0].at;
    // retry_max is 1 s in the test configuration; Retry-After asks for 2.
    assert!(gap >= Duration::from_millis(1900), "{gap:?}");
    gauge_reads(&gate, "ltigate_outbox_depth", 0.0).await;
    assert_eq!(gate.metric("ltigate_outbox_oldest_age_seconds").await, 0.0);
}

#[tokio::test]
async fn pox_failure_is_a_dead_letter_that_an_operator_can_retry() {
    let (_up, gate, lms) = setup().await;
    assert_eq!(
        launch(&gate, &graded("g-10", "C-1", &lms, "sid-10")).await,
        303
    );
    lms.then([Answer::Failure(422, "Assignment is locked".into())]);
    assert_eq!(
        webhook(&gate, event("e-60", "acme:g-10", "C-1", 0.5))
            .await
            .0,
        202
    );
    let dead = first_dead_letter(&gate).await;
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .contains("Assignment is locked"),
        "{dead}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(lms.received().len(), 1, "a dead letter is not retried");
    assert_eq!(
        gate.metric("ltigate_outcomes_total{kind=\"basic\",result=\"dead\"}")
            .await,
        1.0
    );
    let status = gate.status().await;
    assert_eq!(status["outbox"]["dead"], 1);
    assert_eq!(status["outbox"]["depth"], 0);
    gauge_reads(&gate, "ltigate_outbox_dead", 1.0).await;
    assert_eq!(gate.metric("ltigate_outbox_depth").await, 0.0);

    // The operator sees it and re-queues it with the CLI.
    let cli = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ltigate"))
            .args(args)
            .output()
            .await
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let admin = format!("http://{}", gate.admin);
    let (ok, list, err) = cli(vec![
        "outbox".into(),
        "--admin".into(),
        admin.clone(),
        "list".into(),
    ])
    .await;
    assert!(ok, "{err}");
    assert!(
        list.contains("dead") && list.contains("Assignment is locked"),
        "{list}"
    );
    assert!(list.contains(dead["id"].as_str().unwrap()), "{list}");
    let (ok, _, err) = cli(vec![
        "outbox".into(),
        "--admin".into(),
        admin.clone(),
        "retry".into(),
        "no-such-id".into(),
    ])
    .await;
    assert!(!ok);
    assert!(err.contains("no dead letter with this id"), "{err}");
    let (ok, out, err) = cli(vec![
        "outbox".into(),
        "--admin".into(),
        admin,
        "retry".into(),
        dead["id"].as_str().unwrap().to_string(),
    ])
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "re-queued 1 job(s)");
    let (ok, out, _) = cli(vec![
        "outbox".into(),
        "--admin".into(),
        format!("http://{}", gate.admin),
        "retry".into(),
        "--all-dead".into(),
    ])
    .await;
    assert!(ok);
    assert_eq!(out.trim(), "re-queued 0 job(s)");
    assert_eq!(
        lms.wait_accepted(1, Duration::from_secs(5)).await,
        vec![("sid-10".to_string(), 0.5)]
    );
    gauge_reads(&gate, "ltigate_outbox_dead", 0.0).await;
}

#[tokio::test]
async fn a_loopback_outcome_url_is_refused_without_allow_insecure_targets() {
    let up = Upstream::start(Some("upstream-token")).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = support::gate::base_config(&up.url(), dir.path()).replace(
        "allow_insecure_targets = true",
        "allow_insecure_targets = false",
    );
    let gate = Gate::start_with(&toml, dir).await;
    let lms = FakeLms::start("acme-key", "acme-secret").await;
    // The launch succeeds, but no target is stored.
    assert_eq!(
        launch(&gate, &graded("g-11", "C-1", &lms, "sid-11")).await,
        303
    );
    let (status, body) = webhook(&gate, event("e-70", "acme:g-11", "C-1", 0.5)).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("waiting_for_target"))
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(lms.received().is_empty());
    // Counted, for an alert: this LMS's grades cannot go back.
    assert_eq!(
        gate.metric(
            "ltigate_outcome_targets_refused_total{consumer=\"Acme\",reason=\"unsafe_url\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        gate.metric(
            "ltigate_outcome_targets_refused_total{consumer=\"Beta\",reason=\"unsafe_url\"}"
        )
        .await,
        0.0
    );
}

#[tokio::test]
async fn a_queued_grade_survives_a_restart_and_an_lms_outage() {
    let up = Upstream::start(Some("upstream-token")).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = support::gate::base_config(&up.url(), dir.path());
    let gate = Gate::start_with(&toml, dir).await;
    let lms = FakeLms::start("acme-key", "acme-secret").await;
    assert_eq!(
        launch(&gate, &graded("g-12", "C-1", &lms, "sid-12")).await,
        303
    );
    // The LMS is down for a while.
    lms.then((0..6).map(|_| Answer::Status(503)));
    assert_eq!(
        webhook(&gate, event("e-80", "acme:g-12", "C-1", 0.75))
            .await
            .0,
        202
    );
    lms.wait_received(1, Duration::from_secs(5)).await;
    let gate = gate.restart(&toml).await;
    let got = lms.wait_accepted(1, Duration::from_secs(15)).await;
    assert_eq!(got, vec![("sid-12".to_string(), 0.75)]);
    drop(gate);
}

/// An outcome URL stored at launch is checked again at delivery: once the
/// consumer's `outcome_hosts` no longer allow it, the grade is a dead letter
/// saying why, and nothing is sent there.
#[tokio::test]
async fn an_outcome_url_no_longer_allowed_is_refused_at_delivery() {
    let up = Upstream::start(Some("upstream-token")).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = support::gate::base_config(&up.url(), dir.path());
    let gate = Gate::start_with(&toml, dir).await;
    let lms = FakeLms::start("acme-key", "acme-secret").await;
    assert_eq!(
        launch(&gate, &graded("g-13", "C-1", &lms, "sid-13")).await,
        303
    );
    let narrowed = toml.replace(
        "lms_id = \"acme\"",
        "lms_id = \"acme\"\noutcome_hosts = [\"lms.acme.example\"]",
    );
    assert_ne!(narrowed, toml);
    let gate = gate.restart(&narrowed).await;
    assert_eq!(
        webhook(&gate, event("e-90", "acme:g-13", "C-1", 0.5))
            .await
            .0,
        202
    );
    let dead = first_dead_letter(&gate).await;
    let why = dead["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("outcome URL refused"), "{dead}");
    assert!(lms.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_redis_deliver_fifty_jobs_once_each() {
    let redis = RedisServer::start();
    let up = Upstream::start(Some("upstream-token")).await;
    let lms = Arc::new(FakeLms::start("acme-key", "acme-secret").await);
    let store = format!("[store]\nurl = \"{}\"\n", redis.url());
    let make = |dir: &std::path::Path| {
        support::gate::with_store(&support::gate::base_config(&up.url(), dir), &store)
    };
    let d1 = tempfile::tempdir().unwrap();
    let t1 = make(d1.path());
    let g1 = Gate::start_with(&t1, d1).await;
    let d2 = tempfile::tempdir().unwrap();
    let t2 = make(d2.path());
    let g2 = Gate::start_with(&t2, d2).await;
    // Slow answers make overlapping leases likely if they were possible.
    lms.then((0..50).map(|_| Answer::Hang(Duration::from_millis(40))));
    for i in 0..50 {
        let gate = if i % 2 == 0 { &g1 } else { &g2 };
        assert_eq!(
            launch(
                gate,
                &graded(&format!("m-{i}"), "C-1", &lms, &format!("sid-m-{i}"))
            )
            .await,
            303
        );
    }
    for i in 0..50 {
        let gate = if i % 2 == 0 { &g2 } else { &g1 };
        let (status, _) = webhook(
            gate,
            event(&format!("e-m-{i}"), &format!("acme:m-{i}"), "C-1", 0.5),
        )
        .await;
        assert_eq!(status, 202);
    }
    let got = lms.wait_accepted(50, Duration::from_secs(20)).await;
    let mut ids: Vec<String> = got.into_iter().map(|(s, _)| s).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(lms.accepted().len(), 50, "each job delivered once");
    assert_eq!(
        lms.max_concurrent(),
        1,
        "never two deliveries of one job at once"
    );
    let d1 = g1
        .metric("ltigate_outcomes_total{kind=\"basic\",result=\"delivered\"}")
        .await;
    let d2 = g2
        .metric("ltigate_outcomes_total{kind=\"basic\",result=\"delivered\"}")
        .await;
    assert_eq!(d1 + d2, 50.0);
}

#[tokio::test]
async fn grade_passback_on_redis() {
    let redis = RedisServer::start();
    let up = Upstream::start(Some("upstream-token")).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = support::gate::with_store(
        &support::gate::base_config(&up.url(), dir.path()),
        &format!("[store]\nurl = \"{}\"", redis.url()),
    );
    let gate = Gate::start_with(&toml, dir).await;
    let lms = FakeLms::start("acme-key", "acme-secret").await;
    assert_eq!(launch(&gate, &Launch::acme("g-13", "C-1")).await, 303);
    assert_eq!(
        webhook(&gate, event("e-90", "acme:g-13", "C-1", 0.1))
            .await
            .1["status"],
        "waiting_for_target"
    );
    assert_eq!(
        webhook(&gate, event("e-91", "acme:g-13", "C-1", 0.3))
            .await
            .1["status"],
        "waiting_for_target"
    );
    assert_eq!(
        launch(&gate, &graded("g-13", "C-1", &lms, SOURCED)).await,
        303
    );
    assert_eq!(
        lms.wait_accepted(1, Duration::from_secs(5)).await,
        vec![(SOURCED.to_string(), 0.3)]
    );
    assert_eq!(
        webhook(&gate, event("e-91", "acme:g-13", "C-1", 0.3))
            .await
            .1["status"],
        "duplicate"
    );
}

/// During a rolling upgrade a newer replica may store a target of a kind this
/// release cannot deliver (as LTI 1.3 AGS targets were to releases before
/// it). The worker delivers the Basic
/// Outcomes job queued beside it and hands the other back, for a replica
/// that knows its kind: still pending, not an attempt, no dead letter, not
/// due again for a while (no busy loop), listed with its kind.
#[tokio::test]
async fn a_target_kind_not_known_here_is_left_for_another_replica() {
    let (_up, gate, lms) = setup().await;
    let newer = ltigate::store::Enrolment::new("Acme", "C-1", "acme:g-new");
    let ags = br#"{"kind":"future_kind","lineitem":"https://lms.example.org/api/lti/courses/1/line_items/7","user_id":"5f3c","platform":"canvas"}"#;
    gate.app()
        .store
        .put_enrolment(&newer, Some(ags))
        .await
        .unwrap();
    assert_eq!(
        launch(&gate, &graded("g-old", "C-1", &lms, "sid-old")).await,
        303
    );
    let before = ltigate::store::now_millis();
    for (id, user) in [("e-new", "acme:g-new"), ("e-old", "acme:g-old")] {
        let (status, body) = webhook(&gate, event(id, user, "C-1", 0.9)).await;
        assert_eq!((status, &body["status"]), (202, &"queued".into()), "{body}");
    }
    assert_eq!(
        lms.wait_accepted(1, Duration::from_secs(5)).await,
        vec![("sid-old".to_string(), 0.9)]
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while gate.metric("ltigate_outcomes_unknown_kind_total").await < 1.0 {
        assert!(Instant::now() < deadline, "the job was not handed back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Given time to spin, it does not: handed back once, due in 30 s.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        gate.metric("ltigate_outcomes_unknown_kind_total").await,
        1.0
    );
    let jobs = outbox(&gate).await;
    let list = jobs["jobs"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{jobs}");
    let job = &list[0];
    assert_eq!(job["learner"], "acme:g-new");
    assert_eq!(job["state"], "pending");
    assert_eq!(job["kind"], "future_kind");
    assert_eq!(job["attempts"], 0);
    assert_eq!(job["last_error"], serde_json::Value::Null);
    assert_eq!(job["leased"], false);
    let next_at = job["next_at_ms"].as_u64().unwrap();
    assert!(next_at >= before + 25_000, "due again too soon: {job}");
    assert_eq!(lms.received().len(), 1, "nothing sent for the unknown kind");
    assert_eq!(
        gate.metric("ltigate_outcomes_total{kind=\"basic\",result=\"delivered\"}")
            .await,
        1.0
    );
    for result in ["retried", "dead"] {
        assert_eq!(
            gate.metric(&format!(
                "ltigate_outcomes_total{{kind=\"basic\",result=\"{result}\"}}"
            ))
            .await,
            0.0
        );
    }
    assert_eq!(gate.status().await["outbox"]["dead"], 0);
    // Every kind of the contract is exposed from the start.
    let text = gate.metrics_text().await;
    for kind in ["basic", "ags"] {
        for result in ["delivered", "retried", "dead"] {
            let series = format!("ltigate_outcomes_total{{kind=\"{kind}\",result=\"{result}\"}} ");
            assert!(text.contains(&series), "{series} missing");
        }
    }
    // `ltigate outbox list` shows the kind.
    let table = ltigate::admin::client::list(&gate.admin_url(""), false)
        .await
        .unwrap();
    assert!(
        table.starts_with("STATE    ATTEMPTS  SCORE  KIND "),
        "{table}"
    );
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.starts_with("pending") && row.contains(" future_kind "),
        "{table}"
    );
}
