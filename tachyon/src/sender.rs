//! [`Sender`]: a handle that sends to one connection from any task.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use serde::Serialize;

use crate::close::CloseCode;
use crate::connection::{ConnectionId, SendFuture, Shared};
use crate::error::{DisconnectKind, Error, Result, TrySendError, WebSocketDisconnect};
use crate::message::Message;

/// Sends to one connection from any task, while its handler keeps the
/// [`WebSocket`](crate::WebSocket). Get one with [`WebSocket::sender`](crate::WebSocket::sender)
/// after `accept`; clone it freely (it is a reference count).
///
/// ```no_run
/// use std::time::Duration;
/// use tachyon::{WebSocket, websocket};
///
/// #[websocket("/ticks")]
/// async fn ticks(mut ws: WebSocket) -> tachyon::Result<()> {
///     ws.accept().await?;
///     let sender = ws.sender()?;
///     tokio::spawn(async move {
///         let mut n = 0u64;
///         // Ends when the connection does: every send then returns the disconnect.
///         while sender.send_text(format!("tick {n}")).await.is_ok() {
///             n += 1;
///             tokio::time::sleep(Duration::from_secs(1)).await;
///         }
///     });
///     loop {
///         let text = ws.receive_text().await?; // ticks keep coming while this waits
///         ws.send_text(format!("echo {text}")).await?;
///     }
/// }
/// ```
///
/// Messages wait in the connection's outbound queue, bounded in messages and in bytes
/// ([`Settings::queue_messages`](crate::Settings::queue_messages),
/// [`Settings::queue_bytes`](crate::Settings::queue_bytes)), and leave in the order they were
/// queued, whoever queued them, also while the handler is busy elsewhere. `send_*` waits for
/// room; `try_send_*` never waits and hands the message back when the queue is full.
#[derive(Clone)]
pub struct Sender {
    shared: Arc<Shared>,
}

impl Sender {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The connection's id: unique in the process, stable, displayable.
    pub fn id(&self) -> ConnectionId {
        self.shared.id()
    }

    /// Queues a text message, waiting for room in the queue. Takes a `String` or `Utf8Bytes`
    /// without copying it.
    ///
    /// # Errors
    /// [`Error::Disconnected`] once the connection is closed or closing.
    pub fn send_text(
        &self,
        text: impl Into<Utf8Bytes>,
    ) -> impl Future<Output = Result<()>> + Send + '_ {
        self.shared.send(Message::Text(text.into()))
    }

    /// Queues a binary message, waiting for room in the queue.
    ///
    /// # Errors
    /// As [`send_text`](Self::send_text).
    pub fn send_bytes(
        &self,
        bytes: impl Into<Bytes>,
    ) -> impl Future<Output = Result<()>> + Send + '_ {
        self.shared.send(Message::Binary(bytes.into()))
    }

    /// Serializes `value` to JSON and queues it as a text message, waiting for room.
    ///
    /// # Errors
    /// [`Error::Serialize`] (nothing queued), otherwise as [`send_text`](Self::send_text).
    pub fn send_json<T: Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> impl Future<Output = Result<()>> + Send + '_ {
        match json(value) {
            Ok(message) => self.shared.send(message),
            Err(error) => SendFuture::failed(error),
        }
    }

    /// Queues a message, waiting for room in the queue.
    ///
    /// # Errors
    /// As [`send_text`](Self::send_text).
    pub fn send(
        &self,
        message: impl Into<Message>,
    ) -> impl Future<Output = Result<()>> + Send + '_ {
        self.shared.send(message.into())
    }

    /// Queues a text message if there is room, without waiting.
    ///
    /// # Errors
    /// A [`TrySendError`] holding the message: the queue is full, or the connection closed.
    pub fn try_send_text(&self, text: impl Into<Utf8Bytes>) -> Result<(), TrySendError> {
        self.try_send(Message::Text(text.into()))
    }

    /// Queues a binary message if there is room, without waiting.
    ///
    /// # Errors
    /// As [`try_send_text`](Self::try_send_text).
    pub fn try_send_bytes(&self, bytes: impl Into<Bytes>) -> Result<(), TrySendError> {
        self.try_send(Message::Binary(bytes.into()))
    }

    /// Serializes `value` to JSON and queues it if there is room, without waiting.
    ///
    /// # Errors
    /// [`Error::Serialize`], or [`Error::TrySend`] holding the encoded message.
    pub fn try_send_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        Ok(self.try_send(json(value)?)?)
    }

    /// Queues a message if there is room, without waiting.
    ///
    /// # Errors
    /// As [`try_send_text`](Self::try_send_text).
    pub fn try_send(&self, message: impl Into<Message>) -> Result<(), TrySendError> {
        self.shared.try_send(message.into())
    }

    /// Closes the connection with `code` and `reason`, after the messages already queued. The
    /// handler's `receive` then returns a [`DisconnectKind::ClosedByServer`] disconnect.
    /// Returns at once; [`closed`](Self::closed) waits for the end.
    ///
    /// # Errors
    /// [`Error::InvalidCloseCode`] (nothing sent); [`Error::Disconnected`] if the connection
    /// was already closing or closed.
    pub fn close<C>(&self, code: C, reason: &str) -> Result<()>
    where
        C: TryInto<CloseCode>,
        Error: From<C::Error>,
    {
        let code = code.try_into()?;
        let disconnect =
            WebSocketDisconnect::new(DisconnectKind::ClosedByServer, code.as_u16(), reason);
        if self.shared.close(code, reason, disconnect) {
            Ok(())
        } else {
            Err(self.ending().into())
        }
    }

    /// Whether the connection is closed or closing: nothing more can be sent.
    pub fn is_closed(&self) -> bool {
        self.shared.is_ending()
    }

    /// Waits until the connection is closed or closing, and says how it ended.
    pub async fn closed(&self) -> WebSocketDisconnect {
        self.shared.closed().await;
        self.ending()
    }

    fn ending(&self) -> WebSocketDisconnect {
        self.shared
            .ending()
            .unwrap_or_else(|| WebSocketDisconnect::lost("closed"))
    }
}

fn json<T: Serialize + ?Sized>(value: &T) -> Result<Message> {
    let json = serde_json::to_string(value).map_err(Error::Serialize)?;
    Ok(Message::Text(json.into()))
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("id", &self.id())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl PartialEq for Sender {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Eq for Sender {}
