//! Package managers (apt, dnf, yum, zypper): detection, version candidates, install commands.
//!
//! Command lines and output parsers are pure functions so they can be tested here; only
//! [`run`] executes anything. The package database is read from files where a stable file
//! format exists (dpkg status) and through `rpm -q --qf` otherwise (no good Rust rpmdb reader).

use std::cmp::Ordering;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::HostRoot;
use crate::userdata::proxy::ProxySettings;

use super::process::{self, ProcessError};
// Its old path: the command type belongs to the one process runner now.
pub use super::process::CommandSpec;

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("`{command}` exited with {status}: {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid version constraint {constraint:?}: {reason}")]
    Constraint { constraint: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    Apt,
    Dnf,
    Yum,
    Zypper,
}

impl PackageManager {
    pub fn as_str(self) -> &'static str {
        match self {
            PackageManager::Apt => "apt",
            PackageManager::Dnf => "dnf",
            PackageManager::Yum => "yum",
            PackageManager::Zypper => "zypper",
        }
    }

    /// Package file extension this manager installs from an offline bundle.
    pub fn package_extension(self) -> &'static str {
        match self {
            PackageManager::Apt => "deb",
            _ => "rpm",
        }
    }

    /// True for managers reading `.repo` files from /etc/yum.repos.d.
    pub fn uses_yum_repos(self) -> bool {
        matches!(self, PackageManager::Dnf | PackageManager::Yum)
    }
}

impl fmt::Display for PackageManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const BIN_DIRS: [&str; 4] = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"];

fn has_program(root: &HostRoot, name: &str) -> bool {
    find_program(root, name).is_some()
}

/// Where `name` is in the usual program directories below `root`, as a host path.
pub fn find_program(root: &HostRoot, name: &str) -> Option<String> {
    BIN_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| root.path(p).is_file())
        .map(|p| p.to_string_lossy().into_owned())
}

/// The package manager the host has; apt first, then dnf over yum (dnf hosts often keep a
/// `yum` alias), then zypper.
pub fn detect(root: &HostRoot) -> Option<PackageManager> {
    [
        ("apt-get", PackageManager::Apt),
        ("dnf", PackageManager::Dnf),
        ("yum", PackageManager::Yum),
        ("zypper", PackageManager::Zypper),
    ]
    .into_iter()
    .find(|(prog, _)| has_program(root, prog))
    .map(|(_, pm)| pm)
}

/// `spec` with the userdata's proxy in its environment, never in its arguments. apt's http
/// and https methods fall back to `http_proxy`/`https_proxy` (and honour `no_proxy`) when
/// apt.conf sets no `Acquire::http::Proxy` (apt.conf(5)); dnf, yum and zypper download
/// through libcurl, which reads the same lower-case variables. Without a proxy URL nothing is
/// added, and the manager keeps what bootstrapd's own environment gives it.
pub fn proxied(mut spec: CommandSpec, proxy: &ProxySettings) -> CommandSpec {
    spec.secret_env = super::proxy::variables_both_cases(proxy);
    spec
}

/// Install `packages` (names, `name=version` specs or package file paths).
pub fn install_command(pm: PackageManager, packages: &[String]) -> CommandSpec {
    let mut c = match pm {
        PackageManager::Apt => {
            // confdef/confold: never stop at a dpkg conffile prompt, keep files we wrote
            // (daemon.json) over any the package ships. No Recommends: docker.io would pull in
            // git, perl, apparmor and needrestart (which restarts services mid-bootstrap).
            let mut c = CommandSpec::new(
                "apt-get",
                &[
                    "install",
                    "-y",
                    "--no-install-recommends",
                    "-o",
                    "Dpkg::Options::=--force-confdef",
                    "-o",
                    "Dpkg::Options::=--force-confold",
                ],
            );
            c.env
                .push(("DEBIAN_FRONTEND".to_string(), "noninteractive".to_string()));
            c
        }
        PackageManager::Dnf => CommandSpec::new(
            "dnf",
            &["install", "-y", "--setopt=install_weak_deps=False"],
        ),
        PackageManager::Yum => CommandSpec::new("yum", &["install", "-y"]),
        PackageManager::Zypper => {
            // Bundled rpms are often signed by a key zypper has not imported; without this a
            // non-interactive install aborts.
            let local = packages.iter().any(|p| p.ends_with(".rpm"));
            let mut args = vec!["--non-interactive", "install", "--no-recommends"];
            if local {
                args.push("--allow-unsigned-rpm");
            }
            CommandSpec::new("zypper", &args)
        }
    };
    c.args.extend(packages.iter().cloned());
    c
}

