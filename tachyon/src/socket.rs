//! The [`WebSocket`] a handler receives: one client connection, from the handshake to the close.
//!
//! The socket goes through three phases. Before `accept` the handshake is still an HTTP request:
//! its headers, path and query can be read and the handler decides its fate (`accept`, `deny`,
//! `close`). After `accept` messages flow. After a close (by either side) every operation returns
//! an error instead of touching the connection, so nothing is ever sent twice.

use std::mem;

use axum::body::Bytes;
use axum::extract::ws::{self, CloseFrame, Utf8Bytes};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use futures_util::SinkExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::close::{CloseCode, truncate_reason};
use crate::error::{Error, MessageKind, Result, WebSocketDisconnect};
use crate::handshake::{Accept, CLOSE_TIMEOUT, Decision, Ended, RequestHead, rejected_by_close};
use crate::params::Params;

/// A data message: text or binary. Returned by [`WebSocket::receive`].
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
}

/// One WebSocket connection, handed to a `#[websocket]` handler.
///
/// ```no_run
/// use tachyon::{websocket, WebSocket};
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
/// Receiving is cancel-safe: a `receive_*` future dropped inside `tokio::select!` loses no
/// message, so a handler can wait on the client and on other sources (a room, a timer) at once.
/// Pings are answered by the connection itself while the handler receives.
#[derive(Debug)]
pub struct WebSocket {
    state: State,
    request: RequestHead,
    ended: Option<oneshot::Sender<Ended>>,
}

#[derive(Debug)]
enum State {
    /// The handshake is undecided.
    Pending {
        decision: oneshot::Sender<Decision>,
        socket: oneshot::Receiver<ws::WebSocket>,
    },
    Open(ws::WebSocket),
    /// The handler rejected the handshake (`deny`, or `close` before `accept`).
    Rejected,
    /// The handler sent a close frame; the driver completes the close handshake.
    Closing(ws::WebSocket),
    Disconnected(WebSocketDisconnect),
}

impl WebSocket {
    pub(crate) fn new(
        request: RequestHead,
        decision: oneshot::Sender<Decision>,
        socket: oneshot::Receiver<ws::WebSocket>,
        ended: oneshot::Sender<Ended>,
    ) -> Self {
        Self {
            state: State::Pending { decision, socket },
            request,
            ended: Some(ended),
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
    /// # use tachyon::{websocket, Accept, WebSocket};
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
        let socket = match mem::replace(&mut self.state, State::Rejected) {
            State::Pending { decision, socket } => {
                if let Some(chosen) = accept.chosen_subprotocol() {
                    if !self
                        .requested_subprotocols()
                        .any(|offered| offered == chosen)
                    {
                        let offered = self.requested_subprotocols().map(str::to_owned).collect();
                        let chosen = chosen.to_owned();
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
                socket
            }
            other => return Err(self.restore_and_refuse(other, OPERATION)),
        };
        // Until the upgrade completes there is no connection: if this future is dropped
        // half-way, the socket stays in this state.
        self.state = State::Disconnected(WebSocketDisconnect::abnormal(
            "the WebSocket upgrade was abandoned (the `accept` future was dropped)",
        ));
        match socket.await {
            Ok(socket) => {
                self.state = State::Open(socket);
                Ok(())
            }
            Err(_) => Err(self.disconnected(WebSocketDisconnect::abnormal(
                "the connection was lost during the WebSocket upgrade",
            ))),
        }
    }

    /// Rejects the handshake with any HTTP response, e.g. `401` with a JSON body.
    ///
    /// ```no_run
    /// # use tachyon::{websocket, WebSocket};
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
            other => Err(self.restore_and_refuse(other, operation)),
        }
    }

    // --- Request information -------------------------------------------------------------------

    /// The headers of the handshake request.
    pub fn headers(&self) -> &HeaderMap {
        &self.request.headers
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
            State::Open(socket) | State::Closing(socket) => {
                socket.protocol().and_then(|value| value.to_str().ok())
            }
            _ => None,
        }
    }

    // --- Receiving -----------------------------------------------------------------------------

