//! LTI 1.3 launch: the rejection reasons and the pure checks of an
//! `id_token`, one step per reason, in the order the caller runs them.
//!
//! The caller interleaves the steps with what needs I/O:
//!
//! 1. [`parse`] — the token's form and registered claims (`invalid_request`);
//! 2. *the state: opens, unexpired, bound to the browser (`bad_state`); the
//!    store answers (`store_unavailable`);*
//! 3. [`deployment_allowed`] on each registration of the state's (issuer,
//!    client id) — none lists the token's `deployment_id`: `unknown_platform`;
//! 4. [`IdToken::check_message_type`] (`unsupported_message`);
//! 5. [`IdToken::resource_link`] — the resource-link claims and the course
//!    (`invalid_request`), mapped into a [`ResourceLinkLaunch`];
//! 6. *the platform's key set, from the cache or fetched
//!    (`jwks_unavailable`); [`IdToken::key_id`] names the key to look for;*
//! 7. [`IdToken::verify`] — signature, `iss`, `aud`, `azp`, `target_link_uri`
//!    (`bad_token`);
//! 8. [`IdToken::check_times`] — `exp`, `iat`, `nbf` (`stale_token`);
//! 9. [`IdToken::check_nonce`] — the state's nonce (`replayed_nonce`);
//! 10. [`super::migration::check`] — the `lti1p1` claim (`bad_migration`).
//!
//! Every failure is an [`Lti13Error`]: a [`Lti13Rejection`] and a detail for
//! logs that never holds the token, state, nonce or a claim's value.

use subtle::ConstantTimeEq as _;

use super::encode::percent_decode;
use super::jose::{CompactJws, JwkSet, JwsError};
use super::launch::MAX_COURSE_ID;
use super::roles;

/// `https://purl.imsglobal.org/spec/lti/claim/message_type`.
pub const MESSAGE_TYPE_CLAIM: &str = "https://purl.imsglobal.org/spec/lti/claim/message_type";
/// `https://purl.imsglobal.org/spec/lti/claim/version`.
pub const VERSION_CLAIM: &str = "https://purl.imsglobal.org/spec/lti/claim/version";
/// `https://purl.imsglobal.org/spec/lti/claim/deployment_id`.
pub const DEPLOYMENT_ID_CLAIM: &str = "https://purl.imsglobal.org/spec/lti/claim/deployment_id";
/// `https://purl.imsglobal.org/spec/lti/claim/target_link_uri`.
pub const TARGET_LINK_URI_CLAIM: &str = "https://purl.imsglobal.org/spec/lti/claim/target_link_uri";
/// `https://purl.imsglobal.org/spec/lti/claim/resource_link`.
pub const RESOURCE_LINK_CLAIM: &str = "https://purl.imsglobal.org/spec/lti/claim/resource_link";
/// `https://purl.imsglobal.org/spec/lti/claim/roles`.
pub const ROLES_CLAIM: &str = "https://purl.imsglobal.org/spec/lti/claim/roles";
/// `https://purl.imsglobal.org/spec/lti/claim/custom`.
pub const CUSTOM_CLAIM: &str = "https://purl.imsglobal.org/spec/lti/claim/custom";
/// `https://purl.imsglobal.org/spec/lti/claim/context`.
pub const CONTEXT_CLAIM: &str = "https://purl.imsglobal.org/spec/lti/claim/context";
/// `https://purl.imsglobal.org/spec/lti/claim/launch_presentation`.
pub const LAUNCH_PRESENTATION_CLAIM: &str =
    "https://purl.imsglobal.org/spec/lti/claim/launch_presentation";
/// `https://purl.imsglobal.org/spec/lti/claim/lti1p1` (migration from 1.1).
pub const LTI1P1_CLAIM: &str = "https://purl.imsglobal.org/spec/lti/claim/lti1p1";
/// `https://purl.imsglobal.org/spec/lti-ags/claim/endpoint`.
pub const AGS_ENDPOINT_CLAIM: &str = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint";
/// The AGS scope that allows posting scores.
pub const AGS_SCORE_SCOPE: &str = "https://purl.imsglobal.org/spec/lti-ags/scope/score";
/// The one message type handled: a resource-link launch.
pub const RESOURCE_LINK_REQUEST: &str = "LtiResourceLinkRequest";
/// The one LTI version accepted.
pub const LTI_VERSION: &str = "1.3.0";
/// Longest `sub`, `deployment_id` and `resource_link.id`, in bytes (CORE
/// §5.3.3, §5.3.5, §5.3.6).
pub const MAX_ID_LEN: usize = 255;

/// Why an LTI 1.3 launch was refused, in check order. Each reason knows its
/// HTTP status, its metric label and the message shown to the learner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lti13Rejection {
    /// No `id_token`/`state`, a malformed token, a registered or
    /// resource-link claim missing or of the wrong type, no course or two
    /// that disagree; an OIDC `error` answer.
    InvalidRequest,
    /// The store cannot record the state's single use: fail closed.
    StoreUnavailable,
    /// The state does not open, expired, was used, or is not bound to this
    /// browser.
    BadState,
    /// No registration of the state's (issuer, client id) lists the token's
    /// `deployment_id`.
    UnknownPlatform,
    /// A message type other than `LtiResourceLinkRequest`.
    UnsupportedMessage,
    /// The platform's key set cannot be fetched and no cached set holds the
    /// token's `kid`.
    JwksUnavailable,
    /// Bad `alg`, no or unknown `kid`, bad signature, or `iss`, `aud`, `azp`,
    /// `target_link_uri` not the registration's or the login's.
    BadToken,
    /// `exp` passed, or `iat`/`nbf` in the future, beyond the leeway.
    StaleToken,
    /// The nonce is not the state's.
    ReplayedNonce,
    /// An `lti1p1` claim whose signature does not verify.
    BadMigration,
    /// The tenant's licences are used up.
    LicenceExhausted,
    /// The upstream does not know the course.
    UnknownCourse,
    /// Provisioning failed.
    UpstreamError,
}

