//! The one driver: sets the host side up once, boots every scenario through scripts/vm.sh and
//! checks each boot's report, `status --json` and the server's record.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bootstrapd::state::journal::{Stage, StageState};

use crate::checks::Checks;
use crate::egress::{self, Egress};
use crate::host::{Host, HostConfig, HostError};
use crate::report::Report;
use crate::scenario::{Boot, ExpectedRecord, Kind, Mode, Scenario, ServerCondition};
use crate::{secrets, server, userdata, vm};

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("must run as root (debootstrap, mounts for the image build)")]
    NotRoot,
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run scripts/vm.sh: {0}")]
    Vm(#[source] std::io::Error),
    #[error(transparent)]
    Qemu(#[from] crate::qemu::QemuError),
    #[error(transparent)]
    Tool(#[from] crate::tool::ToolError),
    #[error("{0}")]
    Build(String),
    #[error(
        "{0} is a proxy-only node, but the host side started no proxy (host.env has no HOST_PROXY_RELAY)"
    )]
    NoEgress(&'static str),
    #[error(
        "{0} takes Docker from the system extension, but the host side built none (host.env has no HOST_SYSEXT_PATH)"
    )]
    NoSysext(&'static str),
}

/// How much of bootstrapd's work is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Level {
    /// Everything.
    Full,
    /// Only the checks every boot must pass (a bootstrapd whose `run` is not complete yet);
    /// the rest is listed as not checked.
    Boot,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub host: HostConfig,
    pub level: Level,
    pub boot_timeout_s: u64,
    /// `BOOTSTRAPD_LOG` of the scenarios' `debug_log` boots.
    pub log_form: String,
    /// Only the scenarios of these names (all when empty).
    pub only: Vec<String>,
}

/// One boot of a node scenario, as seen.
struct BootSeen {
    /// The boot's number in the scenario (1, 2, ...).
    n: u32,
    /// Its number on its disk: the guest's own boot counter (1 again after a reimage).
    on_disk: u32,
    new_disk: bool,
    report: Report,
}

/// One node scenario's boots, for the checks that span them.
struct NodeRun<'s> {
    scenario: &'s Scenario,
    mode: Mode,
    reports: Vec<BootSeen>,
}

impl NodeRun<'_> {
    /// The machine name the node reports in `status --json` (system-agent mode), from its last
    /// boot that has one.
    fn machine_name(&self) -> Option<String> {
        self.reports.iter().rev().find_map(|b| {
            let journal = b.report.status_json().ok()?;
            Some(journal.registration?.system_agent?.machine_name)
        })
    }
}

pub struct Driver {
    opts: Options,
    host: Host,
    pub checks: Checks,
    timings: Vec<(String, f64)>,
}

/// Runs the suite; `Ok(true)` when every check passed.
pub fn run(opts: Options) -> Result<bool, DriverError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(DriverError::NotRoot);
    }
    let t_total = Instant::now();
    std::fs::create_dir_all(opts.host.work.join("logs")).map_err(|source| DriverError::Write {
        path: opts.host.work.clone(),
        source,
    })?;
    let host = Host::setup(&opts.host)?;
    let mut d = Driver {
        opts,
        host,
        checks: Checks::default(),
        timings: Vec::new(),
    };
    d.time("cargo build + strip", d.host.build_seconds as f64);
    d.time(
        "agent image + node image (base cached or built)",
        d.host.image_seconds as f64,
    );
    let scenarios: Vec<Scenario> = crate::scenario::all()
        .into_iter()
        .filter(|s| d.opts.only.is_empty() || d.opts.only.iter().any(|o| o == s.name))
        .collect();
    let mut runs = Vec::new();
    for s in &scenarios {
        if let Kind::Node { .. } = s.kind {
            runs.push(d.run_node(s)?);
        }
    }
    if d.opts.level == Level::Full {
        d.check_server(&runs);
    }
    for r in &runs {
        let egress = d.egress_of(r.scenario).cloned();
        for b in r.reports.iter().filter(|b| b.report.complete(b.on_disk)) {
            let label = format!("{} boot {}", r.scenario.name, b.n);
            secrets::check(&mut d.checks, &label, &b.report, &d.host.token, r.mode);
            if let Some(e) = &egress {
                e.check_secrets(&mut d.checks, &label, &b.report);
            }
        }
    }
    for s in scenarios.iter().filter(|s| matches!(s.kind, Kind::Control)) {
        d.run_control(s)?;
    }
    d.finish(t_total.elapsed());
    Ok(d.checks.failed() == 0)
}

