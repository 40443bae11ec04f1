//! `ltigate demo` over real sockets, without a browser: the demo LMS's signed
//! launch form is accepted by ltigate, the demo platform answers the
//! provisioning API and shows the decoded identity, the demo LMS's Basic
//! Outcomes service verifies signed POX requests, and the "complete" button
//! brings the grade into the LMS gradebook.

mod support;

use std::time::{Duration, Instant};

use ltigate::demo::{self, lms::sourced_id, Demo, Options, Ports};
use ltigate::lti::encode::form_encode;
use ltigate::lti::oauth1::{authorization_header, OutboundRequest, SignatureMethod};
use ltigate::lti::outcomes::{build_request, parse_response, CodeMajor, Operation};
use support::gate::client;

async fn start() -> (Demo, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let demo = demo::start(&Options {
        ports: Ports::from_base(0).unwrap(),
        data_dir: dir.path().to_path_buf(),
    })
    .await
    .unwrap();
    (demo, dir)
}

fn lms(d: &Demo, path: &str) -> String {
    format!("http://{}{path}", d.lms_addr)
}

fn gate(d: &Demo, path: &str) -> String {
    format!("http://{}{path}", d.gate.public_addr)
}

fn platform(d: &Demo, path: &str) -> String {
    format!("http://{}{path}", d.platform_addr)
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The form action and hidden inputs of the LMS's launch page.
fn launch_form(html: &str) -> (String, Vec<(String, String)>) {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let end = tag[start..].find('"')? + start;
        Some(html_unescape(&tag[start..end]))
    };
    let form_start = html.find("<form").expect("no form");
    let action = attr(&html[form_start..], "action").expect("no action");
    let inputs = html
        .split("<input ")
        .skip(1)
        .filter_map(|tag| {
            let tag = &tag[..tag.find('>')?];
            Some((attr(tag, "name")?, attr(tag, "value")?))
        })
        .collect();
    (action, inputs)
}

