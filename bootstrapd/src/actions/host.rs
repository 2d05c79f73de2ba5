//! Carries out host preparation steps: the only code here that changes the host.
//!
//! Each action re-reads what it changes and reports `changed` only once it has confirmed
//! the new state; anything else is `failed` with a one-line remedy.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::actions::{StepFailure, StepResult, identity, trust};
use crate::facts::host::{FIREWALLD_UNIT, FSTAB};
use crate::facts::iptables::Backend;
use crate::facts::kernel::{self, fstab_swap_lines, sysctl_eq, sysctl_path};
use crate::fsutil::{HostRoot, write_atomic};
use crate::plan::host::{HostAction, HostStep};
use crate::plan::{Finding, Outcome};
use crate::system::packages::{self, PackageManager};
use crate::system::systemd::{Systemd, path_unit_name};
use crate::userdata::ProxySettings;

const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// Marker put in front of the fstab swap lines we disable, so a human sees who did it.
pub const FSTAB_MARK: &str = "# disabled by bootstrapd (host.swap: off): ";

/// One step applied; a report step only reports.
pub(crate) async fn apply_one(target: crate::actions::Target<'_>, step: &HostStep) -> Finding {
    let (root, systemd) = (target.root, target.systemd);
    let s = step.step;
    let result = match &step.action {
        HostAction::Report { .. } => return step.preview(),
        HostAction::DisableFirewalld => disable_firewalld(systemd).await,
        HostAction::InstallPackages { manager, packages } => {
            install_packages(root, *manager, packages, target.proxy).await
        }
        HostAction::SetIptablesBackend { backend, tool } => {
            set_iptables_backend(root, *backend, tool).await
        }
        HostAction::LoadModules { modules } => load_modules(root, modules).await,
        HostAction::WriteFile { path, content } => {
            let p = root.path(path);
            write_atomic(&p, content.as_bytes(), 0o644)
                .map(|()| format!("wrote {path}"))
                .map_err(|e| {
                    StepFailure::new(
                        format!("cannot write {}: {e}", p.display()),
                        "check that the file system is writable".to_string(),
                    )
                })
        }
        HostAction::SetSysctls { values } => set_sysctls(root, values),
        HostAction::SwapOff { devices, .. } => swap_off(root, systemd, devices).await,
        HostAction::SetHostname { name } => identity::set_hostname(root, systemd, name).await,
        HostAction::CreateUser { user } => identity::create_user(root, user).await,
        HostAction::AuthorizedKeys { user, keys } => {
            identity::authorized_keys(root, user, keys).await
        }
        HostAction::TrustedCa(change) => trust::apply(root, change).await,
        HostAction::RestartUnit { unit } => trust::restart_unit(systemd, unit).await,
    };
    match result {
        Ok(detail) => Finding::new(s, Outcome::Changed, detail),
        Err(failure) => failure.finding(s),
    }
}

async fn disable_firewalld(systemd: Option<&Systemd>) -> StepResult {
    let Some(sd) = systemd else {
        return Err(StepFailure::new(
            "systemd is not reachable over D-Bus".into(),
            "run bootstrapd under systemd with the system bus up".into(),
        ));
    };
    let fail = |what: &str, e: crate::system::systemd::SystemdError| {
        StepFailure::new(
            format!("{what} firewalld.service: {e}"),
            "check `journalctl -u firewalld` and the D-Bus policy for root".to_string(),
        )
    };
    sd.stop_and_wait(FIREWALLD_UNIT)
        .await
        .map_err(|e| fail("stopping", e))?;
    sd.disable(&[FIREWALLD_UNIT])
        .await
        .map_err(|e| fail("disabling", e))?;
    sd.mask(&[FIREWALLD_UNIT])
        .await
        .map_err(|e| fail("masking", e))?;
    sd.reload()
        .await
        .map_err(|e| fail("reloading systemd after masking", e))?;
    let st = sd
        .unit_state(FIREWALLD_UNIT)
        .await
        .map_err(|e| fail("reading", e))?;
    if st.is_active() || !st.is_masked() {
        return Err(StepFailure::new(
            format!("firewalld.service is still not stopped and masked after the change [{st}]"),
            "look for another unit pulling firewalld in (systemctl list-dependencies --reverse firewalld)".into(),
        ));
    }
    Ok(format!("firewalld stopped, disabled and masked [{st}]"))
}

