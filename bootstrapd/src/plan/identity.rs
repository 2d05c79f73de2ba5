//! The node's identity steps of host preparation: its hostname and its SSH keys. Pure.
//!
//! The hostname is set in the prepare stage, before the runtime and the Rancher agent start:
//! the agent reports the host's name (system-agent mode, without `rancher.node_name`) and
//! RKE1 names the node md5(hostname).

use super::Outcome;
use super::host::{HostAction, HostStep};
use crate::facts::ProbeArea;
use crate::facts::host::HostFacts;
use crate::facts::identity::IdentityFacts;
use crate::facts::network::hostname_problem;
use crate::system::authorized_keys::{FILE, SSH_DIR};
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
    let (_, added) = identity::merge_keys(&facts.current.text, &keys);
    let path = format!("{}/{SSH_DIR}/{FILE}", account.home.trim_end_matches('/'));
    let keys_step = if !added.is_empty() {
        let kept = facts
            .current
            .text
            .lines()
            .filter_map(identity::key_in_line)
            .count();
        HostStep::change(
            "ssh-authorized-keys",
            WHY_KEYS,
            format!(
                "add {} key(s) to {path}, keeping the {kept} there",
                added.len()
            ),
            action,
        )
    } else if !facts.current.owned_by(account) {
        HostStep::change(
            "ssh-authorized-keys",
            WHY_KEYS,
            format!("{path}: set owner {user} and modes 0700/0600"),
            action,
        )
    } else {
        HostStep::report(
            "ssh-authorized-keys",
            WHY_KEYS,
            Outcome::Ok,
            format!("the {} key(s) are in {path}", keys.len()),
        )
    };
    vec![user_step, keys_step]
}
