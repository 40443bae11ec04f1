use std::path::Path;
use std::sync::Arc;
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
            .any(|l| l.ends_with(": unknown key session.ttll (known: secret, secret_file, previous_secrets, previous_secrets_file, cookie_name, header_prefix, ttl, idle_ttl, max_courses, partitioned, csrf, rewrite_upstream_cookies, not_before, assertion, assertion_audience, assertion_ttl, assertion_course_roles, assertion_key, assertion_key_file, assertion_next_key_files, assertion_previous_key_files)")),
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

// ---------------------------------------------------------------------------
// [lti13] and [[platforms]]
// ---------------------------------------------------------------------------

fn vector(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name)
        .display()
        .to_string()
}

/// One `[[platforms]]` entry on hosted Canvas's issuer and client id.
fn platform(name: &str, deployment_ids: &str, tenant: &str) -> String {
    format!(
        r#"
[[platforms]]
name = "{name}"
issuer = "https://canvas.instructure.com"
client_id = "10000000000001"
deployment_ids = {deployment_ids}
auth_login_url = "https://sso.canvaslms.com/api/lti/authorize_redirect"
auth_token_url = "https://sso.canvaslms.com/login/oauth2/token"
jwks_url = "https://sso.canvaslms.com/api/lti/security/jwks"
{tenant}
"#
    )
}

fn with(extra: &str) -> Result<Settings, Vec<String>> {
    validate(&raw_from(&format!("{MIN}{extra}"), &[]).unwrap()).map_err(|e| e.0)
}

/// The one problem of a configuration, or a panic naming what it got.
fn refusal(extra: &str) -> String {
    match with(extra) {
        Ok(_) => panic!("accepted:\n{extra}"),
        Err(problems) if problems.len() == 1 => problems[0].clone(),
        Err(problems) => panic!("{} problems:\n{}", problems.len(), problems.join("\n")),
    }
}

#[test]
fn lti13_defaults_and_no_platforms() {
    let s = with("").unwrap();
    assert!(s.lti13.key.is_none());
    assert!(s.lti13.next_keys.is_empty() && s.lti13.previous_keys.is_empty());
    assert_eq!(s.lti13.leeway, Duration::from_secs(60));
    assert_eq!(s.lti13.state_ttl, Duration::from_secs(600));
    assert!(s.platforms.is_empty());
    assert_eq!(s.tenants.len(), 1);
    let s = with("[lti13]\nleeway = \"0\"\nstate_ttl = \"5m\"\n").unwrap();
    assert_eq!(s.lti13.leeway, Duration::ZERO);
    assert_eq!(s.lti13.state_ttl, Duration::from_secs(300));
    assert_eq!(
        refusal("[lti13]\nstate_ttl = \"0s\"\n"),
        "lti13.state_ttl: must be longer than zero"
    );
    assert!(refusal("[lti13]\nleeway = \"a minute\"\n").starts_with("lti13.leeway: "));
}