impl Driver {
    fn time(&mut self, what: &str, seconds: f64) {
        self.timings.push((what.to_string(), seconds));
    }

    fn log(&self, name: &str, n: u32) -> PathBuf {
        self.opts
            .host
            .work
            .join("logs")
            .join(format!("{name}-boot{n}.log"))
    }

    /// The scenario's kernel arguments for boot `n`, with the debug log form where asked.
    fn kernel_args(&self, s: &Scenario, n: u32) -> String {
        let mut args = s.kernel_args.to_string();
        if let Kind::Node { boots, .. } = &s.kind
            && boots.get(n as usize - 1).is_some_and(|b| b.debug_log)
        {
            args.push_str(&format!(
                " systemd.setenv=BOOTSTRAPD_LOG={}",
                self.opts.log_form
            ));
        }
        if let Some(e) = self.egress_of(s) {
            // What the report must find closed without the proxy (egress::check_boot).
            let h = &self.opts.host;
            args.push_str(&format!(
                " bootstrapd.e2e.direct=10.0.2.2:{},10.0.2.2:{},{}",
                h.rancher_port, h.apt_port, e.registry
            ));
        }
        args
    }

    /// The host's egress side when scenario `s` is a proxy-only node.
    fn egress_of(&self, s: &Scenario) -> Option<&Egress> {
        match &s.kind {
            Kind::Node {
                proxy_only: true, ..
            } => self.host.egress.as_ref(),
            _ => None,
        }
    }

    /// Boots the scenario's disk once (`fresh`: a new disk from the image); a VM that did not
    /// power off cleanly is a failure.
    fn boot(
        &mut self,
        s: &Scenario,
        n: u32,
        fresh: bool,
        user_data: Option<&Path>,
    ) -> Result<(PathBuf, Report), DriverError> {
        println!("==> {}: boot {n}", s.name);
        let serial = self.log(s.name, n);
        let append = self.kernel_args(s, n);
        let image_env = self.host.image_env.clone();
        let relay = self.egress_of(s).map(|e| e.relay.clone());
        let b = vm::VmBoot {
            image_env: &image_env,
            overlay: self.opts.host.work.join(format!("{}.qcow2", s.name)),
            fresh,
            user_data,
            hostname: s.name,
            append: &append,
            serial: serial.clone(),
            timeout_s: self.opts.boot_timeout_s,
            proxy_only: relay.as_deref(),
        };
        let (rc, took) = vm::boot(&self.opts.host.repo, &b).map_err(DriverError::Vm)?;
        self.time(
            &format!("{} boot {n} (qemu start to power-off)", s.name),
            took.as_secs_f64().round(),
        );
        let report = Report::load(&serial).unwrap_or_default();
        if rc != 0 {
            let name = format!(
                "{} boot {n}: the VM did not power off cleanly (vm.sh status {rc})",
                s.name
            );
            self.checks.fail(&name, "");
            println!("---- last lines of {}", serial.display());
            let lines: Vec<&str> = report.console.lines().collect();
            for l in &lines[lines.len().saturating_sub(40)..] {
                println!("{l}");
            }
            println!("----");
        }
        Ok((serial, report))
    }

