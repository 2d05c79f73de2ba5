//! Read-only probes of the host. Nothing here changes anything; `plan` turns these facts
//! into steps and `actions` carries them out.

pub mod host;
pub mod identity;
pub mod iptables;
pub mod kernel;
pub mod network;
pub mod registries;
pub mod runtime;
pub mod selinux;
pub mod sysext;
pub mod trust;
pub mod usr_local;

use std::path::PathBuf;

use serde::Serialize;

use crate::fsutil::HostRoot;
use crate::system::process::{self, CommandSpec, ProcessError};
pub(crate) use crate::system::process::{Output, last_line};

/// A probe that could not read what it needed.
#[derive(Debug, thiserror::Error)]
pub enum FactError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(transparent)]
    Process(#[from] ProcessError),
}

/// The part of the host a probe reads. A probe that fails fails the steps that need its area,
/// and only those.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeArea {
    Firewalld,
    Selinux,
    Packages,
    Iptables,
    Modules,
    Sysctls,
    Swap,
    Hostname,
    /// The SSH user's account and authorized_keys.
    Ssh,
    /// bootstrapd's package repository file.
    Repository,
    /// The runtime's offline bundle.
    Bundle,
    /// The Docker Engine API.
    Docker,
    /// `/etc/docker/daemon.json`.
    DaemonJson,
    /// The system trust store: bootstrapd's CA files, the extracted bundle.
    TrustStore,
    /// The runtimes' proxy drop-ins.
    ProxyDropIn,
    /// The system extension: its image, the host's release, the merged /usr.
    Sysext,
}

impl ProbeArea {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeArea::Firewalld => "firewalld",
            ProbeArea::Selinux => "selinux",
            ProbeArea::Packages => "packages",
            ProbeArea::Iptables => "iptables",
            ProbeArea::Modules => "modules",
            ProbeArea::Sysctls => "sysctls",
            ProbeArea::Swap => "swap",
            ProbeArea::Hostname => "hostname",
            ProbeArea::Ssh => "ssh",
            ProbeArea::Repository => "repository",
            ProbeArea::Bundle => "bundle",
            ProbeArea::Docker => "docker",
            ProbeArea::DaemonJson => "daemon-json",
            ProbeArea::TrustStore => "trust-store",
            ProbeArea::ProxyDropIn => "proxy-drop-in",
            ProbeArea::Sysext => "sysext",
        }
    }
}

impl std::fmt::Display for ProbeArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A probe that failed: the area it reads and what went wrong. The causes are of many types
/// (D-Bus, I/O, a tool, the Engine API) and the plan only reports them, so the message is
/// kept as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{area}: {message}")]
pub struct ProbeFailure {
    pub area: ProbeArea,
    pub message: String,
}

/// The probes that failed while gathering facts, in the order they failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ProbeFailures(Vec<ProbeFailure>);

impl ProbeFailures {
    pub fn record(&mut self, area: ProbeArea, e: impl std::fmt::Display) {
        self.0.push(ProbeFailure {
            area,
            message: e.to_string(),
        });
    }

    /// The first failure of `area`.
    pub fn get(&self, area: ProbeArea) -> Option<&ProbeFailure> {
        self.0.iter().find(|f| f.area == area)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ProbeFailure> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Files (by extension) directly in `dir`, sorted, as host paths: an offline bundle's packages
/// or extension images.
pub fn bundle_package_files(root: &HostRoot, dir: &str, ext: &str) -> std::io::Result<Vec<String>> {
    let real = root.path(dir);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&real)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(&format!(".{ext}")) && entry.file_type()?.is_file() {
            out.push(format!("{}/{name}", dir.trim_end_matches('/')));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads a file that may legitimately be absent: Ok(None) then.
pub(crate) fn read_optional(path: &std::path::Path) -> Result<Option<String>, FactError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FactError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Runs a system tool (its output is parsed) through the one process runner, bounded in time.
pub(crate) async fn run_tool(
    program: &str,
    args: &[&str],
    timeout: std::time::Duration,
) -> Result<Output, FactError> {
    Ok(process::run(&CommandSpec::new(program, args), timeout).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_failures_are_found_by_area_first_one_first() {
        let mut f = ProbeFailures::default();
        assert!(f.is_empty() && f.get(ProbeArea::Swap).is_none());
        f.record(ProbeArea::Swap, "cannot read /proc/swaps: denied");
        f.record(ProbeArea::DaemonJson, "not JSON");
        f.record(ProbeArea::Swap, "second");
        assert_eq!(
            f.get(ProbeArea::Swap).unwrap().message,
            "cannot read /proc/swaps: denied"
        );
        assert!(f.get(ProbeArea::Firewalld).is_none());
        let areas: Vec<_> = f.iter().map(|p| p.area.as_str()).collect();
        assert_eq!(areas, ["swap", "daemon-json", "swap"]);
        assert_eq!(
            f.get(ProbeArea::DaemonJson).unwrap().to_string(),
            "daemon-json: not JSON"
        );
        // The serialized name is the one shown in messages.
        assert_eq!(
            serde_json::to_value(ProbeArea::DaemonJson).unwrap(),
            ProbeArea::DaemonJson.as_str()
        );
    }
}
