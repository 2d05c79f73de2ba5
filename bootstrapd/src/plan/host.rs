//! Host preparation: settings + facts -> ordered steps, each with its reason. Pure.
//!
//! Order matters: modules before sysctls (the bridge sysctls exist only once br_netfilter is
//! loaded), files persisted right after the live change they mirror.
//!
//! SELinux package rule (when SELinux is enforcing or permissive now, or configured so for
//! the next boot):
//! - `container-selinux`: the container_t policy every current Docker and containerd uses;
//! - `docker-ce-selinux` instead of it when the Docker CE in use is older than 17.06 (the
//!   requested runtime version only matches pre-17.06 releases, or the installed docker-ce is
//!   one): those packages carried their own policy and conflict with container-selinux;
//! - `rancher-selinux` for mode rke1 when the agent image is Rancher >= 2.6.3 (the first
//!   release whose RKE1 deploys Kubernetes 1.22, where RKE's probe container runs as
//!   rke_container_t) or its version cannot be read from the tag (then we cannot rule it out).
//!   The cluster's Kubernetes version is not known on the node; the agent version bounds it.
//!   (RKE's check: rancher/rke PR 2750; the failure it causes: rancher/rancher issue 36509.)
//! - system-agent (RKE2/K3s): the RKE2 installer installs rke2-selinux itself on RPM distros
//!   (Rancher docs, "About rke2-selinux"), so only the runtime policy is checked here.

use super::Outcome;
use super::trusted_ca;
use crate::facts::ProbeArea;
use crate::facts::host::{HostFacts, MODULES_CONF, SYSCTL_CONF, wanted_modules, wanted_sysctls};
use crate::facts::iptables::{Backend, IptablesFacts};
use crate::facts::kernel::{
    fstab_swap_lines, normalize_module, sysctl_eq, sysctl_path, valid_module_name,
};
use crate::system::packages::{VersionConstraint, install_command, version_components};
use crate::userdata::{
    Engine, FirewalldPolicy, IptablesBackend, RegistrationMode, Role, SelinuxPolicy, Settings,
    SwapPolicy,
};

pub use super::host_action::{HostAction, HostStep};

const WHY_FIREWALLD: &str =
    "firewalld's default zone blocks cluster traffic; Rancher requires it off";
const WHY_SELINUX: &str = "with SELinux on, containers need the container policy packages (RKE's probe runs as rke_container_t)";
const WHY_IPTABLES: &str =
    "kube-proxy and the CNI program iptables; both must use the same backend";
const WHY_MODULES: &str =
    "Kubernetes networking needs bridge netfilter, overlayfs, NAT and conntrack";
const WHY_MODULES_FILE: &str = "the modules must load again on every boot";
const WHY_SYSCTLS: &str = "pod traffic must be forwarded and pass through iptables";
const WHY_SYSCTLS_FILE: &str = "the sysctls must be set again on every boot";
const WHY_SWAP: &str = "kubelet refuses to run with swap on by default";

fn probe_error(facts: &HostFacts, area: ProbeArea) -> Option<&str> {
    facts.errors.get(area).map(|f| f.message.as_str())
}

/// The host preparation's own steps (the prepare stage adds the node identity's:
/// `plan::prepare::plan`).
pub fn plan(settings: &Settings, facts: &HostFacts) -> Vec<HostStep> {
    let mut steps = vec![firewalld(settings, facts), selinux(settings, facts)];
    steps.extend(iptables(settings, facts));
    steps.extend(modules(settings, facts));
    steps.extend(sysctls(settings, facts));
    steps.push(swap(settings, facts));
    // Last of the host's own steps: the prepare stage, and so the store, comes before the
    // runtime stage starts any engine.
    steps.extend(trusted_ca::plan(settings, facts));
    steps
}

/// The firewalld step; also planned alone by the early local stage (cli/local_host.rs).
pub fn firewalld(settings: &Settings, facts: &HostFacts) -> HostStep {
    const S: &str = "firewalld";
    if let Some(e) = probe_error(facts, ProbeArea::Firewalld) {
        return HostStep::failed(
            S,
            WHY_FIREWALLD,
            format!("cannot read firewalld.service state: {e}"),
            "make sure systemd and the D-Bus system bus are running",
        );
    }
    let Some(state) = &facts.firewalld else {
        return if facts.live {
            HostStep::with_remedy(
                S,
                WHY_FIREWALLD,
                Outcome::Warning,
                "systemd is not reachable over D-Bus: firewalld not checked",
                "run bootstrapd under systemd, or make sure firewalld is not running",
            )
        } else {
            HostStep::report(
                S,
                WHY_FIREWALLD,
                Outcome::Skipped,
                "no systemd for a --root tree",
            )
        };
    };
    if state.is_not_found() {
        return HostStep::report(S, WHY_FIREWALLD, Outcome::Ok, "firewalld is not installed");
    }
    match settings.host.firewalld {
        FirewalldPolicy::Keep if state.is_active() => HostStep::with_remedy(
            S,
            WHY_FIREWALLD,
            Outcome::Warning,
            format!("firewalld is running and kept (host.firewalld: keep) [{state}]"),
            "open the cluster ports in firewalld yourself, or set host.firewalld: disable",
        ),
        FirewalldPolicy::Keep => HostStep::report(
            S,
            WHY_FIREWALLD,
            Outcome::Ok,
            format!("firewalld is not running (kept by policy) [{state}]"),
        ),
        FirewalldPolicy::Disable if !state.is_active() && state.is_masked() => HostStep::report(
            S,
            WHY_FIREWALLD,
            Outcome::Ok,
            "firewalld is stopped and masked",
        ),
        FirewalldPolicy::Disable => HostStep::change(
            S,
            WHY_FIREWALLD,
            format!("firewalld [{state}]: stop, disable and mask it"),
            HostAction::DisableFirewalld,
        ),
    }
}

