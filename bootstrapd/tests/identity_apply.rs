//! The node's identity applied to a --root tree: the hostname written where hostnamed keeps
//! it, the SSH user created by the real useradd, the keys merged into authorized_keys with
//! the user's ownership and 0700/0600; a second run changes nothing; a symlink planted in
//! the user's home is refused and what it points at stays untouched.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use base64::Engine as _;
use bootstrapd::actions::{Target, apply_all};
use bootstrapd::facts::host::{HostFacts, gather};
use bootstrapd::fsutil::HostRoot;
use bootstrapd::plan::Outcome;
use bootstrapd::plan::prepare::plan;
use bootstrapd::userdata::{HostnameSetting, Settings};
use common::{SettingsBuilder, temp_root};

fn write(root: &Path, path: &str, content: &str) {
    let p = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

/// An image's tree: root and one user (`ops`, uid 1500) already there, a NIC, a hostname.
fn tree(root: &Path) {
    write(
        root,
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nops:x:1500:1500::/home/ops:/bin/sh\n",
    );
    write(root, "/etc/group", "root:x:0:\nops:x:1500:\n");
    write(
        root,
        "/etc/shadow",
        "root:*:19000:0:99999:7:::\nops:*:19000:0:99999:7:::\n",
    );
    write(root, "/etc/gshadow", "root:*::\nops:!::\n");
    fs::create_dir_all(root.join("home/ops")).unwrap();
    std::os::unix::fs::chown(root.join("home/ops"), Some(1500), Some(1500)).unwrap();
    write(root, "/etc/hostname", "debian\n");
    write(root, "/sys/class/net/eth0/address", "52:54:00:12:ab:01\n");
    write(root, "/sys/class/net/eth0/ifindex", "2\n");
    fs::create_dir_all(root.join("sys/class/net/eth0/device")).unwrap();
}

fn key(n: u8) -> String {
    let mut blob = 11u32.to_be_bytes().to_vec();
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&[0, 0, 0, 32]);
    blob.extend_from_slice(&[n; 32]);
    let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
    format!("ssh-ed25519 {b64} key{n}@lab")
}

fn settings(user: &str, keys: &[String]) -> Settings {
    SettingsBuilder::rke1("https://rancher.example")
        .hostname(HostnameSetting::Template("Node-{mac}".into()))
        .ssh(user, keys)
        .build()
}

async fn facts(root: &HostRoot, s: &Settings) -> HostFacts {
    gather(root, s, None).await
}

/// The identity steps' findings after applying the plan once.
async fn apply(root: &HostRoot, s: &Settings) -> Vec<(String, Outcome, String)> {
    let steps: Vec<_> = plan(s, &facts(root, s).await)
        .into_iter()
        .filter(|st| st.step.starts_with("ssh") || st.step == "hostname")
        .collect();
    apply_all(Target::quiet(root, None), &steps)
        .await
        .into_iter()
        .map(|f| (f.step, f.outcome, f.detail))
        .collect()
}

fn outcomes(found: &[(String, Outcome, String)]) -> Vec<(&str, Outcome)> {
    found.iter().map(|(s, o, _)| (s.as_str(), *o)).collect()
}

fn mode_and_owner(p: &Path) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

#[tokio::test]
async fn hostname_and_keys_are_applied_once_and_kept_keys_stay() {
    let (dir, root) = temp_root();
    tree(dir.path());
    let by_hand = format!("no-pty {}\n", key(9));
    write(dir.path(), "/home/ops/.ssh/authorized_keys", &by_hand);
    let s = settings("ops", &[key(1), key(9)]);

    let found = apply(&root, &s).await;
    assert_eq!(
        outcomes(&found),
        [
            ("hostname", Outcome::Changed),
            ("ssh-user", Outcome::Ok),
            ("ssh-authorized-keys", Outcome::Changed)
        ],
        "{found:?}"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("etc/hostname")).unwrap(),
        "node-52540012ab01\n"
    );
    let ssh = dir.path().join("home/ops/.ssh");
    let text = fs::read_to_string(ssh.join("authorized_keys")).unwrap();
    assert_eq!(
        text,
        format!("{by_hand}{}\n", key(1)),
        "kept line first, key 9 not twice"
    );
    assert_eq!(mode_and_owner(&ssh), (0o700, 1500, 1500));
    assert_eq!(
        mode_and_owner(&ssh.join("authorized_keys")),
        (0o600, 1500, 1500)
    );

    // A second run: every identity step is a report.
    let again = apply(&root, &s).await;
    assert!(again.iter().all(|(_, o, _)| *o == Outcome::Ok), "{again:?}");
    assert_eq!(
        fs::read_to_string(ssh.join("authorized_keys")).unwrap(),
        text
    );
}

