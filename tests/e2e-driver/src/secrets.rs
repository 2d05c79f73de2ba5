//! The secrets checks on one boot's report, for the e2e driver's boots (CI) and the secret
//! campaign (`e2e-driver secrets`, secret_campaign.rs) alike: the registration token appears
//! nowhere but in root-owned 0600 files that hold it by design and, for rke1, in the agent
//! container's environment and the container runtime's records of it. The guest side is the
//! report's "secrets" section (images/debian12/overlay/usr/libexec/bootstrapd-e2e/secrets) and
//! the command-line sampler (bootstrapd-e2e-sampler.service). The token is only compared, never
//! printed.

use crate::checks::Checks;
use crate::report::Report;
use crate::scenario::Mode;

/// The places the guest searches that must hold no token.
pub const PLACES: [&str; 6] = [
    "cmdline",
    "journal-this-boot",
    "journal-all-boots",
    "status",
    "status-json",
    "query",
];

/// The guest's hit count for PLACE (`place=NAME hits=N ...`).
pub fn hits(report: &Report, place: &str) -> Option<u64> {
    let prefix = format!("place={place} hits=");
    report.section("secrets").iter().find_map(|l| {
        let rest = l.strip_prefix(&prefix)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `samples=N` of the cmdline place: how often the sampler read /proc/*/cmdline.
fn cmdline_samples(report: &Report) -> u64 {
    report
        .section("secrets")
        .iter()
        .filter(|l| l.starts_with("place=cmdline "))
        .flat_map(|l| l.split_whitespace())
        .find_map(|w| w.strip_prefix("samples=").and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// A file holding the token: `file=MODE OWNER PATH nobody-readable=yes|no`.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenFile {
    pub mode: String,
    pub owner: String,
    pub path: String,
    pub nobody_readable: bool,
}

pub fn token_files(report: &Report) -> Vec<TokenFile> {
    report
        .section("secrets")
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("file=")?;
            let (mode, rest) = rest.split_once(' ')?;
            let (owner, rest) = rest.split_once(' ')?;
            let (path, readable) = rest.rsplit_once(' ')?;
            Some(TokenFile {
                mode: mode.to_string(),
                owner: owner.to_string(),
                path: path.to_string(),
                nobody_readable: readable != "nobody-readable=no",
            })
        })
        .collect()
}

fn is_hex_dir(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container runtime's own copies of the rke1 agent's environment (CATTLE_TOKEN): not
/// bootstrapd's to change short of not passing the token in the environment.
pub fn is_runtime_copy(path: &str) -> bool {
    let in_dir = |prefix: &str, suffix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(suffix))
            .is_some_and(is_hex_dir)
    };
    path == "/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db"
        || in_dir("/var/lib/docker/containers/", "/config.v2.json")
        || in_dir(
            "/run/containerd/io.containerd.runtime.v2.task/moby/",
            "/config.json",
        )
}

/// How many lines of the console log hold the token.
pub fn console_hits(report: &Report, token: &str) -> usize {
    report.console.lines().filter(|l| l.contains(token)).count()
}

/// The assertions for one boot; `label` is "node1 boot 1".
pub fn check(c: &mut Checks, label: &str, report: &Report, token: &str, mode: Mode) {
    let p = format!("{label}: secrets:");
    let token_line = report
        .section("secrets")
        .iter()
        .find(|l| l.starts_with("token="));
    if !token_line.is_some_and(|l| l.starts_with("token=found")) {
        let seen = token_line.map(String::as_str).unwrap_or("no token= line");
        c.fail(&format!("{p} the guest read the token from the seed"), seen);
        return;
    }
    let samples = cmdline_samples(report);
    c.check(
        &format!("{p} /proc/*/cmdline sampled during the run ({samples} samples)"),
        samples >= 10,
        "fewer than 10 samples",
    );
    for place in PLACES {
        c.eq(
            &format!("{p} no token in {place}"),
            Some(0),
            hits(report, place),
        );
    }
    c.eq(
        &format!("{p} no token anywhere on the serial console"),
        0,
        console_hits(report, token),
    );
    let rke1 = mode == Mode::Rke1;
    let files = token_files(report);
    let allowed = |f: &TokenFile| rke1 && is_runtime_copy(&f.path);
    let bad: Vec<String> = files
        .iter()
        .filter(|f| !allowed(f) && (f.mode != "600" || f.owner != "root:root" || f.nobody_readable))
        .map(|f| format!("{} {} {}", f.mode, f.owner, f.path))
        .collect();
    c.eq(
        &format!("{p} files holding the token are 0600 root:root, unreadable to others"),
        "",
        &bad.join(";"),
    );
    let by_design: Vec<&str> = files
        .iter()
        .filter(|f| !allowed(f) && f.mode == "600" && f.owner == "root:root")
        .map(|f| f.path.as_str())
        .collect();
    println!(
        "        (0600 root files holding the token: {})",
        none_or(&by_design.join(" "))
    );
    if rke1 {
        let copies: Vec<String> = files
            .iter()
            .filter(|f| allowed(f))
            .map(|f| {
                format!(
                    "{} {} {} nobody-readable={}",
                    f.mode,
                    f.owner,
                    f.path,
                    yes_no(f.nobody_readable)
                )
            })
            .collect();
        println!(
            "        (the container runtime's copies of the agent's environment: {})",
            none_or(&copies.join("; "))
        );
        c.eq(
            &format!("{p} no token in the agent container's path/args/cmd/entrypoint/labels"),
            Some(0),
            hits(report, "docker-args"),
        );
        let env = hits(report, "docker-env").map_or("none".to_string(), |n| n.to_string());
        println!("        (agent container environment lines holding the token, by design: {env})");
    }
}

/// The places of the campaign's table: the judged ones, then the agent container's.
const TABLE_PLACES: [&str; 2] = ["docker-args", "docker-env"];

/// The campaign's per-place table for one boot: the guest's hit count per place ("-" where the
/// section lacks it), the console's, the files holding the token, then the guest's `hit=` lines.
/// Those are redacted by the guest; any token left in one is replaced here all the same.
pub fn table(report: &Report, token: &str) -> Vec<String> {
    let cell = |place: &str, v: String| format!("  {place:<22} {v}");
    let mut out: Vec<String> = PLACES
        .iter()
        .chain(&TABLE_PLACES)
        .map(|p| {
            cell(
                p,
                hits(report, p).map_or("-".to_string(), |n| n.to_string()),
            )
        })
        .collect();
    out.push(cell(
        "serial-console",
        console_hits(report, token).to_string(),
    ));
    let files: Vec<&String> = report
        .section("secrets")
        .iter()
        .filter(|l| l.starts_with("file="))
        .collect();
    out.push(cell("files", files.len().to_string()));
    let redact = |l: &str| redacted(l, token);
    out.extend(
        files
            .iter()
            .map(|l| format!("    file {}", redact(&l[5..]))),
    );
    out.extend(
        report
            .section("secrets")
            .iter()
            .filter(|l| l.starts_with("hit="))
            .map(|l| format!("    {}", redact(l))),
    );
    out
}

/// `line` with every occurrence of the token replaced by `<TOKEN>`, as the guest shows hits.
pub fn redacted(line: &str, token: &str) -> String {
    if token.is_empty() {
        line.to_string()
    } else {
        line.replace(token, "<TOKEN>")
    }
}

fn none_or(s: &str) -> &str {
    if s.is_empty() { "none" } else { s }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "e2e0123456789abcdef";

    fn report(extra: &str) -> Report {
        let mut s = String::from(
            "@@E2E secrets| token=found length=19\n\
@@E2E secrets| place=cmdline hits=0 samples=250 distinct=80\n\
@@E2E secrets| place=journal-this-boot hits=0\n\
@@E2E secrets| place=journal-all-boots hits=0\n\
@@E2E secrets| place=status hits=0\n\
@@E2E secrets| place=status-json hits=0\n\
@@E2E secrets| place=query hits=0\n\
@@E2E secrets| place=docker-args hits=0 containers=1\n\
@@E2E secrets| place=docker-env hits=1\n\
@@E2E secrets| file=600 root:root /etc/bootstrapd/token nobody-readable=no\n\
@@E2E secrets| file=644 root:root /var/lib/docker/containers/0a1b/config.v2.json nobody-readable=yes\n",
        );
        s.push_str(extra);
        Report::parse(&s)
    }

    #[test]
    fn a_clean_rke1_boot_passes() {
        let mut c = Checks::default();
        check(&mut c, "node2 boot 1", &report(""), TOKEN, Mode::Rke1);
        assert_eq!(c.failures, Vec::<String>::new());
        assert_eq!(c.passed, 10);
    }

    #[test]
    fn runtime_copies_are_allowed_for_rke1_only() {
        let mut c = Checks::default();
        check(&mut c, "n", &report(""), TOKEN, Mode::SystemAgent);
        assert_eq!(c.failed(), 1);
        assert!(c.failures[0].contains("/var/lib/docker/containers/0a1b/config.v2.json"));
        assert!(!is_runtime_copy(
            "/var/lib/docker/containers/zz/config.v2.json"
        ));
        assert!(is_runtime_copy(
            "/run/containerd/io.containerd.runtime.v2.task/moby/ab12/config.json"
        ));
    }

    #[test]
    fn leaks_fail() {
        let leak =
            format!("[  5.1] bootstrapd[312]: token {TOKEN}\n@@E2E secrets| place=query hits=2\n");
        let mut c = Checks::default();
        check(&mut c, "n", &report(&leak), TOKEN, Mode::Rke1);
        // The first place=query line wins (hits=0); the console line counts.
        assert_eq!(c.failures.len(), 1);
        assert!(c.failures[0].contains("serial console"));
        assert!(!c.failures[0].contains(TOKEN));
    }

    #[test]
    fn the_table_counts_every_place_and_lists_files_and_hits() {
        let hit = format!(
            "@@E2E secrets| hit=journal-this-boot: bootstrapd[312]: token {TOKEN}\n\
[  6.0] bootstrapd[312]: again {TOKEN}\n"
        );
        let t = table(&report(&hit), TOKEN);
        let want = [
            "  cmdline                0",
            "  journal-this-boot      0",
            "  journal-all-boots      0",
            "  status                 0",
            "  status-json            0",
            "  query                  0",
            "  docker-args            0",
            "  docker-env             1",
            "  serial-console         2",
            "  files                  2",
            "    file 600 root:root /etc/bootstrapd/token nobody-readable=no",
            "    file 644 root:root /var/lib/docker/containers/0a1b/config.v2.json nobody-readable=yes",
            "    hit=journal-this-boot: bootstrapd[312]: token <TOKEN>",
        ];
        assert_eq!(t, want);
        assert!(t.iter().all(|l| !l.contains(TOKEN)));
    }

    #[test]
    fn the_table_marks_places_the_guest_did_not_report() {
        let r = Report::parse(
            "@@E2E secrets| token=found length=19\n@@E2E secrets| place=cmdline hits=3 samples=2\n",
        );
        let t = table(&r, TOKEN);
        assert_eq!(t[0], "  cmdline                3");
        assert!(t[1..8].iter().all(|l| l.ends_with(" -")), "{t:?}");
        assert_eq!(t[8], "  serial-console         0");
        assert_eq!(t[9], "  files                  0");
        assert_eq!(t.len(), 10);
    }

    #[test]
    fn no_token_in_the_seed_is_one_failure() {
        let r = Report::parse("@@E2E secrets| token=missing (no cidata seed attached)\n");
        let mut c = Checks::default();
        check(&mut c, "n", &r, TOKEN, Mode::Rke1);
        assert_eq!(c.passed, 0);
        assert_eq!(c.failures.len(), 1);
        assert!(c.failures[0].contains("token=missing"));
    }
}
