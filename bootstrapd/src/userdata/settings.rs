//! The settings model: what a node's userdata may ask of bootstrapd.
//!
//! Values here are already validated; `userdata::validate` is the only producer.
//! Serialising a `Settings` never prints a secret (see [`crate::secret::Secret`]).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use crate::secret::Secret;

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Roles this node takes in the cluster: one or more of etcd, controlplane, worker.
    pub roles: Vec<Role>,
    pub rancher: RancherSettings,
    #[serde(default)]
    pub runtime: RuntimeSettings,
    #[serde(default)]
    pub host: HostSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Etcd,
    Controlplane,
    Worker,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Etcd, Role::Controlplane, Role::Worker];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Etcd => "etcd",
            Role::Controlplane => "controlplane",
            Role::Worker => "worker",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RegistrationMode {
    /// Rancher 2.0-2.6 "existing nodes": the rancher-agent container on Docker.
    #[default]
    Rke1,
    /// Rancher >= 2.6 custom RKE2/K3s clusters: rancher-system-agent.
    SystemAgent,
}

pub const DEFAULT_AGENT_IMAGE: &str = "rancher/rancher-agent:v2.6.14";
pub const DEFAULT_DEADLINE_SECONDS: u64 = 900;

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RancherSettings {
    /// https URL of the Rancher server.
    pub server: String,
    /// Cluster registration token. Never logged.
    pub token: Secret,
    /// sha256 of the server's CA (64 lowercase hex), as in the node command's --ca-checksum.
    #[serde(default)]
    pub ca_checksum: Option<String>,
    #[serde(default)]
    pub mode: RegistrationMode,
    /// Agent image for mode rke1.
    #[serde(default = "default_agent_image")]
    pub agent_image: String,
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub internal_address: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Taints in key=value:Effect form.
    #[serde(default)]
    pub taints: Vec<Taint>,
    /// Overall time allowed for reaching and registering with the server, in seconds.
    #[serde(default = "default_deadline")]
    pub deadline_seconds: u64,
}

fn default_agent_image() -> String {
    DEFAULT_AGENT_IMAGE.to_string()
}

fn default_deadline() -> u64 {
    DEFAULT_DEADLINE_SECONDS
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: TaintEffect,
}

impl std::fmt::Display for Taint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}:{}", self.key, self.value, self.effect.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl TaintEffect {
    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    #[serde(default)]
    pub engine: Engine,
    /// Version constraint, e.g. "20.10", ">=20.10", "=24.0.7".
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub source: RuntimeSource,
    /// Registry mirrors written to /etc/docker/daemon.json before the first start.
    #[serde(default)]
    pub registry_mirrors: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    #[default]
    Docker,
    Containerd,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeSource {
    /// The distribution's own repositories (apt, dnf or zypper, whichever the host has).
    #[default]
    Distro,
    /// A package repository (apt or yum layout) given by URL.
    Repo(RepoSource),
    /// An offline bundle directory baked into the image (packages and image archives).
    Offline(OfflineSource),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoSource {
    pub url: String,
    /// Signing key (URL or path). Without one the repository must be explicitly trusted.
    #[serde(default)]
    pub key: Option<String>,
    /// apt: suite (default "stable"); ignored for yum.
    #[serde(default)]
    pub suite: Option<String>,
    /// apt: components (default ["stable"]); ignored for yum.
    #[serde(default)]
    pub components: Vec<String>,
    /// Trust the repository without a signing key (local/lab repositories only).
    #[serde(default)]
    pub trusted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OfflineSource {
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostSettings {
    #[serde(default)]
    pub firewalld: FirewalldPolicy,
    #[serde(default)]
    pub selinux: SelinuxPolicy,
    #[serde(default)]
    pub iptables_backend: IptablesBackend,
    /// Kernel modules to load in addition to the ones Kubernetes needs.
    #[serde(default)]
    pub modules: Vec<String>,
    /// sysctls to set in addition to the ones Kubernetes needs.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    #[serde(default)]
    pub swap: SwapPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FirewalldPolicy {
    #[default]
    Disable,
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SelinuxPolicy {
    #[default]
    Require,
    Install,
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IptablesBackend {
    #[default]
    Auto,
    Legacy,
    Nft,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SwapPolicy {
    /// Leave swap as it is; warn when it is on (RKE runs kubelet with --fail-swap-on=false).
    #[default]
    Keep,
    /// Turn swap off now and for later boots.
    Off,
}

/// Modules Kubernetes networking needs (k3s syssetup, RKE docs).
pub const REQUIRED_MODULES: [&str; 5] = [
    "br_netfilter",
    "overlay",
    "iptable_nat",
    "iptable_filter",
    "nf_conntrack",
];

/// sysctls Kubernetes networking needs.
pub const REQUIRED_SYSCTLS: [(&str, &str); 3] = [
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv4.conf.all.forwarding", "1"),
];