/// True when the requested or installed Docker CE is a pre-17.06 release.
fn old_docker_ce(settings: &Settings, facts: &HostFacts) -> bool {
    if settings.runtime.engine != Engine::Docker {
        return false;
    }
    let requested_old = settings
        .runtime
        .version
        .as_deref()
        .and_then(|v| VersionConstraint::parse(v).ok())
        .is_some_and(|c| {
            ["17.03.3", "17.03.0", "1.13.1"]
                .iter()
                .any(|v| c.matches(v))
                && !["17.06.2", "18.09.9", "20.10.24", "24.0.7", "28.0.0"]
                    .iter()
                    .any(|v| c.matches(v))
        });
    let installed_old = facts
        .packages
        .get("docker-ce")
        .and_then(|v| v.as_deref())
        .map(version_components)
        .is_some_and(|c| c.len() >= 2 && (c[0], c[1]) < (17, 6));
    requested_old || installed_old
}

/// Rancher version from an agent image tag (`rancher/rancher-agent:v2.6.14` -> [2, 6, 14]).
fn agent_version(image: &str) -> Option<Vec<u64>> {
    let tag = image.rsplit_once(':')?.1;
    if tag.contains('/') {
        return None; // a registry port, no tag
    }
    let c = version_components(tag.strip_prefix('v').unwrap_or(tag));
    (c.len() >= 2).then_some(c)
}

/// The SELinux policy packages this node needs, each with why (see the module docs).
pub fn selinux_packages(
    settings: &Settings,
    facts: &HostFacts,
) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if old_docker_ce(settings, facts) {
        out.push((
            "docker-ce-selinux",
            "Docker CE before 17.06 ships its policy separately",
        ));
    } else {
        out.push((
            "container-selinux",
            "policy for container processes (container_t)",
        ));
    }
    if settings.rancher.mode == RegistrationMode::Rke1 {
        let needs = match agent_version(&settings.rancher.agent_image) {
            Some(v) => v.as_slice() >= [2u64, 6, 3].as_slice(),
            None => true,
        };
        if needs {
            out.push((
                "rancher-selinux",
                "RKE1 with Kubernetes >= 1.22 runs as rke_container_t",
            ));
        }
    }
    out
}

fn selinux(settings: &Settings, facts: &HostFacts) -> HostStep {
    let mode = match selinux_mode(facts) {
        Ok(mode) => mode,
        Err(step) => return step,
    };
    if let Some(step) = package_db_unusable(facts, &mode) {
        return step;
    }
    let needed = selinux_packages(settings, facts);
    let missing: Vec<String> = needed
        .iter()
        .filter(|(p, _)| !facts.package_installed(p))
        .map(|(p, _)| p.to_string())
        .collect();
    if missing.is_empty() {
        return selinux_packages_installed(facts, &mode, &needed);
    }
    selinux_packages_missing(settings, facts, &mode, &needed, missing)
}

/// The SELinux mode as the step words it, or the step itself when SELinux needs no policy
/// packages or its state cannot be read.
fn selinux_mode(facts: &HostFacts) -> Result<String, HostStep> {
    const S: &str = "selinux";
    if let Some(e) = probe_error(facts, ProbeArea::Selinux) {
        return Err(HostStep::failed(
            S,
            WHY_SELINUX,
            format!("cannot read the SELinux mode: {e}"),
            "check /sys/fs/selinux and /etc/selinux/config",
        ));
    }
    let Some(se) = &facts.selinux else {
        return Err(HostStep::report(
            S,
            WHY_SELINUX,
            Outcome::Skipped,
            "SELinux state unknown",
        ));
    };
    if !se.enabled() {
        return Err(HostStep::report(
            S,
            WHY_SELINUX,
            Outcome::Ok,
            "SELinux is disabled: no policy packages needed",
        ));
    }
    Ok(format!(
        "SELinux {} (configured: {})",
        se.current.as_str(),
        se.configured.map(|m| m.as_str()).unwrap_or("-")
    ))
}

