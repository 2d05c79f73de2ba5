//! `e2e-driver secrets`: the secret campaign (scripts/secret-campaign.sh). The whole flow (a
//! system-agent worker, then an rke1 node with all roles) with a known registration token, N
//! boots of each node, each with its own BOOTSTRAPD_LOG form (kernel command line
//! `systemd.setenv=`, inherited by the unit): global debug/trace and per-module directives for
//! the client libraries, which must print no secret whatever the operator asks for. Every boot
//! is judged by secrets.rs (the rules the e2e driver applies to its own boots), then a table
//! of hits per place per boot. The token is read from WORK/rancher/tokens (0600), goes into the
//! 0600 userdata only, and is never printed nor put on a command line.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bootstrapd::state::journal::Verdict;

use crate::checks::Checks;
use crate::driver::DriverError;
use crate::host::{Host, HostConfig};
use crate::report::Report;
use crate::scenario::Mode;
use crate::{secrets, userdata, vm};

/// The default log forms: boot n of a node uses form (n-1) mod count.
pub const LOG_FORMS: &str = "info,bootstrapd=debug,bollard::docker=debug,bollard::read=trace,hyper_util::client=trace,hyper::proto=trace,reqwest::connect=debug,h2::codec=trace,zbus::connection=trace trace";

pub const MODES: &str = "system-agent rke1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("--modes: unknown mode {0:?} (system-agent, rke1)")]
    UnknownMode(String),
    #[error("--modes: no mode given")]
    NoMode,
    #[error("--log-forms: no log form given")]
    NoLogForm,
}

