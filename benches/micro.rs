//! Micro-benchmarks of the hot paths: launch signature verification, session
//! seal/open, the header policy (with and without the signed identity
//! assertion), minting one assertion, and POX build/parse.
//!
//! `cargo bench --bench micro`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue};

use ltigate::lti::oauth1::{self, LaunchSigner, SignatureMethod, VerifyRequest};
use ltigate::lti::outcomes::{build_request, parse_response, Operation};
use ltigate::proxy::headers::{HeaderPolicy, RequestContext};
use ltigate::secret::Secret;
use ltigate::session::assertion::{AssertionKeys, Assertions, CurrentCourse};
use ltigate::session::{Sealer, Session};

/// A realistic 25-parameter Moodle-style launch (oauth_* included).
fn launch_params() -> Vec<(String, String)> {
    let base: Vec<(&str, &str)> = vec![
        ("lti_message_type", "basic-lti-launch-request"),
        ("lti_version", "LTI-1p0"),
        ("resource_link_id", "429785226"),
        ("resource_link_title", "Final assessment"),
        ("user_id", "292832126"),
        ("roles", "Learner"),
        ("lis_person_name_given", "Zoë"),
        ("lis_person_name_family", "van Dijk"),
        ("lis_person_name_full", "Zoë van Dijk"),
        ("lis_person_contact_email_primary", "zoe@example.org"),
        ("context_id", "456434513"),
        ("context_title", "Design of Personal Environments"),
        ("context_label", "SI182"),
        ("launch_presentation_locale", "en-US"),
        ("launch_presentation_return_url", "https://lms.example.org/mod/lti/return.php?course=2"),
        ("lis_outcome_service_url", "https://lms.example.org/mod/lti/service.php"),
        ("lis_result_sourcedid", "{\"data\":{\"instanceid\":\"2\",\"userid\":\"3\",\"typeid\":\"1\",\"launchid\":771},\"hash\":\"abc\"}"),
        ("tool_consumer_info_product_family_code", "moodle"),
        ("custom_course", "C-1"),
    ];
    let params: Vec<(String, String)> = base
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    oauth1::sign_launch(
        &LaunchSigner {
            url: "https://learn.example.com/lti/launch",
            consumer_key: "acme-key",
            consumer_secret: b"acme-secret",
            method: SignatureMethod::HmacSha1,
            nonce: "7ee33f6dc94117e792ff529898ce3953",
            timestamp: 1_700_000_000,
        },
        &params,
    )
    .expect("sign")
}

fn bench_signature(c: &mut Criterion) {
    let body = launch_params();
    let signature = body
        .iter()
        .find(|(n, _)| n == "oauth_signature")
        .map(|(_, v)| v.clone())
        .expect("signature");
    let secrets: [&[u8]; 1] = [b"acme-secret"];
    c.bench_function("verify launch signature (25 params, HMAC-SHA1)", |b| {
        b.iter(|| {
            let req = VerifyRequest {
                http_method: "POST",
                base_uri: "https://learn.example.com/lti/launch",
                query: &[],
                body: black_box(&body),
                method: SignatureMethod::HmacSha1,
                signature: &signature,
            };
            assert_eq!(oauth1::verify(&req, &secrets), Some(0));
        })
    });
}

fn bench_session(c: &mut Criterion) {
    let sealer = Sealer::new(&Secret::new([7u8; 32]), &[]);
    let mut s = Session::new_for_test("acme:292832126");
    s.given_name = Some("Zoë".into());
    s.family_name = Some("van Dijk".into());
    s.email = Some("zoe@example.org".into());
    for i in 0..5 {
        s.add_course(&format!("C-{i}"), &["Learner".into()], 20);
    }
    let cookie = sealer.seal(&s).expect("seal");
    c.bench_function("seal session", |b| b.iter(|| sealer.seal(black_box(&s))));
    c.bench_function("open session", |b| {
        b.iter(|| sealer.open(black_box(&cookie)))
    });
}

