//! `e2e-driver selinux`: bootstrapd's `host.selinux` on a real enforcing kernel.
//!
//! Boots the SELinux variant of the node image (scripts/build-image.sh --selinux: Debian 12's
//! reference policy, `selinux=1 security=selinux enforcing=1`, labelled at build time) once per
//! case, and checks from outside: the kernel enforces, bootstrapd's facts and its `selinux`
//! finding in `status --json` (typed, bootstrapd's own `Journal`) say what the code promises,
//! and what runs afterwards. Every AVC denial of each boot is printed, with the domains the
//! node's processes ran in. Not part of scripts/test.sh (README, Testing: it costs more than
//! CI's spare time).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use bootstrapd::plan::{Finding, Outcome};
use bootstrapd::state::journal::{Journal, Stage, StageState, Verdict};

use crate::checks::Checks;
use crate::driver::DriverError;
use crate::host::{Host, HostConfig};
use crate::report::Report;
use crate::scenario::Mode;
use crate::{userdata, vm};

/// What must run on the node once bootstrapd is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runs {
    /// bootstrapd stopped before the runtime stage: no Docker, no agent.
    Nothing,
    /// rancher-system-agent.service active.
    SystemAgent,
    /// docker.service active (confined, dockerd_t); the rke1 rancher-agent container created
    /// but never started: runc may not mount /etc/kubernetes into it.
    DockerAgentDenied,
}

/// One boot of the SELinux image.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub mode: Mode,
    /// The userdata's `host.selinux`.
    pub policy: &'static str,
    pub verdict: Verdict,
    /// The outcome of the prepare stage's `selinux` finding.
    pub outcome: Outcome,
    /// The policy packages the finding must name as missing (and no other).
    pub missing: &'static [&'static str],
    pub runs: Runs,
    /// Denials that must be in the boot's audit log: each all of its parts on one AVC line.
    pub denials: &'static [&'static [&'static str]],
    /// The stage that must fail, and what its failed finding's detail must all say.
    pub stage_error: Option<(Stage, &'static [&'static str])>,
}

/// The policy packages bootstrapd knows (plan/host.rs `selinux_packages`).
const POLICY_PACKAGES: [&str; 3] = ["container-selinux", "docker-ce-selinux", "rancher-selinux"];

/// The image carries container-selinux (the reference policy's container and docker modules,
/// images/debian12/selinux) and, like every Debian node, no rancher-selinux: `require` must
/// pass in system-agent mode (the runtime policy is all it checks there) and fail in rke1 mode
/// naming rancher-selinux alone; `ignore` must warn the same and let Docker run, confined by
/// the docker module (dockerd_t), whose policy then denies runc the agent container's
/// /etc/kubernetes mount (container_config_t): the register stage fails on that denial.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "se-require-agent",
            mode: Mode::SystemAgent,
            policy: "require",
            verdict: Verdict::Done,
            outcome: Outcome::Ok,
            missing: &[],
            runs: Runs::SystemAgent,
            denials: &[],
            stage_error: None,
        },
        Case {
            name: "se-require-rke1",
            mode: Mode::Rke1,
            policy: "require",
            verdict: Verdict::Failed,
            outcome: Outcome::Failed,
            missing: &["rancher-selinux"],
            runs: Runs::Nothing,
            denials: &[],
            stage_error: Some((Stage::Prepare, &["; missing rancher-selinux"])),
        },
        Case {
            name: "se-ignore-rke1",
            mode: Mode::Rke1,
            policy: "ignore",
            verdict: Verdict::Failed,
            outcome: Outcome::Warning,
            missing: &["rancher-selinux"],
            runs: Runs::DockerAgentDenied,
            // runc stops at the first of the agent's rslave bind mounts, in the order Docker
            // gives them (it varies): /etc/kubernetes (container_config_t), /var/run, ...
            denials: &[&[
                "denied  { mounton }",
                "comm=\"runc:[2:INIT]\"",
                "/merged/",
                "scontext=system_u:system_r:dockerd_t:s0",
                "permissive=0",
            ]],
            stage_error: Some((
                Stage::Register,
                &[
                    "error mounting \"/",
                    "change mount propagation",
                    "permission denied",
                ],
            )),
        },
    ]
}

/// `e2e-driver selinux`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Work directory; default REPO/build/e2e-selinux.
    #[arg(long)]
    work: Option<PathBuf>,
    /// Only the cases whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Hard limit per boot, seconds.
    #[arg(long, default_value_t = 1200)]
    boot_timeout: u64,
    /// Ports of its own, so that it can run beside the main suite.
    #[arg(long, default_value_t = 18085)]
    apt_port: u16,
    #[arg(long, default_value_t = 8485)]
    rancher_port: u16,
}

