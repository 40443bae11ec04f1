//! The header policy applied to every request forwarded upstream (DESIGN §4),
//! built once at start-up.
//!
//! Order matters: first everything a client could use to forge identity or
//! confuse the upstream is removed — identity-prefixed names (compared
//! case-insensitively, `_` as `-`, because CGI/PHP/WSGI upstreams map both to
//! one variable), `Connection` and the names it lists, the hop-by-hop set,
//! untrusted forwarding headers, ltigate's own cookie — and only then are
//! the forwarding and identity headers set.
//!
//! ```
//! use ltigate::gate::headers::encode_value;
//! assert_eq!(encode_value("Zoë van Dijk"), "Zo%C3%AB%20van%20Dijk");
//! ```

use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::session::Session;

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy ones proxies strip).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Forwarding headers a client must not set unless a trusted proxy is in
/// front (`server.trust_forwarded_headers`).
const FORWARDING: [&str; 6] = [
    "forwarded",
    "x-real-ip",
    "x-original-url",
    "x-rewrite-url",
    "true-client-ip",
    "x-forwarded-for",
];

/// Percent-encodes an identity header value component: bytes outside
/// printable ASCII and any of `%` `,` `;` `=` `"` `\` and space.
pub fn encode_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    encode_value_into(value, &mut out);
    out
}

