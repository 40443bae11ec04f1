//! Delivery to LTI 1.3 AGS targets (DESIGN §13 "Outcome target (AGS)"): a
//! score posted to the line item's scores endpoint with a bearer token of
//! OAuth 2 client credentials, the client assertion signed by the tool
//! key; registered for [`super::TargetKind::Ags`].
//!
//! - Tokens are cached per platform until 60 s before they expire, with one
//!   token request in flight per platform; a 401 from the scores endpoint
//!   drops the cached token, and the attempt tries once more with a new
//!   one.
//! - A token endpoint that refuses (`invalid_client`, a 5xx, anything) is
//!   retried like an outage: a misconfiguration gets fixed, and the grade
//!   must still arrive.
//! - Every score carries a timestamp from the store
//!   ([`Store::next_score_timestamp`](crate::store::Store::next_score_timestamp)),
//!   strictly increasing per (line item, learner) across replicas.
//! - Calls go through [`Outbound`]: no redirects, the connected address
//!   checked unless the registration allows private endpoints.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};

use super::basic::fits_in_lease;
use super::deliver::Deliver;
use super::{parse_retry_after, OutcomeTarget, Verdict};
use crate::config::{Platform, Settings, Tenant};
use crate::http::AppState;
use crate::lti::ags::{self, AccessToken, ScoreAnswer, TokenAnswer};
use crate::lti::jose::SigningKey;
use crate::outbound::{Outbound, OutboundError, PlatformClients};
use crate::store::{now_millis, Job};

/// Largest answer read from a token or scores endpoint.
const MAX_ANSWER: usize = 64 * 1024;

/// A cached token.
#[derive(Clone)]
struct Cached {
    token: String,
    until: Instant,
}

