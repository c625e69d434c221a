//! A bound on writing an answer: a connection whose writes make no progress for the write
//! timeout fails with `TimedOut`, and hyper closes it. A client that pipelines requests and
//! never reads the answers therefore holds its connection for seconds, not for ever.
//!
//! The bound lasts until the connection is upgraded: a WebSocket has its own stall handling
//! (`XFCHAT_WS_STALL_TIMEOUT_MS`), so the serve loop disarms this one when hyper lets go.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `io` whose writes fail once they have waited `limit` without progress, while armed.
pub struct WriteDeadline<T> {
    io: T,
    limit: Duration,
    /// Set while a write is waiting; reset by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
    disarmed: Arc<AtomicBool>,
}

impl<T> WriteDeadline<T> {
    /// Wraps `io`; setting the returned flag turns the bound off for good.
    pub fn new(io: T, limit: Duration) -> (Self, Arc<AtomicBool>) {
        let disarmed = Arc::new(AtomicBool::new(false));
        let io = WriteDeadline {
            io,
            limit,
            stalled: None,
            disarmed: disarmed.clone(),
        };
        (io, disarmed)
    }

    /// Passes a ready result through (progress ends the wait); a pending one starts the wait
    /// or, once it has lasted `limit`, becomes `TimedOut`.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() || self.disarmed.load(Ordering::Relaxed) {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let wait = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + limit)));
        match wait.as_mut().poll(cx) {
            Poll::Ready(()) => {
                metrics::counter!(crate::metrics::HTTP_CLOSED, "reason" => "write_timeout")
                    .increment(1);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not read the answer in time",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}
