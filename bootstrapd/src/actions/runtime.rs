//! Carries out the container runtime steps. Steps depend on each other (no start without
//! packages, no readiness without a start), so the first failure ends the sequence
//! ([`crate::actions::apply`]).
//!
//! Below a test root (`--root`) files are written there, but package managers, systemd and
//! the Engine API of the real host are never touched: those steps report `skipped`.

use std::time::Duration;

use base64::Engine as _;

use crate::actions::StepFailure;
use crate::facts::runtime::DOCKER_PACKAGES;
use crate::fsutil::{HostRoot, write_atomic};
use crate::http::{HttpClient, Request, RetryPolicy, TlsTrust};
use crate::plan::runtime::{RuntimeAction, RuntimeStep, rke_version_step};
use crate::plan::{Finding, Outcome};
use crate::secret::Secret;
use crate::system::docker;
use crate::system::packages::{self, PackageManager, VersionConstraint};
use crate::system::systemd::Systemd;
use crate::userdata::{ProxySettings, trusted_ca_anchors};

type StepResult = crate::actions::StepResult<(Outcome, String)>;

/// Package downloads running while the host is prepared ([`crate::plan::runtime::prefetchable`]),
/// so that the runtime install only unpacks. They install nothing; if they fail, the install
/// downloads (and reports) as it would have anyway.
pub struct Prefetch {
    task: tokio::task::JoinHandle<bool>,
}

impl Prefetch {
    /// Starts the downloads (through the userdata's `proxy`) in the background; `None` when
    /// the manager cannot download only.
    pub fn start(
        pm: PackageManager,
        packages: &[String],
        proxy: &ProxySettings,
    ) -> Option<Prefetch> {
        let [refresh, download] = packages::prefetch_commands(pm, packages)?;
        let (refresh, download) = (
            packages::proxied(refresh, proxy),
            packages::proxied(download, proxy),
        );
        let task = tokio::spawn(async move {
            if let Err(e) = packages::run(&refresh).await {
                tracing::info!(error = %e, "early index refresh failed; the install will refresh");
                return false;
            }
            if let Err(e) = packages::run(&download).await {
                tracing::info!(error = %e, "early download failed; the install will download");
            }
            true
        });
        Some(Prefetch { task })
    }

    /// Waits for the downloads to end. True when they refreshed the package index, which the
    /// install then need not do again ([`crate::facts::runtime::RuntimeFacts::index_fresh`]).
    pub async fn finish(self) -> bool {
        self.task.await.unwrap_or(false)
    }
}

fn needs_live(action: &RuntimeAction) -> bool {
    !matches!(
        action,
        RuntimeAction::Report { .. }
            | RuntimeAction::WriteFile { .. }
            | RuntimeAction::WriteSecretFile { .. }
            | RuntimeAction::RemoveFile { .. }
            | RuntimeAction::InstallAptKey { .. }
            | RuntimeAction::ProxyDropIn { .. }
            // Writes below the root; its loop mount is read-only and undone at once.
            | RuntimeAction::PlaceSysext { .. }
    )
}

