//! Reading a client's frames: a state machine fed with whatever the socket gave (from the
//! thread's read buffer, see [`ReadAhead`](super::read_ahead::ReadAhead)), which unmasks each
//! payload in place and appends it to the message as it arrives. Text is checked for UTF-8
//! once, piece by piece ([`Utf8Text`]); compressed messages are inflated piece by piece, within
//! the size limit ([`Inflater`]). Between frames the reader holds only a partial header.

use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;

use super::copy;
use super::deflate::Inflater;
use super::frame::{self, Header, MAX_CLIENT_HEADER, MAX_CONTROL_PAYLOAD, Violation};
use super::utf8::Utf8Text;
use crate::message::Message;

/// What a complete frame or message brought.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    Message(Message),
    Ping(Bytes),
    Pong,
    /// The client's close: its code and reason, if it sent one.
    Close(Option<(u16, String)>),
}

/// One connection's reader; see the module docs.
#[derive(Debug)]
pub(crate) struct Reader {
    max_message: usize,
    max_frame: usize,
    /// Whether permessage-deflate was agreed (bit 1 marks compressed messages).
    inflater: Option<Inflater>,
    /// A header split between two reads.
    header: [u8; MAX_CLIENT_HEADER],
    header_len: u8,
    /// The frame whose payload is arriving.
    frame: Option<Frame>,
    /// The data message being assembled, fragments and all.
    message: Option<Assembly>,
    /// The payload of the control frame arriving (at most 125 bytes).
    control: Vec<u8>,
}

#[derive(Debug)]
struct Frame {
    header: Header,
    /// Payload bytes still to come.
    left: u64,
    /// Payload bytes already read (where the mask stands).
    read: usize,
}

#[derive(Debug)]
struct Assembly {
    body: Body,
    compressed: bool,
}

#[derive(Debug)]
enum Body {
    Text(Utf8Text),
    Binary(Vec<u8>),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Self::Text(text) => text.len(),
            Self::Binary(bytes) => bytes.len(),
        }
    }

    fn reserve(&mut self, bytes: usize) {
        match self {
            Self::Text(text) => text.reserve(bytes),
            Self::Binary(binary) => binary.reserve(bytes),
        }
    }

    /// Appends `bytes` (text is checked), within `limit` bytes in all.
    fn push(&mut self, bytes: &[u8], limit: usize) -> Result<(), Violation> {
        if self.len() + bytes.len() > limit {
            return Err(Violation::too_big("the message is over the size limit"));
        }
        match self {
            Self::Text(text) => text
                .push(bytes)
                .map_err(|_| Violation::invalid_payload("text that is not UTF-8")),
            Self::Binary(binary) => {
                copy::extend(binary, bytes);
                Ok(())
            }
        }
    }

    fn finish(self) -> Result<Message, Violation> {
        match self {
            Self::Text(text) => text
                .finish()
                .map(|text| Message::Text(Utf8Bytes::from(text)))
                .map_err(|_| Violation::invalid_payload("text that is not UTF-8")),
            Self::Binary(binary) => Ok(Message::Binary(binary.into())),
        }
    }
}

impl Reader {
    /// A reader for a connection with these limits; `deflate` is `Some(client_takeover)` when
    /// permessage-deflate was agreed.
    pub(crate) fn new(max_message: usize, max_frame: usize, deflate: Option<bool>) -> Self {
        Self {
            max_message,
            max_frame,
            inflater: deflate.map(Inflater::new),
            header: [0; MAX_CLIENT_HEADER],
            header_len: 0,
            frame: None,
            message: None,
            control: Vec::new(),
        }
    }

