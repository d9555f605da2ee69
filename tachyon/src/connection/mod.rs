//! The life of an accepted connection: the state its [`WebSocket`](crate::WebSocket), its
//! [`Sender`](crate::Sender)s and its driver share ([`Shared`]), the [`driver`] that does the
//! I/O, [`keepalive`], and the [`outcome`] policy that closes it when the handler ends.
//!
//! The driver runs in the same task as the handler ([`run`]): no extra task, and no cross-task
//! wake-up per message, yet messages queued by any task leave while the handler is busy
//! elsewhere. Outbound messages wait in a queue bounded in messages and in bytes; inbound,
//! one message is read ahead of the handler.
//!
//! The WebSocket protocol itself is Tachyon's own (RFC 6455 and 7692), in small modules: the
//! frame format ([`frame`]), the reader (frames parsed in place in the thread's read buffer,
//! [`read_ahead`]; text checked for UTF-8 once as it arrives, [`utf8`]), the writer (queued
//! frames gathered into one write; a broadcast framed once, [`writer`]), permessage-deflate
//! ([`deflate`]) and broadcasts written straight into idle sockets ([`direct`], whose docs state
//! the one rule that keeps two writers apart).
//!
//! # Two wake-ups that are skipped, and why that is sound
//!
//! [`run`] polls the driver, then the handler, in one loop, with the task's one waker. Two
//! wake-ups would only make the scheduler poll that task again for work the loop is about to
//! do, so they are skipped. On the echo benchmark (32 B, `--rounds 3`, this project's 2-core
//! machine), each saves about a tenth of the server's CPU per message, both together about a
//! third (Tachyon's CPU per message against raw axum's: 0.58 × with both, 0.64 × without either
//! one, 0.84 × without both).
//!
//! - **The handler queues for its own driver** (`Shared::wake_driver`). While `run` polls a
//!   handler, the thread-local `POLLING` names that connection; a send queued during that poll
//!   only sets `KICKED`, and `run` polls the driver once more before it returns `Pending`. Any
//!   other sender (another task, another thread, this handler polled anywhere but inside `run`)
//!   finds another address in `POLLING` and wakes the driver's waker as usual. `Polling` puts
//!   the previous value back when the poll ends, so a handler that polls another connection's
//!   `run` inside its own still wakes the right driver.
//! - **The driver hands a message to its own handler** (`Shared::deliver`). The handler's
//!   waker is woken unless it `will_wake` the waker the driver is being polled with: that is
//!   the same task, and `run` polls the handler right after the driver. A handler whose
//!   `WebSocket` was moved into another task registered that task's waker, which is woken.
//!
//! Nothing else is skipped. A handler that calls `tokio::task::yield_now()` wakes its own task
//! and returns `Pending`; `run` returns `Pending` too (nothing was kicked), and the scheduler
//! polls the task again later, driver first, as after any other wake-up. A receive that finds
//! the task's cooperative budget spent does the same (`Shared::poll_receive`): every message
//! received takes a unit of it, so a handler that receives and broadcasts in a loop yields
//! after tokio's budget of messages.

mod copy;
pub(crate) mod deflate;
pub(crate) mod direct;
pub(crate) mod driver;
mod frame;
mod keepalive;
pub(crate) mod outcome;
pub(crate) mod read_ahead;
mod reader;
mod utf8;
pub(crate) mod writer;

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker, ready};

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::close::{CloseCode, truncate_reason};
use crate::error::{Error, TrySendError, WebSocketDisconnect};
use crate::message::Message;
use crate::metrics::{self, ConnectionMetrics};
use crate::settings::Config;

use deflate::Agreed;
pub(crate) use driver::run;
pub(crate) use writer::Prepared;

/// A connection's identity: unique across the processes of a cluster, stable for the
/// connection's life, displayable (`conn-9f3c01ab45d2e7f0-42`: the process, then the
/// connection's number in it) and parsed back from that text with [`str::parse`].
///
/// The process part is 64 bits drawn at random when the process starts, so ids from the
/// servers of a [Redis-backed `Rooms`](crate::Rooms) do not collide and say which process holds
/// the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId {
    process: u64,
    number: u64,
}