async fn install_packages(
    root: &HostRoot,
    manager: PackageManager,
    names: &[String],
    proxy: &ProxySettings,
) -> StepResult {
    // Untranslated output comes from the process runner itself (C locale for every child).
    let spec = packages::proxied(packages::install_command(manager, names), proxy);
    let db = if manager == PackageManager::Apt {
        PackageManager::Apt
    } else {
        PackageManager::Dnf
    };
    let got = packages::install_and_verify(root, db, &spec, names).await?;
    Ok(format!("installed {}", got.join(", ")))
}

async fn set_iptables_backend(root: &HostRoot, backend: Backend, tool: &str) -> StepResult {
    let mut done = Vec::new();
    for name in ["iptables", "ip6tables"] {
        let link = root.path(format!("/etc/alternatives/{name}"));
        if name == "ip6tables" && std::fs::symlink_metadata(&link).is_err() {
            continue; // no ip6tables alternative registered: nothing to switch
        }
        let target = format!("/usr/sbin/{name}-{}", backend.as_str());
        let root_arg = root.path("/").to_string_lossy().into_owned();
        let mut args: Vec<&str> = Vec::new();
        if !root.is_live() {
            // update-alternatives (dpkg >= 1.20) resolves the admin and link dirs below --root.
            args.extend(["--root", root_arg.as_str()]);
        }
        args.extend(["--set", name, target.as_str()]);
        let out = crate::facts::run_tool(tool, &args, TOOL_TIMEOUT)
            .await
            .map_err(|e| {
                StepFailure::new(
                    e.to_string(),
                    format!("run `{tool} --set {name} {target}` by hand"),
                )
            })?;
        if !out.status.success() {
            return Err(StepFailure::new(
                format!(
                    "{tool} --set {name} {target} failed: {}",
                    crate::facts::last_line(&out.stderr)
                ),
                format!("check `{tool} --display {name}`"),
            ));
        }
        let now = std::fs::read_link(&link)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if now != target {
            return Err(StepFailure::new(
                format!("{name} points at {now:?} after switching, not {target}"),
                format!("check `{tool} --display {name}`"),
            ));
        }
        done.push(format!("{name} -> {target}"));
    }
    Ok(format!("switched {}", done.join(", ")))
}

async fn load_modules(root: &HostRoot, modules: &[String]) -> StepResult {
    if !root.is_live() {
        return Err(StepFailure::new(
            "cannot load kernel modules into a --root tree".into(),
            "run without --root on the node itself".into(),
        ));
    }
    // modprobe, not finit_module(2): it resolves aliases and dependencies (br_netfilter needs
    // bridge) from modules.dep, which a raw syscall would have to reimplement. All modules in
    // one `modprobe -a` (a process costs 0.1-0.2 s under TCG); only when that fails, one call
    // per module, so that the error names each module that failed.
    let mut all = vec!["-a", "--"];
    all.extend(modules.iter().map(String::as_str));
    let together = crate::facts::run_tool("modprobe", &all, TOOL_TIMEOUT).await;
    let mut errors = Vec::new();
    if !together.is_ok_and(|o| o.status.success()) {
        for m in modules {
            match crate::facts::run_tool("modprobe", &["--", m], TOOL_TIMEOUT).await {
                Ok(o) if o.status.success() => {}
                Ok(o) => errors.push(format!("{m}: {}", crate::facts::last_line(&o.stderr))),
                Err(e) => errors.push(format!("{m}: {e}")),
            }
        }
    }
    let loaded = kernel::loaded_modules(root)
        .map_err(|e| StepFailure::new(e.to_string(), "check /proc/modules".into()))?;
    let missing: Vec<&String> = modules
        .iter()
        .filter(|m| !loaded.contains(&kernel::normalize_module(m)))
        .collect();
    if !missing.is_empty() {
        return Err(StepFailure::new(
            format!("not loaded: {missing:?} ({})", errors.join("; ")),
            "install the kernel's extra modules package (e.g. linux-modules-extra) or remove the module from host.modules".into(),
        ));
    }
    Ok(format!("loaded {}", modules.join(" ")))
}

