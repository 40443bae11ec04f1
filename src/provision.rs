//! The upstream provisioning API client (DESIGN §5): makes sure the learner
//! exists upstream and is subscribed to the course.
//!
//! Both calls are idempotent PUTs, so transport errors, timeouts and 5xx
//! answers are retried (`upstream.api_retries`, short backoff). Path
//! segments are percent-encoded; fields the LMS did not send are left out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::UpstreamSettings;
use crate::lti::encode::percent_encode;
use crate::metrics::Metrics;

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The subscription call answered 404: the course does not exist.
    #[error("the upstream does not know the course")]
    UnknownCourse,
    /// Anything else.
    #[error("upstream API: {0}")]
    Upstream(String),
}

/// Who to provision where.
#[derive(Debug, Clone)]
pub struct ProvisionRequest<'a> {
    /// Namespaced external ID.
    pub external_id: &'a str,
    /// Given name.
    pub given_name: Option<&'a str>,
    /// Family name.
    pub family_name: Option<&'a str>,
    /// Email.
    pub email: Option<&'a str>,
    /// The consumer's upstream environment.
    pub environment: Option<&'a str>,
    /// Course external ID.
    pub course: &'a str,
    /// Staff (instructor-like) in the course.
    pub staff: bool,
}

#[derive(Serialize)]
struct UserBody<'a> {
    external_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<&'a str>,
}

#[derive(Serialize)]
struct SubscriptionBody<'a> {
    role: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<&'a str>,
}

/// Fills `{name}` placeholders with percent-encoded values.
pub fn fill_template(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), &percent_encode(value.as_bytes()));
    }
    out
}

/// The provisioning client (pooled keep-alive connections).
#[derive(Clone)]
pub struct Provisioner {
    client: reqwest::Client,
    settings: Arc<UpstreamSettings>,
    metrics: Arc<Metrics>,
}

enum Attempt {
    Done(reqwest::Response),
    Retry(String),
    Fail(String),
}

impl Provisioner {
    /// Builds the client.
    pub fn new(settings: Arc<UpstreamSettings>, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(settings.api_timeout)
            .connect_timeout(settings.api_timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ltigate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Provisioner {
            client,
            settings,
            metrics,
        })
    }

    /// Provisions the learner and the subscription. Returns the upstream's
    /// own user id when its API returned one.
    pub async fn provision(
        &self,
        req: &ProvisionRequest<'_>,
    ) -> Result<Option<String>, ProvisionError> {
        let user_url = format!(
            "{}{}",
            self.settings.api_url,
            fill_template(
                &self.settings.user_path,
                &[("external_id", req.external_id)]
            )
        );
        let user = UserBody {
            external_id: req.external_id,
            first_name: req.given_name,
            last_name: req.family_name,
            email: req.email,
            environment: req.environment,
        };
        let resp = self.put("put_user", &user_url, &user).await?;
        let status = resp.status();
        if !status.is_success() {
            self.count(
                "put_user",
                if status.as_u16() == 404 {
                    "not_found"
                } else {
                    "error"
                },
            );
            return Err(ProvisionError::Upstream(format!(
                "PUT user answered {status}"
            )));
        }
        self.count("put_user", "ok");
        // Optional `{"id": "..."}`: a string or a number.
        let upstream_id = match resp.bytes().await {
            Ok(b) if !b.is_empty() => serde_json::from_slice::<serde_json::Value>(&b)
                .ok()
                .and_then(|v| match v.get("id") {
                    Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
                    Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                }),
            _ => None,
        };

        let sub_url = format!(
            "{}{}",
            self.settings.api_url,
            fill_template(
                &self.settings.subscription_path,
                &[("course", req.course), ("external_id", req.external_id)]
            )
        );
        let sub = SubscriptionBody {
            role: if req.staff { "staff" } else { "learner" },
            environment: req.environment,
        };
        let resp = self.put("put_subscription", &sub_url, &sub).await?;
        let status = resp.status();
        if status.as_u16() == 404 {
            self.count("put_subscription", "not_found");
            return Err(ProvisionError::UnknownCourse);
        }
        if !status.is_success() {
            self.count("put_subscription", "error");
            return Err(ProvisionError::Upstream(format!(
                "PUT subscription answered {status}"
            )));
        }
        self.count("put_subscription", "ok");
        Ok(upstream_id)
    }

    fn count(&self, op: &str, result: &str) {
        self.metrics
            .upstream_api
            .with_label_values(&[op, result])
            .inc();
    }

    async fn put<T: Serialize>(
        &self,
        op: &'static str,
        url: &str,
        body: &T,
    ) -> Result<reqwest::Response, ProvisionError> {
        let mut last = String::new();
        for attempt in 0..=self.settings.api_retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * (1 << (attempt - 1).min(4)))).await;
            }
            let started = Instant::now();
            let outcome = self.attempt(url, body).await;
            self.metrics
                .upstream_api_duration
                .with_label_values(&[op])
                .observe(started.elapsed().as_secs_f64());
            match outcome {
                Attempt::Done(resp) => return Ok(resp),
                Attempt::Retry(why) => {
                    tracing::warn!(op, attempt, error = %why, "upstream API call failed; retrying");
                    last = why;
                }
                Attempt::Fail(why) => {
                    self.count(op, "error");
                    return Err(ProvisionError::Upstream(why));
                }
            }
        }
        self.count(
            op,
            if last.contains("timed out") {
                "timeout"
            } else {
                "error"
            },
        );
        Err(ProvisionError::Upstream(last))
    }

    async fn attempt<T: Serialize>(&self, url: &str, body: &T) -> Attempt {
        let mut req = self.client.put(url).json(body);
        if let Some(token) = &self.settings.api_token {
            match std::str::from_utf8(token.expose()) {
                Ok(t) => req = req.bearer_auth(t),
                Err(_) => return Attempt::Fail("upstream.api_token is not valid UTF-8".into()),
            }
        }
        match req.send().await {
            Ok(resp) if resp.status().is_server_error() => {
                Attempt::Retry(format!("answered {}", resp.status()))
            }
            Ok(resp) => Attempt::Done(resp),
            Err(e) if e.is_timeout() => Attempt::Retry("timed out".into()),
            Err(e) if e.is_connect() || e.is_request() => Attempt::Retry(format!("{e}")),
            Err(e) => Attempt::Fail(format!("{e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fill_template;

    #[test]
    fn templates_encode_segments() {
        assert_eq!(
            fill_template(
                "/courses/{course}/subscriptions/{external_id}",
                &[("course", "C 1/2"), ("external_id", "acme:u+1")]
            ),
            "/courses/C%201%2F2/subscriptions/acme%3Au%2B1"
        );
    }
}
