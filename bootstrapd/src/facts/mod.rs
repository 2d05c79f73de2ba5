//! Read-only probes of the host. Nothing here changes anything; `plan` turns these facts
//! into steps and `actions` carries them out.

pub mod host;
pub mod iptables;
pub mod kernel;
pub mod network;
pub mod runtime;
pub mod selinux;
pub mod usr_local;

use std::path::PathBuf;

/// A probe that could not read what it needed.
#[derive(Debug, thiserror::Error)]
pub enum FactError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} {args} exited with {status}: {stderr}")]
    Exit {
        program: String,
        args: String,
        status: String,
        stderr: String,
    },
    #[error("{program} did not finish within {secs} s")]
    Timeout { program: String, secs: u64 },
}

/// Reads a file that may legitimately be absent: Ok(None) then.
pub(crate) fn read_optional(path: &std::path::Path) -> Result<Option<String>, FactError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FactError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Output of a finished child process.
pub(crate) struct Output {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a system tool with a C locale (its output is parsed) and no stdin, bounded in time.
pub(crate) async fn run_tool(
    program: &str,
    args: &[&str],
    timeout: std::time::Duration,
) -> Result<Output, FactError> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        // systemd's socket is for bootstrapd alone: package scripts that found it would
        // send readiness of their own (systemd logs and drops it).
        .env_remove("NOTIFY_SOCKET")
        .env("LANG", "C")
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(timeout, cmd.output()).await {
        Ok(r) => r.map_err(|source| FactError::Spawn {
            program: program.to_string(),
            source,
        })?,
        Err(_) => {
            return Err(FactError::Timeout {
                program: program.to_string(),
                secs: timeout.as_secs(),
            });
        }
    };
    Ok(Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Last line of a tool's stderr, for one-line error messages.
pub(crate) fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}
