//! Delivery to LTI 1.1 Basic Outcomes targets: a signed POX
//! `replaceResultRequest`, classified by [`super::classify`]; registered
//! for [`super::TargetKind::BasicOutcomes`].

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};

use super::deliver::Deliver;
use super::{
    check_target_url, classify, is_internal, parse_retry_after, secret_fingerprint, OutcomeTarget,
    Verdict,
};
use crate::config::{Consumer, OutcomeSettings, Settings, Tenant};
use crate::lti::oauth1::{authorization_header, OutboundRequest, SignatureMethod};
use crate::lti::outcomes::{build_request, Operation};
use crate::secret::random_token;
use crate::store::{now_millis, Job};

/// Largest LMS answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// LTI 1.1 Basic Outcomes.
pub struct BasicOutcomes {
    client: reqwest::Client,
    settings: OutcomeSettings,
}

impl BasicOutcomes {
    /// Builds the HTTP client (no redirects followed, `outcomes.timeout`).
    pub fn new(settings: &OutcomeSettings) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ltigate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(BasicOutcomes {
            client,
            settings: settings.clone(),
        })
    }
}

#[async_trait]
impl Deliver for BasicOutcomes {
    async fn deliver(
        &self,
        settings: &Settings,
        tenant: &Tenant,
        target: &OutcomeTarget,
        job: &Job,
    ) -> Verdict {
        match self.attempt(settings, tenant, target, job).await {
            Ok(verdict) | Err(verdict) => verdict,
        }
    }
}

impl BasicOutcomes {
    /// One delivery; a step that ends it early gives its verdict as `Err`.
    async fn attempt(
        &self,
        settings: &Settings,
        tenant: &Tenant,
        target: &OutcomeTarget,
        job: &Job,
    ) -> Result<Verdict, Verdict> {
        let OutcomeTarget::BasicOutcomes {
            url,
            sourced_id,
            method,
            secret,
        } = target
        else {
            return Err(Verdict::Dead(format!(
                "a {} target was given to the Basic Outcomes deliverer",
                target.kind().name()
            )));
        };
        // Grades go back signed as the tenant's LTI 1.1 consumer.
        let consumer = settings.consumer_of(&tenant.name).ok_or_else(|| {
            Verdict::Dead(format!(
                "tenant {} has no LTI 1.1 consumer to sign its grades",
                tenant.name
            ))
        })?;
        self.check_target(tenant, url).await?;
        // Never start a request that could outlive the lease: once it runs
        // out another process may lease the job and send a newer score,
        // which this older one must not land after.
        if !fits_in_lease(job.lease_until_ms, now_millis(), self.settings.timeout) {
            return Err(retry(
                "too little of the lease was left for a delivery".into(),
            ));
        }
        let request = signed_request(consumer, url, sourced_id, method, secret, job.score)?;
        Ok(self.send(request).await)
    }

    /// The outcome URL is allowed (scheme, address, the tenant's
    /// `outcome_hosts`) and, unless insecure targets are, its host resolves
    /// to public addresses only.
    async fn check_target(&self, tenant: &Tenant, url: &str) -> Result<(), Verdict> {
        let insecure = self.settings.allow_insecure_targets;
        if let Err(why) = check_target_url(url, insecure, &tenant.outcome_hosts) {
            return Err(Verdict::Dead(format!("outcome URL refused: {why}")));
        }
        if insecure {
            return Ok(());
        }
        let resolved = tokio::time::timeout(self.settings.timeout, resolves_publicly(url));
        match resolved.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(Resolve::Internal(why))) => {
                Err(Verdict::Dead(format!("outcome URL refused: {why}")))
            }
            Ok(Err(Resolve::Failed(why))) => Err(retry(why)),
            Err(_) => Err(retry(format!(
                "resolving the outcome host took longer than {:?}",
                self.settings.timeout
            ))),
        }
    }

    /// Sends the request and classifies the LMS's answer.
    async fn send(&self, request: SignedRequest) -> Verdict {
        let sent = self
            .client
            .post(request.url)
            .header(CONTENT_TYPE, "application/xml")
            .header(AUTHORIZATION, request.authorization)
            .body(request.body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return retry(format!("timed out after {:?}", self.settings.timeout))
            }
            Err(e) => return retry(format!("network error: {e}")),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = read_limited(resp).await;
        classify(status, retry_after, location.as_deref(), &body)
    }
}

