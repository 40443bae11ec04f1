//! Launch parsing and OAuth verification on arbitrary bytes.
//!
//! Input layout: everything before the first `\n` is the launch URL's query
//! string, everything after it the form body. Both go through
//! `encode::parse_form`, then `launch::parse`, the base string and
//! `oauth1::verify` with fixed secrets. The body is also fed to the
//! `Authorization` header parser and the roles normaliser.
//!
//! Besides "never panics", two invariants are checked: a signature made by
//! `oauth1::sign` over the same base string verifies with the signing secret
//! (and only with it), and whatever `launch::parse` accepts respects its
//! documented bounds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ltigate::lti::encode::{parse_form, percent_decode, percent_encode};
use ltigate::lti::launch::{self, MAX_COURSE_ID, MAX_USER_ID};
use ltigate::lti::oauth1::{self, SignatureMethod, VerifyRequest};
use ltigate::lti::roles;

const SECRET: &[u8] = b"fuzz-secret&with/reserved chars";
const OTHER_SECRET: &[u8] = b"another secret";
const LAUNCH_URL: &str = "https://tool.example.edu:8443/lti/launch/";

fuzz_target!(|data: &[u8]| {
    let (raw_query, raw_body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };

    if let Ok(text) = std::str::from_utf8(raw_body) {
        let _ = oauth1::parse_authorization_header(text);
        let _ = roles::normalize(text);
    }
    let _ = percent_decode(raw_query);

    // The query as part of a URL: base string URI and signing target.
    if let Ok(query) = std::str::from_utf8(raw_query) {
        let url = format!("{LAUNCH_URL}?{query}");
        let base = oauth1::base_string_uri_from_url(&url);
        assert_eq!(
            base.as_deref().ok(),
            Some("https://tool.example.edu:8443/lti/launch/"),
            "the query never changes the base string URI"
        );
        // The query text as a whole URL exercises the URL splitter.
        let _ = oauth1::base_string_uri_from_url(query);
    }

    let (Ok(query), Ok(body)) = (parse_form(raw_query), parse_form(raw_body)) else {
        return;
    };

    for path_course in [None, Some("course-1")] {
        if let Ok(params) = launch::parse(&query, &body, path_course) {
            assert!(!params.user_id.is_empty() && params.user_id.len() <= MAX_USER_ID);
            assert!(!params.user_id.chars().any(char::is_control));
            assert!(!params.course.is_empty() && params.course.len() <= MAX_COURSE_ID);
            assert!(!params.course.chars().any(char::is_control));
            assert!(!params.consumer_key.is_empty());
            assert!(!params.signature.is_empty());
            assert!(params.timestamp >= 0);
            if let Some(c) = path_course {
                assert_eq!(params.course, c);
            }
            if let Some(url) = &params.return_url {
                let lower = url.to_ascii_lowercase();
                assert!(lower.starts_with("https://") || lower.starts_with("http://"));
            }
        }
    }

    let pairs = || {
        query
            .iter()
            .chain(body.iter())
            .map(|(n, v)| (n.as_str(), v.as_str()))
    };
    let base_uri = "https://tool.example.edu:8443/lti/launch/";
    let base = oauth1::signature_base_string("POST", base_uri, pairs());
    let normalized =
        oauth1::normalized_parameters(pairs().filter(|(n, _)| *n != "oauth_signature"));
    // Everything but oauth_signature is signed, realm included.
    let mut expected =
        String::from("POST&https%3A%2F%2Ftool.example.edu%3A8443%2Flti%2Flaunch%2F&");
    expected.push_str(&percent_encode(normalized.as_bytes()));
    assert_eq!(base, expected);

    let received = body
        .iter()
        .find(|(n, _)| n == "oauth_signature")
        .map_or("", |(_, v)| v.as_str());
    for method in [SignatureMethod::HmacSha1, SignatureMethod::HmacSha256] {
        let req = VerifyRequest {
            http_method: "POST",
            base_uri,
            query: &query,
            body: &body,
            method,
            signature: received,
        };
        let _ = oauth1::verify(&req, &[OTHER_SECRET, SECRET]);

        // A signature over this exact base string verifies, with the right
        // secret only.
        let good = oauth1::sign(method, &base, SECRET, b"");
        let signed = VerifyRequest {
            signature: &good,
            ..req
        };
        assert_eq!(oauth1::verify(&signed, &[OTHER_SECRET, SECRET]), Some(1));
        assert_eq!(oauth1::verify(&signed, &[OTHER_SECRET]), None);
    }
});