/// Without a readable package database the policy packages cannot be checked.
fn package_db_unusable(facts: &HostFacts, mode: &str) -> Option<HostStep> {
    if let Some(e) = probe_error(facts, ProbeArea::Packages) {
        return Some(HostStep::failed(
            "selinux",
            WHY_SELINUX,
            format!("{mode}; cannot query the package database: {e}"),
            "check that rpm or dpkg works on this host",
        ));
    }
    facts.package_db.is_none().then(|| {
        HostStep::failed(
            "selinux",
            WHY_SELINUX,
            format!("{mode}; no dpkg or rpm database found"),
            "install the container-selinux package",
        )
    })
}

fn selinux_packages_installed(facts: &HostFacts, mode: &str, needed: &[(&str, &str)]) -> HostStep {
    let have: Vec<String> = needed
        .iter()
        .map(
            |(p, _)| match facts.packages.get(*p).and_then(|v| v.as_deref()) {
                Some(v) => format!("{p} {v}"),
                None => p.to_string(),
            },
        )
        .collect();
    HostStep::report(
        "selinux",
        WHY_SELINUX,
        Outcome::Ok,
        format!("{mode}; installed: {}", have.join(", ")),
    )
}

/// Missing policy packages, handled as host.selinux says: warn, fail, or install them.
fn selinux_packages_missing(
    settings: &Settings,
    facts: &HostFacts,
    mode: &str,
    needed: &[(&str, &str)],
    missing: Vec<String>,
) -> HostStep {
    const S: &str = "selinux";
    let why: Vec<String> = needed
        .iter()
        .filter(|(p, _)| missing.iter().any(|m| m == p))
        .map(|(p, w)| format!("{p} ({w})"))
        .collect();
    let why = why.join(", ");
    let install_hint = match facts.package_manager {
        Some(pm) => format!("install them: {}", install_command(pm, &missing)),
        None => format!("install {}", missing.join(" ")),
    };
    match settings.host.selinux {
        SelinuxPolicy::Ignore => HostStep::with_remedy(
            S,
            WHY_SELINUX,
            Outcome::Warning,
            format!("{mode}; missing {why} (host.selinux: ignore)"),
            install_hint,
        ),
        SelinuxPolicy::Require => HostStep::failed(
            S,
            WHY_SELINUX,
            format!("{mode}; missing {why}"),
            format!("{install_hint}, or set host.selinux: install"),
        ),
        SelinuxPolicy::Install => {
            install_selinux_packages(facts, mode, &why, missing, install_hint)
        }
    }
}

/// host.selinux: install — only on the live host, with its package manager.
fn install_selinux_packages(
    facts: &HostFacts,
    mode: &str,
    why: &str,
    missing: Vec<String>,
    install_hint: String,
) -> HostStep {
    const S: &str = "selinux";
    match facts.package_manager {
        Some(_) if facts.usr_read_only => HostStep::failed(
            S,
            WHY_SELINUX,
            format!("{mode}; missing {why}, and /usr is read-only (an immutable image)"),
            "build the image with the SELinux packages, or set host.selinux: ignore",
        ),
        Some(manager) if facts.live => HostStep::change(
            S,
            WHY_SELINUX,
            format!("{mode}; install {why} with {manager}"),
            HostAction::InstallPackages {
                manager,
                packages: missing,
            },
        ),
        Some(_) => HostStep::report(
            S,
            WHY_SELINUX,
            Outcome::Skipped,
            format!(
                "{mode}; would install {} (not on a --root tree)",
                missing.join(" ")
            ),
        ),
        None => HostStep::failed(
            S,
            WHY_SELINUX,
            format!(
                "{mode}; missing {} and no package manager found",
                missing.join(" ")
            ),
            install_hint,
        ),
    }
}

fn iptables(settings: &Settings, facts: &HostFacts) -> Vec<HostStep> {
    const S: &str = "iptables-backend";
    if let Some(e) = probe_error(facts, ProbeArea::Iptables) {
        return vec![HostStep::failed(
            S,
            WHY_IPTABLES,
            format!("cannot inspect iptables: {e}"),
            "check that the iptables binaries run",
        )];
    }
    let ipt = &facts.iptables;
    if !["iptables", "iptables-legacy", "iptables-nft"]
        .iter()
        .any(|b| ipt.has(b))
    {
        return vec![HostStep::failed(
            S,
            WHY_IPTABLES,
            "no iptables binary found",
            "install the iptables package",
        )];
    }
    vec![
        iptables_backend(settings.host.iptables_backend, ipt),
        iptables_rules(ipt),
    ]
}

