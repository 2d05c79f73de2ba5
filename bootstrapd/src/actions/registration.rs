//! Registration as a planned step, like host and runtime: the journal's guard decides
//! whether there is anything to do, the preview says how the node would register, and
//! applying it finds the node's identity and registers.

use std::time::Duration;

use crate::facts;
use crate::fsutil::HostRoot;
use crate::plan::{Finding, Outcome};
use crate::rancher::Tuning;
use crate::rancher::rke1::PullAuth;
use crate::state::RegistrationRecord;
use crate::userdata::{RegistrationMode, Settings};

use super::register::{self, NodeIdentity, RegisterError};
use super::{Applied, Target};
use crate::rancher::system_agent::SystemAgentError;

/// The register stage's one step.
pub enum RegisterStep<'a> {
    /// The journal holds a registration from this instance: nothing is registered again.
    Guard(Finding),
    /// Register with the userdata's server.
    Register {
        root: &'a HostRoot,
        settings: &'a Settings,
        /// The node name's fallback: the hostname the prepare stage set, else the
        /// datasource's.
        hostname: Option<String>,
        /// The datasource's instance id (`rancher.system_agent.machine_id: instance_id`).
        instance_id: Option<String>,
    },
}

/// Plans registration. A node registered on this instance is never registered again (the
/// agents' own guards, the container label and CATTLE_ID, back it up); a registration with
/// another server is an error with its remedy.
pub fn plan<'a>(
    root: &'a HostRoot,
    settings: &'a Settings,
    hostname: Option<String>,
    instance_id: Option<&str>,
    previous: Option<&RegistrationRecord>,
) -> RegisterStep<'a> {
    let server = &settings.rancher.server;
    match previous {
        None => RegisterStep::Register {
            root,
            settings,
            hostname,
            instance_id: instance_id.map(str::to_string),
        },
        Some(p) if p.server == *server => RegisterStep::Guard(Finding::new(
            "register",
            Outcome::Ok,
            format!("already registered with {server} on this instance: not registering again"),
        )),
        Some(p) => RegisterStep::Guard(
            Finding::new(
                "register",
                Outcome::Failed,
                format!(
                    "registered with {} on this instance, and the userdata now names {server}",
                    p.server
                ),
            )
            .with_remedy(
                "remove the old agent, then `bootstrapd reset` to register with the new server",
            ),
        ),
    }
}

impl RegisterStep<'_> {
    pub fn name(&self) -> &str {
        match self {
            RegisterStep::Guard(_) => "register",
            RegisterStep::Register { .. } => "registering",
        }
    }

    pub fn preview(&self) -> Vec<Finding> {
        match self {
            RegisterStep::Guard(f) => vec![f.clone()],
            RegisterStep::Register {
                root,
                settings,
                instance_id,
                ..
            } => {
                let mut out = vec![would_register(settings)];
                if settings.rancher.mode == RegistrationMode::Rke1 {
                    out.push(agent_image_preview(root, settings));
                }
                if settings.rancher.mode == RegistrationMode::SystemAgent {
                    out.extend(system_agent_preview(root, settings));
                    out.extend(machine_id_preview(root, settings, instance_id.as_deref()));
                }
                out
            }
        }
    }

    /// The unit's start timeout must not end a registration still within its own deadline;
    /// ten minutes on top for the agent's start and the journal's last writes.
    pub fn budget(&self) -> Option<Duration> {
        match self {
            RegisterStep::Guard(_) => None,
            RegisterStep::Register { settings, .. } => Some(Duration::from_secs(
                settings.rancher.deadline_seconds.saturating_add(600),
            )),
        }
    }

    pub async fn apply(&self, target: Target<'_>) -> Applied {
        match self {
            RegisterStep::Guard(f) => f.clone().into(),
            RegisterStep::Register {
                settings,
                hostname,
                instance_id,
                ..
            } => {
                register_node(
                    target,
                    settings,
                    hostname.as_deref(),
                    instance_id.as_deref(),
                )
                .await
            }
        }
    }
}

