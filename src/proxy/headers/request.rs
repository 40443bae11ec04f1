//! The request side of the header policy: what the upstream may see of a
//! request (see the module above for the order), as [`HeaderPolicyLayer`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::{has_prefix, is_hop_by_hop, named_by_connection, same_name};
use crate::http::is_websocket_upgrade;
use crate::http::request_id::{self, RequestId, X_REQUEST_ID};
use crate::proxy::ProxyRequest;
use crate::session::assertion::{Assertions, CurrentCourse, Slots};
use crate::session::cookie::STATE_COOKIE_PREFIX;
use crate::session::identity::CourseHeaders;
use crate::session::{IdentityHeaders, Session};

/// Forwarding headers a client must not set unless a trusted proxy is in
/// front (`server.trust_forwarded_headers`); compared with `_` as `-`.
/// Every `x-forwarded-*` name is removed as well.
const FORWARDING: [&str; 8] = [
    "forwarded",
    "x-real-ip",
    "x-original-url",
    "x-rewrite-url",
    "true-client-ip",
    "client-ip",
    "x-client-ip",
    "x-request-id",
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

fn is_plain(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && !matches!(b, b'%' | b',' | b';' | b'=' | b'"' | b'\\')
}

/// Percent-encodes an identity header value component: bytes outside
/// printable ASCII and any of `%` `,` `;` `=` `"` `\` and space.
pub fn encode_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    encode_value_into(value, &mut out);
    out
}

