//! Container runtime: settings + facts -> ordered steps, each with its reason. Pure.
//!
//! Order: daemon.json first (Debian's docker.io postinst starts the daemon at once, and a
//! daemon started without the mirrors would pull through the wrong registry), then the
//! repository, the packages, enable + start through systemd, and readiness (the Engine API
//! answers ping). An engine already installed is never reinstalled or replaced.
//!
//! Mode system-agent skips all of it: RKE2 and K3s ship and run their own containerd.
//!
//! Both modes begin with the registry files (`plan::registries`): registries.yaml for RKE2
//! and K3s, containerd's hosts.toml.

use super::Outcome;
use crate::facts::ProbeArea;
use crate::facts::runtime::{
    APT_KEYRING, CONTAINERD_PACKAGES, DOCKER_PACKAGES, DOCKER_UNIT, RuntimeFacts, repo_file_path,
};
use crate::rancher::rke1::docker_version_problem;
use crate::system::docker::{DAEMON_JSON, render_daemon_json};
use crate::system::packages::{PackageManager, VersionConstraint};
use crate::userdata::{Engine, RegistrationMode, RepoSource, RuntimeSource, Settings};

/// Readiness bound for a just-started engine.
pub const READY_TIMEOUT_SECS: u64 = 120;

pub use super::runtime_action::{RuntimeAction, RuntimeStep};

const WHY_RUNTIME: &str = "Rancher's agents and Kubernetes need a container runtime";
const WHY_DAEMON_JSON: &str =
    "registry mirrors must be configured before the engine first starts and pulls";
const WHY_REPO: &str = "the runtime comes from the repository named in the userdata";
const WHY_SERVICE: &str = "the runtime must run now and start on every boot";
const WHY_READY: &str = "the agent is created through the Engine API, which must answer first";
const WHY_RKE_VERSION: &str = "RKE checks the Docker version against its supported list";

/// Package names for an engine by source and manager.
pub fn packages_for(
    engine: Engine,
    source: &RuntimeSource,
    pm: PackageManager,
) -> Vec<&'static str> {
    let repo = matches!(source, RuntimeSource::Repo(_));
    match (engine, repo) {
        // Docker's own repositories (download.docker.com layout and mirrors of it).
        (Engine::Docker, true) => vec!["docker-ce", "docker-ce-cli", "containerd.io"],
        (Engine::Containerd, true) => vec!["containerd.io"],
        (Engine::Docker, false) => match pm {
            PackageManager::Apt => vec!["docker.io"],
            PackageManager::Dnf | PackageManager::Yum => vec!["moby-engine"],
            PackageManager::Zypper => vec!["docker"],
        },
        (Engine::Containerd, false) => vec!["containerd"],
    }
}

/// The apt source line bootstrapd writes for a repository.
pub fn apt_source_line(repo: &RepoSource) -> String {
    let suite = repo.suite.as_deref().unwrap_or("stable");
    let components = if repo.components.is_empty() {
        "stable".to_string()
    } else {
        repo.components.join(" ")
    };
    let opts = if repo.key.is_some() {
        format!("signed-by={APT_KEYRING}")
    } else {
        "trusted=yes".to_string()
    };
    format!(
        "# Written by bootstrapd (runtime.source.repo)\ndeb [{opts}] {} {suite} {components}\n",
        repo.url
    )
}

/// The yum/dnf (and zypper, same ini format) repository file.
pub fn yum_repo_file(repo: &RepoSource) -> String {
    let mut s = format!(
        "# Written by bootstrapd (runtime.source.repo)\n[bootstrapd-runtime]\nname=bootstrapd container runtime\nbaseurl={}\nenabled=1\n",
        repo.url
    );
    match &repo.key {
        Some(k) => {
            let k = if k.starts_with('/') {
                format!("file://{k}")
            } else {
                k.clone()
            };
            s.push_str(&format!("gpgcheck=1\ngpgkey={k}\n"));
        }
        None => s.push_str("gpgcheck=0\nrepo_gpgcheck=0\n"),
    }
    s
}

