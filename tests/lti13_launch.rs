//! LTI 1.3 launches end to end over real HTTP (DESIGN §13): the OIDC
//! login, the state and its cookie, the id_token's checks with a reason for
//! every failure, the platform's key set, migration from LTI 1.1, and the
//! one accept path behind them. The platform is a fake of the tests' own
//! (`support::platform`): its own RSA key, its own signing code, a JWKS
//! server that counts its fetches.

mod support;

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};
use support::gate::{client, PUBLIC_URL};
use support::lti13::*;
use support::platform::{self, Key, Platform, CLIENT_ID, DEPLOYMENT, ISSUER};
use support::upstream::Upstream;

#[tokio::test]
async fn a_learner_logs_in_launches_and_reaches_the_platform_as_a_1_3_learner() {
    let s = setup("lms_id = \"plat\"\nenvironment = \"plat-env\"").await;
    let hint = "a b&c=d%/é+?";
    let r = login_with(
        &s.gate,
        &[
            ("iss", ISSUER),
            ("login_hint", "hint-1"),
            ("target_link_uri", &launch_url()),
            ("client_id", CLIENT_ID),
            ("lti_message_hint", hint),
        ],
    )
    .await;
    assert_eq!(r.status(), 302);
    let to = location(&r);
    assert!(to.starts_with("https://platform.example/auth?"), "{to}");
    let p = query_of(&to);
    for (name, value) in [
        ("scope", "openid"),
        ("response_type", "id_token"),
        ("response_mode", "form_post"),
        ("prompt", "none"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", &launch_url()),
        ("login_hint", "hint-1"),
        ("lti_message_hint", hint),
    ] {
        assert_eq!(p.get(name).map(String::as_str), Some(value), "{name}");
    }
    assert!(p["nonce"].len() >= 22 && p["state"].len() > 100);
    let set_cookie = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("__Host-ltigate_s_"))
        .unwrap();
    for attr in [
        "Path=/",
        "Max-Age=600",
        "HttpOnly",
        "Secure",
        "SameSite=None",
        "Partitioned",
    ] {
        assert!(set_cookie.contains(attr), "{attr} in {set_cookie}");
    }
    assert!(!set_cookie.contains("Domain"));
    // The login wrote nothing: no state is stored, it is sealed.
    let login = Login {
        cookie: set_cookie.split(';').next().unwrap().to_string(),
        params: p,
    };

    let token = s
        .platform
        .key
        .id_token(&platform::claims(login.nonce(), &launch_url()));
    let r = launch(&s, &login, &token).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let ticket = location(&r);
    assert!(ticket.starts_with("/lti/continue?ticket="), "{ticket}");
    let cookies = set_cookies(&r);
    let state_name = login.cookie.split('=').next().unwrap();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with(&format!("{state_name}=;")) && c.contains("Max-Age=0")),
        "the launch deletes its state cookie: {cookies:?}"
    );
    let session = cookies
        .iter()
        .find(|c| c.starts_with("__Host-ltigate_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();

    // Provisioned under the platform's lms_id, subscribed to the course.
    let calls = s.up.api_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].path, "/api/users/plat%3Alearner-1");
    assert_eq!(
        calls[0].json(),
        json!({"external_id": "plat:learner-1", "first_name": "Grace", "last_name": "Hopper",
            "email": "grace@example.org", "environment": "plat-env"})
    );
    assert_eq!(
        calls[1].path,
        "/api/courses/C-13/subscriptions/plat%3Alearner-1"
    );

    let c = client()
        .get(s.gate.url(&ticket))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(c.status(), 303);
    assert_eq!(location(&c), "/courses/C-13");

    // The platform sees the learner, the protocol, and none of ltigate's
    // cookies (a leftover state cookie included).
    let page: Value = client()
        .get(s.gate.url("/courses/C-13"))
        .header(
            "cookie",
            format!("{session}; __Host-ltigate_s_AAAAAAAAAAAAAAAA=x; theirs=1"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let headers = &page["headers"];
    assert_eq!(headers["x-lti-user"], "plat:learner-1", "{page}");
    assert_eq!(headers["x-lti-version"], "1.3");
    assert_eq!(headers["x-lti-consumer"], "platform");
    assert_eq!(headers["x-lti-roles"], "Learner");
    assert_eq!(headers["cookie"], "theirs=1");

    assert_eq!(
        s.gate
            .metric(
                "ltigate_launches_total{consumer=\"platform\",result=\"accepted\",version=\"1.3\"}"
            )
            .await,
        1.0
    );
    assert_eq!(
        s.gate
            .metric("ltigate_lti13_logins_total{result=\"redirected\"}")
            .await,
        1.0
    );
    assert_eq!(
        s.gate
            .metric("ltigate_jwks_fetches_total{platform=\"platform\",result=\"ok\"}")
            .await,
        1.0
    );
    assert!(
        s.gate
            .metric("ltigate_jwks_last_success_timestamp_seconds{platform=\"platform\"}")
            .await
            > 1.7e9
    );
    assert_eq!(s.platform.fetches(), 1);

    // The same state again (a double submit from another browser): refused.
    let again = launch(&s, &login, &token).await;
    assert_eq!(error_of(again).await, (401, "bad_state".to_string()));
}

/// A second submit of the same launch from the browser that holds the
/// session goes on to the course instead of failing.
#[tokio::test]
async fn a_double_submit_from_the_same_browser_goes_on_to_the_course() {
    let s = setup("lms_id = \"plat\"").await;
    let login = login(&s.gate).await;
    let token = s
        .platform
        .key
        .id_token(&platform::claims(login.nonce(), &launch_url()));
    let first = launch(&s, &login, &token).await;
    assert_eq!(first.status(), 303);
    let session = set_cookies(&first)
        .into_iter()
        .find(|c| c.starts_with("__Host-ltigate_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let again = post_launch(
        &s.gate,
        "/lti/1.3/launch",
        &[("id_token", &token), ("state", login.state())],
        &format!("{}; {session}", login.cookie),
    )
    .await;
    assert_eq!(again.status(), 303);
    assert_eq!(location(&again), "/courses/C-13");
    assert_eq!(s.up.api_calls().len(), 2, "provisioned once");
}

/// Changes `claims` at `path` (`/`-separated, `~1` for `/` in a name);
/// `None` removes the member.
fn set(claims: &mut Value, name: &str, value: Option<Value>) {
    let obj = claims.as_object_mut().unwrap();
    match value {
        Some(v) => {
            obj.insert(name.to_string(), v);
        }
        None => {
            obj.remove(name);
        }
    }
}

const LTI: &str = "https://purl.imsglobal.org/spec/lti/claim/";

/// Every reason of DESIGN §13's table that a token or a state can cause,
/// each with its status and metric label.
#[tokio::test]
async fn every_refusal_has_its_reason_status_and_label() {
    let s = setup("lms_id = \"plat\"").await;
    let key = &s.platform.key;
    let other = Key::from_pem_file("keys/tool-test-key.pem", "platform-key-1");
    let unknown_kid = Key::from_pem_file("keys/platform-test-key.pem", "no-such-kid");

    type Change = Box<dyn Fn(&mut Value)>;
    let claim = |name: &'static str, value: Option<Value>| -> Change {
        Box::new(move |c: &mut Value| set(c, name, value.clone()))
    };
    let lti = |name: &'static str, value: Option<Value>| -> Change {
        Box::new(move |c: &mut Value| set(c, &format!("{LTI}{name}"), value.clone()))
    };
    let t = now() as i64;
    let cases: Vec<(&str, Change, u16, &str)> = vec![
        ("no sub", claim("sub", None), 400, "invalid_request"),
        (
            "sub too long",
            claim("sub", Some(json!("x".repeat(256)))),
            400,
            "invalid_request",
        ),
        ("no version", lti("version", None), 400, "invalid_request"),
        (
            "version 1.1",
            lti("version", Some(json!("1.1.0"))),
            400,
            "invalid_request",
        ),
        (
            "no deployment",
            lti("deployment_id", None),
            400,
            "invalid_request",
        ),
        (
            "exp a string",
            claim("exp", Some(json!("soon"))),
            400,
            "invalid_request",
        ),
        (
            "unknown deployment",
            lti("deployment_id", Some(json!("dep-9"))),
            401,
            "unknown_platform",
        ),
        (
            "deep linking",
            lti("message_type", Some(json!("LtiDeepLinkingRequest"))),
            400,
            "unsupported_message",
        ),
        ("no roles", lti("roles", None), 400, "invalid_request"),
        (
            "no resource link",
            lti("resource_link", None),
            400,
            "invalid_request",
        ),
        (
            "wrong iss",
            claim("iss", Some(json!("https://evil.example"))),
            401,
            "bad_token",
        ),
        (
            "aud without the client",
            claim("aud", Some(json!("other"))),
            401,
            "bad_token",
        ),
        (
            "several audiences, no azp",
            claim("aud", Some(json!([CLIENT_ID, "other"]))),
            401,
            "bad_token",
        ),
        (
            "azp mismatch",
            claim("azp", Some(json!("other"))),
            401,
            "bad_token",
        ),
        (
            "another target link",
            lti(
                "target_link_uri",
                Some(json!(format!("{PUBLIC_URL}/elsewhere"))),
            ),
            401,
            "bad_token",
        ),
        (
            "expired",
            claim("exp", Some(json!(t - 120))),
            401,
            "stale_token",
        ),
        (
            "issued in the future",
            claim("iat", Some(json!(t + 120))),
            401,
            "stale_token",
        ),
        (
            "not before the future",
            claim("nbf", Some(json!(t + 120))),
            401,
            "stale_token",
        ),
        (
            "another nonce",
            claim("nonce", Some(json!("nonce-of-another-login"))),
            401,
            "replayed_nonce",
        ),
    ];
    for (what, change, status, label) in cases {
        let login = login(&s.gate).await;
        let mut claims = platform::claims(login.nonce(), &launch_url());
        change(&mut claims);
        let token = key.id_token(&claims);
        let r = launch(&s, &login, &token).await;
        assert_eq!(error_of(r).await, (status, label.to_string()), "{what}");
    }

    // Tokens not signed as they must be.
    let good = |login: &Login| platform::claims(login.nonce(), &launch_url());
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    type Forge<'a> = Box<dyn Fn(&Login) -> String + 'a>;
    let forged: Vec<(&str, Forge)> = vec![
        (
            "alg none",
            Box::new(|l: &Login| {
                format!(
                    "{}.{}.",
                    b64(&json!({"alg": "none", "kid": "platform-key-1"})),
                    b64(&good(l))
                )
            }),
        ),
        (
            "HS256 with the public key as its secret",
            Box::new(|l: &Login| {
                let input = format!(
                    "{}.{}",
                    b64(&json!({"alg": "HS256", "kid": "platform-key-1"})),
                    b64(&good(l))
                );
                let secret = key.jwk().to_string();
                let mac = ring::hmac::sign(
                    &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes()),
                    input.as_bytes(),
                );
                format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()))
            }),
        ),
        (
            "no kid",
            Box::new(|l: &Login| key.sign(&json!({"alg": "RS256"}), &good(l))),
        ),
        (
            "signed by another key under the platform's kid",
            Box::new(|l: &Login| other.id_token(&good(l))),
        ),
        (
            "an unknown kid",
            Box::new(|l: &Login| unknown_kid.id_token(&good(l))),
        ),
        (
            "a changed claim",
            Box::new(|l: &Login| {
                let token = key.id_token(&good(l));
                let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
                let mut claims = good(l);
                set(&mut claims, "sub", Some(json!("someone-else")));
                parts[1] = b64(&claims);
                parts.join(".")
            }),
        ),
    ];
    for (what, make) in forged {
        let login = login(&s.gate).await;
        let r = launch(&s, &login, &make(&login)).await;
        assert_eq!(error_of(r).await, (401, "bad_token".to_string()), "{what}");
    }

    // Malformed forms and states.
    let login1 = login(&s.gate).await;
    let token = key.id_token(&good(&login1));
    for (what, form, cookie, status, label) in [
        (
            "no id_token",
            vec![("state", login1.state())],
            login1.cookie.as_str(),
            400,
            "invalid_request",
        ),
        (
            "no state",
            vec![("id_token", token.as_str())],
            login1.cookie.as_str(),
            400,
            "invalid_request",
        ),
        (
            "not a JWS",
            vec![("id_token", "a.b"), ("state", login1.state())],
            login1.cookie.as_str(),
            400,
            "invalid_request",
        ),
        (
            "a state that does not open",
            vec![("id_token", token.as_str()), ("state", "bm90LWEtc3RhdGU")],
            login1.cookie.as_str(),
            401,
            "bad_state",
        ),
        (
            "no state cookie",
            vec![("id_token", token.as_str()), ("state", login1.state())],
            "",
            401,
            "bad_state",
        ),
    ] {
        let r = post_launch(&s.gate, "/lti/1.3/launch", &form, cookie).await;
        assert_eq!(error_of(r).await, (status, label.to_string()), "{what}");
    }
    // The cookie of another login, and a wrong HMAC under the right name.
    let login2 = login(&s.gate).await;
    let name1 = login1.cookie.split('=').next().unwrap();
    let value2 = login2.cookie.split_once('=').unwrap().1;
    for (what, cookie) in [
        ("another login's cookie value", format!("{name1}={value2}")),
        ("a wrong HMAC", format!("{name1}=AAAA{}", &value2[4..])),
        ("another login's cookie", login2.cookie.clone()),
    ] {
        let r = post_launch(
            &s.gate,
            "/lti/1.3/launch",
            &[("id_token", &token), ("state", login1.state())],
            &cookie,
        )
        .await;
        assert_eq!(error_of(r).await, (401, "bad_state".to_string()), "{what}");
    }
    // The platform's OIDC error answer.
    let r = post_launch(
        &s.gate,
        "/lti/1.3/launch",
        &[
            ("error", "login_required"),
            ("error_description", "no session"),
            ("state", login1.state()),
        ],
        &login1.cookie,
    )
    .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("login_required: no session"),
        "{body}"
    );

    // Everything was counted under its reason; nothing was provisioned.
    assert!(s.up.api_calls().is_empty());
    assert_eq!(
        s.gate
            .metric("ltigate_launches_total{consumer=\"platform\",result=\"bad_token\",version=\"1.3\"}")
            .await,
        11.0
    );
    assert_eq!(
        s.gate
            .metric(
                "ltigate_launches_total{consumer=\"unknown\",result=\"bad_state\",version=\"1.3\"}"
            )
            .await,
        5.0
    );
    // The first unknown kid caused one re-fetch; the other failures none.
    assert_eq!(s.platform.fetches(), 2);
}

