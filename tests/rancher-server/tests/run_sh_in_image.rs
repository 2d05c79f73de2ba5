//! Rancher's real agent entrypoint (`agent/run.sh`) inside the agent image's root filesystem,
//! with the token given the way bootstrapd gives it: as CATTLE_TOKEN in the environment.
//!
//! There is no Docker engine here, so the image's root filesystem (laid out by
//! scripts/build-agent-image.sh, with this build's agent double as /usr/bin/agent) is entered
//! with chroot, sharing the host network like `docker run --net=host`. chroot and mknod need
//! root; the test says so plainly when it is not run as root.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{TOKEN, eventually, server};
use rancher_test_server::{Config, protocol};
use tokio::io::AsyncReadExt;

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `pid` and all its descendants (tini puts the agent into a process group of its own).
fn process_tree(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        if let Some(ppid) = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
        {
            parents.push((pid, ppid));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

fn read_nul_separated(path: &str) -> Vec<String> {
    std::fs::read(path)
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn real_run_sh_registers_with_token_from_the_environment() {
    assert!(
        is_root(),
        "this test enters the agent image's root filesystem with chroot and creates /dev/null \
         with mknod: run it as root (CI does)"
    );
    let server = server(Config::default()).await;
    let work = tempfile::tempdir().expect("tempdir");
    let rootfs = work.path().join("rootfs");

    let built = std::process::Command::new("bash")
        .arg(repo_root().join("scripts/build-agent-image.sh"))
        .arg("--rootfs-only")
        .arg(&rootfs)
        .arg("--agent")
        .arg(env!("CARGO_BIN_EXE_rancher-agent-double"))
        .output()
        .expect("build script runs");
    assert!(
        built.status.success(),
        "build-agent-image.sh --rootfs-only failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let mknod = std::process::Command::new("mknod")
        .args(["-m", "666"])
        .arg(rootfs.join("dev/null"))
        .args(["c", "1", "3"])
        .status()
        .expect("mknod runs");
    assert!(mknod.success());

    // The node command as bootstrapd runs it: every option as argv except the token.
    let mut child = tokio::process::Command::new("chroot")
        .arg(&rootfs)
        .args([
            "/bin/sh",
            "-c",
            "cd /var/lib/rancher && exec /usr/bin/run.sh \"$@\"",
            "run.sh",
        ])
        .args([
            "--server",
            &server.url,
            "--ca-checksum",
            &server.ca_checksum,
        ])
        .args(["--node-name", "imagenode", "--address", "10.0.0.31"])
        .args(["--internal-address", "192.168.0.31"])
        .args(["--etcd", "--controlplane"])
        .args([
            "--label",
            "tier=control",
            "--taints",
            "dedicated=cp:NoSchedule",
        ])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("CATTLE_TOKEN", TOKEN)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("chroot starts");
    let pgid = child.id().expect("pid");

    let name = protocol::rke1_node_name("imagenode");
    let node = eventually("run.sh + agent registered the node", || {
        server.record().into_iter().find(|n| n.name == name)
    })
    .await;
    assert_eq!(node.roles, vec!["etcd", "controlplane"]);
    assert_eq!(node.address, "10.0.0.31");
    assert_eq!(node.internal_address, "192.168.0.31");
    assert_eq!(node.labels.get("tier").map(String::as_str), Some("control"));
    assert_eq!(node.taints, vec!["dedicated=cp:NoSchedule"]);
    eventually("the tunnel is held", || {
        (server.active_tunnels() == 1).then_some(())
    })
    .await;

    // The token reached the agent through its environment, and no process has it in argv.
    let members = process_tree(pgid);
    let agent_pid = members
        .iter()
        .copied()
        .find(|pid| {
            read_nul_separated(&format!("/proc/{pid}/cmdline"))
                .first()
                .is_some_and(|arg0| arg0 == "agent" || arg0.ends_with("/agent"))
        })
        .expect("the agent process runs under tini");
    let environ = read_nul_separated(&format!("/proc/{agent_pid}/environ"));
    assert!(environ.contains(&format!("CATTLE_TOKEN={TOKEN}")));
    assert!(environ.contains(&"CATTLE_ROLE=,etcd,controlplane".to_string()));
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if pid.parse::<u32>().is_err() {
            continue;
        }
        let argv = read_nul_separated(&format!("/proc/{pid}/cmdline")).join(" ");
        assert!(!argv.contains(TOKEN), "token in argv of pid {pid}: {argv}");
    }

    // run.sh pinned the CA where the agent (and docker) look for it.
    let serverca = std::fs::read_to_string(rootfs.join("etc/kubernetes/ssl/certs/serverca"))
        .expect("serverca written by run.sh");
    assert_eq!(
        rancher_test_server::ca::ca_checksum(&serverca),
        server.ca_checksum
    );
    let host_port = server.url.trim_start_matches("https://");
    assert!(
        rootfs
            .join(format!("etc/docker/certs.d/{host_port}/ca.crt"))
            .exists()
    );

    let killed = std::process::Command::new("kill")
        .args(["-TERM", "--", &format!("-{pgid}")])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let _ = child.wait().await;
    let mut output = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut output).await;
    }
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut output).await;
    }
    assert!(
        output.contains("CATTLE_TOKEN=REDACTED"),
        "run.sh logged its environment:\n{output}"
    );
    assert!(!output.contains(TOKEN), "token printed:\n{output}");
    server.shutdown();
}