/// Downloads `packages` and what they need into the package cache, installing nothing: the
/// index refresh, then the same install as [`install_command`] with `--download-only`, so
/// that the later install resolves to the very same files. apt only (`None` otherwise).
pub fn prefetch_commands(pm: PackageManager, packages: &[String]) -> Option<[CommandSpec; 2]> {
    if pm != PackageManager::Apt {
        return None;
    }
    let mut download = install_command(pm, packages);
    download.args.insert(1, "--download-only".to_string());
    Some([refresh_command(pm), download])
}

/// Refreshes the package index (after adding a repository).
pub fn refresh_command(pm: PackageManager) -> CommandSpec {
    match pm {
        PackageManager::Apt => {
            let mut c = CommandSpec::new("apt-get", &["update"]);
            c.env
                .push(("DEBIAN_FRONTEND".to_string(), "noninteractive".to_string()));
            c
        }
        PackageManager::Dnf => CommandSpec::new("dnf", &["makecache"]),
        PackageManager::Yum => CommandSpec::new("yum", &["makecache"]),
        PackageManager::Zypper => CommandSpec::new("zypper", &["--non-interactive", "refresh"]),
    }
}

/// Lists every available version of `package`; parse the output with [`parse_candidates`].
pub fn candidates_command(pm: PackageManager, package: &str) -> CommandSpec {
    match pm {
        PackageManager::Apt => CommandSpec::new("apt-cache", &["madison", package]),
        PackageManager::Dnf => CommandSpec::new(
            "dnf",
            &[
                "list",
                "--showduplicates",
                "--quiet",
                "--available",
                package,
            ],
        ),
        PackageManager::Yum => CommandSpec::new(
            "yum",
            &["list", "--showduplicates", "--quiet", "available", package],
        ),
        PackageManager::Zypper => CommandSpec::new(
            "zypper",
            &[
                "--non-interactive",
                "--quiet",
                "search",
                "-s",
                "--match-exact",
                "-t",
                "package",
                package,
            ],
        ),
    }
}

/// The spec that installs exactly `version` (as the manager printed it) of `package`.
pub fn versioned_spec(pm: PackageManager, package: &str, version: &str) -> String {
    match pm {
        PackageManager::Apt | PackageManager::Zypper => format!("{package}={version}"),
        PackageManager::Dnf | PackageManager::Yum => format!("{package}-{version}"),
    }
}

/// Parses candidate versions of `package` from [`candidates_command`] output, in the order
/// printed, without duplicates.
pub fn parse_candidates(pm: PackageManager, package: &str, output: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in output.lines() {
        let v = match pm {
            // "docker-ce | 5:24.0.7-1~debian.12~bookworm | https://... Packages"
            PackageManager::Apt => {
                let cols: Vec<&str> = line.split('|').map(str::trim).collect();
                (cols.len() >= 2 && cols[0] == package).then(|| cols[1].to_string())
            }
            // "docker-ce.x86_64   3:24.0.7-1.el9   docker-ce-stable"
            PackageManager::Dnf | PackageManager::Yum => {
                let cols: Vec<&str> = line.split_whitespace().collect();
                let name_ok = cols
                    .first()
                    .and_then(|n| n.rsplit_once('.'))
                    .is_some_and(|(n, _arch)| n == package);
                (cols.len() >= 2 && name_ok).then(|| cols[1].to_string())
            }
            // "v | docker | package | 24.0.7_ce-150000.198.2 | x86_64 | repo"
            PackageManager::Zypper => {
                let cols: Vec<&str> = line.split('|').map(str::trim).collect();
                (cols.len() >= 4 && cols[1] == package && cols[2] == "package")
                    .then(|| cols[3].to_string())
            }
        };
        if let Some(v) = v.filter(|v| !v.is_empty())
            && !out.contains(&v)
        {
            out.push(v);
        }
    }
    out
}

