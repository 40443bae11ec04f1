//! A fake LTI 1.3 platform: an RSA key of its own, a JWKS server on
//! loopback that counts its fetches, and id_tokens signed by this file's
//! own code (`ring` directly, not ltigate's signer), so that what ltigate
//! verifies was not made by ltigate; and the AGS side (DESIGN §13): a token
//! endpoint that verifies the tool's client assertion against the tool's
//! published JWKS, and scores endpoints that check the bearer, the content
//! type, the body and the increasing timestamps.
//!
//! The JWKS server serves the keys in [`Platform::set_keys`] (the
//! platform's current key by default), `503` while [`Platform::set_down`]
//! holds, after an optional delay ([`Platform::set_delay`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use ring::signature::RsaKeyPair;
use serde_json::{json, Value};

pub const ISSUER: &str = "https://platform.example";
pub const CLIENT_ID: &str = "client-1";
pub const DEPLOYMENT: &str = "dep-1";
pub const AUTH_URL: &str = "https://platform.example/auth";

/// One RSA key of the platform and its `kid`.
pub struct Key {
    pair: RsaKeyPair,
    pub kid: String,
}

impl Key {
    /// A key from a PKCS#8 PEM file under `tests/`.
    pub fn from_pem_file(path: &str, kid: &str) -> Key {
        let pem = std::fs::read_to_string(format!("{}/tests/{path}", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        Key {
            pair: RsaKeyPair::from_pkcs8(&der).unwrap(),
            kid: kid.to_string(),
        }
    }

    /// The public JWK (no `alg`: RSA keys without one are accepted).
    pub fn jwk(&self) -> Value {
        let public: ring::rsa::PublicKeyComponents<Vec<u8>> = self.pair.public().into();
        let (n, e) = (public.n, public.e);
        json!({
            "kty": "RSA",
            "kid": self.kid,
            "use": "sig",
            "n": URL_SAFE_NO_PAD.encode(n),
            "e": URL_SAFE_NO_PAD.encode(e),
        })
    }

    /// A compact JWS of `header` and `claims`, RS256.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// An id_token: the standard header with this key's `kid`.
    pub fn id_token(&self, claims: &Value) -> String {
        self.sign(
            &json!({"alg": "RS256", "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }
}

/// What the fake platform's endpoints share.
#[derive(Default)]
struct Shared {
    keys: Mutex<Value>,
    fetches: AtomicUsize,
    down: AtomicBool,
    delay: Mutex<Duration>,
    ags: Mutex<Ags>,
}

/// The platform's AGS side: its token endpoint and its line items' scores
/// endpoints, checking what a real platform checks.
#[derive(Default)]
pub struct Ags {
    /// The tool's published key set (fetched by the test from ltigate's
    /// `/lti/1.3/jwks.json`): client assertions are verified against it.
    pub tool_jwks: Option<Value>,
    /// The `aud` a client assertion must carry, exactly.
    pub audience: String,
    /// Token requests received (valid or not).
    pub token_requests: usize,
    /// `jti`s seen: a repeated one is refused.
    pub jtis: HashSet<String>,
    /// Tokens issued and not revoked.
    pub tokens: HashSet<String>,
    /// Answers the token endpoint gives before it issues again (status,
    /// OAuth error).
    pub token_failures: VecDeque<(u16, String)>,
    /// Statuses the scores endpoint answers before it records again.
    pub score_failures: VecDeque<u16>,
    /// Scores recorded: (path and query, body).
    pub scores: Vec<(String, Value)>,
    /// Scores refused by the platform's own checks: why.
    pub refused: Vec<String>,
    /// The last timestamp recorded per (line item, user).
    last: HashMap<(String, String), String>,
}

/// The platform: its key and its JWKS, token and scores endpoints.
pub struct Platform {
    pub key: Key,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Platform {
    /// A platform with the test platform key, serving its JWKS.
    pub async fn start() -> Platform {
        let key = Key::from_pem_file("keys/platform-test-key.pem", "platform-key-1");
        let shared = Arc::new(Shared {
            keys: Mutex::new(json!({ "keys": [key.jwk()] })),
            ags: Mutex::new(Ags {
                audience: TOKEN_URL_PATH.to_string(),
                ..Ags::default()
            }),
            ..Shared::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        shared.ags.lock().unwrap().audience = format!("http://{addr}{TOKEN_URL_PATH}");
        {
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let shared = shared.clone();
                            async move { Ok::<_, Infallible>(serve(req, &shared).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        }
        Platform { key, addr, shared }
    }

    pub fn jwks_url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    /// The token endpoint (also the token audience).
    pub fn token_url(&self) -> String {
        format!("http://{}{TOKEN_URL_PATH}", self.addr)
    }

    /// A Moodle-style line item URL (its query after the path).
    pub fn lineitem_url(&self, id: u32) -> String {
        format!("http://{}/lineitems/{id}/lineitem?type_id=2", self.addr)
    }

    /// JWKS fetches so far.
    pub fn fetches(&self) -> usize {
        self.shared.fetches.load(Ordering::SeqCst)
    }

    /// Serves this JWKS document from now on.
    pub fn set_keys(&self, jwks: Value) {
        *self.shared.keys.lock().unwrap() = jwks;
    }

    /// Answers 503 while `down`.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Waits this long before answering.
    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    /// The AGS side's state, to read or change.
    pub fn ags(&self) -> std::sync::MutexGuard<'_, Ags> {
        self.shared.ags.lock().unwrap()
    }

    /// The `[[platforms]]` entry of this platform, plus `extra` keys.
    pub fn registration(&self, extra: &str) -> String {
        format!(
            r#"
[[platforms]]
name = "platform"
issuer = "{ISSUER}"
client_id = "{CLIENT_ID}"
deployment_ids = ["{DEPLOYMENT}"]
auth_login_url = "{AUTH_URL}"
auth_token_url = "{token}"
jwks_url = "{jwks}"
{extra}
"#,
            jwks = self.jwks_url(),
            token = self.token_url(),
        )
    }
}

/// The token endpoint's path.
const TOKEN_URL_PATH: &str = "/token";

fn answer(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn serve(
    req: http::Request<hyper::body::Incoming>,
    shared: &Shared,
) -> Response<Full<Bytes>> {
    let wait = *shared.delay.lock().unwrap();
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let path = req.uri().path().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    if path == TOKEN_URL_PATH && req.method() == http::Method::POST {
        let (parts, body) = req.into_parts();
        let body = http_body_util::BodyExt::collect(body)
            .await
            .unwrap()
            .to_bytes();
        return token_endpoint(&parts.headers, &body, shared);
    }
    if path.ends_with("/scores") && req.method() == http::Method::POST {
        let (parts, body) = req.into_parts();
        let body = http_body_util::BodyExt::collect(body)
            .await
            .unwrap()
            .to_bytes();
        return scores_endpoint(&path_and_query, &parts.headers, &body, shared);
    }
    if path != "/jwks" {
        return answer(StatusCode::NOT_FOUND, json!({"error": "not_found"}));
    }
    shared.fetches.fetch_add(1, Ordering::SeqCst);
    if shared.down.load(Ordering::SeqCst) {
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    let body = shared.keys.lock().unwrap().to_string();
    Response::builder()
        .header("content-type", "application/json")
        .header("cache-control", "max-age=3600")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// Verifies an RS256 compact JWS against a JWKS with `ring` directly: the
/// claims, or why not.
fn verify_jws(token: &str, jwks: &Value) -> Result<Value, String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, c, s] = parts.as_slice() else {
        return Err("not a compact JWS".into());
    };
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|e| e.to_string());
    let header: Value = serde_json::from_slice(&decode(h)?).map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {}", header["alg"]));
    }
    let kid = header["kid"].as_str().ok_or("no kid")?;
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid))
        .ok_or_else(|| format!("kid {kid} is not in the tool's JWKS"))?;
    let n = decode(jwk["n"].as_str().ok_or("no n")?)?;
    let e = decode(jwk["e"].as_str().ok_or("no e")?)?;
    ring::signature::RsaPublicKeyComponents { n: &n, e: &e }
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            format!("{h}.{c}").as_bytes(),
            &decode(s)?,
        )
        .map_err(|_| "bad signature".to_string())?;
    serde_json::from_slice(&decode(c)?).map_err(|e| e.to_string())
}

fn token_endpoint(
    headers: &http::HeaderMap,
    body: &[u8],
    shared: &Shared,
) -> Response<Full<Bytes>> {
    let mut ags = shared.ags.lock().unwrap();
    ags.token_requests += 1;
    let refuse = |why: String| {
        answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_request", "error_description": why}),
        )
    };
    if headers.get("content-type").and_then(|v| v.to_str().ok())
        != Some("application/x-www-form-urlencoded")
    {
        return refuse("not a form".into());
    }
    let form: HashMap<String, String> = url_decode(body);
    for (name, value) in [
        ("grant_type", "client_credentials"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        (
            "scope",
            "https://purl.imsglobal.org/spec/lti-ags/scope/score",
        ),
    ] {
        if form.get(name).map(String::as_str) != Some(value) {
            return refuse(format!("{name} is {:?}", form.get(name)));
        }
    }
    if let Some((status, error)) = ags.token_failures.pop_front() {
        return answer(
            StatusCode::from_u16(status).unwrap(),
            json!({"error": error}),
        );
    }
    let Some(jwks) = ags.tool_jwks.clone() else {
        return refuse("the test did not give the tool's JWKS".into());
    };
    let claims = match verify_jws(
        form.get("client_assertion")
            .map(String::as_str)
            .unwrap_or(""),
        &jwks,
    ) {
        Ok(c) => c,
        Err(why) => {
            return answer(
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid_client", "error_description": why}),
            )
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let checks = [
        (claims["iss"] == CLIENT_ID, "iss is not the client id"),
        (claims["sub"] == CLIENT_ID, "sub is not the client id"),
        (
            claims["aud"].as_str() == Some(ags.audience.as_str()),
            "aud is not exactly the token audience string",
        ),
        (
            claims["exp"].as_u64().is_some_and(|e| e > now)
                && claims["iat"].as_u64().is_some_and(|i| i <= now + 5)
                && claims["exp"].as_u64().unwrap_or(0) <= claims["iat"].as_u64().unwrap_or(0) + 300,
            "exp is not within 5 minutes of iat, or passed",
        ),
    ];
    for (ok, why) in checks {
        if !ok {
            return answer(
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid_client", "error_description": why}),
            );
        }
    }
    let Some(jti) = claims["jti"].as_str().map(str::to_string) else {
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client", "error_description": "no jti"}),
        );
    };
    if !ags.jtis.insert(jti) {
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client", "error_description": "jti seen before"}),
        );
    }
    let token = format!("tok-{}", ags.token_requests);
    ags.tokens.insert(token.clone());
    answer(
        StatusCode::OK,
        json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600,
            "scope": "https://purl.imsglobal.org/spec/lti-ags/scope/score"}),
    )
}

fn scores_endpoint(
    path_and_query: &str,
    headers: &http::HeaderMap,
    body: &[u8],
    shared: &Shared,
) -> Response<Full<Bytes>> {
    let mut ags = shared.ags.lock().unwrap();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !ags.tokens.contains(bearer) {
        return answer(StatusCode::UNAUTHORIZED, json!({"error": "invalid_token"}));
    }
    if let Some(status) = ags.score_failures.pop_front() {
        return answer(
            StatusCode::from_u16(status).unwrap(),
            json!({"error": format!("the platform says {status}")}),
        );
    }
    fn refuse(ags: &mut Ags, why: String) -> Response<Full<Bytes>> {
        ags.refused.push(why.clone());
        answer(StatusCode::BAD_REQUEST, json!({"error": why}))
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok())
        != Some("application/vnd.ims.lis.v1.score+json")
    {
        return refuse(
            &mut ags,
            format!("content type {:?}", headers.get("content-type")),
        );
    }
    let Ok(score) = serde_json::from_slice::<Value>(body) else {
        return refuse(&mut ags, "not JSON".into());
    };
    let ts = score["timestamp"].as_str().unwrap_or("").to_string();
    let well_formed = score["userId"].is_string()
        && score["scoreGiven"]
            .as_f64()
            .is_some_and(|s| (0.0..=1.0).contains(&s))
        && score["scoreMaximum"] == 1
        && score["activityProgress"] == "Completed"
        && score["gradingProgress"] == "FullyGraded"
        && humantime::parse_rfc3339(&ts).is_ok()
        && ts.len() == "2025-12-08T01:19:49.123Z".len();
    if !well_formed {
        return refuse(&mut ags, format!("malformed score {score}"));
    }
    let lineitem = path_and_query.replace("/scores", "");
    let user = score["userId"].as_str().unwrap_or("").to_string();
    let key = (lineitem, user);
    if let Some(last) = ags.last.get(&key).cloned() {
        if ts <= last {
            return refuse(&mut ags, format!("timestamp {ts} is not after {last}"));
        }
    }
    ags.last.insert(key, ts);
    ags.scores.push((path_and_query.to_string(), score));
    answer(StatusCode::OK, json!({}))
}

/// A decoded `application/x-www-form-urlencoded` body.
fn url_decode(body: &[u8]) -> HashMap<String, String> {
    ltigate::lti::encode::parse_form(body)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// Resource-link claims for a learner launch of `course` (custom claim),
/// with `nonce` from the login, valid now.
pub fn claims(nonce: &str, target_link_uri: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "sub": "learner-1",
        "exp": now + 300,
        "iat": now,
        "nonce": nonce,
        "given_name": "Grace",
        "family_name": "Hopper",
        "email": "grace@example.org",
        "https://purl.imsglobal.org/spec/lti/claim/message_type": "LtiResourceLinkRequest",
        "https://purl.imsglobal.org/spec/lti/claim/version": "1.3.0",
        "https://purl.imsglobal.org/spec/lti/claim/deployment_id": DEPLOYMENT,
        "https://purl.imsglobal.org/spec/lti/claim/target_link_uri": target_link_uri,
        "https://purl.imsglobal.org/spec/lti/claim/resource_link": {"id": "rl-1"},
        "https://purl.imsglobal.org/spec/lti/claim/roles": [
            "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"
        ],
        "https://purl.imsglobal.org/spec/lti/claim/context": {"id": "ctx-1"},
        "https://purl.imsglobal.org/spec/lti/claim/custom": {"course": "C-13"},
    })
}