impl Lti13Rejection {
    /// Every reason, in check order.
    pub const ALL: [Lti13Rejection; 13] = [
        Lti13Rejection::InvalidRequest,
        Lti13Rejection::StoreUnavailable,
        Lti13Rejection::BadState,
        Lti13Rejection::UnknownPlatform,
        Lti13Rejection::UnsupportedMessage,
        Lti13Rejection::JwksUnavailable,
        Lti13Rejection::BadToken,
        Lti13Rejection::StaleToken,
        Lti13Rejection::ReplayedNonce,
        Lti13Rejection::BadMigration,
        Lti13Rejection::LicenceExhausted,
        Lti13Rejection::UnknownCourse,
        Lti13Rejection::UpstreamError,
    ];

    /// HTTP status of the rejection page.
    pub fn status(self) -> u16 {
        match self {
            Lti13Rejection::InvalidRequest | Lti13Rejection::UnsupportedMessage => 400,
            Lti13Rejection::StoreUnavailable => 503,
            Lti13Rejection::BadState
            | Lti13Rejection::UnknownPlatform
            | Lti13Rejection::BadToken
            | Lti13Rejection::StaleToken
            | Lti13Rejection::ReplayedNonce
            | Lti13Rejection::BadMigration => 401,
            Lti13Rejection::JwksUnavailable | Lti13Rejection::UpstreamError => 502,
            Lti13Rejection::LicenceExhausted => 403,
            Lti13Rejection::UnknownCourse => 404,
        }
    }

    /// The `result` label of `ltigate_launches_total`.
    pub fn label(self) -> &'static str {
        match self {
            Lti13Rejection::InvalidRequest => "invalid_request",
            Lti13Rejection::StoreUnavailable => "store_unavailable",
            Lti13Rejection::BadState => "bad_state",
            Lti13Rejection::UnknownPlatform => "unknown_platform",
            Lti13Rejection::UnsupportedMessage => "unsupported_message",
            Lti13Rejection::JwksUnavailable => "jwks_unavailable",
            Lti13Rejection::BadToken => "bad_token",
            Lti13Rejection::StaleToken => "stale_token",
            Lti13Rejection::ReplayedNonce => "replayed_nonce",
            Lti13Rejection::BadMigration => "bad_migration",
            Lti13Rejection::LicenceExhausted => "licence_exhausted",
            Lti13Rejection::UnknownCourse => "unknown_course",
            Lti13Rejection::UpstreamError => "upstream_error",
        }
    }

    /// The message shown to the learner. An unknown platform and a token
    /// that does not verify read the same, so the page does not reveal which
    /// deployments are registered.
    pub fn message(self) -> &'static str {
        match self {
            Lti13Rejection::InvalidRequest => {
                "The launch request from your learning management system is incomplete or malformed."
            }
            Lti13Rejection::StoreUnavailable => {
                "The service is temporarily unavailable. Please try again in a moment."
            }
            Lti13Rejection::BadState => {
                "The launch could not be matched to this browser, or was already used. Go back to your course and open the link again. If this keeps happening, allow cookies for this site."
            }
            Lti13Rejection::UnknownPlatform
            | Lti13Rejection::BadToken
            | Lti13Rejection::BadMigration => {
                "The launch could not be verified. Ask your LMS administrator to check the tool's registration."
            }
            Lti13Rejection::UnsupportedMessage => {
                "This kind of launch is not supported by this tool."
            }
            Lti13Rejection::JwksUnavailable => {
                "Your learning management system could not be reached to verify the launch. Please try again in a moment."
            }
            Lti13Rejection::StaleToken => {
                "The launch has expired or the clocks disagree. Go back to your course and open the link again."
            }
            Lti13Rejection::ReplayedNonce => {
                "This launch was already used. Go back to your course and open the link again."
            }
            Lti13Rejection::LicenceExhausted => {
                "All licences for your institution are in use. Please contact your administrator."
            }
            Lti13Rejection::UnknownCourse => "This course is not available.",
            Lti13Rejection::UpstreamError => {
                "The learning platform could not be reached. Please try again in a moment."
            }
        }
    }
}

/// A refused LTI 1.3 launch: the reason and a short detail for logs (never
/// the token, state, nonce, hints or a claim's value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lti13Error {
    rejection: Lti13Rejection,
    detail: String,
}

impl Lti13Error {
    /// A refusal for `rejection`, explained by `detail`.
    pub fn new(rejection: Lti13Rejection, detail: impl Into<String>) -> Self {
        Self {
            rejection,
            detail: detail.into(),
        }
    }

    /// The reason.
    pub fn rejection(&self) -> Lti13Rejection {
        self.rejection
    }

    /// The detail for logs and the JSON error.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl std::fmt::Display for Lti13Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.rejection.label(), self.detail)
    }
}

impl std::error::Error for Lti13Error {}

fn invalid(detail: impl Into<String>) -> Lti13Error {
    Lti13Error::new(Lti13Rejection::InvalidRequest, detail)
}

fn bad_token(detail: impl Into<String>) -> Lti13Error {
    Lti13Error::new(Lti13Rejection::BadToken, detail)
}

/// An id_token whose form and registered claims are checked, its signature
/// not yet ([`IdToken::verify`]).
#[derive(Debug, Clone)]
pub struct IdToken {
    jws: CompactJws,
    /// `iss`.
    pub iss: String,
    /// `aud`, a string or an array of strings (never empty).
    pub aud: Vec<String>,
    /// `azp`, when present.
    pub azp: Option<String>,
    /// `exp`, unix seconds.
    pub exp: i64,
    /// `exp` as the platform wrote it (the migration signature covers it).
    exp_text: String,
    /// `iat`, unix seconds.
    pub iat: i64,
    /// `nbf`, when present.
    pub nbf: Option<i64>,
    /// `nonce`.
    pub nonce: String,
    /// `sub`: the learner's id at the platform.
    pub sub: String,
    /// `…/claim/deployment_id`.
    pub deployment_id: String,
    /// `…/claim/message_type`.
    pub message_type: String,
}

