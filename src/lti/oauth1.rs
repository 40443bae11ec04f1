//! OAuth 1.0a (RFC 5849) as LTI 1.1 uses it: two-legged, no token, HMAC-SHA1 or
//! HMAC-SHA256, parameters in the form body (launches) or in an
//! `Authorization: OAuth` header with `oauth_body_hash` (Basic Outcomes).

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::lti::encode::{
    parse_form, percent_decode, percent_encode, percent_encode_into, FormError,
};

/// The OAuth signature methods LTI 1.1 consumers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureMethod {
    /// `HMAC-SHA1`: the LTI 1.1 default.
    HmacSha1,
    /// `HMAC-SHA256`: Brightspace's default; outcome body hashes then use SHA-256 too.
    HmacSha256,
}

impl SignatureMethod {
    /// Parses the exact `oauth_signature_method` value (`HMAC-SHA1` or `HMAC-SHA256`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "HMAC-SHA1" => Some(Self::HmacSha1),
            "HMAC-SHA256" => Some(Self::HmacSha256),
            _ => None,
        }
    }

    /// The `oauth_signature_method` value for this method.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha1 => "HMAC-SHA1",
            Self::HmacSha256 => "HMAC-SHA256",
        }
    }
}

/// Why a URL cannot be used as an OAuth base string URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// Not of the form `scheme://authority…`.
    #[error("not an absolute URL")]
    NotAbsolute,
    /// The scheme is malformed or not `http`/`https`.
    #[error("scheme must be http or https")]
    BadScheme,
    /// The URL carries `user:password@`, which is not supported.
    #[error("user information in URLs is not supported")]
    UserInfo,
    /// The authority has no host.
    #[error("missing host")]
    MissingHost,
    /// The host contains characters that are not allowed.
    #[error("malformed host")]
    BadHost,
    /// The port is empty, not numeric, 0, or above 65535.
    #[error("port must be a number between 1 and 65535")]
    BadPort,
    /// The query string is not valid form encoding.
    #[error("bad query string: {0}")]
    BadQuery(FormError),
}

/// The pieces of an absolute http(s) URL that OAuth needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UrlParts<'a> {
    /// Lowercased scheme (`http` or `https`).
    pub(crate) scheme: String,
    /// Host as written (IPv6 literals keep their brackets).
    pub(crate) host: &'a str,
    /// Port, when given.
    pub(crate) port: Option<u16>,
    /// Raw path, possibly empty.
    pub(crate) path: &'a str,
    /// Raw query without `?`, possibly empty.
    pub(crate) query: &'a str,
}

/// Whether `b` may appear in a registered host name (RFC 3986 `reg-name`).
fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

/// Parses a decimal port in 1..=65535.
fn parse_port(s: &str) -> Result<u16, UriError> {
    if s.is_empty() {
        return Err(UriError::BadPort);
    }
    let mut value: u32 = 0;
    for b in s.bytes() {
        let digit = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            _ => return Err(UriError::BadPort),
        };
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(digit))
            .filter(|v| *v <= u32::from(u16::MAX))
            .ok_or(UriError::BadPort)?;
    }
    match u16::try_from(value) {
        Ok(0) | Err(_) => Err(UriError::BadPort),
        Ok(port) => Ok(port),
    }
}

/// Splits an authority (`host[:port]`, `[v6][:port]`) into host and port.
fn split_authority(authority: &str) -> Result<(&str, Option<u16>), UriError> {
    if authority.contains('@') {
        return Err(UriError::UserInfo);
    }
    if authority.is_empty() {
        return Err(UriError::MissingHost);
    }
    let (host, port) = if authority.starts_with('[') {
        let (inner, after) = authority
            .get(1..)
            .and_then(|rest| rest.split_once(']'))
            .ok_or(UriError::BadHost)?;
        let host = authority
            .get(..inner.len().saturating_add(2))
            .ok_or(UriError::BadHost)?;
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(UriError::BadHost);
        }
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(parse_port(port)?)),
                None => return Err(UriError::BadHost),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(parse_port(port)?)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(UriError::MissingHost);
    }
    if !host.starts_with('[') && !host.bytes().all(is_reg_name_byte) {
        return Err(UriError::BadHost);
    }
    Ok((host, port))
}

/// Splits an absolute `http`/`https` URL into its parts; the fragment is dropped.
pub(crate) fn split_url(url: &str) -> Result<UrlParts<'_>, UriError> {
    let (scheme, rest) = url.split_once("://").ok_or(UriError::NotAbsolute)?;
    let mut scheme_bytes = scheme.bytes();
    let well_formed = scheme_bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme_bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !well_formed {
        return Err(UriError::NotAbsolute);
    }
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(UriError::BadScheme);
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (host, port) = split_authority(authority)?;
    let without_fragment = tail.split_once('#').map_or(tail, |(before, _)| before);
    let (path, query) = without_fragment
        .split_once('?')
        .unwrap_or((without_fragment, ""));
    Ok(UrlParts {
        scheme,
        host,
        port,
        path,
        query,
    })
}

/// Parses the query of `url` into (decoded) parameters.
fn query_params(query: &str) -> Result<Vec<(String, String)>, UriError> {
    parse_form(query.as_bytes()).map_err(UriError::BadQuery)
}

/// The base string URI of `url` and its decoded query parameters: what a
/// signer needs from the URL it sends to.
fn signing_target(url: &str) -> Result<(String, Vec<(String, String)>), UriError> {
    let parts = split_url(url)?;
    let base_uri = base_string_uri(&parts.scheme, parts.host, parts.port, parts.path);
    Ok((base_uri, query_params(parts.query)?))
}

