//! Migration from LTI 1.1: the `lti1p1` claim of an LTI 1.3 launch
//! (<https://www.imsglobal.org/spec/lti/v1p3/migr>).
//!
//! A platform that moved a tool from 1.1 to 1.3 may send the learner's 1.1
//! `user_id` with `oauth_consumer_key` and `oauth_consumer_key_sign` = base64
//! of HMAC-SHA256 (key: the 1.1 secret) of
//! `oauth_consumer_key&deployment_id&iss&client_id&exp&nonce`. With it, a
//! registration linked to a 1.1 consumer maps the launch onto the learner
//! first seen through 1.1.
//!
//! ```
//! use ltigate::lti::migration::{base_string, signature_matches};
//! let base = base_string("179248902", "689302", "https://lmsvendor.com",
//!     "PM48OJSfGDTAzAo", "1551290856", "172we8671fd8z");
//! assert!(signature_matches("lWd54kFo5qU7xshAna6v8BwoBm6tmUjc6GTax6+12ps=",
//!     b"my-lti11-secret", &base));
//! ```

use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use subtle::ConstantTimeEq as _;

use super::id_token::{IdToken, Lti13Error, Lti13Rejection, LTI1P1_CLAIM};
use super::launch::MAX_USER_ID;

/// What a registration linked to a 1.1 consumer (`consumer = …`) brings to
/// the check.
#[derive(Debug, Clone, Copy)]
pub struct MigrationLink<'a> {
    /// The linked consumer's `oauth_consumer_key`.
    pub consumer_key: &'a str,
    /// The linked consumer's secrets (any may have signed the claim).
    pub secrets: &'a [&'a [u8]],
    /// `trust_unsigned_migration`: use a `user_id` sent without
    /// `oauth_consumer_key` and its signature.
    pub trust_unsigned: bool,
}

/// The string the claim's signature covers:
/// `key&deployment_id&iss&client_id&exp&nonce`, each as sent.
pub fn base_string(
    consumer_key: &str,
    deployment_id: &str,
    iss: &str,
    client_id: &str,
    exp: &str,
    nonce: &str,
) -> String {
    [consumer_key, deployment_id, iss, client_id, exp, nonce].join("&")
}

/// The signature as the spec computes it: base64 of the raw HMAC-SHA256 of
/// `base` with `secret`.
pub fn sign(secret: &[u8], base: &str) -> String {
    STANDARD.encode(hmac_sha256(secret, base))
}

fn hmac_sha256(secret: &[u8], base: &str) -> ring::hmac::Tag {
    ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        base.as_bytes(),
    )
}

/// Whether `signature` is base64 (padding optional) of either the raw
/// HMAC-SHA256 of `base` with `secret` (the spec's test vector) or of its
/// lowercase hex form (what PHP's `hash_hmac` returns by default, as Moodle
/// sends it). Compared in constant time.
pub fn signature_matches(signature: &str, secret: &[u8], base: &str) -> bool {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let Ok(sent) = LENIENT.decode(signature.trim()) else {
        return false;
    };
    let tag = hmac_sha256(secret, base);
    let raw = tag.as_ref();
    let hex: Vec<u8> = raw
        .iter()
        .flat_map(|b| {
            let digits = b"0123456789abcdef";
            [digits[usize::from(b >> 4)], digits[usize::from(b & 15)]]
        })
        .collect();
    bool::from(sent.ct_eq(raw)) | bool::from(sent.ct_eq(&hex))
}

fn bad(detail: &str) -> Lti13Error {
    Lti13Error::new(Lti13Rejection::BadMigration, detail)
}

