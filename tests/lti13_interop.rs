//! LTI 1.3 against an independent platform: `lti1p3platform` (PyPI), run
//! by `tests/lms/lti13_platform.py`, plays the LMS — its own RSA key and
//! JWKS server on loopback, its own login initiation, its own id_token for
//! the authentication request ltigate sends it, with its AGS endpoint
//! claim, its token endpoint verifying ltigate's client assertion against
//! ltigate's published JWKS, its scores handler taking the grade — and
//! ltigate is the tool. What lti1p3platform does not check of a tool (the
//! authentication request's fixed parameters, `lti_message_hint` byte for
//! byte, the state cookie's attributes, the score's fields) the test
//! checks itself; what it does not check of a token request or a score
//! call (the assertion's `iss`, `sub`, `aud` and `jti`, the score scope,
//! the content type) the script checks.
//!
//! Needs `python3` with lti1p3platform (tests/requirements.txt, installed
//! into `.venv` by scripts/test): skipped without it, except on CI, where
//! it fails.

mod support;

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use support::gate::{client, Gate, PUBLIC_URL};
use support::upstream::Upstream;

const ISSUER: &str = "https://lms.interop.example";
const CLIENT_ID: &str = "py-client-7";
const DEPLOYMENT: &str = "py-dep-1";
const LEARNER: &str = "py-learner-1";
const COURSE: &str = "C-py";
const TOOL_KEY: &str = "tests/vectors/tool-key-rsa2048.pem";
const LEARNER_ROLE: &str = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner";
/// A message hint that survives only byte-for-byte copying: spaces, `+`,
/// `&`, `=`, `%`, `/`, `?` and a non-ASCII letter.
const HINT: &str = "rl 42+a&b=c%2F/é?";
const ENDPOINT: &str = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint";
const SCORE_SCOPE: &str = "https://purl.imsglobal.org/spec/lti-ags/scope/score";
/// The line item lti1p3platform's launch names: Moodle-style, with a query.
const LINEITEM: &str = "/lineitems/1/lineitem?type_id=2";

/// The Python platform: a child process serving on loopback until its
/// standard input closes or it is killed (when this is dropped).
struct PyPlatform {
    child: Child,
    base: String,
}