/// Builds the RFC 5849 §3.4.1.2 base string URI from its parts.
///
/// Scheme and host are lowercased, the default port of the scheme (`http` 80,
/// `https` 443) is dropped and any other port kept. `raw_path` is the request
/// path as sent (still percent-encoded) and is kept as is, except that a literal
/// space becomes `%20`; an empty path becomes `/` (and a path that does not start
/// with `/` gets one prepended). There is never a query.
pub fn base_string_uri(scheme: &str, host: &str, port: Option<u16>, raw_path: &str) -> String {
    let scheme = scheme.to_ascii_lowercase();
    let mut out =
        String::with_capacity(host.len().saturating_add(raw_path.len()).saturating_add(16));
    out.push_str(&scheme);
    out.push_str("://");
    out.push_str(&host.to_ascii_lowercase());
    if let Some(port) = port {
        let default = matches!((scheme.as_str(), port), ("http", 80) | ("https", 443));
        if !default {
            out.push(':');
            out.push_str(&port.to_string());
        }
    }
    if !raw_path.starts_with('/') {
        out.push('/');
    }
    for c in raw_path.chars() {
        if c == ' ' {
            out.push_str("%20");
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses an absolute URL (`scheme://host[:port][/path][?query][#fragment]`) and
/// returns its base string URI (see [`base_string_uri`]); query and fragment are
/// dropped. Only `http` and `https` are accepted; user information, an empty or
/// malformed host, and a port that is empty, not numeric, 0 or above 65535 are
/// errors.
pub fn base_string_uri_from_url(url: &str) -> Result<String, UriError> {
    let parts = split_url(url)?;
    Ok(base_string_uri(
        &parts.scheme,
        parts.host,
        parts.port,
        parts.path,
    ))
}

/// The RFC 5849 §3.4.1.3.2 normalised parameter string: every name and value
/// percent-encoded, pairs sorted by encoded name then encoded value (byte
/// order), joined as `name=value` with `&`. Nothing is excluded here.
pub fn normalized_parameters<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut encoded: Vec<(String, String)> = params
        .into_iter()
        .map(|(n, v)| (percent_encode(n.as_bytes()), percent_encode(v.as_bytes())))
        .collect();
    encoded.sort_unstable();
    let mut out = String::new();
    for (i, (name, value)) in encoded.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// The RFC 5849 §3.4.1 signature base string:
/// `UPPER(method)&enc(base_uri)&enc(normalized parameters)`.
///
/// Parameters named `oauth_signature` are left out; everything else,
/// duplicates included, is signed. (`realm` is excluded only as a parameter of
/// the `Authorization` header, which [`parse_authorization_header`] drops; a
/// query or body parameter named `realm` is signed like any other.)
pub fn signature_base_string<'a>(
    http_method: &str,
    base_uri: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let normalized = normalized_parameters(
        params
            .into_iter()
            .filter(|(name, _)| *name != "oauth_signature"),
    );
    let mut out = http_method.to_ascii_uppercase();
    out.push('&');
    percent_encode_into(base_uri.as_bytes(), &mut out);
    out.push('&');
    percent_encode_into(normalized.as_bytes(), &mut out);
    out
}

/// Base64 of the MAC `M` of `data` under `key`; `None` only if `M` refuses the
/// key (HMAC accepts keys of any length).
fn mac_base64<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Option<String> {
    let mut mac = <M as Mac>::new_from_slice(key).ok()?;
    mac.update(data);
    Some(STANDARD.encode(mac.finalize().into_bytes()))
}

/// HMAC of `base_string`, base64-encoded; `None` only if the MAC cannot be keyed.
fn try_sign(
    method: SignatureMethod,
    base_string: &str,
    consumer_secret: &[u8],
    token_secret: &[u8],
) -> Option<String> {
    let mut key = percent_encode(consumer_secret);
    key.push('&');
    percent_encode_into(token_secret, &mut key);
    match method {
        SignatureMethod::HmacSha1 => {
            mac_base64::<Hmac<Sha1>>(key.as_bytes(), base_string.as_bytes())
        }
        SignatureMethod::HmacSha256 => {
            mac_base64::<Hmac<Sha256>>(key.as_bytes(), base_string.as_bytes())
        }
    }
}

/// Signs `base_string` (RFC 5849 §3.4.2): the key is
/// `enc(consumer_secret)&enc(token_secret)` (the `&` is always there; LTI passes an
/// empty token secret), the result standard base64 with padding.
pub fn sign(
    method: SignatureMethod,
    base_string: &str,
    consumer_secret: &[u8],
    token_secret: &[u8],
) -> String {
    try_sign(method, base_string, consumer_secret, token_secret).unwrap_or_default()
}

/// Compares two signatures in constant time (for equal lengths).
pub fn signatures_equal(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A received request whose OAuth signature is to be checked.
#[derive(Debug, Clone, Copy)]
pub struct VerifyRequest<'a> {
    /// HTTP method as received (uppercased when signing).
    pub http_method: &'a str,
    /// Base string URI of the public URL the consumer used (see [`base_string_uri`]).
    pub base_uri: &'a str,
    /// Decoded query-string parameters, in order.
    pub query: &'a [(String, String)],
    /// Decoded form-body parameters (or `Authorization` header parameters), in order;
    /// `oauth_signature` may be among them and is ignored.
    pub body: &'a [(String, String)],
    /// The `oauth_signature_method` of the request.
    pub method: SignatureMethod,
    /// The received `oauth_signature`, decoded.
    pub signature: &'a str,
}

/// Returns the index of the first secret in `secrets` under which `base` is
/// signed with `signature`.
fn first_matching_secret(
    method: SignatureMethod,
    base: &str,
    secrets: &[&[u8]],
    signature: &str,
) -> Option<usize> {
    secrets.iter().position(|secret| {
        try_sign(method, base, secret, b"")
            .is_some_and(|expected| signatures_equal(&expected, signature))
    })
}

/// The body without, for each query pair, one body pair equal to it (the
/// earliest ones); `None` when no query pair is duplicated in the body.
fn body_without_query_copies<'b>(
    query: &[(String, String)],
    body: &'b [(String, String)],
) -> Option<Vec<&'b (String, String)>> {
    let mut to_remove: HashMap<&(String, String), usize> = HashMap::new();
    for pair in query {
        *to_remove.entry(pair).or_insert(0) += 1;
    }
    let mut removed_any = false;
    let kept: Vec<&(String, String)> = body
        .iter()
        .filter(|pair| match to_remove.get_mut(pair) {
            Some(count) if *count > 0 => {
                *count -= 1;
                removed_any = true;
                false
            }
            _ => true,
        })
        .collect();
    removed_any.then_some(kept)
}

/// Verifies a request's OAuth signature against each of `secrets` in order
/// (constant-time comparison) and returns the index of the first that verifies.
///
/// The base string covers every query and body parameter, duplicates kept,
/// `oauth_signature` excluded. When that fails and some exact `name=value` pairs
/// occur in both query and body (Canvas copies launch-URL query parameters into
/// the body but signs them once), a second base string is tried in which, for
/// each query pair, one equal body pair is removed. An empty signature never
/// verifies.
pub fn verify(req: &VerifyRequest<'_>, secrets: &[&[u8]]) -> Option<usize> {
    if req.signature.is_empty() || secrets.is_empty() {
        return None;
    }
    let pairs = req.query.iter().chain(req.body.iter());
    let base = signature_base_string(
        req.http_method,
        req.base_uri,
        pairs.map(|(n, v)| (n.as_str(), v.as_str())),
    );
    if let Some(index) = first_matching_secret(req.method, &base, secrets, req.signature) {
        return Some(index);
    }
    let deduped_body = body_without_query_copies(req.query, req.body)?;
    let deduped = signature_base_string(
        req.http_method,
        req.base_uri,
        req.query
            .iter()
            .chain(deduped_body)
            .map(|(n, v)| (n.as_str(), v.as_str())),
    );
    first_matching_secret(req.method, &deduped, secrets, req.signature)
}

/// `oauth_body_hash`: base64 of the SHA-1 (HMAC-SHA1) or SHA-256 (HMAC-SHA256)
/// digest of the exact body bytes.
pub fn body_hash(method: SignatureMethod, body: &[u8]) -> String {
    match method {
        SignatureMethod::HmacSha1 => STANDARD.encode(Sha1::digest(body)),
        SignatureMethod::HmacSha256 => STANDARD.encode(Sha256::digest(body)),
    }
}

