//! Appending bytes in pieces of at most 2 KiB, which is what every copy of a message's bytes
//! goes through (into a received message, into the gathered frames, into a broadcast's frame).
//!
//! glibc's `memcpy` copies anything above `x86_rep_movsb_threshold` (2,112 bytes on CPUs with
//! FSRM) with `rep movsb`, and on AMD Zen `rep movsb` is slow when the source and destination
//! sit at unlucky distances from each other (glibc bugs 30994 and 30995, changed in glibc
//! 2.39; Debian 12 ships 2.36). Measured on this project's machines (AMD EPYC, glibc 2.36):
//! one 16 KiB `extend_from_slice` took 7.5 – 10.6 µs at three of four source offsets and
//! 0.3 µs at the fourth, the same bytes in 2 KiB pieces 0.2 – 0.4 µs at all four. The one copy
//! of each received 16 KiB message was 13 % of the echo's server CPU. Pieces cost a few calls
//! more where `memcpy` is fine.

/// The largest piece handed to `memcpy` at once: under glibc's `rep movsb` threshold.
const PIECE: usize = 2048;

/// Appends `bytes` to `out`.
pub(crate) fn extend(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len());
    for piece in bytes.chunks(PIECE) {
        out.extend_from_slice(piece);
    }
}

/// Appends `text` to `out`, cut only between characters.
pub(crate) fn push_str(out: &mut String, mut text: &str) {
    out.reserve(text.len());
    while text.len() > PIECE {
        // A character is at most 4 bytes: a boundary is among the last four positions.
        let mut at = PIECE;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let (piece, rest) = text.split_at(at);
        out.push_str(piece);
        text = rest;
    }
    out.push_str(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_arrive_whole_and_in_order() {
        let bytes: Vec<u8> = (0..10_000_u32).map(|i| (i % 251) as u8).collect();
        for len in [
            0,
            1,
            PIECE - 1,
            PIECE,
            PIECE + 1,
            3 * PIECE + 7,
            bytes.len(),
        ] {
            let mut out = b"head".to_vec();
            extend(&mut out, &bytes[..len]);
            assert_eq!(&out[..4], b"head");
            assert_eq!(&out[4..], &bytes[..len]);
        }
    }

    #[test]
    fn text_is_cut_between_characters() {
        // Characters of 1 to 4 bytes, so that a piece's end falls inside each kind.
        let text: String = "aé€😀".repeat(1000);
        for skip in 0..4 {
            let start = text.char_indices().nth(skip).map_or(0, |(at, _)| at);
            let mut out = String::from("head");
            push_str(&mut out, &text[start..]);
            assert_eq!(&out[4..], &text[start..]);
        }
    }
}
