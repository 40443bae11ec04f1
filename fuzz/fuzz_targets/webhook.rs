//! The completion webhook's pure parts on arbitrary bytes.
//!
//! Input layout: everything before the first `\n` is the
//! `X-Ltigate-Signature` header, everything after it the body. Checked:
//! `verify_webhook_signature` (never panics; accepts a header made by
//! `sign_webhook` for the same body and secret, refuses it for another
//! body), the JSON parse the handler does, the stored `OutcomeTarget`
//! decoding, `Retry-After` parsing and the outcome URL check.
//!
//! The field validation of the JSON (`event_id`, `user`, `course`, score)
//! lives in private functions of the async handler and is not reachable
//! from here.

#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use ltigate::outcomes::{
    check_target_url, parse_retry_after, sign_webhook, verify_webhook_signature, OutcomeTarget,
    SignatureError,
};
use ltigate::secret::Secret;

const NOW: u64 = 1_700_000_000;
const TOLERANCE: Duration = Duration::from_secs(300);

fuzz_target!(|data: &[u8]| {
    let (raw_header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    let secret = Secret::new(&b"webhook-secret"[..]);
    let header = String::from_utf8_lossy(raw_header);

    let verdict = verify_webhook_signature(&header, body, &secret, NOW, TOLERANCE);
    if !header.contains("v1") || !header.contains('t') {
        assert_eq!(verdict, Err(SignatureError::Malformed));
    }

    // A genuine signature verifies; the same header with another body does not.
    let t = NOW - 10;
    let good = sign_webhook(body, &secret, t);
    assert_eq!(
        verify_webhook_signature(&good, body, &secret, NOW, TOLERANCE),
        Ok(())
    );
    let mut other = body.to_vec();
    other.push(b' ');
    assert_eq!(
        verify_webhook_signature(&good, &other, &secret, NOW, TOLERANCE),
        Err(SignatureError::Mismatch)
    );
    // Extra list items from the fuzzer around a genuine pair.
    let combined = format!("{header},{good}");
    let _ = verify_webhook_signature(&combined, body, &secret, NOW, TOLERANCE);

    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body) {
        let _ = map.get("event_id").and_then(serde_json::Value::as_str);
        let _ = map.get("score").and_then(serde_json::Value::as_f64);
    }
    if let Some(target) = OutcomeTarget::from_bytes(body) {
        assert_eq!(OutcomeTarget::from_bytes(&target.to_bytes()), Some(target));
    }

    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW);
    if let Some(wait) = parse_retry_after(&header, now) {
        if header.trim().bytes().all(|b| b.is_ascii_digit()) {
            assert!(wait <= Duration::from_secs(24 * 3600));
        }
    }

    if let Ok(url) = std::str::from_utf8(body) {
        if check_target_url(url, false, &[]).is_ok() {
            assert!(check_target_url(url, true, &[]).is_ok());
        }
        let _ = check_target_url(url, false, &["lms.example.edu".to_owned()]);
    }
});
