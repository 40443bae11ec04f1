//! The session gate and the reverse proxy: every request that is not one of
//! ltigate's own routes needs a valid session (or a public path), passes the
//! CSRF guard and the header policy, and is streamed to the upstream over a
//! pooled keep-alive connection. Responses stream back with upstream cookies
//! and redirects made to work on the public origin.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::headers::{course_from_path, HeaderPolicy, RequestContext};
use super::launch::random_token;
use super::session::{Lifetime, SessionRejection};
use super::{respond, unix_now, AppState, Body};

/// The gate + proxy service.
pub struct Proxy {
    app: Arc<AppState>,
    client: Client<HttpConnector, Body>,
    policy: HeaderPolicy,
    /// `scheme://authority` of the upstream.
    upstream_origin: String,
    /// Path prefix of `upstream.url` (no trailing slash).
    upstream_prefix: String,
    public_origin: String,
    csp: Option<HeaderValue>,
}

impl Proxy {
    /// Builds the proxy from the settings (once, at start-up).
    pub fn new(app: Arc<AppState>) -> anyhow::Result<Self> {
        let s = &app.settings;
        let upstream: Uri = s
            .upstream
            .url
            .parse()
            .map_err(|e| anyhow::anyhow!("upstream.url: {e}"))?;
        if upstream.scheme_str() != Some("http") {
            anyhow::bail!("upstream.url: only http:// upstreams are supported (ltigate runs beside the platform)");
        }
        let authority = upstream
            .authority()
            .ok_or_else(|| anyhow::anyhow!("upstream.url: missing host"))?
            .to_string();
        let public = &s.server.public_url;
        let public_authority = match public.port {
            Some(p) => format!("{}:{p}", public.host),
            None => public.host.clone(),
        };
        let policy = HeaderPolicy::new(
            &s.session.header_prefix,
            s.server.trust_forwarded_headers,
            &s.session.cookie_name,
            &public.scheme,
            &public_authority,
            &authority,
            s.upstream.pass_host_header,
        )?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(s.upstream.timeout.min(Duration::from_secs(10))));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(connector);
        let csp = if s.server.frame_ancestors.is_empty() {
            None
        } else {
            Some(HeaderValue::from_str(&format!(
                "frame-ancestors 'self' {}",
                s.server.frame_ancestors.join(" ")
            ))?)
        };
        Ok(Proxy {
            upstream_origin: format!("http://{authority}"),
            upstream_prefix: upstream.path().trim_end_matches('/').to_string(),
            public_origin: public.origin(),
            policy,
            client,
            csp,
            app,
        })
    }

    fn is_public_path(&self, path: &str) -> bool {
        self.app
            .settings
            .server
            .public_paths
            .iter()
            .any(|p| path.starts_with(p.as_str()))
    }

    fn reject(&self, reason: SessionRejection, json: bool) -> Response<Body> {
        self.app
            .metrics
            .session_rejections
            .with_label_values(&[reason.label()])
            .inc();
        match reason {
            SessionRejection::Csrf => respond::error(
                StatusCode::FORBIDDEN,
                "csrf",
                "This request came from another site and was refused.",
                json,
            ),
            _ => respond::error(
                StatusCode::UNAUTHORIZED,
                "no_session",
                "Your session has ended or was not started. Open the course again from your LMS.",
                json,
            ),
        }
    }

    /// Is this unsafe request cross-site?
    fn cross_site<B>(&self, req: &Request<B>) -> bool {
        if !matches!(
            *req.method(),
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        ) {
            return false;
        }
        let h = req.headers();
        if h.get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
        {
            return true;
        }
        match h.get(header::ORIGIN) {
            Some(o) => o.as_bytes() != self.public_origin.as_bytes(),
            None => false,
        }
    }

    /// Gate and proxy one request.
    pub async fn handle(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let app = &self.app;
        let json = respond::prefers_json(req.headers());
        let now = unix_now();
        let public = self.is_public_path(req.uri().path());
        let session = match app.session_from(req.headers(), now) {
            Ok(s) => Some(s),
            Err(reason) if !public => return self.reject(reason, json),
            Err(_) => None,
        };
        if app.settings.session.csrf && self.cross_site(&req) {
            return self.reject(SessionRejection::Csrf, json);
        }

        // Refresh last-seen at most once a minute.
        let mut refreshed_cookie = None;
        if let Some(s) = &session {
            if Lifetime::needs_touch(s, now) {
                let mut t = s.clone();
                t.last_seen = now;
                match app.sealer.seal(&t) {
                    Ok(v) => refreshed_cookie = Some(app.session_cookie(&v)),
                    Err(e) => tracing::warn!(error = %e, "cannot refresh the session"),
                }
            }
        }

        let course = session.as_ref().and_then(|s| {
            app.settings
                .upstream
                .course_path
                .as_deref()
                .and_then(|p| course_from_path(p, req.uri().path()))
                .or_else(|| s.latest_course().map(|c| c.id.clone()))
        });
        let environment = session.as_ref().and_then(|s| {
            app.settings
                .consumer_by_name(&s.consumer)
                .and_then(|c| c.environment.clone())
        });
        let request_id = random_token();
        let removed = self.policy.strip(req.headers_mut());
        if !removed.is_empty() {
            tracing::info!(
                request_id = %request_id,
                removed = ?removed,
                "removed client headers that only ltigate or a trusted proxy may set"
            );
        }
        self.policy.inject(
            req.headers_mut(),
            &RequestContext {
                peer: peer.ip(),
                session: session.as_ref(),
                course: course.as_deref(),
                environment: environment.as_deref(),
                request_id: &request_id,
            },
        );

        let mut resp = self.forward(req, json).await;
        if let Some(c) = refreshed_cookie {
            if let Ok(v) = HeaderValue::from_str(&c) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        resp
    }

    async fn forward(&self, mut req: Request<Incoming>, json: bool) -> Response<Body> {
        let app = &self.app;
        let started = Instant::now();
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let target = format!(
            "{}{}{}",
            self.upstream_origin, self.upstream_prefix, path_and_query
        );
        let Ok(uri) = target.parse::<Uri>() else {
            return respond::error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "Bad request target.",
                json,
            );
        };
        let is_upgrade = req.headers().contains_key(header::UPGRADE);
        let client_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        let body: Body = body.map_err(|e| Box::new(e) as super::BoxError).boxed();
        let upstream_req = Request::from_parts(parts, body);

        let result = tokio::time::timeout(
            app.settings.upstream.timeout,
            self.client.request(upstream_req),
        )
        .await;
        app.metrics
            .proxy_duration
            .observe(started.elapsed().as_secs_f64());
        let mut resp = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "upstream request failed");
                return self.count(respond::error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    "The learning platform cannot be reached right now. Please try again in a moment.",
                    json,
                ));
            }
            Err(_) => {
                tracing::warn!(timeout = ?app.settings.upstream.timeout, "upstream did not answer in time");
                return self.count(respond::error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    "The learning platform did not answer in time. Please try again.",
                    json,
                ));
            }
        };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    match tokio::try_join!(client_upgrade, upstream_upgrade) {
                        Ok((c, u)) => {
                            let mut c = TokioIo::new(c);
                            let mut u = TokioIo::new(u);
                            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                                tracing::debug!(error = %e, "upgraded connection ended");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "upgrade failed"),
                    }
                });
            }
        }

        self.rewrite_response(resp.headers_mut());
        let (mut parts, body) = resp.into_parts();
        if parts.status != StatusCode::SWITCHING_PROTOCOLS {
            strip_hop_by_hop(&mut parts.headers);
        }
        let body: Body = body.map_err(|e| Box::new(e) as super::BoxError).boxed();
        self.count(Response::from_parts(parts, body))
    }

    fn count(&self, resp: Response<Body>) -> Response<Body> {
        self.app
            .metrics
            .proxy_requests
            .with_label_values(&[crate::metrics::Metrics::code_class(resp.status().as_u16())])
            .inc();
        resp
    }

    /// Upstream cookies made to survive in the LMS iframe, ltigate's own
    /// cookie name refused, internal redirects moved to the public origin,
    /// optional `frame-ancestors`.
    fn rewrite_response(&self, headers: &mut http::HeaderMap) {
        let s = &self.app.settings.session;
        if headers.contains_key(header::SET_COOKIE) {
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
                if name == s.cookie_name {
                    tracing::warn!("dropped an upstream cookie that uses ltigate's cookie name");
                    continue;
                }
                let value = if s.rewrite_upstream_cookies {
                    rewrite_cookie(text, s.partitioned)
                } else {
                    text.to_string()
                };
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.append(header::SET_COOKIE, v);
                }
            }
        }
        if let Some(loc) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) {
            if let Some(rest) = loc.strip_prefix(&self.upstream_origin) {
                if rest.is_empty() || rest.starts_with(['/', '?', '#']) {
                    let rest = rest.strip_prefix(&self.upstream_prefix).unwrap_or(rest);
                    let public = format!(
                        "{}{}{}",
                        self.public_origin, self.app.settings.server.public_url.prefix, rest
                    );
                    if let Ok(v) = HeaderValue::from_str(&public) {
                        headers.insert(header::LOCATION, v);
                    }
                }
            }
        }
        if let Some(csp) = &self.csp {
            let is_html = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
            if is_html {
                headers.append(header::CONTENT_SECURITY_POLICY, csp.clone());
            }
        }
    }
}

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let named: Vec<header::HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| header::HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for h in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(h);
    }
}

/// Adds `SameSite=None; Secure` (and `Partitioned`) to an upstream cookie,
/// replacing any SameSite it had.
pub fn rewrite_cookie(cookie: &str, partitioned: bool) -> String {
    let mut parts = cookie.split(';').map(str::trim);
    let mut out = parts.next().unwrap_or("").to_string();
    let mut has_partitioned = false;
    for attr in parts {
        let name = attr
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "samesite" | "secure" => continue,
            "partitioned" => has_partitioned = true,
            "" => continue,
            _ => {}
        }
        out.push_str("; ");
        out.push_str(attr);
    }
    out.push_str("; SameSite=None; Secure");
    if partitioned && !has_partitioned {
        out.push_str("; Partitioned");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::rewrite_cookie;

    #[test]
    fn cookies_get_samesite_none() {
        assert_eq!(
            rewrite_cookie("sid=1; Path=/; SameSite=Lax; HttpOnly", false),
            "sid=1; Path=/; HttpOnly; SameSite=None; Secure"
        );
        assert_eq!(
            rewrite_cookie("a=b", true),
            "a=b; SameSite=None; Secure; Partitioned"
        );
    }
}