/// The backend host.iptables_backend asks for: kept as it is, or switched through the
/// alternatives tool.
fn iptables_backend(policy: IptablesBackend, ipt: &IptablesFacts) -> HostStep {
    const S: &str = "iptables-backend";
    let current = ipt
        .backend
        .map(Backend::as_str)
        .unwrap_or("unknown backend");
    let want = match policy {
        IptablesBackend::Auto => {
            return HostStep::report(
                S,
                WHY_IPTABLES,
                Outcome::Ok,
                format!("iptables is {current} (host.iptables_backend: auto)"),
            );
        }
        IptablesBackend::Legacy => Backend::Legacy,
        IptablesBackend::Nft => Backend::Nft,
    };
    if ipt.backend == Some(want) {
        return HostStep::report(
            S,
            WHY_IPTABLES,
            Outcome::Ok,
            format!("iptables is {current}"),
        );
    }
    let bin = format!("iptables-{}", want.as_str());
    if !ipt.has(&bin) {
        return HostStep::failed(
            S,
            WHY_IPTABLES,
            format!("iptables is {current}; {bin} is not installed"),
            format!("install the package providing {bin}, or set host.iptables_backend: auto"),
        );
    }
    match &ipt.alternatives_tool {
        Some(tool) => HostStep::change(
            S,
            WHY_IPTABLES,
            format!(
                "iptables is {current}: switch iptables and ip6tables to {}",
                want.as_str()
            ),
            HostAction::SetIptablesBackend {
                backend: want,
                tool: tool.clone(),
            },
        ),
        None => HostStep::failed(
            S,
            WHY_IPTABLES,
            format!("iptables is {current}; no alternatives tool to switch it"),
            format!(
                "point /usr/sbin/iptables at {bin} by hand, or set host.iptables_backend: auto"
            ),
        ),
    }
}

/// Rules in both backends at once mean two writers that do not see each other's rules.
fn iptables_rules(ipt: &IptablesFacts) -> HostStep {
    const R: &str = "iptables-rules";
    match (ipt.legacy_rules, ipt.nft_rules) {
        (Some(l), Some(n)) if l > 0 && n > 0 => HostStep::with_remedy(
            R,
            WHY_IPTABLES,
            Outcome::Warning,
            format!(
                "rules in both backends at once (legacy {l}, nft {n}): pods may lose connectivity (Rancher issues 23045, 34604, 35245; rke 2432)"
            ),
            "flush the backend not in use (iptables-legacy -F / -X per table, or nft flush ruleset) and reboot",
        ),
        (Some(l), Some(n)) => HostStep::report(
            R,
            WHY_IPTABLES,
            Outcome::Ok,
            format!("rules only in one backend (legacy {l}, nft {n})"),
        ),
        _ => HostStep::report(
            R,
            WHY_IPTABLES,
            Outcome::Skipped,
            "rule counts not measured (needs both iptables-legacy-save and iptables-nft-save on the live host)",
        ),
    }
}

/// The modules-load.d file bootstrapd owns, as it should read.
pub fn modules_file(modules: &[String]) -> String {
    let mut s =
        String::from("# Written by bootstrapd: kernel modules Kubernetes needs, loaded at boot.\n");
    for m in modules {
        s.push_str(m);
        s.push('\n');
    }
    s
}

/// The sysctl.d file bootstrapd owns, as it should read.
pub fn sysctl_file(values: &[(String, String)]) -> String {
    let mut s = String::from("# Written by bootstrapd: sysctls Kubernetes needs, set at boot.\n");
    for (k, v) in values {
        s.push_str(&format!("{k} = {v}\n"));
    }
    s
}

fn modules(settings: &Settings, facts: &HostFacts) -> Vec<HostStep> {
    const S: &str = "modules";
    let wanted = wanted_modules(settings);
    let bad: Vec<&String> = wanted.iter().filter(|m| !valid_module_name(m)).collect();
    if !bad.is_empty() {
        return vec![HostStep::failed(
            S,
            WHY_MODULES,
            format!("invalid module names: {bad:?}"),
            "use plain module names in host.modules (letters, digits, _ and -)",
        )];
    }
    let mut steps = Vec::new();
    if let Some(e) = probe_error(facts, ProbeArea::Modules) {
        steps.push(HostStep::failed(
            S,
            WHY_MODULES,
            format!("cannot read the loaded modules: {e}"),
            "check /proc/modules",
        ));
    } else {
        let missing: Vec<String> = wanted
            .iter()
            .filter(|m| !facts.modules_loaded.contains(&normalize_module(m)))
            .cloned()
            .collect();
        steps.push(if missing.is_empty() {
            HostStep::report(
                S,
                WHY_MODULES,
                Outcome::Ok,
                format!("loaded: {}", wanted.join(" ")),
            )
        } else if facts.live {
            HostStep::change(
                S,
                WHY_MODULES,
                format!("load {}", missing.join(" ")),
                HostAction::LoadModules { modules: missing },
            )
        } else {
            HostStep::report(
                S,
                WHY_MODULES,
                Outcome::Skipped,
                format!(
                    "not loaded: {} (a --root tree has no kernel to load them into)",
                    missing.join(" ")
                ),
            )
        });
    }
    let content = modules_file(&wanted);
    steps.push(if facts.modules_conf.as_deref() == Some(content.as_str()) {
        HostStep::report(
            "modules-file",
            WHY_MODULES_FILE,
            Outcome::Ok,
            format!("{MODULES_CONF} is up to date"),
        )
    } else {
        HostStep::change(
            "modules-file",
            WHY_MODULES_FILE,
            format!("write {MODULES_CONF}"),
            HostAction::WriteFile {
                path: MODULES_CONF.to_string(),
                content,
            },
        )
    });
    steps
}

