//! The actions of the runtime stage's steps, apart from the planners that make them
//! (plan/runtime.rs and, for the proxy drop-ins and the registry files, plan/proxy.rs and
//! plan/registries.rs): each planner depends on these, none on another planner.

use serde::Serialize;

use super::Outcome;
use crate::facts::sysext::SysextImage;
use crate::secret::Secret;
use crate::system::packages::PackageManager;
use crate::system::sysext::HostRelease;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RuntimeAction {
    /// Nothing to change: the finding stands as planned.
    Report {
        outcome: Outcome,
        remedy: Option<String>,
    },
    WriteFile {
        path: String,
        content: String,
        mode: u32,
    },
    /// A systemd drop-in of `unit` holding the proxy (a Secret: it may carry credentials,
    /// so it is written 0600 and never shown), or bootstrapd's drop-in removed when `content`
    /// is `None` (the userdata no longer sets a proxy); then a daemon-reload and, when
    /// `restart`, a restart of the running unit so that it reads the change.
    ProxyDropIn {
        unit: String,
        path: String,
        content: Option<Secret>,
        restart: bool,
    },
    /// A file that holds secrets (registries.yaml): its content serialises and prints as
    /// `<redacted>`, and it is written with `mode` from the start.
    WriteSecretFile {
        path: String,
        content: Secret,
        mode: u32,
    },
    /// A file bootstrapd wrote that the userdata no longer asks for.
    RemoveFile {
        path: String,
    },
    /// The apt repository's signing key from a URL or a local path, stored dearmored.
    InstallAptKey {
        source: String,
        dest: String,
    },
    Refresh {
        manager: PackageManager,
    },
    /// Install `packages`; those in `constrained` get the highest candidate version that
    /// satisfies `constraint`.
    Install {
        manager: PackageManager,
        packages: Vec<String>,
        constrained: Vec<String>,
        constraint: Option<String>,
        /// Refresh the package index first (apt; the others refresh on their own).
        refresh: bool,
    },
    /// Install package files of the offline bundle.
    InstallFiles {
        manager: PackageManager,
        files: Vec<String>,
    },
    /// A system extension image read or downloaded, its sha256 and extension-release (against
    /// `host`) checked, then renamed into place under /var/lib/extensions.
    PlaceSysext {
        image: SysextImage,
        host: HostRelease,
    },
    /// `systemd-sysext refresh` and `systemd-sysusers`; then the merged /usr must hold the
    /// extension's release file. No daemon-reload: [`RuntimeAction::SysextOnBoot`] follows
    /// every merge and makes the one reload.
    MergeSysext {
        name: String,
    },
    /// The unit that starts the extension's units after the early merge at boot, written to
    /// `path`, `units` enabled (not started here), then a daemon-reload.
    SysextOnBoot {
        path: String,
        content: String,
        units: Vec<String>,
    },
    EnableStart {
        unit: String,
    },
    WaitDocker {
        timeout_secs: u64,
    },
    /// RKE's Docker version check, once the engine answers.
    CheckRkeDockerVersion {
        host: String,
    },
}

/// A step of the runtime plan: see [`crate::plan::Step`].
pub type RuntimeStep = crate::plan::Step<RuntimeAction>;

impl crate::plan::StepAction for RuntimeAction {
    fn report(outcome: Outcome, remedy: Option<String>) -> Self {
        RuntimeAction::Report { outcome, remedy }
    }

    fn as_report(&self) -> Option<(Outcome, Option<&String>)> {
        match self {
            RuntimeAction::Report { outcome, remedy } => Some((*outcome, remedy.as_ref())),
            _ => None,
        }
    }
}
