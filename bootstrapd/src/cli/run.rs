//! `bootstrapd run`: the whole first-boot job, stage by stage, journaled.

use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use crate::config::AgentConfig;
use crate::datasource;
use crate::fsutil::HostRoot;
use crate::plan::{Finding, Outcome};
use crate::signature;
use crate::state::{Stage, StageState, Store};
use crate::system::systemd::Systemd;
use crate::userdata::{self, Settings};

use super::{CliResult, notify};

pub async fn run(root: &HostRoot) -> CliResult {
    let mut store = Store::open(root)?;
    match run_stages(root, &mut store).await {
        Ok(code) => Ok(code),
        Err(e) => {
            error!("{e}");
            let _ = store.fail_run(e.0.clone());
            notify::ready(&format!("failed: {e}"));
            Ok(1)
        }
    }
}

async fn run_stages(root: &HostRoot, store: &mut Store) -> Result<i32, super::CliError> {
    notify::status(Stage::Fetch, "looking for userdata");
    let cfg = AgentConfig::load(root)?;
    let fetched = match datasource::fetch(root, &cfg).await? {
        Some(f) => f,
        None => {
            let msg = "no datasource offered userdata: nothing to do".to_string();
            info!("{msg}");
            store.disabled(msg.clone())?;
            notify::ready(&msg);
            return Ok(0);
        }
    };
    let digest = hex::encode(Sha256::digest(&fetched.userdata));
    let notes = store.begin(&fetched.instance_id, &fetched.source, &digest)?;
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

    // Validation runs on every boot: the settings are needed by the later stages, and
    // parsing is cheap. Nothing changes on the host before it passes.
    notify::status(Stage::Validate, "checking the userdata");
    let validate_done = store.is_done(Stage::Validate);
    if !validate_done {
        store.start_stage(Stage::Validate)?;
    }
    let settings = match validate(root, &fetched) {
        Ok((settings, findings, parse_notes)) => {
            if !validate_done {
                store.journal.notes.extend(parse_notes);
                store.finish_stage(Stage::Validate, findings, None)?;
            }
            settings
        }
        Err(e) => {
            store.finish_stage(Stage::Validate, vec![], Some(e.clone()))?;
            error!("userdata refused: {e}");
            notify::ready("failed: userdata refused");
            return Ok(1);
        }
    };

    if store.last_done() == Some(Stage::Register) {
        let note = format!(
            "every stage already done on this instance (run {}): nothing to change",
            store.journal.runs
        );
        info!("{note}");
        store.journal.notes.push(note.clone());
        let verdict = store.finish_run()?;
        notify::ready(&format!("{}: {note}", verdict.as_str()));
        return Ok(0);
    }

    let systemd = match Systemd::connect().await {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("systemd is not reachable over D-Bus ({e}); unit steps will fail");
            None
        }
    };

    if !store.is_done(Stage::Prepare) {
        let findings = stage_prepare(root, store, &settings, systemd.as_ref()).await;
        if store.finish_stage(Stage::Prepare, findings, None)? == StageState::Failed {
            return stage_failed(store, Stage::Prepare);
        }
    }
    if !store.is_done(Stage::Runtime) {
        let findings = stage_runtime(root, store, &settings, systemd.as_ref()).await;
        if store.finish_stage(Stage::Runtime, findings, None)? == StageState::Failed {
            return stage_failed(store, Stage::Runtime);
        }
    }
    if !store.is_done(Stage::Register) {
        let (findings, error) = stage_register(root, store, &settings, systemd.as_ref()).await;
        if store.finish_stage(Stage::Register, findings, error)? == StageState::Failed {
            return stage_failed(store, Stage::Register);
        }
    }
    let verdict = store.finish_run()?;
    info!("bootstrapd finished: {}", verdict.as_str());
    notify::ready(&format!("{}: node prepared and registered", verdict.as_str()));
    Ok(0)
}

fn stage_failed(store: &Store, stage: Stage) -> Result<i32, super::CliError> {
    let msg = store
        .journal
        .error
        .clone()
        .unwrap_or_else(|| format!("stage {} failed", stage.as_str()));
    error!("{msg}");
    notify::ready(&format!("failed: {msg}"));
    Ok(1)
}

/// Signature (when the image demands one), then parsing.
fn validate(
    root: &HostRoot,
    fetched: &datasource::Fetched,
) -> Result<(Settings, Vec<Finding>, Vec<String>), String> {
    let mut findings = Vec::new();
    let key = signature::trusted_key(root).map_err(|e| e.to_string())?;
    let signed = signature::verify(
        key.as_ref(),
        &fetched.source,
        &fetched.userdata,
        fetched.signature.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    if signed {
        findings.push(Finding::new(
            "signature",
            Outcome::Ok,
            "userdata signed by the image's trusted key",
        ));
    }
    let parsed = userdata::parse(&fetched.userdata).map_err(|e| {
        format!(
            "userdata from {} has problems:\n{e}",
            fetched.source
        )
    })?;
    findings.push(Finding::new(
        "userdata",
        Outcome::Ok,
        format!(
            "{} userdata, roles {}",
            parsed.format,
            parsed
                .settings
                .roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
    ));
    Ok((parsed.settings, findings, parsed.notes))
}