impl ConnectionId {
    /// A new id, never given before in this process.
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self {
            process: this_process(),
            number: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The connection's number in its process (unique in the process only: across a cluster,
    /// compare whole ids).
    pub fn as_u64(self) -> u64 {
        self.number
    }

    /// Whether the connection is held by this process.
    pub fn is_local(self) -> bool {
        self.process == this_process()
    }

    #[cfg_attr(not(any(feature = "redis", test)), allow(dead_code))]
    pub(crate) fn process(self) -> u64 {
        self.process
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn from_parts(process: u64, number: u64) -> Self {
        Self { process, number }
    }
}

/// This process's part of every [`ConnectionId`]: random, drawn once.
pub(crate) fn this_process() -> u64 {
    use std::sync::OnceLock;
    static PROCESS: OnceLock<u64> = OnceLock::new();
    *PROCESS.get_or_init(random_u64)
}

/// 64 random bits: `RandomState` is seeded from the operating system's randomness (no extra
/// dependency), mixed with a counter, the process id and the time.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static DRAWN: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(DRAWN.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    if let Ok(elapsed) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(elapsed.as_nanos());
    }
    hasher.finish()
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn-{:016x}-{}", self.process, self.number)
    }
}

/// The text given to [`ConnectionId`]'s `FromStr` was not an id (`conn-9f3c01ab45d2e7f0-42`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a connection id: expected `conn-<16 hex digits>-<number>`, like `conn-9f3c01ab45d2e7f0-42`"
)]
pub struct InvalidConnectionId(String);

impl std::str::FromStr for ConnectionId {
    type Err = InvalidConnectionId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidConnectionId(text.to_owned());
        let rest = text.strip_prefix("conn-").ok_or_else(invalid)?;
        let (process, number) = rest.split_once('-').ok_or_else(invalid)?;
        if process.len() != 16 {
            return Err(invalid());
        }
        Ok(Self {
            process: u64::from_str_radix(process, 16).map_err(|_| invalid())?,
            number: number.parse().map_err(|_| invalid())?,
        })
    }
}

/// What the driver sends, in the order it was queued.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Framed (and compressed, if agreed) by the driver, outside the lock.
    Message(Message),
    /// A broadcast's message, framed and compressed once for all its members.
    Prepared(Arc<Prepared>),
    /// A room's replay to a member that resumes: sent like a message, but outside the queue's
    /// bounds ([`Shared::queue_replay`]).
    Replay(Message),
    /// The close frame: its code and reason (cut to fit).
    Close(CloseCode, String),
}

impl Outbound {
    /// The bytes it counts for in the queue's bounds.
    fn len(&self) -> usize {
        match self {
            Self::Message(message) => message.len(),
            Self::Prepared(prepared) => prepared.message().len(),
            Self::Replay(_) | Self::Close(..) => 0,
        }
    }
}

/// What a broadcaster left of its write into the socket (`direct.rs`).
#[derive(Debug)]
pub(crate) enum Unfinished {
    /// The end of the frame, which the socket did not take.
    Rest(axum::body::Bytes),
    /// The whole frame went in, but the IO may still hold some of it (TLS): it needs a flush.
    Flush,
}

/// The answer to the driver's claim of the socket ([`Shared::claim_writer`]).
#[derive(Debug)]
pub(crate) enum Claim {
    /// Nothing to write: the socket stays free for broadcasters.
    Declined,
    /// The driver writes now, starting with what a broadcaster left unfinished.
    Claimed { unfinished: Option<Box<Unfinished>> },
}

/// A waker that wakes the connection's driver: what a broadcaster polls a locked IO with when
/// the IO cannot take its write at once (`direct.rs`), so that whatever the IO registered then
/// wakes the driver.
impl std::task::Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.driver.wake();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.driver.wake();
    }
}

/// The state of one connection, shared by its `WebSocket`, its senders and its driver. The lock
/// is never held across an `.await`; the only I/O done under it is a broadcaster's write
/// straight into the socket (`direct.rs`), which does not block.
#[derive(Debug)]
pub(crate) struct Shared {
    id: ConnectionId,
    /// What compression the connection agreed to: a broadcaster writing straight into the
    /// socket picks the frame by it.
    deflate: Option<Agreed>,
    queue_messages: usize,
    queue_bytes: usize,
    state: Mutex<State>,
    /// Wakes senders waiting for room in the queue, and `closed()` waiters.
    changed: Notify,
    driver: AtomicWaker,
    /// Its messages and bytes, counted (nothing without the `metrics` feature).
    metrics: ConnectionMetrics,
}

