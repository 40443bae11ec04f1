//! The public side: launch, continue, logout, cartridge, and the session gate
//! in front of the proxy.

use std::sync::Arc;

use http::HeaderMap;

use crate::http::AppState;

pub mod cartridge;
pub mod headers;
pub mod launch;
pub mod proxy;
pub mod router;
pub mod session;
pub mod session_key;
pub mod tickets;
pub mod upstream;

use session::{Lifetime, Sealer, Session, SessionRejection};

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
}

impl std::ops::Deref for Gate {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.app
    }
}

impl Gate {
    /// The session carried by the request's cookie, checked against the
    /// lifetime policy.
    pub fn session_from(&self, headers: &HeaderMap, now: u64) -> Result<Session, SessionRejection> {
        let s = self.sealer.open(self.session_cookie_value(headers)?)?;
        self.lifetime.check(&s, now)?;
        Ok(s)
    }

    /// The value of ltigate's session cookie in a request's headers.
    pub fn session_cookie_value<'h>(
        &self,
        headers: &'h HeaderMap,
    ) -> Result<&'h str, SessionRejection> {
        session::cookie_value(
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
