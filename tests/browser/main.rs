//! `ltigate demo` in a real browser: headless Chromium, driven through
//! chromedriver, opens the demo LMS, launches the course (in an iframe, the LMS
//! on 127.0.0.1 and ltigate on localhost, so two different sites), sees the
//! platform page with the learner's namespaced ID and name, completes the
//! assessment and waits for the grade in the LMS gradebook.
//!
//! It runs twice: once with third-party cookies allowed (the session cookie set
//! inside the iframe sticks), once with them blocked, where the launch must
//! take the new-window fallback (DESIGN §4) and the iframe, once the new
//! window has taken over, says "Continued in a new window". Both times the
//! gradebook must be in view on the LMS course page of a laptop-sized window.
//! Then the same two passes by LTI 1.3 (DESIGN §13), through the framed
//! login's cookie-check page.
//! Screenshots of every step go to `tests/output/browser/`, the demo's log to
//! `tests/output/browser/demo.log`.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium
//! chromium-driver`), hence ignored by default:
//! `cargo test --test browser -- --ignored`.

mod webdriver;

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use webdriver::{Driver, Session};

const CHROMIUM: &str = "/usr/bin/chromium";
/// How long one page may take to show what is expected.
const STEP: Duration = Duration::from_secs(15);
/// How long a grade may take from the webhook to the gradebook.
const GRADE: Duration = Duration::from_secs(30);

fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/output/browser");
    std::fs::create_dir_all(&dir).expect("cannot create tests/output/browser");
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if entry.path().extension().is_some_and(|e| e == "png") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    dir
}

/// `ltigate demo` as a child process, killed on drop.
struct Demo {
    child: Child,
    lms_url: String,
    _data: tempfile::TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first of four consecutive free loopback ports.
fn free_port_base() -> u16 {
    use rand::Rng as _;
    for _ in 0..100 {
        let base: u16 = rand::rng().random_range(20_000..50_000);
        let free = (0..4).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no four consecutive free ports");
}

/// Starts the demo binary and waits until it prints the LMS URL.
fn start_demo(log: &Path) -> Demo {
    let data = tempfile::tempdir().expect("temp dir");
    let log = std::fs::File::create(log).expect("cannot create the demo log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ltigate"))
        .args(["demo", "--port-base"])
        .arg(free_port_base().to_string())
        .arg("--data-dir")
        .arg(data.path())
        .env("LTIGATE_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("cannot run ltigate demo");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(url) = line.trim().strip_prefix("Open the demo LMS:") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let mut demo = Demo {
        child,
        lms_url: String::new(),
        _data: data,
    };
    demo.lms_url = rx.recv_timeout(Duration::from_secs(30)).expect(
        "ltigate demo did not print the LMS URL within 30 s (see tests/output/browser/demo.log)",
    );
    demo
}

/// Chromium in headless mode with a fresh profile; third-party cookies
/// allowed or blocked by the profile's cookie setting.
fn capabilities(profile: &Path, block_third_party_cookies: bool) -> Value {
    json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                // A laptop-sized window: what a newcomer sees first.
                "--window-size=1280,800",
                format!("--user-data-dir={}", profile.display()),
            ],
            "prefs": {
                // 0: allow all cookies; 1: block third-party cookies.
                "profile.cookie_controls_mode": if block_third_party_cookies { 1 } else { 0 },
                "profile.block_third_party_cookies": block_third_party_cookies,
            },
        },
        "goog:loggingPrefs": { "performance": "ALL" },
    })
}

/// Whether a response carrying `x-ltigate-fallback: new-window` was received
/// (from the browser's network log).
async fn fallback_header_seen(s: &Session) -> bool {
    fallback_seen(s, "new-window").await
}

