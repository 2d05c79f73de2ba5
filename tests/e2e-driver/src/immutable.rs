//! `e2e-driver immutable`: the immutable disk image (scripts/build-immutable.sh): the root
//! partition writable, /usr a squashfs partition that the initramfs opens through dm-verity with
//! the root hash of the kernel command line (`usrhash=`) and mounts read-only, or refuses to
//! boot. Every boot goes through the disk's own GRUB, with NoCloud userdata on a cidata ISO.
//!
//! The scenarios are the list [`SCENARIOS`], walked in order; their disks are qcow2 overlays on
//! the one image built:
//!  1. system-agent mode: the first boot registers the node; in the guest (over SSH, as root)
//!     /usr is /dev/mapper/usr, squashfs, read-only, `veritysetup status usr` says verified
//!     with the image's root hash, a write to /usr fails, the agent is in
//!     /opt/rancher-system-agent/bin and not in /usr/local/bin. The second boot of the same
//!     disk: bootstrapd finds every stage done, the server still holds one registration, /usr
//!     still verified. After power-off, the root partition's own /usr (the mount point) is
//!     empty: nothing was written underneath the verified /usr.
//!  2. one byte flipped in /usr's partition (a fresh overlay; the byte read first and its
//!     complement written with qemu-io): the kernel reports the corrupt block, the initramfs
//!     refuses to boot, bootstrapd never starts, and the VM ends by itself (panic=10 on the
//!     image's command line, then qemu's -no-reboot).
//!  3. rke1 with Docker from a system extension (`runtime.source.sysext`: the image
//!     scripts/build-sysext.sh built, served beside the apt repository by the host set-up,
//!     tests/e2e/lib.sh `host_setup_immutable`) and the agent image from the archive baked into
//!     the image's /var (build-immutable.sh --image-archive), on a fresh overlay: bootstrapd
//!     registers the node; Docker runs from the extension merged over /usr (no docker.io
//!     package), the agent container runs, /dev/mapper/usr is still verified and /usr still
//!     read-only.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rancher_test_server::{Generation, NodeRecord};

use crate::checks::Checks;
use crate::deb::{self, DebOptions, DebTest, Identity, Template};
use crate::driver::DriverError;
use crate::qemu::{self, Vm};
use crate::ssh;
use crate::tool::{self, Ran};

/// The meta-data's `local-hostname` of the worker and of the rke1 node.
const HOSTNAME: &str = "immutable-node";
const RKE1_HOSTNAME: &str = "immutable-rke1";
/// An rke1 node whose Docker comes from the system extension (`runtime.source.sysext`).
const SYSEXT_TEMPLATE: &str = "tests/e2e/userdata/node-sysext.yaml";
const MAC: &str = "52:54:00:aa:bb:02";
/// The byte flipped in /usr's partition, from its start: inside its first 4 KiB block, which
/// mounting the squashfs must read (its superblock is there), so dm-verity meets it at every
/// boot; past the 96-byte superblock, so that it is dm-verity and not squashfs' own sanity
/// checks that refuses it.
const FLIP_AT: u64 = 1000;
/// A refused boot ends in seconds after the initramfs (panic=10): this is only a bound.
const REFUSED_TIMEOUT: Duration = Duration::from_secs(400);
/// What the guest shows over SSH, in sections the checks pick apart.
const GUEST_COMMAND: &str = "echo @@usr; findmnt -no SOURCE,FSTYPE,OPTIONS /usr; \
echo @@verity; veritysetup status usr; \
echo @@write; touch /usr/.bootstrapd-e2e-write 2>&1; echo \"exit=$?\"; \
echo @@agent; ls -A /opt/rancher-system-agent/bin; \
echo @@usrlocal; ls -A /usr/local/bin; \
echo @@sysext; systemd-sysext status --no-pager; \
echo @@docker; systemctl is-active docker; command -v dockerd; docker ps --format '{{.Image}}'; \
echo @@dpkg; dpkg-query -W -f '${db:Status-Abbrev}\\n' docker.io 2>/dev/null; \
echo @@failed; systemctl --failed --no-legend --plain";