/// A JSON NumericDate as whole seconds (fractions are allowed, RFC 7519 §2).
fn numeric_date(value: &serde_json::Value) -> Option<i64> {
    let n = value.as_number()?;
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.is_finite() && f.abs() < 1e15)
            .map(|f| f.floor() as i64)
    })
}

/// A non-empty string claim of at most `max` bytes.
fn string_claim<'a>(
    claims: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
    what: &str,
    max: usize,
) -> Result<&'a str, Lti13Error> {
    match claims.get(name) {
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= max => Ok(s),
        Some(serde_json::Value::String(s)) if !s.is_empty() => {
            Err(invalid(format!("{what} is longer than {max} bytes")))
        }
        Some(serde_json::Value::String(_)) | None => Err(invalid(format!("{what} is missing"))),
        Some(_) => Err(invalid(format!("{what} is not a string"))),
    }
}

/// Step 1: splits and decodes `id_token` and checks its registered claims:
/// `iss`, `aud`, `exp`, `iat`, `nonce`, `sub` (≤ 255 bytes: anonymous
/// launches are not supported), `…/version` = `1.3.0`, `…/message_type`,
/// `…/deployment_id` (≤ 255 bytes); `azp` and `nbf` when present.
/// Everything refused here is `invalid_request`.
pub fn parse(id_token: &str) -> Result<IdToken, Lti13Error> {
    let jws = CompactJws::parse(id_token).map_err(|e| invalid(format!("id_token: {e}")))?;
    let claims = jws.claims();
    const MAX_URL: usize = 2048;
    let iss = string_claim(claims, "iss", "iss", MAX_URL)?.to_string();
    let aud = match claims.get("aud") {
        Some(serde_json::Value::String(a)) if !a.is_empty() => vec![a.clone()],
        Some(serde_json::Value::Array(list))
            if !list.is_empty() && list.len() <= 16 && list.iter().all(|a| a.is_string()) =>
        {
            list.iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect()
        }
        None => return Err(invalid("aud is missing")),
        Some(_) => return Err(invalid("aud is not a string or an array of strings")),
    };
    let azp = match claims.get("azp") {
        None => None,
        Some(serde_json::Value::String(a)) => Some(a.clone()),
        Some(_) => return Err(invalid("azp is not a string")),
    };
    let date = |name: &str| -> Result<Option<i64>, Lti13Error> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => numeric_date(v)
                .map(Some)
                .ok_or_else(|| invalid(format!("{name} is not a number"))),
        }
    };
    let exp = date("exp")?.ok_or_else(|| invalid("exp is missing"))?;
    let exp_text = claims
        .get("exp")
        .map(serde_json::Value::to_string)
        .unwrap_or_default();
    let iat = date("iat")?.ok_or_else(|| invalid("iat is missing"))?;
    let nbf = date("nbf")?;
    let nonce = string_claim(claims, "nonce", "nonce", 1024)?.to_string();
    let sub = string_claim(claims, "sub", "sub", MAX_ID_LEN)?.to_string();
    match claims.get(VERSION_CLAIM) {
        Some(serde_json::Value::String(v)) if v == LTI_VERSION => {}
        None => return Err(invalid("the version claim is missing")),
        Some(_) => return Err(invalid("the version claim is not 1.3.0")),
    }
    let message_type =
        string_claim(claims, MESSAGE_TYPE_CLAIM, "the message_type claim", 128)?.to_string();
    let deployment_id = string_claim(
        claims,
        DEPLOYMENT_ID_CLAIM,
        "the deployment_id claim",
        MAX_ID_LEN,
    )?
    .to_string();
    Ok(IdToken {
        iss,
        aud,
        azp,
        exp,
        exp_text,
        iat,
        nbf,
        nonce,
        sub,
        deployment_id,
        message_type,
        jws,
    })
}

/// Step 3: whether a registration listing `allowed` deployment ids accepts
/// `deployment_id` (`"*"` accepts any).
pub fn deployment_allowed(allowed: &[String], deployment_id: &str) -> bool {
    allowed.iter().any(|d| d == "*" || d == deployment_id)
}

/// The AGS endpoint claim, kept for grade passback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgsEndpoint {
    /// `lineitem`: the line item of this link, when the platform made one.
    pub lineitem: Option<String>,
    /// `lineitems`: the container of the context's line items.
    pub lineitems: Option<String>,
    /// `scope`: what the tool may request.
    pub scope: Vec<String>,
}

impl AgsEndpoint {
    /// The line item scores go to: `lineitem` when `scope` holds the score
    /// scope.
    pub fn score_lineitem(&self) -> Option<&str> {
        self.lineitem
            .as_deref()
            .filter(|_| self.scope.iter().any(|s| s == AGS_SCORE_SCOPE))
    }
}

/// What a resource-link launch says about the learner and the course,
/// before the token is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceLinkLaunch {
    /// The learner's id at the platform: `sub`.
    pub user_id: String,
    /// `…/resource_link.id`.
    pub resource_link_id: String,
    /// `…/target_link_uri`.
    pub target_link_uri: String,
    /// Normalised roles (see [`roles::normalize_all`]).
    pub roles: Vec<String>,
    /// `given_name` (or the first word of `name`).
    pub given_name: Option<String>,
    /// `family_name` (or the rest of `name`).
    pub family_name: Option<String>,
    /// `email`.
    pub email: Option<String>,
    /// The course external ID.
    pub course: String,
    /// `…/context.id`.
    pub context_id: Option<String>,
    /// `…/launch_presentation.return_url` when it is an absolute http(s) URL.
    pub return_url: Option<String>,
    /// The AGS endpoint claim, when present and well formed.
    pub ags: Option<AgsEndpoint>,
}