/// An outgoing request signed in the `Authorization` header (a Basic Outcomes POST).
#[derive(Debug, Clone, Copy)]
pub struct OutboundRequest<'a> {
    /// HTTP method, normally `POST`.
    pub http_method: &'a str,
    /// Full target URL; its query parameters are signed.
    pub url: &'a str,
    /// `oauth_consumer_key`.
    pub consumer_key: &'a str,
    /// Shared secret.
    pub consumer_secret: &'a [u8],
    /// Signature method (also picks the body hash digest).
    pub method: SignatureMethod,
    /// `oauth_nonce`, fresh per request.
    pub nonce: &'a str,
    /// `oauth_timestamp`, Unix seconds.
    pub timestamp: u64,
    /// Exact body bytes that will be sent.
    pub body: &'a [u8],
}

/// Builds the `Authorization` header value for an outcome POST:
/// `OAuth realm="",oauth_body_hash="…",oauth_consumer_key="…",oauth_nonce="…",`
/// `oauth_signature_method="…",oauth_timestamp="…",oauth_version="1.0",oauth_signature="…"`,
/// every value percent-encoded, each parameter once. The signature covers these
/// parameters and the URL's query parameters over the URL's base string URI.
pub fn authorization_header(req: &OutboundRequest<'_>) -> Result<String, UriError> {
    let (base_uri, query) = signing_target(req.url)?;
    let body_hash = body_hash(req.method, req.body);
    let timestamp = req.timestamp.to_string();
    let oauth: [(&str, &str); 6] = [
        ("oauth_body_hash", &body_hash),
        ("oauth_consumer_key", req.consumer_key),
        ("oauth_nonce", req.nonce),
        ("oauth_signature_method", req.method.as_str()),
        ("oauth_timestamp", &timestamp),
        ("oauth_version", "1.0"),
    ];
    let base = signature_base_string(
        req.http_method,
        &base_uri,
        query
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .chain(oauth.iter().copied()),
    );
    let signature = sign(req.method, &base, req.consumer_secret, b"");
    let mut header = String::from("OAuth realm=\"\"");
    for (name, value) in oauth
        .iter()
        .copied()
        .chain([("oauth_signature", signature.as_str())])
    {
        header.push(',');
        header.push_str(name);
        header.push_str("=\"");
        percent_encode_into(value.as_bytes(), &mut header);
        header.push('"');
    }
    Ok(header)
}

/// Whether `b` is an RFC 7230 `tchar` (token character).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Parses an `Authorization: OAuth k="v", k2="v2"` header value into decoded
/// pairs, in order, without `realm`.
///
/// The scheme is matched case-insensitively; names and values are
/// percent-decoded (a `+` stays a plus); values must be double-quoted;
/// whitespace around `,` and `=` is allowed and empty list items are skipped.
/// Returns `None` when the value is not an OAuth header or is malformed.
pub fn parse_authorization_header(value: &str) -> Option<Vec<(String, String)>> {
    let value = value.trim_matches([' ', '\t']);
    let scheme = value.get(..5)?;
    if !scheme.eq_ignore_ascii_case("oauth") {
        return None;
    }
    let rest = value.get(5..)?;
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    let mut params = Vec::new();
    let mut rest = rest.trim_start_matches([' ', '\t']);
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start_matches([' ', '\t']);
            continue;
        }
        let name_len = rest.bytes().take_while(|b| is_token_byte(*b)).count();
        if name_len == 0 {
            return None;
        }
        let (raw_name, after_name) = rest.split_at(name_len);
        let after_eq = after_name
            .trim_start_matches([' ', '\t'])
            .strip_prefix('=')?
            .trim_start_matches([' ', '\t']);
        let quoted = after_eq.strip_prefix('"')?;
        let (raw_value, after_value) = quoted.split_once('"')?;
        if raw_value.contains('\\') {
            return None;
        }
        rest = after_value.trim_start_matches([' ', '\t']);
        if !rest.is_empty() && !rest.starts_with(',') {
            return None;
        }
        if raw_name.eq_ignore_ascii_case("realm") {
            continue;
        }
        let name = percent_decode(raw_name.as_bytes()).ok()?;
        let value = percent_decode(raw_value.as_bytes()).ok()?;
        params.push((name, value));
    }
    Some(params)
}

/// What an LMS needs to sign a launch (used by the demo LMS and by tests).
#[derive(Debug, Clone, Copy)]
pub struct LaunchSigner<'a> {
    /// The tool's launch URL; its query parameters are signed but not added to the body.
    pub url: &'a str,
    /// `oauth_consumer_key`.
    pub consumer_key: &'a str,
    /// Shared secret.
    pub consumer_secret: &'a [u8],
    /// Signature method.
    pub method: SignatureMethod,
    /// `oauth_nonce`.
    pub nonce: &'a str,
    /// `oauth_timestamp`, Unix seconds.
    pub timestamp: u64,
}

/// The OAuth parameters [`sign_launch`] adds (besides `oauth_signature`).
const LAUNCH_OAUTH_PARAMS: [&str; 6] = [
    "oauth_consumer_key",
    "oauth_nonce",
    "oauth_signature_method",
    "oauth_timestamp",
    "oauth_version",
    "oauth_callback",
];

