//! permessage-deflate (RFC 7692): what a client's offer agrees to, compressing a message, and
//! inflating one within the size limit.
//!
//! Without context takeover (what the server asks for by default), each message is compressed
//! and inflated on its own, so compressors and inflaters are not the connections': each runtime
//! thread keeps one compressor per level and a few inflaters, and a connection borrows an
//! inflater only while a compressed message is arriving. An idle connection holds nothing.
//!
//! The backend is miniz_oxide (pure Rust, no unsafe code), which always compresses with a
//! 32 KiB window. A client that asks for a smaller window (`server_max_window_bits=N`) is
//! honoured message by message: without context takeover, no back-reference reaches further
//! than the message's own start, so a message of at most 2^N bytes is compressed as usual, and
//! a larger one is sent as stored deflate blocks (level 0: no back-references at all). Inflating
//! always uses the full window, which reads what any window size produced, so the server never
//! asks for `client_max_window_bits`.
//!
//! Every message at or above the threshold is sent compressed, even one that does not shrink
//! (incompressible bytes grow by a few bytes per 64 KiB, in stored blocks): one rule, the
//! threshold, decides what is compressed, and a client never has to tell compressed messages
//! from plain ones by their content.

use std::cell::RefCell;

use axum::http::{HeaderMap, HeaderValue, header};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::frame::Violation;
use crate::settings::Deflate;

/// The end of a sync-flushed deflate stream: removed from every compressed message, and put
/// back before inflating one (RFC 7692 section 7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// The largest window miniz_oxide compresses with.
const FULL_WINDOW_BITS: u8 = 15;

/// Inflaters kept per thread for the next compressed message.
const SPARE_INFLATERS: usize = 4;

/// A client's offer of permessage-deflate: the first one in its `Sec-WebSocket-Extensions`
/// that is well formed (RFC 7692 section 7.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
}

impl Offer {
    /// The first acceptable permessage-deflate offer among the request's extension headers
    /// (every header line, each a comma-separated list). Offers with an unknown or repeated
    /// parameter, or a bad value, are skipped, as RFC 7692 section 5 says.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<Self> {
        headers
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .find_map(Self::parse)
    }

    fn parse(extension: &str) -> Option<Self> {
        let mut parts = extension.split(';').map(str::trim);
        if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
            return None;
        }
        let mut offer = Self::default();
        let mut client_max_window_bits = false;
        for parameter in parts {
            let (name, value) = match parameter.split_once('=') {
                Some((name, value)) => (name.trim(), Some(unquote(value.trim())?)),
                None => (parameter, None),
            };
            let flag = match name.to_ascii_lowercase().as_str() {
                "server_no_context_takeover" if value.is_none() => {
                    &mut offer.server_no_context_takeover
                }
                "client_no_context_takeover" if value.is_none() => {
                    &mut offer.client_no_context_takeover
                }
                "server_max_window_bits" => {
                    if offer.server_max_window_bits.is_some() {
                        return None;
                    }
                    offer.server_max_window_bits = Some(window_bits(value?)?);
                    continue;
                }
                "client_max_window_bits" => {
                    if let Some(value) = value {
                        window_bits(value)?;
                    }
                    &mut client_max_window_bits
                }
                _ => return None,
            };
            if std::mem::replace(flag, true) {
                return None;
            }
        }
        Some(offer)
    }

    /// What the server agrees to under `deflate`, and the header that says so.
    pub(crate) fn accept(self, deflate: &Deflate) -> (Agreed, HeaderValue) {
        let bits = self.server_max_window_bits.unwrap_or(FULL_WINDOW_BITS);
        // A smaller window than miniz_oxide's is honoured only message by message.
        let server_takeover =
            deflate.keeps_context() && !self.server_no_context_takeover && bits == FULL_WINDOW_BITS;
        let client_takeover = deflate.keeps_context() && !self.client_no_context_takeover;
        let mut answer = String::from("permessage-deflate");
        if !server_takeover {
            answer.push_str("; server_no_context_takeover");
        }
        if !client_takeover {
            answer.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            answer.push_str("; server_max_window_bits=");
            answer.push_str(&bits.to_string());
        }
        let agreed = Agreed {
            server_takeover,
            client_takeover,
            max_compressed: if bits >= FULL_WINDOW_BITS {
                usize::MAX
            } else {
                1 << bits
            },
            threshold: deflate.min_size(),
            level: deflate.compression_level(),
        };
        // Only ASCII went in.
        let header = HeaderValue::try_from(answer)
            .unwrap_or_else(|_| HeaderValue::from_static("permessage-deflate"));
        (agreed, header)
    }
}

fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"'),
        None => Some(value),
    }
}

fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.len() > 2 || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// What one connection agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// The server keeps its compression context between messages.
    pub(crate) server_takeover: bool,
    /// The client keeps its context: the connection keeps its inflater between messages.
    pub(crate) client_takeover: bool,
    /// Messages larger than this go out uncompressed (the client asked for a smaller window).
    pub(crate) max_compressed: usize,
    pub(crate) threshold: usize,
    pub(crate) level: u32,
}

impl Agreed {
    /// Whether a message of `len` bytes is compressed.
    pub(crate) fn compresses(&self, len: usize) -> bool {
        len >= self.threshold.max(1)
    }

    /// The level a message of `len` bytes is compressed at on its own: 0 (stored blocks) for
    /// one larger than the window the client asked for.
    pub(crate) fn level_for(&self, len: usize) -> u32 {
        if len > self.max_compressed {
            0
        } else {
            self.level
        }
    }
}

thread_local! {
    /// This thread's compressors for messages compressed on their own, by level (0 to 9),
    /// each made when first needed.
    static COMPRESSORS: RefCell<[Option<Compress>; 10]> = RefCell::new(Default::default());
    /// Inflaters ready for the next compressed message.
    static INFLATERS: RefCell<Vec<Decompress>> = const { RefCell::new(Vec::new()) };
}

/// `payload` compressed on its own at `level` (0 to 9), without the tail; `None` only if the
/// compressor failed.
pub(crate) fn compress_alone(payload: &[u8], level: u32) -> Option<Vec<u8>> {
    let level = level.min(9);
    let compressed = COMPRESSORS.try_with(|slots| {
        let mut slots = slots.try_borrow_mut().ok()?;
        let compressor = slots
            .get_mut(level as usize)?
            .get_or_insert_with(|| Compress::new(Compression::new(level), false));
        compressor.reset();
        compress(compressor, payload)
    });
    match compressed {
        Ok(Some(compressed)) => Some(compressed),
        // The thread is exiting, or (which nothing here does) compressing re-entered.
        Ok(None) | Err(_) => compress(&mut Compress::new(Compression::new(level), false), payload),
    }
}

/// `payload` through `compressor` (which keeps its context), flushed, without the tail; `None`
/// if the compressor failed.
pub(crate) fn compress(compressor: &mut Compress, payload: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(payload.len() / 2 + 64);
    let start_in = compressor.total_in();
    loop {
        let used = (compressor.total_in() - start_in) as usize;
        let input = payload.get(used..)?;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        let (before_in, before_out) = (compressor.total_in(), compressor.total_out());
        compressor
            .compress_vec(input, &mut out, FlushCompress::Sync)
            .ok()?;
        let done = (compressor.total_in() - start_in) as usize == payload.len();
        let stuck = compressor.total_in() == before_in && compressor.total_out() == before_out;
        // Done once everything went in and the flush fit: room was left in the output.
        if done && (out.len() < out.capacity() || stuck) {
            break;
        }
        if stuck {
            return None;
        }
    }
    if !out.ends_with(&TAIL) {
        return None;
    }
    out.truncate(out.len() - TAIL.len());
    Some(out)
}

/// A compressor that keeps its context, for a connection that agreed to server context
/// takeover.
pub(crate) fn compressor(level: u32) -> Compress {
    Compress::new(Compression::new(level), false)
}

