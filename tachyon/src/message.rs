//! [`Message`]: the data a connection carries, text or binary.

use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use tungstenite::Message as WireMessage;

use crate::error::MessageKind;

/// A data message: text or binary. Returned by [`WebSocket::receive`](crate::WebSocket::receive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message, valid UTF-8. [`Utf8Bytes`] dereferences to `&str` without copying.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// Whether this is text or binary.
    pub fn kind(&self) -> MessageKind {
        match self {
            Self::Text(_) => MessageKind::Text,
            Self::Binary(_) => MessageKind::Binary,
        }
    }

    /// The payload as bytes, whatever the kind.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Self::Text(text) => text.into(),
            Self::Binary(bytes) => bytes,
        }
    }

    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Self::Text(text) => text.len(),
            Self::Binary(bytes) => bytes.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message as tungstenite sends it.
    pub(crate) fn into_wire(self) -> WireMessage {
        match self {
            Self::Text(text) => WireMessage::Text(wire_text(text)),
            Self::Binary(bytes) => WireMessage::Binary(bytes),
        }
    }
}

/// axum's `Utf8Bytes` wraps tungstenite's without giving it out: going through `Bytes` keeps the
/// payload shared, for one UTF-8 check.
pub(crate) fn wire_text(text: Utf8Bytes) -> tungstenite::Utf8Bytes {
    // Cannot fail: axum's `Utf8Bytes` holds UTF-8 by construction. An empty text is sent
    // rather than a panic if that ever changed.
    tungstenite::Utf8Bytes::try_from(Bytes::from(text)).unwrap_or_default()
}

/// Turns tungstenite's text into axum's, which Tachyon's API carries.
///
/// # Errors
/// Only if tungstenite delivered text that is not UTF-8, which it checks before: the error the
/// client would have got for it.
pub(crate) fn from_wire_text(
    text: tungstenite::Utf8Bytes,
) -> Result<Utf8Bytes, tungstenite::Error> {
    Ok(Utf8Bytes::try_from(Bytes::from(text))?)
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Self::Text(text.into())
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Self::Text(text.into())
    }
}

impl From<Utf8Bytes> for Message {
    fn from(text: Utf8Bytes) -> Self {
        Self::Text(text)
    }
}

impl From<Bytes> for Message {
    fn from(bytes: Bytes) -> Self {
        Self::Binary(bytes)
    }
}

impl From<Vec<u8>> for Message {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Binary(bytes.into())
    }
}
