//! Property tests of the protocol code: launches signed by an independent
//! OAuth 1.0a implementation (written here from RFC 5849, and oauthlib)
//! verify in ltigate and stop verifying after any single change; form
//! encoding, POX messages and session cookies round-trip.

use std::io::Write as _;
use std::process::{Command, Stdio};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use ltigate::lti::cartridge::{self, Cartridge};
use ltigate::lti::encode::{form_encode, parse_form, percent_encode};
use ltigate::lti::oauth1::{self, SignatureMethod, VerifyRequest};
use ltigate::lti::outcomes::{build_request, format_score, parse_request, Operation, PoxError};
use ltigate::lti::LtiVersion;
use ltigate::secret::Secret;
use ltigate::session::{CourseRoles, Sealer, Session, MAX_COOKIE_VALUE};

/// OAuth 1.0a signing as RFC 5849 §3.4 describes it, sharing no code with
/// `ltigate::lti`.
mod rfc5849 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use hmac::{Hmac, Mac};

    /// §3.6: bytes of the unreserved set `ALPHA / DIGIT / "-" / "." / "_" / "~"`
    /// stay, every other byte becomes `%` and two uppercase hex digits.
    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::new();
        for &b in bytes {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// §3.4.1.2: lowercase scheme and host, the port only when it is not the
    /// scheme's default, the path as sent (`/` when empty), no query.
    pub fn base_uri(scheme: &str, host: &str, port: Option<u16>, path: &str) -> String {
        let scheme = scheme.to_lowercase();
        let mut uri = format!("{scheme}://{}", host.to_lowercase());
        match (scheme.as_str(), port) {
            (_, None) | ("http", Some(80)) | ("https", Some(443)) => {}
            (_, Some(port)) => uri.push_str(&format!(":{port}")),
        }
        uri.push_str(if path.is_empty() { "/" } else { path });
        uri
    }

    /// §3.4.1: the signature base string over `params` (query and body
    /// parameters, decoded), leaving out only `oauth_signature`.
    pub fn base_string(http_method: &str, uri: &str, params: &[(String, String)]) -> String {
        let mut encoded: Vec<(String, String)> = params
            .iter()
            .filter(|(name, _)| name != "oauth_signature")
            .map(|(n, v)| (encode(n.as_bytes()), encode(v.as_bytes())))
            .collect();
        encoded.sort();
        let normalized: Vec<String> = encoded.iter().map(|(n, v)| format!("{n}={v}")).collect();
        format!(
            "{}&{}&{}",
            http_method.to_uppercase(),
            encode(uri.as_bytes()),
            encode(normalized.join("&").as_bytes())
        )
    }

    /// §3.4.2 (and its SHA-256 variant): the key is `encode(consumer secret)&`
    /// (no token), the signature the base64 of the HMAC.
    pub fn sign(sha256: bool, base_string: &str, consumer_secret: &[u8]) -> String {
        let key = format!("{}&", encode(consumer_secret));
        let digest = if sha256 {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes())
                .unwrap_or_else(|e| panic!("HMAC key: {e}"));
            mac.update(base_string.as_bytes());
            mac.finalize().into_bytes().to_vec()
        } else {
            let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes())
                .unwrap_or_else(|e| panic!("HMAC key: {e}"));
            mac.update(base_string.as_bytes());
            mac.finalize().into_bytes().to_vec()
        };
        STANDARD.encode(digest)
    }

    /// An `application/x-www-form-urlencoded` encoding written independently
    /// of ltigate's: spaces as `+` or `%20`, hex digits upper or lower case.
    pub fn form(pairs: &[(String, String)], plus_for_space: bool, lower_hex: bool) -> String {
        let one = |s: &str| {
            let mut out = String::new();
            for &b in s.as_bytes() {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    out.push(char::from(b));
                } else if b == b' ' && plus_for_space {
                    out.push('+');
                } else if lower_hex {
                    out.push_str(&format!("%{b:02x}"));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        };
        pairs
            .iter()
            .map(|(n, v)| format!("{}={}", one(n), one(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

// ---------------------------------------------------------------------------
// Launches

/// Parameter names: LTI's own, `custom_*`, and anything at all.
fn param_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "lti_message_type",
            "lti_version",
            "resource_link_id",
            "user_id",
            "roles",
            "context_id",
            "lis_result_sourcedid",
            "lis_outcome_service_url",
            "launch_presentation_return_url",
            "realm",
            "oauth_token",
            "",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z0-9 _&=+%/?#:.~-]{0,12}".prop_map(|s| format!("custom_{s}")),
        "[&=+%/?# a-z~.-]{1,8}",
        any::<String>(),
    ]
    .prop_filter("oauth_signature is the signature itself", |n| {
        n != "oauth_signature"
    })
}

/// Values: empty, reserved characters, unicode, anything at all.
fn param_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[&=+%/?# a-zA-Z0-9]{0,16}",
        "\\PC{0,16}",
        any::<String>(),
    ]
}

/// Up to `max` parameters, some of them repeated (same name, same or other
/// value).
fn params(max: usize) -> impl Strategy<Value = Vec<(String, String)>> {
    (
        prop::collection::vec((param_name(), param_value()), 0..max),
        prop::collection::vec((any::<Index>(), any::<bool>(), param_value()), 0..3),
    )
        .prop_map(|(mut pairs, repeats)| {
            if !pairs.is_empty() {
                for (index, same_value, value) in repeats {
                    let (name, old) = index.get(&pairs).clone();
                    pairs.push((name, if same_value { old } else { value }));
                }
            }
            pairs
        })
}

/// A launch as an LMS signs it.
#[derive(Debug, Clone)]
struct Launch {
    scheme: String,
    host: String,
    port: Option<u16>,
    /// Raw path, percent-encoded as sent.
    path: String,
    query: Vec<(String, String)>,
    /// Body parameters including the `oauth_*` ones, without `oauth_signature`.
    body: Vec<(String, String)>,
    secret: Vec<u8>,
    sha256: bool,
    plus_for_space: bool,
    lower_hex: bool,
}

impl Launch {
    fn method(&self) -> SignatureMethod {
        if self.sha256 {
            SignatureMethod::HmacSha256
        } else {
            SignatureMethod::HmacSha1
        }
    }

    fn url(&self) -> String {
        let mut url = format!("{}://{}", self.scheme, self.host);
        if let Some(port) = self.port {
            url.push_str(&format!(":{port}"));
        }
        url.push_str(&self.path);
        if !self.query.is_empty() {
            url.push('?');
            url.push_str(&rfc5849::form(
                &self.query,
                self.plus_for_space,
                self.lower_hex,
            ));
        }
        url
    }

    /// The signature of the independent implementation.
    fn signature(&self) -> String {
        let uri = rfc5849::base_uri(&self.scheme, &self.host, self.port, &self.path);
        let all: Vec<(String, String)> = self.query.iter().chain(&self.body).cloned().collect();
        let base = rfc5849::base_string("POST", &uri, &all);
        rfc5849::sign(self.sha256, &base, &self.secret)
    }

    /// The form body sent, `oauth_signature` last.
    fn wire_body(&self, signature: &str) -> String {
        let mut body = self.body.clone();
        body.push(("oauth_signature".to_owned(), signature.to_owned()));
        rfc5849::form(&body, self.plus_for_space, self.lower_hex)
    }
}

fn launch() -> impl Strategy<Value = Launch> {
    let host = "[a-zA-Z][a-zA-Z0-9-]{0,10}(\\.[a-zA-Z]{2,6}){1,2}";
    let path = prop::collection::vec("\\PC{0,8}", 0..4).prop_map(|segments| {
        segments
            .iter()
            .map(|s| format!("/{}", rfc5849::encode(s.as_bytes())))
            .collect::<String>()
    });
    let port = prop_oneof![
        Just(None),
        Just(Some(80u16)),
        Just(Some(443u16)),
        (1u16..=65535).prop_map(Some),
    ];
    let oauth = (
        "[a-zA-Z0-9._-]{1,24}",
        "[a-zA-Z0-9]{8,42}",
        1_000_000_000u64..2_000_000_000,
    );
    (
        (
            prop::sample::select(vec!["http", "https", "HTTPS", "Http"]),
            host,
            port,
            path,
        ),
        params(4),
        params(10),
        oauth,
        prop::collection::vec(any::<u8>(), 0..24),
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<Index>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (scheme, host, port, path),
                query,
                mut body,
                (key, nonce, timestamp),
                secret,
                (sha256, plus_for_space, lower_hex, at, bare),
            )| {
                let method = if sha256 { "HMAC-SHA256" } else { "HMAC-SHA1" };
                let mut oauth = vec![
                    ("oauth_consumer_key", key),
                    ("oauth_nonce", nonce),
                    ("oauth_signature_method", method.to_owned()),
                    ("oauth_timestamp", timestamp.to_string()),
                ];
                // oauth_version and oauth_callback are optional: a consumer
                // that leaves them out signs without them, and the verifier
                // must not add them.
                if !bare {
                    oauth.push(("oauth_version", "1.0".to_owned()));
                    oauth.push(("oauth_callback", "about:blank".to_owned()));
                }
                // The OAuth parameters sit somewhere among the others.
                let position = at.index(body.len() + 1);
                for (i, (name, value)) in oauth.into_iter().enumerate() {
                    body.insert(position + i, (name.to_owned(), value));
                }
                Launch {
                    scheme: scheme.to_owned(),
                    host,
                    port,
                    path,
                    query,
                    body,
                    secret,
                    sha256,
                    plus_for_space,
                    lower_hex,
                }
            },
        )
}

/// Verifies a received launch the way the gate does: base string URI and
/// query from the URL, body from the form, `oauth_signature` from the body.
fn ltigate_verify(
    url: &str,
    wire_body: &str,
    method: SignatureMethod,
    secret: &[u8],
) -> Option<usize> {
    let base_uri = oauth1::base_string_uri_from_url(url).ok()?;
    let raw_query = url.split_once('?').map_or("", |(_, q)| q);
    let query = parse_form(raw_query.as_bytes()).ok()?;
    let body = parse_form(wire_body.as_bytes()).ok()?;
    let signature = body
        .iter()
        .find(|(n, _)| n == "oauth_signature")
        .map(|(_, v)| v.clone())?;
    let req = VerifyRequest {
        http_method: "POST",
        base_uri: &base_uri,
        query: &query,
        body: &body,
        method,
        signature: &signature,
    };
    oauth1::verify(&req, &[secret])
}

/// `s` with the character that holds byte `at` (modulo the length) replaced
/// by the ASCII `replacement`, or `replacement` alone when `s` is empty;
/// `None` when that changes nothing.
fn change_one(s: &str, at: Index, replacement: char) -> Option<String> {
    if s.is_empty() {
        return Some(replacement.to_string());
    }
    let mut start = at.index(s.len());
    while !s.is_char_boundary(start) {
        start -= 1;
    }
    let old = s[start..].chars().next()?;
    if old == replacement {
        return None;
    }
    let mut changed = s.to_owned();
    changed.replace_range(
        start..start + old.len_utf8(),
        replacement.encode_utf8(&mut [0; 4]),
    );
    Some(changed)
}

/// Printable ASCII.
fn ascii_char() -> impl Strategy<Value = char> {
    (0x20u8..0x7f).prop_map(char::from)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A launch signed independently verifies in ltigate.
    #[test]
    fn independently_signed_launch_verifies(l in launch()) {
        let signature = l.signature();
        let url = l.url();
        prop_assert_eq!(
            ltigate_verify(&url, &l.wire_body(&signature), l.method(), &l.secret),
            Some(0),
            "url {}", url
        );
    }

    /// Changing one character of one parameter's name or value breaks the
    /// signature.
    #[test]
    fn changed_parameter_fails(
        l in launch(),
        which in any::<Index>(),
        in_name in any::<bool>(),
        at in any::<Index>(),
        replacement in ascii_char(),
    ) {
        let signature = l.signature();
        let mut changed = l.clone();
        let total = changed.query.len() + changed.body.len();
        let i = which.index(total);
        let pair = if i < changed.query.len() {
            &mut changed.query[i]
        } else {
            &mut changed.body[i - l.query.len()]
        };
        let field = if in_name { &mut pair.0 } else { &mut pair.1 };
        let Some(new) = change_one(field, at, replacement) else {
            return Ok(());
        };
        *field = new;
        let url = changed.url();
        prop_assert_eq!(
            ltigate_verify(&url, &changed.wire_body(&signature), l.method(), &l.secret),
            None,
            "url {}", url
        );
    }

    /// Changing one byte of the URL breaks the signature, unless the change
    /// only alters the case of a letter (scheme and host are case-insensitive,
    /// percent-escapes too).
    #[test]
    fn changed_url_fails(
        l in launch(),
        at in any::<Index>(),
        replacement in "[a-z0-9]",
    ) {
        let signature = l.signature();
        let url = l.url();
        let i = at.index(url.len());
        let replacement = replacement.as_bytes()[0];
        let original = url.as_bytes()[i];
        prop_assume!(!original.eq_ignore_ascii_case(&replacement));
        let mut bytes = url.into_bytes();
        bytes[i] = replacement;
        let changed = String::from_utf8(bytes).unwrap_or_default();
        prop_assert_eq!(
            ltigate_verify(&changed, &l.wire_body(&signature), l.method(), &l.secret),
            None,
            "url {}", changed
        );
    }

    /// A secret with one byte changed (or one added to an empty one) does not
    /// verify the launch.
    #[test]
    fn changed_secret_fails(l in launch(), at in any::<Index>(), byte in any::<u8>()) {
        let signature = l.signature();
        let mut secret = l.secret.clone();
        if secret.is_empty() {
            secret.push(byte);
        } else {
            let i = at.index(secret.len());
            prop_assume!(secret[i] != byte);
            secret[i] = byte;
        }
        prop_assert_eq!(
            ltigate_verify(&l.url(), &l.wire_body(&signature), l.method(), &secret),
            None
        );
    }

    /// ltigate's percent-encoding is RFC 5849's.
    #[test]
    fn percent_encoding_matches_rfc5849(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(percent_encode(&bytes), rfc5849::encode(&bytes));
    }

    /// `parse_form(form_encode(pairs)) == pairs`, and the same for forms
    /// encoded with `+` for spaces or lowercase hex.
    #[test]
    fn form_encoding_round_trips(
        pairs in prop::collection::vec((any::<String>(), any::<String>()), 0..8),
        plus_for_space in any::<bool>(),
        lower_hex in any::<bool>(),
    ) {
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        prop_assert_eq!(parse_form(form_encode(&refs).as_bytes()), Ok(pairs.clone()));
        let other = rfc5849::form(&pairs, plus_for_space, lower_hex);
        prop_assert_eq!(parse_form(other.as_bytes()), Ok(pairs));
    }
}

/// Whether `python3` can `import oauthlib`; when it cannot, the oauthlib
/// test is skipped locally and fails on CI (which installs it).
fn python_with(module: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with {module} is required on CI"
        );
        eprintln!("skipped: python3 with {module} is not available");
    }
    ok
}

