//! What each LMS's LTI 1.3 registration form asks for, what goes in each
//! field, and where the LMS shows the values that come back into
//! `[[platforms]]`. Labels are those of recent releases; they change between
//! versions, the values do not.

use serde::Serialize;

use super::Tool;
use crate::lti::id_token::AGS_SCORE_SCOPE;

/// An LMS with a guide of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lms {
    /// Instructure Canvas: a developer key, installed by client id.
    Canvas,
    /// Moodle: an external tool configured manually.
    Moodle,
    /// D2L Brightspace: a registration, a deployment, links.
    Brightspace,
    /// Blackboard Learn: the Anthology developer portal, then each school.
    Blackboard,
    /// Sakai: an external tool with LTI 1.3 turned on.
    Sakai,
}

impl Lms {
    /// Every LMS, in the order the CLI lists them.
    pub const ALL: [Lms; 5] = [
        Lms::Canvas,
        Lms::Moodle,
        Lms::Brightspace,
        Lms::Blackboard,
        Lms::Sakai,
    ];

    /// The name `--lms` takes.
    pub fn name(self) -> &'static str {
        match self {
            Lms::Canvas => "canvas",
            Lms::Moodle => "moodle",
            Lms::Brightspace => "brightspace",
            Lms::Blackboard => "blackboard",
            Lms::Sakai => "sakai",
        }
    }

    /// The LMS's own name.
    pub fn title(self) -> &'static str {
        match self {
            Lms::Canvas => "Canvas",
            Lms::Moodle => "Moodle",
            Lms::Brightspace => "Brightspace",
            Lms::Blackboard => "Blackboard Learn",
            Lms::Sakai => "Sakai",
        }
    }

    /// The LMS of a `--lms` name.
    pub fn from_name(name: &str) -> Option<Lms> {
        Lms::ALL.into_iter().find(|l| l.name() == name)
    }
}

/// One field of a registration form and what to enter in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Field {
    /// The form's label.
    pub field: String,
    /// What to enter.
    pub value: String,
}

/// One key of `[[platforms]]` and where the LMS shows its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BringBack {
    /// The `[[platforms]]` key.
    pub key: &'static str,
    /// Where the LMS shows it, in the LMS's words.
    pub from: String,
    /// Its value when it is known, else the shape it has (the snippet's
    /// placeholder).
    pub value: String,
}

/// An LMS's registration, field by field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LmsGuide {
    /// The `--lms` name.
    pub name: &'static str,
    /// The LMS's own name.
    pub title: &'static str,
    /// Where the registration form is.
    pub register_at: String,
    /// The form's fields and their values.
    pub fields: Vec<Field>,
    /// What to do after the form, in order.
    pub then: Vec<String>,
    /// Canvas: the developer key's JSON configuration (Method: Paste JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub developer_key_json: Option<serde_json::Value>,
}

fn field(field: &str, value: impl Into<String>) -> Field {
    Field {
        field: field.to_string(),
        value: value.into(),
    }
}

fn back(key: &'static str, from: &str, value: &str) -> BringBack {
    BringBack {
        key,
        from: from.to_string(),
        value: value.to_string(),
    }
}

/// What goes in a custom parameters field: nothing when the target link
/// carries the course, else `course=ID` per link.
fn custom_parameters(tool: &Tool) -> String {
    match &tool.course {
        Some(c) => format!(
            "none: the course is in the target link URI (or the plain {} with course={})",
            tool.target_link_uri, c
        ),
        None => "course=ID for each link (or the course appended to the target link URI)".into(),
    }
}