struct State {
    queue: VecDeque<Outbound>,
    /// The bytes of the messages in `queue`, replays left out.
    queued_bytes: usize,
    /// How many of the entries in `queue` are replays.
    replays: usize,
    /// A sender found the queue full and waits for room.
    blocked: bool,
    /// How a broadcaster writes into the connection, while it may (`direct.rs`).
    direct: Option<direct::Direct>,
    /// What a broadcaster left of a write into the socket, for the driver to finish before it
    /// writes anything else; broadcasters write nothing more in the meantime.
    /// Boxed: it is rare, and the state of every connection would otherwise hold its room.
    unfinished: Option<Box<Unfinished>>,
    /// The driver claimed the socket for writing: it has (or is about to have) bytes on their
    /// way, so nobody else writes into it.
    writing: bool,
    /// The handler poll (`GENERATION`) in which a broadcast last wrote straight into the
    /// socket: a second one in the same poll (a burst) is queued instead, to leave in one write.
    direct_generation: u64,
    /// The message read ahead of the handler.
    inbox: Option<Message>,
    reader: Option<Waker>,
    /// Set once nothing more may be sent: the close is queued, or the client is gone.
    ending: Option<WebSocketDisconnect>,
    /// The driver finished: the connection is closed.
    done: bool,
    /// The handler's `WebSocket` still exists.
    socket_alive: bool,
    /// Shutdown gave up waiting: drop the connection and its handler now.
    aborted: bool,
    /// Run once, when `ending` is first set (rooms use it to let the connection go).
    on_end: Vec<Box<dyn FnOnce(ConnectionId) + Send>>,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("queued", &self.queue.len())
            .field("queued_bytes", &self.queued_bytes)
            .field("inbox", &self.inbox.is_some())
            .field("ending", &self.ending)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// The connection whose handler this thread is polling inside [`run`], if any.
    static POLLING: Cell<usize> = const { Cell::new(0) };
    /// Whether that handler queued something for its driver while being polled.
    static KICKED: Cell<bool> = const { Cell::new(false) };
    /// The handler poll this thread is in (see `direct.rs`): broadcasts made in one poll share
    /// it. Unique across threads: each thread counts from a base of its own.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
}

