//! What the tests of bootstrapd installed from its .deb share (`e2e-driver qcow2`,
//! `e2e-driver pxe`, `e2e-driver immutable`): the host side (tests/e2e/lib.sh
//! `host_setup_deb_image`), the worker's userdata and its NoCloud seed, the disks' overlays and
//! their VMs, bootstrapd's outcome on the console, the server's record, the durations table.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
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

/// A tests/e2e/userdata template and what fills it besides the server's values.
pub struct Template<'a> {
    /// Relative to the repository.
    pub path: &'a str,
    pub mode: &'a str,
    pub roles: &'a str,
    /// Further `@NAME@` placeholders.
    pub extra: Vec<(String, String)>,
}

impl Template<'_> {
    /// The system-agent worker every .deb image test boots.
    pub fn worker() -> Template<'static> {
        Template {
            path: WORKER_TEMPLATE,
            mode: "system-agent",
            roles: "worker",
            extra: Vec::new(),
        }
    }
}

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

    /// The worker's NoCloud userdata (0600: it holds the token), with `identity`'s keys.
    pub fn write_userdata(&self, out: &Path, identity: &Identity) -> Result<(), DriverError> {
        self.write_userdata_from(out, &Template::worker(), identity)
    }

    /// `template`'s userdata for this host's server, with `identity`'s keys (0600).
    pub fn write_userdata_from(
        &self,
        out: &Path,
        template: &Template,
        identity: &Identity,
    ) -> Result<(), DriverError> {
        let values = userdata::Values {
            server: &self.host.server_url,
            token: &self.host.token,
            ca_checksum: &self.host.ca_checksum,
            roles: template.roles,
            mode: template.mode,
            extra: &template.extra,
        };
        let write_err = |source| DriverError::Write {
            path: out.to_path_buf(),
            source,
        };
        let text =
            std::fs::read_to_string(self.opts.repo.join(template.path)).map_err(write_err)?;
        let text = userdata::render(&text, &values) + &identity.yaml();
        userdata::write_text(out, text.trim_end()).map_err(write_err)
    }

    /// Waits on `vm`'s console for bootstrapd's outcome line (up to the boot timeout), records
    /// how long it took and prints it.
    pub fn wait_for_outcome(&mut self, vm: &mut crate::qemu::Vm) -> Option<String> {
        let outcome = vm.wait_for(
            self.opts.boot_timeout,
            Duration::from_secs(5),
            crate::qemu::bootstrapd_outcome,
        );
        self.time(
            "qemu start to bootstrapd's outcome",
            vm.started.elapsed().as_secs(),
        );
        match &outcome {
            Some(l) => println!("    serial: {l}"),
            None => println!(
                "    serial: no outcome line from bootstrapd within {}s",
                self.opts.boot_timeout.as_secs()
            ),
        }
        outcome
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

/// DIR/seed.iso (volume cidata): `template`'s userdata with `identity`, the meta-data naming the
/// node `hostname`, and `network_config` when given.
pub fn nocloud_seed(
    t: &DebTest,
    dir: &Path,
    (template, identity): (&Template, &Identity),
    hostname: &str,
    network_config: Option<&str>,
) -> Result<PathBuf, DriverError> {
    let _ = std::fs::remove_dir_all(dir);
    let write_err = |source| DriverError::Write {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(write_err)?;
    t.write_userdata_from(&dir.join("user-data"), template, identity)?;
    std::fs::write(
        dir.join("meta-data"),
        format!("instance-id: iid-{hostname}\nlocal-hostname: {hostname}\n"),
    )
    .map_err(write_err)?;
    let mut files = vec![dir.join("user-data"), dir.join("meta-data")];
    if let Some(text) = network_config {
        std::fs::write(dir.join("network-config"), text).map_err(write_err)?;
        files.push(dir.join("network-config"));
    }
    let iso = dir.join("seed.iso");
    crate::tool::stdout(
        Command::new("genisoimage")
            .args(["-quiet", "-output"])
            .arg(&iso)
            .args(["-volid", "cidata", "-joliet", "-rock"])
            .args(&files),
    )?;
    Ok(iso)
}

/// A new qcow2 `overlay` on `base` (removed first): a boot writes there, the image stays as
/// built.
pub fn overlay(base: &str, overlay: &Path) -> Result<(), DriverError> {
    let _ = std::fs::remove_file(overlay);
    crate::tool::stdout(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base])
            .arg(overlay),
    )?;
    Ok(())
}