/// Runs `script` with `input` on stdin and returns its stdout lines.
fn python(script: &str, input: &str) -> Vec<String> {
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(input.as_bytes()))
        .transpose()
        .unwrap_or_else(|e| panic!("writing to python3: {e}"));
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    assert!(out.status.success(), "python3 failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Signs launches given as JSON lines
/// `{"url", "key", "secret", "method", "params"}` with oauthlib (as
/// tests/lms/sign_launch.py does) and prints each signed form body on a line.
const OAUTHLIB_SIGNER: &str = r#"
import json, sys
from oauthlib.oauth1 import SIGNATURE_TYPE_BODY, Client
for line in sys.stdin:
    spec = json.loads(line)
    client = Client(spec["key"], client_secret=spec["secret"],
                    signature_method=spec["method"],
                    signature_type=SIGNATURE_TYPE_BODY,
                    callback_uri="about:blank")
    _, _, body = client.sign(spec["url"], http_method="POST",
                             body=[tuple(p) for p in spec["params"]],
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    print(body)
"#;

/// 50 random launches signed by oauthlib verify in ltigate.
#[test]
fn oauthlib_signed_launches_verify() {
    if !python_with("oauthlib") {
        return;
    }
    let mut runner = TestRunner::deterministic();
    // oauthlib adds its own oauth_* parameters and wants a text secret.
    let strategy = (
        launch(),
        "\\PC{0,20}",
        prop::collection::vec((param_name(), param_value()), 0..3),
    );
    let mut launches = Vec::new();
    let mut specs = String::new();
    while launches.len() < 50 {
        let (mut l, secret, extra) = strategy
            .new_tree(&mut runner)
            .unwrap_or_else(|e| panic!("strategy: {e}"))
            .current();
        l.body.retain(|(n, _)| !n.starts_with("oauth_"));
        l.query.retain(|(n, _)| !n.starts_with("oauth_"));
        l.body
            .extend(extra.into_iter().filter(|(n, _)| !n.starts_with("oauth_")));
        l.secret = secret.clone().into_bytes();
        let spec = serde_json::json!({
            "url": l.url(),
            "key": "consumer-key",
            "secret": secret,
            "method": l.method().as_str(),
            "params": l.body,
        });
        specs.push_str(&spec.to_string());
        specs.push('\n');
        launches.push(l);
    }
    let bodies = python(OAUTHLIB_SIGNER, &specs);
    assert_eq!(bodies.len(), launches.len());
    for (l, body) in launches.iter().zip(&bodies) {
        let url = l.url();
        assert_eq!(
            ltigate_verify(&url, body, l.method(), &l.secret),
            Some(0),
            "oauthlib launch to {url} with body {body}"
        );
        // The independent implementation agrees with oauthlib.
        let received = parse_form(body.as_bytes()).unwrap_or_default();
        let signature = received
            .iter()
            .find(|(n, _)| n == "oauth_signature")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let uri = rfc5849::base_uri(&l.scheme, &l.host, l.port, &l.path);
        let all: Vec<(String, String)> = l.query.iter().chain(&received).cloned().collect();
        let base = rfc5849::base_string("POST", &uri, &all);
        assert_eq!(rfc5849::sign(l.sha256, &base, &l.secret), signature);
    }
}

// ---------------------------------------------------------------------------
// POX

/// Whether XML 1.0 can carry `c`.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Strings XML can carry, including line ends, tabs and markup characters.
fn xml_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ \t\r\n<>&\"';{}:a-z0-9]{0,24}",
        any::<String>().prop_map(|s| s.chars().filter(|&c| is_xml_char(c)).collect()),
    ]
}