#[test]
fn the_tool_key_is_pem_rsa_of_2048_bits_or_more() {
    let good = vector("tool-key-rsa2048.pem");
    let s = with(&format!("[lti13]\nkey_file = \"{good}\"\n")).unwrap();
    let der = s.lti13.key.as_ref().unwrap();
    assert_eq!(der.expose().first(), Some(&0x30), "DER, not PEM");
    assert!(der.len() > 1000);
    assert!(!format!("{s:?}").contains("BEGIN"));

    // Inline, as PEM text.
    let pem = std::fs::read_to_string(&good).unwrap();
    let s = with(&format!("[lti13]\nkey = '''\n{pem}'''\n")).unwrap();
    assert_eq!(s.lti13.key.as_ref().unwrap().expose(), der.expose());

    // The same key as PKCS#1 (BEGIN RSA PRIVATE KEY, as Helm's
    // genPrivateKey writes it), from a file or inline: kept as the same
    // PKCS#8 DER.
    let pkcs1 = vector("tool-key-rsa2048-pkcs1.pem");
    let s = with(&format!("[lti13]\nkey_file = \"{pkcs1}\"\n")).unwrap();
    assert_eq!(s.lti13.key.as_ref().unwrap().expose(), der.expose());
    let pem = std::fs::read_to_string(&pkcs1).unwrap();
    assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let s = with(&format!("[lti13]\nkey = '''\n{pem}'''\n")).unwrap();
    assert_eq!(s.lti13.key.as_ref().unwrap().expose(), der.expose());

    for (file, expected) in [
        ("tool-key-rsa1024.pem", "fewer than 2048 bits"),
        ("tool-key-p256.pem", "not an RSA key"),
        (
            "README.md",
            "not a PEM RSA private key (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)",
        ),
    ] {
        let line = refusal(&format!("[lti13]\nkey_file = \"{}\"\n", vector(file)));
        assert!(
            line.starts_with("lti13.key_file: ") && line.contains(expected),
            "{file}: {line}"
        );
    }
    let encrypted = "lti13.key: an encrypted key; give it unencrypted (openssl pkcs8 -topk8 -nocrypt) and protect the file instead";
    for (pem, expected) in [
        (
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----",
            encrypted,
        ),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n-----END RSA PRIVATE KEY-----",
            encrypted,
        ),
        (
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----",
            "lti13.key: a PEM EC PRIVATE KEY block, not an RSA key (LTI 1.3 signs with RS256); generate one with openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048",
        ),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----",
            "lti13.key: not a usable RSA private key (InvalidEncoding)",
        ),
    ] {
        assert_eq!(refusal(&format!("[lti13]\nkey = '''\n{pem}'''\n")), expected);
    }
    assert!(refusal(
        "[lti13]\nkey = \"-----BEGIN PRIVATE KEY-----\\n!!!\\n-----END PRIVATE KEY-----\"\n"
    )
    .starts_with("lti13.key: the PEM body is not valid base64"));
    assert_eq!(
        refusal(&format!("[lti13]\nkey = \"x\"\nkey_file = \"{good}\"\n")),
        "lti13.key: set either lti13.key or lti13.key_file, not both"
    );

    // Rotation: next and previous keys are checked the same way, each named.
    let next = vector("tool-key-rsa2048-next.pem");
    let s = with(&format!(
        "[lti13]\nkey_file = \"{good}\"\nnext_key_files = [\"{next}\"]\nprevious_key_files = [\"{next}\", \"{good}\"]\n"
    ))
    .unwrap();
    assert_eq!(
        (s.lti13.next_keys.len(), s.lti13.previous_keys.len()),
        (1, 2)
    );
    let line = refusal(&format!(
        "[lti13]\nnext_key_files = [\"{next}\", \"{}\"]\n",
        vector("tool-key-rsa1024.pem")
    ));
    assert!(
        line.starts_with("lti13.next_key_files[1]: an RSA key of fewer"),
        "{line}"
    );
    let line = refusal("[lti13]\nprevious_key_files = [\"/nonexistent/key.pem\"]\n");
    assert!(
        line.starts_with("lti13.previous_key_files[0]: cannot read `/nonexistent/key.pem`"),
        "{line}"
    );
}

#[test]
fn redis_with_platforms_needs_a_shared_tool_key() {
    let redis = format!(
        "[store]\nurl = \"redis://127.0.0.1:6379\"\n[session]\nsecret = \"{}\"\n",
        "s".repeat(32)
    );
    let own = "lms_id = \"canvas\"";
    let line = refusal(&format!("{redis}{}", platform("Canvas", "[\"1\"]", own)));
    assert!(
        line.starts_with(
            "lti13.key: required with Redis when [[platforms]] are configured (every replica must"
        ),
        "{line}"
    );
    // Without platforms no key is needed; with one, Redis is fine.
    with(&redis).unwrap();
    let key = format!(
        "[lti13]\nkey_file = \"{}\"\n",
        vector("tool-key-rsa2048.pem")
    );
    with(&format!(
        "{redis}{key}{}",
        platform("Canvas", "[\"1\"]", own)
    ))
    .unwrap();
    // The embedded store generates one later.
    with(&platform("Canvas", "[\"1\"]", own)).unwrap();
}

