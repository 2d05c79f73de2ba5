//! One retrying HTTP client for everything bootstrapd fetches: metadata services, seed URLs,
//! Rancher.
//!
//! Early boot is when networks flap (DHCP not done, link-local route missing, metadata service
//! still starting), so every request is retried with exponential backoff and full jitter
//! (delay drawn uniformly from `[0, min(max_delay, initial * 2^n)]`, so that a fleet booting
//! at once does not hammer the server in lockstep), bounded by an overall deadline and a
//! number of attempts. Connect errors, timeouts, 5xx and 429 are retried; other statuses are
//! returned to the caller, who may override the decision per status (a starting Rancher's 401
//! and 503 must be retried). A certificate that does not verify is retried too, unless the
//! client was built with `fail_fast_on_certificate`.
//!
//! Bodies are read as a stream and refused as soon as they pass the size limit, so a broken
//! or hostile server cannot make the agent allocate without bound.

// Redaction lives with the secrets (lower than this module, so that settings and process
// helpers need not depend on the HTTP client); re-exported for the client's callers.
pub use crate::secret::{redact_url, redact_urls};
use std::fmt;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
pub use reqwest::{Method, StatusCode};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use url::Url;

use crate::secret::Secret;
use crate::userdata::proxy::ProxySettings;

/// Errors of [`HttpClient`]. Every variant names the URL (password and query removed).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid URL {url:?}: {source}")]
    InvalidUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("unsupported URL scheme in {url} (only http and https)")]
    UnsupportedScheme { url: String },
    #[error("invalid header {name:?} for {url}")]
    InvalidHeader { name: String, url: String },
    #[error("could not encode the request body for {url}: {source}")]
    Encode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid CA certificate PEM: {0}")]
    InvalidCa(String),
    #[error("could not build the HTTP client: {0}")]
    Build(String),
    #[error("{method} {url}: response body larger than {limit} bytes")]
    BodyTooLarge {
        method: Method,
        url: String,
        limit: usize,
    },
    #[error("{method} {url}: gave up after {attempts} attempt(s) in {elapsed:?}: {last}")]
    Exhausted {
        method: Method,
        url: String,
        attempts: u32,
        elapsed: Duration,
        last: Cause,
    },
    /// The server's certificate failed verification under the configured trust on
    /// consecutive attempts (only with [`HttpClientBuilder::fail_fast_on_certificate`]).
    #[error("{url}: the server's certificate does not verify ({attempts} attempt(s)): {detail}")]
    Certificate {
        url: String,
        attempts: u32,
        detail: String,
    },
    /// An https request redirected to a plain-http URL: what comes back could be anything.
    #[error("{method} {url}: writing the body to {path}: {detail}")]
    Sink {
        method: Method,
        url: String,
        path: String,
        detail: String,
    },
    #[error("{url} redirects to {location}: refusing to leave https for plain http")]
    InsecureRedirect { url: String, location: String },
    #[error("{method} {url}: unexpected status {status}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
    },
}

/// Why the last attempt of a request failed.
#[derive(Debug, Clone)]
pub enum Cause {
    /// Connection, TLS or protocol error (text of the whole error chain).
    Transport(String),
    /// The per-attempt timeout expired.
    Timeout(Duration),
    /// The server answered with a status the caller considers retryable.
    Status(StatusCode),
    /// TLS: the server's certificate did not verify under the configured trust.
    Certificate(String),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Transport(e) => write!(f, "{e}"),
            Cause::Timeout(d) => write!(f, "attempt timed out after {d:?}"),
            Cause::Status(s) => write!(f, "status {s}"),
            Cause::Certificate(e) => write!(f, "certificate verification failed: {e}"),
        }
    }
}

impl HttpError {
    /// The HTTP status of the final failure, when it was one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            HttpError::Exhausted {
                last: Cause::Status(s),
                ..
            }
            | HttpError::Status { status: s, .. } => Some(*s),
            _ => None,
        }
    }
}

/// Retry bounds. All four limits apply; whichever is hit first ends the retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Upper bound of the first backoff delay.
    pub initial: Duration,
    /// Upper bound of any backoff delay.
    pub max_delay: Duration,
    /// Overall time budget for the request including all attempts and delays.
    pub deadline: Duration,
    /// Maximum number of attempts (at least one is always made).
    pub attempts: u32,
    /// The first delay's bound when longer than `initial`, even past `max_delay`: a fleet's
    /// splay (`rancher.splay_seconds`), paid only by a request that failed once.
    pub splay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
            deadline: Duration::from_secs(120),
            attempts: 30,
            splay: Duration::ZERO,
        }
    }
}

impl RetryPolicy {
    /// A single attempt, no retries (still bounded by `deadline`).
    pub fn once(deadline: Duration) -> Self {
        RetryPolicy {
            initial: Duration::ZERO,
            max_delay: Duration::ZERO,
            deadline,
            attempts: 1,
            splay: Duration::ZERO,
        }
    }