/// The step that ends the plan early: nothing after it can be planned (a refusal, a failure,
/// or mode system-agent's skip).
struct Stop(Box<RuntimeStep>);

impl From<RuntimeStep> for Stop {
    fn from(step: RuntimeStep) -> Self {
        Stop(Box::new(step))
    }
}

pub fn plan(settings: &Settings, facts: &RuntimeFacts) -> Vec<RuntimeStep> {
    let mut steps = Vec::new();
    if let Err(Stop(last)) = plan_steps(settings, facts, &mut steps) {
        steps.push(*last);
    }
    steps
}

/// The runtime stage in the order it runs: daemon.json before anything can start the daemon,
/// then the packages, the service, readiness and RKE's version check.
fn plan_steps(
    settings: &Settings,
    facts: &RuntimeFacts,
    steps: &mut Vec<RuntimeStep>,
) -> Result<(), Stop> {
    // Before anything can start a runtime that reads them (RKE2/K3s start after registration).
    steps.extend(super::registries::plan(settings, &facts.registries));
    applicable(settings)?;
    usable_facts(facts)?;
    let constraint = version_constraint(settings)?;
    // Like daemon.json: before anything can start the engine for the first time.
    steps.extend(super::proxy::dropin_steps(settings, facts));
    steps.push(daemon_json(settings, facts)?);
    steps.extend(engine_install(settings, facts, constraint.as_ref())?);
    steps.push(service(facts));
    steps.push(readiness(facts));
    steps.push(rke_version_check(facts));
    Ok(())
}

/// Only mode rke1 with Docker needs bootstrapd to install a runtime.
fn applicable(settings: &Settings) -> Result<(), Stop> {
    if settings.rancher.mode == RegistrationMode::SystemAgent {
        return Err(Stop::from(RuntimeStep::report(
            "runtime",
            WHY_RUNTIME,
            Outcome::Skipped,
            "mode system-agent: RKE2/K3s install and run their own containerd",
        )));
    }
    if settings.runtime.engine == Engine::Containerd {
        return Err(Stop::from(RuntimeStep::with_remedy(
            "runtime",
            WHY_RUNTIME,
            Outcome::Failed,
            "mode rke1 runs the rancher-agent container on Docker; containerd alone cannot host it",
            "set runtime.engine: docker, or rancher.mode: system-agent for RKE2/K3s clusters",
        )));
    }
    Ok(())
}

/// A probe that failed leaves the plan without ground to stand on; Docker's own probe failing
/// only means the engine does not answer yet, which the plan handles.
fn usable_facts(facts: &RuntimeFacts) -> Result<(), Stop> {
    match facts.errors.iter().find(|f| f.area != ProbeArea::Docker) {
        Some(failure) => Err(Stop::from(RuntimeStep::with_remedy(
            "runtime",
            WHY_RUNTIME,
            Outcome::Failed,
            format!(
                "could not inspect the host ({}): {}",
                failure.area, failure.message
            ),
            "fix the probe error above and run again",
        ))),
        None => Ok(()),
    }
}

fn version_constraint(settings: &Settings) -> Result<Option<VersionConstraint>, Stop> {
    let version = settings.runtime.version.as_deref();
    version
        .map(VersionConstraint::parse)
        .transpose()
        .map_err(|e| {
            Stop::from(RuntimeStep::with_remedy(
                "runtime.version",
                WHY_RUNTIME,
                Outcome::Failed,
                e.to_string(),
                "write runtime.version like 24.0, =24.0.7 or >=20.10",
            ))
        })
}

