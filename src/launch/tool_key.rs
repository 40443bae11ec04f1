//! The tool's LTI 1.3 keys (`[lti13]`, DESIGN §13 "Tool key"): the key
//! that signs (client assertions for AGS tokens), and the public key set
//! served at `GET /lti/1.3/jwks.json` — the current key, the next ones
//! (published ahead of a switch, so a platform's cached copy already holds
//! them) and the previous ones (still published after a switch). Each
//! `kid` is the key's RFC 7638 thumbprint.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use std::path::Path;

use anyhow::Context as _;

use crate::config::{Lti13Settings, Settings, StoreSettings};
use crate::http::{respond, Body};
use crate::lti::jose::{RsaPublicJwk, SigningKey};
use crate::secret::Secret;

/// How long a platform may cache the tool's key set.
pub const JWKS_MAX_AGE: &str = "public, max-age=300";

/// The tool's keys, built once at start-up.
pub struct ToolKeys {
    signing: Option<std::sync::Arc<SigningKey>>,
    jwks: Bytes,
}

impl std::fmt::Debug for ToolKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolKeys")
            .field("kid", &self.signing.as_ref().map(|k| k.kid()))
            .finish_non_exhaustive()
    }
}

/// The file beside the embedded database that holds a generated key.
pub const GENERATED_KEY_FILE: &str = "tool-key.pem";
/// The size of a generated key.
pub const GENERATED_KEY_BITS: usize = 2048;

/// The file a generated key is kept in, for the embedded store at `path`.
fn generated_key_path(path: &Path) -> std::path::PathBuf {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(GENERATED_KEY_FILE)
}

/// The key generated before (none is configured, the embedded store keeps
/// one beside its database), read without generating one: what `ltigate
/// export` shows.
pub fn existing_generated_key(settings: &Settings) -> Option<Secret> {
    let StoreSettings::Embedded { path } = &settings.store else {
        return None;
    };
    let pem = std::fs::read_to_string(generated_key_path(path)).ok()?;
    crate::lti::jose::private_key_pem_to_der(&pem)
        .ok()
        .map(Secret::new)
}

/// The signing key when none is configured: on the embedded store with
/// `[[platforms]]`, generated once and kept beside the database (readable
/// by ltigate's user alone), as the session key is. `None` otherwise (with
/// Redis, start-up validation already refused platforms without a key).
pub fn generated_key(settings: &Settings) -> anyhow::Result<Option<Secret>> {
    if settings.lti13.key.is_some() || settings.platforms.is_empty() {
        return Ok(None);
    }
    let StoreSettings::Embedded { path } = &settings.store else {
        return Ok(None);
    };
    let key_path = generated_key_path(path);
    let dir = key_path.parent().unwrap_or(Path::new("."));
    if let Ok(pem) = std::fs::read_to_string(&key_path) {
        let der = crate::lti::jose::private_key_pem_to_der(&pem).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}; delete it to generate a new one",
                key_path.display()
            )
        })?;
        tracing::info!(path = %key_path.display(), "using the generated LTI 1.3 tool key");
        return Ok(Some(Secret::new(der)));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut rng = rand::rng();
    let der = crate::lti::rsa_keygen::generate_pkcs8(GENERATED_KEY_BITS, &mut |buf| {
        rand::RngCore::fill_bytes(&mut rng, buf)
    })?;
    crate::session::key::write_private(
        &key_path,
        crate::lti::rsa_keygen::pkcs8_pem(&der).as_bytes(),
    )?;
    tracing::info!(
        path = %key_path.display(),
        "generated an LTI 1.3 tool key (set lti13.key_file to manage it yourself)"
    );
    Ok(Some(Secret::new(der)))
}

impl ToolKeys {
    /// The keys of `settings`: `[lti13]`, or the generated key
    /// ([`generated_key`]).
    pub fn load(settings: &Settings) -> anyhow::Result<Self> {
        match generated_key(settings)? {
            Some(key) => Self::new(&Lti13Settings {
                key: Some(key),
                ..settings.lti13.clone()
            }),
            None => Self::new(&settings.lti13),
        }
    }

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
        Ok(ToolKeys {
            signing: signing.map(std::sync::Arc::new),
            jwks,
        })
    }

    /// The key that signs, if one is configured.
    pub fn signing(&self) -> Option<&std::sync::Arc<SigningKey>> {
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