    /// Reads from `bytes` (unmasking them in place) until one frame or message is complete.
    /// Returns how many bytes were used and what completed, if anything: all of `bytes` are
    /// used unless something completed. After a violation the reader must not be used again.
    pub(crate) fn read(
        &mut self,
        bytes: &mut [u8],
    ) -> (usize, Option<Result<Incoming, Violation>>) {
        let mut used = 0;
        while used < bytes.len() || self.frame.as_ref().is_some_and(|frame| frame.left == 0) {
            if self.frame.is_none() {
                match self.read_header(&bytes[used..]) {
                    Ok(Some(taken)) => used += taken,
                    Ok(None) => return (bytes.len(), None),
                    Err(violation) => return (used, Some(Err(violation))),
                }
            }
            let Some(frame) = &mut self.frame else {
                continue;
            };
            let take = usize::try_from(frame.left)
                .unwrap_or(usize::MAX)
                .min(bytes.len() - used);
            let payload = &mut bytes[used..used + take];
            frame::unmask(payload, frame.header.mask, frame.read);
            frame.read += take;
            frame.left -= take as u64;
            let done = frame.left == 0;
            let header = frame.header;
            used += take;
            if let Err(violation) = self.payload(&header, payload) {
                return (used, Some(Err(violation)));
            }
            if done {
                self.frame = None;
                if let Some(incoming) = self.end_of_frame(&header).transpose() {
                    return (used, Some(incoming));
                }
            }
        }
        (used, None)
    }

    /// Reads a header from what was kept of one and `bytes`: how many of `bytes` it took, or
    /// `None` if they were all kept and more are needed.
    fn read_header(&mut self, bytes: &[u8]) -> Result<Option<usize>, Violation> {
        let kept = usize::from(self.header_len);
        let parsed = if kept == 0 {
            frame::parse_header(bytes)?
        } else {
            let add = (MAX_CLIENT_HEADER - kept).min(bytes.len());
            self.header[kept..kept + add].copy_from_slice(&bytes[..add]);
            frame::parse_header(&self.header[..kept + add])?
        };
        let Some((header, len)) = parsed else {
            let add = (MAX_CLIENT_HEADER - kept).min(bytes.len());
            self.header[kept..kept + add].copy_from_slice(&bytes[..add]);
            self.header_len = (kept + add) as u8;
            return Ok(None);
        };
        self.header_len = 0;
        self.start_frame(header)?;
        Ok(Some(len - kept))
    }

    /// The checks that depend on the connection, then room for the payload.
    fn start_frame(&mut self, header: Header) -> Result<(), Violation> {
        if header.len > self.max_frame as u64 {
            return Err(Violation::too_big("the frame is over the size limit"));
        }
        if header.is_control() {
            if header.rsv1 {
                return Err(Violation::protocol("control frames are never compressed"));
            }
        } else if header.opcode == frame::CONTINUATION {
            if header.rsv1 {
                return Err(Violation::protocol(
                    "only a message's first frame carries the compressed bit",
                ));
            }
            let Some(message) = &mut self.message else {
                return Err(Violation::protocol(
                    "a continuation frame with no message to continue",
                ));
            };
            if !message.compressed {
                if message.body.len() as u64 + header.len > self.max_message as u64 {
                    return Err(Violation::too_big("the message is over the size limit"));
                }
                message.body.reserve(header.len as usize);
            }
        } else {
            if self.message.is_some() {
                return Err(Violation::protocol(
                    "a new message began before the last one's final frame",
                ));
            }
            if header.rsv1 && self.inflater.is_none() {
                return Err(Violation::protocol(
                    "the compressed bit is set, but compression was not negotiated",
                ));
            }
            if !header.rsv1 && header.len > self.max_message as u64 {
                return Err(Violation::too_big("the message is over the size limit"));
            }
            let mut body = if header.opcode == frame::TEXT {
                Body::Text(Utf8Text::default())
            } else {
                Body::Binary(Vec::new())
            };
            if !header.rsv1 {
                body.reserve(header.len as usize);
            }
            self.message = Some(Assembly {
                body,
                compressed: header.rsv1,
            });
        }
        self.frame = Some(Frame {
            header,
            left: header.len,
            read: 0,
        });
        Ok(())
    }