fn encode_value_into(value: &str, out: &mut String) {
    for b in value.bytes() {
        let plain =
            (0x21..=0x7e).contains(&b) && !matches!(b, b'%' | b',' | b';' | b'=' | b'"' | b'\\');
        if plain {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Compares a header name with a lowercase prefix, treating `_` as `-`.
fn has_prefix(name: &str, prefix_lower_dash: &str) -> bool {
    let n = name.as_bytes();
    let p = prefix_lower_dash.as_bytes();
    n.len() >= p.len()
        && n.iter().zip(p).all(|(a, b)| {
            let a = if *a == b'_' {
                b'-'
            } else {
                a.to_ascii_lowercase()
            };
            a == *b
        })
}

/// The identity header names, derived from the prefix once.
#[derive(Debug, Clone)]
pub struct IdentityNames {
    /// `X-LTI-User`
    pub user: HeaderName,
    /// `X-LTI-Upstream-User`
    pub upstream_user: HeaderName,
    /// `X-LTI-Email`
    pub email: HeaderName,
    /// `X-LTI-Given-Name`
    pub given_name: HeaderName,
    /// `X-LTI-Family-Name`
    pub family_name: HeaderName,
    /// `X-LTI-Course`
    pub course: HeaderName,
    /// `X-LTI-Roles`
    pub roles: HeaderName,
    /// `X-LTI-Course-Roles`
    pub course_roles: HeaderName,
    /// `X-LTI-Consumer`
    pub consumer: HeaderName,
    /// `X-LTI-Environment`
    pub environment: HeaderName,
}

/// Per-request facts the policy needs.
pub struct RequestContext<'a> {
    /// Client address.
    pub peer: IpAddr,
    /// The session, when the request carries a valid one.
    pub session: Option<&'a Session>,
    /// The current course (from `upstream.course_path`, else the latest).
    pub course: Option<&'a str>,
    /// The consumer's environment.
    pub environment: Option<&'a str>,
    /// The request id to send.
    pub request_id: &'a str,
}

/// The policy, built once.
#[derive(Debug, Clone)]
pub struct HeaderPolicy {
    prefix: String,
    trust_forwarded: bool,
    cookie_name: String,
    names: IdentityNames,
    public_proto: HeaderValue,
    public_host: HeaderValue,
    upstream_host: HeaderValue,
    pass_host: bool,
}

/// Header names stripped from the client's request, for logs.
pub type Removed = Vec<HeaderName>;

impl HeaderPolicy {
    /// Builds the policy. Fails on an unusable prefix or host.
    pub fn new(
        prefix: &str,
        trust_forwarded: bool,
        cookie_name: &str,
        public_scheme: &str,
        public_authority: &str,
        upstream_authority: &str,
        pass_host: bool,
    ) -> anyhow::Result<Self> {
        let name = |suffix: &str| -> anyhow::Result<HeaderName> {
            HeaderName::from_bytes(format!("{prefix}{suffix}").to_ascii_lowercase().as_bytes())
                .map_err(|e| anyhow::anyhow!("session.header_prefix: {e}"))
        };
        Ok(HeaderPolicy {
            prefix: prefix.to_ascii_lowercase().replace('_', "-"),
            trust_forwarded,
            cookie_name: cookie_name.to_string(),
            names: IdentityNames {
                user: name("User")?,
                upstream_user: name("Upstream-User")?,
                email: name("Email")?,
                given_name: name("Given-Name")?,
                family_name: name("Family-Name")?,
                course: name("Course")?,
                roles: name("Roles")?,
                course_roles: name("Course-Roles")?,
                consumer: name("Consumer")?,
                environment: name("Environment")?,
            },
            public_proto: HeaderValue::from_str(public_scheme)?,
            public_host: HeaderValue::from_str(public_authority)?,
            upstream_host: HeaderValue::from_str(upstream_authority)?,
            pass_host,
        })
    }

    /// The identity header names.
    pub fn names(&self) -> &IdentityNames {
        &self.names
    }

    /// Removes what a client must not send upstream; returns the removed
    /// names that looked like forgery attempts (identity or forwarding).
    /// `upgrade` keeps `Connection: upgrade` + `Upgrade` for WebSockets.
    pub fn strip(&self, headers: &mut HeaderMap) -> Removed {
        let mut suspicious = Vec::new();
        // Connection-named headers first (they may name anything).
        let upgrade = headers.get(header::UPGRADE).cloned();
        let is_upgrade = upgrade.is_some()
            && headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
        for h in HOP_BY_HOP {
            headers.remove(h);
        }
        // Identity prefix, case- and `_`-insensitive.
        let forged: Vec<HeaderName> = headers
            .keys()
            .filter(|n| has_prefix(n.as_str(), &self.prefix))
            .cloned()
            .collect();
        for n in forged {
            headers.remove(&n);
            suspicious.push(n);
        }
        if !self.trust_forwarded {
            let fwd: Vec<HeaderName> = headers
                .keys()
                .filter(|n| {
                    FORWARDING.contains(&n.as_str()) || n.as_str().starts_with("x-forwarded-")
                })
                .cloned()
                .collect();
            for n in fwd {
                headers.remove(&n);
                suspicious.push(n);
            }
        }
        self.strip_cookie(headers);
        if is_upgrade {
            if let Some(u) = upgrade {
                headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                headers.insert(header::UPGRADE, u);
            }
        }
        suspicious
    }

    /// Removes ltigate's cookie from `Cookie`, keeping the others.
    fn strip_cookie(&self, headers: &mut HeaderMap) {
        if !headers.contains_key(header::COOKIE) {
            return;
        }
        let mut kept = String::new();
        for v in headers.get_all(header::COOKIE).iter() {
            let Ok(text) = v.to_str() else { continue };
            for pair in text.split(';') {
                let pair = pair.trim();
                if pair.is_empty() {
                    continue;
                }
                let name = pair.split('=').next().unwrap_or("").trim();
                if name == self.cookie_name {
                    continue;
                }
                if !kept.is_empty() {
                    kept.push_str("; ");
                }
                kept.push_str(pair);
            }
        }
        headers.remove(header::COOKIE);
        if !kept.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&kept) {
                headers.insert(header::COOKIE, v);
            }
        }
    }

    /// Sets the forwarding headers, `Host` and the identity headers. Call
    /// after [`HeaderPolicy::strip`].
    pub fn inject(&self, headers: &mut HeaderMap, ctx: &RequestContext<'_>) {
        let original_host = headers.get(header::HOST).cloned();
        // X-Forwarded-For: append to a trusted chain, else start one.
        let peer = ctx.peer.to_string();
        let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) if self.trust_forwarded => format!("{prev}, {peer}"),
            _ => peer,
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            headers.insert("x-forwarded-for", v);
        }
        if !(self.trust_forwarded && headers.contains_key("x-forwarded-proto")) {
            headers.insert("x-forwarded-proto", self.public_proto.clone());
        }
        if !(self.trust_forwarded && headers.contains_key("x-forwarded-host")) {
            headers.insert(
                "x-forwarded-host",
                original_host
                    .clone()
                    .unwrap_or_else(|| self.public_host.clone()),
            );
        }
        if !(self.trust_forwarded && headers.contains_key("x-request-id")) {
            if let Ok(v) = HeaderValue::from_str(ctx.request_id) {
                headers.insert("x-request-id", v);
            }
        }
        if !self.pass_host || original_host.is_none() {
            let host = if self.pass_host {
                self.public_host.clone()
            } else {
                self.upstream_host.clone()
            };
            headers.insert(header::HOST, host);
        }

        let Some(s) = ctx.session else {
            return;
        };
        let n = &self.names;
        let mut set = |name: &HeaderName, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name.clone(), v);
            }
        };
        set(&n.user, &encode_value(&s.external_id));
        if let Some(u) = &s.upstream_id {
            set(&n.upstream_user, &encode_value(u));
        }
        if let Some(e) = &s.email {
            set(&n.email, &encode_value(e));
        }
        if let Some(g) = &s.given_name {
            set(&n.given_name, &encode_value(g));
        }
        if let Some(f) = &s.family_name {
            set(&n.family_name, &encode_value(f));
        }
        set(&n.consumer, &encode_value(&s.consumer));
        if let Some(env) = ctx.environment {
            set(&n.environment, &encode_value(env));
        }
        if let Some(course) = ctx.course {
            set(&n.course, &encode_value(course));
            if let Some(c) = s.course(course) {
                if !c.roles.is_empty() {
                    set(&n.roles, &join_roles(&c.roles));
                }
            }
        }
        if !s.courses.is_empty() {
            let mut all = String::new();
            for (i, c) in s.courses.iter().enumerate() {
                if i > 0 {
                    all.push(';');
                }
                encode_value_into(&c.id, &mut all);
                all.push('=');
                all.push_str(&join_roles(&c.roles));
            }
            set(&n.course_roles, &all);
        }
    }
}