/// The upstream part of a distro version: epoch, Debian revision, `+dfsg`, `~rc`, `_ce`
/// suffixes removed. `5:24.0.7-1~debian.12` -> `24.0.7`.
pub fn upstream_version(full: &str) -> &str {
    let no_epoch = match full.split_once(':') {
        Some((e, rest)) if e.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => full,
    };
    let end = no_epoch
        .find(['-', '+', '~', '_'])
        .unwrap_or(no_epoch.len());
    &no_epoch[..end]
}

/// Numeric components of a version; parsing stops at the first non-numeric component.
pub fn version_components(v: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for part in upstream_version(v).split('.') {
        let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
        match digits.parse() {
            Ok(n) => out.push(n),
            Err(_) => break,
        }
        if digits.len() != part.len() {
            break;
        }
    }
    out
}

fn cmp_components(a: &[u64], b: &[u64]) -> Ordering {
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        match x.cmp(&y) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    Ordering::Equal
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Prefix,
    Eq,
    Ge,
    Gt,
    Le,
    Lt,
}

/// A runtime version constraint from the userdata: `20.10` (any 20.10.x), `=24.0.7`,
/// `>=20.10`, `>20.10`, `<=24`, `<25`; several separated by commas must all hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionConstraint {
    text: String,
    terms: Vec<(Op, Vec<u64>)>,
}

impl VersionConstraint {
    pub fn parse(text: &str) -> Result<Self, PackageError> {
        let err = |reason: &str| PackageError::Constraint {
            constraint: text.to_string(),
            reason: reason.to_string(),
        };
        let mut terms = Vec::new();
        for raw in text.split(',') {
            let t = raw.trim();
            let (op, rest) = if let Some(r) = t.strip_prefix(">=") {
                (Op::Ge, r)
            } else if let Some(r) = t.strip_prefix("<=") {
                (Op::Le, r)
            } else if let Some(r) = t.strip_prefix("==") {
                (Op::Eq, r)
            } else if let Some(r) = t.strip_prefix('=') {
                (Op::Eq, r)
            } else if let Some(r) = t.strip_prefix('>') {
                (Op::Gt, r)
            } else if let Some(r) = t.strip_prefix('<') {
                (Op::Lt, r)
            } else {
                (Op::Prefix, t)
            };
            let rest = rest.trim();
            let rest = rest.strip_prefix('v').unwrap_or(rest);
            if rest.is_empty() {
                return Err(err("empty version"));
            }
            if !rest
                .split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            {
                return Err(err(
                    "expected numbers separated by dots, e.g. 20.10 or >=24.0.7",
                ));
            }
            terms.push((op, version_components(rest)));
        }
        Ok(VersionConstraint {
            text: text.to_string(),
            terms,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a (distro or upstream) version satisfies every term.
    pub fn matches(&self, version: &str) -> bool {
        let v = version_components(version);
        if v.is_empty() {
            return false;
        }
        self.terms.iter().all(|(op, want)| match op {
            Op::Prefix => v.len() >= want.len() && v[..want.len()] == want[..],
            Op::Eq => cmp_components(&v, want) == Ordering::Equal,
            Op::Ge => cmp_components(&v, want) != Ordering::Less,
            Op::Gt => cmp_components(&v, want) == Ordering::Greater,
            Op::Le => cmp_components(&v, want) != Ordering::Greater,
            Op::Lt => cmp_components(&v, want) == Ordering::Less,
        })
    }
}

impl PackageError {
    /// What is wrong, without the command or the constraint around it.
    pub fn reason(&self) -> String {
        match self {
            PackageError::Constraint { reason, .. } => reason.clone(),
            other => other.to_string(),
        }
    }
}

/// The highest candidate satisfying the constraint (by upstream version; ties keep the
/// first printed, which is the manager's own preference).
pub fn pick_candidate<'a>(candidates: &'a [String], c: &VersionConstraint) -> Option<&'a str> {
    let mut best: Option<&'a String> = None;
    for cand in candidates.iter().filter(|v| c.matches(v)) {
        best = match best {
            None => Some(cand),
            Some(b) => {
                if cmp_components(&version_components(cand), &version_components(b))
                    == Ordering::Greater
                {
                    Some(cand)
                } else {
                    Some(b)
                }
            }
        };
    }
    best.map(String::as_str)
}

/// Where a package stands in the package database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageState {
    Absent,
    Installed(String),
    /// dpkg was cut short mid-install or mid-configure (half-installed, unpacked,
    /// half-configured, triggers-*): the files may be there and the service may even run, but
    /// the maintainer scripts did not finish. `dpkg --configure -a` finishes it.
    Unfinished(String),
}

