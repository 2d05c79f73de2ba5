//! `bootstrapd run`: the whole first-boot job, stage by stage, journaled.

use std::cell::Cell;

use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use crate::actions;
use crate::config::AgentConfig;
use crate::datasource;
use crate::facts;
use crate::fsutil::HostRoot;
use crate::plan;
use crate::plan::{Finding, Outcome};
use crate::signature::{self, SignatureError};
use crate::state::network::{NetworkRecord, NetworkState};
use crate::state::{Resources, Stage, Store};
use crate::system::systemd::Systemd;
use crate::userdata::{self, Settings, UserdataError};

use super::stages::{self, Ctx, Mode};
use super::{CliError, CliResult, notify};

pub async fn run(root: &HostRoot) -> CliResult {
    let started = std::time::Instant::now();
    // What starting the process cost (loader, runtime, logging), apart from the work.
    info!(
        process_cpu_ms = crate::state::own_cpu_ms(),
        "bootstrapd run starting"
    );
    let mut store = Store::open(root)?;
    let code = match run_stages(root, &mut store).await {
        Ok(code) => code,
        Err(e) => {
            let msg = actions::describe(&e);
            error!("{msg}");
            let _ = store.fail_run(msg.clone());
            notify::ready(&format!("failed: {msg}"));
            1
        }
    };
    let r = Resources::measure(started);
    info!(
        peak_rss_kib = r.peak_rss_kib,
        cpu_user_ms = r.cpu_user_ms,
        cpu_system_ms = r.cpu_system_ms,
        wall_ms = r.wall_ms,
        "bootstrapd's own footprint for this run (children excluded)"
    );
    store.journal.resources = Some(r);
    store.save()?;
    Ok(code)
}

async fn run_stages(root: &HostRoot, store: &mut Store) -> Result<i32, CliError> {
    let network = crate::state::network::load_this_boot(root)?;
    if let Some(rec) = &network
        && matches!(rec.state, NetworkState::Failed | NetworkState::Running)
    {
        return network_failed(store, rec);
    }
    let Some(fetched) = fetch_stage(root, store).await? else {
        return Ok(0);
    };
    // What the early stage did, when it did something; "no network-config" on every boot of
    // every node would only be noise.
    if let Some(rec) = &network
        && rec.state == NetworkState::Done
    {
        store
            .journal
            .notes
            .push(format!("network: {}", rec.summary()));
    }
    if let Some(rec) = &network {
        let early = rec.host.iter().map(|l| format!("early local stage: {l}"));
        store.journal.notes.extend(early);
    }
    // Validation runs on every boot: the settings are needed by the later stages, and
    // parsing is cheap. Nothing changes on the host before it passes.
    let Some(settings) = validate_stage(root, store, &fetched)? else {
        return Ok(1);
    };
    if store.last_done() == Some(Stage::Register) {
        return nothing_left(store);
    }
    let systemd = match Systemd::connect(root).await {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("systemd is not reachable over D-Bus ({e}); unit steps will fail");
            None
        }
    };
    let prefetch = if store.is_done(Stage::Prepare) || store.is_done(Stage::Runtime) {
        None
    } else {
        start_prefetch(root, &settings, systemd.as_ref()).await
    };
    let ctx = Ctx {
        root,
        settings: &settings,
        systemd: systemd.as_ref(),
        hostname: fetched.hostname.as_deref(),
        instance_id: Some(fetched.instance_id.as_str()),
        registration: store.journal.registration.clone(),
        prefetch: Cell::new(prefetch),
    };
    if let Some(stage) = stages::drive(&ctx, Mode::Apply(store)).await?.failed {
        return stage_failed(store, stage);
    }
    let verdict = store.finish_run()?;
    info!("bootstrapd finished: {}", verdict.as_str());
    notify::ready(&format!(
        "{}: node prepared and registered",
        verdict.as_str()
    ));
    Ok(0)
}

/// The fetch stage: the datasource's userdata, and the run begun in the journal for its
/// instance. None when no datasource offers userdata (nothing to do).
async fn fetch_stage(
    root: &HostRoot,
    store: &mut Store,
) -> Result<Option<datasource::Fetched>, CliError> {
    notify::status(Stage::Fetch, "looking for userdata");
    let cfg = AgentConfig::load(root)?;
    let Some(fetched) = datasource::fetch(root, &cfg.datasource_options()).await? else {
        let msg = "no datasource offered userdata: nothing to do".to_string();
        info!("{msg}");
        store.disabled(msg.clone())?;
        notify::ready(&format!("disabled: {msg}"));
        return Ok(None);
    };
    let digest = hex::encode(Sha256::digest(&fetched.userdata));
    let notes = store.begin(&fetched.instance_id, &fetched.source.to_string(), &digest)?;
    for n in &notes {
        info!("{n}");
    }
    if !store.is_done(Stage::Fetch) {
        store.start_stage(Stage::Fetch)?;
        let f = Finding::new(
            "datasource",
            Outcome::Ok,
            format!(
                "{} bytes of userdata from {} (instance {})",
                fetched.userdata.len(),
                fetched.source,
                fetched.instance_id
            ),
        );
        store.finish_stage(Stage::Fetch, vec![f], None)?;
    }
    Ok(Some(fetched))
}