/// LTI 1.3 AGS scores.
pub struct AgsScores {
    app: Arc<AppState>,
    key: Option<Arc<SigningKey>>,
    clients: PlatformClients,
    tokens: Mutex<HashMap<String, Cached>>,
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl AgsScores {
    /// The deliverer of `app`, signing client assertions with `key` (the
    /// tool's current key; without one, every AGS grade waits for one).
    pub fn new(app: Arc<AppState>, key: Option<Arc<SigningKey>>) -> anyhow::Result<Self> {
        let timeout = app.settings.outcomes.timeout;
        Ok(AgsScores {
            app,
            key,
            clients: PlatformClients::new(timeout)?,
            tokens: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    fn cached(&self, platform: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .get(platform)
            .filter(|c| Instant::now() < c.until)
            .map(|c| c.token.clone())
    }

    /// Drops `platform`'s cached token if it is still `token`.
    fn drop_token(&self, platform: &str, token: &str) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.get(platform).is_some_and(|c| c.token == token) {
            tokens.remove(platform);
        }
    }

    /// A token for `platform`: cached, or requested (one request in flight
    /// per platform; the others wait for it).
    async fn token(&self, settings: &Settings, platform: &Platform) -> Result<String, String> {
        if let Some(t) = self.cached(&platform.name) {
            return Ok(t);
        }
        let flight = {
            let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(platform.name.clone()).or_default().clone()
        };
        let _one = flight.lock().await;
        if let Some(t) = self.cached(&platform.name) {
            return Ok(t);
        }
        let result = self.request_token(settings, platform).await;
        let label = if result.is_ok() { "issued" } else { "error" };
        self.app
            .metrics
            .ags_tokens
            .with_label_values(&[platform.name.as_str(), label])
            .inc();
        let token = result?;
        let until = Instant::now() + ags::token_use_for(&token);
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                platform.name.clone(),
                Cached {
                    token: token.token.clone(),
                    until,
                },
            );
        Ok(token.token)
    }

    /// One client-credentials request at the platform's token endpoint.
    async fn request_token(
        &self,
        settings: &Settings,
        platform: &Platform,
    ) -> Result<AccessToken, String> {
        let key = self
            .key
            .as_ref()
            .ok_or("no LTI 1.3 tool key to sign the token request ([lti13] key_file)")?;
        let now = crate::http::unix_now();
        let claims = ags::client_assertion_claims(
            &platform.client_id,
            &platform.token_audience,
            now,
            &crate::secret::random_token(),
        );
        let assertion = key
            .sign(&claims)
            .map_err(|e| format!("cannot sign the client assertion: {e}"))?;
        let form = crate::lti::encode::form_encode(
            &ags::token_request_form(&assertion)
                .iter()
                .map(|(n, v)| (*n, v.as_str()))
                .collect::<Vec<_>>(),
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let answer = self
            .clients
            .for_platform(settings, platform)
            .post(
                &platform.auth_token_url,
                headers,
                Bytes::from(form),
                MAX_ANSWER,
            )
            .await
            .map_err(|e| format!("token request to {}: {e}", platform.auth_token_url))?;
        match ags::parse_token_answer(answer.status, &answer.body) {
            TokenAnswer::Token(t) => Ok(t),
            TokenAnswer::Refused(why) => Err(why),
        }
    }

    /// One score POST with `token`.
    async fn post_score(
        &self,
        outbound: &Outbound,
        url: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> Result<ScoreAnswer, Verdict> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(ags::SCORE_CONTENT_TYPE),
        );
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| retry("the platform's access token is not a header value".into()))?;
        headers.insert(header::AUTHORIZATION, bearer);
        let answer = outbound
            .post(url, headers, Bytes::from(body.to_string()), MAX_ANSWER)
            .await;
        let answer = match answer {
            Ok(a) => a,
            Err(OutboundError::Refused(why)) => {
                return Err(Verdict::Dead(format!("line item URL refused: {why}")))
            }
            Err(e) => return Err(retry(format!("scores endpoint: {e}"))),
        };
        let retry_after = answer
            .headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        Ok(ags::classify_score_answer(
            answer.status,
            retry_after,
            &answer.body,
        ))
    }

    /// One delivery; a step that ends it early gives its verdict as `Err`.
    async fn attempt(
        &self,
        settings: &Settings,
        target: &OutcomeTarget,
        job: &Job,
    ) -> Result<Verdict, Verdict> {
        let OutcomeTarget::Ags {
            lineitem,
            user_id,
            platform,
        } = target
        else {
            return Err(Verdict::Dead(format!(
                "a {} target was given to the AGS deliverer",
                target.kind().name()
            )));
        };
        let platform = settings.platform(platform).ok_or_else(|| {
            Verdict::Dead(format!(
                "the LTI 1.3 registration {platform} is no longer configured"
            ))
        })?;
        let outbound = self.clients.for_platform(settings, platform);
        let url = ags::scores_url(lineitem);
        outbound
            .check(&url)
            .map_err(|e| Verdict::Dead(format!("line item URL refused: {e}")))?;
        let timeout = settings.outcomes.timeout;
        // Never start a call that could outlive the lease: once it runs out
        // another process may lease the job and send a newer score, which
        // this older one must not land after.
        let lease_left = || {
            if fits_in_lease(job.lease_until_ms, now_millis(), timeout) {
                Ok(())
            } else {
                Err(retry(
                    "too little of the lease was left for a delivery".into(),
                ))
            }
        };
        let score_key = crate::store::compound(&[lineitem, user_id]);
        for first in [true, false] {
            lease_left()?;
            let token = self.token(settings, platform).await.map_err(retry)?;
            lease_left()?;
            let at = self
                .app
                .store
                .next_score_timestamp(&score_key, now_millis())
                .await
                .map_err(|e| retry(format!("store: {e}")))?;
            let body = ags::score_body(user_id, job.score, at);
            match self.post_score(outbound, &url, &token, &body).await? {
                ScoreAnswer::Delivered => return Ok(Verdict::Delivered),
                ScoreAnswer::Unauthorized => {
                    self.drop_token(&platform.name, &token);
                    if first {
                        continue;
                    }
                    return Ok(retry("the scores endpoint answered 401".into()));
                }
                ScoreAnswer::Refused(words) => return Ok(Verdict::Dead(words)),
                ScoreAnswer::Retry { after, why } => return Ok(Verdict::Retry { after, why }),
            }
        }
        Ok(retry("the scores endpoint answered 401".into()))
    }
}

/// A retry at the worker's own pace.
fn retry(why: String) -> Verdict {
    Verdict::Retry { after: None, why }
}

#[async_trait]
impl Deliver for AgsScores {
    async fn deliver(
        &self,
        settings: &Settings,
        _tenant: &Tenant,
        target: &OutcomeTarget,
        job: &Job,
    ) -> Verdict {
        match self.attempt(settings, target, job).await {
            Ok(verdict) | Err(verdict) => verdict,
        }
    }
}

impl std::fmt::Debug for AgsScores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgsScores").finish_non_exhaustive()
    }
}
