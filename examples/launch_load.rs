//! Launch load for `benches/load.sh`: signed LTI 1.1 launches, each with a
//! fresh nonce, sent as fast as ltigate accepts them.
//!
//! ```text
//! launch_load cookie ADDR PUBLIC_URL KEY SECRET
//!     one real launch; prints `name=value` of the session cookie it sets
//! launch_load load ADDR PUBLIC_URL KEY SECRET CONCURRENCY SECONDS LEARNERS
//!     CONCURRENCY keep-alive connections, each sending launches back to
//!     back for SECONDS; learners cycle through LEARNERS user ids (a class
//!     relaunching). Prints one line of `name=value` results.
//! ```
//!
//! A launch counts as accepted when ltigate answers 303 with a session
//! cookie. Each launch is a realistic Moodle-style form of 25 parameters
//! (outcome service URL and sourcedid included, so grade passback is set up).
//! Signing happens inside the timed loop, on the load generator's core; the
//! `loadgen_cpu` result says how busy that core was.

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

/// Where and as whom launches are sent.
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

/// CPU seconds this process has used so far.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn run_load(
    t: Arc<Target>,
    concurrency: usize,
    seconds: f64,
    learners: u64,
) -> anyhow::Result<()> {
    let client = client(concurrency);
    // Open every connection and check one launch works before timing.
    let (status, cookie) = launch(&client, &t, 0).await?;
    if status != StatusCode::SEE_OTHER || cookie.is_none() {
        bail!("the warm-up launch was answered {status} (expected 303 with a cookie)");
    }
    let next = Arc::new(AtomicU64::new(1));
    let cpu_start = cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let client = client.clone();
        let t = t.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(4096);
            let mut refused = 0u64;
            let mut failed = 0u64;
            while Instant::now() < deadline {
                let user = next.fetch_add(1, Ordering::Relaxed) % learners;
                let sent = Instant::now();
                match launch(&client, &t, user).await {
                    Ok((StatusCode::SEE_OTHER, Some(_))) => {
                        latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32)
                    }
                    Ok(_) => refused += 1,
                    Err(_) => failed += 1,
                }
            }
            (latencies, refused, failed)
        }));
    }
    let mut all = Vec::new();
    let (mut refused, mut failed) = (0, 0);
    for task in tasks {
        let (l, r, f) = task.await?;
        all.extend(l);
        refused += r;
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    all.sort_unstable();
    println!(
        "accepted={} refused={refused} failed={failed} seconds={elapsed:.3} rate={:.1} p50_us={} p99_us={} p999_us={} loadgen_cpu={:.2}",
        all.len(),
        all.len() as f64 / elapsed,
        percentile(&all, 50.0),
        percentile(&all, 99.0),
        percentile(&all, 99.9),
        cpu / elapsed,
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: launch_load cookie ADDR PUBLIC_URL KEY SECRET | launch_load load ADDR PUBLIC_URL KEY SECRET CONCURRENCY SECONDS LEARNERS";
    if args.len() < 5 {
        bail!(usage);
    }
    let target = Arc::new(Target {
        addr: args[1].parse().context("ADDR")?,
        signed_url: format!("{}/lti/launch", args[2].trim_end_matches('/')),
        key: args[3].clone(),
        secret: args[4].clone(),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args[0].as_str() {
        "cookie" => rt.block_on(async {
            let (status, cookie) = launch(&client(1), &target, 0).await?;
            match (status, cookie) {
                (StatusCode::SEE_OTHER, Some(c)) => {
                    println!("{c}");
                    Ok(())
                }
                (s, _) => bail!("the launch was answered {s} (expected 303 with a cookie)"),
            }
        }),
        "load" if args.len() == 8 => {
            let concurrency: usize = args[5].parse().context("CONCURRENCY")?;
            let seconds: f64 = args[6].parse().context("SECONDS")?;
            let learners: u64 = args[7].parse().context("LEARNERS")?;
            rt.block_on(run_load(
                target,
                concurrency.max(1),
                seconds,
                learners.max(1),
            ))
        }
        _ => bail!(usage),
    }
}
