//! Format detection and decoding: gzip, MIME multipart, `#cloud-config`, plain YAML.

use std::io::Read;

use flate2::read::MultiGzDecoder;

use super::tree::{self, Mark, Node, Value};
use super::validate::Validator;
use super::{Format, MAX_USERDATA_BYTES, Parsed, Problem, Settings, UserdataError};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Most leaf parts a MIME message may have. cloud-init userdata has a handful; every part
/// costs a parse, a decode and a copy, so thousands of empty parts are refused.
pub const MAX_MIME_PARTS: usize = 100;
const CLOUD_CONFIG: &str = "#cloud-config";

/// cloud-init userdata types bootstrapd cannot take its settings from, with what they are.
const OTHER_CLOUD_INIT: &[(&str, &str)] = &[
    ("#!", "a script"),
    ("#include", "a cloud-init #include list"),
    ("#cloud-boothook", "a cloud-init boothook"),
    ("#cloud-config-archive", "a cloud-config archive"),
    ("#part-handler", "a cloud-init part handler"),
    ("## template:", "a cloud-init template"),
];

pub fn parse(bytes: &[u8]) -> Result<Parsed, UserdataError> {
    if bytes.len() > MAX_USERDATA_BYTES {
        return Err(UserdataError::whole(format!(
            "userdata is {} bytes; the limit is {MAX_USERDATA_BYTES} bytes",
            bytes.len()
        )));
    }
    if bytes.starts_with(&GZIP_MAGIC) {
        let inner = gunzip(bytes)?;
        if inner.starts_with(&GZIP_MAGIC) {
            return Err(UserdataError::whole(
                "gzip inside gzip: compress the userdata only once",
            ));
        }
        let mut parsed = parse_uncompressed(&inner)?;
        parsed.format = Format::Gzip(Box::new(parsed.format));
        return Ok(parsed);
    }
    parse_uncompressed(bytes)
}

/// Decompresses at most [`MAX_USERDATA_BYTES`]; more is refused (a gzip bomb expands a few
/// kilobytes into gigabytes).
fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, UserdataError> {
    gunzip_at_most(bytes, MAX_USERDATA_BYTES)
}

/// [`gunzip`] with a smaller budget: what is left of the limit for a MIME message's parts.
fn gunzip_at_most(bytes: &[u8], max: usize) -> Result<Vec<u8>, UserdataError> {
    let mut out = Vec::new();
    let limit = max as u64 + 1;
    MultiGzDecoder::new(bytes)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| {
            UserdataError::whole(format!(
                "userdata starts like gzip (1f 8b) but does not decompress: {e}"
            ))
        })?;
    if out.len() > max {
        let what = if max < MAX_USERDATA_BYTES {
            "gunzipped, the MIME parts together are"
        } else {
            "gunzipped userdata is"
        };
        return Err(UserdataError::whole(format!(
            "{what} larger than {MAX_USERDATA_BYTES} bytes"
        )));
    }
    Ok(out)
}

fn parse_uncompressed(bytes: &[u8]) -> Result<Parsed, UserdataError> {
    let text = utf8(bytes)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if is_cloud_config(text) {
        return from_text(text, Format::CloudConfig, 0);
    }
    if let Some((_, what)) = OTHER_CLOUD_INIT.iter().find(|(p, _)| text.starts_with(p)) {
        return Err(at_start(format!(
            "this userdata is {what}; bootstrapd reads a bootstrapd YAML document, a \
             #cloud-config with a `bootstrapd:` key, or MIME multipart holding one"
        )));
    }
    if is_mime(text) {
        return multipart(bytes);
    }
    from_text(text, Format::Yaml, 0)
}

fn is_cloud_config(text: &str) -> bool {
    text.strip_prefix(CLOUD_CONFIG)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
}

/// cloud-init's own test: a MIME header near the start.
fn is_mime(text: &str) -> bool {
    let head: String = text
        .chars()
        .take(4096)
        .collect::<String>()
        .to_ascii_lowercase();
    head.starts_with("content-type:") || head.contains("mime-version:")
}

