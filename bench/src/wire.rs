//! Just enough of the WebSocket protocol (RFC 6455) on a plain TCP stream for what
//! tokio-tungstenite cannot do here: the light fan-out members, the deflate client and the
//! floor server. An HTTP/1.1 upgrade (either side), frame headers, and a frame reader that
//! counts the bytes it reads.
//!
//! Nothing here is a general implementation: it accepts what the harness's own peers send and
//! turns anything else into an error that stops the run.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

/// A continuation frame.
pub(crate) const OP_CONTINUATION: u8 = 0x0;
/// A text frame.
pub(crate) const OP_TEXT: u8 = 0x1;
/// A binary frame.
pub(crate) const OP_BINARY: u8 = 0x2;
/// A close frame.
pub(crate) const OP_CLOSE: u8 = 0x8;
/// A ping.
pub(crate) const OP_PING: u8 = 0x9;
/// A pong.
pub(crate) const OP_PONG: u8 = 0xa;

/// The largest HTTP head either side reads.
const MAX_HEAD: usize = 8 * 1024;
/// The largest frame a [`Reader`] takes.
const MAX_FRAME: usize = 1 << 20;
/// The longest a handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A frame's header, as read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    pub(crate) fin: bool,
    /// The per-message-compressed bit (RFC 7692), on the first frame of a message.
    pub(crate) rsv1: bool,
    pub(crate) opcode: u8,
    header_len: usize,
    payload_len: usize,
    mask: Option<[u8; 4]>,
}

/// Parses the frame header at the start of `bytes`; `None` if it is not all there yet.
fn parse_header(bytes: &[u8]) -> io::Result<Option<Header>> {
    let [first, second, ..] = *bytes else {
        return Ok(None);
    };
    if first & 0x30 != 0 {
        return Err(io::Error::other("a frame with RSV2 or RSV3 set"));
    }
    let masked = second & 0x80 != 0;
    let (length_len, payload_len) = match second & 0x7f {
        126 => match bytes.get(2..4) {
            Some(length) => (2, usize::from(u16::from_be_bytes([length[0], length[1]]))),
            None => return Ok(None),
        },
        127 => match bytes
            .get(2..10)
            .and_then(|length| <[u8; 8]>::try_from(length).ok())
        {
            Some(length) => (
                8,
                usize::try_from(u64::from_be_bytes(length)).unwrap_or(usize::MAX),
            ),
            None => return Ok(None),
        },
        length => (0, usize::from(length)),
    };
    if payload_len > MAX_FRAME {
        return Err(io::Error::other(format!(
            "a frame of {payload_len} bytes (at most {MAX_FRAME})"
        )));
    }
    let mask_at = 2 + length_len;
    let mask = if masked {
        match bytes.get(mask_at..mask_at + 4) {
            Some(key) => Some([key[0], key[1], key[2], key[3]]),
            None => return Ok(None),
        }
    } else {
        None
    };
    Ok(Some(Header {
        fin: first & 0x80 != 0,
        rsv1: first & 0x40 != 0,
        opcode: first & 0x0f,
        header_len: mask_at + if masked { 4 } else { 0 },
        payload_len,
        mask,
    }))
}

/// Appends one frame to `out`: its header, then `payload`, masked with `mask` when given (a
/// client's frames are masked, a server's are not).
pub(crate) fn encode(
    out: &mut Vec<u8>,
    opcode: u8,
    rsv1: bool,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    out.push(0x80 | if rsv1 { 0x40 } else { 0 } | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        length @ 0..=125 => out.push(mask_bit | length as u8),
        length @ 126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(length as u16).to_be_bytes());
        }
        length => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(length as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(
                payload
                    .iter()
                    .zip(key.iter().cycle())
                    .map(|(byte, key)| byte ^ key),
            );
        }
        None => out.extend_from_slice(payload),
    }
}

/// Reads frames from `io`, and counts the bytes it read.
#[derive(Debug)]
pub(crate) struct Reader<R> {
    io: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes read from `io` so far (the leftover handed to [`new`](Self::new) included).
    pub(crate) bytes_read: u64,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// A reader whose first bytes are `leftover` (read with the HTTP head), then `io`'s, read
    /// `capacity` bytes at a time at least.
    pub(crate) fn new(io: R, mut leftover: Vec<u8>, capacity: usize) -> Self {
        let end = leftover.len();
        leftover.resize(capacity.max(end), 0);
        Self {
            io,
            buf: leftover,
            start: 0,
            end,
            bytes_read: end as u64,
        }
    }

    /// The stream under the reader, to write to.
    pub(crate) fn get_mut(&mut self) -> &mut R {
        &mut self.io
    }

