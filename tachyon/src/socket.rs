//! The [`WebSocket`] a handler receives: one client connection, from the handshake to the close.
//!
//! The socket goes through three phases. Before `accept` the handshake is still an HTTP request:
//! its headers, path and query can be read and the handler decides its fate (`accept`, `deny`,
//! `close`). After `accept` messages flow, through the connection's driver. After a close (by
//! either side) every operation returns an error instead of touching the connection, so nothing
//! is ever sent twice.

use std::future::{Future, poll_fn};
use std::mem;

use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::close::CloseCode;
use crate::connection::{ConnectionId, SendFuture};
use crate::error::{DisconnectKind, Error, MessageKind, Result, WebSocketDisconnect};
use crate::handshake::{Accept, Decision, RequestHead, rejected_by_close};
use crate::message::Message;
use crate::params::Params;
use crate::sender::Sender;

/// One WebSocket connection, handed to a `#[websocket]` handler.
///
/// ```no_run
/// use tachyon::{WebSocket, websocket};
///
/// #[websocket("/ws")]
/// async fn echo(mut ws: WebSocket) -> tachyon::Result<()> {
///     ws.accept().await?;
///     loop {
///         let text = ws.receive_text().await?; // a client disconnect ends the loop through `?`
///         ws.send_text(format!("Echo: {text}")).await?;
///     }
/// }
/// ```
///
/// Every operation is cancel-safe: a `receive_*`, `send_*`, `accept` or `close` future dropped
/// inside `tokio::select!` loses no message and leaves the socket usable, so a handler can wait
/// on the client and on other sources (a room, a timer) at once.
///
/// After `accept` the connection is driven alongside the handler, in its task: pings are
/// answered and keepalive runs while the handler does anything else, and messages queued by
/// [`Sender`]s leave at once. One incoming message is read ahead of the handler; until the
/// handler takes it, the connection reads nothing more (pongs and the client's close included),
/// which is how a slow handler pushes back on a fast client.
#[derive(Debug)]
pub struct WebSocket {
    state: State,
    // Boxed: the socket lives in every handler's future, often more than once.
    request: Box<RequestHead>,
}

#[derive(Debug)]
enum State {
    /// The handshake is undecided.
    Pending {
        decision: oneshot::Sender<Decision>,
        socket: oneshot::Receiver<Sender>,
    },
    /// Accepted: waiting for the upgrade to complete.
    Accepting(oneshot::Receiver<Sender>),
    Open(Sender),
    /// The handler rejected the handshake (`deny`, or `close` before `accept`).
    Rejected,
    /// The handler closed the connection; the driver completes the close handshake.
    Closing(Sender),
    /// The connection was lost before the handler could use it.
    Disconnected(WebSocketDisconnect),
}

impl WebSocket {
    pub(crate) fn new(
        request: RequestHead,
        decision: oneshot::Sender<Decision>,
        socket: oneshot::Receiver<Sender>,
    ) -> Self {
        Self {
            state: State::Pending { decision, socket },
            request: Box::new(request),
        }
    }

    // --- The handshake -------------------------------------------------------------------------

    /// Accepts the handshake: the client gets `101 Switching Protocols` and messages can flow.
    ///
    /// If the client goes away during the upgrade, the handler is not resumed: there is no
    /// connection to hand it.
    ///
    /// # Errors
    /// [`Error::AlreadyAccepted`] or [`Error::Rejected`] if the handshake was already decided.
    pub async fn accept(&mut self) -> Result<()> {
        self.accept_with(Accept::new()).await
    }

