//! Helpers shared by the integration tests: docker save archives built the way
//! scripts/build-agent-image.sh builds them, a recording origin server, and clients.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub const USER: &str = "agent";
pub const PASSWORD: &str = "s3cret-Pa55";

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A layer tar with a few files, like the agent image's (entries sorted, mtime 0, root-owned).
pub fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, *data)
            .expect("layer entry");
    }
    builder.into_inner().expect("layer tar")
}

fn append(builder: &mut tar::Builder<std::fs::File>, path: &str, data: &[u8]) {
    let mut header = tar::Header::new_ustar();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, path, data).expect("entry");
}

fn append_symlink(builder: &mut tar::Builder<std::fs::File>, path: &str, target: &str) {
    let mut header = tar::Header::new_ustar();
    header.set_size(0);
    header.set_mode(0o777);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Symlink);
    builder
        .append_link(&mut header, path, target)
        .expect("symlink");
}

/// The image config JSON as build-agent-image.sh writes it (jq -c), for these layers.
pub fn config_json(tag: &str, layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha256_hex(l)))
        .collect();
    serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    format!("AGENT_IMAGE={tag}")],
            "Entrypoint": ["entrypoint.sh"],
            "WorkingDir": "/var/lib/rancher",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string()
    .into_bytes()
}

/// Writes `DIR/NAME` in the layout of scripts/build-agent-image.sh: `<diff_id>/layer.tar`,
/// `<diff_id>/VERSION`, `<diff_id>/json`, `<config sha256>.json`, `manifest.json`,
/// `repositories`, top-level entries sorted.
pub fn legacy_archive(dir: &Path, name: &str, tag: &str, layers: &[Vec<u8>]) -> PathBuf {
    let config = config_json(tag, layers);
    legacy_archive_of(dir, name, &[(tag, config, layers.to_vec())])
}

/// One image of an archive: tag, config JSON, uncompressed layer tars.
pub type SavedImage<'a> = (&'a str, Vec<u8>, Vec<Vec<u8>>);

/// [`legacy_archive`] for several images, configs as given.
pub fn legacy_archive_of(dir: &Path, name: &str, images: &[SavedImage<'_>]) -> PathBuf {
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut manifest = Vec::new();
    let mut repositories = serde_json::Map::new();
    for (tag, config, layers) in images {
        let config_name = format!("{}.json", sha256_hex(config));
        let layer_dirs: Vec<String> = layers.iter().map(|l| sha256_hex(l)).collect();
        manifest.push(serde_json::json!({
            "Config": config_name,
            "RepoTags": [tag],
            "Layers": layer_dirs.iter().map(|d| format!("{d}/layer.tar")).collect::<Vec<_>>(),
        }));
        let (repo, version) = tag.rsplit_once(':').expect("tag");
        repositories.insert(repo.into(), serde_json::json!({version: layer_dirs.last()}));
        entries.push((config_name, config.clone()));
        for (dir_name, layer) in layer_dirs.iter().zip(layers) {
            entries.push((format!("{dir_name}/layer.tar"), layer.clone()));
            entries.push((format!("{dir_name}/VERSION"), b"1.0".to_vec()));
            entries.push((
                format!("{dir_name}/json"),
                format!("{{\"id\":\"{dir_name}\"}}").into_bytes(),
            ));
        }
    }
    entries.push((
        "manifest.json".into(),
        serde_json::Value::from(manifest).to_string().into_bytes(),
    ));
    entries.push((
        "repositories".into(),
        serde_json::Value::from(repositories)
            .to_string()
            .into_bytes(),
    ));
    entries.sort();
    entries.dedup_by(|a, b| a.0 == b.0);
    let path = dir.join(name);
    let mut builder = tar::Builder::new(std::fs::File::create(&path).expect("archive"));
    for (entry, data) in &entries {
        append(&mut builder, entry, data);
    }
    builder.finish().expect("archive written");
    path
}

/// Writes `DIR/NAME` as Docker 25+ `docker save` does: blobs under `blobs/sha256/`, the old
/// `<id>/layer.tar` names left as symlinks into them, and manifest.json naming the symlinks
/// (so loading must follow links inside the archive).
pub fn oci_style_archive(dir: &Path, name: &str, tag: &str, layers: &[Vec<u8>]) -> PathBuf {
    let config = config_json(tag, layers);
    let config_hex = sha256_hex(&config);
    let path = dir.join(name);
    let mut builder = tar::Builder::new(std::fs::File::create(&path).expect("archive"));
    append(&mut builder, &format!("blobs/sha256/{config_hex}"), &config);
    let mut listed = Vec::new();
    for layer in layers {
        let hex = sha256_hex(layer);
        append(&mut builder, &format!("blobs/sha256/{hex}"), layer);
        append_symlink(
            &mut builder,
            &format!("{hex}/layer.tar"),
            &format!("../blobs/sha256/{hex}"),
        );
        listed.push(format!("{hex}/layer.tar"));
    }
    let manifest = serde_json::json!([{
        "Config": format!("blobs/sha256/{config_hex}"),
        "RepoTags": [tag],
        "Layers": listed,
    }]);
    append(
        &mut builder,
        "manifest.json",
        manifest.to_string().as_bytes(),
    );
    builder.finish().expect("archive written");
    path
}

/// Installs ring as rustls' process-wide provider (reqwest is built without one).
pub fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client that goes straight to the server (no proxy from the environment).
pub fn direct() -> reqwest::Client {
    crypto();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// An HTTP/1.1 origin on loopback that records every request head it receives and answers by
/// path: `/chunked` with a chunked body, `/eof` with a body ended by closing, anything else
/// with `Content-Length` and the body `origin:<path>`. It closes after each response, as the
/// proxy asks it to.
pub struct Origin {
    pub port: u16,
    pub heads: Arc<Mutex<Vec<String>>>,
}

pub async fn origin() -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let port = listener.local_addr().expect("addr").port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let recorded = heads.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let recorded = recorded.clone();
            tokio::spawn(async move { answer(stream, recorded).await });
        }
    });
    Origin { port, heads }
}

