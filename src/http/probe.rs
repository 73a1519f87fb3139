//! The `healthcheck` command's probe: a tiny blocking HTTP/1.0 client for
//! images without curl.

use std::time::Duration;

/// Why a health probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The URL is not `http://HOST:PORT/PATH`.
    #[error("{0:?} is not an http://host:port/path URL")]
    BadUrl(String),
    /// Connecting, sending or reading failed.
    #[error("cannot reach {url}: {source}")]
    Io {
        /// The URL.
        url: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The answer was not an HTTP status line.
    #[error("{url} answered something that is not HTTP")]
    NotHttp {
        /// The URL.
        url: String,
    },
}

impl ProbeError {
    /// Stable label.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadUrl(_) => "bad_url",
            Self::Io { .. } => "io",
            Self::NotHttp { .. } => "not_http",
        }
    }
}

/// `GET url` over plain HTTP/1.0 and the status code: the `healthcheck`
/// command's probe, for images without curl. Blocking, with `timeout` on
/// connect, write and read.
///
/// # Errors
/// [`ProbeError`] when the URL is unusable or the server cannot be reached.
pub fn probe(url: &str, timeout: Duration) -> Result<u16, ProbeError> {
    use std::io::{Read as _, Write as _};
    use std::net::ToSocketAddrs as _;
    let rest = url.strip_prefix("http://").ok_or_else(|| ProbeError::BadUrl(url.to_owned()))?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let io = |source| ProbeError::Io { url: url.to_owned(), source };
    let address = authority.to_socket_addrs().map_err(io)?.next().ok_or_else(|| ProbeError::BadUrl(url.to_owned()))?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").map_err(io)?;
    let mut head = [0u8; 64];
    let read = stream.read(&mut head).map_err(io)?;
    let line = String::from_utf8_lossy(&head[..read]);
    line.strip_prefix("HTTP/1.")
        .and_then(|l| l.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| ProbeError::NotHttp { url: url.to_owned() })
}
