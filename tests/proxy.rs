//! The reverse proxy over real sockets: what the upstream sees of a
//! learner's requests (identity headers, nothing forged, no ltigate
//! cookie), the browser protections, WebSockets, upstream failures and the
//! listener's limits.

mod proxykit;
mod support;

use std::time::{Duration, Instant};

use proxykit::{
    echo, echoed_headers, gate_with, identity_names, metric, raw, read_head, session, set_cookies,
    COOKIE,
};
use support::gate::{client, Gate, PUBLIC_URL};
use support::lms::Launch;
use support::upstream::{ws, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn setup() -> (Upstream, Gate) {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = Gate::start(&up.url(), "").await;
    (up, gate)
}

fn header<'a>(echo: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    echoed_headers(echo).get(name).and_then(|v| v.as_str())
}

#[tokio::test]
async fn follow_up_requests_carry_every_identity_header() {
    let (_up, gate) = setup().await;
    let l = Launch::acme("u-1", "Kurs ä;1=x")
        .set("lis_person_name_given", "Zoë")
        .set("lis_person_name_family", "Ünal-O'Brien, Jr")
        .set(
            "roles",
            "urn:lti:role:ims/lis/Learner,urn:lti:instrole:ims/lis/Student",
        );
    let cookie = session(&gate, &l, None).await;

    let e = echo(&gate, "/courses/1/page?x=1", Some(&cookie)).await;
    assert_eq!(e["path"], "/courses/1/page");
    assert_eq!(e["query"], "x=1");
    let expected = [
        ("x-lti-user", "acme:u-1"),
        ("x-lti-upstream-user", "up-1"),
        ("x-lti-email", "ada@example.org"),
        ("x-lti-given-name", "Zo%C3%AB"),
        ("x-lti-family-name", "%C3%9Cnal-O'Brien%2C%20Jr"),
        ("x-lti-course", "Kurs%20%C3%A4%3B1%3Dx"),
        ("x-lti-roles", "Learner,inst:Student"),
        (
            "x-lti-course-roles",
            "Kurs%20%C3%A4%3B1%3Dx=Learner,inst:Student",
        ),
        ("x-lti-consumer", "Acme"),
        ("x-lti-environment", "acme-env"),
        ("x-lti-version", "1.1"),
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "learn.example.test"),
    ];
    for (name, value) in expected {
        assert_eq!(header(&e, name), Some(value), "{name}");
    }
    assert_eq!(identity_names(&e).len(), 11, "{:?}", identity_names(&e));
    // The original Host passes (upstream.pass_host_header = true).
    assert_eq!(header(&e, "host"), Some(gate.public.to_string().as_str()));
    // ltigate's own cookie was the only one: no Cookie header upstream.
    assert_eq!(header(&e, "cookie"), None);
    let id = header(&e, "x-request-id").unwrap().to_string();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let again = echo(&gate, "/", Some(&cookie)).await;
    assert_ne!(header(&again, "x-request-id"), Some(id.as_str()));

    // A consumer without environment: no environment header.
    let beta = Launch::new("beta-key", "beta-new", "b-1", Some("C-1"))
        .without("lis_person_contact_email_primary");
    let cookie = session(&gate, &beta, None).await;
    let e = echo(&gate, "/", Some(&cookie)).await;
    assert_eq!(header(&e, "x-lti-user"), Some("beta:b-1"));
    assert_eq!(header(&e, "x-lti-consumer"), Some("Beta"));
    assert_eq!(header(&e, "x-lti-environment"), None);
    assert_eq!(header(&e, "x-lti-email"), None);
    assert_eq!(
        gate.metric("ltigate_proxy_requests_total{code=\"2xx\"}")
            .await,
        3.0
    );
}

