//! The AGS core on arbitrary input: a platform's token and score answers
//! (any status, any body), line item URLs and timestamps.
//!
//! Besides "never panics", the invariants: a token is only ever read from a
//! 2xx answer and is never empty; a score answer is delivered exactly for
//! 2xx and needs a new token exactly for 401; the scores URL keeps the line
//! item's query and puts `/scores` before it; a timestamp is RFC 3339 with
//! milliseconds and `Z`, and later instants never read earlier.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ltigate::lti::ags::{
    classify_score_answer, parse_token_answer, rfc3339_millis, scores_url, ScoreAnswer,
    TokenAnswer,
};

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let status = u16::from_be_bytes([data[0], data[1]]) % 1000;
    let ms = u64::from_be_bytes(data[2..10].try_into().unwrap_or_default()) % 253_402_300_800_000;
    let body = &data[10..];

    match parse_token_answer(status, body) {
        TokenAnswer::Token(t) => {
            assert!((200..300).contains(&status));
            assert!(!t.token.is_empty());
        }
        TokenAnswer::Refused(why) => assert!(!why.is_empty()),
    }
    match classify_score_answer(status, None, body) {
        ScoreAnswer::Delivered => assert!((200..300).contains(&status)),
        ScoreAnswer::Unauthorized => assert_eq!(status, 401),
        ScoreAnswer::Refused(_) => assert!([400, 403, 404, 409, 422].contains(&status)),
        ScoreAnswer::Retry { .. } => {
            assert!(!(200..300).contains(&status) && status != 401);
        }
    }

    let stamp = rfc3339_millis(ms);
    assert_eq!(stamp.len(), "2025-12-08T01:19:49.123Z".len(), "{stamp}");
    assert!(stamp.ends_with('Z'));
    assert!(rfc3339_millis(ms + 1) > stamp);

    if let Ok(text) = std::str::from_utf8(body) {
        let url = scores_url(text);
        let without_fragment = text.split('#').next().unwrap_or(text);
        if let Some((_, query)) = without_fragment.split_once('?') {
            assert!(url.ends_with(&format!("/scores?{query}")), "{url}");
        } else {
            assert!(url.ends_with("/scores"), "{url}");
        }
    }
});