/// The state of `package` in a dpkg status file. "config-files" (removed, configuration kept)
/// counts as absent.
pub fn parse_dpkg_status(status: &str, package: &str) -> PackageState {
    for stanza in status.split("\n\n") {
        let mut name = None;
        let mut state = None;
        let mut version = None;
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                name = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Status: ") {
                state = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = Some(v.trim());
            }
        }
        if name != Some(package) {
            continue;
        }
        // "Status: WANT FLAG STATE"
        return match state.and_then(|s| s.rsplit(' ').next()) {
            Some("installed") => PackageState::Installed(version.unwrap_or_default().to_string()),
            Some(
                s @ ("half-installed" | "unpacked" | "half-configured" | "triggers-awaited"
                | "triggers-pending"),
            ) => PackageState::Unfinished(s.to_string()),
            _ => PackageState::Absent,
        };
    }
    PackageState::Absent
}

/// The state of each of `names` in the host's package database below `root`, in order; dpkg's
/// status file is read once for all. rpm has no half-finished state that outlives its
/// transaction, so there each is installed or absent.
pub async fn package_states(
    root: &HostRoot,
    pm: PackageManager,
    names: &[&str],
) -> Result<Vec<PackageState>, PackageError> {
    match pm {
        PackageManager::Apt => {
            let path = root.path("/var/lib/dpkg/status");
            match tokio::fs::read_to_string(&path).await {
                Ok(text) => Ok(names.iter().map(|n| parse_dpkg_status(&text, n)).collect()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Ok(vec![PackageState::Absent; names.len()])
                }
                Err(source) => Err(PackageError::Read { path, source }),
            }
        }
        _ => {
            let mut out = Vec::with_capacity(names.len());
            for n in names {
                out.push(match rpm_version(root, n).await? {
                    Some(v) => PackageState::Installed(v),
                    None => PackageState::Absent,
                });
            }
            Ok(out)
        }
    }
}

/// Installed version of `package` (fully installed only), read from the host's package
/// database below `root`.
pub async fn installed_version(
    root: &HostRoot,
    pm: PackageManager,
    package: &str,
) -> Result<Option<String>, PackageError> {
    Ok(match package_states(root, pm, &[package]).await?.pop() {
        Some(PackageState::Installed(v)) => Some(v),
        _ => None,
    })
}