/// One step applied; below a test root, a step that needs the live host only says what
/// it would do.
pub(crate) async fn apply_one(target: crate::actions::Target<'_>, step: &RuntimeStep) -> Finding {
    let (root, systemd, proxy) = (target.root, target.systemd, target.proxy);
    if !root.is_live() && needs_live(&step.action) {
        return Finding::new(
            step.step,
            Outcome::Skipped,
            format!(
                "below a test root, not on the live host; would: {}",
                step.detail
            ),
        );
    }
    let result = match &step.action {
        RuntimeAction::Report { .. } => return step.preview(),
        RuntimeAction::WriteFile {
            path,
            content,
            mode,
        } => write_file(root, path, content.as_bytes(), *mode),
        RuntimeAction::ProxyDropIn {
            unit,
            path,
            content,
            restart,
        } => {
            let d = DropIn {
                unit,
                path,
                restart: *restart,
            };
            write_dropin(root, systemd, d, content.as_ref()).await
        }
        RuntimeAction::WriteSecretFile {
            path,
            content,
            mode,
        } => write_file(root, path, content.expose().as_bytes(), *mode),
        RuntimeAction::RemoveFile { path } => remove_file(root, path),
        RuntimeAction::InstallAptKey { source, dest } => {
            let trust = TlsTrust::system_and(trusted_ca_anchors(target.trusted_ca));
            install_apt_key(root, source, dest, (&trust, proxy)).await
        }
        RuntimeAction::Refresh { manager } => refresh(*manager, proxy).await,
        RuntimeAction::Install {
            manager,
            packages,
            constrained,
            constraint,
            refresh,
        } => {
            let c = constraint.as_deref();
            let how = Install {
                constrained,
                constraint: c,
                refresh: *refresh,
                proxy,
            };
            install(root, *manager, packages, how).await
        }
        RuntimeAction::InstallFiles { manager, files } => {
            install_files(root, *manager, files, proxy).await
        }
        RuntimeAction::PlaceSysext { .. }
        | RuntimeAction::MergeSysext { .. }
        | RuntimeAction::SysextOnBoot { .. } => super::sysext::apply(target, &step.action).await,
        RuntimeAction::EnableStart { unit } => enable_start(systemd, unit).await,
        RuntimeAction::WaitDocker { timeout_secs } => wait_docker(root, *timeout_secs).await,
        RuntimeAction::CheckRkeDockerVersion { host } => match docker::engine_info(root).await {
            Ok(i) => return rke_version_step(&i.version, host).preview(),
            Err(e) => Err(StepFailure::new(
                e.to_string(),
                "check that docker.service runs".into(),
            )),
        },
    };
    match result {
        Ok((outcome, detail)) => Finding::new(step.step, outcome, detail),
        Err(failure) => failure.finding(step.step),
    }
}

async fn refresh(manager: PackageManager, proxy: &ProxySettings) -> StepResult {
    let spec = packages::proxied(packages::refresh_command(manager), proxy);
    packages::run(&spec)
        .await
        .map(|_| (Outcome::Changed, format!("ran `{spec}`")))
        .map_err(|e| {
            StepFailure::new(
                e.to_string(),
                "check the repository URL and the network".into(),
            )
        })
}

async fn wait_docker(root: &HostRoot, timeout_secs: u64) -> StepResult {
    let i = docker::wait_ready(root, Duration::from_secs(timeout_secs))
        .await
        .map_err(|e| {
            StepFailure::new(
                e.to_string(),
                "check `journalctl -u docker` for why the daemon does not come up".into(),
            )
        })?;
    Ok((
        Outcome::Ok,
        format!(
            "Docker Engine API answers (Docker {}, API {})",
            i.version, i.api_version
        ),
    ))
}

/// Writes `data` with `mode` unless the file already has both. The detail names the path
/// only: the data may be secret.
fn write_file(root: &HostRoot, path: &str, data: &[u8], mode: u32) -> StepResult {
    use std::os::unix::fs::PermissionsExt;
    let p = root.path(path);
    let same_mode = std::fs::metadata(&p).is_ok_and(|m| m.permissions().mode() & 0o7777 == mode);
    if same_mode && std::fs::read(&p).is_ok_and(|cur| cur == data) {
        return Ok((Outcome::Ok, format!("{path} already as required")));
    }
    write_atomic(&p, data, mode)
        .map(|()| (Outcome::Changed, format!("wrote {path}")))
        .map_err(|e| {
            StepFailure::new(
                format!("cannot write {}: {e}", p.display()),
                "check that the file system is writable".into(),
            )
        })
}

/// Removes a file bootstrapd wrote, and its directory when that is left empty (a
/// containerd hosts directory of its own making).
fn remove_file(root: &HostRoot, path: &str) -> StepResult {
    let p = root.path(path);
    match std::fs::remove_file(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Outcome::Ok, format!("{path} already gone")));
        }
        Err(e) => {
            return Err(StepFailure::new(
                format!("cannot remove {}: {e}", p.display()),
                "check that the file system is writable".into(),
            ));
        }
    }
    if path.starts_with(crate::facts::registries::CERTS_D)
        && let Some(dir) = p.parent()
    {
        // Fails, as it should, when the directory holds anything else (certificates).
        let _ = std::fs::remove_dir(dir);
    }
    Ok((Outcome::Changed, format!("removed {path}")))
}

