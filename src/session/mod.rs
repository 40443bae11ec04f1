//! The session: an AEAD-sealed cookie that carries the learner and the
//! courses launched, so any replica serves any request without a store
//! round trip and sessions survive a store outage.
//!
//! ```
//! use ltigate::session::{Sealer, Session};
//! use ltigate::secret::Secret;
//! let sealer = Sealer::new(&Secret::new([7u8; 32]), &[]);
//! let s = Session::new_for_test("acme:1");
//! let cookie = sealer.seal(&s).unwrap();
//! assert_eq!(sealer.open(&cookie).unwrap().external_id, "acme:1");
//! ```
//!
//! Two tower layers guard the proxied paths with it:
//! [`SessionGateLayer`] (a valid session, or a public path; last-seen
//! refreshed at most once a minute) and [`CsrfLayer`] (no unsafe
//! cross-site request and no cross-origin WebSocket rides on the cookie).
//!
//! The parts, one concern each: [`model`] (what the cookie carries),
//! [`seal`] (sealing, opening, the lifetime policy), [`cookie`] (finding the
//! cookie in a request), [`identity`] (the identity header values rendered
//! once per session), [`assertion`] (the signed identity assertion, minted
//! once per claim set), [`gate`] and [`csrf`] (the two layers), [`key`]
//! (the session key of the embedded store). [`Gate`] is the state the public
//! routes share, and [`Gate::open_session`] the one way any of them opens a
//! session.

use std::sync::Arc;

use http::HeaderMap;

use crate::http::AppState;

pub mod assertion;
pub mod cookie;
pub mod csrf;
pub mod gate;
pub mod identity;
pub mod key;
pub mod model;
pub mod seal;
#[cfg(test)]
mod tests;

pub use csrf::{is_cross_site, CsrfLayer};
pub use gate::{is_public_path, Carrier, OpenedCache, OpenedSession, SessionGateLayer};
pub use identity::IdentityHeaders;
pub use model::{CourseRoles, Session, SessionRejection, MAX_COOKIE_VALUE};
pub use seal::{Lifetime, SealError, Sealer};

/// What the public side's handlers share: the neutral [`AppState`], and the
/// session keys and lifetime policy that only this side uses. Dereferences
/// to the `AppState`, so handlers read `gate.settings` and `gate.store`
/// directly.
pub struct Gate {
    /// The state every part shares.
    pub app: Arc<AppState>,
    /// Cookie sealer (current + previous keys).
    pub sealer: Sealer,
    /// Session lifetime policy.
    pub lifetime: Lifetime,
    /// Sessions opened from cookie values ([`Gate::open_session`]).
    pub opened: OpenedCache,
    /// The signed identity assertion, when `session.assertion` is on.
    pub assertion: Option<Arc<assertion::Assertions>>,
}

impl std::ops::Deref for Gate {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.app
    }
}

impl Gate {
    /// The session carried by a request's cookie — the one way every route
    /// opens a session: the cookie opens with the session keys, its tenant
    /// is still configured (a removed consumer's sessions end), and the
    /// lifetime policy holds at `now`. Opened values are cached (the policy
    /// still runs every time).
    pub fn open_session(
        &self,
        headers: &HeaderMap,
        now: u64,
    ) -> Result<Arc<OpenedSession>, SessionRejection> {
        let value = self.session_cookie_value(headers)?;
        let opened = match self.opened.get(value) {
            Some(o) => o,
            None => {
                let s = self.sealer.open(value)?;
                if self.settings.tenant(&s.tenant).is_none() {
                    return Err(SessionRejection::Invalid);
                }
                let o = Arc::new(OpenedSession {
                    session: s,
                    identity: std::sync::OnceLock::new(),
                });
                self.opened.put(value, o.clone());
                o
            }
        };
        self.lifetime.check(&opened.session, now)?;
        Ok(opened)
    }

    /// The value of ltigate's session cookie in a request's headers.
    pub fn session_cookie_value<'h>(
        &self,
        headers: &'h HeaderMap,
    ) -> Result<&'h str, SessionRejection> {
        cookie::cookie_value(
            headers
                .get_all(http::header::COOKIE)
                .iter()
                .map(|v| v.as_bytes()),
            &self.settings.session.cookie_name,
        )
        .ok_or(SessionRejection::Missing)
    }

    /// `Set-Cookie` value carrying a sealed session.
    pub fn session_cookie(&self, value: &str) -> String {
        let s = &self.settings.session;
        let mut c = format!(
            "{}={}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=None",
            s.cookie_name,
            value,
            s.ttl.as_secs()
        );
        if s.partitioned {
            c.push_str("; Partitioned");
        }
        c
    }

    /// `Set-Cookie` value that clears the session cookie.
    pub fn clear_cookie(&self) -> String {
        let s = &self.settings.session;
        let mut c = format!(
            "{}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=None",
            s.cookie_name
        );
        if s.partitioned {
            c.push_str("; Partitioned");
        }
        c
    }
}
