use std::path::{Path, PathBuf};

use crate::network;
use crate::userdata;

use super::CliResult;

/// Checks each file and prints every problem as `FILE:LINE:COL: PATH: MESSAGE`.
pub fn run(files: &[PathBuf], network_configs: &[PathBuf]) -> CliResult {
    let mut bad = network_configs
        .iter()
        .filter(|f| !network_config(f))
        .count();
    for file in files {
        let name = file.display();
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                println!("{name}: cannot read: {e}");
                bad += 1;
                continue;
            }
        };
        match userdata::parse(&bytes) {
            Ok(parsed) => {
                println!("{name}: ok ({})", parsed.format);
                for note in &parsed.notes {
                    println!("{name}: note: {note}");
                }
                // The node's facts are not here: say what the template makes of example ones.
                if let Some(userdata::HostnameSetting::Template(t)) = &parsed.settings.hostname {
                    println!("{name}: note: {}", userdata::identity::template_note(t));
                }
            }
            Err(e) => {
                bad += 1;
                for line in e.to_string().lines() {
                    println!("{name}:{line}");
                }
            }
        }
    }
    Ok(if bad == 0 { 0 } else { 1 })
}

/// Checks a network-config file; prints the files it would make, or every problem. False
/// when it is refused.
fn network_config(file: &Path) -> bool {
    let name = file.display().to_string();
    let bytes = match network::read_file(file) {
        Ok(b) => b,
        Err(e) => {
            println!("{name}: cannot read: {e}");
            return false;
        }
    };
    match network::parse(&bytes) {
        Ok(config) => {
            let files = network::render(&config);
            println!(
                "{name}: ok (network-config, {} interface(s))",
                config.ethernets.len()
            );
            for f in files {
                println!("{name}: note: writes /etc/systemd/network/{}", f.name);
            }
            true
        }
        Err(e) => {
            println!("{}", super::local::prefixed(&name, &e));
            false
        }
    }
}

pub fn schema() -> CliResult {
    println!("{}", userdata::schema_json());
    Ok(0)
}
