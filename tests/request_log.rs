//! The request log (`server.access_log`) of the real binary, JSON logs:
//! every public request has an id — a fresh one, or a trusted proxy's — that
//! is returned to the client, sent upstream and carried by the log lines of
//! the request, and ends in one access line with method, path, status,
//! duration, bytes, tenant and learner, and the reason of a refusal; never a
//! query string, cookie, ticket or signature.

mod procs;
mod proxykit;
mod support;

use std::time::{Duration, Instant};

use proxykit::session_cookie;
use support::gate::{base_config, client};
use support::lms::Launch;
use support::upstream::Upstream;

/// The JSON log lines of `target`.
fn lines_of(log: &str, target: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == target)
        .collect()
}

/// The access line of the request with id `id`, waiting for it (it is
/// written once the response body is done with).
async fn access_line(gate: &procs::Ltigate, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = lines_of(&gate.log(), "ltigate::access")
            .into_iter()
            .filter(|v| v["fields"]["request_id"] == id)
            .collect::<Vec<_>>();
        if !found.is_empty() {
            assert_eq!(found.len(), 1, "one access line per request: {found:?}");
            return found.into_iter().next().unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "no access line for {id}\n{}",
            gate.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn request_id(r: &reqwest::Response) -> String {
    let id = r
        .headers()
        .get("x-request-id")
        .expect("an X-Request-Id on every answer")
        .to_str()
        .unwrap()
        .to_string();
    assert!(!id.is_empty());
    id
}

fn launch_request(base: &str, l: &Launch) -> reqwest::RequestBuilder {
    client()
        .post(format!("{base}{}", l.path_and_query()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(l.body())
}

fn spawn(up: &Upstream, dir: &std::path::Path, extra: &[(&str, &str, &str)]) -> procs::Ltigate {
    let mut toml = base_config(&up.url(), dir);
    for (section, key, value) in extra {
        toml = proxykit::set_key(&toml, section, key, value);
    }
    let config = procs::write_config(dir, &toml);
    procs::Ltigate::spawn(&config, "info")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_has_an_id_and_one_access_line_without_secrets() {
    let up = Upstream::start(Some("upstream-token")).await;
    let dir = tempfile::tempdir().unwrap();
    let gate = spawn(&up, dir.path(), &[]);
    let base = format!("http://{}", gate.public);

    // A launch: 303 with the session, logged with its tenant and learner.
    let l = Launch::acme("u-log", "C-1");
    let signature = l
        .signed_params()
        .into_iter()
        .find(|(k, _)| k == "oauth_signature")
        .map(|(_, v)| v)
        .unwrap();
    let r = launch_request(&base, &l).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let launch_id = request_id(&r);
    assert_eq!(launch_id.len(), 32, "a fresh id is 128 bits in hex");
    let cookie = session_cookie(&r).unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let ticket = location.split("ticket=").nth(1).unwrap().to_string();
    let line = access_line(&gate, &launch_id).await;
    let f = &line["fields"];
    assert_eq!(f["method"], "POST");
    assert_eq!(f["path"], "/lti/launch");
    assert_eq!(f["status"], 303);
    assert_eq!(f["tenant"], "Acme");
    assert_eq!(f["user"], "acme:u-log");
    assert_eq!(f["reason"], "");
    assert!(f["duration_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(f["bytes_in"], l.body().len());
    // The launch's own log line carries the request's id in its span.
    let accepted = lines_of(&gate.log(), "ltigate::launch::accept")
        .into_iter()
        .find(|v| v["fields"]["message"] == "launch accepted")
        .expect("a launch accepted line");
    assert_eq!(accepted["span"]["id"], launch_id.as_str(), "{accepted}");

    // The continue step: logged without its ticket.
    let r = client()
        .get(format!("{base}{location}"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let line = access_line(&gate, &request_id(&r)).await;
    assert_eq!(line["fields"]["path"], "/lti/continue");

    // A proxied request: the same id upstream and back; no query string.
    let r = client()
        .get(format!("{base}/courses/C-1/page?token=query-secret"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let body = r.bytes().await.unwrap();
    let seen = up
        .records()
        .into_iter()
        .find(|rec| rec.path.starts_with("/courses/C-1/page"))
        .expect("the upstream got the request");
    assert_eq!(seen.headers["x-request-id"], id.as_str());
    let line = access_line(&gate, &id).await;
    let f = &line["fields"];
    assert_eq!(f["path"], "/courses/C-1/page");
    assert_eq!(f["status"], 200);
    assert_eq!(f["user"], "acme:u-log");
    assert_eq!(f["bytes_out"], body.len());

    // A log line of the proxied path carries the id too (a forged header).
    let r = client()
        .get(format!("{base}/courses/C-1"))
        .header("cookie", &cookie)
        .header("x-lti-user", "acme:teacher")
        .send()
        .await
        .unwrap();
    let forged_id = request_id(&r);
    let deadline = Instant::now() + Duration::from_secs(5);
    let removed = loop {
        let found = lines_of(&gate.log(), "ltigate::proxy::headers::request")
            .into_iter()
            .find(|v| v["fields"]["message"] == "removed identity headers sent by the client");
        if let Some(v) = found {
            break v;
        }
        assert!(Instant::now() < deadline, "no line for the forged header");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(removed["span"]["id"], forged_id.as_str(), "{removed}");

    // Refusals: the reason as the metrics name it.
    let r = client()
        .get(format!("{base}/courses/C-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let line = access_line(&gate, &request_id(&r)).await;
    assert_eq!(line["fields"]["reason"], "missing");
    assert_eq!(line["fields"]["tenant"], "");
    let forged = Launch::new("acme-key", "not-the-secret", "u-x", Some("C-1"));
    let r = launch_request(&base, &forged).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let line = access_line(&gate, &request_id(&r)).await;
    assert_eq!(line["fields"]["reason"], "bad_signature");
    let unknown = Launch::new("who-is-this", "s", "u-x", Some("C-1"));
    let r = launch_request(&base, &unknown).send().await.unwrap();
    let line = access_line(&gate, &request_id(&r)).await;
    assert_eq!(line["fields"]["reason"], "unknown_consumer");

    // A client's own X-Request-Id is not trusted by default.
    let r = client()
        .get(format!("{base}/courses/C-1"))
        .header("cookie", &cookie)
        .header("x-request-id", "client-chosen")
        .send()
        .await
        .unwrap();
    let id = request_id(&r);
    assert_ne!(id, "client-chosen");
    let seen = up.records().into_iter().last().unwrap();
    assert_eq!(seen.headers["x-request-id"], id.as_str());

    // The admin listener gives its requests ids too, never the caller's.
    let r = client()
        .get(gate.admin_url("/healthz"))
        .header("x-request-id", "caller-chosen")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let admin_id = request_id(&r);
    assert_eq!(admin_id.len(), 32, "{admin_id}");

    // Nothing secret in any access line.
    let access: Vec<String> = lines_of(&gate.log(), "ltigate::access")
        .iter()
        .map(|v| v.to_string())
        .collect();
    assert!(access.len() >= 7, "{access:?}");
    let cookie_value = cookie.split('=').nth(1).unwrap();
    for line in &access {
        for secret in [
            "query-secret",
            "token=",
            cookie_value,
            &ticket,
            &signature,
            "acme-secret",
        ] {
            assert!(!line.contains(secret), "{secret:?} in {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_id_is_kept_and_the_log_can_be_turned_off() {
    let up = Upstream::start(Some("upstream-token")).await;
    let dir = tempfile::tempdir().unwrap();
    let gate = spawn(
        &up,
        dir.path(),
        &[
            ("server", "trust_forwarded_headers", "true"),
            ("server", "access_log", "false"),
        ],
    );
    let base = format!("http://{}", gate.public);
    let r = launch_request(&base, &Launch::acme("u-t", "C-1"))
        .header("x-request-id", "ingress-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(request_id(&r), "ingress-7f3a");
    let cookie = session_cookie(&r).unwrap();
    let r = client()
        .get(format!("{base}/courses/C-1"))
        .header("cookie", &cookie)
        .header("x-request-id", "ingress-7f3b")
        .send()
        .await
        .unwrap();
    assert_eq!(request_id(&r), "ingress-7f3b");
    let seen = up.records().into_iter().last().unwrap();
    assert_eq!(seen.headers["x-request-id"], "ingress-7f3b");
    // One that cannot be logged safely is replaced.
    let r = client()
        .get(format!("{base}/courses/C-1"))
        .header("cookie", &cookie)
        .header("x-request-id", "a".repeat(200))
        .send()
        .await
        .unwrap();
    assert_eq!(request_id(&r).len(), 32);

    // The launch was logged (its span carries the trusted id), with no
    // access line: the access log is off.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = gate.log();
    let accepted = lines_of(&log, "ltigate::launch::accept")
        .into_iter()
        .find(|v| v["fields"]["message"] == "launch accepted")
        .expect("a launch accepted line");
    assert_eq!(accepted["span"]["id"], "ingress-7f3a");
    assert!(lines_of(&log, "ltigate::access").is_empty(), "{log}");
}
