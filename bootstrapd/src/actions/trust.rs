//! `trusted_ca` applied: bootstrapd's CA files written and removed, the distribution's tool
//! run, and the bundle it extracted checked for every certificate; Docker restarted when
//! the plan says so.

use std::path::PathBuf;
use std::time::Duration;

use crate::actions::{StepFailure, StepResult};
use crate::facts::trust::{TrustStore, fingerprints};
use crate::fsutil::{HostRoot, write_atomic};
use crate::plan::trusted_ca::{CaFile, StoreChange, listing};
use crate::system::process::{self, CommandSpec, ProcessError};
use crate::system::systemd::Systemd;

/// update-ca-trust extract and p11-kit take seconds; a minute is far beyond either.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum TrustStoreError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("removing {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("`{command}` exited with {status}: {stderr}")]
    Tool {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{bundle} lacks {missing} certificate(s) after `{command}` (sha256 {first})")]
    NotExtracted {
        bundle: String,
        command: String,
        missing: usize,
        first: String,
    },
}

impl TrustStoreError {
    fn failure(self) -> StepFailure {
        let remedy = match &self {
            TrustStoreError::Write { .. } | TrustStoreError::Remove { .. } => {
                "check that the trust store's directory is writable"
            }
            _ => "run the tool by hand and read its output; check the CA files it was given",
        };
        StepFailure::new(crate::actions::describe(&self), remedy.into())
    }
}

/// The files, then the tool: on the live host, or below a root when the caller lets it act
/// (`--live-system`, where it is the tree's own tool). A tree without it keeps its files
/// and the tool runs on its first boot (its bundle lacks them: see `plan::trusted_ca`).
pub(crate) async fn apply(root: &HostRoot, change: &StoreChange) -> StepResult {
    let StoreChange {
        store,
        tool,
        write,
        remove,
        expect,
    } = change;
    files(root, write, remove).map_err(TrustStoreError::failure)?;
    let mut did = Vec::new();
    if !write.is_empty() {
        did.push(format!("wrote {}", listing(write)));
    }
    if !remove.is_empty() {
        did.push(format!("removed {}", remove.join(", ")));
    }
    if root.system_service("trust store tool").is_err() {
        did.push(format!(
            "{tool} not run for a --root tree (it runs on the first boot)"
        ));
        return Ok(did.join("; "));
    }
    let command = run_tool(root, *store, tool, expect)
        .await
        .map_err(TrustStoreError::failure)?;
    did.push(format!("ran `{command}`"));
    Ok(did.join("; "))
}

fn files(root: &HostRoot, write: &[CaFile], remove: &[String]) -> Result<(), TrustStoreError> {
    for f in write {
        let path = root.path(&f.path);
        // 0644: certificates are public, and every TLS client on the host reads them.
        write_atomic(&path, f.content.as_bytes(), 0o644)
            .map_err(|source| TrustStoreError::Write { path, source })?;
    }
    for r in remove {
        let path = root.path(r);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(TrustStoreError::Remove { path, source }),
        }
    }
    Ok(())
}

/// Runs the store's tool and checks its bundle; returns the command as run.
async fn run_tool(
    root: &HostRoot,
    store: TrustStore,
    tool: &str,
    expect: &[String],
) -> Result<String, TrustStoreError> {
    let (_, args) = store.tool();
    let program = root.path(tool).to_string_lossy().into_owned();
    let spec = CommandSpec::new(&program, args);
    let out = process::run(&spec, TOOL_TIMEOUT).await?;
    if !out.status.success() {
        return Err(TrustStoreError::Tool {
            command: spec.to_string(),
            status: out.status.to_string(),
            stderr: process::last_line(&out.stderr),
        });
    }
    let bundle = root.path(store.bundle());
    let have = fingerprints(&std::fs::read_to_string(&bundle).unwrap_or_default());
    let missing: Vec<&String> = expect.iter().filter(|f| !have.contains(*f)).collect();
    if let Some(first) = missing.first() {
        return Err(TrustStoreError::NotExtracted {
            bundle: store.bundle().into(),
            command: spec.to_string(),
            missing: missing.len(),
            first: first.to_string(),
        });
    }
    Ok(spec.to_string())
}

/// Stop, then start: the daemon reads the system roots again when it starts.
pub(crate) async fn restart_unit(systemd: Option<&Systemd>, unit: &str) -> StepResult {
    let Some(sd) = systemd else {
        return Err(StepFailure::new(
            "systemd is not reachable over D-Bus".into(),
            format!("restart {unit} by hand"),
        ));
    };
    let fail = |what: &str, e: crate::system::systemd::SystemdError| {
        StepFailure::new(
            format!("{what} {unit}: {e}"),
            format!("check `journalctl -u {unit}`"),
        )
    };
    sd.stop_and_wait(unit)
        .await
        .map_err(|e| fail("stopping", e))?;
    sd.start_and_wait(unit)
        .await
        .map_err(|e| fail("starting", e))?;
    Ok(format!("restarted {unit}"))
}
