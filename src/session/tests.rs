//! Unit tests of the session module: model, sealing, cookie, gate, CSRF.

use http::header::HeaderValue;
use http::Method;

use super::cookie::cookie_value;
use super::*;
use crate::lti::LtiVersion;
use crate::secret::Secret;
#[test]
fn the_protocol_rides_in_the_cookie_and_1_1_costs_nothing() {
    let mut s = Session::new_for_test("acme:1");
    let v11 = serde_json::to_string(&s).unwrap();
    assert!(!v11.contains("\"v\""), "{v11}");
    // A cookie from before the field opens as an LTI 1.1 session.
    let old: Session = serde_json::from_str(&v11).unwrap();
    assert_eq!(old.lti_version, LtiVersion::V1p1);
    s.lti_version = LtiVersion::V1p3;
    let v13 = serde_json::to_string(&s).unwrap();
    assert!(v13.contains("\"v\":\"1.3\""), "{v13}");
    assert_eq!(serde_json::from_str::<Session>(&v13).unwrap(), s);
}

#[test]
fn every_rejection_is_a_pre_created_metric_label() {
    let labels: Vec<_> = SessionRejection::ALL.iter().map(|r| r.label()).collect();
    assert_eq!(labels, crate::metrics::SESSION_REJECTIONS);
}

fn key(b: u8) -> Secret {
    Secret::new([b; 32])
}

fn session() -> Session {
    let mut s = Session::new_for_test("acme:42");
    s.given_name = Some("Zoë".into());
    s.add_course("C-1", &["Learner".into()], 20);
    s.issued_at = 1_000;
    s.last_seen = 1_000;
    s
}

#[test]
fn seal_open_round_trip_and_tamper() {
    let sealer = Sealer::new(&key(1), &[]);
    let v = sealer.seal(&session()).unwrap();
    assert_eq!(sealer.open(&v).unwrap(), session());
    let mut bytes = v.into_bytes();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    assert_eq!(sealer.open(&tampered), Err(SessionRejection::Invalid));
    assert_eq!(sealer.open("garbage"), Err(SessionRejection::Invalid));
    assert_eq!(sealer.open(""), Err(SessionRejection::Invalid));
}

#[test]
fn rotation_opens_old_cookies_and_other_deployments_fail() {
    let old = Sealer::new(&key(1), &[]);
    let v = old.seal(&session()).unwrap();
    let rotated = Sealer::new(&key(2), &[key(1)]);
    assert!(rotated.open(&v).is_ok());
    let other = Sealer::new(&key(3), &[]);
    assert_eq!(other.open(&v), Err(SessionRejection::Invalid));
}

#[test]
fn lifetime_rules() {
    let l = Lifetime {
        ttl: 100,
        idle_ttl: 50,
        not_before: None,
    };
    let s = session();
    assert!(l.check(&s, 1_010).is_ok());
    assert_eq!(l.check(&s, 1_060), Err(SessionRejection::Idle));
    let mut t = s.clone();
    t.last_seen = 1_090;
    assert_eq!(l.check(&t, 1_100), Err(SessionRejection::Expired));
    let r = Lifetime {
        not_before: Some(1_001),
        ..l
    };
    assert_eq!(r.check(&s, 1_010), Err(SessionRejection::Revoked));
}

#[test]
fn courses_merge_most_recent_last_and_capped() {
    let mut s = session();
    s.add_course("C-2", &["Instructor".into()], 2);
    s.add_course("C-1", &["Learner".into()], 2);
    assert_eq!(
        s.courses.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["C-2", "C-1"]
    );
    s.add_course("C-3", &[], 2);
    assert_eq!(
        s.courses.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["C-1", "C-3"]
    );
}

#[test]
fn cookie_stays_under_4kb_at_the_limits() {
    let sealer = Sealer::new(&key(1), &[]);
    let mut s = session();
    s.given_name = Some("é".repeat(500));
    s.family_name = Some("x".repeat(500));
    s.email = Some("y".repeat(500));
    s.upstream_id = Some("z".repeat(500));
    s.user_id = "u".repeat(128);
    s.external_id = format!("acme:{}", "u".repeat(128));
    let roles: Vec<String> = (0..20)
        .map(|i| format!("urn:lti:role:custom/Role{i:02}"))
        .collect();
    for i in 0..50 {
        s.add_course(&format!("{i:0>64}"), &roles, 50);
    }
    let v = sealer.seal(&s).unwrap();
    assert!(v.len() <= MAX_COOKIE_VALUE, "{}", v.len());
    let opened = sealer.open(&v).unwrap();
    // The most recent course is always kept.
    assert_eq!(opened.latest_course().unwrap().id, format!("{:0>64}", 49));
    assert!(opened.given_name.unwrap().len() <= 64);
    // A whole Set-Cookie header stays below 4096 bytes.
    let header = format!(
        "__Host-ltigate_session={v}; Path=/; Max-Age=28800; HttpOnly; Secure; SameSite=None; Partitioned"
    );
    assert!(header.len() < 4096);
}

#[test]
fn oversized_names_are_dropped_before_the_cookie_outgrows_4kb() {
    let sealer = Sealer::new(&key(1), &[]);
    let mut s = session();
    // Control characters would grow sixfold as JSON escapes.
    s.given_name = Some("\u{1}".repeat(64) + "Ada");
    s.family_name = Some("\"".repeat(64));
    s.email = Some("\\".repeat(128));
    s.tenant = "c".repeat(2400);
    let v = sealer.seal(&s).unwrap();
    assert!(v.len() <= MAX_COOKIE_VALUE, "{}", v.len());
    let opened = sealer.open(&v).unwrap();
    assert_eq!(opened.given_name, None);
    assert_eq!(opened.latest_course().unwrap().id, "C-1");

    s.tenant = "c".repeat(4000);
    assert!(sealer.seal(&s).is_err());

    let mut t = session();
    t.given_name = Some("A\u{0}d\u{7f}a".into());
    let opened = sealer.open(&sealer.seal(&t).unwrap()).unwrap();
    assert_eq!(opened.given_name.as_deref(), Some("Ada"));
}