    /// The upper bound of the delay after failed attempt number `retry` (0-based):
    /// `min(max_delay, initial * 2^retry)`, and at least `splay` for the first.
    pub fn backoff_cap(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        let cap = self
            .initial
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        if retry == 0 { cap.max(self.splay) } else { cap }
    }

    /// A full-jitter delay: uniform in `[0, backoff_cap(retry)]`.
    pub fn jittered_delay(&self, retry: u32, rng: &mut fastrand::Rng) -> Duration {
        let cap = self.backoff_cap(retry).as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(rng.u64(0..=cap))
    }
}

/// Which server certificates the client accepts. The insecure mode is not a variant on
/// purpose: it is only reachable through [`HttpClientBuilder::insecure_for_cacerts_fetch`].
#[derive(Clone)]
pub enum TlsTrust {
    /// The Mozilla root program as compiled in (webpki-roots): the image may have no CA
    /// bundle at all, and early boot must not depend on one.
    SystemRoots,
    /// Exactly these CA certificates and nothing else (Rancher's CA after its checksum
    /// matched).
    PinnedCa(Vec<CertificateDer<'static>>),
    /// The compiled-in roots and the userdata's `trusted_ca` (never a pin: see
    /// [`TlsTrust::system_and`]).
    SystemRootsAnd(Vec<CertificateDer<'static>>),
}

impl fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsTrust::SystemRoots => f.write_str("SystemRoots"),
            TlsTrust::PinnedCa(c) => write!(f, "PinnedCa({} cert(s))", c.len()),
            TlsTrust::SystemRootsAnd(c) => write!(f, "SystemRootsAnd({} cert(s))", c.len()),
        }
    }
}

impl TlsTrust {
    /// The system roots, and `extra` CAs beside them (the userdata's `trusted_ca`, passed
    /// by whoever builds the client). What trusts the system roots trusts these too; a
    /// pinned CA never does.
    pub fn system_and(extra: Vec<CertificateDer<'static>>) -> Self {
        if extra.is_empty() {
            TlsTrust::SystemRoots
        } else {
            TlsTrust::SystemRootsAnd(extra)
        }
    }

    /// Pins the certificates in `pem` (one or more `CERTIFICATE` blocks; other blocks are
    /// ignored). Fails when there is none.
    pub fn pinned_pem(pem: &[u8]) -> Result<Self, HttpError> {
        let mut certs = Vec::new();
        for c in CertificateDer::pem_slice_iter(pem) {
            certs.push(c.map_err(|e| HttpError::InvalidCa(e.to_string()))?);
        }
        if certs.is_empty() {
            return Err(HttpError::InvalidCa(
                "no CERTIFICATE block in the PEM text".into(),
            ));
        }
        Ok(TlsTrust::PinnedCa(certs))
    }
}

#[derive(Clone)]
enum Trust {
    Verified(TlsTrust),
    InsecureForCacerts,
}

/// Where a client's requests go first.
#[derive(Clone)]
enum Route {
    /// `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` of bootstrapd's environment, as reqwest reads
    /// them: the behaviour before any userdata is read.
    Environment,
    /// Straight to the server, whatever the environment or the userdata say.
    Direct,
    /// The userdata's `proxy` (the environment's variables are then ignored).
    Userdata(ProxySettings),
}

/// Never proxied, whatever `proxy.no_proxy` says: the link-local metadata services (EC2's
/// and OpenStack's 169.254.169.254, EC2's IPv6 fd00:ec2::254) and link-local addresses in
/// general, which a proxy elsewhere could not reach anyway.
pub const NEVER_PROXIED: [&str; 3] = ["169.254.0.0/16", "fe80::/10", "fd00:ec2::254"];

/// The no-proxy list bootstrapd's own client uses with the userdata's proxy: the userdata's
/// entries and [`NEVER_PROXIED`].
pub fn no_proxy_list(settings: &ProxySettings) -> String {
    settings
        .no_proxy
        .iter()
        .map(String::as_str)
        .chain(NEVER_PROXIED)
        .collect::<Vec<_>>()
        .join(",")
}

/// The reqwest proxies for the userdata's settings: one per target scheme that has a URL,
/// each with the no-proxy list. Credentials in a URL become `Proxy-Authorization: Basic`
/// (reqwest takes them from the URL's userinfo), for plain requests and CONNECT alike.
fn userdata_proxies(settings: &ProxySettings) -> Result<Vec<reqwest::Proxy>, HttpError> {
    let no_proxy = no_proxy_list(settings);
    let mut out = Vec::new();
    type Make = fn(&str) -> reqwest::Result<reqwest::Proxy>;
    let pairs: [(&Option<Secret>, Make); 2] = [
        (&settings.http, |u| reqwest::Proxy::http(u)),
        (&settings.https, |u| reqwest::Proxy::https(u)),
    ];
    for (url, make) in pairs {
        let Some(url) = url else { continue };
        // reqwest's error would quote the URL, password included.
        let proxy = make(url.expose()).map_err(|_| {
            HttpError::Build(format!(
                "invalid proxy URL {}",
                redact_url_str(url.expose())
            ))
        })?;
        out.push(proxy.no_proxy(reqwest::NoProxy::from_string(&no_proxy)));
    }
    Ok(out)
}

