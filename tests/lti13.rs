//! LTI 1.3 on the public listener: what is built so far of DESIGN §13.

mod support;

use ltigate::lti::jose::SigningKey;
use support::gate::{client, Gate};
use support::upstream::Upstream;

fn key_path(name: &str) -> String {
    format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn kid_of(name: &str) -> String {
    let pem = std::fs::read_to_string(key_path(name)).unwrap();
    SigningKey::from_pem(&pem).unwrap().kid().to_string()
}

/// The tool's key set: the current key and the next one, each with its
/// RFC 7638 thumbprint as `kid`, `alg` and `use`; cacheable for 5 minutes.
#[tokio::test]
async fn the_tools_keys_are_published_with_their_thumbprints() {
    let up = Upstream::start(None).await;
    let gate = Gate::start(
        &up.url(),
        &format!(
            "[lti13]\nkey_file = \"{}\"\nnext_key_files = [\"{}\"]\n",
            key_path("tool-key-rsa2048.pem"),
            key_path("tool-key-rsa2048-next.pem")
        ),
    )
    .await;
    let resp = client()
        .get(gate.url("/lti/1.3/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "public, max-age=300");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let jwks: serde_json::Value = resp.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    let kids: Vec<&str> = keys.iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(
        kids,
        [
            kid_of("tool-key-rsa2048.pem"),
            kid_of("tool-key-rsa2048-next.pem")
        ]
    );
    for k in keys {
        assert_eq!(
            (&k["kty"], &k["alg"], &k["use"]),
            (&"RSA".into(), &"RS256".into(), &"sig".into())
        );
        assert!(k.get("d").is_none(), "no private part: {k}");
    }
    // Only GET and HEAD.
    let post = client()
        .post(gate.url("/lti/1.3/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
}

/// Without a key the set is empty (nothing to verify yet), not an error.
#[tokio::test]
async fn without_a_key_the_set_is_empty() {
    let up = Upstream::start(None).await;
    let gate = Gate::start(&up.url(), "").await;
    let jwks: serde_json::Value = client()
        .get(gate.url("/lti/1.3/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks, serde_json::json!({"keys": []}));
}

/// On the embedded store with platforms and no key, a key is generated
/// once, kept beside the database (readable by ltigate's user alone) and
/// published; a restart keeps it.
#[tokio::test]
async fn the_embedded_store_generates_a_tool_key_once() {
    let up = Upstream::start(None).await;
    let platform = support::platform::Platform::start().await;
    let gate = Gate::start(&up.url(), &platform.registration("lms_id = \"plat\"")).await;
    let kids = |doc: serde_json::Value| -> Vec<String> {
        doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    };
    let fetch = |url: String| async move {
        client()
            .get(url)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    let first = kids(fetch(gate.url("/lti/1.3/jwks.json")).await);
    assert_eq!(first.len(), 1);
    let path = gate.dir.path().join("tool-key.pem");
    let pem = std::fs::read_to_string(&path).unwrap();
    let key = SigningKey::from_pem(&pem).unwrap();
    assert_eq!(key.kid(), first[0]);
    assert_eq!(key.public_jwk().bits(), 2048);
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let toml = std::fs::read_to_string(gate.dir.path().join("ltigate.toml")).unwrap();
    let gate = gate.restart(&toml).await;
    assert_eq!(kids(fetch(gate.url("/lti/1.3/jwks.json")).await), first);
}
