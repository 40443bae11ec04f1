//! `GET /lti/cartridge.xml[?course=ID]` over a real socket, read back by an
//! independent XML parser (Python's `xml.etree.ElementTree`), element by
//! element; and the launch URL it names is one ltigate accepts.

mod support;

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::gate::{base_config, client, Gate, PUBLIC_URL};
use support::lms::Launch;
use support::upstream::Upstream;

const CC: &str = "http://www.imsglobal.org/xsd/imslticc_v1p0";
const BLTI: &str = "http://www.imsglobal.org/xsd/imsbasiclti_v1p0";
const LTICM: &str = "http://www.imsglobal.org/xsd/imslticm_v1p0";
const LTICP: &str = "http://www.imsglobal.org/xsd/imslticp_v1p0";
const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

const TITLE: &str = r#"Learn & "grow" <fast>"#;
const DESCRIPTION: &str = "Courses für alle — 'everyone'";

/// Reads XML from stdin with ElementTree and prints the namespace
/// declarations and the element tree (Clark notation `{ns}local`) as JSON.
const READER: &str = r#"
import io, json, sys
import xml.etree.ElementTree as ET
data = sys.stdin.buffer.read()
ns = [list(p) for _, p in ET.iterparse(io.BytesIO(data), events=("start-ns",))]
def tree(e):
    return {"tag": e.tag, "attrib": dict(e.attrib), "text": (e.text or "").strip(),
            "children": [tree(c) for c in e]}
print(json.dumps({"ns": ns, "root": tree(ET.fromstring(data))}))
"#;

fn read_xml(xml: &str) -> Value {
    let mut child = Command::new("python3")
        .args(["-c", READER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed to read the XML independently");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(xml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ElementTree cannot parse the cartridge: {}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn q(ns: &str, local: &str) -> String {
    format!("{{{ns}}}{local}")
}

fn tags(e: &Value) -> Vec<String> {
    e["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["tag"].as_str().unwrap().to_string())
        .collect()
}

fn child<'a>(e: &'a Value, tag: &str) -> &'a Value {
    e["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["tag"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {e}"))
}

