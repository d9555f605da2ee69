//! Errors of the WebSocket API, and the disconnect that ends most handlers.

use std::fmt;

use crate::close::InvalidCloseCode;
pub use crate::connection::InvalidConnectionId;

/// The result of Tachyon's WebSocket operations; also a handy return type for handlers.
pub type Result<T = (), E = Error> = std::result::Result<T, E>;

/// What can go wrong with a WebSocket operation.
///
/// The variant a handler meets most is [`Error::Disconnected`]: the client left. Let it end the
/// handler with `?`; Tachyon does not log it as a failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client closed the connection, or it dropped. Every later receive or send returns this
    /// same error again.
    #[error(transparent)]
    Disconnected(#[from] WebSocketDisconnect),

    /// A message was received or sent before the handshake was accepted.
    #[error("cannot {operation} before the handshake is accepted: call `ws.accept().await?` first")]
    NotAccepted {
        /// What was attempted, e.g. "receive a message".
        operation: &'static str,
    },

    /// `accept`, `deny` or `close`-before-accept was called after the handshake was accepted.
    #[error(
        "cannot {operation}: the handshake was already accepted (to end the connection, call \
         `ws.close(code, reason)`)"
    )]
    AlreadyAccepted {
        /// What was attempted, e.g. "deny the handshake".
        operation: &'static str,
    },

    /// The handshake was rejected (with `deny`, or `close` before `accept`): there is no
    /// connection to use.
    #[error("cannot {operation}: this handler already rejected the handshake")]
    Rejected {
        /// What was attempted.
        operation: &'static str,
    },

    /// The handler closed the connection itself: nothing can be sent or received after `close`.
    #[error("cannot {operation}: this handler already closed the WebSocket")]
    Closed {
        /// What was attempted.
        operation: &'static str,
    },

    /// A text message arrived where binary was expected, or the reverse. The message is
    /// consumed; the connection stays open.
    #[error(
        "expected a {expected} message but the client sent a {received} message (use \
         `ws.receive()` to accept both)"
    )]
    UnexpectedMessage {
        /// The kind the handler asked for.
        expected: MessageKind,
        /// The kind the client sent.
        received: MessageKind,
    },

    /// A message was not valid JSON for the requested type. The message is consumed; the
    /// connection stays open, so the handler can answer it.
    #[error("the client sent a message that is not valid JSON for the expected type: {0}")]
    InvalidJson(#[source] serde_json::Error),

    /// A value could not be serialized to JSON by `send_json`; nothing was sent.
    #[error("could not serialize the message to JSON: {0}")]
    Serialize(#[source] serde_json::Error),

    /// A close code that may not be sent; nothing was sent.
    #[error(transparent)]
    InvalidCloseCode(#[from] InvalidCloseCode),

    /// `try_send_*` found the outbound queue full or the connection closed; the message is in
    /// the error.
    #[error(transparent)]
    TrySend(#[from] TrySendError),

    /// `accept_with` chose a subprotocol the client did not offer; the handshake is still
    /// undecided.
    #[error(
        "cannot accept with subprotocol `{chosen}`: the client offered {offered:?} (choose one of \
         `ws.requested_subprotocols()`)"
    )]
    SubprotocolNotOffered {
        /// The subprotocol the handler chose.
        chosen: String,
        /// The subprotocols the client offered in `Sec-WebSocket-Protocol`.
        offered: Vec<String>,
    },
}

impl Error {
    /// Whether this error means the client went away (a [`WebSocketDisconnect`]).
    pub fn is_disconnect(&self) -> bool {
        matches!(self, Self::Disconnected(_))
    }

    /// The disconnect this error carries, if it is one.
    pub fn as_disconnect(&self) -> Option<&WebSocketDisconnect> {
        match self {
            Self::Disconnected(disconnect) => Some(disconnect),
            _ => None,
        }
    }
}

impl From<std::convert::Infallible> for Error {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

/// The connection ended: the client closed it or dropped, or the server closed it (keepalive,
/// shutdown, a limit, a [`Sender`](crate::Sender)).
///
/// `kind` says why, as a type to match. `code` is the close code of the frame that ended the
/// connection: the client's, [`NO_STATUS_RECEIVED`](Self::NO_STATUS_RECEIVED) (1005) when its
/// frame had none, [`ABNORMAL_CLOSURE`](Self::ABNORMAL_CLOSURE) (1006) when the connection ended
/// without a close frame, or the one the server sent; `reason` is that frame's reason, or what
/// happened to the transport.
///
/// ```
/// use tachyon::Error;
/// use tachyon::error::DisconnectKind;
///
/// # async fn handler(mut ws: tachyon::WebSocket) -> tachyon::Result<()> {
/// match ws.receive_text().await {
///     Ok(text) => println!("got {text}"),
///     Err(Error::Disconnected(gone)) => match gone.kind {
///         DisconnectKind::ClientClosed => println!("bye ({})", gone.code),
///         DisconnectKind::KeepaliveTimeout => println!("the client stopped answering"),
///         DisconnectKind::ServerShutdown => println!("the server is stopping"),
///         _ => println!("gone: {gone}"),
///     },
///     Err(other) => return Err(other),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct WebSocketDisconnect {
    /// Why the connection ended.
    pub kind: DisconnectKind,
    /// The close code.
    pub code: u16,
    /// The close frame's reason (often empty), or what happened to the transport.
    pub reason: String,
}

/// Why a connection ended: the `kind` of a [`WebSocketDisconnect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectKind {
    /// The client sent a close frame; `code` and `reason` are its own.
    ClientClosed,
    /// The connection ended without a close frame (1006): the network or the client went away.
    ConnectionLost,
    /// The client answered no ping within the keepalive timeout; the server closed with 1011.
    KeepaliveTimeout,
    /// The client sent no data message within the idle timeout; the server closed with 1001.
    IdleTimeout,
    /// The server is shutting down; it closed with 1001 (Going Away).
    ServerShutdown,
    /// The client sent a message over the size limit; the server closed with 1009.
    MessageTooBig,
    /// The client broke the protocol; the server closed with 1002, or 1007 for text that is not
    /// UTF-8.
    ProtocolViolation,
    /// The server closed the connection through a [`Sender`](crate::Sender) (or a room's
    /// policy); `code` and `reason` are the ones it sent.
    ClosedByServer,
}