/// Which disk a scenario boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DiskUse {
    /// The node's overlay, kept from one scenario to the next (its second boot).
    Node,
    /// A fresh overlay with one byte of /usr's partition flipped.
    CorruptUsr,
    /// A fresh overlay of its own.
    Fresh,
}

/// The node a scenario's userdata makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    /// A system-agent worker (the .deb image tests' worker template).
    Worker,
    /// An rke1 node with all roles whose Docker comes from the system extension.
    Rke1Sysext,
}

/// How a boot must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// bootstrapd registered the node ("done").
    Registered,
    /// bootstrapd found every stage done on this instance ("done: ... already done").
    AlreadyRegistered,
    /// The initramfs refused /usr; bootstrapd never ran.
    Refused,
}

struct Scenario {
    name: &'static str,
    what: &'static str,
    disk: DiskUse,
    node: Node,
    expect: Expect,
}

/// The boots, in order (the second needs the first's disk).
const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "first-boot",
        what: "system-agent worker: GRUB, verified /usr, bootstrapd registers",
        disk: DiskUse::Node,
        node: Node::Worker,
        expect: Expect::Registered,
    },
    Scenario {
        name: "second-boot",
        what: "the same disk again: already registered, /usr still verified",
        disk: DiskUse::Node,
        node: Node::Worker,
        expect: Expect::AlreadyRegistered,
    },
    Scenario {
        name: "corrupt-usr",
        what: "one byte of /usr's partition flipped: the boot is refused",
        disk: DiskUse::CorruptUsr,
        node: Node::Worker,
        expect: Expect::Refused,
    },
    // Last: the server then holds a second node, which the record checks expect from here on.
    Scenario {
        name: "rke1-sysext",
        what: "rke1 all roles, Docker from a system extension over the read-only /usr",
        disk: DiskUse::Fresh,
        node: Node::Rke1Sysext,
        expect: Expect::Registered,
    },
];

/// What build-immutable.sh says of the image (immutable.env).
struct Image {
    path: String,
    usr_hash: String,
    usr_offset: u64,
}

/// What one boot showed.
struct Seen {
    console: String,
    outcome: Option<String>,
    /// GUEST_COMMAND's output (booted scenarios only).
    guest: Option<Ran>,
    /// The VM ended before the driver powered it off.
    ended_by_itself: bool,
}