    fn run_node<'s>(&mut self, s: &'s Scenario) -> Result<NodeRun<'s>, DriverError> {
        let Kind::Node {
            template,
            mode,
            roles,
            boots,
            proxy_only,
            sysext,
            ..
        } = &s.kind
        else {
            unreachable!("run_node is called for node scenarios");
        };
        let ud = self.opts.host.work.join(format!("{}.user-data", s.name));
        let mut extra = match (proxy_only, &self.host.egress) {
            (false, _) => Vec::new(),
            (true, Some(e)) => e.placeholders(*mode),
            (true, None) => return Err(DriverError::NoEgress(s.name)),
        };
        match (sysext, &self.host.sysext) {
            (_, Some(x)) => extra.extend(x.placeholders(self.opts.host.apt_port)),
            (true, None) => return Err(DriverError::NoSysext(s.name)),
            (false, None) => {}
        }
        let values = userdata::Values {
            server: &self.host.server_url,
            token: &self.host.token,
            ca_checksum: &self.host.ca_checksum,
            roles,
            mode: mode.as_str(),
            extra: &extra,
        };
        userdata::write(&self.opts.host.repo.join(template), &ud, &values).map_err(|source| {
            DriverError::Write {
                path: ud.clone(),
                source,
            }
        })?;
        let mut run = NodeRun {
            scenario: s,
            mode: *mode,
            reports: Vec::new(),
        };
        let mut on_disk = 0;
        for (i, b) in boots.iter().enumerate() {
            let n = i as u32 + 1;
            let fresh = n == 1 || b.new_disk;
            on_disk = if fresh { 1 } else { on_disk + 1 };
            let mark = self.egress_of(s).map(Egress::mark);
            let (log, report) = match b.before {
                Some(ServerCondition::Starting) => self.boot_starting(s, n, fresh, &ud)?,
                None => self.boot(s, n, fresh, Some(&ud))?,
            };
            self.check_boot(s.name, (n, on_disk), &log, &report);
            if self.opts.level == Level::Full && report.complete(on_disk) {
                self.check_outcome(s, n, b, &report);
                if let Some(m) = mark {
                    self.check_traffic(s, (n, on_disk == 1), m);
                }
            }
            run.reports.push(BootSeen {
                n,
                on_disk,
                new_disk: b.new_disk,
                report,
            });
        }
        if self.opts.level == Level::Full {
            self.check_repeat(&run);
        }
        Ok(run)
    }

    /// A boot that starts while the server is "starting": the flag file is created, a watcher
    /// removes it once the server's log shows a 401 on `/v3/connect/agent`.
    fn boot_starting(
        &mut self,
        s: &Scenario,
        n: u32,
        fresh: bool,
        ud: &Path,
    ) -> Result<(PathBuf, Report), DriverError> {
        let flag = self.opts.host.starting_while.clone();
        std::fs::write(&flag, b"starting\n").map_err(|source| DriverError::Write {
            path: flag.clone(),
            source,
        })?;
        let server_log = self.opts.host.work.join("logs/rancher.log");
        let offset = std::fs::metadata(&server_log).map(|m| m.len()).unwrap_or(0);
        let done = AtomicBool::new(false);
        let (booted, seen) = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| watch_401s(&server_log, offset, &flag, &done));
            let booted = self.boot(s, n, fresh, Some(ud));
            done.store(true, Ordering::Relaxed);
            (booted, watcher.join().unwrap_or(0))
        });
        // Never leave the server refusing the next boots.
        let _ = std::fs::remove_file(&flag);
        let (log, report) = booted?;
        if self.opts.level == Level::Boot {
            return Ok((log, report));
        }
        self.checks.check(
            &format!(
                "{}: refused with 401 while Rancher was starting, and kept trying",
                s.name
            ),
            seen > 0,
            "no 401 on /v3/connect/agent in the server's log during the boot",
        );
        let p = format!("{} boot {n}", s.name);
        let register_done = report.status_json().ok().and_then(|j| {
            j.stages
                .iter()
                .find(|r| r.stage == Stage::Register)
                .map(|r| r.state)
        });
        self.checks.eq(
            &format!("{p}: status --json register stage done"),
            Some(StageState::Done),
            register_done,
        );
        Ok((log, report))
    }

    /// Checks every boot must pass, whatever bootstrapd's outcome; `(n, on_disk)`: the boot's
    /// number in the scenario and on its disk.
    fn check_boot(&mut self, name: &str, (n, on_disk): (u32, u32), log: &Path, r: &Report) {
        let p = format!("{name} boot {n}");
        let c = &mut self.checks;
        if !r.complete(on_disk) {
            c.fail(
                &format!("{p}: report complete (@@E2E END boot={on_disk})"),
                &format!("see {}", log.display()),
            );
            return;
        }
        c.pass(&format!("{p}: report complete"));
        c.eq(
            &format!("{p}: no ordering cycle in the journal"),
            "rc=1",
            &r.section("ordering-cycle").join(" "),
        );
        c.eq(
            &format!("{p}: bootstrapd.service loaded"),
            Some("loaded"),
            r.prop("unit-bootstrapd", "LoadState"),
        );
        c.eq(
            &format!("{p}: bootstrapd.service enabled"),
            Some("enabled"),
            r.prop("unit-bootstrapd", "UnitFileState"),
        );
        // The early local stage runs at every boot; without a network-config it does nothing.
        c.eq(
            &format!("{p}: bootstrapd-local.service ran and succeeded"),
            (Some("active"), Some("success")),
            (
                r.prop("unit-bootstrapd-local", "ActiveState"),
                r.prop("unit-bootstrapd-local", "Result"),
            ),
        );
        let b_start = r.usec("unit-bootstrapd", "ExecMainStartTimestampMonotonic");
        let fw_active = r.usec("unit-firewalld", "ActiveEnterTimestampMonotonic");
        let online = r.usec("unit-networkd-wait-online", "ActiveEnterTimestampMonotonic");
        c.check(
            &format!("{p}: bootstrapd.service started"),
            b_start > 0,
            "no start timestamp",
        );
        let order = format!(
            "bootstrapd started at {b_start} us, firewalld active at {fw_active}, online at {online}"
        );
        // Every node here has its userdata on the seed ISO: the early host step masks
        // firewalld before its start job runs, on the first boot of a disk, and firewalld
        // stays masked after. (The PXE test, userdata over the network only, keeps the path
        // that stops a running firewalld.)
        c.eq(
            &format!("{p}: bootstrapd-local-host.service ran and succeeded"),
            (Some("active"), Some("success")),
            (
                r.prop("unit-bootstrapd-local-host", "ActiveState"),
                r.prop("unit-bootstrapd-local-host", "Result"),
            ),
        );
        c.check(
            &format!("{p}: firewalld never started"),
            fw_active == 0,
            &order,
        );
        if on_disk == 1 {
            has(
                c,
                &format!("{p}: bootstrapd-local-host masked firewalld before it started (status)"),
                r,
                "status",
                "host (local stage): firewalld masked before it started",
                |l| l.contains("host (local stage): firewalld masked before it started"),
            );
        }
        c.check(
            &format!("{p}: network-online reached before bootstrapd started"),
            online > 0 && online <= b_start,
            &order,
        );
        self.time(
            &format!("{p}: kernel start to bootstrapd start"),
            secs(b_start),
        );
        let local_done = r.usec("unit-bootstrapd-local", "ActiveEnterTimestampMonotonic");
        self.time(
            &format!("{p}: kernel start to bootstrapd-local done"),
            secs(local_done),
        );
    }

    /// Checks of bootstrapd's work (level full).
    fn check_outcome(&mut self, s: &Scenario, n: u32, boot: &Boot, r: &Report) {
        let Kind::Node { mode, .. } = s.kind else {
            return;
        };
        let p = format!("{} boot {n}", s.name);
        let egress = self.egress_of(s).cloned();
        let c = &mut self.checks;
        c.eq(
            &format!("{p}: bootstrapd.service succeeded"),
            Some("success"),
            r.prop("unit-bootstrapd", "Result"),
        );
        c.eq(
            &format!("{p}: bootstrapd.service active"),
            Some("active"),
            r.prop("unit-bootstrapd", "ActiveState"),
        );
        c.eq(
            &format!("{p}: status --json exit 0"),
            Some(0),
            r.rc("status-json"),
        );
        match r.status_json() {
            Ok(journal) => {
                c.pass(&format!("{p}: status --json is JSON"));
                c.eq(
                    &format!("{p}: status --json verdict {}", boot.verdict.as_str()),
                    boot.verdict,
                    journal.verdict,
                );
            }
            Err(e) => c.fail(&format!("{p}: status --json is JSON"), &e.to_string()),
        }
        check_host_prep(c, &p, r);
        let image = egress
            .as_ref()
            .map_or(egress::AGENT_IMAGE.to_string(), |e| e.agent_image());
        let sysext = matches!(s.kind, Kind::Node { sysext: true, .. });
        match mode {
            Mode::SystemAgent => check_system_agent(c, &p, r),
            Mode::Rke1 if sysext => crate::sysext::check_boot(c, &p, n, r, &image),
            Mode::Rke1 => check_rke1(c, &p, r, &image),
        }
        if egress.is_some() {
            egress::check_boot(c, &p, mode, r);
        }
    }

    /// What boot `n` of proxy-only node `s` sent through the proxy and asked of the registry.
    fn check_traffic(&mut self, s: &Scenario, (n, first): (u32, bool), mark: egress::LogMark) {
        let (Some(e), Kind::Node { mode, .. }) = (self.egress_of(s), &s.kind) else {
            return;
        };
        let (proxy, registry) = e.since(mark);
        let h = &self.opts.host;
        let t = egress::Traffic {
            proxy: &proxy,
            registry: &registry,
            first,
            rancher: format!("10.0.2.2:{}", h.rancher_port),
            apt: format!("10.0.2.2:{}", h.apt_port),
            registry_addr: &e.registry.clone(),
        };
        egress::check_traffic(&mut self.checks, &format!("{} boot {n}", s.name), *mode, &t);
    }

    /// Across boots: a later boot changed nothing; rke1 keeps its agent container.
    fn check_repeat(&mut self, run: &NodeRun) {
        let name = run.scenario.name;
        for pair in run.reports.windows(2) {
            if pair[1].new_disk {
                // A new disk is compared with nothing: its files are new by definition; the
                // server's record says whether it is the same machine.
                continue;
            }
            let (a, (n, b)) = (&pair[0].report, (pair[1].n, &pair[1].report));
            let which = ordinal(n);
            let (d1, d2) = (a.section("digest"), b.section("digest"));
            if !d1.is_empty() && d1 == d2 {
                self.checks.pass(&format!(
                    "{name}: the {which} boot changed nothing (files, units, packages)"
                ));
            } else {
                self.checks.fail(
                    &format!("{name}: the {which} boot changed something"),
                    &digest_diff(d1, d2),
                );
            }
            if run.mode == Mode::Rke1 {
                self.checks.eq(
                    &format!("{name}: the {which} boot kept the same agent container"),
                    agent_container(a),
                    agent_container(b),
                );
            }
        }
    }

    /// The server's record: one entry per node identity, whatever the number of boots.
    fn check_server(&mut self, runs: &[NodeRun]) {
        let records = match server::records(&self.host.nodes_json()) {
            Ok(r) => r,
            Err(e) => {
                self.checks
                    .fail("server: the node record is readable", &e.to_string());
                return;
            }
        };
        self.checks.eq(
            &format!(
                "server: {} node{} recorded",
                count_word(runs.len()),
                if runs.len() == 1 { "" } else { "s" }
            ),
            runs.len(),
            records.len(),
        );
        for run in runs {
            let Kind::Node { record, .. } = &run.scenario.kind else {
                continue;
            };
            let machine = run.machine_name();
            let mine = server::for_node(&records, run.scenario.name, machine.as_deref());
            let seen: Vec<String> = mine
                .iter()
                .map(|r| describe(r.generation, &r.roles, Some(r.connect_count)))
                .collect();
            let want = describe(
                record.generation,
                &record
                    .roles
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
                record.connect_count,
            );
            let seen = seen
                .iter()
                .map(|s| strip_count(s, record))
                .collect::<Vec<_>>();
            self.checks.eq(
                &record_check_name(run.scenario.name, record),
                vec![want],
                seen,
            );
        }
    }

    fn run_control(&mut self, s: &Scenario) -> Result<(), DriverError> {
        let (log, r) = self.boot(s, 1, true, None)?;
        if r.complete(1) {
            has(
                &mut self.checks,
                &format!(
                    "{}: a unit ordered before sysinit.target after network-online shows an ordering cycle",
                    s.name
                ),
                &r,
                "ordering-cycle",
                "ordering cycle",
                |l| l.contains("ordering cycle"),
            );
        } else {
            self.checks.fail(
                &format!("{}: report complete", s.name),
                &format!("see {}", log.display()),
            );
        }
        Ok(())
    }

    fn finish(&mut self, total: Duration) {
        if self.opts.level == Level::Boot {
            println!();
            println!(
                "level boot: NOT checked: bootstrapd's outcome (firewalld masked, modules, sysctls,"
            );
            println!("runtime install, registration, second boot idempotence)");
        }
        println!();
        println!("durations:");
        for (what, s) in &self.timings {
            println!("  {what:<48} {s:>6}s");
        }
        println!("  {:<48} {:>6}s", "total", total.as_secs());
        self.checks.summary();
    }
}