#[tokio::test]
async fn the_launch_url_may_carry_the_course_and_sources_must_agree() {
    let s = setup("lms_id = \"plat\"").await;
    let key = &s.platform.key;
    // Course in the target link URI only.
    let target = format!("{PUBLIC_URL}/lti/1.3/launch/C%2D7");
    let login = login_to(&s.gate, &target).await;
    let mut claims = platform::claims(login.nonce(), &target);
    set(&mut claims, &format!("{LTI}custom"), None);
    let r = post_launch(
        &s.gate,
        "/lti/1.3/launch/C%2D7",
        &[
            ("id_token", &key.id_token(&claims)),
            ("state", login.state()),
        ],
        &login.cookie,
    )
    .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    assert_eq!(
        s.up.api_calls()[1].path,
        "/api/courses/C-7/subscriptions/plat%3Alearner-1"
    );
    // A custom course that disagrees with the link: refused.
    let login = login_to(&s.gate, &target).await;
    let claims = platform::claims(login.nonce(), &target);
    let r = post_launch(
        &s.gate,
        "/lti/1.3/launch/C%2D7",
        &[
            ("id_token", &key.id_token(&claims)),
            ("state", login.state()),
        ],
        &login.cookie,
    )
    .await;
    assert_eq!(error_of(r).await, (400, "invalid_request".to_string()));
}