fn at_start(message: String) -> UserdataError {
    UserdataError {
        problems: vec![Problem {
            line: 1,
            column: 1,
            path: String::new(),
            message,
        }],
        origin: None,
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, UserdataError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line = good.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
        UserdataError {
            problems: vec![Problem {
                line,
                column,
                path: String::new(),
                message: "not valid UTF-8 text".into(),
            }],
            origin: None,
        }
    })
}

/// Validates one YAML text. `line_offset` shifts positions when the text sits inside a larger
/// input (a MIME part), so they point into what the user wrote.
fn from_text(text: &str, format: Format, line_offset: usize) -> Result<Parsed, UserdataError> {
    let built = tree::build(text);
    let mut problems = built.problems;
    let mut notes = Vec::new();
    let fatal = built.root.is_none() && !problems.is_empty();
    if !fatal {
        let settings = match format {
            Format::CloudConfig => {
                notes.extend(cloud_init_keys_note(built.root.as_ref()));
                cloud_config_settings(built.root.as_ref(), &mut problems)
            }
            _ => {
                let mut validator = Validator::new("");
                let s = validator.settings(built.root.as_ref(), Mark { line: 1, column: 1 });
                problems.extend(validator.problems);
                s
            }
        };
        if problems.is_empty()
            && let Some(settings) = settings
        {
            return Ok(Parsed {
                settings,
                format,
                notes,
            });
        }
    }
    problems.sort_by_key(|p| (p.line, p.column));
    for p in &mut problems {
        if p.line > 0 {
            p.line += line_offset;
        }
    }
    Err(UserdataError {
        problems,
        origin: None,
    })
}

/// The note naming a cloud-config's other keys, which cloud-init handles and bootstrapd does
/// not (so that nobody expects bootstrapd to act on them).
fn cloud_init_keys_note(root: Option<&Node>) -> Option<String> {
    let Some(Value::Map(entries)) = root.map(|r| &r.value) else {
        return None;
    };
    let others: Vec<&str> = entries
        .iter()
        .filter_map(|(k, _)| k.scalar_text())
        .filter(|k| *k != "bootstrapd")
        .collect();
    (!others.is_empty()).then(|| {
        format!(
            "cloud-config keys left to cloud-init (ignored by bootstrapd): {}",
            others.join(", ")
        )
    })
}

/// The settings under a cloud-config's `bootstrapd:` key.
fn cloud_config_settings(root: Option<&Node>, problems: &mut Vec<Problem>) -> Option<Settings> {
    match (root, root.and_then(|r| r.get("bootstrapd"))) {
        (_, Some((k, v))) => {
            let mut validator = Validator::new("bootstrapd");
            let s = validator.settings((!v.is_null()).then_some(v), k.mark);
            problems.extend(validator.problems);
            s
        }
        (Some(r), None) if !matches!(r.value, Value::Map(_)) && !r.is_null() => {
            problems.push(Problem {
                line: r.mark.line,
                column: r.mark.column,
                path: String::new(),
                message: "a #cloud-config document must be a mapping".into(),
            });
            None
        }
        (_, None) => {
            problems.push(Problem {
                line: 1,
                column: 1,
                path: "bootstrapd".into(),
                message: "this #cloud-config has no `bootstrapd:` key holding \
                          bootstrapd's settings"
                    .into(),
            });
            None
        }
    }
}

/// A leaf part of a MIME message, decoded.
struct Part {
    index: usize,
    mimetype: String,
    body: Vec<u8>,
    /// Lines before the body in the whole message, when the body is the message's own text.
    line_offset: Option<usize>,
    /// How the body was decoded, when it was.
    decoded: Option<&'static str>,
}

/// Walks a MIME tree into its leaf parts, decoded, in document order.
struct Leaves<'i> {
    input: &'i [u8],
    out: Vec<Part>,
    /// Bytes of decoded bodies so far: all parts together stay within the userdata limit.
    decoded: usize,
    /// Line count at an offset already passed: bodies come in document order, so counting
    /// resumes there instead of from the start for every part (which was quadratic).
    lines: LineCursor,
}

