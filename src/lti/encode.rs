//! RFC 3986 percent-encoding (as OAuth 1.0a requires it) and strict
//! `application/x-www-form-urlencoded` parsing.

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Whether `b` belongs to the RFC 3986 unreserved set `A-Z a-z 0-9 - . _ ~`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encodes `input` per RFC 3986 / RFC 5849 §3.6: unreserved bytes
/// (`A-Za-z0-9-._~`) are kept, every other byte becomes `%XX` with uppercase hex.
/// A space becomes `%20`, never `+`.
pub fn percent_encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len());
    percent_encode_into(input, &mut out);
    out
}

/// Like [`percent_encode`], appending to `out` instead of allocating.
pub fn percent_encode_into(input: &[u8], out: &mut String) {
    for &b in input {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(b & 0x0F)]));
        }
    }
}

/// Why a form body or query string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// A `%` not followed by two hex digits; the payload says whether it was in
    /// the parameter's `"name"` or `"value"`.
    #[error("bad percent-encoding in {0}")]
    BadPercent(&'static str),
    /// The decoded bytes of a name or value are not valid UTF-8.
    #[error("parameter is not valid UTF-8")]
    BadUtf8,
}

/// Value of an ASCII hex digit, either case.
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`), then checks
/// that the result is UTF-8.
fn decode(raw: &[u8], plus_is_space: bool, what: &'static str) -> Result<String, FormError> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut iter = raw.iter().copied();
    while let Some(b) = iter.next() {
        match b {
            b'+' if plus_is_space => bytes.push(b' '),
            b'%' => {
                let hi = iter.next().and_then(hex_value);
                let lo = iter.next().and_then(hex_value);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => bytes.push((hi << 4) | lo),
                    _ => return Err(FormError::BadPercent(what)),
                }
            }
            other => bytes.push(other),
        }
    }
    String::from_utf8(bytes).map_err(|_| FormError::BadUtf8)
}

/// Strictly percent-decodes `input` as RFC 3986 does: `%XX` (hex digits of
/// either case) becomes a byte and `+` stays a literal plus. Used for the values
/// of an `Authorization: OAuth` header. A `%` not followed by two hex digits is
/// [`FormError::BadPercent`] (reported as `"value"`), a result that is not UTF-8
/// is [`FormError::BadUtf8`].
pub fn percent_decode(input: &[u8]) -> Result<String, FormError> {
    decode(input, false, "value")
}

/// Parses an `application/x-www-form-urlencoded` body (or a raw query string)
/// strictly.
///
/// The input is split on `&` (empty segments are skipped), each segment on its
/// first `=` (a segment without `=` has an empty value). In names and values `+`
/// means a space and `%XX` (hex digits of either case) a byte; a `%` not
/// followed by two hex digits is [`FormError::BadPercent`], decoded bytes that
/// are not UTF-8 are [`FormError::BadUtf8`]. Order and duplicates are kept.
pub fn parse_form(raw: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    let mut pairs = Vec::new();
    for segment in raw.split(|&b| b == b'&') {
        if segment.is_empty() {
            continue;
        }
        let (name, value) = match segment.iter().position(|&b| b == b'=') {
            Some(eq) => {
                let (n, rest) = segment.split_at(eq);
                (n, rest.get(1..).unwrap_or_default())
            }
            None => (segment, &[][..]),
        };
        pairs.push((decode(name, true, "name")?, decode(value, true, "value")?));
    }
    Ok(pairs)
}

/// Encodes `pairs` as a form body `n1=v1&n2=v2`, percent-encoding names and
/// values with [`percent_encode`] (a valid, if conservative, form encoding).
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        percent_encode_into(name.as_bytes(), &mut out);
        out.push('=');
        percent_encode_into(value.as_bytes(), &mut out);
    }
    out
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

    #[test]
    fn unreserved_kept_everything_else_encoded() {
        assert_eq!(
            percent_encode(b"AZaz09-._~"),
            "AZaz09-._~",
            "unreserved set is kept"
        );
        assert_eq!(percent_encode(b" "), "%20");
        assert_eq!(percent_encode(b"+"), "%2B");
        assert_eq!(percent_encode(b"/!'()*"), "%2F%21%27%28%29%2A");
        assert_eq!(percent_encode(b"=%3D"), "%3D%253D");
        assert_eq!(percent_encode(b"c@"), "c%40");
        assert_eq!(percent_encode("é".as_bytes()), "%C3%A9");
        assert_eq!(percent_encode(&[0x00, 0xFF, 0x7F]), "%00%FF%7F");
        assert_eq!(percent_encode(b""), "");
    }

    #[test]
    fn every_byte_round_trips_through_parse() {
        let all: Vec<u8> = (0u8..=127).collect();
        let text = String::from_utf8(all).unwrap_or_default();
        let enc = percent_encode(text.as_bytes());
        assert!(enc
            .bytes()
            .all(|b| is_unreserved(b) || b == b'%' || b.is_ascii_hexdigit()));
        let parsed = parse_form(format!("k={enc}").as_bytes());
        assert_eq!(parsed, Ok(owned(&[("k", &text)])));
    }

    #[test]
    fn encode_into_appends() {
        let mut s = String::from("x=");
        percent_encode_into(b"a b", &mut s);
        assert_eq!(s, "x=a%20b");
    }

    #[test]
    fn rfc5849_raw_query_and_body() {
        assert_eq!(
            parse_form(b"b5=%3D%253D&a3=a&c%40=&a2=r%20b"),
            Ok(owned(&[
                ("b5", "=%3D"),
                ("a3", "a"),
                ("c@", ""),
                ("a2", "r b")
            ]))
        );
        assert_eq!(
            parse_form(b"c2&a3=2+q"),
            Ok(owned(&[("c2", ""), ("a3", "2 q")]))
        );
    }

    #[test]
    fn form_parsing_rules() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("", &[]),
            ("&&", &[]),
            ("a=1&&b=2&", &[("a", "1"), ("b", "2")]),
            ("a=1&a=2", &[("a", "1"), ("a", "2")]),
            ("a==b", &[("a", "=b")]),
            ("=v", &[("", "v")]),
            ("a=", &[("a", "")]),
            ("foo", &[("foo", "")]),
            ("%2b=%2B", &[("+", "+")]),
            ("x=%e2%82%AC", &[("x", "€")]),
            ("sp+ace=a+b%20c", &[("sp ace", "a b c")]),
        ];
        for (raw, expected) in cases {
            assert_eq!(parse_form(raw.as_bytes()), Ok(owned(expected)), "{raw}");
        }
    }

    #[test]
    fn form_parsing_errors() {
        let cases: &[(&[u8], FormError)] = &[
            (b"a=%", FormError::BadPercent("value")),
            (b"a=%4", FormError::BadPercent("value")),
            (b"a=%G0", FormError::BadPercent("value")),
            (b"a=%0G", FormError::BadPercent("value")),
            (b"%=1", FormError::BadPercent("name")),
            (b"a%zz=1", FormError::BadPercent("name")),
            (b"a=%FF", FormError::BadUtf8),
            (b"%C3=1", FormError::BadUtf8),
            (b"a=\xff", FormError::BadUtf8),
        ];
        for (raw, err) in cases {
            assert_eq!(parse_form(raw), Err(err.clone()), "{raw:?}");
        }
    }

    #[test]
    fn strict_percent_decode() {
        assert_eq!(percent_decode(b"a+b%2Bc%20d"), Ok("a+b+c d".to_owned()));
        assert_eq!(percent_decode(b"%e2%82%ac"), Ok("€".to_owned()));
        assert_eq!(percent_decode(b""), Ok(String::new()));
        assert_eq!(percent_decode(b"%2"), Err(FormError::BadPercent("value")));
        assert_eq!(percent_decode(b"%80"), Err(FormError::BadUtf8));
    }

    #[test]
    fn form_encode_round_trip() {
        let pairs = [("a b", "c&d=e"), ("x", ""), ("ü", "+/")];
        let body = form_encode(&pairs);
        assert_eq!(body, "a%20b=c%26d%3De&x=&%C3%BC=%2B%2F");
        assert_eq!(parse_form(body.as_bytes()), Ok(owned(&pairs)));
        assert_eq!(form_encode(&[]), "");
    }
}
