//! The response side of the header policy ([`ResponsePolicy`]): hop-by-hop
//! headers removed, upstream `Set-Cookie` made to survive in the LMS iframe
//! (and never under ltigate's cookie name), redirects to the upstream's
//! internal origin moved to the public origin, optional CSP
//! `frame-ancestors` on HTML.

use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;

use super::request::owned_value;
use super::strip_hop_by_hop;

/// The response-side policy, built once.
#[derive(Debug, Clone)]
pub struct ResponsePolicy {
    cookie_name: String,
    /// Add `SameSite=None; Secure` to upstream cookies (only on https).
    rewrite_cookies: bool,
    partitioned: bool,
    /// `http://host:port` of the upstream.
    upstream_origin: String,
    /// The upstream's host, for cookie `Domain` attributes.
    upstream_host: String,
    /// Path prefix of `upstream.url` (no trailing slash).
    upstream_prefix: String,
    public_origin: String,
    public_prefix: String,
    csp: Option<HeaderValue>,
}

impl ResponsePolicy {
    /// Builds the policy from the settings.
    pub fn new(
        settings: &crate::config::Settings,
        upstream_origin: &str,
        upstream_host: &str,
        upstream_prefix: &str,
    ) -> anyhow::Result<Self> {
        let s = &settings.session;
        let public = &settings.server.public_url;
        let csp = if settings.server.frame_ancestors.is_empty() {
            None
        } else {
            Some(
                HeaderValue::from_str(&format!(
                    "frame-ancestors 'self' {}",
                    settings.server.frame_ancestors.join(" ")
                ))
                .map_err(|e| anyhow::anyhow!("server.frame_ancestors: {e}"))?,
            )
        };
        Ok(ResponsePolicy {
            cookie_name: s.cookie_name.clone(),
            rewrite_cookies: s.rewrite_upstream_cookies && public.is_https(),
            partitioned: s.partitioned,
            upstream_origin: upstream_origin.to_string(),
            upstream_host: upstream_host.to_ascii_lowercase(),
            upstream_prefix: upstream_prefix.trim_end_matches('/').to_string(),
            public_origin: public.origin(),
            public_prefix: public.prefix.clone(),
            csp,
        })
    }

    /// Rewrites the headers of an upstream response for the browser.
    pub fn apply(&self, status: StatusCode, headers: &mut HeaderMap) {
        if status != StatusCode::SWITCHING_PROTOCOLS {
            strip_hop_by_hop(headers);
        }
        if headers.contains_key(header::SET_COOKIE) {
            self.rewrite_cookies(headers);
        }
        if let Some(public) = headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|loc| self.public_location(loc))
        {
            if let Some(v) = owned_value(public) {
                headers.insert(header::LOCATION, v);
            }
        }
        if let Some(csp) = &self.csp {
            let is_html = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim_start().get(..9))
                .is_some_and(|v| v.eq_ignore_ascii_case("text/html"));
            if is_html {
                headers.append(header::CONTENT_SECURITY_POLICY, csp.clone());
            }
        }
    }

    fn rewrite_cookies(&self, headers: &mut HeaderMap) {
        let cookies: Vec<HeaderValue> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .cloned()
            .collect();
        headers.remove(header::SET_COOKIE);
        for c in cookies {
            let Ok(text) = c.to_str() else {
                continue;
            };
            let name = text.split(['=', ';']).next().unwrap_or("").trim();
            if name == self.cookie_name {
                tracing::warn!("dropped an upstream cookie that uses ltigate's cookie name");
                continue;
            }
            match self.rewrite_cookie(text) {
                Some(v) => {
                    if let Some(v) = owned_value(v) {
                        headers.append(header::SET_COOKIE, v);
                    }
                }
                None => {
                    headers.append(header::SET_COOKIE, c);
                }
            }
        }
    }

    /// The rewritten cookie, or `None` to keep it as it is.
    fn rewrite_cookie(&self, cookie: &str) -> Option<String> {
        let internal_domain = cookie.split(';').skip(1).any(|a| {
            attr(a).is_some_and(|(n, v)| {
                n.eq_ignore_ascii_case("domain")
                    && v.trim_start_matches('.')
                        .eq_ignore_ascii_case(&self.upstream_host)
            })
        });
        let prefixed_path = !self.upstream_prefix.is_empty()
            && cookie.split(';').skip(1).any(|a| {
                attr(a).is_some_and(|(n, v)| {
                    n.eq_ignore_ascii_case("path")
                        && strip_path_prefix(v, &self.upstream_prefix).is_some()
                })
            });
        if !self.rewrite_cookies && !internal_domain && !prefixed_path {
            return None;
        }
        let mut parts = cookie.split(';');
        let mut out = parts.next().unwrap_or("").trim().to_string();
        let mut has_partitioned = false;
        for a in parts {
            let a = a.trim();
            let Some((name, value)) = attr(a) else {
                continue;
            };
            if name.eq_ignore_ascii_case("domain") && internal_domain {
                continue;
            }
            if self.rewrite_cookies
                && (name.eq_ignore_ascii_case("samesite") || name.eq_ignore_ascii_case("secure"))
            {
                continue;
            }
            if name.eq_ignore_ascii_case("partitioned") {
                has_partitioned = true;
            }
            out.push_str("; ");
            if name.eq_ignore_ascii_case("path") {
                if let Some(rest) = strip_path_prefix(value, &self.upstream_prefix)
                    .filter(|_| !self.upstream_prefix.is_empty())
                {
                    let path = format!("{}{rest}", self.public_prefix);
                    out.push_str("Path=");
                    out.push_str(if path.is_empty() { "/" } else { &path });
                    continue;
                }
            }
            out.push_str(a);
        }
        if self.rewrite_cookies {
            out.push_str("; SameSite=None; Secure");
            if self.partitioned && !has_partitioned {
                out.push_str("; Partitioned");
            }
        }
        Some(out)
    }

    /// The public form of an upstream `Location`, when it points at the
    /// upstream's internal origin (or, under an upstream path prefix, at a
    /// path below it).
    fn public_location(&self, loc: &str) -> Option<String> {
        let origin_len = self.upstream_origin.len();
        let rest = if loc.len() >= origin_len
            && loc.is_char_boundary(origin_len)
            && loc[..origin_len].eq_ignore_ascii_case(&self.upstream_origin)
        {
            let rest = &loc[origin_len..];
            if !(rest.is_empty() || rest.starts_with(['/', '?', '#'])) {
                return None;
            }
            strip_path_prefix(rest, &self.upstream_prefix).unwrap_or(rest)
        } else if loc.starts_with('/') && !loc.starts_with("//") && !self.upstream_prefix.is_empty()
        {
            let rest = strip_path_prefix(loc, &self.upstream_prefix)?;
            let path = format!(
                "{}{}",
                self.public_prefix,
                if rest.is_empty() && self.public_prefix.is_empty() {
                    "/"
                } else {
                    rest
                }
            );
            // `/app//evil.example` is a path on the platform, but
            // `//evil.example` would send the browser to another site: such
            // a path goes out absolute.
            if protocol_relative(&path) {
                return Some(format!("{}{path}", self.public_origin));
            }
            return Some(path);
        } else {
            return None;
        };
        let rest = if rest.is_empty() { "/" } else { rest };
        Some(format!(
            "{}{}{rest}",
            self.public_origin, self.public_prefix
        ))
    }
}

