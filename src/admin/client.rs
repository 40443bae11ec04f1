//! The client side of the outbox routes, used by `ltigate outbox …`.

use std::net::SocketAddr;
use std::time::Duration;

/// The admin base URL for a listen address (`0.0.0.0` → loopback).
pub fn base_url(listen: SocketAddr) -> String {
    let ip = if listen.ip().is_unspecified() {
        if listen.is_ipv4() {
            "127.0.0.1".to_string()
        } else {
            "[::1]".to_string()
        }
    } else if listen.is_ipv6() {
        format!("[{}]", listen.ip())
    } else {
        listen.ip().to_string()
    };
    format!("http://{ip}:{}", listen.port())
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?)
}

/// `GET /outbox`, rendered as a table (or the JSON).
pub async fn list(base: &str, json: bool) -> anyhow::Result<String> {
    let resp = client()?
        .get(format!("{base}/outbox"))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach ltigate's admin listener at {base}: {e}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await?;
    if !status.is_success() {
        anyhow::bail!("{base}/outbox answered {status}: {body}");
    }
    if json {
        return Ok(format!("{body:#}\n"));
    }
    let jobs = body["jobs"].as_array().cloned().unwrap_or_default();
    if jobs.is_empty() {
        return Ok("the outbox is empty\n".into());
    }
    let mut out = String::from(
        "STATE    ATTEMPTS  SCORE  KIND            PLATFORM  COURSE  LEARNER  EVENT  ID\n",
    );
    for j in &jobs {
        out.push_str(&format!(
            "{:<8} {:>8}  {:<5}  {:<14}  {}  {}  {}  {}  {}\n",
            j["state"].as_str().unwrap_or("?"),
            j["attempts"],
            j["score"],
            j["kind"].as_str().unwrap_or("-"),
            j["platform"].as_str().unwrap_or("-"),
            j["course"].as_str().unwrap_or(""),
            j["learner"].as_str().unwrap_or(""),
            j["event_id"].as_str().unwrap_or(""),
            j["id"].as_str().unwrap_or(""),
        ));
        if let Some(e) = j["last_error"].as_str() {
            out.push_str(&format!("         last error: {e}\n"));
        }
    }
    Ok(out)
}

/// `POST /outbox/retry` for one id or every dead letter.
pub async fn retry(base: &str, id: Option<&str>) -> anyhow::Result<String> {
    let body = match id {
        Some(id) => serde_json::json!({ "id": id }),
        None => serde_json::json!({ "all_dead": true }),
    };
    let resp = client()?
        .post(format!("{base}/outbox/retry"))
        .json(&body)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach ltigate's admin listener at {base}: {e}"))?;
    let status = resp.status();
    let answer: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!(
            "{}",
            answer["message"]
                .as_str()
                .unwrap_or("the retry was refused")
        );
    }
    Ok(format!("re-queued {} job(s)\n", answer["requeued"]))
}