async fn rpm_version(root: &HostRoot, package: &str) -> Result<Option<String>, PackageError> {
    let mut spec = CommandSpec::new("rpm", &[]);
    if !root.is_live() {
        spec.args.push("--root".into());
        spec.args
            .push(root.path("/").to_string_lossy().into_owned());
    }
    spec.args.extend(
        ["-q", "--qf", "%{EPOCHNUM}:%{VERSION}-%{RELEASE}", package]
            .iter()
            .map(|s| s.to_string()),
    );
    let out = output(&spec).await?;
    // rpm exits 1 for "not installed": that is an answer, not a failure.
    if out.status.success() {
        let v = out.stdout.trim().to_string();
        Ok(Some(v.strip_prefix("0:").map(str::to_string).unwrap_or(v)))
    } else {
        Ok(None)
    }
}

async fn output(spec: &CommandSpec) -> Result<process::Output, PackageError> {
    Ok(process::run(spec, COMMAND_TIMEOUT).await?)
}

/// Upper bound for one package manager run: a slow mirror may take long, a hung one must
/// not hold the boot forever.
pub const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Runs the command to completion; a non-zero exit is an error carrying the end of stderr.
pub async fn run(spec: &CommandSpec) -> Result<String, PackageError> {
    tracing::info!(command = %spec, "running");
    let out = output(spec).await?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        let tail: Vec<&str> = out.stderr.lines().rev().take(5).collect();
        Err(PackageError::Failed {
            command: spec.to_string(),
            status: out.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
        })
    }
}

/// Candidate versions of `package` known to the host's repositories.
pub async fn candidates(
    pm: PackageManager,
    package: &str,
    proxy: &ProxySettings,
) -> Result<Vec<String>, PackageError> {
    // dnf and yum may fetch repository metadata to answer.
    let spec = proxied(candidates_command(pm, package), proxy);
    let out = output(&spec).await?;
    // dnf/yum exit 1 when nothing matches: an empty list, not a failure.
    Ok(parse_candidates(pm, package, &out.stdout))
}

/// Before an apt-get install: a crash (or power loss) mid-install leaves dpkg "interrupted",
/// and apt-get then refuses everything until it is finished. Finishes it (a no-op otherwise).
pub async fn finish_interrupted(
    db: PackageManager,
    install: &CommandSpec,
) -> Result<(), (String, String)> {
    if db != PackageManager::Apt || install.program != "apt-get" {
        return Ok(());
    }
    let mut finish = CommandSpec::new(
        "dpkg",
        &["--configure", "-a", "--force-confdef", "--force-confold"],
    );
    finish.env = install.env.clone();
    finish.secret_env = install.secret_env.clone();
    run(&finish).await.map(|_| ()).map_err(|e| {
        (
            format!("finishing an interrupted dpkg run failed: {e}"),
            "run `dpkg --configure -a` by hand to see why".to_string(),
        )
    })
}

