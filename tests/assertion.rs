//! The signed identity assertion over real sockets (DESIGN §4): every
//! request with a session carries `X-LTI-Assertion`, which the fake
//! upstream verifies with the README's Python recipe (PyJWT) against the key
//! set it fetches from the admin listener — signature, `aud`, `iss`, `exp` —
//! and whose `sub`, `course` and `roles` equal the identity headers of the
//! same request. A client's own never reaches the upstream; an assertion is
//! replaced after half its lifetime, none is valid past its session, and
//! after a key rotation the previous key is still published.
//!
//! Needs `python3` with PyJWT (tests/requirements.txt, installed into
//! `.venv` by scripts/test): skipped without it, except on CI, where it
//! fails.

mod proxykit;
mod support;

use std::sync::Arc;
use std::time::Duration;

use proxykit::{echo, echoed_headers, gate_with, session, set_key};
use serde_json::{json, Value};
use support::assertion::{python_with_pyjwt, Verifier};
use support::gate::{base_config, client, Gate, PUBLIC_URL};
use support::lms::{now, Launch};
use support::upstream::{Recorded, Upstream};

const AUDIENCE: &str = "https://platform.internal/acme";
const JWKS: &str = "/.well-known/jwks.json";

fn vector(name: &str) -> String {
    format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The kids of the two test keys (RFC 7638, as jwcrypto computes them).
const KID: &str = "Hd9RSljdLJr1DqSW1OVExvBEJdywMobsIHbo8Jzsn_E";
const NEXT_KID: &str = "Uy5DP1Qb7dUWO_PC2wshJ73KFYF3ajbcyOD_BDwb_ps";

/// The base configuration with the assertion on and `keys` changed.
fn config(upstream: &str, dir: &std::path::Path, keys: &[(&str, &str, &str)]) -> String {
    let mut toml = base_config(upstream, dir);
    for (section, key, value) in [
        ("session", "assertion", "true"),
        (
            "session",
            "assertion_audience",
            "\"https://platform.internal/acme\"",
        ),
    ]
    .iter()
    .chain(keys)
    {
        toml = set_key(&toml, section, key, value);
    }
    toml
}

/// ltigate with the assertion on, and the upstream verifying every
/// assertion against its key set.
async fn gate_verified(up: &Upstream, keys: &[(&str, &str, &str)]) -> (Gate, Arc<Verifier>) {
    let dir = tempfile::tempdir().unwrap();
    let gate = Gate::start_with(&config(&up.url(), dir.path(), keys), dir).await;
    let verifier = Verifier::start(&gate.admin_url(JWKS), PUBLIC_URL, AUDIENCE).await;
    up.verify_assertions(verifier.clone());
    (gate, verifier)
}

fn decoded(value: &str) -> String {
    ltigate::http::decode_path_segment(value).unwrap()
}

fn header<'a>(r: &'a Recorded, name: &str) -> Option<&'a str> {
    r.headers.get(name).map(|v| v.to_str().unwrap())
}

/// The claims of a request the upstream received, after checking that the
/// recipe verified its assertion and that the claims say what the identity
/// headers of the same request say.
fn checked_claims(r: &Recorded) -> Value {
    let claims = match &r.assertion {
        Some(Ok(claims)) => claims.clone(),
        other => panic!("{} {}: {other:?}", r.method, r.path),
    };
    assert_eq!(r.headers.get_all("x-lti-assertion").iter().count(), 1);
    let user = header(r, "x-lti-user").expect("X-LTI-User");
    assert_eq!(claims["sub"], decoded(user), "{}", r.path);
    assert_eq!(
        claims["tenant"],
        decoded(header(r, "x-lti-consumer").unwrap())
    );
    assert_eq!(claims["lti_version"], header(r, "x-lti-version").unwrap());
    match header(r, "x-lti-course") {
        Some(c) => assert_eq!(claims["course"], decoded(c), "{}", r.path),
        None => assert!(claims.get("course").is_none(), "{}", r.path),
    }
    let roles: Vec<String> = header(r, "x-lti-roles")
        .map(|v| v.split(',').map(decoded).collect())
        .unwrap_or_default();
    assert_eq!(claims["roles"], json!(roles), "{}", r.path);
    for (claim, name) in [
        ("email", "x-lti-email"),
        ("given_name", "x-lti-given-name"),
        ("family_name", "x-lti-family-name"),
        ("upstream_user", "x-lti-upstream-user"),
    ] {
        assert_eq!(
            claims
                .get(claim)
                .and_then(Value::as_str)
                .map(str::to_string),
            header(r, name).map(decoded),
            "{claim}"
        );
    }
    assert_eq!(claims["iss"], PUBLIC_URL);
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(
        claims["nbf"].as_u64().unwrap() + 30,
        claims["iat"].as_u64().unwrap()
    );
    claims
}

