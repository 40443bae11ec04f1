//! `ltigate export --lti13` and `ltigate export --platform NAME` (DESIGN §13
//! "Export"): what a platform admin registers for LTI 1.3 — the tool's login
//! URL, redirect URI, JWKS URL, target link URI and score scope, the fields
//! of a chosen LMS's registration form — and which values to bring back into
//! `[[platforms]]`. It needs no registration: the admin gets the client id
//! only after registering the tool. With `--platform`, a registration's
//! configured values are added.
//!
//! ```no_run
//! # fn demo(settings: &ltigate::config::Settings) {
//! use ltigate::export::{Lms, Lti13Export};
//! let export = Lti13Export::new(settings, Some(Lms::Moodle), Some("C-1"), None).unwrap();
//! print!("{}", export.to_text());
//! # }
//! ```

pub mod lms;

use std::fmt::Write as _;

use serde::Serialize;

pub use lms::{BringBack, Field, Lms, LmsGuide};

use crate::config::{DeploymentIds, Platform, Settings};
use crate::launch::cartridge::check_course_id;
use crate::lti::encode::percent_encode;
use crate::lti::id_token::AGS_SCORE_SCOPE;
use crate::lti::jose::SigningKey;

/// Why the LTI 1.3 export cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Lti13ExportError {
    /// No registration has this name.
    #[error("unknown platform `{name}`; configured platforms: {}", list(.configured))]
    UnknownPlatform {
        /// The name asked for.
        name: String,
        /// The configured names.
        configured: Vec<String>,
    },
    /// The course ID cannot be put in a target link URI.
    #[error("course `{course}`: {message}")]
    BadCourse {
        /// The course ID asked for.
        course: String,
        /// What is wrong with it.
        message: &'static str,
    },
    /// The configured tool key does not load.
    #[error("lti13.key: {0}")]
    BadKey(String),
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tool's values, the same for every platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tool {
    /// `server.public_url`.
    pub public_url: String,
    /// The OIDC login initiation URL (`/lti/1.3/login`).
    pub login_url: String,
    /// The redirect URI (`/lti/1.3/launch`), where the id_token is posted.
    pub redirect_uri: String,
    /// The tool's public key set (`/lti/1.3/jwks.json`).
    pub jwks_url: String,
    /// The plain target link URI (`/lti/1.3/launch`), used with the custom
    /// parameter.
    pub target_link_uri: String,
    /// The course asked for (`--course`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub course: Option<String>,
    /// The target link URI with the course appended (no custom parameter
    /// needed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub course_target_link_uri: Option<String>,
    /// The custom parameter (`course=ID`), the other way to name the course.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_parameter: Option<String>,
    /// The AGS scope grades need.
    pub score_scope: &'static str,
    /// The tool's name in the LMS (`cartridge.title`).
    #[serde(skip)]
    pub title: String,
    /// Its description (`cartridge.description`, else the title).
    #[serde(skip)]
    pub description: String,
    /// `scheme://host[:port]` of the public URL.
    #[serde(skip)]
    pub origin: String,
    /// The public host.
    #[serde(skip)]
    pub host: String,
}

impl Tool {
    /// The tool's values under `settings`, for `course` if given.
    pub fn new(settings: &Settings, course: Option<&str>) -> Self {
        let public = &settings.server.public_url;
        let title = settings.cartridge.title.clone();
        let description = if settings.cartridge.description.is_empty() {
            title.clone()
        } else {
            settings.cartridge.description.clone()
        };
        Tool {
            public_url: public.url_for(""),
            login_url: public.url_for("/lti/1.3/login"),
            redirect_uri: public.url_for("/lti/1.3/launch"),
            jwks_url: public.url_for("/lti/1.3/jwks.json"),
            target_link_uri: public.url_for("/lti/1.3/launch"),
            course: course.map(str::to_string),
            course_target_link_uri: course.map(|c| {
                public.url_for(&format!("/lti/1.3/launch/{}", percent_encode(c.as_bytes())))
            }),
            custom_parameter: course.map(|c| format!("course={c}")),
            score_scope: AGS_SCORE_SCOPE,
            title,
            description,
            origin: public.origin(),
            host: public.host.clone(),
        }
    }

    /// The target link URI to register: the course's when a course was
    /// asked for, else the plain one.
    pub fn link(&self) -> &str {
        self.course_target_link_uri
            .as_deref()
            .unwrap_or(&self.target_link_uri)
    }
}

/// The tool's current public key, for a platform that takes a key instead
/// of the JWKS URL.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolKey {
    /// Its `kid` (RFC 7638 thumbprint).
    pub kid: String,
    /// The public JWK (`kty`, `n`, `e`, `alg`, `use`, `kid`).
    pub jwk: serde_json::Value,
}

