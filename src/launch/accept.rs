//! The one accept path (DESIGN §12): what every verified launch gets,
//! whatever its protocol — a licence claimed atomically with the tenant's
//! cap, the learner provisioned and subscribed, the outcome target stored,
//! the session sealed and a single-use ticket for `/lti/continue`. It takes
//! only the protocol-neutral [`VerifiedLaunch`].

use http::header;
use http::Response;

use super::{Failure, Ticket, VerifiedLaunch, TICKET_TTL};
use crate::config::Tenant;
use crate::http::access_log::LogIdentity;
use crate::http::{respond, with_header, Body};
use crate::lti::launch::Rejection;
use crate::lti::roles;
use crate::outcomes::OutcomeTarget;
use crate::provision::{ProvisionError, ProvisionRequest};
use crate::session::{Gate, Session};
use crate::store::{Enrolment, LicenceClaim};

/// Licence, provisioning, outcome target, session and ticket for a
/// verified launch; the answer is the redirect to `/lti/continue` with the
/// session cookie. `existing` is the session the browser already holds.
pub async fn accept(
    state: &Gate,
    launch: &VerifiedLaunch,
    existing: Option<Session>,
    now: u64,
) -> Result<Response<Body>, Failure> {
    let tenant = &*launch.tenant;
    let external_id = format!(
        "{}{}{}",
        tenant.lms_id, state.settings.launch.id_separator, launch.learner.user_id
    );
    let staff = roles::is_staff(&launch.roles);

    let claimed = claim_licence(state, launch, &external_id, staff).await?;
    let upstream_id = match provision(state, launch, &external_id, staff).await {
        Ok(id) => id,
        Err(f) => {
            if claimed {
                release(state, tenant, &launch.course, &external_id).await;
            }
            return Err(f);
        }
    };
    store_target(state, launch, &external_id).await?;

    let session = session_for(state, launch, existing, &external_id, upstream_id, now);
    let cookie = state
        .sealer
        .seal(&session)
        .map_err(|e| Failure::new(Rejection::UpstreamError, e.to_string()))?;
    let ticket = issue_ticket(state, launch, &cookie, &external_id, now).await?;

    tracing::info!(
        consumer = %tenant.name,
        learner = %external_id,
        course = %launch.course,
        version = launch.version.as_str(),
        staff,
        "launch accepted"
    );
    let location = format!("{}?ticket={ticket}", state.public_path("/lti/continue"));
    let mut resp = with_header(
        respond::see_other(&location),
        header::SET_COOKIE,
        &state.session_cookie(&cookie),
    );
    resp.extensions_mut().insert(LogIdentity {
        tenant: tenant.name.clone(),
        external_id,
    });
    Ok(resp)
}

/// The learner's licence in the course, claimed before the subscription
/// call, atomically with the tenant's cap. Staff count only with
/// `licences.count_staff`. True when this launch took a new licence.
async fn claim_licence(
    state: &Gate,
    launch: &VerifiedLaunch,
    external_id: &str,
    staff: bool,
) -> Result<bool, Failure> {
    if staff && !state.settings.count_staff {
        return Ok(false);
    }
    let tenant = &*launch.tenant;
    let claim = state
        .store
        .claim_licence(
            &tenant.name,
            &launch.course,
            external_id,
            tenant.max_licences,
        )
        .await;
    match claim {
        Ok(LicenceClaim::Existing) => {
            state.metrics.store_ok();
            Ok(false)
        }
        Ok(LicenceClaim::New { used }) => {
            state.metrics.store_ok();
            set_licences_used(state, tenant, used);
            Ok(true)
        }
        Ok(LicenceClaim::Exhausted) => {
            state.metrics.store_ok();
            Err(Failure::new(
                Rejection::LicenceExhausted,
                format!("cap of {} reached", tenant.max_licences.unwrap_or(0)),
            ))
        }
        Err(e) => Err(Failure::store(state, "licence", e)),
    }
}

/// The learner provisioned upstream and subscribed to the course: the
/// upstream's own user id, when it tells one.
async fn provision(
    state: &Gate,
    launch: &VerifiedLaunch,
    external_id: &str,
    staff: bool,
) -> Result<Option<String>, Failure> {
    let learner = &launch.learner;
    let provisioned = state
        .provisioner
        .provision(&ProvisionRequest {
            external_id,
            given_name: learner.given_name.as_deref(),
            family_name: learner.family_name.as_deref(),
            email: learner.email.as_deref(),
            environment: launch.tenant.environment.as_deref(),
            course: &launch.course,
            staff,
        })
        .await;
    provisioned.map_err(|e| match e {
        ProvisionError::UnknownCourse => {
            Failure::new(Rejection::UnknownCourse, "subscription answered 404")
        }
        ProvisionError::Upstream(why) => Failure::new(Rejection::UpstreamError, why),
    })
}