/// The node's identity, then registration; every failure is a finding with its remedy.
async fn register_node(
    target: Target<'_>,
    settings: &Settings,
    hostname: Option<&str>,
    instance_id: Option<&str>,
) -> Applied {
    (target.progress)("node identity");
    let mut findings = Vec::new();
    let node = match node_identity(target.root, settings, hostname, &mut findings).await {
        Ok(n) => n,
        Err(e) => {
            findings.push(
                Finding::new("register.address", Outcome::Failed, e.to_string()).with_remedy(
                    "name an interface that has an IPv4 address, or give the address itself",
                ),
            );
            return Applied {
                findings,
                registration: None,
            };
        }
    };
    (target.progress)(&format!("registering with {}", settings.rancher.server));
    // Retry causes worth seeing (e.g. "machine not found by request") go to the run's
    // progress, which `bootstrapd status` shows, and to systemd's STATUS=.
    let tuning = Tuning {
        progress: target.progress,
        ..Default::default()
    };
    match register::register_instance(target.root, settings, &node, instance_id, &tuning).await {
        Ok(record) => {
            findings.extend(record.findings.iter().cloned());
            Applied {
                findings,
                registration: Some(record),
            }
        }
        Err(e) => {
            findings.push(register_failed(&e));
            Applied {
                findings,
                registration: None,
            }
        }
    }
}

/// What `run` would register, and how.
fn would_register(settings: &Settings) -> Finding {
    let agent = match settings.rancher.mode {
        RegistrationMode::Rke1 => "rke1 agent container",
        RegistrationMode::SystemAgent => "rancher-system-agent",
    };
    let roles: Vec<&str> = settings.roles.iter().map(|r| r.as_str()).collect();
    // The proxy's password is never shown: `redacted` stands for it.
    let through = if settings.proxy.has_proxy() {
        format!(
            "; through the proxy ({}), which the agent is given too",
            settings.proxy.redacted()
        )
    } else {
        String::new()
    };
    Finding::new(
        "register",
        Outcome::WouldChange,
        format!(
            "would register with {} ({agent}) as {}{through}",
            settings.rancher.server,
            roles.join("+")
        ),
    )
}

/// Mode rke1: the agent image as it will be pulled (behind `system_default_registry`), and
/// which credentials a pull would send; never their values.
fn agent_image_preview(root: &HostRoot, settings: &Settings) -> Finding {
    let image = crate::rancher::rke1::agent_image(&settings.rancher);
    let socket = crate::system::docker::socket_path(root);
    let pull = match PullAuth::for_image(socket, &image, &settings.registries) {
        Some(a) => format!("a pull sends the {} for {}", a.auth.describe(), a.registry),
        None => "a pull sends no registry credentials".to_string(),
    };
    let behind = match &settings.rancher.system_default_registry {
        Some(r) => format!(" (behind rancher.system_default_registry {r})"),
        None => String::new(),
    };
    Finding::new(
        "register.agent-image",
        Outcome::Ok,
        format!("agent image {image}{behind}; {pull}"),
    )
}

/// The register stage's failure, with the remedy for its kind.
fn register_failed(e: &RegisterError) -> Finding {
    let remedy = if e.is_cattle_id_conflict() {
        "if this host is the machine the file names, set rancher.system_agent.machine_id to \
         {value: <the file's id>} (or remove machine_id); if the file came with a copied disk \
         or image, delete /etc/rancher/agent/cattle-id (and that machine in Rancher if it is \
         stale), then rerun `bootstrapd run`"
    } else if e.is_token_refused() {
        "take the current registration command from Rancher and update rancher.token"
    } else if e.is_untrusted_server() {
        "check rancher.server and rancher.ca_checksum against the current registration command"
    } else if e.is_agent_start_failure() {
        "read the container's error or log lines above: a security policy (SELinux, see host.selinux) \
         can refuse its mounts, and run.sh exits on a wrong rancher.server or rancher.ca_checksum; \
         then rerun `bootstrapd run`"
    } else {
        "check that the server is reachable and rancher.ca_checksum matches, then rerun `bootstrapd run`"
    };
    Finding::new("register", Outcome::Failed, super::describe(e)).with_remedy(remedy)
}

/// The node name: the userdata's, else the hostname set from `hostname:` or the
/// datasource's, else this host's, short.
fn node_name(settings: &Settings, hostname: Option<&str>) -> String {
    let short = |h: &str| h.split('.').next().unwrap_or(h).to_string();
    settings
        .rancher
        .node_name
        .clone()
        .or_else(|| hostname.map(short))
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .map(|h| short(&h.to_string_lossy()))
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "node".to_string())
}