/// Whether a response carrying `x-ltigate-fallback: {value}` was received
/// (from the browser's network log; each read takes the entries since the
/// last).
async fn fallback_seen(s: &Session, value: &str) -> bool {
    s.log("performance").await.iter().any(|entry| {
        let Some(msg) = entry["message"]
            .as_str()
            .and_then(|m| serde_json::from_str::<Value>(m).ok())
        else {
            return false;
        };
        let m = &msg["message"];
        m["method"] == "Network.responseReceived"
            && m["params"]["response"]["headers"]
                .as_object()
                .is_some_and(|h| {
                    h.iter()
                        .any(|(k, v)| k.eq_ignore_ascii_case("x-ltigate-fallback") && v == value)
                })
    })
}

/// The platform page shows the learner's namespaced ID and name.
async fn expect_platform_page(s: &Session, user: &str, name: &str) {
    s.wait_text("#x-lti-user", STEP, user, |t| t == user).await;
    s.wait_text("#who", STEP, name, |t| t == name).await;
    let consumer = s.text(&s.wait_for("#x-lti-consumer", STEP).await).await;
    assert_eq!(consumer, "Demo LMS");
}

/// Sets the score, clicks "Complete the assessment", screenshots the answer,
/// and requires that ltigate queued the grade.
async fn complete(s: &Session, score: &str, shot: &Path) {
    let input = s.wait_for("#score", STEP).await;
    s.clear(&input).await;
    s.type_text(&input, score).await;
    s.click(&s.wait_for("#complete", STEP).await).await;
    let result = s
        .wait_text("#result", STEP, "the completion", |t| {
            t.contains(&format!("{score}%"))
        })
        .await;
    s.screenshot(shot).await;
    let answer = s.text(&s.wait_for("#answer", STEP).await).await;
    assert!(
        answer.starts_with("202") && answer.contains("queued"),
        "ltigate did not queue the grade: it answered `{answer}` ({result})"
    );
}

/// Waits until the LMS gradebook (current window, top document) shows `grade`.
async fn expect_grade(s: &Session, user: &str, grade: &str) {
    s.wait_text(
        &format!("#grade-DEMO-101-{user}"),
        GRADE,
        &format!("the grade {grade}"),
        |t| t == grade,
    )
    .await;
}

/// On the LMS course page as it opens (not scrolled), the gradebook and
/// `user`'s grade in it are within the viewport.
async fn expect_gradebook_in_view(s: &Session, user: &str) {
    let v = s
        .execute(&format!(
            "var t=document.getElementById('gradebook'),g=document.getElementById('grade-DEMO-101-{user}');\
             return {{scroll:window.scrollY,height:window.innerHeight,width:window.innerWidth,\
             top:t?t.getBoundingClientRect().top:null,grade:g?g.getBoundingClientRect().bottom:null}};"
        ))
        .await;
    let height = v["height"].as_f64().expect("innerHeight");
    let top = v["top"].as_f64().expect("no #gradebook on the LMS page");
    let grade = v["grade"].as_f64().expect("no grade cell in the gradebook");
    assert_eq!(v["scroll"], json!(0), "the LMS page is scrolled: {v}");
    assert!(
        top < height && grade <= height,
        "the gradebook is below the fold of the LMS page: {v}"
    );
}

/// Third-party cookies allowed: everything happens inside the LMS iframe.
async fn run_in_iframe(driver: &Driver, demo: &Demo, out: &Path) {
    let profile = tempfile::tempdir().expect("temp dir");
    let s = driver.session(capabilities(profile.path(), false)).await;
    s.goto(&demo.lms_url).await;
    s.wait_text("h1", STEP, "the course list", |t| t == "My courses")
        .await;
    s.screenshot(&out.join("a1-lms-courses.png")).await;

    s.click(&s.wait_for("#launch", STEP).await).await;
    let frame = s.wait_for("iframe#tool", STEP).await;
    expect_gradebook_in_view(&s, "u-1001").await;
    s.frame(Some(&frame)).await;
    expect_platform_page(&s, "demo:u-1001", "Ada Lovelace").await;
    s.frame(None).await;
    assert!(
        !fallback_header_seen(&s).await,
        "with third-party cookies allowed the launch must not need the new-window fallback"
    );
    s.screenshot(&out.join("a2-platform-in-lms-iframe.png"))
        .await;

    s.frame(Some(&frame)).await;
    complete(&s, "85", &out.join("a3-completed.png")).await;
    s.frame(None).await;
    expect_grade(&s, "u-1001", "85%").await;
    s.screenshot(&out.join("a4-lms-gradebook.png")).await;
    s.quit().await;
}