/// Inflates one compressed message, chunk by chunk as its frames arrive, handing each inflated
/// chunk on; holds an inflater only while the message lasts (or, with client context
/// takeover, for the connection's life).
#[derive(Debug)]
pub(crate) struct Inflater {
    state: Option<Decompress>,
    /// The client keeps its context: the inflater is kept, never reset.
    takeover: bool,
    /// The client ended the stream (a final deflate block): the rest of the message is ignored.
    ended: bool,
}

impl Inflater {
    pub(crate) fn new(takeover: bool) -> Self {
        Self {
            state: None,
            takeover,
            ended: false,
        }
    }

    /// Inflates `input`, the next compressed bytes of the message, handing what comes out to
    /// `sink` (which applies the size limit and stops inflating by failing).
    pub(crate) fn inflate(
        &mut self,
        input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> Result<(), Violation>,
    ) -> Result<(), Violation> {
        if self.ended || input.is_empty() {
            return Ok(());
        }
        let state = self.state.get_or_insert_with(|| {
            INFLATERS
                .try_with(|spare| spare.borrow_mut().pop())
                .ok()
                .flatten()
                .unwrap_or_else(|| Decompress::new(false))
        });
        let mut out = [0u8; 8 * 1024];
        let mut input = input;
        loop {
            let (before_in, before_out) = (state.total_in(), state.total_out());
            let status = state
                .decompress(input, &mut out, FlushDecompress::None)
                .map_err(|_| Violation::invalid_payload("compressed data that does not inflate"))?;
            let used = (state.total_in() - before_in) as usize;
            let produced = (state.total_out() - before_out) as usize;
            input = input.get(used..).unwrap_or_default();
            if produced > 0 {
                sink(&out[..produced])?;
            }
            if status == Status::StreamEnd {
                self.ended = true;
                return Ok(());
            }
            if produced < out.len() && (input.is_empty() || used == 0 && produced == 0) {
                if input.is_empty() {
                    return Ok(());
                }
                return Err(Violation::invalid_payload(
                    "compressed data that does not inflate",
                ));
            }
        }
    }

