//! `e2e-driver crash`: the crash campaign (issue 7). Crashes bootstrapd's node at stage
//! boundaries and in the middle of stages, boots the same disk again without the crash, and
//! judges what matters, per point:
//!   converged  the clean boot ends with bootstrapd.service succeeded, `status --json` rc 0,
//!              verdict done
//!   records    the Rancher test server's records for the node's name (must be 1; a second
//!              record is a second registration under a new identity)
//!   connects   accepted registrations/connections of that record (system-agent: 2 means the
//!              same identity registered again after a crash, which Rancher takes as the same
//!              machine; rke1: one per agent container start). Shown, not judged.
//!   agents     rke1: rancher-agent containers after the clean boot (must be 1)
//!   journal    every state.json found at boot after a crash reads as bootstrapd's `Journal`,
//!              and so does the clean boot's `status --json` (a torn or empty journal is corrupt)
//!   dpkg       rke1: docker.io is "ii" in dpkg after the clean boot (not iF/iHR)
//! and that every crash fired. A point is its own node (the ID is its hostname and
//! rancher.node_name, a fresh disk): one boot per crash SPEC with bootstrapd.crash=SPEC on the
//! kernel command line (images/debian12/overlay/usr/libexec/bootstrapd-e2e/crasher explains
//! SPEC: ACTION,STAGE[,STEP[,DELAY[,WAIT]]]), then one boot without. Boots run one at a time.

use std::path::{Path, PathBuf};

use bootstrapd::state::journal::{Journal, Verdict};
use rancher_test_server::NodeRecord;

use crate::checks::Checks;
use crate::driver::DriverError;
use crate::host::{Host, HostConfig};
use crate::report::Report;
use crate::scenario::Mode;
use crate::{server, userdata, vm};

/// One crash point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    pub id: &'static str,
    pub mode: Mode,
    /// One crashed boot per spec, in order; then a clean boot.
    pub specs: &'static [&'static str],
}

const fn p(id: &'static str, mode: Mode, specs: &'static [&'static str]) -> Point {
    Point { id, mode, specs }
}

use Mode::{Rke1 as R1, SystemAgent as SA};

/// The campaign, the most telling points first (for when time is short). Points in the middle
/// of the install wait for a package's dpkg file list (written when dpkg unpacks it), not for
/// a number of seconds: the install took 70 s on an idle machine and over 120 s under load,
/// and a delay that outlives the step misses the point. SA: system-agent
/// (fast: no runtime install); R1: rke1 (Docker from the local apt repository, the agent
/// container from the image's archive).
pub const ALL: &[Point] = &[
    p(
        "r1-kill-mid-install",
        R1,
        &["kill,runtime,runtime.install,0,/var/lib/dpkg/info/runc.list"],
    ),
    // The stage, not its first step: "node identity" lasts about one 50 ms poll, so a poll
    // can miss it (a CI run did: the run ended without the crash).
    p("sa-reset-register-start", SA, &["reset,register"]),
    p(
        "sa-reset-mid-register",
        SA,
        &["reset,register,registering,2"],
    ),
    p("sa-kill-mid-register", SA, &["kill,register,registering,2"]),
    p(
        "sa-reset-after-connect",
        SA,
        &["reset,register,registering,0,/var/lib/rancher/agent/rancher2_connection_info.json"],
    ),
    p(
        "sa-kill-after-connect",
        SA,
        &["kill,register,registering,0,/var/lib/rancher/agent/rancher2_connection_info.json"],
    ),
    p(
        "r1-reset-after-create",
        R1,
        &["reset,register,registering,0,/var/lib/docker/containers/*/config.v2.json"],
    ),
    p(
        "r1-kill-after-create",
        R1,
        &["kill,register,registering,0,/var/lib/docker/containers/*/config.v2.json"],
    ),
    p(
        "r1-reset-mid-install",
        R1,
        &["reset,runtime,runtime.install,0,/var/lib/dpkg/info/docker.io.list"],
    ),
    p("sa-kill-prepare-start", SA, &["kill,prepare"]),
    p("sa-reset-mid-prepare", SA, &["reset,prepare,modules"]),
    p("sa-reset-begin", SA, &["reset,begin"]),
    p("sa-kill-runtime-start", SA, &["kill,runtime"]),
    p(
        "r1-reset-mid-register",
        R1,
        &["reset,register,registering,6"],
    ),
    p(
        "r1-kill-mid-register",
        R1,
        &["kill,register,registering,12"],
    ),
    p(
        "sa-poweroff-mid-register",
        SA,
        &["poweroff,register,registering,2"],
    ),
    p("r1-reset-runtime-start", R1, &["reset,runtime"]),
];

/// The short form CI runs: two crashes chained on one rke1 node (kill -9 mid-install, then a
/// hard reset as the register stage starts).
pub const CI: &[Point] = &[p(
    "ci-r1-chain",
    R1,
    &[
        "kill,runtime,runtime.install,0,/var/lib/dpkg/info/containerd.list",
        "reset,register",
    ],
)];

#[derive(Debug, thiserror::Error)]
pub enum CrashError {
    #[error("no point {0} (see --list)")]
    NoPoint(String),
}

/// The points named (all of ALL when none is).
pub fn select(ids: &[String]) -> Result<Vec<&'static Point>, CrashError> {
    if ids.is_empty() {
        return Ok(ALL.iter().collect());
    }
    ids.iter()
        .map(|id| {
            ALL.iter()
                .chain(CI)
                .find(|p| p.id == id)
                .ok_or_else(|| CrashError::NoPoint(id.clone()))
        })
        .collect()
}

