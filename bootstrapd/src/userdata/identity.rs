//! The node's identity in userdata: its hostname (the datasource's, or a template over
//! facts) and the SSH keys of one user. Pure rules, shared by the validator (which reports
//! them with line and column), the planner and the actions.

use base64::Engine as _;

/// Longest label, and so longest hostname bootstrapd sets (one label: the short name).
pub const MAX_LABEL: usize = 63;

/// A fact a hostname template may name, as `{instance_id}`, `{serial}` or `{mac}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// The datasource's instance id.
    InstanceId,
    /// The SMBIOS system serial number (/sys/class/dmi/id/product_serial).
    Serial,
    /// The first physical NIC's MAC address, 12 hex digits without separators.
    Mac,
}

impl Fact {
    pub const ALL: [Fact; 3] = [Fact::InstanceId, Fact::Serial, Fact::Mac];

    pub fn name(self) -> &'static str {
        match self {
            Fact::InstanceId => "instance_id",
            Fact::Serial => "serial",
            Fact::Mac => "mac",
        }
    }
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Fact(Fact),
}

fn placeholder_list() -> String {
    Fact::ALL
        .iter()
        .map(|f| format!("`{{{}}}`", f.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses `node-{mac}`: text of letters, digits and `-`, and placeholders in braces.
pub fn parse_template(s: &str) -> Result<Vec<Piece>, String> {
    if s.is_empty() {
        return Err("the template is empty".into());
    }
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = s.char_indices();
    while let Some((i, c)) = rest.next() {
        match c {
            '{' => {
                let Some(len) = s[i + 1..].find('}') else {
                    return Err(format!("`{{` at offset {i} is not closed by `}}`"));
                };
                let name = &s[i + 1..i + 1 + len];
                let Some(fact) = Fact::ALL.into_iter().find(|f| f.name() == name) else {
                    return Err(format!(
                        "unknown placeholder `{{{}}}` at offset {i}; expected one of {}",
                        super::tree::shown(name),
                        placeholder_list()
                    ));
                };
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Fact(fact));
                // Skip the name and the closing brace.
                for _ in 0..=name.chars().count() {
                    rest.next();
                }
            }
            c if c.is_ascii_alphanumeric() || c == '-' => text.push(c),
            c => {
                return Err(format!(
                    "`{}` at offset {i}: a template's text may hold only letters, digits and \
                     `-`, and placeholders {}",
                    c.escape_debug(),
                    placeholder_list()
                ));
            }
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// A string made into one valid hostname label: lowercase, every run of characters other
/// than `[a-z0-9]` one `-`, no `-` at either end, at most 63 characters. May be empty.
pub fn sanitize_hostname(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(MAX_LABEL);
    out.trim_end_matches('-').to_string()
}

/// The template expanded over `fact`'s answers and sanitized. A fact the host does not have,
/// or an expansion with nothing left, is an error naming it.
pub fn expand(pieces: &[Piece], fact: impl Fn(Fact) -> Option<String>) -> Result<String, String> {
    let mut raw = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => raw.push_str(t),
            Piece::Fact(f) => match fact(*f) {
                Some(v) if !v.trim().is_empty() => raw.push_str(v.trim()),
                _ => return Err(format!("this host has no {}", fact_description(*f))),
            },
        }
    }
    let name = sanitize_hostname(&raw);
    if name.is_empty() {
        return Err(format!("the template yields `{raw}`, no hostname"));
    }
    Ok(name)
}

/// Example facts for `validate`, which does not run on the node.
const EXAMPLE_FACTS: [(Fact, &str); 3] = [
    (Fact::InstanceId, "i-0abc123"),
    (Fact::Serial, "SN-1234"),
    (Fact::Mac, "525400123456"),
];

/// What `validate` says of a template: what it yields with example facts.
pub fn template_note(template: &str) -> String {
    let example = |f: Fact| {
        EXAMPLE_FACTS
            .iter()
            .find(|(e, _)| *e == f)
            .map(|(_, v)| v.to_string())
    };
    let yields = parse_template(template)
        .and_then(|p| expand(&p, example))
        .unwrap_or_else(|e| e);
    format!(
        "hostname template `{template}` yields `{yields}` with instance id i-0abc123, \
         serial SN-1234 and MAC 52:54:00:12:34:56; `bootstrapd plan` on the node shows its own"
    )
}

fn fact_description(f: Fact) -> &'static str {
    match f {
        Fact::InstanceId => "instance id (`{instance_id}`): the datasource gave none",
        Fact::Serial => "SMBIOS serial number (`{serial}`, /sys/class/dmi/id/product_serial)",
        Fact::Mac => "physical network interface with a MAC address (`{mac}`)",
    }
}

fn rfc1123_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= MAX_LABEL
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// The hostname to set from a datasource's (EC2 `local-hostname`, NoCloud `local-hostname`,
/// OpenStack `hostname`): RFC 1123 labels, at most 253 characters; the static hostname set
/// is its first label, lowercase (at most 63 characters, within hostnamed's 64).
pub fn metadata_hostname(name: &str) -> Result<String, String> {
    let name = name.trim().trim_end_matches('.');
    if name.len() > 253 || !name.split('.').all(rfc1123_label) {
        return Err(format!(
            "the datasource's hostname `{}` is not a valid hostname (RFC 1123: labels of at \
             most 63 letters, digits and `-`, not starting or ending with `-`)",
            super::tree::shown(name).escape_debug()
        ));
    }
    let short = name.split('.').next().unwrap_or(name);
    Ok(short.to_ascii_lowercase())
}

/// A user name useradd takes on every distribution (its default NAME_REGEX, 32 characters).
pub fn check_user_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a user name: at most 32 lowercase letters, digits, `_` and `-`, \
             starting with a letter or `_`",
            super::tree::shown(s)
        ))
    }
}