/// `check_section_has`: some line of the section satisfies `pred` (`what` names it).
fn has(
    c: &mut Checks,
    name: &str,
    r: &Report,
    section: &str,
    what: &str,
    pred: impl Fn(&str) -> bool,
) {
    c.check(
        name,
        r.any(section, pred),
        format!("no line matching /{what}/ in section {section}"),
    );
}

/// `KEY *= *1`, the sysctl.d line bootstrapd writes.
fn sysctl_line_is_one(line: &str, key: &str) -> bool {
    line.strip_prefix(key)
        .map(|r| r.trim_start_matches(' '))
        .and_then(|r| r.strip_prefix('='))
        .is_some_and(|r| r.trim_start_matches(' ') == "1")
}

/// The host preparation: firewalld off, kernel modules and sysctls live and persisted.
fn check_host_prep(c: &mut Checks, p: &str, r: &Report) {
    c.eq(
        &format!("{p}: firewalld inactive"),
        Some("inactive"),
        r.prop("unit-firewalld", "ActiveState"),
    );
    c.eq(
        &format!("{p}: firewalld masked"),
        Some("masked"),
        r.prop("unit-firewalld", "UnitFileState"),
    );
    has(
        c,
        &format!("{p}: firewalld masked (D-Bus)"),
        r,
        "busctl-firewalld",
        "UnitFileState=s \"masked\"",
        |l| l.contains("UnitFileState=s \"masked\""),
    );
    for m in [
        "br_netfilter",
        "overlay",
        "iptable_nat",
        "iptable_filter",
        "nf_conntrack",
    ] {
        has(
            c,
            &format!("{p}: {m} in modules-load.d"),
            r,
            "modules-load",
            &format!("^{m}$"),
            |l| l == m,
        );
    }
    for m in ["br_netfilter", "overlay"] {
        let prefix = format!("{m} ");
        has(
            c,
            &format!("{p}: {m} loaded"),
            r,
            "lsmod",
            &format!("^{m} "),
            |l| l.starts_with(&prefix),
        );
    }
    for s in ["net.bridge.bridge-nf-call-iptables", "net.ipv4.ip_forward"] {
        has(
            c,
            &format!("{p}: {s}=1 persisted"),
            r,
            "sysctl-conf",
            &format!("^{s} *= *1$"),
            |l| sysctl_line_is_one(l, s),
        );
        let live = format!("{s} = 1");
        has(
            c,
            &format!("{p}: {s}=1 live"),
            r,
            "sysctl-live",
            &format!("^{live}$"),
            |l| l == live,
        );
    }
}