/// `--list`: "ID MODE SPEC..." as the bash campaign printed them.
pub fn list() -> Vec<String> {
    ALL.iter()
        .chain(CI)
        .map(|p| format!("{} {} {}", p.id, p.mode.as_str(), p.specs.join(" ")))
        .collect()
}

#[derive(Debug, Clone)]
pub struct CrashOptions {
    pub host: HostConfig,
    pub binary: Option<PathBuf>,
    pub boot_timeout_s: u64,
}

/// Where the crasher fired: "STAGE:STEP" of its "firing ACTION at stage=S step=T uptime=U".
pub fn fired_at(r: &Report) -> Option<String> {
    r.section("crash").iter().find_map(|l| {
        let rest = l.strip_prefix("firing ")?;
        let (_, rest) = rest.split_once(" at stage=")?;
        let (stage, rest) = rest.split_once(" step=")?;
        let step = rest.rsplit_once(" uptime=").map_or(rest, |(s, _)| s);
        Some(format!("{stage}:{}", step.replace(' ', "_")))
    })
}

/// The state journal as a boot found it before bootstrapd started (`journal-at-boot`).
#[derive(Debug, PartialEq)]
pub enum JournalAtBoot {
    /// No section: the report port printed nothing (not judged).
    NoReport,
    Absent,
    /// Read as bootstrapd's journal: its verdict and progress.
    Ok {
        verdict: Verdict,
        at: String,
    },
    Corrupt(String),
}

impl JournalAtBoot {
    pub fn read(r: &Report) -> JournalAtBoot {
        let lines = r.section("journal-at-boot");
        if lines.is_empty() {
            return JournalAtBoot::NoReport;
        }
        if lines.iter().any(|l| l == "absent") {
            return JournalAtBoot::Absent;
        }
        let json: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("json="))
            .collect();
        match serde_json::from_str::<Journal>(&json.join("\n")) {
            Ok(j) => JournalAtBoot::Ok {
                verdict: j.verdict,
                at: j.progress.map_or("-/-".to_string(), |p| {
                    let step = if p.step.is_empty() { "-" } else { &p.step };
                    format!("{}/{step}", p.stage.as_str())
                }),
            },
            Err(e) => JournalAtBoot::Corrupt(e.to_string()),
        }
    }

    fn label(&self) -> String {
        match self {
            JournalAtBoot::NoReport => "no-report".into(),
            JournalAtBoot::Absent => "absent".into(),
            JournalAtBoot::Ok { verdict, at } => format!("ok({},{at})", verdict.as_str()),
            JournalAtBoot::Corrupt(e) => format!("corrupt({})", e.replace(' ', "_")),
        }
    }
}

