//! LTI Assignment and Grade Services scores (DESIGN §13 "Outcome target
//! (AGS)"): the scores URL of a line item, the score body, the client
//! assertion and token request of OAuth 2 client credentials, and the
//! classification of a platform's answers. Pure: values in, values out.

use std::time::Duration;

use serde_json::{json, Value};

/// The scope a tool needs to post scores.
pub const SCORE_SCOPE: &str = "https://purl.imsglobal.org/spec/lti-ags/scope/score";
/// The media type of a score.
pub const SCORE_CONTENT_TYPE: &str = "application/vnd.ims.lis.v1.score+json";
/// `client_assertion_type` of a JWT client assertion (RFC 7523).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long a client assertion is valid (at most 5 minutes).
pub const ASSERTION_LIFETIME: u64 = 300;
/// Tokens are used until this long before they expire.
pub const TOKEN_MARGIN: u64 = 60;
/// `expires_in` assumed when a token answer has none.
pub const DEFAULT_EXPIRES_IN: u64 = 3600;

/// The scores endpoint of a line item: `/scores` appended to its path,
/// before any query string (`…/lineitem?type_id=2` →
/// `…/lineitem/scores?type_id=2`); a fragment is dropped.
pub fn scores_url(lineitem: &str) -> String {
    let without_fragment = lineitem.split('#').next().unwrap_or(lineitem);
    let (path, query) = match without_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (without_fragment, None),
    };
    let mut url = path.trim_end_matches('/').to_string();
    url.push_str("/scores");
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// A unix time in milliseconds as RFC 3339 with milliseconds and zone
/// (`2026-12-08T01:19:49.123Z`).
pub fn rfc3339_millis(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let millis = unix_ms % 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a count of days since 1970-01-01
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The score of a completed activity: `score` (0.0–1.0) out of 1, at
/// `timestamp_ms`.
pub fn score_body(user_id: &str, score: f64, timestamp_ms: u64) -> Value {
    json!({
        "userId": user_id,
        "scoreGiven": score,
        "scoreMaximum": 1,
        "activityProgress": "Completed",
        "gradingProgress": "FullyGraded",
        "timestamp": rfc3339_millis(timestamp_ms),
    })
}

/// The claims of the client assertion a tool signs for a token request:
/// `iss` = `sub` = the client id, `aud` the token audience as a plain
/// string (Brightspace answers 500 to an array), a unique `jti`, valid
/// for [`ASSERTION_LIFETIME`].
pub fn client_assertion_claims(client_id: &str, audience: &str, now: u64, jti: &str) -> Value {
    json!({
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
        "jti": jti,
    })
}

/// The form of a client-credentials token request.
pub fn token_request_form(assertion: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", "client_credentials".to_string()),
        ("client_assertion_type", JWT_BEARER.to_string()),
        ("client_assertion", assertion.to_string()),
        ("scope", SCORE_SCOPE.to_string()),
    ]
}

/// An access token and how long it lives.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The bearer token.
    pub token: String,
    /// Seconds it is valid from its issue.
    pub expires_in: u64,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// What a token endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenAnswer {
    /// A token.
    Token(AccessToken),
    /// No token: the platform's words (its `error` and description, or the
    /// status). Every such answer is retried — `invalid_client` or a 5xx
    /// is a misconfiguration or an outage that gets fixed, and the grade
    /// must still arrive.
    Refused(String),
}

/// Reads a token endpoint's answer.
pub fn parse_token_answer(status: u16, body: &[u8]) -> TokenAnswer {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if (200..300).contains(&status) {
        let Some(v) = parsed else {
            return TokenAnswer::Refused(format!("token endpoint answered {status} without JSON"));
        };
        let token = v
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty());
        let bearer = v
            .get("token_type")
            .and_then(Value::as_str)
            .is_none_or(|t| t.eq_ignore_ascii_case("bearer"));
        return match (token, bearer) {
            (Some(t), true) => TokenAnswer::Token(AccessToken {
                token: t.to_string(),
                expires_in: v
                    .get("expires_in")
                    .and_then(|e| e.as_u64().or_else(|| e.as_str()?.parse().ok()))
                    .unwrap_or(DEFAULT_EXPIRES_IN),
            }),
            (None, _) => TokenAnswer::Refused("the token answer has no access_token".into()),
            (_, false) => TokenAnswer::Refused("the token is not a bearer token".into()),
        };
    }
    let words = parsed
        .as_ref()
        .and_then(|v| {
            let error = v.get("error")?.as_str()?;
            let description = v
                .get("error_description")
                .and_then(Value::as_str)
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            Some(format!("{error}{description}"))
        })
        .unwrap_or_else(|| snippet(body));
    TokenAnswer::Refused(format!("token endpoint answered {status} {words}"))
}

/// How long to use a token: until [`TOKEN_MARGIN`] before it expires (at
/// least a few seconds, for a platform that issues very short tokens).
pub fn token_use_for(token: &AccessToken) -> Duration {
    Duration::from_secs(token.expires_in.saturating_sub(TOKEN_MARGIN).max(5))
}

/// What a scores endpoint's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScoreAnswer {
    /// 2xx: the score is recorded.
    Delivered,
    /// 401: the token is no longer good; drop it and retry with a new one.
    Unauthorized,
    /// 400, 403, 404, 409, 422: the platform will not take this score;
    /// dead letter with its words.
    Refused(String),
    /// 429, 5xx and anything else: retry, after `Retry-After` when given.
    Retry {
        /// The platform's `Retry-After`.
        after: Option<Duration>,
        /// Why.
        why: String,
    },
}

