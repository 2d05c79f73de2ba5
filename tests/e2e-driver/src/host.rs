//! The host side, set up once by tests/e2e/lib.sh's `host_setup` (the same function the
//! campaigns, the boot benchmark and scripts/lab call: image builds and server start-up are
//! plumbing and stay shell), read back from WORK/host.env, stopped when dropped.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot run bash for host_setup: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("host_setup failed (status {0}); see its output above")]
    Setup(i32),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file} lacks {key}")]
    Missing { file: PathBuf, key: &'static str },
    #[error("{0} holds no token")]
    NoToken(PathBuf),
}

/// What to set up.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub repo: PathBuf,
    pub work: PathBuf,
    pub apt_port: u16,
    pub rancher_port: u16,
    pub profile: String,
    /// `--starting-while PATH` for the Rancher test server: while PATH exists it answers
    /// every `/v3/connect/agent` 401.
    pub starting_while: PathBuf,
    /// A bootstrapd to put in the image instead of building one with `profile` (CI: the
    /// release binary the packages test built, so the suites boot what ships).
    pub binary: Option<PathBuf>,
}

impl HostConfig {
    /// The host of one suite or campaign: its work directory (`work`, else REPO/`default_work`)
    /// holds the Rancher test server's starting-while file too.
    pub fn new(
        repo: &Path,
        work: Option<PathBuf>,
        default_work: &str,
        (apt_port, rancher_port): (u16, u16),
        profile: &str,
    ) -> Self {
        let work = work.unwrap_or_else(|| repo.join(default_work));
        HostConfig {
            starting_while: work.join("rancher-starting"),
            repo: repo.to_path_buf(),
            work,
            apt_port,
            rancher_port,
            profile: profile.to_string(),
            binary: None,
        }
    }

    /// Makes WORK/logs and runs `host_setup`, with `--binary` when one is given.
    pub fn start(&self, binary: Option<&Path>) -> Result<Host, HostError> {
        let logs = self.work.join("logs");
        fs::create_dir_all(&logs).map_err(|source| HostError::Write { path: logs, source })?;
        let mut args = self.host_setup_args();
        if let Some(b) = binary {
            args.extend(["--binary".into(), b.as_os_str().to_owned()]);
        }
        Host::run(&self.repo, &self.work, &args)
    }

    /// `host_setup WORK APT_PORT RANCHER_PORT --profile P`, for `Host::run`.
    pub fn host_setup_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "host_setup".into(),
            self.work.clone().into_os_string(),
            self.apt_port.to_string().into(),
            self.rancher_port.to_string().into(),
            "--profile".into(),
            self.profile.clone().into(),
        ]
    }
}

/// The running host side.
#[derive(Debug)]
pub struct Host {
    pids: Vec<i32>,
    /// The registration token (from WORK/rancher/tokens, 0600); never printed.
    pub token: String,
    pub ca_checksum: String,
    pub server_url: String,
    pub rancher_dir: PathBuf,
    pub image_env: PathBuf,
    pub build_seconds: u64,
    pub image_seconds: u64,
    /// The test proxy and registry of the proxy-only nodes (main e2e suite only).
    pub egress: Option<crate::egress::Egress>,
    /// The Docker system extension served beside the apt repository, when one was built.
    pub sysext: Option<SysextServed>,
}

/// The system extension image the host set-up built and serves (host.env HOST_SYSEXT_PATH and
/// HOST_SYSEXT_SHA256).
#[derive(Debug, Clone)]
pub struct SysextServed {
    /// URL path below the apt server (`/sysext/docker.raw`).
    pub path: String,
    pub sha256: String,
}

impl SysextServed {
    fn from_env(env: &BTreeMap<String, String>) -> Option<SysextServed> {
        Some(SysextServed {
            path: env.get("HOST_SYSEXT_PATH")?.clone(),
            sha256: env.get("HOST_SYSEXT_SHA256")?.clone(),
        })
    }

