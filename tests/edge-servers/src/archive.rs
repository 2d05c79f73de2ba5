//! Reading a `docker save` archive (what `scripts/build-agent-image.sh` writes) into what a
//! registry serves: a schema 2 manifest, the config blob and gzipped layer blobs.
//!
//! The archive layout is moby's "Combined Image JSON + Filesystem Changeset Format"
//! (moby `image/spec/v1.2.md`): a top-level `manifest.json`, a list of
//! `{"Config": PATH, "RepoTags": [...], "Layers": [PATH, ...]}`, where `Config` is the image
//! config JSON and each `Layers` entry an uncompressed layer tar. build-agent-image.sh writes
//! `<sha256>.json` and `<diff_id>/layer.tar`; Docker 25+ writes `blobs/sha256/<hex>` paths (and
//! may leave the old names as symlinks), so paths are taken from `manifest.json` as given and
//! symlinks inside the archive are followed.
//!
//! The manifest follows "Image Manifest Version 2, Schema 2" (distribution/distribution
//! `docs/spec/manifest-v2-2.md`): config media type `application/vnd.docker.container.image.v1+json`,
//! layers `application/vnd.docker.image.rootfs.diff.tar.gzip`, each with `size` and `digest`
//! of the bytes served. The config's `rootfs.diff_ids` are the sha256 of the *uncompressed*
//! layers, which is what a puller checks after gunzipping; they are verified here at load, so
//! an archive whose config does not match its layers is refused before anything is served.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use axum::body::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;

pub const MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const CONFIG_V1: &str = "application/vnd.docker.container.image.v1+json";
pub const LAYER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// One image as a registry serves it.
#[derive(Clone, Debug)]
pub struct Image {
    /// Repository name, e.g. `rancher/rancher-agent`.
    pub name: String,
    pub tag: String,
    /// The exact manifest bytes served; `manifest_digest` is their sha256.
    pub manifest: Bytes,
    pub manifest_digest: String,
    /// Config and layer blobs by digest (`sha256:<hex>`).
    pub blobs: BTreeMap<String, Bytes>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct ImageConfig {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: Descriptor<'a>,
    layers: Vec<Descriptor<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor<'a> {
    media_type: &'a str,
    size: usize,
    digest: String,
}

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Splits `NAME:TAG` (the tag is after the last `:` that has no `/` after it), checking both
/// against the distribution spec's grammar for repository names and tags.
pub fn parse_reference(reference: &str) -> Result<(String, String), Error> {
    let bad = |why: &str| Error::Config(format!("image reference {reference:?}: {why}"));
    let (name, tag) = reference
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .ok_or_else(|| bad("expected NAME:TAG"))?;
    // OCI distribution spec, "Pulling manifests": <name> is
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
    // and a tag [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}. Checked in a simplified form: components of
    // lowercase alphanumerics joined by separators, no leading or trailing separator.
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
    };
    if !name.split('/').all(component_ok) {
        return Err(bad(
            "the name is not a repository name (lowercase a-z0-9 components, e.g. rancher/rancher-agent)",
        ));
    }
    let tag_ok = tag.len() <= 128
        && tag.starts_with(|ch: char| ch.is_ascii_alphanumeric() || ch == '_')
        && tag
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch));
    if !tag_ok {
        return Err(bad("the tag is not a valid tag"));
    }
    Ok((name.to_string(), tag.to_string()))
}