/// Runs the test; `Ok(true)` when every check passed.
pub fn run(opts: DebOptions) -> Result<bool, DriverError> {
    let args: Vec<OsString> = [
        opts.apt_port.to_string(),
        opts.rancher_port.to_string(),
        "losetup:util-linux".to_string(),
        "qemu-io:qemu-utils".to_string(),
        "veritysetup:cryptsetup-bin".to_string(),
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    let mut t = DebTest::setup(opts, "host_setup_immutable", &args)?;
    let work = t.opts.work.clone();
    let key = ssh::Key::generate(&work.join("ssh"))?;
    let image = Image {
        path: t.image_var("IMAGE")?,
        usr_hash: t.image_var("USR_HASH")?,
        usr_offset: number(&t.image_var("USR_OFFSET")?)?,
    };
    let node = work.join("node.qcow2");
    deb::overlay(&image.path, &node)?;
    let mut rke1_nodes = 0;
    for s in SCENARIOS {
        println!("==> {}: {}", s.name, s.what);
        let disk = match s.disk {
            DiskUse::Node => node.clone(),
            DiskUse::CorruptUsr => corrupt_copy(&mut t, &image, &work)?,
            DiskUse::Fresh => {
                let disk = work.join(format!("{}.qcow2", s.name));
                deb::overlay(&image.path, &disk)?;
                disk
            }
        };
        let seed = seed(&t, s.node, &key)?;
        let serial = work.join(format!("logs/serial-{}.log", s.name));
        let seen = boot(&mut t, s, &disk, &seed, &serial, &key)?;
        if s.node == Node::Rke1Sysext && s.expect != Expect::Refused {
            rke1_nodes += 1;
        }
        judge(&mut t, s, &image, &seen);
        judge_record(&mut t, s.name, rke1_nodes);
    }
    println!("==> the worker's root partition after power-off");
    let disk = crate::qcow2::Mounted::new(&node, &work)?;
    judge_root_partition(&mut t.checks, &disk.mnt);
    drop(disk);
    Ok(t.finish())
}

/// The NoCloud seed of `node`'s userdata, with the test's key for root.
fn seed(t: &DebTest, node: Node, key: &ssh::Key) -> Result<PathBuf, DriverError> {
    let (hostname, template) = match node {
        Node::Worker => (HOSTNAME, Template::worker()),
        Node::Rke1Sysext => {
            let served = t.host.sysext.as_ref().ok_or_else(|| {
                DriverError::Build("the host set-up served no system extension".into())
            })?;
            let template = Template {
                path: SYSEXT_TEMPLATE,
                mode: "rke1",
                roles: "etcd, controlplane, worker",
                extra: served.placeholders(t.opts.apt_port),
            };
            (RKE1_HOSTNAME, template)
        }
    };
    let identity = Identity {
        hostname: "metadata",
        user: None,
        key: &key.public,
        expect_hostname: hostname,
    };
    let dir = t.opts.work.join(format!("seed-{hostname}"));
    deb::nocloud_seed(t, &dir, (&template, &identity), hostname, None)
}

fn number(text: &str) -> Result<u64, DriverError> {
    text.trim()
        .parse()
        .map_err(|_| DriverError::Build(format!("immutable.env: {text:?} is not a number")))
}

/// A fresh overlay on the image with the byte at /usr + FLIP_AT replaced by its complement.
fn corrupt_copy(t: &mut DebTest, image: &Image, work: &Path) -> Result<PathBuf, DriverError> {
    let disk = work.join("corrupt-usr.qcow2");
    deb::overlay(&image.path, &disk)?;
    let at = image.usr_offset + FLIP_AT;
    let before = read_byte(&disk, at)?;
    tool::stdout(
        Command::new("qemu-io")
            .args(["-f", "qcow2", "-c"])
            .arg(format!("write -P {:#04x} {at} 1", !before))
            .arg(&disk),
    )?;
    let after = read_byte(&disk, at)?;
    println!("    byte at {at} (/usr + {FLIP_AT}): {before:#04x} -> {after:#04x}");
    t.checks.eq(
        "one byte of /usr's partition flipped in the overlay (qemu-io)",
        !before,
        after,
    );
    Ok(disk)
}

fn read_byte(disk: &Path, at: u64) -> Result<u8, DriverError> {
    let out = tool::stdout(
        Command::new("qemu-io")
            .args(["-f", "qcow2", "-r", "-c"])
            .arg(format!("read -v {at} 1"))
            .arg(disk),
    )?;
    qemu_io_byte(&out)
        .ok_or_else(|| DriverError::Build(format!("qemu-io read -v printed no byte: {out:?}")))
}

/// The byte of `qemu-io -c 'read -v OFFSET 1'`: "000003e8:  68  h".
fn qemu_io_byte(out: &str) -> Option<u8> {
    let line = out.lines().next()?;
    let (_, rest) = line.split_once(':')?;
    u8::from_str_radix(rest.split_whitespace().next()?, 16).ok()
}

/// Boots `disk` through its GRUB. A booting scenario: waits for bootstrapd's outcome line, runs
/// GUEST_COMMAND over SSH as root, powers off. A refused one: waits for qemu to end by itself.
fn boot(
    t: &mut DebTest,
    s: &Scenario,
    disk: &Path,
    seed: &Path,
    serial: &Path,
    key: &ssh::Key,
) -> Result<Seen, DriverError> {
    let port = ssh::free_port().map_err(|source| DriverError::Write {
        path: "127.0.0.1:0".into(),
        source,
    })?;
    let qmp = t.opts.work.join("qmp.sock");
    let _ = std::fs::remove_file(&qmp);
    let nic = (MAC, ssh::hostfwd(port, None));
    let args = deb::disk_boot_args(1536, serial, disk, seed, nic, &qmp);
    let mut vm = Vm::start(&args, serial)?;
    if s.expect == Expect::Refused {
        let ended = wait_for_exit(&mut vm, REFUSED_TIMEOUT);
        t.time(
            &format!("{}: qemu start to its exit", s.name),
            vm.started.elapsed().as_secs(),
        );
        let console = vm.console();
        vm.kill();
        return Ok(Seen {
            outcome: qemu::bootstrapd_outcome(&console),
            console,
            guest: None,
            ended_by_itself: ended,
        });
    }
    let outcome = vm.wait_for(
        t.opts.boot_timeout,
        Duration::from_secs(5),
        qemu::bootstrapd_outcome,
    );
    t.time(
        &format!("{}: qemu start to bootstrapd's outcome", s.name),
        vm.started.elapsed().as_secs(),
    );
    println!(
        "    serial: {}",
        outcome.as_deref().unwrap_or("no outcome line")
    );
    let guest = ssh::run(key, "root", port, GUEST_COMMAND, Duration::from_secs(120));
    println!("    ssh root@guest: exit {}", guest.code);
    let ended = !vm.alive();
    vm.power_down(&qmp, Duration::from_secs(120));
    t.time(
        &format!("{}: qemu start to exit", s.name),
        vm.started.elapsed().as_secs(),
    );
    Ok(Seen {
        console: vm.console(),
        outcome,
        guest: Some(guest),
        ended_by_itself: ended,
    })
}

/// Whether the VM ended by itself within `timeout`.
fn wait_for_exit(vm: &mut Vm, timeout: Duration) -> bool {
    let t = Instant::now();
    while vm.alive() && t.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(500));
    }
    !vm.alive()
}