fn encode_value_into(value: &str, out: &mut String) {
    for b in value.bytes() {
        if is_plain(b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// A header value holding one encoded component; copies once when nothing
/// needs encoding.
fn component_value(value: &str) -> Option<HeaderValue> {
    if value.bytes().all(is_plain) {
        HeaderValue::from_str(value).ok()
    } else {
        HeaderValue::from_maybe_shared(Bytes::from(encode_value(value))).ok()
    }
}

/// A header value from a string built for it (no second copy).
pub(super) fn owned_value(value: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(value)).ok()
}

/// A small stack buffer for formatting header values without allocating.
struct StackText {
    buf: [u8; 64],
    len: usize,
}

impl StackText {
    fn new() -> Self {
        StackText {
            buf: [0; 64],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// A client address as `X-Forwarded-For` carries it.
pub fn peer_text(peer: IpAddr) -> HeaderValue {
    let mut text = StackText::new();
    let _ = write!(text, "{peer}");
    // An address's text is ASCII digits, dots, colons and hex letters.
    HeaderValue::from_bytes(text.as_bytes()).unwrap_or(HeaderValue::from_static("unknown"))
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
    /// `X-LTI-Version`
    pub version: HeaderName,
}

/// Per-request facts the policy needs.
pub struct RequestContext<'a> {
    /// Client address.
    pub peer: IpAddr,
    /// `peer` as `X-Forwarded-For` carries it ([`peer_text`], made once
    /// per client connection).
    pub peer_text: &'a HeaderValue,
    /// The identity header values of the request's session, when it
    /// carries a valid one ([`HeaderPolicy::identity`]).
    pub identity: Option<&'a IdentityHeaders>,
    /// The session itself (the claims of its signed identity assertion).
    pub session: Option<&'a Session>,
    /// Unix seconds, as the session gate read the clock.
    pub now: u64,
    /// The course the request path names (`upstream.course_path`); without
    /// one the session's latest course is the current course.
    pub path_course: Option<&'a str>,
    /// The request's id ([`crate::http::request_id`]) to send upstream;
    /// none when the headers already carry it (the request-id layer set it
    /// and [`HeaderPolicy::apply`] kept it through the strip).
    pub request_id: Option<&'a HeaderValue>,
}

/// The request-side policy, built once.
#[derive(Debug, Clone)]
pub struct HeaderPolicy {
    prefix: String,
    trust_forwarded: bool,
    cookie_name: String,
    names: IdentityNames,
    public_proto: HeaderValue,
    public_host: HeaderValue,
    public_prefix: Option<HeaderValue>,
    upstream_host: HeaderValue,
    pass_host: bool,
    course_path: Option<String>,
    environments: HashMap<String, String>,
    assertion: Option<Arc<Assertions>>,
}

/// Identity-prefixed header names a client sent (removed), for the log.
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
                version: name("Version")?,
            },
            public_proto: HeaderValue::from_str(public_scheme)?,
            public_host: HeaderValue::from_str(public_authority)?,
            public_prefix: None,
            upstream_host: HeaderValue::from_str(upstream_authority)?,
            pass_host,
            course_path: None,
            environments: HashMap::new(),
            assertion: None,
        })
    }

    /// The public path prefix, sent as `X-Forwarded-Prefix` (empty: none).
    pub fn with_public_prefix(mut self, prefix: &str) -> anyhow::Result<Self> {
        self.public_prefix = if prefix.is_empty() {
            None
        } else {
            Some(HeaderValue::from_str(prefix)?)
        };
        Ok(self)
    }

    /// `upstream.course_path`: the pattern naming the current course.
    pub fn with_course_path(mut self, pattern: Option<&str>) -> Self {
        self.course_path = pattern.map(str::to_string);
        self
    }

    /// Each consumer's environment, by consumer name.
    pub fn with_environments<'a>(
        mut self,
        consumers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        self.environments = consumers
            .into_iter()
            .map(|(n, e)| (n.to_string(), e.to_string()))
            .collect();
        self
    }

    /// The signed identity assertion (`session.assertion`), sent with
    /// every request that has a session.
    pub fn with_assertion(mut self, assertion: Option<Arc<Assertions>>) -> Self {
        self.assertion = assertion;
        self
    }

    /// The identity header names.
    pub fn names(&self) -> &IdentityNames {
        &self.names
    }

    fn is_identity(&self, name: &str) -> bool {
        has_prefix(name, &self.prefix)
    }

    fn is_forwarding(&self, name: &str) -> bool {
        !self.trust_forwarded
            && (has_prefix(name, "x-forwarded-") || FORWARDING.iter().any(|f| same_name(name, f)))
    }

    /// Removes what a client must not send upstream; returns the
    /// identity-prefixed names it removed (forgery attempts, for the log).
    pub fn strip(&self, headers: &mut HeaderMap) -> Removed {
        self.strip_keeping_id(headers, false)
    }

    /// [`HeaderPolicy::strip`]; with `keep_id`, `X-Request-Id` (in that
    /// spelling) stays: it is the id the request-id layer settled on.
    fn strip_keeping_id(&self, headers: &mut HeaderMap, keep_id: bool) -> Removed {
        let upgrade = if is_websocket_upgrade(headers) {
            headers.get(header::UPGRADE).cloned()
        } else {
            None
        };
        let connection = headers.contains_key(header::CONNECTION);
        let mut forged = Removed::new();
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|n| {
                let name = n.as_str();
                is_hop_by_hop(n)
                    || self.is_identity(name)
                    || (self.is_forwarding(name) && !(keep_id && name == "x-request-id"))
                    || (connection && named_by_connection(headers, n))
            })
            .cloned()
            .collect();
        for n in doomed {
            headers.remove(&n);
            if self.is_identity(n.as_str()) {
                forged.push(n);
            }
        }
        self.strip_cookie(headers);
        if let Some(u) = upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, u);
        }
        forged
    }

    /// Removes ltigate's cookies (the session's, and the LTI 1.3 login's
    /// state cookies) from `Cookie`, keeping the others (several
    /// `Cookie` fields, as HTTP/2 sends them, become one). Works on bytes:
    /// another cookie's value may hold bytes outside ASCII, and must pass
    /// as it came.
    fn strip_cookie(&self, headers: &mut HeaderMap) {
        let mut values = headers.get_all(header::COOKIE).iter();
        let Some(first) = values.next() else {
            return;
        };
        let single = values.next().is_none();
        let name = self.cookie_name.as_bytes();
        let ours = |n: &[u8]| n == name || n.starts_with(STATE_COOKIE_PREFIX.as_bytes());
        if single && !cookie_pairs(first.as_bytes()).any(|(n, _)| ours(n)) {
            return;
        }
        let mut kept: Vec<u8> = Vec::new();
        for v in headers.get_all(header::COOKIE).iter() {
            for (n, pair) in cookie_pairs(v.as_bytes()) {
                if ours(n) {
                    continue;
                }
                if !kept.is_empty() {
                    kept.extend_from_slice(b"; ");
                }
                kept.extend_from_slice(pair);
            }
        }
        headers.remove(header::COOKIE);
        if !kept.is_empty() {
            // The pieces come from valid header values, joined by "; ".
            if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(kept)) {
                headers.insert(header::COOKIE, v);
            }
        }
    }

    /// Sets the forwarding headers, `Host` and the identity headers. Call
    /// after [`HeaderPolicy::strip`].
    pub fn inject(&self, headers: &mut HeaderMap, ctx: &RequestContext<'_>) {
        // X-Forwarded-For: extend a trusted chain, else start one.
        let xff = match self.trusted_chain(headers) {
            Some(prev) => {
                let mut chain = prev.into_owned();
                chain.push_str(", ");
                chain.push_str(ctx.peer_text.to_str().unwrap_or(""));
                owned_value(chain)
            }
            None => Some(ctx.peer_text.clone()),
        };
        if let Some(v) = xff {
            headers.insert(X_FORWARDED_FOR, v);
        }
        if !(self.trust_forwarded && headers.contains_key(&X_FORWARDED_PROTO)) {
            headers.insert(X_FORWARDED_PROTO, self.public_proto.clone());
        }
        if !(self.trust_forwarded && headers.contains_key(&X_FORWARDED_HOST)) {
            headers.insert(X_FORWARDED_HOST, self.public_host.clone());
        }
        if let Some(p) = &self.public_prefix {
            if !(self.trust_forwarded && headers.contains_key(&X_FORWARDED_PREFIX)) {
                headers.insert(X_FORWARDED_PREFIX, p.clone());
            }
        }
        if let Some(id) = ctx.request_id {
            headers.insert(X_REQUEST_ID, id.clone());
        }
        if !self.pass_host {
            headers.insert(header::HOST, self.upstream_host.clone());
        } else if !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, self.public_host.clone());
        }

        let Some(identity) = ctx.identity else {
            return;
        };
        for (name, value) in &identity.fixed {
            headers.insert(name.clone(), value.clone());
        }
        // The current course: the path's, else the latest; one the session
        // has not launched has no roles.
        let (index, not_launched) = match ctx.path_course {
            Some(id) => match identity.courses.iter().position(|c| c.id == id) {
                Some(i) => (Some(i), None),
                None => (
                    None,
                    Some(CourseHeaders {
                        id: String::new(),
                        course: component_value(id),
                        roles: None,
                    }),
                ),
            },
            None => (identity.courses.len().checked_sub(1), None),
        };
        let course = not_launched
            .as_ref()
            .or_else(|| index.and_then(|i| identity.courses.get(i)));
        if let Some(c) = course {
            if let Some(v) = &c.course {
                headers.insert(self.names.course.clone(), v.clone());
            }
            if let Some(r) = &c.roles {
                headers.insert(self.names.roles.clone(), r.clone());
            }
        }
        if let Some(assertion) = &self.assertion {
            insert_assertion(assertion, headers, identity, index, ctx);
        }
    }

    /// The `X-Forwarded-For` chain of a trusted proxy (every field, joined).
    fn trusted_chain<'h>(&self, headers: &'h HeaderMap) -> Option<Cow<'h, str>> {
        if !self.trust_forwarded {
            return None;
        }
        let mut fields = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let first = fields.next()?;
        let mut chain = Cow::Borrowed(first);
        for f in fields {
            let c = chain.to_mut();
            c.push_str(", ");
            c.push_str(f);
        }
        Some(chain)
    }

    /// Every identity header value a session yields, built once per
    /// opened session: the fixed ones (user, names, email, consumer,
    /// environment, course roles) and `Course`/`Roles` per course.
    pub fn identity(&self, s: &Session) -> IdentityHeaders {
        let n = &self.names;
        let mut fixed = Vec::with_capacity(8);
        let mut set = |name: &HeaderName, value: Option<HeaderValue>| {
            if let Some(v) = value {
                fixed.push((name.clone(), v));
            }
        };
        set(&n.user, component_value(&s.external_id));
        if let Some(u) = &s.upstream_id {
            set(&n.upstream_user, component_value(u));
        }
        if let Some(e) = &s.email {
            set(&n.email, component_value(e));
        }
        if let Some(g) = &s.given_name {
            set(&n.given_name, component_value(g));
        }
        if let Some(f) = &s.family_name {
            set(&n.family_name, component_value(f));
        }
        set(&n.consumer, component_value(&s.tenant));
        if let Some(env) = self.environments.get(&s.tenant) {
            set(&n.environment, component_value(env));
        }
        set(
            &n.version,
            Some(HeaderValue::from_static(s.lti_version.as_str())),
        );
        if !s.courses.is_empty() {
            let mut all = String::new();
            for (i, c) in s.courses.iter().enumerate() {
                if i > 0 {
                    all.push(';');
                }
                encode_value_into(&c.id, &mut all);
                all.push('=');
                push_roles(&c.roles, &mut all);
            }
            set(&n.course_roles, owned_value(all));
        }
        // Oldest first, as in the session: the last one is the latest.
        let courses = s
            .courses
            .iter()
            .map(|c| CourseHeaders {
                id: c.id.clone(),
                course: component_value(&c.id),
                roles: (!c.roles.is_empty())
                    .then(|| {
                        let mut roles = String::new();
                        push_roles(&c.roles, &mut roles);
                        owned_value(roles)
                    })
                    .flatten(),
            })
            .collect();
        let assertions = match &self.assertion {
            Some(_) => Slots::new(s.courses.len()),
            None => Slots::default(),
        };
        IdentityHeaders {
            fixed,
            courses,
            assertions,
        }
    }

    /// The whole request side for one proxied request: strip, log what a
    /// client tried to forge, set forwarding and identity headers.
    pub fn apply<B>(&self, req: &mut ProxyRequest<B>) {
        // Set by the request-id layer, and left where it is (the strip
        // below keeps it); a request that skipped the layer gets one.
        let (request_id, in_place) = match req.http.headers().get(&X_REQUEST_ID) {
            Some(id) => (id.clone(), true),
            None => (RequestId::fresh().header_value().clone(), false),
        };
        let path_course = match (&req.session, &self.course_path) {
            (Some(_), Some(pattern)) => course_from_path(pattern, req.http.uri().path()),
            _ => None,
        };
        let identity = req.session.as_ref().map(|opened| {
            opened
                .identity
                .get_or_init(|| self.identity(&opened.session))
        });
        let session = req.session.as_ref().map(|opened| &opened.session);
        // HTTP/2 carries the host in the URI (`:authority`), not in `Host`.
        let authority = match req.http.headers().contains_key(header::HOST) {
            true => None,
            false => req
                .http
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
        };
        let peer = req.client.peer.ip();
        let peer_text = &req.client.peer_text;
        let headers = req.http.headers_mut();
        if let Some(host) = authority {
            headers.insert(header::HOST, host);
        }
        let forged = self.strip_keeping_id(headers, in_place);
        if !forged.is_empty() {
            let _span = request_id::span(Some(&request_id)).entered();
            tracing::info!(
                %peer,
                removed = ?forged,
                "removed identity headers sent by the client"
            );
        }
        // Room for the forwarding and identity headers without regrowth.
        headers.reserve(16);
        self.inject(
            headers,
            &RequestContext {
                peer,
                peer_text,
                identity,
                session,
                now: req.now,
                path_course: path_course.as_deref(),
                request_id: (!in_place).then_some(&request_id),
            },
        );
        req.request_id = Some(request_id);
    }
}

