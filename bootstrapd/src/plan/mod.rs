//! Settings + facts -> ordered steps. Pure: nothing here touches the host.

pub mod host;
pub mod runtime;

use serde::{Deserialize, Serialize};

/// What a step found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Already as required; nothing to do.
    Ok,
    /// bootstrapd changed the host to make it so.
    Changed,
    /// `plan` only: `run` would change this.
    WouldChange,
    /// Not as required and not fixable under the userdata's policy: a warning, the run goes on.
    Warning,
    /// Not as required and the run cannot go on.
    Failed,
    /// Not applicable on this host or under these settings.
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Changed => "changed",
            Outcome::WouldChange => "would-change",
            Outcome::Warning => "warning",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

/// One line of the report for a step: what was found, what was done, and for failures the
/// one-line remedy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub step: String,
    pub outcome: Outcome,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

/// The finding `plan` prints for a step, without touching anything: a step that only
/// reports keeps its outcome and remedy; any other step would change the host.
pub fn preview(step: &str, detail: &str, report: Option<(Outcome, Option<&String>)>) -> Finding {
    match report {
        Some((outcome, remedy)) => {
            let f = Finding::new(step, outcome, detail);
            match remedy {
                Some(r) => f.with_remedy(r.clone()),
                None => f,
            }
        }
        None => Finding::new(step, Outcome::WouldChange, detail),
    }
}

impl Finding {
    pub fn new(step: impl Into<String>, outcome: Outcome, detail: impl Into<String>) -> Self {
        Finding {
            step: step.into(),
            outcome,
            detail: detail.into(),
            remedy: None,
        }
    }

    pub fn with_remedy(mut self, remedy: impl Into<String>) -> Self {
        self.remedy = Some(remedy.into());
        self
    }
}
