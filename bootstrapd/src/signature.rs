//! Userdata authenticity: detached ed25519 signatures over the exact userdata bytes.
//!
//! An image that carries a public key in `/etc/bootstrapd/trusted.pub` (PEM "PUBLIC KEY",
//! as `openssl pkey -pubout` writes it) refuses unsigned or wrongly signed userdata before
//! anything runs. A signature is the 64-byte ed25519 signature, base64 on one line: a
//! `.sig` file beside the userdata (seed dir, ISO, config drive, local file) or the
//! `X-Bootstrapd-Signature` response header for URL sources. `bootstrapd sign` makes both.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::fsutil::{HostRoot, write_new};

pub const TRUSTED_KEY: &str = "/etc/bootstrapd/trusted.pub";

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists: refusing to replace a key (move it away first)")]
    KeyExists { path: PathBuf },
    #[error("{path} is not an ed25519 public key in PEM form: {reason}")]
    BadPublicKey { path: PathBuf, reason: String },
    #[error("{path} is not an ed25519 private key in PKCS#8 PEM form: {reason}")]
    BadPrivateKey { path: PathBuf, reason: String },
    #[error(
        "userdata from {source_name} is not signed, but this image trusts only signed userdata ({TRUSTED_KEY})"
    )]
    Unsigned { source_name: String },
    #[error("the signature of the userdata from {source_name} is malformed: {reason}")]
    Malformed { source_name: String, reason: String },
    #[error(
        "the signature of the userdata from {source_name} does not match the trusted key {TRUSTED_KEY}: refusing it"
    )]
    Mismatch { source_name: String },
}

/// The image's trusted key, if it has one.
pub fn trusted_key(root: &HostRoot) -> Result<Option<VerifyingKey>, SignatureError> {
    let path = root.path(TRUSTED_KEY);
    match std::fs::read_to_string(&path) {
        Ok(pem) => VerifyingKey::from_public_key_pem(pem.trim())
            .map(Some)
            .map_err(|e| SignatureError::BadPublicKey {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SignatureError::Io { path, source }),
    }
}

/// Checks `userdata` against `signature` (base64 text) when the image has a trusted key.
pub fn verify(
    key: Option<&VerifyingKey>,
    source_name: &str,
    userdata: &[u8],
    signature: Option<&[u8]>,
) -> Result<bool, SignatureError> {
    let Some(key) = key else {
        return Ok(false);
    };
    let sig_text = signature.ok_or_else(|| SignatureError::Unsigned {
        source_name: source_name.to_string(),
    })?;
    let malformed = |reason: String| SignatureError::Malformed {
        source_name: source_name.to_string(),
        reason,
    };
    let text = std::str::from_utf8(sig_text).map_err(|_| malformed("not text".into()))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| malformed(format!("not base64: {e}")))?;
    let bytes: [u8; 64] = raw
        .as_slice()
        .try_into()
        .map_err(|_| malformed(format!("{} bytes, an ed25519 signature has 64", raw.len())))?;
    let sig = Signature::from_bytes(&bytes);
    key.verify_strict(userdata, &sig)
        .map(|()| true)
        .map_err(|_| SignatureError::Mismatch {
            source_name: source_name.to_string(),
        })
}

