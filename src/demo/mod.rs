//! `ltigate demo`: ltigate, a demo learning platform and a demo LMS, all on
//! loopback, wired together so that a newcomer can launch a course, complete
//! it and watch the grade arrive in the LMS gradebook, in a browser, with
//! nothing else to set up.
//!
//! - The demo LMS ([`lms`]) on `127.0.0.1` lists a course and launches it in an
//!   iframe with a signed LTI 1.1 form, receives Basic Outcomes calls and shows
//!   a gradebook.
//! - ltigate on `localhost`: a different *site* than the LMS, so the launch is
//!   cross-site as with a real LMS and tool, and the third-party-cookie
//!   fallback can be seen.
//! - The demo platform ([`platform`]) behind ltigate answers the provisioning
//!   API, shows the identity headers it receives and sends a signed completion
//!   webhook when the learner completes the assessment.
//!
//! Only `ltigate demo` reaches this module; `serve` never does.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{validate, RawConfig, Settings};
use crate::server::{serve, stateless, ConnSettings};
use crate::Running;

pub mod lms;
pub mod lms13;
pub mod platform;
mod web;

/// The demo consumer's name.
pub const CONSUMER_NAME: &str = "Demo LMS";
/// The demo consumer's key.
pub const CONSUMER_KEY: &str = "demo-lms";
/// The demo consumer's shared secret (a demo value, printed everywhere).
pub const CONSUMER_SECRET: &str = "demo-secret";
/// The demo consumer's `lms_id`: learners become `demo:<user_id>`.
pub const LMS_ID: &str = "demo";
/// The demo course's external ID.
pub const COURSE_ID: &str = "DEMO-101";
/// The demo course's title.
pub const COURSE_TITLE: &str = "Introduction to LTI";
/// The activity whose completion is the course grade.
pub const GRADE_ACTIVITY: &str = "final-assessment";
/// The webhook key shared by ltigate and the demo platform.
pub const WEBHOOK_SECRET: &str = "demo-webhook-secret";
/// The bearer token of the demo platform's provisioning API.
pub const API_TOKEN: &str = "demo-api-token";

/// A learner of the demo LMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learner {
    /// The LMS's `user_id`.
    pub user_id: &'static str,
    /// Given name.
    pub given: &'static str,
    /// Family name.
    pub family: &'static str,
    /// Email.
    pub email: &'static str,
}

impl Learner {
    /// "Given Family".
    pub fn full_name(&self) -> String {
        format!("{} {}", self.given, self.family)
    }
}

/// The demo LMS's learners; the first is the default.
pub const LEARNERS: [Learner; 2] = [
    Learner {
        user_id: "u-1001",
        given: "Ada",
        family: "Lovelace",
        email: "ada@example.org",
    },
    Learner {
        user_id: "u-1002",
        given: "José",
        family: "Núñez",
        email: "jose@example.org",
    },
];

/// The learner with this `user_id`.
pub fn learner(user_id: &str) -> Option<&'static Learner> {
    LEARNERS.iter().find(|l| l.user_id == user_id)
}

/// The loopback ports of the four servers; 0 picks a free one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// The demo LMS (`127.0.0.1`).
    pub lms: u16,
    /// ltigate's public listener (`localhost`).
    pub gate: u16,
    /// ltigate's admin listener.
    pub admin: u16,
    /// The demo platform.
    pub platform: u16,
}

impl Ports {
    /// LMS 8000, ltigate 8080, admin 9090, platform 3000.
    pub const DEFAULT: Ports = Ports {
        lms: 8000,
        gate: 8080,
        admin: 9090,
        platform: 3000,
    };

    /// `base` for the LMS, then ltigate, admin and platform on the next three
    /// ports; `0`: a free port for each.
    pub fn from_base(base: u16) -> Result<Ports, String> {
        if base == 0 {
            return Ok(Ports {
                lms: 0,
                gate: 0,
                admin: 0,
                platform: 0,
            });
        }
        let next = |n: u16| {
            base.checked_add(n)
                .ok_or_else(|| format!("--port-base {base}: needs four ports up to {base}+3"))
        };
        Ok(Ports {
            lms: base,
            gate: next(1)?,
            admin: next(2)?,
            platform: next(3)?,
        })
    }
}

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct Options {
    /// Ports.
    pub ports: Ports,
    /// Where ltigate keeps its embedded store (and generated session key).
    pub data_dir: PathBuf,
}

