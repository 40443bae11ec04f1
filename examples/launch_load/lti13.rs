//! `launch_load load13`: LTI 1.3 launches, the load generator playing the
//! platform.
//!
//! The platform's part is an RSA key (`tests/keys/platform-test-key.pem`,
//! the tests' fake platform's key), its JWKS served on `JWKS_ADDR` (a tiny
//! hyper server, `Cache-Control: max-age=3600`: ltigate fetches it once and
//! keeps it), and one id_token per launch signed with `ring` directly.
//! Signing RS256 costs the generator ~1 ms a token, more than ltigate's
//! verification, so each run prepares its launches before the timed part:
//!
//! 1. **warm-up**: one login and one launch (ltigate fetches the JWKS here
//!    on its first run; the registration is checked);
//! 2. **logins**: `N` logins at `CONCURRENCY` connections, each keeping the
//!    state, the nonce and the state cookie from ltigate's 302; timed, and
//!    printed as a `logins accepted=… rate=…` line (logins/s);
//! 3. **signing**: one id_token for each login, learner `sub`s cycling
//!    through `LEARNERS` ids, on every core (the process is allowed on all
//!    CPUs for this step only, then pinned back: nothing is timed meanwhile);
//! 4. **launches**: `POST /lti/1.3/launch` of the prepared forms with their
//!    state cookies at `CONCURRENCY` connections for `SECONDS` — exactly
//!    like `load` — and the same result line, plus `prepared=N` and
//!    `exhausted=0|1`.
//!
//! `N` = `RATE_BOUND` × `SECONDS` + `CONCURRENCY`: enough launches for the
//! whole run at any rate up to `RATE_BOUND`, which the caller sets well
//! above the rate it expects (`load.sh`: 10,000/s, above the fastest LTI 1.1
//! launch rate measured on the benchmark machine, ~8,200/s; a 1.3 launch
//! does what a 1.1 launch does plus an RSA verification). States live
//! `lti13.state_ttl` (10 min) and tokens 5 min, so preparing ahead is safe.
//! Should the launches run out before `SECONDS` all the same, the run ends
//! there and says so (`exhausted=1`); its rate, over the shorter time, is
//! still right.
//!
//! With `SERVER_PID`, each line also has `server_ticks`: the CPU clock ticks
//! that process used during that step alone.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use ltigate::lti::encode::{form_encode, parse_form};
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde_json::json;

use crate::{client, drive, unix_now, Answer, HttpClient, Limit};

/// The platform's identity; `benches/load.sh` registers it with the same
/// values (its `[[platforms]]` entry).
pub const ISSUER: &str = "https://platform.bench.test";
/// The client id the platform gave the tool.
pub const CLIENT_ID: &str = "bench-client";
/// The one deployment.
pub const DEPLOYMENT: &str = "bench-deployment";
/// The `kid` of the platform's key, in its JWKS and its tokens' headers.
const KID: &str = "bench-platform-key";
/// The platform's private key (PKCS#8 PEM), shared with the tests.
const KEY_PEM: &str = include_str!("../../tests/keys/platform-test-key.pem");
/// Prefix of ltigate's state cookie names (DESIGN §13).
const STATE_COOKIE: &str = "__Host-ltigate_s_";

/// One `load13` run, as given on the command line.
pub struct Run {
    /// ltigate's public listener.
    pub addr: SocketAddr,
    /// ltigate's `server.public_url`, without a trailing `/`.
    pub public_url: String,
    /// Where to serve the platform's JWKS (`/jwks`).
    pub jwks_addr: SocketAddr,
    pub concurrency: usize,
    pub seconds: f64,
    pub learners: u64,
    /// Launches per second the run prepares for (module doc).
    pub rate_bound: f64,
    /// ltigate's pid, to count its CPU per step.
    pub server_pid: Option<u32>,
}

/// The platform's signing key.
struct Platform {
    pair: RsaKeyPair,
    /// The base64url JWS header, with [`KID`].
    header: String,
    rng: ring::rand::SystemRandom,
}

impl Platform {
    fn new() -> anyhow::Result<Self> {
        let b64: String = KEY_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = STANDARD.decode(b64).context("the platform key's PEM")?;
        let pair =
            RsaKeyPair::from_pkcs8(&der).map_err(|e| anyhow::anyhow!("the platform key: {e}"))?;
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": KID}).to_string();
        Ok(Platform {
            pair,
            header: URL_SAFE_NO_PAD.encode(header),
            rng: ring::rand::SystemRandom::new(),
        })
    }

    /// The JWKS document: the public key, no `alg` (RSA keys without one
    /// are accepted).
    fn jwks(&self) -> String {
        let public: ring::rsa::PublicKeyComponents<Vec<u8>> = self.pair.public().into();
        json!({"keys": [{
            "kty": "RSA",
            "kid": KID,
            "use": "sig",
            "n": URL_SAFE_NO_PAD.encode(public.n),
            "e": URL_SAFE_NO_PAD.encode(public.e),
        }]})
        .to_string()
    }