/// One scenario's checks.
fn judge(t: &mut DebTest, s: &Scenario, image: &Image, seen: &Seen) {
    let c = &mut t.checks;
    let name = s.name;
    if s.expect == Expect::Refused {
        judge_refused(c, name, seen);
        return;
    }
    judge_verified_boot(c, name, &seen.console, &image.usr_hash);
    judge_outcome(c, s, seen.outcome.as_deref());
    c.check(
        &format!("{name}: the VM ran until powered off"),
        !seen.ended_by_itself,
        "qemu ended by itself",
    );
    let shown = seen.guest.as_ref().map_or("", |g| g.stdout.as_str());
    judge_usr(c, name, s.node, shown, &image.usr_hash);
    match s.node {
        Node::Worker => judge_agent(c, name, shown),
        Node::Rke1Sysext => judge_docker(c, name, shown),
    }
}

/// GRUB started the kernel with the image's root hash, and the initramfs mounted /usr through
/// dm-verity.
fn judge_verified_boot(c: &mut Checks, name: &str, console: &str, usr_hash: &str) {
    c.check(
        &format!("{name}: GRUB ran from the disk's MBR"),
        console.contains("GNU GRUB"),
        "no 'GNU GRUB' on the console",
    );
    let cmdline = console
        .lines()
        .find(|l| l.contains("Command line: BOOT_IMAGE=/boot/vmlinuz-"));
    c.check(
        &format!("{name}: GRUB gave the kernel usrhash= with the image's root hash"),
        cmdline.is_some_and(|l| l.split(' ').any(|w| w == format!("usrhash={usr_hash}"))),
        format!("kernel command line: {cmdline:?}"),
    );
    let verified = format!("bootstrapd-verity: /usr verified by dm-verity (root hash {usr_hash})");
    c.check(
        &format!("{name}: the initramfs opened /usr through dm-verity and mounted it"),
        console.contains(&verified),
        format!("no {verified:?} on the console"),
    );
}

