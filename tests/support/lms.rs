//! A test LMS: builds LTI 1.1 launches signed the way an LMS signs them.

use std::time::{SystemTime, UNIX_EPOCH};

use ltigate::lti::encode::form_encode;
use ltigate::lti::oauth1::{sign_launch, LaunchSigner, SignatureMethod};

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn nonce() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A launch under construction.
#[derive(Clone)]
pub struct Launch {
    /// The URL the LMS signs (public URL + path + optional query).
    pub url: String,
    pub key: String,
    pub secret: String,
    pub method: SignatureMethod,
    pub timestamp: u64,
    pub nonce: String,
    pub params: Vec<(String, String)>,
}

impl Launch {
    /// A learner launch of `course` (as `custom_course`) by `user`.
    pub fn new(key: &str, secret: &str, user: &str, course: Option<&str>) -> Launch {
        let mut params = vec![
            ("lti_message_type".into(), "basic-lti-launch-request".into()),
            ("lti_version".into(), "LTI-1p0".into()),
            ("resource_link_id".into(), "res-1".into()),
            ("user_id".into(), user.into()),
            ("roles".into(), "Learner".into()),
            ("lis_person_name_given".into(), "Ada".into()),
            ("lis_person_name_family".into(), "Lovelace".into()),
            (
                "lis_person_contact_email_primary".into(),
                "ada@example.org".into(),
            ),
            ("context_id".into(), "ctx-1".into()),
        ];
        if let Some(c) = course {
            params.push(("custom_course".into(), c.into()));
        }
        Launch {
            url: format!("{}/lti/launch", super::gate::PUBLIC_URL),
            key: key.into(),
            secret: secret.into(),
            method: SignatureMethod::HmacSha1,
            timestamp: now(),
            nonce: nonce(),
            params,
        }
    }

    pub fn acme(user: &str, course: &str) -> Launch {
        Launch::new("acme-key", "acme-secret", user, Some(course))
    }

    pub fn set(mut self, name: &str, value: &str) -> Launch {
        self.params.retain(|(n, _)| n != name);
        self.params.push((name.into(), value.into()));
        self
    }

    pub fn without(mut self, name: &str) -> Launch {
        self.params.retain(|(n, _)| n != name);
        self
    }

    /// The signed body parameters.
    pub fn signed_params(&self) -> Vec<(String, String)> {
        sign_launch(
            &LaunchSigner {
                url: &self.url,
                consumer_key: &self.key,
                consumer_secret: self.secret.as_bytes(),
                method: self.method,
                nonce: &self.nonce,
                timestamp: self.timestamp,
            },
            &self.params,
        )
        .unwrap()
    }

    /// The signed, form-encoded body.
    pub fn body(&self) -> String {
        encode(&self.signed_params())
    }

    /// Path and query of the launch URL, to send to ltigate's real address.
    pub fn path_and_query(&self) -> String {
        let rest = self.url.strip_prefix(super::gate::PUBLIC_URL).unwrap();
        rest.to_string()
    }
}

pub fn encode(params: &[(String, String)]) -> String {
    let refs: Vec<(&str, &str)> = params
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    form_encode(&refs)
}