/// The modes named in a space-separated list, in order.
pub fn parse_modes(list: &str) -> Result<Vec<Mode>, SecretError> {
    let modes = list
        .split_whitespace()
        .map(|m| {
            [Mode::SystemAgent, Mode::Rke1]
                .into_iter()
                .find(|k| k.as_str() == m)
                .ok_or_else(|| SecretError::UnknownMode(m.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if modes.is_empty() {
        return Err(SecretError::NoMode);
    }
    Ok(modes)
}

/// The log forms of a space-separated list (none is an error: every boot needs one).
pub fn parse_log_forms(list: &str) -> Result<Vec<String>, SecretError> {
    let forms: Vec<String> = list.split_whitespace().map(str::to_string).collect();
    if forms.is_empty() {
        return Err(SecretError::NoLogForm);
    }
    Ok(forms)
}

/// The form of boot `n` (from 1): the forms in turn.
pub fn form_for(forms: &[String], n: u32) -> &str {
    &forms[(n as usize - 1) % forms.len()]
}

/// The node's roles in the userdata's YAML list.
fn roles(mode: Mode) -> &'static str {
    match mode {
        Mode::Rke1 => "etcd, controlplane, worker",
        Mode::SystemAgent => "worker",
    }
}

#[derive(Debug, Clone)]
pub struct SecretOptions {
    pub host: HostConfig,
    pub binary: Option<PathBuf>,
    /// Boots per node (at least 1).
    pub boots: u32,
    pub modes: Vec<Mode>,
    pub log_forms: Vec<String>,
    pub boot_timeout_s: u64,
}

/// The line after a boot: time, vm.sh's status, bootstrapd's unit result, the verdict ("-"
/// where the report lacks them).
pub fn boot_line(secs: u64, rc: i32, r: &Report) -> String {
    let result = r.prop("unit-bootstrapd", "Result").unwrap_or("-");
    let verdict = r
        .status_json()
        .ok()
        .map_or("-", |j| Verdict::as_str(j.verdict));
    format!("    {secs}s, vm.sh status {rc}, bootstrapd {result}, verdict {verdict}")
}

/// One judged boot, for the table.
struct Judged {
    label: String,
    mode: Mode,
    report: Report,
}

struct Campaign {
    opts: SecretOptions,
    host: Host,
    checks: Checks,
    boots: Vec<Judged>,
}

/// Runs the campaign (as root: cli.rs checks); `Ok(true)` when nothing leaked (every check
/// passed).
pub fn run(opts: SecretOptions) -> Result<bool, DriverError> {
    let t_total = Instant::now();
    let h = &opts.host;
    let host = h.start(opts.binary.as_deref())?;
    println!(
        "==> token: {} characters, from {}",
        host.token.chars().count(),
        host.rancher_dir.join("tokens").display()
    );
    let mut camp = Campaign {
        opts,
        host,
        checks: Checks::default(),
        boots: Vec::new(),
    };
    for mode in camp.opts.modes.clone() {
        camp.node(mode)?;
    }
    camp.finish(t_total.elapsed().as_secs());
    Ok(camp.checks.failed() == 0)
}

impl Campaign {
    /// One node (`s-MODE`): its userdata, then its boots, each judged as it ends.
    fn node(&mut self, mode: Mode) -> Result<(), DriverError> {
        let name = format!("s-{}", mode.as_str());
        let work = self.opts.host.work.clone();
        let ud = work.join(format!("{name}.user-data"));
        let v = userdata::Values {
            server: &self.host.server_url,
            token: &self.host.token,
            ca_checksum: &self.host.ca_checksum,
            roles: roles(mode),
            mode: mode.as_str(),
            extra: &[],
        };
        let template = self.opts.host.repo.join("tests/e2e/userdata/node.yaml");
        userdata::write(&template, &ud, &v).map_err(|source| DriverError::Write {
            path: ud.clone(),
            source,
        })?;
        for n in 1..=self.opts.boots {
            let report = self.boot(&name, n, &ud)?;
            let label = format!("{name} boot {n}");
            secrets::check(&mut self.checks, &label, &report, &self.host.token, mode);
            self.boots.push(Judged {
                label: format!("{name}-boot{n}"),
                mode,
                report,
            });
        }
        Ok(())
    }

    fn boot(&mut self, name: &str, n: u32, ud: &Path) -> Result<Report, DriverError> {
        let work = &self.opts.host.work;
        let serial = work.join(format!("logs/{name}-boot{n}.log"));
        let form = form_for(&self.opts.log_forms, n);
        println!("==> {name}: boot {n}");
        println!("    BOOTSTRAPD_LOG={form}");
        let append = format!("bootstrapd.e2e systemd.setenv=BOOTSTRAPD_LOG={form}");
        let b = vm::VmBoot {
            image_env: &self.host.image_env,
            overlay: work.join(format!("{name}.qcow2")),
            fresh: n == 1,
            user_data: Some(ud),
            hostname: name,
            append: &append,
            serial: serial.clone(),
            timeout_s: self.opts.boot_timeout_s,
            proxy_only: None,
        };
        let (rc, took) = vm::boot_quiet(&self.opts.host.repo, &b).map_err(DriverError::Vm)?;
        let report = Report::load(&serial).unwrap_or_default();
        println!("{}", boot_line(took.as_secs(), rc, &report));
        Ok(report)
    }

    /// The table of hits per place per boot, the total time and the tally.
    fn finish(&self, secs: u64) {
        println!();
        println!(
            "hits per place (must be 0; docker-env by design; files: see the list, all must be 600 root:root):"
        );
        for b in &self.boots {
            println!("{} ({}):", b.label, b.mode.as_str());
            for l in secrets::table(&b.report, &self.host.token) {
                println!("{l}");
            }
        }
        println!("total {secs}s");
        self.checks.summary();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_parsed_in_order_and_unknown_ones_refused() {
        assert_eq!(
            parse_modes(MODES).expect("default"),
            [Mode::SystemAgent, Mode::Rke1]
        );
        assert_eq!(parse_modes(" rke1 ").expect("one"), [Mode::Rke1]);
        assert_eq!(
            parse_modes("system-agent rke2"),
            Err(SecretError::UnknownMode("rke2".into()))
        );
        assert_eq!(parse_modes("  "), Err(SecretError::NoMode));
    }

    #[test]
    fn boots_take_the_log_forms_in_turn() {
        let forms = parse_log_forms(LOG_FORMS).expect("default");
        assert_eq!(forms.len(), 2);
        assert_eq!(form_for(&forms, 1), forms[0]);
        assert!(form_for(&forms, 1).contains("hyper::proto=trace"));
        assert_eq!(form_for(&forms, 2), "trace");
        assert_eq!(form_for(&forms, 3), forms[0]);
        let one = parse_log_forms("debug").expect("one");
        assert_eq!(form_for(&one, 5), "debug");
        assert_eq!(parse_log_forms(""), Err(SecretError::NoLogForm));
    }

    #[test]
    fn the_boot_line_tells_the_unit_and_the_verdict() {
        let r = Report::parse(
            "@@E2E unit-bootstrapd| Result=success\n\
@@E2E status-json| {\"version\": 1, \"verdict\": \"done\", \"runs\": 1, \"updated\": 9}\n\
@@E2E status-json| rc=0\n",
        );
        assert_eq!(
            boot_line(212, 0, &r),
            "    212s, vm.sh status 0, bootstrapd success, verdict done"
        );
        assert_eq!(
            boot_line(900, 124, &Report::default()),
            "    900s, vm.sh status 124, bootstrapd -, verdict -"
        );
    }

    const TOKEN: &str = "kq7v5x2n8m4c6b9z1l3j5h7g9f2d4s6a8p0o1i3u5y7t9r2e4w6";

    /// An rke1 boot's console as the guest prints it (a real run's secrets section, container
    /// ids shortened), with carriage returns and a status line's escape glued in front.
    const RKE1_BOOT: &str = "[   41.2] bootstrapd[301]: registering with https://10.0.2.2:8451\r\n\
\x1b[K@@E2E secrets| token=found length=51\r\n\
@@E2E secrets| place=cmdline hits=0 samples=536 distinct=182\r\n\
@@E2E secrets| place=journal-this-boot hits=0\r\n\
@@E2E secrets| place=journal-all-boots hits=0\r\n\
@@E2E secrets| place=status hits=0\r\n\
@@E2E secrets| place=status-json hits=0\r\n\
@@E2E secrets| place=query hits=0\r\n\
@@E2E secrets| place=docker-args hits=0 containers=1\r\n\
@@E2E secrets| hit=docker-env: /sad_davinci CATTLE_TOKEN=<TOKEN>\r\n\
@@E2E secrets| place=docker-env hits=1\r\n\
@@E2E secrets| file=600 root:root /var/lib/docker/containers/9f3e/config.v2.json nobody-readable=no\r\n\
@@E2E secrets| file=644 root:root /var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db nobody-readable=no\r\n\
@@E2E secrets| file=644 root:root /run/containerd/io.containerd.runtime.v2.task/moby/9f3e/config.json nobody-readable=no\r\n\
@@E2E secrets| place=files-scanned dirs=/etc,/var,/run,/tmp\r\n\
@@E2E secrets| rc=0\r\n";

    #[test]
    fn a_real_rke1_boot_passes_and_is_tabulated() {
        let r = Report::parse(RKE1_BOOT);
        let mut c = Checks::default();
        secrets::check(&mut c, "s-rke1 boot 1", &r, TOKEN, Mode::Rke1);
        assert_eq!((c.passed, c.failures.clone()), (10, Vec::<String>::new()));
        let t = secrets::table(&r, TOKEN);
        assert_eq!(
            &t[6..10],
            [
                "  docker-args            0",
                "  docker-env             1",
                "  serial-console         0",
                "  files                  3",
            ]
        );
        assert_eq!(
            t[10],
            "    file 600 root:root /var/lib/docker/containers/9f3e/config.v2.json nobody-readable=no"
        );
        assert_eq!(
            t[13],
            "    hit=docker-env: /sad_davinci CATTLE_TOKEN=<TOKEN>"
        );
        assert_eq!(t.len(), 14);
    }

    #[test]
    fn a_leak_under_a_debug_log_form_fails_without_printing_the_token() {
        let leaky = RKE1_BOOT
            .replace(
                "place=journal-this-boot hits=0",
                "place=journal-this-boot hits=1\n@@E2E secrets| hit=journal-this-boot: h2::codec: <TOKEN>",
            )
            .replace(
                "[   41.2] bootstrapd[301]: registering",
                &format!("[   41.2] hyper::proto: authorization: Bearer {TOKEN}"),
            );
        let r = Report::parse(&leaky);
        let mut c = Checks::default();
        secrets::check(&mut c, "s-rke1 boot 2", &r, TOKEN, Mode::Rke1);
        assert_eq!(c.failed(), 2, "{:?}", c.failures);
        assert!(c.failures[0].contains("no token in journal-this-boot"));
        assert!(c.failures[1].contains("serial console"));
        let t = secrets::table(&r, TOKEN);
        assert!(
            t.contains(&"  serial-console         1".to_string()),
            "{t:?}"
        );
        assert!(c.failures.iter().chain(&t).all(|l| !l.contains(TOKEN)));
    }

    #[test]
    fn rke1_gets_every_role() {
        assert_eq!(roles(Mode::Rke1), "etcd, controlplane, worker");
        assert_eq!(roles(Mode::SystemAgent), "worker");
    }
}