/// GETs `path` with the session cookie; the request the upstream received.
async fn proxied(gate: &Gate, up: &Upstream, path: &str, cookie: &str) -> Recorded {
    up.clear();
    echo(gate, path, Some(cookie)).await;
    let mut records = up.records();
    assert_eq!(records.len(), 1, "{path}");
    records.remove(0)
}

/// The token of a request the upstream received.
fn token(r: &Recorded) -> String {
    header(r, "x-lti-assertion").unwrap().to_string()
}

#[tokio::test]
async fn every_assertion_verifies_with_pyjwt_and_says_what_the_headers_say() {
    if !python_with_pyjwt() {
        return;
    }
    let up = Upstream::start(Some("upstream-token")).await;
    let (gate, _verifier) = gate_verified(
        &up,
        &[("upstream", "course_path", "\"/courses/{course}/\"")],
    )
    .await;
    // The key was generated beside the database, and is published alone.
    let jwks = gate.admin_json(JWKS).await;
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (
            &keys[0]["kty"],
            &keys[0]["crv"],
            &keys[0]["alg"],
            &keys[0]["use"]
        ),
        (
            &json!("EC"),
            &json!("P-256"),
            &json!("ES256"),
            &json!("sig")
        )
    );
    assert!(gate.dir.path().join("assertion-key.pem").exists());

    // Two courses with other roles; a name that needs encoding.
    let mut cookie = session(
        &gate,
        &Launch::acme("u-1", "C-1").set("lis_person_name_given", "Zoë Ann"),
        None,
    )
    .await;
    let l = Launch::acme("u-1", "C 2")
        .set("roles", "Instructor,urn:lti:instrole:ims/lis/Faculty")
        .set("lis_person_name_given", "Zoë Ann");
    cookie = session(&gate, &l, Some(&cookie)).await;

    let mut seen = Vec::new();
    for (path, course, roles) in [
        ("/courses/C-1/page", Some("C-1"), json!(["Learner"])),
        (
            "/courses/C%202/page",
            Some("C 2"),
            json!(["Instructor", "inst:Faculty"]),
        ),
        // A course the learner has not launched: no roles.
        ("/courses/C-9/", Some("C-9"), json!([])),
        // No course in the path: the latest.
        (
            "/elsewhere",
            Some("C 2"),
            json!(["Instructor", "inst:Faculty"]),
        ),
    ] {
        let r = proxied(&gate, &up, path, &cookie).await;
        let claims = checked_claims(&r);
        assert_eq!(claims["course"], json!(course), "{path}");
        assert_eq!(claims["roles"], roles, "{path}");
        assert_eq!(claims["given_name"], "Zoë Ann");
        assert_eq!(header(&r, "x-lti-given-name"), Some("Zo%C3%AB%20Ann"));
        assert_eq!(claims["sub"], "acme:u-1");
        assert_eq!(claims["email"], "ada@example.org");
        assert!(claims["upstream_user"].as_str().unwrap().starts_with("up-"));
        assert!(claims.get("course_roles").is_none());
        seen.push(token(&r));
    }
    // Each course its own assertion; the latest course's twice the same.
    assert_eq!(seen[1], seen[3]);
    assert_ne!(seen[0], seen[1]);
    assert_ne!(seen[2], seen[1]);
    // Within 2 KB.
    assert!(seen.iter().all(|t| t.len() <= 2048));
}

