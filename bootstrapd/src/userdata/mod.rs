//! Userdata: formats, the settings model, validation and the JSON schema.
//!
//! Accepted: a plain bootstrapd YAML document, a `#cloud-config` document whose `bootstrapd:`
//! key holds the settings, MIME multipart userdata (its cloud-config part), and gzip'd versions
//! of each. Validation is strict and reports every problem of a document at once, each with its
//! line and column, so one edit-and-retry round fixes them all.

pub(crate) mod ca;
mod formats;
pub mod identity;
pub mod proxy;
mod schema;
pub mod settings;
pub(crate) mod tree;
mod validate;

use std::fmt;

pub use settings::*;
pub use validate::check_node_name;
pub(crate) use validate::closest;

/// Userdata larger than this is refused before parsing (and so is its gunzipped form).
pub const MAX_USERDATA_BYTES: usize = 1 << 20;

/// What the userdata was, for logs and `validate` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// A plain bootstrapd YAML document.
    Yaml,
    /// A `#cloud-config` document with a `bootstrapd:` key.
    CloudConfig,
    /// MIME multipart; `part` is the 1-based index (in document order, nested parts flattened)
    /// of the part the settings came from, `inner` that part's own format.
    Multipart { part: usize, inner: Box<Format> },
    /// gzip-compressed userdata.
    Gzip(Box<Format>),
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Yaml => f.write_str("bootstrapd YAML"),
            Format::CloudConfig => f.write_str("#cloud-config"),
            Format::Multipart { part, inner } => {
                write!(f, "MIME multipart (part {part}: {inner})")
            }
            Format::Gzip(inner) => write!(f, "gzip({inner})"),
        }
    }
}

/// A validated document.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub settings: Settings,
    pub format: Format,
    /// Informational remarks (ignored cloud-config keys, ignored MIME parts).
    pub notes: Vec<String>,
}

/// One thing wrong with a document.
///
/// `line` and `column` are 1-based, in the text the YAML parser saw: after gunzip and, for a
/// base64 MIME part, after decoding (then [`UserdataError::origin`] says so). Plain MIME parts
/// are mapped back to lines of the whole message. `line == 0` means the problem concerns the
/// input as a whole (size, compression, MIME structure) and has no position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    /// Dotted path of the offending key or value, e.g. `rancher.ca_checksum`, `roles[1]`;
    /// empty for the document itself.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: ", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Why userdata was refused: every problem found, in document order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct UserdataError {
    pub problems: Vec<Problem>,
    /// Where positions are counted from when that is not the input itself, e.g.
    /// `MIME part 2 (base64-decoded)` or `gunzipped`. Printed before each position.
    pub origin: Option<String>,
}

impl UserdataError {
    fn whole(message: impl Into<String>) -> Self {
        UserdataError {
            problems: vec![Problem {
                line: 0,
                column: 0,
                path: String::new(),
                message: message.into(),
            }],
            origin: None,
        }
    }
}

impl fmt::Display for UserdataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            match &self.origin {
                Some(o) if p.line > 0 => write!(f, "{o}:{p}")?,
                _ => write!(f, "{p}")?,
            }
        }
        Ok(())
    }
}

/// Detects the format, decodes it and validates the settings.
pub fn parse(bytes: &[u8]) -> Result<Parsed, UserdataError> {
    let mut parsed = formats::parse(bytes)?;
    if parsed.settings.rancher.mode == RegistrationMode::Rke1 {
        parsed.notes.push(RKE1_NOTE.to_string());
    }
    Ok(parsed)
}

/// Shown by `bootstrapd validate` (and kept in the run's notes) for `rancher.mode: rke1`.
pub const RKE1_NOTE: &str = "warning: rancher.mode rke1 needs Rancher <= 2.11 (RKE1 was removed in Rancher 2.12.0); \
     use mode system-agent (the default) for custom RKE2/K3s clusters on current Rancher";

/// The JSON schema of a plain bootstrapd document (draft-07, which yaml-language-server and
/// most editors understand), generated from the settings types. No trailing newline.
pub fn schema_json() -> String {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let mut schema = generator.into_root_schema_for::<Settings>();
    schema.insert("title".into(), "bootstrapd userdata".into());
    serde_json::to_string_pretty(&schema)
        .unwrap_or_else(|e| unreachable!("a schema is plain JSON: {e}"))
}
