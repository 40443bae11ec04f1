//! Sessions over real sockets: which cookies open the proxy and which get a
//! 401 (and why), rotation and last-seen refresh, the launch ticket and
//! its new-window fallback, replacing and merging sessions, the 4 KB
//! bound, and logout.

mod proxykit;
mod support;

use std::time::{Duration, SystemTime};

use ltigate::secret::Secret;
use ltigate::session::Sealer;
use proxykit::{
    cookie_for, echo, echoed_headers, gate_with, launch, location, metric, sealer, session,
    session_at, session_cookie, set_cookies, COOKIE,
};
use support::gate::{client, Gate, PUBLIC_URL};
use support::lms::{now, Launch};
use support::upstream::Upstream;

fn header<'a>(echo: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    echoed_headers(echo).get(name).and_then(|v| v.as_str())
}

/// GET a proxied path with `cookie`: (status, body).
async fn get(gate: &Gate, cookie: &str, json: bool) -> (u16, String) {
    let mut req = client()
        .get(gate.url("/courses/C-1"))
        .header("cookie", cookie);
    if json {
        req = req.header("accept", "application/json");
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn rejections(gate: &Gate, reason: &str) -> f64 {
    metric(
        gate,
        &format!("ltigate_session_rejections_total{{reason=\"{reason}\"}}"),
    )
    .await
}

const RELAUNCH: &str = "Open the course again from your LMS.";

#[tokio::test]
async fn cookies_that_do_not_open_a_session_get_a_401_counted_by_reason() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = Gate::start(&up.url(), "").await;
    let t = now();
    let s = sealer();
    let other_key = Sealer::new(&Secret::new([9u8; 32]), &[]);
    let valid = cookie_for(&s, &session_at("u-1", "C-1", t - 10, t - 10));
    let mut tampered = valid.clone().into_bytes();
    let i = tampered.len() - 10;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let mut gone = session_at("u-1", "C-1", t, t);
    gone.tenant = "Removed".into();

    let cases: Vec<(String, &str)> = vec![
        ("a=1".into(), "missing"),
        (format!("{COOKIE}=not-a-sealed-value"), "invalid"),
        (String::from_utf8(tampered).unwrap(), "invalid"),
        (
            cookie_for(&other_key, &session_at("u-1", "C-1", t, t)),
            "invalid",
        ),
        (cookie_for(&s, &gone), "invalid"),
        // Older than session.ttl (8 h), though seen recently.
        (
            cookie_for(&s, &session_at("u-1", "C-1", t - 8 * 3600 - 5, t - 5)),
            "expired",
        ),
        // No request for session.idle_ttl (2 h).
        (
            cookie_for(
                &s,
                &session_at("u-1", "C-1", t - 3 * 3600, t - 2 * 3600 - 5),
            ),
            "idle",
        ),
    ];
    // Each cookie is sent twice: the second time its session comes from
    // the gate's cache of opened cookies, and the lifetime still applies.
    for (cookie, reason) in &cases {
        let (status, body) = get(&gate, cookie, false).await;
        assert_eq!(status, 401, "{reason}: {cookie}");
        assert!(body.contains(RELAUNCH), "{body}");
        let (status, body) = get(&gate, cookie, true).await;
        assert_eq!(status, 401);
        let j: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(j["error"], "no_session");
    }
    assert_eq!(rejections(&gate, "missing").await, 2.0);
    assert_eq!(rejections(&gate, "invalid").await, 8.0);
    assert_eq!(rejections(&gate, "expired").await, 2.0);
    assert_eq!(rejections(&gate, "idle").await, 2.0);
    assert_eq!(rejections(&gate, "revoked").await, 0.0);
    assert!(up.records().is_empty(), "{:?}", up.records());

    // Within both lifetimes the same kind of cookie passes.
    let (status, _) = get(&gate, &valid, false).await;
    assert_eq!(status, 200);
    let just_in_time = cookie_for(
        &s,
        &session_at("u-1", "C-1", t - 8 * 3600 + 30, t - 2 * 3600 + 30),
    );
    assert_eq!(get(&gate, &just_in_time, false).await.0, 200);
}

#[tokio::test]
async fn sessions_issued_before_not_before_are_revoked() {
    let up = Upstream::start(Some("upstream-token")).await;
    let cutoff = SystemTime::now() - Duration::from_secs(60);
    let gate = gate_with(
        &up.url(),
        &[(
            "session",
            "not_before",
            &format!("\"{}\"", humantime::format_rfc3339_seconds(cutoff)),
        )],
    )
    .await;
    let t = now();
    let s = sealer();
    let before = cookie_for(&s, &session_at("u-1", "C-1", t - 120, t - 10));
    let (status, body) = get(&gate, &before, false).await;
    assert_eq!(status, 401);
    assert!(body.contains(RELAUNCH));
    assert_eq!(rejections(&gate, "revoked").await, 1.0);
    let after = cookie_for(&s, &session_at("u-1", "C-1", t - 30, t - 10));
    assert_eq!(get(&gate, &after, false).await.0, 200);
    // A new launch starts a session that is not revoked.
    let cookie = session(&gate, &Launch::acme("u-1", "C-1"), Some(&before)).await;
    assert_eq!(get(&gate, &cookie, false).await.0, 200);
}

#[tokio::test]
async fn previous_secrets_open_old_cookies_and_the_refresh_reseals_them() {
    let up = Upstream::start(Some("upstream-token")).await;
    let old = "an-old-session-secret-of-32-bytes-or-more";
    let new = "the-new-session-secret-of-32-bytes-or-more";
    let gate = gate_with(
        &up.url(),
        &[
            ("session", "secret", &format!("\"{new}\"")),
            ("session", "previous_secrets", &format!("[\"{old}\"]")),
        ],
    )
    .await;
    let old_sealer = Sealer::new(&Secret::new(old.as_bytes().to_vec()), &[]);
    let new_sealer = Sealer::new(&Secret::new(new.as_bytes().to_vec()), &[]);
    let t = now();
    let cookie = cookie_for(&old_sealer, &session_at("u-1", "C-1", t - 600, t - 120));
    let r = client()
        .get(gate.url("/courses/C-1"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let refreshed = session_cookie(&r).expect("a refreshed cookie");
    let value = refreshed.split_once('=').unwrap().1;
    let s = new_sealer.open(value).unwrap();
    assert!(old_sealer.open(value).is_err());
    assert_eq!(s.issued_at, t - 600);
    assert!(s.last_seen >= t && s.last_seen <= now(), "{}", s.last_seen);
    // The base configuration's key is not among them.
    let foreign = cookie_for(&sealer(), &session_at("u-1", "C-1", t, t));
    assert_eq!(get(&gate, &foreign, false).await.0, 401);
}

#[tokio::test]
async fn last_seen_is_refreshed_at_most_once_a_minute() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = Gate::start(&up.url(), "").await;
    let t = now();
    let s = sealer();
    let fresh = cookie_for(&s, &session_at("u-1", "C-1", t - 600, t - 30));
    let r = client()
        .get(gate.url("/courses/C-1"))
        .header("cookie", &fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(set_cookies(&r).is_empty(), "{:?}", set_cookies(&r));

    let due = session_at("u-1", "C-1", t - 600, t - 61);
    let r = client()
        .get(gate.url("/courses/C-1"))
        .header("cookie", cookie_for(&s, &due))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let all = set_cookies(&r);
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(
        all[0].ends_with("; Path=/; Max-Age=28800; HttpOnly; Secure; SameSite=None"),
        "{}",
        all[0]
    );
    let value = session_cookie(&r).unwrap();
    let opened = s.open(value.split_once('=').unwrap().1).unwrap();
    assert!(opened.last_seen >= t, "{}", opened.last_seen);
    assert_eq!(
        ltigate::session::Session {
            last_seen: due.last_seen,
            ..opened
        },
        due
    );
}

#[tokio::test]
async fn the_launch_ticket_is_single_use() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = Gate::start(&up.url(), "").await;
    let r = launch(&gate, &Launch::acme("u-1", "C-1"), None).await;
    assert_eq!(r.status(), 303);
    let ticket_url = location(&r);
    assert!(
        ticket_url.starts_with("/lti/continue?ticket="),
        "{ticket_url}"
    );

    // A top-level browser without the cookie: set here, first-party.
    let first = client().get(gate.url(&ticket_url)).send().await.unwrap();
    assert_eq!(first.status(), 303);
    assert_eq!(location(&first), "/courses/C-1");
    let cookie = session_cookie(&first).expect("cookie set by /lti/continue");
    assert_eq!(get(&gate, &cookie, false).await.0, 200);

    // Spent: with or without cookie, framed or not, HTML or JSON.
    let again = client()
        .get(gate.url(&ticket_url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401);
    assert!(set_cookies(&again).is_empty());
    assert!(again.text().await.unwrap().contains("already used"));
    let again = client()
        .get(gate.url(&ticket_url))
        .header("sec-fetch-dest", "iframe")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401);
    let j: serde_json::Value = again.json().await.unwrap();
    assert_eq!(j["error"], "ticket_invalid");

    // The browser kept the launch's cookie: the ticket is spent, no new one.
    let r = launch(&gate, &Launch::acme("u-1", "C-1"), None).await;
    let launch_cookie = session_cookie(&r).unwrap();
    let url = location(&r);
    let kept = client()
        .get(gate.url(&url))
        .header("cookie", &launch_cookie)
        .header("sec-fetch-dest", "iframe")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), 303);
    assert_eq!(location(&kept), "/courses/C-1");
    assert!(set_cookies(&kept).is_empty());
    let r = client().get(gate.url(&url)).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // Unknown and malformed tickets.
    for q in ["?ticket=nope", "", "?ticket="] {
        let r = client()
            .get(gate.url(&format!("/lti/continue{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{q}");
    }
}

/// Launch, continue and the proxy open a session by the same rules: a
/// cookie whose tenant is no longer configured is no session at
/// `/lti/continue` either, so the ticket sets a fresh cookie there instead
/// of sending the browser on with one the proxy would refuse.
#[tokio::test]
async fn continue_opens_a_session_by_the_proxys_rules() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = Gate::start(&up.url(), "").await;
    let t = now();
    let mut gone = session_at("u-1", "C-1", t, t);
    gone.tenant = "Removed".into();
    let gone = cookie_for(&sealer(), &gone);
    assert_eq!(
        get(&gate, &gone, false).await.0,
        401,
        "the proxy refuses it"
    );

    let r = launch(&gate, &Launch::acme("u-1", "C-1"), Some(&gone)).await;
    assert_eq!(r.status(), 303);
    let fresh = session_cookie(&r).expect("the launch sets its own session");
    let cont = client()
        .get(gate.url(&location(&r)))
        .header("cookie", &gone)
        .header("sec-fetch-dest", "iframe")
        .send()
        .await
        .unwrap();
    // Not "the browser kept the launch's cookie": the framed page offers
    // the new window, and the ticket is still there for it.
    assert_eq!(cont.status(), 200);
    assert!(set_cookies(&cont).is_empty());
    let top = client()
        .get(gate.url(&location(&r)))
        .header("cookie", &gone)
        .send()
        .await
        .unwrap();
    assert_eq!(top.status(), 303);
    let set = session_cookie(&top).expect("a fresh cookie, first-party");
    assert_eq!(set, fresh);
    assert_eq!(get(&gate, &set, false).await.0, 200);
}

#[tokio::test]
async fn a_framed_continue_without_the_cookie_offers_a_new_window() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = Gate::start(&up.url(), "").await;
    let r = launch(&gate, &Launch::acme("u-1", "C-1"), None).await;
    let ticket_url = location(&r);

    // Safari in the LMS iframe dropped the cookie.
    let framed = client()
        .get(gate.url(&ticket_url))
        .header("sec-fetch-dest", "iframe")
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(framed.status(), 200);
    assert_eq!(framed.headers()["x-ltigate-fallback"], "new-window");
    assert!(framed.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(set_cookies(&framed).is_empty());
    let page = framed.text().await.unwrap();
    assert!(
        page.contains(&format!(
            "href=\"{ticket_url}&amp;window=new\" target=\"_blank\" rel=\"opener\""
        )),
        "{page}"
    );
    assert!(
        page.contains(&format!("window.open(\"{ticket_url}\\u0026window=new\",")),
        "{page}"
    );
    // It listens for the new window's message, from its own origin only,
    // and has the words to show then.
    assert!(page.contains("addEventListener('message'"), "{page}");
    assert!(page.contains("e.origin!==window.location.origin"), "{page}");
    assert!(page.contains("d.ltigate!=='continued'"), "{page}");
    assert!(page.contains("Continued in a new window"), "{page}");
    assert!(
        page.contains("The course is open in another window"),
        "{page}"
    );

    // The same page again (a reload of the frame) still works.
    let framed = client()
        .get(gate.url(&ticket_url))
        .header("sec-fetch-dest", "iframe")
        .send()
        .await
        .unwrap();
    assert_eq!(framed.headers()["x-ltigate-fallback"], "new-window");

    // The new window is top-level: the cookie is first-party there.
    let top = client()
        .get(gate.url(&ticket_url))
        .header("sec-fetch-dest", "document")
        .send()
        .await
        .unwrap();
    assert_eq!(top.status(), 303);
    assert_eq!(location(&top), "/courses/C-1");
    let cookie = session_cookie(&top).unwrap();
    let e = echo(&gate, "/courses/C-1", Some(&cookie)).await;
    assert_eq!(header(&e, "x-lti-user"), Some("acme:u-1"));
    // And the ticket is spent.
    let r = client()
        .get(gate.url(&ticket_url))
        .header("sec-fetch-dest", "iframe")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// The continue URL the fallback page's link opens.
fn new_window_url(ticket_url: &str) -> String {
    format!("{ticket_url}&window=new")
}

/// GET `path` as a top-level navigation, with `cookie` if any.
async fn top_level(gate: &Gate, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut req = client()
        .get(gate.url(path))
        .header("sec-fetch-dest", "document");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.unwrap()
}

/// Checks the page that answers a top-level `window=new` redeem: no
/// redirect, not cached, no referrer, a message for the opener aimed at the
/// public origin, then the landing path (script, meta refresh and link).
async fn expect_continued_page(r: reqwest::Response, landing: &str) -> String {
    assert_eq!(r.status(), 200);
    assert_eq!(location(&r), "");
    let h = r.headers();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["referrer-policy"], "no-referrer");
    let page = r.text().await.unwrap();
    assert!(
        page.contains(&format!(
            "o.postMessage({{ltigate:'continued'}},\"{PUBLIC_URL}\")"
        )),
        "{page}"
    );
    assert!(
        page.contains(&format!("window.location.replace(\"{landing}\")")),
        "{page}"
    );
    assert!(
        page.contains(&format!(
            "<noscript><meta http-equiv=\"refresh\" content=\"0;url={landing}\"></noscript>"
        )),
        "{page}"
    );
    assert!(page.contains(&format!("href=\"{landing}\"")), "{page}");
    page
}

#[tokio::test]
async fn the_new_window_tells_the_frame_and_spends_the_ticket_once() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = Gate::start(&up.url(), "").await;
    let r = launch(&gate, &Launch::acme("u-1", "C-1"), None).await;
    let ticket_url = location(&r);
    let framed = client()
        .get(gate.url(&ticket_url))
        .header("sec-fetch-dest", "iframe")
        .send()
        .await
        .unwrap();
    assert_eq!(framed.headers()["x-ltigate-fallback"], "new-window");

    // A landing path in the query is ignored: the ticket's own is used.
    let url = format!(
        "{}&landing=https%3A%2F%2Fevil.example%2F",
        new_window_url(&ticket_url)
    );
    let r = top_level(&gate, &url, None).await;
    let cookie = session_cookie(&r).expect("the session cookie, set by the new window");
    let page = expect_continued_page(r, "/courses/C-1").await;
    assert!(!page.contains("evil.example"), "{page}");
    let e = echo(&gate, "/courses/C-1", Some(&cookie)).await;
    assert_eq!(header(&e, "x-lti-user"), Some("acme:u-1"));

    // Spent: `window=new` replays nothing, top-level or framed, with or
    // without the cookie.
    for (dest, cookie) in [
        ("document", None),
        ("document", Some(cookie.as_str())),
        ("iframe", None),
    ] {
        let mut req = client()
            .get(gate.url(&new_window_url(&ticket_url)))
            .header("sec-fetch-dest", dest);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{dest} {cookie:?}");
        assert!(set_cookies(&r).is_empty());
    }
    assert_eq!(top_level(&gate, &ticket_url, None).await.status(), 401);
}