impl Shared {
    /// `direct`: how broadcasters write into the connection, if they may; `deflate`: what the
    /// connection agreed to.
    pub(crate) fn new(
        config: &Config,
        id: ConnectionId,
        direct: Option<direct::Direct>,
        deflate: Option<Agreed>,
        metrics: ConnectionMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            // A connection that keeps its compression context writes every compressed frame
            // through its own compressor: never straight from a broadcaster.
            deflate,
            queue_messages: config.queue_messages,
            queue_bytes: config.queue_bytes,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued_bytes: 0,
                replays: 0,
                blocked: false,
                direct: direct.filter(|_| !deflate.is_some_and(|agreed| agreed.server_takeover)),
                unfinished: None,
                writing: false,
                direct_generation: 0,
                inbox: None,
                reader: None,
                ending: None,
                done: false,
                socket_alive: true,
                aborted: false,
                on_end: Vec::new(),
            }),
            changed: Notify::new(),
            driver: AtomicWaker::new(),
            metrics,
        })
    }

    pub(crate) fn id(&self) -> ConnectionId {
        self.id
    }

    pub(crate) fn metrics(&self) -> &ConnectionMetrics {
        &self.metrics
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the state is still whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn address(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Wakes the driver, unless its handler is being polled by [`run`] on this thread right now:
    /// then [`run`] polls the driver again before returning (see the module's docs).
    fn wake_driver(&self) {
        if POLLING.get() == self.address() {
            KICKED.set(true);
        } else {
            self.driver.wake();
        }
    }

    // --- Sending -------------------------------------------------------------------------------

    /// Queues `message` if there is room.
    pub(crate) fn try_send(&self, message: Message) -> Result<(), TrySendError> {
        let len = message.len();
        match self.room_for(len) {
            Ok(mut state) => {
                state.queued_bytes += len;
                state.queue.push_back(Outbound::Message(message));
            }
            Err(refused) => return Err(refused.into_error(message)),
        }
        self.wake_driver();
        Ok(())
    }

    /// Sends a broadcast's prepared message: straight into the socket when the connection
    /// is idle (nothing queued, the driver not writing; see `direct.rs`), else queued if there is
    /// room. The error carries a copy of the message (the bytes are shared).
    /// A message written straight in is counted in `direct`.
    pub(crate) fn try_send_prepared(
        self: &Arc<Self>,
        prepared: &Arc<Prepared>,
        direct: &mut metrics::Direct,
    ) -> Result<(), TrySendError> {
        let len = prepared.message().len();
        let mut state = match self.room_for(len) {
            Ok(state) => state,
            Err(refused) => return Err(refused.into_error(prepared.message().clone())),
        };
        let generation = generation();
        let idle = state.queue.is_empty() && state.unfinished.is_none() && !state.writing;
        if let Some(socket) = state.direct.as_ref().filter(|_| idle) {
            if state.direct_generation != generation {
                let frame = prepared.frame_for(self.deflate);
                match socket.try_write(&frame, || Waker::from(Arc::clone(self))) {
                    Ok(written) if written.bytes == frame.len() && !written.unflushed => {
                        state.direct_generation = generation;
                        drop(state);
                        direct.sent(&self.metrics, written.bytes);
                        return Ok(());
                    }
                    Ok(written) => {
                        direct.sent(&self.metrics, written.bytes);
                        state.unfinished = Some(Box::new(if written.bytes < frame.len() {
                            Unfinished::Rest(frame.slice(written.bytes..))
                        } else {
                            Unfinished::Flush
                        }));
                        drop(state);
                        self.wake_driver();
                        return Ok(());
                    }
                    // The socket is full (or failed, which the driver finds out): queued.
                    Err(_) => {}
                }
            }
        }
        state.queued_bytes += len;
        state
            .queue
            .push_back(Outbound::Prepared(Arc::clone(prepared)));
        drop(state);
        self.wake_driver();
        Ok(())
    }

    /// The locked state, if the queue has room for a message of `len` bytes.
    fn room_for(&self, len: usize) -> Result<MutexGuard<'_, State>, Refused> {
        let mut state = self.lock();
        if let Some(ending) = &state.ending {
            return Err(Refused::Closed(ending.clone()));
        }
        let full = state.queue.len() - state.replays >= self.queue_messages
            || (state.queued_bytes + len > self.queue_bytes && !state.queue.is_empty());
        if full {
            state.blocked = true;
            return Err(Refused::Full);
        }
        Ok(state)
    }

    /// Queues `messages` together, outside the queue's bounds: a room's replay to a member that
    /// resumes. The room's history bounds it already (so memory stays bounded); counted in the
    /// queue, a replay as long as the queue would get its member closed as too slow by the
    /// next live message. Returns `false`, having queued nothing, if the connection is ending.
    pub(crate) fn queue_replay(&self, messages: impl IntoIterator<Item = Message>) -> bool {
        {
            let mut state = self.lock();
            if state.ending.is_some() {
                return false;
            }
            for message in messages {
                state.replays += 1;
                state.queue.push_back(Outbound::Replay(message));
            }
        }
        self.wake_driver();
        true
    }

    /// Queues `message`, waiting for room.
    pub(crate) fn send(&self, message: Message) -> SendFuture<'_> {
        SendFuture {
            state: SendState::Queue {
                shared: self,
                message: Some(message),
                waiting: None,
            },
        }
    }

    /// Queues a close frame after the messages already queued, and ends sending; `disconnect`
    /// is what the handler's `receive` reports from now on. Returns `false` if the connection
    /// was already ending.
    pub(crate) fn close(
        &self,
        code: CloseCode,
        reason: &str,
        disconnect: WebSocketDisconnect,
    ) -> bool {
        let on_end = {
            let mut state = self.lock();
            if state.ending.is_some() {
                return false;
            }
            state.ending = Some(disconnect);
            state
                .queue
                .push_back(Outbound::Close(code, truncate_reason(reason).to_owned()));
            if let Some(reader) = state.reader.take() {
                reader.wake();
            }
            std::mem::take(&mut state.on_end)
        };
        self.changed.notify_waiters();
        self.wake_driver();
        self.run_on_end(on_end);
        true
    }

    /// Runs `hook` once the connection can no longer be sent to (at once if it already can't).
    pub(crate) fn on_end(&self, hook: Box<dyn FnOnce(ConnectionId) + Send>) {
        let mut state = self.lock();
        if state.ending.is_none() {
            state.on_end.push(hook);
            return;
        }
        drop(state);
        self.run_on_end(vec![hook]);
    }

    fn run_on_end(&self, hooks: Vec<Box<dyn FnOnce(ConnectionId) + Send>>) {
        for hook in hooks {
            // A hook is user code (a room's presence callback): its panic must not take the
            // connection's task down with it.
            let id = self.id;
            if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(id)))
            {
                let message = panic
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("a panic without a message");
                tracing::error!(connection = %id, panic = message, "a connection's end hook panicked");
            }
        }
    }

    /// How the connection ended, once nothing more can be sent.
    pub(crate) fn ending(&self) -> Option<WebSocketDisconnect> {
        self.lock().ending.clone()
    }

    /// Whether nothing more can be sent (without copying why).
    pub(crate) fn is_ending(&self) -> bool {
        self.lock().ending.is_some()
    }

    /// Resolves once nothing more can be sent.
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().ending.is_some() {
                return;
            }
            notified.await;
        }
    }

    // --- Receiving -----------------------------------------------------------------------------

    /// The message read ahead, or the disconnect once there is none and the connection ends.
    ///
    /// Each message takes a unit of the task's cooperative budget, as a tokio channel's
    /// `recv` does, so that a handler that receives and broadcasts in a loop yields now and
    /// then: messages read ahead of it, and broadcasts written straight into sockets
    /// (`direct.rs`), never return `Pending`, and such a loop fed by a fast client would
    /// otherwise keep its thread until the client paused, while the members' clients on that
    /// thread read nothing and their queues overflowed.
    pub(crate) fn poll_receive(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Message, WebSocketDisconnect>> {
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        let mut state = self.lock();
        if let Some(message) = state.inbox.take() {
            drop(state);
            coop.made_progress();
            self.wake_driver();
            return Poll::Ready(Ok(message));
        }
        if let Some(ending) = &state.ending {
            coop.made_progress();
            return Poll::Ready(Err(ending.clone()));
        }
        match &mut state.reader {
            Some(reader) => reader.clone_from(cx.waker()),
            None => state.reader = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    // --- The WebSocket's life ------------------------------------------------------------------

    /// The handler's `WebSocket` is gone.
    pub(crate) fn release_socket(&self) {
        self.lock().socket_alive = false;
        self.wake_driver();
    }

    pub(crate) fn socket_alive(&self) -> bool {
        self.lock().socket_alive
    }

    /// Shutdown's deadline passed: drop the connection and its handler.
    pub(crate) fn abort(&self) {
        self.lock().aborted = true;
        self.driver.wake();
    }

    // --- The driver's side ---------------------------------------------------------------------

    /// The next thing to send, if any.
    fn pop(&self) -> Option<Outbound> {
        let mut state = self.lock();
        let next = state.queue.pop_front()?;
        state.queued_bytes -= next.len();
        if matches!(next, Outbound::Replay(_)) {
            state.replays -= 1;
        }
        if std::mem::take(&mut state.blocked) {
            drop(state);
            self.changed.notify_waiters();
        }
        Some(next)
    }

    /// The driver claims the socket for writing, if it has something to write (`pending`),
    /// something is queued, or a broadcaster left a write unfinished. Until it releases it,
    /// nobody else writes into the socket.
    fn claim_writer(&self, pending: bool) -> Claim {
        let mut state = self.lock();
        if !(pending || !state.queue.is_empty() || state.unfinished.is_some()) {
            return Claim::Declined;
        }
        state.writing = true;
        Claim::Claimed {
            unfinished: state.unfinished.take(),
        }
    }

    /// The driver wrote everything it had: it releases the socket, unless more was queued
    /// meanwhile (then it keeps it, and its next round writes that).
    fn release_writer(&self) -> bool {
        let mut state = self.lock();
        let release = state.queue.is_empty();
        if release {
            state.writing = false;
        }
        release
    }

    fn inbox_full(&self) -> bool {
        self.lock().inbox.is_some()
    }

    /// Hands a message to the handler. It is woken unless it is the handler that [`run`] polls
    /// right after the driver, in this same task (see the module's docs).
    fn deliver(&self, message: Message, cx: &Context<'_>) {
        let reader = {
            let mut state = self.lock();
            state.inbox = Some(message);
            state.reader.take()
        };
        if let Some(reader) = reader.filter(|reader| !reader.will_wake(cx.waker())) {
            reader.wake();
        }
    }

    /// Records why the connection ends, if nothing did yet, and wakes whoever waits.
    fn end(&self, disconnect: WebSocketDisconnect, done: bool) {
        let (reader, on_end) = {
            let mut state = self.lock();
            if state.ending.is_none() {
                state.ending = Some(disconnect);
            }
            state.done |= done;
            if done {
                // Nothing will be sent any more: free what waits (and the socket).
                state.direct = None;
                state.unfinished = None;
                state.queue.clear();
                state.queued_bytes = 0;
                state.replays = 0;
            }
            (state.reader.take(), std::mem::take(&mut state.on_end))
        };
        if let Some(reader) = reader {
            reader.wake();
        }
        self.changed.notify_waiters();
        self.run_on_end(on_end);
    }

    fn aborted(&self) -> bool {
        self.lock().aborted
    }
}

/// An accepted connection, open until this is dropped (with the task that runs it): then it
/// leaves `tachyon_connections`, and how it ended is logged (debug) and counted.
#[derive(Debug)]
pub(crate) struct Live {
    shared: Arc<Shared>,
    open: metrics::Open,
}

impl Live {
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        Self {
            shared: Arc::clone(shared),
            open: shared.metrics.open(),
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let ending = self.shared.ending();
        match &ending {
            Some(ending) => tracing::debug!(
                code = ending.code,
                closed_by = metrics::closed_by(ending.kind),
                reason = %ending.reason,
                "WebSocket connection closed"
            ),
            None => tracing::debug!("WebSocket connection dropped"),
        }
        self.open.close(ending.as_ref());
    }
}

/// Why a message was not queued.
enum Refused {
    Full,
    Closed(WebSocketDisconnect),
}

impl Refused {
    fn into_error(self, message: Message) -> TrySendError {
        match self {
            Self::Full => TrySendError::full(message),
            Self::Closed(disconnect) => TrySendError::closed(message, disconnect),
        }
    }
}

/// The future of a send: queues the message, waiting for room. Small, since it lives inside
/// every handler's future: the wait for room (rare) is boxed only when it happens.
#[must_use = "futures do nothing unless awaited"]
pub(crate) struct SendFuture<'a> {
    state: SendState<'a>,
}

enum SendState<'a> {
    Queue {
        shared: &'a Shared,
        message: Option<Message>,
        waiting: Option<Pin<Box<Notified<'a>>>>,
    },
    Failed(Option<Error>),
}