/// The binary form of an OpenPGP key: apt's `signed-by` reads binary keyrings on every apt
/// version, armored ones only on newer releases and only with an `.asc` name.
pub fn dearmor(data: &[u8]) -> Result<Vec<u8>, String> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(data.to_vec());
    };
    let Some(begin) = text.find("-----BEGIN PGP PUBLIC KEY BLOCK-----") else {
        return Ok(data.to_vec());
    };
    let body = &text[begin..];
    let mut lines = body.lines().skip(1);
    // Armor headers ("Comment: ...") end at the first empty line; some keys have none.
    let mut b64 = String::new();
    let mut in_headers = true;
    for line in lines.by_ref() {
        let l = line.trim();
        if l.starts_with("-----END PGP PUBLIC KEY BLOCK-----") {
            break;
        }
        if in_headers {
            if l.is_empty() {
                in_headers = false;
                continue;
            }
            if l.contains(": ") {
                continue;
            }
            in_headers = false;
        }
        // The CRC24 line ("=abcd") is not part of the key.
        if l.starts_with('=') && l.len() == 5 {
            continue;
        }
        b64.push_str(l);
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| format!("the armored key is not valid base64: {e}"))
}

/// The key from `source` (a URL, fetched through `proxy` trusting `trust`: the system roots
/// and the userdata's CAs; or a local path) to `dest`.
async fn install_apt_key(
    root: &HostRoot,
    source: &str,
    dest: &str,
    (trust, proxy): (&TlsTrust, &ProxySettings),
) -> StepResult {
    let data = if source.starts_with("https://") || source.starts_with("http://") {
        let client = HttpClient::builder(trust.clone())
            .proxy(proxy)
            .retry(RetryPolicy {
                deadline: Duration::from_secs(120),
                ..RetryPolicy::default()
            })
            // An untrusted certificate does not heal by waiting: say so at once (the remedy
            // names trusted_ca) instead of retrying for two minutes.
            .fail_fast_on_certificate(1)
            .max_body(1 << 20)
            .build()
            .map_err(|e| StepFailure::new(e.to_string(), "check the key URL".to_string()))?;
        let req = Request::get(source)
            .map_err(|e| StepFailure::new(e.to_string(), "check the key URL".to_string()))?;
        let resp = client
            .send(&req)
            .await
            .and_then(|r| r.error_for_status(&crate::http::Method::GET))
            .map_err(|e| {
                StepFailure::new(
                    e.to_string(),
                    "check the key URL and the network".to_string(),
                )
            })?;
        resp.body
    } else {
        let p = root.path(source);
        std::fs::read(&p).map_err(|e| {
            StepFailure::new(
                format!("cannot read the repository key {}: {e}", p.display()),
                "put the key file into the image or give a URL".to_string(),
            )
        })?
    };
    let key = dearmor(&data).map_err(|e| {
        StepFailure::new(
            format!("{source}: {e}"),
            "give the repository's OpenPGP public key".to_string(),
        )
    })?;
    if key.is_empty() {
        return Err(StepFailure::new(
            format!("{source}: the key is empty"),
            "give the repository's OpenPGP public key".into(),
        ));
    }
    write_file(root, dest, &key, 0o644)
}

/// How [`install`] picks versions and reaches the repositories.
struct Install<'a> {
    constrained: &'a [String],
    constraint: Option<&'a str>,
    refresh: bool,
    proxy: &'a ProxySettings,
}

