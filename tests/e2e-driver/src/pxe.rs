//! `e2e-driver pxe`: the PXE bundle (scripts/build-pxe.sh), network-booted. A diskless qemu VM
//! (no drive at all) boots with `-boot n`: the virtio NIC's iPXE ROM (Debian's ipxe-qemu) gets
//! its address and the boot file name from qemu's built-in BOOTP/TFTP (`tftp=DIR,bootfile=
//! boot.ipxe`), runs the iPXE script rendered from images/pxe/boot.ipxe.in, which fetches the
//! kernel and the initrd over HTTP from the host (lib.sh `host_setup_pxe`'s boot file server);
//! live-boot in the initrd fetches filesystem.squashfs over HTTP and runs it from RAM;
//! bootstrapd.service then reads its userdata from bootstrapd.url=URL on the kernel command
//! line. Everything is observed from outside: the boot file server's request log and the serial
//! console (systemd's lines and bootstrapd's outcome line), plus the Rancher test server's
//! record.
//!
//! Checked always: the kernel, initrd and squashfs were fetched over HTTP; the kernel runs with
//! boot=live and bootstrapd.url=; systemd booted from the live root; bootstrapd's run ended and
//! fetched /user-data (HTTP 200). Level full also: the run ended done and the node registered;
//! the node identity (userdata `hostname: {template: "pxe-{mac}"}` over the NIC's fixed MAC,
//! and `ssh` keys for the default user, root): a login with the test's key through the guest's
//! sshd sees the template's hostname (not the kernel command line's `pxe-node`) and the key
//! files' modes; firewalld ran before bootstrapd (the early local stage has no userdata to
//! act on) and bootstrapd stopped and masked it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use crate::checks::Checks;
use crate::deb::{DebOptions, DebTest, Identity};
use crate::driver::DriverError;
use crate::qemu::{self, Vm};
use crate::ssh;

/// Debian's iPXE virtio ROM names the modern (virtio 1.0) device id 1af4:1041; SeaBIOS runs it
/// only for a NIC with that id, hence disable-legacy=on (a transitional 1af4:1000 NIC silently
/// gets no boot ROM: "No bootable device").
const ROM: &str = "/usr/lib/ipxe/qemu/pxe-virtio.rom";
/// The NIC's MAC, so the hostname template's `{mac}` is known here.
const MAC: &str = "52:54:00:12:34:56";

/// Runs the test; `Ok(true)` when every check passed.
pub fn run(opts: DebOptions, http_port: u16, memory_mib: u32) -> Result<bool, DriverError> {
    let args: Vec<OsString> = [opts.apt_port, opts.rancher_port, http_port]
        .iter()
        .map(|p| OsString::from(p.to_string()))
        .collect();
    let mut t = DebTest::setup(opts, "host_setup_pxe", &args)?;
    let work = t.opts.work.clone();
    let key = ssh::Key::generate(&work.join("ssh"))?;
    let identity = Identity {
        hostname: "pxe-{mac}",
        user: None,
        key: &key.public,
        expect_hostname: "pxe-525400123456",
    };
    t.write_userdata(&work.join("www/user-data"), &identity)?;
    let base_url = format!("http://10.0.2.2:{http_port}");
    let tftp = work.join("tftp");
    write_boot_script(&t, &tftp, &base_url)?;
    let http_log = work.join("logs/boot-http.log");
    // Only the guest's requests count: the log from here on (the set-up's probe is before).
    let offset = std::fs::metadata(&http_log).map_or(0, |m| m.len() as usize);
    let booted = boot(&mut t, &tftp, memory_mib, &key, identity.login_user())?;
    let log = std::fs::read(&http_log).unwrap_or_default();
    let log = String::from_utf8_lossy(log.get(offset..).unwrap_or_default());
    println!("==> what the network boot showed");
    let outcome = booted.outcome.as_deref();
    judge(&mut t.checks, &log, &booted.console, &base_url, outcome);
    println!("    guest requests:");
    for ((req, status), n) in requests(&log) {
        println!("      {n:>3} {req} -> {status}");
    }
    t.check_outcome_and_record(
        outcome,
        "bootstrapd's success, the node's registration, its identity",
    );
    if t.opts.level == crate::driver::Level::Full {
        crate::deb::check_login(&mut t.checks, &identity, &booted.login);
        check_firewalld(&mut t.checks, &booted.units);
    }
    Ok(t.finish())
}

/// TFTP_DIR/boot.ipxe, rendered from the image's template.
fn write_boot_script(t: &DebTest, tftp: &Path, base_url: &str) -> Result<(), DriverError> {
    let _ = std::fs::remove_dir_all(tftp);
    let template = t.image_var("IPXE_TEMPLATE")?;
    let script = std::fs::read_to_string(&template).map_err(|source| DriverError::Write {
        path: template.clone().into(),
        source,
    })?;
    let path = tftp.join("boot.ipxe");
    std::fs::create_dir_all(tftp)
        .and_then(|()| std::fs::write(&path, render_ipxe(&script, base_url)))
        .map_err(|source| DriverError::Write { path, source })
}