/// Builds an [`HttpClient`].
#[derive(Clone)]
pub struct HttpClientBuilder {
    trust: Trust,
    retry: RetryPolicy,
    attempt_timeout: Duration,
    max_body: usize,
    route: Route,
    cert_fail_after: Option<u32>,
}

impl HttpClientBuilder {
    pub fn new(trust: TlsTrust) -> Self {
        HttpClientBuilder {
            trust: Trust::Verified(trust),
            retry: RetryPolicy::default(),
            attempt_timeout: Duration::from_secs(15),
            max_body: 16 << 20,
            route: Route::Environment,
            cert_fail_after: None,
        }
    }

    /// A client that accepts ANY server certificate.
    ///
    /// It exists for exactly one purpose: fetching Rancher's `/cacerts` (or
    /// `/v3/settings/cacerts`) before its SHA-256 is compared with the `--ca-checksum` the
    /// user supplied. The checksum, not TLS, is the trust anchor at that moment, which is
    /// also what Rancher's own agents do. Nothing secret may be sent with this client and
    /// its answer must be discarded unless the checksum matches; every later request must
    /// use [`TlsTrust::PinnedCa`] with the CA just verified.
    pub fn insecure_for_cacerts_fetch() -> Self {
        HttpClientBuilder {
            trust: Trust::InsecureForCacerts,
            ..HttpClientBuilder::new(TlsTrust::SystemRoots)
        }
    }

    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Time limit of one attempt (connect, send and reading the whole body).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// Largest accepted response body in bytes.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Give up with [`HttpError::Certificate`] after `attempts` consecutive attempts whose
    /// TLS handshake failed certificate verification, instead of retrying to the deadline:
    /// a certificate that does not verify now will not verify in a minute either, but one
    /// repeat rides out a server restarting mid-handshake.
    pub fn fail_fast_on_certificate(mut self, attempts: u32) -> Self {
        self.cert_fail_after = Some(attempts.max(1));
        self
    }

    /// Ignore `HTTP_PROXY`/`HTTPS_PROXY`: link-local metadata services must never be asked
    /// through a proxy.
    pub fn no_proxy(mut self) -> Self {
        self.route = Route::Direct;
        self
    }

    /// Go through the userdata's proxy when it sets one (link-local addresses and its
    /// `no_proxy` entries excepted); without one, the environment's variables apply as
    /// before. A client made [`no_proxy`](Self::no_proxy) stays direct.
    pub fn proxy(mut self, settings: &ProxySettings) -> Self {
        if settings.has_proxy() && !matches!(self.route, Route::Direct) {
            self.route = Route::Userdata(settings.clone());
        }
        self
    }

    pub fn build(self) -> Result<HttpClient, HttpError> {
        // reqwest is built without a default crypto provider; without one installed the
        // client build panics. A second install attempt fails harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let build = |redirect: reqwest::redirect::Policy| {
            let mut b = reqwest::Client::builder()
                .user_agent(concat!("bootstrapd/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(self.attempt_timeout)
                .redirect(redirect);
            match &self.route {
                Route::Environment => {}
                Route::Direct => b = b.no_proxy(),
                Route::Userdata(p) => {
                    for proxy in userdata_proxies(p)? {
                        b = b.proxy(proxy);
                    }
                }
            }
            b = match &self.trust {
                Trust::Verified(t) => b.tls_backend_preconfigured(rustls_config(t)?),
                Trust::InsecureForCacerts => b.tls_danger_accept_invalid_certs(true),
            };
            b.build().map_err(|e| HttpError::Build(error_chain(&e)))
        };
        let inner = build(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if is_downgrade(&attempt) {
                // Handed to the caller, which refuses it (HttpError::InsecureRedirect).
                attempt.stop()
            } else {
                attempt.follow()
            }
        }))?;
        let inner_same_origin = build(reqwest::redirect::Policy::custom(|attempt| {
            let same = attempt
                .previous()
                .first()
                .is_some_and(|first| first.origin() == attempt.url().origin());
            if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if same && !is_downgrade(&attempt) {
                attempt.follow()
            } else {
                // Hand the 3xx to the caller rather than carry a secret header elsewhere.
                attempt.stop()
            }
        }))?;
        Ok(HttpClient {
            inner,
            inner_same_origin,
            retry: self.retry,
            attempt_timeout: self.attempt_timeout,
            max_body: self.max_body,
            cert_fail_after: self.cert_fail_after,
        })
    }
}

