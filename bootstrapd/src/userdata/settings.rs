//! The settings model: what a node's userdata may ask of bootstrapd.
//!
//! Values here are already validated; `userdata::validate` is the only producer.
//! Serialising a `Settings` never prints a secret (see [`crate::secret::Secret`]).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use crate::userdata::schema;

pub use super::proxy::ProxySettings;

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Roles this node takes in the cluster: one or more of etcd, controlplane, worker.
    #[schemars(length(min = 1), extend("uniqueItems" = true))]
    pub roles: Vec<Role>,
    pub rancher: RancherSettings,
    #[serde(default)]
    pub runtime: RuntimeSettings,
    #[serde(default)]
    pub host: HostSettings,
    /// The node's hostname, set through systemd-hostnamed while the host is prepared (before
    /// the runtime and the Rancher agent start). Absent: the hostname is left as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<HostnameSetting>,
    /// SSH public keys added to one user's ~/.ssh/authorized_keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshSettings>,
    /// The HTTP(S) proxy the node reaches the outside through: used by bootstrapd's own
    /// requests after the userdata is read, Docker and containerd (systemd drop-ins), the
    /// Rancher agent and the package managers. Link-local metadata services never go through
    /// it.
    #[serde(default, skip_serializing_if = "ProxySettings::is_empty")]
    pub proxy: ProxySettings,
    /// PEM bundles of CA certificates added to the system trust store (before the container
    /// runtime starts) and trusted by bootstrapd's own downloads; never by the pinned
    /// Rancher CA (`rancher.ca_checksum` stays exact).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("uniqueItems" = true))]
    pub trusted_ca: Vec<TrustedCa>,
    /// Registry mirrors and credentials, in the shape of RKE2's and K3s's registries.yaml.
    #[serde(default, skip_serializing_if = "RegistrySettings::is_empty")]
    pub registries: RegistrySettings,
}

/// One `trusted_ca` item: PEM text of one or more `CERTIFICATE` blocks, each of which
/// rustls/webpki accepts as a trust anchor (checked by `validate`). Public data: shown by
/// `plan` and `query` as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedCa {
    /// The bundle as the userdata gives it.
    pub pem: String,
    /// How many certificates it holds.
    pub count: usize,
}

impl TrustedCa {
    /// Its certificates (DER), in order.
    pub fn certificates(&self) -> Vec<rustls_pki_types::CertificateDer<'static>> {
        super::ca::certificates(&self.pem)
    }
}

/// Every certificate of the bundles, in order: the extra trust anchors of bootstrapd's own
/// clients that trust the system roots.
pub fn trusted_ca_anchors(cas: &[TrustedCa]) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    cas.iter().flat_map(TrustedCa::certificates).collect()
}

// In userdata an item is the PEM string itself.
impl Serialize for TrustedCa {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.pem)
    }
}

impl JsonSchema for TrustedCa {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TrustedCa".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "PEM text of one or more CA certificates (`-----BEGIN CERTIFICATE-----` blocks; blank lines and `#` comments between them). No other PEM blocks (never a private key).",
            "type": "string",
            "pattern": schema::TRUSTED_CA,
        })
    }
}

/// Where the hostname comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum HostnameSetting {
    /// The datasource's hostname (NoCloud and EC2 `local-hostname`, OpenStack `hostname`),
    /// its first label in lowercase.
    Metadata,
    /// A template over facts: letters, digits, `-` and the placeholders `{instance_id}`,
    /// `{serial}` (SMBIOS) and `{mac}` (first physical NIC, 12 hex digits); the expansion is
    /// lowercased, other characters become `-`, and it is cut to 63 characters.
    Template(#[schemars(pattern(schema::HOSTNAME_TEMPLATE))] String),
}

