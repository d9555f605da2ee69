//! A broadcast written straight into an idle member's socket.
//!
//! A broadcast otherwise queues the message for each member and wakes each member's task, which
//! then writes it: for a room of thousands, the wake-ups and polls cost as much as the writes.
//! When a member's queue is empty and its driver is not writing, the broadcaster writes the
//! (already framed) message into the member's socket itself, without blocking (`try_write`),
//! while it holds the member's lock; the driver claims the same lock before it writes, so bytes
//! of two frames never interleave. What the socket does not take is left for the driver, which
//! writes it before anything else (see below).
//!
//! Only the first broadcast a handler makes to a member in one poll goes straight in: the next
//! ones in the same poll (a burst: `for _ in 0..100 { rooms.to(room).send(..) }`) are queued, so
//! that the driver writes them together, in one write, instead of one write each. Measured on
//! the fan-out benchmark (a room of 10,000): one write per message made a burst of 100 cost
//! 13 µs of server CPU per delivery, against 1.5 µs queued.
//!
//! Two ways in, both over HTTP/1.1 only ([`Direct`]):
//! - connections served by [`Tachyon::serve`](crate::Tachyon::serve) share their TCP socket
//!   ([`SharedTcp`] under hyper, [`DirectSocket`] in the request), which tokio writes through a
//!   shared reference (`try_write`), beside the driver's reads;
//! - connections served by anything else (`axum::serve`, a TLS server) get their upgraded IO
//!   behind a lock ([`Io::Locked`]): the driver takes it for each read and write, a broadcaster
//!   only tries it (a driver that holds it is busy: the broadcast is queued), so the driver
//!   waits for it at most as long as one broadcaster's write, which never blocks. A write that
//!   returns `Pending` is polled again with a waker that wakes the driver, so that whatever the
//!   IO registered for it (a socket to drain; TLS may need to read first) wakes the driver
//!   rather than nobody; if it is still `Pending`, the message is queued and the driver woken,
//!   which writes with its own waker. Bytes an IO took but still holds (TLS) are flushed by the
//!   driver.
//!
//! What a broadcaster leaves of its write (the end of a frame the socket did not take, or a
//! flush) is kept apart from the queue, and the driver gets it with its claim of the socket
//! (`Shared::claim_writer`), before it writes anything of its own: a pong, a close, or the
//! queue. Until then no broadcaster writes, and later broadcasts wait in the queue. The rule
//! that keeps this true: the driver puts nothing into its output before it holds the claim.
//!
//! A broadcast made outside any handler poll (a task of its own, a plain thread) goes straight
//! in only once per member and thread: such a loop is a burst too, and its other messages are
//! queued.
//!
//! HTTP/2 streams always go through the queue: their socket is the whole connection's.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::task::{Context, Poll, Waker, ready};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The TCP socket of the connection a request came on, for its upgrade: a request extension
/// put there by `Tachyon::serve`.
#[derive(Debug, Clone)]
pub(crate) struct DirectSocket(pub(crate) Arc<TcpStream>);

/// A TCP socket hyper serves while others may hold it too: reads and writes go through tokio's
/// shared-reference API (readiness, then `try_read` / `try_write`), as `TcpStream`'s own
/// `AsyncRead` and `AsyncWrite` do.
#[derive(Debug)]
pub(crate) struct SharedTcp(pub(crate) Arc<TcpStream>);

/// Runs `attempt` until it does not block, waiting for `ready` in between.
fn poll_io<T>(
    cx: &mut Context<'_>,
    mut ready: impl FnMut(&mut Context<'_>) -> Poll<io::Result<()>>,
    mut attempt: impl FnMut() -> io::Result<T>,
) -> Poll<io::Result<T>> {
    loop {
        ready!(ready(cx))?;
        match attempt() {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            result => return Poll::Ready(result),
        }
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = &*self.0;
        let unfilled = buf.initialize_unfilled();
        let read = ready!(poll_io(
            cx,
            |cx| stream.poll_read_ready(cx),
            || stream.try_read(unfilled)
        ))?;
        buf.advance(read);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stream = &*self.0;
        poll_io(
            cx,
            |cx| stream.poll_write_ready(cx),
            || stream.try_write(buf),
        )
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let stream = &*self.0;
        poll_io(
            cx,
            |cx| stream.poll_write_ready(cx),
            || stream.try_write_vectored(bufs),
        )
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
    }
}

/// The upgraded connection as the driver reads and writes it.
#[derive(Debug)]
pub(crate) enum Io {
    /// Only the driver touches it (HTTP/2; a deflate context kept between messages; or a
    /// socket a broadcaster reaches another way, [`Direct::Tcp`]).
    Owned(TokioIo<Upgraded>),
    /// A broadcaster may write into it too ([`Direct::Locked`]): each call takes the lock.
    Locked(Locked),
}

/// An IO behind the lock that the driver and broadcasters share.
pub(crate) type Locked = Arc<Mutex<dyn Duplex>>;

/// What a connection reads and writes through.
pub(crate) trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

impl std::fmt::Debug for dyn Duplex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Duplex")
    }
}