const MAX_REDIRECTS: usize = 5;

/// True when a redirect leaves https for anything else: signing keys, the agent binary from
/// `/assets` and userdata fetched over https must not come back over plain http.
fn is_downgrade(attempt: &reqwest::redirect::Attempt<'_>) -> bool {
    attempt
        .previous()
        .last()
        .is_some_and(|prev| prev.scheme() == "https" && attempt.url().scheme() != "https")
}

/// The redirect target of a 3xx answer to an https URL when it is not https itself.
fn downgrade_location(resp: &reqwest::Response) -> Option<Url> {
    if !resp.status().is_redirection() || resp.url().scheme() != "https" {
        return None;
    }
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)?
        .to_str()
        .ok()?;
    let target = resp.url().join(location).ok()?;
    (target.scheme() != "https").then_some(target)
}

fn rustls_config(trust: &TlsTrust) -> Result<rustls::ClientConfig, HttpError> {
    let mut roots = rustls::RootCertStore::empty();
    match trust {
        TlsTrust::SystemRoots => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        TlsTrust::SystemRootsAnd(extra) => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            for c in extra {
                roots
                    .add(c.clone())
                    .map_err(|e| HttpError::InvalidCa(e.to_string()))?;
            }
        }
        TlsTrust::PinnedCa(certs) => {
            for c in certs {
                roots
                    .add(c.clone())
                    .map_err(|e| HttpError::InvalidCa(e.to_string()))?;
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Build(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// One request. Header values given as [`Secret`] are marked sensitive and never logged.
#[derive(Clone)]
pub struct Request {
    method: Method,
    url: Url,
    headers: Vec<(String, HeaderValueSrc)>,
    body: Option<Vec<u8>>,
}

#[derive(Clone)]
enum HeaderValueSrc {
    Plain(String),
    Secret(Secret),
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, redact_url(&self.url))
    }
}

impl Request {
    pub fn new(method: Method, url: &str) -> Result<Self, HttpError> {
        let parsed = Url::parse(url).map_err(|source| HttpError::InvalidUrl {
            url: redact_url_str(url),
            source,
        })?;
        Self::from_url(method, parsed)
    }

    pub fn from_url(method: Method, url: Url) -> Result<Self, HttpError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HttpError::UnsupportedScheme {
                url: redact_url(&url),
            });
        }
        Ok(Request {
            method,
            url,
            headers: Vec::new(),
            body: None,
        })
    }

    pub fn get(url: &str) -> Result<Self, HttpError> {
        Self::new(Method::GET, url)
    }

    pub fn put(url: &str) -> Result<Self, HttpError> {
        Self::new(Method::PUT, url)
    }

    pub fn post(url: &str) -> Result<Self, HttpError> {
        Self::new(Method::POST, url)
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers
            .push((name.to_string(), HeaderValueSrc::Plain(value.into())));
        self
    }

    /// A header carrying a secret (token, `Authorization`): sent, never logged.
    pub fn secret_header(mut self, name: &str, value: &Secret) -> Self {
        self.headers
            .push((name.to_string(), HeaderValueSrc::Secret(value.clone())));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// JSON body with `Content-Type: application/json`.
    pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> Result<Self, HttpError> {
        let body = serde_json::to_vec(value).map_err(|source| HttpError::Encode {
            url: redact_url(&self.url),
            source,
        })?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    fn header_map(&self) -> Result<HeaderMap, HttpError> {
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            let bad = || HttpError::InvalidHeader {
                name: name.clone(),
                url: redact_url(&self.url),
            };
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            let v = match value {
                HeaderValueSrc::Plain(v) => HeaderValue::from_str(v).map_err(|_| bad())?,
                HeaderValueSrc::Secret(s) => {
                    let mut v = HeaderValue::from_str(s.expose()).map_err(|_| bad())?;
                    v.set_sensitive(true);
                    v
                }
            };
            map.append(n, v);
        }
        Ok(map)
    }
}

/// Where [`HttpClient::download_into`] writes a body: an open file, truncated at each attempt,
/// and the sha256 of what the attempt wrote.
#[derive(Debug)]
pub struct Sink {
    file: std::fs::File,
    /// For messages.
    path: String,
    /// The running attempt's hash; none before the first attempt.
    hasher: std::sync::Mutex<Option<Hasher>>,
}

/// The sha256 computed on a thread of its own as the chunks arrive: the hash (user time) runs
/// beside the receive and the write (system time) instead of after them, and the file is never
/// read back. For an 83 MiB extension under TCG each was over a second. The channel is bounded,
/// so a hash slower than the network holds back the download, not the memory.
#[derive(Debug)]
struct Hasher {
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    worker: std::thread::JoinHandle<sha2::Sha256>,
}