pub fn load_signing_key(path: &Path) -> Result<SigningKey, SignatureError> {
    let pem = std::fs::read_to_string(path).map_err(|source| SignatureError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| SignatureError::BadPrivateKey {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The base64 signature line for `data`.
pub fn sign(key: &SigningKey, data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.sign(data).to_bytes())
}

/// Makes a new key pair: the private key (0600) at `path`, the public key at `path.pub`.
/// Refuses when either exists: a replaced private key cannot be recovered, and every image
/// that trusts the old public key would refuse userdata signed with the new one.
pub fn generate(path: &Path) -> Result<PathBuf, SignatureError> {
    let pub_path = PathBuf::from(format!("{}.pub", path.display()));
    for p in [path, pub_path.as_path()] {
        if std::fs::symlink_metadata(p).is_ok() {
            return Err(SignatureError::KeyExists {
                path: p.to_path_buf(),
            });
        }
    }
    let io = |source| SignatureError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
        .map_err(io)?;
    let key = SigningKey::from_bytes(&seed);
    let private =
        key.to_pkcs8_pem(Default::default())
            .map_err(|e| SignatureError::BadPrivateKey {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
    let public = key
        .verifying_key()
        .to_public_key_pem(Default::default())
        .map_err(|e| SignatureError::BadPublicKey {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    // write_new also refuses, should a key appear between the check and the write.
    fn exists(p: &Path) -> impl FnOnce(std::io::Error) -> SignatureError + '_ {
        move |source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => SignatureError::KeyExists {
                path: p.to_path_buf(),
            },
            _ => SignatureError::Io {
                path: p.to_path_buf(),
                source,
            },
        }
    }
    write_new(path, private.as_bytes(), 0o600).map_err(exists(path))?;
    write_new(&pub_path, public.as_bytes(), 0o644).map_err(exists(&pub_path))?;
    Ok(pub_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let keyfile = d.path().join("key.pem");
        let pubfile = generate(&keyfile).unwrap();
        let root = HostRoot::new(Some(d.path().join("root")));
        std::fs::create_dir_all(root.path("/etc/bootstrapd")).unwrap();
        std::fs::copy(&pubfile, root.path(TRUSTED_KEY)).unwrap();

        let key = trusted_key(&root).unwrap().unwrap();
        let sk = load_signing_key(&keyfile).unwrap();
        let data = b"roles: [worker]\n";
        let sig = sign(&sk, data);
        assert!(verify(Some(&key), "t", data, Some(sig.as_bytes())).unwrap());

        let e = verify(Some(&key), "t", b"roles: [etcd]\n", Some(sig.as_bytes())).unwrap_err();
        assert!(matches!(e, SignatureError::Mismatch { .. }));
        let e = verify(Some(&key), "t", data, None).unwrap_err();
        assert!(matches!(e, SignatureError::Unsigned { .. }));
        let e = verify(Some(&key), "t", data, Some(b"AAAA")).unwrap_err();
        assert!(e.to_string().contains("3 bytes"), "{e}");
        assert!(
            !verify(None, "t", data, None).unwrap(),
            "no key: nothing to check"
        );
    }

    #[test]
    fn generate_key_never_overwrites_a_key() {
        let d = tempfile::tempdir().unwrap();
        let keyfile = d.path().join("key.pem");
        let pubfile = generate(&keyfile).unwrap();
        let (private, public) = (
            std::fs::read(&keyfile).unwrap(),
            std::fs::read(&pubfile).unwrap(),
        );
        let e = generate(&keyfile).unwrap_err();
        assert!(matches!(e, SignatureError::KeyExists { .. }), "{e}");
        assert!(e.to_string().contains("key.pem"), "{e}");
        assert_eq!(
            std::fs::read(&keyfile).unwrap(),
            private,
            "private key replaced"
        );
        assert_eq!(
            std::fs::read(&pubfile).unwrap(),
            public,
            "public key replaced"
        );

        // A public key alone (the private one moved to a vault) is not replaced either.
        std::fs::remove_file(&keyfile).unwrap();
        let e = generate(&keyfile).unwrap_err();
        assert!(e.to_string().contains("key.pem.pub"), "{e}");
        assert!(
            !keyfile.exists(),
            "a private key without its public half was written"
        );
        assert_eq!(std::fs::read(&pubfile).unwrap(), public);
    }

    #[test]
    fn no_trusted_key_is_none_and_bad_key_is_named() {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().to_path_buf()));
        assert!(trusted_key(&root).unwrap().is_none());
        std::fs::create_dir_all(root.path("/etc/bootstrapd")).unwrap();
        std::fs::write(root.path(TRUSTED_KEY), "garbage").unwrap();
        let e = trusted_key(&root).unwrap_err().to_string();
        assert!(e.contains("trusted.pub"), "{e}");
    }
}
