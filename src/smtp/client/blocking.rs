//! A bridge from a blocking `std::io::Read` (the queue's body reader reads
//! from disk) to the `AsyncRead` the client streams from: each block is read
//! on tokio's blocking pool, so a slow disk never stalls the runtime and the
//! body is never required to be whole in memory.

use std::future::Future;
use std::io::{self, Read};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::task::JoinHandle;

/// Size of one blocking read.
const BLOCK: usize = 64 * 1024;

type Pending<R> = JoinHandle<(Box<R>, Vec<u8>, io::Result<usize>)>;

enum State<R> {
    Idle(Option<Box<R>>),
    Reading(Pending<R>),
    Done,
}

/// `AsyncRead` over a blocking reader. Must be polled inside a tokio runtime.
pub struct BlockingBody<R> {
    state: State<R>,
    buf: Vec<u8>,
    pos: usize,
}

impl<R: Read + Send + 'static> BlockingBody<R> {
    pub fn new(reader: R) -> BlockingBody<R> {
        BlockingBody {
            state: State::Idle(Some(Box::new(reader))),
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl<R: Read + Send + 'static> AsyncRead for BlockingBody<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pos < this.buf.len() {
                let n = out.remaining().min(this.buf.len() - this.pos);
                out.put_slice(&this.buf[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            match &mut this.state {
                State::Done => return Poll::Ready(Ok(())),
                State::Idle(reader) => {
                    let Some(mut reader) = reader.take() else {
                        return Poll::Ready(Ok(()));
                    };
                    let mut buf = std::mem::take(&mut this.buf);
                    this.state = State::Reading(tokio::task::spawn_blocking(move || {
                        buf.resize(BLOCK, 0);
                        let result = reader.read(&mut buf);
                        (reader, buf, result)
                    }));
                }
                State::Reading(handle) => match ready!(Pin::new(handle).poll(cx)) {
                    Ok((_, _, Ok(0))) => this.state = State::Done,
                    Ok((reader, mut buf, Ok(n))) => {
                        buf.truncate(n);
                        this.buf = buf;
                        this.pos = 0;
                        this.state = State::Idle(Some(reader));
                    }
                    Ok((reader, _, Err(e))) => {
                        this.state = State::Idle(Some(reader));
                        return Poll::Ready(Err(e));
                    }
                    Err(join) => {
                        this.state = State::Done;
                        return Poll::Ready(Err(io::Error::other(join)));
                    }
                },
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Hands out at most 7 bytes per read, then fails if asked to.
    struct Trickle(std::io::Cursor<Vec<u8>>, bool);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(7);
            let got = Read::read(&mut self.0, &mut buf[..n])?;
            if got == 0 && self.1 {
                return Err(io::Error::other("disk on fire"));
            }
            Ok(got)
        }
    }

    #[tokio::test]
    async fn reads_everything_in_order() {
        let data: Vec<u8> = (0..5_000u32).map(|i| (i % 251) as u8).collect();
        let mut body = BlockingBody::new(Trickle(std::io::Cursor::new(data.clone()), false));
        let mut got = Vec::new();
        body.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn read_errors_surface() {
        let mut body = BlockingBody::new(Trickle(std::io::Cursor::new(b"abc".to_vec()), true));
        let mut got = Vec::new();
        let err = body.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
        assert_eq!(got, b"abc");
    }
}