/// The user whose keys are managed: created (useradd) when absent; keys already in the
/// file are kept, the userdata's added once each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshSettings {
    /// Default `root` (sshd's default PermitRootLogin takes keys).
    #[serde(default = "default_ssh_user")]
    #[schemars(pattern(schema::USER_NAME))]
    pub user: String,
    /// OpenSSH public key lines, `TYPE BASE64 [COMMENT]`, without an options prefix.
    #[schemars(
        length(min = 1),
        inner(pattern(schema::PUBLIC_KEY)),
        extend("uniqueItems" = true)
    )]
    pub authorized_keys: Vec<String>,
}

pub const DEFAULT_SSH_USER: &str = "root";

pub(crate) fn default_ssh_user() -> String {
    DEFAULT_SSH_USER.to_string()
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

// Deserialize: the journal's registration record names the mode it registered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RegistrationMode {
    /// Rancher 2.0-2.11 RKE1 "existing nodes": the rancher-agent container on Docker.
    /// RKE1 was removed in Rancher 2.12.0; choose it explicitly.
    Rke1,
    /// Rancher >= 2.6 custom RKE2/K3s clusters: rancher-system-agent. The default.
    #[default]
    SystemAgent,
}

pub const DEFAULT_AGENT_IMAGE: &str = "rancher/rancher-agent:v2.6.14";
pub const DEFAULT_DEADLINE_SECONDS: u64 = 900;
/// With the registration backoff (2 s first cap, 8 s at most, full jitter) this keeps a fleet
/// booting at once under 3x the mean request rate while Rancher is down (bench/: fleet).
pub const DEFAULT_SPLAY_SECONDS: u64 = 4;
pub const MAX_SPLAY_SECONDS: u64 = 300;

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RancherSettings {
    /// https URL of the Rancher server.
    #[schemars(pattern(schema::SERVER))]
    pub server: String,
    /// Cluster registration token. Never logged.
    #[schemars(schema_with = "schema::token")]
    pub token: Secret,
    /// sha256 of the server's CA (64 lowercase hex), as in the node command's --ca-checksum.
    #[serde(default)]
    #[schemars(pattern(schema::CHECKSUM))]
    pub ca_checksum: Option<String>,
    #[serde(default)]
    pub mode: RegistrationMode,
    /// Agent image for mode rke1 (default rancher/rancher-agent:v2.6.14 there); an error in
    /// mode system-agent.
    #[serde(default = "default_agent_image")]
    #[schemars(pattern(schema::IMAGE))]
    pub agent_image: String,
    #[serde(default)]
    #[schemars(pattern(schema::NODE_NAME), length(max = 253))]
    pub node_name: Option<String>,
    #[serde(default)]
    #[schemars(pattern(schema::ADDRESS), length(max = 64))]
    pub address: Option<String>,
    #[serde(default)]
    #[schemars(pattern(schema::ADDRESS), length(max = 64))]
    pub internal_address: Option<String>,
    #[serde(default)]
    #[schemars(schema_with = "schema::labels")]
    pub labels: BTreeMap<String, String>,
    /// Taints in key=value:Effect form.
    #[serde(default)]
    pub taints: Vec<Taint>,
    /// Overall time allowed for reaching and registering with the server, in seconds.
    #[serde(default = "default_deadline")]
    #[schemars(range(min = 1, max = 604800))]
    pub deadline_seconds: u64,
    /// When the server does not answer at once (down, starting, busy), the first retry waits
    /// a random time up to this many seconds (at least 2), so a fleet that boots at once
    /// spreads its retries instead of coming back in one burst. The first contact is never
    /// delayed.
    #[serde(default = "default_splay")]
    #[schemars(range(min = 0, max = 300))]
    pub splay_seconds: u64,
    /// System-agent mode: the agent trusts only Rancher's CA (CATTLE_AGENT_STRICT_VERIFY).
    /// Absent: as the server's agent-tls-mode says (false if it says nothing). Strict needs
    /// ca_checksum, or a Rancher that proves its CA by X-Cattle-Hash.
    #[serde(default)]
    pub strict_verify: Option<bool>,
    /// How mode system-agent installs rancher-system-agent.
    #[serde(default)]
    pub system_agent: SystemAgentSettings,
    /// Mode rke1: a registry `host[:port]` put before the agent image, as Rancher's own
    /// `system-default-registry` setting does (`rancher/rancher-agent:v2.9.0` becomes
    /// `HOST/rancher/rancher-agent:v2.9.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(schema::REGISTRY_HOST))]
    pub system_default_registry: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemAgentSettings {
    /// Where the agent binary comes from when not from `<server>/assets` (air-gapped sites).
    /// Without it: the runtime offline bundle's `system-agent/` if it has the agent, else
    /// `<server>/assets`.
    #[serde(default)]
    pub binary: Option<AgentBinary>,
    /// The node's CATTLE_ID, which names its machine in Rancher (`custom-` + sha256 of it).
    /// `random` (the default, as Rancher's install.sh): made on first registration and kept
    /// in /etc/rancher/agent/cattle-id, so a reimaged node (new disk) is a new machine.
    /// `instance_id`: derived from the datasource's instance id, the server and the
    /// registration token, so a reimage with the same instance id is the same machine.
    /// `{value: HEX}`: the operator's own, 1 to 63 lowercase hexadecimal digits.
    #[serde(default, skip_serializing_if = "MachineId::is_random")]
    pub machine_id: MachineId,
}

/// Where the system agent's CATTLE_ID comes from (see `rancher.system_agent.machine_id`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MachineId {
    /// Random on first registration, then kept in /etc/rancher/agent/cattle-id.
    #[default]
    Random,
    /// sha256 over the datasource's instance id, the server URL and the registration token.
    InstanceId,
    /// The operator's own id: 1 to 63 lowercase hexadecimal digits (a Kubernetes label value).
    Value(#[schemars(pattern(schema::MACHINE_ID))] String),
}

impl MachineId {
    pub fn is_random(&self) -> bool {
        *self == MachineId::Random
    }

    /// The choice as the userdata names it.
    pub fn describe(&self) -> &'static str {
        match self {
            MachineId::Random => "random",
            MachineId::InstanceId => "instance_id",
            MachineId::Value(_) => "value",
        }
    }
}