fn sysctls(settings: &Settings, facts: &HostFacts) -> Vec<HostStep> {
    const S: &str = "sysctls";
    let wanted: Vec<(String, String)> = wanted_sysctls(settings).into_iter().collect();
    let bad: Vec<&String> = wanted
        .iter()
        .map(|(k, _)| k)
        .filter(|k| sysctl_path(k).is_none())
        .collect();
    if !bad.is_empty() {
        return vec![HostStep::failed(
            S,
            WHY_SYSCTLS,
            format!("invalid sysctl names: {bad:?}"),
            "use sysctl names such as net.ipv4.ip_forward in host.sysctls",
        )];
    }
    let mut steps = Vec::new();
    let br_netfilter_coming = wanted_modules(settings)
        .iter()
        .any(|m| normalize_module(m) == "br_netfilter");
    if let Some(e) = probe_error(facts, ProbeArea::Sysctls) {
        steps.push(HostStep::failed(
            S,
            WHY_SYSCTLS,
            format!("cannot read sysctls: {e}"),
            "check /proc/sys",
        ));
    } else {
        let mut to_set = Vec::new();
        let mut absent = Vec::new();
        for (k, want) in &wanted {
            match facts.sysctls.get(k).and_then(|v| v.as_deref()) {
                Some(cur) if sysctl_eq(cur, want) => {}
                Some(_) => to_set.push((k.clone(), want.clone())),
                // The bridge keys appear once br_netfilter is loaded by the modules step.
                None if k.starts_with("net.bridge.") && br_netfilter_coming && facts.live => {
                    to_set.push((k.clone(), want.clone()))
                }
                None => absent.push(k.clone()),
            }
        }
        steps.push(if !absent.is_empty() {
            HostStep::failed(
                S,
                WHY_SYSCTLS,
                format!("no such sysctl: {}", absent.join(", ")),
                "load the module that provides it (br_netfilter for net.bridge.*) or remove it from host.sysctls",
            )
        } else if to_set.is_empty() {
            HostStep::report(S, WHY_SYSCTLS, Outcome::Ok, format!("set: {}", wanted.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")))
        } else {
            HostStep::change(
                S,
                WHY_SYSCTLS,
                format!("set {}", to_set.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")),
                HostAction::SetSysctls { values: to_set },
            )
        });
    }
    let content = sysctl_file(&wanted);
    steps.push(if facts.sysctl_conf.as_deref() == Some(content.as_str()) {
        HostStep::report(
            "sysctls-file",
            WHY_SYSCTLS_FILE,
            Outcome::Ok,
            format!("{SYSCTL_CONF} is up to date"),
        )
    } else {
        HostStep::change(
            "sysctls-file",
            WHY_SYSCTLS_FILE,
            format!("write {SYSCTL_CONF}"),
            HostAction::WriteFile {
                path: SYSCTL_CONF.to_string(),
                content,
            },
        )
    });
    steps
}

fn swap(settings: &Settings, facts: &HostFacts) -> HostStep {
    const S: &str = "swap";
    if let Some(e) = probe_error(facts, ProbeArea::Swap) {
        return HostStep::failed(
            S,
            WHY_SWAP,
            format!("cannot read swap state: {e}"),
            "check /proc/swaps and /etc/fstab",
        );
    }
    let active: Vec<String> = facts.swaps.iter().map(|s| s.path.clone()).collect();
    let lines = facts
        .fstab
        .as_deref()
        .map(fstab_swap_lines)
        .unwrap_or_default();
    match settings.host.swap {
        SwapPolicy::Off if active.is_empty() && lines.is_empty() => HostStep::report(
            S,
            WHY_SWAP,
            Outcome::Ok,
            "swap is off and not in /etc/fstab",
        ),
        SwapPolicy::Off => {
            let mut what = Vec::new();
            if !active.is_empty() {
                what.push(format!("swapoff {}", active.join(" ")));
            }
            if !lines.is_empty() {
                what.push(format!(
                    "comment out /etc/fstab swap entries {}",
                    lines
                        .iter()
                        .map(|(_, d)| d.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
            }
            HostStep::change(
                S,
                WHY_SWAP,
                what.join("; "),
                HostAction::SwapOff {
                    devices: active,
                    fstab_lines: lines.iter().map(|(n, _)| *n).collect(),
                },
            )
        }
        SwapPolicy::Keep if active.is_empty() => {
            HostStep::report(S, WHY_SWAP, Outcome::Ok, "no swap active")
        }
        SwapPolicy::Keep if settings.roles.contains(&Role::Worker) => HostStep::with_remedy(
            S,
            WHY_SWAP,
            Outcome::Warning,
            format!(
                "swap is on ({}) on a worker; RKE runs kubelet with --fail-swap-on=false",
                active.join(" ")
            ),
            "set host.swap: off to turn it off",
        ),
        SwapPolicy::Keep => HostStep::report(
            S,
            WHY_SWAP,
            Outcome::Ok,
            format!(
                "swap is on ({}); kept, this node runs no workloads",
                active.join(" ")
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::facts::iptables::IptablesFacts;
    use crate::system::packages::PackageManager;
    // The prepare stage's whole plan: these tests read the identity steps beside the host's.
    use crate::facts::kernel::SwapEntry;
    use crate::facts::selinux::{SelinuxFacts, SelinuxMode};
    use crate::plan::prepare::plan;
    use crate::system::systemd::UnitState;

    fn settings() -> Settings {
        Settings::rke1_worker()
    }

    fn unit(l: &str, a: &str, f: &str) -> UnitState {
        UnitState {
            load_state: l.into(),
            active_state: a.into(),
            unit_file_state: f.into(),
        }
    }

    /// A live host that is already fully prepared for `s`.
    fn prepared(s: &Settings) -> HostFacts {
        let wanted = wanted_sysctls(s);
        let modules = wanted_modules(s);
        HostFacts {
            live: true,
            firewalld: Some(unit("masked", "inactive", "masked")),
            selinux: Some(SelinuxFacts {
                current: SelinuxMode::Disabled,
                configured: None,
            }),
            package_db: Some(PackageManager::Apt),
            package_manager: Some(PackageManager::Apt),
            iptables: IptablesFacts {
                binaries: vec![
                    "/usr/sbin/iptables".into(),
                    "/usr/sbin/iptables-legacy".into(),
                    "/usr/sbin/iptables-nft".into(),
                ],
                backend: Some(Backend::Nft),
                alternative: Some("/usr/sbin/iptables-nft".into()),
                alternatives_tool: Some("update-alternatives".into()),
                legacy_rules: Some(0),
                nft_rules: Some(12),
            },
            modules_loaded: modules
                .iter()
                .map(|m| normalize_module(m))
                .collect::<BTreeSet<_>>(),
            modules_conf: Some(modules_file(&modules)),
            sysctls: wanted
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect(),
            sysctl_conf: Some(sysctl_file(&wanted.into_iter().collect::<Vec<_>>())),
            swaps: vec![],
            fstab: Some("UUID=aa / ext4 defaults 0 1\n".into()),
            hostname: Some("node4".into()),
            ..HostFacts::default()
        }
    }

    fn step<'a>(steps: &'a [HostStep], name: &str) -> &'a HostStep {
        steps
            .iter()
            .find(|s| s.step == name)
            .unwrap_or_else(|| panic!("no step {name}"))
    }

    fn outcome(steps: &[HostStep], name: &str) -> Outcome {
        step(steps, name).preview().outcome
    }

    #[test]
    fn prepared_host_changes_nothing() {
        let s = settings();
        let steps = plan(&s, &prepared(&s));
        for st in &steps {
            assert!(!st.changes(), "{st:?}");
            assert!(matches!(st.preview().outcome, Outcome::Ok), "{st:?}");
        }
        let names: Vec<&str> = steps.iter().map(|s| s.step).collect();
        assert_eq!(
            names,
            [
                "firewalld",
                "selinux",
                "iptables-backend",
                "iptables-rules",
                "modules",
                "modules-file",
                "sysctls",
                "sysctls-file",
                "swap",
                "hostname"
            ]
        );
    }

    #[test]
    fn firewalld_branches() {
        let mut s = settings();
        let mut f = prepared(&s);
        f.firewalld = Some(unit("loaded", "active", "enabled"));
        let st = plan(&s, &f);
        assert_eq!(step(&st, "firewalld").action, HostAction::DisableFirewalld);
        assert_eq!(outcome(&st, "firewalld"), Outcome::WouldChange);

        // Stopped but still enabled: must still be masked.
        f.firewalld = Some(unit("loaded", "inactive", "enabled"));
        assert_eq!(
            step(&plan(&s, &f), "firewalld").action,
            HostAction::DisableFirewalld
        );

        f.firewalld = Some(unit("not-found", "inactive", ""));
        let st = plan(&s, &f);
        assert_eq!(outcome(&st, "firewalld"), Outcome::Ok);
        assert!(step(&st, "firewalld").detail.contains("not installed"));

        s.host.firewalld = FirewalldPolicy::Keep;
        f.firewalld = Some(unit("loaded", "active", "enabled"));
        assert_eq!(outcome(&plan(&s, &f), "firewalld"), Outcome::Warning);

        f.firewalld = None;
        assert_eq!(outcome(&plan(&s, &f), "firewalld"), Outcome::Warning);
        f.live = false;
        assert_eq!(outcome(&plan(&s, &f), "firewalld"), Outcome::Skipped);
        f.errors.record(ProbeArea::Firewalld, "Access denied");
        let p = step(&plan(&s, &f), "firewalld").preview();
        assert_eq!(p.outcome, Outcome::Failed);
        assert!(p.remedy.is_some());
    }

    fn enforcing(f: &mut HostFacts) {
        f.selinux = Some(SelinuxFacts {
            current: SelinuxMode::Enforcing,
            configured: Some(SelinuxMode::Enforcing),
        });
        f.package_db = Some(PackageManager::Dnf);
        f.package_manager = Some(PackageManager::Dnf);
        for p in [
            "container-selinux",
            "docker-ce-selinux",
            "rancher-selinux",
            "docker-ce",
        ] {
            f.packages.insert(p.into(), None);
        }
    }

    #[test]
    fn selinux_require_names_the_exact_packages() {
        let s = settings();
        let mut f = prepared(&s);
        enforcing(&mut f);
        let p = step(&plan(&s, &f), "selinux").preview();
        assert_eq!(p.outcome, Outcome::Failed);
        let remedy = p.remedy.unwrap();
        assert!(
            remedy.contains(
                "dnf install -y --setopt=install_weak_deps=False container-selinux rancher-selinux"
            ),
            "{remedy}"
        );

        f.packages
            .insert("container-selinux".into(), Some("2:2.229.0-1.el9".into()));
        f.packages
            .insert("rancher-selinux".into(), Some("0.4-1.el9".into()));
        let p = step(&plan(&s, &f), "selinux").preview();
        assert_eq!(p.outcome, Outcome::Ok, "{p:?}");
        assert!(p.detail.contains("container-selinux 2:2.229.0-1.el9"));
    }

    #[test]
    fn selinux_install_and_ignore() {
        let mut s = settings();
        let mut f = prepared(&s);
        enforcing(&mut f);
        s.host.selinux = SelinuxPolicy::Install;
        assert_eq!(
            step(&plan(&s, &f), "selinux").action,
            HostAction::InstallPackages {
                manager: PackageManager::Dnf,
                packages: vec!["container-selinux".into(), "rancher-selinux".into()]
            }
        );
        f.live = false;
        assert_eq!(outcome(&plan(&s, &f), "selinux"), Outcome::Skipped);
        f.live = true;
        // An immutable image cannot take packages: refused in plan, not by dnf in run.
        f.usr_read_only = true;
        let p = step(&plan(&s, &f), "selinux").preview();
        assert_eq!(p.outcome, Outcome::Failed);
        assert!(p.detail.contains("read-only"), "{}", p.detail);
        f.usr_read_only = false;
        f.package_manager = None;
        assert_eq!(outcome(&plan(&s, &f), "selinux"), Outcome::Failed);
        s.host.selinux = SelinuxPolicy::Ignore;
        assert_eq!(outcome(&plan(&s, &f), "selinux"), Outcome::Warning);
        // Configured for the next boot only still needs the packages.
        f.selinux = Some(SelinuxFacts {
            current: SelinuxMode::Disabled,
            configured: Some(SelinuxMode::Permissive),
        });
        assert_eq!(outcome(&plan(&s, &f), "selinux"), Outcome::Warning);
    }

    #[test]
    fn selinux_package_rule() {
        let mut s = settings();
        let f = prepared(&s);
        let names = |s: &Settings, f: &HostFacts| -> Vec<&'static str> {
            selinux_packages(s, f).into_iter().map(|(n, _)| n).collect()
        };
        assert_eq!(names(&s, &f), ["container-selinux", "rancher-selinux"]);
        s.rancher.agent_image = "rancher/rancher-agent:v2.5.16".into();
        assert_eq!(names(&s, &f), ["container-selinux"]);
        s.rancher.agent_image = "registry.local:5000/rancher/rancher-agent".into();
        assert_eq!(names(&s, &f), ["container-selinux", "rancher-selinux"]);
        s.rancher.mode = RegistrationMode::SystemAgent;
        assert_eq!(names(&s, &f), ["container-selinux"]);
        s.runtime.version = Some("17.03".into());
        assert_eq!(names(&s, &f), ["docker-ce-selinux"]);
        s.runtime.version = Some(">=17.03".into());
        assert_eq!(names(&s, &f), ["container-selinux"]);
        s.runtime.version = None;
        let mut f2 = f.clone();
        f2.packages
            .insert("docker-ce".into(), Some("17.03.2.ce-1.el7.centos".into()));
        assert_eq!(names(&s, &f2), ["docker-ce-selinux"]);
        f2.packages
            .insert("docker-ce".into(), Some("3:24.0.7-1.el8".into()));
        assert_eq!(names(&s, &f2), ["container-selinux"]);
        s.runtime.engine = Engine::Containerd;
        s.runtime.version = Some("17.03".into());
        assert_eq!(names(&s, &f), ["container-selinux"]);
    }

    #[test]
    fn iptables_branches() {
        let mut s = settings();
        let mut f = prepared(&s);
        s.host.iptables_backend = IptablesBackend::Legacy;
        assert_eq!(
            step(&plan(&s, &f), "iptables-backend").action,
            HostAction::SetIptablesBackend {
                backend: Backend::Legacy,
                tool: "update-alternatives".into()
            }
        );
        s.host.iptables_backend = IptablesBackend::Nft;
        assert_eq!(outcome(&plan(&s, &f), "iptables-backend"), Outcome::Ok);

        f.iptables.backend = Some(Backend::Legacy);
        f.iptables.binaries.retain(|b| !b.ends_with("-nft"));
        assert_eq!(outcome(&plan(&s, &f), "iptables-backend"), Outcome::Failed);

        f.iptables.legacy_rules = Some(3);
        let p = step(&plan(&s, &f), "iptables-rules").preview();
        assert_eq!(p.outcome, Outcome::Warning);
        assert!(p.detail.contains("34604"));
        f.iptables.nft_rules = None;
        assert_eq!(outcome(&plan(&s, &f), "iptables-rules"), Outcome::Skipped);

        f.iptables.binaries.clear();
        assert_eq!(outcome(&plan(&s, &f), "iptables-backend"), Outcome::Failed);
    }

    #[test]
    fn modules_and_sysctls() {
        let mut s = settings();
        s.host.modules = vec!["ip_vs".into(), "br-netfilter".into()];
        s.host
            .sysctls
            .insert("vm.max_map_count".into(), "262144".into());
        let mut f = prepared(&s);
        assert!(plan(&s, &f).iter().all(|st| !st.changes()));

        f.modules_loaded.remove("br_netfilter");
        f.sysctls
            .insert("net.bridge.bridge-nf-call-iptables".into(), None);
        f.sysctls
            .insert("vm.max_map_count".into(), Some("65530".into()));
        f.modules_conf = Some("br_netfilter\n".into());
        let st = plan(&s, &f);
        assert_eq!(
            step(&st, "modules").action,
            HostAction::LoadModules {
                modules: vec!["br_netfilter".into()]
            }
        );
        // br-netfilter is the same module: listed once.
        match &step(&st, "modules-file").action {
            HostAction::WriteFile { path, content } => {
                assert_eq!(path, MODULES_CONF);
                assert_eq!(content.matches("br_netfilter").count(), 1);
                assert!(content.ends_with("ip_vs\n"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            step(&st, "sysctls").action,
            HostAction::SetSysctls {
                values: vec![
                    ("net.bridge.bridge-nf-call-iptables".into(), "1".into()),
                    ("vm.max_map_count".into(), "262144".into())
                ]
            }
        );
        // Without a kernel to load br_netfilter into, the bridge key cannot appear.
        f.live = false;
        let st = plan(&s, &f);
        assert_eq!(outcome(&st, "modules"), Outcome::Skipped);
        assert_eq!(outcome(&st, "sysctls"), Outcome::Failed);

        s.host.modules = vec!["-v".into()];
        assert_eq!(outcome(&plan(&s, &f), "modules"), Outcome::Failed);
        s.host.sysctls.insert("../../etc/passwd".into(), "x".into());
        assert_eq!(outcome(&plan(&s, &f), "sysctls"), Outcome::Failed);
    }

    #[test]
    fn userdata_sysctl_wins_over_required() {
        let mut s = settings();
        s.host
            .sysctls
            .insert("net.ipv4.ip_forward".into(), "0".into());
        assert_eq!(wanted_sysctls(&s)["net.ipv4.ip_forward"], "0");
    }

    #[test]
    fn swap_branches() {
        let mut s = settings();
        let mut f = prepared(&s);
        f.swaps = vec![SwapEntry {
            path: "/dev/vda2".into(),
            kind: "partition".into(),
        }];
        f.fstab = Some("/dev/vda2 none swap sw 0 0\n".into());
        assert_eq!(outcome(&plan(&s, &f), "swap"), Outcome::Warning);
        s.roles = vec![Role::Etcd, Role::Controlplane];
        assert_eq!(outcome(&plan(&s, &f), "swap"), Outcome::Ok);
        s.host.swap = SwapPolicy::Off;
        assert_eq!(
            step(&plan(&s, &f), "swap").action,
            HostAction::SwapOff {
                devices: vec!["/dev/vda2".into()],
                fstab_lines: vec![1]
            }
        );
        // Off now but still in fstab: the next boot would turn it on again.
        f.swaps.clear();
        assert!(step(&plan(&s, &f), "swap").changes());
        f.fstab = Some("#/dev/vda2 none swap sw 0 0\n".into());
        assert_eq!(outcome(&plan(&s, &f), "swap"), Outcome::Ok);
    }

    #[test]
    fn hostname_branches() {
        let mut s = settings();
        let mut f = prepared(&s);
        f.hostname = Some("localhost".into());
        assert_eq!(outcome(&plan(&s, &f), "hostname"), Outcome::Warning);
        s.rancher.node_name = Some("worker-1".into());
        assert_eq!(outcome(&plan(&s, &f), "hostname"), Outcome::Ok);
    }
}
