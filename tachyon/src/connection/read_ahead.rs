//! Reading the socket in large chunks without a large buffer per connection.
//!
//! tungstenite reads at most its `read_buffer_size` per `read`, and allocates (and zero-fills)
//! that much for every connection. A small buffer keeps idle connections cheap but costs a
//! system call per few KiB of a large message; a large one does the opposite. [`ReadAhead`] sits
//! under tungstenite: each read from the socket goes into one large buffer per thread, tungstenite
//! gets what it asked for, and the connection keeps only what is left over, on the heap only
//! until tungstenite has taken it. An idle connection holds no extra buffer.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much one read from the socket may bring: a few large messages, or many small ones.
const SCRATCH_SIZE: usize = 64 * 1024;

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
    /// and unallocated, between reads that bring more than the reader asked for.
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

    /// Hands over what is left from the last read, and frees it once it is all taken.
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
    /// Reads from the socket into `scratch`, gives `buf` what fits and keeps the rest.
    fn read_through(
        &mut self,
        scratch: &mut [u8],
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut chunk = ReadBuf::new(scratch);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut chunk))?;
        let read = chunk.filled();
        let n = read.len().min(buf.remaining());
        buf.put_slice(&read[..n]);
        if n < read.len() {
            self.leftover = read[n..].to_vec();
            self.taken = 0;
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
        if buf.remaining() >= SCRATCH_SIZE {
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
            Ok(None) | Err(_) => Pin::new(&mut this.io).poll_read(cx, buf),
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