#[tokio::test]
async fn window_new_changes_only_a_top_level_redeem() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = Gate::start(&up.url(), "").await;

    // Without `window=new` (or with another value) a top-level redeem is
    // the 303 of the contract.
    for suffix in ["", "&window=same", "&window="] {
        let r = launch(&gate, &Launch::acme("u-1", "C-1"), None).await;
        let url = format!("{}{suffix}", location(&r));
        let r = top_level(&gate, &url, None).await;
        assert_eq!(r.status(), 303, "{url}");
        assert_eq!(location(&r), "/courses/C-1");
        assert!(session_cookie(&r).is_some());
    }

    // In a frame, `window=new` still gets the fallback page (the ticket is
    // kept), and the new window can redeem it afterwards.
    let r = launch(&gate, &Launch::acme("u-2", "C-1"), None).await;
    let url = new_window_url(&location(&r));
    let framed = client()
        .get(gate.url(&url))
        .header("sec-fetch-dest", "iframe")
        .send()
        .await
        .unwrap();
    assert_eq!(framed.status(), 200);
    assert_eq!(framed.headers()["x-ltigate-fallback"], "new-window");
    assert!(set_cookies(&framed).is_empty());
    let r = top_level(&gate, &url, None).await;
    assert!(session_cookie(&r).is_some());
    expect_continued_page(r, "/courses/C-1").await;

    // The new window already has the cookie (first-party, from an earlier
    // new window): the frame is told all the same, the cookie stays.
    let launched = launch(&gate, &Launch::acme("u-2", "C-1"), None).await;
    let earlier = session(&gate, &Launch::acme("u-2", "C-1"), None).await;
    let url = new_window_url(&location(&launched));
    let r = top_level(&gate, &url, Some(&earlier)).await;
    assert!(set_cookies(&r).is_empty());
    expect_continued_page(r, "/courses/C-1").await;
    assert_eq!(top_level(&gate, &url, Some(&earlier)).await.status(), 401);

    // A framed request that has the cookie goes on to the course.
    let launched = launch(&gate, &Launch::acme("u-2", "C-1"), None).await;
    let r = client()
        .get(gate.url(&new_window_url(&location(&launched))))
        .header("sec-fetch-dest", "iframe")
        .header("cookie", &earlier)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/courses/C-1");
}