    /// A compact RS256 JWS of `claims`.
    fn id_token(&self, claims: &serde_json::Value) -> anyhow::Result<String> {
        let input = format!(
            "{}.{}",
            self.header,
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.pair.public().modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &self.rng, input.as_bytes(), &mut sig)
            .map_err(|_| anyhow::anyhow!("RSA signing failed"))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// The claims of a learner's resource-link launch (those of the tests' fake
/// platform, `tests/support/platform.rs`), valid for 5 minutes.
fn claims(sub: &str, nonce: &str, target_link_uri: &str, now: u64) -> serde_json::Value {
    json!({
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "sub": sub,
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

/// Serves the JWKS at `/jwks` (404 elsewhere) until the process ends.
async fn serve_jwks(listener: tokio::net::TcpListener, jwks: Bytes) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let jwks = jwks.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let mut resp = Response::new(Full::new(Bytes::new()));
                if req.uri().path() == "/jwks" {
                    *resp.body_mut() = Full::new(jwks.clone());
                    let h = resp.headers_mut();
                    h.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    h.insert(
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("max-age=3600"),
                    );
                } else {
                    *resp.status_mut() = StatusCode::NOT_FOUND;
                }
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// What one login brought back.
struct Login {
    state: String,
    nonce: String,
    /// `name=value` of the state cookie.
    cookie: String,
}

/// A launch ready to post.
struct Prepared {
    body: Bytes,
    cookie: HeaderValue,
    /// The state cookie's name (the launch deletes it; the session cookie
    /// is the other one).
    cookie_name: String,
}

/// The requests' fixed parts.
struct Urls {
    login: Uri,
    launch: Uri,
    /// The target link URI the login names and the tokens claim.
    target: String,
}

impl Urls {
    fn new(run: &Run) -> anyhow::Result<Self> {
        let target = format!("{}/lti/1.3/launch", run.public_url);
        let query = form_encode(&[
            ("iss", ISSUER),
            ("login_hint", "bench-hint"),
            ("target_link_uri", &target),
            ("client_id", CLIENT_ID),
            ("lti_deployment_id", DEPLOYMENT),
        ]);
        Ok(Urls {
            login: format!("http://{}/lti/1.3/login?{query}", run.addr).parse()?,
            launch: format!("http://{}/lti/1.3/launch", run.addr).parse()?,
            target,
        })
    }
}

/// One login: a 302 naming `state` and `nonce`, with a state cookie.
async fn login(client: &HttpClient, urls: &Urls) -> anyhow::Result<Answer<Login>> {
    let req = Request::builder()
        .uri(urls.login.clone())
        .body(Full::new(Bytes::new()))?;
    let resp = client.request(req).await?;
    let (parts, body) = resp.into_parts();
    body.collect().await?;
    if parts.status != StatusCode::FOUND {
        return Ok(Answer::Refused);
    }
    let query = parts
        .headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| l.split_once('?'))
        .map(|(_, q)| q)
        .unwrap_or("");
    let pairs = parse_form(query.as_bytes()).unwrap_or_default();
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let cookie = parts
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(STATE_COOKIE))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned);
    Ok(match (param("state"), param("nonce"), cookie) {
        (Some(state), Some(nonce), Some(cookie)) => Answer::Accepted(Login {
            state,
            nonce,
            cookie,
        }),
        _ => Answer::Refused,
    })
}

/// The launch of `login` by learner `sub`: its form and state cookie.
fn prepare(platform: &Platform, urls: &Urls, login: &Login, sub: &str) -> anyhow::Result<Prepared> {
    let token = platform.id_token(&claims(sub, &login.nonce, &urls.target, unix_now()))?;
    let body = form_encode(&[("id_token", &token), ("state", &login.state)]);
    let cookie_name = login
        .cookie
        .split_once('=')
        .map(|(n, _)| n.to_owned())
        .unwrap_or_default();
    Ok(Prepared {
        body: Bytes::from(body),
        cookie: HeaderValue::from_str(&login.cookie)?,
        cookie_name,
    })
}

/// One launch: accepted when answered 303 with a session cookie (a
/// `Set-Cookie` other than the state cookie's deletion).
async fn launch(client: &HttpClient, urls: &Urls, p: &Prepared) -> anyhow::Result<Answer<()>> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(urls.launch.clone())
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        )
        .header(header::COOKIE, p.cookie.clone())
        .body(Full::new(p.body.clone()))?;
    let resp = client.request(req).await?;
    let (parts, body) = resp.into_parts();
    body.collect().await?;
    let session = parts
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| c.split(';').next()?.split_once('='))
        .any(|(name, value)| name != p.cookie_name && !value.is_empty());
    Ok(if parts.status == StatusCode::SEE_OTHER && session {
        Answer::Accepted(())
    } else {
        Answer::Refused
    })
}