/// Sets the signed identity assertion of the request's session and current
/// course (the course's index among the session's, or the path's course
/// when the session has not launched it). Kept out of line: with the
/// assertion off, the header policy's own code stays as it was.
#[inline(never)]
fn insert_assertion(
    assertion: &Assertions,
    headers: &mut HeaderMap,
    identity: &IdentityHeaders,
    index: Option<usize>,
    ctx: &RequestContext<'_>,
) {
    let Some(s) = ctx.session else {
        return;
    };
    let launched = index.and_then(|i| s.courses.get(i));
    let current = CurrentCourse {
        index,
        id: match launched {
            Some(c) => Some(c.id.as_str()),
            None => ctx.path_course,
        },
        roles: launched.map_or(&[], |c| c.roles.as_slice()),
    };
    if let Some(v) = assertion.header(&identity.assertions, s, current, ctx.now) {
        headers.insert(assertion.name().clone(), v);
    }
}

/// `(name, "name=value")` of each pair in a `Cookie` header value.
fn cookie_pairs(raw: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    raw.split(|b| *b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let name = p.split(|b| *b == b'=').next().unwrap_or_default();
            (name.trim_ascii(), p)
        })
}

fn push_roles(roles: &[String], out: &mut String) {
    for (i, r) in roles.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        encode_value_into(r, out);
    }
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
    crate::http::decode_path_segment(raw).ok()
}