/// Every identity and forwarding header a client may try, in the
/// spellings CGI-style upstreams merge.
const FORGED: &str = "X-LTI-User: admin\r\n\
    x-lti-roles: Instructor\r\n\
    X_LTI_User: admin\r\n\
    X-Lti-Upstream-User: 1\r\n\
    X-LTI-Course-Roles: C-1=Administrator\r\n\
    Forwarded: for=6.6.6.6;host=evil.example;proto=http\r\n\
    X-Forwarded-For: 6.6.6.6\r\n\
    X_Forwarded_For: 6.6.6.6\r\n\
    X-Forwarded-Host: evil.example\r\n\
    X-Forwarded-Proto: http\r\n\
    X-Real-IP: 6.6.6.6\r\n\
    True-Client-IP: 6.6.6.6\r\n\
    X-Original-URL: /admin\r\n\
    X-Request-Id: forged-id\r\n\
    Connection: keep-alive, X-Custom, Upgrade, HTTP2-Settings\r\n\
    X-Custom: hop\r\n\
    Upgrade: h2c\r\n\
    HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\
    TE: trailers\r\n\
    Keep-Alive: timeout=5\r\n\
    X-Kept: yes";

fn assert_nothing_forged(h: &http::HeaderMap) {
    for gone in [
        "x_lti_user",
        "forwarded",
        "x_forwarded_for",
        "x-real-ip",
        "true-client-ip",
        "x-original-url",
        "x-custom",
        "upgrade",
        "http2-settings",
        "te",
        "keep-alive",
    ] {
        assert!(!h.contains_key(gone), "{gone} reached the upstream: {h:?}");
    }
    for (name, value) in [
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-host", "learn.example.test"),
        ("x-forwarded-proto", "https"),
        ("x-kept", "yes"),
    ] {
        assert_eq!(h.get(name).unwrap(), value, "{name}");
    }
    assert_ne!(h.get("x-request-id").unwrap(), "forged-id");
    assert_ne!(
        h.get("connection").map(|v| v.as_bytes()),
        Some(&b"upgrade"[..])
    );
}

