//! `ltigate export`, run as the binary: the text an LMS admin reads, the JSON
//! scripts read, the secret only on request, a clear error for an unknown
//! consumer; the XML is what the cartridge route serves; and the output for
//! the demo course is the one the README shows.

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