async fn answer(stream: TcpStream, recorded: Arc<Mutex<Vec<String>>>) {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body).await;
    let path = head.split(' ').nth(1).unwrap_or("").to_string();
    recorded.lock().expect("lock").push(head);
    let response = match path.as_str() {
        "/chunked" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_string(),
        "/eof" => "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close".to_string(),
        _ => {
            let body = format!("origin:{path}:{}", String::from_utf8_lossy(&body));
            format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\nX-Origin: yes\r\n\r\n{body}", body.len())
        }
    };
    let mut stream = reader.into_inner();
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A response read off a raw connection: status, headers (lowercase names), body.
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response head and a Content-Length, chunked (decoded) or until-close body.
pub async fn read_response(reader: &mut BufReader<TcpStream>) -> RawResponse {
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .await
        .expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (n, v) = line.split_once(':').expect("header line");
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut response = RawResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if response.header("transfer-encoding") == Some("chunked") {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).await.expect("chunk size");
            let size = usize::from_str_radix(size.trim(), 16).expect("hex size");
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).await.expect("chunk");
            if size == 0 {
                break;
            }
            response.body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(n) = response.header("content-length") {
        let mut body = vec![0; n.parse().expect("length")];
        reader.read_exact(&mut body).await.expect("body");
        response.body = body;
    } else {
        reader
            .read_to_end(&mut response.body)
            .await
            .expect("body to close");
    }
    response
}

/// The JSON lines of a log file.
pub fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// A child process killed when dropped, and the `url:` line it printed first.
pub struct Child {
    pub child: std::process::Child,
    pub url: String,
    pub stdout: Vec<String>,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `program args`, reading stdout up to and including the line starting with `until`.
pub fn spawn(program: &str, args: &[&str], until: &str) -> Child {
    use std::io::BufRead;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    let mut url = String::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("stdout line");
        if let Some(u) = line.strip_prefix("url: ") {
            url = u.to_string();
        }
        let done = line.starts_with(until);
        lines.push(line);
        if done {
            break;
        }
    }
    assert!(!url.is_empty(), "{program} printed no url: {lines:?}");
    Child {
        child,
        url,
        stdout: lines,
    }
}
