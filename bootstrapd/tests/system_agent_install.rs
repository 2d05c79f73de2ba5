//! The install side of mode system-agent: install.sh's restart-pending handshake (in virtual
//! time), the agent binary from a checked source, and the `/opt/rancher-system-agent` prefix
//! when `/usr/local` is a mount point.

mod common;

use common::{SettingsBuilder, temp_root};

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use bootstrapd::actions::register::{NodeIdentity, RegisterError, register};
use bootstrapd::fsutil::HostRoot;
use bootstrapd::rancher::agent_binary::AgentBinaryError;
use bootstrapd::rancher::interlock::{
    self, APPLYINATOR_ACTIVE, Clock, INTERLOCK_DIR, InterlockError, MAX_WAIT, POLL,
    RESTART_PENDING, WaitOutcome,
};
use bootstrapd::rancher::system_agent;
use bootstrapd::userdata::{AgentBinary, Settings};
use rancher_test_server::{Config, start};
use sha2::{Digest, Sha256};

const TOKEN: &str = "vb7n2m4k6j8h0g1f3d5s7a9p2o4i6u8y1t3r5e7w9q2z4x6c8v0b";

/// Virtual time: `sleep` advances it at once and runs `on_sleep` with the new time, so a
/// test can change the root tree "while" the wait is going on.
struct FakeClock<F: FnMut(Duration) + Send> {
    now: Duration,
    sleeps: Vec<Duration>,
    on_sleep: F,
}

impl<F: FnMut(Duration) + Send> FakeClock<F> {
    fn new(on_sleep: F) -> Self {
        FakeClock {
            now: Duration::ZERO,
            sleeps: Vec::new(),
            on_sleep,
        }
    }
}

impl<F: FnMut(Duration) + Send> Clock for FakeClock<F> {
    fn elapsed(&self) -> Duration {
        self.now
    }
    fn sleep(&mut self, d: Duration) -> impl Future<Output = ()> + Send {
        self.now += d;
        self.sleeps.push(d);
        (self.on_sleep)(self.now);
        std::future::ready(())
    }
}

