//! A fake LTI 1.3 platform: an RSA key of its own, a JWKS server on
//! loopback that counts its fetches, and id_tokens signed by this file's
//! own code (`ring` directly, not ltigate's signer), so that what ltigate
//! verifies was not made by ltigate.
//!
//! The JWKS server serves the keys in [`Platform::set_keys`] (the
//! platform's current key by default), `503` while [`Platform::set_down`]
//! holds, after an optional delay ([`Platform::set_delay`]).

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

/// The platform: its key and its JWKS server.
pub struct Platform {
    pub key: Key,
    pub addr: SocketAddr,
    fetches: Arc<AtomicUsize>,
    keys: Arc<Mutex<Value>>,
    down: Arc<AtomicBool>,
    delay: Arc<Mutex<Duration>>,
}

impl Platform {
    /// A platform with the test platform key, serving its JWKS.
    pub async fn start() -> Platform {
        let key = Key::from_pem_file("keys/platform-test-key.pem", "platform-key-1");
        let keys = Arc::new(Mutex::new(json!({ "keys": [key.jwk()] })));
        let fetches = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        {
            let (keys, fetches, down, delay) =
                (keys.clone(), fetches.clone(), down.clone(), delay.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let (keys, fetches, down, delay) =
                        (keys.clone(), fetches.clone(), down.clone(), delay.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let (keys, fetches, down, delay) =
                                (keys.clone(), fetches.clone(), down.clone(), delay.clone());
                            async move {
                                Ok::<_, Infallible>(
                                    serve(req, &keys, &fetches, &down, &delay).await,
                                )
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        }
        Platform {
            key,
            addr,
            fetches,
            keys,
            down,
            delay,
        }
    }

    pub fn jwks_url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    /// JWKS fetches so far.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Serves this JWKS document from now on.
    pub fn set_keys(&self, jwks: Value) {
        *self.keys.lock().unwrap() = jwks;
    }

    /// Answers 503 while `down`.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Waits this long before answering.
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// The `[[platforms]]` entry of this platform (a tenant of its own,
    /// `lms_id = "plat"`), plus `extra` keys.
    pub fn registration(&self, extra: &str) -> String {
        format!(
            r#"
[[platforms]]
name = "platform"
issuer = "{ISSUER}"
client_id = "{CLIENT_ID}"
deployment_ids = ["{DEPLOYMENT}"]
auth_login_url = "{AUTH_URL}"
auth_token_url = "https://platform.example/token"
jwks_url = "{jwks}"
{extra}
"#,
            jwks = self.jwks_url()
        )
    }
}

async fn serve(
    req: http::Request<hyper::body::Incoming>,
    keys: &Mutex<Value>,
    fetches: &AtomicUsize,
    down: &AtomicBool,
    delay: &Mutex<Duration>,
) -> Response<Full<Bytes>> {
    let wait = *delay.lock().unwrap();
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    if req.uri().path() != "/jwks" {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    fetches.fetch_add(1, Ordering::SeqCst);
    if down.load(Ordering::SeqCst) {
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    let body = keys.lock().unwrap().to_string();
    Response::builder()
        .header("content-type", "application/json")
        .header("cache-control", "max-age=3600")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
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
