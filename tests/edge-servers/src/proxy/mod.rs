//! An HTTP/1.1 forward proxy for tests: `CONNECT host:port` tunnels (RFC 9110 section 9.3.6)
//! and absolute-form requests (`GET http://host:port/path HTTP/1.1`, RFC 9112 section 3.2.2),
//! which apt uses for `http://` repositories.
//!
//! What it connects to is closed by construction: the target host is first rewritten by the
//! `--map` rules (a guest names the host 10.0.2.2, which does not exist on the host), then must
//! be on the `--allow` list *and* resolve to loopback addresses only; anything else is answered
//! 403 without a connection being made. With credentials configured every request needs a
//! matching `Proxy-Authorization: Basic` (RFC 9110 section 11.7.2), else 407 with
//! `Proxy-Authenticate`.
//!
//! Absolute-form requests are forwarded one at a time on a persistent client connection
//! (apt pipelines: the next requests simply wait in the connection's buffer), each on a new
//! origin connection sent with `Connection: close`; the response is re-framed for the client
//! by its own framing (Content-Length or chunked keep the client connection open, a body that
//! ends at close closes it too).

mod http;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::Error;
use crate::jsonlog::JsonLog;
use http::Head;

/// How the proxy is set up.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    /// Host rewrites applied to every target before the allow check (`FROM`, `TO`), compared
    /// case-insensitively; the port is kept.
    pub maps: Vec<(String, String)>,
    /// The only targets (after mapping) it connects to.
    pub allow: Vec<(String, u16)>,
    /// Accepted `user:password` pairs; empty: no proxy authentication.
    pub credentials: Vec<Vec<u8>>,
    pub log: Option<PathBuf>,
}

/// A running proxy; dropping it stops accepting connections.
pub struct Proxy {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
    open: tokio::sync::watch::Receiver<usize>,
}

impl Proxy {
    /// Waits until no client connection is open. A request's log line is written before its
    /// connection is read again or closed, so once the clients have closed their connections
    /// this returns only after every line is in the log.
    pub async fn wait_idle(&self) {
        let mut open = self.open.clone();
        let _ = open.wait_for(|n| *n == 0).await;
    }
}

/// Counts a connection as open for as long as it lives (also when its task is aborted).
struct OpenConnection(Arc<tokio::sync::watch::Sender<usize>>);

impl OpenConnection {
    fn new(counter: &Arc<tokio::sync::watch::Sender<usize>>) -> Self {
        counter.send_modify(|n| *n += 1);
        Self(counter.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    config: ProxyConfig,
    log: JsonLog,
}

/// Parses `--map FROM=TO`.
pub fn parse_map(text: &str) -> Result<(String, String), Error> {
    match text.split_once('=') {
        Some((from, to)) if !from.is_empty() && !to.is_empty() => Ok((
            strip_brackets(from).to_string(),
            strip_brackets(to).to_string(),
        )),
        _ => Err(Error::Config(format!("--map {text:?}: expected FROM=TO"))),
    }
}

/// Parses `--allow HOST:PORT` (`[v6]:PORT` for IPv6).
pub fn parse_allow(text: &str) -> Result<(String, u16), Error> {
    split_host_port(text)
        .and_then(|(host, port)| port.map(|p| (host, p)))
        .ok_or_else(|| Error::Config(format!("--allow {text:?}: expected HOST:PORT")))
}

fn strip_brackets(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// `host[:port]` or `[v6][:port]`; `None` when it is not of that form.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains(['@', '/', ' ']) {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0)?),
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// Binds and starts serving; returns once it listens.
pub async fn start(config: ProxyConfig) -> Result<Proxy, Error> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: config.listen,
        source,
    })?;
    let state = Arc::new(State {
        log: JsonLog::open(config.log.as_deref())?,
        config,
    });
    let (counter, open) = tokio::sync::watch::channel(0usize);
    let counter = Arc::new(counter);
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let guard = OpenConnection::new(&counter);
                    let state = state.clone();
                    tokio::spawn(async move {
                        serve_connection(stream, peer, state).await;
                        drop(guard);
                    });
                }
                // Out of descriptors and the like: keep serving the connections there are.
                Err(e) => eprintln!("test-proxy: accept: {e}"),
            }
        }
    });
    Ok(Proxy { addr, task, open })
}

/// What a request asked for, once admitted.
struct Admitted {
    upstream: SocketAddr,
    /// Origin-form path for absolute-form requests.
    path: String,
}

