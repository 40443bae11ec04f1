//! Delivery by target kind: the [`Deliver`] trait each protocol implements,
//! and the [`Deliverers`] the outbox worker dispatches through.
//!
//! Adding a protocol (LTI 1.3 AGS scores) is: a variant of
//! [`OutcomeTarget`] with its [`TargetKind`], an implementation of
//! [`Deliver`], and one [`Deliverers::register`] call. The worker does the
//! rest — leases, retries, dead letters, metrics — the same for every kind,
//! and hands back the jobs of a kind it has no deliverer for, so replicas
//! of different releases can share one outbox.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::ags::AgsScores;
use super::basic::BasicOutcomes;
use super::{OutcomeTarget, TargetKind, Verdict};
use crate::config::{Settings, Tenant};
use crate::http::AppState;
use crate::lti::jose::SigningKey;
use crate::store::Job;

/// Delivers one grade to targets of one kind.
///
/// An implementation sends one attempt and classifies the answer; it does
/// not retry, sleep or touch the outbox. It is registered for the kinds it
/// handles and the worker gives it only targets of those kinds.
#[async_trait]
pub trait Deliver: Send + Sync {
    /// One attempt to send `job`'s score to `target`, a target of a
    /// learner of `tenant`; `settings` holds the protocol's own
    /// configuration (an LTI 1.1 consumer's secrets, say).
    /// `job.lease_until_ms` is when the lease runs out: an attempt that
    /// could outlive it answers [`Verdict::Retry`] instead of starting.
    async fn deliver(
        &self,
        settings: &Settings,
        tenant: &Tenant,
        target: &OutcomeTarget,
        job: &Job,
    ) -> Verdict;
}

/// The deliverers of one process, by target kind.
#[derive(Clone, Default)]
pub struct Deliverers {
    by_kind: HashMap<TargetKind, Arc<dyn Deliver>>,
}

impl Deliverers {
    /// No deliverer at all: every job would be handed back.
    pub fn new() -> Self {
        Self::default()
    }

    /// The deliverers this build offers: LTI 1.1 Basic Outcomes, and LTI
    /// 1.3 AGS scores signed with the tool's `key`.
    pub fn standard(app: &Arc<AppState>, key: Option<Arc<SigningKey>>) -> anyhow::Result<Self> {
        let mut d = Self::new();
        d.register(
            TargetKind::BasicOutcomes,
            Arc::new(BasicOutcomes::new(&app.settings.outcomes)?),
        );
        d.register(TargetKind::Ags, Arc::new(AgsScores::new(app.clone(), key)?));
        Ok(d)
    }

    /// Delivers targets of `kind` with `deliver` (replacing an earlier one).
    pub fn register(&mut self, kind: TargetKind, deliver: Arc<dyn Deliver>) -> &mut Self {
        self.by_kind.insert(kind, deliver);
        self
    }

    /// The deliverer for `kind`, if this process has one.
    pub fn get(&self, kind: TargetKind) -> Option<&Arc<dyn Deliver>> {
        self.by_kind.get(&kind)
    }
}

impl std::fmt::Debug for Deliverers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kinds: Vec<&str> = self.by_kind.keys().map(|k| k.name()).collect();
        kinds.sort_unstable();
        f.debug_struct("Deliverers").field("kinds", &kinds).finish()
    }
}