/// A trimmed, non-empty string claim; anything else is absent.
fn optional_string(value: Option<&serde_json::Value>) -> Option<String> {
    value
        .and_then(serde_json::Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The course named by a target link URI of the form
/// `{public_url}/lti/1.3/launch/{course}` (one path segment, percent-decoded,
/// before any query or fragment).
pub fn course_from_target_link(public_url: &str, target_link_uri: &str) -> Option<String> {
    let prefix = format!("{}/lti/1.3/launch/", public_url.trim_end_matches('/'));
    let rest = target_link_uri.strip_prefix(&prefix)?;
    let segment = rest.split(['?', '#']).next().unwrap_or_default();
    if segment.is_empty() || segment.contains('/') {
        return None;
    }
    percent_decode(segment.as_bytes()).ok()
}

impl IdToken {
    /// The header's `kid` to look up in the platform's key set, or the
    /// `bad_token` refusal step 7 would give (`alg` not RS256, no `kid`): then
    /// no key set need be fetched.
    pub fn key_id(&self) -> Result<&str, Lti13Error> {
        self.jws.key_id().map_err(|e| bad_token(e.to_string()))
    }

    /// The claims, not yet authenticated.
    pub fn claims(&self) -> &serde_json::Map<String, serde_json::Value> {
        self.jws.claims()
    }

    /// `exp` as the platform wrote it (decimal digits for an integer).
    pub fn exp_text(&self) -> &str {
        &self.exp_text
    }

    /// Step 4: the message is a resource-link launch, else
    /// `unsupported_message` (deep linking comes later).
    pub fn check_message_type(&self) -> Result<(), Lti13Error> {
        if self.message_type == RESOURCE_LINK_REQUEST {
            Ok(())
        } else {
            Err(Lti13Error::new(
                Lti13Rejection::UnsupportedMessage,
                "the message_type is not LtiResourceLinkRequest",
            ))
        }
    }

    /// Step 5: the resource-link claims (`…/roles` an array of strings,
    /// `…/resource_link.id`, `…/target_link_uri`) and the course, mapped into
    /// a [`ResourceLinkLaunch`]. The course comes from the custom claim
    /// `course` (empty is absent), else from the `target_link_uri` claim when
    /// it is `{public_url}/lti/1.3/launch/{course}`, else from `path_course`
    /// (the course of `/lti/1.3/launch/{course}` the token was posted to,
    /// percent-decoded); sources that disagree, or none, are
    /// `invalid_request`.
    pub fn resource_link(
        &self,
        public_url: &str,
        path_course: Option<&str>,
    ) -> Result<ResourceLinkLaunch, Lti13Error> {
        let claims = self.claims();
        let roles = match claims.get(ROLES_CLAIM) {
            Some(serde_json::Value::Array(list)) => {
                let mut names = Vec::with_capacity(list.len());
                for role in list {
                    names.push(
                        role.as_str()
                            .ok_or_else(|| invalid("the roles claim holds a non-string"))?,
                    );
                }
                roles::normalize_all(names)
            }
            None => return Err(invalid("the roles claim is missing")),
            Some(_) => return Err(invalid("the roles claim is not an array")),
        };
        let resource_link = match claims.get(RESOURCE_LINK_CLAIM) {
            Some(serde_json::Value::Object(link)) => link,
            None => return Err(invalid("the resource_link claim is missing")),
            Some(_) => return Err(invalid("the resource_link claim is not an object")),
        };
        let resource_link_id =
            string_claim(resource_link, "id", "resource_link.id", MAX_ID_LEN)?.to_string();
        let target_link_uri = string_claim(
            claims,
            TARGET_LINK_URI_CLAIM,
            "the target_link_uri claim",
            2048,
        )?
        .to_string();
        let course = self.course(public_url, &target_link_uri, path_course)?;
        let (given_name, family_name) = names(claims);
        let context_id = claims
            .get(CONTEXT_CLAIM)
            .and_then(|c| optional_string(c.get("id")));
        let return_url = claims
            .get(LAUNCH_PRESENTATION_CLAIM)
            .and_then(|p| optional_string(p.get("return_url")))
            .filter(|u| {
                let lower = u.to_ascii_lowercase();
                (lower.starts_with("https://") || lower.starts_with("http://"))
                    && !u.chars().any(|c| c.is_control() || c.is_whitespace())
            });
        Ok(ResourceLinkLaunch {
            user_id: self.sub.clone(),
            resource_link_id,
            target_link_uri,
            roles,
            given_name,
            family_name,
            email: optional_string(claims.get("email")),
            course,
            context_id,
            return_url,
            ags: claims.get(AGS_ENDPOINT_CLAIM).and_then(ags_endpoint),
        })
    }

    /// The course of step 5, from its (up to) three sources.
    fn course(
        &self,
        public_url: &str,
        target_link_uri: &str,
        path_course: Option<&str>,
    ) -> Result<String, Lti13Error> {
        let custom = match self
            .claims()
            .get(CUSTOM_CLAIM)
            .and_then(|c| c.as_object())
            .and_then(|c| c.get("course"))
        {
            None => None,
            Some(serde_json::Value::String(c)) => Some(c.trim()).filter(|c| !c.is_empty()),
            Some(_) => return Err(invalid("the custom claim course is not a string")),
        };
        let from_link = course_from_target_link(public_url, target_link_uri);
        let path = path_course.map(str::trim).filter(|c| !c.is_empty());
        let mut course: Option<&str> = None;
        for (source, value) in [
            ("the custom claim course", custom),
            ("the target_link_uri claim", from_link.as_deref()),
            ("the launch URL", path),
        ] {
            match (course, value) {
                (Some(c), Some(v)) if c != v => {
                    return Err(invalid(format!(
                        "the course of {source} differs from another source"
                    )))
                }
                (None, Some(v)) => course = Some(v),
                _ => {}
            }
        }
        let course = course.ok_or_else(|| {
            invalid(
                "no course: append it to the target link URI or set the custom parameter course",
            )
        })?;
        if course.len() > MAX_COURSE_ID {
            return Err(invalid(format!(
                "the course id is longer than {MAX_COURSE_ID} bytes"
            )));
        }
        if course.chars().any(char::is_control) {
            return Err(invalid("the course id contains control characters"));
        }
        Ok(course.to_string())
    }

    /// Step 7: the header (`RS256`, a `kid`) and the signature with the key
    /// of that `kid` in `keys` (unknown after the one re-fetch: refused);
    /// `iss` = the issuer; `aud` holds the client id; several audiences need
    /// `azp`; an `azp` must be the client id; the `target_link_uri` claim is
    /// the login's. Everything refused here is `bad_token`.
    pub fn verify(&self, keys: &JwkSet, expected: &Expected<'_>) -> Result<(), Lti13Error> {
        self.jws
            .verify(keys)
            .map_err(|e: JwsError| bad_token(e.to_string()))?;
        if self.iss != expected.issuer {
            return Err(bad_token("iss is not the registration's issuer"));
        }
        if !self.aud.iter().any(|a| a == expected.client_id) {
            return Err(bad_token("aud does not hold the client id"));
        }
        match self.azp.as_deref() {
            Some(azp) if azp != expected.client_id => {
                return Err(bad_token("azp is not the client id"))
            }
            None if self.aud.len() > 1 => return Err(bad_token("several audiences and no azp")),
            _ => {}
        }
        match self.claims().get(TARGET_LINK_URI_CLAIM) {
            Some(serde_json::Value::String(t)) if t == expected.target_link_uri => Ok(()),
            _ => Err(bad_token("the target_link_uri claim is not the login's")),
        }
    }

    /// Step 8: `exp` not passed, `iat` and `nbf` not in the future, each
    /// with `leeway` seconds of clock skew; else `stale_token`.
    pub fn check_times(&self, now: i64, leeway: i64) -> Result<(), Lti13Error> {
        let stale = |d: &str| Err(Lti13Error::new(Lti13Rejection::StaleToken, d));
        if now >= self.exp.saturating_add(leeway) {
            return stale("the token expired");
        }
        if self.iat > now.saturating_add(leeway) {
            return stale("the token was issued in the future");
        }
        if self.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return stale("the token is not valid yet (nbf)");
        }
        Ok(())
    }

    /// Step 9: the token's nonce is the state's (compared in constant time);
    /// else `replayed_nonce`.
    pub fn check_nonce(&self, state_nonce: &str) -> Result<(), Lti13Error> {
        if bool::from(self.nonce.as_bytes().ct_eq(state_nonce.as_bytes())) {
            Ok(())
        } else {
            Err(Lti13Error::new(
                Lti13Rejection::ReplayedNonce,
                "the nonce is not the state's",
            ))
        }
    }
}

/// What step 7 compares the token with.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The issuer of the login's state, which is the registration's (the
    /// registration was chosen by it).
    pub issuer: &'a str,
    /// The client id of the login's state and registration.
    pub client_id: &'a str,
    /// The `target_link_uri` of the login.
    pub target_link_uri: &'a str,
}