/// Exactly one of `url` or `path`, and the binary's sha256, checked before it is installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    { "required": ["url"] },
    { "required": ["path"] },
]))]
pub struct AgentBinary {
    /// http(s) URL of the rancher-system-agent binary for this node's architecture.
    #[serde(default)]
    #[schemars(pattern(schema::HTTP_URL))]
    pub url: Option<String>,
    /// Absolute path of the binary on the node (e.g. baked into the image).
    #[serde(default)]
    #[schemars(pattern(schema::ABS_PATH))]
    pub path: Option<String>,
    /// sha256 of the binary, 64 hexadecimal digits.
    #[schemars(pattern(schema::CHECKSUM))]
    pub sha256: String,
}

fn default_splay() -> u64 {
    DEFAULT_SPLAY_SECONDS
}

fn default_agent_image() -> String {
    DEFAULT_AGENT_IMAGE.to_string()
}

fn default_deadline() -> u64 {
    DEFAULT_DEADLINE_SECONDS
}

/// In userdata a taint is one string, `key=value:Effect` (see the `JsonSchema` impl below).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: TaintEffect,
}

impl JsonSchema for Taint {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Taint".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "key=value:Effect (or key:Effect); Effect is NoSchedule, PreferNoSchedule or NoExecute.",
            "type": "string",
            "pattern": schema::taint_pattern(),
        })
    }
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
    #[schemars(schema_with = "schema::version")]
    pub version: Option<String>,
    #[serde(default)]
    pub source: RuntimeSource,
    /// Registry mirrors written to /etc/docker/daemon.json before the first start.
    #[serde(default)]
    #[schemars(inner(pattern(schema::HTTP_URL)), extend("uniqueItems" = true))]
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
    /// A systemd system extension image holding the engine (dockerd, containerd, runc and
    /// their units), merged over /usr by systemd-sysext: the way on a read-only /usr.
    Sysext(SysextSource),
}

