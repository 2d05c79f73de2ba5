//! The RKE1 rancher-agent container (Rancher 2.0-2.6 "existing nodes"), created through the
//! Engine API exactly as the node command's `docker run` would, except that the token goes
//! in as `CATTLE_TOKEN` (which the image's run.sh reads; `--token` only sets it) so it never
//! shows in any process's argv.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, HostConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use serde::{Deserialize, Serialize};

use super::Registration;
use crate::secret::Secret;
use crate::system::docker::{self as engine, DockerError};
use crate::system::image_ref;
use crate::userdata::{ProxySettings, RancherSettings, RegistryAuth, RegistrySettings, Role};

/// Marks the agent container bootstrapd created, with the server it registers to, so a
/// re-run finds it instead of creating a second one.
pub const SERVER_LABEL: &str = "io.bootstrapd.server";

#[derive(Debug, thiserror::Error)]
pub enum Rke1Error {
    #[error(transparent)]
    Engine(#[from] DockerError),
    #[error("Docker Engine API {action}: {source}")]
    Api {
        action: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// The engine refused to start the container (runc could not set it up): a host
    /// matter, not the server's, so it gets its own remedy.
    #[error("Docker could not start the rancher-agent container {id}: {source}")]
    StartFailed {
        id: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error(
        "the rancher-agent container {id} does not stay up ({state}); its last log lines: {logs}"
    )]
    AgentNotRunning {
        id: String,
        state: String,
        logs: String,
    },
    #[error(
        "agent image {image} is not present, could not be loaded from the offline bundle \
         ({bundle}) and pulling it failed: {pull}"
    )]
    NoImage {
        image: String,
        bundle: String,
        pull: String,
    },
}

/// The agent's arguments (run.sh long options) after the image name; never the token.
pub fn agent_args(reg: &Registration<'_>) -> Vec<String> {
    let (server, ca_checksum, roles, node, labels, taints) = (
        reg.server,
        reg.ca_checksum,
        reg.roles,
        reg.node,
        reg.labels,
        reg.taints,
    );
    let mut a = vec!["--server".to_string(), server.to_string()];
    if let Some(c) = ca_checksum {
        a.push("--ca-checksum".into());
        a.push(c.to_string());
    }
    // The node command's role order.
    for r in [Role::Etcd, Role::Controlplane, Role::Worker] {
        if roles.contains(&r) {
            a.push(format!("--{}", r.as_str()));
        }
    }
    a.push("--node-name".into());
    a.push(node.node_name.clone());
    if let Some(addr) = &node.address {
        a.push("--address".into());
        a.push(addr.clone());
    }
    if let Some(addr) = &node.internal_address {
        a.push("--internal-address".into());
        a.push(addr.clone());
    }
    for (k, v) in labels {
        a.push("--label".into());
        a.push(format!("{k}={v}"));
    }
    for t in taints {
        a.push("--taints".into());
        a.push(t.to_string());
    }
    a
}

/// The names of the proxy variables the agent container is given.
const PROXY_VARS: [&str; 3] = ["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"];

/// The userdata's proxy as the agent container's `KEY=value` entries. Rancher's node
/// command for nodes behind a proxy passes them the same way (`docker run ... -e
/// HTTP_PROXY=... -e HTTPS_PROXY=... -e NO_PROXY=...`, Rancher's docs on RKE1 downstream
/// clusters behind an HTTP proxy). They may hold the proxy's credentials.
fn proxy_env(proxy: &ProxySettings) -> Vec<String> {
    crate::system::proxy::variables(proxy)
        .into_iter()
        .map(|(k, v)| format!("{k}={}", v.expose()))
        .collect()
}