    /// A piece of the current frame's payload, unmasked.
    fn payload(&mut self, header: &Header, payload: &[u8]) -> Result<(), Violation> {
        if header.is_control() {
            if self.control.capacity() == 0 {
                self.control.reserve_exact(MAX_CONTROL_PAYLOAD);
            }
            self.control.extend_from_slice(payload);
            return Ok(());
        }
        let limit = self.max_message;
        let Some(message) = &mut self.message else {
            return Ok(());
        };
        if !message.compressed {
            return message.body.push(payload, limit);
        }
        let Some(inflater) = &mut self.inflater else {
            return Ok(());
        };
        inflater.inflate(payload, &mut |chunk| message.body.push(chunk, limit))
    }

    /// The current frame is complete: a control frame, or maybe a whole message.
    fn end_of_frame(&mut self, header: &Header) -> Result<Option<Incoming>, Violation> {
        if header.is_control() {
            let payload = std::mem::take(&mut self.control);
            return match header.opcode {
                frame::PING => Ok(Some(Incoming::Ping(payload.into()))),
                frame::PONG => Ok(Some(Incoming::Pong)),
                _ => frame::parse_close(&payload).map(|close| Some(Incoming::Close(close))),
            };
        }
        if !header.fin {
            return Ok(None);
        }
        let Some(mut message) = self.message.take() else {
            return Ok(None);
        };
        if message.compressed {
            if let Some(inflater) = &mut self.inflater {
                let limit = self.max_message;
                inflater.finish(&mut |chunk| message.body.push(chunk, limit))?;
            }
        }
        message
            .body
            .finish()
            .map(|message| Some(Incoming::Message(message)))
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::close::CloseCode;
    use crate::connection::deflate::compress_alone;

    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        frame::client_frame(first, payload, [0xA1, 0xB2, 0xC3, 0xD4])
    }

    /// Everything `wire` brings, fed `size` bytes at a time, the violation last if any.
    fn read_all(reader: &mut Reader, wire: &[u8], size: usize) -> Vec<Result<Incoming, Violation>> {
        let mut got = Vec::new();
        for piece in wire.chunks(size) {
            let mut piece = piece.to_vec();
            let mut at = 0;
            loop {
                let (used, incoming) = reader.read(&mut piece[at..]);
                at += used;
                match incoming {
                    Some(Err(violation)) => {
                        got.push(Err(violation));
                        return got;
                    }
                    Some(Ok(incoming)) => got.push(Ok(incoming)),
                    None => break,
                }
                if at == piece.len() {
                    break;
                }
            }
            assert_eq!(at, piece.len());
        }
        got
    }

    fn text(text: &str) -> Result<Incoming, Violation> {
        Ok(Incoming::Message(Message::Text(text.into())))
    }

    #[test]
    fn messages_fragments_and_controls_in_any_pieces() {
        let mut wire = frame(0x81, b"hello");
        wire.extend(frame(0x01, "καλη".as_bytes()));
        wire.extend(frame(0x89, b"ping!"));
        wire.extend(frame(0x80, "μέρα".as_bytes()));
        wire.extend(frame(0x82, &[0, 1, 2]));
        wire.extend(frame(0x8A, b""));
        wire.extend(frame(0x81, &vec![b'x'; 70_000]));
        wire.extend(frame(0x88, &[3, 232, b'b', b'y', b'e']));
        for size in [1, 2, 5, 13, 64, 1000, wire.len()] {
            let mut reader = Reader::new(1 << 20, 1 << 20, None);
            let got = read_all(&mut reader, &wire, size);
            let big = "x".repeat(70_000);
            assert_eq!(
                got,
                [
                    text("hello"),
                    Ok(Incoming::Ping(Bytes::from_static(b"ping!"))),
                    text("καλημέρα"),
                    Ok(Incoming::Message(Message::Binary(Bytes::from_static(&[
                        0, 1, 2
                    ])))),
                    Ok(Incoming::Pong),
                    text(&big),
                    Ok(Incoming::Close(Some((1000, "bye".into())))),
                ],
                "in pieces of {size}"
            );
        }
    }

