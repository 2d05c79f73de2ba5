use std::path::PathBuf;

use crate::userdata;

use super::CliResult;

/// Checks each file and prints every problem as `FILE:LINE:COL: PATH: MESSAGE`.
pub fn run(files: &[PathBuf]) -> CliResult {
    let mut bad = 0;
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

pub fn schema() -> CliResult {
    println!("{}", userdata::schema_json());
    Ok(0)
}