/// Loads the image `NAME:TAG` from a `docker save` archive: the `manifest.json` entry whose
/// `RepoTags` has exactly that reference or, when the archive holds one image only, that one
/// (so an archive can be served under another name).
pub fn load(reference: &str, path: &Path) -> Result<Image, Error> {
    let (name, tag) = parse_reference(reference)?;
    let bad = |detail: String| Error::Archive {
        path: path.to_path_buf(),
        detail,
    };
    let manifest_json = read_members(path, &["manifest.json".to_string()])?
        .remove("manifest.json")
        .ok_or_else(|| bad("no manifest.json (not a docker save archive)".into()))?;
    let entries: Vec<SaveEntry> =
        serde_json::from_slice(&manifest_json).map_err(|e| bad(format!("manifest.json: {e}")))?;
    let entry = pick_entry(&entries, reference).map_err(bad)?;

    let wanted: Vec<String> = std::iter::once(&entry.config)
        .chain(&entry.layers)
        .cloned()
        .collect();
    let mut members = read_members(path, &wanted)?;
    let mut take = |member: &String| {
        members.remove(member).ok_or_else(|| {
            bad(format!(
                "{member} is listed in manifest.json but not in the archive"
            ))
        })
    };
    let config = Bytes::from(take(&entry.config)?);
    let layers: Vec<Vec<u8>> = entry
        .layers
        .iter()
        .map(&mut take)
        .collect::<Result<_, _>>()?;
    build_image(name, tag, config, layers).map_err(bad)
}

fn pick_entry<'a>(entries: &'a [SaveEntry], reference: &str) -> Result<&'a SaveEntry, String> {
    let tagged = entries.iter().find(|e| {
        e.repo_tags
            .as_ref()
            .is_some_and(|tags| tags.iter().any(|t| t == reference))
    });
    match (tagged, entries) {
        (Some(entry), _) => Ok(entry),
        (None, [only]) => Ok(only),
        _ => {
            let tags: Vec<&str> = entries
                .iter()
                .flat_map(|e| e.repo_tags.iter().flatten())
                .map(String::as_str)
                .collect();
            Err(format!(
                "holds {} images and none is tagged {reference} (tags: {})",
                entries.len(),
                tags.join(", ")
            ))
        }
    }
}

/// The manifest and blobs for a config and its uncompressed (or already gzipped) layers.
fn build_image(
    name: String,
    tag: String,
    config: Bytes,
    layers: Vec<Vec<u8>>,
) -> Result<Image, String> {
    let parsed: ImageConfig =
        serde_json::from_slice(&config).map_err(|e| format!("image config: {e}"))?;
    let diff_ids = parsed.rootfs.diff_ids;
    if diff_ids.len() != layers.len() {
        return Err(format!(
            "the config lists {} diff_ids but manifest.json {} layers",
            diff_ids.len(),
            layers.len()
        ));
    }
    let mut blobs = BTreeMap::new();
    let config_digest = digest(&config);
    let config_descriptor = Descriptor {
        media_type: CONFIG_V1,
        size: config.len(),
        digest: config_digest.clone(),
    };
    blobs.insert(config_digest, config);
    let mut layer_descriptors = Vec::new();
    for (index, (layer, diff_id)) in layers.into_iter().zip(&diff_ids).enumerate() {
        let (gzipped, uncompressed_digest) = gzip_layer(layer)?;
        if &uncompressed_digest != diff_id {
            return Err(format!(
                "layer {index}: its sha256 is {uncompressed_digest} but the config's diff_id is {diff_id}"
            ));
        }
        let blob_digest = digest(&gzipped);
        layer_descriptors.push(Descriptor {
            media_type: LAYER_TAR_GZIP,
            size: gzipped.len(),
            digest: blob_digest.clone(),
        });
        blobs.insert(blob_digest, Bytes::from(gzipped));
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: MANIFEST_V2,
        config: config_descriptor,
        layers: layer_descriptors,
    };
    let manifest = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
    Ok(Image {
        name,
        tag,
        manifest_digest: digest(&manifest),
        manifest: Bytes::from(manifest),
        blobs,
    })
}

/// The layer gzipped (as is when it already is) and the digest of its uncompressed tar.
fn gzip_layer(layer: Vec<u8>) -> Result<(Vec<u8>, String), String> {
    if layer.starts_with(&[0x1f, 0x8b]) {
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(layer.as_slice())
            .read_to_end(&mut tar)
            .map_err(|e| format!("gunzip of a compressed layer: {e}"))?;
        return Ok((layer, digest(&tar)));
    }
    let diff_id = digest(&layer);
    // Fast compression: the registry gzips at every start and the e2e waits for it; the
    // blob's size on loopback hardly matters.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder
        .write_all(&layer)
        .and_then(|()| encoder.finish())
        .map(|gz| (gz, diff_id))
        .map_err(|e| format!("gzip: {e}"))
}

