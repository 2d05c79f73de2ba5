//! `e2e-driver packages`: the static binary, the .deb and the .rpm (scripts/build-packages.sh)
//! and what they carry, without a VM: `dpkg -c` / `rpm -qlp` list the binary, the unit, the
//! config and the schema; the config is a conffile / %config(noreplace); the binary is static,
//! the same bytes in both packages, and runs (--version); the packaged config is accepted by
//! bootstrapd and a broken one is rejected with its position; the packaged schema is the one
//! `bootstrapd schema` prints. (Installing the .deb for real, maintainer scripts included, is
//! `e2e-driver qcow2`'s job.) Records the binary size (WORK/binary-size.txt).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::checks::Checks;
use crate::driver::DriverError;
use crate::host::parse_env;
use crate::tool;

/// What the packages carry (as `dpkg -c` names them, without the leading ".").
const FILES: [&str; 6] = [
    "/usr/bin/bootstrapd",
    "/usr/lib/systemd/system/bootstrapd.service",
    "/usr/lib/systemd/system/bootstrapd-local.service",
    "/usr/lib/systemd/system/bootstrapd-local-host.service",
    "/etc/bootstrapd/bootstrapd.toml",
    "/usr/share/bootstrapd/bootstrapd.schema.json",
];
const CONFIG: &str = "/etc/bootstrapd/bootstrapd.toml";

/// Every key of the config, each in the packaged file as a commented default.
const CONFIG_KEYS: [&str; 10] = [
    "datasource",
    "imds_v1_fallback",
    "max_userdata_bytes",
    "datasource_deadline_ms",
    "attempt_ms",
    "initial_backoff_ms",
    "max_backoff_ms",
    "max_attempts",
    "ec2",
    "openstack",
];

/// bash: the host tools (scripts/host-tools.sh: commands, not package names), then the build.
const BUILD: &str = r#"set -e
. scripts/host-tools.sh
host_tools_need packages cpio:cpio file:file rpm:rpm rpm2cpio:rpm dpkg-deb:dpkg-dev python3:python3
scripts/build-packages.sh --profile "$1" --out "$2"
"#;

/// Runs the test; `Ok(true)` when every check passed.
pub fn run(repo: &Path, work: &Path, profile: &str) -> Result<bool, DriverError> {
    let t0 = Instant::now();
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DriverError::Write { path, source }
    };
    std::fs::create_dir_all(work).map_err(werr(work))?;
    let pkg = work.join("pkg");
    let ran = tool::run(
        Command::new("bash")
            .current_dir(repo)
            .args(["-c", BUILD, "build-packages", profile])
            .arg(&pkg),
    )?;
    std::fs::write(
        work.join("build.log"),
        format!("{}{}", ran.stdout, ran.stderr),
    )
    .map_err(werr(work))?;
    print!("{}", ran.stdout);
    if ran.code != 0 {
        eprint!("{}", ran.stderr);
        return Err(DriverError::Build(format!(
            "scripts/build-packages.sh failed (exit {}; see {})",
            ran.code,
            work.join("build.log").display()
        )));
    }
    let env = parse_env(&std::fs::read_to_string(pkg.join("packages.env")).map_err(werr(&pkg))?);
    let var = |k: &str| env.get(k).cloned().unwrap_or_default();
    let t_build = t0.elapsed().as_secs();
    let mut c = Checks::default();
    let (deb, rpm, arch) = (var("DEB"), var("RPM"), var("ARCH"));
    check_deb(&mut c, &deb, &arch)?;
    check_rpm(&mut c, &rpm, &arch)?;
    let x = work.join("x");
    let _ = std::fs::remove_dir_all(&x);
    tool::stdout(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
    check_binary(&mut c, &x, &rpm, &var("VERSION"), work)?;
    check_config(&mut c, &x, work)?;
    let size: u64 = var("BINARY_SIZE").parse().unwrap_or(0);
    std::fs::write(work.join("binary-size.txt"), format!("{size}\n")).map_err(werr(work))?;
    println!();
    println!(
        "binary size: {size} bytes ({} KiB), {arch} musl, profile {profile}",
        size / 1024
    );
    println!(
        "durations: build-packages.sh {t_build}s, total {}s",
        t0.elapsed().as_secs()
    );
    c.summary();
    Ok(c.failed() == 0)
}

/// A `dpkg-deb -c` line for `path`: "MODE OWNER SIZE DATE TIME ./PATH".
fn deb_entry<'a>(listing: &'a str, path: &str) -> Option<&'a str> {
    let want = format!(" .{path}");
    listing.lines().find(|l| l.ends_with(&want))
}

