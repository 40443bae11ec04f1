use std::path::Path;
use std::time::Duration;

use super::*;

fn raw_from(toml_text: &str, env: &[(&str, &str)]) -> Result<RawConfig, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, toml_text).unwrap();
    load_raw_from(
        Some(&p),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

const MIN: &str = r#"
[server]
public_url = "https://learn.example.com/lti-prefix/"
[[consumers]]
name = "Acme"
key = "acme-key"
secret = "s3cret"
lms_id = "acme"
"#;

#[test]
fn minimal_config_validates_with_defaults() {
    let raw = raw_from(MIN, &[]).unwrap();
    let s = validate(&raw).unwrap();
    assert_eq!(s.server.public_url.prefix, "/lti-prefix");
    assert_eq!(s.server.public_url.origin(), "https://learn.example.com");
    assert_eq!(s.server.max_header_bytes, 32 * 1024);
    assert_eq!(s.session.ttl, Duration::from_secs(8 * 3600));
    assert_eq!(s.launch.max_clock_skew, Duration::from_secs(300));
    assert!(matches!(s.store, StoreSettings::Embedded { .. }));
    assert_eq!(s.consumers[0].secrets[0].expose(), b"s3cret");
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let err = raw_from(&format!("{MIN}\n[session]\nttll = \"1h\"\n"), &[]).unwrap_err();
    assert!(
        err.0
            .iter()
            .any(|l| l.ends_with(": unknown key session.ttll (known: secret, secret_file, previous_secrets, previous_secrets_file, cookie_name, header_prefix, ttl, idle_ttl, max_courses, partitioned, csrf, rewrite_upstream_cookies, not_before)")),
        "{err}"
    );
    let err = raw_from(
            "[server]\npublic_url = \"https://x\"\n[[consumers]]\nname=\"a\"\nkey=\"k\"\nsecret=\"s\"\nlms_id=\"a\"\nlms=\"x\"\n",
            &[],
        )
        .unwrap_err();
    assert!(
        err.0
            .iter()
            .any(|l| l.contains("unknown key consumers[0].lms ")),
        "{err}"
    );
}

#[test]
fn environment_overrides_with_double_underscore_only() {
    let raw = raw_from(
        MIN,
        &[
            ("LTIGATE_STORE__URL", "redis://127.0.0.1:6379"),
            ("LTIGATE_SESSION__MAX_COURSES", "7"),
            ("LTIGATE_SERVER__PUBLIC_PATHS", "[\"/static/\"]"),
            ("LTIGATE_PORT", "tcp://10.0.0.1:8080"),
            ("LTIGATE_SERVICE_HOST", "10.0.0.1"),
        ],
    )
    .unwrap();
    assert_eq!(raw.session.max_courses, 7);
    assert_eq!(raw.server.public_paths, vec!["/static/".to_string()]);
    // Redis without a session secret is a configuration error.
    let err = validate(&raw).unwrap_err();
    assert!(err
        .0
        .iter()
        .any(|l| l.starts_with("session.secret: required with Redis")));
}

#[test]
fn secret_files_hold_a_rotation_one_secret_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let consumer = write("consumer", "new-secret\r\n\nbase64:b2xkLXNlY3JldA==\n");
    let previous = write(
        "previous",
        &format!("{}\n\n{}\r\n", "p".repeat(32), "q".repeat(40)),
    );
    let config = |consumer: &str, previous: &str| {
        format!(
            "[server]\npublic_url = \"https://x.example\"\n[session]\nsecret = \"{}\"\n\
                 previous_secrets_file = \"{previous}\"\n\
                 [[consumers]]\nname=\"a\"\nkey=\"k\"\nsecret_file=\"{consumer}\"\nlms_id=\"a\"\n",
            "s".repeat(32)
        )
    };
    let s = validate(&raw_from(&config(&consumer, &previous), &[]).unwrap()).unwrap();
    let secrets: Vec<&[u8]> = s.consumers[0].secrets.iter().map(|s| s.expose()).collect();
    assert_eq!(secrets, [&b"new-secret"[..], b"old-secret"]);
    let previous: Vec<usize> = s.session.previous_secrets.iter().map(|k| k.len()).collect();
    assert_eq!(previous, [32, 40]);

    // Bad lines are named by their number; an empty file is no secret.
    let empty = write("empty", "\n\n");
    let short = write("short", &format!("{}\n\nshort\n", "p".repeat(32)));
    let err = validate(&raw_from(&config(&empty, &short), &[]).unwrap()).unwrap_err();
    let text = err.0.join("\n");
    assert!(
        text.contains(&format!(
            "consumers[0].secret_file: `{empty}` holds no secret"
        )),
        "{text}"
    );
    assert!(
        text.contains("session.previous_secrets_file: line 3: must be at least 32 bytes"),
        "{text}"
    );
}