/// daemon.json with the registry mirrors, before anything can start the daemon: Docker
/// Hub's, from `runtime.registry_mirrors` and then `registries.mirrors` (`docker.io`, else
/// `*`), each once. Docker's `registry-mirrors` apply to Docker Hub only.
fn daemon_json(settings: &Settings, facts: &RuntimeFacts) -> Result<RuntimeStep, Stop> {
    const S: &str = "runtime.daemon-json";
    let mirrors = &settings
        .registries
        .docker_hub_mirrors(&settings.runtime.registry_mirrors);
    let rendered = render_daemon_json(
        std::path::Path::new(DAEMON_JSON),
        facts.daemon_json.as_deref(),
        mirrors,
    );
    match rendered {
        Ok(Some(content)) => Ok(RuntimeStep::change(
            S,
            WHY_DAEMON_JSON,
            format!("write {DAEMON_JSON} with registry-mirrors {mirrors:?}"),
            RuntimeAction::WriteFile {
                path: DAEMON_JSON.into(),
                content,
                mode: 0o644,
            },
        )),
        Ok(None) => Ok(RuntimeStep::report(
            S,
            WHY_DAEMON_JSON,
            Outcome::Ok,
            if mirrors.is_empty() {
                "no registry mirrors requested".to_string()
            } else {
                format!("{DAEMON_JSON} already lists the registry mirrors")
            },
        )),
        Err(e) => Err(Stop::from(RuntimeStep::with_remedy(
            S,
            WHY_DAEMON_JSON,
            Outcome::Failed,
            e.to_string(),
            format!("fix or remove {DAEMON_JSON}"),
        ))),
    }
}

/// The engine's packages: an installed engine is kept, otherwise they come from the source
/// the userdata names.
fn engine_install(
    settings: &Settings,
    facts: &RuntimeFacts,
    constraint: Option<&VersionConstraint>,
) -> Result<Vec<RuntimeStep>, Stop> {
    if let Some(failure) = facts.sysext.errors.iter().next() {
        return Err(Stop::from(RuntimeStep::failed(
            "runtime.sysext",
            WHY_RUNTIME,
            format!(
                "could not inspect the system extension: {}",
                failure.message
            ),
            "fix the probe error above and run again",
        )));
    }
    if let Some(image) = &facts.sysext.image {
        return super::sysext::steps(facts, image).map_err(Stop);
    }
    let unfinished = unfinished_installs(facts);
    if let Some((what, version)) = installed_engine(facts, &unfinished) {
        return Ok(vec![keep_installed(&what, &version, constraint)]);
    }
    if let Some(step) = super::sysext::read_only_usr(facts) {
        return Err(Stop::from(step));
    }
    let Some(pm) = facts.package_manager else {
        return Err(Stop::from(RuntimeStep::with_remedy(
            "runtime.install",
            WHY_RUNTIME,
            Outcome::Failed,
            "Docker is not installed and the host has no apt-get, dnf, yum or zypper",
            "preinstall Docker in the image",
        )));
    };
    match &settings.runtime.source {
        RuntimeSource::Offline(o) => Ok(vec![install_offline(&o.path, pm, facts, &unfinished)?]),
        RuntimeSource::Repo(repo) => {
            let mut steps = repository(repo, pm, facts)?;
            steps.push(install_step(settings, pm, constraint, true, &unfinished));
            Ok(steps)
        }
        // Resolved into facts.sysext.image above, or refused there.
        RuntimeSource::Sysext(_) => Err(Stop::from(RuntimeStep::failed(
            "runtime.sysext",
            WHY_RUNTIME,
            "the system extension's image could not be resolved",
            "check runtime.source.sysext",
        ))),
        RuntimeSource::Distro => {
            let refresh = pm == PackageManager::Apt && !facts.index_fresh;
            Ok(vec![install_step(
                settings,
                pm,
                constraint,
                refresh,
                &unfinished,
            )])
        }
    }
}

/// Packages an earlier install left cut short (a crash during their postinst), as the step
/// names them.
fn unfinished_installs(facts: &RuntimeFacts) -> Vec<String> {
    facts
        .unfinished
        .iter()
        .map(|(p, state)| format!("{p} ({state})"))
        .collect()
}

