//! The demo LMS's LTI 1.3 side: what a platform does for an LTI 1.3 tool.
//!
//! - `GET /launch13/{course}?learner=ID`: what the course page's iframe
//!   loads: the third-party login initiation, a redirect to ltigate's
//!   `/lti/1.3/login` with `iss`, `login_hint`, `target_link_uri`,
//!   `client_id`, `lti_deployment_id` and a single-use `lti_message_hint`
//!   (as Moodle's is).
//! - `GET /lti13/auth`: the OIDC authorization endpoint. It checks what a
//!   platform checks (`scope`, `response_type`, `response_mode`, `prompt`,
//!   the client id, the registered redirect URI, the hint and that the
//!   hint's learner is the `login_hint`), spends the hint, and answers a
//!   page that posts the signed id_token and the `state` back to the
//!   redirect URI.
//! - `GET /lti13/jwks.json`: the platform's public key (RS256, its RFC 7638
//!   thumbprint as `kid`).
//! - `POST /lti13/token`: the OAuth 2 token endpoint of AGS. The tool's
//!   client assertion is verified against the tool's published key set
//!   (fetched from ltigate's `/lti/1.3/jwks.json`): `iss` = `sub` = the
//!   client id, `aud` this URL, a fresh `jti`, not expired.
//! - `POST /lti13/lineitems/{course}/lineitem/scores`: a line item's scores
//!   endpoint: the bearer token, the score media type and body are
//!   checked, and the score goes into the gradebook.
//!
//! The platform's RSA key is generated when the demo starts.

use std::collections::HashMap;
use std::sync::Mutex;

use http::{Response, StatusCode};

use super::web::{error_page, Site};
use super::{Learner, COURSE_ID, COURSE_TITLE};
use crate::http::respond::{self, html_escape};
use crate::http::{unix_now, Body};
use crate::lti::encode::percent_encode;
use crate::lti::jose::SigningKey;
use crate::secret::random_token;

/// The client id the demo LMS gave ltigate.
pub const CLIENT_ID: &str = "demo-client";
/// The deployment of the tool in the demo LMS.
pub const DEPLOYMENT_ID: &str = "demo-deployment";
/// How long a message hint may wait for its authorization.
const HINT_TTL: u64 = 300;
/// How long an access token is good for.
const TOKEN_TTL: u64 = 3600;
/// The AGS score scope.
const SCORE_SCOPE: &str = "https://purl.imsglobal.org/spec/lti-ags/scope/score";

/// A score the LMS accepted: for the gradebook.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// The course of the line item.
    pub course: String,
    /// The learner (`userId`).
    pub user: String,
    /// `scoreGiven` / `scoreMaximum`.
    pub score: f64,
}

/// What a message hint stands for.
#[derive(Debug, Clone)]
struct Hint {
    course: String,
    user: String,
    expires: u64,
}

/// The LTI 1.3 platform part of the demo LMS.
pub struct Platform13 {
    issuer: String,
    login_url: String,
    launch_url: String,
    key: SigningKey,
    hints: Mutex<HashMap<String, Hint>>,
    /// Access tokens issued, with when they expire; and `jti`s seen.
    tokens: Mutex<(HashMap<String, u64>, std::collections::HashSet<String>)>,
    tool_jwks_url: String,
    client: reqwest::Client,
}

impl Platform13 {
    /// The platform of the LMS at `issuer` (its base URL), for the tool
    /// whose public base URL is `tool_base`; with a fresh RSA key.
    pub fn new(issuer: &str, tool_base: &str) -> anyhow::Result<Self> {
        let mut rng = rand::rng();
        let der = crate::lti::rsa_keygen::generate_pkcs8(2048, &mut |b| {
            rand::RngCore::fill_bytes(&mut rng, b)
        })?;
        let key = SigningKey::from_pkcs8_der(&der)?;
        let tool_base = tool_base.trim_end_matches('/');
        Ok(Platform13 {
            issuer: issuer.trim_end_matches('/').to_string(),
            login_url: format!("{tool_base}/lti/1.3/login"),
            launch_url: format!("{tool_base}/lti/1.3/launch"),
            key,
            hints: Mutex::new(HashMap::new()),
            tokens: Mutex::new(Default::default()),
            tool_jwks_url: format!("{tool_base}/lti/1.3/jwks.json"),
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()?,
        })
    }