    fn violation(wire: &[u8], deflate: bool) -> Violation {
        let mut reader = Reader::new(1000, 1000, deflate.then_some(false));
        match read_all(&mut reader, wire, wire.len()).pop() {
            Some(Err(violation)) => violation,
            other => panic!("no violation: {other:?}"),
        }
    }

    #[test]
    fn frames_out_of_place_are_violations() {
        let code = |wire: &[u8], deflate| violation(wire, deflate).code;
        assert_eq!(code(&frame(0x80, b"x"), false), CloseCode::PROTOCOL_ERROR);
        let mut twice = frame(0x01, b"a");
        twice.extend(frame(0x81, b"b"));
        assert_eq!(code(&twice, false), CloseCode::PROTOCOL_ERROR);
        assert_eq!(code(&frame(0xC1, b"x"), false), CloseCode::PROTOCOL_ERROR);
        assert_eq!(code(&frame(0xC9, b""), true), CloseCode::PROTOCOL_ERROR);
        let mut compressed_continuation = frame(0x41, b"a");
        compressed_continuation.extend(frame(0xC0, b"b"));
        assert_eq!(
            code(&compressed_continuation, true),
            CloseCode::PROTOCOL_ERROR
        );
        assert_eq!(
            code(&frame(0x82, &[0; 1001]), false),
            CloseCode::MESSAGE_TOO_BIG
        );
        let mut fragments = frame(0x02, &[0; 600]);
        fragments.extend(frame(0x80, &[0; 600]));
        assert_eq!(code(&fragments, false), CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(
            code(&frame(0x81, &[0xCE, 0x41]), false),
            CloseCode::INVALID_PAYLOAD
        );
    }

    #[test]
    fn invalid_text_fails_before_its_frame_ends() {
        let mut reader = Reader::new(1 << 20, 1 << 20, None);
        let mut payload = "valid".as_bytes().to_vec();
        payload.extend([0xF4, 0x90, 0x80, 0x80]);
        payload.extend(vec![b'x'; 1000]);
        let wire = frame(0x81, &payload);
        // Header (8 bytes) and the first 10 bytes of the payload: enough to know.
        let mut first = wire[..18].to_vec();
        let (used, incoming) = reader.read(&mut first);
        assert_eq!(used, 18);
        assert_eq!(
            incoming.map(|result| result.map_err(|violation| violation.code)),
            Some(Err(CloseCode::INVALID_PAYLOAD))
        );
    }

    #[test]
    fn compressed_messages_inflate_whole_and_fragmented() {
        let json = r#"{"kind":"update","items":[1,2,3],"name":"example"}"#.repeat(40);
        let compressed = compress_alone(json.as_bytes(), 1).expect("compresses");
        let mut wire = frame(0xC1, &compressed);
        let (a, b) = compressed.split_at(compressed.len() / 3);
        wire.extend(frame(0x41, a));
        wire.extend(frame(0x89, b""));
        wire.extend(frame(0x80, b));
        wire.extend(frame(0x81, b"plain"));
        for size in [1, 3, 100, wire.len()] {
            let mut reader = Reader::new(1 << 20, 1 << 20, Some(false));
            let got = read_all(&mut reader, &wire, size);
            assert_eq!(
                got,
                [
                    text(&json),
                    Ok(Incoming::Ping(Bytes::new())),
                    text(&json),
                    text("plain")
                ]
            );
        }
    }

    #[test]
    fn a_compressed_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 * 1024 * 1024];
        let compressed = compress_alone(&zeros, 9).expect("compresses");
        let mut reader = Reader::new(1 << 20, 1 << 20, Some(false));
        let got = read_all(&mut reader, &frame(0xC2, &compressed), 4096);
        assert_eq!(
            got.last()
                .map(|last| last.as_ref().map_err(|violation| violation.code)),
            Some(Err(CloseCode::MESSAGE_TOO_BIG))
        );
    }
}