/// What a point's boots showed.
#[derive(Debug, Default)]
pub struct Seen {
    /// Per crashed boot: where the crash fired (None: missed).
    pub fired: Vec<Option<String>>,
    pub journals: Vec<JournalAtBoot>,
    pub notes: Vec<String>,
    /// The clean boot's report.
    pub last: Report,
}

/// The clean boot's figures and the point's verdict.
#[derive(Debug, PartialEq)]
pub struct Judged {
    pub verdict: Option<Verdict>,
    pub status_rc: Option<i32>,
    pub records: usize,
    pub connects: String,
    pub agents: Option<usize>,
    pub problems: Vec<String>,
}

/// The records under the point's name (hostname, else machine name, as `records` prints them).
fn records_of<'a>(records: &'a [NodeRecord], id: &str) -> Vec<&'a NodeRecord> {
    records.iter().filter(|r| server::label(r) == id).collect()
}

/// Judges a point from its boots and the server's records, and adds its checks.
pub fn judge(c: &mut Checks, point: &Point, seen: &Seen, records: &[NodeRecord]) -> Judged {
    let id = point.id;
    let r = &seen.last;
    let journal = r.status_json();
    let verdict = journal.as_ref().ok().map(|j| j.verdict);
    let status_rc = r.rc("status-json");
    let mut problems = Vec::new();
    let converged = r.prop("unit-bootstrapd", "Result") == Some("success")
        && status_rc == Some(0)
        && verdict == Some(Verdict::Done);
    c.check(
        &format!("{id}: converged (bootstrapd succeeded, status --json rc 0, verdict done)"),
        converged,
        format!(
            "Result={}, rc={status_rc:?}, verdict={}",
            r.prop("unit-bootstrapd", "Result").unwrap_or("-"),
            verdict.map_or("-", Verdict::as_str)
        ),
    );
    if !converged {
        problems.push("NOT-CONVERGED".to_string());
    }
    let mine = records_of(records, id);
    c.eq(&format!("{id}: one record at the server"), 1, mine.len());
    if mine.len() != 1 {
        problems.push(format!("RECORDS={}", mine.len()));
    }
    let connects: Vec<String> = mine.iter().map(|r| r.connect_count.to_string()).collect();
    let agents = (point.mode == Mode::Rke1).then(|| judge_rke1(c, id, r, &mut problems));
    let corrupt: Vec<String> = seen
        .journals
        .iter()
        .filter(|j| matches!(j, JournalAtBoot::Corrupt(_)))
        .map(JournalAtBoot::label)
        .chain(
            journal
                .as_ref()
                .err()
                .map(|e| format!("final status --json: {e}")),
        )
        .collect();
    c.eq(
        &format!("{id}: the state journal read whole at every boot after a crash and at the end"),
        "",
        &corrupt.join("; "),
    );
    if !corrupt.is_empty() {
        problems.push("CORRUPT-JOURNAL".to_string());
    }
    let missed = seen.fired.iter().filter(|f| f.is_none()).count();
    c.eq(&format!("{id}: every crash fired"), 0, missed);
    if missed > 0 {
        problems.push("CRASH-MISSED".to_string());
    }
    Judged {
        verdict,
        status_rc,
        records: mine.len(),
        connects: connects.join(","),
        agents,
        problems,
    }
}

