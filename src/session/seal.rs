//! Sealing: a session is serialised, encrypted and authenticated
//! (XChaCha20-Poly1305, key derived from `session.secret`) into the cookie
//! value, opened with the current key or any previous one; and the lifetime
//! policy a session must meet on every request.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::model::{CourseRoles, Session, SessionRejection, MAX_COOKIE_VALUE};
use crate::secret::Secret;

/// Cookie format version (first byte of the sealed value).
const VERSION: u8 = 1;
/// Associated data binding a sealed value to its purpose.
const AAD: &[u8] = b"ltigate session v1";

/// Seals and opens session cookies with the current key and any previous
/// keys (rotation).
#[derive(Clone)]
pub struct Sealer {
    current: XChaCha20Poly1305,
    previous: Vec<XChaCha20Poly1305>,
    /// HMAC key for [`Sealer::tag`], and the previous keys' for checking.
    mac: ring::hmac::Key,
    previous_macs: Vec<ring::hmac::Key>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

/// Derives the cookie key from the configured secret (any length ≥ 32):
/// SHA-256 over a domain label and the secret.
fn derive(secret: &Secret) -> XChaCha20Poly1305 {
    let mut h = Sha256::new();
    h.update(b"ltigate session key v1\0");
    h.update(secret.expose());
    XChaCha20Poly1305::new(&h.finalize())
}

/// Derives the tag key from the configured secret, apart from the
/// sealing key.
fn derive_mac(secret: &Secret) -> ring::hmac::Key {
    let mut h = Sha256::new();
    h.update(b"ltigate tag key v1\0");
    h.update(secret.expose());
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &h.finalize())
}

/// HMAC-SHA256 of `purpose`, a zero byte and `value`.
fn tag_with(key: &ring::hmac::Key, purpose: &[u8], value: &[u8]) -> ring::hmac::Tag {
    let mut ctx = ring::hmac::Context::with_key(key);
    ctx.update(purpose);
    ctx.update(&[0]);
    ctx.update(value);
    ctx.sign()
}

/// Approximate serialised size of one course entry.
fn course_size(c: &CourseRoles) -> usize {
    16 + c.id.len() + c.roles.iter().map(|r| r.len() + 3).sum::<usize>()
}

/// A sealing failure (the payload could not be encoded or encrypted).
#[derive(Debug, thiserror::Error)]
#[error("cannot seal the session: {0}")]
pub struct SealError(String);

impl Sealer {
    /// A sealer for `current`, also opening cookies sealed with `previous`.
    pub fn new(current: &Secret, previous: &[Secret]) -> Self {
        Sealer {
            current: derive(current),
            previous: previous.iter().map(derive).collect(),
            mac: derive_mac(current),
            previous_macs: previous.iter().map(derive_mac).collect(),
        }
    }

    /// Seals a session into a cookie value of at most
    /// [`MAX_COOKIE_VALUE`] bytes: fields are bounded, then the oldest
    /// courses dropped while it is too long (the latest always stays), then
    /// names and email. Fails only when even that is too long.
    pub fn seal(&self, session: &Session) -> Result<String, SealError> {
        let mut s = session.clone();
        s.bound_fields();
        loop {
            let value = self.seal_exact(&s)?;
            if value.len() <= MAX_COOKIE_VALUE {
                return Ok(value);
            }
            if s.courses.len() > 1 {
                // Sealing adds a fixed overhead and base64's 4/3: drop as
                // many of the oldest courses as the excess needs at once.
                let excess = (value.len() - MAX_COOKIE_VALUE) * 3 / 4;
                let mut freed = 0;
                let mut drop = 0;
                while drop < s.courses.len() - 1 && freed < excess {
                    freed += course_size(&s.courses[drop]);
                    drop += 1;
                }
                s.courses.drain(..drop.max(1));
            } else if s.given_name.is_some() || s.family_name.is_some() || s.email.is_some() {
                s.given_name = None;
                s.family_name = None;
                s.email = None;
            } else {
                return Err(SealError(format!(
                    "the session needs {} bytes, more than a cookie can hold",
                    value.len()
                )));
            }
        }
    }

