//! With `--root` other than `/`, nothing reaches the running system's systemd (system bus),
//! Docker (a socket reached through the tree's symlinks) or netlink unless the run says
//! `--live-system`. The system bus and the Docker socket here are listeners of the test that
//! count connections.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Accepts and drops connections on `path`, counting them.
fn counting_listener(path: &Path) -> Arc<AtomicUsize> {
    let l = UnixListener::bind(path).unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            n2.fetch_add(1, Ordering::SeqCst);
            drop(c);
        }
    });
    n
}

const USERDATA: &str = "roles: [worker]\nrancher:\n  server: https://127.0.0.1:1\n  \
    token: isolation-token\n  mode: rke1\n  node_name: iso\n  address: 192.0.2.7\n  \
    deadline_seconds: 2\n  splay_seconds: 0\n";

/// A tree like a debootstrap'd image: `var/run` is an absolute symlink to `/run`, here to a
/// directory of the test standing for the build host's /run.
fn tree(base: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = base.join("r");
    let host_run = base.join("hostrun");
    std::fs::create_dir_all(root.join("var")).unwrap();
    std::fs::create_dir_all(root.join("etc/bootstrapd")).unwrap();
    std::fs::create_dir_all(&host_run).unwrap();
    std::os::unix::fs::symlink(&host_run, root.join("var/run")).unwrap();
    std::fs::write(root.join("etc/bootstrapd/userdata.yaml"), USERDATA).unwrap();
    std::fs::write(
        root.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    (root, host_run)
}

fn bootstrapd(root: &Path, bus: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_bootstrapd"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            format!("unix:path={}", bus.display()),
        )
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap()
}

#[test]
fn a_root_tree_reaches_no_system_service() {
    let d = tempfile::Builder::new()
        .prefix("ri")
        .tempdir_in("/tmp")
        .unwrap();
    let (root, host_run) = tree(d.path());
    let bus = d.path().join("system_bus_socket");
    let bus_hits = counting_listener(&bus);
    let docker_hits = counting_listener(&host_run.join("docker.sock"));
    let userdata = root.join("etc/bootstrapd/userdata.yaml");

    let plan = bootstrapd(
        &root,
        &bus,
        &["plan", "--userdata", userdata.to_str().unwrap()],
    );
    let run = bootstrapd(&root, &bus, &["run"]);
    let said = format!(
        "plan: {}{}\nrun: {}",
        String::from_utf8_lossy(&plan.stdout),
        String::from_utf8_lossy(&plan.stderr),
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        bus_hits.load(Ordering::SeqCst),
        0,
        "the system bus was asked:\n{said}"
    );
    assert_eq!(
        docker_hits.load(Ordering::SeqCst),
        0,
        "the host's Docker was asked:\n{said}"
    );

    // The opt-in reaches both: the test's listeners are really where bootstrapd would go.
    let _ = bootstrapd(
        &root,
        &bus,
        &[
            "--live-system",
            "plan",
            "--userdata",
            userdata.to_str().unwrap(),
        ],
    );
    assert!(
        bus_hits.load(Ordering::SeqCst) >= 1,
        "--live-system: no system bus"
    );
    assert!(
        docker_hits.load(Ordering::SeqCst) >= 1,
        "--live-system: no Docker"
    );
}
