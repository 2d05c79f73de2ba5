//! The node's identity steps of host preparation: its hostname and its SSH keys. Pure.
//!
//! The hostname is set in the prepare stage, before the runtime and the Rancher agent start:
//! the agent reports the host's name (system-agent mode, without `rancher.node_name`) and
//! RKE1 names the node md5(hostname).

use super::Outcome;
use super::host::{HostAction, HostStep};
use crate::facts::ProbeArea;
use crate::facts::host::HostFacts;
use crate::facts::identity::{IdentityFacts, SshFacts};
use crate::facts::network::hostname_problem;
use crate::system::authorized_keys::{Account, FILE, SSH_DIR};
use crate::userdata::identity::{self, PublicKey};
use crate::userdata::{HostnameSetting, Settings};

const WHY_HOSTNAME: &str =
    "node names must be unique in the cluster (RKE1 derives them from the hostname)";
const WHY_USER: &str = "the keys need a user to log in as";
const WHY_KEYS: &str = "a node without cloud-init has no other way in over SSH";

/// The hostname `setting` asks for on this host, or why there is none.
pub fn wanted_hostname(setting: &HostnameSetting, facts: &IdentityFacts) -> Result<String, String> {
    match setting {
        HostnameSetting::Metadata => match facts.metadata_hostname.as_deref() {
            Some(h) => identity::metadata_hostname(h),
            None => Err("the datasource gave no hostname".into()),
        },
        HostnameSetting::Template(t) => {
            let pieces = identity::parse_template(t)?;
            identity::expand(&pieces, |f| facts.fact(f))
        }
    }
}

fn source(setting: &HostnameSetting) -> String {
    match setting {
        HostnameSetting::Metadata => "from the datasource".into(),
        HostnameSetting::Template(t) => format!("from template `{t}`"),
    }
}

pub fn hostname(settings: &Settings, facts: &HostFacts) -> HostStep {
    const S: &str = "hostname";
    let Some(setting) = &settings.hostname else {
        return unmanaged_hostname(settings, facts);
    };
    let from = source(setting);
    let wanted = match wanted_hostname(setting, &facts.identity) {
        Ok(w) => w,
        Err(why) => {
            let remedy = match setting {
                HostnameSetting::Metadata => {
                    "give the node a hostname in the datasource's metadata (local-hostname), \
                     or set hostname: {template: ...}"
                }
                HostnameSetting::Template(_) => {
                    "use placeholders this host has a value for, or hostname: metadata"
                }
            };
            return HostStep::failed(S, WHY_HOSTNAME, format!("hostname {from}: {why}"), remedy);
        }
    };
    if let Some(p) = hostname_problem(&wanted) {
        return HostStep::with_remedy(
            S,
            WHY_HOSTNAME,
            Outcome::Warning,
            format!("not setting hostname {wanted} ({from}): {p}"),
            "give each node its own name in the metadata, or a template over {instance_id}, \
             {serial} or {mac}",
        );
    }
    let node = match &settings.rancher.node_name {
        Some(n) if *n != wanted => format!("; the Rancher node name is {n} (rancher.node_name)"),
        _ => String::new(),
    };
    let kernel = facts.hostname.as_deref();
    if kernel == Some(wanted.as_str()) && facts.static_hostname.as_deref() == Some(&wanted) {
        return HostStep::report(
            S,
            WHY_HOSTNAME,
            Outcome::Ok,
            format!("hostname {wanted} ({from}){node}"),
        );
    }
    HostStep::change(
        S,
        WHY_HOSTNAME,
        format!(
            "hostname {} -> {wanted} ({from}), static and transient{node}",
            kernel.unwrap_or("unknown")
        ),
        HostAction::SetHostname { name: wanted },
    )
}

/// Without `hostname:` the name is left as it is; a generic one is worth a warning.
fn unmanaged_hostname(settings: &Settings, facts: &HostFacts) -> HostStep {
    const S: &str = "hostname";
    const REMEDY: &str = "set `hostname: metadata` or `hostname: {template: \"node-{mac}\"}` in \
                          the userdata, or rancher.node_name";
    if let Some(n) = &settings.rancher.node_name {
        return HostStep::report(
            S,
            WHY_HOSTNAME,
            Outcome::Ok,
            format!("node name {n:?} given in the userdata"),
        );
    }
    match facts.hostname.as_deref() {
        None => HostStep::with_remedy(
            S,
            WHY_HOSTNAME,
            Outcome::Warning,
            "hostname unknown",
            REMEDY,
        ),
        Some(h) => match hostname_problem(h) {
            Some(p) => HostStep::with_remedy(S, WHY_HOSTNAME, Outcome::Warning, p, REMEDY),
            None => HostStep::report(S, WHY_HOSTNAME, Outcome::Ok, format!("hostname {h}")),
        },
    }
}

