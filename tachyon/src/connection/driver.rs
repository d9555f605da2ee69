//! The driver: the one place that touches the socket after `accept`. It writes what the queue
//! holds (feeding everything queued, then flushing once), reads one message ahead of the
//! handler, answers pings, runs keepalive, and carries out the close handshake.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::http::Uri;
use futures_util::{Sink, Stream};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message as WireMessage;
use tungstenite::protocol::CloseFrame;

use super::keepalive::{Due, Keepalive};
use super::outcome::Outcome;
use super::read_ahead::ReadAhead;
use super::{Outbound, Polling, Shared};
use crate::close::{CloseCode, truncate_reason};
use crate::error::{DisconnectKind, WebSocketDisconnect};
use crate::message::{Message, from_wire_text};
use crate::settings::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Messages flow both ways.
    Open,
    /// The server's close frame is out: read until the client's reply.
    Closing,
    /// The client closed: send the reply tungstenite queued, then stop.
    Replying,
    /// The connection is closed; the socket is dropped.
    Done,
}

/// An accepted connection's socket: tungstenite over the upgraded HTTP connection, read through
/// [`ReadAhead`].
pub(crate) type Socket = WebSocketStream<ReadAhead<TokioIo<Upgraded>>>;

/// Drives one connection's socket; see the module docs.
#[derive(Debug)]
pub(crate) struct Driver {
    socket: Option<Socket>,
    shared: Arc<Shared>,
    keepalive: Keepalive,
    /// A control frame to send before the queue: a ping, or the close for a protocol violation.
    urgent: Option<WireMessage>,
    /// Taken from the queue, waiting for the socket to accept it.
    pending: Option<Outbound>,
    unflushed: bool,
    phase: Phase,
    /// The close to send for the handler's outcome once its `WebSocket` is gone.
    finish: Option<(CloseCode, String)>,
    /// Whether a failed handler's error text goes to the client.
    expose_errors: bool,
}

impl Driver {
    pub(crate) fn new(socket: Socket, shared: Arc<Shared>, config: &Config) -> Self {
        Self {
            socket: Some(socket),
            shared,
            keepalive: Keepalive::new(config),
            urgent: None,
            pending: None,
            unflushed: false,
            phase: Phase::Open,
            finish: None,
            expose_errors: config.expose_errors,
        }
    }