    /// The message's last frame is in: inflates the tail and gets ready for the next message.
    pub(crate) fn finish(
        &mut self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), Violation>,
    ) -> Result<(), Violation> {
        let result = self.inflate(&TAIL, sink);
        let ended = std::mem::take(&mut self.ended);
        if result.is_ok() && self.takeover && !ended {
            return result;
        }
        if let Some(mut state) = self.state.take() {
            // Handed on only if it ended cleanly: a failed one may hold anything.
            if result.is_ok() {
                state.reset(false);
                let _ = INFLATERS.try_with(|spare| {
                    let mut spare = spare.borrow_mut();
                    if spare.len() < SPARE_INFLATERS {
                        spare.push(state);
                    }
                });
            }
        }
        result
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn offer(text: &str) -> Option<Offer> {
        let mut headers = HeaderMap::new();
        for line in text.split('\n') {
            headers.append(
                header::SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_str(line).expect("a header"),
            );
        }
        Offer::from_headers(&headers)
    }

    fn answer(text: &str, deflate: &Deflate) -> Option<String> {
        let (_, header) = offer(text)?.accept(deflate);
        Some(header.to_str().expect("ASCII").to_owned())
    }

    const NO_TAKEOVER: &str =
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn browsers_offers_get_no_context_takeover_and_nothing_they_did_not_allow() {
        let deflate = Deflate::new();
        // Chrome, Firefox, Safari.
        for browser in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits=15",
        ] {
            assert_eq!(
                answer(browser, &deflate).as_deref(),
                Some(NO_TAKEOVER),
                "{browser}"
            );
        }
    }

    #[test]
    fn autobahns_offers_are_all_accepted() {
        let deflate = Deflate::new();
        let cases = [
            (
                "permessage-deflate; client_no_context_takeover; client_max_window_bits",
                NO_TAKEOVER.to_owned(),
            ),
            (
                "permessage-deflate; server_no_context_takeover",
                NO_TAKEOVER.to_owned(),
            ),
            (
                "permessage-deflate; server_max_window_bits=9",
                format!("{NO_TAKEOVER}; server_max_window_bits=9"),
            ),
            (
                "permessage-deflate; server_max_window_bits=\"15\"",
                format!("{NO_TAKEOVER}; server_max_window_bits=15"),
            ),
            (
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=8",
                format!("{NO_TAKEOVER}; server_max_window_bits=8"),
            ),
        ];
        for (offer, expected) in cases {
            assert_eq!(answer(offer, &deflate), Some(expected), "{offer}");
        }
        // A list of offers: the first acceptable one.
        assert_eq!(
            answer(
                "permessage-deflate; server_max_window_bits=99, permessage-deflate; \
                 server_max_window_bits=10, permessage-deflate",
                &deflate
            ),
            Some(format!("{NO_TAKEOVER}; server_max_window_bits=10"))
        );
    }

    #[test]
    fn malformed_offers_are_skipped() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=+9",
            "permessage-deflate; client_max_window_bits=0",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; unknown",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
        }
        // On another header line, or after another extension.
        assert!(offer("x-other; a=1\npermessage-deflate").is_some());
        assert!(offer("x-other, permessage-deflate").is_some());
    }

    #[test]
    fn context_takeover_is_kept_only_where_both_sides_allow_it() {
        let takeover = Deflate::new().context_takeover(true);
        assert_eq!(
            answer("permessage-deflate", &takeover).as_deref(),
            Some("permessage-deflate")
        );
        let (agreed, _) = offer("permessage-deflate; client_no_context_takeover")
            .expect("an offer")
            .accept(&takeover);
        assert!(agreed.server_takeover && !agreed.client_takeover);
        // A smaller window is honoured only without context.
        let (agreed, header) = offer("permessage-deflate; server_max_window_bits=10")
            .expect("an offer")
            .accept(&takeover);
        assert!(!agreed.server_takeover && agreed.client_takeover);
        assert_eq!((agreed.level_for(1024), agreed.level_for(1025)), (1, 0));
        assert_eq!(
            header,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10"
        );
    }

    fn inflate_all(compressed: &[&[u8]], limit: usize) -> Result<Vec<u8>, Violation> {
        let mut inflater = Inflater::new(false);
        let mut out = Vec::new();
        let mut sink = |chunk: &[u8]| {
            if out.len() + chunk.len() > limit {
                return Err(Violation::too_big("too big"));
            }
            out.extend_from_slice(chunk);
            Ok(())
        };
        for part in compressed {
            inflater.inflate(part, &mut sink)?;
        }
        inflater.finish(&mut sink)?;
        Ok(out)
    }

    #[test]
    fn compressed_messages_inflate_back_in_any_pieces() {
        let message: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("{{\"id\":{i},\"name\":\"n{}\"}},", i % 7).into_bytes())
            .collect();
        let compressed = compress_alone(&message, 1).expect("JSON compresses");
        assert!(compressed.len() * 4 < message.len());
        for size in [1, 7, 1000, compressed.len()] {
            let pieces: Vec<&[u8]> = compressed.chunks(size).collect();
            assert_eq!(
                inflate_all(&pieces, usize::MAX).as_deref(),
                Ok(&message[..])
            );
        }
        // Stored blocks (level 0, for a client's small window) inflate back too.
        let stored = compress_alone(&message[..5000], 0).expect("stored");
        assert!(stored.len() > 5000);
        assert_eq!(
            inflate_all(&[&stored], usize::MAX).as_deref(),
            Ok(&message[..5000])
        );
    }

    #[test]
    fn inflating_stops_at_the_limit() {
        let zeros = vec![0u8; 10 * 1024 * 1024];
        let compressed = compress_alone(&zeros, 9).expect("zeros compress");
        assert!(compressed.len() < 20 * 1024, "{}", compressed.len());
        let error = inflate_all(&[&compressed], 1024 * 1024).expect_err("over the limit");
        assert_eq!(error.code, crate::close::CloseCode::MESSAGE_TOO_BIG);
    }

    #[test]
    fn garbage_does_not_inflate() {
        let error = inflate_all(&[&[0xFF; 64]], usize::MAX).expect_err("not deflate");
        assert_eq!(error.code, crate::close::CloseCode::INVALID_PAYLOAD);
    }
}