/// The engine already on the host, as (what, version). An engine whose install was cut short
/// may answer all the same; it counts as installed only once dpkg has finished it, which the
/// install action does first.
fn installed_engine(facts: &RuntimeFacts, unfinished: &[String]) -> Option<(String, String)> {
    if !unfinished.is_empty() {
        return None;
    }
    facts
        .engine
        .as_ref()
        .map(|e| ("Docker Engine".to_string(), e.version.clone()))
        .or_else(|| {
            facts
                .installed_any(&DOCKER_PACKAGES)
                .map(|(p, v)| (p.to_string(), v.to_string()))
        })
}

/// An installed engine is never replaced: one that misses runtime.version is a warning.
fn keep_installed(
    what: &str,
    version: &str,
    constraint: Option<&VersionConstraint>,
) -> RuntimeStep {
    match constraint {
        Some(c) if !c.matches(version) => RuntimeStep::with_remedy(
            "runtime.install",
            WHY_RUNTIME,
            Outcome::Warning,
            format!(
                "{what} {version} is installed and does not satisfy runtime.version {:?}; \
                 an installed engine is never replaced",
                c.as_str()
            ),
            "install the wanted version in the image, or relax runtime.version",
        ),
        _ => RuntimeStep::report(
            "runtime.install",
            WHY_RUNTIME,
            Outcome::Ok,
            format!("{what} {version} already installed"),
        ),
    }
}

fn install_offline(
    bundle: &str,
    pm: PackageManager,
    facts: &RuntimeFacts,
    unfinished: &[String],
) -> Result<RuntimeStep, Stop> {
    if facts.bundle_packages.is_empty() {
        return Err(Stop::from(RuntimeStep::with_remedy(
            "runtime.install",
            WHY_RUNTIME,
            Outcome::Failed,
            format!(
                "the offline bundle {bundle} holds no .{} files",
                pm.package_extension()
            ),
            "put the runtime's packages into the bundle directory",
        )));
    }
    Ok(RuntimeStep::change(
        "runtime.install",
        WHY_RUNTIME,
        format!(
            "{}install {} package file(s) from {bundle} with {pm}",
            finish_note(unfinished),
            facts.bundle_packages.len(),
        ),
        RuntimeAction::InstallFiles {
            manager: pm,
            files: facts.bundle_packages.clone(),
        },
    ))
}

/// The repository the userdata names: its signing key (apt), then its source file.
fn repository(
    repo: &RepoSource,
    pm: PackageManager,
    facts: &RuntimeFacts,
) -> Result<Vec<RuntimeStep>, Stop> {
    if repo.key.is_none() && !repo.trusted {
        return Err(Stop::from(RuntimeStep::with_remedy(
            "runtime.repository",
            WHY_REPO,
            Outcome::Failed,
            format!(
                "repository {} has no signing key and is not marked trusted",
                repo.url
            ),
            "give runtime.source.repo.key, or set trusted: true for a local repository",
        )));
    }
    let mut steps = Vec::new();
    if let (PackageManager::Apt, Some(key)) = (pm, &repo.key) {
        steps.push(RuntimeStep::change(
            "runtime.repository-key",
            WHY_REPO,
            format!("install the signing key {key} as {APT_KEYRING}"),
            RuntimeAction::InstallAptKey {
                source: key.clone(),
                dest: APT_KEYRING.into(),
            },
        ));
    }
    steps.push(repository_file(repo, pm, facts));
    Ok(steps)
}

fn repository_file(repo: &RepoSource, pm: PackageManager, facts: &RuntimeFacts) -> RuntimeStep {
    let path = repo_file_path(pm);
    let content = match pm {
        PackageManager::Apt => apt_source_line(repo),
        _ => yum_repo_file(repo),
    };
    if facts.repo_file.as_deref() == Some(content.as_str()) {
        return RuntimeStep::report(
            "runtime.repository",
            WHY_REPO,
            Outcome::Ok,
            format!("{path} already points at {}", repo.url),
        );
    }
    RuntimeStep::change(
        "runtime.repository",
        WHY_REPO,
        format!("write {path} for {}", repo.url),
        RuntimeAction::WriteFile {
            path: path.into(),
            content,
            mode: 0o644,
        },
    )
}

