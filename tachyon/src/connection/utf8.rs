//! Text checked for UTF-8 once, as it arrives: each piece of a message (a read's worth of a
//! frame, a fragment, an inflated chunk) is checked with SIMD and appended to the message's
//! `String`, so no byte is checked twice, and invalid text fails on the piece that makes it
//! invalid, not at the end of the frame or message (Autobahn's 6.4.* cases, "fail fast").

use std::fmt;

use super::copy;

/// The piece made the text invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidUtf8;

/// A message's text so far, and the start of a character split between two pieces.
#[derive(Default)]
pub(crate) struct Utf8Text {
    text: String,
    /// The first bytes of a character whose rest is in the next piece.
    partial: [u8; 4],
    partial_len: u8,
}

impl fmt::Debug for Utf8Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Utf8Text")
            .field("len", &self.text.len())
            .field("partial", &&self.partial[..usize::from(self.partial_len)])
            .finish()
    }
}

impl Utf8Text {
    /// Room for `bytes` more bytes of text.
    pub(crate) fn reserve(&mut self, bytes: usize) {
        self.text.reserve(bytes);
    }

    /// Bytes of text so far, the partial character included.
    pub(crate) fn len(&self) -> usize {
        self.text.len() + usize::from(self.partial_len)
    }

    /// Checks `bytes`, which continue the text, and appends them.
    pub(crate) fn push(&mut self, mut bytes: &[u8]) -> Result<(), InvalidUtf8> {
        if self.partial_len > 0 {
            let have = usize::from(self.partial_len);
            let need = sequence_len(self.partial[0]).ok_or(InvalidUtf8)?;
            let take = (need - have).min(bytes.len());
            self.partial[have..have + take].copy_from_slice(&bytes[..take]);
            self.partial_len += take as u8;
            bytes = &bytes[take..];
            let have = usize::from(self.partial_len);
            if have < need {
                return if could_start_a_character(&self.partial[..have]) {
                    Ok(())
                } else {
                    Err(InvalidUtf8)
                };
            }
            let character = std::str::from_utf8(&self.partial[..need]).map_err(|_| InvalidUtf8)?;
            self.text.push_str(character);
            self.partial_len = 0;
        }
        let split = incomplete_end(bytes);
        let (whole, rest) = bytes.split_at(split);
        let whole = simdutf8::basic::from_utf8(whole).map_err(|_| InvalidUtf8)?;
        copy::push_str(&mut self.text, whole);
        if !rest.is_empty() {
            if !could_start_a_character(rest) {
                return Err(InvalidUtf8);
            }
            self.partial[..rest.len()].copy_from_slice(rest);
            self.partial_len = rest.len() as u8;
        }
        Ok(())
    }

    /// The whole text, once the message is complete: invalid if it ends inside a character.
    pub(crate) fn finish(self) -> Result<String, InvalidUtf8> {
        if self.partial_len > 0 {
            return Err(InvalidUtf8);
        }
        Ok(self.text)
    }
}

/// How many bytes the character that starts with `lead` takes, if `lead` can start one.
fn sequence_len(lead: u8) -> Option<usize> {
    match lead {
        0x00..=0x7F => Some(1),
        0xC2..=0xDF => Some(2),
        0xE0..=0xEF => Some(3),
        0xF0..=0xF4 => Some(4),
        _ => None,
    }
}

/// Where the character cut off at the end of `bytes` starts (`bytes.len()` if none is): only
/// the last three bytes can hold one.
fn incomplete_end(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=len.min(3) {
        let byte = bytes[len - back];
        if byte < 0x80 {
            return len;
        }
        if byte >= 0xC0 {
            return match sequence_len(byte) {
                Some(need) if need > back => len - back,
                _ => len,
            };
        }
    }
    len
}

/// Whether `start` (shorter than its character) can begin a valid character: completed with
/// the smallest continuation bytes its lead allows, it must be valid.
fn could_start_a_character(start: &[u8]) -> bool {
    let Some(need) = start.first().copied().and_then(sequence_len) else {
        return false;
    };
    if start.len() >= need {
        return false;
    }
    let mut character = [0x80; 4];
    character[..start.len()].copy_from_slice(start);
    if start.len() == 1 {
        // The second byte's range depends on the lead (no overlong forms, no surrogates, nothing
        // above U+10FFFF).
        character[1] = match start[0] {
            0xE0 => 0xA0,
            0xF0 => 0x90,
            _ => 0x80,
        };
    }
    std::str::from_utf8(&character[..need]).is_ok()
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check_in_pieces(bytes: &[u8], size: usize) -> Result<String, InvalidUtf8> {
        let mut text = Utf8Text::default();
        for piece in bytes.chunks(size.max(1)) {
            text.push(piece)?;
        }
        text.finish()
    }

    #[test]
    fn valid_text_in_any_pieces_reads_back() {
        let text = "ascii, καλημέρα, 你好, 𝄞 and 🎉 end";
        for size in 1..=text.len() {
            assert_eq!(
                check_in_pieces(text.as_bytes(), size).as_deref(),
                Ok(text),
                "{size}"
            );
        }
    }

    #[test]
    fn invalid_text_fails_in_the_piece_that_makes_it_invalid() {
        // Autobahn 6.4.1: the third piece is invalid (U+110000 and beyond), the fourth valid.
        let pieces: [&[u8]; 3] = [
            "κόσμε".as_bytes(),
            &[0xF4, 0x90, 0x80, 0x80],
            "edited".as_bytes(),
        ];
        let mut text = Utf8Text::default();
        assert_eq!(text.push(pieces[0]), Ok(()));
        assert_eq!(text.push(pieces[1]), Err(InvalidUtf8));

        // Already the first byte that cannot continue: F4 90 is beyond U+10FFFF.
        let mut text = Utf8Text::default();
        assert_eq!(text.push(b"ok"), Ok(()));
        assert_eq!(text.push(&[0xF4]), Ok(()));
        assert_eq!(text.push(&[0x90]), Err(InvalidUtf8));

        for (bytes, why) in [
            (&[0xC0, 0x80][..], "overlong"),
            (&[0xED, 0xA0, 0x80][..], "surrogate"),
            (&[0xE0, 0x80][..], "overlong three-byte"),
            (&[0xFF][..], "never valid"),
            (&[0x80][..], "a lone continuation"),
            (&[0xCE][..], "cut at the end"),
        ] {
            assert!(check_in_pieces(bytes, 1).is_err(), "{why}");
            assert!(check_in_pieces(bytes, 8).is_err(), "{why}");
        }
    }

    #[test]
    fn starts_of_characters() {
        assert!(could_start_a_character(&[0xE0]));
        assert!(could_start_a_character(&[0xE0, 0xA0]));
        assert!(!could_start_a_character(&[0xE0, 0x80]));
        assert!(could_start_a_character(&[0xF4, 0x8F]));
        assert!(!could_start_a_character(&[0xF4, 0x90]));
        assert!(!could_start_a_character(&[0xED, 0xA0]));
        assert!(!could_start_a_character(&[0xC1]));
    }
}