/// A configured registration's values (`--platform NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlatformValues {
    /// `name`.
    pub name: String,
    /// `issuer`.
    pub issuer: String,
    /// `client_id`.
    pub client_id: String,
    /// `deployment_ids` (`["*"]`: any).
    pub deployment_ids: Vec<String>,
    /// `auth_login_url`.
    pub auth_login_url: String,
    /// `auth_token_url`.
    pub auth_token_url: String,
    /// The token request's audience (`token_audience`, else the token URL).
    pub token_audience: String,
    /// `jwks_url`.
    pub jwks_url: String,
    /// The tenant its learners belong to.
    pub tenant: String,
    /// That tenant's `lms_id`.
    pub lms_id: String,
    /// The linked LTI 1.1 consumer, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// `trust_unsigned_migration`.
    pub trust_unsigned_migration: bool,
    /// `allow_private_endpoints`.
    pub allow_private_endpoints: bool,
}

impl PlatformValues {
    fn new(p: &Platform) -> Self {
        PlatformValues {
            name: p.name.clone(),
            issuer: p.issuer.clone(),
            client_id: p.client_id.clone(),
            deployment_ids: match &p.deployment_ids {
                DeploymentIds::Any => vec!["*".into()],
                DeploymentIds::Only(ids) => ids.clone(),
            },
            auth_login_url: p.auth_login_url.clone(),
            auth_token_url: p.auth_token_url.clone(),
            token_audience: p.token_audience.clone(),
            jwks_url: p.jwks_url.clone(),
            tenant: p.tenant.name.clone(),
            lms_id: p.tenant.lms_id.clone(),
            consumer: p.consumer.clone(),
            trust_unsigned_migration: p.trust_unsigned_migration,
            allow_private_endpoints: p.allow_private_endpoints,
        }
    }
}

/// Everything `ltigate export --lti13` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lti13Export {
    /// The tool's values.
    #[serde(flatten)]
    pub tool: Tool,
    /// The tool's current public key (`null`: no `[lti13]` key configured).
    pub tool_key: Option<ToolKey>,
    /// The names `--lms` takes.
    pub lms_names: Vec<&'static str>,
    /// The chosen LMS's registration form (`--lms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lms: Option<LmsGuide>,
    /// The values to bring back into `[[platforms]]`.
    pub bring_back: Vec<BringBack>,
    /// A `[[platforms]]` entry to edit into the configuration.
    pub platforms_toml: String,
    /// A configured registration's values (`--platform`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformValues>,
}

impl Lti13Export {
    /// The export for `lms` (or the general one), `course` (or none), and
    /// the registration named `platform`.
    pub fn new(
        settings: &Settings,
        lms: Option<Lms>,
        course: Option<&str>,
        platform: Option<&str>,
    ) -> Result<Self, Lti13ExportError> {
        let platform = platform
            .map(|name| {
                settings
                    .platform(name)
                    .map(PlatformValues::new)
                    .ok_or_else(|| Lti13ExportError::UnknownPlatform {
                        name: name.to_string(),
                        configured: settings.platforms.iter().map(|p| p.name.clone()).collect(),
                    })
            })
            .transpose()?;
        if let Some(c) = course {
            check_course_id(c).map_err(|message| Lti13ExportError::BadCourse {
                course: c.to_string(),
                message,
            })?;
        }
        let generated = crate::launch::tool_key::existing_generated_key(settings);
        let tool_key = settings
            .lti13
            .key
            .as_ref()
            .or(generated.as_ref())
            .map(|der| {
                SigningKey::from_pkcs8_der(der.expose())
                    .map(|k| ToolKey {
                        kid: k.kid().to_string(),
                        jwk: k.public_jwk().to_json(),
                    })
                    .map_err(|e| Lti13ExportError::BadKey(e.to_string()))
            })
            .transpose()?;
        let tool = Tool::new(settings, course);
        let bring_back = lms::bring_back(lms);
        let consumers: Vec<String> = settings
            .consumers
            .iter()
            .map(|c| c.tenant.name.clone())
            .collect();
        Ok(Lti13Export {
            platforms_toml: lms::platforms_toml(lms, &bring_back, &consumers),
            lms: lms.map(|l| lms::guide(l, &tool)),
            tool,
            tool_key,
            lms_names: Lms::ALL.iter().map(|l| l.name()).collect(),
            bring_back,
            platform,
        })
    }