#[tokio::test]
async fn logins_that_cannot_go_on_are_refused_and_never_redirected() {
    let s = setup("lms_id = \"plat\"").await;
    let target = launch_url();
    for (what, query, label) in [
        (
            "no iss",
            vec![("login_hint", "h"), ("target_link_uri", target.as_str())],
            "invalid_request",
        ),
        (
            "no login_hint",
            vec![("iss", ISSUER), ("target_link_uri", target.as_str())],
            "invalid_request",
        ),
        (
            "no target",
            vec![("iss", ISSUER), ("login_hint", "h")],
            "invalid_request",
        ),
        (
            "unknown issuer",
            vec![
                ("iss", "https://other.example"),
                ("login_hint", "h"),
                ("target_link_uri", target.as_str()),
            ],
            "unknown_platform",
        ),
        (
            "unknown client id",
            vec![
                ("iss", ISSUER),
                ("client_id", "nope"),
                ("login_hint", "h"),
                ("target_link_uri", target.as_str()),
            ],
            "unknown_platform",
        ),
        (
            "a target elsewhere",
            vec![
                ("iss", ISSUER),
                ("login_hint", "h"),
                ("target_link_uri", "https://evil.example/"),
            ],
            "invalid_request",
        ),
        (
            "a target that only starts like the public URL",
            vec![
                ("iss", ISSUER),
                ("login_hint", "h"),
                ("target_link_uri", "https://learn.example.test.evil/"),
            ],
            "invalid_request",
        ),
    ] {
        let r = client()
            .get(s.gate.url("/lti/1.3/login"))
            .query(&query)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert!(r.headers().get("location").is_none(), "{what}");
        assert!(set_cookies(&r).is_empty(), "{what}");
        assert_eq!(error_of(r).await, (400, label.to_string()), "{what}");
    }
    // Without client_id the issuer's only registration is used; a POSTed
    // login works as a GET does.
    let r = client()
        .post(s.gate.url("/lti/1.3/login"))
        .form(&[
            ("iss", ISSUER),
            ("login_hint", "h"),
            ("target_link_uri", target.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(query_of(&location(&r))["client_id"], CLIENT_ID);
    assert_eq!(
        s.gate
            .metric("ltigate_lti13_logins_total{result=\"invalid_request\"}")
            .await,
        5.0
    );
    assert_eq!(
        s.gate
            .metric("ltigate_lti13_logins_total{result=\"unknown_platform\"}")
            .await,
        2.0
    );
}

/// A browser keeps at most 8 state cookies: a login beyond deletes the
/// oldest.
#[tokio::test]
async fn at_most_eight_state_cookies_are_kept() {
    let s = setup("lms_id = \"plat\"").await;
    let held: Vec<String> = (0..8)
        .map(|i| format!("__Host-ltigate_s_{i:016}=v"))
        .collect();
    let r = client()
        .get(s.gate.url("/lti/1.3/login"))
        .query(&[
            ("iss", ISSUER),
            ("login_hint", "h"),
            ("target_link_uri", &launch_url()),
        ])
        .header("cookie", held.join("; "))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let cookies = set_cookies(&r);
    let deleted: Vec<&String> = cookies.iter().filter(|c| c.contains("Max-Age=0")).collect();
    assert_eq!(deleted.len(), 1, "{cookies:?}");
    assert!(deleted[0].starts_with("__Host-ltigate_s_0000000000000000=;"));
    assert_eq!(cookies.len(), 2);
}

/// From a frame: the cookie-check page; where the cookie is blocked, a new
/// window re-runs the login from a single-use ticket, and the platform's
/// message hint is spent only there.
#[tokio::test]
async fn a_framed_login_checks_its_cookie_and_falls_back_to_a_new_window() {
    let s = setup("lms_id = \"plat\"").await;
    let hint = "moodle-single-use-hint";
    let r = client()
        .get(s.gate.url("/lti/1.3/login"))
        .query(&[
            ("iss", ISSUER),
            ("login_hint", "h"),
            ("target_link_uri", &launch_url()),
            ("lti_message_hint", hint),
        ])
        .header("sec-fetch-dest", "iframe")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ltigate-fallback"], "cookie-check");
    let state_cookie = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("__Host-ltigate_s_"))
        .unwrap();
    let name = state_cookie.split('=').next().unwrap().to_string();
    let page = r.text().await.unwrap();
    assert!(page.contains("https://platform.example/auth?"), "{page}");
    let short = &name["__Host-ltigate_s_".len()..];
    assert!(page.contains(&format!("/lti/1.3/cookie-check?s={short}")));
    let ticket = page
        .split("/lti/1.3/login?ticket=")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();

    // The check: 204 when the cookie came back, 404 when it did not.
    let check = |cookie: Option<String>| {
        let mut req = client().get(s.gate.url(&format!("/lti/1.3/cookie-check?s={short}")));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send()
    };
    let value = state_cookie.split(';').next().unwrap().to_string();
    assert_eq!(check(Some(value)).await.unwrap().status(), 204);
    assert_eq!(check(None).await.unwrap().status(), 404);

    // A login ticket is never a /lti/continue ticket.
    let r = client()
        .get(s.gate.url(&format!("/lti/continue?ticket={ticket}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The new window: a top-level login with the same parameters.
    let r = client()
        .get(s.gate.url(&format!("/lti/1.3/login?ticket={ticket}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let p = query_of(&location(&r));
    assert_eq!(p["lti_message_hint"], hint);
    assert_eq!(p["login_hint"], "h");
    assert!(set_cookies(&r)
        .iter()
        .any(|c| c.starts_with("__Host-ltigate_s_")));
    // Once.
    let again = client()
        .get(s.gate.url(&format!("/lti/1.3/login?ticket={ticket}")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401);
    for result in ["cookie_check", "new_window"] {
        let series = format!("ltigate_lti13_logins_total{{result=\"{result}\"}}");
        assert_eq!(s.gate.metric(&series).await, 1.0, "{series}");
    }
}

/// The platform's key set: fetched once and reused; a rotation causes
/// exactly one re-fetch; an outage with nothing cached is
/// `jwks_unavailable`, and the admin refresh drops the cache.
#[tokio::test]
async fn the_platforms_keys_are_cached_refetched_once_on_rotation_and_refreshable() {
    let s = setup("lms_id = \"plat\"").await;
    for _ in 0..3 {
        let login = login(&s.gate).await;
        let token = s
            .platform
            .key
            .id_token(&platform::claims(login.nonce(), &launch_url()));
        assert_eq!(launch(&s, &login, &token).await.status(), 303);
    }
    assert_eq!(s.platform.fetches(), 1, "cached");

    // Rotation: the platform signs with a new key, published beside the old.
    let new_key = Key::from_pem_file("keys/tool-test-key.pem", "platform-key-2");
    s.platform
        .set_keys(json!({"keys": [s.platform.key.jwk(), new_key.jwk()]}));
    for _ in 0..2 {
        let login = login(&s.gate).await;
        let token = new_key.id_token(&platform::claims(login.nonce(), &launch_url()));
        assert_eq!(launch(&s, &login, &token).await.status(), 303);
    }
    assert_eq!(s.platform.fetches(), 2, "one re-fetch for the new kid");

    // The admin drops the cache; the platform is down: nothing to verify with.
    let r = client()
        .post(s.gate.admin_url("/jwks/refresh"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.platform.set_down(true);
    let login1 = login(&s.gate).await;
    let token = s
        .platform
        .key
        .id_token(&platform::claims(login1.nonce(), &launch_url()));
    assert_eq!(
        error_of(launch(&s, &login1, &token).await).await,
        (502, "jwks_unavailable".to_string())
    );
    assert_eq!(
        s.gate
            .metric("ltigate_jwks_fetches_total{platform=\"platform\",result=\"error\"}")
            .await,
        1.0
    );
    s.platform.set_down(false);
    let login2 = login(&s.gate).await;
    let token = s
        .platform
        .key
        .id_token(&platform::claims(login2.nonce(), &launch_url()));
    assert_eq!(launch(&s, &login2, &token).await.status(), 303);
}

/// 50 concurrent launches signed with a `kid` the platform never published
/// cause at most one fetch beyond the first.
#[tokio::test]
async fn fifty_concurrent_unknown_kids_cause_at_most_one_fetch() {
    let s = setup("lms_id = \"plat\"").await;
    // Warm the cache.
    let login1 = login(&s.gate).await;
    let token = s
        .platform
        .key
        .id_token(&platform::claims(login1.nonce(), &launch_url()));
    assert_eq!(launch(&s, &login1, &token).await.status(), 303);
    assert_eq!(s.platform.fetches(), 1);

    s.platform.set_delay(Duration::from_millis(200));
    let stranger = Key::from_pem_file("keys/tool-test-key.pem", "random-kid");
    let mut logins = Vec::new();
    for _ in 0..50 {
        logins.push(login(&s.gate).await);
    }
    let s = &s;
    let launches = logins.iter().map(|l| {
        let token = stranger.id_token(&platform::claims(l.nonce(), &launch_url()));
        async move { error_of(launch(s, l, &token).await).await }
    });
    let results = futures_util::future::join_all(launches).await;
    for r in results {
        assert_eq!(r, (401, "bad_token".to_string()));
    }
    assert!(
        s.platform.fetches() <= 2,
        "{} fetches",
        s.platform.fetches()
    );
}

/// The `oauth_consumer_key_sign` of an `lti1p1` claim: base64 of
/// HMAC-SHA256(secret, key&deployment_id&iss&client_id&exp&nonce).
fn migration_sign(secret: &str, exp: u64, nonce: &str) -> String {
    let base = format!("acme-key&{DEPLOYMENT}&{ISSUER}&{CLIENT_ID}&{exp}&{nonce}");
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes()),
        base.as_bytes(),
    );
    STANDARD.encode(tag.as_ref())
}

/// A learner first launched by LTI 1.1, then by LTI 1.3 with the `lti1p1`
/// claim, is one upstream user holding one licence.
#[tokio::test]
async fn a_learner_migrated_from_1_1_is_the_same_user_with_one_licence() {
    let s = setup("consumer = \"Acme\"").await;
    let l11 = support::lms::Launch::acme("u-mig", "C-13");
    let r = client()
        .post(s.gate.url(&l11.path_and_query()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(l11.body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let licences = "ltigate_licences_used{consumer=\"Acme\"}";
    assert_eq!(s.gate.metric(licences).await, 1.0);

    let login1 = login(&s.gate).await;
    let mut claims = platform::claims(login1.nonce(), &launch_url());
    let exp = claims["exp"].as_u64().unwrap();
    set(
        &mut claims,
        &format!("{LTI}lti1p1"),
        Some(json!({
            "user_id": "u-mig",
            "oauth_consumer_key": "acme-key",
            "oauth_consumer_key_sign": migration_sign("acme-secret", exp, login1.nonce()),
        })),
    );
    let r = launch(&s, &login1, &s.platform.key.id_token(&claims)).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let users: Vec<String> =
        s.up.api_calls()
            .iter()
            .filter(|c| c.path.starts_with("/api/users/"))
            .map(|c| c.path.clone())
            .collect();
    assert_eq!(
        users,
        ["/api/users/acme%3Au-mig", "/api/users/acme%3Au-mig"]
    );
    assert_eq!(s.gate.metric(licences).await, 1.0, "no second licence");
    assert_eq!(
        s.gate
            .metric("ltigate_launches_total{consumer=\"Acme\",result=\"accepted\",version=\"1.3\"}")
            .await,
        1.0
    );

    // A wrong signature is refused.
    let login2 = login(&s.gate).await;
    let mut claims = platform::claims(login2.nonce(), &launch_url());
    set(
        &mut claims,
        &format!("{LTI}lti1p1"),
        Some(json!({
            "user_id": "u-mig",
            "oauth_consumer_key": "acme-key",
            "oauth_consumer_key_sign": migration_sign("not-the-secret", exp, login2.nonce()),
        })),
    );
    let r = launch(&s, &login2, &s.platform.key.id_token(&claims)).await;
    assert_eq!(error_of(r).await, (401, "bad_migration".to_string()));

    // Without the claim, the learner is the platform's sub in the tenant.
    let login3 = login(&s.gate).await;
    let claims = platform::claims(login3.nonce(), &launch_url());
    assert_eq!(
        launch(&s, &login3, &s.platform.key.id_token(&claims))
            .await
            .status(),
        303
    );
    assert_eq!(
        s.up.api_calls().last().unwrap().path,
        "/api/courses/C-13/subscriptions/acme%3Alearner-1"
    );
}

/// On Redis, two replicas share the state's single use: a state used at
/// one is refused at the other; with Redis down the launch fails closed
/// (503 `store_unavailable`), and a login still works (it writes nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_a_state_is_used_once_across_replicas_and_an_outage_fails_closed() {
    let mut redis = support::redis::RedisServer::start();
    let up = Upstream::start(Some("upstream-token")).await;
    let platform = Platform::start().await;
    let a = gate_on_redis(&up, &platform, &redis.url()).await;
    let b = gate_on_redis(&up, &platform, &redis.url()).await;

    let login = login(&a).await;
    let token = platform
        .key
        .id_token(&platform::claims(login.nonce(), &launch_url()));
    let form = [("id_token", token.as_str()), ("state", login.state())];
    let first = post_launch(&a, "/lti/1.3/launch", &form, &login.cookie).await;
    assert_eq!(first.status(), 303, "{}", first.text().await.unwrap());
    let other = post_launch(&b, "/lti/1.3/launch", &form, &login.cookie).await;
    assert_eq!(error_of(other).await, (401, "bad_state".to_string()));

    redis.kill();
    let login2 = login_to(&b, &launch_url()).await;
    let token = platform
        .key
        .id_token(&platform::claims(login2.nonce(), &launch_url()));
    let r = post_launch(
        &b,
        "/lti/1.3/launch",
        &[("id_token", &token), ("state", login2.state())],
        &login2.cookie,
    )
    .await;
    assert_eq!(error_of(r).await, (503, "store_unavailable".to_string()));
    assert_eq!(
        b.metric("ltigate_launches_total{consumer=\"platform\",result=\"store_unavailable\",version=\"1.3\"}")
            .await,
        1.0
    );
    assert_eq!(
        b.metric("ltigate_store_errors_total{op=\"state\"}").await,
        1.0
    );
}

/// Platform storage (DESIGN §13 "Blocked cookies"): a framed login that
/// offers `lti_storage_target` gets a cookie-check page that puts a binder
/// in the platform's storage; a launch without the state cookie answers a
/// page that reads it back and posts again with it, and only the right
/// binder opens the launch.
#[tokio::test]
async fn a_binder_in_platform_storage_stands_in_for_a_blocked_state_cookie() {
    let s = setup("lms_id = \"plat\"").await;
    let framed_login = || async {
        let r = client()
            .get(s.gate.url("/lti/1.3/login"))
            .query(&[
                ("iss", ISSUER),
                ("login_hint", "h"),
                ("target_link_uri", &launch_url()),
                ("lti_storage_target", "post_message_forwarding"),
            ])
            .header("sec-fetch-dest", "iframe")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let page = r.text().await.unwrap();
        // The storage object, as the page's script gets it.
        let field = |name: &str| -> String {
            let marker = format!("\\\"{name}\\\":\\\"");
            let start = page
                .find(&marker)
                .unwrap_or_else(|| panic!("{name} in {page}"))
                + marker.len();
            page[start..].split('\\').next().unwrap().to_string()
        };
        assert_eq!(field("target"), "post_message_forwarding");
        assert_eq!(field("origin"), "https://platform.example");
        assert!(field("key").starts_with("lti_state_"));
        assert!(page.contains("'put_data'"));
        let auth = page
            .split("var auth=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .replace("\\u0026", "&")
            .replace("\\/", "/");
        (query_of(&auth), field("value"))
    };

    let (params, binder) = framed_login().await;
    let token = s
        .platform
        .key
        .id_token(&platform::claims(&params["nonce"], &launch_url()));
    // No cookie: the page that reads the binder back and posts again.
    let r = post_launch(
        &s.gate,
        "/lti/1.3/launch",
        &[("id_token", &token), ("state", &params["state"])],
        "",
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ltigate-fallback"], "platform-storage");
    let page = r.text().await.unwrap();
    assert!(page.contains("'get_data'") && page.contains(&token));
    assert!(page.contains("action=\"/lti/1.3/launch\""));
    // A wrong binder is refused; the right one opens the launch, once.
    let wrong = post_launch(
        &s.gate,
        "/lti/1.3/launch",
        &[
            ("id_token", &token),
            ("state", &params["state"]),
            ("binder", "AAAAAAAAAAAAAAAAAAAAAA"),
        ],
        "",
    )
    .await;
    assert_eq!(error_of(wrong).await, (401, "bad_state".to_string()));
    let form = [
        ("id_token", token.as_str()),
        ("state", params["state"].as_str()),
        ("binder", binder.as_str()),
    ];
    let ok = post_launch(&s.gate, "/lti/1.3/launch", &form, "").await;
    assert_eq!(ok.status(), 303, "{}", ok.text().await.unwrap());
    let again = post_launch(&s.gate, "/lti/1.3/launch", &form, "").await;
    assert_eq!(error_of(again).await, (401, "bad_state".to_string()));

    // A binder of another login does not open this one.
    let (params2, _) = framed_login().await;
    let token2 = s
        .platform
        .key
        .id_token(&platform::claims(&params2["nonce"], &launch_url()));
    let r = post_launch(
        &s.gate,
        "/lti/1.3/launch",
        &[
            ("id_token", &token2),
            ("state", &params2["state"]),
            ("binder", &binder),
        ],
        "",
    )
    .await;
    assert_eq!(error_of(r).await, (401, "bad_state".to_string()));
}