/// Every double in [0, 1], chosen by bit pattern (so subnormals and values
/// next to 0 and 1 come up), plus the usual ones.
fn unit_score() -> impl Strategy<Value = f64> {
    prop_oneof![
        (0u64..=1.0f64.to_bits()).prop_map(f64::from_bits),
        0.0f64..=1.0,
        prop::sample::select(vec![0.0, 1.0, 0.1, 0.5, 1.0 / 3.0, f64::MIN_POSITIVE]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The formatted score reads back as exactly the same number.
    #[test]
    fn score_text_is_exact(score in unit_score()) {
        let text = format_score(score).unwrap_or_default();
        prop_assert!(!text.contains(['e', 'E']), "{}", text);
        prop_assert_eq!(text.parse::<f64>().map(f64::to_bits), Ok(score.to_bits()));
    }

    /// A replaceResult request round-trips its score and its sourcedId,
    /// verbatim (the message identifier is trimmed; a blank sourcedId is none).
    #[test]
    fn pox_request_round_trips(
        score in unit_score(),
        message_id in xml_text(),
        sourced_id in xml_text(),
    ) {
        for op in [Operation::Replace { score }, Operation::Read, Operation::Delete] {
            let xml = build_request(&message_id, &sourced_id, &op);
            prop_assert!(xml.is_ok(), "{:?}", xml);
            let parsed = parse_request(xml.unwrap_or_default().as_bytes());
            if sourced_id.trim().is_empty() {
                prop_assert_eq!(parsed, Err(PoxError::Missing("sourcedId")));
                continue;
            }
            prop_assert!(parsed.is_ok(), "{:?}", parsed);
            let parsed = parsed.unwrap_or_else(|_| unreachable!());
            prop_assert_eq!(&parsed.sourced_id, &sourced_id);
            prop_assert_eq!(&parsed.message_id, message_id.trim());
            prop_assert_eq!(parsed.operation, op);
        }
    }

    /// A character XML cannot carry is refused, never sent.
    #[test]
    fn pox_request_refuses_what_xml_cannot_carry(
        before in xml_text(),
        bad in prop_oneof![
            (0u32..0x20).prop_filter("tab, newline and CR are allowed", |c| ![9, 10, 13].contains(c)),
            Just(0xFFFE),
            Just(0xFFFF),
        ],
        after in xml_text(),
    ) {
        let bad = char::from_u32(bad).unwrap_or('\u{0}');
        let id = format!("{before}{bad}{after}");
        prop_assert_eq!(
            build_request("m", &id, &Operation::Read),
            Err(PoxError::InvalidXmlChar("sourcedId"))
        );
    }
}

/// Reads values back through Python's expat (a conforming XML processor):
/// each input line is a JSON `[xml, [[tag, attribute or null], ...]]`, each
/// output line the JSON list of the texts or attribute values of the first
/// element with that local name.
const EXPAT_READER: &str = r#"
import json, sys
import xml.etree.ElementTree as ET
for line in sys.stdin:
    xml, wanted = json.loads(line)
    root = ET.fromstring(xml.encode("utf-8"))
    out = []
    for tag, attr in wanted:
        el = next(e for e in root.iter() if e.tag.split("}")[-1] == tag)
        out.append(el.get(attr) if attr else (el.text or ""))
    print(json.dumps(out))
"#;

/// POX requests and cartridges read by a conforming XML processor give back
/// exactly the values put in, line ends and tabs included.
#[test]
fn builders_survive_a_conforming_xml_processor() {
    if !python_with("xml.etree.ElementTree") {
        return;
    }
    let mut runner = TestRunner::deterministic();
    let strategy = (xml_text(), xml_text(), xml_text(), xml_text());
    let mut cases = Vec::new();
    let mut input = String::new();
    for _ in 0..64 {
        let (a, b, c, d) = strategy
            .new_tree(&mut runner)
            .unwrap_or_else(|e| panic!("strategy: {e}"))
            .current();
        let request = build_request(&a, &b, &Operation::Read).unwrap_or_default();
        let custom = [(c.as_str(), d.as_str())];
        let link = cartridge::build(&Cartridge {
            title: &a,
            description: "",
            launch_url: "https://tool.example/launch",
            custom: &custom,
            icon_url: None,
        });
        let lines = [
            serde_json::json!([
                request,
                [["imsx_messageIdentifier", null], ["sourcedId", null]]
            ]),
            serde_json::json!([
                link,
                [["title", null], ["property", "name"], ["property", null]]
            ]),
        ];
        for line in lines {
            input.push_str(&line.to_string());
            input.push('\n');
        }
        cases.push(vec![a.clone(), b]);
        cases.push(vec![a, c, d]);
    }
    let read = python(EXPAT_READER, &input);
    assert_eq!(read.len(), cases.len());
    for (expected, line) in cases.iter().zip(&read) {
        let got: Vec<String> = serde_json::from_str(line).unwrap_or_default();
        assert_eq!(&got, expected);
    }
}

// ---------------------------------------------------------------------------
// Session cookies

fn key() -> Secret {
    Secret::new([0x5au8; 32])
}

fn short_text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9 @.:_-]{0,20}", "\\PC{0,12}"]
}

