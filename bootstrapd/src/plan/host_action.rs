//! The actions of the host preparation's steps, apart from the planners that make them
//! (plan/host.rs, plan/identity.rs, plan/trusted_ca.rs): each planner depends on these, none
//! on another planner.

use serde::Serialize;

use super::Outcome;
use crate::facts::iptables::Backend;
use crate::facts::trust::TrustStore;
use crate::system::packages::PackageManager;

/// One CA file as it should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaFile {
    /// Host path.
    pub path: String,
    /// The certificate as one canonical PEM block.
    pub content: String,
    /// sha256 of the DER.
    pub fingerprint: String,
}

/// What the trust store step changes (boxed in [`HostAction::TrustedCa`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreChange {
    pub store: TrustStore,
    /// The store's tool, a host path.
    pub tool: String,
    pub write: Vec<CaFile>,
    /// Host paths of bootstrapd's files of certificates no longer in the userdata.
    pub remove: Vec<String>,
    /// Fingerprints of every certificate the rebuilt bundle must hold.
    pub expect: Vec<String>,
}

/// What a step will do when applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum HostAction {
    /// Nothing to change: the finding stands as planned.
    Report {
        outcome: Outcome,
        remedy: Option<String>,
    },
    DisableFirewalld,
    InstallPackages {
        manager: PackageManager,
        packages: Vec<String>,
    },
    SetIptablesBackend {
        backend: Backend,
        tool: String,
    },
    LoadModules {
        modules: Vec<String>,
    },
    WriteFile {
        path: String,
        content: String,
    },
    SetSysctls {
        values: Vec<(String, String)>,
    },
    SwapOff {
        devices: Vec<String>,
        fstab_lines: Vec<usize>,
    },
    /// Static and transient hostname, through systemd-hostnamed.
    SetHostname {
        name: String,
    },
    /// useradd, with a home directory.
    CreateUser {
        user: String,
    },
    /// The keys merged into the user's ~/.ssh/authorized_keys.
    AuthorizedKeys {
        user: String,
        keys: Vec<String>,
    },
    /// bootstrapd's CA files written (0644: public) and removed, then `tool` (a host path)
    /// rebuilds the store.
    TrustedCa(Box<StoreChange>),
    /// A running unit restarted (Docker, to read the new trust store).
    RestartUnit {
        unit: String,
    },
}

/// A step of the host plan: see [`crate::plan::Step`].
pub type HostStep = crate::plan::Step<HostAction>;

impl crate::plan::StepAction for HostAction {
    fn report(outcome: Outcome, remedy: Option<String>) -> Self {
        HostAction::Report { outcome, remedy }
    }

    fn as_report(&self) -> Option<(Outcome, Option<&String>)> {
        match self {
            HostAction::Report { outcome, remedy } => Some((*outcome, remedy.as_ref())),
            _ => None,
        }
    }
}
