//! The LTI 1.3 id_token checks on arbitrary bytes.
//!
//! The input is read as an id_token (`id_token::parse` and every step after
//! it) and — when it is a JSON object — as claims that the platform key
//! signs, so that the claim checks behind the signature are reached too.
//! The steps run in DESIGN §13's order with fixed expectations (issuer,
//! client id, target link URI, nonce, a migration link), `now` and the
//! leeway taken from the input.
//!
//! Besides "never panics", the invariants: what `resource_link` accepts is
//! bounded (`sub` ≤ 255 bytes, a course of 1 to 64 bytes without control
//! characters, a course from the path equal to it); a token that passes
//! `verify` names the expected issuer and holds the client id in `aud`; no
//! token passes `verify` against an empty key set.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ltigate::lti::id_token::{self, Expected, IdToken, MAX_ID_LEN};
use ltigate::lti::jose::{JwkSet, SigningKey};
use ltigate::lti::launch::MAX_COURSE_ID;
use ltigate::lti::migration::{self, MigrationLink};

const ISSUER: &str = "https://lms.example.edu";
const CLIENT_ID: &str = "client-1";
const PUBLIC_URL: &str = "https://tool.example.com";
const TARGET: &str = "https://tool.example.com/lti/1.3/launch/C-1";

struct Keys {
    platform: SigningKey,
    set: JwkSet,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let platform =
            SigningKey::from_pem(include_str!("../../tests/keys/platform-test-key.pem"))
                .expect("the platform test key");
        Keys {
            set: JwkSet::from_keys(vec![platform.public_jwk().clone()]),
            platform,
        }
    })
}

/// Every step after the parse.
fn steps(token: &IdToken, now: i64, leeway: i64) {
    assert!(!token.sub.is_empty() && token.sub.len() <= MAX_ID_LEN);
    assert!(!token.deployment_id.is_empty() && token.deployment_id.len() <= MAX_ID_LEN);
    assert!(!token.aud.is_empty());
    let _ = id_token::deployment_allowed(&["dep-1".to_string()], &token.deployment_id);
    let _ = token.check_message_type();
    for path in [None, Some("C-1")] {
        if let Ok(launch) = token.resource_link(PUBLIC_URL, path) {
            assert_eq!(launch.user_id, token.sub);
            assert!(!launch.course.is_empty() && launch.course.len() <= MAX_COURSE_ID);
            assert!(!launch.course.chars().any(char::is_control));
            if let Some(p) = path {
                assert_eq!(launch.course, p);
            }
            if let Some(ags) = &launch.ags {
                let _ = ags.score_lineitem();
            }
        }
    }
    let expected = Expected {
        issuer: ISSUER,
        client_id: CLIENT_ID,
        target_link_uri: TARGET,
    };
    assert!(token.verify(&JwkSet::default(), &expected).is_err());
    if token.verify(&keys().set, &expected).is_ok() {
        assert_eq!(token.iss, ISSUER);
        assert!(token.aud.iter().any(|a| a == CLIENT_ID));
    }
    let _ = token.check_times(now, leeway);
    let _ = token.check_nonce("n-1");
    let secrets: &[&[u8]] = &[b"secret-1"];
    for trust_unsigned in [false, true] {
        let link = MigrationLink {
            consumer_key: "key-1",
            secrets,
            trust_unsigned,
        };
        if let Ok(Some(user_id)) = migration::check(token, CLIENT_ID, Some(&link)) {
            assert!(!user_id.is_empty() && user_id.len() <= 128);
        }
    }
    assert_eq!(migration::check(token, CLIENT_ID, None), Ok(None));
}

fuzz_target!(|data: &[u8]| {
    let now = 1_800_000_000 + i64::from(data.first().copied().unwrap_or(0)) * 60;
    let leeway = i64::from(data.get(1).copied().unwrap_or(60));
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = id_token::parse(text) {
        steps(&token, now, leeway);
    }
    let Ok(claims @ serde_json::Value::Object(_)) = serde_json::from_str::<serde_json::Value>(text)
    else {
        return;
    };
    let Ok(signed) = keys().platform.sign(&claims) else {
        return;
    };
    if let Ok(token) = id_token::parse(&signed) {
        steps(&token, now, leeway);
    }
});
