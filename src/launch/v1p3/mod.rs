//! LTI 1.3 (DESIGN §13): the OIDC login and the launch it leads to.
//!
//! - [`login`] — `GET|POST /lti/1.3/login`: the third-party login
//!   initiation, answered with a 302 to the platform's auth URL carrying a
//!   sealed [`state`](state::LoginState) bound to the browser by a cookie;
//!   from a frame, the cookie-check page first, and the new-window re-run
//!   from a single-use ticket where the cookie is blocked.
//! - [`verify`] — `POST /lti/1.3/launch[/{course}]`: the id_token's checks
//!   in DESIGN §13's order, ending in a [`VerifiedLaunch`](super::VerifiedLaunch)
//!   for the one accept path.
//! - [`state`] — the sealed state and its cookie.

pub mod login;
pub mod state;
pub mod verify;

use std::sync::Arc;

use crate::config::{Platform, Settings};
use crate::launch::jwks::{JwksCache, KeySet};
use crate::launch::tool_key::ToolKeys;
use crate::lti::jose::JwkSet;
use crate::outbound::{Outbound, PlatformClients};

impl KeySet for JwkSet {
    fn parse(document: &[u8]) -> Result<Self, String> {
        JwkSet::parse(document).map_err(|e| e.to_string())
    }

    fn has(&self, kid: &str) -> bool {
        self.find(kid).is_some()
    }
}

/// What the LTI 1.3 routes share beside the [`Gate`](crate::session::Gate):
/// the tool's keys, the platforms' cached key sets, and the clients that
/// fetch them.
pub struct Lti13 {
    /// The tool's keys (`/lti/1.3/jwks.json`).
    pub keys: Arc<ToolKeys>,
    /// The platforms' key sets, by `jwks_url`.
    pub jwks: Arc<JwksCache<JwkSet>>,
    /// The clients that fetch the key sets.
    clients: PlatformClients,
}

impl std::fmt::Debug for Lti13 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lti13")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Lti13 {
    /// The LTI 1.3 side of `settings`.
    pub fn new(settings: &Settings, keys: Arc<ToolKeys>) -> anyhow::Result<Self> {
        let timeout = settings.outcomes.timeout;
        Ok(Lti13 {
            keys,
            jwks: Arc::new(JwksCache::new()),
            clients: PlatformClients::new(timeout)?,
        })
    }

    /// The client for calls to `platform`'s endpoints.
    pub fn outbound_for(&self, settings: &Settings, platform: &Platform) -> &Outbound {
        self.clients.for_platform(settings, platform)
    }
}