fn check_system_agent(c: &mut Checks, p: &str, r: &Report) {
    // RKE2/K3s bring their own containerd: bootstrapd installs no runtime in this mode.
    has(
        c,
        &format!("{p}: no docker.io (system-agent: RKE2/K3s bring containerd)"),
        r,
        "packages",
        "no packages found matching docker.io",
        |l| l.contains("no packages found matching docker.io"),
    );
    let unit = "unit-rancher-system-agent";
    c.eq(
        &format!("{p}: rancher-system-agent.service active"),
        Some("active"),
        r.prop(unit, "ActiveState"),
    );
    c.eq(
        &format!("{p}: rancher-system-agent.service enabled"),
        Some("enabled"),
        r.prop(unit, "UnitFileState"),
    );
}

fn check_rke1(c: &mut Checks, p: &str, r: &Report, image: &str) {
    check_docker_installed(c, p, r);
    check_docker_and_agent(c, p, r, image);
}

fn check_docker_installed(c: &mut Checks, p: &str, r: &Report) {
    has(
        c,
        &format!("{p}: docker.io installed from the local repository"),
        r,
        "packages",
        "^docker.io .* ii *$",
        |l| l.starts_with("docker.io ") && l.trim_end().ends_with(" ii"),
    );
}

/// docker.service enabled and active, and the one rancher-agent container running `image`.
pub fn check_docker_and_agent(c: &mut Checks, p: &str, r: &Report, image: &str) {
    c.eq(
        &format!("{p}: docker.service active"),
        Some("active"),
        r.prop("unit-docker", "ActiveState"),
    );
    c.eq(
        &format!("{p}: docker.service enabled"),
        Some("enabled"),
        r.prop("unit-docker", "UnitFileState"),
    );
    let running = format!(" {image} running");
    has(
        c,
        &format!("{p}: the rancher-agent container runs {image}"),
        r,
        "docker-ps",
        &format!("{running}$"),
        |l| l.ends_with(&running),
    );
    c.eq(
        &format!("{p}: exactly one agent container"),
        1,
        agent_containers(r),
    );
}

