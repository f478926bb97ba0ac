//! The RFC 6152 downgrade on the fly: a message with 8-bit content for a peer
//! that does not offer 8BITMIME is sent with every leaf part that may hold
//! 8-bit octets re-encoded (text as quoted-printable, the rest as base64),
//! decoded content unchanged — one streaming pass of [`crate::mime::Walker`]
//! between the queue's body and the [`super::BodyEncoder`].
//!
//! Never for a message the relay signed (`Envelope::relay_signed`): its
//! content was made 7-bit before signing (`mime::make_seven_bit_safe`), and
//! changing it now would break the signature.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use crate::mime::Walker;

const BLOCK: usize = 32 * 1024;

/// An `AsyncRead` of the 7-bit form of the message read from `inner`.
pub struct Downgrade<R> {
    inner: R,
    walker: Walker,
    input: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R> Downgrade<R> {
    pub fn new(inner: R) -> Downgrade<R> {
        Downgrade {
            inner,
            walker: Walker::downgrade(),
            input: vec![0; BLOCK],
            out: Vec::with_capacity(BLOCK * 2),
            pos: 0,
            done: false,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Downgrade<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.pos);
                buf.put_slice(&this.out[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            if this.done {
                return Poll::Ready(Ok(()));
            }
            this.out.clear();
            this.pos = 0;
            let mut rb = ReadBuf::new(&mut this.input);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                this.walker.finish(&mut this.out);
                this.done = true;
            } else {
                this.walker.feed(&this.input[..n], &mut this.out);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn an_8bit_message_reads_back_7bit() {
        let msg = "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße\r\n";
        let mut out = Vec::new();
        Downgrade::new(msg.as_bytes())
            .read_to_end(&mut out)
            .await
            .unwrap();
        assert!(out.is_ascii());
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with(
                "Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n"
            ),
            "{text}"
        );
    }
}