/// Step 10: the `lti1p1` claim of a verified token. `client_id` is the
/// registration's; `link` is `None` for a registration not linked to a 1.1
/// consumer, which ignores the claim.
///
/// Returns the 1.1 `user_id` to key the learner on, when the claim gives one
/// that may be trusted: signed (`oauth_consumer_key` equal to the linked
/// consumer's key and `oauth_consumer_key_sign` verifying with one of its
/// secrets), or unsigned when `trust_unsigned` is set. An unsigned `user_id`
/// is otherwise ignored. A claim with `oauth_consumer_key` that does not
/// verify, or a `user_id` that is not a usable 1.1 id (≤ 128 bytes, no
/// control characters), is `bad_migration`.
pub fn check(
    token: &IdToken,
    client_id: &str,
    link: Option<&MigrationLink<'_>>,
) -> Result<Option<String>, Lti13Error> {
    let Some(link) = link else {
        return Ok(None);
    };
    let Some(claim) = token.claims().get(LTI1P1_CLAIM) else {
        return Ok(None);
    };
    let Some(claim) = claim.as_object() else {
        return Err(bad("the lti1p1 claim is not an object"));
    };
    let text = |name: &str| claim.get(name).and_then(serde_json::Value::as_str);
    let signed = match text("oauth_consumer_key") {
        Some(key) => {
            if !bool::from(key.as_bytes().ct_eq(link.consumer_key.as_bytes())) {
                return Err(bad(
                    "lti1p1.oauth_consumer_key is not the linked consumer's key",
                ));
            }
            let signature = text("oauth_consumer_key_sign")
                .ok_or_else(|| bad("lti1p1.oauth_consumer_key_sign is missing"))?;
            let base = base_string(
                key,
                &token.deployment_id,
                &token.iss,
                client_id,
                token.exp_text(),
                &token.nonce,
            );
            if !link
                .secrets
                .iter()
                .any(|secret| signature_matches(signature, secret, &base))
            {
                return Err(bad("lti1p1.oauth_consumer_key_sign does not verify"));
            }
            true
        }
        None if claim.contains_key("oauth_consumer_key") => {
            return Err(bad("lti1p1.oauth_consumer_key is not a string"))
        }
        None => false,
    };
    if !signed && !link.trust_unsigned {
        return Ok(None);
    }
    match claim.get("user_id") {
        None => Ok(None),
        Some(serde_json::Value::String(user_id)) => {
            let user_id = user_id.trim();
            if user_id.is_empty() {
                Ok(None)
            } else if user_id.len() > MAX_USER_ID || user_id.chars().any(char::is_control) {
                Err(bad("lti1p1.user_id is not a usable LTI 1.1 user id"))
            } else {
                Ok(Some(user_id.to_string()))
            }
        }
        Some(_) => Err(bad("lti1p1.user_id is not a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lti::id_token::{parse, DEPLOYMENT_ID_CLAIM, MESSAGE_TYPE_CLAIM, VERSION_CLAIM};
    use crate::lti::jose::SigningKey;
    use serde_json::{json, Value};

    /// The test vector of the LTI 1.1 → 1.3 migration spec
    /// (https://www.imsglobal.org/spec/lti/v1p3/migr, the
    /// `oauth_consumer_key_sign` example).
    const KEY: &str = "179248902";
    const DEPLOYMENT: &str = "689302";
    const ISS: &str = "https://lmsvendor.com";
    const CLIENT: &str = "PM48OJSfGDTAzAo";
    const EXP: i64 = 1_551_290_856;
    const NONCE: &str = "172we8671fd8z";
    const SECRET: &[u8] = b"my-lti11-secret";
    const SIGN: &str = "lWd54kFo5qU7xshAna6v8BwoBm6tmUjc6GTax6+12ps=";

    fn vector_base() -> String {
        base_string(KEY, DEPLOYMENT, ISS, CLIENT, &EXP.to_string(), NONCE)
    }

    /// The hex form's signature, computed independently of `signature_matches`.
    fn hex_sign(secret: &[u8], base: &str) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(base.as_bytes());
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        STANDARD.encode(hex)
    }

    #[test]
    fn spec_vector() {
        let base = vector_base();
        assert_eq!(
            base,
            "179248902&689302&https://lmsvendor.com&PM48OJSfGDTAzAo&1551290856&172we8671fd8z"
        );
        assert_eq!(sign(SECRET, &base), SIGN);
        assert!(signature_matches(SIGN, SECRET, &base));
        assert!(signature_matches(SIGN.trim_end_matches('='), SECRET, &base));
        assert!(!signature_matches(SIGN, b"other secret", &base));
        assert!(!signature_matches(SIGN, SECRET, &format!("{base}x")));
        assert!(!signature_matches("", SECRET, &base));
        assert!(!signature_matches("not base64!", SECRET, &base));
        // The hex form (PHP hash_hmac's default) is accepted too.
        let hex = hex_sign(SECRET, &base);
        assert_eq!(hex.len(), 88);
        assert!(signature_matches(&hex, SECRET, &base));
        assert!(!signature_matches(&hex, b"other secret", &base));
    }

    fn token(lti1p1: Option<Value>) -> crate::lti::id_token::IdToken {
        let mut claims = json!({
            "iss": ISS,
            "aud": CLIENT,
            "exp": EXP,
            "iat": EXP - 300,
            "nonce": NONCE,
            "sub": "1.3-user",
            VERSION_CLAIM: "1.3.0",
            MESSAGE_TYPE_CLAIM: "LtiResourceLinkRequest",
            DEPLOYMENT_ID_CLAIM: DEPLOYMENT,
        });
        if let Some(claim) = lti1p1 {
            claims[LTI1P1_CLAIM] = claim;
        }
        let key =
            SigningKey::from_pem(include_str!("../../tests/keys/platform-test-key.pem")).unwrap();
        parse(&key.sign(&claims).unwrap()).unwrap()
    }

    #[test]
    fn claim_check() {
        let secrets: &[&[u8]] = &[b"old secret", SECRET];
        let link = MigrationLink {
            consumer_key: KEY,
            secrets,
            trust_unsigned: false,
        };
        let trusting = MigrationLink {
            trust_unsigned: true,
            ..link
        };
        let signed =
            json!({"oauth_consumer_key": KEY, "oauth_consumer_key_sign": SIGN, "user_id": "u-11"});
        let hex_signed = json!({"oauth_consumer_key": KEY, "oauth_consumer_key_sign": hex_sign(SECRET, &vector_base()), "user_id": "u-11"});
        let unsigned = json!({"user_id": "u-11"});
        let ok = |claim: Option<Value>, link: Option<&MigrationLink<'_>>| {
            check(&token(claim), CLIENT, link).map_err(|e| e.rejection())
        };
        assert_eq!(
            ok(Some(signed.clone()), Some(&link)),
            Ok(Some("u-11".into()))
        );
        assert_eq!(ok(Some(hex_signed), Some(&link)), Ok(Some("u-11".into())));
        assert_eq!(ok(None, Some(&link)), Ok(None));
        // An unlinked registration ignores the claim, even a bad one.
        assert_eq!(ok(Some(json!("junk")), None), Ok(None));
        // Unsigned user_id: used only when trusted.
        assert_eq!(ok(Some(unsigned.clone()), Some(&link)), Ok(None));
        assert_eq!(ok(Some(unsigned), Some(&trusting)), Ok(Some("u-11".into())));
        // Signed but no user_id: nothing to map.
        let no_user = json!({"oauth_consumer_key": KEY, "oauth_consumer_key_sign": SIGN});
        assert_eq!(ok(Some(no_user), Some(&link)), Ok(None));
        let bad = Err(Lti13Rejection::BadMigration);
        // Wrong signature, wrong key, missing signature, other client id.
        let mut wrong = signed.clone();
        wrong["oauth_consumer_key_sign"] = json!(sign(b"nope", &vector_base()));
        assert_eq!(ok(Some(wrong), Some(&trusting)), bad);
        let mut other_key = signed.clone();
        other_key["oauth_consumer_key"] = json!("other");
        assert_eq!(ok(Some(other_key), Some(&link)), bad);
        let mut no_sign = signed.clone();
        no_sign
            .as_object_mut()
            .unwrap()
            .remove("oauth_consumer_key_sign");
        assert_eq!(ok(Some(no_sign), Some(&link)), bad);
        assert_eq!(
            check(&token(Some(signed.clone())), "another-client", Some(&link))
                .unwrap_err()
                .rejection(),
            Lti13Rejection::BadMigration
        );
        let only_old: &[&[u8]] = &[b"old secret"];
        let old_link = MigrationLink {
            secrets: only_old,
            ..link
        };
        assert_eq!(ok(Some(signed.clone()), Some(&old_link)), bad);
        assert_eq!(ok(Some(json!([1])), Some(&link)), bad);
        let mut long = signed;
        long["user_id"] = json!("x".repeat(MAX_USER_ID + 1));
        assert_eq!(ok(Some(long), Some(&link)), bad);
    }
}