#[tokio::test]
async fn a_launch_for_another_learner_replaces_the_session() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = Gate::start(&up.url(), "").await;
    let first = session(&gate, &Launch::acme("u-a", "C-1"), None).await;
    // Canvas Student View / a shared computer: another user in the same browser.
    let second = session(&gate, &Launch::acme("u-b", "C-2"), Some(&first)).await;
    let e = echo(&gate, "/", Some(&second)).await;
    assert_eq!(header(&e, "x-lti-user"), Some("acme:u-b"));
    assert_eq!(header(&e, "x-lti-course-roles"), Some("C-2=Learner"));
    assert_eq!(header(&e, "x-lti-course"), Some("C-2"));
    // The same user_id at another consumer is another learner too.
    let l = Launch::new("beta-key", "beta-new", "u-b", Some("C-3"));
    let third = session(&gate, &l, Some(&second)).await;
    let e = echo(&gate, "/", Some(&third)).await;
    assert_eq!(header(&e, "x-lti-user"), Some("beta:u-b"));
    assert_eq!(header(&e, "x-lti-consumer"), Some("Beta"));
    assert_eq!(header(&e, "x-lti-course-roles"), Some("C-3=Learner"));
    assert_eq!(header(&e, "x-lti-email"), Some("ada@example.org"));
}