    /// Receives the next data message, text or binary.
    ///
    /// # Errors
    /// [`Error::Disconnected`] when the client closes or the connection drops; the state
    /// errors ([`Error::NotAccepted`], ...) when there is no open connection.
    pub async fn receive(&mut self) -> Result<Message> {
        let socket = self.socket("receive a message")?;
        let (disconnect, reply) = loop {
            match socket.recv().await {
                Some(Ok(ws::Message::Text(text))) => return Ok(Message::Text(text)),
                Some(Ok(ws::Message::Binary(bytes))) => return Ok(Message::Binary(bytes)),
                // The connection queues the pong reply itself; it leaves with the next read.
                Some(Ok(ws::Message::Ping(_) | ws::Message::Pong(_))) => {}
                Some(Ok(ws::Message::Close(frame))) => {
                    let disconnect = match frame {
                        Some(CloseFrame { code, reason }) => {
                            WebSocketDisconnect::new(code, reason.as_str())
                        }
                        None => {
                            WebSocketDisconnect::new(WebSocketDisconnect::NO_STATUS_RECEIVED, "")
                        }
                    };
                    // The connection queued the close reply: flushing sends it.
                    break (disconnect, None);
                }
                Some(Err(error)) => match protocol_violation(&error) {
                    // A client that broke the protocol is told why, with the matching code.
                    Some(code) => {
                        let reason = error.to_string();
                        let frame = CloseFrame {
                            code: code.as_u16(),
                            reason: truncate_reason(&reason).into(),
                        };
                        let disconnect = WebSocketDisconnect::new(code.as_u16(), reason);
                        break (disconnect, Some(ws::Message::Close(Some(frame))));
                    }
                    None => return Err(self.disconnected(WebSocketDisconnect::abnormal(error))),
                },
                None => {
                    let gone = "the connection closed without a close frame";
                    return Err(self.disconnected(WebSocketDisconnect::abnormal(gone)));
                }
            }
        };
        // Record the disconnect before the last await, so that it stands even if this future is
        // dropped while the reply goes out.
        let state = mem::replace(&mut self.state, State::Disconnected(disconnect.clone()));
        if let State::Open(mut socket) = state {
            // Bounded: a client that stopped reading must not hold the handler here.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                match reply {
                    Some(close) => socket.send(close).await,
                    None => socket.flush().await,
                }
            })
            .await;
        }
        Err(disconnect.into())
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
    /// # Errors
    /// [`Error::Disconnected`] if the connection is gone; the state errors when there is no open
    /// connection.
    pub async fn send_text(&mut self, text: impl Into<Utf8Bytes>) -> Result<()> {
        self.send(ws::Message::Text(text.into()), "send a text message")
            .await
    }

    /// Sends a binary message. Takes a `Vec<u8>` or `Bytes` without copying it.
    ///
    /// # Errors
    /// As [`send_text`](Self::send_text).
    pub async fn send_bytes(&mut self, bytes: impl Into<Bytes>) -> Result<()> {
        self.send(ws::Message::Binary(bytes.into()), "send a binary message")
            .await
    }

    /// Serializes `value` to JSON and sends it as a text message.
    ///
    /// # Errors
    /// [`Error::Serialize`] (nothing sent) if `value` cannot be serialized, otherwise as
    /// [`send_text`](Self::send_text).
    pub async fn send_json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let json = serde_json::to_string(value).map_err(Error::Serialize)?;
        self.send(ws::Message::Text(json.into()), "send a JSON message")
            .await
    }

    async fn send(&mut self, message: ws::Message, operation: &'static str) -> Result<()> {
        let socket = self.socket(operation)?;
        match socket.send(message).await {
            Ok(()) => Ok(()),
            Err(error) => Err(self.disconnected(WebSocketDisconnect::abnormal(error))),
        }
    }

    // --- Closing -------------------------------------------------------------------------------

    /// Closes with `code` and no reason. Before `accept`, this rejects the handshake with
    /// `403 Forbidden` instead (what Starlette-based servers do).
    ///
    /// `code` is a [`CloseCode`] or a `u16` (`ws.close(4001)`); a code that may not be sent is
    /// an error and nothing is sent.
    ///
    /// # Errors
    /// [`Error::InvalidCloseCode`]; [`Error::Disconnected`] if the client is already gone;
    /// [`Error::Closed`] or [`Error::Rejected`] if this handler already ended the connection.
    pub async fn close<C>(&mut self, code: C) -> Result<()>
    where
        C: TryInto<CloseCode>,
        Error: From<C::Error>,
    {
        self.close_with(code, "").await
    }

    /// Closes with `code` and a `reason` (cut to the 123 bytes a close frame can carry).
    /// Before `accept`, this rejects the handshake with `403 Forbidden`.
    ///
    /// # Errors
    /// As [`close`](Self::close).
    pub async fn close_with<C>(&mut self, code: C, reason: &str) -> Result<()>
    where
        C: TryInto<CloseCode>,
        Error: From<C::Error>,
    {
        const OPERATION: &str = "close the WebSocket";
        let code = code.try_into()?;
        match mem::replace(&mut self.state, State::Rejected) {
            State::Pending { decision, socket } => {
                self.state = State::Pending { decision, socket };
                self.reject(rejected_by_close(code, reason), OPERATION)
            }
            State::Open(mut socket) => {
                let frame = CloseFrame {
                    code: code.as_u16(),
                    reason: truncate_reason(reason).into(),
                };
                // Until the frame is out the connection is neither open nor closing: if this
                // future is dropped half-way, the socket stays in this state.
                self.state = State::Disconnected(WebSocketDisconnect::abnormal(
                    "the close was abandoned (the `close` future was dropped)",
                ));
                match socket.send(ws::Message::Close(Some(frame))).await {
                    Ok(()) => {
                        self.state = State::Closing(socket);
                        Ok(())
                    }
                    Err(error) => Err(self.disconnected(WebSocketDisconnect::abnormal(error))),
                }
            }
            other => Err(self.restore_and_refuse(other, OPERATION)),
        }
    }

    // --- State ---------------------------------------------------------------------------------

    fn socket(&mut self, operation: &'static str) -> Result<&mut ws::WebSocket> {
        match &mut self.state {
            State::Open(socket) => Ok(socket),
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
        State::Pending { .. } => Error::NotAccepted { operation },
        State::Open(_) => Error::AlreadyAccepted { operation },
        State::Rejected => Error::Rejected { operation },
        State::Closing(_) => Error::Closed { operation },
        State::Disconnected(disconnect) => disconnect.clone().into(),
    }
}

