//! Host facts gathered from real file trees under --root: a /proc- and /sys-like tree, a dpkg
//! database written by the real dpkg and an rpm database written by the real rpm tools.

mod common;

use common::SettingsBuilder;

use std::fs;
use std::path::Path;
use std::process::Command;

use bootstrapd::facts::host::gather;
use bootstrapd::facts::iptables::Backend;
use bootstrapd::facts::selinux::SelinuxMode;
use bootstrapd::fsutil::HostRoot;
use bootstrapd::plan::Outcome;
use bootstrapd::plan::prepare::plan;
use bootstrapd::system::packages::PackageManager;
use bootstrapd::userdata::*;

fn settings() -> Settings {
    SettingsBuilder::rke1("https://rancher.example").build()
}

fn write(root: &Path, path: &str, content: &str) {
    let p = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?} (scripts/install-deps.sh installs it): {e}")
    });
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A /proc and /sys as a booted, SELinux-enforcing node shows them.
fn kernel_tree(root: &Path) {
    write(
        root,
        "/proc/modules",
        "overlay 163840 0 - Live 0x0000000000000000\n\
         nf_conntrack 172032 0 - Live 0x0000000000000000\n",
    );
    write(root, "/proc/sys/kernel/osrelease", "6.1.0-28-amd64\n");
    write(
        root,
        "/lib/modules/6.1.0-28-amd64/modules.builtin",
        "kernel/net/ipv4/netfilter/iptable_filter.ko\n",
    );
    fs::create_dir_all(root.join("sys/module/iptable_nat")).unwrap();
    write(root, "/proc/sys/net/ipv4/ip_forward", "0\n");
    write(root, "/proc/sys/net/ipv4/conf/all/forwarding", "0\n");
    write(
        root,
        "/proc/swaps",
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/vda2 partition\t1046524\t0\t-2\n",
    );
    write(
        root,
        "/etc/fstab",
        "UUID=aa / ext4 defaults 0 1\n/dev/vda2 none swap sw 0 0\n",
    );
    write(root, "/sys/fs/selinux/enforce", "1");
    write(
        root,
        "/etc/selinux/config",
        "SELINUX=enforcing\nSELINUXTYPE=targeted\n",
    );
    write(root, "/proc/sys/kernel/hostname", "localhost\n");
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn dpkg_tree_facts_and_plan() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    kernel_tree(&root);
    // A real dpkg database with container-selinux installed by dpkg itself.
    for dir in ["var/lib/dpkg/updates", "var/lib/dpkg/info"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    let pkg = d.path().join("pkg");
    write(
        &pkg,
        "/DEBIAN/control",
        "Package: container-selinux\nVersion: 2.229.0-1\nArchitecture: all\n\
         Maintainer: Test <test@example.invalid>\nDescription: test package\n",
    );
    let deb = d.path().join("container-selinux.deb");
    run(Command::new("dpkg-deb")
        .arg("--root-owner-group")
        .arg("--build")
        .arg(&pkg)
        .arg(&deb));
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .arg("-i")
        .arg(&deb));
    write(&root, "/usr/bin/apt-get", "");
    // Debian's iptables layout: the alternatives link points at the nft variant.
    write(&root, "/usr/sbin/iptables-nft", "");
    write(&root, "/usr/sbin/iptables-legacy", "");
    fs::create_dir_all(root.join("etc/alternatives")).unwrap();
    std::os::unix::fs::symlink(
        "/usr/sbin/iptables-nft",
        root.join("etc/alternatives/iptables"),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/alternatives/iptables", root.join("usr/sbin/iptables"))
        .unwrap();

    let host = HostRoot::new(Some(root.clone()));
    let s = settings();
    let f = block_on(gather(&host, &s, None));
    assert!(f.errors.is_empty(), "{:?}", f.errors);
    assert!(!f.live);
    let se = f.selinux.as_ref().unwrap();
    assert_eq!(se.current, SelinuxMode::Enforcing);
    assert_eq!(f.package_db, Some(PackageManager::Apt));
    assert_eq!(f.package_manager, Some(PackageManager::Apt));
    assert_eq!(
        f.packages.get("container-selinux"),
        Some(&Some("2.229.0-1".to_string()))
    );
    assert_eq!(f.packages.get("rancher-selinux"), Some(&None));
    for m in ["overlay", "nf_conntrack", "iptable_filter", "iptable_nat"] {
        assert!(f.modules_loaded.contains(m), "{m}");
    }
    assert!(!f.modules_loaded.contains("br_netfilter"));
    assert_eq!(
        f.sysctls.get("net.ipv4.ip_forward"),
        Some(&Some("0".to_string()))
    );
    assert_eq!(
        f.sysctls.get("net.bridge.bridge-nf-call-iptables"),
        Some(&None)
    );
    assert_eq!(f.swaps.len(), 1);
    assert_eq!(f.iptables.backend, Some(Backend::Nft));
    assert_eq!(f.hostname.as_deref(), Some("localhost"));

    let steps = plan(&s, &f);
    let find = |n: &str| steps.iter().find(|s| s.step == n).unwrap().preview();
    let se = find("selinux");
    assert_eq!(se.outcome, Outcome::Failed);
    let remedy = se.remedy.unwrap();
    assert!(
        remedy.contains("apt-get install") && remedy.contains("rancher-selinux"),
        "{remedy}"
    );
    assert!(
        !remedy.contains("container-selinux"),
        "installed already: {remedy}"
    );
    assert_eq!(find("firewalld").outcome, Outcome::Skipped);
    assert_eq!(find("modules").outcome, Outcome::Skipped);
    // The bridge key cannot appear in a tree without a kernel: reported, with its remedy.
    assert_eq!(find("sysctls").outcome, Outcome::Failed);
    assert!(
        find("sysctls")
            .detail
            .contains("net.bridge.bridge-nf-call-iptables")
    );
    assert_eq!(find("swap").outcome, Outcome::Warning);
    assert_eq!(find("hostname").outcome, Outcome::Warning);
    assert_eq!(find("modules-file").outcome, Outcome::WouldChange);
}

#[test]
fn rpm_tree_facts() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    kernel_tree(&root);
    let top = d.path().join("rpmbuild");
    let spec = d.path().join("container-selinux.spec");
    fs::write(
        &spec,
        "Name: container-selinux\nVersion: 2.229.0\nRelease: 1.el9\nEpoch: 3\n\
         Summary: test package\nLicense: MIT\nBuildArch: noarch\n\
         %description\ntest package\n%files\n",
    )
    .unwrap();
    run(Command::new("rpmbuild")
        .arg("-bb")
        .arg("--quiet")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .arg(&spec));
    let rpm_file = top.join("RPMS/noarch/container-selinux-2.229.0-1.el9.noarch.rpm");
    fs::create_dir_all(root.join("var/lib/rpm")).unwrap();
    run(Command::new("rpm").arg("--root").arg(&root).args([
        "--dbpath",
        "/var/lib/rpm",
        "--initdb",
    ]));
    run(Command::new("rpm")
        .arg("--root")
        .arg(&root)
        .args([
            "--dbpath",
            "/var/lib/rpm",
            "-i",
            "--nodeps",
            "--nosignature",
        ])
        .arg(&rpm_file));
    // Debian's rpm looks for its database in ~/.rpmdb; RHEL's in /var/lib/rpm. Point the
    // former at the latter so the unmodified `rpm --root ROOT -q` finds it here too.
    fs::create_dir_all(root.join("root")).unwrap();
    std::os::unix::fs::symlink("../var/lib/rpm", root.join("root/.rpmdb")).unwrap();
    write(&root, "/usr/bin/dnf", "");

    let host = HostRoot::new(Some(root));
    let mut s = settings();
    s.host.selinux = SelinuxPolicy::Install;
    let f = block_on(gather(&host, &s, None));
    assert!(f.errors.is_empty(), "{:?}", f.errors);
    assert_eq!(f.package_db, Some(PackageManager::Dnf));
    assert_eq!(f.package_manager, Some(PackageManager::Dnf));
    assert_eq!(
        f.packages.get("container-selinux"),
        Some(&Some("3:2.229.0-1.el9".to_string()))
    );
    assert_eq!(f.packages.get("rancher-selinux"), Some(&None));
    let steps = plan(&s, &f);
    let se = steps
        .iter()
        .find(|s| s.step == "selinux")
        .unwrap()
        .preview();
    // install policy, but a --root tree is never installed into.
    assert_eq!(se.outcome, Outcome::Skipped);
    assert!(se.detail.contains("rancher-selinux"), "{}", se.detail);
}