/// The key types OpenSSH's sshd takes in authorized_keys today (DSA is gone since 9.8).
pub const KEY_TYPES: [&str; 7] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// One public key line: type, base64 body, comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kind: String,
    pub body: String,
    pub comment: String,
}

impl PublicKey {
    /// What makes two lines the same key: type and body (not the comment or options).
    pub fn identity(&self) -> (&str, &str) {
        (&self.kind, &self.body)
    }
}

/// The type string a key blob starts with (RFC 4253 `string`), when the body is base64.
fn embedded_type(body: &str) -> Option<String> {
    let blob = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let kind = blob.get(4..4 + len)?;
    // A blob with nothing after its type carries no key.
    if blob.len() <= 4 + len {
        return None;
    }
    String::from_utf8(kind.to_vec()).ok()
}

/// Parses one OpenSSH public key line as userdata gives it: `TYPE BASE64 [COMMENT]`. An
/// options prefix (`from="..."`, `command="..."`) is refused: bootstrapd writes plain keys,
/// restrictions belong in sshd_config.
pub fn parse_public_key(line: &str) -> Result<PublicKey, String> {
    if let Some((i, c)) = line.char_indices().find(|(_, c)| c.is_control()) {
        return Err(format!(
            "a key is one line: `{}` at offset {i}",
            c.escape_debug()
        ));
    }
    let mut words = line.split_whitespace();
    let kind = words.next().unwrap_or_default();
    if !KEY_TYPES.contains(&kind) {
        let quoted: Vec<String> = KEY_TYPES.iter().map(|t| format!("`{t}`")).collect();
        let why = if kind.contains(['=', ',', '"']) || kind == "restrict" || kind.starts_with("no-")
        {
            format!(
                "options before the key (`{}`) are not accepted: give the key alone and \
                 restrict it in sshd_config",
                super::tree::shown(kind)
            )
        } else {
            format!(
                "`{}` is not a key type sshd takes; expected one of {}",
                super::tree::shown(kind),
                quoted.join(", ")
            )
        };
        return Err(why);
    }
    let body = words.next().unwrap_or_default();
    match embedded_type(body) {
        None => Err(format!(
            "the {kind} key's body is not a base64 public key blob"
        )),
        Some(t) if t != kind => Err(format!(
            "the key's body is a `{}` key, not `{kind}`",
            super::tree::shown(&t).escape_debug()
        )),
        Some(_) => Ok(PublicKey {
            kind: kind.to_string(),
            body: body.to_string(),
            comment: words.collect::<Vec<_>>().join(" "),
        }),
    }
}

