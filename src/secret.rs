//! Opaque secret bytes that never print.
//!
//! Every secret ltigate handles (consumer secrets, the session key, the webhook
//! secret, the upstream API token) is a [`Secret`]: its `Debug` and `Display`
//! show `[redacted]`, and the bytes are only reachable through
//! [`Secret::expose`], so a stray `{:?}` in a log line cannot leak one.

use std::fmt;

/// Secret bytes; printing shows `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<[u8]>);

impl Secret {
    /// Wraps raw bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into().into_boxed_slice())
    }

    /// Parses a configured value: `base64:…` is decoded, anything else is taken
    /// as raw bytes.
    pub fn parse(value: &str) -> Result<Self, String> {
        use base64::Engine as _;
        match value.strip_prefix("base64:") {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map(Secret::new)
                .map_err(|_| "value after `base64:` is not valid base64".to_string()),
            None => Ok(Secret::new(value.as_bytes())),
        }
    }

    /// The secret bytes. Call only where the bytes are used, never to print.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A random URL-safe token (192 bits): nonces, ticket ids, lock owners.
pub fn random_token() -> String {
    use base64::Engine as _;
    let mut b = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let s = Secret::new("hunter2-hunter2");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(s.expose(), b"hunter2-hunter2");
    }

    #[test]
    fn base64_prefix() {
        assert_eq!(Secret::parse("base64:aGk=").unwrap().expose(), b"hi");
        assert_eq!(Secret::parse("plain").unwrap().expose(), b"plain");
        assert!(Secret::parse("base64:***").is_err());
    }
}
