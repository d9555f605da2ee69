//! Reading the socket in large chunks without a large buffer per connection.
//!
//! Each read from the socket goes into one large buffer per thread, and the frame reader works
//! on it in place. The connection keeps only what the reader did not take (it stops after one
//! message when the handler has not taken the last one yet), on the heap only until it is
//! taken. An idle connection holds no buffer.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::copy;

/// How much one read from the socket may bring: a few large messages, or many small ones.
const SCRATCH_SIZE: usize = 64 * 1024;

/// What a read uses when the thread's buffer is not available (the thread is exiting).
const FALLBACK_SIZE: usize = 4 * 1024;

thread_local! {
    /// Where this thread reads sockets into. Zero-filled once, when the thread first reads, then
    /// reused by every connection the thread polls (one at a time: nothing here awaits).
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// An IO whose reads go through this thread's scratch buffer; see the module docs. Writes go
/// straight to the inner IO.
#[derive(Debug)]
pub(crate) struct ReadAhead<S> {
    io: S,
    /// Bytes read from the socket that the reader has not taken yet: `leftover[taken..]`. Empty,
    /// and unallocated, once they are all taken.
    leftover: Vec<u8>,
    taken: usize,
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(io: S) -> Self {
        Self {
            io,
            leftover: Vec::new(),
            taken: 0,
        }
    }
}

/// What a read brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filled {
    /// Bytes were handed to the reader.
    Bytes,
    /// The peer closed its side of the connection.
    End,
}

impl<S: AsyncRead + Unpin> ReadAhead<S> {
    /// Hands `take` the bytes left from the last read or, if there are none, what one read
    /// from the socket brings; `take` works on them in place and says how many it used. The
    /// rest is kept for the next call.
    pub(crate) fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        take: impl FnOnce(&mut [u8]) -> usize,
    ) -> Poll<io::Result<Filled>> {
        if self.taken < self.leftover.len() {
            let used = take(&mut self.leftover[self.taken..]);
            self.taken += used;
            if self.taken >= self.leftover.len() {
                // Freed rather than kept: a connection that goes idle now must not hold it.
                self.leftover = Vec::new();
                self.taken = 0;
            }
            return Poll::Ready(Ok(Filled::Bytes));
        }
        let mut take = Some(take);
        let through_scratch = SCRATCH.try_with(|scratch| {
            let mut scratch = scratch.try_borrow_mut().ok()?;
            Some(self.read_into(&mut scratch, cx, &mut take))
        });
        match through_scratch {
            Ok(Some(poll)) => poll,
            // The thread is exiting (its scratch buffer is gone) or, which nothing here does,
            // reading re-entered: read into a buffer of the call's own.
            Ok(None) | Err(_) => self.read_into(&mut [0; FALLBACK_SIZE], cx, &mut take),
        }
    }

    fn read_into(
        &mut self,
        buffer: &mut [u8],
        cx: &mut Context<'_>,
        take: &mut Option<impl FnOnce(&mut [u8]) -> usize>,
    ) -> Poll<io::Result<Filled>> {
        let mut chunk = ReadBuf::new(buffer);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut chunk))?;
        let read = chunk.filled().len();
        if read == 0 {
            return Poll::Ready(Ok(Filled::End));
        }
        let used = take.take().map_or(0, |take| take(&mut buffer[..read]));
        if used < read {
            self.leftover.clear();
            copy::extend(&mut self.leftover, &buffer[used..read]);
            self.taken = 0;
        }
        Poll::Ready(Ok(Filled::Bytes))
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
#[allow(clippy::expect_used, clippy::panic)]
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
            buf.put_slice(&chunk);
            Poll::Ready(Ok(()))
        }
    }

    /// Fills once, taking at most `want` bytes.
    fn fill(io: &mut ReadAhead<Chunks>, want: usize) -> Poll<(Filled, Vec<u8>)> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut got = Vec::new();
        let poll = io.poll_fill(&mut cx, |bytes| {
            let n = bytes.len().min(want);
            got.extend_from_slice(&bytes[..n]);
            n
        });
        match poll {
            Poll::Ready(result) => Poll::Ready((result.expect("no error"), got)),
            Poll::Pending => Poll::Pending,
        }
    }

    #[test]
    fn one_socket_read_serves_several_small_takes_then_frees_the_rest() {
        let message: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut io = ReadAhead::new(Chunks(VecDeque::from([message.clone()])));
        let mut got = Vec::new();
        while got.len() < message.len() {
            let Poll::Ready((Filled::Bytes, part)) = fill(&mut io, 4096) else {
                panic!("the socket was read again before what it gave was taken");
            };
            assert!(part.len() <= 4096);
            got.extend(part);
        }
        assert_eq!(got, message);
        assert_eq!(io.io.0.len(), 0);
        // All taken: the connection holds no buffer of its own while it waits.
        assert_eq!(io.leftover.capacity(), 0);
        assert!(fill(&mut io, 4096).is_pending());
        assert_eq!(io.leftover.capacity(), 0);
    }

    #[test]
    fn the_end_of_the_stream_is_said() {
        let mut io = ReadAhead::new(Chunks(VecDeque::from([Vec::new()])));
        assert_eq!(fill(&mut io, 4096), Poll::Ready((Filled::End, Vec::new())));
    }
}
