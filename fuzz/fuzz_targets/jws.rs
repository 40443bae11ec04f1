//! Compact JWS parsing and RS256 verification, and JWKS parsing, on
//! arbitrary bytes.
//!
//! The input is read three ways: as a token (`CompactJws::parse`, then
//! `verify` against a fixed platform key set), as a JWKS document
//! (`JwkSet::parse`), and — when it is a JSON object — as claims that the
//! platform key signs.
//!
//! Besides "never panics", the invariants: a token that verifies carries
//! `alg` RS256 and the platform's `kid`; signed claims verify and read back
//! unchanged; the signed token stops verifying after any one byte of it is
//! changed (chosen by the input), and never verifies under another key;
//! every key a parsed set keeps is 2048 to 8192 bits with a findable `kid`.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ltigate::lti::jose::{CompactJws, JwkSet, SigningKey, MAX_RSA_BITS, MIN_RSA_BITS, RS256};

struct Keys {
    platform: SigningKey,
    platform_set: JwkSet,
    other_set: JwkSet,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let platform =
            SigningKey::from_pem(include_str!("../../tests/keys/platform-test-key.pem"))
                .expect("the platform test key");
        let other = SigningKey::from_pem(include_str!("../../tests/keys/tool-test-key.pem"))
            .expect("the tool test key");
        Keys {
            platform_set: JwkSet::from_keys(vec![platform.public_jwk().clone()]),
            other_set: JwkSet::from_keys(vec![other.public_jwk().clone()]),
            platform,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let keys = keys();

    if let Ok(set) = JwkSet::parse(data) {
        for key in set.keys() {
            assert!((MIN_RSA_BITS..=MAX_RSA_BITS).contains(&key.bits()));
            assert!(set.find(key.kid()).is_some());
            assert_eq!(key.thumbprint().len(), 43);
        }
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(jws) = CompactJws::parse(text) {
        if jws.verify(&keys.platform_set).is_ok() {
            assert_eq!(jws.header().alg, RS256);
            assert_eq!(jws.header().kid.as_deref(), Some(keys.platform.kid()));
        }
        assert!(jws.verify(&JwkSet::default()).is_err());
    }

    // Claims: sign, verify, read back; one changed byte breaks it.
    let Ok(claims @ serde_json::Value::Object(_)) = serde_json::from_str::<serde_json::Value>(text)
    else {
        return;
    };
    let Ok(token) = keys.platform.sign(&claims) else {
        return;
    };
    let jws = CompactJws::parse(&token).expect("a signed token parses");
    assert_eq!(jws.verify(&keys.platform_set), Ok(()));
    assert!(jws.verify(&keys.other_set).is_err());
    // Claims read back as their JSON text reads (serde_json's float parsing
    // is not always correctly rounded, so a long number may read back as a
    // neighbouring float: compare with the text's own reading).
    let sent: serde_json::Value =
        serde_json::from_str(&claims.to_string()).expect("serialised claims parse");
    assert_eq!(&serde_json::Value::Object(jws.claims().clone()), &sent);

    let mut bytes = token.into_bytes();
    let at = data.len().wrapping_mul(31) % bytes.len();
    let flip = data.first().copied().unwrap_or(1).max(1);
    bytes[at] ^= flip;
    if let Ok(changed) = std::str::from_utf8(&bytes) {
        if let Ok(jws) = CompactJws::parse(changed) {
            assert!(
                jws.verify(&keys.platform_set).is_err(),
                "a changed token verified (byte {at})"
            );
        }
    }
});