/// `docker run -d --privileged --restart=unless-stopped --net=host -v /etc/kubernetes:/etc/kubernetes
/// -v /var/run:/var/run [-e HTTP_PROXY=... -e HTTPS_PROXY=... -e NO_PROXY=...] IMAGE ARGS`
/// with `CATTLE_TOKEN` in the environment.
///
/// The body holds the token and the proxy's credentials: never log it (bollard's `Debug`
/// would print the env).
pub fn container_body(
    image: &str,
    server: &str,
    token: &Secret,
    proxy: &ProxySettings,
    args: Vec<String>,
) -> ContainerCreateBody {
    let mut env = vec![format!("CATTLE_TOKEN={}", token.expose())];
    env.extend(proxy_env(proxy));
    ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(args),
        env: Some(env),
        labels: Some(HashMap::from([(
            SERVER_LABEL.to_string(),
            server.to_string(),
        )])),
        host_config: Some(HostConfig {
            privileged: Some(true),
            network_mode: Some("host".into()),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            binds: Some(vec![
                "/etc/kubernetes:/etc/kubernetes".into(),
                "/var/run:/var/run".into(),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Docker versions RKE accepts (its table keyed by Kubernetes version, k8s >= 1.25 row; the
/// Kubernetes version is Rancher's choice and unknown here, so the widest row applies).
pub const RKE_SUPPORTED_DOCKER: [&str; 11] = [
    "1.13", "17.03", "17.06", "17.09", "18.06", "18.09", "19.03", "20.10", "23.0", "24.0", "25.0",
];

/// RKE's check: `None` when supported, else RKE's own message.
pub fn docker_version_problem(version: &str, host: &str) -> Option<String> {
    let comps = crate::system::packages::version_components(version);
    let supported = RKE_SUPPORTED_DOCKER.iter().any(|s| {
        let want = crate::system::packages::version_components(s);
        comps.len() >= want.len() && comps[..want.len()] == want[..]
    });
    (!supported).then(|| {
        format!(
            "Unsupported Docker version found [{version}] on host [{host}], supported versions are [{}]",
            RKE_SUPPORTED_DOCKER.join(" ")
        )
    })
}

/// What happened to the agent container; no secret in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rke1Record {
    pub container_id: String,
    pub image: String,
    /// This run created the container (false: it was already there).
    pub created: bool,
    /// This run started it (false: it was already running).
    pub started: bool,
    /// How the image got there: "present", "loaded <archive>", "pulled" or "pulled with
    /// the <kind of credentials> for <registry>".
    pub image_source: String,
    /// This run replaced an agent container that ran other settings (what differed; never
    /// the values of a token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<String>,
}

/// Image archives in an offline bundle directory (`*.tar`, `*.tar.gz`, `*.tgz`, `*.tar.zst`,
/// `*.tar.xz`), sorted for a stable order.
pub fn bundle_archives(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            [".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.zst"]
                .iter()
                .any(|s| n.ends_with(s))
        })
        .collect();
    out.sort();
    out
}

/// The agent image from the engine itself or from an archive in `bundle` (loaded through the
/// Engine socket `socket`), else what a pull must bring. Local only (no network, no Rancher
/// server, no token), so it may run while the server is being verified.
pub async fn local_image(
    docker: &Docker,
    socket: &Path,
    image: &str,
    bundle: Option<&Path>,
) -> AgentBase {
    if engine::image_present(docker, image).await {
        return AgentBase::Image("present".into());
    }
    let Some(dir) = bundle else {
        return AgentBase::Pull {
            bundle: "no offline bundle".to_string(),
        };
    };
    let archives = bundle_archives(dir);
    let note = format!("{} archive(s) in {}", archives.len(), dir.display());
    for a in archives {
        if let Err(e) = engine::load_archive(socket, &a).await {
            tracing::warn!(error = %e, "could not load image archive");
            continue;
        }
        if engine::image_present(docker, image).await {
            return AgentBase::Image(format!("loaded {}", a.display()));
        }
    }
    AgentBase::Pull { bundle: note }
}

/// How long a just-started agent must stay up before it counts as running: run.sh exits
/// within a second or two on a checksum mismatch or a missing option.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(5);

async fn inspect(
    docker: &Docker,
    id: &str,
) -> Result<bollard::models::ContainerInspectResponse, Rke1Error> {
    docker
        .inspect_container(id, None)
        .await
        .map_err(|source| Rke1Error::Api {
            action: format!("inspecting container {id}"),
            source,
        })
}

/// Fails when the container is not running (or has restarted) after [`SETTLE`], with the
/// end of its log, the token scrubbed out.
async fn check_stays_up(docker: &Docker, id: &str, token: &Secret) -> Result<(), Rke1Error> {
    use futures_util::StreamExt;
    tokio::time::sleep(SETTLE).await;
    let info = inspect(docker, id).await?;
    let st = info.state.unwrap_or_default();
    let restarts = info.restart_count.unwrap_or(0);
    if st.running == Some(true) && st.restarting != Some(true) && restarts == 0 {
        return Ok(());
    }
    let mut logs = Vec::new();
    let mut stream = docker.logs(
        id,
        Some(bollard::query_parameters::LogsOptions {
            stdout: true,
            stderr: true,
            tail: "20".into(),
            ..Default::default()
        }),
    );
    while let Some(Ok(line)) = stream.next().await {
        logs.push(line.to_string().trim_end().to_string());
    }
    Err(Rke1Error::AgentNotRunning {
        id: id.to_string(),
        state: format!(
            "status {}, exit code {}, {restarts} restart(s)",
            st.status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown".into()),
            st.exit_code.unwrap_or_default()
        ),
        logs: crate::secret::scrub(&logs.join(" | "), &[token]),
    })
}

/// The agent container an earlier run created for `server`, if any.
pub async fn existing_agent(
    docker: &Docker,
    server: &str,
) -> Result<Option<ContainerSummary>, Rke1Error> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{SERVER_LABEL}={server}")],
    )]);
    let existing = docker
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|source| Rke1Error::Api {
            action: "listing containers".into(),
            source,
        })?;
    Ok(existing.into_iter().next())
}