/// Signs a launch as an LMS does: to `params` (any of them named like the added
/// OAuth parameters or `oauth_signature` are dropped first) appends
/// `oauth_consumer_key`, `oauth_nonce`, `oauth_signature_method`,
/// `oauth_timestamp`, `oauth_version=1.0` and `oauth_callback=about:blank`, signs
/// a `POST` to `url` (its query parameters included in the signature), then
/// appends `oauth_signature`. Returns the full body parameter list.
pub fn sign_launch(
    signer: &LaunchSigner<'_>,
    params: &[(String, String)],
) -> Result<Vec<(String, String)>, UriError> {
    let (base_uri, query) = signing_target(signer.url)?;
    let mut body: Vec<(String, String)> = params
        .iter()
        .filter(|(name, _)| {
            name != "oauth_signature" && !LAUNCH_OAUTH_PARAMS.contains(&name.as_str())
        })
        .cloned()
        .collect();
    let oauth = [
        signer.consumer_key,
        signer.nonce,
        signer.method.as_str(),
        &signer.timestamp.to_string(),
        "1.0",
        "about:blank",
    ]
    .map(str::to_owned);
    body.extend(
        LAUNCH_OAUTH_PARAMS
            .iter()
            .map(|name| (*name).to_owned())
            .zip(oauth),
    );
    let base = signature_base_string(
        "POST",
        &base_uri,
        query
            .iter()
            .chain(body.iter())
            .map(|(n, v)| (n.as_str(), v.as_str())),
    );
    let signature = sign(signer.method, &base, signer.consumer_secret, b"");
    body.push(("oauth_signature".to_owned(), signature));
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn refs(pairs: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
        pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    fn get<'p>(pairs: &'p [(String, String)], name: &str) -> Option<&'p str> {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    // ---- Vector 1: RFC 5849 §3.4.1 ----

    const V1_NORMALIZED: &str = "a2=r%20b&a3=2%20q&a3=a&b5=%3D%253D&c%40=&c2=&oauth_consumer_key=9djdj82h48djs9d2&oauth_nonce=7d8f3e4a&oauth_signature_method=HMAC-SHA1&oauth_timestamp=137131201&oauth_token=kkk9d7dh3k39sjv7";
    const V1_BASE: &str = "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q%26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk9d7dh3k39sjv7";
    const V1_SECRET: &[u8] = b"ECrDNoq1VYzzzzzzzzzyAK7TwZNtPnkqatqZZZZ";
    const V1_TOKEN_SECRET: &[u8] = b"just-a-string    asdasd";

    fn v1_params() -> Vec<(String, String)> {
        owned(&[
            ("b5", "=%3D"),
            ("a3", "a"),
            ("c@", ""),
            ("a2", "r b"),
            ("oauth_consumer_key", "9djdj82h48djs9d2"),
            ("oauth_token", "kkk9d7dh3k39sjv7"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "137131201"),
            ("oauth_nonce", "7d8f3e4a"),
            ("c2", ""),
            ("a3", "2 q"),
        ])
    }

    #[test]
    fn vector1_rfc5849() {
        let params = v1_params();
        assert_eq!(normalized_parameters(refs(&params)), V1_NORMALIZED);
        let uri = base_string_uri_from_url("http://example.com/request");
        assert_eq!(uri.as_deref(), Ok("http://example.com/request"));
        assert_eq!(
            signature_base_string("POST", "http://example.com/request", refs(&params)),
            V1_BASE
        );
        // Lowercase methods are uppercased.
        assert_eq!(
            signature_base_string("post", "http://example.com/request", refs(&params)),
            V1_BASE
        );
        assert_eq!(
            sign(
                SignatureMethod::HmacSha1,
                V1_BASE,
                V1_SECRET,
                V1_TOKEN_SECRET
            ),
            "wsdNmjGB7lvis0UJuPAmjvX/PXw="
        );
        assert_eq!(
            sign(
                SignatureMethod::HmacSha256,
                V1_BASE,
                V1_SECRET,
                V1_TOKEN_SECRET
            ),
            "wdfdHUKXHbOnOGZP8WFAWMSAmWzN3EVBWWgXGlC/Eo4="
        );
    }

    #[test]
    fn vector1_from_raw_query_and_body() {
        let query = parse_form(b"b5=%3D%253D&a3=a&c%40=&a2=r%20b");
        let body = parse_form(b"c2&a3=2+q");
        let (Ok(query), Ok(mut body)) = (query, body) else {
            panic!("vector 1 raw inputs must parse");
        };
        body.extend(owned(&[
            ("oauth_consumer_key", "9djdj82h48djs9d2"),
            ("oauth_token", "kkk9d7dh3k39sjv7"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "137131201"),
            ("oauth_nonce", "7d8f3e4a"),
            ("oauth_signature", "ignored"),
        ]));
        let base = signature_base_string(
            "POST",
            "http://example.com/request",
            refs(&query).chain(refs(&body)),
        );
        assert_eq!(base, V1_BASE);
    }

    // ---- Vector 2: OAuth Core 1.0 Appendix A.5 ----

    #[test]
    fn vector2_oauth_core_a5() {
        let url = "http://photos.example.net/photos?file=vacation.jpg&size=original";
        let Ok((_, mut params)) = signing_target(url) else {
            panic!("vector 2 URL must parse");
        };
        params.extend(owned(&[
            ("oauth_consumer_key", "dpf43f3p2l4k3l03"),
            ("oauth_token", "nnch734d00sl2jdk"),
            ("oauth_nonce", "kllo9940pd9333jh"),
            ("oauth_timestamp", "1191242096"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_version", "1.0"),
        ]));
        let uri = base_string_uri_from_url(url);
        assert_eq!(uri.as_deref(), Ok("http://photos.example.net/photos"));
        let base = signature_base_string("GET", "http://photos.example.net/photos", refs(&params));
        assert_eq!(base, "GET&http%3A%2F%2Fphotos.example.net%2Fphotos&file%3Dvacation.jpg%26oauth_consumer_key%3Ddpf43f3p2l4k3l03%26oauth_nonce%3Dkllo9940pd9333jh%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1191242096%26oauth_token%3Dnnch734d00sl2jdk%26oauth_version%3D1.0%26size%3Doriginal");
        assert_eq!(
            sign(
                SignatureMethod::HmacSha1,
                &base,
                b"kd94hf93k423kf44",
                b"pfkkdhi9sl3r4s00"
            ),
            "tR3+Ty81lMeYAr/Fid0kMTYa/WM="
        );
    }

    // ---- Vector 3: IMS test consumer launch ----

    const V3_URL: &str =
        "http://www.imsglobal.org/developers/LTI/test/v1p1/tool.php?foo=123&foo=bar";

    fn v3_body() -> Vec<(String, String)> {
        owned(&[
            ("resource_link_id", "rsc1"),
            ("oauth_callback", "about:blank"),
            (
                "lis_outcome_service_url",
                "http://www.imsglobal.org/developers/LTI/test/v1p1/common/tool_consumer_outcome.php?b64=MTIzNDU6OjpzZWNyZXQ=",
            ),
            ("lis_result_sourcedid", "feb-123-456-2929::28883"),
            (
                "launch_presentation_return_url",
                "http://www.imsglobal.org/developers/LTI/test/v1p1/lms_return.php",
            ),
            ("lti_version", "LTI-1p0"),
            ("lti_message_type", "basic-lti-launch-request"),
            ("oauth_version", "1.0"),
            ("oauth_nonce", "7ee33f6dc94117e792ff529898ce3953"),
            ("oauth_timestamp", "1397708483"),
            ("oauth_consumer_key", "12345"),
            ("oauth_signature_method", "HMAC-SHA1"),
        ])
    }

    fn v3_query() -> Vec<(String, String)> {
        owned(&[("foo", "123"), ("foo", "bar")])
    }

    fn v3_base_uri() -> String {
        base_string_uri_from_url(V3_URL).unwrap_or_default()
    }

    #[test]
    fn vector3_ims_launch_verifies() {
        let base_uri = v3_base_uri();
        assert_eq!(
            base_uri,
            "http://www.imsglobal.org/developers/LTI/test/v1p1/tool.php"
        );
        assert_eq!(
            base_string_uri(
                "http",
                "www.imsglobal.org",
                None,
                "/developers/LTI/test/v1p1/tool.php"
            ),
            base_uri
        );
        let (query, mut body) = (v3_query(), v3_body());
        body.push((
            "oauth_signature".to_owned(),
            "dHORwwJqwh5hQQAlvaA9csSIOhc=".to_owned(),
        ));
        let base = signature_base_string("POST", &base_uri, refs(&query).chain(refs(&body)));
        assert_eq!(
            sign(SignatureMethod::HmacSha1, &base, b"secret", b""),
            "dHORwwJqwh5hQQAlvaA9csSIOhc="
        );
        let req = VerifyRequest {
            http_method: "POST",
            base_uri: &base_uri,
            query: &query,
            body: &body,
            method: SignatureMethod::HmacSha1,
            signature: "dHORwwJqwh5hQQAlvaA9csSIOhc=",
        };
        assert_eq!(verify(&req, &[b"secret"]), Some(0));
        assert_eq!(verify(&req, &[b"old", b"wrong", b"secret"]), Some(2));
        assert_eq!(verify(&req, &[b"wrong"]), None);
        assert_eq!(verify(&req, &[]), None);
        // Same signature claimed as SHA-256 does not verify.
        let sha256 = VerifyRequest {
            method: SignatureMethod::HmacSha256,
            ..req
        };
        assert_eq!(verify(&sha256, &[b"secret"]), None);
        // POST vs GET matters.
        let get = VerifyRequest {
            http_method: "GET",
            ..req
        };
        assert_eq!(verify(&get, &[b"secret"]), None);
    }

    #[test]
    fn vector3_without_query_does_not_verify() {
        let base_uri = v3_base_uri();
        let body = v3_body();
        let base = signature_base_string("POST", &base_uri, refs(&body));
        assert_eq!(
            sign(SignatureMethod::HmacSha1, &base, b"secret", b""),
            "PJZ9sng84excDcmRAcORSeVsfFI="
        );
        // The real signature needs the query parameters: dropping them fails.
        let without_query = VerifyRequest {
            http_method: "POST",
            base_uri: &base_uri,
            query: &[],
            body: &body,
            method: SignatureMethod::HmacSha1,
            signature: "dHORwwJqwh5hQQAlvaA9csSIOhc=",
        };
        assert_eq!(verify(&without_query, &[b"secret"]), None);
        // A signature made without the query does not verify a request that has it.
        let query = v3_query();
        let with_query = VerifyRequest {
            query: &query,
            signature: "PJZ9sng84excDcmRAcORSeVsfFI=",
            ..without_query
        };
        assert_eq!(verify(&with_query, &[b"secret"]), None);
    }

    // ---- Vector 4: body hash ----

    #[test]
    fn vector4_body_hash() {
        assert_eq!(
            body_hash(SignatureMethod::HmacSha1, b"Hello World!"),
            "Lve95gjOVATpfV8EL5X4nxwjKHE="
        );
        assert_eq!(
            body_hash(SignatureMethod::HmacSha1, b""),
            "2jmj7l5rSw0yVb/vlWAYkK/YBwk="
        );
        assert_eq!(
            body_hash(SignatureMethod::HmacSha256, b"Hello World!"),
            "f4OxZX/x/FO5LcGBSKHWXfwtSx+j1ncoSt3SABJtkGk="
        );
        assert_eq!(
            body_hash(SignatureMethod::HmacSha256, b""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    // ---- Vector 5: base string URI ----

    #[test]
    fn vector5_base_string_uri() {
        let cases = [
            (
                "http://EXAMPLE.COM:80/r v/X?id=123",
                "http://example.com/r%20v/X",
            ),
            (
                "http://EXAMPLE.COM:80/r%20v/X?id=123",
                "http://example.com/r%20v/X",
            ),
            (
                "https://www.example.net:8080/?q=1",
                "https://www.example.net:8080/",
            ),
            ("HTTP://www.example.com:443/", "http://www.example.com:443/"),
            ("HTTPS://www.example.com:80/", "https://www.example.com:80/"),
            ("http://www.example.com", "http://www.example.com/"),
            (
                "https://www.example.com/path#fragment",
                "https://www.example.com/path",
            ),
            ("https://www.example.com:443/a", "https://www.example.com/a"),
        ];
        for (url, expected) in cases {
            assert_eq!(
                base_string_uri_from_url(url).as_deref(),
                Ok(expected),
                "{url}"
            );
        }
    }

    #[test]
    fn vector5_port_errors() {
        for url in [
            "http://www.example.com:0/",
            "http://www.example.com:65536/",
            "http://www.example.com:http/",
            "http://www.example.com:8o/",
            "http://www.example.com:/",
            "http://www.example.com:-1/",
            "http://www.example.com:99999999999999999999/",
            "http://www.example.com:80:80/",
            "http://[::1]:0/",
        ] {
            assert_eq!(
                base_string_uri_from_url(url),
                Err(UriError::BadPort),
                "{url}"
            );
        }
    }

    #[test]
    fn uri_parsing_edges() {
        let ok = [
            ("http://h:65535", "http://h:65535/"),
            ("http://h:00080/x", "http://h/x"),
            ("http://h?x=1", "http://h/"),
            ("http://h#f", "http://h/"),
            ("https://H.Example/A/B/?x", "https://h.example/A/B/"),
            ("https://[::1]:8443/lti", "https://[::1]:8443/lti"),
            ("https://[2001:DB8::1]/", "https://[2001:db8::1]/"),
            ("http://h/a?b#c?d", "http://h/a"),
            ("http://h/p%2Fq%7e", "http://h/p%2Fq%7e"),
        ];
        for (url, expected) in ok {
            assert_eq!(
                base_string_uri_from_url(url).as_deref(),
                Ok(expected),
                "{url}"
            );
        }
        let bad = [
            ("", UriError::NotAbsolute),
            ("example.com/x", UriError::NotAbsolute),
            ("/lti/launch", UriError::NotAbsolute),
            ("://h/", UriError::NotAbsolute),
            ("1http://h/", UriError::NotAbsolute),
            ("ftp://h/", UriError::BadScheme),
            ("http:///x", UriError::MissingHost),
            ("http://", UriError::MissingHost),
            ("http://:80/", UriError::MissingHost),
            ("http://u:p@h/", UriError::UserInfo),
            ("http://h o/", UriError::BadHost),
            ("http://bücher.de/", UriError::BadHost),
            ("http://[::1/", UriError::BadHost),
            ("http://[]/", UriError::BadHost),
            ("http://[zz]/", UriError::BadHost),
            ("http://[::1]x/", UriError::BadHost),
        ];
        for (url, err) in bad {
            assert_eq!(base_string_uri_from_url(url), Err(err), "{url}");
        }
    }

    #[test]
    fn base_string_uri_from_parts() {
        assert_eq!(
            base_string_uri("HTTPS", "LEARN.Example.com", Some(443), ""),
            "https://learn.example.com/"
        );
        assert_eq!(
            base_string_uri("https", "h", Some(8443), "/a b/%41"),
            "https://h:8443/a%20b/%41"
        );
        assert_eq!(base_string_uri("http", "h", Some(80), "/x/"), "http://h/x/");
        assert_eq!(
            base_string_uri("http", "h", Some(443), "/"),
            "http://h:443/"
        );
        assert_eq!(base_string_uri("http", "h", None, "lti"), "http://h/lti");
    }

    #[test]
    fn json_vectors() {
        #[derive(serde::Deserialize)]
        struct File {
            signatures: Vec<Sig>,
            body_hash: Vec<BodyHash>,
            base_string_uri: Vec<Uri>,
        }
        #[derive(serde::Deserialize)]
        struct Sig {
            name: String,
            method: String,
            url: String,
            raw_query: Option<String>,
            raw_body: Option<String>,
            params_decoded: Option<Vec<(String, String)>>,
            body_params_decoded: Option<Vec<(String, String)>>,
            client_secret: String,
            token_secret: String,
            base_string: String,
            hmac_sha1: String,
            hmac_sha256: Option<String>,
            negative_without_query: Option<Negative>,
        }
        #[derive(serde::Deserialize)]
        struct Negative {
            base_string: String,
            hmac_sha1: String,
        }
        #[derive(serde::Deserialize)]
        struct BodyHash {
            body: String,
            sha1: String,
            sha256: String,
        }
        #[derive(serde::Deserialize)]
        struct Uri {
            input: String,
            base_string_uri: String,
        }

        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/oauth1.json");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let file: File = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            !file.signatures.is_empty()
                && !file.body_hash.is_empty()
                && !file.base_string_uri.is_empty()
        );

        for v in &file.signatures {
            let name = &v.name;
            let base_uri =
                base_string_uri_from_url(&v.url).unwrap_or_else(|e| panic!("{name}: {e}"));
            let (_, url_query) = signing_target(&v.url).unwrap_or_else(|e| panic!("{name}: {e}"));
            let token_secret = v.token_secret.as_bytes();
            let secret = v.client_secret.as_bytes();

            // Parameters as listed (already including any URL query parameters), or
            // the URL's query followed by the body.
            let all: Vec<(String, String)> = match (&v.params_decoded, &v.body_params_decoded) {
                (Some(p), _) => p.clone(),
                (None, Some(b)) => url_query.iter().chain(b.iter()).cloned().collect(),
                (None, None) => panic!("{name}: no parameters"),
            };
            let base = signature_base_string(&v.method, &base_uri, refs(&all));
            assert_eq!(base, v.base_string, "{name}");
            assert_eq!(
                sign(SignatureMethod::HmacSha1, &base, secret, token_secret),
                v.hmac_sha1,
                "{name}"
            );
            if let Some(sha256) = &v.hmac_sha256 {
                assert_eq!(
                    sign(SignatureMethod::HmacSha256, &base, secret, token_secret),
                    *sha256,
                    "{name}"
                );
            }

            // Raw inputs decode to the same parameters.
            if let (Some(q), Some(b)) = (&v.raw_query, &v.raw_body) {
                let mut raw = parse_form(q.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
                raw.extend(parse_form(b.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}")));
                for pair in &raw {
                    assert!(all.contains(pair), "{name}: {pair:?}");
                }
            }

            // Token-less vectors go through `verify` too.
            if token_secret.is_empty() {
                let body = v.body_params_decoded.clone().unwrap_or_default();
                let req = VerifyRequest {
                    http_method: &v.method,
                    base_uri: &base_uri,
                    query: &url_query,
                    body: &body,
                    method: SignatureMethod::HmacSha1,
                    signature: &v.hmac_sha1,
                };
                assert_eq!(verify(&req, &[b"nope", secret]), Some(1), "{name}");
            }

            if let Some(neg) = &v.negative_without_query {
                let body = v.body_params_decoded.clone().unwrap_or_default();
                let base = signature_base_string(&v.method, &base_uri, refs(&body));
                assert_eq!(base, neg.base_string, "{name}");
                assert_eq!(
                    sign(SignatureMethod::HmacSha1, &base, secret, token_secret),
                    neg.hmac_sha1
                );
                let req = VerifyRequest {
                    http_method: &v.method,
                    base_uri: &base_uri,
                    query: &url_query,
                    body: &body,
                    method: SignatureMethod::HmacSha1,
                    signature: &neg.hmac_sha1,
                };
                assert_eq!(verify(&req, &[secret]), None, "{name}: negative");
            }
        }

        for v in &file.body_hash {
            assert_eq!(
                body_hash(SignatureMethod::HmacSha1, v.body.as_bytes()),
                v.sha1
            );
            assert_eq!(
                body_hash(SignatureMethod::HmacSha256, v.body.as_bytes()),
                v.sha256
            );
        }
        for v in &file.base_string_uri {
            assert_eq!(
                base_string_uri_from_url(&v.input).as_deref(),
                Ok(v.base_string_uri.as_str()),
                "{}",
                v.input
            );
        }
    }

    #[test]
    fn signature_method_names() {
        for m in [SignatureMethod::HmacSha1, SignatureMethod::HmacSha256] {
            assert_eq!(SignatureMethod::parse(m.as_str()), Some(m));
        }
        for bad in [
            "hmac-sha1",
            "HMAC-SHA512",
            "RSA-SHA1",
            "PLAINTEXT",
            "",
            " HMAC-SHA1",
        ] {
            assert_eq!(SignatureMethod::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn base_string_excludes_only_signature() {
        let params = owned(&[
            ("b", "2"),
            ("oauth_signature", "x"),
            ("realm", "r"),
            ("a", "1"),
            ("a", "1"),
        ]);
        assert_eq!(
            signature_base_string("POST", "http://h/", refs(&params)),
            "POST&http%3A%2F%2Fh%2F&a%3D1%26a%3D1%26b%3D2%26realm%3Dr"
        );
        // normalized_parameters itself excludes nothing.
        assert_eq!(
            normalized_parameters(refs(&params)),
            "a=1&a=1&b=2&oauth_signature=x&realm=r"
        );
    }

    #[test]
    fn realm_query_parameter_is_signed() {
        // RFC 5849 §3.4.1.3.1 leaves out `realm` only from the Authorization
        // header. Signature computed with oauthlib 3 (SIGNATURE_TYPE_BODY,
        // nonce "n", timestamp "1") for a launch URL with `?realm=eu`.
        let url = "https://tool.example/launch?realm=eu";
        let base_uri = base_string_uri_from_url(url).unwrap_or_default();
        let query = owned(&[("realm", "eu")]);
        let body = owned(&[
            ("a", "1"),
            ("oauth_nonce", "n"),
            ("oauth_timestamp", "1"),
            ("oauth_version", "1.0"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_consumer_key", "key"),
            ("oauth_signature", "EMD0q0DkPluedXVpwxE14RZsbR4="),
        ]);
        let req = VerifyRequest {
            http_method: "POST",
            base_uri: &base_uri,
            query: &query,
            body: &body,
            method: SignatureMethod::HmacSha1,
            signature: "EMD0q0DkPluedXVpwxE14RZsbR4=",
        };
        assert_eq!(verify(&req, &[b"secret"]), Some(0));
        // Signed without the realm parameter: not this request.
        let without = VerifyRequest {
            signature: "aaw+6dEAWcDRcsqFstf7dojy2gI=",
            ..req
        };
        assert_eq!(verify(&without, &[b"secret"]), None);
        // In a header, realm is not a parameter.
        let header = parse_authorization_header("OAuth realm=\"eu\",oauth_nonce=\"n\"");
        assert_eq!(header, Some(owned(&[("oauth_nonce", "n")])));
    }

    #[test]
    fn sorting_is_by_encoded_bytes() {
        // Encoded "%20" sorts before letters and digits; uppercase before lowercase.
        let params = owned(&[("a", "z"), ("a", " "), ("B", "1"), ("a", "Z"), ("a~", "")]);
        assert_eq!(
            normalized_parameters(refs(&params)),
            "B=1&a=%20&a=Z&a=z&a~="
        );
    }

    #[test]
    fn secret_is_percent_encoded_in_key() {
        // key "a%26b&" for secret "a&b" — differs from a raw "a&b&" key.
        let encoded = sign(SignatureMethod::HmacSha1, "base", b"a&b", b"");
        let with_token = sign(SignatureMethod::HmacSha1, "base", b"a", b"b&");
        assert_ne!(encoded, with_token);
        assert_eq!(
            encoded,
            sign(SignatureMethod::HmacSha1, "base", b"a&b", b"")
        );
        assert!(encoded.ends_with('='));
    }

    #[test]
    fn constant_time_equality() {
        assert!(signatures_equal("abc=", "abc="));
        assert!(!signatures_equal("abc=", "abd="));
        assert!(!signatures_equal("abc", "abc="));
        assert!(signatures_equal("", ""));
    }

    #[test]
    fn empty_signature_never_verifies() {
        let req = VerifyRequest {
            http_method: "POST",
            base_uri: "http://h/",
            query: &[],
            body: &[],
            method: SignatureMethod::HmacSha1,
            signature: "",
        };
        assert_eq!(verify(&req, &[b"", b"secret"]), None);
    }

    fn signer(url: &str) -> LaunchSigner<'_> {
        LaunchSigner {
            url,
            consumer_key: "key",
            consumer_secret: b"s3cr&t",
            method: SignatureMethod::HmacSha1,
            nonce: "n0nce",
            timestamp: 1_700_000_000,
        }
    }

    fn launch_params() -> Vec<(String, String)> {
        owned(&[
            ("lti_message_type", "basic-lti-launch-request"),
            ("lti_version", "LTI-1p0"),
            ("resource_link_id", "r1"),
            ("user_id", "u 1+2"),
            ("custom_course", "C-1"),
        ])
    }

    #[test]
    fn sign_launch_round_trip() {
        let url = "https://Learn.example.com:443/lti/launch";
        for method in [SignatureMethod::HmacSha1, SignatureMethod::HmacSha256] {
            let s = LaunchSigner {
                method,
                ..signer(url)
            };
            let body = sign_launch(&s, &launch_params()).unwrap_or_default();
            assert_eq!(get(&body, "oauth_consumer_key"), Some("key"));
            assert_eq!(get(&body, "oauth_nonce"), Some("n0nce"));
            assert_eq!(get(&body, "oauth_signature_method"), Some(method.as_str()));
            assert_eq!(get(&body, "oauth_timestamp"), Some("1700000000"));
            assert_eq!(get(&body, "oauth_version"), Some("1.0"));
            assert_eq!(get(&body, "oauth_callback"), Some("about:blank"));
            assert_eq!(
                body.last().map(|(n, _)| n.as_str()),
                Some("oauth_signature")
            );
            assert_eq!(body.len(), launch_params().len() + 7);
            let signature = get(&body, "oauth_signature").unwrap_or_default();

            // Through a real form body and back.
            let pairs: Vec<(&str, &str)> = refs(&body).collect();
            let wire = crate::lti::encode::form_encode(&pairs);
            let received = parse_form(wire.as_bytes()).unwrap_or_default();
            assert_eq!(received, body);

            let base_uri = base_string_uri("https", "learn.example.com", Some(443), "/lti/launch");
            let req = VerifyRequest {
                http_method: "POST",
                base_uri: &base_uri,
                query: &[],
                body: &received,
                method,
                signature,
            };
            assert_eq!(verify(&req, &[b"other", b"s3cr&t"]), Some(1));
            // Tampering with any parameter breaks it.
            let mut tampered = received.clone();
            if let Some(p) = tampered.iter_mut().find(|(n, _)| n == "user_id") {
                p.1.push('x');
            }
            assert_eq!(
                verify(
                    &VerifyRequest {
                        body: &tampered,
                        ..req
                    },
                    &[b"s3cr&t"]
                ),
                None
            );
            // An added parameter breaks it (verifiers must not inject defaults).
            let mut added = received.clone();
            added.push(("launch_presentation_locale".to_owned(), "en".to_owned()));
            assert_eq!(
                verify(
                    &VerifyRequest {
                        body: &added,
                        ..req
                    },
                    &[b"s3cr&t"]
                ),
                None
            );
        }
    }

    #[test]
    fn sign_launch_replaces_given_oauth_params() {
        let mut params = launch_params();
        params.push(("oauth_nonce".to_owned(), "old".to_owned()));
        params.push(("oauth_signature".to_owned(), "old".to_owned()));
        let body = sign_launch(&signer("http://h/l"), &params).unwrap_or_default();
        assert_eq!(body.iter().filter(|(n, _)| n == "oauth_nonce").count(), 1);
        assert_eq!(
            body.iter().filter(|(n, _)| n == "oauth_signature").count(),
            1
        );
        assert_eq!(get(&body, "oauth_nonce"), Some("n0nce"));
    }

    #[test]
    fn sign_launch_errors() {
        assert_eq!(
            sign_launch(&signer("nope"), &[]),
            Err(UriError::NotAbsolute)
        );
        assert_eq!(
            sign_launch(&signer("http://h/?a=%zz"), &[]),
            Err(UriError::BadQuery(FormError::BadPercent("value")))
        );
    }

    #[test]
    fn launch_url_query_is_signed_not_sent() {
        let url = "https://learn.example.com/lti/launch?course=C%201&x";
        let body = sign_launch(&signer(url), &launch_params()).unwrap_or_default();
        assert!(get(&body, "course").is_none());
        let signature = get(&body, "oauth_signature").unwrap_or_default();
        let base_uri = base_string_uri_from_url(url).unwrap_or_default();
        let query = owned(&[("course", "C 1"), ("x", "")]);
        let req = VerifyRequest {
            http_method: "POST",
            base_uri: &base_uri,
            query: &query,
            body: &body,
            method: SignatureMethod::HmacSha1,
            signature,
        };
        assert_eq!(verify(&req, &[b"s3cr&t"]), Some(0));
        assert_eq!(
            verify(&VerifyRequest { query: &[], ..req }, &[b"s3cr&t"]),
            None
        );
    }

    #[test]
    fn canvas_duplicated_query_params() {
        // Canvas signs the query parameters once but also copies them into the body.
        let url = "https://learn.example.com/lti/launch?course=C-1&a=1";
        let signed = sign_launch(&signer(url), &launch_params()).unwrap_or_default();
        let signature = get(&signed, "oauth_signature")
            .unwrap_or_default()
            .to_owned();
        let base_uri = base_string_uri_from_url(url).unwrap_or_default();
        let query = owned(&[("course", "C-1"), ("a", "1")]);
        let mut body = owned(&[("course", "C-1"), ("a", "1")]);
        body.extend(signed);
        let req = VerifyRequest {
            http_method: "POST",
            base_uri: &base_uri,
            query: &query,
            body: &body,
            method: SignatureMethod::HmacSha1,
            signature: &signature,
        };
        assert_eq!(verify(&req, &[b"x", b"s3cr&t"]), Some(1));
        assert_eq!(verify(&req, &[b"x"]), None);

        // Only exact name=value copies are removed: a differing value is not a copy.
        let mut differing = body.clone();
        if let Some(p) = differing.iter_mut().find(|(n, v)| n == "a" && v == "1") {
            p.1 = "2".to_owned();
        }
        assert_eq!(
            verify(
                &VerifyRequest {
                    body: &differing,
                    ..req
                },
                &[b"s3cr&t"]
            ),
            None
        );

        // A pair signed twice (in query and body) still verifies on the first pass.
        let mut twice = launch_params();
        twice.push(("a".to_owned(), "1".to_owned()));
        let signed_twice = sign_launch(&signer("https://learn.example.com/lti/launch?a=1"), &twice)
            .unwrap_or_default();
        let sig2 = get(&signed_twice, "oauth_signature").unwrap_or_default();
        let q2 = owned(&[("a", "1")]);
        let req2 = VerifyRequest {
            query: &q2,
            body: &signed_twice,
            signature: sig2,
            ..req
        };
        assert_eq!(verify(&req2, &[b"s3cr&t"]), Some(0));
    }

    #[test]
    fn dedupe_removes_one_copy_per_query_pair() {
        let query = owned(&[("a", "1"), ("a", "1"), ("b", "2")]);
        let body = owned(&[("a", "1"), ("a", "1"), ("a", "1"), ("c", "3")]);
        let kept = body_without_query_copies(&query, &body).unwrap_or_default();
        assert_eq!(
            kept,
            vec![
                &("a".to_owned(), "1".to_owned()),
                &("c".to_owned(), "3".to_owned())
            ]
        );
        assert_eq!(
            body_without_query_copies(&owned(&[("x", "1")]), &body),
            None
        );
        assert_eq!(body_without_query_copies(&[], &body), None);
    }

    #[test]
    fn authorization_header_shape_and_signature() {
        let body = b"<?xml version=\"1.0\"?><x/>";
        for method in [SignatureMethod::HmacSha1, SignatureMethod::HmacSha256] {
            let req = OutboundRequest {
                http_method: "POST",
                url: "https://lms.example.org/outcomes?b64=MTIz%3D&x=a+b#frag",
                consumer_key: "ke y",
                consumer_secret: b"secret",
                method,
                nonce: "abc/123",
                timestamp: 1_397_708_483,
                body,
            };
            let header = authorization_header(&req).unwrap_or_default();
            assert!(
                header.starts_with("OAuth realm=\"\",oauth_body_hash=\""),
                "{header}"
            );
            for name in [
                "oauth_body_hash",
                "oauth_consumer_key",
                "oauth_nonce",
                "oauth_signature_method",
                "oauth_timestamp",
                "oauth_version",
                "oauth_signature",
            ] {
                assert_eq!(
                    header.matches(&format!(",{name}=\"")).count(),
                    1,
                    "{name} in {header}"
                );
            }
            assert!(header.contains("oauth_consumer_key=\"ke%20y\""));
            assert!(header.contains("oauth_nonce=\"abc%2F123\""));
            assert!(header.contains("oauth_timestamp=\"1397708483\""));
            assert!(header.contains("oauth_version=\"1.0\""));

            let params = parse_authorization_header(&header).unwrap_or_default();
            assert_eq!(params.len(), 7);
            let hash = body_hash(method, body);
            assert_eq!(get(&params, "oauth_body_hash"), Some(hash.as_str()));
            assert_eq!(get(&params, "oauth_consumer_key"), Some("ke y"));
            assert_eq!(
                get(&params, "oauth_signature_method"),
                Some(method.as_str())
            );
            let signature = get(&params, "oauth_signature").unwrap_or_default();

            // What the LMS checks.
            let query = owned(&[("b64", "MTIz="), ("x", "a b")]);
            let req = VerifyRequest {
                http_method: "POST",
                base_uri: "https://lms.example.org/outcomes",
                query: &query,
                body: &params,
                method,
                signature,
            };
            assert_eq!(verify(&req, &[b"secret"]), Some(0));
            assert_eq!(
                verify(&VerifyRequest { query: &[], ..req }, &[b"secret"]),
                None
            );
        }
    }

    #[test]
    fn authorization_header_errors() {
        let req = OutboundRequest {
            http_method: "POST",
            url: "lms.example.org/outcomes",
            consumer_key: "k",
            consumer_secret: b"s",
            method: SignatureMethod::HmacSha1,
            nonce: "n",
            timestamp: 1,
            body: b"",
        };
        assert_eq!(authorization_header(&req), Err(UriError::NotAbsolute));
        let bad_query = OutboundRequest {
            url: "https://h/o?x=%C3",
            ..req
        };
        assert_eq!(
            authorization_header(&bad_query),
            Err(UriError::BadQuery(FormError::BadUtf8))
        );
    }

    #[test]
    fn parse_authorization_header_cases() {
        let ok: &[(&str, &[(&str, &str)])] = &[
            (
                "OAuth realm=\"\",oauth_nonce=\"a%2Bb\"",
                &[("oauth_nonce", "a+b")],
            ),
            (
                "oauth  oauth_a=\"1\" ,  oauth_b = \"x+y%20z\",",
                &[("oauth_a", "1"), ("oauth_b", "x+y z")],
            ),
            (
                "OAuth Realm=\"Photos\", oauth_sig=\"abc%3D\"",
                &[("oauth_sig", "abc=")],
            ),
            ("OAuth", &[]),
            ("OAuth  ", &[]),
            ("  OAuth a=\"\"  ", &[("a", "")]),
            ("OAuth a=\"1\",,b=\"2\"", &[("a", "1"), ("b", "2")]),
        ];
        for (header, expected) in ok {
            assert_eq!(
                parse_authorization_header(header),
                Some(owned(expected)),
                "{header}"
            );
        }
        let bad = [
            "",
            "Basic dXNlcjpwYXNz",
            "Bearer abc",
            "OAuthx a=\"1\"",
            "OAuth a=1",
            "OAuth a=\"1",
            "OAuth a=\"1\" b=\"2\"",
            "OAuth =\"1\"",
            "OAuth a",
            "OAuth a=\"%zz\"",
            "OAuth a=\"x\\\"y\"",
            "OAuth a=\"1\"x",
            "OAu",
            "OAuthé",
            "éOAuth",
        ];
        for header in bad {
            assert_eq!(parse_authorization_header(header), None, "{header}");
        }
    }

    #[test]
    fn garbage_does_not_panic() {
        let pieces = [
            "http://", "https://", "[", "]", ":", "@", "/", "?", "#", "%", "2", "F", "é", "🎓",
            " ", "=", "\"", ",", "OAuth ", "realm", "&", "+", "0", "65535", "\t",
        ];
        // Inputs from a fixed linear congruential sequence.
        let mut state: u32 = 7;
        for _ in 0..2000 {
            let mut input = String::new();
            for _ in 0..12 {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let i = usize::try_from(state >> 16).unwrap_or(0) % pieces.len();
                input.push_str(pieces.get(i).copied().unwrap_or_default());
            }
            let _ = base_string_uri_from_url(&input);
            let _ = parse_authorization_header(&input);
            let _ = parse_form(input.as_bytes());
            let _ = sign_launch(&signer(&input), &[]);
        }
    }
}