/// Node name, address and internal address: the userdata's, else derived from the host.
/// In system-agent mode addresses come only from the userdata (interface names resolved to
/// their first IPv4, as install.sh's `get_address`); the agent finds its own otherwise.
async fn node_identity(
    root: &HostRoot,
    settings: &Settings,
    hostname: Option<&str>,
    findings: &mut Vec<Finding>,
) -> Result<NodeIdentity, facts::network::NetworkError> {
    let r = &settings.rancher;
    let node_name = node_name(settings, hostname);
    if r.mode == RegistrationMode::SystemAgent {
        let resolve = async |key, v: &Option<String>| match v {
            Some(v) => facts::network::resolve_address(root, key, v)
                .await
                .map(|a| Some(a.to_string())),
            None => Ok(None),
        };
        return Ok(NodeIdentity {
            node_name,
            address: resolve("address", &r.address).await?,
            internal_address: resolve("internal_address", &r.internal_address).await?,
        });
    }
    let address = match &r.address {
        Some(a) => Some(a.clone()),
        None if root.is_live() => default_route_address(root, findings).await,
        None => None,
    };
    Ok(NodeIdentity {
        node_name,
        address,
        internal_address: r.internal_address.clone(),
    })
}

/// RKE1 mode: the default route's source address, with a finding either way.
async fn default_route_address(root: &HostRoot, findings: &mut Vec<Finding>) -> Option<String> {
    match facts::network::node_address(root, Duration::from_secs(60)).await {
        Ok(a) => {
            findings.push(Finding::new(
                "register.address",
                Outcome::Ok,
                format!("node address {a} (source address of the default route)"),
            ));
            Some(a.to_string())
        }
        Err(e) => {
            findings.push(
                Finding::new(
                    "register.address",
                    Outcome::Warning,
                    format!("no node address from the default route: {e}; the agent picks one"),
                )
                .with_remedy("set rancher.address in the userdata"),
            );
            None
        }
    }
}

/// Which CATTLE_ID registration would use, from where, and the machine it names; a
/// conflict with the disk's cattle-id file fails here as it would in the run.
fn machine_id_preview(
    root: &HostRoot,
    settings: &Settings,
    instance_id: Option<&str>,
) -> Vec<Finding> {
    use crate::rancher::cattle_id::{self, CattleIdSource};
    use crate::rancher::system_agent::{CATTLE_ID_FILE, machine_name};
    let step = "register.machine-id";
    let no_instance = instance_id.is_none_or(|i| i.trim().is_empty());
    if settings.rancher.system_agent.machine_id == crate::userdata::MachineId::InstanceId
        && no_instance
    {
        // `plan --userdata FILE` reads no datasource; `run` always has an instance id.
        return vec![Finding::new(
            step,
            Outcome::WouldChange,
            "CATTLE_ID derived from the datasource's instance id when `run` reads it (this \
             plan has none); rancher.system_agent.machine_id: instance_id",
        )];
    }
    let decided = CattleIdSource::resolve(root, settings, instance_id)
        .and_then(|src| cattle_id::decide(root, &src).map(|c| (src, c)));
    let (source, choice) = match decided {
        Ok(d) => d,
        Err(e) => {
            let f = Finding::new(step, Outcome::Failed, e.to_string());
            return vec![match e {
                SystemAgentError::CattleIdConflict { .. } => {
                    f.with_remedy(register_failed(&e.into()).remedy.unwrap_or_default())
                }
                _ => f,
            }];
        }
    };
    let what = match (&source, choice.create) {
        (CattleIdSource::Random, true) => format!(
            "a new random CATTLE_ID, kept in {CATTLE_ID_FILE} (a reimaged node is a new machine)"
        ),
        (_, true) => format!(
            "CATTLE_ID {} (machine {}), written to {CATTLE_ID_FILE}",
            choice.id,
            machine_name(&choice.id)
        ),
        (_, false) => format!(
            "CATTLE_ID {} (machine {}) from {CATTLE_ID_FILE}",
            choice.id,
            machine_name(&choice.id)
        ),
    };
    let mut out = vec![Finding::new(
        step,
        Outcome::WouldChange,
        format!("{what}; {}", source.describe()),
    )];
    out.extend(register::machine_id_warning(&source));
    out
}