fn set_active(root: &HostRoot) {
    std::fs::create_dir_all(root.path(INTERLOCK_DIR)).unwrap();
    std::fs::write(root.path(APPLYINATOR_ACTIVE), b"").unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn no_active_plan_proceeds_at_once_with_restart_pending_set() {
    let (_d, root) = temp_root();
    let mut clock = FakeClock::new(|_| {});
    let (pending, outcome) = interlock::hold_for_restart(&root, &mut clock, MAX_WAIT * 2)
        .await
        .unwrap();
    assert_eq!(outcome, WaitOutcome::Idle);
    assert!(clock.sleeps.is_empty());
    assert_eq!(mode(&root.path(INTERLOCK_DIR)), 0o700);
    assert_eq!(mode(&root.path(system_agent::VAR_DIR)), 0o700);
    assert!(root.path(RESTART_PENDING).is_file());
    pending.release().unwrap();
    assert!(!root.path(RESTART_PENDING).exists());
}

#[tokio::test]
async fn active_plan_is_waited_for_until_it_ends() {
    let (_d, root) = temp_root();
    set_active(&root);
    let active = root.path(APPLYINATOR_ACTIVE);
    // The agent finishes its plan after two polls (10 s of virtual time).
    let mut clock = FakeClock::new(move |now| {
        if now >= POLL * 2 {
            let _ = std::fs::remove_file(&active);
        }
    });
    let (pending, outcome) = interlock::hold_for_restart(&root, &mut clock, MAX_WAIT * 2)
        .await
        .unwrap();
    assert_eq!(outcome, WaitOutcome::Finished { waited_s: 10 });
    assert_eq!(clock.sleeps, vec![POLL, POLL]);
    // restart-pending stays set until the agent has been restarted.
    assert!(root.path(RESTART_PENDING).is_file());
    drop(pending);
    assert!(!root.path(RESTART_PENDING).exists());
}

#[tokio::test]
async fn active_plan_left_behind_is_ignored_after_five_minutes_as_install_sh_does() {
    let (_d, root) = temp_root();
    set_active(&root);
    let mut clock = FakeClock::new(|_| {});
    let (pending, outcome) = interlock::hold_for_restart(&root, &mut clock, MAX_WAIT * 2)
        .await
        .unwrap();
    assert_eq!(outcome, WaitOutcome::TimedOut { waited_s: 300 });
    assert_eq!(clock.now, MAX_WAIT);
    assert_eq!(clock.sleeps.len(), 60);
    assert!(clock.sleeps.iter().all(|s| *s == POLL));
    // The agent's own file is not ours to remove.
    assert!(root.path(APPLYINATOR_ACTIVE).is_file());
    assert!(outcome.describe().contains("ignored"));
    pending.release().unwrap();
}

#[tokio::test]
async fn the_registration_deadline_cancels_the_wait_and_clears_restart_pending() {
    let (_d, root) = temp_root();
    set_active(&root);
    let mut clock = FakeClock::new(|_| {});
    let err = interlock::hold_for_restart(&root, &mut clock, Duration::from_secs(12))
        .await
        .unwrap_err();
    assert!(
        matches!(err, InterlockError::Cancelled { waited_s: 12, .. }),
        "{err}"
    );
    // The last sleep is cut to the budget, not a whole poll.
    assert_eq!(
        clock.sleeps,
        vec![POLL, POLL, Duration::from_secs(2)],
        "{:?}",
        clock.sleeps
    );
    assert!(err.to_string().contains("rancher.deadline_seconds"));
    assert!(!root.path(RESTART_PENDING).exists());
}

#[test]
fn a_directory_named_applyinator_active_is_not_the_agent_s_file() {
    // install.sh tests `-f`.
    let (_d, root) = temp_root();
    std::fs::create_dir_all(root.path(APPLYINATOR_ACTIVE)).unwrap();
    let mut clock = FakeClock::new(|_| {});
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let outcome = rt
        .block_on(interlock::wait_idle(&root, &mut clock, MAX_WAIT))
        .unwrap();
    assert_eq!(outcome, WaitOutcome::Idle);
}

fn settings(server: &str, checksum: Option<String>, binary: Option<AgentBinary>) -> Settings {
    SettingsBuilder::system_agent(server)
        .token(TOKEN)
        .ca_checksum(checksum)
        .agent_binary(binary)
        .deadline(60)
        .build()
}

fn node() -> NodeIdentity {
    NodeIdentity {
        node_name: "node7".into(),
        address: None,
        internal_address: None,
    }
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walk(dir) {
        out.push(e.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[tokio::test]
async fn a_binary_with_the_wrong_sha256_changes_nothing_and_names_both_hashes() {
    let (d, root) = temp_root();
    let src = "/images/rancher-system-agent";
    std::fs::create_dir_all(root.path("/images")).unwrap();
    std::fs::write(root.path(src), b"tampered agent").unwrap();
    let before = tree(d.path());
    let expected = sha(b"the real agent");
    let s = settings(
        // Never contacted: the check comes first.
        "https://127.0.0.1:9",
        None,
        Some(AgentBinary {
            url: None,
            path: Some(src.into()),
            sha256: expected.clone(),
        }),
    );
    let err = register(&root, &s, &node()).await.unwrap_err();
    let RegisterError::AgentBinary(AgentBinaryError::Mismatch {
        source_desc,
        expected: e,
        actual,
    }) = &err
    else {
        panic!("expected a checksum mismatch, got {err}");
    };
    assert_eq!(source_desc, src);
    assert_eq!(e, &expected);
    assert_eq!(actual, &sha(b"tampered agent"));
    let msg = err.to_string();
    assert!(msg.contains(src) && msg.contains(&expected) && msg.contains(actual));
    assert_eq!(tree(d.path()), before, "the host tree changed");
}

#[tokio::test]
async fn checked_binary_under_opt_when_usr_local_is_a_mount_point() {
    let srv = start(Config {
        tokens: vec![TOKEN.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let (_d, root) = temp_root();
    // An immutable image: /usr/local is a mount of its own.
    std::fs::create_dir_all(root.path("/proc/self")).unwrap();
    std::fs::write(
        root.path("/proc/self/mountinfo"),
        "22 1 8:1 / / ro,relatime - ext4 /dev/sda1 ro\n\
         40 22 8:2 / /usr/local rw,relatime - xfs /dev/sda2 rw\n",
    )
    .unwrap();
    let agent = b"\x7fELF agent from the image".to_vec();
    std::fs::create_dir_all(root.path("/images")).unwrap();
    std::fs::write(root.path("/images/agent"), &agent).unwrap();
    let s = settings(
        &srv.url,
        Some(srv.ca_checksum.clone()),
        Some(AgentBinary {
            url: None,
            path: Some("/images/agent".into()),
            sha256: sha(&agent).to_uppercase(),
        }),
    );
    let record = register(&root, &s, &node()).await.unwrap();
    let sa = record.system_agent.clone().unwrap();
    let bin = "/opt/rancher-system-agent/bin/rancher-system-agent";
    assert_eq!(sa.binary, bin);
    assert_eq!(sa.binary_source, "/images/agent");
    assert_eq!(sa.binary_sha256.as_deref(), Some(sha(&agent).as_str()));
    assert_eq!(std::fs::read(root.path(bin)).unwrap(), agent);
    assert_eq!(mode(&root.path(bin)), 0o755);
    assert!(
        root.path("/opt/rancher-system-agent/bin/rancher-system-agent-uninstall.sh")
            .is_file()
    );
    assert!(!root.path(system_agent::BINARY).exists());
    let unit = std::fs::read_to_string(root.path(system_agent::UNIT_FILE)).unwrap();
    assert!(
        unit.contains(&format!("ExecStart={bin} sentinel")),
        "{unit}"
    );
    let env = std::fs::read_to_string(root.path(system_agent::ENV_FILE)).unwrap();
    let path_line = env.lines().find(|l| l.starts_with("PATH=")).unwrap();
    assert!(path_line.ends_with(":/opt/rke2/bin"), "{env}");
    // The binary did not come from the server.
    let (requests, _) = srv.requests();
    assert!(
        !requests
            .iter()
            .any(|r| r.path.starts_with("/assets/rancher-system-agent")),
        "{requests:?}"
    );
    let step = |name: &str| {
        record
            .findings
            .iter()
            .find(|f| f.step == name)
            .unwrap_or_else(|| panic!("no {name} finding"))
            .detail
            .clone()
    };
    assert!(step("register.install-prefix").contains("/usr/local is a mount point"));
    assert!(step("register.agent-binary").contains("verified"));
    assert!(step("register.interlock").contains("no plan was being applied"));
    // The handshake is over: the agent's plans are not held.
    assert!(root.path(INTERLOCK_DIR).is_dir());
    assert!(!root.path(RESTART_PENDING).exists());
    srv.shutdown();
}

#[test]
fn plan_shows_the_prefix_and_the_bundle_s_agent() {
    let (d, root) = temp_root();
    std::fs::create_dir_all(root.path("/proc/self")).unwrap();
    std::fs::write(
        root.path("/proc/self/mountinfo"),
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n40 22 8:2 / /usr/local ro - xfs /dev/sda2 ro\n",
    )
    .unwrap();
    let arch = system_agent::asset_arch(std::env::consts::ARCH).unwrap();
    let name = format!("rancher-system-agent-{arch}");
    let dir = root.path("/opt/bundle/system-agent");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&name), b"agent").unwrap();
    std::fs::write(
        dir.join("SHA256SUMS"),
        format!("{}  {name}\n", sha(b"agent")),
    )
    .unwrap();
    let userdata = d.path().join("userdata.yaml");
    std::fs::write(
        &userdata,
        "roles: [worker]\nrancher:\n  server: https://rancher.example.com\n  token: abc\n  \
         mode: system-agent\nruntime:\n  source: {offline: {path: /opt/bundle}}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bootstrapd"))
        .arg("--root")
        .arg(d.path())
        .args(["plan", "--json", "--userdata"])
        .arg(&userdata)
        .output()
        .unwrap();
    // A bare root fails host prerequisites (exit 1); the rows are what matters here.
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let detail = |step: &str| {
        rows.iter()
            .find(|r| r["finding"]["step"] == step)
            .unwrap_or_else(|| panic!("no {step} row"))["finding"]["detail"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        detail("register.install-prefix"),
        "agent installed under /opt/rancher-system-agent/bin (/usr/local is a read-only mount point)"
    );
    assert_eq!(
        detail("register.agent-binary"),
        format!("agent binary from /opt/bundle/system-agent/{name}")
    );
    // Planning changed nothing.
    assert!(!root.path(INTERLOCK_DIR).exists());
    assert!(!root.path("/opt/rancher-system-agent").exists());
}