impl SendFuture<'_> {
    /// A send refused before it started (the socket is not open).
    pub(crate) fn failed(error: Error) -> Self {
        Self {
            state: SendState::Failed(Some(error)),
        }
    }
}

impl Future for SendFuture<'_> {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (shared, message, waiting) = match &mut self.state {
            SendState::Failed(error) => {
                return Poll::Ready(Err(error.take().unwrap_or(Error::Closed {
                    operation: "send a message",
                })));
            }
            SendState::Queue {
                shared,
                message,
                waiting,
            } => (*shared, message, waiting),
        };
        loop {
            if let Some(notified) = waiting {
                if notified.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                *waiting = None;
            }
            let Some(next) = message.take() else {
                return Poll::Ready(Ok(()));
            };
            let full = match shared.try_send(next) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(error) if error.is_full() => error,
                Err(error) => return Poll::Ready(Err(closed(error))),
            };
            // Register for room, then try once more, so that room made in between is not missed.
            let mut notified = Box::pin(shared.changed.notified());
            notified.as_mut().enable();
            match shared.try_send(full.into_message()) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(error) if error.is_full() => {
                    *message = Some(error.into_message());
                    *waiting = Some(notified);
                }
                Err(error) => return Poll::Ready(Err(closed(error))),
            }
        }
    }
}

