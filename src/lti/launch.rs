//! LTI 1.1 `basic-lti-launch-request`: the rejection reasons and the pure
//! parsing of a launch's parameters into a protocol-neutral [`LaunchParams`].
//!
//! ```
//! use ltigate::lti::launch::{parse, Rejection};
//! let body = vec![("lti_message_type".to_string(), "nope".to_string())];
//! let err = parse(&[], &body, None).unwrap_err();
//! assert_eq!(err.rejection(), Rejection::InvalidRequest);
//! ```

use super::oauth1::SignatureMethod;
use super::roles;

/// Why a launch was refused. Each reason knows its HTTP status, its metric
/// label and the message shown to the learner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Malformed or incomplete launch.
    InvalidRequest,
    /// Body over the launch limit.
    BodyTooLarge,
    /// `oauth_consumer_key` not configured.
    UnknownConsumer,
    /// `oauth_timestamp` outside the allowed skew.
    StaleTimestamp,
    /// Signature did not verify with any secret.
    BadSignature,
    /// `(key, nonce)` was seen before.
    ReplayedNonce,
    /// The store could not answer.
    StoreUnavailable,
    /// The consumer's licences are used up.
    LicenceExhausted,
    /// The upstream does not know the course.
    UnknownCourse,
    /// Provisioning failed.
    UpstreamError,
}

impl Rejection {
    /// Every reason, in check order.
    pub const ALL: [Rejection; 10] = [
        Rejection::InvalidRequest,
        Rejection::BodyTooLarge,
        Rejection::UnknownConsumer,
        Rejection::StaleTimestamp,
        Rejection::BadSignature,
        Rejection::ReplayedNonce,
        Rejection::StoreUnavailable,
        Rejection::LicenceExhausted,
        Rejection::UnknownCourse,
        Rejection::UpstreamError,
    ];

    /// HTTP status of the rejection page.
    pub fn status(self) -> u16 {
        match self {
            Rejection::InvalidRequest => 400,
            Rejection::BodyTooLarge => 413,
            Rejection::UnknownConsumer
            | Rejection::StaleTimestamp
            | Rejection::BadSignature
            | Rejection::ReplayedNonce => 401,
            Rejection::StoreUnavailable => 503,
            Rejection::LicenceExhausted => 403,
            Rejection::UnknownCourse => 404,
            Rejection::UpstreamError => 502,
        }
    }

    /// The `result` label of `ltigate_launches_total`.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::InvalidRequest => "invalid_request",
            Rejection::BodyTooLarge => "body_too_large",
            Rejection::UnknownConsumer => "unknown_consumer",
            Rejection::StaleTimestamp => "stale_timestamp",
            Rejection::BadSignature => "bad_signature",
            Rejection::ReplayedNonce => "replayed_nonce",
            Rejection::StoreUnavailable => "store_unavailable",
            Rejection::LicenceExhausted => "licence_exhausted",
            Rejection::UnknownCourse => "unknown_course",
            Rejection::UpstreamError => "upstream_error",
        }
    }

    /// The message shown to the learner. An unknown key and a bad signature
    /// read the same, so the page does not reveal which keys exist.
    pub fn message(self) -> &'static str {
        match self {
            Rejection::InvalidRequest => {
                "The launch request from your learning management system is incomplete or malformed."
            }
            Rejection::BodyTooLarge => "The launch request is too large.",
            Rejection::UnknownConsumer | Rejection::BadSignature => {
                "The launch could not be verified. Ask your LMS administrator to check the tool's key and secret."
            }
            Rejection::StaleTimestamp => {
                "The launch has expired or the clocks disagree. Go back to your course and open the link again."
            }
            Rejection::ReplayedNonce => {
                "This launch was already used. Go back to your course and open the link again."
            }
            Rejection::StoreUnavailable => {
                "The service is temporarily unavailable. Please try again in a moment."
            }
            Rejection::LicenceExhausted => {
                "All licences for your institution are in use. Please contact your administrator."
            }
            Rejection::UnknownCourse => "This course is not available.",
            Rejection::UpstreamError => {
                "The learning platform could not be reached. Please try again in a moment."
            }
        }
    }
}

/// A launch that is not well formed, with a short detail for logs and the
/// JSON error (never containing parameter values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRequest(pub String);