fn join_roles(roles: &[String]) -> String {
    let mut out = String::new();
    for (i, r) in roles.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        encode_value_into(r, &mut out);
    }
    out
}

/// The course named in `path` by a pattern such as `/courses/{course}/`.
pub fn course_from_path(pattern: &str, path: &str) -> Option<String> {
    let (before, after) = pattern.split_once("{course}")?;
    let rest = path.strip_prefix(before)?;
    let stop = after.chars().next().unwrap_or('/');
    let end = rest.find(stop).unwrap_or(rest.len());
    let (raw, tail) = rest.split_at(end);
    if raw.is_empty() {
        return None;
    }
    let tail_ok = tail.starts_with(after) || (tail.is_empty() && after == "/");
    if !tail_ok {
        return None;
    }
    super::decode_path_segment(raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(trust: bool) -> HeaderPolicy {
        HeaderPolicy::new(
            "X-LTI-",
            trust,
            "__Host-ltigate_session",
            "https",
            "learn.example.com",
            "127.0.0.1:3000",
            true,
        )
        .unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_forgeries_in_every_spelling() {
        let mut h = headers(&[
            ("X-LTI-User", "admin"),
            ("x-lti-roles", "Instructor"),
            ("X_LTI_User", "admin"),
            ("X-Lti-Upstream-User", "1"),
            ("Forwarded", "for=1.2.3.4"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Real-IP", "1.2.3.4"),
            ("Cookie", "a=1; __Host-ltigate_session=secret; b=2"),
            ("Connection", "keep-alive, X-Custom"),
            ("X-Custom", "gone"),
            ("Accept", "text/html"),
        ]);
        let removed = policy(false).strip(&mut h);
        assert_eq!(removed.len(), 7, "{removed:?}");
        for gone in [
            "x-lti-user",
            "x-lti-roles",
            "x_lti_user",
            "x-lti-upstream-user",
            "forwarded",
            "x-forwarded-for",
            "x-real-ip",
            "connection",
            "x-custom",
        ] {
            assert!(!h.contains_key(gone), "{gone} survived");
        }
        assert_eq!(h.get("cookie").unwrap(), "a=1; b=2");
        assert_eq!(h.get("accept").unwrap(), "text/html");
    }

    #[test]
    fn upgrade_survives() {
        let mut h = headers(&[("Connection", "Upgrade"), ("Upgrade", "websocket")]);
        policy(false).strip(&mut h);
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
    }

    #[test]
    fn trusted_forwarding_is_kept_and_extended() {
        let mut h = headers(&[
            ("X-Forwarded-For", "1.2.3.4"),
            ("Host", "learn.example.com"),
        ]);
        let p = policy(true);
        p.strip(&mut h);
        p.inject(
            &mut h,
            &RequestContext {
                peer: "10.0.0.9".parse().unwrap(),
                session: None,
                course: None,
                environment: None,
                request_id: "r1",
            },
        );
        assert_eq!(h.get("x-forwarded-for").unwrap(), "1.2.3.4, 10.0.0.9");
        assert_eq!(h.get("x-request-id").unwrap(), "r1");
    }

    #[test]
    fn identity_values_are_encoded() {
        let mut s = Session::new_for_test("acme:42");
        s.given_name = Some("Zoë".into());
        s.family_name = Some("O'Brien, \"Jr\"".into());
        s.add_course("C-1", &["Learner".into()], 20);
        s.add_course("C=2", &["Instructor".into(), "inst:Faculty".into()], 20);
        let mut h = HeaderMap::new();
        policy(false).inject(
            &mut h,
            &RequestContext {
                peer: "127.0.0.1".parse().unwrap(),
                session: Some(&s),
                course: Some("C=2"),
                environment: Some("sub env"),
                request_id: "r",
            },
        );
        assert_eq!(h.get("x-lti-user").unwrap(), "acme:42");
        assert_eq!(h.get("x-lti-given-name").unwrap(), "Zo%C3%AB");
        assert_eq!(h.get("x-lti-family-name").unwrap(), "O'Brien%2C%20%22Jr%22");
        assert_eq!(h.get("x-lti-course").unwrap(), "C%3D2");
        assert_eq!(h.get("x-lti-roles").unwrap(), "Instructor,inst:Faculty");
        assert_eq!(
            h.get("x-lti-course-roles").unwrap(),
            "C-1=Learner;C%3D2=Instructor,inst:Faculty"
        );
        assert_eq!(h.get("x-lti-environment").unwrap(), "sub%20env");
    }

    #[test]
    fn course_patterns() {
        assert_eq!(
            course_from_path("/courses/{course}/", "/courses/C-1/x").as_deref(),
            Some("C-1")
        );
        assert_eq!(
            course_from_path("/courses/{course}/", "/courses/C-1").as_deref(),
            Some("C-1")
        );
        assert_eq!(
            course_from_path("/courses/{course}/", "/courses/C%201/").as_deref(),
            Some("C 1")
        );
        assert_eq!(course_from_path("/courses/{course}/", "/other/C-1/"), None);
        assert_eq!(
            course_from_path("/c/{course}", "/c/C-9/deep").as_deref(),
            Some("C-9")
        );
    }
}
