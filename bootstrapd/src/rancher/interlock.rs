//! The restart-pending handshake between an installer and a running rancher-system-agent, as
//! rancher/system-agent `install.sh` does it (`ensure_directories`, `do_install`,
//! `ensure_applyinator_not_active`):
//!
//! 1. `/var/lib/rancher/agent/interlock/` exists, mode 0700;
//! 2. the installer creates `interlock/restart-pending`: the agent's applyinator then starts no
//!    new plan (it force-applies only after 5 minutes, `restartPendingTimeout` in
//!    `pkg/applyinator/applyinator.go`);
//! 3. while `interlock/applyinator-active` exists (a plan, e.g. the RKE2 install, is being
//!    applied), the installer polls every 5 s, 60 times at most (`APPLYINATOR_ACTIVE_WAIT_COUNT`):
//!    after about 5 minutes it ignores the file, assuming an unhealthy agent left it behind;
//! 4. it restarts the agent, then removes `restart-pending`.
//!
//! Two deliberate differences: the wait also ends when the registration deadline
//! (`rancher.deadline_seconds`) runs out, which is an error and restarts nothing; and
//! `restart-pending` is removed on every way out, not only after a restart, because a file
//! left behind by a failed run would hold every later plan of the agent for 5 minutes.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fsutil::{HostRoot, write_atomic};

pub const INTERLOCK_DIR: &str = "/var/lib/rancher/agent/interlock";
pub const RESTART_PENDING: &str = "/var/lib/rancher/agent/interlock/restart-pending";
pub const APPLYINATOR_ACTIVE: &str = "/var/lib/rancher/agent/interlock/applyinator-active";
/// install.sh's `sleep 5` between two checks.
pub const POLL: Duration = Duration::from_secs(5);
/// install.sh's `APPLYINATOR_ACTIVE_WAIT_COUNT=60` checks 5 s apart.
pub const MAX_WAIT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum InterlockError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: the registration deadline (rancher.deadline_seconds) ran out after {waited_s} s \
         waiting for the system agent's active plan to finish; the agent was not restarted"
    )]
    Cancelled { path: PathBuf, waited_s: u64 },
}

fn io_err(path: PathBuf) -> impl FnOnce(std::io::Error) -> InterlockError {
    move |source| InterlockError::Io { path, source }
}

/// Time as the wait sees it, injectable so tests run the 5 minutes in virtual time.
pub trait Clock {
    /// Time since the clock was created.
    fn elapsed(&self) -> Duration;
    fn sleep(&mut self, d: Duration) -> impl Future<Output = ()> + Send;
}

/// The real clock (tokio's timer).
#[derive(Debug)]
pub struct TokioClock {
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> Self {
        TokioClock {
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
    fn sleep(&mut self, d: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(d)
    }
}

/// How the wait for the agent's active plan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum WaitOutcome {
    /// No plan was being applied.
    Idle,
    /// A plan was being applied and finished after `waited_s` seconds.
    Finished { waited_s: u64 },
    /// The agent still showed an active plan after `MAX_WAIT`; install.sh then goes on.
    TimedOut { waited_s: u64 },
}

impl WaitOutcome {
    /// One line for the run's findings.
    pub fn describe(&self) -> String {
        match self {
            WaitOutcome::Idle => format!("{RESTART_PENDING} set; no plan was being applied"),
            WaitOutcome::Finished { waited_s } => format!(
                "{RESTART_PENDING} set; waited {waited_s} s for the agent's active plan to finish"
            ),
            WaitOutcome::TimedOut { waited_s } => format!(
                "{RESTART_PENDING} set; {APPLYINATOR_ACTIVE} still present after {waited_s} s, \
                 ignored as install.sh does (agent presumed unhealthy)"
            ),
        }
    }
}

/// `restart-pending`, held until the agent has been restarted. Dropping it removes the file
/// too (best effort), so an error on the way never leaves the agent's plans on hold.
#[derive(Debug)]
pub struct RestartPending {
    path: PathBuf,
    released: bool,
}

impl RestartPending {
    /// Removes `restart-pending` after the restart, as install.sh's last step.
    pub fn release(mut self) -> Result<(), InterlockError> {
        self.released = true;
        remove(&self.path)
    }
}

impl Drop for RestartPending {
    fn drop(&mut self) {
        if !self.released
            && let Err(e) = remove(&self.path)
        {
            tracing::warn!(error = %e, "could not remove the restart-pending interlock");
        }
    }
}

fn remove(path: &std::path::Path) -> Result<(), InterlockError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(InterlockError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Creates the interlock directory (0700) and `restart-pending`.
pub fn announce(root: &HostRoot) -> Result<RestartPending, InterlockError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.path(INTERLOCK_DIR);
    crate::fsutil::create_dir_all_durable(&dir).map_err(io_err(dir.clone()))?;
    // install.sh chmods the var dir and the interlock dir to 700 (ensure_directories).
    for d in [root.path(super::system_agent::VAR_DIR), dir.clone()] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(d.clone()))?;
    }
    let path = root.path(RESTART_PENDING);
    write_atomic(&path, b"", 0o600).map_err(io_err(path.clone()))?;
    tracing::info!(
        path = RESTART_PENDING,
        "restart pending: the system agent starts no new plan"
    );
    Ok(RestartPending {
        path,
        released: false,
    })
}

/// Waits while `applyinator-active` exists: at most `MAX_WAIT` (then goes on, as install.sh),
/// and never beyond `budget` (then fails: the registration deadline is spent).
pub async fn wait_idle(
    root: &HostRoot,
    clock: &mut impl Clock,
    budget: Duration,
) -> Result<WaitOutcome, InterlockError> {
    let active = root.path(APPLYINATOR_ACTIVE);
    let start = clock.elapsed();
    let mut polls = 0u32;
    loop {
        let waited = clock.elapsed().saturating_sub(start);
        // install.sh tests `-f`: only a regular file counts.
        if !active.is_file() {
            return Ok(if polls == 0 {
                WaitOutcome::Idle
            } else {
                tracing::info!(
                    waited_s = waited.as_secs(),
                    "the agent's active plan finished"
                );
                WaitOutcome::Finished {
                    waited_s: waited.as_secs(),
                }
            });
        }
        if waited >= MAX_WAIT {
            tracing::warn!(
                waited_s = waited.as_secs(),
                path = APPLYINATOR_ACTIVE,
                "still present; ignoring it as install.sh does"
            );
            return Ok(WaitOutcome::TimedOut {
                waited_s: waited.as_secs(),
            });
        }
        if waited >= budget {
            return Err(InterlockError::Cancelled {
                path: active,
                waited_s: waited.as_secs(),
            });
        }
        tracing::info!(
            waited_s = waited.as_secs(),
            path = APPLYINATOR_ACTIVE,
            "the system agent is applying a plan; waiting before restarting it"
        );
        polls += 1;
        clock
            .sleep(POLL.min(MAX_WAIT - waited).min(budget - waited))
            .await;
    }
}

/// `announce` then `wait_idle`: what install.sh does before it stops and replaces the agent.
pub async fn hold_for_restart(
    root: &HostRoot,
    clock: &mut impl Clock,
    budget: Duration,
) -> Result<(RestartPending, WaitOutcome), InterlockError> {
    let pending = announce(root)?;
    // On error `pending` is dropped here, which removes restart-pending again.
    let outcome = wait_idle(root, clock, budget).await?;
    Ok((pending, outcome))
}