/// An rke1 point's own checks: one agent container, docker.io fully installed; the number of
/// agent containers.
fn judge_rke1(c: &mut Checks, id: &str, r: &Report, problems: &mut Vec<String>) -> usize {
    let n = crate::driver::agent_containers(r);
    c.eq(&format!("{id}: one rancher-agent container"), 1, n);
    if n != 1 {
        problems.push(format!("AGENTS={n}"));
    }
    // Docker answering is not the package being installed: a dpkg run cut short leaves
    // docker.io half-configured (iF) or half-installed (iHR), and every later apt-get refuses.
    let state = dpkg_state(r, "docker.io");
    c.eq(
        &format!("{id}: docker.io is ii in dpkg"),
        Some("ii"),
        state.as_deref(),
    );
    if state.as_deref() != Some("ii") {
        problems.push(format!(
            "DPKG-docker.io={}",
            state.as_deref().unwrap_or("none")
        ));
    }
    n
}

/// The dpkg state ("ii", "iF"...) of `package` in the report's packages section.
fn dpkg_state(r: &Report, package: &str) -> Option<String> {
    r.section("packages").iter().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some(package)).then(|| w.nth(1).map(str::to_string))?
    })
}

/// The node's userdata: the e2e template, plus the point's ID as rancher.node_name (a
/// system-agent node sends no name by default, and the records are counted per name).
fn point_userdata(template: &str, v: &userdata::Values, id: &str) -> String {
    userdata::render(template, v).replacen(
        "\n  rancher:\n",
        &format!("\n  rancher:\n    node_name: {id}\n"),
        1,
    )
}

struct Campaign {
    opts: CrashOptions,
    host: Host,
    checks: Checks,
    rows: Vec<String>,
    failed_points: usize,
}

const ROW: [usize; 9] = [26, 12, 34, 7, 4, 7, 8, 6, 5];

fn row(cells: [&str; 10]) -> String {
    let mut s = String::new();
    for (cell, w) in cells.iter().zip(ROW) {
        s.push_str(&format!("{cell:<w$} "));
    }
    s.push_str(cells[9]);
    s
}

/// Runs the points; `Ok(true)` when every point converged with no duplicate and no corrupt
/// journal and every crash fired.
pub fn run(opts: CrashOptions, points: &[&Point]) -> Result<bool, DriverError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(DriverError::NotRoot);
    }
    let t_total = std::time::Instant::now();
    let h = &opts.host;
    let host = h.start(opts.binary.as_deref())?;
    println!("    setup done in {}s", t_total.elapsed().as_secs());
    let mut camp = Campaign {
        opts,
        host,
        checks: Checks::default(),
        rows: Vec::new(),
        failed_points: 0,
    };
    for p in points {
        camp.point(p)?;
    }
    camp.finish(t_total.elapsed().as_secs());
    Ok(camp.failed_points == 0 && camp.checks.failed() == 0)
}

impl Campaign {
    fn point(&mut self, point: &Point) -> Result<(), DriverError> {
        let t0 = std::time::Instant::now();
        let work = self.opts.host.work.clone();
        let ud = work.join(format!("{}.user-data", point.id));
        let template = self.opts.host.repo.join("tests/e2e/userdata/node.yaml");
        let roles = if point.mode == Mode::Rke1 {
            "etcd, controlplane, worker"
        } else {
            "worker"
        };
        let v = userdata::Values {
            server: &self.host.server_url,
            token: &self.host.token,
            ca_checksum: &self.host.ca_checksum,
            roles,
            mode: point.mode.as_str(),
            extra: &[],
        };
        let write_err = |source| DriverError::Write {
            path: ud.clone(),
            source,
        };
        let text = std::fs::read_to_string(&template).map_err(write_err)?;
        userdata::write_text(&ud, &point_userdata(&text, &v, point.id)).map_err(write_err)?;
        let mut seen = Seen::default();
        let specs = point.specs.iter().map(|s| Some(*s)).chain([None]);
        for (i, spec) in specs.enumerate() {
            let n = i as u32 + 1;
            let report = self.boot(point, n, spec, &ud, &mut seen)?;
            if n > 1 {
                seen.journals.push(JournalAtBoot::read(&report));
            }
            seen.last = report;
        }
        let records = server::records(&self.host.nodes_json()).unwrap_or_else(|e| {
            seen.notes.push(format!("the server's record: {e}"));
            Vec::new()
        });
        let j = judge(&mut self.checks, point, &seen, &records);
        self.tell(point, &seen, &j, t0.elapsed().as_secs());
        Ok(())
    }

