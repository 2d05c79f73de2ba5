//! `bootstrapd local`: the early stage (bootstrapd-local.service, before network-pre.target),
//! like cloud-init-local. It reads only datasources on this machine, and writes the
//! systemd-networkd files of their network-config before networkd starts, so the first
//! address the node takes is the configured one and the main run (after
//! network-online.target) fetches and registers over it.
//!
//! It records what it did in /var/lib/bootstrapd/network.json ([`crate::state::network`]);
//! the main run refuses to go on when it failed, and `status` shows it.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use crate::actions::network::{NetworkWriteError, apply};
use crate::config::AgentConfig;
use crate::datasource::{self, DatasourceError};
use crate::fsutil::HostRoot;
use crate::network::{self, NetworkConfigError};
use crate::state::network::{NetworkRecord, NetworkState, save};

use super::CliResult;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Datasource(#[from] DatasourceError),
    #[error("{}", prefixed(place, problems))]
    Refused {
        place: String,
        problems: NetworkConfigError,
    },
    #[error(transparent)]
    Write(#[from] NetworkWriteError),
}

/// Every problem as `PLACE:LINE:COL: PATH: MESSAGE`, one a line, as `validate` prints them.
pub fn prefixed(place: &str, problems: &NetworkConfigError) -> String {
    problems
        .problems
        .iter()
        .map(|p| {
            if p.line > 0 {
                format!("{place}:{p}")
            } else {
                format!("{place}: {p}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub async fn run(root: &HostRoot) -> CliResult {
    save(root, &NetworkRecord::new(NetworkState::Running))?;
    let mut rec = NetworkRecord::new(NetworkState::Nothing);
    let outcome = write_network(root, &mut rec).await;
    if let Err(e) = &outcome {
        rec.state = NetworkState::Failed;
        rec.error = Some(crate::actions::describe(e));
    }
    save(root, &rec)?;
    match outcome {
        Ok(()) => {
            info!("network: {}", rec.summary());
            println!("bootstrapd local: {}", rec.summary());
            Ok(0)
        }
        Err(_) => {
            let msg = rec.summary();
            error!("network: {msg}");
            eprintln!("bootstrapd local: {msg}");
            Ok(1)
        }
    }
}

/// How long to wait for a seed the kernel command line promises. udev coldplug has been
/// triggered, not finished: a CD or USB drive's driver may still be loading.
const SEED_WAIT: Duration = Duration::from_secs(5);
const SEED_POLL: Duration = Duration::from_millis(250);

/// The local datasource, waiting up to [`SEED_WAIT`] for one only when the kernel command
/// line says there is one; otherwise a machine without a seed is answered at once.
async fn find(
    root: &HostRoot,
    opts: &datasource::Options,
) -> Result<Option<datasource::LocalNetwork>, DatasourceError> {
    let deadline = Instant::now() + SEED_WAIT;
    loop {
        let found = datasource::local_network_config(root, opts).await;
        // An explicit `bootstrapd.datasource=nocloud` answers "missing" until the drive is there.
        let missing = matches!(found, Ok(None) | Err(DatasourceError::Missing { .. }));
        if !missing || Instant::now() >= deadline || !datasource::seed_expected(root) {
            return found;
        }
        tokio::time::sleep(SEED_POLL).await;
    }
}

/// Finds the local network-config, checks it, and writes its files; fills `rec` as it goes.
/// Nothing is written unless every check passed.
async fn write_network(root: &HostRoot, rec: &mut NetworkRecord) -> Result<(), LocalError> {
    let cfg = AgentConfig::load(root)?;
    let Some(found) = find(root, &cfg.datasource_options()).await? else {
        return Ok(());
    };
    rec.source = Some(found.evidence);
    let Some(file) = found.file else {
        return Ok(());
    };
    rec.file = Some(file.place.clone());
    rec.sha256 = Some(hex::encode(Sha256::digest(&file.data)));
    let config = network::parse(&file.data).map_err(|problems| LocalError::Refused {
        place: file.place.clone(),
        problems,
    })?;
    let applied = apply(root, &network::render(&config), false)?;
    for f in &applied.foreign {
        warn!(
            "{f} is named like bootstrapd's files but is not one of them (or was edited): left alone"
        );
    }
    rec.state = NetworkState::Done;
    rec.files = applied.files;
    rec.written = applied.written;
    rec.removed = applied.removed;
    Ok(())
}
