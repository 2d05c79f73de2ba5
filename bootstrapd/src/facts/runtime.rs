//! What the host has of a container runtime: packages, the Engine API, the units, the files
//! bootstrapd manages (daemon.json, its repository file) and the offline bundle's contents.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::{ProbeArea, ProbeFailures, bundle_package_files};
use crate::fsutil::HostRoot;
use crate::secret::Secret;
use crate::system::docker::{self, EngineInfo};
use crate::system::packages::{self, PackageManager, PackageState};
use crate::system::proxy::{CONTAINERD_DROPIN, DOCKER_DROPIN};
use crate::system::systemd::{Systemd, UnitState};
use crate::userdata::{RuntimeSource, Settings};

pub const APT_LIST: &str = "/etc/apt/sources.list.d/bootstrapd-runtime.list";
pub const APT_KEYRING: &str = "/etc/apt/keyrings/bootstrapd-runtime.gpg";
pub const YUM_REPO: &str = "/etc/yum.repos.d/bootstrapd-runtime.repo";
pub const ZYPP_REPO: &str = "/etc/zypp/repos.d/bootstrapd-runtime.repo";
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
pub const DOCKER_UNIT: &str = "docker.service";
pub const CONTAINERD_UNIT: &str = "containerd.service";

/// Every package name under which distributions and Docker's repositories ship the engines.
pub const DOCKER_PACKAGES: [&str; 4] = ["docker-ce", "docker.io", "moby-engine", "docker"];
pub const CONTAINERD_PACKAGES: [&str; 2] = ["containerd.io", "containerd"];

#[derive(Debug, Clone, Default, Serialize)]
pub struct RuntimeFacts {
    /// Acting on the running host (not a --root tree).
    pub live: bool,
    pub hostname: Option<String>,
    pub package_manager: Option<PackageManager>,
    /// Installed engine packages and their versions (only installed ones are listed).
    pub installed: BTreeMap<String, String>,
    /// Engine packages whose install was cut short (name -> dpkg state, e.g. half-configured).
    /// The engine may answer all the same; the package still needs finishing.
    pub unfinished: BTreeMap<String, String>,
    /// The Docker Engine API answered ping; its version.
    pub engine: Option<EngineInfo>,
    pub containerd_socket: bool,
    pub docker_unit: Option<UnitState>,
    pub containerd_unit: Option<UnitState>,
    pub daemon_json: Option<String>,
    /// The proxy drop-ins present (path -> content); they may hold the proxy's credentials.
    pub proxy_dropins: BTreeMap<String, Secret>,
    /// Current content of bootstrapd's repository file for this manager.
    pub repo_file: Option<String>,
    /// Package files of the offline bundle for this host's manager (absolute host paths).
    pub bundle_packages: Vec<String>,
    /// Probes that failed.
    pub errors: ProbeFailures,
    /// The package index was already refreshed in this run (by the downloads made during the
    /// host preparation), so the install need not refresh it again. Not read from the host:
    /// the run sets it.
    pub index_fresh: bool,
    /// The registry files bootstrapd manages (registries.yaml, containerd's hosts.toml).
    pub registries: super::registries::RegistryFacts,
    /// The system extension the runtime may come from, and whether /usr is read-only.
    pub sysext: super::sysext::SysextFacts,
}

impl RuntimeFacts {
    fn error(&mut self, area: ProbeArea, e: impl std::fmt::Display) {
        tracing::warn!(%area, error = %e, "runtime probe failed");
        self.errors.record(area, e);
    }

    /// The first installed package among `names`, with its version.
    pub fn installed_any(&self, names: &[&str]) -> Option<(&str, &str)> {
        names.iter().find_map(|n| {
            self.installed
                .get_key_value(*n)
                .map(|(k, v)| (k.as_str(), v.as_str()))
        })
    }
}