/// A refusal: status, reason phrase, a message for the body, and whether to challenge.
struct Refusal(u16, &'static str, String);

/// One log line's fields, filled in as the request goes.
struct Entry {
    peer: SocketAddr,
    method: String,
    target: String,
    upstream: Option<String>,
    status: u16,
    bytes: u64,
    bytes_up: u64,
    auth_presented: bool,
}

impl Entry {
    /// `tunnel`: `open` or `closed` for an established CONNECT, absent otherwise.
    fn write(&self, log: &JsonLog, tunnel: Option<&str>) {
        let mut line = json!({
            "client": self.peer.to_string(),
            "method": self.method,
            "target": self.target,
            "upstream": self.upstream,
            "status": self.status,
            "bytes": self.bytes,
            "bytes_up": self.bytes_up,
            "auth_presented": self.auth_presented,
        });
        if let Some(phase) = tunnel {
            line["tunnel"] = phase.into();
        }
        log.write(line);
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, state: Arc<State>) {
    let mut client = BufReader::new(stream);
    loop {
        let head = match http::read_head(&mut client).await {
            Ok(Some(raw)) => http::parse_request(&raw),
            Ok(None) => return,
            Err(e) => Err(e.to_string()),
        };
        let head = match head {
            Ok(head) => head,
            Err(message) => {
                let _ = refuse(&mut client, &Refusal(400, "Bad Request", message)).await;
                return;
            }
        };
        let mut entry = Entry {
            peer,
            method: head.first.clone(),
            target: loggable_target(&head.second),
            upstream: None,
            status: 0,
            bytes: 0,
            bytes_up: 0,
            auth_presented: head.value("proxy-authorization").is_some(),
        };
        let keep = serve_request(&mut client, &head, &state, &mut entry).await;
        match keep {
            Keep::Open => entry.write(&state.log, None),
            Keep::Close => return entry.write(&state.log, None),
            Keep::Tunnel(upstream) => {
                // A tunnel can last as long as the node runs (the agent's websocket): one line
                // when it opens, so the log shows it while it is in use, one when it closes.
                entry.write(&state.log, Some("open"));
                tunnel(client, upstream, &mut entry).await;
                return entry.write(&state.log, Some("closed"));
            }
        }
    }
}

enum Keep {
    Open,
    Close,
    Tunnel(TcpStream),
}

async fn serve_request(
    client: &mut BufReader<TcpStream>,
    head: &Head,
    state: &State,
    entry: &mut Entry,
) -> Keep {
    let admitted = match admit(head, &state.config).await {
        Ok(admitted) => admitted,
        Err(refusal) => {
            entry.status = refusal.0;
            let _ = refuse(client, &refusal).await;
            return Keep::Close;
        }
    };
    entry.upstream = Some(admitted.upstream.to_string());
    let upstream = match TcpStream::connect(admitted.upstream).await {
        Ok(upstream) => upstream,
        Err(e) => {
            let refusal = Refusal(
                502,
                "Bad Gateway",
                format!("connecting to {}: {e}", admitted.upstream),
            );
            entry.status = refusal.0;
            let _ = refuse(client, &refusal).await;
            return Keep::Close;
        }
    };
    if head.first.eq_ignore_ascii_case("CONNECT") {
        entry.status = 200;
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return Keep::Close;
        }
        return Keep::Tunnel(upstream);
    }
    match forward(client, head, &admitted.path, upstream, entry).await {
        Ok(true) => Keep::Open,
        Ok(false) => Keep::Close,
        Err(e) => {
            // Nothing of the response was sent yet only when no status was recorded.
            if entry.status == 0 {
                let refusal = Refusal(502, "Bad Gateway", format!("origin: {e}"));
                entry.status = refusal.0;
                let _ = refuse(client, &refusal).await;
            }
            Keep::Close
        }
    }
}

/// The target without a query string or user info (either can carry a secret) for the log.
fn loggable_target(target: &str) -> String {
    let target = target.split(['?', '#']).next().unwrap_or("");
    match target.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or("");
            format!("{scheme}://{host}{path}")
        }
        None => target.rsplit('@').next().unwrap_or("").to_string(),
    }
}