#[test]
fn secret_files_and_redaction() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, format!("{}\n", "k".repeat(40))).unwrap();
    let cs = dir.path().join("cs");
    std::fs::write(&cs, "base64:c2VjcmV0LWZyb20tZmlsZQ==\n").unwrap();
    let text = format!(
            "[server]\npublic_url = \"https://x.example\"\n[session]\nsecret_file = \"{}\"\n[store]\nurl = \"redis://user:pw@127.0.0.1:6379\"\n[[consumers]]\nname=\"a\"\nkey=\"k\"\nsecret_file=\"{}\"\nlms_id=\"a\"\n[[consumers]]\nname=\"b\"\nkey=\"k2\"\nsecrets=[\"inline-new\",\"inline-old\"]\nlms_id=\"b\"\n",
            key.display(),
            cs.display()
        );
    let raw = raw_from(&text, &[]).unwrap();
    let s = validate(&raw).unwrap();
    assert_eq!(s.session.secret.as_ref().unwrap().len(), 40);
    assert_eq!(s.consumers[0].secrets[0].expose(), b"secret-from-file");
    assert_eq!(s.consumers[1].secrets.len(), 2);
    let shown = render_redacted(&raw);
    assert!(!shown.contains("inline-new") && !shown.contains("inline-old"));
    assert!(!shown.contains(":pw@"), "{shown}");
    assert!(shown.contains("[redacted]"));
    assert!(!format!("{s:?}").contains("inline-new"));
}

#[test]
fn every_problem_is_one_line() {
    let raw = raw_from(
            "[server]\nlisten = \"nope\"\n[session]\nttl = \"forever\"\nsecret = \"short\"\n[webhook]\nmax_body = \"lots\"\n",
            &[],
        )
        .unwrap();
    let err = validate(&raw).unwrap_err();
    let text = err.to_string();
    for needle in [
        "server.listen:",
        "server.public_url: required",
        "session.ttl:",
        "session.secret: must be at least 32 bytes",
        "webhook.max_body:",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert_eq!(err.0.len(), text.lines().count());
}

#[test]
fn send_timeout_defaults_to_a_minute_and_is_never_zero() {
    let s = validate(&raw_from(MIN, &[]).unwrap()).unwrap();
    assert_eq!(s.server.send_timeout, Duration::from_secs(60));
    let raw = raw_from(MIN, &[("LTIGATE_SERVER__SEND_TIMEOUT", "0s")]).unwrap();
    let err = validate(&raw).unwrap_err();
    assert_eq!(
        err.0,
        vec!["server.send_timeout: must be longer than 0s".to_string()]
    );
    let raw = raw_from(MIN, &[("LTIGATE_SERVER__SEND_TIMEOUT", "soon")]).unwrap();
    let err = validate(&raw).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(err.0[0].starts_with("server.send_timeout: "), "{err}");
}

#[test]
fn wrong_types_name_the_key() {
    let err = raw_from(&format!("{MIN}\n[launch]\nid_separator = 3\n"), &[]).unwrap_err();
    assert!(
        err.0
            .iter()
            .any(|l| l.contains(": launch.id_separator: invalid type")),
        "{err}"
    );
}

#[test]
fn durations_and_sizes() {
    assert_eq!(
        parse_duration(&"300ms".into()).unwrap(),
        Duration::from_millis(300)
    );
    assert_eq!(
        parse_duration(&"8h".into()).unwrap(),
        Duration::from_secs(28800)
    );
    assert!(parse_duration(&"soon".into()).is_err());
    assert_eq!(parse_size(&"64KiB".into()).unwrap(), 65536);
    assert_eq!(parse_size(&"1MiB".into()).unwrap(), 1 << 20);
    assert!(parse_size(&"1XB".into()).is_err());
}

#[test]
fn durations_need_a_unit_from_one_grammar() {
    let ok = |text: &str| parse_duration(&text.into()).map_err(|e| format!("{text}: {e}"));
    assert_eq!(ok("1h30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(ok("2d").unwrap(), Duration::from_secs(2 * 86400));
    assert_eq!(ok("1s500ms").unwrap(), Duration::from_millis(1500));
    assert_eq!(ok("0").unwrap(), Duration::ZERO);
    assert_eq!(
        parse_duration(&Quantity::Number(0)).unwrap(),
        Duration::ZERO
    );
    for bad in [
        "8",
        "8 hours",
        "8hrs",
        "8 h",
        " 8h",
        "1h 30m",
        "h",
        "8H",
        "1.5h",
        "-1s",
        "",
        "8h!",
        "99999999999999999999d",
    ] {
        let err = ok(bad).unwrap_err();
        assert!(
            err.contains("ms, s, m, h or d") || err.contains("too long"),
            "{err}"
        );
    }
    let err = parse_duration(&Quantity::Number(8)).unwrap_err();
    assert!(err.starts_with("`8` has no unit"), "{err}");
}

/// A duration that does not parse is one problem, not also a comparison
/// with the zero it stands for.
#[test]
fn a_bad_duration_is_one_problem() {
    for (section, key) in [
        ("session", "ttl"),
        ("session", "idle_ttl"),
        ("outcomes", "lease"),
        ("outcomes", "timeout"),
        ("outcomes", "retry_initial"),
        ("outcomes", "retry_max"),
        ("server", "send_timeout"),
    ] {
        let var = format!("LTIGATE_{section}__{key}").to_ascii_uppercase();
        let err = validate(&raw_from(MIN, &[(&var, "eight")]).unwrap()).unwrap_err();
        assert_eq!(err.0.len(), 1, "{section}.{key}: {err}");
        assert!(
            err.0[0].starts_with(&format!("{section}.{key}: `eight` is not a duration")),
            "{err}"
        );
    }
    let err = validate(&raw_from(MIN, &[("LTIGATE_SESSION__TTL", "0")]).unwrap()).unwrap_err();
    assert_eq!(err.0, ["session.ttl: must be longer than zero"]);
}

#[test]
fn public_url_forms() {
    let u = parse_public_url("HTTPS://Learn.Example.com:443").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.prefix.as_str()),
        ("learn.example.com", None, "")
    );
    let u = parse_public_url("http://localhost:8080/p/").unwrap();
    assert_eq!((u.port, u.prefix.as_str()), (Some(8080), "/p"));
    assert_eq!(
        u.url_for("/lti/launch"),
        "http://localhost:8080/p/lti/launch"
    );
    assert!(parse_public_url("ftp://x").is_err());
    assert!(parse_public_url("https://x:0").is_err());
    assert!(parse_public_url("https://x/?q").is_err());
}

#[test]
fn shipped_config_is_valid() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ltigate.toml");
    let raw = load_raw_from(Some(&p), Vec::new()).unwrap();
    let s = validate(&raw).unwrap();
    assert!(matches!(s.store, StoreSettings::Embedded { .. }));
}