pub fn main(a: Args, repo: PathBuf) -> ExitCode {
    let cfg = HostConfig::new(
        &repo,
        a.work,
        "build/e2e-selinux",
        (a.apt_port, a.rancher_port),
        "dev",
    );
    match run(cfg, a.boot_timeout, a.only.as_deref()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("e2e selinux: FAIL: {e}");
            println!("e2e: 0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}

const TEMPLATE: &str = "tests/e2e/userdata/selinux.yaml";

/// Runs the cases (all, or those whose name contains `only`); `Ok(true)` when every check passed.
pub fn run(cfg: HostConfig, boot_timeout_s: u64, only: Option<&str>) -> Result<bool, DriverError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(DriverError::NotRoot);
    }
    let t_total = Instant::now();
    let logs = cfg.work.join("logs");
    std::fs::create_dir_all(&logs).map_err(|source| DriverError::Write {
        path: logs.clone(),
        source,
    })?;
    let host = Host::setup(&cfg)?;
    let mut timings = vec![(
        "host setup (bootstrapd, images, servers)".to_string(),
        t_total.elapsed().as_secs(),
    )];
    let t = Instant::now();
    let image_env = build_image(&cfg)?;
    timings.push((
        "SELinux image (layer cached or built)".into(),
        t.elapsed().as_secs(),
    ));
    let mut checks = Checks::default();
    let selected: Vec<Case> = cases()
        .into_iter()
        .filter(|c| only.is_none_or(|o| c.name.contains(o)))
        .collect();
    if selected.is_empty() {
        checks.fail("--only matches a case", only.unwrap_or(""));
    }
    for case in &selected {
        let (took, report) = boot(&cfg, &host, &image_env, case, boot_timeout_s, &mut checks)?;
        timings.push((format!("{} (qemu start to power-off)", case.name), took));
        if let Some(r) = report {
            check_case(&mut checks, case, &r);
            print_selinux(case.name, &r);
        }
    }
    println!();
    println!("durations:");
    for (what, s) in &timings {
        println!("  {what:<48} {s:>6}s");
    }
    println!("  {:<48} {:>6}s", "total", t_total.elapsed().as_secs());
    checks.summary();
    Ok(checks.failed() == 0)
}

/// scripts/build-image.sh --selinux with the binary and agent archive host_setup made.
fn build_image(cfg: &HostConfig) -> Result<PathBuf, DriverError> {
    let out = cfg.work.join("image-selinux");
    let log = cfg.work.join("logs/image-selinux.log");
    println!("==> SELinux node image ({})", out.display());
    let file = std::fs::File::create(&log).map_err(|source| DriverError::Write {
        path: log.clone(),
        source,
    })?;
    let err = file.try_clone().map_err(|source| DriverError::Write {
        path: log.clone(),
        source,
    })?;
    let status = Command::new(cfg.repo.join("scripts/build-image.sh"))
        .current_dir(&cfg.repo)
        .arg("--selinux")
        .arg("--binary")
        .arg(cfg.work.join("bootstrapd"))
        .arg("--image-archive")
        .arg(cfg.work.join("agent-image.tar"))
        .arg("--out")
        .arg(&out)
        .args(["--apt-url", &format!("http://10.0.2.2:{}/", cfg.apt_port)])
        .stdout(file)
        .stderr(err)
        .status()
        .map_err(|e| DriverError::Build(format!("cannot run scripts/build-image.sh: {e}")))?;
    if !status.success() {
        return Err(DriverError::Build(format!(
            "scripts/build-image.sh --selinux failed (see {})",
            log.display()
        )));
    }
    Ok(out.join("image.env"))
}

/// One fresh boot of the case; the report when the VM powered off cleanly.
fn boot(
    cfg: &HostConfig,
    host: &Host,
    image_env: &Path,
    case: &Case,
    timeout_s: u64,
    checks: &mut Checks,
) -> Result<(u64, Option<Report>), DriverError> {
    println!(
        "==> {}: mode {}, host.selinux: {}",
        case.name,
        case.mode.as_str(),
        case.policy
    );
    let ud = write_userdata(cfg, host, case)?;
    let serial = cfg.work.join("logs").join(format!("{}.log", case.name));
    let b = vm::VmBoot {
        image_env,
        overlay: cfg.work.join(format!("{}.qcow2", case.name)),
        fresh: true,
        user_data: Some(&ud),
        hostname: case.name,
        append: "bootstrapd.e2e",
        serial: serial.clone(),
        timeout_s,
        proxy_only: None,
    };
    let (rc, took) = vm::boot(&cfg.repo, &b).map_err(DriverError::Vm)?;
    let report = Report::load(&serial).unwrap_or_default();
    let name = format!("{}: the VM powered off cleanly", case.name);
    checks.check(
        &name,
        rc == 0,
        format!("vm.sh status {rc}; see {}", serial.display()),
    );
    let complete = format!("{}: report complete", case.name);
    checks.check(
        &complete,
        report.complete(1),
        format!("see {}", serial.display()),
    );
    Ok((took.as_secs(), report.complete(1).then_some(report)))
}

/// The case's userdata (0600: it holds the token), `@SELINUX@` filled first.
fn write_userdata(cfg: &HostConfig, host: &Host, case: &Case) -> Result<PathBuf, DriverError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DriverError::Write { path, source }
    };
    let template = cfg.work.join(format!("{}.template.yaml", case.name));
    let text = std::fs::read_to_string(cfg.repo.join(TEMPLATE))
        .map_err(write_err(&cfg.repo.join(TEMPLATE)))?;
    std::fs::write(&template, text.replace("@SELINUX@", case.policy))
        .map_err(write_err(&template))?;
    let ud = cfg.work.join(format!("{}.user-data", case.name));
    let values = userdata::Values {
        server: &host.server_url,
        token: &host.token,
        ca_checksum: &host.ca_checksum,
        roles: "worker",
        mode: case.mode.as_str(),
        extra: &[],
    };
    userdata::write(&template, &ud, &values).map_err(write_err(&ud))?;
    Ok(ud)
}

