//! Settings + facts -> ordered steps. Pure: nothing here touches the host.

pub mod host;
pub mod host_action;
pub mod identity;
pub mod prepare;
pub mod proxy;
pub mod registries;
pub mod runtime;
pub mod runtime_action;
pub mod sysext;
pub mod trusted_ca;

use serde::Serialize;

// Findings are the vocabulary of the journal as much as of plans; they live on their own so
// the journal need not depend on the planner. Re-exported for the callers that name them here.
pub use crate::findings::{Finding, Outcome};

/// What a plan's steps do: either only report a finding, or change the host.
pub trait StepAction {
    /// The action that changes nothing and reports `outcome`.
    fn report(outcome: Outcome, remedy: Option<String>) -> Self;
    /// `Some` for a report-only action.
    fn as_report(&self) -> Option<(Outcome, Option<&String>)>;
}

/// One step of a plan (host preparation, runtime), with the requirement behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step<A> {
    /// Short stable name: firewalld, selinux, runtime.install, ...
    pub step: &'static str,
    /// Why the node needs this (the requirement behind the step).
    pub reason: &'static str,
    /// What was found, and for a change what would be done.
    pub detail: String,
    pub action: A,
}

impl<A: StepAction> Step<A> {
    pub(crate) fn report(
        step: &'static str,
        reason: &'static str,
        outcome: Outcome,
        detail: impl Into<String>,
    ) -> Self {
        Self::change(step, reason, detail, A::report(outcome, None))
    }

    pub(crate) fn failed(
        step: &'static str,
        reason: &'static str,
        detail: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Self {
        Self::with_remedy(step, reason, Outcome::Failed, detail, remedy)
    }

    pub(crate) fn with_remedy(
        step: &'static str,
        reason: &'static str,
        outcome: Outcome,
        detail: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Self {
        Self::change(
            step,
            reason,
            detail,
            A::report(outcome, Some(remedy.into())),
        )
    }

    pub(crate) fn change(
        step: &'static str,
        reason: &'static str,
        detail: impl Into<String>,
        action: A,
    ) -> Self {
        Step {
            step,
            reason,
            detail: detail.into(),
            action,
        }
    }

    /// True when applying would change the host.
    pub fn changes(&self) -> bool {
        self.action.as_report().is_none()
    }

    /// The finding `plan` prints, without touching anything: a report-only step keeps its
    /// outcome and remedy; any other step would change the host.
    pub fn preview(&self) -> Finding {
        match self.action.as_report() {
            Some((outcome, remedy)) => {
                let f = Finding::new(self.step, outcome, self.detail.clone());
                match remedy {
                    Some(r) => f.with_remedy(r.clone()),
                    None => f,
                }
            }
            None => Finding::new(self.step, Outcome::WouldChange, self.detail.clone()),
        }
    }
}
