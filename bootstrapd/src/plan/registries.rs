//! `registries`: the files each consumer reads its mirrors and credentials from. Pure.
//!
//! - RKE2's and K3s's `registries.yaml` (mode system-agent; the cluster's kind is not known
//!   at registration, so both), mode 0600 because it holds the passwords. Format: RKE2's
//!   (docs.rke2.io/install/containerd_registry_configuration; K3s's is the same,
//!   docs.k3s.io/installation/private-registry): `mirrors.<registry>.endpoint` and
//!   `configs.<host>.auth.{username,password,identity_token}`.
//! - containerd's `/etc/containerd/certs.d/<host>/hosts.toml` per mirrored registry, for
//!   the host's own containerd (its CRI reads the directory when `config_path` names it;
//!   nerdctl by default, `ctr --hosts-dir`): containerd docs/hosts.md.
//! - Docker's daemon.json is the runtime plan's (`runtime.daemon-json`).
//!
//! Written before anything can start a runtime that reads them, and removed when the
//! userdata no longer asks for them, but only when bootstrapd wrote them (their first line
//! is [`MARKER`]). No secret reaches a step's detail: `plan` and the journal show it.

use serde_json::{Map, Value, json};

use super::Outcome;
use super::runtime_action::{RuntimeAction, RuntimeStep};
use crate::facts::registries::{
    CERTS_D, FileState, K3S_REGISTRIES, MARKER, RKE2_REGISTRIES, RegistryFacts, digest, hosts_toml,
};
use crate::secret::Secret;
use crate::system::image_ref::DOCKER_HUB;
use crate::userdata::{RegistrationMode, RegistryAuth, RegistrySettings, Settings};

const WHY_REGISTRIES_YAML: &str =
    "RKE2 and K3s read mirrors and registry credentials from registries.yaml when they start";
const WHY_HOSTS_TOML: &str = "containerd reads a registry's mirrors from its hosts.toml";
/// registries.yaml holds passwords.
pub const SECRET_MODE: u32 = 0o600;
const HOSTS_TOML_MODE: u32 = 0o644;

/// The registry files' steps, in the order they are applied.
pub fn plan(settings: &Settings, facts: &RegistryFacts) -> Vec<RuntimeStep> {
    if !facts.errors.is_empty() {
        return vec![RuntimeStep::with_remedy(
            "registries",
            WHY_HOSTS_TOML,
            Outcome::Failed,
            format!(
                "cannot read the registry files: {}",
                facts.errors.join("; ")
            ),
            "check the permissions of /etc/rancher and /etc/containerd/certs.d",
        )];
    }
    let reg = &settings.registries;
    let yaml = (settings.rancher.mode == RegistrationMode::SystemAgent && !reg.is_empty())
        .then(|| render_registries_yaml(reg));
    let mut steps = Vec::new();
    for (step, path) in [
        ("registries.rke2", RKE2_REGISTRIES),
        ("registries.k3s", K3S_REGISTRIES),
    ] {
        steps.extend(registries_yaml_step(step, path, yaml.as_ref(), reg, facts));
    }
    steps.extend(hosts_toml_steps(reg, facts));
    steps
}

/// What a registries.yaml holds, in words: registries and kinds of credentials, no values.
fn summary(reg: &RegistrySettings) -> String {
    let mirrors: Vec<&str> = reg.mirrors.keys().map(String::as_str).collect();
    let auth: Vec<String> = reg
        .configs
        .iter()
        .filter_map(|(host, c)| {
            c.auth
                .as_ref()
                .map(|a| format!("{host} ({})", a.describe()))
        })
        .collect();
    let list = |v: &[&str]| {
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    };
    let auth_refs: Vec<&str> = auth.iter().map(String::as_str).collect();
    format!(
        "mirrors for {}; credentials for {}",
        list(&mirrors),
        list(&auth_refs)
    )
}

fn registries_yaml_step(
    step: &'static str,
    path: &str,
    want: Option<&Secret>,
    reg: &RegistrySettings,
    facts: &RegistryFacts,
) -> Option<RuntimeStep> {
    let now = facts.files.get(path);
    match (want, now) {
        (Some(content), now) => Some(write_step(
            step,
            WHY_REGISTRIES_YAML,
            path,
            now,
            content.expose(),
            SECRET_MODE,
            &summary(reg),
            |content| RuntimeAction::WriteSecretFile {
                path: path.into(),
                content: Secret::new(content),
                mode: SECRET_MODE,
            },
        )),
        (None, Some(s)) if s.ours => Some(remove_step(step, WHY_REGISTRIES_YAML, path)),
        (None, _) => None,
    }
}

