//! Basic Outcomes (POX) parsing on arbitrary bytes.
//!
//! `parse_response`, `parse_request` and the delivery classification must
//! never panic; libFuzzer's `-timeout` (set by scripts/fuzz) catches inputs
//! that take long, and `-rss_limit_mb` entity expansion. Whatever
//! `parse_request` accepts is rebuilt with `build_request` and parsed again:
//! the second parse must give the same request (a fixed point).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ltigate::lti::outcomes::{self, Operation, PoxError, MAX_DEPTH};
use ltigate::outcomes::{classify, Verdict};

fuzz_target!(|data: &[u8]| {
    let response = outcomes::parse_response(data);
    if let Ok(r) = &response {
        assert_eq!(r.description, r.description.trim());
        assert_eq!(r.message_ref, r.message_ref.trim());
    }
    // Deeply nested input is refused, never recursed into.
    if data.iter().filter(|&&b| b == b'<').count() <= MAX_DEPTH {
        assert!(!matches!(&response, Err(PoxError::Malformed(m)) if m.contains("too deeply")));
    }

    for status in [200u16, 422, 500] {
        let verdict = classify(status, None, None, data);
        if status == 200
            && matches!(&response, Ok(r) if r.code_major == outcomes::CodeMajor::Success)
        {
            assert_eq!(verdict, Verdict::Delivered);
        }
        if response.is_err() {
            assert_ne!(verdict, Verdict::Delivered);
        }
    }

    let Ok(request) = outcomes::parse_request(data) else {
        return;
    };
    if let Operation::Replace { score } = request.operation {
        assert!(score.is_finite() && (0.0..=1.0).contains(&score));
    }
    // Values that XML cannot carry (a NUL from `&#0;`, say) are refused by
    // the builder; everything else must survive a rebuild.
    let Ok(rebuilt) =
        outcomes::build_request(&request.message_id, &request.sourced_id, &request.operation)
    else {
        return;
    };
    let again = outcomes::parse_request(rebuilt.as_bytes())
        .unwrap_or_else(|e| panic!("rebuilt request does not parse: {e}\n{rebuilt}"));
    assert_eq!(again.message_id, request.message_id.trim());
    assert_eq!(again.sourced_id, request.sourced_id);
    match (&again.operation, &request.operation) {
        (Operation::Replace { score: a }, Operation::Replace { score: b }) => {
            assert_eq!(
                a.to_bits(),
                if *b == 0.0 {
                    0.0f64.to_bits()
                } else {
                    b.to_bits()
                }
            );
        }
        (a, b) => assert_eq!(a, b),
    }
});