/// The user (created when absent) and their authorized_keys, with the userdata's keys.
pub fn ssh(settings: &Settings, facts: &HostFacts) -> Vec<HostStep> {
    let Some(want) = &settings.ssh else {
        return Vec::new();
    };
    let user = &want.user;
    if let Some(e) = facts.errors.get(ProbeArea::Ssh) {
        return vec![HostStep::failed(
            "ssh-authorized-keys",
            WHY_KEYS,
            format!("cannot read {user}'s account or keys: {}", e.message),
            "remove the symlink or fix the file named, then run again",
        )];
    }
    let keys: Vec<PublicKey> = want
        .authorized_keys
        .iter()
        .filter_map(|k| identity::parse_public_key(k).ok())
        .collect();
    let action = HostAction::AuthorizedKeys {
        user: user.clone(),
        keys: want.authorized_keys.clone(),
    };
    let Some(facts) = &facts.ssh else {
        return Vec::new();
    };
    let Some(account) = &facts.account else {
        return vec![
            HostStep::change(
                "ssh-user",
                WHY_USER,
                format!("no user {user}: create it (useradd, with a home directory)"),
                HostAction::CreateUser { user: user.clone() },
            ),
            HostStep::change(
                "ssh-authorized-keys",
                WHY_KEYS,
                format!("add {} key(s) to {user}'s ~/{SSH_DIR}/{FILE}", keys.len()),
                action,
            ),
        ];
    };
    let user_step = HostStep::report(
        "ssh-user",
        WHY_USER,
        Outcome::Ok,
        format!(
            "user {user} exists (uid {}, home {})",
            account.uid, account.home
        ),
    );
    vec![user_step, keys_step(facts, account, &keys, action)]
}