/// Checks credentials, the target's form, the map, the allow list and loopback resolution.
async fn admit(head: &Head, config: &ProxyConfig) -> Result<Admitted, Refusal> {
    if !config.credentials.is_empty() {
        let presented = head.value("proxy-authorization");
        if !presented.is_some_and(|v| crate::credential_matches(v, &config.credentials)) {
            return Err(Refusal(
                407,
                "Proxy Authentication Required",
                "proxy authentication required".into(),
            ));
        }
    }
    let (host, port, path) = request_target(head)?;
    let host = config
        .maps
        .iter()
        .find(|(from, _)| from.eq_ignore_ascii_case(&host))
        .map(|(_, to)| to.to_ascii_lowercase())
        .unwrap_or(host);
    let shown = format!("{host}:{port}");
    if !config
        .allow
        .iter()
        .any(|(h, p)| h.eq_ignore_ascii_case(&host) && *p == port)
    {
        return Err(Refusal(
            403,
            "Forbidden",
            format!("{shown} is not an allowed target"),
        ));
    }
    let upstream = resolve_loopback(&host, port)
        .await
        .map_err(|why| Refusal(403, "Forbidden", format!("{shown}: {why}")))?;
    Ok(Admitted { upstream, path })
}

/// Host, port and origin-form path of a CONNECT (authority-form) or absolute-form request.
fn request_target(head: &Head) -> Result<(String, u16, String), Refusal> {
    let bad = |message: &str| Refusal(400, "Bad Request", message.to_string());
    let target = head.second.as_str();
    if head.first.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = split_host_port(target)
            .and_then(|(h, p)| p.map(|p| (h, p)))
            .ok_or_else(|| bad("CONNECT needs host:port"))?;
        return Ok((host, port, String::new()));
    }
    let rest = match target.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &target[7..],
        _ => {
            return Err(Refusal(
                400,
                "Bad Request",
                "only CONNECT and absolute-form http:// requests are proxied".into(),
            ));
        }
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let (host, port) =
        split_host_port(authority).ok_or_else(|| bad("bad host in the request target"))?;
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    if head.value("transfer-encoding").is_some() {
        return Err(Refusal(
            501,
            "Not Implemented",
            "request bodies with Transfer-Encoding are not proxied".into(),
        ));
    }
    head.content_length().map_err(|e| bad(&e))?;
    Ok((host, port.unwrap_or(80), path))
}

/// The first address of `host:port`, provided every address it resolves to is loopback: a
/// name that also resolves elsewhere is refused rather than partly trusted.
async fn resolve_loopback(host: &str, port: u16) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve: {e}"))?
            .collect(),
    };
    match addrs.first() {
        Some(first) if addrs.iter().all(|a| a.ip().is_loopback()) => Ok(*first),
        Some(_) => Err("resolves outside loopback".into()),
        None => Err("resolves to no address".into()),
    }
}

