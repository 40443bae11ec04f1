//! The `ltigate` binary: `check-config` output and errors, and `serve` with
//! the shipped `config/ltigate.toml` (what the README's run command does).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ltigate");
const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/ltigate.toml");

fn check_config(toml: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("check-config").arg("--config").arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A secret longer than Brightspace keeps is valid, but check-config says
/// what it would do there, without printing the secret.
#[test]
fn check_config_warns_of_a_secret_brightspace_would_truncate() {
    let long = "s".repeat(101);
    let toml = |secret: &str| {
        format!(
            "[server]\npublic_url = \"https://learn.example.com\"\n\
             [session]\nsecret = \"0123456789abcdef0123456789abcdef\"\n\
             [webhook]\nsecret = \"0123456789abcdef-webhook\"\n\
             [[consumers]]\nname = \"D2L\"\nkey = \"d2l\"\nlms_id = \"d2l\"\n\
             secrets = [\"ok-secret\", \"{secret}\"]\n"
        )
    };
    let (code, _, err) = check_config(&toml(&long), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: consumers[0]: secret 2 of consumer \"D2L\" is 101 characters"),
        "{err}"
    );
    assert!(!err.contains(&long));
    let (code, _, err) = check_config(&toml(&long[..100]), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn check_config_prints_the_effective_config_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("session-key");
    std::fs::write(&key, "k-file-secret-0123456789abcdef0123456789\n").unwrap();
    let toml = format!(
        r#"
[server]
public_url = "https://learn.example.com"
[session]
secret_file = "{}"
[store]
url = "redis://user:redis-password@127.0.0.1:6379"
[webhook]
secret = "webhook-inline-secret-123"
[upstream]
api_token = "api-token-secret"
[[consumers]]
name = "Acme"
key = "acme"
secrets = ["consumer-secret-new", "consumer-secret-old"]
lms_id = "acme"
"#,
        key.display()
    );
    let (code, out, err) = check_config(&toml, &[]);
    assert_eq!(code, 0, "{err}");
    for secret in [
        "k-file-secret",
        "redis-password",
        "webhook-inline-secret",
        "api-token-secret",
        "consumer-secret-new",
        "consumer-secret-old",
    ] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} leaked:\n{out}\n{err}"
        );
    }
    assert!(out.contains("[redacted]"));
    assert!(out.contains("public_url = \"https://learn.example.com\""));
    // Defaults are shown as effective values.
    assert!(out.contains("idle_ttl = \"2h\""), "{out}");
    let reparsed: toml::Table = out.parse().expect("the output is TOML");
    assert!(reparsed.contains_key("outcomes"));
}