/// What the network boot gave: bootstrapd's outcome line, the SSH login, the units' state, the
/// whole console.
struct Booted {
    outcome: Option<String>,
    login: crate::tool::Ran,
    units: crate::tool::Ran,
    console: String,
}

/// Run over SSH after the login: firewalld's and bootstrapd's state as systemd has it.
const UNITS_COMMAND: &str = "systemctl show firewalld.service -p ActiveState,UnitFileState,ActiveEnterTimestampMonotonic; systemctl show bootstrapd.service -p ExecMainStartTimestampMonotonic";

/// The userdata is only on the network, so the early local stage cannot read it: firewalld
/// starts, and the main run stops, disables and masks it (the path the disk-booted tests no
/// longer take, their userdata being on a seed ISO).
fn check_firewalld(c: &mut Checks, units: &crate::tool::Ran) {
    let props: BTreeMap<&str, &str> = units
        .stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .collect();
    let usec = |k: &str| {
        props
            .get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (fw, bs) = (
        usec("ActiveEnterTimestampMonotonic"),
        usec("ExecMainStartTimestampMonotonic"),
    );
    c.check(
        "firewalld was running before bootstrapd started (userdata over the network only)",
        fw > 0 && bs > 0 && fw <= bs,
        format!(
            "firewalld active at {fw} us, bootstrapd started at {bs} us (ssh exit {})",
            units.code
        ),
    );
    c.eq(
        "bootstrapd stopped and masked the running firewalld",
        (Some("inactive"), Some("masked")),
        (
            props.get("ActiveState").copied(),
            props.get("UnitFileState").copied(),
        ),
    );
}

/// Boots from the network, waits for bootstrapd's outcome, logs in over SSH as `user` with
/// `key`, waits a moment for the login prompt, then stops: a diskless node keeps nothing.
fn boot(
    t: &mut DebTest,
    tftp: &Path,
    memory_mib: u32,
    key: &ssh::Key,
    user: &str,
) -> Result<Booted, DriverError> {
    let port = ssh::free_port().map_err(|source| DriverError::Write {
        path: "127.0.0.1:0".into(),
        source,
    })?;
    let serial = t.opts.work.join("logs/serial.log");
    println!("==> network boot (-boot n, no disk), {memory_mib} MiB");
    let mut a = qemu::base_args(memory_mib, &serial);
    a.extend([
        "-boot".to_string(),
        "n".to_string(),
        "-netdev".to_string(),
        format!(
            "user,id=net0,tftp={},bootfile=boot.ipxe,{}",
            tftp.display(),
            ssh::hostfwd(port, None)
        ),
        "-device".to_string(),
        format!("virtio-net-pci,disable-legacy=on,netdev=net0,mac={MAC},romfile={ROM}"),
    ]);
    let mut vm = Vm::start(&a, &serial)?;
    let outcome = t.wait_for_outcome(&mut vm);
    let login = crate::deb::login(key, user, port);
    let units = crate::ssh::run(key, user, port, UNITS_COMMAND, Duration::from_secs(30));
    let prompt = vm.started.elapsed() + Duration::from_secs(60);
    vm.wait_for(prompt, Duration::from_secs(5), |c| {
        c.contains("login:").then_some(())
    });
    vm.kill();
    Ok(Booted {
        outcome,
        login,
        units,
        console: vm.console(),
    })
}

/// boot.ipxe from the template: files and userdata from `base_url`, the node's hostname.
fn render_ipxe(template: &str, base_url: &str) -> String {
    template
        .replace("@BASE_URL@", base_url)
        .replace("@USERDATA_URL@", &format!("{base_url}/user-data"))
        .replace("@EXTRA_ARGS@", "systemd.hostname=pxe-node")
}

/// The request lines of python's http.server log: `"GET /PATH HTTP/1.1" STATUS`, as
/// ("GET /PATH", status).
fn request_lines(log: &str) -> impl Iterator<Item = (String, String)> + '_ {
    log.lines().filter_map(|l| {
        let (_, rest) = l.split_once('"')?;
        let (req, rest) = rest.split_once('"')?;
        let status = rest.split_whitespace().next()?;
        let (method_path, proto) = req.rsplit_once(' ')?;
        proto
            .starts_with("HTTP/1.")
            .then(|| (method_path.to_string(), status.to_string()))
    })
}

/// Whether the guest fetched /`path` with status 200.
fn got(log: &str, path: &str) -> bool {
    let want = format!("GET /{path}");
    request_lines(log).any(|(r, s)| r == want && s == "200")
}

