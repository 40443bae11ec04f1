//! The OIDC login's `state` (DESIGN §13): sealed, not stored — a login,
//! which anyone can send, writes nothing to the store — and bound to the
//! browser by a `__Host-` cookie holding an HMAC of it. Its single use is
//! recorded by the launch once the token has verified.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::session::cookie::STATE_COOKIE_PREFIX;
use crate::session::Sealer;

/// Associated data of a sealed state: it never opens as anything else.
const STATE_PURPOSE: &[u8] = b"ltigate lti13 state v1";
/// What the state cookie's HMAC covers besides the state.
const COOKIE_PURPOSE: &[u8] = b"ltigate lti13 state cookie v1";
/// Characters of the state id in the cookie's name.
pub const COOKIE_ID_LEN: usize = 16;
/// State cookies a browser keeps at most; a login beyond drops the oldest.
pub const MAX_STATE_COOKIES: usize = 8;
/// Largest sealed state read.
pub const MAX_STATE_LEN: usize = 4096;

/// What a login seals into its `state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    /// A random id of 128 bits (22 base64url characters): recorded once
    /// used, and named by the state cookie.
    pub id: String,
    /// The nonce sent to the platform; the token must carry it.
    pub nonce: String,
    /// The issuer of the login.
    pub iss: String,
    /// The client id of the login.
    pub client_id: String,
    /// The login's `target_link_uri`; the token's claim must equal it.
    pub target: String,
    /// Unix seconds after which the state is refused.
    pub exp: u64,
    /// Platform storage, when the login offered it and a binder was put
    /// there: a launch without the state cookie may prove the browser with
    /// the binder instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageBinding>,
}

/// A binder kept in the platform's storage (`lti.put_data`, DESIGN §13
/// "Blocked cookies"): the state holds only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageBinding {
    /// The `lti_storage_target` frame name.
    pub target: String,
    /// The platform's origin (of its `auth_login_url`): the only origin the
    /// messages go to and are accepted from.
    pub origin: String,
    /// base64url SHA-256 of the binder.
    pub binder_hash: String,
}

impl StorageBinding {
    /// A new binding: the binding and the binder to put in storage.
    pub fn new(target: &str, origin: &str) -> (Self, String) {
        let binder = random_id();
        (
            StorageBinding {
                target: target.to_string(),
                origin: origin.to_string(),
                binder_hash: hash(&binder),
            },
            binder,
        )
    }

    /// Is `binder` the one put in storage? Constant-time.
    pub fn matches(&self, binder: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        hash(binder)
            .as_bytes()
            .ct_eq(self.binder_hash.as_bytes())
            .into()
    }
}

/// base64url SHA-256.
fn hash(value: &str) -> String {
    use sha2::Digest as _;
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(value.as_bytes()))
}

/// The platform storage key of a state.
pub fn storage_key(id: &str) -> String {
    format!("lti_state_{id}")
}

/// 128 random bits as base64url.
fn random_id() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

impl LoginState {
    /// A fresh state for a login of `(iss, client_id)` to `target`, valid
    /// until `exp`.
    pub fn new(iss: &str, client_id: &str, target: &str, exp: u64) -> Self {
        LoginState {
            id: random_id(),
            nonce: crate::secret::random_token(),
            iss: iss.to_string(),
            client_id: client_id.to_string(),
            target: target.to_string(),
            exp,
            storage: None,
        }
    }

    /// The sealed `state` parameter.
    pub fn seal(&self, sealer: &Sealer) -> Result<String, String> {
        let plain = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        sealer
            .seal_bytes(STATE_PURPOSE, &plain)
            .map_err(|e| e.to_string())
    }

    /// The state a `state` parameter seals, when it opens with the session
    /// keys and has not expired at `now`.
    pub fn open(sealer: &Sealer, sealed: &str, now: u64) -> Result<Self, &'static str> {
        if sealed.len() > MAX_STATE_LEN {
            return Err("the state is too long");
        }
        let plain = sealer
            .open_bytes(STATE_PURPOSE, sealed)
            .ok_or("the state does not open")?;
        let state: LoginState =
            serde_json::from_slice(&plain).map_err(|_| "the state does not open")?;
        if now >= state.exp {
            return Err("the state expired");
        }
        if state.id.len() < COOKIE_ID_LEN {
            return Err("the state does not open");
        }
        Ok(state)
    }

    /// The name of the cookie that binds this state to the browser.
    pub fn cookie_name(&self) -> String {
        cookie_name_for(&self.id)
    }
}

/// The state cookie's name for a state id (its first 16 characters).
pub fn cookie_name_for(id: &str) -> String {
    let short = id.get(..COOKIE_ID_LEN).unwrap_or(id);
    format!("{STATE_COOKIE_PREFIX}{short}")
}

/// The state cookie's value: a base64url HMAC-SHA256 of the sealed state
/// with the session key.
pub fn cookie_value(sealer: &Sealer, sealed: &str) -> String {
    sealer.tag(COOKIE_PURPOSE, sealed.as_bytes())
}

/// Does a cookie value prove the browser holds this sealed state?
/// Constant-time.
pub fn cookie_matches(sealer: &Sealer, sealed: &str, value: &str) -> bool {
    sealer.tag_matches(COOKIE_PURPOSE, sealed.as_bytes(), value)
}

