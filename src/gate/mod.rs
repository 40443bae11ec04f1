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

use session::{Lifetime, OpenedCache, OpenedSession, Sealer, SessionRejection};

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
                if self.settings.consumer_by_name(&s.consumer).is_none() {
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