    /// The human-readable form.
    pub fn to_text(&self) -> String {
        let t = &self.tool;
        let mut out = String::new();
        let _ = writeln!(out, "LTI 1.3 registration of {}\n", t.public_url);
        let _ = writeln!(
            out,
            "What the platform admin enters (the same for every platform):"
        );
        let line = |out: &mut String, label: &str, value: &str| {
            let _ = writeln!(out, "  {label:<36}{value}");
        };
        line(&mut out, "Login URL (OIDC login initiation):", &t.login_url);
        line(&mut out, "Redirect URI:", &t.redirect_uri);
        line(&mut out, "JWKS URL (the tool's keyset):", &t.jwks_url);
        match (&t.course_target_link_uri, &t.custom_parameter) {
            (Some(course_link), Some(custom)) => {
                line(&mut out, "Target link URI:", course_link);
                line(
                    &mut out,
                    "  or the plain target link URI",
                    &t.target_link_uri,
                );
                line(&mut out, "  with the custom parameter", custom);
            }
            _ => {
                line(&mut out, "Target link URI:", &t.target_link_uri);
                let _ = writeln!(
                    out,
                    "    (each link names its course: the custom parameter course=ID, or the\n     \
                     course appended: {}/ID)",
                    t.target_link_uri
                );
            }
        }
        line(&mut out, "Scope (grades, AGS):", t.score_scope);
        match &self.tool_key {
            Some(k) => line(
                &mut out,
                "Tool key:",
                &format!("kid {} (public JWK below)", k.kid),
            ),
            None => line(
                &mut out,
                "Tool key:",
                "none configured ([lti13] key_file; on the embedded store ltigate generates one at its first start with [[platforms]])",
            ),
        }
        out.push('\n');

        if let Some(p) = &self.platform {
            platform_text(&mut out, p);
        }

        match &self.lms {
            Some(g) => guide_text(&mut out, g),
            None => {
                let _ = writeln!(
                    out,
                    "Each LMS's registration form, field by field: add --lms NAME, one of: {}\n",
                    self.lms_names.join(", ")
                );
            }
        }

        let _ = writeln!(
            out,
            "Bring back into [[platforms]] (the values the LMS shows once the tool is registered):"
        );
        for b in &self.bring_back {
            wrapped(&mut out, &format!("  {:<16} ", b.key), &b.from);
        }
        let _ = writeln!(
            out,
            "\nThe [[platforms]] entry to edit into the configuration (replace the\n\
             upper-case placeholders and example hosts with what the LMS shows):"
        );
        out.push_str(&self.platforms_toml);

        match &self.tool_key {
            Some(k) => {
                let _ = writeln!(
                    out,
                    "\nThe tool's public JWK, for a platform that takes a key instead of the JWKS\n\
                     URL (a pasted key must be replaced by hand at each key rotation):"
                );
                let _ = writeln!(out, "{}", pretty(&k.jwk));
            }
            None => {
                let _ = writeln!(
                    out,
                    "\nNo tool key is configured ([lti13] key_file; on the embedded store ltigate\n\
                     generates one at its first start with [[platforms]]), so there is no public\n\
                     key to paste and the JWKS URL publishes none yet."
                );
            }
        }
        out
    }

