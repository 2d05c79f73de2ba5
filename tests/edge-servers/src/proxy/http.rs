//! The HTTP/1.1 message handling the proxy needs (RFC 9112): reading a request or response
//! head, message body framing, and the hop-by-hop headers a proxy must not forward.

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
};

/// Heads longer than this are refused (apt's and curl's are well below 1 KiB).
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

/// A parsed request or response head.
#[derive(Debug)]
pub struct Head {
    /// Request: method; response: status code as text.
    pub first: String,
    /// Request: request-target; response: reason phrase.
    pub second: String,
    /// HTTP/1.`minor`.
    pub minor: u8,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    /// The values of header `name` (case-insensitive), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    pub fn value<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        self.values(name).next()
    }

    /// The comma-separated tokens of all `name` headers, lowercased.
    pub fn tokens(&self, name: &str) -> Vec<String> {
        self.values(name)
            .flat_map(|v| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .collect::<Vec<_>>()
            })
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// `Content-Length`, if present; several differing values or a non-number is an error
    /// (RFC 9112 section 6.3, item 5: an invalid length is unrecoverable).
    pub fn content_length(&self) -> Result<Option<u64>, String> {
        let mut length = None;
        for value in self.values("content-length") {
            for part in String::from_utf8_lossy(value).split(',') {
                let n: u64 = part
                    .trim()
                    .parse()
                    .map_err(|_| "invalid Content-Length".to_string())?;
                if length.is_some_and(|l| l != n) {
                    return Err("conflicting Content-Length values".into());
                }
                length = Some(n);
            }
        }
        Ok(length)
    }

    /// Whether the message is chunked (the last transfer coding is `chunked`).
    pub fn chunked(&self) -> bool {
        self.tokens("transfer-encoding")
            .last()
            .is_some_and(|t| t == "chunked")
    }

    /// Headers to pass on: all but the hop-by-hop ones (RFC 9110 section 7.6.1: `Connection`,
    /// the headers it names, and `Proxy-Connection`, `Keep-Alive`, `TE`, `Transfer-Encoding`
    /// (re-added by the caller where it stays), `Upgrade`, `Proxy-Authorization`,
    /// `Proxy-Authenticate`).
    pub fn end_to_end(&self) -> impl Iterator<Item = &(String, Vec<u8>)> {
        let named = self.tokens("connection");
        self.headers.iter().filter(move |(n, _)| {
            let n = n.to_ascii_lowercase();
            !matches!(
                n.as_str(),
                "connection"
                    | "proxy-connection"
                    | "keep-alive"
                    | "te"
                    | "transfer-encoding"
                    | "upgrade"
                    | "proxy-authorization"
                    | "proxy-authenticate"
            ) && !named.contains(&n)
        })
    }
}

/// Reads one head (up to and including the empty line). `Ok(None)`: the peer closed before
/// sending a byte of it, the normal end of a persistent connection.
pub async fn read_head<R: AsyncBufRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let start = head.len();
        let n = (&mut *reader)
            .take((MAX_HEAD - head.len()) as u64 + 1)
            .read_until(b'\n', &mut head)
            .await?;
        if n == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(invalid("connection closed inside a message head"))
            };
        }
        if head.len() > MAX_HEAD {
            return Err(invalid("message head too long"));
        }
        let line = &head[start..];
        if line == b"\r\n" || line == b"\n" {
            // RFC 9112 section 2.2: empty lines before a request-line are ignored.
            if start == 0 {
                head.clear();
                continue;
            }
            return Ok(Some(head));
        }
    }
}

fn invalid(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.to_string())
}

fn collect_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect()
}

pub fn parse_request(raw: &[u8]) -> Result<Head, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(raw) {
        Ok(httparse::Status::Complete(_)) => Ok(Head {
            first: request.method.unwrap_or_default().to_string(),
            second: request.path.unwrap_or_default().to_string(),
            minor: request.version.unwrap_or(1),
            headers: collect_headers(request.headers),
        }),
        Ok(httparse::Status::Partial) => Err("incomplete request head".into()),
        Err(e) => Err(format!("malformed request head: {e}")),
    }
}