/// A retry at the worker's own pace (no `Retry-After`).
fn retry(why: String) -> Verdict {
    Verdict::Retry { after: None, why }
}

/// A `replaceResultRequest` ready to send.
struct SignedRequest {
    /// The outcome URL as it goes on the wire.
    url: reqwest::Url,
    /// The OAuth 1.0a `Authorization` value.
    authorization: String,
    /// The POX body.
    body: String,
}

/// The `replaceResultRequest` for `score`, signed with the launch's method
/// and the secret that verified the launch (else the consumer's current
/// one).
fn signed_request(
    consumer: &Consumer,
    url: &str,
    sourced_id: &str,
    method: &str,
    secret: &str,
    score: f64,
) -> Result<SignedRequest, Verdict> {
    let key_secret = consumer
        .secrets
        .iter()
        .find(|s| secret_fingerprint(s) == *secret)
        .or_else(|| consumer.secrets.first())
        .ok_or_else(|| Verdict::Dead("the consumer has no secret".into()))?;
    let method = SignatureMethod::parse(method).unwrap_or(SignatureMethod::HmacSha1);
    let body = build_request(&random_token(), sourced_id, &Operation::Replace { score })
        .map_err(|e| Verdict::Dead(format!("cannot build the request: {e}")))?;
    // Signed as it goes on the wire: the HTTP client sends the URL
    // normalised (WHATWG: `{`, `"`, spaces and non-ASCII in the path
    // percent-encoded, dot segments resolved), and the LMS verifies what
    // it received.
    let wire = reqwest::Url::parse(url)
        .map_err(|e| Verdict::Dead(format!("outcome URL does not parse: {e}")))?;
    let now_s = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let authorization = authorization_header(&OutboundRequest {
        http_method: "POST",
        url: wire.as_str(),
        consumer_key: &consumer.key,
        consumer_secret: key_secret.expose(),
        method,
        nonce: &random_token(),
        timestamp: now_s,
        body: body.as_bytes(),
    })
    .map_err(|e| Verdict::Dead(format!("cannot sign for {url}: {e}")))?;
    Ok(SignedRequest {
        url: wire,
        authorization,
        body,
    })
}

async fn read_limited(mut resp: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = MAX_ANSWER.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_ANSWER {
            break;
        }
    }
    out
}

enum Resolve {
    /// The name points inside: never deliver there.
    Internal(String),
    /// Resolution failed: try again later.
    Failed(String),
}

/// Whether a request started at `now_ms` ends, timeout included, before the
/// lease does.
pub(super) fn fits_in_lease(lease_until_ms: u64, now_ms: u64, timeout: Duration) -> bool {
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    now_ms.saturating_add(timeout_ms) <= lease_until_ms
}

/// Resolves the URL's host and refuses internal addresses (a public name
/// pointing inside).
async fn resolves_publicly(url: &str) -> Result<(), Resolve> {
    let parsed = reqwest::Url::parse(url).map_err(|e| Resolve::Internal(e.to_string()))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| Resolve::Internal("no host".into()))?
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs = tokio::net::lookup_host((host.trim_start_matches('[').trim_end_matches(']'), port))
        .await
        .map_err(|e| Resolve::Failed(format!("cannot resolve {host}: {e}")))?;
    for a in addrs {
        if is_internal(a.ip()) {
            return Err(Resolve::Internal(format!(
                "{host} resolves to internal address {}",
                a.ip()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::fits_in_lease;

    #[test]
    fn a_delivery_starts_only_if_it_ends_within_the_lease() {
        let timeout = Duration::from_secs(30);
        assert!(fits_in_lease(100_000, 70_000, timeout));
        assert!(!fits_in_lease(100_000, 70_001, timeout));
        assert!(!fits_in_lease(100_000, 200_000, timeout));
        assert!(!fits_in_lease(u64::MAX - 1, u64::MAX - 2, timeout));
    }
}
