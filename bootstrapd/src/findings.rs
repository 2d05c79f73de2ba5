//! What a step found or did: the one-line report that plans preview, actions return and the
//! journal keeps for `bootstrapd status`.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_form_of_a_finding() {
        let f = Finding::new("swap", Outcome::WouldChange, "swap is on");
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"step":"swap","outcome":"would-change","detail":"swap is on"}"#
        );
        let f = f.with_remedy("set host.swap: off");
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["remedy"], "set host.swap: off");
        assert_eq!(serde_json::from_value::<Finding>(v).unwrap(), f);
        for o in [
            Outcome::Ok,
            Outcome::Changed,
            Outcome::WouldChange,
            Outcome::Warning,
            Outcome::Failed,
            Outcome::Skipped,
        ] {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
    }
}