#[tokio::test]
async fn the_same_learner_merges_courses_keeping_the_most_recent() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_with(&up.url(), &[("session", "max_courses", "3")]).await;
    let mut cookie = session(&gate, &Launch::acme("u-1", "C-1"), None).await;
    let launches = [
        ("C-2", "Instructor", "C-1=Learner;C-2=Instructor"),
        ("C-3", "Learner", "C-1=Learner;C-2=Instructor;C-3=Learner"),
        // A relaunch moves the course to the end with its new roles.
        (
            "C-1",
            "TeachingAssistant",
            "C-2=Instructor;C-3=Learner;C-1=TeachingAssistant",
        ),
        // Beyond max_courses the oldest goes.
        (
            "C-4",
            "Learner",
            "C-3=Learner;C-1=TeachingAssistant;C-4=Learner",
        ),
    ];
    for (course, roles, expected) in launches {
        let l = Launch::acme("u-1", course)
            .set("roles", roles)
            .set("lis_person_name_given", &format!("Ada {course}"));
        cookie = session(&gate, &l, Some(&cookie)).await;
        let e = echo(&gate, "/", Some(&cookie)).await;
        assert_eq!(header(&e, "x-lti-course-roles"), Some(expected), "{course}");
        assert_eq!(header(&e, "x-lti-course"), Some(course));
        assert_eq!(header(&e, "x-lti-roles"), Some(roles));
        // Names follow the latest launch.
        assert_eq!(
            header(&e, "x-lti-given-name"),
            Some(format!("Ada%20{course}").as_str())
        );
    }
    // Every launch starts a fresh lifetime.
    let opened = sealer().open(cookie.split_once('=').unwrap().1).unwrap();
    assert!(opened.issued_at + 5 >= now());
}