    /// The node templates' `@SYSEXT_URL@` and `@SYSEXT_SHA256@`, as the guest reaches the apt
    /// server on `apt_port`.
    pub fn placeholders(&self, apt_port: u16) -> Vec<(String, String)> {
        vec![
            (
                "SYSEXT_URL".into(),
                format!("http://10.0.2.2:{apt_port}{}", self.path),
            ),
            ("SYSEXT_SHA256".into(), self.sha256.clone()),
        ]
    }

    #[cfg(test)]
    pub fn sample() -> SysextServed {
        SysextServed {
            path: "/sysext/docker.raw".into(),
            sha256: "cd".repeat(32),
        }
    }
}

/// bash: source lib.sh, run the set-up function named by the first argument with the rest.
/// Arguments, not interpolation: no path is parsed as shell.
const SETUP: &str = r#"set -e
. tests/e2e/lib.sh
"$@"
"#;

impl Host {
    /// The e2e suite's host side: `host_setup` with the "starting" flag for the test server,
    /// and the egress servers.
    pub fn setup(cfg: &HostConfig) -> Result<Host, HostError> {
        let mut args = cfg.host_setup_args();
        // host_setup plus the proxy-only nodes' proxy and registry (lib.sh host_setup_e2e).
        args[0] = "host_setup_e2e".into();
        if let Some(b) = &cfg.binary {
            args.extend(["--binary".into(), b.clone().into_os_string()]);
        }
        args.extend([
            "--".into(),
            "--starting-while".into(),
            cfg.starting_while.clone().into_os_string(),
        ]);
        Host::run(&cfg.repo, &cfg.work, &args)
    }

    /// Runs one of lib.sh's set-up functions (`host_setup`, `host_setup_deb_image`,
    /// `host_setup_pxe`: each writes WORK/host.env) and reads back what it started.
    pub fn run(repo: &Path, work: &Path, args: &[std::ffi::OsString]) -> Result<Host, HostError> {
        // A host.env of an earlier run must not be taken for this one's.
        let _ = fs::remove_file(work.join("host.env"));
        let status = Command::new("bash")
            .current_dir(repo)
            .args(["-c", SETUP, "host-setup"])
            .args(args)
            .status()
            .map_err(HostError::Spawn)?;
        let env_file = work.join("host.env");
        // Read host.env even on failure: the set-up may have started servers to stop.
        let env = fs::read_to_string(&env_file)
            .map(|t| parse_env(&t))
            .unwrap_or_default();
        if !status.success() {
            stop(&pids(&env));
            return Err(HostError::Setup(status.code().unwrap_or(-1)));
        }
        let mut host = Host::from_env(&env, &env_file)?;
        stop_on_signals(&host.pids);
        let tokens = host.rancher_dir.join("tokens");
        let text = fs::read_to_string(&tokens).map_err(|source| HostError::Read {
            path: tokens.clone(),
            source,
        })?;
        host.token = text.lines().next().unwrap_or("").trim().to_string();
        if host.token.is_empty() {
            return Err(HostError::NoToken(tokens));
        }
        Ok(host)
    }

    /// The image's env file (build-image.sh's image.env, build-KIND.sh's KIND.env), read.
    pub fn image_vars(&self) -> Result<BTreeMap<String, String>, HostError> {
        fs::read_to_string(&self.image_env)
            .map(|t| parse_env(&t))
            .map_err(|source| HostError::Read {
                path: self.image_env.clone(),
                source,
            })
    }

