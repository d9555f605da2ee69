//! Writing a connection's frames: what the queue holds is framed (and compressed, when agreed)
//! into one buffer, up to the write buffer size, and leaves in one write; a frame at least that
//! large is written from its own bytes, without a copy. A broadcast comes [`Prepared`]: framed,
//! and compressed, once for every member.
//!
//! The buffer lives only while there is something to write: an idle connection holds none.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, ready};

use axum::body::Bytes;
use flate2::Compress;
use tokio::io::AsyncWrite;

use super::copy;
use super::deflate::{self, Agreed};
use super::frame;
use crate::message::Message;

/// A message sent to many connections (a room's broadcast), framed once, and compressed once
/// for the members that agreed to compression: each member's writer shares the same bytes.
#[derive(Debug)]
pub(crate) struct Prepared {
    message: Message,
    /// The uncompressed frame.
    plain: OnceLock<Bytes>,
    /// The compressed frame at one level (the first member's that asked; members at another
    /// level compress their own), or `None` if the compressor failed.
    compressed: OnceLock<(u32, Option<Bytes>)>,
}

impl Prepared {
    pub(crate) fn new(message: Message) -> Self {
        Self {
            message,
            plain: OnceLock::new(),
            compressed: OnceLock::new(),
        }
    }

    pub(crate) fn message(&self) -> &Message {
        &self.message
    }

    fn plain(&self) -> &Bytes {
        self.plain.get_or_init(|| {
            let (opcode, payload) = parts(&self.message);
            let mut frame = Vec::new();
            frame::put_frame(&mut frame, opcode, false, payload);
            frame.into()
        })
    }

    /// The frame for a connection that agreed to `deflate`: compressed if the connection
    /// compresses messages of this size.
    pub(crate) fn frame_for(&self, deflate: Option<Agreed>) -> Bytes {
        self.compressed_for(deflate)
            .unwrap_or_else(|| self.plain().clone())
    }

    fn compressed_for(&self, deflate: Option<Agreed>) -> Option<Bytes> {
        let agreed = deflate?;
        let len = self.message.len();
        if !agreed.compresses(len) {
            return None;
        }
        self.compressed(agreed.level_for(len))
    }

    /// The compressed frame for a member compressing at `level`.
    fn compressed(&self, level: u32) -> Option<Bytes> {
        let compress = || {
            let (opcode, payload) = parts(&self.message);
            deflate::compress_alone(payload, level).map(|compressed| {
                let mut frame = Vec::new();
                frame::put_frame(&mut frame, opcode, true, &compressed);
                Bytes::from(frame)
            })
        };
        let (have, frame) = self.compressed.get_or_init(|| (level, compress()));
        if *have == level {
            frame.clone()
        } else {
            compress()
        }
    }
}

/// The opcode and payload of a data message.
fn parts(message: &Message) -> (u8, &[u8]) {
    match message {
        Message::Text(text) => (frame::TEXT, text.as_bytes()),
        Message::Binary(bytes) => (frame::BINARY, bytes),
    }
}

/// The frames of one connection on their way to its socket.
#[derive(Debug)]
pub(crate) struct Output {
    /// Frames gathered for the next write: `buf[at..]` is still to go.
    buf: Vec<u8>,
    at: usize,
    /// A large payload (or whole frame) written from its own bytes after `buf`: `tail[at..]`.
    tail: Option<(Bytes, usize)>,
    /// How much is gathered into one write.
    gather: usize,
    deflate: Option<Agreed>,
    /// The compressor of a connection that agreed to server context takeover.
    compressor: Option<Box<Compress>>,
    /// Bytes written since [`take_written`](Self::take_written) last ran.
    written: usize,
}

impl Output {
    pub(crate) fn new(gather: usize, deflate: Option<Agreed>) -> Self {
        Self {
            buf: Vec::new(),
            at: 0,
            tail: None,
            gather: gather.max(frame::MAX_SERVER_HEADER + frame::MAX_CONTROL_PAYLOAD),
            compressor: deflate
                .filter(|agreed| agreed.server_takeover)
                .map(|agreed| Box::new(deflate::compressor(agreed.level))),
            deflate,
            written: 0,
        }
    }

    /// Nothing is waiting to be written.
    pub(crate) fn is_empty(&self) -> bool {
        self.at == self.buf.len() && self.tail.is_none()
    }

    /// Whether another frame may be gathered before writing.
    pub(crate) fn has_room(&self) -> bool {
        self.tail.is_none() && self.buf.len() - self.at < self.gather
    }

    /// A control frame (never compressed).
    pub(crate) fn push_control(&mut self, opcode: u8, payload: &[u8]) {
        frame::put_frame(&mut self.buf, opcode, false, payload);
    }