/// Launches the course as `learner` the way the LMS's iframe does; returns
/// the session cookie (`name=value`).
async fn launch(d: &Demo, learner: &str) -> String {
    let page = client()
        .get(lms(d, &format!("/launch/DEMO-101?learner={learner}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let (action, params) = launch_form(&page.text().await.unwrap());
    assert_eq!(action, format!("{}/lti/launch", d.gate_url));
    let refs: Vec<(&str, &str)> = params
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let r = client()
        .post(gate(d, "/lti/launch"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_encode(&refs))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-ltigate_session="))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_string();
    let cont = client()
        .get(gate(d, &location(&r)))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(cont.status(), 303);
    assert_eq!(location(&cont), "/courses/DEMO-101");
    cookie
}

#[tokio::test]
async fn the_lms_launch_reaches_the_platform_with_the_learners_identity() {
    let (d, _dir) = start().await;
    let home = client().get(&d.lms_url).send().await.unwrap();
    assert_eq!(home.status(), 200);
    let home = home.text().await.unwrap();
    for needle in [
        "Introduction to LTI",
        "DEMO-101",
        "id=\"launch\"",
        "value=\"u-1002\"",
        "id=\"grade-DEMO-101-u-1001\"",
    ] {
        assert!(home.contains(needle), "{needle} missing from the LMS page");
    }
    let course = client()
        .get(lms(&d, "/courses/DEMO-101?learner=u-1002"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(course.contains("<iframe id=\"tool\""));
    assert!(course.contains("src=\"/launch/DEMO-101?learner=u-1002\""));

    let cookie = launch(&d, "u-1002").await;
    let page = client()
        .get(gate(&d, "/courses/DEMO-101"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    for needle in [
        "<td id=\"x-lti-user\">demo:u-1002</td>",
        "<td id=\"x-lti-given-name\">José</td>",
        "<td id=\"x-lti-family-name\">Núñez</td>",
        "<td id=\"x-lti-email\">jose@example.org</td>",
        "<td id=\"x-lti-upstream-user\">p-1</td>",
        "<td id=\"x-lti-course-roles\">DEMO-101=Learner</td>",
        "<td id=\"x-lti-consumer\">Demo LMS</td>",
        "<b id=\"who\">José Núñez</b>",
        "id=\"complete\"",
    ] {
        assert!(page.contains(needle), "{needle} missing from:\n{page}");
    }
    // Without ltigate's session there is no identity.
    let direct = client()
        .get(gate(&d, "/courses/DEMO-101"))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 401);
    let around = client()
        .get(platform(&d, "/courses/DEMO-101"))
        .send()
        .await
        .unwrap();
    assert_eq!(around.status(), 401);
    d.shutdown().await;
}

#[tokio::test]
async fn the_platform_answers_the_provisioning_api() {
    let (d, _dir) = start().await;
    let put = |path: &str, token: Option<&str>, body: serde_json::Value| {
        let mut req = client()
            .put(platform(&d, path))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.send()
    };
    let user = serde_json::json!({"external_id": "demo:x 1", "first_name": "X"});
    let t = Some(demo::API_TOKEN);
    let r = put("/api/users/demo%3Ax%201", None, user.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = put("/api/users/demo%3Ax%201", Some("wrong"), user.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = put("/api/users/demo%3Ax%201", t, user.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"id": "p-1"})
    );
    let r = put("/api/users/demo%3Ax%201", t, user.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = put("/api/users/other", t, user.clone()).await.unwrap();
    assert_eq!(r.status(), 422, "the path and the body name one user");

    let role = serde_json::json!({"role": "learner"});
    let sub = "/api/courses/DEMO-101/subscriptions/demo%3Ax%201";
    assert_eq!(put(sub, t, role.clone()).await.unwrap().status(), 201);
    assert_eq!(put(sub, t, role.clone()).await.unwrap().status(), 200);
    let unknown = "/api/courses/NOPE/subscriptions/demo%3Ax%201";
    assert_eq!(put(unknown, t, role.clone()).await.unwrap().status(), 404);
    let bad_role = serde_json::json!({"role": "owner"});
    assert_eq!(put(sub, t, bad_role).await.unwrap().status(), 422);

    let not_json = client()
        .put(platform(&d, "/api/users/demo%3Ay"))
        .header("authorization", format!("Bearer {}", demo::API_TOKEN))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 415);
    d.shutdown().await;
}

/// A signed POX request as ltigate's outbox sends it.
struct Pox {
    url: String,
    key: &'static str,
    secret: &'static str,
    method: SignatureMethod,
    nonce: String,
    timestamp: u64,
    content_type: &'static str,
}

impl Pox {
    fn new(d: &Demo) -> Pox {
        Pox {
            url: lms(d, "/outcomes"),
            key: demo::CONSUMER_KEY,
            secret: demo::CONSUMER_SECRET,
            method: SignatureMethod::HmacSha1,
            nonce: ltigate::secret::random_token(),
            timestamp: ltigate::http::unix_now(),
            content_type: "application/xml",
        }
    }

    /// Sends `body` signed as `signed_body` (normally the same).
    async fn send_signed_as(&self, body: &str, signed_body: &str) -> (u16, CodeMajor, String) {
        let auth = authorization_header(&OutboundRequest {
            http_method: "POST",
            url: &self.url,
            consumer_key: self.key,
            consumer_secret: self.secret.as_bytes(),
            method: self.method,
            nonce: &self.nonce,
            timestamp: self.timestamp,
            body: signed_body.as_bytes(),
        })
        .unwrap();
        let r = client()
            .post(&self.url)
            .header("content-type", self.content_type)
            .header("authorization", auth)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let pox = parse_response(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, pox.code_major, pox.score.unwrap_or_default())
    }

    async fn send(&self, body: &str) -> (u16, CodeMajor, String) {
        self.send_signed_as(body, body).await
    }
}

fn replace(user: &str, score: f64) -> String {
    build_request(
        "m-1",
        &sourced_id("DEMO-101", user),
        &Operation::Replace { score },
    )
    .unwrap()
}

#[tokio::test]
async fn the_lms_outcome_service_verifies_signed_pox() {
    let (d, _dir) = start().await;
    let grade = |user: &str| {
        d.lms
            .gradebook()
            .into_iter()
            .find(|g| g.user == user)
            .map(|g| g.score)
    };

    // A correctly signed replaceResult lands in the gradebook.
    let ok = Pox::new(&d).send(&replace("u-1001", 0.85)).await;
    assert_eq!((ok.0, ok.1), (200, CodeMajor::Success));
    assert_eq!(grade("u-1001"), Some(0.85));
    let json: serde_json::Value = client()
        .get(lms(&d, "/gradebook.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json[0]["user"], "u-1001");
    assert_eq!(json[0]["grade"], "85%");
    assert_eq!(json[1]["grade"], "—");

    // HMAC-SHA256 (with a SHA-256 body hash), and a query in the URL, signed.
    let mut sha256 = Pox::new(&d);
    sha256.method = SignatureMethod::HmacSha256;
    sha256.url = lms(&d, "/outcomes?tool=demo&x=a%20b");
    let r = sha256.send(&replace("u-1002", 0.5)).await;
    assert_eq!((r.0, r.1), (200, CodeMajor::Success));
    assert_eq!(grade("u-1002"), Some(0.5));

    // readResult and deleteResult.
    let read = build_request("m-2", &sourced_id("DEMO-101", "u-1001"), &Operation::Read).unwrap();
    let r = Pox::new(&d).send(&read).await;
    assert_eq!((r.0, r.1, r.2.as_str()), (200, CodeMajor::Success, "0.85"));
    let delete =
        build_request("m-3", &sourced_id("DEMO-101", "u-1001"), &Operation::Delete).unwrap();
    assert_eq!(Pox::new(&d).send(&delete).await.1, CodeMajor::Success);
    assert_eq!(grade("u-1001"), None);

    // Refusals: each leaves the gradebook as it was.
    let body = replace("u-1002", 1.0);
    let mut wrong_secret = Pox::new(&d);
    wrong_secret.secret = "not-the-secret";
    assert_eq!(
        wrong_secret.send(&body).await.0,
        401,
        "a wrong secret is refused"
    );
    let mut wrong_key = Pox::new(&d);
    wrong_key.key = "someone-else";
    assert_eq!(wrong_key.send(&body).await.0, 401);
    let tampered = Pox::new(&d)
        .send_signed_as(&body, &replace("u-1002", 0.1))
        .await;
    assert_eq!(
        (tampered.0, tampered.1),
        (401, CodeMajor::Failure),
        "a body that does not match oauth_body_hash is refused"
    );
    let mut stale = Pox::new(&d);
    stale.timestamp -= 3600;
    assert_eq!(stale.send(&body).await.0, 401);
    let mut xml_text = Pox::new(&d);
    xml_text.content_type = "text/plain";
    assert_eq!(xml_text.send(&body).await.0, 415);
    let once = Pox::new(&d);
    let first = replace("u-1002", 0.75);
    assert_eq!(once.send(&first).await.1, CodeMajor::Success);
    assert_eq!(
        once.send(&first).await.0,
        401,
        "a replayed nonce is refused"
    );
    let unknown = build_request(
        "m-4",
        &sourced_id("DEMO-101", "u-9999"),
        &Operation::Replace { score: 0.3 },
    )
    .unwrap();
    assert_eq!(Pox::new(&d).send(&unknown).await.1, CodeMajor::Failure);
    let unsigned = client()
        .post(lms(&d, "/outcomes"))
        .header("content-type", "application/xml")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    assert_eq!(grade("u-1002"), Some(0.75));
    d.shutdown().await;
}

/// The whole loop: launch from the LMS, "Complete the assessment" on the
/// platform (which sends the signed completion webhook to ltigate's admin
/// listener), ltigate's outbox posts the grade to the LMS.
#[tokio::test]
async fn completing_the_assessment_puts_the_grade_in_the_lms_gradebook() {
    let (d, _dir) = start().await;
    let cookie = launch(&d, "u-1001").await;
    let done = client()
        .post(gate(&d, "/courses/DEMO-101/complete"))
        .header("cookie", &cookie)
        .header("origin", &d.gate_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("score=85")
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303);
    assert_eq!(location(&done), "/courses/DEMO-101");
    let page = client()
        .get(gate(&d, "/courses/DEMO-101"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("You completed the assessment with 85%."),
        "{page}"
    );
    let answer = page
        .split("<span id=\"answer\" class=\"mono\">")
        .nth(1)
        .and_then(|rest| rest.split("</span>").next())
        .unwrap_or_default();
    assert!(
        answer.starts_with("202 Accepted") && answer.contains("queued"),
        "ltigate did not queue the completion webhook; it answered: {answer}"
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let grade = d.lms.gradebook().into_iter().find(|g| g.user == "u-1001");
        if let Some(g) = grade {
            assert_eq!(g.score, 0.85);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the grade did not reach the LMS within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.shutdown().await;
}

#[tokio::test]
async fn ports_in_use_are_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let err = demo::start(&Options {
        ports: Ports {
            lms: port,
            gate: 0,
            admin: 0,
            platform: 0,
        },
        data_dir: dir.path().to_path_buf(),
    })
    .await
    .err()
    .expect("a taken port must fail");
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!("demo LMS: cannot bind 127.0.0.1:{port}")),
        "{text}"
    );
}

/// The `name=value` of the `Set-Cookie` starting with `prefix`.
fn set_cookie(r: &reqwest::Response, prefix: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(prefix) && !v.contains("Max-Age=0"))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

/// The LTI 1.3 launch as a top-level browser makes it: the LMS's login
/// initiation, ltigate's login (state cookie), the LMS's authorization
/// answer (a self-posting form with the id_token), ltigate's launch and
/// the ticket. Returns the session cookie.
async fn launch13(d: &Demo, learner: &str) -> String {
    let start = client()
        .get(lms(d, &format!("/launch13/DEMO-101?learner={learner}")))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 302);
    let login_url = location(&start);
    assert!(
        login_url.starts_with(&format!("{}/lti/1.3/login?", d.gate_url)),
        "{login_url}"
    );
    let login_path = &login_url[d.gate_url.len()..];
    let login = client().get(gate(d, login_path)).send().await.unwrap();
    assert_eq!(login.status(), 302, "{}", login.text().await.unwrap());
    let state_cookie = set_cookie(&login, "__Host-ltigate_s_").expect("a state cookie");
    let auth = location(&login);
    let auth_path = auth
        .strip_prefix(&format!("http://{}", d.lms_addr))
        .unwrap_or_else(|| panic!("{auth} is not the LMS's"));
    let page = client().get(lms(d, auth_path)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let (action, params) = launch_form(&page.text().await.unwrap());
    assert_eq!(action, format!("{}/lti/1.3/launch", d.gate_url));
    let refs: Vec<(&str, &str)> = params
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let r = client()
        .post(gate(d, "/lti/1.3/launch"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", &state_cookie)
        .body(form_encode(&refs))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let cookie = set_cookie(&r, "__Host-ltigate_session=").unwrap();
    let cont = client()
        .get(gate(d, &location(&r)))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(cont.status(), 303);
    assert_eq!(location(&cont), "/courses/DEMO-101");
    // The LMS's message hint was single use.
    let again = client().get(lms(d, auth_path)).send().await.unwrap();
    assert_eq!(again.status(), 400);
    cookie
}

/// The demo LMS launches by LTI 1.3 too; a learner it launched by 1.1
/// before is the same platform user, and the grade reaches the LMS as an
/// AGS score (the latest launch's target).
#[tokio::test]
async fn the_lms_launches_by_lti_1_3_as_the_same_learner() {
    let (d, dir) = start().await;
    let home = client()
        .get(&d.lms_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(home.contains("id=\"launch13\""), "{home}");
    let course = client()
        .get(lms(&d, "/courses/DEMO-101?learner=u-1001&lti=1.3"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(course.contains("src=\"/launch13/DEMO-101?learner=u-1001\""));
    // The tool key was generated beside the database.
    assert!(dir.path().join("tool-key.pem").exists());

    launch(&d, "u-1001").await;
    let cookie = launch13(&d, "u-1001").await;
    let page = client()
        .get(gate(&d, "/courses/DEMO-101"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "<td id=\"x-lti-user\">demo:u-1001</td>",
        "<td id=\"x-lti-upstream-user\">p-1</td>",
        "<td id=\"x-lti-version\">1.3</td>",
        "<td id=\"x-lti-consumer\">Demo LMS</td>",
    ] {
        assert!(page.contains(needle), "{needle} missing from:\n{page}");
    }
    let done = client()
        .post(gate(&d, "/courses/DEMO-101/complete"))
        .header("cookie", &cookie)
        .header("origin", &d.gate_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("score=70")
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d
        .lms
        .gradebook()
        .iter()
        .any(|g| g.user == "u-1001" && g.score == 0.7)
    {
        if Instant::now() >= deadline {
            let jobs = client()
                .get(format!("http://{}/outbox", d.gate.admin_addr))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            panic!("the grade did not arrive: {jobs}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outcomes = &d.gate.app.metrics.outcomes;
    assert_eq!(outcomes.with_label_values(&["ags", "delivered"]).get(), 1);
    assert_eq!(outcomes.with_label_values(&["basic", "delivered"]).get(), 0);
    d.shutdown().await;
}
