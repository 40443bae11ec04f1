//! `POST /lti/1.3/launch[/{course}]`: the redirect URI of the OIDC login
//! (DESIGN §13). The form's `id_token` and `state` are checked in the
//! order of DESIGN §13's table (the first failure decides), and the launch
//! becomes a protocol-neutral [`VerifiedLaunch`] for the one
//! [`accept`](crate::launch::accept) path. Every answer deletes the
//! login's state cookie.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};

use super::state::{self, LoginState};
use super::Lti13;
use crate::config::{Platform, Settings};
use crate::http::{respond, unix_now, Body};
use crate::launch::jwks::{FetchResult, JwksError};
use crate::launch::{accept, finish, v1p1, Failure, Learner, VerifiedLaunch};
use crate::lti::encode::parse_form;
use crate::lti::id_token::{self, Expected, IdToken, Lti13Error, Lti13Rejection};
use crate::lti::migration::{self, MigrationLink};
use crate::lti::LtiVersion;
use crate::outcomes::{check_target_url, OutcomeTarget};
use crate::session::{Gate, Session};
use crate::store::NonceCheck;

/// The nonce cache's namespace in which a state's single use is recorded
/// (its atomic set-if-absent, in every backend). An LTI 1.1 consumer with
/// this very key could only collide with a nonce equal to a random
/// 128-bit state id.
const STATE_USE_NAMESPACE: &str = "lti13:state";

impl From<Lti13Error> for Failure {
    fn from(e: Lti13Error) -> Self {
        Failure::new(e.rejection(), e.detail().to_string())
    }
}

/// The form body of a launch or a login (as an LTI 1.1 launch's: a form,
/// 64 KiB at most, arrived in time); the refusal's detail otherwise.
pub(crate) async fn read_form<B>(gate: &Gate, headers: &HeaderMap, body: B) -> Result<Bytes, String>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<crate::http::BoxError>,
{
    v1p1::read_form(gate, headers, body)
        .await
        .map_err(|f| f.detail)
}

