//! `e2e-driver qcow2`: the bootable disk image (scripts/build-qcow2.sh), booted ONCE under qemu
//! through its own bootloader (SeaBIOS -> GRUB on the MBR -> kernel; no -kernel), with NoCloud
//! userdata on a cidata ISO. The driver waits on the serial console until bootstrapd.service has
//! finished, powers the VM off over ACPI (QMP) and reads the disk afterwards (the journal,
//! dpkg's database, bootstrapd's state through `bootstrapd --root DIR status --json`, read as
//! bootstrapd's `Journal`): the image carries no test hook of its own.
//!
//! Checked always: GRUB booted the kernel (BOOT_IMAGE= on the kernel command line, root=UUID of
//! the image's partition); bootstrapd is installed from the .deb (dpkg status, same bytes as the
//! .deb's binary) and enabled; cloud-init absent; firewalld never started (the early host
//! step masked it first, the userdata being on the ISO);
//! bootstrapd.service ran /usr/bin/bootstrapd and finished. Level full also: bootstrapd
//! succeeded, its status is done, firewalld masked, the Rancher test server recorded the node;
//! the node identity (userdata `hostname: metadata` and `ssh` for a user `ops` the image lacks):
//! a login with the test's key through the guest's sshd sees the meta-data's hostname and the
//! key files' modes, and the disk's /etc/hostname holds that name; the static network (the
//! seed's `network-config`, applied by the early local stage bootstrapd-local.service): the
//! guest has the static 10.0.2.50/24 on the NIC matched by its MAC and no DHCP lease (qemu's
//! user network would have leased 10.0.2.15), the stage finished before systemd-networkd
//! started, no ordering cycle, and bootstrapd's journal notes what the stage wrote.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bootstrapd::state::journal::{Journal, Verdict};

use crate::checks::Checks;
use crate::deb::{DebOptions, DebTest, Identity};
use crate::driver::{DriverError, Level};
use crate::qemu::Vm;
use crate::ssh;
use crate::tool::{self, Ran, ToolError};

/// The meta-data's `local-hostname`; the image's own hostname is `node`.
const HOSTNAME: &str = "qcow2-node";
/// The user the userdata's `ssh` creates.
const SSH_USER: &str = "ops";
/// The NIC's MAC, which the network-config matches.
const MAC: &str = "52:54:00:aa:bb:01";
/// The static address the network-config gives; qemu's DHCP would give 10.0.2.15.
const STATIC_ADDRESS: &str = "10.0.2.50/24";
const STATIC_IP: &str = "10.0.2.50";
/// The seed's network-config (netplan version 2, as cloud-init's NoCloud takes it).
const NETWORK_CONFIG: &str = "network:
  version: 2
  ethernets:
    nic0:
      match:
        macaddress: \"52:54:00:aa:bb:01\"
      dhcp4: false
      addresses: [10.0.2.50/24]
      gateway4: 10.0.2.2
      nameservers:
        addresses: [10.0.2.3]
";
/// What the guest shows of its network over SSH: its global IPv4 addresses and the number of
/// DHCP leases networkd holds.
const NETWORK_COMMAND: &str =
    "ip -4 -o addr show scope global; echo leases=$(ls -A /run/systemd/netif/leases | wc -l)";