/// The prepare stage's `selinux` finding.
pub fn selinux_finding(j: &Journal) -> Option<&Finding> {
    j.stages
        .iter()
        .filter(|s| s.stage == Stage::Prepare)
        .flat_map(|s| &s.findings)
        .find(|f| f.step == "selinux")
}

/// The policy packages a finding's detail gives as missing (what follows "; missing ").
pub fn missing_packages(detail: &str) -> Vec<&'static str> {
    let Some((_, missing)) = detail.split_once("; missing ") else {
        return Vec::new();
    };
    POLICY_PACKAGES
        .into_iter()
        .filter(|p| {
            missing
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .any(|w| w == *p)
        })
        .collect()
}

fn check_case(c: &mut Checks, case: &Case, r: &Report) {
    let p = case.name;
    let enforcing = r.output("se-getenforce");
    c.eq(&format!("{p}: getenforce"), vec!["Enforcing"], enforcing);
    let cmdline = r
        .section("boot")
        .iter()
        .find_map(|l| l.strip_prefix("cmdline="));
    c.check(
        &format!("{p}: kernel command line selinux=1 security=selinux enforcing=1"),
        cmdline.is_some_and(|l| l.contains("selinux=1 security=selinux enforcing=1")),
        format!("{cmdline:?}"),
    );
    // What the finding's verdict rests on, read from the loaded policy itself.
    for (t, present) in [("container_t", true), ("rke_container_t", false)] {
        let want = format!("{t} {}", if present { "present" } else { "absent" });
        c.check(
            &format!("{p}: the loaded policy: {want}"),
            r.any("se-types", |l| l == want),
            format!("{:?}", r.output("se-types")),
        );
    }
    check_journal(c, case, r);
    check_runs(c, case, r);
    check_denials(c, case, r);
}

/// The expected denials are there, and none is bootstrapd's own.
fn check_denials(c: &mut Checks, case: &Case, r: &Report) {
    let p = case.name;
    let avc = r.output("se-avc");
    for parts in case.denials {
        c.check(
            &format!("{p}: AVC denial: {}", parts.join(" ")),
            avc.iter().any(|l| parts.iter().all(|x| l.contains(x))),
            format!("{} denial line(s), none matches", avc.len()),
        );
    }
    c.check(
        &format!("{p}: no AVC denial of bootstrapd"),
        !avc.iter().any(|l| l.contains("comm=\"bootstrapd\"")),
        avc.join(" | "),
    );
}

/// Whether a failed finding of the failed `stage` says all of `what`.
fn stage_error_says(j: &Journal, stage: Stage, what: &[&str]) -> bool {
    j.stages
        .iter()
        .filter(|s| s.stage == stage && s.state == StageState::Failed)
        .flat_map(|s| &s.findings)
        .any(|f| f.outcome == Outcome::Failed && what.iter().all(|w| f.detail.contains(w)))
}

