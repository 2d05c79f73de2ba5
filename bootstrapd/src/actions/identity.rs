//! Applies the node's identity steps: the hostname through systemd-hostnamed, the SSH user
//! through useradd, the keys through the no-follow writer of `system::authorized_keys`.

use std::time::Duration;

use crate::actions::{StepFailure, StepResult};
use crate::fsutil::{HostRoot, write_atomic};
use crate::system::authorized_keys::{self, Account};
use crate::system::process::{self, CommandSpec};
use crate::system::systemd::Systemd;
use crate::userdata::identity;

const USERADD_TIMEOUT: Duration = Duration::from_secs(60);

/// The running host: hostnamed sets /etc/hostname and the kernel's name. A --root tree has
/// no hostnamed of its own: its /etc/hostname is written, as `systemd-firstboot --root`
/// does, and the kernel's name (this machine's) is left alone.
pub(crate) async fn set_hostname(
    root: &HostRoot,
    systemd: Option<&Systemd>,
    name: &str,
) -> StepResult {
    if !root.is_live() {
        let p = root.path("/etc/hostname");
        write_atomic(&p, format!("{name}\n").as_bytes(), 0o644).map_err(|e| {
            StepFailure::new(
                format!("cannot write {}: {e}", p.display()),
                "check that the tree's /etc is writable".into(),
            )
        })?;
        return Ok(format!(
            "wrote {name} to /etc/hostname (a --root tree: no hostnamed, kernel name unchanged)"
        ));
    }
    let Some(sd) = systemd else {
        return Err(StepFailure::new(
            "the system bus is not reachable: cannot ask systemd-hostnamed".into(),
            "run bootstrapd under systemd with the system bus up".into(),
        ));
    };
    crate::system::hostnamed::set(sd.connection(), name)
        .await
        .map_err(|e| {
            StepFailure::new(
                e.to_string(),
                "check `journalctl -u systemd-hostnamed` and that the hostname is not locked \
                 (a read-only /etc, or /etc/hostname managed by another tool)"
                    .into(),
            )
        })?;
    Ok(format!(
        "hostname set to {name} (static and transient, systemd-hostnamed)"
    ))
}

/// useradd with a home directory and a group of the user's name; below a --root tree with
/// `--prefix`, which reads and writes that tree's /etc and home without a chroot.
pub(crate) async fn create_user(root: &HostRoot, user: &str) -> StepResult {
    let prefix = root.path("/").to_string_lossy().into_owned();
    // useradd --user-group refuses a name whose group exists already: join that group.
    let group_exists = std::fs::read_to_string(root.path("/etc/group"))
        .is_ok_and(|g| g.lines().any(|l| l.split(':').next() == Some(user)));
    let mut args = vec!["--create-home"];
    if group_exists {
        args.extend(["--gid", user]);
    } else {
        args.push("--user-group");
    }
    if !root.is_live() {
        args.extend(["--prefix", prefix.as_str()]);
    }
    args.extend(["--", user]);
    let spec = CommandSpec::new("useradd", &args);
    let out = process::run(&spec, USERADD_TIMEOUT).await.map_err(|e| {
        StepFailure::new(
            e.to_string(),
            "install useradd (passwd or shadow-utils)".into(),
        )
    })?;
    if !out.status.success() {
        return Err(StepFailure::new(
            format!("`{spec}` failed: {}", process::last_line(&out.stderr)),
            format!("create the user {user} in the image, or choose another ssh.user"),
        ));
    }
    let a = account(root, user)?;
    Ok(format!(
        "created user {user} (uid {}, home {})",
        a.uid, a.home
    ))
}

fn account(root: &HostRoot, user: &str) -> StepResult<Account> {
    match authorized_keys::account(root, user) {
        Ok(Some(a)) => Ok(a),
        Ok(None) => Err(StepFailure::new(
            format!("no user {user} in /etc/passwd"),
            "check that useradd writes the local /etc/passwd (not only a directory service)".into(),
        )),
        Err(e) => Err(StepFailure::new(e.to_string(), "check /etc/passwd".into())),
    }
}

/// The userdata's keys merged into the user's authorized_keys (kept lines stay), then read
/// back.
pub(crate) async fn authorized_keys(root: &HostRoot, user: &str, keys: &[String]) -> StepResult {
    let a = account(root, user)?;
    let refuse = |e: authorized_keys::KeysError| {
        StepFailure::new(
            e.to_string(),
            format!(
                "remove what is there in {user}'s home instead of ~/.ssh/authorized_keys, then run again"
            ),
        )
    };
    let current = authorized_keys::read(root, &a).map_err(refuse)?;
    let keys: Vec<identity::PublicKey> = keys
        .iter()
        .filter_map(|k| identity::parse_public_key(k).ok())
        .collect();
    let (text, added) = identity::merge_keys(&current.text, &keys);
    authorized_keys::write(root, &a, &text).map_err(refuse)?;
    let now = authorized_keys::read(root, &a).map_err(refuse)?;
    let (_, missing) = identity::merge_keys(&now.text, &keys);
    if !missing.is_empty() || !now.owned_by(&a) {
        return Err(StepFailure::new(
            format!(
                "{user}'s authorized_keys does not hold the keys with owner {user} and mode 0600 after writing"
            ),
            "look for another tool rewriting ~/.ssh (a configuration manager)".into(),
        ));
    }
    let dir = format!("{}/.ssh", a.home.trim_end_matches('/'));
    let labelled = relabel(root, &dir).await?;
    Ok(format!(
        "{} key(s) added to {dir}/authorized_keys ({} already there){labelled}",
        added.len(),
        keys.len() - added.len()
    ))
}

/// With SELinux on, a `.ssh` bootstrapd (initrc_t) creates may keep its parent's type where
/// sshd looks for ssh_home_t; restorecon gives it the policy's label, as cloud-init does.
async fn relabel(root: &HostRoot, dir: &str) -> StepResult {
    let on = crate::facts::selinux::probe(root)
        .is_ok_and(|s| s.current != crate::facts::selinux::SelinuxMode::Disabled);
    if !root.is_live() || !on {
        return Ok(String::new());
    }
    // -R does not follow symlinks; the tree was just checked to hold none.
    let spec = CommandSpec::new("restorecon", &["-R", "-F", "--", dir]);
    let remedy = || format!("install policycoreutils and run `restorecon -R -F {dir}`");
    match process::run(&spec, USERADD_TIMEOUT).await {
        Ok(o) if o.status.success() => Ok(format!("; {dir} relabelled (restorecon)")),
        Ok(o) => Err(StepFailure::new(
            format!("`{spec}` failed: {}", process::last_line(&o.stderr)),
            remedy(),
        )),
        Err(e) => Err(StepFailure::new(e.to_string(), remedy())),
    }
}