/// What the agent container starts from.
#[derive(Debug)]
pub enum AgentBase {
    /// The container an earlier run created ([`existing_agent`]).
    Existing(Box<ContainerSummary>),
    /// None yet; the image is in the engine, and this says how it got there ([`local_image`]).
    Image(String),
    /// None yet, nor the image: pull it. `bundle` says what the offline bundle held.
    Pull { bundle: String },
}

/// What differs between container `id` and the one the userdata wants now (image, the
/// agent's arguments, the token, the proxy), without any value of the token or the proxy;
/// `None` when nothing does. The container is found by its server label alone, so without
/// this a corrected token, checksum, roles, image or proxy would never take effect.
async fn drift(docker: &Docker, id: &str, want: &Wanted<'_>) -> Result<Option<String>, Rke1Error> {
    let Wanted {
        image,
        args,
        token,
        proxy,
    } = *want;
    let info = inspect(docker, id).await?;
    let cfg = info.config.unwrap_or_default();
    let mut what = Vec::new();
    if cfg.image.as_deref() != Some(image) {
        what.push(format!(
            "image {} -> {image}",
            cfg.image.as_deref().unwrap_or("?")
        ));
    }
    if cfg.cmd.as_deref() != Some(args) {
        what.push("agent arguments (server, checksum, roles, node, labels or taints)".into());
    }
    // Compared in place: no copy of the token outside its Secret.
    let same_token = cfg
        .env
        .iter()
        .flatten()
        .any(|e| e.strip_prefix("CATTLE_TOKEN=") == Some(token.expose()));
    if !same_token {
        what.push("token".into());
    }
    if !same_proxy(cfg.env.as_deref().unwrap_or_default(), proxy) {
        what.push("proxy".into());
    }
    Ok((!what.is_empty()).then(|| what.join(", ")))
}

/// True when the container's proxy variables are exactly the ones `proxy` gives it (the
/// image's other variables do not count).
fn same_proxy(env: &[String], proxy: &ProxySettings) -> bool {
    let is_proxy_var = |e: &&String| {
        e.split_once('=')
            .is_some_and(|(k, _)| PROXY_VARS.contains(&k))
    };
    let mut have: Vec<&String> = env.iter().filter(is_proxy_var).collect();
    let want = proxy_env(proxy);
    let mut want: Vec<&String> = want.iter().collect();
    have.sort();
    want.sort();
    have == want
}

/// What the agent container must run: the image, the agent's arguments, the token and the
/// proxy.
#[derive(Clone, Copy)]
pub struct Wanted<'a> {
    pub image: &'a str,
    pub args: &'a [String],
    pub token: &'a Secret,
    pub proxy: &'a ProxySettings,
}

/// The agent image as it is pulled and run: behind `system_default_registry`, as Rancher
/// resolves its own images ([`image_ref::with_default_registry`]).
pub fn agent_image(rancher: &RancherSettings) -> String {
    image_ref::with_default_registry(
        &rancher.agent_image,
        rancher.system_default_registry.as_deref(),
    )
}

/// The credentials a pull of the agent image sends: the userdata's for the image's registry
/// (`registries.configs`), through the Engine at `socket`.
#[derive(Debug, Clone)]
pub struct PullAuth {
    pub socket: PathBuf,
    pub registry: String,
    pub auth: RegistryAuth,
}

impl PullAuth {
    /// `None` when the userdata has no credentials for `image`'s registry (Docker's reading
    /// of the reference: `docker.io` unless it names another); then the pull sends none.
    pub fn for_image(
        socket: PathBuf,
        image: &str,
        registries: &RegistrySettings,
    ) -> Option<PullAuth> {
        let registry = image_ref::registry_of(image);
        registries.auth_for(registry).map(|auth| PullAuth {
            socket,
            registry: registry.to_string(),
            auth: auth.clone(),
        })
    }

    /// For findings: the registry and the kind of credentials, never their values.
    pub fn describe(&self) -> String {
        format!("with the {} for {}", self.auth.describe(), self.registry)
    }
}