/// Signs a launch for each login, on every core the process may use;
/// login `i` is learner `i % learners`.
fn prepare_all(
    platform: &Platform,
    urls: &Urls,
    logins: &[Login],
    learners: u64,
) -> anyhow::Result<Vec<Prepared>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = logins.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = logins
            .chunks(chunk)
            .enumerate()
            .map(|(k, part)| {
                s.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(j, login)| {
                            let sub = format!("learner-{}", (k * chunk + j) as u64 % learners);
                            prepare(platform, urls, login, &sub)
                        })
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(logins.len());
        for w in workers {
            match w.join() {
                Ok(part) => all.extend(part?),
                Err(_) => bail!("a signing thread panicked"),
            }
        }
        Ok(all)
    })
}

/// The CPUs this process may run on, as `taskset -c` writes them.
fn allowed_cpus() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
}

/// Sets the CPU affinity of every thread of this process.
fn set_cpus(list: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", list, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("taskset")?;
    if !status.success() {
        bail!("taskset -a -p -c {list} failed: {status}");
    }
    Ok(())
}

/// Runs `work` allowed on every online CPU, then puts the process's CPU
/// affinity back (`load.sh` pins the load generator to its own core for the
/// timed steps). Without `taskset`, `work` runs where the process may.
fn on_every_cpu<T>(work: impl FnOnce() -> T) -> anyhow::Result<T> {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|s| s.trim().to_owned())
        .ok();
    let pinned = allowed_cpus();
    let widened = match (&online, &pinned) {
        (Some(all), Some(now)) if all != now => match set_cpus(all) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("launch_load: signing on the pinned CPUs only: {e:#}");
                false
            }
        },
        _ => false,
    };
    let out = work();
    if let (true, Some(now)) = (widened, &pinned) {
        set_cpus(now).context("pinning the load generator back")?;
    }
    Ok(out)
}

/// One `load13` run (module doc).
pub async fn run(run: Run) -> anyhow::Result<()> {
    let platform = Arc::new(Platform::new()?);
    let listener = tokio::net::TcpListener::bind(run.jwks_addr)
        .await
        .with_context(|| format!("JWKS_ADDR {}", run.jwks_addr))?;
    tokio::spawn(serve_jwks(listener, Bytes::from(platform.jwks())));
    let urls = Arc::new(Urls::new(&run)?);
    let client = client(run.concurrency);

    // 1. Warm-up.
    let Answer::Accepted(first) = login(&client, &urls).await? else {
        bail!("the warm-up login was not answered 302 with a state, a nonce and a state cookie");
    };
    let first = prepare(&platform, &urls, &first, "learner-0")?;
    if !matches!(launch(&client, &urls, &first).await?, Answer::Accepted(())) {
        bail!("the warm-up launch was not answered 303 with a session cookie");
    }

    // 2. Logins.
    let n = (run.rate_bound * run.seconds).ceil() as u64 + run.concurrency as u64;
    let logins = {
        let (client, urls) = (client.clone(), urls.clone());
        drive(
            run.concurrency,
            Limit {
                seconds: None,
                requests: n,
            },
            run.server_pid,
            move |_| {
                let (client, urls) = (client.clone(), urls.clone());
                async move { login(&client, &urls).await.unwrap_or(Answer::Failed) }
            },
        )
        .await?
    };
    println!("logins {}", logins.line(""));

    // 3. Signing.
    let prepared = {
        let (platform, urls) = (platform.clone(), urls.clone());
        let learners = run.learners;
        let logins = logins.kept;
        tokio::task::spawn_blocking(move || {
            on_every_cpu(|| prepare_all(&platform, &urls, &logins, learners))
        })
        .await??
    }?;
    let prepared = Arc::new(prepared);

    // 4. Launches.
    let count = prepared.len() as u64;
    let launches = drive(
        run.concurrency,
        Limit {
            seconds: Some(run.seconds),
            requests: count,
        },
        run.server_pid,
        move |i| {
            let (client, urls, prepared) = (client.clone(), urls.clone(), prepared.clone());
            async move {
                match prepared.get(i as usize) {
                    Some(p) => launch(&client, &urls, p).await.unwrap_or(Answer::Failed),
                    None => Answer::Failed,
                }
            }
        },
    )
    .await?;
    let sent = launches.latencies.len() as u64 + launches.refused + launches.failed;
    let exhausted = sent >= count;
    println!(
        "{}",
        launches.line(&format!(
            " prepared={count} exhausted={}",
            u8::from(exhausted)
        ))
    );
    Ok(())
}
