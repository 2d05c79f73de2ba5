//! Boots through scripts/vm.sh (plumbing: qemu, the seed ISO, the report port).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One boot of a node's disk.
#[derive(Debug, Clone)]
pub struct VmBoot<'a> {
    pub image_env: &'a Path,
    pub overlay: PathBuf,
    /// A new overlay (the node's first boot).
    pub fresh: bool,
    pub user_data: Option<&'a Path>,
    pub hostname: &'a str,
    pub append: &'a str,
    pub serial: PathBuf,
    pub timeout_s: u64,
    /// `--proxy-only CMD`: the guest's only way out is the test proxy, through CMD.
    pub proxy_only: Option<&'a str>,
}

/// vm.sh's exit status (0 after a guest power-off, 124 on timeout) and how long it took.
pub fn boot(repo: &Path, b: &VmBoot) -> std::io::Result<(i32, Duration)> {
    run(command(repo, b))
}

/// `boot` without vm.sh's own lines on stdout (its errors still go to stderr): the crash
/// campaign prints one line per boot of its own.
pub fn boot_quiet(repo: &Path, b: &VmBoot) -> std::io::Result<(i32, Duration)> {
    let mut cmd = command(repo, b);
    cmd.stdout(Stdio::null());
    run(cmd)
}

fn command(repo: &Path, b: &VmBoot) -> Command {
    let mut cmd = Command::new(repo.join("scripts/vm.sh"));
    cmd.current_dir(repo)
        .arg("--image-env")
        .arg(b.image_env)
        .arg("--overlay")
        .arg(&b.overlay)
        .args(["--hostname", b.hostname, "--append", b.append])
        .arg("--serial")
        .arg(&b.serial)
        .args(["--timeout", &b.timeout_s.to_string()]);
    if b.fresh {
        cmd.arg("--fresh");
    }
    if let Some(ud) = b.user_data {
        cmd.arg("--user-data").arg(ud);
    }
    if let Some(relay) = b.proxy_only {
        cmd.args(["--proxy-only", relay]);
    }
    cmd
}

fn run(mut cmd: Command) -> std::io::Result<(i32, Duration)> {
    let t = Instant::now();
    let status = cmd.status()?;
    Ok((status.code().unwrap_or(-1), t.elapsed()))
}