impl Leaves<'_> {
    fn walk(&mut self, mail: &mailparse::ParsedMail<'_>) -> Result<(), String> {
        if !mail.subparts.is_empty() {
            for sub in &mail.subparts {
                self.walk(sub)?;
            }
            return Ok(());
        }
        let index = self.out.len() + 1;
        if index > MAX_MIME_PARTS {
            return Err(format!(
                "MIME userdata has more than {MAX_MIME_PARTS} parts"
            ));
        }
        let (body, line_offset, decoded) = match mail.get_body_encoded() {
            mailparse::body::Body::Base64(b) => (
                b.get_decoded()
                    .map_err(|e| format!("MIME part {index}: bad base64: {e}"))?,
                None,
                Some("base64-decoded"),
            ),
            mailparse::body::Body::QuotedPrintable(b) => (
                b.get_decoded()
                    .map_err(|e| format!("MIME part {index}: bad quoted-printable: {e}"))?,
                None,
                Some("quoted-printable-decoded"),
            ),
            mailparse::body::Body::SevenBit(b) | mailparse::body::Body::EightBit(b) => {
                let raw = b.get_raw();
                (raw.to_vec(), self.lines.before(self.input, raw), None)
            }
            mailparse::body::Body::Binary(b) => {
                let raw = b.get_raw();
                (raw.to_vec(), self.lines.before(self.input, raw), None)
            }
        };
        self.count(body.len())?;
        self.out.push(Part {
            index,
            mimetype: mail.ctype.mimetype.to_ascii_lowercase(),
            body,
            line_offset,
            decoded,
        });
        Ok(())
    }

    fn count(&mut self, bytes: usize) -> Result<(), String> {
        self.decoded = self.decoded.saturating_add(bytes);
        if self.decoded > MAX_USERDATA_BYTES {
            return Err(format!(
                "MIME userdata decodes to more than {MAX_USERDATA_BYTES} bytes (all parts \
                 together, after base64 and gunzip)"
            ));
        }
        Ok(())
    }
}

#[derive(Default)]
struct LineCursor {
    offset: usize,
    lines: usize,
}

impl LineCursor {
    /// How many lines of `input` precede `inner`, when `inner` is a slice of it.
    fn before(&mut self, input: &[u8], inner: &[u8]) -> Option<usize> {
        let start = (inner.as_ptr() as usize).checked_sub(input.as_ptr() as usize)?;
        if start > input.len() {
            return None;
        }
        if start < self.offset {
            // Out of order (never seen from mailparse): count again from the start.
            *self = LineCursor::default();
        }
        let newlines = input[self.offset..start].iter().filter(|b| **b == b'\n');
        self.lines += newlines.count();
        self.offset = start;
        Some(self.lines)
    }
}

/// A cloud-config part, and whether it was gzipped.
type Candidate = (Part, bool);

/// The leaf parts of a MIME message that can hold bootstrapd's settings (cloud-config),
/// decoded and gunzipped within the userdata limit, with notes for the parts ignored.
fn cloud_config_parts(bytes: &[u8]) -> Result<(Vec<Candidate>, Vec<String>), UserdataError> {
    let mail = mailparse::parse_mail(bytes)
        .map_err(|e| UserdataError::whole(format!("MIME userdata does not parse: {e}")))?;
    // A single-part message (cloud-init accepts those too) is its own only leaf.
    let mut leaves = Leaves {
        input: bytes,
        out: Vec::new(),
        decoded: 0,
        lines: LineCursor::default(),
    };
    leaves.walk(&mail).map_err(UserdataError::whole)?;
    let mut candidates = Vec::new();
    let mut notes = Vec::new();
    let parts = std::mem::take(&mut leaves.out);
    for mut part in parts {
        let mut gzipped = false;
        if part.body.starts_with(&GZIP_MAGIC) {
            // The compressed body was counted; its expansion takes its place in the budget.
            leaves.decoded = leaves.decoded.saturating_sub(part.body.len());
            let left = MAX_USERDATA_BYTES.saturating_sub(leaves.decoded);
            part.body = gunzip_at_most(&part.body, left).map_err(|mut e| {
                for p in &mut e.problems {
                    p.message = format!("MIME part {}: {}", part.index, p.message);
                }
                e
            })?;
            leaves
                .count(part.body.len())
                .map_err(UserdataError::whole)?;
            gzipped = true;
        }
        let text_start = part
            .body
            .strip_prefix("\u{feff}".as_bytes())
            .unwrap_or(&part.body);
        let looks_cloud_config = std::str::from_utf8(text_start).is_ok_and(is_cloud_config);
        let cloud_config = part.mimetype == "text/cloud-config"
            || (looks_cloud_config
                && matches!(
                    part.mimetype.as_str(),
                    "text/plain" | "application/octet-stream" | "application/x-gzip"
                ));
        if cloud_config {
            candidates.push((part, gzipped));
        } else {
            notes.push(format!(
                "MIME part {} ({}) ignored: bootstrapd reads only the cloud-config part",
                part.index, part.mimetype
            ));
        }
    }
    Ok((candidates, notes))
}