/// Handles a launch. `path_course` is the raw (still encoded) last path
/// segment of `/lti/1.3/launch/{course}`.
pub async fn handle<B>(
    gate: &Gate,
    lti13: &Lti13,
    req: Request<B>,
    path_course: Option<&str>,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<crate::http::BoxError>,
{
    let started = Instant::now();
    let json = respond::prefers_json(req.headers());
    let mut seen = Seen::default();
    let result = run(gate, lti13, req, path_course, &mut seen).await;
    if seen.deferred {
        // The platform-storage page: the launch comes again with its binder.
        return result.unwrap_or_else(|f| {
            respond::reject(
                &crate::launch::error::RouteError::Launch {
                    shown: f.shown,
                    detail: f.detail,
                },
                json,
            )
        });
    }
    if let (Err(f), Some(token)) = (&result, &seen.token) {
        tracing::warn!(
            iss = %token.iss,
            aud = ?token.aud,
            deployment_id = %token.deployment_id,
            reason = f.reason.label(),
            "LTI 1.3 launch refused"
        );
    }
    let mut resp = finish(
        gate,
        started,
        LtiVersion::V1p3,
        &seen.tenant_label,
        result,
        json,
    );
    if let Some(name) = seen.state_cookie {
        if let Ok(v) = HeaderValue::from_str(&state::delete_cookie(&name)) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// What a launch revealed before it ended, for the answer and the log.
struct Seen {
    /// The tenant's name once a registration is known.
    tenant_label: String,
    /// The state cookie to delete.
    state_cookie: Option<String>,
    /// The token's claims (logged on a refusal: never the token itself).
    token: Option<TokenSummary>,
    /// The answer is the platform-storage page, not a launch's end.
    deferred: bool,
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            tenant_label: "unknown".to_string(),
            state_cookie: None,
            token: None,
            deferred: false,
        }
    }
}

/// What a refused launch's log line tells of the token.
struct TokenSummary {
    iss: String,
    aud: Vec<String>,
    deployment_id: String,
}

/// The launch form's parameters.
struct Form {
    id_token: String,
    state: String,
    /// The platform-storage binder, on the second post of a launch whose
    /// state cookie was blocked.
    binder: Option<String>,
}

/// `id_token` and `state`, or the platform's OIDC `error`.
fn read_params(body: &[u8]) -> Result<Form, Failure> {
    let pairs = parse_form(body)
        .map_err(|e| Failure::new(Lti13Rejection::InvalidRequest, format!("body: {e}")))?;
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    if let Some(error) = get("error") {
        let shown = |s: &str| -> String {
            s.chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect::<String>()
        };
        let description = get("error_description")
            .map(|d| format!(": {}", shown(d)))
            .unwrap_or_default();
        return Err(Failure::new(
            Lti13Rejection::InvalidRequest,
            format!(
                "the platform answered the login with {}{description}",
                shown(error)
            ),
        ));
    }
    match (get("id_token"), get("state")) {
        (Some(t), Some(s)) => Ok(Form {
            id_token: t.to_string(),
            state: s.to_string(),
            binder: get("binder").map(str::to_string),
        }),
        (None, _) => Err(Failure::new(
            Lti13Rejection::InvalidRequest,
            "id_token is missing",
        )),
        (_, None) => Err(Failure::new(
            Lti13Rejection::InvalidRequest,
            "state is missing",
        )),
    }
}

async fn run<B>(
    gate: &Gate,
    lti13: &Lti13,
    req: Request<B>,
    path_course: Option<&str>,
    seen: &mut Seen,
) -> Result<Response<Body>, Failure>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<crate::http::BoxError>,
{
    let (parts, body) = req.into_parts();
    let body = v1p1::read_form(gate, &parts.headers, body)
        .await
        .map_err(|f| match f.reason {
            crate::launch::Reason::V1p1(crate::lti::launch::Rejection::InvalidRequest) => {
                Failure::new(Lti13Rejection::InvalidRequest, f.detail)
            }
            _ => f,
        })?;
    let form = read_params(&body)?;
    let token = id_token::parse(&form.id_token)?;
    seen.token = Some(TokenSummary {
        iss: token.iss.clone(),
        aud: token.aud.clone(),
        deployment_id: token.deployment_id.clone(),
    });
    let now = unix_now();
    let login = match open_state(gate, &parts.headers, &form, now, seen)? {
        Bound::Yes(login) => login,
        Bound::ByStorage(binding, id) => {
            seen.deferred = true;
            return Ok(storage_page(gate, parts.uri.path(), &form, &binding, &id));
        }
    };

    let settings = &gate.settings;
    let platform = settings
        .platform_for(&login.iss, &login.client_id, &token.deployment_id)
        .ok_or_else(|| {
            Failure::new(
                Lti13Rejection::UnknownPlatform,
                format!(
                    "no registration of the login's issuer and client id lists deployment {:?}",
                    token.deployment_id
                ),
            )
        })?;
    seen.tenant_label = platform.tenant.name.clone();

    let verified = check_token(gate, lti13, &token, &login, platform, path_course, now).await?;
    let existing = gate
        .open_session(&parts.headers, now)
        .ok()
        .map(|o| o.session.clone());
    if let Some(landing) = record_use(gate, &login, &verified, existing.as_ref(), now).await? {
        return Ok(respond::see_other(&landing));
    }
    let return_url = verified.1;
    accept::accept(gate, &verified.0, existing, now)
        .await
        .map_err(|f| Failure { return_url, ..f })
}

/// Whether the browser proved it holds the state.
enum Bound {
    /// By its cookie, or by the binder it read back from platform storage.
    Yes(LoginState),
    /// Not yet: the cookie is missing, and the binder is to be read from
    /// platform storage (the state's binding, its id).
    ByStorage(state::StorageBinding, String),
}

/// The state: it opens, has not expired, and the browser holds its cookie
/// — or, where the cookie was blocked and the login put a binder in
/// platform storage, the binder.
fn open_state(
    gate: &Gate,
    headers: &HeaderMap,
    form: &Form,
    now: u64,
    seen: &mut Seen,
) -> Result<Bound, Failure> {
    let sealed = form.state.as_str();
    let login = LoginState::open(&gate.sealer, sealed, now)
        .map_err(|why| Failure::new(Lti13Rejection::BadState, why))?;
    let name = login.cookie_name();
    let value = crate::session::cookie::cookie_value(
        headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()),
        &name,
    );
    seen.state_cookie = Some(name);
    match (value, &login.storage, &form.binder) {
        (Some(v), _, _) if state::cookie_matches(&gate.sealer, sealed, v) => Ok(Bound::Yes(login)),
        (Some(_), _, _) => Err(Failure::new(
            Lti13Rejection::BadState,
            "the state cookie is not this state's (another login, or another browser)",
        )),
        (None, Some(binding), Some(binder)) => {
            if binding.matches(binder) {
                Ok(Bound::Yes(login))
            } else {
                Err(Failure::new(
                    Lti13Rejection::BadState,
                    "the platform-storage binder is not this state's",
                ))
            }
        }
        (None, Some(binding), None) => Ok(Bound::ByStorage(binding.clone(), login.id.clone())),
        (None, None, _) => Err(Failure::new(
            Lti13Rejection::BadState,
            "the browser did not send the state's cookie",
        )),
    }
}