/// Where the system agent would be installed and where its binary would come from.
fn system_agent_preview(root: &HostRoot, settings: &Settings) -> Vec<Finding> {
    use crate::rancher::{agent_binary, agent_paths::AgentPaths, system_agent};
    let prefix = match facts::usr_local::probe(root) {
        Ok(u) => Finding::new(
            "register.install-prefix",
            Outcome::WouldChange,
            AgentPaths::decide(&u).describe(),
        ),
        Err(e) => Finding::new("register.install-prefix", Outcome::Failed, e.to_string()),
    };
    let source = system_agent::asset_arch(std::env::consts::ARCH)
        .map_err(|e| e.to_string())
        .and_then(|arch| agent_binary::resolve(root, settings, arch).map_err(|e| e.to_string()));
    let binary = match source {
        Ok(s) => Finding::new(
            "register.agent-binary",
            Outcome::WouldChange,
            format!("agent binary from {}", s.describe()),
        ),
        Err(e) => Finding::new("register.agent-binary", Outcome::Failed, e),
    };
    vec![prefix, binary]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userdata::DEFAULT_AGENT_IMAGE;

    fn settings(mode: &str) -> Settings {
        let yaml = format!(
            "roles: [worker]\nrancher:\n  server: https://rancher.lab\n  token: {}\n  mode: {mode}\n",
            "t0k3n".repeat(12)
        );
        crate::userdata::parse(yaml.as_bytes()).unwrap().settings
    }

    fn record(server: &str) -> RegistrationRecord {
        RegistrationRecord::for_test(server)
    }

    #[test]
    fn the_journal_guard_decides_before_anything_registers() {
        let root = HostRoot::new(Some("/nonexistent".into()));
        let s = settings("rke1");
        let same = record("https://rancher.lab");
        let step = plan(&root, &s, None, None, Some(&same));
        let [f] = &step.preview()[..] else { panic!() };
        assert_eq!(f.outcome, Outcome::Ok);
        assert!(f.detail.contains("not registering again"), "{}", f.detail);
        assert_eq!(step.budget(), None);

        let other = record("https://old.lab");
        let [f] = &plan(&root, &s, None, None, Some(&other)).preview()[..] else {
            panic!()
        };
        assert_eq!(f.outcome, Outcome::Failed);
        assert!(f.detail.contains("https://old.lab"), "{}", f.detail);
        assert!(f.remedy.as_deref().unwrap().contains("bootstrapd reset"));
    }

    #[test]
    fn unregistered_it_previews_the_registration_and_asks_for_its_deadline() {
        let root = HostRoot::new(Some("/nonexistent".into()));
        let s = settings("rke1");
        let step = plan(&root, &s, None, None, None);
        let [f, image] = &step.preview()[..] else {
            panic!()
        };
        assert_eq!(f.outcome, Outcome::WouldChange);
        assert_eq!(
            f.detail,
            "would register with https://rancher.lab (rke1 agent container) as worker"
        );
        assert_eq!(
            image.detail,
            format!("agent image {DEFAULT_AGENT_IMAGE}; a pull sends no registry credentials")
        );
        // Behind the default registry, with its credentials named but never shown.
        let mut s = s.clone();
        s.rancher.system_default_registry = Some("10.0.2.2:5443".into());
        s.registries.configs.insert(
            "10.0.2.2:5443".into(),
            crate::userdata::RegistryConfig {
                auth: Some(crate::userdata::RegistryAuth::Basic {
                    username: "agent".into(),
                    password: crate::secret::Secret::new("s3cret-pw"),
                }),
            },
        );
        let shown = plan(&root, &s, None, None, None).preview();
        assert_eq!(
            shown[1].detail,
            format!(
                "agent image 10.0.2.2:5443/{DEFAULT_AGENT_IMAGE} (behind \
                 rancher.system_default_registry 10.0.2.2:5443); a pull sends the username \
                 and password for 10.0.2.2:5443"
            )
        );
        assert!(!format!("{shown:?}").contains("s3cret-pw"));
        let deadline = s.rancher.deadline_seconds;
        assert_eq!(step.budget(), Some(Duration::from_secs(deadline + 600)));

        let mut proxied = settings("rke1");
        proxied.proxy.https = Some(crate::secret::Secret::new(
            "http://agent:hunter2@proxy.lab:3128/",
        ));
        // The first row registers; the second (rke1) names the agent image.
        let rows = plan(&root, &proxied, None, None, None).preview();
        let f = &rows[0];
        assert!(
            f.detail.ends_with(
                "as worker; through the proxy (https http://agent:redacted@proxy.lab:3128/), \
                 which the agent is given too"
            ),
            "{}",
            f.detail
        );

        let s = settings("system-agent");
        let rows = plan(&root, &s, None, None, None).preview();
        let steps: Vec<&str> = rows.iter().map(|f| f.step.as_str()).collect();
        assert_eq!(
            steps,
            [
                "register",
                "register.install-prefix",
                "register.agent-binary",
                "register.machine-id"
            ]
        );
        let id = &rows[3];
        assert_eq!(id.outcome, Outcome::WouldChange);
        assert!(
            id.detail.contains("new random CATTLE_ID") && id.detail.contains("machine_id: random"),
            "{}",
            id.detail
        );
    }

    #[test]
    fn the_preview_names_the_cattle_id_its_source_and_a_conflict() {
        use crate::rancher::cattle_id::derive_cattle_id;
        use crate::rancher::system_agent::{CATTLE_ID_FILE, machine_name};
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().to_path_buf()));
        let mut s = settings("system-agent");
        s.rancher.system_agent.machine_id = crate::userdata::MachineId::InstanceId;
        let id = derive_cattle_id(&s.rancher.server, &s.rancher.token, "i-0abc");
        let machine_id = |root: &HostRoot| {
            let rows = plan(root, &s, None, Some("i-0abc"), None).preview();
            rows.into_iter()
                .find(|f| f.step == "register.machine-id")
                .unwrap()
        };
        let f = machine_id(&root);
        assert_eq!(f.outcome, Outcome::WouldChange);
        assert!(f.detail.contains(&id), "{}", f.detail);
        assert!(f.detail.contains(&machine_name(&id)), "{}", f.detail);
        assert!(
            f.detail
                .contains("machine_id: instance_id (instance i-0abc)"),
            "{}",
            f.detail
        );
        assert!(!f.detail.contains(s.rancher.token.expose()));

        std::fs::create_dir_all(root.path("/etc/rancher/agent")).unwrap();
        std::fs::write(root.path(CATTLE_ID_FILE), "abc\n").unwrap();
        let f = machine_id(&root);
        assert_eq!(f.outcome, Outcome::Failed);
        assert!(f.detail.contains(&machine_name("abc")), "{}", f.detail);
        assert!(f.remedy.unwrap().contains("{value: <the file's id>}"));
    }

    #[test]
    fn the_node_name_falls_back_to_the_short_datasource_hostname() {
        let s = settings("rke1");
        assert_eq!(node_name(&s, Some("node4.lab.example")), "node4");
    }

    #[test]
    fn an_agent_that_cannot_start_is_sent_to_its_own_error_not_to_the_network() {
        use crate::actions::register::RegisterError;
        use crate::rancher::rke1::Rke1Error;
        let stopped = RegisterError::Rke1(Rke1Error::AgentNotRunning {
            id: "c0ffee".into(),
            state: "exited".into(),
            logs: "error mounting: permission denied".into(),
        });
        let f = register_failed(&stopped);
        assert_eq!(f.outcome, Outcome::Failed);
        let remedy = f.remedy.unwrap();
        assert!(remedy.contains("host.selinux"), "{remedy}");
        assert!(!remedy.contains("reachable"), "{remedy}");
        assert!(f.detail.contains("c0ffee"), "{}", f.detail);

        let refused = RegisterError::Rke1(Rke1Error::StartFailed {
            id: "c0ffee".into(),
            source: bollard::errors::Error::DockerResponseServerError {
                status_code: 500,
                message: "OCI runtime create failed: permission denied".into(),
            },
        });
        let f = register_failed(&refused);
        assert!(f.remedy.unwrap().contains("host.selinux"));
        assert!(f.detail.contains("could not start"), "{}", f.detail);

        let unreachable = RegisterError::Rke1(Rke1Error::NoImage {
            image: "rancher/rancher-agent:v2.11.3".into(),
            bundle: "none".into(),
            pull: "connection refused".into(),
        });
        assert!(
            register_failed(&unreachable)
                .remedy
                .unwrap()
                .contains("reachable")
        );
    }
}
