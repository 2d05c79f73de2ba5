//! A qemu the driver runs itself, for the boots scripts/vm.sh cannot make: through the disk's
//! own bootloader (qcow2) and from the network (PXE). The driver watches its serial log while it
//! runs, powers it off over QMP, and never leaves it running.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::report::clean;
// What bootstrapd prints on stdout when its run ends; its unit copies stdout to the console
// (StandardOutput=journal+console).
use bootstrapd::cli::notify::OUTCOME_PREFIX;

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("cannot start qemu-system-x86_64: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("cannot reset the serial log {path}: {source}")]
    Serial {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("QMP at {path}: {source}")]
    Qmp {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A running qemu-system-x86_64; killed when dropped.
pub struct Vm {
    child: Child,
    pub serial: PathBuf,
    command: String,
    pub started: Instant,
}

/// The arguments every driver-run VM shares: TCG (nested KVM hangs on the project's machines),
/// no default devices, no display, no reboot, serial console to `serial`.
pub fn base_args(memory_mib: u32, serial: &Path) -> Vec<String> {
    [
        "-accel",
        "tcg,tb-size=128",
        "-m",
        &memory_mib.to_string(),
        "-smp",
        "2",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-device",
        "virtio-rng-pci",
        "-serial",
        &format!("file:{}", serial.display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Vm {
    /// Starts qemu with `args` (which name `serial` as its console), printing the command line
    /// first so that a failed start can be repeated by hand.
    pub fn start(args: &[String], serial: &Path) -> Result<Vm, QemuError> {
        std::fs::write(serial, b"").map_err(|source| QemuError::Serial {
            path: serial.to_path_buf(),
            source,
        })?;
        let command = format!("qemu-system-x86_64 {}", args.join(" "));
        println!("    running: {command}");
        let child = Command::new("qemu-system-x86_64")
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .map_err(QemuError::Spawn)?;
        crate::host::guard(child.id() as i32);
        Ok(Vm {
            child,
            serial: serial.to_path_buf(),
            command,
            started: Instant::now(),
        })
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The cleaned serial log so far.
    pub fn console(&self) -> String {
        std::fs::read(&self.serial)
            .map(|b| clean(&String::from_utf8_lossy(&b)))
            .unwrap_or_default()
    }

    /// Polls the console every `every` until `find` returns something, the VM ends or `timeout`
    /// (from the VM's start) runs out. A VM that ended first is reported with its last lines.
    pub fn wait_for<T>(
        &mut self,
        timeout: Duration,
        every: Duration,
        find: impl Fn(&str) -> Option<T>,
    ) -> Option<T> {
        loop {
            let alive = self.alive();
            if let Some(t) = find(&self.console()) {
                return Some(t);
            }
            if !alive {
                self.tell_ended();
                return None;
            }
            if self.started.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(every);
        }
    }

    /// Why the test stopped early: qemu's status, the last console lines and the command.
    fn tell_ended(&mut self) {
        let status = self.child.try_wait().ok().flatten();
        println!(
            "    qemu ended after {}s ({}) before the node was done; last console lines:",
            self.started.elapsed().as_secs(),
            status.map_or("status unknown".to_string(), |s| s.to_string())
        );
        let console = self.console();
        let lines: Vec<&str> = console.lines().collect();
        for l in &lines[lines.len().saturating_sub(25)..] {
            println!("      {l}");
        }
        println!("    the command was: {}", self.command);
    }

    /// The ACPI power button over QMP, then up to `grace` for the guest to power off (a clean
    /// shutdown leaves its journal whole on disk); killed after that. Returns whether it powered
    /// off by itself.
    pub fn power_down(&mut self, qmp: &Path, grace: Duration) -> bool {
        if self.alive()
            && let Err(e) = qmp_powerdown(qmp)
        {
            println!("    QMP powerdown failed: {e}");
        }
        let t = Instant::now();
        while self.alive() && t.elapsed() < grace {
            std::thread::sleep(Duration::from_millis(500));
        }
        let clean = !self.alive();
        if !clean {
            println!(
                "    no clean power-off within {}s: killing qemu",
                grace.as_secs()
            );
        }
        self.kill();
        clean
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::host::unguard(self.child.id() as i32);
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `qmp_capabilities`, then `system_powerdown`, each answered by a `return` object.
fn qmp_powerdown(path: &Path) -> Result<(), QemuError> {
    let err = |source| QemuError::Qmp {
        path: path.to_path_buf(),
        source,
    };
    let stream = UnixStream::connect(path).map_err(err)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(err)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(err)?);
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line).map_err(err)?;
    for cmd in ["qmp_capabilities", "system_powerdown"] {
        writeln!(writer, "{}", serde_json::json!({ "execute": cmd })).map_err(err)?;
        loop {
            line.clear();
            if reader.read_line(&mut line).map_err(err)? == 0 {
                return Err(err(std::io::ErrorKind::UnexpectedEof.into()));
            }
            if qmp_is_return(&line) {
                break;
            }
        }
    }
    Ok(())
}

/// A QMP line that answers the command (events and other lines are skipped).
fn qmp_is_return(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.get("return").is_some())
}

/// bootstrapd's own line saying how its run ended, as journald forwarded it to the console:
/// "[  45.7] bootstrapd[263]: bootstrapd run ended: done: node prepared and registered".
/// Not systemd's "Started bootstrapd.service" line: systemd prints no status lines while a
/// getty holds the console, and the login prompt may come first (a CI run saw that).
pub fn bootstrapd_outcome(console: &str) -> Option<String> {
    console.lines().find_map(|l| {
        l.find(OUTCOME_PREFIX)
            .map(|i| l[i..].trim_end().to_string())
    })
}

/// The run ended "done": prepared and registered, nothing degraded.
pub fn outcome_done(outcome: Option<&str>) -> bool {
    outcome.is_some_and(|l| {
        l.strip_prefix(OUTCOME_PREFIX)
            .is_some_and(|v| v.starts_with("done:"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_line_is_bootstrapds_own() {
        let log = "[  OK  ] Started firewalld.service - firewalld - dynamic firewall daemon.\n\
pxe-node login: [   45.744345] bootstrapd[263]: bootstrapd run ended: done: node prepared and registered\r\n";
        let line = bootstrapd_outcome(log);
        assert_eq!(
            line.as_deref(),
            Some("bootstrapd run ended: done: node prepared and registered")
        );
        assert!(outcome_done(line.as_deref()));
        let failed = "[  9.1] bootstrapd[263]: bootstrapd run ended: failed: stage register failed";
        assert!(!outcome_done(bootstrapd_outcome(failed).as_deref()));
        let degraded = "bootstrapd run ended: degraded: done: with warnings";
        assert!(!outcome_done(Some(degraded)));
        // systemd's status lines are not bootstrapd's word.
        assert_eq!(
            bootstrapd_outcome(
                "[  OK  ] Started bootstrapd.service - bootstrapd node bootstrap agent."
            ),
            None
        );
        assert_eq!(bootstrapd_outcome(""), None);
        assert!(!outcome_done(None));
    }

    #[test]
    fn qmp_answers() {
        assert!(qmp_is_return("{\"return\": {}}\n"));
        assert!(!qmp_is_return(
            "{\"event\": \"POWERDOWN\", \"timestamp\": {\"seconds\": 1}}"
        ));
        assert!(!qmp_is_return("garbage"));
    }

    #[test]
    fn base_args_name_the_serial_log() {
        let a = base_args(1536, Path::new("/w/logs/serial.log"));
        assert!(a.contains(&"file:/w/logs/serial.log".to_string()));
        assert!(a.windows(2).any(|w| w == ["-m", "1536"]));
    }
}