/// A TOML string literal.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The configuration ltigate runs with in the demo (`ports` must be fixed).
pub fn config_toml(ports: &Ports, data_dir: &Path) -> String {
    let db = data_dir.join("ltigate.db");
    let db = toml_str(&db.to_string_lossy());
    let Ports {
        lms,
        gate,
        admin,
        platform,
    } = *ports;
    format!(
        r#"# The configuration `ltigate demo` runs ltigate with. The demo LMS and the
# demo platform are part of `ltigate demo`; `ltigate serve` with this file
# needs a platform at upstream.url.

[server]
listen = "127.0.0.1:{gate}"
admin_listen = "127.0.0.1:{admin}"
# The LMS is served on 127.0.0.1 and ltigate on localhost: two different
# sites, like a real LMS and tool.
public_url = "http://localhost:{gate}"
frame_ancestors = ["http://127.0.0.1:{lms}"]
shutdown_grace = "2s"

[upstream]
url = "http://127.0.0.1:{platform}"
api_url = "http://127.0.0.1:{platform}/api"
api_token = "{API_TOKEN}"

[store]
path = {db}

[webhook]
secret = "{WEBHOOK_SECRET}"

[outcomes]
# The demo LMS's outcome service is plain http on loopback.
allow_insecure_targets = true
retry_initial = "1s"
retry_max = "30s"

[cartridge]
title = "Demo learning platform"
description = "The ltigate demo platform, launched through ltigate."

[[consumers]]
name = "{CONSUMER_NAME}"
key = "{CONSUMER_KEY}"
secret = "{CONSUMER_SECRET}"
lms_id = "{LMS_ID}"

# The demo LMS also launches by LTI 1.3. The registration is linked to the
# consumer above: the same learners, the same licences (a learner is the
# same platform user by either protocol). The tool key is generated beside
# the database on first start.
[[platforms]]
name = "demo-lms"
consumer = "{CONSUMER_NAME}"
issuer = "http://127.0.0.1:{lms}"
client_id = "{CLIENT_ID_13}"
deployment_ids = ["{DEPLOYMENT_ID_13}"]
auth_login_url = "http://127.0.0.1:{lms}/lti13/auth"
auth_token_url = "http://127.0.0.1:{lms}/lti13/token"
jwks_url = "http://127.0.0.1:{lms}/lti13/jwks.json"

[courses.{COURSE_ID}]
grade_activity = "{GRADE_ACTIVITY}"
"#,
        CLIENT_ID_13 = lms13::CLIENT_ID,
        DEPLOYMENT_ID_13 = lms13::DEPLOYMENT_ID,
    )
}

/// The validated settings of [`config_toml`].
pub fn settings(ports: &Ports, data_dir: &Path) -> anyhow::Result<Settings> {
    let raw: RawConfig = toml::from_str(&config_toml(ports, data_dir))
        .context("the demo configuration does not parse")?;
    validate(&raw).map_err(|e| anyhow::anyhow!("the demo configuration is invalid:\n{e}"))
}

/// A running demo.
pub struct Demo {
    /// The page to open: the demo LMS.
    pub lms_url: String,
    /// ltigate's public URL (`http://localhost:<port>`).
    pub gate_url: String,
    /// The demo platform's address.
    pub platform_addr: SocketAddr,
    /// The demo LMS's address.
    pub lms_addr: SocketAddr,
    /// Where ltigate keeps its data.
    pub data_dir: PathBuf,
    /// ltigate itself.
    pub gate: Running,
    /// The demo LMS's state (tests read the gradebook through it).
    pub lms: Arc<lms::Lms>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Demo {
    /// What to tell the person who started the demo.
    pub fn banner(&self) -> String {
        format!(
            "ltigate demo is running, everything on this machine (loopback only).\n\
             \n  Open the demo LMS:  {lms}\n\
             \n  ltigate:            {gate}  (what the LMS launches)\
             \n  ltigate admin:      http://{admin}  (/status, /metrics, completion webhooks)\
             \n  demo platform:      http://{platform}  (behind ltigate)\
             \n  data:               {data}\n\
             \nIn the LMS, launch the course, complete the assessment, and watch the grade\n\
             arrive in the gradebook beside the course. If the browser blocks third-party\n\
             cookies, the course continues in a new window; the grade still arrives in the\n\
             LMS window. Stop with Ctrl-C.\n",
            lms = self.lms_url,
            gate = self.gate_url,
            admin = self.gate.admin_addr,
            platform = self.platform_addr,
            data = self.data_dir.display(),
        )
    }

    /// Stops the LMS, the platform and ltigate.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.gate.shutdown().await;
    }
}

async fn bind(port: u16, what: &str) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpListener::bind(addr).await.with_context(|| {
        format!("{what}: cannot bind {addr} (choose other ports with --port-base)")
    })
}

/// A port that was free a moment ago (for ltigate, whose public URL must
/// name its port before it binds).
fn free_port() -> anyhow::Result<u16> {
    let l =
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot find a free port")?;
    Ok(l.local_addr()?.port())
}

