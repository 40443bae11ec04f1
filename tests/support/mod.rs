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
