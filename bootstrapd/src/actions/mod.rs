//! The only code that changes the host: each step of a plan applied, re-checked, and
//! reported as a `Finding`. One loop ([`apply`]) carries out the steps of every stage.

use std::time::Duration;

use crate::fsutil::HostRoot;
use crate::plan::host::HostStep;
use crate::plan::runtime::RuntimeStep;
use crate::plan::{Finding, Outcome};
use crate::state::RegistrationRecord;
use crate::system::systemd::Systemd;
use crate::userdata::{ProxySettings, TrustedCa};

pub mod host;
mod identity;
pub mod network;
pub mod register;
pub mod registration;
pub mod runtime;
mod sysext;
pub mod trust;

pub use registration::RegisterStep;

/// Why a step failed, and what the operator can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct StepFailure {
    pub detail: String,
    pub remedy: String,
}

impl StepFailure {
    pub fn new(detail: String, remedy: String) -> StepFailure {
        StepFailure { detail, remedy }
    }

    /// The failed step's finding.
    pub fn finding(self, step: &str) -> Finding {
        Finding::new(step, Outcome::Failed, self.detail).with_remedy(self.remedy)
    }
}

/// The package helpers (`system::packages`) answer a failure as a (detail, remedy) pair.
impl From<(String, String)> for StepFailure {
    fn from((detail, remedy): (String, String)) -> StepFailure {
        StepFailure { detail, remedy }
    }
}

/// A step's own result: what it found or did, or its failure.
pub type StepResult<T = String> = Result<T, StepFailure>;

/// What the steps act on.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub root: &'a HostRoot,
    /// None when systemd is not reachable over D-Bus: unit steps then fail with a remedy.
    pub systemd: Option<&'a Systemd>,
    /// Progress inside a long step (registration's retry causes), for `status` and sd_notify.
    pub progress: &'a (dyn Fn(&str) + Send + Sync),
    /// The userdata's `proxy`: what the steps' own downloads and package managers go through.
    pub proxy: &'a ProxySettings,
    /// The userdata's `trusted_ca`: trusted by the steps' own downloads beside the system
    /// roots (the apt key of a repository behind a private CA).
    pub trusted_ca: &'a [TrustedCa],
}

/// No proxy: what a target without the userdata's has.
static NO_PROXY: ProxySettings = ProxySettings {
    http: None,
    https: None,
    no_proxy: Vec::new(),
};

impl<'a> Target<'a> {
    /// A target without progress reporting or proxy (tests, image builds).
    pub fn quiet(root: &'a HostRoot, systemd: Option<&'a Systemd>) -> Target<'a> {
        Target {
            root,
            systemd,
            progress: &|_| {},
            proxy: &NO_PROXY,
            trusted_ca: &[],
        }
    }

    /// The same target going through the userdata's `proxy`.
    pub fn with_proxy(self, proxy: &'a ProxySettings) -> Target<'a> {
        Target { proxy, ..self }
    }
}

/// What applying steps produced: their findings, and the record of a registration.
#[derive(Debug, Default)]
pub struct Applied {
    pub findings: Vec<Finding>,
    pub registration: Option<RegistrationRecord>,
}

impl Applied {
    fn failed(&self) -> bool {
        self.findings.iter().any(|f| f.outcome == Outcome::Failed)
    }
}

impl From<Finding> for Applied {
    fn from(f: Finding) -> Applied {
        Applied {
            findings: vec![f],
            registration: None,
        }
    }
}

/// A planned step: what it would do, and doing it.
// Steps are awaited in place by `apply`, never spawned, so their futures need no Send bound.
#[allow(async_fn_in_trait)]
pub trait Step {
    /// The step's stable name, shown as the run's progress.
    fn name(&self) -> &str;
    /// What the step would do, changing nothing (`bootstrapd plan`).
    fn preview(&self) -> Vec<Finding>;
    /// Does it; the findings say what changed.
    async fn apply(&self, target: Target<'_>) -> Applied;
    /// How long the step may take when that can exceed the service's start timeout.
    fn budget(&self) -> Option<Duration> {
        None
    }
}

impl Step for HostStep {
    fn name(&self) -> &str {
        self.step
    }
    fn preview(&self) -> Vec<Finding> {
        vec![HostStep::preview(self)]
    }
    async fn apply(&self, target: Target<'_>) -> Applied {
        host::apply_one(target, self).await.into()
    }
}

impl Step for RuntimeStep {
    fn name(&self) -> &str {
        self.step
    }
    fn preview(&self) -> Vec<Finding> {
        vec![RuntimeStep::preview(self)]
    }
    async fn apply(&self, target: Target<'_>) -> Applied {
        runtime::apply_one(target, self).await.into()
    }
}

/// A step of any stage, so that one table of stages can hold them all.
pub enum Planned<'a> {
    Host(HostStep),
    Runtime(RuntimeStep),
    Register(Box<RegisterStep<'a>>),
}

impl Step for Planned<'_> {
    fn name(&self) -> &str {
        match self {
            Planned::Host(s) => Step::name(s),
            Planned::Runtime(s) => Step::name(s),
            Planned::Register(s) => s.name(),
        }
    }
    fn preview(&self) -> Vec<Finding> {
        match self {
            Planned::Host(s) => Step::preview(s),
            Planned::Runtime(s) => Step::preview(s),
            Planned::Register(s) => s.preview(),
        }
    }
    async fn apply(&self, target: Target<'_>) -> Applied {
        match self {
            Planned::Host(s) => Step::apply(s, target).await,
            Planned::Runtime(s) => Step::apply(s, target).await,
            Planned::Register(s) => s.apply(target).await,
        }
    }
    fn budget(&self) -> Option<Duration> {
        match self {
            Planned::Register(s) => s.budget(),
            _ => None,
        }
    }
}