    /// One boot of the point's disk, crashed by `spec` when given.
    fn boot(
        &mut self,
        point: &Point,
        n: u32,
        spec: Option<&str>,
        ud: &Path,
        seen: &mut Seen,
    ) -> Result<Report, DriverError> {
        let work = &self.opts.host.work;
        let serial = work.join(format!("logs/{}-boot{n}.log", point.id));
        let mut append = "bootstrapd.e2e bootstrapd.e2e.journal".to_string();
        match spec {
            Some(s) => {
                println!("==> {}: boot {n} (bootstrapd.crash={s})", point.id);
                append.push_str(&format!(" bootstrapd.crash={s}"));
            }
            None => println!("==> {}: boot {n} (clean)", point.id),
        }
        let b = vm::VmBoot {
            image_env: &self.host.image_env,
            overlay: work.join(format!("{}.qcow2", point.id)),
            fresh: n == 1,
            user_data: Some(ud),
            hostname: point.id,
            append: &append,
            serial: serial.clone(),
            timeout_s: self.opts.boot_timeout_s,
            proxy_only: None,
        };
        let (rc, _) = vm::boot_quiet(&self.opts.host.repo, &b).map_err(DriverError::Vm)?;
        if rc != 0 {
            seen.notes.push(format!("boot {n}: vm.sh status {rc}"));
        }
        let report = Report::load(&serial).unwrap_or_default();
        if spec.is_some() {
            let f = fired_at(&report);
            if f.is_none() {
                for l in report.section("crash").iter().take(3) {
                    println!("    crasher: {l}");
                }
            }
            println!("    fired at: {}", f.as_deref().unwrap_or("MISSED"));
            for l in report
                .section("crash")
                .iter()
                .filter_map(|l| l.strip_prefix("process "))
            {
                let what = l.split_once(": ").map_or(l, |(_, w)| w);
                let what = what.rsplit_once(" uptime=").map_or(what, |(w, _)| w);
                println!(
                    "    process: {}",
                    what.chars().take(150).collect::<String>()
                );
            }
            seen.fired.push(f);
        }
        Ok(report)
    }

    /// The point's line in the log and its row in the table.
    fn tell(&mut self, point: &Point, seen: &Seen, j: &Judged, secs: u64) {
        let result = if j.problems.is_empty() {
            "ok".to_string()
        } else {
            j.problems.join(",")
        };
        if !j.problems.is_empty() {
            self.failed_points += 1;
        }
        let fired: Vec<String> = seen
            .fired
            .iter()
            .map(|f| f.clone().unwrap_or("MISSED".into()))
            .collect();
        let verdict = j.verdict.map_or("-", Verdict::as_str);
        let rc = j.status_rc.map_or("-".to_string(), |r| r.to_string());
        let connects = if j.connects.is_empty() {
            "-"
        } else {
            &j.connects
        };
        let agents = j.agents.map_or("-".to_string(), |a| a.to_string());
        let journals: Vec<String> = seen.journals.iter().map(JournalAtBoot::label).collect();
        println!(
            "    journal at boot: {}; final: verdict={verdict} rc={rc} records={} connects={connects} agents={agents} -> {result}",
            journals.join(" "),
            j.records
        );
        for n in &seen.notes {
            println!("    note: {n}");
        }
        if !j.problems.is_empty() {
            println!("    bootstrapd's journal on the clean boot (errors, last lines):");
            let keys = ["error", "fail", "dpkg", "apt", "interrupt", "refus"];
            let lines: Vec<&String> = seen
                .last
                .section("journal-bootstrapd")
                .iter()
                .filter(|l| keys.iter().any(|k| l.to_lowercase().contains(k)))
                .collect();
            for l in &lines[lines.len().saturating_sub(15)..] {
                println!("      {l}");
            }
            let status = seen.last.section("status");
            for l in &status[status.len().saturating_sub(20)..] {
                println!("      status: {l}");
            }
        }
        let time = format!("{secs}s");
        let records = j.records.to_string();
        self.rows.push(row([
            point.id,
            point.mode.as_str(),
            &fired.join("+"),
            verdict,
            &rc,
            &records,
            connects,
            &agents,
            &time,
            &result,
        ]));
    }