    fn seal_exact(&self, s: &Session) -> Result<String, SealError> {
        let plain = serde_json::to_vec(s).map_err(|e| SealError(e.to_string()))?;
        self.seal_bytes(AAD, &plain)
    }

    /// Seals `plain` for one `purpose` (the associated data: a value sealed
    /// for one purpose never opens for another) with the current key, as
    /// base64url text.
    pub fn seal_bytes(&self, purpose: &[u8], plain: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .current
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: purpose,
                },
            )
            .map_err(|e| SealError(e.to_string()))?;
        let mut raw = Vec::with_capacity(1 + nonce.len() + sealed.len());
        raw.push(VERSION);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        Ok(URL_SAFE_NO_PAD.encode(raw))
    }

    /// Opens a value of [`Sealer::seal_bytes`] for `purpose` with the
    /// current key or a previous one; `None` for anything else (at most
    /// 8 KiB is read).
    pub fn open_bytes(&self, purpose: &[u8], value: &str) -> Option<Vec<u8>> {
        if value.len() > 8 * 1024 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(value.trim()).ok()?;
        let (version, rest) = raw.split_first()?;
        if *version != VERSION || rest.len() < 24 + 16 {
            return None;
        }
        let (nonce, sealed) = rest.split_at(24);
        std::iter::once(&self.current)
            .chain(self.previous.iter())
            .find_map(|k| {
                k.decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: purpose,
                    },
                )
                .ok()
            })
    }

    /// A base64url HMAC-SHA256 of `purpose` and `value` with the current
    /// key: a browser-bound proof that only ltigate can make.
    pub fn tag(&self, purpose: &[u8], value: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(tag_with(&self.mac, purpose, value))
    }

    /// Does `tag` match `value` under the current key or a previous one?
    /// Compared in constant time.
    pub fn tag_matches(&self, purpose: &[u8], value: &[u8], tag: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(tag.trim()) else {
            return false;
        };
        let mut msg = Vec::with_capacity(purpose.len() + 1 + value.len());
        msg.extend_from_slice(purpose);
        msg.push(0);
        msg.extend_from_slice(value);
        std::iter::once(&self.mac)
            .chain(&self.previous_macs)
            .any(|k| ring::hmac::verify(k, &msg, &tag).is_ok())
    }

    /// Opens a cookie value; any failure is [`SessionRejection::Invalid`].
    pub fn open(&self, value: &str) -> Result<Session, SessionRejection> {
        let plain = self
            .open_bytes(AAD, value)
            .ok_or(SessionRejection::Invalid)?;
        serde_json::from_slice(&plain).map_err(|_| SessionRejection::Invalid)
    }
}

/// Session lifetime policy.
#[derive(Debug, Clone, Copy)]
pub struct Lifetime {
    /// Absolute lifetime (seconds).
    pub ttl: u64,
    /// Idle lifetime (seconds).
    pub idle_ttl: u64,
    /// Sessions issued before this are revoked.
    pub not_before: Option<u64>,
}

impl Lifetime {
    /// Checks a session at `now` (unix seconds).
    pub fn check(&self, s: &Session, now: u64) -> Result<(), SessionRejection> {
        if self.not_before.is_some_and(|nb| s.issued_at < nb) {
            return Err(SessionRejection::Revoked);
        }
        if now >= s.issued_at.saturating_add(self.ttl) {
            return Err(SessionRejection::Expired);
        }
        if now >= s.last_seen.saturating_add(self.idle_ttl) {
            return Err(SessionRejection::Idle);
        }
        Ok(())
    }

    /// Should last-seen be refreshed (at most once a minute)?
    pub fn needs_touch(s: &Session, now: u64) -> bool {
        now >= s.last_seen.saturating_add(60)
    }
}
