//! Test support shared by the integration tests: real Redis servers and
//! Clusters on free ports, a fake upstream platform, an LMS that signs
//! launches, and a helper that starts ltigate on loopback.
#![allow(dead_code)]

pub mod assertion;
pub mod fake_lms;
pub mod gate;
pub mod lms;
pub mod lti13;
pub mod platform;
pub mod redis;
pub mod upstream;

/// Whether `python3` can import `modules` (a comma-separated list); when it
/// cannot, the test is skipped locally and fails on CI, which installs
/// them from tests/requirements.txt.
pub fn python_with(modules: &str) -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with {modules} is required on CI (tests/requirements.txt)"
        );
        eprintln!("skipped: python3 with {modules} is not available");
    }
    ok
}