/// qemu's arguments for a boot from `disk`'s own bootloader (SeaBIOS, then the MBR) with the
/// `seed` ISO, a user network NIC (`mac`) whose `hostfwd` reaches the guest's sshd, and QMP on
/// `qmp` for the power button.
pub fn disk_boot_args(
    memory_mib: u32,
    serial: &Path,
    disk: &Path,
    seed: &Path,
    nic: (&str, String),
    qmp: &Path,
) -> Vec<String> {
    let (mac, hostfwd) = nic;
    let mut args = crate::qemu::base_args(memory_mib, serial);
    args.extend([
        "-boot".to_string(),
        "c".to_string(),
        "-drive".to_string(),
        format!(
            "file={},format=qcow2,if=virtio,cache=unsafe",
            disk.display()
        ),
        "-drive".to_string(),
        format!("file={},format=raw,if=virtio,readonly=on", seed.display()),
        "-netdev".to_string(),
        format!("user,id=net0,{hostfwd}"),
        "-device".to_string(),
        format!("virtio-net-pci,netdev=net0,mac={mac}"),
        "-qmp".to_string(),
        format!("unix:{},server=on,wait=off", qmp.display()),
    ]);
    args
}

/// The node identity a test's userdata asks for: its `hostname` setting and the user its SSH key
/// logs in as.
pub struct Identity<'a> {
    /// `metadata`, or a template such as `pxe-{mac}`.
    pub hostname: &'a str,
    /// None: the setting's default user (root).
    pub user: Option<&'a str>,
    pub key: &'a str,
    /// The hostname the node must end up with.
    pub expect_hostname: &'a str,
}

impl Identity<'_> {
    /// The `bootstrapd:` keys, indented to follow the template's last lines.
    fn yaml(&self) -> String {
        let hostname = match self.hostname {
            "metadata" => "metadata".to_string(),
            t => format!("\n    template: \"{t}\""),
        };
        let user = self
            .user
            .map(|u| format!("    user: {u}\n"))
            .unwrap_or_default();
        format!(
            "\n  hostname: {hostname}\n  ssh:\n{user}    authorized_keys:\n      - {}\n",
            self.key
        )
    }

    /// The user the key logs in as.
    pub fn login_user(&self) -> &str {
        self.user.unwrap_or("root")
    }
}

/// The command run over SSH: who logged in, the hostname, and the modes and owners of the
/// files bootstrapd wrote.
pub const LOGIN_COMMAND: &str = "id -un; hostname; stat -c '%a %U' ~/.ssh ~/.ssh/authorized_keys";

/// Logs in as `user` with `key` through the forward on `port` and runs [`LOGIN_COMMAND`],
/// waiting up to 2 minutes for sshd; what it printed.
pub fn login(key: &crate::ssh::Key, user: &str, port: u16) -> crate::tool::Ran {
    let ran = crate::ssh::run(key, user, port, LOGIN_COMMAND, Duration::from_secs(120));
    println!("    ssh {user}@guest: exit {}", ran.code);
    ran
}