#[tokio::test]
async fn course_roles_are_in_the_claims_only_when_asked() {
    if !python_with_pyjwt() {
        return;
    }
    let up = Upstream::start(Some("upstream-token")).await;
    let (gate, _verifier) = gate_verified(
        &up,
        &[
            ("session", "assertion_course_roles", "true"),
            (
                "session",
                "assertion_key_file",
                &format!("\"{}\"", vector("assertion-key-p256-sec1.pem")),
            ),
        ],
    )
    .await;
    let mut cookie = session(&gate, &Launch::acme("u-1", "C-1"), None).await;
    cookie = session(
        &gate,
        &Launch::acme("u-1", "C-2").set("roles", "Instructor"),
        Some(&cookie),
    )
    .await;
    let r = proxied(&gate, &up, "/", &cookie).await;
    let claims = checked_claims(&r);
    assert_eq!(
        claims["course_roles"],
        json!({"C-1": ["Learner"], "C-2": ["Instructor"]})
    );
    assert_eq!(
        header(&r, "x-lti-course-roles"),
        Some("C-1=Learner;C-2=Instructor")
    );
    // A SEC1 key (as Helm's genPrivateKey "ecdsa" writes it) signs.
    assert_eq!(gate.admin_json(JWKS).await["keys"][0]["kid"], KID);
}

#[tokio::test]
async fn a_forged_assertion_never_reaches_the_upstream() {
    if !python_with_pyjwt() {
        return;
    }
    let up = Upstream::start(Some("upstream-token")).await;
    let (gate, verifier) =
        gate_verified(&up, &[("server", "public_paths", "[\"/static/\"]")]).await;
    let cookie = session(&gate, &Launch::acme("u-1", "C-1"), None).await;
    let genuine = token(&proxied(&gate, &up, "/", &cookie).await);
    // A genuine assertion of another learner, replayed, or a made-up one,
    // under every spelling the header policy knows.
    let other = session(&gate, &Launch::acme("u-2", "C-1"), None).await;
    let stolen = token(&proxied(&gate, &up, "/", &other).await);
    assert!(verifier.verify(&stolen).await.is_ok());
    let forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhY21lOnRlYWNoZXIifQ.";
    for name in [
        "X-LTI-Assertion",
        "x-lti-assertion",
        "X_LTI_Assertion",
        "x_lti-assertion",
        "X-Lti-ASSERTION",
    ] {
        for value in [forged, stolen.as_str()] {
            // With a session: the gate's own assertion, and only it.
            up.clear();
            let r = client()
                .get(gate.url("/page"))
                .header("cookie", &cookie)
                .header(name, value)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let rec = up.records().remove(0);
            let names: Vec<&str> = rec
                .headers
                .keys()
                .map(|k| k.as_str())
                .filter(|k| k.replace('_', "-").ends_with("lti-assertion"))
                .collect();
            assert_eq!(names, ["x-lti-assertion"], "{name}");
            assert_eq!(token(&rec), genuine, "{name}");
            assert_eq!(checked_claims(&rec)["sub"], "acme:u-1");

            // Without a session, on a public path: none at all.
            up.clear();
            let e = client()
                .get(gate.url("/static/app.js"))
                .header(name, value)
                .send()
                .await
                .unwrap();
            assert_eq!(e.status(), 200);
            let rec = up.records().remove(0);
            assert!(rec.assertion.is_none(), "{name}: {:?}", rec.assertion);
            assert!(
                !rec.headers
                    .keys()
                    .any(|k| k.as_str().replace('_', "-").starts_with("x-lti-")),
                "{name}: {:?}",
                rec.headers
            );
        }
    }
    // The recipe refuses what a forger can make.
    let refused = verifier.verify(forged).await.unwrap_err();
    assert!(refused.contains("Error"), "{refused}");
}

