//! Everything host preparation looks at, gathered in one read-only pass.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::identity::{self, IdentityFacts, SshFacts};
use super::iptables::{self, IptablesFacts};
use super::kernel::{self, SwapEntry};
use super::read_optional;
use super::selinux::{self, SelinuxFacts};
use super::trust::{self, TrustFacts};
use super::{ProbeArea, ProbeFailures};
use crate::fsutil::HostRoot;
use crate::system::packages::{self, PackageManager};
use crate::system::systemd::{Systemd, UnitState};
use crate::userdata::Settings;

pub const FIREWALLD_UNIT: &str = "firewalld.service";
pub const MODULES_CONF: &str = "/etc/modules-load.d/bootstrapd.conf";
pub const SYSCTL_CONF: &str = "/etc/sysctl.d/90-bootstrapd.conf";
pub const FSTAB: &str = "/etc/fstab";

/// Packages whose presence the SELinux rule may ask about (see `plan::host`).
pub const SELINUX_PACKAGES: [&str; 3] =
    ["container-selinux", "docker-ce-selinux", "rancher-selinux"];

#[derive(Debug, Clone, Default, Serialize)]
pub struct HostFacts {
    /// Acting on the running host (not a --root tree): only then are kernel state changes
    /// (modprobe, swapoff) and tool runs meaningful.
    pub live: bool,
    /// firewalld.service as systemd sees it; None when systemd was not reachable.
    pub firewalld: Option<UnitState>,
    pub selinux: Option<SelinuxFacts>,
    /// Which database answered the package queries (apt = dpkg status, others = rpm).
    pub package_db: Option<PackageManager>,
    /// The manager that can install packages.
    pub package_manager: Option<PackageManager>,
    /// Installed version of each queried package; None = not installed.
    pub packages: BTreeMap<String, Option<String>>,
    pub iptables: IptablesFacts,
    pub modules_loaded: BTreeSet<String>,
    /// Current content of bootstrapd's modules-load.d file.
    pub modules_conf: Option<String>,
    /// Current value of each sysctl of interest; None = the key does not exist (yet).
    pub sysctls: BTreeMap<String, Option<String>>,
    pub sysctl_conf: Option<String>,
    pub swaps: Vec<SwapEntry>,
    pub fstab: Option<String>,
    pub hostname: Option<String>,
    /// /etc/hostname, the static hostname.
    pub static_hostname: Option<String>,
    /// What a hostname template names; the run fills in the datasource's part.
    pub identity: IdentityFacts,
    /// The SSH user's account and keys, when the userdata asks for keys.
    pub ssh: Option<SshFacts>,
    /// The system trust store, for `trusted_ca`.
    pub trust: TrustFacts,
    /// /usr is mounted read-only (an immutable image): no package can be installed.
    pub usr_read_only: bool,
    /// Probes that failed. The plan turns each into a failed step.
    pub errors: ProbeFailures,
}

impl HostFacts {
    pub fn package_installed(&self, name: &str) -> bool {
        self.packages.get(name).is_some_and(Option::is_some)
    }

    fn error(&mut self, area: ProbeArea, e: impl std::fmt::Display) {
        tracing::warn!(%area, error = %e, "host probe failed");
        self.errors.record(area, e);
    }
}

/// The sysctls host preparation manages: the ones Kubernetes needs, then the userdata's
/// (which win on a clash: the user asked for it explicitly).
pub fn wanted_sysctls(settings: &Settings) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = crate::userdata::REQUIRED_SYSCTLS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in &settings.host.sysctls {
        m.insert(k.clone(), v.clone());
    }
    m
}

/// The modules host preparation manages, in load order, without duplicates.
pub fn wanted_modules(settings: &Settings) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in crate::userdata::REQUIRED_MODULES
        .iter()
        .map(|s| s.to_string())
        .chain(settings.host.modules.iter().cloned())
    {
        if !out
            .iter()
            .any(|o| kernel::normalize_module(o) == kernel::normalize_module(&m))
        {
            out.push(m);
        }
    }
    out
}

/// The package database below `root`, by its files (a minimal image may have no manager).
fn package_db(root: &HostRoot) -> Option<PackageManager> {
    if root.path("/var/lib/dpkg/status").is_file() {
        return Some(PackageManager::Apt);
    }
    let rpmdb = ["/var/lib/rpm", "/usr/lib/sysimage/rpm"];
    if rpmdb
        .iter()
        .any(|p| std::fs::read_dir(root.path(p)).is_ok_and(|mut d| d.next().is_some()))
    {
        return Some(PackageManager::Dnf);
    }
    None
}