/// Exactly one of `url` or `path` of a systemd-sysext image (`NAME.raw`), and its sha256,
/// checked before the image is placed under /var/lib/extensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    { "required": ["url"] },
    { "required": ["path"] },
]))]
pub struct SysextSource {
    /// http(s) URL of the image; its file name (`NAME.raw`) names the extension (the schema
    /// cannot say so; `bootstrapd validate` does).
    #[serde(default)]
    #[schemars(pattern(schema::HTTP_URL))]
    pub url: Option<String>,
    /// Absolute path of the image on the node (e.g. baked into /var of the image).
    #[serde(default)]
    #[schemars(pattern(schema::ABS_PATH))]
    pub path: Option<String>,
    /// sha256 of the image, 64 hexadecimal digits.
    #[schemars(pattern(schema::CHECKSUM))]
    pub sha256: String,
}

impl SysextSource {
    /// The URL or the path, whichever the userdata gave.
    pub fn location(&self) -> &str {
        self.url
            .as_deref()
            .or(self.path.as_deref())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("anyOf" = [
    { "required": ["key"] },
    { "required": ["trusted"], "properties": { "trusted": { "const": true } } },
]))]
pub struct RepoSource {
    #[schemars(pattern(schema::REPO_URL))]
    pub url: String,
    /// Signing key (URL or path). Without one the repository must be explicitly trusted.
    #[serde(default)]
    #[schemars(pattern(schema::KEY_LOCATION))]
    pub key: Option<String>,
    /// apt: suite (default "stable"); ignored for yum.
    #[serde(default)]
    #[schemars(pattern(schema::APT_WORD))]
    pub suite: Option<String>,
    /// apt: components (default ["stable"]); ignored for yum.
    #[serde(default)]
    #[schemars(inner(pattern(schema::APT_WORD)), extend("uniqueItems" = true))]
    pub components: Vec<String>,
    /// Trust the repository without a signing key (local/lab repositories only).
    #[serde(default)]
    pub trusted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OfflineSource {
    #[schemars(pattern(schema::ABS_PATH))]
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
    #[schemars(inner(pattern(schema::MODULE)), extend("uniqueItems" = true))]
    pub modules: Vec<String>,
    /// sysctls to set in addition to the ones Kubernetes needs.
    #[serde(default)]
    #[schemars(schema_with = "schema::sysctls")]
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

// The maps' schemas here, beside their value types (schema.rs holds patterns only, and
// depends on nothing in this file).
fn registry_mirrors(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Per registry (host[:port], or * for every registry without its own entry): the endpoints to pull through.",
        "type": "object",
        "propertyNames": { "pattern": schema::MIRROR_HOST },
        "additionalProperties": generator.subschema_for::<RegistryMirror>(),
        "default": {},
    })
}

fn registry_configs(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Per registry host (host[:port]): the credentials to pull with.",
        "type": "object",
        "propertyNames": { "pattern": schema::REGISTRY_HOST },
        "additionalProperties": generator.subschema_for::<RegistryConfig>(),
        "default": {},
    })
}

/// Registry mirrors and credentials: the shape of RKE2's and K3s's registries.yaml
/// (docs.rke2.io/install/containerd_registry_configuration), so an operator can paste theirs
/// (its `mirrors.*.endpoint` and `configs.*.auth`; `rewrite` and `tls` are not taken).
#[derive(Debug, Clone, PartialEq, Default, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// Per registry (`host[:port]`, or `*` for every registry without an entry of its own),
    /// the endpoints to pull through, tried in order before the registry itself.
    #[serde(default)]
    #[schemars(schema_with = "registry_mirrors")]
    pub mirrors: BTreeMap<String, RegistryMirror>,
    /// Per registry host (`host[:port]`): the credentials to pull with.
    #[serde(default)]
    #[schemars(schema_with = "registry_configs")]
    pub configs: BTreeMap<String, RegistryConfig>,
}

