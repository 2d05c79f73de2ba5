//! The server's own certificate authority.
//!
//! Rancher's normal self-signed setup is a CA plus a separate server certificate; rustls refuses
//! a CA certificate used as the end-entity (`CaUsedAsEndEntity`), so the two are kept apart here
//! too. The CA (certificate and key) can be kept in a state directory so that a restarted server
//! keeps the same CA and so the same checksum; the server certificate is re-issued on each start.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use sha2::{Digest, Sha256};

use crate::Error;

const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";

/// The Rancher `cacerts` setting text for a PEM: line endings normalised, no trailing newline
/// (Rancher stores the setting that way; `/v3/settings/cacerts` serves it as is).
pub fn setting_value(pem: &str) -> String {
    pem.replace("\r\n", "\n").trim_end_matches('\n').to_string()
}

/// The text that the CA checksum covers: the setting with exactly one trailing newline.
pub fn checksum_text(pem: &str) -> String {
    let mut text = setting_value(pem);
    text.push('\n');
    text
}

/// `--ca-checksum` as Rancher prints it: lowercase hex sha256 of [`checksum_text`].
pub fn ca_checksum(pem: &str) -> String {
    hex::encode(Sha256::digest(checksum_text(pem).as_bytes()))
}

/// A CA and a server certificate issued by it.
pub struct Authority {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

fn ca_params(common_name: &str) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(Error::Certificate)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "rancher-test-server");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// A fresh CA that nothing trusts: served by `--wrong-ca` so the checksum cannot match.
pub fn decoy_ca_pem() -> Result<String, Error> {
    let key = KeyPair::generate().map_err(Error::Certificate)?;
    let cert = ca_params("dynamiclistener-ca (decoy)")?
        .self_signed(&key)
        .map_err(Error::Certificate)?;
    Ok(cert.pem())
}

fn write_private(path: &Path, data: &str) -> Result<(), Error> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err)?;
    file.write_all(data.as_bytes()).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    fs::rename(&tmp, path).map_err(io_err)
}

fn read(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads the CA from `state_dir` (creating and saving it on first use), or makes an ephemeral one
/// without a state directory; then issues a server certificate for `sans`.
pub fn load_or_create(state_dir: Option<&Path>, sans: &[String]) -> Result<Authority, Error> {
    let params = ca_params("dynamiclistener-ca")?;
    let (ca_pem, ca_key) = match state_dir {
        Some(dir) => {
            fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            let cert_path: PathBuf = dir.join(CA_CERT_FILE);
            let key_path: PathBuf = dir.join(CA_KEY_FILE);
            if cert_path.exists() && key_path.exists() {
                let key_pem = read(&key_path)?;
                let key = KeyPair::from_pem(&key_pem).map_err(|source| Error::CaKey {
                    path: key_path.clone(),
                    source,
                })?;
                (read(&cert_path)?, key)
            } else {
                let key = KeyPair::generate().map_err(Error::Certificate)?;
                let cert = params.self_signed(&key).map_err(Error::Certificate)?;
                write_private(&key_path, &key.serialize_pem())?;
                write_private(&cert_path, &cert.pem())?;
                (cert.pem(), key)
            }
        }
        None => {
            let key = KeyPair::generate().map_err(Error::Certificate)?;
            let cert = params.self_signed(&key).map_err(Error::Certificate)?;
            (cert.pem(), key)
        }
    };
    // Issuer::new only needs the subject, key usages and key-id method, which are the same
    // params the stored CA was made from, so a reloaded CA signs identically.
    let issuer = Issuer::new(params, ca_key);

    let mut server = CertificateParams::new(sans.to_vec()).map_err(Error::Certificate)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "rancher-test-server");
    dn.push(DnType::CommonName, "cattle");
    server.distinguished_name = dn;
    server.is_ca = IsCa::ExplicitNoCa;
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().map_err(Error::Certificate)?;
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .map_err(Error::Certificate)?;

    Ok(Authority {
        ca_pem,
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_covers_exactly_one_trailing_newline() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----";
        assert_eq!(ca_checksum(pem), ca_checksum(&format!("{pem}\n")));
        assert_eq!(ca_checksum(pem), ca_checksum(&format!("{pem}\n\n")));
        assert_eq!(ca_checksum(pem), ca_checksum(&pem.replace('\n', "\r\n")));
        let expected = hex::encode(Sha256::digest(format!("{pem}\n").as_bytes()));
        assert_eq!(ca_checksum(pem), expected);
        assert!(!setting_value(&format!("{pem}\n")).ends_with('\n'));
    }

    #[test]
    fn state_dir_keeps_the_ca_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = load_or_create(Some(dir.path()), &sans).expect("first start");
        let second = load_or_create(Some(dir.path()), &sans).expect("second start");
        assert_eq!(first.ca_pem, second.ca_pem);
        assert_ne!(first.server_cert_pem, second.server_cert_pem);
        let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
            .expect("key file")
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }
}
