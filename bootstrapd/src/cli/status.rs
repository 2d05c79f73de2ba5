use std::io::{IsTerminal, Write};
use std::time::Duration;

use crate::fsutil::HostRoot;
use crate::plan::Outcome;
use crate::state::{self, Journal, Stage, StageState, Verdict};

use super::CliResult;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Wait until the run is over (shows live progress on a terminal).
    #[arg(long)]
    pub wait: bool,
    /// Print the journal as JSON.
    #[arg(long)]
    pub json: bool,
    /// With --wait: give up after this many seconds (exit 2).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
}

pub async fn run(root: &HostRoot, args: &Args) -> CliResult {
    let mut journal = state::load(root)?;
    if args.wait {
        let tty = std::io::stderr().is_terminal();
        let start = std::time::Instant::now();
        let mut last_line = String::new();
        while !journal.verdict.is_final() {
            if let Some(t) = args.timeout
                && start.elapsed() >= Duration::from_secs(t)
            {
                break;
            }
            let line = progress_line(&journal);
            if tty && line != last_line {
                eprint!("\r\x1b[2K{line}");
                let _ = std::io::stderr().flush();
                last_line = line;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            journal = state::load(root)?;
        }
        if tty && !last_line.is_empty() {
            eprintln!();
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&journal)?);
    } else {
        print!("{}", render(&journal));
        if let Some(rec) = state::network::load(root)? {
            print!("{}", network_line(&rec));
        }
    }
    Ok(journal.verdict.exit_code())
}

/// What the early local stage did, last: it is not a stage of the journal (it runs before an
/// instance is known), and a record of another boot is labelled so.
pub fn network_line(rec: &state::network::NetworkRecord) -> String {
    let when = if rec.boot_id == state::current_boot_id() {
        ""
    } else {
        " (an earlier boot)"
    };
    let state = match rec.state {
        state::network::NetworkState::Failed => "failed",
        state::network::NetworkState::Running => "unfinished",
        _ => "ok",
    };
    let mut out = format!("network (local stage{when}): {state}: {}\n", rec.summary());
    for line in &rec.host {
        out.push_str(&format!("host (local stage{when}): {line}\n"));
    }
    out
}

pub fn progress_line(j: &Journal) -> String {
    match &j.progress {
        Some(p) if p.step.is_empty() => format!(
            "stage {} of {}: {}",
            p.stage.number(),
            Stage::ALL.len(),
            p.stage.as_str()
        ),
        Some(p) => format!(
            "stage {} of {}: {}: {}",
            p.stage.number(),
            Stage::ALL.len(),
            p.stage.as_str(),
            p.step
        ),
        None => format!("status: {}", j.verdict.as_str()),
    }
}

/// The human view: verdict, stages, then every finding that is not plain "ok".
pub fn render(j: &Journal) -> String {
    let mut out = format!("status: {}\n", j.verdict.as_str());
    if let Some(id) = &j.instance_id {
        out += &format!(
            "instance: {id} (datasource {}), runs: {}\n",
            j.datasource.as_deref().unwrap_or("?"),
            j.runs
        );
    }
    if j.verdict == Verdict::Running {
        out += &format!("now: {}\n", progress_line(j));
    }
    for note in &j.notes {
        out += &format!("note: {note}\n");
    }
    if let Some(e) = &j.error {
        out += &format!("error: {e}\n");
    }
    if let Some(r) = &j.resources {
        out += &format!(
            "last run: {:.1} s, bootstrapd's own CPU {:.2} s, peak RSS {:.1} MiB\n",
            r.wall_ms as f64 / 1000.0,
            (r.cpu_user_ms + r.cpu_system_ms) as f64 / 1000.0,
            r.peak_rss_kib as f64 / 1024.0
        );
    }
    for stage in Stage::ALL {
        let Some(rec) = j.stages.iter().find(|r| r.stage == stage) else {
            continue;
        };
        let state = match rec.state {
            StageState::Running => "running",
            StageState::Done => "done",
            StageState::Failed => "failed",
        };
        let mut counts: Vec<(Outcome, usize)> = Vec::new();
        for f in &rec.findings {
            match counts.iter_mut().find(|(o, _)| *o == f.outcome) {
                Some((_, n)) => *n += 1,
                None => counts.push((f.outcome, 1)),
            }
        }
        let summary = counts
            .iter()
            .map(|(o, n)| format!("{n} {}", o.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let took = rec
            .finished
            .map(|f| format!(" in {}s", f.saturating_sub(rec.started)))
            .unwrap_or_default();
        out += &format!(
            "stage {} of {}  {:<9} {state}{took}{}\n",
            stage.number(),
            Stage::ALL.len(),
            stage.as_str(),
            if summary.is_empty() {
                String::new()
            } else {
                format!("  ({summary})")
            }
        );
        for f in &rec.findings {
            out += &format!(
                "    {:<13} {:<22} {}\n",
                f.outcome.as_str(),
                f.step,
                f.detail
            );
            if let Some(r) = &f.remedy {
                out += &format!("    {:<13} {:<22} remedy: {r}\n", "", "");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Finding;

    #[test]
    fn render_shows_stages_findings_and_remedies() {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().to_path_buf()));
        let mut s = state::Store::open(&root).unwrap();
        s.begin("i-9", "nocloud", "h").unwrap();
        s.start_stage(Stage::Prepare).unwrap();
        s.finish_stage(
            Stage::Prepare,
            vec![
                Finding::new("firewalld", Outcome::Changed, "stopped, disabled, masked"),
                Finding::new("selinux", Outcome::Failed, "container-selinux missing")
                    .with_remedy("dnf install container-selinux"),
            ],
            None,
        )
        .unwrap();
        let text = render(&s.journal);
        assert!(text.starts_with("status: failed\n"), "{text}");
        assert!(text.contains("instance: i-9 (datasource nocloud), runs: 1"));
        assert!(text.contains("stage 3 of 5  prepare   failed"), "{text}");
        assert!(text.contains("(1 changed, 1 failed)"), "{text}");
        assert!(text.contains("remedy: dnf install container-selinux"));
        assert_eq!(s.journal.verdict.exit_code(), 1);
    }
}
