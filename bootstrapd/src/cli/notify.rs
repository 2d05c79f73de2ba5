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

/// The run's outcome: systemd's status and READY=1, and one line on stdout. The unit sends
/// stdout to the console as well (StandardOutput=journal+console; logs go to journald
/// directly), so an operator at a serial console, or a test reading one, sees how the boot's
/// run ended, as cloud-init's final message. systemd's own "Started bootstrapd.service" line
/// cannot tell: systemd stops printing status lines while a getty holds the console.
pub fn ready(summary: &str) {
    let summary = crate::http::redact_urls(summary);
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Status(&summary),
        sd_notify::NotifyState::Ready,
    ]);
    println!("{}", outcome_line(&summary));
}

/// One line, whatever the summary holds (userdata problems span several).
fn outcome_line(summary: &str) -> String {
    let one: Vec<&str> = summary
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    format!("{OUTCOME_PREFIX}{}", one.join("; "))
}

/// What starts the outcome line on stdout and the console.
pub const OUTCOME_PREFIX: &str = "bootstrapd run ended: ";

/// Asks systemd for `budget` more start-up time from now. The unit's TimeoutStartSec (45 min)
/// covers the install stages; registration waits up to `rancher.deadline_seconds`, which may
/// be far longer (a week at most), and a timeout would kill the run mid-registration.
pub fn extend_timeout(budget: std::time::Duration) {
    let line = extend_timeout_line(budget);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Custom(&line)]);
}

/// sd-notify's own `ExtendTimeoutUsec` takes a u32: 71 minutes at most, a deadline of a day
/// would wrap. The protocol takes any u64.
fn extend_timeout_line(budget: std::time::Duration) -> String {
    let usec = u64::try_from(budget.as_micros()).unwrap_or(u64::MAX);
    format!("EXTEND_TIMEOUT_USEC={usec}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_is_one_line() {
        assert_eq!(
            outcome_line("failed: userdata from nocloud has problems:\n  - a\n\n  - b\n"),
            "bootstrapd run ended: failed: userdata from nocloud has problems:; - a; - b"
        );
        assert_eq!(
            outcome_line("done: node prepared and registered"),
            "bootstrapd run ended: done: node prepared and registered"
        );
    }

    #[test]
    fn extend_timeout_carries_a_week_without_wrapping() {
        let week = std::time::Duration::from_secs(7 * 24 * 3600 + 600);
        assert_eq!(
            extend_timeout_line(week),
            "EXTEND_TIMEOUT_USEC=605400000000"
        );
        assert_eq!(
            extend_timeout_line(std::time::Duration::from_secs(900)),
            "EXTEND_TIMEOUT_USEC=900000000"
        );
    }
}