/// An existing user's keys: added when missing, rewritten when owner or modes are wrong.
fn keys_step(
    facts: &SshFacts,
    account: &Account,
    keys: &[PublicKey],
    action: HostAction,
) -> HostStep {
    const S: &str = "ssh-authorized-keys";
    let (_, added) = identity::merge_keys(&facts.current.text, keys);
    let path = format!("{}/{SSH_DIR}/{FILE}", account.home.trim_end_matches('/'));
    if !added.is_empty() {
        let kept = facts
            .current
            .text
            .lines()
            .filter_map(identity::key_in_line)
            .count();
        HostStep::change(
            S,
            WHY_KEYS,
            format!(
                "add {} key(s) to {path}, keeping the {kept} there",
                added.len()
            ),
            action,
        )
    } else if !facts.current.owned_by(account) {
        HostStep::change(
            S,
            WHY_KEYS,
            format!("{path}: set owner {} and modes 0700/0600", facts.user),
            action,
        )
    } else {
        HostStep::report(
            S,
            WHY_KEYS,
            Outcome::Ok,
            format!("the {} key(s) are in {path}", keys.len()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::authorized_keys::{Current, Meta};
    use crate::userdata::SshSettings;

    fn facts(kernel: &str, stat: &str) -> HostFacts {
        HostFacts {
            hostname: Some(kernel.into()),
            static_hostname: Some(stat.into()),
            identity: IdentityFacts {
                instance_id: Some("i-0abc".into()),
                metadata_hostname: Some("node7.lab.example".into()),
                serial: None,
                mac: Some("525400ab0001".into()),
            },
            ..HostFacts::default()
        }
    }

    fn with(h: HostnameSetting) -> Settings {
        let mut s = Settings::rke1_worker();
        s.hostname = Some(h);
        s
    }

    fn template(t: &str) -> Settings {
        with(HostnameSetting::Template(t.into()))
    }

    #[test]
    fn a_different_hostname_is_a_change_and_the_same_one_is_nothing() {
        let s = template("node-{mac}");
        let st = hostname(&s, &facts("debian", "debian"));
        assert_eq!(
            st.action,
            HostAction::SetHostname {
                name: "node-525400ab0001".into()
            }
        );
        assert_eq!(
            st.detail,
            "hostname debian -> node-525400ab0001 (from template `node-{mac}`), static and transient"
        );
        let done = hostname(&s, &facts("node-525400ab0001", "node-525400ab0001"));
        assert!(!done.changes(), "{done:?}");
        assert_eq!(done.preview().outcome, Outcome::Ok);
        // The kernel's name set but not /etc/hostname (or the reverse): still a change.
        assert!(hostname(&s, &facts("node-525400ab0001", "debian")).changes());
        assert!(hostname(&s, &facts("debian", "node-525400ab0001")).changes());
    }

    #[test]
    fn metadata_gives_the_short_name_and_its_absence_fails() {
        let s = with(HostnameSetting::Metadata);
        let st = hostname(&s, &facts("debian", "debian"));
        assert_eq!(
            st.action,
            HostAction::SetHostname {
                name: "node7".into()
            }
        );
        let mut f = facts("debian", "debian");
        f.identity.metadata_hostname = None;
        let st = hostname(&s, &f);
        assert_eq!(st.preview().outcome, Outcome::Failed);
        assert!(
            st.detail.contains("the datasource gave no hostname"),
            "{st:?}"
        );
        f.identity.metadata_hostname = Some("bad_name".into());
        let st = hostname(&s, &f);
        assert_eq!(st.preview().outcome, Outcome::Failed);
        assert!(st.detail.contains("RFC 1123"), "{st:?}");
    }

    #[test]
    fn a_missing_fact_fails_and_a_generic_result_is_not_set() {
        let st = hostname(&template("n-{serial}"), &facts("debian", "debian"));
        assert_eq!(st.preview().outcome, Outcome::Failed);
        assert!(st.detail.contains("SMBIOS serial"), "{st:?}");
        let st = hostname(&template("localhost"), &facts("debian", "debian"));
        assert!(!st.changes());
        assert_eq!(st.preview().outcome, Outcome::Warning);
    }

    #[test]
    fn the_node_name_is_named_when_it_differs_and_the_warning_points_here() {
        let mut s = template("node-{mac}");
        s.rancher.node_name = Some("worker-1".into());
        let st = hostname(&s, &facts("debian", "debian"));
        assert!(
            st.detail
                .ends_with("the Rancher node name is worker-1 (rancher.node_name)")
        );
        let st = hostname(&Settings::rke1_worker(), &facts("localhost", "localhost"));
        assert_eq!(st.preview().outcome, Outcome::Warning);
        assert!(st.preview().remedy.unwrap().contains("hostname: metadata"));
    }

    fn key() -> String {
        use base64::Engine as _;
        let mut blob = 11u32.to_be_bytes().to_vec();
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&[0, 0, 0, 32]);
        blob.extend_from_slice(&[1; 32]);
        format!(
            "ssh-ed25519 {} ops@lab",
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    }

    fn ssh_settings() -> Settings {
        let mut s = Settings::rke1_worker();
        s.ssh = Some(SshSettings {
            user: "ops".into(),
            authorized_keys: vec![key()],
        });
        s
    }

    fn names(steps: &[HostStep]) -> Vec<(&str, bool)> {
        steps.iter().map(|s| (s.step, s.changes())).collect()
    }

    #[test]
    fn ssh_steps_create_the_user_add_missing_keys_and_then_change_nothing() {
        let s = ssh_settings();
        let mut f = HostFacts {
            ssh: Some(SshFacts {
                user: "ops".into(),
                account: None,
                current: Current::default(),
            }),
            ..HostFacts::default()
        };
        let steps = ssh(&s, &f);
        assert_eq!(
            names(&steps),
            [("ssh-user", true), ("ssh-authorized-keys", true)]
        );
        let account = Account {
            uid: 1001,
            gid: 1001,
            home: "/home/ops".into(),
        };
        let meta = |mode| {
            Some(Meta {
                uid: 1001,
                gid: 1001,
                mode,
            })
        };
        f.ssh = Some(SshFacts {
            user: "ops".into(),
            account: Some(account),
            current: Current {
                dir: meta(0o700),
                file: meta(0o600),
                text: "ssh-rsa AAAA other\n".into(),
            },
        });
        let steps = ssh(&s, &f);
        assert_eq!(
            names(&steps),
            [("ssh-user", false), ("ssh-authorized-keys", true)]
        );
        assert_eq!(
            steps[1].detail,
            "add 1 key(s) to /home/ops/.ssh/authorized_keys, keeping the 0 there"
        );
        let cur = &mut f.ssh.as_mut().unwrap().current;
        cur.text = format!("{}\n", key());
        let steps = ssh(&s, &f);
        assert_eq!(
            names(&steps),
            [("ssh-user", false), ("ssh-authorized-keys", false)]
        );
        // The keys are there but the file is group-readable: rewritten with 0600.
        f.ssh.as_mut().unwrap().current.file = meta(0o640);
        assert!(ssh(&s, &f)[1].changes());
    }

    #[test]
    fn an_ssh_probe_failure_fails_the_keys_step() {
        let s = ssh_settings();
        let mut f = HostFacts::default();
        f.errors.record(
            ProbeArea::Ssh,
            "/home/ops/.ssh is a symlink or not a directory",
        );
        let steps = ssh(&s, &f);
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].preview().outcome, Outcome::Failed);
        assert!(ssh(&Settings::rke1_worker(), &f).is_empty());
    }
}