/// The page that reads the binder back from platform storage
/// (`lti.get_data`) and posts the launch again with it; without one, it
/// says the launch cannot be confirmed.
fn storage_page(
    gate: &Gate,
    path: &str,
    form: &Form,
    binding: &state::StorageBinding,
    state_id: &str,
) -> Response<Body> {
    use crate::http::respond::html_escape;
    let action = gate.public_path(path);
    let body = format!(
        "<form id=\"relaunch\" method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"id_token\" value=\"{token}\">\
         <input type=\"hidden\" name=\"state\" value=\"{state}\">\
         <input type=\"hidden\" id=\"binder\" name=\"binder\" value=\"\"></form>\
         <p id=\"wait\">Confirming the launch with your LMS&hellip;</p>\
         <p id=\"failed\" hidden>This launch could not be confirmed: your browser blocked the cookie it needs and the LMS did not answer. Open the course again from your LMS.</p>\
         <script>{js}(function(){{\
         ltigateStorage({storage},'get_data',function(v){{\
         if(v){{document.getElementById('binder').value=v;document.getElementById('relaunch').submit();}}\
         else{{document.getElementById('wait').hidden=true;document.getElementById('failed').hidden=false;}}}});\
         }})();</script>",
        action = html_escape(&action),
        token = html_escape(&form.id_token),
        state = html_escape(&form.state),
        js = super::login::STORAGE_JS,
        storage = super::login::storage_js(Some((binding, state_id, None))),
    );
    let mut resp = respond::html(
        http::StatusCode::OK,
        respond::page("Confirming the launch", &body),
    );
    let h = resp.headers_mut();
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "x-ltigate-fallback",
        HeaderValue::from_static("platform-storage"),
    );
    resp
}

/// The token's checks after its registration is known, in order: message
/// type, resource-link claims, key, signature and claims, times, nonce,
/// migration. The launch and its return URL.
async fn check_token(
    gate: &Gate,
    lti13: &Lti13,
    token: &IdToken,
    login: &LoginState,
    platform: &Platform,
    path_course: Option<&str>,
    now: u64,
) -> Result<(VerifiedLaunch, Option<String>), Failure> {
    let settings = &gate.settings;
    token.check_message_type()?;
    let path_course = match path_course {
        Some(raw) => Some(crate::http::decode_path_segment(raw).map_err(|e| {
            Failure::new(
                Lti13Rejection::InvalidRequest,
                format!("course in path: {e}"),
            )
        })?),
        None => None,
    };
    let public_base = settings.server.public_url.url_for("");
    let link = token.resource_link(&public_base, path_course.as_deref())?;

    let kid = token.key_id()?;
    let metrics = &gate.metrics;
    let keys = lti13
        .jwks
        .keys_for(
            lti13.outbound_for(settings, platform),
            &platform.jwks_url,
            kid,
            |r| {
                let result = match r {
                    FetchResult::Ok => "ok",
                    FetchResult::Error => "error",
                };
                metrics
                    .jwks_fetches
                    .with_label_values(&[platform.name.as_str(), result])
                    .inc();
                if r == FetchResult::Ok {
                    metrics
                        .jwks_last_success
                        .with_label_values(&[platform.name.as_str()])
                        .set(unix_now() as i64);
                }
            },
        )
        .await
        .map_err(|e| match e {
            JwksError::UnknownKid(_) => Failure::new(Lti13Rejection::BadToken, e.to_string()),
            JwksError::Unavailable(_) => {
                Failure::new(Lti13Rejection::JwksUnavailable, e.to_string())
            }
        })?;
    token.verify(
        &keys,
        &Expected {
            issuer: &platform.issuer,
            client_id: &platform.client_id,
            target_link_uri: &login.target,
        },
    )?;
    token.check_times(now as i64, settings.lti13.leeway.as_secs() as i64)?;
    token.check_nonce(&login.nonce)?;
    let migrated = migrated_user(settings, token, platform)?;
    let outcome_target = ags_target(gate, platform, &link);

    let launch = VerifiedLaunch {
        tenant: platform.tenant.clone(),
        version: LtiVersion::V1p3,
        learner: Learner {
            user_id: migrated.unwrap_or_else(|| link.user_id.clone()),
            given_name: link.given_name,
            family_name: link.family_name,
            email: link.email,
        },
        course: link.course,
        roles: link.roles,
        outcome_target,
    };
    Ok((launch, link.return_url))
}