pub async fn gather(root: &HostRoot, settings: &Settings, systemd: Option<&Systemd>) -> HostFacts {
    let mut f = HostFacts {
        live: root.is_live(),
        ..HostFacts::default()
    };
    if let Some(sd) = systemd {
        match sd.unit_state(FIREWALLD_UNIT).await {
            Ok(s) => f.firewalld = Some(s),
            Err(e) => f.error(ProbeArea::Firewalld, e),
        }
    }
    selinux_and_policy_packages(&mut f, root).await;
    match iptables::probe(root).await {
        Ok(i) => f.iptables = i,
        Err(e) => f.error(ProbeArea::Iptables, e),
    }
    modules_and_sysctls(&mut f, root, settings);
    swap(&mut f, root);
    hostname(&mut f, root);
    f.identity = identity::gather(root, None, None);
    if let Some(ssh) = &settings.ssh {
        match identity::ssh(root, &ssh.user) {
            Ok(s) => f.ssh = Some(s),
            Err(e) => f.error(ProbeArea::Ssh, e),
        }
    }
    let wanted = !settings.trusted_ca.is_empty();
    f.trust = trust::gather(root, systemd, wanted, &mut f.errors).await;
    match super::usr_local::probe_at(root, "/usr") {
        Ok(u) => f.usr_read_only = u.read_only,
        Err(e) => f.errors.record(ProbeArea::Packages, e),
    }
    f
}

async fn selinux_and_policy_packages(f: &mut HostFacts, root: &HostRoot) {
    match selinux::probe(root) {
        Ok(s) => f.selinux = Some(s),
        Err(e) => f.error(ProbeArea::Selinux, e),
    }
    f.package_manager = packages::detect(root);
    f.package_db = package_db(root);
    // Only worth asking when SELinux is (or will be) on: rpm queries cost a fork each.
    let selinux_on = f.selinux.as_ref().is_some_and(SelinuxFacts::enabled);
    let (true, Some(db)) = (selinux_on, f.package_db) else {
        return;
    };
    for name in SELINUX_PACKAGES.iter().chain(["docker-ce"].iter()) {
        match packages::installed_version(root, db, name).await {
            Ok(v) => {
                f.packages.insert(name.to_string(), v);
            }
            Err(e) => {
                f.error(ProbeArea::Packages, e);
                break;
            }
        }
    }
}

/// The kernel's live state and the boot-time files that set it again.
fn modules_and_sysctls(f: &mut HostFacts, root: &HostRoot, settings: &Settings) {
    match kernel::loaded_modules(root) {
        Ok(m) => f.modules_loaded = m,
        Err(e) => f.error(ProbeArea::Modules, e),
    }
    match read_optional(&root.path(MODULES_CONF)) {
        Ok(c) => f.modules_conf = c,
        Err(e) => f.error(ProbeArea::Modules, e),
    }
    for key in wanted_sysctls(settings).keys() {
        match kernel::read_sysctl(root, key) {
            Ok(v) => {
                f.sysctls.insert(key.clone(), v);
            }
            Err(e) => f.error(ProbeArea::Sysctls, e),
        }
    }
    match read_optional(&root.path(SYSCTL_CONF)) {
        Ok(c) => f.sysctl_conf = c,
        Err(e) => f.error(ProbeArea::Sysctls, e),
    }
}

fn swap(f: &mut HostFacts, root: &HostRoot) {
    match kernel::active_swaps(root) {
        Ok(s) => f.swaps = s,
        Err(e) => f.error(ProbeArea::Swap, e),
    }
    match read_optional(&root.path(FSTAB)) {
        Ok(c) => f.fstab = c,
        Err(e) => f.error(ProbeArea::Swap, e),
    }
}

fn hostname(f: &mut HostFacts, root: &HostRoot) {
    match read_optional(&root.path("/etc/hostname")) {
        Ok(h) => f.static_hostname = h.map(|h| h.trim().to_string()),
        Err(e) => f.error(ProbeArea::Hostname, e),
    }
    // /proc/sys/kernel/hostname is the kernel's (transient) name, what RKE reads too.
    match read_optional(&root.path("/proc/sys/kernel/hostname")) {
        Ok(Some(h)) => f.hostname = Some(h.trim().to_string()),
        Ok(None) => match read_optional(&root.path("/etc/hostname")) {
            Ok(h) => f.hostname = h.map(|h| h.trim().to_string()),
            Err(e) => f.error(ProbeArea::Hostname, e),
        },
        Err(e) => f.error(ProbeArea::Hostname, e),
    }
}
