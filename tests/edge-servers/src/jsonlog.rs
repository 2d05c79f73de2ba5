//! One JSON object per line per request, appended to a file the test reads afterwards.
//! Callers put only what is safe to keep in an entry: never a credential.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use crate::Error;

/// An append-only JSON-lines log; without a file it drops entries.
#[derive(Default)]
pub struct JsonLog {
    file: Option<Mutex<File>>,
}

impl JsonLog {
    /// Opens (creating or appending to) `path`, or a log that keeps nothing.
    pub fn open(path: Option<&Path>) -> Result<Self, Error> {
        let file = match path {
            Some(path) => Some(Mutex::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| Error::Io {
                        path: path.to_path_buf(),
                        source,
                    })?,
            )),
            None => None,
        };
        Ok(Self { file })
    }

    /// Appends `entry` plus a `time` field (RFC 3339, UTC); keys come out sorted.
    pub fn write(&self, entry: serde_json::Value) {
        let Some(file) = &self.file else { return };
        let mut line = serde_json::Map::new();
        line.insert("time".into(), now_rfc3339().into());
        if let serde_json::Value::Object(fields) = entry {
            line.extend(fields);
        }
        let mut text = serde_json::Value::Object(line).to_string();
        text.push('\n');
        // One write_all per line under the lock: concurrent requests never interleave a line.
        // A failed log write must not fail the request being served, so it is only reported.
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(text.as_bytes()) {
            eprintln!("log write failed: {e}");
        }
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