/// Applies the [`HeaderPolicy`] to every request on its way upstream.
#[derive(Clone)]
pub struct HeaderPolicyLayer {
    policy: Arc<HeaderPolicy>,
}

impl HeaderPolicyLayer {
    /// The layer for a policy built at start-up.
    pub fn new(policy: HeaderPolicy) -> Self {
        HeaderPolicyLayer {
            policy: Arc::new(policy),
        }
    }
}

impl<S> tower::Layer<S> for HeaderPolicyLayer {
    type Service = HeaderPolicyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HeaderPolicyService {
            policy: self.policy.clone(),
            inner,
        }
    }
}

/// The service of [`HeaderPolicyLayer`].
#[derive(Clone)]
pub struct HeaderPolicyService<S> {
    policy: Arc<HeaderPolicy>,
    inner: S,
}

impl<S, B> tower::Service<ProxyRequest<B>> for HeaderPolicyService<S>
where
    S: tower::Service<ProxyRequest<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: ProxyRequest<B>) -> Self::Future {
        self.policy.apply(&mut req);
        self.inner.call(req)
    }
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

    fn ctx<'a>(
        identity: Option<&'a IdentityHeaders>,
        path_course: Option<&'a str>,
    ) -> RequestContext<'a> {
        static R1: HeaderValue = HeaderValue::from_static("r1");
        static PEER: std::sync::LazyLock<HeaderValue> =
            std::sync::LazyLock::new(|| peer_text("10.0.0.9".parse().unwrap()));
        RequestContext {
            peer: "10.0.0.9".parse().unwrap(),
            peer_text: &PEER,
            identity,
            session: None,
            now: 0,
            path_course,
            request_id: Some(&R1),
        }
    }

    #[test]
    fn strips_forgeries_in_every_spelling() {
        let mut h = headers(&[
            ("X-LTI-User", "admin"),
            ("x-lti-roles", "Instructor"),
            ("X_LTI_User", "admin"),
            ("X-Lti-Upstream-User", "1"),
            ("x_lti-course-roles", "C-1=Instructor"),
            ("X-LTI-Assertion", "eyJhbGciOiJub25lIn0.e30."),
            ("x_lti_assertion", "forged"),
            ("X_Lti-ASSERTION", "forged"),
            ("Forwarded", "for=1.2.3.4"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("X_Forwarded_Host", "evil.example"),
            ("X-Real-IP", "1.2.3.4"),
            ("X_Request_Id", "forged"),
            ("Cookie", "a=1; __Host-ltigate_session=secret; b=2"),
            ("Connection", "keep-alive, X-Custom"),
            ("X-Custom", "gone"),
            ("TE", "trailers"),
            ("Accept", "text/html"),
            ("X-LTIfied", "kept: not the prefix"),
        ]);
        let removed = policy(false).strip(&mut h);
        assert_eq!(
            removed.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
            [
                "x-lti-user",
                "x-lti-roles",
                "x_lti_user",
                "x-lti-upstream-user",
                "x_lti-course-roles",
                "x-lti-assertion",
                "x_lti_assertion",
                "x_lti-assertion"
            ]
        );
        for gone in [
            "forwarded",
            "x-forwarded-for",
            "x_forwarded_host",
            "x-real-ip",
            "x_request_id",
            "connection",
            "x-custom",
            "te",
        ] {
            assert!(!h.contains_key(gone), "{gone} survived");
        }
        assert_eq!(h.get("cookie").unwrap(), "a=1; b=2");
        assert_eq!(h.get("accept").unwrap(), "text/html");
        assert_eq!(h.get("x-ltified").unwrap(), "kept: not the prefix");
    }

    #[test]
    fn hop_by_hop_headers_go_in_every_spelling_and_whatever_connection_holds() {
        let mut h = headers(&[
            ("Transfer_Encoding", "chunked"),
            ("Keep_Alive", "timeout=5"),
            ("Proxy_Connection", "keep-alive"),
            ("X-Named", "gone"),
            ("X-Other", "gone too"),
            ("X-Kept", "kept"),
        ]);
        // A Connection value with a byte outside visible ASCII still names
        // the headers it lists.
        h.append(
            header::CONNECTION,
            HeaderValue::from_bytes(b"X-Named, \xff, x-other").unwrap(),
        );
        policy(false).strip(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn only_our_cookie_goes_and_other_cookies_stay_untouched() {
        let p = policy(false);
        let mut h = headers(&[("Cookie", "a=1;b=2")]);
        p.strip(&mut h);
        assert_eq!(h.get("cookie").unwrap(), "a=1;b=2");
        let mut h = headers(&[("Cookie", "__Host-ltigate_session=x")]);
        p.strip(&mut h);
        assert!(!h.contains_key("cookie"));
        // HTTP/2 sends one field per cookie: joined for the HTTP/1.1 upstream.
        let mut h = headers(&[
            ("Cookie", "a=1"),
            ("Cookie", "__Host-ltigate_session=x"),
            ("Cookie", "b=2"),
        ]);
        p.strip(&mut h);
        assert_eq!(h.get_all("cookie").iter().collect::<Vec<_>>(), ["a=1; b=2"]);
        // Bytes outside ASCII in another cookie pass unchanged.
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_bytes(b"pref=Zo\xC3\xAB; __Host-ltigate_session=x; l=\xEB").unwrap(),
        );
        p.strip(&mut h);
        assert_eq!(h["cookie"].as_bytes(), b"pref=Zo\xC3\xAB; l=\xEB");
    }

    #[test]
    fn websocket_upgrade_survives_and_other_upgrades_do_not() {
        let mut h = headers(&[
            ("Connection", "keep-alive, Upgrade"),
            ("Upgrade", "websocket"),
        ]);
        policy(false).strip(&mut h);
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert_eq!(h.get("upgrade").unwrap(), "websocket");

        let mut h = headers(&[
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ]);
        policy(false).strip(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn forwarding_headers_are_set_from_the_configuration() {
        let mut h = headers(&[("Host", "pod-ip:8080"), ("X-Forwarded-Host", "evil")]);
        let p = policy(false).with_public_prefix("/lms").unwrap();
        p.strip(&mut h);
        p.inject(&mut h, &ctx(None, None));
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.9");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "learn.example.com");
        assert_eq!(h.get("x-forwarded-prefix").unwrap(), "/lms");
        assert_eq!(h.get("x-request-id").unwrap(), "r1");
        assert_eq!(h.get("host").unwrap(), "pod-ip:8080");
        assert!(!h.contains_key("x-lti-user"));

        let p = HeaderPolicy::new("X-LTI-", false, "s", "https", "pub", "up:3000", false).unwrap();
        let mut h = headers(&[("Host", "pod-ip:8080")]);
        p.inject(&mut h, &ctx(None, None));
        assert_eq!(h.get("host").unwrap(), "up:3000");
    }

    #[test]
    fn the_settled_request_id_is_kept_through_the_strip_and_not_set_again() {
        let mut h = headers(&[("X-Request-Id", "settled"), ("X_Request_Id", "forged")]);
        let p = policy(false);
        p.strip_keeping_id(&mut h, true);
        assert!(!h.contains_key("x_request_id"));
        let c = RequestContext {
            request_id: None,
            ..ctx(None, None)
        };
        p.inject(&mut h, &c);
        assert_eq!(
            h.get_all("x-request-id").iter().collect::<Vec<_>>(),
            ["settled"]
        );
    }

    #[test]
    fn trusted_forwarding_is_kept_and_extended() {
        let mut h = headers(&[
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-For", "5.6.7.8"),
            ("X-Forwarded-Proto", "http"),
            ("X-Request-Id", "from-the-ingress"),
            ("Host", "learn.example.com"),
        ]);
        let p = policy(true);
        p.strip(&mut h);
        p.inject(&mut h, &ctx(None, None));
        assert_eq!(
            h.get("x-forwarded-for").unwrap(),
            "1.2.3.4, 5.6.7.8, 10.0.0.9"
        );
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        // The id the request-id layer settled on (a trusted proxy's own,
        // there) is the one sent.
        assert_eq!(h.get("x-request-id").unwrap(), "r1");
    }

    #[test]
    fn identity_values_are_encoded() {
        let mut s = Session::new_for_test("acme:42");
        s.given_name = Some("Zoë".into());
        s.family_name = Some("O'Brien, \"Jr\"".into());
        s.add_course("C-1", &["Learner".into()], 20);
        s.add_course("C=2", &["Instructor".into(), "inst:Faculty".into()], 20);
        let p = policy(false).with_environments([("test", "sub env")]);
        let identity = p.identity(&s);
        let mut h = HeaderMap::new();
        p.inject(&mut h, &ctx(Some(&identity), None));
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
        assert_eq!(h.get("x-lti-consumer").unwrap(), "test");
        assert!(!h.contains_key("x-lti-email"));
        assert!(!h.contains_key("x-lti-upstream-user"));
    }

    #[test]
    fn a_course_not_launched_has_no_roles() {
        let mut s = Session::new_for_test("acme:42");
        s.add_course("C-1", &["Learner".into()], 20);
        let p = policy(false);
        let identity = p.identity(&s);
        let mut h = HeaderMap::new();
        p.inject(&mut h, &ctx(Some(&identity), Some("C-9")));
        assert_eq!(h.get("x-lti-course").unwrap(), "C-9");
        assert!(!h.contains_key("x-lti-roles"));
        assert_eq!(h.get("x-lti-course-roles").unwrap(), "C-1=Learner");
    }

    #[test]
    fn the_path_course_picks_its_roles_and_the_latest_course_is_the_default() {
        let mut s = Session::new_for_test("acme:42");
        s.add_course("C-1", &["Learner".into()], 20);
        s.add_course("C-2", &["Instructor".into()], 20);
        let p = policy(false);
        let identity = p.identity(&s);
        for (path_course, course, roles) in [
            (Some("C-1"), "C-1", "Learner"),
            (Some("C-2"), "C-2", "Instructor"),
            (None, "C-2", "Instructor"),
        ] {
            let mut h = HeaderMap::new();
            p.inject(&mut h, &ctx(Some(&identity), path_course));
            assert_eq!(h.get("x-lti-course").unwrap(), course, "{path_course:?}");
            assert_eq!(h.get("x-lti-roles").unwrap(), roles, "{path_course:?}");
        }
        // A session without courses has no current course.
        let bare = p.identity(&Session::new_for_test("acme:7"));
        let mut h = HeaderMap::new();
        p.inject(&mut h, &ctx(Some(&bare), None));
        assert_eq!(h.get("x-lti-user").unwrap(), "acme:7");
        assert!(!h.contains_key("x-lti-course") && !h.contains_key("x-lti-roles"));
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