/// Would a browser read this relative reference as another host's
/// (`//host`, or `/\host`, with tabs and line breaks removed as browsers
/// remove them)?
fn protocol_relative(path: &str) -> bool {
    let mut chars = path.chars().filter(|c| !matches!(c, '\t' | '\n' | '\r'));
    matches!(
        (chars.next(), chars.next()),
        (Some('/' | '\\'), Some('/' | '\\'))
    )
}

/// `(name, value)` of a cookie attribute (`value` empty for flags).
fn attr(a: &str) -> Option<(&str, &str)> {
    let a = a.trim();
    if a.is_empty() {
        return None;
    }
    Some(match a.split_once('=') {
        Some((n, v)) => (n.trim(), v.trim()),
        None => (a, ""),
    })
}

/// `path` below `prefix` (at a segment boundary), without the prefix.
fn strip_path_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with(['/', '?', '#'])).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_policy(upstream_prefix: &str, public_prefix: &str) -> ResponsePolicy {
        ResponsePolicy {
            cookie_name: "__Host-ltigate_session".into(),
            rewrite_cookies: true,
            partitioned: false,
            upstream_origin: "http://10.1.2.3:3000".into(),
            upstream_host: "10.1.2.3".into(),
            upstream_prefix: upstream_prefix.into(),
            public_origin: "https://learn.example.com".into(),
            public_prefix: public_prefix.into(),
            csp: None,
        }
    }

    #[test]
    fn cookies_get_samesite_none_and_lose_internal_domains() {
        let p = response_policy("", "");
        assert_eq!(
            p.rewrite_cookie("sid=1; Path=/; SameSite=Lax; HttpOnly")
                .unwrap(),
            "sid=1; Path=/; HttpOnly; SameSite=None; Secure"
        );
        assert_eq!(
            p.rewrite_cookie("a=b; Domain=10.1.2.3; secure").unwrap(),
            "a=b; SameSite=None; Secure"
        );
        let p = ResponsePolicy {
            partitioned: true,
            ..response_policy("/app", "/lms")
        };
        assert_eq!(
            p.rewrite_cookie("a=b; Path=/app/x").unwrap(),
            "a=b; Path=/lms/x; SameSite=None; Secure; Partitioned"
        );
        let p = ResponsePolicy {
            rewrite_cookies: false,
            ..response_policy("", "")
        };
        assert_eq!(p.rewrite_cookie("a=b; SameSite=Strict"), None);
    }

    #[test]
    fn internal_redirects_move_to_the_public_origin() {
        let p = response_policy("", "");
        let loc = |l: &str| p.public_location(l);
        assert_eq!(
            loc("http://10.1.2.3:3000/courses/C-1?x=1").as_deref(),
            Some("https://learn.example.com/courses/C-1?x=1")
        );
        assert_eq!(
            loc("http://10.1.2.3:3000").as_deref(),
            Some("https://learn.example.com/")
        );
        assert_eq!(loc("http://10.1.2.3:30001/x"), None);
        assert_eq!(loc("https://elsewhere.example/x"), None);
        assert_eq!(loc("/relative"), None);

        let p = response_policy("/app", "/lms");
        assert_eq!(
            p.public_location("http://10.1.2.3:3000/app/x").as_deref(),
            Some("https://learn.example.com/lms/x")
        );
        assert_eq!(p.public_location("/app/x").as_deref(), Some("/lms/x"));
        assert_eq!(p.public_location("/application"), None);

        // Never protocol-relative: the browser would leave the origin.
        let p = response_policy("/app", "");
        assert_eq!(
            p.public_location("/app//evil.example/x").as_deref(),
            Some("https://learn.example.com//evil.example/x")
        );
        assert_eq!(
            p.public_location("/app/\\evil.example/x").as_deref(),
            Some("https://learn.example.com/\\evil.example/x")
        );
        assert_eq!(
            p.public_location("/app/\t/evil.example/x").as_deref(),
            Some("https://learn.example.com/\t/evil.example/x")
        );
        assert_eq!(p.public_location("/app/x").as_deref(), Some("/x"));
    }
}
