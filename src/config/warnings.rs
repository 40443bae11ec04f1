//! What is valid but likely wrong, and the published example secrets.

use super::settings::{
    Consumer, SessionSettings, Settings, UpstreamSettings, WebhookSettings, MAX_PORTABLE_SECRET,
};
use crate::secret::Secret;

/// Secrets published with ltigate: the shipped `config/ltigate.toml`, the
/// demo's configuration, and the placeholders of the chart's README. Anyone
/// can sign launches or webhooks with them, so they are warned about, and
/// refused when `server.public_url` is https (a real deployment).
pub const EXAMPLE_SECRETS: &[&str] = &[
    "demo-secret-change-me",
    // `ltigate demo`'s own (its tests check that these are its secrets).
    "demo-secret",
    "demo-webhook-secret",
    "demo-api-token",
    "<openssl rand -base64 48>",
    "<openssl rand -hex 32>",
    "<token of the platform's API>",
    "<shared secret given to Canvas>",
];

fn is_example(secret: &Secret) -> bool {
    EXAMPLE_SECRETS
        .iter()
        .any(|e| e.as_bytes() == secret.expose())
}

/// The key paths of the configured secrets that are published examples
/// (`upstream.api_token`, `session.secret`, `webhook.secret`,
/// `consumers[0].secret`, or `consumers[0].secrets[1]` in a rotation).
pub(super) fn example_secrets(
    upstream: &UpstreamSettings,
    session: &SessionSettings,
    webhook: &WebhookSettings,
    consumers: &[Consumer],
) -> Vec<String> {
    let mut out = Vec::new();
    let single = [
        ("upstream.api_token", upstream.api_token.as_ref()),
        ("session.secret", session.secret.as_ref()),
        ("webhook.secret", webhook.secret.as_ref()),
    ];
    for (key, secret) in single {
        if secret.is_some_and(is_example) {
            out.push(key.to_string());
        }
    }
    for (i, c) in consumers.iter().enumerate() {
        for (j, secret) in c.secrets.iter().enumerate() {
            if is_example(secret) {
                out.push(if c.secrets.len() == 1 {
                    format!("consumers[{i}].secret")
                } else {
                    format!("consumers[{i}].secrets[{j}]")
                });
            }
        }
    }
    out
}

impl Settings {
    /// What is valid but likely wrong, one line each: what `check-config`
    /// prints and `serve` logs.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for key in example_secrets(
            &self.upstream,
            &self.session,
            &self.webhook,
            &self.consumers,
        ) {
            out.push(format!(
                "{key}: a published example secret (from the shipped configuration, the README or the demo): anyone can sign with it; set your own before real use (it is refused when server.public_url is https)"
            ));
        }
        if self.webhook.secret.is_none() {
            out.push(
                "webhook.secret: not set: completion webhooks are refused with 401".to_string(),
            );
        }
        for (n, c) in self.consumers.iter().enumerate() {
            for (i, secret) in c.secrets.iter().enumerate() {
                let len = secret.expose().len();
                if len > MAX_PORTABLE_SECRET {
                    out.push(format!(
                        "consumers[{n}]: secret {} of consumer {:?} is {len} characters; Brightspace keeps only the first {MAX_PORTABLE_SECRET} of a pasted secret, so its launches would fail as bad_signature",
                        i + 1,
                        c.tenant.name
                    ));
                }
            }
        }
        out.extend(self.lti13_warnings());
        if let Some(a) = self
            .session
            .assertion
            .as_ref()
            .filter(|a| !a.next_keys.is_empty())
        {
            out.push(format!(
                "session.assertion_next_key_files: {} key(s) published at the admin listener's /.well-known/jwks.json that never sign; once every upstream has fetched them, make the next key session.assertion_key_file and move the current one to session.assertion_previous_key_files",
                a.next_keys.len()
            ));
        }
        out
    }

    /// What is valid but likely wrong in `[lti13]` and `[[platforms]]`.
    fn lti13_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let next = self.lti13.next_keys.len();
        if next > 0 {
            out.push(format!(
                "lti13.next_key_files: {next} key(s) published in the tool's JWKS that never sign; once every platform has fetched them (a day), make the next key lti13.key_file and move the current one to lti13.previous_key_files"
            ));
        }
        for (n, p) in self.platforms.iter().enumerate() {
            for (key, url) in [
                ("auth_login_url", &p.auth_login_url),
                ("auth_token_url", &p.auth_token_url),
                ("jwks_url", &p.jwks_url),
            ] {
                if url
                    .get(..7)
                    .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
                {
                    out.push(format!(
                        "platforms[{n}].{key}: plain http to a loopback host: for tests and development only (keys, tokens and grades travel unencrypted)"
                    ));
                }
            }
            if p.trust_unsigned_migration {
                out.push(match &p.consumer {
                    Some(consumer) => format!(
                        "platforms[{n}].trust_unsigned_migration: an unsigned lti1p1.user_id is believed: whoever controls the platform's launches (or Canvas, which sends one when no LTI 1.1 tool is associated) can land a launch in any LTI 1.1 learner account of consumer {consumer:?}; keep it on only while the platform cannot sign the claim"
                    ),
                    None => format!(
                        "platforms[{n}].trust_unsigned_migration: has no effect: the registration is not linked to a consumer (consumer = \"…\"), so its lti1p1 claim is ignored"
                    ),
                });
            }
        }
        out
    }
}
