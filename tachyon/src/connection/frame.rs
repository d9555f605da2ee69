//! RFC 6455 frames: reading a client frame's header, unmasking its payload, and writing the
//! server's headers (servers never mask, so a server frame is the same bytes for every client).

use super::copy;
use crate::close::CloseCode;
use crate::error::DisconnectKind;

pub(crate) const CONTINUATION: u8 = 0x0;
pub(crate) const TEXT: u8 = 0x1;
pub(crate) const BINARY: u8 = 0x2;
pub(crate) const CLOSE: u8 = 0x8;
pub(crate) const PING: u8 = 0x9;
pub(crate) const PONG: u8 = 0xA;

/// The longest header a client frame has: 2 bytes, an 8-byte length, a 4-byte mask.
pub(crate) const MAX_CLIENT_HEADER: usize = 14;
/// The longest header a server frame has: 2 bytes and an 8-byte length (no mask).
pub(crate) const MAX_SERVER_HEADER: usize = 10;
/// The most a control frame carries (RFC 6455 section 5.5).
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;

/// Why a client's bytes end the connection: the close code, the kind the handler sees, and the
/// reason sent in the close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) code: CloseCode,
    pub(crate) kind: DisconnectKind,
    pub(crate) reason: &'static str,
}

impl Violation {
    /// 1002: the client broke the framing rules.
    pub(crate) const fn protocol(reason: &'static str) -> Self {
        Self {
            code: CloseCode::PROTOCOL_ERROR,
            kind: DisconnectKind::ProtocolViolation,
            reason,
        }
    }

    /// 1007: a payload that is not what its frame says (text that is not UTF-8, compressed
    /// data that does not inflate).
    pub(crate) const fn invalid_payload(reason: &'static str) -> Self {
        Self {
            code: CloseCode::INVALID_PAYLOAD,
            kind: DisconnectKind::ProtocolViolation,
            reason,
        }
    }

    /// 1009: a frame or message over the limits.
    pub(crate) const fn too_big(reason: &'static str) -> Self {
        Self {
            code: CloseCode::MESSAGE_TOO_BIG,
            kind: DisconnectKind::MessageTooBig,
            reason,
        }
    }
}

/// A client frame's header, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) fin: bool,
    pub(crate) rsv1: bool,
    pub(crate) opcode: u8,
    pub(crate) mask: [u8; 4],
    pub(crate) len: u64,
}

impl Header {
    pub(crate) fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Reads a client frame's header from the start of `bytes`: `Ok(None)` if more bytes are
/// needed, else the header and how many bytes it took. Checks what the header alone can tell:
/// reserved bits 2 and 3, reserved opcodes, the mask, the length's top bit, and the rules of
/// control frames. What depends on the connection (bit 1, continuations, limits) is the
/// reader's to check.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<Option<(Header, usize)>, Violation> {
    let [first, second, ..] = *bytes else {
        return Ok(None);
    };
    if first & 0x30 != 0 {
        return Err(Violation::protocol("reserved bits 2 and 3 must be 0"));
    }
    let opcode = first & 0x0F;
    if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
        return Err(Violation::protocol("reserved opcode"));
    }
    if second & 0x80 == 0 {
        return Err(Violation::protocol("client frames must be masked"));
    }
    let (len, at) = match second & 0x7F {
        126 => match bytes.get(2..4) {
            Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
            _ => return Ok(None),
        },
        127 => match bytes
            .get(2..10)
            .and_then(|len| <[u8; 8]>::try_from(len).ok())
        {
            Some(len) => (u64::from_be_bytes(len), 10),
            None => return Ok(None),
        },
        len => (u64::from(len), 2),
    };
    if len >> 63 != 0 {
        return Err(Violation::protocol(
            "the most significant bit of a 64-bit length must be 0",
        ));
    }
    let Some(mask) = bytes
        .get(at..at + 4)
        .and_then(|mask| <[u8; 4]>::try_from(mask).ok())
    else {
        return Ok(None);
    };
    let header = Header {
        fin: first & 0x80 != 0,
        rsv1: first & 0x40 != 0,
        opcode,
        mask,
        len,
    };
    if header.is_control() {
        if !header.fin {
            return Err(Violation::protocol("control frames must not be fragmented"));
        }
        if len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(Violation::protocol(
                "control frames carry at most 125 bytes",
            ));
        }
    }
    Ok(Some((header, at + 4)))
}

/// Unmasks `data`, which starts `offset` bytes into its frame's payload (the mask repeats
/// every 4 bytes), 32 bytes at a time (a loop the compiler turns into vector instructions).
pub(crate) fn unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut mask = mask;
    mask.rotate_left(offset % 4);
    let mut wide = [0; 32];
    for (byte, mask) in wide.iter_mut().zip(mask.iter().cycle()) {
        *byte = *mask;
    }
    let mut chunks = data.chunks_exact_mut(32);
    for chunk in &mut chunks {
        for (byte, mask) in chunk.iter_mut().zip(wide.iter()) {
            *byte ^= mask;
        }
    }
    for (byte, mask) in chunks.into_remainder().iter_mut().zip(wide.iter()) {
        *byte ^= mask;
    }
}