/// How many rancher-agent containers `docker ps -a` lists (running or not).
pub fn agent_containers(r: &Report) -> usize {
    r.section("docker-ps")
        .iter()
        .filter(|l| is_agent_line(l))
        .count()
}

/// A `docker ps` line "ID NAME IMAGE STATE" of a rancher-agent container, whatever registry
/// prefixes its image (`rancher.system_default_registry`).
fn is_agent_line(l: &str) -> bool {
    l.split_whitespace().nth(2).is_some_and(|image| {
        image.starts_with("rancher/rancher-agent:") || image.contains("/rancher/rancher-agent:")
    })
}

/// The id of the rancher-agent container (`docker ps` line "ID NAME IMAGE STATE").
fn agent_container(r: &Report) -> Option<String> {
    r.section("docker-ps")
        .iter()
        .find(|l| is_agent_line(l))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
}

fn digest_diff(a: &[String], b: &[String]) -> String {
    let gone = a.iter().filter(|l| !b.contains(l)).map(|l| format!("-{l}"));
    let new = b.iter().filter(|l| !a.contains(l)).map(|l| format!("+{l}"));
    let lines: Vec<String> = gone.chain(new).take(20).collect();
    if lines.is_empty() {
        "no digest".to_string()
    } else {
        lines.join(";")
    }
}

