//! `trusted_ca` bundles: PEM text read block by block, so that a problem names the line it
//! is on, and every certificate checked the way bootstrapd's own TLS client will use it (as
//! a rustls/webpki trust anchor).
//!
//! Stricter than a PEM reader on purpose: rustls-pki-types skips text between blocks and
//! blocks of other types, which would let a private key pasted by mistake into userdata (and
//! so into every datasource copy of it) pass unnoticed. Here only `CERTIFICATE` blocks,
//! blank lines and `#` comments (as in the bundles distributions ship) are taken.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

const BEGIN: &str = "-----BEGIN ";
const CERTIFICATE: &str = "CERTIFICATE";

/// What is wrong with a bundle, and on which of its lines (0-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaProblem {
    pub line: usize,
    pub message: String,
}

impl CaProblem {
    fn at(line: usize, message: impl Into<String>) -> Self {
        CaProblem {
            line,
            message: message.into(),
        }
    }
}

/// One certificate of a bundle: its DER and the line (0-based) its block begins on.
#[derive(Debug, Clone)]
pub struct ParsedCert {
    pub der: CertificateDer<'static>,
    pub line: usize,
}

/// The label of a `-----BEGIN LABEL-----` line, if it is one.
fn begin_label(line: &str) -> Option<&str> {
    line.strip_prefix(BEGIN)?.strip_suffix("-----")
}

/// Every certificate of `text`, in order; the first problem otherwise.
pub fn parse_bundle(text: &str) -> Result<Vec<ParsedCert>, CaProblem> {
    let mut out = Vec::new();
    // (first line, the block's text) of the block being read.
    let mut open: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        match open.as_mut() {
            None if line.is_empty() || line.starts_with('#') => {}
            None => match begin_label(line) {
                Some(CERTIFICATE) => open = Some((i, format!("{line}\n"))),
                Some(label) => return Err(CaProblem::at(i, foreign_block(label))),
                None => {
                    return Err(CaProblem::at(
                        i,
                        "not PEM: expected `-----BEGIN CERTIFICATE-----` (only certificate \
                         blocks, blank lines and `#` comments are taken)",
                    ));
                }
            },
            Some((start, block)) => {
                block.push_str(line);
                block.push('\n');
                if line == "-----END CERTIFICATE-----" {
                    out.push(certificate(*start, block)?);
                    open = None;
                } else if line.starts_with("-----") {
                    return Err(CaProblem::at(
                        i,
                        "expected `-----END CERTIFICATE-----` before another PEM marker",
                    ));
                }
            }
        }
    }
    if let Some((start, _)) = open {
        return Err(CaProblem::at(
            start,
            "this certificate block has no `-----END CERTIFICATE-----` line",
        ));
    }
    if out.is_empty() {
        return Err(CaProblem::at(
            0,
            "no certificate: expected one or more `-----BEGIN CERTIFICATE-----` blocks",
        ));
    }
    Ok(out)
}

fn foreign_block(label: &str) -> String {
    if label.contains("PRIVATE KEY") {
        format!(
            "a `{label}` block: trusted_ca takes CA certificates only, and a private key must \
             never be put into userdata; remove it (and consider the key exposed)"
        )
    } else {
        format!("a `{label}` block: trusted_ca takes only `CERTIFICATE` blocks")
    }
}

/// One block decoded (rustls-pki-types) and accepted as a trust anchor (webpki).
fn certificate(start: usize, block: &str) -> Result<ParsedCert, CaProblem> {
    let der = CertificateDer::from_pem_slice(block.as_bytes())
        .map_err(|e| CaProblem::at(start, format!("the certificate block does not decode: {e}")))?;
    let mut store = rustls::RootCertStore::empty();
    store.add(der.clone()).map_err(|e| {
        CaProblem::at(
            start,
            format!("not an X.509 certificate usable as a trust anchor: {e}"),
        )
    })?;
    Ok(ParsedCert { der, line: start })
}

/// The certificates of bundles that validated (a bundle that does not parse gives none).
pub fn certificates(bundle: &str) -> Vec<CertificateDer<'static>> {
    parse_bundle(bundle)
        .map(|certs| certs.into_iter().map(|c| c.der).collect())
        .unwrap_or_default()
}

/// Lowercase hex sha256 of the DER: the fingerprint `openssl x509 -fingerprint -sha256`
/// prints (there in uppercase with colons).
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The DER as a PEM block of 64-character lines, as OpenSSL writes it: one canonical text
/// per certificate, whatever the userdata's wrapping or comments were.
pub fn to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed CA made for the tests (rcgen), as PEM.
    pub(crate) fn ca_pem(name: &str) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn bundles_of_certificates_with_comments_parse() {
        let a = ca_pem("a");
        let b = ca_pem("b");
        let text = format!("# lab CA\n\n{a}\n# second\n{b}");
        let certs = parse_bundle(&text).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].line, 2);
        // The canonical PEM of a DER reads back as the same DER.
        let again = parse_bundle(&to_pem(&certs[1].der)).unwrap();
        assert_eq!(again[0].der, certs[1].der);
        assert_eq!(fingerprint(&certs[0].der).len(), 64);
        assert_eq!(certificates(&text).len(), 2);
    }

    #[test]
    fn keys_other_blocks_garbage_and_empty_text_are_refused_at_their_line() {
        let a = ca_pem("a");
        let key =
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
        let e = parse_bundle(&format!("{a}{key}")).unwrap_err();
        assert_eq!(e.line, a.lines().count());
        assert!(e.message.contains("private key must never"), "{e:?}");
        let e = parse_bundle("-----BEGIN X509 CRL-----\n-----END X509 CRL-----\n").unwrap_err();
        assert!(e.message.contains("`X509 CRL`"), "{e:?}");
        let e = parse_bundle(&format!("\nhello\n{a}")).unwrap_err();
        assert_eq!((e.line, e.message.starts_with("not PEM")), (1, true));
        assert!(
            parse_bundle("")
                .unwrap_err()
                .message
                .starts_with("no certificate")
        );
        assert!(parse_bundle("# only a comment\n").is_err());
        let cut: String = a.lines().take(3).map(|l| format!("{l}\n")).collect();
        let e = parse_bundle(&cut).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(e.message.contains("no `-----END"), "{e:?}");
        let bad64 = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(parse_bundle(bad64).unwrap_err().message.contains("decode"));
        // Valid base64 that is no certificate.
        let junk = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
        let e = parse_bundle(junk).unwrap_err();
        assert!(e.message.contains("trust anchor"), "{e:?}");
    }
}
