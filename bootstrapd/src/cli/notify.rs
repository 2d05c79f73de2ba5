//! sd_notify: `systemctl status bootstrapd` shows the current stage and step, and the unit
//! (Type=notify) becomes active only when the run is over.

use crate::state::Stage;

pub fn status(stage: Stage, step: &str) {
    let line = if step.is_empty() {
        format!(
            "stage {} of {}: {}",
            stage.number(),
            Stage::ALL.len(),
            stage.as_str()
        )
    } else {
        format!(
            "stage {} of {}: {}: {step}",
            stage.number(),
            Stage::ALL.len(),
            stage.as_str()
        )
    };
    // STATUS= is readable by every local user (`systemctl status`): no URL query in it.
    let line = crate::http::redact_urls(&line);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&line)]);
}

pub fn ready(summary: &str) {
    let summary = crate::http::redact_urls(summary);
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Status(&summary),
        sd_notify::NotifyState::Ready,
    ]);
}
