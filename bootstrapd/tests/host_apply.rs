//! Host preparation applied to a --root tree: files written atomically, /proc/sys values
//! set, fstab swap lines disabled, the iptables alternative switched by the real
//! update-alternatives; then a second run must change nothing and say so.

mod common;

use common::SettingsBuilder;

use std::fs;
use std::path::Path;
use std::process::Command;

use bootstrapd::actions::host::FSTAB_MARK;
use bootstrapd::actions::{Target, apply_all};
use bootstrapd::facts::host::{MODULES_CONF, SYSCTL_CONF, gather};
use bootstrapd::fsutil::HostRoot;
use bootstrapd::plan::Outcome;
use bootstrapd::plan::prepare::plan;
use bootstrapd::userdata::*;

fn settings() -> Settings {
    let mut host = HostSettings {
        swap: SwapPolicy::Off,
        iptables_backend: IptablesBackend::Legacy,
        modules: vec!["ip_vs".into()],
        ..HostSettings::default()
    };
    host.sysctls
        .insert("vm.max_map_count".into(), "262144".into());
    SettingsBuilder::rke1("https://rancher.example")
        .roles(&[Role::Etcd, Role::Controlplane, Role::Worker])
        .node_name("node1")
        .host(host)
        .build()
}

fn write(root: &Path, path: &str, content: &str) {
    let p = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

fn read(root: &Path, path: &str) -> String {
    fs::read_to_string(root.join(path.trim_start_matches('/'))).unwrap()
}

fn update_alternatives(root: &Path, args: &[&str]) {
    let out = Command::new("update-alternatives")
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("update-alternatives (dpkg) must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A node image as booted: modules loaded, forwarding off, a swap line in fstab, iptables
/// on the nft alternative (as Debian installs it).
fn tree(root: &Path) {
    let mut modules = String::new();
    for m in [
        "br_netfilter",
        "overlay",
        "iptable_nat",
        "iptable_filter",
        "nf_conntrack",
        "ip_vs",
    ] {
        modules.push_str(&format!("{m} 32768 0 - Live 0x0000000000000000\n"));
    }
    write(root, "/proc/modules", &modules);
    write(root, "/proc/sys/net/bridge/bridge-nf-call-iptables", "0\n");
    write(root, "/proc/sys/net/ipv4/ip_forward", "0\n");
    write(root, "/proc/sys/net/ipv4/conf/all/forwarding", "0\n");
    write(root, "/proc/sys/vm/max_map_count", "65530\n");
    write(
        root,
        "/proc/swaps",
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
    );
    write(
        root,
        "/etc/fstab",
        "UUID=aa / ext4 errors=remount-ro 0 1\nUUID=cc-dd none swap sw 0 0\n",
    );
    fs::set_permissions(
        root.join("etc/fstab"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    write(root, "/proc/sys/kernel/hostname", "node1\n");
    for b in [
        "iptables-nft",
        "iptables-legacy",
        "ip6tables-nft",
        "ip6tables-legacy",
    ] {
        write(root, &format!("/usr/sbin/{b}"), "");
    }
    fs::create_dir_all(root.join("etc/alternatives")).unwrap();
    fs::create_dir_all(root.join("var/lib/dpkg/alternatives")).unwrap();
    fs::create_dir_all(root.join("var/log")).unwrap();
    for (name, prio) in [("iptables-nft", "20"), ("iptables-legacy", "10")] {
        update_alternatives(
            root,
            &[
                "--install",
                "/usr/sbin/iptables",
                "iptables",
                &format!("/usr/sbin/{name}"),
                prio,
            ],
        );
    }
    for (name, prio) in [("ip6tables-nft", "20"), ("ip6tables-legacy", "10")] {
        update_alternatives(
            root,
            &[
                "--install",
                "/usr/sbin/ip6tables",
                "ip6tables",
                &format!("/usr/sbin/{name}"),
                prio,
            ],
        );
    }
    // The tree's tool is the host's: update-alternatives runs with --root against it.
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::os::unix::fs::symlink(
        "/usr/bin/update-alternatives",
        root.join("usr/bin/update-alternatives"),
    )
    .unwrap();
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn apply_then_second_run_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    tree(root);
    let host = HostRoot::new(Some(root.to_path_buf()));
    let s = settings();

    let facts = block_on(gather(&host, &s, None));
    assert!(facts.errors.is_empty(), "{:?}", facts.errors);
    let steps = plan(&s, &facts);
    let findings = block_on(apply_all(Target::quiet(&host, None), &steps));
    let outcome = |n: &str| findings.iter().find(|f| f.step == n).unwrap().clone();
    for n in [
        "iptables-backend",
        "modules-file",
        "sysctls",
        "sysctls-file",
        "swap",
    ] {
        assert_eq!(outcome(n).outcome, Outcome::Changed, "{:?}", outcome(n));
    }
    assert!(
        !findings.iter().any(|f| f.outcome == Outcome::Failed),
        "{findings:#?}"
    );

    assert_eq!(
        fs::read_link(root.join("etc/alternatives/iptables")).unwrap(),
        Path::new("/usr/sbin/iptables-legacy")
    );
    assert_eq!(
        fs::read_link(root.join("etc/alternatives/ip6tables")).unwrap(),
        Path::new("/usr/sbin/ip6tables-legacy")
    );
    let modules = read(root, MODULES_CONF);
    assert!(
        modules.contains("\nbr_netfilter\n") && modules.ends_with("ip_vs\n"),
        "{modules}"
    );
    let sysctl = read(root, SYSCTL_CONF);
    assert!(
        sysctl.contains("net.bridge.bridge-nf-call-iptables = 1\n"),
        "{sysctl}"
    );
    assert!(sysctl.contains("vm.max_map_count = 262144\n"), "{sysctl}");
    assert_eq!(read(root, "/proc/sys/net/ipv4/ip_forward"), "1\n");
    assert_eq!(read(root, "/proc/sys/vm/max_map_count"), "262144\n");
    let fstab = read(root, "/etc/fstab");
    assert_eq!(
        fstab,
        format!("UUID=aa / ext4 errors=remount-ro 0 1\n{FSTAB_MARK}UUID=cc-dd none swap sw 0 0\n")
    );
    let mode = fs::metadata(root.join("etc/fstab")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o644
    );
    assert!(outcome("swap").detail.contains("swapoff") || outcome("swap").detail.contains("fstab"));

    // Second boot: nothing to change, and every step says so.
    let before: Vec<_> = [MODULES_CONF, SYSCTL_CONF, "/etc/fstab"]
        .iter()
        .map(|p| {
            fs::metadata(root.join(p.trim_start_matches('/')))
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();
    let facts = block_on(gather(&host, &s, None));
    let steps = plan(&s, &facts);
    assert!(steps.iter().all(|s| !s.changes()), "{steps:#?}");
    let findings = block_on(apply_all(Target::quiet(&host, None), &steps));
    for f in &findings {
        assert!(
            matches!(f.outcome, Outcome::Ok | Outcome::Skipped),
            "second run: {f:?}"
        );
    }
    let after: Vec<_> = [MODULES_CONF, SYSCTL_CONF, "/etc/fstab"]
        .iter()
        .map(|p| {
            fs::metadata(root.join(p.trim_start_matches('/')))
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();
    assert_eq!(before, after, "files rewritten on the second run");
}

#[test]
fn plan_alone_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    tree(root);
    let host = HostRoot::new(Some(root.to_path_buf()));
    let s = settings();
    let facts = block_on(gather(&host, &s, None));
    let previews: Vec<_> = plan(&s, &facts).iter().map(|s| s.preview()).collect();
    assert!(previews.iter().any(|f| f.outcome == Outcome::WouldChange));
    assert!(!root.join(MODULES_CONF.trim_start_matches('/')).exists());
    assert_eq!(read(root, "/proc/sys/net/ipv4/ip_forward"), "0\n");
    assert_eq!(
        fs::read_link(root.join("etc/alternatives/iptables")).unwrap(),
        Path::new("/usr/sbin/iptables-nft")
    );
}