    /// The issuer (the LMS's base URL).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `GET /lti13/jwks.json`.
    pub fn jwks(&self) -> Response<Body> {
        let mut resp = respond::json(StatusCode::OK, &self.key.public_jwk().to_jwks_json(&[]));
        if let Ok(v) = http::HeaderValue::from_str("public, max-age=300") {
            resp.headers_mut().insert(http::header::CACHE_CONTROL, v);
        }
        resp
    }

    /// `GET /launch13/{course}?learner=ID`: the login initiation.
    pub fn start_login(&self, learner: &Learner) -> Response<Body> {
        let hint = random_token();
        {
            let mut hints = self.hints.lock().unwrap_or_else(|e| e.into_inner());
            let now = unix_now();
            hints.retain(|_, h| h.expires > now);
            hints.insert(
                hint.clone(),
                Hint {
                    course: COURSE_ID.to_string(),
                    user: learner.user_id.to_string(),
                    expires: now + HINT_TTL,
                },
            );
        }
        let query: Vec<String> = [
            ("iss", self.issuer.as_str()),
            ("login_hint", learner.user_id),
            ("target_link_uri", self.launch_url.as_str()),
            ("client_id", CLIENT_ID),
            ("lti_deployment_id", DEPLOYMENT_ID),
            ("lti_message_hint", hint.as_str()),
        ]
        .iter()
        .map(|(n, v)| format!("{n}={}", percent_encode(v.as_bytes())))
        .collect();
        let mut resp = respond::see_other(&format!("{}?{}", self.login_url, query.join("&")));
        *resp.status_mut() = StatusCode::FOUND;
        resp
    }

    /// `GET /lti13/auth`: checks the authorization request and answers the
    /// self-posting form with the id_token.
    pub fn authorize(&self, query: &[(String, String)]) -> Response<Body> {
        match self.id_token_form(query) {
            Ok(page) => respond::html(StatusCode::OK, page),
            Err(why) => error_page(
                Site::Lms,
                StatusCode::BAD_REQUEST,
                &format!("The LTI 1.3 authorization request was refused: {why}"),
            ),
        }
    }