    /// The JSON form: one object holding everything, for scripts.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Writes `text` after `lead`, wrapped at 88 columns, continuation lines
/// indented as far as `lead` (a word longer than a line, a URL, stays
/// whole).
fn wrapped(out: &mut String, lead: &str, text: &str) {
    const WIDTH: usize = 88;
    let indent = " ".repeat(lead.chars().count());
    let mut line = lead.to_string();
    let mut empty = true;
    for word in text.split(' ') {
        if !empty && line.chars().count() + 1 + word.chars().count() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = indent.clone();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn platform_text(out: &mut String, p: &PlatformValues) {
    let _ = writeln!(out, "Registration \"{}\" (configured):", p.name);
    let line = |out: &mut String, label: &str, value: &str| {
        let _ = writeln!(out, "  {label:<18}{value}");
    };
    line(out, "Issuer:", &p.issuer);
    line(out, "Client ID:", &p.client_id);
    line(out, "Deployment IDs:", &p.deployment_ids.join(", "));
    line(out, "Auth login URL:", &p.auth_login_url);
    line(out, "Token URL:", &p.auth_token_url);
    line(out, "Token audience:", &p.token_audience);
    line(out, "JWKS URL:", &p.jwks_url);
    let learners = match &p.consumer {
        Some(c) => format!(
            "those of LTI 1.1 consumer \"{c}\" (lms_id {}){}",
            p.lms_id,
            if p.trust_unsigned_migration {
                "; unsigned lti1p1 user ids trusted"
            } else {
                ""
            }
        ),
        None => format!(
            "a tenant of its own, \"{}\" (lms_id {})",
            p.tenant, p.lms_id
        ),
    };
    line(out, "Learners:", &learners);
    if p.allow_private_endpoints {
        line(out, "Private endpoints:", "allowed");
    }
    out.push('\n');
}

fn guide_text(out: &mut String, g: &LmsGuide) {
    let _ = writeln!(out, "{}: {}", g.title, g.register_at);
    let width = g.fields.iter().map(|f| f.field.len()).max().unwrap_or(0) + 2;
    for f in &g.fields {
        let label = format!("{}:", f.field);
        let _ = writeln!(out, "  {label:<width$}{}", f.value);
    }
    let _ = writeln!(out, "Then:");
    for step in &g.then {
        wrapped(out, "  - ", step);
    }
    if let Some(json) = &g.developer_key_json {
        let _ = writeln!(out, "\nDeveloper key JSON (Method: Paste JSON):");
        let _ = writeln!(out, "{}", pretty(json));
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{validate, RawConfig};
    use crate::lti::id_token::course_from_target_link;

    fn settings(public_url: &str) -> Settings {
        let raw: RawConfig = toml::from_str(&format!(
            r#"
[server]
public_url = "{public_url}"
[cartridge]
title = "Platform"
[[consumers]]
name = "Acme"
key = "acme-key"
secret = "acme-secret"
lms_id = "acme"
[[platforms]]
name = "Acme Moodle 1.3"
issuer = "https://moodle.acme.edu"
client_id = "Xk3"
deployment_ids = ["1", "2"]
auth_login_url = "https://moodle.acme.edu/mod/lti/auth.php"
auth_token_url = "https://moodle.acme.edu/mod/lti/token.php"
jwks_url = "https://moodle.acme.edu/mod/lti/certs.php"
consumer = "Acme"
"#
        ))
        .unwrap();
        validate(&raw).unwrap()
    }

    #[test]
    fn urls_under_a_prefix_and_the_course_round_trips() {
        let s = settings("https://learn.example.com/p");
        let e = Lti13Export::new(&s, None, Some("C 1/ä"), None).unwrap();
        assert_eq!(
            e.tool.login_url,
            "https://learn.example.com/p/lti/1.3/login"
        );
        assert_eq!(
            e.tool.redirect_uri,
            "https://learn.example.com/p/lti/1.3/launch"
        );
        assert_eq!(
            e.tool.jwks_url,
            "https://learn.example.com/p/lti/1.3/jwks.json"
        );
        let link = e.tool.course_target_link_uri.as_deref().unwrap();
        assert_eq!(
            link,
            "https://learn.example.com/p/lti/1.3/launch/C%201%2F%C3%A4"
        );
        // The launch reads the course back from exactly this link.
        assert_eq!(
            course_from_target_link("https://learn.example.com/p", link).as_deref(),
            Some("C 1/ä")
        );
        assert_eq!(e.tool.custom_parameter.as_deref(), Some("course=C 1/ä"));
        assert!(e.tool_key.is_none());
        assert!(e
            .to_text()
            .contains("none configured ([lti13] key_file; on the embedded store"));
    }

    #[test]
    fn bad_course_and_unknown_platform_are_refused() {
        let s = settings("https://learn.example.com");
        let err = Lti13Export::new(&s, None, Some(""), None).unwrap_err();
        assert!(matches!(err, Lti13ExportError::BadCourse { .. }), "{err}");
        let err = Lti13Export::new(&s, None, None, Some("Nope")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown platform `Nope`; configured platforms: `Acme Moodle 1.3`"
        );
        let p = Lti13Export::new(&s, None, None, Some("Acme Moodle 1.3"))
            .unwrap()
            .platform
            .unwrap();
        assert_eq!(p.deployment_ids, ["1", "2"]);
        assert_eq!(p.consumer.as_deref(), Some("Acme"));
        assert_eq!(p.lms_id, "acme");
        assert_eq!(p.token_audience, p.auth_token_url);
    }

    /// Every snippet is TOML of one `[[platforms]]` entry whose keys are
    /// the ones the configuration takes.
    #[test]
    fn every_snippet_is_one_platforms_entry() {
        let s = settings("https://learn.example.com");
        for lms in Lms::ALL.into_iter().map(Some).chain([None]) {
            let e = Lti13Export::new(&s, lms, None, None).unwrap();
            let t: toml::Table = e.platforms_toml.parse().unwrap();
            let entry = t["platforms"].as_array().unwrap()[0].as_table().unwrap();
            for key in [
                "name",
                "issuer",
                "client_id",
                "deployment_ids",
                "auth_login_url",
                "auth_token_url",
                "jwks_url",
                "lms_id",
            ] {
                assert!(entry.contains_key(key), "{lms:?}: {key}");
            }
            assert_eq!(
                entry.contains_key("token_audience"),
                lms == Some(Lms::Brightspace),
                "{lms:?}"
            );
            assert!(e.platforms_toml.contains("# consumer = \"Acme\""));
        }
    }
}