async fn install(
    root: &HostRoot,
    pm: PackageManager,
    names: &[String],
    how: Install<'_>,
) -> StepResult {
    let Install {
        constrained,
        constraint,
        refresh,
        proxy,
    } = how;
    if pm == PackageManager::Apt && refresh {
        // Cloud images often ship without package lists; madison and install need them.
        let spec = packages::proxied(packages::refresh_command(pm), proxy);
        packages::run(&spec).await.map_err(|e| {
            StepFailure::new(
                e.to_string(),
                "check the configured apt sources and the network".to_string(),
            )
        })?;
    }
    let constraint = constraint
        .map(VersionConstraint::parse)
        .transpose()
        .map_err(|e| StepFailure::new(e.to_string(), "fix runtime.version".to_string()))?;
    let mut specs = Vec::new();
    for name in names {
        match (&constraint, constrained.contains(name)) {
            (Some(c), true) => {
                let cands = packages::candidates(pm, name, proxy).await.map_err(|e| {
                    StepFailure::new(e.to_string(), "check the repositories".to_string())
                })?;
                let Some(v) = packages::pick_candidate(&cands, c) else {
                    let shown: Vec<&str> = cands.iter().take(8).map(String::as_str).collect();
                    return Err(StepFailure::new(
                        format!(
                            "no version of {name} satisfies runtime.version {:?} (available: {})",
                            c.as_str(),
                            if shown.is_empty() {
                                "none".to_string()
                            } else {
                                shown.join(", ")
                            }
                        ),
                        "relax runtime.version or point runtime.source at a repository that has it"
                            .into(),
                    ));
                };
                specs.push(packages::versioned_spec(pm, name, v));
            }
            _ => specs.push(name.clone()),
        }
    }
    let spec = packages::proxied(packages::install_command(pm, &specs), proxy);
    let got = packages::install_and_verify(root, pm, &spec, names).await?;
    Ok((Outcome::Changed, format!("installed {}", got.join(", "))))
}

async fn install_files(
    root: &HostRoot,
    pm: PackageManager,
    files: &[String],
    proxy: &ProxySettings,
) -> StepResult {
    // apt-get treats an argument as a file only when it looks like a path.
    let args: Vec<String> = files
        .iter()
        .map(|f| {
            if f.starts_with('/') {
                f.clone()
            } else {
                format!("./{f}")
            }
        })
        .collect();
    // Package files may still pull dependencies from the repositories.
    let spec = packages::proxied(packages::install_command(pm, &args), proxy);
    packages::finish_interrupted(pm, &spec).await?;
    packages::run(&spec).await.map_err(|e| {
        StepFailure::new(
            e.to_string(),
            "check that the bundle's packages fit this distribution".to_string(),
        )
    })?;
    for n in DOCKER_PACKAGES {
        if let Ok(Some(v)) = packages::installed_version(root, pm, n).await {
            return Ok((
                Outcome::Changed,
                format!("installed {} bundle package(s); {n} {v}", files.len()),
            ));
        }
    }
    Err(StepFailure::new(
        format!("no Docker package is installed after `{spec}`"),
        format!(
            "the bundle must hold one of: {}",
            DOCKER_PACKAGES.join(", ")
        ),
    ))
}

/// A proxy drop-in to write or remove, and the unit it belongs to.
struct DropIn<'a> {
    unit: &'a str,
    path: &'a str,
    /// The unit runs and must be restarted to read the change.
    restart: bool,
}

/// Writes (0600: it may hold the proxy's credentials) or removes a drop-in, then reloads
/// systemd over D-Bus and restarts the unit when it ran. Below a test root only the file
/// changes. The finding names the file, never its content.
async fn write_dropin(
    root: &HostRoot,
    systemd: Option<&Systemd>,
    d: DropIn<'_>,
    content: Option<&Secret>,
) -> StepResult {
    let p = root.path(d.path);
    let changed = match content {
        Some(c) => {
            let cur = std::fs::read(&p).ok();
            let same = cur.as_deref() == Some(c.expose().as_bytes()) && mode_of(&p) == Some(0o600);
            if !same {
                write_atomic(&p, c.expose().as_bytes(), 0o600).map_err(|e| {
                    StepFailure::new(
                        format!("cannot write {}: {e}", p.display()),
                        "check that the file system is writable".into(),
                    )
                })?;
            }
            !same
        }
        None => match std::fs::remove_file(&p) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                return Err(StepFailure::new(
                    format!("cannot remove {}: {e}", p.display()),
                    "check that the file system is writable".into(),
                ));
            }
        },
    };
    let did = match content {
        Some(_) if changed => format!("wrote {} (mode 0600)", d.path),
        Some(_) => format!("{} already as required", d.path),
        None if changed => format!("removed {}", d.path),
        None => format!("{} already gone", d.path),
    };
    if !changed {
        return Ok((Outcome::Ok, did));
    }
    if !root.is_live() {
        return Ok((
            Outcome::Changed,
            format!(
                "{did}; below a test root: systemd not reloaded, {} not restarted",
                d.unit
            ),
        ));
    }
    let reloaded = reload_and_restart(systemd, &d).await?;
    Ok((Outcome::Changed, format!("{did}; {reloaded}")))
}

