//! Launch load for `benches/load.sh`: signed LTI 1.1 launches, each with a
//! fresh nonce, and LTI 1.3 launches, each after a login of its own, sent as
//! fast as ltigate accepts them.
//!
//! ```text
//! launch_load cookie ADDR PUBLIC_URL KEY SECRET
//!     one real launch; prints `name=value` of the session cookie it sets
//! launch_load load ADDR PUBLIC_URL KEY SECRET CONCURRENCY SECONDS LEARNERS
//!     CONCURRENCY keep-alive connections, each sending launches back to
//!     back for SECONDS; learners cycle through LEARNERS user ids (a class
//!     relaunching). Prints one line of `name=value` results.
//! launch_load load13 ADDR PUBLIC_URL JWKS_ADDR CONCURRENCY SECONDS LEARNERS RATE_BOUND [SERVER_PID]
//!     the same for LTI 1.3, the load generator playing the platform
//!     (its JWKS served on JWKS_ADDR): the logins and the signed id_tokens
//!     are prepared first, then only the launch POSTs are timed. Prints a
//!     `logins …` line and the launch line (see `lti13.rs`).
//! launch_load sessions ADDR PUBLIC_URL KEY SECRET LEARNERS
//!     LEARNERS learners launch (LTI 1.1) one after the other, each then
//!     sending one proxied `GET /courses/C-1/page` with its own session
//!     cookie (so ltigate holds LEARNERS opened sessions). Prints one line
//!     of `name=value` results.
//! ```
//!
//! A launch counts as accepted when ltigate answers 303 with a session
//! cookie. Each LTI 1.1 launch is a realistic Moodle-style form of 25
//! parameters (outcome service URL and sourcedid included, so grade
//! passback is set up). Its signing (HMAC-SHA1, a few µs) happens inside the
//! timed loop, on the load generator's core; the `loadgen_cpu` result says
//! how busy that core was.