/// Applies the steps in order, `before` ahead of each (the run's progress; its error ends
/// the loop), and stops at the first failure: later steps build on earlier ones (no start
/// without packages, no registration without a runtime), so they would only fail again.
pub async fn apply<S: Step, E>(
    target: Target<'_>,
    steps: &[S],
    mut before: impl FnMut(&S) -> Result<(), E>,
) -> Result<Applied, E> {
    let mut out = Applied::default();
    for step in steps {
        before(step)?;
        let applied = step.apply(target).await;
        for f in &applied.findings {
            log(f);
        }
        let failed = applied.failed();
        out.findings.extend(applied.findings);
        out.registration = applied.registration.or(out.registration);
        if failed {
            break;
        }
    }
    Ok(out)
}

/// [`apply`] without progress: the findings.
pub async fn apply_all<S: Step>(target: Target<'_>, steps: &[S]) -> Vec<Finding> {
    let applied = apply(target, steps, |_| Ok::<(), std::convert::Infallible>(())).await;
    match applied {
        Ok(a) => a.findings,
        Err(never) => match never {},
    }
}

fn log(f: &Finding) {
    match f.outcome {
        Outcome::Failed => tracing::error!(step = %f.step, detail = %f.detail, "step failed"),
        Outcome::Changed => tracing::info!(step = %f.step, detail = %f.detail, "host changed"),
        _ => tracing::debug!(step = %f.step, outcome = f.outcome.as_str(), detail = %f.detail),
    }
}

/// An error with its causes, "reading X: permission denied", URLs redacted: how errors are
/// shown to the operator (stderr, the journal's findings).
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_text = s.to_string();
        if !msg.contains(&s_text) {
            msg.push_str(": ");
            msg.push_str(&s_text);
        }
        src = s.source();
    }
    crate::http::redact_urls(&msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A step that answers a fixed outcome and records that it ran.
    struct Fake<'a> {
        name: &'static str,
        outcome: Outcome,
        ran: &'a RefCell<Vec<String>>,
    }

    impl Step for Fake<'_> {
        fn name(&self) -> &str {
            self.name
        }
        fn preview(&self) -> Vec<Finding> {
            vec![Finding::new(self.name, Outcome::WouldChange, "would")]
        }
        async fn apply(&self, _target: Target<'_>) -> Applied {
            self.ran.borrow_mut().push(format!("apply {}", self.name));
            Finding::new(self.name, self.outcome, "did").into()
        }
    }

    fn steps(ran: &RefCell<Vec<String>>) -> Vec<Fake<'_>> {
        [
            ("a", Outcome::Changed),
            ("b", Outcome::Failed),
            ("c", Outcome::Changed),
        ]
        .into_iter()
        .map(|(name, outcome)| Fake { name, outcome, ran })
        .collect()
    }

    #[tokio::test]
    async fn the_loop_reports_progress_first_and_stops_at_the_first_failure() {
        let root = HostRoot::new(Some("/nonexistent".into()));
        let ran = RefCell::new(Vec::new());
        let steps = steps(&ran);
        let applied = apply(Target::quiet(&root, None), &steps, |s: &Fake| {
            ran.borrow_mut().push(format!("progress {}", s.name));
            Ok::<(), ()>(())
        })
        .await
        .unwrap();
        assert_eq!(
            *ran.borrow(),
            ["progress a", "apply a", "progress b", "apply b"]
        );
        let outcomes: Vec<Outcome> = applied.findings.iter().map(|f| f.outcome).collect();
        assert_eq!(outcomes, [Outcome::Changed, Outcome::Failed]);
    }

    #[tokio::test]
    async fn a_progress_error_ends_the_loop_before_its_step() {
        let root = HostRoot::new(Some("/nonexistent".into()));
        let ran = RefCell::new(Vec::new());
        let steps = steps(&ran);
        let err = apply(Target::quiet(&root, None), &steps, |s: &Fake| {
            if s.name == "b" {
                Err("journal full")
            } else {
                Ok(())
            }
        })
        .await
        .unwrap_err();
        assert_eq!(err, "journal full");
        assert_eq!(*ran.borrow(), ["apply a"]);
    }

    #[test]
    fn a_step_failure_is_a_failed_finding_with_its_remedy() {
        let f = StepFailure::new("no swapoff".into(), "free memory".into()).finding("swap");
        assert_eq!(f.step, "swap");
        assert_eq!(f.outcome, Outcome::Failed);
        assert_eq!(f.detail, "no swapoff");
        assert_eq!(f.remedy.as_deref(), Some("free memory"));
    }

    #[test]
    fn described_errors_carry_their_causes_with_urls_redacted() {
        #[derive(Debug, thiserror::Error)]
        #[error("fetching userdata")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other(
            "GET https://s3/u?X-Amz-Signature=abc: refused",
        ));
        let text = describe(&e);
        assert!(
            text.starts_with("fetching userdata: GET https://s3/u"),
            "{text}"
        );
        assert!(!text.contains("X-Amz-Signature"), "{text}");
    }
}