/// The Docker unit enabled and running. A running engine without a unit (started some other
/// way) is left as it is.
fn service(facts: &RuntimeFacts) -> RuntimeStep {
    let unit_ok = facts
        .docker_unit
        .as_ref()
        .is_some_and(|u| u.is_active() && u.is_enabled());
    if facts.engine.is_some() && (unit_ok || facts.docker_unit.is_none()) {
        return RuntimeStep::report(
            "runtime.service",
            WHY_SERVICE,
            Outcome::Ok,
            format!("{DOCKER_UNIT} running"),
        );
    }
    RuntimeStep::change(
        "runtime.service",
        WHY_SERVICE,
        format!("enable and start {DOCKER_UNIT}"),
        RuntimeAction::EnableStart {
            unit: DOCKER_UNIT.into(),
        },
    )
}

fn readiness(facts: &RuntimeFacts) -> RuntimeStep {
    match &facts.engine {
        Some(e) => RuntimeStep::report(
            "runtime.ready",
            WHY_READY,
            Outcome::Ok,
            format!(
                "Docker Engine API answers (Docker {}, API {})",
                e.version, e.api_version
            ),
        ),
        None => RuntimeStep::change(
            "runtime.ready",
            WHY_READY,
            format!("wait up to {READY_TIMEOUT_SECS} s for the Docker Engine API"),
            RuntimeAction::WaitDocker {
                timeout_secs: READY_TIMEOUT_SECS,
            },
        ),
    }
}

/// RKE's version check now when the engine answers, else once it does.
fn rke_version_check(facts: &RuntimeFacts) -> RuntimeStep {
    let host = facts.hostname.clone().unwrap_or_else(|| "unknown".into());
    match &facts.engine {
        Some(e) => rke_version_step(&e.version, &host),
        None => RuntimeStep::change(
            "runtime.rke-docker-version",
            WHY_RKE_VERSION,
            "check the Docker version against RKE's supported list once the engine answers",
            RuntimeAction::CheckRkeDockerVersion { host },
        ),
    }
}

/// The packages the runtime stage will install from the repositories configured as they are
/// now (no repository or key to add first, no version to pick): those can be downloaded while
/// the host is being prepared. `None` for any other plan.
pub fn prefetchable(steps: &[RuntimeStep]) -> Option<(PackageManager, Vec<String>)> {
    for step in steps {
        match &step.action {
            RuntimeAction::Report { .. } => {}
            RuntimeAction::WriteFile { path, .. } if !is_package_source(path) => {}
            // The drop-ins are the engine's, not the package manager's (which is given the
            // proxy in its environment, early downloads included).
            RuntimeAction::ProxyDropIn { .. } => {}
            RuntimeAction::WriteSecretFile { .. } | RuntimeAction::RemoveFile { .. } => {}
            RuntimeAction::Install {
                manager: PackageManager::Apt,
                packages,
                constraint: None,
                ..
            } => return Some((PackageManager::Apt, packages.clone())),
            _ => return None,
        }
    }
    None
}

fn is_package_source(path: &str) -> bool {
    ["/etc/apt/", "/etc/yum.repos.d/", "/etc/zypp/"]
        .iter()
        .any(|d| path.starts_with(d))
}

fn install_step(
    settings: &Settings,
    pm: PackageManager,
    constraint: Option<&VersionConstraint>,
    refresh: bool,
    unfinished: &[String],
) -> RuntimeStep {
    let rt = &settings.runtime;
    let packages: Vec<String> = packages_for(rt.engine, &rt.source, pm)
        .into_iter()
        .map(String::from)
        .collect();
    // The engine and its CLI carry the Docker version; containerd.io versions differently.
    let constrained: Vec<String> = packages
        .iter()
        .filter(|p| !CONTAINERD_PACKAGES.contains(&p.as_str()))
        .cloned()
        .collect();
    let version = constraint
        .map(|c| format!(" (version {})", c.as_str()))
        .unwrap_or_default();
    let refresh_note = if refresh {
        "refresh the index, then "
    } else {
        ""
    };
    let finish_note = finish_note(unfinished);
    RuntimeStep::change(
        "runtime.install",
        WHY_RUNTIME,
        format!(
            "{finish_note}{refresh_note}install {}{version} with {pm}",
            packages.join(" ")
        ),
        RuntimeAction::Install {
            manager: pm,
            packages,
            constrained,
            constraint: constraint.map(|c| c.as_str().to_string()),
            refresh,
        },
    )
}