    fn finish(&self, secs: u64) {
        println!();
        println!("crash campaign: {} points, {secs}s", self.rows.len());
        println!(
            "{}",
            row([
                "point", "mode", "fired at", "verdict", "rc", "records", "connects", "agents",
                "time", "result"
            ])
        );
        for r in &self.rows {
            println!("{r}");
        }
        println!("servers' records (hostname generation roles connect_count):");
        for l in server::records(&self.host.nodes_json())
            .map(|r| server::per_node_lines(&r))
            .unwrap_or_default()
        {
            println!("  {l}");
        }
        println!(
            "tally: {} ok, {} not ok",
            self.rows.len() - self.failed_points,
            self.failed_points
        );
        self.checks.summary();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(hostname: &str, count: u64) -> NodeRecord {
        serde_json::from_value(serde_json::json!({
            "name": format!("m-{hostname}"), "generation": "rke1",
            "roles": ["etcd", "controlplane", "worker"], "labels": {}, "taints": [],
            "hostname": hostname, "first_seen": "t", "last_seen": "t", "connect_count": count
        }))
        .expect("record")
    }

    const JOURNAL: &str = r#"{
  "version": 1,
  "verdict": "running",
  "runs": 1,
  "stages": [],
  "progress": {
    "stage": "runtime",
    "step": "runtime.install"
  },
  "notes": [],
  "updated": 7
}"#;

    fn json_lines(text: &str) -> String {
        text.lines()
            .map(|l| format!("@@E2E journal-at-boot| json={l}\n"))
            .collect()
    }

    /// A clean boot's report after the crashes: converged, one agent, docker.io installed.
    fn clean_boot() -> String {
        "@@E2E unit-bootstrapd| Result=success\n\
@@E2E status-json| {\"version\": 1, \"verdict\": \"done\", \"runs\": 3, \"updated\": 9}\n\
@@E2E status-json| rc=0\n\
@@E2E packages| docker.io 20.10.24+dfsg1-1+b3 ii \n\
@@E2E packages| containerd 1.6.20~ds1-1+b1 ii \n\
@@E2E docker-ps| 3f2a1 sharp_x rancher/rancher-agent:v2.6.14 running\n\
@@E2E END boot=3 uptime=90.1\n"
            .to_string()
    }

    #[test]
    fn the_crashers_lines_are_read() {
        let r = Report::parse(
            "@@E2E crash| matched kill,runtime,runtime.install,45 at stage=runtime step=runtime.install uptime=30.1\n\
@@E2E crash| firing kill at stage=register step=node identity uptime=75.2\n\
@@E2E crash| process 412: /usr/bin/dpkg --status-fd 23 uptime=75.3\n",
        );
        assert_eq!(fired_at(&r).as_deref(), Some("register:node_identity"));
        let missed =
            Report::parse("@@E2E crash| missed reset,begin: bootstrapd finished (done) uptime=9\n");
        assert_eq!(fired_at(&missed), None);
    }