/// Sessions small enough to seal without dropping anything, with names free
/// of control characters and within their bounds.
fn small_session() -> impl Strategy<Value = Session> {
    (
        (short_text(), short_text(), short_text(), short_text()),
        (
            prop::option::of(short_text()),
            prop::option::of(short_text()),
            prop::option::of(short_text()),
            prop::option::of(short_text()),
        ),
        prop::collection::vec(
            (short_text(), prop::collection::vec("[A-Za-z:]{1,20}", 0..4)),
            0..6,
        ),
        (any::<u64>(), any::<u64>(), any::<bool>()),
    )
        .prop_map(
            |(
                (consumer, lms_id, user_id, external_id),
                (upstream_id, given_name, family_name, email),
                courses,
                (issued_at, last_seen, v13),
            )| Session {
                tenant: consumer,
                lms_id,
                user_id,
                external_id,
                upstream_id,
                given_name,
                family_name,
                email,
                courses: courses
                    .into_iter()
                    .map(|(id, roles)| CourseRoles { id, roles })
                    .collect(),
                issued_at,
                last_seen,
                lti_version: if v13 {
                    LtiVersion::V1p3
                } else {
                    LtiVersion::V1p1
                },
            },
        )
}

/// Sessions of any content and size.
fn any_session() -> impl Strategy<Value = Session> {
    (
        (any::<String>(), any::<String>(), any::<String>()),
        (
            prop::option::of(any::<String>()),
            prop::option::of(any::<String>()),
            prop::option::of(any::<String>()),
        ),
        prop::collection::vec(
            ("\\PC{0,80}", prop::collection::vec(any::<String>(), 0..12)),
            0..40,
        ),
        (any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |(
                (consumer, user_id, external_id),
                (given_name, family_name, email),
                courses,
                (issued_at, last_seen),
            )| {
                Session {
                    tenant: consumer.clone(),
                    lms_id: consumer,
                    user_id,
                    external_id,
                    upstream_id: None,
                    given_name,
                    family_name,
                    email,
                    courses: courses
                        .into_iter()
                        .map(|(id, roles)| CourseRoles { id, roles })
                        .collect(),
                    issued_at,
                    last_seen,
                    lti_version: LtiVersion::V1p3,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A small session opens as sealed.
    #[test]
    fn session_round_trips(s in small_session()) {
        let sealer = Sealer::new(&key(), &[]);
        let cookie = sealer.seal(&s);
        prop_assert!(cookie.is_ok());
        let cookie = cookie.unwrap_or_default();
        let mut expected = s.clone();
        expected.bound_fields();
        prop_assert_eq!(sealer.open(&cookie), Ok(expected));
    }

    /// Any session seals into a cookie of bounded size that opens to the
    /// session with its fields bounded, the oldest courses dropped and, if
    /// that was not enough, names and email dropped.
    #[test]
    fn any_session_seals_within_bounds(s in any_session()) {
        let sealer = Sealer::new(&key(), &[]);
        let Ok(cookie) = sealer.seal(&s) else {
            return Ok(());
        };
        prop_assert!(cookie.len() <= MAX_COOKIE_VALUE);
        let opened = sealer.open(&cookie);
        prop_assert!(opened.is_ok());
        let opened = opened.unwrap_or_else(|_| unreachable!());
        let mut bounded = s.clone();
        bounded.bound_fields();
        prop_assert_eq!(&opened.user_id, &bounded.user_id);
        prop_assert_eq!(&opened.external_id, &bounded.external_id);
        prop_assert_eq!(opened.issued_at, bounded.issued_at);
        prop_assert!(bounded.courses.ends_with(&opened.courses));
        prop_assert_eq!(opened.courses.is_empty(), bounded.courses.is_empty());
        let names = (&opened.given_name, &opened.family_name, &opened.email);
        prop_assert!(
            names == (&bounded.given_name, &bounded.family_name, &bounded.email)
                || names == (&None, &None, &None)
        );
    }

    /// A cookie with one byte changed never opens: bits flipped, or the
    /// byte replaced by another character of the base64url alphabet.
    #[test]
    fn tampered_cookie_never_opens(
        s in small_session(),
        at in any::<Index>(),
        mask in 1u8..=255,
        replacement in "[A-Za-z0-9_-]",
    ) {
        let sealer = Sealer::new(&key(), &[Secret::new([0x33u8; 32])]);
        let cookie = sealer.seal(&s).unwrap_or_default();
        let i = at.index(cookie.len());

        let mut flipped = cookie.clone().into_bytes();
        flipped[i] ^= mask;
        let flipped = String::from_utf8_lossy(&flipped);
        prop_assert!(sealer.open(&flipped).is_err(), "byte {} ^ {:#04x}", i, mask);

        let mut replaced = cookie.clone().into_bytes();
        let replacement = replacement.as_bytes()[0];
        if replaced[i] != replacement {
            replaced[i] = replacement;
            let replaced = String::from_utf8_lossy(&replaced);
            prop_assert!(sealer.open(&replaced).is_err(), "byte {} = {}", i, replacement);
        }
    }
}

/// The platform test key (tests/keys/), read once.
fn platform_key() -> &'static ltigate::lti::jose::SigningKey {
    static KEY: std::sync::OnceLock<ltigate::lti::jose::SigningKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        ltigate::lti::jose::SigningKey::from_pem(include_str!("keys/platform-test-key.pem"))
            .expect("the platform test key")
    })
}

/// Small JSON claim sets: strings, numbers, booleans, nested one level.
fn claims() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        any::<String>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<bool>().prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(2, 8, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(serde_json::Value::from)
    });
    prop::collection::btree_map("[a-z_:/.]{1,12}", value, 0..6)
        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any claims the key signs verify with its public JWK and read back
    /// unchanged; one changed byte of the token (bits flipped, or another
    /// base64url character) and it no longer verifies.
    #[test]
    fn signed_jws_verifies_and_any_changed_byte_fails(
        c in claims(),
        at in any::<Index>(),
        mask in 1u8..=255,
        replacement in "[A-Za-z0-9_.-]",
    ) {
        use ltigate::lti::jose::{CompactJws, JwkSet};
        let key = platform_key();
        let set = JwkSet::from_keys(vec![key.public_jwk().clone()]);
        let token = key.sign(&c).expect("signing");
        let jws = CompactJws::parse(&token).expect("a signed token parses");
        prop_assert_eq!(jws.verify(&set), Ok(()));
        prop_assert_eq!(&serde_json::Value::Object(jws.claims().clone()), &c);

        let i = at.index(token.len());
        let mut flipped = token.clone().into_bytes();
        flipped[i] ^= mask;
        let flipped = String::from_utf8_lossy(&flipped);
        prop_assert!(
            CompactJws::parse(&flipped).and_then(|j| j.verify(&set)).is_err(),
            "byte {} ^ {:#04x}", i, mask
        );
        let mut replaced = token.clone().into_bytes();
        let replacement = replacement.as_bytes()[0];
        if replaced[i] != replacement {
            replaced[i] = replacement;
            let replaced = String::from_utf8_lossy(&replaced);
            prop_assert!(
                CompactJws::parse(&replaced).and_then(|j| j.verify(&set)).is_err(),
                "byte {} = {}", i, replacement
            );
        }
    }
}