/// Classifies a scores endpoint's answer (DESIGN §13).
pub fn classify_score_answer(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ScoreAnswer {
    match status {
        200..=299 => ScoreAnswer::Delivered,
        401 => ScoreAnswer::Unauthorized,
        400 | 403 | 404 | 409 | 422 => {
            ScoreAnswer::Refused(format!("the platform answered {status}: {}", snippet(body)))
        }
        300..=399 => ScoreAnswer::Retry {
            after: retry_after,
            why: format!("the platform answered {status} (redirects are not followed)"),
        },
        _ => ScoreAnswer::Retry {
            after: retry_after,
            why: format!("the platform answered {status}: {}", snippet(body)),
        },
    }
}

/// The first 300 characters of a body, whitespace collapsed.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let t: String = text.chars().take(300).collect();
    let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.is_empty() {
        "(no body)".into()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scores_url_goes_before_the_query() {
        for (lineitem, scores) in [
            (
                "https://lms.example/api/lti/courses/1/line_items/2",
                "https://lms.example/api/lti/courses/1/line_items/2/scores",
            ),
            (
                "https://moodle.example/mod/lti/services.php/2/lineitems/1/lineitem?type_id=2",
                "https://moodle.example/mod/lti/services.php/2/lineitems/1/lineitem/scores?type_id=2",
            ),
            (
                "https://lms.example/lineitems/7/",
                "https://lms.example/lineitems/7/scores",
            ),
            (
                "https://lms.example/li/7?a=1&b=2#frag",
                "https://lms.example/li/7/scores?a=1&b=2",
            ),
        ] {
            assert_eq!(scores_url(lineitem), scores, "{lineitem}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_with_milliseconds() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_001), "2000-02-29T00:00:00.001Z");
        assert_eq!(
            rfc3339_millis(1_765_156_789_123),
            "2025-12-08T01:19:49.123Z"
        );
        // Agrees with humantime over a range of instants.
        for ms in (0..4_000_000_000_000u64).step_by(97_654_321_017) {
            let t = std::time::UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(
                rfc3339_millis(ms),
                humantime::format_rfc3339_millis(t).to_string(),
                "{ms}"
            );
        }
    }

    #[test]
    fn the_score_body() {
        let body = score_body("sub-1", 0.85, 1_765_156_789_123);
        assert_eq!(
            body,
            json!({"userId": "sub-1", "scoreGiven": 0.85, "scoreMaximum": 1,
                "activityProgress": "Completed", "gradingProgress": "FullyGraded",
                "timestamp": "2025-12-08T01:19:49.123Z"})
        );
    }

    #[test]
    fn the_client_assertion_and_token_request() {
        let c = client_assertion_claims("cid", "https://auth.example/token", 1000, "j1");
        assert_eq!(c["iss"], "cid");
        assert_eq!(c["sub"], "cid");
        assert_eq!(
            c["aud"], "https://auth.example/token",
            "a string, not an array"
        );
        assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 300);
        let form = token_request_form("a.b.c");
        assert_eq!(form[0], ("grant_type", "client_credentials".to_string()));
        assert_eq!(form[3].1, SCORE_SCOPE);
    }

    #[test]
    fn token_answers() {
        assert_eq!(
            parse_token_answer(
                200,
                br#"{"access_token":"t","token_type":"Bearer","expires_in":600}"#
            ),
            TokenAnswer::Token(AccessToken {
                token: "t".into(),
                expires_in: 600
            })
        );
        assert_eq!(
            parse_token_answer(200, br#"{"access_token":"t","expires_in":"120"}"#),
            TokenAnswer::Token(AccessToken {
                token: "t".into(),
                expires_in: 120
            })
        );
        let TokenAnswer::Token(t) = parse_token_answer(200, br#"{"access_token":"t"}"#) else {
            panic!()
        };
        assert_eq!(t.expires_in, DEFAULT_EXPIRES_IN);
        assert!(!format!("{t:?}").contains("\"t\""));
        assert_eq!(token_use_for(&t), Duration::from_secs(3540));
        for (status, body, words) in [
            (200, &b"{}"[..], "no access_token"),
            (200, b"not json", "without JSON"),
            (
                200,
                br#"{"access_token":"t","token_type":"mac"}"#,
                "not a bearer",
            ),
            (
                401,
                br#"{"error":"invalid_client","error_description":"unknown kid"}"#,
                "401 invalid_client: unknown kid",
            ),
            (500, b"<html>oops</html>", "500 <html>oops</html>"),
        ] {
            match parse_token_answer(status, body) {
                TokenAnswer::Refused(w) => assert!(w.contains(words), "{w}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn score_answers() {
        let after = Some(Duration::from_secs(7));
        for (status, expected) in [
            (200, ScoreAnswer::Delivered),
            (204, ScoreAnswer::Delivered),
            (401, ScoreAnswer::Unauthorized),
        ] {
            assert_eq!(classify_score_answer(status, None, b""), expected);
        }
        for status in [400, 403, 404, 409, 422] {
            match classify_score_answer(status, None, b"score is out of range") {
                ScoreAnswer::Refused(w) => {
                    assert!(w.contains("score is out of range") && w.contains(&status.to_string()))
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        for status in [429, 500, 502, 503, 302, 418] {
            match classify_score_answer(status, after, b"") {
                ScoreAnswer::Retry { after: a, .. } => assert_eq!(a, after, "{status}"),
                other => panic!("{status}: {other:?}"),
            }
        }
    }
}
