//! The stand-in agent image's entrypoint inside the image's root filesystem, with the token given
//! the way bootstrapd gives it: as CATTLE_TOKEN in the environment, never in argv.
//!
//! By default this runs our entrypoint (`agent/entrypoint.sh`). An operator who has a copy of
//! Rancher's own `package/run.sh` can point `RANCHER_RUN_SH=/path/to/run.sh` at it: the same test
//! then runs that script instead and says so. We do not carry Rancher's script in the tree.
//!
//! There is no Docker engine here, so the image's root filesystem (laid out by
//! scripts/build-agent-image.sh, with this build's agent double as /usr/bin/agent) is entered
//! with chroot, sharing the host network like `docker run --net=host`. chroot and mknod need
//! root; the test says so plainly when it is not run as root.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use common::{TOKEN, server};
use rancher_test_server::{Config, protocol};
use tokio::io::AsyncReadExt;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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

/// Which entrypoint a run exercises.
struct Entrypoint {
    /// Path inside the root filesystem.
    path: &'static str,
    /// What its log shows in place of the token.
    redacted_marker: &'static str,
    what: &'static str,
}

const OURS: Entrypoint = Entrypoint {
    path: "/usr/bin/entrypoint.sh",
    redacted_marker: "token=<redacted>",
    what: "our entrypoint (tests/rancher-server/agent/entrypoint.sh)",
};

const RANCHER_RUN_SH: Entrypoint = Entrypoint {
    path: "/usr/bin/run.sh",
    redacted_marker: "CATTLE_TOKEN=REDACTED",
    what: "Rancher's real run.sh from RANCHER_RUN_SH",
};

/// The tests build the root filesystem one at a time: the build script's package cache is
/// shared and not safe against concurrent first use.
static BUILD: Mutex<()> = Mutex::new(());

/// A fresh root filesystem in `dir/rootfs`, with /dev/null.
fn rootfs(dir: &Path, run_sh: Option<&Path>) -> PathBuf {
    assert!(
        is_root(),
        "these tests enter the agent image's root filesystem with chroot and create /dev/null \
         with mknod: run them as root (CI does)"
    );
    let rootfs = dir.join("rootfs");
    let mut build = std::process::Command::new("bash");
    build
        .arg(repo_root().join("scripts/build-agent-image.sh"))
        .arg("--rootfs-only")
        .arg(&rootfs)
        .arg("--agent")
        .arg(env!("CARGO_BIN_EXE_rancher-agent-double"));
    if let Some(run_sh) = run_sh {
        build.arg("--with-run-sh").arg(run_sh);
    }
    let built = {
        let _guard = BUILD
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        build.output().expect("build script runs")
    };
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
    rootfs
}

/// Starts `entrypoint` in `rootfs` the way bootstrapd runs the node command: every option as
/// argv, the token only as CATTLE_TOKEN.
fn spawn(rootfs: &Path, entrypoint: &Entrypoint, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new("chroot")
        .arg(rootfs)
        .args([
            "/bin/sh",
            "-c",
            "cd /var/lib/rancher && exec \"$0\" \"$@\"",
            entrypoint.path,
        ])
        .args(args)
        .env_clear()
        .env("PATH", PATH)
        .env("CATTLE_TOKEN", TOKEN)
        .env("NO_COLOR", "1")
        // Our entrypoint gives up on an unreachable server after this long (not a timing
        // assertion: it only bounds a broken run).
        .env("ENTRYPOINT_WAIT_SECONDS", "30")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("chroot starts")
}

/// The child's stderr then stdout, read to the end.
async fn output_of(child: &mut tokio::process::Child) -> String {
    let mut output = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut output).await;
    }
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut output).await;
    }
    output
}