fn judge_outcome(c: &mut Checks, s: &Scenario, outcome: Option<&str>) {
    let detail = format!("its outcome line: {}", outcome.unwrap_or("none"));
    match s.expect {
        Expect::Registered => c.check(
            &format!("{}: bootstrapd's run ended done", s.name),
            qemu::outcome_done(outcome),
            detail,
        ),
        _ => c.check(
            &format!(
                "{}: bootstrapd's run ended done, every stage already done",
                s.name
            ),
            qemu::outcome_done(outcome) && outcome.is_some_and(|o| o.contains("already done")),
            detail,
        ),
    }
}

/// The part of GUEST_COMMAND's output after `@@name` up to the next section.
fn section<'a>(shown: &'a str, name: &str) -> Vec<&'a str> {
    let head = format!("@@{name}");
    shown
        .lines()
        .skip_while(|l| l.trim() != head)
        .skip(1)
        .take_while(|l| !l.starts_with("@@"))
        .map(str::trim)
        .collect()
}

/// What the guest showed of /usr: mounted from /dev/mapper/usr (under the system extension's
/// overlay when one is merged), read-only, verified with the image's root hash; no failed unit.
fn judge_usr(c: &mut Checks, name: &str, node: Node, shown: &str, usr_hash: &str) {
    let usr = section(shown, "usr");
    let ro = |l: &&str| {
        l.split_whitespace()
            .nth(2)
            .is_some_and(|o| o.split(',').any(|o| o == "ro"))
    };
    let (what, ok) = match node {
        Node::Worker => (
            "/usr is /dev/mapper/usr, squashfs, mounted read-only",
            matches!(usr.as_slice(), [l] if l.starts_with("/dev/mapper/usr squashfs ") && ro(l)),
        ),
        Node::Rke1Sysext => (
            "/usr is the system extension's overlay, read-only",
            usr.iter()
                .any(|l| l.split_whitespace().nth(1) == Some("overlay") && ro(l)),
        ),
    };
    c.check(
        &format!("{name}: {what}"),
        ok,
        format!("findmnt /usr: {usr:?}"),
    );
    let verity = section(shown, "verity");
    let field = |k: &str| {
        verity
            .iter()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim_start_matches(':').trim()))
    };
    c.check(
        &format!("{name}: veritysetup status usr: VERITY, verified, the image's root hash"),
        field("type") == Some("VERITY")
            && field("status") == Some("verified")
            && field("root hash") == Some(usr_hash),
        format!("{verity:?}"),
    );
    let write = section(shown, "write");
    c.check(
        &format!("{name}: a write to /usr fails (read-only file system)"),
        write.iter().any(|l| l.contains("Read-only file system"))
            && write.last().is_some_and(|l| *l != "exit=0"),
        format!("{write:?}"),
    );
    // A unit that wants to write to /usr, or systemd's own verity generator finding devices
    // it cannot open, would show here.
    let failed: Vec<&str> = section(shown, "failed")
        .into_iter()
        .filter(|l| !l.is_empty())
        .collect();
    c.check(
        &format!("{name}: no failed systemd unit"),
        shown.contains("@@failed") && failed.is_empty(),
        format!("{failed:?}"),
    );
}

/// The system agent went to /opt, not to the read-only /usr/local.
fn judge_agent(c: &mut Checks, name: &str, shown: &str) {
    let agent = section(shown, "agent");
    c.check(
        &format!("{name}: the system agent is in /opt/rancher-system-agent/bin"),
        agent.contains(&"rancher-system-agent"),
        format!("{agent:?}"),
    );
    let usr_local = section(shown, "usrlocal");
    c.check(
        &format!("{name}: nothing of the agent in /usr/local/bin"),
        !usr_local.iter().any(|l| l.contains("rancher")),
        format!("{usr_local:?}"),
    );
}