/// The Debian architecture of a build target's.
fn deb_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn check_deb(c: &mut Checks, deb: &str, arch: &str) -> Result<(), DriverError> {
    println!("==> .deb: {deb}");
    let listing = tool::stdout(Command::new("dpkg-deb").args(["-c", deb]))?;
    for l in listing.lines() {
        println!("    {l}");
    }
    for f in FILES {
        c.check(
            &format!("deb carries .{f}"),
            deb_entry(&listing, f).is_some(),
            "not listed",
        );
    }
    let bin = deb_entry(&listing, FILES[0]).unwrap_or("");
    c.check(
        "deb: the binary is executable (rwx for root)",
        bin.starts_with("-rwxr-xr-x root/root "),
        bin,
    );
    let conffiles = tool::run(Command::new("dpkg-deb").args(["-I", deb, "conffiles"]))?;
    c.eq(
        "deb: the config is a conffile",
        CONFIG,
        conffiles.stdout.trim_end(),
    );
    let field = |f: &str| tool::stdout(Command::new("dpkg-deb").args(["-f", deb, f]));
    c.eq(
        "deb: package name",
        "bootstrapd",
        field("Package")?.trim_end(),
    );
    c.eq(
        "deb: architecture from the build target",
        deb_arch(arch),
        field("Architecture")?.trim_end(),
    );
    Ok(())
}

fn check_rpm(c: &mut Checks, rpm: &str, arch: &str) -> Result<(), DriverError> {
    println!("==> .rpm: {rpm}");
    let q = |args: &[&str]| tool::run(Command::new("rpm").args(args).arg(rpm));
    let listing = q(&["-qlp"])?.stdout;
    for l in listing.lines() {
        println!("    {l}");
    }
    for f in FILES {
        c.check(
            &format!("rpm carries {f}"),
            listing.lines().any(|l| l == f),
            "not listed",
        );
    }
    c.eq(
        "rpm: the config is %config(noreplace)",
        CONFIG,
        q(&["-qcp"])?.stdout.trim_end(),
    );
    c.eq(
        "rpm: architecture",
        arch,
        q(&["-qp", "--qf", "%{ARCH}"])?.stdout.as_str(),
    );
    let so: Vec<String> = q(&["-qRp"])?
        .stdout
        .lines()
        .filter(|l| l.contains(".so"))
        .map(str::to_string)
        .collect();
    c.eq(
        "rpm: no shared-library requirements (static binary)",
        "",
        so.join(";").as_str(),
    );
    Ok(())
}

/// `file`'s verdict on a static binary (static-pie is what musl's default build gives).
fn is_static(file_output: &str) -> bool {
    file_output.contains("statically linked") || file_output.contains("static-pie linked")
}

fn check_binary(
    c: &mut Checks,
    x: &Path,
    rpm: &str,
    version: &str,
    work: &Path,
) -> Result<(), DriverError> {
    println!("==> the binary");
    let bin = x.join("usr/bin/bootstrapd");
    let file = tool::stdout(Command::new("file").arg(&bin))?;
    c.check("static binary", is_static(&file), file.trim_end());
    let v = tool::run(Command::new(&bin).arg("--version"))?;
    c.check(
        "it runs: --version",
        v.stdout.starts_with(&format!("bootstrapd {version}")),
        v.stdout.trim_end(),
    );
    let rpmx = work.join("rpmx");
    let _ = std::fs::remove_dir_all(&rpmx);
    std::fs::create_dir_all(&rpmx).map_err(|source| DriverError::Write {
        path: rpmx.clone(),
        source,
    })?;
    // A pipe between two tools: plumbing, for bash.
    tool::stdout(Command::new("bash").current_dir(&rpmx).args([
        "-c",
        "set -o pipefail; rpm2cpio \"$1\" | cpio -idm --quiet ./usr/bin/bootstrapd",
        "rpm2cpio",
        rpm,
    ]))?;
    let same = tool::same_bytes(&bin, &rpmx.join("usr/bin/bootstrapd"));
    c.check(
        "the .deb's and the .rpm's binary are the same bytes",
        same,
        "they differ (or one is missing)",
    );
    Ok(())
}