pub fn parse_response(raw: &[u8]) -> Result<Head, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(raw) {
        Ok(httparse::Status::Complete(_)) => Ok(Head {
            first: response.code.unwrap_or_default().to_string(),
            second: response.reason.unwrap_or_default().to_string(),
            minor: response.version.unwrap_or(1),
            headers: collect_headers(response.headers),
        }),
        Ok(httparse::Status::Partial) => Err("incomplete response head".into()),
        Err(e) => Err(format!("malformed response head: {e}")),
    }
}

/// Copies exactly `n` bytes, failing if the source ends first.
pub async fn copy_exact<R, W>(from: &mut R, to: &mut W, n: u64) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let copied = tokio::io::copy(&mut from.take(n), to).await?;
    if copied != n {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("body ended after {copied} of {n} bytes"),
        ));
    }
    Ok(copied)
}

/// Passes a chunked body through unchanged (RFC 9112 section 7.1), chunk by chunk up to and
/// including the trailer section, so the connection can carry the next message after it.
pub async fn copy_chunked<R, W>(from: &mut R, to: &mut W) -> std::io::Result<u64>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut total = 0u64;
    loop {
        let line = read_line(from).await?;
        to.write_all(&line).await?;
        total += line.len() as u64;
        let text = String::from_utf8_lossy(&line);
        let size_text = text.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            loop {
                let trailer = read_line(from).await?;
                to.write_all(&trailer).await?;
                total += trailer.len() as u64;
                if trailer == b"\r\n" || trailer == b"\n" {
                    return Ok(total);
                }
            }
        }
        // The chunk's data and its CRLF.
        total += copy_exact(from, to, size + 2).await?;
    }
}

async fn read_line<R: AsyncBufRead + Unpin>(from: &mut R) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let n = (&mut *from).take(4096).read_until(b'\n', &mut line).await?;
    if n == 0 || !line.ends_with(b"\n") {
        return Err(invalid("chunked body ended early"));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn heads_skip_leading_empty_lines_and_stop_at_the_blank_line() {
        let mut input: &[u8] = b"\r\nGET http://a/ HTTP/1.1\r\nHost: a\r\n\r\nGET";
        let head = read_head(&mut input).await.expect("reads").expect("a head");
        assert_eq!(head, b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(input, b"GET");
        let mut empty: &[u8] = b"";
        assert!(read_head(&mut empty).await.expect("reads").is_none());
        let mut cut: &[u8] = b"GET / HTTP/1.1\r\nHost";
        assert!(read_head(&mut cut).await.is_err());
    }

    #[tokio::test]
    async fn chunked_bodies_pass_through_to_their_end_only() {
        let body: &[u8] = b"4;x=1\r\nWiki\r\n0\r\nTrailer: t\r\n\r\n";
        let mut input = [body, b"NEXT".as_slice()].concat();
        let mut reader = input.as_slice();
        let mut out = Vec::new();
        let n = copy_chunked(&mut reader, &mut out).await.expect("copies");
        assert_eq!(out, body);
        assert_eq!(n as usize, body.len());
        assert_eq!(reader, b"NEXT");
        input.truncate(10);
        assert!(
            copy_chunked(&mut input.as_slice(), &mut Vec::new())
                .await
                .is_err()
        );
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let raw = b"GET http://a/ HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nProxy-Authorization: Basic eA==\r\nAccept: */*\r\n\r\n";
        let head = parse_request(raw).expect("parses");
        let kept: Vec<&str> = head.end_to_end().map(|(n, _)| n.as_str()).collect();
        assert_eq!(kept, ["Host", "Accept"]);
        let conflicting =
            parse_request(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n")
                .expect("parses");
        assert!(conflicting.content_length().is_err());
    }
}