#[tokio::test]
async fn the_cookie_stays_under_4kb_at_the_field_limits() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = Gate::start(&up.url(), "").await;
    let user = "u".repeat(128); // the longest user_id a launch accepts
    let roles: Vec<String> = (0..10)
        .map(|i| format!("urn:example:role:a-long-custom-role-name-{i:04}"))
        .collect();
    let roles = roles.join(",");
    let course = |i: usize| format!("{i:02}-x{}", "é".repeat(30)); // 64 bytes
    let mut cookie: Option<String> = None;
    for i in 0..25 {
        let l = Launch::acme(&user, &course(i))
            .set("lis_person_name_given", &"Ünal ".repeat(40))
            .set("lis_person_name_family", &"\"O'Brien\" ".repeat(30))
            .set(
                "lis_person_contact_email_primary",
                &format!("{}@example.org", "e".repeat(250)),
            )
            .set("roles", &roles);
        let r = launch(&gate, &l, cookie.as_deref()).await;
        assert_eq!(r.status(), 303, "launch {i}");
        let header = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .find(|v| v.starts_with(COOKIE))
            .unwrap()
            .to_string();
        assert!(header.len() < 4096, "launch {i}: {} bytes", header.len());
        cookie = session_cookie(&r);
    }
    let cookie = cookie.unwrap();
    let e = echo(&gate, "/", Some(&cookie)).await;
    assert_eq!(
        header(&e, "x-lti-user"),
        Some(format!("acme:{user}").as_str())
    );
    let latest = ltigate::proxy::headers::request::encode_value(&course(24));
    assert_eq!(header(&e, "x-lti-course"), Some(latest.as_str()));
    // The roles of a course: at most 8 kept.
    assert_eq!(header(&e, "x-lti-roles").unwrap().split(',').count(), 8);
    // The most recent courses are kept, in order, the oldest dropped.
    let kept: Vec<&str> = header(&e, "x-lti-course-roles")
        .unwrap()
        .split(';')
        .map(|c| c.split_once('=').unwrap().0)
        .collect();
    assert!(kept.len() >= 2 && kept.len() < 20, "{}", kept.len());
    let expected: Vec<String> = (25 - kept.len()..25)
        .map(|i| ltigate::proxy::headers::request::encode_value(&course(i)))
        .collect();
    assert_eq!(kept, expected);
    // Free-text fields are bounded (64 bytes of names, 128 of email).
    let given = header(&e, "x-lti-given-name").unwrap();
    assert!(
        given.starts_with("%C3%9Cnal%20") && given.len() <= 64 * 3,
        "{given}"
    );
    assert!(header(&e, "x-lti-email").unwrap().len() <= 128);
}