    /// Runs the guest's crasher on this machine (CRASHER_DRY: it fires nothing) with SPEC,
    /// then writes a running journal at register/STEP, and returns what the crasher said once
    /// it fired (bounded: a crasher that never fires fails the test instead of hanging it).
    fn crasher_fires(spec: &str, step: &str) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = dir.path().join("state.json");
        let console = dir.path().join("console");
        let script =
            crate::repo_root().join("images/debian12/overlay/usr/libexec/bootstrapd-e2e/crasher");
        let mut child = std::process::Command::new("bash")
            .arg(script)
            .env("CRASHER_JOURNAL", &journal)
            .env("CRASHER_CONSOLE", &console)
            .env("CRASHER_SPEC", spec)
            .env("CRASHER_DRY", "1")
            .spawn()
            .expect("bash runs the crasher");
        // Not a timing assertion: the bound only keeps a broken crasher from hanging the test.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        // The run's first write must come after the crasher noted the runs before it.
        while !std::fs::read_to_string(&console).is_ok_and(|c| c.contains("watching for"))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let running = JOURNAL
            .replace("\"stage\": \"runtime\"", "\"stage\": \"register\"")
            .replace("runtime.install", step);
        let tmp = dir.path().join("state.json.tmp");
        std::fs::write(&tmp, &running).expect("write");
        std::fs::rename(&tmp, &journal).expect("rename");
        while child.try_wait().expect("wait").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::fs::read_to_string(&console).unwrap_or_default()
    }

    #[test]
    fn the_crasher_matches_a_step_and_what_it_becomes() {
        // The register step moves from "registering" to "registering with URL" faster than a
        // poll: the spec's word matches both.
        let said = crasher_fires(
            "kill,register,registering",
            "registering with https://10.0.2.2:8450/",
        );
        assert!(
            said.contains("firing kill at stage=register step=registering with https://"),
            "{said}"
        );
        let exact = crasher_fires("reset,register,node+identity", "node identity");
        assert!(
            exact.contains("firing reset at stage=register step=node identity"),
            "{exact}"
        );
    }

    #[test]
    fn the_journal_at_boot_is_read_as_bootstrapds_journal() {
        let ok = Report::parse(&format!(
            "@@E2E journal-at-boot| stat=600 root:root 410 bytes\n{}",
            json_lines(JOURNAL)
        ));
        assert_eq!(
            JournalAtBoot::read(&ok),
            JournalAtBoot::Ok {
                verdict: Verdict::Running,
                at: "runtime/runtime.install".into()
            }
        );
        assert_eq!(
            JournalAtBoot::read(&ok).label(),
            "ok(running,runtime/runtime.install)"
        );
        let torn = Report::parse(&json_lines(&JOURNAL[..60]));
        assert!(matches!(
            JournalAtBoot::read(&torn),
            JournalAtBoot::Corrupt(_)
        ));
        let empty = Report::parse("@@E2E journal-at-boot| stat=600 root:root 0 bytes\n");
        assert!(matches!(
            JournalAtBoot::read(&empty),
            JournalAtBoot::Corrupt(_)
        ));
        assert_eq!(
            JournalAtBoot::read(&Report::parse("@@E2E journal-at-boot| absent\n")),
            JournalAtBoot::Absent
        );
        assert_eq!(
            JournalAtBoot::read(&Report::parse("")),
            JournalAtBoot::NoReport
        );
    }

    #[test]
    fn a_converged_point_passes() {
        let seen = Seen {
            fired: vec![
                Some("runtime:runtime.install".into()),
                Some("register:node_identity".into()),
            ],
            journals: vec![
                JournalAtBoot::Absent,
                JournalAtBoot::Ok {
                    verdict: Verdict::Running,
                    at: "-/-".into(),
                },
            ],
            notes: vec![],
            last: Report::parse(&clean_boot()),
        };
        let mut c = Checks::default();
        let j = judge(
            &mut c,
            &CI[0],
            &seen,
            &[record("ci-r1-chain", 3), record("other", 1)],
        );
        assert_eq!(c.failures, Vec::<String>::new());
        assert_eq!(c.passed, 6);
        assert_eq!(j.problems, Vec::<String>::new());
        assert_eq!(
            (j.records, j.connects.as_str(), j.agents),
            (1, "3", Some(1))
        );
    }

    #[test]
    fn each_problem_is_named() {
        let last = clean_boot()
            .replace("Result=success", "Result=exit-code")
            .replace(
                "docker.io 20.10.24+dfsg1-1+b3 ii",
                "docker.io 20.10.24+dfsg1-1+b3 iF",
            )
            .replace("\"verdict\": \"done\", ", "\"verdict\": ");
        let seen = Seen {
            fired: vec![None, Some("register:node_identity".into())],
            journals: vec![JournalAtBoot::Corrupt("EOF".into())],
            notes: vec![],
            last: Report::parse(&format!(
                "{last}@@E2E docker-ps| 4b3c2 other rancher/rancher-agent:v2.6.14 exited\n"
            )),
        };
        let mut c = Checks::default();
        let j = judge(
            &mut c,
            &CI[0],
            &seen,
            &[record("ci-r1-chain", 1), record("ci-r1-chain", 1)],
        );
        assert_eq!(
            j.problems,
            [
                "NOT-CONVERGED",
                "RECORDS=2",
                "AGENTS=2",
                "DPKG-docker.io=iF",
                "CORRUPT-JOURNAL",
                "CRASH-MISSED"
            ]
        );
        assert_eq!((c.passed, c.failed()), (0, 6));
    }

    #[test]
    fn system_agent_points_judge_no_runtime() {
        let point = select(&["sa-reset-begin".to_string()]).expect("point")[0];
        let last = "@@E2E unit-bootstrapd| Result=success\n\
@@E2E status-json| {\"version\": 1, \"verdict\": \"done\", \"updated\": 9}\n@@E2E status-json| rc=0\n";
        let seen = Seen {
            fired: vec![Some("begin:".into())],
            last: Report::parse(last),
            ..Seen::default()
        };
        let mut c = Checks::default();
        let j = judge(&mut c, point, &seen, &[record("sa-reset-begin", 2)]);
        assert_eq!(j.agents, None);
        assert_eq!((c.passed, c.failed()), (4, 0));
    }

    #[test]
    fn points_are_selected_and_listed() {
        assert_eq!(select(&[]).expect("all").len(), ALL.len());
        assert_eq!(
            select(&["ci-r1-chain".into()]).expect("ci")[0].specs.len(),
            2
        );
        assert!(select(&["nope".into()]).is_err());
        let l = list();
        assert_eq!(l.len(), 18);
        assert_eq!(
            l[17],
            "ci-r1-chain rke1 kill,runtime,runtime.install,0,/var/lib/dpkg/info/containerd.list \
reset,register"
        );
        let ids: std::collections::BTreeSet<_> = ALL.iter().chain(CI).map(|p| p.id).collect();
        assert_eq!(ids.len(), 18, "ids are unique: each is a node's hostname");
    }

    #[test]
    fn the_node_name_goes_under_rancher() {
        let v = userdata::Values {
            server: "https://s",
            token: "t",
            ca_checksum: "c",
            roles: "worker",
            mode: "rke1",
            extra: &[],
        };
        let text = point_userdata(
            "bootstrapd:\n  roles: [@ROLES@]\n  rancher:\n    server: @SERVER@\n",
            &v,
            "sa-x",
        );
        assert_eq!(
            text,
            "bootstrapd:\n  roles: [worker]\n  rancher:\n    node_name: sa-x\n    server: https://s\n"
        );
    }
}