/// Chunks in flight to the hashing thread (hyper's are at most a few tens of KiB).
const HASH_QUEUE: usize = 32;

impl Hasher {
    fn start() -> Self {
        use sha2::Digest;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(HASH_QUEUE);
        let worker = std::thread::spawn(move || {
            let mut h = sha2::Sha256::new();
            while let Some(chunk) = rx.blocking_recv() {
                h.update(&chunk);
            }
            h
        });
        Hasher { tx, worker }
    }

    /// Closing the channel ends the thread's loop; its hash is what it was sent.
    fn finish(self) -> sha2::Sha256 {
        drop(self.tx);
        self.worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Sink {
    pub fn new(file: std::fs::File, path: impl Into<String>) -> Self {
        Sink {
            file,
            path: path.into(),
            hasher: std::sync::Mutex::new(None),
        }
    }

    /// The lowercase hex sha256 of the bytes the last (the successful) attempt wrote.
    pub fn sha256_hex(self) -> String {
        use sha2::Digest;
        let hasher = self.hasher.into_inner().unwrap_or_else(|p| p.into_inner());
        // No attempt, no bytes.
        let digest = hasher.map_or_else(sha2::Sha256::new, Hasher::finish);
        hex::encode(digest.finalize())
    }

    fn hasher(&self) -> std::sync::MutexGuard<'_, Option<Hasher>> {
        // Poisoned only by a panic while replacing it, which leaves nothing worth refusing.
        self.hasher.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn restart(&self) -> std::io::Result<()> {
        use std::io::Seek;
        // The earlier attempt's thread ends when its sender is dropped here.
        *self.hasher() = Some(Hasher::start());
        self.file.set_len(0)?;
        (&self.file).seek(std::io::SeekFrom::Start(0)).map(|_| ())
    }

    async fn write(&self, chunk: bytes::Bytes) -> std::io::Result<()> {
        use std::io::Write;
        (&self.file).write_all(&chunk)?;
        let tx = self.hasher().as_ref().map(|h| h.tx.clone());
        match tx {
            Some(tx) => tx
                .send(chunk)
                .await
                .map_err(|_| std::io::Error::other("the hashing thread ended early")),
            None => Err(std::io::Error::other("written before the attempt started")),
        }
    }
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// Final URL after redirects, for messages (password and query removed).
    pub url: String,
}

impl Response {
    /// Header value as text, if present and valid.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Turns a non-2xx status into [`HttpError::Status`].
    pub fn error_for_status(self, method: &Method) -> Result<Self, HttpError> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(HttpError::Status {
                method: method.clone(),
                url: self.url.clone(),
                status: self.status,
            })
        }
    }
}

/// The caller's verdict on a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand the response to the caller.
    Accept,
    /// Try again after backoff (while attempts and deadline allow).
    Retry,
}

/// The default verdict: 5xx and 429 are transient, everything else is the caller's business.
pub fn default_verdict(status: StatusCode) -> Verdict {
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Verdict::Retry
    } else {
        Verdict::Accept
    }
}

/// The retrying client. Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    /// For requests with secret headers: reqwest strips only `Authorization` and cookies on
    /// cross-origin redirects, not custom headers such as the IMDS token, so such requests
    /// follow redirects within the same origin only.
    inner_same_origin: reqwest::Client,
    retry: RetryPolicy,
    attempt_timeout: Duration,
    max_body: usize,
    cert_fail_after: Option<u32>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("retry", &self.retry)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("max_body", &self.max_body)
            .finish()
    }
}

enum AttemptError {
    Retryable(Cause),
    Fatal(HttpError),
}

