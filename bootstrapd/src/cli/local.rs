//! `bootstrapd local`: the early stage (bootstrapd-local.service, before network-pre.target),
//! like cloud-init-local. It reads only datasources on this machine, and writes the
//! systemd-networkd files of their network-config before networkd starts, so the first
//! address the node takes is the configured one and the main run (after
//! network-online.target) fetches and registers over it.
//!
//! When the local datasource also holds the userdata, it then stops, disables and masks
//! firewalld before firewalld ever starts (cli/local_host.rs).
//!
//! It records what it did in /var/lib/bootstrapd/network.json ([`crate::state::network`]);
//! the main run refuses to go on when it failed, and `status` shows it.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use crate::actions::network::{NetworkWriteError, apply};
use crate::config::AgentConfig;
use crate::datasource::{self, DatasourceError, Source};
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
    match &outcome {
        // The host step only after the network part passed: a refused network-config stops
        // the main run, so nothing else may change either.
        Ok(Some((opts, source))) => {
            rec.host
                .extend(super::local_host::firewalld_early(root, opts, source).await);
        }
        Ok(None) => {}
        Err(e) => {
            rec.state = NetworkState::Failed;
            rec.error = Some(crate::actions::describe(e));
        }
    }
    save(root, &rec)?;
    let summary = rec.summary();
    if outcome.is_err() {
        error!("network: {summary}");
        eprintln!("bootstrapd local: {summary}");
        return Ok(1);
    }
    info!("network: {summary}");
    println!("bootstrapd local: {summary}");
    for line in &rec.host {
        println!("bootstrapd local: {line}");
    }
    Ok(0)
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

/// The local datasource found, with the options it was found with: the host step reads its
/// userdata.
type Found = (datasource::Options, Source);

/// Finds the local network-config, checks it, and writes its files; fills `rec` as it goes.
/// Nothing is written unless every check passed.
async fn write_network(
    root: &HostRoot,
    rec: &mut NetworkRecord,
) -> Result<Option<Found>, LocalError> {
    let opts = AgentConfig::load(root)?.datasource_options();
    let Some(found) = find(root, &opts).await? else {
        return Ok(None);
    };
    rec.source = Some(found.evidence);
    let local = Some((opts, found.source));
    let Some(file) = found.file else {
        return Ok(local);
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
    Ok(local)
}
