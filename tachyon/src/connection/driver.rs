//! The driver: the one place that touches the socket after `accept`. It writes what the queue
//! holds (gathering everything queued into one write, see [`writer`](super::writer)), reads
//! one message ahead of the handler ([`reader`](super::reader)), answers pings, runs keepalive,
//! and carries out the close handshake.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::http::Uri;
use tokio::io::AsyncWrite;

use super::deflate::Agreed;
use super::direct::Io;
use super::frame::{self, Violation};
use super::keepalive::{Due, Keepalive};
use super::outcome::Outcome;
use super::read_ahead::{Filled, ReadAhead};
use super::reader::{Incoming, Reader};
use super::writer::Output;
use super::{Claim, Outbound, Polling, Shared, Unfinished};
use crate::close::CloseCode;
use crate::error::{DisconnectKind, WebSocketDisconnect};
use crate::metrics::Tally;
use crate::settings::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Messages flow both ways.
    Open,
    /// The server's close frame is out: read until the client's reply.
    Closing,
    /// The close handshake is complete (or the client's close is answered): send what is
    /// gathered, then drop the connection.
    Replying,
    /// The client broke the protocol: send the close, end the sending side, then read (and
    /// drop) whatever comes until the client closes its side.
    Failing,
    /// The connection is closed; the socket is dropped.
    Done,
}

/// An accepted connection's socket: the upgraded HTTP connection (locked if broadcasters write
/// into it too, see `direct.rs`), read through [`ReadAhead`].
pub(crate) type Socket = ReadAhead<Io>;

/// A control frame the driver sends before the queue.
#[derive(Debug)]
enum Control {
    Ping,
    Close(u16, String),
    /// A close with no code: the reply to a client's close that had none.
    EmptyClose,
}

/// Drives one connection's socket; see the module docs.
#[derive(Debug)]
pub(crate) struct Driver {
    socket: Option<Socket>,
    shared: Arc<Shared>,
    keepalive: Keepalive,
    reader: Reader,
    output: Output,
    /// The payload of the latest ping, to answer.
    pong: Option<Bytes>,
    /// A ping or a close to send before the queue.
    urgent: Option<Control>,
    /// Written since the last flush.
    unflushed: bool,
    /// The sending side is shut down (while failing).
    shut: bool,
    /// The driver claimed the socket for writing (see `direct.rs`).
    claimed: bool,
    phase: Phase,
    /// The close to send for the handler's outcome once its `WebSocket` is gone.
    finish: Option<(CloseCode, String)>,
    /// Whether a failed handler's error text goes to the client.
    expose_errors: bool,
    /// Messages and bytes counted, for the connection's metrics.
    tally: Tally,
}

