//! The platform developers' headers contract (docs/identity-headers.md) against the real thing: its example request is
//! what ltigate sends for the launches it describes, its table names the
//! headers ltigate sends, and its Django and Express examples decode them.

mod proxykit;
mod support;

use std::process::Command;

use proxykit::{echo, echoed_headers, session};
use support::gate::Gate;
use support::lms::Launch;
use support::upstream::Upstream;

const DOC: &str = "docs/identity-headers.md";

/// The contract's page.
fn section() -> String {
    let path = format!("{}/{DOC}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The fenced code blocks of `lang`.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}\n");
    text.split(&fence)
        .skip(1)
        .map(|b| b.split("```").next().unwrap().to_string())
        .collect()
}

fn run(program: &str, args: &[&str], headers: &str) -> serde_json::Value {
    let out = Command::new(program)
        .args(args)
        .env("HEADERS_JSON", headers)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn the_documented_headers_are_what_ltigate_sends_and_the_examples_decode_them() {
    let doc = section();
    let up = Upstream::start(Some("upstream-token")).await;
    let gate = Gate::start(&up.url(), "").await;

    // The launches of the example.
    let cookie = session(&gate, &Launch::acme("u-1", "C-1"), None).await;
    let l = Launch::acme("u-1", "Kurs ä;1=x")
        .set("lis_person_name_given", "Zoë")
        .set("lis_person_name_family", "Ünal-O'Brien, Jr")
        .set(
            "roles",
            "urn:lti:role:ims/lis/Learner,urn:lti:instrole:ims/lis/Student",
        );
    let cookie = session(&gate, &l, Some(&cookie)).await;
    let e = echo(&gate, "/courses/1/page", Some(&cookie)).await;
    let sent = echoed_headers(&e);

    // Every X-LTI- line of the example, exactly; and no other.
    let example = &blocks(&doc, "http")[0];
    let mut documented = Vec::new();
    for line in example.lines().skip(1) {
        let (name, value) = line.split_once(": ").unwrap();
        let name = name.to_ascii_lowercase();
        assert!(sent.contains_key(&name), "{name} is not sent");
        if name.starts_with("x-lti-") {
            assert_eq!(sent[&name], value, "{name}");
            documented.push(name);
        }
    }
    let mut identity: Vec<&String> = sent.keys().filter(|k| k.starts_with("x-lti-")).collect();
    identity.sort();
    documented.sort();
    assert_eq!(identity, documented.iter().collect::<Vec<_>>());

    // The table lists the same headers.
    let mut table: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `X-LTI-"))
        .map(|l| {
            format!(
                "x-lti-{}",
                l.split('`').next().unwrap().to_ascii_lowercase()
            )
        })
        .collect();
    table.sort();
    assert_eq!(table, documented);

    // Both examples decode the request into the same identity.
    let expected = serde_json::json!({
        "user": "acme:u-1",
        "upstream_user": "up-3",
        "email": "ada@example.org",
        "given_name": "Zoë",
        "family_name": "Ünal-O'Brien, Jr",
        "course": "Kurs ä;1=x",
        "roles": ["Learner", "inst:Student"],
        "course_roles": {"C-1": ["Learner"], "Kurs ä;1=x": ["Learner", "inst:Student"]},
        "consumer": "Acme",
        "environment": "acme-env",
    });
    let meta: serde_json::Map<String, serde_json::Value> = sent
        .iter()
        .map(|(k, v)| {
            (
                format!("HTTP_{}", k.replace('-', "_").to_uppercase()),
                v.clone(),
            )
        })
        .collect();
    let python = format!(
        "{}\nimport json, os\nprint(json.dumps(lti_identity(json.loads(os.environ['HEADERS_JSON']))))\n",
        blocks(&doc, "python")[0]
    );
    let decoded = run(
        "python3",
        &["-c", &python],
        &serde_json::Value::Object(meta).to_string(),
    );
    assert_eq!(decoded, expected, "Django example");
    let plus = run(
        "python3",
        &[
            "-c",
            &python.replace(
                "json.loads(os.environ['HEADERS_JSON'])",
                "{'HTTP_X_LTI_USER': 'acme:u+10'}",
            ),
        ],
        "{}",
    );
    assert_eq!(plus["user"], "acme:u+10", "a plus stays a plus");

    let javascript = format!(
        "{}\nconst headers = JSON.parse(process.env.HEADERS_JSON);\n\
         const req = {{ get: (name) => headers[name.toLowerCase()] }};\n\
         console.log(JSON.stringify(ltiIdentity(req)));\n",
        blocks(&doc, "javascript")[0]
    );
    let decoded = run("node", &["-e", &javascript], &e["headers"].to_string());
    assert_eq!(decoded, expected, "Express example");
    let anonymous = run("node", &["-e", &javascript], "{}");
    assert_eq!(anonymous, serde_json::Value::Null);
}