/// `Set-Cookie` for a state cookie: `__Host-` (Secure, `Path=/`, no
/// domain), `HttpOnly`, `SameSite=None` (the launch is a cross-site POST),
/// `Partitioned` (kept in an LMS frame where third-party cookies are
/// partitioned), `Max-Age` = `ttl` seconds.
pub fn set_cookie(name: &str, value: &str, ttl: u64) -> String {
    format!("{name}={value}; Path=/; Max-Age={ttl}; HttpOnly; Secure; SameSite=None; Partitioned")
}

/// `Set-Cookie` that deletes a state cookie.
pub fn delete_cookie(name: &str) -> String {
    set_cookie(name, "", 0)
}

/// The names of the state cookies a request carries, in the order sent
/// (browsers send cookies of one path oldest first).
pub fn state_cookies<'a>(cookie_headers: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    let mut names = Vec::new();
    for header in cookie_headers {
        for pair in header.split(|&b| b == b';') {
            let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
            let name = name.trim_ascii();
            if name.starts_with(STATE_COOKIE_PREFIX.as_bytes()) {
                if let Ok(n) = std::str::from_utf8(name) {
                    if !names.iter().any(|k| k == n) {
                        names.push(n.to_string());
                    }
                }
            }
        }
    }
    names
}

/// The state cookies to delete before one more is set, so that at most
/// [`MAX_STATE_COOKIES`] remain: the oldest.
pub fn to_evict(present: &[String]) -> &[String] {
    let keep = MAX_STATE_COOKIES - 1;
    &present[..present.len().saturating_sub(keep)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn sealer(secret: &str) -> Sealer {
        Sealer::new(&Secret::new(secret.as_bytes().to_vec()), &[])
    }

    #[test]
    fn a_state_opens_only_with_its_key_and_before_its_expiry() {
        let s = sealer("0123456789abcdef0123456789abcdef-one");
        let state = LoginState::new("https://lms.example", "client", "https://t.example", 1000);
        assert_eq!(state.id.len(), 22);
        let sealed = state.seal(&s).unwrap();
        assert_eq!(LoginState::open(&s, &sealed, 999).unwrap(), state);
        assert_eq!(
            LoginState::open(&s, &sealed, 1000).unwrap_err(),
            "the state expired"
        );
        let other = sealer("0123456789abcdef0123456789abcdef-two");
        assert!(LoginState::open(&other, &sealed, 0).is_err());
        // Rotation: a state sealed with the previous key still opens.
        let rotated = Sealer::new(
            &Secret::new(b"0123456789abcdef0123456789abcdef-two".to_vec()),
            &[Secret::new(
                b"0123456789abcdef0123456789abcdef-one".to_vec(),
            )],
        );
        assert!(LoginState::open(&rotated, &sealed, 0).is_ok());
        // A session cookie value never opens as a state, nor garbage.
        for bad in ["", "x", &"A".repeat(5000), &sealed[1..]] {
            assert!(LoginState::open(&s, bad, 0).is_err(), "{bad}");
        }
        // Two states of one login differ in id and nonce.
        let again = LoginState::new("https://lms.example", "client", "https://t.example", 1000);
        assert_ne!((&again.id, &again.nonce), (&state.id, &state.nonce));
    }

    #[test]
    fn the_cookie_binds_the_state_to_the_browser() {
        let s = sealer("0123456789abcdef0123456789abcdef-one");
        let a = LoginState::new("i", "c", "t", 1000).seal(&s).unwrap();
        let b = LoginState::new("i", "c", "t", 1000).seal(&s).unwrap();
        let va = cookie_value(&s, &a);
        assert!(cookie_matches(&s, &a, &va));
        assert!(!cookie_matches(&s, &b, &va), "another login's cookie");
        assert!(!cookie_matches(&s, &a, ""));
        assert!(!cookie_matches(&s, &a, &va[1..]));
        let other = sealer("0123456789abcdef0123456789abcdef-two");
        assert!(!cookie_matches(&other, &a, &va));
    }

    #[test]
    fn a_binder_matches_only_itself() {
        let (binding, binder) = StorageBinding::new("_parent", "https://lms.example");
        assert!(binding.matches(&binder));
        assert!(!binding.matches(""));
        assert!(!binding.matches(&binder[1..]));
        assert!(!binding.binder_hash.contains(&binder));
        let s = sealer("0123456789abcdef0123456789abcdef-one");
        let mut state = LoginState::new("i", "c", "t", 1000);
        state.storage = Some(binding);
        let opened = LoginState::open(&s, &state.seal(&s).unwrap(), 0).unwrap();
        assert_eq!(opened, state);
        assert_eq!(storage_key("abc"), "lti_state_abc");
    }

    #[test]
    fn cookie_names_and_eviction() {
        let state = LoginState::new("i", "c", "t", 1);
        let name = state.cookie_name();
        assert_eq!(name, format!("__Host-ltigate_s_{}", &state.id[..16]));
        let header = format!("a=1; {name}=x; __Host-ltigate_session=s; __Host-ltigate_s_AAAA=y");
        assert_eq!(
            state_cookies(std::iter::once(header.as_bytes())),
            [name.clone(), "__Host-ltigate_s_AAAA".to_string()]
        );
        let present: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
        assert_eq!(to_evict(&present), &present[..3]);
        assert!(to_evict(&present[..7]).is_empty());
        assert_eq!(to_evict(&present[..8]), &present[..1]);
        let set = set_cookie(&name, "v", 600);
        assert!(set.contains("Max-Age=600; HttpOnly; Secure; SameSite=None; Partitioned"));
        assert!(delete_cookie(&name).starts_with(&format!("{name}=; Path=/; Max-Age=0;")));
    }
}
