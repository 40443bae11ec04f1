//! Session cookies: opening arbitrary strings, and seal/open round trips of
//! sessions built from the same bytes.
//!
//! `Sealer::open` must answer `Err` or a `Session` for any string, never
//! panic. A session built from the input and sealed opens again as the
//! session `seal` promises (fields bounded; when the cookie fits without
//! dropping anything, exactly the bounded session), opens under a sealer that
//! lists the key as a previous one, and never opens under another key or
//! with a byte of the cookie changed.

#![no_main]

use libfuzzer_sys::arbitrary::{Arbitrary, Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use ltigate::session::cookie::cookie_value;
use ltigate::session::{CourseRoles, Sealer, Session, MAX_COOKIE_VALUE};
use ltigate::lti::LtiVersion;
use ltigate::secret::Secret;

/// Largest serialised session whose cookie needs no trimming:
/// base64url(1 version byte + 24 nonce bytes + payload + 16 tag bytes).
fn fits_unchanged(json_len: usize) -> bool {
    json_len
        .checked_add(1 + 24 + 16)
        .and_then(|raw| raw.checked_mul(4))
        .is_some_and(|raw_times_4| raw_times_4.div_ceil(3) <= MAX_COOKIE_VALUE)
}

fn opt_string(u: &mut Unstructured<'_>) -> ArbResult<Option<String>> {
    Option::<String>::arbitrary(u)
}

fn session(u: &mut Unstructured<'_>) -> ArbResult<Session> {
    let mut courses = Vec::new();
    for _ in 0..u.int_in_range(0..=12u8)? {
        courses.push(CourseRoles {
            id: String::arbitrary(u)?,
            roles: Vec::<String>::arbitrary(u)?,
        });
    }
    Ok(Session {
        tenant: String::arbitrary(u)?,
        lms_id: String::arbitrary(u)?,
        user_id: String::arbitrary(u)?,
        external_id: String::arbitrary(u)?,
        upstream_id: opt_string(u)?,
        given_name: opt_string(u)?,
        family_name: opt_string(u)?,
        email: opt_string(u)?,
        courses,
        issued_at: u64::arbitrary(u)?,
        last_seen: u64::arbitrary(u)?,
        lti_version: if bool::arbitrary(u)? {
            LtiVersion::V1p3
        } else {
            LtiVersion::V1p1
        },
    })
}

fuzz_target!(|data: &[u8]| {
    let key = Secret::new([0x11u8; 32]);
    let old_key = Secret::new([0x22u8; 40]);
    let sealer = Sealer::new(&key, std::slice::from_ref(&old_key));

    // Arbitrary cookie values.
    let text = String::from_utf8_lossy(data);
    let _ = sealer.open(&text);
    if let Ok(exact) = std::str::from_utf8(data) {
        let _ = sealer.open(exact);
    }
    let _ = cookie_value(std::iter::once(data), "ltigate_session");

    // Round trip of a session built from the same bytes.
    let mut u = Unstructured::new(data);
    let Ok(original) = session(&mut u) else {
        return;
    };
    let Ok(cookie) = sealer.seal(&original) else {
        return;
    };
    assert!(
        cookie.len() <= MAX_COOKIE_VALUE,
        "cookie of {} bytes",
        cookie.len()
    );
    assert!(cookie
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));

    let opened = sealer
        .open(&cookie)
        .unwrap_or_else(|e| panic!("a sealed session does not open: {e:?}"));
    let mut bounded = original.clone();
    bounded.bound_fields();
    let json_len = serde_json::to_vec(&bounded).map_or(usize::MAX, |v| v.len());
    if fits_unchanged(json_len) {
        assert_eq!(opened, bounded);
    } else {
        // Oldest courses and then names and email may have been dropped.
        assert_eq!(opened.tenant, bounded.tenant);
        assert_eq!(opened.lms_id, bounded.lms_id);
        assert_eq!(opened.user_id, bounded.user_id);
        assert_eq!(opened.external_id, bounded.external_id);
        assert_eq!(opened.upstream_id, bounded.upstream_id);
        assert_eq!(opened.issued_at, bounded.issued_at);
        assert_eq!(opened.last_seen, bounded.last_seen);
        assert!(bounded.courses.ends_with(&opened.courses));
        assert_eq!(
            opened.courses.is_empty(),
            bounded.courses.is_empty(),
            "the latest course always stays"
        );
        let names = (&opened.given_name, &opened.family_name, &opened.email);
        assert!(
            names == (&bounded.given_name, &bounded.family_name, &bounded.email)
                || names == (&None, &None, &None)
        );
    }

    // Key rotation: the current key of one sealer is a previous key of the next.
    let rotated = Sealer::new(&Secret::new([0x33u8; 32]), std::slice::from_ref(&key));
    assert_eq!(rotated.open(&cookie).as_ref(), Ok(&opened));
    let stranger = Sealer::new(&old_key, &[]);
    assert!(stranger.open(&cookie).is_err());

    // Any changed byte breaks it.
    if let Ok(pick) = u.arbitrary::<(usize, u8)>() {
        let (pos, replacement) = pick;
        let mut bytes = cookie.clone().into_bytes();
        let pos = pos % bytes.len();
        if bytes[pos] != replacement {
            bytes[pos] = replacement;
            let tampered = String::from_utf8_lossy(&bytes);
            assert!(
                sealer.open(&tampered).is_err(),
                "a tampered cookie opened (byte {pos} set to {replacement:#04x})"
            );
        }
    }
});