/// The AGS outcome target of a launch (DESIGN §13): the endpoint claim's
/// `lineitem` when its scope holds the score scope and the URL may be
/// called (the SSRF rules of §6, the tenant's `outcome_hosts`). A claim
/// without a usable line item is counted in
/// `ltigate_outcome_targets_refused_total` with its reason; a launch
/// without the claim offers no grades and is not counted.
fn ags_target(
    gate: &Gate,
    platform: &Platform,
    link: &id_token::ResourceLinkLaunch,
) -> Option<OutcomeTarget> {
    let endpoint = link.ags.as_ref()?;
    let tenant = &platform.tenant;
    let refuse = |reason: &'static str, why: &str| {
        tracing::warn!(consumer = %tenant.name, platform = %platform.name, reason, detail = why, "no AGS outcome target for this launch; its grades cannot go back");
        gate.metrics
            .outcome_targets_refused
            .with_label_values(&[tenant.name.as_str(), reason])
            .inc();
        None
    };
    let Some(lineitem) = endpoint.lineitem.as_deref() else {
        return refuse(
            "no_lineitem",
            "the endpoint claim has no lineitem (only lineitems)",
        );
    };
    if endpoint.score_lineitem().is_none() {
        return refuse(
            "no_score_scope",
            "the endpoint claim's scope has no score scope",
        );
    }
    let settings = &gate.settings;
    let insecure = platform.allow_private_endpoints || settings.outcomes.allow_insecure_targets;
    if let Err(why) = check_target_url(lineitem, insecure, &tenant.outcome_hosts) {
        return refuse("unsafe_url", &why);
    }
    Some(OutcomeTarget::Ags {
        lineitem: lineitem.to_string(),
        user_id: link.user_id.clone(),
        platform: platform.name.clone(),
    })
}

/// The learner's LTI 1.1 `user_id` from the `lti1p1` claim, for a
/// registration linked to a consumer (DESIGN §13 "Migration").
fn migrated_user(
    settings: &Settings,
    token: &IdToken,
    platform: &Platform,
) -> Result<Option<String>, Failure> {
    if platform.consumer.is_none() {
        return Ok(None);
    }
    let Some(consumer) = settings.consumer_of(&platform.tenant.name) else {
        return Ok(None);
    };
    let secrets: Vec<&[u8]> = consumer.secrets.iter().map(|s| s.expose()).collect();
    let link = MigrationLink {
        consumer_key: &consumer.key,
        secrets: &secrets,
        trust_unsigned: platform.trust_unsigned_migration,
    };
    Ok(migration::check(token, &platform.client_id, Some(&link))?)
}

/// Records the state's single use, once its token verified. A state used
/// before is refused — unless it is a double submit from a browser that
/// already holds this learner's session for this course: then the landing
/// path to go on to.
async fn record_use(
    gate: &Gate,
    login: &LoginState,
    verified: &(VerifiedLaunch, Option<String>),
    existing: Option<&Session>,
    now: u64,
) -> Result<Option<String>, Failure> {
    let ttl = Duration::from_secs(login.exp.saturating_sub(now).max(1));
    match gate
        .store
        .record_nonce(STATE_USE_NAMESPACE, &login.id, ttl)
        .await
    {
        Ok(NonceCheck::Fresh) => {
            gate.metrics.store_ok();
            Ok(None)
        }
        Ok(NonceCheck::Replayed) => {
            gate.metrics.store_ok();
            let launch = &verified.0;
            if existing.is_some_and(|s| {
                s.same_learner(&launch.tenant.name, &launch.learner.user_id)
                    && s.course(&launch.course).is_some()
            }) {
                tracing::info!(consumer = %launch.tenant.name, "replayed LTI 1.3 launch of an open session; redirecting");
                return Ok(Some(gate.landing_path(&launch.course)));
            }
            Err(Failure::new(
                Lti13Rejection::BadState,
                "the state was used before",
            ))
        }
        Err(e) => {
            gate.metrics.store_failed("state");
            Err(Failure::new(
                Lti13Rejection::StoreUnavailable,
                e.to_string(),
            ))
        }
    }
}