/// The key a line of an existing authorized_keys file holds, whatever its options: the first
/// word whose next word is a base64 blob of that type. None for comments and blank lines.
pub fn key_in_line(line: &str) -> Option<(String, String)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    if words.first().is_none_or(|w| w.starts_with('#')) {
        return None;
    }
    words.windows(2).find_map(|w| {
        (embedded_type(w[1]).as_deref() == Some(w[0])).then(|| (w[0].to_string(), w[1].to_string()))
    })
}

/// `existing` with each of `wanted` that it lacks appended; existing lines are kept as they
/// are (a key added by hand stays). Returns the new text and the keys added.
pub fn merge_keys<'k>(existing: &str, wanted: &'k [PublicKey]) -> (String, Vec<&'k PublicKey>) {
    let mut have: Vec<(String, String)> = existing.lines().filter_map(key_in_line).collect();
    let mut out = existing.to_string();
    let mut added = Vec::new();
    for k in wanted {
        let id = (k.kind.clone(), k.body.clone());
        if have.contains(&id) {
            continue;
        }
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&k.kind);
        out.push(' ');
        out.push_str(&k.body);
        if !k.comment.is_empty() {
            out.push(' ');
            out.push_str(&k.comment);
        }
        out.push('\n');
        have.push(id);
        added.push(k);
    }
    (out, added)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key line of `kind` whose blob says `inner`.
    pub(crate) fn key(kind: &str, inner: &str) -> String {
        let mut blob = (inner.len() as u32).to_be_bytes().to_vec();
        blob.extend_from_slice(inner.as_bytes());
        blob.extend_from_slice(&[0, 0, 0, 32]);
        blob.extend_from_slice(&[7u8; 32]);
        let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
        format!("{kind} {b64} user@host")
    }

    #[test]
    fn templates_parse_into_text_and_facts() {
        assert_eq!(
            parse_template("node-{mac}").unwrap(),
            vec![Piece::Text("node-".into()), Piece::Fact(Fact::Mac)]
        );
        assert_eq!(
            parse_template("{serial}{instance_id}").unwrap(),
            vec![Piece::Fact(Fact::Serial), Piece::Fact(Fact::InstanceId)]
        );
        assert_eq!(
            parse_template("n-{macc}").unwrap_err(),
            "unknown placeholder `{macc}` at offset 2; expected one of `{instance_id}`, \
             `{serial}`, `{mac}`"
        );
        assert!(
            parse_template("n-{mac")
                .unwrap_err()
                .contains("offset 2 is not closed")
        );
        assert!(
            parse_template("n_1")
                .unwrap_err()
                .starts_with("`_` at offset 1")
        );
        assert!(
            parse_template("a}")
                .unwrap_err()
                .starts_with("`}` at offset 1")
        );
        assert!(parse_template("").is_err());
    }

    #[test]
    fn expansion_is_sanitized_into_one_label() {
        let facts = |f: Fact| match f {
            Fact::Mac => Some("52540012ab01".to_string()),
            Fact::Serial => Some("  VMware-56 4d 7a__X ".to_string()),
            Fact::InstanceId => None,
        };
        let t = parse_template("Node-{mac}").unwrap();
        assert_eq!(expand(&t, facts).unwrap(), "node-52540012ab01");
        let t = parse_template("{serial}").unwrap();
        assert_eq!(expand(&t, facts).unwrap(), "vmware-56-4d-7a-x");
        let t = parse_template("n-{instance_id}").unwrap();
        assert!(expand(&t, facts).unwrap_err().contains("instance id"));
        assert_eq!(sanitize_hostname(&"a".repeat(70)), "a".repeat(63));
        assert_eq!(
            sanitize_hostname(&format!("{}-b", "a".repeat(62))),
            "a".repeat(62)
        );
        assert_eq!(sanitize_hostname("--"), "");
        assert_eq!(
            template_note("Edge-{serial}"),
            "hostname template `Edge-{serial}` yields `edge-sn-1234` with instance id \
             i-0abc123, serial SN-1234 and MAC 52:54:00:12:34:56; `bootstrapd plan` on the \
             node shows its own"
        );
        let t = parse_template("-{serial}").unwrap();
        let empty = |_| Some("__".to_string());
        assert!(expand(&t, empty).unwrap_err().contains("no hostname"));
    }

    #[test]
    fn metadata_hostnames_follow_rfc_1123() {
        assert_eq!(metadata_hostname("node4.lab.example").unwrap(), "node4");
        assert_eq!(metadata_hostname("Node-4").unwrap(), "node-4");
        assert_eq!(metadata_hostname("node4.lab.").unwrap(), "node4");
        for bad in ["", "-node", "node-", "no_de", "a..b", "node 4"] {
            assert!(metadata_hostname(bad).is_err(), "{bad:?}");
        }
        assert!(metadata_hostname(&"a".repeat(64)).is_err());
        assert!(metadata_hostname(&"a".repeat(63)).is_ok());
        assert!(metadata_hostname(&["a"; 128].join(".")).is_err());
    }

    #[test]
    fn user_names() {
        for good in ["root", "rancher", "_svc", "ops-1", &"a".repeat(32)] {
            assert!(check_user_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Root", "1ops", "a b", "a:b", "../x", &"a".repeat(33)] {
            assert!(check_user_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn public_keys_are_checked_to_their_embedded_type() {
        for t in KEY_TYPES {
            let k = parse_public_key(&key(t, t)).unwrap();
            assert_eq!((k.kind.as_str(), k.comment.as_str()), (t, "user@host"));
        }
        let mismatch = key("ssh-ed25519", "ssh-rsa");
        assert_eq!(
            parse_public_key(&mismatch).unwrap_err(),
            "the key's body is a `ssh-rsa` key, not `ssh-ed25519`"
        );
        assert!(
            parse_public_key("ssh-ed25519 !!notbase64")
                .unwrap_err()
                .contains("not a base64")
        );
        assert!(
            parse_public_key("ssh-ed25519")
                .unwrap_err()
                .contains("not a base64")
        );
        assert!(
            parse_public_key("ssh-dss AAAA")
                .unwrap_err()
                .contains("not a key type")
        );
        let opts = format!("from=\"10.0.0.0/8\" {}", key("ssh-ed25519", "ssh-ed25519"));
        assert!(parse_public_key(&opts).unwrap_err().contains("options"));
        let two = format!(
            "{}\n{}",
            key("ssh-rsa", "ssh-rsa"),
            key("ssh-rsa", "ssh-rsa")
        );
        assert!(parse_public_key(&two).unwrap_err().contains("one line"));
        let k = key("ssh-ed25519", "ssh-ed25519");
        let no_comment = k.rsplit_once(' ').unwrap().0;
        assert_eq!(parse_public_key(no_comment).unwrap().comment, "");
    }

    #[test]
    fn merging_keeps_lines_and_adds_each_key_once() {
        let a = parse_public_key(&key("ssh-ed25519", "ssh-ed25519")).unwrap();
        let b = parse_public_key(&key("ssh-rsa", "ssh-rsa")).unwrap();
        let existing = format!(
            "# by hand\nno-pty,from=\"10.0.0.1\" {} {} old comment",
            a.kind, a.body
        );
        let wanted = vec![a.clone(), b.clone()];
        let (text, added) = merge_keys(&existing, &wanted);
        assert_eq!(added, vec![&b]);
        assert!(text.starts_with(&format!("{existing}\n")), "{text}");
        assert!(text.ends_with(&format!("{} {} user@host\n", b.kind, b.body)));
        let (again, added) = merge_keys(&text, &wanted);
        assert_eq!((again, added.len()), (text, 0));
        assert_eq!(key_in_line("# ssh-rsa x"), None);
        assert_eq!(key_in_line(""), None);
    }
}