/// The image from the engine, else pulled (with `auth` when the registry needs it).
async fn present_or_pull(
    docker: &Docker,
    image: &str,
    bundle: String,
    auth: Option<&PullAuth>,
) -> Result<String, Rke1Error> {
    if engine::image_present(docker, image).await {
        return Ok("present".into());
    }
    let pulled = match auth {
        Some(a) => engine::pull_with_auth(&a.socket, image, &a.registry, &a.auth)
            .await
            .map(|()| format!("pulled {}", a.describe())),
        None => engine::pull(docker, image)
            .await
            .map(|()| "pulled".to_string()),
    };
    match pulled {
        Ok(how) => Ok(how),
        Err(e) => Err(Rke1Error::NoImage {
            image: image.to_string(),
            bundle,
            pull: e.to_string(),
        }),
    }
}

/// Keeps the existing agent container `c` when it runs what is wanted (starting it when
/// stopped), else removes it and says what differed: the caller creates the new one.
async fn keep_or_remove(
    docker: &Docker,
    c: ContainerSummary,
    want: &Wanted<'_>,
) -> Result<Result<Rke1Record, String>, Rke1Error> {
    let Wanted { image, token, .. } = *want;
    let id = c.id.unwrap_or_default();
    if let Some(what) = drift(docker, &id, want).await? {
        tracing::info!(container = %id, changed = %what, "the agent container runs other settings than the userdata; recreating it");
        let opts = bollard::query_parameters::RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        docker
            .remove_container(&id, Some(opts))
            .await
            .map_err(|source| Rke1Error::Api {
                action: format!("removing container {id}"),
                source,
            })?;
        return Ok(Err(what));
    }
    let running = matches!(
        c.state,
        Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::RESTARTING)
    );
    if !running {
        tracing::info!(container = %id, "agent container exists but is stopped; starting it");
        docker
            .start_container(&id, None)
            .await
            .map_err(|source| Rke1Error::StartFailed {
                id: id.clone(),
                source,
            })?;
        check_stays_up(docker, &id, token).await?;
    }
    Ok(Ok(Rke1Record {
        container_id: id,
        image: c.image.unwrap_or_else(|| image.to_string()),
        created: false,
        started: !running,
        image_source: "present".into(),
        replaced: None,
    }))
}

