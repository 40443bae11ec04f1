//! Reading ltigate's cookie out of a request's `Cookie` headers.

/// The name prefix of the LTI 1.3 login's state cookies (DESIGN §13):
/// ltigate's own, never forwarded to the upstream.
pub const STATE_COOKIE_PREFIX: &str = "__Host-ltigate_s_";

/// Finds the value of cookie `name` in `Cookie` header values. Other
/// cookies may hold any bytes; only the value found must be UTF-8.
pub fn cookie_value<'a>(headers: impl Iterator<Item = &'a [u8]>, name: &str) -> Option<&'a str> {
    for h in headers {
        // A sealed session is a long value: the separators are found with
        // memchr, not byte by byte.
        let mut rest = h;
        while !rest.is_empty() {
            let end = memchr::memchr(b';', rest).unwrap_or(rest.len());
            let pair = &rest[..end];
            rest = rest.get(end + 1..).unwrap_or_default();
            let Some(eq) = memchr::memchr(b'=', pair) else {
                continue;
            };
            let (n, v) = pair.split_at(eq);
            if n.trim_ascii() == name.as_bytes() {
                let v = std::str::from_utf8(v.get(1..)?).ok()?;
                return Some(v.trim().trim_matches('"'));
            }
        }
    }
    None
}