/// Runs the test; `Ok(true)` when every check passed.
pub fn run(opts: DebOptions) -> Result<bool, DriverError> {
    let args: Vec<OsString> = [
        "qcow2".to_string(),
        opts.apt_port.to_string(),
        opts.rancher_port.to_string(),
        "losetup:util-linux".to_string(),
        "dpkg-deb:dpkg-dev".to_string(),
        "journalctl:systemd".to_string(),
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    let mut t = DebTest::setup(opts, "host_setup_deb_image", &args)?;
    let work = t.opts.work.clone();
    let key = ssh::Key::generate(&work.join("ssh"))?;
    let identity = Identity {
        hostname: "metadata",
        user: Some(SSH_USER),
        key: &key.public,
        expect_hostname: HOSTNAME,
    };
    let seed = crate::deb::nocloud_seed(
        &t,
        &work.join("seed"),
        (&crate::deb::Template::worker(), &identity),
        HOSTNAME,
        Some(NETWORK_CONFIG),
    )?;
    let overlay = work.join("node.qcow2");
    crate::deb::overlay(&t.image_var("QCOW2")?, &overlay)?;
    let serial = work.join("logs/serial.log");
    let (outcome, login, network) = boot(&mut t, &overlay, &seed, &serial, &key)?;
    let console = std::fs::read(&serial)
        .map(|b| crate::report::clean(&String::from_utf8_lossy(&b)))
        .unwrap_or_default();
    println!("==> serial console");
    let root_uuid = t.image_var("ROOT_UUID")?;
    judge_serial(&mut t.checks, &console, &root_uuid, outcome.as_deref());
    println!("==> the disk after power-off");
    let disk = Mounted::new(&overlay, &work)?;
    check_disk(&mut t, &disk.mnt)?;
    let status = check_journal(&mut t, &disk.mnt)?;
    if t.opts.level == Level::Full {
        check_full(&mut t.checks, &disk.mnt, &status);
        check_identity(&mut t.checks, &disk.mnt, &identity, &login);
        check_network(&mut t, &disk.mnt, &network, &status)?;
    }
    drop(disk);
    t.check_outcome_and_record(
        outcome.as_deref(),
        "bootstrapd's success, its status, the node's registration",
    );
    Ok(t.finish())
}

/// Boots the overlay from its bootloader, waits for bootstrapd's outcome line, logs in over
/// SSH with `key` (what the identity and the network commands printed), powers off.
fn boot(
    t: &mut DebTest,
    overlay: &Path,
    seed: &Path,
    serial: &Path,
    key: &ssh::Key,
) -> Result<(Option<String>, Ran, Ran), DriverError> {
    let port = ssh::free_port().map_err(|source| DriverError::Write {
        path: "127.0.0.1:0".into(),
        source,
    })?;
    let qmp = t.opts.work.join("qmp.sock");
    let _ = std::fs::remove_file(&qmp);
    // The forward goes to the static address: reaching sshd through it is itself a sign the
    // guest holds that address.
    let nic = (MAC, ssh::hostfwd(port, Some(STATIC_IP)));
    let args = crate::deb::disk_boot_args(1536, serial, overlay, seed, nic, &qmp);
    println!("==> booting the qcow2 (through an overlay) from its own bootloader");
    let mut vm = Vm::start(&args, serial)?;
    let outcome = t.wait_for_outcome(&mut vm);
    let login = crate::deb::login(key, SSH_USER, port);
    let network = ssh::run(
        key,
        SSH_USER,
        port,
        NETWORK_COMMAND,
        Duration::from_secs(30),
    );
    println!("    the guest's network: {}", network.stdout.trim());
    let before = vm.started.elapsed().as_secs();
    vm.power_down(&qmp, Duration::from_secs(120));
    t.time("power-off", vm.started.elapsed().as_secs() - before);
    t.time("qemu start to exit", vm.started.elapsed().as_secs());
    Ok((outcome, login, network))
}

/// The kernel's command line as GRUB passed it: `BOOT_IMAGE=/boot/vmlinuz-V root=UUID=U`.
fn grub_started_kernel(console: &str, root_uuid: &str) -> bool {
    console.lines().any(|l| {
        let Some(i) = l.find("Command line: BOOT_IMAGE=/boot/vmlinuz-") else {
            return false;
        };
        let rest = &l[i + "Command line: BOOT_IMAGE=/boot/vmlinuz-".len()..];
        let mut words = rest.split(' ');
        words.next().is_some_and(|v| !v.is_empty())
            && words
                .next()
                .is_some_and(|w| w.starts_with(&format!("root=UUID={root_uuid}")))
    })
}

/// The serial console's checks.
fn judge_serial(c: &mut Checks, console: &str, root_uuid: &str, outcome: Option<&str>) {
    c.check(
        "GRUB ran from the disk's MBR (its banner/menu on the serial console)",
        console.contains("GNU GRUB"),
        "no 'GNU GRUB' on the console",
    );
    c.check(
        "the kernel was started by GRUB (BOOT_IMAGE=) with root=UUID of the image",
        grub_started_kernel(console, root_uuid),
        format!("no 'Command line: BOOT_IMAGE=/boot/vmlinuz-* root=UUID={root_uuid}'"),
    );
    crate::deb::check_console_end(
        c,
        "systemd reached a login prompt on ttyS0",
        console,
        outcome,
    );
}

/// The overlay as a raw copy, its root partition (at 1 MiB: scripts/build-qcow2.sh) on a
/// read-only loop device (partition scanning of loop devices may be unavailable in containers)
/// and mounted without journal replay; all undone when dropped.
pub(crate) struct Mounted {
    raw: PathBuf,
    loopdev: String,
    pub(crate) mnt: PathBuf,
}

impl Mounted {
    pub(crate) fn new(overlay: &Path, work: &Path) -> Result<Mounted, ToolError> {
        let raw = work.join("node.raw");
        let _ = std::fs::remove_file(&raw);
        tool::stdout(
            Command::new("qemu-img")
                .args(["convert", "-O", "raw"])
                .arg(overlay)
                .arg(&raw),
        )?;
        let loopdev = tool::stdout(
            Command::new("losetup")
                .args(["-f", "--show", "-r", "-o", "1048576"])
                .arg(&raw),
        )?
        .trim()
        .to_string();
        let mut m = Mounted {
            raw,
            loopdev,
            mnt: work.join("mnt"),
        };
        let _ = std::fs::create_dir_all(&m.mnt);
        if let Err(e) = tool::stdout(
            Command::new("mount")
                .args(["-o", "ro,noload", &m.loopdev])
                .arg(&m.mnt),
        ) {
            m.mnt = PathBuf::new();
            return Err(e);
        }
        Ok(m)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if !self.mnt.as_os_str().is_empty() {
            let _ = tool::run(Command::new("umount").arg(&self.mnt));
        }
        let _ = tool::run(Command::new("losetup").args(["-d", &self.loopdev]));
        let _ = std::fs::remove_file(&self.raw);
    }
}

/// The package as installed on the disk.
fn check_disk(t: &mut DebTest, mnt: &Path) -> Result<(), DriverError> {
    let deb = t.image_var("DEB")?;
    let debx = t.opts.work.join("debx");
    let _ = std::fs::remove_dir_all(&debx);
    tool::stdout(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&debx))?;
    let version = tool::stdout(Command::new("dpkg-deb").args(["-f", &deb, "Version"]))?;
    let admindir = format!("--admindir={}", mnt.join("var/lib/dpkg").display());
    let status = tool::run(Command::new("dpkg-query").args([
        &admindir,
        "-W",
        "-f",
        "${db:Status-Abbrev} ${Version}",
        "bootstrapd",
    ]))?;
    let c = &mut t.checks;
    c.eq(
        "bootstrapd installed by dpkg from the .deb",
        format!("ii  {}", version.trim()),
        format!("{}{}", status.stdout, status.stderr.trim()),
    );
    let same = tool::same_bytes(
        &debx.join("usr/bin/bootstrapd"),
        &mnt.join("usr/bin/bootstrapd"),
    );
    c.check(
        "/usr/bin/bootstrapd is the .deb's binary",
        same,
        "the bytes differ (or a file is missing)",
    );
    let wants = mnt.join("etc/systemd/system/multi-user.target.wants/bootstrapd.service");
    c.check(
        "bootstrapd.service enabled by the package",
        wants
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink()),
        format!("{} is not a symlink", wants.display()),
    );
    let cloud = tool::run(Command::new("dpkg-query").args([
        &admindir,
        "-W",
        "-f",
        "${Package} ${db:Status-Abbrev}\n",
        "cloud-init*",
    ]))?;
    let mut found: Vec<String> = installed_lines(&cloud.stdout);
    if mnt.join("usr/bin/cloud-init").symlink_metadata().is_ok() {
        found.push("/usr/bin/cloud-init".to_string());
    }
    c.eq(
        "cloud-init absent (dpkg, /usr/bin)",
        String::new(),
        found.join(";"),
    );
    c.check(
        "firewalld installed",
        mnt.join("usr/lib/systemd/system/firewalld.service")
            .is_file(),
        "no firewalld.service unit",
    );
    let _ = std::fs::remove_dir_all(&debx);
    Ok(())
}