impl HttpClient {
    pub fn builder(trust: TlsTrust) -> HttpClientBuilder {
        HttpClientBuilder::new(trust)
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Sends with the default verdict ([`default_verdict`]).
    pub async fn send(&self, req: &Request) -> Result<Response, HttpError> {
        self.send_with(req, |r| default_verdict(r.status)).await
    }

    /// Sends, retrying transport errors and timeouts always and responses whenever `verdict`
    /// says [`Verdict::Retry`]. A `Retry-After` in seconds lengthens the next delay (still
    /// capped by `max_delay` and the deadline). When retries run out the error carries the
    /// last cause.
    pub async fn send_with<F>(&self, req: &Request, verdict: F) -> Result<Response, HttpError>
    where
        F: Fn(&Response) -> Verdict,
    {
        self.send_into(req, verdict, None).await
    }

    /// Sends with the default verdict and streams a 2xx body into `sink` instead of memory
    /// (an image of tens of MiB must not lift the peak RSS by as much): each attempt starts the
    /// file over, so a retry after a cut-off transfer leaves no part of the earlier one. The
    /// returned response's body is empty for a 2xx status; other bodies are read as usual.
    pub async fn download_into(&self, req: &Request, sink: &Sink) -> Result<Response, HttpError> {
        self.send_into(req, |r| default_verdict(r.status), Some(sink))
            .await
    }

    async fn send_into<F>(
        &self,
        req: &Request,
        verdict: F,
        sink: Option<&Sink>,
    ) -> Result<Response, HttpError>
    where
        F: Fn(&Response) -> Verdict,
    {
        let started = Instant::now();
        let policy = self.retry;
        let url = redact_url(&req.url);
        let headers = req.header_map()?;
        let mut rng = fastrand::Rng::new();
        let mut attempt: u32 = 0;
        let mut cert_failures: u32 = 0;
        loop {
            attempt += 1;
            let remaining = policy.deadline.saturating_sub(started.elapsed());
            let timeout = self.attempt_timeout.min(remaining);
            let outcome = match tokio::time::timeout(
                timeout,
                self.attempt(req, &headers, &url, sink),
            )
            .await
            {
                Err(_) => Err(AttemptError::Retryable(Cause::Timeout(timeout))),
                Ok(r) => r,
            };
            let (cause, retry_after) = match outcome {
                Ok(resp) => {
                    if verdict(&resp) == Verdict::Accept {
                        tracing::debug!(method = %req.method, %url, attempt, status = resp.status.as_u16(), "HTTP response");
                        return Ok(resp);
                    }
                    let ra = retry_after(&resp.headers);
                    (Cause::Status(resp.status), ra)
                }
                Err(AttemptError::Fatal(e)) => {
                    tracing::error!(method = %req.method, %url, attempt, error = %e, "HTTP request failed");
                    return Err(e);
                }
                Err(AttemptError::Retryable(c)) => (c, None),
            };
            if let Cause::Certificate(detail) = &cause {
                cert_failures += 1;
                if self.cert_fail_after.is_some_and(|n| cert_failures >= n) {
                    let err = HttpError::Certificate {
                        url,
                        attempts: attempt,
                        detail: detail.clone(),
                    };
                    tracing::error!(error = %err, "HTTP request failed");
                    return Err(err);
                }
            } else {
                cert_failures = 0;
            }
            tracing::debug!(method = %req.method, %url, attempt, cause = %cause, "HTTP attempt failed");

            let mut delay = policy.jittered_delay(attempt - 1, &mut rng);
            if let Some(ra) = retry_after {
                delay = delay.max(ra.min(policy.max_delay));
            }
            let elapsed = started.elapsed();
            // Sleeping past the deadline would only end in a guaranteed failure later.
            if attempt >= policy.attempts.max(1) || elapsed + delay >= policy.deadline {
                let err = HttpError::Exhausted {
                    method: req.method.clone(),
                    url,
                    attempts: attempt,
                    elapsed,
                    last: cause,
                };
                tracing::error!(error = %err, "HTTP request failed");
                return Err(err);
            }
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        req: &Request,
        headers: &HeaderMap,
        url: &str,
        sink: Option<&Sink>,
    ) -> Result<Response, AttemptError> {
        let has_secret = req
            .headers
            .iter()
            .any(|(_, v)| matches!(v, HeaderValueSrc::Secret(_)));
        let client = if has_secret {
            &self.inner_same_origin
        } else {
            &self.inner
        };
        let mut rb = client
            .request(req.method.clone(), req.url.clone())
            .headers(headers.clone());
        if let Some(b) = &req.body {
            rb = rb.body(b.clone());
        }
        let mut resp = rb.send().await.map_err(|e| {
            let text = error_chain(&e);
            AttemptError::Retryable(if is_certificate_error(&e) {
                Cause::Certificate(text)
            } else {
                Cause::Transport(text)
            })
        })?;
        if let Some(target) = downgrade_location(&resp) {
            return Err(AttemptError::Fatal(HttpError::InsecureRedirect {
                url: redact_url(resp.url()),
                location: redact_url(&target),
            }));
        }
        let too_large = || {
            AttemptError::Fatal(HttpError::BodyTooLarge {
                method: req.method.clone(),
                url: url.to_string(),
                limit: self.max_body,
            })
        };
        if resp
            .content_length()
            .is_some_and(|n| n > self.max_body as u64)
        {
            return Err(too_large());
        }
        let status = resp.status();
        let headers = resp.headers().clone();
        let final_url = redact_url(resp.url());
        let sink = sink.filter(|_| status.is_success());
        let body = self.read_body(&mut resp, req, url, sink).await?;
        Ok(Response {
            status,
            headers,
            body,
            url: final_url,
        })
    }
}

impl HttpClient {
    /// The body, in memory or (a 2xx for [`HttpClient::download_into`]) into `sink`, started
    /// over; at most `max_body` bytes either way.
    async fn read_body(
        &self,
        resp: &mut reqwest::Response,
        req: &Request,
        url: &str,
        sink: Option<&Sink>,
    ) -> Result<Vec<u8>, AttemptError> {
        let too_large = || {
            AttemptError::Fatal(HttpError::BodyTooLarge {
                method: req.method.clone(),
                url: url.to_string(),
                limit: self.max_body,
            })
        };
        let sink_err = |s: &Sink, e: std::io::Error| {
            AttemptError::Fatal(HttpError::Sink {
                method: req.method.clone(),
                url: url.to_string(),
                path: s.path.clone(),
                detail: e.to_string(),
            })
        };
        if let Some(s) = sink {
            s.restart().map_err(|e| sink_err(s, e))?;
        }
        let mut body = Vec::new();
        let mut received = 0usize;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| AttemptError::Retryable(Cause::Transport(error_chain(&e))))?
        {
            received += chunk.len();
            if received > self.max_body {
                return Err(too_large());
            }
            match sink {
                Some(s) => s.write(chunk).await.map_err(|e| sink_err(s, e))?,
                None => body.extend_from_slice(&chunk),
            }
        }
        Ok(body)
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// True when `e`'s chain holds rustls' certificate verdict (unknown issuer, expired, name
/// mismatch, ...). The rustls error sits inside an `io::Error` whose `source()` skips it,
/// so each `io::Error` on the way is opened with `get_ref`.
fn is_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let cert = |x: &(dyn std::error::Error + 'static)| {
        matches!(
            x.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(_))
        )
    };
    let mut cur = Some(e);
    while let Some(c) = cur {
        if cert(c) {
            return true;
        }
        if let Some(inner) = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && (cert(inner) || is_certificate_error(inner))
        {
            return true;
        }
        cur = c.source();
    }
    false
}

/// The error and all its sources, since reqwest's top-level message alone ("error sending
/// request") does not say what went wrong.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    // reqwest's own text carries the whole URL ("error sending request for url (...)"),
    // query included: a presigned URL's signature would reach the logs and the journal.
    redact_urls(&s)
}