fn text(e: &Value, ns: &str, local: &str) -> String {
    child(e, &q(ns, local))["text"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `(name, text)` of each `lticm:property` child.
fn properties(e: &Value) -> Vec<(String, String)> {
    e["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["tag"], q(LTICM, "property"));
            (
                p["attrib"]["name"].as_str().unwrap().to_string(),
                p["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Checks every element of a cartridge whose launch URL is `launch_url`.
fn check_cartridge(doc: &Value, launch_url: &str, host: &str) {
    let mut ns: Vec<(String, String)> = doc["ns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
        .collect();
    ns.sort();
    let expected: Vec<(String, String)> = [
        ("", CC),
        ("blti", BLTI),
        ("lticm", LTICM),
        ("lticp", LTICP),
        ("xsi", XSI),
    ]
    .iter()
    .map(|(p, u)| (p.to_string(), u.to_string()))
    .collect();
    assert_eq!(ns, expected);

    let root = &doc["root"];
    assert_eq!(root["tag"], q(CC, "cartridge_basiclti_link"));
    let location: Vec<&str> = root["attrib"][q(XSI, "schemaLocation")]
        .as_str()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        location,
        [
            CC,
            "http://www.imsglobal.org/xsd/lti/ltiv1p0/imslticc_v1p0.xsd",
            BLTI,
            "http://www.imsglobal.org/xsd/lti/ltiv1p0/imsbasiclti_v1p0p1.xsd",
            LTICM,
            "http://www.imsglobal.org/xsd/lti/ltiv1p0/imslticm_v1p0.xsd",
            LTICP,
            "http://www.imsglobal.org/xsd/lti/ltiv1p0/imslticp_v1p0.xsd",
        ]
    );

    let https = launch_url.starts_with("https://");
    let mut expected_tags = vec![
        q(BLTI, "title"),
        q(BLTI, "description"),
        q(BLTI, "launch_url"),
    ];
    if https {
        expected_tags.push(q(BLTI, "secure_launch_url"));
    }
    expected_tags.extend([
        q(BLTI, "extensions"),
        q(CC, "cartridge_bundle"),
        q(CC, "cartridge_icon"),
    ]);
    assert_eq!(tags(root), expected_tags, "no custom element, nothing else");

    assert_eq!(text(root, BLTI, "title"), TITLE);
    assert_eq!(text(root, BLTI, "description"), DESCRIPTION);
    assert_eq!(text(root, BLTI, "launch_url"), launch_url);
    if https {
        assert_eq!(text(root, BLTI, "secure_launch_url"), launch_url);
    }
    let ext = child(root, &q(BLTI, "extensions"));
    assert_eq!(ext["attrib"]["platform"], "canvas.instructure.com");
    assert_eq!(
        properties(ext),
        [
            ("privacy_level".to_string(), "public".to_string()),
            ("domain".to_string(), host.to_string()),
        ]
    );
    assert_eq!(
        child(root, &q(CC, "cartridge_bundle"))["attrib"]["identifierref"],
        "BLTI001_Bundle"
    );
    assert_eq!(
        child(root, &q(CC, "cartridge_icon"))["attrib"]["identifierref"],
        "BLTI001_Icon"
    );
}

fn cartridge_config() -> String {
    format!(
        "[cartridge]\ntitle = {}\ndescription = {}\n",
        toml::Value::String(TITLE.into()),
        toml::Value::String(DESCRIPTION.into())
    )
}

async fn get(gate: &Gate, path: &str) -> reqwest::Response {
    client().get(gate.url(path)).send().await.unwrap()
}

async fn get_xml(gate: &Gate, path: &str) -> String {
    let r = get(gate, path).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/xml; charset=utf-8"
    );
    r.text().await.unwrap()
}

#[tokio::test]
async fn course_cartridge_parses_in_an_independent_reader() {
    let gate = Gate::start("http://127.0.0.1:9", &cartridge_config()).await;
    let xml = get_xml(&gate, "/lti/cartridge.xml?course=C-1%20%26%20Co").await;
    check_cartridge(
        &read_xml(&xml),
        &format!("{PUBLIC_URL}/lti/launch/C-1%20%26%20Co"),
        "learn.example.test",
    );
    // The escaping is the builder's, not an accident of the reader.
    assert!(xml.contains("<blti:title>Learn &amp; &quot;grow&quot; &lt;fast&gt;</blti:title>"));
}

#[tokio::test]
async fn plain_cartridge_names_the_plain_launch_url_and_no_custom_entry() {
    let gate = Gate::start("http://127.0.0.1:9", &cartridge_config()).await;
    for path in ["/lti/cartridge.xml", "/lti/cartridge.xml?course="] {
        let xml = get_xml(&gate, path).await;
        check_cartridge(
            &read_xml(&xml),
            &format!("{PUBLIC_URL}/lti/launch"),
            "learn.example.test",
        );
        assert!(!xml.contains("custom"), "{xml}");
    }
}

#[tokio::test]
async fn http_public_url_has_no_secure_launch_url() {
    let dir = tempfile::tempdir().unwrap();
    let toml = base_config("http://127.0.0.1:9", dir.path())
        .replace(PUBLIC_URL, "http://localhost:8080/prefix");
    let gate = Gate::start_with(&format!("{toml}\n{}", cartridge_config()), dir).await;
    let xml = get_xml(&gate, "/lti/cartridge.xml?course=C-1").await;
    check_cartridge(
        &read_xml(&xml),
        "http://localhost:8080/prefix/lti/launch/C-1",
        "localhost",
    );
}

#[tokio::test]
async fn methods_and_bad_course_ids() {
    let gate = Gate::start("http://127.0.0.1:9", "").await;
    let head = client()
        .head(gate.url("/lti/cartridge.xml?course=C-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.text().await.unwrap(), "");
    let post = client()
        .post(gate.url("/lti/cartridge.xml"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    let control = get(&gate, "/lti/cartridge.xml?course=C%011").await;
    assert_eq!(control.status(), 400);
    let long = get(
        &gate,
        &format!("/lti/cartridge.xml?course={}", "x".repeat(65)),
    )
    .await;
    assert_eq!(long.status(), 400);
    let json = client()
        .get(gate.url("/lti/cartridge.xml?course=C%0A"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 400);
    assert_eq!(
        json.json::<Value>().await.unwrap()["error"],
        "invalid_course"
    );
}

/// The course launch URL in the cartridge is one an LMS can launch as is.
#[tokio::test]
async fn the_cartridge_launch_url_is_accepted() {
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = Gate::start(&up.url(), "").await;
    let xml = get_xml(&gate, "/lti/cartridge.xml?course=C%202").await;
    let doc = read_xml(&xml);
    let launch_url = text(&doc["root"], BLTI, "launch_url");
    assert_eq!(launch_url, format!("{PUBLIC_URL}/lti/launch/C%202"));

    let mut l = Launch::new("acme-key", "acme-secret", "u-7", None);
    l.url = launch_url;
    let r = client()
        .post(gate.url(&l.path_and_query()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(l.body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let calls = up.api_calls();
    assert_eq!(calls[1].path, "/api/courses/C%202/subscriptions/acme%3Au-7");
}
