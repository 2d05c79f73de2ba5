use std::path::PathBuf;

use crate::config::AgentConfig;
use crate::datasource;
use crate::fsutil::HostRoot;
use crate::secret::redact_json_all;
use crate::userdata;

use super::{CliError, CliResult};

/// Prints what the datasource offers, as bootstrapd understands it, with every secret
/// redacted: the parsed settings (never the raw userdata, which holds the token) and the
/// metadata, URLs without their passwords and queries.
pub async fn run(root: &HostRoot, file: Option<&PathBuf>) -> CliResult {
    let (source, instance_id, mut metadata, bytes) = match file {
        Some(f) => {
            let bytes = std::fs::read(f).map_err(CliError::read(f))?;
            (
                f.display().to_string(),
                None,
                serde_json::Value::Null,
                bytes,
            )
        }
        None => {
            let cfg = AgentConfig::load(root)?;
            match datasource::fetch(root, &cfg.datasource_options()).await? {
                Some(f) => (
                    f.source.to_string(),
                    Some(f.instance_id),
                    f.metadata,
                    f.userdata,
                ),
                None => {
                    println!("{{\"datasource\": null}}");
                    eprintln!("no datasource offered userdata");
                    return Ok(2);
                }
            }
        }
    };
    redact_json_all(&mut metadata);
    let (settings, problems, format, notes) = match userdata::parse(&bytes) {
        Ok(p) => (
            {
                // The token serializes redacted already; URLs as given may carry a password.
                let mut v = serde_json::to_value(&p.settings)?;
                redact_json_all(&mut v);
                v
            },
            Vec::new(),
            Some(p.format.to_string()),
            p.notes,
        ),
        Err(e) => (
            serde_json::Value::Null,
            e.to_string().lines().map(str::to_string).collect(),
            None,
            Vec::new(),
        ),
    };
    let out = serde_json::json!({
        "datasource": source,
        "instance_id": instance_id,
        "format": format,
        "settings": settings,
        "problems": problems,
        "notes": notes,
        "metadata": metadata,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(if problems.is_empty() { 0 } else { 1 })
}