/// Makes sure exactly one agent container for `server` exists and runs what the userdata
/// wants: an existing one with other settings is replaced.
pub async fn ensure_agent(
    docker: &Docker,
    server: &str,
    want: Wanted<'_>,
    base: AgentBase,
    auth: Option<&PullAuth>,
) -> Result<Rke1Record, Rke1Error> {
    let Wanted {
        image,
        args,
        token,
        proxy,
    } = want;
    let api = |action: &str| {
        let action = action.to_string();
        move |source| Rke1Error::Api { action, source }
    };
    let mut replaced = None;
    let image_source = match base {
        AgentBase::Image(source) => source,
        AgentBase::Pull { bundle } => present_or_pull(docker, image, bundle, auth).await?,
        AgentBase::Existing(c) => match keep_or_remove(docker, *c, &want).await? {
            Ok(kept) => return Ok(kept),
            Err(what) => {
                replaced = Some(what);
                let why = "an agent container replaced".to_string();
                present_or_pull(docker, image, why, auth).await?
            }
        },
    };
    let body = container_body(image, server, token, proxy, args.to_vec());
    let created = docker
        .create_container(None, body)
        .await
        .map_err(api("creating the agent container"))?;
    docker
        .start_container(&created.id, None)
        .await
        .map_err(|source| Rke1Error::StartFailed {
            id: created.id.clone(),
            source,
        })?;
    check_stays_up(docker, &created.id, token).await?;
    tracing::info!(container = %created.id, %image, "rancher-agent container started");
    Ok(Rke1Record {
        container_id: created.id,
        image: image.to_string(),
        created: true,
        started: true,
        image_source,
        replaced,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rancher::NodeIdentity;
    use crate::userdata::Taint;
    use crate::userdata::TaintEffect;
    use std::collections::BTreeMap;

    #[test]
    fn args_and_body() {
        let node = NodeIdentity {
            node_name: "node1".into(),
            address: Some("10.0.0.11".into()),
            internal_address: Some("eth1".into()),
        };
        let labels = BTreeMap::from([("zone".to_string(), "a".to_string())]);
        let taints = vec![Taint {
            key: "k".into(),
            value: "v".into(),
            effect: TaintEffect::NoExecute,
        }];
        let token = Secret::new("tok-123");
        let args = agent_args(&Registration {
            server: "https://r.lab",
            token: &token,
            ca_checksum: Some("ab12"),
            roles: &[Role::Worker, Role::Etcd, Role::Controlplane],
            node: &node,
            labels: &labels,
            taints: &taints,
            explicit_node_name: None,
            strict_verify: None,
            trusted_ca: &[],
            proxy: &Default::default(),
        });
        assert_eq!(
            args.join(" "),
            "--server https://r.lab --ca-checksum ab12 --etcd --controlplane --worker \
             --node-name node1 --address 10.0.0.11 --internal-address eth1 --label zone=a \
             --taints k=v:NoExecute"
        );
        let body = container_body(
            "rancher/rancher-agent:v2.6.14",
            "https://r.lab",
            &token,
            &ProxySettings::default(),
            args,
        );
        let cmd = body.cmd.clone().unwrap();
        assert!(cmd.iter().all(|a| !a.contains("tok-123")));
        assert_eq!(
            body.env.clone().unwrap(),
            vec!["CATTLE_TOKEN=tok-123".to_string()]
        );
        let hc = body.host_config.clone().unwrap();
        assert_eq!(hc.privileged, Some(true));
        assert_eq!(hc.network_mode.as_deref(), Some("host"));
        assert_eq!(
            hc.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        assert_eq!(
            hc.binds.unwrap(),
            vec!["/etc/kubernetes:/etc/kubernetes", "/var/run:/var/run"]
        );
        assert_eq!(body.labels.unwrap()[SERVER_LABEL], "https://r.lab");
    }

    #[test]
    fn the_agent_gets_the_proxy_and_a_changed_proxy_is_drift() {
        let token = Secret::new("tok-123");
        let proxy = ProxySettings {
            http: Some(Secret::new("http://u:hunter2@proxy.lab:3128/")),
            https: Some(Secret::new("http://proxy.lab:3128/")),
            no_proxy: vec!["localhost".into(), "10.0.0.0/8".into()],
        };
        let body = container_body("img", "https://r.lab", &token, &proxy, vec![]);
        let env = body.env.clone().unwrap();
        assert_eq!(
            env,
            [
                "CATTLE_TOKEN=tok-123",
                "HTTP_PROXY=http://u:hunter2@proxy.lab:3128/",
                "HTTPS_PROXY=http://proxy.lab:3128/",
                "NO_PROXY=localhost,10.0.0.0/8",
            ]
        );
        assert!(body.cmd.unwrap().iter().all(|a| !a.contains("hunter2")));
        // As the engine reports it: the image's own variables around ours, in any order.
        let mut seen = vec!["PATH=/usr/bin".to_string()];
        seen.extend(env.iter().rev().cloned());
        assert!(same_proxy(&seen, &proxy));
        let other = ProxySettings {
            no_proxy: vec!["localhost".into()],
            ..proxy.clone()
        };
        assert!(!same_proxy(&seen, &other));
        assert!(!same_proxy(&seen, &ProxySettings::default()));
        assert!(same_proxy(
            &["CATTLE_TOKEN=t".to_string(), "PATH=/bin".to_string()],
            &ProxySettings::default()
        ));
    }

    #[test]
    fn no_checksum_no_addresses() {
        let node = NodeIdentity {
            node_name: "n".into(),
            address: None,
            internal_address: None,
        };
        let token = Secret::new("t");
        let args = agent_args(&Registration {
            server: "https://r",
            token: &token,
            ca_checksum: None,
            roles: &[Role::Worker],
            node: &node,
            labels: &BTreeMap::new(),
            taints: &[],
            explicit_node_name: None,
            strict_verify: None,
            trusted_ca: &[],
            proxy: &Default::default(),
        });
        assert_eq!(args.join(" "), "--server https://r --worker --node-name n");
    }

    #[test]
    fn rke_docker_check() {
        assert_eq!(docker_version_problem("20.10.24+dfsg1", "node1"), None);
        assert_eq!(docker_version_problem("24.0.7", "node1"), None);
        let msg = docker_version_problem("26.1.3", "node1").unwrap();
        assert!(
            msg.starts_with("Unsupported Docker version found [26.1.3] on host [node1], supported versions are [1.13 17.03"),
            "{msg}"
        );
        assert!(docker_version_problem("20.1", "n").is_some());
    }

    #[test]
    fn archives_in_bundle() {
        let d = tempfile::tempdir().unwrap();
        for n in ["b.tar.gz", "a.tar", "docker.deb", "notes.txt"] {
            std::fs::write(d.path().join(n), "").unwrap();
        }
        let names: Vec<String> = bundle_archives(d.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["a.tar", "b.tar.gz"]);
    }
}
