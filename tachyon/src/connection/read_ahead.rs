//! Reading the socket in large chunks without a large buffer per connection.
//!
//! tungstenite reads at most its `read_buffer_size` per `read`, and allocates (and zero-fills)
//! that much for every connection. A small buffer keeps idle connections cheap but costs a
//! system call per few KiB of a large message; a large one does the opposite. [`ReadAhead`] sits
//! under tungstenite: each read from the socket goes into one large buffer per thread, and
//! tungstenite takes its small reads from there. tungstenite reads until it has a whole message,
//! so what a read brought is usually all taken before the driver lets go of the thread; the
//! driver then calls [`ReadAhead::stash`], which moves what is left (the start of the next
//! message) into the connection's own buffer, on the heap only until tungstenite has taken it.
//! An idle connection holds no extra buffer.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much one read from the socket may bring: a few large messages, or many small ones.
const SCRATCH_SIZE: usize = 64 * 1024;

/// One thread's read buffer, and the bytes in it that a connection has not taken yet.
struct Scratch {
    buf: Box<[u8]>,
    /// The connection whose bytes `buf[start..end]` are (0: none).
    owner: u64,
    start: usize,
    end: usize,
}

impl Scratch {
    fn holds_for(&self, owner: u64) -> bool {
        self.owner == owner && self.start < self.end
    }

    /// Whether another connection's bytes are still here.
    fn taken_by_other(&self, owner: u64) -> bool {
        self.owner != 0 && self.owner != owner && self.start < self.end
    }
}

thread_local! {
    /// Where this thread reads sockets into. Zero-filled once, when the thread first reads, then
    /// reused by every connection the thread polls (one at a time: nothing here awaits).
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        buf: vec![0; SCRATCH_SIZE].into_boxed_slice(),
        owner: 0,
        start: 0,
        end: 0,
    });
}

/// An IO whose reads go through this thread's scratch buffer; see the module docs. Writes go
/// straight to the inner IO. Whoever reads it must call [`stash`](Self::stash) after each poll
/// that may have read, before the task can move to another thread.
#[derive(Debug)]
pub(crate) struct ReadAhead<S> {
    io: S,
    /// Tells this connection's bytes in a thread's scratch buffer from another's.
    id: u64,
    /// Bytes left in this thread's scratch buffer by the last read, not stashed yet.
    in_scratch: bool,
    /// Bytes read from the socket that the reader has not taken yet: `leftover[taken..]`. Empty,
    /// and unallocated, unless a read brought more than tungstenite took before `stash`.
    leftover: Vec<u8>,
    taken: usize,
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(io: S) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Self {
            io,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            in_scratch: false,
            leftover: Vec::new(),
            taken: 0,
        }
    }

    /// Moves this connection's bytes still in the thread's scratch buffer into its own buffer,
    /// so that the buffer is free for the next connection and nothing is lost if this one is
    /// next polled on another thread.
    pub(crate) fn stash(&mut self) {
        if !self.in_scratch {
            return;
        }
        self.in_scratch = false;
        let _ = SCRATCH.try_with(|scratch| {
            let Ok(mut scratch) = scratch.try_borrow_mut() else {
                return;
            };
            if scratch.holds_for(self.id) {
                let Scratch {
                    buf, start, end, ..
                } = &*scratch;
                self.leftover.extend_from_slice(&buf[*start..*end]);
                scratch.owner = 0;
            }
        });
    }

    /// Hands over what is left from an earlier read, and frees it once it is all taken.
    fn give_leftover(&mut self, buf: &mut ReadBuf<'_>) {
        let rest = &self.leftover[self.taken..];
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.taken += n;
        if self.taken == self.leftover.len() {
            // Freed rather than kept: a connection that goes idle now must not hold it.
            self.leftover = Vec::new();
            self.taken = 0;
        }
    }
}

