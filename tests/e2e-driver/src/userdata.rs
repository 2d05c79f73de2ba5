//! Filling a tests/e2e/userdata template. The result holds the token: written 0600, and the
//! token is never on a command line (no sed).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub struct Values<'a> {
    pub server: &'a str,
    pub token: &'a str,
    pub ca_checksum: &'a str,
    pub roles: &'a str,
    pub mode: &'a str,
    /// Further `@NAME@` placeholders of a scenario's template (the egress node's proxy and
    /// registry), replaced after the ones above.
    pub extra: &'a [(String, String)],
}

pub fn render(template: &str, v: &Values) -> String {
    let base = template
        .replace("@SERVER@", v.server)
        .replace("@TOKEN@", v.token)
        .replace("@CA_CHECKSUM@", v.ca_checksum)
        .replace("@ROLES@", v.roles)
        .replace("@MODE@", v.mode);
    v.extra.iter().fold(base, |t, (name, value)| {
        t.replace(&format!("@{name}@"), value)
    })
}

/// Writes the rendered template to `out`, mode 0600 from creation.
pub fn write(template: &Path, out: &Path, v: &Values) -> std::io::Result<()> {
    write_text(out, &render(&fs::read_to_string(template)?, v))
}

/// Writes userdata `text` (it holds the token) to `out`, mode 0600 from creation.
pub fn write_text(out: &Path, text: &str) -> std::io::Result<()> {
    match fs::remove_file(out) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn renders_every_placeholder_into_a_0600_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path().join("t.yaml");
        fs::write(
            &t,
            "roles: [@ROLES@]\nserver: @SERVER@\ntoken: @TOKEN@\nsum: @CA_CHECKSUM@\nmode: @MODE@",
        )
        .expect("write");
        let out = dir.path().join("out");
        fs::write(&out, "old").expect("write");
        let v = Values {
            server: "https://10.0.2.2:8443",
            token: "tok",
            ca_checksum: "ab",
            roles: "etcd, worker",
            mode: "rke1",
            extra: &[],
        };
        write(&t, &out, &v).expect("render");
        assert_eq!(
            fs::read_to_string(&out).expect("read"),
            "roles: [etcd, worker]\nserver: https://10.0.2.2:8443\ntoken: tok\nsum: ab\nmode: rke1\n"
        );
        let mode = fs::metadata(&out).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