impl WebSocketDisconnect {
    /// 1005: the client's close frame carried no code.
    pub const NO_STATUS_RECEIVED: u16 = 1005;
    /// 1006: the connection ended without a close frame.
    pub const ABNORMAL_CLOSURE: u16 = 1006;

    pub(crate) fn new(kind: DisconnectKind, code: u16, reason: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            reason: reason.into(),
        }
    }

    /// The connection ended without a close frame, for `reason`.
    pub(crate) fn lost(reason: impl fmt::Display) -> Self {
        Self::new(
            DisconnectKind::ConnectionLost,
            Self::ABNORMAL_CLOSURE,
            reason.to_string(),
        )
    }
}

impl fmt::Display for WebSocketDisconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebSocket disconnected with code {}", self.code)?;
        if !self.reason.is_empty() {
            write!(f, " ({})", self.reason)?;
        }
        Ok(())
    }
}

/// The two kinds of data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A text message (UTF-8).
    Text,
    /// A binary message.
    Binary,
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Binary => "binary",
        })
    }
}

/// A message that `try_send_*` could not queue, and why. The message comes back with
/// [`into_message`](Self::into_message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", match &self.closed {
    None => "the connection's outbound queue is full (the client reads too slowly); the message was not sent",
    Some(_) => "the connection is closed; the message was not sent",
})]
pub struct TrySendError {
    message: crate::Message,
    closed: Option<WebSocketDisconnect>,
}

impl TrySendError {
    pub(crate) fn full(message: crate::Message) -> Self {
        Self {
            message,
            closed: None,
        }
    }

    pub(crate) fn closed(message: crate::Message, disconnect: WebSocketDisconnect) -> Self {
        Self {
            message,
            closed: Some(disconnect),
        }
    }

    /// Whether the queue was full: the connection is open but its client reads slowly.
    pub fn is_full(&self) -> bool {
        self.closed.is_none()
    }

    /// How the connection ended, if it is closed.
    pub fn disconnect(&self) -> Option<&WebSocketDisconnect> {
        self.closed.as_ref()
    }

    /// The message that was not sent.
    pub fn into_message(self) -> crate::Message {
        self.message
    }
}