impl Drop for PyPlatform {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PyPlatform {
    /// Starts the platform script and waits for the address it serves on.
    async fn start() -> PyPlatform {
        let spec = json!({
            "issuer": ISSUER,
            "client_id": CLIENT_ID,
            "deployment_id": DEPLOYMENT,
            "login_url": format!("{PUBLIC_URL}/lti/1.3/login"),
            "target_link_uri": launch_url(),
            "custom": {"course": COURSE},
            "user": {
                "id": LEARNER,
                "name": "Ada Lovelace",
                "email": "ada@example.org",
                "roles": [LEARNER_ROLE],
            },
        });
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lms/lti13_platform.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(spec.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 {script}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let read = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map(|_| line)
        });
        let line = match tokio::time::timeout(Duration::from_secs(30), read).await {
            Ok(Ok(Ok(line))) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the platform script did not start: {other:?}");
            }
        };
        let mut platform = PyPlatform {
            child,
            base: String::new(),
        };
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "the platform script printed {line:?} ({e}); status {:?}",
                platform.child.try_wait()
            )
        });
        platform.base = ready["base"].as_str().expect("base").to_string();
        platform
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Registers the tool's JWKS URL with the platform, as an LMS admin
    /// does when adding the tool.
    async fn register_tool(&self, jwks_url: &str) {
        let r = client()
            .post(self.url("/admin/tool"))
            .json(&json!({ "jwks_url": jwks_url }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    }

    /// What the platform's AGS side saw: its scores, its issued tokens and
    /// the requests it refused.
    async fn ags(&self) -> Value {
        client()
            .get(self.url("/admin/ags"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits (at most `within`) for the platform to have recorded `n`
    /// scores; what it saw then.
    async fn wait_scores(&self, n: usize, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let ags = self.ags().await;
            let recorded = ags["scores"].as_array().map_or(0, Vec::len);
            if recorded >= n {
                return ags;
            }
            assert!(
                Instant::now() < deadline,
                "{recorded} of {n} scores recorded: {ags}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `[[platforms]]` registration of this platform.
    fn registration(&self) -> String {
        format!(
            r#"
[[platforms]]
name = "python"
issuer = "{ISSUER}"
client_id = "{CLIENT_ID}"
deployment_ids = ["{DEPLOYMENT}"]
auth_login_url = "{auth}"
auth_token_url = "{token}"
jwks_url = "{jwks}"
lms_id = "py"
"#,
            auth = self.url("/authorize"),
            token = self.url("/token"),
            jwks = self.url("/jwks"),
        )
    }
}

struct Setup {
    up: Upstream,
    gate: Gate,
    platform: PyPlatform,
}

/// The Python platform and ltigate with its registration; `None` when the
/// test is skipped.
async fn setup() -> Option<Setup> {
    if !support::python_with("lti1p3platform, cryptography") {
        return None;
    }
    let platform = PyPlatform::start().await;
    let up = Upstream::start(Some("upstream-token")).await;
    let config = format!(
        "[lti13]\nkey_file = \"{}/{TOOL_KEY}\"\n{}",
        env!("CARGO_MANIFEST_DIR"),
        platform.registration()
    );
    let gate = Gate::start(&up.url(), &config).await;
    platform
        .register_tool(&gate.url("/lti/1.3/jwks.json"))
        .await;
    Some(Setup { up, gate, platform })
}

fn launch_url() -> String {
    format!("{PUBLIC_URL}/lti/1.3/launch")
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// The query pairs of `url`, in order, decoded.
fn pairs(url: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect()
}

fn value<'a>(pairs: &'a [(String, String)], name: &str) -> &'a str {
    let found: Vec<&str> = pairs
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(found.len(), 1, "{name} once in {pairs:?}");
    found[0]
}

/// How the browser delivers the platform's login initiation to ltigate.
#[derive(Clone, Copy)]
enum Via {
    Get,
    Post,
}

/// After a login: the authentication request ltigate redirected to and the
/// state cookie it set.
struct Login {
    auth_url: String,
    state: String,
    nonce: String,
    /// `name=value` of the state cookie.
    cookie: String,
}

/// The platform initiates a login (message hint [`HINT`]); the test
/// delivers it to ltigate `via` GET or POST and checks ltigate's answer in
/// full.
async fn login(s: &Setup, via: Via) -> Login {
    let r = client()
        .get(s.platform.url("/initiate"))
        .query(&[("lti_message_hint", HINT)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    let initiation = location(&r);
    let login_url = format!("{PUBLIC_URL}/lti/1.3/login?");
    let query = initiation
        .strip_prefix(&login_url)
        .unwrap_or_else(|| panic!("the initiation goes to the tool's login URL: {initiation}"));
    let sent = pairs(&initiation);
    for (name, want) in [
        ("iss", ISSUER),
        ("target_link_uri", &launch_url()),
        ("login_hint", LEARNER),
        ("lti_message_hint", HINT),
        ("client_id", CLIENT_ID),
        ("lti_deployment_id", DEPLOYMENT),
    ] {
        assert_eq!(value(&sent, name), want, "initiation {name}");
    }

    // The platform's query string, as it built it, to ltigate's login.
    let req = match via {
        Via::Get => client().get(s.gate.url(&format!("/lti/1.3/login?{query}"))),
        Via::Post => client()
            .post(s.gate.url("/lti/1.3/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(query.to_string()),
    };
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());

    // The authentication request: to the registration's auth_login_url,
    // exactly these parameters, each once.
    let auth_url = location(&r);
    assert!(
        auth_url.starts_with(&format!("{}?", s.platform.url("/authorize"))),
        "{auth_url}"
    );
    let auth = pairs(&auth_url);
    let mut names: Vec<&str> = auth.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "client_id",
            "login_hint",
            "lti_message_hint",
            "nonce",
            "prompt",
            "redirect_uri",
            "response_mode",
            "response_type",
            "scope",
            "state",
        ],
        "{auth_url}"
    );
    for (name, want) in [
        ("scope", "openid"),
        ("response_type", "id_token"),
        ("response_mode", "form_post"),
        ("prompt", "none"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", &launch_url()),
        ("login_hint", LEARNER),
        ("lti_message_hint", HINT),
    ] {
        assert_eq!(value(&auth, name), want, "auth request {name}");
    }
    let (state, nonce) = (value(&auth, "state"), value(&auth, "nonce"));
    assert!(nonce.len() >= 22, "nonce {nonce:?}");
    assert!(state.len() > 100, "state {state:?}");

    // One state cookie, bound to this login: `__Host-` rules (Secure, Path=/,
    // no Domain), not readable by scripts, sent in the platform's cross-site
    // form post, kept per top-level site, and gone with the state.
    let state_cookies: Vec<String> = set_cookies(&r)
        .into_iter()
        .filter(|c| c.starts_with("__Host-ltigate_s_"))
        .collect();
    assert_eq!(state_cookies.len(), 1, "{state_cookies:?}");
    let mut parts = state_cookies[0].split(';').map(str::trim);
    let pair = parts.next().unwrap().to_string();
    let (name, cookie_value) = pair.split_once('=').unwrap();
    let id = &name["__Host-ltigate_s_".len()..];
    assert!(
        id.len() == 16
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{name}"
    );
    assert!(!cookie_value.is_empty(), "{pair}");
    let attributes: Vec<&str> = parts.collect();
    for want in [
        "Secure",
        "HttpOnly",
        "SameSite=None",
        "Partitioned",
        "Path=/",
        "Max-Age=600",
    ] {
        assert!(
            attributes.iter().any(|a| a.eq_ignore_ascii_case(want)),
            "{want} in {attributes:?}"
        );
    }
    assert!(
        !attributes
            .iter()
            .any(|a| a.to_ascii_lowercase().starts_with("domain")),
        "no Domain: {attributes:?}"
    );

    Login {
        state: state.to_string(),
        nonce: nonce.to_string(),
        auth_url,
        cookie: pair,
    }
}

/// What the platform's auto-post form would send to the tool.
struct Form {
    launch_url: String,
    id_token: String,
    state: String,
    /// The id_token's claims.
    claims: Value,
}

/// The browser follows ltigate's redirect to the platform, which answers
/// the authentication request with its launch form.
async fn authorize(s: &Setup, login: &Login) -> Form {
    let r = client().get(&login.auth_url).send().await.unwrap();
    let status = r.status();
    let form: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "the platform refused: {form}");
    let mut form = Form {
        launch_url: form["launch_url"].as_str().unwrap().to_string(),
        id_token: form["id_token"].as_str().unwrap().to_string(),
        state: form["state"].as_str().unwrap().to_string(),
        claims: Value::Null,
    };
    assert_eq!(form.launch_url, launch_url());
    assert_eq!(form.state, login.state);
    // The token is the platform's: its key, ltigate's nonce.
    let jwks: Value = client()
        .get(s.platform.url("/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let segment = |i: usize| -> Value {
        let part = form.id_token.split('.').nth(i).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    };
    let (header, claims) = (segment(0), segment(1));
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], jwks["keys"][0]["kid"], "{jwks}");
    assert_eq!(claims["nonce"], login.nonce.as_str());
    assert_eq!(claims["aud"], CLIENT_ID);
    form.claims = claims;
    form
}

/// The browser posts the platform's form to ltigate, with `cookie`.
async fn post_form(s: &Setup, form: &Form, cookie: Option<&str>) -> reqwest::Response {
    let path = form.launch_url.strip_prefix(PUBLIC_URL).unwrap();
    let mut req = client()
        .post(s.gate.url(path))
        .header("accept", "application/json")
        .form(&[("id_token", &form.id_token), ("state", &form.state)]);
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    req.send().await.unwrap()
}

async fn error_of(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["error"].as_str().unwrap_or("").to_string())
}

#[tokio::test]
async fn a_learner_launched_by_lti1p3platform_reaches_the_course_once() {
    let Some(s) = setup().await else { return };
    let login = login(&s, Via::Get).await;
    let form = authorize(&s, &login).await;

    let r = post_form(&s, &form, Some(&login.cookie)).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let ticket = location(&r);
    assert!(ticket.starts_with("/lti/continue?ticket="), "{ticket}");
    let cookies = set_cookies(&r);
    let state_name = login.cookie.split('=').next().unwrap();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with(&format!("{state_name}=;")) && c.contains("Max-Age=0")),
        "the launch deletes its state cookie: {cookies:?}"
    );
    let session = cookies
        .iter()
        .find(|c| c.starts_with("__Host-ltigate_session="))
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();

    // The learner, provisioned under the registration's lms_id with the
    // name lti1p3platform sends (`name`, split), and subscribed.
    let calls = s.up.api_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].path, "/api/users/py%3Apy-learner-1");
    assert_eq!(
        calls[0].json(),
        json!({"external_id": "py:py-learner-1", "first_name": "Ada",
            "last_name": "Lovelace", "email": "ada@example.org"})
    );
    assert_eq!(
        calls[1].path,
        "/api/courses/C-py/subscriptions/py%3Apy-learner-1"
    );
    assert_eq!(
        s.gate
            .metric("ltigate_jwks_fetches_total{platform=\"python\",result=\"ok\"}")
            .await,
        1.0
    );

    let c = client()
        .get(s.gate.url(&ticket))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(c.status(), 303);
    assert_eq!(location(&c), format!("/courses/{COURSE}"));
    let page: Value = client()
        .get(s.gate.url(&format!("/courses/{COURSE}")))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let headers = &page["headers"];
    assert_eq!(headers["x-lti-user"], "py:py-learner-1", "{page}");
    assert_eq!(headers["x-lti-version"], "1.3");
    assert_eq!(headers["x-lti-consumer"], "python");
    assert_eq!(headers["x-lti-roles"], "Learner");

    // The same form again, cookie and all (a replay without the session):
    // the state is spent.
    let again = post_form(&s, &form, Some(&login.cookie)).await;
    assert_eq!(error_of(again).await, (401, "bad_state".to_string()));
    assert_eq!(
        s.gate
            .metric(
                "ltigate_launches_total{consumer=\"python\",result=\"accepted\",version=\"1.3\"}"
            )
            .await,
        1.0
    );
}