    /// Accepts the handshake with a subprotocol and/or extra response headers.
    ///
    /// ```no_run
    /// # use tachyon::{WebSocket, websocket};
    /// # use tachyon::handshake::Accept;
    /// #[websocket("/chat")]
    /// async fn chat(mut ws: WebSocket) -> tachyon::Result<()> {
    ///     if ws.requested_subprotocols().any(|p| p == "chat.v2") {
    ///         ws.accept_with(Accept::new().subprotocol("chat.v2")).await?;
    ///     } else {
    ///         ws.accept().await?;
    ///     }
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    /// As [`accept`](Self::accept), and [`Error::SubprotocolNotOffered`] (the handshake stays
    /// undecided) if the client did not offer the chosen subprotocol.
    pub async fn accept_with(&mut self, accept: Accept) -> Result<()> {
        const OPERATION: &str = "accept the handshake";
        match mem::replace(&mut self.state, State::Rejected) {
            State::Pending { decision, socket } => {
                let chosen = accept.chosen_subprotocol().map(str::to_owned);
                if let Some(chosen) = &chosen {
                    if !self
                        .requested_subprotocols()
                        .any(|offered| offered == chosen)
                    {
                        let offered = self.requested_subprotocols().map(str::to_owned).collect();
                        let chosen = chosen.clone();
                        self.state = State::Pending { decision, socket };
                        return Err(Error::SubprotocolNotOffered { chosen, offered });
                    }
                }
                if decision.send(Decision::Accept(accept)).is_err() {
                    // The request was already answered: the handler returned while this socket
                    // lived on elsewhere.
                    return Err(Error::Rejected {
                        operation: OPERATION,
                    });
                }
                self.request.subprotocol = chosen;
                self.state = State::Accepting(socket);
            }
            // A previous `accept` was dropped while waiting for the upgrade: wait on.
            State::Accepting(socket) => self.state = State::Accepting(socket),
            other => return Err(self.restore_and_refuse(other, OPERATION)),
        }
        let State::Accepting(socket) = &mut self.state else {
            return Err(refusal(&self.state, OPERATION));
        };
        // Cancel-safe: if this future is dropped here, the state stays `Accepting`.
        match socket.await {
            Ok(sender) => {
                self.state = State::Open(sender);
                // The request has been answered: keep its headers compactly from now on.
                self.request.compact();
                Ok(())
            }
            Err(_) => Err(self.disconnected(WebSocketDisconnect::lost(
                "the connection was lost during the WebSocket upgrade",
            ))),
        }
    }

    /// Rejects the handshake with any HTTP response, e.g. `401` with a JSON body.
    ///
    /// ```no_run
    /// # use tachyon::{WebSocket, websocket};
    /// # use axum::{http::StatusCode, Json};
    /// #[websocket("/private")]
    /// async fn private(mut ws: WebSocket) -> tachyon::Result<()> {
    ///     if ws.headers().get("authorization").is_none() {
    ///         let body = Json(serde_json::json!({"error": "missing credentials"}));
    ///         return ws.deny(StatusCode::UNAUTHORIZED, body);
    ///     }
    ///     ws.accept().await
    /// }
    /// ```
    ///
    /// The response is sent as soon as this is called; the handler may go on (to log, say) but
    /// can no longer send or receive.
    ///
    /// # Errors
    /// [`Error::AlreadyAccepted`] or [`Error::Rejected`] if the handshake was already decided.
    pub fn deny(&mut self, status: StatusCode, body: impl IntoResponse) -> Result<()> {
        self.reject((status, body).into_response(), "deny the handshake")
    }

    fn reject(
        &mut self,
        response: axum::response::Response,
        operation: &'static str,
    ) -> Result<()> {
        match mem::replace(&mut self.state, State::Rejected) {
            State::Pending { decision, .. } => {
                // If the request was already answered there is nobody left to tell.
                let _ = decision.send(Decision::Reject(response));
                Ok(())
            }
            State::Accepting(socket) => {
                self.state = State::Accepting(socket);
                Err(Error::AlreadyAccepted { operation })
            }
            other => Err(self.restore_and_refuse(other, operation)),
        }
    }

    // --- Request information -------------------------------------------------------------------

    /// The connection's id, from the handshake on: the same as its [`Sender`]'s and the one the
    /// [`Rooms`](crate::Rooms) know it by (`rooms.to(&room).except(ws.id())`).
    pub fn id(&self) -> ConnectionId {
        self.request.id
    }

    /// The headers of the handshake request.
    pub fn headers(&self) -> &HeaderMap {
        self.request.headers()
    }

    /// The request target of the handshake, e.g. `/ws/lobby?token=abc`.
    #[doc(alias = "uri")]
    pub fn url(&self) -> &Uri {
        &self.request.uri
    }

    /// The path parameters of the route, by name (percent-decoded).
    pub fn path_params(&self) -> &Params {
        &self.request.path_params
    }

    /// The query string's parameters (percent-decoded): `ws.query_params().get("token")`.
    pub fn query_params(&self) -> &Params {
        &self.request.query_params
    }

    /// The subprotocols the client offered in `Sec-WebSocket-Protocol`, in its order of
    /// preference.
    pub fn requested_subprotocols(&self) -> impl Iterator<Item = &str> {
        self.request.requested_subprotocols()
    }