/// The install step's opening words when an earlier run's install was cut short. Said in the
/// step, not as a warning: once finished, nothing is wrong with the host.
fn finish_note(unfinished: &[String]) -> String {
    if unfinished.is_empty() {
        String::new()
    } else {
        format!(
            "finish the install an earlier run left cut short ({}), ",
            unfinished.join(", ")
        )
    }
}

/// RKE's check as a step: a warning only, because Rancher-provisioned RKE1 clusters ignore
/// the Docker version by default (only the `rke` CLI enforces it).
pub fn rke_version_step(version: &str, host: &str) -> RuntimeStep {
    match docker_version_problem(version, host) {
        None => RuntimeStep::report(
            "runtime.rke-docker-version",
            WHY_RKE_VERSION,
            Outcome::Ok,
            format!("Docker {version} is on RKE's supported list"),
        ),
        Some(msg) => RuntimeStep::with_remedy(
            "runtime.rke-docker-version",
            WHY_RKE_VERSION,
            Outcome::Warning,
            format!("{msg} (Rancher-provisioned clusters ignore this check by default)"),
            "pin runtime.version to a supported release if the cluster enforces the check",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::docker::EngineInfo;
    use crate::userdata::{OfflineSource, RuntimeSettings};

    fn settings(runtime: RuntimeSettings) -> Settings {
        Settings {
            runtime,
            ..Settings::rke1_worker()
        }
    }

    fn apt_host() -> RuntimeFacts {
        RuntimeFacts {
            live: true,
            hostname: Some("node1".into()),
            package_manager: Some(PackageManager::Apt),
            ..Default::default()
        }
    }

    fn kinds(steps: &[RuntimeStep]) -> Vec<(&'static str, Outcome)> {
        steps
            .iter()
            .map(|s| (s.step, s.preview().outcome))
            .collect()
    }

    #[test]
    fn fresh_debian_host_distro_docker() {
        let s = settings(RuntimeSettings {
            registry_mirrors: vec!["https://mirror.lab".into()],
            version: Some("20.10".into()),
            ..Default::default()
        });
        let steps = plan(&s, &apt_host());
        assert_eq!(steps[0].step, "runtime.daemon-json");
        assert!(
            matches!(&steps[0].action, RuntimeAction::WriteFile { path, .. } if path == DAEMON_JSON)
        );
        match &steps[1].action {
            RuntimeAction::Install {
                manager,
                packages,
                constrained,
                constraint,
                ..
            } => {
                assert_eq!(*manager, PackageManager::Apt);
                assert_eq!(packages, &vec!["docker.io".to_string()]);
                assert_eq!(constrained, packages);
                assert_eq!(constraint.as_deref(), Some("20.10"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&steps[2].action, RuntimeAction::EnableStart { unit } if unit == DOCKER_UNIT)
        );
        assert!(matches!(steps[3].action, RuntimeAction::WaitDocker { .. }));
        assert!(matches!(
            steps[4].action,
            RuntimeAction::CheckRkeDockerVersion { .. }
        ));
    }

    #[test]
    fn only_an_unconstrained_install_from_the_current_sources_is_downloaded_early() {
        // Distribution packages, a daemon.json before them: downloadable while preparing.
        let mirrors = settings(RuntimeSettings {
            registry_mirrors: vec!["https://mirror.lab".into()],
            ..Default::default()
        });
        assert_eq!(
            prefetchable(&plan(&mirrors, &apt_host())),
            Some((PackageManager::Apt, vec!["docker.io".to_string()]))
        );
        // A version to pick needs the refreshed index first.
        let pinned = settings(RuntimeSettings {
            version: Some("20.10".into()),
            ..Default::default()
        });
        assert_eq!(prefetchable(&plan(&pinned, &apt_host())), None);
        // A repository to add: the current sources do not have the packages yet.
        let repo = settings(RuntimeSettings {
            source: RuntimeSource::Repo(RepoSource {
                url: "http://10.0.2.2/repo".into(),
                key: None,
                suite: Some("bookworm".into()),
                components: vec!["main".into()],
                trusted: true,
            }),
            ..Default::default()
        });
        assert_eq!(prefetchable(&plan(&repo, &apt_host())), None);
        // Nothing to install; and no download-only mode outside apt.
        let mut installed = apt_host();
        installed
            .installed
            .insert("docker.io".into(), "20.10.24+dfsg1-1+b3".into());
        assert_eq!(prefetchable(&plan(&mirrors, &installed)), None);
        let mut dnf = apt_host();
        dnf.package_manager = Some(PackageManager::Dnf);
        assert_eq!(prefetchable(&plan(&mirrors, &dnf)), None);
    }

    #[test]
    fn installed_and_running_is_left_alone() {
        let mut f = apt_host();
        f.installed
            .insert("docker.io".into(), "20.10.24+dfsg1-1+b3".into());
        f.engine = Some(EngineInfo {
            version: "20.10.24+dfsg1".into(),
            api_version: "1.41".into(),
        });
        let steps = plan(&settings(RuntimeSettings::default()), &f);
        assert!(steps.iter().all(|s| !s.changes()), "{steps:?}");
        assert_eq!(
            kinds(&steps),
            vec![
                ("runtime.daemon-json", Outcome::Ok),
                ("runtime.install", Outcome::Ok),
                ("runtime.service", Outcome::Ok),
                ("runtime.ready", Outcome::Ok),
                ("runtime.rke-docker-version", Outcome::Ok),
            ]
        );
        // A constraint the installed engine misses is a warning, not a reinstall.
        let s = settings(RuntimeSettings {
            version: Some(">=24".into()),
            ..Default::default()
        });
        let steps = plan(&s, &f);
        assert_eq!(steps[1].preview().outcome, Outcome::Warning);
        assert!(steps.iter().all(|s| !s.changes()));
    }

    #[test]
    fn an_engine_whose_install_was_cut_short_is_finished_not_trusted() {
        // The crash campaign's case: kill -9 during docker.io's postinst. dockerd was already
        // enabled and answers after the reboot, but dpkg still has docker.io half-configured.
        let mut f = apt_host();
        f.unfinished
            .insert("docker.io".into(), "half-configured".into());
        f.engine = Some(EngineInfo {
            version: "20.10.24+dfsg1".into(),
            api_version: "1.41".into(),
        });
        let steps = plan(&settings(RuntimeSettings::default()), &f);
        let install = steps
            .iter()
            .find(|s| s.step == "runtime.install")
            .expect("an install step");
        assert!(install.changes(), "{install:?}");
        assert!(matches!(install.action, RuntimeAction::Install { .. }));
        assert!(
            install
                .preview()
                .detail
                .contains("left cut short (docker.io (half-configured))"),
            "{install:?}"
        );
        // Nothing else is judged: a finished install leaves nothing wrong with the host.
        assert!(
            steps
                .iter()
                .all(|s| s.preview().outcome != Outcome::Warning)
        );
    }

    #[test]
    fn unsupported_docker_is_rke_warning_with_rke_wording() {
        let step = rke_version_step("26.1.3", "node4");
        let f = step.preview();
        assert_eq!(f.outcome, Outcome::Warning);
        assert!(f.detail.starts_with(
            "Unsupported Docker version found [26.1.3] on host [node4], supported versions are ["
        ));
    }

    #[test]
    fn repo_source_writes_files_and_constrains_engine_only() {
        let repo = RepoSource {
            url: "https://download.docker.com/linux/debian".into(),
            key: Some("https://download.docker.com/linux/debian/gpg".into()),
            suite: Some("bookworm".into()),
            components: vec!["stable".into()],
            trusted: false,
        };
        let s = settings(RuntimeSettings {
            source: RuntimeSource::Repo(repo.clone()),
            version: Some("=24.0.7".into()),
            ..Default::default()
        });
        let steps = plan(&s, &apt_host());
        let names: Vec<_> = steps.iter().map(|s| s.step).collect();
        assert_eq!(
            &names[..4],
            &[
                "runtime.daemon-json",
                "runtime.repository-key",
                "runtime.repository",
                "runtime.install"
            ]
        );
        match &steps[2].action {
            RuntimeAction::WriteFile { path, content, .. } => {
                assert_eq!(path, "/etc/apt/sources.list.d/bootstrapd-runtime.list");
                assert!(content.contains(
                    "deb [signed-by=/etc/apt/keyrings/bootstrapd-runtime.gpg] https://download.docker.com/linux/debian bookworm stable\n"
                ));
            }
            other => panic!("{other:?}"),
        }
        match &steps[3].action {
            RuntimeAction::Install {
                packages,
                constrained,
                ..
            } => {
                assert_eq!(
                    packages,
                    &vec!["docker-ce", "docker-ce-cli", "containerd.io"]
                );
                assert_eq!(constrained, &vec!["docker-ce", "docker-ce-cli"]);
            }
            other => panic!("{other:?}"),
        }
        // Unsigned and untrusted: refused.
        let mut unsigned = repo.clone();
        unsigned.key = None;
        let s = settings(RuntimeSettings {
            source: RuntimeSource::Repo(unsigned.clone()),
            ..Default::default()
        });
        assert_eq!(
            plan(&s, &apt_host()).last().unwrap().preview().outcome,
            Outcome::Failed
        );
        unsigned.trusted = true;
        assert!(apt_source_line(&unsigned).contains("deb [trusted=yes] "));
        let y = yum_repo_file(&unsigned);
        assert!(
            y.contains("baseurl=https://download.docker.com/linux/debian\n")
                && y.contains("gpgcheck=0")
        );
        let mut signed = unsigned;
        signed.key = Some("/etc/pki/docker.gpg".into());
        assert!(yum_repo_file(&signed).contains("gpgcheck=1\ngpgkey=file:///etc/pki/docker.gpg\n"));
    }

    #[test]
    fn offline_bundle_and_other_modes() {
        let s = settings(RuntimeSettings {
            source: RuntimeSource::Offline(OfflineSource {
                path: "/opt/bundle".into(),
            }),
            ..Default::default()
        });
        let mut f = apt_host();
        assert_eq!(plan(&s, &f)[1].preview().outcome, Outcome::Failed);
        f.bundle_packages = vec!["/opt/bundle/docker.deb".into()];
        assert!(
            matches!(&plan(&s, &f)[1].action, RuntimeAction::InstallFiles { files, .. } if files.len() == 1)
        );

        let mut sa = settings(RuntimeSettings::default());
        sa.rancher.mode = RegistrationMode::SystemAgent;
        assert_eq!(kinds(&plan(&sa, &f)), vec![("runtime", Outcome::Skipped)]);
        let c = settings(RuntimeSettings {
            engine: Engine::Containerd,
            ..Default::default()
        });
        assert_eq!(plan(&c, &f)[0].preview().outcome, Outcome::Failed);
        let bad = settings(RuntimeSettings {
            version: Some("latest".into()),
            ..Default::default()
        });
        assert_eq!(plan(&bad, &f)[0].step, "runtime.version");
        assert_eq!(
            packages_for(Engine::Docker, &RuntimeSource::Distro, PackageManager::Dnf),
            vec!["moby-engine"]
        );
    }
}
