//! Validation of `session.assertion*`: the signed identity assertion's
//! audience, lifetime and keys (DESIGN §4 "Signed identity assertion").

use std::time::Duration;

use super::super::raw::RawSession;
use super::super::settings::{AssertionSettings, StoreSettings};
use super::{resolve_secret, Check};
use crate::lti::jose::{self, KeyError};
use crate::secret::Secret;

/// Shortest `session.assertion_ttl`: an assertion is reused until half its
/// lifetime has passed, and times are whole seconds.
pub const MIN_ASSERTION_TTL: Duration = Duration::from_secs(2);
/// Longest `session.assertion_ttl`: an assertion is a bearer token to the
/// upstream, and a leaked one is good until it expires.
pub const MAX_ASSERTION_TTL: Duration = Duration::from_secs(3600);
/// Longest `session.assertion_audience`, in bytes (the token stays within
/// 2 KB).
pub const MAX_AUDIENCE: usize = 256;

/// How to make a key that is accepted.
const GENERATE: &str = "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256";

/// Decodes the PEM of the assertion's EC P-256 key into PKCS#8 DER: a
/// `PRIVATE KEY` (PKCS#8) or `EC PRIVATE KEY` (SEC1) block, by
/// [`jose::ec_private_key_pem_to_der`], checked by loading it; each refusal
/// worded for the operator.
pub fn assertion_key_der(pem: &[u8]) -> Result<Secret, String> {
    const EXPECTED: &str = "-----BEGIN PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----";
    let text = std::str::from_utf8(pem)
        .map_err(|_| format!("not PEM text; expected an EC P-256 private key ({EXPECTED})"))?;
    let der = jose::ec_private_key_pem_to_der(text).map_err(|e| match e {
        KeyError::Encrypted => {
            "an encrypted key; give it unencrypted (openssl pkcs8 -topk8 -nocrypt) and protect the file instead"
                .to_string()
        }
        KeyError::OtherKind(label) => format!(
            "a PEM {label} block, not an EC P-256 key (the assertion is signed with ES256); generate one with {GENERATE}"
        ),
        KeyError::NotBase64 => "the PEM body is not valid base64".to_string(),
        _ => format!("not a PEM EC private key ({EXPECTED})"),
    })?;
    jose::EcSigningKey::from_pkcs8_der(&der).map_err(|e| match e {
        KeyError::Rejected(why) if why == "WrongAlgorithm" => format!(
            "not an EC P-256 key (the assertion is signed with ES256); generate one with {GENERATE}"
        ),
        KeyError::Rejected(why) => format!("not a usable EC P-256 private key ({why})"),
        other => other.to_string(),
    })?;
    Ok(Secret::new(der))
}

/// Reads and checks a list of assertion key files.
fn key_files(c: &mut Check<'_>, key: &str, files: &[String]) -> Vec<Secret> {
    let mut keys = Vec::new();
    for (i, f) in files.iter().enumerate() {
        match std::fs::read(f)
            .map_err(|e| format!("cannot read `{f}`: {e}"))
            .and_then(|pem| assertion_key_der(&pem))
        {
            Ok(der) => keys.push(der),
            Err(e) => c.problems.push(format!("{key}[{i}]: {e}")),
        }
    }
    keys
}

/// `session.assertion*`: `None` unless `session.assertion = true`. The keys
/// are checked whenever they are given.
pub(super) fn assertion(
    c: &mut Check<'_>,
    s: &RawSession,
    store: &StoreSettings,
) -> Option<AssertionSettings> {
    let key = resolve_secret(
        "session.assertion_key",
        s.assertion_key.as_ref(),
        s.assertion_key_file.as_ref(),
        c.problems,
    )
    .and_then(|pem| {
        let at = if s.assertion_key_file.is_some() {
            "session.assertion_key_file"
        } else {
            "session.assertion_key"
        };
        assertion_key_der(pem.expose())
            .map_err(|e| c.problems.push(format!("{at}: {e}")))
            .ok()
    });
    let next_keys = key_files(
        c,
        "session.assertion_next_key_files",
        &s.assertion_next_key_files,
    );
    let previous_keys = key_files(
        c,
        "session.assertion_previous_key_files",
        &s.assertion_previous_key_files,
    );
    let ttl = c.parsed_duration("session.assertion_ttl", &s.assertion_ttl);
    if !s.assertion {
        return None;
    }
    if ttl.is_some_and(|t| !(MIN_ASSERTION_TTL..=MAX_ASSERTION_TTL).contains(&t)) {
        c.problems.push(
            "session.assertion_ttl: must be between 2s and 1h (an assertion is reused until half of it has passed, and is good until it expires)"
                .into(),
        );
    }
    let audience = s.assertion_audience.trim();
    if audience.is_empty() {
        c.problems.push(
            "session.assertion_audience: required when session.assertion = true: a value naming this deployment's upstream (e.g. \"https://platform.internal/acme\"), so that deployments sharing a key cannot accept each other's assertions"
                .into(),
        );
    } else if audience.len() > MAX_AUDIENCE || audience.chars().any(char::is_control) {
        c.problems.push(format!(
            "session.assertion_audience: at most {MAX_AUDIENCE} bytes, no control characters"
        ));
    }
    if key.is_none()
        && matches!(store, StoreSettings::Redis { .. })
        && s.assertion_key.is_none()
        && s.assertion_key_file.is_none()
    {
        c.problems.push(format!(
            "session.assertion_key: required with Redis when session.assertion = true (every replica must sign with, and publish, the same key); set session.assertion_key_file to the PEM of an EC P-256 key ({GENERATE})"
        ));
    }
    Some(AssertionSettings {
        audience: audience.to_string(),
        ttl: ttl.unwrap_or_default(),
        course_roles: s.assertion_course_roles,
        key,
        next_keys,
        previous_keys,
    })
}