/// The guide to registering the tool in `lms`.
pub fn guide(lms: Lms, tool: &Tool) -> LmsGuide {
    let link = tool.link().to_string();
    let (register_at, fields, then, developer_key_json) = match lms {
        Lms::Canvas => (
            "Admin → Developer Keys → + Developer Key → + LTI Key (in the root account)".to_string(),
            vec![
                field("Key Name", &tool.title),
                field("Redirect URIs", &tool.redirect_uri),
                field("Method", "Paste JSON"),
                field(
                    "LTI 1.3 Configuration",
                    "the developer-key JSON below (privacy_level public: Canvas sends names and email)",
                ),
            ],
            vec![
                "Save, and set the key ON in its State column; the number in its Details column is the client_id.".to_string(),
                "Install the key by client id where it is to be used (the account, a sub-account or one course): Settings → Apps → View App Configurations → + App → Configuration Type: By Client ID. Each installation has a Deployment Id (the app's gear menu → Deployment Id); list them in deployment_ids.".to_string(),
                format!("Grades: an Assignment with submission type External Tool, this tool, and {link} as its URL (a module item launches without a line item, so without grades)."),
                "Hosted Canvas uses one issuer for every school: each school's registration is told apart by its client_id and deployment ids.".to_string(),
            ],
            Some(canvas_json(tool)),
        ),
        Lms::Moodle => (
            "Site administration → Plugins → Activity modules → External tool → Manage tools → configure a tool manually".to_string(),
            vec![
                field("Tool name", &tool.title),
                field("Tool URL", &link),
                field("LTI version", "LTI 1.3"),
                field("Public key type", "Keyset URL"),
                field("Public keyset", &tool.jwks_url),
                field("Initiate login URL", &tool.login_url),
                field("Redirection URI(s)", &tool.redirect_uri),
                field("Custom parameters", custom_parameters(tool)),
                field("Tool configuration usage", "Show as preconfigured tool when adding an external tool"),
                field("Default launch container", "Embed, without blocks (or New window)"),
                field("IMS LTI Assignment and Grade Services", "Use this service for grade sync only"),
                field("Share launcher's name with tool", "Always"),
                field("Share launcher's email with tool", "Always"),
                field("Accept grades from the tool", "Always"),
            ],
            vec![
                "Save; the tool's View configuration details (the list icon in Manage tools) shows Platform ID, Client ID, Deployment ID, Public keyset URL, Access token URL and Authentication request URL.".to_string(),
                "A teacher adds an External tool activity with this preconfigured tool; for grades, give it a grade of type Point.".to_string(),
                "A Moodle on a private network address also needs allow_private_endpoints = true in its [[platforms]] entry.".to_string(),
            ],
            None,
        ),
        Lms::Brightspace => (
            "Admin Tools → Manage Extensibility → LTI Advantage → Register Tool → Standard".to_string(),
            vec![
                field("Name", &tool.title),
                field("Domain", &tool.origin),
                field("Redirect URLs", &tool.redirect_uri),
                field("OpenID Connect Login URL", &tool.login_url),
                field("Target Link URI", &link),
                field("Keyset URL", &tool.jwks_url),
                field("Extensions", "Assignment and Grade Services"),
                field("Roles", "Send Institution Role"),
            ],
            vec![
                "Register; the registration shows Issuer, Client Id, OpenID Connect Authentication Endpoint, Brightspace OAuth2 Access Token URL, Brightspace OAuth2 Audience and Brightspace Keyset URL.".to_string(),
                "The token audience is Brightspace's own value (Brightspace OAuth2 Audience, https://api.brightspace.com/auth/token), not the token URL: bring it back as token_audience, or every grade is refused.".to_string(),
                "View Deployments → New Deployment: this tool; Extensions: Assignment and Grade Services; Security Settings: Name, Email, User ID and Org Unit Information; Add Org Units. The deployment shows its Deployment Id.".to_string(),
                format!("View Links → New Link: URL {link} (or the plain target link URI with a custom parameter named course). Associate a grade item with the link for grades."),
            ],
            None,
        ),
        Lms::Blackboard => (
            "the Anthology Developer Portal (developer.anthology.com), once for every school: Register a REST or LTI application → My integration supports LTI 1.3".to_string(),
            vec![
                field("Application Name", &tool.title),
                field("Description", &tool.description),
                field("Domain(s)", &tool.host),
                field("Login Initiation URL", &tool.login_url),
                field("Tool Redirect URL(s)", &tool.redirect_uri),
                field("Tool JWKS URL", &tool.jwks_url),
                field("Signing Algorithm", "RS256"),
                field("Custom Parameters", "none (they would apply to every school; the course goes in each placement)"),
            ],
            vec![
                "Register; the portal shows the Application ID (the client_id), Issuer, Public keyset URL, Auth token endpoint and OIDC auth request endpoint.".to_string(),
                "The Application ID is one client id shared by every school that deploys the tool; each school gets its own Deployment ID, and deployment_ids picks the school: one [[platforms]] entry per school, all with the same issuer and client_id, each with its own deployment ids (never [\"*\"]).".to_string(),
                "Each school's Learn admin: Administrator Panel → Integrations → LTI Tool Providers → Register LTI 1.3/Advantage Tool, Client ID = the Application ID; Learn then shows the Deployment ID. Tool Status: Approved; User Fields to Send: Role in Course, Name, Email Address; Allow grade service access: Yes.".to_string(),
                format!("Manage Placements → Create Placement: Type Course content tool, Allows grading checked, Target Link URI {link} (or the plain one with Tool Provider Custom Parameters course=ID)."),
            ],
            None,
        ),
        Lms::Sakai => (
            "Administration Workspace → External Tools → Install LTI 1.x Tool (labels vary between Sakai releases)".to_string(),
            vec![
                field("Tool Title", &tool.title),
                field("Launch URL", &link),
                field("LTI 1.3", "on (LTI Advantage)"),
                field("Tool OIDC Login Initiation URL", &tool.login_url),
                field("Tool Redirect Endpoint(s)", &tool.redirect_uri),
                field("Tool Keyset URL", &tool.jwks_url),
                field("Custom parameters", custom_parameters(tool)),
                field("Privacy", "send user names and email addresses to the tool"),
                field("Services", "allow the tool to send grades (Assignment and Grade Services)"),
            ],
            vec![
                "Save; the tool's LTI 1.3 details show the issuer, Client ID, Deployment ID, OIDC authentication URL, keyset URL and token URL.".to_string(),
                "A Sakai on a private network address also needs allow_private_endpoints = true in its [[platforms]] entry.".to_string(),
            ],
            None,
        ),
    };
    LmsGuide {
        name: lms.name(),
        title: lms.title(),
        register_at,
        fields,
        then,
        developer_key_json,
    }
}