impl InvalidRequest {
    /// Always [`Rejection::InvalidRequest`].
    pub fn rejection(&self) -> Rejection {
        Rejection::InvalidRequest
    }
}

impl std::fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest accepted `user_id`, in bytes.
pub const MAX_USER_ID: usize = 128;
/// Longest accepted course id, in bytes.
pub const MAX_COURSE_ID: usize = 64;

/// What a well-formed launch says, before its signature is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchParams {
    /// `oauth_consumer_key`.
    pub consumer_key: String,
    /// `oauth_signature_method`.
    pub signature_method: SignatureMethod,
    /// `oauth_timestamp`, unix seconds.
    pub timestamp: i64,
    /// `oauth_nonce`.
    pub nonce: String,
    /// `oauth_signature`.
    pub signature: String,
    /// `user_id`.
    pub user_id: String,
    /// `resource_link_id`.
    pub resource_link_id: String,
    /// Normalised context/institution/system roles.
    pub roles: Vec<String>,
    /// `lis_person_name_given` (or the first word of the full name).
    pub given_name: Option<String>,
    /// `lis_person_name_family` (or the rest of the full name).
    pub family_name: Option<String>,
    /// `lis_person_contact_email_primary`.
    pub email: Option<String>,
    /// The course external ID (path or `custom_course`).
    pub course: String,
    /// `lis_outcome_service_url`.
    pub outcome_service_url: Option<String>,
    /// `lis_result_sourcedid`.
    pub result_sourcedid: Option<String>,
    /// `launch_presentation_return_url` when it is an absolute http(s) URL.
    pub return_url: Option<String>,
    /// `context_id`.
    pub context_id: Option<String>,
}

const OAUTH_REQUIRED: [&str; 5] = [
    "oauth_consumer_key",
    "oauth_signature_method",
    "oauth_timestamp",
    "oauth_nonce",
    "oauth_signature",
];

/// Looks a parameter up in body then query. A name given more than once with
/// different values is ambiguous and refused (parameter pollution); the same
/// value twice is what Canvas does with launch-URL query parameters.
fn single<'a>(
    query: &'a [(String, String)],
    body: &'a [(String, String)],
    name: &str,
) -> Result<Option<&'a str>, InvalidRequest> {
    single_where(query, body, name, |n| n == name)
}

/// [`single`] over every parameter whose name `matches`.
fn single_where<'a>(
    query: &'a [(String, String)],
    body: &'a [(String, String)],
    name: &str,
    matches: impl Fn(&str) -> bool,
) -> Result<Option<&'a str>, InvalidRequest> {
    let mut found: Option<&str> = None;
    for (n, v) in body.iter().chain(query.iter()) {
        if matches(n) {
            match found {
                None => found = Some(v),
                Some(prev) if prev == v => {}
                Some(_) => {
                    return Err(InvalidRequest(format!(
                        "{name} is given twice with different values"
                    )))
                }
            }
        }
    }
    Ok(found)
}

/// Whether `sent` names the custom parameter `custom_<name>` (`name` in
/// lowercase): LTI 1.1 §3.2 has the consumer lowercase a custom parameter's
/// name and turn every character other than a–z and 0–9 into `_`; a consumer
/// that did not is read as if it had.
fn is_custom(sent: &str, name: &str) -> bool {
    let normalised = sent.bytes().map(|b| match b.to_ascii_lowercase() {
        c @ (b'a'..=b'z' | b'0'..=b'9') => c,
        _ => b'_',
    });
    sent.len() == "custom_".len() + name.len()
        && normalised.eq(b"custom_".iter().chain(name.as_bytes()).copied())
}