fn closed(error: TrySendError) -> Error {
    match error.disconnect() {
        Some(disconnect) => Error::Disconnected(disconnect.clone()),
        None => Error::TrySend(error),
    }
}

/// Marks this thread as polling `shared`'s handler until dropped, and says whether the handler
/// queued something for the driver meanwhile.
struct Polling {
    previous: usize,
}

/// The handler poll this thread is in, for `direct.rs`.
fn generation() -> u64 {
    GENERATION.with(|generation| {
        if generation.get() == 0 {
            // This thread's first: a base of its own, so that no two threads share a value.
            static BASES: AtomicU64 = AtomicU64::new(1);
            generation.set(BASES.fetch_add(1, Ordering::Relaxed) << 32);
        }
        generation.get()
    })
}

impl Polling {
    fn enter(shared: &Shared) -> Self {
        KICKED.set(false);
        GENERATION.set(generation() + 1);
        Self {
            previous: POLLING.replace(shared.address()),
        }
    }

    fn kicked(&self) -> bool {
        KICKED.get()
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        POLLING.set(self.previous);
        KICKED.set(false);
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use super::direct::{Direct, Duplex};
    use super::{Claim, ConnectionId, Outbound, Polling, Prepared, Shared, Unfinished};
    use crate::message::Message;
    use crate::metrics::{self, ConnectionMetrics};
    use crate::settings::Settings;

    /// A connected pair of loopback sockets: the server's side, shared, and the client's.
    async fn pair() -> (Arc<tokio::net::TcpStream>, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = tokio::net::TcpStream::connect(listener.local_addr().expect("address"));
        let (client, accepted) = tokio::join!(client, listener.accept());
        (
            Arc::new(accepted.expect("accept").0),
            client.expect("connect"),
        )
    }

    /// What the client reads within `wait` (loopback delivers a write at once; a short wait
    /// is enough to see that nothing was written).
    async fn read_within(client: &tokio::net::TcpStream, wait: std::time::Duration) -> usize {
        let mut buffer = [0; 1024];
        match tokio::time::timeout(wait, client.readable()).await {
            Ok(Ok(())) => client.try_read(&mut buffer).unwrap_or(0),
            _ => 0,
        }
    }

    async fn nothing_written(client: &tokio::net::TcpStream) -> bool {
        read_within(client, std::time::Duration::from_millis(50)).await == 0
    }

    async fn written(client: &tokio::net::TcpStream) -> usize {
        read_within(client, std::time::Duration::from_secs(10)).await
    }

    fn shared_with(direct: Direct) -> Arc<Shared> {
        Shared::new(
            &Settings::new().resolve(),
            ConnectionId::next(),
            Some(direct),
            None,
            ConnectionMetrics::new("/test"),
        )
    }

    fn hello() -> Arc<Prepared> {
        Arc::new(Prepared::new(Message::Text("hello".into())))
    }

    /// A new handler poll on this thread, as `run` starts one: broadcasts made before it no
    /// longer count as a burst with the next ones.
    fn next_poll(shared: &Shared) {
        drop(Polling::enter(shared));
    }

    fn claimed(claim: Claim) -> Option<Unfinished> {
        match claim {
            Claim::Claimed { unfinished } => unfinished.map(|unfinished| *unfinished),
            Claim::Declined => panic!("the claim was declined"),
        }
    }

    /// What every way of writing straight in must do: write only while the driver does not.
    async fn written_straight_only_while_the_driver_does_not_write(
        shared: &Arc<Shared>,
        client: &tokio::net::TcpStream,
    ) {
        let prepared = hello();
        // The driver claimed the socket (it has bytes on their way): the broadcast waits in
        // the queue, and nothing reaches the socket.
        assert!(claimed(shared.claim_writer(true)).is_none());
        shared
            .try_send_prepared(&prepared, &mut metrics::Direct::new())
            .expect("queued");
        assert!(nothing_written(client).await);
        assert!(matches!(shared.pop(), Some(Outbound::Prepared(_))));
        // Released with nothing queued: the next broadcast goes straight into the socket, and
        // the queue stays empty.
        assert!(shared.release_writer());
        shared
            .try_send_prepared(&prepared, &mut metrics::Direct::new())
            .expect("written");
        assert_eq!(written(client).await, 7, "the 7-byte frame of `hello`");
        assert!(shared.pop().is_none());
        // A second one in the same handler poll is a burst: queued, to leave with the rest.
        shared
            .try_send_prepared(&prepared, &mut metrics::Direct::new())
            .expect("queued");
        assert!(nothing_written(client).await);
        assert!(matches!(shared.pop(), Some(Outbound::Prepared(_))));
        // Something queued keeps later broadcasts behind it, in order, in later polls too.
        next_poll(shared);
        shared
            .try_send(Message::Text("first".into()))
            .expect("queued");
        shared
            .try_send_prepared(&prepared, &mut metrics::Direct::new())
            .expect("queued behind it");
        assert!(nothing_written(client).await);
        assert!(matches!(shared.pop(), Some(Outbound::Message(_))));
        assert!(matches!(shared.pop(), Some(Outbound::Prepared(_))));
        // Idle again, in a new poll: straight in again.
        next_poll(shared);
        shared
            .try_send_prepared(&prepared, &mut metrics::Direct::new())
            .expect("written");
        assert_eq!(written(client).await, 7);
        assert!(shared.pop().is_none());
    }

    #[tokio::test]
    async fn shared_tcp_is_written_straight_only_while_the_driver_does_not_write() {
        let (server, client) = pair().await;
        let shared = shared_with(Direct::Tcp(server));
        written_straight_only_while_the_driver_does_not_write(&shared, &client).await;
    }

    #[tokio::test]
    async fn a_locked_io_is_written_straight_only_while_the_driver_neither_writes_nor_holds_it() {
        let (server, client) = pair().await;
        let server = Arc::into_inner(server).expect("the only handle");
        let locked: Arc<Mutex<dyn Duplex>> = Arc::new(Mutex::new(server));
        let shared = shared_with(Direct::Locked(Arc::clone(&locked)));
        written_straight_only_while_the_driver_does_not_write(&shared, &client).await;
        // The driver reads or writes through the lock: the broadcast is queued, not waited for.
        next_poll(&shared);
        let held = locked.lock().expect("lock");
        shared
            .try_send_prepared(&hello(), &mut metrics::Direct::new())
            .expect("queued");
        drop(held);
        assert!(nothing_written(&client).await);
        assert!(matches!(shared.pop(), Some(Outbound::Prepared(_))));
    }

    /// An IO that takes at most `takes` bytes a write (none: it cannot take any now) and holds
    /// them until a flush that never completes, like a TLS stream's; it keeps the waker of its
    /// last `Pending`.
    struct Holding {
        takes: Option<usize>,
        registered: Arc<Mutex<Option<std::task::Waker>>>,
    }

    impl Holding {
        fn pending<T>(&self, cx: &Context<'_>) -> Poll<T> {
            *self.registered.lock().expect("lock") = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    impl tokio::io::AsyncRead for Holding {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            self.pending(cx)
        }
    }

    impl tokio::io::AsyncWrite for Holding {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            match self.takes {
                Some(takes) => Poll::Ready(Ok(buf.len().min(takes))),
                None => self.pending(cx),
            }
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            self.pending(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            self.pending(cx)
        }
    }

    /// A connection over a [`Holding`] IO, and the waker it last registered.
    fn holding(takes: Option<usize>) -> (Arc<Shared>, Arc<Mutex<Option<std::task::Waker>>>) {
        let registered = Arc::new(Mutex::new(None));
        let io = Holding {
            takes,
            registered: Arc::clone(&registered),
        };
        (
            shared_with(Direct::Locked(Arc::new(Mutex::new(io)))),
            registered,
        )
    }

    #[test]
    fn what_a_broadcaster_leaves_of_its_write_goes_to_the_driver_first_and_stops_later_writes() {
        // The frame went in whole but waits in the IO: the driver flushes, on its claim.
        let (shared, _) = holding(Some(usize::MAX));
        shared
            .try_send_prepared(&hello(), &mut metrics::Direct::new())
            .expect("written");
        assert!(shared.pop().is_none(), "nothing queued");
        next_poll(&shared);
        shared
            .try_send_prepared(&hello(), &mut metrics::Direct::new())
            .expect("queued");
        assert!(matches!(shared.pop(), Some(Outbound::Prepared(_))));
        assert!(matches!(
            claimed(shared.claim_writer(false)),
            Some(Unfinished::Flush)
        ));
        // The IO took 3 bytes of the 7: the driver gets the other 4, on its claim.
        let (shared, _) = holding(Some(3));
        shared
            .try_send_prepared(&hello(), &mut metrics::Direct::new())
            .expect("written in part");
        match claimed(shared.claim_writer(false)) {
            Some(Unfinished::Rest(rest)) => assert_eq!(&rest[..], b"ello"),
            other => panic!("expected the rest of the frame, got {other:?}"),
        }
    }

    #[test]
    fn a_write_a_locked_io_refuses_is_queued_and_what_it_registers_wakes_the_driver() {
        let (shared, registered) = holding(None);
        let woken = Arc::new(Woken::default());
        shared
            .driver
            .register(&std::task::Waker::from(Arc::clone(&woken)));
        shared
            .try_send_prepared(&hello(), &mut metrics::Direct::new())
            .expect("queued");
        assert!(matches!(shared.pop(), Some(Outbound::Prepared(_))));
        assert!(woken.take(), "queuing wakes the driver");
        // The IO registered the broadcaster's waker, to be woken once it can take more: that
        // wakes the driver too, which writes what was queued.
        shared
            .driver
            .register(&std::task::Waker::from(Arc::clone(&woken)));
        let waker = registered.lock().expect("lock").take().expect("registered");
        waker.wake();
        assert!(woken.take(), "the IO's wake-up reaches the driver");
    }

    /// A waker that records that it was woken.
    #[derive(Default)]
    struct Woken(std::sync::atomic::AtomicBool);

    impl Woken {
        fn take(&self) -> bool {
            self.0.swap(false, std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_connection_id_reads_back_from_its_text() {
        let id = ConnectionId::next();
        let text = id.to_string();
        assert!(text.starts_with("conn-") && text.len() >= 23, "{text}");
        assert_eq!(text.parse::<ConnectionId>(), Ok(id));
        assert!(id.is_local());
        let other: ConnectionId = "conn-000000000000000a-7".parse().expect("valid id");
        assert_eq!((other.process(), other.as_u64()), (10, 7));
        assert!(!other.is_local() || super::this_process() == 10);
        for bad in [
            "",
            "conn-",
            "conn-1-2",
            "conn-0000000a-1",
            "conn-000000000000000g-1",
            "conn-000000000000000a-x",
            "id-000000000000000a-1",
        ] {
            assert!(bad.parse::<ConnectionId>().is_err(), "{bad}");
        }
    }
}