/// A long-running child's stdout and stderr, read as they come (a full pipe would stall it)
/// into one buffer, so that a test that gives up can show what the child said.
struct Captured {
    buf: Arc<Mutex<String>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Captured {
    fn so_far(&self) -> String {
        self.buf.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Everything, once both pipes are closed (bounded: a straggler holding a pipe open
    /// must not hang the test).
    async fn finish(self) -> String {
        for r in self.readers {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), r).await;
        }
        self.buf.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn capture(child: &mut tokio::process::Child) -> Captured {
    let buf = Arc::new(Mutex::new(String::new()));
    fn pump(
        mut r: impl tokio::io::AsyncRead + Unpin + Send + 'static,
        buf: Arc<Mutex<String>>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = r.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                buf.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        })
    }
    let mut readers = Vec::new();
    if let Some(e) = child.stderr.take() {
        readers.push(pump(e, buf.clone()));
    }
    if let Some(o) = child.stdout.take() {
        readers.push(pump(o, buf.clone()));
    }
    Captured { buf, readers }
}

/// `eventually`, with the child's output so far in the failure message.
async fn eventually_or_show<T>(
    what: &str,
    output: &Captured,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    // Not a timing assertion: the bound only keeps a broken run from hanging.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Some(v) = check() {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "gave up waiting for {what}; the entrypoint said:\n{}",
                output.so_far()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn split_list(value: &str) -> Vec<&str> {
    value.split(',').filter(|s| !s.is_empty()).collect()
}

#[tokio::test]
async fn entrypoint_registers_with_token_from_the_environment() {
    let operator_run_sh = std::env::var_os("RANCHER_RUN_SH").map(PathBuf::from);
    let entrypoint = if operator_run_sh.is_some() {
        &RANCHER_RUN_SH
    } else {
        &OURS
    };
    println!("running {}", entrypoint.what);

    let server = server(Config::default()).await;
    let work = tempfile::tempdir().expect("tempdir");
    let rootfs = rootfs(work.path(), operator_run_sh.as_deref());

    let mut child = spawn(
        &rootfs,
        entrypoint,
        &[
            "--server",
            &server.url,
            "--ca-checksum",
            &server.ca_checksum,
            "--node-name",
            "imagenode",
            "--address",
            "10.0.0.31",
            "--internal-address",
            "192.168.0.31",
            "--etcd",
            "--controlplane",
            "--label",
            "tier=control",
            "--label",
            "zone=a",
            "--taints",
            "dedicated=cp:NoSchedule",
        ],
    );
    let pgid = child.id().expect("pid");
    let said = capture(&mut child);

    let name = protocol::rke1_node_name("imagenode");
    let node = eventually_or_show("entrypoint + agent registered the node", &said, || {
        server.record().into_iter().find(|n| n.name == name)
    })
    .await;
    assert_eq!(node.roles, vec!["etcd", "controlplane"]);
    assert_eq!(node.address.as_deref(), Some("10.0.0.31"));
    assert_eq!(node.internal_address.as_deref(), Some("192.168.0.31"));
    assert_eq!(node.labels.get("tier").map(String::as_str), Some("control"));
    assert_eq!(node.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(node.taints, vec!["dedicated=cp:NoSchedule"]);
    eventually_or_show("the tunnel is held", &said, || {
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
    let tini_runs = members.iter().any(|pid| {
        read_nul_separated(&format!("/proc/{pid}/cmdline"))
            .first()
            .is_some_and(|arg0| arg0 == "tini" || arg0.ends_with("/tini"))
    });
    assert!(tini_runs, "the agent was not started through tini");
    let environ = read_nul_separated(&format!("/proc/{agent_pid}/environ"));
    assert!(environ.contains(&format!("CATTLE_TOKEN={TOKEN}")));
    let role = environ
        .iter()
        .find_map(|e| e.strip_prefix("CATTLE_ROLE="))
        .expect("CATTLE_ROLE exported");
    assert_eq!(split_list(role), vec!["etcd", "controlplane"]);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if pid.parse::<u32>().is_err() {
            continue;
        }
        let argv = read_nul_separated(&format!("/proc/{pid}/cmdline")).join(" ");
        assert!(!argv.contains(TOKEN), "token in argv of pid {pid}: {argv}");
    }

    // The entrypoint pinned the CA where the agent (and docker) look for it.
    let serverca = std::fs::read_to_string(rootfs.join("etc/kubernetes/ssl/certs/serverca"))
        .expect("serverca written by the entrypoint");
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
    let output = said.finish().await;
    assert!(
        output.contains(entrypoint.redacted_marker),
        "the entrypoint logged its settings with the token redacted:\n{output}"
    );
    assert!(!output.contains(TOKEN), "token printed:\n{output}");
    println!(
        "{} registered the node; the token was in no argv",
        entrypoint.what
    );
    server.shutdown();
}

/// A server whose CA does not match the checksum gets nothing carrying the token: the
/// entrypoint stops before the agent starts.
#[tokio::test]
async fn entrypoint_refuses_a_ca_that_does_not_match() {
    let server = server(Config {
        wrong_ca: true,
        ..Config::default()
    })
    .await;
    let work = tempfile::tempdir().expect("tempdir");
    let rootfs = rootfs(work.path(), None);
    let mut child = spawn(
        &rootfs,
        &OURS,
        &[
            "--server",
            &server.url,
            "--ca-checksum",
            &server.ca_checksum,
            "--node-name",
            "wrongca",
            "--address",
            "10.0.0.32",
            "--worker",
        ],
    );
    let status = child.wait().await.expect("entrypoint ends");
    let output = output_of(&mut child).await;
    assert_eq!(status.code(), Some(1), "output:\n{output}");
    assert!(output.contains("CA checksum mismatch"), "output:\n{output}");
    assert!(!output.contains(TOKEN), "token printed:\n{output}");
    assert!(server.record().is_empty());
    assert_eq!(server.active_tunnels(), 0);
    assert!(!rootfs.join("etc/kubernetes/ssl/certs/serverca").exists());
    server.shutdown();
}

/// Options are checked before anything is fetched.
#[tokio::test]
async fn entrypoint_rejects_bad_invocations() {
    let work = tempfile::tempdir().expect("tempdir");
    let rootfs = rootfs(work.path(), None);
    let cases: [(&[&str], &str); 4] = [
        (&["--token"], "option --token needs a value"),
        (
            &["--server", "https://127.0.0.1:9", "--bogus"],
            "unknown argument: --bogus",
        ),
        (&["--server", "https://127.0.0.1:9"], "no role"),
        (
            &["--server", "http://127.0.0.1:9", "--worker"],
            "must be an https:// URL",
        ),
    ];
    for (args, expected) in cases {
        let mut child = spawn(&rootfs, &OURS, args);
        let status = child.wait().await.expect("entrypoint ends");
        let output = output_of(&mut child).await;
        assert_eq!(status.code(), Some(1), "{args:?}: {output}");
        assert!(
            output.contains(expected),
            "{args:?}: expected {expected:?} in {output}"
        );
    }
}