/// Given and family name; split from `name` when only that is sent.
fn names(claims: &serde_json::Map<String, serde_json::Value>) -> (Option<String>, Option<String>) {
    let given = optional_string(claims.get("given_name"));
    let family = optional_string(claims.get("family_name"));
    if given.is_some() || family.is_some() {
        return (given, family);
    }
    match optional_string(claims.get("name")) {
        Some(full) => match full.split_once(char::is_whitespace) {
            Some((g, f)) => (Some(g.to_string()), optional_string(Some(&f.into()))),
            None => (Some(full), None),
        },
        None => (None, None),
    }
}

/// The AGS endpoint claim when it is an object; its fields when they are
/// strings (a scope list of strings).
fn ags_endpoint(value: &serde_json::Value) -> Option<AgsEndpoint> {
    let object = value.as_object()?;
    Some(AgsEndpoint {
        lineitem: optional_string(object.get("lineitem")),
        lineitems: optional_string(object.get("lineitems")),
        scope: object
            .get("scope")
            .and_then(serde_json::Value::as_array)
            .map(|s| {
                s.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lti::jose::SigningKey;
    use serde_json::{json, Value};

    const PLATFORM_PEM: &str = include_str!("../../tests/keys/platform-test-key.pem");
    const ISS: &str = "https://lms.example.edu";
    const CLIENT: &str = "client-1";
    const PUBLIC_URL: &str = "https://tool.example.com";
    const TARGET: &str = "https://tool.example.com/lti/1.3/launch/C-1";
    const NOW: i64 = 1_800_000_000;

    fn key() -> SigningKey {
        SigningKey::from_pem(PLATFORM_PEM).unwrap()
    }

    fn keys(key: &SigningKey) -> JwkSet {
        JwkSet::from_keys(vec![key.public_jwk().clone()])
    }

    fn expected() -> Expected<'static> {
        Expected {
            issuer: ISS,
            client_id: CLIENT,
            target_link_uri: TARGET,
        }
    }

    /// The claims of a good resource-link launch.
    fn claims() -> Value {
        json!({
            "iss": ISS,
            "aud": CLIENT,
            "exp": NOW + 300,
            "iat": NOW,
            "nonce": "n-1",
            "sub": "user-7",
            "given_name": "Zoë",
            "family_name": "van Dijk",
            "email": "zoe@example.edu",
            VERSION_CLAIM: "1.3.0",
            MESSAGE_TYPE_CLAIM: "LtiResourceLinkRequest",
            DEPLOYMENT_ID_CLAIM: "dep-1",
            TARGET_LINK_URI_CLAIM: TARGET,
            RESOURCE_LINK_CLAIM: {"id": "rl-1", "title": "Week 1"},
            ROLES_CLAIM: [
                "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner",
                "http://purl.imsglobal.org/vocab/lis/v2/institution/person#Student"
            ],
            CONTEXT_CLAIM: {"id": "ctx-1"},
            AGS_ENDPOINT_CLAIM: {
                "lineitem": "https://lms.example.edu/lineitems/1?type_id=2",
                "lineitems": "https://lms.example.edu/lineitems",
                "scope": [AGS_SCORE_SCOPE]
            },
        })
    }

    fn token(claims: &Value) -> String {
        key().sign(claims).unwrap()
    }

    /// Runs every step after the parse with the test's expectations.
    fn run_all(token: &str) -> Result<ResourceLinkLaunch, Lti13Error> {
        let t = parse(token)?;
        if !deployment_allowed(&["dep-1".to_string()], &t.deployment_id) {
            return Err(Lti13Error::new(
                Lti13Rejection::UnknownPlatform,
                "no registration",
            ));
        }
        t.check_message_type()?;
        let launch = t.resource_link(PUBLIC_URL, None)?;
        t.verify(&keys(&key()), &expected())?;
        t.check_times(NOW, 60)?;
        t.check_nonce("n-1")?;
        Ok(launch)
    }

    fn with(mutate: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
        let mut c = claims();
        mutate(c.as_object_mut().unwrap());
        c
    }

    fn rejection_of(claims: &Value) -> Option<Lti13Rejection> {
        run_all(&token(claims)).err().map(|e| e.rejection())
    }

    #[test]
    fn a_good_launch_maps() {
        let launch = run_all(&token(&claims())).unwrap();
        assert_eq!(launch.user_id, "user-7");
        assert_eq!(launch.course, "C-1");
        assert_eq!(launch.resource_link_id, "rl-1");
        assert_eq!(launch.roles, ["Learner", "inst:Student"]);
        assert_eq!(launch.given_name.as_deref(), Some("Zoë"));
        assert_eq!(launch.family_name.as_deref(), Some("van Dijk"));
        assert_eq!(launch.email.as_deref(), Some("zoe@example.edu"));
        assert_eq!(launch.context_id.as_deref(), Some("ctx-1"));
        let ags = launch.ags.unwrap();
        assert_eq!(
            ags.score_lineitem(),
            Some("https://lms.example.edu/lineitems/1?type_id=2")
        );
        assert_eq!(
            ags.lineitems.as_deref(),
            Some("https://lms.example.edu/lineitems")
        );
    }

    #[test]
    fn registered_claims_are_invalid_request() {
        let cases: Vec<(&str, Value)> = vec![
            ("iss", with(|c| drop(c.remove("iss")))),
            ("iss", with(|c| drop(c.insert("iss".into(), json!(1))))),
            ("aud", with(|c| drop(c.remove("aud")))),
            ("aud", with(|c| drop(c.insert("aud".into(), json!([]))))),
            (
                "aud",
                with(|c| drop(c.insert("aud".into(), json!([CLIENT, 2])))),
            ),
            ("azp", with(|c| drop(c.insert("azp".into(), json!(true))))),
            ("exp", with(|c| drop(c.remove("exp")))),
            ("exp", with(|c| drop(c.insert("exp".into(), json!("soon"))))),
            ("iat", with(|c| drop(c.remove("iat")))),
            ("nbf", with(|c| drop(c.insert("nbf".into(), json!(null))))),
            ("nonce", with(|c| drop(c.remove("nonce")))),
            ("sub", with(|c| drop(c.remove("sub")))),
            ("sub", with(|c| drop(c.insert("sub".into(), json!(""))))),
            (
                "sub",
                with(|c| drop(c.insert("sub".into(), json!("x".repeat(256))))),
            ),
            ("version", with(|c| drop(c.remove(VERSION_CLAIM)))),
            (
                "version",
                with(|c| drop(c.insert(VERSION_CLAIM.into(), json!("1.1")))),
            ),
            ("message_type", with(|c| drop(c.remove(MESSAGE_TYPE_CLAIM)))),
            (
                "deployment_id",
                with(|c| drop(c.remove(DEPLOYMENT_ID_CLAIM))),
            ),
            (
                "deployment_id",
                with(|c| drop(c.insert(DEPLOYMENT_ID_CLAIM.into(), json!(7)))),
            ),
        ];
        for (needle, claims) in cases {
            let err = parse(&token(&claims)).unwrap_err();
            assert_eq!(err.rejection(), Lti13Rejection::InvalidRequest, "{needle}");
            assert!(err.detail().contains(needle), "{needle}: {err}");
        }
        // 255 bytes of sub are fine; a fractional NumericDate too.
        let ok = with(|c| {
            c.insert("sub".into(), json!("x".repeat(255)));
            c.insert("exp".into(), json!(NOW as f64 + 300.5));
        });
        assert_eq!(parse(&token(&ok)).unwrap().exp, NOW + 300);
        for bad in ["", "a.b.c", "not a token", "eyJ9.eyJ9.AA"] {
            assert_eq!(
                parse(bad).unwrap_err().rejection(),
                Lti13Rejection::InvalidRequest
            );
        }
    }

    #[test]
    fn unknown_deployment_and_message_type() {
        let c = with(|c| drop(c.insert(DEPLOYMENT_ID_CLAIM.into(), json!("dep-2"))));
        assert_eq!(rejection_of(&c), Some(Lti13Rejection::UnknownPlatform));
        assert!(deployment_allowed(&["*".to_string()], "dep-2"));
        assert!(!deployment_allowed(&[], "dep-2"));
        let c = with(|c| drop(c.insert(MESSAGE_TYPE_CLAIM.into(), json!("LtiDeepLinkingRequest"))));
        assert_eq!(rejection_of(&c), Some(Lti13Rejection::UnsupportedMessage));
        // Checked before the resource-link claims.
        let c = with(|c| {
            c.insert(MESSAGE_TYPE_CLAIM.into(), json!("LtiDeepLinkingRequest"));
            c.remove(RESOURCE_LINK_CLAIM);
        });
        assert_eq!(rejection_of(&c), Some(Lti13Rejection::UnsupportedMessage));
    }

    #[test]
    fn resource_link_claims() {
        let cases: Vec<(&str, Value)> = vec![
            (
                "roles claim is missing",
                with(|c| drop(c.remove(ROLES_CLAIM))),
            ),
            (
                "roles claim is not an array",
                with(|c| drop(c.insert(ROLES_CLAIM.into(), json!("Learner")))),
            ),
            (
                "non-string",
                with(|c| drop(c.insert(ROLES_CLAIM.into(), json!(["Learner", 1])))),
            ),
            (
                "resource_link claim is missing",
                with(|c| drop(c.remove(RESOURCE_LINK_CLAIM))),
            ),
            (
                "resource_link.id is missing",
                with(|c| drop(c.insert(RESOURCE_LINK_CLAIM.into(), json!({"title": "t"})))),
            ),
            (
                "target_link_uri claim is missing",
                with(|c| drop(c.remove(TARGET_LINK_URI_CLAIM))),
            ),
        ];
        for (needle, claims) in cases {
            let err = run_all(&token(&claims)).unwrap_err();
            assert_eq!(err.rejection(), Lti13Rejection::InvalidRequest, "{needle}");
            assert!(err.detail().contains(needle), "{needle}: {err}");
        }
        // Empty roles are fine.
        let c = with(|c| drop(c.insert(ROLES_CLAIM.into(), json!([]))));
        assert!(run_all(&token(&c)).unwrap().roles.is_empty());
    }

    #[test]
    fn course_sources() {
        let base = "https://tool.example.com/lti/1.3/launch";
        let course = |custom: Option<Value>, target: &str, path: Option<&str>| {
            let c = with(|c| {
                c.insert(TARGET_LINK_URI_CLAIM.into(), json!(target));
                if let Some(custom) = custom {
                    c.insert(CUSTOM_CLAIM.into(), custom);
                }
            });
            parse(&token(&c))
                .unwrap()
                .resource_link(PUBLIC_URL, path)
                .map(|l| l.course)
                .map_err(|e| e.detail().to_string())
        };
        assert_eq!(course(None, &format!("{base}/C-1"), None).unwrap(), "C-1");
        assert_eq!(
            course(None, &format!("{base}/C%201?x=1#f"), None).unwrap(),
            "C 1"
        );
        assert_eq!(
            course(Some(json!({"course": "C-2"})), base, None).unwrap(),
            "C-2"
        );
        assert_eq!(
            course(
                Some(json!({"course": "C-2"})),
                &format!("{base}/C-2"),
                Some("C-2")
            )
            .unwrap(),
            "C-2"
        );
        // An empty custom course is absent.
        assert_eq!(
            course(Some(json!({"course": ""})), &format!("{base}/C-1"), None).unwrap(),
            "C-1"
        );
        assert_eq!(course(None, base, Some("C-3")).unwrap(), "C-3");
        assert_eq!(course(None, PUBLIC_URL, Some("C-3")).unwrap(), "C-3");
        // Two sources that disagree.
        assert!(
            course(Some(json!({"course": "C-2"})), &format!("{base}/C-1"), None)
                .unwrap_err()
                .contains("differs")
        );
        assert!(course(None, &format!("{base}/C-1"), Some("C-3"))
            .unwrap_err()
            .contains("differs"));
        assert!(course(Some(json!({"course": "C-2"})), base, Some("C-3"))
            .unwrap_err()
            .contains("differs"));
        // None, or malformed.
        assert!(course(None, base, None).unwrap_err().contains("no course"));
        assert!(course(None, &format!("{base}/a/b"), None)
            .unwrap_err()
            .contains("no course"));
        assert!(course(Some(json!({"course": 5})), base, None)
            .unwrap_err()
            .contains("not a string"));
        assert!(course(Some(json!({"course": "x".repeat(65)})), base, None)
            .unwrap_err()
            .contains("longer"));
        assert!(course(Some(json!({"course": "a\u{7}"})), base, None)
            .unwrap_err()
            .contains("control"));
        // Another host's launch path names no course.
        assert!(course(None, "https://evil.example/lti/1.3/launch/C-1", None).is_err());
        assert_eq!(
            course_from_target_link("https://tool.example.com/", &format!("{base}/C-9")),
            Some("C-9".to_string())
        );
    }

    #[test]
    fn bad_token_reasons() {
        let other_aud = with(|c| drop(c.insert("aud".into(), json!("client-2"))));
        let several_no_azp = with(|c| drop(c.insert("aud".into(), json!([CLIENT, "other"]))));
        let several_azp = with(|c| {
            c.insert("aud".into(), json!(["other", CLIENT]));
            c.insert("azp".into(), json!(CLIENT));
        });
        let wrong_azp = with(|c| drop(c.insert("azp".into(), json!("other"))));
        let wrong_iss = with(|c| drop(c.insert("iss".into(), json!("https://lms.example.edu/"))));
        let wrong_target = with(|c| {
            c.insert(
                TARGET_LINK_URI_CLAIM.into(),
                json!("https://tool.example.com/lti/1.3/launch/C-1?x"),
            );
            c.insert(CUSTOM_CLAIM.into(), json!({"course": "C-1"}));
        });
        for (claims, needle) in [
            (&other_aud, "aud"),
            (&several_no_azp, "azp"),
            (&wrong_azp, "azp"),
            (&wrong_iss, "iss"),
            (&wrong_target, "target_link_uri"),
        ] {
            let err = run_all(&token(claims)).unwrap_err();
            assert_eq!(err.rejection(), Lti13Rejection::BadToken, "{needle}");
            assert!(err.detail().contains(needle), "{needle}: {err}");
        }
        assert!(run_all(&token(&several_azp)).is_ok());
        // Signed by another key under the platform's kid.
        let t = token(&claims());
        let tool =
            SigningKey::from_pem(include_str!("../../tests/keys/tool-test-key.pem")).unwrap();
        let forged = format!(
            "{}.{}",
            t.rsplit_once('.').unwrap().0,
            tool.sign(&claims()).unwrap().rsplit_once('.').unwrap().1
        );
        let err = run_all(&forged).unwrap_err();
        assert_eq!(err.rejection(), Lti13Rejection::BadToken);
        // A kid the key set does not hold.
        let parsed = parse(&tool.sign(&claims()).unwrap()).unwrap();
        assert_eq!(parsed.key_id().unwrap(), tool.kid());
        let err = parsed.verify(&keys(&key()), &expected()).unwrap_err();
        assert_eq!(err.rejection(), Lti13Rejection::BadToken);
        assert!(err.detail().contains("kid"));
    }

    #[test]
    fn alg_none_is_bad_token_not_invalid() {
        use base64::Engine as _;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let t = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims()));
        let parsed = parse(&t).unwrap();
        assert_eq!(
            parsed.key_id().unwrap_err().rejection(),
            Lti13Rejection::BadToken
        );
        assert_eq!(
            run_all(&t).unwrap_err().rejection(),
            Lti13Rejection::BadToken
        );
    }

    #[test]
    fn times_with_leeway() {
        let t = parse(&token(&claims())).unwrap();
        assert!(t.check_times(NOW, 60).is_ok());
        assert!(t.check_times(NOW + 300 + 59, 60).is_ok());
        let err = t.check_times(NOW + 300 + 60, 60).unwrap_err();
        assert_eq!(err.rejection(), Lti13Rejection::StaleToken);
        assert!(t.check_times(NOW + 300, 0).is_err());
        // iat in the future: fine within the leeway (clock skew), refused beyond.
        assert!(t.check_times(NOW - 60, 60).is_ok());
        assert_eq!(
            t.check_times(NOW - 61, 60).unwrap_err().rejection(),
            Lti13Rejection::StaleToken
        );
        let nbf = parse(&token(&with(|c| {
            drop(c.insert("nbf".into(), json!(NOW + 100)))
        })))
        .unwrap();
        assert!(nbf.check_times(NOW + 40, 60).is_ok());
        assert!(nbf
            .check_times(NOW + 39, 60)
            .unwrap_err()
            .detail()
            .contains("nbf"));
        // Extreme values do not overflow.
        let far = parse(&token(&with(|c| {
            drop(c.insert("exp".into(), json!(i64::MAX)))
        })))
        .unwrap();
        assert!(far.check_times(i64::MAX - 1, i64::MAX).is_ok());
    }

    #[test]
    fn nonce_is_the_states() {
        let t = parse(&token(&claims())).unwrap();
        assert!(t.check_nonce("n-1").is_ok());
        for other in ["n-2", "", "n-1 ", "n-"] {
            assert_eq!(
                t.check_nonce(other).unwrap_err().rejection(),
                Lti13Rejection::ReplayedNonce
            );
        }
    }

    #[test]
    fn ags_claim_variants() {
        let ags = |v: Value| {
            let c = with(|c| drop(c.insert(AGS_ENDPOINT_CLAIM.into(), v)));
            run_all(&token(&c)).unwrap().ags
        };
        // Only lineitems, or no score scope: no score target.
        let only_container = ags(json!({"lineitems": "https://l/x", "scope": [AGS_SCORE_SCOPE]}));
        assert_eq!(only_container.unwrap().score_lineitem(), None);
        let read_only = ags(
            json!({"lineitem": "https://l/1", "scope": ["https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly"]}),
        );
        assert_eq!(read_only.unwrap().score_lineitem(), None);
        // A malformed claim is no claim.
        assert_eq!(ags(json!("https://l/1")), None);
        let odd = ags(json!({"lineitem": 5, "scope": "x"})).unwrap();
        assert_eq!(odd, AgsEndpoint::default());
    }

    #[test]
    fn name_fallback() {
        let c = with(|c| {
            c.remove("given_name");
            c.remove("family_name");
            c.insert("name".into(), json!("Ada  Lovelace King"));
        });
        let l = run_all(&token(&c)).unwrap();
        assert_eq!(l.given_name.as_deref(), Some("Ada"));
        assert_eq!(l.family_name.as_deref(), Some("Lovelace King"));
    }

    #[test]
    fn every_reason_has_a_distinct_label() {
        let labels: std::collections::HashSet<_> =
            Lti13Rejection::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Lti13Rejection::ALL.len());
        for r in Lti13Rejection::ALL {
            assert!((400..600).contains(&r.status()));
            assert!(!r.message().is_empty());
        }
        assert_eq!(
            Lti13Rejection::UnknownPlatform.message(),
            Lti13Rejection::BadToken.message()
        );
        // The labels shared with LTI 1.1 mean the same there.
        for (v13, v11) in [
            (
                Lti13Rejection::InvalidRequest,
                crate::lti::launch::Rejection::InvalidRequest,
            ),
            (
                Lti13Rejection::StoreUnavailable,
                crate::lti::launch::Rejection::StoreUnavailable,
            ),
            (
                Lti13Rejection::ReplayedNonce,
                crate::lti::launch::Rejection::ReplayedNonce,
            ),
            (
                Lti13Rejection::LicenceExhausted,
                crate::lti::launch::Rejection::LicenceExhausted,
            ),
            (
                Lti13Rejection::UnknownCourse,
                crate::lti::launch::Rejection::UnknownCourse,
            ),
            (
                Lti13Rejection::UpstreamError,
                crate::lti::launch::Rejection::UpstreamError,
            ),
        ] {
            assert_eq!((v13.label(), v13.status()), (v11.label(), v11.status()));
        }
    }
}
