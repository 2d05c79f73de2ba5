//! Logging in to a driver-run VM with the host's OpenSSH client, through a qemu user-network
//! port forward on loopback (`hostfwd=tcp:127.0.0.1:PORT-:22`): the proof that the keys
//! bootstrapd wrote from the userdata's `ssh` let a login in to the guest's real sshd.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::tool::{self, Ran, ToolError};

/// A key pair made for one test run (no passphrase; the private half stays in the work dir).
pub struct Key {
    pub private: PathBuf,
    /// The public key line, as the userdata carries it.
    pub public: String,
}

impl Key {
    /// A fresh ed25519 key pair in `dir` (replacing one left by an earlier run).
    pub fn generate(dir: &Path) -> Result<Key, ToolError> {
        let private = dir.join("e2e_ed25519");
        let _ = std::fs::remove_file(&private);
        let _ = std::fs::remove_file(private.with_extension("pub"));
        let _ = std::fs::create_dir_all(dir);
        tool::stdout(
            Command::new("ssh-keygen")
                .args([
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "bootstrapd-e2e",
                    "-f",
                ])
                .arg(&private),
        )?;
        let public = std::fs::read_to_string(private.with_extension("pub"))
            .map_err(|source| ToolError::Spawn {
                command: format!("read {}.pub", private.display()),
                source,
            })?
            .trim()
            .to_string();
        Ok(Key { private, public })
    }
}

/// A free TCP port on loopback for the forward (the kernel's pick; qemu binds it right after).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The qemu user netdev option that forwards `port` on the host's loopback to the guest's sshd
/// at `guest` (None: the address qemu's DHCP hands out, 10.0.2.15; a guest with a static
/// address must be named, or the forward goes nowhere).
pub fn hostfwd(port: u16, guest: Option<&str>) -> String {
    format!("hostfwd=tcp:127.0.0.1:{port}-{}:22", guest.unwrap_or(""))
}

/// `ssh USER@127.0.0.1 -p PORT COMMAND` with only `key` (no agent, no password, no host-key
/// prompt: the guest's host keys are new at every boot), retried until `within` has passed
/// while the connection itself fails (sshd not up yet: ssh's status 255). The last attempt's
/// output.
pub fn run(key: &Key, user: &str, port: u16, command: &str, within: Duration) -> Ran {
    let started = Instant::now();
    loop {
        let ran = tool::run(
            Command::new("ssh")
                .args(["-F", "/dev/null", "-i"])
                .arg(&key.private)
                .args([
                    "-o",
                    "IdentitiesOnly=yes",
                    "-o",
                    "IdentityAgent=none",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "PasswordAuthentication=no",
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "-o",
                    "LogLevel=ERROR",
                    "-o",
                    "ConnectTimeout=20",
                    "-p",
                    &port.to_string(),
                    &format!("{user}@127.0.0.1"),
                    command,
                ]),
        )
        .unwrap_or_else(|e| Ran {
            code: -1,
            stdout: String::new(),
            stderr: e.to_string(),
        });
        if !retryable(&ran) || started.elapsed() >= within {
            return ran;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

/// ssh ends 255 when it could not connect or log in; a refused key is final, not a slow sshd.
fn retryable(ran: &Ran) -> bool {
    ran.code == 255 && !ran.stderr.contains("Permission denied")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_one_ed25519_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = Key::generate(dir.path()).expect("ssh-keygen");
        assert!(key.public.starts_with("ssh-ed25519 AAAA"), "{}", key.public);
        assert!(key.public.ends_with(" bootstrapd-e2e"));
        assert!(!key.public.contains('\n'));
        assert!(key.private.is_file());
    }

    #[test]
    fn only_a_connection_failure_is_retried() {
        let ran = |code, stderr: &str| Ran {
            code,
            stdout: String::new(),
            stderr: stderr.to_string(),
        };
        assert!(retryable(&ran(
            255,
            "ssh: connect to host 127.0.0.1 port 2222: Connection refused"
        )));
        assert!(retryable(&ran(
            255,
            "kex_exchange_identification: read: Connection reset by peer"
        )));
        assert!(!retryable(&ran(
            255,
            "ops@127.0.0.1: Permission denied (publickey)."
        )));
        assert!(!retryable(&ran(0, "")));
        assert!(!retryable(&ran(1, "")));
    }

    #[test]
    fn the_forward_stays_on_loopback() {
        assert_eq!(hostfwd(2222, None), "hostfwd=tcp:127.0.0.1:2222-:22");
        assert_eq!(
            hostfwd(2222, Some("10.0.2.50")),
            "hostfwd=tcp:127.0.0.1:2222-10.0.2.50:22"
        );
        assert_ne!(free_port().expect("port"), 0);
    }
}
