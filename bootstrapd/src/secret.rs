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

/// Replaces every occurrence of each secret in `text` with `<redacted>`, and every
/// token-shaped value ([`scrub_token_shaped`]).
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
    scrub_token_shaped(&out)
}

/// Shortest run of letters and digits taken for a token: Rancher's registration and API
/// tokens are 54-64 characters; nothing this long in an agent's log is meant for a reader.
const TOKEN_MIN_LEN: usize = 40;

/// Redacts values that look like tokens whatever the current one is: a log may quote an
/// earlier, rotated token. Those are the values of `CATTLE_TOKEN=` / `token=` / `--token`,
/// and runs of at least [`TOKEN_MIN_LEN`] letters and digits holding both, except hex
/// (checksums, digests and container ids are not secret and must stay readable).
pub fn scrub_token_shaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphanumeric()) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let len = rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        let (word, after) = rest.split_at(len);
        let has_digit = word.bytes().any(|b| b.is_ascii_digit());
        let has_letter = word.bytes().any(|b| b.is_ascii_alphabetic());
        let hex = word.bytes().all(|b| b.is_ascii_hexdigit());
        if word.len() >= TOKEN_MIN_LEN && has_digit && has_letter && !hex {
            out.push_str(REDACTED);
        } else {
            out.push_str(word);
        }
        rest = after;
        // `KEY=value` with a token or password key: the value goes whatever its shape.
        let lower = word.to_ascii_lowercase();
        if (lower.ends_with("token") || lower.ends_with("password")) && rest.starts_with('=') {
            let end = rest
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ';'))
                .unwrap_or(rest.len());
            if end > 1 {
                out.push('=');
                out.push_str(REDACTED);
                rest = &rest[end..];
            }
        }
    }
    out.push_str(rest);
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

/// [`redact_json`], and every string value that is a URL with a password or a query
/// redacted as [`redact_url`] does: a binary's or an extension's URL may carry either. Other
/// URLs keep the form they were given in.
pub fn redact_json_all(value: &mut serde_json::Value) {
    redact_json(value);
    redact_json_urls(value);
}

fn redact_json_urls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            if let Ok(u) = url::Url::parse(s)
                && (u.password().is_some() || u.query().is_some())
            {
                *s = redact_url(&u);
            }
        }
        serde_json::Value::Object(map) => map.values_mut().for_each(redact_json_urls),
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json_urls),
        _ => {}
    }
}

/// `text` with every URL in it redacted as [`redact_url`] does (password and query
/// removed). For text we do not build ourselves: library error chains, tool output.
pub fn redact_urls(text: &str) -> String {
    let is_scheme = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let start = rest[..i]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| is_scheme(c))
            .last()
            .map_or(i, |(j, _)| j);
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .map_or(rest.len(), |e| i + e);
        if start == i {
            out.push_str(&rest[..i + 3]);
            rest = &rest[i + 3..];
            continue;
        }
        // Closing punctuation around a URL in prose ("(url): ...") is not part of it.
        let url = rest[start..end].trim_end_matches([')', ']', '}', ',', ';', ':', '.']);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url_text(url));
        out.push_str(&rest[start + url.len()..end]);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// One URL found in free text: parsed when it parses, else cut by hand (query, fragment and
/// user information dropped), never returned as it came.
pub(crate) fn redact_url_text(url: &str) -> String {
    if let Ok(u) = url::Url::parse(url) {
        return redact_url(&u);
    }
    let cut = url.split(['?', '#']).next().unwrap_or_default();
    let (scheme, after) = cut.split_once("://").unwrap_or(("", cut));
    let (authority, path) = after.split_at(after.find('/').unwrap_or(after.len()));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let query = if cut.len() < url.len() {
        "?redacted"
    } else {
        ""
    };
    format!("{scheme}://{host}{path}{query}")
}

/// The URL fit for logs and errors: no password, no query string (seed URLs and tokens
/// sometimes travel there).
pub fn redact_url(url: &url::Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("redacted"));
    }
    if u.query().is_some() {
        u.set_query(Some("redacted"));
    }
    u.set_fragment(None);
    u.to_string()
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
    fn redact_json_all_also_hides_url_passwords_and_queries() {
        let mut v = serde_json::json!({
            "runtime": {"source": {"sysext": {"url": "https://u:pw@mirror.lab/docker.raw?sig=abc"}}},
            "server": "https://rancher.lab",
            "token": "t",
        });
        redact_json_all(&mut v);
        let url = v["runtime"]["source"]["sysext"]["url"].as_str().unwrap();
        assert!(!url.contains("pw") && !url.contains("abc"), "{url}");
        assert!(url.contains("mirror.lab/docker.raw"), "{url}");
        assert_eq!(v["server"], "https://rancher.lab");
        assert_eq!(v["token"], REDACTED);
    }

    #[test]
    fn token_shaped_values_are_scrubbed_but_hex_stays() {
        let old = "q8w7e6r5t4y3u2i1o0pzlxkcjvhbgnfmdsa9876543210zyxwvutsrq";
        let t = format!(
            "token {old} refused; CATTLE_TOKEN=abc,x password=p1 sha256:{} id {} word{}",
            "0f".repeat(32),
            "a1".repeat(32),
            "x".repeat(50)
        );
        let r = scrub_token_shaped(&t);
        assert!(
            !r.contains(old) && !r.contains("abc") && !r.contains("p1"),
            "{r}"
        );
        assert!(
            r.starts_with(
                "token <redacted> refused; CATTLE_TOKEN=<redacted>,x password=<redacted> "
            ),
            "{r}"
        );
        assert!(
            r.contains(&"0f".repeat(32)) && r.contains(&"a1".repeat(32)),
            "{r}"
        );
        assert!(
            r.contains(&"x".repeat(50)),
            "letters alone are not a token: {r}"
        );
    }

    #[test]
    fn scrub_replaces_all() {
        let s = Secret::new("xyz");
        assert_eq!(scrub("a xyz b xyz", &[&s]), "a <redacted> b <redacted>");
        assert_eq!(scrub("abc", &[&Secret::new("")]), "abc");
    }
}