/// The enrolment with the launch's outcome target (or none: the latest
/// launch decides). A grade that was waiting for a target is now due.
async fn store_target(
    state: &Gate,
    launch: &VerifiedLaunch,
    external_id: &str,
) -> Result<(), Failure> {
    let enrolment = Enrolment::new(&launch.tenant.name, &launch.course, external_id);
    let target = launch.outcome_target.as_ref().map(OutcomeTarget::to_bytes);
    match state
        .store
        .put_enrolment(&enrolment, target.as_deref())
        .await
    {
        Ok(activated) => {
            if activated {
                tracing::info!(learner = %external_id, course = %launch.course, "a waiting grade now has an outcome target");
                state.outbox_notify.notify_one();
            }
            Ok(())
        }
        Err(e) => Err(Failure::store(state, "target", e)),
    }
}

/// The session after this launch: the same learner's courses merge (this
/// course last, with its roles), another learner's session is replaced;
/// the lifetime starts again and the protocol is this launch's.
fn session_for(
    state: &Gate,
    launch: &VerifiedLaunch,
    existing: Option<Session>,
    external_id: &str,
    upstream_id: Option<String>,
    now: u64,
) -> Session {
    let tenant = &*launch.tenant;
    let learner = &launch.learner;
    let mut session = match existing {
        Some(s) if s.same_learner(&tenant.name, &learner.user_id) => s,
        _ => Session {
            tenant: tenant.name.clone(),
            lms_id: tenant.lms_id.clone(),
            user_id: learner.user_id.clone(),
            external_id: external_id.to_string(),
            upstream_id: None,
            given_name: None,
            family_name: None,
            email: None,
            courses: Vec::new(),
            issued_at: now,
            last_seen: now,
            lti_version: launch.version,
        },
    };
    session.lti_version = launch.version;
    session.external_id = external_id.to_string();
    session.lms_id = tenant.lms_id.clone();
    if upstream_id.is_some() {
        session.upstream_id = upstream_id;
    }
    if learner.given_name.is_some() || learner.family_name.is_some() {
        session.given_name = learner.given_name.clone();
        session.family_name = learner.family_name.clone();
    }
    if learner.email.is_some() {
        session.email = learner.email.clone();
    }
    session.issued_at = now;
    session.last_seen = now;
    session.add_course(
        &launch.course,
        &launch.roles,
        state.settings.session.max_courses,
    );
    session
}

/// A single-use ticket for `/lti/continue`, holding the sealed cookie and
/// the landing path for [`TICKET_TTL`].
async fn issue_ticket(
    state: &Gate,
    launch: &VerifiedLaunch,
    cookie: &str,
    external_id: &str,
    now: u64,
) -> Result<String, Failure> {
    let ticket = crate::secret::random_token();
    let value = serde_json::to_vec(&Ticket {
        cookie: cookie.to_string(),
        landing: state.landing_path(&launch.course),
        external_id: external_id.to_string(),
        course: launch.course.clone(),
        expires: now + TICKET_TTL.as_secs(),
    })
    .map_err(|e| Failure::new(Rejection::UpstreamError, e.to_string()))?;
    match state.store.put_ticket(&ticket, &value, TICKET_TTL).await {
        Ok(()) => Ok(ticket),
        Err(e) => Err(Failure::store(state, "ticket", e)),
    }
}

/// Gives back the licence a launch claimed before it failed.
async fn release(state: &Gate, tenant: &Tenant, course: &str, learner: &str) {
    match state
        .store
        .release_licence(&tenant.name, course, learner)
        .await
    {
        Ok(()) => {
            if let Ok(used) = state.store.licences_used(&tenant.name).await {
                set_licences_used(state, tenant, used);
            }
        }
        Err(e) => {
            state.metrics.store_failed("licence");
            tracing::warn!(error = %e, "cannot release the licence of a failed launch");
        }
    }
}

fn set_licences_used(state: &Gate, tenant: &Tenant, used: u64) {
    state
        .metrics
        .licences_used
        .with_label_values(&[tenant.name.as_str()])
        .set(used as i64);
}
