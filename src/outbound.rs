//! Outbound HTTP to an LMS's endpoints (a platform's JWKS, and later its
//! token and score endpoints): no redirects, a body limit, and the SSRF
//! rules of DESIGN §6 checked where they cannot be raced — on the address
//! actually connected to. A host name is resolved by [`GuardedResolver`],
//! which hands reqwest only public addresses; an IP literal in the URL is
//! checked before the request. A registration's `allow_private_endpoints`
//! (an on-premises LMS) turns the address check off, never the rest.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

pub use crate::addr::is_internal;

/// Resolves host names for the outbound client, keeping only the
/// addresses it may connect to: a name that resolves only to internal
/// addresses fails to resolve.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow_private || !is_internal(a.ip()))
                .collect();
            if allowed.is_empty() {
                let why = if found.is_empty() {
                    format!("{host} has no address")
                } else {
                    format!("{host} resolves only to internal addresses")
                };
                return Err(why.into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// Why an outbound call failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The URL may not be called (scheme, credentials, internal address).
    #[error("{0}")]
    Refused(String),
    /// Connecting, sending or reading failed, or took too long.
    #[error("{0}")]
    Failed(String),
    /// An answer other than 2xx (redirects are not followed).
    #[error("answered {0}")]
    Status(u16),
    /// The body is larger than the limit.
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
}

/// An HTTP client for one kind of LMS endpoint: `https` only (plain `http`
/// only with `allow_private`, for an on-premises or test LMS on a private
/// network), no redirects, `timeout` per call.
#[derive(Debug, Clone)]
pub struct Outbound {
    client: reqwest::Client,
    allow_private: bool,
}

impl Outbound {
    /// A client; `allow_private` is the registration's
    /// `allow_private_endpoints`.
    pub fn new(timeout: Duration, allow_private: bool) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .user_agent(concat!("ltigate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Outbound {
            client,
            allow_private,
        })
    }

    /// The reqwest client (its resolver is the guarded one); call
    /// [`Outbound::check`] on every URL before using it.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Checks a URL before a call: https (or http with `allow_private`), no
    /// credentials, and an IP-literal host not internal unless allowed. A
    /// host name is checked when it is resolved.
    pub fn check(&self, url: &str) -> Result<Url, OutboundError> {
        let parsed =
            Url::parse(url).map_err(|e| OutboundError::Refused(format!("not a URL: {e}")))?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_private => {}
            other => {
                return Err(OutboundError::Refused(format!(
                    "scheme {other} is not allowed (https only)"
                )))
            }
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(OutboundError::Refused("the URL carries credentials".into()));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| OutboundError::Refused("the URL has no host".into()))?;
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Some(ip) = literal
            .parse::<IpAddr>()
            .ok()
            .filter(|ip| !self.allow_private && is_internal(*ip))
        {
            return Err(OutboundError::Refused(format!("internal address {ip}")));
        }
        Ok(parsed)
    }

    /// `GET url` with `accept`, the body read up to `limit` bytes: the
    /// body and the response's headers.
    pub async fn get(
        &self,
        url: &str,
        accept: &str,
        limit: usize,
    ) -> Result<(http::HeaderMap, Bytes), OutboundError> {
        let url = self.check(url)?;
        let resp = self
            .client
            .get(url)
            .header(http::header::ACCEPT, accept)
            .send()
            .await
            .map_err(|e| OutboundError::Failed(error_text(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(OutboundError::Status(status.as_u16()));
        }
        let headers = resp.headers().clone();
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(OutboundError::TooLarge(limit));
        }
        let body = read_limited(resp, limit).await?;
        Ok((headers, body))
    }
}

/// The clients for an LTI 1.3 platform's endpoints (its key set, token
/// and scores endpoints): one for platforms on public addresses (https
/// only), one for registrations with `allow_private_endpoints` (or any, with
/// `outcomes.allow_insecure_targets`, for tests and development).
#[derive(Debug, Clone)]
pub struct PlatformClients {
    public: Outbound,
    private: Outbound,
}

impl PlatformClients {
    /// Both clients, with `timeout` per call.
    pub fn new(timeout: Duration) -> anyhow::Result<Self> {
        Ok(PlatformClients {
            public: Outbound::new(timeout, false)?,
            private: Outbound::new(timeout, true)?,
        })
    }

    /// The client for calls to `platform`'s endpoints.
    pub fn for_platform(
        &self,
        settings: &crate::config::Settings,
        platform: &crate::config::Platform,
    ) -> &Outbound {
        if platform.allow_private_endpoints || settings.outcomes.allow_insecure_targets {
            &self.private
        } else {
            &self.public
        }
    }
}

/// An answer of [`Outbound::post`]: any status (non-2xx is the caller's
/// to classify).
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: u16,
    /// The headers.
    pub headers: http::HeaderMap,
    /// The body, read up to the limit.
    pub body: Bytes,
}

impl Outbound {
    /// `POST url` with `headers` and `body`; the answer's body read up to
    /// `limit` bytes (a longer one is cut there, not refused: it is only
    /// read for the platform's words).
    pub async fn post(
        &self,
        url: &str,
        headers: http::HeaderMap,
        body: Bytes,
        limit: usize,
    ) -> Result<Answer, OutboundError> {
        let url = self.check(url)?;
        let mut resp = self
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| OutboundError::Failed(error_text(&e)))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut body = BytesMut::new();
        while body.len() < limit {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = limit - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) => break,
                Err(e) => return Err(OutboundError::Failed(error_text(&e))),
            }
        }
        Ok(Answer {
            status,
            headers,
            body: body.freeze(),
        })
    }
}

/// The body of `resp`, refused past `limit` bytes.
async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Bytes, OutboundError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| OutboundError::Failed(error_text(&e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(OutboundError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A reqwest error with its causes (the resolver's refusal is a cause).
fn error_text(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_before_any_call() {
        let strict = Outbound::new(Duration::from_secs(1), false).unwrap();
        let open = Outbound::new(Duration::from_secs(1), true).unwrap();
        assert!(strict.check("https://lms.example.com/jwks").is_ok());
        for bad in [
            "http://lms.example.com/jwks",
            "https://user:pw@lms.example.com/jwks",
            "https://127.0.0.1/jwks",
            "https://[::1]/jwks",
            "https://169.254.169.254/latest",
            "ftp://lms.example.com/",
            "not a url",
        ] {
            assert!(
                matches!(strict.check(bad), Err(OutboundError::Refused(_))),
                "{bad}"
            );
        }
        assert!(open.check("http://127.0.0.1:8080/jwks").is_ok());
        assert!(open.check("https://user:pw@10.0.0.1/").is_err());
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_never_connected_to() {
        // A server that would answer, on loopback, named by a host name.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Outbound::new(Duration::from_secs(2), true).unwrap();
        // With private endpoints allowed the name gets as far as connecting
        // (refused: the port is closed again) ...
        let url = format!("http://localhost:{port}/jwks");
        drop(listener);
        let allowed = open.get(&url, "application/json", 1024).await;
        assert!(
            matches!(allowed, Err(OutboundError::Failed(ref e)) if !e.contains("internal")),
            "{allowed:?}"
        );
        // ... without, the resolver refuses it before any connection (the
        // URL check is passed here, to reach the resolver).
        let guarded = Outbound {
            allow_private: true,
            ..Outbound::new(Duration::from_secs(2), false).unwrap()
        };
        let refused = guarded.get(&url, "application/json", 1024).await;
        assert!(
            matches!(refused, Err(OutboundError::Failed(ref e)) if e.contains("internal addresses")),
            "{refused:?}"
        );
    }
}