fn non_empty(v: Option<&str>) -> Option<String> {
    v.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Checks that the parameters form a `basic-lti-launch-request` and extracts
/// what ltigate needs. `path_course` is the course from
/// `/lti/launch/{course}`, already percent-decoded.
pub fn parse(
    query: &[(String, String)],
    body: &[(String, String)],
    path_course: Option<&str>,
) -> Result<LaunchParams, InvalidRequest> {
    let get = |name: &str| single(query, body, name);
    check_message(query, body)?;
    let resource_link_id = non_empty(get("resource_link_id")?)
        .ok_or_else(|| InvalidRequest("resource_link_id is missing".into()))?;
    let user_id = user_id(get("user_id")?)?;
    let (signature_method, timestamp, nonce) = oauth_fields(&get)?;
    let course = course(query, body, path_course)?;
    let (given_name, family_name) = names(&get)?;
    let return_url = non_empty(get("launch_presentation_return_url")?).filter(|u| {
        let lower = u.to_ascii_lowercase();
        (lower.starts_with("https://") || lower.starts_with("http://"))
            && !u.chars().any(|c| c.is_control() || c.is_whitespace())
    });

    Ok(LaunchParams {
        consumer_key: get("oauth_consumer_key")?.unwrap_or_default().to_string(),
        signature_method,
        timestamp,
        nonce,
        signature: get("oauth_signature")?.unwrap_or_default().to_string(),
        user_id,
        resource_link_id,
        roles: roles::normalize(get("roles")?.unwrap_or_default()),
        given_name,
        family_name,
        email: non_empty(get("lis_person_contact_email_primary")?),
        course,
        outcome_service_url: non_empty(get("lis_outcome_service_url")?),
        // The consumer's identifier, echoed verbatim in every outcome request.
        result_sourcedid: get("lis_result_sourcedid")?
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string),
        return_url,
        context_id: non_empty(get("context_id")?),
    })
}

/// A `basic-lti-launch-request` of LTI 1.0/1.1 with every required OAuth
/// parameter, each `oauth_*` parameter exactly once across query and body
/// (linear: a body of thousands of distinct names costs no more than other
/// names).
fn check_message(
    query: &[(String, String)],
    body: &[(String, String)],
) -> Result<(), InvalidRequest> {
    let mut seen = std::collections::HashSet::new();
    for (name, _) in query.iter().chain(body.iter()) {
        if name.starts_with("oauth_") && !seen.insert(name.as_str()) {
            return Err(InvalidRequest(format!("{name} is given more than once")));
        }
    }
    let get = |name: &str| single(query, body, name);
    match get("lti_message_type")? {
        Some("basic-lti-launch-request") => {}
        Some(_) => {
            return Err(InvalidRequest(
                "lti_message_type must be basic-lti-launch-request".into(),
            ))
        }
        None => return Err(InvalidRequest("lti_message_type is missing".into())),
    }
    match get("lti_version")? {
        Some("LTI-1p0") => {}
        Some(_) => return Err(InvalidRequest("lti_version must be LTI-1p0".into())),
        None => return Err(InvalidRequest("lti_version is missing".into())),
    }
    for name in OAUTH_REQUIRED {
        if get(name)?.is_none_or(str::is_empty) {
            return Err(InvalidRequest(format!("{name} is missing")));
        }
    }
    Ok(())
}

/// The LMS's `user_id`: present, bounded, no control characters.
fn user_id(sent: Option<&str>) -> Result<String, InvalidRequest> {
    let user_id = non_empty(sent).ok_or_else(|| InvalidRequest("user_id is missing".into()))?;
    if user_id.len() > MAX_USER_ID {
        return Err(InvalidRequest(format!(
            "user_id is longer than {MAX_USER_ID} bytes"
        )));
    }
    if user_id.chars().any(char::is_control) {
        return Err(InvalidRequest("user_id contains control characters".into()));
    }
    Ok(user_id)
}

/// Signature method, timestamp and nonce, each well-formed.
fn oauth_fields<'a>(
    get: &impl Fn(&str) -> Result<Option<&'a str>, InvalidRequest>,
) -> Result<(SignatureMethod, i64, String), InvalidRequest> {
    let method_text = get("oauth_signature_method")?.unwrap_or_default();
    let signature_method = SignatureMethod::parse(method_text).ok_or_else(|| {
        InvalidRequest("oauth_signature_method must be HMAC-SHA1 or HMAC-SHA256".into())
    })?;
    match get("oauth_version")? {
        None | Some("1.0") => {}
        Some(_) => return Err(InvalidRequest("oauth_version must be 1.0".into())),
    }
    let ts_text = get("oauth_timestamp")?.unwrap_or_default();
    if ts_text.is_empty() || ts_text.len() > 12 || !ts_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidRequest("oauth_timestamp is not a number".into()));
    }
    let timestamp: i64 = ts_text
        .parse()
        .map_err(|_| InvalidRequest("oauth_timestamp is not a number".into()))?;
    let nonce = get("oauth_nonce")?.unwrap_or_default().to_string();
    if nonce.len() > 256 {
        return Err(InvalidRequest(
            "oauth_nonce is longer than 256 bytes".into(),
        ));
    }
    Ok((signature_method, timestamp, nonce))
}