/// Canvas's developer-key JSON configuration: resource-link launches from
/// link and assignment selection, the score scope, the tool's JWKS URL, and
/// `privacy_level: public` (without it Canvas sends no names or email).
fn canvas_json(tool: &Tool) -> serde_json::Value {
    let link = tool.link();
    let placement = |placement: &str| {
        serde_json::json!({
            "placement": placement,
            "message_type": "LtiResourceLinkRequest",
            "target_link_uri": link,
            "text": tool.title,
        })
    };
    serde_json::json!({
        "title": tool.title,
        "description": tool.description,
        "oidc_initiation_url": tool.login_url,
        "target_link_uri": link,
        "public_jwk_url": tool.jwks_url,
        "scopes": [AGS_SCORE_SCOPE],
        "extensions": [{
            "platform": "canvas.instructure.com",
            "domain": tool.host,
            "tool_id": "ltigate",
            "privacy_level": "public",
            "settings": {
                "text": tool.title,
                "placements": [placement("link_selection"), placement("assignment_selection")],
            },
        }],
    })
}

/// Which values come back into `[[platforms]]` from `lms` (or from any
/// platform), where the LMS shows each, and its value or shape.
pub fn bring_back(lms: Option<Lms>) -> Vec<BringBack> {
    match lms {
        None => vec![
            back("issuer", "the platform's issuer (Platform ID, iss)", "https://lms.example.edu"),
            back("client_id", "the client id the platform gave the tool", "CLIENT-ID"),
            back("deployment_ids", "the deployment id of each installation", "DEPLOYMENT-ID"),
            back("auth_login_url", "the OIDC authentication (authorisation) endpoint", "https://lms.example.edu/OIDC-AUTH-URL"),
            back("auth_token_url", "the OAuth 2 access token URL", "https://lms.example.edu/TOKEN-URL"),
            back("token_audience", "only when the platform names a token audience other than its token URL (Brightspace)", ""),
            back("jwks_url", "the platform's public keyset URL", "https://lms.example.edu/JWKS-URL"),
        ],
        Some(Lms::Canvas) => vec![
            back("issuer", "hosted Canvas: this, for every school (beta: https://canvas.beta.instructure.com, test: https://canvas.test.instructure.com); self-hosted: its own issuer", "https://canvas.instructure.com"),
            back("client_id", "the developer key's ID (Developer Keys, Details column)", "CLIENT-ID"),
            back("deployment_ids", "each installation's Deployment Id (Settings → Apps → the app's gear menu)", "DEPLOYMENT-ID"),
            back("auth_login_url", "hosted Canvas (beta, test: sso.beta.canvaslms.com, sso.test.canvaslms.com); self-hosted: https://HOST/api/lti/authorize_redirect", "https://sso.canvaslms.com/api/lti/authorize_redirect"),
            back("auth_token_url", "hosted Canvas; self-hosted: https://HOST/login/oauth2/token", "https://sso.canvaslms.com/login/oauth2/token"),
            back("jwks_url", "hosted Canvas; self-hosted: https://HOST/api/lti/security/jwks", "https://sso.canvaslms.com/api/lti/security/jwks"),
        ],
        Some(Lms::Moodle) => vec![
            back("issuer", "Platform ID", "https://moodle.example.edu"),
            back("client_id", "Client ID", "CLIENT-ID"),
            back("deployment_ids", "Deployment ID", "DEPLOYMENT-ID"),
            back("auth_login_url", "Authentication request URL", "https://moodle.example.edu/mod/lti/auth.php"),
            back("auth_token_url", "Access token URL", "https://moodle.example.edu/mod/lti/token.php"),
            back("jwks_url", "Public keyset URL", "https://moodle.example.edu/mod/lti/certs.php"),
        ],
        Some(Lms::Brightspace) => vec![
            back("issuer", "Issuer", "https://school.brightspace.com"),
            back("client_id", "Client Id", "CLIENT-ID"),
            back("deployment_ids", "the deployment's Deployment Id", "DEPLOYMENT-ID"),
            back("auth_login_url", "OpenID Connect Authentication Endpoint", "https://school.brightspace.com/d2l/lti/authenticate"),
            back("auth_token_url", "Brightspace OAuth2 Access Token URL", "https://auth.brightspace.com/core/connect/token"),
            back("token_audience", "Brightspace OAuth2 Audience (not the token URL)", "https://api.brightspace.com/auth/token"),
            back("jwks_url", "Brightspace Keyset URL", "https://school.brightspace.com/d2l/.well-known/jwks"),
        ],
        Some(Lms::Blackboard) => vec![
            back("issuer", "Issuer (the same for every Learn site)", "https://blackboard.com"),
            back("client_id", "Application ID (shared by every school)", "APPLICATION-ID"),
            back("deployment_ids", "the Deployment ID the school's Learn admin sees (one per school)", "DEPLOYMENT-ID"),
            back("auth_login_url", "OIDC auth request endpoint", "https://developer.blackboard.com/api/v1/gateway/oidcauth"),
            back("auth_token_url", "Auth token endpoint", "https://developer.blackboard.com/api/v1/gateway/oauth2/jwttoken"),
            back("jwks_url", "Public keyset URL", "https://developer.blackboard.com/api/v1/management/applications/APPLICATION-ID/jwks.json"),
        ],
        Some(Lms::Sakai) => vec![
            back("issuer", "the issuer (the Sakai server's URL)", "https://sakai.example.edu"),
            back("client_id", "Client ID", "CLIENT-ID"),
            back("deployment_ids", "Deployment ID", "DEPLOYMENT-ID"),
            back("auth_login_url", "OIDC authentication URL", "https://sakai.example.edu/imsoidc/lti13/oidc_auth"),
            back("auth_token_url", "token URL", "https://sakai.example.edu/imsblis/lti13/token/TOOL-ID"),
            back("jwks_url", "keyset URL", "https://sakai.example.edu/imsblis/lti13/keyset"),
        ],
    }
}