mod lti13;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ltigate::lti::encode::form_encode;
use ltigate::lti::oauth1::{sign_launch, LaunchSigner, SignatureMethod};
use rand::RngCore;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Where and as whom LTI 1.1 launches are sent.
struct Target {
    addr: SocketAddr,
    /// The launch URL the LMS signs (public URL + `/lti/launch`).
    signed_url: String,
    key: String,
    secret: String,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn fresh_nonce() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The signed, form-encoded body of one launch by learner `user`.
fn launch_body(t: &Target, user: u64) -> anyhow::Result<String> {
    let user = format!("learner-{user}");
    let params: Vec<(String, String)> = [
        ("lti_message_type", "basic-lti-launch-request"),
        ("lti_version", "LTI-1p0"),
        ("resource_link_id", "429785226"),
        ("resource_link_title", "Final assessment"),
        ("user_id", user.as_str()),
        ("roles", "Learner"),
        ("lis_person_name_given", "Zoë"),
        ("lis_person_name_family", "van Dijk"),
        ("lis_person_name_full", "Zoë van Dijk"),
        ("lis_person_contact_email_primary", "zoe@example.org"),
        ("context_id", "456434513"),
        ("context_title", "Design of Personal Environments"),
        ("context_label", "SI182"),
        ("launch_presentation_locale", "en-US"),
        (
            "launch_presentation_return_url",
            "https://lms.example.org/mod/lti/return.php?course=2",
        ),
        (
            "lis_outcome_service_url",
            "https://lms.example.org/mod/lti/service.php",
        ),
        (
            "lis_result_sourcedid",
            "{\"data\":{\"instanceid\":\"2\",\"userid\":\"3\",\"typeid\":\"1\",\"launchid\":771},\"hash\":\"abc\"}",
        ),
        ("tool_consumer_info_product_family_code", "moodle"),
        ("custom_course", "C-1"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    let nonce = fresh_nonce();
    let signed = sign_launch(
        &LaunchSigner {
            url: &t.signed_url,
            consumer_key: &t.key,
            consumer_secret: t.secret.as_bytes(),
            method: SignatureMethod::HmacSha1,
            nonce: &nonce,
            timestamp: unix_now(),
        },
        &params,
    )
    .map_err(|e| anyhow::anyhow!("cannot sign: {e:?}"))?;
    let refs: Vec<(&str, &str)> = signed
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    Ok(form_encode(&refs))
}

/// Sends one launch; returns its status and the session cookie it set.
async fn launch(
    client: &HttpClient,
    t: &Target,
    user: u64,
) -> anyhow::Result<(StatusCode, Option<String>)> {
    let body = launch_body(t, user)?;
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}/lti/launch", t.addr))
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        )
        .body(Full::new(Bytes::from(body)))?;
    let resp = client.request(req).await?;
    let status = resp.status();
    let cookie = resp
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    resp.into_body().collect().await?;
    Ok((status, cookie))
}

fn client(concurrency: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// CPU clock ticks (user + system) that process `pid` (or `"self"`) has
/// used so far; 0 when it cannot be read.
fn cpu_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 here.
    ticks(11) + ticks(12)
}

/// CPU seconds this process has used so far (100 clock ticks a second).
fn cpu_seconds() -> f64 {
    cpu_ticks("self") as f64 / 100.0
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// How ltigate answered one request of a load.
enum Answer<T> {
    /// As it should (with what the caller keeps of the answer).
    Accepted(T),
    /// With another status.
    Refused,
    /// Not at all (connection or protocol error).
    Failed,
}

/// When a load stops.
struct Limit {
    /// After this long, if set.
    seconds: Option<f64>,
    /// After this many requests.
    requests: u64,
}

/// What a load measured.
struct Tally<T> {
    /// What each accepted request kept, in no particular order.
    kept: Vec<T>,
    /// Latency of each accepted request, µs, sorted.
    latencies: Vec<u32>,
    refused: u64,
    failed: u64,
    /// Wall time of the load, s.
    elapsed: f64,
    /// CPU seconds this process used per second of the load.
    loadgen_cpu: f64,
    /// CPU ticks the server process used during the load, if it was named.
    server_ticks: Option<u64>,
}

impl<T> Tally<T> {
    /// One line of `name=value` results, `extra` appended.
    fn line(&self, extra: &str) -> String {
        let server = self
            .server_ticks
            .map(|t| format!(" server_ticks={t}"))
            .unwrap_or_default();
        format!(
            "accepted={} refused={} failed={} seconds={:.3} rate={:.1} p50_us={} p99_us={} p999_us={} loadgen_cpu={:.2}{server}{extra}",
            self.latencies.len(),
            self.refused,
            self.failed,
            self.elapsed,
            self.latencies.len() as f64 / self.elapsed.max(1e-9),
            percentile(&self.latencies, 50.0),
            percentile(&self.latencies, 99.0),
            percentile(&self.latencies, 99.9),
            self.loadgen_cpu,
        )
    }
}

/// `concurrency` tasks sending requests back to back: request `i`
/// (0, 1, 2… from a shared counter) is `one(i)`, until `limit`.
/// `server` names the server's pid, to count its CPU ticks meanwhile.
async fn drive<T, F, Fut>(
    concurrency: usize,
    limit: Limit,
    server: Option<u32>,
    one: F,
) -> anyhow::Result<Tally<T>>
where
    T: Send + 'static,
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Answer<T>> + Send + 'static,
{
    let one = Arc::new(one);
    let next = Arc::new(AtomicU64::new(0));
    let server_pid = server.map(|p| p.to_string());
    let server_start = server_pid.as_deref().map(cpu_ticks);
    let cpu_start = cpu_seconds();
    let started = Instant::now();
    let deadline = limit.seconds.map(|s| started + Duration::from_secs_f64(s));
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (one, next) = (one.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut latencies: Vec<u32> = Vec::with_capacity(4096);
            let (mut refused, mut failed) = (0u64, 0u64);
            while deadline.is_none_or(|d| Instant::now() < d) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit.requests {
                    break;
                }
                let sent = Instant::now();
                match one(i).await {
                    Answer::Accepted(k) => {
                        latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        kept.push(k);
                    }
                    Answer::Refused => refused += 1,
                    Answer::Failed => failed += 1,
                }
            }
            (kept, latencies, refused, failed)
        }));
    }
    let mut tally = Tally {
        kept: Vec::new(),
        latencies: Vec::new(),
        refused: 0,
        failed: 0,
        elapsed: 0.0,
        loadgen_cpu: 0.0,
        server_ticks: None,
    };
    for task in tasks {
        let (k, l, r, f) = task.await?;
        tally.kept.extend(k);
        tally.latencies.extend(l);
        tally.refused += r;
        tally.failed += f;
    }
    tally.elapsed = started.elapsed().as_secs_f64();
    tally.loadgen_cpu = (cpu_seconds() - cpu_start) / tally.elapsed.max(1e-9);
    tally.server_ticks = server_pid
        .as_deref()
        .zip(server_start)
        .map(|(pid, start)| cpu_ticks(pid).saturating_sub(start));
    tally.latencies.sort_unstable();
    Ok(tally)
}

