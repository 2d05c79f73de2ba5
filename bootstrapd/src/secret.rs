//! A string that must never be printed: tokens, passwords, keys.
//!
//! `Debug`, `Display` and `Serialize` all produce `<redacted>`, so a secret that ends up in a
//! log line, an error, `status --json` or `query` output leaks nothing. The only way to the
//! value is [`Secret::expose`], which makes every use greppable.

use std::fmt;

pub const REDACTED: &str = "<redacted>";

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value. Callers must not log it or put it in argv.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "minLength": 1 })
    }
}

/// Replaces every occurrence of each secret in `text` with `<redacted>`.
///
/// A last line of defence for text we do not build ourselves (child process output,
/// server error bodies) before it reaches a log or the journal.
pub fn scrub(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if !s.is_empty() {
            out = out.replace(s.expose(), REDACTED);
        }
    }
    out
}

/// Key names whose values are treated as secrets in metadata and other free-form JSON.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "token",
        "password",
        "passwd",
        "secret",
        "credential",
        "private",
        "apikey",
        "api_key",
    ]
    .iter()
    .any(|w| k.contains(w))
}

/// Replaces the values of secret-looking keys anywhere in `value` with `<redacted>`.
pub fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret_key(k) && !v.is_null() {
                    *v = serde_json::Value::String(REDACTED.to_string());
                } else {
                    redact_json(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let s = Secret::new("token-abc");
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(s.expose(), "token-abc");
    }

    #[test]
    fn redact_json_hides_secret_keys_at_any_depth() {
        let mut v = serde_json::json!({
            "instance-id": "i-1",
            "nested": [{"admin_password": "p", "name": "n"}],
            "Token": "t",
        });
        redact_json(&mut v);
        assert_eq!(v["instance-id"], "i-1");
        assert_eq!(v["nested"][0]["admin_password"], REDACTED);
        assert_eq!(v["nested"][0]["name"], "n");
        assert_eq!(v["Token"], REDACTED);
    }

    #[test]
    fn scrub_replaces_all() {
        let s = Secret::new("xyz");
        assert_eq!(scrub("a xyz b xyz", &[&s]), "a <redacted> b <redacted>");
        assert_eq!(scrub("abc", &[&Secret::new("")]), "abc");
    }
}