    /// The subprotocol chosen when accepting, if any.
    pub fn subprotocol(&self) -> Option<&str> {
        match &self.state {
            State::Open(_) | State::Closing(_) => self.request.subprotocol.as_deref(),
            _ => None,
        }
    }

    /// A handle that sends to this connection from any task, while the handler keeps this
    /// socket; see [`Sender`].
    ///
    /// # Errors
    /// The state errors ([`Error::NotAccepted`], ...) when there is no open connection.
    pub fn sender(&self) -> Result<Sender> {
        self.open("get a sender").cloned()
    }

    // --- Receiving -----------------------------------------------------------------------------

    /// Receives the next data message, text or binary.
    ///
    /// # Errors
    /// [`Error::Disconnected`] when the connection ends (its [`DisconnectKind`] says why); the
    /// state errors ([`Error::NotAccepted`], ...) when there is no open connection.
    pub async fn receive(&mut self) -> Result<Message> {
        let sender = self.open("receive a message")?;
        let shared = sender.shared();
        Ok(poll_fn(|cx| shared.poll_receive(cx)).await?)
    }

    /// Receives a text message.
    ///
    /// # Errors
    /// As [`receive`](Self::receive), and [`Error::UnexpectedMessage`] for a binary message.
    pub async fn receive_text(&mut self) -> Result<Utf8Bytes> {
        match self.receive().await? {
            Message::Text(text) => Ok(text),
            Message::Binary(_) => Err(Error::UnexpectedMessage {
                expected: MessageKind::Text,
                received: MessageKind::Binary,
            }),
        }
    }

    /// Receives a binary message.
    ///
    /// # Errors
    /// As [`receive`](Self::receive), and [`Error::UnexpectedMessage`] for a text message.
    pub async fn receive_bytes(&mut self) -> Result<Bytes> {
        match self.receive().await? {
            Message::Binary(bytes) => Ok(bytes),
            Message::Text(_) => Err(Error::UnexpectedMessage {
                expected: MessageKind::Binary,
                received: MessageKind::Text,
            }),
        }
    }

    /// Receives a message (text, or binary holding UTF-8 JSON) and deserializes it.
    ///
    /// # Errors
    /// As [`receive`](Self::receive), and [`Error::InvalidJson`] when the message does not
    /// deserialize to `T`; the connection stays open, so the handler can answer.
    pub async fn receive_json<T: DeserializeOwned>(&mut self) -> Result<T> {
        let parsed = match self.receive().await? {
            Message::Text(text) => serde_json::from_str(&text),
            Message::Binary(bytes) => serde_json::from_slice(&bytes),
        };
        parsed.map_err(Error::InvalidJson)
    }

    // --- Sending -------------------------------------------------------------------------------