#[tokio::test]
async fn a_missing_user_is_created_with_useradd() {
    let (dir, root) = temp_root();
    tree(dir.path());
    let s = settings("rancher", &[key(2)]);
    let found = apply(&root, &s).await;
    assert_eq!(
        outcomes(&found),
        [
            ("hostname", Outcome::Changed),
            ("ssh-user", Outcome::Changed),
            ("ssh-authorized-keys", Outcome::Changed)
        ],
        "{found:?}"
    );
    let passwd = fs::read_to_string(dir.path().join("etc/passwd")).unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("rancher:"))
        .expect("useradd wrote the user");
    let fields: Vec<&str> = line.split(':').collect();
    let (uid, gid): (u32, u32) = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
    assert_eq!(fields[5], "/home/rancher");
    let file = dir.path().join("home/rancher/.ssh/authorized_keys");
    assert_eq!(fs::read_to_string(&file).unwrap(), format!("{}\n", key(2)));
    assert_eq!(mode_and_owner(&file), (0o600, uid, gid));
    let again = apply(&root, &s).await;
    assert!(again.iter().all(|(_, o, _)| *o == Outcome::Ok), "{again:?}");
}

#[tokio::test]
async fn symlinks_planted_in_the_home_are_not_followed() {
    let (dir, root) = temp_root();
    tree(dir.path());
    let victim = dir.path().join("etc/shadow");
    let before = fs::read_to_string(&victim).unwrap();
    let ssh = dir.path().join("home/ops/.ssh");
    fs::create_dir_all(&ssh).unwrap();
    symlink(&victim, ssh.join("authorized_keys")).unwrap();
    let s = settings("ops", &[key(3)]);

    // Planning reads without following: the step fails naming the link.
    let steps = plan(&s, &facts(&root, &s).await);
    let keys = steps
        .iter()
        .find(|st| st.step == "ssh-authorized-keys")
        .unwrap();
    let f = keys.preview();
    assert_eq!(f.outcome, Outcome::Failed);
    assert!(f.detail.contains("symlink"), "{f:?}");

    // Applying the write anyway (a link planted between plan and apply) is refused too.
    fs::remove_file(ssh.join("authorized_keys")).unwrap();
    let plan_clean = plan(&s, &facts(&root, &s).await);
    symlink(&victim, ssh.join("authorized_keys")).unwrap();
    let keys_step: Vec<_> = plan_clean
        .into_iter()
        .filter(|st| st.step == "ssh-authorized-keys")
        .collect();
    let found = apply_all(Target::quiet(&root, None), &keys_step).await;
    assert_eq!(found[0].outcome, Outcome::Failed, "{found:?}");
    assert_eq!(fs::read_to_string(&victim).unwrap(), before);

    // .ssh itself a symlink to another directory: nothing is written there.
    fs::remove_dir_all(&ssh).unwrap();
    let elsewhere = dir.path().join("root/.ssh");
    fs::create_dir_all(&elsewhere).unwrap();
    symlink(&elsewhere, &ssh).unwrap();
    let found = apply_all(Target::quiet(&root, None), &keys_step).await;
    assert_eq!(found[0].outcome, Outcome::Failed, "{found:?}");
    assert!(found[0].detail.contains("symlink"), "{found:?}");
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[tokio::test]
async fn a_home_leading_out_of_the_tree_is_refused() {
    let (dir, root) = temp_root();
    tree(dir.path());
    // The tree's /home is an absolute link: below --root it would lead to this machine.
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir_all(outside.path().join("ops")).unwrap();
    fs::remove_dir_all(dir.path().join("home")).unwrap();
    symlink(outside.path(), dir.path().join("home")).unwrap();
    let s = settings("ops", &[key(4)]);
    let steps = plan(&s, &facts(&root, &s).await);
    let f = steps
        .iter()
        .find(|st| st.step == "ssh-authorized-keys")
        .unwrap()
        .preview();
    assert_eq!(f.outcome, Outcome::Failed);
    assert!(f.detail.contains("--root"), "{f:?}");
    assert_eq!(fs::read_dir(outside.path().join("ops")).unwrap().count(), 0);
}

#[tokio::test]
async fn a_new_user_joins_the_group_of_its_name_when_there_is_one() {
    let (dir, root) = temp_root();
    tree(dir.path());
    write(
        dir.path(),
        "/etc/group",
        "root:x:0:\nops:x:1500:\ndeploy:x:1700:\n",
    );
    write(
        dir.path(),
        "/etc/gshadow",
        "root:*::\nops:!::\ndeploy:!::\n",
    );
    let s = settings("deploy", &[key(6)]);
    let found = apply(&root, &s).await;
    assert_eq!(found[1].1, Outcome::Changed, "{found:?}");
    let passwd = fs::read_to_string(dir.path().join("etc/passwd")).unwrap();
    let line = passwd.lines().find(|l| l.starts_with("deploy:")).unwrap();
    assert_eq!(line.split(':').nth(3), Some("1700"), "{line}");
}

#[tokio::test]
async fn a_hard_link_in_place_of_the_key_file_is_not_read() {
    let (dir, root) = temp_root();
    tree(dir.path());
    let victim = dir.path().join("etc/shadow");
    let ssh = dir.path().join("home/ops/.ssh");
    fs::create_dir_all(&ssh).unwrap();
    fs::hard_link(&victim, ssh.join("authorized_keys")).unwrap();
    let s = settings("ops", &[key(7)]);
    let steps = plan(&s, &facts(&root, &s).await);
    let f = steps
        .iter()
        .find(|st| st.step == "ssh-authorized-keys")
        .unwrap()
        .preview();
    assert_eq!(f.outcome, Outcome::Failed);
    assert!(f.detail.contains("hard link"), "{f:?}");
}

/// `validate` says what a template yields with example facts, `plan` what it yields on the
/// (here: --root) host, with the steps it would take.
#[test]
fn validate_and_plan_say_what_the_template_yields() {
    let bin = env!("CARGO_BIN_EXE_bootstrapd");
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/examples/edge-identity.yaml"
    );
    let out = std::process::Command::new(bin)
        .args(["validate", example])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("note: hostname template `node-{mac}` yields `node-525400123456`"),
        "{text}"
    );
    let (dir, _root) = temp_root();
    tree(dir.path());
    let out = std::process::Command::new(bin)
        .arg("plan")
        .arg("--root")
        .arg(dir.path())
        .args(["--userdata", example])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let row = |step: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(step))
            .unwrap_or_else(|| panic!("no {step} row in {text}"))
            .to_string()
    };
    assert!(
        row("hostname").ends_with(
            "would-change  hostname debian -> node-52540012ab01 (from template `node-{mac}`), \
             static and transient"
        ),
        "{text}"
    );
    assert!(
        row("ssh-user").contains("ok            user ops exists (uid 1500"),
        "{text}"
    );
    assert!(
        row("ssh-authorized-keys").contains("add 2 key(s) to /home/ops/.ssh/authorized_keys"),
        "{text}"
    );
    assert!(
        !dir.path().join("home/ops/.ssh").exists(),
        "plan wrote below the root"
    );
}