/// The course: from the launch URL's path or the `course` custom parameter
/// (under any name the LMS may have left unnormalised); both must agree.
fn course(
    query: &[(String, String)],
    body: &[(String, String)],
    path_course: Option<&str>,
) -> Result<String, InvalidRequest> {
    let custom_course = non_empty(single_where(query, body, "custom_course", |n| {
        is_custom(n, "course")
    })?);
    let path_course = path_course.map(str::trim).filter(|c| !c.is_empty());
    let course = match (path_course, custom_course) {
        (Some(p), Some(c)) if p != c => {
            return Err(InvalidRequest(
                "the course in the launch URL differs from custom_course".into(),
            ))
        }
        (Some(p), _) => p.to_string(),
        (None, Some(c)) => c,
        (None, None) => {
            return Err(InvalidRequest(
                "no course: append it to the launch URL or send the custom parameter course".into(),
            ))
        }
    };
    if course.len() > MAX_COURSE_ID {
        return Err(InvalidRequest(format!(
            "the course id is longer than {MAX_COURSE_ID} bytes"
        )));
    }
    if course.chars().any(char::is_control) {
        return Err(InvalidRequest(
            "the course id contains control characters".into(),
        ));
    }
    Ok(course)
}

/// Given and family name; split from the full name when the LMS sends only
/// that.
fn names<'a>(
    get: &impl Fn(&str) -> Result<Option<&'a str>, InvalidRequest>,
) -> Result<(Option<String>, Option<String>), InvalidRequest> {
    let mut given_name = non_empty(get("lis_person_name_given")?);
    let mut family_name = non_empty(get("lis_person_name_family")?);
    if given_name.is_none() && family_name.is_none() {
        if let Some(full) = non_empty(get("lis_person_name_full")?) {
            match full.split_once(char::is_whitespace) {
                Some((g, f)) => {
                    given_name = Some(g.to_string());
                    family_name = non_empty(Some(f));
                }
                None => given_name = Some(full),
            }
        }
    }
    Ok((given_name, family_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn base() -> Vec<(String, String)> {
        pairs(&[
            ("lti_message_type", "basic-lti-launch-request"),
            ("lti_version", "LTI-1p0"),
            ("resource_link_id", "r1"),
            ("user_id", "u1"),
            (
                "roles",
                "urn:lti:role:ims/lis/Learner/GuestLearner,urn:lti:instrole:ims/lis/Instructor",
            ),
            ("lis_person_name_full", "Zoë van Dijk"),
            ("custom_course", "C-1"),
            ("oauth_consumer_key", "k"),
            ("oauth_signature_method", "HMAC-SHA256"),
            ("oauth_timestamp", "1700000000"),
            ("oauth_nonce", "n"),
            ("oauth_version", "1.0"),
            ("oauth_signature", "sig"),
        ])
    }

    #[test]
    fn parses_a_good_launch() {
        let p = parse(&[], &base(), None).unwrap();
        assert_eq!(p.course, "C-1");
        assert_eq!(p.signature_method, SignatureMethod::HmacSha256);
        assert_eq!(
            p.roles,
            vec!["Learner".to_string(), "inst:Instructor".to_string()]
        );
        assert_eq!(p.given_name.as_deref(), Some("Zoë"));
        assert_eq!(p.family_name.as_deref(), Some("van Dijk"));
        assert_eq!(p.timestamp, 1_700_000_000);
    }

    #[test]
    fn custom_course_is_read_under_any_unnormalised_name() {
        for name in [
            "custom_course",
            "custom_Course",
            "Custom-COURSE",
            "custom.course",
        ] {
            let mut b = base();
            b.retain(|(n, _)| n != "custom_course");
            b.push((name.into(), "C-7".into()));
            assert_eq!(parse(&[], &b, None).unwrap().course, "C-7", "{name}");
        }
        for name in [
            "custom_courses",
            "custom_cours",
            "course",
            "ext_course",
            "custom_coursé",
        ] {
            let mut b = base();
            b.retain(|(n, _)| n != "custom_course");
            b.push((name.into(), "C-7".into()));
            assert!(parse(&[], &b, None).is_err(), "{name}");
        }
        // Two spellings with different values are as ambiguous as one name twice.
        let mut b = base();
        b.push(("custom_Course".into(), "C-8".into()));
        assert!(parse(&[], &b, None).unwrap_err().0.contains("twice"));
    }

    #[test]
    fn the_result_sourcedid_is_kept_verbatim() {
        let with = |v: &str| {
            let mut b = base();
            b.push(("lis_result_sourcedid".into(), v.into()));
            parse(&[], &b, None).unwrap().result_sourcedid
        };
        assert_eq!(with(" 4f:a b \n").as_deref(), Some(" 4f:a b \n"));
        assert_eq!(with(" \t"), None);
        assert_eq!(with(""), None);
        assert_eq!(parse(&[], &base(), None).unwrap().result_sourcedid, None);
    }

    #[test]
    fn course_variants() {
        let mut b = base();
        b.retain(|(n, _)| n != "custom_course");
        assert_eq!(parse(&[], &b, Some("C-9")).unwrap().course, "C-9");
        assert!(parse(&[], &b, None).unwrap_err().0.contains("no course"));
        assert!(parse(&[], &base(), Some("C-2"))
            .unwrap_err()
            .0
            .contains("differs"));
        assert_eq!(parse(&[], &base(), Some("C-1")).unwrap().course, "C-1");
    }

    #[test]
    fn refuses_malformed_launches() {
        type Mutation = Box<dyn Fn(&mut Vec<(String, String)>)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|b| b.retain(|(n, _)| n != "user_id")),
                "user_id is missing",
            ),
            (
                Box::new(|b| b.retain(|(n, _)| n != "resource_link_id")),
                "resource_link_id",
            ),
            (
                Box::new(|b| b.retain(|(n, _)| n != "oauth_nonce")),
                "oauth_nonce is missing",
            ),
            (
                Box::new(|b| b.push(("oauth_nonce".into(), "n".into()))),
                "oauth_nonce is given more than once",
            ),
            (
                Box::new(|b| b[0].1 = "ContentItemSelectionRequest".into()),
                "lti_message_type",
            ),
            (Box::new(|b| b[1].1 = "LTI-2p0".into()), "lti_version"),
            (
                Box::new(|b| b[8].1 = "PLAINTEXT".into()),
                "oauth_signature_method",
            ),
            (Box::new(|b| b[9].1 = "12a".into()), "oauth_timestamp"),
            (Box::new(|b| b[11].1 = "2.0".into()), "oauth_version"),
            (
                Box::new(|b| b.push(("user_id".into(), "other".into()))),
                "user_id is given twice",
            ),
            (Box::new(|b| b[3].1 = "x".repeat(200)), "user_id is longer"),
        ];
        for (mutate, needle) in cases {
            let mut b = base();
            mutate(&mut b);
            let err = parse(&[], &b, None).unwrap_err();
            assert!(err.0.contains(needle), "{needle}: got {err}");
        }
    }

    #[test]
    fn oauth_parameter_in_query_and_body_is_refused() {
        let q = pairs(&[("oauth_nonce", "n")]);
        assert!(parse(&q, &base(), None).is_err());
    }

    #[test]
    fn canvas_query_copy_is_fine() {
        let q = pairs(&[("custom_course", "C-1")]);
        assert_eq!(parse(&q, &base(), None).unwrap().course, "C-1");
    }

    #[test]
    fn return_url_only_when_absolute_http() {
        let mut b = base();
        b.push((
            "launch_presentation_return_url".into(),
            "javascript:alert(1)".into(),
        ));
        assert_eq!(parse(&[], &b, None).unwrap().return_url, None);
        let mut b = base();
        b.push((
            "launch_presentation_return_url".into(),
            "https://lms.example/return".into(),
        ));
        assert_eq!(
            parse(&[], &b, None).unwrap().return_url.as_deref(),
            Some("https://lms.example/return")
        );
    }

    #[test]
    fn every_reason_has_distinct_label() {
        let labels: std::collections::HashSet<_> =
            Rejection::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Rejection::ALL.len());
        assert_eq!(
            Rejection::UnknownConsumer.message(),
            Rejection::BadSignature.message()
        );
    }
}
