//! A run that dies (OOM kill, SIGKILL, power loss) must not leave "running" forever: the
//! journal names the run's process and boot, and `status` reports a dead run as failed, so
//! `status --wait` returns without a timeout.

use std::process::Command;

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string()
}

/// Field 22 of /proc/PID/stat: the process's start time in clock ticks since boot.
fn start_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(19).unwrap().parse().unwrap()
}

/// A journal as `run` leaves it mid-stage, owned by `pid` on boot `boot`.
fn write_running_journal(root: &std::path::Path, pid: u32, boot: &str, ticks: u64) {
    let dir = root.join("var/lib/bootstrapd");
    std::fs::create_dir_all(&dir).unwrap();
    let j = serde_json::json!({
        "version": 1,
        "verdict": "running",
        "instance_id": "i-dead",
        "datasource": "nocloud",
        "runs": 1,
        "stages": [
            {"stage": "fetch", "state": "done", "started": 1, "finished": 1, "findings": []},
            {"stage": "validate", "state": "done", "started": 1, "finished": 1, "findings": []},
            {"stage": "prepare", "state": "running", "started": 2, "findings": []}
        ],
        "progress": {"stage": "prepare", "step": "firewalld"},
        "owner": {"pid": pid, "boot_id": boot, "start_ticks": ticks},
        "notes": [],
        "updated": 2
    });
    std::fs::write(
        dir.join("state.json"),
        serde_json::to_vec_pretty(&j).unwrap(),
    )
    .unwrap();
}

fn status(root: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bootstrapd"))
        .arg("--root")
        .arg(root)
        .arg("status")
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_killed_run_is_reported_failed_and_status_wait_returns() {
    let d = tempfile::tempdir().unwrap();
    let mut child = Command::new("sleep").arg("600").spawn().unwrap();
    let pid = child.id();
    write_running_journal(d.path(), pid, &boot_id(), start_ticks(pid));

    // Alive: still running.
    let (code, out) = status(d.path(), &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("status: running"), "{out}");

    // SIGKILL, as the OOM killer does: no chance to write the journal.
    child.kill().unwrap();
    child.wait().unwrap();
    // The bound only keeps a regression from hanging the test run; a dead run must be
    // reported at once, and its exit code says which happened.
    let (code, out) = status(d.path(), &["--wait", "--timeout", "20"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("status: failed"), "{out}");
    assert!(out.contains(&format!("pid {pid}")), "{out}");
    assert!(out.contains("stage prepare"), "{out}");
    assert!(out.contains("stage 3 of 5  prepare   failed"), "{out}");

    let (code, json) = status(d.path(), &["--json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["verdict"], "failed");
}

#[test]
fn a_run_of_an_earlier_boot_is_dead_even_if_its_pid_is_taken() {
    let d = tempfile::tempdir().unwrap();
    // Power loss: the pid now belongs to someone else (this test), on another boot.
    let me = std::process::id();
    write_running_journal(
        d.path(),
        me,
        "00000000-0000-0000-0000-000000000000",
        start_ticks(me),
    );
    let (code, out) = status(d.path(), &["--wait", "--timeout", "20"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("boot 00000000-0000-0000-0000-000000000000"),
        "{out}"
    );

    // Same boot, reused pid: the start time tells them apart.
    write_running_journal(d.path(), me, &boot_id(), start_ticks(me) + 1);
    let (code, out) = status(d.path(), &[]);
    assert_eq!(code, 1, "{out}");
}