impl<S: AsyncRead + Unpin> ReadAhead<S> {
    /// Gives `buf` this connection's bytes from `scratch`, or reads the socket into `scratch`,
    /// gives `buf` what fits and leaves the rest there.
    fn read_through(
        &mut self,
        scratch: &mut Scratch,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.in_scratch {
            if !scratch.holds_for(self.id) {
                // Polled on another thread without `stash` first: the bytes left behind are
                // out of reach, and reading on would skip them.
                self.in_scratch = false;
                return Poll::Ready(Err(io::Error::other(
                    "a read-ahead connection moved threads without stashing its bytes",
                )));
            }
            let n = (scratch.end - scratch.start).min(buf.remaining());
            buf.put_slice(&scratch.buf[scratch.start..scratch.start + n]);
            scratch.start += n;
            if scratch.start == scratch.end {
                scratch.owner = 0;
                self.in_scratch = false;
            }
            return Poll::Ready(Ok(()));
        }
        debug_assert!(
            !scratch.taken_by_other(self.id),
            "a connection left bytes in the scratch buffer without stashing them"
        );
        if scratch.taken_by_other(self.id) {
            // Another connection has not stashed its bytes (which the driver always does):
            // leave them, and read straight into the reader's buffer.
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let mut chunk = ReadBuf::new(&mut scratch.buf);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut chunk))?;
        let read = chunk.filled().len();
        let n = read.min(buf.remaining());
        buf.put_slice(&scratch.buf[..n]);
        if n < read {
            scratch.owner = self.id;
            scratch.start = n;
            scratch.end = read;
            self.in_scratch = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.taken < this.leftover.len() {
            this.give_leftover(buf);
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= SCRATCH_SIZE && !this.in_scratch {
            // The reader's own buffer is as large: nothing to gain from the scratch buffer.
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let through_scratch = SCRATCH.try_with(|scratch| {
            let mut scratch = scratch.try_borrow_mut().ok()?;
            Some(this.read_through(&mut scratch, cx, buf))
        });
        match through_scratch {
            Ok(Some(poll)) => poll,
            // The thread is exiting (its scratch buffer is gone) or, which nothing here does,
            // reading re-entered: read straight into the reader's buffer.
            Ok(None) | Err(_) if !this.in_scratch => Pin::new(&mut this.io).poll_read(cx, buf),
            Ok(None) | Err(_) => Poll::Ready(Err(io::Error::other(
                "a read-ahead connection lost the bytes it left in the scratch buffer",
            ))),
        }
    }
}

impl<S> Drop for ReadAhead<S> {
    /// Frees the thread's scratch buffer of bytes nobody will read.
    fn drop(&mut self) {
        if self.in_scratch {
            let _ = SCRATCH.try_with(|scratch| {
                if let Ok(mut scratch) = scratch.try_borrow_mut() {
                    if scratch.owner == self.id {
                        scratch.owner = 0;
                    }
                }
            });
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::task::Waker;

    use super::*;

    /// A socket that has `chunks` to read, one per read, then nothing yet.
    struct Chunks(VecDeque<Vec<u8>>);

    impl AsyncRead for Chunks {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let Some(chunk) = self.get_mut().0.pop_front() else {
                return Poll::Pending;
            };
            assert!(
                chunk.len() <= buf.remaining(),
                "the test reads more than it asked"
            );
            buf.put_slice(&chunk);
            Poll::Ready(Ok(()))
        }
    }

    fn read(io: &mut ReadAhead<Chunks>, want: usize) -> Poll<Vec<u8>> {
        let mut storage = vec![0; want];
        let mut buf = ReadBuf::new(&mut storage);
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(io).poll_read(&mut cx, &mut buf) {
            Poll::Ready(result) => {
                assert!(result.is_ok());
                Poll::Ready(buf.filled().to_vec())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    #[test]
    fn one_socket_read_serves_several_small_reads_then_frees_the_rest() {
        let message: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut io = ReadAhead::new(Chunks(VecDeque::from([message.clone()])));
        let mut got = Vec::new();
        while got.len() < message.len() {
            let Poll::Ready(part) = read(&mut io, 4096) else {
                panic!("the socket was read again before what it gave was taken");
            };
            assert!(part.len() <= 4096);
            got.extend(part);
        }
        assert_eq!(got, message);
        assert_eq!(io.io.0.len(), 0);
        // All taken: the connection holds no buffer of its own while it waits.
        assert_eq!(io.leftover.capacity(), 0);
        assert!(read(&mut io, 4096).is_pending());
        assert_eq!(io.leftover.capacity(), 0);
    }

    #[test]
    fn stash_moves_what_is_left_into_the_connection() {
        let message: Vec<u8> = (0..10_000u32).map(|i| (i % 241) as u8).collect();
        let mut io = ReadAhead::new(Chunks(VecDeque::from([message.clone()])));
        let Poll::Ready(mut got) = read(&mut io, 4096) else {
            panic!("nothing read");
        };
        io.stash();
        assert_eq!(io.leftover.len(), message.len() - 4096);
        // Another connection on this thread may read now.
        let mut other = ReadAhead::new(Chunks(VecDeque::from([vec![1; 5000]])));
        assert_eq!(read(&mut other, 4096), Poll::Ready(vec![1; 4096]));
        other.stash();
        while let Poll::Ready(part) = read(&mut io, 4096) {
            got.extend(part);
        }
        assert_eq!(got, message);
        assert_eq!(io.leftover.capacity(), 0);
        assert_eq!(read(&mut other, 4096), Poll::Ready(vec![1; 904]));
    }

    #[test]
    fn moving_threads_without_stash_is_an_error_not_a_skip() {
        let mut io = ReadAhead::new(Chunks(VecDeque::from([vec![2; 10_000], vec![3; 10]])));
        assert!(read(&mut io, 4096).is_ready());
        let moved = std::thread::spawn(move || {
            let mut storage = vec![0; 4096];
            let mut buf = ReadBuf::new(&mut storage);
            let mut cx = Context::from_waker(Waker::noop());
            match Pin::new(&mut io).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Err(_)) => true,
                Poll::Ready(Ok(())) | Poll::Pending => false,
            }
        });
        assert!(
            moved.join().unwrap_or(false),
            "the skipped bytes went unnoticed"
        );
    }

    #[test]
    fn a_large_read_goes_straight_to_the_reader() {
        let message = vec![7; 1000];
        let mut io = ReadAhead::new(Chunks(VecDeque::from([message.clone()])));
        assert_eq!(read(&mut io, SCRATCH_SIZE), Poll::Ready(message));
        assert_eq!(io.leftover.capacity(), 0);
    }

    #[test]
    fn the_end_of_the_stream_reads_as_zero_bytes() {
        let mut io = ReadAhead::new(Chunks(VecDeque::from([Vec::new()])));
        assert_eq!(read(&mut io, 4096), Poll::Ready(Vec::new()));
    }
}