#[test]
fn platforms_defaults_tenants_and_lookups() {
    let s = with(&format!(
        "{}{}{}",
        platform("Acme Canvas", "[\"1\", \"2\"]", "consumer = \"Acme\""),
        platform(
            "Other School",
            "[\"3\"]",
            "lms_id = \"other\"\nenvironment = \"other-env\"\nmax_licences = 10\noutcome_hosts = [\"Other.Example\"]"
        ),
        platform("Moodle", "[\"*\"]", "lms_id = \"moodle\"\ntrust_unsigned_migration = true")
            .replace("https://canvas.instructure.com", "https://moodle.example.edu")
    ))
    .unwrap();
    assert_eq!(s.platforms.len(), 3);
    let acme = s.platform("Acme Canvas").unwrap();
    assert_eq!(acme.token_audience, acme.auth_token_url);
    assert_eq!(acme.consumer.as_deref(), Some("Acme"));
    assert!(Arc::ptr_eq(&acme.tenant, &s.consumers[0].tenant));
    assert!(!acme.trust_unsigned_migration && !acme.allow_private_endpoints);
    let other = s.platform("Other School").unwrap();
    assert_eq!(other.consumer, None);
    assert_eq!(
        *other.tenant,
        Tenant {
            name: "Other School".into(),
            lms_id: "other".into(),
            environment: Some("other-env".into()),
            max_licences: Some(10),
            outcome_hosts: vec!["other.example".into()],
        }
    );
    // One tenant per consumer, then one per unlinked platform.
    let names: Vec<&str> = s.tenants.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["Acme", "Other School", "Moodle"]);
    assert!(Arc::ptr_eq(
        s.tenant("Other School").unwrap(),
        &other.tenant
    ));
    assert_eq!(s.tenant_by_lms_id("moodle").unwrap().name, "Moodle");

    let canvas = ("https://canvas.instructure.com", "10000000000001");
    let pick = |iss: &str, client: &str, dep: &str| {
        s.platform_for(iss, client, dep).map(|p| p.name.as_str())
    };
    assert_eq!(pick(canvas.0, canvas.1, "2"), Some("Acme Canvas"));
    assert_eq!(pick(canvas.0, canvas.1, "3"), Some("Other School"));
    assert_eq!(pick(canvas.0, canvas.1, "4"), None);
    assert_eq!(pick(canvas.0, "another client", "1"), None);
    assert_eq!(
        pick("https://moodle.example.edu", canvas.1, "anything"),
        Some("Moodle")
    );
    assert_eq!(s.platforms_for(canvas.0, canvas.1).count(), 2);
    assert_eq!(
        s.platforms_of_issuer("https://moodle.example.edu").count(),
        1
    );
    assert!(s.platform("nope").is_none());

    // A token audience of its own (Brightspace).
    let s = with(&platform(
        "D2L",
        "[\"1\"]",
        "lms_id = \"d2l\"\ntoken_audience = \"https://api.brightspace.com/auth/token\"",
    ))
    .unwrap();
    assert_eq!(
        s.platforms[0].token_audience,
        "https://api.brightspace.com/auth/token"
    );
}

/// An exact deployment id beats `*` (only reachable when the lists come
/// from elsewhere than one configuration, which refuses `*` beside another
/// registration): the lookup itself prefers the listing.
#[test]
fn platform_for_prefers_a_listed_deployment_to_any() {
    let mut s = with(&platform("Any", "[\"*\"]", "lms_id = \"any\"")).unwrap();
    let mut listed = s.platforms[0].clone();
    listed.name = "Listed".into();
    listed.deployment_ids = DeploymentIds::Only(vec!["7".into()]);
    s.platforms.push(listed);
    let iss = "https://canvas.instructure.com";
    assert_eq!(
        s.platform_for(iss, "10000000000001", "7").unwrap().name,
        "Listed"
    );
    assert_eq!(
        s.platform_for(iss, "10000000000001", "8").unwrap().name,
        "Any"
    );
}