fn redact_url_str(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => redact_url(&u),
        // Unparseable: cut at the first character that could start credentials or a query.
        Err(_) => url
            .split(['@', '?', '#'])
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_cap_doubles_and_saturates() {
        let p = RetryPolicy {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            deadline: Duration::from_secs(60),
            attempts: 100,
            splay: Duration::ZERO,
        };
        assert_eq!(p.backoff_cap(0), Duration::from_millis(100));
        assert_eq!(p.backoff_cap(1), Duration::from_millis(200));
        assert_eq!(p.backoff_cap(4), Duration::from_millis(1600));
        assert_eq!(p.backoff_cap(5), Duration::from_secs(2));
        assert_eq!(p.backoff_cap(40), Duration::from_secs(2));
        assert_eq!(p.backoff_cap(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn the_splay_bounds_only_the_first_delay_even_past_the_ceiling() {
        let p = RetryPolicy {
            initial: Duration::from_secs(2),
            max_delay: Duration::from_secs(8),
            deadline: Duration::from_secs(600),
            attempts: u32::MAX,
            splay: Duration::from_secs(30),
        };
        assert_eq!(p.backoff_cap(0), Duration::from_secs(30));
        assert_eq!(p.backoff_cap(1), Duration::from_secs(4));
        assert_eq!(p.backoff_cap(3), Duration::from_secs(8));
        // A splay shorter than the first backoff changes nothing.
        let short = RetryPolicy {
            splay: Duration::from_secs(1),
            ..p
        };
        assert_eq!(short.backoff_cap(0), Duration::from_secs(2));
    }

    #[test]
    fn full_jitter_stays_within_bounds_and_spreads() {
        let p = RetryPolicy {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            deadline: Duration::from_secs(60),
            attempts: 100,
            splay: Duration::ZERO,
        };
        let mut rng = fastrand::Rng::with_seed(7);
        for retry in 0..20 {
            let cap = p.backoff_cap(retry);
            let ds: Vec<_> = (0..200)
                .map(|_| p.jittered_delay(retry, &mut rng))
                .collect();
            assert!(ds.iter().all(|d| *d <= cap), "retry {retry}: above {cap:?}");
            // Full jitter: draws land in both halves of [0, cap], not near the cap only.
            assert!(ds.iter().any(|d| *d < cap / 2), "retry {retry}: none low");
            assert!(ds.iter().any(|d| *d > cap / 2), "retry {retry}: none high");
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(
            default_verdict(StatusCode::SERVICE_UNAVAILABLE),
            Verdict::Retry
        );
        assert_eq!(
            default_verdict(StatusCode::TOO_MANY_REQUESTS),
            Verdict::Retry
        );
        assert_eq!(default_verdict(StatusCode::UNAUTHORIZED), Verdict::Accept);
        assert_eq!(default_verdict(StatusCode::NOT_FOUND), Verdict::Accept);
        assert_eq!(default_verdict(StatusCode::OK), Verdict::Accept);
    }

    #[test]
    fn urls_in_free_text_are_redacted() {
        let t = "error sending request for url (https://s3.lab/b/u?X-Amz-Signature=abc&x=1): \
                 client error; next http://u:pw@h:8/p#frag and s3://b/k?sig=zz, ftp:// alone";
        let r = redact_urls(t);
        for secret in ["abc", "x=1", "pw", "frag", "sig=zz"] {
            assert!(!r.contains(secret), "{secret} left in {r}");
        }
        assert!(
            r.starts_with("error sending request for url (https://s3.lab/b/u?redacted): client"),
            "{r}"
        );
        assert!(r.contains("http://u:redacted@h:8/p and"), "{r}");
        assert!(r.ends_with("ftp:// alone"), "{r}");
        assert_eq!(redact_urls("no url here: a:b"), "no url here: a:b");
        assert_eq!(
            crate::secret::redact_url_text("http://u:p@[bad/x?q"),
            "http://[bad/x?redacted"
        );
    }

    #[test]
    fn urls_are_redacted() {
        let u = Url::parse("http://user:pw@host/seed/?token=abc#x").unwrap();
        let r = redact_url(&u);
        assert!(!r.contains("pw") && !r.contains("abc"), "{r}");
        assert!(r.starts_with("http://user:redacted@host/seed/"), "{r}");
        assert_eq!(redact_url_str("not a url?secret"), "not a url");
    }

    #[test]
    fn secret_headers_are_sensitive_and_debug_hides_them() {
        let req = Request::get("http://h/x?tok=1")
            .unwrap()
            .secret_header("x-token", &Secret::new("s3cr3t"));
        let map = req.header_map().unwrap();
        assert!(map.get("x-token").unwrap().is_sensitive());
        assert!(!format!("{req:?}").contains("s3cr3t"));
        assert!(!format!("{:?}", map).contains("s3cr3t"));
    }

    fn userdata_proxy() -> ProxySettings {
        ProxySettings {
            http: Some(Secret::new("http://agent:hunter2@proxy.lab:3128/")),
            https: Some(Secret::new("http://agent:hunter2@proxy.lab:3128/")),
            no_proxy: vec![".internal.lab".into(), "10.42.0.0/16".into()],
        }
    }

    /// The list goes to reqwest's own matcher (hyper-util's), so it is checked there.
    #[test]
    fn link_local_metadata_is_never_proxied_whatever_no_proxy_says() {
        use hyper_util::client::proxy::matcher::Matcher;
        let p = userdata_proxy();
        let m = Matcher::builder()
            .http(p.http.as_ref().unwrap().expose().to_string())
            .https(p.https.as_ref().unwrap().expose().to_string())
            .no(no_proxy_list(&p))
            .build();
        let proxied = |u: &str| m.intercept(&u.parse::<http::Uri>().unwrap()).is_some();
        for direct in [
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.170.2/v2/credentials",
            "http://[fd00:ec2::254]/latest/api/token",
            "http://[fe80::1]/",
            "https://rancher.internal.lab/cacerts",
            "https://10.42.3.4/",
        ] {
            assert!(!proxied(direct), "{direct} went through the proxy");
        }
        for through in [
            "https://rancher.lab/v3/connect/agent",
            "http://10.0.2.2:8080/",
        ] {
            assert!(proxied(through), "{through} did not go through the proxy");
        }
        // With no_proxy empty the link-local ranges are still left out.
        let bare = ProxySettings {
            no_proxy: vec![],
            ..p
        };
        assert_eq!(no_proxy_list(&bare), NEVER_PROXIED.join(","));
    }

    #[test]
    fn the_userdata_proxy_is_taken_only_when_set_and_never_by_a_direct_client() {
        let p = userdata_proxy();
        let b = HttpClientBuilder::new(TlsTrust::SystemRoots);
        assert!(matches!(b.clone().proxy(&p).route, Route::Userdata(_)));
        assert!(matches!(
            b.clone().proxy(&ProxySettings::default()).route,
            Route::Environment
        ));
        assert!(matches!(
            b.clone().no_proxy().proxy(&p).route,
            Route::Direct
        ));
        assert!(matches!(
            b.clone().proxy(&p).no_proxy().route,
            Route::Direct
        ));
        // Built for real: the URLs are accepted.
        b.proxy(&p).build().unwrap();
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert!(matches!(
            Request::get("ftp://h/x"),
            Err(HttpError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            Request::get("::"),
            Err(HttpError::InvalidUrl { .. })
        ));
        assert!(matches!(
            TlsTrust::pinned_pem(b"nothing here"),
            Err(HttpError::InvalidCa(_))
        ));
    }
}