impl RegistrySettings {
    pub fn is_empty(&self) -> bool {
        self.mirrors.is_empty() && self.configs.is_empty()
    }

    /// The mirror endpoints that apply to `registry`: its own entry, else the `*` entry (as
    /// RKE2 and containerd fall back to it).
    pub fn mirrors_for(&self, registry: &str) -> &[String] {
        self.mirrors
            .get(registry)
            .or_else(|| self.mirrors.get("*"))
            .map(|m| m.endpoint.as_slice())
            .unwrap_or_default()
    }

    /// Docker Hub's mirrors for Docker's daemon.json: `runtime.registry_mirrors` first, then
    /// the registries' endpoints for docker.io, each once. Docker's `registry-mirrors` only
    /// ever apply to Docker Hub (docs.docker.com/docker-hub/image-library/mirror/: "It's not
    /// possible to mirror another private registry"), so no other registry's go there.
    pub fn docker_hub_mirrors(&self, runtime_mirrors: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in runtime_mirrors.iter().chain(self.mirrors_for("docker.io")) {
            if !out.contains(m) {
                out.push(m.clone());
            }
        }
        out
    }

    /// The credentials for `registry` (a host[:port] as an image reference names it).
    pub fn auth_for(&self, registry: &str) -> Option<&RegistryAuth> {
        self.configs.get(registry).and_then(|c| c.auth.as_ref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryMirror {
    /// http(s) URLs of the mirror's endpoints, without credentials.
    #[schemars(
        length(min = 1),
        inner(pattern(schema::HTTP_URL)),
        extend("uniqueItems" = true)
    )]
    pub endpoint: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RegistryAuth>,
}

/// How to log in to a registry: `username` and `password`, or an `identity_token` alone
/// (an OAuth refresh token, as Docker's `identitytoken`). Never printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    Basic { username: String, password: Secret },
    IdentityToken(Secret),
}

impl RegistryAuth {
    /// What kind of credentials, for plans and logs (never the values).
    pub fn describe(&self) -> &'static str {
        match self {
            RegistryAuth::Basic { .. } => "username and password",
            RegistryAuth::IdentityToken(_) => "identity token",
        }
    }
}

/// As the userdata writes it; the secrets come out redacted (`Secret`'s `Serialize`).
impl Serialize for RegistryAuth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        match self {
            RegistryAuth::Basic { username, password } => {
                m.serialize_entry("username", username)?;
                m.serialize_entry("password", password)?;
            }
            RegistryAuth::IdentityToken(t) => m.serialize_entry("identity_token", t)?,
        }
        m.end()
    }
}

impl JsonSchema for RegistryAuth {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RegistryAuth".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schema::registry_auth()
    }
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

#[cfg(test)]
impl Settings {
    /// One worker in mode rke1 with the default agent image and nothing else asked for: what
    /// the unit tests of the planner and the stages start from, changing only what they test.
    /// (The integration tests have the same in `tests/common`.)
    pub(crate) fn rke1_worker() -> Settings {
        Settings {
            roles: vec![Role::Worker],
            rancher: RancherSettings {
                server: "https://rancher.example".into(),
                token: Secret::new("token-abc"),
                ca_checksum: None,
                mode: RegistrationMode::Rke1,
                agent_image: DEFAULT_AGENT_IMAGE.into(),
                node_name: None,
                address: None,
                internal_address: None,
                labels: BTreeMap::new(),
                taints: vec![],
                deadline_seconds: 900,
                splay_seconds: 0,
                strict_verify: None,
                system_agent: SystemAgentSettings::default(),
                system_default_registry: None,
            },
            runtime: RuntimeSettings::default(),
            host: HostSettings::default(),
            hostname: None,
            ssh: None,
            trusted_ca: Vec::new(),
            proxy: ProxySettings::default(),
            registries: RegistrySettings::default(),
        }
    }
}
