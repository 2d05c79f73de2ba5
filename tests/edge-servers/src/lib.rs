//! Test servers that stand at a node's network edge, for bootstrapd's proxy and registry tests:
//!
//! - [`proxy`]: an HTTP/1.1 forward proxy (`CONNECT` tunnels and absolute-form requests) that
//!   only ever connects to allowed loopback targets;
//! - [`registry`]: a read-only Docker Registry HTTP API V2 server that serves images from
//!   `docker save` archives ([`archive`]), with optional Basic auth and TLS ([`ca`]).
//!
//! Both are meant to run on the host on 127.0.0.1, reached by a qemu user-network guest as
//! 10.0.2.2. Each writes one JSON line per request ([`jsonlog`]) and never logs credentials.

pub mod archive;
pub mod ca;
pub mod jsonlog;
pub mod proxy;
pub mod registry;

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a server could not start (requests that fail are answered, not returned as errors).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("archive {path}: {detail}")]
    Archive { path: PathBuf, detail: String },
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Config(String),
}

/// Runs until SIGINT or SIGTERM (how the e2e's host_stop ends it).
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Reads a whole file, naming it in the error.
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The `user:password` pair of an HTTP Basic credential (RFC 7617), if `value` is one.
/// The scheme name is case-insensitive (RFC 7235 section 2.1).
pub(crate) fn basic_credential(value: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
}

/// Reads a credentials file of `user:password` lines (blank lines and `#` comments skipped;
/// the password may itself contain `:`).
pub fn read_credentials(path: &std::path::Path) -> Result<Vec<Vec<u8>>, Error> {
    let text = String::from_utf8(read_file(path)?)
        .map_err(|_| Error::Config(format!("{}: not UTF-8", path.display())))?;
    let mut pairs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((user, _)) if !user.is_empty() => pairs.push(line.as_bytes().to_vec()),
            // The line itself is not echoed: it may be a password.
            _ => {
                return Err(Error::Config(format!(
                    "{}:{}: expected user:password",
                    path.display(),
                    n + 1
                )));
            }
        }
    }
    if pairs.is_empty() {
        return Err(Error::Config(format!(
            "{}: no user:password line",
            path.display()
        )));
    }
    Ok(pairs)
}

/// Compares two byte strings without stopping at the first difference, so a wrong password's
/// answer time does not tell how much of it was right.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether an `Authorization`/`Proxy-Authorization` header value carries one of `allowed`.
pub(crate) fn credential_matches(value: &[u8], allowed: &[Vec<u8>]) -> bool {
    match basic_credential(value) {
        Some(pair) => allowed.iter().any(|a| same_bytes(a, &pair)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_decode_case_insensitively_and_match_exactly() {
        // "agent:s3cret"
        let good = b"basic YWdlbnQ6czNjcmV0";
        let allowed = vec![b"agent:s3cret".to_vec()];
        assert!(credential_matches(good, &allowed));
        assert!(credential_matches(b"Basic YWdlbnQ6czNjcmV0", &allowed));
        // "agent:s3cre"
        assert!(!credential_matches(b"Basic YWdlbnQ6czNjcmU=", &allowed));
        assert!(!credential_matches(b"Bearer YWdlbnQ6czNjcmV0", &allowed));
        assert!(!credential_matches(b"Basic !!!", &allowed));
    }

    #[test]
    fn credential_files_reject_lines_without_a_user_and_never_echo_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users");
        std::fs::write(&path, "# users\nagent:pa:ss\n\n").expect("write");
        assert_eq!(
            read_credentials(&path).expect("reads"),
            vec![b"agent:pa:ss".to_vec()]
        );
        std::fs::write(&path, "agent:ok\nhunter2\n").expect("write");
        let err = read_credentials(&path).expect_err("refused").to_string();
        assert!(err.contains(":2: expected user:password"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
