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

use crate::system::process::{self, CommandSpec, ProcessError};
pub(crate) use crate::system::process::{Output, last_line};

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
    #[error(transparent)]
    Process(#[from] ProcessError),
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

/// Runs a system tool (its output is parsed) through the one process runner, bounded in time.
pub(crate) async fn run_tool(
    program: &str,
    args: &[&str],
    timeout: std::time::Duration,
) -> Result<Output, FactError> {
    Ok(process::run(&CommandSpec::new(program, args), timeout).await?)
}