    /// Sends a text message. Takes a `String` or `Utf8Bytes` without copying it.
    ///
    /// The message joins the connection's outbound queue, behind what this socket and its
    /// [`Sender`]s queued before; the call returns once it is queued, waiting only while the
    /// queue is full.
    ///
    /// # Errors
    /// [`Error::Disconnected`] if the connection is gone; the state errors when there is no open
    /// connection.
    pub fn send_text(
        &mut self,
        text: impl Into<Utf8Bytes>,
    ) -> impl Future<Output = Result<()>> + Send + '_ {
        self.send(Message::Text(text.into()), "send a text message")
    }

    /// Sends a binary message. Takes a `Vec<u8>` or `Bytes` without copying it.
    ///
    /// # Errors
    /// As [`send_text`](Self::send_text).
    pub fn send_bytes(
        &mut self,
        bytes: impl Into<Bytes>,
    ) -> impl Future<Output = Result<()>> + Send + '_ {
        self.send(Message::Binary(bytes.into()), "send a binary message")
    }

    /// Serializes `value` to JSON and sends it as a text message.
    ///
    /// # Errors
    /// [`Error::Serialize`] (nothing sent) if `value` cannot be serialized, otherwise as
    /// [`send_text`](Self::send_text).
    pub fn send_json<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> impl Future<Output = Result<()>> + Send + '_ {
        match serde_json::to_string(value) {
            Ok(json) => self.send(Message::Text(json.into()), "send a JSON message"),
            Err(error) => SendFuture::failed(Error::Serialize(error)),
        }
    }

    /// Queues `message`, waiting for room.
    fn send(&mut self, message: Message, operation: &'static str) -> SendFuture<'_> {
        match &self.state {
            State::Open(sender) => sender.shared().send(message),
            other => SendFuture::failed(refusal(other, operation)),
        }
    }

    // --- Closing -------------------------------------------------------------------------------

    /// Closes with `code` and `reason` (`""` for none; cut to the
    /// [`CloseCode::MAX_REASON_BYTES`] a close frame can carry), after the messages already
    /// queued: `ws.close(CloseCode::NORMAL, "bye")`, `ws.close(4001, "")`. Before `accept`,
    /// this rejects the handshake with `403 Forbidden` instead (what Starlette-based servers
    /// do), or, with
    /// [`Settings::browser_readable_rejections`](crate::Settings::browser_readable_rejections),
    /// accepts and closes with `code` so that a browser's `onclose` sees it.
    ///
    /// It returns once the close frame is queued; the connection then completes the close
    /// handshake on its own, within [`Settings::close_timeout`](crate::Settings::close_timeout).
    ///
    /// `code` is a [`CloseCode`] or a `u16`; a code that may not be sent is an error and
    /// nothing is sent.
    ///
    /// # Errors
    /// [`Error::InvalidCloseCode`]; [`Error::Disconnected`] if the client is already gone;
    /// [`Error::Closed`] or [`Error::Rejected`] if this handler already ended the connection.
    pub async fn close<C>(&mut self, code: C, reason: &str) -> Result<()>
    where
        C: TryInto<CloseCode>,
        Error: From<C::Error>,
    {
        const OPERATION: &str = "close the WebSocket";
        let code = code.try_into()?;
        if matches!(self.state, State::Accepting(_)) {
            // An `accept` was dropped half-way: finish it, then close the connection. Boxed, as
            // it is rare and the close future lives in every handler's future.
            Box::pin(self.accept()).await?;
        }
        if matches!(self.state, State::Pending { .. }) && self.request.readable_rejections {
            // A browser hides a refused handshake's status but shows a close code: accept,
            // then close with the code.
            Box::pin(self.accept()).await?;
        }
        match mem::replace(&mut self.state, State::Rejected) {
            State::Pending { decision, socket } => {
                self.state = State::Pending { decision, socket };
                self.reject(rejected_by_close(code, reason), OPERATION)
            }
            State::Open(sender) => {
                let disconnect =
                    WebSocketDisconnect::new(DisconnectKind::ClosedByServer, code.as_u16(), reason);
                let closed = sender.shared().close(code, reason, disconnect);
                let ending = sender.shared().ending();
                self.state = State::Closing(sender);
                match ending {
                    Some(gone) if !closed => Err(gone.into()),
                    _ => Ok(()),
                }
            }
            other => Err(self.restore_and_refuse(other, OPERATION)),
        }
    }

    // --- State ---------------------------------------------------------------------------------

    fn open(&self, operation: &'static str) -> Result<&Sender> {
        match &self.state {
            State::Open(sender) => Ok(sender),
            other => Err(refusal(other, operation)),
        }
    }

    /// Puts back a state that does not allow `operation` and says why.
    fn restore_and_refuse(&mut self, state: State, operation: &'static str) -> Error {
        let error = refusal(&state, operation);
        self.state = state;
        error
    }

    /// Records that the client is gone (dropping the connection) and returns the error to give.
    fn disconnected(&mut self, disconnect: WebSocketDisconnect) -> Error {
        self.state = State::Disconnected(disconnect.clone());
        disconnect.into()
    }
}

/// Why `state` does not allow `operation`.
fn refusal(state: &State, operation: &'static str) -> Error {
    match state {
        State::Pending { .. } | State::Accepting(_) => Error::NotAccepted { operation },
        State::Open(_) => Error::AlreadyAccepted { operation },
        State::Rejected => Error::Rejected { operation },
        State::Closing(_) => Error::Closed { operation },
        State::Disconnected(disconnect) => disconnect.clone().into(),
    }
}

impl Drop for WebSocket {
    /// Tells the connection that the handler's socket is gone: once the handler has returned
    /// too, Tachyon sends the close frame its outcome calls for (1000 on success, 1011 on error
    /// or panic), or 1000 if the socket outlived its handler in another task.
    fn drop(&mut self) {
        if let State::Open(sender) | State::Closing(sender) = &self.state {
            sender.shared().release_socket();
        }
    }
}
