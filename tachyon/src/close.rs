//! Close codes: the numbers a WebSocket close frame carries (RFC 6455 §7.4).
//!
//! [`CloseCode`] can only hold a code that may be *sent*; codes that only describe what happened
//! (1005 "no status", 1006 "abnormal closure", 1015 "TLS failure") are received, never sent, and
//! appear as plain numbers in [`WebSocketDisconnect::code`](crate::WebSocketDisconnect::code).

use std::fmt;

/// A close code that may be sent in a close frame.
///
/// | Code | Constant | Meaning |
/// |------|----------|---------|
/// | 1000 | [`NORMAL`](Self::NORMAL) | Normal closure |
/// | 1001 | [`GOING_AWAY`](Self::GOING_AWAY) | Going away (server shutdown, page left) |
/// | 1002 | [`PROTOCOL_ERROR`](Self::PROTOCOL_ERROR) | Protocol error |
/// | 1003 | [`UNSUPPORTED_DATA`](Self::UNSUPPORTED_DATA) | Unsupported data (e.g. binary where only text is understood) |
/// | 1007 | [`INVALID_PAYLOAD`](Self::INVALID_PAYLOAD) | Payload not consistent with the message type |
/// | 1008 | [`POLICY_VIOLATION`](Self::POLICY_VIOLATION) | Policy violation |
/// | 1009 | [`MESSAGE_TOO_BIG`](Self::MESSAGE_TOO_BIG) | Message too big |
/// | 1010 | [`MANDATORY_EXTENSION`](Self::MANDATORY_EXTENSION) | Client expected an extension the server did not negotiate |
/// | 1011 | [`INTERNAL_ERROR`](Self::INTERNAL_ERROR) | Internal server error |
/// | 1012 | [`SERVICE_RESTART`](Self::SERVICE_RESTART) | Service restart |
/// | 1013 | [`TRY_AGAIN_LATER`](Self::TRY_AGAIN_LATER) | Try again later |
/// | 1014 | [`BAD_GATEWAY`](Self::BAD_GATEWAY) | Bad gateway |
/// | 3000–3999 | | Registered with IANA by libraries and frameworks |
/// | 4000–4999 | | Private use: your application's own codes (e.g. 4001 "unauthorized") |
///
/// Every other number is rejected by [`CloseCode::new`]: below 1000, 1004 (reserved),
/// 1005 and 1006 (only ever reported, never sent), 1015 (TLS failure, reported only),
/// 1016–2999 (reserved for the protocol) and 5000 and above.
///
/// ```
/// use tachyon::CloseCode;
///
/// assert_eq!(CloseCode::new(4001)?.as_u16(), 4001);
/// assert!(CloseCode::new(1006).is_err());
/// assert_eq!(CloseCode::NORMAL, 1000);
/// # Ok::<(), tachyon::close::InvalidCloseCode>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(u16);

impl CloseCode {
    /// The longest reason a close frame can carry, in bytes: a control frame payload is at most
    /// 125 bytes, two of which hold the code. Longer reasons are cut on a character boundary.
    pub const MAX_REASON_BYTES: usize = 123;

    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutting down, browser leaving the page).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: the endpoint received a type of data it cannot accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1007: a message's data was not consistent with its type (e.g. invalid UTF-8 in text).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: the message violates the endpoint's policy.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a message was too big to process.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1010: (sent by clients) the server did not negotiate a required extension.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: the server met an unexpected condition (what Tachyon sends when a handler fails).
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: temporary condition (e.g. overload); try again later.
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 1014: a gateway or proxy received an invalid response from the upstream server.
    pub const BAD_GATEWAY: Self = Self(1014);

    /// Checks that `code` may be sent in a close frame.
    ///
    /// # Errors
    /// [`InvalidCloseCode`] for the numbers listed on [`CloseCode`] as never sent.
    pub const fn new(code: u16) -> Result<Self, InvalidCloseCode> {
        match code {
            1000..=1003 | 1007..=1014 | 3000..=4999 => Ok(Self(code)),
            _ => Err(InvalidCloseCode(code)),
        }
    }

    /// The code as a number.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether this is an application's private code (4000–4999).
    pub const fn is_private(self) -> bool {
        matches!(self.0, 4000..=4999)
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({})", self.0)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl TryFrom<u16> for CloseCode {
    type Error = InvalidCloseCode;

    fn try_from(code: u16) -> Result<Self, Self::Error> {
        Self::new(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

impl PartialEq<u16> for CloseCode {
    fn eq(&self, other: &u16) -> bool {
        self.0 == *other
    }
}

impl PartialEq<CloseCode> for u16 {
    fn eq(&self, other: &CloseCode) -> bool {
        *self == other.0
    }
}

/// A number that may not be sent as a close code (see [`CloseCode`] for the rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0} cannot be sent as a WebSocket close code: use 1000-1003, 1007-1014, 3000-3999 or \
     your own codes in 4000-4999"
)]
pub struct InvalidCloseCode(pub u16);

/// Cuts `reason` to [`CloseCode::MAX_REASON_BYTES`] on a character boundary, so it always fits a frame.
pub(crate) fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= CloseCode::MAX_REASON_BYTES {
        return reason;
    }
    let mut end = CloseCode::MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendable_codes_are_accepted() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
        ] {
            assert_eq!(CloseCode::new(code).map(CloseCode::as_u16), Ok(code));
        }
        for code in [3000, 3999, 4000, 4001, 4999] {
            assert_eq!(CloseCode::new(code).map(CloseCode::as_u16), Ok(code));
        }
    }

    #[test]
    fn unsendable_codes_are_rejected() {
        for code in [
            0,
            999,
            1004,
            1005,
            1006,
            1015,
            1016,
            2000,
            2999,
            5000,
            u16::MAX,
        ] {
            assert_eq!(CloseCode::new(code), Err(InvalidCloseCode(code)));
        }
    }

    #[test]
    fn private_codes_are_recognised() {
        assert!(CloseCode::new(4001).is_ok_and(CloseCode::is_private));
        assert!(!CloseCode::NORMAL.is_private());
    }

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        let short = "bye";
        assert_eq!(truncate_reason(short), short);
        let ascii = "x".repeat(200);
        assert_eq!(truncate_reason(&ascii).len(), CloseCode::MAX_REASON_BYTES);
        // 'é' is two bytes: 61 of them (122 bytes) fit, the 62nd would cross byte 123.
        let accented = "é".repeat(100);
        let cut = truncate_reason(&accented);
        assert_eq!(cut.len(), 122);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