    fn id_token_form(&self, query: &[(String, String)]) -> Result<String, String> {
        let get = |name: &str| {
            query
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| format!("{name} is missing"))
        };
        for (name, expected) in [
            ("scope", "openid"),
            ("response_type", "id_token"),
            ("response_mode", "form_post"),
            ("prompt", "none"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", self.launch_url.as_str()),
        ] {
            let got = get(name)?;
            if got != expected {
                return Err(format!("{name} is {got:?}, not {expected:?}"));
            }
        }
        let state = get("state")?;
        let nonce = get("nonce")?;
        let login_hint = get("login_hint")?;
        let hint = {
            let mut hints = self.hints.lock().unwrap_or_else(|e| e.into_inner());
            hints
                .remove(get("lti_message_hint")?)
                .filter(|h| h.expires > unix_now())
                .ok_or("the lti_message_hint is unknown or was used already")?
        };
        if hint.user != login_hint {
            return Err("the login_hint is not the hint's learner".into());
        }
        let learner = super::learner(&hint.user).ok_or("unknown learner")?;
        let token = self
            .key
            .sign(&self.claims(learner, &hint.course, nonce))
            .map_err(|e| e.to_string())?;
        Ok(format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Launching…</title></head>\
             <body style=\"font-family:system-ui,sans-serif;color:#555;padding:1rem\">\
             <form id=\"ltiLaunch\" method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"id_token\" value=\"{token}\">\
             <input type=\"hidden\" name=\"state\" value=\"{state}\">\
             <p>Launching the tool (LTI 1.3)… <noscript><button type=\"submit\">Continue</button></noscript></p></form>\
             <script>document.getElementById('ltiLaunch').submit();</script></body></html>\n",
            action = html_escape(&self.launch_url),
            token = html_escape(&token),
            state = html_escape(state),
        ))
    }

    /// The id_token's claims for a learner launch of `course`.
    fn claims(&self, l: &Learner, course: &str, nonce: &str) -> serde_json::Value {
        const LTI: &str = "https://purl.imsglobal.org/spec/lti/claim/";
        let now = unix_now();
        let mut claims = serde_json::json!({
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "sub": l.user_id,
            "exp": now + 300,
            "iat": now,
            "nonce": nonce,
            "given_name": l.given,
            "family_name": l.family,
            "name": l.full_name(),
            "email": l.email,
        });
        if let Some(map) = claims.as_object_mut() {
            for (name, value) in [
                ("message_type", serde_json::json!("LtiResourceLinkRequest")),
                ("version", serde_json::json!("1.3.0")),
                ("deployment_id", serde_json::json!(DEPLOYMENT_ID)),
                ("target_link_uri", serde_json::json!(self.launch_url)),
                (
                    "resource_link",
                    serde_json::json!({"id": format!("{course}-tool"), "title": "Demo learning platform"}),
                ),
                (
                    "roles",
                    serde_json::json!([
                        "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"
                    ]),
                ),
                (
                    "context",
                    serde_json::json!({"id": course, "label": course, "title": COURSE_TITLE}),
                ),
                ("custom", serde_json::json!({ "course": course })),
                (
                    "launch_presentation",
                    serde_json::json!({"document_target": "iframe", "return_url": format!("{}/", self.issuer)}),
                ),
            ] {
                map.insert(format!("{LTI}{name}"), value);
            }
            map.insert(
                "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint".into(),
                serde_json::json!({
                    "scope": [SCORE_SCOPE],
                    "lineitem": self.lineitem_url(course),
                    "lineitems": format!("{}/lti13/lineitems/{course}", self.issuer),
                }),
            );
        }
        claims
    }

    /// The line item of a course's grade.
    pub fn lineitem_url(&self, course: &str) -> String {
        format!("{}/lti13/lineitems/{course}/lineitem", self.issuer)
    }

    /// The token endpoint (and the audience a client assertion names).
    fn token_url(&self) -> String {
        format!("{}/lti13/token", self.issuer)
    }

    /// `POST /lti13/token`: a bearer token for a valid client assertion.
    pub async fn token(&self, form: &[(String, String)]) -> Response<Body> {
        match self.issue_token(form).await {
            Ok(token) => respond::json(
                StatusCode::OK,
                &serde_json::json!({"access_token": token, "token_type": "Bearer",
                    "expires_in": TOKEN_TTL, "scope": SCORE_SCOPE}),
            ),
            Err((status, error, why)) => {
                tracing::warn!(error, why = %why, "demo LMS: token request refused");
                respond::json(
                    status,
                    &serde_json::json!({"error": error, "error_description": why}),
                )
            }
        }
    }

    async fn issue_token(
        &self,
        form: &[(String, String)],
    ) -> Result<String, (StatusCode, &'static str, String)> {
        let get = |name: &str| {
            form.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let bad = |why: String| (StatusCode::BAD_REQUEST, "invalid_request", why);
        for (name, want) in [
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
        ] {
            if get(name) != Some(want) {
                return Err(bad(format!("{name} is not {want}")));
            }
        }
        if !get("scope").is_some_and(|s| s.split(' ').any(|s| s == SCORE_SCOPE)) {
            return Err((
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "the score scope is required".into(),
            ));
        }
        let unauthorized = |why: String| (StatusCode::UNAUTHORIZED, "invalid_client", why);
        let jws = crate::lti::jose::CompactJws::parse(get("client_assertion").unwrap_or(""))
            .map_err(|e| unauthorized(e.to_string()))?;
        let document = self
            .client
            .get(&self.tool_jwks_url)
            .send()
            .await
            .map_err(|e| unauthorized(format!("cannot fetch the tool's keys: {e}")))?
            .bytes()
            .await
            .map_err(|e| unauthorized(format!("cannot read the tool's keys: {e}")))?;
        let keys = crate::lti::jose::JwkSet::parse(&document)
            .map_err(|e| unauthorized(format!("the tool's keys: {e}")))?;
        jws.verify(&keys).map_err(|e| unauthorized(e.to_string()))?;
        let claims = jws.claims();
        let now = unix_now();
        let str_claim = |n: &str| claims.get(n).and_then(|v| v.as_str());
        if str_claim("iss") != Some(CLIENT_ID) || str_claim("sub") != Some(CLIENT_ID) {
            return Err(unauthorized("iss and sub must be the client id".into()));
        }
        if str_claim("aud") != Some(self.token_url().as_str()) {
            return Err(unauthorized("aud is not this token endpoint".into()));
        }
        if claims
            .get("exp")
            .and_then(|v| v.as_u64())
            .is_none_or(|exp| exp <= now)
        {
            return Err(unauthorized("the assertion expired".into()));
        }
        let jti = str_claim("jti").ok_or_else(|| unauthorized("no jti".into()))?;
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if !tokens.1.insert(jti.to_string()) {
            return Err(unauthorized("the jti was used before".into()));
        }
        let token = random_token();
        tokens.0.retain(|_, exp| *exp > now);
        tokens.0.insert(token.clone(), now + TOKEN_TTL);
        Ok(token)
    }

    /// `POST /lti13/lineitems/{course}/lineitem/scores`: the score, when
    /// the request is one a platform accepts; else the status and why.
    pub fn score(
        &self,
        course: &str,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<Score, (StatusCode, &'static str)> {
        let refuse = |status: StatusCode, why: &'static str| (status, why);
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let now = unix_now();
        let valid = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .get(bearer)
            .is_some_and(|exp| *exp > now);
        if !valid {
            return Err(refuse(StatusCode::UNAUTHORIZED, "invalid or expired token"));
        }
        let media = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if media != "application/vnd.ims.lis.v1.score+json" {
            return Err(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a score is application/vnd.ims.lis.v1.score+json",
            ));
        }
        let score: serde_json::Value = serde_json::from_slice(body)
            .map_err(|_| refuse(StatusCode::BAD_REQUEST, "the score is not JSON"))?;
        let user = score["userId"]
            .as_str()
            .filter(|u| super::learner(u).is_some());
        let given = score["scoreGiven"].as_f64();
        let maximum = score["scoreMaximum"].as_f64().filter(|m| *m > 0.0);
        match (user, given, maximum) {
            (Some(user), Some(given), Some(maximum)) if given >= 0.0 && given <= maximum => {
                Ok(Score {
                    course: course.to_string(),
                    user: user.to_string(),
                    score: given / maximum,
                })
            }
            _ => Err(refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "userId, scoreGiven and scoreMaximum are required (an enrolled learner, 0 to the maximum)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lti::jose::{CompactJws, JwkSet};

    fn pairs(location: &str) -> Vec<(String, String)> {
        let query = location.split_once('?').map(|(_, q)| q).unwrap_or("");
        crate::lti::encode::parse_form(query.as_bytes()).unwrap()
    }

    #[test]
    fn a_login_leads_to_a_signed_id_token_once() {
        let p = Platform13::new("http://127.0.0.1:8000", "http://localhost:8080").unwrap();
        let learner = &super::super::LEARNERS[0];
        let resp = p.start_login(learner);
        assert_eq!(resp.status(), StatusCode::FOUND);
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        assert!(location.starts_with("http://localhost:8080/lti/1.3/login?"));
        let login = pairs(&location);
        let get = |n: &str| login.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(get("iss"), "http://127.0.0.1:8000");
        let hint = get("lti_message_hint");

        let mut auth = vec![
            ("scope", "openid"),
            ("response_type", "id_token"),
            ("response_mode", "form_post"),
            ("prompt", "none"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", "http://localhost:8080/lti/1.3/launch"),
            ("state", "s1"),
            ("nonce", "n1"),
            ("login_hint", learner.user_id),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect::<Vec<_>>();
        auth.push(("lti_message_hint".into(), hint));
        let page = p.id_token_form(&auth).unwrap();
        let token = page
            .split("name=\"id_token\" value=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let jws = CompactJws::parse(token).unwrap();
        let keys =
            JwkSet::parse(p.key.public_jwk().to_jwks_json(&[]).to_string().as_bytes()).unwrap();
        assert!(jws.verify(&keys).is_ok());
        assert_eq!(jws.claims()["nonce"], "n1");
        assert_eq!(jws.claims()["sub"], learner.user_id);
        // The hint is spent.
        assert!(p.id_token_form(&auth).unwrap_err().contains("used already"));
    }
}