/// Each key's source: its line in the file (nested tables, dotted keys,
/// arrays of tables), or the variable that replaced it.
#[test]
fn every_key_has_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    let text = "[server]\npublic_url = \"https://x.example\"\nsession.ttl = \"1h\"\n\n\
                [[consumers]]\nname = \"a\"\n\n[[consumers]]\n# comment\nname = \"b\"\nkey = \"k\"\n\
                [courses.C-1]\ngrade_activity = \"g\"\n";
    std::fs::write(&p, text).unwrap();
    let env =
        [("LTIGATE_COURSES__C-1__LANDING_PATH", "/x")].map(|(k, v)| (k.to_string(), v.to_string()));
    let loaded = load_sources(Some(&p), env).unwrap();
    let file = p.display().to_string();
    let line = |key: &str| loaded.origins.of(key).map(|o| o.to_string());
    assert_eq!(line("server.public_url"), Some(format!("{file}:2")));
    assert_eq!(line("server.session.ttl"), Some(format!("{file}:3")));
    assert_eq!(line("consumers[0]"), Some(format!("{file}:5")));
    assert_eq!(line("consumers[1]"), Some(format!("{file}:8")));
    assert_eq!(line("consumers[1].key"), Some(format!("{file}:11")));
    assert_eq!(line("consumers[1].lms_id"), Some(format!("{file}:8")));
    assert_eq!(
        line("courses.C-1.grade_activity"),
        Some(format!("{file}:13"))
    );
    assert_eq!(
        line("courses.c-1.landing_path"),
        Some("LTIGATE_COURSES__C-1__LANDING_PATH".to_string())
    );
    // Defaults have no source.
    assert_eq!(line("server.listen"), None);
    assert_eq!(line("store.url"), None);
    // `server.session` is no key: reported with its path and line.
    assert!(loaded
        .problems
        .iter()
        .any(|l| l.starts_with("unknown key server.session ")));
    assert_eq!(
        loaded.origins.locate("consumers[1].lms_id: required"),
        format!("{file}:8: consumers[1].lms_id: required")
    );
}
