//! Registers the node with Rancher under its roles: the rancher-agent container (mode rke1)
//! or the system agent (mode system-agent). Returns a record without any secret so the state
//! journal can refuse to register twice.

use std::time::Duration;

use crate::facts::FactError;
use crate::fsutil::HostRoot;
use crate::http::TlsTrust;
use crate::plan::{Finding, Outcome};
use crate::rancher::agent_binary::{self, AgentBinaryError};
use crate::rancher::agent_paths::AgentPaths;
use crate::rancher::cacerts::{self, CaError};
use crate::rancher::cattle_id::CattleIdSource;
use crate::rancher::interlock::{self, InterlockError, TokioClock, WaitOutcome};
use crate::rancher::rke1::{self, Rke1Error};
use crate::rancher::system_agent::{self, SystemAgentError};
use crate::rancher::{Deadline, Registration, Tuning};
use crate::system::docker::{self, DockerError};
use crate::system::systemd::{Systemd, SystemdError};
use crate::userdata::{RegistrationMode, RuntimeSource, Settings, trusted_ca_anchors};

pub use crate::rancher::NodeIdentity;
pub use crate::state::RegistrationRecord;

/// Image archives baked into a node image for air-gapped registration (`docker load`ed
/// through the Engine API when the agent image is not present).
pub const IMAGE_ARCHIVE_DIR: &str = "/var/lib/bootstrapd/images";

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Rke1(#[from] Rke1Error),
    #[error(transparent)]
    SystemAgent(#[from] SystemAgentError),
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    AgentBinary(#[from] AgentBinaryError),
    #[error(transparent)]
    Interlock(#[from] InterlockError),
    #[error("system agent install prefix: {0}")]
    UsrLocal(#[from] FactError),
    #[error("{unit}: {source}")]
    Systemd {
        unit: String,
        #[source]
        source: SystemdError,
    },
}

impl RegisterError {
    /// True when the server does not know the token ("machine not found by request" past
    /// the window): rerunning with the same token cannot help.
    pub fn is_token_refused(&self) -> bool {
        matches!(
            self,
            RegisterError::SystemAgent(SystemAgentError::UnknownToken { .. })
        )
    }

    /// True when the agent container could not start or did not stay up: the host or the
    /// agent's own checks stopped it, not the network.
    pub fn is_agent_start_failure(&self) -> bool {
        matches!(
            self,
            RegisterError::Rke1(Rke1Error::StartFailed { .. } | Rke1Error::AgentNotRunning { .. })
        )
    }

    /// True when the disk's CATTLE_ID names another machine than the userdata asks for.
    pub fn is_cattle_id_conflict(&self) -> bool {
        matches!(
            self,
            RegisterError::SystemAgent(SystemAgentError::CattleIdConflict { .. })
        )
    }

    /// True when the server's certificate did not verify under the proven trust.
    pub fn is_untrusted_server(&self) -> bool {
        matches!(
            self,
            RegisterError::SystemAgent(SystemAgentError::Untrusted { .. })
        )
    }
}

fn systemd_err(unit: &str) -> impl Fn(SystemdError) -> RegisterError + '_ {
    move |source| RegisterError::Systemd {
        unit: unit.to_string(),
        source,
    }
}

/// Registers the node. Under a test root (`--root`) nothing is asked of the host's systemd;
/// the record's findings say so.
pub async fn register(
    root: &HostRoot,
    settings: &Settings,
    node: &NodeIdentity,
) -> Result<RegistrationRecord, RegisterError> {
    register_with(root, settings, node, &Tuning::default()).await
}

/// [`register`] with explicit [`Tuning`] (progress reporting, the machine-not-found window).
pub async fn register_with(
    root: &HostRoot,
    settings: &Settings,
    node: &NodeIdentity,
    tuning: &Tuning<'_>,
) -> Result<RegistrationRecord, RegisterError> {
    register_instance(root, settings, node, None, tuning).await
}

/// [`register_with`] knowing the datasource's instance id, which
/// `rancher.system_agent.machine_id: instance_id` derives the CATTLE_ID from.
pub async fn register_instance(
    root: &HostRoot,
    settings: &Settings,
    node: &NodeIdentity,
    instance_id: Option<&str>,
    tuning: &Tuning<'_>,
) -> Result<RegistrationRecord, RegisterError> {
    let reg = Registration::new(settings, node);
    let deadline = Deadline::after(Duration::from_secs(settings.rancher.deadline_seconds))
        .with_splay(Duration::from_secs(settings.rancher.splay_seconds));
    let mode = settings.rancher.mode;
    let mut record = RegistrationRecord {
        server: reg.server.to_string(),
        mode,
        roles: reg.roles.iter().map(|r| r.as_str().to_string()).collect(),
        node_name: node.node_name.clone(),
        ca_checksum: None,
        trust: String::new(),
        rke1: None,
        system_agent: None,
        findings: Vec::new(),
    };
    tracing::info!(server = %reg.server, ?mode, roles = ?record.roles, node = %node.node_name, "registering with Rancher");
    match mode {
        RegistrationMode::Rke1 => {
            register_rke1(root, settings, &reg, &deadline, &mut record).await?
        }
        RegistrationMode::SystemAgent => {
            let source = CattleIdSource::resolve(root, settings, instance_id)
                .map_err(RegisterError::SystemAgent)?;
            let sa = SystemAgentRun {
                reg: &reg,
                deadline: &deadline,
                tuning,
                cattle_id: source,
            };
            register_system_agent(root, settings, sa, &mut record).await?
        }
    }
    Ok(record)
}

/// rke1: the CA checked while a local agent image loads, then the rancher-agent container
/// created or reused.
async fn register_rke1(
    root: &HostRoot,
    settings: &Settings,
    reg: &Registration<'_>,
    deadline: &Deadline,
    record: &mut RegistrationRecord,
) -> Result<(), RegisterError> {
    let image = rke1::agent_image(&settings.rancher);
    let ca = cacerts::establish(reg.server, reg.ca_checksum, deadline, reg.proxy);
    // Air-gapped images carry the agent image as an archive: in the offline bundle, or
    // baked into the image at IMAGE_ARCHIVE_DIR whatever the runtime's source.
    let bundle = match &settings.runtime.source {
        RuntimeSource::Offline(o) => Some(root.path(&o.path)),
        _ => Some(root.path(IMAGE_ARCHIVE_DIR)).filter(|d| d.is_dir()),
    };
    // The agent repeats the CA check itself, but only after it holds the token: check
    // first so a wrong server never gets a container carrying it. Loading the image
    // from a local archive needs neither network, server nor token, so it runs during
    // the check; a pull waits for the verdict.
    let base = async {
        let engine = docker::connect(root)?;
        let base = match rke1::existing_agent(&engine, reg.server).await? {
            Some(c) => rke1::AgentBase::Existing(Box::new(c)),
            None => {
                let socket = docker::socket_path(root);
                rke1::local_image(&engine, &socket, &image, bundle.as_deref()).await
            }
        };
        Ok::<_, RegisterError>((engine, base))
    };
    let (trust, base) = tokio::join!(ca, base);
    // A server that fails the check is the error to report, whatever the engine did.
    let (trust, (engine, base)) = (trust?, base?);
    record.trust = trust.describe();
    record.ca_checksum = trust.checksum().map(str::to_string);
    record.findings.push(Finding::new(
        "register.ca",
        Outcome::Ok,
        format!("{}: {}", reg.server, trust.describe()),
    ));
    let args = rke1::agent_args(reg);
    let want = rke1::Wanted {
        image: &image,
        args: &args,
        token: reg.token,
        proxy: reg.proxy,
    };
    let auth = rke1::PullAuth::for_image(docker::socket_path(root), &image, &settings.registries);
    let r = rke1::ensure_agent(&engine, reg.server, want, base, auth.as_ref()).await?;
    let (outcome, what) = match (r.created, r.started, &r.replaced) {
        (true, _, Some(differed)) => (
            Outcome::Changed,
            format!("recreated (the old one differed in: {differed}) and started"),
        ),
        (true, _, None) => (Outcome::Changed, "created and started".to_string()),
        (false, true, _) => (Outcome::Changed, "existed stopped; started".to_string()),
        (false, false, _) => (Outcome::Ok, "already running".to_string()),
    };
    record.findings.push(Finding::new(
        "register.agent-container",
        outcome,
        format!(
            "rancher-agent container {} ({}) {what}; image {}",
            short_id(&r.container_id),
            r.image,
            r.image_source
        ),
    ));
    record.rke1 = Some(r);
    Ok(())
}

/// What one system-agent registration works with besides the host and the settings.
struct SystemAgentRun<'r> {
    reg: &'r Registration<'r>,
    deadline: &'r Deadline,
    tuning: &'r Tuning<'r>,
    cattle_id: CattleIdSource,
}

/// system-agent: what install.sh does, natively (system_agent.rs), with its interlock.
async fn register_system_agent(
    root: &HostRoot,
    settings: &Settings,
    run: SystemAgentRun<'_>,
    record: &mut RegistrationRecord,
) -> Result<(), RegisterError> {
    let SystemAgentRun {
        reg,
        deadline,
        tuning,
        cattle_id,
    } = run;
    // A cattle-id file naming another machine stops here, before the interlock or anything
    // else touches the host (install_with decides again, for its other callers).
    crate::rancher::cattle_id::decide(root, &cattle_id)?;
    if let Some(f) = machine_id_warning(&cattle_id) {
        record.findings.push(f);
    }
    // system_agent::install_with checks the CA itself, before anything else.
    // The binary is read and checked before anything on the host changes; then
    // install.sh's restart-pending handshake, before the running agent is touched.
    let source = cattle_id.describe();
    let how = prepare_agent(root, settings, deadline, cattle_id, &mut record.findings).await?;
    let (pending, waited) =
        interlock::hold_for_restart(root, &mut TokioClock::new(), deadline.remaining()).await?;
    record.findings.push(interlock_finding(&waited));
    let (r, trust) = system_agent::install_with(root, reg, deadline, &how, tuning).await?;
    record.trust = trust.describe();
    record.ca_checksum = trust.checksum().map(str::to_string);
    record.findings.push(Finding::new(
        "register.connect",
        Outcome::Changed,
        format!(
            "connection info saved; machine {} (cattle id {}, {}; {source})",
            r.machine_name,
            r.cattle_id,
            if r.cattle_id_created { "new" } else { "reused" }
        ),
    ));
    record.findings.push(start_agent_unit(root).await?);
    // install.sh removes restart-pending once the agent has been restarted.
    pending.release()?;
    record.system_agent = Some(r);
    Ok(())
}

/// Enables and (re)starts the system agent over D-Bus, as the installer's `systemctl restart`;
/// below a test root it only says what it would have done.
async fn start_agent_unit(root: &HostRoot) -> Result<Finding, RegisterError> {
    let unit = system_agent::UNIT;
    if !root.is_live() {
        return Ok(Finding::new(
            "register.service",
            Outcome::Skipped,
            format!(
                "{unit} written but not started: acting below a test root, not on the live host"
            ),
        ));
    }
    let err = systemd_err(unit);
    let sd = Systemd::connect(root).await.map_err(&err)?;
    sd.reload().await.map_err(&err)?;
    sd.enable(&[unit]).await.map_err(&err)?;
    // As the installer's `systemctl restart`: a running agent must re-read the connection
    // info just written.
    let was_active = sd.unit_state(unit).await.map_err(&err)?.is_active();
    if was_active {
        sd.stop_and_wait(unit).await.map_err(&err)?;
    }
    sd.start_and_wait(unit).await.map_err(&err)?;
    let how = if was_active { "restarted" } else { "started" };
    Ok(Finding::new(
        "register.service",
        Outcome::Changed,
        format!("{unit} enabled and {how}"),
    ))
}

/// Install prefix (from the `/usr/local` fact) and the agent binary, read and checked, with
/// the CATTLE_ID's source; writes nothing on the host.
async fn prepare_agent(
    root: &HostRoot,
    settings: &Settings,
    deadline: &Deadline,
    cattle_id: CattleIdSource,
    findings: &mut Vec<Finding>,
) -> Result<system_agent::AgentInstall, RegisterError> {
    let paths = AgentPaths::decide(&crate::facts::usr_local::probe(root)?);
    findings.push(Finding::new(
        "register.install-prefix",
        Outcome::Ok,
        paths.describe(),
    ));
    let arch = system_agent::asset_arch(std::env::consts::ARCH)?;
    let source = agent_binary::resolve(root, settings, arch)?;
    let trust = TlsTrust::system_and(trusted_ca_anchors(&settings.trusted_ca));
    let binary = agent_binary::fetch(root, &source, &trust, deadline, &settings.proxy).await?;
    if let Some(b) = &binary {
        findings.push(Finding::new(
            "register.agent-binary",
            Outcome::Ok,
            format!("{} (sha256 {} verified)", b.source, b.sha256),
        ));
    }
    Ok(system_agent::AgentInstall {
        paths,
        binary,
        cattle_id,
    })
}

/// `machine_id: instance_id` over an instance id that is only this disk's /etc/machine-id:
/// the same machine on re-runs, a new one after a reimage.
pub fn machine_id_warning(source: &CattleIdSource) -> Option<Finding> {
    matches!(source, CattleIdSource::Wanted { per_disk: true, .. }).then(|| {
        Finding::new(
            "register.machine-id",
            Outcome::Warning,
            format!(
                "{}: the datasource has no instance id of its own, so it is this disk's \
                 /etc/machine-id; a reimaged node (new disk) gets a new one and becomes a new \
                 machine in Rancher",
                source.describe()
            ),
        )
        .with_remedy(
            "give the instance an id of its own (NoCloud meta-data `instance-id`, or `i=` in \
             the `ds=nocloud` kernel parameter), or set machine_id to {value: ...}",
        )
    })
}

fn interlock_finding(waited: &WaitOutcome) -> Finding {
    let outcome = match waited {
        WaitOutcome::TimedOut { .. } => Outcome::Warning,
        _ => Outcome::Ok,
    };
    Finding::new("register.interlock", outcome, waited.describe())
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