/// `path` without `./` and `dir/../` steps, as a tar member name.
fn normalise(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

/// Reads the named members of the tar at `path`, following symlinks between members (each
/// pass over the archive resolves one more level; a chain longer than 8 is refused).
fn read_members(path: &Path, wanted: &[String]) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let mut found = BTreeMap::new();
    // alias -> the member it names, for requested names that turned out to be symlinks
    let mut pending: Vec<(String, String)> = wanted
        .iter()
        .map(|w| (w.clone(), normalise(Path::new(w))))
        .collect();
    for _ in 0..8 {
        let targets: BTreeSet<String> = pending.iter().map(|(_, t)| t.clone()).collect();
        let (files, links) = scan(path, &targets)?;
        let mut next = Vec::new();
        for (requested, target) in pending {
            if let Some(data) = files.get(&target) {
                found.insert(requested, data.clone());
            } else if let Some(link) = links.get(&target) {
                next.push((requested, link.clone()));
            }
        }
        if next.is_empty() {
            return Ok(found);
        }
        pending = next;
    }
    Err(Error::Archive {
        path: path.to_path_buf(),
        detail: "symlink chain longer than 8".into(),
    })
}

/// Regular members' contents and symlinks' targets, by member name.
type Scanned = (BTreeMap<String, Vec<u8>>, BTreeMap<String, String>);

/// One pass over the archive: the contents of regular members in `targets`, and where the
/// symbolic links among them point (normalised against the link's directory).
fn scan(path: &Path, targets: &BTreeSet<String>) -> Result<Scanned, Error> {
    let bad = |detail: String| Error::Archive {
        path: path.to_path_buf(),
        detail,
    };
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut files = BTreeMap::new();
    let mut links = BTreeMap::new();
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let member_path: PathBuf = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let member = normalise(&member_path);
        if !targets.contains(&member) {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let link = entry
                .link_name()
                .map_err(|e| bad(e.to_string()))?
                .ok_or_else(|| bad(format!("{member}: link without a target")))?;
            // A symlink is relative to its own directory, a hard link to the archive root.
            let base = if kind.is_symlink() {
                member_path.parent().unwrap_or(Path::new("")).join(link)
            } else {
                link.into_owned()
            };
            links.insert(member, normalise(&base));
        } else {
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .map_err(|e| bad(format!("{member}: {e}")))?;
            files.insert(member, data);
        }
    }
    Ok((files, links))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_at_the_last_colon_and_follow_the_grammar() {
        assert_eq!(
            parse_reference("rancher/rancher-agent:v2.6.14").expect("valid"),
            ("rancher/rancher-agent".into(), "v2.6.14".into())
        );
        assert!(parse_reference("rancher/rancher-agent").is_err());
        assert!(parse_reference("Rancher/agent:v1").is_err());
        assert!(parse_reference("rancher//agent:v1").is_err());
        assert!(parse_reference("rancher/agent:-v1").is_err());
        assert!(parse_reference("localhost:5000/agent").is_err());
    }

    #[test]
    fn a_layer_that_does_not_match_its_diff_id_is_refused() {
        let config = Bytes::from_static(
            br#"{"rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#,
        );
        let err = build_image(
            "a".into(),
            "b".into(),
            config,
            vec![b"not the layer".to_vec()],
        )
        .expect_err("refused");
        assert!(err.contains("diff_id"), "{err}");
    }

    #[test]
    fn member_paths_are_normalised() {
        assert_eq!(normalise(Path::new("./manifest.json")), "manifest.json");
        assert_eq!(
            normalise(&Path::new("abc").join("../blobs/sha256/x")),
            "blobs/sha256/x"
        );
    }
}
