//! `ltigate export`, run as the binary: the text an LMS admin reads, the JSON
//! scripts read, the secret only on request, a clear error for an unknown
//! consumer; the XML is what the cartridge route serves; and the output for
//! the demo course is the one the README shows. For LTI 1.3 (`--lti13`,
//! `--platform`): the tool's URLs with no registration configured, each
//! LMS's form (Canvas's developer-key JSON parsed), the JSON form, a
//! registration's values, the tool's public key as the JWKS URL serves it,
//! and a `[[platforms]]` snippet that `check-config` accepts.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::gate::{base_config, client, Gate, PUBLIC_URL};

fn ltigate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ltigate"))
        .args(args)
        .env_remove("LTIGATE_CONFIG")
        .output()
        .expect("cannot run ltigate")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "ltigate failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// The test configuration (consumers `Acme`, `Beta`) written to `dir`.
fn config(dir: &Path) -> String {
    let path = dir.join("ltigate.toml");
    std::fs::write(&path, base_config("http://127.0.0.1:9", dir)).unwrap();
    path.to_string_lossy().into_owned()
}

fn export(config: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "export",
        "--config",
        config,
        "--consumer",
        "Acme",
        "--course",
        "C 1",
    ];
    args.extend_from_slice(extra);
    ltigate(&args)
}

#[test]
fn text_output_has_everything_an_lms_admin_needs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let out = stdout(&export(&cfg, &[]));
    let (head, xml) = out.split_once("Cartridge XML:\n").unwrap();
    assert_eq!(
        head,
        format!(
            "Course C 1 for consumer \"Acme\"\n\n\
             Either a launch URL with a custom parameter:\n\
             \x20 Launch URL:        {PUBLIC_URL}/lti/launch\n\
             \x20 Custom parameter:  course=C 1\n\
             or the course in the launch URL (no custom parameter):\n\
             \x20 Launch URL:        {PUBLIC_URL}/lti/launch/C%201\n\n\
             Consumer key:        acme-key\n\
             Shared secret:       (hidden; add --show-secret to print it)\n\
             Cartridge URL:       {PUBLIC_URL}/lti/cartridge.xml?course=C%201\n\n"
        )
    );
    assert!(xml.starts_with("<?xml"));
    assert!(xml.contains(&format!(
        "<blti:launch_url>{PUBLIC_URL}/lti/launch/C%201</blti:launch_url>"
    )));
    assert!(!out.contains("acme-secret"));

    let shown = stdout(&export(&cfg, &["--show-secret"]));
    assert!(shown.contains("\nShared secret:       acme-secret\n"));
    // Rotation: the newest secret is the one to give out.
    let beta = stdout(&ltigate(&[
        "export",
        "--config",
        &cfg,
        "--consumer",
        "Beta",
        "--course",
        "C-1",
        "--show-secret",
    ]));
    assert!(beta.contains("\nShared secret:       beta-new\n"));
}

#[test]
fn json_output_for_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let text = stdout(&export(&cfg, &[]));
    let json: Value = serde_json::from_str(&stdout(&export(&cfg, &["--format", "json"]))).unwrap();
    assert_eq!(json["consumer"], "Acme");
    assert_eq!(json["course"], "C 1");
    assert_eq!(json["launch_url"], format!("{PUBLIC_URL}/lti/launch"));
    assert_eq!(json["custom_parameter"], "course=C 1");
    assert_eq!(
        json["course_launch_url"],
        format!("{PUBLIC_URL}/lti/launch/C%201")
    );
    assert_eq!(json["consumer_key"], "acme-key");
    assert_eq!(
        json["cartridge_url"],
        format!("{PUBLIC_URL}/lti/cartridge.xml?course=C%201")
    );
    assert_eq!(
        json["cartridge_xml"].as_str().unwrap(),
        text.split_once("Cartridge XML:\n").unwrap().1
    );
    assert!(json.get("shared_secret").is_none());
    let with: Value = serde_json::from_str(&stdout(&export(
        &cfg,
        &["--format", "json", "--show-secret"],
    )))
    .unwrap();
    assert_eq!(with["shared_secret"], "acme-secret");
}