#[tokio::test]
async fn with_the_assertion_off_none_is_sent_and_a_forged_one_is_stripped() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_with(&up.url(), &[]).await;
    let cookie = session(&gate, &Launch::acme("u-1", "C-1"), None).await;
    let r = client()
        .get(gate.url("/page"))
        .header("cookie", &cookie)
        .header("X_LTI_Assertion", "forged")
        .send()
        .await
        .unwrap();
    let e: Value = r.json().await.unwrap();
    let names: Vec<&String> = echoed_headers(&e)
        .keys()
        .filter(|k| k.contains("ssertion"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    assert_eq!(echoed_headers(&e)["x-lti-user"], "acme:u-1");
    // No keys are published.
    let r = client().get(gate.admin_url(JWKS)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("session.assertion = false"));
}

#[tokio::test]
async fn an_assertion_is_replaced_after_half_its_lifetime() {
    if !python_with_pyjwt() {
        return;
    }
    let up = Upstream::start(Some("upstream-token")).await;
    let (gate, verifier) = gate_verified(&up, &[("session", "assertion_ttl", "\"4s\"")]).await;
    let cookie = session(&gate, &Launch::acme("u-1", "C-1"), None).await;
    let first = proxied(&gate, &up, "/a", &cookie).await;
    let claims = checked_claims(&first);
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(claims["exp"].as_u64().unwrap(), iat + 4);
    // Reused while younger than half its lifetime: the same token.
    let again = proxied(&gate, &up, "/b", &cookie).await;
    checked_claims(&again);
    assert_eq!(token(&again), token(&first));
    // Half its lifetime later: replaced.
    while now() < iat + 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let later = proxied(&gate, &up, "/c", &cookie).await;
    let renewed = checked_claims(&later);
    assert_ne!(token(&later), token(&first));
    assert_ne!(renewed["jti"], claims["jti"]);
    assert!(renewed["iat"].as_u64().unwrap() >= iat + 2);
    // The first has expired two seconds later; the recipe says so.
    while now() < iat + 5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = verifier.verify(&token(&first)).await.unwrap_err();
    assert!(refused.starts_with("ExpiredSignatureError"), "{refused}");
}

#[tokio::test]
async fn a_relaunch_with_other_roles_gets_a_new_assertion_at_once() {
    if !python_with_pyjwt() {
        return;
    }
    let up = Upstream::start(Some("upstream-token")).await;
    let (gate, _verifier) = gate_verified(&up, &[]).await;
    let cookie = session(&gate, &Launch::acme("u-1", "C-1"), None).await;
    let before = proxied(&gate, &up, "/", &cookie).await;
    assert_eq!(checked_claims(&before)["roles"], json!(["Learner"]));
    let relaunched = session(
        &gate,
        &Launch::acme("u-1", "C-1").set("roles", "Instructor"),
        Some(&cookie),
    )
    .await;
    let after = proxied(&gate, &up, "/", &relaunched).await;
    assert_eq!(checked_claims(&after)["roles"], json!(["Instructor"]));
    assert_ne!(token(&after), token(&before));
    // A relaunch with the same roles: the same claims, the same token.
    let same = session(
        &gate,
        &Launch::acme("u-1", "C-1").set("roles", "Instructor"),
        Some(&relaunched),
    )
    .await;
    assert_ne!(same, relaunched, "a new cookie");
    let kept = proxied(&gate, &up, "/", &same).await;
    checked_claims(&kept);
    assert_eq!(token(&kept), token(&after));
}

#[tokio::test]
async fn none_is_valid_past_the_sessions_own_expiry() {
    if !python_with_pyjwt() {
        return;
    }
    let up = Upstream::start(Some("upstream-token")).await;
    let (gate, verifier) = gate_verified(
        &up,
        &[
            ("session", "ttl", "\"3s\""),
            ("session", "assertion_ttl", "\"5m\""),
        ],
    )
    .await;
    let before = now();
    let cookie = session(&gate, &Launch::acme("u-1", "C-1"), None).await;
    let after = now();
    let r = proxied(&gate, &up, "/", &cookie).await;
    let claims = checked_claims(&r);
    // Capped at the session's end: issued between `before` and `after`,
    // it ends 3 s later; far short of the 5 minutes of assertion_ttl.
    let exp = claims["exp"].as_u64().unwrap();
    assert!((before + 3..=after + 3).contains(&exp), "{exp}");
    while now() < exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The session and its assertion end together.
    let refused = verifier.verify(&token(&r)).await.unwrap_err();
    assert!(refused.starts_with("ExpiredSignatureError"), "{refused}");
    let r = client()
        .get(gate.url("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn after_a_rotation_the_previous_key_is_still_published() {
    if !python_with_pyjwt() {
        return;
    }
    let up = Upstream::start(Some("upstream-token")).await;
    let key = format!("\"{}\"", vector("assertion-key-p256.pem"));
    let next = format!("[\"{}\"]", vector("assertion-key-p256-next.pem"));
    // Step 1: the next key is published, the current one signs.
    let dir = tempfile::tempdir().unwrap();
    let step1 = config(
        &up.url(),
        dir.path(),
        &[
            ("session", "assertion_key_file", &key),
            ("session", "assertion_next_key_files", &next),
        ],
    );
    let gate = Gate::start_with(&step1, dir).await;
    up.verify_assertions(Verifier::start(&gate.admin_url(JWKS), PUBLIC_URL, AUDIENCE).await);
    let kids = |jwks: &Value| -> Vec<String> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(kids(&gate.admin_json(JWKS).await), [KID, NEXT_KID]);
    let cookie = session(&gate, &Launch::acme("u-1", "C-1"), None).await;
    let old = proxied(&gate, &up, "/", &cookie).await;
    checked_claims(&old);
    let old_token = token(&old);
    let kid_of = |t: &str| -> String {
        use base64::Engine as _;
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t.split('.').next().unwrap())
            .unwrap();
        serde_json::from_slice::<Value>(&header).unwrap()["kid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(kid_of(&old_token), KID);

    // Step 2: the next key signs, the old one stays published.
    let step2 = set_key(
        &set_key(
            &set_key(
                &step1,
                "session",
                "assertion_key_file",
                &format!("\"{}\"", vector("assertion-key-p256-next.pem")),
            ),
            "session",
            "assertion_next_key_files",
            "[]",
        ),
        "session",
        "assertion_previous_key_files",
        &format!("[{key}]"),
    );
    let gate = gate.restart(&step2).await;
    let verifier = Verifier::start(&gate.admin_url(JWKS), PUBLIC_URL, AUDIENCE).await;
    up.verify_assertions(verifier.clone());
    assert_eq!(kids(&gate.admin_json(JWKS).await), [NEXT_KID, KID]);
    let new = proxied(&gate, &up, "/", &cookie).await;
    checked_claims(&new);
    assert_eq!(kid_of(&token(&new)), NEXT_KID);
    // An assertion the old key signed before the switch still verifies.
    let claims = verifier.verify(&old_token).await.unwrap();
    assert_eq!(claims["sub"], "acme:u-1");

    // Step 3: once it is no longer published, it no longer verifies.
    let step3 = set_key(&step2, "session", "assertion_previous_key_files", "[]");
    let gate = gate.restart(&step3).await;
    assert_eq!(kids(&gate.admin_json(JWKS).await), [NEXT_KID]);
    let verifier = Verifier::start(&gate.admin_url(JWKS), PUBLIC_URL, AUDIENCE).await;
    let refused = verifier.verify(&old_token).await.unwrap_err();
    assert!(refused.starts_with("PyJWKClientError"), "{refused}");
    drop(gate);
}

#[tokio::test]
async fn the_key_set_is_on_the_admin_listener_and_a_generated_key_is_kept() {
    let up = Upstream::start(Some("upstream-token")).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config(&up.url(), dir.path(), &[]);
    let gate = Gate::start_with(&toml, dir).await;
    let r = client().get(gate.admin_url(JWKS)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["cache-control"], "public, max-age=300");
    let jwks: Value = r.json().await.unwrap();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_string();
    assert!(jwks["keys"][0].get("d").is_none());
    let head = client().head(gate.admin_url(JWKS)).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let post = client().post(gate.admin_url(JWKS)).send().await.unwrap();
    assert_eq!(post.status(), 405);
    // Not on the public listener: there the path is the upstream's, behind
    // the session gate.
    let public = client().get(gate.url(JWKS)).send().await.unwrap();
    assert_eq!(public.status(), 401);
    // A restart on the same database keeps the generated key.
    let gate = gate.restart(&toml).await;
    assert_eq!(gate.admin_json(JWKS).await["keys"][0]["kid"], kid);
}