/// Which cloud-config part holds the settings: the one with a `bootstrapd:` key, or the
/// only one.
fn pick_part(candidates: &[Candidate]) -> Result<usize, UserdataError> {
    let holds_settings = |p: &Part| {
        String::from_utf8_lossy(&p.body).lines().any(|l| {
            l.strip_prefix("bootstrapd")
                .is_some_and(|r| r.trim_start().starts_with(':'))
        })
    };
    let chosen: Vec<usize> = (0..candidates.len())
        .filter(|i| holds_settings(&candidates[*i].0))
        .collect();
    match (candidates.len(), chosen.as_slice()) {
        (0, _) => Err(UserdataError::whole(
            "MIME userdata has no text/cloud-config part",
        )),
        (_, [one]) => Ok(*one),
        (1, []) => Ok(0),
        (_, []) => Err(UserdataError::whole(format!(
            "none of the {} cloud-config parts has a `bootstrapd:` key",
            candidates.len()
        ))),
        (_, many) => {
            let list = many
                .iter()
                .map(|i| candidates[*i].0.index.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            Err(UserdataError::whole(format!(
                "MIME parts {list} all have a `bootstrapd:` key; keep it in one part"
            )))
        }
    }
}

fn multipart(bytes: &[u8]) -> Result<Parsed, UserdataError> {
    let (mut candidates, mut notes) = cloud_config_parts(bytes)?;
    let pick = pick_part(&candidates)?;
    for (i, (p, _)) in candidates.iter().enumerate() {
        if i != pick {
            notes.push(format!(
                "MIME part {} (cloud-config without `bootstrapd:`) ignored",
                p.index
            ));
        }
    }
    let (part, gzipped) = candidates.swap_remove(pick);
    let origin = match (part.decoded, gzipped) {
        (_, true) => Some(format!("MIME part {} (gunzipped)", part.index)),
        (Some(how), false) => Some(format!("MIME part {} ({how})", part.index)),
        (None, false) => None,
    };
    let line_offset = if origin.is_none() {
        part.line_offset
    } else {
        Some(0)
    };
    let result = utf8(&part.body).map_err(|e| (e, None)).and_then(|text| {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        // A text/cloud-config part is cloud-config with or without the header line.
        from_text(text, Format::CloudConfig, line_offset.unwrap_or(0)).map_err(|e| (e, line_offset))
    });
    match result {
        Ok(mut parsed) => {
            let inner = std::mem::replace(&mut parsed.format, Format::Yaml);
            let inner = if gzipped {
                Format::Gzip(Box::new(inner))
            } else {
                inner
            };
            parsed.format = Format::Multipart {
                part: part.index,
                inner: Box::new(inner),
            };
            notes.append(&mut parsed.notes);
            parsed.notes = notes;
            Ok(parsed)
        }
        Err((mut e, offset)) => {
            // Without a known place in the message, positions count from the part's start.
            e.origin = match (&origin, offset) {
                (Some(o), _) => Some(o.clone()),
                (None, Some(_)) => None,
                (None, None) => Some(format!("MIME part {}", part.index)),
            };
            Err(e)
        }
    }
}