/// Docker from the merged extension, not from a package, running the agent container.
fn judge_docker(c: &mut Checks, name: &str, shown: &str) {
    let sysext = section(shown, "sysext");
    c.check(
        &format!("{name}: systemd-sysext has the docker extension merged on /usr"),
        sysext
            .iter()
            .any(|l| l.starts_with("/usr") && l.contains("docker")),
        format!("{sysext:?}"),
    );
    let docker = section(shown, "docker");
    // Debian's docker.io puts dockerd in /usr/sbin; the verified /usr has none of its own.
    c.check(
        &format!("{name}: docker.service active, dockerd under /usr (the extension)"),
        docker.first() == Some(&"active")
            && docker
                .get(1)
                .is_some_and(|p| ["/usr/sbin/dockerd", "/usr/bin/dockerd"].contains(p)),
        format!("{docker:?}"),
    );
    c.check(
        &format!("{name}: the rancher-agent container runs"),
        docker
            .iter()
            .skip(2)
            .any(|l| l.contains("rancher/rancher-agent")),
        format!("{docker:?}"),
    );
    let dpkg = section(shown, "dpkg");
    c.check(
        &format!("{name}: no docker.io package installed"),
        !dpkg.iter().any(|l| l.starts_with("ii")),
        format!("{dpkg:?}"),
    );
}

/// A refused boot: the kernel's corruption report and the initramfs' refusal, no bootstrapd,
/// no login, and qemu ended by itself.
fn judge_refused(c: &mut Checks, name: &str, seen: &Seen) {
    let console = &seen.console;
    let corrupt = console
        .lines()
        .find(|l| l.contains("device-mapper: verity") && l.contains("is corrupted"));
    c.check(
        &format!("{name}: the kernel's dm-verity reported the corrupt block"),
        corrupt.is_some(),
        "no 'device-mapper: verity: ...: data block N is corrupted' on the console",
    );
    c.check(
        &format!("{name}: the initramfs refused to boot"),
        console.contains("bootstrapd-verity: REFUSING TO BOOT"),
        "no 'bootstrapd-verity: REFUSING TO BOOT' on the console",
    );
    c.check(
        &format!("{name}: bootstrapd never ran (no outcome line, no login prompt)"),
        seen.outcome.is_none() && !console.contains("login:"),
        format!("outcome {:?}", seen.outcome),
    );
    c.check(
        &format!("{name}: the VM ended by itself (panic=, -no-reboot)"),
        seen.ended_by_itself,
        format!("still running after {}s", REFUSED_TIMEOUT.as_secs()),
    );
}

/// The server's record after each boot: one system-agent worker, registered once, and
/// `rke1_nodes` rke1 nodes.
fn judge_record(t: &mut DebTest, name: &str, rke1_nodes: usize) {
    let what = format!(
        "{name}: the Rancher test server holds one system-agent worker, registered once, and {rke1_nodes} rke1 node(s)"
    );
    match crate::server::records(&t.host.nodes_json()) {
        Ok(records) => {
            println!(
                "    server record: {}",
                crate::server::summary_line(&records)
            );
            t.checks.check(
                &what,
                records_as_expected(&records, rke1_nodes),
                crate::server::summary_line(&records),
            );
        }
        Err(e) => t.checks.fail(&what, &e.to_string()),
    }
}

fn records_as_expected(records: &[NodeRecord], rke1_nodes: usize) -> bool {
    let (workers, others): (Vec<NodeRecord>, Vec<NodeRecord>) = records
        .iter()
        .cloned()
        .partition(|r| r.generation == Generation::SystemAgent);
    deb::one_worker_registered_once(&workers)
        && others.len() == rke1_nodes
        && others.iter().all(|r| r.generation == Generation::Rke1)
}