fn check_journal(c: &mut Checks, case: &Case, r: &Report) {
    let p = case.name;
    let journal = match r.status_json() {
        Ok(j) => j,
        Err(e) => return c.fail(&format!("{p}: status --json is a journal"), &e.to_string()),
    };
    c.eq(&format!("{p}: verdict"), case.verdict, journal.verdict);
    let Some(f) = selinux_finding(&journal) else {
        return c.fail(&format!("{p}: prepare stage has a selinux finding"), "none");
    };
    c.eq(&format!("{p}: selinux finding"), case.outcome, f.outcome);
    // The facts as the finding states them: the kernel's mode, then /etc/selinux/config's.
    c.check(
        &format!("{p}: facts: SELinux enforcing now and configured enforcing"),
        f.detail
            .starts_with("SELinux enforcing (configured: enforcing);"),
        &f.detail,
    );
    if let Some((stage, what)) = case.stage_error {
        c.check(
            &format!(
                "{p}: stage {} failed saying {}",
                stage.as_str(),
                what.join(" ... ")
            ),
            stage_error_says(&journal, stage, what),
            format!("{:?}", journal.error),
        );
    }
    if case.outcome == Outcome::Ok {
        c.check(
            &format!("{p}: the finding names container-selinux as installed"),
            f.detail.contains("; installed: container-selinux "),
            &f.detail,
        );
    }
    c.eq(
        &format!("{p}: missing policy packages"),
        case.missing.to_vec(),
        missing_packages(&f.detail),
    );
    if !case.missing.is_empty() {
        let remedy = f.remedy.as_deref().unwrap_or("");
        c.check(
            &format!("{p}: the remedy installs what is missing"),
            case.missing.iter().all(|m| remedy.contains(m))
                && !remedy.contains("container-selinux"),
            remedy,
        );
    }
}

fn check_runs(c: &mut Checks, case: &Case, r: &Report) {
    let p = case.name;
    let active = |unit: &str| r.prop(unit, "ActiveState") == Some("active");
    let docker = case.runs == Runs::DockerAgentDenied;
    let agent = case.runs == Runs::SystemAgent;
    let seen = [
        (
            "rancher-system-agent.service active",
            agent,
            active("unit-rancher-system-agent"),
        ),
        (
            "docker.io installed",
            docker,
            r.any("packages", |l| {
                l.starts_with("docker.io ") && l.trim_end().ends_with(" ii")
            }),
        ),
        ("docker.service active", docker, active("unit-docker")),
        (
            "the rancher-agent container created, not running",
            docker,
            r.any("docker-ps", |l| {
                l.contains(" rancher/rancher-agent:") && l.ends_with(" created")
            }),
        ),
        (
            "dockerd confined (dockerd_t)",
            docker,
            r.any("se-procs", |l| {
                l.contains("system_r:dockerd_t:s0 ") && l.ends_with(" dockerd")
            }),
        ),
    ];
    for (what, want, got) in seen {
        let name = format!("{p}: {}{what}", if want { "" } else { "NOT: " });
        c.eq(&name, want, got);
    }
}