impl Driver {
    pub(crate) fn new(
        socket: Socket,
        shared: Arc<Shared>,
        config: &Config,
        deflate: Option<Agreed>,
    ) -> Self {
        Self {
            socket: Some(socket),
            keepalive: Keepalive::new(config),
            reader: Reader::new(
                config.max_message_size,
                config.max_frame_size,
                deflate.map(|agreed| agreed.client_takeover),
            ),
            output: Output::new(config.write_buffer_size, deflate),
            tally: Tally::new(),
            pong: None,
            urgent: None,
            unflushed: false,
            shut: false,
            claimed: false,
            phase: Phase::Open,
            finish: None,
            expose_errors: config.expose_errors,
            shared,
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
            if self.urgent.is_none() && self.pong.is_none() {
                break;
            }
        }
        self.tally.poll_flush(cx, self.shared.metrics());
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

    /// Gathers what is due and writes it, until the socket is full or nothing is left; then
    /// flushes once.
    fn write(&mut self, cx: &mut Context<'_>) -> Result<(), WebSocketDisconnect> {
        if self.socket.is_none() {
            return Ok(());
        }
        if !self.claimed {
            let pending = self.pong.is_some()
                || self.urgent.is_some()
                || !self.output.is_empty()
                || self.unflushed
                || self.phase == Phase::Replying
                || self.phase == Phase::Failing && !self.shut;
            if !self.claim(pending) {
                return Ok(());
            }
        }
        let Some(socket) = &mut self.socket else {
            return Ok(());
        };
        loop {
            while self.output.has_room() && self.phase != Phase::Done {
                if let Some(payload) = self.pong.take() {
                    if self.phase == Phase::Open {
                        self.output.push_control(frame::PONG, &payload);
                    }
                    continue;
                }
                if let Some(control) = self.urgent.take() {
                    match control {
                        Control::Ping => self.output.push_control(frame::PING, &[]),
                        Control::Close(code, reason) => {
                            let payload = frame::close_payload(code, &reason);
                            self.output.push_control(frame::CLOSE, &payload);
                        }
                        Control::EmptyClose => self.output.push_control(frame::CLOSE, &[]),
                    }
                    continue;
                }
                if self.phase != Phase::Open {
                    break;
                }
                match self.shared.pop() {
                    None => break,
                    Some(Outbound::Message(message) | Outbound::Replay(message)) => {
                        self.tally.message_sent();
                        self.output.push_message(&message);
                    }
                    Some(Outbound::Prepared(prepared)) => {
                        self.tally.message_sent();
                        self.output.push_prepared(&prepared);
                    }
                    Some(Outbound::Close(code, reason)) => {
                        let payload = frame::close_payload(code.as_u16(), &reason);
                        self.output.push_control(frame::CLOSE, &payload);
                        self.phase = Phase::Closing;
                        self.keepalive.closing();
                    }
                }
            }
            if self.output.is_empty() {
                break;
            }
            let written = self.output.poll_write(socket, cx);
            self.tally.bytes_sent(self.output.take_written());
            match written {
                Poll::Ready(Ok(())) => self.unflushed = true,
                Poll::Ready(Err(error)) => return Err(WebSocketDisconnect::lost(error)),
                Poll::Pending => break,
            }
        }
        if self.unflushed {
            match Pin::new(&mut *socket).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(error)) => return Err(WebSocketDisconnect::lost(error)),
                Poll::Pending => return Ok(()),
            }
        }
        if !self.output.is_empty() {
            return Ok(());
        }
        self.output.release();
        if self.phase == Phase::Open && self.shared.release_writer() {
            self.claimed = false;
        }
        match self.phase {
            Phase::Replying => self.stop(WebSocketDisconnect::lost("closed")),
            Phase::Failing if !self.shut => match Pin::new(&mut *socket).poll_shutdown(cx) {
                Poll::Ready(Ok(())) => self.shut = true,
                Poll::Ready(Err(error)) => return Err(WebSocketDisconnect::lost(error)),
                Poll::Pending => {}
            },
            _ => {}
        }
        Ok(())
    }

    /// Claims the socket for writing if `pending` or anything waits (see `direct.rs`); what a
    /// broadcaster left of its write goes into the output first, before anything of the
    /// driver's. Nothing goes into the output before the claim.
    fn claim(&mut self, pending: bool) -> bool {
        let Claim::Claimed { unfinished } = self.shared.claim_writer(pending) else {
            return false;
        };
        self.claimed = true;
        match unfinished.map(|unfinished| *unfinished) {
            Some(Unfinished::Rest(rest)) => self.output.push_bytes(rest),
            Some(Unfinished::Flush) => self.unflushed = true,
            None => {}
        }
        true
    }

    /// Reads while the handler has room for a message (one read ahead); while closing, reads
    /// until the client's reply whatever the handler left unread (data is dropped then).
    fn read(&mut self, cx: &mut Context<'_>) -> Result<(), WebSocketDisconnect> {
        while match self.phase {
            Phase::Open => !self.shared.inbox_full(),
            Phase::Closing | Phase::Failing => true,
            Phase::Replying | Phase::Done => false,
        } {
            let Some(socket) = &mut self.socket else {
                return Ok(());
            };
            let failing = self.phase == Phase::Failing;
            let reader = &mut self.reader;
            let mut incoming = None;
            let tally = &mut self.tally;
            let filled = socket.poll_fill(cx, |bytes| {
                if failing {
                    // The reader gave up at the violation: nothing more is read.
                    tally.bytes_received(bytes.len());
                    return bytes.len();
                }
                let (used, got) = reader.read(bytes);
                tally.bytes_received(used);
                incoming = got;
                used
            });
            match filled {
                Poll::Pending => return Ok(()),
                Poll::Ready(Err(error)) => return Err(WebSocketDisconnect::lost(error)),
                Poll::Ready(Ok(Filled::End)) if failing => {
                    self.stop(WebSocketDisconnect::lost("closed"));
                    return Ok(());
                }
                Poll::Ready(Ok(Filled::End)) => {
                    return Err(WebSocketDisconnect::lost(
                        "the connection closed without a close frame",
                    ));
                }
                Poll::Ready(Ok(Filled::Bytes)) => {}
            }
            match incoming {
                None => {}
                Some(Ok(incoming)) => self.incoming(incoming, cx),
                Some(Err(violation)) => self.violation(violation),
            }
        }
        Ok(())
    }

    fn incoming(&mut self, incoming: Incoming, cx: &Context<'_>) {
        self.keepalive
            .saw_frame(matches!(incoming, Incoming::Message(_)));
        match incoming {
            Incoming::Message(message) if self.phase == Phase::Open => {
                self.tally.message_received();
                self.shared.deliver(message, cx);
            }
            // A server closing ignores what still arrives before the client's reply.
            Incoming::Message(_) | Incoming::Pong => {}
            // Every ping is answered while the writer has room (Autobahn's 2.10 expects one
            // pong each); beyond that only the latest one is (RFC 6455 section 5.5.3 allows it),
            // so a client that pings and never reads holds at most one pong here.
            Incoming::Ping(payload) if self.phase == Phase::Open => {
                if !self.claimed {
                    self.claim(true);
                }
                // Room is known only after the claim: what a broadcaster left may fill it.
                if self.output.has_room() {
                    self.output.push_control(frame::PONG, &payload);
                } else {
                    self.pong = Some(payload);
                }
            }
            Incoming::Ping(payload) => self.pong = Some(payload),
            Incoming::Close(_) if self.phase != Phase::Open => {
                // The handshake is complete: what is gathered (our close, maybe) still goes.
                self.phase = Phase::Replying;
            }
            Incoming::Close(frame) => {
                let disconnect = match &frame {
                    Some((code, reason)) => {
                        WebSocketDisconnect::new(DisconnectKind::ClientClosed, *code, reason)
                    }
                    None => WebSocketDisconnect::new(
                        DisconnectKind::ClientClosed,
                        WebSocketDisconnect::NO_STATUS_RECEIVED,
                        "",
                    ),
                };
                self.shared.end(disconnect, false);
                // The reply echoes the client's code.
                self.urgent = Some(match frame {
                    Some((code, _)) => Control::Close(code, String::new()),
                    None => Control::EmptyClose,
                });
                self.pong = None;
                self.phase = Phase::Replying;
                self.keepalive.closing();
            }
        }
    }

    /// The client broke the protocol: it is told why, with the matching code, and the
    /// connection fails (RFC 6455 section 7.1.7).
    fn violation(&mut self, violation: Violation) {
        let Violation { code, kind, reason } = violation;
        self.shared
            .end(WebSocketDisconnect::new(kind, code.as_u16(), reason), false);
        if self.phase == Phase::Open {
            self.urgent = Some(Control::Close(code.as_u16(), reason.to_owned()));
        }
        self.pong = None;
        self.phase = Phase::Failing;
        self.keepalive.closing();
    }

    fn clock(&mut self, cx: &mut Context<'_>) -> Result<(), WebSocketDisconnect> {
        let reading_paused = self.phase == Phase::Open && self.shared.inbox_full();
        match self.keepalive.poll(cx, reading_paused) {
            None => {}
            Some(Due::Ping) if self.phase == Phase::Open && self.urgent.is_none() => {
                self.urgent = Some(Control::Ping);
                self.keepalive.pinged();
            }
            Some(Due::Ping) => {}
            Some(Due::KeepaliveTimeout) => {
                self.shared.metrics().keepalive_timeout();
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
        self.tally.flush(self.shared.metrics());
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

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::collections::VecDeque;
    use std::io;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex, OnceLock, Weak};
    use std::task::{Context, Poll, Waker};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use super::Driver;
    use crate::connection::direct::{Direct, Io, Locked};
    use crate::connection::read_ahead::ReadAhead;
    use crate::connection::{ConnectionId, Prepared, Shared};
    use crate::message::Message;
    use crate::metrics::{self, ConnectionMetrics};
    use crate::settings::Settings;

    /// One end of a connection whose bytes, from the driver and from a broadcaster alike, go
    /// into `wire`, as they would into one socket. The driver's end reads `input`; the first
    /// time it reads, `meanwhile` runs first, as a broadcaster on another thread could.
    struct End {
        wire: Arc<Mutex<Vec<u8>>>,
        takes: usize,
        input: VecDeque<u8>,
        meanwhile: Option<Box<dyn FnOnce() + Send>>,
    }

    impl AsyncRead for End {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(meanwhile) = self.meanwhile.take() {
                meanwhile();
            }
            if self.input.is_empty() {
                return Poll::Pending;
            }
            let n = buf.remaining().min(self.input.len());
            let bytes: Vec<u8> = self.input.drain(..n).collect();
            buf.put_slice(&bytes);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for End {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.takes);
            self.wire.lock().expect("lock").extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn the_end_of_a_frame_a_broadcaster_wrote_in_part_goes_before_a_pong() {
        // The client's ping is empty, masked with zeros; the pong is empty.
        let wire = after_a_broadcast_written_in_part("hello", &[0x89, 0x80, 0, 0, 0, 0]);
        assert_eq!(
            wire,
            [0x81, 5, b'h', b'e', b'l', b'l', b'o', 0x8a, 0],
            "the frame whole, then the pong"
        );
    }

    #[tokio::test]
    async fn the_end_of_a_frame_a_broadcaster_wrote_in_part_goes_before_the_closing_handshake() {
        // The client closes with 1000, masked with zeros; the reply echoes the code.
        let wire =
            after_a_broadcast_written_in_part("hello", &[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);
        assert_eq!(
            wire,
            [0x81, 5, b'h', b'e', b'l', b'l', b'o', 0x88, 2, 0x03, 0xe8],
            "the frame whole, then the close"
        );
    }

    #[tokio::test]
    async fn the_end_of_a_frame_too_large_to_gather_goes_before_a_pong() {
        // The 201 bytes left are written from their own buffer, not gathered with the pong
        // (gathering stops at 135 bytes here): the pong still waits for them.
        let message = "x".repeat(200);
        let wire = after_a_broadcast_written_in_part(&message, &[0x89, 0x80, 0, 0, 0, 0]);
        let mut expected = vec![0x81, 126, 0, 200];
        expected.extend_from_slice(message.as_bytes());
        expected.extend_from_slice(&[0x8a, 0]);
        assert!(wire == expected, "the frame whole, then the pong");
    }

    /// What a driver writes when, while it reads `client` (the client's frames), a broadcast
    /// of `message` goes straight in, in part (3 bytes): everything on the wire, in order.
    /// Its output gathers as little as it can (135 bytes: a control frame's most).
    fn after_a_broadcast_written_in_part(message: &str, client: &[u8]) -> Vec<u8> {
        let wire = Arc::new(Mutex::new(Vec::new()));
        let config = Settings::new().write_buffer_size(1).resolve();
        // The broadcaster's end takes 3 bytes of a write, the driver's all of it.
        let broadcaster: Locked = Arc::new(Mutex::new(End {
            wire: Arc::clone(&wire),
            takes: 3,
            input: VecDeque::new(),
            meanwhile: None,
        }));
        let shared = Shared::new(
            &config,
            ConnectionId::next(),
            Some(Direct::Locked(broadcaster)),
            None,
            ConnectionMetrics::new("/test"),
        );
        // While the driver reads, the broadcast goes in, in part.
        let slot: Arc<OnceLock<Weak<Shared>>> = Arc::new(OnceLock::new());
        let message = message.to_owned();
        let meanwhile = {
            let slot = Arc::clone(&slot);
            move || {
                let shared = slot.get().and_then(Weak::upgrade).expect("the connection");
                let prepared = Arc::new(Prepared::new(Message::Text(message.into())));
                shared
                    .try_send_prepared(&prepared, &mut metrics::Direct::new())
                    .expect("written in part");
            }
        };
        let own: Locked = Arc::new(Mutex::new(End {
            wire: Arc::clone(&wire),
            takes: usize::MAX,
            input: client.iter().copied().collect(),
            meanwhile: Some(Box::new(meanwhile)),
        }));
        slot.set(Arc::downgrade(&shared)).expect("set once");
        let mut driver = Driver::new(
            ReadAhead::new(Io::Locked(own)),
            Arc::clone(&shared),
            &config,
            None,
        );
        let mut cx = Context::from_waker(Waker::noop());
        let _ = driver.poll_drive(&mut cx);
        wire.lock().expect("lock").clone()
    }
}