    /// A message of this connection's own, compressed if agreed and large enough.
    pub(crate) fn push_message(&mut self, message: &Message) {
        let (opcode, payload) = parts(message);
        if let Some(agreed) = self
            .deflate
            .filter(|agreed| agreed.compresses(payload.len()))
        {
            let compressed = match &mut self.compressor {
                Some(compressor) => {
                    let compressed = deflate::compress(compressor, payload);
                    if compressed.is_none() {
                        // Sent plain, so the client's window lacks what the compressor's
                        // holds now: start again.
                        compressor.reset();
                    }
                    compressed
                }
                None => deflate::compress_alone(payload, agreed.level_for(payload.len())),
            };
            if let Some(compressed) = compressed {
                self.push_frame(opcode, true, compressed.into());
                return;
            }
        }
        let payload = match message {
            Message::Text(text) => Bytes::from(text.clone()),
            Message::Binary(bytes) => bytes.clone(),
        };
        self.push_frame(opcode, false, payload);
    }

    /// A broadcast's frame, shared with the other members.
    pub(crate) fn push_prepared(&mut self, prepared: &Prepared) {
        if let Some(frame) = prepared.compressed_for(self.deflate) {
            // The client's window now holds this message, which this connection's own
            // compressor never saw: it starts again, so that nothing it sends next refers to
            // bytes the client has elsewhere.
            if let Some(compressor) = &mut self.compressor {
                compressor.reset();
            }
            self.push_bytes(frame);
            return;
        }
        self.push_bytes(prepared.plain().clone());
    }

    fn push_frame(&mut self, opcode: u8, compressed: bool, payload: Bytes) {
        let (header, used) = frame::server_header(opcode, compressed, payload.len());
        self.buf.extend_from_slice(&header[..used]);
        if payload.len() >= self.gather {
            self.tail = Some((payload, 0));
        } else {
            copy::extend(&mut self.buf, &payload);
        }
    }

    /// Bytes of whole frames, or the end of one another writer started.
    pub(crate) fn push_bytes(&mut self, frame: Bytes) {
        if frame.len() >= self.gather {
            self.tail = Some((frame, 0));
        } else {
            copy::extend(&mut self.buf, &frame);
        }
    }

    /// Writes what is gathered, until all of it is written or the socket is full.
    pub(crate) fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let head = &self.buf[self.at..];
            let tail = self
                .tail
                .as_ref()
                .map_or(&[][..], |(tail, at)| &tail[*at..]);
            let written = match (head.is_empty(), tail.is_empty()) {
                (true, true) => {
                    self.buf.clear();
                    self.at = 0;
                    self.tail = None;
                    return Poll::Ready(Ok(()));
                }
                (false, true) => ready!(Pin::new(&mut *io).poll_write(cx, head))?,
                (true, false) => ready!(Pin::new(&mut *io).poll_write(cx, tail))?,
                (false, false) => {
                    let slices = [IoSlice::new(head), IoSlice::new(tail)];
                    ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices))?
                }
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += written;
            let from_head = written.min(head.len());
            self.at += from_head;
            if let Some((_, at)) = &mut self.tail {
                *at += written - from_head;
            }
        }
    }

    /// The bytes written since the last call (for the connection's metrics).
    pub(crate) fn take_written(&mut self) -> usize {
        std::mem::take(&mut self.written)
    }

    /// Frees the buffer once everything is written (the connection may go idle now).
    pub(crate) fn release(&mut self) {
        if self.is_empty() {
            self.buf = Vec::new();
            self.at = 0;
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use crate::connection::deflate::Offer;
    use crate::settings::Deflate;
    use axum::http::{HeaderMap, HeaderValue, header};

    fn agreed(offer: &str) -> Agreed {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_str(offer).expect("a header"),
        );
        Offer::from_headers(&headers)
            .expect("an offer")
            .accept(&Deflate::new())
            .0
    }

    #[test]
    fn a_broadcast_is_framed_and_compressed_once_for_every_member() {
        let text = r#"{"type":"update","value":12345}"#.repeat(20);
        let prepared = Prepared::new(Message::Text(text.clone().into()));
        let chrome = agreed("permessage-deflate; client_max_window_bits");
        let firefox = agreed("permessage-deflate");
        // The same bytes, not equal copies: one allocation shared by every member.
        let (one, two) = (
            prepared.frame_for(Some(chrome)),
            prepared.frame_for(Some(firefox)),
        );
        assert_eq!(one.as_ptr(), two.as_ptr());
        assert_eq!(one[0], 0xC1, "final, compressed, text");
        let (plain, again) = (prepared.frame_for(None), prepared.frame_for(None));
        assert_eq!(plain.as_ptr(), again.as_ptr());
        assert_eq!(&plain[4..], text.as_bytes());
        // A member's writer takes the shared frame as it is.
        let mut output = Output::new(8 * 1024, Some(chrome));
        output.push_prepared(&prepared);
        assert_eq!(output.buf, one);
        // Below the threshold, even a compressing member gets the plain frame.
        let short = Prepared::new(Message::Text("short".into()));
        assert_eq!(short.frame_for(Some(chrome)), short.frame_for(None));
    }
}