/// dpkg-query lines "PACKAGE STATUS" of packages whose wanted state is install (`ii`, `iF`...).
fn installed_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains(" i"))
        .map(str::to_string)
        .collect()
}

/// `status --json` of the disk, as bootstrapd's own binary on it reads the state: exit status
/// and the parsed journal.
struct DiskStatus {
    rc: i32,
    journal: Result<Journal, String>,
}

/// The journal of the boot, read from the disk; then bootstrapd's status on the disk.
fn check_journal(t: &mut DebTest, mnt: &Path) -> Result<DiskStatus, DriverError> {
    let logs = t.opts.work.join("logs");
    let jdir = mnt.join("var/log/journal");
    let journalctl = |args: &[&str]| {
        tool::run(
            Command::new("journalctl")
                .arg("-D")
                .arg(&jdir)
                .args(["-b", "--no-pager"])
                .args(args),
        )
    };
    let text = journalctl(&["-o", "short-monotonic"])?.stdout;
    let _ = std::fs::write(logs.join("journal.txt"), &text);
    t.checks.check(
        "the journal of the boot was read from the disk",
        !text.trim().is_empty(),
        "journalctl printed nothing",
    );
    let units = journalctl(&[
        "-o",
        "json",
        "-u",
        "bootstrapd.service",
        "-u",
        "firewalld.service",
    ])?
    .stdout;
    let _ = std::fs::write(logs.join("journal-units.json"), &units);
    let (fw, bs) = unit_order(&units);
    // The userdata is on the cidata ISO, so the early host step masks firewalld before its
    // start job runs (the PXE test keeps the path that stops a running one).
    t.checks.check(
        "firewalld never started: its start job gave way to bootstrapd-local-host's mask (journal)",
        fw == 0 && bs > 0,
        format!("firewalld start job at {fw} us, bootstrapd starting at {bs} us"),
    );
    let local = journalctl(&["-o", "cat", "-u", "bootstrapd-local-host.service"])?.stdout;
    t.checks.check(
        "bootstrapd-local-host masked firewalld before it started (its journal)",
        local.contains("masked before it started"),
        local
            .lines()
            .filter(|l| l.contains("firewalld"))
            .collect::<Vec<_>>()
            .join(" | "),
    );
    let own = journalctl(&[
        "-o",
        "cat",
        "_SYSTEMD_UNIT=bootstrapd.service",
        "_EXE=/usr/bin/bootstrapd",
    ])?;
    t.checks.check(
        "bootstrapd itself logged to the journal",
        !own.stdout.trim().is_empty(),
        "no journal entry of /usr/bin/bootstrapd in bootstrapd.service",
    );
    println!("    bootstrapd's journal (first 40 lines):");
    let unit = journalctl(&["-o", "short-monotonic", "-u", "bootstrapd.service"])?;
    for l in unit.stdout.lines().take(40) {
        println!("      {l}");
    }
    let ran = tool::run(
        Command::new(mnt.join("usr/bin/bootstrapd"))
            .arg("--root")
            .arg(mnt)
            .args(["status", "--json"]),
    )?;
    let _ = std::fs::write(logs.join("status.json"), &ran.stdout);
    let _ = std::fs::write(logs.join("status.err"), &ran.stderr);
    println!(
        "    bootstrapd --root DISK status --json: exit {} ({})",
        ran.code,
        logs.join("status.json").display()
    );
    Ok(DiskStatus {
        rc: ran.code,
        journal: serde_json::from_str(&ran.stdout).map_err(|e| e.to_string()),
    })
}

