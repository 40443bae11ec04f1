//! The tool's LTI 1.3 keys (`[lti13]`, DESIGN §13 "Tool key"): the key
//! that signs (client assertions for AGS tokens), and the public key set
//! served at `GET /lti/1.3/jwks.json` — the current key, the next ones
//! (published ahead of a switch, so a platform's cached copy already holds
//! them) and the previous ones (still published after a switch). Each
//! `kid` is the key's RFC 7638 thumbprint.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::config::Lti13Settings;
use crate::http::{respond, Body};
use crate::lti::jose::{RsaPublicJwk, SigningKey};

/// How long a platform may cache the tool's key set.
pub const JWKS_MAX_AGE: &str = "public, max-age=300";

/// The tool's keys, built once at start-up.
pub struct ToolKeys {
    signing: Option<SigningKey>,
    jwks: Bytes,
}

impl std::fmt::Debug for ToolKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolKeys")
            .field("kid", &self.signing.as_ref().map(SigningKey::kid))
            .finish_non_exhaustive()
    }
}

impl ToolKeys {
    /// The keys of `[lti13]` (validated at start-up; a key that still does
    /// not load is an error here).
    pub fn new(settings: &Lti13Settings) -> anyhow::Result<Self> {
        let load = |what: &str, der: &crate::secret::Secret| {
            SigningKey::from_pkcs8_der(der.expose())
                .map_err(|e| anyhow::anyhow!("lti13.{what}: {e}"))
        };
        let signing = settings
            .key
            .as_ref()
            .map(|k| load("key_file", k))
            .transpose()?;
        let next = settings
            .next_keys
            .iter()
            .map(|k| load("next_key_files", k))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let previous = settings
            .previous_keys
            .iter()
            .map(|k| load("previous_key_files", k))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut published: Vec<&RsaPublicJwk> = Vec::new();
        for key in signing.iter().chain(&next).chain(&previous) {
            if !published.iter().any(|p| p.kid() == key.kid()) {
                published.push(key.public_jwk());
            }
        }
        let keys: Vec<serde_json::Value> = published.iter().map(|k| k.to_json()).collect();
        let jwks = serde_json::json!({ "keys": keys }).to_string().into();
        Ok(ToolKeys { signing, jwks })
    }

    /// The key that signs, if one is configured.
    pub fn signing(&self) -> Option<&SigningKey> {
        self.signing.as_ref()
    }

    /// `GET /lti/1.3/jwks.json`.
    pub fn jwks_response(&self) -> Response<Body> {
        let mut resp = respond::json_bytes(StatusCode::OK, self.jwks.clone());
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(JWKS_MAX_AGE),
        );
        resp
    }
}
