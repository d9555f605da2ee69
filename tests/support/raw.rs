//! A WebSocket client at the frame level, for what tungstenite's client cannot do: offer
//! permessage-deflate, send compressed frames and look at the server's bits. Every read and
//! write is bounded by [`WAIT`](super::WAIT).

use std::net::SocketAddr;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::within;

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub compressed: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Any byte stream a WebSocket runs over (TCP, an HTTP/2 stream).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection after its handshake.
pub struct RawClient {
    stream: Box<dyn Io>,
    /// Bytes read past the last frame.
    buffer: Vec<u8>,
    /// The `Sec-WebSocket-Extensions` the server answered, if any.
    pub extensions: Option<String>,
    /// Bytes read from the socket since the handshake.
    pub bytes_read: usize,
}

impl RawClient {
    /// Opens `path` on `addr`, offering `extensions` (a `Sec-WebSocket-Extensions` value), and
    /// expects `101`.
    pub async fn connect(addr: SocketAddr, path: &str, extensions: Option<&str>) -> Self {
        let mut stream = within("connecting", TcpStream::connect(addr))
            .await
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let offer = extensions
            .map(|value| format!("Sec-WebSocket-Extensions: {value}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
        );
        within(
            "sending the handshake",
            stream.write_all(request.as_bytes()),
        )
        .await
        .expect("write");
        let mut buffer = Vec::new();
        let end = loop {
            if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0; 4096];
            let n = within("the handshake response", stream.read(&mut chunk))
                .await
                .expect("read");
            assert!(n > 0, "the server closed during the handshake");
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "not a 101:\n{head}");
        let extensions = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim().to_owned())
        });
        buffer.drain(..end);
        Self {
            stream: Box::new(stream),
            bytes_read: buffer.len(),
            buffer,
            extensions,
        }
    }

    /// A client over a stream whose handshake is done (an HTTP/2 stream, say).
    pub fn over(stream: impl Io + 'static, extensions: Option<String>) -> Self {
        Self {
            stream: Box::new(stream),
            buffer: Vec::new(),
            extensions,
            bytes_read: 0,
        }
    }

    /// Sends one masked frame as given (bit 1 set if `compressed`).
    pub async fn send_frame(&mut self, fin: bool, compressed: bool, opcode: u8, payload: &[u8]) {
        let mut frame = vec![u8::from(fin) << 7 | u8::from(compressed) << 6 | opcode];
        match payload.len() {
            len @ 0..126 => frame.push(0x80 | len as u8),
            len @ 126..65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        let mask = [0x37, 0xFA, 0x21, 0x3D];
        frame.extend_from_slice(&mask);
        frame.extend(
            payload
                .iter()
                .enumerate()
                .map(|(i, byte)| byte ^ mask[i % 4]),
        );
        within("sending a frame", self.stream.write_all(&frame))
            .await
            .expect("write");
    }

    /// Sends bytes as they are (a frame cut short, say).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        within("sending bytes", self.stream.write_all(bytes))
            .await
            .expect("write");
    }

    /// Sends `payload` as one message, compressed (whole) with [`compress`].
    pub async fn send_compressed(&mut self, opcode: u8, payload: &[u8]) {
        self.send_frame(true, true, opcode, &compress(payload))
            .await;
    }

    /// The next frame, or `None` once the server closed the TCP connection.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse(&self.buffer) {
                self.buffer.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0; 64 * 1024];
            let n = within("a frame from the server", self.stream.read(&mut chunk))
                .await
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.bytes_read += n;
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next data message, inflated if it came compressed; skips pings and pongs.
    pub async fn next_message(&mut self) -> (u8, Frame, Vec<u8>) {
        loop {
            let frame = self.next_frame().await.expect("a message, not the end");
            if matches!(frame.opcode, PING | PONG) {
                continue;
            }
            assert!(frame.fin, "the server fragmented a message: {frame:?}");
            let payload = if frame.compressed {
                inflate(&frame.payload)
            } else {
                frame.payload.clone()
            };
            return (frame.opcode, frame, payload);
        }
    }

    /// Expects a close frame with `code`, then the end of the connection.
    pub async fn expect_close(&mut self, code: u16) {
        loop {
            let frame = self.next_frame().await.expect("a close frame");
            if frame.opcode != CLOSE {
                continue;
            }
            assert!(frame.payload.len() >= 2, "a close without a code");
            assert_eq!(
                u16::from_be_bytes([frame.payload[0], frame.payload[1]]),
                code,
                "close reason: {}",
                String::from_utf8_lossy(&frame.payload[2..])
            );
            return;
        }
    }
}

fn parse(bytes: &[u8]) -> Option<(Frame, usize)> {
    let [first, second, ..] = *bytes else {
        return None;
    };
    assert_eq!(second & 0x80, 0, "server frames are never masked");
    let (len, at) = match second & 0x7F {
        126 => (
            u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        len => (len as usize, 2),
    };
    let payload = bytes.get(at..at + len)?.to_vec();
    Some((
        Frame {
            fin: first & 0x80 != 0,
            compressed: first & 0x40 != 0,
            opcode: first & 0x0F,
            payload,
        },
        at + len,
    ))
}

/// `payload` as a permessage-deflate message body: raw deflate, sync-flushed, without the
/// `00 00 ff ff` tail.
pub fn compress(payload: &[u8]) -> Vec<u8> {
    compress_in_pieces(std::iter::once(payload))
}

/// The pieces, one message, compressed without holding them all at once (for a message too
/// large to build whole).
pub fn compress_in_pieces<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut compressor = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(64 * 1024);
    for piece in pieces {
        let start = compressor.total_in();
        while ((compressor.total_in() - start) as usize) < piece.len() {
            let used = (compressor.total_in() - start) as usize;
            out.reserve(64 * 1024);
            compressor
                .compress_vec(&piece[used..], &mut out, FlushCompress::None)
                .expect("compress");
        }
    }
    loop {
        out.reserve(64 * 1024);
        let before = compressor.total_out();
        compressor
            .compress_vec(&[], &mut out, FlushCompress::Sync)
            .expect("flush");
        if compressor.total_out() == before || out.ends_with(&[0, 0, 0xFF, 0xFF]) {
            break;
        }
    }
    assert!(
        out.ends_with(&[0, 0, 0xFF, 0xFF]),
        "a sync flush ends with the tail"
    );
    out.truncate(out.len() - 4);
    out
}

/// A permessage-deflate message body inflated.
pub fn inflate(body: &[u8]) -> Vec<u8> {
    let mut input = body.to_vec();
    input.extend_from_slice(&[0, 0, 0xFF, 0xFF]);
    let mut inflater = Decompress::new(false);
    let mut out = Vec::with_capacity(body.len() * 4 + 64);
    loop {
        let used = inflater.total_in() as usize;
        out.reserve(64 * 1024);
        let before = inflater.total_out();
        inflater
            .decompress_vec(&input[used..], &mut out, FlushDecompress::Sync)
            .expect("the server's compressed message inflates");
        if inflater.total_in() as usize == input.len() && inflater.total_out() == before {
            break;
        }
    }
    out
}