/// Third-party cookies blocked: the iframe shows the new-window fallback, the
/// course continues in a new window, and the grade still reaches the LMS.
async fn run_with_new_window(driver: &Driver, demo: &Demo, out: &Path) {
    let profile = tempfile::tempdir().expect("temp dir");
    let s = driver.session(capabilities(profile.path(), true)).await;
    s.goto(&demo.lms_url).await;
    s.select("#learner option[value='u-1002']").await;
    s.click(&s.wait_for("#launch", STEP).await).await;
    let lms_window = s.window_handle().await;
    let frame = s.wait_for("iframe#tool", STEP).await;
    expect_gradebook_in_view(&s, "u-1002").await;
    s.frame(Some(&frame)).await;
    let link = s.wait_for("a#open", STEP).await;
    let text = s.text(&link).await;
    assert_eq!(text, "Open the course in a new window");
    s.frame(None).await;
    assert!(
        fallback_header_seen(&s).await,
        "the iframe page did not carry x-ltigate-fallback: new-window"
    );
    s.screenshot(&out.join("b1-lms-iframe-new-window-fallback.png"))
        .await;

    let known = s.window_handles().await;
    s.frame(Some(&frame)).await;
    s.click(&link).await;
    let course_window = s.wait_new_window(&known, STEP).await;
    s.switch_window(&course_window).await;
    expect_platform_page(&s, "demo:u-1002", "José Núñez").await;
    s.screenshot(&out.join("b2-platform-in-new-window.png"))
        .await;
    complete(&s, "92", &out.join("b3-completed.png")).await;

    s.switch_window(&lms_window).await;
    s.frame(None).await;
    expect_grade(&s, "u-1002", "92%").await;
    // The frame no longer offers the new window: it says the course went on
    // there.
    s.frame(Some(&frame)).await;
    s.wait_text("h1", STEP, "that the course continued", |t| {
        t == "Continued in a new window"
    })
    .await;
    let said = s.text(&s.wait_for("#continued", STEP).await).await;
    assert!(
        said.contains("The course is open in another window"),
        "{said}"
    );
    let offer = s.text(&s.wait_for("#offer", STEP).await).await;
    assert_eq!(offer, "", "the new-window offer is still shown");
    s.frame(None).await;
    s.screenshot(&out.join("b4-lms-gradebook.png")).await;
    s.quit().await;
}

/// LTI 1.3, third-party cookies allowed: the framed login gets the
/// cookie-check page, which finds its state cookie and goes on to the LMS's
/// authorization; the launch, the session and the course all happen in the
/// iframe. The learner launched by LTI 1.1 before is the same platform
/// user, and the grade goes back by the target of that launch.
async fn run_lti13_in_iframe(driver: &Driver, demo: &Demo, out: &Path) {
    let profile = tempfile::tempdir().expect("temp dir");
    let s = driver.session(capabilities(profile.path(), false)).await;
    s.goto(&demo.lms_url).await;
    s.click(&s.wait_for("#launch13", STEP).await).await;
    let frame = s.wait_for("iframe#tool", STEP).await;
    s.frame(Some(&frame)).await;
    expect_platform_page(&s, "demo:u-1001", "Ada Lovelace").await;
    s.wait_text("#x-lti-version", STEP, "LTI 1.3", |t| t == "1.3")
        .await;
    s.frame(None).await;
    let log = s.log("performance").await;
    let seen = |value: &str| {
        log.iter().any(|entry| {
            entry["message"]
                .as_str()
                .and_then(|m| serde_json::from_str::<Value>(m).ok())
                .is_some_and(|msg| {
                    let m = &msg["message"];
                    m["method"] == "Network.responseReceived"
                        && m["params"]["response"]["headers"]
                            .as_object()
                            .is_some_and(|h| {
                                h.iter().any(|(k, v)| {
                                    k.eq_ignore_ascii_case("x-ltigate-fallback") && v == value
                                })
                            })
                })
        })
    };
    assert!(
        seen("cookie-check"),
        "a framed LTI 1.3 login must answer the cookie-check page"
    );
    assert!(
        !seen("new-window"),
        "with third-party cookies allowed the LTI 1.3 launch must not need a new window"
    );
    s.screenshot(&out.join("c1-lti13-platform-in-lms-iframe.png"))
        .await;
    s.frame(Some(&frame)).await;
    complete(&s, "70", &out.join("c2-lti13-completed.png")).await;
    s.frame(None).await;
    expect_grade(&s, "u-1001", "70%").await;
    s.screenshot(&out.join("c3-lti13-lms-gradebook.png")).await;
    s.quit().await;
}