/// The repository file bootstrapd writes for a manager.
pub fn repo_file_path(pm: PackageManager) -> &'static str {
    match pm {
        PackageManager::Apt => APT_LIST,
        PackageManager::Dnf | PackageManager::Yum => YUM_REPO,
        PackageManager::Zypper => ZYPP_REPO,
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, std::io::Error> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub async fn gather(
    root: &HostRoot,
    settings: &Settings,
    systemd: Option<&Systemd>,
) -> RuntimeFacts {
    let mut f = RuntimeFacts {
        live: root.is_live(),
        ..RuntimeFacts::default()
    };
    hostname(&mut f, root);
    f.package_manager = packages::detect(root);
    if let Some(pm) = f.package_manager {
        runtime_packages(&mut f, root, pm).await;
        package_sources(&mut f, root, settings, pm);
    }
    if docker::socket_path(root).exists() {
        match docker::engine_info(root).await {
            Ok(i) => f.engine = Some(i),
            Err(e) => f.error(ProbeArea::Docker, e),
        }
    }
    f.containerd_socket = root.path(CONTAINERD_SOCKET).exists();
    f.registries = super::registries::gather(root);
    f.sysext = super::sysext::gather(root, settings, systemd).await;
    let dj = root.path(docker::DAEMON_JSON);
    match read_optional(&dj) {
        Ok(c) => f.daemon_json = c,
        Err(e) => f.error(ProbeArea::DaemonJson, format!("{}: {e}", dj.display())),
    }
    for path in [DOCKER_DROPIN, CONTAINERD_DROPIN] {
        let real = root.path(path);
        match read_optional(&real) {
            Ok(Some(c)) => {
                f.proxy_dropins.insert(path.to_string(), Secret::new(c));
            }
            Ok(None) => {}
            Err(e) => f.error(ProbeArea::ProxyDropIn, format!("{}: {e}", real.display())),
        }
    }
    if let Some(sd) = systemd {
        for (unit, slot) in [
            (DOCKER_UNIT, &mut f.docker_unit),
            (CONTAINERD_UNIT, &mut f.containerd_unit),
        ] {
            if let Ok(s) = sd.unit_state(unit).await {
                *slot = Some(s);
            }
        }
    }
    f
}

/// The name RKE's version check reports: the configured one, else (live) the kernel's.
fn hostname(f: &mut RuntimeFacts, root: &HostRoot) {
    f.hostname = match read_optional(&root.path("/etc/hostname")) {
        Ok(h) => h.map(|h| h.trim().to_string()).filter(|h| !h.is_empty()),
        Err(e) => {
            f.error(ProbeArea::Hostname, e);
            None
        }
    };
    if f.live && f.hostname.is_none() {
        f.hostname = nix::unistd::gethostname()
            .ok()
            .map(|h| h.to_string_lossy().into_owned());
    }
}

/// Docker's and containerd's packages: installed, or left unfinished by a cut-short install.
async fn runtime_packages(f: &mut RuntimeFacts, root: &HostRoot, pm: PackageManager) {
    let names: Vec<&str> = DOCKER_PACKAGES
        .iter()
        .chain(CONTAINERD_PACKAGES.iter())
        .copied()
        .collect();
    let states = match packages::package_states(root, pm, &names).await {
        Ok(states) => states,
        Err(e) => {
            f.error(ProbeArea::Packages, e);
            return;
        }
    };
    for (name, state) in names.into_iter().zip(states) {
        match state {
            PackageState::Installed(v) => {
                f.installed.insert(name.to_string(), v);
            }
            PackageState::Unfinished(s) => {
                f.unfinished.insert(name.to_string(), s);
            }
            PackageState::Absent => {}
        }
    }
}

/// Where the packages would come from: the repository file bootstrapd writes, and the offline
/// bundle's package files.
fn package_sources(f: &mut RuntimeFacts, root: &HostRoot, settings: &Settings, pm: PackageManager) {
    let repo = root.path(repo_file_path(pm));
    match read_optional(&repo) {
        Ok(c) => f.repo_file = c,
        Err(e) => f.error(ProbeArea::Repository, format!("{}: {e}", repo.display())),
    }
    if let RuntimeSource::Offline(o) = &settings.runtime.source {
        match bundle_package_files(root, &o.path, pm.package_extension()) {
            Ok(files) => f.bundle_packages = files,
            Err(e) => f.error(ProbeArea::Bundle, format!("{}: {e}", o.path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gathers_from_a_root_tree() {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().to_path_buf()));
        let w = |p: &str, c: &str| {
            let path = root.path(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        };
        w("/usr/bin/apt-get", "");
        w(
            "/var/lib/dpkg/status",
            "Package: docker.io\nStatus: install ok installed\nVersion: 20.10.24+dfsg1-1+b3\n\n\
             Package: containerd\nStatus: install ok unpacked\nVersion: 1.6.20~ds1-1\n",
        );
        w("/etc/hostname", "node1\n");
        w("/etc/docker/daemon.json", "{}\n");
        w("/opt/bundle/docker.deb", "");
        w("/opt/bundle/containerd.deb", "");
        w("/opt/bundle/agent.tar", "");
        let mut s = crate::userdata::Settings::rke1_worker();
        s.runtime.source = RuntimeSource::Offline(crate::userdata::OfflineSource {
            path: "/opt/bundle".into(),
        });
        let f = gather(&root, &s, None).await;
        assert!(!f.live);
        assert_eq!(f.hostname.as_deref(), Some("node1"));
        assert_eq!(f.package_manager, Some(PackageManager::Apt));
        assert_eq!(
            f.installed_any(&DOCKER_PACKAGES),
            Some(("docker.io", "20.10.24+dfsg1-1+b3"))
        );
        assert_eq!(
            f.unfinished.get("containerd").map(String::as_str),
            Some("unpacked")
        );
        assert_eq!(f.daemon_json.as_deref(), Some("{}\n"));
        assert_eq!(
            f.bundle_packages,
            vec!["/opt/bundle/containerd.deb", "/opt/bundle/docker.deb"]
        );
        assert!(f.engine.is_none());
        assert!(f.errors.is_empty(), "{:?}", f.errors);
    }
}
