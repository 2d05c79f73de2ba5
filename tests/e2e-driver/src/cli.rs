//! The subcommands that run one test of their own (`qcow2`, `immutable`, `pxe`, `crash`, `secrets`): their arguments,
//! with the environment knobs and ports the bash tests had, turned into the tests' options.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::deb::DebOptions;
use crate::driver::{DriverError, Level};

/// What the .deb image tests share.
#[derive(Debug, clap::Args)]
pub struct DebArgs {
    /// full: every check; boot: only the checks every boot must pass (the rest is listed).
    #[arg(long, env = "E2E_LEVEL", value_enum, default_value = "full")]
    level: Level,
    /// Work directory (packages, image, disks, logs, the servers' state).
    #[arg(long, env = "E2E_WORK")]
    work: Option<PathBuf>,
    /// Seconds from qemu's start until bootstrapd.service must have finished.
    #[arg(long, env = "E2E_BOOT_TIMEOUT", default_value_t = 1500)]
    boot_timeout: u64,
}

impl DebArgs {
    fn options(
        &self,
        repo: &Path,
        default_work: &str,
        apt_port: u16,
        rancher_port: u16,
    ) -> DebOptions {
        DebOptions {
            repo: repo.to_path_buf(),
            work: self.work.clone().unwrap_or_else(|| repo.join(default_work)),
            level: self.level,
            boot_timeout: Duration::from_secs(self.boot_timeout),
            apt_port,
            rancher_port,
        }
    }
}

/// `e2e-driver qcow2` (E2E_REUSE_IMAGE=1 keeps an image built before).
#[derive(Debug, clap::Args)]
pub struct Qcow2Args {
    #[command(flatten)]
    deb: DebArgs,
    /// Ports of their own: the e2e suite may run at the same time.
    #[arg(long, env = "QCOW2_APT_PORT", default_value_t = 18094)]
    apt_port: u16,
    #[arg(long, env = "QCOW2_RANCHER_PORT", default_value_t = 8453)]
    rancher_port: u16,
}

/// `e2e-driver immutable` (E2E_REUSE_IMAGE=1 keeps an image built before).
#[derive(Debug, clap::Args)]
pub struct ImmutableArgs {
    #[command(flatten)]
    deb: DebArgs,
    #[arg(long, env = "IMMUTABLE_APT_PORT", default_value_t = 18096)]
    apt_port: u16,
    #[arg(long, env = "IMMUTABLE_RANCHER_PORT", default_value_t = 8456)]
    rancher_port: u16,
}

/// `e2e-driver pxe` (E2E_REUSE_IMAGE=1 keeps a bundle built before).
#[derive(Debug, clap::Args)]
pub struct PxeArgs {
    #[command(flatten)]
    deb: DebArgs,
    #[arg(long, env = "PXE_APT_PORT", default_value_t = 18095)]
    apt_port: u16,
    #[arg(long, env = "PXE_RANCHER_PORT", default_value_t = 8454)]
    rancher_port: u16,
    /// The boot file server (kernel, initrd, squashfs, userdata).
    #[arg(long, env = "PXE_HTTP_PORT", default_value_t = 18092)]
    http_port: u16,
    /// The diskless VM's memory, MiB (live-boot holds the root filesystem in RAM).
    #[arg(long, env = "E2E_MEMORY", default_value_t = 2048)]
    memory: u32,
}

/// `e2e-driver crash` (scripts/crash-campaign.sh).
#[derive(Debug, clap::Args)]
pub struct CrashArgs {
    /// The points to run, space-separated IDs (default: every point but the CI chain).
    #[arg(long)]
    points: Option<String>,
    /// Prints the points ("ID MODE SPEC...") and exits.
    #[arg(long)]
    list: bool,
    /// bootstrapd to put in the image instead of building it.
    #[arg(long)]
    binary: Option<PathBuf>,
    #[arg(long, env = "CRASH_WORK")]
    work: Option<PathBuf>,
    #[arg(long, env = "CRASH_APT_PORT", default_value_t = 18090)]
    apt_port: u16,
    #[arg(long, env = "CRASH_RANCHER_PORT", default_value_t = 8450)]
    rancher_port: u16,
    /// Hard limit per boot, seconds.
    #[arg(long, env = "CRASH_BOOT_TIMEOUT", default_value_t = 900)]
    boot_timeout: u64,
    #[arg(long, env = "E2E_CARGO_PROFILE", default_value = "dev")]
    profile: String,
}