fn describe(g: rancher_test_server::Generation, roles: &[String], count: Option<u64>) -> String {
    let count = count.map_or(String::new(), |c| format!(" {c}"));
    format!("{} {}{count}", g.as_str(), roles.join(","))
}

/// Drops the connect count from a seen record's description when the scenario does not judge it.
fn strip_count(seen: &str, want: &ExpectedRecord) -> String {
    match want.connect_count {
        Some(_) => seen.to_string(),
        None => seen.rsplit_once(' ').map_or(seen, |(s, _)| s).to_string(),
    }
}

fn record_check_name(name: &str, r: &ExpectedRecord) -> String {
    let roles = r.roles.join(",");
    match r.connect_count {
        Some(1) => format!(
            "server: {name} registered once, as a {} {roles}",
            r.generation.as_str()
        ),
        Some(c) => format!(
            "server: {name} connected {c} times, as a {} {roles}",
            r.generation.as_str()
        ),
        None => format!(
            "server: {name} recorded once, as an {} node with roles {roles}",
            r.generation.as_str()
        ),
    }
}

fn secs(usec: u64) -> f64 {
    (usec as f64 / 100_000.0).round() / 10.0
}

fn ordinal(n: u32) -> String {
    match n {
        2 => "second".to_string(),
        3 => "third".to_string(),
        n => format!("{n}th"),
    }
}

fn count_word(n: usize) -> String {
    ["no", "one", "two", "three", "four"]
        .get(n)
        .map_or(n.to_string(), |w| w.to_string())
}