/// A configuration with LTI 1.3 registrations: `check-config` prints it
/// (the tool key's file named, never its contents) as TOML that
/// `check-config` accepts again, unchanged.
#[test]
fn check_config_round_trips_platforms() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("session-key");
    std::fs::write(&session, "s".repeat(40)).unwrap();
    let webhook = dir.path().join("webhook-secret");
    std::fs::write(&webhook, "w".repeat(20)).unwrap();
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/tool-key-rsa2048.pem"
    );
    let toml = format!(
        r#"
[server]
public_url = "https://learn.example.com"
[session]
secret_file = "{session}"
[store]
url = "redis://127.0.0.1:6379"
[webhook]
secret_file = "{webhook}"
[lti13]
key_file = "{key}"
state_ttl = "5m"
[[consumers]]
name = "Acme"
key = "acme"
secret = "consumer-secret"
lms_id = "acme"
[[platforms]]
name = "Acme Canvas"
issuer = "https://canvas.instructure.com"
client_id = "10000000000001"
deployment_ids = ["1", "2"]
auth_login_url = "https://sso.canvaslms.com/api/lti/authorize_redirect"
auth_token_url = "https://sso.canvaslms.com/login/oauth2/token"
jwks_url = "https://sso.canvaslms.com/api/lti/security/jwks"
consumer = "Acme"
[[platforms]]
name = "Other School"
issuer = "https://canvas.instructure.com"
client_id = "10000000000001"
deployment_ids = ["3"]
auth_login_url = "https://sso.canvaslms.com/api/lti/authorize_redirect"
auth_token_url = "https://sso.canvaslms.com/login/oauth2/token"
jwks_url = "https://sso.canvaslms.com/api/lti/security/jwks"
lms_id = "other"
max_licences = 50
"#,
        session = session.display(),
        webhook = webhook.display()
    );
    let (code, out, err) = check_config(&toml, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
    assert!(!out.contains("BEGIN PRIVATE KEY"), "{out}");
    let printed: toml::Table = out.parse().expect("the output is TOML");
    let platforms = printed["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), 2);
    assert_eq!(platforms[0]["consumer"].as_str(), Some("Acme"));
    assert_eq!(platforms[1]["max_licences"].as_integer(), Some(50));
    assert_eq!(printed["lti13"]["leeway"].as_str(), Some("60s"));
    assert_eq!(printed["lti13"]["key_file"].as_str(), Some(key));
    let (code, again, err) = check_config(&out, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(again, out);

    // A refusal names its key; Redis without the tool key says why.
    let (code, _, err) = check_config(
        &toml
            .replace("deployment_ids = [\"3\"]", "deployment_ids = [\"2\"]")
            .replace(&format!("key_file = \"{key}\"\n"), ""),
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(": platforms[1].deployment_ids: `2` is also listed by `Acme Canvas`"),
        "{err}"
    );
    assert!(
        err.contains("lti13.key: required with Redis when [[platforms]] are configured"),
        "{err}"
    );
}

#[test]
fn check_config_reports_every_problem_on_its_own_line() {
    let toml = r#"
[server]
listen = "nowhere"
[session]
ttl = "forever"
tll = "1h"
[[consumers]]
name = "A"
key = "k"
lms_id = "a"
"#;
    let (code, out, err) = check_config(toml, &[]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    // Unknown keys come with the validation problems, each with its path
    // and line.
    for needle in [
        "c.toml:6: unknown key session.tll",
        "c.toml:5: session.ttl: `forever` is not a duration",
        "c.toml:3: server.listen:",
        // A default: no source.
        "config: server.public_url: required",
    ] {
        assert!(
            err.lines().filter(|l| l.contains(needle)).count() == 1,
            "{needle} not on exactly one line:\n{err}"
        );
    }

    let toml = toml.replace("tll = \"1h\"\n", "");
    let (code, _, err) = check_config(&toml, &[("LTIGATE_STORE__URL", "mysql://x")]);
    assert_eq!(code, 2);
    let lines: Vec<&str> = err.lines().collect();
    for needle in [
        "server.listen:",
        "server.public_url: required",
        "session.ttl:",
        "consumers[0]: a secret is required",
        "store.url:",
    ] {
        assert!(
            lines.iter().filter(|l| l.contains(needle)).count() == 1,
            "{needle} not on exactly one line:\n{err}"
        );
    }
    assert!(lines.iter().all(|l| l.starts_with("config: ")), "{err}");
}

/// Every unknown key and every type error, with the validation problems,
/// each line naming its source: the file and line, or the variable.
#[test]
fn check_config_reports_every_key_error_with_its_source() {
    let toml = "\
[server]
max_connections = \"lots\"
listn = \"0.0.0.0:8080\"

[session]
ttll = \"1h\"

[[consumers]]
name = \"A\"
key = \"a\"
lms_id = \"a\"
secret = \"a-secret\"

[[consumers]]
name = \"B\"
key = \"b\"
lmsid = \"b\"
secret = \"b-secret\"

[courses.C-1]
grade_activity = 7
landing_path = \"start\"
";
    let (code, out, err) = check_config(
        toml,
        &[
            ("LTIGATE_STORE__URLL", "redis://x"),
            ("LTIGATE_OUTCOMES__LEASE", "8 hours"),
            ("LTIGATE_SESSION__SECRET", "short"),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    let expected = [
        "c.toml:2: server.max_connections: invalid type: string \"lots\"",
        "c.toml:3: unknown key server.listn (known: listen, ",
        "c.toml:6: unknown key session.ttll (known: ",
        "c.toml:17: unknown key consumers[1].lmsid (known: ",
        "c.toml:21: courses.C-1.grade_activity: invalid type: integer `7`",
        "LTIGATE_STORE__URLL: unknown key store.urll (known: url, cluster, path, timeout)",
        // Validation, with the source of the offending key.
        "config: server.public_url: required",
        "LTIGATE_OUTCOMES__LEASE: outcomes.lease: `8 hours` is not a duration",
        "LTIGATE_SESSION__SECRET: session.secret: must be at least 32 bytes",
        "c.toml:14: consumers[1].lms_id: required",
        "c.toml:22: courses.C-1.landing_path: `start` must start with `/`",
    ];
    let lines: Vec<&str> = err.lines().collect();
    for needle in expected {
        assert_eq!(
            lines.iter().filter(|l| l.contains(needle)).count(),
            1,
            "{needle} not on exactly one line:\n{err}"
        );
    }
    assert_eq!(lines.len(), expected.len(), "{err}");
    assert!(lines.iter().all(|l| l.starts_with("config: ")), "{err}");
}

#[test]
fn check_config_rejects_a_missing_file_and_bad_types_cleanly() {
    let out = Command::new(BIN)
        .args(["check-config", "--config", "/nonexistent/ltigate.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/ltigate.toml: not found"),
        "{err}"
    );

    let (code, _, err) = check_config(
        "[server]\npublic_url = \"https://x.example\"\nmax_connections = \"many\"\n",
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("server.max_connections"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn the_shipped_config_is_valid() {
    let out = Command::new(BIN)
        .args(["check-config", "--config", SHIPPED])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("demo-secret-change-me"));
    // The same warnings `serve` logs: the demo secret and the missing
    // webhook secret.
    let err = String::from_utf8_lossy(&out.stderr);
    for warning in SHIPPED_WARNINGS {
        assert!(
            err.contains(&format!("config: warning: {warning}")),
            "{err}"
        );
    }
    assert!(!err.contains("demo-secret-change-me"), "{err}");
}

/// What `check-config` and `serve` both say about the shipped configuration.
const SHIPPED_WARNINGS: [&str; 2] = [
    "consumers[0].secret: a published example secret",
    "webhook.secret: not set: completion webhooks are refused with 401",
];

/// The secrets published with ltigate (shipped file, demo, chart README)
/// are refused once the public URL is https, wherever they are used.
#[test]
fn example_secrets_are_refused_behind_https() {
    let config = |public_url: &str, session: &str, webhook: &str, consumer: &str| {
        format!(
            "[server]\npublic_url = \"{public_url}\"\n\
             [session]\nsecret = \"{session}\"\n\
             [webhook]\nsecret = \"{webhook}\"\n\
             [upstream]\napi_token = \"demo-api-token\"\n\
             [[consumers]]\nname = \"A\"\nkey = \"a\"\nlms_id = \"a\"\n\
             secrets = [\"own-secret\", \"{consumer}\"]\n"
        )
    };
    let session = "<openssl rand -base64 48>";
    let (code, _, err) = check_config(
        &config(
            "https://learn.example.com",
            session,
            "demo-webhook-secret",
            "demo-secret",
        ),
        &[],
    );
    assert_eq!(code, 2, "{err}");
    for key in [
        "upstream.api_token",
        "session.secret",
        "webhook.secret",
        "consumers[0].secrets[1]",
    ] {
        assert!(
            err.lines().any(
                |l| l.contains(&format!(": {key}: a published example secret"))
                    && l.contains("refused")
            ),
            "{key} not refused:\n{err}"
        );
    }
    // On http (trying ltigate on one machine) they are warnings.
    let (code, _, err) = check_config(
        &config(
            "http://localhost:8080",
            &"k".repeat(32),
            "<openssl rand -hex 32>",
            "demo-secret",
        ),
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches("warning: ").count(), 3, "{err}");
    assert!(err.contains("warning: webhook.secret: a published example secret"));
    // Secrets of one's own: nothing to say.
    let (code, _, err) = check_config(
        &config(
            "https://learn.example.com",
            &"k".repeat(32),
            "own-webhook-secret-123",
            "own-other-secret",
        )
        .replace("demo-api-token", "own-api-token"),
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

/// `ltigate serve` on the shipped configuration starts, generates its
/// session key beside the embedded database, answers health checks and
/// stops cleanly on SIGTERM.
#[test]
fn serve_runs_on_the_shipped_config_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", SHIPPED])
        .current_dir(dir.path())
        .env("LTIGATE_SERVER__LISTEN", "127.0.0.1:0")
        .env("LTIGATE_SERVER__ADMIN_LISTEN", "127.0.0.1:0")
        .env("LTIGATE_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut admin = None;
    let mut log = Vec::new();
    while admin.is_none() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["fields"]["message"] == "ltigate is serving" {
                    admin = v["fields"]["admin"].as_str().map(str::to_string);
                }
            }
            log.push(line);
        }
    }
    let admin = admin.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("ltigate did not start:\n{}", log.join("\n"))
    });
    let health = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec 3<>/dev/tcp/{}/{}; printf 'GET /healthz HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n' >&3; cat <&3",
            admin.split(':').next().unwrap(),
            admin.split(':').nth(1).unwrap()
        ))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&health.stdout).starts_with("HTTP/1.1 200"));
    assert!(dir.path().join("data/session.key").exists());
    assert!(dir.path().join("data/ltigate.db").exists());

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit {status:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    while let Ok(line) = rx.try_recv() {
        log.push(line);
    }
    // The demo consumer's secret never reaches the logs; the warnings
    // check-config prints do.
    let log = log.join("\n");
    assert!(!log.contains("demo-secret-change-me"));
    for warning in SHIPPED_WARNINGS {
        assert!(log.contains(&format!("config: {warning}")), "{log}");
    }
}

/// Logs written to a pipe or file carry no terminal colour codes.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    // A taken port: ltigate logs its warnings, fails to listen, and exits.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", SHIPPED])
        .current_dir(dir.path())
        .env(
            "LTIGATE_SERVER__LISTEN",
            taken.local_addr().unwrap().to_string(),
        )
        .env("LTIGATE_SERVER__ADMIN_LISTEN", "127.0.0.1:0")
        .env_remove("LTIGATE_LOG_FORMAT")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("WARN") && err.contains("cannot start"),
        "{err}"
    );
    assert!(!err.contains('\u{1b}'), "colour codes in {err:?}");
}

/// `demo` runs on its own configuration, so its help offers no --config;
/// the subcommands that read one do.
#[test]
fn only_the_subcommands_that_read_a_configuration_offer_config() {
    let help = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(!help(&["demo", "--help"]).contains("--config <"));
    for sub in ["serve", "check-config", "export", "outbox"] {
        assert!(help(&[sub, "--help"]).contains("--config <"), "{sub}");
    }
    let out = Command::new(BIN)
        .args(["demo", "--config", SHIPPED, "--print-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