#[test]
fn unknown_consumer_lists_the_configured_names() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let out = ltigate(&[
        "export",
        "--config",
        &cfg,
        "--consumer",
        "acme-key",
        "--course",
        "C-1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "export: unknown consumer `acme-key`; configured consumers: `Acme`, `Beta`\n"
    );
    let bad = ltigate(&[
        "export",
        "--config",
        &cfg,
        "--consumer",
        "Acme",
        "--course",
        "",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    let missing = ltigate(&["export", "--config", &cfg, "--consumer", "Acme"]);
    assert!(!missing.status.success(), "--course is required");
}

/// The exported XML is byte for byte what the cartridge route serves.
#[tokio::test]
async fn exported_xml_is_the_served_cartridge() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let json: Value = serde_json::from_str(&stdout(&export(&cfg, &["--format", "json"]))).unwrap();
    let gate = Gate::start("http://127.0.0.1:9", "").await;
    let served = client()
        .get(gate.url("/lti/cartridge.xml?course=C%201"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(json["cartridge_xml"].as_str().unwrap(), served);
}

/// The "Connecting an LMS" guide shows the export of the demo course
/// verbatim.
#[test]
fn the_guide_shows_the_demo_export() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("demo.toml");
    let printed = stdout(&ltigate(&["demo", "--print-config"]));
    std::fs::write(&cfg, printed).unwrap();
    let cfg = cfg.to_string_lossy();
    let out = stdout(&ltigate(&[
        "export",
        "--config",
        &cfg,
        "--consumer",
        "Demo LMS",
        "--course",
        "DEMO-101",
        "--show-secret",
    ]));
    let block = format!("```text\n{out}```\n");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let guides: Vec<(&str, String)> = ["docs/connecting-an-lms.md"]
        .into_iter()
        .filter_map(|f| Some((f, std::fs::read_to_string(root.join(f)).ok()?)))
        .filter(|(_, text)| text.contains("# Connecting an LMS"))
        .collect();
    assert!(!guides.is_empty(), "no \"Connecting an LMS\" section found");
    for (file, text) in guides {
        assert!(
            text.contains(&block),
            "{file} must show this output verbatim:\n{out}"
        );
    }
}

// ---- LTI 1.3 -------------------------------------------------------------

const LMS_NAMES: [&str; 5] = ["canvas", "moodle", "brightspace", "blackboard", "sakai"];
const SCORE_SCOPE: &str = "https://purl.imsglobal.org/spec/lti-ags/scope/score";

/// Two registrations: one linked to consumer `Acme`, one a tenant of its
/// own on the same (hosted Canvas) issuer and client id.
const PLATFORMS: &str = r#"
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
"#;

/// The test configuration plus `extra`, written to `dir`.
fn config_with(dir: &Path, extra: &str) -> String {
    let path = dir.join("ltigate.toml");
    let toml = format!("{}\n{extra}", base_config("http://127.0.0.1:9", dir));
    std::fs::write(&path, toml).unwrap();
    path.to_string_lossy().into_owned()
}

fn lti13(config: &str, extra: &[&str]) -> Output {
    let mut args = vec!["export", "--config", config, "--lti13"];
    args.extend_from_slice(extra);
    ltigate(&args)
}

fn lti13_json(config: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--format", "json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&stdout(&lti13(config, &args))).unwrap()
}

/// The pretty-printed JSON object that follows `header` in `text`.
fn json_after(text: &str, header: &str) -> Value {
    let (_, rest) = text
        .split_once(header)
        .unwrap_or_else(|| panic!("no {header:?} in:\n{text}"));
    let end = rest.find("\n}\n").expect("the object's closing brace") + 2;
    serde_json::from_str(&rest[..end]).unwrap()
}

/// `--lti13` works on a configuration without any `[[platforms]]`: the
/// tool's URLs, the score scope, the LMS names, what to bring back.
#[test]
fn lti13_needs_no_registration() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let out = stdout(&lti13(&cfg, &[]));
    for line in [
        format!("  Login URL (OIDC login initiation):  {PUBLIC_URL}/lti/1.3/login\n"),
        format!("  Redirect URI:                       {PUBLIC_URL}/lti/1.3/launch\n"),
        format!("  JWKS URL (the tool's keyset):       {PUBLIC_URL}/lti/1.3/jwks.json\n"),
        format!("  Target link URI:                    {PUBLIC_URL}/lti/1.3/launch\n"),
        format!("  Scope (grades, AGS):                {SCORE_SCOPE}\n"),
        format!("add --lms NAME, one of: {}\n", LMS_NAMES.join(", ")),
        "with what the LMS shows):\n[[platforms]]\n".to_string(),
    ] {
        assert!(out.contains(&line), "{line:?} not in:\n{out}");
    }
    for key in [
        "issuer",
        "client_id",
        "deployment_ids",
        "auth_login_url",
        "auth_token_url",
        "token_audience",
        "jwks_url",
    ] {
        assert!(out.contains(&format!("\n  {key} ")), "{key} not in:\n{out}");
    }
    // No key configured: said so, and no JWK printed.
    assert!(
        out.contains("none configured ([lti13] key_file; on the embedded store"),
        "{out}"
    );
    assert!(!out.contains("\"kty\""), "{out}");
    // No course: the target link names none, and the text says how links
    // name theirs.
    assert!(!out.contains("or the plain target link URI"), "{out}");
    assert!(out.contains("the custom parameter course=ID"), "{out}");
    assert!(
        out.contains(&format!("course appended: {PUBLIC_URL}/lti/1.3/launch/ID)")),
        "{out}"
    );
}

