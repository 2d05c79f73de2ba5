//! The units as shipped: `systemd-analyze verify` finds no error and no ordering cycle,
//! with a firewalld unit ordered as firewalld's own (Before=network-pre.target, default
//! dependencies) enabled beside them: the cycle of firewalld issues 414 and 946. The early
//! host step sits between dbus.service and firewalld.service.

use std::path::{Path, PathBuf};
use std::process::Command;

/// firewalld's [Unit] ordering (firewalld/config/firewalld.service.in); the service itself is
/// a stand-in that exists on any machine.
const FIREWALLD: &str = "[Unit]
Description=firewalld stand-in with firewalld's ordering
Before=network-pre.target
Wants=network-pre.target
After=dbus.service
After=polkit.service

[Service]
Type=oneshot
ExecStart=/bin/true

[Install]
WantedBy=multi-user.target
";

/// A unit from configs/ with ExecStart pointed at the built binary (verify checks that the
/// command exists).
fn shipped(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("ExecStart=/usr/bin/bootstrapd "), "{name}");
    text.replace("/usr/bin/bootstrapd", env!("CARGO_BIN_EXE_bootstrapd"))
}

/// systemd-analyze, when it and the networkd units the cycle goes through are installed.
fn analyze() -> Option<PathBuf> {
    let path = Path::new("/usr/bin/systemd-analyze");
    let networkd = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .iter()
        .any(|d| Path::new(d).join("systemd-networkd.service").exists());
    if path.exists() && networkd {
        Some(path.to_path_buf())
    } else {
        eprintln!("systemd-analyze or systemd-networkd is not installed: verification skipped");
        None
    }
}

/// What a boot with every unit enabled starts: verify builds a start transaction for the unit
/// it is given, so a target that wants them all puts them in one transaction, where an
/// ordering cycle shows (networkd and wait-online come from the system's unit directories).
const BOOT: &str = "[Unit]
Description=a boot with bootstrapd, its local stage, firewalld and networkd enabled
Wants=bootstrapd-local.service bootstrapd-local-host.service bootstrapd.service firewalld.service
Wants=systemd-networkd.service systemd-networkd-wait-online.service network-online.target
";

/// `systemd-analyze verify` of the boot target with `local_unit` as bootstrapd-local.service:
/// its success and the lines it printed about our units or cycles.
fn verify(analyze: &Path, local_unit: &str) -> (bool, Vec<String>, String) {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join("bootstrapd-local.service"), local_unit).unwrap();
    std::fs::write(
        dir.join("bootstrapd-local-host.service"),
        shipped("bootstrapd-local-host.service"),
    )
    .unwrap();
    std::fs::write(
        dir.join("bootstrapd.service"),
        shipped("bootstrapd.service"),
    )
    .unwrap();
    std::fs::write(dir.join("firewalld.service"), FIREWALLD).unwrap();
    std::fs::write(dir.join("test-boot.target"), BOOT).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg("--man=no")
        .arg(dir.join("test-boot.target"))
        // The trailing `:` keeps the system's unit directories after ours.
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let ours = stderr
        .lines()
        .filter(|l| l.contains("bootstrapd") || l.contains("firewalld") || l.contains("cycle"))
        .map(str::to_string)
        .collect();
    (out.status.success(), ours, stderr)
}

#[test]
fn units_verify_without_errors_or_ordering_cycles() {
    let Some(analyze) = analyze() else { return };
    let (ok, ours, stderr) = verify(&analyze, &shipped("bootstrapd-local.service"));
    assert!(ok && ours.is_empty(), "systemd-analyze verify:\n{stderr}");
    // The check sees a cycle when there is one: the local stage ordered after the network.
    let cyclic = shipped("bootstrapd-local.service").replace(
        "After=local-fs.target",
        "After=network-online.target local-fs.target",
    );
    let (_, ours, stderr) = verify(&analyze, &cyclic);
    assert!(
        ours.iter().any(|l| l.contains("ordering cycle")),
        "no cycle reported:\n{stderr}"
    );
}

#[test]
fn the_local_unit_is_ordered_before_the_network_and_never_after_it() {
    let unit = shipped("bootstrapd-local.service");
    let lines: Vec<&str> = unit.lines().filter(|l| !l.starts_with('#')).collect();
    let has = |l: &str| lines.contains(&l);
    assert!(has("DefaultDependencies=no"), "{unit}");
    assert!(has("Wants=network-pre.target"), "{unit}");
    assert!(
        has("Before=network-pre.target systemd-networkd.service"),
        "{unit}"
    );
    assert!(has("Type=oneshot"), "{unit}");
    for l in &lines {
        if let Some(after) = l.strip_prefix("After=") {
            assert!(!after.contains("network"), "ordered after the network: {l}");
            assert!(!after.contains("firewalld"), "{l}");
            assert!(
                !after.contains("basic.target") && !after.contains("sysinit.target"),
                "{l}"
            );
        }
        assert!(!l.starts_with("Before=sysinit.target"), "{l}");
    }
}

#[test]
fn the_host_step_runs_on_the_bus_and_before_firewalld() {
    let unit = shipped("bootstrapd-local-host.service");
    let lines: Vec<&str> = unit.lines().filter(|l| !l.starts_with('#')).collect();
    let has = |l: &str| lines.contains(&l);
    // firewalld's start job waits for it, which may mask firewalld first (cli/local_host.rs).
    assert!(has("Before=firewalld.service"), "{unit}");
    assert!(has("After=dbus.service bootstrapd-local.service"), "{unit}");
    assert!(has("Type=oneshot"), "{unit}");
    assert!(
        !has("DefaultDependencies=no"),
        "the bus comes after basic.target: {unit}"
    );
    for l in &lines {
        if let Some(after) = l.strip_prefix("After=") {
            assert!(!after.contains("network"), "ordered after the network: {l}");
            assert!(!after.contains("firewalld"), "{l}");
        }
    }
}