/// Polls the server's log from `offset` until `done`: at the first 401 on `/v3/connect/agent`
/// removes `flag` (the server has "finished starting"). Returns the 401s seen by then.
fn watch_401s(log: &Path, offset: u64, flag: &Path, done: &AtomicBool) -> usize {
    use std::io::{Read, Seek, SeekFrom};
    while !done.load(Ordering::Relaxed) {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(log)
            && f.seek(SeekFrom::Start(offset)).is_ok()
            && f.read_to_string(&mut text).is_ok()
        {
            let seen = server::agent_401s(&text);
            if seen > 0 {
                let _ = std::fs::remove_file(flag);
                println!("    the server answered {seen} 401(s) while starting: flag file removed");
                return seen;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rancher_test_server::Generation;

    fn seen(n: u32, report: Report) -> BootSeen {
        BootSeen {
            n,
            on_disk: n,
            new_disk: false,
            report,
        }
    }

    #[test]
    fn the_machine_name_comes_from_the_last_journal_that_has_one() {
        let scenario = &crate::scenario::all()[0];
        let journal = |reg: &str| {
            format!(
                "@@E2E status-json| {{\"version\": 1, \"verdict\": \"done\", \"updated\": 1{reg}}}\n@@E2E status-json| rc=0\n"
            )
        };
        let with = journal(concat!(
            r#", "registration": {"server": "https://rancher.lab", "mode": "system-agent", "#,
            r#""roles": ["worker"], "node_name": "n", "trust": "t", "findings": [], "#,
            r#""system_agent": {"cattle_id": "c", "cattle_id_created": true, "#,
            r#""machine_name": "custom-e8a1", "connection_info_file": "f", "binary": "b"}}"#
        ));
        let mut run = NodeRun {
            scenario,
            mode: Mode::SystemAgent,
            reports: vec![seen(1, Report::parse(&with))],
        };
        assert_eq!(run.machine_name().as_deref(), Some("custom-e8a1"));
        run.reports.push(seen(2, Report::parse(&journal(""))));
        assert_eq!(run.machine_name().as_deref(), Some("custom-e8a1"));
        run.reports.remove(0);
        assert_eq!(run.machine_name(), None);
    }

    #[test]
    fn sysctl_lines() {
        assert!(sysctl_line_is_one(
            "net.ipv4.ip_forward = 1",
            "net.ipv4.ip_forward"
        ));
        assert!(sysctl_line_is_one(
            "net.ipv4.ip_forward=1",
            "net.ipv4.ip_forward"
        ));
        assert!(!sysctl_line_is_one(
            "net.ipv4.ip_forward = 0",
            "net.ipv4.ip_forward"
        ));
        assert!(!sysctl_line_is_one(
            "net.ipv4.ip_forward_x = 1",
            "net.ipv4.ip_forward"
        ));
    }

    #[test]
    fn record_descriptions() {
        let want = ExpectedRecord {
            generation: Generation::Rke1,
            roles: &["etcd", "worker"],
            connect_count: None,
        };
        let seen = describe(Generation::Rke1, &["etcd".into(), "worker".into()], Some(3));
        assert_eq!(strip_count(&seen, &want), "rke1 etcd,worker");
        assert_eq!(
            describe(Generation::SystemAgent, &["worker".into()], Some(1)),
            "system-agent worker 1"
        );
        assert_eq!(
            record_check_name(
                "node1",
                &ExpectedRecord {
                    generation: Generation::SystemAgent,
                    roles: &["worker"],
                    connect_count: Some(1)
                }
            ),
            "server: node1 registered once, as a system-agent worker"
        );
    }

    #[test]
    fn agent_container_and_digest_diff() {
        let r = Report::parse(
            "@@E2E docker-ps| 3f2a1 sharp_x rancher/rancher-agent:v2.6.14 running\n@@E2E docker-ps| rc=0\n",
        );
        assert_eq!(agent_container(&r).as_deref(), Some("3f2a1"));
        let a = vec!["x 1".to_string(), "y 2".to_string()];
        let b = vec!["x 1".to_string(), "y 3".to_string()];
        assert_eq!(digest_diff(&a, &b), "-y 2;+y 3");
        assert_eq!(digest_diff(&[], &[]), "no digest");
    }

    #[test]
    fn the_watcher_removes_the_flag_at_the_first_401() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("rancher.log");
        let flag = dir.path().join("starting");
        let old = "INFO request method=GET path=/v3/connect/agent status=401\n";
        std::fs::write(&log, old).expect("write");
        std::fs::write(&flag, "").expect("write");
        let done = AtomicBool::new(false);
        let seen = std::thread::scope(|s| {
            let w = s.spawn(|| watch_401s(&log, old.len() as u64, &flag, &done));
            std::thread::sleep(Duration::from_millis(700));
            // The 401 before the offset (an earlier boot's) did not count.
            assert!(flag.exists());
            let mut text = old.to_string();
            text.push_str("INFO request method=GET path=/v3/connect/agent status=401\n");
            std::fs::write(&log, text).expect("write");
            w.join().expect("watcher")
        });
        assert_eq!(seen, 1);
        assert!(!flag.exists());
    }
}