/// Canvas: the developer-key JSON parses and holds what Canvas needs,
/// with the plain target link and with the course's.
#[test]
fn canvas_developer_key_json_parses() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    for (course, link) in [
        (None, format!("{PUBLIC_URL}/lti/1.3/launch")),
        (Some("C 1"), format!("{PUBLIC_URL}/lti/1.3/launch/C%201")),
    ] {
        let mut args = vec!["--lms", "canvas"];
        if let Some(c) = course {
            args.extend(["--course", c]);
        }
        let text = stdout(&lti13(&cfg, &args));
        assert!(
            text.contains(&format!(
                "  Redirect URIs:         {PUBLIC_URL}/lti/1.3/launch\n"
            )),
            "{text}"
        );
        let key = json_after(&text, "Developer key JSON (Method: Paste JSON):\n");
        assert_eq!(
            key["oidc_initiation_url"],
            format!("{PUBLIC_URL}/lti/1.3/login")
        );
        assert_eq!(key["target_link_uri"], link.as_str());
        assert_eq!(
            key["public_jwk_url"],
            format!("{PUBLIC_URL}/lti/1.3/jwks.json")
        );
        assert_eq!(key["scopes"], serde_json::json!([SCORE_SCOPE]));
        assert!(key["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(key["description"].as_str().is_some_and(|t| !t.is_empty()));
        let ext = &key["extensions"][0];
        assert_eq!(ext["platform"], "canvas.instructure.com");
        assert_eq!(ext["privacy_level"], "public");
        assert_eq!(ext["domain"], "learn.example.test");
        let placements = ext["settings"]["placements"].as_array().unwrap();
        assert!(!placements.is_empty());
        for p in placements {
            assert_eq!(p["message_type"], "LtiResourceLinkRequest", "{p}");
            assert_eq!(p["target_link_uri"], link.as_str(), "{p}");
        }
        // The JSON form carries the same object.
        let json = lti13_json(&cfg, &args);
        assert_eq!(json["lms"]["developer_key_json"], key);
        // What comes back: hosted Canvas's issuer and endpoints.
        let snippet: toml::Table = json["platforms_toml"].as_str().unwrap().parse().unwrap();
        let entry = &snippet["platforms"][0];
        assert_eq!(
            entry["issuer"].as_str(),
            Some("https://canvas.instructure.com")
        );
        assert_eq!(
            entry["jwks_url"].as_str(),
            Some("https://sso.canvaslms.com/api/lti/security/jwks")
        );
    }
}

/// `--format json`: one object with every value, the Moodle form included.
#[test]
fn lti13_json_holds_everything() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let json = lti13_json(&cfg, &["--lms", "moodle", "--course", "C 1"]);
    assert_eq!(json["public_url"], PUBLIC_URL);
    assert_eq!(json["login_url"], format!("{PUBLIC_URL}/lti/1.3/login"));
    assert_eq!(json["redirect_uri"], format!("{PUBLIC_URL}/lti/1.3/launch"));
    assert_eq!(json["jwks_url"], format!("{PUBLIC_URL}/lti/1.3/jwks.json"));
    assert_eq!(
        json["target_link_uri"],
        format!("{PUBLIC_URL}/lti/1.3/launch")
    );
    assert_eq!(json["course"], "C 1");
    assert_eq!(
        json["course_target_link_uri"],
        format!("{PUBLIC_URL}/lti/1.3/launch/C%201")
    );
    assert_eq!(json["custom_parameter"], "course=C 1");
    assert_eq!(json["score_scope"], SCORE_SCOPE);
    assert_eq!(json["tool_key"], Value::Null);
    assert_eq!(json["lms_names"], serde_json::json!(LMS_NAMES));
    assert!(json.get("platform").is_none());
    let lms = &json["lms"];
    assert_eq!(lms["name"], "moodle");
    let field = |name: &str| -> String {
        lms["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["field"] == name)
            .unwrap_or_else(|| panic!("no field {name}: {lms}"))["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        field("Tool URL"),
        format!("{PUBLIC_URL}/lti/1.3/launch/C%201")
    );
    assert_eq!(
        field("Initiate login URL"),
        format!("{PUBLIC_URL}/lti/1.3/login")
    );
    assert_eq!(
        field("Redirection URI(s)"),
        format!("{PUBLIC_URL}/lti/1.3/launch")
    );
    assert_eq!(field("Public key type"), "Keyset URL");
    assert_eq!(
        field("Public keyset"),
        format!("{PUBLIC_URL}/lti/1.3/jwks.json")
    );
    assert_eq!(field("Share launcher's name with tool"), "Always");
    assert_eq!(field("Share launcher's email with tool"), "Always");
    let keys: Vec<&str> = json["bring_back"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "issuer",
            "client_id",
            "deployment_ids",
            "auth_login_url",
            "auth_token_url",
            "jwks_url"
        ]
    );
    // Without --lms and --course, those keys are absent, not empty.
    let plain = lti13_json(&cfg, &[]);
    for key in [
        "lms",
        "course",
        "course_target_link_uri",
        "custom_parameter",
    ] {
        assert!(plain.get(key).is_none(), "{key}: {plain}");
    }
}

/// Every `--lms` value works, in text and JSON, names its own form, and
/// its `[[platforms]]` snippet, pasted as it is, is a registration
/// `check-config` accepts (Brightspace's with its own token audience).
#[test]
fn every_lms_has_a_form_and_a_snippet_check_config_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut titles = Vec::new();
    for lms in LMS_NAMES {
        let text = stdout(&lti13(&cfg, &["--lms", lms]));
        let json = lti13_json(&cfg, &["--lms", lms]);
        assert_eq!(json["lms"]["name"], lms);
        let title = json["lms"]["title"].as_str().unwrap().to_string();
        assert!(text.contains(&format!("\n{title}: ")), "{lms}:\n{text}");
        let fields = json["lms"]["fields"].as_array().unwrap();
        let values: Vec<&str> = fields
            .iter()
            .map(|f| f["value"].as_str().unwrap())
            .collect();
        // Canvas takes the login and JWKS URLs in its developer-key JSON.
        let urls: &[&str] = if lms == "canvas" {
            &["/lti/1.3/launch"]
        } else {
            &["/lti/1.3/login", "/lti/1.3/launch", "/lti/1.3/jwks.json"]
        };
        for url in urls {
            let url = format!("{PUBLIC_URL}{url}");
            assert!(values.contains(&url.as_str()), "{lms}: {url} in no field");
        }
        titles.push(title);

        let snippet = json["platforms_toml"].as_str().unwrap();
        assert!(text.contains(snippet), "{lms}: the text lacks the snippet");
        let entry: toml::Table = snippet.parse().unwrap();
        assert_eq!(
            entry["platforms"][0]
                .get("token_audience")
                .and_then(|a| a.as_str()),
            (lms == "brightspace").then_some("https://api.brightspace.com/auth/token"),
            "{lms}"
        );
        let pasted = dir.path().join(format!("{lms}.toml"));
        let base = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&pasted, format!("{base}\n{snippet}")).unwrap();
        let check = ltigate(&["check-config", "--config", &pasted.to_string_lossy()]);
        assert!(
            check.status.success(),
            "{lms}: {}\n{snippet}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    titles.dedup();
    assert_eq!(titles.len(), LMS_NAMES.len());
    // What each LMS is known for.
    let then = |lms: &str| {
        let json = lti13_json(&cfg, &["--lms", lms]);
        let steps: Vec<String> = json["lms"]["then"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        steps.join("\n")
    };
    assert!(then("brightspace").contains("bring it back as token_audience"));
    assert!(then("blackboard").contains("one client id shared by every school"));
    assert!(then("blackboard").contains("deployment_ids picks the school"));
    assert!(then("canvas").contains("Configuration Type: By Client ID"));
    let bad = lti13(&cfg, &["--lms", "webct"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("canvas"));
}

/// `--platform NAME` adds the registration's values: linked to a consumer,
/// or a tenant of its own; it implies `--lti13`.
#[test]
fn platform_adds_its_registration() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(dir.path(), PLATFORMS);
    let text = stdout(&ltigate(&[
        "export",
        "--config",
        &cfg,
        "--platform",
        "Acme Canvas",
    ]));
    for line in [
        "Registration \"Acme Canvas\" (configured):\n",
        "  Issuer:           https://canvas.instructure.com\n",
        "  Client ID:        10000000000001\n",
        "  Deployment IDs:   1, 2\n",
        "  Auth login URL:   https://sso.canvaslms.com/api/lti/authorize_redirect\n",
        "  Token URL:        https://sso.canvaslms.com/login/oauth2/token\n",
        "  Token audience:   https://sso.canvaslms.com/login/oauth2/token\n",
        "  JWKS URL:         https://sso.canvaslms.com/api/lti/security/jwks\n",
        "  Learners:         those of LTI 1.1 consumer \"Acme\" (lms_id acme)\n",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
    // The general values are still there.
    assert!(
        text.contains(&format!("{PUBLIC_URL}/lti/1.3/login\n")),
        "{text}"
    );

    let json: Value = serde_json::from_str(&stdout(&ltigate(&[
        "export",
        "--config",
        &cfg,
        "--lti13",
        "--platform",
        "Other School",
        "--lms",
        "canvas",
        "--format",
        "json",
    ])))
    .unwrap();
    let p = &json["platform"];
    assert_eq!(p["name"], "Other School");
    assert_eq!(p["issuer"], "https://canvas.instructure.com");
    assert_eq!(p["client_id"], "10000000000001");
    assert_eq!(p["deployment_ids"], serde_json::json!(["3"]));
    assert_eq!(p["tenant"], "Other School");
    assert_eq!(p["lms_id"], "other");
    assert!(p.get("consumer").is_none(), "{p}");
    assert_eq!(json["lms"]["name"], "canvas");
    assert_eq!(json["login_url"], format!("{PUBLIC_URL}/lti/1.3/login"));
}

#[test]
fn unknown_platform_lists_the_configured_names() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(dir.path(), PLATFORMS);
    let out = ltigate(&["export", "--config", &cfg, "--platform", "acme canvas"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "export: unknown platform `acme canvas`; configured platforms: `Acme Canvas`, `Other School`\n"
    );
    // None configured: the error says so.
    let bare = config(dir.path());
    let out = ltigate(&["export", "--config", &bare, "--platform", "Acme Canvas"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "export: unknown platform `Acme Canvas`; configured platforms: none\n"
    );
}

/// The flags of the two protocols do not mix, and `export` needs one.
#[test]
fn lti11_and_lti13_flags_do_not_mix() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    for args in [
        &["export", "--config", &cfg][..],
        &[
            "export",
            "--config",
            &cfg,
            "--lti13",
            "--consumer",
            "Acme",
            "--course",
            "C",
        ],
        &["export", "--config", &cfg, "--lti13", "--show-secret"],
        &[
            "export",
            "--config",
            &cfg,
            "--consumer",
            "Acme",
            "--course",
            "C",
            "--lms",
            "moodle",
        ],
        &["export", "--config", &cfg, "--lti13", "--course", ""],
    ] {
        let out = ltigate(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// With `[lti13] key_file`, the export carries the current key's public
/// JWK, exactly as the JWKS URL serves it, for an LMS that takes a key.
#[tokio::test]
async fn the_tool_key_is_the_one_the_jwks_url_serves() {
    let dir = tempfile::tempdir().unwrap();
    let key = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/tool-test-key.pem");
    let cfg = config_with(dir.path(), &format!("[lti13]\nkey_file = \"{key}\"\n"));
    let json = lti13_json(&cfg, &[]);
    let kid = json["tool_key"]["kid"].as_str().unwrap().to_string();
    let jwk = json["tool_key"]["jwk"].clone();
    assert_eq!(jwk["kid"], kid.as_str());
    assert_eq!(jwk["kty"], "RSA");
    assert!(jwk.get("d").is_none(), "a private part: {jwk}");
    let text = stdout(&lti13(&cfg, &[]));
    assert!(
        text.contains(&format!("kid {kid} (public JWK below)")),
        "{text}"
    );
    let header = "The tool's public JWK, for a platform that takes a key instead of the JWKS\n\
                  URL (a pasted key must be replaced by hand at each key rotation):\n";
    assert_eq!(json_after(&text, header), jwk);
    assert!(!text.contains("PRIVATE"));

    let toml = std::fs::read_to_string(&cfg).unwrap();
    let gate = Gate::start_with(&toml, tempfile::tempdir().unwrap()).await;
    let served: Value = client()
        .get(gate.url("/lti/1.3/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served["keys"][0], jwk);
}