/// `e2e-driver secrets` (scripts/secret-campaign.sh).
#[derive(Debug, clap::Args)]
pub struct SecretsArgs {
    /// bootstrapd to put in the image instead of building it.
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Boots per node; boot n uses the ((n-1) mod count)th log form (2 tries both defaults).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    boots: u32,
    /// The nodes, space-separated: system-agent (a worker), rke1 (all roles).
    #[arg(long, default_value = crate::secret_campaign::MODES)]
    modes: String,
    /// BOOTSTRAPD_LOG forms, space-separated.
    #[arg(long, default_value = crate::secret_campaign::LOG_FORMS)]
    log_forms: String,
    #[arg(long, env = "SECRET_WORK")]
    work: Option<PathBuf>,
    #[arg(long, env = "SECRET_APT_PORT", default_value_t = 18091)]
    apt_port: u16,
    #[arg(long, env = "SECRET_RANCHER_PORT", default_value_t = 8451)]
    rancher_port: u16,
    /// Hard limit per boot, seconds.
    #[arg(long, env = "SECRET_BOOT_TIMEOUT", default_value_t = 900)]
    boot_timeout: u64,
    #[arg(long, env = "E2E_CARGO_PROFILE", default_value = "dev")]
    profile: String,
}

/// `e2e-driver packages`.
#[derive(Debug, clap::Args)]
pub struct PackagesArgs {
    #[arg(long, env = "E2E_WORK")]
    work: Option<PathBuf>,
    /// Cargo profile of the packaged binary.
    #[arg(long, env = "PROFILE", default_value = "release")]
    profile: String,
}

pub fn packages(a: &PackagesArgs, repo: &Path) -> ExitCode {
    let work = a
        .work
        .clone()
        .unwrap_or_else(|| repo.join("build/e2e-packages"));
    exit(crate::packages::run(repo, &work, &a.profile))
}

/// A test's result as the exit status; an error before any check counts as one failure.
pub fn exit(result: Result<bool, DriverError>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("e2e: FAIL: {e}");
            println!("e2e: 0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}

pub fn qcow2(a: &Qcow2Args, repo: &Path) -> ExitCode {
    let opts = a
        .deb
        .options(repo, "build/e2e-qcow2", a.apt_port, a.rancher_port);
    exit(crate::qcow2::run(opts))
}

pub fn immutable(a: &ImmutableArgs, repo: &Path) -> ExitCode {
    let opts = a
        .deb
        .options(repo, "build/e2e-immutable", a.apt_port, a.rancher_port);
    exit(crate::immutable::run(opts))
}

pub fn pxe(a: &PxeArgs, repo: &Path) -> ExitCode {
    let opts = a
        .deb
        .options(repo, "build/e2e-pxe", a.apt_port, a.rancher_port);
    exit(crate::pxe::run(opts, a.http_port, a.memory))
}

pub fn crash(a: &CrashArgs, repo: &Path) -> ExitCode {
    if a.list {
        crate::crash::list().iter().for_each(|l| println!("{l}"));
        return ExitCode::SUCCESS;
    }
    let ids: Vec<String> = a
        .points
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let points = match crate::crash::select(&ids) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("crash-campaign: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = crate::crash::CrashOptions {
        host: crate::host::HostConfig::new(
            repo,
            a.work.clone(),
            "build/crash",
            (a.apt_port, a.rancher_port),
            &a.profile,
        ),
        binary: a.binary.clone(),
        boot_timeout_s: a.boot_timeout,
    };
    exit(crate::crash::run(opts, &points))
}

/// Exit status 0 when nothing leaked, 1 otherwise, 2 on bad usage (not root included, as the
/// bash campaign had it).
pub fn secrets(a: &SecretsArgs, repo: &Path) -> ExitCode {
    use crate::secret_campaign::{parse_log_forms, parse_modes};
    let parsed = parse_modes(&a.modes).and_then(|m| Ok((m, parse_log_forms(&a.log_forms)?)));
    let (modes, log_forms) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("secret-campaign: {e}");
            return ExitCode::from(2);
        }
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("secret-campaign: must run as root");
        return ExitCode::from(2);
    }
    let opts = crate::secret_campaign::SecretOptions {
        host: crate::host::HostConfig::new(
            repo,
            a.work.clone(),
            "build/secrets",
            (a.apt_port, a.rancher_port),
            &a.profile,
        ),
        binary: a.binary.clone(),
        boots: a.boots,
        modes,
        log_forms,
        boot_timeout_s: a.boot_timeout,
    };
    exit(crate::secret_campaign::run(opts))
}