/// The close code for a receive error caused by what the client sent, if it was one.
fn protocol_violation(error: &axum::Error) -> Option<CloseCode> {
    use std::error::Error as _;
    use tungstenite::error::{Error as Tungstenite, ProtocolError};

    match error.source()?.downcast_ref::<Tungstenite>()? {
        Tungstenite::Utf8(_) => Some(CloseCode::INVALID_PAYLOAD),
        Tungstenite::Capacity(_) => Some(CloseCode::MESSAGE_TOO_BIG),
        Tungstenite::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        Tungstenite::Protocol(_) => Some(CloseCode::PROTOCOL_ERROR),
        _ => None,
    }
}

impl Drop for WebSocket {
    /// Hands the connection back to Tachyon, which sends the close frame the handler's outcome
    /// calls for (1000 on success, 1011 on error or panic) and completes the close handshake.
    fn drop(&mut self) {
        let ended = match mem::replace(&mut self.state, State::Rejected) {
            State::Open(socket) => Ended::Open(socket),
            State::Closing(socket) => Ended::Closing(socket),
            State::Disconnected(disconnect) => Ended::Disconnected(disconnect),
            State::Pending { .. } | State::Rejected => return,
        };
        if let Some(sender) = self.ended.take() {
            if let Err(ended) = sender.send(ended) {
                // The handler already returned and this socket outlived it (it was moved into
                // another task): nobody waits for it, so it closes normally on its own.
                ended.close_detached();
            }
        }
    }
}