/// Uncomments every `#key = value` default line but `datasource` (its default is a list of
/// every source, which the file spells as a comment only).
fn uncomment_defaults(toml: &str) -> String {
    let mut out = String::new();
    for line in toml.lines() {
        let uncommented = line.strip_prefix('#').filter(|rest| {
            rest.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            })
        });
        let l = uncommented.unwrap_or(line);
        if !l.starts_with("datasource = ") {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

fn has_commented_key(toml: &str, key: &str) -> bool {
    let prefix = format!("#{key} = ");
    toml.lines().any(|l| l.starts_with(&prefix))
}

/// `bootstrapd --root Q query` with `toml` as Q's config: exit status and stderr. `query`
/// loads the config before looking for userdata (none here: exit 2); a config error is exit
/// 1 naming the file and line:col.
fn query_with(bin: &Path, qroot: &Path, toml: &str) -> Result<(i32, String), DriverError> {
    let cfg = qroot.join("etc/bootstrapd/bootstrapd.toml");
    std::fs::write(&cfg, toml).map_err(|source| DriverError::Write { path: cfg, source })?;
    let ran = tool::run(Command::new(bin).arg("--root").arg(qroot).arg("query"))?;
    Ok((ran.code, ran.stderr))
}

fn check_config(c: &mut Checks, x: &Path, work: &Path) -> Result<(), DriverError> {
    let bin = x.join("usr/bin/bootstrapd");
    let packaged = x.join("etc/bootstrapd/bootstrapd.toml");
    let toml = std::fs::read_to_string(&packaged).unwrap_or_default();
    let qroot: PathBuf = work.join("qroot");
    let _ = std::fs::remove_dir_all(&qroot);
    std::fs::create_dir_all(qroot.join("etc/bootstrapd")).map_err(|source| DriverError::Write {
        path: qroot.clone(),
        source,
    })?;
    let (rc, _) = query_with(&bin, &qroot, &toml)?;
    c.eq(
        "the packaged bootstrapd.toml is accepted (query: no userdata, exit 2)",
        2,
        rc,
    );
    let missing: Vec<&str> = CONFIG_KEYS
        .iter()
        .copied()
        .filter(|k| !has_commented_key(&toml, k))
        .collect();
    c.eq(
        "the packaged bootstrapd.toml has every key, commented",
        "",
        missing.join(" ").as_str(),
    );
    // Uncommenting every default must still parse (they are the defaults, spelled right).
    let (rc, _) = query_with(&bin, &qroot, &uncomment_defaults(&toml))?;
    c.eq("the uncommented defaults are accepted", 2, rc);
    // Control: the same check rejects a typo, so the two passes above mean something.
    let (rc, stderr) = query_with(&bin, &qroot, "imds_v1_fallbak = true\n")?;
    c.eq("control: a misspelt key is rejected (exit 1)", 1, rc);
    c.check(
        "control: the error names the file and 1:1",
        names_file_and_position(&stderr),
        stderr.trim_end(),
    );
    let schema = std::fs::read_to_string(x.join("usr/share/bootstrapd/bootstrapd.schema.json"))
        .unwrap_or_default();
    let printed = tool::stdout(Command::new(&bin).arg("schema"))?;
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
    let (a, b) = (parse(&schema), parse(&printed));
    c.check(
        "the packaged schema is what bootstrapd schema prints",
        a.is_some() && a == b,
        "they differ (or one is not JSON)",
    );
    Ok(())
}

/// A config error's message: `...bootstrapd.toml...1:1...` on one line.
fn names_file_and_position(stderr: &str) -> bool {
    stderr.lines().any(|l| {
        l.find("bootstrapd.toml")
            .is_some_and(|i| l[i..].contains("1:1"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "drwxr-xr-x root/root         0 2026-12-03 17:00 ./\n\
-rwxr-xr-x root/root   7798248 2026-12-03 17:00 ./usr/bin/bootstrapd\n\
-rw-r--r-- root/root       612 2026-12-03 17:00 ./usr/lib/systemd/system/bootstrapd.service\n\
-rw-r--r-- root/root      1520 2026-12-03 17:00 ./etc/bootstrapd/bootstrapd.toml\n";

    #[test]
    fn deb_listing_entries() {
        assert!(
            deb_entry(LISTING, FILES[0]).is_some_and(|l| l.starts_with("-rwxr-xr-x root/root "))
        );
        assert!(deb_entry(LISTING, FILES[3]).is_none());
        assert!(deb_entry(LISTING, "/usr/bin/bootstrap").is_none());
        assert_eq!(deb_arch("x86_64"), "amd64");
        assert_eq!(deb_arch("aarch64"), "arm64");
    }

    #[test]
    fn defaults_are_uncommented_but_datasource() {
        let toml = "# bootstrapd's config\n#datasource = [\"nocloud\"]\n#imds_v1_fallback = false\n# a comment = not a key\n#max_attempts = 8\n[ec2]\n";
        assert_eq!(
            uncomment_defaults(toml),
            "# bootstrapd's config\nimds_v1_fallback = false\n# a comment = not a key\nmax_attempts = 8\n[ec2]\n"
        );
        assert!(has_commented_key(toml, "max_attempts"));
        assert!(!has_commented_key(toml, "attempt_ms"));
    }

    #[test]
    fn static_and_error_positions() {
        assert!(is_static(
            "x: ELF 64-bit LSB pie executable, x86-64, static-pie linked, stripped"
        ));
        assert!(is_static(
            "x: ELF 64-bit LSB executable, x86-64, statically linked, stripped"
        ));
        assert!(!is_static(
            "x: ELF 64-bit LSB pie executable, dynamically linked"
        ));
        assert!(names_file_and_position(
            "bootstrapd: config /q/etc/bootstrapd/bootstrapd.toml: 1:1: unknown key imds_v1_fallbak\n"
        ));
        assert!(!names_file_and_position(
            "bootstrapd: 1:1 bad\nbootstrapd.toml\n"
        ));
    }
}