impl Io {
    /// `upgraded`, locked if broadcasters are to write into it: then also what they write with.
    pub(crate) fn new(upgraded: Upgraded, shared: bool) -> (Self, Option<Direct>) {
        let io = TokioIo::new(upgraded);
        if !shared {
            return (Self::Owned(io), None);
        }
        let locked: Locked = Arc::new(Mutex::new(io));
        (
            Self::Locked(Arc::clone(&locked)),
            Some(Direct::Locked(locked)),
        )
    }

    /// Calls `f` on the IO, under its lock if it has one.
    fn with<T>(&mut self, f: impl FnOnce(Pin<&mut dyn Duplex>) -> T) -> T {
        match self {
            Self::Owned(io) => f(Pin::new(io)),
            Self::Locked(locked) => f(Pin::new(&mut *lock(locked))),
        }
    }
}

/// Locks `mutex`; nothing panics while holding it, so a poisoned one is whole.
fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().with(|io| io.poll_read(cx, buf))
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().with(|io| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().with(|io| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Owned(io) => io.is_write_vectored(),
            Self::Locked(locked) => lock(locked).is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().with(|io| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().with(|io| io.poll_shutdown(cx))
    }
}

/// How a broadcaster writes straight into a member's connection.
#[derive(Debug)]
pub(crate) enum Direct {
    /// The TCP socket, shared with hyper ([`SharedTcp`]).
    Tcp(Arc<TcpStream>),
    /// The upgraded IO, behind the lock the driver takes too ([`Io::Locked`]).
    Locked(Locked),
}

/// What one write straight into a connection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    /// How much of the frame the connection took.
    pub(crate) bytes: usize,
    /// Some of it may still wait in the IO (TLS): the driver must flush it.
    pub(crate) unflushed: bool,
}

impl Direct {
    /// Writes what the connection takes of `frame` now, without blocking; `WouldBlock` if it
    /// takes nothing now (its socket is full, or its driver is reading or writing through the
    /// lock). A locked IO that returns `Pending` is polled again with `driver()`, a waker that
    /// wakes the connection's driver: whatever the write leaves registered (a socket to drain,
    /// or a TLS stream that must read before it can write) then wakes the driver, which polls
    /// the IO with its own waker. Made only then: the common case clones no waker.
    pub(crate) fn try_write(
        &self,
        frame: &[u8],
        driver: impl Fn() -> Waker,
    ) -> io::Result<Written> {
        let locked = match self {
            Self::Tcp(socket) => {
                return socket.try_write(frame).map(|bytes| Written {
                    bytes,
                    unflushed: false,
                });
            }
            Self::Locked(locked) => locked,
        };
        let mut io = match locked.try_lock() {
            Ok(io) => io,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(io::ErrorKind::WouldBlock.into()),
        };
        let bytes = match poll(&driver, |cx| Pin::new(&mut *io).poll_write(cx, frame)) {
            Poll::Ready(result) => result?,
            Poll::Pending => return Err(io::ErrorKind::WouldBlock.into()),
        };
        // Flushed now if it can be (a plain socket always is); else the driver flushes.
        let unflushed = !matches!(
            poll(&driver, |cx| Pin::new(&mut *io).poll_flush(cx)),
            Poll::Ready(Ok(()))
        );
        Ok(Written { bytes, unflushed })
    }
}

/// Polls `poll` with a waker that does nothing and, if that is `Pending`, once more with
/// `driver()`, so that what it registers wakes the driver; both outside tokio's cooperative
/// budget: a broadcast to thousands of members in one task would otherwise exhaust it, and every
/// write after that would return `Pending` (so be queued) whatever the socket could take.
fn poll<T>(
    driver: &impl Fn() -> Waker,
    mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>,
) -> Poll<T> {
    let mut once = |waker: &Waker| {
        let mut cx = Context::from_waker(waker);
        pin!(tokio::task::unconstrained(std::future::poll_fn(&mut poll))).poll(&mut cx)
    };
    match once(Waker::noop()) {
        Poll::Pending => once(&driver()),
        ready => ready,
    }
}