/// How often each request was answered with each status.
fn requests(log: &str) -> BTreeMap<(String, String), usize> {
    let mut m = BTreeMap::new();
    for k in request_lines(log) {
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

/// The kernel's command line has boot=live and, after it, the userdata URL.
fn live_cmdline(console: &str, base_url: &str) -> bool {
    let url = format!("bootstrapd.url={base_url}/user-data");
    console.lines().any(|l| {
        l.split_once("Command line: ")
            .and_then(|(_, c)| c.find("boot=live ").map(|i| &c[i..]))
            .is_some_and(|c| c.contains(&url))
    })
}

/// The checks every level makes (iPXE prints to the BIOS console, which -nodefaults has no VGA
/// for: its requests show it ran).
fn judge(c: &mut Checks, log: &str, console: &str, base_url: &str, outcome: Option<&str>) {
    let fetched = |c: &mut Checks, name: &str, path: &str| {
        c.check(
            name,
            got(log, path),
            format!("no \"GET /{path}\" answered 200"),
        );
    };
    fetched(c, "iPXE fetched the kernel over HTTP", "vmlinuz");
    fetched(c, "iPXE fetched the initrd over HTTP", "initrd.img");
    c.check(
        "the kernel runs with boot=live and bootstrapd.url=",
        live_cmdline(console, base_url),
        "no such 'Command line:' on the console",
    );
    fetched(
        c,
        "live-boot fetched filesystem.squashfs over HTTP",
        "filesystem.squashfs",
    );
    crate::deb::check_console_end(
        c,
        "systemd booted from the live root (login prompt on ttyS0)",
        console,
        outcome,
    );
    fetched(
        c,
        "bootstrapd fetched its userdata from bootstrapd.url (HTTP 200 for /user-data)",
        "user-data",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://10.0.2.2:18092";
    const LOG: &str = "127.0.0.1 - - [03/Dec/2026 19:00:01] \"GET /vmlinuz HTTP/1.1\" 200 -\n\
127.0.0.1 - - [03/Dec/2026 19:00:02] \"GET /initrd.img HTTP/1.1\" 200 -\n\
127.0.0.1 - - [03/Dec/2026 19:00:09] \"GET /filesystem.squashfs HTTP/1.1\" 200 -\n\
127.0.0.1 - - [03/Dec/2026 19:01:09] code 404, message File not found\n\
127.0.0.1 - - [03/Dec/2026 19:01:09] \"GET /user-data.bak HTTP/1.1\" 404 -\n\
127.0.0.1 - - [03/Dec/2026 19:01:10] \"GET /user-data HTTP/1.1\" 200 -\n";

    fn console() -> String {
        format!(
            "[    0.000000] Command line: boot=live fetch={BASE}/filesystem.squashfs bootstrapd.url={BASE}/user-data console=tty0 console=ttyS0,115200n8 systemd.hostname=pxe-node\n\
[   45.744345] bootstrapd[263]: bootstrapd run ended: done: node prepared and registered\n\
pxe-node login: "
        )
    }

    #[test]
    fn a_network_boot_passes() {
        let console = console();
        let outcome = qemu::bootstrapd_outcome(&console);
        let mut c = Checks::default();
        judge(&mut c, LOG, &console, BASE, outcome.as_deref());
        assert_eq!(c.failures, Vec::<String>::new());
        assert_eq!(c.passed, 7);
    }

    #[test]
    fn firewalld_must_have_run_first_and_be_masked_now() {
        let ran = |stdout: &str| crate::tool::Ran {
            code: 0,
            stdout: stdout.to_string(),
            stderr: String::new(),
        };
        let mut c = Checks::default();
        check_firewalld(
            &mut c,
            &ran(
                "ActiveState=inactive\nUnitFileState=masked\nActiveEnterTimestampMonotonic=9100000\nExecMainStartTimestampMonotonic=12000000\n",
            ),
        );
        assert_eq!((c.passed, c.failed()), (2, 0));
        // Masked early, never started: the network-only path was not taken.
        let mut c = Checks::default();
        check_firewalld(
            &mut c,
            &ran(
                "ActiveState=inactive\nUnitFileState=masked\nActiveEnterTimestampMonotonic=0\nExecMainStartTimestampMonotonic=12000000\n",
            ),
        );
        assert_eq!((c.passed, c.failed()), (1, 1));
        let mut c = Checks::default();
        check_firewalld(&mut c, &ran(""));
        assert_eq!((c.passed, c.failed()), (0, 2));
    }

    #[test]
    fn missing_fetches_and_another_url_fail() {
        let log = LOG.replace(
            "\"GET /user-data HTTP/1.1\" 200",
            "\"GET /user-data HTTP/1.1\" 404",
        );
        let mut c = Checks::default();
        judge(&mut c, &log, &console(), "http://10.0.2.2:1", None);
        assert_eq!(c.failed(), 3, "{:?}", c.failures);
        assert!(!got(LOG, "user-data.ba"));
        assert!(!got("", "vmlinuz"));
    }

    #[test]
    fn requests_are_counted() {
        let r = requests(LOG);
        assert_eq!(r.get(&("GET /user-data".into(), "200".into())), Some(&1));
        assert_eq!(
            r.get(&("GET /user-data.bak".into(), "404".into())),
            Some(&1)
        );
        assert_eq!(r.len(), 5);
    }

    #[test]
    fn the_ipxe_script_is_rendered() {
        let s = render_ipxe(
            "kernel @BASE_URL@/vmlinuz bootstrapd.url=@USERDATA_URL@ @EXTRA_ARGS@",
            BASE,
        );
        assert_eq!(
            s,
            format!(
                "kernel {BASE}/vmlinuz bootstrapd.url={BASE}/user-data systemd.hostname=pxe-node"
            )
        );
    }
}