#[test]
fn platforms_refusals_one_line_each() {
    let own = |lms: &str| format!("lms_id = \"{lms}\"");
    let cases: Vec<(String, &str)> = vec![
        // Registrations sharing (issuer, client_id).
        (
            platform("A", "[\"1\", \"2\"]", &own("a")) + &platform("B", "[\"2\"]", &own("b")),
            "platforms[1].deployment_ids: `2` is also listed by `A`, which shares issuer and client_id",
        ),
        (
            platform("A", "[\"*\"]", &own("a")) + &platform("B", "[\"*\"]", &own("b")),
            "platforms[1].deployment_ids: shares issuer and client_id with platforms[0] (`A`), so neither may accept `*`",
        ),
        (
            platform("A", "[\"1\"]", &own("a")) + &platform("B", "[\"*\"]", &own("b")),
            "platforms[1].deployment_ids: shares issuer and client_id with platforms[0] (`A`), so neither may accept `*`",
        ),
        (
            platform("A", "[\"1\"]", &own("a"))
                + &platform("B", "[\"2\"]", &own("b")).replace("security/jwks", "security/jwks2"),
            "platforms[1].jwks_url: `https://sso.canvaslms.com/api/lti/security/jwks2` differs from `https://sso.canvaslms.com/api/lti/security/jwks` of platforms[0] (`A`)",
        ),
        (
            platform("A", "[\"1\"]", &own("a"))
                + &platform("B", "[\"2\"]", &own("b")).replace("authorize_redirect", "auth"),
            "platforms[1].auth_login_url: `https://sso.canvaslms.com/api/lti/auth` differs",
        ),
        (
            platform("A", "[\"1\"]", &own("a"))
                + &platform("B", "[\"2\"]", &own("b")).replace("oauth2/token", "oauth2/t"),
            "platforms[1].auth_token_url: `https://sso.canvaslms.com/login/oauth2/t` differs",
        ),
        (
            platform("A", "[\"1\"]", &own("a"))
                + &platform("B", "[\"2\"]", &format!("{}\ntoken_audience = \"x\"", own("b"))),
            "platforms[1].token_audience: `x` differs from `https://sso.canvaslms.com/login/oauth2/token`",
        ),
        // `*` and links.
        (
            platform("A", "[\"*\"]", "consumer = \"Acme\""),
            "platforms[0].deployment_ids: `*` on a registration linked to a consumer",
        ),
        (
            platform("A", "[\"*\", \"1\"]", &own("a")),
            "platforms[0].deployment_ids: `*` accepts any deployment and stands alone",
        ),
        (
            platform("A", "[]", &own("a")),
            "platforms[0].deployment_ids: required",
        ),
        (
            platform("A", "[\"1\", \"1\"]", &own("a")),
            "platforms[0].deployment_ids: `1` is listed twice",
        ),
        (
            platform("A", "[\"\"]", &own("a")),
            "platforms[0].deployment_ids: an empty deployment id",
        ),
        // The tenant.
        (
            platform("A", "[\"1\"]", "consumer = \"Nobody\""),
            "platforms[0].consumer: no [[consumers]] entry is named `Nobody` (known: Acme)",
        ),
        (
            platform("A", "[\"1\"]", "consumer = \"Acme\"\nmax_licences = 5\noutcome_hosts = []"),
            "platforms[0].consumer: set either consumer (share that consumer's tenant) or a tenant of its own (max_licences, outcome_hosts), not both",
        ),
        (
            platform("A", "[\"1\"]", "environment = \"e\""),
            "platforms[0].lms_id: required: set consumer = ",
        ),
        (
            platform("A", "[\"1\"]", &own("acme")),
            "platforms[0].lms_id: `acme` is used twice",
        ),
        (
            platform("A", "[\"1\"]", &own("x"))
                + &platform("B", "[\"1\"]", &own("x")).replace("10000000000001", "2"),
            "platforms[1].lms_id: `x` is used twice",
        ),
        (
            platform("A", "[\"1\"]", &own("a:b")),
            "platforms[0].lms_id: `a:b` must not contain launch.id_separator `:`",
        ),
        (
            platform("A", "[\"1\"]", &format!("{}\nmax_licences = 0", own("a"))),
            "platforms[0].max_licences: 0 would refuse every learner",
        ),
        // Names.
        (
            platform("A", "[\"1\"]", &own("a"))
                + &platform("A", "[\"1\"]", &own("b")).replace("10000000000001", "2"),
            "platforms[1].name: `A` is used twice",
        ),
        (
            platform("Acme", "[\"1\"]", &own("a")),
            "platforms[0].name: `Acme` is the name of a [[consumers]] entry this registration is not linked to",
        ),
        (platform("", "[\"1\"]", &own("a")), "platforms[0].name: required"),
        (
            platform("A", "[\"1\"]", &own("a")).replace("issuer = \"https://canvas.instructure.com\"", "issuer = \"\""),
            "platforms[0].issuer: required",
        ),
        (
            platform("A", "[\"1\"]", &own("a")).replace("\"10000000000001\"", "\" 1 \""),
            "platforms[0].client_id: ` 1 ` has spaces around it",
        ),
        // URLs.
        (
            platform("A", "[\"1\"]", &own("a")).replace("https://sso.canvaslms.com/api/lti/security", "http://sso.canvaslms.com"),
            "platforms[0].jwks_url: `http://sso.canvaslms.com/jwks` must be an https URL",
        ),
        (
            platform("A", "[\"1\"]", &own("a")).replace("https://sso.canvaslms.com/api/lti/security", "http://127.0.0.1:9"),
            "platforms[0].jwks_url: `http://127.0.0.1:9/jwks` is plain http; a platform on a loopback host may use it only with outcomes.allow_insecure_targets = true",
        ),
        (
            platform("A", "[\"1\"]", &own("a")).replace("https://sso.canvaslms.com/login", "https://10.1.2.3"),
            "platforms[0].auth_token_url: `https://10.1.2.3/oauth2/token` is a private or loopback address; set allow_private_endpoints = true",
        ),
        (
            platform("A", "[\"1\"]", &own("a")).replace("https://sso.canvaslms.com/api/lti/authorize_redirect", "moodle/auth.php"),
            "platforms[0].auth_login_url: `moodle/auth.php` is not an absolute URL",
        ),
        (
            platform("A", "[\"1\"]", &own("a")).replace("https://sso.canvaslms.com/login", "https://u:p@sso.canvaslms.com"),
            "platforms[0].auth_token_url: `https://u:[redacted]@sso.canvaslms.com/oauth2/token` must not carry credentials",
        ),
    ];
    for (extra, expected) in cases {
        let line = refusal(&extra);
        assert!(
            line.starts_with(expected),
            "expected {expected}\n     got {line}"
        );
    }
}

