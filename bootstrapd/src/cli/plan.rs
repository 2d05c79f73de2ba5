//! `bootstrapd plan`: what `run` would do on this host, changing nothing. The same stages
//! as `run` ([`super::stages::STAGES`]), driven in preview mode.

use std::cell::Cell;
use std::path::PathBuf;

use crate::actions::network::apply;
use crate::config::AgentConfig;
use crate::datasource;
use crate::fsutil::HostRoot;
use crate::network;
use crate::plan::{Finding, Outcome};
use crate::state::Stage;
use crate::system::systemd::Systemd;

use super::stages::{self, Ctx, Mode};
use super::{CliError, CliResult};

pub async fn run(
    root: &HostRoot,
    file: Option<&PathBuf>,
    network_config: Option<&PathBuf>,
    json: bool,
) -> CliResult {
    let mut rows: Vec<(&'static str, Finding)> = network_rows(root, file, network_config)
        .await?
        .into_iter()
        .map(|f| ("local", f))
        .collect();
    let Some(fetched) = userdata(root, file).await? else {
        if !rows.is_empty() {
            print(&rows, json)?;
        }
        println!("no datasource offered userdata: `run` would do nothing");
        return Ok(failed(&rows));
    };
    let (settings, findings, notes) = match super::run::validate(root, &fetched) {
        Ok(v) => v,
        Err(e) => {
            if !rows.is_empty() {
                print(&rows, json)?;
            }
            println!("{e}");
            return Ok(1);
        }
    };
    for n in notes {
        println!("note: {n}");
    }
    rows.extend(findings.into_iter().map(|f| (Stage::Validate.as_str(), f)));
    let systemd = Systemd::connect(root).await.ok();
    let journal = crate::state::load(root)?;
    let ctx = Ctx {
        root,
        settings: &settings,
        systemd: systemd.as_ref(),
        hostname: fetched.hostname.as_deref(),
        instance_id: Some(fetched.instance_id.as_str()),
        registration: journal.registration,
        prefetch: Cell::new(None),
    };
    let staged = stages::drive(&ctx, Mode::Preview).await?.rows;
    rows.extend(staged.into_iter().map(|(s, f)| (s.as_str(), f)));
    print(&rows, json)?;
    Ok(failed(&rows))
}

fn failed(rows: &[(&str, Finding)]) -> i32 {
    i32::from(rows.iter().any(|(_, f)| f.outcome == Outcome::Failed))
}

/// The early local stage's rows: the network files it would write or remove. From the
/// network-config file given, else (when no userdata file is given either) from the local
/// datasources `bootstrapd local` reads. None when there is no network-config.
async fn network_rows(
    root: &HostRoot,
    userdata: Option<&PathBuf>,
    file: Option<&PathBuf>,
) -> Result<Vec<Finding>, CliError> {
    let (place, bytes) = match (file, userdata) {
        (Some(f), _) => (
            f.display().to_string(),
            network::read_file(f).map_err(CliError::read(f))?,
        ),
        (None, Some(_)) => return Ok(Vec::new()),
        (None, None) => {
            let cfg = AgentConfig::load(root)?;
            let found = datasource::local_network_config(root, &cfg.datasource_options()).await?;
            match found.and_then(|l| l.file) {
                Some(f) => (f.place, f.data),
                None => return Ok(Vec::new()),
            }
        }
    };
    let refused = |detail: String| {
        Ok(vec![Finding::new(
            "network-config",
            Outcome::Failed,
            detail,
        )])
    };
    let config = match network::parse(&bytes) {
        Ok(c) => c,
        Err(e) => return refused(super::local::prefixed(&place, &e).replace('\n', "; ")),
    };
    let applied = match apply(root, &network::render(&config), true) {
        Ok(a) => a,
        Err(e) => return refused(crate::actions::describe(&e)),
    };
    let mut rows = Vec::new();
    for f in &applied.files {
        let (outcome, verb) = if applied.written.contains(f) {
            (Outcome::WouldChange, "write")
        } else {
            (Outcome::Ok, "in place:")
        };
        rows.push(Finding::new(
            "network-config",
            outcome,
            format!("{verb} {f} (from {place})"),
        ));
    }
    for f in &applied.removed {
        rows.push(Finding::new(
            "network-config",
            Outcome::WouldChange,
            format!("remove {f} (no longer in {place})"),
        ));
    }
    for f in &applied.foreign {
        rows.push(Finding::new(
            "network-config",
            Outcome::Skipped,
            format!("{f}: not bootstrapd's, left alone"),
        ));
    }
    Ok(rows)
}

/// The userdata to plan for: the file given, else the datasource's.
async fn userdata(
    root: &HostRoot,
    file: Option<&PathBuf>,
) -> Result<Option<datasource::Fetched>, CliError> {
    let (source, userdata, signature) = match file {
        Some(f) => {
            let bytes = std::fs::read(f).map_err(CliError::read(f))?;
            let sig = std::fs::read(format!("{}.sig", f.display())).ok();
            (datasource::Origin::File(f.clone()), bytes, sig)
        }
        None => {
            let cfg = AgentConfig::load(root)?;
            match datasource::fetch(root, &cfg.datasource_options()).await? {
                Some(f) => return Ok(Some(f)),
                None => return Ok(None),
            }
        }
    };
    Ok(Some(datasource::Fetched {
        source,
        userdata,
        signature,
        metadata: serde_json::Value::Null,
        instance_id: String::new(),
        hostname: None,
    }))
}

fn print(rows: &[(&str, Finding)], json: bool) -> Result<(), CliError> {
    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|(stage, f)| serde_json::json!({"stage": stage, "finding": f}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{:<9} {:<24} {:<13} detail", "stage", "step", "outcome");
    for (stage, f) in rows {
        println!(
            "{:<9} {:<24} {:<13} {}",
            stage,
            f.step,
            f.outcome.as_str(),
            f.detail
        );
        if let Some(r) = &f.remedy {
            println!("{:<9} {:<24} {:<13} remedy: {r}", "", "", "");
        }
    }
    Ok(())
}