fn set_sysctls(root: &HostRoot, values: &[(String, String)]) -> StepResult {
    let mut set = Vec::new();
    for (k, v) in values {
        let Some(p) = sysctl_path(k) else {
            return Err(StepFailure::new(
                format!("invalid sysctl name {k:?}"),
                "fix host.sysctls".into(),
            ));
        };
        let p = root.path(p);
        match std::fs::read_to_string(&p) {
            Ok(cur) if sysctl_eq(&cur, v) => continue,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StepFailure::new(
                    format!("no such sysctl {k} ({} missing)", p.display()),
                    "load the module that provides it (br_netfilter for net.bridge.*)".into(),
                ));
            }
            Err(e) => {
                return Err(StepFailure::new(
                    format!("cannot read {}: {e}", p.display()),
                    "check /proc/sys".into(),
                ));
            }
        }
        // /proc/sys files take a plain write; a rename-based atomic write is impossible there.
        std::fs::write(&p, format!("{v}\n")).map_err(|e| {
            StepFailure::new(
                format!("cannot set {k}={v}: {e}"),
                "check that /proc/sys is writable (not a read-only container)".into(),
            )
        })?;
        let now = std::fs::read_to_string(&p).unwrap_or_default();
        if !sysctl_eq(&now, v) {
            return Err(StepFailure::new(
                format!("{k} reads {:?} after writing {v:?}", now.trim()),
                "the kernel rejected the value".into(),
            ));
        }
        set.push(format!("{k}={v}"));
    }
    Ok(if set.is_empty() {
        "already set".into()
    } else {
        format!("set {}", set.join(" "))
    })
}

/// /etc/fstab with every active swap line commented out (with our marker); None when there
/// is nothing to change.
pub fn disable_fstab_swap(text: &str) -> Option<String> {
    let lines: Vec<usize> = fstab_swap_lines(text).into_iter().map(|(n, _)| n).collect();
    if lines.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len() + lines.len() * FSTAB_MARK.len());
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if lines.contains(&(i + 1)) {
            out.push_str(FSTAB_MARK);
        }
        out.push_str(l);
    }
    Some(out)
}

/// Unit names systemd gives the swap entries: fstab's UUID=/LABEL= forms map to their
/// /dev/disk/by-* paths, as systemd-fstab-generator names them.
fn swap_unit_names(devices: &[String], fstab: Option<&str>) -> Vec<String> {
    let mut paths: Vec<String> = devices.to_vec();
    for (_, dev) in fstab.map(fstab_swap_lines).unwrap_or_default() {
        let p = if let Some(u) = dev.strip_prefix("UUID=") {
            format!("/dev/disk/by-uuid/{u}")
        } else if let Some(l) = dev.strip_prefix("LABEL=") {
            format!("/dev/disk/by-label/{l}")
        } else if let Some(u) = dev.strip_prefix("PARTUUID=") {
            format!("/dev/disk/by-partuuid/{u}")
        } else {
            dev
        };
        paths.push(p);
    }
    let mut names: Vec<String> = paths.iter().map(|p| path_unit_name(p, "swap")).collect();
    names.sort();
    names.dedup();
    names
}

