//! `bootstrapd plan`: what `run` would do on this host, changing nothing. The same stages
//! as `run` ([`super::stages::STAGES`]), driven in preview mode.

use std::cell::Cell;
use std::path::PathBuf;

use crate::config::AgentConfig;
use crate::datasource;
use crate::fsutil::HostRoot;
use crate::plan::{Finding, Outcome};
use crate::state::Stage;
use crate::system::systemd::Systemd;

use super::stages::{self, Ctx, Mode};
use super::{CliError, CliResult};

pub async fn run(root: &HostRoot, file: Option<&PathBuf>, json: bool) -> CliResult {
    let Some(fetched) = userdata(root, file).await? else {
        println!("no datasource offered userdata: `run` would do nothing");
        return Ok(0);
    };
    let (settings, findings, notes) = match super::run::validate(root, &fetched) {
        Ok(v) => v,
        Err(e) => {
            println!("{e}");
            return Ok(1);
        }
    };
    for n in notes {
        println!("note: {n}");
    }
    let mut rows: Vec<(Stage, Finding)> =
        findings.into_iter().map(|f| (Stage::Validate, f)).collect();
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
    rows.extend(stages::drive(&ctx, Mode::Preview).await?.rows);
    print(&rows, json)?;
    let failed = rows.iter().any(|(_, f)| f.outcome == Outcome::Failed);
    Ok(if failed { 1 } else { 0 })
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

fn print(rows: &[(Stage, Finding)], json: bool) -> Result<(), CliError> {
    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|(stage, f)| serde_json::json!({"stage": stage.as_str(), "finding": f}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{:<9} {:<24} {:<13} detail", "stage", "step", "outcome");
    for (stage, f) in rows {
        println!(
            "{:<9} {:<24} {:<13} {}",
            stage.as_str(),
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