fn bench_headers(c: &mut Criterion) {
    let policy = HeaderPolicy::new(
        "X-LTI-",
        false,
        "__Host-ltigate_session",
        "https",
        "learn.example.com",
        "127.0.0.1:3000",
        true,
    )
    .expect("policy");
    let mut template = HeaderMap::new();
    for (n, v) in [
        ("host", "learn.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-US,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        ("cookie", "a=1; __Host-ltigate_session=abcdef; b=2"),
        ("referer", "https://lms.example.org/course/view.php?id=2"),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "iframe"),
        ("sec-ch-ua", "\"Chromium\";v=\"124\""),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", "\"Linux\""),
        ("upgrade-insecure-requests", "1"),
        ("cache-control", "max-age=0"),
        ("connection", "keep-alive"),
        ("x-lti-user", "forged"),
        ("x-forwarded-for", "1.2.3.4"),
        ("dnt", "1"),
        ("priority", "u=0, i"),
    ] {
        template.append(HeaderName::from_static(n), HeaderValue::from_static(v));
    }
    let mut s = Session::new_for_test("acme:292832126");
    s.given_name = Some("Zoë".into());
    s.add_course("C-1", &["Learner".into()], 20);
    // Built once per opened session in the proxy; per request only inject.
    let identity = policy.identity(&s);
    let peer = std::net::IpAddr::from([127, 0, 0, 1]);
    let peer_text = ltigate::proxy::headers::peer_text(peer);
    let request_id = http::HeaderValue::from_static("req-1");
    let with_assertion = policy
        .clone()
        .with_assertion(Some(std::sync::Arc::new(assertion_minter())));
    let learner = bench_learner();
    let signed_identity = with_assertion.identity(&learner);
    c.bench_function(
        "header policy (20 headers, identity assertion reused)",
        |b| {
            b.iter(|| {
                let mut h = template.clone();
                with_assertion.strip(&mut h);
                with_assertion.inject(
                    &mut h,
                    &RequestContext {
                        peer,
                        peer_text: &peer_text,
                        identity: Some(&signed_identity),
                        session: Some(&learner),
                        now: 1_700_000_010,
                        path_course: None,
                        request_id: Some(&request_id),
                    },
                );
                assert!(h.contains_key("x-lti-assertion"));
                h
            })
        },
    );
    c.bench_function("header policy (20 headers)", |b| {
        b.iter(|| {
            let mut h = template.clone();
            policy.strip(&mut h);
            policy.inject(
                &mut h,
                &RequestContext {
                    peer,
                    peer_text: &peer_text,
                    identity: Some(&identity),
                    session: Some(&s),
                    now: 1_700_000_000,
                    path_course: None,
                    request_id: Some(&request_id),
                },
            );
            h
        })
    });
}

/// The assertion's minter of a configuration with the assertion on and the
/// test key (its settings validated as at start-up).
fn assertion_minter() -> Assertions {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ltigate.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
public_url = "https://learn.example.com"
[session]
secret = "bench-session-secret-0123456789abcdef"
assertion = true
assertion_audience = "https://platform.internal/acme"
assertion_key_file = "{}/tests/vectors/assertion-key-p256.pem"
[store]
path = "{}/ltigate.db"
[[consumers]]
name = "Acme"
key = "acme-key"
secret = "acme-secret"
lms_id = "acme"
"#,
            env!("CARGO_MANIFEST_DIR"),
            dir.path().display()
        ),
    )
    .expect("config");
    let raw = ltigate::config::load_raw_from(Some(&path), Vec::new()).expect("raw");
    let settings = ltigate::config::validate(&raw).expect("settings");
    let keys = AssertionKeys::load(&settings).expect("keys").expect("on");
    Assertions::new(&settings, std::sync::Arc::new(keys)).expect("minter")
}

/// A learner as the benches' launches make one.
fn bench_learner() -> Session {
    let mut s = Session::new_for_test("acme:292832126");
    s.tenant = "Acme".into();
    s.given_name = Some("Zoë".into());
    s.family_name = Some("van Dijk".into());
    s.email = Some("zoe@example.org".into());
    s.upstream_id = Some("up-1".into());
    s.add_course("C-1", &["Learner".into()], 20);
    s.issued_at = 1_700_000_000;
    s.last_seen = 1_700_000_000;
    s
}

fn bench_assertion(c: &mut Criterion) {
    let minter = assertion_minter();
    let s = bench_learner();
    let course = CurrentCourse {
        index: Some(0),
        id: Some("C-1"),
        roles: &s.courses[0].roles,
    };
    c.bench_function("mint identity assertion (ES256, one course)", |b| {
        b.iter(|| {
            minter
                .mint_now(black_box(&s), course, 1_700_000_010)
                .expect("minted")
        })
    });
}

fn bench_pox(c: &mut Criterion) {
    let sourced = "{\"data\":{\"instanceid\":\"2\",\"userid\":\"3\"},\"hash\":\"abc\"}";
    c.bench_function("POX build replaceResult", |b| {
        b.iter(|| {
            build_request(
                "msg-1",
                black_box(sourced),
                &Operation::Replace { score: 0.8 },
            )
        })
    });
    let response = br#"<?xml version="1.0" encoding="UTF-8"?>
<imsx_POXEnvelopeResponse xmlns="http://www.imsglobal.org/services/ltiv1p1/xsd/imsoms_v1p0">
  <imsx_POXHeader><imsx_POXResponseHeaderInfo><imsx_version>V1.0</imsx_version>
    <imsx_messageIdentifier>4560</imsx_messageIdentifier>
    <imsx_statusInfo><imsx_codeMajor>success</imsx_codeMajor><imsx_severity>status</imsx_severity>
      <imsx_description>Score for 3124567 is now 0.92</imsx_description>
      <imsx_messageRefIdentifier>999999123</imsx_messageRefIdentifier>
      <imsx_operationRefIdentifier>replaceResult</imsx_operationRefIdentifier></imsx_statusInfo>
  </imsx_POXResponseHeaderInfo></imsx_POXHeader>
  <imsx_POXBody><replaceResultResponse/></imsx_POXBody>
</imsx_POXEnvelopeResponse>"#;
    c.bench_function("POX parse response", |b| {
        b.iter(|| parse_response(black_box(response)))
    });
}

criterion_group!(
    benches,
    bench_signature,
    bench_session,
    bench_headers,
    bench_assertion,
    bench_pox
);
criterion_main!(benches);