    /// Drives the socket as far as it goes; `Ready` once the connection is closed.
    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.phase == Phase::Done {
            return Poll::Ready(());
        }
        self.shared.driver.register(cx.waker());
        if let Some((code, reason)) = &self.finish {
            if !self.shared.socket_alive() {
                let disconnect =
                    WebSocketDisconnect::new(DisconnectKind::ClosedByServer, code.as_u16(), reason);
                self.shared.close(*code, reason, disconnect);
                self.finish = None;
            }
        }
        for _ in 0..4 {
            if let Err(disconnect) = self.step(cx) {
                self.stop(disconnect);
            }
            if self.phase == Phase::Done {
                return Poll::Ready(());
            }
            // Another round only if reading or the clock gave the writer something to do.
            if self.urgent.is_none() && !self.unflushed {
                break;
            }
        }
        Poll::Pending
    }

    fn step(&mut self, cx: &mut Context<'_>) -> Result<(), WebSocketDisconnect> {
        if self.phase == Phase::Open && self.shared.is_ending() {
            self.keepalive.closing();
        }
        self.write(cx)?;
        self.read(cx)?;
        if self.phase == Phase::Done {
            return Ok(());
        }
        self.clock(cx)?;
        self.write(cx)
    }

    /// Sends what is due, then flushes once.
    fn write(&mut self, cx: &mut Context<'_>) -> Result<(), WebSocketDisconnect> {
        let Some(socket) = &mut self.socket else {
            return Ok(());
        };
        loop {
            if self.pending.is_none() {
                self.pending = match self.urgent.take() {
                    Some(control) => Some(Outbound::Control(control)),
                    None if self.phase == Phase::Open => self.shared.pop(),
                    None => None,
                };
            }
            let Some(next) = self.pending.take() else {
                break;
            };
            match Pin::new(&mut *socket).poll_ready(cx) {
                Poll::Pending => {
                    self.pending = Some(next);
                    break;
                }
                Poll::Ready(Err(error)) => return Err(WebSocketDisconnect::lost(error)),
                Poll::Ready(Ok(())) => {}
            }
            let message = match next {
                Outbound::Message(message) | Outbound::Replay(message) => message.into_wire(),
                Outbound::Control(control) => control,
                Outbound::Close(frame) => {
                    self.phase = Phase::Closing;
                    self.keepalive.closing();
                    WireMessage::Close(Some(frame))
                }
            };
            Pin::new(&mut *socket)
                .start_send(message)
                .map_err(WebSocketDisconnect::lost)?;
            self.unflushed = true;
            if self.phase != Phase::Open {
                break;
            }
        }
        if self.unflushed {
            match Pin::new(&mut *socket).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.unflushed = false;
                    if self.phase == Phase::Replying {
                        self.stop(WebSocketDisconnect::lost("closed"));
                    }
                }
                Poll::Ready(Err(error)) => return Err(WebSocketDisconnect::lost(error)),
                Poll::Pending => {}
            }
        }
        Ok(())
    }

    /// Reads while the handler has room for a message (one read ahead); while closing, reads
    /// until the client's reply whatever the handler left unread (data is dropped then).
    fn read(&mut self, cx: &mut Context<'_>) -> Result<(), WebSocketDisconnect> {
        while match self.phase {
            Phase::Open => !self.shared.inbox_full(),
            Phase::Closing => true,
            Phase::Replying | Phase::Done => false,
        } {
            let Some(socket) = &mut self.socket else {
                return Ok(());
            };
            let message = match Pin::new(&mut *socket).poll_next(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(None) => {
                    return Err(WebSocketDisconnect::lost(
                        "the connection closed without a close frame",
                    ));
                }
                Poll::Ready(Some(Err(error))) => return self.violation(&error),
                Poll::Ready(Some(Ok(message))) => message,
            };
            let data = matches!(message, WireMessage::Text(_) | WireMessage::Binary(_));
            self.keepalive.saw_frame(data);
            match message {
                WireMessage::Text(text) if self.phase == Phase::Open => {
                    match from_wire_text(text) {
                        Ok(text) => self.shared.deliver(Message::Text(text), cx),
                        Err(error) => return self.violation(&error),
                    }
                }
                WireMessage::Binary(bytes) if self.phase == Phase::Open => {
                    self.shared.deliver(Message::Binary(bytes), cx);
                }
                // A server closing ignores what still arrives before the client's reply; raw
                // frames come only from writing them.
                WireMessage::Text(_)
                | WireMessage::Binary(_)
                | WireMessage::Pong(_)
                | WireMessage::Frame(_) => {}
                // tungstenite queued the pong: the next flush sends it.
                WireMessage::Ping(_) => self.unflushed = true,
                WireMessage::Close(_) if self.phase == Phase::Closing => {
                    self.stop(WebSocketDisconnect::lost("closed"));
                }
                WireMessage::Close(frame) => {
                    let disconnect = match frame {
                        Some(CloseFrame { code, reason }) => WebSocketDisconnect::new(
                            DisconnectKind::ClientClosed,
                            code.into(),
                            reason.as_str(),
                        ),
                        None => WebSocketDisconnect::new(
                            DisconnectKind::ClientClosed,
                            WebSocketDisconnect::NO_STATUS_RECEIVED,
                            "",
                        ),
                    };
                    self.shared.end(disconnect, false);
                    // tungstenite queued the close reply: flushing sends it.
                    self.phase = Phase::Replying;
                    self.pending = None;
                    self.unflushed = true;
                    self.keepalive.closing();
                }
            }
        }
        Ok(())
    }

    /// A read error: a client that broke the protocol is told why, with the matching code.
    fn violation(&mut self, error: &tungstenite::Error) -> Result<(), WebSocketDisconnect> {
        let Some((code, kind)) = protocol_violation(error) else {
            return Err(WebSocketDisconnect::lost(error));
        };
        let reason = error.to_string();
        let frame = CloseFrame {
            code: code.as_u16().into(),
            reason: truncate_reason(&reason).into(),
        };
        self.shared
            .end(WebSocketDisconnect::new(kind, code.as_u16(), reason), false);
        self.pending = None;
        self.urgent = Some(WireMessage::Close(Some(frame)));
        self.phase = Phase::Closing;
        self.keepalive.closing();
        Ok(())
    }

    fn clock(&mut self, cx: &mut Context<'_>) -> Result<(), WebSocketDisconnect> {
        let reading_paused = self.phase == Phase::Open && self.shared.inbox_full();
        match self.keepalive.poll(cx, reading_paused) {
            None => {}
            Some(Due::Ping) if self.phase == Phase::Open && self.urgent.is_none() => {
                self.urgent = Some(WireMessage::Ping(Bytes::new()));
                self.keepalive.pinged();
            }
            Some(Due::Ping) => {}
            Some(Due::KeepaliveTimeout) => {
                let reason = "keepalive timeout: the client answered no ping";
                let code = CloseCode::INTERNAL_ERROR;
                let disconnect = WebSocketDisconnect::new(
                    DisconnectKind::KeepaliveTimeout,
                    code.as_u16(),
                    reason,
                );
                self.shared.close(code, reason, disconnect);
                self.keepalive.closing();
            }
            Some(Due::IdleTimeout) => {
                let reason = "idle timeout: the client sent no message";
                let code = CloseCode::GOING_AWAY;
                let disconnect =
                    WebSocketDisconnect::new(DisconnectKind::IdleTimeout, code.as_u16(), reason);
                self.shared.close(code, reason, disconnect);
                self.keepalive.closing();
            }
            Some(Due::CloseTimeout) => {
                return Err(WebSocketDisconnect::lost(
                    "the close did not complete in time (the client stopped reading or answering)",
                ));
            }
        }
        Ok(())
    }

    /// The connection is over: drop the socket and tell everyone.
    fn stop(&mut self, disconnect: WebSocketDisconnect) {
        self.phase = Phase::Done;
        self.socket = None;
        self.shared.end(disconnect, true);
    }
}