/// Runs `spec` (an install), then confirms every package in `names` is in the package
/// database. Returns "name version" lines, or (what went wrong, the one-line remedy).
pub async fn install_and_verify(
    root: &HostRoot,
    db: PackageManager,
    spec: &CommandSpec,
    names: &[String],
) -> Result<Vec<String>, (String, String)> {
    finish_interrupted(db, spec).await?;
    run(spec)
        .await
        .map_err(|e| (e.to_string(), format!("run `{spec}` by hand to see why")))?;
    let mut got = Vec::new();
    for n in names {
        match installed_version(root, db, n).await {
            Ok(Some(v)) => got.push(format!("{n} {v}")),
            Ok(None) => {
                return Err((
                    format!("{n} is still not installed after `{spec}`"),
                    format!("check that a configured repository provides {n}"),
                ));
            }
            Err(e) => {
                return Err((
                    format!("cannot verify {n}: {e}"),
                    "check the package database".into(),
                ));
            }
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_downloads_exactly_what_the_install_would() {
        let pkgs = vec!["docker.io".to_string()];
        let [refresh, download] = prefetch_commands(PackageManager::Apt, &pkgs).unwrap();
        assert_eq!(refresh, refresh_command(PackageManager::Apt));
        let mut install = install_command(PackageManager::Apt, &pkgs);
        install.args.retain(|a| a != "install");
        let mut rest = download.args.clone();
        assert_eq!(
            rest.drain(..2).collect::<Vec<_>>(),
            ["install", "--download-only"]
        );
        assert_eq!(rest, install.args);
        assert_eq!(download.env, install.env);
        assert!(prefetch_commands(PackageManager::Dnf, &pkgs).is_none());
    }

    #[test]
    fn the_proxy_goes_into_the_environment_only() {
        let proxy = ProxySettings {
            http: Some(crate::secret::Secret::new(
                "http://u:hunter2@proxy.lab:3128/",
            )),
            https: None,
            no_proxy: vec!["localhost".into()],
        };
        let pkgs = vec!["docker.io".to_string()];
        let plain = install_command(PackageManager::Apt, &pkgs);
        let spec = proxied(plain.clone(), &proxy);
        assert_eq!((&spec.args, &spec.env), (&plain.args, &plain.env));
        let names: Vec<&str> = spec.secret_env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"]);
        assert!(!format!("{spec} {spec:?}").contains("hunter2"));
        // Without a proxy URL nothing is added.
        assert_eq!(proxied(plain.clone(), &ProxySettings::default()), plain);
    }

    #[test]
    fn upstream_versions() {
        assert_eq!(upstream_version("5:24.0.7-1~debian.12~bookworm"), "24.0.7");
        assert_eq!(upstream_version("20.10.24+dfsg1-1+b3"), "20.10.24");
        assert_eq!(upstream_version("3:24.0.7-1.el9"), "24.0.7");
        assert_eq!(upstream_version("24.0.7_ce-150000.198.2"), "24.0.7");
        assert_eq!(version_components("1.6.20~ds1-1"), vec![1, 6, 20]);
        assert_eq!(version_components("25.0.0rc1"), vec![25, 0, 0]);
    }

    #[test]
    fn constraints() {
        let c = VersionConstraint::parse("20.10").unwrap();
        assert!(c.matches("20.10.24+dfsg1-1+b3"));
        assert!(!c.matches("20.1.0"));
        assert!(!c.matches("23.0.1"));
        let c = VersionConstraint::parse(">=20.10").unwrap();
        assert!(c.matches("5:24.0.7-1~debian.12~bookworm"));
        assert!(c.matches("20.10.0"));
        assert!(!c.matches("19.03.15"));
        let c = VersionConstraint::parse("=24.0.7").unwrap();
        assert!(c.matches("3:24.0.7-1.el9"));
        assert!(!c.matches("3:24.0.6-1.el9"));
        let c = VersionConstraint::parse(">=20.10, <25").unwrap();
        assert!(c.matches("24.0.9"));
        assert!(!c.matches("25.0.0"));
        assert!(VersionConstraint::parse(">=").is_err());
        assert!(VersionConstraint::parse("latest").is_err());
        assert!(!VersionConstraint::parse("20").unwrap().matches("garbage"));
    }

    #[test]
    fn madison_parsing_and_pick() {
        let out = " docker-ce | 5:24.0.7-1~debian.12~bookworm | https://download.docker.com/linux/debian bookworm/stable amd64 Packages\n \
docker-ce | 5:24.0.6-1~debian.12~bookworm | https://download.docker.com/linux/debian bookworm/stable amd64 Packages\n \
docker-ce | 5:20.10.24~3-0~debian-bookworm | https://download.docker.com/linux/debian bookworm/stable amd64 Packages\n \
docker-ce-cli | 5:24.0.7-1~debian.12~bookworm | x\n";
        let c = parse_candidates(PackageManager::Apt, "docker-ce", out);
        assert_eq!(c.len(), 3);
        let pick = |s: &str| pick_candidate(&c, &VersionConstraint::parse(s).unwrap());
        assert_eq!(pick("24.0"), Some("5:24.0.7-1~debian.12~bookworm"));
        assert_eq!(pick("=24.0.6"), Some("5:24.0.6-1~debian.12~bookworm"));
        assert_eq!(pick("20.10"), Some("5:20.10.24~3-0~debian-bookworm"));
        assert_eq!(pick("<20"), None);
        assert_eq!(
            versioned_spec(
                PackageManager::Apt,
                "docker-ce",
                "5:24.0.6-1~debian.12~bookworm"
            ),
            "docker-ce=5:24.0.6-1~debian.12~bookworm"
        );
    }

    #[test]
    fn dnf_and_zypper_parsing() {
        let dnf = "Available Packages\n\
docker-ce.x86_64     3:24.0.6-1.el9     docker-ce-stable\n\
docker-ce.x86_64     3:24.0.7-1.el9     docker-ce-stable\n\
docker-ce-cli.x86_64 1:24.0.7-1.el9     docker-ce-stable\n";
        let c = parse_candidates(PackageManager::Dnf, "docker-ce", dnf);
        assert_eq!(c, vec!["3:24.0.6-1.el9", "3:24.0.7-1.el9"]);
        assert_eq!(
            versioned_spec(PackageManager::Dnf, "docker-ce", "3:24.0.7-1.el9"),
            "docker-ce-3:24.0.7-1.el9"
        );
        let zy = "S | Name   | Type    | Version                 | Arch   | Repository\n\
--+--------+---------+-------------------------+--------+-----------\n\
v | docker | package | 24.0.7_ce-150000.198.2  | x86_64 | Update\n\
i | docker | package | 20.10.17_ce-150000.166.1 | x86_64 | Main\n";
        let c = parse_candidates(PackageManager::Zypper, "docker", zy);
        assert_eq!(
            c,
            vec!["24.0.7_ce-150000.198.2", "20.10.17_ce-150000.166.1"]
        );
    }

    #[test]
    fn commands() {
        let c = install_command(PackageManager::Apt, &["docker.io".to_string()]);
        assert_eq!(
            c.to_string(),
            "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold docker.io"
        );
        let c = install_command(PackageManager::Zypper, &["/b/docker.rpm".to_string()]);
        assert_eq!(
            c.to_string(),
            "zypper --non-interactive install --no-recommends --allow-unsigned-rpm /b/docker.rpm"
        );
        assert_eq!(
            install_command(PackageManager::Dnf, &["moby-engine".into()]).to_string(),
            "dnf install -y --setopt=install_weak_deps=False moby-engine"
        );
    }

    #[test]
    fn dpkg_status() {
        let s = "Package: docker.io\nStatus: install ok installed\nVersion: 20.10.24+dfsg1-1+b3\n\n\
Package: containerd\nStatus: deinstall ok config-files\nVersion: 1.6.20~ds1-1\n";
        assert_eq!(
            parse_dpkg_status(s, "docker.io"),
            PackageState::Installed("20.10.24+dfsg1-1+b3".into())
        );
        assert_eq!(parse_dpkg_status(s, "containerd"), PackageState::Absent);
        assert_eq!(parse_dpkg_status(s, "docker-ce"), PackageState::Absent);
        // What a kill -9 during docker.io's postinst leaves ("iF" in dpkg -l).
        let cut = "Package: docker.io\nStatus: install ok half-configured\nVersion: 20.10.24\n\n\
Package: runc\nStatus: install reinstreq half-installed\nVersion: 1.1.5\n";
        assert_eq!(
            parse_dpkg_status(cut, "docker.io"),
            PackageState::Unfinished("half-configured".into())
        );
        assert_eq!(
            parse_dpkg_status(cut, "runc"),
            PackageState::Unfinished("half-installed".into())
        );
    }

    #[test]
    fn detection() {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().to_path_buf()));
        assert_eq!(detect(&root), None);
        std::fs::create_dir_all(d.path().join("usr/bin")).unwrap();
        std::fs::write(d.path().join("usr/bin/dnf"), "").unwrap();
        std::fs::write(d.path().join("usr/bin/yum"), "").unwrap();
        assert_eq!(detect(&root), Some(PackageManager::Dnf));
    }
}