#[tokio::test]
async fn an_lti1p3platform_launch_without_its_state_cookie_is_refused() {
    let Some(s) = setup().await else { return };
    let login = login(&s, Via::Post).await;
    let form = authorize(&s, &login).await;

    let r = post_form(&s, &form, None).await;
    assert_eq!(error_of(r).await, (401, "bad_state".to_string()));
    assert!(s.up.api_calls().is_empty());

    // The browser that logged in still can: the refusal was the cookie's.
    let r = post_form(&s, &form, Some(&login.cookie)).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    assert_eq!(s.up.api_calls().len(), 2);
}

/// Sends a signed completion webhook for the learner in [`COURSE`]; its
/// status and JSON.
async fn complete(gate: &Gate, event_id: &str, score: f64) -> (u16, Value) {
    gate.completion(
        json!({"event_id": event_id, "user": "py:py-learner-1", "course": COURSE,
        "activity": "final-assessment", "score": score}),
    )
    .await
}

/// Whether `ts` is RFC 3339 UTC with milliseconds, `2026-12-08T01:19:49.123Z`
/// (DESIGN §13), and names a time within a minute of now.
fn is_millis_timestamp_of_now(ts: &str) -> bool {
    let shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    let shaped = ts.len() == shape.len()
        && ts.bytes().zip(shape.bytes()).all(|(c, s)| match s {
            b'd' => c.is_ascii_digit(),
            _ => c == s,
        });
    let near = humantime::parse_rfc3339(ts).is_ok_and(|t| {
        let now = std::time::SystemTime::now();
        let gap = now.duration_since(t).or_else(|e| Ok::<_, ()>(e.duration()));
        gap.is_ok_and(|g| g < Duration::from_secs(60))
    });
    shaped && near
}