/// From `journalctl -o json` of the two units: the monotonic time of firewalld's first start
/// job that ran and of bootstrapd's "Starting" message (0 when absent).
fn unit_order(json_lines: &str) -> (u64, u64) {
    let (mut fw, mut bs) = (0, 0);
    for e in json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let field = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("");
        let t: u64 = field("__MONOTONIC_TIMESTAMP").parse().unwrap_or(0);
        if fw == 0 && field("UNIT") == "firewalld.service" && field("JOB_TYPE") == "start" {
            fw = t;
        }
        if bs == 0
            && field("UNIT") == "bootstrapd.service"
            && field("MESSAGE").starts_with("Starting")
        {
            bs = t;
        }
    }
    (fw, bs)
}

/// Level full: bootstrapd's work as the disk shows it.
fn check_full(c: &mut Checks, mnt: &Path, status: &DiskStatus) {
    c.eq("bootstrapd status: done (exit 0)", 0, status.rc);
    match &status.journal {
        Ok(j) => c.eq(
            "bootstrapd status --json: bootstrapd's journal, verdict done",
            Verdict::Done,
            j.verdict,
        ),
        Err(e) => c.fail(
            "bootstrapd status --json: bootstrapd's journal, verdict done",
            e,
        ),
    }
    // The userdata says firewalld: disable; bootstrapd masks it over systemd's D-Bus API (in the
    // early host step, bootstrapd-local-host).
    let link = std::fs::read_link(mnt.join("etc/systemd/system/firewalld.service"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    c.eq(
        "firewalld masked by bootstrapd (userdata firewalld: disable)",
        "/dev/null",
        link.as_str(),
    );
}

/// Level full: the identity the userdata asked for, over SSH while the node ran and on its disk.
fn check_identity(c: &mut Checks, mnt: &Path, identity: &Identity, login: &Ran) {
    crate::deb::check_login(c, identity, login);
    let name = std::fs::read_to_string(mnt.join("etc/hostname")).unwrap_or_default();
    c.eq(
        "the disk's /etc/hostname holds the meta-data's local-hostname",
        identity.expect_hostname,
        name.trim(),
    );
}

/// Level full: the static network, as the guest showed it over SSH and as its disk keeps it.
fn check_network(
    t: &mut DebTest,
    mnt: &Path,
    shown: &Ran,
    status: &DiskStatus,
) -> Result<(), DriverError> {
    judge_network(&mut t.checks, &shown.stdout);
    let file = mnt.join("etc/systemd/network/10-bootstrapd-nic0.network");
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    t.checks.check(
        "bootstrapd-local wrote 10-bootstrapd-nic0.network (its header, the static address)",
        text.starts_with("# written by bootstrapd from network-config")
            && text.contains(&format!("Address={STATIC_ADDRESS}")),
        format!("{}: {:?}", file.display(), text.lines().next()),
    );
    let jdir = mnt.join("var/log/journal");
    let units = tool::run(
        Command::new("journalctl")
            .arg("-D")
            .arg(&jdir)
            .args(["-b", "--no-pager", "-o", "json"])
            .args([
                "-u",
                "bootstrapd-local.service",
                "-u",
                "systemd-networkd.service",
            ]),
    )?
    .stdout;
    let (local_done, networkd) = local_then_networkd(&units);
    t.checks.check(
        "bootstrapd-local finished before systemd-networkd started (journal)",
        local_done > 0 && networkd > 0 && local_done <= networkd,
        format!("bootstrapd-local finished at {local_done} us, networkd starting at {networkd} us"),
    );
    let all = tool::run(Command::new("journalctl").arg("-D").arg(&jdir).args([
        "-b",
        "--no-pager",
        "-o",
        "cat",
    ]))?
    .stdout;
    let cycles: Vec<&str> = all
        .lines()
        .filter(|l| l.to_lowercase().contains("ordering cycle"))
        .collect();
    t.checks.eq(
        "no ordering cycle in the journal (firewalld enabled, the local stage present)",
        Vec::<&str>::new(),
        cycles,
    );
    let note = status
        .journal
        .as_ref()
        .ok()
        .and_then(|j| j.notes.iter().find(|n| n.starts_with("network: ")).cloned());
    t.checks.check(
        "bootstrapd's journal notes what the local stage did",
        note.as_deref()
            .is_some_and(|n| n.contains("10-bootstrapd-nic0.network")),
        format!("{note:?}"),
    );
    Ok(())
}

/// The guest's addresses: the static one, not a DHCP one, and no lease.
fn judge_network(c: &mut Checks, shown: &str) {
    let inet = format!("inet {STATIC_ADDRESS} ");
    let static_line = shown.lines().find(|l| l.contains(&inet));
    c.check(
        &format!("the NIC matched by MAC has {STATIC_ADDRESS}, static (not dynamic)"),
        static_line.is_some_and(|l| !l.contains("dynamic")),
        format!("{:?}", shown.trim()),
    );
    c.check(
        "no DHCP address (10.0.2.15) and no DHCP lease",
        !shown.contains("10.0.2.15") && shown.lines().any(|l| l.trim() == "leases=0"),
        format!("{:?}", shown.trim()),
    );
}

/// From `journalctl -o json` of the two units: when bootstrapd-local finished and when
/// systemd-networkd began starting (monotonic microseconds, 0 when absent).
fn local_then_networkd(json_lines: &str) -> (u64, u64) {
    let (mut local, mut networkd) = (0, 0);
    for e in json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let field = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("");
        let t: u64 = field("__MONOTONIC_TIMESTAMP").parse().unwrap_or(0);
        if local == 0
            && field("UNIT") == "bootstrapd-local.service"
            && field("MESSAGE").starts_with("Finished")
        {
            local = t;
        }
        if networkd == 0
            && field("UNIT") == "systemd-networkd.service"
            && field("MESSAGE").starts_with("Starting")
        {
            networkd = t;
        }
    }
    (local, networkd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_is_judged_static_without_a_lease() {
        let good = "2: ens3    inet 10.0.2.50/24 brd 10.0.2.255 scope global ens3\\       valid_lft forever preferred_lft forever\nleases=0\n";
        let mut c = Checks::default();
        judge_network(&mut c, good);
        assert_eq!((c.passed, c.failed()), (2, 0));
        let dhcp = "2: ens3    inet 10.0.2.15/24 metric 1024 brd 10.0.2.255 scope global dynamic ens3\nleases=1\n";
        let mut c = Checks::default();
        judge_network(&mut c, dhcp);
        assert_eq!((c.passed, c.failed()), (0, 2));
    }

    #[test]
    fn the_local_stage_before_networkd() {
        let lines = r#"{"UNIT":"bootstrapd-local.service","MESSAGE":"Starting bootstrapd-local.service","__MONOTONIC_TIMESTAMP":"3000000"}
{"UNIT":"bootstrapd-local.service","MESSAGE":"Finished bootstrapd-local.service - bootstrapd early local stage","__MONOTONIC_TIMESTAMP":"4000000"}
{"UNIT":"systemd-networkd.service","MESSAGE":"Starting systemd-networkd.service - Network Configuration...","__MONOTONIC_TIMESTAMP":"4100000"}"#;
        assert_eq!(local_then_networkd(lines), (4_000_000, 4_100_000));
        assert_eq!(local_then_networkd(""), (0, 0));
    }

    const UUID: &str = "0f3c2a1e-7d7b-4a8e-9e51-2c1b5d6f7a80";

    #[test]
    fn the_serial_console_of_a_grub_boot() {
        let console = format!(
            "\x1b[2J GNU GRUB  version 2.06-13+deb12u1\n\
[    0.000000] Command line: BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID={UUID} ro console=ttyS0\n\
[   45.744345] bootstrapd[263]: bootstrapd run ended: done: node prepared and registered\n\
qcow2-node login: "
        );
        let console = crate::report::clean(&console);
        let outcome = crate::qemu::bootstrapd_outcome(&console);
        let mut c = Checks::default();
        judge_serial(&mut c, &console, UUID, outcome.as_deref());
        assert_eq!(c.failures, Vec::<String>::new());
        assert_eq!(c.passed, 4);
        // A -kernel boot (no GRUB), another partition, no prompt, no outcome line.
        let direct = "[    0.000000] Command line: root=/dev/vda rw console=ttyS0\n";
        let mut c = Checks::default();
        judge_serial(&mut c, direct, UUID, None);
        assert_eq!(c.passed, 0);
        assert_eq!(c.failed(), 4);
        assert!(!grub_started_kernel(
            "Command line: BOOT_IMAGE=/boot/vmlinuz-6.1 root=UUID=other",
            UUID
        ));
    }

    #[test]
    fn unit_order_from_the_journals_json() {
        let lines = r#"{"UNIT":"firewalld.service","JOB_TYPE":"start","MESSAGE":"Starting firewalld.service","__MONOTONIC_TIMESTAMP":"5100000"}
{"UNIT":"firewalld.service","JOB_TYPE":"start","MESSAGE":"Started firewalld.service","__MONOTONIC_TIMESTAMP":"9100000"}
not json
{"UNIT":"bootstrapd.service","MESSAGE":"Starting bootstrapd.service - bootstrapd node bootstrap agent...","__MONOTONIC_TIMESTAMP":"12000000"}
{"UNIT":"bootstrapd.service","MESSAGE":[98,97],"__MONOTONIC_TIMESTAMP":"13000000"}"#;
        assert_eq!(unit_order(lines), (5_100_000, 12_000_000));
        assert_eq!(unit_order(""), (0, 0));
    }

    #[test]
    fn installed_cloud_init_lines() {
        assert!(installed_lines("cloud-init un \ncloud-initramfs-growroot un \n").is_empty());
        assert_eq!(
            installed_lines("cloud-init ii \ncloud-guest-utils un \n"),
            vec!["cloud-init ii "]
        );
    }

    #[test]
    fn the_disks_status_is_judged_as_a_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let unit = dir.path().join("etc/systemd/system");
        std::fs::create_dir_all(&unit).expect("mkdir");
        std::os::unix::fs::symlink("/dev/null", unit.join("firewalld.service")).expect("link");
        let done: Journal = serde_json::from_str(
            r#"{"version": 1, "verdict": "done", "runs": 1, "stages": [], "notes": [], "updated": 9}"#,
        )
        .expect("journal");
        let mut c = Checks::default();
        check_full(
            &mut c,
            dir.path(),
            &DiskStatus {
                rc: 0,
                journal: Ok(done),
            },
        );
        assert_eq!((c.passed, c.failed()), (3, 0));
        std::fs::remove_file(unit.join("firewalld.service")).expect("rm");
        let mut c = Checks::default();
        let bad = DiskStatus {
            rc: 1,
            journal: Err("EOF while parsing".into()),
        };
        check_full(&mut c, dir.path(), &bad);
        assert_eq!((c.passed, c.failed()), (0, 3));
    }
}
