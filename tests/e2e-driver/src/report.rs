//! The report bootstrapd-e2e.service prints on the serial console
//! (images/debian12/overlay/usr/libexec/bootstrapd-e2e/report): `@@E2E NAME| line` sections,
//! `@@E2E END boot=N uptime=U`, mixed with kernel and systemd output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bootstrapd::state::journal::Journal;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("section {0} is missing from the report")]
    MissingSection(&'static str),
    #[error("status --json is not a bootstrapd journal: {0}")]
    StatusJson(#[source] serde_json::Error),
}

/// The console text without carriage returns and terminal escapes: systemd's status output can
/// leave an `ESC[K` glued to the start of the next line the report prints.
pub fn clean(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\u{1b}' if chars.peek() == Some(&'[') => {
                chars.next();
                // CSI: parameters and intermediates up to a final letter.
                for f in chars.by_ref() {
                    if f.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// One boot's report, by section.
#[derive(Debug, Default, Clone)]
pub struct Report {
    sections: BTreeMap<String, Vec<String>>,
    /// N of the `@@E2E END boot=N` line: the report ran to its end.
    pub end_boot: Option<u32>,
    /// The whole cleaned console log (the secrets check searches all of it).
    pub console: String,
}

impl Report {
    pub fn parse(raw: &str) -> Report {
        let console = clean(raw);
        let mut report = Report::default();
        for line in console.lines() {
            let Some(rest) = line.strip_prefix("@@E2E ") else {
                continue;
            };
            if let Some(end) = rest.strip_prefix("END boot=") {
                let n = end.split_whitespace().next().unwrap_or("");
                report.end_boot = n.parse().ok().or(report.end_boot);
            } else if let Some((name, text)) = rest.split_once("| ") {
                report
                    .sections
                    .entry(name.to_string())
                    .or_default()
                    .push(text.to_string());
            } else if let Some(name) = rest.strip_suffix('|') {
                // An empty output line: "@@E2E NAME| " after a trailing-space trim.
                report
                    .sections
                    .entry(name.to_string())
                    .or_default()
                    .push(String::new());
            }
        }
        report.console = console;
        report
    }

    pub fn load(path: &Path) -> Result<Report, ReportError> {
        let bytes = std::fs::read(path).map_err(|source| ReportError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Report::parse(&String::from_utf8_lossy(&bytes)))
    }

    /// Whether the report of boot `n` ran to its end.
    pub fn complete(&self, n: u32) -> bool {
        self.end_boot == Some(n)
    }

    /// The lines of one section (empty when absent).
    pub fn section(&self, name: &str) -> &[String] {
        self.sections.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The first value of `KEY=VALUE` in a section (systemctl show output).
    pub fn prop(&self, section: &str, key: &str) -> Option<&str> {
        self.section(section)
            .iter()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    }

    /// A monotonic timestamp property, in microseconds (0 when absent: never entered).
    pub fn usec(&self, section: &str, key: &str) -> u64 {
        self.prop(section, key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The exit status of the section's command (the report's last `rc=N` line).
    pub fn rc(&self, section: &str) -> Option<i32> {
        self.section(section)
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("rc=").and_then(|v| v.parse().ok()))
    }

    /// The section's command output without its `rc=N` line.
    pub fn output(&self, section: &str) -> Vec<&str> {
        let lines = self.section(section);
        let body = match lines.last() {
            Some(l) if l.starts_with("rc=") => &lines[..lines.len() - 1],
            _ => lines,
        };
        body.iter().map(String::as_str).collect()
    }

    /// `bootstrapd status --json`, as the agent's own type.
    pub fn status_json(&self) -> Result<Journal, ReportError> {
        if !self.sections.contains_key("status-json") {
            return Err(ReportError::MissingSection("status-json"));
        }
        let text = self.output("status-json").join("\n");
        serde_json::from_str(&text).map_err(ReportError::StatusJson)
    }

    /// Whether some line of the section satisfies `pred`.
    pub fn any(&self, section: &str, pred: impl Fn(&str) -> bool) -> bool {
        self.section(section).iter().any(|l| pred(l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootstrapd::state::journal::{Stage, StageState, Verdict};

    /// A trimmed console log of a real boot: kernel and systemd lines, a status line's escape
    /// glued in front of a report line, carriage returns.
    const SAMPLE: &str = "[    0.000000] Linux version 6.1.0-28-amd64\r\n\
[  OK  ] Started bootstrapd.service.\r\n\
@@E2E BEGIN boot=1 uptime=41.20\r\n\
@@E2E unit-bootstrapd| LoadState=loaded\r\n\
\x1b[K@@E2E unit-bootstrapd| ActiveState=active\r\n\
@@E2E unit-bootstrapd| Result=success\r\n\
@@E2E unit-bootstrapd| ExecMainStartTimestampMonotonic=14200311\r\n\
@@E2E unit-bootstrapd| rc=0\r\n\
@@E2E status-json| {\n\
@@E2E status-json|   \"version\": 1,\n\
@@E2E status-json|   \"verdict\": \"done\",\n\
@@E2E status-json|   \"runs\": 1,\n\
@@E2E status-json|   \"stages\": [\n\
@@E2E status-json|     { \"stage\": \"register\", \"state\": \"done\", \"started\": 5, \"finished\": 9 }\n\
@@E2E status-json|   ],\n\
@@E2E status-json|   \"notes\": [],\n\
@@E2E status-json|   \"updated\": 9\n\
@@E2E status-json| }\n\
@@E2E status-json| rc=0\n\
@@E2E ordering-cycle| rc=1\n\
\x1b[0;32m@@E2E lsmod| overlay               151552  0\x1b[0m\n\
@@E2E END boot=1 uptime=80.02\r\n";

    #[test]
    fn clean_strips_carriage_returns_and_escapes() {
        assert_eq!(clean("a\r\n\x1b[Kb\x1b[0;32mc\x1b[0m"), "a\nbc");
        // A lone ESC that starts no CSI is kept.
        assert_eq!(clean("x\x1by"), "x\x1by");
    }

    #[test]
    fn sections_props_and_end() {
        let r = Report::parse(SAMPLE);
        assert!(r.complete(1));
        assert!(!r.complete(2));
        assert_eq!(r.prop("unit-bootstrapd", "LoadState"), Some("loaded"));
        // The line behind ESC[K is found.
        assert_eq!(r.prop("unit-bootstrapd", "ActiveState"), Some("active"));
        assert_eq!(
            r.usec("unit-bootstrapd", "ExecMainStartTimestampMonotonic"),
            14_200_311
        );
        assert_eq!(r.usec("unit-firewalld", "ActiveEnterTimestampMonotonic"), 0);
        assert_eq!(r.rc("ordering-cycle"), Some(1));
        assert_eq!(r.output("ordering-cycle"), Vec::<&str>::new());
        assert!(r.any("lsmod", |l| l.starts_with("overlay ")));
        assert!(r.section("absent").is_empty());
    }

    #[test]
    fn status_json_is_the_journal() {
        let r = Report::parse(SAMPLE);
        assert_eq!(r.rc("status-json"), Some(0));
        let j = r.status_json().expect("journal");
        assert_eq!(j.verdict, Verdict::Done);
        assert_eq!(j.stages[0].stage, Stage::Register);
        assert_eq!(j.stages[0].state, StageState::Done);
    }

    #[test]
    fn status_json_errors_are_typed() {
        let r = Report::parse("@@E2E status-json| {\"verdict\": \n@@E2E status-json| rc=1\n");
        assert!(matches!(r.status_json(), Err(ReportError::StatusJson(_))));
        let r = Report::parse("nothing\n");
        assert!(matches!(
            r.status_json(),
            Err(ReportError::MissingSection("status-json"))
        ));
        assert_eq!(r.end_boot, None);
    }

    #[test]
    fn a_cut_report_is_not_complete() {
        let cut = SAMPLE.replace("@@E2E END boot=1 uptime=80.02", "@@E2E END bo");
        assert!(!Report::parse(&cut).complete(1));
    }
}
