//! NoCloud and OpenStack lay their data out as files (`meta-data`, `user-data`,
//! `openstack/latest/user_data`), whether on a seed directory, a mounted drive or an HTTP
//! server. One reader for all three keeps the sources identical whatever the transport.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::Mode;
use url::Url;

use super::error::DatasourceError;
use super::fetched::{MAX_SIGNATURE_BYTES, decode_signature_header};
use crate::http::{HttpClient, HttpError, Request, StatusCode, redact_url};

pub const SIGNATURE_HEADER: &str = "X-Bootstrapd-Signature";

pub enum Tree<'a> {
    Dir(PathBuf),
    Http {
        client: &'a HttpClient,
        /// Base URL; `%s` in it is replaced by the file name (cloud-init's convention),
        /// otherwise the name is appended.
        base: String,
    },
}

/// A file's content and, over HTTP, the signature its response carried.
pub struct Blob {
    pub data: Vec<u8>,
    pub header_signature: Option<Vec<u8>>,
}

impl Tree<'_> {
    /// Human-readable name of a file in this tree, for errors.
    pub fn place(&self, rel: &str) -> String {
        match self {
            Tree::Dir(d) => d.join(rel).display().to_string(),
            Tree::Http { base, .. } => match Url::parse(&join_url(base, rel)) {
                Ok(u) => redact_url(&u),
                Err(_) => rel.to_string(),
            },
        }
    }

    /// Reads `rel`; `None` when it does not exist (missing file, HTTP 404).
    pub async fn read(&self, rel: &str, limit: usize) -> Result<Option<Blob>, DatasourceError> {
        match self {
            Tree::Dir(d) => Ok(read_beneath(d, rel, limit)?.map(|data| Blob {
                data,
                header_signature: None,
            })),
            Tree::Http { client, base } => {
                let url = join_url(base, rel);
                let req = Request::get(&url)?;
                let resp = client.send(&req).await?;
                if resp.status == StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                let resp = resp.error_for_status(req.method())?;
                let header_signature = match resp.header(SIGNATURE_HEADER) {
                    Some(v) => Some(decode_signature_header(v, &resp.url)?),
                    None => None,
                };
                if resp.body.len() > limit {
                    return Err(HttpError::BodyTooLarge {
                        method: req.method().clone(),
                        url: resp.url,
                        limit,
                    }
                    .into());
                }
                Ok(Some(Blob {
                    data: resp.body,
                    header_signature,
                }))
            }
        }
    }

    /// The userdata at `rel` with its signature: the response header, else the detached
    /// file `rel` + `.sig` next to it.
    pub async fn read_signed(
        &self,
        rel: &str,
        limit: usize,
    ) -> Result<Option<(Vec<u8>, Option<Vec<u8>>)>, DatasourceError> {
        let Some(blob) = self.read(rel, limit).await? else {
            return Ok(None);
        };
        let sig = match blob.header_signature {
            Some(s) => Some(s),
            None => self
                .read(&format!("{rel}.sig"), MAX_SIGNATURE_BYTES)
                .await?
                .map(|b| b.data),
        };
        Ok(Some((blob.data, sig)))
    }
}

/// Reads `rel` (a relative path of plain names) below the seed directory `dir`, refusing
/// symbolic links at every step and anything but a regular file at the end.
///
/// A seed is untrusted (any cidata or config-2 filesystem plugged into the machine): a
/// `user-data -> /etc/shadow` link was read and its first characters echoed in the
/// journal. Each component is opened with O_NOFOLLOW relative to the one before, so the read
/// never leaves the seed; O_NONBLOCK keeps a FIFO from blocking the open.
fn read_beneath(dir: &Path, rel: &str, limit: usize) -> Result<Option<Vec<u8>>, DatasourceError> {
    let place = dir.join(rel);
    let refuse = |message: &str| DatasourceError::Invalid {
        place: place.display().to_string(),
        message: message.to_string(),
    };
    let io = |e: Errno| DatasourceError::Io {
        path: place.clone(),
        source: std::io::Error::from(e),
    };
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut fd = match open(dir, dir_flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let parts: Vec<&str> = rel.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if matches!(*part, "" | "." | "..") {
            return Err(refuse("not a plain path below the seed"));
        }
        let last = i + 1 == parts.len();
        let flags = if last {
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC
        } else {
            dir_flags | OFlag::O_NOFOLLOW
        };
        fd = match openat(&fd, *part, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            // O_NOFOLLOW answers ELOOP for a link, and O_DIRECTORY ENOTDIR for a link to one.
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                return Err(refuse(
                    "a symbolic link or not a directory: seed files are read only as regular \
                     files inside the seed, never through links",
                ));
            }
            Err(e) => return Err(io(e)),
        };
    }
    let file = File::from(fd);
    let meta = file.metadata().map_err(|source| DatasourceError::Io {
        path: place.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(refuse("not a regular file"));
    }
    let mut buf = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|source| DatasourceError::Io {
            path: place.clone(),
            source,
        })?;
    if buf.len() > limit {
        return Err(DatasourceError::TooLarge { path: place, limit });
    }
    Ok(Some(buf))
}

fn join_url(base: &str, rel: &str) -> String {
    if base.contains("%s") {
        base.replace("%s", rel)
    } else if base.ends_with('/') {
        format!("{base}{rel}")
    } else {
        format!("{base}/{rel}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn seed_files_are_not_read_through_links() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("shadow");
        std::fs::write(&outside, "root:$6$secret-hash:19000:0:99999:7:::\n").unwrap();
        let seed = d.path().join("seed");
        std::fs::create_dir_all(seed.join("openstack")).unwrap();
        std::os::unix::fs::symlink(&outside, seed.join("user-data")).unwrap();
        std::os::unix::fs::symlink(d.path(), seed.join("openstack/latest")).unwrap();
        std::fs::write(seed.join("meta-data"), "instance-id: i\n").unwrap();
        std::fs::create_dir(seed.join("user-data.d")).unwrap();
        let tree = Tree::Dir(seed.clone());
        // A regular file inside the seed is read; a missing one is absent.
        assert_eq!(
            tree.read("meta-data", 100).await.unwrap().unwrap().data,
            b"instance-id: i\n"
        );
        assert!(tree.read("nothing", 100).await.unwrap().is_none());
        for (rel, why) in [
            ("user-data", "symbolic link"),
            ("openstack/latest/shadow", "symbolic link"),
            ("user-data.d", "not a regular file"),
            ("../shadow", "not a plain path"),
        ] {
            let e = match tree.read(rel, 100).await {
                Ok(b) => panic!("{rel}: read {:?}", b.map(|b| b.data)),
                Err(e) => e.to_string(),
            };
            assert!(e.contains(why), "{rel}: {e}");
            assert!(!e.contains("secret-hash") && !e.contains("root:"), "{e}");
            assert!(e.starts_with(&seed.join(rel).display().to_string()), "{e}");
        }
    }

    #[test]
    fn url_joining() {
        assert_eq!(join_url("http://h/p/", "meta-data"), "http://h/p/meta-data");
        assert_eq!(join_url("http://h/p", "meta-data"), "http://h/p/meta-data");
        assert_eq!(
            join_url("http://h/seed?f=%s", "user-data"),
            "http://h/seed?f=user-data"
        );
    }
}