#[test]
fn platforms_accepted_edge_cases_and_warnings() {
    let own = "lms_id = \"a\"";
    // A linked platform may carry its consumer's name.
    let s = with(&platform(
        "Acme",
        "[\"1\"]",
        "consumer = \"Acme\"\ntrust_unsigned_migration = true",
    ))
    .unwrap();
    assert_eq!(s.tenants.len(), 1);
    let w = s.warnings();
    assert!(
        w.iter().any(|l| l.starts_with(
            "platforms[0].trust_unsigned_migration: an unsigned lti1p1.user_id is believed"
        ) && l.contains("\"Acme\"")),
        "{w:?}"
    );
    // Different client ids on one issuer are separate platforms.
    with(
        &(platform("A", "[\"*\"]", own)
            + &platform("B", "[\"*\"]", "lms_id = \"b\"").replace("10000000000001", "2")),
    )
    .unwrap();
    // A private address with allow_private_endpoints; the login URL is
    // a browser redirect, not a call of the tool's.
    let private = platform(
        "A",
        "[\"1\"]",
        &format!("{own}\nallow_private_endpoints = true"),
    )
    .replace("https://sso.canvaslms.com", "https://10.1.2.3");
    let s = with(&private).unwrap();
    assert!(s.platforms[0].allow_private_endpoints);
    with(&platform("A", "[\"1\"]", own).replace(
        "https://sso.canvaslms.com/api/lti/authorize",
        "https://10.1.2.3/authorize",
    ))
    .unwrap();
    // Plain http on loopback, for tests: accepted with a warning.
    let local =
        platform("A", "[\"1\"]", own).replace("https://sso.canvaslms.com", "http://127.0.0.1:8443");
    let s = with(&format!(
        "[outcomes]\nallow_insecure_targets = true\n{local}"
    ))
    .unwrap();
    let w = s.warnings();
    assert_eq!(
        w.iter()
            .filter(|l| l.contains(": plain http to a loopback host"))
            .count(),
        3,
        "{w:?}"
    );
    assert!(w
        .iter()
        .any(|l| l.starts_with("platforms[0].jwks_url: plain http")));
    // next_key_files is a step of a rotation: said so.
    let s = with(&format!(
        "[lti13]\nnext_key_files = [\"{}\"]\n",
        vector("tool-key-rsa2048-next.pem")
    ))
    .unwrap();
    assert!(s
        .warnings()
        .iter()
        .any(|l| l.starts_with("lti13.next_key_files: 1 key(s) published")));
    // Nothing to say about a plain registration.
    let s = with(&platform("A", "[\"1\"]", own)).unwrap();
    assert!(
        s.warnings().iter().all(|l| !l.starts_with("platforms")),
        "{:?}",
        s.warnings()
    );
}

