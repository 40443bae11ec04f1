//! Launches: verification by protocol, then one accept path (DESIGN §3,
//! §12).
//!
//! - [`v1p1`] — `POST /lti/launch[/{course}]`: an LTI 1.1 launch, its OAuth
//!   signature, timestamp and nonce; it ends in a [`VerifiedLaunch`].
//! - [`accept`] — what every verified launch gets, whatever its protocol:
//!   licence, provisioning, outcome target, session, single-use ticket.
//! - [`ticket`] — `/lti/continue` redeems the ticket (with the new-window
//!   fallback for browsers that drop third-party cookies); `/lti/logout`.
//! - [`cartridge`] — the LTI 1.1 cartridge and the values an LMS admin
//!   pastes.
//! - [`tool_key`] — the tool's LTI 1.3 keys and `/lti/1.3/jwks.json`.
//! - [`jwks`] — the platforms' key sets, cached.
//! - [`routes`] — the layer that serves these routes in the public stack.
//! - [`error`] — the one error type of these routes.

pub mod accept;
pub mod cartridge;
pub mod error;
pub mod jwks;
pub mod routes;
pub mod ticket;
pub mod tool_key;
pub mod v1p1;
pub mod v1p3;

use std::sync::Arc;
use std::time::Instant;

use http::Response;

use crate::config::Tenant;
use crate::http::access_log::LogReason;
use crate::http::{respond, Body};
use crate::lti::encode::percent_encode;
use crate::lti::id_token::Lti13Rejection;
use crate::lti::launch::Rejection;
use crate::lti::LtiVersion;
use crate::outcomes::OutcomeTarget;
use crate::session::Gate;
use error::RouteError;

pub use ticket::{Ticket, TICKET_TTL};
pub use v1p1::MAX_LAUNCH_BODY;

/// The learner a launch speaks for, as the LMS names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learner {
    /// The LMS's user id (unique within the tenant).
    pub user_id: String,
    /// Given name.
    pub given_name: Option<String>,
    /// Family name.
    pub family_name: Option<String>,
    /// Email.
    pub email: Option<String>,
}

/// A launch whose protocol checks all passed, in protocol-neutral terms
/// (DESIGN §12): all that licences, provisioning, the session, the ticket,
/// the identity headers and the outcome target's storage take. LTI 1.1
/// builds it from a verified OAuth launch ([`v1p1`]); LTI 1.3 from a
/// verified id_token.
#[derive(Debug, Clone)]
pub struct VerifiedLaunch {
    /// The tenant the learner belongs to.
    pub tenant: Arc<Tenant>,
    /// The protocol it came by.
    pub version: LtiVersion,
    /// Who.
    pub learner: Learner,
    /// Course external ID.
    pub course: String,
    /// Normalised roles in the course.
    pub roles: Vec<String>,
    /// Where grades go back, when the launch allows it.
    pub outcome_target: Option<OutcomeTarget>,
}

/// Why a launch was refused: a reason of LTI 1.1 (DESIGN §3) or of LTI 1.3
/// (§13), each with its status, metric label and message. The accept
/// path's reasons (licences, course, upstream) are the 1.1 enum's, and
/// carry the same labels under both protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// An LTI 1.1 reason (or one of the accept path).
    V1p1(Rejection),
    /// An LTI 1.3 reason.
    V1p3(Lti13Rejection),
}

impl Reason {
    /// HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Reason::V1p1(r) => r.status(),
            Reason::V1p3(r) => r.status(),
        }
    }

    /// Metric label (`result` of `ltigate_launches_total`).
    pub fn label(self) -> &'static str {
        match self {
            Reason::V1p1(r) => r.label(),
            Reason::V1p3(r) => r.label(),
        }
    }

    /// What the learner is shown.
    pub fn message(self) -> &'static str {
        match self {
            Reason::V1p1(r) => r.message(),
            Reason::V1p3(r) => r.message(),
        }
    }

    /// A malformed request, whose detail is shown with the message.
    pub fn is_invalid_request(self) -> bool {
        matches!(
            self,
            Reason::V1p1(Rejection::InvalidRequest) | Reason::V1p3(Lti13Rejection::InvalidRequest)
        )
    }
}

impl From<Rejection> for Reason {
    fn from(r: Rejection) -> Self {
        Reason::V1p1(r)
    }
}

impl From<Lti13Rejection> for Reason {
    fn from(r: Lti13Rejection) -> Self {
        Reason::V1p3(r)
    }
}

/// A refused launch, as the protocol checks or the accept path found it.
#[derive(Debug)]
pub struct Failure {
    /// Why: the metric label and the log line.
    pub reason: Reason,
    /// What the client is told (status, error code, message): the reason,
    /// except for an unknown key, which is answered as a known key with a
    /// wrong secret would be.
    pub shown: Reason,
    /// Log detail; never contains secrets or signatures.
    pub detail: String,
    /// The LMS's return URL, set only once the launch is authenticated: the
    /// refusal then goes back to the LMS with `lti_errormsg`.
    pub return_url: Option<String>,
}

impl Failure {
    /// A refusal for `reason`, shown as it is.
    pub fn new(reason: impl Into<Reason>, detail: impl Into<String>) -> Self {
        let reason = reason.into();
        Failure {
            reason,
            shown: reason,
            detail: detail.into(),
            return_url: None,
        }
    }

    /// A store failure during `op`, counted.
    pub(crate) fn store(state: &Gate, op: &'static str, e: crate::store::StoreError) -> Self {
        state.metrics.store_failed(op);
        Failure::new(Rejection::StoreUnavailable, e.to_string())
    }
}

/// The end of every launch, whichever protocol: the duration and the
/// outcome counted under the tenant's label (`unknown` before one is
/// known), a refusal logged and answered — back to the LMS when its return
/// URL may be used, else an error page ([`RouteError::Launch`]).
pub(crate) fn finish(
    state: &Gate,
    started: Instant,
    version: LtiVersion,
    tenant_label: &str,
    result: Result<Response<Body>, Failure>,
    json: bool,
) -> Response<Body> {
    let m = &state.metrics;
    m.launch_duration.observe(started.elapsed().as_secs_f64());
    let f = match result {
        Ok(resp) => {
            m.launches
                .with_label_values(&[tenant_label, version.as_str(), "accepted"])
                .inc();
            return resp;
        }
        Err(f) => f,
    };
    m.launches
        .with_label_values(&[tenant_label, version.as_str(), f.reason.label()])
        .inc();
    tracing::info!(
        consumer = %tenant_label,
        version = version.as_str(),
        reason = f.reason.label(),
        detail = %f.detail,
        "launch refused"
    );
    let mut resp = match &f.return_url {
        Some(url) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            respond::see_other(&format!(
                "{url}{sep}lti_errormsg={}&lti_errorlog={}",
                percent_encode(f.shown.message().as_bytes()),
                f.shown.label()
            ))
        }
        None => respond::reject(
            &RouteError::Launch {
                shown: f.shown,
                detail: f.detail,
            },
            json,
        ),
    };
    // The true reason, as the metric has it (the page may say less).
    resp.extensions_mut().insert(LogReason(f.reason.label()));
    resp
}