/// Swap off now (live host only), kept off at the next boot (swap units masked, fstab's
/// swap lines commented out), then checked.
async fn swap_off(root: &HostRoot, systemd: Option<&Systemd>, devices: &[String]) -> StepResult {
    let mut did = Vec::new();
    let mut notes = Vec::new();
    if root.is_live() {
        for d in devices {
            swapoff(d)?;
            did.push(format!("swapoff {d}"));
        }
    } else if !devices.is_empty() {
        notes.push("swapoff not called for a --root tree".to_string());
    }
    let fstab_path = root.path(FSTAB);
    let fstab = match std::fs::read_to_string(&fstab_path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(StepFailure::new(
                format!("cannot read {}: {e}", fstab_path.display()),
                "check /etc/fstab".into(),
            ));
        }
    };
    // Masking covers swap that systemd activates on its own (gpt-auto partitions, .swap
    // units); fstab is edited too, since a masked name for /dev/sda2 does not match the
    // unit generated for UUID=... and other init setups read fstab directly.
    let units = swap_unit_names(devices, fstab.as_deref());
    match systemd {
        Some(sd) if !units.is_empty() => did.push(mask_swap_units(sd, &units).await?),
        None if !units.is_empty() => notes.push(format!(
            "systemd not reachable: {} not masked",
            units.join(" ")
        )),
        _ => {}
    }
    if let Some(new) = fstab.as_deref().and_then(disable_fstab_swap) {
        rewrite_fstab(&fstab_path, &new)?;
        did.push("commented out the swap entries in /etc/fstab".into());
    }
    check_swap_off(root)?;
    did.extend(notes);
    Ok(did.join("; "))
}

fn swapoff(device: &str) -> StepResult<()> {
    let c = CString::new(device).map_err(|_| {
        StepFailure::new(
            format!("swap path {device:?} contains NUL"),
            "check /proc/swaps".into(),
        )
    })?;
    // SAFETY: c is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::swapoff(c.as_ptr()) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(StepFailure::new(
            format!("swapoff {device}: {e}"),
            "free memory so the swapped pages fit in RAM, then retry".into(),
        ));
    }
    Ok(())
}

async fn mask_swap_units(sd: &Systemd, units: &[String]) -> StepResult {
    let names: Vec<&str> = units.iter().map(String::as_str).collect();
    sd.mask(&names).await.map_err(|e| {
        StepFailure::new(
            format!("masking {}: {e}", units.join(" ")),
            "check the D-Bus connection to systemd".into(),
        )
    })?;
    sd.reload().await.map_err(|e| {
        StepFailure::new(
            format!("reloading systemd: {e}"),
            "check the D-Bus connection to systemd".into(),
        )
    })?;
    Ok(format!("masked {}", units.join(" ")))
}

/// Writes the edited fstab with the mode the old one had.
fn rewrite_fstab(path: &std::path::Path, text: &str) -> StepResult<()> {
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    write_atomic(path, text.as_bytes(), mode).map_err(|e| {
        StepFailure::new(
            format!("cannot write {}: {e}", path.display()),
            "check that /etc is writable".into(),
        )
    })
}

/// On the live host no swap may remain active.
fn check_swap_off(root: &HostRoot) -> StepResult<()> {
    let still = kernel::active_swaps(root)
        .map_err(|e| StepFailure::new(e.to_string(), "check /proc/swaps".into()))?;
    if root.is_live() && !still.is_empty() {
        let paths: Vec<&str> = still.iter().map(|s| s.path.as_str()).collect();
        return Err(StepFailure::new(
            format!("swap still active: {}", paths.join(" ")),
            "run swapoff -a and check what re-enables swap (zram generators, swap units)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_swap_lines_get_commented_once() {
        let t = "UUID=aa / ext4 defaults 0 1\nUUID=cc-dd none swap sw 0 0\n/swapfile none swap sw 0 0\n";
        let new = disable_fstab_swap(t).unwrap();
        assert_eq!(
            new,
            format!(
                "UUID=aa / ext4 defaults 0 1\n{FSTAB_MARK}UUID=cc-dd none swap sw 0 0\n{FSTAB_MARK}/swapfile none swap sw 0 0\n"
            )
        );
        assert_eq!(disable_fstab_swap(&new), None, "second run changes nothing");
    }

    #[test]
    fn swap_units_from_proc_and_fstab() {
        let names = swap_unit_names(
            &["/dev/vda2".to_string()],
            Some("UUID=1b2c-3d none swap sw 0 0\n/dev/vda2 none swap sw 0 0\n"),
        );
        assert_eq!(
            names,
            vec!["dev-disk-by\\x2duuid-1b2c\\x2d3d.swap", "dev-vda2.swap"]
        );
    }
}