/// A `[[platforms]]` entry to edit into the configuration: the values of
/// [`bring_back`], a tenant of its own, and (commented out) the link to an
/// LTI 1.1 consumer instead. `consumers` are the configured consumer names.
pub fn platforms_toml(lms: Option<Lms>, values: &[BringBack], consumers: &[String]) -> String {
    use std::fmt::Write as _;
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let (name, lms_id) = match lms {
        Some(l) => (format!("{} 1.3", l.title()), format!("{}13", l.name())),
        None => ("LMS 1.3".to_string(), "lms13".to_string()),
    };
    let mut out = String::from("[[platforms]]\n");
    let _ = writeln!(out, "name = {}", quote(&name));
    for v in values {
        let _ = writeln!(out, "# {}", v.from);
        if v.value.is_empty() {
            let _ = writeln!(out, "# {} = \"\"", v.key);
            continue;
        }
        let value = if v.key == "deployment_ids" {
            format!("[{}]", quote(&v.value))
        } else {
            quote(&v.value)
        };
        let _ = writeln!(out, "{} = {value}", v.key);
    }
    out.push_str("# A tenant of its own (its learners' namespace, unique among tenants):\n");
    let _ = writeln!(out, "lms_id = {}", quote(&lms_id));
    out.push_str("# max_licences = 500\n");
    out.push_str(
        "# …or, instead of lms_id, the learners and licences of an LTI 1.1 consumer\n\
         # (migration: a learner keeps their upstream account and licence):\n",
    );
    match consumers.first() {
        Some(first) => {
            let names: Vec<String> = consumers.iter().map(|c| quote(c)).collect();
            let _ = writeln!(
                out,
                "# consumer = {}   # configured consumers: {}",
                quote(first),
                names.join(", ")
            );
        }
        None => out.push_str("# consumer = \"NAME\"   # a [[consumers]] name\n"),
    }
    out
}
