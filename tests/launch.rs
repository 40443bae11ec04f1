//! LTI 1.1 launches end to end over real sockets: a signed form POST to
//! ltigate, provisioning at a fake upstream, the sealed cookie, the ticket.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ltigate::lti::oauth1::SignatureMethod;
use support::gate::{base_config, client, Gate, PUBLIC_URL};
use support::lms::{encode, Launch};
use support::upstream::{Mode, Upstream};

async fn post(gate: &Gate, l: &Launch, cookie: Option<&str>) -> reqwest::Response {
    post_body(gate, &l.path_and_query(), l.body(), cookie).await
}

async fn post_body(
    gate: &Gate,
    path: &str,
    body: String,
    cookie: Option<&str>,
) -> reqwest::Response {
    let mut req = client()
        .post(gate.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The `name=value` part of the session `Set-Cookie`.
fn session_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-ltigate_session="))
        .map(|v| v.split(';').next().unwrap().to_string())
}

async fn setup() -> (Upstream, Gate) {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = Gate::start(&up.url(), "").await;
    (up, gate)
}

#[tokio::test]
async fn accepted_launch_provisions_and_sets_a_sealed_cookie() {
    let (up, gate) = setup().await;
    let r = post(&gate, &Launch::acme("u-1", "C-1"), None).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    assert!(
        location(&r).starts_with("/lti/continue?ticket="),
        "{}",
        location(&r)
    );
    let set_cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("__Host-ltigate_session="))
        .unwrap();
    for attr in [
        "Path=/",
        "HttpOnly",
        "Secure",
        "SameSite=None",
        "Max-Age=28800",
    ] {
        assert!(set_cookie.contains(attr), "{attr} missing in {set_cookie}");
    }
    assert!(!set_cookie.contains("Domain="));
    let cookie = session_cookie(&r).unwrap();
    // The cookie is sealed: nothing of the learner is readable in it.
    assert!(!cookie.contains("acme") && !cookie.contains("Ada"));

    let calls = up.api_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].path, "/api/users/acme%3Au-1");
    assert_eq!(
        calls[0].json(),
        serde_json::json!({"external_id": "acme:u-1", "first_name": "Ada", "last_name": "Lovelace",
            "email": "ada@example.org", "environment": "acme-env"})
    );
    assert_eq!(calls[0].headers["authorization"], "Bearer upstream-token");
    assert_eq!(calls[1].path, "/api/courses/C-1/subscriptions/acme%3Au-1");
    assert_eq!(
        calls[1].json(),
        serde_json::json!({"role": "learner", "environment": "acme-env"})
    );
    for op in ["put_user", "put_subscription"] {
        let series = format!("ltigate_upstream_api_duration_seconds_count{{op=\"{op}\"}}");
        assert_eq!(gate.metric(&series).await, 1.0, "{series}");
        let series = format!("ltigate_upstream_api_requests_total{{op=\"{op}\",result=\"ok\"}}");
        assert_eq!(gate.metric(&series).await, 1.0, "{series}");
    }

    // The ticket leads to the landing path, once.
    let ticket_url = location(&r);
    let c = client()
        .get(gate.url(&ticket_url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(c.status(), 303);
    assert_eq!(location(&c), "/courses/C-1");
    let again = client()
        .get(gate.url(&ticket_url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401);
}

#[tokio::test]
async fn path_course_variant_and_fields_left_out() {
    let (up, gate) = setup().await;
    let mut l = Launch::new("acme-key", "acme-secret", "u-2", None)
        .without("lis_person_contact_email_primary")
        .without("lis_person_name_family")
        .without("lis_person_name_given")
        .set("roles", "urn:lti:role:ims/lis/Instructor");
    l.url = format!("{}/lti/launch/C%202", support::gate::PUBLIC_URL);
    let r = post(&gate, &l, None).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let calls = up.api_calls();
    // Fields the LMS did not send are left out, never blanked.
    assert_eq!(
        calls[0].json(),
        serde_json::json!({"external_id": "acme:u-2", "environment": "acme-env"})
    );
    assert_eq!(calls[1].path, "/api/courses/C%202/subscriptions/acme%3Au-2");
    assert_eq!(calls[1].json()["role"], "staff");

    // A path course that differs from custom_course is refused.
    let mut l = Launch::acme("u-2", "C-1");
    l.url = format!("{}/lti/launch/C-9", support::gate::PUBLIC_URL);
    let r = post(&gate, &l, None).await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn replayed_nonce_is_refused_unless_the_session_is_already_open() {
    let (_up, gate) = setup().await;
    let l = Launch::acme("u-3", "C-1");
    let first = post(&gate, &l, None).await;
    assert_eq!(first.status(), 303);
    let cookie = session_cookie(&first).unwrap();

    let replay = post(&gate, &l, None).await;
    assert_eq!(replay.status(), 401);
    assert!(replay.text().await.unwrap().contains("already used"));

    // An LMS double-click from a browser that already holds the session.
    let double = post(&gate, &l, Some(&cookie)).await;
    assert_eq!(double.status(), 303);
    assert_eq!(location(&double), "/courses/C-1");
    assert_eq!(
        gate.metric(
            "ltigate_launches_total{consumer=\"Acme\",result=\"replayed_nonce\",version=\"1.1\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_replays_let_exactly_one_through() {
    let (_up, gate) = setup().await;
    let gate = Arc::new(gate);
    let body = Launch::acme("u-4", "C-1").body();
    let barrier = Arc::new(tokio::sync::Barrier::new(32));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (gate, body, barrier) = (gate.clone(), body.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            post_body(&gate, "/lti/launch", body, None)
                .await
                .status()
                .as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 303).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 401).count(), 31, "{codes:?}");
}

#[tokio::test]
async fn stale_and_future_timestamps_are_refused() {
    let (up, gate) = setup().await;
    let mut old = Launch::acme("u-5", "C-1");
    old.timestamp -= 301;
    assert_eq!(post(&gate, &old, None).await.status(), 401);
    let mut future = Launch::acme("u-5", "C-1");
    future.timestamp += 301;
    assert_eq!(post(&gate, &future, None).await.status(), 401);
    let mut edge = Launch::acme("u-5", "C-1");
    edge.timestamp -= 290;
    assert_eq!(post(&gate, &edge, None).await.status(), 303);
    assert_eq!(
        gate.metric(
            "ltigate_launches_total{consumer=\"Acme\",result=\"stale_timestamp\",version=\"1.1\"}"
        )
        .await,
        2.0
    );
    assert_eq!(
        up.api_calls().len(),
        2,
        "only the accepted launch provisions"
    );
}

#[tokio::test]
async fn wrong_secret_and_unknown_key_look_the_same() {
    let (up, gate) = setup().await;
    let wrong = Launch::new("acme-key", "not-the-secret", "u-6", Some("C-1"));
    let r1 = post(&gate, &wrong, None).await;
    assert_eq!(r1.status(), 401);
    let unknown = Launch::new("who-is-this", "acme-secret", "u-6", Some("C-1"));
    let r2 = post(&gate, &unknown, None).await;
    assert_eq!(r2.status(), 401);
    assert_eq!(r1.text().await.unwrap(), r2.text().await.unwrap());
    assert_eq!(
        gate.metric(
            "ltigate_launches_total{consumer=\"Acme\",result=\"bad_signature\",version=\"1.1\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        gate.metric("ltigate_launches_total{consumer=\"unknown\",result=\"unknown_consumer\",version=\"1.1\"}")
            .await,
        1.0
    );
    // The sent key never becomes a label.
    let metrics = client()
        .get(gate.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("who-is-this"));
    assert!(up.api_calls().is_empty());
}

/// Behind an ingress that strips a path prefix, the LMS signs the public URL
/// with its prefix and port; with `trust_forwarded_headers` the proxy's
/// `X-Forwarded-*` name that URL instead, and without it they are ignored.
#[tokio::test]
async fn the_signature_covers_the_url_the_lms_used() {
    let up = Upstream::start(Some("upstream-token")).await;
    let public = "https://learn.example.test:8443/tools/lti/launch";
    let forwarded = "https://tools.school.example/gate/lti/launch";
    for trusted in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let toml = base_config(&up.url(), dir.path()).replace(
            &format!("public_url = \"{PUBLIC_URL}\""),
            &format!(
                "public_url = \"https://learn.example.test:8443/tools/\"\n\
                 trust_forwarded_headers = {trusted}"
            ),
        );
        let gate = Gate::start_with(&toml, dir).await;
        for (signed, accepted) in [(public, !trusted), (forwarded, trusted)] {
            let mut l = Launch::acme("u-fw", "C-1");
            l.url = signed.into();
            let r = client()
                .post(gate.url("/lti/launch"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "tools.school.example")
                .header("x-forwarded-prefix", "/gate")
                .body(l.body())
                .send()
                .await
                .unwrap();
            let want = if accepted { 303 } else { 401 };
            assert_eq!(r.status(), want, "trusted {trusted}, signed {signed}");
        }
    }
}

/// Neither the HTML page nor the JSON error, fresh or stale, tells a
/// configured key from an unknown one.
#[tokio::test]
async fn no_answer_tells_which_keys_exist() {
    let (up, gate) = setup().await;
    let mut answers = Vec::new();
    for stale in [false, true] {
        for json in [false, true] {
            let mut seen = Vec::new();
            for key in ["acme-key", "who-is-this"] {
                let mut l = Launch::new(key, "not-the-secret", "u-6", Some("C-1"));
                if stale {
                    l.timestamp -= 3600;
                }
                let mut req = client()
                    .post(gate.url(&l.path_and_query()))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(l.body());
                if json {
                    req = req.header("accept", "application/json");
                }
                let r = req.send().await.unwrap();
                seen.push((r.status(), r.text().await.unwrap()));
            }
            assert_eq!(seen[0], seen[1], "stale {stale}, json {json}");
            assert_eq!(seen[0].0, 401);
            answers.push(seen.remove(0).1);
        }
    }
    assert!(answers[1].contains("\"bad_signature\""), "{}", answers[1]);
    assert!(answers[3].contains("\"stale_timestamp\""), "{}", answers[3]);
    assert_ne!(
        answers[0], answers[2],
        "a stale launch is still told it expired"
    );
    // What really happened is counted.
    assert_eq!(
        gate.metric("ltigate_launches_total{consumer=\"unknown\",result=\"unknown_consumer\",version=\"1.1\"}")
            .await,
        4.0
    );
    assert_eq!(
        gate.metric(
            "ltigate_launches_total{consumer=\"Acme\",result=\"stale_timestamp\",version=\"1.1\"}"
        )
        .await,
        2.0
    );
    assert!(up.api_calls().is_empty());
}

#[tokio::test]
async fn a_tampered_parameter_breaks_the_signature() {
    let (_up, gate) = setup().await;
    let l = Launch::acme("u-7", "C-1");
    let mut params = l.signed_params();
    for (n, v) in params.iter_mut() {
        if n == "user_id" {
            *v = "admin".into();
        }
    }
    let r = post_body(&gate, "/lti/launch", encode(&params), None).await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn launch_url_with_a_query_string_and_the_canvas_duplicate() {
    let (_up, gate) = setup().await;
    // The query is signed as parameters.
    let mut l = Launch::acme("u-8", "C-1");
    l.url = format!("{}/lti/launch?foo=1&foo=2", support::gate::PUBLIC_URL);
    assert_eq!(post(&gate, &l, None).await.status(), 303);

    // Canvas copies the query into the body but signs it once.
    let mut l = Launch::acme("u-8", "C-1");
    l.url = format!("{}/lti/launch?tool=x", support::gate::PUBLIC_URL);
    let mut params = l.signed_params();
    params.push(("tool".into(), "x".into()));
    let r = post_body(&gate, "/lti/launch?tool=x", encode(&params), None).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());

    // Ignoring the query when the LMS signed it fails.
    let mut l = Launch::acme("u-8", "C-1");
    l.url = format!("{}/lti/launch?foo=1", support::gate::PUBLIC_URL);
    let r = post_body(&gate, "/lti/launch", l.body(), None).await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn hmac_sha256_launches_verify() {
    let (_up, gate) = setup().await;
    let mut l = Launch::acme("u-9", "C-1");
    l.method = SignatureMethod::HmacSha256;
    assert_eq!(post(&gate, &l, None).await.status(), 303);
}

#[tokio::test]
async fn unicode_and_plus_in_names_reach_the_upstream_intact() {
    let (up, gate) = setup().await;
    let l = Launch::acme("u+10", "C-1")
        .set("lis_person_name_given", "Zoë + Ünal")
        .set("lis_person_name_family", "O'Brien & 李");
    let r = post(&gate, &l, None).await;
    assert_eq!(r.status(), 303);
    let calls = up.api_calls();
    assert_eq!(calls[0].path, "/api/users/acme%3Au%2B10");
    assert_eq!(calls[0].json()["first_name"], "Zoë + Ünal");
    assert_eq!(calls[0].json()["last_name"], "O'Brien & 李");
    assert_eq!(calls[0].json()["external_id"], "acme:u+10");
}

#[tokio::test]
async fn malformed_launches_are_invalid_requests() {
    let (up, gate) = setup().await;
    let r = post(&gate, &Launch::acme("u-11", "C-1").without("user_id"), None).await;
    assert_eq!(r.status(), 400);

    // An oauth_* parameter given twice (query and body).
    let l = Launch::acme("u-11", "C-1");
    let nonce = l.nonce.clone();
    let r = post_body(
        &gate,
        &format!("/lti/launch?oauth_nonce={nonce}"),
        l.body(),
        None,
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("oauth_nonce is given more than once"));

    // No course at all.
    let r = post(
        &gate,
        &Launch::new("acme-key", "acme-secret", "u-11", None),
        None,
    )
    .await;
    assert_eq!(r.status(), 400);

    // Not a form.
    let r = client()
        .post(gate.url("/lti/launch"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Bad percent-encoding.
    let r = post_body(&gate, "/lti/launch", "user_id=%ZZ".into(), None).await;
    assert_eq!(r.status(), 400);

    // Attacker-chosen parameter names are escaped in the page.
    let body = format!(
        "{}&oauth_%3Cscript%3E=1&oauth_%3Cscript%3E=2",
        Launch::acme("u", "C-1").body()
    );
    let r = post_body(&gate, "/lti/launch", body, None).await;
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("<script>") && text.contains("&lt;script&gt;"),
        "{text}"
    );

    // JSON when preferred.
    let r = client()
        .post(gate.url("/lti/launch"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(Launch::acme("u-11", "C-1").without("user_id").body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["error"], "invalid_request");

    assert!(up.api_calls().is_empty());
    // Counted under the LMS whose key they name; without a readable key,
    // under `unknown`.
    assert_eq!(
        gate.metric(
            "ltigate_launches_total{consumer=\"Acme\",result=\"invalid_request\",version=\"1.1\"}"
        )
        .await,
        5.0
    );
    assert_eq!(
        gate.metric("ltigate_launches_total{consumer=\"unknown\",result=\"invalid_request\",version=\"1.1\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let (_up, gate) = setup().await;
    let padding = "x".repeat(200 * 1024);
    let l = Launch::acme("u-12", "C-1").set("custom_padding", &padding);
    let r = post(&gate, &l, None).await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        gate.metric("ltigate_launches_total{consumer=\"unknown\",result=\"body_too_large\",version=\"1.1\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn unknown_course_is_404_and_upstream_failure_is_502() {
    let (up, gate) = setup().await;
    let r = post(
        &gate,
        &Launch::new("beta-key", "beta-new", "u-13", Some("missing-1")),
        None,
    )
    .await;
    assert_eq!(r.status(), 404);
    // The licence claimed for it was given back.
    assert_eq!(gate.app().store.licences_used("Beta").await.unwrap(), 0);

    up.set_mode(Mode::Fail500);
    let r = post(&gate, &Launch::acme("u-13", "C-1"), None).await;
    assert_eq!(r.status(), 502);
    assert_eq!(
        gate.metric("ltigate_upstream_api_requests_total{op=\"put_user\",result=\"error\"}")
            .await,
        1.0
    );
    // api_retries = 1: two attempts.
    assert_eq!(
        up.api_calls()
            .iter()
            .filter(|c| c.path == "/api/users/acme%3Au-13")
            .count(),
        2
    );
}

#[tokio::test]
async fn a_slow_upstream_api_times_out_into_502() {
    let (up, gate) = setup().await;
    up.set_mode(Mode::Slow(Duration::from_secs(5)));
    let started = std::time::Instant::now();
    let r = post(&gate, &Launch::acme("u-14", "C-1"), None).await;
    assert_eq!(r.status(), 502);
    // api_timeout 2 s, one retry: well under the upstream's 5 s per call.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn licence_cap_refuses_new_learners_but_keeps_existing_ones() {
    let (_up, gate) = setup().await;
    let beta = |user: &str| Launch::new("beta-key", "beta-new", user, Some("C-1"));
    assert_eq!(post(&gate, &beta("a"), None).await.status(), 303);
    assert_eq!(post(&gate, &beta("b"), None).await.status(), 303);
    let r = post(&gate, &beta("c"), None).await;
    assert_eq!(r.status(), 403);
    // Existing subscribers keep access.
    assert_eq!(post(&gate, &beta("a"), None).await.status(), 303);
    // Staff do not take a licence.
    let staff = beta("teacher").set("roles", "Instructor");
    assert_eq!(post(&gate, &staff, None).await.status(), 303);
    assert_eq!(
        gate.metric("ltigate_licences_used{consumer=\"Beta\"}")
            .await,
        2.0
    );
    assert_eq!(
        gate.metric("ltigate_launches_total{consumer=\"Beta\",result=\"licence_exhausted\",version=\"1.1\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn with_count_staff_teachers_take_licences_too() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = Gate::start(&up.url(), "[licences]\ncount_staff = true\n").await;
    let beta = |user: &str| Launch::new("beta-key", "beta-new", user, Some("C-1"));
    let staff = |user: &str| beta(user).set("roles", "Instructor");
    assert_eq!(post(&gate, &staff("t-1"), None).await.status(), 303);
    assert_eq!(post(&gate, &beta("a"), None).await.status(), 303);
    assert_eq!(post(&gate, &staff("t-2"), None).await.status(), 403);
    assert_eq!(post(&gate, &beta("b"), None).await.status(), 403);
    // Whoever holds a licence keeps it.
    assert_eq!(post(&gate, &staff("t-1"), None).await.status(), 303);
    assert_eq!(
        gate.metric("ltigate_licences_used{consumer=\"Beta\"}")
            .await,
        2.0
    );
}

/// A course's own `landing_path` wins over `upstream.landing_path`, and the
/// course ID is percent-encoded into it.
#[tokio::test]
async fn the_landing_path_is_the_courses_own_with_the_course_encoded() {
    let up = Upstream::start(Some("upstream-token")).await;
    let extra = "[courses.\"C 1/ü\"]\nlanding_path = \"/learn/{course}/start?from=lti\"\n";
    let gate = Gate::start(&up.url(), extra).await;
    for (course, landing) in [
        ("C 1/ü", "/learn/C%201%2F%C3%BC/start?from=lti"),
        ("C-1", "/courses/C-1"),
        ("C+2 ü", "/courses/C%2B2%20%C3%BC"),
    ] {
        let r = post(&gate, &Launch::acme("u-land", course), None).await;
        assert_eq!(r.status(), 303, "{course}");
        let ticket = client().get(gate.url(&location(&r))).send().await.unwrap();
        assert_eq!(ticket.status(), 303, "{course}");
        assert_eq!(location(&ticket), landing, "{course}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_learners_against_a_cap_of_five() {
    let up = Upstream::start(Some("upstream-token")).await;
    let extra = r#"
[[consumers]]
name = "Capped"
key = "capped-key"
secret = "capped-secret"
lms_id = "capped"
max_licences = 5
"#;
    let gate = Arc::new(Gate::start(&up.url(), extra).await);
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (gate, barrier) = (gate.clone(), barrier.clone());
        let body = Launch::new("capped-key", "capped-secret", &format!("l{i}"), Some("C-1")).body();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            post_body(&gate, "/lti/launch", body, None)
                .await
                .status()
                .as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 303).count(), 5, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 403).count(), 15, "{codes:?}");
    assert_eq!(gate.app().store.licences_used("Capped").await.unwrap(), 5);
}

#[tokio::test]
async fn every_configured_secret_verifies_during_rotation() {
    let (_up, gate) = setup().await;
    for secret in ["beta-new", "beta-old"] {
        let l = Launch::new("beta-key", secret, &format!("r-{secret}"), Some("C-1"));
        assert_eq!(post(&gate, &l, None).await.status(), 303, "{secret}");
    }
    let l = Launch::new("beta-key", "beta-older", "r-x", Some("C-1"));
    assert_eq!(post(&gate, &l, None).await.status(), 401);
}

#[tokio::test]
async fn return_url_is_used_only_after_the_signature_verified() {
    let (_up, gate) = setup().await;
    let ret = "https://lms.example.org/return?x=1";
    // Bad signature: the return URL is attacker-controlled, no redirect.
    let forged = Launch::new("acme-key", "wrong", "u-15", Some("C-1"))
        .set("launch_presentation_return_url", "https://evil.example/");
    let r = post(&gate, &forged, None).await;
    assert_eq!(r.status(), 401);
    assert!(location(&r).is_empty());

    // Verified, then refused (replay): back to the LMS with the reason.
    let l = Launch::acme("u-15", "C-1").set("launch_presentation_return_url", ret);
    assert_eq!(post(&gate, &l, None).await.status(), 303);
    let r = post(&gate, &l, None).await;
    assert_eq!(r.status(), 303);
    let loc = location(&r);
    assert!(
        loc.starts_with("https://lms.example.org/return?x=1&lti_errormsg="),
        "{loc}"
    );
    assert!(loc.ends_with("&lti_errorlog=replayed_nonce"), "{loc}");
}

#[tokio::test]
async fn embedded_store_keeps_a_nonce_across_a_restart() {
    let up = Upstream::start(Some("upstream-token")).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = support::gate::base_config(&up.url(), dir.path());
    let gate = Gate::start_with(&toml, dir).await;
    let l = Launch::acme("u-16", "C-1");
    assert_eq!(post(&gate, &l, None).await.status(), 303);
    let gate = gate.restart(&toml).await;
    assert_eq!(post(&gate, &l, None).await.status(), 401);
}

#[tokio::test]
async fn a_launch_signed_by_oauthlib_is_accepted() {
    let (up, gate) = setup().await;
    let l = Launch::acme("py-1", "C-1").set("lis_person_name_given", "Zoë + 1");
    let input = serde_json::json!({
        "url": format!("{}/lti/launch?via=py", support::gate::PUBLIC_URL),
        "key": "acme-key",
        "secret": "acme-secret",
        "method": "HMAC-SHA1",
        "params": l.params,
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lms/sign_launch.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(input.to_string())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = String::from_utf8(out.stdout).unwrap();
    let r = post_body(&gate, "/lti/launch?via=py", body.trim().to_string(), None).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    assert_eq!(up.api_calls()[0].json()["first_name"], "Zoë + 1");
}

/// `/status` tells an unreachable platform apart, and an empty outbox has no
/// age.
#[tokio::test]
async fn status_says_when_the_platform_is_down() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gate = Gate::start(&format!("http://{closed}"), "").await;
    let status = gate.status().await;
    assert_eq!(status["upstream"], "down", "{status}");
    assert_eq!(status["store"], "ok");
    assert_eq!(status["outbox"]["oldest_age_seconds"], 0);
}

#[tokio::test]
async fn admin_endpoints_answer() {
    let (_up, gate) = setup().await;
    let c = client();
    assert_eq!(
        c.get(gate.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(gate.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let status = gate.status().await;
    assert_eq!(status["store"], "ok");
    assert_eq!(status["upstream"], "ok");
    assert_eq!(status["outbox"]["depth"], 0);
    let metrics = c
        .get(gate.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "ltigate_launches_total",
        "ltigate_launch_duration_seconds",
        "ltigate_upstream_api_requests_total",
        "ltigate_store_up 1",
        "ltigate_build_info{version=",
        "ltigate_licences_used{consumer=\"Beta\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
    // The admin routes are not on the public listener.
    assert_eq!(
        c.get(gate.url("/metrics")).send().await.unwrap().status(),
        401
    );
}
