//! A throwaway CA and a server certificate it issued, for serving the registry over HTTPS.
//!
//! The node trusts the CA (through bootstrapd's `trusted_ca`, or Docker's
//! `/etc/docker/certs.d/HOST:PORT/ca.crt`); the server presents the leaf. They are kept apart
//! because rustls (and Go's crypto/x509 as Docker uses it) refuse a CA certificate presented
//! as the end-entity.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// A CA certificate and a server certificate + key issued by it, all PEM.
pub struct Issued {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Where [`write`] put an [`Issued`] set.
pub struct Written {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn named(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "edge-servers");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// A fresh CA and a server certificate for `sans`: each SAN that parses as an IP address
/// becomes an IP SAN (what a client dialling `10.0.2.2:5443` checks), the rest DNS names.
pub fn issue(sans: &[String]) -> Result<Issued, Error> {
    if sans.is_empty() {
        return Err(Error::Config(
            "a server certificate needs at least one SAN".into(),
        ));
    }
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = named("edge-servers test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut server = CertificateParams::new(sans.to_vec())?;
    server.distinguished_name = named(&sans[0]);
    server.is_ca = IsCa::ExplicitNoCa;
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = server.signed_by(&key, &issuer)?;
    Ok(Issued {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Writes `ca.pem`, `server.pem` and `server-key.pem` (0600) into `dir`, creating it.
/// The CA's own key is not kept: nothing re-issues, a new run makes a new CA.
pub fn write(dir: &Path, issued: &Issued) -> Result<Written, Error> {
    fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let written = Written {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
    };
    write_file(&written.ca, &issued.ca_pem, 0o644)?;
    write_file(&written.cert, &issued.cert_pem, 0o644)?;
    write_file(&written.key, &issued.key_pem, 0o600)?;
    Ok(written)
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), Error> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    // The mode is set at creation on a temporary name, so the key is never readable by others,
    // not even between create and chmod.
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err)?;
    file.write_all(text.as_bytes()).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    fs::rename(&tmp, path).map_err(io_err)
}

/// A rustls server configuration from a PEM certificate chain and key (HTTP/1.1 only: Docker
/// and containerd pull over HTTP/1.1, and it keeps the request log one line per request).
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>, Error> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Tls(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Tls(
            "no CERTIFICATE block in the certificate file".into(),
        ));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| Error::Tls(format!("key PEM: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| Error::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn written_key_is_private_and_the_set_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let issued =
            issue(&["10.0.2.2".into(), "127.0.0.1".into(), "localhost".into()]).expect("issued");
        let written = write(dir.path(), &issued).expect("written");
        let mode = fs::metadata(&written.key)
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let cert = fs::read(&written.cert).expect("cert");
        let key = fs::read(&written.key).expect("key");
        server_config(&cert, &key).expect("rustls accepts the pair");
        assert!(issue(&[]).is_err());
    }
}