    fn from_env(env: &BTreeMap<String, String>, file: &Path) -> Result<Host, HostError> {
        let get = |key: &'static str| {
            env.get(key).cloned().ok_or(HostError::Missing {
                file: file.to_path_buf(),
                key,
            })
        };
        let host = Host {
            pids: pids(env),
            token: String::new(),
            ca_checksum: get("HOST_CA_CHECKSUM")?,
            server_url: get("HOST_SERVER_URL")?,
            rancher_dir: get("HOST_RANCHER_DIR")?.into(),
            image_env: get("HOST_IMAGE_ENV")?.into(),
            build_seconds: get("HOST_BUILD_SECONDS")?.parse().unwrap_or(0),
            image_seconds: get("HOST_IMAGE_SECONDS")?.parse().unwrap_or(0),
            egress: crate::egress::Egress::from_env(env, file)?,
            sysext: SysextServed::from_env(env),
        };
        Ok(host)
    }

    pub fn nodes_json(&self) -> PathBuf {
        self.rancher_dir.join("nodes.json")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        stop(&self.pids);
    }
}

fn pids(env: &BTreeMap<String, String>) -> Vec<i32> {
    env.get("HOST_PIDS")
        .map(|p| {
            p.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The servers' pids for the signal handler (Drop does not run when SIGINT/SIGTERM end the
/// driver, and the servers run in their own sessions: nothing else would stop them), and the
/// VMs the driver runs itself (`guard`).
static SERVER_PIDS: [AtomicI32; 8] = [const { AtomicI32::new(0) }; 8];

/// Has the signal handler stop `pid` too (a qemu the driver started), until `unguard`.
pub fn guard(pid: i32) {
    if let Some(slot) = SERVER_PIDS
        .iter()
        .rev()
        .find(|p| p.load(Ordering::Relaxed) == 0)
    {
        slot.store(pid, Ordering::Relaxed);
    }
}

pub fn unguard(pid: i32) {
    for slot in &SERVER_PIDS {
        let _ = slot.compare_exchange(pid, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    for p in &SERVER_PIDS {
        let pid = p.load(Ordering::Relaxed);
        if pid > 1 {
            // SAFETY: kill(2) and _exit(2) are async-signal-safe.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
    // SAFETY: as above.
    unsafe { libc::_exit(128 + sig) }
}

/// On SIGINT/SIGTERM: stop the servers, exit 128+signal (exec resets the handler: the
/// children keep the default).
fn stop_on_signals(pids: &[i32]) {
    for (slot, pid) in SERVER_PIDS.iter().zip(pids) {
        slot.store(*pid, Ordering::Relaxed);
    }
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installs a handler that only calls async-signal-safe functions.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// SIGTERM to the servers host_setup started (by their pids, nothing broader).
fn stop(pids: &[i32]) {
    for &pid in pids.iter().filter(|&&p| p > 1) {
        // SAFETY: kill(2) with a pid we were given and a valid signal touches no memory.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// `KEY=VALUE` lines, values optionally in single quotes (what host_setup writes).
pub fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_env_is_read() {
        let env = parse_env(
            "HOST_PIDS='101 202'\nHOST_CA_CHECKSUM=abc\nHOST_SERVER_URL=https://10.0.2.2:8443\n\
HOST_RANCHER_DIR=/w/rancher\nHOST_IMAGE_ENV=/w/image/image.env\nHOST_BUILD_SECONDS=12\n\
HOST_IMAGE_SECONDS=40\n",
        );
        assert_eq!(pids(&env), vec![101, 202]);
        let host = Host::from_env(&env, Path::new("host.env")).expect("host");
        assert_eq!(host.server_url, "https://10.0.2.2:8443");
        assert_eq!(host.nodes_json(), PathBuf::from("/w/rancher/nodes.json"));
        assert_eq!(host.image_seconds, 40);
        // Not a real server: keep Drop from signalling these pids.
        std::mem::forget(host);
    }

    #[test]
    fn a_missing_key_is_named() {
        let env = parse_env("HOST_PIDS=''\n");
        let err = Host::from_env(&env, Path::new("host.env")).expect_err("incomplete");
        assert!(err.to_string().contains("HOST_CA_CHECKSUM"), "{err}");
    }
}