    /// The next frame: its header and its payload (unmasked); `None` at the end of the stream
    /// between two frames.
    pub(crate) async fn frame(&mut self) -> io::Result<Option<(Header, &[u8])>> {
        loop {
            let available = &self.buf[self.start..self.end];
            let header = parse_header(available)?;
            if let Some(header) = header {
                let total = header.header_len + header.payload_len;
                if available.len() >= total {
                    let payload = self.start + header.header_len..self.start + total;
                    self.start += total;
                    if let Some(key) = header.mask {
                        for (byte, key) in
                            self.buf[payload.clone()].iter_mut().zip(key.iter().cycle())
                        {
                            *byte ^= key;
                        }
                    }
                    return Ok(Some((header, &self.buf[payload])));
                }
            }
            // Room for the whole frame (or for a header), at the start of the buffer.
            let needed = header.map_or(14, |header| header.header_len + header.payload_len);
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            } else if self.buf.len() - self.end < self.buf.len() / 4
                || self.buf.len() - self.start < needed
            {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.start < needed {
                self.buf.resize(self.start + needed, 0);
            }
            let read = self.io.read(&mut self.buf[self.end..]).await?;
            if read == 0 {
                return if self.start == self.end {
                    Ok(None)
                } else {
                    Err(io::Error::other("the stream ended inside a frame"))
                };
            }
            self.end += read;
            self.bytes_read += read as u64;
        }
    }
}

/// Reads an HTTP head (up to the blank line) from `io`; returns it and whatever followed it.
pub(crate) async fn read_head(io: &mut (impl AsyncRead + Unpin)) -> io::Result<(String, Vec<u8>)> {
    let mut bytes = Vec::with_capacity(1024);
    let mut chunk = [0; 1024];
    loop {
        if let Some(end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") {
            let rest = bytes.split_off(end + 4);
            let head = String::from_utf8(bytes)
                .map_err(|_| io::Error::other("an HTTP head that is not UTF-8"))?;
            return Ok((head, rest));
        }
        if bytes.len() > MAX_HEAD {
            return Err(io::Error::other("an HTTP head over 8 KiB"));
        }
        let read = io.read(&mut chunk).await?;
        if read == 0 {
            return Err(io::Error::other("the stream ended inside an HTTP head"));
        }
        bytes.extend_from_slice(&chunk[..read]);
    }
}

/// The value of header `name` (any case) in an HTTP head.
pub(crate) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// `HOST:PORT` and the path of a `ws://HOST:PORT/PATH` URL.
pub(crate) fn split_url(url: &str) -> io::Result<(&str, &str)> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| io::Error::other(format!("`{url}` is not a ws:// URL")))?;
    Ok(match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    })
}

/// A client connection past its handshake: the stream, the server's response head, and what
/// the server sent after it.
#[derive(Debug)]
pub(crate) struct Connected {
    pub(crate) stream: TcpStream,
    pub(crate) response: String,
    pub(crate) leftover: Vec<u8>,
}

/// Connects to `url` (with `TCP_NODELAY`) and upgrades, sending `extensions` as the
/// `Sec-WebSocket-Extensions` offer when given; checks the `101` and its accept key.
pub(crate) async fn connect(url: &str, extensions: Option<&str>) -> io::Result<Connected> {
    let (authority, path) = split_url(url)?;
    let upgrading = async {
        let mut stream = TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        let key = generate_key();
        let offer = extensions
            .map(|offer| format!("Sec-WebSocket-Extensions: {offer}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             {offer}\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let (response, leftover) = read_head(&mut stream).await?;
        let status = response.lines().next().unwrap_or_default();
        if !status.starts_with("HTTP/1.1 101") {
            return Err(io::Error::other(format!("{url}: answered `{status}`")));
        }
        if header(&response, "sec-websocket-accept") != Some(&derive_accept_key(key.as_bytes())) {
            return Err(io::Error::other(format!(
                "{url}: a wrong Sec-WebSocket-Accept"
            )));
        }
        Ok(Connected {
            stream,
            response,
            leftover,
        })
    };
    timeout(HANDSHAKE_TIMEOUT, upgrading)
        .await
        .map_err(|_| io::Error::other(format!("{url}: no handshake in {HANDSHAKE_TIMEOUT:?}")))?
}

/// The server's side of the upgrade: reads the request, answers `101` (or `404` for a path not
/// in `paths`, then an error); returns the path, the stream and what the client sent after its
/// head.
pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    paths: &[&str],
) -> io::Result<(String, S, Vec<u8>)> {
    let (request, leftover) = timeout(HANDSHAKE_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| io::Error::other("no request"))??;
    let path = request
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("GET "))
        .and_then(|line| line.split(' ').next())
        .unwrap_or_default()
        .to_owned();
    let key = header(&request, "sec-websocket-key");
    let (Some(key), true) = (key, paths.contains(&path.as_str())) else {
        stream
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Err(io::Error::other(format!(
            "not a WebSocket request for a known path: {path}"
        )));
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    stream.write_all(response.as_bytes()).await?;
    Ok((path, stream, leftover))
}

/// Mask keys for a client's frames: a xorshift generator (the keys need not be secret on
/// loopback, only different).
#[derive(Debug)]
pub(crate) struct Masks(u64);

impl Masks {
    /// A generator seeded from the clock and `salt`.
    pub(crate) fn new(salt: u64) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        Self((u64::from(nanos) ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }

    pub(crate) fn next(&mut self) -> [u8; 4] {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let [a, b, c, d, ..] = self.0.to_le_bytes();
        [a, b, c, d]
    }
}