impl Drop for Driver {
    /// A driver dropped before the connection closed (shutdown's deadline passed): the
    /// connection ends here.
    fn drop(&mut self) {
        if self.phase != Phase::Done {
            self.stop(WebSocketDisconnect::lost(
                "the server dropped the connection",
            ));
        }
    }
}

/// The close code and kind for a read error caused by what the client sent, if it was one.
fn protocol_violation(error: &tungstenite::Error) -> Option<(CloseCode, DisconnectKind)> {
    use tungstenite::error::{Error as Tungstenite, ProtocolError};

    match error {
        Tungstenite::Utf8(_) => Some((
            CloseCode::INVALID_PAYLOAD,
            DisconnectKind::ProtocolViolation,
        )),
        Tungstenite::Capacity(_) => {
            Some((CloseCode::MESSAGE_TOO_BIG, DisconnectKind::MessageTooBig))
        }
        Tungstenite::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        Tungstenite::Protocol(_) => {
            Some((CloseCode::PROTOCOL_ERROR, DisconnectKind::ProtocolViolation))
        }
        _ => None,
    }
}

/// Runs a handler and its connection's driver in one task, until both are done: the handler
/// returns (or its socket, moved elsewhere, is dropped) and the close handshake completes or
/// times out.
/// `guard` is dropped with the connection (a shutdown registration).
pub(crate) fn run<H, G>(handler: H, driver: Driver, uri: Uri, guard: G) -> Run<H, G>
where
    H: Future<Output = Outcome>,
{
    Run {
        handler: Some(Box::pin(handler)),
        driver,
        uri,
        _guard: guard,
    }
}

/// The future of [`run`].
pub(crate) struct Run<H, G> {
    handler: Option<Pin<Box<H>>>,
    driver: Driver,
    uri: Uri,
    _guard: G,
}

// The handler is boxed and the guard is never pinned: nothing in `Run` relies on staying put.
impl<H, G> Unpin for Run<H, G> {}

impl<H: Future<Output = Outcome>, G> Future for Run<H, G> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.driver.shared.aborted() {
            return Poll::Ready(());
        }
        loop {
            let driven = this.driver.poll_drive(cx);
            let Some(handler) = &mut this.handler else {
                return driven;
            };
            let polling = Polling::enter(&this.driver.shared);
            let result = handler.as_mut().poll(cx);
            let kicked = polling.kicked();
            drop(polling);
            if let Poll::Ready(outcome) = result {
                this.handler = None;
                let gone = this.driver.shared.ending();
                outcome.log(&this.uri, gone.as_ref());
                this.driver.finish = Some(outcome.close_frame(this.driver.expose_errors));
                // The socket may still be alive elsewhere: it then closes normally once dropped.
                if this.driver.shared.socket_alive() {
                    this.driver.finish = Some((CloseCode::NORMAL, String::new()));
                }
                continue;
            }
            if !kicked || driven.is_ready() {
                return Poll::Pending;
            }
        }
    }
}