/// A file to have `content` with `mode`: nothing to do when it already has, else written
/// with `action` (the detail says what, never the content).
#[allow(clippy::too_many_arguments)]
fn write_step(
    step: &'static str,
    why: &'static str,
    path: &str,
    now: Option<&FileState>,
    content: &str,
    mode: u32,
    what: &str,
    action: impl FnOnce(String) -> RuntimeAction,
) -> RuntimeStep {
    let same = now.is_some_and(|s| s.sha256 == digest(content.as_bytes()) && s.mode == mode);
    if same {
        return RuntimeStep::report(
            step,
            why,
            Outcome::Ok,
            format!("{path} already as required ({what})"),
        );
    }
    let verb = match now {
        None => "write",
        Some(s) if s.ours => "update",
        // The userdata is the authority on the registries it names; say whose file goes.
        Some(_) => "replace (not written by bootstrapd)",
    };
    RuntimeStep::change(
        step,
        why,
        format!("{verb} {path} (mode {mode:04o}): {what}"),
        action(content.to_string()),
    )
}

fn remove_step(step: &'static str, why: &'static str, path: &str) -> RuntimeStep {
    RuntimeStep::change(
        step,
        why,
        format!("remove {path}: bootstrapd wrote it and the userdata no longer asks for it"),
        RuntimeAction::RemoveFile { path: path.into() },
    )
}

/// registries.yaml in RKE2's format. Written as JSON, which is YAML 1.2 (and read as such
/// by the Go YAML parsers RKE2 and K3s use): serde_json quotes every string, so a password
/// such as `no`, `0x10`, `*a` or `- x` stays a string, where hand-written YAML would need
/// YAML's own quoting rules to be got right. The comment line above it is YAML too.
pub fn render_registries_yaml(reg: &RegistrySettings) -> Secret {
    let mirrors: Map<String, Value> = reg
        .mirrors
        .iter()
        .map(|(host, m)| (host.clone(), json!({ "endpoint": m.endpoint })))
        .collect();
    let configs: Map<String, Value> = reg
        .configs
        .iter()
        .map(|(host, c)| {
            let entry = match &c.auth {
                Some(RegistryAuth::Basic { username, password }) => json!({
                    "auth": { "username": username, "password": password.expose() }
                }),
                Some(RegistryAuth::IdentityToken(t)) => {
                    json!({ "auth": { "identity_token": t.expose() } })
                }
                None => json!({}),
            };
            (host.clone(), entry)
        })
        .collect();
    let doc = json!({ "mirrors": mirrors, "configs": configs });
    let body = serde_json::to_string_pretty(&doc)
        .unwrap_or_else(|e| unreachable!("a JSON value always serialises: {e}"));
    Secret::new(format!(
        "{MARKER}; RKE2/K3s registries.yaml as JSON (which is YAML).\n{body}\n"
    ))
}

/// The hosts directory containerd looks up for a registry: the registry as named, with its
/// port (`host:port`), and `_default` for the `*` entry (containerd docs/hosts.md).
pub fn hosts_dir(registry: &str) -> &str {
    if registry == "*" {
        "_default"
    } else {
        registry
    }
}

/// A registry's hosts.toml: its mirrors in order, each for pull and resolve, then the
/// registry itself (`server`; Docker Hub's is registry-1.docker.io). No credentials:
/// hosts.toml has no field for them (containerd takes them from the CRI's auth config),
/// and this file is world-readable.
pub fn render_hosts_toml(registry: &str, endpoints: &[String]) -> String {
    let mut out = format!("{MARKER}; containerd hosts.toml (no credentials here).\n");
    let server = match registry {
        "*" => None,
        DOCKER_HUB => Some("https://registry-1.docker.io".to_string()),
        r => Some(format!("https://{r}")),
    };
    if let Some(s) = server {
        let mut t = toml::Table::new();
        t.insert("server".into(), toml::Value::String(s));
        out.push_str(&toml::to_string(&t).unwrap_or_default());
    }
    // One table per endpoint, in the userdata's order: containerd tries them in file order,
    // and a map would sort them.
    for e in endpoints {
        let mut caps = toml::Table::new();
        caps.insert(
            "capabilities".into(),
            toml::Value::Array(vec!["pull".into(), "resolve".into()]),
        );
        let mut host = toml::Table::new();
        host.insert(e.clone(), toml::Value::Table(caps));
        let mut t = toml::Table::new();
        t.insert("host".into(), toml::Value::Table(host));
        out.push('\n');
        out.push_str(&toml::to_string(&t).unwrap_or_default());
    }
    out
}