/// daemon-reload, then the restart the plan asked for (stop and start, each waited for, as
/// `systemctl restart`).
async fn reload_and_restart(
    systemd: Option<&Systemd>,
    d: &DropIn<'_>,
) -> crate::actions::StepResult {
    let Some(sd) = systemd else {
        return Err(StepFailure::new(
            format!(
                "{} changed but systemd is not reachable over D-Bus to reload it",
                d.path
            ),
            "run bootstrapd under systemd with the system bus up".into(),
        ));
    };
    let fail = |what: &str, e: crate::system::systemd::SystemdError| {
        StepFailure::new(
            format!("{what} {}: {e}", d.unit),
            format!("check `journalctl -u {}`", d.unit),
        )
    };
    sd.reload()
        .await
        .map_err(|e| fail("reloading systemd for", e))?;
    if !d.restart {
        return Ok("systemd reloaded".into());
    }
    sd.stop_and_wait(d.unit)
        .await
        .map_err(|e| fail("stopping", e))?;
    sd.start_and_wait(d.unit)
        .await
        .map_err(|e| fail("starting", e))?;
    Ok(format!("systemd reloaded, {} restarted", d.unit))
}

fn mode_of(p: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

async fn enable_start(systemd: Option<&Systemd>, unit: &str) -> StepResult {
    let Some(sd) = systemd else {
        return Err(StepFailure::new(
            "systemd is not reachable over D-Bus".into(),
            "run bootstrapd under systemd with the system bus up".into(),
        ));
    };
    let fail = |what: &str, e: crate::system::systemd::SystemdError| {
        StepFailure::new(
            format!("{what} {unit}: {e}"),
            format!("check `journalctl -u {unit}`"),
        )
    };
    let before = sd.unit_state(unit).await.map_err(|e| fail("reading", e))?;
    // Debian's and Fedora's package scripts reload systemd, enable and start the service
    // themselves; a second daemon-reload costs a second or more on a small VM, so each
    // call is made only when still needed.
    let stale = before.is_not_found()
        || sd
            .needs_reload(unit)
            .await
            .map_err(|e| fail("reading", e))?;
    let mut did = Vec::new();
    if stale {
        sd.reload()
            .await
            .map_err(|e| fail("reloading systemd for", e))?;
    }
    if !before.is_enabled() {
        let changes = sd.enable(&[unit]).await.map_err(|e| fail("enabling", e))?;
        // As `systemctl enable`: systemd caches UnitFileState until a reload, and a later
        // run (or `systemctl status`) would see the unit disabled. Package scripts enable
        // and reload themselves, so this is paid only where they did not run (an extension).
        if !changes.is_empty() {
            sd.reload()
                .await
                .map_err(|e| fail("reloading systemd after enabling", e))?;
        }
        did.push("enabled");
    }
    if before.active_state != "active" {
        sd.start_and_wait(unit)
            .await
            .map_err(|e| fail("starting", e))?;
        did.push("started");
    }
    let st = sd.unit_state(unit).await.map_err(|e| fail("reading", e))?;
    if !st.is_active() {
        return Err(StepFailure::new(
            format!("{unit} is not active after starting it [{st}]"),
            format!("check `journalctl -u {unit}`"),
        ));
    }
    Ok(if did.is_empty() {
        (
            Outcome::Ok,
            format!("{unit} already enabled and running [{st}]"),
        )
    } else {
        (
            Outcome::Changed,
            format!("{unit} {} [{st}]", did.join(" and ")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dearmors_keys() {
        let raw = b"\x99\x01\x0d\x04binarykey";
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        let armored = format!(
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: test\n\n{}\n{}\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n",
            &b64[..8],
            &b64[8..]
        );
        assert_eq!(dearmor(armored.as_bytes()).unwrap(), raw);
        let no_headers = format!(
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n{b64}\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n"
        );
        assert_eq!(dearmor(no_headers.as_bytes()).unwrap(), raw);
        // Already binary: kept as is.
        assert_eq!(dearmor(raw).unwrap(), raw);
        assert!(
            dearmor(
                b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!\n-----END PGP PUBLIC KEY BLOCK-----"
            )
            .is_err()
        );
    }

    #[tokio::test]
    async fn below_a_root_writes_files_and_skips_the_host() {
        use crate::facts::runtime::gather;
        use crate::plan::runtime::plan;
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().to_path_buf()));
        std::fs::create_dir_all(root.path("/usr/bin")).unwrap();
        std::fs::write(root.path("/usr/bin/apt-get"), "").unwrap();
        std::fs::create_dir_all(root.path("/etc/keys")).unwrap();
        let raw = b"\x99binary-key";
        std::fs::write(
            root.path("/etc/keys/docker.asc"),
            format!(
                "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n{}\n-----END PGP PUBLIC KEY BLOCK-----\n",
                base64::engine::general_purpose::STANDARD.encode(raw)
            ),
        )
        .unwrap();
        let settings = crate::userdata::Settings {
            runtime: crate::userdata::RuntimeSettings {
                registry_mirrors: vec!["https://mirror.lab".into()],
                source: crate::userdata::RuntimeSource::Repo(crate::userdata::RepoSource {
                    url: "http://repo.lab/docker".into(),
                    key: Some("/etc/keys/docker.asc".into()),
                    suite: Some("bookworm".into()),
                    components: vec![],
                    trusted: false,
                }),
                ..Default::default()
            },
            ..crate::userdata::Settings::rke1_worker()
        };
        let facts = gather(&root, &settings, None).await;
        let steps = plan(&settings, &facts);
        let findings =
            crate::actions::apply_all(crate::actions::Target::quiet(&root, None), &steps).await;
        let by = |s: &str| findings.iter().find(|f| f.step == s).unwrap().outcome;
        assert_eq!(by("runtime.daemon-json"), Outcome::Changed);
        assert_eq!(by("runtime.repository-key"), Outcome::Changed);
        assert_eq!(by("runtime.repository"), Outcome::Changed);
        assert_eq!(by("runtime.install"), Outcome::Skipped);
        assert_eq!(by("runtime.service"), Outcome::Skipped);
        assert_eq!(
            std::fs::read(root.path(crate::facts::runtime::APT_KEYRING)).unwrap(),
            raw
        );
        let dj = std::fs::read_to_string(root.path(docker::DAEMON_JSON)).unwrap();
        assert!(dj.contains("https://mirror.lab"));
        let list = std::fs::read_to_string(root.path(crate::facts::runtime::APT_LIST)).unwrap();
        assert!(list.contains("deb [signed-by=/etc/apt/keyrings/bootstrapd-runtime.gpg] http://repo.lab/docker bookworm stable"));

        // Second pass: the files are in place, nothing left to write.
        let facts = gather(&root, &settings, None).await;
        let steps = plan(&settings, &facts);
        let again =
            crate::actions::apply_all(crate::actions::Target::quiet(&root, None), &steps).await;
        let by = |s: &str| again.iter().find(|f| f.step == s).unwrap().outcome;
        assert_eq!(by("runtime.daemon-json"), Outcome::Ok);
        assert_eq!(by("runtime.repository-key"), Outcome::Ok);
        assert_eq!(by("runtime.repository"), Outcome::Ok);
    }
}
