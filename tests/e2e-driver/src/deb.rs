//! What the two tests of bootstrapd installed from its .deb share (`e2e-driver qcow2`,
//! `e2e-driver pxe`): the host side (tests/e2e/lib.sh `host_setup_deb_image`), the worker's
//! userdata, bootstrapd's outcome on the console, the server's record, the durations table.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rancher_test_server::{Generation, NodeRecord};

use crate::checks::Checks;
use crate::driver::{DriverError, Level};
use crate::host::Host;
use crate::{server, userdata};

/// The options both tests take.
#[derive(Debug, Clone)]
pub struct DebOptions {
    pub repo: PathBuf,
    pub work: PathBuf,
    pub level: Level,
    pub boot_timeout: Duration,
    pub apt_port: u16,
    pub rancher_port: u16,
}

pub struct DebTest {
    pub opts: DebOptions,
    pub host: Host,
    pub checks: Checks,
    timings: Vec<(String, u64)>,
    t_total: Instant,
}

const WORKER_TEMPLATE: &str = "tests/e2e/userdata/worker-system-agent.yaml";

impl DebTest {
    /// Runs lib.sh's `function` (`host_setup_deb_image WORK KIND ...`, `host_setup_pxe ...`)
    /// with `args` after it.
    pub fn setup(opts: DebOptions, function: &str, args: &[OsString]) -> Result<Self, DriverError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(DriverError::NotRoot);
        }
        let t_total = Instant::now();
        std::fs::create_dir_all(opts.work.join("logs")).map_err(|source| DriverError::Write {
            path: opts.work.clone(),
            source,
        })?;
        let mut all: Vec<OsString> = vec![function.into(), opts.work.clone().into_os_string()];
        all.extend_from_slice(args);
        let host = Host::run(&opts.repo, &opts.work, &all)?;
        let mut t = DebTest {
            opts,
            timings: Vec::new(),
            checks: Checks::default(),
            t_total,
            host,
        };
        t.time("packages (build-packages.sh)", t.host.build_seconds);
        t.time("image (from the .deb)", t.host.image_seconds);
        t.time("host set-up in all", t_total.elapsed().as_secs());
        Ok(t)
    }

    pub fn time(&mut self, what: &str, seconds: u64) {
        self.timings.push((what.to_string(), seconds));
    }

    /// The worker's NoCloud userdata (0600: it holds the token).
    pub fn write_userdata(&self, out: &Path) -> Result<(), DriverError> {
        let values = userdata::Values {
            server: &self.host.server_url,
            token: &self.host.token,
            ca_checksum: &self.host.ca_checksum,
            roles: "worker",
            mode: "system-agent",
        };
        userdata::write(&self.opts.repo.join(WORKER_TEMPLATE), out, &values).map_err(|source| {
            DriverError::Write {
                path: out.to_path_buf(),
                source,
            }
        })
    }

    /// A value of the image's env file (build-KIND.sh's KIND.env).
    pub fn image_var(&self, key: &'static str) -> Result<String, DriverError> {
        let vars = self.host.image_vars()?;
        vars.get(key).cloned().ok_or_else(|| {
            DriverError::Host(crate::host::HostError::Missing {
                file: self.host.image_env.clone(),
                key,
            })
        })
    }

    /// Level full: bootstrapd succeeded (its outcome line says so) and the server recorded the
    /// node; level boot lists them as not checked.
    pub fn check_outcome_and_record(&mut self, outcome: Option<&str>, not_checked: &str) {
        if self.opts.level == Level::Boot {
            println!();
            println!("E2E_LEVEL=boot: NOT checked: {not_checked}");
            return;
        }
        self.checks.check(
            "bootstrapd's run ended done",
            crate::qemu::outcome_done(outcome),
            format!("its outcome line: {}", outcome.unwrap_or("none")),
        );
        match server::records(&self.host.nodes_json()) {
            Ok(records) => {
                println!("    server record: {}", server::summary_line(&records));
                self.checks.check(
                    "the Rancher test server recorded one system-agent worker, registered once",
                    one_worker_registered_once(&records),
                    server::summary_line(&records),
                );
            }
            Err(e) => self.checks.fail(
                "the Rancher test server recorded one system-agent worker, registered once",
                &e.to_string(),
            ),
        }
    }

    /// The durations table and the tally; whether every check passed.
    pub fn finish(&self) -> bool {
        println!();
        println!("durations:");
        for (what, s) in &self.timings {
            println!("  {what:<40} {s:>5}s");
        }
        println!("  {:<40} {:>5}s", "total", self.t_total.elapsed().as_secs());
        self.checks.summary();
        self.checks.failed() == 0
    }
}

/// The end of the console, at every level: systemd's login prompt (the check `login` names it)
/// and bootstrapd's outcome line.
pub fn check_console_end(c: &mut Checks, login: &str, console: &str, outcome: Option<&str>) {
    c.check(
        login,
        console.contains("login:"),
        "no 'login:' on the console",
    );
    c.check(
        "bootstrapd's run ended (its outcome line on the console)",
        outcome.is_some(),
        "no 'bootstrapd run ended:' line",
    );
}

/// Exactly one node, a system-agent worker that connected once.
pub fn one_worker_registered_once(records: &[NodeRecord]) -> bool {
    matches!(records, [r] if r.generation == Generation::SystemAgent
        && r.roles == ["worker"]
        && r.connect_count == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(roles: &[&str], count: u64, generation: &str) -> NodeRecord {
        serde_json::from_value(serde_json::json!({
            "name": "custom-ab", "generation": generation,
            "roles": roles, "labels": {}, "taints": [], "hostname": "qcow2-node",
            "first_seen": "t", "last_seen": "t", "connect_count": count
        }))
        .expect("record")
    }

    #[test]
    fn one_worker_registered_once_and_nothing_else() {
        let w = record(&["worker"], 1, "system-agent");
        assert!(one_worker_registered_once(std::slice::from_ref(&w)));
        assert!(!one_worker_registered_once(&[]));
        assert!(!one_worker_registered_once(&[w.clone(), w]));
        assert!(!one_worker_registered_once(&[record(
            &["worker"],
            2,
            "system-agent"
        )]));
        assert!(!one_worker_registered_once(&[record(
            &["etcd"],
            1,
            "system-agent"
        )]));
        assert!(!one_worker_registered_once(&[record(
            &["worker"],
            1,
            "rke1"
        )]));
    }
}