/// The domains and the denials of the boot, for the reader (README, SELinux).
fn print_selinux(name: &str, r: &Report) {
    println!("---- {name}: domains");
    for l in r.output("se-procs") {
        println!("    {l}");
    }
    let avc = r.output("se-avc");
    println!("---- {name}: {} AVC denial line(s)", avc.len());
    for l in avc {
        println!("    {l}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_packages_are_those_after_missing() {
        let d = "SELinux enforcing (configured: enforcing); missing container-selinux (policy for \
                 container processes (container_t)), rancher-selinux (RKE1 with Kubernetes >= \
                 1.22 runs as rke_container_t)";
        assert_eq!(
            missing_packages(d),
            vec!["container-selinux", "rancher-selinux"]
        );
        let ok = "SELinux enforcing (configured: enforcing); installed: container-selinux 2.2";
        assert_eq!(missing_packages(ok), Vec::<&str>::new());
        // A longer word that contains a package name is not the package.
        assert_eq!(
            missing_packages("x; missing container-selinux-extra"),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn require_passes_for_the_agent_and_fails_for_rke1_on_rancher_selinux_alone() {
        let cs = cases();
        let of = |mode, policy| {
            cs.iter()
                .find(|c| c.mode == mode && c.policy == policy)
                .expect("case")
        };
        let agent = of(Mode::SystemAgent, "require");
        assert_eq!((agent.verdict, agent.outcome), (Verdict::Done, Outcome::Ok));
        assert!(agent.missing.is_empty());
        let (req, ign) = (of(Mode::Rke1, "require"), of(Mode::Rke1, "ignore"));
        assert_eq!(
            (req.verdict, req.outcome, req.runs),
            (Verdict::Failed, Outcome::Failed, Runs::Nothing)
        );
        assert_eq!(
            (ign.outcome, ign.runs),
            (Outcome::Warning, Runs::DockerAgentDenied)
        );
        assert_eq!(req.missing, ["rancher-selinux"]);
        assert_eq!(req.missing, ign.missing);
    }

    /// A denial line as the report's se-avc section carries it (from a real boot).
    const MOUNTON: &str = "avc:  denied  { mounton } for  pid=756 comm=\"runc:[2:INIT]\" path=\"/var/lib/docker/overlay2/4df3/merged/etc/kubernetes\" dev=\"vda\" ino=131592 scontext=system_u:system_r:dockerd_t:s0 tcontext=system_u:object_r:container_config_t:s0 tclass=dir permissive=0";

    fn report(avc: &[&str], journal: &str) -> Report {
        let mut text = String::new();
        for l in avc {
            text.push_str(&format!("@@E2E se-avc| {l}\n"));
        }
        text.push_str("@@E2E se-avc| rc=0\n");
        for l in journal.lines() {
            text.push_str(&format!("@@E2E status-json| {l}\n"));
        }
        text.push_str("@@E2E status-json| rc=1\n");
        Report::parse(&text)
    }

    #[test]
    fn the_rke1_denial_is_matched_and_a_bootstrapd_denial_fails() {
        let case = cases()
            .into_iter()
            .find(|c| c.name == "se-ignore-rke1")
            .expect("case");
        let mut c = Checks::default();
        check_denials(&mut c, &case, &report(&[MOUNTON], "{}"));
        assert_eq!((c.passed, c.failed()), (2, 0), "{:?}", c.failures);
        // The same line in permissive mode is not the denial that stops the agent.
        let permissive = MOUNTON.replace("permissive=0", "permissive=1");
        let own = "avc:  denied  { read } for  pid=9 comm=\"bootstrapd\" scontext=x";
        let mut c = Checks::default();
        check_denials(&mut c, &case, &report(&[&permissive, own], "{}"));
        assert_eq!((c.passed, c.failed()), (0, 2), "{:?}", c.failures);
    }

    #[test]
    fn the_stage_error_is_the_failed_stages_failed_finding() {
        let json = r#"{"version": 1, "verdict": "failed", "updated": 1, "stages": [
            {"stage": "prepare", "state": "done", "started": 1, "findings": [
              {"step": "selinux", "outcome": "warning", "detail": "error mounting \"/etc/kubernetes\" (not this one)"}]},
            {"stage": "register", "state": "failed", "started": 2, "findings": [
              {"step": "register", "outcome": "failed", "detail": "runc: error mounting \"/etc/kubernetes\" to rootfs: permission denied"}]}]}"#;
        let j: Journal = serde_json::from_str(json).expect("journal");
        let what = ["error mounting \"/", "permission denied"];
        assert!(stage_error_says(&j, Stage::Register, &what));
        // Every part must be there.
        assert!(!stage_error_says(
            &j,
            Stage::Register,
            &["error mounting", "ENOSPC"]
        ));
        // A warning in a stage that did not fail does not count.
        assert!(!stage_error_says(&j, Stage::Prepare, &what[..1]));
    }

    #[test]
    fn the_finding_is_read_from_the_prepare_stage() {
        let json = r#"{"version": 1, "verdict": "failed", "updated": 1, "stages": [
            {"stage": "prepare", "state": "failed", "started": 1, "findings": [
              {"step": "firewalld", "outcome": "changed", "detail": "masked"},
              {"step": "selinux", "outcome": "failed", "detail": "SELinux enforcing (configured: enforcing); missing rancher-selinux (x)",
               "remedy": "install them: apt-get install -y rancher-selinux, or set host.selinux: install"}]}]}"#;
        let j: Journal = serde_json::from_str(json).expect("journal");
        let f = selinux_finding(&j).expect("finding");
        assert_eq!(f.outcome, Outcome::Failed);
        assert_eq!(missing_packages(&f.detail), vec!["rancher-selinux"]);
    }
}