async fn refuse(client: &mut BufReader<TcpStream>, refusal: &Refusal) -> std::io::Result<()> {
    let Refusal(status, phrase, message) = refusal;
    let challenge = if *status == 407 {
        "Proxy-Authenticate: Basic realm=\"test-proxy\"\r\n"
    } else {
        ""
    };
    let body = format!("{message}\n");
    let response = format!(
        "HTTP/1.1 {status} {phrase}\r\n{challenge}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(response.as_bytes()).await?;
    client.flush().await
}

/// Forwards one absolute-form request and its response; `Ok(true)` if the client connection
/// can carry another request.
async fn forward(
    client: &mut BufReader<TcpStream>,
    head: &Head,
    path: &str,
    upstream: TcpStream,
    entry: &mut Entry,
) -> std::io::Result<bool> {
    let mut upstream = BufReader::new(upstream);
    let mut request = format!("{} {path} HTTP/1.1\r\n", head.first).into_bytes();
    for (name, value) in head.end_to_end() {
        push_header(&mut request, name, value);
    }
    if head.value("host").is_none() {
        let authority = head.second[7..].split(['/', '?']).next().unwrap_or("");
        push_header(&mut request, "Host", authority.as_bytes());
    }
    request.extend_from_slice(b"Connection: close\r\n\r\n");
    upstream.write_all(&request).await?;
    let body = head.content_length().ok().flatten().unwrap_or(0);
    entry.bytes_up = http::copy_exact(client, &mut upstream, body).await?;
    upstream.flush().await?;

    let response = loop {
        let raw = http::read_head(&mut upstream)
            .await?
            .ok_or_else(|| std::io::Error::other("origin closed without a response"))?;
        let response = http::parse_response(&raw).map_err(std::io::Error::other)?;
        let status: u16 = response.first.parse().unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            // Interim responses (100 Continue) go to the client as they are.
            client.write_all(&raw).await?;
            continue;
        }
        break response;
    };
    relay_response(client, head, response, &mut upstream, entry).await
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Whether the client asked to close after this exchange (RFC 9112 section 9.3: HTTP/1.0
/// closes unless it asked for keep-alive; HTTP/1.1 persists unless it sent `close`).
fn client_wants_close(head: &Head) -> bool {
    let tokens = head.tokens("connection");
    let mut proxy_tokens = head.tokens("proxy-connection");
    proxy_tokens.extend(tokens);
    if proxy_tokens.iter().any(|t| t == "close") {
        return true;
    }
    head.minor == 0 && !proxy_tokens.iter().any(|t| t == "keep-alive")
}

async fn relay_response(
    client: &mut BufReader<TcpStream>,
    request: &Head,
    response: Head,
    upstream: &mut BufReader<TcpStream>,
    entry: &mut Entry,
) -> std::io::Result<bool> {
    let status: u16 = response.first.parse().unwrap_or(0);
    // RFC 9112 section 6.3: these never have a body, whatever their headers say.
    let no_body = request.first.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304;
    let chunked = !no_body && response.chunked();
    let length = if no_body {
        Some(0)
    } else {
        response.content_length().map_err(std::io::Error::other)?
    };
    let until_close = !no_body && !chunked && length.is_none();
    let keep = !until_close && !client_wants_close(request);

    let mut out = format!("HTTP/1.1 {} {}\r\n", response.first, response.second).into_bytes();
    for (name, value) in response.end_to_end() {
        push_header(&mut out, name, value);
    }
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    out.extend_from_slice(if keep {
        b"Connection: keep-alive\r\n\r\n".as_slice()
    } else {
        b"Connection: close\r\n\r\n".as_slice()
    });
    client.write_all(&out).await?;
    entry.status = status;

    entry.bytes = if chunked {
        http::copy_chunked(upstream, client).await?
    } else if let Some(n) = length {
        http::copy_exact(upstream, client, if no_body { 0 } else { n }).await?
    } else {
        tokio::io::copy(upstream, client).await?
    };
    client.flush().await?;
    Ok(keep)
}

/// Relays bytes both ways until either side closes. Bytes the client sent after the CONNECT
/// head (a TLS ClientHello sent eagerly) are already in the buffer and go first.
async fn tunnel(client: BufReader<TcpStream>, mut upstream: TcpStream, entry: &mut Entry) {
    let early = client.buffer().to_vec();
    let mut client = client.into_inner();
    if upstream.write_all(&early).await.is_err() {
        return;
    }
    entry.bytes_up = early.len() as u64;
    // A reset mid-tunnel is how many TLS clients end; the counts are then simply unknown.
    if let Ok((up, down)) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        entry.bytes_up += up;
        entry.bytes = down;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_parse_with_ports_and_brackets() {
        assert_eq!(
            split_host_port("10.0.2.2:3128"),
            Some(("10.0.2.2".into(), Some(3128)))
        );
        assert_eq!(
            split_host_port("Example.LAB"),
            Some(("example.lab".into(), None))
        );
        assert_eq!(split_host_port("[::1]:80"), Some(("::1".into(), Some(80))));
        assert_eq!(split_host_port("user:pw@host:80"), None);
        assert_eq!(split_host_port("host:0"), None);
        assert_eq!(split_host_port("host:http"), None);
        assert!(parse_allow("127.0.0.1").is_err());
        assert_eq!(
            parse_map("10.0.2.2=127.0.0.1").expect("map"),
            ("10.0.2.2".into(), "127.0.0.1".into())
        );
        assert!(parse_map("=127.0.0.1").is_err());
    }

    #[test]
    fn logged_targets_drop_user_info_and_queries() {
        assert_eq!(
            loggable_target("http://u:pw@10.0.2.2:80/dists/x?token=t"),
            "http://10.0.2.2:80/dists/x"
        );
        assert_eq!(loggable_target("10.0.2.2:443"), "10.0.2.2:443");
    }

    #[tokio::test]
    async fn names_resolving_outside_loopback_are_refused() {
        assert!(resolve_loopback("127.0.0.1", 80).await.is_ok());
        assert!(resolve_loopback("10.0.2.2", 80).await.is_err());
        assert!(resolve_loopback("::1", 80).await.is_ok());
    }
}