/// Starts ltigate, then the platform and the LMS.
pub async fn start(opts: &Options) -> anyhow::Result<Demo> {
    let lms_listener = bind(opts.ports.lms, "demo LMS").await?;
    let platform_listener = bind(opts.ports.platform, "demo platform").await?;
    let lms_addr = lms_listener.local_addr()?;
    let platform_addr = platform_listener.local_addr()?;

    // A free port can be taken between the probe and ltigate's bind; try again
    // then, unless the port was chosen.
    let mut attempts = if opts.ports.gate == 0 { 3 } else { 1 };
    let gate = loop {
        let ports = Ports {
            lms: lms_addr.port(),
            gate: match opts.ports.gate {
                0 => free_port()?,
                p => p,
            },
            admin: opts.ports.admin,
            platform: platform_addr.port(),
        };
        let settings = settings(&ports, &opts.data_dir)?;
        match crate::start(settings).await {
            Ok(running) => break running,
            Err(e) if attempts > 1 => {
                attempts -= 1;
                tracing::debug!(error = %e, "ltigate did not start; trying another port");
            }
            Err(e) => return Err(e.context("cannot start ltigate")),
        }
    };
    let gate_url = gate.app.settings.server.public_url.url_for("");
    let lms_base = format!("http://{lms_addr}");
    let lms = Arc::new(lms::Lms::new(
        &lms_base,
        &crate::launch::cartridge::launch_url(&gate.app.settings, None),
        lms13::Platform13::new(&lms_base, &gate_url)?,
    ));
    let platform = Arc::new(platform::Platform::new(&format!(
        "http://{}/webhooks/completion",
        gate.admin_addr
    ))?);

    let (shutdown, shutdown_rx) = watch::channel(false);
    let conn = ConnSettings {
        header_read_timeout: std::time::Duration::from_secs(10),
        send_timeout: std::time::Duration::from_secs(60),
        max_header_bytes: 32 * 1024,
        shutdown_grace: std::time::Duration::from_secs(2),
    };
    let lms_for_service = lms.clone();
    let tasks = vec![
        tokio::spawn(serve(
            platform_listener,
            stateless(move |req| {
                let platform = platform.clone();
                async move { platform.handle(req).await }
            }),
            conn,
            shutdown_rx.clone(),
        )),
        tokio::spawn(serve(
            lms_listener,
            stateless(move |req| {
                let lms = lms_for_service.clone();
                async move { lms.handle(req).await }
            }),
            conn,
            shutdown_rx,
        )),
    ];
    Ok(Demo {
        lms_url: format!("{lms_base}/"),
        gate_url,
        platform_addr,
        lms_addr,
        data_dir: opts.data_dir.clone(),
        gate,
        lms,
        shutdown,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_secrets_are_known_examples() {
        for secret in [
            super::CONSUMER_SECRET,
            super::WEBHOOK_SECRET,
            super::API_TOKEN,
        ] {
            assert!(
                crate::config::EXAMPLE_SECRETS.contains(&secret),
                "{secret} is not in config::EXAMPLE_SECRETS"
            );
        }
    }

    use super::*;

    #[test]
    fn port_base() {
        assert_eq!(
            Ports::from_base(4000),
            Ok(Ports {
                lms: 4000,
                gate: 4001,
                admin: 4002,
                platform: 4003
            })
        );
        assert_eq!(Ports::from_base(0).map(|p| p.gate), Ok(0));
        assert!(Ports::from_base(65534).is_err());
    }

    #[test]
    fn demo_configuration_is_valid() {
        let s = settings(&Ports::DEFAULT, Path::new("data/demo")).unwrap();
        assert_eq!(s.server.public_url.url_for(""), "http://localhost:8080");
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.server.admin_listen.to_string(), "127.0.0.1:9090");
        assert!(s.outcomes.allow_insecure_targets);
        assert!(s.webhook.secret.is_some());
        assert_eq!(
            s.courses
                .get(COURSE_ID)
                .and_then(|c| c.grade_activity.as_deref()),
            Some(GRADE_ACTIVITY)
        );
        let c = s.consumer_of(CONSUMER_NAME).unwrap();
        assert_eq!(c.key, CONSUMER_KEY);
        assert_eq!(c.secrets[0].expose(), CONSUMER_SECRET.as_bytes());
    }

    #[test]
    fn data_dir_is_quoted() {
        let s = settings(&Ports::DEFAULT, Path::new("C:\\dir \"x\"")).unwrap();
        assert_eq!(
            s.store,
            crate::config::StoreSettings::Embedded {
                path: Path::new("C:\\dir \"x\"").join("ltigate.db")
            }
        );
    }
}