/// A server frame's header: final, unmasked, with bit 1 set for a compressed message.
/// Returns the bytes and how many of them are used.
pub(crate) fn server_header(
    opcode: u8,
    compressed: bool,
    len: usize,
) -> ([u8; MAX_SERVER_HEADER], usize) {
    let mut header = [0; MAX_SERVER_HEADER];
    header[0] = 0x80 | if compressed { 0x40 } else { 0 } | opcode;
    let used = if len < 126 {
        header[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (header, used)
}

/// A whole server frame (header and payload) appended to `out`.
pub(crate) fn put_frame(out: &mut Vec<u8>, opcode: u8, compressed: bool, payload: &[u8]) {
    let (header, used) = server_header(opcode, compressed, payload.len());
    out.reserve(used + payload.len());
    out.extend_from_slice(&header[..used]);
    copy::extend(out, payload);
}

/// A close frame's payload: the code, then the reason (already cut to fit).
pub(crate) fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// Reads a client's close payload: no status (empty), or a code RFC 6455 allows on the wire
/// and a UTF-8 reason.
pub(crate) fn parse_close(payload: &[u8]) -> Result<Option<(u16, String)>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::protocol("a close frame's code takes 2 bytes")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            let allowed = tungstenite::protocol::frame::coding::CloseCode::from(code).is_allowed();
            if !allowed {
                return Err(Violation::protocol(
                    "a close code that may not be sent (RFC 6455 section 7.4)",
                ));
            }
            let Ok(reason) = simdutf8::basic::from_utf8(reason) else {
                return Err(Violation::invalid_payload(
                    "a close reason that is not UTF-8",
                ));
            };
            Ok(Some((code, reason.to_owned())))
        }
    }
}

/// A client's frame (masked with `mask`), for tests: the first byte as given.
#[cfg(test)]
pub(crate) fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = vec![first];
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
    frame.extend_from_slice(&mask);
    let start = frame.len();
    frame.extend_from_slice(payload);
    unmask(&mut frame[start..], mask, 0);
    frame
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_every_length_read_back_and_wait_for_missing_bytes() {
        for len in [0, 1, 125, 126, 65535, 65536, 100_000] {
            let payload = vec![b'x'; len];
            let frame = client_frame(0x81, &payload, [1, 2, 3, 4]);
            let (header, at) = parse_header(&frame)
                .expect("a valid header")
                .expect("complete");
            assert_eq!(header.len, len as u64);
            assert_eq!(
                (header.fin, header.rsv1, header.opcode),
                (true, false, TEXT)
            );
            assert_eq!(header.mask, [1, 2, 3, 4]);
            assert_eq!(frame.len() - at, len);
            for cut in 0..at {
                assert_eq!(parse_header(&frame[..cut]), Ok(None), "{len} cut at {cut}");
            }
        }
    }

    #[test]
    fn bad_headers_are_violations() {
        let cases: [(&[u8], &str); 6] = [
            (&[0x81, 0x05], "must be masked"),
            (&[0xA1, 0x80, 0, 0, 0, 0], "reserved bits"),
            (&[0x83, 0x80, 0, 0, 0, 0], "reserved opcode"),
            (&[0x09, 0x80, 0, 0, 0, 0], "fragmented"),
            (&[0x89, 0xFE, 0, 126, 0, 0, 0, 0], "125 bytes"),
            (
                &[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
                "significant bit",
            ),
        ];
        for (bytes, why) in cases {
            let error = parse_header(bytes).expect_err(why);
            assert!(error.reason.contains(why), "{why}: {error:?}");
            assert_eq!(error.code, CloseCode::PROTOCOL_ERROR);
        }
    }

    #[test]
    fn unmasking_from_any_offset_matches_bytewise() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..=255).collect();
        let expected: Vec<u8> = data
            .iter()
            .enumerate()
            .map(|(i, byte)| byte ^ mask[i % 4])
            .collect();
        for split in [0, 1, 3, 7, 8, 13, 31, 32, 33, 200] {
            let mut got = data.clone();
            let (head, tail) = got.split_at_mut(split);
            unmask(head, mask, 0);
            unmask(tail, mask, split);
            assert_eq!(got, expected, "split at {split}");
        }
    }

    #[test]
    fn server_headers_use_the_shortest_length() {
        assert_eq!(
            server_header(TEXT, false, 5),
            ([0x81, 5, 0, 0, 0, 0, 0, 0, 0, 0], 2)
        );
        assert_eq!(server_header(BINARY, true, 300).1, 4);
        assert_eq!(server_header(BINARY, true, 300).0[..4], [0xC2, 126, 1, 44]);
        assert_eq!(server_header(TEXT, false, 70_000).1, 10);
    }

    #[test]
    fn close_payloads() {
        assert_eq!(parse_close(&[]), Ok(None));
        assert_eq!(
            parse_close(&[3, 232, b'o', b'k']),
            Ok(Some((1000, "ok".into())))
        );
        assert!(parse_close(&[3]).is_err());
        assert_eq!(
            parse_close(&[3, 237]).map_err(|error| error.code),
            Err(CloseCode::PROTOCOL_ERROR)
        );
        assert_eq!(
            parse_close(&[3, 232, 0xFF]).map_err(|error| error.code),
            Err(CloseCode::INVALID_PAYLOAD)
        );
    }
}