async fn run_load(
    t: Arc<Target>,
    concurrency: usize,
    seconds: f64,
    learners: u64,
) -> anyhow::Result<()> {
    let client = client(concurrency);
    // Open a connection and check one launch works before timing.
    let (status, cookie) = launch(&client, &t, 0).await?;
    if status != StatusCode::SEE_OTHER || cookie.is_none() {
        bail!("the warm-up launch was answered {status} (expected 303 with a cookie)");
    }
    let limit = Limit {
        seconds: Some(seconds),
        requests: u64::MAX,
    };
    let tally = drive(concurrency, limit, None, move |i| {
        let (client, t) = (client.clone(), t.clone());
        async move {
            match launch(&client, &t, (i + 1) % learners).await {
                Ok((StatusCode::SEE_OTHER, Some(_))) => Answer::Accepted(()),
                Ok(_) => Answer::Refused,
                Err(_) => Answer::Failed,
            }
        }
    })
    .await?;
    println!("{}", tally.line(""));
    Ok(())
}

const USAGE: &str = "usage: launch_load cookie ADDR PUBLIC_URL KEY SECRET
       launch_load load ADDR PUBLIC_URL KEY SECRET CONCURRENCY SECONDS LEARNERS
       launch_load load13 ADDR PUBLIC_URL JWKS_ADDR CONCURRENCY SECONDS LEARNERS RATE_BOUND [SERVER_PID]
       launch_load sessions ADDR PUBLIC_URL KEY SECRET LEARNERS";

/// LEARNERS sessions, each launched and then used once.
async fn run_sessions(t: Arc<Target>, learners: u64) -> anyhow::Result<()> {
    let client = client(1);
    let (mut proxied, mut failed) = (0u64, 0u64);
    for user in 0..learners {
        let Ok((StatusCode::SEE_OTHER, Some(cookie))) = launch(&client, &t, user).await else {
            failed += 1;
            continue;
        };
        let req = Request::builder()
            .uri(format!("http://{}/courses/C-1/page", t.addr))
            .header(header::COOKIE, cookie)
            .body(Full::new(Bytes::new()))?;
        match client.request(req).await {
            Ok(resp) if resp.status() == StatusCode::OK => {
                resp.into_body().collect().await?;
                proxied += 1;
            }
            _ => failed += 1,
        }
    }
    println!("sessions={learners} proxied={proxied} failed={failed}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, name: &str| -> anyhow::Result<&str> {
        args.get(i)
            .map(String::as_str)
            .with_context(|| format!("{name} missing\n{USAGE}"))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let target = || -> anyhow::Result<Arc<Target>> {
        Ok(Arc::new(Target {
            addr: arg(1, "ADDR")?.parse().context("ADDR")?,
            signed_url: format!("{}/lti/launch", arg(2, "PUBLIC_URL")?.trim_end_matches('/')),
            key: arg(3, "KEY")?.to_owned(),
            secret: arg(4, "SECRET")?.to_owned(),
        }))
    };
    match (arg(0, "the mode")?, args.len()) {
        ("cookie", 5) => {
            let target = target()?;
            rt.block_on(async {
                let (status, cookie) = launch(&client(1), &target, 0).await?;
                match (status, cookie) {
                    (StatusCode::SEE_OTHER, Some(c)) => {
                        println!("{c}");
                        Ok(())
                    }
                    (s, _) => bail!("the launch was answered {s} (expected 303 with a cookie)"),
                }
            })
        }
        ("load", 8) => {
            let target = target()?;
            let concurrency: usize = arg(5, "CONCURRENCY")?.parse().context("CONCURRENCY")?;
            let seconds: f64 = arg(6, "SECONDS")?.parse().context("SECONDS")?;
            let learners: u64 = arg(7, "LEARNERS")?.parse().context("LEARNERS")?;
            rt.block_on(run_load(
                target,
                concurrency.max(1),
                seconds,
                learners.max(1),
            ))
        }
        ("load13", 8 | 9) => {
            let run = lti13::Run {
                addr: arg(1, "ADDR")?.parse().context("ADDR")?,
                public_url: arg(2, "PUBLIC_URL")?.trim_end_matches('/').to_owned(),
                jwks_addr: arg(3, "JWKS_ADDR")?.parse().context("JWKS_ADDR")?,
                concurrency: arg(4, "CONCURRENCY")?
                    .parse::<usize>()
                    .context("CONCURRENCY")?
                    .max(1),
                seconds: arg(5, "SECONDS")?.parse().context("SECONDS")?,
                learners: arg(6, "LEARNERS")?
                    .parse::<u64>()
                    .context("LEARNERS")?
                    .max(1),
                rate_bound: arg(7, "RATE_BOUND")?.parse().context("RATE_BOUND")?,
                server_pid: match args.get(8) {
                    Some(p) => Some(p.parse().context("SERVER_PID")?),
                    None => None,
                },
            };
            rt.block_on(lti13::run(run))
        }
        ("sessions", 6) => {
            let target = target()?;
            let learners: u64 = arg(5, "LEARNERS")?.parse().context("LEARNERS")?;
            rt.block_on(run_sessions(target, learners))
        }
        _ => bail!(USAGE),
    }
}