#[tokio::test]
async fn forged_identity_and_forwarding_headers_never_reach_the_upstream() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_with(&up.url(), &[("server", "public_paths", r#"["/static/"]"#)]).await;
    let cookie = session(&gate, &Launch::acme("u-2", "C-1"), None).await;

    // With a session: ltigate's values replace the forged ones.
    up.clear();
    let r = raw(
        gate.public,
        &format!(
            "GET /courses/C-1 HTTP/1.1\r\nHost: learn.example.test\r\nCookie: {cookie}\r\n{FORGED}"
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.head);
    let rec = &up.records()[0];
    assert_eq!(rec.path, "/courses/C-1");
    assert_nothing_forged(&rec.headers);
    let h = &rec.headers;
    assert_eq!(h["x-lti-user"], "acme:u-2");
    assert_eq!(h["x-lti-roles"], "Learner");
    assert_eq!(h["x-lti-upstream-user"], "up-1");
    assert_eq!(h["x-lti-course-roles"], "C-1=Learner");
    assert_eq!(h.get_all("x-lti-user").iter().count(), 1);

    // A public path without a session: no identity at all.
    up.clear();
    let r = raw(
        gate.public,
        &format!("GET /static/app.js HTTP/1.1\r\nHost: learn.example.test\r\n{FORGED}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.head);
    let rec = &up.records()[0];
    assert_eq!(rec.path, "/static/app.js");
    assert_nothing_forged(&rec.headers);
    let identity: Vec<_> = rec
        .headers
        .keys()
        .filter(|k| k.as_str().replace('_', "-").starts_with("x-lti-"))
        .collect();
    assert!(identity.is_empty(), "{identity:?}");

    // A public path with a session gets the identity too.
    up.clear();
    let r = raw(
        gate.public,
        &format!("GET /static/app.js HTTP/1.1\r\nHost: learn.example.test\r\nCookie: {cookie}\r\n{FORGED}"),
    )
    .await;
    assert_eq!(r.status, 200);
    // Public paths (cacheable assets) never get a refreshed cookie.
    assert_eq!(r.header("set-cookie"), None);
    let rec = &up.records()[0];
    assert_nothing_forged(&rec.headers);
    assert_eq!(rec.headers["x-lti-user"], "acme:u-2");
}

/// A renamed cookie, another identity prefix, another ID separator and
/// `Partitioned` are used everywhere the defaults would be.
#[tokio::test]
async fn cookie_name_header_prefix_and_id_separator_can_be_changed() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_with(
        &up.url(),
        &[
            ("session", "cookie_name", r#""__Host-acme_gate""#),
            ("session", "header_prefix", r#""X-Acme-""#),
            ("session", "partitioned", "true"),
            ("launch", "id_separator", r#""/""#),
        ],
    )
    .await;
    let r = proxykit::launch(&gate, &Launch::acme("u-p", "C-1"), None).await;
    assert_eq!(r.status(), 303);
    let cookies = set_cookies(&r);
    let set = cookies
        .iter()
        .find(|c| c.starts_with("__Host-acme_gate="))
        .unwrap_or_else(|| panic!("no renamed cookie in {cookies:?}"));
    assert!(set.contains("; Partitioned"), "{set}");
    assert!(
        !cookies.iter().any(|c| c.starts_with(COOKIE)),
        "{cookies:?}"
    );
    assert_eq!(up.api_calls()[0].path, "/api/users/acme%2Fu-p");
    let cookie = set.split(';').next().unwrap_or_default().to_string();

    up.clear();
    let r = raw(
        gate.public,
        &format!(
            "GET /courses/C-1 HTTP/1.1\r\nHost: learn.example.test\r\n\
             Cookie: theme=dark; {cookie}\r\nX-Acme-User: admin\r\nX_Acme_Roles: Administrator\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.head);
    let h = &up.records()[0].headers;
    assert_eq!(h["x-acme-user"], "acme/u-p");
    assert_eq!(h["x-acme-roles"], "Learner");
    assert_eq!(h.get_all("x-acme-user").iter().count(), 1);
    assert!(!h.contains_key("x_acme_roles"));
    assert!(!h.keys().any(|k| k.as_str().starts_with("x-lti-")), "{h:?}");
    assert_eq!(h["cookie"], "theme=dark");
}

#[tokio::test]
async fn ltigate_cookie_never_reaches_the_upstream() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_with(&up.url(), &[("server", "public_paths", r#"["/static/"]"#)]).await;
    let cookie = session(&gate, &Launch::acme("u-3", "C-1"), None).await;
    let e = echo(&gate, "/x", Some(&format!("a=1; {cookie}; b=2"))).await;
    assert_eq!(header(&e, "cookie"), Some("a=1; b=2"));
    assert_eq!(header(&e, "x-lti-user"), Some("acme:u-3"));
    // On a public path, and with an invalid value, as well.
    let e = echo(&gate, "/static/x", Some(&format!("{COOKIE}=forged; c=3"))).await;
    assert_eq!(header(&e, "cookie"), Some("c=3"));
    assert!(identity_names(&e).is_empty());
    // Nothing recorded upstream ever held it.
    let value = cookie.split_once('=').unwrap().1;
    for rec in up.records() {
        for v in rec.headers.values() {
            let v = String::from_utf8_lossy(v.as_bytes());
            assert!(!v.contains(value) && !v.contains(COOKIE), "{rec:?}");
        }
    }
}

#[tokio::test]
async fn public_paths_need_no_session_but_dot_segments_do() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_with(
        &up.url(),
        &[("server", "public_paths", r#"["/static/", "/favicon.ico"]"#)],
    )
    .await;
    assert_eq!(
        echo(&gate, "/static/app.js", None).await["path"],
        "/static/app.js"
    );
    assert_eq!(
        echo(&gate, "/favicon.ico", None).await["path"],
        "/favicon.ico"
    );
    for path in [
        "/static/../courses/C-1",
        "/static/%2e%2e/courses/C-1",
        "/static/..%2fcourses/C-1",
        "/courses/C-1",
    ] {
        let r = raw(gate.public, &format!("GET {path} HTTP/1.1\r\nHost: x")).await;
        assert_eq!(r.status, 401, "{path}");
    }
    assert_eq!(up.records().len(), 2);
}

#[tokio::test]
async fn course_path_picks_the_current_course() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_with(
        &up.url(),
        &[("upstream", "course_path", r#""/courses/{course}/""#)],
    )
    .await;
    let cookie = session(&gate, &Launch::acme("u-4", "C-1"), None).await;
    let l = Launch::acme("u-4", "C 2").set("roles", "Instructor,urn:lti:instrole:ims/lis/Faculty");
    let cookie = session(&gate, &l, Some(&cookie)).await;

    let all = "C-1=Learner;C%202=Instructor,inst:Faculty";
    let e = echo(&gate, "/courses/C-1/unit/3", Some(&cookie)).await;
    assert_eq!(header(&e, "x-lti-course"), Some("C-1"));
    assert_eq!(header(&e, "x-lti-roles"), Some("Learner"));
    assert_eq!(header(&e, "x-lti-course-roles"), Some(all));
    let e = echo(&gate, "/courses/C%202/", Some(&cookie)).await;
    assert_eq!(header(&e, "x-lti-course"), Some("C%202"));
    assert_eq!(header(&e, "x-lti-roles"), Some("Instructor,inst:Faculty"));
    // Elsewhere: the most recently launched course.
    let e = echo(&gate, "/dashboard", Some(&cookie)).await;
    assert_eq!(header(&e, "x-lti-course"), Some("C%202"));
    assert_eq!(header(&e, "x-lti-roles"), Some("Instructor,inst:Faculty"));
    // A course the learner did not launch: named, without roles.
    let e = echo(&gate, "/courses/C-9/", Some(&cookie)).await;
    assert_eq!(header(&e, "x-lti-course"), Some("C-9"));
    assert_eq!(header(&e, "x-lti-roles"), None);
    assert_eq!(header(&e, "x-lti-course-roles"), Some(all));
}

#[tokio::test]
async fn unsafe_cross_site_requests_are_refused() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_with(&up.url(), &[("server", "public_paths", r#"["/static/"]"#)]).await;
    let cookie = session(&gate, &Launch::acme("u-5", "C-1"), None).await;
    up.clear();
    let send = |method: reqwest::Method, path: &str, headers: &[(&str, &str)]| {
        let mut req = client()
            .request(method, gate.url(path))
            .header("cookie", &cookie)
            .body("answer=42");
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        req.send()
    };
    let evil = "https://evil.example";
    for (method, headers) in [
        (
            reqwest::Method::POST,
            vec![("sec-fetch-site", "cross-site")],
        ),
        (reqwest::Method::POST, vec![("origin", evil)]),
        (reqwest::Method::POST, vec![("origin", "null")]),
        (reqwest::Method::PUT, vec![("origin", evil)]),
        (
            reqwest::Method::DELETE,
            vec![("sec-fetch-site", "cross-site"), ("origin", evil)],
        ),
        (
            reqwest::Method::PATCH,
            vec![("origin", "https://learn.example.test.evil.example")],
        ),
    ] {
        let r = send(method.clone(), "/courses/C-1/answer", &headers)
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{method} {headers:?}");
    }
    let r = send(reqwest::Method::POST, "/static/form", &[("origin", evil)])
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "public paths are guarded too");
    let r = send(
        reqwest::Method::POST,
        "/courses/C-1/answer",
        &[("origin", evil), ("accept", "application/json")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "csrf"
    );
    assert!(up.records().is_empty(), "{:?}", up.records());
    assert_eq!(
        metric(&gate, "ltigate_session_rejections_total{reason=\"csrf\"}").await,
        8.0
    );

    // Same-origin and server-side POSTs are proxied, body and all.
    let r = send(
        reqwest::Method::POST,
        "/courses/C-1/answer",
        &[("origin", PUBLIC_URL), ("sec-fetch-site", "same-origin")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["method"], "POST");
    assert_eq!(e["body_len"], 9);
    assert_eq!(header(&e, "x-lti-user"), Some("acme:u-5"));
    let r = send(reqwest::Method::DELETE, "/courses/C-1/answer", &[])
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Safe methods are not checked.
    let r = send(
        reqwest::Method::GET,
        "/courses/C-1",
        &[("sec-fetch-site", "cross-site")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.records().len(), 3);

    // session.csrf = false turns the guard off.
    let gate = gate_with(&up.url(), &[("session", "csrf", "false")]).await;
    let cookie = session(&gate, &Launch::acme("u-5", "C-1"), None).await;
    let r = client()
        .post(gate.url("/x"))
        .header("cookie", &cookie)
        .header("origin", evil)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn upstream_set_cookie_headers_are_rewritten_for_the_iframe() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = Gate::start(&up.url(), "").await;
    let cookie = session(&gate, &Launch::acme("u-6", "C-1"), None).await;
    let get = |gate: &Gate, cookie: &str| {
        client()
            .get(gate.url("/set-cookie"))
            .header("cookie", cookie)
            .send()
    };
    let r = get(&gate, &cookie).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        set_cookies(&r),
        [
            "sid=abc; Path=/; HttpOnly; SameSite=None; Secure",
            "pref=dark; Max-Age=60; SameSite=None; Secure",
        ]
    );

    let gate = gate_with(&up.url(), &[("session", "partitioned", "true")]).await;
    let cookie = session(&gate, &Launch::acme("u-6", "C-1"), None).await;
    let r = get(&gate, &cookie).await.unwrap();
    assert_eq!(
        set_cookies(&r),
        [
            "sid=abc; Path=/; HttpOnly; SameSite=None; Secure; Partitioned",
            "pref=dark; Max-Age=60; SameSite=None; Secure; Partitioned",
        ]
    );

    // Without rewriting the upstream's cookies pass as they are — except
    // one that would overwrite ltigate's.
    let gate = gate_with(
        &up.url(),
        &[("session", "rewrite_upstream_cookies", "false")],
    )
    .await;
    let cookie = session(&gate, &Launch::acme("u-6", "C-1"), None).await;
    let r = get(&gate, &cookie).await.unwrap();
    assert_eq!(
        set_cookies(&r),
        [
            "sid=abc; Path=/; SameSite=Lax; HttpOnly",
            "pref=dark; Max-Age=60; Secure",
        ]
    );
}

#[tokio::test]
async fn upstream_redirects_to_its_internal_origin_go_to_the_public_origin() {
    let (_up, gate) = setup().await;
    let cookie = session(&gate, &Launch::acme("u-7", "C-1"), None).await;
    let redirect = |to: &str| {
        let url = gate.url(&format!(
            "/redirect?to={}",
            ltigate::lti::encode::percent_encode(to.as_bytes())
        ));
        let cookie = cookie.clone();
        async move {
            let r = client()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 302);
            proxykit::location(&r)
        }
    };
    assert_eq!(
        redirect("{upstream}/courses/C-1?x=1#top").await,
        "https://learn.example.test/courses/C-1?x=1#top"
    );
    assert_eq!(redirect("{upstream}").await, "https://learn.example.test/");
    assert_eq!(redirect("/courses/C-1").await, "/courses/C-1");
    assert_eq!(
        redirect("https://lms.example.org/grades").await,
        "https://lms.example.org/grades"
    );
}

#[tokio::test]
async fn frame_ancestors_go_on_html_responses_only() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_with(
        &up.url(),
        &[(
            "server",
            "frame_ancestors",
            r#"["https://lms.example.org"]"#,
        )],
    )
    .await;
    let cookie = session(&gate, &Launch::acme("u-8", "C-1"), None).await;
    let csp = |path: &'static str| {
        let req = client().get(gate.url(path)).header("cookie", &cookie);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.headers()
                .get("content-security-policy")
                .map(|v| v.to_str().unwrap().to_string())
        }
    };
    assert_eq!(
        csp("/html").await.as_deref(),
        Some("frame-ancestors 'self' https://lms.example.org")
    );
    assert_eq!(csp("/json").await, None);

    let (_up, gate) = setup().await;
    let cookie = session(&gate, &Launch::acme("u-8", "C-1"), None).await;
    let r = client()
        .get(gate.url("/html"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("content-security-policy").is_none());
}

#[tokio::test]
async fn upstream_down_is_a_502_page() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let up = Upstream::start(Some("upstream-token")).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = proxykit::set_key(
        &support::gate::base_config(&up.url(), dir.path()),
        "upstream",
        "url",
        &format!("\"http://{addr}\""),
    );
    let gate = Gate::start_with(&toml, dir).await;
    let cookie = session(&gate, &Launch::acme("u-9", "C-1"), None).await;
    let r = client()
        .get(gate.url("/courses/C-1"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("cannot be reached"));
    let r = client()
        .get(gate.url("/api/progress"))
        .header("cookie", &cookie)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["error"], "upstream_unreachable");
    assert_eq!(
        metric(&gate, "ltigate_proxy_requests_total{code=\"5xx\"}").await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_upstream_is_a_504_within_the_timeout_and_starves_no_one() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_with(&up.url(), &[("upstream", "timeout", r#""800ms""#)]).await;
    let cookie = session(&gate, &Launch::acme("u-10", "C-1"), None).await;
    let started = Instant::now();
    let hang = {
        let req = client().get(gate.url("/hang")).header("cookie", &cookie);
        tokio::spawn(async move { req.send().await.unwrap() })
    };
    // Meanwhile other requests are answered at once, well before the
    // hanging one's 800 ms timeout.
    for _ in 0..5 {
        let t = Instant::now();
        echo(&gate, "/courses/C-1", Some(&cookie)).await;
        assert!(
            t.elapsed() < Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
    }
    let r = hang.await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(r.status(), 504);
    assert!(r.text().await.unwrap().contains("did not answer in time"));
    assert!(
        elapsed >= Duration::from_millis(800) && elapsed < Duration::from_millis(1500),
        "{elapsed:?}"
    );
    assert_eq!(
        metric(&gate, "ltigate_proxy_requests_total{code=\"5xx\"}").await,
        1.0
    );
    assert_eq!(
        metric(&gate, "ltigate_proxy_request_duration_seconds_count").await,
        6.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_not_cut_off_by_the_timeout() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_with(&up.url(), &[("upstream", "timeout", r#""500ms""#)]).await;
    let cookie = session(&gate, &Launch::acme("u-11", "C-1"), None).await;
    // 8 chunks 200 ms apart: 1.6 s in all, every gap under the timeout.
    let mut stream = tokio::net::TcpStream::connect(gate.public).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Length: 8192\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stream.write_all(&[b'a'; 1024]).await.unwrap();
    }
    let (status, _) = read_head(&mut stream).await;
    assert_eq!(status, 200);
    assert_eq!(*up.upload_received.borrow(), 8192);

    // A client that stops sending halfway gets a 408 (its own doing, not
    // the platform's) once the timeout has passed since its last byte.
    let mut stream = tokio::net::TcpStream::connect(gate.public).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Length: 8192\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'a'; 1024]).await.unwrap();
    let t = Instant::now();
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), read_head(&mut stream))
        .await
        .unwrap();
    assert_eq!(status, 408);
    assert!(
        t.elapsed() >= Duration::from_millis(450) && t.elapsed() < Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        metric(&gate, "ltigate_proxy_requests_total{code=\"4xx\"}").await,
        1.0
    );
}

/// Opens a WebSocket through ltigate; the handshake response.
async fn ws_handshake(
    gate: &Gate,
    cookie: Option<&str>,
    origin: &str,
) -> (tokio::net::TcpStream, u16, String) {
    let mut stream = tokio::net::TcpStream::connect(gate.public).await.unwrap();
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: learn.example.test\r\nConnection: keep-alive, Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Origin: {origin}\r\n{cookie}X-LTI-User: admin\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let (status, head) = read_head(&mut stream).await;
    (stream, status, head)
}

#[tokio::test]
async fn websocket_echo_works_through_the_proxy() {
    let (up, gate) = setup().await;
    let cookie = session(&gate, &Launch::acme("u-12", "C-1"), None).await;
    up.clear();
    let (mut stream, status, head) = ws_handshake(&gate, Some(&cookie), PUBLIC_URL).await;
    assert_eq!(status, 101, "{head}");
    let head_lower = head.to_ascii_lowercase();
    assert!(head_lower.contains("upgrade: websocket"), "{head}");
    // The RFC 6455 example key and its accept value.
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");

    for msg in ["hello ltigate", "ünïcode ✓", &"x".repeat(1000)] {
        ws::write_frame(&mut stream, 1, msg.as_bytes(), Some([1, 2, 3, 4]))
            .await
            .unwrap();
        let (opcode, payload) =
            tokio::time::timeout(Duration::from_secs(5), ws::read_frame(&mut stream))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(opcode, 1);
        assert_eq!(String::from_utf8(payload).unwrap(), msg);
    }
    ws::write_frame(&mut stream, 8, &[3, 232], Some([9, 9, 9, 9]))
        .await
        .unwrap();
    let (opcode, _) = ws::read_frame(&mut stream).await.unwrap();
    assert_eq!(opcode, 8);

    // The upstream saw the handshake with the learner's identity.
    let rec = &up.records()[0];
    assert_eq!(rec.path, "/ws");
    assert_eq!(rec.headers["x-lti-user"], "acme:u-12");
    assert_eq!(rec.headers["upgrade"], "websocket");
    assert_eq!(rec.headers["connection"], "upgrade");
    assert!(rec.headers.get("cookie").is_none());

    // Another site's page cannot open it with the learner's cookie.
    let (_, status, _) = ws_handshake(&gate, Some(&cookie), "https://evil.example").await;
    assert_eq!(status, 403);
    // Nor can anyone without a session.
    let (_, status, _) = ws_handshake(&gate, None, PUBLIC_URL).await;
    assert_eq!(status, 401);
    assert_eq!(up.records().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_max_connections_get_a_fast_503() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_with(
        &up.url(),
        &[
            ("server", "max_connections", "2"),
            ("server", "public_paths", r#"["/slow"]"#),
        ],
    )
    .await;
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let req = client().get(gate.url("/slow?ms=1000"));
            tokio::spawn(async move { req.send().await.unwrap().status() })
        })
        .collect();
    while up.records().len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = Instant::now();
    let r = client().get(gate.url("/slow?ms=0")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
    let r = client().get(gate.url("/slow?ms=0")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn clients_that_send_their_headers_too_slowly_are_cut_off() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = gate_with(
        &up.url(),
        &[("server", "header_read_timeout", r#""400ms""#)],
    )
    .await;
    // Half a request line and then nothing; and nothing at all.
    for first in [&b"GET /courses/C-1 HTTP/1.1\r\nHost: x\r\n"[..], b""] {
        let mut stream = tokio::net::TcpStream::connect(gate.public).await.unwrap();
        stream.write_all(first).await.unwrap();
        let t = Instant::now();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut buf))
            .await
            .expect("closed by ltigate")
            .ok();
        let elapsed = t.elapsed();
        assert!(
            elapsed >= Duration::from_millis(350) && elapsed < Duration::from_millis(1500),
            "{elapsed:?}"
        );
        // No request reached the upstream.
        assert!(
            buf.is_empty() || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&buf)
        );
    }
    assert!(up.records().iter().all(|r| r.path.starts_with("/api/")));
    // A prompt client is served.
    let r = raw(gate.public, "GET /x HTTP/1.1\r\nHost: x").await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn http2_clients_are_proxied_to_the_http1_upstream() {
    let (up, gate) = setup().await;
    let cookie = session(&gate, &Launch::acme("u-13", "C-1"), None).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    up.clear();
    let r = h2
        .get(gate.url("/courses/C-1?x=1"))
        .header("cookie", "a=1")
        .header("cookie", &cookie)
        .header("cookie", "b=2")
        .header("x-lti-user", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let rec = &up.records()[0];
    assert_eq!(rec.path, "/courses/C-1");
    // The :authority becomes Host; the cookie fields become one header.
    assert_eq!(rec.headers["host"], gate.public.to_string());
    assert_eq!(
        rec.headers.get_all("cookie").iter().collect::<Vec<_>>(),
        ["a=1; b=2"]
    );
    assert_eq!(rec.headers["x-lti-user"], "acme:u-13");
    assert_eq!(rec.headers.get_all("x-lti-user").iter().count(), 1);
}