/// The whole path from lti1p3platform's launch to a score its AGS handler
/// records: the launch carries its endpoint claim; each completion webhook
/// becomes a score posted with a token from its token endpoint (one token
/// for both grades), to the line item's scores URL with the query kept,
/// with the fields and timestamps of DESIGN §13.
#[tokio::test]
async fn a_grade_reaches_lti1p3platform_as_an_ags_score() {
    let Some(s) = setup().await else { return };
    let login = login(&s, Via::Get).await;
    let form = authorize(&s, &login).await;
    let endpoint = &form.claims[ENDPOINT];
    assert_eq!(endpoint["lineitem"], s.platform.url(LINEITEM), "{endpoint}");
    assert!(
        endpoint["scope"]
            .as_array()
            .is_some_and(|scopes| scopes.contains(&json!(SCORE_SCOPE))),
        "{endpoint}"
    );
    let r = post_form(&s, &form, Some(&login.cookie)).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());

    let (status, body) = complete(&s.gate, "py-e-1", 0.8).await;
    assert_eq!((status, &body["status"]), (202, &json!("queued")), "{body}");
    s.platform.wait_scores(1, Duration::from_secs(15)).await;
    let (status, body) = complete(&s.gate, "py-e-2", 0.95).await;
    assert_eq!((status, &body["status"]), (202, &json!("queued")), "{body}");
    let ags = s.platform.wait_scores(2, Duration::from_secs(15)).await;

    assert_eq!(ags["refused"], json!([]), "{ags}");
    assert_eq!(
        ags["tokens"],
        json!([{"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": s.platform.url("/token"),
            "scope": SCORE_SCOPE}]),
        "one token, for both grades: {ags}"
    );
    let scores = ags["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 2, "{ags}");
    for (recorded, given) in scores.iter().zip([0.8, 0.95]) {
        assert_eq!(recorded["path"], "/lineitems/1/lineitem/scores", "{ags}");
        assert_eq!(recorded["query"], json!({"type_id": "2"}), "{ags}");
        assert_eq!(recorded["line_item"], "1");
        assert_eq!(recorded["bearer_scopes"], SCORE_SCOPE, "{ags}");
        let score = &recorded["score"];
        let mut fields: Vec<&str> = score
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "activityProgress",
                "gradingProgress",
                "scoreGiven",
                "scoreMaximum",
                "timestamp",
                "userId"
            ],
            "{score}"
        );
        assert_eq!(score["userId"], LEARNER);
        assert_eq!(score["scoreGiven"], given);
        assert_eq!(score["scoreMaximum"], 1);
        assert_eq!(score["activityProgress"], "Completed");
        assert_eq!(score["gradingProgress"], "FullyGraded");
        let ts = score["timestamp"].as_str().unwrap();
        assert!(is_millis_timestamp_of_now(ts), "timestamp {ts:?}");
    }
    assert!(
        scores[0]["score"]["timestamp"].as_str() < scores[1]["score"]["timestamp"].as_str(),
        "{ags}"
    );
    for (series, want) in [
        (
            "ltigate_outcomes_total{kind=\"ags\",result=\"delivered\"}",
            2.0,
        ),
        (
            "ltigate_ags_tokens_total{platform=\"python\",result=\"issued\"}",
            1.0,
        ),
        (
            "ltigate_ags_tokens_total{platform=\"python\",result=\"error\"}",
            0.0,
        ),
    ] {
        assert_eq!(s.gate.metric(series).await, want, "{series}");
    }
    assert_eq!(s.gate.status().await["outbox"]["dead"], 0);
}