#[test]
fn rejection_counters_follow_the_label_order() {
    for (i, r) in SessionRejection::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i, "{}", r.label());
    }
}

#[test]
fn public_paths_never_match_dot_segments_or_encoded_slashes() {
    let public = vec!["/static/".to_string(), "/favicon.ico".to_string()];
    assert!(is_public_path(&public, "/static/app.js"));
    assert!(is_public_path(&public, "/static/a..b/x.js"));
    assert!(is_public_path(&public, "/favicon.ico"));
    assert!(!is_public_path(&public, "/courses/C-1"));
    assert!(!is_public_path(&public, "/static/../admin"));
    assert!(!is_public_path(&public, "/static/%2e%2E/admin"));
    assert!(!is_public_path(&public, "/static/.%2e/admin"));
    assert!(!is_public_path(&public, "/static/./x"));
    assert!(!is_public_path(&public, "/static/..%2Fadmin"));
    assert!(!is_public_path(&public, "/static/..%5cadmin"));
    assert!(!is_public_path(&public, "/static/..\\admin"));
    assert!(!is_public_path(&[], "/static/app.js"));
}

#[test]
fn cross_site_rules() {
    let origin = "https://learn.example.com";
    let h = |pairs: &[(&'static str, &'static str)]| {
        let mut m = http::HeaderMap::new();
        for (n, v) in pairs {
            m.insert(*n, HeaderValue::from_static(v));
        }
        m
    };
    let post = Method::POST;
    assert!(is_cross_site(
        &post,
        &h(&[("sec-fetch-site", "cross-site")]),
        origin
    ));
    assert!(is_cross_site(
        &post,
        &h(&[("origin", "https://evil.example")]),
        origin
    ));
    assert!(is_cross_site(&post, &h(&[("origin", "null")]), origin));
    assert!(!is_cross_site(&post, &h(&[("origin", origin)]), origin));
    assert!(!is_cross_site(
        &post,
        &h(&[("sec-fetch-site", "same-origin")]),
        origin
    ));
    // A server-to-server POST carries neither header.
    assert!(!is_cross_site(&post, &h(&[]), origin));
    assert!(is_cross_site(
        &Method::DELETE,
        &h(&[("origin", "https://evil.example")]),
        origin
    ));
    assert!(is_cross_site(
        &Method::from_bytes(b"PROPPATCH").unwrap(),
        &h(&[("origin", "https://evil.example")]),
        origin
    ));
    // Safe methods pass, except a WebSocket handshake from elsewhere.
    assert!(!is_cross_site(
        &Method::GET,
        &h(&[("sec-fetch-site", "cross-site")]),
        origin
    ));
    let ws = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("origin", "https://evil.example"),
    ];
    assert!(is_cross_site(&Method::GET, &h(&ws), origin));
    let ws = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("origin", origin),
    ];
    assert!(!is_cross_site(&Method::GET, &h(&ws), origin));
}

#[test]
fn finds_cookie() {
    let h: Vec<&[u8]> = vec![b"a=1; __Host-s=abc; b=2"];
    assert_eq!(cookie_value(h.into_iter(), "__Host-s"), Some("abc"));
    // Another cookie's bytes outside UTF-8 do not hide ours.
    let h: Vec<&[u8]> = vec![b"pref=Zo\xEB; __Host-s=\"abc\""];
    assert_eq!(cookie_value(h.into_iter(), "__Host-s"), Some("abc"));
    let h: Vec<&[u8]> = vec![b"a", b"__Host-s=\xFF"];
    assert_eq!(cookie_value(h.into_iter(), "__Host-s"), None);
    for (headers, found) in [
        (vec![&b";;a;  __Host-s = v ;"[..]], Some("v")),
        (vec![b"x__Host-s=1; __Host-s="], Some("")),
        (vec![b"a=1", b"b=2;__Host-s=two"], Some("two")),
        (vec![b"", b";", b"__Host-s"], None),
    ] {
        assert_eq!(cookie_value(headers.into_iter(), "__Host-s"), found);
    }
}

/// The pairs as RFC 6265 splits them, one byte at a time.
fn cookie_value_by_bytes<'a>(headers: &[&'a [u8]], name: &str) -> Option<&'a str> {
    for h in headers {
        for pair in h.split(|b| *b == b';') {
            let Some(eq) = pair.iter().position(|b| *b == b'=') else {
                continue;
            };
            let (n, v) = pair.split_at(eq);
            if n.trim_ascii() == name.as_bytes() {
                let v = std::str::from_utf8(&v[1..]).ok()?;
                return Some(v.trim().trim_matches('"'));
            }
        }
    }
    None
}

proptest::proptest! {
    #[test]
    fn cookie_value_finds_what_a_byte_by_byte_split_finds(
        headers in proptest::collection::vec(
            proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(b"; =\"s\xff".to_vec()),
                    proptest::strategy::Just(b'a'),
                ],
                0..40,
            ),
            0..4,
        ),
    ) {
        let headers: Vec<&[u8]> = headers.iter().map(Vec::as_slice).collect();
        proptest::prop_assert_eq!(
            cookie_value(headers.iter().copied(), "s"),
            cookie_value_by_bytes(&headers, "s")
        );
    }
}