/// The validate stage: the settings, or None when the userdata is refused (the stage
/// failed in the journal with the reasons).
fn validate_stage(
    root: &HostRoot,
    store: &mut Store,
    fetched: &datasource::Fetched,
) -> Result<Option<Settings>, CliError> {
    notify::status(Stage::Validate, "checking the userdata");
    let validate_done = store.is_done(Stage::Validate);
    if !validate_done {
        store.start_stage(Stage::Validate)?;
    }
    match validate(root, fetched) {
        Ok((settings, findings, parse_notes)) => {
            if !validate_done {
                store.journal.notes.extend(parse_notes);
                store.finish_stage(Stage::Validate, findings, None)?;
            }
            Ok(Some(settings))
        }
        Err(e) => {
            store.finish_stage(Stage::Validate, vec![], Some(e.to_string()))?;
            error!("userdata refused: {e}");
            notify::ready("failed: userdata refused");
            Ok(None)
        }
    }
}

/// The early stage refused the network-config (or was killed before it finished): the node is
/// on whatever DHCP gave it, not the network it was meant to have. Going on would fetch and register over the wrong network, so
/// the run fails with the reason, before fetching anything.
fn network_failed(store: &mut Store, rec: &NetworkRecord) -> Result<i32, CliError> {
    let msg = format!(
        "the early local stage (bootstrapd local) failed on this boot, so the network is not \
         configured as network-config says: {}",
        match &rec.error {
            Some(e) => e.clone(),
            None => rec.summary(),
        }
    );
    error!("{msg}");
    store.journal.progress = None;
    store.fail_run(msg.clone())?;
    notify::ready(&format!("failed: {msg}"));
    Ok(1)
}

/// Every stage done on this instance: a reboot changes nothing, and says so.
fn nothing_left(store: &mut Store) -> Result<i32, CliError> {
    let note = format!(
        "every stage already done on this instance (run {}): nothing to change",
        store.journal.runs
    );
    info!("{note}");
    store.journal.notes.push(note.clone());
    let verdict = store.finish_run()?;
    notify::ready(&format!("{}: {note}", verdict.as_str()));
    Ok(0)
}

fn stage_failed(store: &Store, stage: Stage) -> Result<i32, CliError> {
    let msg = store
        .journal
        .error
        .clone()
        .unwrap_or_else(|| format!("stage {} failed", stage.as_str()));
    error!("{msg}");
    notify::ready(&format!("failed: {msg}"));
    Ok(1)
}

/// Why userdata is refused before anything runs.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("userdata from {origin} has problems:\n{problems}")]
    Problems {
        origin: String,
        problems: UserdataError,
    },
}

/// Signature (when the image demands one), then parsing.
pub fn validate(
    root: &HostRoot,
    fetched: &datasource::Fetched,
) -> Result<(Settings, Vec<Finding>, Vec<String>), Refused> {
    let mut findings = Vec::new();
    let key = signature::trusted_key(root)?;
    let signed = signature::verify(
        key.as_ref(),
        &fetched.source.to_string(),
        &fetched.userdata,
        fetched.signature.as_deref(),
    )?;
    if signed {
        findings.push(Finding::new(
            "signature",
            Outcome::Ok,
            "userdata signed by the image's trusted key",
        ));
    }
    let parsed = userdata::parse(&fetched.userdata).map_err(|problems| Refused::Problems {
        origin: fetched.source.to_string(),
        problems,
    })?;
    let roles: Vec<&str> = parsed.settings.roles.iter().map(|r| r.as_str()).collect();
    findings.push(Finding::new(
        "userdata",
        Outcome::Ok,
        format!("{} userdata, roles {}", parsed.format, roles.join(",")),
    ));
    Ok((parsed.settings, findings, parsed.notes))
}

/// Starts downloading the runtime's packages, to overlap the host preparation, when the
/// runtime stage is going to install them from the repositories as configured now.
async fn start_prefetch(
    root: &HostRoot,
    settings: &Settings,
    systemd: Option<&Systemd>,
) -> Option<actions::runtime::Prefetch> {
    if !root.is_live() {
        return None;
    }
    let facts = facts::runtime::gather(root, settings, systemd).await;
    // An install cut short must be finished first: apt downloads nothing until then.
    if !facts.unfinished.is_empty() {
        return None;
    }
    let (pm, packages) = plan::runtime::prefetchable(&plan::runtime::plan(settings, &facts))?;
    info!(packages = %packages.join(" "), "downloading the runtime's packages during host preparation");
    actions::runtime::Prefetch::start(pm, &packages, &settings.proxy)
}