/// The SSH login's checks: the key let `identity`'s user in, the hostname is the one asked for,
/// `.ssh` is 0700 and `authorized_keys` 0600, both the user's.
pub fn check_login(c: &mut Checks, identity: &Identity, ran: &crate::tool::Ran) {
    let user = identity.login_user();
    let lines: Vec<&str> = ran.stdout.lines().collect();
    c.check(
        &format!("the userdata's SSH key lets {user} log in (the guest's sshd)"),
        ran.code == 0 && lines.first() == Some(&user),
        format!(
            "ssh exit {}: {}{}",
            ran.code,
            ran.stdout.trim(),
            ran.stderr.trim()
        ),
    );
    c.eq(
        &format!(
            "the hostname is {} (hostname: {})",
            identity.expect_hostname, identity.hostname
        ),
        Some(identity.expect_hostname),
        lines.get(1).copied(),
    );
    c.eq(
        &format!("~{user}/.ssh is 0700 and authorized_keys 0600, both owned by {user}"),
        vec![format!("700 {user}"), format!("600 {user}")],
        lines
            .iter()
            .skip(2)
            .map(|l| l.to_string())
            .collect::<Vec<_>>(),
    );
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

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINh4sr3UJtD2PNnWDTqURwSA7FMeC7+X1fUN3Pgr+Rwz e2e";

    /// The worker template with `identity`'s keys, as bootstrapd's own parser reads it.
    fn parsed(identity: &Identity) -> bootstrapd::userdata::Settings {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let template = std::fs::read_to_string(repo.join(WORKER_TEMPLATE)).expect("template");
        let values = userdata::Values {
            server: "https://10.0.2.2:8443",
            token: "e2e-token-0123456789abcdef0123456789abcdef0123456789abcdef",
            ca_checksum: &"ab".repeat(32),
            roles: "worker",
            mode: "system-agent",
            extra: &[],
        };
        let text = userdata::render(&template, &values) + &identity.yaml();
        bootstrapd::userdata::parse(text.as_bytes())
            .unwrap_or_else(|e| panic!("the rendered worker userdata: {e}"))
            .settings
    }

    #[test]
    fn the_identity_keys_are_userdata_bootstrapd_accepts() {
        use bootstrapd::userdata::HostnameSetting;
        let metadata = Identity {
            hostname: "metadata",
            user: Some("ops"),
            key: KEY,
            expect_hostname: "qcow2-node",
        };
        let s = parsed(&metadata);
        assert_eq!(s.hostname, Some(HostnameSetting::Metadata));
        let ssh = s.ssh.expect("ssh");
        assert_eq!((ssh.user.as_str(), ssh.authorized_keys.len()), ("ops", 1));
        assert_eq!(metadata.login_user(), "ops");
        let template = Identity {
            hostname: "pxe-{mac}",
            user: None,
            key: KEY,
            expect_hostname: "pxe-525400123456",
        };
        let s = parsed(&template);
        assert_eq!(
            s.hostname,
            Some(HostnameSetting::Template("pxe-{mac}".into()))
        );
        assert_eq!(s.ssh.expect("ssh").user, "root");
        assert_eq!(template.login_user(), "root");
    }

    #[test]
    fn a_login_is_judged_by_user_hostname_and_modes() {
        let identity = Identity {
            hostname: "metadata",
            user: Some("ops"),
            key: KEY,
            expect_hostname: "qcow2-node",
        };
        let ran = |code, stdout: &str| crate::tool::Ran {
            code,
            stdout: stdout.to_string(),
            stderr: String::new(),
        };
        let mut c = Checks::default();
        check_login(
            &mut c,
            &identity,
            &ran(0, "ops\nqcow2-node\n700 ops\n600 ops\n"),
        );
        assert_eq!((c.passed, c.failed()), (3, 0));
        let mut c = Checks::default();
        check_login(&mut c, &identity, &ran(0, "ops\nnode\n755 ops\n644 root\n"));
        assert_eq!((c.passed, c.failed()), (1, 2));
        let mut c = Checks::default();
        check_login(&mut c, &identity, &ran(255, ""));
        assert_eq!((c.passed, c.failed()), (0, 3));
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