/// Problems of `[[platforms]]` carry the file and line of their key.
#[test]
fn platform_problems_name_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    let text = format!(
        "{MIN}{}{}",
        platform("A", "[\"1\"]", "lms_id = \"a\""),
        platform("B", "[\"1\"]", "lms_id = \"b\"")
    );
    std::fs::write(&p, &text).unwrap();
    let err = load_from(Some(&p), Vec::new()).unwrap_err();
    let line = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("deployment_ids"))
        .nth(1)
        .map(|(n, _)| n + 1)
        .unwrap();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(
        err.0[0].starts_with(&format!(
            "{}:{line}: platforms[1].deployment_ids: `1` is also listed by `A`",
            p.display()
        )),
        "{err}"
    );
}

/// `[lti13]` is a section like the others: its keys come from the
/// environment too, with their variable named in a problem.
#[test]
fn lti13_keys_from_the_environment() {
    let key = vector("tool-key-rsa2048.pem");
    let raw = raw_from(
        MIN,
        &[
            ("LTIGATE_LTI13__KEY_FILE", key.as_str()),
            ("LTIGATE_LTI13__LEEWAY", "2m"),
        ],
    )
    .unwrap();
    let s = validate(&raw).unwrap();
    assert!(s.lti13.key.is_some());
    assert_eq!(s.lti13.leeway, Duration::from_secs(120));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, MIN).unwrap();
    let small = vector("tool-key-rsa1024.pem");
    let env = [("LTIGATE_LTI13__KEY_FILE".to_string(), small)];
    let err = load_from(Some(&p), env).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(
        err.0[0].starts_with(
            "LTIGATE_LTI13__KEY_FILE: lti13.key_file: an RSA key of fewer than 2048 bits"
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// session.assertion*
// ---------------------------------------------------------------------------

#[test]
fn the_assertion_is_off_by_default_and_needs_an_audience() {
    let s = with("").unwrap();
    assert!(s.session.assertion.is_none());
    // Keys and a lifetime alone turn nothing on (they are still checked).
    let s = with(&format!(
        "[session]\nassertion_key_file = \"{}\"\nassertion_ttl = \"1m\"\n",
        vector("assertion-key-p256.pem")
    ))
    .unwrap();
    assert!(s.session.assertion.is_none());
    assert!(refusal(&format!(
        "[session]\nassertion_key_file = \"{}\"\n",
        vector("tool-key-rsa2048.pem")
    ))
    .starts_with("session.assertion_key_file: "));

    assert_eq!(
        refusal("[session]\nassertion = true\n"),
        "session.assertion_audience: required when session.assertion = true: a value naming this deployment's upstream (e.g. \"https://platform.internal/acme\"), so that deployments sharing a key cannot accept each other's assertions"
    );
    let s = with(
        "[session]\nassertion = true\nassertion_audience = \"https://platform.internal/acme\"\n",
    )
    .unwrap();
    let a = s.session.assertion.unwrap();
    assert_eq!(a.audience, "https://platform.internal/acme");
    assert_eq!(a.ttl, Duration::from_secs(300));
    assert!(!a.course_roles);
    // On the embedded store a key is generated at start-up.
    assert!(a.key.is_none() && a.next_keys.is_empty() && a.previous_keys.is_empty());
    assert_eq!(
        refusal(&format!(
            "[session]\nassertion = true\nassertion_audience = \"{}\"\n",
            "a".repeat(257)
        )),
        "session.assertion_audience: at most 256 bytes, no control characters"
    );
}

#[test]
fn the_assertion_lifetime_is_between_two_seconds_and_an_hour() {
    let on = "[session]\nassertion = true\nassertion_audience = \"up\"\n";
    for (ttl, secs) in [("2s", 2), ("4s", 4), ("5m", 300), ("1h", 3600)] {
        let s = with(&format!("{on}assertion_ttl = \"{ttl}\"\n")).unwrap();
        assert_eq!(s.session.assertion.unwrap().ttl, Duration::from_secs(secs));
    }
    for ttl in ["1s", "1999ms", "0", "61m"] {
        assert_eq!(
            refusal(&format!("{on}assertion_ttl = \"{ttl}\"\n")),
            "session.assertion_ttl: must be between 2s and 1h (an assertion is reused until half of it has passed, and is good until it expires)",
            "{ttl}"
        );
    }
    assert!(
        refusal(&format!("{on}assertion_ttl = \"5 min\"\n")).starts_with("session.assertion_ttl: ")
    );
}

#[test]
fn the_assertion_key_is_pem_ec_p256_pkcs8_or_sec1() {
    let on = "[session]\nassertion = true\nassertion_audience = \"up\"\n";
    let pkcs8 = vector("assertion-key-p256.pem");
    let s = with(&format!("{on}assertion_key_file = \"{pkcs8}\"\n")).unwrap();
    let der = s.session.assertion.unwrap().key.unwrap();
    let key = crate::lti::jose::EcSigningKey::from_pkcs8_der(der.expose()).unwrap();
    assert_eq!(key.kid(), "Hd9RSljdLJr1DqSW1OVExvBEJdywMobsIHbo8Jzsn_E");
    // SEC1 (as Helm's genPrivateKey "ecdsa" writes it), from a file or
    // inline: the same key.
    let sec1 = vector("assertion-key-p256-sec1.pem");
    let pem = std::fs::read_to_string(&sec1).unwrap();
    for extra in [
        format!("assertion_key_file = \"{sec1}\"\n"),
        format!("assertion_key = '''\n{pem}'''\n"),
    ] {
        let s = with(&format!("{on}{extra}")).unwrap();
        let der = s.session.assertion.unwrap().key.unwrap();
        let again = crate::lti::jose::EcSigningKey::from_pkcs8_der(der.expose()).unwrap();
        assert_eq!(again.kid(), key.kid());
    }
    let wrong_kind = "not an EC P-256 key (the assertion is signed with ES256); generate one with openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256";
    for (file, expected) in [
        ("assertion-key-p384.pem", wrong_kind),
        ("assertion-key-p384-sec1.pem", wrong_kind),
        ("tool-key-rsa2048.pem", wrong_kind),
        (
            "tool-key-rsa2048-pkcs1.pem",
            "a PEM RSA PRIVATE KEY block, not an EC P-256 key",
        ),
        (
            "README.md",
            "not a PEM EC private key (-----BEGIN PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----)",
        ),
    ] {
        let line = refusal(&format!("{on}assertion_key_file = \"{}\"\n", vector(file)));
        assert!(
            line.starts_with("session.assertion_key_file: ") && line.contains(expected),
            "{file}: {line}"
        );
    }
    assert_eq!(
        refusal(&format!(
            "{on}assertion_key = '''\n-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END EC PRIVATE KEY-----\n'''\n"
        )),
        "session.assertion_key: an encrypted key; give it unencrypted (openssl pkcs8 -topk8 -nocrypt) and protect the file instead"
    );
    assert_eq!(
        refusal(&format!(
            "{on}assertion_key = \"x\"\nassertion_key_file = \"{pkcs8}\"\n"
        )),
        "session.assertion_key: set either session.assertion_key or session.assertion_key_file, not both"
    );
    // The next and previous keys, each checked and named by its place.
    let next = vector("assertion-key-p256-next.pem");
    let s = with(&format!(
        "{on}assertion_key_file = \"{pkcs8}\"\nassertion_next_key_files = [\"{next}\"]\nassertion_previous_key_files = [\"{sec1}\"]\n"
    ))
    .unwrap();
    let a = s.session.assertion.as_ref().unwrap();
    assert_eq!((a.next_keys.len(), a.previous_keys.len()), (1, 1));
    assert!(s
        .warnings()
        .iter()
        .any(|w| w.starts_with("session.assertion_next_key_files: 1 key(s) published")));
    let line = refusal(&format!(
        "{on}assertion_previous_key_files = [\"{next}\", \"{}\"]\n",
        vector("assertion-key-p384.pem")
    ));
    assert!(
        line.starts_with("session.assertion_previous_key_files[1]: not an EC P-256 key"),
        "{line}"
    );
    let line = refusal(&format!(
        "{on}assertion_next_key_files = [\"/nonexistent/next.pem\"]\n"
    ));
    assert!(
        line.starts_with(
            "session.assertion_next_key_files[0]: cannot read `/nonexistent/next.pem`"
        ),
        "{line}"
    );
}

#[test]
fn redis_with_the_assertion_needs_a_shared_key() {
    let redis = format!(
        "[store]\nurl = \"redis://127.0.0.1:6379\"\n[session]\nsecret = \"{}\"\nassertion = true\nassertion_audience = \"up\"\n",
        "s".repeat(32)
    );
    let line = refusal(&redis);
    assert!(
        line.starts_with("session.assertion_key: required with Redis when session.assertion = true (every replica must sign with, and publish, the same key)"),
        "{line}"
    );
    with(&format!(
        "{redis}assertion_key_file = \"{}\"\n",
        vector("assertion-key-p256.pem")
    ))
    .unwrap();
    // From the environment, as a deployment may give it.
    let pem = std::fs::read_to_string(vector("assertion-key-p256-sec1.pem")).unwrap();
    let raw = raw_from(
        &format!("{MIN}{redis}"),
        &[("LTIGATE_SESSION__ASSERTION_KEY", pem.as_str())],
    )
    .unwrap();
    assert!(validate(&raw)
        .unwrap()
        .session
        .assertion
        .unwrap()
        .key
        .is_some());
}
