//! e2e-driver: the VM end-to-end tests of bootstrapd (run as root; scripts/test.sh runs it).
//!
//! Sets the host side up once (tests/e2e/lib.sh `host_setup`: bootstrapd, the agent image
//! archive, the node image, the apt repository and the Rancher test server), then runs the
//! scenarios of scenario.rs through scripts/vm.sh and checks, from outside, the report each
//! boot prints on the serial console, `bootstrapd status --json` (read as bootstrapd's
//! `Journal`) and the server's record (read as `rancher_test_server::NodeRecord`).
//!
//! Subcommands run the other VM tests the same way: `qcow2` (the disk image's GRUB boot),
//! `immutable` (the image with a dm-verity-verified read-only /usr), `pxe` (the network boot), `crash` (the crash campaign), `secrets` (the secret campaign) and
//! `packages` (the .deb and .rpm); `records` is for the shell.

mod checks;
mod cli;
mod crash;
mod deb;
mod driver;
mod egress;
mod host;
mod immutable;
mod packages;
mod pxe;
mod qcow2;
mod qemu;
mod report;
mod scenario;
mod secret_campaign;
mod secrets;
mod selinux;
mod server;
mod ssh;
mod sysext;
mod tool;
mod userdata;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    about = "The VM end-to-end tests of bootstrapd (root; qemu TCG)",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// full: every check; boot: only the checks every boot must pass (the rest is listed).
    #[arg(long, env = "E2E_LEVEL", value_enum, default_value = "full")]
    level: driver::Level,
    /// Work directory (disks, logs, the servers' state); default REPO/build/e2e.
    #[arg(long, env = "E2E_WORK")]
    work: Option<PathBuf>,
    /// Hard limit per boot, seconds.
    #[arg(long, env = "E2E_BOOT_TIMEOUT", default_value_t = 1200)]
    boot_timeout: u64,
    /// Cargo profile bootstrapd is built with.
    #[arg(long, env = "E2E_CARGO_PROFILE", default_value = "dev")]
    profile: String,
    /// bootstrapd to put in the image instead of building it (scripts/test.sh: the packaged
    /// release binary).
    #[arg(long, env = "E2E_BINARY")]
    binary: Option<PathBuf>,
    #[arg(long, env = "E2E_APT_PORT", default_value_t = 18080)]
    apt_port: u16,
    #[arg(long, env = "E2E_RANCHER_PORT", default_value_t = 8443)]
    rancher_port: u16,
    /// BOOTSTRAPD_LOG of every node's first boot (no log form may print the token).
    #[arg(long, env = "E2E_LOG_FORM", default_value = scenario::DEBUG_LOG_FORM)]
    log_form: String,
    /// Only these scenarios (comma-separated names, e.g. node5), for working on one; CI runs
    /// them all.
    #[arg(long, env = "E2E_ONLY", value_delimiter = ',')]
    only: Vec<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Prints the Rancher test server's node record for the shell: one line per node,
    /// "hostname generation roles connect_count" (nothing when no node was recorded).
    Records {
        /// One line instead: the number of nodes, then per node "generation roles hostname
        /// connect_count".
        #[arg(long)]
        summary: bool,
        /// The server's nodes.json (absent: no node recorded).
        file: PathBuf,
    },
    /// The bootable qcow2 (scripts/build-qcow2.sh): one boot through its own GRUB, checked
    /// from the serial console and from the disk after power-off.
    Qcow2(cli::Qcow2Args),
    /// The immutable disk image (scripts/build-immutable.sh): /usr read-only and verified by
    /// dm-verity; a node boots twice, a copy with one flipped byte in /usr is refused.
    Immutable(cli::ImmutableArgs),
    /// The PXE bundle (scripts/build-pxe.sh): a diskless iPXE network boot.
    Pxe(cli::PxeArgs),
    /// The crash campaign (scripts/crash-campaign.sh; CI runs `--points ci-r1-chain`).
    Crash(cli::CrashArgs),
    /// The secret campaign (scripts/secret-campaign.sh; CI's boots get the same checks).
    Secrets(cli::SecretsArgs),
    /// The .deb and the .rpm (scripts/build-packages.sh) and what they carry; no VM.
    Packages(cli::PackagesArgs),
    /// The SELinux scenario on an enforcing kernel (not in scripts/test.sh; selinux.rs).
    Selinux(selinux::Args),
}

/// `records`: the record as the campaigns' bash reads it.
fn records(summary: bool, file: &std::path::Path) -> ExitCode {
    match server::records(file) {
        Ok(r) if summary => println!("{}", server::summary_line(&r)),
        Ok(r) => server::per_node_lines(&r)
            .iter()
            .for_each(|l| println!("{l}")),
        Err(e) => {
            eprintln!("e2e-driver records: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// The repository root: this crate lives in tests/e2e-driver.
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let repo = repo_root();
    match args.command {
        Some(Command::Records { summary, file }) => return records(summary, &file),
        Some(Command::Qcow2(a)) => return cli::qcow2(&a, &repo),
        Some(Command::Immutable(a)) => return cli::immutable(&a, &repo),
        Some(Command::Pxe(a)) => return cli::pxe(&a, &repo),
        Some(Command::Crash(a)) => return cli::crash(&a, &repo),
        Some(Command::Secrets(a)) => return cli::secrets(&a, &repo),
        Some(Command::Packages(a)) => return cli::packages(&a, &repo),
        Some(Command::Selinux(a)) => return selinux::main(a, repo),
        None => {}
    }
    let mut host = host::HostConfig::new(
        &repo,
        args.work,
        "build/e2e",
        (args.apt_port, args.rancher_port),
        &args.profile,
    );
    host.binary = args.binary;
    let opts = driver::Options {
        host,
        level: args.level,
        boot_timeout_s: args.boot_timeout,
        log_form: args.log_form,
        only: args.only,
    };
    cli::exit(driver::run(opts))
}