/// The root partition after both boots: its /usr mount point is empty (nothing was written
/// underneath the verified /usr), and what bootstrapd wrote persisted on it.
fn judge_root_partition(c: &mut Checks, mnt: &Path) {
    let under: Vec<String> = std::fs::read_dir(mnt.join("usr"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_else(|e| vec![format!("unreadable: {e}")]);
    c.eq(
        "the root partition's /usr mount point is empty",
        Vec::<String>::new(),
        under,
    );
    let agent = mnt.join("opt/rancher-system-agent/bin/rancher-system-agent");
    c.check(
        "the agent persisted on the root partition (/opt)",
        agent.is_file(),
        format!("no {}", agent.display()),
    );
    let state = mnt.join("var/lib/bootstrapd");
    c.check(
        "bootstrapd's state persisted on the root partition (/var/lib/bootstrapd)",
        state.is_dir(),
        format!("no {}", state.display()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "5d4ef2c6f0b8a1c3e9d7b6a5f4e3d2c1b0a99887766554433221100ffeeddccb";

    #[test]
    fn qemu_io_prints_the_byte_in_hex() {
        assert_eq!(
            qemu_io_byte("000003e8:  68  h\nread 1/1 bytes at offset 1000\n"),
            Some(0x68)
        );
        assert_eq!(qemu_io_byte("0000abcd:  ff  .\n"), Some(0xff));
        assert_eq!(qemu_io_byte("read failed: Input/output error\n"), None);
        assert_eq!(qemu_io_byte(""), None);
    }

    fn guest(hash: &str, mount: &str, touch: &str) -> String {
        format!(
            "@@usr\n{mount}\n@@verity\n/dev/mapper/usr is active and is in use.\n  type:        VERITY\n  status:      verified\n  hash type:   1\n  root hash:   {hash}\n@@write\n{touch}\n@@agent\nrancher-system-agent\nrancher-system-agent-uninstall.sh\n@@usrlocal\n@@failed\n"
        )
    }

    fn judge_guest(c: &mut Checks, name: &str, shown: &str, hash: &str) {
        judge_usr(c, name, Node::Worker, shown, hash);
        judge_agent(c, name, shown);
    }

    #[test]
    fn an_rke1_guest_runs_docker_from_the_extension() {
        let shown = format!(
            "@@usr\n/dev/mapper/usr squashfs ro,relatime\nsysext overlay ro,nodev,relatime,lowerdir=/run/systemd/sysext/meta/usr:/run/systemd/sysext/extensions/docker/usr:/usr\n\
@@verity\n  type:        VERITY\n  status:      verified\n  root hash:   {HASH}\n\
@@write\ntouch: cannot touch '/usr/.bootstrapd-e2e-write': Read-only file system\nexit=1\n\
@@agent\n@@usrlocal\n@@sysext\nHIERARCHY EXTENSIONS SINCE\n/opt      none       -\n/usr      docker     Fri 2026-12-04 17:40:01 UTC\n\
@@docker\nactive\n/usr/sbin/dockerd\nrancher/rancher-agent:v2.6.14\n@@dpkg\nun \n@@failed\n"
        );
        let mut c = Checks::default();
        judge_usr(&mut c, "k", Node::Rke1Sysext, &shown, HASH);
        judge_docker(&mut c, "k", &shown);
        assert_eq!((c.passed, c.failed()), (8, 0), "{:?}", c.failures);
        // The worker's view of the same guest: /usr is not the bare verity device.
        let mut c = Checks::default();
        judge_usr(&mut c, "k", Node::Worker, &shown, HASH);
        assert_eq!(c.failed(), 1);
        let apt = shown
            .replace("/usr      docker", "/usr      none")
            .replace("un \n", "ii \n");
        let mut c = Checks::default();
        judge_docker(&mut c, "k", &apt);
        assert_eq!((c.passed, c.failed()), (2, 2));
    }

    #[test]
    fn the_guest_is_judged_from_its_sections() {
        let ro = "/dev/mapper/usr squashfs ro,relatime,errors=continue";
        let refused =
            "touch: cannot touch '/usr/.bootstrapd-e2e-write': Read-only file system\nexit=1";
        let mut c = Checks::default();
        judge_guest(&mut c, "b", &guest(HASH, ro, refused), HASH);
        assert_eq!((c.passed, c.failed()), (6, 0), "{:?}", c.failures);
        let other = HASH.replace('5', "6");
        let mut c = Checks::default();
        let rw = "/dev/vda1[/usr] ext4 rw,relatime";
        judge_guest(&mut c, "b", &guest(&other, rw, "exit=0"), HASH);
        assert_eq!((c.passed, c.failed()), (3, 3));
        let mut c = Checks::default();
        judge_guest(&mut c, "b", "", HASH);
        assert_eq!(
            c.passed, 1,
            "only 'nothing in /usr/local/bin' holds on no output"
        );
    }

    #[test]
    fn a_verified_boot_on_the_console() {
        let console = format!(
            "GNU GRUB  version 2.06\n[    0.000000] Command line: BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID=u ro console=ttyS0 usrhash={HASH} panic=10\n\
bootstrapd-verity: /usr verified by dm-verity (root hash {HASH}) and mounted read-only\n"
        );
        let mut c = Checks::default();
        judge_verified_boot(&mut c, "b", &console, HASH);
        assert_eq!((c.passed, c.failed()), (3, 0));
        let mut c = Checks::default();
        judge_verified_boot(&mut c, "b", &console, &HASH.replace('5', "6"));
        assert_eq!((c.passed, c.failed()), (1, 2));
    }

    #[test]
    fn a_refused_boot_on_the_console() {
        let console = "[    3.1] device-mapper: verity: 254:0: data block 0 is corrupted\n\
bootstrapd-verity: REFUSING TO BOOT: /dev/mapper/usr (dm-verity) could not be mounted\n\
Rebooting automatically due to panic= boot argument\n";
        let seen = Seen {
            console: console.to_string(),
            outcome: None,
            guest: None,
            ended_by_itself: true,
        };
        let mut c = Checks::default();
        judge_refused(&mut c, "r", &seen);
        assert_eq!((c.passed, c.failed()), (4, 0));
        let booted = Seen {
            console: "node login: bootstrapd run ended: done: x".to_string(),
            outcome: Some("bootstrapd run ended: done: x".to_string()),
            guest: None,
            ended_by_itself: false,
        };
        let mut c = Checks::default();
        judge_refused(&mut c, "r", &booted);
        assert_eq!((c.passed, c.failed()), (0, 4));
    }

    #[test]
    fn the_second_boot_must_say_already_done() {
        let second = &SCENARIOS[1];
        assert_eq!(second.expect, Expect::AlreadyRegistered);
        let mut c = Checks::default();
        judge_outcome(
            &mut c,
            second,
            Some(
                "bootstrapd run ended: done: every stage already done on this instance (run 2): nothing to change",
            ),
        );
        judge_outcome(
            &mut c,
            second,
            Some("bootstrapd run ended: done: node prepared and registered"),
        );
        assert_eq!((c.passed, c.failed()), (1, 1));
    }

    #[test]
    fn the_scenarios_boot_the_node_twice_then_a_corrupt_copy() {
        let uses: Vec<(DiskUse, Node, Expect)> = SCENARIOS
            .iter()
            .map(|s| (s.disk, s.node, s.expect))
            .collect();
        assert_eq!(
            uses,
            vec![
                (DiskUse::Node, Node::Worker, Expect::Registered),
                (DiskUse::Node, Node::Worker, Expect::AlreadyRegistered),
                (DiskUse::CorruptUsr, Node::Worker, Expect::Refused),
                (DiskUse::Fresh, Node::Rke1Sysext, Expect::Registered),
            ]
        );
    }

    fn record(generation: &str, roles: &[&str], count: u64) -> NodeRecord {
        serde_json::from_value(serde_json::json!({
            "name": "custom-ab", "generation": generation,
            "roles": roles, "labels": {}, "taints": [], "hostname": "h",
            "first_seen": "t", "last_seen": "t", "connect_count": count
        }))
        .expect("record")
    }

    #[test]
    fn the_record_holds_the_worker_once_and_the_rke1_nodes() {
        let w = record("system-agent", &["worker"], 1);
        let r = record("rke1", &["etcd", "controlplane", "worker"], 3);
        assert!(records_as_expected(std::slice::from_ref(&w), 0));
        assert!(!records_as_expected(std::slice::from_ref(&w), 1));
        assert!(records_as_expected(&[w.clone(), r.clone()], 1));
        assert!(!records_as_expected(&[w.clone(), r], 0));
        assert!(!records_as_expected(&[w.clone(), w], 0));
    }
}
