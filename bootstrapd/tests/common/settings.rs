//! Settings as a test needs them: a mode and a server, then only what the test is about.

use std::collections::BTreeMap;

use bootstrapd::secret::Secret;
use bootstrapd::userdata::{
    AgentBinary, DEFAULT_AGENT_IMAGE, HostSettings, HostnameSetting, ProxySettings,
    RancherSettings, RegistrationMode, Role, RuntimeSettings, Settings, SshSettings, Taint,
    TrustedCa,
};

/// Builds [`Settings`] for one worker node, no CA checksum, no splay and a 900 s deadline,
/// the same way validated userdata would hold them.
pub struct SettingsBuilder(Settings);

impl SettingsBuilder {
    /// Mode system-agent (RKE2/K3s): no agent image.
    pub fn system_agent(server: &str) -> Self {
        Self::new(server, RegistrationMode::SystemAgent, String::new())
    }

    /// Mode rke1 with the default agent image.
    pub fn rke1(server: &str) -> Self {
        Self::new(server, RegistrationMode::Rke1, DEFAULT_AGENT_IMAGE.into())
    }

    fn new(server: &str, mode: RegistrationMode, agent_image: String) -> Self {
        SettingsBuilder(Settings {
            roles: vec![Role::Worker],
            rancher: RancherSettings {
                server: server.to_string(),
                token: Secret::new("token-abc"),
                ca_checksum: None,
                mode,
                agent_image,
                node_name: None,
                address: None,
                internal_address: None,
                labels: BTreeMap::new(),
                taints: vec![],
                deadline_seconds: 900,
                splay_seconds: 0,
                strict_verify: None,
                system_agent: Default::default(),
                system_default_registry: None,
            },
            runtime: RuntimeSettings::default(),
            host: HostSettings::default(),
            hostname: None,
            ssh: None,
            trusted_ca: Vec::new(),
            proxy: Default::default(),
            registries: Default::default(),
        })
    }

    pub fn roles(mut self, roles: &[Role]) -> Self {
        self.0.roles = roles.to_vec();
        self
    }

    pub fn token(mut self, token: &str) -> Self {
        self.0.rancher.token = Secret::new(token);
        self
    }

    pub fn ca_checksum(mut self, checksum: Option<String>) -> Self {
        self.0.rancher.ca_checksum = checksum;
        self
    }

    pub fn agent_image(mut self, image: &str) -> Self {
        self.0.rancher.agent_image = image.into();
        self
    }

    pub fn agent_binary(mut self, binary: Option<AgentBinary>) -> Self {
        self.0.rancher.system_agent.binary = binary;
        self
    }

    pub fn node_name(mut self, name: &str) -> Self {
        self.0.rancher.node_name = Some(name.into());
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0.rancher.labels.insert(key.into(), value.into());
        self
    }

    pub fn taint(mut self, taint: Taint) -> Self {
        self.0.rancher.taints.push(taint);
        self
    }

    pub fn deadline(mut self, seconds: u64) -> Self {
        self.0.rancher.deadline_seconds = seconds;
        self
    }

    pub fn runtime(mut self, runtime: RuntimeSettings) -> Self {
        self.0.runtime = runtime;
        self
    }

    pub fn host(mut self, host: HostSettings) -> Self {
        self.0.host = host;
        self
    }

    pub fn hostname(mut self, hostname: HostnameSetting) -> Self {
        self.0.hostname = Some(hostname);
        self
    }

    pub fn ssh(mut self, user: &str, keys: &[String]) -> Self {
        self.0.ssh = Some(SshSettings {
            user: user.into(),
            authorized_keys: keys.to_vec(),
        });
        self
    }

    /// A `trusted_ca` item (PEM of one or more certificates).
    pub fn trusted_ca(mut self, pem: &str) -> Self {
        self.0.trusted_ca.push(TrustedCa {
            pem: pem.into(),
            count: pem.matches("-----BEGIN CERTIFICATE-----").count(),
        });
        self
    }

    pub fn proxy(mut self, proxy: ProxySettings) -> Self {
        self.0.proxy = proxy;
        self
    }

    pub fn build(self) -> Settings {
        self.0
    }
}