fn hosts_toml_steps(reg: &RegistrySettings, facts: &RegistryFacts) -> Vec<RuntimeStep> {
    const S: &str = "registries.containerd";
    let mut steps = Vec::new();
    let mut wanted = Vec::new();
    for (registry, mirror) in &reg.mirrors {
        let path = hosts_toml(hosts_dir(registry));
        let content = render_hosts_toml(registry, &mirror.endpoint);
        let what = format!("{registry} through {}", mirror.endpoint.join(", "));
        steps.push(write_step(
            S,
            WHY_HOSTS_TOML,
            &path,
            facts.files.get(&path),
            &content,
            HOSTS_TOML_MODE,
            &what,
            |content| RuntimeAction::WriteFile {
                path: path.clone(),
                content,
                mode: HOSTS_TOML_MODE,
            },
        ));
        wanted.push(path);
    }
    let stale = facts
        .files
        .iter()
        .filter(|(path, state)| state.ours && path.starts_with(CERTS_D) && !wanted.contains(path));
    for (path, _) in stale {
        steps.push(remove_step(S, WHY_HOSTS_TOML, path));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userdata::{RegistryConfig, RegistryMirror};
    use std::collections::BTreeMap;

    fn registries() -> RegistrySettings {
        RegistrySettings {
            mirrors: BTreeMap::from([
                (
                    "docker.io".to_string(),
                    RegistryMirror {
                        endpoint: vec![
                            "https://mirror.lab:5000".into(),
                            "http://10.0.2.2:5001".into(),
                        ],
                    },
                ),
                (
                    "*".to_string(),
                    RegistryMirror {
                        endpoint: vec!["https://all.lab".into()],
                    },
                ),
            ]),
            configs: BTreeMap::from([
                (
                    "10.0.2.2:5443".to_string(),
                    RegistryConfig {
                        auth: Some(RegistryAuth::Basic {
                            username: "agent".into(),
                            password: Secret::new("no"),
                        }),
                    },
                ),
                (
                    "ghcr.io".to_string(),
                    RegistryConfig {
                        auth: Some(RegistryAuth::IdentityToken(Secret::new("tok\"en"))),
                    },
                ),
            ]),
        }
    }

    fn system_agent(reg: RegistrySettings) -> Settings {
        let mut s = Settings::rke1_worker();
        s.rancher.mode = RegistrationMode::SystemAgent;
        s.registries = reg;
        s
    }

    #[test]
    fn registries_yaml_is_rke2s_format_and_keeps_passwords_strings() {
        let text = render_registries_yaml(&registries());
        let text = text.expose();
        assert!(text.starts_with(MARKER), "{text}");
        // The Rust YAML parser the userdata uses reads it as YAML, as RKE2 would.
        let (_, json) = text.split_once('\n').unwrap();
        let v: Value = serde_json::from_str(json).unwrap();
        assert_eq!(
            v["mirrors"]["docker.io"]["endpoint"],
            json!(["https://mirror.lab:5000", "http://10.0.2.2:5001"])
        );
        assert_eq!(
            v["configs"]["10.0.2.2:5443"]["auth"],
            json!({"username": "agent", "password": "no"})
        );
        assert_eq!(
            v["configs"]["ghcr.io"]["auth"],
            json!({"identity_token": "tok\"en"})
        );
        let tree = crate::userdata::tree::build(text);
        assert!(tree.problems.is_empty(), "{:?}", tree.problems);
        let root = tree.root.unwrap();
        let (_, configs) = root.get("configs").unwrap();
        let (_, host) = configs.get("10.0.2.2:5443").unwrap();
        let (_, auth) = host.get("auth").unwrap();
        let (_, password) = auth.get("password").unwrap();
        // `no` is quoted, so no YAML reader takes it for a boolean.
        assert!(matches!(
            &password.value,
            crate::userdata::tree::Value::Scalar { text, style }
                if text == "no" && *style == crate::userdata::tree::Style::Quoted
        ));
    }

    #[test]
    fn hosts_toml_lists_the_mirrors_in_order_without_credentials() {
        let t = render_hosts_toml(
            "docker.io",
            &[
                "https://mirror.lab:5000".into(),
                "http://10.0.2.2:5001".into(),
            ],
        );
        let body: String = t.lines().skip(1).collect::<Vec<_>>().join("\n");
        assert_eq!(
            body,
            "server = \"https://registry-1.docker.io\"\n\n\
             [host.\"https://mirror.lab:5000\"]\n\
             capabilities = [\"pull\", \"resolve\"]\n\n\
             [host.\"http://10.0.2.2:5001\"]\n\
             capabilities = [\"pull\", \"resolve\"]"
        );
        let parsed: toml::Table = toml::from_str(&t).unwrap();
        assert_eq!(
            parsed["server"].as_str(),
            Some("https://registry-1.docker.io")
        );
        assert_eq!(
            render_hosts_toml("registry.lab:5000", &["https://m".into()])
                .lines()
                .nth(1),
            Some("server = \"https://registry.lab:5000\"")
        );
        // The `*` entry is containerd's `_default`, which has no server of its own.
        assert!(!render_hosts_toml("*", &["https://m".into()]).contains("server"));
        assert_eq!(hosts_dir("*"), "_default");
        assert_eq!(hosts_dir("10.0.2.2:5443"), "10.0.2.2:5443");
    }

    #[test]
    fn system_agent_gets_both_registries_yaml_and_no_secret_in_the_plan() {
        let steps = plan(&system_agent(registries()), &RegistryFacts::default());
        let names: Vec<&str> = steps.iter().map(|s| s.step).collect();
        assert_eq!(
            names,
            [
                "registries.rke2",
                "registries.k3s",
                "registries.containerd",
                "registries.containerd"
            ]
        );
        match &steps[0].action {
            RuntimeAction::WriteSecretFile { path, mode, .. } => {
                assert_eq!((path.as_str(), *mode), (RKE2_REGISTRIES, 0o600));
            }
            other => panic!("{other:?}"),
        }
        let shown = format!("{steps:?}{}", serde_json::to_string(&steps).unwrap());
        assert!(
            !shown.contains("tok\\\"en") && !shown.contains("\"no\""),
            "{shown}"
        );
        assert_eq!(
            steps[0].preview().detail,
            "write /etc/rancher/rke2/registries.yaml (mode 0600): mirrors for *, docker.io; \
             credentials for 10.0.2.2:5443 (username and password), ghcr.io (identity token)"
        );
        assert!(
            matches!(&steps[2].action, RuntimeAction::WriteFile { path, .. } if path == "/etc/containerd/certs.d/_default/hosts.toml")
        );
    }

    #[test]
    fn files_in_place_are_left_and_ours_are_removed_when_no_longer_asked_for() {
        let reg = registries();
        let yaml = render_registries_yaml(&reg);
        let state = |data: &str, mode| FileState {
            ours: data.starts_with(MARKER),
            sha256: digest(data.as_bytes()),
            mode,
        };
        let mut facts = RegistryFacts::default();
        facts
            .files
            .insert(RKE2_REGISTRIES.into(), state(yaml.expose(), 0o600));
        // Same content, but world-readable: rewritten 0600.
        facts
            .files
            .insert(K3S_REGISTRIES.into(), state(yaml.expose(), 0o644));
        let steps = plan(&system_agent(reg.clone()), &facts);
        assert_eq!(steps[0].preview().outcome, Outcome::Ok);
        assert!(steps[1].changes());

        // The key gone: bootstrapd's files go, the operator's stay.
        let stale = hosts_toml("old.lab");
        let theirs = hosts_toml("theirs.lab");
        facts.files.insert(stale.clone(), state(MARKER, 0o644));
        facts
            .files
            .insert(theirs.clone(), state("server = 1", 0o644));
        let steps = plan(&system_agent(RegistrySettings::default()), &facts);
        let removed: Vec<&str> = steps
            .iter()
            .map(|s| match &s.action {
                RuntimeAction::RemoveFile { path } => path.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(removed, [RKE2_REGISTRIES, K3S_REGISTRIES, stale.as_str()]);
        // rke1 writes no registries.yaml (RKE1 does not read one).
        let mut rke1 = Settings::rke1_worker();
        rke1.registries = reg;
        let names: Vec<&str> = plan(&rke1, &RegistryFacts::default())
            .iter()
            .map(|s| s.step)
            .collect();
        assert_eq!(names, ["registries.containerd", "registries.containerd"]);
    }
}