/// LTI 1.3, third-party cookies blocked. The state cookie is
/// `Partitioned`, so Chromium keeps it in the LMS frame even so: the
/// cookie-check page finds it and the login, the authorization and the
/// launch complete inside the frame. The session cookie is not partitioned
/// (`session.partitioned` is off by default) and is dropped there, so the
/// ticket's new-window fallback takes over, as for LTI 1.1; the course
/// continues in the new window and the grade reaches the LMS window. (The
/// cookie-check page's own fallback, for browsers that drop partitioned
/// cookies too, is exercised over HTTP in `tests/lti13_launch.rs`.)
async fn run_lti13_with_new_window(driver: &Driver, demo: &Demo, out: &Path) {
    let profile = tempfile::tempdir().expect("temp dir");
    let s = driver.session(capabilities(profile.path(), true)).await;
    s.goto(&demo.lms_url).await;
    s.select("#learner option[value='u-1002']").await;
    s.click(&s.wait_for("#launch13", STEP).await).await;
    let lms_window = s.window_handle().await;
    let frame = s.wait_for("iframe#tool", STEP).await;
    s.frame(Some(&frame)).await;
    let link = s.wait_for("#offer a#open", STEP).await;
    assert_eq!(s.text(&link).await, "Open the course in a new window");
    s.frame(None).await;
    assert!(
        fallback_seen(&s, "new-window").await,
        "the ticket's new-window fallback did not answer in the frame"
    );
    s.screenshot(&out.join("d1-lti13-new-window-fallback.png"))
        .await;

    let known = s.window_handles().await;
    s.frame(Some(&frame)).await;
    s.click(&link).await;
    let course_window = s.wait_new_window(&known, STEP).await;
    s.switch_window(&course_window).await;
    expect_platform_page(&s, "demo:u-1002", "José Núñez").await;
    s.wait_text("#x-lti-version", STEP, "LTI 1.3", |t| t == "1.3")
        .await;
    s.screenshot(&out.join("d2-lti13-platform-in-new-window.png"))
        .await;
    complete(&s, "64", &out.join("d3-lti13-completed.png")).await;
    s.switch_window(&lms_window).await;
    s.frame(None).await;
    expect_grade(&s, "u-1002", "64%").await;
    s.screenshot(&out.join("d4-lti13-lms-gradebook.png")).await;
    s.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver (apt-get install chromium chromium-driver); run with --ignored"]
async fn launch_complete_and_grade_in_chromium() {
    let out = output_dir();
    let demo = start_demo(&out.join("demo.log"));
    let driver = Driver::start(&out.join("chromedriver.log")).await;
    let all = async {
        run_in_iframe(&driver, &demo, &out).await;
        run_with_new_window(&driver, &demo, &out).await;
        run_lti13_in_iframe(&driver, &demo, &out).await;
        run_lti13_with_new_window(&driver, &demo, &out).await;
    };
    tokio::time::timeout(Duration::from_secs(240), all)
        .await
        .expect("the browser test took longer than 240 s");
}