#[tokio::test]
async fn logout_clears_the_cookie() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = Gate::start(&up.url(), "").await;
    let cookie = session(&gate, &Launch::acme("u-1", "C-1"), None).await;
    let logout = |headers: &[(&str, &str)]| {
        let mut req = client()
            .post(gate.url("/lti/logout"))
            .header("cookie", &cookie);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        req.send()
    };
    let cleared = format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=None");

    let r = logout(&[("origin", PUBLIC_URL), ("sec-fetch-site", "same-origin")])
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(set_cookies(&r), std::slice::from_ref(&cleared));
    assert!(r.text().await.unwrap().contains("You are signed out"));
    let r = logout(&[("accept", "application/json")]).await.unwrap();
    assert_eq!(set_cookies(&r), [cleared]);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"status": "signed_out"})
    );

    // Another site cannot sign the learner out.
    let r = logout(&[
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    assert!(set_cookies(&r).is_empty());
    assert_eq!(rejections(&gate, "csrf").await, 1.0);
    let r = client().get(gate.url("/lti/logout")).send().await.unwrap();
    assert_eq!(r.status(), 405);

    // The browser dropped the cookie: the next request needs a launch.
    let r = client().get(gate.url("/courses/C-1")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(rejections(&gate, "missing").await, 1.0);
}
